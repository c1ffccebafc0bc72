//! The compiled map beside the text (`<file>.rdb`), loading, and `newaliases`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::parse::{parse, spec_path};
use super::{Alias, AliasError, AliasTable, DB_MAGIC, DB_SUFFIX, ParseIssue, io_err};
use crate::log::{Logger, Severity};

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
pub(super) fn encode_db(table: &AliasTable) -> Vec<u8> {
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

pub(super) fn decode_db(bytes: &[u8], path: &Path) -> Result<AliasTable, AliasError> {
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
