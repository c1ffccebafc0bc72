//! One accepted connection, from socket to the end of its SMTP session.
//!
//! In: an accepted stream, the peer's address, the daemon it came in on, and the daemon's
//! shared state. Out: nothing but effects — the mail log's `connect from` line, the session
//! served by [`crate::smtp::conn::serve`], and the per-daemon counters for `mailstats` and
//! for the metrics listener ([`crate::metrics`], counted as they happen by the connection
//! driver).
//!
//! This is where the configuration meets the session: the client is named (hosts file), the
//! per-connection macros (`$_`, `${client_addr}`, `${daemon_name}`, …) are set, the greeting is
//! expanded from `SmtpGreetingMessage`, and the limits and timeouts are taken from the options.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::limit::AuthLimit;
use crate::auth::{Authenticator, Mechanism, Offloaded};
use crate::config::Config;
use crate::config::daemon_options::DaemonPortOptions;
use crate::config::macros::{Layered, expand};
use crate::listener::Peer;
use crate::log::Severity;
use crate::queue::id::QueueIdGen;
use crate::receive::{Destination, QueueSink};
use crate::runtime::{Current, Shared};
use crate::shutdown::SessionGuard;
use crate::smtp::conn::{self, ConnOptions, Timeouts};
use crate::smtp::session::{ClientInfo, Features, Security, Session, SessionContext};

/// Serves one client to the end of its session.
pub async fn serve_client<S>(
    stream: S,
    peer: Peer,
    daemon: Arc<DaemonPortOptions>,
    shared: Arc<Shared>,
    mut guard: SessionGuard,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let current = shared.current();
    let client = client_info(peer, &shared);
    if shared.logger.enabled(9) {
        shared.logger.log(
            Severity::Info,
            Some("NOQUEUE"),
            format_args!("connect from {}", client.display()),
        );
    }
    let counters = shared.stats.as_ref().map(|s| s.daemon(&daemon.name));
    if let Some(c) = &counters {
        c.connection();
    }
    // Counted until this function returns (`${client_connections}`, `${client_rate}`).
    let counted = client.ip.map(|ip| {
        shared.clients.connect(
            ip,
            current.config.options.connection_rate_window_size,
            std::time::Instant::now(),
        )
    });
    let mut macros = connection_macros(&daemon, &client, &shared);
    if let Some((_, n)) = &counted {
        macros.insert("client_connections".into(), n.connections.to_string());
        macros.insert("client_rate".into(), n.rate.to_string());
    }
    let live = crate::metrics::global().daemon(&daemon.name);
    let _open = live.session();
    let relay_reject = current
        .rules_policy
        .as_ref()
        .and_then(|r| r.check_relay(&client, &macros));
    // FEATURE(greet_pause): not for a client check_relay already refused.
    let greet_pause = match (&relay_reject, &current.rules_policy) {
        (None, Some(r)) => r.greet_pause(&client, &macros),
        _ => None,
    };
    let origin = Origin {
        daemon_name: daemon.name.clone(),
        daemon_flags: daemon.modifiers.as_str().to_string(),
        macros: &macros,
        features: server_features(&current.config),
        ids: shared.qids.clone(),
        auth_limit: Some(shared.auth_limit.clone()),
    };
    // check_relay may still make this a "nullserver" session (below).
    let mut ctx = session_context(&current, client, origin);
    if let Some(runs) = shared.queue_runs.get() {
        offer_etrn(&mut ctx, runs.clone());
    }
    if let Some((reply, log)) = relay_reject {
        shared
            .logger
            .log(Severity::Notice, None, format_args!("{log}"));
        ctx.connect_reject = Some(reply);
    }
    let opts = ConnOptions {
        tls: current.credentials.tls.clone(),
        implicit_tls: daemon.modifiers.has('s'),
        greet_pause,
        live: Some(live.clone()),
        ..conn_options(&current.config)
    };
    let sink = QueueSink::new(
        Destination::Store(shared.queue.clone()),
        current.config.clone(),
        shared.logger.clone(),
    )
    .with_rules(current.rules.clone());
    let mut session = Session::new(ctx);
    let filters = current.milters.for_daemon(&daemon.name);
    let outcome = if filters.is_empty() {
        // sendmail (built with MILTER, as Debian's) says so for every session (milter_init).
        if current.milters.log_level > 10 {
            shared.logger.log(
                Severity::Info,
                Some("NOQUEUE"),
                format_args!("Milter: no active filter"),
            );
        }
        let mut sink = sink;
        conn::serve(
            stream,
            session,
            &mut sink,
            &shared.logger,
            &opts,
            guard.recv(),
        )
        .await
    } else {
        session.enable_filters();
        let peer = milter_peer(
            &session.context().client,
            &session.context().hostname,
            macros,
        );
        let mut sink = milter_sink(&current, filters, peer, sink, &shared.logger);
        // Boxed (and made inside `Box::pin`, not moved into it: a moved future's place
        // stays in the enclosing one): inline, this branch's session future made every
        // session's task 17 KB instead of 9, filters or not (`bench/idle.py`: 27.3 → 19.2
        // KiB per idle session).
        Box::pin(conn::serve(
            stream,
            session,
            &mut sink,
            &shared.logger,
            &opts,
            guard.recv(),
        ))
        .await
    };
    if let Some(c) = &counters {
        for _ in 0..outcome.stats.messages {
            c.message(outcome.stats.bytes / u64::from(outcome.stats.messages.max(1)));
        }
        for _ in 0..outcome.stats.rejected_rcpts {
            c.reject();
        }
    }
}

/// How the filters are told of the client: `{client_name}` (else `localhost`), the address
/// family (`4` for IPv4 and IPv4-mapped, `6`, `U` without an address), and the macros of the
/// connection with `$j`.
pub fn milter_peer(
    client: &ClientInfo,
    hostname: &str,
    mut macros: BTreeMap<String, String>,
) -> crate::milter::hook::Peer {
    use crate::milter::proto::Family;
    let family = match client.ip {
        Some(IpAddr::V4(v4)) => Family::Inet(client.port, v4.to_string()),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => Family::Inet(client.port, v4.to_string()),
            None => Family::Inet6(client.port, v6.to_string()),
        },
        None => Family::Unknown,
    };
    macros.insert("j".into(), hostname.to_string());
    crate::milter::hook::Peer {
        name: client.name.clone().unwrap_or_else(|| match client.ip {
            Some(ip) => format!("[{}]", crate::dns::format_ip(ip)),
            None => "localhost".to_string(),
        }),
        family,
        macros,
    }
}

/// `sink` behind the filters `list`, with the cf's rulesets resolving `{mail_*}`/`{rcpt_*}`.
pub fn milter_sink<K>(
    current: &Current,
    list: &[Arc<crate::milter::config::FilterDef>],
    peer: crate::milter::hook::Peer,
    sink: K,
    logger: &crate::log::Logger,
) -> crate::milter::hook::FilteredSink<K> {
    let engine = crate::milter::engine::Engine::new(current.milters.clone(), list, logger.clone());
    let resolver: Option<crate::milter::hook::Resolver> = current
        .rules
        .clone()
        .map(|r| Arc::new(move |addr: &str| r.resolve(addr).ok()) as crate::milter::hook::Resolver);
    crate::milter::hook::FilteredSink::new(
        sink,
        engine,
        peer,
        resolver,
        logger.clone(),
        current.milters.log_level,
    )
}

/// The client as sendmail names it: the address (IPv4-mapped shown as IPv4) and the name the
/// hosts file gives it.
fn client_info(peer: Peer, shared: &Shared) -> ClientInfo {
    match peer {
        Peer::Tcp(addr) => {
            let ip: IpAddr = addr.ip().to_canonical();
            ClientInfo {
                ip: Some(ip),
                port: addr.port(),
                name: shared.hosts().name_of(ip).map(String::from),
            }
        }
        Peer::Local => ClientInfo {
            ip: None,
            port: 0,
            name: Some("localhost".to_string()),
        },
    }
}

/// The per-connection macros sendmail defines for a daemon connection (observed values:
/// [`crate::rules::smtp_macros`]).
fn connection_macros(
    daemon: &DaemonPortOptions,
    client: &ClientInfo,
    shared: &Shared,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("_".to_string(), client.display());
    if let Some(ip) = client.ip {
        m.insert("client_addr".into(), crate::dns::format_ip(ip));
        m.insert("client_port".into(), client.port.to_string());
    }
    let name = client.name.clone().unwrap_or_else(|| client.display());
    m.insert("client_name".into(), name.clone());
    m.insert("client_ptr".into(), name);
    m.insert(
        "client_resolve".into(),
        if client.name.is_some() { "OK" } else { "FAIL" }.into(),
    );
    m.insert("daemon_name".into(), daemon.name.clone());
    m.insert("daemon_family".into(), daemon.family.as_str().into());
    m.insert("daemon_flags".into(), daemon.modifiers.daemon_flags());
    m.insert("daemon_port".into(), daemon.port.to_string());
    if let crate::config::daemon_options::Addr::Ip { ip, .. } = daemon.addr {
        m.insert("daemon_addr".into(), crate::dns::format_ip(ip));
        // `{if_name}`: the name of the address the client reached (`localhost` for
        // 127.0.0.1); `{if_addr}` that address, left undefined for a loopback one, as
        // sendmail does.
        if let Some(n) = shared.hosts().name_of(ip) {
            m.insert("if_name".into(), n.to_string());
        }
        if !ip.is_loopback() {
            m.insert("if_addr".into(), crate::dns::format_ip(ip));
        }
    }
    m
}

/// The ESMTP extensions offered, the same for daemon connections and `-bs` (sendmail's
/// `-bs` offers what its daemon offers, samples/42): DSN parameters are kept with each
/// queued message (RET, ENVID, NOTIFY, ORCPT); EXPN (and with it VERB) is answered from the
/// aliases and the passwd file; DELIVERBY unless `DeliverByMin` is below 0 (sendmail's
/// default 0 offers it, so Debian's daemon lists `DELIVERBY`); CHUNKING only with our
/// `Chunking` option (sendmail 8.17 has none, and a drop-in answers EHLO as it does);
/// SMTPUTF8 with the `SmtpUTF8` option. DSN only with `SendMimeErrors` (its default is
/// true; sendmail 8.17.1.9 with `O SendMimeErrors=False` lists no DSN and answers
/// RET/ENVID/NOTIFY/ORCPT with `504 5.7.0 Sorry, RET not supported, we do not allow DSN`).
pub fn server_features(cfg: &Config) -> Features {
    Features {
        dsn: cfg.options.send_mime_errors,
        expn: true,
        deliverby: cfg.options.deliver_by_min >= 0,
        deliver_by_min: cfg.options.deliver_by_min,
        chunking: cfg.options.chunking,
        smtputf8: cfg.options.smtp_utf8,
        ..Features::default()
    }
}

/// The driver's settings from the options: the server side of `Timeout.*` is
/// `Timeout.command` (the whole next command line must arrive within it) and
/// `Timeout.datablock` (DATA and BDAT: no input at all for that long), with `MinDataRate`
/// for the message as a whole; op §4.1.2 marks the
/// others as client timeouts, which `deliver::remote::client` applies.
pub fn conn_options(cfg: &Config) -> ConnOptions {
    ConnOptions {
        timeouts: Timeouts {
            command: cfg.options.timeouts.command,
            data_block: cfg.options.timeouts.datablock,
            min_data_rate: cfg.options.min_data_rate,
        },
        ..ConnOptions::default()
    }
}

/// What differs between a daemon connection and `sendmail -bs`.
pub struct Origin<'a> {
    pub daemon_name: String,
    /// `M=` letters of the daemon (`-bs`: DirectSubmissionModifiers).
    pub daemon_flags: String,
    /// The per-connection macros (`$_`, `${client_addr}` …).
    pub macros: &'a BTreeMap<String, String>,
    pub features: Features,
    pub ids: Arc<QueueIdGen>,
    /// The daemon's AUTH failures per client address (`None` for `-bs`).
    pub auth_limit: Option<Arc<AuthLimit>>,
}

/// The session's context from the running configuration: host name, greeting (expanded with
/// the connection's macros over the cf's), limits, privacy options, help text and policy.
pub fn session_context(
    current: &Current,
    client: ClientInfo,
    origin: Origin<'_>,
) -> SessionContext {
    let cfg: &Config = &current.config;
    let mut security = security(current, &client);
    security.failure_limit = origin.auth_limit;
    let lookup = Layered {
        top: origin.macros,
        base: cfg,
    };
    SessionContext {
        hostname: expand("$j", &lookup),
        greeting: cfg.options.smtp_greeting_message.expand(&lookup),
        daemon_name: origin.daemon_name,
        daemon_flags: origin.daemon_flags,
        client,
        max_message_size: cfg.options.max_message_size,
        max_headers_length: u64::from(cfg.options.max_headers_length),
        seven_bit_input: cfg.options.seven_bit_input,
        max_recipients: cfg.options.max_recipients_per_message,
        features: origin.features,
        privacy: current.privacy,
        log_level: cfg.options.log_level,
        version: expand("$v", cfg),
        help: current.help.clone(),
        connect_reject: None,
        policy: current.policy.clone(),
        ids: origin.ids,
        security,
        macros: Arc::new(origin.macros.clone()),
        bad_rcpt_throttle: cfg.options.bad_rcpt_throttle,
    }
}

/// What STARTTLS and AUTH offer this client: STARTTLS with a certificate; AUTH with a
/// password file, its plain-text mechanisms over TLS only unless the client is on loopback
/// and `AuthOptions` has no `p`.
fn security(current: &Current, client: &ClientInfo) -> Security {
    let o = &current.config.options;
    let creds = &current.credentials;
    let loopback = client.ip.is_some_and(|ip| ip.is_loopback());
    Security {
        starttls: creds.tls.is_some(),
        authenticator: match (&creds.passwords, &creds.saslauthd) {
            (Some(p), _) => Some(Arc::new(Offloaded(p.clone())) as Arc<dyn Authenticator>),
            (None, Some(s)) => Some(Arc::new(Offloaded(s.clone())) as Arc<dyn Authenticator>),
            (None, None) => None,
        },
        mechanisms: Mechanism::allowed(o.auth_mechanisms.as_deref())
            .into_iter()
            .filter(|m| {
                creds
                    .sasl_mech_list
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|n| n == m.name()))
            })
            .collect(),
        auth_needs_tls: !loopback || o.auth_options.iter().any(|w| w == "p"),
        failure_limit: None,
    }
}

/// Offers ETRN in a session whose queue runs `runs` starts (the daemon's runner; for
/// `sendmail -bs` a detached `sendmail -qR…`, as sendmail's `-bs` forks one).
pub fn offer_etrn(ctx: &mut SessionContext, runs: crate::runtime::QueueRunHook) {
    ctx.features.etrn = true;
    ctx.policy = Arc::new(EtrnRuns {
        inner: ctx.policy.clone(),
        runs,
    });
}

/// ETRN (RFC 1985) as sendmail 8.17 answers it, on a daemon whose queue runner takes
/// requests: `ETRN host` starts a run of the messages with a recipient at that host
/// (`-qR@host`), `ETRN @domain` of those with a recipient in that domain or below it
/// (`-qRdomain`), each answered `250 2.0.0 Queuing for node <node> started`; `ETRN #group`
/// names a queue group, and there are none here (`459 4.5.4 Queue <group> unknown`).
/// Everything else is the wrapped policy's.
struct EtrnRuns {
    inner: Arc<dyn crate::smtp::session::Policy>,
    runs: crate::runtime::QueueRunHook,
}

impl EtrnRuns {
    /// The recipient substring of the run ETRN `node` asks for.
    fn limit(node: &str) -> String {
        match node.strip_prefix('@') {
            Some(domain) => domain.to_string(),
            None => format!("@{node}"),
        }
    }
}

impl crate::smtp::session::Policy for EtrnRuns {
    fn check_mail(
        &self,
        ctx: &crate::smtp::session::PolicyContext<'_>,
        sender: &crate::smtp::command::Address,
        params: &crate::smtp::command::MailParams,
    ) -> crate::smtp::session::Decision {
        self.inner.check_mail(ctx, sender, params)
    }

    fn check_rcpt(
        &self,
        ctx: &crate::smtp::session::PolicyContext<'_>,
        rcpt: &crate::smtp::command::Address,
        params: &crate::smtp::command::RcptParams,
    ) -> crate::smtp::session::Decision {
        self.inner.check_rcpt(ctx, rcpt, params)
    }

    fn recipient_key(
        &self,
        ctx: &crate::smtp::session::PolicyContext<'_>,
        rcpt: &crate::smtp::command::Address,
    ) -> Option<String> {
        self.inner.recipient_key(ctx, rcpt)
    }

    fn vrfy(
        &self,
        ctx: &crate::smtp::session::PolicyContext<'_>,
        arg: &str,
    ) -> crate::smtp::reply::Reply {
        self.inner.vrfy(ctx, arg)
    }

    fn expn(
        &self,
        ctx: &crate::smtp::session::PolicyContext<'_>,
        arg: &str,
    ) -> crate::smtp::reply::Reply {
        self.inner.expn(ctx, arg)
    }

    fn etrn(
        &self,
        _ctx: &crate::smtp::session::PolicyContext<'_>,
        node: &str,
    ) -> crate::smtp::reply::Reply {
        use crate::smtp::reply;
        if let Some(group) = node.strip_prefix('#') {
            return reply::etrn_unknown_queue_group(group);
        }
        if (self.runs)(&EtrnRuns::limit(node)) {
            reply::etrn_started(node)
        } else {
            reply::etrn_not_started()
        }
    }
}

#[cfg(test)]
mod etrn_tests {
    use super::*;
    use crate::smtp::session::Policy;

    struct Nothing;
    impl Policy for Nothing {
        fn check_mail(
            &self,
            _: &crate::smtp::session::PolicyContext<'_>,
            _: &crate::smtp::command::Address,
            _: &crate::smtp::command::MailParams,
        ) -> crate::smtp::session::Decision {
            crate::smtp::session::Decision::Accept
        }
        fn check_rcpt(
            &self,
            _: &crate::smtp::session::PolicyContext<'_>,
            _: &crate::smtp::command::Address,
            _: &crate::smtp::command::RcptParams,
        ) -> crate::smtp::session::Decision {
            crate::smtp::session::Decision::Accept
        }
    }

    fn ctx_parts() -> (ClientInfo, BTreeMap<String, String>) {
        let client = ClientInfo {
            ip: Some("127.0.0.1".parse().unwrap()),
            port: 1,
            name: Some("localhost".into()),
        };
        (client, BTreeMap::new())
    }

    /// ETRN host and ETRN @domain ask the runner for the runs `-qR@host` and `-qRdomain`
    /// would make; `#group` is answered as sendmail does when the group does not exist.
    #[test]
    fn etrn_asks_the_runner_for_the_node() {
        let asked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = asked.clone();
        let p = EtrnRuns {
            inner: Arc::new(Nothing),
            runs: Arc::new(move |s: &str| {
                log.lock().unwrap().push(s.to_string());
                true
            }),
        };
        let (client, macros) = ctx_parts();
        let ctx = crate::smtp::session::PolicyContext {
            client: &client,
            helo: Some("h"),
            daemon_name: "MTA",
            daemon_flags: "",
            qid: "q",
            sender: None,
            auth: None,
            tls: None,
            macros: &macros,
            protocol: "ESMTP",
            nrcpts: 0,
            msg_size: None,
        };
        let r = p.etrn(&ctx, "remote.example.test");
        assert_eq!(r.code, 250, "{r:?}");
        p.etrn(&ctx, "@example.test");
        let r = p.etrn(&ctx, "#queuegroup");
        assert_eq!(
            (r.code, r.lines[0].as_str()),
            (459, "Queue queuegroup unknown")
        );
        assert_eq!(
            *asked.lock().unwrap(),
            ["@remote.example.test", "example.test"],
            "no run for an unknown queue group"
        );
    }
}
