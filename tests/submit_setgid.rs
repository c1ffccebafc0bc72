//! Any local user can send mail (issue 18 item 4): the binary installed set-group-id `smmsp`
//! (mode 2755), `nobody` submitting with `s-nail` and `sendmail -t`, with and without a
//! running daemon, on the embedded default configuration.
//!
//! Runs as root in private mount and network namespaces (`unshare`, entered with `nsenter`):
//! tmpfs over `/etc/mail` (no sendmail.cf: the embedded default), `/var/spool` (the queue),
//! `/var/mail` (root's mailbox), `/run` (the pid file) and `/mnt`, where the set-group-id copy
//! of the binary lives (a tmpfs without `nosuid`). The group `smmsp` is created on the machine
//! when it is missing (`groupadd --system`). Not root: the test does nothing.

mod support;

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Ns {
    holder: Child,
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

impl Ns {
    fn new() -> Ns {
        let holder = Command::new("unshare")
            .args(["--mount", "--net", "--", "sleep", "600"])
            .spawn()
            .expect("unshare");
        let ns = Ns { holder };
        // The holder has entered its namespaces once its mount namespace differs from ours.
        let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let theirs = format!("/proc/{}/ns/mnt", ns.holder.id());
        wait_until("the namespace holder", || {
            std::fs::read_link(&theirs).is_ok_and(|l| l != ours)
        });
        ns
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.holder.id().to_string(), "-m", "-n", "--"])
            .args(args);
        c
    }

    /// Runs `args` in the namespaces with `input` on stdin.
    fn run(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsenter");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, "");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `args` as `nobody` (uid and gid 65534, no supplementary groups).
    fn as_nobody(&self, args: &[&str], input: &str) -> Output {
        let mut v = vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "env",
            "-i",
            "HOME=/tmp",
            "PATH=/usr/bin:/bin",
            "USER=nobody",
            "LOGNAME=nobody",
        ];
        v.extend_from_slice(args);
        self.run(&v, input)
    }

    /// `stat -c FORMAT path` in the namespace.
    fn stat(&self, format: &str, path: &str) -> String {
        self.ok(&["stat", "-c", format, path]).trim().to_string()
    }

    fn mailbox(&self) -> String {
        String::from_utf8_lossy(&self.run(&["cat", "/var/mail/root"], "").stdout).into_owned()
    }

    fn maildrop_files(&self) -> usize {
        self.ok(&[
            "find",
            "/var/spool/mqueue/maildrop",
            "-maxdepth",
            "1",
            "-type",
            "f",
        ])
        .lines()
        .count()
    }
}

/// Polls `f` every 50 ms; a result decides, the 60 s bound only ends a hung test.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn setup() -> Option<Ns> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: set-group-id submission not tested");
        return None;
    }
    let have = Command::new("getent")
        .args(["group", "smmsp"])
        .output()
        .unwrap();
    if !have.status.success() {
        let made = Command::new("groupadd")
            .args(["--system", "smmsp"])
            .status()
            .unwrap();
        assert!(made.success(), "groupadd --system smmsp");
    }
    let ns = Ns::new();
    ns.ok(&["ip", "link", "set", "lo", "up"]);
    for (dir, mode) in [
        ("/etc/mail", "755"),
        ("/var/spool", "755"),
        ("/var/mail", "1777"),
        ("/run", "755"),
        ("/mnt", "755"),
    ] {
        let opt = format!("mode={mode}");
        ns.ok(&["mount", "-t", "tmpfs", "-o", &opt, "tmpfs", dir]);
    }
    ns.ok(&["cp", support::sendmail_bin(), "/mnt/sendmail"]);
    ns.ok(&["chgrp", "smmsp", "/mnt/sendmail"]);
    ns.ok(&["chmod", "2755", "/mnt/sendmail"]);
    Some(ns)
}

const SM: &str = "/mnt/sendmail";

#[test]
fn nobody_sends_mail_through_the_set_group_id_binary() {
    let Some(ns) = setup() else { return };
    assert_eq!(ns.stat("%a %G", SM), "2755 smmsp");

    // `sendmail -q` as root creates the queue for the submission group.
    ns.ok(&[SM, "-q"]);
    assert_eq!(ns.stat("%a %U %G", "/var/spool/mqueue"), "2750 root smmsp");
    assert_eq!(
        ns.stat("%a %U %G", "/var/spool/mqueue/maildrop"),
        "1730 root smmsp"
    );

    // No daemon: nobody's mail waits in the maildrop (as nobody's file, group smmsp).
    let mail = ns.as_nobody(
        &[
            "s-nail",
            "-n",
            "-Smta=/mnt/sendmail",
            "-s",
            "from s-nail",
            "root",
        ],
        "sent with s-nail\n",
    );
    assert!(mail.status.success(), "{mail:?}");
    let t = ns.as_nobody(
        &[SM, "-t", "-i"],
        "To: root\nSubject: from sendmail -t\n\nsent with sendmail -t\n",
    );
    assert!(t.status.success(), "{t:?}");
    assert_eq!(ns.maildrop_files(), 2);
    let owners = ns.ok(&[
        "find",
        "/var/spool/mqueue/maildrop",
        "-maxdepth",
        "1",
        "-type",
        "f",
        "-printf",
        "%u %g\n",
    ]);
    assert!(
        owners.lines().all(|l| l == "nobody smmsp"),
        "maildrop files: {owners}"
    );
    // nobody cannot list the maildrop, so cannot see or touch another user's submission.
    let ls = ns.as_nobody(&["ls", "/var/spool/mqueue/maildrop"], "");
    assert!(!ls.status.success(), "{ls:?}");
    // Root's mailq sees both waiting; nobody's mailq runs (the maildrop is not listable).
    let q = ns.ok(&[SM, "-bp"]);
    assert!(q.contains("(2 requests)"), "{q}");
    let q = ns.as_nobody(&[SM, "-bp"], "");
    assert!(q.status.success(), "{q:?}");

    // A -C or a file-changing -O from a user gives up the group: the maildrop is closed.
    ns.ok(&[
        "sh",
        "-c",
        "echo 'O QueueDirectory=/var/spool/mqueue' > /etc/mail/x.cf",
    ]);
    for extra in [
        &["-C", "/etc/mail/x.cf"][..],
        &["-O", "QueueDirectory=/var/spool/mqueue"][..],
    ] {
        let mut args = vec![SM];
        args.extend_from_slice(extra);
        args.push("root");
        let out = ns.as_nobody(&args, "Subject: x\n\nx\n");
        assert_eq!(out.status.code(), Some(73), "{extra:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{out:?}"
        );
    }
    assert_eq!(ns.maildrop_files(), 2);

    // `sendmail -q` as root picks the waiting mail up and delivers it.
    ns.ok(&[SM, "-q"]);
    let mbox = ns.mailbox();
    assert!(mbox.contains("Subject: from s-nail"), "{mbox}");
    assert!(mbox.contains("sent with sendmail -t"), "{mbox}");
    assert_eq!(ns.maildrop_files(), 0);

    // Root without a daemon: delivered at once (in the background), not left queued.
    let root = ns.run(&[SM, "root"], "Subject: from root\n\nroot's own\n");
    assert!(root.status.success(), "{root:?}");
    wait_until("root's mail delivered", || {
        ns.mailbox().contains("Subject: from root")
    });

    // With a daemon (queue only, so the message stays queued until a run): nobody's mail
    // is picked up at once, and nobody's mailq lists it.
    ns.ok(&[SM, "-bd", "-odq", "-O", "LogFile=/run/maillog"]);
    let t = ns.as_nobody(
        &[SM, "-t"],
        "To: root\nSubject: while the daemon runs\n\nqueued\n",
    );
    assert!(t.status.success(), "{t:?}");
    wait_until("the pickup", || ns.maildrop_files() == 0);
    let q = ns.as_nobody(&[SM, "-bp"], "");
    let listing = String::from_utf8_lossy(&q.stdout);
    assert!(
        q.status.success() && listing.contains("(1 request)") && listing.contains(" nobody\n"),
        "{q:?}"
    );
    // restrictmailq: nobody is not in the queue directory's group.
    let q = ns.as_nobody(&[SM, "-bp", "-O", "PrivacyOptions=restrictmailq"], "");
    assert_eq!(q.status.code(), Some(77), "{q:?}");
    assert!(String::from_utf8_lossy(&q.stdout).contains("You are not permitted to see the queue"));

    // A queue run through the daemon delivers it.
    ns.ok(&[SM, "-q"]);
    wait_until("the daemon's delivery", || {
        ns.mailbox().contains("Subject: while the daemon runs")
    });
    let pid = ns.ok(&["head", "-1", "/run/sendmail.pid"]);
    ns.ok(&["kill", "-TERM", pid.trim()]);
    wait_until("the daemon's exit", || {
        !ns.run(&["kill", "-0", pid.trim()], "").status.success()
    });
}

#[test]
fn the_maildrop_mode_is_restored_by_the_daemon() {
    let Some(ns) = setup() else { return };
    ns.ok(&["mkdir", "-p", "-m", "700", "/var/spool/mqueue/maildrop"]);
    ns.ok(&[SM, "-q"]);
    assert_eq!(
        ns.stat("%a %U %G", "/var/spool/mqueue/maildrop"),
        "1730 root smmsp"
    );
}
