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
//! the queue's owner, group `smmsp`, mode 1730 ([`crate::privsep::setgid`]), so a user's
//! process creates its file there with that group as its effective group — for that and
//! nothing else — and cannot list, read or remove anyone else's. Root prepares the directory
//! ([`crate::privsep::setgid::prepare_queue`]: the daemon, `-q`, root's own submission).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
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
/// A set-group-id process holds its privileged group for this write only.
pub fn submit(qdir: &Path, msg: &Message) -> Result<QueueId, QueueError> {
    let d = dir(qdir);
    let root = nix::unistd::geteuid().is_root();
    if root {
        // Root creates the queue and its maildrop as the daemon would (group and modes).
        ensure_dir(qdir)?;
        crate::privsep::setgid::prepare_queue(qdir)
            .map_err(|e| QueueError::io("prepare", &d, e))?;
    }
    let owner = queue_owner(qdir);
    crate::privsep::setgid::with_privilege(|| write_file(&d, msg, owner, root))
}

fn write_file(
    d: &Path,
    msg: &Message,
    owner: Option<(u32, u32)>,
    root: bool,
) -> Result<QueueId, QueueError> {
    let id = msg.envelope.id.clone();
    let tmp = d.join(format!("tmp.{id}"));
    let done = d.join(id.as_str());
    // Root's file is given to the queue's owner; a user's stays theirs (the sticky maildrop
    // keeps other users from removing it) and is readable by the daemon, whoever it runs as:
    // nobody else can enter the maildrop.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if root { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(|e| QueueError::io("create", &tmp, e))?;
    let written = owner
        .map_or(Ok(()), |(uid, gid)| {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
        })
        .and_then(|()| f.write_all(&file::encode(msg)))
        .and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(QueueError::io("write", &tmp, e));
    }
    fs::rename(&tmp, &done).map_err(|e| QueueError::io("rename", &tmp, e))?;
    if root {
        sync_dir(d)?;
    } else {
        // A user cannot open the write-only maildrop to fsync it. The rename changed the
        // file's inode (ctime), so a second fsync of the file commits the journal
        // transaction that holds the rename on ext4 and XFS; the pickup syncs the directory.
        f.sync_all()
            .map_err(|e| QueueError::io("fsync", &done, e))?;
    }
    Ok(id)
}

/// When root submits into a queue that belongs to another user (the daemon's `RunAsUser`,
/// see [`crate::privsep`]): that user, to whom the maildrop and its files are given so that
/// the daemon can pick them up.
fn queue_owner(qdir: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let m = fs::symlink_metadata(qdir).ok()?;
    (m.is_dir() && m.uid() != 0).then(|| (m.uid(), m.gid()))
}

/// The complete messages waiting in the maildrop (for `mailq`), and the names of files that
/// do not decode.
pub fn waiting(qdir: &Path) -> (Vec<Message>, Vec<PathBuf>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for path in complete_files(&dir(qdir)) {
        match fs::read(&path)
            .map_err(|e| QueueError::io("read", &path, e))
            .and_then(|b| file::decode(&b))
        {
            Ok(m) => ok.push(m),
            Err(_) => bad.push(path),
        }
    }
    (ok, bad)
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

/// A maildrop file's bytes and owner, never through a symbolic link (a user may put one
/// in the maildrop; its target is not read).
fn read_nofollow(path: &Path) -> Result<(Vec<u8>, u32), QueueError> {
    use std::io::Read;
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| QueueError::io("open", path, e))?;
    let meta = f.metadata().map_err(|e| QueueError::io("stat", path, e))?;
    if !meta.is_file() {
        return Err(QueueError::io(
            "open",
            path,
            std::io::Error::other("not a regular file"),
        ));
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|e| QueueError::io("read", path, e))?;
    Ok((bytes, meta.uid()))
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
    let d = dir(qdir);
    let mut out = Vec::new();
    let trusted_owner = fs::symlink_metadata(qdir).map(|m| m.uid()).ok();
    for path in complete_files(&d) {
        let msg = match read_nofollow(&path).and_then(|(b, owner)| {
            let m = file::decode(&b)?;
            // Written by root or the queue's owner: as it is. By anyone else (a local user
            // through the set-group-id binary, who could write any bytes): only what the
            // command line lets a user say.
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
