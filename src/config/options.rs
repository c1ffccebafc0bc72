//! The option table and the typed [`Options`].
//!
//! In: an option name as written (`LogLevel`, `loglevel`, `LogLev`, `Timeout.command`, or the
//! one-letter `L` of `OL9` / `-oL9`) and its value text. Out: the option resolved against
//! [`OPTIONS`] — every option sendmail 8.17.1.9 knows (checked against the Debian binary: each
//! name below is accepted by it, and it rejects every other name with
//! `readcf: unknown option name X`) — and, for the options this project implements
//! ([`Support::Supported`]), a typed field of [`Options`] with sendmail's default.
//!
//! Name matching follows sendmail's `setoption`: case-insensitive; a unique prefix is accepted
//! as an abbreviation (with a warning, as sendmail prints `Option X used as abbreviation for
//! Y`); an ambiguous prefix or an unknown name is reported. `Timeout.x` carries its sub-option.
//!
//! Value syntax (op §5.6): integers as written (an unparsable number is an error here, where
//! sendmail's `atoi` would silently read 0); booleans true if empty or starting with
//! `t T y Y`, false otherwise (sendmail's `atobool`); time intervals as in op §4.1
//! ([`parse_duration`]); file modes in octal.
//!
//! Options of our own (not sendmail's, documented here):
//! * `LogFile=/path` — write the mail log to this file instead of syslog;
//! * `NameServers=ADDR[:PORT],...` — DNS servers to ask instead of `/etc/resolv.conf`
//!   (`192.0.2.1`, `192.0.2.1:5353`, `::1`, `[::1]:5353`; port defaults to 53);
//! * `MetricsAddress=ADDR:PORT` — serve `/metrics` (Prometheus text) and `/healthz` there
//!   (`[::1]:9125`, `127.0.0.1:9125`; empty or unset: no listener). A non-loopback address
//!   is a configuration error unless `MetricsAllowRemote=True` says it is meant.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::cf::lines::Location;
use super::macros::{MacroLookup, expand};

/// Whether the project implements an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Parsed into a typed field of [`Options`].
    Supported,
    /// Known to sendmail, accepted, stored raw in [`Options::unsupported`], and reported once
    /// as a warning.
    NotYet,
}

/// One row of the option table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionInfo {
    /// Long name, spelled as sendmail's table spells it.
    pub name: &'static str,
    /// Old one-letter name, if any.
    pub short: Option<char>,
    pub support: Support,
}

const fn s(name: &'static str, short: Option<char>) -> OptionInfo {
    OptionInfo {
        name,
        short,
        support: Support::Supported,
    }
}
const fn n(name: &'static str, short: Option<char>) -> OptionInfo {
    OptionInfo {
        name,
        short,
        support: Support::NotYet,
    }
}

/// The daemon's queue runner thread's nice(3) increment when `NiceQueueRun` is not set
/// (see [`crate::runner::Thread`]: it reads the next hops' replies and marks deliveries, and
/// a reply left waiting for the CPU is a message sent again after a crash).
pub const DEFAULT_RUNNER_NICE: i32 = -10;

/// Every option sendmail 8.17.1.9 (Debian build) accepts, plus our own `LogFile` and
/// `NameServers`. Source: op §5.6 and the binary itself (each name probed with `-bt`).
pub const OPTIONS: &[OptionInfo] = &[
    s("SevenBitInput", Some('7')),
    n("EightBitMode", Some('8')),
    s("AliasFile", Some('A')),
    s("AliasWait", Some('a')),
    s("BlankSub", Some('B')),
    s("MinFreeBlocks", Some('b')),
    n("CheckpointInterval", Some('C')),
    s("HoldExpensive", Some('c')),
    s("DeliveryMode", Some('d')),
    n("ErrorHeader", Some('E')),
    n("ErrorMode", Some('e')),
    s("TempFileMode", Some('F')),
    n("SaveFromLine", Some('f')),
    n("MatchGECOS", Some('G')),
    s("HelpFile", Some('H')),
    s("MaxHopCount", Some('h')),
    s("ResolverOptions", Some('I')),
    n("IgnoreDots", Some('i')),
    s("ForwardPath", Some('J')),
    s("SendMimeErrors", Some('j')),
    s("ConnectionCacheSize", Some('k')),
    s("ConnectionCacheTimeout", Some('K')),
    s("UseErrorsTo", Some('l')),
    s("LogLevel", Some('L')),
    s("MeToo", Some('m')),
    s("CheckAliases", Some('n')),
    s("OldStyleHeaders", Some('o')),
    s("DaemonPortOptions", Some('O')),
    s("PrivacyOptions", Some('p')),
    n("PostmasterCopy", Some('P')),
    n("QueueFactor", Some('q')),
    s("QueueDirectory", Some('Q')),
    n("DontPruneRoutes", Some('R')),
    s("Timeout", Some('r')),
    s("StatusFile", Some('S')),
    s("SuperSafe", Some('s')),
    s("QueueTimeout", Some('T')),
    n("TimeZoneSpec", Some('t')),
    n("UserDatabaseSpec", Some('U')),
    s("DefaultUser", Some('u')),
    n("FallbackMXhost", Some('V')),
    n("Verbose", Some('v')),
    n("TryNullMXList", Some('w')),
    s("QueueLA", Some('x')),
    s("RefuseLA", Some('X')),
    n("RecipientFactor", Some('y')),
    n("ForkEachJob", Some('Y')),
    n("ClassFactor", Some('z')),
    n("RetryFactor", Some('Z')),
    n("QueueSortOrder", None),
    s("HostsFile", None),
    n("MinQueueAge", None),
    n("MaxQueueAge", None),
    n("DefaultCharSet", None),
    s("ServiceSwitchFile", None),
    n("DialDelay", None),
    n("NoRecipientAction", None),
    s("SafeFileEnvironment", None),
    s("MaxMessageSize", None),
    n("ColonOkInAddr", None),
    n("MaxQueueRunSize", None),
    s("MaxDaemonChildren", None),
    n("DontExpandCnames", None),
    s("MustQuoteChars", None),
    s("SmtpGreetingMessage", None),
    s("UnixFromLine", None),
    s("OperatorChars", None),
    n("DontInitGroups", None),
    n("SingleLineFromHeader", None),
    n("AllowBogusHELO", None),
    s("ConnectionRateThrottle", None),
    n("UnsafeGroupWrites", None),
    n("DoubleBounceAddress", None),
    s("HostStatusDirectory", None),
    n("SingleThreadDelivery", None),
    s("RunAsUser", None),
    s("RrtImpliesDsn", None),
    s("PidFile", None),
    s("DontBlameSendmail", None),
    s("DontProbeInterfaces", None),
    s("MaxRecipientsPerMessage", None),
    s("DeadLetterDrop", None),
    n("MaxAliasRecursion", None),
    n("ConnectOnlyTo", None),
    s("TrustedUser", None),
    n("MaxMimeHeaderLength", None),
    s("ControlSocketName", None),
    s("MaxHeadersLength", None),
    s("ProcessTitlePrefix", None),
    n("DefaultAuthInfo", None),
    s("AuthMechanisms", None),
    s("ClientPortOptions", None),
    n("DataFileBufferSize", None),
    n("XscriptFileBufferSize", None),
    n("LDAPDefaultSpec", None),
    s("ServerCertFile", None),
    s("ServerKeyFile", None),
    s("ClientCertFile", None),
    s("ClientKeyFile", None),
    s("CACertFile", None),
    s("CACertPath", None),
    n("DHParameters", None),
    s("InputMailFilters", None),
    s("Milter", None),
    s("AuthOptions", None),
    s("QueueFileMode", None),
    n("CertFingerprintAlgorithm", None),
    n("CipherList", None),
    n("RandFile", None),
    n("TLSSrvOptions", None),
    s("BadRcptThrottle", None),
    s("DeliverByMin", None),
    s("MaxQueueChildren", None),
    s("MaxRunnersPerQueue", None),
    n("DirectSubmissionModifiers", None),
    s("NiceQueueRun", None),
    n("SharedMemoryKey", None),
    n("AuthMaxBits", None),
    n("MailboxDatabase", None),
    s("UseMSP", None),
    s("DelayLA", None),
    n("FastSplit", None),
    n("SoftBounce", None),
    n("SharedMemoryKeyFile", None),
    n("RejectLogInterval", None),
    n("RequiresDirfsync", None),
    s("ConnectionRateWindowSize", None),
    n("CRLFile", None),
    n("FallbackSmartHost", None),
    s("AuthRealm", None),
    n("CRLPath", None),
    s("HeloName", None),
    n("MaxNOOPCommands", None),
    n("BadRcptShutdown", None),
    n("BadRcptShutdownGood", None),
    n("ServerSSLOptions", None),
    n("ClientSSLOptions", None),
    s("RejectNUL", None),
    s("UseCompressedIPv6Addresses", None),
    n("SSLEngine", None),
    n("SSLEnginePath", None),
    s("TLSFallbacktoClear", None),
    s("SmtpUTF8", None),
    n("SetCertAltnames", None),
    n("CipherSuites", None),
    n("StrictTransportSecurity", None),
    // ours
    s("LogFile", None),
    s("NameServers", None),
    s("Chunking", None),
    // Ours, in sendmail's style, after Postfix's `*_destination_*` parameters (src/runner/limits.rs).
    s("DestinationConcurrencyLimit", None),
    s("LocalDestinationConcurrencyLimit", None),
    s("DestinationRateDelay", None),
    s("PipelineAcrossMessages", None),
    s("AuthPasswordFile", None),
    s("MinDataRate", None),
    s("MetricsAddress", None),
    s("MetricsAllowRemote", None),
];

/// What an option name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A table entry; `sub` is the part after the first `.` (`Timeout.command` → `command`);
    /// `abbreviated` if `name` was only a prefix.
    Option {
        info: OptionInfo,
        sub: Option<String>,
        abbreviated: bool,
    },
    /// `M` of `OMxvalue` / `-oMxvalue`: define macro `x`.
    DefineMacro,
    /// `g` of `Og`: the old default-group option (sendmail keeps it without a long name).
    DefaultGroup,
    /// A prefix of two or more names.
    Ambiguous(&'static str, &'static str),
    Unknown,
}

/// Resolves a name as written in `O Name=...` or `-O Name=...`; a one-character name is the
/// old one-letter name.
pub fn resolve(name: &str) -> Resolved {
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return resolve_short(c);
    }
    let (base, sub) = match name.split_once('.') {
        Some((b, s)) => (b, Some(s.to_string())),
        None => (name, None),
    };
    if let Some(info) = OPTIONS.iter().find(|o| o.name.eq_ignore_ascii_case(base)) {
        return Resolved::Option {
            info: *info,
            sub,
            abbreviated: false,
        };
    }
    let mut hits = OPTIONS
        .iter()
        .filter(|o| o.name.len() > base.len() && o.name[..base.len()].eq_ignore_ascii_case(base));
    match (hits.next(), hits.next()) {
        (Some(info), None) => Resolved::Option {
            info: *info,
            sub,
            abbreviated: true,
        },
        (Some(a), Some(b)) => Resolved::Ambiguous(a.name, b.name),
        _ => Resolved::Unknown,
    }
}

/// Resolves an old one-letter name (`-oL9`).
pub fn resolve_short(c: char) -> Resolved {
    match c {
        'M' => Resolved::DefineMacro,
        'g' => Resolved::DefaultGroup,
        _ => match OPTIONS.iter().find(|o| o.short == Some(c)) {
            Some(info) => Resolved::Option {
                info: *info,
                sub: None,
                abbreviated: false,
            },
            None => Resolved::Unknown,
        },
    }
}

/// A text option value, kept as written. Values from the cf are macro-expanded when used;
/// values from the command line are literal (sendmail: `$j` in `-O SmtpGreetingMessage=$j`
/// stays `$j`, facts §1.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub raw: String,
    /// True for command-line values: [`Text::expand`] returns `raw` unchanged.
    pub literal: bool,
}

impl Text {
    /// A value as a cf line gives it (to be expanded at use).
    pub fn cf(raw: &str) -> Text {
        Text {
            raw: raw.to_string(),
            literal: false,
        }
    }

    /// The value for use: expanded with `macros`, unless literal.
    pub fn expand(&self, macros: &dyn MacroLookup) -> String {
        if self.literal {
            self.raw.clone()
        } else {
            expand(&self.raw, macros)
        }
    }
}

/// `DeliveryMode` (op: `i b q d`; default `b`; an empty value means `i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    Interactive,
    Background,
    QueueOnly,
    Defer,
}

/// `user[:group]` of `RunAsUser` / `DefaultUser`, not yet looked up (`.` and `/` also
/// separate, as in sendmail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub user: String,
    pub group: Option<String>,
}

/// Timeouts of one kind per message precedence (op §4.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerPrecedence {
    pub normal: Duration,
    pub urgent: Duration,
    pub non_urgent: Duration,
    pub dsn: Duration,
}

impl PerPrecedence {
    fn all(d: Duration) -> PerPrecedence {
        PerPrecedence {
            normal: d,
            urgent: d,
            non_urgent: d,
            dsn: d,
        }
    }
}

/// `Timeout.*` (op §4.1.2 and §4.1.3), with sendmail's defaults. Zero means "none" where op
/// says so (`connect`, `queuewarn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub initial: Duration,
    pub helo: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    pub datainit: Duration,
    pub datablock: Duration,
    pub datafinal: Duration,
    pub rset: Duration,
    pub quit: Duration,
    pub misc: Duration,
    /// Server side: waiting for the next command.
    pub command: Duration,
    pub ident: Duration,
    pub fileopen: Duration,
    pub connect: Duration,
    pub iconnect: Duration,
    pub aconnect: Duration,
    pub control: Duration,
    pub lhlo: Duration,
    pub auth: Duration,
    pub starttls: Duration,
    pub hoststatus: Duration,
    pub queuewarn: PerPrecedence,
    pub queuereturn: PerPrecedence,
    pub resolver_retrans_first: Option<Duration>,
    pub resolver_retrans_normal: Option<Duration>,
    pub resolver_retry_first: Option<u32>,
    pub resolver_retry_normal: Option<u32>,
}

const MIN: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86400;

impl Default for Timeouts {
    fn default() -> Timeouts {
        let m = |n: u64| Duration::from_secs(n * MIN);
        Timeouts {
            initial: m(5),
            helo: m(5),
            mail: m(10),
            rcpt: Duration::from_secs(HOUR),
            datainit: m(5),
            datablock: Duration::from_secs(HOUR),
            datafinal: Duration::from_secs(HOUR),
            rset: m(5),
            quit: m(2),
            misc: m(2),
            command: Duration::from_secs(HOUR),
            ident: Duration::from_secs(5),
            fileopen: Duration::from_secs(60),
            connect: Duration::ZERO,
            iconnect: Duration::ZERO,
            aconnect: Duration::ZERO,
            control: m(2),
            lhlo: m(2),
            auth: m(10),
            starttls: Duration::from_secs(HOUR),
            hoststatus: m(30),
            queuewarn: PerPrecedence::all(Duration::ZERO),
            queuereturn: PerPrecedence::all(Duration::from_secs(5 * DAY)),
            resolver_retrans_first: None,
            resolver_retrans_normal: None,
            resolver_retry_first: None,
            resolver_retry_normal: None,
        }
    }
}

impl Timeouts {
    /// Sets `Timeout.<name>`; `name` as in op §4.1 (case-insensitive).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let name = name.to_ascii_lowercase();
        let mins = || parse_duration(value, 'm');
        let field = match name.as_str() {
            "initial" => &mut self.initial,
            "helo" => &mut self.helo,
            "mail" => &mut self.mail,
            "rcpt" => &mut self.rcpt,
            "datainit" => &mut self.datainit,
            "datablock" => &mut self.datablock,
            "datafinal" => &mut self.datafinal,
            "rset" => &mut self.rset,
            "quit" => &mut self.quit,
            "misc" => &mut self.misc,
            "command" => &mut self.command,
            "ident" => &mut self.ident,
            "fileopen" => &mut self.fileopen,
            "connect" => &mut self.connect,
            "iconnect" => &mut self.iconnect,
            "aconnect" => &mut self.aconnect,
            "control" => &mut self.control,
            "lhlo" => &mut self.lhlo,
            "auth" => &mut self.auth,
            "starttls" => &mut self.starttls,
            "hoststatus" => &mut self.hoststatus,
            _ => return self.set_special(&name, value),
        };
        *field = mins()?;
        Ok(())
    }

    fn set_special(&mut self, name: &str, value: &str) -> Result<(), String> {
        let queue = |unit| {
            if value.trim().eq_ignore_ascii_case("now") {
                Ok(Duration::ZERO)
            } else {
                parse_duration(value, unit)
            }
        };
        match name {
            "queuewarn" | "queuewarn.*" => self.queuewarn = PerPrecedence::all(queue('h')?),
            "queuewarn.normal" => self.queuewarn.normal = queue('h')?,
            "queuewarn.urgent" => self.queuewarn.urgent = queue('h')?,
            "queuewarn.non-urgent" => self.queuewarn.non_urgent = queue('h')?,
            "queuewarn.dsn" => self.queuewarn.dsn = queue('h')?,
            "queuereturn" | "queuereturn.*" => self.queuereturn = PerPrecedence::all(queue('d')?),
            "queuereturn.normal" => self.queuereturn.normal = queue('d')?,
            "queuereturn.urgent" => self.queuereturn.urgent = queue('d')?,
            "queuereturn.non-urgent" => self.queuereturn.non_urgent = queue('d')?,
            "queuereturn.dsn" => self.queuereturn.dsn = queue('d')?,
            "resolver.retrans" => {
                let d = parse_duration(value, 's')?;
                self.resolver_retrans_first = Some(d);
                self.resolver_retrans_normal = Some(d);
            }
            "resolver.retrans.first" => {
                self.resolver_retrans_first = Some(parse_duration(value, 's')?)
            }
            "resolver.retrans.normal" => {
                self.resolver_retrans_normal = Some(parse_duration(value, 's')?)
            }
            "resolver.retry" => {
                let n = parse_number(value)?;
                self.resolver_retry_first = Some(n);
                self.resolver_retry_normal = Some(n);
            }
            "resolver.retry.first" => self.resolver_retry_first = Some(parse_number(value)?),
            "resolver.retry.normal" => self.resolver_retry_normal = Some(parse_number(value)?),
            _ => {
                return Err(format!(
                    "invalid timeout {name} (expected one of initial helo mail rcpt datainit datablock datafinal rset quit misc command ident fileopen connect iconnect aconnect control lhlo auth starttls hoststatus queuewarn[.x] queuereturn[.x] resolver.*)"
                ));
            }
        }
        Ok(())
    }

    /// `O Timeout=...` / `Or...` without a sub-option: a comma list of `name=value` /
    /// `name:value`; a bare interval sets mail, rcpt, datainit, datablock, datafinal and
    /// command (sendmail's `inittimeouts`).
    pub fn set_list(&mut self, value: &str) -> Result<(), String> {
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item.starts_with(|c: char| c.is_ascii_digit()) {
                let d = parse_duration(item, 'm')?;
                self.mail = d;
                self.rcpt = d;
                self.datainit = d;
                self.datablock = d;
                self.datafinal = d;
                self.command = d;
            } else if let Some((k, v)) = item.split_once([':', '=']) {
                self.set(k.trim(), v.trim())?;
            } else {
                return Err(format!("bad timeout \"{item}\" (expected `name=interval`)"));
            }
        }
        Ok(())
    }
}

/// sendmail's time interval syntax (op §4.1, `convtime`): one or more `<number><unit>` with
/// units `s m h d w`; a number without unit uses `default_unit`. `1h30m`, `5m`, `90`.
pub fn parse_duration(text: &str, default_unit: char) -> Result<Duration, String> {
    let t = text.trim();
    let expected = || {
        format!(
            "bad time interval \"{t}\" (expected e.g. `30s`, `5m`, `1h30m`, `5d`, `1w`; a bare number is in {})",
            unit_name(default_unit)
        )
    };
    if t.is_empty() {
        return Err(expected());
    }
    let mut total: u64 = 0;
    let mut chars = t.chars().peekable();
    while chars.peek().is_some() {
        let mut n: u64 = 0;
        let mut digits = 0;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d)))
                .ok_or_else(expected)?;
            digits += 1;
            chars.next();
        }
        let unit = chars.next().unwrap_or(default_unit);
        if digits == 0 {
            return Err(expected());
        }
        let scale = match unit {
            's' => 1,
            'm' => MIN,
            'h' => HOUR,
            'd' => DAY,
            'w' => 7 * DAY,
            _ => return Err(expected()),
        };
        total = n
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(expected)?;
    }
    Ok(Duration::from_secs(total))
}

fn unit_name(unit: char) -> &'static str {
    match unit {
        's' => "seconds",
        'h' => "hours",
        'd' => "days",
        'w' => "weeks",
        _ => "minutes",
    }
}

/// A limit of at least one.
fn positive(n: usize) -> Result<usize, String> {
    if n == 0 {
        Err("0 (expected a limit of at least 1)".to_string())
    } else {
        Ok(n)
    }
}

fn parse_number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    let t = text.trim();
    t.strip_prefix('+')
        .unwrap_or(t)
        .parse::<T>()
        .map_err(|_| format!("bad number \"{t}\" (expected a whole number)"))
}

/// sendmail's `atobool`: true if empty or starting with `t T y Y`.
pub fn parse_bool(text: &str) -> bool {
    let t = text.trim();
    t.is_empty() || t.starts_with(['t', 'T', 'y', 'Y'])
}

fn parse_octal(text: &str) -> Result<u32, String> {
    let t = text.trim();
    u32::from_str_radix(t, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("bad file mode \"{t}\" (expected an octal mode such as 0600)"))
}

fn parse_user(text: &str) -> Result<UserSpec, String> {
    let t = text.trim();
    let (user, group) = match t.find([':', '.', '/']) {
        Some(i) => (
            &t[..i],
            Some(t[i + 1..].to_string()).filter(|g| !g.is_empty()),
        ),
        None => (t, None),
    };
    if user.is_empty() {
        return Err(format!(
            "bad user \"{t}\" (expected `user[:group]` or `uid[:gid]`)"
        ));
    }
    Ok(UserSpec {
        user: user.to_string(),
        group,
    })
}

/// Parses our `NameServers` value: `ADDR[:PORT],...`.
pub fn parse_name_servers(text: &str) -> Result<Vec<SocketAddr>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.parse::<SocketAddr>()
                .or_else(|_| item.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| format!("bad name server \"{item}\" (expected ADDR or ADDR:PORT, IPv6 with port as [ADDR]:PORT)"))
        })
        .collect()
}

/// Parses our `MetricsAddress` value: `ADDR:PORT` (IPv6 as `[ADDR]:PORT`); empty: none.
pub fn parse_metrics_address(text: &str) -> Result<Option<SocketAddr>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse::<SocketAddr>().map(Some).map_err(|_| {
        format!("bad address \"{t}\" (expected ADDR:PORT, IPv6 as [ADDR]:PORT, e.g. [::1]:9125)")
    })
}

/// `MaxHopCount` when the cf does not set it (observed on sendmail 8.17.1.9).
pub const DEFAULT_MAX_HOP_COUNT: u32 = 25;

/// `PrivacyOptions` words op §5.6 lists.
pub const PRIVACY_WORDS: &[&str] = &[
    "public",
    "needmailhelo",
    "needexpnhelo",
    "noexpn",
    "needvrfyhelo",
    "novrfy",
    "noetrn",
    "noverb",
    "restrictmailq",
    "restrictqrun",
    "restrictexpand",
    "noreceipts",
    "nobodyreturn",
    "goaway",
    "authwarnings",
    "noactualrecipient",
];

/// Splits a word list as sendmail does for `PrivacyOptions`/`DontBlameSendmail`: words are
/// runs of letters and digits, anything else separates.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// A known option this project does not implement yet, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOption {
    /// Long name as in [`OPTIONS`] (with `.sub` if one was given).
    pub name: String,
    pub value: String,
    pub loc: Location,
    /// From the command line (not to be macro-expanded).
    pub literal: bool,
}

/// `MinDataRate` when the cf does not set it: Postfix's `smtpd_min_data_rate` default.
pub const DEFAULT_MIN_DATA_RATE: u64 = 500;

/// The typed options, each with sendmail's default when not set.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `SmtpGreetingMessage` (`$e`). Default: the binary's `$j Sendmail $v ready at $b`
    /// (op; m4-generated cfs set `$j Sendmail $v/$Z; $b`). The server inserts `ESMTP` after
    /// the first word of the expanded text.
    pub smtp_greeting_message: Text,
    /// `LogLevel`, default 9.
    pub log_level: u32,
    /// Ours: `LogFile`; `None` = syslog.
    pub log_file: Option<Text>,
    /// `PidFile`, default `/var/run/sendmail.pid` (sendmail's Linux `_PATH_SENDMAILPID`).
    pub pid_file: Text,
    /// `HelpFile`: the text HELP answers from (none: `502 5.3.0 Sendmail … -- HELP not
    /// implemented`).
    pub help_file: Option<PathBuf>,
    /// `StatusFile`; `None` = no statistics kept.
    pub status_file: Option<PathBuf>,
    /// `QueueDirectory`, default `/var/spool/mqueue`.
    pub queue_directory: PathBuf,
    /// `AliasFile` specs (`[class:]file`), in order; several cf lines add up.
    pub alias_files: Vec<String>,
    /// `MaxMessageSize` in bytes; 0 = unlimited.
    pub max_message_size: u64,
    /// `MaxRecipientsPerMessage`; 0 = unlimited.
    pub max_recipients_per_message: u32,
    /// `MaxHopCount`: a message with more trace headers (`Received:` and the like, ours
    /// included) bounces `554 5.4.6 Too many hops`. Default 25 (sendmail 8.17 with the cf's
    /// `#O MaxHopCount=25` left commented out: 25 `Received:` + its own = 26 bounced,
    /// tests/data/hardened-default/oracle-maillog.txt).
    pub max_hop_count: u32,
    /// `MaxDaemonChildren`; 0 = unlimited.
    pub max_daemon_children: u32,
    /// `ConnectionRateThrottle` (connections per second per daemon); 0 = unlimited.
    pub connection_rate_throttle: u32,
    /// `ConnectionCacheSize`: idle SMTP connections kept per delivery slot; 0 = none.
    /// sendmail's default when the cf does not set it is 1 (op §5.6; m4 cfs set 2).
    pub connection_cache_size: usize,
    /// `ConnectionCacheTimeout`: how long an idle cached connection stays open (5m).
    pub connection_cache_timeout: Duration,
    /// `MaxQueueChildren`: deliveries under way at once in the whole runner; 0 = the
    /// runner's own bound (100, as Postfix's `default_process_limit`).
    pub max_queue_children: usize,
    /// `MaxRunnersPerQueue`: messages a queue run (`-q` interval or `sendmail -q`) has in
    /// delivery at once (sendmail: runners per queue group, each one message at a time);
    /// 0 = not set, the runner's own bound only. New mail is not a queue run and is not
    /// counted, as sendmail's arrivals are delivered outside its queue runners.
    pub max_runners_per_queue: usize,
    /// `NiceQueueRun`: the increment to the scheduling priority (nice(3)) of queue runs:
    /// the daemon's runner thread and `sendmail -q`. Not set: the daemon's runner thread
    /// runs at [`DEFAULT_RUNNER_NICE`] where the system allows it, `sendmail -q` unchanged.
    pub nice_queue_run: Option<i32>,
    /// Ours: `DestinationConcurrencyLimit`, SMTP connections at once to one next hop
    /// (Postfix's `default_destination_concurrency_limit`, 20).
    pub destination_concurrency_limit: usize,
    /// Ours: `LocalDestinationConcurrencyLimit`, deliveries at once to one local recipient
    /// (Postfix's `local_destination_concurrency_limit`, 2).
    pub local_destination_concurrency_limit: usize,
    /// Ours: `DestinationRateDelay`, the pause between two deliveries to one next hop
    /// (Postfix's `default_destination_rate_delay`, 0 = none).
    pub destination_rate_delay: Duration,
    /// Ours: `PipelineAcrossMessages`, a delivery waiting for a busy next hop sends its
    /// envelope behind another message's body and takes that connection over
    /// (`runner::follow`). Off by default, as sendmail: one round trip less per message
    /// under load, but more mail in flight when the daemon dies (docs/operation.md).
    pub pipeline_across_messages: bool,
    /// `ConnectionRateWindowSize`: the window of `${client_rate}` (default 60 s).
    pub connection_rate_window_size: Duration,
    /// `BadRcptThrottle`: past this many refused RCPTs in a session, each further RCPT
    /// waits a second (0: never).
    pub bad_rcpt_throttle: u32,
    /// `DeliveryMode`, default background.
    pub delivery_mode: DeliveryMode,
    /// `RefuseLA`; `None` = sendmail's default, 12 × online CPUs.
    pub refuse_la: Option<u32>,
    /// `DelayLA`; 0 = never delay.
    pub delay_la: u32,
    /// `QueueLA`; `None` = sendmail's default, 8 × online CPUs.
    pub queue_la: Option<u32>,
    /// `PrivacyOptions` words, lower case, in order, without repeats; lines add up.
    pub privacy_options: Vec<String>,
    /// `Timeout.*` and `QueueTimeout`.
    pub timeouts: Timeouts,
    /// `RunAsUser`.
    pub run_as_user: Option<UserSpec>,
    /// `DefaultUser`; `None` = sendmail's default (`mailnull`, else uid/gid 1).
    pub default_user: Option<UserSpec>,
    /// `HeloName`; `None` = `$j`.
    pub helo_name: Option<Text>,
    pub server_cert_file: Option<Text>,
    pub server_key_file: Option<Text>,
    pub ca_cert_file: Option<Text>,
    pub ca_cert_path: Option<Text>,
    /// `AuthMechanisms`, upper case, as written; `None` = not set (sendmail-rs then offers
    /// every mechanism it implements: `LOGIN PLAIN`).
    pub auth_mechanisms: Option<Vec<String>>,
    /// `AuthOptions` letters/words as written (`p`: plain-text mechanisms only over TLS).
    pub auth_options: Vec<String>,
    /// Ours: `AuthPasswordFile`, the `user:hash` file AUTH checks (none: the site's Cyrus
    /// SASL `Sendmail.conf`, if it names saslauthd; else no AUTH).
    pub auth_password_file: Option<Text>,
    /// `AuthRealm`: the realm saslauthd is asked about (`None`: `$j`, as sendmail).
    pub auth_realm: Option<Text>,
    /// Where each option was last set (`file:line`), for errors found after loading (a
    /// certificate file that does not parse).
    pub set_at: std::collections::BTreeMap<&'static str, String>,
    /// `ClientCertFile`, `ClientKeyFile`: the certificate we show when a server asks for one
    /// after our STARTTLS.
    pub client_cert_file: Option<Text>,
    pub client_key_file: Option<Text>,
    /// `TLSFallbacktoClear`, default false: after a failed TLS handshake, connect to the
    /// same address again at once without STARTTLS.
    pub tls_fallback_to_clear: bool,
    /// Ours: `NameServers`; empty = the system resolver configuration.
    pub name_servers: Vec<SocketAddr>,
    /// `ClientPortOptions` values as written, in order (one per address family is meant).
    pub client_port_options: Vec<String>,
    /// `RejectNUL`, default false.
    pub reject_nul: bool,
    /// `MaxHeadersLength`, default 32768; 0 = unlimited.
    pub max_headers_length: u32,
    /// Ours: `MinDataRate`, bytes per second a message must average after its grace
    /// (`smtp::conn::DataClock`); default 500 (Postfix's `smtpd_min_data_rate`); 0 = none.
    pub min_data_rate: u64,
    /// Ours: `MetricsAddress`, where the metrics listener serves (None: no listener).
    pub metrics_address: Option<SocketAddr>,
    /// Ours: `MetricsAllowRemote`, default false: a non-loopback `MetricsAddress` is allowed.
    pub metrics_allow_remote: bool,
    /// `SmtpUTF8` (op §6.9, EAI): offer SMTPUTF8 (RFC 6531); default false, as in sendmail.
    pub smtp_utf8: bool,
    /// `DeliverByMin`, default 0: EHLO offers `DELIVERBY` (with this value when it is above
    /// 0) and MAIL takes `BY=` (RFC 2852); below 0 neither (sendmail's `srvrsmtp.c`; on the
    /// oracle `-O DeliverByMin=60` gives `250-DELIVERBY 60`, `-1` no keyword and
    /// `555 5.5.4 BY parameter unrecognized`).
    pub deliver_by_min: i64,
    /// Ours: `Chunking`, default false: offer CHUNKING/BDAT (RFC 3030). sendmail 8.17 has no
    /// CHUNKING, so a drop-in answers EHLO without it unless the admin asks for it.
    pub chunking: bool,
    /// `MinFreeBlocks`, default 100.
    pub min_free_blocks: u64,
    /// `TempFileMode`, default 0600.
    pub temp_file_mode: u32,
    /// `DontBlameSendmail` words as written; lines add up.
    pub dont_blame_sendmail: Vec<String>,
    /// `UseCompressedIPv6Addresses`, default false (`IPv6:0:0:0:0:0:0:0:1` style).
    pub use_compressed_ipv6_addresses: bool,
    /// `OperatorChars` (`$o`): the characters that are tokens of their own in addresses, in
    /// addition to the fixed `()<>,;"` and CR/LF. Default `.:%@!^/[]+` (configuration level
    /// 7 and later).
    pub operator_chars: String,
    /// `InputMailFilters`: the names of the `X` filters every daemon uses, in order (a
    /// daemon's own `InputMailFilters=` in `DaemonPortOptions` replaces it).
    pub input_mail_filters: Vec<String>,
    /// `Milter.<sub>` options as given (`macros.connect`, `LogLevel`, `maxdatasize`), sub
    /// names lower-cased; read by `milter::config`.
    pub milter: Vec<(String, String)>,
    /// `SevenBitInput`, default false: the eighth bit of every body byte is cleared at
    /// receipt (SMTP and command line), as sendmail's `collect` does.
    pub seven_bit_input: bool,
    /// `AliasWait` (default 10 minutes in the m4 cfs). No effect: see the README's table.
    pub alias_wait: Duration,
    /// `BlankSub`: the character an unquoted blank in an address becomes (default a blank,
    /// i.e. none); the ruleset engine's tokenizer applies it.
    pub blank_sub: char,
    /// `HoldExpensive`. No effect: see the README's table.
    pub hold_expensive: bool,
    /// `QueueFileMode`: the mode of queue files; `None` = 0600 (sendmail: 0600, 0660 with
    /// `RunAsUser` set and not root).
    pub queue_file_mode: Option<u32>,
    /// `ResolverOptions` as written (`+WorkAroundBrokenAAAA`, `+AAONLY`, …). See the README.
    pub resolver_options: String,
    /// `SendMimeErrors`, default true: EHLO offers `DSN` only when it is set (observed on
    /// sendmail 8.17.1.9 with `O SendMimeErrors=False`: no `250-DSN`).
    pub send_mime_errors: bool,
    /// `ForwardPath`: the `.forward` files to try, colon-separated, with `$z` (home), `$w`
    /// (host), `$u` (user) expanded; empty = no forwarding. Default `$z/.forward`.
    pub forward_path: Text,
    /// `HostStatusDirectory`; `None` = not set. No effect: see the README's table.
    pub host_status_directory: Option<Text>,
    /// `UseErrorsTo`, default false: a failure notice also goes to the original's
    /// `Errors-To:` addresses (`deliver::dsn`).
    pub use_errors_to: bool,
    /// `MeToo`, default true (sendmail 8.17): the sender stays in an alias list it is on;
    /// false drops it from the expansions (`runner::expand::drop_sender`).
    pub me_too: bool,
    /// `CheckAliases`, default false. No effect: see the README's table.
    pub check_aliases: bool,
    /// `OldStyleHeaders`. No effect: see the README's table.
    pub old_style_headers: bool,
    /// `SuperSafe` as written (`True`, `False`, `Interactive`, `PostMilter`). No effect: we
    /// always sync the queue file before the 250.
    pub super_safe: String,
    /// `HostsFile`, default `/etc/hosts`: where host names are looked up before DNS.
    pub hosts_file: PathBuf,
    /// `ServiceSwitchFile`, default `/etc/mail/service.switch`: its `hosts` line says
    /// whether DNS is asked (`hosts files` alone: never).
    pub service_switch_file: PathBuf,
    /// `SafeFileEnvironment`: file deliveries only to regular files, inside this
    /// directory (`/`: anywhere, still regular files only).
    pub safe_file_environment: Option<PathBuf>,
    /// `MustQuoteChars`. See the README's table.
    pub must_quote_chars: String,
    /// `UnixFromLine`, default `From $g $d`: the line that starts each message in an mbox.
    pub unix_from_line: Text,
    /// `RrtImpliesDsn`, default false: `Return-Receipt-To:` asks for a return receipt to
    /// the envelope sender (`deliver::dsn::plan`).
    pub rrt_implies_dsn: bool,
    /// `DeadLetterDrop`: where a bounce that cannot be returned or sent to the postmaster
    /// is saved, last, when `SafeFileEnvironment` is not set (`runner::notices`).
    pub dead_letter_drop: Option<PathBuf>,
    /// `TrustedUser`: a user that may act as root for the files sendmail checks. See the
    /// README's table.
    pub trusted_user: Option<UserSpec>,
    /// `ControlSocketName`: sendmail's control socket. See the README's table.
    pub control_socket_name: Option<PathBuf>,
    /// `ProcessTitlePrefix`. See the README's table.
    pub process_title_prefix: Option<Text>,
    /// `UseMSP` (submit.cf). See the README's table.
    pub use_msp: bool,
    /// `DontProbeInterfaces` as written (`True`, `False`, `loopback`). See the README.
    pub dont_probe_interfaces: String,
    /// Known options not implemented yet, in the order given.
    pub unsupported: Vec<RawOption>,
}

impl Options {
    /// `PrivacyOptions=authwarnings` (or `goaway`) is set: `X-Authentication-Warning:`
    /// headers are added.
    pub fn auth_warnings(&self) -> bool {
        let p = &self.privacy_options;
        p.iter().any(|w| w == "authwarnings" || w == "goaway")
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            smtp_greeting_message: Text::cf("$j Sendmail $v ready at $b"),
            log_level: 9,
            log_file: None,
            help_file: None,
            pid_file: Text::cf("/var/run/sendmail.pid"),
            status_file: None,
            queue_directory: PathBuf::from("/var/spool/mqueue"),
            alias_files: Vec::new(),
            max_message_size: 0,
            max_recipients_per_message: 0,
            max_hop_count: DEFAULT_MAX_HOP_COUNT,
            max_daemon_children: 0,
            connection_rate_throttle: 0,
            connection_cache_size: 1,
            connection_cache_timeout: Duration::from_secs(300),
            max_queue_children: 0,
            max_runners_per_queue: 0,
            nice_queue_run: None,
            destination_concurrency_limit: 20,
            local_destination_concurrency_limit: 2,
            destination_rate_delay: Duration::ZERO,
            pipeline_across_messages: false,
            connection_rate_window_size: Duration::from_secs(60),
            bad_rcpt_throttle: 0,
            delivery_mode: DeliveryMode::Background,
            refuse_la: None,
            delay_la: 0,
            queue_la: None,
            privacy_options: Vec::new(),
            timeouts: Timeouts::default(),
            run_as_user: None,
            default_user: None,
            helo_name: None,
            server_cert_file: None,
            server_key_file: None,
            ca_cert_file: None,
            ca_cert_path: None,
            auth_mechanisms: None,
            auth_options: Vec::new(),
            auth_password_file: None,
            auth_realm: None,
            set_at: std::collections::BTreeMap::new(),
            client_cert_file: None,
            client_key_file: None,
            tls_fallback_to_clear: false,
            name_servers: Vec::new(),
            client_port_options: Vec::new(),
            reject_nul: false,
            smtp_utf8: false,
            deliver_by_min: 0,
            chunking: false,
            max_headers_length: 32768,
            min_data_rate: DEFAULT_MIN_DATA_RATE,
            metrics_address: None,
            metrics_allow_remote: false,
            min_free_blocks: 100,
            temp_file_mode: 0o600,
            dont_blame_sendmail: Vec::new(),
            use_compressed_ipv6_addresses: false,
            operator_chars: ".:%@!^/[]+".to_string(),
            input_mail_filters: Vec::new(),
            milter: Vec::new(),
            seven_bit_input: false,
            alias_wait: Duration::from_secs(10 * MIN),
            blank_sub: ' ',
            hold_expensive: false,
            queue_file_mode: None,
            resolver_options: String::new(),
            send_mime_errors: true,
            forward_path: Text::cf("$z/.forward"),
            host_status_directory: None,
            use_errors_to: false,
            me_too: true,
            check_aliases: false,
            old_style_headers: false,
            super_safe: "True".to_string(),
            hosts_file: PathBuf::from("/etc/hosts"),
            service_switch_file: PathBuf::from("/etc/mail/service.switch"),
            safe_file_environment: None,
            must_quote_chars: String::new(),
            unix_from_line: Text::cf("From $g $d"),
            rrt_implies_dsn: false,
            dead_letter_drop: None,
            trusted_user: None,
            control_socket_name: None,
            process_title_prefix: None,
            use_msp: false,
            dont_probe_interfaces: String::new(),
            unsupported: Vec::new(),
        }
    }
}

impl Options {
    /// Sets a [`Support::Supported`] option (not `DaemonPortOptions`, which the loader keeps).
    /// `literal` marks a command-line value. The error text says what was expected.
    pub fn set(
        &mut self,
        name: &str,
        sub: Option<&str>,
        value: &str,
        literal: bool,
    ) -> Result<(), String> {
        let text = || Text {
            raw: value.to_string(),
            literal,
        };
        let path = || -> Result<PathBuf, String> {
            let t = value.trim();
            if t.is_empty() {
                Err("empty path (expected a file name)".to_string())
            } else {
                Ok(PathBuf::from(t))
            }
        };
        match name {
            "SmtpGreetingMessage" => {
                let raw = if literal {
                    value.to_string()
                } else {
                    super::cf::lines::munch(value, None).0
                };
                self.smtp_greeting_message = Text { raw, literal };
            }
            "LogLevel" => self.log_level = parse_number(value)?,
            "LogFile" => self.log_file = Some(text()),
            "PidFile" => self.pid_file = text(),
            "HelpFile" => self.help_file = Some(path()?),
            "StatusFile" => self.status_file = Some(path()?),
            "QueueDirectory" => self.queue_directory = path()?,
            "AliasFile" => {
                let specs = value.split(',').map(str::trim).filter(|s| !s.is_empty());
                self.alias_files.extend(specs.map(str::to_string));
            }
            "MaxMessageSize" => self.max_message_size = parse_number(value)?,
            "MaxRecipientsPerMessage" => self.max_recipients_per_message = parse_number(value)?,
            "MaxHopCount" => self.max_hop_count = parse_number(value)?,
            "MaxDaemonChildren" => self.max_daemon_children = parse_number(value)?,
            "ConnectionRateThrottle" => self.connection_rate_throttle = parse_number(value)?,
            "ConnectionCacheSize" => self.connection_cache_size = parse_number(value)?,
            "ConnectionCacheTimeout" => self.connection_cache_timeout = parse_duration(value, 'm')?,
            "MaxQueueChildren" => self.max_queue_children = parse_number(value)?,
            "MaxRunnersPerQueue" => self.max_runners_per_queue = parse_number(value)?,
            "NiceQueueRun" => self.nice_queue_run = Some(parse_number(value)?),
            "DestinationConcurrencyLimit" => {
                self.destination_concurrency_limit = positive(parse_number(value)?)?
            }
            "LocalDestinationConcurrencyLimit" => {
                self.local_destination_concurrency_limit = positive(parse_number(value)?)?
            }
            "DestinationRateDelay" => self.destination_rate_delay = parse_duration(value, 's')?,
            "PipelineAcrossMessages" => self.pipeline_across_messages = parse_bool(value),
            "ConnectionRateWindowSize" => {
                self.connection_rate_window_size = parse_duration(value, 's')?
            }
            "BadRcptThrottle" => self.bad_rcpt_throttle = parse_number(value)?,
            "DeliveryMode" => {
                self.delivery_mode = match value.trim().chars().next() {
                    None | Some('i') => DeliveryMode::Interactive,
                    Some('b') => DeliveryMode::Background,
                    Some('q') => DeliveryMode::QueueOnly,
                    Some('d') => DeliveryMode::Defer,
                    Some(c) => {
                        return Err(format!(
                            "Unknown delivery mode {c} (expected i, b, q or d: interactive, background, queue, defer)"
                        ));
                    }
                }
            }
            "RefuseLA" => self.refuse_la = Some(parse_number(value)?),
            "DelayLA" => self.delay_la = parse_number(value)?,
            "QueueLA" => self.queue_la = Some(parse_number(value)?),
            "PrivacyOptions" => {
                for w in words(value) {
                    let w = w.to_ascii_lowercase();
                    if !PRIVACY_WORDS.contains(&w.as_str()) {
                        return Err(format!(
                            "{w} unrecognized (expected some of {})",
                            PRIVACY_WORDS.join(" ")
                        ));
                    }
                    if !self.privacy_options.contains(&w) {
                        self.privacy_options.push(w);
                    }
                }
            }
            "InputMailFilters" => {
                self.input_mail_filters = value
                    .split([';', ','])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
            }
            "Milter" => {
                let Some(sub) = sub else {
                    return Err(
                        "invalid Milter option, must specify suboption (expected Milter.LogLevel or Milter.macros.<stage>)"
                            .to_string(),
                    );
                };
                self.milter
                    .push((sub.to_ascii_lowercase(), value.trim().to_string()));
            }
            "Timeout" => match sub {
                Some(sub) => self.timeouts.set(sub, value)?,
                None => self.timeouts.set_list(value)?,
            },
            "QueueTimeout" => {
                let (ret, warn) = match value.split_once('/') {
                    Some((r, w)) => (r, Some(w)),
                    None => (value, None),
                };
                if let Some(w) = warn {
                    self.timeouts.set("queuewarn", w)?;
                }
                self.timeouts.set("queuereturn", ret)?;
            }
            "RunAsUser" => self.run_as_user = Some(parse_user(value)?),
            "DefaultUser" => self.default_user = Some(parse_user(value)?),
            "HeloName" => self.helo_name = Some(text()),
            "ServerCertFile" => self.server_cert_file = Some(text()),
            "ServerKeyFile" => self.server_key_file = Some(text()),
            "CACertFile" => self.ca_cert_file = Some(text()),
            "CACertPath" => self.ca_cert_path = Some(text()),
            "AuthMechanisms" => {
                let mechs = value.split([' ', '\t', ',']).filter(|w| !w.is_empty());
                self.auth_mechanisms = Some(mechs.map(str::to_ascii_uppercase).collect())
            }
            "AuthOptions" => self.auth_options = words(value).map(str::to_string).collect(),
            "AuthPasswordFile" => self.auth_password_file = Some(text()),
            "AuthRealm" => self.auth_realm = Some(text()),
            "ClientCertFile" => self.client_cert_file = Some(text()),
            "ClientKeyFile" => self.client_key_file = Some(text()),
            "TLSFallbacktoClear" => self.tls_fallback_to_clear = parse_bool(value),
            "NameServers" => self.name_servers = parse_name_servers(value)?,
            "ClientPortOptions" => self.client_port_options.push(value.to_string()),
            "RejectNUL" => self.reject_nul = parse_bool(value),
            "SmtpUTF8" => self.smtp_utf8 = parse_bool(value),
            "DeliverByMin" => self.deliver_by_min = parse_number(value)?,
            "Chunking" => self.chunking = parse_bool(value),
            "MaxHeadersLength" => self.max_headers_length = parse_number(value)?,
            "MinDataRate" => self.min_data_rate = parse_number(value)?,
            "MetricsAddress" => self.metrics_address = parse_metrics_address(value)?,
            "MetricsAllowRemote" => self.metrics_allow_remote = parse_bool(value),
            "MinFreeBlocks" => {
                let (blocks, size) = match value.split_once('/') {
                    Some((b, s)) => (b, Some(s)),
                    None => (value, None),
                };
                if let Some(size) = size {
                    self.max_message_size = parse_number(size)?;
                }
                self.min_free_blocks = parse_number(blocks)?;
            }
            "TempFileMode" => self.temp_file_mode = parse_octal(value)?,
            "DontBlameSendmail" => self
                .dont_blame_sendmail
                .extend(words(value).map(str::to_string)),
            "UseCompressedIPv6Addresses" => self.use_compressed_ipv6_addresses = parse_bool(value),
            "OperatorChars" => {
                self.operator_chars = if literal {
                    value.to_string()
                } else {
                    super::cf::lines::munch(value, None).0
                }
            }
            "SevenBitInput" => self.seven_bit_input = parse_bool(value),
            "AliasWait" => self.alias_wait = parse_duration(value, 'm')?,
            "BlankSub" => self.blank_sub = value.trim().chars().next().unwrap_or(' '),
            "HoldExpensive" => self.hold_expensive = parse_bool(value),
            "QueueFileMode" => self.queue_file_mode = Some(parse_octal(value)?),
            "ResolverOptions" => self.resolver_options = value.trim().to_string(),
            "SendMimeErrors" => self.send_mime_errors = parse_bool(value),
            "ForwardPath" => self.forward_path = text(),
            "HostStatusDirectory" => {
                self.host_status_directory = Some(text()).filter(|t| !t.raw.trim().is_empty())
            }
            "UseErrorsTo" => self.use_errors_to = parse_bool(value),
            "MeToo" => self.me_too = parse_bool(value),
            "CheckAliases" => self.check_aliases = parse_bool(value),
            "OldStyleHeaders" => self.old_style_headers = parse_bool(value),
            "SuperSafe" => self.super_safe = value.trim().to_string(),
            "HostsFile" => self.hosts_file = path()?,
            "ServiceSwitchFile" => self.service_switch_file = path()?,
            "SafeFileEnvironment" => {
                self.safe_file_environment =
                    Some(PathBuf::from(value.trim())).filter(|p| !p.as_os_str().is_empty())
            }
            "MustQuoteChars" => self.must_quote_chars = value.to_string(),
            "UnixFromLine" => self.unix_from_line = text(),
            "RrtImpliesDsn" => self.rrt_implies_dsn = parse_bool(value),
            "DeadLetterDrop" => self.dead_letter_drop = Some(path()?),
            "TrustedUser" => self.trusted_user = Some(parse_user(value)?),
            "ControlSocketName" => self.control_socket_name = Some(path()?),
            "ProcessTitlePrefix" => self.process_title_prefix = Some(text()),
            "UseMSP" => self.use_msp = parse_bool(value),
            "DontProbeInterfaces" => self.dont_probe_interfaces = value.trim().to_string(),
            other => {
                return Err(format!(
                    "option {other} has no typed field (internal: not supported)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(r: Resolved) -> String {
        match r {
            Resolved::Option {
                info,
                sub,
                abbreviated,
            } => {
                format!(
                    "{}{}{}",
                    info.name,
                    sub.map(|s| format!(".{s}")).unwrap_or_default(),
                    if abbreviated { " (abbrev)" } else { "" }
                )
            }
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn names_resolve_case_insensitively_and_by_unique_prefix() {
        assert_eq!(name_of(resolve("LogLevel")), "LogLevel");
        assert_eq!(name_of(resolve("loglevel")), "LogLevel");
        assert_eq!(
            name_of(resolve("smtpgreetingmess")),
            "SmtpGreetingMessage (abbrev)"
        );
        assert_eq!(name_of(resolve("Timeout.command")), "Timeout.command");
        assert_eq!(name_of(resolve("L")), "LogLevel");
        assert_eq!(name_of(resolve("O")), "DaemonPortOptions");
        assert_eq!(resolve("M"), Resolved::DefineMacro);
        assert_eq!(resolve("W"), Resolved::Unknown);
        assert_eq!(resolve("NoSuchOption"), Resolved::Unknown);
        assert_eq!(
            resolve("Max"),
            Resolved::Ambiguous("MaxHopCount", "MaxQueueAge")
        );
        assert_eq!(name_of(resolve("rejectnul")), "RejectNUL");
    }

    #[test]
    fn every_short_name_is_unique() {
        for o in OPTIONS {
            if let Some(c) = o.short {
                assert_eq!(
                    OPTIONS.iter().filter(|p| p.short == Some(c)).count(),
                    1,
                    "{c}"
                );
            }
            assert_eq!(
                OPTIONS
                    .iter()
                    .filter(|p| p.name.eq_ignore_ascii_case(o.name))
                    .count(),
                1,
                "{}",
                o.name
            );
        }
    }

    #[test]
    fn every_supported_option_has_a_field() {
        for o in OPTIONS
            .iter()
            .filter(|o| o.support == Support::Supported && o.name != "DaemonPortOptions")
        {
            let mut opts = Options::default();
            let value = match o.name {
                "SmtpGreetingMessage"
                | "LogFile"
                | "PidFile"
                | "HelpFile"
                | "StatusFile"
                | "QueueDirectory"
                | "AliasFile"
                | "HeloName"
                | "ServerCertFile"
                | "ServerKeyFile"
                | "CACertFile"
                | "CACertPath"
                | "AuthPasswordFile"
                | "ClientCertFile"
                | "ClientKeyFile"
                | "ClientPortOptions" => "/x",
                "AuthMechanisms" => "PLAIN",
                "AuthOptions" => "p",
                "DeliveryMode" => "q",
                "PrivacyOptions" => "goaway",
                "Timeout" => "5m",
                "QueueTimeout" => "5d/4h",
                "RunAsUser" | "DefaultUser" => "mail:mail",
                "NameServers" => "::1",
                "MetricsAddress" => "[::1]:9125",
                "DontBlameSendmail" => "safe",
                "RejectNUL"
                | "UseCompressedIPv6Addresses"
                | "SmtpUTF8"
                | "Chunking"
                | "TLSFallbacktoClear"
                | "PipelineAcrossMessages"
                | "MetricsAllowRemote" => "true",
                "OperatorChars" => ".:@",
                "SevenBitInput" | "HoldExpensive" | "UseErrorsTo" | "CheckAliases"
                | "OldStyleHeaders" | "RrtImpliesDsn" | "UseMSP" => "true",
                "SendMimeErrors" | "MeToo" => "false",
                "BlankSub" => ".",
                "QueueFileMode" => "0640",
                "ResolverOptions" => "+WorkAroundBrokenAAAA",
                "SuperSafe" => "PostMilter",
                "ForwardPath"
                | "HostStatusDirectory"
                | "HostsFile"
                | "ServiceSwitchFile"
                | "SafeFileEnvironment"
                | "DeadLetterDrop"
                | "ControlSocketName"
                | "ProcessTitlePrefix"
                | "AuthRealm" => "/y",
                "MustQuoteChars" => ".'",
                "UnixFromLine" => "From $g",
                "TrustedUser" => "smmta",
                "DontProbeInterfaces" => "loopback",
                "TempFileMode" => "0644",
                _ => "7",
            };
            // Milter has only suboptions (Milter.LogLevel, Milter.macros.connect ...).
            let sub = (o.name == "Milter").then_some("LogLevel");
            assert_eq!(opts.set(o.name, sub, value, false), Ok(()), "{}", o.name);
            assert_ne!(opts, Options::default(), "{} changed nothing", o.name);
        }
    }

    #[test]
    fn numbers_must_parse() {
        let mut o = Options::default();
        assert_eq!(o.set("LogLevel", None, "14", false), Ok(()));
        assert_eq!(o.log_level, 14);
        assert_eq!(
            o.set("LogLevel", None, "abc", false),
            Err("bad number \"abc\" (expected a whole number)".into())
        );
        assert!(o.set("MaxMessageSize", None, "-1", false).is_err());
    }

    #[test]
    fn booleans_as_sendmail_reads_them() {
        for t in ["", "t", "True", "y", "Yes"] {
            assert!(parse_bool(t), "{t}");
        }
        for f in ["f", "False", "n", "1", "0"] {
            assert!(!parse_bool(f), "{f}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m", 'm'), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("5m", 's'), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("90", 'm'), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90", 's'), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("2w1d", 'm'),
            Ok(Duration::from_secs(15 * 86400))
        );
        assert!(
            parse_duration("5x", 'm')
                .unwrap_err()
                .contains("bad time interval \"5x\"")
        );
        assert!(parse_duration("m", 'm').is_err());
        assert!(parse_duration("", 'm').is_err());
    }

    #[test]
    fn timeouts() {
        let mut o = Options::default();
        o.set("Timeout", Some("command"), "25m", false).unwrap();
        o.set("Timeout", Some("Ident"), "5s", false).unwrap();
        o.set("Timeout", Some("queuereturn"), "5d", false).unwrap();
        o.set("Timeout", Some("queuewarn.urgent"), "1h", false)
            .unwrap();
        assert_eq!(o.timeouts.command, Duration::from_secs(1500));
        assert_eq!(o.timeouts.ident, Duration::from_secs(5));
        assert_eq!(o.timeouts.queuereturn.dsn, Duration::from_secs(5 * 86400));
        assert_eq!(o.timeouts.queuewarn.urgent, Duration::from_secs(3600));
        assert_eq!(o.timeouts.queuewarn.normal, Duration::ZERO);
        assert!(
            o.set("Timeout", Some("bogus"), "1m", false)
                .unwrap_err()
                .starts_with("invalid timeout bogus")
        );
        o.set("QueueTimeout", None, "3d/2h", false).unwrap();
        assert_eq!(
            o.timeouts.queuereturn.normal,
            Duration::from_secs(3 * 86400)
        );
        assert_eq!(o.timeouts.queuewarn.normal, Duration::from_secs(7200));
        o.set("Timeout", None, "10m, helo=1m", false).unwrap();
        assert_eq!(o.timeouts.mail, Duration::from_secs(600));
        assert_eq!(o.timeouts.helo, Duration::from_secs(60));
        o.set("Timeout", Some("queuereturn"), "now", true).unwrap();
        assert_eq!(o.timeouts.queuereturn.normal, Duration::ZERO);
    }

    #[test]
    fn delivery_mode_privacy_users_modes_servers() {
        let mut o = Options::default();
        assert_eq!(o.delivery_mode, DeliveryMode::Background);
        o.set("DeliveryMode", None, "background", false).unwrap();
        assert_eq!(o.delivery_mode, DeliveryMode::Background);
        o.set("DeliveryMode", None, "", false).unwrap();
        assert_eq!(o.delivery_mode, DeliveryMode::Interactive);
        assert!(
            o.set("DeliveryMode", None, "x", false)
                .unwrap_err()
                .starts_with("Unknown delivery mode x")
        );

        o.set("PrivacyOptions", None, "needmailhelo,Goaway", false)
            .unwrap();
        o.set("PrivacyOptions", None, "goaway, noetrn", false)
            .unwrap();
        assert_eq!(o.privacy_options, vec!["needmailhelo", "goaway", "noetrn"]);
        assert!(
            o.set("PrivacyOptions", None, "nonsense", false)
                .unwrap_err()
                .starts_with("nonsense unrecognized")
        );

        o.set("DefaultUser", None, "mail:mail", false).unwrap();
        assert_eq!(
            o.default_user,
            Some(UserSpec {
                user: "mail".into(),
                group: Some("mail".into())
            })
        );
        o.set("RunAsUser", None, "smmta", false).unwrap();
        assert_eq!(
            o.run_as_user,
            Some(UserSpec {
                user: "smmta".into(),
                group: None
            })
        );

        o.set("TempFileMode", None, "0640", false).unwrap();
        assert_eq!(o.temp_file_mode, 0o640);
        assert!(o.set("TempFileMode", None, "0999", false).is_err());

        o.set(
            "NameServers",
            None,
            "192.0.2.1, 192.0.2.2:5353,::1,[::1]:5300",
            false,
        )
        .unwrap();
        assert_eq!(
            o.name_servers
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            vec!["192.0.2.1:53", "192.0.2.2:5353", "[::1]:53", "[::1]:5300"]
        );
        assert!(o.set("NameServers", None, "dns.example", false).is_err());

        o.set("MinFreeBlocks", None, "200/1000000", false).unwrap();
        assert_eq!((o.min_free_blocks, o.max_message_size), (200, 1_000_000));
    }

    #[test]
    fn greeting_is_munched_from_the_cf_but_kept_literal_from_the_command_line() {
        let mut o = Options::default();
        o.set("SmtpGreetingMessage", None, r#"$j "quoted" text"#, false)
            .unwrap();
        assert_eq!(
            o.smtp_greeting_message,
            Text {
                raw: "$j quoted text".into(),
                literal: false
            }
        );
        o.set("SmtpGreetingMessage", None, "$j ready", true)
            .unwrap();
        let m: std::collections::BTreeMap<String, String> =
            [("j".to_string(), "h".to_string())].into();
        assert_eq!(o.smtp_greeting_message.expand(&m), "$j ready");
        assert_eq!(Text::cf("$j ready").expand(&m), "h ready");
    }
}
