//! The local delivery agent: a root process that delivers queued mail to local recipients
//! for the unprivileged daemon, and the daemon's client for it.
//!
//! In (agent): [`proto::Request`]s over its end of a socketpair. Out: one
//! [`Outcome`] per recipient asked for. The agent trusts nothing but the queue id and the
//! positions: it reads the message from the journal itself (at the position the daemon
//! names, which must hold a whole, checksummed queue file of that id), checks that each
//! recipient asked for exists and is still pending, routes it itself under its own
//! configuration, and hands only recipients that route to a local mailer to the queue
//! runner's local delivery ([`crate::runner::deliver_local`]: aliases, `.forward`
//! with the safe-file checks, mailboxes, files, programs as their owner or `DefaultUser`).
//! So the daemon cannot make it write a file or run a program that the alias file or a
//! user's own `.forward` does not name. Each request is served on its own thread (a slow
//! program does not hold up the others); the agent ends when the daemon's end closes,
//! after the deliveries in progress (the supervisor then removes the pid file the daemon
//! can no longer remove); what it delivers after a daemon's death is recorded for the next
//! daemon's agent, which does not deliver it again ([`super::ledger`]). The agent is forked by the root supervisor
//! ([`super::supervisor`]); when it dies, the deliveries it had in hand get a temporary
//! failure (they stay queued and are logged `stat=Deferred`, retried like any deferral),
//! and the next request has the supervisor start a new agent, whose socket the daemon
//! receives by SCM_RIGHTS.
//!
//! Like Postfix's local(8), which master(8) runs as root while smtpd runs as `postfix`.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};

use super::PrivError;
use super::ledger::{Ledger, Previous};
use super::proto::{self, Request, Tagged};
use super::supervisor::Supervisor;
use crate::cli::Invocation;
use crate::deliver::Outcome;
use crate::deliver::route::Route;
use crate::log::{Logger, Severity};
use crate::queue::{CopyRef, DeliveryState, Expanded, QueueId, Recipient, Store};
use crate::runner;
use crate::runtime::Current;

/// Records older than this are removed when an agent starts ([`Ledger::sweep`]): a
/// message is bounced or delivered long before (`Timeout.queuereturn`, 5 days by default).
const STALE_RECORDS: std::time::Duration = std::time::Duration::from_secs(10 * 86400);

/// Most requests served at once (the daemon's runner sends at most
/// [`crate::runner::CONCURRENT_MESSAGES`] at a time).
pub const MAX_WORKERS: usize = 64;

/// What the agent needs to serve requests.
#[derive(Clone)]
pub struct AgentContext {
    pub inv: Invocation,
    pub logger: Logger,
    pub queue_dir: PathBuf,
    /// The daemon's pid file and pid: removed by the supervisor at the end if it still
    /// names the daemon.
    pub pid_file: PathBuf,
    pub daemon_pid: u32,
}

/// Serves requests until the daemon's end of `sock` closes; never returns.
pub fn serve(sock: UnixStream, ctx: AgentContext) -> ! {
    let loaded = crate::config::load(&ctx.inv.source, &ctx.inv.overrides)
        .map_err(|errors| errors.iter().map(|e| e.to_string()).collect::<Vec<_>>())
        .and_then(|cfg| {
            Current::new(cfg)
                .map(|(c, _)| c)
                .map_err(|e| vec![e.to_string()])
        });
    let current = match loaded {
        Ok(c) => c,
        Err(errors) => {
            ctx.logger.log(
                Severity::Crit,
                None,
                format_args!(
                    "SYSERR: local delivery agent: configuration: {}",
                    errors.first().map(|e| e.to_string()).unwrap_or_default()
                ),
            );
            std::process::exit(crate::sysexits::EX_CONFIG);
        }
    };
    let current = Arc::new(RwLock::new(Arc::new(current)));
    let writer = match sock.try_clone() {
        Ok(w) => Arc::new(Mutex::new(BufWriter::new(w))),
        Err(_) => std::process::exit(crate::sysexits::EX_OSERR),
    };
    let ledger = Arc::new(Ledger::open(&ctx.queue_dir, &ctx.logger));
    if let Some(l) = &*ledger {
        l.sweep(STALE_RECORDS);
    }
    let ctx = Arc::new(ctx);
    let mut reader = BufReader::new(sock);
    let mut workers = Vec::new();
    while let Ok(Some(frame)) = proto::read_frame(&mut reader) {
        let req = match proto::decode_request(&frame) {
            Ok(r) => r,
            Err(e) => {
                ctx.logger.log(
                    Severity::Crit,
                    None,
                    format_args!("SYSERR: local delivery agent: bad request ({e}); stopping"),
                );
                break;
            }
        };
        let (ctx, current, writer) = (ctx.clone(), current.clone(), writer.clone());
        let ledger = ledger.clone();
        workers.push(std::thread::spawn(move || {
            let body = handle(&ctx, &current, (*ledger).as_ref(), req.body);
            let payload = proto::encode_answer(&Tagged { tag: req.tag, body });
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            let _ = proto::write_frame(&mut *w, &payload);
        }));
        workers.retain(|w| !w.is_finished());
        // A bounded number at once, whatever the other side sends: wait for the oldest.
        if workers.len() >= MAX_WORKERS {
            let _ = workers.remove(0).join();
        }
    }
    for w in workers {
        let _ = w.join();
    }
    std::process::exit(0)
}

fn handle(
    ctx: &AgentContext,
    current: &RwLock<Arc<Current>>,
    ledger: Option<&Ledger>,
    req: Request,
) -> Vec<Outcome> {
    match req {
        Request::Reload => {
            let loaded = crate::config::load(&ctx.inv.source, &ctx.inv.overrides)
                .map_err(|errors| errors.iter().map(|e| e.to_string()).collect::<Vec<_>>())
                .and_then(|cfg| Current::new(cfg).map_err(|e| vec![e.to_string()]));
            match loaded {
                Ok((c, _)) => {
                    *current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(c);
                }
                Err(errors) => ctx.logger.log(
                    Severity::Err,
                    None,
                    format_args!(
                        "local delivery agent: configuration not reloaded ({} error(s))",
                        errors.len()
                    ),
                ),
            }
            Vec::new()
        }
        Request::Deliver { qid, at, indexes } => {
            let current = current.read().unwrap_or_else(|p| p.into_inner()).clone();
            deliver(ctx, &current, ledger, &qid, at, &indexes)
        }
        Request::Forget { qid, indexes } => {
            // a queue id names a record only when it is one (no `/`, no `..`)
            if let (Some(l), Ok(id)) = (ledger, QueueId::new(&qid)) {
                indexes.iter().for_each(|i| l.forget(&format!("{id}.{i}")));
            }
            Vec::new()
        }
    }
}

fn refused(why: impl std::fmt::Display) -> Outcome {
    Outcome::Temporary {
        dsn: "4.3.0".into(),
        text: format!("Deferred: local delivery agent: {why}"),
    }
}

/// Delivers the recipients at `indexes` of message `qid` (its copy at `at` in the journal),
/// as the queue says them. With a `ledger`, a recipient the previous daemon's agent
/// delivered is not delivered again, and each delivery made is recorded until the daemon
/// says its outcome is in the queue ([`Request::Forget`]).
pub fn deliver(
    ctx: &AgentContext,
    current: &Current,
    ledger: Option<&Ledger>,
    qid: &str,
    at: CopyRef,
    indexes: &[u32],
) -> Vec<Outcome> {
    let loaded = QueueId::new(qid).and_then(|id| crate::queue::read_copy(&ctx.queue_dir, &id, at));
    let msg = match loaded {
        Ok(m) => m,
        Err(e) => return vec![refused(e); indexes.len()],
    };
    indexes
        .iter()
        .map(|&i| {
            let checked = msg
                .envelope
                .recipients
                .get(i as usize)
                .ok_or_else(|| refused(format!("{qid} has no recipient #{i}")))
                .and_then(|r| check(ctx, current, &msg, r));
            match checked {
                Ok((user, r)) => {
                    // the queue id is checked above: no `/` in the name
                    let name = format!("{qid}.{i}");
                    if let Some(l) = ledger
                        && l.previous(&name, &ctx.logger, qid) == Previous::Delivered
                    {
                        return Outcome::Delivered {
                            reply: String::new(),
                        };
                    }
                    let mut record = ledger.and_then(|l| l.begin(&name));
                    let out = runner::deliver_local_in(
                        current,
                        &ctx.logger,
                        &msg,
                        &user,
                        std::slice::from_ref(&r),
                        Some(&ctx.queue_dir),
                        None,
                    );
                    let out = out
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| refused("no outcome for a recipient"));
                    if let Some(record) = &mut record
                        && matches!(out, Outcome::Delivered { .. })
                    {
                        record.delivered();
                    }
                    out
                }
                Err(o) => o,
            }
        })
        .collect()
}

/// Whether the agent will deliver recipient `r` of `msg`: it must be pending and route to a
/// local mailer under the agent's own configuration. A recipient the daemon recorded as the
/// expansion of another (a `|program`, `/file` or user from an alias or `.forward`) must be
/// one of the targets the agent itself gets by expanding that parent again (aliases,
/// `.forward` with the safe-file checks), and its owner is the one the agent finds, not the
/// one written in the queue. Returns the routed user and the recipient to deliver.
fn check(
    ctx: &AgentContext,
    current: &Current,
    msg: &crate::queue::Message,
    r: &Recipient,
) -> Result<(String, Recipient), Outcome> {
    if r.state != DeliveryState::Pending {
        return Err(refused(format!("{} is not pending", r.address)));
    }
    let local_user = |addr: &str| match runner::route(current, addr) {
        Route::Local { user, .. } => Ok(user),
        _ => Err(refused(format!("{addr} is not a local recipient"))),
    };
    let Some(x) = &r.expanded else {
        return Ok((local_user(&r.address)?, r.clone()));
    };
    let parent = msg
        .envelope
        .recipients
        .iter()
        .find(|p| p.expanded.is_none() && p.address == x.parent)
        .ok_or_else(|| {
            refused(format!(
                "{}: no parent {} in the message",
                r.address, x.parent
            ))
        })?;
    let user = local_user(&parent.address)?;
    let table = crate::aliases::load_all(&current.config.options.alias_files)
        .map_err(|e| refused(format!("aliases: {e}")))?;
    let ids = current
        .local
        .default_user
        .unwrap_or_else(|| crate::aliases::default_user(&current.config));
    let mut expander = crate::aliases::Expander::from_config_as(&table, &current.config, ids);
    expander.log = Some((&ctx.logger, Some(msg.envelope.id.as_str())));
    let want = runner::expand::target_of(r);
    let (_, owner) = expander
        .expand_owned(&user)
        .into_iter()
        .find(|(t, _)| *t == want)
        .ok_or_else(|| {
            refused(format!(
                "{} is not (or no longer) an expansion of {}",
                r.address, parent.address
            ))
        })?;
    let mut r = r.clone();
    r.expanded = Some(Expanded {
        parent: parent.address.clone(),
        owner: owner.map(|u| u.name),
    });
    Ok((user, r))
}

/// Removes the pid file if it still holds `pid` (a daemon started since keeps its own).
/// Read without following a symlink or blocking on a FIFO: it lies where the daemon's
/// files are, and root reads it.
pub(super) fn remove_pid_file(path: &Path, pid: u32) {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let holds_ours = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .and_then(crate::log::regular_only)
        .and_then(|f| {
            let mut t = String::new();
            f.take(4096).read_to_string(&mut t).map(|_| t)
        })
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.trim() == pid.to_string()))
        .unwrap_or(false);
    if holds_ours {
        let _ = std::fs::remove_file(path);
    }
}

/// Requests waiting for their answer, by tag; None once the agent is gone.
type Waiting = Mutex<Option<HashMap<u64, mpsc::Sender<Vec<Outcome>>>>>;

/// One running agent, as the daemon sees it.
struct Conn {
    writer: Mutex<BufWriter<UnixStream>>,
    waiting: Arc<Waiting>,
    pid: i32,
}

/// Why a request got no answer.
enum Lost {
    /// Nothing reached the agent: the request may be sent to a new one.
    NotSent,
    /// The agent had it and died: what it did is unknown.
    InFlight,
}

impl Conn {
    /// Wraps the daemon's end of an agent's socketpair; starts the thread that reads answers.
    fn new(sock: UnixStream, pid: i32, logger: Logger) -> std::io::Result<Conn> {
        let waiting: Arc<Waiting> = Arc::new(Mutex::new(Some(HashMap::new())));
        let mut reader = BufReader::new(sock.try_clone()?);
        let w = waiting.clone();
        std::thread::Builder::new()
            .name("delivery-agent-answers".into())
            .spawn(move || {
                while let Ok(Some(frame)) = proto::read_frame(&mut reader) {
                    let Ok(answer) = proto::decode_answer(&frame) else {
                        break;
                    };
                    let tx = w
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_mut()
                        .and_then(|m| m.remove(&answer.tag));
                    if let Some(tx) = tx {
                        let _ = tx.send(answer.body);
                    }
                }
                // Dropping the senders wakes every waiting delivery with an error.
                w.lock().unwrap_or_else(|p| p.into_inner()).take();
                logger.log(
                    Severity::Crit,
                    None,
                    format_args!(
                        "SYSERR: local delivery agent (pid {pid}) has stopped; local mail stays queued until a new one is started"
                    ),
                );
            })?;
        Ok(Conn {
            writer: Mutex::new(BufWriter::new(sock)),
            waiting,
            pid,
        })
    }

    fn alive(&self) -> bool {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn ask(&self, tag: u64, body: Request) -> Result<Vec<Outcome>, Lost> {
        let (tx, rx) = mpsc::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .ok_or(Lost::NotSent)?
            .insert(tag, tx);
        let payload = proto::encode_request(&Tagged { tag, body });
        let sent = {
            let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            proto::write_frame(&mut *w, &payload)
        };
        if sent.is_err() {
            // The agent is gone (EPIPE): mark it so, before its reader thread notices.
            self.waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            return Err(Lost::NotSent);
        }
        rx.recv().map_err(|_| Lost::InFlight)
    }
}

/// The daemon's side: sends requests to the running agent, matches answers by tag, and
/// has the supervisor start a new agent when the running one has died. Cheap to share.
pub struct AgentClient {
    conn: Mutex<Arc<Conn>>,
    supervisor: Arc<Supervisor>,
    logger: Logger,
    next: AtomicU64,
}

impl crate::deliver::LocalAgent for AgentClient {
    fn deliver(&self, store: &Store, qid: &QueueId, indexes: &[usize]) -> Vec<Outcome> {
        AgentClient::deliver(self, store, qid, indexes)
    }

    fn forget(&self, qid: &QueueId, indexes: &[usize]) {
        AgentClient::forget(self, qid, indexes)
    }
}

impl AgentClient {
    /// Wraps the daemon's end of the first agent's socketpair.
    pub fn new(
        sock: UnixStream,
        pid: i32,
        supervisor: Arc<Supervisor>,
        logger: Logger,
    ) -> std::io::Result<AgentClient> {
        Ok(AgentClient {
            conn: Mutex::new(Arc::new(Conn::new(sock, pid, logger.clone())?)),
            supervisor,
            logger,
            next: AtomicU64::new(1),
        })
    }

    /// The running agent's process id (for the log and the tests).
    pub fn pid(&self) -> i32 {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).pid
    }

    /// The root supervisor (sockets on privileged ports).
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Delivers recipients `indexes` of message `qid` of `store` through the agent;
    /// blocking. One outcome per index; a temporary failure for each when the agent cannot
    /// be asked (the recipients stay queued).
    ///
    /// The journal may move the message's copy while the agent reads it (a segment's live
    /// copies written forward and the segment removed): when every recipient came back
    /// deferred and the copy is no longer where the request said, the agent is asked again
    /// with where it is now (twice at most), instead of leaving the recipients for the next
    /// queue run.
    pub fn deliver(&self, store: &Store, qid: &QueueId, indexes: &[usize]) -> Vec<Outcome> {
        let mut tries = 0;
        loop {
            let Some(at) = store.locate(qid) else {
                return vec![refused(format!("{qid} is not in the queue")); indexes.len()];
            };
            let req = Request::Deliver {
                qid: qid.as_str().to_string(),
                at,
                indexes: indexes.iter().map(|&i| i as u32).collect(),
            };
            let out = match self.ask(req) {
                Some(out) if out.len() == indexes.len() => out,
                Some(_) => vec![refused("answer does not match the request"); indexes.len()],
                None => vec![refused("not running"); indexes.len()],
            };
            tries += 1;
            let deferred = out.iter().all(|o| matches!(o, Outcome::Temporary { .. }));
            let moved = store.locate(qid).is_some_and(|now| now != at);
            if !(deferred && moved) || tries == 3 {
                return out;
            }
        }
    }

    /// Tells the agent that the outcomes of recipients `indexes` of `qid` are in the queue
    /// (its records of them can go); returns once it has them.
    pub fn forget(&self, qid: &QueueId, indexes: &[usize]) {
        self.ask(Request::Forget {
            qid: qid.as_str().to_string(),
            indexes: indexes.iter().map(|&i| i as u32).collect(),
        });
    }

    /// Tells the agent to re-read the configuration; returns once it has.
    pub fn reload(&self) -> bool {
        self.ask(Request::Reload).is_some()
    }

    /// Asks the running agent, or a new one when it has died before the request reached it.
    /// None when the agent died with the request (what it did is unknown: the queue keeps
    /// the recipients, as after a crash) or no agent can be started.
    fn ask(&self, body: Request) -> Option<Vec<Outcome>> {
        for _ in 0..2 {
            let conn = self.live_conn()?;
            let tag = self.next.fetch_add(1, Ordering::Relaxed);
            match conn.ask(tag, body.clone()) {
                Ok(out) => return Some(out),
                Err(Lost::InFlight) => return None,
                Err(Lost::NotSent) => continue,
            }
        }
        None
    }

    /// The running agent; a new one from the supervisor when it has stopped.
    fn live_conn(&self) -> Option<Arc<Conn>> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if conn.alive() {
            return Some(conn.clone());
        }
        let old = conn.pid;
        let started = self.supervisor.agent().and_then(|(sock, pid)| {
            Conn::new(sock, pid, self.logger.clone()).map_err(PrivError::Agent)
        });
        match started {
            Ok(c) => {
                self.logger.log(
                    Severity::Notice,
                    None,
                    format_args!(
                        "local delivery agent restarted: pid {} (pid {old} had stopped)",
                        c.pid
                    ),
                );
                *conn = Arc::new(c);
                Some(conn.clone())
            }
            Err(e) => {
                self.logger.log(
                    Severity::Crit,
                    None,
                    format_args!(
                        "SYSERR: cannot restart the local delivery agent: {e}; local mail stays queued"
                    ),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Envelope, Message, Recipient};

    /// A queue holding one message for `rcpts`, an alias file with a file target, and the
    /// agent's view of them.
    struct Fixture {
        dir: tempfile::TempDir,
        ctx: AgentContext,
        current: Current,
        /// Where the message's copy is.
        at: CopyRef,
        _store: Store,
    }

    fn fixture(rcpts: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // the alias's /file is created as DefaultUser when the test runs as root
        std::fs::set_permissions(
            root,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o1777),
        )
        .unwrap();
        let cf = root.join("sendmail.cf");
        std::fs::write(&cf, "Djmta.example.test\nCwmta.example.test\n").unwrap();
        let aliases = root.join("aliases");
        std::fs::write(
            &aliases,
            format!("archive: {}\n", root.join("archive.mbox").display()),
        )
        .unwrap();
        crate::aliases::rebuild(&aliases.display().to_string()).unwrap();
        let qdir = root.join("mqueue");
        let argv: Vec<String> = [
            "sendmail".to_string(),
            "-bD".into(),
            "-C".into(),
            cf.display().to_string(),
            "-O".into(),
            format!("QueueDirectory={}", qdir.display()),
            "-O".into(),
            format!("AliasFile={}", aliases.display()),
        ]
        .into();
        let inv = crate::cli::parse(&argv, &cf).unwrap();
        let cfg = crate::config::load(&inv.source, &inv.overrides).unwrap();
        let current = Current::new(cfg).unwrap().0;
        let store = Store::open(&qdir).unwrap();
        let mut env = Envelope::new(QueueId::new("6B2GP0r6010938").unwrap(), "s@client.test");
        env.recipients = rcpts.iter().map(|r| Recipient::new(*r)).collect();
        let msg = Message {
            envelope: env,
            body: b"Subject: agent\n\nhello\n".to_vec(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let id = rt.block_on(store.commit(msg)).unwrap();
        let at = store.locate(&id).unwrap();
        let logger = Logger::silent();
        let ctx = AgentContext {
            inv,
            logger,
            queue_dir: qdir,
            pid_file: root.join("pid"),
            daemon_pid: 0,
        };
        Fixture {
            dir,
            ctx,
            current,
            at,
            _store: store,
        }
    }

    fn is_temporary(o: &Outcome, says: &str) -> bool {
        matches!(o, Outcome::Temporary { text, .. } if text.contains(says))
    }

    #[test]
    fn addresses_from_the_queue_never_become_programs_or_files() {
        let f = fixture(&[
            "|touch PWNED",
            "\"|/usr/bin/touch /tmp/pwned-by-address\"",
            "/etc/passwd-by-address",
            "archive",
        ]);
        let out = deliver(
            &f.ctx,
            &f.current,
            None,
            "6B2GP0r6010938",
            f.at,
            &[0, 1, 2, 3],
        );
        assert_eq!(out.len(), 4);
        for o in &out[..3] {
            assert!(
                matches!(o, Outcome::Permanent { text, .. } if text == "User unknown"),
                "{o:?}"
            );
        }
        assert!(matches!(out[3], Outcome::Delivered { .. }), "{:?}", out[3]);
        let archive = std::fs::read_to_string(f.dir.path().join("archive.mbox")).unwrap();
        assert!(archive.contains("Subject: agent"));
        for p in ["/tmp/pwned-by-address", "/etc/passwd-by-address"] {
            assert!(!Path::new(p).exists(), "{p}");
        }
        assert!(!f.dir.path().join("PWNED").exists() && !Path::new("PWNED").exists());
    }

    #[test]
    fn the_agent_delivers_only_what_the_queue_lists_as_pending_and_local() {
        let f = fixture(&["archive", "bob@elsewhere.example.test"]);
        let out = deliver(&f.ctx, &f.current, None, "6B2GP0r6010938", f.at, &[1, 7]);
        assert!(is_temporary(&out[0], "is not a local recipient"), "{out:?}");
        assert!(is_temporary(&out[1], "has no recipient #7"), "{out:?}");
        // the copy named must hold the message named, and lie inside the journal
        let out = deliver(&f.ctx, &f.current, None, "NoSuchMessage1", f.at, &[0]);
        assert!(
            is_temporary(&out[0], "holds message 6B2GP0r6010938"),
            "{out:?}"
        );
        let mut beyond = f.at;
        beyond.offset += 1 << 30;
        let out = deliver(&f.ctx, &f.current, None, "6B2GP0r6010938", beyond, &[0]);
        assert!(is_temporary(&out[0], "is outside"), "{out:?}");
        let mut shifted = f.at;
        shifted.offset += 1;
        let out = deliver(&f.ctx, &f.current, None, "6B2GP0r6010938", shifted, &[0]);
        assert!(matches!(out[0], Outcome::Temporary { .. }), "{out:?}");
        let out = deliver(&f.ctx, &f.current, None, "../../etc", f.at, &[0]);
        assert!(is_temporary(&out[0], "bad queue id"), "{out:?}");
        assert!(!f.dir.path().join("archive.mbox").exists());
    }

    #[test]
    fn a_forged_expansion_in_the_queue_is_not_delivered() {
        // The daemon owns the queue: it could write a `|program` "expanded" from an alias
        // that names no program, with root as its owner. The agent expands again and
        // refuses; the real expansion (the alias's file) is delivered.
        let f = fixture(&["archive", "|/usr/bin/touch /tmp/pwned-by-expansion"]);
        let mut msg = f
            ._store
            .load(&QueueId::new("6B2GP0r6010938").unwrap())
            .unwrap();
        let parent = msg.envelope.recipients[0].address.clone();
        msg.envelope.recipients[0].state = DeliveryState::Done;
        msg.envelope.recipients[1].expanded = Some(Expanded {
            parent: parent.clone(),
            owner: Some("root".into()),
        });
        let file = f.dir.path().join("archive.mbox").display().to_string();
        let mut real = Recipient::new(file);
        real.expanded = Some(Expanded {
            parent,
            owner: None,
        });
        msg.envelope.recipients.push(real);
        let out = [1, 2].map(|i| check(&f.ctx, &f.current, &msg, &msg.envelope.recipients[i]));
        assert!(
            matches!(&out[0], Err(o) if is_temporary(o, "is not (or no longer) an expansion of archive")),
            "{:?}",
            out[0]
        );
        let (_, r) = out[1].clone().unwrap();
        assert_eq!(r.expanded.unwrap().owner, None);
        assert!(!Path::new("/tmp/pwned-by-expansion").exists());
    }

    #[test]
    fn the_pid_file_is_removed_only_while_it_names_our_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sendmail.pid");
        std::fs::write(&p, "4242\n/usr/sbin/sendmail -bd\n").unwrap();
        remove_pid_file(&p, 4343);
        assert!(p.exists(), "a newer daemon's pid file is kept");
        remove_pid_file(&p, 4242);
        assert!(!p.exists());
    }
}
