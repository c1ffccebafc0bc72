//! Mail filters end to end: real libmilter filters (python3-milter's `tests/data/
//! test_milter.py`, opendkim) started by the tests on unix sockets and loopback, sendmail-rs
//! relaying what it accepted to `tests/data/dsn_sink.py`, so that what the filters decided
//! is seen as it leaves the queue.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use support::dsn_sink::{Sink, wait_for};
use support::{Daemon, Smtp};

/// The macro lists cf/m4 writes for INPUT_MAIL_FILTER (Debian's sendmail-cf 8.17).
const M4_MACROS: &str = "\
O Milter.macros.connect=j, _, {daemon_name}, {if_name}, {if_addr}
O Milter.macros.helo={tls_version}, {cipher}, {cipher_bits}, {cert_subject}, {cert_issuer}
O Milter.macros.envfrom=i, {auth_type}, {auth_authen}, {auth_ssf}, {auth_author}, {mail_mailer}, {mail_host}, {mail_addr}
O Milter.macros.envrcpt={rcpt_mailer}, {rcpt_host}, {rcpt_addr}
O Milter.macros.eom={msg_id}
";

/// One callback the test filter recorded.
#[derive(Debug)]
struct Record {
    stage: String,
    fields: std::collections::BTreeMap<String, String>,
}

impl Record {
    fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }
}

/// A filter process, killed by its pid when dropped.
struct Filter {
    child: Child,
    dir: tempfile::TempDir,
}

impl Filter {
    /// `tests/data/test_milter.py` on a unix socket in its own directory.
    fn test_milter() -> Filter {
        let dir = tempfile::tempdir().unwrap();
        let child = Filter::spawn(dir.path());
        Filter { child, dir }
    }

    /// Stops the filter and starts a new one on the same socket (as an admin restarting
    /// it would).
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.socket());
        self.child = Filter::spawn(self.dir.path());
    }

    fn spawn(dir: &std::path::Path) -> Child {
        let sock = dir.join("f.sock");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/test_milter.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(format!("unix:{}", sock.display()))
            .arg(dir.join("record.txt"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3-milter");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        wait_for(|| sock.exists().then_some(()), "filter socket");
        child
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("f.sock")
    }

    /// The recorded callbacks: stage, then its `m:<macro>=v` and `field=v` pairs.
    fn records(&self) -> Vec<Record> {
        std::fs::read_to_string(self.dir.path().join("record.txt"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut parts = l.split('\t');
                let stage = parts.next().unwrap_or_default().to_string();
                let fields = parts
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                Record { stage, fields }
            })
            .collect()
    }

    fn stage(&self, stage: &str) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| r.stage == stage)
            .collect()
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// sendmail-rs with `filters` (X lines) relaying to `sink`, on ::1 and 127.0.0.1.
fn daemon(sink: &Sink, filters: &str, args: &[&str]) -> Daemon {
    let cf = format!(
        "Djmta.example.test\n\
         DSrelay:[127.0.0.1]\n\
         O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n\
         O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1\n\
         Mrelay, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=2040, T=DNS/RFC822/SMTP, A=TCP $h {}\n\
         {M4_MACROS}{filters}",
        sink.port
    );
    Daemon::start(&cf, args)
}

fn open(d: &mut Daemon, name: &str) -> Smtp {
    let mut c = Smtp::connect(d.addr_of(name));
    let g = c.reply();
    assert!(g[0].starts_with("220 "), "{g:?}");
    let r = c.cmd("EHLO client.example.test");
    assert!(r[0].starts_with("250"), "{r:?}");
    c
}

fn data(c: &mut Smtp, text: &str) -> Vec<String> {
    let r = c.cmd("DATA");
    assert!(r[0].starts_with("354"), "{r:?}");
    c.send(&format!("{text}\r\n."));
    c.reply()
}

#[test]
fn every_action_of_a_libmilter_filter_is_applied_before_the_commit() {
    let f = Filter::test_milter();
    let sink = Sink::start();
    let mut d = daemon(
        &sink,
        &format!(
            "O InputMailFilters=test\nXtest, S=local:{}, F=T, T=S:10s;R:10s;E:1m\n",
            f.socket().display()
        ),
        &[],
    );
    let mut c = open(&mut d, "MTA-v4");
    assert_eq!(
        c.cmd("MAIL FROM:<sender@client.example.test> SIZE=100")[0],
        "250 2.1.0 <sender@client.example.test>... Sender ok"
    );
    let ok = c.cmd("RCPT TO:<keep@dest.example>");
    assert!(ok[0].starts_with("250 2.1.5"), "{ok:?}");
    assert_eq!(
        c.cmd("RCPT TO:<reject@dest.example>"),
        ["550 5.7.1 <reject@dest.example>... Command rejected"]
    );
    assert_eq!(
        c.cmd("RCPT TO:<tempfail@dest.example>"),
        ["451 4.3.2 <tempfail@dest.example>... Please try again later"]
    );
    assert_eq!(
        c.cmd("RCPT TO:<custom@dest.example>"),
        ["553 5.7.2 <custom@dest.example>... custom refusal"]
    );
    assert!(c.cmd("RCPT TO:<remove-me@dest.example>")[0].starts_with("250"));
    let r = data(
        &mut c,
        "From: sender@client.example.test\r\nSubject: original\r\nX-Delete-Me: gone\r\nMessage-Id: <m1@client.example.test>\r\n\r\noriginal body\r\n",
    );
    assert!(r[0].starts_with("250 2.0.0 "), "{r:?}");
    c.cmd("QUIT");

    let msgs = sink.wait_messages(1);
    let m = &msgs[0];
    assert!(m.contains("X-Sink-Mail: From:<changed@filter.test>"), "{m}");
    assert!(m.contains("X-Sink-Rcpt: To:<keep@dest.example>"), "{m}");
    assert!(m.contains("X-Sink-Rcpt: To:<added@dest.example>"), "{m}");
    assert!(
        m.contains("X-Sink-Rcpt: To:<added-par@dest.example>"),
        "{m}"
    );
    assert!(!m.contains("remove-me@dest.example"), "{m}");
    assert!(
        m.contains("\nX-Test-Added: yes\n") || m.contains("\nX-Test-Added: yes\r\n"),
        "{m}"
    );
    assert!(m.contains("X-Test-Inserted: first"), "{m}");
    assert!(m.contains("Subject: changed by filter"), "{m}");
    assert!(!m.contains("X-Delete-Me"), "{m}");
    assert!(m.contains("Body replaced by the filter."), "{m}");
    assert!(!m.contains("original body"), "{m}");

    // What the filter saw: the stages in order, with the macros m4's lists name.
    let records = f.records();
    let stages: Vec<&str> = records.iter().map(|r| r.stage.as_str()).collect();
    let connect = &f.stage("connect")[0];
    assert!(
        connect
            .get("hostaddr")
            .unwrap()
            .starts_with("('127.0.0.1', "),
        "{connect:?}"
    );
    assert!(!stages.is_empty());
    let log = d.log_text();
    assert!(
        log.contains("Milter (test) add: header: X-Test-Added: yes"),
        "{log}"
    );
    assert!(
        log.contains("Milter: to=<reject@dest.example>, reject=550 5.7.1 Command rejected"),
        "{log}"
    );
}

/// `opendkim` in the foreground on a unix socket, with a fresh key for `example.test`
/// (selector `sel`); `extra` adds configuration lines.
struct OpenDkim {
    child: Child,
    dir: tempfile::TempDir,
}

impl OpenDkim {
    fn start(extra: impl FnOnce(&std::path::Path) -> String) -> OpenDkim {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let keygen = Command::new("opendkim-genkey")
            .args(["-D", p.to_str().unwrap(), "-d", "example.test", "-s", "sel"])
            .status()
            .expect("opendkim-genkey");
        assert!(keygen.success());
        let conf = p.join("opendkim.conf");
        let extra = extra(p);
        std::fs::write(
            &conf,
            format!(
                "Syslog no\nDomain example.test\nSelector sel\nKeyFile {key}\n\
                 Socket local:{sock}\nMode sv\nCanonicalization relaxed/simple\n\
                 RequireSafeKeys false\nPidFile {pid}\nUserID root\n{extra}",
                key = p.join("sel.private").display(),
                sock = p.join("odk.sock").display(),
                pid = p.join("odk.pid").display(),
            ),
        )
        .unwrap();
        let child = Command::new("opendkim")
            .args(["-f", "-x", conf.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("opendkim");
        let sock = p.join("odk.sock");
        wait_for(|| sock.exists().then_some(()), "opendkim socket");
        OpenDkim { child, dir }
    }

    fn x_line(&self) -> String {
        format!(
            "O InputMailFilters=dkim\nXdkim, S=local:{}, F=T, T=S:10s;R:10s;E:1m\n",
            self.dir.path().join("odk.sock").display()
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for OpenDkim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tests/data/dkim_tool.py` with `input`; its output.
fn dkim_tool(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dkim_tool.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3-dkim");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

/// A message as the sink wrote it, without the sink's envelope lines, CRLF line ends.
fn as_received(sink_text: &str) -> Vec<u8> {
    let mut out = String::new();
    for line in sink_text.lines().skip_while(|l| l.starts_with("X-Sink-")) {
        out.push_str(line.trim_end_matches('\r'));
        out.push_str("\r\n");
    }
    out.into_bytes()
}

#[test]
fn opendkim_signs_and_an_independent_verifier_accepts_the_signature() {
    let odk = OpenDkim::start(|_| "InternalHosts 127.0.0.1\n".into());
    let sink = Sink::start();
    let mut d = daemon(&sink, &odk.x_line(), &[]);
    let mut c = open(&mut d, "MTA-v4");
    assert!(c.cmd("MAIL FROM:<writer@example.test>")[0].starts_with("250"));
    assert!(c.cmd("RCPT TO:<reader@dest.example>")[0].starts_with("250"));
    let r = data(
        &mut c,
        "From: Writer <writer@example.test>\r\nTo: reader@dest.example\r\nSubject: signed\r\n\r\nA body to sign.\r\n\r\nSecond paragraph.\r\n",
    );
    assert!(r[0].starts_with("250 2.0.0 "), "{r:?}");
    c.cmd("QUIT");
    let msgs = sink.wait_messages(1);
    let msg = as_received(&msgs[0]);
    let text = String::from_utf8_lossy(&msg);
    assert!(
        text.contains("DKIM-Signature: v=1; a=rsa-sha256;"),
        "{text}"
    );
    assert!(text.contains("d=example.test"), "{text}");
    let verdict = dkim_tool(&["verify", odk.path("sel.txt").to_str().unwrap()], &msg);
    assert_eq!(String::from_utf8_lossy(&verdict).trim(), "pass", "{text}");
    // And a changed body no longer verifies: the check is real.
    let tampered = text.replace("Second paragraph.", "Second paragraph!");
    let verdict = dkim_tool(
        &["verify", odk.path("sel.txt").to_str().unwrap()],
        tampered.as_bytes(),
    );
    assert_eq!(String::from_utf8_lossy(&verdict).trim(), "fail");
    assert!(
        d.log_text()
            .contains("Milter (dkim) insert (0): header: DKIM-Signature:"),
        "{}",
        d.log_text()
    );

    // A message past the receipt spill threshold (64 KiB) is filtered whole: its body hash
    // still verifies.
    let mut c = open(&mut d, "MTA-v4");
    assert!(c.cmd("MAIL FROM:<writer@example.test>")[0].starts_with("250"));
    assert!(c.cmd("RCPT TO:<reader@dest.example>")[0].starts_with("250"));
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    let big = format!(
        "From: Writer <writer@example.test>\r\nTo: reader@dest.example\r\nSubject: big\r\n\r\n{}",
        line.repeat(4000)
    );
    let r = data(&mut c, &big);
    assert!(r[0].starts_with("250 2.0.0 "), "{r:?}");
    c.cmd("QUIT");
    let msgs = sink.wait_messages(2);
    let msg = as_received(&msgs[1]);
    assert!(msg.len() > 290_000, "{}", msg.len());
    let verdict = dkim_tool(&["verify", odk.path("sel.txt").to_str().unwrap()], &msg);
    assert_eq!(String::from_utf8_lossy(&verdict).trim(), "pass");
}

#[test]
fn opendkim_verifies_an_inbound_signed_message() {
    // The client is not internal, so opendkim verifies; the public key comes from a file
    // (TestPublicKeys), not DNS.
    let odk = OpenDkim::start(|dir| {
        let txt = std::fs::read_to_string(dir.join("sel.txt")).unwrap();
        let record: String = txt.split('"').skip(1).step_by(2).collect();
        let keys = dir.join("keys");
        std::fs::write(&keys, format!("sel._domainkey.example.test {record}\n")).unwrap();
        format!(
            "InternalHosts 192.0.2.1\nTestPublicKeys {}\nAuthservID mta.example.test\n",
            keys.display()
        )
    });
    let unsigned = b"From: Writer <writer@example.test>\r\nTo: reader@dest.example\r\nSubject: inbound\r\n\r\nSigned elsewhere.\r\n";
    let key = odk.path("sel.private");
    let signed = dkim_tool(
        &["sign", key.to_str().unwrap(), "sel", "example.test"],
        unsigned,
    );
    let signed = String::from_utf8(signed).unwrap();
    let sink = Sink::start();
    let mut d = daemon(&sink, &odk.x_line(), &[]);
    let mut c = open(&mut d, "MTA-v6");
    assert!(c.cmd("MAIL FROM:<writer@example.test>")[0].starts_with("250"));
    assert!(c.cmd("RCPT TO:<reader@dest.example>")[0].starts_with("250"));
    let r = data(&mut c, signed.trim_end_matches("\r\n"));
    assert!(r[0].starts_with("250 2.0.0 "), "{r:?}");
    c.cmd("QUIT");
    let msgs = sink.wait_messages(1);
    let text = &msgs[0];
    let ar = text
        .lines()
        .find(|l| l.starts_with("Authentication-Results:"))
        .unwrap_or_else(|| panic!("no Authentication-Results: {text}"));
    assert!(
        ar.starts_with("Authentication-Results: mta.example.test;"),
        "{ar}"
    );
    let rest: String = text
        .split("Authentication-Results:")
        .nth(1)
        .unwrap()
        .chars()
        .take(300)
        .collect();
    assert!(rest.contains("dkim=pass"), "{rest}");
}

/// Sends one ordinary message; the replies to MAIL and to the end of DATA (or the refusal
/// that came first).
fn try_send(c: &mut Smtp, rcpt: &str) -> Vec<String> {
    let r = c.cmd("MAIL FROM:<sender@client.example.test>");
    if !r[0].starts_with("250") {
        return r;
    }
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    if !r[0].starts_with("250") {
        return r;
    }
    data(
        c,
        "From: sender@client.example.test\r\nSubject: failure modes\r\n\r\nbody\r\n",
    )
}

/// A version 6 filter (libmilter) keeps its connection from one SMTP session to the next:
/// the session ends with `SMFIC_QUIT_NC` and the next one starts with its connect on the
/// same connection, without a new negotiation. Only after an end of message answered
/// "continue" (libmilter ignores `K` in any other state); a connection the filter closed
/// while idle (here: the filter restarted) is replaced without an error.
#[test]
fn sessions_share_one_filter_connection_when_the_filter_takes_quit_nc() {
    let mut f = Filter::test_milter();
    let sink = Sink::start();
    let mut d = daemon(
        &sink,
        &format!(
            "O Milter.LogLevel=19\nO InputMailFilters=test\nXtest, S=local:{}, F=T, T=S:10s;R:10s;E:1m\n",
            f.socket().display()
        ),
        &[],
    );
    // plain@: the filter answers the end of message "continue"; keep@: "accept" (with its
    // changes).
    let rcpts = [
        "plain@dest.example",
        "plain@dest.example",
        "plain@dest.example",
        "keep@dest.example",
        "plain@dest.example",
    ];
    for (n, rcpt) in rcpts.iter().enumerate() {
        let mut c = open(&mut d, "MTA-v4");
        let r = try_send(&mut c, rcpt);
        assert!(r[0].starts_with("250 2.0.0 "), "{r:?}");
        c.cmd("QUIT");
        // The session's filter connection is back in the pool (or closed) before the next.
        d.wait_log_count("Milter (test): quit filter", n + 1);
    }
    // A new connection starts with a negotiation, a kept one at connect.
    let opens = |f: &Filter| -> String {
        f.records()
            .iter()
            .filter_map(|r| match r.stage.as_str() {
                "negotiate" => Some('n'),
                "connect" => Some('c'),
                _ => None,
            })
            .collect()
    };
    // Sessions 1-4 on one connection; after the accept of session 4 it is closed.
    assert_eq!(opens(&f), "nccccnc");
    // The kept connection dies with the filter; the next session opens a new one.
    f.restart();
    let mut c = open(&mut d, "MTA-v4");
    let r = try_send(&mut c, "plain@dest.example");
    assert!(r[0].starts_with("250 2.0.0 "), "{r:?}");
    c.cmd("QUIT");
    d.wait_log_count("Milter (test): quit filter", 6);
    assert_eq!(opens(&f), "nccccncnc");
    sink.wait_messages(6);
    let log = d.log_text();
    assert!(!log.contains("to error state"), "{log}");
    assert!(!log.contains("Milter (test): init failed"), "{log}");
}

#[test]
fn a_filter_that_cannot_be_reached_follows_its_flags() {
    let missing = tempfile::tempdir().unwrap();
    let sock = missing.path().join("nobody-listens.sock");
    let sink = Sink::start();
    for (flags, greeting, mail, log) in [
        (
            "",
            "220 ",
            "250 ",
            "Milter (down): error connecting to filter: No such file or directory",
        ),
        (
            "F=T, ",
            "220 ",
            "451 4.3.2 Please try again later",
            "Milter: initialization failed, temp failing commands",
        ),
        (
            "F=R, ",
            "554 mta.example.test ESMTP not accepting messages",
            "550 5.0.0 Command rejected",
            "Milter: initialization failed, rejecting commands",
        ),
        (
            "F=4, ",
            "421 4.7.0 mta.example.test closing connection",
            "",
            "Milter: initialization failed, closing connection",
        ),
    ] {
        let x = format!(
            "O InputMailFilters=down\nXdown, {flags}S=local:{}\n",
            sock.display()
        );
        let mut d = daemon(&sink, &x, &[]);
        let mut c = Smtp::connect(d.addr_of("MTA-v6"));
        let g = c.reply();
        assert!(g[0].starts_with(greeting), "{flags}: {g:?}");
        if !mail.is_empty() {
            c.cmd("EHLO client.example.test");
            let r = try_send(&mut c, "someone@dest.example");
            assert!(r[0].starts_with(mail), "{flags}: {r:?}");
            c.cmd("QUIT");
        }
        let text = d.wait_log(log);
        assert!(text.contains("Milter (down): to error state"), "{text}");
        if mail == "250 " {
            sink.wait_messages(1);
        }
    }
    // Only the flagless filter let a message through, and exactly once.
    let msgs = sink.wait_messages(1);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(sink.messages().len(), 1, "{msgs:?}");
}

#[test]
fn a_filter_slower_than_its_timeouts_is_an_error_handled_by_its_flag() {
    let f = Filter::test_milter();
    let sink = Sink::start();
    for (flags, want) in [
        ("F=T, ", "451 4.3.2 Please try again later"),
        ("", "250 2.0.0 "),
    ] {
        let x = format!(
            "O InputMailFilters=test\nXtest, {flags}S=local:{}, T=R:1s;E:2s\n",
            f.socket().display()
        );
        let mut d = daemon(&sink, &x, &[]);
        let mut c = open(&mut d, "MTA-v6");
        let r = try_send(&mut c, "slow@dest.example");
        assert!(r[0].starts_with(want), "{flags}: {r:?}");
        c.cmd("QUIT");
        let text = d.wait_log("Milter (test): timeout before data read, where=eom");
        assert!(text.contains("Milter (test): to error state"), "{text}");
        if flags.is_empty() {
            sink.wait_messages(1);
        }
    }
    // The tempfailed one was not queued; the other was, once, without the filter's changes.
    let msgs = sink.wait_messages(1);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(sink.messages().len(), 1, "{msgs:?}");
    assert!(!msgs[0].contains("X-Test-Added"), "{}", msgs[0]);
}

/// A peer on a unix socket that answers every packet with the bogus letter `Z`.
fn garbage_filter(dir: &std::path::Path) -> Child {
    let sock = dir.join("garbage.sock");
    let script = format!(
        "import socket,struct\n\
         s=socket.socket(socket.AF_UNIX)\ns.bind({sock:?})\ns.listen(8)\n\
         while True:\n    c,_=s.accept()\n    c.recv(65536)\n    c.sendall(struct.pack('>I',1)+b'Z')\n    c.close()\n",
        sock = sock.display().to_string()
    );
    let child = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(|| sock.exists().then_some(()), "garbage socket");
    child
}

#[test]
fn a_filter_answering_garbage_is_closed_and_its_flag_decides() {
    let dir = tempfile::tempdir().unwrap();
    let mut peer = garbage_filter(dir.path());
    let sink = Sink::start();
    for (flags, want) in [("F=R, ", "550 5.0.0 Command rejected"), ("", "250 2.0.0 ")] {
        let x = format!(
            "O InputMailFilters=junk\nXjunk, {flags}S=local:{}\n",
            dir.path().join("garbage.sock").display()
        );
        let mut d = daemon(&sink, &x, &[]);
        let mut c = Smtp::connect(d.addr_of("MTA-v6"));
        c.reply();
        c.cmd("EHLO client.example.test");
        let r = try_send(&mut c, "someone@dest.example");
        assert!(r[0].starts_with(want), "{flags}: {r:?}");
        c.cmd("QUIT");
        let text = d.wait_log("Milter (junk): to error state");
        assert!(
            text.contains("Milter (junk): negotiate: returned Z instead of O"),
            "{text}"
        );
        if flags.is_empty() {
            sink.wait_messages(1);
        }
    }
    let _ = peer.kill();
    let _ = peer.wait();
    assert_eq!(sink.wait_messages(1).len(), 1);
}

/// The recorded callbacks of `text` (test_milter.py's record format).
fn parse_records(text: &str) -> Vec<Record> {
    text.lines()
        .map(|l| {
            let mut parts = l.split('\t');
            let stage = parts.next().unwrap_or_default().to_string();
            let fields = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Record { stage, fields }
        })
        .collect()
}

/// `tests/fixtures/oracle-milter.cf` (m4 from `oracle-milter.mc`, the oracle's own mc plus
/// `INPUT_MAIL_FILTER(test)`) under `root`, its relay pointed at `port`.
fn oracle_milter_cf(root: &std::path::Path, port: u16) -> String {
    let run = root.join("run");
    std::fs::create_dir_all(run.join("etc")).unwrap();
    std::fs::write(
        run.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.0.1\toracle.example.test oracle\n\
         127.0.0.2\tclient.example.test\n127.0.0.3\tremote.example.test\n",
    )
    .unwrap();
    std::fs::write(run.join("etc/service.switch"), "hosts files\n").unwrap();
    std::fs::write(run.join("aliases"), "postmaster: root\nalice: root\n").unwrap();
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oracle-milter.cf"),
    )
    .unwrap()
    .replace("@ORACLE@", &root.display().to_string())
    .replace("A=TCP $h 2599", &format!("A=TCP $h {port}"))
}

#[test]
fn the_m4_cf_the_oracle_ran_gives_the_filter_the_macros_sendmail_gave() {
    // tests/data/oracle-milter-record.txt: what test_milter.py recorded behind the real
    // sendmail 8.17.1.9 running this cf (compiled from the same .mc) for this session.
    let oracle = parse_records(include_str!("data/oracle-milter-record.txt"));
    let env = tempfile::tempdir().unwrap();
    let run = env.path().join("run");
    let sink = Sink::start();
    let cf = oracle_milter_cf(env.path(), sink.port);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/test_milter.py");
    std::fs::create_dir_all(&run).unwrap();
    // Killed (by its pid) when dropped, also when an assertion fails.
    let child = Proc(
        Command::new("/usr/bin/python3")
            .arg(script)
            .arg(format!("unix:{}", run.join("test.sock").display()))
            .arg(run.join("record.txt"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sock = run.join("test.sock");
    wait_for(|| sock.exists().then_some(()), "filter socket");
    let mut d = Daemon::start_wrapped(
        &cf,
        &[
            "-O",
            "DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1",
            "-O",
            "DeliveryMode=queueonly",
        ],
        support::AS_ORACLE_HOST,
    );
    let mut c = open(&mut d, "MTA-v4");
    assert!(c.cmd("MAIL FROM:<sender@client.example.test> SIZE=100")[0].starts_with("250"));
    assert!(c.cmd("RCPT TO:<someone@remote.example.test>")[0].starts_with("250"));
    let a = c.cmd("RCPT TO:<alice@oracle.example.test>");
    assert!(a[0].starts_with("250"), "{a:?}");
    assert_eq!(
        c.cmd("RCPT TO:<reject@remote.example.test>"),
        ["550 5.7.1 <reject@remote.example.test>... Command rejected"]
    );
    let r = data(
        &mut c,
        "From: sender@client.example.test\r\nTo: someone@remote.example.test\r\nSubject: macros\r\nMessage-Id: <macros-1@client.example.test>\r\n\r\nbody",
    );
    assert!(r[0].starts_with("250 2.0.0 "), "{r:?}");
    c.cmd("QUIT");
    let ours = wait_for(
        || {
            let text = std::fs::read_to_string(run.join("record.txt")).unwrap_or_default();
            text.contains("\nclose").then(|| parse_records(&text))
        },
        "the filter's close",
    );
    drop(child);
    // (The oracle's record was taken before test_milter.py wrote `negotiate` lines.)
    let shape = |rs: &[Record]| -> Vec<String> {
        rs.iter()
            .filter(|r| r.stage != "negotiate")
            .map(|r| {
                let mut fields: Vec<String> = r
                    .fields
                    .iter()
                    .filter(|(k, _)| k.as_str() != "m:i" && k.as_str() != "hostaddr")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                fields.sort();
                format!("{} {}", r.stage, fields.join(" "))
            })
            .collect()
    };
    assert_eq!(shape(&ours), shape(&oracle));
    // The same log lines as sendmail's for the same session (queue ids left out).
    let strip = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| {
                let l = l.split_once("]: ").map_or(l, |(_, r)| r);
                let l = match l.split_once(": ") {
                    Some((id, rest)) if id.len() == 14 && !id.contains(' ') => rest,
                    _ => l.strip_prefix("NOQUEUE: ").unwrap_or(l),
                };
                (l.starts_with("Milter") || l.starts_with("milter=")).then(|| l.to_string())
            })
            .collect()
    };
    let oracle_log = strip(include_str!("data/oracle-milter-log.txt"));
    assert_eq!(strip(&d.log_text()), oracle_log);
    // The queue id is the one the filter saw from MAIL on.
    let qid = ours
        .iter()
        .find(|r| r.stage == "envfrom")
        .unwrap()
        .get("m:i")
        .unwrap()
        .to_string();
    assert!(r[0].contains(&qid), "{r:?} {qid}");
}

/// A child process killed (by its pid) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback TCP port (bound, then released for the program that takes it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn spamass_milter_with_spamd_rejects_gtube_and_marks_what_it_passes() {
    // spamd in the foreground on loopback (one child, no user configuration), stopped by
    // its pid when the test ends; spamass-milter in front of it on a unix socket.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let spamd = Proc(
        Command::new("spamd")
            .args([
                &format!("--listen=127.0.0.1:{port}"),
                "--max-children=1",
                "--min-children=1",
                "-u",
                "nobody",
                "--nouser-config",
                "-s",
                "stderr",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spamd (apt-get install spamd)"),
    );
    wait_for(
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        "spamd listening",
    );
    let sock = dir.path().join("spamass.sock");
    let milter = Proc(
        Command::new("spamass-milter")
            .args([
                "-p",
                sock.to_str().unwrap(),
                "-r",
                "15",
                "--",
                "-d",
                "127.0.0.1",
            ])
            .arg("-p")
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spamass-milter"),
    );
    wait_for(|| sock.exists().then_some(()), "spamass-milter socket");
    let sink = Sink::start();
    let x = format!(
        "O InputMailFilters=spamassassin\n\
         Xspamassassin, S=local:{}, F=T, T=C:15m;S:4m;R:4m;E:10m\n",
        sock.display()
    );
    let mut d = daemon(&sink, &x, &[]);
    let mut c = open(&mut d, "MTA-v6");
    assert!(c.cmd("MAIL FROM:<sender@client.example.test>")[0].starts_with("250"));
    assert!(c.cmd("RCPT TO:<reader@dest.example>")[0].starts_with("250"));
    let r = data(
        &mut c,
        "From: sender@client.example.test\r\nTo: reader@dest.example\r\nSubject: gtube\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n",
    );
    assert!(r[0].starts_with("550 5.7.1 "), "{r:?}");
    assert!(c.cmd("MAIL FROM:<sender@client.example.test>")[0].starts_with("250"));
    assert!(c.cmd("RCPT TO:<reader@dest.example>")[0].starts_with("250"));
    let r = data(
        &mut c,
        "From: sender@client.example.test\r\nTo: reader@dest.example\r\nSubject: lunch\r\nMessage-Id: <lunch-1@client.example.test>\r\nDate: Sun, 6 Dec 2026 05:00:00 +0000\r\n\r\nShall we meet at noon?\r\n",
    );
    assert!(r[0].starts_with("250 2.0.0 "), "{r:?}");
    c.cmd("QUIT");
    let msgs = sink.wait_messages(1);
    assert!(
        msgs[0].contains("X-Spam-Checker-Version: SpamAssassin"),
        "{}",
        msgs[0]
    );
    assert!(msgs[0].contains("X-Spam-Status: No"), "{}", msgs[0]);
    let log = d.log_text();
    assert!(
        log.contains("Milter: data, reject=550 5.7.1 Blocked by SpamAssassin"),
        "{log}"
    );
    drop(milter);
    drop(spamd);
}

#[test]
fn command_line_mail_goes_through_the_same_filters() {
    let f = Filter::test_milter();
    let sink = Sink::start();
    let d = daemon(
        &sink,
        &format!(
            "O InputMailFilters=test\nXtest, S=local:{}, F=T\n",
            f.socket().display()
        ),
        &[],
    );
    let cf = d.cf.display().to_string();
    let qopt = format!("QueueDirectory={}", d.queue_dir().display());
    let out = support::run_bin_with_input(
        std::path::Path::new(support::sendmail_bin()),
        &[
            "-C",
            &cf,
            "-O",
            &qopt,
            "-f",
            "writer@example.test",
            "-t",
            "-i",
        ],
        "To: keep@dest.example, remove-me@dest.example\nSubject: from the command line\nX-Delete-Me: x\n\ntyped body\n",
    );
    assert!(out.status.success(), "{out:?}");
    let msgs = sink.wait_messages(1);
    let m = &msgs[0];
    assert!(m.contains("X-Sink-Mail: From:<changed@filter.test>"), "{m}");
    assert!(m.contains("X-Sink-Rcpt: To:<keep@dest.example>"), "{m}");
    assert!(m.contains("X-Sink-Rcpt: To:<added@dest.example>"), "{m}");
    assert!(
        !m.contains("X-Sink-Rcpt: To:<remove-me@dest.example>"),
        "{m}"
    );
    assert!(m.contains("X-Test-Added: yes"), "{m}");
    assert!(m.contains("Subject: changed by filter"), "{m}");
    assert!(m.contains("Body replaced by the filter."), "{m}");
    // The filter was told what an MSP relaying through the MTA tells it.
    let connect = &f.stage("connect")[0];
    assert_eq!(connect.get("hostname"), Some("localhost"));
    assert_eq!(connect.get("m:{daemon_name}"), Some("MTA-v6"));
    let helo = &f.stage("helo")[0];
    assert_eq!(helo.get("helo"), Some("mta.example.test"));
    let from = &f.stage("envfrom")[0];
    assert_eq!(from.get("sender"), Some("<writer@example.test>"));
    assert!(from.get("m:i").is_some_and(|i| i.len() == 14), "{from:?}");
}

#[test]
fn a_quarantined_message_is_held_and_listed_by_mailq_qq() {
    let f = Filter::test_milter();
    let sink = Sink::start();
    let mut d = daemon(
        &sink,
        &format!(
            "O InputMailFilters=test\nXtest, S=local:{}, F=T\n",
            f.socket().display()
        ),
        &[],
    );
    let mut c = open(&mut d, "MTA-v6");
    let held = try_send(&mut c, "quarantine@dest.example");
    assert!(held[0].starts_with("250 2.0.0 "), "{held:?}");
    let held_id = held[0].split(' ').nth(2).unwrap().to_string();
    // A second message, delivered: by the time it arrives the first was not.
    let sent = try_send(&mut c, "keep@dest.example");
    assert!(sent[0].starts_with("250 2.0.0 "), "{sent:?}");
    c.cmd("QUIT");
    let msgs = sink.wait_messages(1);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].contains("X-Sink-Rcpt: To:<keep@dest.example>"));
    let normal = d.mailq();
    assert!(!normal.contains(&held_id), "{normal}");
    let out = support::run(&[
        "-bp",
        "-qQ",
        "-C",
        d.cf.to_str().unwrap(),
        "-O",
        &format!("QueueDirectory={}", d.queue_dir().display()),
    ]);
    let q = String::from_utf8_lossy(&out.stdout);
    assert!(q.contains(&held_id), "{q}");
    assert!(q.contains("\n     QUARANTINE: held by test filter"), "{q}");
    assert!(
        d.log_text()
            .contains("milter=test, quarantine=held by test filter")
    );
    // As sendmail 8.17 does (asked with -Q/-qQ on the oracle's queue): `-qQsubstr` selects
    // by reason; `-Q -qQ…` releases the selected messages, while the daemon runs.
    let cf = d.cf.to_str().unwrap().to_string();
    let qdir = format!("QueueDirectory={}", d.queue_dir().display());
    let sm = |args: &[&str]| -> String {
        let mut all = args.to_vec();
        all.extend(["-C", &cf, "-O", &qdir]);
        let out = support::run(&all);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(sm(&["-bp", "-qQtest filter"]).contains(&held_id));
    assert!(!sm(&["-bp", "-qQother"]).contains(&held_id));
    assert!(sm(&["-bp", "-q!Qother"]).contains(&held_id));
    // A queue run leaves it: when the run returns, still only the first message went out.
    sm(&["-q"]);
    assert_eq!(sink.messages().len(), 1);
    // Released through the daemon (sendmail's words with -v), no longer listed by -qQ, and
    // delivered by the next queue run. Quarantining and a -qQ run: tests/quarantine.rs.
    let out = sm(&["-v", "-Q", "-qQ", &format!("-qI{held_id}")]);
    assert!(
        out.ends_with(&format!(
            ":\n{held_id}: Removed quarantine of \"held by test filter\"\n1 change\n"
        )),
        "{out}"
    );
    d.wait_log(&format!("{held_id}: unquarantine"));
    assert!(!sm(&["-bp", "-qQ"]).contains(&held_id));
    sm(&["-q"]);
    let msgs = sink.wait_messages(2);
    assert!(
        msgs.iter()
            .any(|m| m.contains("X-Sink-Rcpt: To:<quarantine@dest.example>")),
        "{msgs:?}"
    );
    assert!(!sm(&["-bp"]).contains(&held_id));
}

#[test]
fn after_starttls_the_filter_gets_the_tls_macros_at_helo() {
    let f = Filter::test_milter();
    let sink = Sink::start();
    let ca = support::pki::TestCa::new("Milter Test CA");
    ca.write_leaf(&["mta.example.test", "localhost"], "cert.pem", "key.pem");
    let mut d = daemon(
        &sink,
        &format!(
            "O InputMailFilters=test\nXtest, S=local:{}, F=T\n",
            f.socket().display()
        ),
        &[
            "-O",
            &format!("ServerCertFile={}", ca.p("cert.pem")),
            "-O",
            &format!("ServerKeyFile={}", ca.p("key.pem")),
        ],
    );
    let port = d.addr_of("MTA-v4").port();
    let script = format!(
        "import smtplib, ssl\n\
         s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.example.test', timeout=20)\n\
         s.ehlo()\n\
         ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
         s.starttls(context=ctx)\n\
         s.ehlo()\n\
         s.sendmail('sender@client.example.test', ['keep@dest.example'], b'Subject: tls\\r\\n\\r\\nbody\\r\\n')\n\
         s.quit()\n"
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    sink.wait_messages(1);
    let helos = f.stage("helo");
    assert_eq!(helos.len(), 2, "{helos:?}");
    assert_eq!(helos[0].get("m:{tls_version}"), None);
    assert!(
        helos[1]
            .get("m:{tls_version}")
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{helos:?}"
    );
    assert!(helos[1].get("m:{cipher}").is_some(), "{helos:?}");
}

#[test]
fn a_session_without_filters_says_so_as_sendmail_does() {
    let sink = Sink::start();
    let mut d = daemon(&sink, "", &[]);
    let mut c = open(&mut d, "MTA-v6");
    c.cmd("QUIT");
    // sendmail 8.17 (built with MILTER) logs this for every session at LogLevel > 10
    // (../shared/conformance/smtp/unknown-params.txt).
    d.wait_log("NOQUEUE: Milter: no active filter");
}

/// A filter definition sendmail refuses (here `X` without a socket) is a configuration
/// error: the daemon does not start (exit 78, nothing opened) rather than passing mail
/// unfiltered, as sendmail exits EX_CONFIG.
#[test]
fn a_broken_filter_definition_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cf = dir.path().join("sendmail.cf");
    std::fs::write(
        &cf,
        "V10/Berkeley\nDjmta.example.test\nXbroken, F=R\nO InputMailFilters=broken\nO DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1\n",
    )
    .unwrap();
    let q = dir.path().join("mqueue");
    let out = support::run(&[
        "-bD",
        "-C",
        cf.to_str().unwrap(),
        "-O",
        &format!("QueueDirectory={}", q.display()),
        "-O",
        &format!("PidFile={}", dir.path().join("pid").display()),
        "-O",
        &format!("LogFile={}", dir.path().join("log").display()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("SYSERR: ") && err.contains("Xbroken"), "{err}");
    assert!(err.contains("not started"), "{err}");
}
