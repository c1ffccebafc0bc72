//! The runtime context: what one configuration generation gives the sessions and the queue
//! runner, and what every part of a running process shares.
//!
//! In: an [`Invocation`] and its loaded [`Config`]. Out: a [`Current`] (the configuration
//! with its policy, ruleset engine, help text and credentials; swapped whole on SIGHUP while
//! a session keeps the one it started with) and a [`Shared`] (the current generation, the
//! log, queue ids, the hosts file, the statistics, the queue store and, under `RunAsUser`,
//! the root local-delivery agent as a [`LocalAgent`]). [`load_config`] and [`make_logger`]
//! are the start-up steps every mode uses (daemon, `-q`, command-line submission).
//!
//! This module sits below everything that serves mail (inbound sessions, the queue runner,
//! submission, privilege separation, the daemon) and names none of them.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::cli::Invocation;
use crate::config::{self, Config};
use crate::credentials::Credentials;
use crate::deliver::{LocalAgent, dsn, remote};
use crate::hosts::Hosts;
use crate::log::{LogConfig, Logger};
use crate::policy::{BuiltinPolicy, KnownUsers, RulesPolicy};
use crate::queue::Store;
use crate::queue::id::QueueIdGen;
use crate::rules::handle::Handle;
use crate::rules::rewrite::Engine;
use crate::smtp::session::{HelpText, Policy, Privacy};
use crate::stats::Stats;
use crate::sysexits::EX_CONFIG;

/// What one configuration gives the sessions; swapped whole on SIGHUP, while a session keeps
/// the one it started with.
pub struct Current {
    pub config: Arc<Config>,
    pub policy: Arc<dyn Policy>,
    /// The cf's ruleset engine, when it has `check_*` rulesets (mailer choice and rewriting
    /// at delivery).
    pub rules: Option<Arc<Handle>>,
    /// The SMTP checks on that engine (`check_relay` at connect; the policy holds it too).
    pub rules_policy: Option<Arc<RulesPolicy>>,
    pub help: Option<Arc<HelpText>>,
    /// The mail filters (`X` lines, `InputMailFilters`, `Milter.*`).
    pub milters: Arc<crate::milter::MilterConfig>,
    /// The TLS certificate and AUTH passwords (none for command-line modes).
    pub credentials: Credentials,
    /// Remote delivery's settings (HELO name, typed `ClientPortOptions`, timeouts, the TLS
    /// roots, the hosts file, `authinfo`), read once for this generation.
    pub remote: Arc<remote::Settings>,
    /// The notices' settings (`Timeout.queuewarn`/`queuereturn`, postmaster, `$j`).
    pub dsn: Arc<dsn::Settings>,
    /// `PrivacyOptions`, as the SMTP server applies them.
    pub privacy: Privacy,
    /// The local delivery agent of this generation (mailbox settings, the `local` mailer's
    /// program, the rules), built once here rather than per delivery; it also holds the
    /// mailboxes' group commits ([`crate::deliver::local::batch`]), which only batch what
    /// shares one agent.
    pub local: Arc<crate::deliver::local::LocalDelivery>,
}

/// Why a configuration cannot become a running generation (the settings derived from it
/// once, at load or SIGHUP, failed).
#[derive(Debug, thiserror::Error)]
pub enum CurrentError {
    /// `ClientPortOptions` does not parse.
    #[error("ClientPortOptions: {0}")]
    ClientPortOptions(String),
    /// An `X` line, `InputMailFilters` or a `Milter.` option that sendmail refuses too
    /// (sendmail exits EX_CONFIG: mail must not pass unfiltered because a filter's
    /// definition is broken).
    #[error("{}", .0.iter().map(|e| format!("SYSERR: {e}")).collect::<Vec<_>>().join("; "))]
    Milter(Vec<crate::milter::config::MilterConfigError>),
}

impl Current {
    /// The configuration with its policy: the cf's rulesets when it has `check_*` rulesets,
    /// else the built-in relay rules, and the settings derived from it. Problems building the
    /// ruleset engine are returned as warnings (the built-in rules then apply); a derived
    /// setting that cannot be built is an error, so the configuration is refused at start-up
    /// or SIGHUP rather than failing every message later.
    pub fn new(config: Config) -> Result<(Current, Vec<String>), CurrentError> {
        Current::with_logger(config, None)
    }

    /// Whether the settings derived from `config` can be built (what [`Current::new`] would
    /// refuse), without building them: for start-up, before any socket is opened.
    pub fn check(config: &Config) -> Result<(), CurrentError> {
        remote::connect::ClientOptions::parse(&config.options.client_port_options)
            .map_err(|e| CurrentError::ClientPortOptions(e.to_string()))?;
        crate::milter::MilterConfig::from_config(config).map_err(CurrentError::Milter)?;
        Ok(())
    }

    /// [`Current::new`], with the logger that policy alerts (low disk space) go to.
    pub fn with_logger(
        config: Config,
        logger: Option<Logger>,
    ) -> Result<(Current, Vec<String>), CurrentError> {
        let mut warnings = Vec::new();
        let remote = remote::Settings::from_config(&config)
            .map_err(|e| CurrentError::ClientPortOptions(e.to_string()))?;
        let dsn = dsn::Settings::from_config(&config);
        let privacy = Privacy::parse(&config.options.privacy_options.join(","));
        let rules = rules_engine(&config, &mut warnings).map(|(mut e, m)| {
            // sendmail's syserr (a missing map file) goes to the mail log too.
            e.syserr_log = logger.clone().map(|l| (l, real_user_name(&config)));
            Arc::new(Handle::new(e, &m))
        });
        let rules_policy = rules.clone().map(|h| Arc::new(RulesPolicy::new(h)));
        let relay: Arc<dyn Policy> = match &rules_policy {
            Some(r) => r.clone(),
            None => Arc::new(BuiltinPolicy::from_config(&config)),
        };
        let help = config
            .options
            .help_file
            .as_deref()
            .and_then(|p| HelpText::load(p).ok())
            .map(Arc::new);
        let aliases = match crate::aliases::load_all(&config.options.alias_files) {
            Ok(t) => t,
            Err(e) => {
                warnings.push(format!("aliases: {e}"));
                crate::aliases::AliasTable::default()
            }
        };
        let milters =
            crate::milter::MilterConfig::from_config(&config).map_err(CurrentError::Milter)?;
        let mut local = crate::deliver::local::LocalDelivery::from_config(&config);
        local.rules = rules.clone();
        let config = Arc::new(config);
        let policy: Arc<dyn Policy> = Arc::new(KnownUsers {
            inner: relay,
            rules: rules.clone(),
            config: config.clone(),
            aliases: crate::aliases::LiveAliases::new(&config.options.alias_files, aliases),
            logger,
        });
        Ok((
            Current {
                config,
                policy,
                rules,
                rules_policy,
                help,
                milters: Arc::new(milters),
                credentials: Credentials::default(),
                remote: Arc::new(remote),
                dsn: Arc::new(dsn),
                privacy,
                local: Arc::new(local),
            },
            warnings,
        ))
    }
}

/// The ruleset engine for a cf with `check_relay`/`check_mail`/`check_rcpt` rulesets, built
/// from the configuration already read (so the rulesets and the options are of one
/// generation: the file is not read again).
/// sendmail's `RealUserName` in `SYSERR(user)`: who started the daemon (root, when it has
/// since become `RunAsUser`).
fn real_user_name(config: &Config) -> String {
    let uid = nix::unistd::getuid();
    if config.options.run_as_user.is_some() && !uid.is_root() {
        return "root".into();
    }
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

fn rules_engine(
    config: &Config,
    warnings: &mut Vec<String>,
) -> Option<(Engine, Vec<crate::config::Mailer>)> {
    let has_checks = ["check_relay", "check_mail", "check_rcpt"]
        .iter()
        .any(|n| config.ruleset_names.contains_key(*n));
    if !has_checks {
        return None;
    }
    let (engine, extras, errors) =
        crate::rules::cf::from_config(config, &crate::rules::cf::HostInfo::current());
    warnings.extend(errors.into_iter().map(|e| format!("rulesets: {e}")));
    Some((engine, extras.mailers))
}

/// What every session shares.
pub struct Shared {
    /// The running configuration generation (replaced on SIGHUP: [`Shared::set_current`]).
    current: RwLock<Arc<Current>>,
    pub logger: Logger,
    pub qids: Arc<QueueIdGen>,
    pub hosts: RwLock<Arc<Hosts>>,
    /// `StatusFile` counters (None when the option is not set).
    pub stats: Option<Stats>,
    /// The mail queue (`QueueDirectory`).
    pub queue: Store,
    /// Under `RunAsUser`: the root process that does local delivery ([`crate::privsep`]).
    pub local_agent: Option<Arc<dyn LocalAgent>>,
    /// AUTH failures per client address, across connections (kept over SIGHUP).
    pub auth_limit: Arc<crate::auth::limit::AuthLimit>,
    /// Open connections and arrivals per client address (`${client_connections}`,
    /// `${client_rate}`).
    pub clients: Arc<crate::conncontrol::ClientCounts>,
    /// Where ETRN asks the daemon's queue runner for a run (set once the runner runs).
    pub queue_runs: std::sync::OnceLock<QueueRunHook>,
}

/// ETRN's way to the queue runner: asks for a run of the messages with a recipient
/// containing the text (as `-qR` selects them); whether the runner took the request.
pub type QueueRunHook = Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl Shared {
    /// What a process that owns the queue shares (the daemon, or `sendmail -q` alone).
    pub fn new(current: Current, logger: Logger, queue: Store, stats: Option<Stats>) -> Shared {
        let hosts = Hosts::load(&current.config.options.hosts_file);
        Shared {
            current: RwLock::new(Arc::new(current)),
            logger,
            qids: Arc::new(QueueIdGen::new()),
            hosts: RwLock::new(Arc::new(hosts)),
            stats,
            queue,
            local_agent: None,
            auth_limit: Arc::default(),
            clients: Arc::default(),
            queue_runs: std::sync::OnceLock::new(),
        }
    }

    pub fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `current` the running generation; sessions already started keep theirs.
    pub fn set_current(&self, current: Current) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(current);
    }

    pub fn config(&self) -> Arc<Config> {
        self.current().config.clone()
    }

    pub fn hosts(&self) -> Arc<Hosts> {
        self.hosts.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Loads the configuration, printing every error to stderr.
pub fn load_config(inv: &Invocation) -> Result<Config, i32> {
    match config::load(&inv.source, &inv.overrides) {
        Ok(c) => match Current::check(&c) {
            Ok(()) => Ok(c),
            Err(e) => {
                eprintln!("{e}");
                eprintln!("sendmail: 1 configuration error(s); not started");
                Err(EX_CONFIG)
            }
        },
        Err(errors) => {
            if let [config::ConfigError::Io { file, source }] = errors.as_slice() {
                return Err(cannot_open(inv, file, source));
            }
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "sendmail: {} configuration error(s); not started",
                errors.len()
            );
            Err(EX_CONFIG)
        }
    }
}

/// A configuration file that cannot be opened at all, as sendmail's readcf() reports it: `FILE:
/// line 0: cannot open: REASON` on the terminal and as `SYSERR(user)` in the log (there is no
/// configuration yet, so the log is syslog with sendmail's defaults), exit `EX_OSFILE` (72).
fn cannot_open(inv: &Invocation, file: &std::path::Path, e: &std::io::Error) -> i32 {
    let text = format!(
        "{}: line 0: cannot open: {}",
        file.display(),
        crate::log::open_error_text(e)
    );
    eprintln!("{text}");
    let mut log = LogConfig::default();
    if let Some(tag) = &inv.args.log_tag {
        log.ident = tag.clone();
    }
    if let Ok(logger) = Logger::new(log) {
        let user = crate::log::real_user_name().unwrap_or_else(|| "root".to_string());
        logger.log(
            crate::log::Severity::Crit,
            Some("NOQUEUE"),
            format_args!("SYSERR({user}): {text}"),
        );
    }
    crate::sysexits::EX_OSFILE
}

/// The mail log for this configuration: syslog (from the moment `/dev/log` exists), `LogFile`
/// when set, and stderr for `-bD` when neither is there at the start.
pub fn make_logger(cfg: &Config, inv: &Invocation, foreground: bool) -> std::io::Result<Logger> {
    let syslog_path = PathBuf::from(crate::log::DEFAULT_SYSLOG_PATH);
    // Always on: a missing socket is looked for again (at most once a second), so a syslogd
    // started after sendmail still gets the lines.
    let syslog_exists = syslog_path.exists();
    let file = cfg
        .options
        .log_file
        .as_ref()
        .map(|t| PathBuf::from(t.expand(cfg)));
    Logger::new(LogConfig {
        ident: inv
            .args
            .log_tag
            .clone()
            .unwrap_or_else(|| "sendmail".to_string()),
        level: cfg.options.log_level,
        syslog: true,
        stderr: foreground && !syslog_exists && file.is_none(),
        file,
        syslog_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rulesets come from the configuration handed in, never from reading a file again:
    /// a configuration parsed from text (no file anywhere, and the embedded default has
    /// rulesets of its own) gives an engine with exactly its rulesets.
    #[test]
    fn the_rules_engine_is_built_from_the_config_given() {
        let cf = "V10/Berkeley\nDjmta.example.test\nScheck_rcpt\nR$*\t$@ OK\nSparse=0\nR$*\t$#local $: generation-X\nMlocal, P=/bin/true, F=lsDFM, A=true $u\n";
        let cfg = Config::from_str("generation-x.cf", cf, &[]).unwrap();
        let (current, warnings) = Current::new(cfg).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let rules = current.rules.expect("the cf has check_rcpt");
        let (mailer, _, user) = rules.resolve("someone@example.test").unwrap();
        assert_eq!((mailer.as_str(), user.as_str()), ("local", "generation-x"));
    }
}
