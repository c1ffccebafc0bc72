//! The alias file's text → [`AliasTable`](super::AliasTable): logical lines, entries, members.

use std::path::{Path, PathBuf};

use super::{Alias, AliasError, AliasTable, Member, ParseIssue};

/// Parses alias-file text. `path` only names the file in messages. All errors are collected.
pub fn parse(text: &str, path: &Path) -> Result<AliasTable, AliasError> {
    let (table, issues) = parse_lenient(text, path);
    if issues.is_empty() {
        Ok(table)
    } else {
        Err(AliasError::Parse(issues))
    }
}

/// As sendmail's newaliases reads a file: every good entry, and every bad line's problem
/// (the bad ones are left out; the good ones are still built).
pub fn parse_lenient(text: &str, path: &Path) -> (AliasTable, Vec<ParseIssue>) {
    let mut table = AliasTable::default();
    let mut issues = Vec::new();
    let issue = |line: usize, message: String| ParseIssue {
        path: path.to_path_buf(),
        line,
        message,
    };
    // (start line, joined text) of the entry being collected.
    let mut current: Option<(usize, String)> = None;
    let mut skipping = false;
    let finish =
        |cur: Option<(usize, String)>, table: &mut AliasTable, issues: &mut Vec<ParseIssue>| {
            if let Some((line, text)) = cur {
                match parse_entry(&text, line) {
                    Ok(alias) => table.insert(alias, path),
                    Err(msg) => issues.push(issue(line, msg)),
                }
            }
        };
    for (lineno, line) in logical_lines(text) {
        match line.chars().next() {
            None | Some('#') => {
                // sendmail ends the entry at a comment or empty line.
                finish(current.take(), &mut table, &mut issues);
                skipping = false;
            }
            Some(' ') | Some('\t') => {
                if let Some((_, text)) = current.as_mut() {
                    text.push_str(&line);
                } else if !skipping {
                    issues.push(issue(
                        lineno,
                        "Non-continuation line starts with space (expected `name: value` at the start of the line)".into(),
                    ));
                    skipping = true;
                }
            }
            Some(_) => {
                finish(current.take(), &mut table, &mut issues);
                skipping = false;
                // As sendmail: a bad left-hand side is reported at once, and the entry's
                // continuation lines then count as stray lines.
                match line.find(':') {
                    Some(colon) => match check_name(&line[..colon], &line) {
                        Ok(_) => current = Some((lineno, line)),
                        Err(msg) => issues.push(issue(lineno, msg)),
                    },
                    None => issues.push(issue(
                        lineno,
                        format!("{}... missing colon (expected `name: value`)", clip(&line)),
                    )),
                }
            }
        }
    }
    finish(current.take(), &mut table, &mut issues);
    (table, issues)
}

/// Physical lines joined where one ends in a backslash (sendmail joins them with the
/// backslash and newline removed), each with the number of its first line; `\r` dropped.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        match line.strip_suffix('\\') {
            Some(head) => {
                acc.push_str(head);
                pending = Some((start, acc));
            }
            None => {
                acc.push_str(line);
                out.push((start, acc));
            }
        }
    }
    if let Some(p) = pending {
        out.push(p);
    }
    out
}

/// One `name: rhs` entry (continuations already joined) → an [`Alias`], or the message.
fn parse_entry(text: &str, line: usize) -> Result<Alias, String> {
    let Some(colon) = text.find(':') else {
        return Err(format!(
            "{}... missing colon (expected `name: value`)",
            clip(text)
        ));
    };
    let name = check_name(&text[..colon], text)?;
    let rhs = text[colon + 1..].trim_start_matches([' ', '\t']);
    if rhs.trim().is_empty() {
        return Err(format!(
            "{}... missing value for alias (expected one or more addresses after the colon)",
            clip(text)
        ));
    }
    if rhs.chars().filter(|&c| c == '"').count() % 2 == 1 {
        return Err(format!("{}... unbalanced '\"'", clip(rhs)));
    }
    check_members(rhs)?;
    let mut name = name.to_string();
    if name.eq_ignore_ascii_case("postmaster") {
        name = name.to_ascii_lowercase();
    }
    Ok(Alias {
        name,
        rhs: rhs.to_string(),
        line,
    })
}

/// The left-hand side (text before the first colon): a local name, or the message.
fn check_name<'t>(lhs: &'t str, line: &str) -> Result<&'t str, String> {
    let name_raw = lhs.trim();
    let name = unquote(name_raw);
    if name.is_empty() {
        return Err(format!("{}... illegal alias name (empty)", clip(line)));
    }
    if name.contains('@') {
        return Err(format!(
            "{name}... cannot alias non-local names (expected a local name without @domain)"
        ));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == ',' || c == '<' || c == '>')
    {
        return Err(format!("{}... illegal alias name", clip(name_raw)));
    }
    Ok(name)
}

/// sendmail's `CheckAliases` pass in a simple form: every member must be usable.
fn check_members(rhs: &str) -> Result<(), String> {
    for piece in split_raw(rhs) {
        // Only the text outside quotes is address syntax; `|prog` and `/file` are not.
        let outside: String = piece.split('"').step_by(2).collect();
        let t = outside.trim();
        if t.starts_with(['|', '/']) {
            continue;
        }
        let opens = t.matches('<').count();
        if opens != t.matches('>').count() || opens > 1 {
            return Err(format!("{}... bad address (unbalanced '<' '>')", clip(t)));
        }
        if t.matches('(').count() != t.matches(')').count() {
            return Err(format!("{}... bad address (unbalanced '(' ')')", clip(t)));
        }
    }
    for m in split_members(rhs) {
        match m {
            Member::Include(p) if p.as_os_str().is_empty() => {
                return Err(
                    ":include:... bad address (expected a file name after :include:)".into(),
                );
            }
            Member::Program(c) if c.is_empty() => {
                return Err("|... bad address (expected a command after '|')".into());
            }
            Member::Direct(u) | Member::Address(u) if u.chars().any(|c| c.is_control()) => {
                return Err(format!("{}... bad address (control character)", clip(&u)));
            }
            _ => {}
        }
    }
    Ok(())
}

/// sendmail prints at most 40 characters of the offending line.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s)
}

/// Splits a right-hand side (or `.forward` / include line) into members.
pub fn split_members(rhs: &str) -> Vec<Member> {
    let mut out = Vec::new();
    for piece in split_raw(rhs) {
        push_member(&mut out, &piece);
    }
    out
}

/// The text between commas (and newlines) that are outside double quotes.
fn split_raw(rhs: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in rhs.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' | '\n' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn push_member(out: &mut Vec<Member>, raw: &str) {
    let t = raw.trim();
    if t.is_empty() {
        return;
    }
    let t = unquote(t).trim();
    let t = t
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(t)
        .trim();
    if t.is_empty() {
        return;
    }
    let m = if let Some(cmd) = t.strip_prefix('|') {
        Member::Program(cmd.trim().to_string())
    } else if let Some(p) = t.strip_prefix(":include:") {
        Member::Include(PathBuf::from(p.trim()))
    } else if t.starts_with('/') {
        Member::File(PathBuf::from(t))
    } else if let Some(u) = t.strip_prefix('\\') {
        Member::Direct(u.to_string())
    } else {
        Member::Address(t.to_string())
    };
    out.push(m);
}

/// Parses an `AliasFile` spec: `path`, `hash:path`, `btree:path`, `dbm:path`, `text:path`,
/// optionally with map flags (`hash:-N /etc/mail/aliases`); the path is the last word.
pub fn spec_path(spec: &str) -> Result<PathBuf, AliasError> {
    let spec = spec.trim();
    let rest = match spec.split_once(':') {
        Some((class, rest)) if !class.contains('/') => match class {
            "hash" | "btree" | "dbm" | "text" | "implicit" => rest,
            _ => return Err(AliasError::UnsupportedSpec(spec.to_string())),
        },
        _ => spec,
    };
    match rest.split_whitespace().last() {
        Some(p) if !p.starts_with('-') => Ok(PathBuf::from(p)),
        _ => Err(AliasError::UnsupportedSpec(spec.to_string())),
    }
}
