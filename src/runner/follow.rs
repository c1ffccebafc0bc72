//! Sessions handed from one delivery to the next: the next message's envelope sent behind
//! the last message's body.
//!
//! In: a delivery to an SMTP next hop that found the hop's connections all in use (it
//! would wait for a permit, [`super::limits`]); a delivery about to send its body over a
//! cached session to that hop. Out: the waiting one's envelope (`RSET`, `MAIL`, `RCPT`s,
//! `DATA`) goes in the same write as the other's body, and once that message's final reply
//! is read the session — with the connection's permit — passes to the waiting delivery,
//! which reads its envelope's replies and sends its own body (and perhaps the next
//! envelope behind it).
//!
//! Why. Under load each message to a busy hop otherwise costs two round trips, each a
//! wake-up of the runner and of the server (envelope → `354`, body → `250`); with the next
//! envelope riding on the body, one. Measured: a client sending the same 10,000 messages
//! to smtp-sink both ways, 43 → 35 µs of smtp-sink's CPU per message; on the relay bench's
//! rig the runner's `sendto`s and `recvfrom`s per message 2.0 → 1.3 each (bench/RESULTS.md).
//! RFC 2920 §3.1 lets message content begin a group of pipelined commands; the `RSET`
//! first keeps what a reused session has always started with here (sendmail probes a
//! cached connection with `RSET` before each message).
//!
//! Only with `O PipelineAcrossMessages=True` (off by default, as sendmail: more mail is in
//! flight when the daemon dies, docs/operation.md), and only when a delivery would wait:
//! below the hop's connection limit every message has a connection of its own, as before;
//! and only once a session to the hop has been opened (its capabilities make the envelope):
//! deliveries that began waiting before that wait for a permit as before (a queue run's
//! first burst); and not under a `DestinationRateDelay` (each delivery then waits its turn
//! on its own: an envelope sent ahead would leave the hop in the middle of a transaction
//! for the delay). A handed session never carries a message it was not built for: the
//! envelope is made for the capabilities the hop last offered and sent only on a session
//! offering the same. A session that fails after the envelope went ends the waiting
//! delivery's turn; it takes the usual way (a permit, a cached or new connection). The
//! delivery marks work as before (the first message's is written when its `250` is read,
//! the second has sent only an envelope by then); what grows is the mail in flight at a
//! crash, the bodies sent a round trip sooner.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::deliver::remote::Handed;
use crate::deliver::remote::client::{Capabilities, Follow};
use crate::runner::limits::Permit;

/// A session handed on, with the permit of its connection.
pub struct Baton {
    pub handed: Handed,
    pub permit: Permit,
}

/// Deliveries waiting to follow a busy session, per hop (`$h` lower case, port).
#[derive(Default)]
pub struct Followers {
    hops: Mutex<HashMap<(String, u16), Queue>>,
}

#[derive(Default)]
struct Queue {
    offers: VecDeque<Offer>,
    next_id: u64,
}

struct Offer {
    id: u64,
    /// The capabilities `envelope` was made for.
    caps: Capabilities,
    envelope: Vec<u8>,
    baton: oneshot::Sender<Baton>,
}

impl Followers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u16), Queue>> {
        self.hops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits in line for a session to `host`:`port` with `envelope`, made for `caps` (what
    /// the hop's sessions offer: [`crate::deliver::remote::cache::Cache::capabilities`]).
    pub fn offer(
        &self,
        host: &str,
        port: u16,
        caps: Capabilities,
        envelope: Vec<u8>,
    ) -> Ticket<'_> {
        let key = (host.to_ascii_lowercase(), port);
        let mut hops = self.lock();
        let queue = hops.entry(key.clone()).or_default();
        let (tx, rx) = oneshot::channel();
        let id = queue.next_id;
        queue.next_id += 1;
        queue.offers.push_back(Offer {
            id,
            caps,
            envelope,
            baton: tx,
        });
        Ticket {
            owner: self,
            key,
            id,
            baton: rx,
        }
    }

    /// The first waiting envelope made for `caps`, taken out of line.
    fn take(&self, key: &(String, u16), caps: &Capabilities) -> Option<Offer> {
        self.remove(key, |o| &o.caps == caps)
    }

    /// The first offer for `key` that `which` picks, out of line (the hop forgotten when
    /// nobody is left in it).
    fn remove(&self, key: &(String, u16), which: impl Fn(&Offer) -> bool) -> Option<Offer> {
        let mut hops = self.lock();
        let queue = hops.get_mut(key)?;
        let at = queue.offers.iter().position(which)?;
        let offer = queue.offers.remove(at);
        if queue.offers.is_empty() {
            hops.remove(key);
        }
        offer
    }
}

/// A place in line ([`Followers::offer`]); leaves the line when dropped.
pub struct Ticket<'a> {
    owner: &'a Followers,
    key: (String, u16),
    id: u64,
    baton: oneshot::Receiver<Baton>,
}

impl Ticket<'_> {
    /// Leaves the line; false when a session took the envelope already (the baton, or
    /// word that the session failed, is then on its way: [`Ticket::receive`]).
    pub fn withdraw(&self) -> bool {
        self.owner.remove(&self.key, |o| o.id == self.id).is_some()
    }

    /// The session and its permit, once the session that took the envelope has read its
    /// own message's final reply; `None` when that session failed (or the daemon stops).
    pub async fn receive(&mut self) -> Option<Baton> {
        (&mut self.baton).await.ok()
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// The [`Follow`] of one delivery: takes the first waiting envelope for its hop.
pub struct Leader<'a> {
    owner: &'a Followers,
    key: (String, u16),
    taken: Option<oneshot::Sender<Baton>>,
}

impl<'a> Leader<'a> {
    pub fn new(owner: &'a Followers, host: &str, port: u16) -> Leader<'a> {
        Leader {
            owner,
            key: (host.to_ascii_lowercase(), port),
            taken: None,
        }
    }

    /// After the delivery: the session and `permit` go to the delivery whose envelope went
    /// behind the body, when the session came back for it; otherwise the permit is
    /// released (and that delivery, told nothing came, goes its own way).
    pub fn hand_on(self, handed: Option<Handed>, permit: Permit) {
        match (self.taken, handed) {
            (Some(to), Some(handed)) => {
                // Refused only if that delivery is gone (the daemon stopping): the session
                // and the permit are dropped with the baton.
                let _ = to.send(Baton { handed, permit });
            }
            (_, handed) => {
                drop(handed);
                drop(permit);
            }
        }
    }
}

impl Follow for Leader<'_> {
    fn next(&mut self, caps: &Capabilities) -> Option<Vec<u8>> {
        if self.taken.is_some() {
            return None;
        }
        let offer = self.owner.take(&self.key, caps)?;
        self.taken = Some(offer.baton);
        Some(offer.envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Capabilities {
        Capabilities {
            pipelining: true,
            ..Capabilities::default()
        }
    }

    fn offer<'a>(f: &'a Followers, caps: Capabilities, what: &str) -> Ticket<'a> {
        f.offer("mx", 25, caps, what.as_bytes().to_vec())
    }

    #[test]
    fn envelopes_go_in_order_and_only_to_sessions_with_the_same_capabilities() {
        let f = Followers::default();
        assert_eq!(
            Leader::new(&f, "MX", 25).next(&caps()),
            None,
            "nobody waits"
        );
        let _t1 = offer(&f, caps(), "1");
        let _t2 = offer(&f, caps(), "2");
        let other = Capabilities {
            size: Some(10),
            ..caps()
        };
        let _t3 = offer(&f, other.clone(), "3");
        assert_eq!(Leader::new(&f, "mx", 25).next(&other), Some(b"3".to_vec()));
        assert_eq!(Leader::new(&f, "MX", 25).next(&caps()), Some(b"1".to_vec()));
        assert_eq!(Leader::new(&f, "mx", 25).next(&caps()), Some(b"2".to_vec()));
        assert_eq!(Leader::new(&f, "mx", 25).next(&caps()), None);
        assert!(
            f.lock().is_empty(),
            "nothing kept for a hop nobody waits for"
        );
    }

    #[test]
    fn one_leader_takes_one_envelope() {
        let f = Followers::default();
        let _t1 = offer(&f, caps(), "1");
        let _t2 = offer(&f, caps(), "2");
        let mut leader = Leader::new(&f, "mx", 25);
        assert_eq!(leader.next(&caps()), Some(b"1".to_vec()));
        assert_eq!(leader.next(&caps()), None);
    }

    #[test]
    fn a_withdrawn_or_dropped_ticket_leaves_the_line() {
        let f = Followers::default();
        let t = offer(&f, caps(), "E");
        assert!(t.withdraw());
        assert!(!t.withdraw(), "once");
        assert_eq!(Leader::new(&f, "mx", 25).next(&caps()), None);
        drop(offer(&f, caps(), "E"));
        assert_eq!(Leader::new(&f, "mx", 25).next(&caps()), None);
        let t = offer(&f, caps(), "E");
        assert!(Leader::new(&f, "mx", 25).next(&caps()).is_some());
        assert!(!t.withdraw(), "taken already");
    }

    #[tokio::test]
    async fn a_leader_whose_session_failed_sends_word_by_dropping_the_baton() {
        let f = Followers::default();
        let d = crate::runner::limits::Destinations::fixed();
        let mut t = offer(&f, caps(), "E");
        let mut leader = Leader::new(&f, "mx", 25);
        assert!(leader.next(&caps()).is_some());
        let permit = d.acquire("mx", 25, 1).await;
        leader.hand_on(None, permit);
        assert!(t.receive().await.is_none());
        assert_eq!(d.in_use("mx", 25), 0, "the permit is released");
    }
}
