//! One reading of an envelope address for the built-in rules (a cf without rulesets).
//!
//! In: an address as the client wrote it (angle brackets optional, comments, quotes,
//! backslashes, a source route). Out: a [`Mailbox`] — the local part as the local mailer
//! gets it, what kind of target it names, and the domain — or [`AddrError`]. The relay check
//! ([`crate::policy::BuiltinPolicy`]), the recipient lookup ([`crate::policy::KnownUsers`])
//! and the mailer choice ([`crate::deliver::route::route_with`]) all take local part and domain
//! from [`parse`], so they cannot disagree about where an address goes (issue 16: the relay
//! check read `"a@remote"` as a local part while the router split it at its quoted `@`).
//!
//! sendmail 8.17's generated rules (cf/m4/proto.m4), as the oracle answered them
//! (`tests/data/oracle-issue16.txt`):
//! * comments are dropped, `<<a@b>>` is `a@b`, a source route `@x,@y:` is dropped (RFC 5321
//!   appendix C) and the mailbox after it decides;
//! * the domain follows the last `@` outside quotes and brackets and not after a backslash:
//!   `"a@b"` and `a\@b` have none; `a@b@c` is `553 5.1.3 Invalid route address` (the SMTP
//!   parser refuses it first);
//! * trailing dots of the domain are dropped and its case does not matter; a domain starting
//!   with a dot or holding `..` is `553 5.1.2 Invalid host name` (canonify);
//! * an address literal must be a valid IPv4 address or `IPv6:` address, else it names no
//!   host (`[300.1.2.3]`, `[127.1]`, `[name]`);
//! * the local part without its quotes and backslashes is what the local mailer gets; when
//!   that text holds `@`, `%` or `!` it names another host (sendmail's check_rcpt dequotes
//!   the local part and looks again): such an address is never local, never relayable to,
//!   and never routed anywhere but this host;
//! * a local part beginning with `|`, `/` or `:include:` — bare or inside quotes, not after a
//!   backslash — names a program, a file or an include list.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a local part names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    User,
    /// `|command`.
    Program,
    /// `/path`.
    File,
    /// `:include:/path`.
    Include,
}

/// The part after the `@`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    /// A host name, lower case, without trailing dots.
    Name(String),
    /// A valid address literal.
    Literal(IpAddr),
    /// Neither: a literal that is no address, or characters no host name has. Names no
    /// host: never local, never a relay domain, never routed.
    Invalid(String),
}

impl Domain {
    /// The form `$=w` and `$=R` hold: the name, or `[192.0.2.1]` / `[ipv6:2001:db8::1]`
    /// (lower case).
    pub fn class_key(&self) -> String {
        match self {
            Domain::Name(n) => n.clone(),
            Domain::Literal(IpAddr::V4(ip)) => format!("[{ip}]"),
            Domain::Literal(IpAddr::V6(ip)) => format!("[ipv6:{ip}]"),
            Domain::Invalid(d) => d.to_ascii_lowercase(),
        }
    }
}

/// An envelope address read as the built-in rules read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The local part without quotes and backslashes.
    pub local: String,
    /// The local part as written (quotes and backslashes kept; comments, brackets and a
    /// source route dropped).
    pub written: String,
    pub kind: LocalKind,
    /// `None`: unqualified (this host).
    pub domain: Option<Domain>,
}

impl Mailbox {
    /// Whether the local part names another host (`a@b`, `a%b`, `b!a` once unquoted).
    pub fn hides_route(&self) -> bool {
        self.local.contains(['@', '%', '!'])
    }

    /// The user the local mailer gets: the plain name (`"root"` is `root`), or the local
    /// part as written when it is more than a name, so that `"a@b"` stays one local
    /// user, `\|x` a user and `"|x"` a program for the alias expansion to see.
    pub fn local_user(&self) -> String {
        let plain = self.kind == LocalKind::User
            && !self.hides_route()
            && kind_of(&self.local) == LocalKind::User
            && !self.written.starts_with('\\');
        if plain {
            self.local.clone()
        } else {
            self.written.clone()
        }
    }
}

/// Why an address is refused outright.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// `a@.b`, `a@b..c`: sendmail's canonify answers `553 5.1.2 Invalid host name`.
    #[error("Invalid host name")]
    InvalidHost,
}

/// Reads `text` (see the module comment).
pub fn parse(text: &str) -> Result<Mailbox, AddrError> {
    let clean = strip_comments(text);
    let mut inner = clean.trim();
    // The innermost <...> (`<<a@b>>` is `a@b`; a phrase before `<` is ignored).
    while let (Some(a), Some(b)) = (inner.find('<'), inner.rfind('>')) {
        if a >= b {
            break;
        }
        inner = inner[a + 1..b].trim();
    }
    // A source route: dropped.
    if inner.starts_with('@')
        && let Some(&c) = unquoted(inner, ':').first()
    {
        inner = inner[c + 1..].trim();
    }
    let (local_raw, domain_raw) = match unquoted(inner, '@').last() {
        Some(&at) => (&inner[..at], Some(&inner[at + 1..])),
        None => (inner, None),
    };
    let local_raw = local_raw.trim();
    let domain = domain_raw.map(read_domain).transpose()?;
    Ok(Mailbox {
        local: dequote(local_raw),
        written: local_raw.to_string(),
        kind: kind_of(local_raw),
        domain,
    })
}

/// What a local part (or a local mailer's user, as the rules give it) names.
pub fn kind_of(local: &str) -> LocalKind {
    let t = local.trim();
    let t = t.strip_prefix('"').unwrap_or(t);
    if t.starts_with('|') {
        LocalKind::Program
    } else if t.starts_with('/') {
        LocalKind::File
    } else if t
        .get(..9)
        .is_some_and(|p| p.eq_ignore_ascii_case(":include:"))
    {
        LocalKind::Include
    } else {
        LocalKind::User
    }
}

/// The envelope sender as it is stored and delivered: what a client's bare CR, tab or space
/// outside quotes becomes in sendmail (`BlankSub`, `.`: `<x\ry@b>` is delivered as
/// `x.y@b`), and no control character at all, quoted or not.
pub fn blank_sub(addr: &str) -> String {
    let mut out = String::with_capacity(addr.len());
    let (mut quoted, mut escaped) = (false, false);
    for c in addr.chars() {
        let blank = c.is_ascii_control() || (!quoted && (c == ' ' || c == '\t'));
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        }
        out.push(if blank { '.' } else { c });
    }
    out
}

fn read_domain(raw: &str) -> Result<Domain, AddrError> {
    let d = raw.trim();
    if let Some(lit) = d.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ip = match lit.get(..5) {
            Some(p) if p.eq_ignore_ascii_case("IPv6:") => {
                lit[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6)
            }
            _ => lit.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        };
        return Ok(ip.map_or_else(|| Domain::Invalid(d.to_string()), Domain::Literal));
    }
    // White space beside a dot goes (`client. example` is `client.example`, as sendmail's
    // tokens join); between two words it stays and makes the name invalid.
    let mut joined = String::with_capacity(d.len());
    for part in d.split('.') {
        if !joined.is_empty() || d.starts_with('.') {
            joined.push('.');
        }
        joined.push_str(part.trim());
    }
    let name = joined.trim_end_matches('.').to_lowercase();
    if name.is_empty() || name.starts_with('.') || name.contains("..") {
        return Err(AddrError::InvalidHost);
    }
    let host_chars = name
        .chars()
        .all(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '.');
    Ok(if host_chars {
        Domain::Name(name)
    } else {
        Domain::Invalid(d.to_string())
    })
}

/// The local part without quotes and backslashes.
fn dequote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c != '"' {
            out.push(c);
        }
    }
    out
}

/// `s` without its RFC 5322 comments `(...)` outside quotes (the SMTP command parser's
/// too).
pub fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut depth, mut quoted, mut escaped) = (0u32, false, false);
    for c in s.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => {
                depth += 1;
                continue;
            }
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                continue;
            }
            _ => {}
        }
        if depth == 0 {
            out.push(c);
        }
    }
    out
}

/// Byte positions of `want` outside quotes and brackets and not after a backslash.
pub fn unquoted(s: &str, want: char) -> Vec<usize> {
    let (mut quoted, mut escaped, mut bracket) = (false, false, false);
    let mut found = Vec::new();
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' if !bracket => quoted = !quoted,
            '[' if !quoted => bracket = true,
            ']' if !quoted => bracket = false,
            c if c == want && !quoted && !bracket => found.push(i),
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests;
