//! Issue 16, items 5 and 8, against the real binary over SMTP: the hardened embedded default
//! (every `PrivacyOptions` flag it sets, the listen backlog), mail loops (`MaxHopCount`), and
//! AUTH guessing over parallel connections (the per-address limit).
//!
//! The replies and log lines expected are sendmail 8.17.1.9's, recorded with the oracle
//! (`O PrivacyOptions=authwarnings,noexpn,novrfy,noetrn,needmailhelo,restrictqrun` on its
//! cf) in `tests/data/hardened-default/` (see its README for the commands).

mod support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use base64::Engine as _;
use support::dsn_sink::{Sink, relay_to, wait_queue_empty};
use support::{Daemon, Smtp, WAIT, sendmail_bin};

/// The embedded default cf, listening on an ephemeral loopback port only (its own
/// `DaemonPortOptions` replaced by the test's), queue-only.
fn default_daemon(extra: &[&str]) -> Daemon {
    let cf = format!("{}\nDjmta.example.test\n", sendmail_rs::config::DEFAULT_CF);
    let mut args = vec![
        "-O",
        "DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1",
        "-O",
        "DeliveryMode=queueonly",
        "-O",
        "AliasFile=",
    ];
    args.extend_from_slice(extra);
    Daemon::start(&cf, &args)
}

#[test]
fn the_default_refuses_expn_vrfy_etrn_and_mail_before_helo_as_sendmail_does() {
    let mut d = default_daemon(&[]);
    let mut c = Smtp::connect(d.addr_of("MTA-v4"));
    assert!(c.reply()[0].starts_with("220 "));
    // needmailhelo (oracle: tests/data/hardened-default/oracle-smtp-session.txt)
    assert_eq!(
        c.cmd("MAIL FROM:<a@client.example.test>"),
        ["503 5.0.0 Polite people say HELO first"]
    );
    assert!(c.cmd("HELO client.example.test")[0].starts_with("250 mta.example.test Hello"));
    assert_eq!(
        c.cmd("EXPN root"),
        ["502 5.7.0 Sorry, we do not allow this operation"]
    );
    assert_eq!(
        c.cmd("VRFY root"),
        ["252 2.5.2 Cannot VRFY user; try RCPT to attempt delivery (or try finger)"]
    );
    assert_eq!(
        c.cmd("ETRN client.example.test"),
        ["502 5.7.0 Sorry, we do not allow this operation"]
    );
    let ehlo = c.cmd("EHLO client.example.test");
    // Whole keywords: `DELIVERBY` (offered, as sendmail does) contains "VERB".
    assert!(
        !ehlo
            .iter()
            .any(|l| matches!(&l[4..], "EXPN" | "ETRN" | "VERB" | "VRFY")),
        "{ehlo:?}"
    );
    c.cmd("QUIT");
    let log = d.wait_log("ETRN client.example.test [rejected]");
    for line in [
        "localhost [127.0.0.1]: EXPN root [rejected]",
        "localhost [127.0.0.1]: VRFY root [rejected]",
        "localhost [127.0.0.1]: ETRN client.example.test [rejected]",
    ] {
        assert!(log.contains(line), "{line}\n{log}");
    }
}

#[test]
fn the_default_backlog_greets_a_burst_of_200_clients() {
    let mut d = default_daemon(&[]);
    let addr = d.addr_of("MTA-v4");
    // The listening socket's backlog, as `ss` shows it (Send-Q of a LISTEN socket).
    let ss = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", addr.port())])
        .output()
        .expect("ss (iproute2)");
    let ss = String::from_utf8_lossy(&ss.stdout).to_string();
    let backlog: u32 = ss
        .split_whitespace()
        .nth(2)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no LISTEN line: {ss}"));
    assert!(backlog >= 200, "backlog {backlog}: {ss}");
    // 200 clients connect at once (the daemon's own pace decides nothing: every one must be
    // greeted within the generous WAIT).
    let start = Instant::now();
    let clients: Vec<std::thread::JoinHandle<String>> = (0..200)
        .map(|_| {
            std::thread::spawn(move || {
                let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
                s.set_read_timeout(Some(WAIT)).unwrap();
                let mut r = BufReader::new(s);
                let mut line = String::new();
                r.read_line(&mut line).expect("greeting");
                line
            })
        })
        .collect();
    let greetings: Vec<String> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(start.elapsed() < WAIT * 2);
    let greeted = greetings.iter().filter(|g| g.starts_with("220 ")).count();
    assert_eq!(
        greeted,
        200,
        "{:?}",
        greetings.iter().find(|g| !g.starts_with("220 "))
    );
}

#[test]
fn a_cf_listen_value_is_still_honoured() {
    let cf = "Djmta.example.test\nO DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1, Listen=7\n";
    let mut d = Daemon::start(cf, &[]);
    let port = d.addr_of("MTA-v4").port();
    let ss = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .unwrap();
    let ss = String::from_utf8_lossy(&ss.stdout).to_string();
    assert_eq!(ss.split_whitespace().nth(2), Some("7"), "{ss}");
}

/// `sendmail -q` as `nobody` on the default (restrictqrun): refused in sendmail's words with
/// EX_NOPERM, unless `nobody` owns the queue directory.
#[test]
fn restrictqrun_refuses_a_queue_run_by_another_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to run sendmail -q as nobody");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cf = dir.path().join("default.cf");
    std::fs::write(&cf, sendmail_rs::config::DEFAULT_CF).unwrap();
    let queue = dir.path().join("mqueue");
    std::fs::create_dir(&queue).unwrap();
    std::fs::set_permissions(&queue, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |cf_text: Option<&str>| {
        if let Some(t) = cf_text {
            std::fs::write(&cf, t).unwrap();
        }
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(sendmail_bin())
            .args(["-C", cf.to_str().unwrap(), "-q", "-O"])
            .arg(format!("QueueDirectory={}", queue.display()))
            .args(["-O", "LogFile=/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = as_nobody(None);
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "You do not have permission to process the queue\n"
    );
    // The queue's owner may run it.
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    nix::unistd::chown(&queue, Some(nobody.uid), None).unwrap();
    let out = as_nobody(None);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("You do not have permission"),
        "{out:?}"
    );
    assert_ne!(out.status.code(), Some(77), "{out:?}");
    // Without restrictqrun (sendmail's own default) nobody is not refused for that reason.
    nix::unistd::chown(&queue, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    let out = as_nobody(Some(
        &sendmail_rs::config::DEFAULT_CF.replace(",restrictqrun", ""),
    ));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("You do not have permission"),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Loops: MaxHopCount.

fn looping_message(received: usize, subject: &str) -> String {
    let mut m = String::new();
    for i in 0..received {
        m.push_str(&format!(
            "Received: from h{i}.example.test by relay{i}.example.test; Sun, 6 Dec 2026 04:00:00 +0000\r\n"
        ));
    }
    m.push_str(&format!(
        "From: sender@client.example.test\r\nSubject: {subject}\r\n\r\nbody\r\n."
    ));
    m
}

fn send_looping(d: &mut Daemon, daemon: &str, received: usize, subject: &str) {
    let mut c = Smtp::connect(d.addr_of(daemon));
    c.reply();
    c.cmd("EHLO client.example.test");
    assert!(c.cmd("MAIL FROM:<sender@client.example.test>")[0].starts_with("250"));
    assert!(c.cmd("RCPT TO:<friend@remote.example.test>")[0].starts_with("250"));
    assert!(c.cmd("DATA")[0].starts_with("354"));
    c.send(&looping_message(received, subject));
    // sendmail accepts it (the verdict comes at delivery): oracle-smtp-session.txt
    let r = c.reply();
    assert!(r[0].starts_with("250 2.0.0 "), "{r:?}");
    c.cmd("QUIT");
}

/// The bounce and the SYSERR line of a message that looped, and nothing delivered.
fn assert_bounced_too_many_hops(d: &mut Daemon, sink: &Sink, hops: u32, max: u32, subject: &str) {
    let dsns = sink.wait_dsns(1);
    let dsn = &dsns[0];
    assert!(dsn.contains("(reason: 554 5.4.6 Too many hops)"), "{dsn}");
    assert!(dsn.contains("Status: 5.4.6"), "{dsn}");
    let log = d.wait_log("Too many hops");
    let want = format!(
        "SYSERR(root): Too many hops {hops} ({max} max): from <sender@client.example.test> via [IPv6:0:0:0:0:0:0:0:1], to <friend@remote.example.test>"
    );
    assert!(log.contains(&want), "{want}\n{log}");
    wait_queue_empty(d);
    let delivered: Vec<String> = sink
        .messages()
        .into_iter()
        .filter(|m| !m.starts_with("X-Sink-Mail: From:<>"))
        .collect();
    assert!(
        !delivered.iter().any(|m| m.contains(subject)),
        "the looping message was delivered: {delivered:?}"
    );
}

/// 120 `Received:` headers: bounced `Too many hops 121 (25 max)`, as sendmail 8.17 does
/// (oracle-maillog.txt, oracle-hops-bounce.eml).
#[test]
fn a_message_with_120_received_headers_bounces_too_many_hops() {
    let sink = Sink::start();
    let (mut d, _) = relay_to(&sink, &[]);
    send_looping(&mut d, "MTA-v6", 120, "loop120");
    assert_bounced_too_many_hops(&mut d, &sink, 121, 25, "loop120");
}

/// The boundary, as the oracle drew it: 24 `Received:` (25 with ours) go through; 25 (26)
/// bounce.
#[test]
fn twenty_four_received_headers_are_delivered_and_twenty_five_bounce() {
    let sink = Sink::start();
    let (mut d, _) = relay_to(&sink, &[]);
    send_looping(&mut d, "MTA-v6", 24, "hops24");
    let got = sink.wait_messages(1);
    assert!(got[0].contains("Subject: hops24"), "{got:?}");
    send_looping(&mut d, "MTA-v6", 25, "hops25");
    assert_bounced_too_many_hops(&mut d, &sink, 26, 25, "hops25");
}

/// A cf's own `MaxHopCount` is the limit.
#[test]
fn the_cf_max_hop_count_is_the_limit() {
    let sink = Sink::start();
    let (mut d, _) = relay_to(&sink, &["-O", "MaxHopCount=5"]);
    send_looping(&mut d, "MTA-v6", 5, "hops5");
    assert_bounced_too_many_hops(&mut d, &sink, 6, 5, "hops5");
}

/// Under `RunAsUser` (the unprivileged daemon decides; the SYSERR still names root, the
/// user who started it, as sendmail's RealUserName does).
#[test]
fn a_looping_message_bounces_under_run_as_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: RunAsUser needs root");
        return;
    }
    let sink = Sink::start();
    let aliases = tempfile::tempdir().unwrap().keep().join("aliases");
    std::fs::write(&aliases, "postmaster: root\n").unwrap();
    let cf = format!(
        "Djmta.example.test\n\
         DSrelay:[127.0.0.1]\n\
         O AliasFile={}\n\
         O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n\
         Mrelay, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=2040, T=DNS/RFC822/SMTP, A=TCP $h {}\n",
        aliases.display(),
        sink.port
    );
    const OPEN_DIR: &str = "for a; do case \"$a\" in QueueDirectory=*) q=\"${a#QueueDirectory=}\";; esac; done; \
         chmod 755 \"$(dirname \"$q\")\" && exec \"$@\"";
    let mut d = Daemon::start_wrapped(
        &cf,
        &["-O", "RunAsUser=nobody", "-O", "DefaultUser=daemon:daemon"],
        &["sh", "-c", OPEN_DIR, "sh"],
    );
    send_looping(&mut d, "MTA-v6", 120, "loop120-runas");
    assert_bounced_too_many_hops(&mut d, &sink, 121, 25, "loop120-runas");
}

// ---------------------------------------------------------------------------------------
// AUTH guessing across connections.

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

fn auth_daemon() -> Daemon {
    let dir = tempfile::tempdir().unwrap().keep();
    let hash = Command::new("openssl")
        .args(["passwd", "-6", PASSWORD])
        .output()
        .unwrap();
    let hash = String::from_utf8(hash.stdout).unwrap();
    let passwd = dir.join("auth-passwd");
    std::fs::write(&passwd, format!("{USER}:{}\n", hash.trim())).unwrap();
    let cf = format!(
        "Djmta.example.test\n\
         O AuthPasswordFile={}\n\
         O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1\n",
        passwd.display()
    );
    Daemon::start(&cf, &["-O", "DeliveryMode=queueonly"])
}

fn auth_plain(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("AUTH PLAIN {}", b64.encode(format!("\0{user}\0{password}")))
}

/// One connection from `source` making up to 3 wrong guesses; the replies to its AUTHs.
fn guess(addr: SocketAddr, source: &str, n: usize) -> Vec<String> {
    let mut c = Smtp::connect_from(addr, source);
    c.reply();
    c.cmd("EHLO client.example.test");
    let mut replies = Vec::new();
    for i in 0..n {
        let r = c.cmd(&auth_plain(USER, &format!("guess {i}")));
        let last = r.last().cloned().unwrap_or_default();
        replies.push(last.clone());
        if last.starts_with("421") {
            break;
        }
    }
    replies
}

#[test]
fn auth_guesses_over_parallel_connections_are_limited_per_address() {
    let mut d = auth_daemon();
    let addr = d.addr_of("MTA-v4");
    // 20 connections at once from 127.0.0.9, 3 guesses each: 60 guesses asked for.
    let threads: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || guess(addr, "127.0.0.9", 3)))
        .collect();
    let replies: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let checked = replies
        .iter()
        .filter(|r| r.starts_with("535 ") || r.contains("Too many AUTH failures"))
        .count();
    // Every connection ends with one 421: its own third failure, or the address's limit.
    let closed = replies
        .iter()
        .filter(|r| r.starts_with("421 4.7.0 mta.example.test Too many AUTH failures"))
        .count();
    // Without the per-address limit all 60 guesses are checked (3 per connection). With it,
    // a guess is checked only while fewer than 10 failures are counted, so at most 9 plus one
    // in flight per connection (20) can be: 29, whatever the order the daemon sees them in.
    let failures = d.log_text().matches("AUTH failure (PLAIN)").count();
    assert!(
        (10..=29).contains(&failures),
        "{failures} checked: {replies:?}"
    );
    assert!(checked >= failures, "{replies:?}");
    assert_eq!(closed, 20, "{replies:?}");
    assert!(replies.len() < 60, "{replies:?}");
    let log = d.wait_log("possible SMTP attack: command=AUTH, count=");
    assert!(
        log.contains("[127.0.0.9]: possible SMTP attack: command=AUTH, count="),
        "{log}"
    );
    // Now even the right password from 127.0.0.9 is refused unchecked…
    let mut c = Smtp::connect_from(addr, "127.0.0.9");
    c.reply();
    c.cmd("EHLO client.example.test");
    let r = c.cmd(&auth_plain(USER, PASSWORD));
    assert!(r[0].starts_with("421 4.7.0 "), "{r:?}");
    // …while another address is not affected.
    let mut c = Smtp::connect_from(addr, "127.0.0.10");
    c.reply();
    c.cmd("EHLO client.example.test");
    assert_eq!(
        c.cmd(&auth_plain(USER, "wrong")),
        ["535 5.7.0 authentication failed"]
    );
    assert_eq!(
        c.cmd(&auth_plain(USER, PASSWORD)),
        ["235 2.0.0 OK Authenticated"]
    );
    fail2ban_sees_every_failure(&d, failures);
}

/// Debian's fail2ban `sendmail-auth` filter reads our log lines: every `AUTH failure` and
/// `possible SMTP attack: command=AUTH` line is a match, with the client's address.
fn fail2ban_sees_every_failure(d: &Daemon, failures: usize) {
    let filter = "/etc/fail2ban/filter.d/sendmail-auth.conf";
    if !std::path::Path::new(filter).exists() {
        eprintln!("SKIPPED: fail2ban is not installed ({filter})");
        return;
    }
    let log = d.log_text();
    let attacks = log.matches("possible SMTP attack: command=AUTH").count();
    let out = Command::new("fail2ban-regex")
        .args(["--print-all-matched", d.log.to_str().unwrap(), filter])
        .output()
        .expect("fail2ban-regex");
    let text = String::from_utf8_lossy(&out.stdout);
    let total = format!("Failregex: {} total", failures + 1 + attacks);
    assert!(text.contains(&total), "want {total}\n{text}\n{log}");
    assert!(
        text.contains("127.0.0.9") && text.contains("127.0.0.10"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// authwarnings: the X-Authentication-Warning header, as sendmail adds it.

/// No HELO (a cf with `authwarnings` but not `needmailhelo`): logged and added as a header.
#[test]
fn authwarnings_adds_the_no_helo_header() {
    let cf = "Djmta.example.test\n\
              O PrivacyOptions=authwarnings\n\
              O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1\n";
    let mut d = Daemon::start(cf, &["-O", "DeliveryMode=queueonly"]);
    let mut c = Smtp::connect(d.addr_of("MTA-v4"));
    c.reply();
    assert!(c.cmd("MAIL FROM:<a@client.example.test>")[0].starts_with("250"));
    assert!(c.cmd("RCPT TO:<friend@remote.example.test>")[0].starts_with("250"));
    assert!(c.cmd("DATA")[0].starts_with("354"));
    c.send("Subject: no helo\r\n\r\nbody\r\n.");
    assert!(c.reply()[0].starts_with("250 2.0.0"));
    c.cmd("QUIT");
    let text = "mta.example.test: localhost [127.0.0.1] didn't use HELO protocol";
    d.wait_log(&format!("Authentication-Warning: {text}"));
    let q = d.queue_text();
    assert!(
        q.contains(&format!("X-Authentication-Warning: {text}\n")),
        "{q}"
    );
}

/// `-f` by a user who is not trusted: `nobody set sender to … using -f` (oracle's qf in
/// oracle-cli-nobody.txt); root (trusted) gets no warning.
#[test]
fn authwarnings_adds_the_untrusted_sender_header() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to submit as nobody");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cf = dir.path().join("default.cf");
    std::fs::write(
        &cf,
        format!("{}\nDjmta.example.test\n", sendmail_rs::config::DEFAULT_CF),
    )
    .unwrap();
    let queue = dir.path().join("mqueue");
    std::fs::create_dir(&queue).unwrap();
    std::fs::set_permissions(&queue, std::fs::Permissions::from_mode(0o777)).unwrap();
    let submit = |who: &[&str]| {
        let mut child = Command::new(who[0])
            .args(&who[1..])
            .arg(sendmail_bin())
            .args(["-C", cf.to_str().unwrap(), "-O"])
            .arg(format!("QueueDirectory={}", queue.display()))
            .args(["-O", "LogFile=/dev/null"])
            .args(["-f", "forged@client.example.test", "alice"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Subject: f test\n\nhi\n")
            .unwrap();
        assert!(child.wait().unwrap().success());
    };
    let maildrop_text = || {
        let mut t = String::new();
        for e in std::fs::read_dir(queue.join("maildrop")).unwrap().flatten() {
            if e.path().is_file() {
                t.push_str(&String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()));
            }
        }
        t
    };
    // nobody first (the maildrop it makes is its own, 0700; root may write there too).
    submit(&[
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--",
    ]);
    let t = maildrop_text();
    assert_eq!(t.matches("X-Authentication-Warning").count(), 1, "{t}");
    assert!(
        t.contains(
            "X-Authentication-Warning: mta.example.test: nobody set sender to forged@client.example.test using -f\n"
        ),
        "{t}"
    );
    // root (trusted) in a maildrop of its own (root refuses one another account owns).
    std::fs::remove_dir_all(queue.join("maildrop")).unwrap();
    submit(&["env"]);
    let t = maildrop_text();
    assert!(
        t.contains("Subject: f test"),
        "root's submission is there: {t}"
    );
    assert_eq!(
        t.matches("X-Authentication-Warning").count(),
        0,
        "root is trusted: {t}"
    );
}
