//! Delivery: one queued message and one resolved target in, one [`Outcome`] out.
//!
//! * [`local`] — mailboxes (mbox in the spool, Maildir), `/file` and `|program` targets.
//!
//! The outcome carries sendmail's `dsn=` code and `stat=` text for the `to=` log line and
//! decides what happens to the recipient: crossed off, deferred, or bounced.

pub mod local;

pub use local::{LocalDelivery, Outcome};
