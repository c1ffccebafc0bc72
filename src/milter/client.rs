//! One connection to one filter: the socket, its timeouts, negotiation.
//!
//! In: a [`FilterDef`] (socket, `T=` timeouts), [`Command`]s to send. Out: [`Reply`]s, or a
//! [`ClientError`] whose text is sendmail's log line for that failure (`error connecting to
//! filter: Connection refused`, `timeout before data read in eom`, `read returned 0: …`,
//! `negotiate: version 1 != MTA milter version 6` …; `sendmail/milter.c`). Every read and
//! write is bounded by the filter's timeouts; nothing here decides what a failure means for
//! the mail (that is `milter::session`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use super::config::{FilterDef, SocketSpec};
use super::proto::{
    self, Command, Decoder, MDS_1M, MDS_64K, MDS_256K, Negotiated, PROTOCOL_VERSION, Reply,
    actions, flags,
};

/// Why talking to a filter failed, worded as sendmail logs it after `Milter (name): `.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("error connecting to filter: {0}")]
    Connect(String),
    #[error("timeout {} data {what}, where={where_}", if *.started { "during" } else { "before" })]
    Timeout {
        started: bool,
        what: &'static str,
        where_: &'static str,
    },
    #[error("read returned {n}: {msg}")]
    Read { n: i64, msg: String },
    #[error("write({letter}) returned -1, expected {len}: {msg}")]
    Write {
        letter: char,
        len: usize,
        msg: String,
    },
    #[error("{0}")]
    Proto(#[from] proto::ProtoError),
    #[error("negotiate: {0}")]
    Negotiate(String),
    #[error("EOM ACK/NAK timeout")]
    EomTimeout,
}

enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// An open, negotiated connection.
pub struct Client {
    sock: Sock,
    decoder: Decoder,
    /// Packets written but not yet sent: commands that get no reply are sent with the next
    /// one that does (or at [`Client::flush`]), in one write.
    out: Vec<u8>,
    /// The first unsent packet's letter and data length, for the write error line.
    out_first: Option<(u8, usize)>,
    pub timeouts: super::config::Timeouts,
    /// What the filter said it does.
    pub negotiated: Negotiated,
}

impl Client {
    /// Connects within `T=C` (0: the system's own timeout) and negotiates.
    pub async fn open(def: &FilterDef, max_data_size: usize) -> Result<Client, ClientError> {
        let t = def.timeouts;
        let connect = async {
            match &def.socket {
                SocketSpec::Local(path) => UnixStream::connect(path).await.map(Sock::Unix),
                SocketSpec::Inet { port, host } | SocketSpec::Inet6 { port, host } => {
                    let s = TcpStream::connect((host.as_str(), *port)).await?;
                    let _ = s.set_nodelay(true);
                    Ok(Sock::Tcp(s))
                }
            }
        };
        let sock = if t.connect.is_zero() {
            connect.await
        } else {
            match tokio::time::timeout(t.connect, connect).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
            }
        }
        .map_err(|e| ClientError::Connect(io_text(&e)))?;
        let mut c = Client {
            sock,
            decoder: Decoder::new(),
            out: Vec::new(),
            out_first: None,
            timeouts: t,
            negotiated: Negotiated {
                version: 0,
                actions: 0,
                protocol: 0,
                symlists: Vec::new(),
            },
        };
        c.negotiate(max_data_size).await?;
        Ok(c)
    }

    async fn negotiate(&mut self, max_data_size: usize) -> Result<(), ClientError> {
        let mut offered = flags::ALL;
        if max_data_size == MDS_256K {
            offered |= flags::MDS_256K;
        } else if max_data_size == MDS_1M {
            offered |= flags::MDS_1M;
        }
        self.send(&Command::Negotiate {
            version: PROTOCOL_VERSION,
            actions: actions::ALL,
            protocol: offered,
        })
        .await?;
        let deadline = Instant::now() + nonzero(self.timeouts.read);
        let (letter, data) = self.read_packet(deadline, "negotiate").await?;
        if letter != b'O' {
            return Err(ClientError::Negotiate(format!(
                "returned {} instead of O",
                char::from(letter)
            )));
        }
        let Ok(Reply::Negotiate(mut n)) = proto::decode(letter, &data) else {
            return Err(ClientError::Negotiate("did not return enough info".into()));
        };
        if n.version == 1 || n.version > PROTOCOL_VERSION {
            return Err(ClientError::Negotiate(format!(
                "version {} != MTA milter version {PROTOCOL_VERSION}",
                n.version
            )));
        }
        if n.actions & actions::ALL != n.actions {
            return Err(ClientError::Negotiate(format!(
                "filter abilities 0x{:x} != MTA milter abilities 0x{:x}",
                n.actions,
                actions::ALL
            )));
        }
        n.protocol &= !flags::INTERNAL;
        if n.protocol & flags::ALL != n.protocol {
            return Err(ClientError::Negotiate(format!(
                "protocol abilities 0x{:x} != MTA milter abilities 0x{:x}",
                n.protocol,
                flags::ALL
            )));
        }
        // Older filters do not know these stages.
        if n.version <= 2 {
            n.protocol |= flags::NOUNKNOWN;
        }
        if n.version <= 3 {
            n.protocol |= flags::NODATA;
        }
        self.negotiated = n;
        Ok(())
    }

    /// True when the filter asked not to be sent this kind of command.
    pub fn skips(&self, flag: u32) -> bool {
        self.negotiated.protocol & flag != 0
    }

    /// Writes one packet (and any queued before it) within `T=S`.
    pub async fn send(&mut self, cmd: &Command) -> Result<(), ClientError> {
        self.queue(cmd);
        self.flush().await
    }

    /// Queues one packet; it goes out with the next [`Client::send`], read or flush. Only
    /// for commands the filter does not answer, so nothing waits on it.
    pub fn queue(&mut self, cmd: &Command) {
        let len = cmd.encode_into(&mut self.out);
        self.out_first.get_or_insert((cmd.letter(), len + 1));
    }

    /// Queues one body chunk without copying it into a [`Command`] first.
    pub fn queue_body(&mut self, chunk: &[u8]) {
        let len = proto::encode_packet(&mut self.out, b'B', chunk);
        self.out_first.get_or_insert((b'B', len + 1));
    }

    /// Bytes queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Sends what is queued, in one write, within `T=S`.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        let Some((letter, len)) = self.out_first.take() else {
            return Ok(());
        };
        let bytes = std::mem::take(&mut self.out);
        let write = async {
            match &mut self.sock {
                Sock::Tcp(s) => write_all(s, &bytes).await,
                Sock::Unix(s) => write_all(s, &bytes).await,
            }
        };
        let r = tokio::time::timeout(nonzero(self.timeouts.send), write).await;
        // The buffer is kept for the next packets (its capacity, not its bytes).
        self.out = bytes;
        self.out.clear();
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ClientError::Write {
                letter: char::from(letter),
                len,
                msg: io_text(&e),
            }),
            Err(_) => Err(ClientError::Timeout {
                started: false,
                what: "write",
                where_: where_of_letter(letter),
            }),
        }
    }

    /// True when the filter has neither closed this idle connection nor sent anything
    /// unasked (checked without waiting, before the connection is used again).
    pub fn is_idle_and_open(&self) -> bool {
        let sock = match &self.sock {
            Sock::Tcp(s) => socket2::SockRef::from(s),
            Sock::Unix(s) => socket2::SockRef::from(s),
        };
        let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        matches!(sock.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            && !self.decoder.is_partial()
            && self.out.is_empty()
    }

    /// Acknowledges what was read at once instead of with our next packet. At end of
    /// message a filter writes its changes and then its verdict, each packet on its own;
    /// libmilter does not set `TCP_NODELAY`, so Nagle's algorithm holds each next packet until
    /// the previous one is acknowledged, and Linux delays that acknowledgement by 40 ms while
    /// we wait without writing. opendkim's `DKIM-Signature` then cost every message 40 ms:
    /// fed by 20 sessions at once it passed ≈ 400 msg/s, ≈ 880 with this (bench/milter.sh's
    /// ceiling row). A unix socket has no such delay.
    pub fn ack_now(&self) {
        if let Sock::Tcp(s) = &self.sock {
            // Only a hint: without it the next packet comes, 40 ms later.
            let _ = socket2::SockRef::from(s).set_tcp_quickack(true);
        }
    }

    /// Reads one reply within `T=R`.
    pub async fn read(&mut self, where_: &'static str) -> Result<Reply, ClientError> {
        self.read_until(Instant::now() + nonzero(self.timeouts.read), where_)
            .await
    }

    /// Reads one reply, giving up at `deadline`.
    pub async fn read_until(
        &mut self,
        deadline: Instant,
        where_: &'static str,
    ) -> Result<Reply, ClientError> {
        let (letter, data) = self.read_packet(deadline, where_).await?;
        Ok(proto::decode(letter, &data)?)
    }

    /// Reads one packet (letter and data), giving up at `deadline`.
    async fn read_packet(
        &mut self,
        deadline: Instant,
        where_: &'static str,
    ) -> Result<(u8, Vec<u8>), ClientError> {
        self.flush().await?;
        let mut buf = [0u8; 8192];
        loop {
            if let Some(p) = self.decoder.next_packet()? {
                return Ok(p);
            }
            let started = self.decoder.is_partial();
            let read = async {
                match &mut self.sock {
                    Sock::Tcp(s) => s.read(&mut buf).await,
                    Sock::Unix(s) => s.read(&mut buf).await,
                }
            };
            match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(0)) => {
                    return Err(ClientError::Read {
                        n: 0,
                        msg: "Success".into(),
                    });
                }
                Ok(Ok(n)) => self.decoder.feed(&buf[..n]),
                Ok(Err(e)) => {
                    return Err(ClientError::Read {
                        n: -1,
                        msg: io_text(&e),
                    });
                }
                Err(_) => {
                    return Err(ClientError::Timeout {
                        started,
                        what: "read",
                        where_,
                    });
                }
            }
        }
    }

    /// The largest packet the filter may be sent (`SMFIP_MDS_*` it asked for).
    pub fn max_data_size(&self) -> usize {
        if self.skips(flags::MDS_1M) {
            MDS_1M
        } else if self.skips(flags::MDS_256K) {
            MDS_256K
        } else {
            MDS_64K
        }
    }
}

async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// Reads never wait forever: a zero timeout means "the system's", here one hour.
fn nonzero(d: Duration) -> Duration {
    if d.is_zero() {
        Duration::from_secs(3600)
    } else {
        d
    }
}

/// sendmail's `where=` names for each command letter.
fn where_of_letter(letter: u8) -> &'static str {
    match letter {
        b'O' => "negotiate",
        b'D' => "send_macros",
        b'C' => "connect",
        b'H' => "helo",
        b'M' => "mail",
        b'R' => "rcpt",
        b'T' => "data",
        b'U' => "unknown",
        b'L' => "header",
        b'N' => "eoh",
        b'B' => "body chunk",
        b'E' => "eom",
        b'A' => "abort_filter",
        _ => "quit_filter",
    }
}

/// An I/O error as strerror words it (`Connection refused`), without Rust's ` (os error N)`.
fn io_text(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::TimedOut {
        return "Connection timed out".into();
    }
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
