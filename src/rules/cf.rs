//! Building an [`Engine`] from a sendmail.cf: the lines the rules need (`V D C F K O S R M`).
//!
//! In: cf text (or its path) and the host environment (host name, hosts file, interface
//! addresses). Out: an [`Engine`] with rulesets, macros, classes and maps, plus the
//! [`Mailer`] list, or the errors found (`file:line: message`).
//!
//! This is the rules side of configuration loading; it reads the cf text itself so that the
//! engine and `-bt` work and are tested on their own. Lines it does not need (`H P T E Q L`)
//! are skipped.
//!
//! Source: op.txt §5.1 (line types), sendmail 8.17 readcf.c (order of processing: macros
//! and classes are expanded into rules as they are read).

use super::macros::translate_dollars;
use super::maps::{HostEnv, Map};
use super::rewrite::Engine;
use super::ruleset::compile_rule;
use super::token::{DEFAULT_OPERATORS, Table, TokenTables};
use std::path::{Path, PathBuf};

/// Map classes sendmail 8.17 (as Debian builds it) knows but this engine cannot look
/// up: declaring them is fine, lookups fail.
const KNOWN_MAP_CLASSES: &[&str] = &[
    "text", "null", "regex", "program", "socket", "bestmx", "dns", "syslog", "ldap", "nis",
    "nisplus", "ph", "hesiod", "netinfo", "cdb", "switch",
];

/// One `M` line: the mailer name and its `X=value` fields in cf order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailer {
    pub name: String,
    pub fields: Vec<(char, String)>,
}

impl Mailer {
    /// The value of field `c` (`F`, `P`, `S`, `R`, `A`, ...).
    pub fn field(&self, c: char) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| v.as_str())
    }
}

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

/// Everything read from the cf besides the engine itself.
#[derive(Debug, Clone, Default)]
pub struct CfExtras {
    pub mailers: Vec<Mailer>,
    /// `V` level.
    pub config_level: u32,
    /// `HelpFile` option.
    pub help_file: Option<PathBuf>,
    /// Options as read (long name → value), for the rest of `-bt`.
    pub options: Vec<(String, String)>,
}

/// Split cf text into logical lines (continuations joined, comments and blanks dropped),
/// each with its first physical line number.
pub fn logical_lines(text: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut out: Vec<(u32, Vec<u8>)> = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if matches!(line.first(), Some(b' ') | Some(b'\t')) {
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            if let Some(last) = out.last_mut() {
                last.1.push(b'\n');
                last.1.extend_from_slice(line);
                continue;
            }
        }
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        out.push((i as u32 + 1, line.to_vec()));
    }
    out
}

fn split_tabs(s: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let lhs_end = s.iter().position(|&b| b == b'\t').unwrap_or(s.len());
    let lhs = s[..lhs_end].to_vec();
    let mut i = lhs_end;
    while i < s.len() && s[i] == b'\t' {
        i += 1;
    }
    let rhs_end = s[i..]
        .iter()
        .position(|&b| b == b'\t')
        .map_or(s.len(), |p| i + p);
    (lhs, s[i..rhs_end].to_vec())
}

/// The long name of a one-letter option (the ones the rules care about).
fn long_option(c: char) -> &'static str {
    match c {
        'B' => "BlankSub",
        'A' => "AliasFile",
        'H' => "HelpFile",
        'o' => "OldStyleHeaders",
        _ => "",
    }
}

/// Options that change how the rules read and run, as collected from the cf and the
/// command line.
struct RuleOptions {
    operators: Option<Vec<u8>>,
    hosts_file: PathBuf,
    service_switch: PathBuf,
    alias_file: Option<PathBuf>,
}

impl RuleOptions {
    fn apply(&mut self, e: &mut Engine, x: &mut CfExtras, name: &str, value: &str) {
        match name {
            "OperatorChars" => {
                let v = translate_dollars(&mut e.names, value.as_bytes());
                self.operators = Some(e.macros.expand(&v));
            }
            "BlankSub" => e.space_sub = value.bytes().next().unwrap_or(b' '),
            "HostsFile" => self.hosts_file = PathBuf::from(value),
            "ServiceSwitchFile" => self.service_switch = PathBuf::from(value),
            "AliasFile" => {
                self.alias_file = Some(PathBuf::from(value.split(',').next().unwrap_or("")))
            }
            "HelpFile" => x.help_file = Some(PathBuf::from(value)),
            "MaxRuleRecursion" => {
                e.max_recursion = value.parse().unwrap_or(super::rewrite::MAX_RULE_RECURSION)
            }
            _ => {}
        }
        x.options.push((name.to_string(), value.to_string()));
    }
}

/// Long option names for the old one-letter forms the rules care about.
fn option_name(s: &str) -> (String, String) {
    if let Some(rest) = s.strip_prefix(' ') {
        let rest = rest.trim_start();
        let (n, v) = rest.split_once('=').unwrap_or((rest, ""));
        return (n.trim().to_string(), v.trim().to_string());
    }
    let mut chars = s.chars();
    let c = chars.next().unwrap_or(' ');
    (long_option(c).to_string(), chars.as_str().to_string())
}

/// Read a cf file from disk; see [`load`].
pub fn load_file(path: &Path, host: &HostInfo) -> Result<(Engine, CfExtras), Vec<String>> {
    let text = std::fs::read(path).map_err(|e| vec![cannot_open(path, &e)])?;
    load(&text, &path.display().to_string(), host)
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
/// options).
pub fn load_with(
    text: &[u8],
    file: &str,
    host: &HostInfo,
    overrides: &[crate::config::Override],
) -> (Engine, CfExtras, Vec<String>) {
    let sticky: Vec<(String, String)> = overrides
        .iter()
        .map(|o| {
            let name = if o.name.chars().count() == 1 {
                long_option(o.name.chars().next().unwrap_or(' ')).to_string()
            } else {
                o.name.clone()
            };
            (name, o.value.clone())
        })
        .collect();
    let mut e = Engine::default();
    let mut x = CfExtras::default();
    let mut errors = Vec::new();
    let mut opts = RuleOptions {
        operators: None,
        hosts_file: PathBuf::from("/etc/hosts"),
        service_switch: PathBuf::from("/etc/mail/service.switch"),
        alias_file: None,
    };
    let mut current_set = 0usize;
    let mut tables_fixed = false;
    startup_macros(&mut e, host);
    for (name, value) in &sticky {
        opts.apply(&mut e, &mut x, name, value);
    }
    for (lineno, line) in logical_lines(text) {
        let err = |m: String| format!("{file}: line {lineno}: {m}");
        let rest = &line[1..];
        match line[0] {
            b'V' => {
                let digits: String = String::from_utf8_lossy(rest)
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                x.config_level = digits.parse().unwrap_or(0);
            }
            b'D' => match e.names.parse(rest) {
                Some((id, used)) => {
                    let v = translate_dollars(&mut e.names, &rest[used..]);
                    e.macros.define(id, v);
                }
                None => errors.push(err("D line: macro name required".into())),
            },
            b'C' => match e.names.parse(rest) {
                Some((id, used)) => {
                    let v = translate_dollars(&mut e.names, &rest[used..]);
                    let v = e.macros.expand(&v);
                    for w in v
                        .split(|b| b.is_ascii_whitespace())
                        .filter(|w| !w.is_empty())
                    {
                        e.macros.add_to_class(id, w);
                    }
                }
                None => errors.push(err("C line: class name required".into())),
            },
            b'F' => match e.names.parse(rest) {
                Some((id, used)) => {
                    let s = String::from_utf8_lossy(&rest[used..]).into_owned();
                    let mut words = s.split_whitespace();
                    let mut optional = false;
                    let mut path = words.next().unwrap_or("");
                    if path == "-o" {
                        optional = true;
                        path = words.next().unwrap_or("");
                    } else if let Some(p) = path.strip_prefix("-o") {
                        optional = true;
                        path = p;
                    }
                    let format: Option<String> = words.next().map(str::to_string);
                    match std::fs::read(path) {
                        Ok(data) => {
                            for l in data.split(|&b| b == b'\n') {
                                for w in class_file_words(l, format.as_deref()) {
                                    e.macros.add_to_class(id, &w);
                                }
                            }
                        }
                        Err(er) if !optional => {
                            errors.push(err(format!("cannot open {path}: {er}")))
                        }
                        Err(_) => {}
                    }
                }
                None => errors.push(err("F line: class name required".into())),
            },
            b'K' => {
                let s = String::from_utf8_lossy(rest).into_owned();
                let mut parts = s.splitn(3, |c: char| c.is_ascii_whitespace());
                let name = parts.next().unwrap_or("").to_string();
                let class = parts.next().unwrap_or("").to_string();
                let args = parts.next().unwrap_or("");
                if name.is_empty() || class.is_empty() {
                    errors.push(err("K line: name and class required".into()));
                } else {
                    let args = e
                        .macros
                        .expand(&translate_dollars(&mut e.names, args.as_bytes()));
                    let m = Map::new(&name, &class, &String::from_utf8_lossy(&args));
                    if matches!(m.kind, super::maps::MapKind::Unsupported(_))
                        && !KNOWN_MAP_CLASSES.contains(&class.as_str())
                    {
                        errors.push(err(format!(
                            "readcf: map {name}: class {class} not available"
                        )));
                    } else {
                        if let Some(w) = &m.warning {
                            errors.push(err(w.clone()));
                        }
                        e.maps.maps.insert(name, m);
                    }
                }
            }
            b'O' => {
                let (name, value) = option_name(&String::from_utf8_lossy(rest));
                if !sticky.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                    opts.apply(&mut e, &mut x, &name, &value);
                }
            }
            b'S' => {
                let s = String::from_utf8_lossy(rest).trim().to_string();
                let r = if s.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
                    match s.parse::<usize>() {
                        Ok(n) => e.rulesets.declare(None, Some(n)),
                        Err(_) => Err(super::ruleset::RuleError::BadName(s.clone())),
                    }
                } else if let Some((n, num)) = s.split_once('=') {
                    match num.trim().parse::<usize>() {
                        Ok(k) => e.rulesets.declare(Some(n.trim()), Some(k)),
                        Err(_) => Err(super::ruleset::RuleError::BadName(s.clone())),
                    }
                } else {
                    e.rulesets.declare(Some(&s), None)
                };
                match r {
                    Ok(n) => current_set = n,
                    Err(er) => errors.push(err(er.to_string())),
                }
            }
            b'R' => {
                if !tables_fixed {
                    let ops = opts.operators.clone().unwrap_or_else(|| {
                        if x.config_level < 7 {
                            e.macros.get(b'o').map(|v| v.to_vec()).unwrap_or_default()
                        } else {
                            DEFAULT_OPERATORS.to_vec()
                        }
                    });
                    e.tables = TokenTables::new(&ops);
                    tables_fixed = true;
                }
                let (lhs, rhs) = split_tabs(rest);
                if lhs.is_empty() {
                    errors.push(err("R line: null LHS".into()));
                    continue;
                }
                let table = if x.config_level >= 9 {
                    Table::NoComment
                } else {
                    Table::Int
                };
                let (l, r) = (String::from_utf8_lossy(&lhs), String::from_utf8_lossy(&rhs));
                match compile_rule(&mut e.names, &e.macros, &e.tables, table, &l, &r) {
                    Ok(rule) => {
                        for w in super::ruleset::rule_warnings(&rule) {
                            errors.push(err(w.to_string()));
                        }
                        e.rulesets.push(current_set, rule);
                    }
                    Err(er) => errors.push(err(er.to_string())),
                }
            }
            b'T' => {
                // trusted users: class t
                for w in rest
                    .split(|b| b.is_ascii_whitespace())
                    .filter(|w| !w.is_empty())
                {
                    e.macros.add_to_class(b't', w);
                }
            }
            b'M' => {
                let s = String::from_utf8_lossy(rest).into_owned();
                let mut it = s.splitn(2, ',');
                let name = it.next().unwrap_or("").trim().to_string();
                let mut fields = Vec::new();
                for f in split_mailer_fields(it.next().unwrap_or("")) {
                    let f = f.trim();
                    if let Some((k, v)) = f.split_once('=')
                        && let Some(c) = k.trim().chars().next()
                    {
                        fields.push((c, v.trim().to_string()));
                    }
                }
                x.mailers.push(Mailer { name, fields });
            }
            b'H' | b'P' | b'E' | b'Q' | b'L' | b'X' | b'G' => {}
            _ => errors.push(err(format!(
                "unknown configuration line \"{}\"",
                String::from_utf8_lossy(&line)
            ))),
        }
    }
    if !tables_fixed {
        e.tables = TokenTables::new(opts.operators.as_deref().unwrap_or(DEFAULT_OPERATORS));
    }
    let domain = e
        .macros
        .get(b'm')
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    e.maps.hosts = HostEnv::load(&opts.hosts_file, &domain);
    e.maps.hosts.services = super::maps::host_services(&opts.service_switch);
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
    if let Some(a) = opts.alias_file {
        e.maps.maps.insert("aliases".into(), Map::aliases(&a));
    }
    (e, x, errors)
}

/// Build the engine from a parsed [`Config`](crate::config::Config): its macros, classes,
/// maps, rulesets and mailers, read once by [`crate::config`]. `host` gives the interface
/// addresses for `$=w` (its `hostname` is not used: `$w $j $m` come from `cfg.host`, which
/// the configuration was expanded with). Problems are returned as sendmail words them
/// (`file: line N: message`); the engine is usable whatever they are.
pub fn from_config(
    cfg: &crate::config::Config,
    host: &HostInfo,
) -> (Engine, CfExtras, Vec<String>) {
    let mut e = Engine::default();
    let mut errors = Vec::new();
    let host = HostInfo {
        hostname: cfg.host.fqdn.clone(),
        addresses: host.addresses.clone(),
    };
    startup_macros(&mut e, &host);
    let config_level = cfg.version.as_ref().map_or(0, |(l, _)| *l);
    let mut x = CfExtras {
        mailers: cfg
            .mailers
            .iter()
            .map(|m| Mailer {
                name: m.name.clone(),
                fields: m.fields.clone(),
            })
            .collect(),
        config_level,
        help_file: cfg.options.help_file.clone(),
        options: Vec::new(),
    };
    // options the config keeps untyped (not supported by the daemon yet): the last one counts
    let raw = |name: &str| {
        cfg.options
            .unsupported
            .iter()
            .rev()
            .find(|o| o.name == name)
            .map(|o| o.value.as_str())
    };
    if let Some(b) = raw("BlankSub") {
        e.space_sub = b.bytes().next().unwrap_or(b' ');
    }
    let hosts_file = PathBuf::from(raw("HostsFile").unwrap_or("/etc/hosts"));
    let service_switch =
        PathBuf::from(raw("ServiceSwitchFile").unwrap_or("/etc/mail/service.switch"));
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
    x.options.clear();
    (e, x, errors)
}

/// The words one line of an `F` class file gives: with a `%[^...]` scanf format, the text
/// up to the first excluded character, split at white space; otherwise (`%s`, no format)
/// the first word only.
fn class_file_words(line: &[u8], format: Option<&str>) -> Vec<Vec<u8>> {
    if line.first() == Some(&b'#') {
        return Vec::new();
    }
    let text: &[u8] = match format.and_then(|f| f.strip_prefix("%[^")) {
        Some(set) => {
            let set = set.split(']').next().unwrap_or("").replace('\\', "");
            let end = line
                .iter()
                .position(|b| set.as_bytes().contains(b))
                .unwrap_or(line.len());
            &line[..end]
        }
        None => {
            let start = line
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(line.len());
            let len = line[start..]
                .iter()
                .position(|b| b.is_ascii_whitespace())
                .unwrap_or(line.len() - start);
            &line[start..start + len]
        }
    };
    text.split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Fields are `X=value` separated by commas; a comma not followed by `X=` belongs to the
/// value before it (argv of `A=` may contain commas).
fn split_mailer_fields(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in s.split(',') {
        let t = part.trim_start().as_bytes();
        let starts_field = t.len() >= 2 && t[0].is_ascii_alphabetic() && t[1] == b'=';
        match out.last_mut() {
            Some(last) if !starts_field => {
                last.push(',');
                last.push_str(part);
            }
            _ => out.push(part.to_string()),
        }
    }
    out
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
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into());
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
    fn class_file_lines() {
        assert_eq!(
            class_file_words(b"beta gamma", None),
            vec![b"beta".to_vec()]
        );
        assert_eq!(
            class_file_words(b"a b # c", Some("%[^\\#]")),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert!(class_file_words(b"# only", Some("%[^#]")).is_empty());
    }

    #[test]
    fn logical_lines_join_continuations() {
        let l = logical_lines(b"# c\nDxa\n\tb\n\nR$*\t$@ x\n");
        assert_eq!(
            l,
            vec![(2, b"Dxa\n\tb".to_vec()), (5, b"R$*\t$@ x".to_vec())]
        );
    }

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
        assert_eq!(x.mailers[0].field('A'), Some("true $u"));
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
        let (e, x, errs) = load_with(cf, "t.cf", &HostInfo::default(), &[o("B", "_")]);
        assert!(errs.is_empty());
        assert_eq!(e.space_sub, b'_');
        assert!(x.options.iter().all(|(n, v)| n != "BlankSub" || v == "_"));
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
        let errs = load(b"S bad-name\nR$:\tx\n", "t.cf", &host).unwrap_err();
        assert_eq!(errs.len(), 3);
        assert_eq!(errs[2], "No local mailer defined");
        assert!(errs[0].starts_with("t.cf: line 1: "));
        assert_eq!(errs[1], "t.cf: line 2: Inappropriate use of $: on LHS");
    }
}
