//! Protocol abuse (issue 6 item 4): open-relay tricks, SMTP smuggling, NUL and 8-bit bytes
//! in commands, oversize lines, command floods and pipelining abuse, against the real
//! daemon with the built-in relay rules. Every case checks the exact replies and that no
//! message was queued or relayed: the daemon's smart host is a listener of the test that
//! must never be connected to.
//!
//! The replies are sendmail 8.17.1.9's (the oracle, asked with the same sessions from an
//! outside address); where this daemon's built-in rules answer differently, it is said at
//! the case. The recorded transcripts in `tests/data/conformance/smtp/` (replayed by
//! tests/conformance_smtp.rs) cover the base cases; these are the variants around them.

mod support;

use std::net::{SocketAddr, TcpListener};

use support::{Daemon, Smtp};

/// A daemon for `mta.example.test` whose smart host is `trap` (nothing may reach it).
fn daemon(trap: &TcpListener) -> (Daemon, SocketAddr) {
    let port = trap.local_addr().unwrap().port();
    let cf = format!(
        "Djmta.example.test\n\
         DSrelay:[127.0.0.1]\n\
         O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1\n\
         Mrelay, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=2040, T=DNS/RFC822/SMTP, A=TCP $h {port}\n"
    );
    let mut d = Daemon::start(&cf, &[]);
    let addr = d.addr_of("MTA-v4");
    (d, addr)
}

fn trap() -> TcpListener {
    let t = TcpListener::bind("127.0.0.1:0").unwrap();
    t.set_nonblocking(true).unwrap();
    t
}

/// Nothing was queued (no committed message in the log, an empty queue) and nothing
/// connected to the smart host.
fn assert_nothing_queued_or_relayed(d: &Daemon, trap: &TcpListener) {
    let log = d.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains(" from=") && l.contains("msgid=")),
        "a message was committed:\n{log}"
    );
    let q = d.mailq();
    assert!(q.contains("is empty"), "{q}");
    assert!(
        trap.accept().is_err(),
        "something connected to the smart host"
    );
}

/// Greeting and EHLO, as client `source`.
fn session(addr: SocketAddr, source: &str) -> Smtp {
    let mut c = Smtp::connect_from(addr, source);
    assert!(c.reply()[0].starts_with("220 mta.example.test ESMTP"));
    assert!(c.cmd("EHLO client.example.test")[0].starts_with("250-"));
    c
}

#[test]
fn relay_tricks_from_outside_are_refused() {
    let t = trap();
    let (mut d, addr) = daemon(&t);
    // 127.0.0.9 is on lo but is not this host: an outside client.
    let mut c = session(addr, "127.0.0.9");
    assert_eq!(
        c.cmd("MAIL FROM:<a@outside.example.test>"),
        ["250 2.1.0 <a@outside.example.test>... Sender ok"]
    );
    for (rcpt, reply) in [
        // A local part naming another host once unquoted: never local (as the oracle).
        (
            "<\"bob@remote.example.test\"@mta.example.test>",
            "550 5.7.1 <\"bob@remote.example.test\"@mta.example.test>... Relaying denied",
        ),
        (
            "<bob@remote.example.test@mta.example.test>",
            "553 5.1.3 <bob@remote.example.test@mta.example.test>... Invalid route address",
        ),
        (
            "<bob%[127.0.0.2]@[127.0.0.1]>",
            "550 5.7.1 <bob%[127.0.0.2]@[127.0.0.1]>... Relaying denied",
        ),
        (
            "<\"bob%remote.example.test\"@mta.example.test>",
            "550 5.7.1 <\"bob%remote.example.test\"@mta.example.test>... Relaying denied",
        ),
        (
            "<@mta.example.test,@remote.example.test:bob@remote.example.test>",
            "550 5.7.1 <@mta.example.test,@remote.example.test:bob@remote.example.test>... Relaying denied",
        ),
        (
            "<bob@REMOTE.example.test>",
            "550 5.7.1 <bob@REMOTE.example.test>... Relaying denied",
        ),
        (
            "<bob@[127.0.0.2]>",
            "550 5.7.1 <bob@[127.0.0.2]>... Relaying denied",
        ),
        (
            "<bob@mta.example.test.>",
            "550 5.1.1 <bob@mta.example.test.>... User unknown",
        ),
        // The host's own address literal is local, as in sendmail ($=w has [127.0.0.1]).
        (
            "<root@[127.0.0.1]>",
            "250 2.1.5 <root@[127.0.0.1]>... Recipient ok",
        ),
    ] {
        assert_eq!(c.cmd(&format!("RCPT TO:{rcpt}")), [reply], "{rcpt}");
    }
    assert_eq!(c.cmd("RSET"), ["250 2.0.0 Reset state"]);
    assert_eq!(
        c.cmd("QUIT"),
        ["221 2.0.0 mta.example.test closing connection"]
    );
    d.wait_log("reject=550 5.7.1 <bob@[127.0.0.2]>... Relaying denied");
    assert_nothing_queued_or_relayed(&d, &t);
}

#[test]
fn smuggled_messages_are_never_queued() {
    let t = trap();
    let (d, addr) = daemon(&t);
    let smuggled = "MAIL FROM:<evil@client.example.test>\r\nRCPT TO:<victim@remote.example.test>\r\n\
                    DATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n";
    for (end, reply) in [
        ("\n.\n", "421 4.5.0 Bare linefeed (LF) not allowed"),
        ("\r.\r", "421 4.5.0 Bare carriage return (CR) not allowed"),
        ("\r\n.\n", "421 4.5.0 Bare linefeed (LF) not allowed"),
        ("\n.\r\n", "421 4.5.0 Bare linefeed (LF) not allowed"),
    ] {
        // From the host itself, which may relay: only the smuggling check stops it.
        let mut c = session(addr, "127.0.0.1");
        assert!(c.cmd("MAIL FROM:<a@client.example.test>")[0].starts_with("250 "));
        assert!(c.cmd("RCPT TO:<bob@remote.example.test>")[0].starts_with("250 "));
        assert_eq!(c.cmd("DATA"), ["354 End data with <CR><LF>.<CR><LF>"]);
        c.send_raw(format!("Subject: first\r\n\r\nbody{end}{smuggled}").as_bytes());
        assert_eq!(c.reply(), [reply], "{end:?}");
        assert!(c.closed(), "{end:?}: still open");
    }
    assert_nothing_queued_or_relayed(&d, &t);
}

#[test]
fn nul_and_eight_bit_bytes_in_commands() {
    let t = trap();
    let (d, addr) = daemon(&t);
    let mut c = Smtp::connect_from(addr, "127.0.0.9");
    c.reply();
    // An 8-bit HELO name is invalid; elsewhere the high bit is cleared (as sendmail).
    c.send_raw(b"EHLO \xe4\xf6.example\r\n");
    assert_eq!(c.reply(), ["501 5.0.0 Invalid domain name"]);
    assert!(c.cmd("EHLO client.example.test")[0].starts_with("250-"));
    // A NUL ends the command: what follows it is not read.
    c.send_raw(b"NO\0OP\r\n");
    assert_eq!(c.reply(), ["500 5.5.1 Command unrecognized: \"NO\""]);
    c.send_raw(b"MAIL FROM:<a@outside.example.test>\0 SIZE=999999999999\r\n");
    assert_eq!(
        c.reply(),
        ["250 2.1.0 <a@outside.example.test>... Sender ok"]
    );
    c.send_raw(b"RCPT TO:<ro\0ot@mta.example.test>\r\n");
    assert_eq!(c.reply(), ["553 5.0.0 <ro... Unbalanced '<'"]);
    assert_eq!(c.cmd("RSET"), ["250 2.0.0 Reset state"]);
    c.send_raw(b"MAIL FROM:<\xe4@outside.example.test>\r\n");
    assert_eq!(
        c.reply(),
        ["250 2.1.0 <d@outside.example.test>... Sender ok"]
    );
    c.send_raw(b"\xff\xfe\r\n");
    assert_eq!(c.reply(), ["500 5.5.1 Command unrecognized: \"\x7f~\""]);
    assert_eq!(
        c.cmd("DATA"),
        ["503 5.0.0 Need RCPT (recipient)"],
        "no recipient was accepted"
    );
    c.cmd("QUIT");
    assert_nothing_queued_or_relayed(&d, &t);
}

#[test]
fn a_clients_control_bytes_are_escaped_in_the_log_as_sendmail_escapes_them() {
    // The oracle, sent the same commands, logged `...: VRFY a\rb`, `...: VRFY a\001b\\c` and
    // `from=<x\ry@outside.example.test>, size=0, ...`: a bare CR (which does not end an
    // SMTP line) must neither split a log line nor hide what follows it.
    let t = trap();
    let (mut d, addr) = daemon(&t);
    let mut c = session(addr, "127.0.0.9");
    c.send_raw(b"VRFY a\rb\r\n");
    c.reply();
    c.send_raw(b"VRFY a\x01b\\c\r\n");
    c.reply();
    c.send_raw(b"MAIL FROM:<x\ry@outside.example.test>\r\n");
    assert!(c.reply()[0].starts_with("250 "));
    c.cmd("QUIT");
    let log = d.wait_log(", nrcpts=0");
    for want in [
        r": VRFY a\rb",
        r": VRFY a\001b\\c",
        r"from=<x\ry@outside.example.test>, size=0, class=0, nrcpts=0",
    ] {
        assert!(log.contains(want), "{want}\n{log}");
    }
    assert!(!log.contains('\r') && !log.contains('\x01'), "{log:?}");
    assert_nothing_queued_or_relayed(&d, &t);
}

#[test]
fn an_oversize_command_line_ends_the_session() {
    let t = trap();
    let (d, addr) = daemon(&t);
    let mut c = session(addr, "127.0.0.1");
    // A 100 kB line: discarded as it arrives (never buffered whole), then refused.
    // (sendmail answers once ~13 kB have come, even before the line end; this daemon
    // reads up to the line end or 1 MiB first.)
    let mut line = vec![b'x'; 100_000];
    line.extend_from_slice(b"\r\n");
    c.send_raw(&line);
    let r = c.reply();
    assert_eq!(r.len(), 1);
    assert!(
        r[0].starts_with("421 4.7.0 mta.example.test Command too long, possible attack "),
        "{r:?}"
    );
    assert!(c.closed());
    assert_nothing_queued_or_relayed(&d, &t);
}

#[test]
fn command_floods_meet_sendmails_limits() {
    let t = trap();
    let (mut d, addr) = daemon(&t);
    let mut c = session(addr, "127.0.0.9");
    // RSET has no limit.
    let rsets = "RSET\r\n".repeat(5000);
    c.send_raw(rsets.as_bytes());
    for i in 0..5000 {
        assert_eq!(c.reply(), ["250 2.0.0 Reset state"], "RSET {i}");
    }
    // 20 NOOPs are free; past that sendmail logs an attack and slows the client down.
    for _ in 0..21 {
        assert_eq!(c.cmd("NOOP"), ["250 2.0.0 OK"]);
    }
    d.wait_log("[127.0.0.9]: possible SMTP attack: command=NOOP, count=20");
    // The 26th bad command closes the session.
    for _ in 0..25 {
        assert_eq!(
            c.cmd("XYZZY"),
            ["500 5.5.1 Command unrecognized: \"XYZZY\""]
        );
    }
    assert_eq!(
        c.cmd("XYZZY"),
        ["421 4.7.0 mta.example.test Too many bad commands; closing connection"]
    );
    assert!(c.closed());
    assert_nothing_queued_or_relayed(&d, &t);
}

#[test]
fn pipelining_abuse_queues_nothing() {
    let t = trap();
    let (d, addr) = daemon(&t);
    // A whole session in one write, before the greeting: EHLO is answered with a
    // protocol error and everything after it is refused; the "message" after QUIT is
    // never read.
    let mut c = Smtp::connect(addr);
    c.send_raw(
        b"EHLO a\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@remote.example.test>\r\nQUIT\r\n\
          DATA\r\nSubject: x\r\n\r\nsmuggled\r\n.\r\n",
    );
    assert!(c.reply()[0].starts_with("220 "));
    assert_eq!(c.reply(), ["554 5.5.0 SMTP protocol error"]);
    assert_eq!(c.reply(), ["550 5.0.0 Command rejected"]);
    assert_eq!(c.reply(), ["550 5.0.0 Command rejected"]);
    assert_eq!(c.reply(), ["221 2.0.0 mta.example.test closing connection"]);
    assert!(c.closed());

    // Legal pipelining after EHLO, then QUIT and a body: QUIT ends it all.
    let mut c = session(addr, "127.0.0.1");
    c.send_raw(
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<bob@remote.example.test>\r\nQUIT\r\n\
          DATA\r\nSubject: x\r\n\r\nafter quit\r\n.\r\n",
    );
    assert_eq!(c.reply(), ["250 2.1.0 <a@b.test>... Sender ok"]);
    assert_eq!(
        c.reply(),
        ["250 2.1.5 <bob@remote.example.test>... Recipient ok"]
    );
    assert_eq!(c.reply(), ["221 2.0.0 mta.example.test closing connection"]);
    assert!(c.closed());
    assert_nothing_queued_or_relayed(&d, &t);
}
