//! The queue directory: durable commit with group fsync, listing, update, removal, and
//! crash recovery.
//!
//! In: [`NewMessage`]s to commit, recipient states to record, ids to remove. Out: a
//! [`QueueId`] only once the message **and** its directory entry are on stable storage,
//! listings ([`QueueEntrySummary`]), whole messages, and a [`RecoveryReport`] from
//! [`Store::open`].
//!
//! # Layout
//!
//! ```text
//! <dir>/            mode 0700
//!   lock            flock(2)ed by the one process that writes the queue
//!   queue/<id>      queue files (format: super::file), mode 0600
//!   tmp/            rewrites in progress (update); anything here after a crash is garbage
//!   corrupt/<id>    files found in queue/ at open that are damaged (not just cut short)
//! ```
//!
//! # Group commit (why this design)
//!
//! Measured on this machine (`shared/bench/results/fsync-run1.txt`): one writer doing
//! create+write+fsync+rename+fsync(dir) gets ≈1,500/s, but 16 writers fsyncing their own
//! new files in parallel reach ≈14,700/s, because ext4 merges concurrent fsyncs into one
//! journal commit. The classic "write `tmp/`, fsync, rename, fsync(dir)" costs two journal
//! commits one after the other per message (the file's, then the rename's). The END record
//! makes the rename unnecessary for *new* messages: a reader can tell a complete file from a
//! cut-short one by itself (Postfix marks its queue files complete the same way). So:
//!
//! 1. **write** — on a blocking-pool thread (at most [`MAX_PARALLEL_WRITES`] at once):
//!    create `queue/<id>` with `O_EXCL` (a duplicate id fails, nothing is overwritten),
//!    write the encoded file, `fsync` it. Many sessions do this at the same time, so their
//!    fsyncs share journal commits; on ext4 that commit also carries the new directory
//!    entry.
//! 2. **directory** — the commit then asks the single committer thread for an fsync of
//!    `queue/` (what POSIX needs for the name to be durable). The committer takes
//!    *everything* that queued up while it was busy and fsyncs the directory **once for the
//!    whole batch**, then wakes every waiting commit. Only then does `commit` return `Ok`.
//!
//! Until then the id is "in flight": [`Store::list`] and [`Store::load`] do not show it,
//! so the runner never delivers a message before its `250`. After a crash, a file cut short
//! in `queue/` (never acknowledged: its fsync had not returned) fails to decode with
//! [`QueueError::Truncated`] and [`Store::open`] removes it; a file that fails to decode
//! in any other way is moved to `corrupt/` rather than deleted.
//!
//! `update` must replace a file atomically, so it writes `tmp/<id>.<n>`, fsyncs it, and the
//! committer renames it over `queue/<id>` inside a batch (sharing the directory fsync);
//! `remove` is an unlink in a batch.
//!
//! A journal file (append + one fdatasync per batch) would save the per-file fsync but
//! needs compaction, its own index and a recovery scan; one file per message keeps the
//! queue's state visible on disk (like Postfix and sendmail), makes `remove` an unlink and
//! lets the runner rewrite one message without touching the others.
//!
//! Listing and loading are synchronous (plain file reads); call them from
//! `spawn_blocking` in async code. One store per queue directory per process: the lock
//! file keeps a second writer out; `mailq` uses [`Store::open_read_only`].

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;

use nix::fcntl::{Flock, FlockArg, RenameFlags, renameat2};
use nix::unistd::{UnlinkatFlags, unlinkat};
use tokio::sync::{Semaphore, oneshot, watch};

use super::file::{self, DeliveryState, Envelope, Message, NewMessage, QueuedMessage, Recipient};
use super::{QueueError, QueueId};

/// Most queue files written (and fsynced) at the same time.
pub const MAX_PARALLEL_WRITES: usize = 64;
/// Most operations the committer publishes under one directory fsync.
pub const MAX_BATCH: usize = 4096;
/// Largest message `commit` accepts (a record length is a u32).
pub const MAX_MESSAGE_BYTES: usize = u32::MAX as usize - 1024;

/// What [`Store::open`] cleaned up after a crash.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Half-written rewrites removed from `tmp/` (never acknowledged).
    pub removed_tmp: Vec<String>,
    /// Files in `queue/` cut short by a crash while being written (never acknowledged),
    /// removed.
    pub removed_incomplete: Vec<String>,
    /// Files in `queue/` that did not decode, moved to `corrupt/`, with the reason.
    pub quarantined: Vec<(String, String)>,
}

impl RecoveryReport {
    pub fn is_empty(&self) -> bool {
        self.removed_tmp.is_empty()
            && self.removed_incomplete.is_empty()
            && self.quarantined.is_empty()
    }
}

/// How much the committer has batched so far (for benchmarks and tuning).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitterStats {
    /// Directory fsyncs done (one per batch).
    pub batches: u64,
    /// Operations (new-message directory syncs, rewrites, removals) in those batches.
    pub ops: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    ops: AtomicU64,
}

/// One queued message as `mailq` and the runner see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntrySummary {
    pub envelope: Envelope,
    /// Header and body bytes as stored (LF line ends).
    pub message_size: u64,
    /// Bytes after the header/body separator: the size `mailq` shows.
    pub body_size: u64,
}

impl QueueEntrySummary {
    fn of(m: &Message) -> QueueEntrySummary {
        QueueEntrySummary {
            envelope: m.envelope.clone(),
            message_size: m.body.len() as u64,
            body_size: file::body_part_len(&m.body) as u64,
        }
    }

    /// Recipients still to deliver.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.envelope
            .recipients
            .iter()
            .filter(|r| r.state == DeliveryState::Pending)
    }
}

/// The queue of one directory. Cheap to clone; all clones share one committer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    queue: PathBuf,
    tmp: PathBuf,
    /// Ids being committed: on disk, but not acknowledged yet.
    in_flight: Mutex<HashSet<QueueId>>,
    /// Counts successful commits; the runner waits on it.
    commits: watch::Sender<u64>,
    /// `None` when read-only.
    writer: Option<Writer>,
    report: RecoveryReport,
}

struct Writer {
    committer: mpsc::Sender<Job>,
    stats: Arc<Counters>,
    writes: Semaphore,
    seq: AtomicU64,
    _lock: Flock<File>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root)
            .field("read_only", &self.inner.writer.is_none())
            .finish()
    }
}

impl Store {
    /// Opens (creating it with mode 0700 if needed) the queue in `dir`, takes its lock,
    /// and recovers from a crash: empties `tmp/` and moves undecodable files out of
    /// `queue/`. What it did is in [`Store::recovery_report`]; it logs nothing itself.
    pub fn open(dir: &Path) -> Result<Store, QueueError> {
        let root = dir.to_path_buf();
        let (queue, tmp, corrupt) = (root.join("queue"), root.join("tmp"), root.join("corrupt"));
        for d in [&root, &queue, &tmp, &corrupt] {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| QueueError::io("create directory", d, e))?;
        }
        let lock_path = root.join("lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| QueueError::io("open", &lock_path, e))?;
        let lock =
            Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
                if errno == nix::errno::Errno::EWOULDBLOCK {
                    QueueError::Locked(root.clone())
                } else {
                    QueueError::io("lock", &lock_path, errno.into())
                }
            })?;

        let report = recover(&queue, &tmp, &corrupt)?;
        let queue_dir = File::open(&queue).map_err(|e| QueueError::io("open", &queue, e))?;
        let tmp_dir = File::open(&tmp).map_err(|e| QueueError::io("open", &tmp, e))?;
        let (tx, rx) = mpsc::channel();
        let dirs = Dirs {
            queue: queue.clone(),
            queue_dir,
            tmp_dir,
        };
        let stats = Arc::new(Counters::default());
        let counters = stats.clone();
        thread::Builder::new()
            .name("queue-committer".into())
            .spawn(move || committer(rx, dirs, &counters))
            .map_err(|e| QueueError::io("spawn committer for", &queue, e))?;

        Ok(Store {
            inner: Arc::new(Inner {
                root,
                queue,
                tmp,
                in_flight: Mutex::default(),
                commits: watch::Sender::new(0),
                writer: Some(Writer {
                    committer: tx,
                    stats,
                    writes: Semaphore::new(MAX_PARALLEL_WRITES),
                    seq: AtomicU64::new(0),
                    _lock: lock,
                }),
                report,
            }),
        })
    }

    /// Opens an existing queue for reading only (`mailq`): no lock, no recovery, no
    /// changes. `commit`, `update` and `remove` fail with [`QueueError::ReadOnly`].
    pub fn open_read_only(dir: &Path) -> Result<Store, QueueError> {
        let root = dir.to_path_buf();
        let queue = root.join("queue");
        fs::metadata(&queue).map_err(|e| QueueError::io("open", &queue, e))?;
        Ok(Store {
            inner: Arc::new(Inner {
                tmp: root.join("tmp"),
                in_flight: Mutex::default(),
                commits: watch::Sender::new(0),
                queue,
                root,
                writer: None,
                report: RecoveryReport::default(),
            }),
        })
    }

    /// The queue's directory, as given to `open`.
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// What `open` cleaned up.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// Queues `msg` durably. Returns its id only once the file is written and fsynced in
    /// `queue/` and `queue/` itself is fsynced: after `Ok`, a crash cannot lose the
    /// message, so the caller may answer `250`. Any `Err` means nothing was queued (answer
    /// `451`); [`QueueError::Duplicate`] if the id is queued already.
    ///
    /// The message's CRLF line ends are stored as LF (see [`super::file`]).
    pub async fn commit(&self, mut msg: NewMessage) -> Result<QueueId, QueueError> {
        let w = self.writer()?;
        let id = msg.envelope.id.clone();
        if msg.envelope.recipients.is_empty() {
            return Err(QueueError::NoRecipients(id));
        }
        if msg.body.contains(&b'\r') {
            msg.body = file::to_lf(&msg.body);
        }
        if msg.body.len() > MAX_MESSAGE_BYTES {
            return Err(QueueError::TooLarge {
                id,
                size: msg.body.len(),
            });
        }
        let in_flight = InFlight::start(&self.inner, &id)?;
        let path = self.inner.queue.join(id.as_str());
        {
            let _permit = w
                .writes
                .acquire()
                .await
                .map_err(|_| QueueError::CommitterGone)?;
            let (path, id) = (path.clone(), id.clone());
            blocking(move || write_new(&path, &file::encode(&msg), &id)).await?;
        }
        if let Err(e) = self.submit(w, Op::SyncDir).await {
            // Not durable: take it back so it is not delivered without its 250.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        drop(in_flight);
        self.inner.commits.send_modify(|n| *n += 1);
        Ok(id)
    }

    /// Changes after every successful [`Store::commit`] (the value counts them): the
    /// delivery runner waits on it to pick up new mail without polling.
    pub fn watch_commits(&self) -> watch::Receiver<u64> {
        self.inner.commits.subscribe()
    }

    /// Replaces the recipients' delivery states of message `id` durably (write beside,
    /// fsync, rename over, fsync `queue/`). `recipients` must be the queued list in the
    /// same order with new states; anything else is [`QueueError::UpdateMismatch`].
    /// The runner must not update one message from two tasks at once, nor update a
    /// message it is removing.
    pub async fn update(&self, id: &QueueId, recipients: Vec<Recipient>) -> Result<(), QueueError> {
        let w = self.writer()?;
        let path = self.inner.queue.join(id.as_str());
        let tmp_name = format!("{id}.{}", w.seq.fetch_add(1, Ordering::Relaxed));
        let tmp_path = self.inner.tmp.join(&tmp_name);
        let id2 = id.clone();
        {
            let _permit = w
                .writes
                .acquire()
                .await
                .map_err(|_| QueueError::CommitterGone)?;
            blocking(move || {
                let mut msg = read_message(&path, &id2)?;
                check_same_recipients(&id2, &msg.envelope.recipients, &recipients)?;
                msg.envelope.recipients = recipients;
                write_new(&tmp_path, &file::encode(&msg), &id2)
            })
            .await?;
        }
        self.submit(
            w,
            Op::Replace {
                tmp_name,
                id: id.clone(),
            },
        )
        .await
    }

    /// Removes message `id` from the queue (after delivery or bounce); durable like
    /// `commit`. [`QueueError::NotFound`] if it is not there.
    pub async fn remove(&self, id: &QueueId) -> Result<(), QueueError> {
        let w = self.writer()?;
        self.submit(w, Op::Unlink { id: id.clone() }).await
    }

    /// Every complete message in the queue, in run order (priority, then arrival, then
    /// id). Files that vanish while listing or do not decode are left out.
    pub fn list(&self) -> Result<Vec<QueueEntrySummary>, QueueError> {
        let mut out = Vec::new();
        for name in dir_names(&self.inner.queue)? {
            let Ok(id) = QueueId::new(name) else { continue };
            if self.inner.in_flight().contains(&id) {
                continue;
            }
            if let Ok(m) = read_message(&self.inner.queue.join(id.as_str()), &id) {
                out.push(QueueEntrySummary::of(&m));
            }
        }
        out.sort_by(|a, b| {
            let (a, b) = (&a.envelope, &b.envelope);
            (a.priority, a.arrival, &a.id).cmp(&(b.priority, b.arrival, &b.id))
        });
        Ok(out)
    }

    /// The ids of the queued messages (acknowledged ones only), unordered; cheap: reads
    /// the directory, not the files.
    pub fn ids(&self) -> Result<Vec<QueueId>, QueueError> {
        let names = dir_names(&self.inner.queue)?;
        let in_flight = self.inner.in_flight();
        Ok(names
            .into_iter()
            .filter_map(|n| QueueId::new(n).ok())
            .filter(|id| !in_flight.contains(id))
            .collect())
    }

    /// The whole message `id`, checked. [`QueueError::NotFound`] if it is not queued.
    pub fn load(&self, id: &QueueId) -> Result<QueuedMessage, QueueError> {
        if self.inner.in_flight().contains(id) {
            return Err(QueueError::NotFound(id.clone()));
        }
        read_message(&self.inner.queue.join(id.as_str()), id)
    }

    /// Batches and operations the committer has done (zero when read-only).
    pub fn committer_stats(&self) -> CommitterStats {
        self.inner
            .writer
            .as_ref()
            .map_or_else(CommitterStats::default, |w| CommitterStats {
                batches: w.stats.batches.load(Ordering::Relaxed),
                ops: w.stats.ops.load(Ordering::Relaxed),
            })
    }

    fn writer(&self) -> Result<&Writer, QueueError> {
        self.inner.writer.as_ref().ok_or(QueueError::ReadOnly)
    }

    /// Hands `op` to the committer and waits for its batch's directory fsync.
    async fn submit(&self, w: &Writer, op: Op) -> Result<(), QueueError> {
        let (done, wait) = oneshot::channel();
        w.committer
            .send(Job { op, done })
            .map_err(|_| QueueError::CommitterGone)?;
        wait.await.map_err(|_| QueueError::CommitterGone)?
    }
}

impl Inner {
    fn in_flight(&self) -> MutexGuard<'_, HashSet<QueueId>> {
        // The set stays consistent even if a holder panicked: each change is one call.
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Marks an id as being committed until dropped (also when the commit is cancelled).
struct InFlight<'a> {
    inner: &'a Inner,
    id: QueueId,
}

impl<'a> InFlight<'a> {
    fn start(inner: &'a Inner, id: &QueueId) -> Result<InFlight<'a>, QueueError> {
        if !inner.in_flight().insert(id.clone()) {
            return Err(QueueError::Duplicate(id.clone()));
        }
        Ok(InFlight {
            inner,
            id: id.clone(),
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.inner.in_flight().remove(&self.id);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| QueueError::CommitterGone)?
}

/// Creates `path` (it must not exist: [`QueueError::Duplicate`] for `id` if it does),
/// writes `bytes`, fsyncs. On failure nothing is left behind.
fn write_new(path: &Path, bytes: &[u8], id: &QueueId) -> Result<(), QueueError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => QueueError::Duplicate(id.clone()),
            _ => QueueError::io("create", path, e),
        })?;
    let written = f
        .write_all(bytes)
        .map_err(|e| QueueError::io("write", path, e))
        .and_then(|()| f.sync_all().map_err(|e| QueueError::io("fsync", path, e)));
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

fn read_message(path: &Path, id: &QueueId) -> Result<Message, QueueError> {
    let bytes = fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => QueueError::NotFound(id.clone()),
        _ => QueueError::io("read", path, e),
    })?;
    let msg = file::decode(&bytes)?;
    if &msg.envelope.id != id {
        return Err(QueueError::Corrupt {
            offset: 0,
            what: format!("file {} holds message {}", path.display(), msg.envelope.id),
        });
    }
    Ok(msg)
}

fn check_same_recipients(
    id: &QueueId,
    old: &[Recipient],
    new: &[Recipient],
) -> Result<(), QueueError> {
    let mismatch = |what: String| QueueError::UpdateMismatch {
        id: id.clone(),
        what,
    };
    if old.len() != new.len() {
        return Err(mismatch(format!(
            "{} queued, {} given",
            old.len(),
            new.len()
        )));
    }
    for (i, (o, n)) in old.iter().zip(new).enumerate() {
        if o.address != n.address {
            return Err(mismatch(format!(
                "recipient {i} is {:?}, not {:?}",
                o.address, n.address
            )));
        }
    }
    Ok(())
}

fn dir_names(dir: &Path) -> Result<Vec<String>, QueueError> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| QueueError::io("read directory", dir, e))? {
        let e = e.map_err(|e| QueueError::io("read directory", dir, e))?;
        // Names we did not write (not UTF-8) are skipped, not trusted.
        if let Ok(n) = e.file_name().into_string() {
            names.push(n);
        }
    }
    Ok(names)
}

/// Crash recovery: empty `tmp/`, remove files in `queue/` that were cut short, move other
/// files that do not decode to `corrupt/`.
fn recover(queue: &Path, tmp: &Path, corrupt: &Path) -> Result<RecoveryReport, QueueError> {
    let mut report = RecoveryReport::default();
    for name in dir_names(tmp)? {
        let p = tmp.join(&name);
        fs::remove_file(&p).map_err(|e| QueueError::io("remove", &p, e))?;
        report.removed_tmp.push(name);
    }
    for name in dir_names(queue)? {
        let p = queue.join(&name);
        let checked = QueueId::new(name.clone()).and_then(|id| read_message(&p, &id));
        match checked {
            Ok(_) => {}
            Err(QueueError::Truncated { .. }) => {
                fs::remove_file(&p).map_err(|e| QueueError::io("remove", &p, e))?;
                report.removed_incomplete.push(name);
            }
            Err(why) => {
                let to = corrupt.join(&name);
                fs::rename(&p, &to).map_err(|e| QueueError::io("rename", &p, e))?;
                report.quarantined.push((name, why.to_string()));
            }
        }
    }
    if !report.quarantined.is_empty() || !report.removed_incomplete.is_empty() {
        for d in [queue, corrupt] {
            sync_dir(d)?;
        }
    }
    Ok(report)
}

fn sync_dir(d: &Path) -> Result<(), QueueError> {
    File::open(d)
        .and_then(|f| f.sync_all())
        .map_err(|e| QueueError::io("fsync directory", d, e))
}

// ---------------------------------------------------------------- the committer thread

enum Op {
    /// Nothing but the batch's fsync of `queue/` (makes a new message's name durable).
    SyncDir,
    /// Rename `tmp/<tmp_name>` over `queue/<id>` (update).
    Replace {
        tmp_name: String,
        id: QueueId,
    },
    Unlink {
        id: QueueId,
    },
}

struct Job {
    op: Op,
    done: oneshot::Sender<Result<(), QueueError>>,
}

struct Dirs {
    queue: PathBuf,
    queue_dir: File,
    tmp_dir: File,
}

/// Runs until every [`Store`] clone is dropped: takes all waiting jobs, applies them, fsyncs
/// `queue/` once, answers them all.
fn committer(rx: mpsc::Receiver<Job>, dirs: Dirs, stats: &Counters) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut results: Vec<Result<(), QueueError>> =
            batch.iter().map(|j| apply(&dirs, &j.op)).collect();
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.ops.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if results.iter().any(Result::is_ok)
            && let Err(e) = dirs.queue_dir.sync_all()
        {
            let kind = e.kind();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(QueueError::io(
                    "fsync directory",
                    &dirs.queue,
                    io::Error::from(kind),
                ));
            }
        }
        for (j, r) in batch.into_iter().zip(results) {
            let _ = j.done.send(r);
        }
    }
}

fn apply(dirs: &Dirs, op: &Op) -> Result<(), QueueError> {
    match op {
        Op::SyncDir => Ok(()),
        Op::Replace { tmp_name, id } => {
            let (tmp, to) = (tmp_name.as_str(), id.as_str());
            renameat2(
                &dirs.tmp_dir,
                tmp,
                &dirs.queue_dir,
                to,
                RenameFlags::empty(),
            )
            .map_err(|errno| {
                let _ = unlinkat(&dirs.tmp_dir, tmp, UnlinkatFlags::NoRemoveDir);
                QueueError::io("rename over", dirs.queue.join(to), errno.into())
            })
        }
        Op::Unlink { id } => unlinkat(&dirs.queue_dir, id.as_str(), UnlinkatFlags::NoRemoveDir)
            .map_err(|errno| match errno {
                nix::errno::Errno::ENOENT => QueueError::NotFound(id.clone()),
                e => QueueError::io("remove", dirs.queue.join(id.as_str()), e.into()),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::file::Envelope;
    use std::os::unix::fs::PermissionsExt;

    fn id(s: &str) -> QueueId {
        QueueId::new(s).unwrap()
    }

    fn message(qid: &str, rcpts: &[&str]) -> NewMessage {
        let mut env = Envelope::new(id(qid), "sender@client.example.test");
        env.recipients = rcpts.iter().map(|r| Recipient::new(*r)).collect();
        Message {
            envelope: env,
            body: format!("Subject: {qid}\r\n\r\nbody of {qid}\r\n").into_bytes(),
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn committed_message_is_in_queue_with_lf_line_ends_and_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("mq")).unwrap();
        assert!(store.recovery_report().is_empty());
        let got = rt()
            .block_on(store.commit(message("Q1", &["root"])))
            .unwrap();
        assert_eq!(got, id("Q1"));

        let m = store.load(&id("Q1")).unwrap();
        assert_eq!(m.body, b"Subject: Q1\n\nbody of Q1\n");
        assert_eq!(m.envelope.recipients, vec![Recipient::new("root")]);
        let list = store.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].message_size, list[0].body_size), (24, 11));

        for d in ["mq", "mq/queue", "mq/tmp", "mq/corrupt"] {
            assert_eq!(mode(&dir.path().join(d)), 0o700, "{d}");
        }
        assert_eq!(mode(&dir.path().join("mq/queue/Q1")), 0o600);
        assert_eq!(fs::read_dir(dir.path().join("mq/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_second_message_with_the_same_id_is_refused_and_the_first_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rt = rt();
        rt.block_on(store.commit(message("Q1", &["a"]))).unwrap();
        let err = rt
            .block_on(store.commit(message("Q1", &["b"])))
            .unwrap_err();
        assert!(
            matches!(err, QueueError::Duplicate(ref q) if q.as_str() == "Q1"),
            "{err}"
        );
        assert_eq!(
            store.load(&id("Q1")).unwrap().envelope.recipients[0].address,
            "a"
        );
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "tmp file left behind"
        );
    }

    #[test]
    fn ids_lists_the_queue_cheaply_and_commits_are_announced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut commits = store.watch_commits();
        assert_eq!(*commits.borrow_and_update(), 0);
        let rt = rt();
        rt.block_on(store.commit(message("Q1", &["a"]))).unwrap();
        rt.block_on(store.commit(message("Q2", &["a"]))).unwrap();
        assert!(commits.has_changed().unwrap());
        assert_eq!(*commits.borrow_and_update(), 2);
        let mut ids = store.ids().unwrap();
        ids.sort();
        assert_eq!(ids, [id("Q1"), id("Q2")]);
    }

    #[test]
    fn an_id_being_committed_is_neither_listed_nor_loadable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rt = rt();
        rt.block_on(store.commit(message("Q1", &["a"]))).unwrap();
        let guard = InFlight::start(&store.inner, &id("Q1")).unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(store.ids().unwrap().is_empty());
        assert!(matches!(
            store.load(&id("Q1")),
            Err(QueueError::NotFound(_))
        ));
        assert!(matches!(
            InFlight::start(&store.inner, &id("Q1")),
            Err(QueueError::Duplicate(_))
        ));
        drop(guard);
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn a_message_without_recipients_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = rt().block_on(store.commit(message("Q1", &[]))).unwrap_err();
        assert!(matches!(err, QueueError::NoRecipients(_)));
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn update_records_delivery_state_durably_and_checks_the_recipient_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rt = rt();
        rt.block_on(store.commit(message("Q1", &["a@x", "b@y"])))
            .unwrap();

        let mut rcpts = store.load(&id("Q1")).unwrap().envelope.recipients;
        rcpts[0].state = DeliveryState::Done;
        rcpts[1].tries = 1;
        rcpts[1].status = Some("Deferred: Connection refused by y.".into());
        rt.block_on(store.update(&id("Q1"), rcpts.clone())).unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let m = store.load(&id("Q1")).unwrap();
        assert_eq!(m.envelope.recipients, rcpts);
        assert_eq!(m.body, b"Subject: Q1\n\nbody of Q1\n");

        let err = rt
            .block_on(store.update(&id("Q1"), rcpts[..1].to_vec()))
            .unwrap_err();
        assert!(matches!(err, QueueError::UpdateMismatch { .. }), "{err}");
        let mut swapped = rcpts.clone();
        swapped.swap(0, 1);
        assert!(matches!(
            rt.block_on(store.update(&id("Q1"), swapped)),
            Err(QueueError::UpdateMismatch { .. })
        ));
        assert!(matches!(
            rt.block_on(store.update(&id("NOPE"), rcpts)),
            Err(QueueError::NotFound(_))
        ));
    }

    #[test]
    fn remove_takes_the_message_out_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rt = rt();
        rt.block_on(store.commit(message("Q1", &["a"]))).unwrap();
        rt.block_on(store.remove(&id("Q1"))).unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(
            store.load(&id("Q1")),
            Err(QueueError::NotFound(_))
        ));
        assert!(matches!(
            rt.block_on(store.remove(&id("Q1"))),
            Err(QueueError::NotFound(_))
        ));
    }

    #[test]
    fn open_empties_tmp_and_moves_undecodable_files_aside() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            rt().block_on(store.commit(message("GOOD", &["a"])))
                .unwrap();
        }
        let good = fs::read(dir.path().join("queue/GOOD")).unwrap();
        fs::write(dir.path().join("queue/TORN"), &good[..good.len() - 3]).unwrap();
        fs::write(dir.path().join("queue/OTHER"), &good).unwrap(); // holds GOOD's id
        fs::write(dir.path().join("tmp/HALF.7"), &good[..100]).unwrap();

        let store = Store::open(dir.path()).unwrap();
        let r = store.recovery_report();
        assert_eq!(r.removed_tmp, vec!["HALF.7".to_string()]);
        assert_eq!(r.removed_incomplete, vec!["TORN".to_string()]);
        let q: Vec<&str> = r.quarantined.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(q, ["OTHER"]);
        assert!(
            r.quarantined[0].1.contains("holds message GOOD"),
            "{:?}",
            r.quarantined
        );
        let ids: Vec<String> = store
            .list()
            .unwrap()
            .iter()
            .map(|e| e.envelope.id.to_string())
            .collect();
        assert_eq!(ids, ["GOOD"]);
        assert!(dir.path().join("corrupt/OTHER").exists());
        assert!(!dir.path().join("queue/TORN").exists());
    }

    #[test]
    fn one_writer_per_queue_and_read_only_stores_cannot_change_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(QueueError::Locked(_))
        ));
        let rt = rt();
        rt.block_on(store.commit(message("Q1", &["a"]))).unwrap();

        let ro = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(ro.list().unwrap().len(), 1);
        assert!(matches!(
            rt.block_on(ro.commit(message("Q2", &["a"]))),
            Err(QueueError::ReadOnly)
        ));
        assert!(matches!(
            rt.block_on(ro.remove(&id("Q1"))),
            Err(QueueError::ReadOnly)
        ));
        drop(store);
        assert!(Store::open(dir.path()).is_ok(), "lock released on drop");
    }

    #[test]
    fn many_concurrent_commits_all_land_in_run_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rt = rt();
        let ids = rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..300 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let mut m = message(&format!("C{i:04}"), &["a"]);
                    m.envelope.priority = 1000 - i;
                    store.commit(m).await
                }));
            }
            let mut ids = Vec::new();
            for t in tasks {
                ids.push(t.await.unwrap().unwrap());
            }
            ids
        });
        let listed: Vec<QueueId> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|e| e.envelope.id)
            .collect();
        let mut want = ids;
        want.reverse(); // highest i has the lowest priority value, so runs first
        assert_eq!(listed, want);
    }
}
