//! Opening the TCP connection to a mail exchanger.
//!
//! In: the [`Route`]s from [`super::route`] (hosts in order, each with its addresses, IPv6
//! first), the port, the `ClientPortOptions` per address family ([`ClientOptions`]: source
//! `Addr`, source `Port`, buffer sizes, modifiers) and `Timeout.connect`. Out: the first
//! stream that connects, with the host and address it reached; or every failure, each with
//! sendmail's log line (`makeconnection (host. [addr].port (family)) failed: Connection
//! refused by host.`), and the deferral that all of them together mean.
//!
//! A connection failure never bounces: when every address of every host fails, the
//! recipients are deferred with DSN 4.4.1 and `stat=Deferred: <last error>` (facts §3.3,
//! samples/46).
//!
//! sendmail: `daemon.c:makeconnection`, `setclientoptions`; op §5.6 ClientPortOptions
//! (facts §1.8: one setting per family, a later one for the same family replaces it).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use super::route::Route;
use crate::config::daemon_options::{Addr, DaemonPortOptions, DpoError, Family, Modifiers};
use crate::deliver::Outcome;
use crate::dns::bracketed;

/// The client settings for one address family (one `ClientPortOptions` value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyOptions {
    /// `Addr=`: the source address; `None` = chosen by the kernel.
    pub addr: Option<IpAddr>,
    /// `Port=`: the source port; 0 = any.
    pub port: u16,
    pub snd_buf: Option<usize>,
    pub rcv_buf: Option<usize>,
    /// `Modifiers=`: `h` (HELO with the source address's name), `A` (no AUTH), `S` (no
    /// STARTTLS).
    pub modifiers: Modifiers,
}

/// `ClientPortOptions`, one slot per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    pub inet: FamilyOptions,
    pub inet6: FamilyOptions,
}

impl ClientOptions {
    /// Parses the `ClientPortOptions` values in order (DaemonPortOptions syntax); a later
    /// value for a family replaces an earlier one.
    pub fn parse(values: &[String]) -> Result<ClientOptions, DpoError> {
        let mut out = ClientOptions::default();
        for (i, value) in values.iter().enumerate() {
            let (d, _warnings) = DaemonPortOptions::parse(value, i)?;
            let addr = match d.addr {
                Addr::Any => None,
                Addr::Ip { ip, .. } => Some(ip),
                Addr::Host(h) => {
                    return Err(DpoError(format!(
                        "ClientPortOptions Addr={h}: expected an IP address"
                    )));
                }
                Addr::Path(_) => None,
            };
            let opts = FamilyOptions {
                addr,
                // DaemonPortOptions defaults Port to 25; for a client "no Port" means any.
                port: if names_port(value) { d.port } else { 0 },
                snd_buf: d.snd_buf,
                rcv_buf: d.rcv_buf,
                modifiers: d.modifiers,
            };
            match d.family {
                Family::Inet => out.inet = opts,
                Family::Inet6 => out.inet6 = opts,
                Family::Local => {
                    return Err(DpoError(
                        "ClientPortOptions Family=local: expected inet or inet6".to_string(),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The settings for connections to `ip`.
    pub fn for_ip(&self, ip: IpAddr) -> &FamilyOptions {
        match ip {
            IpAddr::V4(_) => &self.inet,
            IpAddr::V6(_) => &self.inet6,
        }
    }
}

/// Whether a `*PortOptions` value sets `Port` (first-letter rule).
fn names_port(value: &str) -> bool {
    value.split(',').any(|e| {
        let e = e.trim_start();
        e.contains('=') && e.starts_with(['P', 'p'])
    })
}

/// One address that could not be reached.
#[derive(Debug)]
pub struct ConnectFailure {
    /// The host as written in the log (`mx.example.test.`, `[127.0.0.1]`).
    pub host: String,
    pub addr: IpAddr,
    pub port: u16,
    pub error: io::Error,
}

impl ConnectFailure {
    /// sendmail's error text: `Connection refused by mx.example.test.`.
    pub fn reason(&self) -> String {
        let h = &self.host;
        match self.error.kind() {
            io::ErrorKind::ConnectionRefused => format!("Connection refused by {h}"),
            io::ErrorKind::TimedOut => format!("Connection timed out with {h}"),
            io::ErrorKind::ConnectionReset => format!("Connection reset by {h}"),
            io::ErrorKind::HostUnreachable => "No route to host".to_string(),
            io::ErrorKind::NetworkUnreachable => "Network is unreachable".to_string(),
            _ => strip_os_error(&self.error.to_string()),
        }
    }

    /// The log line: `makeconnection (host. [127.0.0.3].2599 (2)) failed: Connection
    /// refused by host.` — (2) and (10) are AF_INET and AF_INET6.
    pub fn log_line(&self) -> String {
        let family = if self.addr.is_ipv4() { 2 } else { 10 };
        format!(
            "makeconnection ({} {}.{} ({family})) failed: {}",
            self.host,
            bracketed(self.addr),
            self.port,
            self.reason()
        )
    }
}

fn strip_os_error(text: &str) -> String {
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text.to_string(),
    }
}

/// A stream that connected, and to what.
#[derive(Debug)]
pub struct Connected {
    pub stream: TcpStream,
    /// Index of the route in the list given to [`connect_routes`].
    pub route: usize,
    pub host: String,
    pub addr: IpAddr,
    /// The local address used (for the `h` modifier).
    pub local: Option<SocketAddr>,
}

/// Every attempt failed: the failures in order, never empty.
#[derive(Debug)]
pub struct AllFailed {
    pub failures: Vec<ConnectFailure>,
}

impl AllFailed {
    /// The recipients' result: deferred, DSN 4.4.1, with the last failure's reason.
    pub fn outcome(&self) -> Outcome {
        let reason = self
            .failures
            .last()
            .map(ConnectFailure::reason)
            .unwrap_or_else(|| "No route to host".to_string());
        Outcome::Temporary {
            dsn: "4.4.1".to_string(),
            text: format!("Deferred: {reason}"),
        }
    }
}

/// Connects to one address with a timeout, binding the family's source address/port.
pub async fn connect_addr(
    addr: SocketAddr,
    opts: &FamilyOptions,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if opts.addr.is_some() || opts.port != 0 {
        let ip = opts.addr.unwrap_or(match addr {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        if opts.port != 0 {
            socket.set_reuseaddr(true)?;
        }
        socket.bind(SocketAddr::new(ip, opts.port))?;
    }
    if let Some(n) = opts.snd_buf {
        socket.set_send_buffer_size(u32::try_from(n).unwrap_or(u32::MAX))?;
    }
    if let Some(n) = opts.rcv_buf {
        socket.set_recv_buffer_size(u32::try_from(n).unwrap_or(u32::MAX))?;
    }
    let limit = if timeout.is_zero() {
        Duration::from_secs(3600)
    } else {
        timeout
    };
    match tokio::time::timeout(limit, socket.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "Connection timed out",
        )),
    }
}

/// Tries `routes[start..]` in order, every address of each; returns the first connection,
/// or all failures (when there was at least one address to try).
pub async fn connect_routes(
    routes: &[Route],
    start: usize,
    port: u16,
    options: &ClientOptions,
    timeout: Duration,
    failures: &mut Vec<ConnectFailure>,
) -> Option<Connected> {
    for (i, route) in routes.iter().enumerate().skip(start) {
        let host = route.hop.display();
        for ip in &route.addrs {
            let sa = SocketAddr::new(*ip, port);
            match connect_addr(sa, options.for_ip(*ip), timeout).await {
                Ok(stream) => {
                    let local = stream.local_addr().ok();
                    return Some(Connected {
                        stream,
                        route: i,
                        host,
                        addr: *ip,
                        local,
                    });
                }
                Err(error) => failures.push(ConnectFailure {
                    host: host.clone(),
                    addr: *ip,
                    port,
                    error,
                }),
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::remote::route::Hop;

    #[test]
    fn client_port_options_keep_one_setting_per_family() {
        let opts = ClientOptions::parse(&[
            "Family=inet, Addr=127.0.0.5, M=h".to_string(),
            "Family=inet6, Addr=::1, Port=2600".to_string(),
            "Family=inet, Addr=127.0.0.6".to_string(),
        ])
        .unwrap();
        assert_eq!(opts.inet.addr, Some("127.0.0.6".parse().unwrap()));
        assert_eq!(opts.inet.port, 0, "no Port= means any source port");
        assert!(
            !opts.inet.modifiers.has('h'),
            "the later inet value replaced the first"
        );
        assert_eq!(opts.inet6.addr, Some("::1".parse().unwrap()));
        assert_eq!(opts.inet6.port, 2600);
        assert_eq!(opts.for_ip("192.0.2.1".parse().unwrap()), &opts.inet);
        assert_eq!(opts.for_ip("2001:db8::1".parse().unwrap()), &opts.inet6);
        assert!(ClientOptions::parse(&["Family=inet, Addr=some.host".to_string()]).is_err());
        assert!(ClientOptions::parse(&["Family=local, Addr=/x".to_string()]).is_err());
        assert!(ClientOptions::parse(&["Xyz=1".to_string()]).is_err());
        let h = ClientOptions::parse(&["Family=inet, Addr=127.0.0.5, M=h".to_string()]).unwrap();
        assert!(h.inet.modifiers.has('h'));
    }

    #[test]
    fn failures_read_as_sendmail_logs_them() {
        let f = ConnectFailure {
            host: "remote.example.test.".into(),
            addr: "127.0.0.3".parse().unwrap(),
            port: 2599,
            error: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(
            f.log_line(),
            "makeconnection (remote.example.test. [127.0.0.3].2599 (2)) failed: Connection refused by remote.example.test."
        );
        let six = ConnectFailure {
            host: "mx.example.test.".into(),
            addr: "::1".parse().unwrap(),
            port: 25,
            error: io::Error::from(io::ErrorKind::TimedOut),
        };
        assert_eq!(
            six.log_line(),
            "makeconnection (mx.example.test. [IPv6:0:0:0:0:0:0:0:1].25 (10)) failed: Connection timed out with mx.example.test."
        );
        let all = AllFailed {
            failures: vec![six, f],
        };
        assert_eq!(
            all.outcome(),
            Outcome::Temporary {
                dsn: "4.4.1".into(),
                text: "Deferred: Connection refused by remote.example.test.".into()
            }
        );
    }

    #[tokio::test]
    async fn connect_tries_each_address_in_order_and_binds_the_source() {
        // A port that refuses: bind a listener, note its port, drop it.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_port = listener.local_addr().unwrap().port();
        // The same route, first against the closed port, then against the listener.
        let routes = vec![Route {
            hop: Hop::name(0, "mx.example.test"),
            addrs: vec!["127.0.0.1".parse().unwrap()],
        }];
        let mut failures = Vec::new();
        let none = connect_routes(
            &routes,
            0,
            closed_port,
            &ClientOptions::default(),
            Duration::from_secs(5),
            &mut failures,
        )
        .await;
        assert!(none.is_none());
        assert_eq!(failures.len(), 1);
        assert_eq!(
            failures[0].reason(),
            "Connection refused by mx.example.test."
        );

        let opts = ClientOptions::parse(&["Family=inet, Addr=127.0.0.1".to_string()]).unwrap();
        let mut failures = Vec::new();
        let c = connect_routes(
            &routes,
            0,
            open_port,
            &opts,
            Duration::from_secs(5),
            &mut failures,
        )
        .await
        .expect("connects");
        assert!(failures.is_empty());
        assert_eq!(
            c.local.unwrap().ip(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        let (_s, peer) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(peer, c.local.unwrap());
    }
}
