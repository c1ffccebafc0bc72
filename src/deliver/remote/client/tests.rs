//! The client against the in-process sink over `tokio::io::duplex`: what goes on the wire,
//! and what each server answer means for each recipient.

use std::time::Duration;

use super::*;
use crate::deliver::remote::test_sink::{Log, Seen, SinkConfig, serve};
use crate::queue::{Envelope, Notify, QueueId};

fn message(sender: &str, body: &[u8]) -> Message {
    Message {
        envelope: Envelope::new(QueueId::new("6AO7R0vX027769").unwrap(), sender),
        body: body.to_vec(),
    }
}

fn rcpts(addrs: &[&str]) -> Vec<Recipient> {
    addrs.iter().map(|a| Recipient::new(*a)).collect()
}

/// Runs one session against a sink; returns the result and what the sink saw.
async fn run(cfg: SinkConfig, msg: &Message, rcpts: &[Recipient]) -> (SessionResult, Seen) {
    run_with(cfg, msg, rcpts, None).await
}

/// [`run`], with `on_accepted` told what the server took.
async fn run_with(
    cfg: SinkConfig,
    msg: &Message,
    rcpts: &[Recipient],
    on_accepted: Option<Accepted<'_>>,
) -> (SessionResult, Seen) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let log: Log = Log::default();
    let server = tokio::spawn(serve(server_io, cfg, log.clone(), None));
    let job = Job {
        message: msg,
        recipients: rcpts,
        helo_name: "oracle.example.test",
        addr: "127.0.0.1".parse().unwrap(),
        tls: None,
        auth: None,
        log_level: 9,
        on_accepted,
    };
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        send_message(
            client_io,
            "mx.example.test.",
            &job,
            &ClientTimeouts::uniform(Duration::from_secs(5)),
        ),
    )
    .await
    .expect("session finished in time");
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("sink finished")
        .unwrap();
    let seen = log
        .lock()
        .unwrap()
        .pop()
        .expect("sink recorded the session");
    (result, seen)
}

fn delivered(reply: &str) -> Outcome {
    Outcome::Delivered {
        reply: reply.to_string(),
    }
}

/// The recipients the server took are told at its final reply, once, by their positions
/// in the job: not the one refused at RCPT, and nothing when the message is refused.
#[tokio::test]
async fn the_recipients_taken_are_told_at_the_final_reply() {
    for (pipelining, drop_in_data) in [(true, false), (false, false), (true, true)] {
        let mut cfg = SinkConfig::new("SINK1");
        cfg.require_pipelining = pipelining;
        cfg.drop_in_data = drop_in_data;
        let msg = message("sender@client.example.test", b"Subject: hi\n\nline\n");
        let to = rcpts(&["a@d.test", "nosuch@d.test", "b@d.test"]);
        let told = std::sync::Mutex::new(Vec::new());
        let tell = |taken: &[usize]| told.lock().unwrap().push(taken.to_vec());
        let (result, _) = run_with(cfg, &msg, &to, Some(Accepted(&tell))).await;
        let told = told.into_inner().unwrap();
        if drop_in_data {
            assert!(told.is_empty(), "{told:?} {result:?}");
            assert!(!matches!(result.outcomes[0], Outcome::Delivered { .. }));
        } else {
            assert_eq!(told, [vec![0, 2]], "pipelining {pipelining}");
            assert!(matches!(result.outcomes[0], Outcome::Delivered { .. }));
            assert!(matches!(result.outcomes[1], Outcome::Permanent { .. }));
        }
    }
}

#[tokio::test]
async fn a_pipelined_session_sends_everything_and_reports_the_final_reply() {
    let mut cfg = SinkConfig::new("SINK1");
    cfg.require_pipelining = true;
    let msg = message(
        "sender@client.example.test",
        b"Subject: hi\n\n.leading dot\nline\n",
    );
    let to = rcpts(&["bob@remote.example.test", "carol@remote.example.test"]);
    let (result, seen) = run(cfg, &msg, &to).await;
    let wire = b"Subject: hi\r\n\r\n..leading dot\r\nline\r\n";
    assert_eq!(
        seen.commands,
        [
            "EHLO oracle.example.test".to_string(),
            format!("MAIL From:<sender@client.example.test> SIZE={}", wire.len()),
            "RCPT To:<bob@remote.example.test>".to_string(),
            "RCPT To:<carol@remote.example.test>".to_string(),
            "DATA".to_string(),
            "QUIT".to_string(),
        ]
    );
    assert_eq!(seen.data, wire);
    assert_eq!(
        result.outcomes,
        vec![delivered("2.0.0 Ok: queued as SINK1"); 2]
    );
    assert_eq!(
        result.outcomes[0].stat(),
        "Sent (2.0.0 Ok: queued as SINK1)"
    );
    assert_eq!(result.outcomes[0].dsn(), "2.0.0");
    assert!(!result.try_next_host);
}

#[tokio::test]
async fn each_recipient_gets_its_own_answer() {
    for pipelining in [true, false] {
        let mut cfg = SinkConfig::new("SINK2");
        if !pipelining {
            cfg.ehlo = Some(vec!["8BITMIME".into()]);
        }
        let msg = message("s@x.test", b"body\n");
        let to = rcpts(&["ok@d.test", "busy@d.test", "nosuch@d.test"]);
        let (result, seen) = run(cfg, &msg, &to).await;
        assert_eq!(
            result.outcomes,
            vec![
                delivered("2.0.0 Ok: queued as SINK2"),
                Outcome::Temporary {
                    dsn: "4.2.1".into(),
                    text: "Deferred: 450 4.2.1 <busy@d.test>... Mailbox busy".into()
                },
                Outcome::Permanent {
                    dsn: "5.1.1".into(),
                    text: "550 5.1.1 <nosuch@d.test>... User unknown".into()
                },
            ],
            "pipelining={pipelining}"
        );
        assert!(seen.commands.contains(&"DATA".to_string()));
    }
}

#[tokio::test]
async fn no_data_is_sent_when_every_recipient_is_refused() {
    let mut cfg = SinkConfig::new("X");
    cfg.ehlo = Some(vec![]);
    let msg = message("s@x.test", b"body\n");
    let to = rcpts(&["nosuch1@d.test", "busy2@d.test"]);
    let (result, seen) = run(cfg, &msg, &to).await;
    assert!(
        !seen.commands.iter().any(|c| c == "DATA"),
        "{:?}",
        seen.commands
    );
    assert_eq!(seen.commands.last().map(String::as_str), Some("QUIT"));
    assert!(matches!(&result.outcomes[0], Outcome::Permanent { dsn, .. } if dsn == "5.1.1"));
    assert!(matches!(&result.outcomes[1], Outcome::Temporary { dsn, .. } if dsn == "4.2.1"));
}

#[tokio::test]
async fn helo_is_used_when_ehlo_is_refused_and_then_no_extension_is() {
    let mut cfg = SinkConfig::new("OLD");
    cfg.ehlo = None;
    let msg = message("s@x.test", "caf\u{e9}\n".as_bytes());
    let (result, seen) = run(cfg, &msg, &rcpts(&["a@d.test"])).await;
    assert_eq!(
        seen.commands,
        [
            "EHLO oracle.example.test",
            "HELO oracle.example.test",
            "MAIL From:<s@x.test>",
            "RCPT To:<a@d.test>",
            "DATA",
            "QUIT"
        ]
    );
    assert_eq!(result.outcomes, vec![delivered("2.0.0 Ok: queued as OLD")]);
}

#[tokio::test]
async fn body_8bitmime_only_when_needed_and_offered() {
    let eight = message("s@x.test", "Subject: x\n\ncaf\u{e9}\n".as_bytes());
    let seven = message("s@x.test", b"Subject: x\n\ncafe\n");
    let mut declared = seven.clone();
    declared.envelope.params.body = Some(BodyType::EightBitMime);
    let offered = SinkConfig::new("A");
    let mut not_offered = SinkConfig::new("B");
    not_offered.ehlo = Some(vec!["PIPELINING".into()]);
    let cases = [
        (&eight, offered.clone(), true),
        (&declared, offered.clone(), true),
        (&seven, offered.clone(), false),
        (&eight, not_offered, false),
    ];
    for (msg, cfg, want) in cases {
        let (_, seen) = run(cfg, msg, &rcpts(&["a@d.test"])).await;
        let mail = seen
            .commands
            .iter()
            .find(|c| c.starts_with("MAIL"))
            .unwrap();
        assert_eq!(mail.contains(" BODY=8BITMIME"), want, "{mail}");
    }
}

#[tokio::test]
async fn dsn_parameters_pass_through_only_when_offered() {
    let mut msg = message("s@x.test", b"x\n");
    msg.envelope.params.ret = Some(Ret::Hdrs);
    msg.envelope.params.envid = Some("id+1=2".into());
    let mut r = Recipient::new("a@d.test");
    r.notify = Notify {
        success: true,
        failure: true,
        ..Notify::default()
    };
    r.orcpt = Some("rfc822;a@d.test".into());
    let mut never = Recipient::new("b@d.test");
    never.notify.never = true;
    let to = vec![r, never, Recipient::new("c@d.test")];
    let (_, seen) = run(SinkConfig::new("D"), &msg, &to).await;
    assert_eq!(
        &seen.commands[1..5],
        [
            "MAIL From:<s@x.test> SIZE=3 RET=HDRS ENVID=id+2B1+3D2",
            "RCPT To:<a@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@d.test",
            "RCPT To:<b@d.test> NOTIFY=NEVER",
            "RCPT To:<c@d.test>",
        ]
    );
    let mut no_dsn = SinkConfig::new("E");
    no_dsn.ehlo = Some(vec!["PIPELINING".into()]);
    let (_, seen) = run(no_dsn, &msg, &to).await;
    assert_eq!(
        &seen.commands[1..3],
        ["MAIL From:<s@x.test>", "RCPT To:<a@d.test>"]
    );
}

#[tokio::test]
async fn by_is_relayed_with_the_time_left_and_r_is_returned_where_it_cannot_be_kept() {
    use crate::queue::{ByMode, DeliverBy};
    let mut msg = message("s@x.test", b"x\n");
    // Arrived 30 s ago with BY=120;RT: 90 s (or, the clock ticking, 89) are left.
    msg.envelope.arrival = std::time::SystemTime::now() - Duration::from_secs(30);
    msg.envelope.params.deliver_by = Some(DeliverBy {
        seconds: 120,
        mode: ByMode::Return,
        trace: true,
    });
    let mut by = SinkConfig::new("B");
    by.ehlo = Some(vec!["PIPELINING".into(), "DELIVERBY".into()]);
    let (result, seen) = run(by, &msg, &rcpts(&["a@d.test"])).await;
    let mail = &seen.commands[1];
    assert!(
        mail == "MAIL From:<s@x.test> BY=90;RT" || mail == "MAIL From:<s@x.test> BY=89;RT",
        "{mail}"
    );
    assert!(matches!(result.outcomes[0], Outcome::Delivered { .. }));
    // A next hop without DELIVERBY cannot keep an R deadline: returned, nothing sent.
    let mut plain = SinkConfig::new("P");
    plain.ehlo = Some(vec!["PIPELINING".into()]);
    let (result, seen) = run(plain.clone(), &msg, &rcpts(&["a@d.test"])).await;
    assert!(
        !seen.commands.iter().any(|c| c.starts_with("MAIL")),
        "{seen:?}"
    );
    assert_eq!(
        result.outcomes[0],
        Outcome::Permanent {
            dsn: "5.4.7".into(),
            text: "Server does not support Deliver By".into()
        }
    );
    // Nor one whose minimum is above the time left.
    let mut slow = SinkConfig::new("S");
    slow.ehlo = Some(vec!["DELIVERBY 3600".into()]);
    let (result, _) = run(slow, &msg, &rcpts(&["a@d.test"])).await;
    assert!(
        matches!(&result.outcomes[0], Outcome::Permanent { dsn, text }
            if dsn == "5.4.7" && text.starts_with("Message can't be delivered in time; ")
                && text.ends_with(" < 3600")),
        "{:?}",
        result.outcomes[0]
    );
    // N goes on to any next hop; BY= only where it is offered.
    msg.envelope.params.deliver_by = Some(DeliverBy {
        seconds: -5,
        mode: ByMode::Notify,
        trace: false,
    });
    let (result, seen) = run(plain, &msg, &rcpts(&["a@d.test"])).await;
    assert_eq!(seen.commands[1], "MAIL From:<s@x.test>");
    assert!(matches!(result.outcomes[0], Outcome::Delivered { .. }));
}

#[tokio::test]
async fn a_refusing_greeting_defers_and_hands_over_to_the_next_host() {
    let mut cfg = SinkConfig::new("X");
    cfg.greeting = "421 4.3.2 sink.example.test Service not available".into();
    let (result, seen) = run(cfg, &message("s@x.test", b"x\n"), &rcpts(&["a@d.test"])).await;
    assert_eq!(seen.commands, ["QUIT"]);
    assert_eq!(
        result.outcomes,
        vec![Outcome::Temporary {
            dsn: "4.3.2".into(),
            text: "Deferred: 421 4.3.2 sink.example.test Service not available".into()
        }]
    );
    assert!(result.try_next_host);
}

#[tokio::test]
async fn a_refused_sender_applies_to_every_recipient() {
    for pipelining in [true, false] {
        let mut cfg = SinkConfig::new("X");
        cfg.mail_reply =
            "553 5.1.8 <s@x.test>... Domain of sender address s@x.test does not exist".into();
        if !pipelining {
            cfg.ehlo = Some(vec![]);
        }
        let (result, _) = run(
            cfg,
            &message("s@x.test", b"x\n"),
            &rcpts(&["a@d.test", "b@d.test"]),
        )
        .await;
        assert_eq!(result.outcomes.len(), 2);
        for o in &result.outcomes {
            assert!(
                matches!(o, Outcome::Permanent { dsn, .. } if dsn == "5.1.8"),
                "{o:?}"
            );
        }
        assert!(!result.try_next_host);
    }
}

#[tokio::test]
async fn a_connection_lost_during_data_defers_the_accepted_recipients() {
    let mut cfg = SinkConfig::new("X");
    cfg.drop_in_data = true;
    let (result, _) = run(
        cfg,
        &message("s@x.test", b"x\n"),
        &rcpts(&["a@d.test", "nosuch@d.test"]),
    )
    .await;
    assert_eq!(
        result.outcomes[0],
        Outcome::Temporary {
            dsn: "4.4.2".into(),
            text: "Deferred: Connection reset by mx.example.test.".into()
        }
    );
    assert!(matches!(&result.outcomes[1], Outcome::Permanent { .. }));
    assert!(
        !result.try_next_host,
        "a recipient was answered: no second host"
    );
}

#[tokio::test]
async fn a_silent_server_times_out_within_the_configured_wait() {
    let (client_io, _server_io) = tokio::io::duplex(1024);
    let msg = message("s@x.test", b"x\n");
    let to = rcpts(&["a@d.test"]);
    let job = Job {
        message: &msg,
        recipients: &to,
        helo_name: "h",
        addr: "127.0.0.1".parse().unwrap(),
        tls: None,
        auth: None,
        log_level: 9,
        on_accepted: None,
    };
    let t = ClientTimeouts::uniform(Duration::from_millis(100));
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        send_message(client_io, "mx.", &job, &t),
    )
    .await
    .expect("bounded by the greeting timeout");
    assert_eq!(
        result.outcomes,
        vec![Outcome::Temporary {
            dsn: "4.4.2".into(),
            text: "Deferred: Timeout waiting for input from mx. during client greeting".into()
        }]
    );
    assert!(result.try_next_host);
}

#[test]
fn replies_parse_line_by_line_and_across_reads() {
    let mut p = ReplyParser::default();
    p.feed(b"250-mx.example.test Hello\r\n250-PIPE");
    assert_eq!(p.next_reply(), Ok(None));
    p.feed(b"LINING\r\n250 SIZE 1000\r\n354 go\n");
    let ehlo = p.next_reply().unwrap().unwrap();
    assert_eq!(ehlo.code, 250);
    assert_eq!(
        ehlo.lines,
        ["mx.example.test Hello", "PIPELINING", "SIZE 1000"]
    );
    assert_eq!(
        Capabilities::from_ehlo(&ehlo),
        Capabilities {
            pipelining: true,
            size: Some(1000),
            eightbitmime: false,
            dsn: false,
            starttls: false,
            auth: vec![],
            deliverby: None,
        }
    );
    let go = p.next_reply().unwrap().unwrap();
    assert_eq!((go.code, go.text()), (354, "go"));
    assert_eq!(p.next_reply(), Ok(None));

    let bad: &[(&[u8], ReplyError)] = &[
        (b"hello\r\n", ReplyError::BadLine("hello".into())),
        (b"25\r\n", ReplyError::BadLine("25".into())),
        (b"250x\r\n", ReplyError::BadLine("250x".into())),
        (b"650 no\r\n", ReplyError::BadLine("650 no".into())),
        (b"250-a\r\n251 b\r\n", ReplyError::CodeChanged(250, 251)),
    ];
    for (input, want) in bad {
        let mut p = ReplyParser::default();
        p.feed(input);
        assert_eq!(
            p.next_reply().as_ref(),
            Err(want),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let mut p = ReplyParser::default();
    p.feed(&vec![b'2'; MAX_REPLY_LINE + 2]);
    assert_eq!(p.next_reply(), Err(ReplyError::LineTooLong));
}

#[test]
fn replies_become_outcomes_in_one_place() {
    let r = |code: u16, text: &str| SmtpReply {
        code,
        lines: vec![text.to_string()],
    };
    let cases = [
        (
            r(250, "2.0.0 Ok: queued as X"),
            delivered("2.0.0 Ok: queued as X"),
        ),
        (r(250, "ok"), delivered("ok")),
        (
            r(451, "4.3.0 try later"),
            Outcome::Temporary {
                dsn: "4.3.0".into(),
                text: "Deferred: 451 4.3.0 try later".into(),
            },
        ),
        (
            r(450, "mailbox busy"),
            Outcome::Temporary {
                dsn: "4.0.0".into(),
                text: "Deferred: 450 mailbox busy".into(),
            },
        ),
        (
            r(550, "5.7.1 relaying denied"),
            Outcome::Permanent {
                dsn: "5.7.1".into(),
                text: "550 5.7.1 relaying denied".into(),
            },
        ),
        // An enhanced code of the wrong class is not taken.
        (
            r(554, "2.0.0 confused"),
            Outcome::Permanent {
                dsn: "5.0.0".into(),
                text: "554 2.0.0 confused".into(),
            },
        ),
        (
            r(354, "go ahead"),
            Outcome::Temporary {
                dsn: "4.5.0".into(),
                text: "Deferred: unexpected reply 354 go ahead".into(),
            },
        ),
    ];
    for (reply, want) in cases {
        assert_eq!(Outcome::from_reply(&reply), want, "{reply:?}");
    }
}

#[test]
fn data_is_crlf_and_dot_stuffed() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
        (b"a\nb", b"a\r\nb\r\n.\r\n"),
        (b".\n..x\nend.\n", b"..\r\n...x\r\nend.\r\n.\r\n"),
        (b"crlf\r\nkept\r\n", b"crlf\r\nkept\r\n.\r\n"),
        (b"", b".\r\n"),
        (b"\n\n.", b"\r\n\r\n..\r\n.\r\n"),
        (b"bare\rcr\r", b"bare\rcr\r\r\n.\r\n"),
        (b"x\r\r\n.y", b"x\r\r\n..y\r\n.\r\n"),
    ];
    for (body, wire) in cases {
        assert_eq!(
            encode_data(body),
            *wire,
            "{:?}",
            String::from_utf8_lossy(body)
        );
        // The count made without encoding (SIZE= of an envelope sent ahead) agrees.
        assert_eq!(
            wire_len(body),
            wire.len() - 3,
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn a_reply_split_across_reads_and_several_in_one_read() {
    let mut p = ReplyParser::default();
    p.feed(b"250-first\r\n250 la");
    assert_eq!(p.next_reply().unwrap(), None);
    p.space()
        .extend_from_slice(b"st\r\n354 go on\r\n250 2.0.0 Ok\r\n");
    assert_eq!(p.next_reply().unwrap().unwrap().lines, ["first", "last"]);
    assert_eq!(p.next_reply().unwrap().unwrap().code, 354);
    assert_eq!(p.next_reply().unwrap().unwrap().code, 250);
    assert_eq!(p.next_reply().unwrap(), None);
    assert!(p.space().capacity() >= 4096, "room for a read");
}

#[test]
fn an_envelope_to_follow_is_made_only_for_a_pipelining_server_that_takes_the_message() {
    let msg = Message {
        envelope: crate::queue::Envelope::new(
            crate::queue::QueueId::new("6AO7R0vX027769").unwrap(),
            "s@example.test",
        ),
        body: b"Subject: x\n\nbody\n".to_vec(),
    };
    let rcpts = [Recipient::new("r@example.test")];
    let caps = Capabilities {
        pipelining: true,
        size: Some(0),
        ..Capabilities::default()
    };
    let env = follow_envelope(&msg, &rcpts, &caps).expect("pipelining");
    assert_eq!(
        String::from_utf8(env).unwrap(),
        "RSET\r\nMAIL From:<s@example.test> SIZE=20\r\nRCPT To:<r@example.test>\r\nDATA\r\n"
    );
    let plain = Capabilities::default();
    assert_eq!(follow_envelope(&msg, &rcpts, &plain), None, "no PIPELINING");
    let small = Capabilities {
        size: Some(10),
        ..caps
    };
    assert_eq!(
        follow_envelope(&msg, &rcpts, &small),
        None,
        "too large for it"
    );
}

#[test]
fn xtext_encodes_plus_equals_and_controls() {
    assert_eq!(xtext("abc"), "abc");
    assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
}

#[tokio::test]
async fn a_permanently_refusing_greeting_still_lets_the_next_host_try() {
    let mut cfg = SinkConfig::new("X");
    cfg.greeting = "554 5.3.2 sink.example.test not accepting mail".into();
    let (result, _) = run(cfg, &message("s@x.test", b"x\n"), &rcpts(&["a@d.test"])).await;
    assert!(matches!(&result.outcomes[0], Outcome::Permanent { dsn, .. } if dsn == "5.3.2"));
    assert!(
        result.try_next_host,
        "the host, not the message, was refused"
    );
}

#[test]
fn ehlo_keywords_for_starttls_and_auth_are_read_in_both_spellings() {
    let mut p = ReplyParser::default();
    p.feed(b"250-mx Hello\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 AUTH=CRAM-MD5 x\r\n");
    let caps = Capabilities::from_ehlo(&p.next_reply().unwrap().unwrap());
    assert!(caps.starttls);
    assert_eq!(caps.auth, ["PLAIN", "LOGIN", "CRAM-MD5", "x"]);
    // What is left unread is dropped by clear().
    p.feed(b"250 left over\r\n");
    p.clear();
    assert_eq!(p.next_reply(), Ok(None));
}
