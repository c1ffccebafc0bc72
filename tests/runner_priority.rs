//! The queue runner's thread and its priority (`NiceQueueRun`, src/runner/mod.rs `Thread`):
//! the real daemon, a local mailer program that reports its own nice value, and the
//! daemon's threads read from /proc.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use sendmail_rs::priority::slice_of;
use support::Daemon;
use support::dsn_sink::send;

/// Field `n` (1-based) of a /proc …/stat line, from field 3 on (the command name, field 2,
/// may hold spaces and parentheses, so fields are counted after its last `)`).
fn stat_field(stat: &str, n: usize) -> i32 {
    let after = &stat[stat.rfind(')').expect("a stat line") + 1..];
    after
        .split_whitespace()
        .nth(n - 3)
        .unwrap()
        .parse()
        .unwrap()
}

/// The nice value in a /proc …/stat line (field 19).
fn nice_of(stat: &str) -> i32 {
    stat_field(stat, 19)
}

/// The scheduling policy in a /proc …/stat line (field 41).
fn policy_of(stat: &str) -> i32 {
    stat_field(stat, 41)
}

/// The nice value of the daemon's thread named `name`, and of its main thread.
fn thread_nice(pid: i32, name: &str) -> (i32, i32) {
    let main = nice_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap());
    let stat = std::fs::read_to_string(thread_dir(pid, name).join("stat")).unwrap();
    (nice_of(&stat), main)
}

/// /proc/PID/task/TID of the daemon's thread named `name`.
fn thread_dir(pid: i32, name: &str) -> std::path::PathBuf {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            return task;
        }
    }
    panic!("no thread named {name} in daemon {pid}");
}

/// A local mailer program that writes its /proc stat line to `dir/stat`.
fn cf_with_reporting_mailer(dir: &Path, extra: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("mda.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > /dev/null\ncp /proc/$$/sched {d}/sched 2>/dev/null\n\
             cat /proc/$$/stat > {d}/stat.tmp && mv {d}/stat.tmp {d}/stat\n",
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    format!(
        "Djmta.example.test\n\
         O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n\
         Mlocal, P={}, F=lsDFMAw5:/|@qP9, S=EnvFromL/HdrFromL, R=EnvToL/HdrToL, T=DNS/RFC822/X-Unix, A=mda $u\n\
         {extra}",
        script.display()
    )
}

/// Sends one message to nobody@ and waits for the mailer program's report: its nice value.
fn program_nice(d: &mut Daemon, dir: &Path) -> i32 {
    send(
        d,
        "<alice@client.example.test>",
        &["<nobody@mta.example.test>"],
        "priority",
    );
    let stat = dir.join("stat");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stat.exists() {
        assert!(Instant::now() < deadline, "the program did not run");
        std::thread::sleep(Duration::from_millis(20));
    }
    nice_of(&std::fs::read_to_string(stat).unwrap())
}

/// Whether this process may raise a thread's priority (root, or an RLIMIT_NICE allowing it).
fn may_raise_priority() -> bool {
    std::thread::spawn(|| {
        let base = sendmail_rs::priority::this_thread().unwrap();
        sendmail_rs::priority::set_this_thread(base - 1).is_ok()
    })
    .join()
    .unwrap()
}

#[test]
fn the_runner_thread_runs_ten_nice_steps_above_the_daemon_and_its_mailers_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(&cf_with_reporting_mailer(dir.path(), ""), &[]);
    // A delivery first: the runner thread has started and set its priority once it has
    // delivered (the daemon listens before that thread exists).
    let mailer = program_nice(&mut d, dir.path());
    let (runner, main) = thread_nice(d.pid(), "runner");
    if may_raise_priority() {
        assert_eq!(runner, (main - 10).max(-20), "the default increment");
    } else {
        assert_eq!(runner, main, "left as it is where the system refuses");
    }
    // The short slice (Linux 6.12 and later show it; before, it is ignored).
    let task = thread_dir(d.pid(), "runner");
    let main_task = std::path::PathBuf::from(format!("/proc/{}/task/{}", d.pid(), d.pid()));
    if let (Some(runner_slice), Some(main_slice)) = (slice_of(&task), slice_of(&main_task)) {
        assert_eq!(runner_slice, sendmail_rs::runner::RUNNER_SLICE_NS);
        assert_ne!(
            main_slice, runner_slice,
            "the daemon's other threads keep theirs"
        );
    }
    assert_eq!(mailer, main, "the mailer program");
    if let Some(slice) = slice_of(dir.path()) {
        assert_ne!(slice, sendmail_rs::runner::RUNNER_SLICE_NS, "nor its slice");
    }
    // The runner's pool (the program's delivery ran on one of its threads): the daemon's
    // nice value and SCHED_BATCH; the program itself the normal policy again.
    let pool = std::fs::read_to_string(thread_dir(d.pid(), "runner-pool").join("stat")).unwrap();
    assert_eq!(
        (nice_of(&pool), policy_of(&pool)),
        (main, libc::SCHED_BATCH)
    );
    let program = std::fs::read_to_string(dir.path().join("stat")).unwrap();
    assert_eq!(
        policy_of(&program),
        libc::SCHED_OTHER,
        "the mailer program's policy"
    );
    // The sessions' threads and the queue's committer: SCHED_BATCH at the daemon's nice
    // value; the runner itself (started from a session thread) the normal policy; the
    // main thread as it was.
    for name in ["tokio-rt-worker", "queue-committer"] {
        let stat = std::fs::read_to_string(thread_dir(d.pid(), name).join("stat")).unwrap();
        assert_eq!(
            (nice_of(&stat), policy_of(&stat)),
            (main, libc::SCHED_BATCH),
            "{name}"
        );
    }
    let runner = std::fs::read_to_string(task.join("stat")).unwrap();
    assert_eq!(policy_of(&runner), libc::SCHED_OTHER, "the runner");
    let main_stat = std::fs::read_to_string(main_task.join("stat")).unwrap();
    assert_eq!(policy_of(&main_stat), libc::SCHED_OTHER, "the main thread");
    assert!(!d.log_text().contains("NiceQueueRun"), "{}", d.log_text());
}

#[test]
fn nice_queue_run_sets_the_runner_threads_increment_as_sendmails_queue_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cf = cf_with_reporting_mailer(dir.path(), "O NiceQueueRun=4\n");
    let mut d = Daemon::start(&cf, &[]);
    let mailer = program_nice(&mut d, dir.path()); // the runner thread is under way
    let (runner, main) = thread_nice(d.pid(), "runner");
    assert_eq!(runner, (main + 4).min(19));
    assert_eq!(mailer, main, "the mailer program");
    d.stop();

    // 0: the runner at the daemon's priority, as sendmail's default.
    let dir = tempfile::tempdir().unwrap();
    let cf = cf_with_reporting_mailer(dir.path(), "O NiceQueueRun=0\n");
    let mut d = Daemon::start(&cf, &[]);
    program_nice(&mut d, dir.path());
    let (runner, main) = thread_nice(d.pid(), "runner");
    assert_eq!(runner, main);
    // ... and the normal policy, not the sessions' SCHED_BATCH it was started from.
    let stat = std::fs::read_to_string(thread_dir(d.pid(), "runner").join("stat")).unwrap();
    assert_eq!(policy_of(&stat), libc::SCHED_OTHER);
}
