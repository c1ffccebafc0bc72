//! The queue's control socket: how `sendmail -q` asks a running daemon for a queue run, and
//! `sendmail -Q[reason] -q…` for a quarantine change.
//!
//! The journal has one writer, the process holding the queue's lock file (see
//! [`crate::queue::store`]). When a daemon holds it, a command-line `sendmail -q…` must not open the
//! queue for writing; instead it connects to `<QueueDirectory>/control`, a Unix socket the
//! daemon listens on, and sends the run's limits. The daemon runs the selected messages
//! (every recipient still pending, backoff or not, as sendmail's `-q` does), and answers
//! once they are done; the command exits then, so a `mailq` after it shows the result. The
//! socket (mode 0600) lives in the queue directory, so only the queue's owner can ask.
//! Nothing is written through it: a request that dies half-way has changed nothing but the
//! delivery attempts the daemon made, which it records itself.
//!
//! Protocol (lines of UTF-8 ending in `\n`): the client sends `RUN`, then each `-q` limit as
//! typed after `q` (`Rexample.com`, `!Sroot`), then an empty line. The daemon answers
//! `OK <n>` (n messages attempted) or `ERR <text>`. A quarantine change starts with
//! `QUARANTINE <reason>` (`QUARANTINE` alone releases) instead of `RUN`; the daemon applies
//! it ([`super::quarantine`]) and answers a line per selected message (`LOCKED <id>`,
//! `FAILED <id> <text>`, `ALREADY <id>`, `CHANGED <id>[ <reason before>]`), then `OK <n>`
//! (n changed). At most [`MAX_LINES`] lines of at most [`MAX_LINE`] bytes; a client that
//! stays silent for [`READ_TIMEOUT`] is dropped.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::quarantine::Outcome;
use super::select::{QueueRun, Selection};
use crate::queue::QueueId;

/// The socket's name in the queue directory.
pub const SOCKET_NAME: &str = "control";
/// Longest request line.
pub const MAX_LINE: usize = 4096;
/// Most lines in one request.
pub const MAX_LINES: usize = 64;
/// How long the daemon waits for a whole request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A queue run asked for through the socket; `done` gets the number of messages attempted.
#[derive(Debug)]
pub struct RunRequest {
    pub select: Selection,
    pub done: oneshot::Sender<usize>,
}

/// A quarantine change asked for through the socket; `done` gets what became of each
/// selected message, or why nothing could be done.
#[derive(Debug)]
pub struct QuarantineRequest {
    pub select: Selection,
    /// The new reason; `None` releases.
    pub reason: Option<String>,
    pub done: oneshot::Sender<Result<Vec<Outcome>, String>>,
}

/// What the daemon's runner is asked to do.
#[derive(Debug)]
pub enum Request {
    Run(RunRequest),
    Quarantine(QuarantineRequest),
}

/// What a request's first line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    Run,
    Quarantine(Option<String>),
}

/// Where the control socket of the queue in `qdir` is.
pub fn socket_path(qdir: &Path) -> PathBuf {
    qdir.join(SOCKET_NAME)
}

/// Daemon side: listens on the control socket (replacing a leftover one: the caller holds
/// the queue lock, so no other daemon uses it) and hands each request to `runs`. Returns
/// when `runs` is closed or the socket cannot be opened.
pub async fn serve(qdir: &Path, runs: mpsc::Sender<Request>) -> io::Result<()> {
    let path = socket_path(qdir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    // Only the queue's owner may ask: the queue directory may be open to the submission
    // group (2750, for mailq and the maildrop), the socket never is.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let runs = runs.clone();
        tokio::spawn(async move {
            let _ = answer(stream, runs).await;
        });
    }
}

async fn answer(stream: tokio::net::UnixStream, runs: mpsc::Sender<Request>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    let request = tokio::time::timeout(READ_TIMEOUT, read_request(&mut read)).await;
    let stopped = "ERR the queue runner has stopped".to_string();
    let reply = match request {
        Err(_) => "ERR request timed out".to_string(),
        Ok(Err(e)) => format!("ERR {e}"),
        Ok(Ok((ask, flags))) => match (QueueRun::parse(&flags), ask) {
            (Err(e), _) => format!("ERR {e}"),
            (Ok(run), Ask::Run) => {
                let (done, finished) = oneshot::channel();
                let sent = runs.send(Request::Run(RunRequest {
                    select: run.select,
                    done,
                }));
                match sent.await {
                    Err(_) => stopped,
                    Ok(()) => match finished.await {
                        Ok(n) => format!("OK {n}"),
                        Err(_) => "ERR the queue run was cut short".to_string(),
                    },
                }
            }
            (Ok(run), Ask::Quarantine(reason)) => {
                let (done, finished) = oneshot::channel();
                let sent = runs.send(Request::Quarantine(QuarantineRequest {
                    select: run.select,
                    reason,
                    done,
                }));
                match sent.await {
                    Err(_) => stopped,
                    Ok(()) => match finished.await {
                        Ok(Ok(outcomes)) => outcome_lines(&outcomes),
                        Ok(Err(e)) => format!("ERR {e}"),
                        Err(_) => "ERR the quarantine change was cut short".to_string(),
                    },
                }
            }
        },
    };
    write.write_all(format!("{reply}\n").as_bytes()).await
}

/// The answer to a quarantine change: a line per message, then `OK <changed>`.
fn outcome_lines(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    for o in outcomes {
        let line = match o {
            Outcome::Locked(id) => format!("LOCKED {id}"),
            Outcome::Failed(id, why) => format!("FAILED {id} {}", one_line(why)),
            Outcome::Already(id) => format!("ALREADY {id}"),
            Outcome::Changed { id, before: None } => format!("CHANGED {id}"),
            Outcome::Changed {
                id,
                before: Some(b),
            } => format!("CHANGED {id} {}", one_line(b)),
        };
        s.push_str(&line);
        s.push('\n');
    }
    let n = outcomes.iter().filter(|o| o.changed()).count();
    s.push_str(&format!("OK {n}"));
    s
}

/// `text` on one line (sendmail cleans a quarantine reason of newlines the same way).
pub fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// The first line (`RUN`, `QUARANTINE[ reason]`), the flags, an empty line.
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> io::Result<(Ask, Vec<String>)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = (&mut *r)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut line)
            .await?;
        if n == 0 || !line.ends_with('\n') {
            return Err(bad("request cut short (expected RUN, limits, empty line)"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        if lines.len() > MAX_LINES {
            return Err(bad("request too long"));
        }
        lines.push(line);
    }
    let Some((first, flags)) = lines.split_first() else {
        return Err(bad("request does not start with RUN or QUARANTINE"));
    };
    let ask = match first.split_once(' ') {
        None if first == "RUN" => Ask::Run,
        None if first == "QUARANTINE" => Ask::Quarantine(None),
        Some(("QUARANTINE", reason)) if !reason.is_empty() => {
            Ask::Quarantine(Some(reason.to_string()))
        }
        _ => return Err(bad("request does not start with RUN or QUARANTINE")),
    };
    Ok((ask, flags.to_vec()))
}

/// What a daemon said to a queue-run request.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No daemon listens (no socket, or nobody behind it).
    #[error("cannot reach the daemon's control socket {path}: {source}")]
    Unreachable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The daemon refused or failed the run.
    #[error("the daemon refused the queue run: {0}")]
    Refused(String),
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
}

/// Client side (`sendmail -Q[reason] -q…` while a daemon runs): asks the daemon to set
/// (`reason`) or clear (`None`) the quarantine of the messages `select` takes, and waits
/// for what became of each.
pub fn request_quarantine(
    qdir: &Path,
    select: &Selection,
    reason: Option<&str>,
) -> Result<Vec<Outcome>, ControlError> {
    let path = socket_path(qdir);
    let mut stream =
        UnixStream::connect(&path).map_err(|source| ControlError::Unreachable { path, source })?;
    let mut text = match reason {
        Some(r) => format!("QUARANTINE {}\n", one_line(r)),
        None => "QUARANTINE\n".to_string(),
    };
    for flag in select.to_flags() {
        text.push_str(&flag);
        text.push('\n');
    }
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    let mut read = BufReader::new(stream);
    let mut outcomes = Vec::new();
    loop {
        let mut line = String::new();
        if (&mut read).take(MAX_LINE as u64).read_line(&mut line)? == 0 {
            return Err(ControlError::Refused("answer cut short".to_string()));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.starts_with("OK ") {
            return Ok(outcomes);
        }
        if let Some(e) = line.strip_prefix("ERR ") {
            return Err(ControlError::Refused(e.to_string()));
        }
        let unreadable = || ControlError::Refused(format!("unreadable answer {line:?}"));
        let (verb, rest) = line.split_once(' ').ok_or_else(unreadable)?;
        let (id, text) = match rest.split_once(' ') {
            Some((id, text)) => (id, Some(text.to_string())),
            None => (rest, None),
        };
        let id = QueueId::new(id).map_err(|_| unreadable())?;
        outcomes.push(match (verb, text) {
            ("LOCKED", None) => Outcome::Locked(id),
            ("FAILED", Some(why)) => Outcome::Failed(id, why),
            ("ALREADY", None) => Outcome::Already(id),
            ("CHANGED", before) => Outcome::Changed { id, before },
            _ => return Err(unreadable()),
        });
    }
}

/// Client side (`sendmail -q` while a daemon runs): asks for one run of `select` and waits
/// until it is done. Returns the number of messages attempted.
pub fn request_run(qdir: &Path, select: &Selection) -> Result<usize, ControlError> {
    let path = socket_path(qdir);
    let mut stream =
        UnixStream::connect(&path).map_err(|source| ControlError::Unreachable { path, source })?;
    let mut text = String::from("RUN\n");
    for flag in select.to_flags() {
        text.push_str(&flag);
        text.push('\n');
    }
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream)
        .take(MAX_LINE as u64)
        .read_line(&mut reply)?;
    let reply = reply.trim_end();
    match reply.strip_prefix("OK ") {
        Some(n) => n
            .parse()
            .map_err(|_| ControlError::Refused(format!("unreadable answer {reply:?}"))),
        None => Err(ControlError::Refused(
            reply.strip_prefix("ERR ").unwrap_or(reply).to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `request`'s answer once the control socket is up (the server starts beside it),
    /// off the async workers (the client side blocks).
    async fn once_up<T: Send + 'static>(
        request: impl Fn() -> Result<T, ControlError> + Send + 'static,
    ) -> T {
        tokio::task::spawn_blocking(move || {
            for _ in 0..500 {
                match request() {
                    Err(ControlError::Unreachable { .. }) => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    other => return other.unwrap(),
                }
            }
            panic!("control socket never came up");
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_request_reaches_the_runner_and_its_answer_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let qdir = dir.path().to_path_buf();
        let server = tokio::spawn(async move { serve(&qdir, tx).await });
        // The runner's side: take one request, check it, say 3 messages were run.
        let runner = tokio::spawn(async move {
            let Some(Request::Run(req)) = rx.recv().await else {
                panic!("not a run request")
            };
            let flags = req.select.to_flags();
            req.done.send(3).unwrap();
            flags
        });
        let qdir = dir.path().to_path_buf();
        let select = QueueRun::parse(&["Rexample.com", "!Sroot"]).unwrap().select;
        let n = once_up(move || request_run(&qdir, &select)).await;
        assert_eq!(n, 3);
        assert_eq!(runner.await.unwrap(), ["Rexample.com", "!Sroot"]);
        server.abort();
    }

    #[tokio::test]
    async fn a_quarantine_change_reaches_the_runner_and_each_outcome_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let qdir = dir.path().to_path_buf();
        let server = tokio::spawn(async move { serve(&qdir, tx).await });
        let id = |s: &str| QueueId::new(s).unwrap();
        let outcomes = vec![
            Outcome::Locked(id("6B6BQ3lg014987")),
            Outcome::Already(id("6B6BQ3lg014988")),
            Outcome::Failed(id("6B6BQ3lg014989"), "disk full".into()),
            Outcome::Changed {
                id: id("6B6BQ3iY014994"),
                before: None,
            },
            Outcome::Changed {
                id: id("6B6BQ3iY014995"),
                before: Some("held by a filter".into()),
            },
        ];
        let answer = outcomes.clone();
        let runner = tokio::spawn(async move {
            let Some(Request::Quarantine(req)) = rx.recv().await else {
                panic!("not a quarantine request")
            };
            let asked = (req.select.to_flags(), req.reason.clone());
            req.done.send(Ok(answer)).unwrap();
            asked
        });
        let qdir = dir.path().to_path_buf();
        let select = QueueRun::parse(&["Q", "I6B6BQ3"]).unwrap().select;
        let got = once_up(move || request_quarantine(&qdir, &select, Some("by the\nadmin"))).await;
        assert_eq!(got, outcomes);
        let (flags, reason) = runner.await.unwrap();
        assert_eq!(reason.as_deref(), Some("by the admin"));
        assert!(flags.contains(&"I6B6BQ3".to_string()), "{flags:?}");
        server.abort();
    }

    #[tokio::test]
    async fn garbage_is_refused_with_a_reason() {
        let mut r = tokio::io::BufReader::new(&b"HELLO\n\n"[..]);
        let e = read_request(&mut r).await.unwrap_err();
        assert!(e.to_string().contains("RUN"), "{e}");
        let mut r = tokio::io::BufReader::new(&b"RUN\nRx"[..]);
        assert!(read_request(&mut r).await.is_err());
        let mut r = tokio::io::BufReader::new(&b"QUARANTINE\nQ\n\n"[..]);
        let (ask, flags) = read_request(&mut r).await.unwrap();
        assert_eq!((ask, flags), (Ask::Quarantine(None), vec!["Q".to_string()]));
    }

    #[test]
    fn no_daemon_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let e = request_run(dir.path(), &Selection::default()).unwrap_err();
        assert!(matches!(e, ControlError::Unreachable { .. }), "{e}");
    }
}
