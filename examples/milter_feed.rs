//! A filter's own ceiling: messages fed straight to a milter by our milter client, no SMTP,
//! no queue — what bench/milter.sh's "filter alone" row measures (as bench/ingest.sh's
//! "smtp-sink alone" row does for a next hop).
//!
//! `milter_feed SOCKET SESSIONS MESSAGES PER_CONN [SIZE]`, e.g.
//! `milter_feed inet:10052@127.0.0.1 20 2000 100 5120`: SESSIONS tasks at once, each one a
//! session as the daemon runs it (connect, HELO, then PER_CONN messages of MAIL, RCPT, DATA,
//! headers, end of headers, body, end of message), until MESSAGES are done. Connections are
//! kept between sessions as the daemon keeps them. The message is smtp-source's shape (From,
//! To, Date, Message-Id; about SIZE bytes of body in 78-byte lines, 5120 by default).
//!
//! Prints one line: `messages seconds msg/s cpu_us_per_msg accepted with_new_header`, where
//! cpu is this process's own user+system time and `with_new_header` counts messages the
//! filter added a header to (a DKIM-Signature when it signs). The filter is used as `F=T`:
//! the first message it does not accept (or a failure to reach it) stops the run, exit 1.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sendmail_rs::log::Logger;
use sendmail_rs::milter::MilterConfig;
use sendmail_rs::milter::config::{macro_list, parse_filter};
use sendmail_rs::milter::engine::{Edit, Engine, Outcome};
use sendmail_rs::milter::proto::{Family, Stage};

const FROM: &str = "writer@example.test";
const TO: &str = "reader@remote.example.test";

fn usage() -> ! {
    eprintln!("usage: milter_feed SOCKET SESSIONS MESSAGES PER_CONN [SIZE]");
    std::process::exit(64);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        usage();
    }
    let num = |i: usize| -> usize { args[i].parse().unwrap_or_else(|_| usage()) };
    let (sessions, total, per_conn) = (num(1).max(1), num(2), num(3).max(1));
    let size = if args.len() > 4 { num(4) } else { 5120 };
    let def =
        parse_filter("feed", &[('S', args[0].clone()), ('F', "T".into())]).unwrap_or_else(|e| {
            eprintln!("milter_feed: {e}");
            std::process::exit(64);
        });
    let def = Arc::new(def);
    let mut cfg = MilterConfig {
        log_level: 1,
        max_data_size: sendmail_rs::milter::proto::MDS_64K,
        input: vec![def],
        ..MilterConfig::default()
    };
    // The lists bench/milter.sh's cf gives sendmail-rs.
    cfg.macros[Stage::Connect as usize] = macro_list("j, _, {daemon_name}, {if_name}, {if_addr}");
    cfg.macros[Stage::EnvFrom as usize] = macro_list("i, {mail_mailer}, {mail_host}, {mail_addr}");
    let cfg = Arc::new(cfg);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let left = Arc::new(AtomicUsize::new(total));
    let accepted = Arc::new(AtomicUsize::new(0));
    let added = Arc::new(AtomicUsize::new(0));
    let cpu0 = cpu_us();
    let t0 = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for s in 0..sessions {
            let (cfg, left, accepted, added) =
                (cfg.clone(), left.clone(), accepted.clone(), added.clone());
            tasks.push(tokio::spawn(async move {
                while left.load(Ordering::Relaxed) > 0 {
                    session(&cfg, s, per_conn, size, &left, &accepted, &added).await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("session task");
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_us() - cpu0) as f64;
    let ok = accepted.load(Ordering::Relaxed);
    println!(
        "{total} {secs:.3} {:.0} {:.0} {ok} {}",
        total as f64 / secs,
        cpu / total.max(1) as f64,
        added.load(Ordering::Relaxed)
    );
    if ok != total {
        std::process::exit(1);
    }
}

/// One session: connect, HELO, up to `per_conn` messages, quit.
async fn session(
    cfg: &Arc<MilterConfig>,
    s: usize,
    per_conn: usize,
    size: usize,
    left: &AtomicUsize,
    accepted: &AtomicUsize,
    added: &AtomicUsize,
) {
    let mut engine = Engine::new(cfg.clone(), &cfg.input, Logger::stderr(1));
    let mut macros: BTreeMap<String, String> = [
        ("j", "bench.example.test"),
        ("_", "localhost [127.0.0.1]"),
        ("daemon_name", "MTA-v6"),
        ("client_addr", "127.0.0.1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let family = Family::Inet(40000 + s as u16, "127.0.0.1".into());
    if engine.connect("localhost", family, &macros).await != Outcome::Continue {
        eprintln!("milter_feed: connect refused");
        left.store(0, Ordering::Relaxed);
        return;
    }
    macros.insert("s".into(), "localhost".into());
    if engine.helo("localhost", &macros).await != Outcome::Continue {
        eprintln!("milter_feed: HELO refused");
        left.store(0, Ordering::Relaxed);
        engine.quit().await;
        return;
    }
    for _ in 0..per_conn {
        let n = match left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
        {
            Ok(l) => l,
            Err(_) => break,
        };
        let qid = format!("feed{s:02}x{n:06}");
        macros.insert("i".into(), qid.clone());
        macros.insert("mail_addr".into(), FROM.into());
        engine.qid = Some(qid.clone());
        let from = format!("<{FROM}>");
        if engine.mail(vec![from.clone()], &macros).await != Outcome::Continue
            || engine.rcpt(vec![format!("<{TO}>")], false, &macros).await != Outcome::Continue
            || engine.data_cmd(&macros).await != Outcome::Continue
        {
            eprintln!("milter_feed: {qid}: envelope refused");
            left.store(0, Ordering::Relaxed);
            break;
        }
        let mut edit = message(&qid, size);
        let before = edit.headers.len();
        if engine.eom(&mut edit, &macros).await == Outcome::Continue {
            accepted.fetch_add(1, Ordering::Relaxed);
            if edit.headers.len() > before {
                added.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            eprintln!("milter_feed: {qid}: message refused");
            left.store(0, Ordering::Relaxed);
            break;
        }
    }
    engine.quit().await;
}

/// smtp-source's message: four headers and whole lines, `size` bytes or a line more, of body.
fn message(qid: &str, size: usize) -> Edit {
    let headers = [
        ("From", format!(" <{FROM}>")),
        ("To", format!(" <{TO}>")),
        ("Date", " Sun, 6 Dec 2026 10:00:00 +0000 (UTC)".to_string()),
        ("Message-Id", format!(" <{qid}@bench.example.test>")),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect();
    let line = b"La de da de da 1. La de da de da 2. La de da de da 3. La de da de da 4. La d\n";
    let body = line.repeat(size.div_ceil(line.len()));
    Edit {
        headers,
        body,
        sender: format!("<{FROM}>"),
        sender_args: None,
        rcpts: vec![(format!("<{TO}>"), None)],
        changed: false,
        quarantine: None,
    }
}

/// This process's user + system CPU time in microseconds.
fn cpu_us() -> u64 {
    let r = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    us(r.user_time()) + us(r.system_time())
}
