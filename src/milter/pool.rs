//! Filter connections kept between SMTP sessions.
//!
//! In: a session's connection to a filter after it ended with `SMFIC_QUIT_NC` (the filter
//! then waits for the next session's connect on it, without a new negotiation). Out: that
//! connection for a later session of the same configuration, so a busy server does not open
//! and negotiate a filter connection per SMTP session (and the filter does not start a thread
//! for each). The newest is handed out first; one idle longer than [`MAX_IDLE`], or that the
//! filter closed or wrote to while idle, is dropped instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::client::Client;
use super::config::FilterDef;

/// At most this many idle connections per filter (more sessions than that at once open new
/// ones, closed with `SMFIC_QUIT` at their end).
pub const MAX_IDLE_PER_FILTER: usize = 64;
/// An idle connection older than this is closed rather than reused (well inside libmilter's
/// own idle timeout, 7210 s by default, and a filter's restart leaves none behind for long).
pub const MAX_IDLE: Duration = Duration::from_secs(60);

struct Idle {
    client: Client,
    since: Instant,
}

/// Idle filter connections, by filter.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: usize = self.lock().values().map(Vec::len).sum();
        write!(f, "Pool({n} idle)")
    }
}

/// The pool key: the filter's name and where it listens.
fn key(def: &FilterDef) -> String {
    format!("{}\0{:?}", def.name, def.socket)
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Idle>>> {
        // A panic while holding the lock leaves only a list of connections behind.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to `def`'s filter, still open, with `def`'s timeouts.
    pub fn take(&self, def: &FilterDef) -> Option<Client> {
        let mut idle = self.lock();
        let list = idle.get_mut(&key(def))?;
        while let Some(mut i) = list.pop() {
            if i.since.elapsed() <= MAX_IDLE && i.client.is_idle_and_open() {
                i.client.timeouts = def.timeouts;
                return Some(i.client);
            }
        }
        None
    }

    /// True when a connection to `def`'s filter would be kept.
    pub fn wants(&self, def: &FilterDef) -> bool {
        self.lock()
            .get(&key(def))
            .is_none_or(|l| l.len() < MAX_IDLE_PER_FILTER)
    }

    /// Keeps `client` (which was sent `SMFIC_QUIT_NC`) for a later session.
    pub fn put(&self, def: &FilterDef, client: Client) {
        let mut idle = self.lock();
        let list = idle.entry(key(def)).or_default();
        list.retain(|i| i.since.elapsed() <= MAX_IDLE);
        if list.len() < MAX_IDLE_PER_FILTER {
            list.push(Idle {
                client,
                since: Instant::now(),
            });
        }
    }

    /// Idle connections to `def`'s filter.
    pub fn idle(&self, def: &FilterDef) -> usize {
        self.lock().get(&key(def)).map_or(0, Vec::len)
    }
}
