//! Mailer programs in flight: a record, per delivery, that outlives the daemon.
//!
//! In: the path of a status file for one recipient's delivery ([`track`], set by the queue
//! runner around the delivery), and the program about to run ([`super::run_command`]). Out:
//! the file, written by the program's own supervising process: `pid N` when it starts,
//! then `exit C` or `signal S` when the program ends ([`read`]).
//!
//! Why. A mailer program (procmail, mail.local, a `|program` alias) runs in its own process
//! group, so that a time limit can kill it and everything it started. When the daemon dies
//! (SIGKILL, OOM, a crash) the program goes on, delivers, and exits to nobody; the queue
//! still says the recipient is pending and the next daemon delivers it again. Killing the
//! programs with their parent is not safe: a program stopped in the middle of an append
//! leaves half a message in the mailbox (mail.local truncates back on its own errors, not on
//! SIGKILL), and one stopped just after its append still counts as undelivered. So the
//! program is run under a small supervisor — this binary started again in a mode of its own
//! ([`supervise`] says why it is not a fork of the daemon): the supervisor keeps the status file open, waits for the program, writes how it ended and
//! exits the same way (same code, or the same signal), so the daemon that is still there
//! sees exactly what it saw before. A restarted daemon reads the files the previous one
//! left ([`crate::runner`]'s recovery): a program that ended with 0 delivered, so the
//! recipient is done; one still running is waited for (its `pid`, checked through
//! `/proc/PID/fd` to be the process that holds this very file) before anything else is
//! tried for that message; one that failed or was killed is retried as usual. What is left
//! is the window between the supervisor's start and its `pid` line, and a program killed
//! with its supervisor (a killed process group): those are retried, at most one duplicate
//! each.
//!
//! The file is created by the daemon (root, mode 0600, in `<QueueDirectory>/mailers/`) and
//! reopened by the supervisor (root, as the daemon) by its path, which is on its command
//! line; the program itself never sees it (close-on-exec). The program reads the message from a file in memory, not from a pipe
//! the daemon writes: a daemon that dies while writing would otherwise hand the program a
//! truncated message — often an empty one, which a program like procmail delivers and
//! exits 0 for.
//!
//! Built-in mbox and Maildir deliveries run inside the daemon and die with it, but what
//! they made durable stays: the caller records `exit 0` for the recipient ([`delivered`],
//! a line of the log [`LOCAL_LOG`] rather than a file of its own) as soon as the delivery's
//! fsync returned, before the outcome travels back to the queue; an mbox batch's leader
//! records beforehand where each entry goes ([`appending`]), a Maildir delivery the name its
//! file is about to get in `new/` ([`placing`]). That narrows the window in which a daemon killed after the fsync
//! delivers again — which matters more since deliveries to one mailbox share their fsync
//! ([`super::batch`]): a kill in that window would duplicate the whole batch. The record is
//! not fsynced: the daemon's death keeps the page cache, and after a crash of the machine
//! a lost record only means a duplicate; the record is never written before the mailbox's
//! own fsync, so it never stands for a message that is not on the disk.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

thread_local! {
    static STATUS: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Runs `f` (a blocking delivery on this thread) with `status` as the status file of any
/// program it starts.
pub fn track<T>(status: Option<PathBuf>, f: impl FnOnce() -> T) -> T {
    let before = STATUS.with(|s| s.replace(status));
    let out = f();
    STATUS.with(|s| *s.borrow_mut() = before);
    out
}

/// Records, in this thread's status file (when [`track`] set one), that the delivery is
/// done and durable: `exit 0`, as a program's supervisor writes it.
pub fn delivered() {
    let Some(path) = STATUS.with(|s| s.borrow().clone()) else {
        return;
    };
    log_line(&path, "exit 0");
}

/// This thread's status file, if [`track`] set one.
pub fn current() -> Option<PathBuf> {
    STATUS.with(|s| s.borrow().clone())
}

/// Records in `status`, before the append, where a built-in mbox delivery puts its entry
/// (`bytes` at `offset` of `mailbox`). Should the daemon die before the fsync returns, the
/// next one finds the entry there or not ([`confirm_append`]) instead of appending it a
/// second time; a batch of appends ([`super::batch`]) is otherwise all duplicated by a
/// kill during its fsync.
pub fn appending(status: &Path, mailbox: &Path, offset: u64, bytes: &[u8]) {
    let line = format!(
        "append {offset} {} {} {}",
        bytes.len(),
        crc32fast::hash(bytes),
        mailbox.display()
    );
    log_line(status, &line);
}

/// Records in `status`, before the file is linked into the Maildir, the name a built-in
/// Maildir delivery gives it (`maildir PATH`, PATH in the Maildir's `new/`). Deliveries to
/// one Maildir share the fsync of `new/` ([`super::batch`]): a daemon killed during it
/// leaves every file of the batch in `new/` with no record that it was delivered, and the
/// next daemon would deliver them all again (crash harness, `--local maildir`: 7 local
/// duplicates in 15 kills). With this record it finds the file instead
/// ([`confirm_maildir`]).
pub fn placing(status: &Path, file: &Path) {
    log_line(status, &format!("maildir {}", file.display()));
}

/// Whether the Maildir file a [`Record::Placing`] names is there: in `new/` as named, or
/// already moved by a reader to `cur/` (the same name, with or without the `:2,` flags a
/// reader adds). If so, that directory is synced here before the caller counts the
/// message delivered (the previous daemon may have died before its own sync returned).
/// Only regular files count, looked at without following a symlink.
pub fn confirm_maildir(file: &Path) -> bool {
    let (Some(new), Some(name)) = (file.parent(), file.file_name()) else {
        return false;
    };
    let sync_dir = |dir: &Path| {
        OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
            .open(dir)
            .and_then(|d| d.sync_all())
            .is_ok()
    };
    if std::fs::symlink_metadata(file).is_ok_and(|m| m.is_file()) {
        return sync_dir(new);
    }
    let Some(cur) = new.parent().map(|m| m.join("cur")) else {
        return false;
    };
    let name = name.to_string_lossy();
    let flagged = format!("{name}:");
    let moved = std::fs::read_dir(&cur).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            (n == name || n.starts_with(&flagged)) && e.file_type().is_ok_and(|t| t.is_file())
        })
    });
    moved && sync_dir(&cur)
}

/// The built-in deliveries' records do not get a file each: creating and removing a file
/// per message puts two metadata changes per message into every commit of the file
/// system's journal — which the queue's own fdatasyncs wait for (measured, bench local
/// cells: 516–956 msg/s into an mbox with a file per delivery, 1,757–1,905 without). They
/// are lines of one append-only log beside the status files, `<dir>/local.log`
/// (`<queue id>.<index> <record>`), never synced (see the module doc), started afresh past
/// [`LOG_ROTATE`] bytes (the previous one kept as `local.log.1`, read too at recovery).
pub const LOCAL_LOG: &str = "local.log";
/// Size past which [`LOCAL_LOG`] is started afresh.
pub const LOG_ROTATE: u64 = 4 << 20;

static LOGS: std::sync::Mutex<Vec<(PathBuf, File)>> = std::sync::Mutex::new(Vec::new());

/// Writes `<name of status> <record>` as one line of the log in `status`'s directory.
fn log_line(status: &Path, record: &str) {
    let (Some(dir), Some(name)) = (status.parent(), status.file_name()) else {
        return;
    };
    let line = format!("{} {record}\n", name.to_string_lossy());
    let mut logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    let k = match logs.iter().position(|(d, _)| d == dir) {
        Some(k) => k,
        None => match open_log(dir) {
            Ok(f) => {
                logs.push((dir.to_path_buf(), f));
                logs.len() - 1
            }
            Err(_) => return,
        },
    };
    if logs[k].1.metadata().is_ok_and(|m| m.len() > LOG_ROTATE) {
        let _ = std::fs::rename(dir.join(LOCAL_LOG), dir.join(format!("{LOCAL_LOG}.1")));
        match open_log(dir) {
            Ok(f) => logs[k].1 = f,
            Err(_) => return,
        }
    }
    let _ = std::io::Write::write_all(&mut logs[k].1, line.as_bytes());
}

fn open_log(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(dir.join(LOCAL_LOG))
}

/// The records of the logs in `dir` (the older one first): status-file name → its last
/// record.
pub fn read_logs(dir: &Path) -> Vec<(String, Record)> {
    let mut last: Vec<(String, Record)> = Vec::new();
    for file in [format!("{LOCAL_LOG}.1"), LOCAL_LOG.to_string()] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
            continue;
        };
        for line in text.lines() {
            let Some((name, rest)) = line.split_once(' ') else {
                continue;
            };
            let record = parse(rest);
            if record == Record::Empty {
                continue;
            }
            match last.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = record,
                None => last.push((name.to_string(), record)),
            }
        }
    }
    last
}

/// Empties the logs in `dir` once what they said is in the queue. The log this process
/// writes is reopened (a daemon recovers before it delivers: nothing is lost).
pub fn clear_logs(dir: &Path) {
    let mut logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    logs.retain(|(d, _)| d != dir);
    let _ = std::fs::remove_file(dir.join(format!("{LOCAL_LOG}.1")));
    let _ = std::fs::remove_file(dir.join(LOCAL_LOG));
}

/// Whether the entry an [`Record::Appending`] names is in its mailbox, byte for byte; if
/// so, it is made durable here (fsync) before the caller counts it delivered.
pub fn confirm_append(mailbox: &Path, offset: u64, len: u64, crc: u32) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(f) = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(mailbox)
    else {
        return false;
    };
    let fits = f
        .metadata()
        .is_ok_and(|m| m.is_file() && m.len() >= offset.saturating_add(len));
    let Ok(n) = usize::try_from(len) else {
        return false;
    };
    let mut buf = vec![0u8; n];
    fits && f.read_exact_at(&mut buf, offset).is_ok()
        && crc32fast::hash(&buf) == crc
        && f.sync_all().is_ok()
}

/// argv[1] of the sendmail binary run as a mailer's supervisor ([`supervisor_main`]).
pub const SUPERVISOR_FLAG: &str = "--mailer-supervisor";

static SUPERVISOR_EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Where the supervisor's binary is: the running binary itself (`/proc/self/exe`, which
/// still works after the file was replaced by an upgrade) unless set here — by tests,
/// whose own binary is not sendmail.
pub fn set_supervisor_exe(path: PathBuf) {
    let _ = SUPERVISOR_EXE.set(path);
}

/// The command that starts `p` under a supervisor, and the status file for it, created
/// empty: the caller keeps it open until the command is spawned. None when nothing is
/// tracked on this thread, or the file cannot be made (the delivery then runs untracked).
///
/// The supervisor is this binary run again ([`SUPERVISOR_FLAG`]), not a fork of the
/// daemon: the command has no `pre_exec` hook, no uid or gid, so std starts it with
/// `posix_spawn` (a `vfork`-like clone that shares the daemon's memory until the exec)
/// instead of `fork`. A fork of the daemon copies the page tables of a large
/// multi-threaded process, and while it does, every other thread that faults a page or
/// maps memory waits: each program delivery stalled the whole daemon — SMTP sessions,
/// the queue's marks of remote `250`s — for as long. The switch of ids, the working
/// directory and the program's `argv[0]` are the supervisor's, before its own (small,
/// single-threaded, cheap) fork and exec of the program. The daemon's descriptors are all
/// close-on-exec (its listening sockets too): neither the supervisor nor the program
/// holds them, so a restarted daemon can bind at once.
pub fn supervise(p: &super::Program) -> Option<(Command, File)> {
    let path = STATUS.with(|s| s.borrow().clone())?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .ok()?;
    let exe = SUPERVISOR_EXE
        .get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    let id = |n: Option<u32>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    let mut c = Command::new(exe);
    c.arg0("sendmail: mailer supervisor")
        .arg(SUPERVISOR_FLAG)
        .arg(&path)
        .arg(id(p.ids.map(|i| i.0)))
        .arg(id(p.ids.map(|i| i.1)))
        .arg(&p.cwd)
        .arg(&p.path)
        .arg(p.arg0.clone().unwrap_or_else(|| p.path.clone().into()))
        .args(&p.args)
        .env_clear()
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/");
    Some((c, file))
}

/// The supervisor (`sendmail --mailer-supervisor STATUS UID GID CWD PATH ARGV0 ARGS…`,
/// started by [`supervise`] with the program's environment, stdio and process group):
/// writes `pid N` (its own) to the status file the daemon created, runs the program —
/// as UID/GID (`-`: unchanged; supplementary groups dropped, as std does for root), in
/// CWD, with the environment and stdio it was given, in its process group — gives up its
/// own stdio (so that only the program holds the daemon's pipes), waits, writes `exit C`
/// or `signal S`, and exits the same way. A program that cannot be started: `exit 75`
/// (EX_TEMPFAIL) and the reason on stderr.
pub fn supervisor_main(args: &[std::ffi::OsString]) -> ! {
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;
    let [status, uid, gid, cwd, path, arg0, rest @ ..] = args else {
        eprintln!("sendmail: {SUPERVISOR_FLAG}: STATUS UID GID CWD PATH ARGV0 ARGS... expected");
        std::process::exit(crate::sysexits::EX_USAGE);
    };
    // Started from the queue runner's pool, whose threads run SCHED_BATCH (runner::Thread):
    // the program gets the normal policy back, at the nice value it inherited.
    if crate::priority::policy_of_this_thread().is_ok_and(|p| p == libc::SCHED_BATCH) {
        let nice = crate::priority::this_thread().unwrap_or(0);
        let _ = crate::priority::set_this_thread_and_slice(nice, 0);
    }
    let mut file = match OpenOptions::new().append(true).open(status) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "sendmail: mailer supervisor: {}: {e}",
                Path::new(status).display()
            );
            std::process::exit(crate::sysexits::EX_TEMPFAIL);
        }
    };
    let _ = writeln!(file, "pid {}", std::process::id());
    let id = |s: &std::ffi::OsString| s.to_str().and_then(|s| s.parse::<u32>().ok());
    let mut c = Command::new(path);
    c.arg0(arg0).args(rest).current_dir(cwd);
    if let Some(u) = id(uid) {
        c.uid(u);
    }
    if let Some(g) = id(gid) {
        c.gid(g);
    }
    let mut child = match c.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("cannot run {}: {e}", Path::new(path).display());
            let _ = writeln!(file, "exit {}", crate::sysexits::EX_TEMPFAIL);
            std::process::exit(crate::sysexits::EX_TEMPFAIL);
        }
    };
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    let st = loop {
        match child.wait() {
            Ok(st) => break st,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => std::process::exit(crate::sysexits::EX_TEMPFAIL),
        }
    };
    if let Some(code) = st.code() {
        let _ = writeln!(file, "exit {code}");
        std::process::exit(code);
    }
    let sig = st.signal().unwrap_or(nix::libc::SIGKILL);
    let _ = writeln!(file, "signal {sig}");
    drop(file);
    if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
        // SAFETY: restores the default action of one signal in a single-threaded process
        // that installs no handler of its own; nothing runs concurrently with it.
        let _ = unsafe { nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigDfl) };
        let _ = nix::sys::signal::raise(s);
    }
    std::process::exit(128 + sig)
}

/// The message as a file in memory (memfd), read from its start: a tracked program's
/// stdin, complete whatever becomes of the daemon.
pub(super) fn input_file(message: &[u8]) -> io::Result<std::process::Stdio> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    use std::io::{Seek, Write};
    let fd = memfd_create(c"mailer-input", MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
    let mut file = File::from(fd);
    file.write_all(message)?;
    file.rewind()?;
    Ok(std::process::Stdio::from(file))
}

/// What a status file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Created, no supervisor line yet (the daemon died before the program started, or
    /// it is starting now).
    Empty,
    /// The supervisor's pid: the program was running when the line was written.
    Running(i32),
    /// The program exited with this code.
    Exited(i32),
    /// The program died by this signal.
    Signaled(i32),
    /// A built-in mbox delivery was appending this entry (`append OFFSET LEN CRC32 PATH`)
    /// and had not yet seen its fsync return: [`confirm_append`] tells whether it is there.
    Appending {
        mailbox: PathBuf,
        offset: u64,
        len: u64,
        crc: u32,
    },
    /// A built-in Maildir delivery was linking this file into `new/` (`maildir PATH`) and
    /// had not yet seen the directory's fsync return: [`confirm_maildir`] tells whether it
    /// is there.
    Placing(PathBuf),
}

/// Reads a status file.
pub fn read(path: &Path) -> io::Result<Record> {
    Ok(parse(&std::fs::read_to_string(path)?))
}

/// The last record of a status file's lines.
fn parse(text: &str) -> Record {
    let mut record = Record::Empty;
    for line in text.lines() {
        let Some((word, n)) = line.split_once(' ') else {
            continue;
        };
        if word == "append" {
            let mut f = n.splitn(4, ' ');
            let mut num = || f.next().and_then(|x| x.parse::<u64>().ok());
            if let (Some(offset), Some(len), Some(crc)) = (num(), num(), num())
                && let Some(path) = f.next()
            {
                record = Record::Appending {
                    mailbox: PathBuf::from(path),
                    offset,
                    len,
                    crc: crc as u32,
                };
            }
            continue;
        }
        if word == "maildir" {
            record = Record::Placing(PathBuf::from(n));
            continue;
        }
        let Ok(n) = n.trim().parse::<i32>() else {
            continue;
        };
        record = match word {
            "pid" => Record::Running(n),
            "exit" => Record::Exited(n),
            "signal" => Record::Signaled(n),
            _ => record,
        };
    }
    record
}

/// Whether process `pid` is alive and holds `path` open (so it is the supervisor that
/// writes it, not some later process that got the same pid).
pub fn holds(pid: i32, path: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let want = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    fds.flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == want))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The supervisor's own tests run the real binary: tests/mailer_supervisor.rs.

    #[test]
    fn an_append_in_progress_is_confirmed_only_when_its_bytes_are_there() {
        let dir = tempfile::tempdir().unwrap();
        let (status, mbox) = (dir.path().join("q.2"), dir.path().join("mbox"));
        let entry = b"From a Mon Jan  1 00:00:00 2024\n\nbody\n\n";
        std::fs::write(&mbox, b"old\n").unwrap();
        appending(&status, &mbox, 4, entry);
        let logs = read_logs(dir.path());
        let Some((
            _,
            Record::Appending {
                mailbox,
                offset,
                len,
                crc,
            },
        )) = logs.into_iter().next()
        else {
            panic!("{:?}", read_logs(dir.path()));
        };
        assert_eq!(
            (mailbox.as_path(), offset, len),
            (mbox.as_path(), 4, entry.len() as u64)
        );
        // not written yet (or cut back): not there
        assert!(!confirm_append(&mailbox, offset, len, crc));
        std::fs::write(&mbox, [&b"old\n"[..], entry].concat()).unwrap();
        assert!(confirm_append(&mailbox, offset, len, crc));
        // other bytes at that place: not this entry
        std::fs::write(
            &mbox,
            [&b"OLD\n"[..], &entry[..10], b"X", &entry[11..]].concat(),
        )
        .unwrap();
        assert!(!confirm_append(&mailbox, offset, len, crc));
    }

    #[test]
    fn a_maildir_file_being_placed_is_confirmed_in_new_or_moved_to_cur() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(md.join(sub)).unwrap();
        }
        let status = dir.path().join("6AO7R0vX027769.3");
        let file = md.join("new").join("1765000000.M1P2_3.host");
        placing(&status, &file);
        let logs = read_logs(dir.path());
        assert_eq!(
            logs,
            [(
                "6AO7R0vX027769.3".to_string(),
                Record::Placing(file.clone())
            )]
        );
        // not linked yet: not delivered
        assert!(!confirm_maildir(&file));
        std::fs::write(&file, b"Subject: x\n\nbody\n").unwrap();
        assert!(confirm_maildir(&file));
        // read meanwhile: moved to cur/ with the reader's flags
        let seen = md.join("cur").join("1765000000.M1P2_3.host:2,S");
        std::fs::rename(&file, &seen).unwrap();
        assert!(confirm_maildir(&file));
        // another message's file is not this one; nor is a symlink by that name
        std::fs::rename(&seen, md.join("cur").join("1765000000.M1P2_33.host:2,S")).unwrap();
        assert!(!confirm_maildir(&file));
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &file).unwrap();
        std::fs::write(dir.path().join("elsewhere"), b"x").unwrap();
        assert!(!confirm_maildir(&file));
        // the delivery's own end record wins over its placing record
        track(Some(status.clone()), delivered);
        assert_eq!(read_logs(dir.path())[0].1, Record::Exited(0));
    }

    #[test]
    fn built_in_deliveries_keep_their_records_in_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mbox, a, b) = (
            dir.path().join("mbox"),
            dir.path().join("6AO7R0vX027769.0"),
            dir.path().join("6AO7R0vX027769.1"),
        );
        appending(&a, &mbox, 0, b"entry a");
        appending(&b, &mbox, 7, b"entry b");
        track(Some(a.clone()), delivered);
        assert!(!a.exists() && !b.exists(), "no file per delivery");
        let got = read_logs(dir.path());
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], ("6AO7R0vX027769.0".to_string(), Record::Exited(0)));
        assert!(matches!(
            &got[1].1,
            Record::Appending {
                offset: 7,
                len: 7,
                ..
            }
        ));
        clear_logs(dir.path());
        assert!(read_logs(dir.path()).is_empty());
        // written again after a clear: a fresh log
        appending(&b, &mbox, 14, b"entry c");
        assert_eq!(read_logs(dir.path()).len(), 1);
    }

    #[test]
    fn nothing_is_tracked_outside_track() {
        let p = super::super::Program {
            path: "/bin/true".into(),
            arg0: None,
            args: Vec::new(),
            env: Vec::new(),
            cwd: "/".into(),
            ids: None,
        };
        assert!(supervise(&p).is_none());
        assert!(p.command().status().unwrap().success());
    }
}
