//! The DATA body reader (sans-IO).
//!
//! In: the raw bytes the client sends after `354`, in chunks of any size. Out: the message
//! body with `\n` line ends (the form sendmail keeps in its `df` file; `size=` in the log is
//! its length), dot-unstuffed, and how the body ended ([`DataEnd`]).
//!
//! Rules (RFC 5321 4.1.1.4, 4.5.2; sendmail 8.17.1.9 as patched by Debian against SMTP
//! smuggling, CVE-2023-51765, observed in `shared/conformance/smtp/smuggle-*.txt`):
//! * only `<CRLF>.<CRLF>` ends the body;
//! * a line starting with `.` loses that first dot;
//! * a bare LF (not after CR) anywhere → [`DataEnd::BareLf`] at once (`421 4.5.0 Bare
//!   linefeed (LF) not allowed`), a CR not followed by LF → [`DataEnd::BareCr`];
//! * NUL and 8-bit bytes pass through unchanged;
//! * the body goes into a [`BodyBuf`], which enforces the size and header limits; the body
//!   is still read to its end when one of them is broken.

use super::body::{BodyBuf, Limits};

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEnd {
    /// `<CRLF>.<CRLF>` was read.
    Complete,
    /// A LF without CR before it.
    BareLf,
    /// A CR without LF after it.
    BareCr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// The line so far is a single `.`.
    Dot,
    /// The line so far is `.` CR.
    DotCr,
    /// Inside a line.
    Mid,
    /// After a CR inside a line.
    Cr,
}

/// Feeds DATA bytes in, collects the body.
#[derive(Debug)]
pub struct DataReader {
    state: State,
    body: BodyBuf,
}

impl DataReader {
    /// A reader for a message received under `limits`.
    pub fn new(limits: Limits) -> DataReader {
        DataReader {
            state: State::LineStart,
            body: BodyBuf::new(limits),
        }
    }

    /// Consumes bytes from `input`. Returns how many were used and, once the body has
    /// ended, how. Bytes after the end are not consumed (they are the next command).
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<DataEnd>) {
        let mut i = 0;
        while i < input.len() {
            let mut used = 1;
            let end = match (self.state, input[i]) {
                (State::LineStart, b'.') => {
                    self.state = State::Dot;
                    None
                }
                (State::LineStart | State::Mid | State::Dot, b'\r') => {
                    self.state = if self.state == State::Dot {
                        State::DotCr
                    } else {
                        State::Cr
                    };
                    None
                }
                (State::DotCr, b'\n') => Some(DataEnd::Complete),
                (State::Cr, b'\n') => {
                    self.body.newline();
                    self.state = State::LineStart;
                    None
                }
                (State::Cr | State::DotCr, _) => Some(DataEnd::BareCr),
                (_, b'\n') => Some(DataEnd::BareLf),
                (_, _) => {
                    // A dot that started the line is dropped (unstuffing). The rest of
                    // the line up to CR or LF goes in as one run.
                    let rest = &input[i..];
                    used = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    self.body.push_run(&rest[..used]);
                    self.state = State::Mid;
                    None
                }
            };
            if let Some(end) = end {
                return (i + 1, Some(end));
            }
            i += used;
        }
        (input.len(), None)
    }

    /// Body bytes so far (`\n` line ends), counting bytes not kept.
    pub fn size(&self) -> u64 {
        self.body.size()
    }

    /// True while the header block lasts (for `where=header` in the log).
    pub fn in_header(&self) -> bool {
        self.body.in_header()
    }

    /// The body so far.
    pub fn body(&self) -> &BodyBuf {
        &self.body
    }

    /// The body so far, to take bytes out of ([`BodyBuf::take_spill`]).
    pub fn body_mut(&mut self) -> &mut BodyBuf {
        &mut self.body
    }

    /// The body received.
    pub fn into_body(self) -> BodyBuf {
        self.body
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

    fn read_all(input: &[u8]) -> (usize, Option<DataEnd>, Vec<u8>, u64, bool) {
        let mut r = DataReader::new(NO_LIMITS);
        let (n, end) = r.feed(input);
        let size = r.size();
        let header = r.in_header();
        (n, end, r.into_body().into_body(), size, header)
    }

    #[test]
    fn crlf_dot_crlf_ends_and_dots_are_unstuffed() {
        let input = b"Subject: dots\r\n\r\n..leading dot\r\n..\r\n\r\n.\r\nQUIT\r\n";
        let (n, end, body, size, _) = read_all(input);
        assert_eq!(end, Some(DataEnd::Complete));
        assert_eq!(&input[n..], b"QUIT\r\n");
        assert_eq!(body, b"Subject: dots\n\n.leading dot\n.\n\n");
        assert_eq!(size, 31); // the size sendmail logged for this case
    }

    #[test]
    fn recorded_sizes_match_sendmail() {
        let body = b"Subject: conformance test\r\nFrom: sender@client.example.test\r\n\r\nbody line\r\n.\r\n";
        let (_, end, _, size, _) = read_all(body);
        assert_eq!((end, size), (Some(DataEnd::Complete), 70));
        let nul = b"Subject: nul\r\n\r\nbefore\x00after\r\n.\r\n";
        let (_, end, kept, size, _) = read_all(nul);
        assert_eq!((end, size), (Some(DataEnd::Complete), 27));
        assert!(kept.contains(&0));
    }

    #[test]
    fn bare_lf_is_reported_at_once_with_size_so_far() {
        // data-bare-lf-body: logged size=26, where=body
        let (_, end, _, size, header) =
            read_all(b"Subject: bare lf\r\n\r\nline one\nline two\r\n.\r\n");
        assert_eq!((end, size, header), (Some(DataEnd::BareLf), 26, false));
        // smuggle-lf-only-message: size=16, where=header
        let (_, end, _, size, header) = read_all(b"Subject: lf only\n\nbody\n.\n");
        assert_eq!((end, size, header), (Some(DataEnd::BareLf), 16, true));
        // smuggle-crlf-dot-lf: size=25
        let (_, end, _, size, _) =
            read_all(b"Subject: smuggle 3\r\n\r\nbody\r\n.\nMAIL FROM:<e@x>\r\n.\r\n");
        assert_eq!((end, size), (Some(DataEnd::BareLf), 25));
    }

    #[test]
    fn bare_cr_is_reported() {
        // smuggle-cr-dot-cr: size=24
        let (_, end, _, size, _) =
            read_all(b"Subject: smuggle 4\r\n\r\nbody\r.\rMAIL FROM:<e@x>\r\n.\r\n");
        assert_eq!((end, size), (Some(DataEnd::BareCr), 24));
        let (_, end, _, _, _) = read_all(b"x\r\n.\rX");
        assert_eq!(end, Some(DataEnd::BareCr));
    }

    #[test]
    fn chunks_split_anywhere_give_the_same_result() {
        let input = b"Subject: chunks\r\n\r\nfirst part\r\nsecond\r\n.\r\n";
        for split in 0..input.len() {
            let mut r = DataReader::new(NO_LIMITS);
            let (n1, e1) = r.feed(&input[..split]);
            assert_eq!((n1, e1), (split, None));
            let (n2, e2) = r.feed(&input[split..]);
            assert_eq!(split + n2, input.len());
            assert_eq!(e2, Some(DataEnd::Complete));
            assert_eq!(
                r.into_body().into_body(),
                b"Subject: chunks\n\nfirst part\nsecond\n"
            );
        }
    }

    #[test]
    fn limit_counts_but_does_not_keep() {
        let mut r = DataReader::new(Limits {
            max_size: 10,
            max_headers: 0,
            seven_bit: false,
        });
        let (_, end) = r.feed(b"0123456789abcdef\r\n.\r\n");
        assert_eq!(end, Some(DataEnd::Complete));
        let body = r.into_body();
        assert!(body.exceeded());
        assert_eq!(body.size(), 17);
        assert!(body.into_body().is_empty());
    }
}
