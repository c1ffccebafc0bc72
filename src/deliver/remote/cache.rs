//! The connection cache: open SMTP sessions kept between messages to the same next hop
//! (sendmail's `ConnectionCacheSize` / `ConnectionCacheTimeout`, Postfix's connection cache).
//!
//! In: a session that ended a mail transaction cleanly ([`client::Session`]), with the hop
//! it serves (`$h` and port), the remote settings it was opened under and its `relay=`
//! text. Out: that session for the next message to the same hop ([`Cache::take`]), which
//! starts with `RSET` (pipelined with `MAIL`, the `RCPT`s and `DATA` when the server offers
//! `PIPELINING`).
//!
//! Limits. sendmail counts `ConnectionCacheSize` per delivering process; our runner
//! delivers up to `slots` messages at once, each slot the counterpart of one sendmail
//! process, so at most `ConnectionCacheSize × slots` idle sessions are kept overall (0: no
//! caching, as in sendmail). Per hop, no more sessions exist (busy or idle) than the hop's
//! concurrency limit: a session is opened only by a delivery that holds one of the hop's
//! permits and found no idle session, so the cache never adds connections beyond it.
//!
//! A session leaves the cache, with `QUIT`, when it has been idle for
//! `ConnectionCacheTimeout` ([`Cache::sweep`], run by the queue runner every second), and
//! when its settings are no longer the running generation's (a SIGHUP that built new remote
//! settings: the next sweep closes them, and [`Cache::take`] never returns one). A session
//! on which the server said 421, or that failed in any way, is never put back; one the
//! server closed while it waited is found out by the `RSET` and the message goes over a
//! new connection ([`super::deliver_cached`]).
//!
//! A session can also skip the cache: when the next message's envelope went behind the
//! last body ([`super::client::Follow`]), the session passes straight to that message
//! ([`super::Handed`], `runner::follow`). For those envelopes the cache remembers what each
//! hop's sessions offered when one was last opened ([`Cache::capabilities`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::Settings;
use super::client::{self, ClientTimeouts};

/// An idle session and what it was opened for.
pub struct Cached {
    pub session: client::Session<TcpStream>,
    /// `relay=`: `mx.example.test. [192.0.2.1]`.
    pub relay: String,
    /// The settings it was opened under (the generation it belongs to).
    settings: Arc<Settings>,
    since: Instant,
}

impl Cached {
    /// The settings it was opened under.
    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }
}

/// Hops whose capabilities are remembered, at most (the map is cleared past it).
const REMEMBERED_HOPS: usize = 1024;

/// The cache of one queue runner.
pub struct Cache {
    slots: usize,
    idle: Mutex<HashMap<(String, u16), Vec<Cached>>>,
    /// What each hop's sessions offered when one was last opened (for envelopes made before
    /// a session is at hand: `runner::follow`).
    caps: Mutex<HashMap<(String, u16), client::Capabilities>>,
    /// Sessions opened over its life (for tests and the log).
    opened: std::sync::atomic::AtomicUsize,
}

impl Cache {
    /// A cache for a runner that delivers up to `slots` messages at once.
    pub fn new(slots: usize) -> Cache {
        Cache {
            slots,
            idle: Mutex::default(),
            caps: Mutex::default(),
            opened: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u16), Vec<Cached>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle session to `host`:`port` opened under `settings`, if any.
    pub fn take(&self, host: &str, port: u16, settings: &Arc<Settings>) -> Option<Cached> {
        let mut idle = self.lock();
        let list = idle.get_mut(&(host.to_ascii_lowercase(), port))?;
        let at = list
            .iter()
            .rposition(|c| Arc::ptr_eq(&c.settings, settings) && !expired(c, settings))?;
        Some(list.swap_remove(at))
    }

    /// Keeps `session` for the next message to `host`:`port`; `QUIT`s it instead when the
    /// cache is full or caching is off.
    pub async fn put(
        &self,
        host: &str,
        port: u16,
        settings: &Arc<Settings>,
        session: client::Session<TcpStream>,
        relay: String,
    ) {
        let limit = settings.cache_size.saturating_mul(self.slots);
        let refused = {
            let mut idle = self.lock();
            let total: usize = idle.values().map(Vec::len).sum();
            if total >= limit {
                Some(session)
            } else {
                idle.entry((host.to_ascii_lowercase(), port))
                    .or_default()
                    .push(Cached {
                        session,
                        relay,
                        settings: settings.clone(),
                        since: Instant::now(),
                    });
                None
            }
        };
        if let Some(session) = refused {
            session.quit(&settings.timeouts).await;
        }
    }

    /// Remembers what a session just opened to `host`:`port` offers.
    pub fn saw(&self, host: &str, port: u16, caps: &client::Capabilities) {
        let mut map = self.caps.lock().unwrap_or_else(|p| p.into_inner());
        let key = (host.to_ascii_lowercase(), port);
        if map.get(&key) != Some(caps) {
            if map.len() >= REMEMBERED_HOPS {
                map.clear();
            }
            map.insert(key, caps.clone());
        }
    }

    /// What sessions to `host`:`port` offered when one was last opened.
    pub fn capabilities(&self, host: &str, port: u16) -> Option<client::Capabilities> {
        let map = self.caps.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(host.to_ascii_lowercase(), port)).cloned()
    }

    /// Counts a new connection.
    pub fn opened(&self) {
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Connections opened so far.
    pub fn connections_opened(&self) -> usize {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Idle sessions now.
    pub fn idle(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Closes (with `QUIT`) every idle session that timed out or belongs to settings other
    /// than `current`.
    pub async fn sweep(&self, current: &Arc<Settings>) {
        let gone: Vec<Cached> = {
            let mut idle = self.lock();
            let mut gone = Vec::new();
            for list in idle.values_mut() {
                let mut i = 0;
                while i < list.len() {
                    let c = &list[i];
                    if !Arc::ptr_eq(&c.settings, current) || expired(c, current) {
                        gone.push(list.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            idle.retain(|_, l| !l.is_empty());
            gone
        };
        close_all(gone, false).await;
    }

    /// Closes every idle session (shutdown).
    pub async fn clear(&self) {
        let gone: Vec<Cached> = self.lock().drain().flat_map(|(_, l)| l).collect();
        close_all(gone, true).await;
    }
}

fn expired(c: &Cached, settings: &Settings) -> bool {
    c.since.elapsed() >= settings.cache_timeout
}

/// `QUIT`s each session (an idle server has nothing to send: at most a few seconds each),
/// one after the other when `wait`, else each on its own task.
async fn close_all(gone: Vec<Cached>, wait: bool) {
    for c in gone {
        let t = ClientTimeouts {
            quit: c.settings.timeouts.quit.min(Duration::from_secs(5)),
            ..c.settings.timeouts
        };
        let quit = async move { c.session.quit(&t).await };
        if wait {
            quit.await;
        } else {
            tokio::spawn(quit);
        }
    }
}
