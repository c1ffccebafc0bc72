//! The queue on disk: durable group commit into a journal, listing, update, removal, and
//! crash recovery.
//!
//! In: [`NewMessage`]s to commit, recipient states to record, ids to remove. Out: a
//! [`QueueId`] only once the message is on stable storage, listings
//! ([`QueueEntrySummary`]), whole messages, and a [`RecoveryReport`] from [`Store::open`].
//!
//! # Layout
//!
//! ```text
//! <dir>/                  mode 0700
//!   lock                  flock(2)ed by the one process that writes the queue
//!   journal/<seq>.seg     journal segments (16 hex digits, oldest first), mode 0600
//! ```
//!
//! A segment is a sequence of frames ([`file::Frame`]): `Put` holds a whole queue file
//! ([`super::file`], closed by its END record) for an id, either a new message or a
//! rewrite that supersedes the earlier copy; `Remove` ends an id. Replaying the segments
//! oldest first, latest frame wins, gives the queue. Every frame has its own CRC, so a
//! frame cut short by a crash is recognised; [`Store::open`] cuts the segment back to its
//! last whole frame (those bytes were never acknowledged) and reports it.
//!
//! # Group commit (why a journal)
//!
//! Measured on this machine (`shared/bench/results/fsync-run1.txt`): a new file with
//! fsync costs ≈1,500/s from one writer (≈14,700/s from 16, when ext4 can merge their
//! journal commits), while fdatasync of one already-allocated file runs at ≈8,000/s and
//! costs no ext4 journal commit at all. With one file per message every message pays
//! its own fsync (plus the directory's); with a journal a whole batch pays one. So:
//!
//! * one **committer thread** owns the active segment. A commit encodes its queue file
//!   on the caller's task, hands it over, and waits. The committer takes *everything*
//!   that queued up while it was busy, appends all of it with one `write`, calls
//!   `fdatasync` **once for the batch**, records the new positions in the in-memory index,
//!   and only then wakes the waiting commits (which may then answer `250`).
//! * while no commit waits, the committer writes zeroed, synced bytes ahead of the frames
//!   of the active segment ([`PREALLOC_CHUNK`] at a time), so that the next batches
//!   overwrite blocks the file has and their fdatasync changes no metadata. Measured
//!   (`queue_commit`, 1,000 × 5 KiB, three alternating runs of each build, 2026-12-05): 1
//!   committer 2,800–3,240 → 4,590–4,950 commits/s, 20 committers 31,600–35,600 →
//!   29,900–38,100, 100 committers 73,600–86,500 → 73,400–78,800 (zeros ahead after every
//!   batch, busy or not, had cost 100 committers 18 %). Replay takes zeros after the last
//!   frame for the end.
//! * `update` (the runner's state changes) and `remove` are frames in the same batches.
//!   A batch of removals only is written but not fdatasynced: the next batch's fdatasync
//!   covers it, or the idle committer's after [`REMOVE_SYNC_DELAY`] (why that is safe:
//!   [`Store::remove`]). Under relay load that halves the journal's fdatasyncs (each
//!   delivered message's removal had mostly made a batch, and a sync, of its own).
//! * a segment is closed at [`SEGMENT_BYTES`]; the new one is created and the directory
//!   fsynced before any frame in it is acknowledged. It is closed early, from
//!   [`EMPTY_ROLL_BYTES`] on, when no queued message has its latest copy there (the queue
//!   drained, as it does after every burst under relay load): the closed segment is then
//!   deleted at once, so a drained queue is a journal of at most that size, not up to
//!   [`SEGMENT_BYTES`] of delivered mail that `mailq` (`sendmail -bp` replays the journal)
//!   and a restarting daemon would read through. Measured on the relay rig (2,000 messages
//!   of 5 KiB delivered, queue empty): the journal was 11.5 MB and `sendmail -bp` read all
//!   of it (13 reads, 3,280 page faults, 10 ms); the bench polls `mailq` for the end of
//!   each relay run.
//! * a closed segment is deleted once nothing depends on it: it holds no message's latest
//!   copy, and no `Remove` in it still cancels a `Put` in another surviving segment (else
//!   deleting it could bring a delivered message back after a crash). Deletions go in
//!   rounds with a directory fsync between them for the same reason.
//! * a closed segment less than half live (mail deferred for a long time among mail
//!   long delivered) has its live messages copied forward into the active segment, one
//!   segment per batch, so space is reclaimed; dense segments are left alone, which
//!   bounds the copying to the data it frees.
//!
//! Measured here (`cargo bench --bench queue_commit`, 3,000 × 5 KiB, medians of three
//! runs on the shared machine, 2026-11-24): 1 committer 800–3,400 msg/s, 20 committers
//! 10,000–18,700, 100 committers 32,000–37,000 (≈54 messages per fdatasync, ≈16 µs CPU
//! per message), against 230–1,150 msg/s for one file per message with its own fsync,
//! rename and directory fsync, in the same runs. (A first version kept one file per
//! message and shared only the directory fsyncs: it gained 1.0–1.5× over that baseline,
//! because every message still paid an ext4 journal commit of its own.)
//!
//! The bench (`bench/queue_commit.rs`) compares this with the one-file-per-message design
//! (write + fsync + rename + directory fsync per message) in the same run.
//!
//! Reads (`list`, `load`, `ids`) use the index and positioned reads of the segments; they
//! are synchronous, so call them from `spawn_blocking` in async code. One writing store
//! per queue directory: the lock file keeps a second writer out; `mailq` uses
//! [`Store::open_read_only`], which replays the segments without changing anything.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;

use nix::fcntl::{Flock, FlockArg};
use tokio::sync::{oneshot, watch};

use super::file::{
    self, DeliveryState, Envelope, Frame, FrameRead, Message, NewMessage, Notices, QueuedMessage,
    Recipient,
};
use super::spool::Spool;
use super::{QueueError, QueueId};

/// A segment is closed once it is this long (default of [`StoreOptions::segment_bytes`]).
pub const SEGMENT_BYTES: u64 = 32 << 20;

/// A segment holding no queued message's latest copy is closed once it is this long
/// (default of [`StoreOptions::empty_roll_bytes`]): a drained queue keeps at most this much
/// journal. Each early close costs two directory fsyncs (the new segment's name, the old
/// one's deletion), once per this many bytes of mail at most.
pub const EMPTY_ROLL_BYTES: u64 = 1 << 20;

/// Tuning of a writing [`Store`]; the defaults suit a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Close the active segment once it is this long.
    pub segment_bytes: u64,
    /// Close it already at this length when no queued message's latest copy is in it.
    pub empty_roll_bytes: u64,
    /// The mode journal segments (the queue files) are created with: sendmail's
    /// `QueueFileMode`, default 0600.
    pub file_mode: u32,
    /// How long written removals may wait for the next batch's fdatasync before the idle
    /// committer syncs them ([`Store::remove`]; default [`REMOVE_SYNC_DELAY`]).
    pub remove_sync_delay: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_bytes: SEGMENT_BYTES,
            empty_roll_bytes: EMPTY_ROLL_BYTES,
            file_mode: 0o600,
            remove_sync_delay: REMOVE_SYNC_DELAY,
        }
    }
}

impl StoreOptions {
    /// The defaults with `QueueFileMode` (`None`: 0600).
    pub fn with_file_mode(mode: Option<u32>) -> StoreOptions {
        StoreOptions {
            file_mode: mode.unwrap_or(0o600),
            ..StoreOptions::default()
        }
    }
}

/// Most frames the committer writes under one fdatasync.
pub const MAX_BATCH: usize = 4096;
/// Zeroed bytes the committer writes ahead of the frames of the active segment at a time,
/// once fewer than [`PREALLOC_LOW`] are left (see `Committer::preallocate`).
pub const PREALLOC_CHUNK: u64 = 1 << 20;
/// See [`PREALLOC_CHUNK`].
pub const PREALLOC_LOW: u64 = 256 << 10;
/// No zeros are written ahead while the queue's filesystem has less than this free: near a
/// full disk they would only take space a message or a `MinFreeBlocks` check needs.
pub const PREALLOC_MIN_FREE: u64 = 64 << 20;
/// Largest message `commit` accepts (a frame length is a u32).
pub const MAX_MESSAGE_BYTES: usize = u32::MAX as usize - 4096;

/// What [`Store::open`] cleaned up after a crash.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments cut back to their last whole frame: name, bytes dropped, why. Those bytes
    /// were a batch being written when the process died (never acknowledged).
    pub truncated: Vec<(String, u64, String)>,
    /// Segments deleted because nothing in them was live any more.
    pub removed_segments: Vec<String>,
    /// Spool files of messages being received when the process died (never
    /// acknowledged), deleted.
    pub removed_spool: Vec<String>,
}

impl RecoveryReport {
    pub fn is_empty(&self) -> bool {
        self.truncated.is_empty()
            && self.removed_segments.is_empty()
            && self.removed_spool.is_empty()
    }
}

/// How much the committer has batched so far (for benchmarks and tuning).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitterStats {
    /// fdatasyncs of the journal: one per batch, except a batch of removals only, which
    /// the next one covers (or the idle committer's own sync, counted too).
    pub batches: u64,
    /// Frames (commits, updates, removals) written in those batches.
    pub ops: u64,
}

struct Counters {
    batches: AtomicU64,
    ops: AtomicU64,
    /// Frames per fdatasync (a batch's, and the removals before it not synced yet).
    sizes: crate::metrics::Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            batches: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            sizes: crate::metrics::Histogram::new(crate::metrics::BATCH_BUCKETS),
        }
    }
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
    pub fn of(m: &Message) -> QueueEntrySummary {
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
    index: Arc<Mutex<Index>>,
    /// Counts successful commits; the runner waits on it.
    commits: watch::Sender<u64>,
    /// `None` when read-only.
    writer: Option<Writer>,
    report: RecoveryReport,
}

struct Writer {
    /// `None` only while dropping.
    committer: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
    stats: Arc<Counters>,
    _lock: Flock<File>,
}

impl Drop for Writer {
    /// Lets the committer finish its last batch before the lock is released, so that a
    /// store opened next never sees a frame still being written.
    fn drop(&mut self) {
        drop(self.committer.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the segments on disk say: where the latest copy of each message is, and which
/// segments may be deleted.
///
/// A segment can go once no id depends on it: it holds no id's latest copy (`live`), and
/// no `Remove` in it still cancels a `Put` in another surviving segment. `blockers`
/// counts both.
#[derive(Default)]
struct Index {
    ids: HashMap<QueueId, Track>,
    /// The ids whose latest frame is a `Put` (queued): `ids` also keeps removed ones until
    /// their segments go (thousands under relay load), and the runner lists the queue
    /// after every commit, so a listing walks only these.
    live: HashSet<QueueId>,
    segments: BTreeMap<u64, Segment>,
    /// Copies of the newest messages' queue files, as written ([`Fresh`]).
    fresh: Fresh,
}

/// Bytes of freshly committed queue files kept in memory (see [`Fresh`]).
pub const FRESH_BYTES: usize = 4 << 20;

/// The queue files of the messages committed last, kept in memory until superseded,
/// removed, or pushed out by newer ones (at most [`FRESH_BYTES`] in all), so that the
/// runner's first load of a new message — moments after its commit, with background
/// delivery — decodes them without reading the segment: no `pread`, and no hand-off to a
/// blocking thread ([`Store::load_fresh`]). The bytes are those the committer wrote and
/// fdatasynced for the frame; a message spliced from a spool file is not kept.
#[derive(Default)]
struct Fresh {
    files: HashMap<QueueId, (u64, Arc<[u8]>)>,
    /// Oldest first: (serial, id); an entry whose serial no longer matches is gone.
    order: std::collections::VecDeque<(u64, QueueId)>,
    bytes: usize,
    serial: u64,
}

impl Fresh {
    fn insert(&mut self, id: &QueueId, file: &[u8]) {
        if file.len() > FRESH_BYTES / 8 {
            return;
        }
        self.forget(id);
        self.serial += 1;
        self.bytes += file.len();
        self.files
            .insert(id.clone(), (self.serial, Arc::from(file)));
        self.order.push_back((self.serial, id.clone()));
        while self.bytes > FRESH_BYTES {
            let Some((serial, old)) = self.order.pop_front() else {
                break;
            };
            if self.files.get(&old).is_some_and(|(s, _)| *s == serial) {
                self.forget(&old);
            }
        }
        // Entries forgotten early leave stale places in `order`: trim them so it stays
        // bounded by the entries kept.
        if self.order.len() > 2 * self.files.len() + 64 {
            let files = &self.files;
            self.order
                .retain(|(s, id)| files.get(id).is_some_and(|(k, _)| k == s));
        }
    }

    fn forget(&mut self, id: &QueueId) {
        if let Some((_, f)) = self.files.remove(id) {
            self.bytes -= f.len();
        }
    }

    fn get(&self, id: &QueueId) -> Option<Arc<[u8]>> {
        self.files.get(id).map(|(_, f)| f.clone())
    }
}

/// The frames of one id in the surviving segments.
struct Track {
    /// Segments with a frame for this id, oldest first.
    segs: Vec<u64>,
    /// Where the latest copy is, if the latest frame is a `Put` (the id is queued).
    live: Option<Loc>,
}

impl Track {
    /// Does the segment of the latest frame have to stay for this id?
    fn blocking(&self) -> bool {
        self.live.is_some() || self.segs.len() > 1
    }
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    seg: u64,
    /// Offset and length of the queue file bytes inside the segment.
    offset: u64,
    len: usize,
}

struct Segment {
    file: Arc<File>,
    /// Bytes of frames in the segment.
    len: u64,
    /// Ids with a frame here.
    ids: HashSet<QueueId>,
    /// Ids whose latest frame is here and needs it (see [`Index`]).
    blockers: usize,
    /// Queued messages whose latest copy is here, and their bytes.
    live: usize,
    live_bytes: u64,
}

impl Segment {
    fn new(file: Arc<File>, len: u64) -> Segment {
        Segment {
            file,
            len,
            ids: HashSet::new(),
            blockers: 0,
            live: 0,
            live_bytes: 0,
        }
    }
}

impl Index {
    fn lock(m: &Mutex<Index>) -> MutexGuard<'_, Index> {
        // Every change is applied whole under the lock; a panic cannot leave it half-done.
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a frame for `id` in segment `seg`: a `Put` at `put`, or a `Remove`.
    fn apply(&mut self, id: &QueueId, seg: u64, put: Option<Loc>) {
        let Index {
            ids,
            live,
            segments,
            fresh,
        } = self;
        fresh.forget(id);
        if put.is_some() {
            if !live.contains(id) {
                live.insert(id.clone());
            }
        } else {
            live.remove(id);
        }
        let t = ids.entry(id.clone()).or_insert_with(|| Track {
            segs: Vec::new(),
            live: None,
        });
        if let Some(s) = t.segs.last().and_then(|last| segments.get_mut(last)) {
            if t.blocking() {
                s.blockers -= 1;
            }
            if let Some(l) = t.live {
                s.live -= 1;
                s.live_bytes -= l.len as u64;
            }
        }
        if t.segs.last() != Some(&seg) {
            t.segs.push(seg);
        }
        t.live = put;
        if let Some(s) = segments.get_mut(&seg) {
            s.ids.insert(id.clone());
            if t.blocking() {
                s.blockers += 1;
            }
            if let Some(l) = put {
                s.live += 1;
                s.live_bytes += l.len as u64;
            }
        }
    }

    /// Forgets segment `seq` (its file is deleted); the ids that had older frames there
    /// may stop blocking newer segments.
    fn drop_segment(&mut self, seq: u64) {
        let Some(seg) = self.segments.remove(&seq) else {
            return;
        };
        for id in seg.ids {
            let Some(t) = self.ids.get_mut(&id) else {
                continue;
            };
            let was_blocking = t.blocking();
            t.segs.retain(|s| *s != seq);
            match t.segs.last() {
                None => {
                    self.ids.remove(&id);
                }
                Some(last) => {
                    if was_blocking
                        && !t.blocking()
                        && let Some(s) = self.segments.get_mut(last)
                    {
                        s.blockers -= 1;
                    }
                }
            }
        }
    }

    fn is_queued(&self, id: &QueueId) -> bool {
        self.ids.get(id).is_some_and(|t| t.live.is_some())
    }

    fn queued(&self) -> impl Iterator<Item = (&QueueId, Loc)> {
        self.live
            .iter()
            .filter_map(|id| Some((id, self.ids.get(id)?.live?)))
    }

    /// The file and position of `id`'s latest copy.
    fn find(&self, id: &QueueId) -> Option<(Arc<File>, Loc)> {
        let loc = self.ids.get(id)?.live?;
        Some((self.segments.get(&loc.seg)?.file.clone(), loc))
    }

    /// Segments other than `keep` that nothing depends on.
    fn deletable(&self, keep: u64) -> Vec<u64> {
        self.segments
            .iter()
            .filter(|(seq, s)| **seq != keep && s.blockers == 0)
            .map(|(seq, _)| *seq)
            .collect()
    }

    /// The segment (not `keep`) with the smallest share of live bytes, if under half.
    fn sparsest(&self, keep: u64) -> Option<u64> {
        self.segments
            .iter()
            .filter(|(seq, s)| **seq != keep && s.live > 0 && s.live_bytes * 2 < s.len)
            .min_by(|(_, a), (_, b)| (a.live_bytes * b.len).cmp(&(b.live_bytes * a.len)))
            .map(|(seq, _)| *seq)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root)
            .field("read_only", &self.inner.writer.is_none())
            .finish()
    }
}

fn journal_dir(root: &Path) -> PathBuf {
    root.join("journal")
}

fn spool_dir(root: &Path) -> PathBuf {
    root.join("spool")
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.seg")
}

impl Store {
    /// Opens (creating it with mode 0700 if needed) the queue in `dir`, takes its lock,
    /// and recovers from a crash: cuts torn frames off the segments and deletes segments
    /// with nothing live. What it did is in [`Store::recovery_report`]; it logs nothing.
    pub fn open(dir: &Path) -> Result<Store, QueueError> {
        Store::open_with(dir, StoreOptions::default())
    }

    /// [`Store::open`] with other segment sizes (tests and benchmarks).
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Store, QueueError> {
        let root = dir.to_path_buf();
        let journal = journal_dir(&root);
        let spool = spool_dir(&root);
        for d in [&root, &journal, &spool] {
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

        let mut report = RecoveryReport {
            removed_spool: sweep_spool(&spool)?,
            ..RecoveryReport::default()
        };
        let mut index = replay(&journal, true, &mut report)?;
        let next = index.segments.keys().next_back().map_or(1, |s| s + 1);
        for seq in delete_dead_segments(&mut index, &journal, u64::MAX)? {
            report.removed_segments.push(segment_name(seq));
        }
        let active = ActiveSegment::create(&journal, next, options.file_mode)?;
        index
            .segments
            .insert(next, Segment::new(active.file.clone(), 0));

        let index = Arc::new(Mutex::new(index));
        let stats = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel();
        let committer = Committer {
            journal: journal.clone(),
            active,
            index: index.clone(),
            stats: stats.clone(),
            unsynced: 0,
            options,
        };
        let thread = thread::Builder::new()
            .name("queue-committer".into())
            .spawn(move || {
                // SCHED_BATCH at the same nice value: a commit handed over does not take
                // the CPU from the session that handed it (more commits gather for one
                // fdatasync meanwhile). Relay bench rig: with the sessions' threads also
                // SCHED_BATCH (daemon), 7 % more messages a second, 11 % less daemon CPU.
                // (Only from the normal policy: one an admin chose is left alone.)
                if crate::priority::policy_of_this_thread().is_ok_and(|p| p == libc::SCHED_OTHER) {
                    let nice = crate::priority::this_thread().unwrap_or(0);
                    let _ = crate::priority::set_this_thread_batch(nice);
                }
                committer.run(rx)
            })
            .map_err(|e| QueueError::io("spawn committer for", &journal, e))?;

        Ok(Store {
            inner: Arc::new(Inner {
                root,
                index,
                commits: watch::Sender::new(0),
                writer: Some(Writer {
                    committer: Some(tx),
                    thread: Some(thread),
                    stats,
                    _lock: lock,
                }),
                report,
            }),
        })
    }

    /// Whether a process (a daemon, a `sendmail -q`) holds the lock of the queue in `dir`
    /// now: the lock file exists and cannot be shared-locked. Changes nothing.
    pub fn in_use(dir: &Path) -> bool {
        let Ok(f) = File::open(dir.join("lock")) else {
            return false;
        };
        matches!(
            Flock::lock(f, FlockArg::LockSharedNonblock),
            Err((_, nix::errno::Errno::EWOULDBLOCK))
        )
    }

    /// Opens an existing queue for reading only (`mailq`): no lock, no recovery, no
    /// changes; a frame being written by the daemon right now ends that segment's replay.
    /// A directory that no writing store has opened yet is an empty queue; a missing
    /// directory is an error.
    /// `commit`, `update` and `remove` fail with [`QueueError::ReadOnly`].
    pub fn open_read_only(dir: &Path) -> Result<Store, QueueError> {
        let root = dir.to_path_buf();
        fs::metadata(&root).map_err(|e| QueueError::io("open", &root, e))?;
        let journal = journal_dir(&root);
        let index = if journal.exists() {
            replay(&journal, false, &mut RecoveryReport::default())?
        } else {
            Index::default() // no daemon has written this queue yet: it is empty
        };
        Ok(Store {
            inner: Arc::new(Inner {
                root,
                index: Arc::new(Mutex::new(index)),
                commits: watch::Sender::new(0),
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

    /// Batches and frames the committer has written (zero when read-only).
    pub fn committer_stats(&self) -> CommitterStats {
        self.inner
            .writer
            .as_ref()
            .map_or_else(CommitterStats::default, |w| CommitterStats {
                batches: w.stats.batches.load(Ordering::Relaxed),
                ops: w.stats.ops.load(Ordering::Relaxed),
            })
    }

    /// Frames per fdatasync of the journal, as a histogram (empty when read-only).
    pub fn batch_sizes(&self) -> crate::metrics::HistogramSnapshot {
        self.inner.writer.as_ref().map_or_else(
            || crate::metrics::HistogramSnapshot::empty(crate::metrics::BATCH_BUCKETS),
            |w| w.stats.sizes.snapshot(),
        )
    }

    /// Queues `msg` durably. Returns its id only once its frame is written and the
    /// journal fdatasynced: after `Ok`, a crash cannot lose the message, so the caller
    /// may answer `250`. Any `Err` means nothing was queued (answer `451`);
    /// [`QueueError::Duplicate`] if the id is queued already.
    ///
    /// The message's CRLF line ends are stored as LF (see [`super::file`]).
    pub async fn commit(&self, mut msg: NewMessage) -> Result<QueueId, QueueError> {
        let w = self.writer()?;
        let id = msg.envelope.id.clone();
        if msg.envelope.recipients.is_empty() {
            return Err(QueueError::NoRecipients(id));
        }
        if memchr::memchr(b'\r', &msg.body).is_some() {
            msg.body = file::to_lf(&msg.body);
        }
        if msg.body.len() > MAX_MESSAGE_BYTES {
            return Err(QueueError::TooLarge {
                id,
                size: msg.body.len(),
            });
        }
        let file = file::encode(&msg);
        drop(msg); // the encoded copy is the one that goes on; do not hold two
        self.submit(
            w,
            Op::Put {
                id: id.clone(),
                file,
                gap: None,
                new: true,
            },
        )
        .await?;
        self.inner.commits.send_modify(|n| *n += 1);
        Ok(id)
    }

    /// A new, empty spool file for the bytes of a message being received (see
    /// [`super::spool`]); it lives on the queue's filesystem and has no name.
    pub fn spool(&self) -> Result<Spool, QueueError> {
        self.writer()?;
        Spool::create(&spool_dir(&self.inner.root))
    }

    /// [`Store::commit`] for a message whose bytes are `msg.body[..at]`, then the bytes of
    /// `spool`, then `msg.body[at..]` (all with LF line ends). The committer copies the
    /// spool's bytes into the journal frame (in the kernel: `copy_file_range`) within the
    /// batch's one fdatasync; the same guarantees as [`Store::commit`] hold.
    pub async fn commit_spooled(
        &self,
        msg: NewMessage,
        at: usize,
        spool: Spool,
    ) -> Result<QueueId, QueueError> {
        let w = self.writer()?;
        let id = msg.envelope.id.clone();
        if msg.envelope.recipients.is_empty() {
            return Err(QueueError::NoRecipients(id));
        }
        let (file, gap) = spool.into_parts();
        let size = (msg.body.len() as u64).saturating_add(gap.len);
        if size > MAX_MESSAGE_BYTES as u64 {
            return Err(QueueError::TooLarge {
                id,
                size: size as usize,
            });
        }
        let (bytes, gap_at) = file::encode_with_gap(&msg, at, &gap);
        drop(msg);
        self.submit(
            w,
            Op::Put {
                id: id.clone(),
                file: bytes,
                gap: Some(FileGap {
                    at: gap_at,
                    file,
                    gap,
                }),
                new: true,
            },
        )
        .await?;
        self.inner.commits.send_modify(|n| *n += 1);
        Ok(id)
    }

    /// Changes after every successful [`Store::commit`] (the value counts them): the
    /// delivery runner waits on it to pick up new mail without polling.
    pub fn watch_commits(&self) -> watch::Receiver<u64> {
        self.inner.commits.subscribe()
    }

    /// Replaces the recipients' delivery states of message `id` durably (a new copy in
    /// the journal supersedes the old one). `recipients` must be the queued list in the
    /// same order with new states, optionally followed by targets of an expansion (each
    /// with [`super::Expanded`] set); anything else is [`QueueError::UpdateMismatch`]. The
    /// runner must not update one message from two tasks at once.
    pub async fn update(&self, id: &QueueId, recipients: Vec<Recipient>) -> Result<(), QueueError> {
        self.update_state(id, recipients, None).await
    }

    /// [`Store::update`], and the message's DSN state too when `notices` is given.
    pub async fn update_state(
        &self,
        id: &QueueId,
        recipients: Vec<Recipient>,
        notices: Option<Notices>,
    ) -> Result<(), QueueError> {
        self.rewrite(id, move |id, msg| {
            check_same_recipients(id, &msg.envelope.recipients, &recipients)?;
            msg.envelope.recipients = recipients;
            if let Some(n) = notices {
                msg.envelope.notices = n;
            }
            Ok(())
        })
        .await
    }

    /// Loads message `id`, lets `change` edit it, and puts the new copy in the journal
    /// (durably; it supersedes the old one).
    async fn rewrite<F>(&self, id: &QueueId, change: F) -> Result<(), QueueError>
    where
        F: FnOnce(&QueueId, &mut Message) -> Result<(), QueueError> + Send + 'static,
    {
        let w = self.writer()?;
        let (store, id2) = (self.clone(), id.clone());
        // Reading the current copy is file I/O: keep it off the async workers.
        let file = tokio::task::spawn_blocking(move || {
            let mut msg = store.load(&id2)?;
            change(&id2, &mut msg)?;
            Ok::<_, QueueError>(file::encode(&msg))
        })
        .await
        .map_err(|_| QueueError::CommitterGone)??;
        self.submit(
            w,
            Op::Put {
                id: id.clone(),
                file,
                gap: None,
                new: false,
            },
        )
        .await
    }

    /// Sets (`Some(reason)`) or clears (`None`) message `id`'s quarantine, durably
    /// (`sendmail -Q[reason] -q…`). A quarantined message is listed by `mailq -qQ` and tried
    /// only by `-qQ` runs.
    pub async fn set_quarantine(
        &self,
        id: &QueueId,
        reason: Option<String>,
    ) -> Result<(), QueueError> {
        self.rewrite(id, move |_, msg| {
            msg.envelope.quarantine = reason;
            Ok(())
        })
        .await
    }

    /// Removes message `id` from the queue (after delivery or bounce).
    /// [`QueueError::NotFound`] if it is not there.
    ///
    /// Returns once the removal is written to the journal (in the page cache: a killed
    /// daemon does not lose it), and it reaches stable storage with the next batch's
    /// fdatasync, at the latest [`REMOVE_SYNC_DELAY`] later. Only a crash of the machine
    /// in that window brings the message back, and then it is delivered again: a
    /// duplicate, never a loss (a removal only ever follows a delivery or a bounce that is
    /// queued already, durably) — the same bargain as the runner's delivery marks
    /// (`runner::marks`, never fsynced).
    pub async fn remove(&self, id: &QueueId) -> Result<(), QueueError> {
        let w = self.writer()?;
        self.submit(w, Op::Remove { id: id.clone() }).await
    }

    /// The ids of the queued messages, unordered; cheap (from memory).
    pub fn ids(&self) -> Result<Vec<QueueId>, QueueError> {
        Ok(Index::lock(&self.inner.index)
            .queued()
            .map(|(id, _)| id.clone())
            .collect())
    }

    /// The queued messages' ids that `keep` takes, looked at under the index's lock (only
    /// those are copied: the runner's pass after each commit skips the many in delivery
    /// without copying them). `keep` must not use the store.
    pub fn ids_where(&self, mut keep: impl FnMut(&QueueId) -> bool) -> Vec<QueueId> {
        Index::lock(&self.inner.index)
            .queued()
            .filter(|(id, _)| keep(id))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every message in the queue, in run order (priority, then arrival, then id).
    pub fn list(&self) -> Result<Vec<QueueEntrySummary>, QueueError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            match self.load(&id) {
                Ok(m) => out.push(QueueEntrySummary::of(&m)),
                Err(QueueError::NotFound(_)) => {} // removed meanwhile
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| {
            let (a, b) = (&a.envelope, &b.envelope);
            (a.priority, a.arrival, &a.id).cmp(&(b.priority, b.arrival, &b.id))
        });
        Ok(out)
    }

    /// The whole message `id`, checked. [`QueueError::NotFound`] if it is not queued.
    pub fn load(&self, id: &QueueId) -> Result<QueuedMessage, QueueError> {
        if let Some(loaded) = self.load_fresh(id) {
            return loaded;
        }
        let found = Index::lock(&self.inner.index).find(id);
        let (seg, loc) = found.ok_or_else(|| QueueError::NotFound(id.clone()))?;
        let mut bytes = vec![0; loc.len];
        seg.read_exact_at(&mut bytes, loc.offset)
            .map_err(|e| QueueError::io("read", self.inner.root.join("journal"), e))?;
        decode_copy(id, &bytes)
    }

    /// [`Store::load`] from memory when message `id` is among those committed last and not
    /// changed since ([`Fresh`]): no file I/O, so async code may call it on its own task;
    /// `None` otherwise (then [`Store::load`], off the async workers).
    pub fn load_fresh(&self, id: &QueueId) -> Option<Result<QueuedMessage, QueueError>> {
        let bytes = Index::lock(&self.inner.index).fresh.get(id)?;
        Some(decode_copy(id, &bytes))
    }

    /// Where the latest copy of `id` is in the journal, for a reader in another process
    /// (the local delivery agent, [`crate::privsep`]) to read it with [`read_copy`].
    pub fn locate(&self, id: &QueueId) -> Option<CopyRef> {
        let (_, loc) = Index::lock(&self.inner.index).find(id)?;
        Some(CopyRef {
            segment: loc.seg,
            offset: loc.offset,
            len: loc.len as u64,
        })
    }

    fn writer(&self) -> Result<&Writer, QueueError> {
        self.inner.writer.as_ref().ok_or(QueueError::ReadOnly)
    }

    /// Hands `op` to the committer and waits for its batch's fdatasync.
    async fn submit(&self, w: &Writer, op: Op) -> Result<(), QueueError> {
        let (done, wait) = oneshot::channel();
        w.committer
            .as_ref()
            .ok_or(QueueError::CommitterGone)?
            .send(Job { op, done })
            .map_err(|_| QueueError::CommitterGone)?;
        wait.await.map_err(|_| QueueError::CommitterGone)?
    }
}

/// Where one queue file copy is: segment number, offset and length inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyRef {
    pub segment: u64,
    pub offset: u64,
    pub len: u64,
}

/// Reads the copy of message `id` at `at` from the journal of queue `dir` without opening
/// the store (no lock, no replay): the bytes must lie inside the segment, decode as a
/// whole queue file (END record and checksum) and hold message `id`, else it is an error.
pub fn read_copy(dir: &Path, id: &QueueId, at: CopyRef) -> Result<QueuedMessage, QueueError> {
    let path = journal_dir(dir).join(segment_name(at.segment));
    // root (the delivery agent) reads here, in a directory the daemon's user owns: never
    // through a symlink, never blocking on a FIFO, regular files only
    use nix::fcntl::{OFlag, open, openat};
    let nofollow = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let f = open(
        &journal_dir(dir),
        nofollow | OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .and_then(|jdir| {
        openat(
            &jdir,
            segment_name(at.segment).as_str(),
            nofollow | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
            nix::sys::stat::Mode::empty(),
        )
    })
    .map(File::from)
    .map_err(std::io::Error::from)
    .and_then(crate::log::regular_only)
    .map_err(|e| QueueError::io("open", &path, e))?;
    let size = f
        .metadata()
        .map_err(|e| QueueError::io("stat", &path, e))?
        .len();
    let inside = at
        .offset
        .checked_add(at.len)
        .is_some_and(|end| end <= size && at.len as usize <= MAX_MESSAGE_BYTES + 4096);
    if !inside {
        return Err(QueueError::Corrupt {
            offset: 0,
            what: format!(
                "{id}: copy at {}+{} is outside {}",
                at.offset,
                at.len,
                path.display()
            ),
        });
    }
    let mut bytes = vec![0; at.len as usize];
    f.read_exact_at(&mut bytes, at.offset)
        .map_err(|e| QueueError::io("read", &path, e))?;
    decode_copy(id, &bytes)
}

/// A journal copy's bytes, which must be a whole queue file of message `id`.
fn decode_copy(id: &QueueId, bytes: &[u8]) -> Result<QueuedMessage, QueueError> {
    let msg = file::decode(bytes)?;
    if &msg.envelope.id != id {
        return Err(QueueError::Corrupt {
            offset: 0,
            what: format!("journal copy of {id} holds message {}", msg.envelope.id),
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
    if old.len() > new.len() {
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
    // Recipients may only be added by an expansion (each names its parent).
    if let Some(n) = new[old.len()..].iter().find(|n| n.expanded.is_none()) {
        return Err(mismatch(format!(
            "added recipient {:?} is not an expansion",
            n.address
        )));
    }
    Ok(())
}

fn sync_dir(d: &Path) -> Result<(), QueueError> {
    File::open(d)
        .and_then(|f| f.sync_all())
        .map_err(|e| QueueError::io("fsync directory", d, e))
}

// ---------------------------------------------------------------- replay

/// Reads every segment, oldest first, into an index. With `repair`, a segment is cut
/// back to its last whole frame (reported); without, replay of it just stops there.
fn replay(journal: &Path, repair: bool, report: &mut RecoveryReport) -> Result<Index, QueueError> {
    let mut seqs = Vec::new();
    for e in fs::read_dir(journal).map_err(|e| QueueError::io("read directory", journal, e))? {
        let e = e.map_err(|e| QueueError::io("read directory", journal, e))?;
        let name = e.file_name();
        let seq = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .filter(|h| h.len() == 16)
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        if let Some(seq) = seq {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();

    let mut index = Index::default();
    for seq in seqs {
        let path = journal.join(segment_name(seq));
        let opened = OpenOptions::new().read(true).write(repair).open(&path);
        let f = match opened {
            // Deleted by the daemon since the directory was read (read-only replay).
            Err(e) if !repair && e.kind() == io::ErrorKind::NotFound => continue,
            r => r.map_err(|e| QueueError::io("open", &path, e))?,
        };
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut &f, &mut bytes).map_err(|e| QueueError::io("read", &path, e))?;
        index
            .segments
            .insert(seq, Segment::new(Arc::new(f), bytes.len() as u64));
        let mut pos = 0usize;
        loop {
            match file::read_frame(&bytes[pos..]) {
                FrameRead::End => break,
                FrameRead::Frame { frame, len } => {
                    match frame {
                        Frame::Put { id, file } => {
                            let offset = (pos + len - file.len()) as u64;
                            index.apply(
                                &id,
                                seq,
                                Some(Loc {
                                    seg: seq,
                                    offset,
                                    len: file.len(),
                                }),
                            );
                        }
                        Frame::Remove { id } => index.apply(&id, seq, None),
                    }
                    pos += len;
                }
                FrameRead::Torn(_) if bytes[pos..].iter().all(|&b| b == 0) => {
                    // The zeroed bytes written ahead of the frames (see
                    // `Committer::preallocate`): the end, nothing lost. Cut off here so
                    // the segment (no longer the active one) holds only frames.
                    if let Some(seg) = index.segments.get_mut(&seq) {
                        seg.len = pos as u64;
                        if repair {
                            let _ = seg.file.set_len(pos as u64);
                        }
                    }
                    break;
                }
                FrameRead::Torn(why) => {
                    if repair {
                        let Some(seg) = index.segments.get_mut(&seq) else {
                            break;
                        };
                        seg.len = pos as u64;
                        let seg = &seg.file;
                        seg.set_len(pos as u64)
                            .and_then(|()| seg.sync_all())
                            .map_err(|e| QueueError::io("truncate", &path, e))?;
                        report.truncated.push((
                            segment_name(seq),
                            (bytes.len() - pos) as u64,
                            why.to_string(),
                        ));
                    }
                    break;
                }
            }
        }
    }
    Ok(index)
}

// ---------------------------------------------------------------- the committer thread

/// Writes `buf` to `f` at `pos` with the spool files of `splices` copied in between;
/// returns the end position.
fn write_spliced(f: &File, mut pos: u64, buf: &[u8], splices: &[Splice]) -> io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut from = 0;
    for s in splices {
        f.write_all_at(&buf[from..s.at], pos)?;
        pos += (s.at - from) as u64;
        from = s.at;
        // io::copy between files is copy_file_range(2) on Linux: the bytes never pass
        // through this process. Only the committer thread moves the segment's cursor
        // (readers use positioned reads).
        let (mut src, mut dst) = (s.file, f);
        src.seek(SeekFrom::Start(0))?;
        dst.seek(SeekFrom::Start(pos))?;
        let copied = io::copy(&mut src.take(s.len), &mut dst)?;
        if copied != s.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("spool file has {copied} of {} bytes", s.len),
            ));
        }
        pos += s.len;
    }
    f.write_all_at(&buf[from..], pos)?;
    Ok(pos + (buf.len() - from) as u64)
}

/// Deletes what is left in the spool directory (files of messages being received when a
/// process died; see [`super::spool`]); returns their names.
fn sweep_spool(dir: &Path) -> Result<Vec<String>, QueueError> {
    let mut removed = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| QueueError::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| QueueError::io("read directory", dir, e))?;
        let path = entry.path();
        fs::remove_file(&path).map_err(|e| QueueError::io("remove", &path, e))?;
        removed.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(removed)
}

enum Op {
    /// A queue file for `id`: a new message (`new`: the id must not be queued) or a
    /// rewrite (the id must be queued).
    Put {
        id: QueueId,
        file: Vec<u8>,
        /// Bytes of the file that are in a spool file, not in `file`.
        gap: Option<FileGap>,
        new: bool,
    },
    Remove {
        id: QueueId,
    },
}

/// The part of a queue file kept in a spool file: it belongs at `at` in the file's bytes.
struct FileGap {
    at: usize,
    file: Arc<File>,
    gap: file::Gap,
}

/// Where, in a batch's buffer, the bytes of a spool file go.
struct Splice<'a> {
    /// Offset in the buffer.
    at: usize,
    file: &'a File,
    len: u64,
}

struct Job {
    op: Op,
    done: oneshot::Sender<Result<(), QueueError>>,
}

struct ActiveSegment {
    seq: u64,
    file: Arc<File>,
    /// Bytes of frames.
    len: u64,
    /// End of the zeroed, synced bytes written ahead of the frames (0: none yet).
    allocated: u64,
}

impl ActiveSegment {
    /// Creates segment `seq` and makes its name durable before anything is written to it.
    fn create(journal: &Path, seq: u64, mode: u32) -> Result<ActiveSegment, QueueError> {
        let path = journal.join(segment_name(seq));
        // A journal its group may read (the submission group's `mailq`, see `setgid`) gets
        // group-readable segments; otherwise QueueFileMode as it is.
        let group_reads = fs::metadata(journal).is_ok_and(|m| m.permissions().mode() & 0o040 != 0);
        let mode = if group_reads { mode | 0o040 } else { mode };
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| QueueError::io("create", &path, e))?;
        // Exactly QueueFileMode, whatever the umask took away.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| QueueError::io("chmod", &path, e))?;
        sync_dir(journal)?;
        Ok(ActiveSegment {
            seq,
            file: Arc::new(f),
            len: 0,
            allocated: 0,
        })
    }
}

struct Committer {
    options: StoreOptions,
    journal: PathBuf,
    active: ActiveSegment,
    index: Arc<Mutex<Index>>,
    stats: Arc<Counters>,
    /// Frames (removals) written to the active segment and not fdatasynced yet
    /// ([`Store::remove`]).
    unsynced: usize,
}

/// How long written removals may wait for the next batch's fdatasync before the committer,
/// idle, syncs them on its own ([`Store::remove`], [`StoreOptions::remove_sync_delay`]).
pub const REMOVE_SYNC_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

impl Committer {
    /// Runs until every [`Store`] clone is dropped.
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut waiting = None;
        loop {
            let first = match waiting.take() {
                Some(j) => j,
                None if self.unsynced > 0 => {
                    match rx.recv_timeout(self.options.remove_sync_delay) {
                        Ok(j) => j,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.sync_removals();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(j) => j,
                    Err(_) => break,
                },
            };
            let mut batch = vec![first];
            batch.extend(rx.try_iter().take(MAX_BATCH - 1));
            let results = self.write_batch(&batch);
            for (j, r) in batch.into_iter().zip(results) {
                let _ = j.done.send(r);
            }
            // Errors here leave the queue correct (only space is not reclaimed yet, or
            // the next batch appends instead of overwriting); the next round tries again.
            let _ = self.maintain();
            // Zeros ahead only while nothing waits: under load the batches are large, one
            // size change is shared by many messages, and zeros would double the bytes
            // written (100 committers: 80k/s appending, 59–66k/s with zeros ahead).
            match rx.try_recv() {
                Ok(j) => waiting = Some(j),
                Err(mpsc::TryRecvError::Empty) => {
                    let _ = self.preallocate();
                }
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        }
        self.sync_removals();
        // A clean stop leaves the segment as long as its frames (a zeroed tail would
        // only be skipped by the next replay).
        let _ = self.active.file.set_len(self.active.len);
    }

    /// fdatasyncs removals written without a sync (a failure leaves them for the next try).
    fn sync_removals(&mut self) {
        if self.unsynced > 0 && self.active.file.sync_data().is_ok() {
            self.synced();
        }
    }

    /// An fdatasync of the active segment succeeded: every frame written is durable
    /// (counted with the frames it covered).
    fn synced(&mut self) {
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.sizes.observe(self.unsynced as f64);
        self.unsynced = 0;
    }

    /// Checks each op against the index, writes the frames of the valid ones with one
    /// write and one fdatasync, then applies them to the index.
    fn write_batch(&mut self, batch: &[Job]) -> Vec<Result<(), QueueError>> {
        let mut results = Vec::with_capacity(batch.len());
        let mut buf = Vec::new();
        let mut splices = Vec::new();
        // Bytes of the splices so far: they sit in the segment, not in `buf`.
        let mut spliced = 0u64;
        let mut applied = Vec::new();
        {
            let index = Index::lock(&self.index);
            // Ids this batch has already put (true) or removed (false).
            let mut in_batch: HashMap<&QueueId, bool> = HashMap::new();
            for (i, j) in batch.iter().enumerate() {
                let (id, want_queued) = match &j.op {
                    Op::Put { id, new, .. } => (id, !new),
                    Op::Remove { id } => (id, true),
                };
                let queued = in_batch
                    .get(id)
                    .copied()
                    .unwrap_or_else(|| index.is_queued(id));
                if queued != want_queued {
                    results.push(Err(if queued {
                        QueueError::Duplicate(id.clone())
                    } else {
                        QueueError::NotFound(id.clone())
                    }));
                    continue;
                }
                let at = self.active.len + buf.len() as u64 + spliced;
                match &j.op {
                    Op::Put {
                        id,
                        file,
                        gap: Some(g),
                        ..
                    } => {
                        let start = buf.len();
                        let (off, gap_pos) =
                            file::put_frame_with_gap(&mut buf, id, file, g.at, &g.gap);
                        splices.push(Splice {
                            at: start + gap_pos,
                            file: &g.file,
                            len: g.gap.len,
                        });
                        spliced += g.gap.len;
                        in_batch.insert(id, true);
                        applied.push((
                            i,
                            Some(Loc {
                                seg: self.active.seq,
                                offset: at + off as u64,
                                len: file.len() + g.gap.len as usize,
                            }),
                        ));
                    }
                    Op::Put { id, file, .. } => {
                        let off = file::put_frame(&mut buf, id, file);
                        in_batch.insert(id, true);
                        applied.push((
                            i,
                            Some(Loc {
                                seg: self.active.seq,
                                offset: at + off as u64,
                                len: file.len(),
                            }),
                        ));
                    }
                    Op::Remove { id } => {
                        file::remove_frame(&mut buf, id);
                        in_batch.insert(id, false);
                        applied.push((i, None));
                    }
                }
                results.push(Ok(()));
            }
        }
        if applied.is_empty() {
            return results;
        }
        // A batch of removals only is written but not synced (see [`Store::remove`]).
        let sync = applied
            .iter()
            .any(|(i, _)| !matches!(batch[*i].op, Op::Remove { .. }));
        if let Err(e) = self.append(&buf, &splices, sync) {
            for (i, _) in &applied {
                results[*i] = Err(QueueError::io(
                    "append to",
                    self.active_path(),
                    io::Error::from(e.kind()),
                ));
            }
            return results;
        }
        self.unsynced += applied.len();
        if sync {
            self.synced();
        }
        self.stats
            .ops
            .fetch_add(applied.len() as u64, Ordering::Relaxed);
        let mut index = Index::lock(&self.index);
        if let Some(s) = index.segments.get_mut(&self.active.seq) {
            s.len = self.active.len;
        }
        for (i, loc) in applied {
            match &batch[i].op {
                Op::Put { id, file, gap, new } => {
                    index.apply(id, self.active.seq, loc);
                    // A new message is what the runner loads next (background delivery).
                    if *new && gap.is_none() {
                        index.fresh.insert(id, file);
                    }
                }
                Op::Remove { id } => index.apply(id, self.active.seq, None),
            }
        }
        results
    }

    /// Appends `buf` to the active segment and fdatasyncs it. On failure (a full disk, for
    /// one) the segment is cut back to its last acknowledged frame and abandoned (a new one
    /// is started), so no later frame sits behind a broken one and nothing acknowledged is
    /// touched.
    ///
    /// `splices` put the bytes of spool files between those of `buf`, in order.
    fn append(&mut self, buf: &[u8], splices: &[Splice], sync: bool) -> io::Result<()> {
        let f = &self.active.file;
        let written = write_spliced(f, self.active.len, buf, splices).and_then(|end| {
            if sync {
                f.sync_data()?;
            }
            Ok(end)
        });
        match written {
            Ok(end) => {
                self.active.len = end;
                self.active.allocated = self.active.allocated.max(self.active.len);
                Ok(())
            }
            Err(e) => {
                // Give back what a partial write took (a full disk must not stay fuller
                // for each refused message), then leave this segment behind.
                let _ = f.set_len(self.active.len);
                self.active.allocated = self.active.len;
                let _ = self.roll_over();
                Err(e)
            }
        }
    }

    /// Keeps zeroed bytes, written and fdatasynced, ahead of the active segment's frames,
    /// so that a batch overwrites blocks the file already has: its fdatasync then writes
    /// the data and changes no metadata (the size stays), which costs no ext4 journal
    /// commit. On this machine's disk (`shared/bench/results/fsync-run1.txt`) that is
    /// ≈8,000 fdatasyncs/s against ≈3,700/s when every batch makes the file longer: the
    /// latency of one commit when one client sends at a time. Runs after a batch is
    /// acknowledged when no commit waits, one chunk at a time, up to the segment's size,
    /// and not near a full disk ([`PREALLOC_MIN_FREE`]). A failure gives the space back
    /// and changes nothing else: the next batch appends.
    ///
    /// Replay reads zeros after the last frame as the end of the segment (a frame starts
    /// with [`file::FRAME_MAGIC`]); a torn frame inside them fails its CRC and is cut as any.
    fn preallocate(&mut self) -> io::Result<()> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let a = &mut self.active;
        let from = a.allocated.max(a.len);
        if from >= a.len + PREALLOC_LOW {
            return Ok(());
        }
        // Never past the segment's size: a closed segment keeps no zeroed tail.
        let to = (from + PREALLOC_CHUNK).min(self.options.segment_bytes);
        if to <= from {
            return Ok(());
        }
        let free = nix::sys::statvfs::fstatvfs(&*a.file)
            .map(|st| st.blocks_available() * st.fragment_size().max(1))
            .map_err(io::Error::from)?;
        if free < PREALLOC_MIN_FREE {
            return Ok(());
        }
        let mut at = from;
        let written = loop {
            if at >= to {
                break a.file.sync_data();
            }
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            if let Err(e) = a.file.write_all_at(&ZEROS[..n], at) {
                break Err(e);
            }
            at += n as u64;
        };
        match written {
            Ok(()) => {
                a.allocated = to;
                Ok(())
            }
            Err(e) => {
                let _ = a.file.set_len(from);
                Err(e)
            }
        }
    }

    fn active_path(&self) -> PathBuf {
        self.journal.join(segment_name(self.active.seq))
    }

    fn roll_over(&mut self) -> Result<(), QueueError> {
        // The segment left behind has all its frames on stable storage.
        self.sync_removals();
        let next =
            ActiveSegment::create(&self.journal, self.active.seq + 1, self.options.file_mode)?;
        Index::lock(&self.index)
            .segments
            .insert(next.seq, Segment::new(next.file.clone(), 0));
        self.active = next;
        Ok(())
    }

    /// Whether no queued message has its latest copy in the active segment (it would be
    /// deleted as soon as it is closed, unless its removals still cancel older copies).
    fn active_is_dead(&self) -> bool {
        let index = Index::lock(&self.index);
        index
            .segments
            .get(&self.active.seq)
            .is_some_and(|s| s.live == 0)
    }

    /// Closes a full segment, copies the live messages of the sparsest old segment
    /// forward, and deletes segments nothing depends on any more.
    fn maintain(&mut self) -> Result<(), QueueError> {
        if self.active.len >= self.options.segment_bytes
            || (self.active.len >= self.options.empty_roll_bytes && self.active_is_dead())
        {
            self.roll_over()?;
        }
        let sparsest = Index::lock(&self.index).sparsest(self.active.seq);
        if let Some(seq) = sparsest {
            self.copy_forward(seq)?;
        }
        delete_dead_segments(
            &mut Index::lock(&self.index),
            &self.journal,
            self.active.seq,
        )?;
        Ok(())
    }

    /// Writes the live messages of segment `seq` again into the active one, so that `seq`
    /// holds nothing live any more.
    fn copy_forward(&mut self, seq: u64) -> Result<(), QueueError> {
        let live: Vec<(QueueId, Arc<File>, Loc)> = {
            let index = Index::lock(&self.index);
            let Some(seg) = index.segments.get(&seq) else {
                return Ok(());
            };
            index
                .queued()
                .filter(|(_, l)| l.seg == seq)
                .map(|(id, l)| (id.clone(), seg.file.clone(), l))
                .collect()
        };
        let mut buf = Vec::new();
        let mut moved = Vec::new();
        for (id, f, loc) in live {
            let mut bytes = vec![0; loc.len];
            f.read_exact_at(&mut bytes, loc.offset)
                .map_err(|e| QueueError::io("read", self.journal.join(segment_name(seq)), e))?;
            let start = buf.len();
            let off = file::put_frame(&mut buf, &id, &bytes);
            moved.push((id, start + off, bytes.len()));
        }
        if moved.is_empty() {
            return Ok(());
        }
        let base = self.active.len;
        self.append(&buf, &[], true)
            .map_err(|e| QueueError::io("append to", self.active_path(), e))?;
        if self.unsynced > 0 {
            self.synced(); // that fdatasync covered the removals written before
        }
        let active = self.active.seq;
        let mut index = Index::lock(&self.index);
        if let Some(s) = index.segments.get_mut(&active) {
            s.len = self.active.len;
        }
        for (id, at, len) in moved {
            // The committer is the only writer, so nothing superseded these copies meanwhile.
            index.apply(
                &id,
                active,
                Some(Loc {
                    seg: active,
                    offset: base + at as u64,
                    len,
                }),
            );
        }
        Ok(())
    }
}

/// Deletes the segments (never `keep`) that nothing depends on, in rounds: the directory
/// is fsynced after each round, before the segments that depended on those become
/// deletable, so a crash can never bring back a `Put` whose `Remove` is already gone.
/// Returns what it deleted.
fn delete_dead_segments(
    index: &mut Index,
    journal: &Path,
    keep: u64,
) -> Result<Vec<u64>, QueueError> {
    let mut deleted = Vec::new();
    loop {
        let round = index.deletable(keep);
        if round.is_empty() {
            return Ok(deleted);
        }
        for seq in &round {
            let p = journal.join(segment_name(*seq));
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(QueueError::io("remove", &p, e)),
            }
        }
        sync_dir(journal)?;
        for seq in round {
            index.drop_segment(seq);
            deleted.push(seq);
        }
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
    fn the_agent_reads_a_journal_copy_never_from_a_fifo_or_through_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let j = d.path().join("journal");
        fs::create_dir(&j).unwrap();
        let at = CopyRef {
            segment: 1,
            offset: 0,
            len: 10,
        };
        // a FIFO planted where a segment would be: an error at once, not a hang
        nix::unistd::mkfifo(
            &j.join(segment_name(1)),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let e = read_copy(d.path(), &id("AAAAAAAAAAAA"), at).unwrap_err();
        assert!(e.to_string().contains("Regular files only"), "{e}");
        // a symlink to a file elsewhere, and a journal directory that is a symlink
        fs::remove_file(j.join(segment_name(1))).unwrap();
        fs::write(d.path().join("elsewhere"), [0u8; 64]).unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere"), j.join(segment_name(1))).unwrap();
        let e = read_copy(d.path(), &id("AAAAAAAAAAAA"), at).unwrap_err();
        assert!(e.to_string().contains("os error 40"), "{e}");
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&j, other.path().join("journal")).unwrap();
        let e = read_copy(other.path(), &id("AAAAAAAAAAAA"), at).unwrap_err();
        assert!(e.to_string().contains("Not a directory"), "{e}");
    }

    fn segments(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(root.join("journal"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn queued_ids(store: &Store) -> Vec<String> {
        let mut v: Vec<String> = store.ids().unwrap().iter().map(|i| i.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_spooled_message_is_committed_whole_among_others_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mq");
        let store = Store::open(&root).unwrap();
        let rt = rt();
        // 3 MiB of spool in 1 MiB appends, between a head and a tail kept in memory.
        let mut sp = store.spool().unwrap();
        assert_eq!(
            fs::read_dir(root.join("spool")).unwrap().count(),
            0,
            "unnamed"
        );
        let mut middle = Vec::new();
        for i in 0..3u8 {
            let chunk = vec![b'a' + i; 1 << 20];
            middle.extend_from_slice(&chunk);
            rt.block_on(sp.append(chunk)).unwrap();
        }
        let mut big = message("Q2", &["root"]);
        big.body = b"Subject: big\n\nhead|tail\n".to_vec();
        let at = big.body.iter().position(|&b| b == b'|').unwrap() + 1;
        let (a, b, c) = rt.block_on(async {
            tokio::join!(
                store.commit(message("Q1", &["root"])),
                store.commit_spooled(big, at, sp),
                store.commit(message("Q3", &["root"])),
            )
        });
        a.unwrap();
        b.unwrap();
        c.unwrap();
        let mut whole = b"Subject: big\n\nhead|".to_vec();
        whole.extend_from_slice(&middle);
        whole.extend_from_slice(b"tail\n");
        assert!(store.load(&id("Q2")).unwrap().body == whole);
        assert_eq!(
            store.load(&id("Q3")).unwrap().body,
            b"Subject: Q3\n\nbody of Q3\n"
        );
        drop(store);
        // A spool file left by a crash between create and unlink is swept at the next open.
        fs::write(root.join("spool").join("123.0"), b"partial").unwrap();
        let store = Store::open(&root).unwrap();
        assert_eq!(store.recovery_report().removed_spool, ["123.0"]);
        assert_eq!(fs::read_dir(root.join("spool")).unwrap().count(), 0);
        assert!(store.load(&id("Q2")).unwrap().body == whole);
        assert_eq!(store.ids().unwrap().len(), 3);
    }

    #[test]
    fn committed_message_is_queued_with_lf_line_ends_and_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mq");
        let store = Store::open(&root).unwrap();
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

        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("journal")), 0o700);
        let segs = segments(&root);
        assert_eq!(segs, ["0000000000000001.seg"]);
        assert_eq!(mode(&root.join("journal").join(&segs[0])), 0o600);
        assert_eq!(
            store.committer_stats(),
            CommitterStats { batches: 1, ops: 1 }
        );
        // the batch of one frame, in the batch-size histogram's first bucket
        let sizes = store.batch_sizes();
        assert_eq!((sizes.counts[0], sizes.count(), sizes.sum), (1, 1, 1.0));
    }

    #[test]
    fn queue_file_mode_is_the_segments_mode_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("q");
        let s = Store::open_with(&root, StoreOptions::with_file_mode(Some(0o660))).unwrap();
        drop(s);
        let segs: Vec<_> = std::fs::read_dir(root.join("journal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!segs.is_empty());
        for seg in segs {
            assert_eq!(mode(&seg), 0o660, "{}", seg.display());
        }
    }

    #[test]
    fn the_queue_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let store = Store::open(dir.path()).unwrap();
            for q in ["A", "B", "C"] {
                rt.block_on(store.commit(message(q, &["x"]))).unwrap();
            }
            rt.block_on(store.remove(&id("B"))).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(queued_ids(&store), ["A", "C"]);
        assert_eq!(
            store.load(&id("C")).unwrap().body,
            b"Subject: C\n\nbody of C\n"
        );
        // The first segment still holds A and C; the reopened store appends to a new one.
        assert_eq!(segments(dir.path()).len(), 2);
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

        // Two sessions committing one id at the same time: exactly one wins.
        let (a, b) = rt.block_on(async {
            tokio::join!(
                store.commit(message("Q2", &["a"])),
                store.commit(message("Q2", &["b"]))
            )
        });
        assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
        assert!(matches!(
            a.err().or(b.err()),
            Some(QueueError::Duplicate(_))
        ));
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
        assert_eq!(queued_ids(&store), ["Q1", "Q2"]);
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
            rt.block_on(store.update(&id("NOPE"), rcpts.clone())),
            Err(QueueError::NotFound(_))
        ));

        // An expansion adds its targets after the queued recipients, durably.
        let mut grown = rcpts.clone();
        let mut target = Recipient::new("bob@remote.example");
        target.expanded = Some(crate::queue::Expanded {
            parent: "a@x".into(),
            owner: Some("alice".into()),
        });
        grown.push(target);
        rt.block_on(store.update(&id("Q1"), grown.clone())).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load(&id("Q1")).unwrap().envelope.recipients, grown);
        // ... but nothing else may add recipients.
        let mut smuggled = grown.clone();
        smuggled.push(Recipient::new("eve@evil.example"));
        assert!(matches!(
            rt.block_on(store.update(&id("Q1"), smuggled)),
            Err(QueueError::UpdateMismatch { .. })
        ));
    }

    #[test]
    fn a_new_message_loads_from_memory_as_written_until_changed_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rt = rt();
        rt.block_on(store.commit(message("Q1", &["a@x", "b@y"])))
            .unwrap();
        // The copy in memory is the one on disk.
        let fresh = store
            .load_fresh(&id("Q1"))
            .expect("just committed")
            .unwrap();
        let Some((seg, loc)) = Index::lock(&store.inner.index).find(&id("Q1")) else {
            panic!("not queued")
        };
        let mut on_disk = vec![0; loc.len];
        seg.read_exact_at(&mut on_disk, loc.offset).unwrap();
        assert_eq!(fresh, decode_copy(&id("Q1"), &on_disk).unwrap());
        assert_eq!(fresh.body, b"Subject: Q1\n\nbody of Q1\n");

        // An update supersedes it: read from the journal from then on, with the change.
        let mut rcpts = fresh.envelope.recipients.clone();
        rcpts[0].state = DeliveryState::Done;
        rt.block_on(store.update(&id("Q1"), rcpts.clone())).unwrap();
        assert!(store.load_fresh(&id("Q1")).is_none());
        assert_eq!(store.load(&id("Q1")).unwrap().envelope.recipients, rcpts);

        // A removed message is not served from memory either.
        rt.block_on(store.commit(message("Q2", &["c@z"]))).unwrap();
        assert!(store.load_fresh(&id("Q2")).is_some());
        rt.block_on(store.remove(&id("Q2"))).unwrap();
        assert!(store.load_fresh(&id("Q2")).is_none());
        assert!(matches!(
            store.load(&id("Q2")),
            Err(QueueError::NotFound(_))
        ));

        // The memory is bounded: the oldest copies make room for the newest.
        let mut big = message("Q3", &["d@w"]);
        big.body = vec![b'x'; FRESH_BYTES / 10];
        let n = 20;
        for i in 0..n {
            let mut m = big.clone();
            m.envelope.id = id(&format!("B{i:02}"));
            rt.block_on(store.commit(m)).unwrap();
        }
        let index = Index::lock(&store.inner.index);
        assert!(index.fresh.bytes <= FRESH_BYTES, "{}", index.fresh.bytes);
        assert!(index.fresh.get(&id(&format!("B{:02}", n - 1))).is_some());
        assert!(index.fresh.get(&id("B00")).is_none());
        assert!(index.fresh.order.len() <= 2 * index.fresh.files.len() + 64);
        drop(index);
        // ... and those pushed out still load, from the journal.
        assert_eq!(store.load(&id("B00")).unwrap().body.len(), FRESH_BYTES / 10);
    }

    #[test]
    fn a_removal_is_written_at_once_and_synced_by_the_next_batch_or_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            remove_sync_delay: std::time::Duration::from_secs(3600),
            ..StoreOptions::default()
        };
        let store = Store::open_with(dir.path(), opts).unwrap();
        let rt = rt();
        rt.block_on(store.commit(message("Q1", &["a"]))).unwrap();
        assert_eq!(
            store.committer_stats(),
            CommitterStats { batches: 1, ops: 1 }
        );
        // The removal costs no fdatasync of its own ...
        rt.block_on(store.remove(&id("Q1"))).unwrap();
        assert_eq!(
            store.committer_stats(),
            CommitterStats { batches: 1, ops: 2 }
        );
        // ... but is in the journal at once: another process reading the queue (mailq, or
        // the next daemon after a kill) finds the message gone.
        let reader = Store::open_read_only(dir.path()).unwrap();
        assert!(reader.ids().unwrap().is_empty());
        // The next commit's fdatasync covers it.
        rt.block_on(store.commit(message("Q2", &["b"]))).unwrap();
        assert_eq!(
            store.committer_stats(),
            CommitterStats { batches: 2, ops: 3 }
        );
        drop(store);
        assert_eq!(queued_ids(&Store::open(dir.path()).unwrap()), ["Q2"]);

        // With nothing else to write, the idle committer syncs it after the delay.
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            remove_sync_delay: std::time::Duration::from_millis(1),
            ..StoreOptions::default()
        };
        let store = Store::open_with(dir.path(), opts).unwrap();
        rt.block_on(store.commit(message("Q1", &["a"]))).unwrap();
        rt.block_on(store.remove(&id("Q1"))).unwrap();
        let mut synced = false;
        for _ in 0..1000 {
            if store.committer_stats() == (CommitterStats { batches: 2, ops: 2 }) {
                synced = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(synced, "{:?}", store.committer_stats());
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
        // The id may be used again once the message is gone.
        rt.block_on(store.commit(message("Q1", &["b"]))).unwrap();
        assert_eq!(
            store.load(&id("Q1")).unwrap().envelope.recipients[0].address,
            "b"
        );
    }

    #[test]
    fn open_cuts_a_torn_frame_off_and_keeps_everything_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let store = Store::open(dir.path()).unwrap();
            rt.block_on(store.commit(message("GOOD", &["a"]))).unwrap();
        }
        // A batch cut short by a crash: half of a frame at the end of the segment.
        let seg = dir.path().join("journal/0000000000000001.seg");
        let mut torn = Vec::new();
        file::put_frame(
            &mut torn,
            &id("HALF"),
            &file::encode(&message("HALF", &["a"])),
        );
        let mut bytes = fs::read(&seg).unwrap();
        let good_len = bytes.len() as u64;
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        fs::write(&seg, &bytes).unwrap();

        let store = Store::open(dir.path()).unwrap();
        let r = store.recovery_report();
        assert_eq!(r.truncated.len(), 1, "{r:?}");
        assert_eq!(
            (r.truncated[0].0.as_str(), r.truncated[0].1),
            ("0000000000000001.seg", (torn.len() / 2) as u64)
        );
        assert_eq!(fs::metadata(&seg).unwrap().len(), good_len);
        assert_eq!(queued_ids(&store), ["GOOD"]);
        rt.block_on(store.commit(message("NEXT", &["a"]))).unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        assert!(store.recovery_report().truncated.is_empty());
        assert_eq!(queued_ids(&store), ["GOOD", "NEXT"]);
    }

    /// The active segment as a crash would leave it: frames, then the zeroed bytes
    /// written ahead of them (copied while the store runs); and the frames' length.
    fn crash_image(names: &[&str]) -> (Vec<u8>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let store = Store::open(dir.path()).unwrap();
        for q in names {
            rt.block_on(store.commit(message(q, &["x"]))).unwrap();
        }
        // The committer writes the zeros once it is idle, after the last reply.
        let seg = dir.path().join("journal/0000000000000001.seg");
        let start = std::time::Instant::now();
        while fs::metadata(&seg).unwrap().len() < PREALLOC_LOW {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "no zeros ahead"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let image = fs::read(&seg).unwrap();
        let mut frames = 0;
        while let FrameRead::Frame { len, .. } = file::read_frame(&image[frames..]) {
            frames += len;
        }
        drop(store);
        assert_eq!(
            fs::metadata(dir.path().join("journal/0000000000000001.seg"))
                .unwrap()
                .len(),
            frames as u64,
            "a clean stop leaves only the frames"
        );
        (image, frames)
    }

    fn open_image(image: &[u8]) -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("journal")).unwrap();
        fs::write(d.path().join("journal/0000000000000001.seg"), image).unwrap();
        let store = Store::open(d.path()).unwrap();
        (d, store)
    }

    #[test]
    fn the_active_segment_is_zeroed_ahead_and_that_tail_is_no_damage() {
        let (image, frames) = crash_image(&["A", "B"]);
        assert!(
            image.len() >= frames + PREALLOC_LOW as usize,
            "{} bytes of frames in a file of {}",
            frames,
            image.len()
        );
        assert!(image[frames..].iter().all(|&b| b == 0));
        let (d, store) = open_image(&image);
        assert!(store.recovery_report().truncated.is_empty());
        assert_eq!(queued_ids(&store), ["A", "B"]);
        let seg = d.path().join("journal/0000000000000001.seg");
        assert_eq!(fs::metadata(seg).unwrap().len(), frames as u64);
    }

    #[test]
    fn a_torn_frame_inside_the_zeroed_tail_is_cut_and_reported() {
        let (mut image, frames) = crash_image(&["A", "B"]);
        let mut torn = Vec::new();
        file::put_frame(
            &mut torn,
            &id("HALF"),
            &file::encode(&message("HALF", &["a"])),
        );
        let half = &torn[..torn.len() / 2];
        image[frames..frames + half.len()].copy_from_slice(half);
        let (_d, store) = open_image(&image);
        let r = store.recovery_report();
        assert_eq!(r.truncated.len(), 1, "{r:?}");
        assert_eq!(r.truncated[0].1, (image.len() - frames) as u64);
        assert_eq!(queued_ids(&store), ["A", "B"]);

        // A page of a batch that reached the disk without the pages before it.
        let (mut image, frames) = crash_image(&["A", "B"]);
        image[frames + 8192] = 0xA5;
        let (_d, store) = open_image(&image);
        assert_eq!(store.recovery_report().truncated.len(), 1);
        assert_eq!(queued_ids(&store), ["A", "B"]);
    }

    #[test]
    fn a_segment_cut_anywhere_reopens_to_the_whole_frames_before_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let store = Store::open(dir.path()).unwrap();
            for q in ["A", "B", "C"] {
                rt.block_on(store.commit(message(q, &["x"]))).unwrap();
            }
        }
        let seg = fs::read(dir.path().join("journal/0000000000000001.seg")).unwrap();
        let frame_len = seg.len() / 3; // three frames of equal size
        for cut in (0..=seg.len()).step_by(7).chain([frame_len, 2 * frame_len]) {
            let d = tempfile::tempdir().unwrap();
            fs::create_dir_all(d.path().join("journal")).unwrap();
            fs::write(d.path().join("journal/0000000000000001.seg"), &seg[..cut]).unwrap();
            let store = Store::open(d.path()).unwrap();
            let want = ["A", "B", "C"][..cut / frame_len].to_vec();
            assert_eq!(queued_ids(&store), want, "cut at {cut}");
            let torn = store.recovery_report().truncated.len();
            assert_eq!(torn, usize::from(cut % frame_len != 0), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_segment_bytes_are_cut_off_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("journal")).unwrap();
        fs::write(
            dir.path().join("journal/0000000000000001.seg"),
            b"From junk\n\x00\x01",
        )
        .unwrap();
        fs::write(dir.path().join("journal/notes.txt"), b"ignored").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.recovery_report().truncated.len(), 1);
        assert!(store.list().unwrap().is_empty());
        // The emptied segment held nothing live: it was deleted at open.
        assert_eq!(
            store.recovery_report().removed_segments,
            ["0000000000000001.seg"]
        );
    }

    #[test]
    fn full_segments_roll_over_and_dead_or_sparse_ones_are_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            segment_bytes: 4 * 1024,
            ..StoreOptions::default()
        };
        let store = Store::open_with(dir.path(), opts).unwrap();
        let rt = rt();
        // Long-lived (deferred) messages, then a stream of mail that is delivered at once.
        for q in ["DEFERRED1", "DEFERRED2"] {
            rt.block_on(store.commit(message(q, &["slow@x"]))).unwrap();
        }
        let mut most = 0;
        for i in 0..300 {
            let q = format!("M{i}");
            rt.block_on(store.commit(message(&q, &["a"]))).unwrap();
            if i % 50 == 7 {
                // An update supersedes the old copy.
                let mut r = store.load(&id("DEFERRED2")).unwrap().envelope.recipients;
                r[0].tries += 1;
                rt.block_on(store.update(&id("DEFERRED2"), r)).unwrap();
            }
            rt.block_on(store.remove(&id(&q))).unwrap();
            most = most.max(segments(dir.path()).len());
        }
        assert!(most <= 4, "segments pile up: {most}");
        assert_eq!(queued_ids(&store), ["DEFERRED1", "DEFERRED2"]);
        // The deferred messages were copied forward; the first segments are gone.
        assert!(!segments(dir.path()).contains(&"0000000000000001.seg".to_string()));
        assert_eq!(
            store.load(&id("DEFERRED1")).unwrap().body,
            b"Subject: DEFERRED1\n\nbody of DEFERRED1\n"
        );
        assert_eq!(
            store.load(&id("DEFERRED2")).unwrap().envelope.recipients[0].tries,
            6
        );
        drop(store);
        let store = Store::open_with(dir.path(), opts).unwrap();
        assert_eq!(queued_ids(&store), ["DEFERRED1", "DEFERRED2"]);
        assert_eq!(
            store.load(&id("DEFERRED2")).unwrap().envelope.recipients[0].tries,
            6
        );
    }

    #[test]
    fn a_drained_queue_keeps_a_short_journal_and_a_queued_message_keeps_its_segment() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            empty_roll_bytes: 16 * 1024,
            ..StoreOptions::default()
        };
        let store = Store::open_with(dir.path(), opts).unwrap();
        let rt = rt();
        // Bytes of frames in the store's segments (their files may be longer: zeros
        // preallocated ahead).
        let frames = |store: &Store| -> u64 {
            let index = Index::lock(&store.inner.index);
            index.segments.values().map(|s| s.len).sum()
        };
        let big = |q: &str| {
            let mut m = message(q, &["a"]);
            m.body = vec![b'x'; 5000];
            m
        };
        // Mail delivered as it comes (the queue drains after each message): the segments
        // close at the early length and are deleted.
        for i in 0..100 {
            let q = format!("M{i}");
            rt.block_on(store.commit(big(&q))).unwrap();
            rt.block_on(store.remove(&id(&q))).unwrap();
        }
        let segs = segments(dir.path());
        assert_eq!(segs.len(), 1, "{segs:?}");
        assert_ne!(segs[0], "0000000000000001.seg", "never closed early");
        // Frames of at most one message past the early length.
        let left = frames(&store);
        assert!(left < 16 * 1024 + 6000, "{left}");
        // A reader (mailq) of the drained queue finds it empty, reading that one segment.
        assert!(
            Store::open_read_only(dir.path())
                .unwrap()
                .ids()
                .unwrap()
                .is_empty()
        );

        // A message still queued keeps its segment open to the full length.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), opts).unwrap();
        rt.block_on(store.commit(message("DEFERRED", &["slow@x"])))
            .unwrap();
        for i in 0..20 {
            let q = format!("M{i}");
            rt.block_on(store.commit(big(&q))).unwrap();
            rt.block_on(store.remove(&id(&q))).unwrap();
        }
        assert_eq!(segments(dir.path()), ["0000000000000001.seg"]);
        assert!(frames(&store) > 5 * 16 * 1024, "{}", frames(&store));
        drop(store);
        let store = Store::open_with(dir.path(), opts).unwrap();
        assert_eq!(queued_ids(&store), ["DEFERRED"]);
    }

    #[test]
    fn a_removal_outlives_the_copy_it_cancels() {
        // Segment 1: Put A. Segment 2: Remove A (+ filler). Deleting segment 2 first would
        // bring A back after a crash; the index must keep it until segment 1 is gone.
        let mut index = Index::default();
        for seq in [1, 2] {
            index.segments.insert(
                seq,
                Segment::new(Arc::new(tempfile::tempfile().unwrap()), 100),
            );
        }
        index.apply(
            &id("A"),
            1,
            Some(Loc {
                seg: 1,
                offset: 0,
                len: 10,
            }),
        );
        index.apply(
            &id("B"),
            1,
            Some(Loc {
                seg: 1,
                offset: 10,
                len: 10,
            }),
        );
        index.apply(&id("A"), 2, None);
        assert_eq!(
            index.deletable(99),
            Vec::<u64>::new(),
            "B keeps 1, A's removal keeps 2"
        );
        index.apply(&id("B"), 2, None);
        assert_eq!(index.deletable(99), [1], "only after 1 may 2 go");
        index.drop_segment(1);
        assert_eq!(index.deletable(99), [2]);
        index.drop_segment(2);
        assert!(index.ids.is_empty());
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
        let fresh = tempfile::tempdir().unwrap();
        assert!(
            Store::open_read_only(fresh.path())
                .unwrap()
                .list()
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            Store::open_read_only(&fresh.path().join("nope")),
            Err(QueueError::Io { .. })
        ));
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
    fn many_concurrent_commits_share_fsyncs_and_land_in_run_order() {
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
        let s = store.committer_stats();
        assert_eq!(s.ops, 300);
        assert!(s.batches < 300, "no batching: {s:?}");
    }
}
