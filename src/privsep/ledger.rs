//! The local delivery agent's record of the deliveries it has in hand, so that a daemon
//! killed during one is not followed by a second copy.
//!
//! In: each recipient the agent is asked to deliver (`<queue id>.<position>`), and the
//! daemon's word that a message's outcomes are in the queue. Out: before it delivers,
//! whether an agent of a previous daemon already delivered it (then the answer is
//! "delivered" without a second run); while it delivers, a file naming the agent (`pid N`)
//! that the agent keeps open, then `delivered` once the delivery succeeded; the files
//! removed when the daemon says the outcomes are in the queue (`Forget`, after its queue
//! update, as the root daemon removes its mailer status files).
//!
//! Why. The agent outlives a daemon that dies (SIGKILL, OOM): it finishes the deliveries in
//! hand — a program is never stopped in the middle of an append — and answers nobody. The
//! next daemon, with its own agent, finds those recipients still pending in the queue and
//! asks again. Without a record the second agent ran the program again (a duplicate each);
//! the unprivileged daemon cannot keep that record itself, as the root daemon does with its
//! mailer status files (`runner::orphans`): it may not look into the mailboxes, the users'
//! Maildirs or the root agent's processes. So the agents keep it, and the asking agent
//! settles it: a record still held open by the previous agent (a delivery under way) is
//! waited for; one that says `delivered` answers "delivered"; anything else (the previous
//! agent died too, or the delivery failed) is delivered again, as before.
//!
//! Where. `<QueueDirectory>/agent/`, created by the agent as root, mode 0700. The queue
//! directory belongs to the daemon's user, who could swap that directory for its own or a
//! symlink; so the agent opens it with `O_NOFOLLOW` relative to the queue directory's
//! descriptor, uses it only when it is root's own and no one else's to write, and makes every
//! file in it relative to that descriptor. A daemon that removes or renames the directory
//! only loses the records (a duplicate, never a loss, and nothing is read or written
//! anywhere else); the hand-over of the queue to the daemon's user leaves it alone.
//!
//! The record is not fsynced: the daemon's death keeps the page cache; after a crash of the
//! machine a lost record means a second delivery, as before. It says `delivered` only after
//! the delivery returned success (a mailbox's fsync, a program's exit 0).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{Mode, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::dir_flags;
use crate::deliver::local::inflight;
use crate::log::{Logger, Severity};
use crate::runner::orphans::{ORPHAN_POLL, ORPHAN_WAIT};

/// The directory's name in the queue directory.
pub const DIR: &str = "agent";

/// The open records directory.
pub struct Ledger {
    dir: OwnedFd,
    /// Its path, for the log and for [`inflight::holds`].
    path: PathBuf,
}

/// What the record of a recipient says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    /// No record, or one that does not say the delivery succeeded: deliver.
    Unknown,
    /// An agent of an earlier daemon delivered it.
    Delivered,
}

impl Ledger {
    /// Opens (or makes) `<queue_dir>/agent/`; `None`, logged, when it is not root's own
    /// directory that only root may write (deliveries then go unrecorded, as before).
    pub fn open(queue_dir: &Path, logger: &Logger) -> Option<Ledger> {
        let path = queue_dir.join(DIR);
        let opened = (|| {
            let queue = open(queue_dir, dir_flags(), Mode::empty())?;
            match mkdirat(&queue, DIR, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            let dir = openat(&queue, DIR, dir_flags(), Mode::empty())?;
            Ok(dir)
        })();
        let refuse = |why: String| {
            logger.log(
                Severity::Err,
                None,
                format_args!(
                    "local delivery agent: {}: {why}; deliveries in hand when a daemon dies may be made again",
                    path.display()
                ),
            );
            None
        };
        let dir = match opened {
            Ok(d) => d,
            Err(e) => return refuse(e.desc().to_string()),
        };
        let st = match fstat(&dir) {
            Ok(st) => st,
            Err(e) => return refuse(e.desc().to_string()),
        };
        if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
            return refuse(format!(
                "not root's own directory (owner uid {}, mode {:o}); not used",
                st.st_uid,
                st.st_mode & 0o7777
            ));
        }
        Some(Ledger { dir, path })
    }

    /// What an earlier agent did with recipient `name`; a delivery it still has in hand is
    /// waited for first (logged, with `qid`).
    pub fn previous(&self, name: &str, logger: &Logger, qid: &str) -> Previous {
        let Some(mut record) = self.read(name) else {
            return Previous::Unknown;
        };
        let me = std::process::id() as i32;
        let path = self.path.join(name);
        if let Some(pid) = running(&record).filter(|&p| p != me)
            && inflight::holds(pid, &path)
        {
            logger.log(
                Severity::Notice,
                Some(qid),
                format_args!(
                    "{name}: waiting for the local delivery agent pid {pid}, which the previous daemon left delivering it"
                ),
            );
            // as long, and as often, as the root daemon waits for its orphaned programs
            let deadline = Instant::now() + ORPHAN_WAIT;
            while inflight::holds(pid, &path) && Instant::now() < deadline {
                std::thread::sleep(ORPHAN_POLL);
            }
            record = self.read(name).unwrap_or_default();
        }
        if record.lines().any(|l| l == "delivered") {
            logger.log(
                Severity::Info,
                Some(qid),
                format_args!(
                    "{name}: delivered by the local delivery agent of the previous daemon; not delivered again"
                ),
            );
            Previous::Delivered
        } else {
            Previous::Unknown
        }
    }

    /// Starts the record of recipient `name` (`pid N`, this agent); `None` when it cannot
    /// be written (the delivery goes on unrecorded).
    pub fn begin(&self, name: &str) -> Option<Entry> {
        let fd = openat(
            &self.dir,
            name,
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_TRUNC
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .ok()?;
        let mut file = File::from(fd);
        writeln!(file, "pid {}", std::process::id()).ok()?;
        Some(Entry { file })
    }

    /// Removes the record of recipient `name` (its outcome is in the queue).
    pub fn forget(&self, name: &str) {
        let _ = unlinkat(&self.dir, name, UnlinkatFlags::NoRemoveDir);
    }

    /// Removes the records last changed more than `age` ago: those of deliveries whose
    /// daemon died after its queue update and before it said so (the recipient is done and
    /// no one asks again).
    pub fn sweep(&self, age: Duration) {
        use std::os::fd::AsRawFd;
        let listing = PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()));
        let Ok(entries) = std::fs::read_dir(&listing) else {
            return;
        };
        let now = std::time::SystemTime::now();
        for e in entries.flatten() {
            let name = e.file_name();
            let old = fstatat(&self.dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .ok()
                .and_then(|st| {
                    let changed = std::time::UNIX_EPOCH
                        + Duration::from_secs(u64::try_from(st.st_mtime).unwrap_or(0));
                    now.duration_since(changed).ok()
                })
                .is_some_and(|d| d > age);
            if old {
                let _ = unlinkat(&self.dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir);
            }
        }
    }

    fn read(&self, name: &str) -> Option<String> {
        let fd = openat(
            &self.dir,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let mut text = String::new();
        File::from(fd).read_to_string(&mut text).ok()?;
        Some(text)
    }
}

/// The pid of a record's `pid N` line.
fn running(record: &str) -> Option<i32> {
    record
        .lines()
        .find_map(|l| l.strip_prefix("pid ")?.trim().parse().ok())
}

/// The record of one delivery under way, held open until it ends (so a later agent sees
/// that it is under way).
pub struct Entry {
    file: File,
}

impl Entry {
    /// The delivery succeeded.
    pub fn delivered(&mut self) {
        let _ = writeln!(self.file, "delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logger(dir: &Path) -> Logger {
        Logger::new(crate::log::LogConfig {
            syslog: false,
            file: Some(dir.join("log")),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn a_delivered_record_answers_and_a_forgotten_or_stale_one_is_gone() {
        let q = tempfile::tempdir().unwrap();
        let log = logger(q.path());
        let Some(ledger) = Ledger::open(q.path(), &log) else {
            // not root: the directory is ours, and refused as such
            assert!(!nix::unistd::geteuid().is_root());
            return;
        };
        assert_eq!(ledger.previous("Q1.0", &log, "Q1"), Previous::Unknown);
        // this agent's own record, not delivered: unknown (delivered again)
        let mut e = ledger.begin("Q1.0").unwrap();
        assert_eq!(ledger.previous("Q1.0", &log, "Q1"), Previous::Unknown);
        e.delivered();
        // this agent holds it, but does not wait for itself
        assert_eq!(ledger.previous("Q1.0", &log, "Q1"), Previous::Delivered);
        drop(e);
        assert_eq!(ledger.previous("Q1.0", &log, "Q1"), Previous::Delivered);
        ledger.forget("Q1.0");
        assert!(!q.path().join(DIR).join("Q1.0").exists());
        assert_eq!(ledger.previous("Q1.0", &log, "Q1"), Previous::Unknown);
        // only records older than the age go in a sweep
        drop(ledger.begin("Q1.1").unwrap());
        ledger.sweep(Duration::from_secs(3600));
        assert!(q.path().join(DIR).join("Q1.1").exists());
        let past = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
        nix::sys::stat::utimensat(
            &ledger.dir,
            "Q1.1",
            &past,
            &past,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        ledger.sweep(Duration::from_secs(3600));
        assert!(!q.path().join(DIR).join("Q1.1").exists());
    }

    #[test]
    fn a_directory_that_is_not_roots_own_or_a_symlink_is_not_used() {
        let q = tempfile::tempdir().unwrap();
        let log = logger(q.path());
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), q.path().join(DIR)).unwrap();
        assert!(Ledger::open(q.path(), &log).is_none());
        std::fs::remove_file(q.path().join(DIR)).unwrap();
        std::fs::create_dir(q.path().join(DIR)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(q.path().join(DIR), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        assert!(Ledger::open(q.path(), &log).is_none());
        let text = std::fs::read_to_string(q.path().join("log")).unwrap();
        assert!(text.contains("not root's own directory"), "{text}");
    }

    #[test]
    fn a_record_names_its_agent() {
        assert_eq!(running("pid 42\n"), Some(42));
        assert_eq!(running("pid 42\ndelivered\n"), Some(42));
        assert_eq!(running("delivered\n"), None);
        assert_eq!(running(""), None);
    }
}
