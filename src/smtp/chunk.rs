//! The BDAT body reader (sans-IO, RFC 3030 CHUNKING).
//!
//! In: the octets of the chunks of one message, in chunks of any size and split anywhere
//! (a CR at the end of one chunk and its LF at the start of the next are one line end).
//! Out: the message in the form the queue keeps (`\n` line ends, in a [`BodyBuf`] that
//! enforces the size and header limits), or why it is refused.
//!
//! BDAT data is counted, not delimited: nothing is dot-stuffed and nothing in it can end the
//! message early, so there is nothing to undo but CRLF. The message is still a 7BIT or
//! 8BITMIME message (BINARYMIME is not offered), whose lines RFC 5321 ends with CRLF only:
//! a bare LF or a bare CR is refused as DATA refuses it (sendmail 8.18's rule against SMTP
//! smuggling, `smtp::data`), so that no message we relay can carry one on to a DATA server
//! further along. A last line without a line end gets one.

use super::body::{BodyBuf, Limits};
use super::data::DataEnd;

/// The body of a BDAT transaction, across its chunks.
#[derive(Debug)]
pub struct ChunkReader {
    body: BodyBuf,
    /// The previous octet was a CR (its LF may come in the next chunk).
    cr: bool,
}

impl ChunkReader {
    pub fn new(limits: Limits) -> ChunkReader {
        ChunkReader {
            body: BodyBuf::new(limits),
            cr: false,
        }
    }

    /// Takes octets of a chunk. A bare LF or CR ends the message at once.
    pub fn feed(&mut self, input: &[u8]) -> Result<(), DataEnd> {
        for &b in input {
            match (self.cr, b) {
                (true, b'\n') => {
                    self.cr = false;
                    self.body.newline();
                }
                (true, _) => return Err(DataEnd::BareCr),
                (false, b'\r') => self.cr = true,
                (false, b'\n') => return Err(DataEnd::BareLf),
                (false, other) => self.body.push(other),
            }
        }
        Ok(())
    }

    /// The body so far (for the limits and the log).
    pub fn body(&self) -> &BodyBuf {
        &self.body
    }

    /// The body so far, to take bytes out of ([`BodyBuf::take_spill`]).
    pub fn body_mut(&mut self) -> &mut BodyBuf {
        &mut self.body
    }

    /// The message after its `LAST` chunk.
    pub fn finish(mut self) -> Result<BodyBuf, DataEnd> {
        if self.cr {
            return Err(DataEnd::BareCr);
        }
        if !self.body.at_line_start() {
            self.body.newline();
        }
        Ok(self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LIMITS: Limits = Limits {
        max_size: 0,
        max_headers: 0,
        seven_bit: false,
    };

    fn read(chunks: &[&[u8]]) -> Result<Vec<u8>, DataEnd> {
        let mut r = ChunkReader::new(NO_LIMITS);
        for c in chunks {
            r.feed(c)?;
        }
        r.finish().map(BodyBuf::into_body)
    }

    #[test]
    fn crlf_becomes_lf_and_dots_stay_as_sent() {
        assert_eq!(
            read(&[b"Subject: x\r\n\r\n.leading\r\n.\r\nend\r\n"]).unwrap(),
            b"Subject: x\n\n.leading\n.\nend\n"
        );
    }

    #[test]
    fn a_line_end_split_between_chunks_is_one_line_end() {
        let whole = b"Subject: x\r\n\r\nbody\r\n";
        for split in 0..whole.len() {
            let (a, b) = whole.split_at(split);
            assert_eq!(read(&[a, b]).unwrap(), b"Subject: x\n\nbody\n", "{split}");
        }
    }

    #[test]
    fn bare_lf_and_bare_cr_are_refused() {
        assert_eq!(read(&[b"a\nb\r\n"]), Err(DataEnd::BareLf));
        assert_eq!(read(&[b"a\rb\r\n"]), Err(DataEnd::BareCr));
        assert_eq!(read(&[b"a\r"]), Err(DataEnd::BareCr), "CR at the very end");
    }

    #[test]
    fn nul_and_8bit_pass_and_a_last_line_gets_its_line_end() {
        assert_eq!(read(&[b"a\x00\xff"]).unwrap(), b"a\x00\xff\n");
        assert_eq!(read(&[]).unwrap(), b"");
    }
}
