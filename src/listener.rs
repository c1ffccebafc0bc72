//! One listening socket per `DaemonPortOptions`.
//!
//! In: the configured daemons. Out: bound, listening sockets ([`Listener`]), or a
//! [`ListenError`] naming the daemon, the address and why — opened all at once, so a daemon
//! that cannot open one socket exits before it serves anything (nothing half-started). Sockets
//! are made with `socket2` so that `IPV6_V6ONLY`, the backlog (`Listen=`) and the buffer sizes
//! (`SndBufSize=`, `RcvBufSize=`) are what the options say.
//!
//! IPv6 and IPv4 side by side (facts §1.5): an inet6 daemon on the wildcard address is
//! dual-stack (IPv4 clients reach it as `::ffff:a.b.c.d` and are shown as IPv4) unless an inet
//! daemon listens on the same port, in which case the inet6 socket is made `IPV6_V6ONLY` so
//! both bind. (sendmail itself fails on that configuration, cf.README's Example 3.)
//! Modifier `O`: a socket that cannot be opened is skipped with a log line.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::daemon_options::{Addr, DaemonPortOptions, Family};

/// The address of an SMTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A unix-domain client (`Family=local`).
    Local,
}

/// A bound, listening socket (std, non-blocking), ready to be handed to tokio.
#[derive(Debug)]
pub enum Bound {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, UnlinkOnDrop),
}

/// The path of a unix-domain daemon socket, unlinked when the daemon closes it (as sendmail
/// does).
#[derive(Debug)]
pub struct UnlinkOnDrop(pub PathBuf);

impl Drop for UnlinkOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One open daemon socket.
#[derive(Debug)]
pub struct Listener {
    pub daemon: DaemonPortOptions,
    /// Where it listens, as it is shown in the log (`[::1]:25`).
    pub local: String,
    pub socket: Bound,
}

impl Listener {
    /// The TCP address actually bound (port 0 becomes the kernel's choice).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.socket {
            Bound::Tcp(l) => l.local_addr().ok(),
            Bound::Unix(..) => None,
        }
    }
}

/// A daemon socket that could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("daemon {daemon}: host \"{host}\" unknown ({why})")]
    UnknownHost {
        daemon: String,
        host: String,
        why: String,
    },
    #[error("daemon {daemon}: cannot bind {addr}: {source}{hint}")]
    Bind {
        daemon: String,
        addr: String,
        source: io::Error,
        hint: String,
    },
    #[error("daemon {daemon}: cannot listen on {addr}: {source}")]
    Listen {
        daemon: String,
        addr: String,
        source: io::Error,
    },
    #[error("daemon {daemon}: cannot create socket: {source}")]
    Socket { daemon: String, source: io::Error },
    #[error("daemon {daemon}: {path} is in use by another process")]
    UnixInUse { daemon: String, path: String },
}

impl ListenError {
    /// The daemon (`Name=`) whose socket could not be opened.
    pub fn daemon(&self) -> &str {
        match self {
            ListenError::UnknownHost { daemon, .. }
            | ListenError::Bind { daemon, .. }
            | ListenError::Listen { daemon, .. }
            | ListenError::Socket { daemon, .. }
            | ListenError::UnixInUse { daemon, .. } => daemon,
        }
    }

    /// Whether trying again later may succeed: the address is in use (a process of the
    /// daemon that was killed still holds the socket) or not yet on this host — the
    /// errors sendmail's `transienterror` lets `opendaemonsocket` retry.
    pub fn transient(&self) -> bool {
        match self {
            ListenError::Bind { source, .. } | ListenError::Listen { source, .. } => matches!(
                source.raw_os_error(),
                Some(nix::libc::EADDRINUSE | nix::libc::EADDRNOTAVAIL)
            ),
            _ => false,
        }
    }
}

/// What happened to each daemon when opening: opened, or skipped (Modifier `O`).
#[derive(Debug)]
pub struct Opened {
    pub listeners: Vec<Listener>,
    /// Log lines for optional daemons that were skipped.
    pub skipped: Vec<String>,
}

/// Opens every daemon; the first non-optional failure aborts and closes what was opened.
pub fn open_all(daemons: &[DaemonPortOptions]) -> Result<Opened, ListenError> {
    let mut listeners = Vec::new();
    let mut skipped = Vec::new();
    for d in daemons {
        match open(d, v6only(d, daemons)) {
            Ok(l) => listeners.push(l),
            Err(e) if d.modifiers.has('O') => {
                skipped.push(format!("{e}; optional socket disabled"));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Opened { listeners, skipped })
}

/// Whether an inet6 daemon's socket must be IPv6-only: when it listens on the wildcard and an
/// inet daemon shares its port (else the two binds collide). A specific IPv6 address is made
/// IPv6-only too: it cannot receive IPv4 anyway.
pub fn v6only(d: &DaemonPortOptions, all: &[DaemonPortOptions]) -> bool {
    if d.family != Family::Inet6 {
        return false;
    }
    let wildcard = match &d.addr {
        Addr::Any => true,
        Addr::Ip { ip, .. } => ip.is_unspecified(),
        Addr::Host(_) | Addr::Path(_) => false,
    };
    !wildcard
        || all
            .iter()
            .any(|o| o.family == Family::Inet && o.port == d.port)
}

/// Opens one daemon's socket: socket, options, bind, listen.
pub fn open(d: &DaemonPortOptions, v6only: bool) -> Result<Listener, ListenError> {
    match (&d.family, &d.addr) {
        (Family::Local, Addr::Path(p)) => open_unix(d, p),
        (Family::Local, _) => Err(ListenError::Socket {
            daemon: d.name.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "Family=local needs Addr=/path"),
        }),
        _ => open_tcp(d, resolve(d)?, v6only),
    }
}

/// Whether a daemon's socket needs root to open: a TCP port below 1024.
pub fn needs_root(d: &DaemonPortOptions) -> bool {
    d.family != Family::Local && d.port != 0 && d.port < 1024
}

/// Takes a listening TCP socket opened by another process (the root supervisor, for a port
/// below 1024) as daemon `d`'s, after checking that it is one and is bound where `d` says,
/// IPv6-only as `v6only` says.
pub fn adopt(
    d: &DaemonPortOptions,
    fd: std::os::fd::OwnedFd,
    v6only: bool,
) -> Result<Listener, ListenError> {
    let socket = Socket::from(fd);
    let wrong = |why: String| ListenError::Socket {
        daemon: d.name.clone(),
        source: io::Error::new(io::ErrorKind::InvalidData, why),
    };
    let want = resolve(d)?;
    let is_tcp_listener =
        socket.r#type().ok() == Some(Type::STREAM) && socket.is_listener().unwrap_or(false);
    let got = socket.local_addr().ok().and_then(|a| a.as_socket());
    if !is_tcp_listener || got != Some(want) {
        return Err(wrong(format!(
            "the socket passed is not a TCP listener on {} (it is on {got:?})",
            show(&want)
        )));
    }
    if want.is_ipv6() && socket.only_v6().ok() != Some(v6only) {
        return Err(wrong(format!(
            "the socket passed is not IPV6_V6ONLY={v6only}"
        )));
    }
    socket
        .set_nonblocking(true)
        .map_err(|source| ListenError::Socket {
            daemon: d.name.clone(),
            source,
        })?;
    Ok(Listener {
        daemon: d.clone(),
        local: show(&want),
        socket: Bound::Tcp(socket.into()),
    })
}

/// The socket address a TCP daemon binds.
pub fn resolve(d: &DaemonPortOptions) -> Result<SocketAddr, ListenError> {
    match &d.addr {
        Addr::Any => Ok(SocketAddr::new(d.wildcard(), d.port)),
        Addr::Ip {
            ip: IpAddr::V6(ip),
            scope_id,
        } => Ok(SocketAddr::V6(SocketAddrV6::new(*ip, d.port, 0, *scope_id))),
        Addr::Ip { ip, .. } => Ok(SocketAddr::new(*ip, d.port)),
        Addr::Host(h) => {
            let unknown = |why: String| ListenError::UnknownHost {
                daemon: d.name.clone(),
                host: h.clone(),
                why,
            };
            let addrs = (h.as_str(), d.port)
                .to_socket_addrs()
                .map_err(|e| unknown(e.to_string()))?;
            let want_v6 = d.family == Family::Inet6;
            addrs
                .into_iter()
                .find(|a| a.is_ipv6() == want_v6)
                .ok_or_else(|| {
                    unknown(format!(
                        "no {} address",
                        if want_v6 { "IPv6 (AAAA)" } else { "IPv4 (A)" }
                    ))
                })
        }
        Addr::Path(_) => unreachable!("unix path on a TCP daemon is rejected by open()"),
    }
}

fn show(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V6(a) if a.scope_id() != 0 => {
            format!("[{}%{}]:{}", a.ip(), a.scope_id(), a.port())
        }
        a => a.to_string(),
    }
}

fn open_tcp(
    d: &DaemonPortOptions,
    addr: SocketAddr,
    v6only: bool,
) -> Result<Listener, ListenError> {
    let shown = show(&addr);
    let sock_err = |source| ListenError::Socket {
        daemon: d.name.clone(),
        source,
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(sock_err)?;
    socket.set_reuse_address(true).map_err(sock_err)?;
    socket.set_keepalive(true).map_err(sock_err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(v6only).map_err(sock_err)?;
    }
    if let Some(n) = d.snd_buf {
        socket.set_send_buffer_size(n).map_err(sock_err)?;
    }
    if let Some(n) = d.rcv_buf {
        socket.set_recv_buffer_size(n).map_err(sock_err)?;
    }
    socket.set_nonblocking(true).map_err(sock_err)?;
    socket
        .bind(&SockAddr::from(addr))
        .map_err(|source| ListenError::Bind {
            daemon: d.name.clone(),
            addr: shown.clone(),
            hint: bind_hint(&source, d, &addr),
            source,
        })?;
    let backlog = i32::try_from(d.listen).unwrap_or(i32::MAX);
    socket
        .listen(backlog)
        .map_err(|source| ListenError::Listen {
            daemon: d.name.clone(),
            addr: shown.clone(),
            source,
        })?;
    let std_listener: std::net::TcpListener = socket.into();
    let local = std_listener.local_addr().map(|a| show(&a)).unwrap_or(shown);
    Ok(Listener {
        daemon: d.clone(),
        local,
        socket: Bound::Tcp(std_listener),
    })
}

/// What an administrator should do about a bind error.
fn bind_hint(e: &io::Error, d: &DaemonPortOptions, addr: &SocketAddr) -> String {
    match e.raw_os_error() {
        Some(code) if code == nix::libc::EACCES && addr.port() < 1024 => format!(
            " (ports below 1024 need root; to use another port set \
             -O DaemonPortOptions=Name={},Port=2525 or Port= in the daemon's DaemonPortOptions; \
             for a first try without root: sendmail -bD --unprivileged)",
            d.name
        ),
        Some(code) if code == nix::libc::EADDRNOTAVAIL => {
            " (the address is not on this host; fix Addr= in the daemon's DaemonPortOptions)".into()
        }
        Some(code) if code == nix::libc::EADDRINUSE => {
            " (another process or daemon already listens there)".into()
        }
        _ => String::new(),
    }
}

fn open_unix(d: &DaemonPortOptions, path: &Path) -> Result<Listener, ListenError> {
    let shown = path.display().to_string();
    // A socket file left by a daemon that died is removed; one that answers is in use.
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ListenError::UnixInUse {
                daemon: d.name.clone(),
                path: shown,
            });
        }
        let _ = std::fs::remove_file(path);
    }
    let l = std::os::unix::net::UnixListener::bind(path).map_err(|source| ListenError::Bind {
        daemon: d.name.clone(),
        addr: shown.clone(),
        source,
        hint: String::new(),
    })?;
    l.set_nonblocking(true)
        .map_err(|source| ListenError::Socket {
            daemon: d.name.clone(),
            source,
        })?;
    Ok(Listener {
        daemon: d.clone(),
        local: shown,
        socket: Bound::Unix(l, UnlinkOnDrop(path.to_path_buf())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dpo(v: &str) -> DaemonPortOptions {
        DaemonPortOptions::parse(v, 0).unwrap().0
    }

    #[test]
    fn inet6_wildcard_alone_is_dual_stack() {
        let d = dpo("Family=inet6, Port=0");
        assert!(!v6only(&d, std::slice::from_ref(&d)));
        let l = open(&d, false).unwrap();
        let port = l.local_addr().unwrap().port();
        // An IPv4 client reaches the IPv6 wildcard socket.
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn inet_and_inet6_wildcards_on_one_port_both_bind() {
        // cf.README Example 3: sendmail fails here; we make the inet6 socket IPV6_V6ONLY.
        let v4 = open(&dpo("Name=MTA-v4, Family=inet, Port=0"), false).unwrap();
        let port = v4.local_addr().unwrap().port();
        let all = [
            dpo(&format!("Name=MTA-v4, Family=inet, Port={port}")),
            dpo(&format!("Name=MTA-v6, Family=inet6, Port={port}")),
        ];
        assert!(v6only(&all[1], &all));
        drop(v4);
        let opened = open_all(&all).unwrap();
        assert_eq!(opened.listeners.len(), 2);
        assert_eq!(opened.listeners[1].local, format!("[::]:{port}"));
    }

    #[test]
    fn backlog_and_buffers_are_applied() {
        let l = open(
            &dpo("Family=inet6, Addr=::1, Port=0, L=7, S=65536, R=65536"),
            true,
        )
        .unwrap();
        let Bound::Tcp(t) = &l.socket else { panic!() };
        let s = socket2::SockRef::from(t);
        // Linux doubles the requested size for bookkeeping.
        assert!(s.send_buffer_size().unwrap() >= 65536);
        assert!(s.recv_buffer_size().unwrap() >= 65536);
    }

    #[test]
    fn address_not_on_this_host_is_a_clear_error() {
        // 192.0.2.1 (TEST-NET-1) is never configured on a test machine.
        let e = open(&dpo("Name=Far, Addr=192.0.2.1, Port=0"), false).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("daemon Far: cannot bind 192.0.2.1:0"), "{msg}");
        assert!(msg.contains("not on this host"), "{msg}");
    }

    #[test]
    fn optional_daemon_is_skipped() {
        let all = [
            dpo("Name=Ok, Addr=127.0.0.1, Port=0"),
            dpo("Name=Far, Addr=192.0.2.1, Port=0, M=O"),
        ];
        let opened = open_all(&all).unwrap();
        assert_eq!(opened.listeners.len(), 1);
        assert!(opened.skipped[0].contains("optional socket disabled"));
    }

    #[test]
    fn port_in_use() {
        let a = open(&dpo("Name=A, Addr=127.0.0.1, Port=0"), false).unwrap();
        let port = a.local_addr().unwrap().port();
        let e = open(&dpo(&format!("Name=B, Addr=127.0.0.1, Port={port}")), false).unwrap_err();
        assert!(e.to_string().contains("already listens"), "{e}");
    }

    #[test]
    fn a_passed_socket_is_adopted_only_where_the_daemon_says() {
        let d = dpo("Name=Low, Family=inet6, Addr=::1, Port=0");
        let l = open(&d, true).unwrap();
        let port = l.local_addr().unwrap().port();
        let take = |l: Listener| match l.socket {
            Bound::Tcp(t) => std::os::fd::OwnedFd::from(t),
            Bound::Unix(..) => unreachable!(),
        };
        let at = dpo(&format!("Name=Low, Family=inet6, Addr=::1, Port={port}"));
        let other = dpo(&format!(
            "Name=Low, Family=inet6, Addr=::1, Port={}",
            port ^ 1
        ));
        let e = adopt(&other, take(l), true).unwrap_err();
        assert!(e.to_string().contains("not a TCP listener on"), "{e}");
        let again = open(&at, true).unwrap();
        let e = adopt(&at, take(again), false).unwrap_err();
        assert!(e.to_string().contains("IPV6_V6ONLY"), "{e}");
        let unlistened = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
        unlistened.set_only_v6(true).unwrap();
        unlistened
            .bind(&SockAddr::from(resolve(&at).unwrap()))
            .unwrap();
        let e = adopt(&at, unlistened.into(), true).unwrap_err();
        assert!(e.to_string().contains("not a TCP listener"), "{e}");
        let ok = adopt(&at, take(open(&at, true).unwrap()), true).unwrap();
        assert_eq!(ok.local, format!("[::1]:{port}"));
    }

    #[test]
    fn unix_socket_and_stale_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mta.sock");
        let d = dpo(&format!("Name=L, Family=local, Addr={}", p.display()));
        let l = open(&d, false).unwrap();
        assert!(matches!(
            open(&d, false),
            Err(ListenError::UnixInUse { .. })
        ));
        drop(l);
        assert!(!p.exists(), "closing unlinks the socket");
        // A stale socket file (nobody listening) is replaced.
        let stale = std::os::unix::net::UnixListener::bind(&p).unwrap();
        drop(stale);
        open(&d, false).unwrap();
    }
}
