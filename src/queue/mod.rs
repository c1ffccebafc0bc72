//! The mail queue: messages that sendmail-rs has acknowledged with `250` and not yet
//! delivered, kept so that no crash can lose them.
//!
//! In: a [`NewMessage`] (envelope + header and body bytes) from the SMTP session or the
//! command line, recipient state changes from the delivery runner. Out: a [`QueueId`] once
//! the message is on stable storage, [`QueueEntrySummary`] listings, whole
//! [`QueuedMessage`]s for delivery, and the `mailq` / `-bp` report.
//!
//! * [`file`](mod@file) — the on-disk formats: the queue file (versioned records closed by an END
//!   record with the body length and a CRC-32) and the journal frames; sans-IO.
//! * [`store`] — the journal on disk, durable group commit, update, remove, crash
//!   recovery.
//! * [`mailq`] — sendmail's `-bp` listing.
//! * [`id`] — sendmail-style queue ids (`6AO6rKe2007088`).
//! * [`space`] — `MinFreeBlocks` and full-disk errors (`452`).
//!
//! Sources: sendmail 8.17 `queue.c` (`queueup`, `print_single_queue`, `prtstr`) for the
//! fields kept and the listing layout; Postfix `mail_stream.c` / `rec_type.h` for "a queue
//! file counts only once it is fsynced and marked complete".

use std::fmt;
use std::path::PathBuf;

pub mod file;
pub mod id;
pub mod maildrop;
pub mod mailq;
pub mod space;
pub mod spool;
pub mod store;

pub use file::{
    BodyType, ByMode, ByRelayed, ClientInfo, DeliverBy, DeliveryState, Envelope, EsmtpParams,
    Expanded, Message, NewMessage, Notices, Notify, Origin, Protocol, QueuedMessage, Recipient,
    Ret,
};
pub use mailq::{format_queue, print_queue};
pub use store::{
    CommitterStats, CopyRef, QueueEntrySummary, RecoveryReport, Store, StoreOptions, read_copy,
};

/// Longest queue id accepted (sendmail's are 14 characters; 7-digit pids make 15).
pub const MAX_ID_LEN: usize = 40;

/// A queue id, as handed out by [`id::QueueIdGen`]: 1 to [`MAX_ID_LEN`] ASCII letters and
/// digits, so that it is always a safe file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(String);

impl QueueId {
    /// Checks `s` and wraps it; [`QueueError::BadId`] if it is empty, too long, or has a
    /// character other than `0-9A-Za-z`.
    pub fn new(s: impl Into<String>) -> Result<QueueId, QueueError> {
        let s = s.into();
        let ok =
            !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric());
        if ok {
            Ok(QueueId(s))
        } else {
            Err(QueueError::BadId(s))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for QueueId {
    type Error = QueueError;

    /// From [`id::QueueIdGen::next_id`]'s `String`.
    fn try_from(s: String) -> Result<QueueId, QueueError> {
        QueueId::new(s)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything that can go wrong in the queue layer.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A system call on a queue file or directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes do not start with the queue-file magic: not one of our files.
    #[error("not a sendmail-rs queue file (bad magic)")]
    BadMagic,
    /// A queue file written by a newer (or unknown) format version.
    #[error("queue file format version {0} is not supported (this build reads version {supported})", supported = file::FORMAT_VERSION)]
    UnsupportedVersion(u16),
    /// The file ends before a record or field it needs: an incomplete write.
    #[error("queue file truncated at byte {offset}: expected {expected}")]
    Truncated {
        offset: usize,
        expected: &'static str,
    },
    /// A record or field has a value that this format does not allow.
    #[error("queue file corrupt at byte {offset}: {what}")]
    Corrupt { offset: usize, what: String },
    /// The END record's checksum does not match the bytes before it.
    #[error("queue file checksum mismatch: END says {expected:08x}, content gives {actual:08x}")]
    Checksum { expected: u32, actual: u32 },
    /// A queue id that is not 1-40 letters and digits.
    #[error("bad queue id {0:?}: expected 1-40 ASCII letters and digits")]
    BadId(String),
    /// A message with this id is already queued (ids must be unique).
    #[error("queue id {0} is already in the queue")]
    Duplicate(QueueId),
    /// No queued message has this id (delivered, removed, or never queued).
    #[error("queue id {0} is not in the queue")]
    NotFound(QueueId),
    /// The message is larger than one queue file record can hold (4 GiB).
    #[error("message {id} is too large to queue ({size} bytes)")]
    TooLarge { id: QueueId, size: usize },
    /// A mail filter asked to try the message again later (command-line mail at pickup).
    #[error("held back by a mail filter: {0}")]
    Filtered(String),
    /// A message must have at least one recipient to be queued.
    #[error("message {0} has no recipients")]
    NoRecipients(QueueId),
    /// An update's recipient list does not match the queued one (count or addresses).
    #[error("update of {id}: recipient list does not match the queued message ({what})")]
    UpdateMismatch { id: QueueId, what: String },
    /// Another process holds the queue's lock file.
    #[error("queue {0} is in use by another process (lock file held)")]
    Locked(PathBuf),
    /// The store was opened read-only (`mailq`): it cannot change the queue.
    #[error("queue opened read-only")]
    ReadOnly,
    /// The committer thread, or a blocking worker of the store, is gone (neither happens
    /// while the store is alive, short of a panic).
    #[error("queue committer has stopped")]
    CommitterGone,
}

impl QueueError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        QueueError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_are_letters_and_digits_only() {
        assert!(QueueId::new("6AO6rKe2007088").is_ok());
        assert!(QueueId::new("a").is_ok());
        for bad in ["", "../etc", "a/b", "a.b", "id ", "é", &"x".repeat(41)] {
            assert!(
                matches!(QueueId::new(bad), Err(QueueError::BadId(_))),
                "{bad:?}"
            );
        }
    }
}
