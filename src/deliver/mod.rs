//! Delivery agents: what happens to a queued message's recipients.
//!
//! * [`local`] — one resolved local target in (a user's mailbox as mbox or Maildir, a
//!   `/file`, a `|program`), one [`local::Outcome`] out.
//! * [`remote`] — SMTP to the next hop by MX or smart host.
//!
//! Outcomes carry sendmail's `dsn=` code and `stat=` text for the `to=` log line and decide
//! what happens to the recipient: crossed off, deferred, or bounced.

pub mod local;
pub mod remote;
