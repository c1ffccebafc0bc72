//! Command-line submission as cron, mail(1) and scripts use it: `sendmail [-t] [-f] [-i] rcpt
//! < message` and `sendmail -bs`, with and without a running daemon; `mailq` shows the result.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use support::Daemon;

const CF: &str =
    "Djmta.example.test\nO DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n";

/// Runs the binary with `stdin` as its input.
fn run_with_input(args: &[&str], stdin: &str) -> Output {
    support::run_bin_with_input(std::path::Path::new(support::sendmail_bin()), args, stdin)
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sendmail.cf"), CF).unwrap();
        Env { dir }
    }

    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut v = vec![
            "-C".to_string(),
            self.dir.path().join("sendmail.cf").display().to_string(),
            "-O".to_string(),
            format!(
                "QueueDirectory={}",
                self.dir.path().join("mqueue").display()
            ),
            "-O".to_string(),
            format!("LogFile={}", self.dir.path().join("maillog").display()),
            // Queue only: root's submission without a daemon would otherwise be delivered
            // at once (tests/submit_setgid.rs); these tests look at the queue.
            "-odq".to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    fn send(&self, extra: &[&str], input: &str) -> Output {
        let args = self.args(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_with_input(&refs, input)
    }

    fn mailq(&self) -> String {
        let out = self.send(&["-bp"], "");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

#[test]
fn a_message_from_stdin_waits_in_the_queue_without_a_daemon() {
    let env = Env::new();
    let out = env.send(
        &["-f", "sender@client.example.test", "root"],
        "Subject: cron\n\nline one\n.\nnot part of the message\n",
    );
    assert!(out.status.success(), "{out:?}");
    let q = env.mailq();
    assert!(q.contains("(1 request)"), "{q}");
    assert!(q.contains("sender@client.example.test"), "{q}");
    assert!(q.contains("root"), "{q}");
    let log = env.log();
    assert!(
        // the size as read, up to the lone dot, without the headers sendmail adds (as the
        // oracle logs it: tests/differential/scenarios/75-sendmail-lone-dot.txt)
        log.contains("from=sender@client.example.test, size=24, class=0"),
        "{log}"
    );
    assert!(log.contains(", nrcpts=1, msgid=<"), "{log}");
    assert!(log.contains("relay=root@localhost"), "{log}");
}

#[test]
fn t_takes_recipients_from_the_headers() {
    let env = Env::new();
    let out = env.send(
        &["-t", "-i"],
        "To: alice@example.test\nCc: bob@example.test\nBcc: carol@example.test\nSubject: t\n\n.\n",
    );
    assert!(out.status.success(), "{out:?}");
    let q = env.mailq();
    for r in [
        "alice@example.test",
        "bob@example.test",
        "carol@example.test",
    ] {
        assert!(q.contains(r), "{r} in {q}");
    }
    assert!(env.log().contains("nrcpts=3"));
}

#[test]
fn no_recipients_is_a_usage_error() {
    let env = Env::new();
    let out = env.send(&[], "Subject: nobody\n\n");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Recipient names must be specified"));
    let out = env.send(&["-t"], "Subject: nobody\n\n");
    assert_eq!(out.status.code(), Some(64));
    assert!(
        !env.dir.path().join("mqueue/maildrop").exists(),
        "nothing was queued"
    );
}

#[test]
fn bs_speaks_smtp_on_stdin_and_stdout() {
    use std::io::{BufRead, BufReader};
    let env = Env::new();
    let args = env.args(&["-bs"]);
    let mut child = Command::new(support::sendmail_bin())
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    // Driven line by line, waiting for each reply, as the recorded sendmail session was.
    let mut reply = || {
        let mut lines = String::new();
        loop {
            let mut l = String::new();
            assert!(output.read_line(&mut l).unwrap() > 0, "EOF after {lines}");
            lines.push_str(&l);
            if l.as_bytes().get(3) != Some(&b'-') {
                return lines;
            }
        }
    };
    assert!(reply().starts_with("220 mta.example.test ESMTP "));
    let mut say = |line: &str| input.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    say("EHLO localhost");
    assert!(reply().contains("Hello root@localhost"));
    say("MAIL FROM:<root>");
    assert!(reply().starts_with("250 2.1.0"));
    say("RCPT TO:<alice@example.test>");
    assert!(reply().starts_with("250 2.1.5"));
    say("DATA");
    assert!(reply().starts_with("354 "));
    say("Subject: bs\r\n\r\nhello\r\n.");
    let accepted = reply();
    assert!(
        accepted.ends_with(" Message accepted for delivery\r\n"),
        "{accepted}"
    );
    say("QUIT");
    assert_eq!(reply(), "221 2.0.0 mta.example.test closing connection\r\n");
    drop(input);
    assert!(child.wait().unwrap().success());
    assert!(env.mailq().contains("alice@example.test"));
}

#[test]
fn a_running_daemon_picks_submissions_up() {
    // Queue-only: the message stays queued for mailq to show after the pickup.
    let mut d = Daemon::start(CF, &["-O", "DeliveryMode=queueonly"]);
    let qopt = format!("QueueDirectory={}", d.queue_dir().display());
    let cf = d.cf.display().to_string();
    let out = run_with_input(
        &["-C", &cf, "-O", &qopt, "-f", "root", "alice@example.test"],
        "Subject: picked up\n\nhi\n",
    );
    assert!(out.status.success(), "{out:?}");
    let maildrop = d.queue_dir().join("maildrop");
    let start = std::time::Instant::now();
    loop {
        let waiting = std::fs::read_dir(&maildrop).map(|r| r.count()).unwrap_or(0);
        if waiting == 0 {
            break;
        }
        assert!(start.elapsed() < support::WAIT, "not picked up");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = run_with_input(&["-bp", "-C", &cf, "-O", &qopt], "");
    let q = String::from_utf8_lossy(&out.stdout);
    assert!(
        q.contains("(1 request)") && q.contains("alice@example.test"),
        "{q}"
    );
    d.stop();
}
