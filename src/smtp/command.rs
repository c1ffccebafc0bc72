//! One SMTP command line → [`Command`].
//!
//! In: the bytes of one command line without its line terminator (the driver strips `\n` and
//! one `\r` before it). Out: a [`Command`]; MAIL and RCPT carry either their parsed path and
//! ESMTP parameters or the [`ArgError`] that sendmail would answer with.
//!
//! sendmail behaviour kept (srvrsmtp.c, checked against recorded 8.17.1.9 sessions):
//! * the 8th bit of every byte of a command line is stripped (`\xffBAD` echoes as `\x7fBAD`),
//!   except in MAIL and RCPT lines that are valid UTF-8: their non-ASCII addresses are kept
//!   for the session to accept (with SMTPUTF8, RFC 6531) or refuse (`553 5.6.7`);
//! * leading white space (ASCII `isspace`, CR included) is skipped; the verb ends at the first
//!   white space and is matched case-insensitively; `MAILFROM:<a@b>` is an unknown verb;
//! * MAIL/RCPT need `FROM:`/`TO:` (white space allowed before the colon and after it);
//!   otherwise `501 5.5.2 Syntax error in parameters scanning "<word>"`;
//! * the path ends at the first white space outside `<>`, quotes and comments; ESMTP
//!   parameters follow (`KEY` or `KEY=value`), RFC 1869.
//!
//! RFCs: 5321 (commands, paths, source routes, address literals), 1870 (SIZE), 6152 (BODY),
//! 3461 (DSN: RET, ENVID, NOTIFY, ORCPT), 6531 (SMTPUTF8), 3030 (BDAT).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::reply::{self, Reply};
pub use crate::queue::{ByMode, DeliverBy};

/// sendmail's `MAXNAME`: the longest token (atom) in an address.
pub const MAX_TOKEN: usize = 256;
/// sendmail's parse buffer (`MAXNAME + MAXATOM`): the longest address.
pub const MAX_ADDRESS: usize = 296;
/// The longest MAIL/RCPT path sendmail takes once it has been tokenized (`MAXNAME` − 1,
/// brackets included): a longer one is `Address "…" too long (255 bytes max)`.
pub const MAX_PATH: usize = 255;
/// sendmail's `MAXSMTPARGS`: at most this many ESMTP parameters on one command.
pub const MAX_PARAMS: usize = 20;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELO <arg>`: the argument with leading white space removed (may be empty).
    Helo(String),
    /// `EHLO <arg>`.
    Ehlo(String),
    Mail(Result<MailFrom, ArgError>),
    Rcpt(Result<RcptTo, ArgError>),
    Data,
    /// `BDAT <size> [LAST]` (RFC 3030), or the reason it does not parse.
    Bdat(Result<(u64, bool), String>),
    Rset,
    Vrfy(String),
    Expn(String),
    /// `HELP [topic]`: the topic, possibly empty.
    Help(String),
    Noop,
    Quit,
    Etrn(String),
    Verb,
    StartTls,
    Auth(String),
    /// SEND, SOML, SAML, TURN: the whole line, for `502 5.5.1 Command not implemented`.
    NotImplemented(String),
    /// Anything else: the whole line, for `500 5.5.1 Command unrecognized`.
    Unrecognized(String),
}

impl Command {
    /// sendmail's lower-case command name (used in `lost input channel ... after <name>`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Helo(_) => "helo",
            Command::Ehlo(_) => "ehlo",
            Command::Mail(_) => "mail",
            Command::Rcpt(_) => "rcpt",
            Command::Data => "data",
            Command::Bdat(_) => "bdat",
            Command::Rset => "rset",
            Command::Vrfy(_) => "vrfy",
            Command::Expn(_) => "expn",
            Command::Help(_) => "help",
            Command::Noop => "noop",
            Command::Quit => "quit",
            Command::Etrn(_) => "etrn",
            Command::Verb => "verb",
            Command::StartTls => "starttls",
            Command::Auth(_) => "auth",
            Command::NotImplemented(_) => "unimplemented",
            Command::Unrecognized(_) => "unknown",
        }
    }
}

/// `MAIL FROM:<path> [params]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    pub path: Address,
    /// The parameters, or the first parameter error (the path was still valid: sendmail
    /// logs the sender of such a failed MAIL at the end of the transaction).
    pub params: Result<MailParams, ArgError>,
}

/// `RCPT TO:<path> [params]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptTo {
    pub path: Address,
    pub params: Result<RcptParams, ArgError>,
}

/// BODY= values (RFC 6152; BINARYMIME (RFC 3030) is not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
}

impl BodyType {
    /// The keyword as logged (`bodytype=8BITMIME`).
    pub fn as_str(self) -> &'static str {
        match self {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
        }
    }
}

/// RET= (RFC 3461).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// ESMTP parameters of MAIL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<BodyType>,
    pub ret: Option<Ret>,
    /// ENVID as sent (xtext, not decoded).
    pub envid: Option<String>,
    /// AUTH= as sent (RFC 4954).
    pub auth: Option<String>,
    /// BY= (RFC 2852), checked as sendmail checks it; the last one given counts.
    pub by: Option<DeliverBy>,
    /// `SMTPUTF8` was given (RFC 6531 §3.4).
    pub smtputf8: bool,
}

/// NOTIFY= (RFC 3461): `None` in [`RcptParams`] means not given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

/// ESMTP parameters of RCPT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    /// ORCPT as sent: `addr-type;xtext`.
    pub orcpt: Option<String>,
}

/// A reverse-path or forward-path as the client wrote it, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The text as written (`<root>`, `sender@x`): what `... Sender ok` echoes.
    pub raw: String,
    /// Source-route hops without `@` (`<@a,@b:u@c>` → `["a", "b"]`), kept for the relay check.
    pub route: Vec<String>,
    /// Local part as written (quotes kept). Empty for `<>`.
    pub local: String,
    /// Domain (or `[literal]`) after the last unquoted `@`; `None` when unqualified.
    pub domain: Option<String>,
}

impl Address {
    /// `<>`.
    pub fn is_null(&self) -> bool {
        self.local.is_empty() && self.domain.is_none()
    }

    /// `local@domain` (or `local`), without route and brackets.
    pub fn mailbox(&self) -> String {
        match &self.domain {
            Some(d) => format!("{}@{d}", self.local),
            None => self.local.clone(),
        }
    }

    /// The address literal's IP (`[192.0.2.1]`, `[IPv6:...]`), if the domain is one.
    pub fn domain_literal(&self) -> Option<IpAddr> {
        let d = self.domain.as_deref()?;
        let inner = d.strip_prefix('[')?.strip_suffix(']')?;
        if inner.len() > 5 && inner[..5].eq_ignore_ascii_case("IPv6:") {
            inner[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        } else {
            inner.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        }
    }
}

/// Why a MAIL/RCPT argument was refused; [`ArgError::reply`] gives sendmail's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// No `FROM:`/`TO:`; carries the word found instead.
    Syntax(String),
    /// Unbalanced `<`, `>`, `"`, `(` or `)` in the address (as written).
    Unbalanced(String, char),
    /// More than one unquoted `@` in the mailbox.
    InvalidRoute(String),
    /// Nothing after the `@`.
    HostnameRequired(String),
    /// `<>` where a mailbox is needed (RCPT).
    UserAddressRequired(String),
    /// A token longer than [`MAX_TOKEN`].
    TokenTooLong(String),
    /// An address longer than [`MAX_ADDRESS`].
    AddressTooLong(String),
    /// A path longer than [`MAX_PATH`]: its first [`MAX_PATH`] bytes.
    PathTooLong(String),
    /// An ESMTP keyword this server does not know (as written).
    ParamUnrecognized(String),
    /// A parameter with a bad, missing or repeated value, or one for an extension that is
    /// not offered: sendmail's exact reply.
    Param(Reply),
    TooManyParams,
}

impl ArgError {
    /// sendmail's reply for this error.
    pub fn reply(&self) -> Reply {
        match self {
            ArgError::Syntax(w) => reply::syntax_scanning(w),
            ArgError::Unbalanced(a, c) => reply::unbalanced(a, *c),
            ArgError::InvalidRoute(a) => reply::invalid_route(a),
            ArgError::HostnameRequired(a) => reply::hostname_required(a),
            ArgError::UserAddressRequired(a) => reply::user_address_required(a),
            ArgError::TokenTooLong(a) => reply::token_too_long(a),
            ArgError::AddressTooLong(a) => reply::address_too_long(a),
            ArgError::PathTooLong(a) => reply::path_too_long(a),
            ArgError::ParamUnrecognized(k) => reply::param_unrecognized(k),
            ArgError::Param(r) => r.clone(),
            ArgError::TooManyParams => reply::too_many_params(),
        }
    }
}

/// The extensions whose parameters are accepted (the others get sendmail's "not
/// supported" replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    /// DSN: RET, ENVID (MAIL), NOTIFY, ORCPT (RCPT).
    pub dsn: bool,
    /// DELIVERBY: BY= (MAIL).
    pub deliverby: bool,
    /// `DeliverByMin`: a `BY=…;R` below it is refused (`555 5.5.2 time N less than MIN`).
    pub deliver_by_min: i64,
    /// SMTPUTF8 (MAIL, RFC 6531).
    pub smtputf8: bool,
}

impl Extensions {
    /// Every extension this parser knows.
    pub const ALL: Extensions = Extensions {
        dsn: true,
        deliverby: true,
        deliver_by_min: 0,
        smtputf8: true,
    };
}

/// ASCII white space as C `isspace` (space, \t, \n, \v, \f, \r).
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Parses one command line (terminator already removed), every extension offered.
pub fn parse(line: &[u8]) -> Command {
    parse_with(line, &Extensions::ALL)
}

/// Parses one command line; parameters of extensions not in `ext` are refused.
///
/// sendmail keeps a command as a C string: a NUL byte ends it, and what follows is
/// ignored (`NO\0OP` → `500 5.5.1 Command unrecognized: "NO"`). Bytes are read with their
/// high bit cleared, except in a HELO/EHLO name, where an 8-bit byte makes the name
/// invalid (`501 5.0.0 Invalid domain name`), as the oracle answers, and in a UTF-8
/// MAIL/RCPT argument (SMTPUTF8).
pub fn parse_with(line: &[u8], ext: &Extensions) -> Command {
    let line = line.split(|&b| b == 0).next().unwrap_or_default();
    let text: String = line.iter().map(|&b| char::from(b & 0x7f)).collect();
    let rest = text.trim_start_matches(is_space);
    let verb_end = rest.find(is_space).unwrap_or(rest.len());
    let verb = rest[..verb_end].to_ascii_lowercase();
    let arg = rest[verb_end..].trim_start_matches(is_space);
    // Every byte became one ASCII char: the argument's raw bytes end the line.
    let raw_arg = || -> String {
        line[line.len() - arg.len()..]
            .iter()
            .map(|&b| char::from(b))
            .collect()
    };
    match verb.as_str() {
        "helo" => Command::Helo(raw_arg()),
        "ehlo" => Command::Ehlo(raw_arg()),
        "mail" => Command::Mail(parse_mail(utf8_arg(line).unwrap_or(arg), ext)),
        "rcpt" => Command::Rcpt(parse_rcpt(utf8_arg(line).unwrap_or(arg), ext)),
        "data" => Command::Data,
        "bdat" => Command::Bdat(parse_bdat(arg)),
        "rset" => Command::Rset,
        "vrfy" => Command::Vrfy(arg.trim_end_matches(is_space).to_owned()),
        "expn" => Command::Expn(arg.trim_end_matches(is_space).to_owned()),
        "help" => Command::Help(arg.trim_end_matches(is_space).to_owned()),
        "noop" => Command::Noop,
        "quit" => Command::Quit,
        "etrn" => Command::Etrn(arg.trim_end_matches(is_space).to_owned()),
        "verb" => Command::Verb,
        "starttls" => Command::StartTls,
        "auth" => Command::Auth(arg.trim_end_matches(is_space).to_owned()),
        "send" | "soml" | "saml" | "turn" => Command::NotImplemented(text),
        _ => Command::Unrecognized(text),
    }
}

/// The argument of a command line that is valid UTF-8 and not all ASCII (RFC 6531 lets MAIL
/// and RCPT carry UTF-8 addresses); `None` keeps sendmail's 7-bit reading.
fn utf8_arg(line: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(line).ok().filter(|t| !t.is_ascii())?;
    let rest = text.trim_start_matches(is_space);
    let verb_end = rest.find(is_space).unwrap_or(rest.len());
    Some(rest[verb_end..].trim_start_matches(is_space))
}

/// True for the commands after which a client must wait for the reply before sending
/// more (HELO, EHLO, DATA; RFC 2920 and sendmail 8.18's anti-smuggling check). The driver
/// looks for early input only for these.
pub fn is_sync_point(line: &[u8]) -> bool {
    let start = line
        .iter()
        .position(|&b| !(b & 0x7f).is_ascii_whitespace())
        .unwrap_or(line.len());
    let word: Vec<u8> = line[start..]
        .iter()
        .map(|&b| (b & 0x7f).to_ascii_lowercase())
        .take_while(|b| !b.is_ascii_whitespace())
        .collect();
    matches!(word.as_slice(), b"helo" | b"ehlo" | b"data")
}

/// Checks a HELO/EHLO argument as sendmail does (RFC 1123 5.2.5): letters, digits and
/// `[].-_#:`; trailing white space is allowed. Returns the name to use.
pub fn check_helo_name(arg: &str) -> Result<&str, HeloError> {
    if arg.is_empty() {
        return Err(HeloError::Missing);
    }
    if arg.len() > MAX_TOKEN {
        return Err(HeloError::Invalid(arg.to_owned()));
    }
    let end = arg.find(is_space).unwrap_or(arg.len());
    let name = &arg[..end];
    let name_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "[].-_#:".contains(c));
    let tail_ok = arg[end..].chars().all(is_space);
    if name_ok && tail_ok {
        Ok(name)
    } else {
        // sendmail logs the argument cut at its first white space.
        Err(HeloError::Invalid(name.to_owned()))
    }
}

/// A refused HELO/EHLO argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeloError {
    /// No argument: `501 5.0.0 HELO requires domain address`.
    Missing,
    /// Bad characters: `501 5.0.0 Invalid domain name`; carries the text sendmail logs.
    Invalid(String),
}

/// `FROM:` / `TO:` (sendmail's `skipword`): returns the text after the colon.
fn skip_word<'a>(arg: &'a str, word: &str) -> Result<&'a str, ArgError> {
    let end = arg
        .find(|c: char| c == ':' || is_space(c))
        .unwrap_or(arg.len());
    let found = &arg[..end];
    let after = arg[end..].trim_start_matches(is_space);
    let Some(after) = after.strip_prefix(':') else {
        return Err(ArgError::Syntax(found.to_owned()));
    };
    let after = after.trim_start_matches(is_space);
    if after.is_empty() || !found.eq_ignore_ascii_case(word) {
        return Err(ArgError::Syntax(found.to_owned()));
    }
    Ok(after)
}

fn parse_mail(arg: &str, ext: &Extensions) -> Result<MailFrom, ArgError> {
    let rest = skip_word(arg, "from")?;
    let (raw, params) = split_path(rest)?;
    let path = parse_path(raw)?;
    Ok(MailFrom {
        path,
        params: parse_params(params).and_then(|p| mail_params(&p, ext)),
    })
}

fn parse_rcpt(arg: &str, ext: &Extensions) -> Result<RcptTo, ArgError> {
    let rest = skip_word(arg, "to")?;
    let (raw, params) = split_path(rest)?;
    let path = parse_path(raw)?;
    if path.is_null() {
        return Err(ArgError::UserAddressRequired(raw.to_owned()));
    }
    Ok(RcptTo {
        path,
        params: parse_params(params).and_then(|p| rcpt_params(&p, ext)),
    })
}

fn parse_bdat(arg: &str) -> Result<(u64, bool), String> {
    let mut words = arg.split(is_space).filter(|w| !w.is_empty());
    let size = words
        .next()
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or_else(|| arg.to_owned())?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("last") => true,
        Some(_) => return Err(arg.to_owned()),
    };
    if words.next().is_some() {
        return Err(arg.to_owned());
    }
    Ok((size, last))
}

/// Splits the path (up to white space outside `<>`, quotes, comments) from the parameters,
/// checking the balance of brackets, quotes and parentheses as sendmail's `prescan`.
fn split_path(s: &str) -> Result<(&str, &str), ArgError> {
    let mut angle = 0u32;
    let mut paren = 0u32;
    let mut quoted = false;
    let mut escaped = false;
    let mut token = 0usize;
    let mut end = s.len();
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            token += 1;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' if paren == 0 => quoted = !quoted,
            _ if quoted => {}
            '(' => paren += 1,
            ')' if paren == 0 => return Err(ArgError::Unbalanced(s.to_owned(), ')')),
            ')' => paren -= 1,
            _ if paren > 0 => {}
            '<' => angle += 1,
            '>' if angle == 0 => return Err(ArgError::Unbalanced(s.to_owned(), '>')),
            '>' => angle -= 1,
            c if is_space(c) && angle == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
        if c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || quoted {
            token += 1;
            if token > MAX_TOKEN {
                return Err(ArgError::TokenTooLong(
                    s.trim_end_matches(is_space).to_owned(),
                ));
            }
        } else {
            token = 0;
        }
    }
    let raw = &s[..end];
    let open = if quoted {
        Some('"')
    } else if paren > 0 {
        Some('(')
    } else if angle > 0 {
        Some('<')
    } else {
        None
    };
    if let Some(c) = open {
        return Err(ArgError::Unbalanced(
            raw.trim_end_matches(is_space).to_owned(),
            c,
        ));
    }
    if raw.len() > MAX_ADDRESS {
        return Err(ArgError::AddressTooLong(raw.to_owned()));
    }
    if raw.len() > MAX_PATH {
        return Err(ArgError::PathTooLong(
            raw[..raw.floor_char_boundary(MAX_PATH)].to_owned(),
        ));
    }
    Ok((raw, &s[end..]))
}

/// Splits a (balanced) path into route, local part and domain.
pub(crate) fn parse_path(raw: &str) -> Result<Address, ArgError> {
    let clean = crate::mailbox::strip_comments(raw);
    let clean = clean.trim_matches(is_space);
    // Content of the outermost <...> if there is one (a phrase before it is ignored).
    let inner = match (clean.find('<'), clean.rfind('>')) {
        (Some(a), Some(b)) if a < b => &clean[a + 1..b],
        _ => clean,
    };
    let inner = inner.trim_matches(is_space);
    let mut route = Vec::new();
    let mut mailbox = inner;
    if inner.starts_with('@') {
        let colon = crate::mailbox::unquoted(inner, ':');
        let Some(&c) = colon.first() else {
            return Err(ArgError::InvalidRoute(raw.to_owned()));
        };
        for hop in inner[..c].split(',') {
            let hop = hop.trim_matches(is_space);
            let Some(h) = hop.strip_prefix('@').filter(|h| !h.is_empty()) else {
                return Err(ArgError::InvalidRoute(raw.to_owned()));
            };
            route.push(h.to_owned());
        }
        mailbox = &inner[c + 1..];
    }
    let ats = crate::mailbox::unquoted(mailbox, '@');
    let (local, domain) = match ats.as_slice() {
        [] => (mailbox.to_owned(), None),
        [at] => {
            let domain = &mailbox[at + 1..];
            if domain.is_empty() {
                return Err(ArgError::HostnameRequired(raw.to_owned()));
            }
            (mailbox[..*at].to_owned(), Some(domain.to_owned()))
        }
        _ => return Err(ArgError::InvalidRoute(raw.to_owned())),
    };
    if local.is_empty() && domain.is_some() {
        return Err(ArgError::InvalidRoute(raw.to_owned()));
    }
    if local.is_empty() && !route.is_empty() {
        return Err(ArgError::InvalidRoute(raw.to_owned()));
    }
    Ok(Address {
        raw: raw.to_owned(),
        route,
        local,
        domain,
    })
}

/// `KEY[=value]` pairs as sendmail's `parse_esmtp_args` splits them.
fn parse_params(s: &str) -> Result<Vec<(String, Option<String>)>, ArgError> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(is_space);
        if rest.is_empty() {
            return Ok(out);
        }
        let key_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(rest.len());
        let key = rest[..key_end].to_owned();
        rest = &rest[key_end..];
        let value = if let Some(v) = rest.strip_prefix('=') {
            let end = v
                .find(|c: char| c == ' ' || c.is_ascii_control() || c == '=')
                .unwrap_or(v.len());
            rest = &v[end..];
            Some(v[..end].to_owned())
        } else {
            None
        };
        // The character that ended the pair is consumed, whatever it was.
        let mut chars = rest.chars();
        chars.next();
        rest = chars.as_str();
        out.push((key, value));
        // sendmail counts the address as argument 0 and stops at MAXSMTPARGS - 1.
        if out.len() + 1 >= MAX_PARAMS - 1 {
            return Err(ArgError::TooManyParams);
        }
    }
}

/// sendmail's `xtextok`: printable ASCII except `=`, `+` followed by two hex digits
/// (RFC 3461 xtext).
pub fn is_xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                if i + 2 >= b.len() {
                    return false;
                }
                if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            33..=126 => i += 1,
            _ => return false,
        }
    }
    true
}

/// C `strtol(s, NULL, 10)`: leading white space, sign, digits; `None` on overflow.
fn strtol(s: &str) -> Option<i64> {
    let t = s.trim_start_matches(is_space);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut n: i64 = 0;
    for c in digits.bytes().take_while(u8::is_ascii_digit) {
        n = n.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
    }
    Some(if neg { -n } else { n })
}

fn need_value(v: &Option<String>, name: &str) -> Result<String, ArgError> {
    v.clone()
        .ok_or_else(|| ArgError::Param(reply::param_requires_value(name)))
}

fn mail_params(
    pairs: &[(String, Option<String>)],
    ext: &Extensions,
) -> Result<MailParams, ArgError> {
    let mut p = MailParams::default();
    for (key, value) in pairs {
        match key.to_ascii_lowercase().as_str() {
            "size" => {
                let v = need_value(value, "SIZE")?;
                match strtol(&v) {
                    None => return Err(ArgError::Param(reply::size_too_big())),
                    Some(n) if n < 0 => return Err(ArgError::Param(reply::size_invalid())),
                    Some(n) => p.size = Some(n as u64),
                }
            }
            "body" => {
                let v = need_value(value, "BODY")?;
                p.body = Some(if v.eq_ignore_ascii_case("8bitmime") {
                    BodyType::EightBitMime
                } else if v.eq_ignore_ascii_case("7bit") {
                    BodyType::SevenBit
                } else {
                    return Err(ArgError::Param(reply::bad_body(&v)));
                });
            }
            "envid" => {
                if !ext.dsn {
                    return Err(ArgError::Param(reply::dsn_not_supported("ENVID")));
                }
                let v = need_value(value, "ENVID")?;
                if !is_xtext(&v) {
                    return Err(ArgError::Param(reply::param_syntax("ENVID")));
                }
                if p.envid.is_some() {
                    return Err(ArgError::Param(reply::param_duplicate("ENVID")));
                }
                p.envid = Some(v);
            }
            "ret" => {
                if !ext.dsn {
                    return Err(ArgError::Param(reply::dsn_not_supported("RET")));
                }
                let v = need_value(value, "RET")?;
                if p.ret.is_some() {
                    return Err(ArgError::Param(reply::param_duplicate("RET")));
                }
                p.ret = Some(if v.eq_ignore_ascii_case("hdrs") {
                    Ret::Hdrs
                } else if v.eq_ignore_ascii_case("full") {
                    Ret::Full
                } else {
                    return Err(ArgError::Param(reply::bad_ret(&v)));
                });
            }
            "auth" => {
                let v = need_value(value, "AUTH=")?;
                if p.auth.is_some() {
                    return Err(ArgError::Param(reply::param_duplicate("AUTH")));
                }
                if !is_xtext(&v) {
                    return Err(ArgError::Param(reply::param_syntax("AUTH")));
                }
                p.auth = Some(v);
            }
            "smtputf8" if ext.smtputf8 => {
                if value.is_some() {
                    return Err(ArgError::Param(reply::smtputf8_takes_no_value()));
                }
                p.smtputf8 = true;
            }
            "by" if ext.deliverby => {
                let v = need_value(value, "BY=")?;
                p.by = Some(check_by(&v, ext.deliver_by_min)?);
            }
            _ => return Err(ArgError::ParamUnrecognized(key.clone())),
        }
    }
    Ok(p)
}

/// BY=<time>;<mode>[T] (RFC 2852) as sendmail checks it.
/// sendmail's check of a `BY=` value (`srvrsmtp.c` `mail_esmtp_args`): `<seconds>;<mode>`
/// then an optional `T`; mode `R` needs a time above 0 and, when `DeliverByMin` is above
/// 0, at least that. The character named in a refusal is the one sent (the oracle:
/// `BY=10;X` → `illegal by-mode 'X'`).
fn check_by(v: &str, min: i64) -> Result<DeliverBy, ArgError> {
    let bad = |r: Reply| Err(ArgError::Param(r));
    let t = v.trim_start_matches(is_space);
    let sign = usize::from(t.starts_with(['-', '+']));
    let digits = t[sign..].bytes().take_while(u8::is_ascii_digit).count();
    let seconds = match strtol(t) {
        Some(n) if n.abs() <= 999_999_999 => n,
        _ => return bad(reply::by_out_of_range(v)),
    };
    let rest = &t[sign + digits..];
    let Some(rest) = rest.strip_prefix(';') else {
        return bad(reply::by_missing_semicolon());
    };
    let mut chars = rest.trim_start_matches(is_space).chars();
    let mode = match chars.next() {
        Some('n' | 'N') => ByMode::Notify,
        Some('r' | 'R') if seconds <= 0 => return bad(reply::by_mode_r_needs_time()),
        Some('r' | 'R') if min > 0 && seconds < min => {
            return bad(reply::by_time_below_min(seconds, min));
        }
        Some('r' | 'R') => ByMode::Return,
        other => return bad(reply::by_illegal("mode", other.unwrap_or('?'))),
    };
    let rest = chars.as_str().trim_start_matches(is_space);
    let trace = match rest.chars().next() {
        None => false,
        Some('t' | 'T') => true,
        Some(c) => return bad(reply::by_illegal("trace", c)),
    };
    Ok(DeliverBy {
        seconds,
        mode,
        trace,
    })
}

fn rcpt_params(
    pairs: &[(String, Option<String>)],
    ext: &Extensions,
) -> Result<RcptParams, ArgError> {
    let mut p = RcptParams::default();
    for (key, value) in pairs {
        match key.to_ascii_lowercase().as_str() {
            "notify" => {
                if !ext.dsn {
                    return Err(ArgError::Param(reply::dsn_not_supported("NOTIFY")));
                }
                let v = need_value(value, "NOTIFY")?;
                let mut n = Notify::default();
                if v.eq_ignore_ascii_case("never") {
                    n.never = true;
                } else {
                    for word in v.split(',') {
                        match word.to_ascii_lowercase().as_str() {
                            "success" => n.success = true,
                            "failure" => n.failure = true,
                            "delay" => n.delay = true,
                            _ => return Err(ArgError::Param(reply::bad_notify(word))),
                        }
                    }
                }
                p.notify = Some(n);
            }
            "orcpt" => {
                if !ext.dsn {
                    return Err(ArgError::Param(reply::dsn_not_supported("ORCPT")));
                }
                let v = need_value(value, "ORCPT")?;
                if p.orcpt.is_some() {
                    return Err(ArgError::Param(reply::param_duplicate("ORCPT")));
                }
                let atom = |t: &str| {
                    !t.is_empty()
                        && t.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c))
                };
                match v.split_once(';') {
                    Some((t, x)) if atom(t) && is_xtext(x) => p.orcpt = Some(v),
                    _ => return Err(ArgError::Param(reply::param_syntax("ORCPT"))),
                }
            }
            _ => return Err(ArgError::ParamUnrecognized(key.clone())),
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_byte_ends_the_command_as_in_sendmail() {
        assert_eq!(parse(b"NO\0OP"), Command::Unrecognized("NO".into()));
        match parse(b"MAIL FROM:<a@b.test>\0 SIZE=10") {
            Command::Mail(Ok(m)) => {
                assert_eq!(m.path.raw, "<a@b.test>");
                assert_eq!(m.params.unwrap().size, None);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(b"\0QUIT"), Command::Unrecognized(String::new()));
    }

    #[test]
    fn an_eight_bit_helo_name_is_invalid() {
        let Command::Ehlo(arg) = parse(b"EHLO \xe4\xf6.example") else {
            panic!("not EHLO")
        };
        assert!(matches!(check_helo_name(&arg), Err(HeloError::Invalid(_))));
        // Elsewhere the high bit is cleared, as before.
        assert_eq!(parse(b"\xceOOP"), Command::Noop);
    }

    fn mail(line: &str) -> Result<MailFrom, ArgError> {
        match parse(line.as_bytes()) {
            Command::Mail(m) => m,
            other => panic!("not MAIL: {other:?}"),
        }
    }

    fn rcpt(line: &str) -> Result<RcptTo, ArgError> {
        match parse(line.as_bytes()) {
            Command::Rcpt(r) => r,
            other => panic!("not RCPT: {other:?}"),
        }
    }

    #[test]
    fn verbs_are_case_insensitive_and_leading_space_is_skipped() {
        let cases: &[(&[u8], Command)] = &[
            (
                b"eHlO client.example.test",
                Command::Ehlo("client.example.test".into()),
            ),
            (
                b" EHLO client.example.test",
                Command::Ehlo("client.example.test".into()),
            ),
            (
                b"EHLO\tclient.example.test",
                Command::Ehlo("client.example.test".into()),
            ),
            (b"helo", Command::Helo(String::new())),
            (b"  NOOP", Command::Noop),
            (b"NOOP\rNOOP", Command::Noop),
            (b"NOOP\r", Command::Noop),
            (b"noop hello", Command::Noop),
            (b"RSET now", Command::Rset),
            (b"QUIT now", Command::Quit),
            (b"DATA", Command::Data),
            (b"VERB", Command::Verb),
            (b"STARTTLS", Command::StartTls),
            (b"HELP MAIL", Command::Help("MAIL".into())),
            (b"HELP", Command::Help(String::new())),
            (b"VRFY root", Command::Vrfy("root".into())),
            (b"EXPN list ", Command::Expn("list".into())),
            (
                b"ETRN remote.example.test",
                Command::Etrn("remote.example.test".into()),
            ),
            (b"AUTH CRAM-MD5", Command::Auth("CRAM-MD5".into())),
            (b"BDAT 100 LAST", Command::Bdat(Ok((100, true)))),
            (b"BDAT 7", Command::Bdat(Ok((7, false)))),
            (b"BDAT x", Command::Bdat(Err("x".into()))),
            (b"FOOBAR", Command::Unrecognized("FOOBAR".into())),
            (b"", Command::Unrecognized(String::new())),
            (b"   ", Command::Unrecognized("   ".into())),
            (b"\xffBAD", Command::Unrecognized("\x7fBAD".into())),
            (
                b"MAILFROM:<a@b>",
                Command::Unrecognized("MAILFROM:<a@b>".into()),
            ),
            (b"XYZZY arg", Command::Unrecognized("XYZZY arg".into())),
            (b"TURN", Command::NotImplemented("TURN".into())),
            (
                b"SEND FROM:<a@b>",
                Command::NotImplemented("SEND FROM:<a@b>".into()),
            ),
            (
                b"soml FROM:<a@b>",
                Command::NotImplemented("soml FROM:<a@b>".into()),
            ),
            (
                b"SAML FROM:<a@b>",
                Command::NotImplemented("SAML FROM:<a@b>".into()),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(
                &parse(line),
                want,
                "line {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn mail_from_syntax_errors_match_sendmail() {
        let cases = [
            (
                "MAIL FROM <sender@client.example.test>",
                "501 5.5.2 Syntax error in parameters scanning \"FROM\"",
            ),
            ("MAIL", "501 5.5.2 Syntax error in parameters scanning \"\""),
            (
                "MAIL TO:<x@y>",
                "501 5.5.2 Syntax error in parameters scanning \"TO\"",
            ),
            (
                "MAIL FROM:",
                "501 5.5.2 Syntax error in parameters scanning \"FROM\"",
            ),
            (
                "MAIL FROM:<sender@client.example.test",
                "553 5.0.0 <sender@client.example.test... Unbalanced '<'",
            ),
            (
                "MAIL FROM:sender@client.example.test>",
                "553 5.0.0 sender@client.example.test>... Unbalanced '>'",
            ),
            (
                "MAIL FROM:<a@b@c>",
                "553 5.1.3 <a@b@c>... Invalid route address",
            ),
            (
                "MAIL FROM:<x@y> FOO=bar",
                "555 5.5.4 FOO parameter unrecognized",
            ),
            (
                "MAIL FROM:<x@y> FOO",
                "555 5.5.4 FOO parameter unrecognized",
            ),
            (
                "MAIL FROM:<x@y> BODY=BINARYMIME",
                "501 5.5.4 Unknown BODY type BINARYMIME",
            ),
            ("MAIL FROM:<x@y> BODY", "501 5.5.2 BODY requires a value"),
            (
                "MAIL FROM:<x@y> RET=FULL RET=HDRS",
                "501 5.5.0 Duplicate RET parameter",
            ),
            ("MAIL FROM:<x@y> SIZE=-5", "552 5.2.3 Message size invalid"),
            (
                "MAIL FROM:<x@y> SIZE=99999999999999999999",
                "552 5.2.3 Message size exceeds maximum value",
            ),
            ("MAIL FROM:<x@y> AUTH", "501 5.5.2 AUTH= requires a value"),
            ("MAIL FROM:<x@y> BY=100", "501 5.5.2 BY= missing ';'"),
            (
                "MAIL FROM:<x@y> BY=0;R",
                "501 5.5.4 mode R requires BY time > 0",
            ),
            ("MAIL FROM:<x@y> BY=10;X", "501 5.5.2 illegal by-mode 'X'"),
            ("MAIL FROM:<x@y> BY=10;NQ", "501 5.5.2 illegal by-trace 'Q'"),
            ("MAIL FROM:<x@y> BY=10;", "501 5.5.2 illegal by-mode '?'"),
            (
                "MAIL FROM:<x@y> BY=-10;R",
                "501 5.5.4 mode R requires BY time > 0",
            ),
            ("MAIL FROM:<x@y> BY", "501 5.5.2 BY= requires a value"),
            ("MAIL FROM:<x@y> BY=", "501 5.5.2 BY= missing ';'"),
            ("MAIL FROM:<x@y> BY=abc;R", "501 5.5.2 BY= missing ';'"),
            (
                "MAIL FROM:<x@y> BY=9999999999;R",
                "501 5.5.2 BY=9999999999;R out of range",
            ),
            (
                "MAIL FROM:<x@y> RET=ALL",
                "501 5.5.2 Bad argument \"ALL\" to RET",
            ),
            ("MAIL FROM:<x@y> SIZE", "501 5.5.2 SIZE requires a value"),
            (
                "MAIL FROM:<x@y> ENVID=a+zz",
                "501 5.5.4 Syntax error in ENVID parameter value",
            ),
            (
                "RCPT TO <root>",
                "501 5.5.2 Syntax error in parameters scanning \"TO\"",
            ),
            ("RCPT", "501 5.5.2 Syntax error in parameters scanning \"\""),
            (
                "RCPT FROM:<root>",
                "501 5.5.2 Syntax error in parameters scanning \"FROM\"",
            ),
            ("RCPT TO:<root", "553 5.0.0 <root... Unbalanced '<'"),
            ("RCPT TO:root@", "553 5.1.3 root@... Hostname required"),
            (
                "RCPT TO:<root> FOO=bar",
                "555 5.5.4 FOO parameter unrecognized",
            ),
            (
                "RCPT TO:<root> NOTIFY=NEVER,SUCCESS",
                "501 5.5.4 Bad argument \"NEVER\"  to NOTIFY",
            ),
            ("RCPT TO:<root> NOTIFY", "501 5.5.2 NOTIFY requires a value"),
            (
                "RCPT TO:<root> ORCPT=a;b ORCPT=a;b",
                "501 5.5.0 Duplicate ORCPT parameter",
            ),
            (
                "RCPT TO:<root> ORCPT=nosemicolon",
                "501 5.5.4 Syntax error in ORCPT parameter value",
            ),
        ];
        for (line, want) in cases {
            let err = match parse(line.as_bytes()) {
                Command::Mail(Err(e)) => e,
                Command::Mail(Ok(MailFrom { params: Err(e), .. })) => e,
                Command::Rcpt(Err(e)) => e,
                Command::Rcpt(Ok(RcptTo { params: Err(e), .. })) => e,
                other => panic!("{line}: no error: {other:?}"),
            };
            assert_eq!(err.reply().to_string(), want, "{line}");
        }
    }

    /// sendmail 8.17.1.9 (differential scenario 82b): a path of 255 bytes, brackets
    /// included, is taken; one of 256 is refused, its first 255 bytes quoted.
    #[test]
    fn path_over_255_bytes_is_too_long() {
        let path = |n: usize| format!("<{}@x.example.test>", "r".repeat(n - 17));
        assert!(rcpt(&format!("RCPT TO:{}", path(255))).is_ok());
        let long = path(256);
        let err = rcpt(&format!("RCPT TO:{long}")).unwrap_err();
        let quoted = &long[..255];
        assert_eq!(
            err.reply().to_string(),
            format!(
                "553 5.1.0 {}...{}... Address \"{quoted}\" too long (255 bytes max)",
                &quoted[..100],
                &quoted[155..]
            )
        );
        let Command::Mail(Err(e)) = parse(format!("MAIL FROM:{long} SIZE=10").as_bytes()) else {
            panic!("MAIL of a 256-byte path accepted");
        };
        assert!(matches!(e, ArgError::PathTooLong(q) if q == quoted));
    }

    #[test]
    fn long_local_part_is_a_token_too_long() {
        let line = format!("RCPT TO:<{}@remote.example.test>", "x".repeat(1000));
        let err = rcpt(&line).unwrap_err();
        let text = err.reply().to_string();
        assert!(text.starts_with("553 5.1.0 <xxxx"), "{text}");
        assert!(
            text.ends_with("x@remote.example.test>... prescan: token too long"),
            "{text}"
        );
    }

    #[test]
    fn paths_split_into_route_local_and_domain() {
        // (line, raw, route, local, domain)
        type Case<'a> = (&'a str, &'a str, &'a [&'a str], &'a str, Option<&'a str>);
        let cases: &[Case] = &[
            (
                "MAIL FROM:<sender@client.example.test>",
                "<sender@client.example.test>",
                &[],
                "sender",
                Some("client.example.test"),
            ),
            (
                "MAIL FROM:sender@client.example.test",
                "sender@client.example.test",
                &[],
                "sender",
                Some("client.example.test"),
            ),
            (
                "MAIL FROM: <sender@client.example.test>",
                "<sender@client.example.test>",
                &[],
                "sender",
                Some("client.example.test"),
            ),
            ("MAIL FROM:<>", "<>", &[], "", None),
            ("MAIL FROM:<root>", "<root>", &[], "root", None),
            (
                "MAIL FROM:<\"john doe\"@x.test>",
                "<\"john doe\"@x.test>",
                &[],
                "\"john doe\"",
                Some("x.test"),
            ),
            (
                "MAIL FROM:<\"a@b\"@x.test>",
                "<\"a@b\"@x.test>",
                &[],
                "\"a@b\"",
                Some("x.test"),
            ),
            (
                "MAIL FROM:<root@[127.0.0.1]>",
                "<root@[127.0.0.1]>",
                &[],
                "root",
                Some("[127.0.0.1]"),
            ),
            (
                "MAIL FROM:<root@[IPv6:::1]>",
                "<root@[IPv6:::1]>",
                &[],
                "root",
                Some("[IPv6:::1]"),
            ),
            (
                "MAIL FROM:<@a.test,@b.test:u@c.test>",
                "<@a.test,@b.test:u@c.test>",
                &["a.test", "b.test"],
                "u",
                Some("c.test"),
            ),
            (
                "MAIL FROM:<bob%remote.example.test@oracle.example.test>",
                "<bob%remote.example.test@oracle.example.test>",
                &[],
                "bob%remote.example.test",
                Some("oracle.example.test"),
            ),
            (
                "MAIL FROM:<remote.example.test!bob>",
                "<remote.example.test!bob>",
                &[],
                "remote.example.test!bob",
                None,
            ),
        ];
        for (line, raw, route, local, domain) in cases {
            let m = mail(line).unwrap();
            assert_eq!(m.path.raw, *raw, "{line}");
            assert_eq!(
                m.path.route,
                route.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{line}"
            );
            assert_eq!(m.path.local, *local, "{line}");
            assert_eq!(m.path.domain.as_deref(), *domain, "{line}");
        }
        assert!(mail("MAIL FROM:<>").unwrap().path.is_null());
        assert_eq!(rcpt("RCPT TO:<>").unwrap_err().reply().code, 553);
    }

    #[test]
    fn address_literals() {
        let a = rcpt("RCPT TO:<root@[IPv6:0:0:0:0:0:0:0:1]>").unwrap().path;
        assert_eq!(a.domain_literal(), Some("::1".parse().unwrap()));
        let b = rcpt("RCPT TO:<root@[192.0.2.1]>").unwrap().path;
        assert_eq!(b.domain_literal(), Some("192.0.2.1".parse().unwrap()));
        let c = rcpt("RCPT TO:<root@example.test>").unwrap().path;
        assert_eq!(c.domain_literal(), None);
        assert_eq!(c.mailbox(), "root@example.test");
    }

    #[test]
    fn esmtp_params_are_parsed() {
        let m =
            mail("MAIL FROM:<a@b.test> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ+2B1 BY=120;RT")
                .unwrap();
        let p = m.params.unwrap();
        assert_eq!(
            p.by,
            Some(DeliverBy {
                seconds: 120,
                mode: ByMode::Return,
                trace: true
            })
        );
        assert_eq!(p.size, Some(1000));
        assert_eq!(p.body, Some(BodyType::EightBitMime));
        assert_eq!(p.ret, Some(Ret::Hdrs));
        assert_eq!(p.envid.as_deref(), Some("QQ+2B1"));
        // strtol semantics: no digits is 0.
        assert_eq!(
            mail("MAIL FROM:<a@b.test> SIZE=big")
                .unwrap()
                .params
                .unwrap()
                .size,
            Some(0)
        );
        // SMTPUTF8 when offered (sendmail 8.17 without EAI does not know it: see
        // extensions_not_offered_are_refused_as_sendmail_does).
        assert!(
            mail("MAIL FROM:<a@b.test> SMTPUTF8")
                .unwrap()
                .params
                .unwrap()
                .smtputf8
        );
        let r = rcpt("RCPT TO:<root> NOTIFY=success,delay ORCPT=rfc822;root@x.test").unwrap();
        let p = r.params.unwrap();
        assert_eq!(
            p.notify,
            Some(Notify {
                never: false,
                success: true,
                failure: false,
                delay: true
            })
        );
        assert_eq!(p.orcpt.as_deref(), Some("rfc822;root@x.test"));
    }

    #[test]
    fn sync_points() {
        assert!(is_sync_point(b"EHLO x"));
        assert!(is_sync_point(b"  helo"));
        assert!(is_sync_point(b"DATA"));
        assert!(!is_sync_point(b"DATAX"));
        assert!(!is_sync_point(b"MAIL FROM:<a@b>"));
    }

    #[test]
    fn helo_names() {
        assert_eq!(
            check_helo_name("client.example.test"),
            Ok("client.example.test")
        );
        assert_eq!(
            check_helo_name("client.example.test   "),
            Ok("client.example.test")
        );
        assert_eq!(check_helo_name("[127.0.0.1]"), Ok("[127.0.0.1]"));
        assert_eq!(check_helo_name("[IPv6:::1]"), Ok("[IPv6:::1]"));
        assert_eq!(check_helo_name("under_score"), Ok("under_score"));
        assert_eq!(check_helo_name(""), Err(HeloError::Missing));
        assert_eq!(
            check_helo_name("bad_name!"),
            Err(HeloError::Invalid("bad_name!".into()))
        );
        assert_eq!(
            check_helo_name("a b c"),
            Err(HeloError::Invalid("a".into()))
        );
    }

    #[test]
    fn by_values_as_the_oracle_takes_them_under_deliver_by_min() {
        // sendmail 8.17.1.9 with `-O DeliverByMin=60` (tests/differential/scenarios/21a-*).
        let ext = Extensions {
            deliver_by_min: 60,
            ..Extensions::ALL
        };
        let by = |line: &str| match parse_with(line.as_bytes(), &ext) {
            Command::Mail(Ok(m)) => m.params.map(|p| p.by.unwrap()),
            other => panic!("{other:?}"),
        };
        let ok = |seconds, mode, trace| {
            Ok(DeliverBy {
                seconds,
                mode,
                trace,
            })
        };
        assert_eq!(by("MAIL FROM:<a@b> BY=30;N"), ok(30, ByMode::Notify, false));
        assert_eq!(by("MAIL FROM:<a@b> BY=0;N"), ok(0, ByMode::Notify, false));
        assert_eq!(by("MAIL FROM:<a@b> BY=-5;NT"), ok(-5, ByMode::Notify, true));
        assert_eq!(by("MAIL FROM:<a@b> BY=60;R"), ok(60, ByMode::Return, false));
        assert_eq!(
            by("MAIL FROM:<a@b> BY=+60;rt"),
            ok(60, ByMode::Return, true)
        );
        // A repeated BY= is not refused; the last one counts.
        assert_eq!(
            by("MAIL FROM:<a@b> BY=60;RT BY=70;N"),
            ok(70, ByMode::Notify, false)
        );
        let err = by("MAIL FROM:<a@b> BY=30;R").unwrap_err();
        assert_eq!(err.reply().to_string(), "555 5.5.2 time 30 less than 60");
    }

    #[test]
    fn extensions_not_offered_are_refused_as_sendmail_does() {
        let none = Extensions {
            dsn: false,
            deliverby: false,
            deliver_by_min: 0,
            smtputf8: false,
        };
        let cases = [
            (
                "MAIL FROM:<a@b> RET=FULL",
                "504 5.7.0 Sorry, RET not supported, we do not allow DSN",
            ),
            (
                "MAIL FROM:<a@b> ENVID=x",
                "504 5.7.0 Sorry, ENVID not supported, we do not allow DSN",
            ),
            (
                "RCPT TO:<a@b> NOTIFY=NEVER",
                "504 5.7.0 Sorry, NOTIFY not supported, we do not allow DSN",
            ),
            (
                "RCPT TO:<a@b> ORCPT=rfc822;a@b",
                "504 5.7.0 Sorry, ORCPT not supported, we do not allow DSN",
            ),
            (
                "MAIL FROM:<a@b> BY=10;N",
                "555 5.5.4 BY parameter unrecognized",
            ),
            (
                "MAIL FROM:<a@b> SMTPUTF8",
                "555 5.5.4 SMTPUTF8 parameter unrecognized",
            ),
        ];
        for (line, want) in cases {
            let err = match parse_with(line.as_bytes(), &none) {
                Command::Mail(Ok(m)) => m.params.unwrap_err(),
                Command::Rcpt(Ok(r)) => r.params.unwrap_err(),
                other => panic!("{other:?}"),
            };
            assert_eq!(err.reply().to_string(), want, "{line}");
        }
    }

    #[test]
    fn utf8_addresses_are_kept_in_mail_and_rcpt_only() {
        let Command::Mail(Ok(m)) = parse("MAIL FROM:<jös@bücher.example> SMTPUTF8".as_bytes())
        else {
            panic!("MAIL did not parse");
        };
        assert_eq!(m.path.local, "jös");
        assert_eq!(m.path.domain.as_deref(), Some("bücher.example"));
        assert!(m.params.unwrap().smtputf8);
        let Command::Rcpt(Ok(r)) = parse("RCPT TO:<用户@例子.测试>".as_bytes()) else {
            panic!("RCPT did not parse");
        };
        assert_eq!(r.path.mailbox(), "用户@例子.测试");
        // Not UTF-8: sendmail's 7-bit reading, as before.
        let Command::Mail(Ok(m)) = parse(b"MAIL FROM:<j\xf6s@x>") else {
            panic!("MAIL did not parse");
        };
        assert_eq!(m.path.local, "jvs");
        assert_eq!(
            parse("FOO é".as_bytes()),
            Command::Unrecognized("FOO C)".into())
        );
        let Command::Mail(Ok(m)) = parse(b"MAIL FROM:<a@b> SMTPUTF8=yes") else {
            panic!("MAIL did not parse");
        };
        assert_eq!(
            m.params.unwrap_err().reply().to_string(),
            "501 5.5.4 SMTPUTF8 parameter does not take a value"
        );
    }

    #[test]
    fn xtext() {
        assert!(is_xtext("abc+2B"));
        assert!(!is_xtext("a=b"));
        assert!(!is_xtext("a+2"));
        assert!(!is_xtext("a+zz"));
        assert!(is_xtext("a+2b"));
        assert!(!is_xtext("a b"));
    }
}
