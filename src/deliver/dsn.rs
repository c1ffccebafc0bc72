//! Delivery status notifications: bounces, delay warnings and return receipts (RFC 3464).
//!
//! In: a queued [`Message`] after a delivery attempt (its recipients' states, last status,
//! `dsn=` code and remote host) and the running configuration. Out: a [`Plan`] saying which
//! notices are due ([`plan`], pure), each notice built as a new queued message ([`build`],
//! pure: RFC 3464 `multipart/report; report-type=delivery-status`, laid out as sendmail 8.17's
//! `savemail.c`/`errbody` lays it out), and, through [`crate::runner::notices::settle`], those messages committed to
//! the queue with sendmail's log lines before the original's recipients are marked
//! `reported`. A crash between the two gives at worst a second notice, never none.
//!
//! Who gets a notice (sendmail's `returntosender` / `savemail`):
//! * a failure goes to the envelope sender; for a null sender `<>` it goes to postmaster
//!   (`DoubleBounceAddress`, default `postmaster`) as a "Postmaster notify";
//! * a failed DSN of ours is a double bounce: postmaster is told; a failed notice to
//!   postmaster is dropped and logged — never a bounce loop;
//! * `NOTIFY=NEVER` gives nothing, `NOTIFY=SUCCESS` a return receipt, `NOTIFY` without
//!   `DELAY` no delay warning; `RET=HDRS` returns headers only (receipts always do);
//!   `ENVID` comes back as `Original-Envelope-Id`, `ORCPT` as `Original-Recipient`.
//!
//! Timeouts (op §4.1.3): `Timeout.queuewarn` sends one delay warning per message (kept in
//! the queue as [`Notices::warned`]); `Timeout.queuereturn` fails what is still pending.
//! Both by the message's precedence class (the cf's `P` lines on its `Precedence:` header:
//! above 0 `urgent`, below 0 `non-urgent`) and `dsn` for our own notices.
//!
//! RFC 2852 (`BY=`, kept as [`crate::queue::DeliverBy`]), as sendmail's `envelope.c`,
//! `deliver.c` and `savemail.c` do it: `R` past its deadline fails what is pending with
//! `5.4.7` (`delivery time expired Ns`) and no further attempt; `N` past it gives the one
//! delay notice (`Warning: Delivery time (Ns) exceeded`; `Timeout.queuewarn` wins when both
//! are due); `N` handed to a next hop without DELIVERBY, and `T`, are reported with the
//! success notices ([`record_attempt`]); every notice about such a message says
//! `Deliver-By-Date:`.
//!
//! Sources: RFC 3464 (the report), RFC 3461 (NOTIFY, RET, ENVID, ORCPT), RFC 3834
//! (`Auto-Submitted`); samples recorded from sendmail 8.17 in `tests/fixtures/dsn/`.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Local};

use crate::config::Config;
use crate::config::macros::{MacroLookup, rfc5322_date};
use crate::config::options::PerPrecedence;
use crate::deliver::Outcome;
use crate::queue::{
    ByMode, ByRelayed, DeliverBy, DeliveryState, Envelope, Message, Notices, Origin, QueueId,
    Recipient, Ret,
};

/// What one notice reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Permanent failures, or recipients still pending at `Timeout.queuereturn`.
    Failure,
    /// Still undelivered at `Timeout.queuewarn`.
    Delay,
    /// Delivered, for `NOTIFY=SUCCESS` (a return receipt).
    Success,
}

/// Where a notice goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressee {
    /// The original's envelope sender.
    Sender(String),
    /// Postmaster (`DoubleBounceAddress`): for a `<>` sender, or a DSN of ours that failed.
    Postmaster(String),
    /// Nobody: a failed notice to postmaster; logged and dropped.
    Dropped,
}

/// One notice that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: Kind,
    pub to: Addressee,
    /// Indexes into the original's recipients.
    pub recipients: Vec<usize>,
}

/// What [`plan`] found for a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub notices: Vec<Notice>,
    /// Final recipients that need no notice (`NOTIFY=NEVER`, delivered without SUCCESS):
    /// marked reported along with the notices.
    pub quiet: Vec<usize>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.notices.is_empty() && self.quiet.is_empty()
    }
}

/// What the notices take from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `$j`: `Reporting-MTA`, `MAILER-DAEMON@$j`, the boundary.
    pub host: String,
    /// `DoubleBounceAddress`, default `postmaster`.
    pub postmaster: String,
    pub queuewarn: PerPrecedence,
    pub queuereturn: PerPrecedence,
    /// The cf's `P` lines (`Pbulk=-60`).
    pub priorities: Vec<(String, i32)>,
    /// `UseErrorsTo`: a failure notice also goes to the addresses of the original's
    /// `Errors-To:` header.
    pub use_errors_to: bool,
    /// `RrtImpliesDsn`: a `Return-Receipt-To:` header asks for a return receipt (to the
    /// envelope sender) for every recipient without a `NOTIFY` of its own.
    pub rrt_implies_dsn: bool,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        let host = cfg
            .macro_value("j")
            .map(|v| v.into_owned())
            .unwrap_or_else(|| cfg.host.fqdn.clone());
        let postmaster = cfg
            .options
            .unsupported
            .iter()
            .rev()
            .find(|o| o.name.eq_ignore_ascii_case("DoubleBounceAddress"))
            .map(|o| o.value.trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "postmaster".to_string());
        Settings {
            host,
            postmaster,
            queuewarn: cfg.options.timeouts.queuewarn,
            queuereturn: cfg.options.timeouts.queuereturn,
            priorities: cfg.priorities.clone(),
            use_errors_to: cfg.options.use_errors_to,
            rrt_implies_dsn: cfg.options.rrt_implies_dsn,
        }
    }

    /// The timeout of `per` that applies to `msg` (op §4.1.3).
    pub fn timeout_for(&self, per: &PerPrecedence, msg: &Message) -> Duration {
        if msg.envelope.notices.origin != Origin::Received {
            return per.dsn;
        }
        match self.class(msg) {
            c if c > 0 => per.urgent,
            c if c < 0 => per.non_urgent,
            _ => per.normal,
        }
    }

    /// The precedence class of the message's `Precedence:` header (0 without one, or for
    /// a name the cf does not list).
    pub fn class(&self, msg: &Message) -> i32 {
        precedence_class(&self.priorities, &msg.body)
    }
}

/// sendmail's `e_class`: the value the cf's `P` lines give the first word of the message's
/// `Precedence:` header (0 without one, or for a name the cf does not list).
pub fn precedence_class(priorities: &[(String, i32)], message: &[u8]) -> i32 {
    let Some(value) = header(message, "precedence") else {
        return 0;
    };
    let word = value.split_whitespace().next().unwrap_or("");
    priorities
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(word))
        .map_or(0, |(_, v)| *v)
}

/// What the next hop that took a message offered, as far as notices care.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peer {
    /// DSN: it was handed `NOTIFY` and reports success itself (RFC 3461 §5.2.2).
    pub dsn: bool,
    /// DELIVERBY: it was handed `BY=` and keeps the deadline itself (RFC 2852).
    pub deliverby: bool,
}

/// Notes what an attempt learnt about `r` that a notice reports: the `dsn=` code and the
/// remote host (the first word of `relay=`). A next hop that offered DSN was handed
/// `NOTIFY` and reports success itself: nothing is left for us — unless RFC 2852 asks for
/// a notice of our own (sendmail's `deliver.c`, after the `NOTIFY=SUCCESS` cases): `BY=…;N`
/// delivered to a next hop without DELIVERBY (`Deliver-By notify: relayed`), or `BY=…T`
/// (`Deliver-By trace: relayed`), each for an envelope recipient whose NOTIFY is not NEVER.
pub fn record_attempt(
    r: &mut Recipient,
    outcome: &Outcome,
    relay: Option<&str>,
    peer: Peer,
    by: Option<DeliverBy>,
) {
    r.dsn_code = Some(outcome.dsn().to_string());
    r.remote_mta = relay
        .and_then(|h| h.split_whitespace().next())
        .map(|h| h.trim_end_matches('.').to_string());
    if !matches!(outcome, Outcome::Delivered { .. }) {
        return;
    }
    let primary = r.expanded.is_none();
    let success_case = r.notify.success && (r.remote_mta.is_none() || !peer.dsn);
    r.by_relayed = match by {
        _ if success_case || !primary || r.notify.never => None,
        Some(b) if b.mode == ByMode::Notify && !peer.deliverby => Some(ByRelayed::Notify),
        Some(b) if b.trace => Some(ByRelayed::Trace),
        _ => None,
    };
    if peer.dsn && r.by_relayed.is_none() {
        r.reported = true;
    }
}

/// True once `msg` may leave the queue: every recipient delivered or failed, and reported.
pub fn finished(msg: &Message) -> bool {
    msg.envelope
        .recipients
        .iter()
        .all(|r| r.state != DeliveryState::Pending && r.reported)
}

/// True when `msg` has outlived `Timeout.queuereturn`.
pub fn expired(settings: &Settings, msg: &Message, now: SystemTime) -> bool {
    let limit = settings.timeout_for(&settings.queuereturn, msg);
    age(msg, now) >= limit
}

fn age(msg: &Message, now: SystemTime) -> Duration {
    now.duration_since(msg.envelope.arrival).unwrap_or_default()
}

/// The enhanced code of a recipient failed by its `BY=…;R` deadline (RFC 2852 §4.1.4).
pub const DELIVER_BY_EXPIRED_DSN: &str = "5.4.7";

/// The seconds of `msg`'s `BY=…;R` once its deadline has passed at `now`.
pub fn deliver_by_expired(msg: &Message, now: SystemTime) -> Option<i64> {
    let env = &msg.envelope;
    let by = env.params.deliver_by?;
    (by.mode == ByMode::Return && by.seconds > 0 && now >= by.deadline(env.arrival))
        .then_some(by.seconds)
}

/// RFC 2852 `BY=…;R` (sendmail's `sendenvelope`/`dropenvelope`): once the deadline has
/// passed, no delivery is tried and every recipient still pending fails with `5.4.7` and
/// sendmail's words, `delivery time expired 120s`; returns whether any changed.
pub fn expire_deliver_by(msg: &mut Message, now: SystemTime) -> bool {
    let Some(seconds) = deliver_by_expired(msg, now) else {
        return false;
    };
    let mut changed = false;
    for r in &mut msg.envelope.recipients {
        if r.state == DeliveryState::Pending {
            r.state = DeliveryState::Failed;
            r.status = Some(format!("delivery time expired {seconds}s"));
            r.dsn_code = Some(DELIVER_BY_EXPIRED_DSN.into());
            r.remote_mta = None;
            changed = true;
        }
    }
    changed
}

/// The `BY=…;N` deadline a delay notice reports now (sendmail's `MSG_WARN_BY`): passed, and
/// `Timeout.queuewarn` (which takes precedence) not yet.
fn warn_by(settings: &Settings, msg: &Message, now: SystemTime) -> Option<i64> {
    let env = &msg.envelope;
    let by = env.params.deliver_by?;
    let warn = settings.timeout_for(&settings.queuewarn, msg);
    let queuewarn_due = !warn.is_zero() && age(msg, now) >= warn;
    (by.mode == ByMode::Notify
        && by.seconds > 0
        && now >= by.deadline(env.arrival)
        && !queuewarn_due)
        .then_some(by.seconds)
}

/// Fails the recipients still pending once `msg` has outlived `Timeout.queuereturn` (their
/// last status stays, so the notice can say why) or its `BY=…;R` deadline
/// ([`expire_deliver_by`]); returns whether any changed.
pub fn expire(settings: &Settings, msg: &mut Message, now: SystemTime) -> bool {
    if expire_deliver_by(msg, now) {
        return true;
    }
    if !expired(settings, msg, now) {
        return false;
    }
    let mut changed = false;
    for r in &mut msg.envelope.recipients {
        if r.state == DeliveryState::Pending {
            r.state = DeliveryState::Failed;
            changed = true;
        }
    }
    changed
}

/// A failed recipient that failed by running out of time, not by a permanent answer.
pub fn failed_by_expiry(r: &Recipient) -> bool {
    r.state == DeliveryState::Failed
        && match &r.dsn_code {
            Some(code) => code.starts_with('4'),
            None => r
                .status
                .as_deref()
                .is_none_or(|s| s.starts_with("Deferred")),
        }
}

/// The notices due for `msg` now (pure; run [`expire`] first).
pub fn plan(settings: &Settings, msg: &Message, now: SystemTime) -> Plan {
    let env = &msg.envelope;
    let mut plan = Plan::default();
    let (mut failed, mut delivered) = (Vec::new(), Vec::new());
    // sendmail (the oracle, `-O RrtImpliesDsn=true`): `Return-Receipt-To:` gives the
    // envelope sender a return receipt, as NOTIFY=SUCCESS would.
    let receipt_asked =
        settings.rrt_implies_dsn && header(&msg.body, "return-receipt-to").is_some();
    for (i, r) in env.recipients.iter().enumerate() {
        let n = &r.notify;
        let success = n.success || (receipt_asked && !(n.never || n.failure || n.delay));
        match r.state {
            DeliveryState::Pending => {}
            _ if r.reported => {}
            DeliveryState::Failed if wants(r, |n| n.failure) => failed.push(i),
            DeliveryState::Done if success && !r.notify.never => delivered.push(i),
            DeliveryState::Done if r.by_relayed.is_some() => delivered.push(i),
            _ => plan.quiet.push(i),
        }
    }
    if !failed.is_empty() {
        plan.notices.push(Notice {
            kind: Kind::Failure,
            to: failure_addressee(settings, env),
            recipients: failed,
        });
    }
    if !delivered.is_empty() && !env.sender.is_empty() {
        plan.notices.push(Notice {
            kind: Kind::Success,
            to: Addressee::Sender(env.sender.clone()),
            recipients: delivered,
        });
    }
    if let Some(n) = delay_notice(settings, msg, now) {
        plan.notices.push(n);
    }
    plan
}

/// NOTIFY allows this kind: given and listing it, or not given at all (the default is
/// FAILURE and DELAY, RFC 3461 §4.1).
fn wants(r: &Recipient, pick: impl Fn(&crate::queue::Notify) -> bool) -> bool {
    let n = &r.notify;
    let given = n.never || n.success || n.failure || n.delay;
    !n.never && (!given || pick(n))
}

fn failure_addressee(settings: &Settings, env: &Envelope) -> Addressee {
    match env.notices.origin {
        Origin::Postmaster => Addressee::Dropped,
        Origin::Dsn => Addressee::Postmaster(settings.postmaster.clone()),
        Origin::Received if env.sender.is_empty() => {
            Addressee::Postmaster(settings.postmaster.clone())
        }
        Origin::Received => Addressee::Sender(env.sender.clone()),
    }
}

/// sendmail warns once, only senders who can be written to, and not for bulk (class < 0).
fn delay_notice(settings: &Settings, msg: &Message, now: SystemTime) -> Option<Notice> {
    let env = &msg.envelope;
    let warn = settings.timeout_for(&settings.queuewarn, msg);
    let due = (!warn.is_zero() && age(msg, now) >= warn) || warn_by(settings, msg, now).is_some();
    let eligible = !env.notices.warned
        && due
        && env.notices.origin == Origin::Received
        && !env.sender.is_empty()
        && settings.class(msg) >= 0;
    if !eligible {
        return None;
    }
    let pending: Vec<usize> = env
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.state == DeliveryState::Pending && r.tries > 0 && wants(r, |n| n.delay))
        .map(|(i, _)| i)
        .collect();
    (!pending.is_empty()).then(|| Notice {
        kind: Kind::Delay,
        to: Addressee::Sender(env.sender.clone()),
        recipients: pending,
    })
}

/// Marks in `msg` what `plan` reported (after its notices are committed).
pub fn mark(msg: &mut Message, plan: &Plan) {
    let rs = &mut msg.envelope.recipients;
    for n in &plan.notices {
        match n.kind {
            Kind::Delay => msg.envelope.notices.warned = true,
            Kind::Failure | Kind::Success => {
                for &i in &n.recipients {
                    rs[i].reported = true;
                }
            }
        }
    }
    for &i in &plan.quiet {
        rs[i].reported = true;
    }
}

/// Everything [`build`] needs besides the original.
#[derive(Debug, Clone)]
pub struct Build<'a> {
    pub settings: &'a Settings,
    pub notice: &'a Notice,
    /// The notice's own queue id.
    pub id: QueueId,
    pub now: SystemTime,
}

/// The notice as a message for the queue: null sender, one recipient, LF line ends.
pub fn build(b: &Build<'_>, original: &Message) -> Message {
    let to = match &b.notice.to {
        Addressee::Sender(a) | Addressee::Postmaster(a) => a.clone(),
        Addressee::Dropped => String::new(),
    };
    let mut env = Envelope::new(b.id.clone(), "");
    env.arrival = b.now;
    env.recipients = vec![Recipient::new(to.clone())];
    let errors_to = errors_to(b, original);
    env.recipients
        .extend(errors_to.iter().map(|a| Recipient::new(a.clone())));
    env.notices = Notices {
        origin: match b.notice.to {
            Addressee::Sender(_) => Origin::Dsn,
            _ => Origin::Postmaster,
        },
        warned: false,
    };
    env.client.name = Some("localhost".to_string());
    let msgid = crate::queue::id::message_id(b.now.into(), b.id.as_str(), &b.settings.host);
    env.msgid = Some(msgid.clone());
    let body = compose(b, original, &to, &errors_to, &msgid);
    Message {
        envelope: env,
        body: body.into_bytes(),
    }
}

fn date(t: SystemTime) -> String {
    rfc5322_date(&DateTime::<Local>::from(t))
}

/// `UseErrorsTo`: the addresses of the original's `Errors-To:` header, for a failure
/// notice to the sender (the oracle sends one notice to both, a `To:` line for each, the
/// sender's first; a `From:`-style `Name <addr>` gives `addr`).
fn errors_to(b: &Build<'_>, original: &Message) -> Vec<String> {
    if !b.settings.use_errors_to
        || b.notice.kind != Kind::Failure
        || !matches!(b.notice.to, Addressee::Sender(_))
    {
        return Vec::new();
    }
    let Some(value) = header(&original.body, "errors-to") else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for a in crate::rules::deliver::split_addresses(value.as_bytes()) {
        let a = String::from_utf8_lossy(&a).into_owned();
        let a = match (a.rfind('<'), a.rfind('>')) {
            (Some(l), Some(r)) if l < r => a[l + 1..r].trim().to_string(),
            _ => a,
        };
        if !a.is_empty() && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn compose(
    b: &Build<'_>,
    original: &Message,
    to: &str,
    errors_to: &[String],
    msgid: &str,
) -> String {
    let s = b.settings;
    let unix = b
        .now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let boundary = format!("{}.{unix}/{}", b.id, s.host);
    let (subject, auto) = subject(b, original);
    let to_header = match b.notice.to {
        Addressee::Postmaster(_) => to.to_string(),
        _ => format!("<{to}>"),
    };
    let mut m = String::new();
    m.push_str(&format!(
        "Received: from localhost (localhost)\n\tby {host} ({v}/{v}) id {id};\n\t{date}\n",
        host = s.host,
        v = crate::VERSION,
        id = b.id,
        date = date(b.now)
    ));
    m.push_str(&format!("Date: {}\n", date(b.now)));
    m.push_str(&format!(
        "From: Mail Delivery Subsystem <MAILER-DAEMON@{}>\n",
        s.host
    ));
    m.push_str(&format!("Message-Id: {msgid}\n"));
    m.push_str(&format!("To: {to_header}\n"));
    for a in errors_to {
        m.push_str(&format!("To: <{a}>\n"));
    }
    m.push_str("MIME-Version: 1.0\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{boundary}\"\n"
    ));
    m.push_str(&format!("Subject: {subject}\n"));
    m.push_str(&format!("Auto-Submitted: auto-generated ({auto})\n"));
    m.push_str("\nThis is a MIME-encapsulated message\n\n");
    m.push_str(&format!("--{boundary}\n\n"));
    m.push_str(&human_part(b, original));
    m.push_str(&format!(
        "\n--{boundary}\nContent-Type: message/delivery-status\n\n"
    ));
    m.push_str(&status_part(b, original));
    m.push_str(&format!("\n--{boundary}\n"));
    m.push_str(&original_part(b.notice.kind, original));
    m.push_str(&format!("\n--{boundary}--\n"));
    m
}

/// `Subject:` and the `Auto-Submitted:` reason, as sendmail words them.
fn subject(b: &Build<'_>, original: &Message) -> (String, &'static str) {
    match (b.notice.kind, &b.notice.to) {
        (Kind::Delay, _) => (delay_reason(b, original), "warning-timeout"),
        (Kind::Success, _) => ("Return receipt".to_string(), "return-receipt"),
        (Kind::Failure, Addressee::Sender(_)) => (
            "Returned mail: see transcript for details".to_string(),
            "failure",
        ),
        (Kind::Failure, _) => (
            "Postmaster notify: see transcript for details".to_string(),
            "postmaster-notification",
        ),
    }
}

/// The subject of a delay notice and what the log says of it: `Timeout.queuewarn`'s, or
/// for a passed `BY=…;N` deadline sendmail's `Warning: Delivery time (60s) exceeded`.
fn delay_reason(b: &Build<'_>, original: &Message) -> String {
    let s = b.settings;
    match warn_by(s, original, b.now) {
        Some(by) => format!("Warning: Delivery time ({by}s) exceeded"),
        None => format!(
            "Warning: could not send message for past {}",
            words(s.timeout_for(&s.queuewarn, original))
        ),
    }
}

/// A time interval in sendmail's words (`pintvl`): `4 hours`, `5 days`, `1 day, 2 hours`.
pub fn words(d: Duration) -> String {
    let mut s = d.as_secs();
    let mut parts = Vec::new();
    for (unit, len) in [
        ("week", 7 * 86_400),
        ("day", 86_400),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ] {
        let n = s / len;
        s %= len;
        if n > 0 {
            parts.push(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }));
        }
    }
    if parts.is_empty() {
        "0 seconds".to_string()
    } else {
        parts.join(", ")
    }
}

fn recipients<'a>(
    b: &'a Build<'_>,
    original: &'a Message,
) -> impl Iterator<Item = (usize, &'a Recipient)> {
    b.notice
        .recipients
        .iter()
        .map(move |&i| (i, &original.envelope.recipients[i]))
}

/// The reason text of a status: the remote's reply for a deferral (`Deferred: 451 …` →
/// `451 …`), else the status as logged.
fn reason(r: &Recipient) -> String {
    let stat = r.status.as_deref().unwrap_or("");
    stat.strip_prefix("Deferred: ").unwrap_or(stat).to_string()
}

/// sendmail's short form for the log: the text after the reply code, enhanced code and
/// `<addr>...` (`550 5.1.1 <a@b>... User unknown` → `User unknown`).
pub fn short_reason(stat: &str) -> &str {
    let mut rest = stat.trim();
    if let Some((code, tail)) = rest.split_once(' ')
        && code.len() == 3
        && code.bytes().all(|c| c.is_ascii_digit())
    {
        rest = tail;
        if let Some((enh, tail)) = rest.split_once(' ')
            && enh.split('.').count() == 3
            && enh
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
        {
            rest = tail;
        }
    }
    if let Some((_, tail)) = rest.split_once("... ") {
        rest = tail;
    }
    rest
}

fn received_from(original: &Message) -> String {
    let c = &original.envelope.client;
    match (&c.name, &c.addr) {
        (Some(n), Some(a)) => format!("{n} [{a}]"),
        (Some(n), None) => n.clone(),
        (None, Some(a)) => format!("[{a}]"),
        (None, None) => "localhost".to_string(),
    }
}

fn human_part(b: &Build<'_>, original: &Message) -> String {
    let env = &original.envelope;
    let mut t = String::new();
    if b.notice.kind == Kind::Delay {
        t.push_str("    **********************************************\n");
        t.push_str("    **      THIS IS A WARNING MESSAGE ONLY      **\n");
        t.push_str("    **  YOU DO NOT NEED TO RESEND YOUR MESSAGE  **\n");
        t.push_str("    **********************************************\n\n");
    }
    t.push_str(&format!(
        "The original message was received at {}\nfrom {}\n",
        date(env.arrival),
        received_from(original)
    ));
    if matches!(b.notice.to, Addressee::Postmaster(_)) {
        t.push_str(&format!("with id {}\n", env.id));
    }
    t.push('\n');
    match b.notice.kind {
        Kind::Failure => {
            t.push_str("   ----- The following addresses had permanent fatal errors -----\n");
            for (_, r) in recipients(b, original) {
                t.push_str(&format!("<{}>\n    (reason: {})\n", r.address, reason(r)));
            }
            t.push('\n');
        }
        Kind::Success => {
            t.push_str(
                "   ----- The following addresses had successful delivery notifications -----\n",
            );
            for (_, r) in recipients(b, original) {
                let how = match (r.by_relayed, &r.remote_mta) {
                    (Some(ByRelayed::Notify), _) => "Deliver-By notify: relayed",
                    (Some(ByRelayed::Trace), _) => "Deliver-By trace: relayed",
                    (None, Some(_)) => "relayed to non-DSN-aware mailer",
                    (None, None) => "successfully delivered to mailbox",
                };
                t.push_str(&format!("<{}>  ({how})\n", r.address));
            }
            t.push('\n');
        }
        Kind::Delay => {}
    }
    t.push_str("   ----- Transcript of session follows -----\n");
    for (_, r) in recipients(b, original) {
        t.push_str(&transcript(b.notice.kind, r));
    }
    let s = b.settings;
    match b.notice.kind {
        Kind::Delay => {
            let warn = s.timeout_for(&s.queuewarn, original);
            let ret = s.timeout_for(&s.queuereturn, original);
            match warn_by(s, original, b.now) {
                Some(by) => t.push_str(&format!("Warning: Delivery time ({by}s) exceeded\n")),
                None => t.push_str(&format!(
                    "Warning: message still undelivered after {}\n",
                    words(warn)
                )),
            }
            t.push_str(&format!(
                "Will keep trying until message is {} old\n",
                words(ret)
            ));
        }
        Kind::Failure
            if recipients(b, original)
                .any(|(_, r)| r.dsn_code.as_deref() == Some(DELIVER_BY_EXPIRED_DSN))
                && deliver_by_expired(original, b.now).is_some() =>
        {
            let by = deliver_by_expired(original, b.now).unwrap_or_default();
            t.push_str(&format!(
                "Delivery time ({by}s) expired\nMessage will be deleted from queue\n"
            ));
        }
        Kind::Failure if recipients(b, original).any(|(_, r)| failed_by_expiry(r)) => {
            let ret = s.timeout_for(&s.queuereturn, original);
            t.push_str(&format!(
                "Message could not be delivered for {}\nMessage will be deleted from queue\n",
                words(ret)
            ));
        }
        _ => {}
    }
    t
}

/// What we know of the session for one recipient (we keep its last reply, not the whole
/// dialogue that sendmail's transcript file holds).
fn transcript(kind: Kind, r: &Recipient) -> String {
    let stat = r.status.as_deref().unwrap_or("");
    match (kind, &r.remote_mta) {
        // sendmail's transcript words, `by` in lower case for notify (deliver.c).
        (Kind::Success, _) if r.by_relayed == Some(ByRelayed::Notify) => {
            format!("<{}>... Deliver-by notify: relayed\n", r.address)
        }
        (Kind::Success, _) if r.by_relayed == Some(ByRelayed::Trace) => {
            format!("<{}>... Deliver-By trace: relayed\n", r.address)
        }
        (Kind::Success, Some(_)) => {
            format!(
                "<{}>... relayed; expect no further notifications\n",
                r.address
            )
        }
        (Kind::Success, None) => format!("<{}>... Successfully delivered\n", r.address),
        (Kind::Failure, Some(mta)) if !stat.starts_with("Deferred") => {
            format!("... while talking to {mta}:\n<<< {stat}\n{stat}\n")
        }
        (_, Some(mta)) => format!(
            "... while talking to {mta}:\n<<< {}\n<{}>... {stat}\n",
            reason(r),
            r.address
        ),
        (_, None) => format!("<{}>... {stat}\n", r.address),
    }
}

fn status_part(b: &Build<'_>, original: &Message) -> String {
    let env = &original.envelope;
    let mut t = String::new();
    if let Some(envid) = &env.params.envid {
        t.push_str(&format!("Original-Envelope-Id: {envid}\n"));
    }
    t.push_str(&format!("Reporting-MTA: dns; {}\n", b.settings.host));
    let c = &env.client;
    let from = c
        .name
        .clone()
        .or_else(|| c.addr.as_ref().map(|a| format!("[{a}]")));
    if let Some(from) = from {
        t.push_str(&format!("Received-From-MTA: DNS; {from}\n"));
    }
    t.push_str(&format!("Arrival-Date: {}\n", date(env.arrival)));
    // RFC 2852 §5: when the message had BY=, the deadline (sendmail's errbody).
    if let Some(by) = env.params.deliver_by {
        t.push_str(&format!(
            "Deliver-By-Date: {}\n",
            date(by.deadline(env.arrival))
        ));
    }
    for (_, r) in recipients(b, original) {
        t.push('\n');
        t.push_str(&recipient_fields(b, original, r));
    }
    t
}

fn recipient_fields(b: &Build<'_>, original: &Message, r: &Recipient) -> String {
    let mut t = String::new();
    if let Some(orcpt) = &r.orcpt {
        t.push_str(&format!("Original-Recipient: {orcpt}\n"));
    }
    let addr = if r.address.contains('@') {
        r.address.clone()
    } else {
        format!("{}@{}", r.address, b.settings.host)
    };
    t.push_str(&format!("Final-Recipient: RFC822; {addr}\n"));
    t.push_str(&format!("X-Actual-Recipient: rfc822; {addr}\n"));
    let (action, status) = match b.notice.kind {
        Kind::Failure if failed_by_expiry(r) => ("failed", "4.4.7".to_string()),
        Kind::Failure => ("failed", code_or(r, "5.0.0")),
        Kind::Delay => ("delayed", code_or(r, "4.0.0")),
        Kind::Success if r.by_relayed == Some(ByRelayed::Trace) => {
            ("relayed (Deliver-By trace mode)", "2.0.0".to_string())
        }
        Kind::Success if r.by_relayed == Some(ByRelayed::Notify) => {
            ("relayed (Deliver-By notify mode)", "2.0.0".to_string())
        }
        Kind::Success if r.remote_mta.is_some() => {
            ("relayed (to non-DSN-aware mailer)", "2.0.0".to_string())
        }
        Kind::Success => ("delivered (to mailbox)", "2.1.5".to_string()),
    };
    t.push_str(&format!("Action: {action}\nStatus: {status}\n"));
    if let Some(mta) = &r.remote_mta {
        t.push_str(&format!("Remote-MTA: DNS; {mta}\n"));
        let diag = match b.notice.kind {
            Kind::Success => "250 2.0.0 Ok".to_string(),
            _ => reason(r),
        };
        if !diag.is_empty() {
            t.push_str(&format!("Diagnostic-Code: SMTP; {diag}\n"));
        }
    }
    t.push_str(&format!("Last-Attempt-Date: {}\n", date(b.now)));
    if b.notice.kind == Kind::Delay {
        let s = b.settings;
        let until = original.envelope.arrival + s.timeout_for(&s.queuereturn, original);
        t.push_str(&format!("Will-Retry-Until: {}\n", date(until)));
    }
    t
}

fn code_or(r: &Recipient, default: &str) -> String {
    r.dsn_code.clone().unwrap_or_else(|| default.to_string())
}

/// The original, whole (`message/rfc822`) or its headers (`text/rfc822-headers`: RET=HDRS,
/// and always for a return receipt), after sendmail's `Return-Path:`.
fn original_part(kind: Kind, original: &Message) -> String {
    let env = &original.envelope;
    let headers_only = kind == Kind::Success || env.params.ret == Some(Ret::Hdrs);
    let (end, _) = crate::headers::scan(&original.body);
    let mut t = String::new();
    let text = if headers_only {
        t.push_str("Content-Type: text/rfc822-headers\n\n");
        &original.body[..end]
    } else {
        t.push_str("Content-Type: message/rfc822\n\n");
        &original.body[..]
    };
    t.push_str(&format!("Return-Path: <{}>\n", env.sender));
    t.push_str(&String::from_utf8_lossy(text));
    if !t.ends_with('\n') {
        t.push('\n');
    }
    t
}

/// The value of the first header `name` (lower case) in `body`.
fn header(body: &[u8], name: &str) -> Option<String> {
    crate::headers::find(crate::headers::split(body).0, name)
}

/// The word sendmail's log puts before a notice's reason (`returntosender`).
pub fn log_word(notice: &Notice, original: &Message) -> &'static str {
    match (&notice.to, notice.kind) {
        (Addressee::Postmaster(_), _) if original.envelope.notices.origin == Origin::Dsn => {
            "return to sender"
        }
        (Addressee::Postmaster(_), _) => "postmaster notify",
        (_, Kind::Delay) => "sender notify",
        (_, Kind::Failure) if original.envelope.notices.warned => "sender notify",
        _ => "DSN",
    }
}

/// The reason sendmail logs after `DSN:` (the first recipient's short status, or the
/// subject-like phrase for timeouts and receipts).
pub fn log_reason(b: &Build<'_>, original: &Message) -> String {
    let s = b.settings;
    match b.notice.kind {
        Kind::Delay => delay_reason(b, original),
        Kind::Success => "Return receipt".to_string(),
        Kind::Failure => match recipients(b, original).next() {
            Some((_, r)) if failed_by_expiry(r) => format!(
                "Cannot send message for {}",
                words(s.timeout_for(&s.queuereturn, original))
            ),
            Some((_, r)) => short_reason(r.status.as_deref().unwrap_or("")).to_string(),
            None => String::new(),
        },
    }
}

#[cfg(test)]
mod tests;
