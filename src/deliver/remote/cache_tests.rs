//! The connection cache against a sink on loopback that counts its connections.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::cache::Cache;
use super::test_sink::SinkConfig;
use super::tests::{World, dual_stack_zone, message, request, settings, world};
use super::*;
use crate::queue::Message;

/// Sends `n` messages to `d.test` with at most `concurrency` at once (as the runner's
/// per-destination permits do), through `cache`; returns the outcomes.
async fn send_many(
    w: &World,
    s: &Arc<Settings>,
    cache: &Arc<Cache>,
    n: usize,
    concurrency: usize,
) -> Vec<Outcome> {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (dns, s, cache, permits) = (w.dns.clone(), s.clone(), cache.clone(), permits.clone());
        let port = w.port;
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            let msg = message();
            let rcpts = vec![Recipient::new(format!("r{i}@d.test"))];
            let req = request(&msg, &rcpts, port);
            let mut rng = StdRng::seed_from_u64(i as u64);
            let report = deliver_cached(&dns, &s, &cache, &req, &mut rng).await;
            (i, report.outcomes)
        });
    }
    let mut all = tokio::time::timeout(Duration::from_secs(120), tasks.join_all())
        .await
        .expect("deliveries finished in time");
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().flat_map(|(_, o)| o).collect()
}

fn delivered(outcomes: &[Outcome]) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Delivered { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_to_one_hop_use_at_most_the_hops_limit_of_connections() {
    let w = world(dual_stack_zone(), true, false, SinkConfig::new("C")).await;
    let s = Arc::new(settings());
    let cache = Arc::new(Cache::new(4));
    let outcomes = send_many(&w, &s, &cache, 1000, 4).await;
    assert_eq!(delivered(&outcomes), 1000, "{:?}", &outcomes[..3]);
    let accepted = w._sinks[0].accepted.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&accepted),
        "1000 messages over {accepted} connections (limit 4)"
    );
    assert_eq!(cache.connections_opened(), accepted);
    cache.clear().await;
    // Every connection ended with QUIT; later messages on one started with RSET.
    let log = w._sinks[0].log.lock().unwrap().clone();
    assert_eq!(log.len(), accepted);
    assert_eq!(log.iter().map(|c| c.messages).sum::<usize>(), 1000);
    for conn in &log {
        assert_eq!(conn.commands.last().map(String::as_str), Some("QUIT"));
        let rsets = conn.commands.iter().filter(|c| *c == "RSET").count();
        assert_eq!(rsets, conn.messages - 1, "{:?}", &conn.commands[..8]);
    }
}

#[tokio::test]
async fn a_cached_connection_the_hop_closed_is_replaced_and_the_message_still_goes() {
    let mut cfg = SinkConfig::new("X");
    cfg.close_after = Some(3);
    let w = world(dual_stack_zone(), true, false, cfg).await;
    let s = Arc::new(settings());
    let cache = Arc::new(Cache::new(1));
    let outcomes = send_many(&w, &s, &cache, 12, 1).await;
    assert_eq!(delivered(&outcomes), 12, "{outcomes:?}");
    // Each connection carried three messages; the fourth found it closed and opened anew.
    assert_eq!(w._sinks[0].accepted.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn no_caching_with_connection_cache_size_0() {
    let w = world(dual_stack_zone(), true, false, SinkConfig::new("Z")).await;
    let mut s = settings();
    s.cache_size = 0;
    let s = Arc::new(s);
    let cache = Arc::new(Cache::new(4));
    let outcomes = send_many(&w, &s, &cache, 5, 1).await;
    assert_eq!(delivered(&outcomes), 5);
    assert_eq!(w._sinks[0].accepted.load(Ordering::SeqCst), 5);
    assert_eq!(cache.idle(), 0);
}

#[tokio::test]
async fn a_421_closes_the_connection() {
    let mut cfg = SinkConfig::new("B");
    cfg.mail_reply = "421 4.3.2 sink.example.test shutting down".into();
    let w = world(dual_stack_zone(), true, false, cfg).await;
    let s = Arc::new(settings());
    let cache = Arc::new(Cache::new(4));
    let outcomes = send_many(&w, &s, &cache, 2, 1).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Temporary { .. })),
        "{outcomes:?}"
    );
    assert_eq!(cache.idle(), 0);
    assert_eq!(w._sinks[0].accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idle_sessions_close_on_timeout_and_when_the_settings_change() {
    let w = world(dual_stack_zone(), true, false, SinkConfig::new("T")).await;
    let s = Arc::new(settings());
    let cache = Arc::new(Cache::new(4));
    send_many(&w, &s, &cache, 3, 1).await;
    assert_eq!(cache.idle(), 1);
    // The same settings, not timed out: kept.
    cache.sweep(&s).await;
    assert_eq!(cache.idle(), 1);
    // A new generation (SIGHUP): closed, and never handed out meanwhile.
    let next = Arc::new(settings());
    assert!(cache.take("d.test", w.port, &next).is_none());
    cache.sweep(&next).await;
    assert_eq!(cache.idle(), 0);
    // Timed out.
    let mut quick = settings();
    quick.cache_timeout = Duration::ZERO;
    let quick = Arc::new(quick);
    send_many(&w, &quick, &cache, 1, 1).await;
    assert_eq!(cache.idle(), 1);
    cache.sweep(&quick).await;
    assert_eq!(cache.idle(), 0);
    assert_eq!(w._sinks[0].accepted.load(Ordering::SeqCst), 2);
}

/// A [`client::Follow`] that offers one envelope, made for the session it is asked about.
struct Next<'a> {
    message: &'a Message,
    recipients: &'a [Recipient],
    asked: usize,
}

impl client::Follow for Next<'_> {
    fn next(&mut self, caps: &client::Capabilities) -> Option<Vec<u8>> {
        self.asked += 1;
        client::follow_envelope(self.message, self.recipients, caps)
    }
}

/// A first message, which opens the connection (the hop's capabilities are known then).
async fn first(w: &World, s: &Arc<Settings>, cache: &Cache) {
    let msg = message();
    let rcpts = [Recipient::new("first@d.test")];
    let req = request(&msg, &rcpts, w.port);
    let mut rng = StdRng::seed_from_u64(0);
    let report = deliver_cached(&w.dns, s, cache, &req, &mut rng).await;
    assert_eq!(delivered(&report.outcomes), 1);
}

/// One message over the cached session with `next`'s envelope behind its body; then the
/// handed session carries `b`.
async fn lead_and_follow(w: &World, s: &Arc<Settings>, cache: &Cache) -> (Report, Report) {
    let (msg, a, b) = (
        message(),
        [Recipient::new("a@d.test")],
        [Recipient::new("b@d.test")],
    );
    let req = |rcpts| request(&msg, rcpts, w.port);
    let mut rng = StdRng::seed_from_u64(1);
    let mut next = Next {
        message: &msg,
        recipients: &b,
        asked: 0,
    };
    let follow = Some(&mut next as &mut dyn client::Follow);
    let (first, handed) = deliver_cached_with(&w.dns, s, cache, &req(&a), &mut rng, follow).await;
    assert_eq!(next.asked, 1);
    let handed = handed.expect("the session comes back for the next message");
    assert_eq!(cache.idle(), 0, "not in the cache meanwhile");
    let (second, again) = deliver_handed(&w.dns, s, cache, handed, &req(&b), &mut rng, None).await;
    assert!(again.is_none());
    (first, second)
}

#[tokio::test]
async fn the_next_envelope_goes_behind_a_body_and_the_session_carries_that_message() {
    let w = world(dual_stack_zone(), true, false, SinkConfig::new("F")).await;
    let s = Arc::new(settings());
    let cache = Cache::new(4);
    // A first message opens the connection (and the hop's capabilities are known).
    assert!(cache.capabilities("d.test", w.port).is_none());
    first(&w, &s, &cache).await;
    assert!(
        cache
            .capabilities("D.test", w.port)
            .is_some_and(|c| c.pipelining)
    );
    let (a, b) = lead_and_follow(&w, &s, &cache).await;
    assert_eq!(delivered(&a.outcomes), 1, "{a:?}");
    assert_eq!(delivered(&b.outcomes), 1, "{b:?}");
    assert_eq!(b.relay, a.relay);
    cache.clear().await;
    // One connection: three messages, each after the first with RSET first, b's envelope
    // after a's body (the same SIZE= as when the envelope goes on its own).
    let log = w._sinks[0].log.lock().unwrap().clone();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].messages, 3);
    let cmds: Vec<&str> = (log[0].commands.iter())
        .map(String::as_str)
        .filter(|c| !c.starts_with("EHLO"))
        .collect();
    assert_eq!(
        cmds,
        [
            "MAIL From:<sender@client.example.test> SIZE=24",
            "RCPT To:<first@d.test>",
            "DATA",
            "RSET",
            "MAIL From:<sender@client.example.test> SIZE=24",
            "RCPT To:<a@d.test>",
            "DATA",
            "RSET",
            "MAIL From:<sender@client.example.test> SIZE=24",
            "RCPT To:<b@d.test>",
            "DATA",
            "QUIT"
        ]
    );
}

#[tokio::test]
async fn a_handed_session_the_hop_closed_leaves_the_message_to_a_new_connection() {
    let mut cfg = SinkConfig::new("G");
    // Closes after the second message: the envelope behind it is never answered.
    cfg.close_after = Some(2);
    let w = world(dual_stack_zone(), true, false, cfg).await;
    let s = Arc::new(settings());
    let cache = Cache::new(4);
    first(&w, &s, &cache).await;
    let (a, b) = lead_and_follow(&w, &s, &cache).await;
    assert_eq!(delivered(&a.outcomes), 1, "{a:?}");
    assert_eq!(delivered(&b.outcomes), 1, "{b:?}");
    assert_eq!(w._sinks[0].accepted.load(Ordering::SeqCst), 2);
    cache.clear().await;
}
