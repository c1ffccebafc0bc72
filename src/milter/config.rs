//! The filters a sendmail.cf declares, read as sendmail 8.17 reads them.
//!
//! In: the [`Config`] (its `X` lines, `InputMailFilters`, `Milter.*` options and the
//! `DaemonPortOptions` `InputMailFilters=`). Out: a [`MilterConfig`] — each filter's socket,
//! failure rule (`F=R`, `F=T`, `F=4`, none) and timeouts (`T=C:5m;S:10s;R:10s;E:5m` by
//! default), the macro list per stage, `Milter.LogLevel` — and [`MilterConfig::for_daemon`], the
//! ordered list one daemon runs. Errors carry the cf line, in sendmail's words
//! (`milter_setup`, `milter_parse_timeouts`, `milter_config` in `sendmail/milter.c`; op.me
//! "X — Mail Filter (Milter) Definitions").

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::proto::{MDS_1M, MDS_64K, MDS_256K, Stage};
use crate::config::Config;
use crate::config::options::parse_duration;

/// Where a filter listens (`S=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSpec {
    /// `inet:port@host` (host: a name or an IPv4 address).
    Inet { port: u16, host: String },
    /// `inet6:port@host`.
    Inet6 { port: u16, host: String },
    /// `local:/path` (or `unix:/path`).
    Local(PathBuf),
}

impl std::fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SocketSpec::Inet { port, host } => write!(f, "inet:{port}@{host}"),
            SocketSpec::Inet6 { port, host } => write!(f, "inet6:{port}@{host}"),
            SocketSpec::Local(p) => write!(f, "local:{}", p.display()),
        }
    }
}

/// What a filter that fails (cannot be reached, times out, answers garbage) does to the
/// session (`F=`; sendmail's `MILTER_SET_STATE`: T before 4 before R).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// No flag: the mail goes on as if the filter were not there.
    Ignore,
    /// `F=R`: reject.
    Reject,
    /// `F=T`: temporary failure.
    Tempfail,
    /// `F=4`: 421 and close the connection.
    Shutdown,
}

/// The four timeouts of `T=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `C`: connecting (0: the system's own).
    pub connect: Duration,
    /// `S`: sending one packet.
    pub send: Duration,
    /// `R`: waiting for one reply.
    pub read: Duration,
    /// `E`: from end of message to the final reply.
    pub eom: Duration,
}

impl Default for Timeouts {
    /// op.me: `T=C:5m;S:10s;R:10s;E:5m`.
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(300),
            send: Duration::from_secs(10),
            read: Duration::from_secs(10),
            eom: Duration::from_secs(300),
        }
    }
}

/// One `X` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterDef {
    pub name: String,
    pub socket: SocketSpec,
    pub on_error: OnError,
    pub timeouts: Timeouts,
}

/// Everything about filters, ready for sessions.
#[derive(Debug, Clone, Default)]
pub struct MilterConfig {
    /// Every `X` line by name.
    pub defs: BTreeMap<String, Arc<FilterDef>>,
    /// `InputMailFilters`, resolved, in order.
    pub input: Vec<Arc<FilterDef>>,
    /// Per daemon `Name=`: its own list when it has `InputMailFilters=`.
    pub per_daemon: BTreeMap<String, Vec<Arc<FilterDef>>>,
    /// `Milter.macros.<stage>`, indexed by [`Stage`] (empty by default; m4 writes the lists).
    pub macros: [Vec<String>; 7],
    /// `Milter.LogLevel` (defaults to `LogLevel`).
    pub log_level: u32,
    /// `Milter.maxdatasize`: 64K-1 (default), 256K-1 or 1M-1; above 64K it is offered to the
    /// filter as `SMFIP_MDS_256K`/`SMFIP_MDS_1M`.
    pub max_data_size: usize,
    /// Filter connections between sessions of this configuration.
    pub pool: Arc<super::pool::Pool>,
}

/// A filter definition or list that sendmail would refuse (it says `syserr`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MilterConfigError {
    /// An `X` line: `X<name>: <what>` as sendmail's syserr words it.
    #[error("{loc}: X{name}: {msg}")]
    Filter {
        loc: String,
        name: String,
        msg: String,
    },
    /// `InputMailFilters` names a filter no `X` line defines.
    #[error("InputFilter {0} not defined")]
    Undefined(String),
    /// A bad `Milter.` option.
    #[error("milter_set_option: {0}")]
    Option(String),
}

impl MilterConfig {
    /// Reads the filters of `cfg`. Every problem is returned; sendmail refuses such a cf too.
    pub fn from_config(cfg: &Config) -> Result<MilterConfig, Vec<MilterConfigError>> {
        let mut errors = Vec::new();
        let mut mc = MilterConfig {
            log_level: cfg.options.log_level,
            max_data_size: MDS_64K,
            ..MilterConfig::default()
        };
        for x in &cfg.mail_filters {
            match parse_filter(&x.name, &x.fields) {
                Ok(def) => {
                    if mc.defs.contains_key(&def.name) {
                        errors.push(MilterConfigError::Filter {
                            loc: x.loc.to_string(),
                            name: def.name.clone(),
                            msg: "duplicate filter definition".into(),
                        });
                    } else {
                        mc.defs.insert(def.name.clone(), Arc::new(def));
                    }
                }
                Err(msg) => errors.push(MilterConfigError::Filter {
                    loc: x.loc.to_string(),
                    name: x.name.clone(),
                    msg,
                }),
            }
        }
        for (sub, value) in &cfg.options.milter {
            if let Err(e) = mc.set_option(sub, value) {
                errors.push(e);
            }
        }
        match mc.resolve(&cfg.options.input_mail_filters) {
            Ok(list) => mc.input = list,
            Err(e) => errors.push(e),
        }
        for d in &cfg.daemons {
            if d.input_mail_filters.is_empty() {
                continue;
            }
            match mc.resolve(&d.input_mail_filters) {
                Ok(list) => {
                    mc.per_daemon.insert(d.name.clone(), list);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(mc)
        } else {
            Err(errors)
        }
    }

    /// The filters a session on daemon `name` runs, in order (sendmail: the daemon's own
    /// `InputMailFilters=` when it has one, else the global list).
    pub fn for_daemon(&self, name: &str) -> &[Arc<FilterDef>] {
        self.per_daemon.get(name).unwrap_or(&self.input)
    }

    /// True when no daemon runs any filter.
    pub fn is_empty(&self) -> bool {
        self.input.is_empty() && self.per_daemon.values().all(Vec::is_empty)
    }

    /// The macro names configured for `stage`.
    pub fn macros(&self, stage: Stage) -> &[String] {
        &self.macros[stage as usize]
    }

    fn resolve(&self, names: &[String]) -> Result<Vec<Arc<FilterDef>>, MilterConfigError> {
        names
            .iter()
            .map(|n| {
                self.defs
                    .get(n)
                    .cloned()
                    .ok_or_else(|| MilterConfigError::Undefined(n.clone()))
            })
            .collect()
    }

    fn set_option(&mut self, sub: &str, value: &str) -> Result<(), MilterConfigError> {
        if let Some(stage) = sub.strip_prefix("macros.") {
            let Some(stage) = Stage::ALL.iter().find(|s| s.option_name() == stage) else {
                return Err(MilterConfigError::Option(format!(
                    "invalid Milter option {sub}"
                )));
            };
            self.macros[*stage as usize] = macro_list(value);
            return Ok(());
        }
        match sub {
            "loglevel" => {
                self.log_level = value.trim().parse().unwrap_or(0);
                Ok(())
            }
            "maxdatasize" => {
                let n: usize = value.trim().parse().unwrap_or(0);
                self.max_data_size = if n <= MDS_64K {
                    MDS_64K
                } else if n <= MDS_256K {
                    MDS_256K
                } else {
                    MDS_1M
                };
                Ok(())
            }
            _ => Err(MilterConfigError::Option(format!(
                "invalid Milter option {sub}"
            ))),
        }
    }
}

/// `j, _, {daemon_name}` → the names (commas and blanks separate).
pub fn macro_list(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// One `X` line's fields (the first letter of each field name counts, as in sendmail).
pub fn parse_filter(name: &str, fields: &[(char, String)]) -> Result<FilterDef, String> {
    if name.is_empty() {
        return Err("name required for mail filter".into());
    }
    let mut socket = None;
    let mut flags = String::new();
    let mut timeouts = Timeouts::default();
    for (code, value) in fields {
        match code {
            'S' => socket = Some(value.trim().to_string()),
            'F' => flags.push_str(value),
            'T' => parse_timeouts(value, &mut timeouts)?,
            other => return Err(format!("unknown filter equate {other}=")),
        }
    }
    let socket = match socket.filter(|s| !s.is_empty()) {
        Some(s) => parse_socket(&s)?,
        None => return Err("empty or missing socket information".into()),
    };
    let on_error = if flags.contains('T') {
        OnError::Tempfail
    } else if flags.contains('4') {
        OnError::Shutdown
    } else if flags.contains('R') {
        OnError::Reject
    } else {
        OnError::Ignore
    };
    Ok(FilterDef {
        name: name.to_string(),
        socket,
        on_error,
        timeouts,
    })
}

/// `T=C:5m;S:10s;R:10s;E:5m` (a bare number is seconds).
fn parse_timeouts(spec: &str, t: &mut Timeouts) -> Result<(), String> {
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((code, value)) = part.split_once(':') else {
            return Err("T=: `:' expected".into());
        };
        let d = parse_duration(value.trim(), 's').map_err(|e| format!("T={part}: {e}"))?;
        match code.trim() {
            "C" => t.connect = d,
            "S" => t.send = d,
            "R" => t.read = d,
            "E" => t.eom = d,
            other => return Err(format!("unknown filter timeout {other}")),
        }
    }
    Ok(())
}

/// `inet:port@host`, `inet6:port@host`, `local:/path` (`unix:` too). A spec without a type
/// is a local socket, as in sendmail.
pub fn parse_socket(spec: &str) -> Result<SocketSpec, String> {
    let Some((kind, rest)) = spec.split_once(':') else {
        return Ok(SocketSpec::Local(PathBuf::from(spec)));
    };
    match kind.to_ascii_lowercase().as_str() {
        "local" | "unix" => {
            if rest.len() >= 108 {
                return Err(format!("local socket name {rest} too long"));
            }
            Ok(SocketSpec::Local(PathBuf::from(rest)))
        }
        "inet" | "inet6" => {
            let Some((port, host)) = rest.split_once('@') else {
                return Err(format!("bad address {rest} (expected port@host)"));
            };
            let port: u16 = port
                .trim()
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("invalid port number {port}"))?;
            let host = host.trim().trim_start_matches('[').trim_end_matches(']');
            let host = host.to_string();
            if kind.eq_ignore_ascii_case("inet") {
                Ok(SocketSpec::Inet { port, host })
            } else {
                Ok(SocketSpec::Inet6 { port, host })
            }
        }
        _ => Err(format!("unknown socket type {kind}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cf(text: &str) -> Config {
        Config::from_str("test.cf", text, &[]).expect("cf parses")
    }

    #[test]
    fn an_m4_generated_filter_block_reads_as_sendmail_reads_it() {
        // What cf/m4 writes for INPUT_MAIL_FILTER (compiled with the Debian cf files).
        let c = cf("V10/Berkeley\n\
            O InputMailFilters=dkim, test\n\
            O Milter.macros.connect=j, _, {daemon_name}, {if_name}, {if_addr}\n\
            O Milter.macros.envrcpt={rcpt_mailer}, {rcpt_host}, {rcpt_addr}\n\
            #O Milter.macros.eoh\n\
            Xdkim, S=inet:8891@127.0.0.1, F=T, T=S:4m;R:4m;E:10m\n\
            Xtest, S=local:/run/test.sock\n\
            Xother, S=inet6:9999@::1, F=R\n");
        let m = MilterConfig::from_config(&c).expect("filters");
        let names: Vec<_> = m.input.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["dkim", "test"]);
        let dkim = &m.defs["dkim"];
        assert_eq!(
            dkim.socket,
            SocketSpec::Inet {
                port: 8891,
                host: "127.0.0.1".into()
            }
        );
        assert_eq!(dkim.on_error, OnError::Tempfail);
        assert_eq!(dkim.timeouts.send, Duration::from_secs(240));
        assert_eq!(dkim.timeouts.read, Duration::from_secs(240));
        assert_eq!(dkim.timeouts.eom, Duration::from_secs(600));
        assert_eq!(dkim.timeouts.connect, Duration::from_secs(300));
        assert_eq!(m.defs["test"].on_error, OnError::Ignore);
        assert_eq!(m.defs["test"].timeouts, Timeouts::default());
        assert_eq!(m.defs["other"].on_error, OnError::Reject);
        assert_eq!(
            m.macros(Stage::Connect),
            ["j", "_", "{daemon_name}", "{if_name}", "{if_addr}"]
        );
        assert!(m.macros(Stage::Eoh).is_empty());
        assert_eq!(m.log_level, c.options.log_level);
    }

    #[test]
    fn flags_follow_sendmails_order_t_then_4_then_r() {
        let f = |flags: &str| {
            parse_filter("f", &[('S', "local:/x".into()), ('F', flags.into())]).map(|d| d.on_error)
        };
        assert_eq!(f("R"), Ok(OnError::Reject));
        assert_eq!(f("4"), Ok(OnError::Shutdown));
        assert_eq!(f("RT"), Ok(OnError::Tempfail));
        assert_eq!(f("R4"), Ok(OnError::Shutdown));
        assert_eq!(f(""), Ok(OnError::Ignore));
    }

    #[test]
    fn bad_filter_lines_say_what_sendmail_says() {
        let e = |fields: &[(char, String)]| parse_filter("f", fields).unwrap_err();
        assert_eq!(e(&[]), "empty or missing socket information");
        assert_eq!(
            e(&[('S', "inet:8891".into())]),
            "bad address 8891 (expected port@host)"
        );
        assert_eq!(e(&[('S', "inet:x@h".into())]), "invalid port number x");
        assert_eq!(e(&[('S', "tcp:1@h".into())]), "unknown socket type tcp");
        assert_eq!(
            e(&[('S', "local:/x".into()), ('T', "Q:1s".into())]),
            "unknown filter timeout Q"
        );
        assert_eq!(
            e(&[('S', "local:/x".into()), ('Z', "1".into())]),
            "unknown filter equate Z="
        );
    }

    #[test]
    fn undefined_filters_and_per_daemon_lists() {
        let c = cf("O InputMailFilters=nope\nXa, S=local:/a\n");
        let errs = MilterConfig::from_config(&c).unwrap_err();
        assert_eq!(errs[0].to_string(), "InputFilter nope not defined");
        let c = cf("O InputMailFilters=a\n\
            O DaemonPortOptions=Name=MTA, Port=2525, InputMailFilters=b;a\n\
            O DaemonPortOptions=Name=MSA, Port=2587\n\
            Xa, S=local:/a\nXb, S=inet6:1@::1\n\
            O Milter.LogLevel=14\nO Milter.maxdatasize=262143\n");
        let m = MilterConfig::from_config(&c).expect("filters");
        let names = |d: &str| {
            m.for_daemon(d)
                .iter()
                .map(|f| f.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("MTA"), ["b", "a"]);
        assert_eq!(names("MSA"), ["a"]);
        assert_eq!(m.log_level, 14);
        assert_eq!(m.max_data_size, MDS_256K);
    }
}
