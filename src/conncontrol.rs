//! Per-client connection counts: `${client_connections}` and `${client_rate}`.
//!
//! In: each accepted connection's client address, and `ConnectionRateWindowSize`. Out: the
//! two numbers the cf's FEATURE(conncontrol) and FEATURE(ratecontrol) rules compare with
//! the access map's `ClientConn:` and `ClientRate:` entries (in `check_relay`, which then
//! answers `421 4.3.2 Too many open connections.` or `421 4.3.2 Connection rate limit
//! exceeded.`), and an [`Open`] guard that counts the connection as open until it is dropped.
//!
//! As sendmail counts them (observed on the oracle, Debian's stock cf: the 11th connection
//! from one address is refused by `ClientRate: 10` and by `ClientConn: 10`):
//! * `${client_connections}`: the connections from this address open now, this one included;
//! * `${client_rate}`: the connections from this address accepted within the last
//!   `ConnectionRateWindowSize` (default 60 s), this one included.
//!
//! Bounded: the arrivals are kept per second (at most one bucket per second of the window
//! per address), and past [`MAX_TRACKED`] addresses those with no open connection are
//! forgotten (their rate starts again from zero), so a flood from many addresses cannot
//! grow the table without limit.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Addresses tracked before idle ones are dropped.
pub const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Default)]
struct Entry {
    open: u32,
    /// (second since the table's start, connections accepted in it), oldest first.
    arrivals: VecDeque<(u64, u32)>,
}

/// The counts of every client address.
#[derive(Debug)]
pub struct ClientCounts {
    start: Instant,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

impl Default for ClientCounts {
    fn default() -> Self {
        ClientCounts {
            start: Instant::now(),
            table: Mutex::new(HashMap::new()),
        }
    }
}

/// One open connection; dropping it closes it in the counts.
#[derive(Debug)]
pub struct Open {
    counts: Arc<ClientCounts>,
    ip: IpAddr,
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut t = self.counts.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = t.get_mut(&self.ip) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 && e.arrivals.is_empty() {
                t.remove(&self.ip);
            }
        }
    }
}

/// What [`ClientCounts::connect`] counted for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// `${client_connections}`.
    pub connections: u32,
    /// `${client_rate}`.
    pub rate: u32,
}

impl ClientCounts {
    /// Counts a new connection from `ip` at `now`, with the rate over `window`.
    pub fn connect(
        self: &Arc<Self>,
        ip: IpAddr,
        window: Duration,
        now: Instant,
    ) -> (Open, Counted) {
        let ip = ip.to_canonical();
        let sec = now.saturating_duration_since(self.start).as_secs();
        let window = window.as_secs().max(1);
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() >= MAX_TRACKED && !t.contains_key(&ip) {
            t.retain(|_, e| e.open > 0);
        }
        let e = t.entry(ip).or_default();
        while e.arrivals.front().is_some_and(|&(s, _)| s + window <= sec) {
            e.arrivals.pop_front();
        }
        match e.arrivals.back_mut() {
            Some((s, n)) if *s == sec => *n += 1,
            _ => e.arrivals.push_back((sec, 1)),
        }
        e.open += 1;
        let counted = Counted {
            connections: e.open,
            rate: e.arrivals.iter().map(|&(_, n)| n).sum(),
        };
        let open = Open {
            counts: self.clone(),
            ip,
        };
        (open, counted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 61));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 62));

    #[test]
    fn open_connections_count_until_dropped() {
        let c = Arc::new(ClientCounts::default());
        let now = Instant::now();
        let w = Duration::from_secs(600);
        let (a1, n1) = c.connect(A, w, now);
        let (_a2, n2) = c.connect(A, w, now);
        let (_b1, m1) = c.connect(B, w, now);
        assert_eq!((n1.connections, n2.connections, m1.connections), (1, 2, 1));
        drop(a1);
        let (_a3, n3) = c.connect(A, w, now);
        assert_eq!(n3.connections, 2);
        // the rate counts every arrival in the window, closed ones too
        assert_eq!(n3.rate, 3);
    }

    #[test]
    fn the_rate_forgets_arrivals_older_than_the_window() {
        let c = Arc::new(ClientCounts::default());
        let t0 = c.start;
        let w = Duration::from_secs(60);
        for _ in 0..5 {
            drop(c.connect(A, w, t0));
        }
        let (_x, n) = c.connect(A, w, t0 + Duration::from_secs(59));
        assert_eq!(n.rate, 6);
        let (_y, n) = c.connect(A, w, t0 + Duration::from_secs(60));
        assert_eq!(n.rate, 2, "the five at t0 are out of the window");
    }

    #[test]
    fn the_table_is_bounded() {
        let c = Arc::new(ClientCounts::default());
        let now = Instant::now();
        let w = Duration::from_secs(600);
        let (_keep, _) = c.connect(A, w, now);
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let ip = IpAddr::V6(std::net::Ipv6Addr::from(
                0x2001_0db8_u128 << 96 | u128::from(i),
            ));
            drop(c.connect(ip, w, now));
        }
        let t = c.table.lock().unwrap();
        assert!(t.len() <= MAX_TRACKED, "{}", t.len());
        assert!(
            t.contains_key(&A),
            "an address with an open connection is kept"
        );
    }
}
