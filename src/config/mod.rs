//! The configuration: a sendmail.cf (or the embedded default) plus `-O`/`-o` overrides,
//! parsed once into a typed [`Config`].
//!
//! In: a path (`-C`, `/etc/mail/sendmail.cf`) or the embedded default text, and the command
//! line's option overrides. Out: [`Config`], or every error found, each naming file, line and
//! what was expected. Options the project does not implement yet become warnings (one line
//! each in the mail log), never silence and never a crash.
//!
//! sendmail semantics kept here (see `docs/sendmail-facts.md` §1.4):
//! * each `DaemonPortOptions` occurrence adds one daemon; none means one default daemon;
//! * command-line options are applied first and are *sticky*: a cf line for the same option
//!   is then ignored (for `DaemonPortOptions`: every cf line, each command-line occurrence
//!   adding one daemon); `PrivacyOptions` and `DontBlameSendmail` add up instead;
//! * cf option values are macro-expanded at use; command-line values are literal
//!   ([`options::Text::literal`]);
//! * `F` class files are read (or their `|program` run) while loading; a missing one is an
//!   error unless `-o`;
//! * `$x` in `R`, `C`, `K` and `F` lines is expanded when the line is read, with the macros
//!   defined so far; `$&x` is kept for run time;
//! * unknown, ambiguous and abbreviated option names are warnings (sendmail's texts), as is
//!   each known option not implemented yet (once per option).
//!
//! Errors and warnings about command-line options are located as `command line:N`, N being
//! the option's position among the `-O`/`-o` options.
//!
//! What the ruleset engine uses: [`Config::rulesets`] (by number) with
//! [`Config::ruleset_names`], [`Config::classes`], [`Config::macros`] (or [`Config`] itself as
//! a [`macros::MacroLookup`], which adds the built-ins `$j $w $m $v $Z $b`), [`Config::maps`]
//! and [`Config::mailers`].
//!
//! The embedded default (`default.cf`, [`DEFAULT_CF`]) listens on port 25 (MTA) and 587
//! (MSA, `M=E`), IPv6 first then IPv4 on each, with Debian-like paths: queue
//! `/var/spool/mqueue`, pid file `/run/sendmail.pid`, status file
//! `/var/lib/sendmail/sendmail.st`, aliases `/etc/mail/aliases`.

pub mod cf;
pub mod daemon_options;
pub mod macros;
pub mod options;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cf::lines::{CfLine, LINE_KINDS, Line, Location};
use daemon_options::DaemonPortOptions;
use macros::{HostNames, MacroLookup};
use options::{Options, RawOption, Resolved, Support};

/// The configuration compiled into the binary.
pub const DEFAULT_CF: &str = include_str!("default.cf");

/// sendmail's limit on daemons (`MAXDAEMONS`, facts §1.4).
pub const MAX_DAEMONS: usize = 64;
/// Numbered rulesets are 0..100; named ones without a number get 199, 198, ...
pub const MAX_NUMBERED_RULESET: u32 = 100;

/// An option given on the command line (`-O Name=value`, `-oXvalue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Long name, or the one-letter name of `-oX`.
    pub name: String,
    pub value: String,
}

/// Where the configuration text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A sendmail.cf on disk.
    File(PathBuf),
    /// The configuration compiled into the binary (`config/default.cf`).
    Embedded,
}

/// Everything that can be wrong in a configuration. Display: `FILE:LINE: what was wrong
/// (what was expected)`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{}: cannot read: {source}", file.display())]
    Io {
        file: PathBuf,
        source: Arc<std::io::Error>,
    },
    /// The first character of a line is not a line kind.
    #[error("{loc}: unknown line type '{ch}' (expected one of {LINE_KINDS} or a comment)")]
    UnknownLineType {
        loc: Location,
        ch: char,
        /// The whole line, for sendmail's wording (`unknown configuration line "..."`).
        line: String,
    },
    /// A line of a known kind that does not parse.
    #[error("{loc}: bad {kind} line: {msg}")]
    BadLine {
        loc: Location,
        kind: char,
        msg: String,
    },
    /// A value that does not parse for a typed option.
    #[error("{loc}: option {option}: {msg}")]
    BadOptionValue {
        loc: Location,
        option: String,
        msg: String,
    },
    /// An `R` line before any `S` line.
    #[error("{loc}: R line outside a ruleset (expected an S line before the first R line)")]
    RuleOutsideRuleset { loc: Location },
    /// A ruleset number out of range or changed.
    #[error("{loc}: {msg}")]
    BadRuleset { loc: Location, msg: String },
    /// A mailer definition that sendmail would refuse.
    #[error("{loc}: mailer {mailer}: {msg}")]
    BadMailer {
        loc: Location,
        mailer: String,
        msg: String,
    },
    /// A class file (`F` line, not `-o`) that cannot be read.
    #[error(
        "{loc}: cannot read class file {path}: {source} (expected an existing file, or `F{name}-o {path}` to make it optional)"
    )]
    ClassFile {
        loc: Location,
        name: String,
        path: String,
        source: Arc<std::io::Error>,
    },
    /// A `DaemonPortOptions` value the listener parser refused, or too many daemons.
    #[error("{loc}: DaemonPortOptions: {msg}")]
    Daemon { loc: Location, msg: String },
}

/// One rewriting rule (`R` line). As sendmail does while reading the cf, `$x` / `${x}` in
/// `lhs` and `rhs` are already expanded with the macros defined up to that line (plus the
/// built-ins); deferred `$&x` and all rule syntax (`$*`, `$1`, `$=w`, `$#`, `$|`, ...) are
/// kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub lhs: String,
    pub rhs: String,
    pub comment: Option<String>,
    pub loc: Location,
}

/// A ruleset (`S` line and the `R` lines after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub number: u32,
    pub name: Option<String>,
    pub rules: Vec<Rule>,
    /// The first `S` line (or the mailer line that named it first).
    pub loc: Location,
}

/// A keyed map (`K` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDef {
    pub class: String,
    /// Everything after the class, as written (`-T<TMPF> /etc/mail/access`).
    pub args: String,
    pub loc: Location,
}

/// A mailer (`M` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailer {
    pub name: String,
    /// `P=`: program path, or `[IPC]`, `[FILE]`, ...
    pub path: String,
    /// `F=`: flag letters (white space removed).
    pub flags: String,
    /// `A=`: argv, split on white space, macros unexpanded (`TCP $h`).
    pub argv: Vec<String>,
    /// `S=env[/hdr]`: sender rulesets by name or number.
    pub sender_envelope_ruleset: Option<String>,
    pub sender_header_ruleset: Option<String>,
    /// `R=env[/hdr]`: recipient rulesets.
    pub recipient_envelope_ruleset: Option<String>,
    pub recipient_header_ruleset: Option<String>,
    /// `E=`: end of line; default `\r\n`, or `\n` when argv uses `$u` (local programs).
    pub eol: String,
    /// `L=`: maximum line length, 0 = none.
    pub line_limit: u32,
    /// `T=mta/addr/diag` types (DSN); defaults `dns/rfc822/smtp`.
    pub mta_type: String,
    pub addr_type: String,
    pub diag_type: String,
    /// `M=`: maximum message size, 0 = none.
    pub max_size: u64,
    /// `r=`: maximum recipients per envelope; 0 = sendmail's default (100).
    pub max_recipients: u32,
    /// `D=`: working directories (`$z:/`), as written.
    pub directory: Option<String>,
    /// `U=user[:group]`, as written.
    pub user: Option<String>,
    /// Every field as given (letter, munched value), including the typed ones above.
    pub fields: Vec<(char, String)>,
    pub loc: Location,
}

impl Mailer {
    /// Whether flag letter `f` is set (`F=`).
    pub fn has_flag(&self, f: char) -> bool {
        self.flags.contains(f)
    }
}

/// A header template (`H` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderDef {
    /// `?F?` flags or `?${macro}?`, without the `?`.
    pub condition: Option<String>,
    pub name: String,
    /// Unexpanded value; continuation lines joined with `\n`.
    pub value: String,
    pub loc: Location,
}

/// A queue group (`Q` line) or mail filter (`X` line): name and raw fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedFields {
    pub name: String,
    pub fields: Vec<(char, String)>,
    pub loc: Location,
}

/// The whole configuration. Fields are public for the ruleset engine and the daemon.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (`<embedded default.cf>` for the default).
    pub file: PathBuf,
    pub options: Options,
    /// `D` lines (and `-oM`): name (`j`, `daemon_name`) → raw value.
    pub macros: BTreeMap<String, String>,
    /// `C` and `F` lines: name (`w`, `Accept`) → words, in order of first appearance.
    pub classes: BTreeMap<String, Vec<String>>,
    /// `K` lines by map name.
    pub maps: BTreeMap<String, MapDef>,
    /// `M` lines in definition order (a redefinition replaces in place).
    pub mailers: Vec<Mailer>,
    /// Rulesets by number.
    pub rulesets: BTreeMap<u32, Ruleset>,
    /// Ruleset names → numbers (`canonify` → 3, `check_rcpt` → 19x).
    pub ruleset_names: BTreeMap<String, u32>,
    pub headers: Vec<HeaderDef>,
    /// `P` lines in order.
    pub priorities: Vec<(String, i32)>,
    /// `T` lines (class `t`).
    pub trusted: Vec<String>,
    /// `V` line: configuration level and vendor.
    pub version: Option<(u32, Option<String>)>,
    /// `E` lines.
    pub env: Vec<(String, Option<String>)>,
    pub queue_groups: Vec<NamedFields>,
    pub mail_filters: Vec<NamedFields>,
    /// One per listening socket, in order (see the module doc for the sticky rule).
    pub daemons: Vec<DaemonPortOptions>,
    /// `FILE:LINE: text` warnings: options not supported yet, unknown options, ignored lines.
    pub warnings: Vec<String>,
    /// Debug notes (e.g. cf `DaemonPortOptions` lines ignored because of `-O`).
    pub notes: Vec<String>,
    /// This host's names for `$j $w $m` (a `Dj` line wins over them).
    pub host: HostNames,
}

impl Config {
    /// Loads the configuration from `source` and applies `overrides`.
    pub fn load(source: &Source, overrides: &[Override]) -> Result<Config, Vec<ConfigError>> {
        load(source, overrides)
    }

    /// Parses `text` as if read from a file called `name` (for tests and the embedded
    /// default). Class files named in it are still read from disk.
    pub fn from_str(
        name: &str,
        text: &str,
        overrides: &[Override],
    ) -> Result<Config, Vec<ConfigError>> {
        from_reader(Path::new(name), text.as_bytes(), overrides)
    }

    /// A mailer by name.
    pub fn mailer(&self, name: &str) -> Option<&Mailer> {
        self.mailers.iter().find(|m| m.name == name)
    }

    /// This host's names, lower case: `$=w` (`Cw` lines, the `Fw` file) with `$j`, the
    /// host's own names, `localhost` and `[127.0.0.1]` added — what the built-in rules take
    /// for "mail to me" (relay check and mailer choice alike).
    pub fn local_names(&self) -> Vec<String> {
        self.each_local_name()
            .map(|s| s.to_ascii_lowercase())
            .collect()
    }

    /// Whether `name` is one of [`Config::local_names`], without building the list (the
    /// built-in router asks once per recipient). `name` is compared as given with each
    /// local name in lower case, as `local_names().contains(name)` does.
    pub fn is_local_name(&self, name: &str) -> bool {
        self.each_local_name().any(|w| {
            w.len() == name.len()
                && w.bytes()
                    .zip(name.bytes())
                    .all(|(a, b)| a.to_ascii_lowercase() == b)
        })
    }

    /// The names of [`Config::local_names`], as written.
    fn each_local_name(&self) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        let w = self.classes.get("w").into_iter().flatten();
        w.map(|s| Cow::Borrowed(s.as_str()))
            .chain(std::iter::once_with(|| {
                Cow::Owned(macros::expand("$j", self))
            }))
            .chain(
                [
                    self.host.fqdn.as_str(),
                    self.host.short.as_str(),
                    "localhost",
                    "[127.0.0.1]",
                ]
                .map(Cow::Borrowed),
            )
    }

    /// A ruleset by name or number (`"canonify"`, `"3"`).
    pub fn ruleset(&self, name_or_number: &str) -> Option<&Ruleset> {
        let n = match name_or_number.parse::<u32>() {
            Ok(n) => n,
            Err(_) => *self.ruleset_names.get(name_or_number)?,
        };
        self.rulesets.get(&n)
    }

    /// Whether class `name` contains `word` (case-insensitively, as sendmail's `$=`).
    pub fn class_contains(&self, name: &str, word: &str) -> bool {
        self.classes
            .get(name)
            .is_some_and(|c| c.iter().any(|w| w.eq_ignore_ascii_case(word)))
    }
}

/// Config macros first, then the built-ins: `$j` `$w` `$m` (host), `$v` `$Z` (version),
/// `$b` (now).
impl MacroLookup for Config {
    fn macro_value(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some(v) = self.macros.get(name) {
            return Some(Cow::Borrowed(v.as_str()));
        }
        match name {
            "j" => Some(Cow::Borrowed(self.host.fqdn.as_str())),
            "w" => Some(Cow::Borrowed(self.host.short.as_str())),
            "m" => Some(Cow::Borrowed(self.host.domain.as_str())),
            "v" | "Z" => Some(Cow::Borrowed(macros::VERSION)),
            "b" => Some(Cow::Owned(macros::rfc5322_now())),
            // Defined by sendmail's main() before the cf is read, so a rule's `${opMode}`
            // (FEATURE(redirect)) is expanded with it: the values the ruleset engine starts
            // with (rules::cf::startup_macros). sendmail's opMode is the -b letter of the
            // process (`d` for the daemon); any letter but `i` gives redirect's 551.
            "opMode" => Some(Cow::Borrowed("t")),
            "deliveryMode" => Some(Cow::Borrowed("i")),
            _ => None,
        }
    }
}

/// Loads the configuration from `source` and applies `overrides`; every error found.
pub fn load(source: &Source, overrides: &[Override]) -> Result<Config, Vec<ConfigError>> {
    match source {
        Source::Embedded => from_reader(
            Path::new("<embedded default.cf>"),
            DEFAULT_CF.as_bytes(),
            overrides,
        ),
        Source::File(path) => match std::fs::File::open(path) {
            Ok(f) => from_reader(path, std::io::BufReader::new(f), overrides),
            Err(e) => Err(vec![ConfigError::Io {
                file: path.clone(),
                source: Arc::new(e),
            }]),
        },
    }
}

/// Parses a configuration from any reader.
pub fn from_reader(
    file: &Path,
    r: impl BufRead,
    overrides: &[Override],
) -> Result<Config, Vec<ConfigError>> {
    let (mut config, errors) = from_reader_lenient(file, r, overrides, HostNames::of_this_host());
    if config.options.hosts_file != Path::new("/etc/hosts") {
        config.host = HostNames::of_this_host_in(&config.options.hosts_file);
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// [`from_reader`] that goes on past errors, as sendmail's `readcf` does in address test
/// mode (a bad line is reported and the rest still counts): the configuration as far as it
/// loaded, with every error. `host` gives `$j $w $m` (what [`HostNames::of_this_host`]
/// finds, or a fixed name in tests).
pub fn from_reader_lenient(
    file: &Path,
    r: impl BufRead,
    overrides: &[Override],
    host: HostNames,
) -> (Config, Vec<ConfigError>) {
    let parsed = cf::lines::parse_reader(file, r);
    let mut b = Builder::new(file, host);
    b.errors.extend(parsed.errors);
    b.config.warnings.extend(parsed.warnings);
    b.apply_overrides(overrides);
    for line in parsed.lines {
        b.apply(line);
    }
    b.finish()
}

/// Collects the configuration line by line.
struct Builder {
    config: Config,
    errors: Vec<ConfigError>,
    /// Options set on the command line (canonical name, `Timeout.sub` lower-cased).
    sticky: BTreeSet<String>,
    /// Options already warned about as not supported.
    warned: BTreeSet<String>,
    /// `DaemonPortOptions` values with their origin and whether they came from the cf.
    daemon_values: Vec<(Location, String)>,
    daemons_from_command_line: bool,
    /// Where `MetricsAddress` was last set (its loopback check comes at the end, when
    /// `MetricsAllowRemote` is known too).
    metrics_loc: Option<Location>,
    current_ruleset: Option<u32>,
    next_named_ruleset: u32,
}

impl Builder {
    fn new(file: &Path, host: HostNames) -> Builder {
        Builder {
            config: Config {
                file: file.to_path_buf(),
                options: Options::default(),
                macros: BTreeMap::new(),
                classes: BTreeMap::new(),
                maps: BTreeMap::new(),
                mailers: Vec::new(),
                rulesets: BTreeMap::new(),
                ruleset_names: BTreeMap::new(),
                headers: Vec::new(),
                priorities: Vec::new(),
                trusted: Vec::new(),
                version: None,
                env: Vec::new(),
                queue_groups: Vec::new(),
                mail_filters: Vec::new(),
                daemons: Vec::new(),
                warnings: Vec::new(),
                notes: Vec::new(),
                host,
            },
            errors: Vec::new(),
            sticky: BTreeSet::new(),
            metrics_loc: None,
            warned: BTreeSet::new(),
            daemon_values: Vec::new(),
            daemons_from_command_line: false,
            current_ruleset: None,
            next_named_ruleset: 2 * MAX_NUMBERED_RULESET,
        }
    }

    fn apply_overrides(&mut self, overrides: &[Override]) {
        let file = Arc::new(PathBuf::from("command line"));
        for (i, o) in overrides.iter().enumerate() {
            let loc = Location {
                file: Arc::clone(&file),
                line: u32::try_from(i + 1).unwrap_or(u32::MAX),
            };
            self.set_option(&loc, &o.name, &o.value, true);
        }
    }

    fn apply(&mut self, line: Line) {
        let Line { loc, kind } = line;
        match kind {
            CfLine::Option { name, value } => self.set_option(&loc, &name, &value, false),
            CfLine::Macro { name, value } => {
                self.config.macros.insert(name, value);
            }
            CfLine::Class { name, words } => {
                let words = macros::expand_at_load(&words.join(" "), &self.config);
                let words = words.split_whitespace().map(str::to_string).collect();
                add_words(&mut self.config.classes, &name, words);
            }
            CfLine::ClassFile {
                name,
                optional,
                path,
                format,
            } => self.read_class_file(&loc, &name, optional, &path, format.as_deref()),
            CfLine::Map { name, class, args } => {
                let args = macros::expand_at_load(&args, &self.config);
                self.config.maps.insert(name, MapDef { class, args, loc });
            }
            CfLine::Mailer { name, fields } => self.add_mailer(loc, name, fields),
            CfLine::Ruleset { name, number } => {
                self.current_ruleset = self.ruleset_number(&loc, name.as_deref(), number);
            }
            CfLine::Rule { lhs, rhs, comment } => {
                let lhs = macros::expand_at_load(&lhs, &self.config);
                let rhs = macros::expand_at_load(&rhs, &self.config);
                match self
                    .current_ruleset
                    .and_then(|n| self.config.rulesets.get_mut(&n))
                {
                    Some(rs) => rs.rules.push(Rule {
                        lhs,
                        rhs,
                        comment,
                        loc,
                    }),
                    None => self.errors.push(ConfigError::RuleOutsideRuleset { loc }),
                }
            }
            CfLine::Header {
                condition,
                name,
                value,
            } => self.config.headers.push(HeaderDef {
                condition,
                name,
                value,
                loc,
            }),
            CfLine::Priority { name, value } => self.config.priorities.push((name, value)),
            CfLine::Trusted { users } => {
                add_words(&mut self.config.classes, "t", users.clone());
                self.config.trusted.extend(users);
            }
            CfLine::Version { level, vendor } => self.config.version = Some((level, vendor)),
            CfLine::Env { name, value } => self.config.env.push((name, value)),
            CfLine::QueueGroup { name, fields } => {
                self.config
                    .queue_groups
                    .push(NamedFields { name, fields, loc })
            }
            CfLine::MailFilter { name, fields } => {
                self.config
                    .mail_filters
                    .push(NamedFields { name, fields, loc })
            }
        }
    }

    fn set_option(&mut self, loc: &Location, name: &str, value: &str, literal: bool) {
        let (info, sub) = match options::resolve(name) {
            Resolved::Option {
                info,
                sub,
                abbreviated,
            } => {
                if abbreviated {
                    self.config.warnings.push(format!(
                        "{loc}: Option {name} used as abbreviation for {}",
                        info.name
                    ));
                }
                (info, sub)
            }
            Resolved::DefineMacro => {
                match cf::lines::macro_name(value) {
                    Ok((m, v)) => {
                        self.config.macros.insert(m, v.to_string());
                    }
                    Err(msg) => self.errors.push(ConfigError::BadOptionValue {
                        loc: loc.clone(),
                        option: "M".into(),
                        msg,
                    }),
                }
                return;
            }
            Resolved::DefaultGroup => {
                self.not_supported(loc, "g", value, literal);
                return;
            }
            Resolved::Ambiguous(a, b) => {
                self.config.warnings.push(format!(
                    "{loc}: readcf: ambiguous option name {name} (matches {a} and {b}); ignored"
                ));
                return;
            }
            Resolved::Unknown => {
                self.config.warnings.push(format!(
                    "{loc}: readcf: unknown option name {name}; ignored"
                ));
                return;
            }
        };
        let key = match &sub {
            Some(s) => format!("{}.{}", info.name, s.to_ascii_lowercase()),
            None => info.name.to_string(),
        };
        if !literal && (self.sticky.contains(&key) || self.sticky.contains(info.name)) {
            self.config.notes.push(format!(
                "{loc}: {key}={value} ignored: set on the command line"
            ));
            return;
        }
        if literal && !matches!(info.name, "PrivacyOptions" | "DontBlameSendmail") {
            self.sticky.insert(key.clone());
        }
        if info.name == "DaemonPortOptions" {
            self.daemons_from_command_line |= literal;
            self.daemon_values.push((loc.clone(), value.to_string()));
            return;
        }
        match info.support {
            Support::NotYet => self.not_supported(loc, &key, value, literal),
            Support::Supported => {
                if info.name == "MetricsAddress" {
                    self.metrics_loc = Some(loc.clone());
                }
                self.config
                    .options
                    .set_at
                    .insert(info.name, loc.to_string());
                if let Err(msg) = self
                    .config
                    .options
                    .set(info.name, sub.as_deref(), value, literal)
                {
                    self.errors.push(ConfigError::BadOptionValue {
                        loc: loc.clone(),
                        option: key,
                        msg,
                    });
                }
            }
        }
    }

    fn not_supported(&mut self, loc: &Location, name: &str, value: &str, literal: bool) {
        let base = name.split('.').next().unwrap_or(name).to_string();
        if self.warned.insert(base.clone()) {
            self.config.warnings.push(format!(
                "{loc}: option {base} is not supported yet; ignored"
            ));
        }
        self.config.options.unsupported.push(RawOption {
            name: name.to_string(),
            value: value.to_string(),
            loc: loc.clone(),
            literal,
        });
    }

    /// The number of the ruleset an `S` line (or a mailer's `S=`/`R=`) names; creates it.
    fn ruleset_number(
        &mut self,
        loc: &Location,
        name: Option<&str>,
        number: Option<u32>,
    ) -> Option<u32> {
        if let Some(n) = number
            && n >= MAX_NUMBERED_RULESET
        {
            self.errors.push(ConfigError::BadRuleset {
                loc: loc.clone(),
                msg: format!("bad ruleset number {n} (expected less than {MAX_NUMBERED_RULESET})"),
            });
            return None;
        }
        let n = match (name, number) {
            (None, Some(n)) => n,
            (None, None) => return None,
            (Some(name), number) => match (self.config.ruleset_names.get(name).copied(), number) {
                (Some(old), Some(new)) if old != new => {
                    self.errors.push(ConfigError::BadRuleset {
                        loc: loc.clone(),
                        msg: format!("{name}: ruleset changed value (old {old}, new {new}) (expected the same number as before)"),
                    });
                    return None;
                }
                (Some(old), _) => old,
                (None, Some(new)) => new,
                (None, None) => {
                    if self.next_named_ruleset <= MAX_NUMBERED_RULESET {
                        self.errors.push(ConfigError::BadRuleset {
                            loc: loc.clone(),
                            msg: format!(
                                "{name}: too many named rulesets ({MAX_NUMBERED_RULESET} max)"
                            ),
                        });
                        return None;
                    }
                    self.next_named_ruleset -= 1;
                    self.next_named_ruleset
                }
            },
        };
        if let Some(name) = name {
            self.config.ruleset_names.insert(name.to_string(), n);
        }
        let rs = self.config.rulesets.entry(n).or_insert_with(|| Ruleset {
            number: n,
            name: None,
            rules: Vec::new(),
            loc: loc.clone(),
        });
        if let Some(name) = name {
            rs.name = Some(name.to_string());
        }
        Some(n)
    }

    fn add_mailer(&mut self, loc: Location, name: String, fields: Vec<(char, String)>) {
        let mut m = Mailer {
            name: name.clone(),
            path: String::new(),
            flags: String::new(),
            argv: Vec::new(),
            sender_envelope_ruleset: None,
            sender_header_ruleset: None,
            recipient_envelope_ruleset: None,
            recipient_header_ruleset: None,
            eol: String::new(),
            line_limit: 0,
            mta_type: "dns".into(),
            addr_type: "rfc822".into(),
            diag_type: "smtp".into(),
            max_size: 0,
            max_recipients: 0,
            directory: None,
            user: None,
            fields: fields.clone(),
            loc: loc.clone(),
        };
        let bad = |msg: String| ConfigError::BadMailer {
            loc: loc.clone(),
            mailer: name.clone(),
            msg,
        };
        let mut errors = Vec::new();
        let mut rulesets = Vec::new();
        for (code, value) in &fields {
            let number = |v: &str| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{code}={v}: bad number (expected a whole number)"))
            };
            let result: Result<(), String> = match code {
                'P' => {
                    m.path = value.clone();
                    Ok(())
                }
                'F' => {
                    m.flags = value.chars().filter(|c| !c.is_whitespace()).collect();
                    Ok(())
                }
                'A' => {
                    m.argv = value.split_whitespace().map(str::to_string).collect();
                    Ok(())
                }
                'S' | 'R' => {
                    let (env, hdr) = match value.split_once('/') {
                        Some((e, h)) => (e.trim().to_string(), Some(h.trim().to_string())),
                        None => (value.trim().to_string(), None),
                    };
                    rulesets.push(env.clone());
                    rulesets.extend(hdr.clone());
                    if *code == 'S' {
                        m.sender_envelope_ruleset = Some(env);
                        m.sender_header_ruleset = hdr;
                    } else {
                        m.recipient_envelope_ruleset = Some(env);
                        m.recipient_header_ruleset = hdr;
                    }
                    Ok(())
                }
                'E' if value.is_empty() => {
                    Err("null end-of-line string (expected e.g. E=\\r\\n)".to_string())
                }
                'E' => {
                    m.eol = value.clone();
                    Ok(())
                }
                'L' => number(value).map(|n| m.line_limit = u32::try_from(n).unwrap_or(u32::MAX)),
                'M' => number(value).map(|n| m.max_size = n),
                'r' => {
                    number(value).map(|n| m.max_recipients = u32::try_from(n).unwrap_or(u32::MAX))
                }
                'T' => {
                    let mut parts = value.splitn(3, '/');
                    let mut next = |d: &str| {
                        parts
                            .next()
                            .filter(|p| !p.is_empty())
                            .unwrap_or(d)
                            .to_string()
                    };
                    m.mta_type = next("dns");
                    m.addr_type = next("rfc822");
                    m.diag_type = next("smtp");
                    Ok(())
                }
                'D' => {
                    m.directory = Some(value.clone());
                    Ok(())
                }
                'U' => {
                    m.user = Some(value.clone());
                    Ok(())
                }
                'C' | 'N' | 'Q' | 'W' | 'm' | '/' => Ok(()),
                other => Err(format!(
                    "unknown mailer equate {other}= (expected one of A C D E F L M N P Q R S T U W m r /)"
                )),
            };
            if let Err(msg) = result {
                errors.push(bad(msg));
            }
        }
        if m.argv.is_empty() {
            errors.push(bad("A= argument required (expected A=argv)".into()));
        }
        if m.path.is_empty() {
            errors.push(bad(
                "P= argument required (expected P=/path or P=[IPC])".into()
            ));
        }
        if m.path == "[TCP]" {
            errors.push(bad("P=[TCP] must be replaced by P=[IPC]".into()));
        }
        if m.path == "[IPC]" && m.argv.len() < 2 {
            errors.push(bad(
                "too few parameters for [IPC] mailer (expected A=TCP $h)".into(),
            ));
        }
        if m.eol.is_empty() {
            m.eol = if m.argv.iter().any(|a| a.contains("$u")) {
                "\n".into()
            } else {
                "\r\n".into()
            };
        }
        if m.line_limit == 0 && m.has_flag('L') {
            m.line_limit = 990;
        }
        for rs in rulesets {
            let (name, number) = match rs.parse::<u32>() {
                Ok(n) => (None, Some(n)),
                Err(_) => (Some(rs.as_str()), None),
            };
            if !rs.is_empty() && self.ruleset_number(&loc, name, number).is_none() && name.is_some()
            {
                // error already recorded
            }
        }
        if !errors.is_empty() {
            self.errors.extend(errors);
            return;
        }
        match self
            .config
            .mailers
            .iter_mut()
            .find(|old| old.name == m.name)
        {
            Some(old) => *old = m,
            None => self.config.mailers.push(m),
        }
    }

    fn read_class_file(
        &mut self,
        loc: &Location,
        name: &str,
        optional: bool,
        path: &str,
        format: Option<&str>,
    ) {
        let path = macros::expand_at_load(path, &self.config);
        if !path.starts_with(['/', '|']) && path.contains('@') {
            self.config.warnings.push(format!(
                "{loc}: class {name} from map \"{path}\" is not supported yet; ignored"
            ));
            return;
        }
        let text = if let Some(program) = path.strip_prefix('|') {
            let mut argv = program.split_whitespace();
            let Some(cmd) = argv.next() else {
                self.errors.push(ConfigError::BadLine {
                    loc: loc.clone(),
                    kind: 'F',
                    msg: "empty program (expected `Fx|/path/to/program`)".into(),
                });
                return;
            };
            std::process::Command::new(cmd)
                .args(argv)
                .stdin(std::process::Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            std::fs::read(&path).map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        match text {
            Ok(text) => {
                let words: Vec<String> = text
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| scan_class_line(l, format))
                    .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                    .collect();
                add_words(&mut self.config.classes, name, words);
            }
            Err(e) if optional => self
                .config
                .notes
                .push(format!("{loc}: optional class file {path} not read: {e}")),
            Err(e) => self.errors.push(ConfigError::ClassFile {
                loc: loc.clone(),
                name: name.to_string(),
                path,
                source: Arc::new(e),
            }),
        }
    }

    fn finish(mut self) -> (Config, Vec<ConfigError>) {
        let o = &self.config.options;
        if let (Some(addr), Some(loc)) = (o.metrics_address, &self.metrics_loc)
            && !addr.ip().to_canonical().is_loopback()
            && !o.metrics_allow_remote
        {
            self.errors.push(ConfigError::BadOptionValue {
                loc: loc.clone(),
                option: "MetricsAddress".into(),
                msg: format!(
                    "{addr} is not a loopback address (expected [::1]:PORT or 127.0.0.1:PORT; \
                     to serve metrics on another address, set O MetricsAllowRemote=True as well)"
                ),
            });
        }
        if self.daemons_from_command_line {
            let before = self.daemon_values.len();
            self.daemon_values
                .retain(|(loc, _)| loc.file.as_path() == Path::new("command line"));
            if before != self.daemon_values.len() {
                self.config.notes.push(format!(
                    "{} cf DaemonPortOptions line(s) ignored: DaemonPortOptions given on the command line",
                    before - self.daemon_values.len()
                ));
            }
        }
        if self.daemon_values.is_empty() {
            let loc = Location {
                file: Arc::new(self.config.file.clone()),
                line: 0,
            };
            self.daemon_values.push((loc, String::new()));
        }
        for (i, (loc, value)) in std::mem::take(&mut self.daemon_values)
            .into_iter()
            .enumerate()
        {
            if i >= MAX_DAEMONS {
                self.errors.push(ConfigError::Daemon {
                    loc,
                    msg: format!("too many daemons defined ({MAX_DAEMONS} max)"),
                });
                break;
            }
            match DaemonPortOptions::parse(&value, i) {
                Ok((d, warnings)) => {
                    self.config
                        .warnings
                        .extend(warnings.into_iter().map(|w| format!("{loc}: {w}")));
                    self.config.daemons.push(d);
                }
                Err(e) => self.errors.push(ConfigError::Daemon {
                    loc,
                    msg: e.to_string(),
                }),
            }
        }
        (self.config, self.errors)
    }
}

/// Adds words to a class, keeping the order of first appearance and no repeats.
fn add_words(classes: &mut BTreeMap<String, Vec<String>>, name: &str, words: Vec<String>) {
    let class = classes.entry(name.to_string()).or_default();
    for w in words {
        if !class.contains(&w) {
            class.push(w);
        }
    }
}

/// What sendmail's `sscanf(line, format, word)` keeps of one class-file line: `%s` (the
/// default) the first word, `%[^chars]` everything before the first of `chars`. Other
/// formats keep the whole line.
fn scan_class_line(line: &str, format: Option<&str>) -> Option<String> {
    let format = format.unwrap_or("%s");
    if let Some(set) = format.strip_prefix("%[^").and_then(|f| f.strip_suffix(']')) {
        let stop: Vec<char> = set.chars().filter(|c| *c != '\\').collect();
        let kept: String = line.chars().take_while(|c| !stop.contains(c)).collect();
        return (!kept.is_empty()).then_some(kept);
    }
    if format == "%s" {
        return line.split_whitespace().next().map(str::to_string);
    }
    Some(line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sendmail defines `${opMode}` before reading the cf, and FEATURE(redirect)'s rule
    /// expands it when read (`< ${opMode} >` must not come out empty, or `.REDIRECT`
    /// aliases never get `551 User has moved`; the oracle's `-bt` shows `< t >`).
    #[test]
    fn a_rule_reading_op_mode_gets_it_when_read() {
        let cf = "V10/Berkeley\nDjmta.example.test\nSParseLocal=98\nR$* < @ $+ .REDIRECT. >\t$: $1 < @ $2 . REDIRECT . > < ${opMode} >\n";
        let cfg = Config::from_str("redirect.cf", cf, &[]).unwrap();
        let rule = &cfg.ruleset("ParseLocal").unwrap().rules[0];
        assert_eq!(rule.rhs, "$: $1 < @ $2 . REDIRECT . > < t >");
    }

    /// The router's per-recipient test agrees with the list the relay check is built from.
    #[test]
    fn is_local_name_agrees_with_local_names() {
        let cf = "V10/Berkeley\nDjMta.Example.Test\nCwMail.Example.Test other.test\n";
        let cfg = Config::from_str("w.cf", cf, &[]).unwrap();
        let names = cfg.local_names();
        for n in [
            "mta.example.test",
            "Mta.Example.Test",
            "mail.example.test",
            "other.test",
            "localhost",
            "LOCALHOST",
            "[127.0.0.1]",
            "[ipv6:::1]",
            "example.test",
            "remote.test",
            "",
            &cfg.host.short.to_ascii_lowercase(),
            &cfg.host.fqdn.to_ascii_lowercase(),
        ] {
            assert_eq!(
                cfg.is_local_name(n),
                names.iter().any(|x| x == n),
                "{n:?} in {names:?}"
            );
        }
        assert!(cfg.is_local_name("mail.example.test"));
        assert!(!cfg.is_local_name("remote.test"));
    }
}
