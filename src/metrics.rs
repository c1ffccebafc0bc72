//! The daemon's live counters, and their text in the Prometheus exposition format.
//!
//! In: events from the places that already count for `mailstats` and the mail log — a
//! connection accepted by daemon `Name`, a session opened and closed, its messages, rejected
//! recipients, TLS handshakes and AUTH failures ([`DaemonCounters`]); remote delivery's TLS
//! handshakes; a recipient delivered,
//! deferred or bounced by a mailer, with its delay since arrival ([`MailerCounters`]); the
//! journal's batch sizes ([`Histogram`], fed by the queue's committer). Out: [`Metrics::render`],
//! the text `/metrics` serves (format 0.0.4), with the queue's gauges read at scrape time
//! ([`QueueGauges`]).
//!
//! Counting is lock-free (atomics); a lock is taken only to find a label's counters the first
//! time (a daemon or mailer name). The counters live as long as the process ([`global`]), so a
//! SIGHUP keeps them, and they start at zero with each daemon start (unlike the `StatusFile`,
//! which persists). This module sits at the bottom of the layers and names nothing above it.
//!
//! Names follow `postfix_exporter` where it has the same quantity (`smtpd_connects_total`,
//! `smtpd_tls_connections_total`, `smtpd_sasl_authentication_failures_total`,
//! `delivery_delay_seconds` with its buckets), prefixed `sendmail_`; every name is listed in
//! the README.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

/// Upper bounds of the delivery delay buckets, in seconds: `postfix_exporter`'s, so that
/// dashboards made for it read ours (1 ms … 2 days).
pub const DELAY_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 3600.0, 86_400.0, 172_800.0,
];

/// Upper bounds of the journal batch-size buckets (frames per fdatasync).
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A histogram of fixed buckets: a count per bucket (not cumulative; the last one is above
/// every bound) and the sum of the values observed.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    /// The sum, as the bits of an `f64`.
    sum: AtomicU64,
}

/// What a [`Histogram`] held at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [f64],
    /// One count per bound, then the count above the last bound.
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl HistogramSnapshot {
    /// An empty histogram with these bounds.
    pub fn empty(bounds: &'static [f64]) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    /// The number of values observed.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
        }
    }
}

/// One daemon's (`DaemonPortOptions` `Name=`) counters.
#[derive(Debug, Default)]
pub struct DaemonCounters {
    pub connections: AtomicU64,
    /// Sessions in progress (see [`DaemonCounters::session`]).
    pub sessions_open: AtomicU64,
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub rejected_recipients: AtomicU64,
    pub tls_handshakes: AtomicU64,
    pub tls_failures: AtomicU64,
    pub auth_failures: AtomicU64,
}

/// A session in progress: counted in `sessions_open` until dropped.
#[derive(Debug)]
pub struct OpenSession(Arc<DaemonCounters>);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.sessions_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl DaemonCounters {
    /// Counts a connection accepted and its session open, until the guard is dropped.
    pub fn session(self: &Arc<Self>) -> OpenSession {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.sessions_open.fetch_add(1, Ordering::Relaxed);
        OpenSession(self.clone())
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One mailer's delivery counters (per recipient, as the `to=` lines).
#[derive(Debug)]
pub struct MailerCounters {
    pub delivered: AtomicU64,
    pub deferred: AtomicU64,
    pub bounced: AtomicU64,
    /// Seconds from the message's arrival to the recipient's delivery (the `delay=` field).
    pub delay: Histogram,
}

impl Default for MailerCounters {
    fn default() -> Self {
        MailerCounters {
            delivered: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            bounced: AtomicU64::new(0),
            delay: Histogram::new(DELAY_BUCKETS),
        }
    }
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Disposition {
    /// Sent; the seconds since the message arrived.
    Delivered { delay: f64 },
    /// Temporary failure; tried again later.
    Deferred,
    /// Permanent failure (or the queue lifetime ran out): a bounce is due.
    Bounced,
}

/// Every counter of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    daemons: RwLock<BTreeMap<String, Arc<DaemonCounters>>>,
    mailers: RwLock<BTreeMap<String, Arc<MailerCounters>>>,
    /// SMTP sockets accepting connections ([`Metrics::listening`]).
    listeners: AtomicU64,
    /// Remote delivery's STARTTLS handshakes completed, and failed.
    pub smtp_tls_handshakes: AtomicU64,
    pub smtp_tls_failures: AtomicU64,
    /// Local delivery's mailbox group commits: rounds synced, the messages they made
    /// durable, and deliveries now waiting for a mailbox (queued behind its lock).
    pub local_mailbox_syncs: AtomicU64,
    pub local_mailbox_messages: AtomicU64,
    pub local_mailbox_waiting: AtomicU64,
    /// Messages the queue runner took for a delivery attempt (each reads its queue file).
    pub queue_attempts: AtomicU64,
}

/// An SMTP listener accepting: counted until dropped.
#[derive(Debug)]
pub struct Listening(&'static Metrics);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.listeners.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The queue, as the exporter reads it at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueGauges {
    pub messages: u64,
    /// Seconds since the oldest queued message arrived (0 with an empty queue).
    pub oldest_age: f64,
    /// The journal's fdatasyncs (one per batch) and the frames they made durable.
    pub fdatasyncs: u64,
    pub frames: u64,
    /// Frames per fdatasync.
    pub batch_sizes: HistogramSnapshot,
}

/// A per-daemon family: name, type, help, and its counter in [`DaemonCounters`].
type DaemonFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&DaemonCounters) -> &AtomicU64,
);

/// A per-mailer counter family: name, help, and its counter in [`MailerCounters`].
type MailerFamily = (
    &'static str,
    &'static str,
    fn(&MailerCounters) -> &AtomicU64,
);

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// The process's counters.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

fn get_or_insert<T: Default>(map: &RwLock<BTreeMap<String, Arc<T>>>, name: &str) -> Arc<T> {
    if let Some(c) = map.read().unwrap_or_else(|e| e.into_inner()).get(name) {
        return c.clone();
    }
    map.write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.to_string())
        .or_default()
        .clone()
}

impl Metrics {
    /// Daemon `name`'s counters (created at zero the first time).
    pub fn daemon(&self, name: &str) -> Arc<DaemonCounters> {
        get_or_insert(&self.daemons, name)
    }

    /// Mailer `name`'s counters (created at zero the first time).
    pub fn mailer(&self, name: &str) -> Arc<MailerCounters> {
        get_or_insert(&self.mailers, name)
    }

    /// Counts an SMTP listener as accepting until the guard is dropped (an accept loop
    /// holds it).
    pub fn listening(&'static self) -> Listening {
        self.listeners.fetch_add(1, Ordering::Relaxed);
        Listening(self)
    }

    /// SMTP listeners accepting now.
    pub fn listeners(&self) -> u64 {
        self.listeners.load(Ordering::Relaxed)
    }

    /// Counts one recipient's attempt by `mailer`.
    pub fn delivery(&self, mailer: &str, what: Disposition) {
        let m = self.mailer(mailer);
        match what {
            Disposition::Delivered { delay } => {
                m.delivered.fetch_add(1, Ordering::Relaxed);
                m.delay.observe(delay.max(0.0));
            }
            Disposition::Deferred => {
                m.deferred.fetch_add(1, Ordering::Relaxed);
            }
            Disposition::Bounced => {
                m.bounced.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The exposition text: every family with `# HELP` and `# TYPE`, labels escaped.
    pub fn render(&self, queue: &QueueGauges) -> String {
        let mut out = String::new();
        let daemons: Vec<(String, Arc<DaemonCounters>)> = self
            .daemons
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let per_daemon: &[DaemonFamily] = &[
            (
                "sendmail_smtpd_connects_total",
                "counter",
                "Connections accepted, per daemon.",
                |d| &d.connections,
            ),
            (
                "sendmail_smtpd_sessions_open",
                "gauge",
                "SMTP sessions in progress, per daemon.",
                |d| &d.sessions_open,
            ),
            (
                "sendmail_messages_received_total",
                "counter",
                "Messages received and queued, per daemon.",
                |d| &d.messages,
            ),
            (
                "sendmail_received_bytes_total",
                "counter",
                "Body bytes of the messages received, per daemon.",
                |d| &d.bytes,
            ),
            (
                "sendmail_smtpd_recipients_rejected_total",
                "counter",
                "Recipients refused at RCPT, per daemon.",
                |d| &d.rejected_recipients,
            ),
            (
                "sendmail_smtpd_tls_connections_total",
                "counter",
                "TLS handshakes completed (STARTTLS or SMTPS), per daemon.",
                |d| &d.tls_handshakes,
            ),
            (
                "sendmail_smtpd_tls_handshake_failures_total",
                "counter",
                "TLS handshakes that failed, per daemon.",
                |d| &d.tls_failures,
            ),
            (
                "sendmail_smtpd_sasl_authentication_failures_total",
                "counter",
                "AUTH attempts that failed, per daemon.",
                |d| &d.auth_failures,
            ),
        ];
        gauge(
            &mut out,
            "sendmail_smtpd_listeners",
            "SMTP listening sockets accepting connections.",
            self.listeners() as f64,
        );
        for (name, kind, help, get) in per_daemon {
            header(&mut out, name, kind, help);
            for (d, c) in &daemons {
                sample(
                    &mut out,
                    name,
                    &[("daemon", d)],
                    get(c).load(Ordering::Relaxed),
                );
            }
        }
        let mailers: Vec<(String, Arc<MailerCounters>)> = self
            .mailers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let per_mailer: &[MailerFamily] = &[
            (
                "sendmail_messages_delivered_total",
                "Recipients delivered (stat=Sent), per mailer.",
                |m| &m.delivered,
            ),
            (
                "sendmail_messages_deferred_total",
                "Recipient delivery attempts deferred (stat=Deferred), per mailer.",
                |m| &m.deferred,
            ),
            (
                "sendmail_messages_bounced_total",
                "Recipients failed permanently (a bounce is due), per mailer.",
                |m| &m.bounced,
            ),
        ];
        for (name, help, get) in per_mailer {
            header(&mut out, name, "counter", help);
            for (m, c) in &mailers {
                sample(
                    &mut out,
                    name,
                    &[("mailer", m)],
                    get(c).load(Ordering::Relaxed),
                );
            }
        }
        let outbound: [(&str, &str, &AtomicU64); 2] = [
            (
                "sendmail_smtp_tls_connections_total",
                "STARTTLS handshakes completed by remote delivery.",
                &self.smtp_tls_handshakes,
            ),
            (
                "sendmail_smtp_tls_handshake_failures_total",
                "STARTTLS handshakes of remote delivery that failed.",
                &self.smtp_tls_failures,
            ),
        ];
        for (name, help, c) in outbound {
            header(&mut out, name, "counter", help);
            sample(&mut out, name, &[], c.load(Ordering::Relaxed));
        }
        let local: [(&str, &str, &str, &AtomicU64); 4] = [
            (
                "sendmail_queue_attempts_total",
                "counter",
                "Messages the queue runner took for a delivery attempt (each reads its queue file).",
                &self.queue_attempts,
            ),
            (
                "sendmail_local_mailbox_syncs_total",
                "counter",
                "fsyncs of local mailboxes (mbox, Maildir): one per batch of messages to one mailbox.",
                &self.local_mailbox_syncs,
            ),
            (
                "sendmail_local_mailbox_messages_total",
                "counter",
                "Messages made durable in local mailboxes by those fsyncs.",
                &self.local_mailbox_messages,
            ),
            (
                "sendmail_local_mailbox_waiting",
                "gauge",
                "Local deliveries waiting for a mailbox that another delivery is writing.",
                &self.local_mailbox_waiting,
            ),
        ];
        for (name, kind, help, c) in local {
            header(&mut out, name, kind, help);
            sample(&mut out, name, &[], c.load(Ordering::Relaxed));
        }
        let name = "sendmail_delivery_delay_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "Seconds from a message's arrival to a recipient's delivery, per mailer.",
        );
        for (m, c) in &mailers {
            histogram(&mut out, name, &[("mailer", m)], &c.delay.snapshot());
        }
        gauge(
            &mut out,
            "sendmail_queue_messages",
            "Messages in the queue.",
            queue.messages as f64,
        );
        gauge(
            &mut out,
            "sendmail_queue_oldest_message_age_seconds",
            "Seconds since the oldest queued message arrived (0 when the queue is empty).",
            queue.oldest_age,
        );
        let name = "sendmail_journal_fdatasyncs_total";
        header(
            &mut out,
            name,
            "counter",
            "fdatasyncs of the queue journal (one per batch of commits).",
        );
        sample(&mut out, name, &[], queue.fdatasyncs);
        let name = "sendmail_journal_frames_total";
        header(
            &mut out,
            name,
            "counter",
            "Frames (commits, updates, removals) made durable by those fdatasyncs.",
        );
        sample(&mut out, name, &[], queue.frames);
        let name = "sendmail_journal_batch_size";
        header(
            &mut out,
            name,
            "histogram",
            "Frames made durable per fdatasync of the queue journal.",
        );
        histogram(&mut out, name, &[], &queue.batch_sizes);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, "gauge", help);
    sample(out, name, &[], value);
}

/// One sample line; label values escaped as the format says (`\\`, `\"`, `\n`).
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// `_bucket` lines (cumulative, `le` ascending, then `+Inf`), `_sum` and `_count`.
fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0;
    let les: Vec<String> = h
        .bounds
        .iter()
        .map(|b| b.to_string())
        .chain(std::iter::once("+Inf".to_string()))
        .collect();
    for (le, n) in les.iter().zip(&h.counts) {
        cumulative += n;
        let mut l = labels.to_vec();
        l.push(("le", le));
        sample(out, &bucket, &l, cumulative);
    }
    sample(out, &format!("{name}_sum"), labels, h.sum);
    sample(out, &format!("{name}_count"), labels, cumulative);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_queue() -> QueueGauges {
        QueueGauges {
            messages: 0,
            oldest_age: 0.0,
            fdatasyncs: 0,
            frames: 0,
            batch_sizes: HistogramSnapshot::empty(BATCH_BUCKETS),
        }
    }

    #[test]
    fn a_histogram_counts_each_value_in_its_bucket_and_renders_cumulatively() {
        let h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 1.0, 3.0, 11.0, 20.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.counts, [2, 1, 2]);
        assert_eq!(s.sum, 35.5);
        let mut out = String::new();
        histogram(&mut out, "x", &[("mailer", "local")], &s);
        assert_eq!(
            out,
            "x_bucket{mailer=\"local\",le=\"1\"} 2\n\
             x_bucket{mailer=\"local\",le=\"10\"} 3\n\
             x_bucket{mailer=\"local\",le=\"+Inf\"} 5\n\
             x_sum{mailer=\"local\"} 35.5\n\
             x_count{mailer=\"local\"} 5\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.daemon("MTA \"odd\"\\\nname").session();
        let text = m.render(&empty_queue());
        assert!(
            text.contains(
                "sendmail_smtpd_connects_total{daemon=\"MTA \\\"odd\\\"\\\\\\nname\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn sessions_open_count_down_when_the_session_ends() {
        let m = Metrics::default();
        let d = m.daemon("MTA");
        let s = d.session();
        assert_eq!(d.sessions_open.load(Ordering::Relaxed), 1);
        drop(s);
        assert_eq!(d.sessions_open.load(Ordering::Relaxed), 0);
        assert_eq!(d.connections.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn deliveries_count_per_mailer_with_their_delay() {
        let m = Metrics::default();
        m.delivery("local", Disposition::Delivered { delay: 0.5 });
        m.delivery("relay", Disposition::Deferred);
        m.delivery("relay", Disposition::Bounced);
        let text = m.render(&empty_queue());
        for line in [
            "sendmail_messages_delivered_total{mailer=\"local\"} 1\n",
            "sendmail_messages_delivered_total{mailer=\"relay\"} 0\n",
            "sendmail_messages_deferred_total{mailer=\"relay\"} 1\n",
            "sendmail_messages_bounced_total{mailer=\"relay\"} 1\n",
            "sendmail_delivery_delay_seconds_bucket{mailer=\"local\",le=\"1\"} 1\n",
            "sendmail_delivery_delay_seconds_count{mailer=\"local\"} 1\n",
            "# TYPE sendmail_queue_messages gauge\nsendmail_queue_messages 0\n",
            "sendmail_journal_batch_size_bucket{le=\"+Inf\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }
}
