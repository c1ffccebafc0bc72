//! Session tests for what sendmail 8.17 does not do or does not record here: BDAT
//! (RFC 3030), SMTPUTF8 (RFC 6531), and the message limits (MaxHeadersLength measured
//! against the oracle, the hard size cap).

use super::*;

/// The oracle's listener with CHUNKING and SMTPUTF8 offered.
fn ctx() -> SessionContext {
    let mut ctx = oracle_ctx();
    ctx.features.chunking = true;
    ctx.features.smtputf8 = true;
    ctx
}

/// A session after EHLO, MAIL and RCPT.
fn ready(ctx: SessionContext) -> Session {
    let mut s = Session::new(ctx);
    talk(
        &mut s,
        &[
            "EHLO client.example.test",
            "MAIL FROM:<sender@client.example.test>",
            "RCPT TO:<root>",
        ],
    );
    s
}

/// Sends a BDAT command and its octets; returns all actions.
fn bdat(s: &mut Session, cmd: &str, octets: &[u8]) -> Vec<Action> {
    let mut out = s.handle(cmd.as_bytes(), false);
    let mut rest = octets;
    while s.wants_data() && !rest.is_empty() {
        let (used, actions) = s.data(rest);
        rest = &rest[used..];
        out.extend(actions);
    }
    assert!(rest.is_empty(), "octets left over: {rest:?}");
    out
}

fn committed(actions: &[Action]) -> Option<&Message> {
    actions.iter().find_map(|a| match a {
        Action::Commit(m) => Some(&**m),
        _ => None,
    })
}

#[test]
fn ehlo_offers_chunking_and_smtputf8_only_when_enabled() {
    let s = Session::new(ctx());
    let k = s.ehlo_keywords();
    let at = |w: &str| k.iter().position(|x| x == w);
    // sendmail's EAI builds put SMTPUTF8 after DSN, before ETRN.
    assert!(at("DSN") < at("SMTPUTF8") && at("SMTPUTF8") < at("ETRN"));
    assert!(at("CHUNKING").is_some());
    let plain = Session::new(oracle_ctx()).ehlo_keywords();
    assert!(!plain.iter().any(|x| x == "CHUNKING" || x == "SMTPUTF8"));
}

#[test]
fn chunks_make_one_message_committed_like_data() {
    let mut s = ready(ctx());
    let first = bdat(&mut s, "BDAT 17", b"Subject: x\r\n\r\n.a\r");
    assert_eq!(replies(&first), ["250 2.0.0 17 octets received"]);
    let last = bdat(&mut s, "BDAT 5 LAST", b"\nb\r\nc");
    let msg = committed(&last).expect("a commit");
    assert_eq!(msg.body, b"Subject: x\n\n.a\nb\nc\n");
    assert_eq!(msg.protocol, "ESMTP");
    assert!(replies(&last).is_empty(), "250 only once the queue says so");
    let qid = msg.qid.clone();
    assert_eq!(
        replies(&s.committed(Ok(()))),
        [format!("250 2.0.0 {qid} Message accepted for delivery")]
    );
    assert_eq!(s.stats().messages, 1);
}

#[test]
fn refused_bdat_octets_are_still_read() {
    let mut s = Session::new(ctx());
    talk(&mut s, &["EHLO client.example.test"]);
    let a = bdat(&mut s, "BDAT 12 LAST", b"MAIL FROM:<>");
    assert_eq!(replies(&a), ["503 5.0.0 Need MAIL command"]);
    talk(&mut s, &["MAIL FROM:<sender@client.example.test>"]);
    let a = bdat(&mut s, "BDAT 4", b"RSET");
    assert_eq!(replies(&a), ["503 5.0.0 Need RCPT (recipient)"]);
    assert_eq!(
        talk(&mut s, &["RCPT TO:<root>"]),
        ["250 2.1.5 <root>... Recipient ok"]
    );
    assert!(committed(&bdat(&mut s, "BDAT 0 LAST", b"")).is_some());
}

#[test]
fn data_after_bdat_is_refused_and_rset_drops_the_chunks() {
    let mut s = ready(ctx());
    bdat(&mut s, "BDAT 3", b"a\r\n");
    assert_eq!(
        talk(&mut s, &["DATA"]),
        ["503 5.5.1 DATA not allowed after BDAT"]
    );
    assert_eq!(talk(&mut s, &["RSET"]), ["250 2.0.0 Reset state"]);
    talk(
        &mut s,
        &["MAIL FROM:<sender@client.example.test>", "RCPT TO:<root>"],
    );
    let msg = bdat(&mut s, "BDAT 3 LAST", b"b\r\n");
    assert_eq!(committed(&msg).unwrap().body, b"b\n");
}

#[test]
fn bad_bdat_arguments_and_bdat_not_offered() {
    let mut s = ready(ctx());
    for line in ["BDAT", "BDAT x", "BDAT 10 FIRST", "BDAT -1"] {
        assert_eq!(
            talk(&mut s, &[line]),
            ["501 5.5.4 Syntax: BDAT <octets> [LAST]"],
            "{line}"
        );
    }
    let mut s = ready(oracle_ctx());
    assert_eq!(
        talk(&mut s, &["BDAT 1 LAST"]),
        ["500 5.5.1 Command unrecognized: \"BDAT 1 LAST\""]
    );
}

#[test]
fn bare_lf_in_a_chunk_closes_as_in_data() {
    let mut s = ready(ctx());
    let a = bdat(&mut s, "BDAT 8 LAST", b"a\r\nb\nc\r\n");
    assert_eq!(replies(&a), ["421 4.5.0 Bare linefeed (LF) not allowed"]);
    assert!(logs(&a)[0].starts_with("collect: relay=localhost, from=<sender@client.example.test>, info=Bare linefeed (LF) not allowed, where=body"));
    assert_eq!(a.last(), Some(&Action::Close));
}

#[test]
fn the_size_limit_holds_across_chunks() {
    let mut c = ctx();
    c.max_message_size = 20;
    let mut s = ready(c);
    assert_eq!(
        replies(&bdat(&mut s, "BDAT 12", b"0123456789\r\n")),
        ["250 2.0.0 12 octets received"]
    );
    let a = bdat(&mut s, "BDAT 12", b"0123456789\r\n");
    assert_eq!(
        replies(&a),
        ["552 5.2.3 Message exceeds maximum fixed size (20)"]
    );
    assert_eq!(logs(&a)[1], "message size (22) exceeds maximum (20)");
    // The transaction is over: a chunk the client should not have sent is read and refused.
    assert_eq!(
        replies(&bdat(&mut s, "BDAT 3 LAST", b"x\r\n")),
        ["503 5.0.0 Need MAIL command"]
    );
}

#[test]
fn without_max_message_size_the_hard_cap_refuses() {
    let mut s = Session::new(ctx());
    talk(&mut s, &["EHLO client.example.test"]);
    let over = crate::smtp::body::HARD_MAX_MESSAGE + 1;
    assert_eq!(
        talk(
            &mut s,
            &[&format!(
                "MAIL FROM:<sender@client.example.test> SIZE={over}"
            )]
        ),
        [format!(
            "552 5.2.3 Message size exceeds fixed maximum message size ({})",
            over - 1
        )]
    );
}

#[test]
fn headers_over_max_headers_length_are_refused_as_sendmail_does() {
    let mut c = oracle_ctx();
    c.max_headers_length = 40;
    let mut s = ready(c);
    talk(&mut s, &["DATA"]);
    // 20 + 20 bytes of header lines, then the empty line: 41.
    let (_, a) = s.data(b"Subject: 0123456789\r\nX-Header: 012345678\r\n\r\nbody\r\n.\r\n");
    assert_eq!(replies(&a), ["552 5.6.0 Headers too large (40 max)"]);
    assert_eq!(
        logs(&a),
        [
            "headers too large (40 max) from localhost during message collect",
            "from=<sender@client.example.test>, size=46, class=0, nrcpts=1, proto=ESMTP, daemon=MTA-v6, relay=localhost [IPv6:0:0:0:0:0:0:0:1]",
            "to=<root>, delay=00:00:00, pri=0, stat=Headers too large (40 max)",
        ]
    );
    // 40 exactly is accepted.
    let mut c = oracle_ctx();
    c.max_headers_length = 41;
    let mut s = ready(c);
    talk(&mut s, &["DATA"]);
    let (_, a) = s.data(b"Subject: 0123456789\r\nX-Header: 012345678\r\n\r\nbody\r\n.\r\n");
    assert!(committed(&a).is_some());
}

#[test]
fn utf8_addresses_need_smtputf8_on_mail() {
    let mut s = Session::new(ctx());
    talk(&mut s, &["EHLO client.example.test"]);
    assert_eq!(
        talk(&mut s, &["MAIL FROM:<jösé@bücher.example>"]),
        ["553 5.6.7 <jösé@bücher.example>... Non-ASCII address requires SMTPUTF8"]
    );
    assert_eq!(
        talk(
            &mut s,
            &[
                "MAIL FROM:<sender@client.example.test>",
                "RCPT TO:<ü@例え.test>",
                "RSET",
                "MAIL FROM:<jösé@bücher.example> SMTPUTF8",
                "RCPT TO:<ü@例え.test>",
                "DATA",
            ]
        ),
        [
            "250 2.1.0 <sender@client.example.test>... Sender ok",
            "553 5.6.7 <ü@例え.test>... Non-ASCII address requires SMTPUTF8",
            "250 2.0.0 Reset state",
            "250 2.1.0 <jösé@bücher.example>... Sender ok",
            "250 2.1.5 <ü@例え.test>... Recipient ok",
            "354 End data with <CR><LF>.<CR><LF>",
        ]
    );
    let (_, a) = s.data("Subject: ü\r\n\r\n.\r\n".as_bytes());
    let msg = committed(&a).unwrap();
    assert!(msg.mail_params.smtputf8);
    assert_eq!(msg.protocol, "UTF8SMTP");
}

#[test]
fn without_the_option_smtputf8_is_an_unknown_parameter_and_utf8_is_refused() {
    let mut s = Session::new(oracle_ctx());
    assert_eq!(
        talk(
            &mut s,
            &[
                "EHLO client.example.test",
                "MAIL FROM:<jösé@bücher.example> SMTPUTF8",
                "MAIL FROM:<jösé@bücher.example>",
            ]
        )[EHLO_V6.len()..],
        [
            "555 5.5.4 SMTPUTF8 parameter unrecognized",
            "553 5.6.7 <jösé@bücher.example>... Non-ASCII address requires SMTPUTF8",
        ]
    );
}

/// Feeds `wire` to a session the way the driver does (lines in command state, octets in
/// DATA/BDAT state), `step` bytes at a time; returns the replies (a commit is acknowledged).
fn replay(wire: &[u8], step: usize) -> Vec<String> {
    let mut s = Session::new(ctx());
    let mut pending: Vec<u8> = Vec::new();
    let mut got = Vec::new();
    for piece in wire.chunks(step) {
        pending.extend_from_slice(piece);
        loop {
            let actions = if s.wants_data() && !pending.is_empty() {
                let (used, actions) = s.data(&pending);
                pending.drain(..used);
                actions
            } else if let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let line = pending[..pos]
                    .strip_suffix(b"\r")
                    .unwrap_or(&pending[..pos]);
                let actions = s.handle(line, false);
                pending.drain(..=pos);
                actions
            } else {
                break;
            };
            got.extend(replies(&actions));
            if committed(&actions).is_some() {
                got.extend(replies(&s.committed(Ok(()))));
            }
        }
    }
    // Queue ids differ between runs.
    got.into_iter()
        .map(|r| match r.strip_suffix(" Message accepted for delivery") {
            Some(_) => "250 accepted".to_string(),
            None => r,
        })
        .collect()
}

#[test]
fn pipelined_chunks_give_the_same_replies_however_the_input_is_split() {
    let wire: &[u8] = b"EHLO client.example.test\r\n\
MAIL FROM:<sender@client.example.test>\r\nRCPT TO:<root>\r\n\
BDAT 14\r\nSubject: a\r\n\r\nBDAT 12 LAST\r\nQUIT\r\nRSET\r\n\
BDAT 6 LAST\r\nNOOP\r\nNOOP\r\n\
MAIL FROM:<sender@client.example.test>\r\nRCPT TO:<root>\r\nDATA\r\n";
    let whole = replay(wire, wire.len());
    assert_eq!(
        whole[whole.len() - 9..],
        [
            "250 2.1.0 <sender@client.example.test>... Sender ok",
            "250 2.1.5 <root>... Recipient ok",
            "250 2.0.0 14 octets received",
            "250 accepted",
            "503 5.0.0 Need MAIL command",
            "250 2.0.0 OK",
            "250 2.1.0 <sender@client.example.test>... Sender ok",
            "250 2.1.5 <root>... Recipient ok",
            "354 End data with <CR><LF>.<CR><LF>",
        ]
    );
    for step in 1..wire.len() {
        assert_eq!(replay(wire, step), whole, "input split every {step} bytes");
    }
}
