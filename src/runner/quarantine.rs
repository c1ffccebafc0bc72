//! `sendmail -Q[reason] -q<limits>`: quarantining and releasing queued messages.
//!
//! In: the queue, the `-q` selection, the new reason (`None`: release), and a way to claim
//! a message against delivery. Out: each selected message's quarantine set or cleared
//! durably, sendmail's log line for each change (`quarantine=reason`, `unquarantine`), and
//! an [`Outcome`] per selected message, which [`report`] turns into what sendmail prints.
//!
//! The same code runs in the one writer of the queue: the `sendmail -Q…` process itself when
//! no daemon runs, or the daemon, asked through its control socket ([`super::control`]).
//! A message in delivery at that moment is left as it is and reported as skipped, as
//! sendmail does when the qf file is locked by a queue runner (its words: `Skipping
//! ./<id>`, and with `-v` `<id>: locked` before); nothing else writes it meanwhile, so no
//! delivery state is overwritten. As in sendmail, the change does not start a delivery: a
//! released message is delivered by the next queue run (in the daemon, the next retry
//! scan or `-q` interval run; `sendmail -qI<id>` at once).

use std::path::Path;

use super::select::Selection;
use crate::log::{Logger, Severity};
use crate::queue::{Envelope, QueueError, QueueId, Store};

/// What became of one selected message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// In delivery at that moment: left as it was.
    Locked(QueueId),
    /// Could not be changed: why.
    Failed(QueueId, String),
    /// Already quarantined with the reason asked for.
    Already(QueueId),
    /// Changed; its quarantine reason before (`None`: it was not quarantined).
    Changed { id: QueueId, before: Option<String> },
}

impl Outcome {
    /// Whether the message was changed.
    pub fn changed(&self) -> bool {
        matches!(self, Outcome::Changed { .. })
    }
}

/// Sets (`reason`) or clears (`None`) the quarantine of every message `select` takes.
/// `claim` keeps delivery off a message while its guard lives; `None` when it is in
/// delivery. Logs each change in sendmail's words.
pub async fn apply<G>(
    store: &Store,
    logger: &Logger,
    select: &Selection,
    reason: Option<String>,
    claim: impl Fn(&QueueId) -> Option<G>,
) -> Result<Vec<Outcome>, QueueError> {
    let mut out = Vec::new();
    for env in queued(store).await? {
        if !select.matches(&env) {
            continue;
        }
        let id = env.id;
        let Some(guard) = claim(&id) else {
            out.push(Outcome::Locked(id));
            continue;
        };
        // Read again under the claim: what was true before it may not be now.
        let Some(env) = load(store, &id).await.filter(|m| select.matches(m)) else {
            continue; // delivered or changed meanwhile
        };
        let before = env.quarantine;
        if before == reason {
            out.push(Outcome::Already(id));
            continue;
        }
        match store.set_quarantine(&id, reason.clone()).await {
            Ok(()) => {
                match &reason {
                    Some(r) => logger.log(
                        Severity::Info,
                        Some(id.as_str()),
                        format_args!("quarantine={r}"),
                    ),
                    None => logger.log(
                        Severity::Info,
                        Some(id.as_str()),
                        format_args!("unquarantine"),
                    ),
                }
                out.push(Outcome::Changed { id, before });
            }
            Err(QueueError::NotFound(_)) => {}
            Err(e) => out.push(Outcome::Failed(id, e.to_string())),
        }
        drop(guard);
    }
    Ok(out)
}

/// The queued messages' envelopes in run order (as sendmail walks its work list).
async fn queued(store: &Store) -> Result<Vec<Envelope>, QueueError> {
    let store = store.clone();
    let list = tokio::task::spawn_blocking(move || store.list())
        .await
        .map_err(|_| QueueError::CommitterGone)??;
    Ok(list.into_iter().map(|m| m.envelope).collect())
}

/// Message `id`'s envelope, read off the async workers; `None` if it is gone or unreadable.
async fn load(store: &Store, id: &QueueId) -> Option<Envelope> {
    let (store, id) = (store.clone(), id.clone());
    match tokio::task::spawn_blocking(move || store.load(&id)).await {
        Ok(Ok(m)) => Some(m.envelope),
        _ => None,
    }
}

/// What sendmail prints for these outcomes (`quarantine_queue`): only the skipped messages,
/// and with `-v` each change and a count. `qdir` names the queue directory.
pub fn report(outcomes: &[Outcome], reason: Option<&str>, verbose: bool, qdir: &Path) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if verbose {
        if outcomes.is_empty() {
            let _ = writeln!(s, "{}: no matches", qdir.display());
        } else {
            let _ = writeln!(s, "Processing {}:", qdir.display());
        }
    }
    for o in outcomes {
        match (o, verbose) {
            (Outcome::Locked(id), _) => {
                if verbose {
                    let _ = writeln!(s, "{id}: locked");
                }
                let _ = writeln!(s, "Skipping ./{id}");
            }
            (Outcome::Failed(id, why), _) => {
                let _ = writeln!(s, "Skipping ./{id}: {why}");
            }
            (Outcome::Already(id), true) => {
                let _ = writeln!(
                    s,
                    "{id}: Already quarantined with \"{}\"",
                    reason.unwrap_or_default()
                );
            }
            (Outcome::Changed { id, before }, true) => {
                let _ = match (before, reason) {
                    (None, Some(r)) => writeln!(s, "{id}: Quarantined with \"{r}\""),
                    (Some(b), None) => writeln!(s, "{id}: Removed quarantine of \"{b}\""),
                    (Some(b), Some(r)) => {
                        writeln!(s, "{id}: Quarantine changed from \"{b}\" to \"{r}\"")
                    }
                    (None, None) => Ok(()),
                };
            }
            _ => {}
        }
    }
    if verbose {
        match outcomes.iter().filter(|o| o.changed()).count() {
            0 => s.push_str("No changes\n"),
            1 => s.push_str("1 change\n"),
            n => {
                let _ = writeln!(s, "{n} changes");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> QueueId {
        QueueId::new(s).unwrap()
    }

    /// The oracle's words (sendmail 8.17.1.9, `[-v] -Q… -q…` on its queue, with a message
    /// whose qf a queue runner holds locked).
    #[test]
    fn the_report_is_sendmails() {
        let q = Path::new("/var/spool/mqueue");
        assert_eq!(report(&[], Some("x"), false, q), "");
        assert_eq!(
            report(&[], Some("x"), true, q),
            "/var/spool/mqueue: no matches\nNo changes\n"
        );
        let locked = [Outcome::Locked(id("6B6BQ3lg014987"))];
        assert_eq!(
            report(&locked, Some("locked"), false, q),
            "Skipping ./6B6BQ3lg014987\n"
        );
        assert_eq!(
            report(&locked, Some("locked"), true, q),
            "Processing /var/spool/mqueue:\n6B6BQ3lg014987: locked\n\
             Skipping ./6B6BQ3lg014987\nNo changes\n"
        );
        let released = [
            Outcome::Changed {
                id: id("6B6BQ3lg014987"),
                before: Some("foo".into()),
            },
            Outcome::Changed {
                id: id("6B6BQ3iY014994"),
                before: Some("spam".into()),
            },
        ];
        assert_eq!(report(&released, None, false, q), "");
        assert_eq!(
            report(&released, None, true, q),
            "Processing /var/spool/mqueue:\n\
             6B6BQ3lg014987: Removed quarantine of \"foo\"\n\
             6B6BQ3iY014994: Removed quarantine of \"spam\"\n2 changes\n"
        );
        let set = [
            Outcome::Changed {
                id: id("6B6BQb7a018129"),
                before: None,
            },
            Outcome::Already(id("6B6BQbCK018122")),
        ];
        assert_eq!(
            report(&set, Some("bar"), true, q),
            "Processing /var/spool/mqueue:\n\
             6B6BQb7a018129: Quarantined with \"bar\"\n\
             6B6BQbCK018122: Already quarantined with \"bar\"\n1 change\n"
        );
    }
}
