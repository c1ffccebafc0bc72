//! `sendmail -q[…]` without `-bd`: one queue run from the command line, in the foreground.
//!
//! In: the [`Invocation`] (its `-q` flags: limits `-q[!]I/R/S…`, `-qf`). Out: an exit code
//! once the selected messages have been tried; their `to=` lines in the mail log, their new
//! state in the queue (so `mailq` right after shows it).
//!
//! The journal has one writer at a time ([`crate::queue::store`]'s lock file), so a run is one of:
//! * **no daemon holds the queue**: this process takes the lock, moves the maildrop's
//!   command-line submissions into the queue, runs the selected messages and exits (a
//!   daemon started meanwhile refuses to start: the queue is in use);
//! * **a daemon holds it**: this process asks the daemon through its control socket
//!   ([`super::control`]) and waits for its answer; the daemon does the run and all writes.
//!
//! `-Q[reason]` with `-q` limits changes the selected messages' quarantine instead of running
//! them ([`super::quarantine`]), the same way in either case; what sendmail prints for it
//! (skipped messages; with `-v` each change) goes to stdout, and the status is 0.
//!
//! With `PrivacyOptions=restrictqrun` (the embedded default has it) a user other than root
//! and the queue directory's owner is refused, in sendmail's words, with status 77.
//!
//! `-q` with an interval and no `-bd` (sendmail's queue-runner daemon) is not supported: use
//! `-bd -q30m`. Every pending recipient of a selected message is tried, whatever its backoff
//! (sendmail's `-q` ignores retry times too).

use std::sync::Arc;

use super::control::{self, ControlError};
use super::quarantine;
use super::select::QueueRun;
use crate::cli::Invocation;
use crate::log::Severity;
use crate::queue::{QueueError, Store, StoreOptions};
use crate::runtime::{self, Current, Shared};
use crate::sysexits::{
    EX_CANTCREAT, EX_CONFIG, EX_NOPERM, EX_OK, EX_SOFTWARE, EX_TEMPFAIL, EX_USAGE,
};

/// Runs the queue once as `inv` asks; the exit code.
pub fn run(inv: &Invocation) -> i32 {
    let run = match QueueRun::parse(&inv.args.queue_flags) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return EX_USAGE;
        }
    };
    if run.interval.is_some() {
        eprintln!("sendmail: a periodic queue run needs the daemon: use -bd -q<time>");
        return EX_USAGE;
    }
    let reason = inv.args.quarantine.clone();
    let cfg = match runtime::load_config(inv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let qdir = cfg.options.queue_directory.clone();
    if !may_run_queue(&cfg, nix::unistd::getuid()) {
        // sendmail's words and exit status (tests/data/hardened-default/oracle-cli-nobody.txt).
        eprintln!("You do not have permission to process the queue");
        return EX_NOPERM;
    }
    match Store::open_with(
        &qdir,
        StoreOptions::with_file_mode(cfg.options.queue_file_mode),
    ) {
        Ok(store) => match reason {
            Some(reason) => quarantine_here(inv, &cfg, store, &run, new_reason(&reason)),
            None => run_here(inv, cfg, store, &run),
        },
        Err(QueueError::Locked(_)) if reason.is_some() => {
            let reason = new_reason(reason.as_deref().unwrap_or_default());
            match control::request_quarantine(&qdir, &run.select, reason.as_deref()) {
                Ok(outcomes) => {
                    let text =
                        quarantine::report(&outcomes, reason.as_deref(), inv.args.verbose, &qdir);
                    print!("{text}");
                    EX_OK
                }
                Err(e) => control_failed(&e),
            }
        }
        Err(QueueError::Locked(_)) => match control::request_run(&qdir, &run.select) {
            Ok(_) => EX_OK,
            Err(e) => control_failed(&e),
        },
        Err(e) => {
            eprintln!("sendmail: queue {}: {e}", qdir.display());
            EX_CANTCREAT
        }
    }
}

/// A request to the running daemon that failed: why, on stderr; `EX_TEMPFAIL`.
fn control_failed(e: &ControlError) -> i32 {
    match e {
        ControlError::Unreachable { .. } => {
            eprintln!("sendmail: the queue is in use by another process, and {e}")
        }
        _ => eprintln!("sendmail: {e}"),
    }
    EX_TEMPFAIL
}

/// `PrivacyOptions=restrictqrun`: only root and the owner of the queue directory may run
/// the queue (sendmail compares the directory's owner with the real uid; a directory that
/// cannot be looked at is nobody's).
fn may_run_queue(cfg: &crate::config::Config, uid: nix::unistd::Uid) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let restricted = cfg
        .options
        .privacy_options
        .iter()
        .any(|w| w == "restrictqrun");
    if !restricted || uid.is_root() {
        return true;
    }
    std::fs::metadata(&cfg.options.queue_directory).is_ok_and(|m| m.uid() == uid.as_raw())
}

/// The runtime of a run in this process; a failure is said on stderr (`EX_SOFTWARE`).
fn build_runtime(mut b: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, i32> {
    b.enable_all().build().map_err(|e| {
        eprintln!("sendmail: cannot start runtime: {e}");
        EX_SOFTWARE
    })
}

/// `-Q[reason]`'s reason: `None` (release) when empty; newlines made spaces, as sendmail
/// cleans it.
fn new_reason(reason: &str) -> Option<String> {
    (!reason.is_empty()).then(|| control::one_line(reason))
}

/// `-Q[reason]` with `-q` limits, in this process (which holds the queue's lock): every
/// selected message is quarantined with `reason`, or released when it is `None` — as
/// sendmail renames the selected qf files to hf with a `q` line, or back (`-Q -qQ…`: the
/// selection is of quarantined messages then). Nothing is delivered.
fn quarantine_here(
    inv: &Invocation,
    cfg: &crate::config::Config,
    store: Store,
    run: &QueueRun,
    reason: Option<String>,
) -> i32 {
    let logger = match runtime::make_logger(cfg, inv, true) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sendmail: cannot open the mail log: {e}");
            return EX_CANTCREAT;
        }
    };
    let runtime = match build_runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    // No delivery runs in this process: every message may be written.
    let applied = runtime.block_on(quarantine::apply(
        &store,
        &logger,
        &run.select,
        reason.clone(),
        |_| Some(()),
    ));
    match applied {
        Ok(outcomes) => {
            let text =
                quarantine::report(&outcomes, reason.as_deref(), inv.args.verbose, store.dir());
            print!("{text}");
            EX_OK
        }
        Err(e) => {
            eprintln!("sendmail: queue {}: {e}", store.dir().display());
            EX_SOFTWARE
        }
    }
}

/// The run in this process, which holds the queue's lock.
fn run_here(inv: &Invocation, cfg: crate::config::Config, store: Store, run: &QueueRun) -> i32 {
    let logger = match runtime::make_logger(&cfg, inv, true) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sendmail: cannot open the mail log: {e}");
            return EX_CANTCREAT;
        }
    };
    // NiceQueueRun, as sendmail's queue runs nice(3) themselves: set before the runtime
    // exists, so that its threads and the mailers they start have it too.
    if let Some(n) = cfg.options.nice_queue_run
        && let Err(e) = crate::priority::this_thread()
            .and_then(|base| crate::priority::set_this_thread(base + n))
    {
        logger.log(
            Severity::Warning,
            None,
            format_args!("NiceQueueRun={n}: queue run priority unchanged: {e}"),
        );
    }
    let runtime = match build_runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    // As the daemon does at start-up: the maildrop open to the submission group.
    if let Err(e) = crate::setgid::prepare_queue(store.dir()) {
        logger.log(
            Severity::Err,
            None,
            format_args!(
                "queue directory {}: {e}; local users cannot submit mail",
                store.dir().display()
            ),
        );
    }
    let (current, warnings) = match Current::new(cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return EX_CONFIG;
        }
    };
    for w in &warnings {
        logger.log(Severity::Warning, None, format_args!("{w}"));
    }
    let shared = Arc::new(Shared::new(current, logger, store, None));
    runtime.block_on(async {
        super::pickup::pickup_once(&shared).await;
        super::run_once(shared.clone(), &run.select).await;
    });
    EX_OK
}
