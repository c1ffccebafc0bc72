//! Opening a file with another user's rights, the way sendmail reads a `.forward` or an
//! `:include:` file and writes an alias's `/file` after `seteuid` to their owner.
//!
//! In: a path, [`OpenOptions`], and [`Who`] (uid, gid, supplementary groups). Out: the open
//! [`File`] — or the error that user would get (`Permission denied` for `/etc/shadow`) —
//! usable by the caller as any other descriptor (rights are checked when a file is opened,
//! so reading and appending through it later need nothing more). A file it creates belongs
//! to that user.
//!
//! How: when the process is root and `who` is not, the open runs on a short-lived thread of
//! its own that first takes that user's groups (the `setgroups` system call, which on Linux
//! changes the calling thread only), group and filesystem ids (`setfsgid`, `setfsuid`:
//! also per thread; changing the filesystem uid from 0 drops the thread's
//! `CAP_DAC_OVERRIDE`/`CAP_DAC_READ_SEARCH`/`CAP_FOWNER`), so the kernel makes every
//! permission check of the path walk and of the open as it would for that user, symlinks
//! included. The thread then ends: its credentials go with it, no other thread ever has
//! them, and no fork of a multi-threaded process is needed. Any other case (not root, or
//! `who` is root) opens directly.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use nix::unistd::{Gid, Uid};

/// Whose rights to open with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (sendmail's `initgroups`); the primary group is added.
    pub groups: Vec<u32>,
}

impl Who {
    /// `uid`/`gid` with the groups the group database gives `name` (just `gid` when the
    /// name is unknown there).
    pub fn user(name: &str, uid: u32, gid: u32) -> Who {
        let groups = std::ffi::CString::new(name)
            .ok()
            .and_then(|n| nix::unistd::getgrouplist(&n, Gid::from_raw(gid)).ok())
            .map(|g| g.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_else(|| vec![gid]);
        Who { uid, gid, groups }
    }

    /// The account with this uid (its groups from the databases), or just `uid`/`gid`.
    pub fn uid(uid: u32, gid: u32) -> Who {
        match nix::unistd::User::from_uid(Uid::from_raw(uid)) {
            Ok(Some(u)) => Who::user(&u.name, uid, gid),
            _ => Who {
                uid,
                gid,
                groups: vec![gid],
            },
        }
    }
}

/// Opens `path` with `opts` as `who` (see the module doc).
pub fn open_as(path: &Path, opts: &OpenOptions, who: &Who) -> io::Result<File> {
    if who.uid == 0 || !nix::unistd::geteuid().is_root() {
        return opts.open(path);
    }
    let (path, opts, who) = (path.to_path_buf(), opts.clone(), who.clone());
    std::thread::Builder::new()
        .name("open-as-user".into())
        .spawn(move || {
            become_on_this_thread(&who)?;
            opts.open(&path)
        })?
        .join()
        .map_err(|_| io::Error::other("open-as-user thread panicked"))?
}

/// Gives the calling thread `who`'s groups and filesystem ids; the thread must end after.
fn become_on_this_thread(who: &Who) -> io::Result<()> {
    let mut groups = who.groups.clone();
    if !groups.contains(&who.gid) {
        groups.push(who.gid);
    }
    // SAFETY: the raw system call (not glibc's setgroups, which changes every thread of
    // the process) reads `groups.len()` gid_t values from a live, correctly sized buffer;
    // it changes only this thread's credentials.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_setgroups,
            groups.len() as nix::libc::size_t,
            groups.as_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // setfsuid/setfsgid return the previous id; a second call shows whether it took.
    nix::unistd::setfsgid(Gid::from_raw(who.gid));
    nix::unistd::setfsuid(Uid::from_raw(who.uid));
    let took = nix::unistd::setfsgid(Gid::from_raw(who.gid)).as_raw() == who.gid
        && nix::unistd::setfsuid(Uid::from_raw(who.uid)).as_raw() == who.uid;
    if took {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(nix::libc::EPERM))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn root() -> bool {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to change uid");
            return false;
        }
        true
    }

    #[test]
    fn a_root_only_file_is_refused_to_a_user_and_what_the_user_creates_is_theirs() {
        if !root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = d.path().join("secret");
        std::fs::write(&secret, "root only\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let nobody = Who::uid(65534, 65534);
        let read = OpenOptions::new().read(true).clone();
        for p in [&secret, &link] {
            let e = open_as(p, &read, &nobody).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(nix::libc::EACCES), "{p:?}");
        }
        // root's own rights are untouched, on this thread and after
        assert!(open_as(&secret, &read, &Who::uid(0, 0)).is_ok());
        assert!(File::open(&secret).is_ok());
        // in a directory nobody may write: no file; in a sticky 1777 one: theirs
        let create = OpenOptions::new().append(true).create(true).clone();
        let e = open_as(&d.path().join("new"), &create, &nobody).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::EACCES));
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let f = open_as(&open.join("new"), &create, &nobody).unwrap();
        assert_eq!(f.metadata().unwrap().uid(), 65534);
    }
}
