//! AUTH failures counted per client address, across connections.
//!
//! In: the client's address at each AUTH command and at each failed attempt, with the time.
//! Out: whether that address may still try. A session closes itself after
//! [`crate::smtp::session::security::MAX_AUTH_FAILURES`], but an attacker opening many
//! connections in parallel would otherwise get that many guesses on each; this table,
//! shared by every session of the daemon, allows [`MAX_FAILURES_PER_ADDRESS`] failures per
//! address (an IPv6 client's whole /64, which one host usually holds) in
//! [`WINDOW`], then refuses AUTH from it until the window ends. Memory is bounded: at most
//! [`CAPACITY`] addresses are remembered; when full, expired entries go first, then the
//! oldest.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed AUTH attempts one address may make within [`WINDOW`].
pub const MAX_FAILURES_PER_ADDRESS: u32 = 10;
/// How long failures are remembered (from the first one of a run).
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at most.
pub const CAPACITY: usize = 16_384;

#[derive(Debug, Clone, Copy)]
struct Entry {
    since: Instant,
    failures: u32,
}

/// The daemon-wide table of AUTH failures per client address.
#[derive(Debug)]
pub struct AuthLimit {
    max: u32,
    window: Duration,
    capacity: usize,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

impl Default for AuthLimit {
    fn default() -> Self {
        AuthLimit::new(MAX_FAILURES_PER_ADDRESS, WINDOW, CAPACITY)
    }
}

impl AuthLimit {
    pub fn new(max: u32, window: Duration, capacity: usize) -> AuthLimit {
        AuthLimit {
            max,
            window,
            capacity: capacity.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// The failures counted against `ip` if it has used up its allowance (AUTH is then
    /// refused without looking at the credentials); `None` while it may still try.
    pub fn exhausted(&self, ip: IpAddr, now: Instant) -> Option<u32> {
        let table = self.lock();
        let e = table.get(&key(ip))?;
        (now.duration_since(e.since) < self.window && e.failures >= self.max).then_some(e.failures)
    }

    /// Counts one failure of `ip`; returns its failures in the current window.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) -> u32 {
        let mut table = self.lock();
        let k = key(ip);
        if !table.contains_key(&k) && table.len() >= self.capacity {
            let window = self.window;
            table.retain(|_, e| now.duration_since(e.since) < window);
            if table.len() >= self.capacity
                && let Some(oldest) = table.iter().min_by_key(|(_, e)| e.since).map(|(k, _)| *k)
            {
                table.remove(&oldest);
            }
        }
        let e = table.entry(k).or_insert(Entry {
            since: now,
            failures: 0,
        });
        if now.duration_since(e.since) >= self.window {
            *e = Entry {
                since: now,
                failures: 0,
            };
        }
        e.failures = e.failures.saturating_add(1);
        e.failures
    }

    /// Addresses remembered now (for tests and the bound).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// IPv4 (and IPv4-mapped IPv6) addresses count alone; other IPv6 addresses by their /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn limit_per_address_then_expiry() {
        let l = AuthLimit::new(3, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        for n in 1..=3 {
            assert_eq!(l.exhausted(ip("192.0.2.1"), t0), None);
            assert_eq!(l.record_failure(ip("192.0.2.1"), t0), n);
        }
        assert_eq!(l.exhausted(ip("192.0.2.1"), t0), Some(3));
        // another address is not affected
        assert_eq!(l.exhausted(ip("192.0.2.2"), t0), None);
        // the window ends
        let later = t0 + Duration::from_secs(61);
        assert_eq!(l.exhausted(ip("192.0.2.1"), later), None);
        assert_eq!(l.record_failure(ip("192.0.2.1"), later), 1);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_as_ipv4() {
        let l = AuthLimit::new(2, Duration::from_secs(60), 100);
        let t = Instant::now();
        l.record_failure(ip("2001:db8:1:2::1"), t);
        l.record_failure(ip("2001:db8:1:2:ffff::9"), t);
        assert_eq!(l.exhausted(ip("2001:db8:1:2::77"), t), Some(2));
        assert_eq!(l.exhausted(ip("2001:db8:1:3::1"), t), None);
        l.record_failure(ip("::ffff:192.0.2.7"), t);
        l.record_failure(ip("192.0.2.7"), t);
        assert_eq!(l.exhausted(ip("192.0.2.7"), t), Some(2));
    }

    #[test]
    fn memory_is_bounded() {
        let l = AuthLimit::new(5, Duration::from_secs(60), 64);
        let t = Instant::now();
        for i in 0..10_000u32 {
            l.record_failure(
                IpAddr::V4(i.into()),
                t + Duration::from_millis(u64::from(i)),
            );
            assert!(l.len() <= 64);
        }
        // the newest is remembered
        assert_eq!(
            l.record_failure(IpAddr::V4(9_999u32.into()), t + Duration::from_secs(10)),
            2
        );
    }
}
