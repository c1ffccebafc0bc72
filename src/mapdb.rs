//! The on-disk map format that `makemap` and `newaliases` write and the maps read.
//!
//! In: key/value pairs (already folded as the map wants). Out: one file, `NAME.db` (the
//! name sendmail's `hash`/`btree` maps open), in our own format — not Berkeley DB:
//!
//! ```text
//! magic   "SMRSMAP\0"                      8 bytes
//! version u32 = 1                          big endian, like every number here
//! count   u32
//! index   count × (key_off, key_len, val_off, val_len: u32), sorted by key bytes
//! data    the keys and values the index points into (offsets from the start of data)
//! crc     u32: CRC-32 of every byte before it
//! ```
//!
//! A lookup is a binary search of the index, with no parsing and no allocation. The file
//! is written beside its destination, fsynced, renamed over it, and the directory fsynced
//! ([`write_atomically`]), so a reader sees the old map or the new one, never half of
//! one. [`MapDb::decode`] checks the magic, the version, the CRC, every offset and the
//! key order before the map is used, so a damaged or foreign file (a Berkeley DB
//! `access.db` left by sendmail) is refused with a reason instead of being misread.
//!
//! Source: makemap(8) and sendmail 8.17 map.c (`hash`/`btree` maps open `NAME.db`; a
//! `K` line's file that already ends in `.db` is used as is).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// First bytes of every map file.
pub const MAGIC: &[u8; 8] = b"SMRSMAP\0";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// magic + version + count.
const HEADER_LEN: usize = 16;
/// One index entry: four u32.
const ENTRY_LEN: usize = 16;

/// Why a map file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MapDbError {
    /// Reading, writing or renaming the file failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with our magic (another program's database, or garbage).
    #[error("not a sendmail-rs map file (bad magic)")]
    NotAMap,
    /// Written by a newer (or older) format.
    #[error("map format version {0} (this build reads version {VERSION})")]
    Version(u32),
    /// The checksum does not match: the file was damaged after it was written.
    #[error("checksum mismatch: the map file is damaged")]
    Checksum,
    /// The checksum matched but the contents are inconsistent (a bug, or a forged file).
    #[error("malformed map file: {0}")]
    Malformed(&'static str),
}

/// An opened map: the whole file, checked, searched in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDb {
    bytes: Vec<u8>,
    count: usize,
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

impl MapDb {
    /// Reads and checks the map file at `path`.
    pub fn open(path: &Path) -> Result<MapDb, MapDbError> {
        let bytes = fs::read(path).map_err(|source| MapDbError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
        MapDb::decode(bytes)
    }

    /// Checks a map file's bytes: magic, version, checksum, offsets, key order.
    pub fn decode(bytes: Vec<u8>) -> Result<MapDb, MapDbError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(MapDbError::NotAMap);
        }
        if bytes.len() < HEADER_LEN + 4 {
            return Err(MapDbError::Checksum);
        }
        let body_len = bytes.len() - 4;
        if crc32fast::hash(&bytes[..body_len]).to_be_bytes() != bytes[body_len..] {
            return Err(MapDbError::Checksum);
        }
        let version = be32(&bytes, 8) as u32;
        if version != VERSION {
            return Err(MapDbError::Version(version));
        }
        let count = be32(&bytes, 12);
        let data_start = count
            .checked_mul(ENTRY_LEN)
            .and_then(|n| n.checked_add(HEADER_LEN))
            .filter(|&n| n <= body_len)
            .ok_or(MapDbError::Malformed("index beyond the end of the file"))?;
        let db = MapDb { bytes, count };
        let data_len = body_len - data_start;
        for i in 0..count {
            let e = HEADER_LEN + i * ENTRY_LEN;
            for (off, len) in [(e, e + 4), (e + 8, e + 12)] {
                let (o, l) = (be32(&db.bytes, off), be32(&db.bytes, len));
                if o.checked_add(l).is_none_or(|end| end > data_len) {
                    return Err(MapDbError::Malformed("entry beyond the end of the data"));
                }
            }
            if i > 0 && db.key(i - 1) > db.key(i) {
                return Err(MapDbError::Malformed("keys out of order"));
            }
        }
        Ok(db)
    }

    fn slice(&self, entry: usize, field: usize) -> &[u8] {
        let e = HEADER_LEN + entry * ENTRY_LEN + field * 8;
        let data = HEADER_LEN + self.count * ENTRY_LEN;
        let (o, l) = (be32(&self.bytes, e), be32(&self.bytes, e + 4));
        &self.bytes[data + o..data + o + l]
    }

    fn key(&self, i: usize) -> &[u8] {
        self.slice(i, 0)
    }

    /// The value stored for `key` (exactly these bytes; fold before calling). With
    /// duplicate keys (`makemap -d`), the first one written.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid) < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo < self.count && self.key(lo) == key).then(|| self.slice(lo, 1))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        (0..self.count).map(|i| (self.slice(i, 0), self.slice(i, 1)))
    }
}

/// The file image of `entries`: sorted by key (stably, so the first of equal keys stays
/// first).
pub fn encode(mut entries: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<u8> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let data_len: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(HEADER_LEN + entries.len() * ENTRY_LEN + data_len + 4);
    out.extend_from_slice(MAGIC);
    out.extend(VERSION.to_be_bytes());
    out.extend((entries.len() as u32).to_be_bytes());
    let mut off = 0u32;
    for (k, v) in &entries {
        for s in [k, v] {
            out.extend(off.to_be_bytes());
            out.extend((s.len() as u32).to_be_bytes());
            off += s.len() as u32;
        }
    }
    for (k, v) in &entries {
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    let crc = crc32fast::hash(&out);
    out.extend(crc.to_be_bytes());
    out
}

/// The map file sendmail opens for a `hash`/`btree` map named `name`: `name.db`, or `name`
/// itself when it already ends in `.db`.
pub fn db_path(name: &Path) -> PathBuf {
    if name.extension().is_some_and(|e| e == "db") {
        return name.to_path_buf();
    }
    let mut s = name.as_os_str().to_os_string();
    s.push(".db");
    PathBuf::from(s)
}

/// Writes `bytes` to `dest` crash-safely: a temp file (created with `mode`) beside it,
/// fsync, rename over `dest`, fsync of the directory. On error the temp file is removed and
/// `dest` is untouched.
pub fn write_atomically(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), MapDbError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| MapDbError::Io { op, path, source }
    };
    let result = (|| {
        let mut f = fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, dest).map_err(io("rename", dest))?;
        if let Ok(d) = fs::File::open(dir) {
            d.sync_all().map_err(io("fsync", dir))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The built map for a text source, when it exists, is intact and is not older than the
/// text (a missing text counts as older). `Err` says why an existing map was refused;
/// `Ok(None)` means there is no map file.
pub fn open_if_current(db: &Path, text: &Path) -> Result<Option<MapDb>, MapDbError> {
    let Ok(dm) = fs::metadata(db) else {
        return Ok(None);
    };
    let newer_text = fs::metadata(text)
        .and_then(|t| Ok(t.modified()? > dm.modified()?))
        .unwrap_or(false);
    if newer_text {
        return Ok(None);
    }
    MapDb::open(db).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        v.iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn every_key_is_found_and_no_other() {
        let db = MapDb::decode(encode(pairs(&[
            ("m", "3"),
            ("connect:127.0.0.1", "RELAY"),
            ("a", ""),
            ("zz", "last"),
        ])))
        .unwrap();
        assert_eq!(db.len(), 4);
        assert_eq!(db.get(b"connect:127.0.0.1"), Some(&b"RELAY"[..]));
        assert_eq!(db.get(b"a"), Some(&b""[..]));
        assert_eq!(db.get(b"zz"), Some(&b"last"[..]));
        assert_eq!(db.get(b"m"), Some(&b"3"[..]));
        for absent in [&b""[..], b"b", b"zzz", b"connect:127.0.0"] {
            assert_eq!(db.get(absent), None);
        }
        let keys: Vec<&[u8]> = db.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [&b"a"[..], b"connect:127.0.0.1", b"m", b"zz"]);
    }

    #[test]
    fn the_first_of_duplicate_keys_wins() {
        let db = MapDb::decode(encode(pairs(&[("k", "one"), ("k", "two")]))).unwrap();
        assert_eq!(db.get(b"k"), Some(&b"one"[..]));
    }

    #[test]
    fn an_empty_map_is_valid() {
        let db = MapDb::decode(encode(Vec::new())).unwrap();
        assert!(db.is_empty());
        assert_eq!(db.get(b"x"), None);
    }

    #[test]
    fn a_damaged_file_is_refused_never_misread() {
        let good = encode(pairs(&[("alice", "root"), ("bob", "alice, carol")]));
        for cut in 0..good.len() {
            assert!(MapDb::decode(good[..cut].to_vec()).is_err(), "cut at {cut}");
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x5a;
            assert!(MapDb::decode(bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn a_berkeley_db_file_is_not_a_map() {
        // a hash database starts with its metadata page, not our magic
        let mut bdb = vec![0u8; 4096];
        bdb[12..16].copy_from_slice(&0x061561u32.to_le_bytes());
        assert!(matches!(MapDb::decode(bdb), Err(MapDbError::NotAMap)));
    }

    #[test]
    fn a_newer_version_is_named() {
        let mut v2 = encode(pairs(&[("k", "v")]));
        v2[11] = 2;
        let n = v2.len() - 4;
        let crc = crc32fast::hash(&v2[..n]).to_be_bytes();
        v2[n..].copy_from_slice(&crc);
        assert!(matches!(MapDb::decode(v2), Err(MapDbError::Version(2))));
    }

    #[test]
    fn names_get_sendmails_suffix() {
        assert_eq!(
            db_path(Path::new("/etc/mail/access")),
            Path::new("/etc/mail/access.db")
        );
        assert_eq!(
            db_path(Path::new("/etc/mail/access.db")),
            Path::new("/etc/mail/access.db")
        );
    }

    #[test]
    fn written_atomically_and_stale_maps_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("access");
        let db = db_path(&text);
        assert!(open_if_current(&db, &text).unwrap().is_none());
        write_atomically(&db, &encode(pairs(&[("k", "v")])), 0o640).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
        let m = open_if_current(&db, &text).unwrap().unwrap();
        assert_eq!(m.get(b"k"), Some(&b"v"[..]));
        // a text source edited after the map was built wins
        fs::write(&text, "k other\n").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&db)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(open_if_current(&db, &text).unwrap().is_none());
        fs::write(&db, b"garbage").unwrap();
        assert!(open_if_current(&db, &dir.path().join("gone")).is_err());
    }
}
