//! sendmail's safe-file rules for `.forward` and `:include:` files, and the
//! `DontBlameSendmail` words that relax them.
//!
//! In: a path, whose it should be (the `.forward`'s user; any owner for an include), the
//! kind of file, and the [`DontBlame`] words of the configuration. Out: the file's text and
//! owner, or why it is unsafe, in sendmail's words (`sm_errstring`): `World writable
//! directory`, `Group writable directory`, `World writable file`, `Group writable file`,
//! `Regular files only`.
//!
//! With `DontBlameSendmail=safe` (the default), sendmail 8.17 (`recipient.c` `include`,
//! `safefile.c` `safedirpath`/`safefile`) refuses a file when
//! * a directory on its path (from `/` to its parent, through symlinks to where they lead)
//!   is writable by group or others — `GroupWritableDirPathSafe` allows group-writable
//!   ones, `ForwardFileInGroupWritableDirPath` / `IncludeFileInGroupWritableDirPath` for
//!   one kind, `ForwardFileInUnsafeDirPath` / `IncludeFileInUnsafeDirPath` skip the check;
//! * the file is group- or world-writable — `GroupWritableForwardFile`,
//!   `WorldWritableForwardFile`, `GroupWritableIncludeFile`, `WorldWritableIncludeFile`;
//! * it is not a regular file, or (`.forward`) belongs to neither the user nor root.
//!
//! One deliberate difference: a sticky directory (`/tmp`, mode 1777) counts as safe, as with
//! sendmail's `TrustStickyBit`: Linux keeps others from renaming or removing entries in it,
//! which is what the check protects against; sendmail's default distrusts it for systems
//! that did not. The checks are made on the open descriptor (`fstat`), so the file read is
//! the file checked.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use super::MAX_INCLUDE_BYTES;
use super::expand::{ReadSafeError, SafeFile};
use crate::asuser::Who;

/// Which kind of file is being read (the `DontBlameSendmail` words differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Forward,
    Include,
}

/// The `DontBlameSendmail` words that matter here; all false is sendmail's `safe`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DontBlame {
    pub group_writable_dir_path_safe: bool,
    pub forward_file_in_unsafe_dir_path: bool,
    pub include_file_in_unsafe_dir_path: bool,
    pub forward_file_in_group_writable_dir_path: bool,
    pub include_file_in_group_writable_dir_path: bool,
    pub group_writable_forward_file: bool,
    pub world_writable_forward_file: bool,
    pub group_writable_include_file: bool,
    pub world_writable_include_file: bool,
}

impl DontBlame {
    /// From the option's words (case-insensitive; unknown words are ignored here).
    pub fn from_words<S: AsRef<str>>(words: &[S]) -> DontBlame {
        let mut d = DontBlame::default();
        for w in words {
            let flag = match w.as_ref().to_ascii_lowercase().as_str() {
                "groupwritabledirpathsafe" => &mut d.group_writable_dir_path_safe,
                "forwardfileinunsafedirpath" => &mut d.forward_file_in_unsafe_dir_path,
                "includefileinunsafedirpath" => &mut d.include_file_in_unsafe_dir_path,
                "forwardfileingroupwritabledirpath" => {
                    &mut d.forward_file_in_group_writable_dir_path
                }
                "includefileingroupwritabledirpath" => {
                    &mut d.include_file_in_group_writable_dir_path
                }
                "groupwritableforwardfile" | "groupwritableforwardfilesafe" => {
                    &mut d.group_writable_forward_file
                }
                "worldwritableforwardfile" => &mut d.world_writable_forward_file,
                "groupwritableincludefile" | "groupwritableincludefilesafe" => {
                    &mut d.group_writable_include_file
                }
                "worldwritableincludefile" => &mut d.world_writable_include_file,
                _ => continue,
            };
            *flag = true;
        }
        d
    }

    /// (skip the directory check, group-writable directories are fine) for `kind`.
    fn dir_rules(&self, kind: Kind) -> (bool, bool) {
        match kind {
            Kind::Forward => (
                self.forward_file_in_unsafe_dir_path,
                self.group_writable_dir_path_safe || self.forward_file_in_group_writable_dir_path,
            ),
            Kind::Include => (
                self.include_file_in_unsafe_dir_path,
                self.group_writable_dir_path_safe || self.include_file_in_group_writable_dir_path,
            ),
        }
    }

    /// (group-writable, world-writable) files are fine for `kind`.
    fn file_rules(&self, kind: Kind) -> (bool, bool) {
        match kind {
            Kind::Forward => (
                self.group_writable_forward_file,
                self.world_writable_forward_file,
            ),
            Kind::Include => (
                self.group_writable_include_file,
                self.world_writable_include_file,
            ),
        }
    }
}

/// Reads `path` if it passes the checks; `owner`: the uid it must belong to (or root);
/// `reader`: whose rights it is opened with (sendmail's `include()` reads as the
/// `.forward`'s user, the include's controlling user or `DefaultUser`), see
/// [`crate::asuser`]: a symlink to a file that user may not read gives `Permission denied`.
pub fn read(
    path: &Path,
    owner: Option<u32>,
    kind: Kind,
    blame: &DontBlame,
    reader: Option<&Who>,
) -> Result<SafeFile, ReadSafeError> {
    let mut opts = File::options();
    opts.read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY);
    let opened = match reader {
        Some(who) => crate::asuser::open_as(path, &opts, who),
        None => opts.open(path),
    };
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadSafeError::Missing),
        Err(e) => return Err(ReadSafeError::io(&e)),
    };
    let meta = file.metadata().map_err(|e| ReadSafeError::io(&e))?;
    if !meta.is_file() {
        return Err(unsafe_("Regular files only"));
    }
    let (skip_dirs, group_dirs_ok) = blame.dir_rules(kind);
    if !skip_dirs && let Some(parent) = path.parent() {
        check_dir_path(parent, group_dirs_ok)?;
    }
    let (group_ok, world_ok) = blame.file_rules(kind);
    if meta.mode() & 0o002 != 0 && !world_ok {
        return Err(unsafe_("World writable file"));
    }
    if meta.mode() & 0o020 != 0 && !group_ok {
        return Err(unsafe_("Group writable file"));
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
        return Err(unsafe_("file too large"));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_INCLUDE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| ReadSafeError::io(&e))?;
    Ok(SafeFile {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

fn unsafe_(why: &str) -> ReadSafeError {
    ReadSafeError::Unsafe(why.to_string())
}

/// sendmail's `safedirpath`: every directory from `/` down to `dir`, as written and as the
/// symlinks on the way resolve, must be writable by its owner only (a sticky directory
/// passes; group-writable ones when `group_ok`).
pub fn check_dir_path(dir: &Path, group_ok: bool) -> Result<(), ReadSafeError> {
    let mut paths = vec![dir.to_path_buf()];
    if let Ok(real) = fs::canonicalize(dir)
        && real != dir
    {
        paths.push(real);
    }
    for p in paths {
        for prefix in prefixes(&p) {
            let meta = fs::metadata(&prefix).map_err(|e| ReadSafeError::io(&e))?;
            let mode = meta.mode();
            if mode & 0o1000 != 0 {
                continue; // sticky: see the module doc
            }
            if mode & 0o002 != 0 {
                return Err(unsafe_("World writable directory"));
            }
            if mode & 0o020 != 0 && !group_ok {
                return Err(unsafe_("Group writable directory"));
            }
        }
    }
    Ok(())
}

/// `/`, `/a`, `/a/b` … for `/a/b` (a relative path is taken from the current directory).
fn prefixes(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => continue,
            c => cur.push(c.as_os_str()),
        }
        out.push(cur.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// `<tmp>/home/jo/.forward` (0644, in 0755 directories) and its owner.
    fn home() -> (tempfile::TempDir, PathBuf, u32) {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let jo = dir.path().join("home/jo");
        fs::create_dir_all(&jo).unwrap();
        chmod(&dir.path().join("home"), 0o755);
        chmod(&jo, 0o755);
        let fwd = jo.join(".forward");
        fs::write(&fwd, "jo@elsewhere.test\n").unwrap();
        chmod(&fwd, 0o644);
        let uid = fs::metadata(&fwd).unwrap().uid();
        (dir, fwd, uid)
    }

    fn refusal(r: Result<SafeFile, ReadSafeError>) -> String {
        match r {
            Err(ReadSafeError::Unsafe(why)) => why,
            other => panic!("not refused as unsafe: {other:?}"),
        }
    }

    const SAFE: DontBlame = DontBlame {
        group_writable_dir_path_safe: false,
        forward_file_in_unsafe_dir_path: false,
        include_file_in_unsafe_dir_path: false,
        forward_file_in_group_writable_dir_path: false,
        include_file_in_group_writable_dir_path: false,
        group_writable_forward_file: false,
        world_writable_forward_file: false,
        group_writable_include_file: false,
        world_writable_include_file: false,
    };

    #[test]
    fn a_private_forward_in_private_directories_is_read() {
        let (_d, fwd, uid) = home();
        let f = read(&fwd, Some(uid), Kind::Forward, &SAFE, None).unwrap();
        assert_eq!(f.text, "jo@elsewhere.test\n");
        assert_eq!(f.uid, uid);
    }

    #[test]
    fn a_group_writable_home_is_refused_unless_the_words_allow_it() {
        let (_d, fwd, uid) = home();
        chmod(fwd.parent().unwrap(), 0o775);
        let why = refusal(read(&fwd, Some(uid), Kind::Forward, &SAFE, None));
        assert_eq!(why, "Group writable directory");
        for words in [
            ["GroupWritableDirPathSafe"],
            ["ForwardFileInGroupWritableDirPath"],
            ["ForwardFileInUnsafeDirPath"],
        ] {
            let blame = DontBlame::from_words(&words);
            assert!(
                read(&fwd, Some(uid), Kind::Forward, &blame, None).is_ok(),
                "{words:?}"
            );
        }
        // the include words do not cover .forward files
        let blame = DontBlame::from_words(&["IncludeFileInGroupWritableDirPath"]);
        assert!(read(&fwd, Some(uid), Kind::Forward, &blame, None).is_err());
    }

    #[test]
    fn a_world_writable_directory_anywhere_on_the_path_is_refused() {
        let (d, fwd, uid) = home();
        chmod(&d.path().join("home"), 0o777);
        let why = refusal(read(&fwd, Some(uid), Kind::Forward, &SAFE, None));
        assert_eq!(why, "World writable directory");
        // GroupWritableDirPathSafe does not cover world-writable ones
        let blame = DontBlame::from_words(&["GroupWritableDirPathSafe"]);
        assert!(read(&fwd, Some(uid), Kind::Forward, &blame, None).is_err());
        // a sticky world-writable directory (like /tmp) is trusted
        chmod(&d.path().join("home"), 0o1777);
        assert!(read(&fwd, Some(uid), Kind::Forward, &SAFE, None).is_ok());
    }

    #[test]
    fn a_symlinked_home_is_checked_where_it_leads() {
        let (d, fwd, uid) = home();
        let open = d.path().join("open");
        fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        let real = open.join("jo");
        fs::rename(fwd.parent().unwrap(), &real).unwrap();
        std::os::unix::fs::symlink(&real, fwd.parent().unwrap()).unwrap();
        let why = refusal(read(&fwd, Some(uid), Kind::Forward, &SAFE, None));
        assert_eq!(why, "World writable directory");
    }

    #[test]
    fn writable_files_are_refused_unless_the_words_allow_them() {
        let (_d, fwd, uid) = home();
        chmod(&fwd, 0o664);
        assert_eq!(
            refusal(read(&fwd, Some(uid), Kind::Forward, &SAFE, None)),
            "Group writable file"
        );
        let blame = DontBlame::from_words(&["groupwritableforwardfile"]);
        assert!(read(&fwd, Some(uid), Kind::Forward, &blame, None).is_ok());
        chmod(&fwd, 0o646);
        assert_eq!(
            refusal(read(&fwd, Some(uid), Kind::Forward, &SAFE, None)),
            "World writable file"
        );
        let blame = DontBlame::from_words(&["WorldWritableForwardFile"]);
        assert!(read(&fwd, Some(uid), Kind::Forward, &blame, None).is_ok());
        // the include words are for includes
        let blame = DontBlame::from_words(&["WorldWritableIncludeFile"]);
        assert!(read(&fwd, None, Kind::Include, &blame, None).is_ok());
        assert!(read(&fwd, Some(uid), Kind::Forward, &blame, None).is_err());
    }

    #[test]
    fn only_regular_files_of_the_user_or_root_are_read() {
        let (_d, fwd, uid) = home();
        let dir_fwd = fwd.parent().unwrap().join("dir");
        fs::create_dir(&dir_fwd).unwrap();
        assert_eq!(
            refusal(read(&dir_fwd, Some(uid), Kind::Forward, &SAFE, None)),
            "Regular files only"
        );
        let fifo = fwd.parent().unwrap().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        assert_eq!(
            refusal(read(&fifo, Some(uid), Kind::Forward, &SAFE, None)),
            "Regular files only"
        );
        if uid != 0 {
            assert!(read(&fwd, Some(uid + 1), Kind::Forward, &SAFE, None).is_err());
        } else {
            // root's files are trusted for anyone
            assert!(read(&fwd, Some(12345), Kind::Forward, &SAFE, None).is_ok());
            std::os::unix::fs::chown(&fwd, Some(54321), None).unwrap();
            let why = refusal(read(&fwd, Some(12345), Kind::Forward, &SAFE, None));
            assert!(why.contains("owned by uid 54321"), "{why}");
        }
    }

    #[test]
    fn expansion_skips_an_unsafe_forward_unless_the_configuration_blames_not() {
        use crate::aliases::{AliasTable, Expander, LocalUser, Target};
        let (_d, fwd, uid) = home();
        chmod(fwd.parent().unwrap(), 0o775);
        let home_dir = fwd.parent().unwrap().to_path_buf();
        let users = move |n: &str| {
            (n == "jo").then(|| LocalUser {
                name: "jo".into(),
                uid,
                gid: uid,
                home: home_dir.clone(),
            })
        };
        let t = AliasTable::default();
        let cfg = crate::config::Config::from_str("t.cf", "Djmx.example.test\n", &[]).unwrap();
        let mut e = Expander::from_config(&t, &cfg);
        e.users = &users;
        assert_eq!(e.expand("jo"), vec![Target::User("jo".into())]);
        let cfg = crate::config::Config::from_str(
            "t.cf",
            "Djmx.example.test\nO DontBlameSendmail=forwardfileingroupwritabledirpath\n",
            &[],
        )
        .unwrap();
        let mut e = Expander::from_config(&t, &cfg);
        e.users = &users;
        assert_eq!(
            e.expand("jo"),
            vec![Target::Remote("jo@elsewhere.test".into())]
        );
    }
}
