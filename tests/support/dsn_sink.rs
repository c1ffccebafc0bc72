//! The next hop for the delivery tests that need a peer answering per recipient:
//! `tests/data/dsn_sink.py` (550 for "nosuch", 451 for "later" until the test lets it
//! accept them), sendmail-rs relaying everything to it through the smart host, and the
//! bounded waits the tests use on both.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Daemon, Smtp};

/// The next hop: the sink script, killed (by its pid) when dropped.
pub struct Sink {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Sink {
    pub fn start() -> Sink {
        Sink::start_on("127.0.0.1")
    }

    /// The sink listening on `ip` (an IPv4 loopback address).
    pub fn start_on(ip: &str) -> Sink {
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dsn_sink.py");
        let mut child = Command::new("python3")
            .args([script, dir.path().to_str().unwrap(), ip])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().strip_prefix("port ").unwrap().parse().unwrap();
        Sink { child, port, dir }
    }

    /// The messages received so far, in arrival order.
    pub fn messages(&self) -> Vec<String> {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| {
                let p = e.ok()?.path();
                let n = p.file_stem()?.to_str()?.parse().ok()?;
                (p.extension()? == "eml").then_some((n, p))
            })
            .collect();
        found.sort();
        found
            .iter()
            .map(|(_, p)| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Makes the sink accept the "later" addresses it has deferred so far (a flag file
    /// beside the messages).
    pub fn accept_later(&self) {
        std::fs::write(self.dir.path().join("accept-later"), "").unwrap();
    }

    /// Makes the sink stall every session right after its `250` to a message (`on`), or
    /// go on (a flag file beside the messages).
    pub fn stall_after_data(&self, on: bool) {
        let flag = self.dir.path().join("stall-after-data");
        match on {
            true => std::fs::write(flag, "").unwrap(),
            false => std::fs::remove_file(flag).unwrap(),
        }
    }

    /// The DSNs (null sender) received so far.
    pub fn dsns(&self) -> Vec<String> {
        self.messages()
            .into_iter()
            .filter(|m| m.starts_with("X-Sink-Mail: From:<>"))
            .collect()
    }

    /// Waits (bounded) for the `n`th message.
    pub fn wait_messages(&self, n: usize) -> Vec<String> {
        wait_for(
            || Some(self.messages()).filter(|m| m.len() >= n),
            "messages at the sink",
        )
    }

    /// Waits (bounded) for the `n`th DSN.
    pub fn wait_dsns(&self, n: usize) -> Vec<String> {
        wait_for(
            || Some(self.dsns()).filter(|d| d.len() >= n),
            "DSNs at the sink",
        )
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for<T>(mut f: impl FnMut() -> Option<T>, what: &str) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < super::WAIT,
            "no {what} after {:?}",
            super::WAIT
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// sendmail-rs relaying everything to the sink, `postmaster` aliased to a file.
pub fn relay_to(sink: &Sink, args: &[&str]) -> (Daemon, PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    // an alias /file is created as DefaultUser (sendmail's mailfile()): a sticky directory
    std::fs::set_permissions(
        &dir,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o1777),
    )
    .unwrap();
    let postmaster = dir.join("postmaster.mbox");
    let aliases = dir.join("aliases");
    std::fs::write(&aliases, format!("postmaster: {}\n", postmaster.display())).unwrap();
    let cf = format!(
        "Djmta.example.test\n\
         DSrelay:[127.0.0.1]\n\
         O AliasFile={}\n\
         O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n\
         Mrelay, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=2040, T=DNS/RFC822/SMTP, A=TCP $h {}\n",
        aliases.display(),
        sink.port
    );
    (Daemon::start(&cf, args), postmaster)
}

/// Sends one message; `mail` and each of `rcpts` are whole command arguments.
pub fn send(d: &mut Daemon, mail: &str, rcpts: &[&str], subject: &str) {
    let mut c = Smtp::connect(d.addr_of("MTA-v6"));
    c.reply();
    c.cmd("EHLO client.example.test");
    let r = c.cmd(&format!("MAIL FROM:{mail}"));
    assert!(r[0].starts_with("250"), "{r:?}");
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:{rcpt}"));
        assert!(r[0].starts_with("250"), "{rcpt}: {r:?}");
    }
    assert!(c.cmd("DATA")[0].starts_with("354"));
    c.send(&format!(
        "From: sender@client.example.test\r\nTo: someone@remote.example.test\r\nSubject: {subject}\r\n\r\nbody line 1\r\nbody line 2\r\n."
    ));
    let r = c.reply();
    assert!(r[0].starts_with("250 2.0.0 "), "{r:?}");
    c.cmd("QUIT");
}

pub fn wait_queue_empty(d: &Daemon) {
    wait_for(
        || d.mailq().contains("is empty").then_some(()),
        "empty queue",
    )
}
