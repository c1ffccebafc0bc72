//! Specifications of local delivery: mbox, Maildir, locking, `/file`, `|program`.

use super::*;
use std::os::unix::fs::PermissionsExt;

const MSG: &[u8] =
    b"Subject: hi\nFrom: a@b.test\n\nFrom the start\n>From quoted already\nFromage\n.\nlast line\n";

fn agent(spool: &Path) -> LocalDelivery {
    let home = spool.to_path_buf();
    LocalDelivery {
        spool_dir: spool.to_path_buf(),
        lock_timeout: Duration::from_secs(5),
        hostname: "host:a/b".into(),
        users: Box::new(move |n| {
            (n == "jo" || n == "kim").then(|| MailUser {
                name: n.to_string(),
                uid: 4242,
                gid: 4243,
                home: home.join(format!("home-{n}")),
            })
        }),
        ..LocalDelivery::default()
    }
}

fn d(message: &[u8]) -> Delivery<'_> {
    Delivery {
        sender: "sender@client.example.test",
        message,
        rpath: None,
        client_addr: None,
        log: None,
    }
}

/// Splits an mbox into (From-line sender, message bytes with mboxo quoting undone and the
/// Return-Path header and separator removed).
fn read_mbox(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut prev_blank = true;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if prev_blank && line.starts_with(b"From ") {
            if let Some(last) = out.last_mut() {
                assert_eq!(last.1.pop(), Some(b'\n'), "blank line before From");
            }
            let s = String::from_utf8_lossy(line);
            out.push((s.split(' ').nth(1).unwrap().to_string(), Vec::new()));
            prev_blank = false;
            continue;
        }
        prev_blank = line == b"\n";
        let cur = &mut out.last_mut().expect("mbox starts with From").1;
        if cur.is_empty() && line.starts_with(b"Return-Path: ") {
            continue;
        }
        let line = if line.starts_with(b">From ") {
            &line[1..]
        } else {
            line
        };
        cur.extend_from_slice(line);
    }
    if let Some(last) = out.last_mut() {
        assert_eq!(last.1.pop(), Some(b'\n'), "mbox ends with a blank line");
    }
    out
}

#[test]
fn mbox_entry_has_the_from_line_quoting_and_blank_line() {
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_505_214);
    let e = mbox_entry(&d(MSG), true, DEFAULT_FROM_LINE, when);
    let text = String::from_utf8(e).unwrap();
    let first = text.lines().next().unwrap();
    let date = chrono::DateTime::<chrono::Local>::from(when)
        .format("%a %b %e %H:%M:%S %Y")
        .to_string();
    assert_eq!(first, format!("From sender@client.example.test {date}"));
    assert!(text.contains("\nReturn-Path: <sender@client.example.test>\nSubject: hi\n"));
    assert!(text.contains("\n>From the start\n"));
    // mboxo: ">From" is not quoted again; "Fromage" is not "From "
    assert!(text.contains("\n>From quoted already\n"));
    assert!(text.contains("\nFromage\n"));
    assert!(text.ends_with("last line\n\n"));
}

#[test]
fn mbox_entry_for_the_null_sender_and_a_message_without_final_newline() {
    let m = Delivery {
        sender: "",
        message: b"Subject: x\n\nno newline",
        rpath: None,
        client_addr: None,
        log: None,
    };
    let text =
        String::from_utf8(mbox_entry(&m, true, DEFAULT_FROM_LINE, SystemTime::now())).unwrap();
    assert!(text.starts_with("From MAILER-DAEMON "));
    assert!(text.contains("\nReturn-Path: <>\n"));
    assert!(text.ends_with("\nno newline\n\n"));
    let m2 = Delivery {
        sender: "x@y",
        message: b"Return-Path: <x@y>\n\nbody\n",
        rpath: None,
        client_addr: None,
        log: None,
    };
    let text =
        String::from_utf8(mbox_entry(&m2, true, DEFAULT_FROM_LINE, SystemTime::now())).unwrap();
    assert_eq!(text.matches("Return-Path").count(), 1);
}

#[test]
fn mailbox_delivery_appends_and_reads_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    let second = b"Subject: two\n\nFrom here\nbye\n";
    assert_eq!(
        a.deliver(&Target::User("jo".into()), None, &d(MSG)),
        Outcome::Delivered
    );
    assert_eq!(
        a.deliver(&Target::User("jo".into()), None, &d(second)),
        Outcome::Delivered
    );
    let mbox = dir.path().join("jo");
    let got = read_mbox(&fs::read(&mbox).unwrap());
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, "sender@client.example.test");
    // ">From quoted already" reads back as "From quoted already": mboxo is lossy there,
    // which is the format's known limit; everything else is exact.
    let want0: Vec<u8> = String::from_utf8_lossy(MSG)
        .replace(">From quoted", "From quoted")
        .into_bytes();
    assert_eq!(got[0].1, want0);
    assert_eq!(got[1].1, second.to_vec());
    let meta = fs::metadata(&mbox).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    if nix::unistd::geteuid().is_root() {
        assert_eq!((meta.uid(), meta.gid()), (4242, 4243));
    }
    assert!(!dir.path().join("jo.lock").exists(), "dotlock removed");
}

#[test]
fn unknown_users_bounce() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    for name in ["nobody-here", "../jo", ".jo", ""] {
        let o = a.deliver_user(name, &d(MSG));
        assert_eq!(o, Outcome::user_unknown(), "{name:?}");
        assert_eq!((o.dsn(), o.stat().as_str()), ("5.1.1", "User unknown"));
    }
}

#[test]
fn a_held_dotlock_makes_delivery_wait_then_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("jo.lock");
    fs::write(&lock, "999\n").unwrap();
    let l2 = lock.clone();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        fs::remove_file(l2).unwrap();
    });
    let start = Instant::now();
    let o = agent(dir.path()).deliver_user("jo", &d(MSG));
    releaser.join().unwrap();
    assert_eq!(o, Outcome::Delivered);
    assert!(start.elapsed() >= Duration::from_millis(250));
}

#[test]
fn a_dotlock_held_too_long_defers_and_a_stale_one_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("jo.lock");
    fs::write(&lock, "999\n").unwrap();
    let mut a = agent(dir.path());
    a.lock_timeout = Duration::from_millis(200);
    let o = a.deliver_user("jo", &d(MSG));
    assert!(o.is_temporary(), "{o:?}");
    assert_eq!(o.dsn(), "4.2.0");
    assert!(o.stat().starts_with("Deferred: "), "{}", o.stat());
    assert!(lock.exists(), "someone else's lock is left alone");
    assert!(!dir.path().join("jo").exists() || fs::read(dir.path().join("jo")).unwrap().is_empty());
    // make it 10 minutes old: stale
    File::options()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(600))
        .unwrap();
    assert_eq!(a.deliver_user("jo", &d(MSG)), Outcome::Delivered);
}

#[test]
fn a_flock_held_by_another_process_defers() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("kim");
    fs::write(&mbox, "").unwrap();
    if nix::unistd::geteuid().is_root() {
        // a mailbox must belong to its user
        std::os::unix::fs::chown(&mbox, Some(4242), Some(4243)).unwrap();
    }
    let ready = dir.path().join("ready");
    let mut holder = Command::new("flock")
        .arg("-x")
        .arg(&mbox)
        .arg("-c")
        .arg(format!("touch {}; sleep 5", ready.display()))
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = nix::unistd::Pid::from_raw(holder.id() as i32);
    for _ in 0..200 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut a = agent(dir.path());
    a.lock_timeout = Duration::from_millis(300);
    let o = a.deliver_user("kim", &d(MSG));
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = holder.wait();
    assert!(o.is_temporary(), "{o:?}");
    assert!(fs::read(&mbox).unwrap().is_empty());
    assert_eq!(a.deliver_user("kim", &d(MSG)), Outcome::Delivered);
}

/// A real file that accepts only `budget` more bytes, then fails like a full disk.
struct FullDisk {
    file: File,
    budget: usize,
}

impl AppendFile for FullDisk {
    fn current_len(&self) -> io::Result<u64> {
        self.file.current_len()
    }
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let n = bytes.len().min(self.budget);
        self.file.write_all(&bytes[..n])?;
        self.budget -= n;
        if n < bytes.len() {
            return Err(io::Error::from_raw_os_error(nix::libc::ENOSPC));
        }
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync()
    }
    fn truncate_to(&mut self, len: u64) -> io::Result<()> {
        self.file.truncate_to(len)
    }
}

#[test]
fn a_full_disk_leaves_no_half_message_and_is_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mbox");
    fs::write(&path, b"From x Mon Jan  1 00:00:00 2024\n\nold\n\n").unwrap();
    let before = fs::read(&path).unwrap();
    let file = OpenOptions::new().append(true).open(&path).unwrap();
    let mut f = FullDisk { file, budget: 10 };
    let err = append_or_rollback(
        &mut f,
        &mbox_entry(&d(MSG), true, DEFAULT_FROM_LINE, SystemTime::now()),
    )
    .unwrap_err();
    assert_eq!(fs::read(&path).unwrap(), before);
    let o = io_outcome(&path, &err);
    assert_eq!(o.dsn(), "4.2.2");
    assert!(o.is_temporary());
}

#[test]
fn an_unwritable_mailbox_is_a_temporary_failure() {
    let dir = tempfile::tempdir().unwrap();
    // the mailbox path is a directory: open fails whoever we are
    fs::create_dir(dir.path().join("jo")).unwrap();
    let o = agent(dir.path()).deliver_user("jo", &d(MSG));
    assert!(o.is_temporary(), "{o:?}");
    // a symlinked mailbox is refused (O_NOFOLLOW)
    let dir2 = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir2.path().join("jo")).unwrap();
    let o = agent(dir2.path()).deliver_user("jo", &d(MSG));
    assert!(o.is_temporary(), "{o:?}");
}

#[test]
fn file_targets_are_mbox_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy");
    let a = agent(dir.path());
    assert_eq!(
        a.deliver(&Target::File(path.clone()), None, &d(MSG)),
        Outcome::Delivered
    );
    assert_eq!(
        a.deliver(&Target::File(path.clone()), None, &d(MSG)),
        Outcome::Delivered
    );
    assert_eq!(read_mbox(&fs::read(&path).unwrap()).len(), 2);
    let missing = dir.path().join("no/such/dir/file");
    let o = a.deliver(&Target::File(missing), None, &d(MSG));
    assert!(matches!(o, Outcome::Permanent { .. }), "{o:?}");
    assert!(o.stat().starts_with("Can't create output"));
}

#[test]
fn maildir_delivery_lands_in_new_with_a_unique_name() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("Maildir");
    let a = agent(dir.path());
    let mut target = md.clone().into_os_string();
    target.push("/");
    let t = Target::File(PathBuf::from(target));
    assert_eq!(a.deliver(&t, None, &d(MSG)), Outcome::Delivered);
    assert_eq!(a.deliver(&t, None, &d(MSG)), Outcome::Delivered);
    assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
    assert!(md.join("cur").is_dir());
    let names: Vec<String> = fs::read_dir(md.join("new"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2);
    for n in &names {
        let parts: Vec<&str> = n.splitn(3, '.').collect();
        assert!(parts[0].parse::<u64>().is_ok(), "{n}");
        assert!(
            parts[1].starts_with(&format!("{}_", std::process::id())),
            "{n}"
        );
        assert_eq!(parts[2], "host\\072a\\057b");
        let body = fs::read(md.join("new").join(n)).unwrap();
        let mut want = b"Return-Path: <sender@client.example.test>\n".to_vec();
        want.extend_from_slice(MSG);
        assert_eq!(body, want, "no From line, no quoting in Maildir");
    }
}

#[test]
fn users_can_be_given_maildirs() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = agent(dir.path());
    a.format = MailboxFormat::Maildir("Maildir".into());
    fs::create_dir(dir.path().join("home-jo")).unwrap();
    assert_eq!(a.deliver_user("jo", &d(MSG)), Outcome::Delivered);
    assert_eq!(
        fs::read_dir(dir.path().join("home-jo/Maildir/new"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn program_delivery_gets_the_message_and_a_clean_environment() {
    let dir = tempfile::tempdir().unwrap();
    // the program may run as another user: let it write here
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let out = dir.path().join("out");
    let env = dir.path().join("env");
    let cmd = format!(
        "cat > {} && env | sort > {} && id -u >> {}",
        out.display(),
        env.display(),
        env.display()
    );
    let user = MailUser {
        name: "jo".into(),
        uid: 4242,
        gid: 4243,
        home: dir.path().to_path_buf(),
    };
    let a = agent(dir.path());
    assert_eq!(
        a.deliver(&Target::Program(cmd), Some(&user), &d(MSG)),
        Outcome::Delivered
    );
    assert_eq!(fs::read(&out).unwrap(), MSG);
    let env = fs::read_to_string(&env).unwrap();
    for want in [
        "PATH=/bin:/usr/bin",
        &format!("HOME={}", dir.path().display()),
        "USER=jo",
        "SENDER=sender@client.example.test",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing in {env}");
    }
    assert!(
        !env.contains("CARGO"),
        "inherited environment leaked: {env}"
    );
    let uid = env.lines().last().unwrap();
    if nix::unistd::geteuid().is_root() {
        assert_eq!(uid, "4242", "runs as the owner");
        assert_eq!(fs::metadata(&out).unwrap().uid(), 4242);
    } else {
        assert_eq!(uid, nix::unistd::geteuid().to_string());
    }
}

#[test]
fn system_alias_programs_run_as_the_default_user() {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let out = dir.path().join("uid");
    let mut a = agent(dir.path());
    a.default_user = Some((4244, 4245));
    let cmd = format!("id -u > {0}; id -g >> {0}; id -G >> {0}", out.display());
    assert_eq!(a.deliver_program(&cmd, None, &d(MSG)), Outcome::Delivered);
    let got = fs::read_to_string(&out).unwrap();
    if nix::unistd::geteuid().is_root() {
        assert_eq!(got, "4244\n4245\n4245\n", "no supplementary groups kept");
    }
}

#[test]
fn files_named_in_a_forward_must_exist_and_belong_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    let me = nix::unistd::geteuid().as_raw();
    let other = MailUser {
        name: "jo".into(),
        uid: me + 4242,
        gid: 4243,
        home: dir.path().to_path_buf(),
    };
    // absent: not created
    let absent = dir.path().join("absent");
    let o = a.deliver(&Target::File(absent.clone()), Some(&other), &d(MSG));
    assert!(matches!(o, Outcome::Permanent { .. }), "{o:?}");
    assert!(!absent.exists());
    // someone else's file (ours, not jo's): refused, untouched
    let theirs = dir.path().join("theirs");
    fs::write(&theirs, "keep\n").unwrap();
    let o = a.deliver(&Target::File(theirs.clone()), Some(&other), &d(MSG));
    assert!(matches!(o, Outcome::Permanent { .. }), "{o:?}");
    assert_eq!(fs::read(&theirs).unwrap(), b"keep\n");
    // a symlink to it: refused
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&theirs, &link).unwrap();
    let o = a.deliver(&Target::File(link), Some(&other), &d(MSG));
    assert!(matches!(o, Outcome::Permanent { .. }), "{o:?}");
    // a Maildir on their say-so: refused
    let o = a.deliver(&Target::File(dir.path().join("md/")), Some(&other), &d(MSG));
    assert!(matches!(o, Outcome::Permanent { .. }), "{o:?}");
    assert!(!dir.path().join("md").exists());
    // their own existing file: appended
    if nix::unistd::geteuid().is_root() {
        let own = dir.path().join("own");
        fs::write(&own, "").unwrap();
        std::os::unix::fs::chown(&own, Some(other.uid), Some(other.gid)).unwrap();
        let o = a.deliver(&Target::File(own.clone()), Some(&other), &d(MSG));
        assert_eq!(o, Outcome::Delivered);
        assert_eq!(read_mbox(&fs::read(&own).unwrap()).len(), 1);
    }
}

#[test]
fn a_mailbox_belonging_to_someone_else_is_not_written() {
    if !nix::unistd::geteuid().is_root() {
        return; // only root can tell (and create files for) other users
    }
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("jo");
    fs::write(&mbox, "").unwrap(); // root's, not jo's (4242)
    let o = agent(dir.path()).deliver_user("jo", &d(MSG));
    assert!(o.is_temporary(), "{o:?}");
    assert!(fs::read(&mbox).unwrap().is_empty());
}

#[test]
fn program_exit_codes_map_like_sendmail() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    let cases = [
        ("exit 0", "2.0.0", "Sent", false),
        ("exit 75", "4.0.0", "Deferred", true),
        ("exit 74", "4.0.0", "I/O error", true),
        ("exit 71", "4.0.0", "Operating system error", true),
        ("exit 67", "5.1.1", "User unknown", false),
        ("exit 69", "5.0.0", "Service unavailable", false),
        ("exit 1", "5.3.0", "unknown mailer error 1", false),
        (
            "kill -9 $$",
            "4.3.0",
            "Deferred: program died with a signal",
            true,
        ),
    ];
    for (cmd, dsn, stat, temp) in cases {
        let o = a.deliver_program(cmd, None, &d(MSG));
        assert_eq!(
            (o.dsn(), o.stat().as_str(), o.is_temporary()),
            (dsn, stat, temp),
            "{cmd}"
        );
    }
}

#[test]
fn program_output_is_kept_and_a_slow_program_is_killed() {
    let r = run_program(
        "echo oops >&2; exit 1",
        None,
        None,
        &d(MSG),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.output, b"oops\n");
    let start = Instant::now();
    let r = run_program(
        "sleep 30 & sleep 30",
        None,
        None,
        &d(MSG),
        Duration::from_millis(300),
    )
    .unwrap();
    assert!(r.outcome.is_temporary());
    assert!(r.outcome.stat().contains("timed out"));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the whole group was killed"
    );
}

#[test]
fn remote_and_error_targets_are_not_delivered_here() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    let o = a.deliver(&Target::Remote("x@y.test".into()), None, &d(MSG));
    assert!(matches!(o, Outcome::Permanent { .. }));
    let o = a.deliver(
        &Target::Error {
            address: "a".into(),
            reason: "aliasing/forwarding loop broken (11 aliases deep; 10 max)".into(),
            dsn: "5.4.6".into(),
            temporary: false,
        },
        None,
        &d(MSG),
    );
    assert_eq!(o.dsn(), "5.4.6");
    assert!(o.stat().starts_with("aliasing/forwarding loop broken"));
    let o = a.deliver(
        &Target::Error {
            address: "jo".into(),
            reason: "transient .forward open error (I/O error): message queued".into(),
            dsn: "4.3.0".into(),
            temporary: true,
        },
        None,
        &d(MSG),
    );
    assert!(o.is_temporary());
    assert_eq!(o.dsn(), "4.3.0");
}

#[test]
fn a_background_child_holding_the_pipes_does_not_hold_up_delivery() {
    let start = Instant::now();
    let r = run_program(
        "echo $$; sleep 20 & exit 0",
        None,
        None,
        &d(MSG),
        Duration::from_secs(30),
    )
    .unwrap();
    let elapsed = start.elapsed();
    // end the left-over sleep (the program's process group) ourselves
    let pgid: i32 = String::from_utf8_lossy(&r.output).trim().parse().unwrap();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(r.outcome, Outcome::Delivered);
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn a_users_maildir_cannot_point_root_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = agent(dir.path());
    a.format = MailboxFormat::Maildir("Maildir".into());
    let home = dir.path().join("home-jo");
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir_all(home.join("Maildir/tmp")).unwrap();
    fs::create_dir_all(home.join("Maildir/cur")).unwrap();
    fs::create_dir(&elsewhere).unwrap();
    if nix::unistd::geteuid().is_root() {
        for p in [
            home.join("Maildir"),
            home.join("Maildir/tmp"),
            home.join("Maildir/cur"),
        ] {
            std::os::unix::fs::chown(&p, Some(4242), Some(4243)).unwrap();
        }
    }
    std::os::unix::fs::symlink(&elsewhere, home.join("Maildir/new")).unwrap();
    let o = a.deliver_user("jo", &d(MSG));
    assert!(o.is_temporary(), "{o:?}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(fs::read_dir(home.join("Maildir/tmp")).unwrap().count(), 0);
    // a Maildir that is a symlink itself is refused too
    let home2 = dir.path().join("home-kim");
    fs::create_dir(&home2).unwrap();
    std::os::unix::fs::symlink(&elsewhere, home2.join("Maildir")).unwrap();
    let o = a.deliver_user("kim", &d(MSG));
    assert!(o.is_temporary(), "{o:?}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// The rulesets of the oracle's cf (tests/fixtures/oracle.cf) as the daemon loads them.
fn oracle_rules() -> std::sync::Arc<crate::rules::handle::Handle> {
    let text = std::fs::read_to_string("tests/fixtures/oracle.cf")
        .unwrap()
        .replace("@ORACLE@", "/nonexistent");
    let host = crate::rules::cf::HostInfo {
        hostname: "oracle.example.test".into(),
        addresses: vec!["127.0.0.1".parse().unwrap()],
    };
    let (engine, x) = match crate::rules::cf::load(text.as_bytes(), "oracle.cf", &host) {
        Ok(v) => v,
        Err(errs) => panic!("{errs:?}"),
    };
    std::sync::Arc::new(crate::rules::handle::Handle::new(engine, &x.mailers))
}

const NULL_SENDER_MSG: &[u8] = b"From: alice (Alice A)\nTo: alice, root@localhost\n\nbody\n";

#[test]
fn without_rules_a_file_gets_the_message_as_queued() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("archive");
    let a = agent(dir.path());
    let d = Delivery {
        sender: "",
        message: NULL_SENDER_MSG,
        rpath: None,
        client_addr: None,
        log: None,
    };
    assert_eq!(
        a.deliver(&Target::File(file.clone()), None, &d),
        Outcome::Delivered
    );
    let text = fs::read_to_string(&file).unwrap();
    let (from, rest) = text.split_once('\n').unwrap();
    assert!(from.starts_with("From MAILER-DAEMON "), "{from}");
    assert_eq!(
        rest,
        "Return-Path: <>\nFrom: alice (Alice A)\nTo: alice, root@localhost\n\nbody\n\n"
    );
}

/// sendmail 8.17.1.9 on the oracle's cf, `sendmail -f '<>' archive pipe` (2026-12-02): the
/// `*file*` mailer has no `S=`, so `<>` stays empty in its `From ` line and `Return-Path:`;
/// `prog` (`S=EnvFromL`) says `MAILER-DAEMON` and, without flag `n`, gets a `From ` line.
#[test]
fn with_rules_each_target_gets_what_its_mailer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("archive");
    let out = dir.path().join("pipe.out");
    let mut a = agent(dir.path());
    a.rules = Some(oracle_rules());
    a.prog_flags = Some("lsDFMoqeu9".into());
    let d = Delivery {
        sender: "",
        message: NULL_SENDER_MSG,
        rpath: None,
        client_addr: None,
        log: None,
    };
    let headers = "From: alice (Alice A)\nTo: alice, root@oracle.example.test\n\nbody\n";
    assert_eq!(
        a.deliver(&Target::File(file.clone()), None, &d),
        Outcome::Delivered
    );
    let text = fs::read_to_string(&file).unwrap();
    let (from, rest) = text.split_once('\n').unwrap();
    assert!(
        from.starts_with("From  ") && from.len() == 6 + 24,
        "{from:?}"
    );
    assert_eq!(rest, format!("Return-Path: <>\n{headers}\n"));

    let cmd = format!("cat > {}", out.display());
    assert_eq!(
        a.deliver(&Target::Program(cmd), None, &d),
        Outcome::Delivered
    );
    let text = fs::read_to_string(&out).unwrap();
    let (from, rest) = text.split_once('\n').unwrap();
    assert!(from.starts_with("From MAILER-DAEMON "), "{from:?}");
    assert_eq!(rest, headers);
}

#[test]
fn unix_from_line_is_the_cfs_template_with_g_and_d() {
    let cfg = crate::config::Config::from_str(
        "t.cf",
        "Djmta.example.test\nDXsite\nO UnixFromLine=From $g $d remote from $j via ${X}\n",
        &[],
    )
    .unwrap();
    let template = from_line_template(&cfg);
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(86400 * 365);
    let date = chrono::DateTime::<chrono::Local>::from(when)
        .format("%a %b %e %H:%M:%S %Y")
        .to_string();
    let e = String::from_utf8(mbox_entry(&d(MSG), false, &template, when)).unwrap();
    let first = e.lines().next().unwrap();
    assert_eq!(
        first,
        format!("From sender@client.example.test {date} remote from mta.example.test via site")
    );
    // The default cf value gives sendmail's usual line.
    let plain =
        crate::config::Config::from_str("t.cf", "O UnixFromLine=From $g $d\n", &[]).unwrap();
    assert_eq!(from_line_template(&plain), DEFAULT_FROM_LINE);
}

#[test]
fn safe_file_environment_resolves_files_inside_it_and_takes_only_regular_files() {
    let spool = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("log")).unwrap();
    let mut a = agent(spool.path());
    a.safe_file_environment = Some(root.path().to_path_buf());
    let file = |p: &str| Target::File(PathBuf::from(p));
    // A name is taken inside the environment, with or without its prefix.
    assert_eq!(
        a.deliver(&file("/log/mail"), None, &d(MSG)),
        Outcome::Delivered
    );
    let prefixed = format!("{}/log/mail", root.path().display());
    assert_eq!(
        a.deliver(&file(&prefixed), None, &d(MSG)),
        Outcome::Delivered
    );
    let got = fs::read(root.path().join("log/mail")).unwrap();
    assert_eq!(read_mbox(&got).len(), 2);
    // `..` and an absolute symlink on the way stay inside.
    std::os::unix::fs::symlink(outside.path(), root.path().join("log/out")).unwrap();
    let o = a.deliver(&file("/log/out/escaped"), None, &d(MSG));
    assert!(matches!(o, Outcome::Permanent { .. }), "{o:?}");
    assert!(!outside.path().join("escaped").exists());
    assert_eq!(
        a.deliver(&file("/../../x"), None, &d(MSG)),
        Outcome::Delivered
    );
    assert!(root.path().join("x").exists());
    // Only regular files: not a directory, not a file with two links, not a program.
    let o = a.deliver(&file("/log"), None, &d(MSG));
    assert!(
        matches!(&o, Outcome::Permanent { reason, .. } if reason.contains("Can't create output")),
        "{o:?}"
    );
    fs::hard_link(root.path().join("x"), root.path().join("x2")).unwrap();
    let o = a.deliver(&file("/x2"), None, &d(MSG));
    assert!(
        matches!(&o, Outcome::Permanent { reason, .. } if reason.contains("more than one link")),
        "{o:?}"
    );
    fs::write(root.path().join("prog"), "").unwrap();
    fs::set_permissions(root.path().join("prog"), fs::Permissions::from_mode(0o755)).unwrap();
    let o = a.deliver(&file("/prog"), None, &d(MSG));
    assert!(
        matches!(&o, Outcome::Permanent { reason, .. } if reason.contains("executable")),
        "{o:?}"
    );
    // /dev/null takes the message and keeps nothing (sendmail's special case).
    assert_eq!(
        a.deliver(&file("/dev/null"), None, &d(MSG)),
        Outcome::Delivered
    );
}

/// Waits (bounded, on state, not on time) until `n` deliveries are queued for `key`.
fn wait_queued(a: &LocalDelivery, key: &MboxKey, n: usize) {
    let give_up = Instant::now() + Duration::from_secs(30);
    while a.batches.mbox.queued(key) < n {
        assert!(Instant::now() < give_up, "deliveries never queued");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn deliveries_waiting_for_a_mailbox_are_written_under_one_lock_and_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let a = std::sync::Arc::new(agent(dir.path()));
    let mbox = dir.path().join("jo");
    // someone else holds the dotlock: the first delivery leads and waits for it, the
    // others queue behind it
    let lock = dir.path().join("jo.lock");
    fs::write(&lock, b"1\n").unwrap();
    let key = MboxKey {
        path: mbox.clone(),
        kind: 1,
        uid: Some(4242),
    };
    let n = 6;
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let a = a.clone();
            std::thread::spawn(move || {
                let body = format!("Subject: {i}\n\nFrom here on, message {i}\n");
                a.deliver_user("jo", &d(body.as_bytes()))
            })
        })
        .collect();
    wait_queued(&a, &key, n);
    assert!(fs::read(&mbox).map(|b| b.is_empty()).unwrap_or(true));
    fs::remove_file(&lock).unwrap();
    for t in threads {
        assert_eq!(t.join().unwrap(), Outcome::Delivered);
    }
    assert_eq!(a.batches.totals(), (1, n as u64), "one fsync for the batch");
    let got = read_mbox(&fs::read(&mbox).unwrap());
    assert_eq!(got.len(), n);
    let mut subjects: Vec<String> = got
        .iter()
        .map(|(_, m)| {
            let m = String::from_utf8_lossy(m).into_owned();
            assert!(m.contains("\n\nFrom here on, message "), "{m}");
            m.lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap()
                .to_string()
        })
        .collect();
    subjects.sort();
    let want: Vec<String> = (0..n).map(|i| format!("Subject: {i}")).collect();
    assert_eq!(subjects, want);
    assert!(!lock.exists(), "the dotlock is removed after the batch");
    assert_eq!(a.batches.mbox.queued(&key), 0);
}

#[test]
fn a_leader_that_cannot_lock_fails_alone_and_the_next_one_leads() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = agent(dir.path());
    a.lock_timeout = Duration::from_millis(300);
    let a = std::sync::Arc::new(a);
    let lock = dir.path().join("jo.lock");
    fs::write(&lock, b"1\n").unwrap();
    let key = MboxKey {
        path: dir.path().join("jo"),
        kind: 1,
        uid: Some(4242),
    };
    // the first one leads and times out on the lock; the second waits behind it
    let first = {
        let a = a.clone();
        std::thread::spawn(move || a.deliver_user("jo", &d(MSG)))
    };
    wait_queued(&a, &key, 1);
    let second = {
        let a = a.clone();
        std::thread::spawn(move || a.deliver_user("jo", &d(MSG)))
    };
    wait_queued(&a, &key, 2);
    let o = first.join().unwrap();
    assert!(o.is_temporary(), "{o:?}");
    // the second leads now: released, it delivers
    fs::remove_file(&lock).unwrap();
    let o2 = second.join().unwrap();
    // it may have timed out too if it led before the lock went; then it is temporary and
    // nothing was written; otherwise one message is there
    let got = read_mbox(&fs::read(dir.path().join("jo")).unwrap_or_default());
    match o2 {
        Outcome::Delivered => assert_eq!(got.len(), 1),
        o => {
            assert!(o.is_temporary(), "{o:?}");
            assert!(got.is_empty());
        }
    }
    assert_eq!(a.batches.mbox.queued(&key), 0);
}

/// A real file with a size limit, failing like a quota (`EDQUOT`) after writing part.
struct Quota {
    file: File,
    max: u64,
    errno: i32,
}

impl AppendFile for Quota {
    fn current_len(&self) -> io::Result<u64> {
        self.file.current_len()
    }
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = self.file.current_len()?;
        if len + bytes.len() as u64 > self.max {
            self.file.write_all(&bytes[..bytes.len() / 2])?;
            return Err(io::Error::from_raw_os_error(self.errno));
        }
        self.file.write_all(bytes)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync()
    }
    fn truncate_to(&mut self, len: u64) -> io::Result<()> {
        self.file.truncate_to(len)
    }
}

#[test]
fn a_message_over_quota_is_deferred_alone_and_an_io_error_defers_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mbox");
    fs::write(&path, b"From x Mon Jan  1 00:00:00 2024\n\nold\n\n").unwrap();
    let before = fs::read(&path).unwrap();
    let small1 = b"From a Mon Jan  1 00:00:00 2024\n\none\n\n".to_vec();
    let big = vec![b'x'; 4000];
    let small2 = b"From b Mon Jan  1 00:00:00 2024\n\ntwo\n\n".to_vec();
    let entries: Vec<&[u8]> = vec![&small1, &big, &small2];
    let open = || OpenOptions::new().append(true).open(&path).unwrap();
    let mut f = Quota {
        file: open(),
        max: 1000,
        errno: nix::libc::EDQUOT,
    };
    let r = batch::append_batch(&mut f, &entries);
    assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
    assert_eq!(io_outcome(&path, r[1].as_ref().unwrap_err()).dsn(), "4.2.2");
    assert_eq!(
        fs::read(&path).unwrap(),
        [&before[..], &small1, &small2].concat()
    );
    // any other write error: back to where the batch started, all deferred
    fs::write(&path, &before).unwrap();
    let mut f = Quota {
        file: open(),
        max: 1000,
        errno: nix::libc::EIO,
    };
    let r = batch::append_batch(&mut f, &entries);
    assert!(r.iter().all(|r| r.is_err()), "{r:?}");
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn maildir_deliveries_at_once_land_whole_in_new_and_share_directory_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let a = std::sync::Arc::new(agent(dir.path()));
    let n = 8;
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (a, base) = (a.clone(), dir.path().to_path_buf());
            std::thread::spawn(move || {
                let body = format!("Subject: {i}\n\nbody\n");
                a.deliver_maildir(&base, Path::new("Maildir"), None, &d(body.as_bytes()))
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Outcome::Delivered);
    }
    let md = dir.path().join("Maildir");
    let mut got: Vec<String> = fs::read_dir(md.join("new"))
        .unwrap()
        .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    got.sort();
    let want: Vec<String> = (0..n)
        .map(|i| format!("Return-Path: <sender@client.example.test>\nSubject: {i}\n\nbody\n"))
        .collect();
    assert_eq!(got, want);
    assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
    // every delivery was reported after a directory fsync that covered it; at most one each
    let (syncs, messages) = a.batches.totals();
    assert_eq!(messages, n as u64);
    assert!((1..=n as u64).contains(&syncs), "{syncs}");
}

#[test]
fn a_maildir_moved_away_or_removed_gets_the_next_message_where_its_path_leads() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    let md = dir.path().join("Maildir");
    let count = |p: &Path| fs::read_dir(p).map(|r| r.count()).unwrap_or(0);
    let deliver = || a.deliver_maildir(dir.path(), Path::new("Maildir"), None, &d(MSG));
    assert_eq!(deliver(), Outcome::Delivered);
    // moved away and made anew: the kept directories are not where the path leads now
    fs::rename(&md, dir.path().join("Maildir.old")).unwrap();
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(md.join(sub)).unwrap();
    }
    assert_eq!(deliver(), Outcome::Delivered);
    assert_eq!(count(&md.join("new")), 1);
    assert_eq!(count(&dir.path().join("Maildir.old/new")), 1);
    // its tmp removed: the kept one is gone, a fresh one is made
    fs::remove_dir_all(md.join("tmp")).unwrap();
    assert_eq!(deliver(), Outcome::Delivered);
    assert_eq!(count(&md.join("new")), 2);
    // removed whole
    fs::remove_dir_all(&md).unwrap();
    assert_eq!(deliver(), Outcome::Delivered);
    assert_eq!(count(&md.join("new")), 1);
    assert!(md.join("cur").is_dir() && md.join("tmp").is_dir());
}
