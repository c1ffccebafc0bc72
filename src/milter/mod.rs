//! Mail filters (milter, protocol version 6): the MTA side, as sendmail 8.17 speaks it.
//!
//! In: the cf's `X` lines, `InputMailFilters`, `Milter.*` options ([`config`]); the stages of
//! each SMTP session and its finished messages (through [`hook::FilteredSink`], the session's
//! message sink). Out: the filters' verdicts as SMTP replies, their changes applied to the
//! message before it is committed, and sendmail's `Milter …` log lines.
//!
//! * [`proto`] — the wire format, sans-IO (commands → bytes, bytes → replies);
//! * [`client`] — one connection to one filter: socket, `T=` timeouts, negotiation;
//! * [`engine`] — the filters of one session: every stage, states, `F=R/T/4` failure rule;
//! * [`hook`] — the session's sink: replies, log lines, the message changed before commit.
//! * [`pool`] — filter connections kept between sessions (`SMFIC_QUIT_NC`).
//! * [`submission`] — command-line mail from the maildrop through the same filters.
//!
//! Sources: sendmail 8.17 `include/libmilter/mfdef.h`, `mfapi.h`, `sendmail/milter.c`,
//! `sendmail/srvrsmtp.c`; `doc/op/op.me` "X — Mail Filter (Milter) Definitions".

pub mod client;
pub mod config;
pub mod engine;
pub mod hook;
pub mod pool;
pub mod proto;
pub mod submission;

pub use config::MilterConfig;
