//! DELIVERBY (RFC 2852) end to end, as sendmail 8.17 does it: the real daemon offers it in
//! EHLO (with `DeliverByMin`), answers `BY=` with sendmail's replies, keeps it in the queue
//! record, relays it with the time left to a next hop that offers it (a second real
//! daemon), returns a `BY=…;R` message a next hop cannot take in time (the
//! `tests/data/dsn_sink.py` peer, which has no DELIVERBY) or whose deadline passes, and
//! warns once for `BY=…;N`.

mod support;

use sendmail_rs::queue::{ByMode, DeliverBy, QueueId, Store};
use support::dsn_sink::{Sink, relay_to};
use support::{Daemon, Smtp};

const CF: &str = "\
Djmta.example.test
O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1
O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1
";

fn ehlo(c: &mut Smtp) -> Vec<String> {
    c.reply();
    c.cmd("EHLO client.example.test")
}

/// Sends one message from `sender@client.example.test` with `by` on MAIL; returns its id.
fn send_by(addr: std::net::SocketAddr, by: &str, rcpt: &str) -> String {
    let mut c = Smtp::connect(addr);
    ehlo(&mut c);
    let r = c.cmd(&format!("MAIL FROM:<sender@client.example.test> {by}"));
    assert_eq!(r[0], "250 2.1.0 <sender@client.example.test>... Sender ok");
    assert!(c.cmd(&format!("RCPT TO:<{rcpt}>"))[0].starts_with("250"));
    assert!(c.cmd("DATA")[0].starts_with("354"));
    c.send("Subject: by\r\n\r\nin time\r\n.");
    let r = c.reply();
    c.cmd("QUIT");
    r[0].split(' ').nth(2).unwrap().to_string()
}

fn stored_by(d: &mut Daemon, id: &str) -> Option<DeliverBy> {
    d.stop();
    let store = Store::open_read_only(&d.queue_dir()).unwrap();
    let m = store.load(&QueueId::new(id).unwrap()).unwrap();
    m.envelope.params.deliver_by
}

#[test]
fn by_is_offered_checked_as_sendmail_checks_it_and_kept_in_the_queue_record() {
    let mut d = Daemon::start(
        CF,
        &["-O", "DeliveryMode=queueonly", "-O", "DeliverByMin=60"],
    );
    for addr in [d.addr_of("MTA-v6"), d.addr_of("MTA-v4")] {
        let mut c = Smtp::connect(addr);
        let k = ehlo(&mut c);
        assert_eq!(&k[k.len() - 2..], ["250-DELIVERBY 60", "250 HELP"], "{k:?}");
        assert!(!k.iter().any(|l| l.contains("CHUNKING")), "{k:?}");
        // The replies of sendmail 8.17.1.9 with -O DeliverByMin=60 (differential 21a).
        for (by, want) in [
            ("BY=30;R", "555 5.5.2 time 30 less than 60"),
            ("BY=0;R", "501 5.5.4 mode R requires BY time > 0"),
            ("BY=-10;R", "501 5.5.4 mode R requires BY time > 0"),
            ("BY=10;X", "501 5.5.2 illegal by-mode 'X'"),
            ("BY=60;RX", "501 5.5.2 illegal by-trace 'X'"),
            ("BY=60", "501 5.5.2 BY= missing ';'"),
            ("BY", "501 5.5.2 BY= requires a value"),
            ("BY=9999999999;R", "501 5.5.2 BY=9999999999;R out of range"),
        ] {
            let r = c.cmd(&format!("MAIL FROM:<a@client.example.test> {by}"));
            assert_eq!(r[0], want, "{by}");
        }
        for by in ["BY=30;N", "BY=-5;NT", "BY=60;R"] {
            let r = c.cmd(&format!("MAIL FROM:<a@client.example.test> {by}"));
            assert!(r[0].starts_with("250 2.1.0"), "{by}: {r:?}");
            c.cmd("RSET");
        }
        c.cmd("QUIT");
    }
    let id = send_by(d.addr_of("MTA-v6"), "BY=120;RT", "root@mta.example.test");
    assert_eq!(
        stored_by(&mut d, &id),
        Some(DeliverBy {
            seconds: 120,
            mode: ByMode::Return,
            trace: true
        }),
        "read back from the queue on disk after the daemon stopped"
    );
}

#[test]
fn with_deliver_by_min_below_zero_there_is_no_deliverby() {
    let mut d = Daemon::start(
        CF,
        &["-O", "DeliveryMode=queueonly", "-O", "DeliverByMin=-1"],
    );
    let mut c = Smtp::connect(d.addr_of("MTA-v4"));
    let k = ehlo(&mut c);
    assert!(!k.iter().any(|l| l.contains("DELIVERBY")), "{k:?}");
    assert_eq!(
        c.cmd("MAIL FROM:<a@client.example.test> BY=120;R")[0],
        "555 5.5.4 BY parameter unrecognized"
    );
    c.cmd("QUIT");
    d.stop();
}

#[test]
fn by_is_relayed_with_the_time_left_to_a_next_hop_that_offers_it() {
    // The next hop: another sendmail-rs daemon (it offers DELIVERBY), keeping what it gets.
    let mut next = Daemon::start(CF, &["-O", "DeliveryMode=queueonly"]);
    let port = next.addr_of("MTA-v4").port();
    let cf = format!(
        "Djmta.example.test\n\
         DSrelay:[127.0.0.1]\n\
         O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n\
         Mrelay, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=2040, T=DNS/RFC822/SMTP, A=TCP $h {port}\n"
    );
    let mut d = Daemon::start(&cf, &[]);
    send_by(
        d.addr_of("MTA-v6"),
        "BY=3600;NT",
        "someone@remote.example.test",
    );
    let log = next.wait_log("from=<sender@client.example.test>");
    let id = log
        .lines()
        .find(|l| l.contains("from=<sender@client.example.test>"))
        .and_then(|l| l.split(": from=").next())
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .to_string();
    d.stop();
    let by = stored_by(&mut next, &id).expect("BY= arrived at the next hop");
    assert_eq!((by.mode, by.trace), (ByMode::Notify, true));
    // The time left when it was sent on: a little under an hour, never more.
    assert!((3500..=3600).contains(&by.seconds), "{by:?}");
}

#[test]
fn by_r_to_a_next_hop_without_deliverby_is_returned_with_5_4_7() {
    let sink = Sink::start();
    let (mut d, _) = relay_to(&sink, &[]);
    send_by(
        d.addr_of("MTA-v6"),
        "BY=3600;R",
        "someone@remote.example.test",
    );
    let log = d.wait_log(": DSN: Server does not support Deliver By");
    assert!(
        log.contains("dsn=5.4.7, stat=Server does not support Deliver By"),
        "{log}"
    );
    let dsn = &support::dsn_sink::wait_for(
        || Some(sink.dsns()).filter(|d| !d.is_empty()),
        "the returned message at the sink",
    )[0];
    assert!(dsn.contains("\nStatus: 5.4.7"), "{dsn}");
    assert!(
        !dsn.contains("Delivery time (3600s) expired"),
        "not expired: {dsn}"
    );
    assert!(
        !sink
            .messages()
            .iter()
            .any(|m| m.contains("X-Sink-Rcpt: To:<someone@remote.example.test>")),
        "not sent to a next hop that cannot keep the deadline"
    );
    d.stop();
}

#[test]
fn by_r_past_its_deadline_is_returned_and_by_n_warns_once() {
    // A next hop that is down: every attempt is deferred, so only the deadline decides.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let cf = format!(
        "Djmta.example.test\n\
         DSrelay:[127.0.0.1]\n\
         O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n\
         Mrelay, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=2040, T=DNS/RFC822/SMTP, A=TCP $h {port}\n"
    );
    let mut d = Daemon::start(&cf, &["-q1s"]);
    let r = send_by(d.addr_of("MTA-v6"), "BY=2;R", "r@remote.example.test");
    let n = send_by(d.addr_of("MTA-v6"), "BY=2;N", "n@remote.example.test");
    let log = d.wait_log(": DSN: delivery time expired 2s");
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("{r}: ")) && l.contains("DSN: delivery time expired")),
        "{log}"
    );
    let log = d.wait_log(": sender notify: Warning: Delivery time (2s) exceeded");
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("{n}: ")) && l.contains("sender notify: Warning")),
        "{log}"
    );
    // Once only, and the N message is still queued, the R one gone.
    assert_eq!(
        log.matches("Warning: Delivery time (2s) exceeded").count(),
        1
    );
    let q = d.mailq();
    assert!(q.contains(&n), "{q}");
    assert!(!q.contains(&r), "{q}");
    d.stop();
}

#[test]
fn by_n_relayed_to_a_next_hop_without_deliverby_is_reported_relayed() {
    // sendmail's deliver.c: BY=…;N handed to a next hop that cannot keep it → a notice
    // "Deliver-By notify: relayed" (RFC 2852 §4.1.4.2).
    let sink = Sink::start();
    let (mut d, _) = relay_to(&sink, &[]);
    send_by(
        d.addr_of("MTA-v6"),
        "BY=3600;N",
        "someone@remote.example.test",
    );
    d.wait_log(": DSN: Return receipt");
    let dsn = &support::dsn_sink::wait_for(
        || Some(sink.dsns()).filter(|d| !d.is_empty()),
        "the notice at the sink",
    )[0];
    assert!(dsn.contains("Deliver-by notify: relayed"), "{dsn}");
    assert!(
        dsn.contains("Action: relayed (Deliver-By notify mode)"),
        "{dsn}"
    );
    assert!(dsn.contains("Deliver-By-Date: "), "{dsn}");
    // The message itself went on, without BY= (the sink offers no DELIVERBY).
    let sent = sink
        .messages()
        .into_iter()
        .find(|m| m.contains("X-Sink-Rcpt: To:<someone@remote.example.test>"))
        .expect("relayed");
    assert!(
        sent.starts_with("X-Sink-Mail: From:<sender@client.example.test>"),
        "{sent}"
    );
    assert!(!sent.lines().next().unwrap().contains("BY="), "{sent}");
    d.stop();
}
