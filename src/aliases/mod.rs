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
//! The compiled map (`<file>.db`, in the format `makemap` writes, [`crate::mapdb`], not
//! Berkeley DB) is written to a temp file beside the text, fsynced and renamed over;
//! [`load`] uses it when it is newer than the text and intact (CRC-checked), else it parses
//! the text. The rules' `aliases` map reads the same file.
//!
//! Parts: `parse.rs` (text → table, sans-IO), `db.rs` (compiled map, `load`,
//! `newaliases`), `expand.rs` (address → targets; reads includes and `.forward`).
//! A file with errors is never compiled: `newaliases` reports every error and the old map
//! stays in use (sendmail would store the good lines and skip the bad ones).
//!
//! Expansion follows sendmail's `recipient()`/`alias()`/`forward()`: aliases first, then a
//! local user's `~/.forward` (only when safe ([`safefile`]): owned by the user or root, not
//! group- or world-writable, in a directory path only its owners can write; else ignored
//! with a log line); a name met again inside its own expansion
//! is delivered to as a user (the `user: user, copy@elsewhere` idiom); nesting deeper than
//! [`MAX_DEPTH`] (sendmail's `MAXRCRSN`) gives `aliasing/forwarding loop broken`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

mod db;
mod expand;
mod parse;
pub mod safefile;

pub use db::{LiveAliases, Stats, db_path, load, load_all, rebuild, run_newaliases};
pub use expand::{
    Expander, LocalUser, OwnedTarget, ReadSafeError, SafeFile, default_user, read_safe,
    resolve_user_spec, system_user,
};
pub use parse::{parse, spec_path, split_members};

/// sendmail's `MAXRCRSN`: how deep aliases, includes and forwards may nest.
pub const MAX_DEPTH: usize = 10;
/// Suffix of the compiled map beside the text file (sendmail's, for `hash` maps).
pub const DB_SUFFIX: &str = "db";
/// Largest include or `.forward` file read.
const MAX_INCLUDE_BYTES: u64 = 1 << 20;

/// One problem in an alias file, at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIssue {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl ParseIssue {
    /// The problem in sendmail's words, for its SYSERR log line: our message without the
    /// explanation in parentheses that ends it, and `missing colon` without the line's text
    /// (sendmail 8.17: `line 2: missing colon`, `line 4: : nobody... illegal alias name`).
    pub fn sendmail_words(&self) -> String {
        let m = self.message.as_str();
        let m = match m.rfind(" (") {
            Some(i) if m.ends_with(')') => &m[..i],
            _ => m,
        };
        let m = match m.rsplit_once("... ") {
            Some((_, "missing colon")) => "missing colon",
            _ => m,
        };
        format!("{}: line {}: {m}", self.path.display(), self.line)
    }
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

#[cfg(test)]
mod tests;
