//! The listener daemon, end to end: the real binary, real sockets on `::1` and `127.0.0.1`,
//! its mail log read back. Each test is one thing an administrator does or sees.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{Daemon, Smtp, WAIT, run};

/// The seed's configuration: one IPv6 and one IPv4 daemon, on ports the kernel picks.
const SEED_CF: &str = "\
# sendmail.cf for the listener tests
Djmta.example.test
O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1
O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1
";

fn assert_greeting(reply: &[String]) {
    assert_eq!(reply.len(), 1, "{reply:?}");
    assert!(
        reply[0].starts_with("220 mta.example.test ESMTP "),
        "greeting: {reply:?}"
    );
}

#[test]
fn greets_on_ipv6_and_ipv4_from_the_cf() {
    let mut d = Daemon::start(SEED_CF, &[]);
    let v6 = d.addr_of("MTA-v6");
    let v4 = d.addr_of("MTA-v4");
    assert!(v6.ip().is_loopback() && v6.is_ipv6(), "{v6}");
    assert_eq!(v4.ip().to_string(), "127.0.0.1");

    let mut c = Smtp::connect(v6);
    assert_greeting(&c.reply());
    let ehlo = c.cmd("EHLO client.example.test");
    assert!(
        ehlo[0].starts_with("250-mta.example.test Hello "),
        "{ehlo:?}"
    );
    assert!(
        ehlo[0].contains("[IPv6:0:0:0:0:0:0:0:1]"),
        "uncompressed IPv6: {ehlo:?}"
    );
    assert!(ehlo.last().unwrap().starts_with("250 "), "{ehlo:?}");
    assert_eq!(
        c.cmd("QUIT")[0],
        "221 2.0.0 mta.example.test closing connection"
    );

    let mut c = Smtp::connect(v4);
    assert_greeting(&c.reply());
    let helo = c.cmd("HELO client.example.test");
    assert!(
        helo[0].contains("[127.0.0.1], pleased to meet you"),
        "{helo:?}"
    );
    c.cmd("QUIT");

    let log = d.wait_log("connect from");
    assert!(log.contains("NOQUEUE: connect from"), "{log}");
    assert!(d.stop().success());
}

#[test]
fn command_line_daemons_replace_the_cf_ones() {
    // sendmail's sticky rule: any -O DaemonPortOptions drops every cf DaemonPortOptions.
    let mut d = Daemon::start(
        SEED_CF,
        &[
            "-O",
            "DaemonPortOptions=Name=CLI-v6, Family=inet6, Port=0, Addr=::1",
            "-O",
            "DaemonPortOptions=Name=CLI-v4, Family=inet, Port=0, Addr=127.0.0.1",
        ],
    );
    let v6 = d.addr_of("CLI-v6");
    let v4 = d.addr_of("CLI-v4");
    assert_greeting(&Smtp::connect(v6).reply());
    assert_greeting(&Smtp::connect(v4).reply());
    let log = d.log_text();
    assert!(
        !log.contains("daemon MTA-v6: listening"),
        "cf daemon opened:\n{log}"
    );
    assert!(
        !log.contains("daemon MTA-v4: listening"),
        "cf daemon opened:\n{log}"
    );
}

#[test]
fn client_that_quits_after_ehlo_is_logged_with_the_daemon_name() {
    let mut d = Daemon::start(SEED_CF, &[]);
    let v6 = d.addr_of("MTA-v6");
    let mut c = Smtp::connect(v6);
    c.reply();
    c.cmd("EHLO client.example.test");
    c.cmd("QUIT");
    let log = d.wait_log("during connection to MTA-v6");
    let line = log
        .lines()
        .find(|l| l.contains("during connection to MTA-v6"))
        .unwrap();
    assert!(
        line.contains(
            "[IPv6:0:0:0:0:0:0:0:1] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA-v6"
        ),
        "{line}"
    );

    // A client that just drops the connection after EHLO is logged the same way, on IPv4.
    let v4 = d.addr_of("MTA-v4");
    let mut c = Smtp::connect(v4);
    c.reply();
    c.cmd("EHLO client.example.test");
    drop(c);
    d.wait_log("[127.0.0.1] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA-v4");
}

#[test]
fn hup_adds_a_third_daemon_while_a_session_is_open() {
    let mut d = Daemon::start(SEED_CF, &[]);
    let v6 = d.addr_of("MTA-v6");
    let v4 = d.addr_of("MTA-v4");
    let mut open = Smtp::connect(v6);
    open.reply();
    open.cmd("EHLO client.example.test");

    let third =
        format!("{SEED_CF}O DaemonPortOptions=Name=MTA-third, Family=inet6, Port=0, Addr=::1\n");
    std::fs::write(&d.cf, third).unwrap();
    d.signal(Signal::SIGHUP);
    let log = d.wait_log("configuration reloaded");
    assert!(log.contains("restarting "), "{log}");
    assert!(log.contains("due to signal"), "{log}");
    let t = d.addr_of("MTA-third");
    assert_greeting(&Smtp::connect(t).reply());

    // The session that was open carries on, and the unchanged daemons kept their sockets.
    assert_eq!(open.cmd("NOOP")[0], "250 2.0.0 OK");
    assert_eq!(
        open.cmd("QUIT")[0],
        "221 2.0.0 mta.example.test closing connection"
    );
    assert_greeting(&Smtp::connect(v6).reply());
    assert_greeting(&Smtp::connect(v4).reply());
}

#[test]
fn hup_with_a_broken_config_keeps_the_running_one() {
    let mut d = Daemon::start(SEED_CF, &[]);
    let v6 = d.addr_of("MTA-v6");
    std::fs::write(
        &d.cf,
        format!("{SEED_CF}O DaemonPortOptions=Name=Bad, Family=inet7\n"),
    )
    .unwrap();
    d.signal(Signal::SIGHUP);
    let log = d.wait_log("the running configuration is kept");
    assert!(
        log.contains("sendmail.cf:5:"),
        "error names file and line:\n{log}"
    );
    assert!(log.contains("Unknown address family inet7"), "{log}");
    assert_greeting(&Smtp::connect(v6).reply());
}

/// Reads the daemon's stderr until a line contains `needle`; returns what was read.
fn stderr_until(d: &mut Daemon, needle: &str) -> String {
    use std::io::BufRead;
    let child = d.child.as_mut().unwrap();
    let mut err = std::io::BufReader::new(child.stderr.as_mut().unwrap());
    let mut seen = String::new();
    let until = Instant::now() + WAIT;
    while Instant::now() < until {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains(needle) {
            return seen;
        }
    }
    panic!("no {needle:?} on stderr: {seen}");
}

/// An address not on this host: sendmail's `transienterror` counts it as passing (an
/// interface, or an IPv6 address still tentative, may come up): the start waits and tries
/// again, saying why, and opens nothing meanwhile (no pid file).
#[test]
fn an_address_not_on_this_host_is_tried_again_as_sendmail_does() {
    // 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of a test machine.
    let mut d = Daemon::spawn(
        "O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n\
         O DaemonPortOptions=Name=Elsewhere, Family=inet, Port=0, Addr=192.0.2.1\n",
        &[],
    );
    let err = stderr_until(&mut d, "trying again in 5 s");
    assert!(
        err.contains("daemon Elsewhere: cannot bind 192.0.2.1:0"),
        "{err}"
    );
    assert!(err.contains("not on this host"), "{err}");
    assert!(!d.pid_file.exists(), "no pid file yet");
    let log = d.log_text();
    assert!(
        log.contains("NOQUEUE: SYSERR(root): opendaemonsocket: daemon Elsewhere: cannot bind")
            && log.contains("daemon Elsewhere: problem creating SMTP socket"),
        "{log}"
    );
    // dropped: the daemon, still trying, is killed
}

/// A port still held by another process (a mailer of the daemon that was just killed, or
/// the old daemon finishing): the new one waits, as sendmail's `opendaemonsocket` does (10
/// tries, 5 s apart), and starts as soon as the port is free.
#[test]
fn a_port_in_use_at_start_is_tried_again_until_it_is_free() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let mut d = Daemon::spawn(
        &format!(
            "Djmta.example.test\nO DaemonPortOptions=Name=MTA-v4, Family=inet, Port={port}, Addr=127.0.0.1\n"
        ),
        &[],
    );
    let err = stderr_until(&mut d, "trying again in 5 s");
    assert!(err.contains("daemon MTA-v4: cannot bind"), "{err}");
    drop(holder);
    // (fails if the daemon gives up first)
    let log = d.wait_log("starting daemon");
    assert!(
        log.contains("daemon MTA-v4: problem creating SMTP socket"),
        "{log}"
    );
    assert!(!log.contains("wedged"), "{log}");
    let mut c = Smtp::connect(format!("127.0.0.1:{port}").parse().unwrap());
    assert!(c.reply()[0].starts_with("220 "));
    assert!(d.stop().success());
}

#[test]
fn bad_daemon_options_are_errors_naming_file_line_and_expectation() {
    let cases = [
        ("Bddr=::1, Name=Typo", "unknown key \"Bddr\""),
        ("Name=X, Family=inet7", "Unknown address family inet7"),
        ("Name=X, Port=70000", "expected a port number"),
        (
            "Name=X, Port=nosuchservice",
            "service \"nosuchservice\" unknown",
        ),
        (
            "Name=X, Family=inet6, Addr=127.0.0.1",
            "host \"127.0.0.1\" unknown",
        ),
        (
            "Name=X, Family=inet, Addr=1.2.3.4.5",
            "expected an IPv4 address",
        ),
    ];
    for (value, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let cf = dir.path().join("bad.cf");
        std::fs::write(&cf, format!("# line 1\nO DaemonPortOptions={value}\n")).unwrap();
        let out = run(&["-bD", "-C", cf.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "EX_CONFIG for {value}: {err}");
        assert!(
            err.contains("bad.cf:2:"),
            "file and line for {value}: {err}"
        );
        assert!(err.contains(expected), "{expected:?} for {value}: {err}");
    }
    // The same from the command line.
    let out = run(&["-bD", "-O", "DaemonPortOptions=Name=X, Family=bogus"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unknown address family bogus"));
}

#[test]
fn sigterm_stops_cleanly_and_removes_the_pid_file() {
    let mut d = Daemon::start(SEED_CF, &["-q30m"]);
    let log = d.wait_log("starting daemon (");
    assert!(log.contains("): SMTP+queueing@00:30:00"), "{log}");
    let pid_text = std::fs::read_to_string(&d.pid_file).unwrap();
    let mut lines = pid_text.lines();
    assert_eq!(lines.next().unwrap(), d.pid().to_string());
    let cmd = lines.next().unwrap();
    assert!(cmd.contains("-bD -C ") && cmd.ends_with("-q30m"), "{cmd}");
    assert!(d.stop().success());
    assert!(!d.pid_file.exists());
    assert!(
        d.log_text()
            .contains("NOQUEUE: stopping daemon, reason=signal")
    );
}

#[test]
fn bd_detaches_and_the_pid_file_names_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let cf = dir.path().join("sendmail.cf");
    std::fs::write(&cf, SEED_CF).unwrap();
    let pid_file = dir.path().join("sendmail.pid");
    let log = dir.path().join("maillog");
    let out = run(&[
        "-bd",
        "-C",
        cf.to_str().unwrap(),
        "-O",
        &format!("PidFile={}", pid_file.display()),
        "-O",
        &format!("LogFile={}", log.display()),
        "-O",
        &format!("QueueDirectory={}", dir.path().join("mqueue").display()),
    ]);
    assert!(out.status.success(), "parent exits 0: {out:?}");
    let start = Instant::now();
    while !pid_file.exists() {
        assert!(start.elapsed() < WAIT, "no pid file");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    let text = std::fs::read_to_string(&pid_file).unwrap();
    let pid: i32 = text.lines().next().unwrap().parse().unwrap();
    // Whatever happens below, the detached daemon we started does not outlive the test.
    struct KillOnDrop(Option<i32>);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    let mut guard = KillOnDrop(Some(pid));
    // The daemon we started (by its pid file) serves, then stops on SIGTERM.
    let line = loop {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = l
            .lines()
            .find(|x| x.contains("daemon MTA-v6: listening on "))
        {
            break line.to_string();
        }
        assert!(start.elapsed() < WAIT, "no listening line:\n{l}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let addr = line.split("listening on ").nth(1).unwrap().parse().unwrap();
    assert_greeting(&Smtp::connect(addr).reply());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    while pid_file.exists() {
        assert!(start.elapsed() < WAIT, "pid file not removed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Gone: nothing left to kill (and its pid may be reused).
    while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
        assert!(start.elapsed() < WAIT, "daemon still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    guard.0 = None;
}

#[test]
fn inet6_wildcard_alone_is_dual_stack_and_shows_ipv4_clients_as_ipv4() {
    let mut d = Daemon::start(
        "Djmta.example.test\nO DaemonPortOptions=Name=Any6, Family=inet6, Port=0\n",
        &[],
    );
    let addr = d.addr_of("Any6");
    let mut c = Smtp::connect(format!("127.0.0.1:{}", addr.port()).parse().unwrap());
    assert_greeting(&c.reply());
    let helo = c.cmd("HELO client.example.test");
    assert!(helo[0].contains("[127.0.0.1]"), "{helo:?}");
    assert!(!helo[0].contains("ffff"), "{helo:?}");
}

#[test]
fn inet_and_inet6_on_one_port_both_listen() {
    // cf.README "Example 3": sendmail exits after ~50 s on Linux; we serve both.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let mut d = Daemon::start(
        &format!(
            "Djmta.example.test\n\
             O DaemonPortOptions=Name=MTA-v4, Family=inet, Port={port}\n\
             O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port={port}\n"
        ),
        &[],
    );
    assert_eq!(d.addr_of("MTA-v4").port(), port);
    assert_eq!(d.addr_of("MTA-v6").port(), port);
    let mut c = Smtp::connect(format!("[::1]:{port}").parse().unwrap());
    c.reply();
    c.cmd("QUIT");
    let mut c = Smtp::connect(format!("127.0.0.1:{port}").parse().unwrap());
    c.reply();
    c.cmd("QUIT");
    d.wait_log("connection to MTA-v6");
    d.wait_log("connection to MTA-v4");
}

#[test]
fn swaks_talks_to_both_families() {
    let mut d = Daemon::start(SEED_CF, &[]);
    for (name, server) in [("MTA-v6", "::1"), ("MTA-v4", "127.0.0.1")] {
        let port = d.addr_of(name).port().to_string();
        let out = std::process::Command::new("swaks")
            .args(["--server", server, "--port", &port, "--quit-after", "EHLO"])
            .args(["--helo", "client.example.test", "--timeout", "20"])
            .output()
            .expect("swaks is installed by .ci/run (apt-get install swaks)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "swaks on {name}: {text}");
        assert!(text.contains("<-  220 mta.example.test ESMTP"), "{text}");
        assert!(text.contains("<-  221 2.0.0"), "{text}");
    }
}

#[test]
fn without_root_port_25_is_refused_with_the_option_to_change_it() {
    // As an unprivileged user (setpriv from util-linux when the tests run as root).
    let is_root = nix::unistd::geteuid().is_root();
    let mut cmd = if is_root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg(support::sendmail_bin());
        c
    } else {
        std::process::Command::new(support::sendmail_bin())
    };
    let out = cmd
        .args([
            "-bD",
            "-O",
            "DaemonPortOptions=Name=MTA-v4, Family=inet, Port=25, Addr=127.0.0.1",
        ])
        .args(["-O", "PidFile=/nonexistent/sendmail.pid"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(71), "{err}");
    assert!(
        err.contains("daemon MTA-v4: cannot bind 127.0.0.1:25: Permission denied"),
        "{err}"
    );
    assert!(err.contains("ports below 1024 need root"), "{err}");
    assert!(err.contains("DaemonPortOptions"), "{err}");
    assert!(err.contains("sendmail -bD --unprivileged"), "{err}");
}

#[test]
fn mailstats_counts_connections_per_daemon_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("sendmail.st");
    // As with sendmail, statistics are kept only when the file exists.
    std::fs::write(&status, "").unwrap();
    let status_opt = format!("StatusFile={}", status.display());
    let mailstats = dir.path().join("mailstats");
    std::os::unix::fs::symlink(support::sendmail_bin(), &mailstats).unwrap();
    let report = || {
        let out = std::process::Command::new(&mailstats)
            .args(["-f", status.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // Our per-daemon table: ` D    conns     msgs       bytes  rejects  Daemon`.
    let conns_of = |text: &str, name: &str| -> u64 {
        let table = text
            .split(" D ")
            .nth(1)
            .unwrap_or_else(|| panic!("no daemon table:\n{text}"));
        let row = table
            .lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{text}"));
        row.split_whitespace().next().unwrap().parse().unwrap()
    };

    for (round, expected_v6) in [(1, 2), (2, 3)] {
        let mut d = Daemon::start(SEED_CF, &["-O", &status_opt]);
        let v6 = d.addr_of("MTA-v6");
        let v4 = d.addr_of("MTA-v4");
        let sessions = if round == 1 { 2 } else { 1 };
        for _ in 0..sessions {
            let mut c = Smtp::connect(v6);
            c.reply();
            c.cmd("QUIT");
        }
        let mut c = Smtp::connect(v4);
        c.reply();
        c.cmd("QUIT");
        d.wait_log_count("did not issue MAIL/EXPN/VRFY/ETRN", sessions + 1);
        assert!(d.stop().success());
        let text = report();
        assert!(text.starts_with("Statistics from "), "{text}");
        assert_eq!(conns_of(&text, "MTA-v6"), expected_v6, "{text}");
        assert_eq!(conns_of(&text, "MTA-v4"), round, "{text}");
    }
}

#[test]
fn children_limits_concurrent_sessions_per_daemon() {
    let mut d = Daemon::start(
        "Djmta.example.test\nO DaemonPortOptions=Name=ONEKID, Family=inet6, Port=0, Addr=::1, c=1\n",
        &[],
    );
    let addr = d.addr_of("ONEKID");
    let mut first = Smtp::connect(addr);
    assert_greeting(&first.reply());
    // The second client waits in the listen backlog while the first session runs.
    let second = std::net::TcpStream::connect(addr).unwrap();
    d.wait_log("rejecting connections on daemon ONEKID: 1 children, max 1");
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        std::io::Read::read(&mut &second, &mut byte).is_err(),
        "no greeting while the first session is open"
    );
    first.cmd("QUIT");
    second.set_read_timeout(Some(WAIT)).unwrap();
    let mut r = std::io::BufReader::new(second);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut r, &mut line).unwrap();
    assert!(line.starts_with("220 mta.example.test ESMTP"), "{line}");
}

/// A cf whose options (greeting) and rulesets (`check_rcpt`) both name one generation.
fn generation_cf(g: &str) -> String {
    format!(
        "V10/Berkeley
Djmta.example.test
O SmtpGreetingMessage=$j options-{g}
O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1
Scheck_rcpt
R$*\t$#error $@ 5.7.1 $: \"550 rulesets-{g}\"
Mlocal, P=/bin/true, F=lsDFM, A=true $u
"
    )
}

#[test]
fn hup_takes_options_and_rulesets_from_one_reading_of_the_new_cf() {
    let mut d = Daemon::start(&generation_cf("A"), &[]);
    let v4 = d.addr_of("MTA-v4");
    let mut c = Smtp::connect(v4);
    assert!(c.reply()[0].ends_with("options-A"));
    c.cmd("EHLO client.example.test");
    c.cmd("MAIL FROM:<a@client.example.test>");
    assert_eq!(
        c.cmd("RCPT TO:<b@remote.example.test>")[0],
        "550 5.7.1 <b@remote.example.test>... rulesets-A"
    );
    c.cmd("QUIT");

    std::fs::write(&d.cf, generation_cf("B")).unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_log("configuration reloaded");
    let mut c = Smtp::connect(v4);
    let greeting = c.reply();
    assert!(greeting[0].ends_with("options-B"), "{greeting:?}");
    c.cmd("EHLO client.example.test");
    c.cmd("MAIL FROM:<a@client.example.test>");
    assert_eq!(
        c.cmd("RCPT TO:<b@remote.example.test>")[0],
        "550 5.7.1 <b@remote.example.test>... rulesets-B"
    );
}
