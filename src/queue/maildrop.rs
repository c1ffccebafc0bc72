//! The maildrop: how a command-line submission reaches the queue while a daemon owns it.
//!
//! In: a complete queue [`Message`] from `sendmail -t`, `-bs`, `mail(1)`, cron… Out: a file in
//! `<QueueDirectory>/maildrop/`, which the daemon's pickup moves into the journal store.
//!
//! The store's journal has one writer (the daemon holds its lock), so other processes never
//! write to it: like Postfix's `maildrop` → `pickup`, a submission is written whole to a
//! temporary name (`tmp.<id>`), fsynced, renamed to `<id>` and the directory fsynced — a name
//! without `tmp.` is always a complete, checksummed queue file ([`file::encode`]). The pickup
//! commits it to the store and only then unlinks it; a crash in between makes the next pickup
//! meet a [`QueueError::Duplicate`], which counts as done. A file that does not decode is moved
//! to `maildrop/corrupt/` and logged, never delivered and never silently lost.
//!
//! Any local user may submit: the binary is set-group-id `smmsp` and the maildrop is owned by
//! the queue's owner, group `smmsp`, mode 1730 ([`crate::setgid`]), so a user's
//! process creates its file there with that group as its effective group — for that and
//! nothing else — and cannot list, read or remove anyone else's. Root prepares the directory
//! ([`crate::setgid::prepare_queue`]: the daemon, `-q`, root's own submission). The
//! pickup does not trust a file that root or the queue's owner did not write
//! ([`from_untrusted`]).

use std::fs::{self, DirBuilder, File};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{Message, QueueError, QueueId, Store, file};

/// `<qdir>/maildrop`.
pub fn dir(qdir: &Path) -> PathBuf {
    qdir.join("maildrop")
}

fn ensure_dir(d: &Path) -> Result<(), QueueError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(d)
        .map_err(|e| QueueError::io("create directory", d, e))
}

fn sync_dir(d: &Path) -> Result<(), QueueError> {
    File::open(d)
        .and_then(|f| f.sync_all())
        .map_err(|e| QueueError::io("fsync directory", d, e))
}

/// Writes `msg` durably into the maildrop; returns its id once it is on stable storage.
///
/// The queue may belong to the daemon's `RunAsUser`, who could plant a symlink as
/// `maildrop` (or as the file's name) while root submits. So nothing below the queue
/// directory is resolved by path: `maildrop` is opened with `O_NOFOLLOW|O_DIRECTORY`
/// relative to the queue directory and must belong to root or to the queue's owner, and the
/// file is created (`O_EXCL|O_NOFOLLOW`), renamed and synced relative to that descriptor.
/// Anything else is an error: the submission fails instead of landing elsewhere.
///
/// Root makes the queue and its maildrop first, as the daemon would (group and modes). A
/// set-group-id user's process holds its privileged group for the write only; it may search
/// the write-only maildrop but not read it, so its descriptors are `O_PATH`, its file is
/// 0644 (the daemon reads it whoever it runs as; nobody else can enter the maildrop), and
/// instead of the directory it fsyncs the file again after the rename.
pub fn submit(qdir: &Path, msg: &Message) -> Result<QueueId, QueueError> {
    let root = nix::unistd::geteuid().is_root();
    if root {
        ensure_dir(qdir)?;
        crate::setgid::prepare_queue(qdir).map_err(|e| QueueError::io("prepare", dir(qdir), e))?;
    } else {
        // A queue of one's own (or one anybody may write): its maildrop, 0700, with the
        // user's own rights. In the system's queue this fails, and the maildrop is there.
        let _ = ensure_dir(qdir).and_then(|()| ensure_dir(&dir(qdir)));
    }
    crate::setgid::with_privilege(|| write_file(qdir, msg, root))
}

fn write_file(qdir: &Path, msg: &Message, root: bool) -> Result<QueueId, QueueError> {
    use nix::fcntl::{OFlag, open, openat, renameat};
    use nix::sys::stat::{Mode, fstat};
    let d = dir(qdir);
    // A user may search the maildrop, not read it: O_PATH descriptors serve for *at calls.
    let access = if root { OFlag::O_RDONLY } else { OFlag::O_PATH };
    let qfd = open(
        qdir,
        access | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("open", qdir))?;
    let owner = queue_owner(&qfd);
    let queue_uid = fstat(&qfd).map_err(io("stat", qdir))?.st_uid;
    let mfd = openat(
        &qfd,
        "maildrop",
        access | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => QueueError::io(
            "open",
            &d,
            std::io::Error::other("not a directory (a symlink?); refused"),
        ),
        e => io("open", &d)(e),
    })?;
    let st = fstat(&mfd).map_err(io("stat", &d))?;
    let allowed =
        st.st_uid == 0 || st.st_uid == queue_uid || st.st_uid == nix::unistd::geteuid().as_raw();
    if !allowed {
        return Err(QueueError::io(
            "open",
            &d,
            std::io::Error::other(format!(
                "owned by uid {}, not by the queue's owner or root; refused",
                st.st_uid
            )),
        ));
    }
    let id = msg.envelope.id.clone();
    let tmp_name = format!("tmp.{id}");
    let tmp = d.join(&tmp_name);
    let fd = openat(
        &mfd,
        tmp_name.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(if root { 0o600 } else { 0o644 }),
    )
    .map_err(io("create", &tmp))?;
    let mut f = File::from(fd);
    // Root's file is given to the queue's owner; a user's stays theirs (the sticky maildrop
    // keeps other users from removing it).
    let written = owner
        .map_or(Ok(()), |(uid, gid)| {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
        })
        .and_then(|()| f.write_all(&file::encode(msg)))
        .and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = nix::unistd::unlinkat(
            &mfd,
            tmp_name.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        return Err(QueueError::io("write", &tmp, e));
    }
    renameat(&mfd, tmp_name.as_str(), &mfd, id.as_str()).map_err(io("rename", &tmp))?;
    if root {
        nix::unistd::fsync(&mfd).map_err(io("fsync directory", &d))?;
    } else {
        // The rename changed the file's inode (ctime), so a second fsync of the file commits
        // the journal transaction that holds the rename on ext4 and XFS; the pickup syncs
        // the directory.
        f.sync_all()
            .map_err(|e| QueueError::io("fsync", d.join(id.as_str()), e))?;
    }
    Ok(id)
}

/// When root submits into a queue that belongs to another user (the daemon's `RunAsUser`,
/// see [`crate::privsep`]): that user, to whom the maildrop and its files are given so that
/// the daemon can pick them up.
fn queue_owner(qfd: &std::os::fd::OwnedFd) -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let st = nix::sys::stat::fstat(qfd).ok()?;
    (st.st_uid != 0).then_some((st.st_uid, st.st_gid))
}

/// The complete messages waiting in the maildrop (for `mailq`), and the names of files that
/// do not decode.
pub fn waiting(qdir: &Path) -> (Vec<Message>, Vec<PathBuf>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for path in complete_files(&dir(qdir)) {
        match read_no_follow(&path)
            .map_err(|e| QueueError::io("read", &path, e))
            .and_then(|(b, _)| file::decode(&b))
        {
            Ok(m) => ok.push(m),
            Err(_) => bad.push(path),
        }
    }
    (ok, bad)
}

/// A maildrop file's bytes and owner, for root's `mailq` and the pickup in a directory
/// users and the daemon's user write: never through a symlink, never blocking on a FIFO,
/// regular files only, at most a message's worth of bytes.
fn read_no_follow(path: &Path) -> std::io::Result<(Vec<u8>, u32)> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .and_then(crate::log::regular_only)?;
    let owner = f.metadata()?.uid();
    let mut bytes = Vec::new();
    f.take(super::store::MAX_MESSAGE_BYTES as u64 + 4096)
        .read_to_end(&mut bytes)?;
    Ok((bytes, owner))
}

/// A user's submission as the queue takes it: the sender, the recipients' addresses and DSN
/// parameters, the message and its ESMTP parameters; nothing that only the daemon or root
/// may record — an alias or `.forward` expansion (which names a program or file and whose
/// authority it runs under), delivery state, the origin of a notice, the client's daemon,
/// address or authentication.
pub fn from_untrusted(mut m: Message) -> Message {
    let env = &mut m.envelope;
    env.recipients = env
        .recipients
        .iter()
        .map(|r| {
            let mut clean = super::Recipient::new(r.address.clone());
            clean.notify = r.notify;
            clean.orcpt = r.orcpt.clone();
            clean
        })
        .collect();
    env.notices = file::Notices::default();
    let protocol = match env.client.protocol {
        Some(p @ (file::Protocol::Smtp | file::Protocol::Esmtp)) => Some(p),
        Some(_) => Some(file::Protocol::Esmtp),
        None => None,
    };
    env.client = file::ClientInfo {
        daemon: None,
        name: Some("localhost".into()),
        addr: None,
        protocol,
    };
    m
}

fn complete_files(d: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(d) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with("tmp."))
        })
        .collect();
    files.sort();
    files
}

/// What one pickup pass did to one file.
#[derive(Debug)]
pub enum Picked {
    /// Committed to the store (the message, for the `from=` log line).
    Queued(Box<Message>),
    /// Already in the store (a crash between commit and unlink); the file was removed.
    AlreadyQueued(QueueId),
    /// Did not decode; moved to `maildrop/corrupt/`.
    Corrupt { path: PathBuf, error: QueueError },
    /// Could not be committed now (left in place for the next pass).
    Failed { path: PathBuf, error: QueueError },
}

/// Moves every complete maildrop file into `store`.
pub async fn pickup(qdir: &Path, store: &Store) -> Vec<Picked> {
    use std::os::unix::fs::MetadataExt;
    let d = dir(qdir);
    let trusted_owner = fs::metadata(qdir).map(|m| m.uid()).ok();
    let mut out = Vec::new();
    for path in complete_files(&d) {
        let msg = match read_no_follow(&path)
            .map_err(|e| QueueError::io("read", &path, e))
            .and_then(|(b, owner)| {
                let m = file::decode(&b)?;
                // Written by root or the queue's owner: as it is. By anyone else (a local
                // user through the set-group-id binary, who could write any bytes): only
                // what the command line lets a user say.
                Ok(if owner == 0 || Some(owner) == trusted_owner {
                    m
                } else {
                    from_untrusted(m)
                })
            }) {
            Ok(m) => m,
            Err(error) => {
                let corrupt = d.join("corrupt");
                let moved = ensure_dir(&corrupt).and_then(|()| {
                    let to = corrupt.join(path.file_name().unwrap_or_default());
                    fs::rename(&path, &to).map_err(|e| QueueError::io("rename", &path, e))?;
                    Ok(to)
                });
                out.push(Picked::Corrupt {
                    path: moved.unwrap_or(path),
                    error,
                });
                continue;
            }
        };
        let id = msg.envelope.id.clone();
        match store.commit(msg.clone()).await {
            Ok(_) => {
                let _ = fs::remove_file(&path);
                out.push(Picked::Queued(Box::new(msg)));
            }
            Err(QueueError::Duplicate(_)) => {
                let _ = fs::remove_file(&path);
                out.push(Picked::AlreadyQueued(id));
            }
            Err(error) => out.push(Picked::Failed { path, error }),
        }
    }
    if !out.is_empty() {
        let _ = sync_dir(&d);
    }
    out
}

/// `|e| QueueError::io(what, p, e)` for a nix error.
fn io<'a>(what: &'static str, p: &'a Path) -> impl Fn(nix::errno::Errno) -> QueueError + 'a {
    move |e| QueueError::io(what, p, e.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Envelope, Recipient};

    fn msg(id: &str) -> Message {
        let mut env = Envelope::new(QueueId::new(id).unwrap(), "root".to_string());
        env.recipients.push(Recipient::new("alice".to_string()));
        Message {
            envelope: env,
            body: b"Subject: x\n\nhi\n".to_vec(),
        }
    }

    #[test]
    fn root_never_submits_through_a_maildrop_symlink_planted_by_the_queues_owner() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (a queue of another user)");
            return;
        }
        let q = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(q.path(), Some(65534), Some(65534)).unwrap();
        let root_only = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(root_only.path(), dir(q.path())).unwrap();
        let e = submit(q.path(), &msg("6AOJ00aa000002")).unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
        assert_eq!(fs::read_dir(root_only.path()).unwrap().count(), 0);
        // a maildrop directory of someone else: refused too
        fs::remove_file(dir(q.path())).unwrap();
        fs::create_dir(dir(q.path())).unwrap();
        std::os::unix::fs::chown(dir(q.path()), Some(4321), None).unwrap();
        let e = submit(q.path(), &msg("6AOJ00aa000003")).unwrap_err();
        assert!(e.to_string().contains("owned by uid 4321"), "{e}");
        // the queue owner's own maildrop: written, and the file is theirs
        std::os::unix::fs::chown(dir(q.path()), Some(65534), None).unwrap();
        submit(q.path(), &msg("6AOJ00aa000004")).unwrap();
        let m = fs::metadata(dir(q.path()).join("6AOJ00aa000004")).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&m), 65534);
    }

    #[tokio::test]
    async fn a_submission_waits_then_is_picked_up_once() {
        let q = tempfile::tempdir().unwrap();
        submit(q.path(), &msg("6AOJ00aa000001")).unwrap();
        let (waiting_now, bad) = waiting(q.path());
        assert_eq!((waiting_now.len(), bad.len()), (1, 0));
        let store = Store::open(q.path()).unwrap();
        let picked = pickup(q.path(), &store).await;
        assert!(
            matches!(picked.as_slice(), [Picked::Queued(_)]),
            "{picked:?}"
        );
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(waiting(q.path()).0.is_empty());
        // The same file again (crash between commit and unlink) is not queued twice.
        submit(q.path(), &msg("6AOJ00aa000001")).unwrap();
        let picked = pickup(q.path(), &store).await;
        assert!(
            matches!(picked.as_slice(), [Picked::AlreadyQueued(_)]),
            "{picked:?}"
        );
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_users_file_keeps_only_what_a_user_may_say() {
        use crate::queue::file::{Expanded, Origin, Protocol};
        if !nix::unistd::geteuid().is_root() {
            return; // needs to give the file to another user
        }
        let q = tempfile::tempdir().unwrap();
        let mut forged = msg("6AOJ00aa000002");
        forged
            .envelope
            .recipients
            .push(Recipient::new("|/bin/sh -c 'id > /tmp/x'"));
        forged.envelope.recipients[1].expanded = Some(Expanded {
            parent: "root".into(),
            owner: Some("root".into()),
        });
        forged.envelope.recipients[0].state = crate::queue::DeliveryState::Done;
        forged.envelope.notices.origin = Origin::Postmaster;
        forged.envelope.client.protocol = Some(Protocol::Esmtpsa);
        forged.envelope.client.daemon = Some("MSA".into());
        submit(q.path(), &forged).unwrap();
        let f = dir(q.path()).join("6AOJ00aa000002");
        std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
        let store = Store::open(q.path()).unwrap();
        let picked = pickup(q.path(), &store).await;
        let [Picked::Queued(m)] = picked.as_slice() else {
            panic!("{picked:?}")
        };
        let env = &m.envelope;
        assert!(
            env.recipients
                .iter()
                .all(|r| r.expanded.is_none() && r.state == crate::queue::DeliveryState::Pending)
        );
        assert_eq!(env.notices.origin, Origin::Received);
        assert_eq!(env.client.protocol, Some(Protocol::Esmtp));
        assert_eq!(env.client.daemon, None);
        assert_eq!(env.sender, "root");
    }

    #[tokio::test]
    async fn a_symbolic_link_in_the_maildrop_is_not_followed() {
        let q = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        submit(elsewhere.path(), &msg("6AOJ00aa000003")).unwrap();
        let d = dir(q.path());
        fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(
            dir(elsewhere.path()).join("6AOJ00aa000003"),
            d.join("6AOJ00aa000003"),
        )
        .unwrap();
        let store = Store::open(q.path()).unwrap();
        let picked = pickup(q.path(), &store).await;
        assert!(picked.is_empty(), "{picked:?}");
        assert!(store.list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn temporary_and_corrupt_files() {
        let q = tempfile::tempdir().unwrap();
        let d = dir(q.path());
        fs::create_dir_all(&d).unwrap();
        // A half-written submission keeps its tmp. name and is ignored.
        fs::write(d.join("tmp.X"), b"partial").unwrap();
        fs::write(d.join("BAD"), b"not a queue file").unwrap();
        let store = Store::open(q.path()).unwrap();
        let picked = pickup(q.path(), &store).await;
        assert!(
            matches!(picked.as_slice(), [Picked::Corrupt { .. }]),
            "{picked:?}"
        );
        assert!(d.join("corrupt/BAD").exists());
        assert!(d.join("tmp.X").exists());
        assert!(store.list().unwrap().is_empty());
    }
}
