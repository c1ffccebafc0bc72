//! The `regex` map: `K name regex [-n] [-f] [-b] [-s[N,N…]] [-d delim] [-a text] [-m]
//! pattern` — a key matches or not, and the value is made of the match.
//!
//! In: the `K` line's arguments (flags, then the pattern: the rest of the line). Out: a
//! compiled [`RegexMap`] whose [`RegexMap::value`] gives, for a key that matches (or with
//! `-n`, one that does not): the `-s` substrings joined by `$|` (or the `-d` string), the
//! key itself with `-m`, else the empty string; the map's `-a` text is appended by the
//! caller. Keys are matched as given (not folded); matching ignores case unless `-f`.
//!
//! POSIX regular expressions (sendmail uses `regcomp`) are translated for the `regex`
//! crate ([`translate`]): a backslash inside a bracket expression is a literal, as are
//! `[`, `&`, `~` and `-` where Rust would read a nested class or a set operation; `-b` turns a
//! basic expression (`\(` `\)` `\{` `\}` groups and intervals, `+ ? | ( ) { }` literal)
//! into the extended form. Differences that remain: POSIX takes the leftmost-*longest*
//! match, the crate the leftmost-*first*, so with alternations (`a|ab`) a `-s` substring
//! can be shorter than sendmail's; GNU's `\<` and `\>` become `\b`; compile errors carry
//! the crate's text, not glibc's. Patterns are compiled with a size limit, so a hostile cf
//! cannot make one take unbounded memory, and matching is linear in the key.
//!
//! Source: op.txt §5.1.11 (the `regex` class and its flags), cf/README ("regex map"),
//! sendmail 8.17 map.c (`regex_map_init`, `regex_map_lookup`).

use regex::bytes::{Regex, RegexBuilder};

use super::token::meta;

/// Compiled patterns may use at most this much memory.
const SIZE_LIMIT: usize = 1 << 20;

/// One compiled `regex` map.
#[derive(Debug, Clone)]
pub struct RegexMap {
    re: Regex,
    /// `-n`: the map "matches" when the pattern does not.
    not: bool,
    /// `-s`: the groups returned (`None`: no `-s`; all groups from 0 when no list).
    groups: Option<Vec<usize>>,
    /// `-d`: what joins the substrings (default `$|`).
    delim: Vec<u8>,
}

/// The flags of a `regex` K line that the generic map code also keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Common {
    pub append: Option<Vec<u8>>,
    pub match_only: bool,
    pub keep_quotes: bool,
    pub space_sub: Option<u8>,
}

/// Parses a `regex` K line's arguments and compiles its pattern. `Err` is sendmail's
/// `pattern-compile-error: …` text.
pub fn parse(args: &str) -> (Common, Result<RegexMap, String>) {
    let mut c = Common::default();
    let (mut not, mut case_sensitive, mut basic) = (false, false, false);
    let (mut groups, mut delim) = (None, vec![meta::CONDELSE]);
    let mut rest = args.trim_start();
    while let Some(flagged) = rest.strip_prefix('-') {
        let end = flagged.find([' ', '\t']).unwrap_or(flagged.len());
        let (word, after) = flagged.split_at(end);
        let mut chars = word.chars();
        let flag = chars.next();
        let value = chars.as_str();
        match flag {
            Some('n') => not = true,
            Some('f') => case_sensitive = true,
            Some('b') => basic = true,
            Some('s') => groups = Some(parse_groups(value)),
            Some('d') => delim = value.as_bytes().to_vec(),
            Some('a') => c.append = Some(value.as_bytes().to_vec()),
            Some('m') => c.match_only = true,
            Some('q') => c.keep_quotes = true,
            Some('S') => c.space_sub = value.bytes().next(),
            _ => {}
        }
        rest = after.trim_start();
    }
    let compiled = compile(rest, basic, case_sensitive).and_then(|re| {
        let n = re.captures_len();
        let groups = match groups {
            Some(g) if g.is_empty() => Some((0..n).collect()),
            Some(g) if g.iter().any(|&i| i >= n) => {
                return Err(format!("too many substrings, {n} max"));
            }
            other => other,
        };
        Ok(RegexMap {
            re,
            not,
            groups,
            delim,
        })
    });
    (c, compiled)
}

/// `-s1,3,4`: the group numbers (empty: all).
fn parse_groups(list: &str) -> Vec<usize> {
    list.split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

fn compile(pattern: &str, basic: bool, case_sensitive: bool) -> Result<Regex, String> {
    RegexBuilder::new(&translate(pattern, basic))
        .case_insensitive(!case_sensitive)
        .unicode(false)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let text = e.to_string();
            let last = text.lines().rev().find(|l| !l.trim().is_empty());
            let last = last.unwrap_or("").trim();
            let last = last.strip_prefix("error: ").unwrap_or(last);
            format!("pattern-compile-error: {last}")
        })
}

impl RegexMap {
    /// The value for `key`, before the `-a` suffix; `None` when the map does not match.
    pub fn value(&self, key: &[u8], match_only: bool) -> Option<Vec<u8>> {
        let caps = self.re.captures(key);
        if caps.is_some() == self.not {
            return None;
        }
        if match_only {
            return Some(key.to_vec());
        }
        let (Some(groups), Some(caps)) = (&self.groups, caps) else {
            return Some(Vec::new());
        };
        let mut out = Vec::new();
        for (i, &g) in groups.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(&self.delim);
            }
            if let Some(m) = caps.get(g) {
                out.extend_from_slice(m.as_bytes());
            }
        }
        Some(out)
    }
}

/// A POSIX extended (or, with `basic`, basic) regular expression in the `regex` crate's
/// syntax.
pub fn translate(pattern: &str, basic: bool) -> String {
    let p: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        match c {
            '[' => i = bracket(&p, i, &mut out),
            '\\' if i + 1 < p.len() => {
                i += 1;
                out.push_str(&escape(p[i], basic));
            }
            '(' | ')' | '{' | '}' | '+' | '?' | '|' if basic => {
                out.push('\\');
                out.push(c);
            }
            '*' if basic && starts_expression(&out) => out.push_str("\\*"),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// After `\`: GNU word boundaries, BRE groups and intervals, and escaped literals.
fn escape(c: char, basic: bool) -> String {
    match c {
        '<' | '>' => "\\b".to_string(),
        '(' | ')' | '{' | '}' if basic => c.to_string(),
        c if c.is_ascii_alphanumeric() => format!("\\{c}"),
        c => regex::escape(&c.to_string()),
    }
}

/// In a BRE a `*` at the start of the expression or of a group is a literal.
fn starts_expression(out: &str) -> bool {
    out.is_empty() || out.ends_with('(') || out == "^" || out.ends_with("(^")
}

/// Copies the bracket expression starting at `p[start]` (`[`), returns the index of its
/// closing `]` (or the end). `]` first is a literal; `\`, `[`, `&` and `~` are literals.
fn bracket(p: &[char], start: usize, out: &mut String) -> usize {
    let mut i = start + 1;
    out.push('[');
    if p.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    if p.get(i) == Some(&']') {
        out.push_str("\\]");
        i += 1;
    }
    while i < p.len() {
        match p[i] {
            ']' => {
                out.push(']');
                return i;
            }
            '[' if matches!(p.get(i + 1), Some(':' | '.' | '=')) => {
                let kind = p[i + 1];
                let close =
                    (i + 2..p.len().saturating_sub(1)).find(|&j| p[j] == kind && p[j + 1] == ']');
                match close {
                    Some(j) if kind == ':' => {
                        out.extend(&p[i..=j + 1]);
                        i = j + 1;
                    }
                    Some(j) => {
                        // [.x.] and [=x=]: the character itself
                        for ch in &p[i + 2..j] {
                            out.push_str(&regex::escape(&ch.to_string()));
                        }
                        i = j + 1;
                    }
                    None => out.push_str("\\["),
                }
            }
            '-' if p.get(i + 1) == Some(&']') || p[i - 1] == '[' || p[i - 1] == '^' => {
                out.push_str("\\-");
            }
            c @ ('\\' | '[' | '&' | '~') => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
        i += 1;
    }
    p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(args: &str) -> (Common, RegexMap) {
        let (c, r) = parse(args);
        (c, r.unwrap())
    }

    fn value(args: &str, key: &str) -> Option<String> {
        let (c, m) = map(args);
        m.value(key.as_bytes(), c.match_only)
            .map(|v| String::from_utf8_lossy(&v).replace('\u{fffd}', "$|"))
    }

    /// Each row was checked against sendmail 8.17.1.9's `/map` on the same K line.
    #[test]
    fn lookups_as_sendmail_answers_them() {
        let sub = "$|";
        let rows: &[(&str, &str, Option<String>)] = &[
            ("-a@MATCH ^[0-9]+$", "12345", Some(String::new())),
            ("-a@MATCH ^[0-9]+$", "12a", None),
            ("-n -a@NOT ^[0-9]+$", "12a", Some(String::new())),
            ("-n -a@NOT ^[0-9]+$", "12", None),
            ("-f ^Abc$", "abc", None),
            ("-f ^Abc$", "Abc", Some(String::new())),
            ("^abc$", "ABC", Some(String::new())),
            ("-m ^abc$", "ABC", Some("ABC".into())),
            ("-s ^(ab)c$", "ABC", Some(format!("ABC{sub}AB"))),
            (
                "-s ^([a-z]+)@([a-z]+)$",
                "joe@host",
                Some(format!("joe@host{sub}joe{sub}host")),
            ),
            (
                "-s1,3 ^([a-z]+)-([a-z]+)-([a-z]+)$",
                "a-b-c",
                Some(format!("a{sub}c")),
            ),
            ("-s2,1 -d+ ^([a-z]+)-([a-z]+)$", "a-b", Some("b+a".into())),
            ("-s ^(a)?b$", "b", Some(format!("b{sub}"))),
            ("-m -a! ^a", "abc", Some("abc".into())),
            ("^x", "xyz", Some(String::new())),
            ("-b -a@B ^a\\{2\\}$", "aa", Some(String::new())),
        ];
        for (args, key, want) in rows {
            assert_eq!(&value(args, key), want, "K x regex {args} / key {key}");
        }
        assert_eq!(map("-m -a! ^a").0.append.as_deref(), Some(&b"!"[..]));
    }

    #[test]
    fn a_bad_pattern_is_a_compile_error() {
        let (_, r) = parse("-a@X ^(ab$");
        assert!(r.unwrap_err().starts_with("pattern-compile-error: "));
        let (_, r) = parse("-s5 ^(a)$");
        assert!(r.is_err(), "a substring beyond the groups");
    }

    #[test]
    fn posix_brackets_and_basic_expressions_translate() {
        assert_eq!(translate(r"[\.]", false), r"[\\.]");
        assert_eq!(translate("[]a]", false), r"[\]a]");
        assert_eq!(translate("[^]a-z-]", false), r"[^\]a-z\-]");
        assert_eq!(translate("[[:digit:]&~]", false), r"[[:digit:]\&\~]");
        assert_eq!(translate(r"\<w\>", false), r"\bw\b");
        assert_eq!(translate(r"\(a+\)\{2\}|b?", true), r"(a\+){2}\|b\?");
        assert_eq!(translate("*a", true), r"\*a");
        assert_eq!(value(r"-a@ ^a[\]b$", r"a\b"), Some(String::new()));
        assert_eq!(value("^[[:alpha:]]+$", "Mixed"), Some(String::new()));
    }

    #[test]
    fn hostile_patterns_are_bounded() {
        let (_, r) = parse("(((a{100}){100}){100})");
        assert!(r.is_err(), "over the size limit");
        let (c, m) = map("^(a|a)*b$");
        let key = vec![b'a'; 100_000];
        assert_eq!(m.value(&key, c.match_only), None);
    }
}
