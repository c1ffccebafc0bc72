//! Least privilege for the daemon: `RunAsUser`, the queue's owner and modes, and the root
//! agent that does local delivery.
//!
//! In: the configuration (`RunAsUser=user[:group]`, `QueueDirectory`, `StatusFile`), the open
//! listening sockets and the pid file, as root. Out: a daemon process running as the
//! `RunAsUser` (no supplementary groups beyond its group, no way back to root), the queue
//! tree owned by it (directories 0700, files 0600), and an [`AgentClient`] for the one
//! thing that still needs root — local delivery — served by a process forked before the
//! drop ([`agent`], over a socketpair with the sans-IO [`proto`]). A root supervisor, also
//! forked before the drop ([`supervisor`]), starts that agent, starts a new one when it
//! dies, and opens the sockets on ports below 1024 that a SIGHUP adds, checked against its
//! own configuration and passed to the daemon with SCM_RIGHTS.
//!
//! Start-up order (from [`crate::daemon::run`]): sockets bound, `-bd` fork, pid file written,
//! then [`start`]: queue checked and handed over, supervisor forked, agent started,
//! privileges dropped; only then
//! does the store start its committer and the runtime its threads.
//!
//! sendmail (op.txt §4.9.1 and the `RunAsUser` option): with `RunAsUser` set it becomes that
//! user after the start-up that needs root (opening the SMTP socket); the queue must be
//! owned by that user; file and program deliveries are then unsafe unless
//! `DontBlameSendmail=NonRootSafeAddr`. Here the agent keeps them working, as the
//! recipient or `DefaultUser`, never as the daemon's user. Without `RunAsUser`, sendmail
//! stays root, and so does this daemon (a drop-in must keep reading the root-only maps,
//! keys and home directories it read before); it says so in the log.
//!
//! A queue directory that its group may write, or anyone else may enter, is logged as
//! sendmail logs it (`dangerous permissions=…`) and set back to 0700: the queue holds other
//! people's mail. Read and search for the group (2750) is how [`crate::setgid`] lets the
//! submission group (`smmsp`) reach the maildrop and `mailq` read the queue.

pub mod agent;
pub mod ledger;
pub mod proto;
pub mod supervisor;

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::unistd::{Gid, Uid};

pub use agent::AgentClient;

use crate::cli::Invocation;
use crate::config::Config;
use crate::listener::{Bound, Listener};
use crate::log::{Logger, Severity};

/// The user the daemon runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Why the daemon could not give up root as configured (it then does not start).
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("RunAsUser={0}: unknown user or group")]
    UnknownUser(String),
    #[error("cannot hand the queue {path} to {user}: {source}")]
    Queue {
        path: PathBuf,
        user: String,
        source: std::io::Error,
    },
    #[error("cannot start the local delivery agent: {0}")]
    Agent(std::io::Error),
    #[error("cannot become {user} ({step}): {errno}")]
    Drop {
        user: String,
        step: &'static str,
        errno: nix::errno::Errno,
    },
    #[error("still able to regain root after becoming {0}; not running like this")]
    RootRegainable(String),
    #[error("privilege supervisor: {0}")]
    Supervisor(nix::errno::Errno),
    #[error("privilege supervisor: {0}")]
    Refused(String),
    #[error("privilege supervisor: {0}")]
    Protocol(#[from] proto::ProtoError),
}

/// The user to run as: `RunAsUser` when we are root and it names someone other than root;
/// None otherwise (not root: nothing to give up; unset or root: stay root, as sendmail).
pub fn run_as(cfg: &Config) -> Result<Option<RunAs>, PrivError> {
    let Some(spec) = &cfg.options.run_as_user else {
        return Ok(None);
    };
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let shown = match &spec.group {
        Some(g) => format!("{}:{g}", spec.user),
        None => spec.user.clone(),
    };
    let (uid, gid) = crate::aliases::resolve_user_spec(&spec.user, spec.group.as_deref())
        .ok_or_else(|| PrivError::UnknownUser(shown.clone()))?;
    if uid == 0 {
        return Ok(None);
    }
    let name = nix::unistd::User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    Ok(Some(RunAs { name, uid, gid }))
}

/// Sets a queue directory with group or other permissions back to 0700, logging it.
pub fn check_queue_mode(dir: &Path, logger: &Logger) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    let mode = meta.mode() & 0o7777;
    if meta.is_dir() && mode & 0o027 != 0 {
        logger.log(
            Severity::Warning,
            None,
            format_args!(
                "dangerous permissions={mode:o} on queue directory {}; set to 700",
                dir.display()
            ),
        );
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
}

/// Gives the queue tree (the directory, `journal/`, `maildrop/` and their files) to `to`.
///
/// The tree may already belong to `to` (an earlier run), who could swap a directory for a
/// symlink while root walks it. So root never resolves a path below the queue directory:
/// each directory is opened with `O_NOFOLLOW|O_DIRECTORY` relative to its parent's
/// descriptor, each entry changed with `fchownat(AT_SYMLINK_NOFOLLOW)` relative to it (a
/// symlink is changed itself, never what it points at), and a directory that turns into
/// anything else between the listing and the open stops the hand-over (the daemon does not
/// start) instead of being followed.
pub fn hand_over_queue(dir: &Path, to: &RunAs) -> Result<(), PrivError> {
    use nix::fcntl::open;
    let err = |path: &Path, e: std::io::Error| PrivError::Queue {
        path: path.to_path_buf(),
        user: to.name.clone(),
        source: e,
    };
    let top =
        open(dir, dir_flags(), nix::sys::stat::Mode::empty()).map_err(|e| err(dir, e.into()))?;
    nix::unistd::fchown(
        &top,
        Some(Uid::from_raw(to.uid)),
        Some(Gid::from_raw(to.gid)),
    )
    .map_err(|e| err(dir, e.into()))?;
    own_entries(&top, dir, to, 1).map_err(|(p, e)| err(&p, e))
}

/// `O_RDONLY|O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC`.
fn dir_flags() -> nix::fcntl::OFlag {
    use nix::fcntl::OFlag;
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Changes every entry of the open directory `dfd` (shown as `shown`), and, `depth` levels
/// down, the entries of its subdirectories, all relative to their parent's descriptor.
fn own_entries(
    dfd: &OwnedFd,
    shown: &Path,
    to: &RunAs,
    depth: u32,
) -> Result<(), (PathBuf, std::io::Error)> {
    use nix::fcntl::{AtFlags, openat};
    use std::os::fd::AsRawFd;
    // the directory this descriptor holds, whatever its path has become since
    let listing = PathBuf::from(format!("/proc/self/fd/{}", dfd.as_raw_fd()));
    let entries = fs::read_dir(&listing).map_err(|e| (shown.to_path_buf(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| (shown.to_path_buf(), e))?;
        let name = entry.file_name();
        // The root agent's own records stay root's ([`ledger`]).
        if depth == 1 && name == ledger::DIR {
            continue;
        }
        let path = shown.join(&name);
        nix::unistd::fchownat(
            dfd,
            name.as_os_str(),
            Some(Uid::from_raw(to.uid)),
            Some(Gid::from_raw(to.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| (path.clone(), e.into()))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if depth > 0 && is_dir {
            #[cfg(test)]
            tests::between_listing_and_open(&path);
            let sub = openat(dfd, name.as_os_str(), dir_flags(), nix::sys::stat::Mode::empty())
                .map_err(|e| {
                    let why = match e {
                        nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
                            std::io::Error::other("no longer a directory (replaced while the queue was handed over); not followed")
                        }
                        e => e.into(),
                    };
                    (path.clone(), why)
                })?;
            own_entries(&sub, &path, to, depth - 1)?;
        }
    }
    Ok(())
}

/// lchown: a symlink is changed itself, never what it points at.
fn own(path: &Path, to: &RunAs) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(to.uid), Some(to.gid))
}

/// Becomes `to` for good: supplementary groups, then real/effective/saved gid and uid;
/// checks that root cannot be regained.
pub fn become_user(to: &RunAs) -> Result<(), PrivError> {
    let step = |step: &'static str| {
        move |errno| PrivError::Drop {
            user: to.name.clone(),
            step,
            errno,
        }
    };
    let gid = Gid::from_raw(to.gid);
    let uid = Uid::from_raw(to.uid);
    nix::unistd::setgroups(&[gid]).map_err(step("setgroups"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(step("setresgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(step("setresuid"))?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivError::RootRegainable(to.name.clone()));
    }
    Ok(())
}

/// The privilege step of start-up (see the module doc). Must be called while the process
/// has one thread. Returns the agent client when privileges were dropped, None when the
/// daemon stays as it is.
pub fn start(
    cfg: &Config,
    inv: &Invocation,
    logger: &Logger,
    pid_file: &Path,
    listeners: &mut Vec<Listener>,
) -> Result<Option<Arc<AgentClient>>, PrivError> {
    let qdir = &cfg.options.queue_directory;
    check_queue_mode(qdir, logger);
    // The queue open to the submission group (after any hand-over, which sets the group).
    let prepare = || {
        if let Err(e) = crate::setgid::prepare_queue(qdir) {
            logger.log(
                Severity::Err,
                None,
                format_args!(
                    "queue directory {}: {e}; local users cannot submit mail",
                    qdir.display()
                ),
            );
        }
    };
    let Some(to) = run_as(cfg)? else {
        prepare();
        // not sendmail's: said only where sendmail adds its own start-up advice (the
        // STARTTLS warning, LogLevel 13 and above)
        if nix::unistd::geteuid().is_root() && logger.level() > 12 {
            logger.log(
                Severity::Notice,
                None,
                format_args!(
                    "running as root: RunAsUser is not set (e.g. O RunAsUser=mail serves SMTP and the queue unprivileged)"
                ),
            );
        }
        return Ok(None);
    };
    hand_over_queue(qdir, &to)?;
    prepare();
    if let Some(st) = &cfg.options.status_file
        && st.exists()
    {
        let _ = own(st, &to);
    }
    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| PrivError::Agent(e.into()))?;
    let ctx = agent::AgentContext {
        inv: inv.clone(),
        logger: logger.clone(),
        queue_dir: qdir.clone(),
        pid_file: pid_file.to_path_buf(),
        daemon_pid: std::process::id(),
    };
    let (sup_pid, ours) = fork_supervisor(theirs, ours, cfg.clone(), ctx, listeners)?;
    let supervisor = supervisor::Supervisor::new(ours, sup_pid);
    let (sock, pid) = supervisor.agent()?;
    become_user(&to)?;
    logger.log(
        Severity::Info,
        None,
        format_args!(
            "running as {} (uid {}, gid {}); local delivery agent pid {pid} stays root, with privilege supervisor pid {sup_pid}",
            to.name, to.uid, to.gid
        ),
    );
    let client = AgentClient::new(sock, pid, Arc::new(supervisor), logger.clone());
    client.map(|c| Some(Arc::new(c))).map_err(PrivError::Agent)
}

/// Forks the supervisor ([`supervisor`]). The child closes the listening sockets (without
/// unlinking a unix socket's path, which is the daemon's) and the daemon's end, leaves the
/// terminal's process group (a ^C of `-bD` is for the daemon, which ends the supervisor and
/// the agent by closing its ends), and serves; the parent gets the child's pid and its own
/// end back.
fn fork_supervisor(
    theirs: OwnedFd,
    ours: OwnedFd,
    cfg: Config,
    ctx: agent::AgentContext,
    listeners: &mut Vec<Listener>,
) -> Result<(i32, OwnedFd), PrivError> {
    use nix::unistd::{ForkResult, fork};
    // SAFETY: the caller (daemon start-up) has not started any thread yet: the store's
    // committer and the tokio runtime come after this, and the store opened earlier for the
    // pre-fork check has joined its committer. The child continues as an ordinary
    // single-threaded program and never returns into the caller.
    match unsafe { fork() }.map_err(|e| PrivError::Agent(e.into()))? {
        ForkResult::Child => {
            drop(ours);
            for l in std::mem::take(listeners) {
                if let Bound::Unix(sock, path) = l.socket {
                    std::mem::forget(path);
                    drop(sock);
                }
            }
            let _ =
                nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
            supervisor::serve(theirs, cfg, ctx)
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            Ok((child.as_raw(), ours))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Mutex;

    /// Test builds only: what runs in [`own_entries`] between listing a directory and
    /// opening a subdirectory of it — where an attacker who owns the queue would swap it.
    static SWAP: Mutex<Option<PathBuf>> = Mutex::new(None);

    pub(super) fn between_listing_and_open(path: &Path) {
        let want = SWAP.lock().unwrap().clone();
        if want.as_deref() == Some(path) {
            let target = fs::read_link(path.with_extension("target")).unwrap();
            fs::rename(path, path.with_extension("old")).unwrap();
            std::os::unix::fs::symlink(target, path).unwrap();
        }
    }

    #[test]
    fn a_queue_directory_swapped_for_a_symlink_mid_walk_is_not_followed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: handing the queue over needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("shadow"), "root:x\n").unwrap();
        let q = d.path().join("mqueue");
        fs::create_dir_all(q.join("journal")).unwrap();
        fs::write(q.join("journal/00000001.seg"), "").unwrap();
        // where the swap points (read by the hook)
        std::os::unix::fs::symlink(&victim, q.join("journal.target")).unwrap();
        *SWAP.lock().unwrap() = Some(q.join("journal"));
        let to = RunAs {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
        };
        let r = hand_over_queue(&q, &to);
        *SWAP.lock().unwrap() = None;
        let e = r.unwrap_err().to_string();
        assert!(e.contains("no longer a directory"), "{e}");
        // root changed nothing through the link
        assert_eq!(fs::metadata(victim.join("shadow")).unwrap().uid(), 0);
        assert_eq!(fs::metadata(&victim).unwrap().uid(), 0);
        // without a swap the whole tree is handed over, symlinks as themselves
        fs::remove_file(q.join("journal")).unwrap();
        fs::rename(q.join("journal.old"), q.join("journal")).unwrap();
        hand_over_queue(&q, &to).unwrap();
        assert_eq!(
            fs::metadata(q.join("journal/00000001.seg")).unwrap().uid(),
            65534
        );
        assert_eq!(
            fs::symlink_metadata(q.join("journal.target"))
                .unwrap()
                .uid(),
            65534
        );
        assert_eq!(fs::metadata(victim.join("shadow")).unwrap().uid(), 0);
    }
}
