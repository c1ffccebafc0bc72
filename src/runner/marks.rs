//! Delivery marks: each delivery a next hop or a mailbox has taken, written down the moment
//! its outcome is known, before the queue records it.
//!
//! In: the queue id and recipient indexes of a delivery that succeeded (right after the
//! peer's `250`, or the local agent's success), and at start the marks the previous daemon
//! left. Out: at start, those recipients marked done in the queue (with sendmail's `to=`
//! line) before anything is tried again; then the mark files removed.
//!
//! Why. The queue records a delivery's result in its journal with the next group commit,
//! which waits for the fdatasync under way plus its own (5–15 ms on this loaded machine,
//! measured with the crash harness's sink: the `250` was written 5–15 ms before the SIGKILL
//! and the result was not in the queue). At 2,000 deliveries a second that gap holds 10–30
//! deliveries, each sent again by the next daemon. A mark is one `write(2)` to a file in the
//! page cache (microseconds), which a killed process does not lose: only a crash of the
//! machine does, and then the delivery is made again, as before (a duplicate, never a
//! loss: a mark only ever says "delivered", and is written after the success). So marks are
//! not fsynced.
//!
//! Files: `<QueueDirectory>/delivered/<generation>`, lines `<queue id> <recipient index>`.
//! Each attempt holds its generation ([`Marks::enter`]) until its result is in the queue; a
//! file past [`ROTATE_BYTES`] is left for a new generation, and a generation's file is
//! removed once no attempt of it or of an older one is under way, so the files stay small
//! under constant load.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use crate::deliver::Outcome;
use crate::log::Severity;
use crate::queue::{DeliveryState, QueueId};
use crate::runtime::Shared;

/// Size at which the marks go to a new file.
pub const ROTATE_BYTES: u64 = 256 << 10;

/// The marks of one queue runner.
pub struct Marks {
    dir: PathBuf,
    state: Mutex<State>,
    /// A failed write is logged once.
    warned: AtomicBool,
}

#[derive(Default)]
struct State {
    generation: u64,
    file: Option<File>,
    len: u64,
    /// Attempts under way, per generation.
    running: BTreeMap<u64, usize>,
    /// Generations whose files may still exist (not the current one).
    old: BTreeSet<u64>,
}

/// An attempt under way: its marks are kept until it ends (dropped).
pub struct Entered<'a> {
    marks: &'a Marks,
    generation: u64,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let mut st = self.marks.lock();
        if let Some(n) = st.running.get_mut(&self.generation) {
            *n -= 1;
            if *n == 0 {
                st.running.remove(&self.generation);
            }
        }
        self.marks.remove_done(&mut st);
    }
}

/// The directory of the mark files.
pub fn dir(queue_dir: &Path) -> PathBuf {
    queue_dir.join("delivered")
}

impl Marks {
    /// Marks in `<queue_dir>/delivered/`, starting after any generation found there (the
    /// files of a previous daemon: [`recover`] reads and removes them; those it could not
    /// put in the queue stay for the next start).
    pub fn new(queue_dir: &Path) -> Marks {
        let dir = dir(queue_dir);
        let state = State {
            generation: generations(&dir).last().map_or(0, |g| g + 1),
            ..State::default()
        };
        Marks {
            dir,
            state: Mutex::new(state),
            warned: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An attempt starts: its marks stay until the returned guard is dropped (after its
    /// result is in the queue).
    pub fn enter(&self) -> Entered<'_> {
        let mut st = self.lock();
        if st.len >= ROTATE_BYTES {
            let g = st.generation;
            st.old.insert(g);
            st.generation += 1;
            st.file = None;
            st.len = 0;
            self.remove_done(&mut st);
        }
        let generation = st.generation;
        *st.running.entry(generation).or_default() += 1;
        Entered {
            marks: self,
            generation,
        }
    }

    /// Writes down that recipients `indexes` of `id` were delivered (one `write`, no sync).
    pub fn record(&self, shared: &Shared, id: &QueueId, indexes: &[usize]) {
        if indexes.is_empty() {
            return;
        }
        let mut line = String::new();
        for i in indexes {
            line.push_str(id.as_str());
            line.push(' ');
            line.push_str(&i.to_string());
            line.push('\n');
        }
        let mut st = self.lock();
        let written = self
            .file(&mut st)
            .and_then(|f| f.write_all(line.as_bytes()));
        match written {
            Ok(()) => st.len += line.len() as u64,
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    shared.logger.log(
                        Severity::Err,
                        Some(id.as_str()),
                        format_args!(
                            "cannot write delivery marks in {}: {e} (a crash now may deliver again)",
                            self.dir.display()
                        ),
                    );
                }
            }
        }
    }

    fn file<'s>(&self, st: &'s mut State) -> std::io::Result<&'s mut File> {
        if st.file.is_none() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)?;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(self.dir.join(st.generation.to_string()))?;
            st.file = Some(f);
        }
        Ok(st.file.as_mut().expect("opened above"))
    }

    /// Removes the files of the old generations that no attempt needs any more: those
    /// older than every generation with an attempt under way.
    fn remove_done(&self, st: &mut State) {
        let oldest = st.running.keys().next().copied().unwrap_or(st.generation);
        while let Some(&g) = st.old.first() {
            if g >= oldest {
                break;
            }
            st.old.remove(&g);
            let _ = std::fs::remove_file(self.dir.join(g.to_string()));
        }
    }
}

/// The generations whose files are in `dir`, oldest first.
fn generations(dir: &Path) -> Vec<u64> {
    let mut found: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    found.sort_unstable();
    found
}

/// The marks in `dir`'s files: queue id → recipient indexes. A line cut short by the
/// crash (no newline) or not of the form is skipped.
fn read_marks(dir: &Path) -> BTreeMap<QueueId, BTreeSet<usize>> {
    let mut out: BTreeMap<QueueId, BTreeSet<usize>> = BTreeMap::new();
    for g in generations(dir) {
        let Ok(text) = std::fs::read_to_string(dir.join(g.to_string())) else {
            continue;
        };
        for line in text.split_inclusive('\n') {
            let Some(line) = line.strip_suffix('\n') else {
                continue;
            };
            let Some((id, idx)) = line.split_once(' ') else {
                continue;
            };
            if let (Ok(id), Ok(idx)) = (QueueId::new(id), idx.parse()) {
                out.entry(id).or_default().insert(idx);
            }
        }
    }
    out
}

/// At start: marks the recipients the previous daemon delivered but did not record as
/// done in the queue (logged as sendmail logs a delivery, and a line saying why), then
/// removes the mark files. A message whose update fails keeps its files for the next start.
pub async fn recover(shared: &Shared) {
    let dir = dir(shared.queue.dir());
    let marks = read_marks(&dir);
    let mut all_in = true;
    for (id, indexes) in marks {
        all_in &= settle(shared, &id, &indexes).await;
    }
    if all_in {
        for g in generations(&dir) {
            let _ = std::fs::remove_file(dir.join(g.to_string()));
        }
    }
}

/// Marks `indexes` of `id` done; false when the queue could not be updated.
async fn settle(shared: &Shared, id: &QueueId, indexes: &BTreeSet<usize>) -> bool {
    let loaded = {
        let (store, id) = (shared.queue.clone(), id.clone());
        tokio::task::spawn_blocking(move || store.load(&id)).await
    };
    let Ok(Ok(mut msg)) = loaded else {
        return true; // its result is in the queue (removed), or nothing to do
    };
    let outcome = Outcome::Delivered {
        reply: String::new(),
    };
    let now = SystemTime::now();
    let current = shared.current();
    let mut marked = Vec::new();
    for &i in indexes {
        if let Some(r) = msg.envelope.recipients.get_mut(i)
            && r.state == DeliveryState::Pending
        {
            r.state = DeliveryState::Done;
            r.tries += 1;
            r.status = Some(outcome.stat());
            r.next_attempt = None;
            marked.push(i);
        }
    }
    if marked.is_empty() {
        return true;
    }
    let result = if crate::deliver::dsn::finished(&msg) {
        shared.queue.remove(id).await
    } else {
        let env = msg.envelope.clone();
        shared.queue.update(id, env.recipients).await
    };
    match result {
        Ok(()) => {
            for i in marked {
                let r = &msg.envelope.recipients[i];
                let route = super::route_recipient(&current, r);
                let mailer = match &route {
                    super::Route::Remote { mailer, .. } | super::Route::Local { mailer, .. } => {
                        mailer.as_str()
                    }
                    super::Route::Error { .. } => "*error*",
                };
                super::log_to(shared, &msg, r, mailer, None, &outcome, now);
                shared.logger.log(
                    Severity::Info,
                    Some(id.as_str()),
                    format_args!(
                        "recipient {i}: delivered before the previous daemon stopped, not in the queue yet: not sent again"
                    ),
                );
            }
            true
        }
        Err(e) => {
            shared.logger.log(
                Severity::Err,
                Some(id.as_str()),
                format_args!("queue update failed: {e}; delivery marks kept"),
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_read_back_and_a_torn_line_is_skipped() {
        let q = tempfile::tempdir().unwrap();
        let d = dir(q.path());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("3"), "6AO7R0vX027769 0\n6AO7R0vX027769 2\nbad\n").unwrap();
        std::fs::write(d.join("4"), "6AO7R0vX027770 1\n6AO7R0vX0277").unwrap();
        let m = read_marks(&d);
        let id = |s: &str| QueueId::new(s).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[&id("6AO7R0vX027769")], BTreeSet::from([0, 2]));
        assert_eq!(m[&id("6AO7R0vX027770")], BTreeSet::from([1]));
        // A new runner goes on after the generations it found.
        assert_eq!(Marks::new(q.path()).lock().generation, 5);
    }

    #[test]
    fn old_generations_go_once_their_attempts_end() {
        let q = tempfile::tempdir().unwrap();
        let marks = Marks::new(q.path());
        let d = dir(q.path());
        let write = |st: &mut State, n: u64| {
            marks.file(st).unwrap();
            st.len += n;
        };
        let a = marks.enter();
        write(&mut marks.lock(), ROTATE_BYTES);
        // The next attempt starts a new file; the old one stays while `a` runs.
        let b = marks.enter();
        write(&mut marks.lock(), 10);
        assert_eq!(generations(&d), [0, 1]);
        drop(a);
        assert_eq!(generations(&d), [1], "generation 0's last attempt ended");
        write(&mut marks.lock(), ROTATE_BYTES);
        let c = marks.enter();
        write(&mut marks.lock(), 10);
        drop(c);
        assert_eq!(generations(&d), [1, 2], "b (generation 1) still runs");
        drop(b);
        assert_eq!(generations(&d), [2], "the current file stays");
    }
}
