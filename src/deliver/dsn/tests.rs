use super::*;
use crate::queue::{ClientInfo, Notify};

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

fn settings() -> Settings {
    let cfg = Config::from_str(
        "t.cf",
        "Djmta.example.test\nPfirst-class=0\nPspecial-delivery=100\nPbulk=-60\nO Timeout.queuewarn=4h\nO Timeout.queuewarn.urgent=1h\nO Timeout.queuereturn=5d\nO Timeout.queuereturn.non-urgent=7d\n",
        &[],
    )
    .unwrap();
    Settings::from_config(&cfg)
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000 + secs)
}

fn rcpt(addr: &str, state: DeliveryState, status: &str, code: &str) -> Recipient {
    let mut r = Recipient::new(addr);
    r.state = state;
    r.tries = 1;
    r.status = Some(status.to_string());
    r.dsn_code = Some(code.to_string());
    r.remote_mta = Some("[127.0.0.1]".to_string());
    r
}

fn unknown(addr: &str) -> Recipient {
    rcpt(
        addr,
        DeliveryState::Failed,
        &format!("550 5.1.1 <{addr}>... User unknown"),
        "5.1.1",
    )
}

fn deferred(addr: &str) -> Recipient {
    rcpt(
        addr,
        DeliveryState::Pending,
        &format!("Deferred: 451 4.3.0 <{addr}>... try again later"),
        "4.3.0",
    )
}

fn message(sender: &str, recipients: Vec<Recipient>, headers: &str) -> Message {
    let mut env = Envelope::new(QueueId::new("6B2GCFR8017979").unwrap(), sender);
    env.arrival = at(0);
    env.recipients = recipients;
    env.client = ClientInfo {
        daemon: Some("MTA-v6".into()),
        name: Some("localhost".into()),
        addr: Some("IPv6:0:0:0:0:0:0:0:1".into()),
        protocol: None,
    };
    Message {
        envelope: env,
        body: format!("{headers}Subject: t\n\nbody line 1\n").into_bytes(),
    }
}

fn kinds(plan: &Plan) -> Vec<(Kind, Addressee, Vec<usize>)> {
    plan.notices
        .iter()
        .map(|n| (n.kind, n.to.clone(), n.recipients.clone()))
        .collect()
}

fn sender() -> Addressee {
    Addressee::Sender("sender@client.example.test".into())
}

#[test]
fn a_permanent_failure_is_returned_to_the_sender_once() {
    let s = settings();
    let mut bob = Recipient::new("bob@remote.example.test");
    bob.state = DeliveryState::Done;
    let mut msg = message(
        "sender@client.example.test",
        vec![unknown("nosuch@remote.example.test"), bob],
        "",
    );
    let plan = plan(&s, &msg, at(10));
    assert_eq!(kinds(&plan), [(Kind::Failure, sender(), vec![0])]);
    assert_eq!(plan.quiet, [1], "bob was delivered without NOTIFY=SUCCESS");
    mark(&mut msg, &plan);
    assert!(finished(&msg));
    assert!(
        self::plan(&s, &msg, at(20)).is_empty(),
        "never bounced twice"
    );
}

#[test]
fn notify_decides_what_is_reported() {
    let s = settings();
    let mut never = unknown("a@remote.example.test");
    never.notify.never = true;
    let mut delay_only = unknown("b@remote.example.test");
    delay_only.notify.delay = true;
    let mut success = Recipient::new("c@remote.example.test");
    success.state = DeliveryState::Done;
    success.notify = Notify {
        success: true,
        ..Notify::default()
    };
    let msg = message(
        "sender@client.example.test",
        vec![never, delay_only, success],
        "",
    );
    let plan = plan(&s, &msg, at(10));
    assert_eq!(kinds(&plan), [(Kind::Success, sender(), vec![2])]);
    assert_eq!(plan.quiet, [0, 1]);
}

#[test]
fn bounces_of_bounces_go_to_postmaster_and_then_nowhere() {
    let s = settings();
    let null = message("", vec![unknown("x@remote.example.test")], "");
    let pm = Addressee::Postmaster("postmaster".into());
    assert_eq!(
        kinds(&plan(&s, &null, at(1))),
        [(Kind::Failure, pm.clone(), vec![0])]
    );

    let mut ours = message("", vec![unknown("sender@client.example.test")], "");
    ours.envelope.notices.origin = Origin::Dsn;
    assert_eq!(
        kinds(&plan(&s, &ours, at(1))),
        [(Kind::Failure, pm, vec![0])]
    );
    assert_eq!(
        log_word(&plan(&s, &ours, at(1)).notices[0], &ours),
        "return to sender"
    );

    ours.envelope.notices.origin = Origin::Postmaster;
    assert_eq!(
        kinds(&plan(&s, &ours, at(1))),
        [(Kind::Failure, Addressee::Dropped, vec![0])]
    );
}

#[test]
fn double_bounce_address_is_the_option_when_set() {
    let cfg = Config::from_str(
        "t.cf",
        "Djmta.example.test\nO DoubleBounceAddress=hostmaster@mta.example.test\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        Settings::from_config(&cfg).postmaster,
        "hostmaster@mta.example.test"
    );
    assert_eq!(settings().postmaster, "postmaster");
}

#[test]
fn one_delay_warning_after_queuewarn() {
    let s = settings();
    let mut msg = message(
        "sender@client.example.test",
        vec![deferred("later@remote.example.test")],
        "",
    );
    assert!(plan(&s, &msg, at(4 * HOUR - 1)).is_empty());
    let p = plan(&s, &msg, at(4 * HOUR));
    assert_eq!(kinds(&p), [(Kind::Delay, sender(), vec![0])]);
    mark(&mut msg, &p);
    assert!(msg.envelope.notices.warned);
    assert_eq!(msg.envelope.recipients[0].state, DeliveryState::Pending);
    assert!(!finished(&msg));
    assert!(plan(&s, &msg, at(5 * HOUR)).is_empty(), "warned once");
}

#[test]
fn no_delay_warning_for_null_senders_bulk_mail_or_notify_without_delay() {
    let s = settings();
    let late = at(5 * HOUR);
    let null = message("", vec![deferred("a@remote.example.test")], "");
    assert!(plan(&s, &null, late).is_empty());
    let bulk = message(
        "sender@client.example.test",
        vec![deferred("a@remote.example.test")],
        "Precedence: bulk\n",
    );
    assert!(plan(&s, &bulk, late).is_empty());
    let mut r = deferred("a@remote.example.test");
    r.notify.failure = true;
    let failure_only = message("sender@client.example.test", vec![r], "");
    assert!(plan(&s, &failure_only, late).is_empty());
}

#[test]
fn timeouts_follow_the_precedence_class() {
    let s = settings();
    let normal = message("s@x.test", vec![], "");
    let urgent = message("s@x.test", vec![], "Precedence: special-delivery\n");
    let bulk = message("s@x.test", vec![], "precedence:  BULK\n");
    assert_eq!(
        s.timeout_for(&s.queuewarn, &normal),
        Duration::from_secs(4 * HOUR)
    );
    assert_eq!(
        s.timeout_for(&s.queuewarn, &urgent),
        Duration::from_secs(HOUR)
    );
    assert_eq!(
        s.timeout_for(&s.queuereturn, &bulk),
        Duration::from_secs(7 * DAY)
    );
    assert_eq!(
        s.timeout_for(&s.queuereturn, &normal),
        Duration::from_secs(5 * DAY)
    );
    let mut ours = message("", vec![], "Precedence: special-delivery\n");
    ours.envelope.notices.origin = Origin::Dsn;
    assert_eq!(
        s.timeout_for(&s.queuereturn, &ours),
        Duration::from_secs(5 * DAY)
    );
}

#[test]
fn queuereturn_fails_what_is_pending_with_status_4_4_7() {
    let s = settings();
    let mut msg = message(
        "sender@client.example.test",
        vec![deferred("later@remote.example.test")],
        "",
    );
    assert!(!expire(&s, &mut msg, at(5 * DAY - 1)));
    assert!(expire(&s, &mut msg, at(5 * DAY)));
    assert!(failed_by_expiry(&msg.envelope.recipients[0]));
    let p = plan(&s, &msg, at(5 * DAY));
    assert_eq!(kinds(&p), [(Kind::Failure, sender(), vec![0])]);
    let b = Build {
        settings: &s,
        notice: &p.notices[0],
        id: QueueId::new("6B2GCLvQ018176").unwrap(),
        now: at(5 * DAY),
    };
    assert_eq!(log_reason(&b, &msg), "Cannot send message for 5 days");
    let dsn = String::from_utf8(build(&b, &msg).body).unwrap();
    assert!(dsn.contains("\nAction: failed\nStatus: 4.4.7\n"), "{dsn}");
    assert!(dsn.contains(
        "\nMessage could not be delivered for 5 days\nMessage will be deleted from queue\n"
    ));
    assert!(
        dsn.contains("    (reason: 451 4.3.0 <later@remote.example.test>... try again later)\n")
    );
}

#[test]
fn the_notice_is_a_queued_message_from_the_null_sender() {
    let s = settings();
    let mut msg = message(
        "sender@client.example.test",
        vec![unknown("nosuch@remote.example.test")],
        "",
    );
    msg.envelope.params.envid = Some("ENV1".into());
    msg.envelope.recipients[0].orcpt = Some("rfc822;nosuch@remote.example.test".into());
    let p = plan(&s, &msg, at(1));
    let b = Build {
        settings: &s,
        notice: &p.notices[0],
        id: QueueId::new("6B2GCFR8017981").unwrap(),
        now: at(1),
    };
    let dsn = build(&b, &msg);
    assert_eq!(dsn.envelope.sender, "");
    assert_eq!(dsn.envelope.id.as_str(), "6B2GCFR8017981");
    assert_eq!(dsn.envelope.notices.origin, Origin::Dsn);
    let to: Vec<&str> = dsn
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(to, ["sender@client.example.test"]);
    let text = String::from_utf8(dsn.body).unwrap();
    let boundary = "6B2GCFR8017981.1796000001/mta.example.test";
    // The layout of sendmail's errbody, part by part (tests/fixtures/dsn/failed-envid-orcpt.eml).
    let expected_parts = [
        format!("\nThis is a MIME-encapsulated message\n\n--{boundary}\n\nThe original message was received at "),
        "\nfrom localhost [IPv6:0:0:0:0:0:0:0:1]\n\n   ----- The following addresses had permanent fatal errors -----\n<nosuch@remote.example.test>\n    (reason: 550 5.1.1 <nosuch@remote.example.test>... User unknown)\n\n   ----- Transcript of session follows -----\n... while talking to [127.0.0.1]:\n".to_string(),
        format!("\n--{boundary}\nContent-Type: message/delivery-status\n\nOriginal-Envelope-Id: ENV1\nReporting-MTA: dns; mta.example.test\nReceived-From-MTA: DNS; localhost\nArrival-Date: "),
        "\n\nOriginal-Recipient: rfc822;nosuch@remote.example.test\nFinal-Recipient: RFC822; nosuch@remote.example.test\nX-Actual-Recipient: rfc822; nosuch@remote.example.test\nAction: failed\nStatus: 5.1.1\nRemote-MTA: DNS; [127.0.0.1]\nDiagnostic-Code: SMTP; 550 5.1.1 <nosuch@remote.example.test>... User unknown\nLast-Attempt-Date: ".to_string(),
        format!("\n\n--{boundary}\nContent-Type: message/rfc822\n\nReturn-Path: <sender@client.example.test>\nSubject: t\n\nbody line 1\n\n--{boundary}--\n"),
    ];
    let mut rest = text.as_str();
    for part in &expected_parts {
        let at = rest
            .find(part.as_str())
            .unwrap_or_else(|| panic!("{part:?} in\n{text}"));
        rest = &rest[at + part.len()..];
    }
    assert!(text.contains("\nFrom: Mail Delivery Subsystem <MAILER-DAEMON@mta.example.test>\n"));
    assert!(text.contains("\nTo: <sender@client.example.test>\n"));
    assert!(text.contains("\nSubject: Returned mail: see transcript for details\nAuto-Submitted: auto-generated (failure)\n"));
    assert!(text.contains(&format!("boundary=\"{boundary}\"")));
}

#[test]
fn intervals_in_sendmails_words() {
    assert_eq!(words(Duration::from_secs(4 * HOUR)), "4 hours");
    assert_eq!(words(Duration::from_secs(5 * DAY)), "5 days");
    assert_eq!(words(Duration::from_secs(2)), "2 seconds");
    assert_eq!(
        words(Duration::from_secs(DAY + HOUR + 1)),
        "1 day, 1 hour, 1 second"
    );
    assert_eq!(words(Duration::from_secs(14 * DAY)), "2 weeks");
}

#[test]
fn the_log_gets_the_short_reason() {
    assert_eq!(
        short_reason("550 5.1.1 <nosuch@remote.example.test>... User unknown"),
        "User unknown"
    );
    assert_eq!(short_reason("554 Transaction failed"), "Transaction failed");
    assert_eq!(short_reason("User unknown"), "User unknown");
}

fn by(seconds: i64, mode: crate::queue::ByMode) -> Option<crate::queue::DeliverBy> {
    Some(crate::queue::DeliverBy {
        seconds,
        mode,
        trace: false,
    })
}

#[test]
fn deliver_by_r_past_its_deadline_returns_the_message_with_5_4_7() {
    // The oracle: `BY=1;R`, queue run 2 s later → no delivery attempt and
    // `ID: BOUNCEID: DSN: delivery time expired 1s` (tests/differential/scenarios/89-*).
    let s = settings();
    let mut msg = message(
        "sender@client.example.test",
        vec![deferred("later@remote.example.test")],
        "",
    );
    msg.envelope.params.deliver_by = by(120, crate::queue::ByMode::Return);
    assert!(!expire_deliver_by(&mut msg, at(119)));
    assert_eq!(msg.envelope.recipients[0].state, DeliveryState::Pending);
    assert!(expire(&s, &mut msg, at(120)));
    let r = &msg.envelope.recipients[0];
    assert_eq!(r.state, DeliveryState::Failed);
    assert_eq!(r.dsn_code.as_deref(), Some("5.4.7"));
    assert!(!failed_by_expiry(r), "not a queuereturn expiry");
    let p = plan(&s, &msg, at(120));
    assert_eq!(kinds(&p), [(Kind::Failure, sender(), vec![0])]);
    let b = Build {
        settings: &s,
        notice: &p.notices[0],
        id: QueueId::new("6B2GCLvQ018176").unwrap(),
        now: at(120),
    };
    assert_eq!(log_reason(&b, &msg), "delivery time expired 120s");
    let dsn = String::from_utf8(build(&b, &msg).body).unwrap();
    assert!(dsn.contains("\nAction: failed\nStatus: 5.4.7\n"), "{dsn}");
    assert!(
        dsn.contains("\nDelivery time (120s) expired\nMessage will be deleted from queue\n"),
        "{dsn}"
    );
    assert!(dsn.contains("<later@remote.example.test>... delivery time expired 120s\n"));
    // N never fails a message by itself.
    let mut n = message("s@x.test", vec![deferred("a@remote.example.test")], "");
    n.envelope.params.deliver_by = by(120, crate::queue::ByMode::Notify);
    assert!(!expire(&s, &mut n, at(3 * HOUR)));
}

#[test]
fn deliver_by_n_past_its_deadline_gives_one_delay_notice_in_sendmails_words() {
    let s = settings();
    let mut msg = message(
        "sender@client.example.test",
        vec![deferred("later@remote.example.test")],
        "",
    );
    msg.envelope.params.deliver_by = by(60, crate::queue::ByMode::Notify);
    assert!(plan(&s, &msg, at(59)).is_empty());
    let p = plan(&s, &msg, at(60));
    assert_eq!(kinds(&p), [(Kind::Delay, sender(), vec![0])]);
    let b = Build {
        settings: &s,
        notice: &p.notices[0],
        id: QueueId::new("6B2GCLvQ018176").unwrap(),
        now: at(60),
    };
    assert_eq!(
        log_reason(&b, &msg),
        "Warning: Delivery time (60s) exceeded"
    );
    let dsn = String::from_utf8(build(&b, &msg).body).unwrap();
    assert!(
        dsn.contains("Subject: Warning: Delivery time (60s) exceeded\n"),
        "{dsn}"
    );
    assert!(dsn.contains(
        "\nWarning: Delivery time (60s) exceeded\nWill keep trying until message is 5 days old\n"
    ));
    mark(&mut msg, &p);
    assert!(plan(&s, &msg, at(5 * HOUR)).is_empty(), "warned once");
    // Past Timeout.queuewarn the queuewarn wording wins, as in sendmail.
    let mut late = message("s@x.test", vec![deferred("a@remote.example.test")], "");
    late.envelope.params.deliver_by = by(60, crate::queue::ByMode::Notify);
    let p = plan(&s, &late, at(4 * HOUR));
    let b = Build {
        settings: &s,
        notice: &p.notices[0],
        id: QueueId::new("6B2GCLvQ018176").unwrap(),
        now: at(4 * HOUR),
    };
    assert_eq!(
        log_reason(&b, &late),
        "Warning: could not send message for past 4 hours"
    );
}

#[test]
fn by_n_through_a_next_hop_without_deliverby_and_by_trace_are_reported_as_sendmail_does() {
    use crate::queue::{ByMode, ByRelayed};
    let s = settings();
    let delivered = Outcome::Delivered {
        reply: "250 2.0.0 Ok".into(),
    };
    let relay = Some("mx.example.test. [127.0.0.1]");
    let plain = Peer::default();
    let aware = Peer {
        dsn: true,
        deliverby: true,
    };
    let record = |by: Option<crate::queue::DeliverBy>, peer: Peer, never: bool| {
        let mut r = Recipient::new("a@remote.example.test");
        r.notify.never = never;
        r.state = DeliveryState::Done;
        record_attempt(&mut r, &delivered, relay, peer, by);
        r
    };
    // N to a next hop without DELIVERBY: "Deliver-by notify: relayed".
    let n = record(by(60, ByMode::Notify), plain, false);
    assert_eq!(n.by_relayed, Some(ByRelayed::Notify));
    // … but not where the next hop took BY= on, nor for NOTIFY=NEVER.
    assert_eq!(
        record(by(60, ByMode::Notify), aware, false).by_relayed,
        None
    );
    assert_eq!(record(by(60, ByMode::Notify), plain, true).by_relayed, None);
    // Trace: wherever it went, and not swallowed by a DSN-aware next hop.
    let mut t = by(60, ByMode::Return);
    t.as_mut().unwrap().trace = true;
    let traced = record(t, aware, false);
    assert_eq!(traced.by_relayed, Some(ByRelayed::Trace));
    assert!(!traced.reported);
    assert_eq!(record(None, aware, false).by_relayed, None);

    let mut msg = message("sender@client.example.test", vec![n], "");
    msg.envelope.params.deliver_by = by(60, ByMode::Notify);
    let p = plan(&s, &msg, at(10));
    assert_eq!(kinds(&p), [(Kind::Success, sender(), vec![0])]);
    let b = Build {
        settings: &s,
        notice: &p.notices[0],
        id: QueueId::new("6B2GCLvQ018176").unwrap(),
        now: at(10),
    };
    assert_eq!(log_reason(&b, &msg), "Return receipt");
    let dsn = String::from_utf8(build(&b, &msg).body).unwrap();
    for want in [
        "<a@remote.example.test>  (Deliver-By notify: relayed)\n",
        "<a@remote.example.test>... Deliver-by notify: relayed\n",
        "\nAction: relayed (Deliver-By notify mode)\nStatus: 2.0.0\n",
        "\nDeliver-By-Date: ",
    ] {
        assert!(dsn.contains(want), "{want:?} in {dsn}");
    }
    mark(&mut msg, &p);
    assert!(plan(&s, &msg, at(20)).is_empty(), "once");
}

#[test]
fn use_errors_to_sends_the_failure_to_the_errors_to_addresses_too() {
    // The oracle (`-odi -oem -O UseErrorsTo=true`, `Errors-To: root`, from daemon to an
    // unknown user): one notice, to daemon and root, a `To:` line for each.
    let mut s = settings();
    let msg = message(
        "sender@client.example.test",
        vec![unknown("nosuch@remote.example.test")],
        "Errors-To: Errors Desk <errors@client.example.test>, root\n",
    );
    let p = plan(&s, &msg, at(1));
    let build_it = |s: &Settings| {
        let b = Build {
            settings: s,
            notice: &p.notices[0],
            id: QueueId::new("6B2GCFR8017990").unwrap(),
            now: at(1),
        };
        build(&b, &msg)
    };
    let off = build_it(&s);
    assert_eq!(
        off.envelope.recipients.len(),
        1,
        "UseErrorsTo is false by default"
    );
    s.use_errors_to = true;
    let on = build_it(&s);
    let to: Vec<&str> = on
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(
        to,
        [
            "sender@client.example.test",
            "errors@client.example.test",
            "root"
        ]
    );
    let text = String::from_utf8(on.body).unwrap();
    assert!(
        text.contains(
            "To: <sender@client.example.test>\nTo: <errors@client.example.test>\nTo: <root>\n"
        ),
        "{text}"
    );
}

#[test]
fn rrt_implies_dsn_turns_return_receipt_to_into_a_receipt_for_the_sender() {
    // The oracle (`-O RrtImpliesDsn=true`, `Return-Receipt-To: root`, from daemon to
    // daemon): "DSN: Return receipt" to daemon, the envelope sender, not to root.
    let mut s = settings();
    let mut done = Recipient::new("daemon");
    done.state = DeliveryState::Done;
    let msg = message(
        "sender@client.example.test",
        vec![done],
        "Return-Receipt-To: root\n",
    );
    assert_eq!(kinds(&plan(&s, &msg, at(1))), [], "off by default");
    s.rrt_implies_dsn = true;
    assert_eq!(
        kinds(&plan(&s, &msg, at(1))),
        [(Kind::Success, sender(), vec![0])]
    );
    // An explicit NOTIFY wins over the header.
    let mut never = msg.clone();
    never.envelope.recipients[0].notify.never = true;
    assert_eq!(kinds(&plan(&s, &never, at(1))), []);
}
