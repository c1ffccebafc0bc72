//! The set-group-id submission privilege: how any local user's `sendmail`, `mail(1)`, cron
//! job or PHP `mail()` reaches the queue, as Postfix's `postdrop` does.
//!
//! In: the process's real and effective group at start-up (the binary is installed
//! set-group-id [`GROUP`], mode 2755) and the command line. Out: a process whose effective
//! group is its real group from the first line of `main` on; the privileged group is kept
//! only as the saved set-group-id, and taken back ([`with_privilege`]) for exactly two
//! things: writing a file into `<QueueDirectory>/maildrop` (owned by the queue's owner,
//! group [`GROUP`], mode 1730: the group may create files there, not list or read them)
//! and reading the queue for `mailq`. Everything else — reading the configuration, the
//! message, the aliases — runs without it.
//!
//! The privilege is dropped for good ([`drop_for_good`]: real, effective and saved group all
//! the real one) as sendmail drops its set-user-id — when, is the command line's business
//! ([`crate::cli::settle_privilege`]): for root, who needs no group; for every mode but
//! submission (`-t`, `-bm`, `-bs`) and `-bp`; and when a non-root user names another
//! configuration (`-C`) or sets an option that could change where files are read or
//! written. A user who asks for another queue directory then writes there with their own
//! rights. A ground-layer module: the maildrop, the queue runner and the daemon use it.

use std::sync::atomic::{AtomicU32, Ordering};

use nix::unistd::{Gid, getegid, getgid, setresgid};

/// The group the binary is installed set-group-id to, and the group of the queue directory
/// and its maildrop (Debian's name for sendmail's message submission program's group).
pub const GROUP: &str = "smmsp";

/// sysexits(3)'s EX_SOFTWARE (the ground layer does not reach sideways to `sysexits`).
const EX_SOFTWARE: i32 = 70;

/// No saved privilege.
const NONE: u32 = u32::MAX;

/// The privileged group kept as the saved set-group-id ([`NONE`]: none).
static SAVED: AtomicU32 = AtomicU32::new(NONE);

fn saved() -> Option<Gid> {
    let g = SAVED.load(Ordering::SeqCst);
    (g != NONE).then(|| Gid::from_raw(g))
}

/// The submission group, when the system has one.
pub fn submission_group() -> Option<Gid> {
    nix::unistd::Group::from_name(GROUP)
        .ok()
        .flatten()
        .map(|g| g.gid)
}

/// First thing in `main`: the effective group becomes the real group; a set-group-id
/// privilege is kept only as the saved set-group-id. A no-op when the binary is not
/// set-group-id.
pub fn at_start() {
    let (real, eff) = (getgid(), getegid());
    if real == eff {
        return;
    }
    if setresgid(real, real, eff).is_err() {
        // Cannot happen for a set-group-id process; never keep running privileged.
        drop_for_good();
        return;
    }
    SAVED.store(eff.as_raw(), Ordering::SeqCst);
}

/// Real, effective and saved group all become the real group: the privilege cannot come back.
pub fn drop_for_good() {
    let real = getgid();
    // Failing to drop a group we hold cannot happen; if it did, stop rather than go on.
    if setresgid(real, real, real).is_err() {
        eprintln!("sendmail: cannot give up the set-group-id privilege");
        std::process::exit(EX_SOFTWARE);
    }
    SAVED.store(NONE, Ordering::SeqCst);
}

/// Whether a privileged group is held as the saved set-group-id.
pub fn held() -> bool {
    saved().is_some()
}

/// Runs `f` with the saved privileged group as the effective group, then gives it up again.
/// Without a saved privilege (not set-group-id, root, or dropped) it just runs `f`.
pub fn with_privilege<T>(f: impl FnOnce() -> T) -> T {
    let Some(gid) = saved() else {
        return f();
    };
    let real = getgid();
    let unchanged = Gid::from_raw(NONE); // -1: setresgid leaves that id as it is
    if setresgid(unchanged, gid, unchanged).is_err() {
        return f();
    }
    let out = f();
    if setresgid(unchanged, real, unchanged).is_err() {
        eprintln!("sendmail: cannot give up the set-group-id privilege");
        std::process::exit(EX_SOFTWARE);
    }
    out
}

/// Mode of `<QueueDirectory>/maildrop` when the submission group exists: the owner (the
/// daemon) reads and removes, the group may only create (and rename) its own files there
/// (sticky), nobody else may enter.
pub const MAILDROP_MODE: u32 = 0o1730;

/// As root (the daemon at start-up, `sendmail -q`, root's own submission): gives the queue
/// in `qdir` to the submission group when the system has it — the queue directory and its
/// `journal/` group [`GROUP`], mode 2750 (the group may enter and, for `mailq`, read; new
/// files inherit the group), the journal's segments readable by the group (0640 from 0600), the maildrop [`MAILDROP_MODE`]
/// owned by the queue's owner — and creates the maildrop (mode 0700 without the group, or
/// when not root: then only that is done).
///
/// The queue may belong to the daemon's `RunAsUser`, who could swap an entry for a symlink
/// meanwhile: below the queue directory nothing is resolved by path. Each directory and
/// segment is opened `O_NOFOLLOW` relative to its parent's descriptor and changed through
/// its own descriptor (`fchown`, `fchmod`); a maildrop that is not a directory of root's or
/// the queue owner's is refused.
pub fn prepare_queue(qdir: &std::path::Path) -> std::io::Result<()> {
    use nix::fcntl::{OFlag, open, openat};
    use nix::sys::stat::{Mode, fchmod, fstat, mkdirat};
    use nix::unistd::fchown;
    use std::os::fd::AsRawFd;
    let root = nix::unistd::geteuid().is_root();
    let dir = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let qfd = open(
        qdir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let qst = fstat(&qfd)?;
    match mkdirat(&qfd, "maildrop", Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let mfd = openat(&qfd, "maildrop", dir, Mode::empty()).map_err(|e| match e {
        nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
            std::io::Error::other("maildrop is not a directory (a symlink?); refused")
        }
        e => e.into(),
    })?;
    let mst = fstat(&mfd)?;
    if mst.st_uid != 0 && mst.st_uid != qst.st_uid {
        return Err(std::io::Error::other(format!(
            "maildrop is owned by uid {}, not by the queue's owner or root; refused",
            mst.st_uid
        )));
    }
    // Not root (a daemon of one's own, `--unprivileged`): the maildrop is made, 0700.
    let Some(gid) = submission_group().filter(|_| root) else {
        return Ok(());
    };
    // chown clears set-id bits: the mode goes last. The owner keeps what it has (root, or
    // RunAsUser); only the group and its bits change.
    let set = |fd: &std::os::fd::OwnedFd, uid: Option<u32>, mode: u32| -> std::io::Result<()> {
        fchown(fd, uid.map(nix::unistd::Uid::from_raw), Some(gid))?;
        fchmod(fd, Mode::from_bits_truncate(mode))?;
        Ok(())
    };
    let owner_bits = qst.st_mode & 0o700;
    set(&qfd, None, 0o2000 | owner_bits | 0o050)?;
    match openat(&qfd, "journal", dir, Mode::empty()) {
        Ok(jfd) => {
            set(&jfd, None, 0o2750)?;
            let listing = format!("/proc/self/fd/{}", jfd.as_raw_fd());
            for entry in std::fs::read_dir(listing)?.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                let seg = openat(
                    &jfd,
                    entry.file_name().as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                let st = fstat(&seg)?;
                if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG {
                    // QueueFileMode's owner bits, and read for the group only.
                    set(&seg, None, (st.st_mode & 0o700) | 0o040)?;
                }
            }
        }
        Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    set(&mfd, Some(qst.st_uid), MAILDROP_MODE)
}
