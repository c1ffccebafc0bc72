//! sendmail's aliases(5) file: parsing, expansion to delivery targets, and `newaliases`.
//!
//! In: the text of an alias file (`name: addr1, addr2` with continuation lines), an
//! `AliasFile` spec from the configuration (`/etc/mail/aliases`, `hash:/etc/mail/aliases`),
//! and recipient addresses to expand. Out: a typed [`AliasTable`] (or every problem found,
//! each naming file:line and what was expected), the [`Target`]s an address expands to
//! (local users, files, programs, remote addresses), and for `newaliases` / `-bi` the
//! compiled map written beside the text plus sendmail's log-line figures ([`Stats`]).
//!
//! File syntax (sendmail 8.17 `alias.c:readaliases`, aliases(5)):
//! * `#` lines and empty lines are skipped; a line starting with a space or tab continues
//!   the previous entry (its text, leading whitespace included, is appended as is).
//! * `name: rhs` — the name is case-insensitive; a name with `@` is refused with sendmail's
//!   `cannot alias non-local names`; an empty right-hand side is `missing value for alias`.
//! * Right-hand side members, comma-separated (commas inside `"…"` do not split):
//!   `user`, `user@remote`, `/file`, `|program args` (usually quoted `"|prog args"`),
//!   `:include:/path` (a file of more members), `\user` (deliver to the user, no further
//!   aliasing or forwarding).
//!
//! Statistics are sendmail's: `N aliases, longest N bytes, N bytes total`, where each alias
//! counts `strlen(name) + strlen(rhs)` and "longest" is the longest right-hand side (the
//! oracle's 5-alias file gives `5 aliases, longest 11 bytes, 70 bytes total`).
//!
//! The compiled map (`<file>.rdb`, our own format, not Berkeley DB) is written to a temp
//! file beside the text, fsynced and renamed over; [`load`] uses it when it is newer than the
//! text and intact (CRC-checked), else it parses the text.
//!
//! Expansion follows sendmail's `recipient()`/`alias()`/`forward()`: aliases first, then a
//! local user's `~/.forward` (only when safe: owned by the user or root and not group- or
//! world-writable, else ignored with a log line); a name met again inside its own expansion
//! is delivered to as a user (the `user: user, copy@elsewhere` idiom); nesting deeper than
//! [`MAX_DEPTH`] (sendmail's `MAXRCRSN`) gives `aliasing/forwarding loop broken`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::log::{Logger, Severity};

/// sendmail's `MAXRCRSN`: how deep aliases, includes and forwards may nest.
pub const MAX_DEPTH: usize = 10;
/// Magic first line of the compiled map.
const DB_MAGIC: &[u8] = b"SMRS-ALIASES 1\n";
/// Suffix of the compiled map beside the text file.
pub const DB_SUFFIX: &str = "rdb";
/// Largest include or `.forward` file read.
const MAX_INCLUDE_BYTES: u64 = 1 << 20;

/// One problem in an alias file, at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIssue {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: line {}: {}",
            self.path.display(),
            self.line,
            self.message
        )
    }
}

/// Everything that can go wrong with alias files.
#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    /// Reading, writing or renaming a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text has errors; every one found is listed.
    #[error("{}", .0.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("\n"))]
    Parse(Vec<ParseIssue>),
    /// An `AliasFile` spec this build cannot read (`ldap:`, `nis:`, …).
    #[error(
        "alias file spec {0:?}: unsupported map class (expected a path, or hash:/btree:/dbm:/text: and a path)"
    )]
    UnsupportedSpec(String),
    /// The compiled map is damaged (it is then ignored and the text read instead).
    #[error("compiled alias map {0}: corrupt")]
    CorruptDb(PathBuf),
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> AliasError {
    AliasError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One alias: its name (as written), the right-hand side text, and where it was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub name: String,
    /// The right-hand side as sendmail stores it: leading blanks dropped, continuation
    /// lines appended with their leading whitespace, newlines removed.
    pub rhs: String,
    pub line: usize,
}

impl Alias {
    /// The right-hand side split into members.
    pub fn members(&self) -> Vec<Member> {
        split_members(&self.rhs)
    }
}

/// One member of a right-hand side, `.forward` or include file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// A local name or `user@domain` address.
    Address(String),
    /// `\user`: deliver to the user's mailbox, no aliasing or forwarding.
    Direct(String),
    /// `/path`: append to a file.
    File(PathBuf),
    /// `|command`: pipe to a program (the text after `|`).
    Program(String),
    /// `:include:/path`.
    Include(PathBuf),
}

/// Where mail for one address finally goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A local user's mailbox.
    User(String),
    /// Append to this file (mbox format).
    File(PathBuf),
    /// Run this command with `sh -c`, message on stdin.
    Program(String),
    /// Not local: hand to the remote side.
    Remote(String),
    /// The address could not be expanded: a loop, an unreadable include, a `.forward`
    /// that could not be read for a passing reason (`temporary`: try again later).
    Error {
        address: String,
        reason: String,
        /// The DSN code: `5.4.6` for loops, `5.3.0` (or `4.3.0`) for files.
        dsn: String,
        temporary: bool,
    },
}

/// A parsed alias file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasTable {
    /// Keyed by lower-cased name.
    entries: HashMap<String, Alias>,
    /// Names in file order (for statistics and the compiled map).
    order: Vec<String>,
    /// Non-fatal findings (duplicate names: the later one wins, as in sendmail).
    pub warnings: Vec<ParseIssue>,
}

impl AliasTable {
    /// The alias for `name`, case-insensitively.
    pub fn get(&self, name: &str) -> Option<&Alias> {
        self.entries.get(&name.to_ascii_lowercase())
    }

    /// The list owner for `list`: `owner-<list>` when that alias exists. sendmail makes it
    /// the envelope sender for the list's deliveries, so that bounces go to the owner.
    pub fn owner(&self, list: &str) -> Option<String> {
        let name = format!("owner-{list}");
        self.get(&name).map(|a| a.name.clone())
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Aliases in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Alias> {
        self.order.iter().filter_map(|k| self.entries.get(k))
    }

    /// sendmail's figures: count, longest right-hand side, total of name + rhs lengths.
    pub fn figures(&self) -> (usize, usize, usize) {
        let mut longest = 0;
        let mut total = 0;
        for a in self.iter() {
            longest = longest.max(a.rhs.len());
            total += a.name.len() + a.rhs.len();
        }
        (self.len(), longest, total)
    }

    fn insert(&mut self, alias: Alias, path: &Path) {
        let key = alias.name.to_ascii_lowercase();
        if let Some(old) = self.entries.get(&key) {
            self.warnings.push(ParseIssue {
                path: path.to_path_buf(),
                line: alias.line,
                message: format!(
                    "duplicate alias name {} (first defined at line {}); this one wins",
                    alias.name, old.line
                ),
            });
        } else {
            self.order.push(key.clone());
        }
        self.entries.insert(key, alias);
    }
}

/// Parses alias-file text. `path` only names the file in messages. All errors are collected.
pub fn parse(text: &str, path: &Path) -> Result<AliasTable, AliasError> {
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
    if issues.is_empty() {
        Ok(table)
    } else {
        Err(AliasError::Parse(issues))
    }
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

/// The compiled map's path for an alias text file: `<file>.rdb`.
pub fn db_path(text_path: &Path) -> PathBuf {
    let mut s = text_path.as_os_str().to_os_string();
    s.push(".");
    s.push(DB_SUFFIX);
    PathBuf::from(s)
}

/// Reads the aliases for a spec: the compiled map when it is newer than the text and
/// intact, else the text. A missing text file with no map is an empty table.
pub fn load(spec: &str) -> Result<AliasTable, AliasError> {
    let path = spec_path(spec)?;
    let text_meta = fs::metadata(&path);
    let db = db_path(&path);
    if let (Ok(tm), Ok(dm)) = (&text_meta, fs::metadata(&db))
        && let (Ok(t1), Ok(t2)) = (tm.modified(), dm.modified())
        && t2 >= t1
        && let Ok(bytes) = fs::read(&db)
        && let Ok(table) = decode_db(&bytes, &db)
    {
        return Ok(table);
    }
    match fs::read(&path) {
        Ok(bytes) => parse(&String::from_utf8_lossy(&bytes), &path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AliasTable::default()),
        Err(e) => Err(io_err("read", &path, e)),
    }
}

/// Loads every `AliasFile` spec and merges them (earlier files win, as sendmail searches
/// them in order).
pub fn load_all(specs: &[String]) -> Result<AliasTable, AliasError> {
    let mut merged = AliasTable::default();
    for spec in specs {
        let t = load(spec)?;
        for a in t.iter() {
            let key = a.name.to_ascii_lowercase();
            if !merged.entries.contains_key(&key) {
                merged.order.push(key.clone());
                merged.entries.insert(key, a.clone());
            }
        }
        merged.warnings.extend(t.warnings);
    }
    Ok(merged)
}

/// What `newaliases` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// The alias text file.
    pub file: PathBuf,
    /// The compiled map written.
    pub db: PathBuf,
    pub aliases: usize,
    pub longest: usize,
    pub total: usize,
    /// Who rebuilt it (the login name of the real uid).
    pub user: String,
    /// Duplicate names and other non-fatal findings.
    pub warnings: Vec<ParseIssue>,
}

impl Stats {
    /// `alias database <file> rebuilt by <user>` (sendmail logs it at notice).
    pub fn rebuilt_line(&self) -> String {
        format!(
            "alias database {} rebuilt by {}",
            self.file.display(),
            self.user
        )
    }

    /// `<file>: N aliases, longest N bytes, N bytes total` (sendmail logs it at info and
    /// prints it on stdout).
    pub fn figures_line(&self) -> String {
        format!(
            "{}: {} aliases, longest {} bytes, {} bytes total",
            self.file.display(),
            self.aliases,
            self.longest,
            self.total
        )
    }

    /// Writes both lines to the log with sendmail's severities (when `LogLevel > 7`).
    pub fn log(&self, logger: &Logger) {
        if !logger.enabled(7) {
            return;
        }
        logger.log(
            Severity::Notice,
            None,
            format_args!("{}", self.rebuilt_line()),
        );
        logger.log(
            Severity::Info,
            None,
            format_args!("{}", self.figures_line()),
        );
    }
}

/// `newaliases` / `-bi` for one `AliasFile` spec: parses the text (any error: nothing is
/// written), writes the compiled map beside it (temp file, fsync, rename, fsync dir).
pub fn rebuild(spec: &str) -> Result<Stats, AliasError> {
    let path = spec_path(spec)?;
    let bytes = fs::read(&path).map_err(|e| io_err("read", &path, e))?;
    let table = parse(&String::from_utf8_lossy(&bytes), &path)?;
    let db = db_path(&path);
    write_atomically(&db, &encode_db(&table))?;
    let (aliases, longest, total) = table.figures();
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string());
    Ok(Stats {
        file: path,
        db,
        aliases,
        longest,
        total,
        user,
        warnings: table.warnings,
    })
}

/// `newaliases` / `-bi` over every `AliasFile`: rebuilds each, prints sendmail's figures
/// line on `out` and logs both lines; every problem goes to `err` as `file: line N: …`.
/// A file with errors is not compiled (its old map stays in use). Returns the exit code:
/// `EX_OK`, `EX_DATAERR` (errors in a file), `EX_NOINPUT` / `EX_CANTCREAT` (I/O).
pub fn run_newaliases(
    specs: &[String],
    logger: &Logger,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    use crate::sysexits::{EX_CANTCREAT, EX_DATAERR, EX_NOINPUT, EX_OK};
    let mut code = EX_OK;
    for spec in specs {
        match rebuild(spec) {
            Ok(stats) => {
                for w in &stats.warnings {
                    let _ = writeln!(err, "{w}");
                }
                stats.log(logger);
                let _ = writeln!(out, "{}", stats.figures_line());
            }
            Err(e) => {
                let _ = writeln!(err, "newaliases: {e}");
                code = match e {
                    AliasError::Parse(_) => EX_DATAERR,
                    AliasError::Io { op: "read", .. } => EX_NOINPUT,
                    AliasError::UnsupportedSpec(_) => EX_DATAERR,
                    _ => EX_CANTCREAT,
                };
            }
        }
    }
    code
}

fn write_atomically(dest: &Path, bytes: &[u8]) -> Result<(), AliasError> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(|e| io_err("create", &tmp, e))?;
        f.write_all(bytes).map_err(|e| io_err("write", &tmp, e))?;
        f.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
        fs::rename(&tmp, dest).map_err(|e| io_err("rename", dest, e))?;
        if let Ok(d) = fs::File::open(dir) {
            d.sync_all().map_err(|e| io_err("fsync", dir, e))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Compiled map: magic line, then per alias `u32 line, u32 len, name, u32 len, rhs` (big
/// endian), then a CRC-32 of everything before it.
fn encode_db(table: &AliasTable) -> Vec<u8> {
    let mut out = DB_MAGIC.to_vec();
    out.extend((table.len() as u32).to_be_bytes());
    for a in table.iter() {
        out.extend((a.line as u32).to_be_bytes());
        for s in [&a.name, &a.rhs] {
            out.extend((s.len() as u32).to_be_bytes());
            out.extend(s.as_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend(crc.to_be_bytes());
    out
}

fn decode_db(bytes: &[u8], path: &Path) -> Result<AliasTable, AliasError> {
    let corrupt = || AliasError::CorruptDb(path.to_path_buf());
    let body_len = bytes.len().checked_sub(4).ok_or_else(corrupt)?;
    let (body, crc) = bytes.split_at(body_len);
    if !body.starts_with(DB_MAGIC) || crc32fast::hash(body).to_be_bytes() != crc[..] {
        return Err(corrupt());
    }
    let mut pos = DB_MAGIC.len();
    let u32_at = |pos: &mut usize| -> Result<u32, AliasError> {
        let b = body.get(*pos..*pos + 4).ok_or_else(corrupt)?;
        *pos += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let n = u32_at(&mut pos)?;
    let mut table = AliasTable::default();
    for _ in 0..n {
        let line = u32_at(&mut pos)? as usize;
        let mut strs = [String::new(), String::new()];
        for s in &mut strs {
            let len = u32_at(&mut pos)? as usize;
            let b = body.get(pos..pos + len).ok_or_else(corrupt)?;
            *s = String::from_utf8(b.to_vec()).map_err(|_| corrupt())?;
            pos += len;
        }
        let [name, rhs] = strs;
        table.insert(Alias { name, rhs, line }, path);
    }
    if pos != body.len() {
        return Err(corrupt());
    }
    Ok(table)
}

/// A local account, as far as expansion needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
}

/// Looks a user up in the system's password database.
pub fn system_user(name: &str) -> Option<LocalUser> {
    let u = nix::unistd::User::from_name(name).ok().flatten()?;
    Some(LocalUser {
        name: u.name,
        uid: u.uid.as_raw(),
        home: u.dir,
    })
}

/// Expands recipient addresses through an [`AliasTable`], includes and `.forward` files.
pub struct Expander<'a> {
    table: &'a AliasTable,
    /// Domains that are this host (sendmail's `$=w`), lower case: `user@<one of these>` is
    /// the local `user`.
    pub local_domains: Vec<String>,
    /// Follow `~/.forward` of local users.
    pub forward: bool,
    /// How users are looked up ([`system_user`] by default).
    pub users: &'a dyn Fn(&str) -> Option<LocalUser>,
    /// Where `alias X => Y` lines (`LogLevel > 10`, sendmail 8.17 `alias.c`) and
    /// `forward <file>: <why>` warnings go.
    pub log: Option<(&'a Logger, Option<&'a str>)>,
}

impl<'a> Expander<'a> {
    pub fn new(table: &'a AliasTable) -> Expander<'a> {
        Expander {
            table,
            local_domains: Vec::new(),
            forward: true,
            users: &system_user,
            log: None,
        }
    }

    /// An expander for `config`: local domains from class `w` plus `$j`, `.forward` on.
    pub fn from_config(table: &'a AliasTable, config: &crate::config::Config) -> Expander<'a> {
        let mut e = Expander::new(table);
        e.local_domains = config.classes.get("w").cloned().unwrap_or_default();
        if !config.host.fqdn.is_empty() {
            e.local_domains.push(config.host.fqdn.clone());
        }
        e
    }

    /// All targets for `addr`, duplicates removed, in order of first appearance.
    pub fn expand(&self, addr: &str) -> Vec<Target> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut chain = Vec::new();
        self.expand_address(addr, 0, &mut chain, &mut out);
        out.retain(|t| seen.insert(t.clone()));
        out
    }

    /// `Some(local part)` when `addr` is local (no domain, or a local domain).
    fn local_part<'s>(&self, addr: &'s str) -> Option<&'s str> {
        let addr = addr.trim();
        let addr = addr
            .strip_prefix('<')
            .and_then(|a| a.strip_suffix('>'))
            .unwrap_or(addr);
        match addr.rsplit_once('@') {
            None => Some(addr),
            Some((user, dom)) => {
                let dom = dom.trim_end_matches('.').to_ascii_lowercase();
                self.local_domains
                    .iter()
                    .any(|d| d.trim_end_matches('.').eq_ignore_ascii_case(&dom))
                    .then_some(user)
            }
        }
    }

    fn note(&self, sev: Severity, min_level: u32, msg: fmt::Arguments<'_>) {
        if let Some((logger, qid)) = self.log
            && logger.enabled(min_level)
        {
            logger.log(sev, qid, msg);
        }
    }

    fn expand_address(
        &self,
        addr: &str,
        depth: usize,
        chain: &mut Vec<String>,
        out: &mut Vec<Target>,
    ) {
        let Some(local) = self.local_part(addr) else {
            out.push(Target::Remote(addr.trim().to_string()));
            return;
        };
        let key = local.to_ascii_lowercase();
        if chain.contains(&key) {
            // Self-reference: deliver to the user without aliasing again.
            out.push(Target::User(local.to_string()));
            return;
        }
        if depth > MAX_DEPTH {
            out.push(loop_error(addr, depth));
            return;
        }
        if let Some(alias) = self.table.get(local) {
            self.note(
                Severity::Info,
                10,
                format_args!("alias {} => {}", addr.trim(), alias.rhs.trim()),
            );
            chain.push(key);
            for m in alias.members() {
                self.expand_member(&m, depth + 1, chain, out);
            }
            chain.pop();
            return;
        }
        if self.forward
            && let Some(user) = (self.users)(local)
        {
            let members = match self.read_forward(&user) {
                Ok(Some(members)) => members,
                Ok(None) => {
                    out.push(Target::User(local.to_string()));
                    return;
                }
                Err(why) => {
                    out.push(Target::Error {
                        address: local.to_string(),
                        reason: format!("transient .forward open error ({why}): message queued"),
                        dsn: "4.3.0".into(),
                        temporary: true,
                    });
                    return;
                }
            };
            chain.push(key);
            for m in members {
                self.expand_member(&m, depth + 1, chain, out);
            }
            chain.pop();
            return;
        }
        out.push(Target::User(local.to_string()));
    }

    fn expand_member(
        &self,
        m: &Member,
        depth: usize,
        chain: &mut Vec<String>,
        out: &mut Vec<Target>,
    ) {
        match m {
            Member::Address(a) => self.expand_address(a, depth, chain, out),
            Member::Direct(u) => out.push(Target::User(u.clone())),
            Member::File(p) => out.push(Target::File(p.clone())),
            Member::Program(c) => out.push(Target::Program(c.clone())),
            Member::Include(p) => {
                if depth > MAX_DEPTH {
                    out.push(loop_error(&format!(":include:{}", p.display()), depth));
                    return;
                }
                let key = format!(":include:{}", p.display());
                if chain.contains(&key) {
                    out.push(Target::Error {
                        address: key,
                        reason: "include loop".into(),
                        dsn: "5.4.6".into(),
                        temporary: false,
                    });
                    return;
                }
                match read_safe(p, None) {
                    Ok(text) => {
                        chain.push(key);
                        for m in split_members(&strip_comments(&text)) {
                            self.expand_member(&m, depth + 1, chain, out);
                        }
                        chain.pop();
                    }
                    Err(why) => {
                        let temporary = why.is_transient();
                        out.push(Target::Error {
                            address: key,
                            reason: format!("Cannot open {}: {why}", p.display()),
                            dsn: if temporary { "4.3.0" } else { "5.3.0" }.into(),
                            temporary,
                        })
                    }
                }
            }
        }
    }

    /// The members of `~user/.forward`: None when absent, empty or unsafe (logged), an
    /// error when reading failed for a passing reason (sendmail then queues the address).
    fn read_forward(&self, user: &LocalUser) -> Result<Option<Vec<Member>>, ReadSafeError> {
        let path = user.home.join(".forward");
        match read_safe(&path, Some(user.uid)) {
            Ok(text) => {
                let members = split_members(&strip_comments(&text));
                Ok((!members.is_empty()).then_some(members))
            }
            Err(ReadSafeError::Missing) => Ok(None),
            Err(why) if why.is_transient() => {
                self.note(
                    Severity::Err,
                    2,
                    format_args!("forward {}: transient error: {why}", path.display()),
                );
                Err(why)
            }
            Err(why) => {
                // sendmail: LOG_WARNING when LogLevel > 2 (root) / > 10 (otherwise).
                let level = if nix::unistd::geteuid().is_root() {
                    2
                } else {
                    10
                };
                self.note(
                    Severity::Warning,
                    level,
                    format_args!("forward {}: {why}", path.display()),
                );
                Ok(None)
            }
        }
    }
}

fn loop_error(addr: &str, depth: usize) -> Target {
    Target::Error {
        address: addr.trim().to_string(),
        reason: format!("aliasing/forwarding loop broken ({depth} aliases deep; {MAX_DEPTH} max)"),
        dsn: "5.4.6".into(),
        temporary: false,
    }
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why a `.forward` or include file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadSafeError {
    Missing,
    Unsafe(String),
    /// Reading failed; `transient` as sendmail's `transienterror()` judges the errno.
    Io {
        message: String,
        transient: bool,
    },
}

impl ReadSafeError {
    fn io(e: &std::io::Error) -> ReadSafeError {
        use nix::libc::*;
        let transient = matches!(
            e.raw_os_error(),
            Some(EIO | EAGAIN | ETIMEDOUT | ENOSPC | ENOMEM | ENFILE | EMFILE | EINTR | ESTALE)
        );
        ReadSafeError::Io {
            message: e.to_string(),
            transient,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ReadSafeError::Io {
                transient: true,
                ..
            }
        )
    }
}

impl fmt::Display for ReadSafeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadSafeError::Missing => f.write_str("No such file or directory"),
            ReadSafeError::Unsafe(s) | ReadSafeError::Io { message: s, .. } => f.write_str(s),
        }
    }
}

/// sendmail's safe-file rules, simply: a regular file, not group- or world-writable, and
/// (when `owner` is given) owned by that uid or root.
pub fn read_safe(path: &Path, owner: Option<u32>) -> Result<String, ReadSafeError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadSafeError::Missing),
        Err(e) => return Err(ReadSafeError::io(&e)),
    };
    if !meta.is_file() {
        return Err(ReadSafeError::Unsafe("not a regular file".into()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(ReadSafeError::Unsafe("group or world writable file".into()));
    }
    if let Some(uid) = owner
        && meta.uid() != uid
        && meta.uid() != 0
    {
        return Err(ReadSafeError::Unsafe(format!(
            "owned by uid {}, not by the user ({uid}) or root",
            meta.uid()
        )));
    }
    if meta.len() > MAX_INCLUDE_BYTES {
        return Err(ReadSafeError::Unsafe("file too large".into()));
    }
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| ReadSafeError::io(&e))
}

#[cfg(test)]
mod tests;
