//! The message being received, byte by byte (sans-IO): what DATA and BDAT both fill.
//!
//! In: the message's bytes in the form the queue keeps (`\n` line ends; the DATA reader has
//! already undone dot-stuffing and CRLF, the BDAT reader CRLF), one content byte at a time
//! ([`BodyBuf::push`]) and one line end at a time ([`BodyBuf::newline`]). Out: the body to
//! commit ([`BodyBuf::into_body`]), its size (`size=` in the log), and whether it broke one
//! of the two limits:
//!
//! * the message size limit (`MaxMessageSize`, or [`HARD_MAX_MESSAGE`] when the option is
//!   unset): once the body is over it, nothing more is kept and what was kept is dropped, so
//!   a session never holds more than the limit in memory; the bytes are still counted to the
//!   end of the message, and the session answers `552`;
//! * `MaxHeadersLength` (sendmail's option, op §5.6): the header block, line ends and the
//!   empty line that ends it included, may be at most this long. Measured against sendmail
//!   8.17.1.9: a header block of 32767 bytes plus its empty line is accepted, 32768 plus the
//!   empty line is refused with `552 5.6.0 Headers too large (32768 max)`.
//!
//! A line belongs to the header block as sendmail's `isheader()` decides: a field name
//! (characters above space, none a colon), optional white space, then `:`; or a line that
//! starts with a blank after a header line (continuation). The first line that is neither,
//! or the empty line, ends the header block.

/// The size limit when `MaxMessageSize` is not set: sendmail has none, but a session must
/// not be able to fill the queue's disk with one endless message (nor exceed a journal
/// frame). 64 MiB is above any size real mail systems accept by default (Postfix 10 MB,
/// Exim 50 MB, Gmail 25 MB).
pub const HARD_MAX_MESSAGE: u64 = 64 << 20;

/// Bytes at the start of a message that always stay in memory: the header block that
/// `receive` scans for `Message-Id:` and `Date:` (`MaxHeadersLength` is 32768 by default,
/// so the whole header block is here unless an admin raised or lifted that limit; then the
/// scan sees the first this-many bytes of it).
pub const KEEP_HEAD: usize = 64 << 10;

/// The limits a message is received under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body kept (`MaxMessageSize`; 0 means [`HARD_MAX_MESSAGE`]).
    pub max_size: u64,
    /// `MaxHeadersLength` (0: no limit).
    pub max_headers: u64,
    /// Clear the eighth bit of every byte kept ([`seven_bit_input`]).
    pub seven_bit: bool,
}

/// Whether a message is cut to seven bits at receipt: `SevenBitInput`, unless the client
/// said `BODY=8BITMIME`; always after `BODY=7BIT` (sendmail's `mail_esmtp_args` sets
/// `SevenBitInput` from the BODY parameter, srvrsmtp.c).
pub fn seven_bit_input(option: bool, body: Option<super::command::BodyType>) -> bool {
    match body {
        Some(super::command::BodyType::EightBitMime) => false,
        Some(super::command::BodyType::SevenBit) => true,
        None => option,
    }
}

/// Clears the eighth bit of every byte (sendmail's `collect` under `SevenBitInput`).
pub fn strip_eighth_bit(text: &mut [u8]) {
    for b in text {
        *b &= 0x7f;
    }
}

impl Limits {
    /// The size limit that applies.
    pub fn size_limit(&self) -> u64 {
        if self.max_size == 0 {
            HARD_MAX_MESSAGE
        } else {
            self.max_size
        }
    }
}

/// Where the current line stands in the header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Nothing of the line yet.
    Start,
    /// A continuation line (starts with a blank after a header line).
    Continuation,
    /// Reading a field name.
    Name,
    /// White space after the field name.
    AfterName,
    /// A `name:` was seen: this is a header line.
    Header,
    /// This line is not a header line: the header block ends before it.
    NotHeader,
}

/// A message body being received.
///
/// Past the first [`KEEP_HEAD`] bytes, the bytes kept can be taken out
/// ([`BodyBuf::take_spill`]) to be stored elsewhere (the queue's spool file): then the
/// message is `body[..KEEP_HEAD]`, the bytes taken out in order, `body[KEEP_HEAD..]`.
#[derive(Debug)]
pub struct BodyBuf {
    body: Vec<u8>,
    /// Bytes taken out by [`BodyBuf::take_spill`].
    spilled: u64,
    /// Bytes so far (`\n` line ends), including those not kept.
    size: u64,
    limits: Limits,
    in_header: bool,
    /// The header block so far (complete lines, their `\n` included).
    header_len: u64,
    headers_exceeded: bool,
    /// Bytes of the current line.
    line_len: u64,
    line: Line,
    /// The previous line was a header line (a blank may continue it).
    after_header: bool,
}

impl BodyBuf {
    pub fn new(limits: Limits) -> BodyBuf {
        BodyBuf {
            body: Vec::new(),
            spilled: 0,
            size: 0,
            limits,
            in_header: true,
            header_len: 0,
            headers_exceeded: false,
            line_len: 0,
            line: Line::Start,
            after_header: false,
        }
    }

    /// One byte of a line (not its line end).
    pub fn push(&mut self, b: u8) {
        if self.in_header {
            self.classify(b);
        }
        self.line_len += 1;
        self.keep(b);
    }

    /// A run of bytes of one line, no line end among them: the same as [`push`](Self::push)
    /// for each byte, in one step once the header block has ended (the profile's top cost
    /// was this per-byte work on message bodies).
    pub fn push_run(&mut self, bytes: &[u8]) {
        if self.in_header {
            bytes.iter().for_each(|&b| self.push(b));
            return;
        }
        self.line_len += bytes.len() as u64;
        self.size += bytes.len() as u64;
        if self.exceeded() {
            self.drop_kept();
        } else if !self.headers_exceeded {
            let from = self.body.len();
            self.body.extend_from_slice(bytes);
            if self.limits.seven_bit {
                strip_eighth_bit(&mut self.body[from..]);
            }
        }
    }

    /// The end of a line (kept as `\n`).
    pub fn newline(&mut self) {
        if self.in_header {
            self.end_header_line();
        }
        self.line_len = 0;
        self.line = Line::Start;
        self.keep(b'\n');
    }

    fn classify(&mut self, b: u8) {
        self.line = match (self.line, b) {
            (Line::Start, b' ' | b'\t') if self.after_header => Line::Continuation,
            (Line::Start, b':') => Line::NotHeader,
            (Line::Start | Line::Name, c) if c > b' ' && c != b':' => Line::Name,
            (Line::Name | Line::AfterName, b':') => Line::Header,
            (Line::Name | Line::AfterName, b' ' | b'\t') => Line::AfterName,
            (Line::Start | Line::Name | Line::AfterName, _) => Line::NotHeader,
            (other, _) => other,
        };
    }

    fn end_header_line(&mut self) {
        match self.line {
            Line::Header | Line::Continuation => {
                self.header_len += self.line_len + 1;
                self.after_header = true;
            }
            Line::Start => {
                // The empty line ends the header block and counts toward it.
                self.header_len += 1;
                self.in_header = false;
            }
            Line::Name | Line::AfterName | Line::NotHeader => self.in_header = false,
        }
        let max = self.limits.max_headers;
        if max > 0 && self.header_len > max && !self.headers_exceeded {
            self.headers_exceeded = true;
            self.drop_kept();
        }
    }

    fn keep(&mut self, b: u8) {
        self.size += 1;
        if self.exceeded() {
            self.drop_kept();
        } else if !self.headers_exceeded {
            self.body
                .push(if self.limits.seven_bit { b & 0x7f } else { b });
        }
    }

    /// A message over the size limit keeps only its header block when that was complete
    /// and within its own limit (its `Message-Id` goes into the `from=` line), else
    /// nothing.
    fn drop_kept(&mut self) {
        let keep = if self.in_header || self.headers_exceeded {
            0
        } else {
            (self.header_len as usize).min(self.body.len())
        };
        if self.body.len() > keep {
            self.body.truncate(keep);
            self.body.shrink_to_fit();
        }
    }

    /// The bytes kept after the first [`KEEP_HEAD`], once there are at least `min` of
    /// them (and no limit is broken): they leave this buffer, which from then on holds
    /// the head and what came after them.
    pub fn take_spill(&mut self, min: usize) -> Option<Vec<u8>> {
        if !self.intact() || self.body.len() < KEEP_HEAD + min.max(1) {
            return None;
        }
        let tail = self.body.split_off(KEEP_HEAD);
        self.spilled += tail.len() as u64;
        Some(tail)
    }

    /// Bytes taken out by [`BodyBuf::take_spill`].
    pub fn spilled(&self) -> u64 {
        self.spilled
    }

    /// No limit is broken (the message may still be accepted).
    pub fn intact(&self) -> bool {
        !self.exceeded() && !self.headers_exceeded
    }

    /// Bytes so far (`\n` line ends), counting bytes not kept.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True until the header block has ended (for `where=header` in the log).
    pub fn in_header(&self) -> bool {
        self.in_header
    }

    /// True once the body is over the size limit.
    pub fn exceeded(&self) -> bool {
        self.size > self.limits.size_limit()
    }

    /// True once the header block is over `MaxHeadersLength`.
    pub fn headers_exceeded(&self) -> bool {
        self.headers_exceeded
    }

    /// The limits this body is received under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// True when the last byte was a line end (or nothing came yet).
    pub fn at_line_start(&self) -> bool {
        self.line_len == 0
    }

    /// The body kept (empty once a limit was broken).
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(limits: Limits, text: &[u8]) -> BodyBuf {
        let mut b = BodyBuf::new(limits);
        for &c in text {
            if c == b'\n' {
                b.newline();
            } else {
                b.push(c);
            }
        }
        b
    }

    const NO_LIMITS: Limits = Limits {
        max_size: 0,
        max_headers: 0,
        seven_bit: false,
    };

    fn headers(max: u64) -> Limits {
        Limits {
            max_size: 0,
            max_headers: max,
            seven_bit: false,
        }
    }

    #[test]
    fn seven_bit_input_clears_the_eighth_bit_of_every_byte_kept() {
        let limits = Limits {
            seven_bit: true,
            ..NO_LIMITS
        };
        let mut b = BodyBuf::new(limits);
        b"Subject: caf\xe9".iter().for_each(|&c| b.push(c));
        b.newline();
        b.newline();
        b.push_run(b"body caf\xe9");
        b.newline();
        assert_eq!(b.into_body(), b"Subject: cafi\n\nbody cafi\n");
        assert!(!seven_bit_input(
            true,
            Some(super::super::command::BodyType::EightBitMime)
        ));
        assert!(seven_bit_input(
            false,
            Some(super::super::command::BodyType::SevenBit)
        ));
        assert!(seven_bit_input(true, None) && !seven_bit_input(false, None));
    }

    #[test]
    fn the_body_is_kept_as_given() {
        let b = fill(NO_LIMITS, b"Subject: x\n\nbody\n");
        assert_eq!((b.size(), b.in_header(), b.exceeded()), (17, false, false));
        assert_eq!(b.into_body(), b"Subject: x\n\nbody\n");
    }

    #[test]
    fn header_block_limit_counts_the_empty_line_as_sendmail_does() {
        // 11 + 6 bytes of header lines, then the empty line: 18.
        let text = b"Subject: x\nX-A: \n\nbody\n";
        assert!(!fill(headers(18), text).headers_exceeded());
        let over = fill(headers(17), text);
        assert!(over.headers_exceeded());
        assert!(
            over.into_body().is_empty(),
            "a refused message keeps nothing"
        );
        // Without an empty line, only the header lines count.
        assert!(!fill(headers(17), b"Subject: x\nX-A: \n").headers_exceeded());
    }

    #[test]
    fn continuation_lines_belong_to_the_header_and_other_lines_end_it() {
        let b = fill(headers(1000), b"Subject: a\n long\nnot a header\nX-B: c\n");
        assert!(!b.in_header());
        assert_eq!(b.header_len, 17);
        // A blank at the start of the first line is not a continuation.
        assert_eq!(fill(headers(1000), b" x: y\n").header_len, 0);
        // White space before the colon is allowed, as in sendmail's isheader().
        assert_eq!(fill(headers(1000), b"Subject : y\n").header_len, 12);
        assert_eq!(fill(headers(1000), b": y\n").header_len, 0);
    }

    #[test]
    fn over_the_size_limit_nothing_is_kept_but_everything_is_counted() {
        let limits = Limits {
            max_size: 10,
            max_headers: 0,
            seven_bit: false,
        };
        let b = fill(limits, b"0123456789abcdef\n");
        assert!(b.exceeded());
        assert_eq!(b.size(), 17);
        assert!(b.into_body().is_empty());
    }

    /// Like [`fill`], but each line's bytes go in as one run.
    fn fill_runs(limits: Limits, text: &[u8]) -> BodyBuf {
        let mut b = BodyBuf::new(limits);
        for line in text.split_inclusive(|&c| c == b'\n') {
            let (bytes, nl) = match line.strip_suffix(b"\n") {
                Some(l) => (l, true),
                None => (line, false),
            };
            b.push_run(bytes);
            if nl {
                b.newline();
            }
        }
        b
    }

    #[test]
    fn a_run_of_bytes_counts_and_keeps_what_byte_by_byte_does() {
        let text = b"Subject: a\n long\nX-B: c\n\nbody line\nsecond\n";
        for limits in [
            NO_LIMITS,
            headers(12),
            Limits {
                max_size: 30,
                max_headers: 0,
                seven_bit: false,
            },
        ] {
            let (a, b) = (fill(limits, text), fill_runs(limits, text));
            assert_eq!(
                (
                    a.size(),
                    a.in_header(),
                    a.exceeded(),
                    a.headers_exceeded(),
                    a.header_len
                ),
                (
                    b.size(),
                    b.in_header(),
                    b.exceeded(),
                    b.headers_exceeded(),
                    b.header_len
                ),
                "{limits:?}"
            );
            assert_eq!(a.into_body(), b.into_body(), "{limits:?}");
        }
    }

    #[test]
    fn without_max_message_size_the_hard_cap_applies() {
        assert_eq!(NO_LIMITS.size_limit(), HARD_MAX_MESSAGE);
        let limits = Limits {
            max_size: 5,
            max_headers: 0,
            seven_bit: false,
        };
        assert_eq!(limits.size_limit(), 5);
    }
}
