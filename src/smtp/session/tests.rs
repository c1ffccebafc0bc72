//! Session tests: byte scripts in, replies compared with sendmail 8.17.1.9's recorded
//! transcripts (`shared/conformance/smtp/<case>.txt`, strings copied here).

use super::*;
use crate::smtp::command::Address;

/// A policy like the oracle's: everything is accepted except the user `nosuchuser` and
/// senders without a domain; `<POSTMASTER>` is shown as `<postmaster>`.
struct OraclePolicy;

impl Policy for OraclePolicy {
    fn check_mail(&self, ctx: &PolicyContext<'_>, sender: &Address, _p: &MailParams) -> Decision {
        if !sender.is_null() && sender.domain.is_none() {
            let reply = Reply::new(
                553,
                Some("5.5.4"),
                format!(
                    "{}... Domain name required for sender address {}",
                    sender.raw, sender.local
                ),
            );
            let log = format!(
                "ruleset=check_mail, arg1={}, relay={}, reject={reply}",
                sender.raw,
                ctx.client.display()
            );
            return Decision::Reject {
                reply,
                log: Some(log),
            };
        }
        Decision::Accept
    }

    fn check_rcpt(&self, _ctx: &PolicyContext<'_>, rcpt: &Address, _p: &RcptParams) -> Decision {
        if rcpt.local == "nosuchuser" {
            return Decision::Reject {
                reply: Reply::new(550, Some("5.1.1"), format!("{}... User unknown", rcpt.raw)),
                log: None,
            };
        }
        if rcpt.local.eq_ignore_ascii_case("postmaster") && rcpt.domain.is_none() {
            return Decision::AcceptAs("<postmaster>".into());
        }
        Decision::Accept
    }

    fn vrfy(&self, _ctx: &PolicyContext<'_>, arg: &str) -> Reply {
        if arg == "root" {
            Reply::new(250, Some("2.1.5"), "root <root@oracle.example.test>")
        } else {
            Reply::new(550, Some("5.1.1"), format!("{arg}... User unknown"))
        }
    }

    fn expn(&self, ctx: &PolicyContext<'_>, arg: &str) -> Reply {
        self.vrfy(ctx, arg)
    }
}

/// Part of sendmail's helpfile needed by the HELP tests (topics smtp, help, mail).
const HELPFILE: &str = "#vers\t2\n\
smtp\tThis is sendmail version $v\n\
smtp\tTopics:\n\
smtp\t\tHELO\tEHLO\tMAIL\tRCPT\tDATA\n\
help\tHELP [ <topic> ]\n\
help\t\tThe HELP command gives help info.\n\
mail\tMAIL From:<sender> [ <parameters> ]\n\
mail\t\tSpecifies the sender.  Parameters are ESMTP extensions.\n\
mail\t\tSee \"HELP DSN\" for details.\n";

fn v6_client() -> ClientInfo {
    ClientInfo {
        ip: Some("::1".parse().unwrap()),
        port: 40000,
        name: Some("localhost".into()),
    }
}

fn v4_client() -> ClientInfo {
    ClientInfo {
        ip: Some("127.0.0.1".parse().unwrap()),
        port: 40000,
        name: Some("localhost".into()),
    }
}

/// The oracle's MTA-v6 listener, with every extension the oracle offers except AUTH (and
/// none it does not: no CHUNKING, no SMTPUTF8).
fn oracle_ctx() -> SessionContext {
    SessionContext {
        hostname: "oracle.example.test".into(),
        greeting: "oracle.example.test Sendmail 8.17.1.9/8.17.1.9; Tue, 24 Nov 2026 06:53:20 GMT"
            .into(),
        daemon_name: "MTA-v6".into(),
        daemon_flags: String::new(),
        client: v6_client(),
        max_message_size: 0,
        max_headers_length: 32768,
        seven_bit_input: false,
        max_recipients: 0,
        features: Features {
            pipelining: true,
            expn: true,
            verb: true,
            eightbitmime: true,
            dsn: true,
            etrn: true,
            deliverby: true,
            deliver_by_min: 0,
            chunking: false,
            smtputf8: false,
        },
        privacy: Privacy::default(),
        log_level: 14,
        version: "8.17.1.9".into(),
        help: Some(Arc::new(HelpText::parse(HELPFILE))),
        connect_reject: None,
        policy: Arc::new(OraclePolicy),
        ids: Arc::new(QueueIdGen::new()),
        security: Default::default(),
        macros: Default::default(),
        bad_rcpt_throttle: 0,
    }
}

/// Reply lines (CRLF removed) of a list of actions.
fn replies(actions: &[Action]) -> Vec<String> {
    let mut out = Vec::new();
    for a in actions {
        if let Action::Reply(r) = a {
            let text = String::from_utf8(r.to_bytes()).unwrap();
            out.extend(text.split_terminator("\r\n").map(str::to_owned));
        }
    }
    out
}

/// Log line texts of a list of actions.
pub(super) fn logs(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(l) => Some(l.text.clone()),
            _ => None,
        })
        .collect()
}

/// Sends each line (no pipelining) and returns all actions.
fn script(s: &mut Session, lines: &[&str]) -> Vec<Action> {
    let mut all = Vec::new();
    for l in lines {
        all.extend(s.handle(l.as_bytes(), false));
    }
    all
}

/// Runs lines and returns the reply lines.
fn talk(s: &mut Session, lines: &[&str]) -> Vec<String> {
    replies(&script(s, lines))
}

const EHLO_V6: &[&str] = &[
    "250-oracle.example.test Hello localhost [IPv6:0:0:0:0:0:0:0:1], pleased to meet you",
    "250-ENHANCEDSTATUSCODES",
    "250-PIPELINING",
    "250-EXPN",
    "250-VERB",
    "250-8BITMIME",
    "250-SIZE",
    "250-DSN",
    "250-ETRN",
    "250-DELIVERBY",
    "250 HELP",
];

#[test]
fn greeting_and_ehlo_v6() {
    let mut s = Session::new(oracle_ctx());
    assert_eq!(
        String::from_utf8(s.greeting().to_bytes()).unwrap(),
        "220 oracle.example.test ESMTP Sendmail 8.17.1.9/8.17.1.9; Tue, 24 Nov 2026 06:53:20 GMT\r\n"
    );
    let got = talk(&mut s, &["EHLO client.example.test"]);
    assert_eq!(got, EHLO_V6);
    let actions = script(&mut s, &["QUIT"]);
    assert_eq!(
        replies(&actions),
        ["221 2.0.0 oracle.example.test closing connection"]
    );
    assert_eq!(
        logs(&actions),
        [
            "localhost [IPv6:0:0:0:0:0:0:0:1] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA-v6"
        ]
    );
    assert_eq!(actions.last(), Some(&Action::Close));
    assert!(s.is_closed());
}

#[test]
fn helo_v4_and_case_and_space() {
    let mut ctx = oracle_ctx();
    ctx.client = v4_client();
    ctx.daemon_name = "MTA-v4".into();
    let mut s = Session::new(ctx);
    assert_eq!(
        talk(&mut s, &["HELO client.example.test"]),
        ["250 oracle.example.test Hello localhost [127.0.0.1], pleased to meet you"]
    );
    let got = talk(
        &mut s,
        &[
            "eHlO client.example.test",
            "EHLO client.example.test   ",
            "EHLO\tclient.example.test",
        ],
    );
    assert_eq!(
        got.iter()
            .filter(|l| l.contains("pleased to meet you"))
            .count(),
        3
    );
}

#[test]
fn ehlo_without_etrn_on_msa() {
    let mut ctx = oracle_ctx();
    ctx.daemon_flags = "E".into();
    let mut s = Session::new(ctx);
    let got = talk(&mut s, &["EHLO client.example.test"]);
    assert!(!got.iter().any(|l| l.contains("ETRN")));
    let actions = script(&mut s, &["ETRN remote.example.test"]);
    assert_eq!(
        replies(&actions),
        ["502 5.7.0 Sorry, we do not allow this operation"]
    );
    assert_eq!(
        logs(&actions),
        ["localhost [IPv6:0:0:0:0:0:0:0:1]: ETRN remote.example.test [rejected]"]
    );
}

#[test]
fn etrn_when_offered() {
    let mut s = Session::new(oracle_ctx());
    assert_eq!(
        talk(
            &mut s,
            &["EHLO client.example.test", "ETRN remote.example.test"]
        )
        .last()
        .unwrap(),
        "250 2.0.0 Queuing for node remote.example.test started"
    );
}

#[test]
fn ehlo_lists_deliverby_with_its_minimum_and_takes_by_only_when_offered() {
    // The oracle: `DeliverByMin` 0 → `DELIVERBY`, 60 → `DELIVERBY 60`, -1 → none, and
    // then `BY=` is an unknown parameter (tests/differential/scenarios/21a-*, 21b-*).
    let last_two = |min: i64, deliverby: bool| {
        let mut ctx = oracle_ctx();
        ctx.features.deliver_by_min = min;
        ctx.features.deliverby = deliverby;
        let k = Session::new(ctx).ehlo_keywords();
        k[k.len() - 2..].to_vec()
    };
    assert_eq!(last_two(0, true), ["DELIVERBY", "HELP"]);
    assert_eq!(last_two(60, true), ["DELIVERBY 60", "HELP"]);
    assert_ne!(last_two(-1, false)[0], "DELIVERBY");
}

#[test]
fn ehlo_size_shows_the_limit() {
    let mut ctx = oracle_ctx();
    ctx.max_message_size = 1000;
    ctx.features = Features::default();
    let s = Session::new(ctx);
    assert_eq!(
        s.ehlo_keywords(),
        [
            "ENHANCEDSTATUSCODES",
            "PIPELINING",
            "8BITMIME",
            "SIZE 1000",
            "HELP"
        ]
    );
}

#[test]
fn helo_argument_errors() {
    let mut s = Session::new(oracle_ctx());
    let actions = script(&mut s, &["HELO", "EHLO", "EHLO bad_name!", "EHLO a b c"]);
    assert_eq!(
        replies(&actions),
        [
            "501 5.0.0 HELO requires domain address",
            "501 5.0.0 EHLO requires domain address",
            "501 5.0.0 Invalid domain name",
            "501 5.0.0 Invalid domain name",
        ]
    );
    assert_eq!(
        logs(&actions),
        [
            // The counter runs before the argument check, as in sendmail.
            "localhost [IPv6:0:0:0:0:0:0:0:1]: possible SMTP attack: command=HELO/EHLO, count=3",
            "invalid domain name (bad_name!) from localhost [IPv6:0:0:0:0:0:0:0:1]",
            "invalid domain name (a) from localhost [IPv6:0:0:0:0:0:0:0:1]",
        ]
    );
}

#[test]
fn third_helo_is_delayed_and_logged() {
    let mut s = Session::new(oracle_ctx());
    let actions = script(
        &mut s,
        &["EHLO a.test", "EHLO a.test", "EHLO a.test", "EHLO a.test"],
    );
    let delays: Vec<Duration> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Delay(d) => Some(*d),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [Duration::from_secs(1), Duration::from_secs(2)]);
    assert_eq!(
        logs(&actions),
        ["localhost [IPv6:0:0:0:0:0:0:0:1]: possible SMTP attack: command=HELO/EHLO, count=3"]
    );
}

#[test]
fn unknown_commands() {
    let mut s = Session::new(oracle_ctx());
    talk(&mut s, &["EHLO client.example.test"]);
    let lines: Vec<&[u8]> = vec![
        b"FOOBAR",
        b"",
        b"   ",
        b"\xffBAD",
        b"MAILFROM:<a@b>",
        b"XYZZY arg",
        b"TURN",
        b"SEND FROM:<a@b>",
        b"SOML FROM:<a@b>",
        b"SAML FROM:<a@b>",
        b"BDAT 10 LAST",
    ];
    let mut got = Vec::new();
    for l in lines {
        got.extend(replies(&s.handle(l, false)));
    }
    assert_eq!(
        got,
        [
            "500 5.5.1 Command unrecognized: \"FOOBAR\"",
            "500 5.5.1 Command unrecognized: \"\"",
            "500 5.5.1 Command unrecognized: \"   \"",
            "500 5.5.1 Command unrecognized: \"\x7fBAD\"",
            "500 5.5.1 Command unrecognized: \"MAILFROM:<a@b>\"",
            "500 5.5.1 Command unrecognized: \"XYZZY arg\"",
            "502 5.5.1 Command not implemented: \"TURN\"",
            "502 5.5.1 Command not implemented: \"SEND FROM:<a@b>\"",
            "502 5.5.1 Command not implemented: \"SOML FROM:<a@b>\"",
            "502 5.5.1 Command not implemented: \"SAML FROM:<a@b>\"",
            "500 5.5.1 Command unrecognized: \"BDAT 10 LAST\"",
        ]
    );
}

#[test]
fn too_many_bad_commands_close_the_connection() {
    let mut s = Session::new(oracle_ctx());
    let mut last = Vec::new();
    for _ in 0..26 {
        last = s.handle(b"FOO", false);
    }
    assert_eq!(
        replies(&last),
        ["421 4.7.0 oracle.example.test Too many bad commands; closing connection"]
    );
    assert!(s.is_closed());
}

#[test]
fn rset_noop_and_order() {
    let mut s = Session::new(oracle_ctx());
    let got = talk(
        &mut s,
        &[
            "RSET",
            "NOOP",
            "NOOP hello",
            "RSET now",
            "MAIL FROM:<sender@client.example.test>",
            "RSET",
            "RCPT TO:<root>",
            "VERB",
        ],
    );
    assert_eq!(
        got,
        [
            "250 2.0.0 Reset state",
            "250 2.0.0 OK",
            "250 2.0.0 OK",
            "250 2.0.0 Reset state",
            "250 2.1.0 <sender@client.example.test>... Sender ok",
            "250 2.0.0 Reset state",
            "503 5.0.0 Need MAIL before RCPT",
            "250 2.0.0 Verbose mode",
        ]
    );
    assert!(s.is_verbose());
}

#[test]
fn help_from_the_helpfile() {
    let mut s = Session::new(oracle_ctx());
    assert_eq!(
        talk(&mut s, &["HELP"]),
        [
            "214-2.0.0 This is sendmail version 8.17.1.9",
            "214-2.0.0 Topics:",
            "214-2.0.0 \tHELO\tEHLO\tMAIL\tRCPT\tDATA",
            "214 2.0.0 End of HELP info",
        ]
    );
    assert_eq!(
        talk(&mut s, &["HELP MAIL"]),
        [
            "214-2.0.0 MAIL From:<sender> [ <parameters> ]",
            "214-2.0.0 \tSpecifies the sender.  Parameters are ESMTP extensions.",
            "214-2.0.0 \tSee \"HELP DSN\" for details.",
            "214 2.0.0 End of HELP info",
        ]
    );
    assert_eq!(
        talk(&mut s, &["HELP nosuchtopic"]),
        ["504 5.3.0 HELP topic \"nosuchtopi\" unknown"]
    );
    assert_eq!(
        talk(&mut s, &["HELP help"]),
        [
            "214-2.0.0 HELP [ <topic> ]",
            "214-2.0.0 \tThe HELP command gives help info.",
            "214 2.0.0 End of HELP info",
        ]
    );
}

#[test]
fn help_without_helpfile() {
    let mut ctx = oracle_ctx();
    ctx.help = None;
    let mut s = Session::new(ctx);
    assert_eq!(
        talk(&mut s, &["HELP"]),
        ["502 5.3.0 Sendmail 8.17.1.9 -- HELP not implemented"]
    );
}

#[test]
fn mail_and_rcpt_syntax_errors() {
    let mut s = Session::new(oracle_ctx());
    talk(&mut s, &["EHLO client.example.test"]);
    let actions = script(
        &mut s,
        &[
            "MAIL FROM <sender@client.example.test>",
            "MAIL",
            "MAIL TO:<x@y>",
            "MAIL FROM:<sender@client.example.test",
            "MAIL FROM:sender@client.example.test>",
            "MAIL FROM:<a@b@c>",
            "MAIL FROM:<sender@client.example.test>",
            "RCPT TO <root>",
            "RCPT",
            "RCPT FROM:<root>",
            "RCPT TO:<root",
            "QUIT",
        ],
    );
    assert_eq!(
        replies(&actions),
        [
            "501 5.5.2 Syntax error in parameters scanning \"FROM\"",
            "501 5.5.2 Syntax error in parameters scanning \"\"",
            "501 5.5.2 Syntax error in parameters scanning \"TO\"",
            "553 5.0.0 <sender@client.example.test... Unbalanced '<'",
            "553 5.0.0 sender@client.example.test>... Unbalanced '>'",
            "553 5.1.3 <a@b@c>... Invalid route address",
            "250 2.1.0 <sender@client.example.test>... Sender ok",
            "501 5.5.2 Syntax error in parameters scanning \"TO\"",
            "501 5.5.2 Syntax error in parameters scanning \"\"",
            "501 5.5.2 Syntax error in parameters scanning \"FROM\"",
            "553 5.0.0 <root... Unbalanced '<'",
            "221 2.0.0 oracle.example.test closing connection",
        ]
    );
    assert_eq!(
        logs(&actions),
        [
            "Syntax error in parameters scanning \"TO\"",
            "Syntax error in parameters scanning \"\"",
            "Syntax error in parameters scanning \"FROM\"",
            "<root... Unbalanced '<'",
            "from=<sender@client.example.test>, size=0, class=0, nrcpts=0, proto=ESMTP, daemon=MTA-v6, relay=localhost [IPv6:0:0:0:0:0:0:0:1]",
        ]
    );
}

#[test]
fn unknown_params_and_smtputf8() {
    let mut s = Session::new(oracle_ctx());
    talk(&mut s, &["EHLO client.example.test"]);
    let actions = script(
        &mut s,
        &[
            "MAIL FROM:<sender@client.example.test> FOO=bar",
            "MAIL FROM:<sender@client.example.test> SMTPUTF8",
            "MAIL FROM:<sender@client.example.test>",
            "RCPT TO:<root> FOO=bar",
            "QUIT",
        ],
    );
    assert_eq!(
        replies(&actions),
        [
            "555 5.5.4 FOO parameter unrecognized",
            "555 5.5.4 SMTPUTF8 parameter unrecognized",
            "250 2.1.0 <sender@client.example.test>... Sender ok",
            "555 5.5.4 FOO parameter unrecognized",
            "221 2.0.0 oracle.example.test closing connection",
        ]
    );
    assert_eq!(logs(&actions)[0], "FOO parameter unrecognized");
}

#[test]
fn failed_mail_still_logs_the_sender() {
    // smtputf8-param: the sender of a refused MAIL is logged, and MAIL counts as issued.
    let mut s = Session::new(oracle_ctx());
    talk(&mut s, &["EHLO client.example.test"]);
    let actions = script(
        &mut s,
        &["MAIL FROM:<sender@client.example.test> SMTPUTF8", "QUIT"],
    );
    assert_eq!(
        logs(&actions),
        [
            "from=<sender@client.example.test>, size=0, class=0, nrcpts=0, proto=ESMTP, daemon=MTA-v6, relay=localhost [IPv6:0:0:0:0:0:0:0:1]"
        ]
    );
}

#[test]
fn policy_rejections_are_logged_by_the_policy() {
    let mut s = Session::new(oracle_ctx());
    talk(&mut s, &["EHLO client.example.test"]);
    let actions = script(&mut s, &["MAIL FROM:<sender>", "RCPT TO:<root>"]);
    assert_eq!(
        replies(&actions),
        [
            "553 5.5.4 <sender>... Domain name required for sender address sender",
            "503 5.0.0 Need MAIL before RCPT",
        ]
    );
    assert_eq!(
        logs(&actions),
        [
            "ruleset=check_mail, arg1=<sender>, relay=localhost [IPv6:0:0:0:0:0:0:0:1], reject=553 5.5.4 <sender>... Domain name required for sender address sender"
        ]
    );
}

#[test]
fn command_order_errors() {
    let mut s = Session::new(oracle_ctx());
    let got = talk(
        &mut s,
        &[
            "EHLO client.example.test",
            "DATA",
            "MAIL FROM:<sender@client.example.test>",
            "MAIL FROM:<sender@client.example.test>",
            "DATA",
            "RCPT TO:<root>",
            "EHLO client.example.test",
            "RCPT TO:<root>",
            "DATA",
        ],
    );
    let tail: Vec<&String> = got
        .iter()
        .filter(|l| !l.starts_with("250-") && !l.starts_with("250 HELP"))
        .collect();
    assert_eq!(
        tail,
        [
            "503 5.0.0 Need MAIL command",
            "250 2.1.0 <sender@client.example.test>... Sender ok",
            "503 5.5.0 Sender already specified",
            "503 5.0.0 Need RCPT (recipient)",
            "250 2.1.5 <root>... Recipient ok",
            "503 5.0.0 Need MAIL before RCPT",
            "503 5.0.0 Need MAIL command",
        ]
    );
}

#[test]
fn ehlo_resets_and_logs_the_transaction() {
    let mut ctx = oracle_ctx();
    ctx.client = v4_client();
    ctx.daemon_name = "MTA-v4".into();
    let mut s = Session::new(ctx);
    talk(
        &mut s,
        &[
            "EHLO client.example.test",
            "MAIL FROM:<sender@client.example.test>",
            "RCPT TO:<root>",
        ],
    );
    let actions = script(&mut s, &["EHLO client.example.test"]);
    assert_eq!(
        logs(&actions),
        [
            "to=<root>, delay=00:00:00, pri=0, stat=EHLO",
            "from=<sender@client.example.test>, size=0, class=0, nrcpts=1, proto=ESMTP, daemon=MTA-v4, relay=localhost [127.0.0.1]",
        ]
    );
}

#[test]
fn quit_aborts_recipients_in_reverse_order_and_duplicates_count_once() {
    let mut s = Session::new(oracle_ctx());
    talk(
        &mut s,
        &[
            "EHLO client.example.test",
            "MAIL FROM:<sender@client.example.test>",
            "RCPT TO:<postmaster>",
            "RCPT TO:<root>",
            "RCPT TO:<POSTMASTER>",
        ],
    );
    let actions = script(&mut s, &["QUIT"]);
    assert_eq!(
        logs(&actions),
        [
            "to=<root>, delay=00:00:00, pri=0, stat=aborted by sender",
            "to=<postmaster>, delay=00:00:00, pri=0, stat=aborted by sender",
            "from=<sender@client.example.test>, size=0, class=0, nrcpts=2, proto=ESMTP, daemon=MTA-v6, relay=localhost [IPv6:0:0:0:0:0:0:0:1]",
        ]
    );
}

/// Runs a whole transaction; returns (replies, the committed message).
fn transaction(s: &mut Session, body: &[u8]) -> (Vec<String>, Option<Message>) {
    let mut got = talk(
        s,
        &[
            "EHLO client.example.test",
            "MAIL FROM:<sender@client.example.test> BODY=8BITMIME",
        ],
    );
    got.extend(talk(
        s,
        &[
            "RCPT TO:<root>",
            "RCPT TO:<nosuchuser@oracle.example.test>",
            "RCPT TO:<bob@remote.example.test> NOTIFY=SUCCESS",
        ],
    ));
    let actions = s.handle(b"DATA", false);
    assert_eq!(actions.last(), Some(&Action::StartData));
    got.extend(replies(&actions));
    assert!(s.wants_data());
    let (used, actions) = s.data(body);
    assert_eq!(used, body.len());
    got.extend(replies(&actions));
    let msg = actions.into_iter().find_map(|a| match a {
        Action::Commit(m) => Some(*m),
        _ => None,
    });
    (got, msg)
}

#[test]
fn full_transaction_is_committed_before_250() {
    let mut s = Session::new(oracle_ctx());
    let (got, msg) = transaction(&mut s, b"Subject: x\r\n\r\n..dot\r\n.\r\n");
    let tail: Vec<&String> = got
        .iter()
        .filter(|l| !l.starts_with("250-") && !l.starts_with("250 HELP"))
        .collect();
    assert_eq!(
        tail,
        [
            "250 2.1.0 <sender@client.example.test>... Sender ok",
            "250 2.1.5 <root>... Recipient ok",
            "550 5.1.1 <nosuchuser@oracle.example.test>... User unknown",
            "250 2.1.5 <bob@remote.example.test>... Recipient ok",
            "354 End data with <CR><LF>.<CR><LF>",
        ]
    );
    let msg = msg.expect("a commit");
    assert_eq!(msg.sender.raw, "<sender@client.example.test>");
    assert_eq!(msg.recipients.len(), 2);
    assert!(msg.recipients[1].params.notify.unwrap().success);
    assert_eq!(msg.body, b"Subject: x\n\n.dot\n");
    assert_eq!(msg.protocol, "ESMTP");
    assert_eq!(msg.helo.as_deref(), Some("client.example.test"));
    assert_eq!(
        msg.from_log_line(Some("<id@x>")),
        "from=<sender@client.example.test>, size=17, class=0, nrcpts=2, msgid=<id@x>, bodytype=8BITMIME, proto=ESMTP, daemon=MTA-v6, relay=localhost [IPv6:0:0:0:0:0:0:0:1]"
    );
    // Commands are not taken while the commit is pending.
    assert!(s.handle(b"NOOP", false).is_empty());
    let qid = msg.qid.clone();
    assert_eq!(
        replies(&s.committed(Ok(()))),
        [format!("250 2.0.0 {qid} Message accepted for delivery")]
    );
    assert_eq!(s.stats().messages, 1);
    assert_eq!(s.stats().bytes, 17);
    assert_eq!(s.stats().rejected_rcpts, 1);
    // A new transaction may start.
    assert_eq!(
        talk(&mut s, &["MAIL FROM:<>"]),
        ["250 2.1.0 <>... Sender ok"]
    );
}

#[test]
fn failed_commit_gives_the_sinks_reply() {
    let mut s = Session::new(oracle_ctx());
    let (_, msg) = transaction(&mut s, b"x\r\n.\r\n");
    assert!(msg.is_some());
    assert_eq!(
        replies(&s.committed(Err(reply::local_error()))),
        ["451 4.3.0 Temporary system failure. Please try again later."]
    );
    assert_eq!(
        talk(&mut s, &["RCPT TO:<root>"]),
        ["503 5.0.0 Need MAIL before RCPT"]
    );
}

#[test]
fn bare_lf_in_data_closes_with_421() {
    let mut s = Session::new(oracle_ctx());
    talk(
        &mut s,
        &[
            "EHLO client.example.test",
            "MAIL FROM:<sender@client.example.test>",
            "RCPT TO:<root>",
            "DATA",
        ],
    );
    let (_, actions) = s.data(b"Subject: bare lf\r\n\r\nline one\nline two\r\n.\r\n");
    assert_eq!(
        replies(&actions),
        ["421 4.5.0 Bare linefeed (LF) not allowed"]
    );
    assert_eq!(
        logs(&actions),
        [
            "collect: relay=localhost, from=<sender@client.example.test>, info=Bare linefeed (LF) not allowed, where=body, status=tempfail",
            "from=<sender@client.example.test>, size=26, class=0, nrcpts=1, proto=ESMTP, daemon=MTA-v6, relay=localhost [IPv6:0:0:0:0:0:0:0:1]",
        ]
    );
    assert_eq!(actions.last(), Some(&Action::Close));
}

#[test]
fn bare_cr_in_data_closes_with_421() {
    let mut s = Session::new(oracle_ctx());
    talk(
        &mut s,
        &[
            "EHLO client.example.test",
            "MAIL FROM:<sender@client.example.test>",
            "RCPT TO:<root>",
            "DATA",
        ],
    );
    let (_, actions) =
        s.data(b"Subject: smuggle 4\r\n\r\nbody\r.\rMAIL FROM:<evil@client.example.test>\r\n.\r\n");
    assert_eq!(
        replies(&actions),
        ["421 4.5.0 Bare carriage return (CR) not allowed"]
    );
    assert!(logs(&actions)[1].contains("size=24"));
}

#[test]
fn message_over_the_limit_is_refused_at_the_end() {
    let mut ctx = oracle_ctx();
    ctx.max_message_size = 10;
    let mut s = Session::new(ctx);
    let got = talk(&mut s, &["MAIL FROM:<a@b.test> SIZE=11"]);
    assert_eq!(
        got,
        ["552 5.2.3 Message size exceeds fixed maximum message size (10)"]
    );
    talk(
        &mut s,
        &["MAIL FROM:<a@b.test> SIZE=5", "RCPT TO:<root>", "DATA"],
    );
    let (_, actions) = s.data(b"0123456789abc\r\n.\r\n");
    assert_eq!(
        replies(&actions),
        ["552 5.2.3 Message exceeds maximum fixed size (10)"]
    );
    // As sendmail 8.17.1.9 logs it (recorded with -bs -O MaxMessageSize=1000).
    assert_eq!(
        logs(&actions),
        [
            "from=<a@b.test>, size=14, class=0, nrcpts=1, proto=SMTP, daemon=MTA-v6, relay=localhost [IPv6:0:0:0:0:0:0:0:1]",
            "message size (14) exceeds maximum (10)",
            "to=<root>, delay=00:00:00, pri=0, stat=Message exceeds maximum fixed size (10)",
        ]
    );
    assert!(!s.is_closed());
    assert_eq!(
        talk(&mut s, &["RCPT TO:<root>"]),
        ["503 5.0.0 Need MAIL before RCPT"]
    );
}

#[test]
fn too_many_recipients() {
    let mut ctx = oracle_ctx();
    ctx.max_recipients = 1;
    let mut s = Session::new(ctx);
    let got = talk(
        &mut s,
        &["MAIL FROM:<a@b.test>", "RCPT TO:<root>", "RCPT TO:<alice>"],
    );
    assert_eq!(got[2], "452 4.5.3 Too many recipients");
}

#[test]
fn pipelined_input_after_data_is_a_protocol_error() {
    let mut s = Session::new(oracle_ctx());
    talk(
        &mut s,
        &[
            "EHLO client.example.test",
            "MAIL FROM:<sender@client.example.test>",
            "RCPT TO:<root>",
        ],
    );
    let actions = s.handle(b"DATA", true);
    assert_eq!(replies(&actions), ["554 5.5.0 SMTP protocol error"]);
    assert_eq!(
        logs(&actions),
        [
            "rejecting server DATA from localhost [IPv6:0:0:0:0:0:0:0:1] due to traffic before response",
            "from=<sender@client.example.test>, size=0, class=0, nrcpts=1, proto=ESMTP, daemon=MTA-v6, relay=localhost [IPv6:0:0:0:0:0:0:0:1]",
        ]
    );
    assert!(s.is_closed());
}

#[test]
fn pipelined_input_after_ehlo_rejects_the_rest() {
    let mut s = Session::new(oracle_ctx());
    assert_eq!(
        replies(&s.handle(b"EHLO localclient", true)),
        ["554 5.5.0 SMTP protocol error"]
    );
    assert_eq!(
        replies(&s.handle(b"MAIL FROM:<a@b.test>", true)),
        ["550 5.0.0 Command rejected"]
    );
    assert_eq!(
        replies(&s.handle(b"RCPT TO:<root>", true)),
        ["550 5.0.0 Command rejected"]
    );
    assert_eq!(
        replies(&s.handle(b"QUIT", false)),
        ["221 2.0.0 oracle.example.test closing connection"]
    );
}

#[test]
fn pipelined_mail_rcpt_after_helo_are_fine() {
    let mut s = Session::new(oracle_ctx());
    talk(&mut s, &["HELO client.example.test"]);
    assert_eq!(
        replies(&s.handle(b"MAIL FROM:<sender@client.example.test>", true)),
        ["250 2.1.0 <sender@client.example.test>... Sender ok"]
    );
    assert_eq!(
        replies(&s.handle(b"RCPT TO:<root>", true)),
        ["250 2.1.5 <root>... Recipient ok"]
    );
    assert_eq!(
        replies(&s.handle(b"DATA", false)),
        ["354 End data with <CR><LF>.<CR><LF>"]
    );
}

#[test]
fn lost_input_after_mail_is_logged() {
    let mut s = Session::new(oracle_ctx());
    talk(
        &mut s,
        &[
            "EHLO client.example.test",
            "MAIL FROM:<sender@client.example.test>",
        ],
    );
    let actions = s.connection_lost();
    assert_eq!(
        replies(&actions),
        ["421 4.4.1 oracle.example.test Lost input channel from localhost [IPv6:0:0:0:0:0:0:0:1]"]
    );
    assert_eq!(
        logs(&actions),
        [
            "lost input channel from localhost [IPv6:0:0:0:0:0:0:0:1] to MTA-v6 after mail",
            "from=<sender@client.example.test>, size=0, class=0, nrcpts=0, proto=ESMTP, daemon=MTA-v6, relay=localhost [IPv6:0:0:0:0:0:0:0:1]",
        ]
    );
}

#[test]
fn lost_input_without_mail_logs_only_did_not_issue_at_level_14() {
    let mut s = Session::new(oracle_ctx());
    talk(&mut s, &["EHLO client.example.test"]);
    let actions = s.connection_lost();
    assert_eq!(
        logs(&actions),
        [
            "localhost [IPv6:0:0:0:0:0:0:0:1] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA-v6"
        ]
    );
    let mut ctx = oracle_ctx();
    ctx.log_level = 20;
    let mut s = Session::new(ctx);
    let actions = s.connection_lost();
    assert_eq!(
        logs(&actions)[0],
        "lost input channel from localhost [IPv6:0:0:0:0:0:0:0:1] to MTA-v6 after startup"
    );
    let mut ctx = oracle_ctx();
    ctx.log_level = 5;
    let mut s = Session::new(ctx);
    assert!(logs(&s.connection_lost()).is_empty());
}

#[test]
fn vrfy_flood_is_logged_at_the_sixth() {
    let mut s = Session::new(oracle_ctx());
    talk(&mut s, &["EHLO client.example.test"]);
    let mut all = Vec::new();
    for _ in 0..8 {
        all.extend(s.handle(b"VRFY root", false));
    }
    assert!(
        replies(&all)
            .iter()
            .all(|r| r == "250 2.1.5 root <root@oracle.example.test>")
    );
    let l = logs(&all);
    assert_eq!(l.len(), 9);
    assert_eq!(
        l[5],
        "localhost [IPv6:0:0:0:0:0:0:0:1]: possible SMTP attack: command=VRFY, count=6"
    );
    assert_eq!(l[6], "localhost [IPv6:0:0:0:0:0:0:0:1]: VRFY root");
    // VRFY counts as a mail command for the "did not issue" line.
    assert!(logs(&script(&mut s, &["QUIT"])).is_empty());
}

#[test]
fn expn_variants() {
    let mut s = Session::new(oracle_ctx());
    let got = talk(&mut s, &["EXPN root", "EXPN nosuchuser", "EXPN"]);
    assert_eq!(
        got,
        [
            "250 2.1.5 root <root@oracle.example.test>",
            "550 5.1.1 nosuchuser... User unknown",
            "501 5.5.2 Argument required",
        ]
    );
}

#[test]
fn privacy_options() {
    let mut ctx = oracle_ctx();
    ctx.privacy = Privacy::parse("authwarnings,goaway");
    let mut s = Session::new(ctx);
    assert!(!s.ehlo_keywords().iter().any(|k| k == "EXPN" || k == "VERB"));
    // goaway leaves ETRN on (sendmail 8.17.1.9, differential 28b); noetrn takes it off.
    assert!(s.ehlo_keywords().iter().any(|k| k == "ETRN"));
    let mut no_etrn = oracle_ctx();
    no_etrn.privacy = Privacy::parse("goaway,noetrn");
    assert!(
        !Session::new(no_etrn)
            .ehlo_keywords()
            .iter()
            .any(|k| k == "ETRN")
    );
    let got = talk(
        &mut s,
        &[
            "VRFY root",
            "MAIL FROM:<a@b.test>",
            "EHLO x.test",
            "VRFY root",
            "EXPN root",
            "VERB",
        ],
    );
    let got: Vec<&String> = got
        .iter()
        .filter(|l| !l.starts_with("250-") && !l.starts_with("250 HELP"))
        .collect();
    assert_eq!(
        got,
        [
            // novrfy is checked before needvrfyhelo, as in sendmail.
            "252 2.5.2 Cannot VRFY user; try RCPT to attempt delivery (or try finger)",
            "503 5.0.0 Polite people say HELO first",
            "252 2.5.2 Cannot VRFY user; try RCPT to attempt delivery (or try finger)",
            "502 5.7.0 Sorry, we do not allow this operation",
            "502 5.7.0 Verbose unavailable",
        ]
    );
}

#[test]
fn starttls_and_auth_are_not_available() {
    let mut s = Session::new(oracle_ctx());
    assert_eq!(
        talk(&mut s, &["STARTTLS", "AUTH CRAM-MD5"]),
        [
            "454 4.3.3 TLS not available after start",
            "503 5.3.3 AUTH not available"
        ]
    );
}

#[test]
fn auth_required_daemon_refuses_mail() {
    let mut ctx = oracle_ctx();
    ctx.daemon_flags = "Ea".into();
    let mut s = Session::new(ctx);
    assert_eq!(
        talk(&mut s, &["MAIL FROM:<a@b.test>"]),
        ["530 5.7.0 Authentication required"]
    );
}

#[test]
fn connect_rejected_client_gets_nullserver_answers() {
    let mut ctx = oracle_ctx();
    ctx.client = ClientInfo {
        ip: Some("127.0.0.9".parse().unwrap()),
        port: 1,
        name: Some("rejected.example.test".into()),
    };
    ctx.connect_reject = Some(Reply::new(550, Some("5.7.1"), "Access denied"));
    let mut s = Session::new(ctx);
    let actions = script(
        &mut s,
        &[
            "EHLO rejected.example.test",
            "MAIL FROM:<a@client.example.test>",
            "RCPT TO:<root>",
            "DATA",
            "QUIT",
        ],
    );
    assert_eq!(
        replies(&actions),
        [
            "250-oracle.example.test Hello rejected.example.test [127.0.0.9], pleased to meet you",
            "250 ENHANCEDSTATUSCODES",
            "550 5.7.1 Access denied",
            "550 5.7.1 Access denied",
            "550 5.7.1 Access denied",
            "221 2.0.0 oracle.example.test closing connection",
        ]
    );
    assert!(logs(&actions).is_empty());
}

#[test]
fn mail_before_helo_is_smtp() {
    let mut ctx = oracle_ctx();
    ctx.privacy = Privacy::parse("authwarnings");
    let mut s = Session::new(ctx);
    let actions = script(&mut s, &["MAIL FROM:<sender@client.example.test>"]);
    assert_eq!(
        logs(&actions),
        [
            "Authentication-Warning: oracle.example.test: localhost [IPv6:0:0:0:0:0:0:0:1] didn't use HELO protocol"
        ]
    );
    talk(&mut s, &["RCPT TO:<root@oracle.example.test>", "DATA"]);
    let (_, actions) = s.data(b"x\r\n.\r\n");
    let Some(Action::Commit(m)) = actions.into_iter().find(|a| matches!(a, Action::Commit(_)))
    else {
        panic!("no commit");
    };
    assert_eq!(m.protocol, "SMTP");
    assert_eq!(m.helo, None);
}

#[test]
fn line_too_long_closes() {
    let mut s = Session::new(oracle_ctx());
    let actions = s.line_too_long(5007);
    assert_eq!(
        replies(&actions),
        [
            "421 4.7.0 oracle.example.test Command too long, possible attack localhost [IPv6:0:0:0:0:0:0:0:1]"
        ]
    );
    assert_eq!(
        logs(&actions)[0],
        "localhost [IPv6:0:0:0:0:0:0:0:1]: SMTP violation, input too long: 5007"
    );
    assert!(s.is_closed());
}

#[test]
fn shutdown_says_421() {
    let mut s = Session::new(oracle_ctx());
    let actions = s.shutdown();
    assert_eq!(
        replies(&actions),
        ["421 4.3.2 oracle.example.test Shutting down"]
    );
    assert!(s.is_closed());
}

#[test]
fn client_rendering() {
    let cases = [
        (
            Some("::1"),
            Some("localhost"),
            "localhost [IPv6:0:0:0:0:0:0:0:1]",
            "localhost",
        ),
        (Some("127.0.0.9"), None, "[127.0.0.9]", "[127.0.0.9]"),
        (Some("::ffff:127.0.0.1"), None, "[127.0.0.1]", "[127.0.0.1]"),
        (
            Some("2001:db8::10"),
            None,
            "[IPv6:2001:db8:0:0:0:0:0:10]",
            "[IPv6:2001:db8:0:0:0:0:0:10]",
        ),
        (
            None,
            Some("root@localhost"),
            "root@localhost",
            "root@localhost",
        ),
    ];
    for (ip, name, display, host) in cases {
        let c = ClientInfo {
            ip: ip.map(|i| i.parse().unwrap()),
            port: 0,
            name: name.map(str::to_owned),
        };
        assert_eq!(c.display(), display);
        assert_eq!(c.host_name(), host);
    }
}

#[test]
fn ipv6_groups_are_lower_hex_without_leading_zeros() {
    let ip: IpAddr = "fe80:a:ab0:abcd:f00f:100:ffff:0".parse().unwrap();
    assert_eq!(format_ip(ip), "IPv6:fe80:a:ab0:abcd:f00f:100:ffff:0");
    // every 16-bit value, against the standard library's `{:x}`
    for v in 0..=u16::MAX {
        let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, v, 1));
        assert_eq!(format_ip(ip), format!("IPv6:2001:db8:0:0:0:0:{v:x}:1"));
    }
}

#[test]
fn delays_format_like_sendmail() {
    assert_eq!(format_delay(Duration::from_secs(0)), "00:00:00");
    assert_eq!(format_delay(Duration::from_secs(3723)), "01:02:03");
    assert_eq!(
        format_delay(Duration::from_secs(2 * 86400 + 5)),
        "2d+00:00:05"
    );
}

#[test]
fn http_proxy_first_command_is_refused() {
    let mut s = Session::new(oracle_ctx());
    let actions = script(&mut s, &["GET / HTTP/1.0"]);
    assert_eq!(
        replies(&actions),
        ["421 4.7.0 oracle.example.test Rejecting open proxy localhost [IPv6:0:0:0:0:0:0:0:1]"]
    );
    assert_eq!(
        logs(&actions)[0],
        "localhost [IPv6:0:0:0:0:0:0:0:1]: probable open proxy: command=GET / HTTP/1.0"
    );
    assert!(s.is_closed());
    // Only the first command is checked.
    let mut s = Session::new(oracle_ctx());
    assert_eq!(
        talk(&mut s, &["NOOP", "GET / HTTP/1.0"])[1],
        "500 5.5.1 Command unrecognized: \"GET / HTTP/1.0\""
    );
}

#[test]
fn help_topics_match_by_prefix() {
    let mut s = Session::new(oracle_ctx());
    // "HELP MA" matches the `mail` lines, as sendmail's strncmp does.
    assert_eq!(talk(&mut s, &["HELP MA"]).len(), 4);
    assert_eq!(
        talk(&mut s, &["HELP NOSUCHTOPIC"]),
        ["504 5.3.0 HELP topic \"nosuchtopi\" unknown"]
    );
}

#[test]
fn verb_needs_expn_offered() {
    let mut ctx = oracle_ctx();
    ctx.features.expn = false;
    let mut s = Session::new(ctx);
    assert_eq!(talk(&mut s, &["VERB"]), ["502 5.7.0 Verbose unavailable"]);
    assert!(!s.is_verbose());
}

#[test]
fn starttls_variants() {
    let mut s = Session::new(oracle_ctx());
    assert_eq!(
        talk(&mut s, &["STARTTLS now"]),
        ["501 5.5.2 Syntax error (no parameters allowed)"]
    );
    let mut ctx = oracle_ctx();
    ctx.daemon_flags = "S".into();
    let mut s = Session::new(ctx);
    assert_eq!(talk(&mut s, &["STARTTLS"]), ["503 5.5.0 TLS not available"]);
}

#[test]
fn etrn_without_argument() {
    let mut s = Session::new(oracle_ctx());
    assert_eq!(talk(&mut s, &["ETRN"]), ["500 5.5.2 Parameter required"]);
}

#[test]
fn bogus_commands_are_logged() {
    let mut s = Session::new(oracle_ctx());
    let actions = script(&mut s, &["WIZ"]);
    assert_eq!(
        replies(&actions),
        ["500 5.5.1 Command unrecognized: \"WIZ\""]
    );
    assert_eq!(
        logs(&actions),
        ["\"wiz\" command from localhost [IPv6:0:0:0:0:0:0:0:1] (IPv6:0:0:0:0:0:0:0:1)"]
    );
}

#[test]
fn connect_refused_with_421_gets_no_greeting() {
    let mut ctx = oracle_ctx();
    ctx.connect_reject = Some(Reply::new(421, None, "oracle.example.test go away"));
    let mut s = Session::new(ctx);
    assert_eq!(s.greeting().to_string(), "421 oracle.example.test go away");
    assert!(s.is_closed());
}

#[test]
fn lost_input_names_the_last_known_command() {
    let mut ctx = oracle_ctx();
    ctx.log_level = 20;
    let mut s = Session::new(ctx);
    talk(&mut s, &["NOOP", "FOOBAR"]);
    assert_eq!(
        logs(&s.connection_lost())[0],
        "lost input channel from localhost [IPv6:0:0:0:0:0:0:0:1] to MTA-v6 after startup"
    );
}

#[test]
fn after_a_pipelining_violation_ehlo_offers_only_enhancedstatuscodes() {
    let mut s = Session::new(oracle_ctx());
    let actions = s.handle(b"EHLO a.test", true);
    assert_eq!(replies(&actions), ["554 5.5.0 SMTP protocol error"]);
    assert_eq!(
        logs(&actions),
        [
            "rejecting server EHLO from localhost [IPv6:0:0:0:0:0:0:0:1] due to traffic before response"
        ]
    );
    assert_eq!(
        talk(&mut s, &["EHLO a.test", "NOOP", "HELP"]),
        [
            "250-oracle.example.test Hello localhost [IPv6:0:0:0:0:0:0:0:1], pleased to meet you",
            "250 ENHANCEDSTATUSCODES",
            "250 2.0.0 OK",
            "550 5.0.0 Command rejected",
        ]
    );
    // No "did not issue" line for a refused session.
    assert!(logs(&script(&mut s, &["QUIT"])).is_empty());
}

#[test]
fn command_lines_are_logged_above_level_14() {
    let mut ctx = oracle_ctx();
    ctx.log_level = 15;
    let mut s = Session::new(ctx);
    assert_eq!(logs(&script(&mut s, &["NOOP"])), ["<-- NOOP"]);
}

mod filters;
mod receipt;

/// BadRcptThrottle=3 (Debian's cf), as the oracle does it (tests/differential
/// 27-bad-rcpt-throttle): the fourth RCPT after three refused ones waits a second and logs
/// the flood once; every later RCPT waits too.
#[test]
fn bad_rcpt_throttle_delays_and_logs_once() {
    let mut ctx = oracle_ctx();
    ctx.bad_rcpt_throttle = 3;
    let mut s = Session::new(ctx);
    script(
        &mut s,
        &["EHLO client.example.test", "MAIL FROM:<a@b.test>"],
    );
    let mut delays = Vec::new();
    let mut flood_logs = 0;
    for rcpt in [
        "nosuchuser",
        "nosuchuser",
        "nosuchuser",
        "nosuchuser",
        "root",
    ] {
        let actions = script(&mut s, &[&format!("RCPT TO:<{rcpt}>")]);
        delays.push(
            actions
                .iter()
                .filter(|a| matches!(a, Action::Delay(d) if *d == Duration::from_secs(1)))
                .count(),
        );
        flood_logs += logs(&actions)
            .iter()
            .filter(|l| l.ends_with(": Possible SMTP RCPT flood, throttling."))
            .count();
    }
    assert_eq!(delays, [0, 0, 0, 1, 1]);
    assert_eq!(flood_logs, 1);
}

/// FEATURE(greet_pause): talk before the greeting gets sendmail's 554 greeting, its log
/// line, and "Command rejected" for every transaction command.
#[test]
fn pre_greeting_traffic_is_refused() {
    let mut s = Session::new(oracle_ctx());
    let actions = s.pre_greeting_traffic(Duration::from_millis(300));
    assert_eq!(
        logs(&actions),
        [
            "rejecting commands from localhost [IPv6:0:0:0:0:0:0:0:1] due to pre-greeting traffic after 0 seconds"
        ]
    );
    let greeting = String::from_utf8(s.greeting().to_bytes()).unwrap();
    assert_eq!(
        greeting,
        "554 oracle.example.test ESMTP not accepting messages\r\n"
    );
    assert_eq!(
        talk(&mut s, &["MAIL FROM:<a@b.test>"]),
        ["550 5.0.0 Command rejected"]
    );
}
