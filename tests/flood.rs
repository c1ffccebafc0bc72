//! Connection floods (issue 6 item 2): 5,000 idle connections on loopback leave the daemon
//! answering a new client, with its memory bounded and reported; with `MaxDaemonChildren`
//! the sessions past the limit wait in the backlog and are served as earlier ones end.
//!
//! The daemon is started with a low soft open-files limit (`prlimit --nofile=1024:HARD`)
//! and must raise it to the hard limit itself. Figures (time to the new client's greeting,
//! RSS before and after) are printed (`cargo test --test flood -- --nocapture`); they never
//! decide the test, only generous bounds do.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use support::{Daemon, Smtp, WAIT};

const FLOOD: usize = 5000;

/// Raises this process's soft open-files limit to the hard one (or to `need` as root)
/// and returns the daemon's hard limit to use.
fn enough_descriptors(need: u64) -> u64 {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if hard < need {
        // Root may raise the hard limit too.
        setrlimit(Resource::RLIMIT_NOFILE, need, need)
            .unwrap_or_else(|e| panic!("need {need} descriptors, hard limit {hard}: {e}"));
        need
    } else {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
        hard
    }
}

fn start_low_limit(cf: &str, hard: u64, args: &[&str]) -> Daemon {
    let nofile = format!("--nofile=1024:{hard}");
    Daemon::start_wrapped(cf, args, &["prlimit", &nofile, "--"])
}

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The soft and hard "Max open files" of `pid`.
fn open_files_limit(pid: i32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

/// Descriptors `pid` has open.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Waits (bounded) until `what` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT * 4, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connect_many(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i} of {n}: {e}")))
        .collect()
}

fn greeting_of(s: &TcpStream) -> String {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

#[test]
fn five_thousand_idle_connections_leave_the_daemon_answering() {
    let hard = enough_descriptors(2 * FLOOD as u64 + 1000);
    let mut d = start_low_limit(
        "Djflood.example.test\n\
         O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1, Listen=4096\n",
        hard,
        &["-O", "LogLevel=9", "-O", "DeliveryMode=queueonly"],
    );
    let pid = d.pid();
    let addr = d.addr_of("MTA-v4");
    let (soft, dhard) = open_files_limit(pid);
    assert_eq!(
        (soft, dhard),
        (hard, hard),
        "the daemon raises its soft limit to the hard one"
    );

    let rss_before = rss_kib(pid);
    let fds_before = open_fds(pid);
    let started = Instant::now();
    let flood = connect_many(addr, FLOOD);
    let connected = started.elapsed();
    wait_until("the daemon to accept every connection", || {
        open_fds(pid) >= fds_before + FLOOD
    });
    let rss_during = rss_kib(pid);

    // A new client during the flood: greeted, and a whole transaction works.
    let t = Instant::now();
    let mut c = Smtp::connect(addr);
    let greeting = c.reply();
    let to_greeting = t.elapsed();
    assert!(
        greeting[0].starts_with("220 flood.example.test ESMTP"),
        "{greeting:?}"
    );
    assert!(c.cmd("EHLO client.example.test")[0].starts_with("250-"));
    assert_eq!(c.cmd("NOOP"), ["250 2.0.0 OK"]);
    c.cmd("QUIT");
    // Generous: a loaded CI machine may be slow, but never this slow.
    assert!(to_greeting < Duration::from_secs(10), "{to_greeting:?}");

    drop(flood);
    wait_until("the flood's sessions to end", || {
        open_fds(pid) <= fds_before + 10
    });
    let rss_after = rss_kib(pid);
    println!(
        "flood: {FLOOD} connections opened in {connected:?}; new client greeted after \
         {to_greeting:?}; daemon RSS {rss_before} KiB before, {rss_during} KiB with the \
         flood ({:.1} KiB per connection), {rss_after} KiB after it closed; fd limit {soft}",
        (rss_during.saturating_sub(rss_before)) as f64 / FLOOD as f64
    );
    // Memory bounded: far below 64 KiB per idle session.
    assert!(
        rss_during < rss_before + 64 * FLOOD as u64,
        "RSS {rss_before} → {rss_during} KiB"
    );
    // And the daemon still answers after the flood.
    let mut c = Smtp::connect(addr);
    assert!(c.reply()[0].starts_with("220 "));
    let _ = d.stop();
}

#[test]
fn max_daemon_children_holds_excess_sessions_until_a_slot_frees() {
    const MAX: usize = 20;
    const EXTRA: usize = 30;
    let hard = enough_descriptors(4096);
    let mut d = start_low_limit(
        "Djflood.example.test\n\
         O DaemonPortOptions=Name=KIDS, Family=inet, Port=0, Addr=127.0.0.1, Listen=256\n",
        hard,
        &["-O", &format!("MaxDaemonChildren={MAX}")],
    );
    let addr = d.addr_of("KIDS");
    let mut served = connect_many(addr, MAX + EXTRA);
    let waiting = served.split_off(MAX);
    // The first MAX are served; the daemon says it holds the rest back.
    for c in &served {
        assert!(greeting_of(c).starts_with("220 "));
    }
    d.wait_log(&format!(
        "rejecting connections on daemon KIDS: {MAX} children, max {MAX}"
    ));
    let log = d.wait_log_count("connect from", MAX);
    assert_eq!(log.matches("connect from").count(), MAX, "{log}");

    // The sessions that end let the waiting clients in, in order.
    drop(served);
    for (i, c) in waiting.iter().take(MAX).enumerate() {
        let g = greeting_of(c);
        assert!(g.starts_with("220 "), "waiting client {i}: {g:?}");
    }
    d.wait_log_count("connect from", 2 * MAX);
    let _ = d.stop();
}
