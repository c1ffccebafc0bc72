//! The runner's limits: connections per destination, and which mail waits for a queue run.
//!
//! In: a destination (`$h` and port) before each SMTP delivery; a message's envelope and the
//! configuration before a prompt pass. Out: a permit (held for the connection's life), and
//! whether the message is left for the next queue run.
//!
//! * **Per destination**: at most `per_destination` SMTP connections at once to one next hop
//!   (as Postfix's `default_destination_concurrency_limit`, 20); the whole runner is
//!   bounded separately ([`super::CONCURRENT_MESSAGES`] messages at once). One message's
//!   recipients for one next hop share one connection (the runner groups them by route).
//!   `DestinationConcurrencyLimit` sets it; `MaxQueueChildren` the runner's bound. Within
//!   it, each hop has a window: slow start from [`INITIAL_CONCURRENCY`], one more per
//!   delivery taken while the window is in use, back to one on a deferral, and one less
//!   per round when the hop's final replies show our messages waiting there
//!   ([`Destinations`]). The limits are read at each delivery, so a SIGHUP's new values
//!   apply to the next ones.
//! * **Host status** (sendmail's `Timeout.hoststatus`, 30 m; Debian's cf keeps it in its
//!   `HostStatusDirectory`, we in memory): a destination none of whose hosts took a
//!   connection is not connected to again for that long, or until a delivery to it
//!   succeeds; its mail is deferred with the status it got ([`Destinations::down`]).
//! * **Rate**: with `DestinationRateDelay` (ours, after Postfix's
//!   `default_destination_rate_delay`; 0 by default) deliveries to one next hop start at
//!   least that far apart.
//! * **Per local recipient**: at most `LocalDestinationConcurrencyLimit` (2, as Postfix's
//!   `local_destination_concurrency_limit`) program runs at once for one local recipient
//!   (the cf's `Mlocal` program, a `|program` target): more would only wait on the
//!   mailbox's lock, and every program in flight outlives a daemon that dies. The built-in
//!   mbox and Maildir deliveries are not limited (measured: a Maildir at 2 at once went
//!   from 668 to 254 msg/s, Postfix's figure).
//! * **DeliveryMode** (op §5.6, `DeliveryMode`; `DaemonPortOptions` `DeliveryMode=`/`D=`):
//!   mail received by a daemon whose mode is queue-only (`q`) or deferred (`d`) — or, for
//!   the command line, under such a global mode — is not delivered on commit: it waits for
//!   a queue run (the `-q` interval or `sendmail -q`). Once tried, its retries follow the
//!   backoff like any other message. Interactive (`i`) is treated as background: the
//!   delivery starts right after the commit, but the `250` does not wait for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::Config;
use crate::config::daemon_options::DeliveryMode as DaemonMode;
use crate::config::options::DeliveryMode;
use crate::deliver::Outcome;
use crate::queue::Envelope;

/// Connections a destination starts with, and comes back to once idle (Postfix's
/// `initial_destination_concurrency`, 5); never more than its limit.
pub const INITIAL_CONCURRENCY: usize = 5;

/// Final-reply round trips above the hop's least by less than this are not counted as
/// waiting at the hop: our own reply reads on a loaded machine are that late and more (the
/// crash harness saw 1–5 ms on 2 busy cores), and a hop is not taken for busy for that
/// part of it.
pub const RTT_NOISE: Duration = Duration::from_micros(300);

/// Messages waiting at a hop (estimated from its round trips) above which its window
/// shrinks by one, and below which it may grow (TCP Vegas' β and α).
pub const QUEUED_SHRINK: f64 = 4.0;
/// See [`QUEUED_SHRINK`].
pub const QUEUED_GROW: f64 = 2.0;

/// How long a least round trip stands: the least is taken over this period and the one
/// before it, so a hop that became slower for good is seen within two periods.
pub const RTT_PERIOD: Duration = Duration::from_secs(30);

/// A hop's final-reply round trips (see [`Destinations`]).
struct Rtt {
    /// The least in this period and in the one before.
    least: Duration,
    least_before: Duration,
    period_began: Instant,
    /// Smoothed: each sample counts 1/8, as TCP's SRTT (RFC 6298).
    smoothed: Duration,
}

impl Rtt {
    fn new(sample: Duration, now: Instant) -> Rtt {
        Rtt {
            least: sample,
            least_before: sample,
            period_began: now,
            smoothed: sample,
        }
    }

    fn add(&mut self, sample: Duration, now: Instant) {
        if now.duration_since(self.period_began) >= RTT_PERIOD {
            self.least_before = self.least;
            self.least = sample;
            self.period_began = now;
        }
        self.least = self.least.min(sample);
        self.smoothed = (self.smoothed * 7 + sample) / 8;
    }

    /// Messages waiting at the hop with `in_flight` of ours there (TCP Vegas: `in_flight ×
    /// (1 − least / smoothed)`: what the round trips add above the least is time spent
    /// behind other messages), the least raised by [`RTT_NOISE`].
    fn queued(&self, in_flight: usize) -> f64 {
        let least = (self.least.min(self.least_before) + RTT_NOISE).as_secs_f64();
        let smoothed = self.smoothed.as_secs_f64();
        if smoothed <= least {
            return 0.0;
        }
        in_flight as f64 * (1.0 - least / smoothed)
    }
}

/// What the runner knows of one destination: connections in use, its window, and the
/// deliveries waiting for one of its connections.
struct Hop {
    in_use: usize,
    /// Connections allowed now (slow start, backoff); at most the limit in force.
    window: usize,
    /// The window it starts with ([`INITIAL_CONCURRENCY`] under the limit it was created
    /// with): below it, the destination is backed off and remembered while idle.
    initial: usize,
    /// Deliveries waiting in [`Destinations::acquire`] for a slot of this destination.
    waiting: usize,
    /// Its final-reply round trips, once one was measured.
    rtt: Option<Rtt>,
    /// Deliveries taken since the window last shrank: it shrinks at most once a window's
    /// worth (once per round of its connections, as TCP Vegas per round trip).
    since_shrink: usize,
    /// Wakes one of them when a slot may be free (a connection ended, the window grew).
    /// One per destination: a slot freed at one destination wakes nobody waiting for
    /// another, and one waiter, not all of them (with a busy next hop, 80 deliveries
    /// waiting on one notice for everyone cost each connection's end 80 wake-ups).
    freed: Arc<Notify>,
}

/// The destinations' state, shared with the permits.
type Hops = Mutex<HashMap<(String, u16), Hop>>;

fn lock_hops(hops: &Hops) -> std::sync::MutexGuard<'_, HashMap<(String, u16), Hop>> {
    hops.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hop {
    /// Nothing to remember: no connection, nobody waiting, not backed off.
    fn idle(&self, slow_start: bool) -> bool {
        self.in_use == 0 && self.waiting == 0 && !(slow_start && self.window < self.initial)
    }
}

/// Per-destination connection windows (slow start and backoff), created on first use and
/// forgotten when idle and not backed off.
///
/// Slow start (Postfix's idea, `qmgr`'s concurrency feedback): a destination starts at
/// [`INITIAL_CONCURRENCY`] connections; every delivery it takes (a recipient accepted or
/// refused for good) adds one, up to the limit, while the window is in use (a hop given
/// fewer messages than its window has shown nothing about more); a delivery it defers
/// (every recipient deferred: a connection failure, a 4xx greeting, `MAIL` or `DATA`)
/// brings it back to one, so a destination in trouble gets one connection at a time
/// instead of the limit's worth of timeouts or 421s, and grows again with its first
/// success. The limit is the one in force at each acquisition (a SIGHUP's new
/// `DestinationConcurrencyLimit` applies to the next deliveries; connections already open
/// finish).
///
/// Backing off a hop that queues (ours, after TCP Vegas; Postfix grows to the limit): each
/// delivery reports how long the hop took to answer its final dot. The least of those
/// (over the last one or two [`RTT_PERIOD`]s) is the hop's own time for a message;
/// anything above it in the smoothed figure is time our messages spent behind each other
/// there, and `in flight × (1 − least / smoothed)` estimates how many wait. Above
/// [`QUEUED_SHRINK`] the window loses one, at most once per window's worth of deliveries
/// and never below [`INITIAL_CONCURRENCY`]; below [`QUEUED_GROW`] it may grow. A hop that
/// commits each message slowly but many at once (a relay fsyncing in parallel) keeps
/// answering near its least and grows to the limit; a hop that takes our messages one
/// after the other (one busy process, a loaded host) is held near the initial window,
/// where it accepts as many a second as at the limit.
///
/// Why: every message whose final dot is out when the daemon dies is in doubt, and the
/// next daemon sends it again (a duplicate, never a loss: RFC 1047's window). Messages
/// queued at a hop that takes them one after the other only widen that window. Measured
/// with the crash harness, program mode, the harness's sink (one Python process, 2 cores):
/// duplicates per kill 1.53 → 1.04 (seeds 601–615) and 1.02 → 0.88 (seeds 631–645),
/// as many messages a second on the relay bench (docs/reliability.md). The cost:
/// our own reply reads, late on a loaded machine, look like waiting at the hop; a hop that
/// answers the dot in a few milliseconds and needs many at once to be fast can be held
/// below its limit while the daemon is that loaded ([`RTT_NOISE`] takes the first 0.3 ms
/// of it for noise).
pub struct Destinations {
    slow_start: bool,
    hops: Arc<Hops>,
    /// When the next delivery to a destination may start (`DestinationRateDelay`).
    next_start: Mutex<HashMap<(String, u16), tokio::time::Instant>>,
    /// Destinations none of whose hosts could be connected to: since when, and the
    /// deferral every delivery got ([`Destinations::down`]).
    down: Mutex<HashMap<(String, u16), (std::time::Instant, Outcome)>>,
}

/// A connection slot to one destination, given back when dropped. It owns its share of
/// the destinations' state, so it can travel with the connection it stands for (a session
/// handed from one delivery to the next, `runner::follow`).
pub struct Permit {
    hops: Arc<Hops>,
    slow_start: bool,
    key: (String, u16),
}

impl Permit {
    /// The outcome of the delivery over this slot: `took` when the destination took or
    /// refused for good at least one recipient, false when it deferred all of them. Grows
    /// or shrinks the destination's window (slow start only).
    pub fn feedback(&self, took: bool, limit: usize, rtt: Option<Duration>) {
        if !self.slow_start {
            return;
        }
        let mut hops = lock_hops(&self.hops);
        if let Some(hop) = hops.get_mut(&self.key) {
            let before = hop.window;
            if took {
                if let Some(sample) = rtt {
                    let now = Instant::now();
                    match hop.rtt.as_mut() {
                        Some(r) => r.add(sample, now),
                        None => hop.rtt = Some(Rtt::new(sample, now)),
                    }
                }
                hop.since_shrink += 1;
                let queued = hop.rtt.as_ref().map_or(0.0, |r| r.queued(hop.in_use));
                // Only a window in use grows (RFC 7661's reasoning): a hop given fewer
                // messages than its window has shown nothing about more. Below the initial
                // window (backed off after a deferral) it grows whatever the round trips.
                let grow = queued < QUEUED_GROW || hop.window < hop.initial;
                if queued > QUEUED_SHRINK && hop.window > hop.initial {
                    if hop.since_shrink >= hop.window {
                        hop.window -= 1;
                        hop.since_shrink = 0;
                    }
                } else if grow && hop.in_use + hop.waiting >= hop.window {
                    hop.window = (hop.window + 1).min(limit.max(1));
                }
            } else {
                hop.window = 1;
            }
            // A wider window lets one more in; it lets the next in if there is room still.
            if hop.window > before && hop.waiting > 0 {
                hop.freed.notify_one();
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut hops = lock_hops(&self.hops);
        if let Some(hop) = hops.get_mut(&self.key) {
            hop.in_use = hop.in_use.saturating_sub(1);
            if hop.waiting > 0 {
                hop.freed.notify_one();
            } else if hop.idle(self.slow_start) {
                hops.remove(&self.key);
            }
        }
    }
}

/// Counts a delivery among its destination's waiting ones while it lives, so a wait that
/// is cancelled (the daemon stopping) is counted out too; disarmed when the delivery is
/// let in (counted out then, under the same lock).
struct Waiting<'a> {
    owner: &'a Destinations,
    key: (String, u16),
    armed: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut hops = lock_hops(&self.owner.hops);
        if let Some(hop) = hops.get_mut(&self.key) {
            hop.waiting = hop.waiting.saturating_sub(1);
            if hop.idle(self.owner.slow_start) {
                hops.remove(&self.key);
            }
        }
    }
}

impl Destinations {
    /// Fixed limits (the local recipients' program runs): each destination gets its limit
    /// at once.
    pub fn fixed() -> Destinations {
        Destinations::with(false)
    }

    /// Slow start and backoff (the SMTP next hops).
    pub fn slow_start() -> Destinations {
        Destinations::with(true)
    }

    fn with(slow_start: bool) -> Destinations {
        Destinations {
            slow_start,
            hops: Arc::default(),
            next_start: Mutex::default(),
            down: Mutex::default(),
        }
    }

    /// Host status, as sendmail keeps it for `Timeout.hoststatus` (30 m): a destination
    /// none of whose hosts took a connection is known to be down, and for `fresh` after
    /// that its deliveries are deferred with the same status without connecting again —
    /// so a dead destination costs one connection timeout, not one per message (with
    /// slow start at one connection it would cost them one after the other). A success
    /// ([`Destinations::up`]) or the status growing older than `fresh` ends it; a zero
    /// `fresh` (`Timeout.hoststatus=0`) keeps no status.
    pub fn down(&self, host: &str, port: u16, fresh: std::time::Duration) -> Option<Outcome> {
        let key = (host.to_ascii_lowercase(), port);
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let (since, outcome) = down.get(&key)?;
        if since.elapsed() < fresh {
            return Some(outcome.clone());
        }
        down.remove(&key);
        None
    }

    /// Records that no host of the destination could be connected to.
    pub fn mark_down(&self, host: &str, port: u16, outcome: Outcome) {
        let key = (host.to_ascii_lowercase(), port);
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        down.insert(key, (std::time::Instant::now(), outcome));
    }

    /// Forgets a destination's down status (it took a connection).
    pub fn up(&self, host: &str, port: u16) {
        let key = (host.to_ascii_lowercase(), port);
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        down.remove(&key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u16), Hop>> {
        lock_hops(&self.hops)
    }

    fn initial(&self, limit: usize) -> usize {
        match self.slow_start {
            true => INITIAL_CONCURRENCY.min(limit),
            false => limit,
        }
    }

    /// Waits for a free connection slot to `host` port `port` (host compared without case)
    /// under `limit` connections at once (the limit in force now). Waiters are woken one
    /// at a time, in the order they began waiting: each one let in lets the next in too
    /// while there is room (a limit raised by a SIGHUP fills up that way).
    pub async fn acquire(&self, host: &str, port: u16, limit: usize) -> Permit {
        let limit = limit.max(1);
        let key = (host.to_ascii_lowercase(), port);
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            let freed = {
                let mut hops = self.lock();
                let (hop, cap) = self.hop(&mut hops, &key, limit);
                if hop.in_use < cap {
                    hop.in_use += 1;
                    if let Some(w) = waiting.as_mut() {
                        w.armed = false;
                        hop.waiting = hop.waiting.saturating_sub(1);
                    }
                    if hop.in_use < cap && hop.waiting > 0 {
                        hop.freed.notify_one();
                    }
                    return self.permit(key);
                }
                if waiting.is_none() {
                    hop.waiting += 1;
                }
                hop.freed.clone()
            };
            waiting.get_or_insert_with(|| Waiting {
                owner: self,
                key: key.clone(),
                armed: true,
            });
            // A slot freed between the check and this wait is not missed: notify_one
            // leaves a permit when nobody is registered yet.
            freed.notified().await;
        }
    }

    /// A slot to `host`:`port` if one is free now, without waiting (nor going ahead of
    /// deliveries that wait).
    pub fn try_acquire(&self, host: &str, port: u16, limit: usize) -> Option<Permit> {
        let limit = limit.max(1);
        let key = (host.to_ascii_lowercase(), port);
        let mut hops = self.lock();
        let (hop, cap) = self.hop(&mut hops, &key, limit);
        if hop.in_use >= cap || hop.waiting > 0 {
            if hop.idle(self.slow_start) {
                hops.remove(&key);
            }
            return None;
        }
        hop.in_use += 1;
        Some(self.permit(key))
    }

    /// The destination's entry (made at its initial window if new) and the connections it
    /// may have now under `limit`.
    fn hop<'m>(
        &self,
        hops: &'m mut HashMap<(String, u16), Hop>,
        key: &(String, u16),
        limit: usize,
    ) -> (&'m mut Hop, usize) {
        let initial = self.initial(limit);
        let hop = hops.entry(key.clone()).or_insert_with(|| Hop {
            in_use: 0,
            window: initial,
            initial,
            waiting: 0,
            rtt: None,
            since_shrink: 0,
            freed: Arc::new(Notify::new()),
        });
        let cap = match self.slow_start {
            true => hop.window.min(limit),
            false => limit,
        };
        (hop, cap)
    }

    fn permit(&self, key: (String, u16)) -> Permit {
        Permit {
            hops: self.hops.clone(),
            slow_start: self.slow_start,
            key,
        }
    }

    /// `DestinationRateDelay`: waits until `delay` has passed since the last delivery to
    /// `host`:`port` started (Postfix's `default_destination_rate_delay`); 0 = never waits.
    pub async fn pace(&self, host: &str, port: u16, delay: std::time::Duration) {
        if delay.is_zero() {
            return;
        }
        let start = {
            let mut next = self.next_start.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            next.retain(|_, t| *t > now);
            let slot = next.entry((host.to_ascii_lowercase(), port)).or_insert(now);
            let start = (*slot).max(now);
            *slot = start + delay;
            start
        };
        tokio::time::sleep_until(start).await;
    }

    /// Connections to `host`:`port` in use now.
    pub fn in_use(&self, host: &str, port: u16) -> usize {
        let hops = self.lock();
        hops.get(&(host.to_ascii_lowercase(), port))
            .map_or(0, |h| h.in_use)
    }

    /// The connections `host`:`port` may have at once now (its window; `limit` for a
    /// destination not seen).
    pub fn window(&self, host: &str, port: u16, limit: usize) -> usize {
        let hops = self.lock();
        hops.get(&(host.to_ascii_lowercase(), port))
            .filter(|_| self.slow_start)
            .map_or(self.initial(limit.max(1)), |h| h.window.min(limit.max(1)))
    }
}

/// The delivery mode mail in `env` was received under: its daemon's `DeliveryMode=`, else
/// the option.
pub fn mode_of(cfg: &Config, env: &Envelope) -> DeliveryMode {
    let daemon = env
        .client
        .daemon
        .as_deref()
        .and_then(|name| cfg.daemons.iter().find(|d| d.name == name));
    match daemon.and_then(|d| d.delivery_mode) {
        Some(DaemonMode::Interactive) => DeliveryMode::Interactive,
        Some(DaemonMode::Background) => DeliveryMode::Background,
        Some(DaemonMode::QueueOnly) => DeliveryMode::QueueOnly,
        Some(DaemonMode::Deferred) => DeliveryMode::Defer,
        None => cfg.options.delivery_mode,
    }
}

/// A message never tried whose mode is queue-only or deferred: left for a queue run.
pub fn waits_for_queue_run(cfg: &Config, env: &Envelope) -> bool {
    env.recipients.iter().all(|r| r.tries == 0)
        && matches!(
            mode_of(cfg, env),
            DeliveryMode::QueueOnly | DeliveryMode::Defer
        )
}

/// Whether any mail at all waits for a queue run: the option or some daemon says `q` or `d`.
pub fn some_mail_waits(cfg: &Config) -> bool {
    matches!(
        cfg.options.delivery_mode,
        DeliveryMode::QueueOnly | DeliveryMode::Defer
    ) || cfg.daemons.iter().any(|d| {
        matches!(
            d.delivery_mode,
            Some(DaemonMode::QueueOnly | DaemonMode::Deferred)
        )
    })
}

/// Whether some mail is delivered on commit: the option or any daemon says `b` or `i`.
pub fn delivers_on_commit(cfg: &Config) -> bool {
    let prompt =
        |m: DeliveryMode| matches!(m, DeliveryMode::Background | DeliveryMode::Interactive);
    prompt(cfg.options.delivery_mode)
        || cfg.daemons.iter().any(|d| {
            matches!(
                d.delivery_mode,
                Some(DaemonMode::Background | DaemonMode::Interactive)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{QueueId, Recipient};

    fn cfg(text: &str) -> Config {
        Config::from_str("t.cf", text, &[]).unwrap()
    }

    fn env_from(daemon: Option<&str>) -> Envelope {
        let mut e = Envelope::new(QueueId::new("A1").unwrap(), "s@x");
        e.client.daemon = daemon.map(String::from);
        e.recipients.push(Recipient::new("r@y"));
        e
    }

    #[test]
    fn a_queue_only_daemon_leaves_new_mail_for_the_queue_run() {
        let c = cfg(
            "O DaemonPortOptions=Name=MSA, Port=0, Addr=127.0.0.1, D=q\n\
                     O DaemonPortOptions=Name=MTA, Port=0, Addr=127.0.0.1\n",
        );
        assert!(delivers_on_commit(&c) && some_mail_waits(&c));
        assert!(waits_for_queue_run(&c, &env_from(Some("MSA"))));
        assert!(!waits_for_queue_run(&c, &env_from(Some("MTA"))));
        assert!(!waits_for_queue_run(&c, &env_from(None)));
        let mut tried = env_from(Some("MSA"));
        tried.recipients[0].tries = 1;
        assert!(
            !waits_for_queue_run(&c, &tried),
            "retries follow the backoff"
        );
    }

    #[test]
    fn a_background_daemon_under_a_queue_only_option_still_delivers() {
        let c =
            cfg("O DeliveryMode=q\nO DaemonPortOptions=Name=MTA, Port=0, Addr=127.0.0.1, D=b\n");
        assert!(delivers_on_commit(&c));
        assert!(!waits_for_queue_run(&c, &env_from(Some("MTA"))));
        assert!(waits_for_queue_run(&c, &env_from(None)));
        assert!(!delivers_on_commit(&cfg("O DeliveryMode=d\n")));
        assert!(!some_mail_waits(&cfg("O DeliveryMode=b\n")));
    }

    #[tokio::test]
    async fn at_most_n_connections_per_destination() {
        let d = std::sync::Arc::new(Destinations::fixed());
        let a = d.acquire("MX.example", 25, 2).await;
        let _b = d.acquire("mx.example", 25, 2).await;
        assert_eq!(d.in_use("mx.example", 25), 2);
        let _other = d.acquire("mx.example", 587, 2).await;
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let d2 = d.clone();
        let third = tokio::spawn(async move {
            let p = d2.acquire("mx.example", 25, 2).await;
            tx.send(()).await.unwrap();
            drop(p);
        });
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "a third connection waits");
        drop(a);
        rx.recv().await.expect("the freed slot is taken");
        third.await.unwrap();
        assert_eq!(d.in_use("mx.example", 25), 1);
    }

    #[tokio::test]
    async fn a_freed_slot_wakes_one_waiter_in_turn_and_a_cancelled_one_is_counted_out() {
        let d = std::sync::Arc::new(Destinations::fixed());
        let held = d.acquire("mx", 25, 1).await;
        assert!(d.try_acquire("mx", 25, 1).is_none(), "full");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for i in 0..3 {
            let (d, tx) = (d.clone(), tx.clone());
            waiters.push(tokio::spawn(async move {
                let p = d.acquire("mx", 25, 1).await;
                tx.send(i).unwrap();
                // Held until the test says so.
                std::future::pending::<()>().await;
                drop(p);
            }));
            // In this order.
            tokio::task::yield_now().await;
        }
        // One waiter gives up: it no longer counts, and is not woken.
        waiters.remove(1).abort();
        tokio::task::yield_now().await;
        assert!(
            d.try_acquire("mx", 25, 2).is_none(),
            "others wait: no cutting in"
        );
        drop(held);
        assert_eq!(rx.recv().await, Some(0));
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "one slot, one woken");
        waiters.remove(0).abort();
        assert_eq!(rx.recv().await, Some(2));
        waiters.remove(0).abort();
        tokio::task::yield_now().await;
        assert_eq!(d.in_use("mx", 25), 0);
        assert!(d.lock().is_empty(), "an idle destination is forgotten");
    }

    /// Takes every slot the destination gives now, without waiting.
    fn take_all(d: &Destinations, limit: usize) -> Vec<Permit> {
        let mut held = Vec::new();
        loop {
            let mut f = std::pin::pin!(d.acquire("relay.example", 25, limit));
            let waker = std::task::Waker::noop();
            match f.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
                std::task::Poll::Ready(p) => held.push(p),
                std::task::Poll::Pending => return held,
            }
        }
    }

    #[test]
    fn slow_start_grows_on_success_and_falls_to_one_on_a_deferral() {
        let d = Destinations::slow_start();
        let mut held = take_all(&d, 20);
        assert_eq!(
            held.len(),
            INITIAL_CONCURRENCY,
            "a new destination starts small"
        );
        // Three deliveries taken, each with the window full: three more connections.
        for _ in 0..3 {
            held[0].feedback(true, 20, None);
            held.extend(take_all(&d, 20));
        }
        assert_eq!(d.window("relay.example", 25, 20), INITIAL_CONCURRENCY + 3);
        assert_eq!(held.len(), INITIAL_CONCURRENCY + 3);
        // Growth stops at the limit.
        for _ in 0..30 {
            held[0].feedback(true, 20, None);
            held.extend(take_all(&d, 20));
        }
        assert_eq!(d.window("relay.example", 25, 20), 20);
        assert_eq!(held.len(), 20);
        // A deferral: one connection at a time, until a delivery succeeds again.
        held[1].feedback(false, 20, None);
        assert_eq!(d.window("relay.example", 25, 20), 1);
        drop(held);
        let one = take_all(&d, 20);
        assert_eq!(one.len(), 1, "a backed-off destination gets one connection");
        one[0].feedback(true, 20, None);
        drop(one);
        assert_eq!(take_all(&d, 20).len(), 2);
    }

    #[test]
    fn a_window_not_in_use_does_not_grow() {
        let d = Destinations::slow_start();
        let one = take_all(&d, 20).pop().unwrap();
        // One delivery at a time to this hop: its successes say nothing of more at once.
        for _ in 0..10 {
            one.feedback(true, 20, None);
        }
        assert_eq!(d.window("relay.example", 25, 20), INITIAL_CONCURRENCY);
    }

    /// `n` deliveries, each with the window full and answered in `rtt`.
    fn deliver_full(d: &Destinations, held: &mut Vec<Permit>, n: usize, rtt: Duration) {
        for _ in 0..n {
            held.extend(take_all(d, 20));
            held[0].feedback(true, 20, Some(rtt));
        }
        held.extend(take_all(d, 20));
    }

    #[test]
    fn a_hop_whose_round_trips_stay_at_their_least_grows_to_the_limit() {
        // A hop that takes 10 ms to commit each message but does so for 20 at once as for
        // one (a LAN relay fsyncing in parallel): nothing waits there, the window grows.
        let d = Destinations::slow_start();
        let mut held = Vec::new();
        deliver_full(&d, &mut held, 40, Duration::from_millis(10));
        assert_eq!(d.window("relay.example", 25, 20), 20);
        assert_eq!(held.len(), 20);
    }

    #[test]
    fn a_hop_that_queues_our_messages_is_brought_back_toward_its_initial_window() {
        // Grown to the limit while answering in 1 ms, then answering in 10 ms with 20 of
        // ours in flight: 20 × (1 − 1.3 / 10) ≈ 17 messages waiting there.
        let d = Destinations::slow_start();
        let mut held = Vec::new();
        deliver_full(&d, &mut held, 40, Duration::from_millis(1));
        assert_eq!(d.window("relay.example", 25, 20), 20);
        // Then one step down per window's worth of deliveries (once per round of its
        // connections, as TCP Vegas once per round trip).
        deliver_full(&d, &mut held, 1, Duration::from_millis(10));
        assert_eq!(d.window("relay.example", 25, 20), 19);
        deliver_full(&d, &mut held, 18, Duration::from_millis(10));
        assert_eq!(d.window("relay.example", 25, 20), 19, "not a round yet");
        deliver_full(&d, &mut held, 1, Duration::from_millis(10));
        assert_eq!(d.window("relay.example", 25, 20), 18);
        // Never below where it started: a slow or busy hop still gets the initial window.
        for _ in 0..400 {
            if held.len() > d.window("relay.example", 25, 20) {
                held.pop(); // a connection ends; the smaller window keeps it unused
            }
            deliver_full(&d, &mut held, 1, Duration::from_millis(10));
        }
        assert_eq!(d.window("relay.example", 25, 20), INITIAL_CONCURRENCY);
        assert_eq!(held.len(), INITIAL_CONCURRENCY);
    }

    #[test]
    fn a_backed_off_hop_grows_back_to_its_initial_window_whatever_its_round_trips() {
        let d = Destinations::slow_start();
        let mut held = Vec::new();
        deliver_full(&d, &mut held, 40, Duration::from_millis(1));
        held[0].feedback(false, 20, None);
        assert_eq!(d.window("relay.example", 25, 20), 1);
        held.clear();
        // Slow answers after the deferral (the hop seems to queue): back to 5 all the same.
        deliver_full(&d, &mut held, 10, Duration::from_millis(50));
        assert_eq!(d.window("relay.example", 25, 20), INITIAL_CONCURRENCY);
    }

    #[test]
    fn round_trips_near_the_least_are_taken_for_our_own_noise() {
        let mut r = Rtt::new(Duration::from_micros(200), Instant::now());
        for _ in 0..50 {
            r.add(Duration::from_micros(450), Instant::now());
        }
        assert_eq!(r.queued(20), 0.0, "within RTT_NOISE of the least");
        for _ in 0..50 {
            r.add(Duration::from_millis(5), Instant::now());
        }
        assert!(r.queued(20) > 17.0, "{}", r.queued(20));
    }

    #[test]
    fn the_least_round_trip_is_forgotten_after_two_periods() {
        let t0 = Instant::now();
        let mut r = Rtt::new(Duration::from_micros(100), t0);
        // The route got longer: 5 ms from now on.
        r.add(Duration::from_millis(5), t0 + RTT_PERIOD);
        assert_eq!(r.least.min(r.least_before), Duration::from_micros(100));
        r.add(Duration::from_millis(5), t0 + RTT_PERIOD * 2);
        assert_eq!(r.least.min(r.least_before), Duration::from_millis(5));
    }

    #[test]
    fn a_lower_limit_applies_to_the_next_acquisition() {
        let d = Destinations::fixed();
        assert_eq!(take_all(&d, 20).len(), 20);
        assert_eq!(take_all(&d, 3).len(), 3, "a SIGHUP's new limit");
        let s = Destinations::slow_start();
        assert_eq!(take_all(&s, 2).len(), 2, "never above the limit");
        // Fixed windows take no feedback.
        let held = take_all(&d, 4);
        held[0].feedback(false, 4, None);
        drop(held);
        assert_eq!(take_all(&d, 4).len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn deliveries_to_one_destination_start_a_rate_delay_apart() {
        let d = Destinations::fixed();
        let delay = std::time::Duration::from_secs(2);
        let t0 = tokio::time::Instant::now();
        let mut starts = Vec::new();
        for _ in 0..3 {
            d.pace("Relay.example", 25, delay).await;
            starts.push(t0.elapsed().as_secs());
        }
        // Another destination is not held back.
        d.pace("other.example", 25, delay).await;
        assert_eq!(t0.elapsed().as_secs(), 4);
        assert_eq!(starts, [0, 2, 4]);
        // Without a delay nothing waits.
        d.pace("relay.example", 25, std::time::Duration::ZERO).await;
        assert_eq!(t0.elapsed().as_secs(), 4);
    }

    #[test]
    fn a_destination_known_down_keeps_its_status_until_a_success_or_staleness() {
        let d = Destinations::slow_start();
        let hour = std::time::Duration::from_secs(3600);
        assert!(d.down("relay.example", 25, hour).is_none());
        let refused = Outcome::Temporary {
            dsn: "4.4.1".into(),
            text: "Deferred: Connection refused by relay.example".into(),
        };
        d.mark_down("Relay.Example", 25, refused.clone());
        assert_eq!(d.down("relay.example", 25, hour), Some(refused.clone()));
        // another port is another destination
        assert!(d.down("relay.example", 587, hour).is_none());
        // Timeout.hoststatus=0: no status kept
        assert!(
            d.down("relay.example", 25, std::time::Duration::ZERO)
                .is_none()
        );
        assert!(d.down("relay.example", 25, hour).is_none());
        d.mark_down("relay.example", 25, refused);
        d.up("relay.example", 25);
        assert!(d.down("relay.example", 25, hour).is_none());
    }
}
