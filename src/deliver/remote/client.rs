//! The ESMTP client: one connection, one message, all its recipients for that host.
//!
//! In: a connected stream (any `AsyncRead + AsyncWrite`), the message with its pending
//! recipients ([`Job`]), and the client timeouts. Out: one [`Outcome`] per recipient, and
//! whether the failure (if any) was the host's rather than the message's, so the caller
//! tries the next MX ([`SessionResult::try_next_host`]).
//!
//! The dialogue (RFC 5321 §3, §4): greeting → `EHLO` (→ `HELO` when EHLO gets a 5xx) →
//! `MAIL From:<s>` → `RCPT To:<r>` per recipient → `DATA` → the message (LF → CRLF,
//! leading dots doubled) → `.` → `QUIT`. With `PIPELINING` (RFC 2920) MAIL, the RCPTs and
//! DATA go out in one write and the replies are read in order. Extensions used only when the
//! server offers them: `SIZE=` (RFC 1870), `BODY=8BITMIME` (RFC 6152, and only when the
//! message has 8-bit bytes or was received as 8BITMIME), DSN `RET= ENVID= NOTIFY= ORCPT=`
//! (RFC 3461).
//!
//! Reply parsing is sans-IO ([`ReplyParser`]: bytes in, [`SmtpReply`]s out); every reply
//! becomes an [`Outcome`] in one function, [`Outcome::from_reply`]: 2xx delivered, 4xx
//! temporary, 5xx permanent, with the server's enhanced status code as the DSN code when it
//! gives one (RFC 3463).
//!
//! Security (sendmail deliver.c): when the server offers `STARTTLS` (RFC 3207) and the job
//! allows it ([`Job::tls`]; `ClientPortOptions` Modifier `S` turns it off), the client
//! starts TLS, drops what the server said before, and says EHLO again ([`super::tls`]). A
//! refused `STARTTLS` (4xx, 5xx) goes on in clear on the same connection; a reply that
//! makes no sense ends it (`454 4.7.0 STARTTLS failed.`); a failed handshake ends it too
//! ([`SessionResult::tls_failed`], `454 4.7.0 TLS handshake failed.`: the caller tries the
//! next host, or the same one in clear with `TLSFallbacktoClear`). Then, when there are
//! credentials for the server ([`Job::auth`]) and it offers `AUTH`, the client
//! authenticates ([`super::auth`]) — only over TLS: credentials are never sent in clear.
//!
//! The command spelling (`MAIL From:`, `RCPT To:`) is sendmail's [samples/45].

use std::io;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::auth::{self, AuthEnd, AuthInfo};
use super::tls::{self, Stream, TlsSettings};
use crate::config::options::Timeouts;
use crate::deliver::Outcome;
use crate::queue::{BodyType, ByMode, Message, Recipient, Ret};

/// Longest reply line accepted (RFC 5321 says 512; servers exceed it).
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one multi-line reply.
pub const MAX_REPLY_LINES: usize = 256;

/// One reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    /// The text of each line, after `NNN-` / `NNN `.
    pub lines: Vec<String>,
}

impl SmtpReply {
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// The RFC 3463 code at the start of the last line (`2.0.0`), when it has one of the
    /// reply's class.
    pub fn enhanced(&self) -> Option<&str> {
        let last = self.lines.last()?;
        let word = last.split_whitespace().next()?;
        let mut parts = word.split('.');
        let class = parts.next()?;
        let ok = class.len() == 1
            && class.parse::<u16>().ok() == Some(self.class())
            && parts.clone().count() == 2
            && parts
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
        ok.then_some(word)
    }

    /// The last line's text as sendmail shows it in `stat=Sent (…)`: `2.0.0 Ok: queued`.
    pub fn text(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }

    /// `550 5.1.1 <bob@x>... User unknown`: code and last line.
    pub fn summary(&self) -> String {
        format!("{} {}", self.code, self.text())
    }
}

/// A server reply that is not SMTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("bad reply line {0:?} (expected NNN text or NNN-text)")]
    BadLine(String),
    #[error("reply line longer than {MAX_REPLY_LINE} bytes")]
    LineTooLong,
    #[error("reply of more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    #[error("reply code changed within a multi-line reply ({0} then {1})")]
    CodeChanged(u16, u16),
}

/// Sans-IO reply reader: [`ReplyParser::feed`] bytes (or read them into
/// [`ReplyParser::space`]), take [`ReplyParser::next_reply`]s.
#[derive(Debug, Default)]
pub struct ReplyParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already taken as reply lines.
    start: usize,
    lines: Vec<String>,
    code: Option<u16>,
}

/// Room [`ReplyParser::space`] keeps for one read.
const READ_ROOM: usize = 4096;

impl ReplyParser {
    /// Forgets everything not yet read (what the server sent before the TLS handshake).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.lines.clear();
        self.code = None;
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.space().extend_from_slice(data);
    }

    /// The buffer to read the next bytes into (appended; room for [`READ_ROOM`] bytes),
    /// with the bytes already taken dropped first.
    pub fn space(&mut self) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_ROOM);
        &mut self.buf
    }

    /// The next complete reply, `Ok(None)` if more bytes are needed. Lines may end in CRLF
    /// or LF.
    pub fn next_reply(&mut self) -> Result<Option<SmtpReply>, ReplyError> {
        loop {
            let rest = &self.buf[self.start..];
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                if rest.len() > MAX_REPLY_LINE {
                    return Err(ReplyError::LineTooLong);
                }
                return Ok(None);
            };
            if nl > MAX_REPLY_LINE {
                return Err(ReplyError::LineTooLong);
            }
            let line = String::from_utf8_lossy(&rest[..=nl]);
            let line = line.trim_end_matches(['\r', '\n']);
            let (code, last, text) = split_line(line)?;
            if let Some(prev) = self.code
                && prev != code
            {
                return Err(ReplyError::CodeChanged(prev, code));
            }
            self.code = Some(code);
            self.lines.push(text.to_string());
            self.start += nl + 1;
            if self.start == self.buf.len() {
                self.buf.clear();
                self.start = 0;
            }
            if self.lines.len() > MAX_REPLY_LINES {
                return Err(ReplyError::TooManyLines);
            }
            if last {
                self.code = None;
                return Ok(Some(SmtpReply {
                    code,
                    lines: std::mem::take(&mut self.lines),
                }));
            }
        }
    }
}

fn split_line(line: &str) -> Result<(u16, bool, &str), ReplyError> {
    let bad = || ReplyError::BadLine(line.chars().take(80).collect());
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&b[0]) {
        return Err(bad());
    }
    let code: u16 = line[..3].parse().map_err(|_| bad())?;
    match b.get(3) {
        None => Ok((code, true, "")),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(bad()),
    }
}

/// What the server's EHLO reply offers (the keywords we use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    /// `SIZE` offered; the number is its limit (0 = none given).
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub dsn: bool,
    pub starttls: bool,
    /// The `AUTH` mechanisms offered, as written.
    pub auth: Vec<String>,
    /// `DELIVERBY` offered (RFC 2852); the number is its minimum (0 = none given).
    pub deliverby: Option<i64>,
}

impl Capabilities {
    /// From an EHLO reply (first line is the greeting, the rest keywords).
    pub fn from_ehlo(reply: &SmtpReply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let Some(kw) = words.next() else { continue };
            match kw.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "8BITMIME" => caps.eightbitmime = true,
                "DSN" => caps.dsn = true,
                "STARTTLS" => caps.starttls = true,
                "AUTH" => caps.auth.extend(words.map(str::to_string)),
                // The pre-RFC 4954 spelling some servers still send.
                k if k.starts_with("AUTH=") => {
                    caps.auth.push(kw[5..].to_string());
                    caps.auth.extend(words.map(str::to_string));
                }
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "DELIVERBY" => {
                    caps.deliverby = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
                }
                _ => {}
            }
        }
        caps
    }
}

impl Outcome {
    /// The one place an SMTP reply becomes a result: 2xx delivered, 4xx temporary, 5xx
    /// permanent (anything else is a protocol error, temporary). The DSN code is the
    /// reply's enhanced code, else `X.0.0` of its class.
    pub fn from_reply(reply: &SmtpReply) -> Outcome {
        let dsn = |class: u16| {
            reply
                .enhanced()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{class}.0.0"))
        };
        match reply.class() {
            2 => Outcome::Delivered {
                reply: reply.text().to_string(),
            },
            4 => Outcome::Temporary {
                dsn: dsn(4),
                text: format!("Deferred: {}", reply.summary()),
            },
            5 => Outcome::Permanent {
                dsn: dsn(5),
                text: reply.summary(),
            },
            _ => Outcome::Temporary {
                dsn: "4.5.0".to_string(),
                text: format!("Deferred: unexpected reply {}", reply.summary()),
            },
        }
    }
}

/// The client's waits (op §4.1.2), from `Timeout.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    pub initial: Duration,
    pub helo: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    pub datainit: Duration,
    pub datablock: Duration,
    pub datafinal: Duration,
    pub quit: Duration,
    pub starttls: Duration,
    pub auth: Duration,
}

impl ClientTimeouts {
    pub fn from_config(t: &Timeouts) -> ClientTimeouts {
        ClientTimeouts {
            initial: t.initial,
            helo: t.helo,
            mail: t.mail,
            rcpt: t.rcpt,
            datainit: t.datainit,
            datablock: t.datablock,
            datafinal: t.datafinal,
            quit: t.quit,
            starttls: t.starttls,
            auth: t.auth,
        }
    }

    /// The same wait for every step (tests).
    pub fn uniform(d: Duration) -> ClientTimeouts {
        ClientTimeouts {
            initial: d,
            helo: d,
            mail: d,
            rcpt: d,
            datainit: d,
            datablock: d,
            datafinal: d,
            quit: d,
            starttls: d,
            auth: d,
        }
    }
}

/// One message to send over one connection.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub message: &'a Message,
    /// The recipients to send to this host (all pending, one domain).
    pub recipients: &'a [Recipient],
    /// Our name for EHLO/HELO.
    pub helo_name: &'a str,
    /// The server's address (the name checked in its certificate when it has no name).
    pub addr: IpAddr,
    /// STARTTLS when the server offers it; `None`: never.
    pub tls: Option<&'a TlsSettings>,
    /// Credentials for AUTH (from the `authinfo` map); `None`: no AUTH.
    pub auth: Option<&'a AuthInfo>,
    /// `LogLevel`: which of the session's log lines are written.
    pub log_level: u32,
    /// Told which recipients the server took, the moment its final reply to the message
    /// says so ([`Accepted`]).
    pub on_accepted: Option<Accepted<'a>>,
}

/// What to do the moment a server's final reply to `DATA` accepts the message: called
/// with the positions in [`Job::recipients`] it took (their `RCPT` accepted), before
/// anything else happens — before the outcomes are put together, the session goes back
/// to the cache or says `QUIT`, and the result travels back to the queue runner. The
/// runner writes its delivery marks here ([`crate::runner`]): the time between the next
/// hop's commit and our record of it is the window in which a crash sends the message
/// again (issue 19), so nothing may stand between the two.
#[derive(Clone, Copy)]
pub struct Accepted<'a>(pub &'a (dyn Fn(&[usize]) + Send + Sync));

impl std::fmt::Debug for Accepted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Accepted(..)")
    }
}

/// The result of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionResult {
    /// One per [`Job::recipients`], same order.
    pub outcomes: Vec<Outcome>,
    /// The host failed before it answered any recipient (greeting, EHLO or MAIL refused
    /// temporarily, or the connection broke): the next MX may do better.
    pub try_next_host: bool,
    /// The TLS handshake failed: the connection is gone (sendmail's `verify=SOFTWARE`).
    pub tls_failed: bool,
    /// Lines for the mail log that sendmail writes without a queue id (`STARTTLS=client,
    /// …`, `AUTH=client, …`), in order.
    pub log: Vec<String>,
    /// The server offered DSN: it took on `NOTIFY=SUCCESS`, so we send no "relayed" receipt.
    pub peer_dsn: bool,
    /// The server offered DELIVERBY: it took `BY=` on.
    pub peer_deliverby: bool,
    /// How long the server took to answer the last message's final dot: from the end of
    /// the body's write to the final reply read (the server's commit, and any wait behind
    /// other connections' messages there). `None` when no body was sent. The runner sizes
    /// the hop's window by it ([`crate::runner::limits`]).
    pub final_rtt: Option<Duration>,
}

/// Why a session stopped short.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("connection closed by the server")]
    Closed,
    #[error("timeout waiting for input during {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    Reply(#[from] ReplyError),
}

impl SessionError {
    /// The recipients' result: always temporary (the host, not the message, failed).
    fn outcome(&self, host: &str) -> Outcome {
        let text = match self {
            SessionError::Closed => format!("Deferred: Connection reset by {host}"),
            SessionError::Io(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                format!("Deferred: Connection reset by {host}")
            }
            SessionError::Timeout(stage) => {
                format!("Deferred: Timeout waiting for input from {host} during {stage}")
            }
            other => format!("Deferred: {other} with {host}"),
        };
        Outcome::Temporary {
            dsn: "4.4.2".to_string(),
            text,
        }
    }
}

/// The message as it goes after `DATA`: LF → CRLF, a leading `.` doubled, a final CRLF if
/// the body lacks one, then `.` CRLF.
pub fn encode_data(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32 + 8);
    wire_pieces(body, |piece| out.extend_from_slice(piece));
    out.extend_from_slice(b".\r\n");
    out
}

/// The bytes [`encode_data`] makes of `body`, without its final `.` CRLF, counted without
/// making them (the `SIZE=` of a message whose envelope goes before its body is encoded).
pub fn wire_len(body: &[u8]) -> usize {
    let mut n = 0;
    wire_pieces(body, |piece| n += piece.len());
    n
}

/// The body as it goes on the wire, before the final `.` CRLF, in pieces: each line (a
/// leading `.` doubled) and its CRLF. A line at a time (memchr), not a byte at a time:
/// this runs for every relayed message.
fn wire_pieces(body: &[u8], mut put: impl FnMut(&[u8])) {
    let mut rest = body;
    while !rest.is_empty() {
        let (line, ended) = match memchr::memchr(b'\n', rest) {
            Some(n) => (&rest[..n], Some(n + 1)),
            None => (rest, None),
        };
        if line.first() == Some(&b'.') {
            put(b".");
        }
        put(line);
        match ended {
            // A line that ends in CR already gets only the LF.
            Some(n) if line.last() == Some(&b'\r') => {
                put(b"\n");
                rest = &rest[n..];
            }
            Some(n) => {
                put(b"\r\n");
                rest = &rest[n..];
            }
            None => {
                put(b"\r\n");
                rest = &[];
            }
        }
    }
}

/// Why the message cannot go to a server with `caps` at all: too large for its `SIZE`, or
/// a `DELIVERBY` it cannot honour.
fn refusal(
    message: &Message,
    caps: &Capabilities,
    wire_size: usize,
    now: SystemTime,
) -> Option<Outcome> {
    if let Some(limit) = caps.size.filter(|l| *l > 0)
        && wire_size as u64 > limit
    {
        return Some(Outcome::Permanent {
            dsn: "5.2.3".to_string(),
            text: format!("Message is too large; {limit} bytes max"),
        });
    }
    deliver_by_refusal(message, caps, now)
}

/// `rset`, `MAIL`, the `RCPT`s and `DATA`, as one pipelined group.
fn envelope(
    rset: &str,
    message: &Message,
    recipients: &[Recipient],
    caps: &Capabilities,
    wire_size: usize,
) -> String {
    let mut batch = String::from(rset);
    batch.push_str(&mail_command(message, caps, wire_size, SystemTime::now()));
    recipients
        .iter()
        .for_each(|r| batch.push_str(&rcpt_command(r, caps)));
    batch.push_str("DATA\r\n");
    batch
}

/// The envelope of a message to send behind another message's body on a session with
/// `caps` (`RSET`, `MAIL`, the `RCPT`s, `DATA`; [`Session::transaction_pending`] then
/// reads its replies), or `None` when it cannot go that way: the server does not offer
/// `PIPELINING`, or would refuse the message outright ([`refusal`]).
pub fn follow_envelope(
    message: &Message,
    recipients: &[Recipient],
    caps: &Capabilities,
) -> Option<Vec<u8>> {
    let wire_size = wire_len(&message.body);
    if !caps.pipelining || refusal(message, caps, wire_size, SystemTime::now()).is_some() {
        return None;
    }
    Some(envelope("RSET\r\n", message, recipients, caps, wire_size).into_bytes())
}

/// Where a transaction starts.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Its envelope is to be sent (after `RSET` when `reset`).
    Send { reset: bool },
    /// Its envelope ([`follow_envelope`]) was sent behind the previous message's body.
    Sent,
}

/// Asked, once the server has said `354` to a message and before its body goes, for the
/// envelope of a next message to the same hop to send behind it ([`follow_envelope`],
/// built for these capabilities); `None`: there is none.
pub trait Follow: Send {
    fn next(&mut self, caps: &Capabilities) -> Option<Vec<u8>>;
}

/// Whether the message needs `BODY=8BITMIME`: declared so, or any byte above 127.
pub fn needs_8bit(message: &Message) -> bool {
    matches!(
        message.envelope.params.body,
        Some(BodyType::EightBitMime) | Some(BodyType::BinaryMime)
    ) || !message.body.is_ascii()
}

/// RFC 3461 xtext: `+XX` for `+`, `=`, and bytes outside `!`..`~`.
pub fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// RFC 2852 `BY=…;R` before MAIL (sendmail's `deliver.c`): a next hop that does not offer
/// DELIVERBY, or whose minimum is more than the time left, cannot take the message in
/// time; it is returned (`5.4.7`) instead of sent.
pub fn deliver_by_refusal(
    message: &Message,
    caps: &Capabilities,
    now: SystemTime,
) -> Option<Outcome> {
    let env = &message.envelope;
    let by = env.params.deliver_by.filter(|b| b.mode == ByMode::Return)?;
    let refuse = |text: String| Outcome::Permanent {
        dsn: "5.4.7".to_string(),
        text,
    };
    let Some(min) = caps.deliverby else {
        return Some(refuse("Server does not support Deliver By".into()));
    };
    let left = by.left(env.arrival, now);
    (by.seconds > 0 && left < min).then(|| {
        refuse(format!(
            "Message can't be delivered in time; {left} < {min}"
        ))
    })
}

/// The `BY=` sent on to a next hop that offers DELIVERBY (sendmail's `smtpmailfrom`): the
/// time left, with the mode and trace flag received; for `R` with no time left, the next
/// hop's minimum (or 1).
fn by_param(message: &Message, caps: &Capabilities, now: SystemTime) -> Option<String> {
    let min = caps.deliverby?;
    let env = &message.envelope;
    let by = env.params.deliver_by?;
    let mut left = by.left(env.arrival, now);
    if left <= 0 && by.mode == ByMode::Return {
        left = if min <= 0 { 1 } else { min };
    }
    Some(by.param(left))
}

/// `MAIL From:<…>` with the parameters the server allows.
pub fn mail_command(
    message: &Message,
    caps: &Capabilities,
    wire_size: usize,
    now: SystemTime,
) -> String {
    let env = &message.envelope;
    let mut cmd = format!("MAIL From:<{}>", env.sender);
    if caps.size.is_some() {
        cmd.push_str(&format!(" SIZE={wire_size}"));
    }
    if caps.eightbitmime && needs_8bit(message) {
        cmd.push_str(" BODY=8BITMIME");
    }
    if caps.dsn {
        match env.params.ret {
            Some(Ret::Full) => cmd.push_str(" RET=FULL"),
            Some(Ret::Hdrs) => cmd.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &env.params.envid {
            cmd.push_str(&format!(" ENVID={}", xtext(envid)));
        }
    }
    if let Some(by) = by_param(message, caps, now) {
        cmd.push(' ');
        cmd.push_str(&by);
    }
    cmd.push_str("\r\n");
    cmd
}

/// `RCPT To:<…>` with DSN parameters when the server offers DSN.
pub fn rcpt_command(rcpt: &Recipient, caps: &Capabilities) -> String {
    let mut cmd = format!("RCPT To:<{}>", rcpt.address);
    if caps.dsn {
        let n = rcpt.notify;
        if n.never {
            cmd.push_str(" NOTIFY=NEVER");
        } else {
            let words: Vec<&str> = [
                (n.success, "SUCCESS"),
                (n.failure, "FAILURE"),
                (n.delay, "DELAY"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| *w)
            .collect();
            if !words.is_empty() {
                cmd.push_str(&format!(" NOTIFY={}", words.join(",")));
            }
        }
        if let Some(orcpt) = &rcpt.orcpt {
            cmd.push_str(&format!(" ORCPT={orcpt}"));
        }
    }
    cmd.push_str("\r\n");
    cmd
}

/// The I/O half: one stream, its reply parser, the peer's name for error texts and log
/// lines, and the lines logged so far.
pub(super) struct Conn<S> {
    io: Stream<S>,
    parser: ReplyParser,
    host: String,
    log: Vec<String>,
    log_level: u32,
    /// The server's EHLO offered DSN (so NOTIFY went on with the recipients).
    dsn: bool,
    /// The server's EHLO offered DELIVERBY (so BY= went on).
    deliverby: bool,
    /// The last final dot's round trip ([`SessionResult::final_rtt`]).
    final_rtt: Option<Duration>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Logs `line` when `LogLevel` is above `level`.
    fn note(&mut self, level: u32, line: String) {
        if self.log_level > level {
            self.log.push(line);
        }
    }

    pub(super) async fn reply(
        &mut self,
        wait: Duration,
        stage: &'static str,
    ) -> Result<SmtpReply, SessionError> {
        let deadline = tokio::time::Instant::now() + nonzero(wait);
        loop {
            if let Some(r) = self.parser.next_reply()? {
                return Ok(r);
            }
            // Straight into the parser's buffer: no copy, nothing zeroed first.
            let read = tokio::time::timeout_at(deadline, self.io.read_buf(self.parser.space()));
            match read.await {
                Err(_) => return Err(SessionError::Timeout(stage)),
                Ok(Ok(0)) => return Err(SessionError::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    pub(super) async fn send(
        &mut self,
        bytes: &[u8],
        wait: Duration,
        stage: &'static str,
    ) -> Result<(), SessionError> {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(nonzero(wait), write).await {
            Err(_) => Err(SessionError::Timeout(stage)),
            Ok(r) => Ok(r?),
        }
    }
}

fn nonzero(d: Duration) -> Duration {
    if d.is_zero() {
        Duration::from_secs(3600)
    } else {
        d
    }
}

/// Runs one SMTP session for `job` over `io`; `host` names the peer in error texts
/// (`mx.example.test.`). Never fails as a whole: every problem is in the outcomes.
pub async fn send_message<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    host: &str,
    job: &Job<'_>,
    timeouts: &ClientTimeouts,
) -> SessionResult {
    match start(io, host, job, timeouts).await {
        Ok(mut session) => {
            let (result, _) = session.transaction(job, timeouts).await;
            session.quit(timeouts).await;
            result
        }
        Err(result) => result,
    }
}

/// An SMTP session past the greeting, EHLO, STARTTLS and AUTH, between mail transactions:
/// what the connection cache ([`super::cache`]) keeps for the next message to the same hop.
pub struct Session<S> {
    conn: Conn<S>,
    caps: Capabilities,
    /// A transaction ran on it already: the next one starts with `RSET`.
    used: bool,
}

/// Opens a session over `io` for `job` (greeting, EHLO, STARTTLS, AUTH). `Err`: the host
/// would not take mail from us, with every recipient's outcome (the connection is closed).
pub async fn start<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    host: &str,
    job: &Job<'_>,
    t: &ClientTimeouts,
) -> Result<Session<S>, SessionResult> {
    let mut conn = Conn {
        io: Stream::Plain(io),
        parser: ReplyParser::default(),
        host: host.to_string(),
        log: Vec::new(),
        log_level: job.log_level,
        dsn: false,
        deliverby: false,
        final_rtt: None,
    };
    let mut outcomes: Vec<Option<Outcome>> = vec![None; job.recipients.len()];
    let opened = greet(&mut conn, job, t).await;
    match opened {
        Ok(Ok(caps)) => {
            conn.dsn = caps.dsn;
            conn.deliverby = caps.deliverby.is_some();
            Ok(Session {
                conn,
                caps,
                used: false,
            })
        }
        Ok(Err(end)) => Err(finish(&mut conn, host, Ok(end), &mut outcomes)),
        Err(e) => Err(finish(&mut conn, host, Err(e), &mut outcomes)),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// One mail transaction for `job` (after `RSET` when the session was used before).
    /// Returns the result and whether the session can carry another message: it answered
    /// everything in order and never said 421.
    pub async fn transaction(
        &mut self,
        job: &Job<'_>,
        t: &ClientTimeouts,
    ) -> (SessionResult, bool) {
        let (result, reusable, _) = self.transaction_with(job, t, None).await;
        (result, reusable)
    }

    /// [`Session::transaction`], offering `follow` the chance to send the next message's
    /// envelope behind this message's body. The third value: it did, so the session now
    /// owes that envelope's replies and must go to that message
    /// ([`Session::transaction_pending`]), not back to the cache.
    pub async fn transaction_with(
        &mut self,
        job: &Job<'_>,
        t: &ClientTimeouts,
        follow: Option<&mut dyn Follow>,
    ) -> (SessionResult, bool, bool) {
        let reset = std::mem::replace(&mut self.used, true);
        self.run(job, t, Step::Send { reset }, follow).await
    }

    /// The transaction of `job`, whose envelope ([`follow_envelope`]) the previous message
    /// sent behind its body on this session: its replies are read, then the message goes
    /// as in [`Session::transaction_with`]. A session that fails before answering any
    /// recipient ends with `try_next_host` (nothing was delivered over it).
    pub async fn transaction_pending(
        &mut self,
        job: &Job<'_>,
        t: &ClientTimeouts,
        follow: Option<&mut dyn Follow>,
    ) -> (SessionResult, bool, bool) {
        self.used = true;
        self.run(job, t, Step::Sent, follow).await
    }

    async fn run(
        &mut self,
        job: &Job<'_>,
        t: &ClientTimeouts,
        step: Step,
        follow: Option<&mut dyn Follow>,
    ) -> (SessionResult, bool, bool) {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; job.recipients.len()];
        let mut led = false;
        let (conn, caps) = (&mut self.conn, &self.caps);
        let ended = transaction(conn, job, caps, t, step, follow, &mut led, &mut outcomes).await;
        let reusable = matches!(&ended, Ok((_, false)));
        let ended = ended.map(|(end, _)| end);
        let host = self.conn.host.clone();
        let result = finish(&mut self.conn, &host, ended, &mut outcomes);
        (result, reusable, led)
    }

    /// What the server offered (for [`follow_envelope`]).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// `QUIT`, and the connection closed.
    pub async fn quit(mut self, t: &ClientTimeouts) {
        quit(&mut self.conn, t).await;
    }

    /// Whether the server offered DSN (it took `NOTIFY=SUCCESS` on).
    pub fn peer_dsn(&self) -> bool {
        self.caps.dsn
    }
}

/// The recipients' outcomes once a dialogue step ended; the log lines so far move into
/// the result.
fn finish<S>(
    conn: &mut Conn<S>,
    host: &str,
    result: Result<End, SessionError>,
    outcomes: &mut [Option<Outcome>],
) -> SessionResult {
    let answered = outcomes.iter().any(Option::is_some);
    let tls_failed = matches!(result, Ok(End::TlsFailed));
    let (fill, try_next_host) = match result {
        Ok(End::Answered) => (None, false),
        Ok(End::TlsFailed) => (Some(tls::rejection_outcome(tls::HANDSHAKE_FAILED)), true),
        Ok(End::Host(o)) => (Some(o), true),
        // Refused temporarily before any recipient was answered: the next MX may take it.
        Ok(End::All(o)) => {
            let next = !answered && matches!(o, Outcome::Temporary { .. });
            (Some(o), next)
        }
        Err(e) => (Some(e.outcome(&conn.host)), !answered),
    };
    let outcomes = outcomes
        .iter_mut()
        .map(|o| match (o.take(), &fill) {
            (Some(Outcome::Delivered { .. }), Some(f)) => f.clone(),
            (Some(o), _) => o,
            (None, Some(f)) => f.clone(),
            (None, None) => Outcome::Temporary {
                dsn: "4.4.2".to_string(),
                text: format!("Deferred: no answer from {host}"),
            },
        })
        .collect();
    SessionResult {
        outcomes,
        try_next_host,
        tls_failed,
        log: std::mem::take(&mut conn.log),
        peer_dsn: conn.dsn,
        peer_deliverby: conn.deliverby,
        final_rtt: conn.final_rtt.take(),
    }
}

/// How a dialogue ended.
enum End {
    /// Every recipient has its answer in `outcomes`.
    Answered,
    /// This outcome for every recipient not refused at RCPT.
    All(Outcome),
    /// The host would not talk to us (greeting or EHLO/HELO refused, 4xx or 5xx): the next
    /// host may; on the last host this is every recipient's outcome.
    Host(Outcome),
    /// The TLS handshake failed; the connection is gone.
    TlsFailed,
}

/// Greeting, EHLO (HELO), STARTTLS, AUTH: the session's capabilities, or how it ended
/// (the connection then closed with `QUIT` where the server still listens).
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    job: &Job<'_>,
    t: &ClientTimeouts,
) -> Result<Result<Capabilities, End>, SessionError> {
    let greeting = conn.reply(t.initial, "client greeting").await?;
    if greeting.class() != 2 {
        quit(conn, t).await;
        return Ok(Err(End::Host(Outcome::from_reply(&greeting))));
    }
    let caps = match hello(conn, job.helo_name, t).await? {
        Ok(caps) => caps,
        Err(refusal) => {
            quit(conn, t).await;
            return Ok(Err(End::Host(refusal)));
        }
    };
    secure(conn, job, t, caps).await
}

/// One mail transaction (`RSET` first when `reset`), the session left open. Per-recipient
/// answers go into `outcomes` (a recipient's `Delivered` there means "RCPT accepted",
/// replaced by the final reply's outcome). The flag: the server said 421 somewhere, so the
/// connection must not carry another message.
#[allow(clippy::too_many_arguments)]
async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    job: &Job<'_>,
    caps: &Capabilities,
    t: &ClientTimeouts,
    step: Step,
    follow: Option<&mut dyn Follow>,
    led: &mut bool,
    outcomes: &mut [Option<Outcome>],
) -> Result<(End, bool), SessionError> {
    let (reset, sent) = match step {
        Step::Send { reset } => (reset, false),
        // The envelope went with RSET first (follow_envelope), and passed these checks.
        Step::Sent => (true, true),
    };
    let rset = if reset { "RSET\r\n" } else { "" };
    let mut data = encode_data(&job.message.body);
    let wire_size = data.len().saturating_sub(3);
    if !sent && let Some(refused) = refusal(job.message, caps, wire_size, SystemTime::now()) {
        return Ok((End::All(refused), false));
    }
    let data_reply = if sent || caps.pipelining {
        if !sent {
            let batch = envelope(rset, job.message, job.recipients, caps, wire_size);
            conn.send(batch.as_bytes(), t.mail, "client MAIL").await?;
        }
        if reset {
            let r = conn.reply(t.mail, "client RSET").await?;
            if r.class() != 2 {
                return Err(SessionError::Closed);
            }
        }
        let mail_reply = conn.reply(t.mail, "client MAIL").await?;
        read_rcpt_replies(conn, t, outcomes).await?;
        let data_reply = conn.reply(t.datainit, "client DATA").await?;
        if mail_reply.class() != 2 {
            if data_reply.code == 354 {
                let _ = conn.send(b".\r\n", t.datafinal, "client DATA").await;
                let _ = conn.reply(t.datafinal, "client DATA").await;
            }
            // The RCPT replies after a refused MAIL say nothing about the recipients.
            outcomes.iter_mut().for_each(|o| *o = None);
            return Ok((
                End::All(Outcome::from_reply(&mail_reply)),
                mail_reply.code == 421,
            ));
        }
        data_reply
    } else {
        let now = SystemTime::now();
        let mail = mail_command(job.message, caps, wire_size, now);
        let rcpts: Vec<String> = job
            .recipients
            .iter()
            .map(|r| rcpt_command(r, caps))
            .collect();
        if reset {
            conn.send(rset.as_bytes(), t.mail, "client RSET").await?;
            let r = conn.reply(t.mail, "client RSET").await?;
            if r.class() != 2 {
                return Err(SessionError::Closed);
            }
        }
        conn.send(mail.as_bytes(), t.mail, "client MAIL").await?;
        let mail_reply = conn.reply(t.mail, "client MAIL").await?;
        if mail_reply.class() != 2 {
            return Ok((
                End::All(Outcome::from_reply(&mail_reply)),
                mail_reply.code == 421,
            ));
        }
        let mut closing = false;
        for (i, r) in rcpts.iter().enumerate() {
            conn.send(r.as_bytes(), t.rcpt, "client RCPT").await?;
            let reply = conn.reply(t.rcpt, "client RCPT").await?;
            closing |= reply.code == 421;
            outcomes[i] = Some(Outcome::from_reply(&reply));
        }
        if !any_accepted(outcomes) {
            return Ok((End::Answered, closing));
        }
        conn.send(b"DATA\r\n", t.datainit, "client DATA").await?;
        conn.reply(t.datainit, "client DATA").await?
    };
    let closing = outcomes.iter().any(|o| {
        matches!(o, Some(Outcome::Temporary { text, .. }) if text.starts_with("Deferred: 421 "))
    });
    if !any_accepted(outcomes) {
        if data_reply.code == 354 {
            let _ = conn.send(b".\r\n", t.datafinal, "client DATA").await;
            let _ = conn.reply(t.datafinal, "client DATA").await;
        }
        return Ok((End::Answered, closing || data_reply.code == 421));
    }
    if data_reply.code != 354 {
        let c = data_reply.code == 421;
        return Ok((End::All(Outcome::from_reply(&data_reply)), closing || c));
    }
    // The next message's envelope, when one waits for this hop, goes behind the body in
    // the same write (RFC 2920 §3.1: message content may begin a group): its replies
    // follow this message's final reply, and neither side waits a round trip for them.
    if !closing
        && let Some(follow) = follow
        && let Some(next) = follow.next(caps)
    {
        data.extend_from_slice(&next);
        *led = true;
    }
    conn.send(&data, t.datablock, "client DATA block").await?;
    let sent_at = std::time::Instant::now();
    let final_reply = conn.reply(t.datafinal, "client DATA status").await?;
    conn.final_rtt = Some(sent_at.elapsed());
    if final_reply.class() == 2
        && let Some(Accepted(accepted)) = job.on_accepted
    {
        let taken: Vec<usize> = (outcomes.iter().enumerate())
            .filter(|(_, o)| matches!(o, Some(Outcome::Delivered { .. })))
            .map(|(i, _)| i)
            .collect();
        accepted(&taken);
    }
    let c = final_reply.code == 421;
    Ok((End::All(Outcome::from_reply(&final_reply)), closing || c))
}

fn any_accepted(outcomes: &[Option<Outcome>]) -> bool {
    outcomes
        .iter()
        .any(|o| matches!(o, Some(Outcome::Delivered { .. })))
}

async fn read_rcpt_replies<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    t: &ClientTimeouts,
    outcomes: &mut [Option<Outcome>],
) -> Result<(), SessionError> {
    for slot in outcomes.iter_mut() {
        let reply = conn.reply(t.rcpt, "client RCPT").await?;
        *slot = Some(Outcome::from_reply(&reply));
    }
    Ok(())
}

/// EHLO, then HELO if EHLO gets a 5xx. `Ok(Err(outcome))`: the server refused us.
async fn hello<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    name: &str,
    t: &ClientTimeouts,
) -> Result<Result<Capabilities, Outcome>, SessionError> {
    conn.send(format!("EHLO {name}\r\n").as_bytes(), t.helo, "client EHLO")
        .await?;
    let ehlo = conn.reply(t.helo, "client EHLO").await?;
    match ehlo.class() {
        2 => return Ok(Ok(Capabilities::from_ehlo(&ehlo))),
        5 => {}
        _ => return Ok(Err(Outcome::from_reply(&ehlo))),
    }
    conn.send(format!("HELO {name}\r\n").as_bytes(), t.helo, "client HELO")
        .await?;
    let helo = conn.reply(t.helo, "client HELO").await?;
    if helo.class() == 2 {
        Ok(Ok(Capabilities::default()))
    } else {
        Ok(Err(Outcome::from_reply(&helo)))
    }
}

/// STARTTLS when offered and allowed (then EHLO again, the old capabilities dropped), then
/// AUTH when there are credentials. `Err(end)`: the session ends here.
async fn secure<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    job: &Job<'_>,
    t: &ClientTimeouts,
    caps: Capabilities,
) -> Result<Result<Capabilities, End>, SessionError> {
    let caps = match job.tls {
        Some(settings) if caps.starttls => match starttls(conn, settings, job.addr, t).await? {
            Tls::Up => match hello(conn, job.helo_name, t).await? {
                Ok(caps) => caps,
                Err(refusal) => {
                    quit(conn, t).await;
                    return Ok(Err(End::Host(refusal)));
                }
            },
            Tls::Clear => caps,
            Tls::End(end) => return Ok(Err(end)),
        },
        _ => caps,
    };
    if let Some(info) = job.auth
        && !caps.auth.is_empty()
        && let Some(end) = authenticate(conn, info, &caps, t).await?
    {
        return Ok(Err(end));
    }
    Ok(Ok(caps))
}

/// How a STARTTLS attempt ended.
enum Tls {
    /// Encrypted from now on.
    Up,
    /// Refused by the server: go on in clear on this connection.
    Clear,
    /// The session ends.
    End(End),
}

/// `STARTTLS`, then the handshake. The log gets sendmail's lines: `STARTTLS=client, relay=…`
/// on success (LogLevel > 8), the error and the `tls_server` rejection on failure (> 5).
async fn starttls<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    settings: &TlsSettings,
    addr: IpAddr,
    t: &ClientTimeouts,
) -> Result<Tls, SessionError> {
    for problem in &settings.problems {
        conn.note(0, problem.to_string());
    }
    conn.send(b"STARTTLS\r\n", t.starttls, "client STARTTLS")
        .await?;
    let reply = conn.reply(t.starttls, "client STARTTLS").await?;
    if reply.code != 220 {
        if matches!(reply.class(), 4 | 5) {
            return Ok(Tls::Clear);
        }
        let line = tls::rejection_line("PROTOCOL", &conn.host, tls::STARTTLS_FAILED);
        conn.note(5, line);
        quit(conn, t).await;
        return Ok(Tls::End(End::Host(tls::rejection_outcome(
            tls::STARTTLS_FAILED,
        ))));
    }
    // Nothing the server sent in clear after its 220 may count as a reply.
    conn.parser.clear();
    let Stream::Plain(plain) = std::mem::replace(&mut conn.io, Stream::Gone) else {
        return Ok(Tls::Clear);
    };
    let handshake = settings.handshake(plain, &conn.host, addr);
    let result = match tokio::time::timeout(nonzero(t.starttls), handshake).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "timeout during the TLS handshake",
        )),
    };
    match result {
        Ok((stream, info)) => {
            crate::metrics::DaemonCounters::add(&crate::metrics::global().smtp_tls_handshakes, 1);
            conn.io = Stream::Tls(Box::new(stream));
            let line = info.log_line(&conn.host);
            conn.note(8, line);
            Ok(Tls::Up)
        }
        Err(e) => {
            crate::metrics::DaemonCounters::add(&crate::metrics::global().smtp_tls_failures, 1);
            conn.note(5, tls::handshake_failure_line(&e));
            let line = tls::rejection_line("SOFTWARE", &conn.host, tls::HANDSHAKE_FAILED);
            conn.note(5, line);
            Ok(Tls::End(End::TlsFailed))
        }
    }
}

/// AUTH with the first mechanism both sides allow, over TLS only. A refusal (5xx) goes on
/// without AUTH, a 4xx ends the session (`Temporary AUTH failure`), as in sendmail.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    info: &AuthInfo,
    caps: &Capabilities,
    t: &ClientTimeouts,
) -> Result<Option<End>, SessionError> {
    let relay = conn.host.clone();
    if !conn.io.is_tls() {
        let line = format!("AUTH=client, relay={relay}, not sending credentials without TLS");
        conn.note(8, line);
        return Ok(None);
    }
    let Some(mechanism) = auth::choose_mechanism(&caps.auth, info) else {
        return Ok(None);
    };
    match auth::authenticate(conn, info, mechanism, t).await? {
        AuthEnd::Done(mech) => {
            conn.note(
                9,
                format!("AUTH=client, relay={relay}, mech={mech}, bits=0"),
            );
            Ok(None)
        }
        AuthEnd::Refused(reply) => {
            let line = format!(
                "AUTH=client, relay={relay}, mech={mechanism}, refused: {}",
                reply.summary()
            );
            conn.note(9, line);
            Ok(None)
        }
        AuthEnd::Temporary(_) => {
            let line = format!("AUTH=client, relay={relay}, temporary failure, connection abort");
            conn.note(8, line);
            quit(conn, t).await;
            Ok(Some(End::Host(Outcome::Temporary {
                dsn: "4.3.0".to_string(),
                text: "Deferred: Temporary AUTH failure".to_string(),
            })))
        }
    }
}

/// `QUIT`, reading the reply; errors do not matter any more.
async fn quit<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<S>, t: &ClientTimeouts) {
    if conn.send(b"QUIT\r\n", t.quit, "client QUIT").await.is_ok() {
        let _ = conn.reply(t.quit, "client QUIT").await;
    }
    let _ = conn.io.shutdown().await;
}

#[cfg(test)]
mod tests;
