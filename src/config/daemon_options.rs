//! `DaemonPortOptions` values → typed listener descriptions.
//!
//! In: one option value such as `Name=MTA-v6, Family=inet6, Port=smtp, Addr=::1` and its
//! 0-based position among the daemons. Out: a [`DaemonPortOptions`] (one listening socket), or a
//! [`DpoError`] saying which entry was wrong and what was expected.
//!
//! sendmail's rules, kept here (facts §1.1-1.3; sendmail `daemon.c:setsockaddroptions`):
//! * the value is a comma-separated list of `key=value` entries; white space before an entry
//!   and after `=` is skipped; an entry without `=` is ignored;
//! * only the **first character** of a key counts (`N=`, `Name=`, `name=` all set the name);
//!   `A F I L M N P S` are case-insensitive, while `D` (DeliveryMode) / `d` (delayLA) and
//!   `R` (RcvBufSize) / `r` (refuseLA) differ by case and `c` (children), `q` (queueLA) are lower
//!   case only;
//! * `Addr` and `Port` are interpreted after the whole list is read, so the order is free;
//! * defaults: `Name=Daemon<i>`, `Family=inet`, `Port=smtp`, `Addr` any, `Listen=1024` (sendmail: 10; see [`DEFAULT_LISTEN`]).
//!
//! Where sendmail only warns, we refuse: an unknown key (sendmail: `PortOptions parameter
//! "Xyz=1" unknown`, daemon still created) is an error here, because a mistyped `Addr` would
//! otherwise silently open the listener on every address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// The backlog when `Listen=` is not given. sendmail's `DEF_LISTENQUEUE` is 10, which drops
/// connections in a burst (200 clients at once are not all greeted within 30 s); ours is
/// 1024 (the kernel caps it at `net.core.somaxconn`). A cf's own `Listen=` is honoured.
pub const DEFAULT_LISTEN: u32 = 1024;
/// The port used when `Port` is not given (`smtp`).
pub const DEFAULT_PORT: u16 = 25;

/// The address family of a daemon (`Family=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Inet,
    Inet6,
    /// `local` or `unix`: a unix-domain socket at `Addr`.
    Local,
}

impl Family {
    /// The name sendmail uses for `${daemon_family}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
            Family::Local => "local",
        }
    }
}

/// What `Addr=` said, before any name is resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// No `Addr`: the wildcard of the family (`0.0.0.0` or `::`).
    Any,
    /// A literal address; `scope_id` is the interface of a link-local `fe80::1%eth0`.
    Ip { ip: IpAddr, scope_id: u32 },
    /// A host name, resolved when the socket is opened (first A or AAAA record).
    Host(String),
    /// `Family=local`: the socket's path.
    Path(PathBuf),
}

/// `DeliveryMode` letters (`D=` in DaemonPortOptions, option `DeliveryMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryMode {
    Interactive,
    Background,
    QueueOnly,
    Deferred,
}

impl DeliveryMode {
    /// sendmail looks only at the first character: `i`, `b`, `q`, `d`.
    pub fn parse(value: &str) -> Result<DeliveryMode, DpoError> {
        match value.chars().next() {
            Some('i') => Ok(DeliveryMode::Interactive),
            Some('b') => Ok(DeliveryMode::Background),
            Some('q') => Ok(DeliveryMode::QueueOnly),
            Some('d') => Ok(DeliveryMode::Deferred),
            _ => Err(DpoError::new(format!(
                "Unknown delivery mode {value} (expected i, b, q or d)"
            ))),
        }
    }
}

/// The modifier letters of `M=` (facts §1.3). Any printable non-space character is kept, as
/// sendmail keeps it; [`Modifiers::unknown`] lists the ones with no meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Modifiers(String);

/// Every modifier letter sendmail 8.17 gives a meaning to, in daemon or client options.
const KNOWN_MODIFIERS: &str = "abcfhrsuACDEMOS";

impl Modifiers {
    pub fn parse(value: &str) -> Modifiers {
        let mut letters = String::new();
        for c in value.chars().filter(|c| c.is_ascii_graphic()) {
            if !letters.contains(c) {
                letters.push(c);
            }
        }
        Modifiers(letters)
    }

    pub fn has(&self, letter: char) -> bool {
        self.0.contains(letter)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Letters that mean nothing to sendmail (kept, but worth a warning).
    pub fn unknown(&self) -> impl Iterator<Item = char> + '_ {
        self.0.chars().filter(|c| !KNOWN_MODIFIERS.contains(*c))
    }

    /// `${daemon_flags}`: the letters separated by single spaces, upper-case letters doubled
    /// (`M=Ea` → `"EE a"`, sendmail `getmodifiers`).
    pub fn daemon_flags(&self) -> String {
        let words: Vec<String> = self
            .0
            .chars()
            .map(|c| {
                if c.is_ascii_uppercase() {
                    format!("{c}{c}")
                } else {
                    c.to_string()
                }
            })
            .collect();
        words.join(" ")
    }
}

/// One listener, as one `DaemonPortOptions` value describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DaemonPortOptions {
    /// `Name=`; labels the daemon in the log (`during connection to MTA-v6`).
    pub name: String,
    pub family: Family,
    pub addr: Addr,
    /// Resolved port number (0 for `Family=local`).
    pub port: u16,
    /// `Listen=`: the listen(2) backlog.
    pub listen: u32,
    pub modifiers: Modifiers,
    /// `SndBufSize=`: SO_SNDBUF, applied only when > 0.
    pub snd_buf: Option<usize>,
    /// `RcvBufSize=`: SO_RCVBUF, applied only when > 0.
    pub rcv_buf: Option<usize>,
    /// `children=`: this daemon's limit of concurrent sessions (else `MaxDaemonChildren`).
    pub children: Option<u32>,
    /// `DeliveryMode=` for mail received on this daemon (else the `DeliveryMode` option).
    pub delivery_mode: Option<DeliveryMode>,
    /// `refuseLA=`, `delayLA=`, `queueLA=`: load-average thresholds for this daemon.
    pub refuse_la: Option<u32>,
    pub delay_la: Option<u32>,
    pub queue_la: Option<u32>,
    /// `InputMailFilters=`: milter names, separated by semicolons.
    pub input_mail_filters: Vec<String>,
}

/// A value that cannot describe a listener (bad family, port, address, unknown key, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DpoError(pub String);

impl DpoError {
    fn new(msg: impl Into<String>) -> DpoError {
        DpoError(msg.into())
    }
}

/// The keys, by sendmail's first-letter rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Name,
    Port,
    Addr,
    Family,
    Listen,
    Modifiers,
    SndBuf,
    RcvBuf,
    Children,
    DeliveryMode,
    RefuseLa,
    DelayLa,
    QueueLa,
    InputMailFilters,
}

impl Key {
    fn from_first_char(c: char) -> Option<Key> {
        Some(match c {
            'N' | 'n' => Key::Name,
            'P' | 'p' => Key::Port,
            'A' | 'a' => Key::Addr,
            'F' | 'f' => Key::Family,
            'L' | 'l' => Key::Listen,
            'M' | 'm' => Key::Modifiers,
            'S' | 's' => Key::SndBuf,
            'R' => Key::RcvBuf,
            'r' => Key::RefuseLa,
            'c' => Key::Children,
            'D' => Key::DeliveryMode,
            'd' => Key::DelayLa,
            'q' => Key::QueueLa,
            'I' | 'i' => Key::InputMailFilters,
            _ => return None,
        })
    }
}

const KEY_LIST: &str = "Name, Port, Addr, Family, Listen, Modifiers, SndBufSize, RcvBufSize, \
                        children, DeliveryMode, refuseLA, delayLA, queueLA, InputMailFilters";

impl DaemonPortOptions {
    /// Parses one `DaemonPortOptions` value; `index` is its 0-based position (for the default
    /// name `Daemon<index>`). Returns the daemon and warnings (modifier letters with no
    /// meaning, which sendmail accepts silently).
    pub fn parse(value: &str, index: usize) -> Result<(DaemonPortOptions, Vec<String>), DpoError> {
        let mut d = DaemonPortOptions {
            name: format!("Daemon{index}"),
            family: Family::Inet,
            addr: Addr::Any,
            port: DEFAULT_PORT,
            listen: DEFAULT_LISTEN,
            modifiers: Modifiers::default(),
            snd_buf: None,
            rcv_buf: None,
            children: None,
            delivery_mode: None,
            refuse_la: None,
            delay_la: None,
            queue_la: None,
            input_mail_filters: Vec::new(),
        };
        let mut warnings = Vec::new();
        let mut addr_text: Option<String> = None;
        let mut port_text: Option<String> = None;
        for entry in value.split(',') {
            let entry = entry.trim_start();
            let Some((key, val)) = entry.split_once('=') else {
                continue; // sendmail ignores entries without '='
            };
            let val = val.trim_start().trim_end();
            let first = key.chars().next().unwrap_or(' ');
            let Some(k) = Key::from_first_char(first) else {
                return Err(DpoError::new(format!(
                    "unknown key \"{}\" in \"{}\" (expected one of {KEY_LIST})",
                    key.trim_end(),
                    entry.trim_end()
                )));
            };
            match k {
                Key::Name => d.name = val.to_string(),
                Key::Port => port_text = Some(val.to_string()),
                Key::Addr => addr_text = Some(val.to_string()),
                Key::Family => d.family = parse_family(val)?,
                Key::Listen => d.listen = parse_number(val, "Listen")?,
                Key::Modifiers => {
                    d.modifiers = Modifiers::parse(val);
                    let unknown: String = d.modifiers.unknown().collect();
                    if !unknown.is_empty() {
                        warnings.push(format!(
                            "daemon {}: modifier letter(s) \"{unknown}\" have no meaning",
                            d.name
                        ));
                    }
                }
                Key::SndBuf => d.snd_buf = positive(parse_number(val, "SndBufSize")?),
                Key::RcvBuf => d.rcv_buf = positive(parse_number(val, "RcvBufSize")?),
                Key::Children => d.children = Some(parse_number(val, "children")?),
                Key::DeliveryMode => d.delivery_mode = Some(DeliveryMode::parse(val)?),
                Key::RefuseLa => d.refuse_la = Some(parse_number(val, "refuseLA")?),
                Key::DelayLa => d.delay_la = Some(parse_number(val, "delayLA")?),
                Key::QueueLa => d.queue_la = Some(parse_number(val, "queueLA")?),
                Key::InputMailFilters => {
                    d.input_mail_filters = val
                        .split(';')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                }
            }
        }
        // "Check addr and port after finding family"
        if let Some(a) = addr_text {
            d.addr = parse_addr(&a, d.family)?;
        } else if d.family == Family::Local {
            return Err(DpoError::new(format!(
                "daemon {}: Family=local needs Addr=/path/of/socket",
                d.name
            )));
        }
        d.port = match (d.family, port_text) {
            (Family::Local, _) => 0,
            (_, Some(p)) => parse_port(&p)?,
            (_, None) => DEFAULT_PORT,
        };
        Ok((d, warnings))
    }

    /// `${daemon_addr}`-style rendering of where this daemon listens (`[::1]:25`,
    /// `127.0.0.1:25`, `*:25`, `/path`).
    pub fn endpoint(&self) -> String {
        match &self.addr {
            Addr::Any => match self.family {
                Family::Inet => format!("0.0.0.0:{}", self.port),
                _ => format!("[::]:{}", self.port),
            },
            Addr::Ip {
                ip: IpAddr::V6(ip), ..
            } => format!("[{ip}]:{}", self.port),
            Addr::Ip { ip, .. } => format!("{ip}:{}", self.port),
            Addr::Host(h) => format!("{h}:{}", self.port),
            Addr::Path(p) => p.display().to_string(),
        }
    }

    /// The wildcard address of an inet/inet6 daemon without `Addr`.
    pub fn wildcard(&self) -> IpAddr {
        match self.family {
            Family::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            _ => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

impl fmt::Display for DaemonPortOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} {})",
            self.name,
            self.family.as_str(),
            self.endpoint()
        )
    }
}

fn positive(n: usize) -> Option<usize> {
    (n > 0).then_some(n)
}

fn parse_number<T: std::str::FromStr>(val: &str, key: &str) -> Result<T, DpoError> {
    val.parse()
        .map_err(|_| DpoError::new(format!("{key}={val}: expected a non-negative number")))
}

fn parse_family(val: &str) -> Result<Family, DpoError> {
    match val.to_ascii_lowercase().as_str() {
        "inet" | "2" => Ok(Family::Inet),
        "inet6" | "10" => Ok(Family::Inet6),
        "local" | "unix" | "1" => Ok(Family::Local),
        _ => Err(DpoError::new(format!(
            "Unknown address family {val} in Family=option (expected inet, inet6, local or unix)"
        ))),
    }
}

/// `Port=`: a number if it starts with a digit, else a service name (`/etc/services`).
pub fn parse_port(val: &str) -> Result<u16, DpoError> {
    if val.starts_with(|c: char| c.is_ascii_digit()) {
        return match val.parse::<u16>() {
            Ok(p) => Ok(p),
            Err(_) => Err(DpoError::new(format!(
                "Port={val}: expected a port number from 0 to 65535 or a service name"
            ))),
        };
    }
    service_port(val).ok_or_else(|| {
        DpoError::new(format!(
            "service \"{val}\" unknown (Port= expects a number or a name from /etc/services)"
        ))
    })
}

/// Looks a TCP service name up in `/etc/services`, then in a built-in list of the mail
/// services (a fresh container may have no /etc/services).
pub fn service_port(name: &str) -> Option<u16> {
    if let Ok(text) = std::fs::read_to_string("/etc/services")
        && let Some(p) = lookup_services(&text, name)
    {
        return Some(p);
    }
    match name {
        "smtp" | "mail" => Some(25),
        "submission" => Some(587),
        "smtps" | "submissions" | "ssmtp" => Some(465),
        _ => None,
    }
}

/// Finds `name` (or an alias) with protocol tcp in services(5) text.
fn lookup_services(text: &str, name: &str) -> Option<u16> {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let (Some(service), Some(port_proto)) = (words.next(), words.next()) else {
            continue;
        };
        let Some((port, "tcp")) = port_proto.split_once('/') else {
            continue;
        };
        if service == name || words.any(|alias| alias == name) {
            return port.parse().ok();
        }
    }
    None
}

/// `Addr=` for the given family.
fn parse_addr(val: &str, family: Family) -> Result<Addr, DpoError> {
    if val.is_empty() {
        return Ok(Addr::Any);
    }
    match family {
        Family::Local => Ok(Addr::Path(PathBuf::from(val))),
        Family::Inet => {
            if val.starts_with(|c: char| c.is_ascii_digit()) {
                val.parse::<Ipv4Addr>()
                    .map(|ip| Addr::Ip {
                        ip: IpAddr::V4(ip),
                        scope_id: 0,
                    })
                    .map_err(|_| {
                        DpoError::new(format!(
                            "Addr={val}: expected an IPv4 address (Family=inet) or a host name"
                        ))
                    })
            } else {
                host_name(val)
            }
        }
        Family::Inet6 => {
            let (text, scope) = match val.split_once('%') {
                Some((a, s)) => (a, Some(s)),
                None => (val, None),
            };
            match text.parse::<Ipv6Addr>() {
                Ok(ip) => {
                    let scope_id = match scope {
                        None => 0,
                        Some(s) => scope_id(s).ok_or_else(|| {
                            DpoError::new(format!(
                                "Addr={val}: unknown interface or scope \"{s}\" after '%'"
                            ))
                        })?,
                    };
                    Ok(Addr::Ip {
                        ip: IpAddr::V6(ip),
                        scope_id,
                    })
                }
                Err(_) if val.parse::<Ipv4Addr>().is_ok() => Err(DpoError::new(format!(
                    "host \"{val}\" unknown: Family=inet6 expects an IPv6 address \
                     (use Family=inet for an IPv4 address)"
                ))),
                Err(_) if looks_like_host_name(val) => host_name(val),
                Err(_) => Err(DpoError::new(format!(
                    "Addr={val}: expected an IPv6 address (Family=inet6) or a host name"
                ))),
            }
        }
    }
}

fn looks_like_host_name(val: &str) -> bool {
    !val.is_empty()
        && val
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
}

fn host_name(val: &str) -> Result<Addr, DpoError> {
    if looks_like_host_name(val) {
        Ok(Addr::Host(val.to_string()))
    } else {
        Err(DpoError::new(format!(
            "Addr={val}: expected an IP address or a host name"
        )))
    }
}

/// `%eth0` or `%2` after a link-local address.
fn scope_id(s: &str) -> Option<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return Some(n);
    }
    nix::net::if_::if_nametoindex(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> DaemonPortOptions {
        DaemonPortOptions::parse(v, 0).expect(v).0
    }

    fn err(v: &str) -> String {
        DaemonPortOptions::parse(v, 0).expect_err(v).0
    }

    #[test]
    fn seed_line() {
        let d = parse("Name=MTA-v6, Family=inet6, Port=smtp, Addr=::1");
        assert_eq!(d.name, "MTA-v6");
        assert_eq!(d.family, Family::Inet6);
        assert_eq!(d.port, 25);
        assert_eq!(
            d.addr,
            Addr::Ip {
                ip: "::1".parse().unwrap(),
                scope_id: 0
            }
        );
        assert_eq!(d.listen, DEFAULT_LISTEN);
    }

    #[test]
    fn defaults_and_daemon_index() {
        let (d, w) = DaemonPortOptions::parse("", 3).unwrap();
        assert_eq!(d.name, "Daemon3");
        assert_eq!(d.family, Family::Inet);
        assert_eq!(d.addr, Addr::Any);
        assert_eq!(d.port, 25);
        assert!(w.is_empty());
    }

    #[test]
    fn first_letter_abbreviations_as_sendmail() {
        // facts §1.1, exp-04
        let d = parse("N=Abbr6, F=inet6, A=::1, P=2604, L=7, M=E");
        assert_eq!((d.name.as_str(), d.port, d.listen), ("Abbr6", 2604, 7));
        assert!(d.modifiers.has('E'));
        let d = parse("name=abbr4, family=inet, addr=127.0.0.1, port=2605, listen=3");
        assert_eq!(
            d.addr,
            Addr::Ip {
                ip: "127.0.0.1".parse().unwrap(),
                scope_id: 0
            }
        );
        assert_eq!(d.listen, 3);
    }

    #[test]
    fn case_sensitive_letters() {
        let d = parse("D=q, d=5, R=8192, r=12, c=4, q=20, S=4096");
        assert_eq!(d.delivery_mode, Some(DeliveryMode::QueueOnly));
        assert_eq!(d.delay_la, Some(5));
        assert_eq!(d.rcv_buf, Some(8192));
        assert_eq!(d.refuse_la, Some(12));
        assert_eq!(d.children, Some(4));
        assert_eq!(d.queue_la, Some(20));
        assert_eq!(d.snd_buf, Some(4096));
    }

    #[test]
    fn order_is_free_addr_checked_after_family() {
        let d = parse("Addr=::1, Port=2525, Family=inet6");
        assert_eq!(d.family, Family::Inet6);
        assert_eq!(
            d.addr,
            Addr::Ip {
                ip: "::1".parse().unwrap(),
                scope_id: 0
            }
        );
    }

    #[test]
    fn entries_without_equals_are_ignored_and_spaces_skipped() {
        let d = parse("  Name=  X ,junk,  Port= 2600");
        assert_eq!(d.name, "X");
        assert_eq!(d.port, 2600);
    }

    #[test]
    fn service_names() {
        assert_eq!(parse("Port=submission").port, 587);
        assert_eq!(
            lookup_services("smtp 25/tcp mail\nfoo 99/udp\n", "mail"),
            Some(25)
        );
        assert_eq!(lookup_services("foo 99/udp\n", "foo"), None);
    }

    #[test]
    fn link_local_scope() {
        let d = parse("Family=inet6, Addr=fe80::1%1");
        assert_eq!(
            d.addr,
            Addr::Ip {
                ip: "fe80::1".parse().unwrap(),
                scope_id: 1
            }
        );
        let d = parse("Family=inet6, Addr=fe80::1%lo");
        assert!(matches!(d.addr, Addr::Ip { scope_id, .. } if scope_id > 0));
        assert!(err("Family=inet6, Addr=fe80::1%nosuchif0").contains("unknown interface"));
    }

    #[test]
    fn host_names_and_unix_paths() {
        assert_eq!(parse("Addr=localhost").addr, Addr::Host("localhost".into()));
        let d = parse("Family=local, Addr=/run/sm.sock");
        assert_eq!(d.addr, Addr::Path("/run/sm.sock".into()));
        assert_eq!(d.port, 0);
        assert!(err("Family=unix").contains("needs Addr"));
    }

    #[test]
    fn modifiers_and_daemon_flags() {
        let d = parse("M=Ea");
        assert_eq!(d.modifiers.daemon_flags(), "EE a");
        let (_, w) = DaemonPortOptions::parse("M=Ez", 0).unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("\"z\""));
    }

    #[test]
    fn bad_input_is_an_error_naming_what_was_expected() {
        assert!(err("Fmaily=bogus").contains("Unknown address family bogus"));
        assert!(err("Port=99999").contains("0 to 65535"));
        assert!(err("Port=nosuchservice").contains("service \"nosuchservice\" unknown"));
        assert!(err("Family=inet6, Addr=127.0.0.1").contains("host \"127.0.0.1\" unknown"));
        assert!(err("Addr=300.1.1.1").contains("expected an IPv4 address"));
        assert!(err("Family=inet6, Addr=::g").contains("expected an IPv6 address"));
        assert!(err("Xyz=1").contains("unknown key \"Xyz\""));
        assert!(err("Listen=lots").contains("Listen=lots"));
        assert!(err("D=x").contains("Unknown delivery mode"));
    }
}
