//! One accepted connection, from socket to the end of its SMTP session.
//!
//! In: an accepted stream, the peer's address, the daemon it came in on, and the daemon's
//! shared state. Out: nothing but effects — the mail log's `connect from` line, the session
//! served by [`crate::smtp::conn::serve`], and the per-daemon counters for `mailstats`.
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
    let relay_reject = current
        .rules_policy
        .as_ref()
        .and_then(|r| r.check_relay(&client, daemon.modifiers.as_str()));
    let macros = connection_macros(&daemon, &client);
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
    if let Some((reply, log)) = relay_reject {
        shared
            .logger
            .log(Severity::Notice, None, format_args!("{log}"));
        ctx.connect_reject = Some(reply);
    }
    let opts = ConnOptions {
        tls: current.credentials.tls.clone(),
        implicit_tls: daemon.modifiers.has('s'),
        ..conn_options(&current.config)
    };
    let mut sink = QueueSink::new(
        Destination::Store(shared.queue.clone()),
        current.config.clone(),
        shared.logger.clone(),
    );
    let outcome = conn::serve(
        stream,
        Session::new(ctx),
        &mut sink,
        &shared.logger,
        &opts,
        guard.recv(),
    )
    .await;
    if let Some(c) = &counters {
        for _ in 0..outcome.stats.messages {
            c.message(outcome.stats.bytes / u64::from(outcome.stats.messages.max(1)));
        }
        for _ in 0..outcome.stats.rejected_rcpts {
            c.reject();
        }
    }
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

/// The per-connection macros sendmail defines for a daemon connection.
fn connection_macros(daemon: &DaemonPortOptions, client: &ClientInfo) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("_".to_string(), client.display());
    if let Some(ip) = client.ip {
        m.insert("client_addr".into(), crate::dns::format_ip(ip));
        m.insert("client_port".into(), client.port.to_string());
    }
    m.insert(
        "client_name".into(),
        client.name.clone().unwrap_or_else(|| client.display()),
    );
    m.insert(
        "client_resolve".into(),
        if client.name.is_some() { "OK" } else { "FAIL" }.into(),
    );
    m.insert("daemon_name".into(), daemon.name.clone());
    m.insert("daemon_family".into(), daemon.family.as_str().into());
    m.insert("daemon_flags".into(), daemon.modifiers.daemon_flags());
    m.insert("daemon_port".into(), daemon.port.to_string());
    m
}

/// The ESMTP extensions offered, the same for daemon connections and `-bs` (sendmail's
/// `-bs` offers what its daemon offers, samples/42): DSN parameters are kept with each
/// queued message (RET, ENVID, NOTIFY, ORCPT); EXPN (and with it VERB) is answered from the
/// aliases and the passwd file; CHUNKING always; SMTPUTF8 with the `SmtpUTF8` option. DSN
/// only with `SendMimeErrors` (its default is true; sendmail 8.17.1.9 with
/// `O SendMimeErrors=False` lists no DSN and answers RET/ENVID/NOTIFY/ORCPT with
/// `504 5.7.0 Sorry, RET not supported, we do not allow DSN`).
pub fn server_features(cfg: &Config) -> Features {
    Features {
        dsn: cfg.options.send_mime_errors,
        expn: true,
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
