//! Mailer programs that outlived the daemon that started them.
//!
//! In: the status files the previous daemon's program deliveries left in
//! `<QueueDirectory>/mailers/` (one per recipient, `<queue id>.<recipient index>`, written
//! by each program's supervisor: [`crate::deliver::local::inflight`], which says why
//! programs are not killed with the daemon). Out: the recipients those programs delivered
//! marked done in the queue (with sendmail's `to=` line), before this daemon tries them
//! again; the messages whose programs still run held back (busy) until the programs end.
//!
//! A status file is removed once its outcome is in the queue: by the attempt that ran the
//! program, right after its queue update ([`forget`]), or here. So a file found at start
//! belongs to an attempt whose result never reached the queue:
//! * `exit 0`: the program delivered; the recipient is done (no second copy); built-in
//!   mbox and Maildir deliveries write it too, once their fsync returned;
//! * `append …`: a built-in mbox delivery was under way: done if its entry is in the
//!   mailbox byte for byte (then synced), else retried (built-in deliveries keep their
//!   records as lines of one log, `mailers/local.log`, emptied once settled here);
//! * still running (its supervisor holds the file open): the message waits for it, then
//!   as above;
//! * any other exit, a signal, or no supervisor line: the recipient stays pending and is
//!   retried as usual (the program's failure, or nothing known).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Pass, Runner, log_to};
use crate::deliver::Outcome;
use crate::deliver::local::inflight::{self, Record};
use crate::log::Severity;
use crate::queue::{DeliveryState, QueueId};
use crate::runner::select::Selection;
use crate::runtime::Shared;

/// How long a program left by the previous daemon is waited for, at most, before its
/// recipient is treated as unknown (retried).
pub const ORPHAN_WAIT: Duration = Duration::from_secs(3600);

/// How often a program left by the previous daemon is looked at meanwhile.
pub const ORPHAN_POLL: Duration = Duration::from_millis(50);

/// The directory of the status files.
pub fn dir(shared: &Shared) -> PathBuf {
    shared.queue.dir().join("mailers")
}

/// Removes the status files of message `id` (its outcomes are in the queue now).
pub fn forget(shared: &Shared, id: &QueueId, recipients: usize) {
    let dir = dir(shared);
    for i in 0..recipients {
        let _ = std::fs::remove_file(dir.join(format!("{}.{i}", id.as_str())));
    }
}

/// `<queue id>.<index>` → both.
fn parse_name(name: &str) -> Option<(QueueId, usize)> {
    let (id, idx) = name.rsplit_once('.')?;
    Some((QueueId::new(id).ok()?, idx.parse().ok()?))
}

impl Runner {
    /// Settles what the previous daemon's programs did; holds back the messages whose
    /// programs still run (a task waits for each and settles it then).
    pub(super) async fn recover_orphans(self: &Arc<Self>) {
        let dir = dir(&self.shared);
        {
            use std::os::unix::fs::DirBuilderExt;
            let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Some((id, idx)) = e.file_name().to_str().and_then(parse_name) else {
                continue;
            };
            match inflight::read(&path) {
                Ok(Record::Running(pid)) if inflight::holds(pid, &path) => {
                    self.lock_busy().insert(id.clone());
                    self.shared.logger.log(
                        Severity::Notice,
                        Some(id.as_str()),
                        format_args!(
                            "recipient {idx}: waiting for mailer pid {pid}, started by the previous daemon"
                        ),
                    );
                    let me = self.clone();
                    tokio::spawn(async move {
                        let deadline = Instant::now() + ORPHAN_WAIT;
                        while inflight::holds(pid, &path) && Instant::now() < deadline {
                            tokio::time::sleep(ORPHAN_POLL).await;
                        }
                        me.settle_orphan(&id, idx, &path).await;
                        me.lock_busy().remove(&id);
                        me.idle.notify_waiters();
                        me.pass(&Selection::default(), Pass::Prompt)
                            .await
                            .detach_all();
                    });
                }
                _ => self.settle_orphan(&id, idx, &path).await,
            }
        }
        // The built-in deliveries' records (one log, not a file each)
        let mut kept = false;
        for (name, record) in inflight::read_logs(&dir) {
            if let Some((id, idx)) = parse_name(&name) {
                kept |= !self.settle(&id, idx, record).await;
            }
        }
        if !kept {
            inflight::clear_logs(&dir);
        }
    }

    /// Marks recipient `idx` of `id` delivered when its program ended with 0; removes the
    /// status file once that is in the queue (or nothing was to be done).
    async fn settle_orphan(&self, id: &QueueId, idx: usize, path: &Path) {
        let record = inflight::read(path).unwrap_or(Record::Empty);
        if self.settle(id, idx, record).await {
            let _ = std::fs::remove_file(path);
        } else {
            self.shared.logger.log(
                Severity::Err,
                Some(id.as_str()),
                format_args!("mailer status kept in {}", path.display()),
            );
        }
    }

    /// Marks recipient `idx` of `id` delivered when `record` says it was; false when the
    /// queue could not be updated (the record is to be kept).
    async fn settle(&self, id: &QueueId, idx: usize, record: Record) -> bool {
        let shared = &*self.shared;
        let done = match record {
            Record::Exited(0) => true,
            // a built-in mbox append the previous daemon did not see synced: delivered if
            // its entry is there (and now synced)
            Record::Appending {
                mailbox,
                offset,
                len,
                crc,
            } => tokio::task::spawn_blocking(move || {
                inflight::confirm_append(&mailbox, offset, len, crc)
            })
            .await
            .unwrap_or(false),
            // a built-in Maildir delivery the previous daemon did not see synced:
            // delivered if its file is in the Maildir (now synced)
            Record::Placing(file) => {
                tokio::task::spawn_blocking(move || inflight::confirm_maildir(&file))
                    .await
                    .unwrap_or(false)
            }
            _ => false,
        };
        if !done {
            return true;
        }
        let loaded = {
            let (store, id) = (shared.queue.clone(), id.clone());
            tokio::task::spawn_blocking(move || store.load(&id)).await
        };
        let Ok(Ok(msg)) = loaded else {
            return true; // delivered and gone meanwhile
        };
        let mut recipients = msg.envelope.recipients.clone();
        let Some(r) = recipients.get_mut(idx) else {
            return true;
        };
        if r.state != DeliveryState::Pending {
            return true;
        }
        let outcome = Outcome::Delivered {
            reply: String::new(),
        };
        r.state = DeliveryState::Done;
        r.tries += 1;
        r.status = Some(outcome.stat());
        let r = r.clone();
        match shared.queue.update(id, recipients).await {
            Ok(()) => {
                let mailer = if r.expanded.is_some() {
                    super::expand::target_mailer(&r).unwrap_or("local")
                } else {
                    "local"
                };
                log_to(shared, &msg, &r, mailer, None, &outcome, SystemTime::now());
                shared.logger.log(
                    Severity::Info,
                    Some(id.as_str()),
                    format_args!(
                        "recipient {idx}: delivered before the previous daemon ended (by a mailer that outlived it, or a mailbox append found in place)"
                    ),
                );
                true
            }
            Err(e) => {
                shared.logger.log(
                    Severity::Err,
                    Some(id.as_str()),
                    format_args!("queue update failed: {e}"),
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_file_names() {
        let (id, i) = parse_name("6AO7R0vX027769.3").unwrap();
        assert_eq!((id.as_str(), i), ("6AO7R0vX027769", 3));
        assert!(parse_name("6AO7R0vX027769").is_none());
        assert!(parse_name("x.y").is_none());
    }
}
