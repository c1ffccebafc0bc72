//! Files root opens on someone else's say-so (issue 16, items 6 and 9), end to end with the
//! real daemon, as root (skipped with a message otherwise): a user `jo` (uid 4242) exists
//! only inside a private mount namespace (a copy of `/etc/passwd` bound over it, and a
//! private `/var/mail`), so nothing on the machine changes.
//!
//! What sendmail 8.17.1.9 does in each case was asked of the oracle (Debian's package):
//! * `~/.forward` a symlink to a root-only file: `forward <path>: Permission denied`
//!   (warning), the mail goes to the user's mailbox, nothing of the file is read;
//! * `:include:` of a root-only file in the alias file (read as `DefaultUser`):
//!   `Cannot open <path>: Permission denied`;
//! * an alias `/file` in a directory `DefaultUser` may not write: `dsn=5.0.0, stat=Can't
//!   create output`; in a sticky 1777 directory it is created `DefaultUser`'s, mode 0600;
//! * an alias to `/dev/null`: `stat=Sent`.

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

const JO: u32 = 4242;

fn root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: these tests need root (a user's rights, other owners)");
        return false;
    }
    if std::process::Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .map_or(true, |s| !s.success())
    {
        eprintln!("SKIPPED: unshare --mount is not available");
        return false;
    }
    true
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A world with user `jo`: its home, a passwd/group copy naming it, a private spool, a
/// root-only file, and an alias file.
struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    spool: PathBuf,
    secret: PathBuf,
    aliases: PathBuf,
}

fn world(aliases: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    chmod(&root, 0o755);
    let home = root.join("home/jo");
    fs::create_dir_all(&home).unwrap();
    chmod(&root.join("home"), 0o755);
    std::os::unix::fs::chown(&home, Some(JO), Some(JO)).unwrap();
    chmod(&home, 0o755);
    let spool = root.join("spool");
    fs::create_dir(&spool).unwrap();
    chmod(&spool, 0o1777);
    let secret = root.join("secret");
    fs::write(&secret, "leaked@remote.example.test\n").unwrap();
    chmod(&secret, 0o600);
    let passwd = fs::read_to_string("/etc/passwd").unwrap()
        + &format!("jo:x:{JO}:{JO}:Jo:{}:/bin/sh\n", home.display());
    fs::write(root.join("passwd"), passwd).unwrap();
    let group = fs::read_to_string("/etc/group").unwrap() + &format!("jo:x:{JO}:\n");
    fs::write(root.join("group"), group).unwrap();
    let text = aliases.replace("@ROOT@", &root.display().to_string());
    let alias_file = root.join("aliases");
    fs::write(&alias_file, text).unwrap();
    let built = support::run(&["-bi", "-O", &format!("AliasFile={}", alias_file.display())]);
    assert!(built.status.success(), "{built:?}");
    World {
        _dir: dir,
        root,
        home,
        spool,
        secret,
        aliases: alias_file,
    }
}

/// Runs the daemon in a mount namespace where `jo` exists and `/var/mail` is ours; its
/// own directory is opened to traversal (for `RunAsUser`).
fn start(w: &World, extra: &[&str]) -> Daemon {
    let script = format!(
        "mount --bind {r}/passwd /etc/passwd && mount --bind {r}/group /etc/group && \
         mount --bind {s} /var/mail || exit 71; \
         for a; do case \"$a\" in QueueDirectory=*) q=\"${{a#QueueDirectory=}}\";; esac; done; \
         chmod 755 \"$(dirname \"$q\")\" && exec \"$@\"",
        r = w.root.display(),
        s = w.spool.display()
    );
    let alias_opt = format!("AliasFile={}", w.aliases.display());
    let mut args = vec!["-O", &alias_opt, "-O", "DefaultUser=daemon:daemon"];
    args.extend_from_slice(extra);
    Daemon::start_wrapped(
        CF,
        &args,
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ],
    )
}

fn send(d: &mut Daemon, rcpt: &str) -> String {
    let mut c = Smtp::connect(d.addr_of("MTA-v4"));
    c.reply();
    c.cmd("EHLO client.example.test");
    assert!(c.cmd("MAIL FROM:<sender@client.example.test>")[0].starts_with("250"));
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"))[0].clone();
    if r.starts_with("250") {
        assert!(c.cmd("DATA")[0].starts_with("354"));
        c.send("Subject: planted\r\n\r\nhello\r\n");
        assert!(c.cmd(".")[0].starts_with("250 2.0.0"));
    }
    c.cmd("QUIT");
    r
}

/// The delivery log line of `rcpt` (`to=<rcpt>, … stat=…`; `to=/file, …` for a file),
/// once it is there.
fn delivery_line(d: &mut Daemon, rcpt: &str) -> String {
    let needle = if rcpt.starts_with('/') {
        format!("to={rcpt},")
    } else {
        format!("to=<{rcpt}>")
    };
    let since = std::time::Instant::now();
    loop {
        let log = d.log_text();
        if let Some(l) = log
            .lines()
            .find(|l| l.contains(&needle) && l.contains("stat="))
        {
            return l.to_string();
        }
        assert!(since.elapsed() < support::WAIT, "no {needle}:\n{log}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_forward_symlinked_to_a_root_only_file_is_read_as_its_user_in_both_modes() {
    if !root() {
        return;
    }
    for run_as in [None, Some("RunAsUser=nobody")] {
        let w = world("postmaster: root\n");
        let fwd = w.home.join(".forward");
        std::os::unix::fs::symlink(&w.secret, &fwd).unwrap();
        std::os::unix::fs::lchown(&fwd, Some(JO), Some(JO)).unwrap();
        let extra: Vec<&str> = run_as.iter().flat_map(|o| ["-O", *o]).collect();
        let mut d = start(&w, &extra);
        assert!(send(&mut d, "jo@mta.example.test").starts_with("250"));
        let line = delivery_line(&mut d, "jo@mta.example.test");
        assert!(line.contains("stat=Sent"), "{run_as:?}: {line}");
        let log = d.log_text();
        assert!(
            log.contains(&format!("forward {}: Permission denied", fwd.display())),
            "{run_as:?}:\n{log}"
        );
        assert!(
            !log.contains("leaked"),
            "{run_as:?}: the file was read:\n{log}"
        );
        let mbox = fs::read_to_string(w.spool.join("jo")).unwrap();
        assert!(mbox.contains("Subject: planted"), "{mbox}");
    }
}

#[test]
fn an_include_of_a_root_only_file_is_read_as_default_user_and_refused() {
    if !root() {
        return;
    }
    let w = world("postmaster: root\ninc: :include:@ROOT@/secret\n");
    let mut d = start(&w, &[]);
    assert!(send(&mut d, "inc@mta.example.test").starts_with("250"));
    let log = d.wait_log("Cannot open");
    assert!(
        log.contains(&format!(
            "Cannot open {}: Permission denied",
            w.secret.display()
        )),
        "{log}"
    );
    assert!(!log.contains("leaked"), "the file was read:\n{log}");
}

#[test]
fn alias_files_are_written_as_default_user_and_dev_null_is_sent_in_both_modes() {
    if !root() {
        return;
    }
    let daemon_uid = nix::unistd::User::from_name("daemon")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    for run_as in [None, Some("RunAsUser=nobody")] {
        let w = world(
            "postmaster: root\nopen: @ROOT@/open/archive\nclosed: @ROOT@/closed/archive\n\
             nul: /dev/null\n",
        );
        fs::create_dir(w.root.join("open")).unwrap();
        chmod(&w.root.join("open"), 0o1777);
        fs::create_dir(w.root.join("closed")).unwrap();
        chmod(&w.root.join("closed"), 0o755);
        let extra: Vec<&str> = run_as.iter().flat_map(|o| ["-O", *o]).collect();
        let mut d = start(&w, &extra);
        for r in ["open", "closed", "nul"] {
            assert!(send(&mut d, &format!("{r}@mta.example.test")).starts_with("250"));
        }
        let open = delivery_line(&mut d, &format!("{}/open/archive", w.root.display()));
        assert!(open.contains("stat=Sent"), "{run_as:?}: {open}");
        let m = fs::metadata(w.root.join("open/archive")).unwrap();
        assert_eq!(
            (m.uid(), m.mode() & 0o777),
            (daemon_uid, 0o600),
            "{run_as:?}"
        );
        let closed = delivery_line(&mut d, &format!("{}/closed/archive", w.root.display()));
        assert!(
            closed.contains("dsn=5.0.0") && closed.contains("stat=Can't create output"),
            "{run_as:?}: {closed}"
        );
        assert!(!w.root.join("closed/archive").exists());
        let nul = delivery_line(&mut d, "/dev/null");
        assert!(nul.contains("stat=Sent"), "{run_as:?}: {nul}");
    }
}

#[test]
fn a_remote_forward_in_a_private_home_is_forwarded_under_run_as_user() {
    if !root() {
        return;
    }
    let w = world("postmaster: root\n");
    chmod(&w.home, 0o700);
    let fwd = w.home.join(".forward");
    fs::write(&fwd, "jo@remote.example.test\n").unwrap();
    std::os::unix::fs::chown(&fwd, Some(JO), Some(JO)).unwrap();
    chmod(&fwd, 0o600);
    let mut d = start(&w, &["-O", "RunAsUser=nobody"]);
    assert!(send(&mut d, "jo@mta.example.test").starts_with("250"));
    let line = delivery_line(&mut d, "jo@mta.example.test");
    assert!(line.contains("stat=Sent"), "{line}");
    let log = d.wait_log("jo: forwarded to jo@remote.example.test as ");
    assert!(!log.contains("aliases changed during delivery"), "{log}");
    // the copy is picked up by the daemon and relayed (here: no DNS, so it bounces)
    let copy_id = log
        .split("forwarded to jo@remote.example.test as ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let line = delivery_line(&mut d, "jo@remote.example.test");
    assert!(
        line.contains(&format!("{copy_id}: to=<jo@remote.example.test>")),
        "{line}"
    );
    assert!(line.contains("mailer=esmtp"), "{line}");
}

#[test]
fn an_alias_newaliases_adds_is_known_without_a_sighup() {
    if !root() {
        return;
    }
    let w = world("postmaster: root\n");
    let mut d = start(&w, &[]);
    let mut c = Smtp::connect(d.addr_of("MTA-v4"));
    c.reply();
    c.cmd("EHLO client.example.test");
    c.cmd("MAIL FROM:<sender@client.example.test>");
    let before = c.cmd("RCPT TO:<newlist@mta.example.test>")[0].clone();
    assert!(before.starts_with("550 5.1.1"), "{before}");
    fs::write(&w.aliases, "postmaster: root\nnewlist: root\n").unwrap();
    let built = support::run(&["-bi", "-O", &format!("AliasFile={}", w.aliases.display())]);
    assert!(built.status.success(), "{built:?}");
    let after = c.cmd("RCPT TO:<newlist@mta.example.test>")[0].clone();
    assert!(after.starts_with("250"), "{after}");
    c.cmd("QUIT");
}
