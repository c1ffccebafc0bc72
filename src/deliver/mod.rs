//! Delivery agents: what happens to a queued message's recipients.
//!
//! * [`local`] — one resolved local target in (a user's mailbox as mbox or Maildir, a
//!   `/file`, a `|program`), one [`local::Outcome`] out.
//! * [`route`] — mailer choice: which mailer, host and user a recipient goes to.
//! * [`remote`] — SMTP to the next hop by MX or smart host.
//! * [`dsn`] — what the sender hears back: bounces, delay warnings, return receipts
//!   (RFC 3464), queued as messages of their own.
//!
//! Outcomes carry sendmail's `dsn=` code and `stat=` text for the `to=` log line and decide
//! what happens to the recipient: crossed off, deferred, or bounced.

pub mod dsn;
pub mod local;
pub mod remote;
pub mod route;
