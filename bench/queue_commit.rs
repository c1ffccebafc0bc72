//! Durable ingest rate of the queue: N messages of 5 KiB committed by 1, 20 and 100
//! concurrent committers, next to a one-fsync-per-message baseline measured in the same run.
//!
//! `cargo bench --bench queue_commit [-- N]` (default N = 3000). The queue lives under
//! `$QUEUE_BENCH_DIR` or `target/queue-bench/` (keep it on the disk under test: a tmpfs
//! makes fsync free) and is deleted afterwards.
//!
//! * `group` — [`Store::commit`]: parallel write+fsync of each file, then one committer
//!   renames a whole batch and fsyncs the directory once.
//! * `baseline` — each message on its own: create tmp, write, fsync, rename, fsync the
//!   directory (what a simple queue does), with the same number of concurrent tasks.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sendmail_rs::queue::{Envelope, Message, QueueId, Recipient, Store, file};

const CONCURRENCY: [usize; 3] = [1, 20, 100];

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3000);
    let base = std::env::var_os("QUEUE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/queue-bench"));
    fs::create_dir_all(&base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    println!(
        "queue_commit: {n} messages of 5 KiB per cell, queue under {}",
        base.display()
    );
    println!(
        "{:>11} | {:>14} | {:>14} | {:>7} | {:>15}",
        "committers", "group msg/s", "baseline msg/s", "speedup", "msgs/dir-fsync"
    );
    for (round, &c) in CONCURRENCY.iter().enumerate() {
        let dir = base.join(format!("group-{round}"));
        let (group, per_batch) = rt.block_on(group_commit(&dir, n, c));
        fs::remove_dir_all(&dir).unwrap();

        let dir = base.join(format!("baseline-{round}"));
        let baseline = rt.block_on(baseline_commit(&dir, n, c));
        fs::remove_dir_all(&dir).unwrap();

        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "{c:>11} | {:>14.0} | {:>14.0} | {:>6.1}x | {per_batch:>15.1}",
            rate(group),
            rate(baseline),
            baseline.as_secs_f64() / group.as_secs_f64()
        );
    }
}

fn message(i: usize) -> Message {
    let id = QueueId::new(format!("B{i:08}")).unwrap();
    let mut env = Envelope::new(id, "sender@client.example.test");
    env.recipients = vec![Recipient::new("b@example.com")];
    let mut body = b"Subject: bench\n\n".to_vec();
    body.resize(5 * 1024, b'x');
    body.push(b'\n');
    Message {
        envelope: env,
        body,
    }
}

/// Returns the wall time and the average number of messages per directory fsync.
async fn group_commit(dir: &Path, n: usize, c: usize) -> (Duration, f64) {
    let store = Store::open(dir).unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (t..n).step_by(c) {
                    store.commit(message(i)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = start.elapsed();
    let s = store.committer_stats();
    assert_eq!(store.list().unwrap().len(), n);
    (took, s.ops as f64 / s.batches.max(1) as f64)
}

async fn baseline_commit(dir: &Path, n: usize, c: usize) -> Duration {
    let (tmp, queue) = (dir.join("tmp"), dir.join("queue"));
    fs::create_dir_all(&tmp).unwrap();
    fs::create_dir_all(&queue).unwrap();
    let dirs = Arc::new((tmp, queue));
    let start = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|t| {
            let dirs = dirs.clone();
            tokio::spawn(async move {
                for i in (t..n).step_by(c) {
                    let dirs = dirs.clone();
                    tokio::task::spawn_blocking(move || one_by_one(&dirs.0, &dirs.1, &message(i)))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = start.elapsed();
    assert_eq!(fs::read_dir(&dirs.1).unwrap().count(), n);
    took
}

/// The simple durable commit: tmp file, fsync, rename, fsync(dir) — per message.
fn one_by_one(tmp: &Path, queue: &Path, m: &Message) {
    let id = m.envelope.id.as_str();
    let t = tmp.join(id);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&t)
        .unwrap();
    f.write_all(&file::encode(m)).unwrap();
    f.sync_all().unwrap();
    fs::rename(&t, queue.join(id)).unwrap();
    File::open(queue).unwrap().sync_all().unwrap();
}
