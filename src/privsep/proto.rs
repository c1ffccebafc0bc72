//! The wire format between the unprivileged daemon and the local delivery agent; sans-IO.
//!
//! In: requests (deliver recipients `#i, #j…` of queued message `ID`; reload the
//! configuration) and answers (one outcome per recipient asked for). Out: bytes, and back.
//!
//! A frame is a big-endian `u32` payload length (at most [`MAX_FRAME`]) and the payload.
//! Strings are a `u32` length and UTF-8 bytes; counts are `u32`. A request carries no path,
//! no address and no message text: only a queue id and recipient positions, so the most a
//! compromised daemon can ask of the root agent is "deliver what the queue says, to the
//! recipients it lists" — the agent reads the message (at the journal position given, which
//! must hold a whole, checksummed queue file of that id), routes the recipients and resolves
//! their targets itself ([`super::agent`]).
//!
//! The supervisor's messages ([`SupRequest`], [`SupAnswer`]) travel one per `SOCK_SEQPACKET`
//! message, without the length prefix; a listening socket or an agent's socket rides along
//! as SCM_RIGHTS. A `Listen` names a daemon only by its `Name=`: the supervisor binds what
//! its own configuration says for that name, nothing the daemon describes.

use std::io::{self, Read, Write};

use crate::deliver::Outcome;
use crate::queue::CopyRef;

/// Largest payload accepted: a request is an id and a few thousand indexes; an answer a few
/// thousand outcomes with texts of a few hundred bytes.
pub const MAX_FRAME: usize = 4 << 20;

/// What the daemon asks the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Deliver the recipients at these positions of the queued message `qid`, whose latest
    /// copy is at `at` in the journal.
    Deliver {
        qid: String,
        at: CopyRef,
        indexes: Vec<u32>,
    },
    /// Re-read the configuration (the daemon got SIGHUP).
    Reload,
    /// The outcomes of these recipients of `qid` are in the queue: the agent's records of
    /// their deliveries ([`super::ledger`]) have served.
    Forget { qid: String, indexes: Vec<u32> },
}

/// A request with the number its answer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged<T> {
    pub tag: u64,
    pub body: T,
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("frame of {0} bytes is larger than the {MAX_FRAME} allowed")]
    TooLarge(usize),
    #[error("frame ends inside {0}")]
    Short(&'static str),
    #[error("unknown {what} {value}")]
    Unknown { what: &'static str, value: u8 },
    #[error("string field is not UTF-8")]
    NotUtf8,
    #[error("{0} bytes left over after the frame's fields")]
    Trailing(usize),
}

const REQ_DELIVER: u8 = 1;
const REQ_RELOAD: u8 = 2;
const REQ_FORGET: u8 = 3;
const OUT_DELIVERED: u8 = 0;
const OUT_TEMPORARY: u8 = 1;
const OUT_PERMANENT: u8 = 2;

/// Encodes a request payload.
pub fn encode_request(r: &Tagged<Request>) -> Vec<u8> {
    let mut b = r.tag.to_be_bytes().to_vec();
    match &r.body {
        Request::Deliver { qid, at, indexes } => {
            b.push(REQ_DELIVER);
            put_str(&mut b, qid);
            for n in [at.segment, at.offset, at.len] {
                b.extend_from_slice(&n.to_be_bytes());
            }
            put_indexes(&mut b, indexes);
        }
        Request::Reload => b.push(REQ_RELOAD),
        Request::Forget { qid, indexes } => {
            b.push(REQ_FORGET);
            put_str(&mut b, qid);
            put_indexes(&mut b, indexes);
        }
    }
    b
}

fn put_indexes(b: &mut Vec<u8>, indexes: &[u32]) {
    b.extend_from_slice(&(indexes.len() as u32).to_be_bytes());
    for i in indexes {
        b.extend_from_slice(&i.to_be_bytes());
    }
}

/// Decodes a request payload.
pub fn decode_request(bytes: &[u8]) -> Result<Tagged<Request>, ProtoError> {
    let mut r = Reader(bytes);
    let tag = r.u64("tag")?;
    let body = match r.u8("request kind")? {
        REQ_DELIVER => {
            let qid = r.string("queue id")?;
            let at = CopyRef {
                segment: r.u64("segment")?,
                offset: r.u64("offset")?,
                len: r.u64("length")?,
            };
            let indexes = r.indexes()?;
            Request::Deliver { qid, at, indexes }
        }
        REQ_RELOAD => Request::Reload,
        REQ_FORGET => {
            let qid = r.string("queue id")?;
            let indexes = r.indexes()?;
            Request::Forget { qid, indexes }
        }
        value => {
            return Err(ProtoError::Unknown {
                what: "request kind",
                value,
            });
        }
    };
    r.end()?;
    Ok(Tagged { tag, body })
}

/// Encodes an answer payload: one outcome per recipient asked for, in order.
pub fn encode_answer(a: &Tagged<Vec<Outcome>>) -> Vec<u8> {
    let mut b = a.tag.to_be_bytes().to_vec();
    b.extend_from_slice(&(a.body.len() as u32).to_be_bytes());
    for o in &a.body {
        match o {
            Outcome::Delivered { reply } => {
                b.push(OUT_DELIVERED);
                put_str(&mut b, reply);
            }
            Outcome::Temporary { dsn, text } | Outcome::Permanent { dsn, text } => {
                let kind = if matches!(o, Outcome::Temporary { .. }) {
                    OUT_TEMPORARY
                } else {
                    OUT_PERMANENT
                };
                b.push(kind);
                put_str(&mut b, dsn);
                put_str(&mut b, text);
            }
        }
    }
    b
}

/// Decodes an answer payload.
pub fn decode_answer(bytes: &[u8]) -> Result<Tagged<Vec<Outcome>>, ProtoError> {
    let mut r = Reader(bytes);
    let tag = r.u64("tag")?;
    let n = r.u32("count")? as usize;
    let mut body = Vec::with_capacity(n.min(r.0.len()));
    for _ in 0..n {
        let o = match r.u8("outcome kind")? {
            OUT_DELIVERED => Outcome::Delivered {
                reply: r.string("reply")?,
            },
            OUT_TEMPORARY => Outcome::Temporary {
                dsn: r.string("dsn")?,
                text: r.string("text")?,
            },
            OUT_PERMANENT => Outcome::Permanent {
                dsn: r.string("dsn")?,
                text: r.string("text")?,
            },
            value => {
                return Err(ProtoError::Unknown {
                    what: "outcome kind",
                    value,
                });
            }
        };
        body.push(o);
    }
    r.end()?;
    Ok(Tagged { tag, body })
}

/// What the daemon asks the root supervisor ([`super::supervisor`]); one message per
/// request on a `SOCK_SEQPACKET` pair, answered in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupRequest {
    /// Re-read the configuration (SIGHUP), so that the next `Listen` is checked against it.
    Reload,
    /// Open the socket of the daemon of this `Name=` as the supervisor's configuration says.
    Listen { name: String },
    /// Start a (new) local delivery agent and pass the daemon its end.
    Agent,
}

/// The supervisor's answer; `Listening` and `Agent` carry a descriptor (SCM_RIGHTS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupAnswer {
    Done,
    /// The listening socket, and where it is bound as the log shows it.
    Listening {
        local: String,
    },
    /// The new agent's process id; its socket comes with the message.
    Agent {
        pid: u32,
    },
    /// Not done, and why.
    Refused {
        why: String,
    },
}

const SUP_RELOAD: u8 = 1;
const SUP_LISTEN: u8 = 2;
const SUP_AGENT: u8 = 3;
const ANS_DONE: u8 = 0;
const ANS_LISTENING: u8 = 1;
const ANS_AGENT: u8 = 2;
const ANS_REFUSED: u8 = 3;

/// Encodes a request to the supervisor.
pub fn encode_sup_request(r: &SupRequest) -> Vec<u8> {
    match r {
        SupRequest::Reload => vec![SUP_RELOAD],
        SupRequest::Listen { name } => {
            let mut b = vec![SUP_LISTEN];
            put_str(&mut b, name);
            b
        }
        SupRequest::Agent => vec![SUP_AGENT],
    }
}

/// Decodes a request to the supervisor.
pub fn decode_sup_request(bytes: &[u8]) -> Result<SupRequest, ProtoError> {
    let mut r = Reader(bytes);
    let req = match r.u8("request kind")? {
        SUP_RELOAD => SupRequest::Reload,
        SUP_LISTEN => SupRequest::Listen {
            name: r.string("daemon name")?,
        },
        SUP_AGENT => SupRequest::Agent,
        value => {
            return Err(ProtoError::Unknown {
                what: "supervisor request",
                value,
            });
        }
    };
    r.end()?;
    Ok(req)
}

/// Encodes the supervisor's answer.
pub fn encode_sup_answer(a: &SupAnswer) -> Vec<u8> {
    match a {
        SupAnswer::Done => vec![ANS_DONE],
        SupAnswer::Listening { local } => {
            let mut b = vec![ANS_LISTENING];
            put_str(&mut b, local);
            b
        }
        SupAnswer::Agent { pid } => {
            let mut b = vec![ANS_AGENT];
            b.extend_from_slice(&pid.to_be_bytes());
            b
        }
        SupAnswer::Refused { why } => {
            let mut b = vec![ANS_REFUSED];
            put_str(&mut b, why);
            b
        }
    }
}

/// Decodes the supervisor's answer.
pub fn decode_sup_answer(bytes: &[u8]) -> Result<SupAnswer, ProtoError> {
    let mut r = Reader(bytes);
    let a = match r.u8("answer kind")? {
        ANS_DONE => SupAnswer::Done,
        ANS_LISTENING => SupAnswer::Listening {
            local: r.string("address")?,
        },
        ANS_AGENT => SupAnswer::Agent { pid: r.u32("pid")? },
        ANS_REFUSED => SupAnswer::Refused {
            why: r.string("reason")?,
        },
        value => {
            return Err(ProtoError::Unknown {
                what: "supervisor answer",
                value,
            });
        }
    };
    r.end()?;
    Ok(a)
}

/// Writes one frame (length, payload).
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            ProtoError::TooLarge(payload.len()),
        ));
    }
    let mut b = (payload.len() as u32).to_be_bytes().to_vec();
    b.extend_from_slice(payload);
    w.write_all(&b)?;
    w.flush()
}

/// Reads one frame's payload; `None` at a clean end of stream (between frames).
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            ProtoError::TooLarge(len),
        ));
    }
    let mut payload = vec![0; len];
    r.read_exact(&mut payload)?;
    Ok(Some(payload))
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], ProtoError> {
        if self.0.len() < n {
            return Err(ProtoError::Short(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ProtoError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ProtoError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, ProtoError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_be_bytes(a))
    }

    fn string(&mut self, what: &'static str) -> Result<String, ProtoError> {
        let n = self.u32(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| ProtoError::NotUtf8)
    }

    /// A count and that many `u32` indexes.
    fn indexes(&mut self) -> Result<Vec<u32>, ProtoError> {
        let n = self.u32("count")? as usize;
        if n > self.0.len() / 4 {
            return Err(ProtoError::Short("indexes"));
        }
        (0..n).map(|_| self.u32("index")).collect()
    }

    fn end(&self) -> Result<(), ProtoError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(ProtoError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(qid: &str, indexes: &[u32]) -> Tagged<Request> {
        Tagged {
            tag: 7,
            body: Request::Deliver {
                qid: qid.into(),
                at: CopyRef {
                    segment: 3,
                    offset: 4096,
                    len: 777,
                },
                indexes: indexes.to_vec(),
            },
        }
    }

    #[test]
    fn requests_round_trip() {
        for r in [
            deliver("6AO6rKe2007088", &[0, 3, 9]),
            deliver("x", &[]),
            Tagged {
                tag: u64::MAX,
                body: Request::Reload,
            },
            Tagged {
                tag: 7,
                body: Request::Forget {
                    qid: "6AO6rKe2007088".into(),
                    indexes: vec![0, 1, 2],
                },
            },
        ] {
            assert_eq!(decode_request(&encode_request(&r)), Ok(r));
        }
    }

    #[test]
    fn answers_round_trip() {
        let a = Tagged {
            tag: 42,
            body: vec![
                Outcome::Delivered {
                    reply: String::new(),
                },
                Outcome::Temporary {
                    dsn: "4.2.0".into(),
                    text: "Deferred: mailbox busy".into(),
                },
                Outcome::Permanent {
                    dsn: "5.1.1".into(),
                    text: "User unknown".into(),
                },
            ],
        };
        assert_eq!(decode_answer(&encode_answer(&a)), Ok(a));
    }

    /// `m` decodes back from its encoding, and every cut of that encoding is refused.
    fn round_trips_and_cuts_are_refused<T: PartialEq + std::fmt::Debug>(
        m: T,
        encode: fn(&T) -> Vec<u8>,
        decode: fn(&[u8]) -> Result<T, ProtoError>,
    ) {
        let b = encode(&m);
        assert_eq!(decode(&b), Ok(m));
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn supervisor_messages_round_trip_and_cuts_are_refused() {
        for r in [
            SupRequest::Reload,
            SupRequest::Agent,
            SupRequest::Listen {
                name: "MTA-v6".into(),
            },
        ] {
            round_trips_and_cuts_are_refused(r, encode_sup_request, decode_sup_request);
        }
        for a in [
            SupAnswer::Done,
            SupAnswer::Agent { pid: 4242 },
            SupAnswer::Listening {
                local: "[::1]:587".into(),
            },
            SupAnswer::Refused {
                why: "no daemon X".into(),
            },
        ] {
            round_trips_and_cuts_are_refused(a, encode_sup_answer, decode_sup_answer);
        }
        assert!(decode_sup_request(&[9]).is_err());
    }

    #[test]
    fn every_cut_of_a_request_is_refused_not_misread() {
        let bytes = encode_request(&deliver("6AO6rKe2007088", &[1, 2]));
        for cut in 0..bytes.len() {
            assert!(decode_request(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_request(&longer), Err(ProtoError::Trailing(1)));
    }

    #[test]
    fn hostile_counts_and_kinds_are_refused() {
        let mut b = 1u64.to_be_bytes().to_vec();
        b.push(REQ_DELIVER);
        put_str(&mut b, "id");
        b.extend_from_slice(&[0; 24]);
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_request(&b), Err(ProtoError::Short("indexes")));
        let mut b = 1u64.to_be_bytes().to_vec();
        b.push(9);
        assert!(matches!(
            decode_request(&b),
            Err(ProtoError::Unknown { value: 9, .. })
        ));
    }

    #[test]
    fn frames_carry_their_length_and_oversize_ones_are_refused() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"abc").unwrap();
        write_frame(&mut wire, b"").unwrap();
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r).unwrap(), Some(b"abc".to_vec()));
        assert_eq!(read_frame(&mut r).unwrap(), Some(Vec::new()));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(read_frame(&mut &huge[..]).is_err());
    }
}
