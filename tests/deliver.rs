//! Delivery from the queue: two sendmail-rs instances, one relaying to the other through a
//! smart host (`DSrelay:[127.0.0.1]` with `Mrelay … A=TCP $h PORT`), over real SMTP.

mod support;

use support::{Daemon, Smtp};

#[test]
fn a_queued_message_is_relayed_to_the_smart_host_and_crossed_off() {
    // The next hop: a second sendmail-rs on 127.0.0.1 (it accepts relaying from the host).
    let mut b = Daemon::start(
        "Djsink.example.test\nO DaemonPortOptions=Name=B-v4, Family=inet, Port=0, Addr=127.0.0.1\n",
        &["-O", "DeliveryMode=queueonly"],
    );
    let b_port = b.addr_of("B-v4").port();

    let a_cf = format!(
        "Djmta.example.test\n\
         DSrelay:[127.0.0.1]\n\
         O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n\
         Mrelay, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=2040, T=DNS/RFC822/SMTP, A=TCP $h {b_port}\n"
    );
    let mut a = Daemon::start(&a_cf, &[]);
    let v6 = a.addr_of("MTA-v6");
    let mut c = Smtp::connect(v6);
    c.reply();
    c.cmd("EHLO client.example.test");
    assert!(c.cmd("MAIL FROM:<sender@client.example.test>")[0].starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@remote.example.test>")[0].starts_with("250"));
    assert!(c.cmd("DATA")[0].starts_with("354"));
    c.send("Subject: relayed\r\n\r\nthrough the smart host\r\n.");
    let accepted = c.reply();
    assert!(accepted[0].starts_with("250 2.0.0 "), "{accepted:?}");
    c.cmd("QUIT");

    let log = a.wait_log("stat=Sent");
    let to = log
        .lines()
        .find(|l| l.contains("to=<bob@remote.example.test>"))
        .unwrap();
    assert!(to.contains(", mailer=relay, "), "{to}");
    assert!(
        to.contains(", relay=[127.0.0.1] [127.0.0.1], dsn=2.0.0, stat=Sent (2.0.0 "),
        "{to}"
    );
    assert!(to.contains(" Message accepted for delivery)"), "{to}");

    // B has it; A's queue is empty once the message is crossed off.
    let b_log = b.wait_log("from=<sender@client.example.test>");
    assert!(b_log.contains("nrcpts=1"), "{b_log}");
    let start = std::time::Instant::now();
    loop {
        let out = support::run(&[
            "-bp",
            "-C",
            a.cf.to_str().unwrap(),
            "-O",
            &format!("QueueDirectory={}", a.queue_dir().display()),
        ]);
        let q = String::from_utf8_lossy(&out.stdout).to_string();
        if q.contains("is empty") {
            break;
        }
        assert!(start.elapsed() < support::WAIT, "still queued:\n{q}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_refused_next_hop_defers_and_keeps_the_message() {
    let (mut a, port) = refused_relay_daemon();
    send_deferred(&mut a, 1);
    let log = a.wait_log("stat=Deferred");
    assert!(
        log.contains(&format!("makeconnection ([127.0.0.1] [127.0.0.1].{port} (2)) failed: Connection refused by [127.0.0.1]")),
        "{log}"
    );
    assert!(
        log.contains("dsn=4.4.1, stat=Deferred: Connection refused by [127.0.0.1]"),
        "{log}"
    );
    // The `to=` line is logged before the recipient's new state is written back: read the
    // queue until the attempt is in it (bounded).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let q = loop {
        let out = support::run(&[
            "-bp",
            "-C",
            a.cf.to_str().unwrap(),
            "-O",
            &format!("QueueDirectory={}", a.queue_dir().display()),
        ]);
        let q = String::from_utf8_lossy(&out.stdout).into_owned();
        if q.contains("(Deferred: ") || std::time::Instant::now() > until {
            break q;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(q.contains("(1 request)"), "{q}");
    assert!(
        q.contains("(Deferred: Connection refused by [127.0.0.1])"),
        "{q}"
    );
}

#[test]
fn local_mail_goes_through_the_aliases_into_a_mailbox_file() {
    let dir = tempfile::tempdir().unwrap();
    // an alias /file is created as DefaultUser (sendmail's mailfile()): a sticky directory
    std::fs::set_permissions(
        dir.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o1777),
    )
    .unwrap();
    let mbox = dir.path().join("list.mbox");
    let aliases = dir.path().join("aliases");
    std::fs::write(
        &aliases,
        format!(
            "# test aliases\nlist: {}\npostmaster: list\n",
            mbox.display()
        ),
    )
    .unwrap();
    let cf = format!(
        "Djmta.example.test\n\
         O AliasFile={}\n\
         O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n",
        aliases.display()
    );
    // newaliases (the binary under that name) validates and compiles the file.
    let newaliases = dir.path().join("newaliases");
    std::os::unix::fs::symlink(support::sendmail_bin(), &newaliases).unwrap();
    let cf_path = dir.path().join("sendmail.cf");
    std::fs::write(&cf_path, &cf).unwrap();
    let out = std::process::Command::new(&newaliases)
        .args(["-C", cf_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(": 2 aliases, longest "), "{text}");

    let mut d = Daemon::start(&cf, &[]);
    let v6 = d.addr_of("MTA-v6");
    let mut c = Smtp::connect(v6);
    c.reply();
    c.cmd("EHLO client.example.test");
    c.cmd("MAIL FROM:<sender@client.example.test>");
    assert!(c.cmd("RCPT TO:<postmaster@mta.example.test>")[0].starts_with("250"));
    c.cmd("DATA");
    c.send("Subject: to the list\r\n\r\nFrom the start of a line\r\n..dot\r\n.");
    assert!(c.reply()[0].starts_with("250 2.0.0 "));
    c.cmd("QUIT");
    let log = d.wait_log("stat=Sent");
    // The alias's target, as sendmail logs a file delivery: the file, its controlling
    // address (the envelope recipient) with the ids it was written under.
    let to = log
        .lines()
        .find(|l| l.contains(&format!("to={}, ", mbox.display())))
        .unwrap();
    assert!(
        to.contains(", ctladdr=<postmaster@mta.example.test> (")
            && to.contains("mailer=*file*, ")
            && to.ends_with("dsn=2.0.0, stat=Sent"),
        "{to}"
    );
    let boxed = std::fs::read_to_string(&mbox).unwrap();
    assert!(
        boxed.starts_with("From sender@client.example.test "),
        "{boxed}"
    );
    assert!(boxed.contains("Subject: to the list\n"), "{boxed}");
    assert!(
        boxed.contains("\n>From the start of a line\n.dot\n"),
        "{boxed}"
    );
}

/// Host status (sendmail's `Timeout.hoststatus`): once no host of a destination took a
/// connection, its next deliveries are deferred with the same status without connecting
/// again, so a dead next hop costs one connection attempt, not one per message.
#[test]
fn a_next_hop_known_down_is_not_connected_to_again() {
    let (mut a, _) = refused_relay_daemon();
    for n in 1..=3 {
        send_deferred(&mut a, n);
        a.wait_log_count("stat=Deferred: Connection refused by [127.0.0.1]", n);
    }
    let log = a.wait_log("stat=Deferred");
    assert_eq!(
        log.matches("makeconnection (").count(),
        1,
        "one connection attempt for three messages:\n{log}"
    );
}

/// A daemon whose smart host's port has nothing listening (every connection refused), and
/// that port.
fn refused_relay_daemon() -> (Daemon, u16) {
    refused_relay_daemon_with("", &[])
}

/// [`refused_relay_daemon`] with more cf lines and command-line arguments.
fn refused_relay_daemon_with(cf_lines: &str, args: &[&str]) -> (Daemon, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cf = format!(
        "Djmta.example.test\n\
         DSrelay:[127.0.0.1]\n\
         O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1\n\
         Mrelay, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=2040, T=DNS/RFC822/SMTP, A=TCP $h {port}\n\
         {cf_lines}"
    );
    (Daemon::start(&cf, args), port)
}

/// Message `n` to a remote recipient, accepted with 250.
fn send_deferred(a: &mut Daemon, n: usize) {
    send_one(a, "bob@remote.example.test", &format!("deferred {n}"));
}

/// One message to `rcpt` over one SMTP session on MTA-v4, accepted with 250.
fn send_one(a: &mut Daemon, rcpt: &str, subject: &str) {
    let mut c = Smtp::connect(a.addr_of("MTA-v4"));
    c.reply();
    c.cmd("HELO client.example.test");
    c.cmd("MAIL FROM:<sender@client.example.test>");
    c.cmd(&format!("RCPT TO:<{rcpt}>"));
    c.cmd("DATA");
    c.send(&format!("Subject: {subject}\r\n\r\nx\r\n."));
    assert!(c.reply()[0].starts_with("250 2.0.0 "));
    c.cmd("QUIT");
}

/// With a backlog of deferred mail, a new message costs one attempt, not one per queued
/// message: a pass after a commit reads only messages that may have something due (the
/// deferred ones wait for their retry time). `sendmail_queue_attempts_total` counts the
/// messages the runner takes; without the skip, each of the ten local messages below would
/// make the runner read all twenty deferred ones again (≥ 200 attempts, not 10).
#[test]
fn a_backlog_of_deferred_mail_is_not_read_again_for_every_new_message() {
    const DEFERRED: usize = 20;
    const NEW: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mbox = dir.path().join("box.mbox");
    std::fs::write(&mbox, b"").unwrap();
    std::fs::set_permissions(&mbox, std::fs::Permissions::from_mode(0o666)).unwrap();
    let aliases = dir.path().join("aliases");
    std::fs::write(&aliases, format!("box: {}\n", mbox.display())).unwrap();
    let (mut a, _) = refused_relay_daemon_with(
        &format!("O AliasFile={}\n", aliases.display()),
        &["-O", "MetricsAddress=127.0.0.1:0"],
    );
    let metrics = a.metrics_addr();
    let attempts = || support::scrape_metrics(metrics)["sendmail_queue_attempts_total"] as u64;
    for n in 1..=DEFERRED {
        send_deferred(&mut a, n);
    }
    a.wait_log_count("stat=Deferred", DEFERRED);
    let before = attempts();
    for n in 1..=NEW {
        send_one(&mut a, "box@mta.example.test", &format!("local {n}"));
        // One at a time: each commit gets its own pass.
        a.wait_log_count("mailer=*file*", n);
    }
    let taken = attempts() - before;
    // Each new message once; the retry scan (every 60 s) may have read the backlog once
    // meanwhile on a slow machine.
    assert!(
        (NEW as u64..=(NEW + DEFERRED) as u64).contains(&taken),
        "{taken} attempts for {NEW} new messages beside {DEFERRED} deferred ones"
    );
}
