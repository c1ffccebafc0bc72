//! The queue runner: queued messages → delivery attempts → recipients crossed off or retried.
//!
//! In: the store (woken by each commit, and once a minute for retries). Out: for every pending
//! recipient whose time has come, one delivery attempt through the mailer the configuration
//! chooses, sendmail's `to=` log line, and the recipient's new state written back durably
//! (`Done`, `Pending` with the next attempt, or `Failed`). A message whose recipients are all
//! delivered is removed; one with failed recipients stays queued for the bounce (DSN) that the
//! delivery work adds next, so nothing is dropped silently.
//!
//! Mailer choice ([`route`]): a cf with rulesets resolves each recipient through rulesets 3 and
//! 0 (`$# mailer $@ host $: user`), as sendmail's `parseaddr` does; without rulesets, this
//! host's names (`$=w`) are local and everything else goes by MX (`esmtp`), or to the smart
//! host (`DS`). Mailers whose `P=[IPC]` with `A=TCP $h [port]` deliver over SMTP
//! ([`crate::deliver::remote`]); local mailers wait for local delivery to land and are deferred
//! with a log line saying so.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::daemon::{Current, Shared};
use crate::deliver::remote::{self, Outcome, Request, Settings, route as hops};
use crate::dns::Dns;
use crate::log::Severity;
use crate::queue::{DeliveryState, Message, QueueId, Recipient};

/// How often deferred recipients are looked at again when nothing new arrives.
pub const RETRY_SCAN: Duration = Duration::from_secs(60);
/// Messages delivered at the same time.
pub const CONCURRENT_MESSAGES: usize = 20;

/// Where one recipient goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    /// Over SMTP to `host` (`$h`: a domain for MX, `[name]` or an address literal).
    Remote {
        mailer: String,
        host: String,
        port: u16,
    },
    /// A local mailer (`local`, `prog`, `*file*` …).
    Local { mailer: String, user: String },
    /// The rules refused the address (`$#error`).
    Error { text: String },
}

/// The route of `addr` under the running configuration.
pub fn route(current: &Current, addr: &str) -> Route {
    route_with(current.rules.as_deref(), &current.config, addr)
}

/// The route of `addr` through the cf's rulesets when there are any, else the built-in rules.
pub fn route_with(rules: Option<&crate::policy::RulesPolicy>, cfg: &Config, addr: &str) -> Route {
    match rules {
        Some(rules) => match rules.resolve(addr) {
            Ok((mailer, host, user)) => by_mailer(cfg, mailer, host, user),
            Err(text) => Route::Error { text },
        },
        None => builtin_route(cfg, addr),
    }
}

fn by_mailer(cfg: &Config, mailer: String, host: Option<String>, user: String) -> Route {
    match cfg.mailer(&mailer) {
        Some(m) if m.path == "[IPC]" && m.argv.first().is_some_and(|a| a == "TCP") => {
            let port = hops::mailer_port(&m.argv).unwrap_or(25);
            Route::Remote {
                mailer,
                host: host.unwrap_or_default(),
                port,
            }
        }
        _ => Route::Local { mailer, user },
    }
}

/// sendmail's standard routing without rulesets.
fn builtin_route(cfg: &Config, addr: &str) -> Route {
    let policy = crate::policy::BuiltinPolicy::from_config(cfg);
    let (user, domain) = match addr.rsplit_once('@') {
        Some((u, d)) => (u.to_string(), Some(d.to_string())),
        None => (addr.to_string(), None),
    };
    match domain {
        None => Route::Local {
            mailer: "local".into(),
            user,
        },
        Some(d) if policy.is_local(&d) => Route::Local {
            mailer: "local".into(),
            user,
        },
        Some(d) => {
            let smart = cfg.macros.get("S").map(String::as_str).unwrap_or("");
            match hops::smart_host(smart) {
                Some(Ok((mailer, target))) => {
                    let mailer = mailer.unwrap_or_else(|| "relay".to_string());
                    let port = cfg
                        .mailer(&mailer)
                        .and_then(|m| hops::mailer_port(&m.argv).ok())
                        .unwrap_or(25);
                    Route::Remote {
                        mailer,
                        host: host_text(&target),
                        port,
                    }
                }
                _ => Route::Remote {
                    mailer: "esmtp".into(),
                    host: d,
                    port: 25,
                },
            }
        }
    }
}

/// `$h` for a smart host target (`[name]`, an address literal, or a domain).
fn host_text(t: &hops::Target) -> String {
    match t {
        hops::Target::Mx(d) => d.clone(),
        hops::Target::Host(h) => format!("[{h}]"),
        hops::Target::Literal(ip) => crate::dns::bracketed(*ip),
    }
}

/// Runs the queue until the task is dropped: a pass every `interval` and, when `on_commit`,
/// after every commit (DeliveryMode background).
pub async fn run(shared: Arc<Shared>, on_commit: bool, interval: Duration) {
    let dns = match Dns::from_config(&shared.config()) {
        Ok(d) => d,
        Err(e) => {
            shared.logger.log(
                Severity::Crit,
                None,
                format_args!("SYSERR: queue runner: resolver: {e}"),
            );
            return;
        }
    };
    let busy: Arc<Mutex<HashSet<QueueId>>> = Arc::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_MESSAGES));
    let mut commits = shared.queue.watch_commits();
    loop {
        for id in shared.queue.ids().unwrap_or_default() {
            if !busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone())
            {
                continue;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (shared, dns, busy) = (shared.clone(), dns.clone(), busy.clone());
            tokio::spawn(async move {
                attempt(&shared, &dns, &id).await;
                busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                drop(slot);
            });
        }
        tokio::select! {
            r = commits.changed(), if on_commit => if r.is_err() { return },
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One delivery attempt for the due recipients of one message.
async fn attempt(shared: &Shared, dns: &Dns, id: &QueueId) {
    let store = shared.queue.clone();
    let loaded = {
        let (store, id) = (store.clone(), id.clone());
        tokio::task::spawn_blocking(move || store.load(&id)).await
    };
    let msg = match loaded {
        Ok(Ok(msg)) => msg,
        Ok(Err(crate::queue::QueueError::NotFound(_))) => return, // delivered meanwhile
        Ok(Err(e)) => return log_load_failure(shared, id, &e),
        Err(e) => return log_load_failure(shared, id, &e),
    };
    let now = SystemTime::now();
    let due: Vec<usize> = msg
        .envelope
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.state == DeliveryState::Pending && r.next_attempt.is_none_or(|t| t <= now)
        })
        .map(|(i, _)| i)
        .collect();
    if due.is_empty() {
        return;
    }
    let current = shared.current();
    let mut groups: BTreeMap<Route, Vec<usize>> = BTreeMap::new();
    for i in due {
        groups
            .entry(route(&current, &msg.envelope.recipients[i].address))
            .or_default()
            .push(i);
    }
    let settings = Settings::from_config(&current.config).ok();
    let mut recipients = msg.envelope.recipients.clone();
    let started = SystemTime::now();
    for (route, indexes) in groups {
        let (mailer, outcomes, relay) =
            deliver_group(shared, dns, settings.as_ref(), &msg, &route, &indexes).await;
        for (i, outcome) in indexes.iter().zip(outcomes) {
            let r = &mut recipients[*i];
            apply(r, &outcome, &msg, &current.config, now);
            log_to(
                shared,
                &msg,
                r,
                &mailer,
                relay.as_deref(),
                &outcome,
                started,
            );
        }
    }
    let all_done = recipients.iter().all(|r| r.state == DeliveryState::Done);
    let result = if all_done {
        store.remove(id).await
    } else {
        store.update(id, recipients).await
    };
    if let Err(e) = result {
        shared.logger.log(
            Severity::Err,
            Some(id.as_str()),
            format_args!("queue update failed: {e}"),
        );
    }
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

/// Delivers one group of recipients that share a route.
async fn deliver_group(
    shared: &Shared,
    dns: &Dns,
    settings: Option<&Settings>,
    msg: &Message,
    route: &Route,
    indexes: &[usize],
) -> (String, Vec<Outcome>, Option<String>) {
    let n = indexes.len();
    match route {
        Route::Remote { mailer, host, port } => {
            let Some(settings) = settings else {
                let o = Outcome::Temporary {
                    dsn: "4.3.5".into(),
                    text: "Deferred: ClientPortOptions unusable".into(),
                };
                return (mailer.clone(), vec![o; n], None);
            };
            let rcpts: Vec<Recipient> = indexes
                .iter()
                .map(|&i| msg.envelope.recipients[i].clone())
                .collect();
            let mut rng: rand::rngs::StdRng = rand::make_rng();
            let req = Request {
                message: msg,
                recipients: &rcpts,
                host,
                port: *port,
            };
            let report = remote::deliver(dns, settings, &req, &mut rng).await;
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
            (mailer.clone(), report.outcomes, report.relay)
        }
        Route::Local { mailer, user } => {
            // The route includes the user, so every recipient of this group is that user.
            let users = vec![user.clone(); n];
            let (cfg, logger, msg) = (shared.config(), shared.logger.clone(), msg.clone());
            let done =
                tokio::task::spawn_blocking(move || deliver_local(&cfg, &logger, &msg, &users))
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
            (mailer.clone(), outcomes, None)
        }
        Route::Error { text } => {
            let o = Outcome::Permanent {
                dsn: "5.1.3".into(),
                text: text.clone(),
            };
            ("*error*".to_string(), vec![o; n], None)
        }
    }
}

/// Local delivery of `users` (blocking: file locks, programs): through the aliases and
/// `~/.forward`, into mailboxes, files and programs.
fn deliver_local(
    cfg: &Config,
    logger: &crate::log::Logger,
    msg: &Message,
    users: &[String],
) -> Vec<Outcome> {
    let table = match crate::aliases::load_all(&cfg.options.alias_files) {
        Ok(t) => t,
        Err(e) => {
            let o = Outcome::Temporary {
                dsn: "4.3.0".into(),
                text: format!("Deferred: aliases: {e}"),
            };
            return vec![o; users.len()];
        }
    };
    let mut expander = crate::aliases::Expander::from_config(&table, cfg);
    expander.log = Some((logger, Some(msg.envelope.id.as_str())));
    let agent = crate::deliver::local::LocalDelivery::from_config(cfg);
    users
        .iter()
        .map(|user| {
            let report = crate::deliver::local::deliver_recipient(&agent, &expander, user, msg);
            if !report.remote.is_empty() {
                return Outcome::Temporary {
                    dsn: "4.3.0".into(),
                    text: format!(
                        "Deferred: forwarding to {} is not supported yet",
                        report.remote.join(", ")
                    ),
                };
            }
            match report.combined() {
                crate::deliver::local::Outcome::Delivered => Outcome::Delivered {
                    reply: String::new(),
                },
                crate::deliver::local::Outcome::Temporary { dsn, reason } => Outcome::Temporary {
                    dsn,
                    text: format!("Deferred: {reason}"),
                },
                crate::deliver::local::Outcome::Permanent { dsn, reason } => {
                    Outcome::Permanent { dsn, text: reason }
                }
            }
        })
        .collect()
}

/// The recipient's new state after an attempt.
fn apply(r: &mut Recipient, outcome: &Outcome, msg: &Message, cfg: &Config, now: SystemTime) {
    r.tries += 1;
    r.status = Some(outcome.stat());
    match outcome {
        Outcome::Delivered { .. } => r.state = DeliveryState::Done,
        Outcome::Permanent { .. } => r.state = DeliveryState::Failed,
        Outcome::Temporary { .. } => {
            let age = now.duration_since(msg.envelope.arrival).unwrap_or_default();
            if age >= cfg.options.timeouts.queuereturn.normal {
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
    let delay = hms(now.duration_since(msg.envelope.arrival).unwrap_or_default());
    let xdelay = hms(now.duration_since(started).unwrap_or_default());
    let relay = relay.map(|h| format!(", relay={h}")).unwrap_or_default();
    let stat = match (outcome, r.state) {
        (Outcome::Temporary { .. }, DeliveryState::Failed) => {
            format!("{} (expired: Timeout.queuereturn)", outcome.stat())
        }
        _ => outcome.stat(),
    };
    shared.logger.log(
        Severity::Info,
        Some(msg.envelope.id.as_str()),
        format_args!(
            "to=<{}>, delay={delay}, xdelay={xdelay}, mailer={mailer}, pri={}{relay}, dsn={}, stat={stat}",
            r.address,
            msg.envelope.priority,
            outcome.dsn()
        ),
    );
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
    fn delays_as_sendmail_prints_them() {
        assert_eq!(hms(Duration::from_secs(61)), "00:01:01");
        assert_eq!(hms(Duration::from_secs(90_061)), "1+01:01:01");
    }

    #[test]
    fn builtin_routes() {
        let cfg = Config::from_str(
            "t.cf",
            "Djmta.example.test\nMesmtp, P=[IPC], F=mDFMuX, A=TCP $h\nMrelay, P=[IPC], F=mDFMuX, A=TCP $h 2599\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            builtin_route(&cfg, "root@mta.example.test"),
            Route::Local {
                mailer: "local".into(),
                user: "root".into()
            }
        );
        assert_eq!(
            builtin_route(&cfg, "bob@remote.example.test"),
            Route::Remote {
                mailer: "esmtp".into(),
                host: "remote.example.test".into(),
                port: 25
            }
        );
        let smart = Config::from_str(
            "t.cf",
            "Djmta.example.test\nDSrelay:[127.0.0.1]\nMrelay, P=[IPC], F=mDFMuX, A=TCP $h 2599\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            builtin_route(&smart, "bob@remote.example.test"),
            Route::Remote {
                mailer: "relay".into(),
                host: "[127.0.0.1]".into(),
                port: 2599
            }
        );
    }
}
