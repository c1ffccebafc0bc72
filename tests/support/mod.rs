//! Test support: the real `sendmail` binary started on ephemeral ports, its mail log read back,
//! and a line-oriented SMTP client.
//!
//! Every daemon is configured with `Port=0` so the kernel picks free ports; the daemon logs
//! `daemon NAME: listening on ADDR` for each socket, which is how a test learns the port.
//! Waits are bounded (a generous upper limit, never a measure of speed).

#![allow(dead_code)]

pub mod dsn_sink;
pub mod pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn sendmail_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sendmail")
}

/// A running `sendmail -bD` with its own directory (cf, log, pid file).
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub cf: PathBuf,
    pub log: PathBuf,
    pub pid_file: PathBuf,
}

impl Daemon {
    pub fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("mqueue")
    }

    /// The raw queue files (subdirectories too), as text: to find the headers added at receipt.
    pub fn queue_text(&self) -> String {
        let mut text = String::new();
        let mut dirs = vec![self.queue_dir()];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if let Ok(b) = std::fs::read(&p) {
                    text.push_str(&String::from_utf8_lossy(&b));
                }
            }
        }
        text
    }
}

impl Daemon {
    /// Writes `cf_text` as the configuration and starts `sendmail -bD -C cf` with `args`.
    /// The log goes to `LogFile` in the daemon's directory, at LogLevel 14.
    pub fn start(cf_text: &str, args: &[&str]) -> Daemon {
        Daemon::start_wrapped(cf_text, args, &[])
    }

    /// Like [`Daemon::start`], with the binary run through `wrapper` (e.g. `unshare`).
    pub fn start_wrapped(cf_text: &str, args: &[&str], wrapper: &[&str]) -> Daemon {
        let mut d = Daemon::spawn_wrapped(cf_text, args, wrapper);
        d.wait_log("starting daemon");
        d
    }

    /// Like [`Daemon::start`], without waiting for the daemon to log its start (for what
    /// happens before it: opening its sockets). Its stderr is piped.
    pub fn spawn(cf_text: &str, args: &[&str]) -> Daemon {
        Daemon::spawn_wrapped(cf_text, args, &[])
    }

    fn spawn_wrapped(cf_text: &str, args: &[&str], wrapper: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let cf = dir.path().join("sendmail.cf");
        std::fs::write(&cf, cf_text).unwrap();
        let log = dir.path().join("maillog");
        let pid_file = dir.path().join("sendmail.pid");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(sendmail_bin());
                c
            }
            None => Command::new(sendmail_bin()),
        };
        let child = cmd
            .arg("-bD")
            .arg("-C")
            .arg(&cf)
            .arg("-O")
            .arg(format!("LogFile={}", log.display()))
            .arg("-O")
            .arg(format!("PidFile={}", pid_file.display()))
            .arg("-O")
            .arg(format!(
                "StatusFile={}",
                dir.path().join("sendmail.st").display()
            ))
            .arg("-O")
            .arg(format!(
                "QueueDirectory={}",
                dir.path().join("mqueue").display()
            ))
            .arg("-O")
            .arg("LogLevel=14")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            dir,
            cf,
            log,
            pid_file,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// `sendmail <args>` on the daemon's cf, queue and log, as an administrator runs it
    /// beside the daemon (`-q` asks it for a queue run).
    pub fn sendmail(&self, args: &[&str]) -> Output {
        let queue = format!("QueueDirectory={}", self.queue_dir().display());
        let log = format!("LogFile={}", self.log.display());
        let cf = self.cf.display().to_string();
        let mut all = args.to_vec();
        all.extend(["-C", &cf, "-O", &queue, "-O", &log]);
        run(&all)
    }

    /// `sendmail -bp` on the daemon's queue.
    pub fn mailq(&self) -> String {
        let out = run(&[
            "-bp",
            "-C",
            self.cf.to_str().unwrap(),
            "-O",
            &format!("QueueDirectory={}", self.queue_dir().display()),
        ]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// The mail log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (or the daemon died); returns the log.
    pub fn wait_log(&mut self, needle: &str) -> String {
        self.wait_log_count(needle, 1)
    }

    /// Waits until the log contains `needle` at least `n` times.
    pub fn wait_log_count(&mut self, needle: &str, n: usize) -> String {
        let start = Instant::now();
        loop {
            let text = self.log_text();
            if text.matches(needle).count() >= n {
                return text;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let mut err = String::new();
                if let Some(e) = self.child.as_mut().unwrap().stderr.as_mut() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!(
                    "daemon exited ({status}) before logging {needle:?}\nstderr: {err}\nlog:\n{text}"
                );
            }
            assert!(
                start.elapsed() < WAIT,
                "no {needle:?} in the log after {WAIT:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address daemon `name` listens on (from its `listening on` log line).
    pub fn addr_of(&mut self, name: &str) -> SocketAddr {
        let needle = format!("daemon {name}: listening on ");
        let text = self.wait_log(&needle);
        let line = text.lines().rev().find(|l| l.contains(&needle)).unwrap();
        let addr = line.split(&needle).nth(1).unwrap().trim();
        addr.parse()
            .unwrap_or_else(|_| panic!("not a socket address: {addr}"))
    }

    /// The metrics listener's address (`MetricsAddress`), from its latest `metrics:
    /// listening on` log line.
    pub fn metrics_addr(&mut self) -> SocketAddr {
        let needle = "metrics: listening on ";
        let log = self.wait_log(needle);
        let line = log.lines().rev().find(|l| l.contains(needle)).unwrap();
        line.split(needle).nth(1).unwrap().trim().parse().unwrap()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < WAIT, "daemon did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take()
            && c.try_wait().ok().flatten().is_none()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `bin` (the binary, or a link to it under another name) with `input` on stdin.
pub fn run_bin_with_input(bin: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A wrapper that runs a command as if on the oracle's recording host: a UTS namespace
/// named oracle.example.test (needs root, as the tests that use it run).
pub const AS_ORACLE_HOST: &[&str] = &[
    "unshare",
    "--uts",
    "--",
    "sh",
    "-c",
    "hostname oracle.example.test && exec \"$@\"",
    "sh",
];

/// Runs the binary to completion with `args` (no stdin).
/// The unlabelled samples of `GET /metrics` at `addr` (name → value).
pub fn scrape_metrics(addr: SocketAddr) -> std::collections::BTreeMap<String, f64> {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

pub fn run(args: &[&str]) -> Output {
    Command::new(sendmail_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A TCP connection to `addr` from the source address `source` (e.g. 127.0.0.9).
pub fn tcp_from(addr: SocketAddr, source: &str) -> TcpStream {
    let src = SocketAddr::new(source.parse().unwrap(), 0);
    let s = socket2::Socket::new(
        socket2::Domain::for_address(src),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    s.bind(&src.into()).unwrap();
    s.connect(&addr.into()).unwrap();
    s.into()
}

/// A minimal SMTP client: one command out, one (possibly multi-line) reply in.
pub struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    pub fn connect(addr: SocketAddr) -> Smtp {
        Smtp::from_stream(TcpStream::connect(addr).unwrap())
    }

    /// Connects from a chosen source address (e.g. 127.0.0.9).
    pub fn connect_from(addr: SocketAddr, source: &str) -> Smtp {
        Smtp::from_stream(tcp_from(addr, source))
    }

    fn from_stream(s: TcpStream) -> Smtp {
        s.set_read_timeout(Some(WAIT)).unwrap();
        Smtp {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// Reads one reply; returns its lines without CRLF.
    pub fn reply(&mut self) -> Vec<String> {
        read_reply(&mut self.reader)
    }

    /// Sends one command line and returns the reply.
    pub fn cmd(&mut self, line: &str) -> Vec<String> {
        self.send(line);
        self.reply()
    }

    pub fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
    }

    /// Another handle on the connection (for a writer thread).
    pub fn raw_clone(&self) -> TcpStream {
        self.writer.try_clone().unwrap()
    }

    /// Writes `bytes` as they are (pipelined commands, BDAT octets).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Whether the server has closed the connection (reads to EOF).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok()
    }
}

/// Reads one SMTP reply (all its lines, CRLF removed) from `r`: a socket, or the stdout of
/// `sendmail -bs`.
pub fn read_reply(r: &mut impl BufRead) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).unwrap();
        assert!(n > 0, "connection closed; reply so far: {lines:?}");
        assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
        let line = line.trim_end_matches("\r\n").to_string();
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return lines;
        }
    }
}

/// A path inside `dir` as text.
pub fn path_str(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// `makemap hash TEXT < TEXT` with this build: `TEXT.db`, which a `hash` map reads (a
/// missing `.db` is sendmail's "missing map file", not a reason to read the text).
pub fn makemap(text: &Path) {
    use std::os::unix::process::CommandExt;
    let input = std::fs::read_to_string(text).unwrap();
    let mut child = Command::new(sendmail_bin())
        .arg0("makemap")
        .args(["-C", "/dev/null", "hash"])
        .arg(text)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "makemap {}: {}",
        text.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
