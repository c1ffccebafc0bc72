//! Group commit for mailboxes: deliveries to one mailbox that are ready at the same time
//! share one lock and one fsync.
//!
//! In: deliveries from many threads (the queue runner delivers many messages at once, each
//! on a blocking thread), each with a key naming its mailbox (an mbox file, or a Maildir) and
//! a job (the bytes to write). Out: one [`super::Outcome`] per delivery. The first delivery
//! to a mailbox that finds nobody working on it becomes the *leader*: it opens and locks the
//! mailbox as a single delivery would (dotlock, `fcntl`, `flock`), then takes every job
//! queued for that mailbox meanwhile — its own and those that arrived while it waited for the
//! lock — writes them all, syncs once, unlocks, and hands each waiting delivery its outcome.
//! Jobs that arrive while a leader writes wait for the next round, which one of them leads.
//! A Maildir needs no lock and its files are written side by side; only the fsync of its
//! `new/` directory is shared this way: one fsync for every file renamed into it before the
//! fsync began. Measured (bench/ingest.sh local cells): one leader writing and syncing a
//! whole Maildir batch ran at 243 msg/s (Postfix 477 in the same run); a leader that only
//! synced and renamed files the deliveries had written (writeback started) 628–839
//! (Postfix 477–484); files written and synced side by side, `new/` synced once per
//! group, 853–935 (Postfix 477–522).
//! This is how the queue's journal commits many messages per `fdatasync`
//! ([`crate::queue`]), and how Postfix's local(8) is *not* built (one delivery per lock).
//!
//! Why each Maildir file keeps its own fsync, on its delivery's thread (what was weighed,
//! 2026-12-06). The only POSIX way to make a file durable is `fsync`/`fdatasync` on it, and
//! for its name `fsync` on its directory; `syncfs` would sync every other user of a shared
//! file system, and the order in which one file system happens to write is no guarantee. So
//! what can be shared is *waiting*, not calls: each file needs its call, and the calls must
//! be in flight together. They are: every delivery runs on its own blocking thread (up to
//! the runner's `CONCURRENT_MESSAGES`, 100, messages at once) and fsyncs its file right after
//! writing it, so the files of one burst are written back side by side and their inodes
//! (neighbours in one inode-table block) and the disk's cache flushes (merged by the block
//! layer) are shared by whichever fsyncs are waiting. Measured with `bench/maildir_probe.c`
//! (the daemon's sequence: `O_TMPFILE`, 5 KiB, fsync, `linkat`, fsync of the directory;
//! the shared root file system, ext4 *without* a journal, so no journal merges commits;
//! four interleaved rounds, files/s): one thread 82–187; 16 threads, a file each at a
//! time 577–912; 16 threads each gathering 4 files, starting the writeback of all
//! (`sync_file_range(SYNC_FILE_RANGE_WRITE)`) before fsyncing each, 659–933 — no better;
//! 4 threads gathering 16 each 367–631 — worse: a leader that gathers serialises what the
//! threads overlap, as the 243 msg/s leader above did, and a delivery's fsync straight
//! after its write starts its writeback at once anyway. `fdatasync` instead of `fsync`
//! showed no consistent difference (one thread, batches of 16, three interleaved rounds:
//! 297–1,233 against 480–1,122/s): for a new file the size and block map must be written
//! either way, and fsync keeps the times too. The disk swings several-fold within minutes
//! (the same one-thread case ran at 123 and at 909/s), so only interleaved runs compare.
//! What is left per message is one fsync of its file (strace -c -f of the
//! daemon, 2,000 messages: 2,000 file fsyncs, 1,027 of `new/`, 2,532 of the queue's
//! journal). And the cost that made the Maildir cell slow was not an fsync at all: on ext4
//! without a journal the inode allocator skips, with a lookup each, every inode of the block
//! group freed in the last minute (five while its table block is dirty); the benchmark
//! deleted the previous run's Maildir files just before measuring, and 38 % of the daemon's
//! CPU went to `ext4_tmpfile` → `find_inode_bit` → `recently_deleted` (daemon 870–1,005 µs
//! per message; 405–475 µs, as mbox's 455–500, since each run of the benchmark delivers into
//! a directory of its own, `local_fresh` in `bench/ingest.sh`). A real Maildir meets that
//! cost only where its owner has just deleted many files, and only without a journal (the
//! allocator checks for recently freed inodes only then).
//!
//! Crash semantics. A delivery is reported done (to the runner, which then records it in the
//! queue) only after the fsync that made its bytes durable returned. A crash before that
//! fsync leaves the messages of the batch in the queue, not done: the restarted daemon
//! delivers them again, and whatever of the batch had reached the disk without the fsync
//! is delivered a second time — duplicates, at most one batch per mailbox, never a loss. A
//! crash after the fsync but before the queue recorded the outcomes duplicates the batch
//! the same way. No order of events reports a message done that is not on the disk.
//!
//! Failures stay with their message: one that cannot be written for its own sake (quota,
//! full disk, file too large: `EDQUOT`, `ENOSPC`, `EFBIG`) is cut off again and deferred
//! while the others of the batch go on (a smaller one may still fit); any other write error,
//! or a failed fsync, cuts the mailbox back to where the batch started and defers the whole
//! batch — a mailbox never keeps half a message, nor messages nobody was told were delivered.
//! A leader that cannot open or lock the mailbox fails its own delivery only; the next
//! queued delivery leads and tries again.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::{AppendFile, Outcome};

/// Most deliveries one leader takes in one round (bounds the memory of a round and the
/// wait of the last one in it).
pub const MAX_BATCH: usize = 256;

/// What a waiting delivery is told.
enum Word {
    Waiting,
    /// Lead the next round.
    Lead,
    Done(Outcome),
}

struct Slot {
    word: Mutex<Word>,
    cv: Condvar,
}

impl Slot {
    fn new() -> Arc<Slot> {
        Arc::new(Slot {
            word: Mutex::new(Word::Waiting),
            cv: Condvar::new(),
        })
    }

    fn tell(&self, word: Word) {
        *self.word.lock().unwrap_or_else(|e| e.into_inner()) = word;
        self.cv.notify_one();
    }

    /// Blocks until told to lead (true) or given an outcome.
    fn wait(&self) -> Result<(), Outcome> {
        let mut w = self.word.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match std::mem::replace(&mut *w, Word::Waiting) {
                Word::Waiting => w = self.cv.wait(w).unwrap_or_else(|e| e.into_inner()),
                Word::Lead => return Ok(()),
                Word::Done(o) => return Err(o),
            }
        }
    }
}

/// The deliveries queued for one mailbox, and whether one of them leads.
struct Lane<J> {
    queue: VecDeque<(J, Arc<Slot>)>,
    led: bool,
}

/// How many rounds, syncs and deliveries the groups have seen (for tests and the log).
#[derive(Debug, Default)]
pub struct Counters {
    /// Rounds that wrote at least one message (each synced once).
    pub syncs: AtomicU64,
    /// Messages written and synced.
    pub messages: AtomicU64,
}

/// Deliveries grouped by mailbox `K`, each carrying a job `J`.
pub struct Group<K, J> {
    lanes: Mutex<HashMap<K, Lane<J>>>,
    pub counters: Counters,
}

impl<K: Hash + Eq + Clone, J> Default for Group<K, J> {
    fn default() -> Self {
        Group {
            lanes: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        }
    }
}

/// The leader of one round: [`Lead::take`] the queued jobs, then [`Lead::finish`] with
/// their outcomes (or [`Lead::fail_own`] before taking anything).
pub struct Lead<'g, K: Hash + Eq + Clone, J> {
    group: &'g Group<K, J>,
    key: K,
    own: Arc<Slot>,
    taken: Vec<Arc<Slot>>,
    done: bool,
}

impl<K: Hash + Eq + Clone, J> Group<K, J> {
    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<K, Lane<J>>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job` for `key`: the delivery's outcome when a leader delivered it, or the
    /// lead of a round (which then includes this job).
    pub fn join(&self, key: K, job: J) -> Result<Lead<'_, K, J>, Outcome> {
        let slot = Slot::new();
        let lead = {
            let mut lanes = self.lanes();
            let lane = lanes.entry(key.clone()).or_insert_with(|| Lane {
                queue: VecDeque::new(),
                led: false,
            });
            lane.queue.push_back((job, slot.clone()));
            crate::metrics::global()
                .local_mailbox_waiting
                .fetch_add(1, Ordering::Relaxed);
            !std::mem::replace(&mut lane.led, true)
        };
        if !lead {
            slot.wait()?;
        }
        Ok(Lead {
            group: self,
            key,
            own: slot,
            taken: Vec::new(),
            done: false,
        })
    }

    /// Deliveries queued for `key` and not yet taken by a leader.
    pub fn queued(&self, key: &K) -> usize {
        self.lanes().get(key).map_or(0, |l| l.queue.len())
    }
}

impl<K: Hash + Eq + Clone, J> Lead<'_, K, J> {
    /// Every job queued for this mailbox now (at most [`MAX_BATCH`]; the leader's own among
    /// them), in the order they came.
    pub fn take(&mut self) -> Vec<J> {
        let mut lanes = self.group.lanes();
        let Some(lane) = lanes.get_mut(&self.key) else {
            return Vec::new();
        };
        let n = lane.queue.len().min(MAX_BATCH);
        let mut jobs = Vec::with_capacity(n);
        // The leader's own job is always in its round, even behind more than MAX_BATCH.
        if let Some(k) = lane
            .queue
            .iter()
            .position(|(_, s)| Arc::ptr_eq(s, &self.own))
            && k >= n
            && let Some((job, slot)) = lane.queue.remove(k)
        {
            jobs.push(job);
            self.taken.push(slot);
        }
        while jobs.len() < n {
            let Some((job, slot)) = lane.queue.pop_front() else {
                break;
            };
            jobs.push(job);
            self.taken.push(slot);
        }
        crate::metrics::global()
            .local_mailbox_waiting
            .fetch_sub(jobs.len() as u64, Ordering::Relaxed);
        jobs
    }

    /// Hands each taken job its outcome (`outcomes` in [`Lead::take`]'s order), passes the
    /// lead on, and returns the leader's own outcome.
    pub fn finish(mut self, outcomes: Vec<Outcome>) -> Outcome {
        let mut own = None;
        let written = outcomes
            .iter()
            .filter(|o| **o == Outcome::Delivered)
            .count();
        let taken = std::mem::take(&mut self.taken);
        for (slot, o) in taken.iter().zip(outcomes) {
            if Arc::ptr_eq(slot, &self.own) {
                own = Some(o);
            } else {
                slot.tell(Word::Done(o));
            }
        }
        if written > 0 {
            let c = &self.group.counters;
            c.syncs.fetch_add(1, Ordering::Relaxed);
            c.messages.fetch_add(written as u64, Ordering::Relaxed);
            let m = crate::metrics::global();
            m.local_mailbox_syncs.fetch_add(1, Ordering::Relaxed);
            m.local_mailbox_messages
                .fetch_add(written as u64, Ordering::Relaxed);
        }
        own.unwrap_or_else(|| Outcome::temp("4.3.0", "batched delivery lost its outcome"))
    }

    /// Fails the leader's own delivery (its mailbox could not be opened or locked) and
    /// passes the lead on; nothing may have been taken.
    pub fn fail_own(mut self, o: Outcome) -> Outcome {
        let mut lanes = self.group.lanes();
        if let Some(lane) = lanes.get_mut(&self.key) {
            let before = lane.queue.len();
            lane.queue.retain(|(_, s)| !Arc::ptr_eq(s, &self.own));
            crate::metrics::global()
                .local_mailbox_waiting
                .fetch_sub((before - lane.queue.len()) as u64, Ordering::Relaxed);
        }
        drop(lanes);
        // Anything taken by mistake is not left hanging.
        for slot in std::mem::take(&mut self.taken) {
            if !Arc::ptr_eq(&slot, &self.own) {
                slot.tell(Word::Done(Outcome::temp("4.3.0", "mailbox not written")));
            }
        }
        o
    }
}

impl<K: Hash + Eq + Clone, J> Drop for Lead<'_, K, J> {
    /// Passes the lead to the first queued delivery, or leaves the mailbox unled.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        for slot in std::mem::take(&mut self.taken) {
            if !Arc::ptr_eq(&slot, &self.own) {
                slot.tell(Word::Done(Outcome::temp("4.3.0", "mailbox not written")));
            }
        }
        let mut lanes = self.group.lanes();
        let Some(lane) = lanes.get_mut(&self.key) else {
            return;
        };
        match lane.queue.front() {
            Some((_, next)) => next.tell(Word::Lead),
            None => {
                lanes.remove(&self.key);
            }
        }
    }
}

/// Whether a write error belongs to the message being written (it may be cut off alone)
/// rather than to the mailbox.
fn is_own_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT) | Some(nix::libc::EFBIG)
    )
}

/// Appends `entries` to a locked mbox and syncs once; one result per entry. See the module
/// doc for which failures stay with their entry and which cut the whole batch back.
pub fn append_batch<F: AppendFile>(f: &mut F, entries: &[&[u8]]) -> Vec<io::Result<()>> {
    let all = |e: &io::Error| -> Vec<io::Result<()>> {
        entries
            .iter()
            .map(|_| Err(io::Error::new(e.kind(), e.to_string())))
            .collect()
    };
    let start = match f.current_len() {
        Ok(n) => n,
        Err(e) => return all(&e),
    };
    let mut results = Vec::with_capacity(entries.len());
    let mut end = start;
    for bytes in entries {
        match f.append(bytes) {
            Ok(()) => {
                end += bytes.len() as u64;
                results.push(Ok(()));
            }
            Err(e) if is_own_error(&e) => {
                if let Err(t) = f.truncate_to(end) {
                    let _ = f.truncate_to(start);
                    return all(&t);
                }
                results.push(Err(e));
            }
            Err(e) => {
                let _ = f.truncate_to(start);
                return all(&e);
            }
        }
    }
    if end > start
        && let Err(e) = f.sync()
    {
        let _ = f.truncate_to(start);
        return all(&e);
    }
    results
}
