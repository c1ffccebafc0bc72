//! Maps (`K` lines): named key→value lookups the rules call with `$( map key $)`.
//!
//! In: a map declaration (`Kname class -flags args`), a key and the `$@` arguments. Out: the
//! value (after the `-a` suffix and `%1`.. substitution), none, or a status (`EX_TEMPFAIL`
//! when the map is unavailable, `EX_NOHOST` for unknown hosts, `EX_CONFIG` for bad use).
//!
//! Database maps (`hash`, `btree`, `dbm`, `implicit` for aliases) read the map `makemap` or
//! `newaliases` built (`FILE.db`, [`crate::mapdb`]) when it is intact and not older than its
//! text source; otherwise they read the text source itself. A missing `FILE.db` is
//! sendmail's `missing map file` for `hash`, `btree` and `dbm` (a required map then fails
//! every lookup temporarily, an optional `-o` one is closed); only the alias class
//! (`implicit`) reads the text without one, as sendmail's falls back to its `stab` class.
//! A damaged map is never read: it is reported ([`Map::warning`]) and the text is used.
//! The `host` map (and `$[ $]`) answers from the hosts file (`HostsFile` option, else
//! `/etc/hosts`) and, where the `ServiceSwitchFile`'s `hosts` line names `dns`, from DNS
//! ([`crate::dns::BlockingCanon`]: A, AAAA or MX), in the switch's order.
//!
//! Source: sendmail 8.17 map.c (map_parseargs, map_rewrite, host/dequote/arith/macro
//! lookups), op.txt §5.1.11 ("K -- Key File Declaration").

use crate::sysexits::{EX_CONFIG, EX_NOHOST, EX_OK, EX_TEMPFAIL, EX_UNAVAILABLE};
use std::collections::HashMap;
use std::path::Path;

/// The result of one lookup: value (if found) and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapAnswer {
    pub value: Option<Vec<u8>>,
    pub status: i32,
}

impl MapAnswer {
    fn found(v: Vec<u8>) -> Self {
        MapAnswer {
            value: Some(v),
            status: EX_OK,
        }
    }
    fn none(status: i32) -> Self {
        MapAnswer {
            value: None,
            status,
        }
    }
}

/// What kind of map, with its class-specific state.
#[derive(Debug, Clone)]
pub enum MapKind {
    /// `host`: canonify a host name or `[address]` from the hosts file.
    Host,
    /// `dequote`: strip quotes.
    Dequote,
    /// `arith`: `$( arith op $@ a $@ b $)`.
    Arith,
    /// `macro`: set a macro, return empty.
    Macro,
    /// `hash`/`btree`/`dbm`/`implicit`/`stab`: a key→value table from a built map or a
    /// text file.
    Table {
        /// Loaded entries (keys folded unless `-f`), or the load error.
        entries: Result<Table, String>,
        /// Alias-style (`key: value`) instead of makemap-style (`key value`).
        alias: bool,
    },
    /// `regex`: the key matches a pattern ([`super::regex_map`]).
    Regex(Box<super::regex_map::RegexMap>),
    /// `sequence`: try the listed maps in turn.
    Sequence(Vec<String>),
    /// `user`: the passwd entry of the key; `-v` names the field returned (default: the
    /// name itself).
    User { field: Option<String> },
    /// A class this implementation does not support.
    Unsupported(String),
}

/// The entries of a database map: the built map file, or its text source read into memory.
#[derive(Debug, Clone)]
pub enum Table {
    Built(crate::mapdb::MapDb),
    Text(HashMap<Vec<u8>, Vec<u8>>),
}

impl Table {
    /// The value for an already folded key; alias values with their white space collapsed,
    /// however they were stored.
    fn get(&self, key: &[u8], alias: bool) -> Option<Vec<u8>> {
        match self {
            Table::Text(t) => t.get(key).cloned(),
            Table::Built(db) if alias => db.get(key).map(collapse_ws),
            Table::Built(db) => db.get(key).map(<[u8]>::to_vec),
        }
    }
}

/// One declared map.
#[derive(Clone)]
pub struct Map {
    pub name: String,
    pub class: String,
    pub kind: MapKind,
    /// `-a`: appended to every found value.
    pub append: Option<Vec<u8>>,
    /// `-T`: returned (key + this) when the lookup fails temporarily.
    pub tempfail_append: Option<Vec<u8>>,
    /// `-f`: do not fold keys to lower case.
    pub no_fold: bool,
    /// `-m`: return the key, not the value.
    pub match_only: bool,
    /// `-q`: keep quotes in the key.
    pub keep_quotes: bool,
    /// `-S`/`-s`: space substitution character for the key.
    pub space_sub: Option<u8>,
    /// `-o`: the map is optional.
    pub optional: bool,
    /// The file named on the `K` line (database maps).
    pub file: std::path::PathBuf,
    /// Why the built map file was not used although it exists (damaged, foreign format).
    pub warning: Option<String>,
    /// The `K` line's arguments, to open the map again ([`Maps::reopen`]).
    args: String,
    /// What the files were when the entries were read (database maps): a change, or a
    /// file appearing or going, makes [`Maps::reopen`] read them again.
    stamp: Vec<Option<FileStamp>>,
}

/// What the map is (its declaration and contents); how it is reopened is left out.
impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("name", &self.name)
            .field("class", &self.class)
            .field("kind", &self.kind)
            .field("append", &self.append)
            .field("tempfail_append", &self.tempfail_append)
            .field("no_fold", &self.no_fold)
            .field("match_only", &self.match_only)
            .field("keep_quotes", &self.keep_quotes)
            .field("space_sub", &self.space_sub)
            .field("optional", &self.optional)
            .field("file", &self.file)
            .field("warning", &self.warning)
            .finish()
    }
}

/// A file's identity and version: inode, size and modification time.
type FileStamp = (u64, u64, i64, i64);

fn file_stamp(p: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Where host names are looked up, in the service switch's order (`hosts files dns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostService {
    Files,
    Dns,
}

/// The `hosts` line of a `ServiceSwitchFile` (`hosts<TAB>files dns`). Without a readable
/// file or a `hosts` line: the hosts file only. (sendmail then asks DNS first; here DNS is
/// asked only where the switch names it, so a test or a host without a switch file never
/// sends queries it did not configure.)
pub fn host_services(switch_file: &Path) -> Vec<HostService> {
    let Ok(text) = std::fs::read_to_string(switch_file) else {
        return vec![HostService::Files];
    };
    let line = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .find(|l| l.split_whitespace().next() == Some("hosts"));
    let Some(line) = line else {
        return vec![HostService::Files];
    };
    line.split_whitespace()
        .skip(1)
        .filter_map(|s| match s {
            "files" => Some(HostService::Files),
            "dns" => Some(HostService::Dns),
            _ => None,
        })
        .collect()
}

/// Environment the maps need: the hosts file, the local domain, and how to ask DNS.
#[derive(Debug, Clone, Default)]
pub struct HostEnv {
    /// Hosts file lines: address and names.
    pub hosts: Vec<(String, Vec<String>)>,
    /// Domain appended to unqualified canonical names (`$m`).
    pub domain: String,
    /// The service switch's order for host names (empty: the hosts file only).
    pub services: Vec<HostService>,
    /// The resolver `$[ $]` and the `host` map ask when the switch names `dns`.
    pub dns: Option<crate::dns::BlockingCanon>,
}

impl HostEnv {
    /// Read a hosts file (missing file: empty).
    pub fn load(path: &Path, domain: &str) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut hosts = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut f = line.split_whitespace();
            let Some(addr) = f.next() else { continue };
            let names: Vec<String> = f.map(str::to_string).collect();
            if !names.is_empty() {
                hosts.push((addr.to_string(), names));
            }
        }
        HostEnv {
            hosts,
            domain: domain.to_string(),
            ..HostEnv::default()
        }
    }

    /// A host name's canonical form through the services in switch order: the hosts file,
    /// DNS. `Err` when DNS could not answer and nothing later did.
    pub fn resolve(&self, name: &str) -> Result<Option<String>, String> {
        let mut temporary = None;
        let files_only = [HostService::Files];
        let services = if self.services.is_empty() {
            &files_only[..]
        } else {
            &self.services
        };
        for s in services {
            match (s, &self.dns) {
                (HostService::Files, _) => {
                    if let Some(c) = self.canonical(name) {
                        return Ok(Some(c));
                    }
                }
                (HostService::Dns, Some(dns)) if name.contains('.') => match dns.canonical(name) {
                    crate::dns::Canon::Found(c) => return Ok(Some(c)),
                    crate::dns::Canon::NotFound => {}
                    crate::dns::Canon::TryAgain(why) => temporary = Some(why),
                },
                (HostService::Dns, _) => {}
            }
        }
        temporary.map_or(Ok(None), Err)
    }

    /// Canonical name of a host name: the first qualified name on its hosts line (the
    /// domain appended when there is none), or `None` when unknown.
    pub fn canonical(&self, name: &str) -> Option<String> {
        let n = name.trim_end_matches('.');
        if n.is_empty() {
            return None;
        }
        for (_, names) in &self.hosts {
            if names.iter().any(|x| x.eq_ignore_ascii_case(n)) {
                if let Some(q) = names.iter().find(|x| x.contains('.')) {
                    return Some(q.clone());
                }
                if self.domain.is_empty() {
                    return Some(names[0].clone());
                }
                return Some(format!("{}.{}", names[0], self.domain));
            }
        }
        None
    }

    /// Name of an address (`127.0.0.1`), first hosts line wins.
    pub fn by_addr(&self, want: std::net::IpAddr) -> Option<String> {
        self.hosts
            .iter()
            .find(|(a, _)| a.parse::<std::net::IpAddr>().ok() == Some(want))
            .map(|(_, n)| n[0].clone())
    }
}

/// `inet_aton`: `a.b.c.d`, `a.b.c`, `a.b` or `a`, each part decimal, octal (`0..`) or
/// hex (`0x..`), the last part filling the remaining bytes.
pub fn inet_aton(s: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X"))
        {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if digits.is_empty() && radix != 8 {
            return None;
        }
        let n = if digits.is_empty() {
            0
        } else {
            u32::from_str_radix(digits, radix).ok()?
        };
        nums.push(n);
    }
    let last = *nums.last()?;
    let head = &nums[..nums.len() - 1];
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let shift = 8 * (4 - head.len() as u32);
    if shift < 32 && last >= 1u32 << shift {
        return None;
    }
    let mut v: u32 = 0;
    for (i, &n) in head.iter().enumerate() {
        v |= n << (24 - 8 * i as u32);
    }
    Some(std::net::Ipv4Addr::from(v | last))
}

fn split_args(args: &str) -> Vec<String> {
    args.split_whitespace().map(str::to_string).collect()
}

impl Map {
    /// Build a map from a `K` line's class and arguments (`-flags` then the file).
    pub fn new(name: &str, class: &str, args: &str) -> Map {
        let mut m = Map {
            name: name.to_string(),
            class: class.to_string(),
            kind: MapKind::Unsupported(class.to_string()),
            append: None,
            tempfail_append: None,
            no_fold: false,
            match_only: false,
            keep_quotes: false,
            space_sub: None,
            optional: false,
            file: std::path::PathBuf::new(),
            warning: None,
            args: args.to_string(),
            stamp: Vec::new(),
        };
        if class == "regex" {
            m.regex(args);
            return m;
        }
        let words = split_args(args);
        let mut rest = Vec::new();
        let mut value_field: Option<String> = None;
        for w in &words {
            let b = w.as_bytes();
            if b.len() >= 2 && b[0] == b'-' && rest.is_empty() {
                // Bytes: the flag letter may be the start of a multi-byte character.
                let v = &b[2..];
                match b[1] {
                    b'a' => m.append = Some(v.to_vec()),
                    b'T' => m.tempfail_append = Some(v.to_vec()),
                    b'f' => m.no_fold = true,
                    b'm' => m.match_only = true,
                    b'q' => m.keep_quotes = true,
                    b'o' => m.optional = true,
                    b'S' | b's' => m.space_sub = v.first().copied(),
                    b'v' => value_field = Some(String::from_utf8_lossy(v).into_owned()),
                    _ => {}
                }
            } else {
                rest.push(w.clone());
            }
        }
        if class == "host" && m.append.is_none() {
            m.append = Some(b".".to_vec());
        }
        m.kind = match class {
            "host" => MapKind::Host,
            "dequote" => {
                m.keep_quotes = true;
                MapKind::Dequote
            }
            "arith" => MapKind::Arith,
            "macro" => MapKind::Macro,
            "sequence" | "switch" => MapKind::Sequence(rest.clone()),
            "user" => MapKind::User {
                field: value_field.clone(),
            },
            "hash" | "btree" | "dbm" | "implicit" | "stab" => {
                let alias = matches!(class, "implicit" | "stab");
                let entries = match rest.first() {
                    Some(p) => {
                        // the text source of "file.db" is "file"
                        let p = p.strip_suffix(".db").unwrap_or(p);
                        m.file = std::path::PathBuf::from(p);
                        m.stamp = m.sources().iter().map(|f| file_stamp(f)).collect();
                        // sendmail reads a hash or btree map from its .db only; the
                        // implicit (alias) class falls back to the text (its `stab`).
                        let text_fallback = alias;
                        let (entries, warning) =
                            load_table(Path::new(p), alias, m.no_fold, text_fallback);
                        m.warning = warning
                            .map(|w| format!("{class} map \"{name}\": {w}; reading {p} instead"));
                        entries
                    }
                    None => Err("no file".to_string()),
                };
                MapKind::Table { entries, alias }
            }
            other => MapKind::Unsupported(other.to_string()),
        };
        m
    }

    /// A `regex` map: its own flags (`-s` and `-d` mean other things there), then the
    /// pattern. A pattern that does not compile leaves the map closed, with the reason.
    fn regex(&mut self, args: &str) {
        let (common, compiled) = super::regex_map::parse(args);
        self.append = common.append;
        self.match_only = common.match_only;
        self.keep_quotes = common.keep_quotes;
        self.space_sub = common.space_sub;
        self.no_fold = true;
        match compiled {
            Ok(r) => self.kind = MapKind::Regex(Box::new(r)),
            Err(e) => self.warning = Some(e),
        }
    }

    /// The files a database map is read from: the built map and its text source.
    fn sources(&self) -> [std::path::PathBuf; 2] {
        [crate::mapdb::db_path(&self.file), self.file.clone()]
    }

    /// The alias map sendmail makes from `AliasFile` (named `aliases`).
    pub fn aliases(path: &Path) -> Map {
        let mut m = Map::new("aliases", "implicit", &path.display().to_string());
        m.name = "aliases".into();
        m
    }

    /// Is the map usable (its data loaded)?
    /// Can `/map` look keys up? A required database map whose file is missing still can
    /// (every lookup fails temporarily); an optional one cannot.
    pub fn is_open(&self) -> bool {
        match &self.kind {
            MapKind::Table { entries, .. } => entries.is_ok() || !self.optional,
            MapKind::Unsupported(_) => false,
            _ => true,
        }
    }

    /// For a required database map whose file is missing: sendmail's message when it
    /// first tries to open it (none for the alias class: sendmail's answers "no match"
    /// with a temporary failure and says nothing).
    pub fn open_failure(&self) -> Option<String> {
        match &self.kind {
            MapKind::Table {
                entries: Err(_), ..
            } if !self.optional && self.class != "implicit" => Some(format!(
                "{} map \"{}\": missing map file {}.db: No such file or directory",
                self.class,
                self.name,
                self.file.display()
            )),
            _ => None,
        }
    }
}

/// The entries of the database map whose text source is `path`: its built map
/// (`path.db`) when current and intact, else the text. The second value says why an
/// existing built map was refused. Without `text_fallback` a missing `path.db` is an error
/// (sendmail: `missing map file`), not a reason to read the text.
fn load_table(
    path: &Path,
    alias: bool,
    no_fold: bool,
    text_fallback: bool,
) -> (Result<Table, String>, Option<String>) {
    let db = crate::mapdb::db_path(path);
    if !text_fallback && !db.exists() {
        return (Err(format!("{}: missing map file", db.display())), None);
    }
    match crate::mapdb::open_if_current(&db, path) {
        Ok(Some(built)) => (Ok(Table::Built(built)), None),
        Ok(None) => (load_text(path, alias, no_fold).map(Table::Text), None),
        Err(e) => (
            load_text(path, alias, no_fold).map(Table::Text),
            Some(format!("{}: {e}", db.display())),
        ),
    }
}

/// Read a map's text source: `key value` lines (makemap), or `key: value` with continuation
/// lines (aliases). Keys are lower-cased unless `no_fold`.
fn load_text(path: &Path, alias: bool, no_fold: bool) -> Result<HashMap<Vec<u8>, Vec<u8>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = HashMap::new();
    let mut logical: Vec<Vec<u8>> = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'#') {
            continue;
        }
        if alias && matches!(line.first(), Some(b' ') | Some(b'\t')) {
            if let Some(last) = logical.last_mut() {
                last.extend_from_slice(line);
            }
            continue;
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        logical.push(line.to_vec());
    }
    for line in logical {
        let (k, v) = if alias {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            (trim(&line[..colon]), trim(&line[colon + 1..]))
        } else {
            let sp = line
                .iter()
                .position(|b| b.is_ascii_whitespace())
                .unwrap_or(line.len());
            (line[..sp].to_vec(), trim(&line[sp..]))
        };
        let k = if no_fold { k } else { k.to_ascii_lowercase() };
        let v = if alias { collapse_ws(&v) } else { v };
        out.entry(k).or_insert(v);
    }
    Ok(out)
}

fn trim(s: &[u8]) -> Vec<u8> {
    let a = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let b = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(a, |i| i + 1);
    s[a..b].to_vec()
}

fn collapse_ws(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ws = false;
    for &b in s {
        if b.is_ascii_whitespace() {
            ws = true;
        } else {
            if ws && !out.is_empty() {
                out.push(b' ');
            }
            ws = false;
            out.push(b);
        }
    }
    out
}

/// Apply `-a` and `%0`..`%9` substitution (sendmail's `map_rewrite`).
pub fn map_rewrite(map: &Map, value: &[u8], args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let c = value[i];
        i += 1;
        if c == b'%' && i < value.len() {
            let d = value[i];
            i += 1;
            if d.is_ascii_digit() {
                let n = (d - b'0') as usize;
                if let Some(a) = args.get(n) {
                    out.extend_from_slice(a);
                }
            } else {
                out.push(d);
            }
        } else {
            out.push(c);
        }
    }
    if let Some(a) = &map.append {
        out.extend_from_slice(a);
    }
    out
}

/// sendmail's `user_map_lookup`: the passwd entry of `key`, one field of it.
fn user_lookup(key: &[u8], field: Option<&str>) -> MapAnswer {
    let name = String::from_utf8_lossy(key);
    let Ok(Some(u)) = nix::unistd::User::from_name(&name) else {
        return MapAnswer::none(EX_OK);
    };
    let v = match field.map(str::to_ascii_lowercase).as_deref() {
        None | Some("name") | Some("1") => u.name,
        Some("passwd") | Some("2") => u.passwd.to_string_lossy().into_owned(),
        Some("uid") | Some("3") => u.uid.to_string(),
        Some("gid") | Some("4") => u.gid.to_string(),
        Some("gecos") | Some("5") => u.gecos.to_string_lossy().into_owned(),
        Some("dir") | Some("6") => u.dir.display().to_string(),
        Some("shell") | Some("7") => u.shell.display().to_string(),
        Some(_) => return MapAnswer::none(EX_CONFIG),
    };
    MapAnswer::found(v.into_bytes())
}

/// sendmail's `dequote_map`: remove quotes when the result is a plain token sequence.
pub fn dequote(key: &[u8], space_sub: Option<u8>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(key.len());
    let (mut angle, mut cmnt, mut quotes, mut spaces) = (0i32, 0i32, 0, 0);
    let (mut quotemode, mut bslash) = (false, false);
    for &c0 in key {
        let mut c = c0;
        if bslash {
            bslash = false;
            out.push(c);
            continue;
        }
        if c == b' '
            && let Some(s) = space_sub
        {
            c = s;
        }
        match c {
            b'\\' => bslash = true,
            b'(' => cmnt += 1,
            b')' => {
                if cmnt <= 0 {
                    return None;
                }
                cmnt -= 1;
            }
            b' ' | b'\t' => spaces += 1,
            _ => {}
        }
        if cmnt > 0 {
            out.push(c);
            continue;
        }
        match c {
            b'"' => {
                quotemode = !quotemode;
                quotes += 1;
                continue;
            }
            b'<' => angle += 1,
            b'>' => {
                if angle <= 0 {
                    return None;
                }
                angle -= 1;
            }
            _ => {}
        }
        out.push(c);
    }
    if angle != 0 || cmnt != 0 || bslash || quotemode || quotes == 0 || spaces != 0 {
        return None;
    }
    Some(out)
}

/// sendmail's `arith_map_lookup`: `op` with two integer arguments.
pub fn arith(op: &[u8], args: &[Vec<u8>]) -> MapAnswer {
    let (Some(a), Some(b)) = (args.first(), args.get(1)) else {
        return MapAnswer::none(EX_CONFIG);
    };
    let parse = |v: &[u8]| -> i64 {
        let s = String::from_utf8_lossy(v);
        let s = s.trim();
        let (neg, digits) = match s.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, s),
        };
        let n: i64 = digits
            .bytes()
            .take_while(u8::is_ascii_digit)
            .fold(0i64, |acc, d| {
                acc.wrapping_mul(10).wrapping_add((d - b'0') as i64)
            });
        if neg { -n } else { n }
    };
    let (x, y) = (parse(a), parse(b));
    let truth = |t: bool| {
        if t {
            b"TRUE".to_vec()
        } else {
            b"FALSE".to_vec()
        }
    };
    let v = match op {
        b"+" => x.wrapping_add(y).to_string().into_bytes(),
        b"-" => x.wrapping_sub(y).to_string().into_bytes(),
        b"*" => x.wrapping_mul(y).to_string().into_bytes(),
        b"/" | b"%" => {
            if y == 0 {
                return MapAnswer::none(EX_CONFIG);
            }
            if op == b"/" {
                x.wrapping_div(y).to_string().into_bytes()
            } else {
                x.wrapping_rem(y).to_string().into_bytes()
            }
        }
        b"l" => truth(x < y),
        b"=" => truth(x == y),
        b"|" => (x | y).to_string().into_bytes(),
        b"&" => (x & y).to_string().into_bytes(),
        b"u" => truth((x as u64) < (y as u64)),
        b"r" => {
            if y < x {
                return MapAnswer::none(EX_CONFIG);
            }
            x.to_string().into_bytes()
        }
        _ => return MapAnswer::none(EX_CONFIG),
    };
    MapAnswer::found(v)
}

/// All maps of a configuration.
#[derive(Debug, Clone, Default)]
pub struct Maps {
    pub maps: HashMap<String, Map>,
    pub hosts: HostEnv,
}

impl Maps {
    /// Open again every database map whose files changed since they were read, as
    /// sendmail's process for a new connection opens its maps: a map rebuilt with
    /// `makemap` is read at once, one whose `.db` went missing fails from now on.
    pub fn reopen(&mut self) {
        for m in self.maps.values_mut() {
            if !matches!(m.kind, MapKind::Table { .. }) {
                continue;
            }
            let now: Vec<_> = m.sources().iter().map(|f| file_stamp(f)).collect();
            if now != m.stamp {
                let name = m.name.clone();
                *m = Map::new(&m.name, &m.class, &m.args);
                m.name = name;
            }
        }
    }

    /// Look `key` up in map `name` (macro maps are handled by the caller, who owns the
    /// macros). `args[0]` is the key, `args[1..]` the `$@` arguments.
    pub fn lookup(&self, name: &str, key: &[u8], args: &[Vec<u8>], depth: usize) -> MapAnswer {
        let Some(map) = self.maps.get(name) else {
            return MapAnswer::none(EX_UNAVAILABLE);
        };
        let folded;
        let key_for_table = if map.no_fold {
            key
        } else {
            folded = key.to_ascii_lowercase();
            &folded
        };
        let ans = match &map.kind {
            MapKind::Host => self.host_lookup(key),
            MapKind::Dequote => match dequote(key, map.space_sub) {
                Some(v) => MapAnswer::found(v),
                None => MapAnswer::none(EX_OK),
            },
            MapKind::Arith => return arith(key, &args[1.min(args.len())..]),
            MapKind::Regex(r) => {
                // the value is not %-substituted, only the -a text appended
                return match r.value(key, map.match_only) {
                    Some(mut v) => {
                        v.extend_from_slice(map.append.as_deref().unwrap_or_default());
                        MapAnswer::found(v)
                    }
                    None => MapAnswer::none(EX_OK),
                };
            }
            MapKind::Macro => MapAnswer::found(Vec::new()),
            MapKind::Table { entries, alias } => match entries {
                Ok(e) => match e.get(key_for_table, *alias) {
                    Some(v) => MapAnswer::found(v),
                    None => MapAnswer::none(if *alias { EX_NOHOST } else { EX_OK }),
                },
                Err(_) if map.optional => MapAnswer::none(EX_OK),
                Err(_) => MapAnswer::none(EX_TEMPFAIL),
            },
            MapKind::Sequence(list) => {
                if depth > 8 {
                    return MapAnswer::none(EX_CONFIG);
                }
                let mut last = MapAnswer::none(EX_OK);
                for m in list {
                    let a = self.lookup(m, key, args, depth + 1);
                    if a.value.is_some() {
                        return a;
                    }
                    last = a;
                }
                return last;
            }
            MapKind::User { field } => user_lookup(key, field.as_deref()),
            MapKind::Unsupported(_) => MapAnswer::none(EX_UNAVAILABLE),
        };
        match ans.value {
            Some(v) => {
                let v = if map.match_only { key.to_vec() } else { v };
                MapAnswer::found(map_rewrite(map, &v, args))
            }
            None => ans,
        }
    }

    fn host_lookup(&self, key: &[u8]) -> MapAnswer {
        let k = String::from_utf8_lossy(key);
        if let Some(rest) = k.strip_prefix('[') {
            // "[addr]anything": the address up to ']' is looked up, the rest ignored
            let Some(close) = rest.find(']') else {
                return MapAnswer::none(EX_OK);
            };
            let inner = &rest[..close];
            let addr = match inner.get(..5) {
                Some(p) if p.eq_ignore_ascii_case("IPv6:") => inner[5..]
                    .parse::<std::net::Ipv6Addr>()
                    .ok()
                    .map(std::net::IpAddr::V6),
                _ => inet_aton(inner).map(std::net::IpAddr::V4),
            };
            let Some(addr) = addr else {
                return MapAnswer::none(EX_UNAVAILABLE);
            };
            return match self.hosts.by_addr(addr) {
                Some(n) => MapAnswer::found(n.into_bytes()),
                None => MapAnswer::none(EX_NOHOST),
            };
        }
        match self.hosts.resolve(&k) {
            Ok(Some(n)) => MapAnswer::found(n.into_bytes()),
            Ok(None) => MapAnswer::none(EX_NOHOST),
            Err(_) => MapAnswer::none(EX_TEMPFAIL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_ascii_flag_letter_is_ignored_not_a_panic() {
        // Found by fuzz/cf_reader: `-é…` cut the argument inside a character.
        let m = Map::new("m", "host", "-\u{e9}xyz -T<TEMP>");
        assert_eq!(m.tempfail_append.as_deref(), Some(&b"<TEMP>"[..]));
        assert_eq!(m.append.as_deref(), Some(&b"."[..]));
    }

    fn hosts() -> HostEnv {
        HostEnv {
            hosts: vec![
                ("127.0.0.1".into(), vec!["localhost".into()]),
                (
                    "127.0.0.1".into(),
                    vec!["oracle.example.test".into(), "oracle".into()],
                ),
                ("127.0.0.3".into(), vec!["remote.example.test".into()]),
            ],
            domain: "example.test".into(),
            ..HostEnv::default()
        }
    }

    #[test]
    fn host_map_canonifies_with_trailing_dot() {
        let mut maps = Maps {
            hosts: hosts(),
            ..Default::default()
        };
        maps.maps
            .insert("host".into(), Map::new("host", "host", ""));
        maps.maps.insert(
            "resolve".into(),
            Map::new("resolve", "host", "-a<OKR> -T<TEMP>"),
        );
        let l = |m: &str, k: &str| maps.lookup(m, k.as_bytes(), &[k.as_bytes().to_vec()], 0);
        assert_eq!(l("host", "oracle").value.unwrap(), b"oracle.example.test.");
        assert_eq!(
            l("host", "localhost").value.unwrap(),
            b"localhost.example.test."
        );
        assert_eq!(
            l("host", "[127.0.0.3]").value.unwrap(),
            b"remote.example.test."
        );
        assert_eq!(
            l("resolve", "oracle").value.unwrap(),
            b"oracle.example.test<OKR>"
        );
        assert_eq!(l("host", "nohost.invalid"), MapAnswer::none(EX_NOHOST));
    }

    /// `$[ $]` through DNS (a real server on loopback), in the service switch's order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn host_map_asks_dns_when_the_switch_says_so() {
        use crate::dns::test_server::{DnsServer, Zone};
        let zone = Zone::default()
            .a("www.dns.test", "192.0.2.80")
            .mx("mailonly.dns.test", 10, "mx.dns.test")
            .servfail("broken.dns.test");
        let server = DnsServer::start(zone).await;
        let dir = tempfile::tempdir().unwrap();
        let switch = dir.path().join("service.switch");
        std::fs::write(&switch, "# c\nhosts\tfiles dns\naliases files\n").unwrap();
        let mut maps = Maps {
            hosts: hosts(),
            ..Default::default()
        };
        maps.hosts.services = host_services(&switch);
        assert_eq!(maps.hosts.services, [HostService::Files, HostService::Dns]);
        maps.hosts.dns = Some(crate::dns::BlockingCanon {
            name_servers: vec![server.addr],
        });
        maps.maps.insert(
            "resolve".into(),
            Map::new("resolve", "host", "-a<OKR> -T<TEMP>"),
        );
        let l = |maps: &Maps, k: &str| {
            maps.lookup("resolve", k.as_bytes(), &[k.as_bytes().to_vec()], 0)
        };
        assert_eq!(
            l(&maps, "oracle").value.unwrap(),
            b"oracle.example.test<OKR>",
            "files first"
        );
        assert_eq!(
            l(&maps, "WWW.dns.test.").value.unwrap(),
            b"WWW.dns.test<OKR>"
        );
        assert_eq!(
            l(&maps, "mailonly.dns.test").value.unwrap(),
            b"mailonly.dns.test<OKR>"
        );
        assert_eq!(l(&maps, "nowhere.dns.test").status, EX_NOHOST);
        assert_eq!(l(&maps, "broken.dns.test").status, EX_TEMPFAIL);
        // a switch with files only never asks DNS
        std::fs::write(&switch, "hosts files\n").unwrap();
        maps.hosts.services = host_services(&switch);
        assert_eq!(l(&maps, "www.dns.test").status, EX_NOHOST);
    }

    #[test]
    fn user_map_reads_passwd() {
        let mut maps = Maps::default();
        maps.maps.insert("u".into(), Map::new("u", "user", ""));
        maps.maps
            .insert("home".into(), Map::new("home", "user", "-vdir"));
        assert_eq!(maps.lookup("u", b"root", &[], 0).value.unwrap(), b"root");
        assert_eq!(
            maps.lookup("home", b"root", &[], 0).value.unwrap(),
            b"/root"
        );
        assert_eq!(maps.lookup("u", b"no-such-user-xyz", &[], 0).value, None);
    }

    #[test]
    fn values_take_args_and_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        std::fs::write(&p, "key relay:%1 via %0\n").unwrap();
        crate::makemap::build_from_text(&p).unwrap();
        let mut maps = Maps::default();
        maps.maps.insert(
            "m".into(),
            Map::new("m", "hash", &format!("-a.OK {}", p.display())),
        );
        let a = maps.lookup("m", b"KEY", &[b"KEY".to_vec(), b"host".to_vec()], 0);
        assert_eq!(a.value.unwrap(), b"relay:host via KEY.OK");
        maps.maps.insert(
            "k".into(),
            Map::new("k", "hash", &format!("-m {}", p.display())),
        );
        assert_eq!(maps.lookup("k", b"key", &[], 0).value.unwrap(), b"key");
    }

    #[test]
    fn inet_aton_forms() {
        assert_eq!(inet_aton("127.1"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(inet_aton("0x7f.0.0.1"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(inet_aton("300.1.1.1"), None);
        assert_eq!(inet_aton("abc"), None);
        assert_eq!(inet_aton(""), None);
    }

    #[test]
    fn dequote_rules() {
        assert_eq!(dequote(b"\"a\"b", None).unwrap(), b"ab");
        assert_eq!(dequote(b"abc", None), None);
        assert_eq!(dequote(b"\"a b\"", None), None);
    }

    #[test]
    fn arith_ops() {
        let a = |op: &str, x: &str, y: &str| {
            arith(
                op.as_bytes(),
                &[x.as_bytes().to_vec(), y.as_bytes().to_vec()],
            )
            .value
        };
        assert_eq!(a("+", "1", "2").unwrap(), b"3");
        assert_eq!(a("l", "1", "2").unwrap(), b"TRUE");
        assert_eq!(a("/", "1", "0"), None);
        assert_eq!(arith(b"+", &[]).status, EX_CONFIG);
    }

    #[test]
    fn text_tables_fold_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access");
        std::fs::write(&p, "# c\nConnect:127.0.0.9\t\tREJECT\n").unwrap();
        crate::makemap::build_from_text(&p).unwrap();
        let mut maps = Maps::default();
        maps.maps.insert(
            "access".into(),
            Map::new("access", "hash", &format!("-T<TMPF> -o {}", p.display())),
        );
        let a = maps.lookup("access", b"connect:127.0.0.9", &[], 0);
        assert_eq!(a.value.unwrap(), b"REJECT");
        let a = maps.lookup("access", b"Connect:127", &[], 0);
        assert_eq!(a, MapAnswer::none(EX_OK));
    }

    #[test]
    fn a_built_map_is_read_and_a_damaged_one_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access");
        std::fs::write(&p, "from:text TEXT\n").unwrap();
        let db = crate::mapdb::db_path(&p);
        let built = crate::mapdb::encode(vec![(b"from:built".to_vec(), b"BUILT".to_vec())]);
        crate::mapdb::write_atomically(&db, &built, 0o640).unwrap();
        let m = Map::new("access", "hash", &format!("-o {}", p.display()));
        assert!(m.warning.is_none());
        let mut maps = Maps::default();
        maps.maps.insert("access".into(), m);
        let get = |maps: &Maps, k: &[u8]| maps.lookup("access", k, &[], 0).value;
        assert_eq!(get(&maps, b"From:Built").unwrap(), b"BUILT");
        assert_eq!(
            get(&maps, b"from:text"),
            None,
            "the text is not read beside a map"
        );

        let mut bytes = built.clone();
        bytes[20] ^= 1;
        std::fs::write(&db, &bytes).unwrap();
        let m = Map::new("access", "hash", &format!("-o {}", p.display()));
        let w = m.warning.clone().unwrap();
        assert!(
            w.contains("checksum mismatch") && w.contains("reading"),
            "{w}"
        );
        maps.maps.insert("access".into(), m);
        assert_eq!(get(&maps, b"from:text").unwrap(), b"TEXT");
        assert_eq!(get(&maps, b"from:built"), None);
    }

    #[test]
    fn alias_tables() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("aliases");
        std::fs::write(&p, "list: root,\n  alice\npostmaster: root\n").unwrap();
        let mut maps = Maps::default();
        maps.maps.insert("aliases".into(), Map::aliases(&p));
        assert_eq!(
            maps.lookup("aliases", b"list", &[], 0).value.unwrap(),
            b"root, alice"
        );
        assert_eq!(maps.lookup("aliases", b"root", &[], 0).status, EX_NOHOST);
    }

    #[test]
    fn a_missing_db_is_an_error_not_the_text_and_reopen_follows_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access");
        std::fs::write(&p, "Connect:192.0.2.1 REJECT\n").unwrap();
        let mut maps = Maps::default();
        let args = p.display().to_string();
        maps.maps
            .insert("access".into(), Map::new("access", "hash", &args));
        maps.maps.insert(
            "opt".into(),
            Map::new("opt", "btree", &format!("-o {args}")),
        );
        maps.maps
            .insert("al".into(), Map::new("al", "implicit", &args));
        // sendmail 8.17: `hash map "access": missing map file …access.db: No such file
        // or directory`, every lookup a temporary failure; -o: closed; implicit: the text
        let a = maps.lookup("access", b"connect:192.0.2.1", &[], 0);
        assert_eq!(a, MapAnswer::none(EX_TEMPFAIL));
        assert_eq!(
            maps.maps["access"].open_failure().unwrap(),
            format!("hash map \"access\": missing map file {args}.db: No such file or directory")
        );
        assert!(!maps.maps["opt"].is_open());
        assert!(maps.maps["opt"].open_failure().is_none());
        assert!(maps.maps["al"].open_failure().is_none());
        // makemap builds it: the next reopen (a new connection) reads it
        crate::makemap::build_from_text(&p).unwrap();
        maps.reopen();
        let a = maps.lookup("access", b"connect:192.0.2.1", &[], 0);
        assert_eq!(a.value.as_deref(), Some(&b"REJECT"[..]));
        assert!(maps.maps["opt"].is_open());
        // and when the .db goes, the map fails again
        std::fs::remove_file(crate::mapdb::db_path(&p)).unwrap();
        maps.reopen();
        let a = maps.lookup("access", b"connect:192.0.2.1", &[], 0);
        assert_eq!(a, MapAnswer::none(EX_TEMPFAIL));
    }
}
