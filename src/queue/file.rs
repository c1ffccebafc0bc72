//! The on-disk formats: the queue file of one message, and the journal frames that carry
//! queue files in the store's segments. Bytes in, [`Message`] / [`Frame`] out (and back).
//!
//! Sans-IO: [`encode`] turns a [`Message`] into the exact bytes of its queue file and
//! [`decode`] checks and parses such bytes; [`put_frame`], [`remove_frame`] and
//! [`read_frame`] do the same for journal frames; nothing here touches the disk. Decoding
//! hostile or truncated input never panics: every problem is a [`QueueError`] naming the
//! byte offset and what was expected there.
//!
//! # Layout (format version 1)
//!
//! ```text
//! magic   "SMRSQF\r\n"                     (8 bytes; catches text-mode mangling)
//! record* tag:u8  len:u32 BE  payload[len]
//! ```
//!
//! Records come in this fixed order, each exactly once except `R`:
//!
//! | tag | record | payload |
//! |---|---|---|
//! | `H` | header | version u16, arrival (unix seconds) i64, queue id str |
//! | `S` | sender | address str (empty = null sender `<>`) |
//! | `P` | ESMTP parameters | SIZE opt u64, BODY u8, RET u8, ENVID opt str, SMTPUTF8 u8[, BY mode u8, BY seconds i64] |
//! | `C` | client | daemon `Name` opt str, client name opt str, client address opt str, protocol u8 |
//! | `I` | info | msgid opt str, priority i64 |
//! | `Q` | quarantine (0..1) | reason str |
//! | `R` | recipient (0..n) | address str, NOTIFY u8, ORCPT opt str, state u8, tries u32, next attempt opt i64, status opt str[, DSN code opt str, remote MTA opt str, reported u8[, BY notice u8]] |
//! | `X` | expansion (0..1 after an `R`) | parent address str, owner opt str |
//! | `B` | message | header and body bytes, LF line ends |
//! | `E` | END | body length u64, CRC-32 (IEEE) u32 of every byte before this record |
//!
//! Integers are big-endian; `str` is a u32 length and UTF-8 bytes; `opt` is a u8 0/1 then
//! the value when 1. Nothing may follow `E`. A file without a valid `E` is incomplete and
//! never decodes, so it is never delivered. (In the store each queue file also sits in a
//! journal frame with its own CRC, and is acknowledged only after fdatasync; `E` and its
//! checksum are the second line of defence, and keep a queue file checkable on its own.)
//!
//! **Line ends:** the message (`B`) is stored with LF line ends, as sendmail keeps its `df`
//! files: [`to_lf`] turns each CRLF into LF (a lone CR stays). Whoever sends it on over
//! SMTP writes every LF as CRLF. `mailq`'s size column is the length of the body part
//! (after the blank line) in this form, which is what sendmail shows.
//!
//! **Compatible additions** (still version 1, so queues written before them load as they
//! were): the `N` record is written only when it differs from its default (a message
//! received from outside, no delay warning sent), and the three trailing fields of `R` only
//! when one of them is set; a reader treats a missing `N` or missing trailing fields as
//! their defaults. They carry what the DSN work ([`crate::deliver::dsn`]) needs across
//! restarts: which notice a recipient's final state called for has been queued, and whether
//! the delay warning went out. The two trailing fields of `P` (RFC 2852 `BY=`: mode 1 `R`,
//! 2 `N`, 3 `RT`, 4 `NT`, then the seconds) are written only when the client gave `BY=`.
//! A `Q` record (written only for a message a mail filter quarantined) holds the reason;
//! files without it read as not quarantined.
//! An `X` record marks the `R` before it as a target of a local recipient's expansion
//! (aliases, `.forward`, `:include:`): recorded once, so a retry delivers each target on its
//! own and never re-expands (files without `X` records read as before).
//!
//! The delivery state of each recipient lives in its `R` record; when the runner changes
//! it, the store appends a whole new copy of the queue file, which supersedes the old one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{QueueError, QueueId};

/// First bytes of every queue file.
pub const MAGIC: &[u8; 8] = b"SMRSQF\r\n";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of one END record: tag, length, body length, CRC.
pub const END_RECORD_LEN: usize = 1 + 4 + 8 + 4;

/// One message in the queue: its envelope and its header+body bytes (LF line ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub envelope: Envelope,
    /// Headers, blank line, body; LF line ends (see the module doc).
    pub body: Vec<u8>,
}

/// What the SMTP session or the command line hands to [`super::Store::commit`].
pub type NewMessage = Message;
/// What [`super::Store::load`] gives back.
pub type QueuedMessage = Message;

/// Everything about a message except its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: QueueId,
    /// When the message was received (sendmail's `T` record; shown by `mailq`).
    pub arrival: SystemTime,
    /// Envelope sender without angle brackets; empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<Recipient>,
    pub params: EsmtpParams,
    pub client: ClientInfo,
    /// The message's `Message-Id:` (as logged in `msgid=`), if it has one.
    pub msgid: Option<String>,
    /// sendmail's work priority (`pri=`); lower runs first.
    pub priority: i64,
    /// Where the message came from as far as DSNs care, and what was sent about it.
    pub notices: Notices,
    /// Held by a mail filter (`SMFIR_QUARANTINE`) with this reason: never delivered while
    /// set; `mailq -qQ` lists it (sendmail's `q` line of a quarantined `hf` file).
    pub quarantine: Option<String>,
}

/// The DSN state of a whole message (the `N` record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notices {
    pub origin: Origin,
    /// The `Timeout.queuewarn` delay notice has been queued (it is sent once).
    pub warned: bool,
}

/// Who made the message: decides where a notice about it goes (RFC 3464 §2, sendmail's
/// `savemail`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    /// Received or submitted mail: notices go to its sender (postmaster for `<>`).
    #[default]
    Received,
    /// A DSN of ours to a sender: if it fails, postmaster is told (a double bounce).
    Dsn,
    /// A notice of ours to postmaster: if it fails, it is dropped and logged.
    Postmaster,
}

impl Envelope {
    /// An envelope received now, with default parameters and no recipients.
    pub fn new(id: QueueId, sender: impl Into<String>) -> Envelope {
        Envelope {
            id,
            arrival: SystemTime::now(),
            sender: sender.into(),
            recipients: Vec::new(),
            params: EsmtpParams::default(),
            client: ClientInfo::default(),
            msgid: None,
            priority: 0,
            notices: Notices::default(),
            quarantine: None,
        }
    }
}

/// ESMTP MAIL parameters that travel with the message (RFC 1870, 6152, 3461, 6531).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EsmtpParams {
    /// `SIZE=` as declared by the client.
    pub size: Option<u64>,
    /// `BODY=`; `None` when not given.
    pub body: Option<BodyType>,
    /// DSN `RET=`.
    pub ret: Option<Ret>,
    /// DSN `ENVID=` (xtext-decoded).
    pub envid: Option<String>,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
    /// `BY=` (RFC 2852 DELIVERBY): the deadline, counted from [`Envelope::arrival`].
    pub deliver_by: Option<DeliverBy>,
}

/// A `BY=<seconds>;<mode>[T]` request (RFC 2852), as sendmail keeps it (`e_deliver_by`,
/// `e_dlvr_flag`; its qf line `!<flag> <seconds>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverBy {
    /// Seconds after arrival; may be 0 or negative with [`ByMode::Notify`].
    pub seconds: i64,
    pub mode: ByMode,
    /// `T`: trace (RFC 2852 §4: the delivery is reported as with `NOTIFY=SUCCESS`).
    pub trace: bool,
}

/// The by-mode of [`DeliverBy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByMode {
    /// `R`: return the message (a failure DSN) when the deadline passes undelivered.
    Return,
    /// `N`: send a delay DSN when the deadline passes, and keep trying.
    Notify,
}

impl DeliverBy {
    /// The deadline for a message that arrived at `arrival`.
    pub fn deadline(&self, arrival: SystemTime) -> SystemTime {
        let d = Duration::from_secs(self.seconds.unsigned_abs());
        if self.seconds >= 0 {
            arrival + d
        } else {
            arrival.checked_sub(d).unwrap_or(UNIX_EPOCH)
        }
    }

    /// Seconds left before the deadline at `now` (negative once it has passed): what a
    /// relay sends on as its own `BY=` (sendmail's `e_deliver_by - (now - e_ctime)`).
    pub fn left(&self, arrival: SystemTime, now: SystemTime) -> i64 {
        self.seconds - unix_secs(now).saturating_sub(unix_secs(arrival))
    }

    /// The parameter as sent on: `BY=<seconds>;R` / `;N`, `T` appended for trace.
    pub fn param(&self, seconds: i64) -> String {
        let mode = match self.mode {
            ByMode::Return => 'R',
            ByMode::Notify => 'N',
        };
        let trace = if self.trace { "T" } else { "" };
        format!("BY={seconds};{mode}{trace}")
    }
}

/// `BODY=` values (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
    BinaryMime,
}

impl BodyType {
    /// The keyword as sendmail writes it (`7BIT`, `8BITMIME`, `BINARYMIME`).
    pub fn as_str(self) -> &'static str {
        match self {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
            BodyType::BinaryMime => "BINARYMIME",
        }
    }
}

/// DSN `RET=` (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// DSN `NOTIFY=` (RFC 3461 §4.1); all false = not given (the default applies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    fn to_bits(self) -> u8 {
        u8::from(self.success)
            | u8::from(self.failure) << 1
            | u8::from(self.delay) << 2
            | u8::from(self.never) << 3
    }

    fn from_bits(b: u8) -> Option<Notify> {
        (b & !0x0f == 0).then_some(Notify {
            success: b & 1 != 0,
            failure: b & 2 != 0,
            delay: b & 4 != 0,
            never: b & 8 != 0,
        })
    }
}

/// Where the message came from (for `Received:`, logs and `mailq`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The receiving daemon's `Name=` (e.g. `MTA-v6`); `None` for the command line.
    pub daemon: Option<String>,
    /// The client's host name as logged in `relay=` (e.g. `localhost`).
    pub name: Option<String>,
    /// The client's address as sendmail writes it (e.g. `IPv6:0:0:0:0:0:0:0:1`).
    pub addr: Option<String>,
    /// `proto=`; `None` for the command line.
    pub protocol: Option<Protocol>,
}

/// The `with` protocol of `Received:` / `proto=` in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Esmtp,
    Esmtpa,
    Esmtps,
    Esmtpsa,
    /// SMTPUTF8 was used (RFC 6531 §3.7.3), with AUTH (`A`) and/or STARTTLS (`S`).
    Utf8smtp,
    Utf8smtpa,
    Utf8smtps,
    Utf8smtpsa,
}

impl Protocol {
    /// Every protocol, in record-code order (code = index + 1).
    const ALL: [Protocol; 9] = [
        Protocol::Smtp,
        Protocol::Esmtp,
        Protocol::Esmtpa,
        Protocol::Esmtps,
        Protocol::Esmtpsa,
        Protocol::Utf8smtp,
        Protocol::Utf8smtpa,
        Protocol::Utf8smtps,
        Protocol::Utf8smtpsa,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Smtp => "SMTP",
            Protocol::Esmtp => "ESMTP",
            Protocol::Esmtpa => "ESMTPA",
            Protocol::Esmtps => "ESMTPS",
            Protocol::Esmtpsa => "ESMTPSA",
            Protocol::Utf8smtp => "UTF8SMTP",
            Protocol::Utf8smtpa => "UTF8SMTPA",
            Protocol::Utf8smtps => "UTF8SMTPS",
            Protocol::Utf8smtpsa => "UTF8SMTPSA",
        }
    }

    /// The protocol named `name` (`ESMTP`, `UTF8SMTPS`, ...).
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == name)
    }

    fn code(self) -> u8 {
        Protocol::ALL
            .iter()
            .position(|&p| p == self)
            .map_or(0, |i| i as u8 + 1)
    }

    fn from_code(code: u8) -> Option<Protocol> {
        Protocol::ALL
            .get(usize::from(code).checked_sub(1)?)
            .copied()
    }
}

/// One envelope recipient and how far its delivery got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address without angle brackets.
    pub address: String,
    pub notify: Notify,
    /// DSN `ORCPT=` (`addr-type;xtext`), if given.
    pub orcpt: Option<String>,
    pub state: DeliveryState,
    /// Delivery attempts made so far.
    pub tries: u32,
    /// Not before this time (after a deferral); `None` = as soon as possible.
    pub next_attempt: Option<SystemTime>,
    /// The last `stat=` text, e.g. `Deferred: Connection refused by [127.0.0.1]`;
    /// `mailq` shows it in parentheses while the recipient is pending.
    pub status: Option<String>,
    /// The last attempt's enhanced status code (`dsn=`, the DSN's `Status:`).
    pub dsn_code: Option<String>,
    /// The host the last attempt talked to (the DSN's `Remote-MTA:`), if remote.
    pub remote_mta: Option<String>,
    /// The notice this recipient's final state calls for (failure, or success with
    /// `NOTIFY=SUCCESS`) is queued, or none was due: never report it again.
    pub reported: bool,
    /// RFC 2852: a delivery that calls for a `BY=` notice of its own (sendmail's
    /// `QBYNRELAY` / `QBYTRACE`), reported with the success notices.
    pub by_relayed: Option<ByRelayed>,
    /// Set on a target of alias / `.forward` expansion (never on an envelope recipient):
    /// the address it came from, and whose authority it runs under.
    pub expanded: Option<Expanded>,
}

/// Why a delivered recipient is reported under RFC 2852 (sendmail's `deliver.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByRelayed {
    /// `BY=…;N` handed to a next hop without DELIVERBY: `Deliver-By notify: relayed`.
    Notify,
    /// `BY=…T`: `Deliver-By trace: relayed`.
    Trace,
}

/// Where an expanded recipient came from (the queue file's `X` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    /// The recipient whose expansion gave this one (sendmail's `ctladdr` / parent).
    pub parent: String,
    /// The user whose `.forward` (or include file) named it; None for the alias file.
    pub owner: Option<String>,
}

impl Recipient {
    /// A recipient not yet tried.
    pub fn new(address: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            notify: Notify::default(),
            orcpt: None,
            state: DeliveryState::Pending,
            tries: 0,
            next_attempt: None,
            status: None,
            dsn_code: None,
            remote_mta: None,
            reported: false,
            by_relayed: None,
            expanded: None,
        }
    }
}

/// Delivery state of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Still to deliver (never tried, or deferred).
    Pending,
    /// Delivered.
    Done,
    /// Failed permanently (a bounce is due or was sent).
    Failed,
}

/// Turns every CRLF into LF; a lone CR or LF is kept as it is.
pub fn to_lf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

/// Length of the body part of an LF-ended message: the bytes after the first empty line
/// (0 when there is none). This is the size `mailq` shows.
pub fn body_part_len(message: &[u8]) -> usize {
    if message.first() == Some(&b'\n') {
        return message.len() - 1;
    }
    match message.windows(2).position(|w| w == b"\n\n") {
        Some(p) => message.len() - (p + 2),
        None => 0,
    }
}

// ---------------------------------------------------------------- encode

/// The exact bytes of the queue file for `msg`.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.body.len() + 256 + 64 * msg.envelope.recipients.len());
    encode_envelope(msg, &mut out);
    record(&mut out, b'B', |p| p.extend_from_slice(&msg.body));
    let crc = crc32fast::hash(&out);
    record(&mut out, b'E', |p| {
        p.extend_from_slice(&(msg.body.len() as u64).to_be_bytes());
        p.extend_from_slice(&crc.to_be_bytes());
    });
    out
}

/// Bytes of a message kept outside memory (a spool file): their length and CRC-32.
#[derive(Debug, Clone, Default)]
pub struct Gap {
    pub len: u64,
    pub crc: crc32fast::Hasher,
}

/// The queue file of a message whose bytes are `msg.body[..at]`, then the `gap`'s bytes,
/// then `msg.body[at..]`: the file's bytes without the gap's, and where in them the gap's
/// bytes belong. Putting the gap's bytes there gives exactly what [`encode`] gives for
/// the whole message (the checksum already covers them).
pub fn encode_with_gap(msg: &Message, at: usize, gap: &Gap) -> (Vec<u8>, usize) {
    let (before, after) = msg.body.split_at(at.min(msg.body.len()));
    let total = msg.body.len() as u64 + gap.len;
    let mut out = Vec::with_capacity(msg.body.len() + 256 + 64 * msg.envelope.recipients.len());
    encode_envelope(msg, &mut out);
    out.push(b'B');
    out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(before);
    let gap_at = out.len();
    out.extend_from_slice(after);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[..gap_at]);
    crc.combine(&gap.crc);
    crc.update(&out[gap_at..]);
    let crc = crc.finalize();
    record(&mut out, b'E', |p| {
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&crc.to_be_bytes());
    });
    (out, gap_at)
}

/// Every record before `B`.
fn encode_envelope(msg: &Message, out: &mut Vec<u8>) {
    let env = &msg.envelope;
    out.extend_from_slice(MAGIC);

    record(out, b'H', |p| {
        p.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        put_i64(p, unix_secs(env.arrival));
        put_str(p, env.id.as_str());
    });
    record(out, b'S', |p| put_str(p, &env.sender));
    record(out, b'P', |p| {
        let pr = &env.params;
        put_opt(p, pr.size, |p, v| p.extend_from_slice(&v.to_be_bytes()));
        p.push(match pr.body {
            None => 0,
            Some(BodyType::SevenBit) => 1,
            Some(BodyType::EightBitMime) => 2,
            Some(BodyType::BinaryMime) => 3,
        });
        p.push(match pr.ret {
            None => 0,
            Some(Ret::Full) => 1,
            Some(Ret::Hdrs) => 2,
        });
        put_opt_str(p, pr.envid.as_deref());
        p.push(u8::from(pr.smtputf8));
        // A trailing field added later (see the module doc): only when BY= was given.
        if let Some(by) = pr.deliver_by {
            p.push(match (by.mode, by.trace) {
                (ByMode::Return, false) => 1,
                (ByMode::Notify, false) => 2,
                (ByMode::Return, true) => 3,
                (ByMode::Notify, true) => 4,
            });
            put_i64(p, by.seconds);
        }
    });
    record(out, b'C', |p| {
        let c = &env.client;
        put_opt_str(p, c.daemon.as_deref());
        put_opt_str(p, c.name.as_deref());
        put_opt_str(p, c.addr.as_deref());
        p.push(c.protocol.map_or(0, Protocol::code));
    });
    record(out, b'I', |p| {
        put_opt_str(p, env.msgid.as_deref());
        put_i64(p, env.priority);
    });
    if env.notices != Notices::default() {
        record(out, b'N', |p| {
            p.push(match env.notices.origin {
                Origin::Received => 0,
                Origin::Dsn => 1,
                Origin::Postmaster => 2,
            });
            p.push(u8::from(env.notices.warned));
        });
    }
    if let Some(reason) = &env.quarantine {
        record(out, b'Q', |p| put_str(p, reason));
    }
    for r in &env.recipients {
        record(out, b'R', |p| {
            put_str(p, &r.address);
            p.push(r.notify.to_bits());
            put_opt_str(p, r.orcpt.as_deref());
            p.push(match r.state {
                DeliveryState::Pending => 0,
                DeliveryState::Done => 1,
                DeliveryState::Failed => 2,
            });
            p.extend_from_slice(&r.tries.to_be_bytes());
            put_opt(p, r.next_attempt, |p, t| put_i64(p, unix_secs(t)));
            put_opt_str(p, r.status.as_deref());
            if r.dsn_code.is_some()
                || r.remote_mta.is_some()
                || r.reported
                || r.by_relayed.is_some()
            {
                put_opt_str(p, r.dsn_code.as_deref());
                put_opt_str(p, r.remote_mta.as_deref());
                p.push(u8::from(r.reported));
                // Later still: only when set, so older readers' files stay as they were.
                match r.by_relayed {
                    None => {}
                    Some(ByRelayed::Notify) => p.push(1),
                    Some(ByRelayed::Trace) => p.push(2),
                }
            }
        });
        if let Some(x) = &r.expanded {
            record(out, b'X', |p| {
                put_str(p, &x.parent);
                put_opt_str(p, x.owner.as_deref());
            });
        }
    }
}

fn record(out: &mut Vec<u8>, tag: u8, fill: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag);
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    fill(out);
    // A record longer than 4 GiB cannot be represented; the SMTP layer's size limit keeps
    // messages far below that, and `commit` refuses anything larger before encoding.
    let len = u32::try_from(out.len() - len_at - 4).unwrap_or(u32::MAX);
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_str(p: &mut Vec<u8>, s: &str) {
    p.extend_from_slice(&(s.len() as u32).to_be_bytes());
    p.extend_from_slice(s.as_bytes());
}

fn put_opt_str(p: &mut Vec<u8>, s: Option<&str>) {
    put_opt(p, s, put_str);
}

fn put_opt<T>(p: &mut Vec<u8>, v: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        None => p.push(0),
        Some(v) => {
            p.push(1);
            put(p, v);
        }
    }
}

fn put_i64(p: &mut Vec<u8>, v: i64) {
    p.extend_from_slice(&v.to_be_bytes());
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

fn from_unix_secs(s: i64, offset: usize) -> Result<SystemTime, QueueError> {
    let t = if s >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(s.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(s.unsigned_abs()))
    };
    t.ok_or_else(|| QueueError::Corrupt {
        offset,
        what: format!("time {s} out of range"),
    })
}

// ---------------------------------------------------------------- decode

/// Checks and parses a whole queue file. Any missing, misplaced or malformed record, a
/// bad checksum, or bytes after END is an error; never panics.
pub fn decode(bytes: &[u8]) -> Result<Message, QueueError> {
    if bytes.len() < MAGIC.len() {
        return Err(QueueError::Truncated {
            offset: bytes.len(),
            expected: "file magic",
        });
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(QueueError::BadMagic);
    }
    let mut recs = Records {
        bytes,
        pos: MAGIC.len(),
    };

    let mut h = recs.expect(b'H', "header record H")?;
    let version = h.u16("format version")?;
    if version != FORMAT_VERSION {
        return Err(QueueError::UnsupportedVersion(version));
    }
    let arrival_at = h.offset();
    let arrival = from_unix_secs(h.i64("arrival time")?, arrival_at)?;
    let id_at = h.offset();
    let id = QueueId::new(h.str("queue id")?).map_err(|e| QueueError::Corrupt {
        offset: id_at,
        what: e.to_string(),
    })?;
    h.end()?;

    let mut s = recs.expect(b'S', "sender record S")?;
    let sender = s.str("sender")?;
    s.end()?;

    let mut p = recs.expect(b'P', "ESMTP parameter record P")?;
    let size = p.opt("SIZE", |p| p.u64("SIZE value"))?;
    let body_type = match p.u8("BODY")? {
        0 => None,
        1 => Some(BodyType::SevenBit),
        2 => Some(BodyType::EightBitMime),
        3 => Some(BodyType::BinaryMime),
        n => return Err(p.bad(format!("BODY code {n}"))),
    };
    let ret = match p.u8("RET")? {
        0 => None,
        1 => Some(Ret::Full),
        2 => Some(Ret::Hdrs),
        n => return Err(p.bad(format!("RET code {n}"))),
    };
    let envid = p.opt("ENVID", |p| p.str("ENVID value"))?;
    let smtputf8 = p.bool("SMTPUTF8")?;
    // Trailing BY= fields (see the module doc): absent in older queue files.
    let mut deliver_by = None;
    if !p.rest().is_empty() {
        let (mode, trace) = match p.u8("BY mode")? {
            1 => (ByMode::Return, false),
            2 => (ByMode::Notify, false),
            3 => (ByMode::Return, true),
            4 => (ByMode::Notify, true),
            n => return Err(p.bad(format!("BY mode code {n}"))),
        };
        let seconds = p.i64("BY seconds")?;
        deliver_by = Some(DeliverBy {
            seconds,
            mode,
            trace,
        });
    }
    p.end()?;

    let mut c = recs.expect(b'C', "client record C")?;
    let daemon = c.opt("daemon name", |c| c.str("daemon name"))?;
    let name = c.opt("client name", |c| c.str("client name"))?;
    let addr = c.opt("client address", |c| c.str("client address"))?;
    let protocol = match c.u8("protocol")? {
        0 => None,
        n => match Protocol::from_code(n) {
            Some(p) => Some(p),
            None => return Err(c.bad(format!("protocol code {n}"))),
        },
    };
    c.end()?;

    let mut i = recs.expect(b'I', "info record I")?;
    let msgid = i.opt("msgid", |i| i.str("msgid"))?;
    let priority = i.i64("priority")?;
    i.end()?;

    let mut notices = Notices::default();
    if recs.peek_tag() == Some(b'N') {
        let mut n = recs.expect(b'N', "notices record N")?;
        notices.origin = match n.u8("origin")? {
            0 => Origin::Received,
            1 => Origin::Dsn,
            2 => Origin::Postmaster,
            c => return Err(n.bad(format!("origin code {c}"))),
        };
        notices.warned = n.bool("warned")?;
        n.end()?;
    }

    let mut quarantine = None;
    if recs.peek_tag() == Some(b'Q') {
        let mut q = recs.expect(b'Q', "quarantine record Q")?;
        quarantine = Some(q.str("quarantine reason")?);
        q.end()?;
    }

    let mut recipients = Vec::new();
    while recs.peek_tag() == Some(b'R') {
        let mut r = recs.expect(b'R', "recipient record R")?;
        let mut rcpt = decode_recipient(&mut r)?;
        r.end()?;
        if recs.peek_tag() == Some(b'X') {
            let mut x = recs.expect(b'X', "expansion record X")?;
            let parent = x.str("parent address")?;
            let owner = x.opt("owner", |x| x.str("owner name"))?;
            x.end()?;
            rcpt.expanded = Some(Expanded { parent, owner });
        }
        recipients.push(rcpt);
    }

    let b = recs.expect(b'B', "message record B (or another R)")?;
    let body = b.rest().to_vec();
    let crc_end = recs.pos;

    let mut e = recs.expect(b'E', "END record E")?;
    let body_len = e.u64("END body length")?;
    let expected = e.u32("END checksum")?;
    e.end()?;
    if body_len != body.len() as u64 {
        return Err(QueueError::Corrupt {
            offset: crc_end,
            what: format!(
                "END says body is {body_len} bytes, B record has {}",
                body.len()
            ),
        });
    }
    let actual = crc32fast::hash(&bytes[..crc_end]);
    if actual != expected {
        return Err(QueueError::Checksum { expected, actual });
    }
    if recs.pos != bytes.len() {
        return Err(QueueError::Corrupt {
            offset: recs.pos,
            what: format!("{} bytes after END", bytes.len() - recs.pos),
        });
    }

    Ok(Message {
        envelope: Envelope {
            id,
            arrival,
            sender,
            recipients,
            params: EsmtpParams {
                size,
                body: body_type,
                ret,
                envid,
                smtputf8,
                deliver_by,
            },
            client: ClientInfo {
                daemon,
                name,
                addr,
                protocol,
            },
            msgid,
            priority,
            notices,
            quarantine,
        },
        body,
    })
}

fn decode_recipient(r: &mut Fields<'_>) -> Result<Recipient, QueueError> {
    let address = r.str("recipient address")?;
    let bits = r.u8("NOTIFY")?;
    let notify = Notify::from_bits(bits).ok_or_else(|| r.bad(format!("NOTIFY bits {bits:#x}")))?;
    let orcpt = r.opt("ORCPT", |r| r.str("ORCPT value"))?;
    let state = match r.u8("delivery state")? {
        0 => DeliveryState::Pending,
        1 => DeliveryState::Done,
        2 => DeliveryState::Failed,
        n => return Err(r.bad(format!("delivery state code {n}"))),
    };
    let tries = r.u32("tries")?;
    let next_attempt = r.opt("next attempt", |r| {
        let at = r.offset();
        from_unix_secs(r.i64("next attempt time")?, at)
    })?;
    let status = r.opt("status", |r| r.str("status text"))?;
    // Trailing fields added later (see the module doc): absent in older queue files.
    let (mut dsn_code, mut remote_mta, mut reported) = (None, None, false);
    let mut by_relayed = None;
    if !r.rest().is_empty() {
        dsn_code = r.opt("DSN code", |r| r.str("DSN code"))?;
        remote_mta = r.opt("remote MTA", |r| r.str("remote MTA"))?;
        reported = r.bool("reported")?;
        if !r.rest().is_empty() {
            by_relayed = match r.u8("BY notice")? {
                1 => Some(ByRelayed::Notify),
                2 => Some(ByRelayed::Trace),
                n => return Err(r.bad(format!("BY notice code {n}"))),
            };
        }
    }
    Ok(Recipient {
        address,
        notify,
        orcpt,
        state,
        tries,
        next_attempt,
        status,
        dsn_code,
        remote_mta,
        reported,
        by_relayed,
        expanded: None,
    })
}

/// Walks the records of a file.
struct Records<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Records<'a> {
    fn peek_tag(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// The next record, which must have tag `tag`.
    fn expect(&mut self, tag: u8, what: &'static str) -> Result<Fields<'a>, QueueError> {
        let start = self.pos;
        let Some(&found) = self.bytes.get(start) else {
            return Err(QueueError::Truncated {
                offset: start,
                expected: what,
            });
        };
        if found != tag {
            return Err(QueueError::Corrupt {
                offset: start,
                what: format!("expected {what}, found tag {:?}", char::from(found)),
            });
        }
        let len_bytes = self
            .bytes
            .get(start + 1..start + 5)
            .ok_or(QueueError::Truncated {
                offset: start + 1,
                expected: what,
            })?;
        let len =
            u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        let body_start = start + 5;
        let payload = body_start
            .checked_add(len)
            .and_then(|end| self.bytes.get(body_start..end))
            .ok_or(QueueError::Truncated {
                offset: body_start,
                expected: what,
            })?;
        self.pos = body_start + len;
        Ok(Fields {
            data: payload,
            base: body_start,
            pos: 0,
        })
    }
}

/// Reads the fields of one record's payload.
struct Fields<'a> {
    data: &'a [u8],
    /// File offset of `data[0]`, for error messages.
    base: usize,
    pos: usize,
}

impl<'a> Fields<'a> {
    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn bad(&self, what: String) -> QueueError {
        QueueError::Corrupt {
            offset: self.offset(),
            what,
        }
    }

    fn take(&mut self, n: usize, expected: &'static str) -> Result<&'a [u8], QueueError> {
        let end = self.pos.checked_add(n);
        let s = end
            .and_then(|e| self.data.get(self.pos..e))
            .ok_or(QueueError::Truncated {
                offset: self.offset(),
                expected,
            })?;
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, expected: &'static str) -> Result<[u8; N], QueueError> {
        let s = self.take(N, expected)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, e: &'static str) -> Result<u8, QueueError> {
        Ok(self.array::<1>(e)?[0])
    }
    fn u16(&mut self, e: &'static str) -> Result<u16, QueueError> {
        self.array(e).map(u16::from_be_bytes)
    }
    fn u32(&mut self, e: &'static str) -> Result<u32, QueueError> {
        self.array(e).map(u32::from_be_bytes)
    }
    fn u64(&mut self, e: &'static str) -> Result<u64, QueueError> {
        self.array(e).map(u64::from_be_bytes)
    }
    fn i64(&mut self, e: &'static str) -> Result<i64, QueueError> {
        self.array(e).map(i64::from_be_bytes)
    }

    fn bool(&mut self, e: &'static str) -> Result<bool, QueueError> {
        match self.u8(e)? {
            0 => Ok(false),
            1 => Ok(true),
            n => {
                self.pos -= 1;
                Err(self.bad(format!("{e}: flag byte {n} is neither 0 nor 1")))
            }
        }
    }

    fn str(&mut self, e: &'static str) -> Result<String, QueueError> {
        let len = self.u32(e)? as usize;
        let at = self.offset();
        let raw = self.take(len, e)?;
        String::from_utf8(raw.to_vec()).map_err(|_| QueueError::Corrupt {
            offset: at,
            what: format!("{e} is not UTF-8"),
        })
    }

    fn opt<T>(
        &mut self,
        e: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, QueueError>,
    ) -> Result<Option<T>, QueueError> {
        if self.bool(e)? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    /// The record must have no bytes left.
    fn end(&self) -> Result<(), QueueError> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err(self.bad(format!(
                "{} unexpected bytes at end of record",
                self.data.len() - self.pos
            )))
        }
    }
}

// ---------------------------------------------------------------- journal frames

/// First byte of every journal frame.
pub const FRAME_MAGIC: u8 = 0xA5;
/// Bytes before a frame's payload: magic, kind, payload length u32, CRC-32 u32.
pub const FRAME_HEADER_LEN: usize = 1 + 1 + 4 + 4;
const KIND_PUT: u8 = b'P';
const KIND_REMOVE: u8 = b'X';

/// One record of a journal segment (see [`super::store`]): a whole queue file for an id
/// (new message, or a rewrite that supersedes the earlier one), or the removal of an id.
///
/// ```text
/// frame   magic 0xA5, kind u8, len u32 BE, crc u32 BE (CRC-32 of kind, len, payload), payload
/// Put     kind 'P', payload = id length u8, id, queue file bytes (see above)
/// Remove  kind 'X', payload = id
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Put { id: QueueId, file: &'a [u8] },
    Remove { id: QueueId },
}

/// What [`read_frame`] found at the start of its input.
#[derive(Debug)]
pub enum FrameRead<'a> {
    /// A complete, checked frame of `len` bytes.
    Frame { frame: Frame<'a>, len: usize },
    /// No bytes left: a clean end of the segment.
    End,
    /// Bytes that are not a complete valid frame: a write cut short by a crash (or
    /// damage). Nothing from here on in the segment can be trusted.
    Torn(QueueError),
}

/// Appends the frame that stores `file` (an [`encode`]d queue file) for `id`; returns the
/// offset of `file` within `out`'s new bytes, relative to where the frame starts.
pub fn put_frame(out: &mut Vec<u8>, id: &QueueId, file: &[u8]) -> usize {
    let id = id.as_str().as_bytes();
    let mut payload_head = Vec::with_capacity(1 + id.len());
    // Ids are at most MAX_ID_LEN (40) bytes.
    payload_head.push(id.len() as u8);
    payload_head.extend_from_slice(id);
    frame(out, KIND_PUT, &[&payload_head, file]);
    FRAME_HEADER_LEN + payload_head.len()
}

/// [`put_frame`] for a queue file from [`encode_with_gap`]: `file` lacks the gap's bytes,
/// which belong at `gap_at` in it. Returns the offset of the file within the frame and
/// where, in `out`'s new bytes, the gap's bytes must be written; the frame's checksum
/// already covers them.
pub fn put_frame_with_gap(
    out: &mut Vec<u8>,
    id: &QueueId,
    file: &[u8],
    gap_at: usize,
    gap: &Gap,
) -> (usize, usize) {
    let idb = id.as_str().as_bytes();
    let start = out.len();
    let len = 1 + idb.len() + file.len() + gap.len as usize;
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    let (before, after) = file.split_at(gap_at);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[KIND_PUT]);
    crc.update(&len);
    crc.update(&[idb.len() as u8]);
    crc.update(idb);
    crc.update(before);
    crc.combine(&gap.crc);
    crc.update(after);
    out.push(FRAME_MAGIC);
    out.push(KIND_PUT);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out.push(idb.len() as u8);
    out.extend_from_slice(idb);
    let file_at = out.len() - start;
    out.extend_from_slice(before);
    let gap_pos = out.len() - start;
    out.extend_from_slice(after);
    (file_at, gap_pos)
}

/// Appends the frame that removes `id`.
pub fn remove_frame(out: &mut Vec<u8>, id: &QueueId) {
    frame(out, KIND_REMOVE, &[id.as_str().as_bytes()]);
}

fn frame(out: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(&len);
    for p in parts {
        crc.update(p);
    }
    out.push(FRAME_MAGIC);
    out.push(kind);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Reads the frame at the start of `bytes`; never panics.
pub fn read_frame(bytes: &[u8]) -> FrameRead<'_> {
    if bytes.is_empty() {
        return FrameRead::End;
    }
    let torn = |offset, expected| FrameRead::Torn(QueueError::Truncated { offset, expected });
    let Some(head) = bytes.get(..FRAME_HEADER_LEN) else {
        return torn(bytes.len(), "frame header");
    };
    if head[0] != FRAME_MAGIC {
        return FrameRead::Torn(QueueError::Corrupt {
            offset: 0,
            what: format!("frame magic {:#04x}", head[0]),
        });
    }
    let kind = head[1];
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let expected = u32::from_be_bytes([head[6], head[7], head[8], head[9]]);
    let Some(payload) = FRAME_HEADER_LEN
        .checked_add(len)
        .and_then(|end| bytes.get(FRAME_HEADER_LEN..end))
    else {
        return torn(bytes.len(), "frame payload");
    };
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[1..6]);
    crc.update(payload);
    let actual = crc.finalize();
    if actual != expected {
        return FrameRead::Torn(QueueError::Checksum { expected, actual });
    }
    let bad_id = |e: QueueError| {
        FrameRead::Torn(QueueError::Corrupt {
            offset: FRAME_HEADER_LEN,
            what: e.to_string(),
        })
    };
    let frame = match kind {
        KIND_PUT => {
            let Some((&n, rest)) = payload.split_first() else {
                return torn(FRAME_HEADER_LEN, "id length");
            };
            let Some((id, file)) = rest.split_at_checked(n as usize) else {
                return torn(FRAME_HEADER_LEN + 1, "id");
            };
            match std::str::from_utf8(id)
                .map_err(|_| QueueError::BadId(String::from_utf8_lossy(id).into_owned()))
                .and_then(QueueId::new)
            {
                Ok(id) => Frame::Put { id, file },
                Err(e) => return bad_id(e),
            }
        }
        KIND_REMOVE => match std::str::from_utf8(payload)
            .map_err(|_| QueueError::BadId(String::from_utf8_lossy(payload).into_owned()))
            .and_then(QueueId::new)
        {
            Ok(id) => Frame::Remove { id },
            Err(e) => return bad_id(e),
        },
        k => {
            return FrameRead::Torn(QueueError::Corrupt {
                offset: 1,
                what: format!("frame kind {k:#04x}"),
            });
        }
    };
    FrameRead::Frame {
        frame,
        len: FRAME_HEADER_LEN + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> QueueId {
        QueueId::new(s).unwrap()
    }

    #[test]
    fn a_file_with_a_gap_filled_in_is_the_whole_file_and_its_frame_checks() {
        let mut msg = full_message();
        msg.body = b"Received: x\nSubject: y\n\nhead part|spooled middle|tail\n".to_vec();
        let whole_file = encode(&msg);
        let mut whole_frame = Vec::new();
        put_frame(&mut whole_frame, &msg.envelope.id, &whole_file);
        let start = msg.body.iter().position(|&b| b == b'|').unwrap() + 1;
        let end = start + b"spooled middle|".len();
        let middle = msg.body[start..end].to_vec();
        let mut gap = Gap {
            len: middle.len() as u64,
            ..Gap::default()
        };
        gap.crc.update(&middle);
        let mut short = msg.clone();
        short.body.drain(start..end);
        let (file, at) = encode_with_gap(&short, start, &gap);
        let mut filled = file.clone();
        filled.splice(at..at, middle.iter().copied());
        assert_eq!(filled, whole_file);
        let mut frame = b"earlier".to_vec();
        let (file_at, gap_pos) = put_frame_with_gap(&mut frame, &msg.envelope.id, &file, at, &gap);
        let mut framed = frame[7..].to_vec();
        framed.splice(gap_pos..gap_pos, middle.iter().copied());
        assert_eq!(framed, whole_frame);
        assert_eq!(&framed[file_at..], &whole_file[..]);
        assert!(matches!(read_frame(&framed), FrameRead::Frame { .. }));
        assert_eq!(decode(&filled).unwrap().body, msg.body);
    }

    fn full_message() -> Message {
        let mut env = Envelope::new(id("6AO6rKe2007088"), "sender@client.example.test");
        env.arrival = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        env.params = EsmtpParams {
            size: Some(5120),
            body: Some(BodyType::EightBitMime),
            ret: Some(Ret::Hdrs),
            envid: Some("env-1".into()),
            smtputf8: true,
            deliver_by: Some(DeliverBy {
                seconds: 3600,
                mode: ByMode::Notify,
                trace: true,
            }),
        };
        env.client = ClientInfo {
            daemon: Some("MTA-v6".into()),
            name: Some("localhost".into()),
            addr: Some("IPv6:0:0:0:0:0:0:0:1".into()),
            protocol: Some(Protocol::Esmtpsa),
        };
        env.msgid = Some("<202611240653.6AO6rKe2007088@oracle.example.test>".into());
        env.priority = 30_024;
        let mut bob = Recipient::new("bob@remote.example.test");
        bob.notify = Notify {
            success: true,
            failure: true,
            delay: false,
            never: false,
        };
        bob.orcpt = Some("rfc822;bob@remote.example.test".into());
        bob.tries = 3;
        bob.next_attempt = Some(UNIX_EPOCH + Duration::from_secs(1_795_001_800));
        bob.status = Some("Deferred: Connection refused by [127.0.0.1]".into());
        let mut root = Recipient::new("root");
        root.state = DeliveryState::Done;
        root.status = Some("Sent".into());
        let mut gone = Recipient::new("nosuchuser");
        gone.state = DeliveryState::Failed;
        gone.notify.never = true;
        gone.status = Some("User unknown".into());
        gone.dsn_code = Some("5.1.1".into());
        gone.remote_mta = Some("[127.0.0.1]".into());
        gone.reported = true;
        root.by_relayed = Some(ByRelayed::Trace);
        env.recipients = vec![bob, root, gone];
        env.notices = Notices {
            origin: Origin::Dsn,
            warned: true,
        };
        Message {
            envelope: env,
            body: b"Subject: t\n\nbody \xff\n".to_vec(),
        }
    }

    #[test]
    fn a_quarantine_reason_round_trips_and_its_absence_reads_as_none() {
        let mut m = full_message();
        assert_eq!(decode(&encode(&m)).unwrap().envelope.quarantine, None);
        m.envelope.quarantine = Some("held by test filter".into());
        let back = decode(&encode(&m)).unwrap();
        assert_eq!(
            back.envelope.quarantine.as_deref(),
            Some("held by test filter")
        );
        assert_eq!(back, m);
    }

    #[test]
    fn deliver_by_round_trips_in_every_mode_and_a_p_record_without_it_reads_as_none() {
        let mut m = full_message();
        for (mode, trace, seconds) in [
            (ByMode::Return, false, 120),
            (ByMode::Return, true, 1),
            (ByMode::Notify, false, -10),
            (ByMode::Notify, true, 0),
        ] {
            m.envelope.params.deliver_by = Some(DeliverBy {
                seconds,
                mode,
                trace,
            });
            assert_eq!(decode(&encode(&m)).unwrap(), m);
        }
        // Without BY= the P record is byte for byte what builds before BY= wrote, so
        // their queue files read as they did.
        m.envelope.params.deliver_by = None;
        let old = encode(&m);
        let p_at = old.iter().position(|&b| b == b'P').unwrap();
        let p_len = u32::from_be_bytes(old[p_at + 1..p_at + 5].try_into().unwrap());
        // SIZE (1+8), BODY, RET, ENVID (1+4+5), SMTPUTF8.
        assert_eq!(p_len, 9 + 1 + 1 + 10 + 1);
        assert_eq!(decode(&old).unwrap().envelope.params.deliver_by, None);
    }

    #[test]
    fn deliver_by_deadline_and_time_left() {
        let arrival = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let by = DeliverBy {
            seconds: 120,
            mode: ByMode::Return,
            trace: false,
        };
        assert_eq!(by.deadline(arrival), arrival + Duration::from_secs(120));
        assert_eq!(by.left(arrival, arrival + Duration::from_secs(50)), 70);
        assert_eq!(by.left(arrival, arrival + Duration::from_secs(200)), -80);
        assert_eq!(by.param(70), "BY=70;R");
        let n = DeliverBy {
            seconds: -5,
            mode: ByMode::Notify,
            trace: true,
        };
        assert_eq!(n.deadline(arrival), arrival - Duration::from_secs(5));
        assert_eq!(n.param(-5), "BY=-5;NT");
    }

    #[test]
    fn every_field_survives_encode_then_decode() {
        let m = full_message();
        assert_eq!(decode(&encode(&m)).unwrap(), m);
    }

    #[test]
    fn default_dsn_state_is_written_in_the_older_layout() {
        // No N record and no trailing R fields: the bytes a build before them wrote.
        let mut m = full_message();
        m.envelope.notices = Notices::default();
        for r in &mut m.envelope.recipients {
            (r.dsn_code, r.remote_mta, r.reported, r.by_relayed) = (None, None, false, None);
        }
        let bytes = encode(&m);
        let mut recs = Records {
            bytes: &bytes,
            pos: MAGIC.len(),
        };
        let mut tags = Vec::new();
        while let Some(tag) = recs.peek_tag() {
            let mut f = recs.expect(tag, "any").unwrap();
            if tag == b'R' {
                // address, NOTIFY, ORCPT, state, tries, next attempt, status: then the end.
                f.str("address").unwrap();
                f.u8("NOTIFY").unwrap();
                f.opt("ORCPT", |f| f.str("ORCPT")).unwrap();
                f.u8("state").unwrap();
                f.u32("tries").unwrap();
                f.opt("next", |f| f.i64("next")).unwrap();
                f.opt("status", |f| f.str("status")).unwrap();
                f.end().unwrap();
            }
            tags.push(tag);
        }
        assert_eq!(tags, b"HSPCIRRRBE");
        assert_eq!(decode(&bytes).unwrap(), m);
    }

    #[test]
    fn every_protocol_round_trips_by_code_and_name() {
        for p in Protocol::ALL {
            let mut m = full_message();
            m.envelope.client.protocol = Some(p);
            assert_eq!(decode(&encode(&m)).unwrap(), m, "{p:?}");
            assert_eq!(Protocol::from_name(p.as_str()), Some(p));
        }
        assert_eq!(Protocol::from_name("X"), None);
    }

    #[test]
    fn minimal_message_with_null_sender_and_no_options_round_trips() {
        let mut env = Envelope::new(id("A1"), "");
        env.arrival = UNIX_EPOCH - Duration::from_secs(5);
        let m = Message {
            envelope: env,
            body: Vec::new(),
        };
        assert_eq!(decode(&encode(&m)).unwrap(), m);
    }

    #[test]
    fn file_starts_with_magic_and_ends_with_the_end_record() {
        let m = full_message();
        let bytes = encode(&m);
        assert_eq!(&bytes[..8], MAGIC);
        let end = &bytes[bytes.len() - END_RECORD_LEN..];
        assert_eq!(end[0], b'E');
        assert_eq!(u32::from_be_bytes(end[1..5].try_into().unwrap()), 12);
        assert_eq!(
            u64::from_be_bytes(end[5..13].try_into().unwrap()),
            m.body.len() as u64
        );
        let crc = crc32fast::hash(&bytes[..bytes.len() - END_RECORD_LEN]);
        assert_eq!(u32::from_be_bytes(end[13..17].try_into().unwrap()), crc);
    }

    #[test]
    fn every_truncation_is_an_error_never_a_message() {
        let bytes = encode(&full_message());
        for cut in 0..bytes.len() {
            let err = decode(&bytes[..cut]).expect_err(&format!("cut at {cut}"));
            assert!(
                matches!(
                    err,
                    QueueError::Truncated { .. } | QueueError::Corrupt { .. }
                ),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let bytes = encode(&full_message());
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                assert!(decode(&b).is_err(), "flip {flip:#x} at {i} went undetected");
            }
        }
    }

    #[test]
    fn hostile_bytes_give_errors_not_panics() {
        // A deterministic pseudo-random walk over short inputs that start with the magic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 96) as usize;
            let mut b = MAGIC.to_vec();
            let mut y = x;
            for _ in 0..len {
                y = y
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                b.push((y >> 56) as u8);
            }
            assert!(decode(&b).is_err());
        }
        // Lengths that point far past the end.
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[b'H', 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode(&b),
            Err(QueueError::Truncated { offset: 13, .. })
        ));
    }

    #[test]
    fn wrong_magic_version_and_trailing_bytes_are_named() {
        assert!(matches!(
            decode(b"From x\nSubject: y\n"),
            Err(QueueError::BadMagic)
        ));

        let mut bytes = encode(&full_message());
        bytes[13..15].copy_from_slice(&2u16.to_be_bytes());
        assert!(matches!(
            decode(&bytes),
            Err(QueueError::UnsupportedVersion(2))
        ));

        let mut bytes = encode(&full_message());
        bytes.push(b'\n');
        let err = decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("1 bytes after END"), "{err}");
    }

    #[test]
    fn a_file_cut_just_before_end_is_incomplete() {
        let bytes = encode(&full_message());
        let err = decode(&bytes[..bytes.len() - END_RECORD_LEN]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "queue file truncated at byte {}: expected END record E",
                bytes.len() - END_RECORD_LEN
            )
        );
    }

    #[test]
    fn journal_frames_round_trip_and_point_at_the_queue_file() {
        let file = encode(&full_message());
        let mut seg = Vec::new();
        let at = put_frame(&mut seg, &id("6AO6rKe2007088"), &file);
        assert_eq!(&seg[at..], &file[..]);
        let put_len = seg.len();
        remove_frame(&mut seg, &id("A1"));

        let FrameRead::Frame { frame, len } = read_frame(&seg) else {
            panic!("no frame")
        };
        assert_eq!(len, put_len);
        assert_eq!(
            frame,
            Frame::Put {
                id: id("6AO6rKe2007088"),
                file: &file
            }
        );
        let FrameRead::Frame { frame, len } = read_frame(&seg[put_len..]) else {
            panic!("no frame")
        };
        assert_eq!(
            (frame, len),
            (Frame::Remove { id: id("A1") }, seg.len() - put_len)
        );
        assert!(matches!(read_frame(&seg[seg.len()..]), FrameRead::End));
    }

    #[test]
    fn cut_or_damaged_frames_are_torn_never_a_frame() {
        let mut seg = Vec::new();
        put_frame(&mut seg, &id("Q1"), &encode(&full_message()));
        for cut in 1..seg.len() {
            assert!(
                matches!(read_frame(&seg[..cut]), FrameRead::Torn(_)),
                "cut at {cut}"
            );
        }
        for i in 0..seg.len() {
            let mut b = seg.clone();
            b[i] ^= 0x10;
            assert!(
                !matches!(read_frame(&b), FrameRead::Frame { .. }),
                "flip at {i}"
            );
        }
        let mut bad = Vec::new();
        frame(&mut bad, KIND_REMOVE, &[b"../x"]);
        assert!(matches!(
            read_frame(&bad),
            FrameRead::Torn(QueueError::Corrupt { .. })
        ));
    }

    #[test]
    fn crlf_becomes_lf_and_lone_cr_stays() {
        assert_eq!(to_lf(b"a\r\nb\rc\n\r\n\r"), b"a\nb\rc\n\n\r");
        assert_eq!(to_lf(b""), b"");
    }

    #[test]
    fn body_part_is_what_follows_the_first_empty_line() {
        assert_eq!(body_part_len(b"Subject: queued from cli\n\nbody\n"), 5);
        assert_eq!(body_part_len(b"\nbody\n"), 5);
        assert_eq!(body_part_len(b"Subject: only headers\n"), 0);
        assert_eq!(body_part_len(b"A: b\n\n"), 0);
    }
}
