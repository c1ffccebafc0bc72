//! The milter wire format (protocol version 6), sans-IO: commands in, bytes out; bytes in,
//! replies out.
//!
//! In: what the MTA wants to tell a filter ([`Command`]), and the bytes a filter sent
//! ([`Decoder::feed`]). Out: the framed bytes to write ([`Command::encode`]) and the decoded
//! [`Reply`]s, one per packet. No socket, no clock.
//!
//! A packet is a 32-bit big-endian length (of what follows), one command letter and its data;
//! strings are NUL-terminated. The letters, flag bits and field layouts are those of
//! sendmail 8.17's `include/libmilter/mfdef.h` and `mfapi.h`; the MTA side's use of them follows
//! `sendmail/milter.c` (`milter_negotiate`, `milter_connect`, `milter_send_macros`,
//! `milter_addheader` …). Reference: sendmail's `libmilter/docs/` (the `smfi_*` pages).

use std::fmt;

/// The protocol version this MTA speaks (`SMFI_PROT_VERSION`).
pub const PROTOCOL_VERSION: u32 = 6;
/// A body chunk is at most this long (`MILTER_CHUNK_SIZE`).
pub const CHUNK_SIZE: usize = 65535;
/// The default largest packet (`MILTER_MAX_DATA_SIZE`, `MILTER_MDS_64K`).
pub const MDS_64K: usize = 64 * 1024 - 1;
/// `MILTER_MDS_256K`.
pub const MDS_256K: usize = 256 * 1024 - 1;
/// `MILTER_MDS_1M`.
pub const MDS_1M: usize = 1024 * 1024 - 1;
/// The largest packet a filter may send us, whatever was negotiated: a filter is not allowed
/// to make us buffer more than this for one packet.
pub const MAX_PACKET: usize = MDS_1M + 1;

/// Actions (`SMFIF_*`): what a filter may do at end of message.
pub mod actions {
    pub const ADDHDRS: u32 = 0x01;
    pub const CHGBODY: u32 = 0x02;
    pub const ADDRCPT: u32 = 0x04;
    pub const DELRCPT: u32 = 0x08;
    pub const CHGHDRS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHGFROM: u32 = 0x40;
    pub const ADDRCPT_PAR: u32 = 0x80;
    pub const SETSYMLIST: u32 = 0x100;
    /// Everything this MTA offers (`SMFI_CURR_ACTS`).
    pub const ALL: u32 = 0x1ff;
}

/// Protocol flags (`SMFIP_*`): what the filter does not want sent, or will not answer.
pub mod flags {
    pub const NOCONNECT: u32 = 0x1;
    pub const NOHELO: u32 = 0x2;
    pub const NOMAIL: u32 = 0x4;
    pub const NORCPT: u32 = 0x8;
    pub const NOBODY: u32 = 0x10;
    pub const NOHDRS: u32 = 0x20;
    pub const NOEOH: u32 = 0x40;
    pub const NR_HDR: u32 = 0x80;
    pub const NOUNKNOWN: u32 = 0x100;
    pub const NODATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJ: u32 = 0x800;
    pub const NR_CONN: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_UNKN: u32 = 0x20000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    pub const HDR_LEADSPC: u32 = 0x100000;
    pub const MDS_256K: u32 = 0x1000_0000;
    pub const MDS_1M: u32 = 0x2000_0000;
    /// Bits only used between MTA and libmilter (`SMFI_INTERNAL`).
    pub const INTERNAL: u32 = 0x7000_0000;
    /// Every defined protocol bit (`SMFI_CURR_PROT`).
    pub const ALL: u32 = 0x1f_ffff;
}

/// The stages a macro list belongs to (`SMFIM_*`), in sendmail's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Connect = 0,
    Helo = 1,
    EnvFrom = 2,
    EnvRcpt = 3,
    Data = 4,
    Eom = 5,
    Eoh = 6,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Connect,
        Stage::Helo,
        Stage::EnvFrom,
        Stage::EnvRcpt,
        Stage::Data,
        Stage::Eom,
        Stage::Eoh,
    ];

    /// The stage numbered `n` on the wire (`SMFIR_SETSYMLIST`).
    pub fn from_wire(n: u32) -> Option<Stage> {
        Stage::ALL.get(n as usize).copied()
    }

    /// The `Milter.macros.<name>` suboption of this stage.
    pub fn option_name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::EnvFrom => "envfrom",
            Stage::EnvRcpt => "envrcpt",
            Stage::Data => "data",
            Stage::Eom => "eom",
            Stage::Eoh => "eoh",
        }
    }

    /// The command letter the macros of this stage are sent before.
    pub fn command_letter(self) -> u8 {
        match self {
            Stage::Connect => b'C',
            Stage::Helo => b'H',
            Stage::EnvFrom => b'M',
            Stage::EnvRcpt => b'R',
            Stage::Data => b'T',
            Stage::Eom => b'E',
            Stage::Eoh => b'N',
        }
    }
}

/// The client's address as `SMFIC_CONNECT` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    /// `U`: no address (`-bs`, command line).
    Unknown,
    /// `L`: a unix socket path.
    Unix(String),
    /// `4`: port and dotted address.
    Inet(u16, String),
    /// `6`: port and address text.
    Inet6(u16, String),
}

/// What the MTA sends (`SMFIC_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `O`: version, actions offered, protocol flags offered.
    Negotiate {
        version: u32,
        actions: u32,
        protocol: u32,
    },
    /// `D`: macros for the command letter that follows.
    Macros {
        stage_letter: u8,
        pairs: Vec<(String, String)>,
    },
    /// `C`: client host name and address.
    Connect { hostname: String, family: Family },
    /// `H`: the HELO/EHLO argument.
    Helo(String),
    /// `M`: the sender and its ESMTP arguments.
    Mail(Vec<String>),
    /// `R`: the recipient and its ESMTP arguments.
    Rcpt(Vec<String>),
    /// `T`: the DATA command.
    Data,
    /// `U`: a command the MTA did not know.
    Unknown(String),
    /// `L`: one header, name and value.
    Header { name: String, value: Vec<u8> },
    /// `N`: end of headers.
    EndOfHeaders,
    /// `B`: a body chunk (CRLF line ends).
    Body(Vec<u8>),
    /// `E`: end of message.
    EndOfMessage,
    /// `A`: the message is over (a new one may follow on this connection).
    Abort,
    /// `Q`: the session is over, close.
    Quit,
    /// `K`: the session is over, another follows on this connection.
    QuitNewConnection,
}

impl Command {
    /// The command letter.
    pub fn letter(&self) -> u8 {
        match self {
            Command::Negotiate { .. } => b'O',
            Command::Macros { .. } => b'D',
            Command::Connect { .. } => b'C',
            Command::Helo(_) => b'H',
            Command::Mail(_) => b'M',
            Command::Rcpt(_) => b'R',
            Command::Data => b'T',
            Command::Unknown(_) => b'U',
            Command::Header { .. } => b'L',
            Command::EndOfHeaders => b'N',
            Command::Body(_) => b'B',
            Command::EndOfMessage => b'E',
            Command::Abort => b'A',
            Command::Quit => b'Q',
            Command::QuitNewConnection => b'K',
        }
    }

    /// The command's data (without length and letter).
    pub fn data(&self) -> Vec<u8> {
        let mut d = Vec::new();
        match self {
            Command::Negotiate {
                version,
                actions,
                protocol,
            } => {
                d.extend_from_slice(&version.to_be_bytes());
                d.extend_from_slice(&actions.to_be_bytes());
                d.extend_from_slice(&protocol.to_be_bytes());
            }
            Command::Macros {
                stage_letter,
                pairs,
            } => {
                d.push(*stage_letter);
                for (k, v) in pairs {
                    push_str(&mut d, k.as_bytes());
                    push_str(&mut d, v.as_bytes());
                }
            }
            Command::Connect { hostname, family } => {
                push_str(&mut d, hostname.as_bytes());
                match family {
                    Family::Unknown => d.push(b'U'),
                    Family::Unix(path) => {
                        d.push(b'L');
                        d.extend_from_slice(&0u16.to_be_bytes());
                        push_str(&mut d, path.as_bytes());
                    }
                    Family::Inet(port, addr) => {
                        d.push(b'4');
                        d.extend_from_slice(&port.to_be_bytes());
                        push_str(&mut d, addr.as_bytes());
                    }
                    Family::Inet6(port, addr) => {
                        d.push(b'6');
                        d.extend_from_slice(&port.to_be_bytes());
                        push_str(&mut d, addr.as_bytes());
                    }
                }
            }
            Command::Helo(s) | Command::Unknown(s) => push_str(&mut d, s.as_bytes()),
            Command::Mail(args) | Command::Rcpt(args) => {
                for a in args {
                    push_str(&mut d, a.as_bytes());
                }
            }
            Command::Header { name, value } => {
                push_str(&mut d, name.as_bytes());
                push_str(&mut d, value);
            }
            Command::Body(chunk) => d.extend_from_slice(chunk),
            Command::Data
            | Command::EndOfHeaders
            | Command::EndOfMessage
            | Command::Abort
            | Command::Quit
            | Command::QuitNewConnection => {}
        }
        d
    }

    /// The whole packet: length, letter, data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the whole packet to `out`; returns its data length.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> usize {
        if let Command::Body(chunk) = self {
            return encode_packet(out, b'B', chunk);
        }
        let data = self.data();
        encode_packet(out, self.letter(), &data)
    }
}

/// Appends one packet (length, letter, `data`) to `out`; returns the data length.
pub fn encode_packet(out: &mut Vec<u8>, letter: u8, data: &[u8]) -> usize {
    out.reserve(5 + data.len());
    out.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
    out.push(letter);
    out.extend_from_slice(data);
    data.len()
}

/// A string with its NUL (an embedded NUL would end it early on the other side, so the value
/// is cut there as sendmail's C strings cut it).
fn push_str(d: &mut Vec<u8>, s: &[u8]) {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    d.extend_from_slice(&s[..end]);
    d.push(0);
}

/// The filter's answer to negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    pub actions: u32,
    pub protocol: u32,
    /// Macro lists the filter asked for (`SMFIF_SETSYMLIST`), by stage.
    pub symlists: Vec<(Stage, Vec<String>)>,
}

/// What a filter sends (`SMFIR_*`), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Negotiate(Negotiated),
    Continue,
    Accept,
    Reject,
    Discard,
    Tempfail,
    Skip,
    /// `4`: shut the connection down with 421.
    Shutdown,
    /// `f`: a connection failure (treated as tempfail).
    ConnFail,
    /// `y`: a full SMTP reply (`550 5.7.1 text`), already checked to start with 4xx/5xx.
    ReplyCode(String),
    /// `y` whose text is not a valid 4xx/5xx reply: sendmail uses its default instead.
    BadReplyCode,
    /// `p`: still working, reset the timer.
    Progress,
    /// `q`: quarantine with this reason.
    Quarantine(String),
    /// `h`: add a header.
    AddHeader {
        name: String,
        value: String,
    },
    /// `i`: insert a header at position `index`.
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// `m`: change (empty value: delete) the `index`-th header named `name` (1-based).
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// `b`: a chunk of the replacement body.
    ReplaceBody(Vec<u8>),
    /// `+`: add a recipient.
    AddRcpt(String),
    /// `2`: add a recipient with ESMTP arguments.
    AddRcptPar {
        rcpt: String,
        args: Option<String>,
    },
    /// `-`: delete a recipient.
    DelRcpt(String),
    /// `e`: change the sender (with optional ESMTP arguments).
    ChangeFrom {
        sender: String,
        args: Option<String>,
    },
}

impl Reply {
    /// The letter, for log lines (`returned bogus response %c`).
    pub fn letter(&self) -> char {
        match self {
            Reply::Negotiate(_) => 'O',
            Reply::Continue => 'c',
            Reply::Accept => 'a',
            Reply::Reject => 'r',
            Reply::Discard => 'd',
            Reply::Tempfail => 't',
            Reply::Skip => 's',
            Reply::Shutdown => '4',
            Reply::ConnFail => 'f',
            Reply::ReplyCode(_) | Reply::BadReplyCode => 'y',
            Reply::Progress => 'p',
            Reply::Quarantine(_) => 'q',
            Reply::AddHeader { .. } => 'h',
            Reply::InsertHeader { .. } => 'i',
            Reply::ChangeHeader { .. } => 'm',
            Reply::ReplaceBody(_) => 'b',
            Reply::AddRcpt(_) => '+',
            Reply::AddRcptPar { .. } => '2',
            Reply::DelRcpt(_) => '-',
            Reply::ChangeFrom { .. } => 'e',
        }
    }

    /// True for what a filter sends at end of message before its verdict (a change, a
    /// quarantine, progress): another packet follows.
    pub fn precedes_verdict(&self) -> bool {
        matches!(
            self,
            Reply::Progress
                | Reply::Quarantine(_)
                | Reply::AddHeader { .. }
                | Reply::InsertHeader { .. }
                | Reply::ChangeHeader { .. }
                | Reply::ReplaceBody(_)
                | Reply::AddRcpt(_)
                | Reply::AddRcptPar { .. }
                | Reply::DelRcpt(_)
                | Reply::ChangeFrom { .. }
        )
    }
}

/// A packet that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The length field is 0 (no command letter) or over [`MAX_PACKET`].
    #[error("read size {0} out of range")]
    Size(i64),
    /// A letter no filter may send.
    #[error("returned bogus response {}", char::from(*.0))]
    Bogus(u8),
    /// The data of a known reply does not have its layout.
    #[error("malformed {} response", char::from(*.0))]
    Malformed(u8),
}

/// Splits a filter's byte stream into packets and decodes them.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Adds bytes read from the filter.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True while a packet has been started but not finished.
    pub fn is_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next whole packet as (letter, data), or `None` until more bytes arrive.
    pub fn next_packet(&mut self) -> Result<Option<(u8, Vec<u8>)>, ProtoError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len == 0 || len > MAX_PACKET {
            return Err(ProtoError::Size(len as i64 - 1));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let letter = self.buf[4];
        let data = self.buf[5..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some((letter, data)))
    }

    /// The next whole reply, or `None` until more bytes arrive.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ProtoError> {
        match self.next_packet()? {
            None => Ok(None),
            Some((letter, data)) => decode(letter, &data).map(Some),
        }
    }
}

/// Decodes one packet's letter and data.
pub fn decode(letter: u8, data: &[u8]) -> Result<Reply, ProtoError> {
    let bad = || ProtoError::Malformed(letter);
    Ok(match letter {
        b'O' => Reply::Negotiate(negotiated(data).ok_or_else(bad)?),
        b'c' => Reply::Continue,
        b'a' => Reply::Accept,
        b'r' => Reply::Reject,
        b'd' => Reply::Discard,
        b't' => Reply::Tempfail,
        b's' => Reply::Skip,
        b'4' => Reply::Shutdown,
        b'f' => Reply::ConnFail,
        b'p' => Reply::Progress,
        b'y' => reply_code(data),
        b'q' => Reply::Quarantine(cstr(data).map(lossy).unwrap_or_default()),
        b'h' => {
            let [name, value] = strings::<2>(data).ok_or_else(bad)?;
            if name.is_empty() {
                return Err(bad());
            }
            Reply::AddHeader {
                name: lossy(name),
                value: lossy(value),
            }
        }
        b'i' | b'm' => {
            if data.len() < 4 {
                return Err(bad());
            }
            let index = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            let [name, value] = strings::<2>(&data[4..]).ok_or_else(bad)?;
            if name.is_empty() {
                return Err(bad());
            }
            let (name, value) = (lossy(name), lossy(value));
            if letter == b'i' {
                Reply::InsertHeader { index, name, value }
            } else {
                Reply::ChangeHeader { index, name, value }
            }
        }
        b'b' => Reply::ReplaceBody(data.to_vec()),
        b'+' | b'-' => {
            let [addr] = strings::<1>(data).ok_or_else(bad)?;
            if addr.is_empty() {
                return Err(bad());
            }
            if letter == b'+' {
                Reply::AddRcpt(lossy(addr))
            } else {
                Reply::DelRcpt(lossy(addr))
            }
        }
        b'2' | b'e' => {
            let parts: Vec<&[u8]> = split_strings(data).ok_or_else(bad)?;
            let (first, args) = match parts.as_slice() {
                [a] => (*a, None),
                [a, b] => (*a, Some(lossy(b))),
                _ => return Err(bad()),
            };
            if first.is_empty() {
                return Err(bad());
            }
            if letter == b'2' {
                Reply::AddRcptPar {
                    rcpt: lossy(first),
                    args,
                }
            } else {
                Reply::ChangeFrom {
                    sender: lossy(first),
                    args,
                }
            }
        }
        other => return Err(ProtoError::Bogus(other)),
    })
}

/// `y`: valid when it is one NUL-terminated string of at least three characters starting
/// with `4` or `5` and two digits (sendmail's `MILTER_CHECK_REPLYCODE`).
fn reply_code(data: &[u8]) -> Reply {
    let Some(text) = cstr(data) else {
        return Reply::BadReplyCode;
    };
    let ok = text.len() + 1 == data.len()
        && text.len() >= 3
        && matches!(text[0], b'4' | b'5')
        && text[1].is_ascii_digit()
        && text[2].is_ascii_digit();
    if ok {
        Reply::ReplyCode(lossy(text))
    } else {
        Reply::BadReplyCode
    }
}

fn negotiated(data: &[u8]) -> Option<Negotiated> {
    if data.len() < 12 {
        return None;
    }
    let word = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let mut symlists = Vec::new();
    let mut rest = &data[12..];
    while rest.len() > 4 {
        let stage = Stage::from_wire(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]))?;
        rest = &rest[4..];
        let list = cstr(rest)?;
        rest = &rest[(list.len() + 1).min(rest.len())..];
        let names = lossy(list)
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        symlists.push((stage, names));
    }
    Some(Negotiated {
        version: word(0),
        actions: word(4),
        protocol: word(8),
        symlists,
    })
}

/// The bytes before the first NUL; `None` when there is no NUL.
fn cstr(data: &[u8]) -> Option<&[u8]> {
    data.iter().position(|&b| b == 0).map(|i| &data[..i])
}

/// Exactly `N` NUL-terminated strings filling `data`.
fn strings<const N: usize>(data: &[u8]) -> Option<[&[u8]; N]> {
    let parts = split_strings(data)?;
    parts.try_into().ok()
}

/// `data` as NUL-terminated strings (the last must be terminated too).
fn split_strings(data: &[u8]) -> Option<Vec<&[u8]>> {
    if data.last() != Some(&0) {
        return None;
    }
    Some(data[..data.len() - 1].split(|&b| b == 0).collect())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Family::Unknown => write!(f, "unknown"),
            Family::Unix(p) => write!(f, "unix:{p}"),
            Family::Inet(port, a) | Family::Inet6(port, a) => write!(f, "{a}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(letter: u8, data: &[u8]) -> Vec<u8> {
        let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        p.push(letter);
        p.extend_from_slice(data);
        p
    }

    #[test]
    fn negotiation_offers_version_actions_and_flags_in_network_order() {
        let c = Command::Negotiate {
            version: 6,
            actions: actions::ALL,
            protocol: flags::ALL,
        };
        assert_eq!(
            c.encode(),
            [
                0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0x1f, 0xff, 0xff
            ]
        );
    }

    #[test]
    fn connect_carries_name_family_port_and_address() {
        let c = Command::Connect {
            hostname: "localhost".into(),
            family: Family::Inet6(2525, "::1".into()),
        };
        let mut want = b"localhost\x006".to_vec();
        want.extend_from_slice(&2525u16.to_be_bytes());
        want.extend_from_slice(b"::1\0");
        assert_eq!(c.data(), want);
        let u = Command::Connect {
            hostname: "localhost".into(),
            family: Family::Unknown,
        };
        assert_eq!(u.data(), b"localhost\0U");
    }

    #[test]
    fn macros_mail_and_header_are_nul_separated() {
        let m = Command::Macros {
            stage_letter: b'M',
            pairs: vec![
                ("i".into(), "ABC".into()),
                ("{mail_addr}".into(), "a@b".into()),
            ],
        };
        assert_eq!(m.data(), b"Mi\0ABC\0{mail_addr}\0a@b\0");
        let mail = Command::Mail(vec!["<a@b>".into(), "SIZE=10".into()]);
        assert_eq!(mail.encode(), packet(b'M', b"<a@b>\0SIZE=10\0"));
        let h = Command::Header {
            name: "Subject".into(),
            value: b"hi".to_vec(),
        };
        assert_eq!(h.data(), b"Subject\0hi\0");
        assert_eq!(Command::EndOfMessage.encode(), [0, 0, 0, 1, b'E']);
    }

    #[test]
    fn decoder_waits_for_a_whole_packet_and_keeps_the_rest() {
        let mut d = Decoder::new();
        let mut bytes = packet(b'h', b"X-A\0v\0");
        bytes.extend(packet(b'c', b""));
        d.feed(&bytes[..3]);
        assert_eq!(d.next_reply(), Ok(None));
        d.feed(&bytes[3..9]);
        assert_eq!(d.next_reply(), Ok(None));
        d.feed(&bytes[9..]);
        assert_eq!(
            d.next_reply(),
            Ok(Some(Reply::AddHeader {
                name: "X-A".into(),
                value: "v".into()
            }))
        );
        assert_eq!(d.next_reply(), Ok(Some(Reply::Continue)));
        assert!(!d.is_partial());
    }

    #[test]
    fn every_reply_letter_decodes() {
        let idx = 2u32.to_be_bytes();
        let with_idx = |s: &[u8]| {
            let mut v = idx.to_vec();
            v.extend_from_slice(s);
            v
        };
        let cases: Vec<(u8, Vec<u8>, Reply)> = vec![
            (b'a', vec![], Reply::Accept),
            (b'c', vec![], Reply::Continue),
            (b'r', vec![], Reply::Reject),
            (b'd', vec![], Reply::Discard),
            (b't', vec![], Reply::Tempfail),
            (b's', vec![], Reply::Skip),
            (b'4', vec![], Reply::Shutdown),
            (b'f', vec![], Reply::ConnFail),
            (b'p', vec![], Reply::Progress),
            (b'q', b"spam\0".to_vec(), Reply::Quarantine("spam".into())),
            (
                b'y',
                b"550 5.7.1 go\0".to_vec(),
                Reply::ReplyCode("550 5.7.1 go".into()),
            ),
            (b'y', b"250 ok\0".to_vec(), Reply::BadReplyCode),
            (
                b'i',
                with_idx(b"X-I\0v\0"),
                Reply::InsertHeader {
                    index: 2,
                    name: "X-I".into(),
                    value: "v".into(),
                },
            ),
            (
                b'm',
                with_idx(b"Subject\0\0"),
                Reply::ChangeHeader {
                    index: 2,
                    name: "Subject".into(),
                    value: String::new(),
                },
            ),
            (
                b'b',
                b"new\r\n".to_vec(),
                Reply::ReplaceBody(b"new\r\n".to_vec()),
            ),
            (b'+', b"<x@y>\0".to_vec(), Reply::AddRcpt("<x@y>".into())),
            (b'-', b"<x@y>\0".to_vec(), Reply::DelRcpt("<x@y>".into())),
            (
                b'2',
                b"<x@y>\0NOTIFY=NEVER\0".to_vec(),
                Reply::AddRcptPar {
                    rcpt: "<x@y>".into(),
                    args: Some("NOTIFY=NEVER".into()),
                },
            ),
            (
                b'e',
                b"<s@y>\0".to_vec(),
                Reply::ChangeFrom {
                    sender: "<s@y>".into(),
                    args: None,
                },
            ),
        ];
        for (letter, data, want) in cases {
            assert_eq!(
                decode(letter, &data),
                Ok(want.clone()),
                "{}",
                char::from(letter)
            );
            assert_eq!(want.letter(), char::from(letter));
            // Only a verdict ends the end-of-message exchange.
            assert_eq!(
                want.precedes_verdict(),
                b"pqimb+-2e".contains(&letter),
                "{}",
                char::from(letter)
            );
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(decode(b'Z', b""), Err(ProtoError::Bogus(b'Z')));
        assert_eq!(decode(b'h', b"nonul"), Err(ProtoError::Malformed(b'h')));
        assert_eq!(decode(b'h', b"\0v\0"), Err(ProtoError::Malformed(b'h')));
        assert_eq!(decode(b'm', b"\0\0"), Err(ProtoError::Malformed(b'm')));
        let mut d = Decoder::new();
        d.feed(&[0, 0, 0, 0]);
        assert_eq!(d.next_packet(), Err(ProtoError::Size(-1)));
        let mut d = Decoder::new();
        d.feed(&[0x7f, 0, 0, 0]);
        assert!(matches!(d.next_packet(), Err(ProtoError::Size(_))));
    }

    #[test]
    fn negotiation_reply_with_symbol_lists() {
        let mut data = Vec::new();
        data.extend_from_slice(&6u32.to_be_bytes());
        data.extend_from_slice(&(actions::ADDHDRS | actions::SETSYMLIST).to_be_bytes());
        data.extend_from_slice(&(flags::NR_HDR | flags::SKIP).to_be_bytes());
        data.extend_from_slice(&2u32.to_be_bytes());
        data.extend_from_slice(b"{mail_addr} i\0");
        data.extend_from_slice(&5u32.to_be_bytes());
        data.extend_from_slice(b"{msg_id}\0");
        let Ok(Reply::Negotiate(n)) = decode(b'O', &data) else {
            panic!("not decoded");
        };
        assert_eq!(n.version, 6);
        assert_eq!(n.protocol, flags::NR_HDR | flags::SKIP);
        assert_eq!(
            n.symlists,
            vec![
                (
                    Stage::EnvFrom,
                    vec!["{mail_addr}".to_string(), "i".to_string()]
                ),
                (Stage::Eom, vec!["{msg_id}".to_string()]),
            ]
        );
        assert_eq!(decode(b'O', &data[..8]), Err(ProtoError::Malformed(b'O')));
    }
}
