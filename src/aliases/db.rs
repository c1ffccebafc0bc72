//! The compiled map beside the text (`<file>.db`, the shared map format), loading, and `newaliases`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::parse::{parse, spec_path};
use super::{Alias, AliasError, AliasTable, ParseIssue, io_err};
use crate::log::{Logger, Severity};
use crate::mapdb;

/// The compiled map's path for an alias text file: `<file>.db`, the file sendmail's
/// `hash`/`implicit` alias map opens.
pub fn db_path(text_path: &Path) -> PathBuf {
    mapdb::db_path(text_path)
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

/// The alias table of a running daemon, read again as soon as one of its files changes —
/// as sendmail re-opens an alias map whose file changed, so an alias `newaliases` just
/// added is known at the next RCPT, without a SIGHUP. The files' identity (inode, size,
/// modification time) is checked at each lookup; a table that no longer loads keeps the
/// one before (the daemon logs load errors at start and SIGHUP).
#[derive(Debug)]
pub struct LiveAliases {
    specs: Vec<String>,
    state: std::sync::Mutex<(Vec<Option<FileStamp>>, std::sync::Arc<AliasTable>)>,
}

/// (inode, size, mtime seconds, mtime nanoseconds) of one file.
type FileStamp = (u64, u64, i64, i64);

impl LiveAliases {
    /// `table`, as just loaded from `specs`.
    pub fn new(specs: &[String], table: AliasTable) -> LiveAliases {
        LiveAliases {
            specs: specs.to_vec(),
            state: std::sync::Mutex::new((stamps(specs), std::sync::Arc::new(table))),
        }
    }

    /// The table as the files now are.
    pub fn current(&self) -> std::sync::Arc<AliasTable> {
        let now = stamps(&self.specs);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 != now
            && let Ok(t) = load_all(&self.specs)
        {
            *state = (now, std::sync::Arc::new(t));
        }
        state.1.clone()
    }
}

/// The stamps of every spec's text file and compiled map.
fn stamps(specs: &[String]) -> Vec<Option<FileStamp>> {
    use std::os::unix::fs::MetadataExt;
    let stamp = |p: &Path| {
        fs::metadata(p)
            .ok()
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    };
    specs
        .iter()
        .filter_map(|s| spec_path(s).ok())
        .flat_map(|p| [stamp(&p), stamp(&db_path(&p))])
        .collect()
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
    /// The bad entries, left out of the map (sendmail reports each as a SYSERR).
    pub errors: Vec<ParseIssue>,
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

/// `newaliases` / `-bi` for one `AliasFile` spec: parses the text and writes the compiled
/// map of its good entries beside it (temp file, fsync, rename, fsync dir), as sendmail
/// does; the bad entries are in [`Stats::errors`].
pub fn rebuild(spec: &str) -> Result<Stats, AliasError> {
    let path = spec_path(spec)?;
    let bytes = fs::read(&path).map_err(|e| io_err("read", &path, e))?;
    let (table, errors) = super::parse::parse_lenient(&String::from_utf8_lossy(&bytes), &path);
    let db = db_path(&path);
    mapdb::write_atomically(&db, &encode_db(&table), 0o644).map_err(|e| match e {
        mapdb::MapDbError::Io { op, path, source } => io_err(op, &path, source),
        other => io_err("write", &db, std::io::Error::other(other)),
    })?;
    let (aliases, longest, total) = table.figures();
    let user = crate::log::real_user_name().unwrap_or_else(|| nix::unistd::getuid().to_string());
    Ok(Stats {
        file: path,
        db,
        aliases,
        longest,
        total,
        user,
        warnings: table.warnings,
        errors,
    })
}

/// `newaliases` / `-bi` over every `AliasFile`: rebuilds each, prints sendmail's figures
/// line on `out` and logs both lines; every problem goes to `err` as `file: line N: …`
/// (a bad entry in sendmail's words: `line 2: missing colon`).
/// As sendmail 8.17 (tests/differential 37-newaliases-bad-lines): a file with bad entries
/// is still compiled with its good ones, each bad one is also logged as
/// `SYSERR(user): file: line N: …` (crit), and the exit code is then `EX_SOFTWARE` (70).
/// Otherwise: `EX_OK` (also when an alias file cannot be read: `newaliases: cannot open
/// FILE: No such file or directory`, as sendmail), `EX_DATAERR` (an unsupported spec),
/// `EX_CANTCREAT` (writing the map).
pub fn run_newaliases(
    specs: &[String],
    logger: &Logger,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    use crate::sysexits::{EX_CANTCREAT, EX_DATAERR, EX_OK};
    let mut code = EX_OK;
    for spec in specs {
        match rebuild(spec) {
            Ok(stats) => {
                for w in &stats.warnings {
                    let _ = writeln!(err, "{w}");
                }
                // each bad entry in sendmail's words, as its newaliases prints them
                for e in &stats.errors {
                    let _ = writeln!(err, "{}", e.sendmail_words());
                }
                if stats.errors.is_empty() {
                    stats.log(logger);
                } else {
                    code = crate::sysexits::EX_SOFTWARE;
                    if logger.enabled(7) {
                        let line = stats.rebuilt_line();
                        logger.log(Severity::Notice, None, format_args!("{line}"));
                    }
                    for e in &stats.errors {
                        logger.log(
                            Severity::Crit,
                            Some("NOQUEUE"),
                            format_args!("SYSERR({}): {}", stats.user, e.sendmail_words()),
                        );
                    }
                    if logger.enabled(7) {
                        let line = stats.figures_line();
                        logger.log(Severity::Info, None, format_args!("{line}"));
                    }
                }
                let _ = writeln!(out, "{}", stats.figures_line());
            }
            // sendmail 8.17: an alias file that cannot be read is said so and skipped;
            // the exit status stays (0 if nothing else failed)
            Err(AliasError::Io {
                op: "read",
                path,
                source,
            }) => {
                let why = crate::log::open_error_text(&source);
                let _ = writeln!(err, "newaliases: cannot open {}: {why}", path.display());
            }
            Err(e) => {
                let _ = writeln!(err, "newaliases: {e}");
                code = match e {
                    AliasError::Parse(_) => EX_DATAERR,
                    AliasError::UnsupportedSpec(_) => EX_DATAERR,
                    _ => EX_CANTCREAT,
                };
            }
        }
    }
    code
}

/// Compiled map: the shared map format ([`crate::mapdb`]), keys the lower-cased alias
/// names, values the right-hand sides, so that the rules' `aliases` map and local delivery
/// read the same file. Plus sendmail's `@` → `@` entry, its mark of a completed rebuild
/// (`makemap -u` of the oracle's aliases.db lists it).
pub(super) fn encode_db(table: &AliasTable) -> Vec<u8> {
    let entries = table
        .iter()
        .map(|a| {
            (
                a.name.to_ascii_lowercase().into_bytes(),
                a.rhs.clone().into_bytes(),
            )
        })
        .chain(std::iter::once((
            REBUILT_MARK.to_vec(),
            REBUILT_MARK.to_vec(),
        )))
        .collect();
    mapdb::encode(entries)
}

/// sendmail's key (and value) that marks an alias map as completely rebuilt.
const REBUILT_MARK: &[u8] = b"@";

/// The table stored in a compiled map (names lower-cased, in key order; line numbers are
/// those of the text, which the map does not keep, so 0).
pub(super) fn decode_db(bytes: &[u8], path: &Path) -> Result<AliasTable, AliasError> {
    let corrupt = || AliasError::CorruptDb(path.to_path_buf());
    let db = mapdb::MapDb::decode(bytes.to_vec()).map_err(|_| corrupt())?;
    let mut table = AliasTable::default();
    for (k, v) in db.iter().filter(|(k, _)| *k != REBUILT_MARK) {
        let name = String::from_utf8(k.to_vec()).map_err(|_| corrupt())?;
        let rhs = String::from_utf8(v.to_vec()).map_err(|_| corrupt())?;
        table.insert(Alias { name, rhs, line: 0 }, path);
    }
    Ok(table)
}
