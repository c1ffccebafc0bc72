//! A next hop's window end to end: the real binary delivers a queue run's messages to an
//! SMTP sink on loopback that counts how many of them wait at its final dot at once. A hop
//! that commits messages one after the other is not sent twenty at once; a hop that takes
//! as long for twenty at once as for one gets the full `DestinationConcurrencyLimit`
//! (`src/runner/limits.rs`, `Destinations`).
//!
//! The sink's delays are far from any scheduling noise (a whole message's time at a hop
//! that queues, 100 ms at one that does not), so the windows these tests see do not hang
//! on the machine's speed; only how long they take does.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{Daemon, Smtp};

/// How the sink commits a message at its final dot.
#[derive(Clone, Copy)]
enum Commit {
    /// One message at a time, each taking this long (one busy process).
    OneAtATime(Duration),
    /// Any number at once, each taking this long (a relay fsyncing in parallel).
    Parallel(Duration),
}

#[derive(Default)]
struct Counts {
    /// Messages at the final dot now, and the most seen at once after the first `warm_up`.
    at_dot: usize,
    peak: usize,
    committed: usize,
}

struct Sink {
    port: u16,
    counts: Arc<Mutex<Counts>>,
}

impl Sink {
    fn start(commit: Commit, warm_up: usize) -> Sink {
        let l = TcpListener::bind(("127.0.0.2", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let counts = Arc::new(Mutex::new(Counts::default()));
        let one_at_a_time = Arc::new(Mutex::new(()));
        let c = counts.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (c, one) = (c.clone(), one_at_a_time.clone());
                std::thread::spawn(move || serve(s, commit, warm_up, &c, &one));
            }
        });
        Sink { port, counts }
    }

    fn wait_committed(&self, n: usize) {
        let committed = || self.counts.lock().unwrap().committed;
        support::dsn_sink::wait_for(|| (committed() >= n).then_some(()), "messages at the sink");
    }

    fn peak(&self) -> usize {
        self.counts.lock().unwrap().peak
    }
}

fn serve(s: TcpStream, commit: Commit, warm_up: usize, c: &Mutex<Counts>, one: &Mutex<()>) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let _ = w.write_all(b"220 sink.test ESMTP\r\n");
    let mut in_data = false;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if in_data {
            if l == "." {
                in_data = false;
                {
                    let mut c = c.lock().unwrap();
                    c.at_dot += 1;
                    if c.committed >= warm_up {
                        c.peak = c.peak.max(c.at_dot);
                    }
                }
                match commit {
                    Commit::OneAtATime(d) => {
                        let _turn = one.lock().unwrap();
                        std::thread::sleep(d);
                    }
                    Commit::Parallel(d) => std::thread::sleep(d),
                }
                {
                    let mut c = c.lock().unwrap();
                    c.at_dot -= 1;
                    c.committed += 1;
                }
                let _ = w.write_all(b"250 2.0.0 queued\r\n");
            }
            continue;
        }
        let u = l.to_ascii_uppercase();
        let reply: &[u8] = if u.starts_with("EHLO") {
            b"250-sink.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        } else if u == "DATA" {
            in_data = true;
            b"354 go\r\n"
        } else if u == "QUIT" {
            let _ = w.write_all(b"221 2.0.0 bye\r\n");
            return;
        } else {
            b"250 2.0.0 ok\r\n"
        };
        let _ = w.write_all(reply);
    }
}

/// A daemon whose `esmtp` mailer reaches the sink, holding `n` messages to it in its queue,
/// then a queue run: all of them want the hop at once.
fn queue_and_run(sink: &Sink, n: usize) -> Daemon {
    let cf = format!(
        "Djmta.example.test\n\
         O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n\
         Mesmtp, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=990, T=DNS/RFC822/SMTP, A=TCP $h {}\n",
        sink.port
    );
    let mut d = Daemon::start(&cf, &["-O", "DeliveryMode=queueonly"]);
    let mut c = Smtp::connect(d.addr_of("MTA-v6"));
    c.reply();
    c.cmd("EHLO client.example.test");
    for i in 0..n {
        assert!(c.cmd("MAIL FROM:<alice@client.example.test>")[0].starts_with("250"));
        let reply = c.cmd(&format!("RCPT TO:<user{i}@[127.0.0.2]>"));
        assert!(reply[0].starts_with("250"), "{reply:?}");
        assert!(c.cmd("DATA")[0].starts_with("354"));
        c.send("Subject: window test\r\n\r\nhello\r\n.");
        assert!(c.reply()[0].starts_with("250"));
    }
    c.cmd("QUIT");
    let out = d.sendmail(&["-q"]);
    assert!(out.status.success(), "{out:?}");
    d
}

#[test]
fn a_hop_that_commits_one_message_at_a_time_is_not_sent_twenty_at_once() {
    // 20 at its dot would each wait for up to 19 others (~400 ms against its own 20 ms).
    let sink = Sink::start(Commit::OneAtATime(Duration::from_millis(20)), 40);
    let _d = queue_and_run(&sink, 150);
    sink.wait_committed(150);
    let peak = sink.peak();
    println!("peak at the dot: {peak}");
    assert!(
        peak <= 12,
        "{peak} messages waited at once at a hop that takes them one by one"
    );
}

#[test]
fn a_hop_that_commits_many_at_once_gets_the_whole_limit() {
    let sink = Sink::start(Commit::Parallel(Duration::from_millis(100)), 0);
    let _d = queue_and_run(&sink, 150);
    sink.wait_committed(150);
    assert_eq!(sink.peak(), 20, "DestinationConcurrencyLimit's default");
}
