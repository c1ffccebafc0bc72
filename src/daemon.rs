//! Daemon mode (`-bd`, `-bD`): start, serve, reload on SIGHUP, stop on SIGTERM.
//!
//! In: an [`Invocation`] in daemon mode. Out: an exit code (sysexits).
//!
//! Order of start-up, so that nothing is ever half-started:
//! 1. load the configuration (cf + `-O`); any error → every error on stderr, exit 78;
//! 2. open every daemon's socket ([`listener::open_all`]); a failure → a log line naming the
//!    daemon and address, the same on stderr, exit 71 (EX_OSERR), no socket left open;
//! 3. `-bd` only: fork; the parent exits 0, the child leaves the terminal's session;
//! 4. write the pid file (sendmail's two lines: pid, command line; mode 0600; locked);
//! 5. with `RunAsUser` ([`crate::privsep`]): hand the queue to that user, fork the root
//!    local delivery agent, become the user; only then start the store and the runtime;
//! 6. log `starting daemon (VERSION): SMTP…` and serve.
//!
//! With `MetricsAddress`, its socket is bound with the SMTP sockets (step 2; a failure exits
//! 71 the same way) and [`crate::exporter`] serves it; SIGHUP moves, starts or stops it
//! when the option changed.
//!
//! Signals (facts §4): SIGHUP re-reads the configuration in place — listeners whose options
//! changed are closed and reopened, unchanged ones keep their socket, sessions in progress carry
//! on, and a configuration that no longer loads is logged and the running one kept (sendmail
//! re-execs itself instead; the pid stays the same here). Under `RunAsUser` a daemon on a
//! port below 1024 is opened by the root supervisor ([`crate::privsep::supervisor`]); a
//! socket that cannot be opened is logged and the other daemons keep running. SIGTERM (and SIGINT) stop accepting,
//! let sessions end within a grace period, remove the pid file and exit 0.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cli::Invocation;
use crate::config::daemon_options::DaemonPortOptions;
use crate::config::{self, Config};
use crate::credentials::Credentials;
use crate::hosts::Hosts;
use crate::listener::{self, Bound, Listener, Peer};
use crate::log::{Logger, Severity};
use crate::privsep::AgentClient;
use crate::queue::{Store, StoreOptions};
use crate::runner::pickup::pickup_once;
use crate::runtime::{Current, Shared, load_config, make_logger};
use crate::shutdown::{SessionGuard, Shutdown};
use crate::stats::Stats;
use crate::sysexits::{EX_CANTCREAT, EX_CONFIG, EX_OK, EX_OSERR, EX_SOFTWARE};

/// How long sessions may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How often the `StatusFile` counters are written (and once more at exit).
pub const STATS_SAVE_EVERY: Duration = Duration::from_secs(30);

/// Runs the daemon until SIGTERM. Returns the exit code.
pub fn run(inv: Invocation, foreground: bool) -> i32 {
    if let Err(e) = crate::runner::select::QueueRun::parse(&inv.args.queue_flags) {
        eprintln!("sendmail: {e}");
        return crate::sysexits::EX_USAGE;
    }
    let cfg = match load_config(&inv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let logger = match make_logger(&cfg, &inv, foreground) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sendmail: cannot open the mail log: {e}");
            return EX_CONFIG;
        }
    };
    let devlog = crate::log::DEFAULT_SYSLOG_PATH;
    if !foreground && cfg.options.log_file.is_none() && !Path::new(devlog).exists() {
        // Before detaching, while the admin still sees the terminal (issue 18 item 5).
        eprintln!(
            "sendmail: no syslog socket ({devlog}) and no LogFile: the mail log goes to syslog as soon as {devlog} appears and is lost until then (O LogFile=/var/log/mail.log writes it to a file)"
        );
    }
    for w in &cfg.warnings {
        logger.log(Severity::Warning, None, format_args!("{w}"));
    }
    let credentials = match Credentials::load(&cfg) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                logger.log(Severity::Err, None, format_args!("{e}"));
                eprintln!("sendmail: {e}");
            }
            return EX_CONFIG;
        }
    };
    for n in &credentials.notes {
        logger.log(Severity::Info, None, format_args!("{n}"));
    }
    if !inv.args.debug.is_empty() {
        logger.log(
            Severity::Info,
            None,
            format_args!(
                "debug flags -d{} accepted and ignored",
                inv.args.debug.join(",")
            ),
        );
    }
    match crate::rlimit::raise_open_files() {
        Ok(n) if n.was < n.soft && logger.enabled(10) => logger.log(
            Severity::Info,
            None,
            format_args!("open files limit raised from {} to {}", n.was, n.soft),
        ),
        Ok(_) => {}
        Err(e) => logger.log(
            Severity::Warning,
            None,
            format_args!("cannot raise the open files limit: {e}"),
        ),
    }
    let mut opened = match open_daemons(&cfg.daemons, &logger, OPEN_RETRY) {
        Some(o) => o,
        None => return EX_OSERR,
    };
    for s in &opened.skipped {
        logger.log(
            Severity::Warning,
            None,
            format_args!("opendaemonsocket: {s}"),
        );
    }
    let metrics = match cfg.options.metrics_address.map(bind_metrics).transpose() {
        Ok(m) => m,
        Err(e) => {
            logger.log(Severity::Crit, None, format_args!("SYSERR: {e}"));
            eprintln!("sendmail: {e}");
            return EX_OSERR;
        }
    };
    // Open the queue once in the foreground so that an unusable queue is reported before
    // detaching; it is reopened after the fork (the store runs a committer thread). This
    // first open is the one that recovers from a crash, so it is the one whose report is
    // logged: the reopen finds the journal already cut back.
    let qdir = cfg.options.queue_directory.clone();
    match Store::open_with(
        &qdir,
        StoreOptions::with_file_mode(cfg.options.queue_file_mode),
    ) {
        Ok(q) => log_recovery(&logger, q.recovery_report()),
        Err(e) => {
            logger.log(
                Severity::Crit,
                None,
                format_args!("SYSERR: queue {}: {e}", qdir.display()),
            );
            eprintln!("sendmail: queue {}: {e}", qdir.display());
            return EX_CANTCREAT;
        }
    }
    if !foreground {
        match detach() {
            Ok(true) => return EX_OK, // the parent
            Ok(false) => {}
            Err(e) => {
                eprintln!("sendmail: cannot fork: {e}");
                return EX_OSERR;
            }
        }
    }
    let pid_path = PathBuf::from(cfg.options.pid_file.expand(&cfg));
    let _pid_file = match PidFile::create(&pid_path, &inv.command_line) {
        Err(e) => {
            logger.log(Severity::Err, None, format_args!("{e}"));
            None
        }
        Ok(f) => Some(f),
    };
    let stats = cfg.options.status_file.as_deref().and_then(|p| {
        let names =
            crate::stats::mailstats::mailer_slots(cfg.mailers.iter().map(|m| m.name.as_str()));
        match Stats::load(p, &names) {
            Ok(s) => Some(s),
            Err(e) => {
                logger.log(
                    Severity::Err,
                    None,
                    format_args!("statistics not kept: {e}"),
                );
                None
            }
        }
    });
    let local_agent =
        match crate::privsep::start(&cfg, &inv, &logger, &pid_path, &mut opened.listeners) {
            Ok(a) => a,
            Err(e) => {
                logger.log(Severity::Crit, None, format_args!("SYSERR: {e}"));
                eprintln!("sendmail: {e}");
                return EX_OSERR;
            }
        };
    let queue = match Store::open_with(
        &qdir,
        StoreOptions::with_file_mode(cfg.options.queue_file_mode),
    ) {
        Ok(q) => q,
        Err(e) => {
            logger.log(
                Severity::Crit,
                None,
                format_args!("SYSERR: queue {}: {e}", qdir.display()),
            );
            return EX_CANTCREAT;
        }
    };
    log_recovery(&logger, queue.recovery_report());
    let (mut current, rule_warnings) = match Current::with_logger(cfg, Some(logger.clone())) {
        Ok(c) => c,
        Err(e) => {
            logger.log(Severity::Crit, None, format_args!("SYSERR: {e}"));
            return EX_CONFIG;
        }
    };
    current.credentials = credentials;
    for w in &rule_warnings {
        logger.log(Severity::Warning, None, format_args!("{w}"));
    }
    // The sessions' threads run SCHED_BATCH at the daemon's nice value: waking one (a
    // client's command arrived, its commit is durable) never preempts the thread running,
    // so a busy daemon switches tasks at the end of slices instead of at every event. The
    // queue runner alone keeps the normal policy and preempts (runner::Thread). A policy
    // the admin chose for the daemon (chrt) is left alone.
    let nice = crate::priority::this_thread().unwrap_or(0);
    let normal = crate::priority::policy_of_this_thread().is_ok_and(|p| p == libc::SCHED_OTHER);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || {
            if normal {
                let _ = crate::priority::set_this_thread_batch(nice);
            }
        })
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            logger.log(
                Severity::Crit,
                None,
                format_args!("SYSERR: cannot start runtime: {e}"),
            );
            return EX_SOFTWARE;
        }
    };
    let mut shared = Shared::new(current, logger, queue, stats);
    shared.local_agent = local_agent
        .clone()
        .map(|a| a as Arc<dyn crate::deliver::LocalAgent>);
    let shared = Arc::new(shared);
    runtime.block_on(serve(inv, shared, local_agent, opened.listeners, metrics))
}

/// Binds the metrics listener's socket (`MetricsAddress`).
fn bind_metrics(addr: std::net::SocketAddr) -> Result<MetricsSocket, String> {
    std::net::TcpListener::bind(addr)
        .map(|l| (addr, l))
        .map_err(|e| format!("MetricsAddress={addr}: cannot listen: {e}"))
}

/// The metrics listener's socket, with the address the option gave.
type MetricsSocket = (std::net::SocketAddr, std::net::TcpListener);

/// The running metrics listener, with the address the option gave.
struct MetricsRunning {
    addr: std::net::SocketAddr,
    running: Running,
}

fn start_metrics(socket: MetricsSocket, shared: &Arc<Shared>) -> MetricsRunning {
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(crate::exporter::serve(socket.1, shared.clone(), stopped));
    MetricsRunning {
        addr: socket.0,
        running: Running { stop, task },
    }
}

/// SIGHUP: the metrics listener follows `MetricsAddress` (stopped, moved or started); one
/// that cannot be opened is logged and the daemon runs on without it.
async fn reload_metrics(cfg: &Config, shared: &Arc<Shared>, metrics: &mut Option<MetricsRunning>) {
    let wanted = cfg.options.metrics_address;
    if metrics.as_ref().map(|m| m.addr) == wanted {
        return;
    }
    if let Some(m) = metrics.take() {
        let _ = m.running.stop.send(());
        let _ = m.running.task.await;
    }
    if let Some(addr) = wanted {
        match bind_metrics(addr) {
            Ok(socket) => *metrics = Some(start_metrics(socket, shared)),
            Err(e) => shared.logger.log(
                Severity::Err,
                None,
                format_args!("{e}; the daemon runs on without metrics"),
            ),
        }
    }
}

/// One `queue recovery:` line for each journal segment the queue's opening cut back to its
/// last whole frame (a batch a crash interrupted, never acknowledged).
fn log_recovery(logger: &Logger, report: &crate::queue::RecoveryReport) {
    for (segment, bytes, why) in &report.truncated {
        logger.log(
            Severity::Notice,
            None,
            format_args!("queue recovery: {segment}: {bytes} unacknowledged bytes dropped ({why})"),
        );
    }
    for name in &report.removed_spool {
        logger.log(
            Severity::Notice,
            None,
            format_args!("queue recovery: spool/{name}: unacknowledged message data removed"),
        );
    }
}

/// sendmail's start-up lines: `starting daemon (…): SMTP…`, at LogLevel 13 and above the
/// STARTTLS warning, above 9 `started as: …`.
fn logger_start_line(logger: &Logger, inv: &Invocation, credentials: &Credentials) {
    let mut what = String::from("SMTP");
    if let Some(q) = &inv.queue_interval {
        what.push_str(&format!("+queueing@{}", crate::cli::format_interval(q)));
    }
    if !inv.args.debug.is_empty() {
        what.push_str("+debugging");
    }
    logger.log(
        Severity::Info,
        None,
        format_args!("starting daemon ({}): {what}", crate::VERSION),
    );
    if credentials.server_cert_unset && logger.level() > Credentials::SERVER_CERT_MISSING_LEVEL {
        logger.log(
            Severity::Warning,
            None,
            format_args!("{}", Credentials::SERVER_CERT_MISSING),
        );
    }
    if logger.level() > 9 {
        logger.log(
            Severity::Info,
            None,
            format_args!("started as: {}", inv.command_line),
        );
    }
}

/// `-bd`: forks; returns `true` in the parent, `false` in the child, which then leaves the
/// terminal's session and points stdio at /dev/null.
fn detach() -> nix::Result<bool> {
    use nix::unistd::{ForkResult, fork, setsid};
    // SAFETY: called before any thread is started: the tokio runtime is built after this, and
    // nothing earlier in `run` spawns threads. The child continues as an ordinary
    // single-threaded program.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => Ok(true),
        ForkResult::Child => {
            setsid()?;
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                nix::unistd::dup2_stdin(&null)?;
                nix::unistd::dup2_stdout(&null)?;
                nix::unistd::dup2_stderr(&null)?;
            }
            Ok(false)
        }
    }
}

/// The pid file: written after the sockets are open, kept open and locked while the daemon
/// runs, removed at exit (facts §4).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

impl PidFile {
    pub fn create(path: &Path, command_line: &str) -> Result<PidFile, String> {
        // never through a symlink, never blocking on a FIFO (sendmail: `Symbolic links not
        // allowed`); only a regular file is truncated
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
            .open(path)
            .and_then(crate::log::regular_only)
            .map_err(|e| {
                format!(
                    "unable to write pid to {}: {}",
                    path.display(),
                    crate::log::open_error_text(&e)
                )
            })?;
        let mut lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| {
            format!(
                "unable to write pid to {}: file in use by another process",
                path.display()
            )
        })?;
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            writeln!(f, "{}\n{command_line}", std::process::id())?;
            f.sync_all()
        };
        write(&mut lock).map_err(|e| format!("unable to write pid to {}: {e}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A running accept loop.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// What identifies a listener: its options and whether it is IPv6-only.
type ListenerKey = (DaemonPortOptions, bool);

/// Serves until SIGTERM. `agent` is the root agent under `RunAsUser`: SIGHUP has it re-read
/// the configuration and open the sockets below 1024 (the runner reaches it through
/// [`Shared::local_agent`] for local delivery only).
async fn serve(
    inv: Invocation,
    shared: Arc<Shared>,
    agent: Option<Arc<AgentClient>>,
    listeners: Vec<Listener>,
    metrics: Option<MetricsSocket>,
) -> i32 {
    // Signals first: from the start line on, SIGHUP and SIGTERM are handled, never fatal.
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        shared.logger.log(
            Severity::Crit,
            None,
            format_args!("SYSERR: cannot install signal handlers"),
        );
        return EX_OSERR;
    };
    logger_start_line(&shared.logger, &inv, &shared.current().credentials);
    let shutdown = Shutdown::new();
    let mut running: HashMap<ListenerKey, Running> = HashMap::new();
    let daemons = shared.config().daemons.clone();
    // every daemon and mailer shows in the metrics from the start, at zero
    for d in &daemons {
        crate::metrics::global().daemon(&d.name);
    }
    let mailers = shared.config().mailers.clone();
    for m in crate::stats::mailstats::mailer_slots(mailers.iter().map(|m| m.name.as_str())) {
        crate::metrics::global().mailer(&m);
    }
    let mut metrics = metrics.map(|m| start_metrics(m, &shared));
    for l in listeners {
        let key = (l.daemon.clone(), listener::v6only(&l.daemon, &daemons));
        running.insert(key, start(l, &shared, &shutdown));
    }
    let pickup = tokio::spawn(pickup_loop(shared.clone()));
    // DeliveryMode background/interactive: deliver right after each commit; queue-only and
    // deferred: at the -q interval, or when `sendmail -q` asks through the control socket.
    let interval = crate::runner::select::QueueRun::parse(&inv.args.queue_flags)
        .ok()
        .and_then(|run| run.interval);
    let schedule = crate::runner::Schedule {
        on_commit: crate::runner::limits::delivers_on_commit(&shared.config()),
        interval,
    };
    let (runs, requests) = tokio::sync::mpsc::channel(16);
    let etrn_runs = runs.clone();
    let _ = shared.queue_runs.set(Arc::new(move |substr: &str| {
        use crate::runner::select::{Limit, LimitKind, Selection};
        let (done, _) = oneshot::channel();
        let select = Selection {
            limits: vec![Limit {
                kind: LimitKind::Recipient,
                negate: false,
                substr: substr.to_string(),
            }],
            quarantined: false,
        };
        let request = crate::runner::control::RunRequest { select, done };
        etrn_runs
            .try_send(crate::runner::control::Request::Run(request))
            .is_ok()
    }));
    let runner = match crate::runner::Thread::start(shared.clone(), schedule, requests) {
        Ok(t) => t,
        Err(e) => {
            shared.logger.log(
                Severity::Crit,
                None,
                format_args!("SYSERR: cannot start the queue runner: {e}"),
            );
            return EX_OSERR;
        }
    };
    let control = tokio::spawn(control_socket(shared.clone(), runs));
    let (stats_stop, stats_stopped) = oneshot::channel::<()>();
    let stats_task = shared.stats.clone().map(|stats| {
        let logger = shared.logger.clone();
        tokio::spawn(stats.save_periodically(
            STATS_SAVE_EVERY,
            async move {
                let _ = stats_stopped.await;
            },
            move |e| {
                logger.log(
                    Severity::Err,
                    None,
                    format_args!("statistics not saved: {e}"),
                )
            },
        ))
    });
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if let Some(cfg) = reload(&inv, &shared, agent.as_ref(), &shutdown, &mut running).await {
                    reload_metrics(&cfg, &shared, &mut metrics).await;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // sendmail's shutdown_daemon says so above LogLevel 9
    if shared.logger.level() > 9 {
        shared.logger.log(
            Severity::Info,
            Some("NOQUEUE"),
            format_args!("stopping daemon, reason=signal"),
        );
    }
    for (_, r) in running.drain() {
        let _ = r.stop.send(());
        let _ = r.task.await;
    }
    if let Some(m) = metrics.take() {
        let _ = m.running.stop.send(());
        let _ = m.running.task.await;
    }
    shutdown.trigger();
    if !shutdown.wait_idle(SHUTDOWN_GRACE).await {
        shared.logger.log(
            Severity::Warning,
            None,
            format_args!(
                "sessions still open after {}s; exiting",
                SHUTDOWN_GRACE.as_secs()
            ),
        );
    }
    pickup.abort();
    control.abort();
    let _ = std::fs::remove_file(crate::runner::control::socket_path(shared.queue.dir()));
    let _ = tokio::task::spawn_blocking(move || runner.stop()).await;
    let _ = stats_stop.send(());
    if let Some(t) = stats_task {
        let _ = t.await;
    }
    EX_OK
}

/// Serves `sendmail -q` requests ([`crate::runner::control`]); a socket that cannot be opened
/// is logged, and the daemon runs on without it.
async fn control_socket(
    shared: Arc<Shared>,
    runs: tokio::sync::mpsc::Sender<crate::runner::control::Request>,
) {
    let qdir = shared.queue.dir().to_path_buf();
    if let Err(e) = crate::runner::control::serve(&qdir, runs).await {
        shared.logger.log(
            Severity::Err,
            None,
            format_args!(
                "queue control socket {}: {e}; sendmail -q cannot reach this daemon",
                crate::runner::control::socket_path(&qdir).display()
            ),
        );
    }
}

/// How often the maildrop is looked at for command-line submissions.
pub const PICKUP_EVERY: Duration = Duration::from_secs(1);

/// Moves command-line submissions from the maildrop into the store, once a second.
async fn pickup_loop(shared: Arc<Shared>) {
    loop {
        pickup_once(&shared).await;
        tokio::time::sleep(PICKUP_EVERY).await;
    }
}

/// SIGHUP: the certificate and password file as they are now on disk; when they no longer
/// load, the errors are logged and the running ones kept.
fn reload_credentials(cfg: &Config, shared: &Shared) -> Credentials {
    match Credentials::load(cfg) {
        Ok(c) => {
            for n in &c.notes {
                shared.logger.log(Severity::Info, None, format_args!("{n}"));
            }
            c
        }
        Err(errors) => {
            log_not_reloaded(
                shared,
                &errors,
                "TLS certificate and AUTH passwords not reloaded; the running ones are kept",
            );
            shared.current().credentials.clone()
        }
    }
}

/// Every error of a reload that failed, then what is kept.
fn log_not_reloaded(shared: &Shared, errors: &[impl std::fmt::Display], summary: &str) {
    for e in errors {
        shared.logger.log(Severity::Err, None, format_args!("{e}"));
    }
    shared
        .logger
        .log(Severity::Err, None, format_args!("{summary}"));
}

/// SIGHUP: re-read the configuration and reopen the listeners that changed; the new
/// configuration, when it loaded.
async fn reload(
    inv: &Invocation,
    shared: &Arc<Shared>,
    agent: Option<&Arc<AgentClient>>,
    shutdown: &Shutdown,
    running: &mut HashMap<ListenerKey, Running>,
) -> Option<Arc<Config>> {
    let argv0 = inv.command_line.split(' ').next().unwrap_or("sendmail");
    shared.logger.log(
        Severity::Info,
        None,
        format_args!("restarting {argv0} due to signal"),
    );
    let cfg = match config::load(&inv.source, &inv.overrides) {
        Ok(c) => c,
        Err(errors) => {
            let summary = format!(
                "configuration not reloaded: {} error(s); the running configuration is kept",
                errors.len()
            );
            log_not_reloaded(shared, &errors, &summary);
            return None;
        }
    };
    for w in &cfg.warnings {
        shared
            .logger
            .log(Severity::Warning, None, format_args!("{w}"));
    }
    reload_supervisor(shared, agent).await;
    let wanted: Vec<ListenerKey> = cfg
        .daemons
        .iter()
        .map(|d| (d.clone(), listener::v6only(d, &cfg.daemons)))
        .collect();
    // Close the ones that changed or went away first: a reopened one may need their port.
    let gone: Vec<ListenerKey> = running
        .keys()
        .filter(|k| !wanted.contains(k))
        .cloned()
        .collect();
    let mut closed = Vec::new();
    for k in gone {
        if let Some(r) = running.remove(&k) {
            let _ = r.stop.send(());
            let _ = r.task.await;
            closed.push(format!("{} (port {})", k.0.name, k.0.port));
        }
    }
    let (mut kept, mut opened) = (0, 0);
    for key in wanted {
        if running.contains_key(&key) {
            kept += 1;
            continue;
        }
        match open_listener(agent, &key).await {
            Ok(l) => {
                running.insert(key, start(l, shared, shutdown));
                opened += 1;
            }
            Err(e) if key.0.modifiers.has('O') => shared.logger.log(
                Severity::Warning,
                None,
                format_args!("opendaemonsocket: {e}; optional socket disabled"),
            ),
            Err(e) => shared.logger.log(
                Severity::Crit,
                None,
                format_args!(
                    "SYSERR: opendaemonsocket: {e}; daemon {} not opened, the other daemons keep running",
                    key.0.name
                ),
            ),
        }
    }
    let credentials = reload_credentials(&cfg, shared);
    let (mut current, rule_warnings) = match Current::with_logger(cfg, Some(shared.logger.clone()))
    {
        Ok(c) => c,
        Err(e) => {
            log_not_reloaded(
                shared,
                &[e],
                "configuration not reloaded: 1 error(s); the running configuration is kept",
            );
            return None;
        }
    };
    current.credentials = credentials;
    for w in &rule_warnings {
        shared
            .logger
            .log(Severity::Warning, None, format_args!("{w}"));
    }
    let hosts_file = current.config.options.hosts_file.clone();
    shared.set_current(current);
    if let Some(agent) = agent.cloned() {
        let _ = tokio::task::spawn_blocking(move || agent.reload()).await;
    }
    *shared.hosts.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Hosts::load(&hosts_file));
    if let Err(e) = shared.logger.reopen() {
        shared.logger.log(
            Severity::Err,
            None,
            format_args!("cannot reopen the mail log: {e}"),
        );
    }
    // sendmail restarts itself (exec) on SIGHUP, so its log goes on with the new process's
    // start-up lines; a daemon gone from the cf is simply not opened again.
    logger_start_line(&shared.logger, inv, &shared.current().credentials);
    if shared.logger.level() > 9 {
        let closed = if closed.is_empty() {
            String::new()
        } else {
            format!("; closed: {}", closed.join(", "))
        };
        shared.logger.log(
            Severity::Info,
            None,
            format_args!(
                "configuration reloaded: {kept} daemon(s) kept, {opened} (re)opened{closed}"
            ),
        );
    }
    Some(shared.config())
}

/// SIGHUP under `RunAsUser`: the root supervisor re-reads the configuration too, so that
/// the sockets it opens are those the new one lists.
async fn reload_supervisor(shared: &Shared, agent: Option<&Arc<AgentClient>>) {
    let Some(agent) = agent.cloned() else {
        return;
    };
    let done = tokio::task::spawn_blocking(move || agent.supervisor().reload()).await;
    let err = match done {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    shared
        .logger
        .log(Severity::Err, None, format_args!("{err}"));
}

/// Tries of [`open_daemons`] and the wait between them (sendmail's `MAXOPENTRIES` and
/// `sleep(5)` in `opendaemonsocket`).
const OPEN_TRIES: u32 = 10;
const OPEN_RETRY: Duration = Duration::from_secs(5);

/// Opens every daemon's socket at start-up ([`listener::open_all`]). An error that may
/// pass (the address in use, e.g. by a mailer the killed daemon was starting, or not yet
/// on this host) is tried again `retry` later, [`OPEN_TRIES`] times in all, each failure
/// logged in sendmail's words (`SYSERR(root): opendaemonsocket: daemon NAME: cannot bind…`,
/// then `daemon NAME: problem creating SMTP socket`), and the last with `server SMTP
/// socket wedged: exiting`; any other error ends the start at once. None: nothing is left
/// open, the caller exits `EX_OSERR` (71), as sendmail.
fn open_daemons(
    daemons: &[crate::config::daemon_options::DaemonPortOptions],
    logger: &Logger,
    retry: Duration,
) -> Option<listener::Opened> {
    let user = crate::log::real_user_name().unwrap_or_else(|| "root".to_string());
    for attempt in 1..=OPEN_TRIES {
        let e = match listener::open_all(daemons) {
            Ok(o) => return Some(o),
            Err(e) => e,
        };
        logger.log(
            Severity::Crit,
            Some("NOQUEUE"),
            format_args!("SYSERR({user}): opendaemonsocket: {e}"),
        );
        if !e.transient() {
            eprintln!("sendmail: {e}");
            return None;
        }
        logger.log(
            Severity::Alert,
            None,
            format_args!("daemon {}: problem creating SMTP socket", e.daemon()),
        );
        if attempt == OPEN_TRIES {
            logger.log(
                Severity::Alert,
                Some("NOQUEUE"),
                format_args!(
                    "SYSERR({user}): opendaemonsocket: daemon {}: server SMTP socket wedged: exiting",
                    e.daemon()
                ),
            );
            eprintln!("sendmail: {e}; server SMTP socket wedged: exiting");
            return None;
        }
        eprintln!("sendmail: {e}; trying again in {} s", retry.as_secs());
        std::thread::sleep(retry);
    }
    None
}

/// Opens one daemon's socket on SIGHUP: itself, or, once root is given up and the port is
/// below 1024, through the root supervisor, which opens what its own configuration says
/// for that daemon's name and passes the socket back.
async fn open_listener(
    agent: Option<&Arc<AgentClient>>,
    key: &ListenerKey,
) -> Result<Listener, String> {
    let agent = match agent {
        Some(a) if listener::needs_root(&key.0) => a.clone(),
        _ => return listener::open(&key.0, key.1).map_err(|e| e.to_string()),
    };
    let name = key.0.name.clone();
    let got = tokio::task::spawn_blocking(move || agent.supervisor().listen(&name))
        .await
        .map_err(|e| e.to_string())?;
    let (fd, _) = got.map_err(|e| e.to_string())?;
    listener::adopt(&key.0, fd, key.1).map_err(|e| e.to_string())
}

/// Starts the accept loop of one listener.
/// sendmail logs nothing per listener; the port is logged only when `Port=0` left it to the
/// kernel (nothing else tells where the daemon listens), or at LogLevel 14 and above.
fn start(l: Listener, shared: &Arc<Shared>, shutdown: &Shutdown) -> Running {
    if l.daemon.port == 0 || shared.logger.level() > 13 {
        shared.logger.log(
            Severity::Info,
            None,
            format_args!("daemon {}: listening on {}", l.daemon.name, l.local),
        );
    }
    let (stop, stopped) = oneshot::channel();
    let shared = shared.clone();
    let daemon = Arc::new(l.daemon.clone());
    let guards = GuardMaker(shutdown.guard());
    let task = tokio::spawn(accept_loop(l, daemon, shared, guards, stopped));
    Running { stop, task }
}

/// Makes session guards from inside an accept loop (a guard can be re-subscribed).
struct GuardMaker(SessionGuard);

impl GuardMaker {
    fn make(&self) -> SessionGuard {
        self.0.resubscribe()
    }
}

/// A listening socket of either kind, inside the runtime.
enum Acceptor {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// An accepted connection of either kind.
enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Acceptor {
    async fn accept(&self) -> std::io::Result<(Conn, Peer)> {
        match self {
            Acceptor::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Conn::Tcp(s), Peer::Tcp(peer)))
            }
            Acceptor::Unix(l) => Ok((Conn::Unix(l.accept().await?.0), Peer::Local)),
        }
    }
}

/// The session limits of one daemon: `children=` (else `MaxDaemonChildren`) and
/// `ConnectionRateThrottle`.
struct Limits {
    children: Option<(Arc<tokio::sync::Semaphore>, usize)>,
    throttle: u32,
    /// (second, connections accepted in it).
    rate: (u64, u32),
}

impl Limits {
    fn new(daemon: &DaemonPortOptions, cfg: &Config) -> Limits {
        let max = daemon.children.unwrap_or(cfg.options.max_daemon_children) as usize;
        Limits {
            children: (max > 0).then(|| (Arc::new(tokio::sync::Semaphore::new(max)), max)),
            throttle: cfg.options.connection_rate_throttle,
            rate: (0, 0),
        }
    }

    /// Waits for a free session slot (sendmail: `rejecting connections on daemon X: N
    /// children, max M`; the waiting clients stay in the listen backlog).
    async fn admit(
        &self,
        shared: &Shared,
        daemon: &DaemonPortOptions,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let (sem, max) = self.children.as_ref()?;
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Some(p);
        }
        if shared.logger.enabled(8) {
            shared.logger.log(
                Severity::Info,
                None,
                format_args!(
                    "rejecting connections on daemon {}: {max} children, max {max}",
                    daemon.name
                ),
            );
        }
        sem.clone().acquire_owned().await.ok()
    }

    /// `ConnectionRateThrottle`: past N connections in one second, wait for the next second.
    async fn throttle(&mut self, shared: &Shared, daemon: &DaemonPortOptions) {
        if self.throttle == 0 {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let sec = now.as_secs();
        if self.rate.0 != sec {
            self.rate = (sec, 0);
        }
        self.rate.1 += 1;
        if self.rate.1 > self.throttle {
            if shared.logger.enabled(8) {
                shared.logger.log(
                    Severity::Info,
                    None,
                    format_args!(
                        "deferring connections on daemon {}: {} per second",
                        daemon.name, self.throttle
                    ),
                );
            }
            tokio::time::sleep(Duration::from_nanos(
                1_000_000_000 - u64::from(now.subsec_nanos()),
            ))
            .await;
            self.rate = (sec + 1, 1);
        }
    }
}

async fn accept_loop(
    l: Listener,
    daemon: Arc<DaemonPortOptions>,
    shared: Arc<Shared>,
    guards: GuardMaker,
    mut stopped: oneshot::Receiver<()>,
) {
    let _unlink; // a unix socket's path lives as long as this loop
    let acceptor = match l.socket {
        Bound::Tcp(std_l) => match tokio::net::TcpListener::from_std(std_l) {
            Ok(t) => Acceptor::Tcp(t),
            Err(_) => return,
        },
        Bound::Unix(std_l, unlink) => {
            _unlink = unlink;
            match tokio::net::UnixListener::from_std(std_l) {
                Ok(u) => Acceptor::Unix(u),
                Err(_) => return,
            }
        }
    };
    let mut limits = Limits::new(&daemon, &shared.config());
    let _listening = crate::metrics::global().listening();
    loop {
        let permit = tokio::select! {
            _ = &mut stopped => return,
            p = limits.admit(&shared, &daemon) => p,
        };
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            r = acceptor.accept() => r,
        };
        let (conn, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                accept_error(&shared, &daemon, e).await;
                continue;
            }
        };
        limits.throttle(&shared, &daemon).await;
        let (daemon, shared, guard) = (daemon.clone(), shared.clone(), guards.make());
        tokio::spawn(async move {
            let _permit = permit;
            match conn {
                Conn::Tcp(s) => crate::inbound::serve_client(s, peer, daemon, shared, guard).await,
                Conn::Unix(s) => crate::inbound::serve_client(s, peer, daemon, shared, guard).await,
            }
        });
    }
}

/// accept(2) failed (e.g. out of descriptors): log it and pause briefly instead of spinning.
async fn accept_error(shared: &Shared, daemon: &DaemonPortOptions, e: std::io::Error) {
    shared.logger.log(
        Severity::Err,
        None,
        format_args!("daemon {}: accept: {e}", daemon.name),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
}
