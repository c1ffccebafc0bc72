//! The SMTP server side: bytes from a client in, replies and accepted messages out.
//!
//! * [`command`] parses one command line into a [`command::Command`];
//! * [`session`] is the sans-IO state machine that answers commands with [`session::Action`]s;
//! * [`data`] reads a DATA body (dot-unstuffing, `<CRLF>.<CRLF>`, bare CR/LF rejection);
//! * [`reply`] holds every reply text;
//! * [`conn`] is the one I/O driver: socket ↔ session, timeouts, pipelining, shutdown.

pub mod command;
pub mod conn;
pub mod data;
pub mod reply;
pub mod session;
