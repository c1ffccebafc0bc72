//! sendmail macros: expansion of `$x` text, and the built-in values the daemon defines.
//!
//! In: a text with macro references (an option value such as `SmtpGreetingMessage`, a header
//! template) and a [`MacroLookup`] that answers a macro's raw value. Out: the expanded text.
//! Syntax (op §5.2 "D — Define Macro", sendmail `macro.c:expand`):
//! * `$x` — one-character macro, `${name}` — long macro (`${x}` is `$x`);
//! * `$&x` / `$&{name}` — deferred; in option values and headers it expands like `$x`;
//! * `$?x text $| else $.` — conditional on `x` being defined and not empty; nests; `$|` is
//!   optional;
//! * `$$` — a literal `$`; any other `$` sequence (`$=`, `$#`, `$1`, ...) is rule syntax and is
//!   kept as written;
//! * an undefined macro expands to nothing; a value that itself contains macros is expanded
//!   in turn (at most [`MAX_DEPTH`] levels, so `Dxa$x` cannot loop).
//!
//! Built-ins ([`HostNames`], [`builtin_macros`]): `$j` (fully qualified name of this host:
//! `gethostname`, made canonical through the hosts file; a `Dj` line in the cf wins), `$w`
//! (first label of `$j`), `$m` (the rest of `$j`), `$v` and `$Z` ([`VERSION`]), `$b` (the
//! current date in RFC 5322 form, [`rfc5322_date`]). Per-connection macros (`$_`,
//! `${daemon_name}`, `${client_addr}`, ...) come from the caller through its own
//! [`MacroLookup`], layered over these with [`Layered`].

use std::borrow::Cow;
use std::collections::BTreeMap;

/// How deep a macro value may refer to other macros before expansion stops.
pub const MAX_DEPTH: usize = 10;
/// Longest expansion kept: sendmail expands into a fixed buffer; this bound stops a macro
/// that names itself several times from growing as (references)^(depth).
pub const MAX_EXPANSION: usize = 64 * 1024;

/// The version string behind `$v` and the default `$Z`: this crate's version. A cf may set
/// `DZ` itself (Debian does: `DZ8.17.1.9/Debian-2+deb12u2`), which then wins for `$Z`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Answers the raw (unexpanded) value of a macro by name: `"j"` for `$j`, `"daemon_name"`
/// for `${daemon_name}`.
pub trait MacroLookup {
    fn macro_value(&self, name: &str) -> Option<Cow<'_, str>>;
}

impl MacroLookup for BTreeMap<String, String> {
    fn macro_value(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name).map(|v| Cow::Borrowed(v.as_str()))
    }
}

impl<F: Fn(&str) -> Option<String>> MacroLookup for F {
    fn macro_value(&self, name: &str) -> Option<Cow<'_, str>> {
        self(name).map(Cow::Owned)
    }
}

/// Two lookups: `top` first (e.g. per-connection macros), then `base` (the configuration).
pub struct Layered<'a> {
    pub top: &'a dyn MacroLookup,
    pub base: &'a dyn MacroLookup,
}

impl MacroLookup for Layered<'_> {
    fn macro_value(&self, name: &str) -> Option<Cow<'_, str>> {
        self.top
            .macro_value(name)
            .or_else(|| self.base.macro_value(name))
    }
}

/// Expands every macro reference in `text`.
pub fn expand(text: &str, lookup: &dyn MacroLookup) -> String {
    let mut out = String::with_capacity(text.len());
    expand_into(text, lookup, 0, false, &mut out);
    out
}

/// Expansion as sendmail does it while *reading* an `R`, `C`, `K`, `F` or `S` line: like
/// [`expand`], but deferred references (`$&x`, `$&{name}`) are kept as written, to be
/// expanded when the rule runs.
pub fn expand_at_load(text: &str, lookup: &dyn MacroLookup) -> String {
    let mut out = String::with_capacity(text.len());
    expand_into(text, lookup, 0, true, &mut out);
    out
}

/// One frame of `$?`: was the condition true, and are we past `$|`?
struct Cond {
    holds: bool,
    in_else: bool,
}

fn expand_into(
    text: &str,
    lookup: &dyn MacroLookup,
    depth: usize,
    keep_deferred: bool,
    out: &mut String,
) {
    let mut conds: Vec<Cond> = Vec::new();
    let active = |conds: &[Cond]| conds.iter().all(|c| c.holds != c.in_else);
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        if active(&conds) {
            out.push_str(&rest[..dollar]);
        }
        let after = &rest[dollar + 1..];
        let mut chars = after.chars();
        let Some(c) = chars.next() else {
            if active(&conds) {
                out.push('$');
            }
            return;
        };
        rest = chars.as_str();
        match c {
            '$' => {
                if active(&conds) {
                    out.push('$');
                }
            }
            '?' => {
                let (name, r) = read_name(rest);
                rest = r;
                let holds =
                    name.is_some_and(|n| lookup.macro_value(n).is_some_and(|v| !v.is_empty()));
                conds.push(Cond {
                    holds,
                    in_else: false,
                });
            }
            '|' if !conds.is_empty() => {
                if let Some(top) = conds.last_mut() {
                    top.in_else = true;
                }
            }
            '.' if !conds.is_empty() => {
                conds.pop();
            }
            '&' => {
                let (name, r) = read_name(rest);
                if keep_deferred {
                    if active(&conds) {
                        out.push_str("$&");
                        out.push_str(&rest[..rest.len() - r.len()]);
                    }
                } else if let Some(name) = name
                    && active(&conds)
                {
                    put_value(name, lookup, depth, out);
                }
                rest = r;
            }
            '{' => {
                match read_name(after) {
                    (Some(name), r) => {
                        rest = r;
                        if active(&conds) {
                            put_value(name, lookup, depth, out);
                        }
                    }
                    (None, _) => {
                        // an unterminated `${`: keep the `$`, the rest follows as text
                        rest = after;
                        if active(&conds) {
                            out.push('$');
                        }
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                if active(&conds) {
                    let mut buf = [0u8; 4];
                    put_value(c.encode_utf8(&mut buf), lookup, depth, out);
                }
            }
            other => {
                // rule syntax ($=, $#, $1, $:, ...): keep as written
                if active(&conds) {
                    out.push('$');
                    out.push(other);
                }
            }
        }
    }
    if active(&conds) {
        out.push_str(rest);
    }
}

/// Reads `x` or `{name}` at the start of `s`.
fn read_name(s: &str) -> (Option<&str>, &str) {
    if let Some(inner) = s.strip_prefix('{') {
        match inner.find('}') {
            Some(end) if end > 0 => (Some(&inner[..end]), &inner[end + 1..]),
            _ => (None, s),
        }
    } else {
        match s.chars().next() {
            Some(c) => (Some(&s[..c.len_utf8()]), &s[c.len_utf8()..]),
            None => (None, s),
        }
    }
}

fn put_value(name: &str, lookup: &dyn MacroLookup, depth: usize, out: &mut String) {
    if out.len() >= MAX_EXPANSION {
        return;
    }
    if let Some(v) = lookup.macro_value(name) {
        if depth < MAX_DEPTH && v.contains('$') {
            expand_into(&v, lookup, depth + 1, false, out);
        } else {
            out.push_str(&v);
        }
    }
}

/// The host's names as sendmail's `$j`, `$w`, `$m` use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNames {
    /// `$j`: fully qualified (e.g. `oracle.example.test`).
    pub fqdn: String,
    /// `$w`: the first label.
    pub short: String,
    /// `$m`: the domain, without the first label (empty if `fqdn` has no dot).
    pub domain: String,
}

impl HostNames {
    /// Splits a fully qualified name into `$j`, `$w`, `$m`.
    pub fn from_fqdn(fqdn: &str) -> HostNames {
        let fqdn = fqdn.trim_end_matches('.');
        let (short, domain) = fqdn.split_once('.').unwrap_or((fqdn, ""));
        HostNames {
            fqdn: fqdn.to_string(),
            short: short.to_string(),
            domain: domain.to_string(),
        }
    }

    /// This host's names: `gethostname(2)`, made canonical by [`canonical_name`] over
    /// `/etc/hosts` (sendmail asks the resolver; the hosts file is what this machine's
    /// resolver answers for its own name in the common `hosts: files dns` setup).
    pub fn of_this_host() -> HostNames {
        HostNames::of_this_host_in(std::path::Path::new("/etc/hosts"))
    }

    /// [`HostNames::of_this_host`] with another hosts file (`HostsFile`).
    pub fn of_this_host_in(hosts_file: &std::path::Path) -> HostNames {
        let name = nix::unistd::gethostname()
            .ok()
            .and_then(|n| n.into_string().ok())
            .unwrap_or_else(|| "localhost".to_string());
        let hosts = std::fs::read_to_string(hosts_file).unwrap_or_default();
        HostNames::from_fqdn(&canonical_name(&name, &hosts))
    }
}

/// The canonical name of `name` in a hosts file: the first name of the first line that lists
/// `name` (case-insensitively) among its names. If that is not qualified but another name on
/// the line is, the first qualified one. Without a match, `name` itself.
pub fn canonical_name(name: &str, hosts_file: &str) -> String {
    for line in hosts_file.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        if fields.next().is_none() {
            continue;
        }
        let names: Vec<&str> = fields.collect();
        if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            let first = names[0];
            if first.contains('.') {
                return first.to_string();
            }
            if let Some(q) = names.iter().find(|n| n.contains('.')) {
                return q.to_string();
            }
            return if name.contains('.') {
                name.to_string()
            } else {
                first.to_string()
            };
        }
    }
    name.to_string()
}

/// `$b`: `Tue, 24 Nov 2026 06:53:20 GMT` as sendmail writes it (day without padding; `GMT`
/// when the offset is zero, else `+hhmm`/`-hhmm`).
pub fn rfc5322_date<Tz: chrono::TimeZone>(t: &chrono::DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let offset = chrono::Offset::fix(t.offset()).local_minus_utc();
    let zone = if offset == 0 {
        "GMT".to_string()
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let m = offset.unsigned_abs() / 60;
        format!("{sign}{:02}{:02}", m / 60, m % 60)
    };
    format!("{} {zone}", t.format("%a, %-d %b %Y %H:%M:%S"))
}

/// [`rfc5322_date`] of now, local time: made once per second per thread (each message
/// received takes it for `$b`, and the local-time conversion and formatting cost more
/// than the rest of the macros).
pub fn rfc5322_now() -> String {
    thread_local! {
        static NOW: crate::log::PerSecond = const { crate::log::PerSecond::new() };
    }
    let now = chrono::Local::now();
    NOW.with(|date| date.with(now.timestamp(), || rfc5322_date(&now), str::to_string))
}

/// The built-in macros the daemon defines before reading the cf: `j w m v Z b`.
pub fn builtin_macros(
    host: &HostNames,
    now: &chrono::DateTime<chrono::Local>,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("j".to_string(), host.fqdn.clone());
    m.insert("w".to_string(), host.short.clone());
    m.insert("m".to_string(), host.domain.clone());
    m.insert("v".to_string(), VERSION.to_string());
    m.insert("Z".to_string(), VERSION.to_string());
    m.insert("b".to_string(), rfc5322_date(now));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn macros(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The `cf_reader` fuzz input's shape: a value naming itself four times, ten levels deep.
    #[test]
    fn a_self_referencing_macro_expands_to_a_bounded_length() {
        let m = macros(&[("u", "e $u $u $u $u")]);
        let out = expand("$u", &m);
        assert!(out.starts_with("e e e "));
        assert!(out.len() < 2 * MAX_EXPANSION, "{}", out.len());
    }

    #[test]
    fn simple_long_and_deferred_macros() {
        let m = macros(&[("j", "mx.example"), ("daemon_name", "MTA-v6"), ("x", "X")]);
        assert_eq!(expand("$j ESMTP", &m), "mx.example ESMTP");
        assert_eq!(expand("${daemon_name}/${x}", &m), "MTA-v6/X");
        assert_eq!(expand("$&x-$&{daemon_name}", &m), "X-MTA-v6");
    }

    #[test]
    fn undefined_macros_expand_to_nothing_and_dollar_dollar_is_a_dollar() {
        let m = macros(&[]);
        assert_eq!(expand("a$qb${nope}c", &m), "abc");
        assert_eq!(expand("cost $$5", &m), "cost $5");
        assert_eq!(expand("trailing $", &m), "trailing $");
    }

    #[test]
    fn conditionals_nest_and_else_is_optional() {
        let m = macros(&[("x", "Full Name"), ("g", "a@b"), ("e", "")]);
        assert_eq!(expand("$?x$x <$g>$|$g$.", &m), "Full Name <a@b>");
        assert_eq!(expand("$?y$y <$g>$|$g$.", &m), "a@b");
        assert_eq!(expand("[$?e yes$|no$.]", &m), "[no]");
        assert_eq!(expand("$?x A$?y B$|C$. D$|E$.", &m), " AC D");
        assert_eq!(expand("$?y never$.", &m), "");
    }

    #[test]
    fn values_are_expanded_recursively_with_a_limit() {
        let m = macros(&[
            ("j", "$w.$m"),
            ("w", "mx"),
            ("m", "example.org"),
            ("l", "x$l"),
        ]);
        assert_eq!(expand("$j", &m), "mx.example.org");
        let looped = expand("$l", &m);
        assert!(looped.starts_with("xxxxxxxxxx"), "{looped}");
    }

    #[test]
    fn rule_syntax_is_kept() {
        let m = macros(&[]);
        assert_eq!(expand("$#local $: $1 $=w", &m), "$#local $: $1 $=w");
    }

    #[test]
    fn debian_greeting() {
        let m = macros(&[
            ("j", "oracle.example.test"),
            ("v", "8.17.1.9"),
            ("Z", "8.17.1.9"),
            ("b", "Tue, 24 Nov 2026 07:10:29 GMT"),
            ("client_addr", "127.0.0.9"),
            ("client_name", "[127.0.0.9]"),
            ("client_resolve", "FAIL"),
            ("_", "[127.0.0.9]"),
        ]);
        let text = "$j Sendmail $v/$Z; $b; (No UCE/UBE) $?{client_addr}logging access from: ${client_name}(${client_resolve})-$_$.";
        assert_eq!(
            expand(text, &m),
            "oracle.example.test Sendmail 8.17.1.9/8.17.1.9; Tue, 24 Nov 2026 07:10:29 GMT; (No UCE/UBE) logging access from: [127.0.0.9](FAIL)-[127.0.0.9]"
        );
    }

    #[test]
    fn at_load_deferred_macros_stay() {
        let m = macros(&[("j", "mx.example"), ("x", "X")]);
        assert_eq!(
            expand_at_load(
                "$* < @ $j . > $* $&x $&{client_addr} $={Accept} $| $#ok",
                &m
            ),
            "$* < @ mx.example . > $* $&x $&{client_addr} $={Accept} $| $#ok"
        );
    }

    #[test]
    fn layered_lookup_prefers_the_top() {
        let conn = macros(&[("daemon_name", "MSA-v4")]);
        let cfg = macros(&[("daemon_name", "cf"), ("j", "h")]);
        let l = Layered {
            top: &conn,
            base: &cfg,
        };
        assert_eq!(expand("${daemon_name}@$j", &l), "MSA-v4@h");
    }

    #[test]
    fn the_date_of_now_is_made_once_a_second_and_reads_as_rfc5322_date() {
        let before = chrono::Local::now().timestamp();
        let a = rfc5322_now();
        let b = rfc5322_now();
        let after = chrono::Local::now().timestamp();
        let parsed = chrono::DateTime::parse_from_rfc2822(&a.replace(" GMT", " +0000"))
            .expect("RFC 5322 date");
        assert!((before..=after).contains(&parsed.timestamp()), "{a}");
        if before == after {
            assert_eq!(a, b);
        }
    }

    #[test]
    fn host_names() {
        assert_eq!(
            HostNames::from_fqdn("oracle.example.test"),
            HostNames {
                fqdn: "oracle.example.test".into(),
                short: "oracle".into(),
                domain: "example.test".into()
            }
        );
        let hosts = "127.0.0.1 localhost\n# c\n127.0.1.1 box.example.net box\n";
        assert_eq!(canonical_name("box", hosts), "box.example.net");
        assert_eq!(canonical_name("BOX", hosts), "box.example.net");
        assert_eq!(canonical_name("other", hosts), "other");
        assert_eq!(canonical_name("localhost", hosts), "localhost");
    }

    #[test]
    fn dates_as_sendmail_writes_them() {
        let t = chrono::Utc
            .with_ymd_and_hms(2026, 11, 24, 6, 53, 20)
            .unwrap();
        assert_eq!(rfc5322_date(&t), "Tue, 24 Nov 2026 06:53:20 GMT");
        let east = chrono::FixedOffset::east_opt(5 * 3600 + 30 * 60).unwrap();
        let t = east.with_ymd_and_hms(2026, 3, 4, 1, 2, 3).unwrap();
        assert_eq!(rfc5322_date(&t), "Wed, 4 Mar 2026 01:02:03 +0530");
        let west = chrono::FixedOffset::west_opt(7 * 3600).unwrap();
        assert!(
            rfc5322_date(&west.with_ymd_and_hms(2026, 3, 4, 1, 2, 3).unwrap()).ends_with("-0700")
        );
    }

    #[test]
    fn builtins() {
        let now = chrono::Local::now();
        let b = builtin_macros(&HostNames::from_fqdn("a.b.c"), &now);
        assert_eq!(b["j"], "a.b.c");
        assert_eq!(b["w"], "a");
        assert_eq!(b["m"], "b.c");
        assert_eq!(b["v"], VERSION);
    }
}
