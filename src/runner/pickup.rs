//! The pickup: command-line submissions move from the maildrop into the queue.
//!
//! In: the maildrop directory under `QueueDirectory` ([`crate::queue::maildrop`]). Out: each
//! submission committed to the store, or set aside with a SYSERR when it is not a queue file.
//! The daemon runs it once a second; `sendmail -q` runs it before its queue run.

use crate::log::Severity;
use crate::queue::maildrop::{self, Picked};
use crate::runtime::Shared;

/// One pass over the maildrop (also before each `sendmail -q` run), problems logged.
pub async fn pickup_once(shared: &Shared) {
    let qdir = shared.queue.dir().to_path_buf();
    for p in maildrop::pickup(&qdir, &shared.queue).await {
        match p {
            Picked::Queued(_) | Picked::AlreadyQueued(_) => {}
            Picked::Corrupt { path, error } => shared.logger.log(
                Severity::Crit,
                None,
                format_args!(
                    "SYSERR: pickup: {} is not a queue file ({error}); set aside",
                    path.display()
                ),
            ),
            Picked::Failed { path, error } => shared.logger.log(
                Severity::Err,
                None,
                format_args!("pickup: {}: {error}; will retry", path.display()),
            ),
        }
    }
}
