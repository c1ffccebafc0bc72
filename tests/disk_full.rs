//! Disk protection, end to end: the daemon's queue on a small tmpfs in a private mount
//! namespace (root only: `unshare -m`, `mount -t tmpfs -o size=512k`), filled with a ballast
//! file; `MinFreeBlocks` refuses MAIL with `452 4.4.5`, a commit that meets ENOSPC answers
//! `452 4.3.1 Insufficient system storage`; every message acknowledged before stays queued,
//! and mail is taken again once the ballast is removed.

mod support;

use std::process::Command;

use support::{Daemon, Smtp};

const CF: &str = "\
Djmta.example.test
O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1
";

/// Whether this test can make mount namespaces (root with CAP_SYS_ADMIN); prints why not.
fn can_mount() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: disk-full tests need root (mount namespaces, tmpfs)");
        return false;
    }
    let ok = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: cannot mount a tmpfs in a private mount namespace here");
    }
    ok
}

/// Starts the daemon in its own mount namespace with a `size`-KiB tmpfs as its queue
/// directory, holding a `ballast_kib` file named `ballast`.
fn start_on_tmpfs(size_kib: u32, ballast_kib: u32, args: &[&str]) -> Daemon {
    let script = format!(
        "for a; do case \"$a\" in QueueDirectory=*) q=\"${{a#QueueDirectory=}}\";; esac; done; \
         mkdir -p \"$q\" && mount -t tmpfs -o size={size_kib}k,mode=0700 tmpfs \"$q\" && \
         dd if=/dev/zero of=\"$q/ballast\" bs=1k count={ballast_kib} status=none && exec \"$@\""
    );
    let wrapper = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ];
    let mut all = vec!["-O", "DeliveryMode=queueonly"];
    all.extend_from_slice(args);
    Daemon::start_wrapped(CF, &all, &wrapper)
}

/// Runs `argv` inside the daemon's mount namespace.
fn in_namespace(d: &Daemon, argv: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .args(["-t", &d.pid().to_string(), "-m", "--"])
        .args(argv)
        .output()
        .unwrap()
}

fn remove_ballast(d: &Daemon) {
    let ballast = d.queue_dir().join("ballast");
    let out = in_namespace(d, &["rm", ballast.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
}

/// `sendmail -bp` on the queue as the daemon sees it.
fn mailq(d: &Daemon) -> String {
    let q = format!("QueueDirectory={}", d.queue_dir().display());
    let out = in_namespace(
        d,
        &[
            support::sendmail_bin(),
            "-bp",
            "-C",
            d.cf.to_str().unwrap(),
            "-O",
            &q,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// One transaction with a body of `kib` KiB; the replies to MAIL and to the end of DATA
/// (the latter None when MAIL was refused).
fn send(c: &mut Smtp, mail_args: &str, kib: usize) -> (String, Option<String>) {
    let mail = c.cmd(&format!(
        "MAIL FROM:<sender@client.example.test>{mail_args}"
    ));
    let mail = mail.last().unwrap().clone();
    if !mail.starts_with("250") {
        return (mail, None);
    }
    let rcpt = c.cmd("RCPT TO:<root@mta.example.test>");
    assert!(rcpt[0].starts_with("250"), "{rcpt:?}");
    assert!(c.cmd("DATA")[0].starts_with("354"));
    c.send("Subject: filler\r\n");
    let line = "x".repeat(1023);
    for _ in 0..kib {
        c.send(&line);
    }
    let end = c.cmd(".");
    (mail, Some(end.last().unwrap().clone()))
}

fn queued_id(reply: &str) -> Option<String> {
    reply
        .strip_prefix("250 2.0.0 ")
        .and_then(|r| r.strip_suffix(" Message accepted for delivery"))
        .map(str::to_string)
}

#[test]
fn min_free_blocks_refuses_mail_until_space_returns() {
    if !can_mount() {
        return;
    }
    // 512 KiB = 128 blocks of 4 KiB; with 320 KiB of ballast about 48 are free, fewer than
    // the default MinFreeBlocks of 100.
    let mut d = start_on_tmpfs(512, 320, &[]);
    let addr = d.addr_of("MTA-v4");
    let mut c = Smtp::connect(addr);
    c.reply();
    c.cmd("EHLO client.example.test");
    let (mail, _) = send(&mut c, "", 1);
    assert_eq!(mail, "452 4.4.5 Insufficient disk space; try again later");
    let log = d.wait_log("low on space");
    assert!(log.contains("+ 100 blocks in"), "{log}");

    remove_ballast(&d);
    // 128 blocks free now, but a 300,000-byte message needs 74 more than the 100 kept free.
    let (mail, _) = send(&mut c, " SIZE=300000", 1);
    assert_eq!(mail, "452 4.4.5 Insufficient disk space; try again later");
    let (mail, end) = send(&mut c, " SIZE=2000", 1);
    assert!(mail.starts_with("250 2.1.0"), "{mail}");
    let id = queued_id(end.as_deref().unwrap()).expect("accepted once space returned");
    c.cmd("QUIT");
    assert!(mailq(&d).contains(&id));
}

#[test]
fn a_full_disk_at_commit_answers_452_and_keeps_everything_acknowledged() {
    if !can_mount() {
        return;
    }
    let mut d = start_on_tmpfs(512, 256, &["-O", "MinFreeBlocks=0"]);
    let addr = d.addr_of("MTA-v4");
    let mut c = Smtp::connect(addr);
    c.reply();
    c.cmd("EHLO client.example.test");
    let mut acked = Vec::new();
    let mut refused = None;
    // About 256 KiB are free: 60 KiB messages fill it within a handful.
    for _ in 0..20 {
        let (_, end) = send(&mut c, "", 60);
        let end = end.unwrap();
        match queued_id(&end) {
            Some(id) => acked.push(id),
            None => {
                refused = Some(end);
                break;
            }
        }
    }
    assert_eq!(
        refused.as_deref(),
        Some("452 4.3.1 Insufficient system storage"),
        "after {} accepted",
        acked.len()
    );
    assert!(!acked.is_empty());
    // The session goes on; the disk is still full.
    let (_, end) = send(&mut c, "", 60);
    assert_eq!(end.unwrap(), "452 4.3.1 Insufficient system storage");
    let q = mailq(&d);
    for id in &acked {
        assert!(q.contains(id.as_str()), "{id} lost:\n{q}");
    }

    remove_ballast(&d);
    let (_, end) = send(&mut c, "", 60);
    let id = queued_id(end.as_deref().unwrap())
        .unwrap_or_else(|| panic!("not accepted after space returned: {end:?}"));
    acked.push(id);
    c.cmd("QUIT");
    let q = mailq(&d);
    for id in &acked {
        assert!(q.contains(id.as_str()), "{id} lost:\n{q}");
    }
    assert!(
        q.contains(&format!("Total requests: {}", acked.len())),
        "{q}"
    );
    // Everything acknowledged survives a restart too: the journal replays whole.
    assert!(d.stop().success());
}
