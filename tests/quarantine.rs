//! `sendmail -Q[reason] -q…` while the daemon runs: a queued message quarantined and
//! released through the daemon's control socket, what sendmail prints and logs for it
//! (checked against sendmail 8.17.1.9), and a message in delivery at that moment skipped
//! as sendmail skips a locked qf file. A filter's quarantine released while the daemon runs:
//! tests/milter.rs.

mod support;

use std::net::TcpListener;
use std::process::Output;

use support::Daemon;
use support::dsn_sink::{Sink, relay_to, send, wait_for};

/// `sendmail args…` on the daemon's queue; stdout, checked to exit 0.
fn sm(d: &Daemon, args: &[&str]) -> String {
    let out = sm_out(d, args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sm_out(d: &Daemon, args: &[&str]) -> Output {
    let qdir = format!("QueueDirectory={}", d.queue_dir().display());
    let mut all = args.to_vec();
    all.extend(["-C", d.cf.to_str().unwrap(), "-O", &qdir]);
    support::run(&all)
}

/// The id of the one message `mailq` lists.
fn only_id(mailq: &str) -> String {
    let line = mailq
        .lines()
        .find(|l| {
            l.len() > 14 && l.as_bytes()[0].is_ascii_alphanumeric() && !l.starts_with("Total")
        })
        .unwrap_or_else(|| panic!("no message in {mailq}"));
    line.split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_queued_message_quarantined_while_the_daemon_runs_is_held_until_released() {
    let sink = Sink::start();
    let (mut d, _) = relay_to(&sink, &["-O", "DeliveryMode=queueonly"]);
    send(
        &mut d,
        "<sender@client.example.test>",
        &["<held@remote.example.test>"],
        "to be held",
    );
    let id = only_id(&d.mailq());
    let qdir = d.queue_dir().display().to_string();

    // Only the quarantined messages are selected by -qQ: nothing to release yet.
    let out = sm(&d, &["-v", "-Q", "-qQ", &format!("-qI{id}")]);
    assert_eq!(out, format!("{qdir}: no matches\nNo changes\n"));

    // Quarantined by the running daemon: sendmail prints nothing without -v, logs the reason.
    assert_eq!(sm(&d, &["-Qby the admin", &format!("-qI{id}")]), "");
    d.wait_log(&format!("{id}: quarantine=by the admin"));
    let held = sm(&d, &["-bp", "-qQ"]);
    assert!(held.contains(&id), "{held}");
    assert!(held.contains("\n     QUARANTINE: by the admin"), "{held}");
    assert!(!d.mailq().contains(&id));
    // The same reason again is no change; with -v sendmail says so.
    let out = sm(&d, &["-v", "-Qby the admin", "-qQ", &format!("-qI{id}")]);
    assert_eq!(
        out,
        format!(
            "Processing {qdir}:\n{id}: Already quarantined with \"by the admin\"\nNo changes\n"
        )
    );

    // A queue run through the daemon leaves it: when it returns, nothing went out.
    sm(&d, &["-q"]);
    assert!(sink.messages().is_empty(), "{:?}", sink.messages());
    assert!(sm(&d, &["-bp", "-qQ"]).contains(&id));

    // Released while the daemon runs, then delivered by the next queue run.
    let out = sm(&d, &["-v", "-Q", "-qQ", &format!("-qI{id}")]);
    assert_eq!(
        out,
        format!("Processing {qdir}:\n{id}: Removed quarantine of \"by the admin\"\n1 change\n")
    );
    d.wait_log(&format!("{id}: unquarantine"));
    let q = d.mailq();
    assert!(q.contains(&id) && !q.contains("QUARANTINE"), "{q}");
    sm(&d, &["-q"]);
    let msgs = sink.wait_messages(1);
    assert!(msgs[0].contains("Subject: to be held"), "{msgs:?}");
    assert!(d.mailq().contains("is empty"));
}

#[test]
fn a_message_in_delivery_is_skipped_and_changed_once_its_attempt_is_over() {
    // A next hop that takes the connection and says nothing: the attempt stays under way
    // until the test closes it.
    let hop = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hop.local_addr().unwrap().port();
    let cf = format!(
        "Djmta.example.test\n\
         DSrelay:[127.0.0.1]\n\
         O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n\
         Mrelay, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=2040, T=DNS/RFC822/SMTP, A=TCP $h {port}\n"
    );
    let mut d = Daemon::start(&cf, &[]);
    send(
        &mut d,
        "<sender@client.example.test>",
        &["<busy@remote.example.test>"],
        "in delivery",
    );
    let (conn, _) = hop.accept().unwrap();
    let id = only_id(&d.mailq());

    // In delivery: left as it is, as sendmail leaves a message whose qf is locked.
    let out = sm(&d, &["-Qwhile busy", &format!("-qI{id}")]);
    assert_eq!(out, format!("Skipping ./{id}\n"));
    let out = sm(&d, &["-v", "-Qwhile busy", &format!("-qI{id}")]);
    let qdir = d.queue_dir().display().to_string();
    assert_eq!(
        out,
        format!("Processing {qdir}:\n{id}: locked\nSkipping ./{id}\nNo changes\n")
    );
    assert!(!sm(&d, &["-bp", "-qQ"]).contains(&id));
    assert!(!d.log_text().contains("quarantine=while busy"));

    // The hop hangs up: the attempt ends, the message stays queued, and now it can be held.
    drop(conn);
    d.wait_log(&format!("{id}: to=<busy@remote.example.test>"));
    // Its outcome is written back right after that line; until then -Q still skips it.
    wait_for(
        || {
            sm(&d, &["-Qafter", &format!("-qI{id}")])
                .is_empty()
                .then_some(())
        },
        "the quarantine once the attempt is over",
    );
    d.wait_log(&format!("{id}: quarantine=after"));
    let held = sm(&d, &["-bp", "-qQ"]);
    assert!(held.contains("\n     QUARANTINE: after"), "{held}");
    // A forced run no longer tries it: no new connection reaches the hop.
    hop.set_nonblocking(true).unwrap();
    sm(&d, &["-q"]);
    assert!(hop.accept().is_err(), "a held message was tried");
}

#[test]
fn without_a_daemon_the_command_makes_the_change_itself() {
    let sink = Sink::start();
    let (mut d, _) = relay_to(&sink, &["-O", "DeliveryMode=queueonly"]);
    send(
        &mut d,
        "<sender@client.example.test>",
        &["<offline@remote.example.test>"],
        "held offline",
    );
    let id = only_id(&d.mailq());
    d.stop();
    let qdir = d.queue_dir().display().to_string();
    let out = sm(&d, &["-v", "-Qoffline", &format!("-qI{id}")]);
    assert_eq!(
        out,
        format!("Processing {qdir}:\n{id}: Quarantined with \"offline\"\n1 change\n")
    );
    sm(&d, &["-q"]);
    assert!(sink.messages().is_empty());
    let out = sm(&d, &["-v", "-Qchanged", "-qQ", &format!("-qI{id}")]);
    assert_eq!(
        out,
        format!(
            "Processing {qdir}:\n{id}: Quarantine changed from \"offline\" to \"changed\"\n1 change\n"
        )
    );
    assert!(sm(&d, &["-bp", "-qQ"]).contains("\n     QUARANTINE: changed"));
    // A -qQ run tries the quarantined messages (they stay quarantined until delivered).
    sm(&d, &["-qQ"]);
    assert!(sink.wait_messages(1)[0].contains("Subject: held offline"));
    assert!(!sm(&d, &["-bp", "-qQ"]).contains(&id));
}
