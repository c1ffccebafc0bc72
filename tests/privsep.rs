//! Least privilege, end to end (root only; skipped with a message otherwise): the daemon
//! started as root with `RunAsUser=nobody` serves SMTP and the queue as `nobody`, the queue
//! tree belongs to it with private modes, the local delivery agent stays root, a `|program`
//! of the alias file runs as `DefaultUser` with a clean environment, and an address from SMTP
//! never reaches a shell.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use support::{Daemon, Smtp};

const CF: &str = "\
Djmta.example.test
Cwmta.example.test
O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1
";

/// `(uid, gid)` of `nobody` when this test can run: as root, with that user present.
fn runnable() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: privilege tests need root (they check setuid to RunAsUser)");
        return None;
    }
    match nix::unistd::User::from_name("nobody") {
        Ok(Some(u)) => Some((u.uid.as_raw(), u.gid.as_raw())),
        _ => {
            eprintln!("SKIPPED: no user `nobody` on this host");
            None
        }
    }
}

/// Uid and Gid lines of /proc/<pid>/status: (real, effective, saved, fs) each.
fn ids_of(pid: i32) -> (Vec<u32>, Vec<u32>) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<u32> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"));
        line[name.len()..]
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    (field("Uid:"), field("Gid:"))
}

/// The daemon's private directory must be reachable by `nobody` (tempdir makes it 0700):
/// the wrapper opens it to traversal before the daemon starts.
const OPEN_DIR: &str = "for a; do case \"$a\" in QueueDirectory=*) q=\"${a#QueueDirectory=}\";; esac; done; \
     chmod 755 \"$(dirname \"$q\")\" && exec \"$@\"";

struct Setup {
    _out: tempfile::TempDir,
    out: PathBuf,
    aliases: PathBuf,
}

/// An alias file with a program that records who runs it, and a file target.
fn setup() -> Setup {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().to_path_buf();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).unwrap();
    let aliases = out.join("aliases");
    fs::write(
        &aliases,
        format!(
            "whoami: \"|/bin/sh -c 'id -u > {o}/uid; id -g > {o}/gid; env > {o}/env'\"\n\
             archive: {o}/archive.mbox\n",
            o = out.display()
        ),
    )
    .unwrap();
    let built = support::run(&["-bi", "-O", &format!("AliasFile={}", aliases.display())]);
    assert!(built.status.success(), "{built:?}");
    Setup {
        _out: out_dir,
        out,
        aliases,
    }
}

fn start(s: &Setup) -> Daemon {
    start_with(s, &[])
}

/// [`start`], with `extra` arguments after the others (a later `-O` wins).
fn start_with(s: &Setup, extra: &[&str]) -> Daemon {
    let alias_opt = format!("AliasFile={}", s.aliases.display());
    let mut args = vec![
        "-O",
        "RunAsUser=nobody",
        "-O",
        "DefaultUser=daemon:daemon",
        "-O",
        &alias_opt,
    ];
    args.extend_from_slice(extra);
    Daemon::start_wrapped(CF, &args, &["sh", "-c", OPEN_DIR, "sh"])
}

fn send(d: &mut Daemon, rcpts: &[&str]) -> Vec<String> {
    let mut c = Smtp::connect(d.addr_of("MTA-v4"));
    c.reply();
    c.cmd("EHLO client.example.test");
    assert!(c.cmd("MAIL FROM:<sender@client.example.test>")[0].starts_with("250"));
    let replies: Vec<String> = rcpts
        .iter()
        .map(|r| c.cmd(&format!("RCPT TO:<{r}>"))[0].clone())
        .collect();
    if replies.iter().any(|r| r.starts_with("250")) {
        assert!(c.cmd("DATA")[0].starts_with("354"));
        c.send("Subject: privileges\r\n\r\nwho am I?\r\n");
        let end = c.cmd(".");
        assert!(end[0].starts_with("250 2.0.0"), "{end:?}");
    }
    c.cmd("QUIT");
    replies
}

/// The pid right after `marker` on the first log line that has it.
fn pid_after(log: &str, marker: &str) -> i32 {
    let line = log
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} line in the log:\n{log}"));
    line.split(marker)
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn agent_pid(log: &str) -> i32 {
    pid_after(log, "local delivery agent pid ")
}

fn supervisor_pid(log: &str) -> i32 {
    pid_after(log, "privilege supervisor pid ")
}

/// The submission group's gid, when the system has `smmsp` (tests/submit_setgid.rs makes it).
fn smmsp() -> Option<u32> {
    nix::unistd::Group::from_name("smmsp")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn daemon_runs_as_run_as_user_and_the_agent_delivers_as_root() {
    let Some((uid, gid)) = runnable() else { return };
    let s = setup();
    let mut d = start(&s);
    let log = d.wait_log("stays root");
    assert!(
        log.contains(&format!("running as nobody (uid {uid}, gid {gid})")),
        "{log}"
    );

    // The daemon: every uid and gid is nobody's, no way back.
    let (uids, gids) = ids_of(d.pid());
    assert_eq!(uids, vec![uid; 4], "daemon Uid");
    assert_eq!(gids, vec![gid; 4], "daemon Gid");
    // The agent stays root.
    let agent = agent_pid(&log);
    let (uids, _) = ids_of(agent);
    assert_eq!(uids, vec![0; 4], "agent Uid");

    // A program of the alias file runs as DefaultUser (daemon: 1), a file target is written.
    let replies = send(
        &mut d,
        &["whoami@mta.example.test", "archive@mta.example.test"],
    );
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    let log = d.wait_log_count("stat=Sent", 2);
    assert!(
        log.contains("ctladdr=<whoami@mta.example.test> (1/1)") && log.contains("mailer=prog"),
        "{log}"
    );
    let read = |name: &str| fs::read_to_string(s.out.join(name)).unwrap();
    assert_eq!(read("uid").trim(), "1");
    assert_eq!(read("gid").trim(), "1");
    let env: Vec<String> = read("env")
        .lines()
        .map(|l| l.split('=').next().unwrap().to_string())
        .collect();
    for name in &env {
        assert!(
            [
                "PATH", "SHELL", "HOME", "USER", "LOGNAME", "SENDER", "PWD", "SHLVL", "_"
            ]
            .contains(&name.as_str()),
            "unexpected variable {name} in the program's environment: {env:?}"
        );
    }
    assert!(read("env").contains("PATH=/bin:/usr/bin\n"));
    assert!(read("archive.mbox").contains("Subject: privileges"));

    // The queue is nobody's and private; where the system has the submission group, that
    // group may enter and read it (mailq), and the maildrop is write-only for it.
    let q = d.queue_dir();
    let journal = q.join("journal");
    let (dir_mode, seg_mode) = if smmsp().is_some() {
        (0o2750, 0o640)
    } else {
        (0o700, 0o600)
    };
    for dir in [&q, &journal] {
        let m = fs::symlink_metadata(dir).unwrap();
        assert_eq!((m.uid(), mode(dir)), (uid, dir_mode), "{}", dir.display());
    }
    if let Some(g) = smmsp() {
        let m = fs::symlink_metadata(q.join("maildrop")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (uid, g, 0o1730));
    }
    let lock = fs::symlink_metadata(q.join("lock")).unwrap();
    assert_eq!((lock.uid(), mode(&q.join("lock"))), (uid, 0o600));
    let segments: Vec<_> = fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!segments.is_empty(), "{segments:?}");
    for f in &segments {
        let m = fs::symlink_metadata(f).unwrap();
        assert_eq!((m.uid(), mode(f)), (uid, seg_mode), "{}", f.display());
    }

    // SIGHUP: both re-read the configuration; delivery goes on.
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("configuration reloaded");
    send(&mut d, &["archive@mta.example.test"]);
    d.wait_log_count("stat=Sent", 3);
    assert_eq!(
        read("archive.mbox").matches("Subject: privileges").count(),
        2
    );

    // The agent and the supervisor outlive nothing: they end with the daemon, and the
    // supervisor removes the pid file before it exits.
    let supervisor = supervisor_pid(&log);
    assert_eq!(ids_of(supervisor).0, vec![0; 4], "supervisor Uid");
    assert!(d.stop().success());
    let gone = std::time::Instant::now();
    for pid in [agent, supervisor] {
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(gone.elapsed() < support::WAIT, "{pid} still running");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    assert!(!d.pid_file.exists());
}

#[test]
fn an_smtp_address_never_reaches_a_shell() {
    let Some(_) = runnable() else { return };
    let s = setup();
    let mut d = start(&s);
    let pwned = s.out.join("pwned");
    let rcpt = format!("\"|touch {}\"@mta.example.test", pwned.display());
    let replies = send(&mut d, &[&rcpt, "archive@mta.example.test"]);
    // Whatever the RCPT reply, once the message is delivered no program has run.
    if replies[0].starts_with("250") {
        let log = d.wait_log("to=<\"|touch");
        let line = log.lines().find(|l| l.contains("to=<\"|touch")).unwrap();
        assert!(!line.contains("stat=Sent"), "{line}");
    }
    d.wait_log("ctladdr=<archive@mta.example.test>");
    assert!(!pwned.exists(), "an address from SMTP ran a program");
}

#[test]
fn a_wrong_mode_queue_is_reported_and_made_private() {
    let Some((uid, _)) = runnable() else { return };
    let s = setup();
    // A queue directory someone left world-writable, inside a directory made beforehand.
    let script = "for a; do case \"$a\" in QueueDirectory=*) q=\"${a#QueueDirectory=}\";; esac; done; \
         chmod 755 \"$(dirname \"$q\")\" && mkdir -m 777 \"$q\" && exec \"$@\"";
    let alias_opt = format!("AliasFile={}", s.aliases.display());
    let mut d = Daemon::start_wrapped(
        CF,
        &["-O", "RunAsUser=nobody", "-O", &alias_opt],
        &["sh", "-c", script, "sh"],
    );
    let log = d.wait_log("dangerous permissions=777 on queue directory");
    assert!(log.contains("set to 700"), "{log}");
    let q = d.queue_dir();
    // Then opened to the submission group only, where the system has it.
    let expected = if smmsp().is_some() { 0o2750 } else { 0o700 };
    assert_eq!(mode(&q), expected);
    assert_eq!(fs::metadata(&q).unwrap().uid(), uid);
}

#[test]
fn a_command_line_submission_by_root_reaches_the_unprivileged_daemon() {
    let Some((uid, _)) = runnable() else { return };
    let s = setup();
    let mut d = start(&s);
    d.wait_log("stays root");
    let qopt = format!("QueueDirectory={}", d.queue_dir().display());
    let mut child = std::process::Command::new(support::sendmail_bin())
        .args(["-C", d.cf.to_str().unwrap(), "-O", &qopt])
        .args(["-f", "root", "archive@mta.example.test"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: from the command line\n\nhi\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // The maildrop stays the daemon's, so that it can pick the file up.
    let maildrop = d.queue_dir().join("maildrop");
    assert_eq!(fs::metadata(&maildrop).unwrap().uid(), uid);
    let log = d.wait_log("ctladdr=<archive@mta.example.test>");
    let line = log
        .lines()
        .find(|l| l.contains("ctladdr=<archive@mta.example.test>"))
        .unwrap();
    assert!(line.contains("stat=Sent"), "{line}");
    let mbox = fs::read_to_string(s.out.join("archive.mbox")).unwrap();
    assert!(mbox.contains("Subject: from the command line"), "{mbox}");
}

/// Waits (bounded) until `mailq` shows an empty queue.
fn wait_queue_empty(d: &Daemon) {
    let since = std::time::Instant::now();
    while !d.mailq().contains("is empty") {
        assert!(since.elapsed() < support::WAIT, "{}", d.mailq());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A port below 1024 free on both 127.0.0.1 and ::1 (tried by binding; the test is root).
fn free_privileged_port() -> u16 {
    (600..1000)
        .find(|&p| {
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("::1", p)).is_ok()
        })
        .expect("no free port in 600-999 on 127.0.0.1 and ::1")
}

fn deliver_to_archive(d: &mut Daemon, daemon: &str, subject: &str) {
    let mut c = Smtp::connect(d.addr_of(daemon));
    assert!(c.reply()[0].starts_with("220"));
    c.cmd("EHLO client.example.test");
    assert!(c.cmd("MAIL FROM:<sender@client.example.test>")[0].starts_with("250"));
    assert!(c.cmd("RCPT TO:<archive@mta.example.test>")[0].starts_with("250"));
    assert!(c.cmd("DATA")[0].starts_with("354"));
    c.send(&format!("Subject: {subject}\r\n\r\nhi\r\n"));
    let end = c.cmd(".");
    assert!(end[0].starts_with("250 2.0.0"), "{end:?}");
    c.cmd("QUIT");
}

/// Rewrites the daemon's cf as [`CF`] plus `extra`, sends SIGHUP and returns the log up to
/// `configuration reloaded`.
fn hup_with(d: &mut Daemon, extra: &str) -> String {
    fs::write(&d.cf, format!("{CF}{extra}")).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("configuration reloaded")
}

#[test]
fn a_hup_adds_daemons_on_privileged_ports_through_the_root_supervisor() {
    let Some((uid, _)) = runnable() else { return };
    let s = setup();
    let mut d = start(&s);
    d.wait_log("stays root");
    let port = free_privileged_port();
    let log = hup_with(
        &mut d,
        &format!(
            "O DaemonPortOptions=Name=Low-v4, Family=inet, Port={port}, Addr=127.0.0.1\n\
             O DaemonPortOptions=Name=Low-v6, Family=inet6, Port={port}, Addr=::1, L=7\n"
        ),
    );
    assert!(log.contains("2 (re)opened"), "{log}");
    assert_eq!(d.addr_of("Low-v4").to_string(), format!("127.0.0.1:{port}"));
    assert_eq!(d.addr_of("Low-v6").to_string(), format!("[::1]:{port}"));
    deliver_to_archive(&mut d, "Low-v4", "over v4");
    deliver_to_archive(&mut d, "Low-v6", "over v6");
    d.wait_log_count("stat=Sent", 2);
    let mbox = fs::read_to_string(s.out.join("archive.mbox")).unwrap();
    assert!(mbox.contains("Subject: over v4") && mbox.contains("Subject: over v6"));
    let (uids, _) = ids_of(d.pid());
    assert_eq!(uids, vec![uid; 4], "daemon Uid after the HUP");
}

#[test]
fn a_privileged_daemon_that_cannot_bind_is_logged_and_the_others_keep_serving() {
    let Some(_) = runnable() else { return };
    let s = setup();
    let mut d = start(&s);
    d.wait_log("stays root");
    let port = free_privileged_port();
    // The new daemon's port is taken: the supervisor's bind fails, the old daemon keeps going.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let log = hup_with(
        &mut d,
        &format!("O DaemonPortOptions=Name=Low-v4, Family=inet, Port={port}, Addr=127.0.0.1\n"),
    );
    assert!(
        log.contains(&format!(
            "SYSERR: opendaemonsocket: privilege supervisor: daemon Low-v4: cannot bind 127.0.0.1:{port}"
        )) && log.contains("the other daemons keep running"),
        "{log}"
    );
    deliver_to_archive(&mut d, "MTA-v4", "still served");
    d.wait_log("stat=Sent");
}

#[test]
fn a_killed_agent_is_restarted_and_local_mail_is_delivered() {
    let Some((uid, _)) = runnable() else { return };
    let s = setup();
    let mut d = start(&s);
    let log = d.wait_log("stays root");
    let first = agent_pid(&log);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.wait_log(&format!("local delivery agent (pid {first}) has stopped"));
    deliver_to_archive(&mut d, "MTA-v4", "after the kill");
    let log = d.wait_log("local delivery agent restarted: pid ");
    let line = log
        .lines()
        .find(|l| l.contains("local delivery agent restarted: pid "))
        .unwrap();
    assert!(
        line.contains(&format!("(pid {first} had stopped)")),
        "{line}"
    );
    let second = pid_after(line, "restarted: pid ");
    assert_ne!(second, first);
    let log = d.wait_log("ctladdr=<archive@mta.example.test>");
    let sent = log
        .lines()
        .find(|l| l.contains("ctladdr=<archive@mta.example.test>"))
        .unwrap();
    assert!(sent.contains("stat=Sent"), "{sent}");
    let mbox = fs::read_to_string(s.out.join("archive.mbox")).unwrap();
    assert_eq!(mbox.matches("Subject: after the kill").count(), 1);
    assert_eq!(ids_of(second).0, vec![0; 4], "new agent Uid");
    assert_eq!(ids_of(d.pid()).0, vec![uid; 4], "daemon Uid");
    wait_queue_empty(&d);
}

/// The alias `hold`: a program that writes the message to `held.<its pid>`, touches
/// `started`, then, while `block` exists (made here), waits for a writer on `fifo`
/// ([`release`]), and exits 0.
fn hold_setup(s: &Setup) {
    let o = s.out.display();
    fs::write(
        &s.aliases,
        format!(
            "hold: \"|/bin/sh -c 'cat > {o}/held.$$; touch {o}/started; if [ -e {o}/block ]; then read x < {o}/fifo; fi; exit 0'\"\n"
        ),
    )
    .unwrap();
    let built = support::run(&["-bi", "-O", &format!("AliasFile={}", s.aliases.display())]);
    assert!(built.status.success(), "{built:?}");
    let fifo = s.out.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    fs::set_permissions(&fifo, fs::Permissions::from_mode(0o666)).unwrap();
    fs::write(s.out.join("block"), "").unwrap();
}

/// A daemon ([`start`]) with the `hold` alias ([`hold_setup`]), a message sent to it, and
/// its program started; with the agent's pid.
fn hold_started(s: &Setup) -> (Daemon, i32) {
    hold_setup(s);
    let mut d = start(s);
    let agent = agent_pid(&d.wait_log("stays root"));
    send(&mut d, &["hold@mta.example.test"]);
    wait_started(s);
    (d, agent)
}

/// Waits until a `hold` program has started.
fn wait_started(s: &Setup) {
    let since = std::time::Instant::now();
    while !s.out.join("started").exists() {
        assert!(since.elapsed() < support::WAIT, "the program never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Lets the waiting `hold` programs end, and those started later run through.
fn release(s: &Setup) {
    fs::remove_file(s.out.join("block")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(s.out.join("fifo"))
        .unwrap();
}

/// How many times a `hold` program ran.
fn held(s: &Setup) -> usize {
    fs::read_dir(&s.out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("held.")
        })
        .count()
}

#[test]
fn a_delivery_in_hand_when_the_agent_dies_stays_queued_and_is_retried() {
    let Some((uid, _)) = runnable() else { return };
    let s = setup();
    let (mut d, agent) = hold_started(&s);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let log = d.wait_log("Deferred: local delivery agent: not running");
    assert!(log.contains(&format!("local delivery agent (pid {agent}) has stopped")));
    let q = d.mailq();
    assert!(
        q.contains("(Deferred: local delivery agent: not running)"),
        "{q}"
    );
    // Let the orphaned program end; the retry goes through a new agent.
    release(&s);
    let out = support::run(&[
        "-q",
        "-C",
        d.cf.to_str().unwrap(),
        "-O",
        &format!("QueueDirectory={}", d.queue_dir().display()),
        "-O",
        &format!("LogFile={}", d.log.display()),
    ]);
    assert!(out.status.success(), "{out:?}");
    let log = d.wait_log("stat=Sent");
    assert!(
        log.contains("local delivery agent restarted: pid "),
        "{log}"
    );
    wait_queue_empty(&d);
    // At least once: the killed attempt's copy and the retry's.
    let held = held(&s);
    assert_eq!(held, 2);
    assert_eq!(ids_of(d.pid()).0, vec![uid; 4], "daemon Uid");
}

/// The daemon is SIGKILLed while the agent runs a program for it. The agent finishes that
/// delivery (a program is never cut off in mid-append) and keeps its record; the next
/// daemon's agent, asked for the same recipient, waits for it and answers "delivered"
/// instead of running the program a second time.
#[test]
fn a_daemon_killed_while_its_agent_delivers_is_not_followed_by_a_second_copy() {
    let Some(_) = runnable() else { return };
    let s = setup();
    let (mut first, agent) = hold_started(&s);
    let records = first.queue_dir().join("agent");
    assert_eq!(mode(&records) & 0o777, 0o700, "records are private");
    assert_eq!(
        fs::metadata(&records).unwrap().uid(),
        0,
        "records are root's"
    );
    first.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = first.child.as_mut().unwrap().wait();
    // The next daemon on the same queue; the first agent is still delivering.
    let queue = format!("QueueDirectory={}", first.queue_dir().display());
    let mut second = start_with(&s, &["-O", &queue]);
    let log = second.wait_log(&format!(
        "waiting for the local delivery agent pid {agent}, which the previous daemon left delivering it"
    ));
    assert_ne!(agent_pid(&log), agent);
    // The records outlived the hand-over of the queue to the new daemon's user.
    assert_eq!(fs::metadata(&records).unwrap().uid(), 0);
    release(&s);
    let log = second.wait_log("stat=Sent");
    assert!(
        log.contains(
            "delivered by the local delivery agent of the previous daemon; not delivered again"
        ),
        "{log}"
    );
    wait_queue_empty(&first); // the queue both daemons used
    let held = held(&s);
    assert_eq!(held, 1, "the program ran once");
    // The outcome is in the queue: the daemon tells the agent, which drops the record.
    let since = std::time::Instant::now();
    while fs::read_dir(&records).unwrap().count() > 0 {
        assert!(since.elapsed() < support::WAIT, "records left behind");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
