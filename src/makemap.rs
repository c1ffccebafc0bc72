//! `makemap`: builds a database map from its text source (the binary run under that name).
//!
//! In: sendmail's arguments, `makemap [-C cf] [-N] [-c size] [-D char] [-d] [-e] [-f]
//! [-i type] [-l] [-o] [-r] [-s] [-t delim] [-u] [-v] TYPE NAME`, and `key value` lines on
//! standard input. Out: `NAME.db` in our own format ([`crate::mapdb`]: written beside,
//! fsynced, renamed), or with `-u` the map's entries on standard output; each bad line as
//! `makemap: NAME: line N: …` on standard error; a sysexits(3) status.
//!
//! Lines follow makemap(8) and sendmail 8.17 makemap.c: blank lines and lines starting with
//! the comment character (`#`, or `-D`) are skipped; the key runs to the first white space
//! (or the `-t` delimiter), the value starts after the run of delimiters and is kept as is
//! (trailing blanks included). Keys are folded to lower case unless `-f`. A line with no
//! value is refused unless `-e`; a repeated key keeps the first value (`-r`: the last). Bad
//! lines make the exit status `EX_DATAERR`, but the good lines are still written, as
//! sendmail does.
//!
//! `TYPE` is `hash`, `btree` or `implicit`; all three write the same file, which the maps of
//! `K name hash /etc/mail/access` read ([`crate::rules::maps`]). `-N`, `-c`, `-s` and `-i`
//! are accepted and change nothing here (our format stores no terminating NUL and needs no
//! cache). The cf named by `-C` is read for `TrustedUser`: run as root, the map is given to
//! that user, as sendmail's makemap does.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use crate::mapdb::{self, MapDb};
use crate::sysexits::{EX_CANTCREAT, EX_DATAERR, EX_NOINPUT, EX_OK, EX_USAGE};

/// The map types this build writes (all into the same format), as `-l` lists them.
pub const TYPES: &[&str] = &["hash", "btree", "implicit"];

const USAGE: &str = "Usage: makemap [-C cffile] [-N] [-c cachesize] [-D commentchar]
               [-d] [-e] [-f] [-i type] [-l] [-o] [-r] [-s] [-t delimiter]
               [-u] [-v] type mapname";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `-C`: the configuration read for `TrustedUser`.
    pub cf: PathBuf,
    /// `-d`: keep repeated keys (each one is stored; lookups find the first).
    pub dups: bool,
    /// `-e`: a key with an empty value is allowed.
    pub allow_empty: bool,
    /// `-f`: keys keep their case.
    pub no_fold: bool,
    /// `-l`: list the supported types and exit.
    pub list: bool,
    /// `-o`: add to the existing map instead of replacing it.
    pub append: bool,
    /// `-r`: a repeated key replaces the earlier value.
    pub replace: bool,
    /// `-u`: dump the map instead of building it.
    pub unmap: bool,
    /// `-v`: print each entry as it is stored.
    pub verbose: bool,
    /// `-D`: the comment character.
    pub comment: u8,
    /// `-t`: the key/value delimiter (white space when unset).
    pub delim: Option<u8>,
    /// The map type and name (empty with `-l`).
    pub class: String,
    pub name: PathBuf,
}

/// The command line could not be understood: print the usage, exit `EX_USAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{USAGE}")]
pub struct UsageError;

impl Options {
    /// Parses the words after `makemap` (getopt style: `-fr`, `-t:` and `-t :` alike).
    pub fn parse(args: &[String]) -> Result<Options, UsageError> {
        let mut o = Options {
            cf: PathBuf::from(crate::cli::SYSTEM_CF),
            dups: false,
            allow_empty: false,
            no_fold: false,
            list: false,
            append: false,
            replace: false,
            unmap: false,
            verbose: false,
            comment: b'#',
            delim: None,
            class: String::new(),
            name: PathBuf::new(),
        };
        let mut i = 0;
        while i < args.len() && args[i].len() > 1 && args[i].starts_with('-') {
            if args[i] == "--" {
                i += 1;
                break;
            }
            let word = args[i].as_bytes();
            let mut j = 1;
            while j < word.len() {
                let flag = word[j];
                j += 1;
                if b"CcDit".contains(&flag) {
                    let value = if j < word.len() {
                        word[j..].to_vec()
                    } else {
                        i += 1;
                        args.get(i).ok_or(UsageError)?.as_bytes().to_vec()
                    };
                    o.set_value(flag, &value)?;
                    break;
                }
                o.set_flag(flag)?;
            }
            i += 1;
        }
        match &args[i..] {
            _ if o.list => Ok(o),
            [class, name] => {
                o.class = class.clone();
                o.name = PathBuf::from(name);
                Ok(o)
            }
            _ => Err(UsageError),
        }
    }

    fn set_value(&mut self, flag: u8, value: &[u8]) -> Result<(), UsageError> {
        match flag {
            b'C' => self.cf = PathBuf::from(String::from_utf8_lossy(value).into_owned()),
            b'D' => self.comment = *value.first().ok_or(UsageError)?,
            b't' => self.delim = Some(*value.first().ok_or(UsageError)?),
            // -c cache size, -i fallback type: nothing to do with one format
            _ => {}
        }
        Ok(())
    }

    fn set_flag(&mut self, flag: u8) -> Result<(), UsageError> {
        match flag {
            b'd' => self.dups = true,
            b'e' => self.allow_empty = true,
            b'f' => self.no_fold = true,
            b'l' => self.list = true,
            b'o' => self.append = true,
            b'r' => self.replace = true,
            b'u' => self.unmap = true,
            b'v' => self.verbose = true,
            // -N (NUL in keys) and -s (no safety checks): nothing to do here
            b'N' | b's' => {}
            _ => return Err(UsageError),
        }
        Ok(())
    }
}

/// Entries being built, in the order they were read, with the line problems found.
#[derive(Debug, Default)]
pub struct Builder {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    index: std::collections::HashMap<Vec<u8>, usize>,
    /// `line N: …` texts, in input order.
    pub problems: Vec<String>,
    /// `-v` lines: ``key=`k', val=`v'``.
    pub verbose: Vec<String>,
}

impl Builder {
    /// Starts from the entries of an existing map (`-o`).
    pub fn with_existing(db: &MapDb) -> Builder {
        let mut b = Builder::default();
        for (k, v) in db.iter() {
            b.index.entry(k.to_vec()).or_insert(b.entries.len());
            b.entries.push((k.to_vec(), v.to_vec()));
        }
        b
    }

    /// Reads one input line (without its newline), as makemap.c does.
    pub fn line(&mut self, o: &Options, n: usize, line: &[u8]) {
        if line.is_empty() || line[0] == o.comment {
            return;
        }
        let is_delim = |c: u8| match o.delim {
            Some(d) => c == d,
            None => c.is_ascii_whitespace(),
        };
        if o.delim.is_none() && is_delim(line[0]) {
            self.problems
                .push(format!("line {n}: syntax error (leading space)"));
            return;
        }
        let end = line.iter().position(|&c| is_delim(c)).unwrap_or(line.len());
        let start = line[end..]
            .iter()
            .position(|&c| !is_delim(c))
            .map_or(line.len(), |p| end + p);
        let (key, value) = (&line[..end], &line[start..]);
        if value.is_empty() && !o.allow_empty {
            let text = String::from_utf8_lossy(line);
            self.problems
                .push(format!("line {n}: no RHS for LHS {text}"));
            return;
        }
        let key = if o.no_fold {
            key.to_vec()
        } else {
            key.to_ascii_lowercase()
        };
        if o.verbose {
            self.verbose.push(format!(
                "key=`{}', val=`{}'",
                String::from_utf8_lossy(&key),
                String::from_utf8_lossy(value)
            ));
        }
        self.insert(o, n, key, value.to_vec());
    }

    fn insert(&mut self, o: &Options, n: usize, key: Vec<u8>, value: Vec<u8>) {
        match self.index.get(&key) {
            Some(&at) if o.replace => self.entries[at].1 = value,
            Some(_) if !o.dups => {
                let k = String::from_utf8_lossy(&key);
                self.problems
                    .push(format!("line {n}: key {k}: duplicate key"));
            }
            _ => {
                self.index.entry(key.clone()).or_insert(self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    /// The map file image.
    pub fn encode(self) -> Vec<u8> {
        mapdb::encode(self.entries)
    }
}

/// `makemap hash TEXT < TEXT` with makemap's default options: `TEXT.db` built from the
/// text file `TEXT` (mode 0640). Problem lines are left out, as makemap leaves them.
pub fn build_from_text(text: &Path) -> Result<(), mapdb::MapDbError> {
    let o = Options::parse(&["hash".to_string(), text.display().to_string()])
        .expect("fixed makemap arguments");
    let bytes = std::fs::read(text).map_err(|source| mapdb::MapDbError::Io {
        op: "read",
        path: text.to_path_buf(),
        source,
    })?;
    let mut b = Builder::default();
    for (n, line) in bytes.split(|&c| c == b'\n').enumerate() {
        b.line(&o, n + 1, line.strip_suffix(b"\r").unwrap_or(line));
    }
    mapdb::write_atomically(&mapdb::db_path(text), &b.encode(), 0o640)
}

/// `makemap ARGS < TEXT`. Returns the exit status.
pub fn run(
    args: &[String],
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let o = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return EX_USAGE;
        }
    };
    if o.list {
        for t in TYPES {
            let _ = writeln!(out, "{t}");
        }
        return EX_OK;
    }
    let trusted = match trusted_user(&o.cf) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(err, "makemap: {}: {e}", o.cf.display());
            return EX_NOINPUT;
        }
    };
    if !TYPES.contains(&o.class.as_str()) {
        let _ = writeln!(err, "{}: Unknown database type", open_error(&o));
        return EX_CANTCREAT;
    }
    let db = mapdb::db_path(&o.name);
    if o.unmap {
        return dump(&o, &db, out, err);
    }
    build(&o, &db, trusted.as_deref(), input, out, err)
}

fn open_error(o: &Options) -> String {
    format!(
        "makemap: error opening type {} map {}",
        o.class,
        o.name.display()
    )
}

/// `-u`: every entry as `key<TAB>value` (or the `-t` delimiter), in key order.
fn dump(o: &Options, db: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let map = match MapDb::open(db) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(err, "{}: {}", open_error(o), reason(&e));
            return EX_CANTCREAT;
        }
    };
    let delim = [o.delim.unwrap_or(b'\t')];
    for (k, v) in map.iter() {
        let _ = out
            .write_all(k)
            .and_then(|_| out.write_all(&delim))
            .and_then(|_| out.write_all(v))
            .and_then(|_| out.write_all(b"\n"));
    }
    EX_OK
}

fn reason(e: &mapdb::MapDbError) -> String {
    match e {
        mapdb::MapDbError::Io { source, .. } => strerror(source),
        other => other.to_string(),
    }
}

fn build(
    o: &Options,
    db: &Path,
    trusted: Option<&str>,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut b = if o.append && db.exists() {
        match MapDb::open(db) {
            Ok(m) => Builder::with_existing(&m),
            Err(e) => {
                let _ = writeln!(err, "{}: {}", open_error(o), reason(&e));
                return EX_CANTCREAT;
            }
        }
    } else {
        Builder::default()
    };
    let mut n = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                let _ = writeln!(err, "makemap: standard input: {e}");
                return crate::sysexits::EX_IOERR;
            }
        }
        n += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        b.line(o, n, text);
        for v in b.verbose.drain(..) {
            let _ = writeln!(out, "{v}");
        }
    }
    let code = if b.problems.is_empty() {
        EX_OK
    } else {
        EX_DATAERR
    };
    for p in b.problems.drain(..) {
        let _ = writeln!(err, "makemap: {}: {p}", o.name.display());
    }
    if let Err(e) = mapdb::write_atomically(db, &b.encode(), 0o640) {
        let _ = writeln!(err, "{}: {}", open_error(o), reason(&e));
        return EX_CANTCREAT;
    }
    give_to(db, trusted, err);
    code
}

/// The C library's text for an I/O error (`No such file or directory`), as sendmail prints it.
fn strerror(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

/// `O TrustedUser=name` from the cf, if set (the cf must be readable, as in sendmail).
fn trusted_user(cf: &Path) -> Result<Option<String>, String> {
    let text = std::fs::read(cf).map_err(|e| strerror(&e))?;
    let found = text.split(|&b| b == b'\n').rev().find_map(|l| {
        let l = String::from_utf8_lossy(l);
        let v = l.strip_prefix("O TrustedUser")?.trim_start();
        Some(v.strip_prefix('=')?.trim().to_string())
    });
    Ok(found.filter(|v| !v.is_empty()))
}

/// Run as root with a `TrustedUser`: the map belongs to that user.
fn give_to(db: &Path, trusted: Option<&str>, err: &mut dyn Write) {
    let Some(name) = trusted else { return };
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let uid = match name.parse::<u32>() {
        Ok(n) => Some(nix::unistd::Uid::from_raw(n)),
        Err(_) => nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid),
    };
    match uid {
        Some(uid) => {
            if let Err(e) = nix::unistd::chown(db, Some(uid), None) {
                let _ = writeln!(err, "makemap: {}: chown: {e}", db.display());
            }
        }
        None => {
            let _ = writeln!(err, "TrustedUser: unknown user {name}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn opts(s: &str) -> Options {
        Options::parse(&args(s)).unwrap()
    }

    /// Feeds `text` to a builder; returns the entries in key order and the problems.
    fn build_text(o: &Options, text: &str) -> (Vec<(String, String)>, Vec<String>) {
        let mut b = Builder::default();
        for (i, l) in text.split('\n').enumerate() {
            b.line(o, i + 1, l.as_bytes());
        }
        let problems = std::mem::take(&mut b.problems);
        let db = MapDb::decode(b.encode()).unwrap();
        let entries = db
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        (entries, problems)
    }

    fn kv(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn arguments_in_getopt_forms() {
        let o = opts("-C /x.cf -fr -t: -D; hash /etc/mail/access");
        assert_eq!(o.cf, Path::new("/x.cf"));
        assert!(o.no_fold && o.replace && !o.append);
        assert_eq!((o.delim, o.comment), (Some(b':'), b';'));
        assert_eq!(
            (o.class.as_str(), o.name.as_path()),
            ("hash", Path::new("/etc/mail/access"))
        );
        assert!(opts("-l").list);
        assert!(opts("-N -c 100 -s -i btree -u -v -e -d -o btree m").unmap);
        for bad in ["hash", "", "-x hash m", "-t", "hash a b"] {
            assert_eq!(Options::parse(&args(bad)), Err(UsageError), "{bad:?}");
        }
    }

    #[test]
    fn keys_fold_values_stay_as_written() {
        let (e, p) = build_text(&opts("hash m"), "Key1 Val One  \n# comment\n\nKEY2\tv2");
        assert_eq!(e, kv(&[("key1", "Val One  "), ("key2", "v2")]));
        assert!(p.is_empty());
        let (e, _) = build_text(&opts("-f hash m"), "Key1 v");
        assert_eq!(e, kv(&[("Key1", "v")]));
    }

    #[test]
    fn bad_lines_are_named_and_skipped() {
        let (e, p) = build_text(
            &opts("hash m"),
            "  lead x\nk1 first\nk1 second\nlonely\nspace \r\nok v",
        );
        assert_eq!(e, kv(&[("k1", "first"), ("ok", "v")]));
        assert_eq!(
            p,
            [
                "line 1: syntax error (leading space)",
                "line 3: key k1: duplicate key",
                "line 4: no RHS for LHS lonely",
                "line 5: no RHS for LHS space \r",
            ]
        );
    }

    #[test]
    fn replace_empty_and_delimiter_flags() {
        let (e, p) = build_text(&opts("-r -e hash m"), "k a\nk b\nempty");
        assert_eq!(e, kv(&[("empty", ""), ("k", "b")]));
        assert!(p.is_empty());
        let (e, p) = build_text(&opts("-t: hash m"), "k:v:w\nk2::x\nk3 : y\nno delim");
        assert_eq!(e, kv(&[("k", "v:w"), ("k2", "x"), ("k3 ", " y")]));
        assert_eq!(p, ["line 4: no RHS for LHS no delim"]);
    }

    fn run_with(a: &str, input: &str) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&args(a), &mut input.as_bytes(), &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn builds_dumps_and_appends_a_map_file() {
        let dir = tempfile::tempdir().unwrap();
        let cf = dir.path().join("sendmail.cf");
        std::fs::write(&cf, "O TrustedUser=\n").unwrap();
        let name = dir.path().join("access");
        let n = name.display();
        let c = cf.display();
        let (code, _, err) = run_with(&format!("-C {c} hash {n}"), "Connect:10 REJECT\nb x\nb y\n");
        assert_eq!(code, EX_DATAERR, "the duplicate is reported");
        assert_eq!(err, format!("makemap: {n}: line 3: key b: duplicate key\n"));
        assert!(dir.path().join("access.db").exists());
        let (code, out, _) = run_with(&format!("-C {c} -u hash {n}"), "");
        assert_eq!((code, out.as_str()), (EX_OK, "b\tx\nconnect:10\tREJECT\n"));
        let (code, _, _) = run_with(&format!("-C {c} -o -r btree {n}.db"), "b z\nnew v\n");
        assert_eq!(code, EX_OK);
        let (_, out, _) = run_with(&format!("-C {c} -u -t= hash {n}"), "");
        assert_eq!(out, "b=z\nconnect:10=REJECT\nnew=v\n");
    }

    #[test]
    fn refusals_have_sendmails_status() {
        let dir = tempfile::tempdir().unwrap();
        let cf = dir.path().join("sendmail.cf");
        std::fs::write(&cf, "").unwrap();
        let (c, n) = (cf.display(), dir.path().join("m"));
        let n = n.display();
        let (code, _, err) = run_with(&format!("-C {c} foo {n}"), "k v\n");
        assert_eq!(code, EX_CANTCREAT);
        assert_eq!(
            err,
            format!("makemap: error opening type foo map {n}: Unknown database type\n")
        );
        let (code, _, err) = run_with(&format!("-C {c} -u hash {n}"), "");
        assert_eq!(code, EX_CANTCREAT);
        assert!(err.ends_with(": No such file or directory\n"), "{err}");
        std::fs::write(dir.path().join("m.db"), b"not a map").unwrap();
        let (code, _, err) = run_with(&format!("-C {c} -u hash {n}"), "");
        assert_eq!(code, EX_CANTCREAT);
        assert!(err.contains("bad magic"), "{err}");
        let (code, _, err) = run_with("-C /nonexistent/sendmail.cf hash x", "");
        assert_eq!(code, EX_NOINPUT);
        assert_eq!(
            err,
            "makemap: /nonexistent/sendmail.cf: No such file or directory\n"
        );
        let (code, _, err) = run_with("hash", "");
        assert_eq!((code, err.starts_with("Usage: makemap")), (EX_USAGE, true));
        let (code, out, _) = run_with("-l", "");
        assert_eq!((code, out.as_str()), (EX_OK, "hash\nbtree\nimplicit\n"));
    }
}
