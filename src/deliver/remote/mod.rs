//! Remote delivery: one message to the recipients of one destination, over SMTP.
//!
//! In: a queued [`Message`], its pending [`Recipient`]s for one destination, the host part
//! the rules chose (`$h`: a domain, `[name]`, `[addr]`, or a smart host's) and the mailer's
//! port ([`route::mailer_port`]). Out: a [`Report`] with one [`Outcome`] per recipient, the
//! `relay=` text, and the log lines sendmail writes on the way (`makeconnection … failed`).
//!
//! The path: [`crate::dns`] (MX, then AAAA and A per host) → [`route`] (order the hosts,
//! IPv6 before IPv4, implicit and null MX, literals) → [`connect`] (the first address that
//! answers, with `ClientPortOptions` and `Timeout.connect`) → [`client`] (EHLO, MAIL, RCPTs,
//! DATA, one connection for all recipients). A host that fails before answering any
//! recipient (refused connection, 4xx greeting, dropped connection) hands over to the next
//! host; when none is left the recipients are deferred — a connection failure never bounces.
//!
//! On each connection the client uses STARTTLS when the server offers it ([`tls`]; not with
//! `ClientPortOptions` Modifier `S`) and AUTH when the `authinfo` map has credentials for
//! the server ([`auth`]; not with Modifier `A`). A failed TLS handshake hands over to the
//! next host like a refusing greeting — or, with `TLSFallbacktoClear`, first connects to the
//! same address again without STARTTLS (sendmail deliver.c).

pub mod auth;
pub mod cache;
pub mod client;
pub mod connect;
pub mod route;
#[cfg(test)]
pub(crate) mod test_sink;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand::Rng;

use crate::config::Config;
use crate::config::daemon_options::DpoError;
use crate::config::macros::MacroLookup;
use crate::deliver::Outcome;
use crate::dns::{Answer, Dns, bracketed};
use crate::hosts::Hosts;
use crate::queue::{Message, Recipient};
use crate::rules::maps::{Map, Maps};
use auth::AuthInfo;
pub use client::Accepted;
use client::{ClientTimeouts, Job, SessionResult};
use connect::{AllFailed, ClientOptions, ConnectFailure, Connected};
use route::{Family, Hop, HopHost, Route, Target};
use tls::{TlsFiles, TlsSettings};

/// Everything remote delivery takes from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// EHLO/HELO name (`HeloName`, else `$j`).
    pub helo_name: String,
    pub client: ClientOptions,
    /// `Timeout.connect` (0 = the kernel's own limit).
    pub connect_timeout: Duration,
    pub timeouts: ClientTimeouts,
    pub family: Family,
    /// For the `h` modifier: names of our own source addresses.
    pub hosts: Hosts,
    /// Our own names (`$=w`, `$j`, `$w`, `localhost`), lower case: an MX list naming one of
    /// them is cut at its preference.
    pub local_names: Vec<String>,
    /// STARTTLS settings; `None`: never STARTTLS.
    pub tls: Option<TlsSettings>,
    /// The `authinfo` map (`FEATURE(authinfo)`), when the configuration declares one.
    pub authinfo: Option<Maps>,
    /// `LogLevel`, for the client's own log lines.
    pub log_level: u32,
    /// `ConnectionCacheSize` (per delivery slot; 0 = no caching) and
    /// `ConnectionCacheTimeout` ([`cache`]).
    pub cache_size: usize,
    pub cache_timeout: Duration,
}

impl Settings {
    /// From the configuration; fails only on a bad `ClientPortOptions` value.
    pub fn from_config(config: &Config) -> Result<Settings, DpoError> {
        let o = &config.options;
        let helo_name = match &o.helo_name {
            Some(text) => text.expand(config),
            None => macro_or(config, "j", &config.host.fqdn),
        };
        Ok(Settings {
            helo_name,
            client: ClientOptions::parse(&o.client_port_options)?,
            connect_timeout: o.timeouts.connect,
            timeouts: ClientTimeouts::from_config(&o.timeouts),
            family: Family::Ipv6First,
            hosts: Hosts::load(&o.hosts_file),
            local_names: local_names(config),
            tls: Some(TlsSettings::load(&TlsFiles::from_options(o, config))),
            authinfo: authinfo_map(config),
            log_level: o.log_level,
            cache_size: o.connection_cache_size,
            cache_timeout: o.connection_cache_timeout,
        })
    }

    /// The STARTTLS settings for a connection to `ip` (none with Modifier `S`).
    fn tls_for(&self, ip: IpAddr) -> Option<&TlsSettings> {
        self.tls
            .as_ref()
            .filter(|_| !self.client.for_ip(ip).modifiers.has('S'))
    }

    /// The `authinfo` entry for a server (none with Modifier `A`); a bad entry is logged.
    fn auth_for(&self, host: &str, ip: IpAddr, log: &mut Vec<String>) -> Option<AuthInfo> {
        if self.client.for_ip(ip).modifiers.has('A') {
            return None;
        }
        match AuthInfo::lookup(self.authinfo.as_ref()?, host, ip)? {
            Ok(info) => Some(info),
            Err(e) => {
                log.push(format!("AUTH=client, relay={host}, {e}"));
                None
            }
        }
    }

    /// The EHLO name for a connection from `local`: with `M=h` and a source `Addr` for that
    /// family, the hosts-file name of that address when it has a dot and is no literal
    /// (facts §1.8); else [`Settings::helo_name`].
    pub fn helo_for(&self, local: Option<IpAddr>) -> String {
        let Some(ip) = local else {
            return self.helo_name.clone();
        };
        let fam = self.client.for_ip(ip);
        if fam.modifiers.has('h')
            && fam.addr.is_some()
            && let Some(name) = self.hosts.name_of(ip)
            && name.contains('.')
            && !name.starts_with('[')
        {
            return name.to_string();
        }
        self.helo_name.clone()
    }
}

/// `$name` of the configuration (cf `D` line or built-in), else `fallback`.
fn macro_or(config: &Config, name: &str, fallback: &str) -> String {
    config
        .macro_value(name)
        .map(|v| v.into_owned())
        .unwrap_or_else(|| fallback.to_string())
}

/// The `authinfo` map of the configuration's `K` line, loaded.
fn authinfo_map(config: &Config) -> Option<Maps> {
    let def = config.maps.get(auth::MAP_NAME)?;
    let args = crate::config::macros::expand(&def.args, config);
    let mut maps = Maps::default();
    maps.maps.insert(
        auth::MAP_NAME.to_string(),
        Map::new(auth::MAP_NAME, &def.class, &args),
    );
    Some(maps)
}

fn local_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config.classes.get("w").cloned().unwrap_or_default();
    names.extend([
        macro_or(config, "j", &config.host.fqdn),
        macro_or(config, "w", &config.host.short),
        "localhost".to_string(),
    ]);
    let mut names: Vec<String> = names
        .into_iter()
        .filter(|n| !n.is_empty() && !n.starts_with('['))
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// One delivery to do.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub message: &'a Message,
    /// The pending recipients for this destination.
    pub recipients: &'a [Recipient],
    /// `$h`: `example.com`, `[mx.example.com]`, `[192.0.2.1]`, `[IPv6:…]`.
    pub host: &'a str,
    /// From the mailer's `A=TCP $h PORT` ([`route::mailer_port`]).
    pub port: u16,
    /// Told at once which recipients a host took ([`client::Accepted`]).
    pub on_accepted: Option<client::Accepted<'a>>,
}

/// The result of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// One per [`Request::recipients`], same order.
    pub outcomes: Vec<Outcome>,
    /// The `relay=` field: `mx.example.test. [127.0.0.2]`; `None` when no host was tried.
    pub relay: Option<String>,
    /// Lines for the mail log, in order (`makeconnection (…) failed: …`).
    pub log: Vec<String>,
    /// Lines sendmail writes without the queue id (`STARTTLS=client, …`, `AUTH=client,
    /// …`), in order.
    pub noqid_log: Vec<String>,
    /// The host that took the message offered DSN ([`client::SessionResult::peer_dsn`]).
    pub peer_dsn: bool,
    /// The host that took the message offered DELIVERBY (RFC 2852).
    pub peer_deliverby: bool,
    /// No host of the route could be connected to at all (every address refused, timed
    /// out or unreachable): the runner treats the destination as down for a while.
    pub unreachable: bool,
    /// The final dot's round trip on the host that answered
    /// ([`client::SessionResult::final_rtt`]).
    pub final_rtt: Option<std::time::Duration>,
}

impl Report {
    fn all(n: usize, outcome: Outcome, relay: Option<String>, log: Vec<String>) -> Report {
        Report {
            outcomes: vec![outcome; n],
            relay,
            log,
            noqid_log: Vec::new(),
            peer_dsn: false,
            peer_deliverby: false,
            unreachable: false,
            final_rtt: None,
        }
    }
}

/// Delivers `req`: DNS, routing, connection, SMTP. `rng` orders MX hosts of equal
/// preference.
pub async fn deliver<R: Rng + Send + ?Sized>(
    dns: &Dns,
    settings: &Settings,
    req: &Request<'_>,
    rng: &mut R,
) -> Report {
    fresh(dns, settings, req, rng, None).await
}

/// [`deliver`], over a session the cache holds for the hop when there is one (`RSET`
/// first), and leaving the session in the cache afterwards when it is still good. A cached
/// session that fails before any recipient is answered — the server closed it while it
/// waited, or refused the `RSET` — is dropped and the message goes over a new connection.
pub async fn deliver_cached<R: Rng + Send + ?Sized>(
    dns: &Dns,
    settings: &std::sync::Arc<Settings>,
    cache: &cache::Cache,
    req: &Request<'_>,
    rng: &mut R,
) -> Report {
    deliver_cached_with(dns, settings, cache, req, rng, None)
        .await
        .0
}

/// A session on which the next message's envelope went behind the last message's body
/// ([`client::Follow`]): it owes that envelope's replies and belongs to that message
/// ([`deliver_handed`]). Dropped, the connection closes (the server, in the middle of
/// that transaction, takes nothing from it).
pub struct Handed(cache::Cached);

/// [`deliver_cached`]; over a cached session, `follow` may send the next message's
/// envelope behind this message's body, and the session then comes back as [`Handed`]
/// (when it is still good) instead of going to the cache. New connections carry one
/// message as before.
pub async fn deliver_cached_with<R: Rng + Send + ?Sized>(
    dns: &Dns,
    settings: &std::sync::Arc<Settings>,
    cache: &cache::Cache,
    req: &Request<'_>,
    rng: &mut R,
    mut follow: Option<&mut dyn client::Follow>,
) -> (Report, Option<Handed>) {
    while let Some(mut cached) = cache.take(req.host, req.port, settings) {
        let job = cached_job(req, settings);
        let t = &settings.timeouts;
        let (result, reusable, led) = (cached.session)
            .transaction_with(&job, t, reborrow(&mut follow))
            .await;
        if result.try_next_host {
            // Gone stale while it waited: try the next cached one, then a new connection.
            continue;
        }
        return settle(cache, req, cached, result, reusable, led).await;
    }
    let report = fresh(dns, settings, req, rng, Some((cache, settings))).await;
    (report, None)
}

/// The delivery of `req` over the session handed to it, whose envelope was sent already
/// ([`Handed`]); the same as [`deliver_cached_with`] from there. A session that fails
/// before answering any recipient (the connection broke under the previous message) is
/// given up and the message takes [`deliver_cached_with`]'s way.
pub async fn deliver_handed<R: Rng + Send + ?Sized>(
    dns: &Dns,
    settings: &std::sync::Arc<Settings>,
    cache: &cache::Cache,
    handed: Handed,
    req: &Request<'_>,
    rng: &mut R,
    mut follow: Option<&mut dyn client::Follow>,
) -> (Report, Option<Handed>) {
    let mut cached = handed.0;
    let job = cached_job(req, settings);
    // The session's own generation's waits (a copy: the session is borrowed next).
    let t = cached.settings().timeouts;
    let (result, reusable, led) = (cached.session)
        .transaction_pending(&job, &t, reborrow(&mut follow))
        .await;
    if result.try_next_host {
        drop(cached);
        return deliver_cached_with(dns, settings, cache, req, rng, follow).await;
    }
    settle(cache, req, cached, result, reusable, led).await
}

/// What a cached (or handed) session's transaction comes to: the report, and the session
/// handed on, put back in the cache, or closed.
async fn settle(
    cache: &cache::Cache,
    req: &Request<'_>,
    cached: cache::Cached,
    result: SessionResult,
    reusable: bool,
    led: bool,
) -> (Report, Option<Handed>) {
    let report = Report {
        peer_dsn: result.peer_dsn,
        peer_deliverby: result.peer_deliverby,
        outcomes: result.outcomes,
        relay: Some(cached.relay.clone()),
        log: Vec::new(),
        noqid_log: result.log,
        unreachable: false,
        final_rtt: result.final_rtt,
    };
    let settings = cached.settings().clone();
    let handed = match (reusable, led) {
        (true, true) => Some(Handed(cached)),
        // The next message's envelope went on a session that cannot take it: the
        // connection closes under it, and that message goes its own way.
        (false, true) => None,
        (true, false) => {
            let relay = cached.relay.clone();
            cache
                .put(req.host, req.port, &settings, cached.session, relay)
                .await;
            None
        }
        (false, false) => {
            cached.session.quit(&settings.timeouts).await;
            None
        }
    };
    (report, handed)
}

/// `follow` again for one more call (the trait object's lifetime shortened to the call's).
fn reborrow<'a>(
    follow: &'a mut Option<&mut dyn client::Follow>,
) -> Option<&'a mut dyn client::Follow> {
    match follow {
        Some(f) => Some(&mut **f),
        None => None,
    }
}

/// The job of `req` over a session that is open already.
fn cached_job<'a>(req: &Request<'a>, settings: &'a Settings) -> Job<'a> {
    Job {
        message: req.message,
        recipients: req.recipients,
        helo_name: &settings.helo_name,
        addr: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        tls: None,
        auth: None,
        log_level: settings.log_level,
        on_accepted: req.on_accepted,
    }
}

/// A delivery over new connections (DNS, routing, MX fallback); the session that took the
/// message goes into `cache` when one is given and the session is still good.
async fn fresh<R: Rng + Send + ?Sized>(
    dns: &Dns,
    settings: &Settings,
    req: &Request<'_>,
    rng: &mut R,
    cache: Option<(&cache::Cache, &std::sync::Arc<Settings>)>,
) -> Report {
    let n = req.recipients.len();
    let routes = match resolve(dns, settings, req.host, rng).await {
        Ok(routes) => routes,
        Err(outcome) => return Report::all(n, outcome, None, Vec::new()),
    };
    let mut failures: Vec<ConnectFailure> = Vec::new();
    let mut log = Vec::new();
    let mut noqid_log = Vec::new();
    let mut last_session: Option<(SessionResult, String)> = None;
    let mut start = 0;
    while start < routes.len() {
        let before = failures.len();
        let connected = connect::connect_routes(
            &routes,
            start,
            req.port,
            &settings.client,
            settings.connect_timeout,
            &mut failures,
        )
        .await;
        log.extend(failures[before..].iter().map(ConnectFailure::log_line));
        let Some(c) = connected else { break };
        let relay = format!("{} {}", c.host, bracketed(c.addr));
        let (route, addr, host) = (c.route, c.addr, c.host.clone());
        if let Some((cache, _)) = cache {
            cache.opened();
        }
        let keep = cache.map(|(cache, s)| (cache, s, &relay));
        let mut result = session(settings, req, c, true, &mut noqid_log, keep).await;
        if result.tls_failed
            && settings.tls.as_ref().is_some_and(|t| t.fallback_to_clear)
            && let Some(plain) = reconnect(settings, req, &host, addr, route, &mut log).await
        {
            if let Some((cache, _)) = cache {
                cache.opened();
            }
            result = session(settings, req, plain, false, &mut noqid_log, keep).await;
        }
        let next = result.try_next_host;
        last_session = Some((result, relay));
        if !next {
            break;
        }
        start = route + 1;
    }
    match last_session {
        Some((result, relay)) => Report {
            peer_dsn: result.peer_dsn,
            peer_deliverby: result.peer_deliverby,
            outcomes: result.outcomes,
            relay: Some(relay),
            log,
            noqid_log,
            unreachable: false,
            final_rtt: result.final_rtt,
        },
        None => {
            let relay = failures
                .last()
                .map(|f| format!("{} {}", f.host, bracketed(f.addr)));
            let unreachable = !failures.is_empty();
            let outcome = AllFailed { failures }.outcome();
            Report {
                unreachable,
                ..Report::all(n, outcome, relay, log)
            }
        }
    }
}

/// One SMTP session over a fresh connection, with STARTTLS (when `tls` and allowed) and
/// AUTH as the settings say; its log lines go to `noqid_log`. With `keep`, a session that
/// is still good afterwards goes into that cache (for `$h` and port) instead of `QUIT`.
async fn session(
    settings: &Settings,
    req: &Request<'_>,
    c: Connected,
    tls: bool,
    noqid_log: &mut Vec<String>,
    keep: Option<(&cache::Cache, &std::sync::Arc<Settings>, &String)>,
) -> SessionResult {
    let helo = settings.helo_for(c.local.map(|a| a.ip()));
    let auth = settings.auth_for(&c.host, c.addr, noqid_log);
    let job = Job {
        message: req.message,
        recipients: req.recipients,
        helo_name: &helo,
        addr: c.addr,
        tls: settings.tls_for(c.addr).filter(|_| tls),
        auth: auth.as_ref(),
        log_level: settings.log_level,
        on_accepted: req.on_accepted,
    };
    let result = match client::start(c.stream, &c.host, &job, &settings.timeouts).await {
        Err(result) => result,
        Ok(mut session) => {
            if let Some((cache, _, _)) = keep {
                cache.saw(req.host, req.port, session.capabilities());
            }
            let (result, reusable) = session.transaction(&job, &settings.timeouts).await;
            match keep {
                Some((cache, s, relay)) if reusable && s.cache_size > 0 => {
                    cache
                        .put(req.host, req.port, s, session, relay.clone())
                        .await
                }
                _ => session.quit(&settings.timeouts).await,
            }
            result
        }
    };
    noqid_log.extend(result.log.iter().cloned());
    result
}

/// `TLSFallbacktoClear`: the same address again, at once (the failure is logged).
async fn reconnect(
    settings: &Settings,
    req: &Request<'_>,
    host: &str,
    addr: IpAddr,
    route: usize,
    log: &mut Vec<String>,
) -> Option<Connected> {
    let sa = SocketAddr::new(addr, req.port);
    let opts = settings.client.for_ip(addr);
    match connect::connect_addr(sa, opts, settings.connect_timeout).await {
        Ok(stream) => Some(Connected {
            local: stream.local_addr().ok(),
            stream,
            route,
            host: host.to_string(),
            addr,
        }),
        Err(error) => {
            let failure = ConnectFailure {
                host: host.to_string(),
                addr,
                port: req.port,
                error,
            };
            log.push(failure.log_line());
            None
        }
    }
}

/// `$h` → the routes to try, or the outcome that ends the delivery now.
async fn resolve<R: Rng + Send + ?Sized>(
    dns: &Dns,
    settings: &Settings,
    host: &str,
    rng: &mut R,
) -> Result<Vec<Route>, Outcome> {
    let target = Target::parse(host).map_err(|e| Outcome::Permanent {
        dsn: "5.1.2".to_string(),
        text: format!("Host unknown ({e})"),
    })?;
    let (domain, hops) = match &target {
        Target::Mx(domain) => {
            let answer = dns.mx(domain).await;
            let hops = route::mx_hops(domain, &answer, rng)?;
            (
                domain.clone(),
                route::drop_self(hops, &settings.local_names)?,
            )
        }
        other => {
            let hop = route::direct_hop(other).into_iter().collect::<Vec<Hop>>();
            (host.trim_matches(['[', ']']).to_string(), hop)
        }
    };
    let mut resolved = Vec::with_capacity(hops.len());
    for hop in hops {
        let answer = match &hop.host {
            HopHost::Literal(ip) => Answer::Found(vec![*ip]),
            HopHost::Name(name) => {
                let (v6, v4) = tokio::join!(dns.aaaa(name), dns.a(name));
                route::host_addresses(&v6, &v4, settings.family)
            }
        };
        resolved.push((hop, answer));
    }
    route::usable_routes(&domain, resolved)
}

#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
