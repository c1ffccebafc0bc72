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
//!   `DestinationConcurrencyLimit` sets it; `MaxQueueChildren` the runner's bound.
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

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::config::daemon_options::DeliveryMode as DaemonMode;
use crate::config::options::DeliveryMode;
use crate::queue::Envelope;

/// One semaphore per destination, created on first use and dropped when idle.
pub struct Destinations {
    per_destination: usize,
    open: Mutex<HashMap<(String, u16), Arc<Semaphore>>>,
    /// When the next delivery to a destination may start (`DestinationRateDelay`).
    next_start: Mutex<HashMap<(String, u16), tokio::time::Instant>>,
}

impl Destinations {
    pub fn new(per_destination: usize) -> Destinations {
        Destinations {
            per_destination: per_destination.max(1),
            open: Mutex::default(),
            next_start: Mutex::default(),
        }
    }

    /// Waits for a free connection slot to `host` port `port` (host compared without case).
    pub async fn acquire(&self, host: &str, port: u16) -> OwnedSemaphorePermit {
        let sem = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            // Forget destinations nobody is using (only the map holds them), so the map
            // stays as small as the set of busy destinations.
            open.retain(|_, s| Arc::strong_count(s) > 1);
            open.entry((host.to_ascii_lowercase(), port))
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_destination)))
                .clone()
        };
        // The semaphore is never closed, so acquiring cannot fail.
        match sem.acquire_owned().await {
            Ok(p) => p,
            Err(_) => unreachable!("destination semaphores are never closed"),
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
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&(host.to_ascii_lowercase(), port))
            .map_or(0, |s| self.per_destination - s.available_permits())
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
        let d = Arc::new(Destinations::new(2));
        let a = d.acquire("MX.example", 25).await;
        let _b = d.acquire("mx.example", 25).await;
        assert_eq!(d.in_use("mx.example", 25), 2);
        let _other = d.acquire("mx.example", 587).await;
        let d2 = d.clone();
        let third = tokio::spawn(async move { d2.acquire("mx.example", 25).await });
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "a third connection waits");
        drop(a);
        let _c = tokio::time::timeout(std::time::Duration::from_secs(10), third)
            .await
            .expect("the freed slot is taken")
            .unwrap();
        assert_eq!(d.in_use("mx.example", 25), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn deliveries_to_one_destination_start_a_rate_delay_apart() {
        let d = Destinations::new(20);
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
}
