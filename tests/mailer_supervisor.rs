//! The supervisor of mailer programs (`deliver::local::inflight`), run as the daemon runs
//! it: the real `sendmail` binary started again in its supervisor mode. It records how the
//! program ends and exits the same way; the program is its child, not a fork of the
//! process that delivers (a fork of the daemon stalled it at every program delivery), and
//! neither holds the deliverer's descriptors (its listening sockets).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sendmail_rs::deliver::local::Program;
use sendmail_rs::deliver::local::inflight::{self, Record, holds, read, supervise, track};

fn setup() {
    inflight::set_supervisor_exe(PathBuf::from(env!("CARGO_BIN_EXE_sendmail")));
}

fn sh(script: &str) -> Program {
    Program {
        path: "/bin/sh".into(),
        arg0: None,
        args: vec!["-c".into(), script.into()],
        env: vec![("PATH".into(), "/bin:/usr/bin".into())],
        cwd: "/".into(),
        ids: None,
    }
}

fn run(script: &str, status: &Path) -> std::process::ExitStatus {
    setup();
    track(Some(status.to_path_buf()), || {
        let (mut c, _file) = supervise(&sh(script)).expect("tracked");
        c.status().unwrap()
    })
}

#[test]
fn the_supervisor_records_the_exit_and_exits_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("q.0");
    let st = run("exit 67", &status);
    assert_eq!(st.code(), Some(67));
    assert_eq!(read(&status).unwrap(), Record::Exited(67));

    let st = run("kill -TERM $$", &status);
    assert_eq!(st.signal(), Some(nix::libc::SIGTERM));
    assert_eq!(read(&status).unwrap(), Record::Signaled(nix::libc::SIGTERM));

    let st = run("kill -PIPE $$", &status);
    assert_eq!(st.signal(), Some(nix::libc::SIGPIPE));
    assert_eq!(read(&status).unwrap(), Record::Signaled(nix::libc::SIGPIPE));
}

#[test]
fn a_running_program_is_seen_through_its_supervisor_and_finishes_without_the_parent() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("q.1");
    let gate = dir.path().join("gate");
    let script = format!(
        "while [ ! -e {g} ]; do sleep 0.02; done; exit 0",
        g = gate.display()
    );
    let mut child = track(Some(status.clone()), || {
        let (mut c, _file) = supervise(&sh(&script)).expect("tracked");
        c.spawn().unwrap()
    });
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    while read(&status).unwrap() == Record::Empty {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(read(&status).unwrap(), Record::Running(pid));
    assert!(holds(pid, &status));
    std::fs::write(&gate, "").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(read(&status).unwrap(), Record::Exited(0));
    assert!(!holds(pid, &status));
}

/// The program's parent is the sendmail binary in its supervisor mode, not a copy of the
/// process that delivers; neither holds a socket of that process.
#[test]
fn the_program_runs_under_a_fresh_supervisor_that_holds_no_socket_of_the_deliverer() {
    setup();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("q.2");
    let out = dir.path().join("out");
    let script = format!(
        "{{ tr '\\0' ' ' < /proc/$PPID/cmdline; echo; readlink /proc/$PPID/exe; \
         ls -l /proc/$$/fd/ /proc/$PPID/fd/; echo input:; cat; }} > {o}",
        o = out.display()
    );
    let message = b"Subject: x\n\nhello\n".to_vec();
    let run = track(Some(status.clone()), || {
        sendmail_rs::deliver::local::run_command(&sh(&script), message, Duration::from_secs(30))
    })
    .unwrap();
    assert!(
        matches!(run.outcome, sendmail_rs::deliver::local::Outcome::Delivered),
        "{:?}",
        run.outcome
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    let cmdline = lines.next().unwrap();
    assert!(
        cmdline.starts_with("sendmail: mailer supervisor --mailer-supervisor "),
        "{text}"
    );
    let exe = lines.next().unwrap();
    let ours = std::fs::canonicalize(env!("CARGO_BIN_EXE_sendmail")).unwrap();
    assert_eq!(Path::new(exe), ours, "{text}");
    assert!(!text.contains("socket:"), "{text}");
    assert!(text.ends_with("input:\nSubject: x\n\nhello\n"), "{text}");
    assert_eq!(read(&status).unwrap(), Record::Exited(0));
    drop(listener);
}
