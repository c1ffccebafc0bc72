//! The pickup: command-line submissions move from the maildrop into the queue.
//!
//! In: the maildrop directory under `QueueDirectory` ([`crate::queue::maildrop`]). Out: each
//! submission committed to the store, or set aside with a SYSERR when it is not a queue file.
//! The daemon runs it once a second; `sendmail -q` runs it before its queue run. With mail
//! filters (`InputMailFilters`), each submission goes through them first
//! ([`crate::milter::submission`]), as sendmail's MSP relays through the MTA's filters.

use crate::log::Severity;
use crate::queue::maildrop::{self, Picked};
use crate::runtime::Shared;

/// One pass over the maildrop (also before each `sendmail -q` run), problems logged.
pub async fn pickup_once(shared: &Shared) {
    let qdir = shared.queue.dir().to_path_buf();
    let current = shared.current();
    let filters = current.milters.input.clone();
    let picked = if filters.is_empty() {
        maildrop::pickup(&qdir, &shared.queue).await
    } else {
        // sendmail's MSP relays through the MTA: the same filters, as from localhost.
        let origin = std::sync::Arc::new(crate::milter::submission::Origin {
            host: crate::config::macros::expand("$j", &*current.config),
            daemon_name: current
                .config
                .daemons
                .first()
                .map_or_else(|| "MTA".to_string(), |d| d.name.clone()),
        });
        maildrop::pickup_filtered(&qdir, &shared.queue, |m| {
            let (cfg, logger) = (current.milters.clone(), shared.logger.clone());
            let (filters, origin) = (filters.clone(), origin.clone());
            async move {
                crate::milter::submission::filter(cfg, &filters, &origin, &logger, m).await
            }
        })
        .await
    };
    for p in picked {
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
