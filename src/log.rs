//! The mail log: sendmail-format lines to syslog, to our `LogFile`, and to stderr.
//!
//! In: a severity, an optional queue id and the text of one log line. Out: the line
//! `sendmail[PID]: QID: text` (or `sendmail[PID]: text`) written to each sink the
//! [`LogConfig`] turns on:
//!
//! * **syslog**: one datagram per line on the local syslog socket (`/dev/log`), RFC 3164
//!   framing as the local syslogd expects it, without hostname:
//!   `<PRI>Mmm dd hh:mm:ss ident[pid]: msg`, facility `mail` (2), so `PRI = 16 + severity`.
//!   A missing socket is skipped (and retried at most once a second, so a syslogd started
//!   later is picked up); a syslogd restart is handled by reconnecting once on a send error;
//!   a send never waits more than [`SYSLOG_SEND_TIMEOUT`], and after one such wait the
//!   following second's sends do not wait at all (a syslogd that stopped reading loses lines
//!   rather than stall the daemon's tasks).
//! * **`LogFile=PATH`** (our option): appended as a syslog file would have it,
//!   `Mmm dd hh:mm:ss HOSTNAME ident[pid]: msg`, so tools reading `/var/log/mail.log`
//!   (fail2ban, pflogsumm) read ours. Created with mode 0640 if missing; [`Logger::reopen`]
//!   (on SIGHUP) reopens it after rotation. One `write(2)` per line on an `O_APPEND` file,
//!   so lines from several tasks or processes never interleave.
//! * **stderr** (e.g. `-bD`, `-bt` debugging): `ident[pid]: msg`.
//!
//! The pid is read at every write (`getpid`), so lines written after a fork carry the
//! child's pid as sendmail's do. Control characters in the text (CR, LF, …) are written as
//! `?` so that a client-supplied string can never forge a second log line.
//! Timestamps are local time, like syslog's.
//!
//! # LogLevel
//!
//! sendmail guards each line with `if (LogLevel > n)`; [`Logger::enabled`]`(n)` is that test.
//! The classes used so far [facts §3.3, §4; sendmail 8.17 sources named there]:
//!
//! | line                                                   | logged when `LogLevel >` | severity |
//! |--------------------------------------------------------|--------------------------|----------|
//! | `starting daemon (8.17.1.9): …`                        | always                   | info     |
//! | `lost input channel from …` (after MAIL / otherwise)   | 1 / 19                   | notice   |
//! | `ruleset=check_…, arg1=…, reject=…` (`rscheck`)        | 2 (`>= 3`) (unverified)  | notice   |
//! | `restarting … due to signal`                           | 3                        | info     |
//! | `from=…` (`logsender`, collect.c)                      | 4                        | info     |
//! | `… did not issue MAIL/EXPN/VRFY/ETRN …`                | 5                        | info     |
//! | `to=…, stat=` failed / Sent / Deferred (`giveresponse`)| 6 / 7 / 8                | info     |
//! | `to=…, stat=queued` (`queueup`)                        | 8                        | info     |
//! | `started as: …`, `connect from …`, `alias … => …`, `stopping daemon, reason=signal` | 9 | info |
//!
//! The `from=` and `to=` levels are from sendmail's collect.c/deliver.c, the rest from
//! `docs/sendmail-facts.md` §3.3 and §4; `rscheck`'s level is its `logl` argument
//! (3 for the `check_*` calls, from memory, not checked against 8.17).
//! The default `LogLevel` is 9 [op 4.8].

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// syslog severities (RFC 5424 numbering), facility is always `mail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Emerg = 0,
    Alert = 1,
    Crit = 2,
    Err = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

/// syslog facility `mail`.
pub const FACILITY_MAIL: u8 = 2;
/// Where local syslog listens.
pub const DEFAULT_SYSLOG_PATH: &str = "/dev/log";
/// The longest a syslog send may wait before the line is dropped.
pub const SYSLOG_SEND_TIMEOUT: Duration = Duration::from_millis(100);
/// How often a missing syslog socket is looked for again.
const SYSLOG_RETRY: Duration = Duration::from_secs(1);

/// Which sinks a [`Logger`] writes to, and at which `LogLevel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `sendmail`, or the tag given with `-L tag`.
    pub ident: String,
    /// sendmail's `LogLevel` (default 9).
    pub level: u32,
    /// Send to syslog (skipped quietly when the socket is absent).
    pub syslog: bool,
    /// Our `LogFile=PATH` option.
    pub file: Option<PathBuf>,
    /// Also write to stderr.
    pub stderr: bool,
    /// The syslog socket; [`DEFAULT_SYSLOG_PATH`] unless a test says otherwise.
    pub syslog_path: PathBuf,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            ident: "sendmail".to_string(),
            level: 9,
            syslog: true,
            file: None,
            stderr: false,
            syslog_path: PathBuf::from(DEFAULT_SYSLOG_PATH),
        }
    }
}

/// Cheap to clone (one `Arc`); `Send + Sync`, shared by every task.
#[derive(Debug, Clone)]
pub struct Logger {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ident: String,
    level: u32,
    hostname: String,
    stderr: bool,
    syslog: Option<Mutex<Syslog>>,
    /// Writers share the read lock (`&File` writes are independent); `reopen` takes it for
    /// writing.
    file: Option<(PathBuf, RwLock<File>)>,
}

#[derive(Debug)]
struct Syslog {
    path: PathBuf,
    sock: Option<UnixDatagram>,
    last_attempt: Option<Instant>,
    /// After a send timed out: until then, sends do not wait at all.
    stalled_until: Option<Instant>,
}

impl Syslog {
    fn connect(&mut self) {
        self.last_attempt = Some(Instant::now());
        self.sock = UnixDatagram::unbound()
            .and_then(|s| {
                s.connect(&self.path)?;
                s.set_write_timeout(Some(SYSLOG_SEND_TIMEOUT))?;
                Ok(s)
            })
            .ok();
    }

    /// Sends one datagram; reconnects once if the socket went away (syslogd restarted).
    fn send(&mut self, datagram: &[u8]) {
        if self.sock.is_none() {
            let due = self
                .last_attempt
                .is_none_or(|t| t.elapsed() >= SYSLOG_RETRY);
            if !due {
                return;
            }
            self.connect();
        }
        let Some(sock) = &self.sock else { return };
        let stalled = self.stalled_until.is_some_and(|t| Instant::now() < t);
        let sent = if stalled {
            use std::os::fd::AsRawFd;
            let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT;
            nix::sys::socket::send(sock.as_raw_fd(), datagram, flags).map_err(io::Error::from)
        } else {
            sock.send(datagram)
        };
        match sent {
            Ok(_) => self.stalled_until = None,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // syslogd is not reading: lose lines rather than stall every task
                if !stalled {
                    self.stalled_until = Some(Instant::now() + SYSLOG_RETRY);
                }
            }
            Err(e)
                if e.raw_os_error() == Some(nix::errno::Errno::EMSGSIZE as i32)
                    || e.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32) => {}
            Err(_) => {
                self.connect();
                if let Some(sock) = &self.sock
                    && sock.send(datagram).is_err()
                {
                    self.sock = None;
                }
            }
        }
    }
}

/// Opens (creates 0640) the `LogFile` for appending: never through a symlink, never a
/// FIFO or device (root opens it, possibly in a directory others can write).
fn open_log_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .and_then(regular_only)
        .map_err(|e| io::Error::new(e.kind(), open_error_text(&e)))
}

/// `f` if it is a regular file; an error otherwise (as sendmail's safefile `SFF_REGONLY`).
pub fn regular_only(f: File) -> io::Result<File> {
    if f.metadata()?.is_file() {
        Ok(f)
    } else {
        Err(io::Error::other("Regular files only"))
    }
}

/// The invoking user's login name (sendmail's `RealUserName`, the `user` of `SYSERR(user)`
/// lines and of `$_`); None when the password database has no entry for the real uid.
pub fn real_user_name() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// An open error in sendmail's words: `Symbolic links not allowed` for `O_NOFOLLOW`'s
/// `ELOOP`, else the system's text without Rust's `(os error N)`.
pub fn open_error_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(nix::libc::ELOOP) => "Symbolic links not allowed".to_string(),
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

fn short_hostname() -> String {
    let name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string());
    match name.split_once('.') {
        Some((short, _)) if !short.is_empty() => short.to_string(),
        _ => name,
    }
}

impl Logger {
    /// Opens the sinks `cfg` asks for. Fails only if the `LogFile` cannot be opened; a missing
    /// syslog socket is not an error.
    pub fn new(cfg: LogConfig) -> io::Result<Logger> {
        let file = match cfg.file {
            Some(path) => {
                let f = open_log_file(&path).map_err(|e| {
                    io::Error::new(e.kind(), format!("LogFile {}: {e}", path.display()))
                })?;
                Some((path, RwLock::new(f)))
            }
            None => None,
        };
        let syslog = cfg.syslog.then(|| {
            let mut s = Syslog {
                path: cfg.syslog_path,
                sock: None,
                last_attempt: None,
                stalled_until: None,
            };
            s.connect();
            Mutex::new(s)
        });
        Ok(Logger {
            inner: Arc::new(Inner {
                ident: cfg.ident,
                level: cfg.level,
                hostname: short_hostname(),
                stderr: cfg.stderr,
                syslog,
                file,
            }),
        })
    }

    /// A logger that writes to stderr only, at `LogLevel` `level`.
    pub fn stderr(level: u32) -> Logger {
        Logger {
            inner: Arc::new(Inner {
                ident: "sendmail".to_string(),
                level,
                hostname: short_hostname(),
                stderr: true,
                syslog: None,
                file: None,
            }),
        }
    }

    /// A logger that writes nowhere (unit tests whose log lines are not what they check).
    #[cfg(test)]
    pub fn silent() -> Logger {
        Logger {
            inner: Arc::new(Inner {
                ident: "test".to_string(),
                level: 0,
                hostname: short_hostname(),
                stderr: false,
                syslog: None,
                file: None,
            }),
        }
    }

    /// sendmail's `LogLevel` in force.
    pub fn level(&self) -> u32 {
        self.inner.level
    }

    /// sendmail's `LogLevel > n` test: should a line of that class be written?
    pub fn enabled(&self, n: u32) -> bool {
        self.inner.level > n
    }

    /// Reopens the `LogFile` (after log rotation, on SIGHUP). No-op without one.
    pub fn reopen(&self) -> io::Result<()> {
        if let Some((path, lock)) = &self.inner.file {
            let f = open_log_file(path)?;
            *lock.write().unwrap_or_else(|p| p.into_inner()) = f;
        }
        Ok(())
    }

    /// Writes `sendmail[pid]: <qid>: <msg>` (or without `<qid>: ` when `qid` is None) to every
    /// sink. Never fails and never panics: a sink that cannot take the line loses it.
    pub fn log(&self, sev: Severity, qid: Option<&str>, msg: fmt::Arguments<'_>) {
        let inner = &*self.inner;
        let body = format_body(&inner.ident, std::process::id(), qid, msg);
        if inner.syslog.is_none() && inner.file.is_none() && !inner.stderr {
            return;
        }
        if let Some(syslog) = &inner.syslog {
            let pri = FACILITY_MAIL * 8 + sev as u8;
            let datagram = with_stamp(|stamp| format!("<{pri}>{stamp} {body}"));
            syslog
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send(datagram.as_bytes());
        }
        if let Some((_, lock)) = &inner.file {
            let mut line = String::with_capacity(body.len() + inner.hostname.len() + 20);
            with_stamp(|stamp| line.push_str(stamp));
            for part in [" ", &inner.hostname, " ", &body, "\n"] {
                line.push_str(part);
            }
            let f = lock.read().unwrap_or_else(|p| p.into_inner());
            let _ = (&*f).write_all(line.as_bytes());
        }
        if inner.stderr {
            let _ = writeln!(io::stderr().lock(), "{body}");
        }
    }

    /// [`Logger::log`] at [`Severity::Info`].
    pub fn info(&self, qid: Option<&str>, msg: fmt::Arguments<'_>) {
        self.log(Severity::Info, qid, msg);
    }

    /// [`Logger::log`] at [`Severity::Notice`].
    pub fn notice(&self, qid: Option<&str>, msg: fmt::Arguments<'_>) {
        self.log(Severity::Notice, qid, msg);
    }
}

/// Calls `f` with the syslog time stamp of this second (`Dec  6 11:40:02`), made once per second per
/// thread: the local-time conversion and formatting cost more than the rest of a line.
fn with_stamp<R>(f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static STAMP: PerSecond = const { PerSecond::new() };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    STAMP.with(|stamp| {
        let make = || {
            chrono::DateTime::<chrono::Local>::from(now)
                .format("%b %e %H:%M:%S")
                .to_string()
        };
        stamp.with(secs, make, f)
    })
}

/// A text made at most once per second, for a thread-local (a time stamp whose formatting
/// costs more than its use): the text of second `secs`, made again when the second changed.
pub struct PerSecond(std::cell::RefCell<(i64, String)>);

impl Default for PerSecond {
    fn default() -> PerSecond {
        PerSecond::new()
    }
}

impl PerSecond {
    pub const fn new() -> PerSecond {
        PerSecond(std::cell::RefCell::new((i64::MIN, String::new())))
    }

    /// Calls `f` with the text of second `secs`, made by `make` when it is not that
    /// second's yet.
    pub fn with<R>(
        &self,
        secs: i64,
        make: impl FnOnce() -> String,
        f: impl FnOnce(&str) -> R,
    ) -> R {
        let mut c = self.0.borrow_mut();
        if c.0 != secs {
            *c = (secs, make());
        }
        f(&c.1)
    }
}

/// `ident[pid]: qid: msg`, the text made printable as sendmail does ([`push_printable`]).
fn format_body(ident: &str, pid: u32, qid: Option<&str>, msg: fmt::Arguments<'_>) -> String {
    let mut out = String::with_capacity(160);
    let _ = write!(out, "{ident}[{pid}]: ");
    let start = out.len();
    match qid {
        Some(q) => {
            let _ = write!(out, "{q}: {msg}");
        }
        None => {
            let _ = write!(out, "{msg}");
        }
    }
    // Written in place (one buffer a line); made printable only when it has to be.
    if !out.as_bytes()[start..]
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'\\')
    {
        let raw = out.split_off(start);
        push_printable(&mut out, &raw);
    }
    out
}

/// Appends `raw` as sendmail writes log text (its `str2prt`, as the oracle shows for
/// `VRFY a\x01b\\c\td\x7fe\r`: `VRFY a\001b\\c\td\177e\r`): a backslash doubled, tab,
/// newline and carriage return as `\t`, `\n`, `\r`, any other control character as a
/// backslash and three octal digits per byte. So a client's bytes can neither split a log
/// line nor pass for another one (fail2ban reads these lines). Other non-ASCII characters
/// stay as they are: they reach a log line only as UTF-8 (an SMTPUTF8 address, a file
/// name); sendmail escapes 8-bit bytes too, but its bytes are not checked UTF-8.
fn push_printable(out: &mut String, raw: &str) {
    if raw.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\') {
        out.push_str(raw);
        return;
    }
    for c in raw.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                for b in c.encode_utf8(&mut [0; 4]).bytes() {
                    let _ = write!(out, "\\{b:03o}");
                }
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn cfg(dir: &Path) -> LogConfig {
        LogConfig {
            syslog_path: dir.join("log.sock"),
            ..LogConfig::default()
        }
    }

    #[test]
    fn a_planted_symlink_or_fifo_is_never_opened_as_the_log_file_or_the_pid_file() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let log = |p: &Path| {
            Logger::new(LogConfig {
                file: Some(p.to_path_buf()),
                syslog: false,
                ..cfg(d.path())
            })
        };
        let e = log(&link).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("LogFile {}: Symbolic links not allowed", link.display())
        );
        // a FIFO: refused at once (ENXIO without a reader, else not a regular file)
        assert!(log(&fifo).is_err());
        // sendmail 8.17: `unable to write pid to <path>: Symbolic links not allowed`
        let e = crate::daemon::PidFile::create(&link, "sendmail -bd").unwrap_err();
        assert_eq!(
            e,
            format!(
                "unable to write pid to {}: Symbolic links not allowed",
                link.display()
            )
        );
        assert!(crate::daemon::PidFile::create(&fifo, "sendmail -bd").is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        // an ordinary path still works
        let pid = d.path().join("sendmail.pid");
        let held = crate::daemon::PidFile::create(&pid, "sendmail -bd").unwrap();
        assert!(
            fs::read_to_string(&pid)
                .unwrap()
                .starts_with(&std::process::id().to_string())
        );
        drop(held);
        assert!(log(&d.path().join("maillog")).is_ok());
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// `Mmm dd hh:mm:ss ` — 16 characters, e.g. `Nov  4 06:53:20 `.
    fn assert_stamp(s: &str) {
        let b = s.as_bytes();
        assert!(b[..3].iter().all(u8::is_ascii_alphabetic), "{s}");
        assert_eq!(b[3], b' ', "{s}");
        assert!(b[4] == b' ' || b[4].is_ascii_digit(), "{s}");
        assert!(b[5].is_ascii_digit(), "{s}");
        assert_eq!(&s[6..7], " ");
        assert_eq!(&s[9..10], ":");
        assert_eq!(&s[12..13], ":");
        assert_eq!(&s[15..16], " ");
    }

    #[test]
    fn syslog_datagram_is_rfc3164_with_mail_facility_and_our_pid() {
        let dir = tempfile::tempdir().unwrap();
        let server = UnixDatagram::bind(dir.path().join("log.sock")).unwrap();
        let log = Logger::new(cfg(dir.path())).unwrap();
        log.log(
            Severity::Info,
            Some("6AO6rKe2007088"),
            format_args!("from=<a@b>, size={}", 121),
        );
        let got = recv(&server);
        assert!(got.starts_with("<22>"), "{got}"); // mail.info = 2*8+6
        assert_stamp(&got[4..]);
        assert_eq!(
            &got[20..],
            format!(
                "sendmail[{}]: 6AO6rKe2007088: from=<a@b>, size=121",
                std::process::id()
            )
        );
        log.log(Severity::Notice, None, format_args!("starting daemon"));
        let got = recv(&server);
        assert!(got.starts_with("<21>"), "{got}");
        assert!(got.ends_with(&format!(
            "sendmail[{}]: starting daemon",
            std::process::id()
        )));
    }

    #[test]
    fn the_ident_is_the_l_tag() {
        let dir = tempfile::tempdir().unwrap();
        let server = UnixDatagram::bind(dir.path().join("log.sock")).unwrap();
        let log = Logger::new(LogConfig {
            ident: "sm-mta".into(),
            ..cfg(dir.path())
        })
        .unwrap();
        log.info(None, format_args!("x"));
        assert!(recv(&server).contains(" sm-mta["));
    }

    #[test]
    fn syslog_reconnects_after_syslogd_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let log = Logger::new(cfg(dir.path())).unwrap();
        log.info(None, format_args!("one"));
        assert!(recv(&server).ends_with("one"));
        drop(server);
        std::fs::remove_file(&path).unwrap();
        let server = UnixDatagram::bind(&path).unwrap();
        log.info(None, format_args!("two"));
        assert!(recv(&server).ends_with("two"));
    }

    #[test]
    fn a_syslogd_that_stops_reading_does_not_stall_us() {
        let dir = tempfile::tempdir().unwrap();
        let server = UnixDatagram::bind(dir.path().join("log.sock")).unwrap();
        let log = Logger::new(cfg(dir.path())).unwrap();
        let start = Instant::now();
        for i in 0..5000 {
            log.info(None, format_args!("line {i} {}", "x".repeat(500)));
        }
        // The queue fills after a few hundred datagrams; then one wait of 100 ms at most, and
        // no more waits after it. A logger that waited on every line would take 500 s here;
        // the bound is generous so that a loaded machine never decides the test.
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{:?}",
            start.elapsed()
        );
        server.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let mut got = 0;
        while server.recv(&mut buf).is_ok() {
            got += 1;
        }
        assert!(got > 0 && got < 5000, "{got}");
        log.info(None, format_args!("after the drain"));
        server.set_nonblocking(false).unwrap();
        assert!(recv(&server).ends_with("after the drain"));
    }

    #[test]
    fn a_line_too_big_for_a_datagram_loses_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let server = UnixDatagram::bind(dir.path().join("log.sock")).unwrap();
        let log = Logger::new(cfg(dir.path())).unwrap();
        log.info(None, format_args!("{}", "x".repeat(4 << 20)));
        log.info(None, format_args!("next"));
        assert!(recv(&server).ends_with("next"));
    }

    #[test]
    fn loggers_are_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Logger>();
    }

    #[test]
    fn a_missing_syslog_socket_is_skipped_and_found_later() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("maillog");
        let log = Logger::new(LogConfig {
            file: Some(file.clone()),
            ..cfg(dir.path())
        })
        .unwrap();
        log.info(None, format_args!("no syslogd yet"));
        assert!(
            std::fs::read_to_string(&file)
                .unwrap()
                .contains("no syslogd yet")
        );
        let server = UnixDatagram::bind(dir.path().join("log.sock")).unwrap();
        std::thread::sleep(SYSLOG_RETRY + Duration::from_millis(50));
        log.info(None, format_args!("now there is one"));
        assert!(recv(&server).ends_with("now there is one"));
    }

    #[test]
    fn log_file_lines_look_like_a_syslog_file_and_the_file_is_0640() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("maillog");
        let log = Logger::new(LogConfig {
            syslog: false,
            file: Some(file.clone()),
            ..cfg(dir.path())
        })
        .unwrap();
        log.info(Some("QID"), format_args!("a"));
        log.info(None, format_args!("b"));
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let pid = std::process::id();
        let host = short_hostname();
        assert_stamp(lines[0]);
        assert_eq!(&lines[0][16..], format!("{host} sendmail[{pid}]: QID: a"));
        assert_eq!(&lines[1][16..], format!("{host} sendmail[{pid}]: b"));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        // 0640, less whatever the umask takes away
        assert_eq!(mode & 0o777 & !0o640, 0, "{mode:o}");
        assert_eq!(mode & 0o600, 0o600, "{mode:o}");
    }

    #[test]
    fn reopen_follows_log_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("maillog");
        let log = Logger::new(LogConfig {
            syslog: false,
            file: Some(file.clone()),
            ..cfg(dir.path())
        })
        .unwrap();
        log.info(None, format_args!("before"));
        std::fs::rename(&file, dir.path().join("maillog.1")).unwrap();
        log.info(None, format_args!("still old"));
        log.reopen().unwrap();
        log.info(None, format_args!("after"));
        let old = std::fs::read_to_string(dir.path().join("maillog.1")).unwrap();
        let new = std::fs::read_to_string(&file).unwrap();
        assert!(old.contains("before") && old.contains("still old") && !old.contains("after"));
        assert_eq!(new.lines().count(), 1);
        assert!(new.ends_with("after\n"));
    }

    #[test]
    fn an_unopenable_log_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Logger::new(LogConfig {
            syslog: false,
            file: Some(dir.path().join("no/such/dir/maillog")),
            ..cfg(dir.path())
        })
        .unwrap_err();
        assert!(err.to_string().contains("no/such/dir/maillog"), "{err}");
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        let body = format_body(
            "sendmail",
            42,
            Some("Q"),
            format_args!("HELO x\r\nsendmail[1]: fake"),
        );
        assert_eq!(body, "sendmail[42]: Q: HELO x\\r\\nsendmail[1]: fake");
    }

    #[test]
    fn log_text_is_escaped_as_the_oracle_logs_it() {
        // Sent to the oracle (sendmail 8.17.1.9) as `VRFY <these bytes>`; its log line ended
        // in `VRFY a\001b\\c\td\177e\033f` and, for the second,
        // `VRFY a\007b\010c\013d\014e`. UTF-8 (an SMTPUTF8 address) stays; a C1 control
        // character is escaped by its bytes.
        let body = format_body("s", 1, None, format_args!("VRFY a\x01b\\c\td\x7fe\x1bf"));
        assert_eq!(body, r"s[1]: VRFY a\001b\\c\td\177e\033f");
        let body = format_body("s", 1, None, format_args!("VRFY a\x07b\x08c\x0bd\x0ce"));
        assert_eq!(body, r"s[1]: VRFY a\007b\010c\013d\014e");
        let body = format_body("s", 1, None, format_args!("from=<jösé@x>\u{85}"));
        assert_eq!(body, r"s[1]: from=<jösé@x>\302\205");
        let plain = "from=<a@b.example>, size=12, relay=[IPv6:::1]";
        assert_eq!(
            format_body("s", 1, None, format_args!("{plain}")),
            format!("s[1]: {plain}")
        );
    }

    #[test]
    fn enabled_is_sendmails_loglevel_greater_than() {
        let log = Logger::new(LogConfig {
            level: 9,
            syslog: false,
            ..LogConfig::default()
        })
        .unwrap();
        assert!(log.enabled(8));
        assert!(!log.enabled(9));
        assert_eq!(log.level(), 9);
    }

    #[test]
    fn many_threads_write_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("maillog");
        let log = Logger::new(LogConfig {
            syslog: false,
            file: Some(file.clone()),
            ..cfg(dir.path())
        })
        .unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        log.info(
                            Some("QID"),
                            format_args!("thread {t} line {i} {}", "x".repeat(200)),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 2000);
        assert!(text.lines().all(|l| l.ends_with(&"x".repeat(200))));
    }
}
