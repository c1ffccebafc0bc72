//! Durable ingest rate of the queue: N messages of 5 KiB committed by 1, 20 and 100
//! concurrent committers, next to a one-fsync-per-message baseline measured in the same run.
//!
//! `cargo bench --bench queue_commit [-- N [REPS]]` (defaults 3000 messages, 3 runs per
//! cell, median shown; the disk is shared and swings 3x within minutes). The queue lives under
//! `$QUEUE_BENCH_DIR` or `target/queue-bench/` (keep it on the disk under test: a tmpfs
//! makes fsync free) and is deleted afterwards.
//!
//! * `group` — [`Store::commit`]: the committer appends every waiting message to the
//!   journal segment and fdatasyncs once per batch (`msgs/fsync` is the mean batch).
//! * `baseline` — one file per message, each on its own: create tmp, write, fsync,
//!   rename, fsync the directory (what a simple queue does, and sendmail/Postfix in
//!   spirit), with the same number of concurrent tasks.
//! * `bare journal` — the same batching without anything else (one preallocated file, no
//!   index, no frames): the upper bound of the group design.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sendmail_rs::queue::{Envelope, Message, QueueId, Recipient, Store, file};

const CONCURRENCY: [usize; 3] = [1, 20, 100];

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: then a smoke run
    // that only shows the benchmark still works.
    let full = std::env::args().any(|a| a == "--bench");
    let mut nums = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let n = nums.next().unwrap_or(if full { 3000 } else { 200 });
    let reps = nums.next().unwrap_or(if full { 3 } else { 1 }).max(1);
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
        "queue_commit: {n} messages of 5 KiB per run, median of {reps} runs (group and baseline \
         alternate), queue under {}",
        base.display()
    );
    println!("load average before: {}", loadavg());
    println!(
        "{:>10} | {:>11} | {:>14} | {:>7} | {:>10} | {:>10} | {:>13} | {:>20}",
        "committers",
        "group msg/s",
        "baseline msg/s",
        "speedup",
        "msgs/fsync",
        "CPU us/msg",
        "bare journal",
        "group runs msg/s"
    );
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    for &c in &CONCURRENCY {
        let (mut group, mut baseline, mut per_batch) = (Vec::new(), Vec::new(), Vec::new());
        let (mut journal, mut cpu) = (Vec::new(), Vec::new());
        for rep in 0..reps {
            let dir = base.join(format!("group-{c}-{rep}"));
            let (took, pb, us) = rt.block_on(group_commit(&dir, n, c));
            fs::remove_dir_all(&dir).unwrap();
            group.push(rate(took));
            per_batch.push(pb);
            cpu.push(us);

            let dir = base.join(format!("baseline-{c}-{rep}"));
            let took = rt.block_on(baseline_commit(&dir, n, c));
            fs::remove_dir_all(&dir).unwrap();
            baseline.push(rate(took));

            let dir = base.join(format!("journal-{c}-{rep}"));
            let took = rt.block_on(journal_commit(&dir, n, c));
            fs::remove_dir_all(&dir).unwrap();
            journal.push(rate(took));
        }
        let runs: Vec<String> = group.iter().map(|r| format!("{r:.0}")).collect();
        let (g, b) = (median(&mut group), median(&mut baseline));
        println!(
            "{c:>10} | {g:>11.0} | {b:>14.0} | {:>6.1}x | {:>10.1} | {:>10.0} | {:>13.0} | {:>20}",
            g / b,
            median(&mut per_batch),
            median(&mut cpu),
            median(&mut journal),
            runs.join(" ")
        );
    }
    println!("load average after:  {}", loadavg());
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
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

/// Returns the wall time, the average number of messages per fdatasync, and the CPU time
/// (user + system, whole process) per message.
async fn group_commit(dir: &Path, n: usize, c: usize) -> (Duration, f64, f64) {
    let store = Store::open(dir).unwrap();
    let cpu_start = cpu_time();
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
    let cpu = cpu_time() - cpu_start;
    let s = store.committer_stats();
    assert_eq!(store.list().unwrap().len(), n);
    (
        took,
        s.ops as f64 / s.batches.max(1) as f64,
        cpu.as_secs_f64() * 1e6 / n as f64,
    )
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let d =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    d(u.user_time()) + d(u.system_time())
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

/// The journal sketch: tasks hand encoded messages to one thread, which appends all that
/// are waiting to a preallocated file, fdatasyncs once, and answers them.
async fn journal_commit(dir: &Path, n: usize, c: usize) -> Duration {
    type Req = (Vec<u8>, tokio::sync::oneshot::Sender<()>);
    fs::create_dir_all(dir).unwrap();
    let path = dir.join("journal");
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    let encoded_len = file::encode(&message(0)).len() + 32;
    // Preallocate with real blocks so appends change no metadata (fdatasync = data only).
    let zeros = vec![0u8; 1 << 20];
    let mut left = encoded_len * n;
    while left > 0 {
        let k = left.min(zeros.len());
        f.write_all(&zeros[..k]).unwrap();
        left -= k;
    }
    f.sync_all().unwrap();
    File::open(dir).unwrap().sync_all().unwrap();

    let (tx, rx) = std::sync::mpsc::channel::<Req>();
    let writer = std::thread::spawn(move || {
        use std::os::unix::fs::FileExt;
        let mut at = 0u64;
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            for (bytes, _) in &batch {
                f.write_all_at(bytes, at).unwrap();
                at += bytes.len() as u64;
            }
            f.sync_data().unwrap();
            for (_, done) in batch {
                let _ = done.send(());
            }
        }
    });
    let start = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|t| {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in (t..n).step_by(c) {
                    let (done, wait) = tokio::sync::oneshot::channel();
                    tx.send((file::encode(&message(i)), done)).unwrap();
                    wait.await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = start.elapsed();
    drop(tx);
    writer.join().unwrap();
    took
}
