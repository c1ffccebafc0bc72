//! The root supervisor: what the unprivileged daemon still needs root for after the drop —
//! a listening socket on a port below 1024 (SIGHUP adding or changing a daemon on 25, 465,
//! 587) and a new local delivery agent when the running one has died.
//!
//! In (supervisor): [`SupRequest`]s, one per message on a `SOCK_SEQPACKET` socketpair made
//! before the drop. Out: one [`SupAnswer`] per request; a listening socket or the daemon's
//! end of a new agent's socketpair rides along as SCM_RIGHTS (unix(7)). Out (daemon side):
//! [`Supervisor`], which asks and receives.
//!
//! Design: the daemon cannot fork a root process once it has dropped root, and a
//! multi-threaded agent should not fork either, so a small single-threaded root process is
//! forked at start-up, before the drop and before any thread exists. It forks the agents
//! (the first at start, a new one each time the daemon finds the previous one gone), and
//! binds sockets — the OpenSSH/Postfix privilege-separation way: the privileged side keeps
//! its own configuration (the one the daemon was started with, re-read from the same cf and
//! `-O` options on `Reload`), and a `Listen` names a daemon only by its `Name=`; the socket
//! is opened as that configuration says, with the same options as at start
//! ([`crate::listener::open`]: `IPV6_V6ONLY`, `Listen=` backlog, buffer sizes). So a
//! compromised daemon can obtain only sockets the root-owned cf lists, and agents that
//! themselves only deliver what the queue says. Unix-domain daemons and unprivileged ports
//! are opened by the daemon itself. The supervisor ends when the daemon's end closes,
//! after its agents have finished, and removes the pid file the daemon (no longer root)
//! could not remove.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::PrivError;
use super::agent::AgentContext;
use super::proto::{self, SupAnswer, SupRequest};
use crate::config::Config;
use crate::config::daemon_options::Family;
use crate::listener::{self, Bound};
use crate::log::Severity;

/// Largest message either side sends (a daemon name, an address, a reason).
const MAX_MESSAGE: usize = 64 << 10;

/// Serves the daemon's requests on `chan` until it closes; never returns. `cfg` is the
/// configuration the daemon was started with, loaded as root.
pub fn serve(chan: OwnedFd, mut cfg: Config, ctx: AgentContext) -> ! {
    loop {
        reap(None);
        let bytes = match recv(chan.as_raw_fd()) {
            Ok(Some((bytes, _))) => bytes,
            Ok(None) => break,
            Err(e) => {
                log_crit(&ctx, format_args!("cannot read the daemon's request ({e})"));
                break;
            }
        };
        let (answer, fd) = match proto::decode_sup_request(&bytes) {
            Ok(SupRequest::Reload) => (reload(&ctx, &mut cfg), None),
            Ok(SupRequest::Listen { name }) => listen(&ctx, &cfg, &name),
            Ok(SupRequest::Agent) => spawn_agent(&ctx, &chan),
            Err(e) => {
                log_crit(&ctx, format_args!("bad request ({e}); stopping"));
                break;
            }
        };
        let payload = proto::encode_sup_answer(&answer);
        if send(chan.as_raw_fd(), &payload, fd.as_ref()).is_err() {
            break;
        }
    }
    drop(chan);
    reap(Some(()));
    super::agent::remove_pid_file(&ctx.pid_file, ctx.daemon_pid);
    std::process::exit(0)
}

fn log_crit(ctx: &AgentContext, what: std::fmt::Arguments) {
    ctx.logger.log(
        Severity::Crit,
        None,
        format_args!("SYSERR: privilege supervisor: {what}"),
    );
}

/// Collects ended agents: those already gone, or (`all`) every one, waiting for them.
fn reap(all: Option<()>) {
    let flags = all.is_none().then_some(WaitPidFlag::WNOHANG);
    loop {
        match waitpid(Pid::from_raw(-1), flags) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Err(Errno::EINTR) | Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Re-reads the cf and `-O` options as the daemon did; a configuration that does not load
/// keeps the running one.
fn reload(ctx: &AgentContext, cfg: &mut Config) -> SupAnswer {
    match crate::config::load(&ctx.inv.source, &ctx.inv.overrides) {
        Ok(c) => {
            *cfg = c;
            SupAnswer::Done
        }
        Err(errors) => SupAnswer::Refused {
            why: format!(
                "configuration not reloaded ({} error(s)); the running one is kept",
                errors.len()
            ),
        },
    }
}

/// Opens the socket of daemon `name` as the supervisor's own configuration describes it.
fn listen(ctx: &AgentContext, cfg: &Config, name: &str) -> (SupAnswer, Option<OwnedFd>) {
    let refuse = |why: String| {
        ctx.logger.log(
            Severity::Warning,
            None,
            format_args!("privilege supervisor: opendaemonsocket: {why}"),
        );
        (SupAnswer::Refused { why }, None)
    };
    let Some(d) = cfg.daemons.iter().find(|d| d.name == name) else {
        return refuse(format!("no daemon {name} in the configuration"));
    };
    if d.family == Family::Local {
        return refuse(format!(
            "daemon {name}: a unix-domain socket is the daemon's own"
        ));
    }
    match listener::open(d, listener::v6only(d, &cfg.daemons)) {
        Ok(l) => match l.socket {
            Bound::Tcp(t) => (SupAnswer::Listening { local: l.local }, Some(t.into())),
            Bound::Unix(..) => refuse(format!("daemon {name}: not a TCP daemon")),
        },
        Err(e) => refuse(e.to_string()),
    }
}

/// Forks a new agent; answers with its pid and the daemon's end of its socketpair.
fn spawn_agent(ctx: &AgentContext, chan: &OwnedFd) -> (SupAnswer, Option<OwnedFd>) {
    let refuse = |e: std::io::Error| {
        log_crit(
            ctx,
            format_args!("cannot start a local delivery agent: {e}"),
        );
        let why = format!("cannot start a local delivery agent: {e}");
        (SupAnswer::Refused { why }, None)
    };
    let (ours, theirs) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => return refuse(e),
    };
    // SAFETY: the supervisor never starts a thread (it serves one request at a time on the
    // thread it was forked with), so the child is an ordinary single-threaded program; it
    // never returns into this function.
    match unsafe { fork() } {
        Err(e) => refuse(e.into()),
        Ok(ForkResult::Child) => {
            drop(ours);
            let _ = nix::unistd::close(chan.as_raw_fd());
            super::agent::serve(theirs, ctx.clone())
        }
        Ok(ForkResult::Parent { child }) => {
            drop(theirs);
            let pid = child.as_raw() as u32;
            (SupAnswer::Agent { pid }, Some(OwnedFd::from(ours)))
        }
    }
}

/// Sends one message, with `fd` attached when given.
fn send(sock: RawFd, payload: &[u8], fd: Option<&OwnedFd>) -> nix::Result<()> {
    let iov = [IoSlice::new(payload)];
    let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    loop {
        match sendmsg::<()>(sock, &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
}

/// Receives one message and the descriptors that came with it; None when the other end
/// has closed.
fn recv(sock: RawFd) -> nix::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let (n, fds, cut) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        {
            Err(Errno::EINTR) => continue,
            r => r?,
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel has just installed these descriptors in this process
                // for this message (SCM_RIGHTS); nothing else owns them.
                fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
            }
        }
        let cut = msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        break (msg.bytes, fds, cut);
    };
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if cut {
        return Err(Errno::EMSGSIZE);
    }
    buf.truncate(n);
    Ok(Some((buf, fds)))
}

/// The daemon's side: asks the supervisor, one request at a time. Blocking.
pub struct Supervisor {
    chan: Mutex<OwnedFd>,
    /// The supervisor's process id.
    pub pid: i32,
}

impl Supervisor {
    pub fn new(chan: OwnedFd, pid: i32) -> Supervisor {
        Supervisor {
            chan: Mutex::new(chan),
            pid,
        }
    }

    fn ask(&self, req: &SupRequest) -> Result<(SupAnswer, Option<OwnedFd>), PrivError> {
        let chan = self.chan.lock().unwrap_or_else(|p| p.into_inner());
        send(chan.as_raw_fd(), &proto::encode_sup_request(req), None)
            .map_err(PrivError::Supervisor)?;
        let (bytes, mut fds) = recv(chan.as_raw_fd())
            .map_err(PrivError::Supervisor)?
            .ok_or(PrivError::Supervisor(Errno::EPIPE))?;
        let answer = proto::decode_sup_answer(&bytes)?;
        // At most one descriptor is meant to come; any other is closed here.
        let fd = (!fds.is_empty()).then(|| fds.swap_remove(0));
        match answer {
            SupAnswer::Refused { why } => Err(PrivError::Refused(why)),
            a => Ok((a, fd)),
        }
    }

    /// Has the supervisor re-read the configuration.
    pub fn reload(&self) -> Result<(), PrivError> {
        self.ask(&SupRequest::Reload).map(|_| ())
    }

    /// A new local delivery agent: the daemon's end of its socketpair and its pid.
    pub fn agent(&self) -> Result<(UnixStream, i32), PrivError> {
        match self.ask(&SupRequest::Agent)? {
            (SupAnswer::Agent { pid }, Some(fd)) => Ok((UnixStream::from(fd), pid as i32)),
            _ => Err(PrivError::Refused("answer without an agent".into())),
        }
    }

    /// The listening socket of daemon `name`, opened by the supervisor, and where it is.
    pub fn listen(&self, name: &str) -> Result<(OwnedFd, String), PrivError> {
        let req = SupRequest::Listen {
            name: name.to_string(),
        };
        match self.ask(&req)? {
            (SupAnswer::Listening { local }, Some(fd)) => Ok((fd, local)),
            _ => Err(PrivError::Refused("answer without a socket".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The supervisor's view of a cf with one TCP daemon (Port=0) and one unix-domain one.
    fn context(dir: &std::path::Path) -> (AgentContext, Config) {
        let cf = dir.join("sendmail.cf");
        std::fs::write(
            &cf,
            format!(
                "Djmta.example.test\n\
                 O DaemonPortOptions=Name=Low, Family=inet6, Addr=::1, Port=0, L=7\n\
                 O DaemonPortOptions=Name=Sock, Family=local, Addr={}\n",
                dir.join("mta.sock").display()
            ),
        )
        .unwrap();
        let argv: Vec<String> = ["sendmail", "-bD", "-C", cf.to_str().unwrap()]
            .map(String::from)
            .into();
        let inv = crate::cli::parse(&argv, &cf).unwrap();
        let cfg = crate::config::load(&inv.source, &inv.overrides).unwrap();
        let logger = crate::log::Logger::silent();
        let ctx = AgentContext {
            inv,
            logger,
            queue_dir: dir.join("mqueue"),
            pid_file: dir.join("pid"),
            daemon_pid: 0,
        };
        (ctx, cfg)
    }

    #[test]
    fn only_the_tcp_daemons_of_its_own_configuration_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, cfg) = context(dir.path());
        for (name, says) in [
            ("Elsewhere", "no daemon Elsewhere in the configuration"),
            ("Sock", "a unix-domain socket is the daemon's own"),
        ] {
            let (answer, fd) = listen(&ctx, &cfg, name);
            assert!(fd.is_none());
            assert!(
                matches!(&answer, SupAnswer::Refused { why } if why.contains(says)),
                "{answer:?}"
            );
        }
        assert!(!dir.path().join("mta.sock").exists());
        let (answer, fd) = listen(&ctx, &cfg, "Low");
        let SupAnswer::Listening { local } = answer else {
            panic!("{answer:?}")
        };
        assert!(local.starts_with("[::1]:"), "{local}");
        let sock = socket2::Socket::from(fd.unwrap());
        assert!(sock.is_listener().unwrap() && sock.only_v6().unwrap());
    }

    #[test]
    fn messages_and_descriptors_cross_a_seqpacket_pair() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        send(a.as_raw_fd(), b"one", Some(&OwnedFd::from(l))).unwrap();
        send(a.as_raw_fd(), b"two", None).unwrap();
        let (bytes, mut fds) = recv(b.as_raw_fd()).unwrap().unwrap();
        assert_eq!((bytes.as_slice(), fds.len()), (&b"one"[..], 1));
        let passed = std::net::TcpListener::from(fds.remove(0));
        assert_eq!(passed.local_addr().unwrap(), addr);
        let (bytes, fds) = recv(b.as_raw_fd()).unwrap().unwrap();
        assert_eq!((bytes.as_slice(), fds.len()), (&b"two"[..], 0));
        drop(a);
        assert!(recv(b.as_raw_fd()).unwrap().is_none());
    }
}
