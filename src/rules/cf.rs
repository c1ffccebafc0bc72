//! Building an [`Engine`] from the parsed configuration ([`Config`]): the one sendmail.cf
//! reader is [`crate::config`]; this turns what it read into the rules' internal form.
//!
//! In: a [`Config`] (macros, classes, maps, rulesets, mailers, options, each with its
//! location) and the host's interface addresses. Out: an [`Engine`] with rulesets, macros,
//! classes and maps, plus the mailers and the configuration level ([`CfExtras`]), and the
//! problems found, worded as sendmail words them (`file: line N: message`).
//!
//! The configuration has already done what sendmail does while reading each line: in-line
//! comments, `munchstring`, `$x` expanded in `R`, `C`, `K` and `F` lines with the macros
//! defined above the line (`$&x` kept), `F` classes read (files and `|programs`). Here the
//! text becomes tokens: `$` sequences are translated, rules tokenized with `OperatorChars`,
//! maps opened, the sendmail start-up macros and classes (`$w $j $m $=w $=k`, ...) set.
//!
//! [`load`], [`load_with`] and [`load_lenient`] take cf text (tests, fuzzing, `-bt` on text in
//! memory) and go through [`crate::config::from_reader_lenient`]: the text is read once, by
//! the configuration reader.
//!
//! Source: op.txt §5.1 (line types), sendmail 8.17 readcf.c (order of processing: macros
//! and classes are expanded into rules as they are read).

use super::macros::translate_dollars;
use super::maps::{HostEnv, Map};
use super::rewrite::Engine;
use super::ruleset::compile_rule;
use super::token::{DEFAULT_OPERATORS, Table, TokenTables};
use crate::config::macros::HostNames;
use crate::config::{Config, ConfigError, Override};
use std::path::{Path, PathBuf};

/// Map classes sendmail 8.17 (as Debian builds it) knows but this engine cannot look
/// up: declaring them is fine, lookups fail.
const KNOWN_MAP_CLASSES: &[&str] = &[
    "text", "null", "regex", "program", "socket", "bestmx", "dns", "syslog", "ldap", "nis",
    "nisplus", "ph", "hesiod", "netinfo", "cdb", "switch",
];

/// What the host looks like to sendmail at startup (`$w`, `$j`, `$m`, `$=w`).
#[derive(Debug, Clone, Default)]
pub struct HostInfo {
    /// `gethostname()`.
    pub hostname: String,
    /// Addresses of the interfaces that are up (`[127.0.0.1]` goes into `$=w`).
    pub addresses: Vec<std::net::IpAddr>,
}

impl HostInfo {
    /// The running system's host name and interface addresses.
    pub fn current() -> Self {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let mut addresses = Vec::new();
        if let Ok(ifs) = nix::ifaddrs::getifaddrs() {
            for i in ifs {
                if !i.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP) {
                    continue;
                }
                if let Some(a) = i.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
                    let ip = std::net::IpAddr::V4(a.ip());
                    if !addresses.contains(&ip) {
                        addresses.push(ip);
                    }
                }
            }
        }
        HostInfo {
            hostname,
            addresses,
        }
    }
}

/// Everything the rules take from the configuration besides the engine itself.
#[derive(Debug, Clone, Default)]
pub struct CfExtras {
    /// The `M` lines, as the configuration parsed them.
    pub mailers: Vec<crate::config::Mailer>,
    /// `V` level.
    pub config_level: u32,
    /// `HelpFile` option.
    pub help_file: Option<PathBuf>,
}

/// sendmail's message for a cf that cannot be read.
pub fn cannot_open(path: &Path, e: &std::io::Error) -> String {
    let reason = match e.kind() {
        std::io::ErrorKind::NotFound => "No such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "Permission denied".to_string(),
        _ => e.to_string(),
    };
    format!("{}: line 0: cannot open: {reason}", path.display())
}

/// A configuration error as sendmail words a bad cf line: `file: line N: message`.
pub fn sendmail_words(e: &ConfigError) -> String {
    let loc = match e {
        ConfigError::UnknownLineType { loc, line, .. } => {
            return format!(
                "{}: line {}: unknown configuration line \"{line}\"",
                loc.file.display(),
                loc.line
            );
        }
        ConfigError::BadLine { loc, .. }
        | ConfigError::BadOptionValue { loc, .. }
        | ConfigError::RuleOutsideRuleset { loc }
        | ConfigError::BadRuleset { loc, .. }
        | ConfigError::BadMailer { loc, .. }
        | ConfigError::ClassFile { loc, .. }
        | ConfigError::Daemon { loc, .. } => loc,
        ConfigError::Io { .. } => return e.to_string(),
    };
    let text = e.to_string();
    let msg = text.strip_prefix(&format!("{loc}: ")).unwrap_or(&text);
    format!("{}: line {}: {msg}", loc.file.display(), loc.line)
}

/// Build the engine from cf text, failing on the first report of any bad line.
pub fn load(text: &[u8], file: &str, host: &HostInfo) -> Result<(Engine, CfExtras), Vec<String>> {
    let (e, x, errors) = load_lenient(text, file, host);
    if errors.is_empty() {
        Ok((e, x))
    } else {
        Err(errors)
    }
}

/// Build the engine from cf text as sendmail does: a bad line is reported
/// (`file: line N: message`) and skipped, the rest still counts.
pub fn load_lenient(text: &[u8], file: &str, host: &HostInfo) -> (Engine, CfExtras, Vec<String>) {
    load_with(text, file, host, &[])
}

/// [`load_lenient`] with command-line options (`-O Name=value`, `-oXvalue`): they win over
/// the cf's `O` lines for the same option, which are then ignored (sendmail's sticky
/// options). `host.hostname` gives `$j $w $m`.
pub fn load_with(
    text: &[u8],
    file: &str,
    host: &HostInfo,
    overrides: &[Override],
) -> (Engine, CfExtras, Vec<String>) {
    let (cfg, errors) = crate::config::from_reader_lenient(
        Path::new(file),
        text,
        overrides,
        HostNames::from_fqdn(&host.hostname),
    );
    let (e, x, problems) = from_config(&cfg, host);
    let mut all: Vec<String> = errors.iter().map(sendmail_words).collect();
    all.extend(problems);
    (e, x, all)
}

/// Build the engine from a parsed [`Config`]: its macros, classes,
/// maps, rulesets and mailers, read once by [`crate::config`]. `host` gives the interface
/// addresses for `$=w` (its `hostname` is not used: `$w $j $m` come from `cfg.host`, which
/// the configuration was expanded with). Problems are returned as sendmail words them
/// (`file: line N: message`); the engine is usable whatever they are.
pub fn from_config(cfg: &Config, host: &HostInfo) -> (Engine, CfExtras, Vec<String>) {
    let mut e = Engine::default();
    let mut errors = Vec::new();
    let host = HostInfo {
        hostname: cfg.host.fqdn.clone(),
        addresses: host.addresses.clone(),
    };
    startup_macros(&mut e, &host);
    let config_level = cfg.version.as_ref().map_or(0, |(l, _)| *l);
    let x = CfExtras {
        mailers: cfg.mailers.clone(),
        config_level,
        help_file: cfg.options.help_file.clone(),
    };
    e.space_sub = u8::try_from(cfg.options.blank_sub).unwrap_or(b' ');
    let hosts_file = cfg.options.hosts_file.clone();
    let service_switch = cfg.options.service_switch_file.clone();
    for (name, value) in &cfg.macros {
        if let Some(id) = e.names.id(name) {
            let v = translate_dollars(&mut e.names, value.as_bytes());
            e.macros.define(id, v);
        }
    }
    for (name, words) in &cfg.classes {
        if let Some(id) = e.names.id(name) {
            for w in words {
                e.macros.add_to_class(id, w.as_bytes());
            }
        }
    }
    let at = |loc: &crate::config::cf::lines::Location, m: String| {
        format!("{}: line {}: {m}", loc.file.display(), loc.line)
    };
    for (name, def) in &cfg.maps {
        let m = Map::new(name, &def.class, &def.args);
        if matches!(m.kind, super::maps::MapKind::Unsupported(_))
            && !KNOWN_MAP_CLASSES.contains(&def.class.as_str())
        {
            errors.push(at(
                &def.loc,
                format!("readcf: map {name}: class {} not available", def.class),
            ));
        } else {
            if let Some(w) = &m.warning {
                errors.push(at(&def.loc, w.clone()));
            }
            e.maps.maps.insert(name.clone(), m);
        }
    }
    let operators = if cfg.options.set_at.contains_key("OperatorChars") {
        let v = translate_dollars(&mut e.names, cfg.options.operator_chars.as_bytes());
        e.macros.expand(&v)
    } else if config_level < 7 {
        e.macros.get(b'o').map(|v| v.to_vec()).unwrap_or_default()
    } else {
        DEFAULT_OPERATORS.to_vec()
    };
    e.tables = TokenTables::new(&operators);
    let table = if config_level >= 9 {
        Table::NoComment
    } else {
        Table::Int
    };
    for rs in cfg.rulesets.values() {
        let n = rs.number as usize;
        if let Some(name) = &rs.name
            && let Err(er) = e.rulesets.declare(Some(name), Some(n))
        {
            errors.push(at(&rs.loc, er.to_string()));
            continue;
        }
        for r in &rs.rules {
            match compile_rule(&mut e.names, &e.macros, &e.tables, table, &r.lhs, &r.rhs) {
                Ok(rule) => {
                    for w in super::ruleset::rule_warnings(&rule) {
                        errors.push(at(&r.loc, w.to_string()));
                    }
                    e.rulesets.push(n, rule);
                }
                Err(er) => errors.push(at(&r.loc, er.to_string())),
            }
        }
    }
    let domain = e
        .macros
        .get(b'm')
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    e.maps.hosts = HostEnv::load(&hosts_file, &domain);
    e.maps.hosts.services = super::maps::host_services(&service_switch);
    if e.maps
        .hosts
        .services
        .contains(&super::maps::HostService::Dns)
    {
        e.maps.hosts.dns = Some(crate::dns::BlockingCanon::default());
    }
    if !e.maps.maps.contains_key("host") {
        e.maps
            .maps
            .insert("host".into(), Map::new("host", "host", ""));
    }
    if !x.mailers.iter().any(|m| m.name == "local") {
        errors.push("No local mailer defined".to_string());
    }
    if let Some(a) = cfg.options.alias_files.first() {
        let a = a.split(',').next().unwrap_or("");
        e.maps
            .maps
            .insert("aliases".into(), Map::aliases(Path::new(a)));
    }
    (e, x, errors)
}

/// The macros and classes sendmail sets before reading the cf: `$w $j $m $k`, `$=w $=k $=m`.
fn startup_macros(e: &mut Engine, host: &HostInfo) {
    let full = host.hostname.clone();
    let short = full.split('.').next().unwrap_or("").to_string();
    let domain = full
        .split_once('.')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    e.macros.define(b'w', short.clone().into_bytes());
    e.macros.define(b'j', full.clone().into_bytes());
    e.macros.define(b'm', domain.clone().into_bytes());
    e.macros.define(b'k', full.clone().into_bytes());
    e.macros.add_to_class(b'w', short.as_bytes());
    e.macros.add_to_class(b'k', full.as_bytes());
    if !domain.is_empty() {
        e.macros.add_to_class(b'm', domain.as_bytes());
    }
    for a in &host.addresses {
        let w = match a {
            std::net::IpAddr::V4(v) => format!("[{v}]"),
            std::net::IpAddr::V6(v) => format!("[IPv6:{v}]"),
        };
        e.macros.add_to_class(b'w', w.as_bytes());
    }
    if full != short {
        e.macros.add_to_class(b'w', full.as_bytes());
    }
    e.macros.define(b'v', b"8.17.1.9".to_vec());
    let user = crate::log::real_user_name().unwrap_or_else(|| "root".into());
    e.macros
        .define(b'_', format!("{user}@localhost").into_bytes());
    if let Some(id) = e.names.id("addr_type") {
        e.macros.define(id, b"e r".to_vec());
    }
    if let Some(id) = e.names.id("deliveryMode") {
        e.macros.define(id, b"i".to_vec());
    }
    // classes sendmail's main() fills: macros kept across envelopes, MIME types and
    // encodings it handles itself
    if let Some(id) = e.names.id("persistentMacros") {
        for w in ["r", "s", "_", "{if_addr}", "{daemon_flags}"] {
            e.macros.add_to_class(id, w.as_bytes());
        }
    }
    e.macros.add_to_class(b'n', b"multipart/signed");
    e.macros.add_to_class(b's', b"rfc822");
    for w in ["7bit", "8bit", "binary"] {
        e.macros.add_to_class(b'e', w.as_bytes());
    }
    if let Some(id) = e.names.id("opMode") {
        e.macros.define(id, b"t".to_vec());
    }
    let now = chrono::Utc::now();
    e.macros.define(
        b'b',
        now.format("%a, %-d %b %Y %H:%M:%S GMT")
            .to_string()
            .into_bytes(),
    );
    e.macros.define(
        b'd',
        now.format("%a %b %e %H:%M:%S %Y").to_string().into_bytes(),
    );
    e.macros
        .define(b't', now.format("%Y%m%d%H%M").to_string().into_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_small_cf() {
        let cf = b"V10/Berkeley\nCwlocalhost\nO OperatorChars=.:%@!^/[]+\nScanonify=3\nR$* < $+ > $*\t$@ $2\tfocus\nSparse=0\nR$+\t$#local $: $1\nMlocal, P=/bin/true, F=lsDFMA5:/|@qPn9S, A=true $u\n";
        let host = HostInfo {
            hostname: "oracle.example.test".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
        };
        let (e, x) = load(cf, "test.cf", &host).unwrap();
        assert_eq!(e.rulesets.rules(3).len(), 1);
        assert_eq!(e.rulesets.rules(0).len(), 1);
        assert_eq!(e.rulesets.display_name(0), "parse");
        assert!(e.macros.in_class(b'w', b"localhost"));
        assert!(e.macros.in_class(b'w', b"[127.0.0.1]"));
        assert!(e.macros.in_class(b'w', b"oracle.example.test"));
        assert_eq!(x.mailers[0].name, "local");
        assert_eq!(x.mailers[0].argv, ["true", "$u"]);
        assert_eq!(x.config_level, 10);
    }

    #[test]
    fn command_line_options_win_over_cf_lines() {
        let cf =
            b"V10\nO BlankSub=.\nO OperatorChars=.@\nSx=1\nR$*\t$@ $1\nMlocal, P=/bin/true, A=x\n";
        let o = |n: &str, v: &str| crate::config::Override {
            name: n.into(),
            value: v.into(),
        };
        let (e, _, errs) = load_with(cf, "t.cf", &HostInfo::default(), &[o("B", "_")]);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(e.space_sub, b'_');
        let (e, _, _) = load_with(
            cf,
            "t.cf",
            &HostInfo::default(),
            &[o("OperatorChars", ".@%")],
        );
        assert!(!e.tables.is_atom_start(b'%'));
    }

    #[test]
    fn bad_lines_are_reported_with_location() {
        let host = HostInfo::default();
        let errs = load(b"V10\nSx\nS bad-name\nR$:\tx\n", "t.cf", &host).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(errs[2], "No local mailer defined");
        assert!(errs[0].starts_with("t.cf: line 3: "), "{errs:?}");
        assert_eq!(errs[1], "t.cf: line 4: Inappropriate use of $: on LHS");
    }
}
