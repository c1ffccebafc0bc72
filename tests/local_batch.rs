//! Batched local delivery end to end: the real daemon, real SMTP from several sessions at
//! once, many messages to one mbox file and one Maildir through the aliases.
//!
//! The mbox is held (`flock`) by the test while the messages arrive, as a mail reader would
//! hold it: the first delivery waits for the lock and the others queue behind it. The test
//! waits until the daemon's metrics show every delivery queued (state, not time), lets go,
//! and then finds all of them written under one lock with one fsync
//! (`sendmail_local_mailbox_syncs_total`), each message whole and once, in an mbox that
//! mail-parser reads. The Maildir gets every message once, nothing left in `tmp/`.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use support::{Daemon, Smtp, scrape_metrics as scrape};

const N: usize = 24;
const SESSIONS: usize = 4;
const WAIT: Duration = Duration::from_secs(60);

fn wait_metric(addr: SocketAddr, name: &str, want: f64) -> BTreeMap<String, f64> {
    let until = Instant::now() + WAIT;
    loop {
        let s = scrape(addr);
        if s.get(name) == Some(&want) {
            return s;
        }
        assert!(Instant::now() < until, "{name} never reached {want}: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `N` messages to `rcpt` from `SESSIONS` sessions at once; message `i` says `i` in its
/// subject and body (and has a line starting with `From `).
fn send_all(addr: SocketAddr, rcpt: &str) {
    let threads: Vec<_> = (0..SESSIONS)
        .map(|s| {
            let rcpt = rcpt.to_string();
            std::thread::spawn(move || {
                let mut c = Smtp::connect(addr);
                c.reply();
                c.cmd("EHLO client.example.test");
                for i in (s..N).step_by(SESSIONS) {
                    assert!(c.cmd("MAIL FROM:<sender@client.example.test>")[0].starts_with("250"));
                    assert!(c.cmd(&format!("RCPT TO:<{rcpt}>"))[0].starts_with("250"));
                    assert!(c.cmd("DATA")[0].starts_with("354"));
                    c.send(&format!(
                        "Subject: message {i}\r\n\r\nFrom the body of message {i}\r\nline two of {i}\r\n."
                    ));
                    let r = c.reply();
                    assert!(r[0].starts_with("250 2.0.0 "), "{r:?}");
                }
                c.cmd("QUIT");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// The body a message `i` must arrive with (mbox quoting undone by the reader or not).
fn check_whole(i: usize, text: &str) {
    assert!(text.contains(&format!("Subject: message {i}\n")), "{text}");
    assert!(
        text.contains(&format!("From the body of message {i}\nline two of {i}\n")),
        "{text}"
    );
}

/// The number in `Subject: message N`.
fn subject_number(text: &str) -> usize {
    let line = text
        .lines()
        .find(|l| l.starts_with("Subject: message "))
        .unwrap_or_else(|| panic!("no subject: {text}"));
    line["Subject: message ".len()..].trim().parse().unwrap()
}

#[test]
fn many_messages_to_one_mbox_and_one_maildir_arrive_whole_once_with_shared_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    // an alias /file is written as DefaultUser: a sticky directory, a mailbox it may write
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mbox = dir.path().join("box.mbox");
    std::fs::write(&mbox, b"").unwrap();
    std::fs::set_permissions(&mbox, std::fs::Permissions::from_mode(0o666)).unwrap();
    let maildir = dir.path().join("Maildir");
    let aliases = dir.path().join("aliases");
    std::fs::write(
        &aliases,
        format!("box: {}\nmd: {}/\n", mbox.display(), maildir.display()),
    )
    .unwrap();
    let cf = format!(
        "Djmta.example.test\n\
         O AliasFile={}\n\
         O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n",
        aliases.display()
    );
    let mut d = Daemon::start(&cf, &["-O", "MetricsAddress=[::1]:0"]);
    let smtp = d.addr_of("MTA-v6");
    let metrics = d.metrics_addr();

    // The mbox is held by a reader: every delivery to it queues.
    let reader = std::fs::File::open(&mbox).unwrap();
    reader.lock().unwrap();
    send_all(smtp, "box@mta.example.test");
    wait_metric(metrics, "sendmail_local_mailbox_waiting", N as f64);
    assert_eq!(std::fs::metadata(&mbox).unwrap().len(), 0);
    reader.unlock().unwrap();
    d.wait_log_count("stat=Sent", N);
    let s = wait_metric(metrics, "sendmail_local_mailbox_messages_total", N as f64);
    assert_eq!(
        s.get("sendmail_local_mailbox_syncs_total"),
        Some(&1.0),
        "all {N} messages under one lock and one fsync: {s:?}"
    );
    assert_eq!(s.get("sendmail_local_mailbox_waiting"), Some(&0.0));

    // Each message whole, once, in an mbox mail-parser reads.
    let bytes = std::fs::read(&mbox).unwrap();
    let mut seen = vec![0; N];
    for m in mail_parser::mailbox::mbox::MessageIterator::new(&bytes[..]) {
        let m = m.expect("a well-formed mbox");
        assert_eq!(m.from(), "sender@client.example.test");
        let parsed = mail_parser::MessageParser::default()
            .parse(m.contents())
            .expect("a message mail-parser reads");
        let text = String::from_utf8_lossy(m.contents()).into_owned();
        let i = subject_number(&text);
        assert_eq!(parsed.subject(), Some(format!("message {i}").as_str()));
        // the body's `From ` line is quoted in the file
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        assert!(raw.contains(&format!("\n>From the body of message {i}\n")));
        assert!(text.contains(&format!("line two of {i}\n")), "{text}");
        seen[i] += 1;
    }
    assert_eq!(seen, vec![1; N], "every message exactly once");

    // The Maildir: every message once, whole, nothing left in tmp/.
    let before = scrape(metrics);
    send_all(smtp, "md@mta.example.test");
    d.wait_log_count("stat=Sent", 2 * N);
    let s = wait_metric(
        metrics,
        "sendmail_local_mailbox_messages_total",
        (2 * N) as f64,
    );
    let syncs =
        s["sendmail_local_mailbox_syncs_total"] - before["sendmail_local_mailbox_syncs_total"];
    assert!((1.0..=N as f64).contains(&syncs), "{syncs}");
    let mut seen = vec![0; N];
    for e in std::fs::read_dir(maildir.join("new")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        let i = subject_number(&text);
        check_whole(i, &text);
        seen[i] += 1;
    }
    assert_eq!(seen, vec![1; N], "every message exactly once");
    assert_eq!(std::fs::read_dir(maildir.join("tmp")).unwrap().count(), 0);
}
