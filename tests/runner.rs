//! The queue runner end to end: `sendmail -q` (with and without a daemon), `-qR` selecting,
//! per-DaemonPortOptions DeliveryMode, and one connection per destination for a message's
//! recipients — the real binary, and an SMTP sink on loopback that counts connections.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Daemon, Smtp};

/// What the sink saw: per listening address, one entry per connection with its RCPT TOs.
#[derive(Default)]
struct Seen {
    sessions: BTreeMap<SocketAddr, Vec<Vec<String>>>,
    /// Each message's content as sent, dot-unstuffed, CRLF turned into LF.
    messages: Vec<Vec<u8>>,
}

/// An SMTP sink on the given addresses (same port on each), accepting everything.
struct Sink {
    port: u16,
    seen: Arc<Mutex<Seen>>,
}

impl Sink {
    fn start(ips: &[&str]) -> Sink {
        let first = TcpListener::bind((ips[0], 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            listeners.push(TcpListener::bind((*ip, port)).unwrap());
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        for l in listeners {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let local = l.local_addr().unwrap();
                for s in l.incoming().flatten() {
                    let seen = seen.clone();
                    std::thread::spawn(move || serve(s, local, &seen));
                }
            });
        }
        Sink { port, seen }
    }

    /// Waits until `n` messages (DATA ends) have arrived in total; returns the sessions.
    fn wait_sessions(&self, n: usize) -> BTreeMap<SocketAddr, Vec<Vec<String>>> {
        let start = Instant::now();
        loop {
            let seen = self.seen.lock().unwrap();
            let done: usize = seen
                .sessions
                .values()
                .flatten()
                .filter(|s| s.last().is_some_and(|l| l == "DATA-END"))
                .count();
            if done >= n {
                return seen.sessions.clone();
            }
            drop(seen);
            assert!(
                start.elapsed() < support::WAIT,
                "sink: {n} messages never came"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn rcpts(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        let mut all: Vec<String> = seen
            .sessions
            .values()
            .flatten()
            .flatten()
            .filter(|l| l.contains('@'))
            .cloned()
            .collect();
        all.sort();
        all
    }
}

fn serve(s: TcpStream, local: SocketAddr, seen: &Mutex<Seen>) {
    let idx = {
        let mut seen = seen.lock().unwrap();
        let v = seen.sessions.entry(local).or_default();
        v.push(Vec::new());
        v.len() - 1
    };
    let note =
        |what: String| seen.lock().unwrap().sessions.get_mut(&local).unwrap()[idx].push(what);
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let _ = w.write_all(b"220 sink.test ESMTP\r\n");
    let mut in_data = false;
    let mut content = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if in_data {
            if l == "." {
                in_data = false;
                // The client sent more without waiting for this message's reply: the next
                // message's envelope behind this body (PipelineAcrossMessages).
                if !r.buffer().is_empty() {
                    note("MORE-BEHIND-THE-BODY".into());
                }
                note("DATA-END".into());
                seen.lock()
                    .unwrap()
                    .messages
                    .push(std::mem::take(&mut content));
                let _ = w.write_all(b"250 2.0.0 queued as SINK\r\n");
            } else {
                content.extend_from_slice(l.strip_prefix('.').unwrap_or(l).as_bytes());
                content.push(b'\n');
            }
            continue;
        }
        let u = l.to_ascii_uppercase();
        let reply: &[u8] = if u.starts_with("EHLO") {
            b"250-sink.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        } else if let Some(rcpt) = u.strip_prefix("RCPT TO:") {
            let _ = rcpt;
            note(l["RCPT TO:".len()..].trim_matches(['<', '>']).to_string());
            b"250 2.1.5 ok\r\n"
        } else if u == "DATA" {
            in_data = true;
            b"354 go\r\n"
        } else if u == "QUIT" {
            let _ = w.write_all(b"221 2.0.0 bye\r\n");
            return;
        } else {
            b"250 2.0.0 ok\r\n"
        };
        let _ = w.write_all(reply);
    }
}

/// A cf whose `esmtp` mailer reaches the sink's port; remote mail goes by address literal.
fn cf(port: u16, extra: &str) -> String {
    format!(
        "Djmta.example.test\n\
         O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n\
         Mesmtp, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=990, T=DNS/RFC822/SMTP, A=TCP $h {port}\n\
         {extra}"
    )
}

/// Sends one message from `from` to `rcpts` over SMTP; returns the queue id.
fn send(addr: SocketAddr, from: &str, rcpts: &[String]) -> String {
    let mut c = Smtp::connect(addr);
    c.reply();
    c.cmd("EHLO client.example.test");
    assert!(c.cmd(&format!("MAIL FROM:<{from}>"))[0].starts_with("250"));
    for r in rcpts {
        let reply = c.cmd(&format!("RCPT TO:<{r}>"));
        assert!(reply[0].starts_with("250"), "{r}: {reply:?}");
    }
    assert!(c.cmd("DATA")[0].starts_with("354"));
    c.send("Subject: runner test\r\n\r\nhello\r\n.");
    let accepted = c.reply();
    assert!(accepted[0].starts_with("250 2.0.0 "), "{accepted:?}");
    c.cmd("QUIT");
    accepted[0].split_whitespace().nth(2).unwrap().to_string()
}

/// Runs `sendmail -q`; returns the `to=<rcpt>` line it logged for message `id`.
fn queue_run_line(d: &Daemon, id: &str, rcpt: &str) -> String {
    let out = d.sendmail(&["-q"]);
    assert!(out.status.success(), "{out:?}");
    let needle = format!("{id}: to=<{rcpt}>");
    let log = d.log_text();
    match log.lines().rev().find(|l| l.contains(&needle)) {
        Some(l) => l.to_string(),
        None => panic!("no {needle:?} in the log:\n{log}"),
    }
}

fn mailq(d: &Daemon) -> String {
    let out = d.sendmail(&["-bp"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sendmail_q_asks_the_running_daemon_and_returns_when_the_run_is_done() {
    let sink = Sink::start(&["127.0.0.2"]);
    let mut d = Daemon::start(&cf(sink.port, ""), &["-O", "DeliveryMode=queueonly"]);
    let v6 = d.addr_of("MTA-v6");
    let id = send(v6, "alice@client.example.test", &["bob@[127.0.0.2]".into()]);
    assert!(mailq(&d).contains(&id), "queue-only: the message waits");
    assert!(sink.rcpts().is_empty());

    let out = d.sendmail(&["-q"]);
    assert!(out.status.success(), "{out:?}");
    // The run is over when `sendmail -q` returns: delivered, logged, crossed off.
    assert_eq!(sink.rcpts(), ["bob@[127.0.0.2]"]);
    let log = d.log_text();
    // (queue-only mode logs `stat=queued` at receipt first, as sendmail does)
    let to = log
        .lines()
        .find(|l| l.contains("to=<bob@[127.0.0.2]>") && !l.contains("stat=queued"))
        .unwrap();
    assert!(
        to.contains(&format!(": {id}: ")) && to.contains("stat=Sent"),
        "{to}"
    );
    assert!(mailq(&d).contains("mqueue is empty"), "{}", mailq(&d));
}

#[test]
fn q_r_runs_only_the_messages_with_a_matching_recipient() {
    let sink = Sink::start(&["127.0.0.2", "127.0.0.3"]);
    let mut d = Daemon::start(&cf(sink.port, ""), &["-O", "DeliveryMode=queueonly"]);
    let v6 = d.addr_of("MTA-v6");
    let one = send(v6, "alice@client.example.test", &["bob@[127.0.0.2]".into()]);
    let two = send(
        v6,
        "alice@client.example.test",
        &["carol@[127.0.0.3]".into()],
    );

    let out = d.sendmail(&["-qR127.0.0.3"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sink.rcpts(), ["carol@[127.0.0.3]"]);
    let q = mailq(&d);
    assert!(q.contains(&one) && !q.contains(&two), "{q}");

    // -q!I<id>: everything but that id (here: nothing left but it, so nothing runs).
    let out = d.sendmail(&[&format!("-q!I{one}")]);
    assert!(out.status.success(), "{out:?}");
    assert!(mailq(&d).contains(&one));
    let out = d.sendmail(&[&format!("-qI{one}")]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sink.rcpts(), ["bob@[127.0.0.2]", "carol@[127.0.0.3]"]);
    assert!(mailq(&d).contains("mqueue is empty"));
}

#[test]
fn sendmail_q_without_a_daemon_takes_the_queue_itself() {
    let sink = Sink::start(&["127.0.0.2"]);
    let mut d = Daemon::start(&cf(sink.port, ""), &["-O", "DeliveryMode=queueonly"]);
    let v6 = d.addr_of("MTA-v6");
    let id = send(v6, "alice@client.example.test", &["bob@[127.0.0.2]".into()]);
    assert!(d.stop().success());
    assert!(mailq(&d).contains(&id));

    let out = d.sendmail(&["-qf", "-qSalice"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sink.rcpts(), ["bob@[127.0.0.2]"]);
    assert!(mailq(&d).contains("mqueue is empty"), "{}", mailq(&d));
    assert!(d.log_text().contains("stat=Sent"));
}

#[test]
fn a_bad_q_flag_is_a_usage_error() {
    let out = support::run(&["-qGmain"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("queue groups"));
}

#[test]
fn a_queue_only_daemon_beside_a_background_one_holds_its_mail_for_the_queue_run() {
    let sink = Sink::start(&["127.0.0.2"]);
    let extra = "O DaemonPortOptions=Name=MSA, Family=inet6, Port=0, Addr=::1, M=E, D=q\n";
    let mut d = Daemon::start(&cf(sink.port, extra), &[]);
    let (mta, msa) = (d.addr_of("MTA-v6"), d.addr_of("MSA"));
    let held = send(
        msa,
        "alice@client.example.test",
        &["held@[127.0.0.2]".into()],
    );
    send(
        mta,
        "alice@client.example.test",
        &["now@[127.0.0.2]".into()],
    );
    sink.wait_sessions(1);
    d.wait_log("to=<now@[127.0.0.2]>");
    assert_eq!(sink.rcpts(), ["now@[127.0.0.2]"]);
    assert!(mailq(&d).contains(&held));

    assert!(d.sendmail(&["-q"]).status.success());
    assert_eq!(sink.rcpts(), ["held@[127.0.0.2]", "now@[127.0.0.2]"]);
}

#[test]
fn a_hundred_recipients_at_three_destinations_are_three_connections() {
    let sink = Sink::start(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    let mut d = Daemon::start(&cf(sink.port, ""), &["-O", "DeliveryMode=queueonly"]);
    let v6 = d.addr_of("MTA-v6");
    let rcpts: Vec<String> = (0..100)
        .map(|i| format!("user{i:03}@[127.0.0.{}]", i % 3 + 2))
        .collect();
    send(v6, "alice@client.example.test", &rcpts);
    assert!(d.sendmail(&["-q"]).status.success());
    let sessions = sink.wait_sessions(3);
    assert_eq!(sessions.len(), 3, "three destinations");
    for (addr, conns) in &sessions {
        assert_eq!(conns.len(), 1, "{addr}: one connection");
    }
    let mut want = rcpts.clone();
    want.sort();
    assert_eq!(sink.rcpts(), want);
    assert!(mailq(&d).contains("mqueue is empty"));
}

#[test]
fn with_pipeline_across_messages_a_busy_hops_next_envelope_goes_behind_a_body() {
    let sink = Sink::start(&["127.0.0.2"]);
    let extra = "O DestinationConcurrencyLimit=1\nO PipelineAcrossMessages=True\n";
    let mut d = Daemon::start(&cf(sink.port, extra), &["-O", "DeliveryMode=queueonly"]);
    let v6 = d.addr_of("MTA-v6");
    // A first message: the runner learns what the hop's sessions offer.
    send(
        v6,
        "alice@client.example.test",
        &["first@[127.0.0.2]".into()],
    );
    assert!(d.sendmail(&["-q"]).status.success());
    sink.wait_sessions(1);
    // Ten at once over the hop's one connection: all but the first wait for it, and each
    // one's envelope goes behind the body before it.
    let rcpts: Vec<String> = (0..10).map(|i| format!("user{i}@[127.0.0.2]")).collect();
    for r in &rcpts {
        send(v6, "alice@client.example.test", std::slice::from_ref(r));
    }
    assert!(d.sendmail(&["-q"]).status.success());
    // `sendmail -q` returns when the run is done: all eleven went.
    assert_eq!(sink.seen.lock().unwrap().messages.len(), 11);
    let sessions = sink.seen.lock().unwrap().sessions.clone();
    let conns: Vec<&Vec<String>> = sessions.values().flatten().collect();
    assert_eq!(conns.len(), 1, "one connection: {conns:?}");
    let behind = conns[0]
        .iter()
        .filter(|l| *l == "MORE-BEHIND-THE-BODY")
        .count();
    assert!(
        behind >= 1,
        "no envelope went behind a body: {:?}",
        conns[0]
    );
    let mut want = rcpts.clone();
    want.push("first@[127.0.0.2]".into());
    want.sort();
    assert_eq!(sink.rcpts(), want);
    assert!(mailq(&d).contains("mqueue is empty"));
    d.stop();
}

/// A directory the delivery programs (run as `DefaultUser` when the tests run as root) can
/// read and write in.
fn open_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// A program that fails with EX_TEMPFAIL the first time and appends its input to `out`
/// after that.
fn flaky_program(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("flaky.sh");
    let out = dir.join("flaky.out");
    let flag = dir.join("flaky.tried");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ ! -e {flag} ]; then : > {flag}; exit 75; fi\ncat >> {out}\nexit 0\n",
            flag = flag.display(),
            out = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, out)
}

#[test]
fn an_alias_to_a_remote_address_is_delivered_remotely_and_a_retry_redelivers_nothing() {
    let sink = Sink::start(&["127.0.0.2"]);
    let dir = open_dir();
    let mbox = dir.path().join("list.mbox");
    let (flaky, flaky_out) = flaky_program(dir.path());
    let aliases = dir.path().join("aliases");
    std::fs::write(
        &aliases,
        format!(
            "list: {}, bob@[127.0.0.2], \"|{}\"\n",
            mbox.display(),
            flaky.display()
        ),
    )
    .unwrap();
    let extra = format!("O AliasFile={}\n", aliases.display());
    let mut d = Daemon::start(&cf(sink.port, &extra), &["-O", "DeliveryMode=queueonly"]);
    let v6 = d.addr_of("MTA-v6");
    let id = send(
        v6,
        "alice@client.example.test",
        &["list@mta.example.test".into()],
    );

    // First run: the file and the remote address take it, the program defers.
    assert!(d.sendmail(&["-q"]).status.success());
    assert_eq!(sink.rcpts(), ["bob@[127.0.0.2]"]);
    let log = d.log_text();
    let remote = log
        .lines()
        .find(|l| l.contains("to=bob@[127.0.0.2], "))
        .unwrap();
    assert!(
        remote.contains(&format!(": {id}: "))
            && remote.contains("mailer=esmtp, ")
            && remote.contains("stat=Sent"),
        "{remote}"
    );
    let prog = log
        .lines()
        .find(|l| l.contains(&format!("to=|{}, ", flaky.display())))
        .unwrap();
    assert!(
        prog.contains(", ctladdr=<list@mta.example.test> (")
            && prog.contains("mailer=prog, ")
            && prog.contains("dsn=4.0.0, stat=Deferred"),
        "{prog}"
    );
    let q = mailq(&d);
    assert!(q.contains(&id) && q.contains("(Deferred)"), "{q}");

    // The retry runs only the program: one copy in the file, one at the sink.
    assert!(d.sendmail(&["-q"]).status.success());
    assert!(mailq(&d).contains("mqueue is empty"), "{}", mailq(&d));
    let boxed = std::fs::read_to_string(&mbox).unwrap();
    assert_eq!(
        boxed.matches("\nSubject: runner test\n").count(),
        1,
        "{boxed}"
    );
    assert_eq!(sink.rcpts(), ["bob@[127.0.0.2]"]);
    let piped = std::fs::read_to_string(&flaky_out).unwrap();
    assert!(piped.contains("Subject: runner test\n"), "{piped}");
    assert_eq!(d.log_text().matches(": alias list => ").count(), 1);
}

#[test]
fn without_me_too_the_sender_is_left_out_of_a_list_it_is_on() {
    // sendmail 8.17 (the oracle, `-O MeToo=false`, `list: root, daemon`): `-f daemon list`
    // delivers to root only, with no line for daemon.
    let sink = Sink::start(&["127.0.0.2"]);
    let dir = open_dir();
    let aliases = dir.path().join("aliases");
    std::fs::write(&aliases, "list: daemon, bob@[127.0.0.2]\n").unwrap();
    let extra = format!("O AliasFile={}\n", aliases.display());
    let mut d = Daemon::start(
        &cf(sink.port, &extra),
        &["-O", "DeliveryMode=queueonly", "-O", "MeToo=false"],
    );
    let v6 = d.addr_of("MTA-v6");
    send(
        v6,
        "daemon@mta.example.test",
        &["list@mta.example.test".into()],
    );
    assert!(d.sendmail(&["-q"]).status.success());
    assert_eq!(sink.rcpts(), ["bob@[127.0.0.2]"]);
    assert!(mailq(&d).contains("mqueue is empty"), "{}", mailq(&d));
    let log = d.log_text();
    assert!(!log.contains("to=daemon,"), "{log}");
}

/// A local mailer program that records its argv, uid and stdin, and exits with the code in
/// `<dir>/exit` (0 when there is none).
fn recording_mda(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("mda.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nd={d}\nfor a in \"$0\" \"$@\"; do printf '[%s]\\n' \"$a\"; done > $d/argv\n\
             id -u > $d/uid\ncat > $d/stdin\ncode=$(cat $d/exit 2>/dev/null || echo 0)\nexit $code\n",
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn the_cf_local_mailer_program_runs_with_sendmails_argv_as_the_recipient() {
    let sink = Sink::start(&["127.0.0.2"]);
    let dir = open_dir();
    let mda = recording_mda(dir.path());
    let extra = format!(
        "Mlocal, P={}, F=lsDFMAw5:/|@qP9, S=EnvFromL/HdrFromL, R=EnvToL/HdrToL, T=DNS/RFC822/X-Unix, A=mda -f $g -d $u -a $h\n",
        mda.display()
    );
    let mut d = Daemon::start(&cf(sink.port, &extra), &["-O", "DeliveryMode=queueonly"]);
    let v6 = d.addr_of("MTA-v6");
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let rcpt = "nobody@mta.example.test";

    // EX_TEMPFAIL: deferred, kept.
    std::fs::write(dir.path().join("exit"), "75").unwrap();
    let id = send(v6, "alice@client.example.test", &[rcpt.into()]);
    let to = queue_run_line(&d, &id, rcpt);
    assert!(
        to.contains("mailer=local, ") && to.ends_with("dsn=4.0.0, stat=Deferred"),
        "{to}"
    );
    assert!(mailq(&d).contains(&id));

    // Success: sendmail's argv ($h empty for local mail), run as the user,
    // stdin = From line, Return-Path (F=P), the message with LF line ends.
    std::fs::write(dir.path().join("exit"), "0").unwrap();
    assert!(d.sendmail(&["-q"]).status.success());
    assert!(mailq(&d).contains("mqueue is empty"), "{}", mailq(&d));
    // (A script sees its own path as $0, whatever argv[0] the A= line gave it.)
    let argv = read("argv");
    assert_eq!(
        argv.split_once('\n').unwrap().1,
        "[-f]\n[alice@client.example.test]\n[-d]\n[nobody]\n[-a]\n[]\n"
    );
    assert_eq!(read("uid").trim(), "65534", "run as nobody");
    let stdin = read("stdin");
    let (from, rest) = stdin.split_once('\n').unwrap();
    assert!(
        from.starts_with("From alice@client.example.test "),
        "{from}"
    );
    let rest = rest
        .strip_prefix("Return-Path: <alice@client.example.test>\n")
        .unwrap_or_else(|| panic!("{stdin}"));
    assert!(rest.starts_with("Received: from "), "{rest}");
    assert!(
        rest.contains("\nSubject: runner test\n") && rest.ends_with("\n\nhello\n"),
        "{rest}"
    );
    assert!(!stdin.contains('\r'));

    // EX_NOUSER: a permanent failure with sendmail's words.
    std::fs::write(dir.path().join("exit"), "67").unwrap();
    let id = send(v6, "alice@client.example.test", &[rcpt.into()]);
    let bounced = queue_run_line(&d, &id, rcpt);
    assert!(
        bounced.ends_with("dsn=5.1.1, stat=User unknown"),
        "{bounced}"
    );
}

#[test]
fn a_daemon_with_a_queue_interval_runs_the_queue_by_itself() {
    let sink = Sink::start(&["127.0.0.2"]);
    let mut d = Daemon::start(
        &cf(sink.port, ""),
        &["-O", "DeliveryMode=queueonly", "-q1s"],
    );
    let v6 = d.addr_of("MTA-v6");
    send(v6, "alice@client.example.test", &["bob@[127.0.0.2]".into()]);
    sink.wait_sessions(1);
    d.wait_log("to=<bob@[127.0.0.2]>");
    assert_eq!(sink.rcpts(), ["bob@[127.0.0.2]"]);
}

#[test]
fn a_command_line_submission_waiting_in_the_maildrop_is_part_of_the_next_q_run() {
    let sink = Sink::start(&["127.0.0.2"]);
    let mut d = Daemon::start(&cf(sink.port, ""), &["-O", "DeliveryMode=queueonly"]);
    d.addr_of("MTA-v6");
    let mut child = std::process::Command::new(support::sendmail_bin())
        .args([
            "-C",
            d.cf.to_str().unwrap(),
            "-O",
            &format!("QueueDirectory={}", d.queue_dir().display()),
            "-f",
            "cron@mta.example.test",
            "carol@[127.0.0.2]",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: from cron\n\nnightly\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    // Straight away: the run picks the maildrop up first.
    assert!(d.sendmail(&["-q"]).status.success());
    assert_eq!(sink.rcpts(), ["carol@[127.0.0.2]"]);
}

#[test]
fn the_same_message_reaches_a_maildir_and_a_remote_peer_byte_for_byte() {
    let sink = Sink::start(&["127.0.0.2"]);
    let dir = open_dir();
    let maildir = dir.path().join("Maildir");
    let aliases = dir.path().join("aliases");
    std::fs::write(
        &aliases,
        format!("list: {}/, bob@[127.0.0.2]\n", maildir.display()),
    )
    .unwrap();
    let extra = format!("O AliasFile={}\n", aliases.display());
    let mut d = Daemon::start(&cf(sink.port, &extra), &["-O", "DeliveryMode=queueonly"]);
    let v6 = d.addr_of("MTA-v6");
    let mut c = Smtp::connect(v6);
    c.reply();
    c.cmd("EHLO client.example.test");
    c.cmd("MAIL FROM:<alice@client.example.test>");
    assert!(c.cmd("RCPT TO:<list@mta.example.test>")[0].starts_with("250"));
    c.cmd("DATA");
    c.send("Subject: both ways\r\n\r\nFrom the top\r\n..a dot\r\n>From quoted\r\nlast\r\n.");
    assert!(c.reply()[0].starts_with("250 2.0.0 "));
    c.cmd("QUIT");
    assert!(d.sendmail(&["-q"]).status.success());
    assert!(mailq(&d).contains("mqueue is empty"), "{}", mailq(&d));

    let new: Vec<_> = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    let stored = std::fs::read(&new[0]).unwrap();
    let sent = sink.seen.lock().unwrap().messages.clone();
    assert_eq!(sent.len(), 1);
    // Final delivery adds Return-Path (the local mailer's F=P); otherwise the very same bytes.
    let mut want = b"Return-Path: <alice@client.example.test>\n".to_vec();
    want.extend_from_slice(&sent[0]);
    assert_eq!(
        String::from_utf8_lossy(&stored),
        String::from_utf8_lossy(&want),
        "Maildir and SMTP peer got the same message"
    );
    assert!(
        stored.ends_with(b"\n\nFrom the top\n.a dot\n>From quoted\nlast\n"),
        "{}",
        String::from_utf8_lossy(&stored)
    );
}

/// A local mailer program that counts how many of its runs are under way at once (the
/// highest count in `<dir>/max`), reads its input, waits a little, and appends a line to
/// `<dir>/done`.
fn counting_mda(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("count.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nd={d}\n\
             (flock 9; n=$(($(cat $d/n 2>/dev/null || echo 0) + 1)); echo $n > $d/n;\n\
              [ $n -gt $(cat $d/max 2>/dev/null || echo 0) ] && echo $n > $d/max) 9>$d/lock\n\
             cat > /dev/null\nsleep 0.2\n\
             (flock 9; echo $(($(cat $d/n) - 1)) > $d/n; echo x >> $d/done) 9>$d/lock\nexit 0\n",
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn local_deliveries_to_one_recipient_run_at_most_two_at_once() {
    let sink = Sink::start(&["127.0.0.2"]);
    let dir = open_dir();
    let mda = counting_mda(dir.path());
    let extra = format!(
        "Mlocal, P={}, F=lsDFMAw5:/|@qSP9, T=DNS/RFC822/X-Unix, A=count $u\n",
        mda.display()
    );
    let mut d = Daemon::start(&cf(sink.port, &extra), &["-O", "DeliveryMode=queueonly"]);
    let v6 = d.addr_of("MTA-v6");
    for _ in 0..8 {
        send(
            v6,
            "alice@client.example.test",
            &["nobody@mta.example.test".into()],
        );
    }
    // One queue run takes all eight messages at once; the mailbox sees two at a time.
    assert!(d.sendmail(&["-q"]).status.success());
    assert!(mailq(&d).contains("mqueue is empty"), "{}", mailq(&d));
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_eq!(read("done").lines().count(), 8);
    let max: usize = read("max").trim().parse().unwrap();
    assert!(
        (1..=2).contains(&max),
        "{max} deliveries to one mailbox at once"
    );
}

#[test]
fn a_queue_run_has_at_most_max_runners_per_queue_messages_in_delivery() {
    let sink = Sink::start(&["127.0.0.2"]);
    let dir = open_dir();
    let mda = counting_mda(dir.path());
    // Debian's cf sets MaxRunnersPerQueue=5; here 3, with the per-mailbox bound (ours) out
    // of the way, so that only the runners bound the run.
    let extra = format!(
        "O MaxRunnersPerQueue=3\nO LocalDestinationConcurrencyLimit=20\n\
         Mlocal, P={}, F=lsDFMAw5:/|@qSP9, T=DNS/RFC822/X-Unix, A=count $u\n",
        mda.display()
    );
    let mut d = Daemon::start(&cf(sink.port, &extra), &["-O", "DeliveryMode=queueonly"]);
    assert!(!d.log_text().contains("MaxRunnersPerQueue"), "no warning");
    let v6 = d.addr_of("MTA-v6");
    for _ in 0..9 {
        send(
            v6,
            "alice@client.example.test",
            &["nobody@mta.example.test".into()],
        );
    }
    // `sendmail -q` is a queue run: nine messages, never more than three at once.
    assert!(d.sendmail(&["-q"]).status.success());
    assert!(mailq(&d).contains("mqueue is empty"), "{}", mailq(&d));
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_eq!(read("done").lines().count(), 9);
    let max: usize = read("max").trim().parse().unwrap();
    assert!(
        (1..=3).contains(&max),
        "{max} messages in delivery at once in one queue run"
    );
}
