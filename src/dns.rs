//! DNS for outbound mail: MX, AAAA and A lookups over `hickory-resolver`.
//!
//! In: a domain or host name, and once at start the name servers (our option
//! `NameServers=ADDR[:PORT],...`, UDP and TCP to each) or else the system's
//! `/etc/resolv.conf`. Out: an [`Answer`] per lookup, which keeps apart what delivery must
//! treat differently (the classification hickory's `NoRecords.response_code` makes):
//!
//! * [`Answer::Found`] — the records, in the order the server gave them;
//! * [`Answer::NxDomain`] — the name does not exist: a permanent failure;
//! * [`Answer::NoData`] — the name exists but has no record of this type; for MX this is the
//!   *implicit MX* of RFC 5321 §5.1 (deliver to the domain's own addresses);
//! * [`Answer::Temporary`] — SERVFAIL, REFUSED, timeout, no server reachable: try later.
//!
//! The hosts file is honoured for A and AAAA before any server is asked: `/etc/hosts`
//! through hickory for [`Dns::new`]; for the daemon ([`Dns::from_config`]) the file
//! `HostsFile` names, read here, and DNS is asked at all only when the `ServiceSwitchFile`'s
//! `hosts` line names `dns` (or there is no such file or line: sendmail's default is
//! `dns files`) — with `hosts files` alone a name not in the file does not exist and a domain
//! has no MX (its own address is used), as in sendmail without DNS.
//! Names are looked up as absolute names (a trailing dot is added), so the resolver's
//! `search` list never turns `example.com` into `example.com.corp.example`.
//!
//! RFCs: RFC 1035 (records), RFC 2308 (NXDOMAIN vs NODATA), RFC 5321 §5.1 (MX), RFC 7505
//! (null MX: see [`crate::deliver::remote::route`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::config::Config;

/// The result of one lookup, classified for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// At least one record of the asked type.
    Found(Vec<T>),
    /// NXDOMAIN: the name does not exist.
    NxDomain,
    /// NOERROR with no record of this type: the name exists.
    NoData,
    /// No usable answer now (SERVFAIL, REFUSED, timeout, ...); the text says which.
    Temporary(String),
}

/// One MX record. `exchange` is the host name without its trailing dot; the root name `.`
/// (RFC 7505 null MX) is kept as `"."`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    pub preference: u16,
    pub exchange: String,
}

impl MxRecord {
    pub fn new(preference: u16, exchange: &str) -> MxRecord {
        MxRecord {
            preference,
            exchange: exchange.to_string(),
        }
    }

    /// RFC 7505: a single `MX 0 .` says the domain accepts no mail.
    pub fn is_null(&self) -> bool {
        self.exchange == "." || self.exchange.is_empty()
    }
}

/// How hard the resolver tries before a lookup is [`Answer::Temporary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsOptions {
    /// Wait for one answer from one server (sendmail's `Timeout.resolver.retrans`, 5 s).
    pub timeout: Duration,
    /// Tries per server (sendmail's `Timeout.resolver.retry`, 4).
    pub attempts: usize,
}

impl Default for DnsOptions {
    fn default() -> DnsOptions {
        DnsOptions {
            timeout: Duration::from_secs(5),
            attempts: 4,
        }
    }
}

/// The resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    /// `/etc/resolv.conf` (or the system's equivalent) could not be read or parsed.
    #[error("cannot read the system resolver configuration: {0}")]
    SystemConfig(String),
    /// The resolver refused the configuration.
    #[error("cannot build the DNS resolver: {0}")]
    Build(String),
}

/// A resolver for the delivery agents; cheap to clone (shares its cache).
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
    /// `HostsFile`'s names (lower case) → addresses, asked first; `None`: hickory reads
    /// `/etc/hosts` itself.
    files: Option<Arc<HashMap<String, Vec<IpAddr>>>>,
    /// Whether servers are asked at all (the service switch's `hosts` line names `dns`).
    use_dns: bool,
}

/// Forward entries of a hosts file: each name (lower case) → its addresses, in file order.
pub fn hosts_by_name(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let mut words = line.split('#').next().unwrap_or("").split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in words {
            let ips = map.entry(name.to_ascii_lowercase()).or_default();
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    map
}

/// Whether the service switch file lets host names go to DNS: its `hosts` line names
/// `dns`; without a readable file or a `hosts` line, yes (sendmail's `dns files`).
pub fn switch_uses_dns(switch_file: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(switch_file) else {
        return true;
    };
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .find(|l| l.split_whitespace().next() == Some("hosts"))
        .is_none_or(|l| l.split_whitespace().skip(1).any(|w| w == "dns"))
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dns")
    }
}

impl Dns {
    /// A resolver asking `name_servers` (UDP, and TCP for truncated answers), or the
    /// system's configuration when the list is empty.
    pub fn new(name_servers: &[SocketAddr], options: DnsOptions) -> Result<Dns, DnsSetupError> {
        Dns::build(name_servers, options, None, true)
    }

    /// [`Dns::new`] that answers from `files` (a hosts file's [`hosts_by_name`]) first and
    /// asks servers only if `use_dns`.
    pub fn with_files(
        name_servers: &[SocketAddr],
        options: DnsOptions,
        files: HashMap<String, Vec<IpAddr>>,
        use_dns: bool,
    ) -> Result<Dns, DnsSetupError> {
        Dns::build(name_servers, options, Some(Arc::new(files)), use_dns)
    }

    fn build(
        name_servers: &[SocketAddr],
        options: DnsOptions,
        files: Option<Arc<HashMap<String, Vec<IpAddr>>>>,
        use_dns: bool,
    ) -> Result<Dns, DnsSetupError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if name_servers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| DnsSetupError::SystemConfig(e.to_string()))?
        } else {
            let servers = name_servers.iter().map(|sa| server_config(*sa)).collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = options.timeout;
        opts.attempts = options.attempts.max(1);
        opts.use_hosts_file = if files.is_some() {
            ResolveHosts::Never
        } else {
            ResolveHosts::Always
        };
        let resolver = builder
            .build()
            .map_err(|e| DnsSetupError::Build(e.to_string()))?;
        Ok(Dns {
            resolver,
            files,
            use_dns,
        })
    }

    /// The resolver the configuration asks for: `NameServers`, and the
    /// `Timeout.resolver.retrans` / `Timeout.resolver.retry` values when set.
    pub fn from_config(config: &Config) -> Result<Dns, DnsSetupError> {
        let t = &config.options.timeouts;
        let mut options = DnsOptions::default();
        if let Some(d) = t.resolver_retrans_normal.or(t.resolver_retrans_first)
            && !d.is_zero()
        {
            options.timeout = d;
        }
        if let Some(n) = t.resolver_retry_normal.or(t.resolver_retry_first) {
            options.attempts = n.max(1) as usize;
        }
        let o = &config.options;
        let files = std::fs::read_to_string(&o.hosts_file).unwrap_or_default();
        Dns::with_files(
            &o.name_servers,
            options,
            hosts_by_name(&files),
            switch_uses_dns(&o.service_switch_file),
        )
    }

    /// The MX records of `domain`.
    pub async fn mx(&self, domain: &str) -> Answer<MxRecord> {
        if !self.use_dns {
            return Answer::NoData;
        }
        self.lookup(domain, RecordType::MX, |rdata| match rdata {
            RData::MX(mx) => {
                let name = mx.exchange.to_ascii();
                let name = if name == "." {
                    name
                } else {
                    name.trim_end_matches('.').to_string()
                };
                Some(MxRecord {
                    preference: mx.preference,
                    exchange: name,
                })
            }
            _ => None,
        })
        .await
    }

    /// The IPv6 addresses of `host` (AAAA records, or `/etc/hosts`).
    pub async fn aaaa(&self, host: &str) -> Answer<Ipv6Addr> {
        let from_files = self.answer_from_files(host, |ip| match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        });
        if let Some(answer) = from_files {
            return answer;
        }
        self.lookup(host, RecordType::AAAA, |rdata| match rdata {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .await
    }

    /// The IPv4 addresses of `host` (A records, or `/etc/hosts`).
    pub async fn a(&self, host: &str) -> Answer<Ipv4Addr> {
        let from_files = self.answer_from_files(host, |ip| match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        });
        if let Some(answer) = from_files {
            return answer;
        }
        self.lookup(host, RecordType::A, |rdata| match rdata {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .await
    }

    /// The hosts file's answer, or `None` to ask the servers.
    fn answer_from_files<T>(
        &self,
        host: &str,
        pick: impl Fn(IpAddr) -> Option<T>,
    ) -> Option<Answer<T>> {
        let files = self.files.as_ref()?;
        let key = host.trim_end_matches('.').to_ascii_lowercase();
        let listed = files.get(&key);
        let found: Vec<T> = listed
            .into_iter()
            .flatten()
            .filter_map(|ip| pick(*ip))
            .collect();
        match (found.is_empty(), listed.is_some(), self.use_dns) {
            (false, _, _) => Some(Answer::Found(found)),
            (true, _, true) => None,
            (true, true, false) => Some(Answer::NoData),
            (true, false, false) => Some(Answer::NxDomain),
        }
    }

    async fn lookup<T>(
        &self,
        name: &str,
        rtype: RecordType,
        pick: impl Fn(&RData) -> Option<T>,
    ) -> Answer<T> {
        let absolute = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        match self.resolver.lookup(absolute.as_str(), rtype).await {
            Ok(lookup) => {
                let found: Vec<T> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| pick(&r.data))
                    .collect();
                if found.is_empty() {
                    Answer::NoData
                } else {
                    Answer::Found(found)
                }
            }
            Err(e) => classify_error(&e),
        }
    }
}

/// What DNS says of a host name `$[ $]` canonifies (sendmail's `dns_getcanonname`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canon {
    /// The name has an A, AAAA or MX record: this is its canonical form.
    Found(String),
    /// NXDOMAIN, or the name has none of those records.
    NotFound,
    /// No answer now; the text says why.
    TryAgain(String),
}

impl Dns {
    /// The canonical form of `name`: itself (without a trailing dot) when it has an A,
    /// AAAA or MX record. CNAMEs are followed by the resolver; no search list is applied.
    pub async fn canonical(&self, name: &str) -> Canon {
        let host = name.trim_end_matches('.');
        let mut temporary = None;
        let answers = [
            self.a(host).await.map_found(),
            self.aaaa(host).await.map_found(),
            self.mx(host).await.map_found(),
        ];
        for a in answers {
            match a {
                Answer::Found(_) => return Canon::Found(host.to_string()),
                Answer::Temporary(why) => temporary = Some(why),
                Answer::NxDomain | Answer::NoData => {}
            }
        }
        temporary.map_or(Canon::NotFound, Canon::TryAgain)
    }
}

impl<T> Answer<T> {
    /// The same answer without its records (only whether there were any).
    fn map_found(self) -> Answer<()> {
        match self {
            Answer::Found(v) => Answer::Found(vec![(); v.len()]),
            Answer::NxDomain => Answer::NxDomain,
            Answer::NoData => Answer::NoData,
            Answer::Temporary(t) => Answer::Temporary(t),
        }
    }
}

/// Host-name canonification for the ruleset engine, which is synchronous: each lookup
/// runs on a thread of its own with its own runtime (so it may be called from inside the
/// daemon's), bounded by the resolver's timeout and attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockingCanon {
    /// Servers to ask (empty: the system's resolver configuration).
    pub name_servers: Vec<SocketAddr>,
}

impl BlockingCanon {
    /// [`Dns::canonical`], waited for.
    pub fn canonical(&self, name: &str) -> Canon {
        let name = name.to_string();
        self.run(move |dns| async move { dns.canonical(&name).await })
            .unwrap_or_else(Canon::TryAgain)
    }

    /// [`Dns::mx`], waited for.
    pub fn mx(&self, name: &str) -> Answer<MxRecord> {
        let name = name.to_string();
        self.run(move |dns| async move { dns.mx(&name).await })
            .unwrap_or_else(Answer::Temporary)
    }

    /// Runs one query on a thread and runtime of its own; `Err` says why it could not run.
    fn run<T, F>(&self, query: impl FnOnce(Dns) -> F + Send + 'static) -> Result<T, String>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T>,
    {
        let servers = self.name_servers.clone();
        let worker = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let dns = Dns::new(&servers, DnsOptions::default()).map_err(|e| e.to_string())?;
            Ok(rt.block_on(query(dns)))
        });
        worker
            .join()
            .unwrap_or_else(|_| Err("resolver thread failed".to_string()))
    }
}

fn server_config(sa: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = sa.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = sa.port();
    NameServerConfig::new(sa.ip(), true, vec![udp, tcp])
}

/// The one place a resolver error becomes NXDOMAIN, NODATA or temporary.
fn classify_error<T>(e: &NetError) -> Answer<T> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => match nr.response_code {
            ResponseCode::NXDomain => Answer::NxDomain,
            ResponseCode::NoError => Answer::NoData,
            code => Answer::Temporary(format!("server answered {code}")),
        },
        NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain)) => Answer::NxDomain,
        NetError::Dns(DnsError::ResponseCode(code)) => {
            Answer::Temporary(format!("server answered {code}"))
        }
        NetError::Timeout => Answer::Temporary("timeout".to_string()),
        other => Answer::Temporary(other.to_string()),
    }
}

/// An address as it is written in logs and `relay=`: `[192.0.2.1]`,
/// `[IPv6:2001:db8:0:0:0:0:0:1]` (sendmail's uncompressed form, facts §3.4).
pub fn bracketed(ip: IpAddr) -> String {
    format!("[{}]", format_ip(ip))
}

/// An IP address as sendmail prints it: IPv4 dotted, IPv4-mapped IPv6 as IPv4, other IPv6
/// as `IPv6:` plus eight uncompressed hex groups (`IPV6_FULL`, facts §3.4).
pub fn format_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                // One buffer, no formatter per group: this runs several times per
                // connection (callgrind: 6.5 k instructions a call with a String per group).
                let mut out = String::with_capacity(44);
                out.push_str("IPv6");
                for group in v6.segments() {
                    out.push(':');
                    push_hex(&mut out, group);
                }
                out
            }
        },
    }
}

/// `v` in lower-case hex without leading zeros (`0` for zero), as `{:x}` writes it.
fn push_hex(out: &mut String, v: u16) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut started = false;
    for shift in [12u16, 8, 4, 0] {
        let d = usize::from((v >> shift) & 0xf);
        if d != 0 || started || shift == 0 {
            out.push(char::from(DIGITS[d]));
            started = true;
        }
    }
}

#[cfg(test)]
pub(crate) mod test_server;

#[cfg(test)]
mod tests;
