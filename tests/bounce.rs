//! Bounces, delay warnings and receipts (RFC 3464) end to end: sendmail-rs relays through a
//! smart host to a real SMTP peer (`tests/data/dsn_sink.py`) that answers 550 or 451 per
//! recipient; the DSN sendmail-rs queues comes back through the same smart host (or, for
//! postmaster, into an alias file) and is parsed with mail-parser, part by part and field
//! by field, beside the samples recorded from sendmail 8.17 in `tests/fixtures/dsn/`.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use mail_parser::{MessageParser, MimeHeaders};
use support::Daemon;
use support::dsn_sink::{Sink, relay_to, send, wait_for, wait_queue_empty};

/// One DSN taken apart: its headers, the types of its three parts, the human-readable
/// text, the delivery-status groups (field name → value), and the returned original.
#[derive(Debug)]
struct Report {
    subject: String,
    to: String,
    auto_submitted: String,
    report_type: String,
    part_types: Vec<String>,
    human: String,
    groups: Vec<Vec<(String, String)>>,
    original: String,
}

impl Report {
    fn parse(raw: &str) -> Report {
        let msg = MessageParser::default()
            .parse(raw.as_bytes())
            .expect("parses");
        let root = msg.root_part();
        let ct = root.content_type().expect("Content-Type");
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("multipart", Some("report")),
            "{raw}"
        );
        let children: Vec<u32> = match &root.body {
            mail_parser::PartType::Multipart(ids) => ids.clone(),
            other => panic!("not multipart: {other:?}"),
        };
        assert_eq!(children.len(), 3, "three parts: {raw}");
        let part = |i: usize| msg.part(children[i]).unwrap();
        let type_of = |i: usize| {
            part(i)
                .content_type()
                .map_or("text/plain".to_string(), |c| {
                    format!("{}/{}", c.ctype(), c.subtype().unwrap_or(""))
                })
        };
        let status = String::from_utf8_lossy(part(1).contents()).to_string();
        Report {
            subject: msg.subject().unwrap_or("").to_string(),
            to: msg.header_raw("To").unwrap_or("").trim().to_string(),
            auto_submitted: msg
                .header_raw("Auto-Submitted")
                .unwrap_or("")
                .trim()
                .to_string(),
            report_type: ct.attribute("report-type").unwrap_or("").to_string(),
            part_types: (0..3).map(type_of).collect(),
            human: part(0).text_contents().unwrap_or("").replace("\r\n", "\n"),
            groups: groups(&status),
            original: String::from_utf8_lossy(part(2).contents()).replace("\r\n", "\n"),
        }
    }

    /// The per-message group, then one per recipient.
    fn field(&self, group: usize, name: &str) -> Option<&str> {
        self.groups[group]
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn names(&self, group: usize) -> BTreeSet<String> {
        self.groups[group].iter().map(|(n, _)| n.clone()).collect()
    }
}

fn groups(status: &str) -> Vec<Vec<(String, String)>> {
    status
        .replace("\r\n", "\n")
        .split("\n\n")
        .filter(|g| !g.trim().is_empty())
        .map(|g| {
            g.lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect()
        })
        .collect()
}

fn fixture(name: &str) -> Report {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dsn")
        .join(name);
    Report::parse(&std::fs::read_to_string(path).unwrap())
}

/// Our report has sendmail's parts and, in each status group, sendmail's fields (plus
/// only those in `extra`).
fn same_shape(ours: &Report, theirs: &Report, extra: &[&str]) {
    assert_eq!(ours.part_types, theirs.part_types);
    assert_eq!(ours.report_type, theirs.report_type);
    assert_eq!(ours.groups.len(), theirs.groups.len(), "{ours:#?}");
    for g in 0..ours.groups.len() {
        let (o, t) = (ours.names(g), theirs.names(g));
        let missing: Vec<_> = t.difference(&o).collect();
        assert!(missing.is_empty(), "group {g} lacks {missing:?}: {ours:#?}");
        let more: Vec<_> = o
            .difference(&t)
            .filter(|n| !extra.contains(&n.as_str()))
            .collect();
        assert!(more.is_empty(), "group {g} has extra {more:?}");
    }
}

#[test]
fn a_550_from_the_next_hop_comes_back_as_an_rfc3464_report() {
    let sink = Sink::start();
    let (mut d, _) = relay_to(&sink, &[]);
    send(
        &mut d,
        "<sender@client.example.test> ENVID=ENV1",
        &[
            "<nosuch1@remote.example.test> NOTIFY=FAILURE ORCPT=rfc822;nosuch1@remote.example.test",
            "<bob@remote.example.test>",
        ],
        "a-envid-orcpt",
    );
    let dsn = sink.wait_dsns(1).remove(0);
    assert!(
        dsn.contains("X-Sink-Rcpt: To:<sender@client.example.test>"),
        "{dsn}"
    );
    let ours = Report::parse(&dsn);
    let theirs = fixture("failed-envid-orcpt.eml");
    same_shape(&ours, &theirs, &[]);
    assert_eq!(ours.subject, theirs.subject);
    assert_eq!(ours.auto_submitted, "auto-generated (failure)");
    assert_eq!(ours.to, "<sender@client.example.test>");
    assert!(dsn.contains("From: Mail Delivery Subsystem <MAILER-DAEMON@mta.example.test>"));
    assert!(ours.human.contains("The original message was received at "));
    assert!(
        ours.human.contains(
            "   ----- The following addresses had permanent fatal errors -----\n\
         <nosuch1@remote.example.test>\n    \
         (reason: 550 5.1.1 <nosuch1@remote.example.test>... User unknown)\n"
        ),
        "{}",
        ours.human
    );
    assert_eq!(ours.field(0, "Original-Envelope-Id"), Some("ENV1"));
    assert_eq!(
        ours.field(0, "Reporting-MTA"),
        Some("dns; mta.example.test")
    );
    assert_eq!(
        ours.groups.len(),
        2,
        "only the failed recipient is reported"
    );
    for (name, value) in [
        ("Original-Recipient", "rfc822;nosuch1@remote.example.test"),
        ("Final-Recipient", "RFC822; nosuch1@remote.example.test"),
        ("Action", "failed"),
        ("Status", "5.1.1"),
        ("Remote-MTA", "DNS; [127.0.0.1]"),
        (
            "Diagnostic-Code",
            "SMTP; 550 5.1.1 <nosuch1@remote.example.test>... User unknown",
        ),
    ] {
        assert_eq!(ours.field(1, name), Some(value), "{name}");
    }
    assert_eq!(ours.part_types[2], "message/rfc822");
    assert!(
        ours.original
            .starts_with("Return-Path: <sender@client.example.test>\n")
    );
    assert!(ours.original.contains("Subject: a-envid-orcpt\n"));
    assert!(ours.original.contains("\n\nbody line 1\nbody line 2\n"));

    // sendmail's log line, and the original leaves the queue once the DSN is queued.
    let log = d.wait_log(": DSN: User unknown");
    let line = log.lines().find(|l| l.contains(": DSN: ")).unwrap();
    assert!(
        line.contains(" mta.example.test") || line.contains(": "),
        "{line}"
    );
    wait_queue_empty(&d);
    assert_eq!(sink.dsns().len(), 1, "exactly one bounce");
}

#[test]
fn ret_hdrs_returns_headers_only_and_notify_never_returns_nothing() {
    let sink = Sink::start();
    let (mut d, _) = relay_to(&sink, &[]);
    send(
        &mut d,
        "<sender@client.example.test>",
        &["<nosuch5@remote.example.test> NOTIFY=NEVER"],
        "e-never",
    );
    send(
        &mut d,
        "<sender@client.example.test> RET=HDRS",
        &["<nosuch3@remote.example.test>"],
        "c-ret-hdrs",
    );
    let dsn = sink.wait_dsns(1).remove(0);
    let ours = Report::parse(&dsn);
    same_shape(&ours, &fixture("failed-ret-hdrs.eml"), &[]);
    assert_eq!(ours.part_types[2], "text/rfc822-headers");
    assert!(ours.original.contains("Subject: c-ret-hdrs\n"));
    assert!(!ours.original.contains("body line"), "{}", ours.original);
    d.wait_log("to=<nosuch5@remote.example.test>");
    wait_queue_empty(&d);
    assert_eq!(sink.dsns().len(), 1, "NOTIFY=NEVER gave a DSN");
}

#[test]
fn null_sender_and_double_bounces_go_to_postmaster() {
    let sink = Sink::start();
    let (mut d, postmaster) = relay_to(&sink, &[]);
    // A bounce for <> goes to postmaster, never back to <>.
    send(
        &mut d,
        "<>",
        &["<nosuch4@remote.example.test>"],
        "d-null-sender",
    );
    d.wait_log(": postmaster notify: User unknown");
    // A DSN that itself fails (its recipient is unknown too) is a double bounce.
    send(
        &mut d,
        "<nosuch6@remote.example.test>",
        &["<nosuch7@remote.example.test>"],
        "i-double",
    );
    d.wait_log(": return to sender: User unknown");
    wait_queue_empty(&d);
    let mbox = std::fs::read_to_string(&postmaster).unwrap();
    let notices: Vec<&str> = mbox.split("\nFrom MAILER-DAEMON ").collect();
    assert_eq!(notices.len(), 2, "{mbox}");
    assert!(mbox.starts_with("From MAILER-DAEMON "), "{mbox}");
    for n in &notices {
        let body = n.split_once('\n').unwrap().1;
        let r = Report::parse(body);
        assert_eq!(r.subject, "Postmaster notify: see transcript for details");
        assert_eq!(r.auto_submitted, "auto-generated (postmaster-notification)");
        assert_eq!(r.to, "postmaster");
        assert!(r.human.contains("\nwith id "), "{}", r.human);
    }
    assert!(mbox.contains("Subject: d-null-sender"));
    // The double bounce returns our DSN to nosuch6, which returned i-double.
    assert!(mbox.contains("To: <nosuch6@remote.example.test>"));
    assert!(
        sink.dsns().is_empty(),
        "nothing went to <> or a bounced sender"
    );
}

#[test]
fn a_failed_postmaster_notice_is_saved_in_dead_letter_drop() {
    // sendmail 8.17 (the oracle, DeadLetterDrop set, no SafeFileEnvironment, a
    // DoubleBounceAddress that does not exist): "ID: NEWID: return to sender: User unknown",
    // then "ID: Saved message in PATH" and the notice appended to PATH.
    let sink = Sink::start();
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("dead.letter");
    let (dbl, dld) = (
        "DoubleBounceAddress=nosuchpm@remote.example.test".to_string(),
        format!("DeadLetterDrop={}", drop.display()),
    );
    let (mut d, _postmaster) = relay_to(&sink, &["-O", &dbl, "-O", &dld]);
    send(
        &mut d,
        "<>",
        &["<nosuch8@remote.example.test>"],
        "d-dead-letter",
    );
    let log = d.wait_log(&format!("Saved message in {}", drop.display()));
    assert!(log.contains(": return to sender: User unknown"), "{log}");
    let saved = std::fs::read_to_string(&drop).unwrap();
    assert!(saved.starts_with("From MAILER-DAEMON "), "{saved}");
    assert!(
        saved.contains("\nReturn-Path: <MAILER-DAEMON>\n"),
        "{saved}"
    );
    assert!(
        saved.contains("Subject: Postmaster notify: see transcript for details"),
        "{saved}"
    );
    assert!(saved.contains("Subject: d-dead-letter"), "{saved}");
}

#[test]
fn queuewarn_warns_once_then_queuereturn_returns_the_message() {
    let sink = Sink::start();
    let (mut d, _) = relay_to(
        &sink,
        &[
            "-q1s",
            "-O",
            "Timeout.queuewarn=2s",
            "-O",
            "Timeout.queuereturn=5s",
        ],
    );
    send(
        &mut d,
        "<sender@client.example.test>",
        &["<later1@remote.example.test>"],
        "g-later",
    );
    let warn = d.wait_log(": sender notify: Warning: could not send message for past 2 seconds");
    assert_eq!(warn.matches("sender notify: Warning").count(), 1);
    let log = d.wait_log(": sender notify: Cannot send message for 5 seconds");
    assert_eq!(
        log.matches("sender notify: Warning").count(),
        1,
        "one warning only"
    );
    wait_queue_empty(&d);
    let dsns = sink.wait_dsns(2);
    assert_eq!(dsns.len(), 2, "a warning and a return");

    let warning = Report::parse(&dsns[0]);
    same_shape(
        &warning,
        &fixture("delayed-queuewarn.eml"),
        &["Received-From-MTA", "Will-Retry-Until"],
    );
    assert_eq!(
        warning.subject,
        "Warning: could not send message for past 2 seconds"
    );
    assert_eq!(warning.auto_submitted, "auto-generated (warning-timeout)");
    assert!(warning.human.contains("THIS IS A WARNING MESSAGE ONLY"));
    assert!(
        warning
            .human
            .contains("Will keep trying until message is 5 seconds old")
    );
    assert_eq!(warning.field(1, "Action"), Some("delayed"));
    assert_eq!(warning.field(1, "Status"), Some("4.3.0"));

    let returned = Report::parse(&dsns[1]);
    same_shape(
        &returned,
        &fixture("expired-queuereturn.eml"),
        &["Received-From-MTA"],
    );
    assert_eq!(
        returned.subject,
        "Returned mail: see transcript for details"
    );
    assert_eq!(returned.field(1, "Action"), Some("failed"));
    assert_eq!(returned.field(1, "Status"), Some("4.4.7"));
    assert!(
        returned
            .human
            .contains("Message could not be delivered for 5 seconds\n")
    );
    assert!(returned.original.contains("Subject: g-later\n"));
}

#[test]
fn notify_success_through_a_non_dsn_next_hop_is_reported_relayed() {
    let sink = Sink::start();
    let (mut d, _) = relay_to(&sink, &[]);
    send(
        &mut d,
        "<sender@client.example.test>",
        &["<bob2@remote.example.test> NOTIFY=SUCCESS"],
        "f-success",
    );
    let r = Report::parse(&sink.wait_dsns(1)[0]);
    same_shape(&r, &fixture("relayed-notify-success.eml"), &[]);
    assert_eq!(r.subject, "Return receipt");
    assert_eq!(r.auto_submitted, "auto-generated (return-receipt)");
    assert_eq!(
        r.field(1, "Action"),
        Some("relayed (to non-DSN-aware mailer)")
    );
    assert_eq!(r.part_types[2], "text/rfc822-headers");
    d.wait_log(": DSN: Return receipt");
    wait_queue_empty(&d);
}

#[test]
fn notify_success_through_a_dsn_aware_next_hop_is_left_to_it() {
    // The next hop: a second sendmail-rs, which offers DSN and so takes NOTIFY=SUCCESS on.
    let mut b = Daemon::start(
        "Djsink.example.test\nO DaemonPortOptions=Name=B-v4, Family=inet, Port=0, Addr=127.0.0.1\n",
        &["-O", "DeliveryMode=queueonly"],
    );
    let b_port = b.addr_of("B-v4").port();
    let cf = format!(
        "Djmta.example.test\n\
         DSrelay:[127.0.0.1]\n\
         O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n\
         Mrelay, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=2040, T=DNS/RFC822/SMTP, A=TCP $h {b_port}\n"
    );
    let mut a = Daemon::start(&cf, &[]);
    send(
        &mut a,
        "<sender@client.example.test>",
        &["<bob2@remote.example.test> NOTIFY=SUCCESS"],
        "f-success",
    );
    a.wait_log("stat=Sent");
    b.wait_log("from=<sender@client.example.test>");
    wait_queue_empty(&a);
    let log = a.log_text();
    assert!(!log.contains("Return receipt"), "{log}");
}

/// `sendmail -bp` on `queue` (a queue directory given with `-O QueueDirectory`).
fn mailq_at(d: &Daemon, queue: &Path) -> String {
    let out = support::run(&[
        "-bp",
        "-C",
        d.cf.to_str().unwrap(),
        "-O",
        &format!("QueueDirectory={}", queue.display()),
    ]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn a_restart_does_not_bounce_a_recipient_twice() {
    let sink = Sink::start();
    let queue = tempfile::tempdir().unwrap();
    let q = format!("QueueDirectory={}", queue.path().display());
    let (mut d, _) = relay_to(&sink, &["-O", &q]);
    send(
        &mut d,
        "<sender@client.example.test>",
        &[
            "<nosuch1@remote.example.test>",
            "<later1@remote.example.test>",
        ],
        "restart",
    );
    d.wait_log(": DSN: User unknown");
    // Wait until the bounced recipient's new state is on disk (mailq lists pending ones).
    wait_for(
        || {
            let q = mailq_at(&d, queue.path());
            (q.contains("later1@remote.example.test") && !q.contains("nosuch1")).then_some(())
        },
        "the bounce recorded in the queue",
    );
    d.stop();

    // The same queue again, with the delay warning due at once: the next scan settles the
    // message anew, and must find nosuch1 reported already.
    let (mut d2, _) = relay_to(&sink, &["-O", &q, "-q1s", "-O", "Timeout.queuewarn=1s"]);
    let log = d2.wait_log(": sender notify: Warning: could not send message for past 1 second");
    assert!(!log.contains("DSN: User unknown"), "bounced again:\n{log}");
    let dsns = wait_for(
        || {
            let d = sink.dsns();
            (d.len() >= 2).then_some(d)
        },
        "the bounce and the warning at the sink",
    );
    let subjects: BTreeSet<String> = dsns.iter().map(|m| Report::parse(m).subject).collect();
    assert_eq!(
        subjects,
        BTreeSet::from([
            "Returned mail: see transcript for details".to_string(),
            "Warning: could not send message for past 1 second".to_string(),
        ])
    );
    let warning = dsns
        .iter()
        .map(|m| Report::parse(m))
        .find(|r| r.subject.starts_with("Warning"))
        .unwrap();
    assert_eq!(warning.groups.len(), 2, "only later1 is delayed");
    assert_eq!(
        warning.field(1, "Final-Recipient"),
        Some("RFC822; later1@remote.example.test")
    );
}
