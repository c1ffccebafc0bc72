//! The SMTP server side: bytes from a client in, replies and accepted messages out.
//!
//! * [`command`] parses one command line into a [`command::Command`];
//! * [`session`] is the sans-IO state machine that answers commands with [`session::Action`]s;
//! * [`data`] reads a DATA body (dot-unstuffing, `<CRLF>.<CRLF>`, bare CR/LF rejection);
//! * [`chunk`] reads the octets of BDAT chunks (RFC 3030) into the same form;
//! * [`body`] holds the message being received and enforces MaxMessageSize (or a hard cap)
//!   and MaxHeadersLength for both;
//! * [`reply`] holds every reply text;
//! * [`conn`] is the one I/O driver: socket ↔ session, timeouts, pipelining, shutdown.
//!
//! Wiring, per accepted connection (what the listener does):
//!
//! ```text
//! let ctx = SessionContext { hostname, greeting, daemon_name, daemon_flags, client,
//!                            max_message_size, max_headers_length, max_recipients,
//!                            features, privacy,
//!                            log_level, version, help, connect_reject, policy, ids };
//! let outcome = conn::serve(stream, Session::new(ctx), &mut sink, &logger,
//!                           &ConnOptions::default(), shutdown_future).await;
//! ```
//!
//! `policy` ([`session::Policy`]) decides MAIL/RCPT/VRFY/EXPN/ETRN; `sink`
//! ([`conn::MessageSink`]) stores a finished message durably before the `250`; until a queue
//! exists, [`conn::NoQueue`] refuses every message with a 451.

pub mod body;
pub mod chunk;
pub mod command;
pub mod conn;
pub mod data;
pub mod filter;
pub mod reply;
pub mod session;
