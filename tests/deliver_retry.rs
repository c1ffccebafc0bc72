//! A temporary failure at the next hop is retried and later delivered, end to end:
//! sendmail-rs relays through its smart host to `tests/data/dsn_sink.py`, which answers
//! `451 4.3.0` to RCPT for an address containing "later" until the test lets it accept;
//! the first attempt (right after acceptance, DeliveryMode background) logs sendmail's
//! deferral line and leaves the message in the queue, and the next `sendmail -q` delivers
//! it once and empties the queue (issue 4, "a 4xx remote answer retried and later
//! delivered").

mod support;

use support::dsn_sink::{Sink, relay_to, send, wait_queue_empty};

/// The end of the line sendmail 8.17.1.9 logged for the same deferral (the oracle relaying
/// to this sink, its maillog of 2026-12-02 16:34:58), after `pri=` (which counts the size).
const ORACLE_DEFERRAL: &str = ", relay=[127.0.0.1] [127.0.0.1], \
dsn=4.3.0, reply=451 4.3.0 <later1@remote.example.test>... try again later, \
stat=Deferred: 451 4.3.0 <later1@remote.example.test>... try again later";

/// The log lines that mention `needle`.
fn lines_with(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_451_at_rcpt_is_deferred_queued_and_delivered_by_the_next_queue_run() {
    let sink = Sink::start();
    let (mut d, _) = relay_to(&sink, &[]);
    send(
        &mut d,
        "<sender@client.example.test>",
        &["<later1@remote.example.test>"],
        "retried",
    );

    // First attempt: deferred with the remote's own words, nothing at the sink.
    let to = "to=<later1@remote.example.test>, ";
    let log = d.wait_log("stat=Deferred");
    let deferred = lines_with(&log, to);
    assert_eq!(deferred.len(), 1, "{log}");
    let id = deferred[0].split(": ").nth(1).unwrap().to_string();
    assert!(
        deferred[0].contains(", mailer=relay, pri=") && deferred[0].ends_with(ORACLE_DEFERRAL),
        "{}",
        deferred[0]
    );
    assert!(sink.messages().is_empty());
    // The to= line is logged before the recipient's new state is written back: read the
    // queue until the attempt is in it (bounded).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let q = loop {
        let q = d.mailq();
        if q.contains("(Deferred: ") || std::time::Instant::now() > until {
            break q;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        q.contains(&id)
            && q.contains("<later1@remote.example.test>")
            // cut to the 80 columns of sendmail's listing
            && q.contains("\n                 (Deferred: 451 4.3.0 <later1@remote.example.test>... try agai)\n"),
        "{q}"
    );

    // The next hop changes its mind; the queue run delivers, once.
    sink.accept_later();
    let out = d.sendmail(&["-q"]);
    assert!(out.status.success(), "{out:?}");
    let log = d.log_text();
    let tries = lines_with(&log, to);
    assert_eq!(tries.len(), 2, "{log}");
    assert!(
        tries[1].contains(&format!(": {id}: "))
            && tries[1].contains(", mailer=relay, ")
            && tries[1].contains(", dsn=2.0.0, stat=Sent ("),
        "{}",
        tries[1]
    );
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("X-Sink-Rcpt: To:<later1@remote.example.test>")
            && got[0].contains("Subject: retried\r\n"),
        "{}",
        got[0]
    );
    wait_queue_empty(&d);
    assert!(sink.dsns().is_empty(), "no bounce, no delay notice");
    d.stop();
}

/// A delivery the previous daemon made but did not record in the queue (killed between the
/// next hop's `250` and the queue update) is written down in `<queue>/delivered/` the moment
/// it succeeds (src/runner/marks.rs); the next start marks it done instead of sending it
/// again. Here the mark is written by hand for a message still pending in the queue (the
/// state a SIGKILL in that gap leaves): the queue run sends nothing, logs the recipient
/// `stat=Sent` and why, and empties the queue. Without the marks the run delivers it again.
#[test]
fn a_delivery_written_down_before_a_crash_is_not_sent_again() {
    let sink = Sink::start();
    let (mut d, _) = relay_to(&sink, &[]);
    send(
        &mut d,
        "<sender@client.example.test>",
        &["<later2@remote.example.test>"],
        "delivered before the crash",
    );
    let log = d.wait_log("stat=Deferred");
    let to = "to=<later2@remote.example.test>, ";
    let id = lines_with(&log, to)[0]
        .split(": ")
        .nth(1)
        .unwrap()
        .to_string();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !d.mailq().contains("(Deferred: ") && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    d.stop();
    assert!(d.mailq().contains(&id), "still queued");

    let marks = d.queue_dir().join("delivered");
    std::fs::create_dir_all(&marks).unwrap();
    std::fs::write(marks.join("0"), format!("{id} 0\n")).unwrap();
    sink.accept_later();
    let out = d.sendmail(&["-q"]);
    assert!(out.status.success(), "{out:?}");
    let log = d.log_text();
    let tries = lines_with(&log, to);
    assert_eq!(tries.len(), 2, "{log}");
    assert!(
        tries[1].contains(&format!(": {id}: "))
            && tries[1].contains(", mailer=relay, ")
            && tries[1].contains("stat=Sent"),
        "{}",
        tries[1]
    );
    assert!(
        log.contains(&format!(
            "{id}: recipient 0: delivered before the previous daemon stopped, not in the queue yet: not sent again"
        )),
        "{log}"
    );
    assert!(sink.messages().is_empty(), "not sent again");
    assert!(!d.mailq().contains(&id), "{}", d.mailq());
    assert_eq!(
        std::fs::read_dir(&marks).unwrap().count(),
        0,
        "the marks are gone once in the queue"
    );
}

/// The mark is written the moment the next hop's `250` is read, not after what follows on
/// the connection: here the hop takes the message and then stalls (it never answers the
/// `QUIT` that follows, `ConnectionCacheSize=0`), so the delivery's result never reaches
/// the queue; the mark is there all the same. The daemon is SIGKILLed in that state, and
/// the next queue run does not send the message again. Before the marks were written from
/// the reply itself, the mark waited for the `QUIT`'s answer (issue 19: a crash in that gap
/// sent the message twice).
#[test]
fn a_hop_that_took_the_message_is_written_down_before_the_session_ends() {
    let sink = Sink::start();
    sink.stall_after_data(true);
    let (mut d, _) = relay_to(&sink, &["-O", "ConnectionCacheSize=0"]);
    send(
        &mut d,
        "<sender@client.example.test>",
        &["<taken@remote.example.test>"],
        "taken, then the hop stalls",
    );
    assert_eq!(sink.wait_messages(1).len(), 1);
    let marks = d.queue_dir().join("delivered");
    let mark = support::dsn_sink::wait_for(
        || {
            let files = std::fs::read_dir(&marks).ok()?;
            let text: String = (files.flatten())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect();
            text.lines().next().map(str::to_string)
        },
        "delivery mark while the hop stalls",
    );
    let id = mark
        .strip_suffix(" 0")
        .expect("recipient 0 marked")
        .to_string();
    d.signal(nix::sys::signal::Signal::SIGKILL);
    d.child.as_mut().unwrap().wait().unwrap();
    assert!(d.mailq().contains(&id), "the queue does not know yet");
    assert!(!d.log_text().contains("stat=Sent"), "{}", d.log_text());

    sink.stall_after_data(false);
    let out = d.sendmail(&["-q"]);
    assert!(out.status.success(), "{out:?}");
    let log = d.log_text();
    assert!(
        log.contains(&format!(
            "{id}: recipient 0: delivered before the previous daemon stopped, not in the queue yet: not sent again"
        )),
        "{log}"
    );
    assert_eq!(sink.messages().len(), 1, "not sent again");
    assert!(!d.mailq().contains(&id), "{}", d.mailq());
}
