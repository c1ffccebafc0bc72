//! Delivery agents: what happens to a queued message's recipients.
//!
//! * [`local`] — one resolved local target in (a user's mailbox as mbox or Maildir, a
//!   `/file`, a `|program`), one [`local::Outcome`] out.
//! * [`route`] — mailer choice: which mailer, host and user a recipient goes to.
//! * [`remote`] — SMTP to the next hop by MX or smart host.
//! * [`dsn`] — what the sender hears back: bounces, delay warnings, return receipts
//!   (RFC 3464), queued as messages of their own.
//!
//! [`Outcome`] (one per recipient, whichever agent) carries sendmail's `dsn=` code and
//! `stat=` text for the `to=` log line and decides
//! what happens to the recipient: crossed off, deferred, or bounced.

pub mod dsn;
pub mod local;
pub mod remote;
pub mod route;

use crate::queue::{QueueId, Store};

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server took it; `reply` is its final reply text (`2.0.0 Ok: queued as X`).
    Delivered { reply: String },
    /// Try again later; `text` is the `stat=` value (`Deferred: …`).
    Temporary { dsn: String, text: String },
    /// Give up and bounce; `text` is the `stat=` value.
    Permanent { dsn: String, text: String },
}

impl Outcome {
    /// The `dsn=` field: the server's enhanced code, or ours.
    pub fn dsn(&self) -> &str {
        match self {
            Outcome::Delivered { .. } => "2.0.0",
            Outcome::Temporary { dsn, .. } | Outcome::Permanent { dsn, .. } => dsn,
        }
    }

    /// The `stat=` field: `Sent (2.0.0 Ok: queued as X)`, `Deferred: Connection refused by
    /// host.`, `550 5.1.1 <bob@x>... User unknown`.
    pub fn stat(&self) -> String {
        match self {
            // A local delivery has no remote reply: plain `Sent`, as sendmail logs it.
            Outcome::Delivered { reply } if reply.is_empty() => "Sent".to_string(),
            Outcome::Delivered { reply } => format!("Sent ({reply})"),
            Outcome::Temporary { text, .. } | Outcome::Permanent { text, .. } => text.clone(),
        }
    }

    /// The `reply=` field of the `to=` line: the remote's reply when the outcome came from
    /// one (`550 5.1.1 <bob@x>... User unknown`, `451 4.3.0 …`); `None` for connection
    /// failures, local outcomes and deliveries.
    pub fn reply(&self) -> Option<&str> {
        let text = match self {
            Outcome::Delivered { .. } => return None,
            Outcome::Temporary { text, .. } => text.strip_prefix("Deferred: ").unwrap_or(text),
            Outcome::Permanent { text, .. } => text,
        };
        let code = text.get(..3)?;
        (code.bytes().all(|b| b.is_ascii_digit()) && text.as_bytes().get(3) == Some(&b' '))
            .then_some(text)
    }

    /// `stat=` as sendmail logs it: a permanent reply by its text alone (`User unknown`,
    /// the reply itself being in `reply=`), anything else as [`Outcome::stat`].
    pub fn log_stat(&self) -> String {
        match self {
            Outcome::Permanent { text, .. } if self.reply().is_some() => {
                crate::deliver::dsn::short_reason(text).to_string()
            }
            _ => self.stat(),
        }
    }
}

/// Local delivery done by another process: under `RunAsUser`, the root agent
/// ([`crate::privsep`]) that re-reads the message from the queue and delivers the recipients
/// at `indexes` of the queued message `qid` (one [`Outcome`] each, in order).
pub trait LocalAgent: Send + Sync {
    fn deliver(&self, store: &Store, qid: &QueueId, indexes: &[usize]) -> Vec<Outcome>;
    /// The outcomes of recipients `indexes` of `qid` are in the queue: what the agent kept
    /// of their deliveries, for a daemon that dies before they are, can go.
    fn forget(&self, qid: &QueueId, indexes: &[usize]);
}
