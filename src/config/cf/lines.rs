//! One logical sendmail.cf line → one [`CfLine`].
//!
//! In: the logical lines of [`super::lexer`] and the file name. Out: [`ParsedCf`] — every
//! line that parsed, with its [`Location`], plus every error and warning (all of them, not
//! just the first). The first character picks the kind (op §5.1, sendmail `readcf.c`):
//! `O D C F K M S R H P T V E Q X`; `L` is accepted with a warning and ignored; anything else
//! is an error. Nothing is expanded here: macro references stay as written (`$j`, `${x}`),
//! except what sendmail itself does while reading a line:
//! * from configuration level 3 on (`V3` and later), a `#` that is not at the start of the line
//!   and not written `$#` or `\#` starts a comment that runs to the end of the line (or of
//!   that physical line); `\#` stands for a literal `#`; trailing white space is dropped;
//! * the values of `D` lines and of mailer/queue-group fields are "munched" as sendmail's
//!   `munchstring` does: `\r \n \f \b` become control characters, `\x` is `x`, and double
//!   quotes group (they are removed).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::lexer;
use crate::config::ConfigError;

/// Where a line came from: used in every error and warning (`file:line: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<PathBuf>,
    /// 1-based number of the first physical line of the logical line.
    pub line: u32,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A parsed line with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub loc: Location,
    pub kind: CfLine,
}

/// The line kinds of op §5.1, each keeping the text sendmail keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum CfLine {
    /// `O LongName=value` or old-style `Oxvalue`. A one-character `name` is always the
    /// old-style one-letter name (resolved to the long name by the option table); white space
    /// around `=` is removed.
    Option { name: String, value: String },
    /// `Dxvalue` or `D{long}value` (`{x}` is the same as `x`); value munched.
    Macro { name: String, value: String },
    /// `Cxword1 word2` or `C{long}words`.
    Class { name: String, words: Vec<String> },
    /// `Fx/path [scanf]`, `Fx|program`, `F{name}-o /path %[^\#]`: kept as its parts. A program
    /// keeps its `|`; `key@mapclass:spec` is kept whole in `path`.
    ClassFile {
        name: String,
        optional: bool,
        path: String,
        format: Option<String>,
    },
    /// `Kname class args`.
    Map {
        name: String,
        class: String,
        args: String,
    },
    /// `Mname, P=/path, F=flags, S=..., R=..., A=argv ...`: fields by their (first) letter,
    /// values munched.
    Mailer {
        name: String,
        fields: Vec<(char, String)>,
    },
    /// `Sname=N`, `SN`, `Sname`.
    Ruleset {
        name: Option<String>,
        number: Option<u32>,
    },
    /// `R<lhs>\t<rhs>\t<comment>`: fields separated by one or more tabs.
    Rule {
        lhs: String,
        rhs: String,
        comment: Option<String>,
    },
    /// `H?flags?Name: value` or `H?${macro}?Name: value` (`condition` without the `?`s).
    Header {
        condition: Option<String>,
        name: String,
        value: String,
    },
    /// `Pname=value`.
    Priority { name: String, value: i32 },
    /// `Tuser1 user2`.
    Trusted { users: Vec<String> },
    /// `Vlevel[/vendor]`.
    Version { level: u32, vendor: Option<String> },
    /// `Ename[=value]`.
    Env { name: String, value: Option<String> },
    /// `Qname, P=..., ...` queue group.
    QueueGroup {
        name: String,
        fields: Vec<(char, String)>,
    },
    /// `Xname, S=..., F=..., T=...` mail filter (milter) definition.
    MailFilter {
        name: String,
        fields: Vec<(char, String)>,
    },
}

/// Everything read from one file.
#[derive(Debug, Default)]
pub struct ParsedCf {
    pub lines: Vec<Line>,
    /// `FILE:LINE: text` warnings (e.g. an `L` line).
    pub warnings: Vec<String>,
    pub errors: Vec<ConfigError>,
}

/// Line kinds named in the "expected" part of an unknown-line error.
pub const LINE_KINDS: &str = "O D C F K M S R H P T V E Q X";

/// Reads and parses a whole sendmail.cf; `file` is used in locations only.
pub fn parse_reader(file: &Path, r: impl BufRead) -> ParsedCf {
    let file = Arc::new(file.to_path_buf());
    let mut out = ParsedCf::default();
    let logical = match lexer::logical_lines(r) {
        Ok(l) => l,
        Err(source) => {
            out.errors.push(ConfigError::Io {
                file: file.to_path_buf(),
                source: Arc::new(source),
            });
            return out;
        }
    };
    let mut level = 0u32;
    for l in logical {
        let loc = Location {
            file: Arc::clone(&file),
            line: l.line,
        };
        let text = if level >= 3 {
            strip_comment(&l.text)
        } else {
            l.text.trim_end().to_string()
        };
        match parse_line(&text) {
            Ok(Parsed::Line(kind)) => {
                if let CfLine::Version { level: v, .. } = kind {
                    level = v;
                }
                out.lines.push(Line { loc, kind });
            }
            Ok(Parsed::Ignored(why)) => out.warnings.push(format!("{loc}: {why}")),
            Ok(Parsed::Nothing) => {}
            Err(e) => out.errors.push(e.at(loc)),
        }
    }
    out
}

/// What one line turned into.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Line(CfLine),
    /// Accepted but ignored, with the reason (a warning).
    Ignored(String),
    /// Nothing to do (an empty line after comment removal).
    Nothing,
}

/// A line error before its location is known.
#[derive(Debug, PartialEq)]
pub enum LineError {
    /// First character not a known kind; the whole line.
    UnknownKind(char, String),
    /// Bad line of a known kind: the kind letter and what was wrong and expected.
    Bad(char, String),
}

impl LineError {
    fn at(self, loc: Location) -> ConfigError {
        match self {
            LineError::UnknownKind(ch, line) => ConfigError::UnknownLineType { loc, ch, line },
            LineError::Bad(kind, msg) => ConfigError::BadLine { loc, kind, msg },
        }
    }
}

fn bad(kind: char, msg: impl Into<String>) -> LineError {
    LineError::Bad(kind, msg.into())
}

/// Parses one logical line (comments already stripped).
pub fn parse_line(text: &str) -> Result<Parsed, LineError> {
    let mut chars = text.chars();
    let Some(kind) = chars.next() else {
        return Ok(Parsed::Nothing);
    };
    let rest = chars.as_str();
    let line = match kind {
        '#' => return Ok(Parsed::Nothing),
        'O' => parse_option(rest)?,
        'D' => {
            let (name, value) = macro_name(rest).map_err(|m| bad('D', m))?;
            CfLine::Macro {
                name,
                value: munch(value, None).0,
            }
        }
        'C' => {
            let (name, words) = macro_name(rest).map_err(|m| bad('C', m))?;
            CfLine::Class {
                name,
                words: words.split_whitespace().map(str::to_string).collect(),
            }
        }
        'F' => parse_class_file(rest)?,
        'K' => parse_map(rest)?,
        'M' => {
            let (name, fields) = parse_fields('M', rest, "mailer")?;
            CfLine::Mailer { name, fields }
        }
        'Q' => {
            let (name, fields) = parse_fields('Q', rest, "queue group")?;
            CfLine::QueueGroup { name, fields }
        }
        'X' => {
            let (name, fields) = parse_fields('X', rest, "mail filter")?;
            CfLine::MailFilter { name, fields }
        }
        'S' => parse_ruleset(rest)?,
        'R' => parse_rule(rest)?,
        'H' => parse_header(rest)?,
        'P' => parse_priority(rest)?,
        'T' => CfLine::Trusted {
            users: rest.split_whitespace().map(str::to_string).collect(),
        },
        'V' => parse_version(rest)?,
        'E' => parse_env(rest)?,
        'L' => {
            return Ok(Parsed::Ignored(
                "L line (extended load average) is not supported; ignored".to_string(),
            ));
        }
        other => return Err(LineError::UnknownKind(other, text.to_string())),
    };
    Ok(Parsed::Line(line))
}

/// Removes an in-line comment as sendmail's `translate_dollars` does from level 3 on.
pub fn strip_comment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut first = true;
    while let Some(c) = chars.next() {
        if c == '#' && !first {
            match out.chars().last() {
                Some('$') => out.push('#'),
                Some('\\') => {
                    out.pop();
                    out.push('#');
                }
                _ => {
                    // drop white space before the comment, then skip to the end of this
                    // physical line
                    let keep = out.trim_end_matches([' ', '\t']).len();
                    out.truncate(keep);
                    for n in chars.by_ref() {
                        if n == '\n' {
                            out.push('\n');
                            break;
                        }
                    }
                }
            }
        } else {
            out.push(c);
        }
        first = false;
    }
    out.trim_end().to_string()
}

/// Reads a macro or class name (`x` or `{name}`) at the start of `s`; returns it and the rest.
pub fn macro_name(s: &str) -> Result<(String, &str), String> {
    if let Some(inner) = s.strip_prefix('{') {
        let Some(end) = inner.find('}') else {
            return Err(format!(
                "unterminated name \"{{{inner}\" (expected `{{name}}`)"
            ));
        };
        let name = &inner[..end];
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(format!(
                "bad name \"{{{name}}}\" (expected `{{name}}` without spaces)"
            ));
        }
        Ok((name.to_string(), &inner[end + 1..]))
    } else {
        let mut chars = s.chars();
        match chars.next() {
            Some(c) if !c.is_whitespace() => Ok((c.to_string(), chars.as_str())),
            _ => Err(
                "missing name (expected one character or `{name}` right after the line letter)"
                    .to_string(),
            ),
        }
    }
}

/// sendmail's `munchstring`: backslash escapes and double-quote grouping, up to an unquoted
/// `delim` (if any). Returns the munched text and the byte index where it stopped (at the
/// delimiter or the end).
pub fn munch(s: &str, delim: Option<char>) -> (String, usize) {
    let mut out = String::new();
    let mut backslash = false;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        if backslash {
            backslash = false;
            out.push(match c {
                'r' => '\r',
                'n' => '\n',
                'f' => '\u{c}',
                'b' => '\u{8}',
                other => other,
            });
        } else if c == '\\' {
            backslash = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if quoted || Some(c) != delim {
            out.push(c);
        } else {
            return (out, i);
        }
    }
    (out, s.len())
}

fn parse_option(rest: &str) -> Result<CfLine, LineError> {
    if let Some(long) = rest.strip_prefix([' ', '\t']) {
        let long = long.trim_start();
        let (name, value) = match long.find('=') {
            Some(eq) => (
                long[..eq].trim_end(),
                long[eq + 1..].trim_start_matches([' ', '\t']),
            ),
            None => (long.trim_end(), ""),
        };
        if name.is_empty() {
            return Err(bad('O', "null option name (expected `O Name=value`)"));
        }
        if name.chars().count() == 1 {
            return Err(bad(
                'O',
                format!(
                    "option name \"{name}\" is too short (expected a long name, or `O{name}value` for a one-letter option)"
                ),
            ));
        }
        Ok(CfLine::Option {
            name: name.to_string(),
            value: value.to_string(),
        })
    } else {
        let mut chars = rest.chars();
        match chars.next() {
            Some(c) => Ok(CfLine::Option {
                name: c.to_string(),
                value: chars.as_str().to_string(),
            }),
            None => Err(bad(
                'O',
                "missing option (expected `O Name=value` or `Oxvalue`)",
            )),
        }
    }
}

fn parse_class_file(rest: &str) -> Result<CfLine, LineError> {
    let (name, spec) = macro_name(rest).map_err(|m| bad('F', m))?;
    let mut spec = spec.trim_start();
    let optional = spec.starts_with("-o");
    if optional {
        spec = spec
            .trim_start_matches(|c: char| !c.is_whitespace())
            .trim_start();
    }
    if spec.is_empty() {
        return Err(bad(
            'F',
            "missing file name (expected `Fx/path [format]` or `Fx|program`)",
        ));
    }
    let is_map = !spec.starts_with(['/', '|'])
        && spec.find('@').is_some_and(|at| {
            let q = &spec[at + 1..];
            q == "LDAP" || (!q.starts_with(':') && q.contains(':'))
        });
    if let Some(program) = spec.strip_prefix('|') {
        // sendmail ends the name at the first white space, as for a file, so a program
        // takes no arguments; what follows is not used as a format either (the oracle
        // reads `F{x}|/bin/echo a b` as `/bin/echo` alone, and a program's lines as `%s`)
        let end = program.find(char::is_whitespace).unwrap_or(program.len());
        return Ok(CfLine::ClassFile {
            name,
            optional,
            path: format!("|{}", &program[..end]),
            format: None,
        });
    }
    if is_map {
        return Ok(CfLine::ClassFile {
            name,
            optional,
            path: spec.to_string(),
            format: None,
        });
    }
    let (path, end, ok) = extract_quoted(spec);
    if !ok {
        return Err(bad(
            'F',
            format!("illegal file name '{spec}' (unbalanced quote or trailing backslash)"),
        ));
    }
    let format = spec[end..].trim();
    Ok(CfLine::ClassFile {
        name,
        optional,
        path,
        format: (!format.is_empty()).then(|| format.to_string()),
    })
}

/// sendmail's `extrquotstr` with a space delimiter: `"a b"` and `a\ b` keep their space.
fn extract_quoted(s: &str) -> (String, usize, bool) {
    let mut out = String::new();
    let mut backslash = false;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        if backslash {
            backslash = false;
            if c != ' ' {
                out.push('\\');
            }
            out.push(c);
            continue;
        }
        if c == '\\' {
            backslash = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if quoted || !c.is_whitespace() {
            out.push(c);
        } else {
            return (out, i, true);
        }
    }
    (out, s.len(), !quoted && !backslash)
}

fn parse_map(rest: &str) -> Result<CfLine, LineError> {
    let mut parts = rest.trim_start().splitn(2, char::is_whitespace);
    let name = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default().trim_start();
    let mut parts = rest.splitn(2, char::is_whitespace);
    let class = parts.next().unwrap_or_default();
    if name.is_empty() || class.is_empty() {
        return Err(bad(
            'K',
            "missing map name or class (expected `Kname class [arguments]`)",
        ));
    }
    Ok(CfLine::Map {
        name: name.to_string(),
        class: class.to_string(),
        args: parts.next().unwrap_or_default().trim().to_string(),
    })
}

/// `Name, X=value, Y="quoted, value", ...` as `makemailer`/`makequeue` read it.
fn parse_fields(
    kind: char,
    rest: &str,
    what: &str,
) -> Result<(String, Vec<(char, String)>), LineError> {
    let name_end = rest
        .find(|c: char| c == ',' || c.is_whitespace())
        .unwrap_or(rest.len());
    let name = &rest[..name_end];
    if name.is_empty() {
        return Err(bad(
            kind,
            format!("name required for {what} (expected `{kind}name, X=value, ...`)"),
        ));
    }
    let mut fields = Vec::new();
    let mut p = &rest[name_end..];
    loop {
        p = p.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        let Some(code) = p.chars().next() else { break };
        let Some(eq) = p.find(['=', ',']).filter(|&i| p[i..].starts_with('=')) else {
            let field = p.split(',').next().unwrap_or_default().trim();
            return Err(bad(
                kind,
                format!(
                    "{what} {name}: `=' expected after \"{field}\" (expected `X=value` fields separated by commas)"
                ),
            ));
        };
        let body = p[eq + 1..].trim_start();
        let (_, stop) = munch(body, Some(','));
        fields.push((code, munch(body[..stop].trim_end(), None).0));
        p = &body[stop..];
    }
    Ok((name.to_string(), fields))
}

fn parse_ruleset(rest: &str) -> Result<CfLine, LineError> {
    let s = rest.trim();
    if s.is_empty() {
        return Err(bad(
            'S',
            "missing ruleset (expected `SN`, `Sname` or `Sname=N`)",
        ));
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        let n = s.parse::<u32>().map_err(|_| {
            bad(
                'S',
                format!("bad ruleset number \"{s}\" (expected `SN` with N a number)"),
            )
        })?;
        return Ok(CfLine::Ruleset {
            name: None,
            number: Some(n),
        });
    }
    let name_end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    let name = &s[..name_end];
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(bad(
            'S',
            format!("invalid ruleset name \"{s}\" (expected a letter then letters, digits or _)"),
        ));
    }
    let after = s[name_end..].trim_start();
    let number = match after.strip_prefix('=') {
        Some(n) => Some(n.trim().parse::<u32>().map_err(|_| {
            bad(
                'S',
                format!("bad ruleset definition \"{s}\" (number required after `=')"),
            )
        })?),
        None if after.is_empty() => None,
        None => {
            return Err(bad(
                'S',
                format!("junk after ruleset name \"{s}\" (expected `Sname` or `Sname=N`)"),
            ));
        }
    };
    Ok(CfLine::Ruleset {
        name: Some(name.to_string()),
        number,
    })
}

fn parse_rule(rest: &str) -> Result<CfLine, LineError> {
    let Some(tab) = rest.find('\t') else {
        return Err(bad(
            'R',
            format!(
                "invalid rewrite line \"R{rest}\" (tab expected between left and right hand side)"
            ),
        ));
    };
    let lhs = &rest[..tab];
    if lhs.trim().is_empty() {
        return Err(bad(
            'R',
            "null left hand side (expected `R<lhs><TAB><rhs>`)",
        ));
    }
    let after = rest[tab..].trim_start_matches('\t');
    let rhs_end = after.find('\t').unwrap_or(after.len());
    let rhs = &after[..rhs_end];
    let comment = after[rhs_end..].trim_start_matches('\t').trim();
    Ok(CfLine::Rule {
        lhs: lhs.to_string(),
        rhs: rhs.to_string(),
        comment: (!comment.is_empty()).then(|| comment.to_string()),
    })
}

fn parse_header(rest: &str) -> Result<CfLine, LineError> {
    let (condition, rest) = match rest.strip_prefix('?') {
        Some(r) => {
            let Some(end) = r.find('?') else {
                return Err(bad(
                    'H',
                    "unterminated condition (expected `H?flags?Name: value`)",
                ));
            };
            (Some(r[..end].to_string()), &r[end + 1..])
        }
        None => (None, rest),
    };
    let Some(colon) = rest.find(':') else {
        return Err(bad(
            'H',
            format!("missing `:` in header \"{rest}\" (expected `HName: value`)"),
        ));
    };
    let name = rest[..colon].trim();
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(bad(
            'H',
            format!("bad header name \"{name}\" (expected `HName: value`)"),
        ));
    }
    Ok(CfLine::Header {
        condition,
        name: name.to_string(),
        value: rest[colon + 1..]
            .trim_start_matches([' ', '\t'])
            .to_string(),
    })
}

fn parse_priority(rest: &str) -> Result<CfLine, LineError> {
    let Some((name, value)) = rest.split_once('=') else {
        return Err(bad('P', "missing `=` (expected `Pname=number`)"));
    };
    let value = value.trim().parse::<i32>().map_err(|_| {
        bad(
            'P',
            format!(
                "bad priority value \"{}\" (expected `Pname=number`)",
                value.trim()
            ),
        )
    })?;
    Ok(CfLine::Priority {
        name: name.trim().to_string(),
        value,
    })
}

fn parse_version(rest: &str) -> Result<CfLine, LineError> {
    let s = rest.trim_start();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let level = s[..digits].parse::<u32>().map_err(|_| {
        bad(
            'V',
            format!("invalid argument to V line: \"{s}\" (expected `Vlevel[/vendor]`)"),
        )
    })?;
    let vendor = s[digits..].strip_prefix('/').map(|v| {
        v.chars()
            .take_while(char::is_ascii_alphabetic)
            .collect::<String>()
    });
    Ok(CfLine::Version {
        level,
        vendor: vendor.filter(|v| !v.is_empty()),
    })
}

fn parse_env(rest: &str) -> Result<CfLine, LineError> {
    let (name, value) = match rest.split_once('=') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (rest, None),
    };
    if name.trim().is_empty() {
        return Err(bad('E', "missing variable name (expected `Ename[=value]`)"));
    }
    Ok(CfLine::Env {
        name: name.trim().to_string(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> CfLine {
        match parse_line(text) {
            Ok(Parsed::Line(l)) => l,
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    fn err(text: &str) -> String {
        match parse_line(text) {
            Err(e) => e
                .at(Location {
                    file: Arc::new(PathBuf::from("sendmail.cf")),
                    line: 12,
                })
                .to_string(),
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    fn opt(name: &str, value: &str) -> CfLine {
        CfLine::Option {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn option_lines_long_and_one_letter() {
        assert_eq!(one("O LogLevel=9"), opt("LogLevel", "9"));
        assert_eq!(one("O LogLevel = 9"), opt("LogLevel", "9"));
        assert_eq!(
            one("O SmtpGreetingMessage=$j Sendmail $v/$Z; $b"),
            opt("SmtpGreetingMessage", "$j Sendmail $v/$Z; $b")
        );
        assert_eq!(one("O HoldExpensive"), opt("HoldExpensive", ""));
        assert_eq!(one("OL9"), opt("L", "9"));
        assert_eq!(one("OT5d/4h"), opt("T", "5d/4h"));
    }

    #[test]
    fn option_errors() {
        assert_eq!(
            err("O =9"),
            "sendmail.cf:12: bad O line: null option name (expected `O Name=value`)"
        );
        assert!(err("O").contains("missing option"));
        assert!(err("O L=9").contains("too short"));
    }

    #[test]
    fn macro_lines() {
        assert_eq!(
            one("DnMAILER-DAEMON"),
            CfLine::Macro {
                name: "n".into(),
                value: "MAILER-DAEMON".into()
            }
        );
        assert_eq!(
            one("D{MTAHost}[127.0.0.1]"),
            CfLine::Macro {
                name: "MTAHost".into(),
                value: "[127.0.0.1]".into()
            }
        );
        assert_eq!(
            one("D{x}y"),
            CfLine::Macro {
                name: "x".into(),
                value: "y".into()
            }
        );
        assert_eq!(
            one("DS"),
            CfLine::Macro {
                name: "S".into(),
                value: "".into()
            }
        );
        assert_eq!(
            one(r#"Dq"a\"b"\n"#),
            CfLine::Macro {
                name: "q".into(),
                value: "a\"b\n".into()
            }
        );
        assert!(err("D{open").contains("unterminated name"));
        assert!(err("D").contains("missing name"));
    }

    #[test]
    fn class_lines() {
        assert_eq!(
            one("Cwlocalhost"),
            CfLine::Class {
                name: "w".into(),
                words: vec!["localhost".into()]
            }
        );
        assert_eq!(
            one("CO @ % !"),
            CfLine::Class {
                name: "O".into(),
                words: vec!["@".into(), "%".into(), "!".into()]
            }
        );
        assert_eq!(
            one("C{Accept}OK RELAY"),
            CfLine::Class {
                name: "Accept".into(),
                words: vec!["OK".into(), "RELAY".into()]
            }
        );
        assert!(err("C{}x").contains("bad name"));
    }

    #[test]
    fn class_file_lines() {
        assert_eq!(
            one("Fw/etc/mail/local-host-names %[^#]"),
            CfLine::ClassFile {
                name: "w".into(),
                optional: false,
                path: "/etc/mail/local-host-names".into(),
                format: Some("%[^#]".into())
            }
        );
        assert_eq!(
            one("FR-o /etc/mail/relay-domains"),
            CfLine::ClassFile {
                name: "R".into(),
                optional: true,
                path: "/etc/mail/relay-domains".into(),
                format: None
            }
        );
        assert_eq!(
            one("F{prog}|/usr/bin/list a"),
            CfLine::ClassFile {
                name: "prog".into(),
                optional: false,
                path: "|/usr/bin/list".into(),
                format: None
            }
        );
        assert_eq!(
            one(r#"Fx"/a b/c" %s"#),
            CfLine::ClassFile {
                name: "x".into(),
                optional: false,
                path: "/a b/c".into(),
                format: Some("%s".into())
            }
        );
        assert!(err("Fw").contains("missing file name"));
        assert!(err("Fw\"/unbalanced").contains("illegal file name"));
    }

    #[test]
    fn map_lines() {
        assert_eq!(
            one("Kaccess hash -T<TMPF> /etc/mail/access"),
            CfLine::Map {
                name: "access".into(),
                class: "hash".into(),
                args: "-T<TMPF> /etc/mail/access".into()
            }
        );
        assert_eq!(
            one("Karith arith"),
            CfLine::Map {
                name: "arith".into(),
                class: "arith".into(),
                args: "".into()
            }
        );
        assert!(err("Konly").contains("expected `Kname class"));
    }

    #[test]
    fn mailer_lines() {
        let m = one(
            "Mesmtp,\t\tP=[IPC], F=mDFMuXa, S=EnvFromSMTP/HdrFromSMTP, R=EnvToSMTP, E=\\r\\n, L=990,\n\t\tT=DNS/RFC822/SMTP,\n\t\tA=TCP $h",
        );
        assert_eq!(
            m,
            CfLine::Mailer {
                name: "esmtp".into(),
                fields: vec![
                    ('P', "[IPC]".into()),
                    ('F', "mDFMuXa".into()),
                    ('S', "EnvFromSMTP/HdrFromSMTP".into()),
                    ('R', "EnvToSMTP".into()),
                    ('E', "\r\n".into()),
                    ('L', "990".into()),
                    ('T', "DNS/RFC822/SMTP".into()),
                    ('A', "TCP $h".into()),
                ]
            }
        );
        // the key's first letter counts; quotes protect commas
        assert_eq!(
            one(r#"Mx, Path=/bin/x, Argv="x, y""#),
            CfLine::Mailer {
                name: "x".into(),
                fields: vec![('P', "/bin/x".into()), ('A', "x, y".into())]
            }
        );
        assert!(err("M, P=/x").contains("name required for mailer"));
        assert!(err("Mx, P=/x, Fflags").contains("`=' expected after \"Fflags\""));
    }

    #[test]
    fn ruleset_lines() {
        assert_eq!(
            one("S0"),
            CfLine::Ruleset {
                name: None,
                number: Some(0)
            }
        );
        assert_eq!(
            one("Scanonify=3"),
            CfLine::Ruleset {
                name: Some("canonify".into()),
                number: Some(3)
            }
        );
        assert_eq!(
            one("SLocal_check_rcpt"),
            CfLine::Ruleset {
                name: Some("Local_check_rcpt".into()),
                number: None
            }
        );
        assert!(err("S").contains("missing ruleset"));
        assert!(err("Sx=").contains("number required"));
        assert!(err("S_x").contains("invalid ruleset name"));
    }

    #[test]
    fn rule_lines() {
        assert_eq!(
            one("R$* < @ $+ > $*\t\t$1 < @ $2 . > $3\tadd dot"),
            CfLine::Rule {
                lhs: "$* < @ $+ > $*".into(),
                rhs: "$1 < @ $2 . > $3".into(),
                comment: Some("add dot".into())
            }
        );
        assert_eq!(
            one("R$@\t$@ <@>"),
            CfLine::Rule {
                lhs: "$@".into(),
                rhs: "$@ <@>".into(),
                comment: None
            }
        );
        assert_eq!(
            err("R$* no tab here"),
            "sendmail.cf:12: bad R line: invalid rewrite line \"R$* no tab here\" (tab expected between left and right hand side)"
        );
        assert!(err("R\t$@").contains("null left hand side"));
    }

    #[test]
    fn header_lines() {
        assert_eq!(
            one("H?F?From: $?x$x <$g>$|$g$."),
            CfLine::Header {
                condition: Some("F".into()),
                name: "From".into(),
                value: "$?x$x <$g>$|$g$.".into()
            }
        );
        assert_eq!(
            one("H?${x}?X-Thing: y"),
            CfLine::Header {
                condition: Some("${x}".into()),
                name: "X-Thing".into(),
                value: "y".into()
            }
        );
        assert_eq!(
            one("HReceived: a\n\tb"),
            CfLine::Header {
                condition: None,
                name: "Received".into(),
                value: "a\n\tb".into()
            }
        );
        assert!(err("H?F").contains("unterminated condition"));
        assert!(err("HNoColon").contains("missing `:`"));
    }

    #[test]
    fn priority_trusted_version_env_queue_filter_lines() {
        assert_eq!(
            one("Pjunk=-100"),
            CfLine::Priority {
                name: "junk".into(),
                value: -100
            }
        );
        assert!(err("Pjunk").contains("missing `=`"));
        assert!(err("Pjunk=x").contains("bad priority value"));
        assert_eq!(
            one("Troot daemon"),
            CfLine::Trusted {
                users: vec!["root".into(), "daemon".into()]
            }
        );
        assert_eq!(
            one("V10/Berkeley"),
            CfLine::Version {
                level: 10,
                vendor: Some("Berkeley".into())
            }
        );
        assert_eq!(
            one("V10"),
            CfLine::Version {
                level: 10,
                vendor: None
            }
        );
        assert!(err("Vx").contains("invalid argument to V line"));
        assert_eq!(
            one("ETZ=UTC"),
            CfLine::Env {
                name: "TZ".into(),
                value: Some("UTC".into())
            }
        );
        assert_eq!(
            one("EPATH"),
            CfLine::Env {
                name: "PATH".into(),
                value: None
            }
        );
        assert_eq!(
            one("Qfast, P=/var/spool/mqueue/fast, F=f, R=2"),
            CfLine::QueueGroup {
                name: "fast".into(),
                fields: vec![
                    ('P', "/var/spool/mqueue/fast".into()),
                    ('F', "f".into()),
                    ('R', "2".into())
                ]
            }
        );
        assert_eq!(
            one("Xmyfilter, S=local:/var/run/f1.sock, F=R"),
            CfLine::MailFilter {
                name: "myfilter".into(),
                fields: vec![('S', "local:/var/run/f1.sock".into()), ('F', "R".into())]
            }
        );
    }

    #[test]
    fn l_lines_are_ignored_with_a_warning_and_unknown_kinds_are_errors() {
        assert!(matches!(parse_line("Lsomething"), Ok(Parsed::Ignored(_))));
        assert_eq!(
            err("Zfoo"),
            "sendmail.cf:12: unknown line type 'Z' (expected one of O D C F K M S R H P T V E Q X or a comment)"
        );
        assert!(err(" leading space").contains("unknown line type ' '"));
    }

    #[test]
    fn inline_comments_from_level_3() {
        assert_eq!(strip_comment("Fw/etc/x %[^\\#]"), "Fw/etc/x %[^#]");
        assert_eq!(
            strip_comment("R$+\t$#local $: $1\t# comment"),
            "R$+\t$#local $: $1"
        );
        assert_eq!(strip_comment("O X=1   # why"), "O X=1");
        assert_eq!(strip_comment("HA: b # c\n\td"), "HA: b\n\td");
    }

    #[test]
    fn parse_reader_collects_every_error_and_tracks_comment_level() {
        let text = "Zone\nV10/Berkeley\nO LogLevel=9 # nine\nRno tab\nLload\nDxy\n";
        let p = parse_reader(Path::new("t.cf"), text.as_bytes());
        assert_eq!(p.errors.len(), 2, "{:?}", p.errors);
        assert_eq!(
            p.errors[0].to_string(),
            "t.cf:1: unknown line type 'Z' (expected one of O D C F K M S R H P T V E Q X or a comment)"
        );
        assert!(p.errors[1].to_string().starts_with("t.cf:4: bad R line"));
        assert_eq!(
            p.warnings,
            vec!["t.cf:5: L line (extended load average) is not supported; ignored".to_string()]
        );
        assert_eq!(p.lines.len(), 3);
        assert_eq!(p.lines[1].kind, opt("LogLevel", "9"));
        assert_eq!(p.lines[2].loc.line, 6);
    }

    #[test]
    fn before_a_v_line_hash_is_not_a_comment() {
        let p = parse_reader(Path::new("t.cf"), "Dxa#b\n".as_bytes());
        assert_eq!(
            p.lines[0].kind,
            CfLine::Macro {
                name: "x".into(),
                value: "a#b".into()
            }
        );
    }
}
