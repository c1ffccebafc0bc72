//! Per-message and per-daemon limits that hold against the real daemon (issue 6 item 2):
//! `MaxRecipientsPerMessage` and `ConnectionRateThrottle`, over `[::1]` and `127.0.0.1`.
//!
//! The replies and log lines are the real sendmail 8.17.1.9's, asked on 2026-12-05 with the
//! same sessions (the oracle (`tests/data/oracle`) with `-OMaxRecipientsPerMessage=2`, then
//! `-OConnectionRateThrottle=1`; there the recipients were names its aliases know):
//! * past the limit each RCPT gets `452 4.5.3 Too many recipients` and one notice
//!   `<qid>: Too many recipients`; the message is accepted for the recipients before it
//!   (`nrcpts=2`);
//! * a burst of 4 connections at 1 per second logs
//!   `deferring connections on daemon MTA-v6: 1 per second`, and every client is served.
//!
//! The other limits have their own files: `MaxDaemonChildren`/`children=` and the 5,000
//! connection flood in tests/flood.rs, `MaxMessageSize`/`MaxHeadersLength` and `Timeout.*`
//! in tests/receipt_extensions.rs, the disk in tests/disk_full.rs.

mod support;

use std::net::SocketAddr;

use support::{Daemon, Smtp};

const CF: &str = "Djmta.example.test\n\
    O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n\
    O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1\n";

fn greeted(addr: SocketAddr) -> Smtp {
    let mut c = Smtp::connect(addr);
    let greeting = c.reply();
    assert!(
        greeting[0].starts_with("220 mta.example.test ESMTP"),
        "{greeting:?}"
    );
    c
}

/// The queue id in `250 2.0.0 <id> Message accepted for delivery`.
fn accepted_id(reply: &[String]) -> String {
    let last = reply.last().unwrap();
    assert!(last.ends_with("Message accepted for delivery"), "{reply:?}");
    last.split_whitespace().nth(2).unwrap().to_string()
}

#[test]
fn recipients_past_max_recipients_per_message_are_refused_and_the_rest_is_queued() {
    let mut d = Daemon::start(
        CF,
        &[
            "-O",
            "MaxRecipientsPerMessage=2",
            "-O",
            "DeliveryMode=queue",
        ],
    );
    for daemon in ["MTA-v6", "MTA-v4"] {
        let addr = d.addr_of(daemon);
        let mut c = greeted(addr);
        assert!(c.cmd("EHLO client.example.test")[0].starts_with("250-"));
        assert_eq!(
            c.cmd("MAIL FROM:<alice@client.example.test>"),
            ["250 2.1.0 <alice@client.example.test>... Sender ok"]
        );
        let replies: Vec<String> = ["root", "daemon", "bin", "sys"]
            .iter()
            .map(|r| c.cmd(&format!("RCPT TO:<{r}>")).remove(0))
            .collect();
        assert_eq!(
            replies,
            [
                "250 2.1.5 <root>... Recipient ok",
                "250 2.1.5 <daemon>... Recipient ok",
                "452 4.5.3 Too many recipients",
                "452 4.5.3 Too many recipients",
            ]
        );
        assert_eq!(c.cmd("DATA")[0], "354 End data with <CR><LF>.<CR><LF>");
        c.send(&format!("Subject: limits over {daemon}\r\n\r\nbody\r\n."));
        let id = accepted_id(&c.reply());
        assert!(c.cmd("QUIT")[0].starts_with("221 2.0.0"));

        let log = d.wait_log(&format!("{id}: from=<alice@client.example.test>"));
        let refused = log
            .lines()
            .filter(|l| l.ends_with(&format!("{id}: Too many recipients")))
            .count();
        assert_eq!(refused, 2, "one notice per refused RCPT:\n{log}");
        let from = log
            .lines()
            .find(|l| l.contains(&format!("{id}: from=")))
            .unwrap();
        assert!(from.contains(", nrcpts=2,"), "{from}");
        assert!(from.contains(&format!("daemon={daemon},")), "{from}");
        let queued = d.queue_text();
        assert!(queued.contains(&id), "{queued}");
    }
    let q = d.mailq();
    assert!(q.contains("Total requests: 2"), "{q}");
}

#[test]
fn a_burst_past_connection_rate_throttle_is_deferred_and_every_client_is_served() {
    let mut d = Daemon::start(CF, &["-O", "ConnectionRateThrottle=1"]);
    let addr = d.addr_of("MTA-v6");
    // Four connections at once; at one per second the accept loop must wait at least
    // once whatever second boundaries fall between them (two land in one second).
    let streams: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    for s in streams {
        s.set_read_timeout(Some(support::WAIT)).unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        let greeting = support::read_reply(&mut r);
        assert!(
            greeting[0].starts_with("220 mta.example.test ESMTP"),
            "{greeting:?}"
        );
        std::io::Write::write_all(&mut &s, b"QUIT\r\n").unwrap();
        assert!(support::read_reply(&mut r)[0].starts_with("221 2.0.0"));
    }
    d.wait_log("deferring connections on daemon MTA-v6: 1 per second");
    // The other daemon's rate is its own: one connection is not deferred.
    let mut c = greeted(d.addr_of("MTA-v4"));
    assert!(c.cmd("QUIT")[0].starts_with("221 2.0.0"));
    let log = d.wait_log_count("did not issue MAIL/EXPN/VRFY/ETRN", 5);
    assert!(
        !log.contains("deferring connections on daemon MTA-v4"),
        "{log}"
    );
}
