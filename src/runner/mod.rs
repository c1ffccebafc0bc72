//! The queue runner: queued messages → delivery attempts → recipients crossed off or retried.
//!
//! In: the store (woken by each commit, once a minute for retries, at the `-q` interval) and
//! requests for a queue run or a quarantine change (`sendmail -q`, `sendmail -Q -q`,
//! [`crate::runner::control`], [`quarantine`]). Out: for every pending
//! recipient whose time has come, one delivery attempt through the mailer the configuration
//! chooses, sendmail's `to=` log line, and the recipient's new state written back durably
//! (`Done`, `Pending` with the next attempt, or `Failed`). After each attempt (and at each
//! scan, for `Timeout.queuewarn` and `Timeout.queuereturn`) [`notices::settle`]
//! queues the bounces, delay warnings and return receipts that are due; a message leaves
//! the queue once every recipient is delivered or failed and reported.
//!
//! Mailer choice ([`route`]): a cf with rulesets resolves each recipient through rulesets 3 and
//! 0 (`$# mailer $@ host $: user`), as sendmail's `parseaddr` does; without rulesets, this
//! host's names (`$=w`) are local and everything else goes by MX (`esmtp`, on the port its
//! `A=TCP $h PORT` names), or to the smart host (`DS`). Mailers whose `P=[IPC]` with
//! `A=TCP $h [port]` deliver over SMTP ([`crate::deliver::remote`]), one connection per next
//! hop for all of a message's recipients there, kept open afterwards for the next message
//! to that hop ([`crate::deliver::remote::cache`], swept every second); the `local` mailer's recipients are first
//! expanded once and durably ([`expand`]), then delivered by [`crate::deliver::local`].
//! Limits and delivery modes: [`limits`]. Each `to=` line is counted for the metrics
//! listener too ([`crate::metrics`]: delivered, deferred or bounced, per mailer).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::config::options::DEFAULT_RUNNER_NICE;
use crate::deliver::Outcome;
use crate::deliver::dsn;
use crate::deliver::remote::{self, Request, Settings};
use crate::deliver::route::{Route, route_with};
use crate::dns::Dns;
use crate::log::Severity;
use crate::queue::{DeliveryState, Message, QueueId, Recipient};
use crate::runner::control::Request as ControlRequest;
use crate::runner::select::Selection;
use crate::runtime::{Current, Shared};

pub mod cmdline;
pub mod control;
pub mod expand;
pub mod follow;
pub mod limits;
pub mod loops;
pub mod marks;
pub mod notices;
pub mod orphans;
pub mod pickup;
pub mod quarantine;
pub mod select;

/// How often deferred recipients are looked at again when nothing new arrives.
pub const RETRY_SCAN: Duration = Duration::from_secs(60);
/// Messages delivered at the same time by the whole runner when `MaxQueueChildren` does not
/// say (Postfix's `default_process_limit` is 100 too). SMTP connections at once to one
/// destination: `DestinationConcurrencyLimit` (20, as Postfix's
/// `default_destination_concurrency_limit`).
pub const CONCURRENT_MESSAGES: usize = 100;

/// The route of `addr` under the running configuration.
pub fn route(current: &Current, addr: &str) -> Route {
    route_with(current.rules.as_deref(), &current.config, addr)
}

/// When the runner makes its own passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Right after each commit (some daemon, or the option, says DeliveryMode background).
    pub on_commit: bool,
    /// `-q30m`: a queue run at this interval (also at start-up).
    pub interval: Option<Duration>,
}

/// What the runner keeps between passes: the resolver, the messages in progress, and the
/// concurrency limits (whole runner, per destination).
pub struct Runner {
    shared: Arc<Shared>,
    dns: Dns,
    busy: Mutex<HashSet<QueueId>>,
    /// Signalled whenever an attempt ends (for forced runs waiting on a busy message).
    idle: tokio::sync::Notify,
    slots: Arc<tokio::sync::Semaphore>,
    /// `MaxRunnersPerQueue`, when set: messages in hand at once for queue runs.
    runners: Option<Arc<tokio::sync::Semaphore>>,
    destinations: limits::Destinations,
    /// Deliveries at once to one local recipient (mailbox, file, program).
    local: limits::Destinations,
    /// Idle SMTP sessions kept for the next message to the same hop.
    cache: remote::cache::Cache,
    /// Deliveries waiting to send their envelope behind another message's body ([`follow`]).
    followers: follow::Followers,
    /// Deliveries written down before the queue records them ([`marks`]).
    marks: marks::Marks,
    /// Messages with nothing due before a time, as their last attempt left them: a pass
    /// after a commit skips them without reading them (with a backlog of deferred mail,
    /// each new message would otherwise cost a read of every deferred one). The retry scan
    /// and queue runs read every message, as before, and renew this.
    not_due: Mutex<HashMap<QueueId, SystemTime>>,
}

/// Why a pass runs: it decides which messages and recipients it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The retry scan: due recipients; a message received by a queue-only daemon and
    /// never tried waits for a queue run.
    Prompt,
    /// After a commit: as [`Pass::Prompt`], but only messages that may have something due
    /// (new ones, and those whose last attempt left a recipient due by now).
    Commit,
    /// The `-q` interval: every due recipient.
    Interval,
    /// `sendmail -q…`: every pending recipient of the selected messages, backoff or not.
    Forced,
}

impl Runner {
    /// A runner for the daemon's (or `sendmail -q`'s) queue; None, logged, if no resolver.
    pub fn new(shared: Arc<Shared>) -> Option<Arc<Runner>> {
        let dns = match Dns::from_config(&shared.config()) {
            Ok(d) => d,
            Err(e) => {
                shared.logger.log(
                    Severity::Crit,
                    None,
                    format_args!("SYSERR: queue runner: resolver: {e}"),
                );
                return None;
            }
        };
        let o = &shared.config().options;
        let slots = match o.max_queue_children {
            0 => CONCURRENT_MESSAGES,
            n => n,
        };
        let destinations = limits::Destinations::slow_start();
        let local = limits::Destinations::fixed();
        Some(Arc::new(Runner {
            dns,
            busy: Mutex::default(),
            idle: tokio::sync::Notify::new(),
            slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            runners: (o.max_runners_per_queue > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(o.max_runners_per_queue))),
            destinations,
            local,
            cache: remote::cache::Cache::new(slots),
            followers: follow::Followers::default(),
            marks: marks::Marks::new(shared.queue.dir()),
            not_due: Mutex::default(),
            shared,
        }))
    }

    /// Starts an attempt for every message `select` takes that is not in progress already;
    /// the returned set finishes when they are done.
    async fn pass(self: &Arc<Self>, select: &Selection, why: Pass) -> tokio::task::JoinSet<()> {
        let mut started = tokio::task::JoinSet::new();
        let forced = why == Pass::Forced;
        let now = SystemTime::now();
        let ids = if why == Pass::Commit {
            // After a commit, with a busy queue: the messages in delivery are skipped in
            // one look at the queue's index, not copied one by one (locks: these two, then
            // the index's; the committer takes neither of them, nothing here the other way).
            let busy = self.lock_busy();
            let not_due = self.lock_not_due();
            self.shared
                .queue
                .ids_where(|id| !busy.contains(id) && not_due.get(id).is_none_or(|t| *t <= now))
        } else {
            let ids = self.shared.queue.ids().unwrap_or_default();
            if select == &Selection::default() {
                // A pass over the whole queue: forget messages that are gone.
                let queued: HashSet<&QueueId> = ids.iter().collect();
                self.lock_not_due().retain(|id, _| queued.contains(id));
            }
            ids
        };
        // Reading each message first is needed only for limits, or when some mail may be
        // waiting for a queue run.
        let filter = select.quarantined
            || !select.limits.is_empty()
            || (matches!(why, Pass::Prompt | Pass::Commit)
                && limits::some_mail_waits(&self.shared.config()));
        let held = select.quarantined;
        for id in ids {
            // A forced run waits for an attempt already under way, then makes its own.
            if !forced && self.lock_busy().contains(&id) {
                continue;
            }
            if filter && !self.takes(&id, select, why).await {
                continue;
            }
            if !forced && !self.lock_busy().insert(id.clone()) {
                continue;
            }
            // A queue run has at most MaxRunnersPerQueue messages in hand (sendmail's
            // runners, one message each); taken first, so a run waits for its own.
            let runner = match (&self.runners, why) {
                (Some(r), Pass::Interval | Pass::Forced) => match r.clone().acquire_owned().await {
                    Ok(p) => Some(p),
                    Err(_) => break,
                },
                _ => None,
            };
            // The slot is taken before the task exists: a pass never has more than the
            // runner's bound of messages in hand.
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                break;
            };
            let me = self.clone();
            started.spawn(async move {
                if forced {
                    me.wait_not_busy(&id).await;
                }
                let next = attempt(&me, &id, forced, held).await;
                match next {
                    Some(t) => me.lock_not_due().insert(id.clone(), t),
                    None => me.lock_not_due().remove(&id),
                };
                drop(slot);
                drop(runner);
                me.lock_busy().remove(&id);
                me.idle.notify_waiters();
            });
        }
        started
    }

    /// Waits until no attempt for `id` is under way, and marks it busy.
    async fn wait_not_busy(&self, id: &QueueId) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.lock_busy().insert(id.clone()) {
                return;
            }
            idle.await;
        }
    }

    /// Whether this pass takes message `id` (read from the queue: off the async workers).
    async fn takes(&self, id: &QueueId, select: &Selection, why: Pass) -> bool {
        let (store, id, select) = (self.shared.queue.clone(), id.clone(), select.clone());
        let cfg = self.shared.config();
        let loaded = tokio::task::spawn_blocking(move || store.load(&id)).await;
        let Ok(Ok(msg)) = loaded else { return false };
        let env = &msg.envelope;
        select.matches(env)
            && !(matches!(why, Pass::Prompt | Pass::Commit)
                && limits::waits_for_queue_run(&cfg, env))
    }

    /// Keeps delivery off message `id` while the returned guard lives (a quarantine change
    /// writes it then); `None` when an attempt is under way.
    fn claim(self: &Arc<Self>, id: &QueueId) -> Option<Claim> {
        self.lock_busy().insert(id.clone()).then(|| Claim {
            runner: self.clone(),
            id: id.clone(),
        })
    }

    fn lock_busy(&self) -> std::sync::MutexGuard<'_, HashSet<QueueId>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_not_due(&self) -> std::sync::MutexGuard<'_, HashMap<QueueId, SystemTime>> {
        self.not_due.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A message kept from delivery ([`Runner::claim`]) until dropped.
struct Claim {
    runner: Arc<Runner>,
    id: QueueId,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.runner.lock_busy().remove(&self.id);
        self.runner.idle.notify_waiters();
    }
}

/// Runs the queue until the task is dropped: passes as `schedule` says, a forced pass for
/// every request from `sendmail -q` (through [`crate::runner::control`]), answered when its
/// messages are done, and each quarantine change from `sendmail -Q -q…`, made on the
/// messages not in delivery at that moment ([`quarantine`]).
pub async fn run(
    shared: Arc<Shared>,
    schedule: Schedule,
    mut requests: tokio::sync::mpsc::Receiver<ControlRequest>,
) {
    let Some(runner) = Runner::new(shared.clone()) else {
        return;
    };
    marks::recover(&shared).await;
    runner.recover_orphans().await;
    // Idle cached connections: closed on timeout, and after a SIGHUP that built new
    // remote settings.
    let sweeper = {
        let weak = Arc::downgrade(&runner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(runner) = weak.upgrade() else { return };
                let current = runner.shared.current();
                runner.cache.sweep(&current.remote).await;
            }
        })
    };
    let _sweeper = AbortOnDrop(sweeper);
    let mut commits = shared.queue.watch_commits();
    let scan = schedule.interval.unwrap_or(RETRY_SCAN);
    let periodic = schedule.on_commit || schedule.interval.is_some();
    let mut why = match schedule.interval {
        Some(_) => Pass::Interval,
        None => Pass::Prompt,
    };
    let mut open = true;
    // The scan keeps its own clock: commits coming more often than `scan` must not put it
    // off (a pass after a commit reads only messages that may have something due).
    let mut next_scan = tokio::time::Instant::now() + scan;
    // A quarantine change is no reason for a pass: as in sendmail, a released message waits
    // for the next run, and one about to be held is not put in delivery by the change itself.
    let mut pass_now = true;
    loop {
        if periodic && pass_now {
            // Dropping a JoinSet would abort its tasks: these run on their own.
            runner.pass(&Selection::default(), why).await.detach_all();
        }
        pass_now = true;
        why = Pass::Prompt;
        tokio::select! {
            r = commits.changed(), if schedule.on_commit => {
                if r.is_err() {
                    return;
                }
                why = Pass::Commit;
            }
            _ = tokio::time::sleep_until(next_scan), if periodic => {
                next_scan = tokio::time::Instant::now() + scan;
                why = match schedule.interval {
                    Some(_) => Pass::Interval,
                    None => Pass::Prompt,
                };
            }
            req = requests.recv(), if open => match req {
                Some(ControlRequest::Quarantine(req)) => {
                    pass_now = false;
                    let runner = runner.clone();
                    tokio::spawn(async move {
                        let shared = &runner.shared;
                        let done = quarantine::apply(
                            &shared.queue,
                            &shared.logger,
                            &req.select,
                            req.reason,
                            |id| runner.claim(id),
                        )
                        .await;
                        let _ = req.done.send(done.map_err(|e| e.to_string()));
                    });
                }
                Some(ControlRequest::Run(req)) => {
                    // The run asked for is the pass: no second one over the whole queue
                    // beside it (the in-delivery set kept them apart; it was only work).
                    pass_now = false;
                    // Command-line submissions the pickup has not moved yet belong to the run.
                    pickup::pickup_once(&shared).await;
                    let set = runner.pass(&req.select, Pass::Forced).await;
                    tokio::spawn(async move {
                        let n = set.join_all().await.len();
                        let _ = req.done.send(n);
                    });
                }
                None if periodic => open = false,
                None => return,
            },
        }
    }
}

/// The runner thread's time slice when it runs above the daemon's priority: 0.1 ms, the
/// shortest Linux takes (the default here is 1.4 ms). With a slice shorter than the running
/// task's, the runner preempts it when a reply wakes it (Linux 6.12 and later) instead of
/// waiting for that task's slice to end: crash harness, file mode, seeds 1–16, nice −10
/// alone 1.22 duplicates per kill (mean), with this slice 0.66. Set with the nice value in
/// one call; where raising the priority is refused, alone (it needs no privilege).
pub const RUNNER_SLICE_NS: u64 = 100_000;

/// The daemon's queue runner ([`run`]) on an OS thread and a tokio runtime of its own, at a
/// higher scheduling priority than the sessions.
///
/// Why. The task that sends a message to a next hop reads the hop's `250` and writes the
/// delivery mark ([`marks`]); a SIGKILL between the two costs a duplicate. Measured with the
/// crash harness (5,000 messages, 15 kills, 2 cores shared with its 50 clients and sink),
/// from the sink writing `250` to the mark: on the daemon's runtime, median 1.8–3.6 ms and
/// p90 6–9 ms; on a thread of its own at the same priority, median 1.4–1.8 ms and p90
/// 4–14 ms (the thread waits for a CPU like any other); at nice −10, median 0.04–0.12 ms,
/// p90 0.6–1.7 ms; duplicates per kill, mean of 8–27 runs, file mode 2.14 → 1.10, program
/// mode 2.97 → 0.71 (docs/reliability.md). That thread does little CPU work per message
/// (5 % of a core in those runs), but at −10 it wakes for each reply ahead of the sessions:
/// a relay that keeps both cores busy moves 8–9 % fewer messages than at the daemon's
/// priority (`NiceQueueRun=0`; bench/RESULTS.md, docs/operation.md).
///
/// `NiceQueueRun` (sendmail's nice(3) increment for queue runs) sets the increment; not set,
/// it is [`DEFAULT_RUNNER_NICE`], taken where the system allows it (root, or an `RLIMIT_NICE`
/// that does), silently left where it does not. The threads this runtime starts (local
/// deliveries, queue reads: `runner-pool` in `top -H`) and the mailer programs they start
/// run at the daemon's priority again, not the runner's. Those threads also take
/// `SCHED_BATCH`, under which a thread's wake-up never preempts the running one: the
/// runner wakes them all the time (each queue read, each local delivery), and a record of
/// the runner's waits (`perf sched`, one full crash-harness run) showed it preempted ~4,900
/// times right after such a wake-up, for up to 3 ms, while hops' `250`s waited to be
/// marked. With it (crash harness, file mode, seeds 71–80 alternating): 0.76 → 0.35
/// duplicates per kill, those whose `250` came before the kill 79 → 19. The mailer
/// supervisor gives its program the normal policy back
/// ([`crate::deliver::local::inflight::supervisor_main`]).
pub struct Thread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Thread {
    /// Starts [`run`] on a new thread named `runner`.
    pub fn start(
        shared: Arc<Shared>,
        schedule: Schedule,
        requests: tokio::sync::mpsc::Receiver<ControlRequest>,
    ) -> std::io::Result<Thread> {
        let explicit = shared.config().options.nice_queue_run;
        let increment = explicit.unwrap_or(DEFAULT_RUNNER_NICE);
        let base = crate::priority::this_thread().unwrap_or(0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("runner-pool")
            .on_thread_start(move || {
                // The daemon's nice value and the default slice again, and SCHED_BATCH:
                // waking one of these threads (a local delivery, a queue read) must not
                // cost the runner its CPU (see `Thread`).
                if crate::priority::set_this_thread_batch(base).is_err()
                    && crate::priority::set_this_thread_and_slice(base, 0).is_err()
                {
                    let _ = crate::priority::set_this_thread(base);
                }
            })
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("runner".into())
            .spawn(move || {
                // Started from a session thread (SCHED_BATCH, daemon.rs): the normal policy
                // first, whatever the increment, so that the runner's wake-ups preempt.
                if crate::priority::policy_of_this_thread().is_ok_and(|p| p == libc::SCHED_BATCH) {
                    let _ = crate::priority::set_this_thread_and_slice(base, 0);
                }
                let set = match increment {
                    0 => Ok(()),
                    // A higher priority and a short slice in one call; a kernel that refuses
                    // the slice still gets the priority; where the priority is refused (not
                    // root), the slice alone, which needs no privilege.
                    n if n < 0 => {
                        crate::priority::set_this_thread_and_slice(base + n, RUNNER_SLICE_NS)
                            .or_else(|_| crate::priority::set_this_thread(base + n))
                            .inspect_err(|_| {
                                let _ = crate::priority::set_this_thread_and_slice(
                                    base,
                                    RUNNER_SLICE_NS,
                                );
                            })
                    }
                    n => crate::priority::set_this_thread(base + n),
                };
                if let (Err(e), Some(n)) = (set, explicit) {
                    shared.logger.log(
                        Severity::Warning,
                        None,
                        format_args!("NiceQueueRun={n}: queue runner priority unchanged: {e}"),
                    );
                }
                rt.block_on(async move {
                    tokio::select! {
                        _ = run(shared, schedule, requests) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime cancels the attempts under way (as the daemon's
                // end always did) and waits for the local deliveries running off it.
                drop(rt);
            })?;
        Ok(Thread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Ends the runner: attempts under way are cancelled, mailer programs already started
    /// are waited for.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Ends a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `sendmail -q…` with no daemon running: the caller holds the queue (its lock), so this
/// process is the journal's one writer. Runs the selected messages once and waits for
/// them; returns how many were attempted.
pub async fn run_once(shared: Arc<Shared>, select: &Selection) -> usize {
    match Runner::new(shared) {
        Some(runner) => {
            marks::recover(&runner.shared).await;
            runner.recover_orphans().await;
            let n = runner
                .pass(select, Pass::Forced)
                .await
                .join_all()
                .await
                .len();
            runner.cache.clear().await;
            n
        }
        None => 0,
    }
}

/// One delivery attempt for the due recipients of one message.
/// `held`: a `-qQ` run, which tries quarantined messages too (they stay quarantined).
/// Returns the time before which the message, still queued, has nothing due (for
/// [`Runner::not_due`]); `None` when something may be due now or it is gone.
async fn attempt(runner: &Runner, id: &QueueId, forced: bool, held: bool) -> Option<SystemTime> {
    crate::metrics::global()
        .queue_attempts
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // The delivery marks of this attempt stay until its result is in the queue.
    let _marks = runner.marks.enter();
    let shared = &*runner.shared;
    let store = shared.queue.clone();
    // A message committed moments ago is decoded from the store's memory on this task;
    // any other is read from the journal off the async workers.
    let loaded = match store.load_fresh(id) {
        Some(loaded) => Ok(loaded),
        None => {
            let (store, id) = (store.clone(), id.clone());
            tokio::task::spawn_blocking(move || store.load(&id)).await
        }
    };
    let mut msg = match loaded {
        Ok(Ok(msg)) => msg,
        Ok(Err(crate::queue::QueueError::NotFound(_))) => return None, // delivered meanwhile
        Ok(Err(e)) => {
            log_load_failure(shared, id, &e);
            return None;
        }
        Err(e) => {
            log_load_failure(shared, id, &e);
            return None;
        }
    };
    if msg.envelope.quarantine.is_some() && !held {
        // Held by a mail filter or `-Q`: not delivered, not bounced, until released (or a
        // `-qQ` run, as sendmail runs the hf files then). Passes after commits leave it
        // alone; the retry scan and queue runs look at it again.
        return Some(SystemTime::now() + HELD);
    }
    let now = SystemTime::now();
    let current = shared.current();
    if let Some(text) = loops::too_many_hops(&msg, current.config.options.max_hop_count) {
        fail_looping(shared, &mut msg, &text, now);
    }
    // RFC 2852 `BY=…;R` past its deadline: not tried, returned (sendmail's `sendenvelope`).
    let by_expired = dsn::expire_deliver_by(&mut msg, now);
    let due: Vec<(usize, Route)> = msg
        .envelope
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.state == DeliveryState::Pending && (forced || r.next_attempt.is_none_or(|t| t <= now))
        })
        .map(|(i, r)| (i, route_recipient(&current, r)))
        .collect();
    let mut changed = !due.is_empty() || by_expired;
    // Only local deliveries leave status files (program runs): a remote-only attempt has
    // none to remove (one unlink per recipient saved on the relay path).
    let local = due.iter().any(|(_, r)| matches!(r, Route::Local { .. }));
    if changed {
        // Local recipients are expanded once, durably (aliases, .forward), before delivery.
        // None: the queue could not be updated (logged); the next pass tries again.
        let due = expand_due(shared, &mut msg, due, now).await?;
        msg.envelope.recipients = deliver_due(runner, &msg, due, now).await;
    }
    // Bounces, delay warnings, expiry: src/deliver/dsn.rs.
    changed |= notices::settle(shared, &mut msg).await;
    let next = next_due(&msg.envelope.recipients);
    if !changed {
        return next;
    }
    let n_recipients = msg.envelope.recipients.len();
    let result = if dsn::finished(&msg) {
        store.remove(id).await
    } else {
        let env = msg.envelope;
        store
            .update_state(id, env.recipients, Some(env.notices))
            .await
    };
    match result {
        // The outcomes are in the queue: the programs' status files (or the root agent's
        // records, under RunAsUser) have served.
        Ok(()) if local => match shared.local_agent.clone() {
            Some(agent) => {
                let (id, all) = (id.clone(), (0..n_recipients).collect::<Vec<_>>());
                drop(tokio::task::spawn_blocking(move || agent.forget(&id, &all)));
            }
            None => orphans::forget(shared, id, n_recipients),
        },
        Ok(()) => {}
        Err(e) => {
            shared.logger.log(
                Severity::Err,
                Some(id.as_str()),
                format_args!("queue update failed: {e}"),
            );
            return None;
        }
    }
    next
}

/// How long a pass after a commit leaves a quarantined message alone (the retry scan and
/// queue runs look at it whatever this says).
const HELD: Duration = Duration::from_secs(365 * 24 * 3600);

/// The earliest time one of `recipients` is due again, when every pending one waits for a
/// later try; `None` when one is due now, or none is pending (the message is finished, or
/// what is left is for the notices, which the next attempt settles).
fn next_due(recipients: &[Recipient]) -> Option<SystemTime> {
    let mut earliest: Option<SystemTime> = None;
    for r in recipients
        .iter()
        .filter(|r| r.state == DeliveryState::Pending)
    {
        let t = r.next_attempt?;
        earliest = Some(earliest.map_or(t, |e| e.min(t)));
    }
    earliest
}

/// A message that has looped: the SYSERR line, and every pending recipient failed with
/// `554 5.4.6 Too many hops` (no delivery attempt; the bounce follows from `notices::settle`).
fn fail_looping(shared: &Shared, msg: &mut Message, text: &str, now: SystemTime) {
    let current = shared.current();
    let user = loops::real_user_name(current.config.options.run_as_user.is_some());
    shared.logger.log(
        Severity::Crit,
        Some(msg.envelope.id.as_str()),
        format_args!("SYSERR({user}): {text}"),
    );
    let outcome = Outcome::Permanent {
        dsn: loops::TOO_MANY_HOPS_DSN.into(),
        text: loops::TOO_MANY_HOPS.into(),
    };
    let mut recipients = std::mem::take(&mut msg.envelope.recipients);
    for r in recipients.iter_mut() {
        if r.state == DeliveryState::Pending {
            apply(r, &outcome, msg, &current.dsn, now);
            dsn::record_attempt(r, &outcome, None, dsn::Peer::default(), None);
        }
    }
    msg.envelope.recipients = recipients;
}

/// A queued message that cannot be read is left in place and said so, never skipped
/// silently.
fn log_load_failure(shared: &Shared, id: &QueueId, e: &dyn std::fmt::Display) {
    shared.logger.log(
        Severity::Crit,
        Some(id.as_str()),
        format_args!("SYSERR: queue load: {e}"),
    );
}

/// Delivers the `due` recipients of `msg` (with their routes), grouped by route, the
/// groups at once; returns the recipient list with their new states.
///
/// A group's results are recorded in the queue as soon as that group is done while other
/// groups are still under way: a message for a remote hop and a local mailbox must not
/// keep the hop's `250` unrecorded while the local delivery waits for its mailbox (its
/// program runs are few at a time), since a crash in that gap delivers the message to the
/// hop again (issue 19: 226 remote duplicates in 6 kills of the crash harness, nearly all
/// messages with a local recipient too). The last group's results are recorded by
/// [`attempt`] with the message's notices (one write, as before, for a one-group message).
async fn deliver_due(
    runner: &Runner,
    msg: &Message,
    due: Vec<(usize, Route)>,
    now: SystemTime,
) -> Vec<Recipient> {
    use futures_util::StreamExt;
    let shared = &*runner.shared;
    let current = shared.current();
    let mut groups: BTreeMap<Route, Vec<usize>> = BTreeMap::new();
    for (i, route) in due {
        groups.entry(route).or_default().push(i);
    }
    let mut recipients = msg.envelope.recipients.clone();
    let started = SystemTime::now();
    let settings = &current.remote;
    // Boxed (a group's delivery is a few KB of state): moving one is moving a pointer.
    let mut jobs: Vec<_> = groups
        .into_iter()
        .map(|(route, indexes)| {
            Box::pin(async move {
                let done = deliver_group(runner, settings, msg, &route, &indexes).await;
                let marked = matches!(route, Route::Remote { .. });
                (indexes, marked, done)
            })
        })
        .collect();
    // One group (the usual case) is awaited as it is; several run at once.
    let mut single = if jobs.len() == 1 { jobs.pop() } else { None };
    let mut running: futures_util::stream::FuturesUnordered<_> = jobs.into_iter().collect();
    loop {
        let next = match single.take() {
            Some(job) => Some(job.await),
            None => running.next().await,
        };
        let Some((indexes, marked, (mailer, outcomes, relay, peer))) = next else {
            break;
        };
        // Written down at once (one write, no sync): a crash before the queue update
        // below or in attempt() must not deliver these again. A remote hop's were written
        // as its reply came in (deliver_group).
        let delivered: Vec<usize> = (indexes.iter().zip(&outcomes))
            .filter(|(_, o)| matches!(o, Outcome::Delivered { .. }))
            .map(|(i, _)| *i)
            .collect();
        if !marked {
            runner.marks.record(shared, &msg.envelope.id, &delivered);
        }
        let mut final_ones = false;
        for (i, outcome) in indexes.iter().zip(outcomes) {
            let r = &mut recipients[*i];
            final_ones |= !matches!(outcome, Outcome::Temporary { .. });
            apply(r, &outcome, msg, &current.dsn, now);
            let by = msg.envelope.params.deliver_by;
            dsn::record_attempt(r, &outcome, relay.as_deref(), peer, by);
            log_to(shared, msg, r, &mailer, relay.as_deref(), &outcome, started);
        }
        if final_ones && !running.is_empty() {
            let id = &msg.envelope.id;
            if let Err(e) = shared.queue.update(id, recipients.clone()).await {
                shared.logger.log(
                    Severity::Err,
                    Some(id.as_str()),
                    format_args!("queue update failed: {e}"),
                );
            }
        }
    }
    recipients
}

/// A connection slot to `host`:`port` for a delivery of `msg` to `rcpts`: a permit when
/// one is free; when the hop's connections are all in use, the first of a permit and a
/// session handed on by a delivery that sent this message's envelope behind its own body
/// ([`follow`]), which comes with that session's permit (only a permit when not
/// `pipelined`: `PipelineAcrossMessages` off, or a rate delay).
async fn obtain(
    runner: &Runner,
    host: &str,
    port: u16,
    limit: usize,
    pipelined: bool,
    msg: &Message,
    rcpts: &[Recipient],
) -> (limits::Permit, Option<remote::Handed>) {
    let d = &runner.destinations;
    if !pipelined {
        return (d.acquire(host, port, limit).await, None);
    }
    if let Some(permit) = d.try_acquire(host, port, limit) {
        return (permit, None);
    }
    // An envelope made for what the hop's sessions offer (known once one was opened).
    let offered = runner.cache.capabilities(host, port).and_then(|caps| {
        let envelope = remote::client::follow_envelope(msg, rcpts, &caps)?;
        Some(runner.followers.offer(host, port, caps, envelope))
    });
    let Some(mut ticket) = offered else {
        return (d.acquire(host, port, limit).await, None);
    };
    let baton = tokio::select! {
        baton = ticket.receive() => baton,
        permit = d.acquire(host, port, limit) => {
            if ticket.withdraw() {
                return (permit, None);
            }
            // Taken at the same moment: the envelope is on its way; the permit goes back.
            drop(permit);
            ticket.receive().await
        }
    };
    match baton {
        Some(b) => (b.permit, Some(b.handed)),
        None => (d.acquire(host, port, limit).await, None),
    }
}

/// Delivers one group of recipients that share a route: the mailer, one outcome per
/// recipient, the `relay=` text, and what the next hop took on (DSN, DELIVERBY).
async fn deliver_group(
    runner: &Runner,
    settings: &Arc<Settings>,
    msg: &Message,
    route: &Route,
    indexes: &[usize],
) -> (String, Vec<Outcome>, Option<String>, dsn::Peer) {
    let (shared, dns) = (&*runner.shared, &runner.dns);
    let n = indexes.len();
    match route {
        Route::Remote { mailer, host, port } => {
            let rcpts: Vec<Recipient> = indexes
                .iter()
                .map(|&i| msg.envelope.recipients[i].clone())
                .collect();
            // sendmail's rulesets 1/2/4 and the mailer's S=/R= (envelope and headers)
            let rewritten = (shared.current().rules.as_deref())
                .map(|rules| rules.for_delivery(mailer, msg, &rcpts));
            let (msg, rcpts) = rewritten.as_ref().map_or((msg, &rcpts), |(m, r)| (m, r));
            // The limits in force now (a SIGHUP's apply to the next deliveries).
            let (limit, delay, fresh, pipeline) = {
                let o = &shared.config().options;
                let t = &o.timeouts;
                (
                    o.destination_concurrency_limit,
                    o.destination_rate_delay,
                    t.hoststatus,
                    o.pipeline_across_messages,
                )
            };
            // A destination known to be down (host status) is not tried again yet.
            if let Some(outcome) = runner.destinations.down(host, *port, fresh) {
                return (
                    mailer.clone(),
                    vec![outcome; rcpts.len()],
                    None,
                    dsn::Peer::default(),
                );
            }
            // `PipelineAcrossMessages`; never with a rate delay, where each delivery waits
            // its turn on its own (an envelope sent ahead would leave the hop in the middle
            // of a transaction meanwhile).
            let pipelined = pipeline && delay.is_zero();
            let (slot, handed) = obtain(runner, host, *port, limit, pipelined, msg, rcpts).await;
            runner.destinations.pace(host, *port, delay).await;
            let mut rng: rand::rngs::StdRng = rand::make_rng();
            // The hop's 250 is written down in the same step that read it: a crash before
            // the queue update must not send these again (see `marks`).
            let id = &msg.envelope.id;
            let mark = |taken: &[usize]| {
                let delivered: Vec<usize> = taken.iter().map(|&k| indexes[k]).collect();
                runner.marks.record(shared, id, &delivered);
            };
            let req = Request {
                message: msg,
                recipients: rcpts,
                host,
                port: *port,
                on_accepted: Some(remote::Accepted(&mark)),
            };
            // Asked for the next envelope at each body only with the option on.
            let mut leader = pipelined.then(|| follow::Leader::new(&runner.followers, host, *port));
            let follow = (leader.as_mut()).map(|l| l as &mut dyn remote::client::Follow);
            let cache = &runner.cache;
            // Boxed: the SMTP dialogue's state is large (~20 KB), and every future above it
            // (the attempt, its task) would otherwise carry it inline and be copied whole
            // each time it moves (spawning the attempt copied it for every message).
            let (report, handed_on) = match handed {
                Some(handed) => {
                    let d = remote::deliver_handed(
                        dns, settings, cache, handed, &req, &mut rng, follow,
                    );
                    Box::pin(d).await
                }
                None => {
                    let d =
                        remote::deliver_cached_with(dns, settings, cache, &req, &mut rng, follow);
                    Box::pin(d).await
                }
            };
            let took = (report.outcomes.iter()).any(|o| !matches!(o, Outcome::Temporary { .. }));
            slot.feedback(took, limit, report.final_rtt);
            match leader {
                Some(leader) => leader.hand_on(handed_on, slot),
                // Without a leader no envelope went behind the body: nothing is handed on.
                None => drop(slot),
            }
            match (report.unreachable, report.outcomes.first()) {
                (true, Some(outcome)) => {
                    runner.destinations.mark_down(host, *port, outcome.clone())
                }
                _ => runner.destinations.up(host, *port),
            }
            for line in &report.noqid_log {
                shared
                    .logger
                    .log(Severity::Info, None, format_args!("{line}"));
            }
            for line in &report.log {
                shared.logger.log(
                    Severity::Info,
                    Some(msg.envelope.id.as_str()),
                    format_args!("{line}"),
                );
            }
            let peer = dsn::Peer {
                dsn: report.peer_dsn,
                deliverby: report.peer_deliverby,
            };
            (mailer.clone(), report.outcomes, report.relay, peer)
        }
        Route::Local { mailer, user } => {
            let rcpts: Vec<Recipient> = indexes
                .iter()
                .map(|&i| msg.envelope.recipients[i].clone())
                .collect();
            let (current, logger, msg) = (shared.current(), shared.logger.clone(), msg.clone());
            // Under RunAsUser the root agent delivers (it re-reads and re-checks the
            // recipients itself).
            let (agent, indexes) = (shared.local_agent.clone(), indexes.to_vec());
            let (store, user) = (shared.queue.clone(), user.clone());
            // Few program runs for one recipient at once (Postfix's
            // local_destination_concurrency_limit, 2): they would only queue on the
            // mailbox's lock, and each one in flight outlives a daemon that dies. Built-in
            // mbox and Maildir deliveries run in this process and are not limited: a
            // Maildir needs no lock, an mbox waits on its own lock.
            let program = mailer == "prog" || (mailer == "local" && current.local.mailer.is_some());
            let limit = current.config.options.local_destination_concurrency_limit;
            let _slot = match program {
                true => Some(runner.local.acquire(&user, 0, limit).await),
                false => None,
            };
            let mailers = orphans::dir(shared);
            let done = tokio::task::spawn_blocking(move || match agent {
                Some(a) => a.deliver(&store, &msg.envelope.id, &indexes),
                None => {
                    let track = Some((mailers.as_path(), indexes.as_slice()));
                    deliver_local_in(&current, &logger, &msg, &user, &rcpts, None, track)
                }
            })
            .await;
            let outcomes = done.unwrap_or_else(|e| {
                vec![
                    Outcome::Temporary {
                        dsn: "4.3.0".into(),
                        text: format!("Deferred: {e}")
                    };
                    n
                ]
            });
            (mailer.clone(), outcomes, None, dsn::Peer::default())
        }
        Route::Error { text } => {
            let o = Outcome::Permanent {
                dsn: "5.1.3".into(),
                text: text.clone(),
            };
            (
                "*error*".to_string(),
                vec![o; n],
                None,
                dsn::Peer::default(),
            )
        }
    }
}

/// Local delivery of `rcpts`, all routed to `user` (blocking: file locks, programs): an
/// expanded target goes straight to its mailbox, file or program (as its owner); an
/// envelope recipient with nothing to expand goes through [`crate::deliver::local`].
/// With the cf's rulesets, each target's mailer rewrites the sender and the headers.
pub fn deliver_local(
    current: &Current,
    logger: &crate::log::Logger,
    msg: &Message,
    user: &str,
    rcpts: &[Recipient],
) -> Vec<Outcome> {
    deliver_local_in(current, logger, msg, user, rcpts, None, None)
}

/// [`deliver_local`] for the root delivery agent ([`crate::privsep::agent`]) of queue
/// `qdir`: the unprivileged daemon cannot read a `.forward` in a private (0700) home, so
/// it hands the user to the agent unexpanded; the non-local addresses the agent's
/// expansion finds are queued as a new message of the same sender through the maildrop
/// (the daemon's pickup then relays them), and the user counts as delivered, instead of
/// being deferred again on every run. With `track` (the daemon's own runner), each program
/// run gets a status file in `track.0`, named `<queue id>.<recipient index>` (`track.1`:
/// the queue indexes of `rcpts`), so that a restarted daemon knows what a program that
/// outlived this one did ([`orphans`]).
pub fn deliver_local_in(
    current: &Current,
    logger: &crate::log::Logger,
    msg: &Message,
    user: &str,
    rcpts: &[Recipient],
    requeue_in: Option<&std::path::Path>,
    track: Option<(&std::path::Path, &[usize])>,
) -> Vec<Outcome> {
    let status = |k: usize| {
        track.and_then(|(dir, idx)| {
            idx.get(k)
                .map(|i| dir.join(format!("{}.{i}", msg.envelope.id.as_str())))
        })
    };
    let cfg = &*current.config;
    // The aliases are read only for a recipient that was not expanded before.
    let table = match rcpts.iter().all(|r| r.expanded.is_some()) {
        true => Ok(crate::aliases::AliasTable::default()),
        false => crate::aliases::load_all(&cfg.options.alias_files),
    };
    let table = match table {
        Ok(t) => t,
        Err(e) => {
            let o = Outcome::Temporary {
                dsn: "4.3.0".into(),
                text: format!("Deferred: aliases: {e}"),
            };
            return vec![o; rcpts.len()];
        }
    };
    let agent = &*current.local;
    let ids = agent
        .default_user
        .unwrap_or_else(|| crate::aliases::default_user(cfg));
    let mut expander = crate::aliases::Expander::from_config_as(&table, cfg, ids);
    expander.log = Some((logger, Some(msg.envelope.id.as_str())));
    let d = crate::deliver::local::Delivery {
        log: Some((logger, Some(msg.envelope.id.as_str()))),
        ..crate::deliver::local::Delivery::from_message(msg)
    };
    rcpts
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let tracked = crate::deliver::local::inflight::track(status(k), || match &r.expanded {
                Some(x) => {
                    let owner = x.owner.as_deref().and_then(|n| (agent.users)(n));
                    let o = agent.deliver(&expand::target_of(r), owner.as_ref(), &d);
                    // one target, durable: a daemon killed now need not deliver it again
                    if o == crate::deliver::local::Outcome::Delivered {
                        crate::deliver::local::inflight::delivered();
                    }
                    Ok(o)
                }
                None => {
                    let report =
                        crate::deliver::local::deliver_recipient(agent, &expander, user, msg);
                    if !report.remote.is_empty()
                        && let Some(qdir) = requeue_in
                    {
                        requeue_remote(qdir, logger, msg, user, &report.remote)?;
                    } else if !report.remote.is_empty() {
                        // The aliases changed since the expansion: expand again next time.
                        return Err(Outcome::Temporary {
                            dsn: "4.3.0".into(),
                            text: "Deferred: aliases changed during delivery".into(),
                        });
                    }
                    Ok(report.combined())
                }
            });
            match tracked {
                Ok(outcome) => from_local(outcome),
                Err(o) => o,
            }
        })
        .collect()
}

/// Queues `remote` (from `user`'s expansion) as a new message of `msg`'s sender, body and
/// client through the maildrop; a temporary failure when that cannot be written.
fn requeue_remote(
    qdir: &std::path::Path,
    logger: &crate::log::Logger,
    msg: &Message,
    user: &str,
    remote: &[String],
) -> Result<(), Outcome> {
    let failed = |e: String| Outcome::Temporary {
        dsn: "4.3.0".into(),
        text: format!("Deferred: cannot queue the forwarded copy: {e}"),
    };
    let id = QueueId::new(crate::queue::id::QueueIdGen::new().next_id())
        .map_err(|e| failed(e.to_string()))?;
    let mut env = msg.envelope.clone();
    env.id = id.clone();
    env.recipients = remote.iter().map(|a| Recipient::new(a.clone())).collect();
    let copy = Message {
        envelope: env,
        body: msg.body.clone(),
    };
    crate::queue::maildrop::submit(qdir, &copy).map_err(|e| failed(e.to_string()))?;
    logger.log(
        crate::log::Severity::Info,
        Some(msg.envelope.id.as_str()),
        format_args!("{user}: forwarded to {} as {id}", remote.join(", ")),
    );
    Ok(())
}

fn from_local(o: crate::deliver::local::Outcome) -> Outcome {
    match o {
        crate::deliver::local::Outcome::Delivered => Outcome::Delivered {
            reply: String::new(),
        },
        o @ crate::deliver::local::Outcome::Temporary { .. } => Outcome::Temporary {
            text: o.stat(),
            dsn: o.dsn().to_string(),
        },
        crate::deliver::local::Outcome::Permanent { dsn, reason } => {
            Outcome::Permanent { dsn, text: reason }
        }
    }
}

/// The route of one queued recipient: an expanded `|program`, `/file` or user goes to its
/// local mailer as it is; everything else through the rules.
pub fn route_recipient(current: &Current, r: &Recipient) -> Route {
    match expand::target_mailer(r) {
        Some(mailer) => Route::Local {
            mailer: mailer.to_string(),
            user: r.address.clone(),
        },
        None => route(current, &r.address),
    }
}

/// The local user the envelope sender routes to (ruleset 0 → the `local` mailer), if any.
fn sender_user(current: &Current, sender: &str) -> Option<String> {
    if sender.is_empty() {
        return None;
    }
    match route(current, sender) {
        Route::Local { mailer, user } if mailer == "local" => {
            Some(user.trim_start_matches('\\').to_string())
        }
        _ => None,
    }
}

/// Expands the due recipients of the `local` mailer that are not expansions themselves
/// ([`expand`]), and records the result in the queue before anything is delivered.
/// Returns what to deliver now (None: the queue could not be updated; logged).
async fn expand_due(
    shared: &Shared,
    msg: &mut Message,
    due: Vec<(usize, Route)>,
    now: SystemTime,
) -> Option<Vec<(usize, Route)>> {
    let current = shared.current();
    let mut out = Vec::new();
    let mut changed = false;
    // The users the message names directly, for the expansions' duplicate suppression.
    let direct: Vec<String> = due
        .iter()
        .filter_map(|(i, route)| match route {
            Route::Local { mailer, user }
                if mailer == "local" && msg.envelope.recipients[*i].expanded.is_none() =>
            {
                Some(user.trim_start_matches('\\').to_lowercase())
            }
            _ => None,
        })
        .collect();
    for (i, route) in due {
        let user = match &route {
            Route::Local { mailer, user }
                if mailer == "local" && msg.envelope.recipients[i].expanded.is_none() =>
            {
                user.clone()
            }
            _ => {
                out.push((i, route));
                continue;
            }
        };
        let (cfg, logger) = (current.config.clone(), shared.logger.clone());
        let ids = current.local.default_user;
        let (id, parent) = (msg.envelope.id.clone(), msg.envelope.recipients[i].clone());
        let existing = msg.envelope.recipients.clone();
        let direct = direct.clone();
        let expansion = tokio::task::spawn_blocking(move || {
            expand::expand(
                &cfg,
                ids,
                (&logger, id.as_str()),
                &parent,
                &user,
                &existing,
                &direct,
            )
        })
        .await
        .unwrap_or_else(|e| expand::Expansion::Deferred {
            dsn: "4.3.0".into(),
            reason: e.to_string(),
        });
        match expansion {
            expand::Expansion::Direct => out.push((i, route)),
            expand::Expansion::Deferred { dsn, reason } => {
                let o = Outcome::Temporary {
                    dsn,
                    text: format!("Deferred: {reason}"),
                };
                let mut r = msg.envelope.recipients[i].clone();
                apply(&mut r, &o, msg, &current.dsn, now);
                log_to(shared, msg, &r, "local", None, &o, now);
                msg.envelope.recipients[i] = r;
                changed = true;
            }
            expand::Expansion::Targets(mut targets) => {
                if !current.config.options.me_too
                    && let Some(user) = sender_user(&current, &msg.envelope.sender)
                {
                    expand::drop_sender(&mut targets, &user);
                }
                let parent = &mut msg.envelope.recipients[i];
                parent.state = DeliveryState::Done;
                parent.tries += 1;
                parent.status = Some("expanded".into());
                for t in targets {
                    let j = msg.envelope.recipients.len();
                    if let (DeliveryState::Failed, Some(text)) = (t.state, t.status.clone()) {
                        let o = Outcome::Permanent {
                            dsn: "5.3.0".into(),
                            text,
                        };
                        log_to(shared, msg, &t, "local", None, &o, now);
                    } else {
                        out.push((j, route_recipient(&current, &t)));
                    }
                    msg.envelope.recipients.push(t);
                }
                changed = true;
            }
        }
    }
    if changed
        && let Err(e) = shared
            .queue
            .update(&msg.envelope.id, msg.envelope.recipients.clone())
            .await
    {
        shared.logger.log(
            Severity::Err,
            Some(msg.envelope.id.as_str()),
            format_args!("queue update failed: {e}; expansion not recorded"),
        );
        return None;
    }
    Some(out)
}

/// The recipient's new state after an attempt.
fn apply(
    r: &mut Recipient,
    outcome: &Outcome,
    msg: &Message,
    dsn: &dsn::Settings,
    now: SystemTime,
) {
    r.tries += 1;
    r.status = Some(outcome.stat());
    match outcome {
        Outcome::Delivered { .. } => r.state = DeliveryState::Done,
        Outcome::Permanent { .. } => r.state = DeliveryState::Failed,
        Outcome::Temporary { .. } => {
            if dsn::expired(dsn, msg, now) {
                r.state = DeliveryState::Failed;
            } else {
                r.next_attempt = Some(now + backoff(r.tries));
            }
        }
    }
}

/// 5 minutes after the first failure, doubling, at most an hour.
pub fn backoff(tries: u32) -> Duration {
    let mins = 5u64.saturating_mul(1 << tries.saturating_sub(1).min(4));
    Duration::from_secs(mins.min(60) * 60)
}

/// sendmail's `to=` line.
fn log_to(
    shared: &Shared,
    msg: &Message,
    r: &Recipient,
    mailer: &str,
    relay: Option<&str>,
    outcome: &Outcome,
    started: SystemTime,
) {
    let now = SystemTime::now();
    let since_arrival = now.duration_since(msg.envelope.arrival).unwrap_or_default();
    crate::metrics::global().delivery(mailer, disposition(outcome, r.state, since_arrival));
    let delay = hms(since_arrival);
    let xdelay = hms(now.duration_since(started).unwrap_or_default());
    let relay = relay.map(|h| format!(", relay={h}")).unwrap_or_default();
    let stat = match (outcome, r.state) {
        (Outcome::Temporary { .. }, DeliveryState::Failed) => {
            format!("{} (expired: Timeout.queuereturn)", outcome.stat())
        }
        _ => outcome.log_stat(),
    };
    let reply = outcome
        .reply()
        .map(|t| format!(", reply={t}"))
        .unwrap_or_default();
    // An envelope recipient as given (`to=<bob@x>`); an expansion's target as sendmail
    // writes it (`to=root`, `to=/var/log/list, ctladdr=<list@host> (8/0)`).
    let to = match &r.expanded {
        None => format!("<{}>", r.address),
        Some(x) if matches!(mailer, "prog" | "*file*") => {
            let (uid, gid) = ctl_ids(&shared.current().local, x);
            format!("{}, ctladdr=<{}> ({uid}/{gid})", r.address, x.parent)
        }
        Some(_) => r.address.clone(),
    };
    shared.logger.log(
        Severity::Info,
        Some(msg.envelope.id.as_str()),
        format_args!(
            "to={to}, delay={delay}, xdelay={xdelay}, mailer={mailer}, pri={}{relay}, dsn={}{reply}, stat={stat}",
            msg.envelope.priority,
            outcome.dsn()
        ),
    );
}

/// What the metrics count for one `to=` line: a temporary failure past the queue's lifetime
/// is a bounce.
fn disposition(
    outcome: &Outcome,
    state: DeliveryState,
    since_arrival: Duration,
) -> crate::metrics::Disposition {
    use crate::metrics::Disposition;
    match (outcome, state) {
        (Outcome::Delivered { .. }, _) => Disposition::Delivered {
            delay: since_arrival.as_secs_f64(),
        },
        (Outcome::Temporary { .. }, DeliveryState::Failed) | (Outcome::Permanent { .. }, _) => {
            Disposition::Bounced
        }
        (Outcome::Temporary { .. }, _) => Disposition::Deferred,
    }
}

/// The ids a program or file target runs under: its owner's, else `DefaultUser`'s.
fn ctl_ids(agent: &crate::deliver::local::LocalDelivery, x: &crate::queue::Expanded) -> (u32, u32) {
    x.owner
        .as_deref()
        .and_then(|n| (agent.users)(n))
        .map(|u| (u.uid, u.gid))
        .or(agent.default_user)
        .unwrap_or((0, 0))
}

/// `HH:MM:SS`, or `D+HH:MM:SS` past a day, as sendmail's `pintvl`.
pub fn hms(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}+{h:02}:{m:02}:{sec:02}")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_an_hour() {
        let mins: Vec<u64> = (1..=7).map(|t| backoff(t).as_secs() / 60).collect();
        assert_eq!(mins, [5, 10, 20, 40, 60, 60, 60]);
    }

    #[test]
    fn next_due_is_the_earliest_retry_of_the_pending_recipients() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |secs: u64, state: DeliveryState| {
            let mut r = Recipient::new("a@b.test");
            r.state = state;
            r.next_attempt = Some(t0 + Duration::from_secs(secs));
            r
        };
        let waiting = [
            at(300, DeliveryState::Pending),
            at(60, DeliveryState::Pending),
            at(5, DeliveryState::Done),
        ];
        assert_eq!(next_due(&waiting), Some(t0 + Duration::from_secs(60)));
        // One never tried (or due now): the message may have something due at any pass.
        let mut fresh = Recipient::new("c@d.test");
        fresh.state = DeliveryState::Pending;
        let mixed = [at(300, DeliveryState::Pending), fresh];
        assert_eq!(next_due(&mixed), None);
        // Nothing pending: finished, or only notices left, which the next attempt settles.
        assert_eq!(next_due(&[at(5, DeliveryState::Done)]), None);
        assert_eq!(next_due(&[]), None);
    }

    #[test]
    fn delays_as_sendmail_prints_them() {
        assert_eq!(hms(Duration::from_secs(61)), "00:01:01");
        assert_eq!(hms(Duration::from_secs(90_061)), "1+01:01:01");
    }
}
