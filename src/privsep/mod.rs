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
//! people's mail. Read and search for the group (2750) is how [`setgid`] lets the
//! submission group (`smmsp`) reach the maildrop and `mailq` read the queue.

pub mod agent;
pub mod proto;
pub mod setgid;
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
    let (uid, gid) = crate::deliver::local::resolve_user_spec(&spec.user, spec.group.as_deref())
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

/// Gives the queue tree (the directory, `journal/`, `maildrop/` and their files; symlinks
/// are not followed) to `to`.
pub fn hand_over_queue(dir: &Path, to: &RunAs) -> Result<(), PrivError> {
    let err = |path: &Path, e: std::io::Error| PrivError::Queue {
        path: path.to_path_buf(),
        user: to.name.clone(),
        source: e,
    };
    own(dir, to).map_err(|e| err(dir, e))?;
    let entries = fs::read_dir(dir).map_err(|e| err(dir, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        own(&path, to).map_err(|e| err(&path, e))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            for sub in fs::read_dir(&path).map_err(|e| err(&path, e))?.flatten() {
                own(&sub.path(), to).map_err(|e| err(&sub.path(), e))?;
            }
        }
    }
    Ok(())
}

/// lchown: a symlink is changed itself, never what it points at. What belongs to the
/// submission group ([`setgid::GROUP`]) keeps its group.
fn own(path: &Path, to: &RunAs) -> std::io::Result<()> {
    let shared = setgid::submission_group()
        .is_some_and(|g| fs::symlink_metadata(path).is_ok_and(|m| m.gid() == g.as_raw()));
    let gid = if shared { None } else { Some(to.gid) };
    std::os::unix::fs::lchown(path, Some(to.uid), gid)
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
    if let Err(e) = setgid::prepare_queue(qdir) {
        logger.log(
            Severity::Err,
            None,
            format_args!(
                "queue directory {}: {e}; local users cannot submit mail",
                qdir.display()
            ),
        );
    }
    let Some(to) = run_as(cfg)? else {
        if nix::unistd::geteuid().is_root() {
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
