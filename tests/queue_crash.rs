//! Crash safety of the queue: what `commit`, `update` and `remove` acknowledge survives a
//! SIGKILL at any moment.
//!
//! The test binary plays both parts (`harness = false`): run normally it is the parent;
//! with `QUEUE_CRASH_CHILD=<dir>` in its environment it is the child, which commits
//! messages from many tasks and prints `ACK <id>` (and `UPD <id>` / `DEL <id>` after an
//! update / remove) to stdout, flushed, right after the call returns, and `RMV <id>` just
//! before it calls remove. The parent kills the
//! child (SIGKILL) at a random moment, reopens the store and checks that:
//!
//! * every acknowledged id is listed and loads completely, with the expected content;
//! * acknowledged updates are there, acknowledged removals are gone;
//! * nothing incomplete or duplicated is listed (recovery cut torn batches off).
//!
//! SIGKILL tests process crashes; a power cut additionally relies on fdatasync returning
//! before the acknowledgement (and on a new segment's directory entry being fsynced
//! before anything in it is acknowledged). A removal is acknowledged once written, before
//! its fdatasync (`Store::remove`): a kill cannot undo it, which this test checks; a power
//! cut can, and the message is then delivered again.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sendmail_rs::queue::{
    DeliveryState, Envelope, Message, QueueId, Recipient, Store, StoreOptions,
};

const CHILD_ENV: &str = "QUEUE_CRASH_CHILD";
const ROUND_ENV: &str = "QUEUE_CRASH_ROUND";
const ROUNDS: u32 = 8;
const TASKS: u32 = 32;
/// Each child task commits at most this many messages, then idles until the kill (keeps
/// the queue, and so the test's time, bounded).
const MAX_PER_TASK: u32 = 60;
/// Small segments, so that kills also land in segment roll-over, copy-forward and
/// deletion (this queue never drains: the early roll-over of a drained queue's segment is
/// the store's unit test's).
const OPTIONS: StoreOptions = StoreOptions {
    segment_bytes: 256 * 1024,
    empty_roll_bytes: 32 * 1024,
    file_mode: 0o600,
    remove_sync_delay: sendmail_rs::queue::store::REMOVE_SYNC_DELAY,
};

fn main() {
    match std::env::var(CHILD_ENV) {
        Ok(dir) => child(Path::new(&dir)),
        Err(_) => parent(),
    }
}

fn body_of(id: &str) -> Vec<u8> {
    let mut b = format!("Subject: {id}\n\n").into_bytes();
    while b.len() < 5 * 1024 {
        b.extend_from_slice(id.as_bytes());
        b.push(b'\n');
    }
    b
}

// ---------------------------------------------------------------- child

fn child(dir: &Path) {
    let round: u32 = std::env::var(ROUND_ENV)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Store::open_with(dir, OPTIONS).unwrap_or_else(|e| {
        eprintln!("child: open: {e}");
        std::process::exit(3)
    });
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..MAX_PER_TASK {
                    let id = QueueId::new(format!("R{round}T{t}N{n}")).unwrap();
                    let mut env = Envelope::new(id.clone(), "sender@client.example.test");
                    env.recipients = vec![Recipient::new("a@x.test"), Recipient::new("b@y.test")];
                    let msg = Message {
                        envelope: env,
                        body: body_of(id.as_str()),
                    };
                    must(store.commit(msg).await, "commit");
                    say("ACK", &id);
                    if n % 3 == 1 {
                        let mut r = store.load(&id).unwrap().envelope.recipients;
                        r[0].state = DeliveryState::Done;
                        r[0].status = Some("Sent".into());
                        must(store.update(&id, r).await, "update");
                        say("UPD", &id);
                    }
                    if n % 5 == 2 {
                        say("RMV", &id); // from here on it may be gone
                        must(store.remove(&id).await, "remove");
                        say("DEL", &id);
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
}

fn must<T>(r: Result<T, sendmail_rs::queue::QueueError>, what: &str) -> T {
    r.unwrap_or_else(|e| {
        eprintln!("child: {what}: {e}");
        std::process::exit(2)
    })
}

fn say(what: &str, id: &QueueId) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{what} {id}")
        .and_then(|_| out.flush())
        .unwrap_or_else(|_| std::process::exit(4));
}

// ---------------------------------------------------------------- parent

/// Kills the child if the parent fails half-way.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn parent() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("mqueue");
    let mut rng = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    // What the children acknowledged, over all rounds.
    let mut acked: HashMap<String, Acked> = HashMap::new();

    for round in 0..ROUNDS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(5 + rng % 200);
        let lines = run_and_kill(&qdir, round, delay);
        let before = acked.len();
        for line in &lines {
            let (what, id) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("odd child line {line:?}"));
            let e = acked.entry(id.to_string()).or_default();
            match what {
                "ACK" => {}
                "UPD" => e.updated = true,
                "RMV" => e.removing = true,
                "DEL" => e.removed = true,
                _ => panic!("odd child line {line:?}"),
            }
        }
        let (queued, cleaned) = verify(&qdir, &acked);
        println!(
            "round {round}: killed after {delay:?}, {} new messages acknowledged, {queued} queued, all present; \
             recovery cut {cleaned} torn batch(es) off",
            acked.len() - before
        );
    }
    assert!(
        acked.len() >= ROUNDS as usize,
        "children acknowledged too little to test anything"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    println!(
        "queue_crash: ok ({} acknowledged ids over {ROUNDS} kills, {:?})",
        acked.len(),
        started.elapsed()
    );
}

/// Starts a child, lets it run `delay` after its first acknowledgement, SIGKILLs it, and
/// returns its complete output lines.
fn run_and_kill(qdir: &Path, round: u32, delay: Duration) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = KillOnDrop(
        Command::new(exe)
            .env(CHILD_ENV, qdir)
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                // A line cut by the kill (no newline) is not trusted.
                Ok(0) | Err(_) => break,
                Ok(_) if buf.ends_with(b"\n") => {
                    let _ = tx.send(String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned());
                }
                Ok(_) => break,
            }
        }
    });
    let mut lines = vec![
        rx.recv_timeout(Duration::from_secs(10))
            .expect("child acknowledged nothing in 10 s"),
    ];
    std::thread::sleep(delay);
    if let Ok(Some(status)) = child.0.try_wait() {
        panic!("child exited by itself before the kill: {status}");
    }
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    lines
}

/// What the child said about one id (it said `ACK` first).
#[derive(Default)]
struct Acked {
    /// `update` returned: the new state must be on disk.
    updated: bool,
    /// `remove` was called: the message may be gone.
    removing: bool,
    /// `remove` returned: the message must be gone.
    removed: bool,
}

/// Reopens the store and checks it against what was acknowledged; returns the queue size
/// and the number of torn frames recovery cut off.
fn verify(qdir: &Path, acked: &HashMap<String, Acked>) -> (usize, usize) {
    let store = Store::open_with(qdir, OPTIONS).unwrap();
    let truncated = store.recovery_report().truncated.len();

    let listed = store.list().unwrap();
    let ids: Vec<String> = listed.iter().map(|e| e.envelope.id.to_string()).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicated entries in the listing");
    let indexed = store.ids().unwrap().len();
    assert_eq!(
        indexed,
        ids.len(),
        "queued entries the listing cannot decode"
    );

    // Everything listed decodes completely and is what some child committed.
    let mut loaded = HashMap::new();
    for e in &listed {
        let m = store.load(&e.envelope.id).unwrap();
        assert_eq!(m.body, body_of(e.envelope.id.as_str()));
        loaded.insert(e.envelope.id.to_string(), m);
    }
    for (id, a) in acked {
        if a.removed {
            assert!(
                !loaded.contains_key(id),
                "{id}: removal was acknowledged but it is still queued"
            );
            continue;
        }
        let Some(m) = loaded.get(id) else {
            assert!(a.removing, "{id}: acknowledged but not in the queue");
            continue; // removed, killed before it could say so
        };
        assert_eq!(m.envelope.recipients.len(), 2);
        if a.updated {
            assert_eq!(
                m.envelope.recipients[0].state,
                DeliveryState::Done,
                "{id}: acknowledged update lost"
            );
        }
    }
    (ids.len(), truncated)
}
