//! A received message → the durable queue: the SMTP session's [`MessageSink`].
//!
//! In: a finished [`Message`] from the session (envelope, dot-unstuffed body with LF line
//! ends), and while it arrives the bytes past its first 64 KiB ([`MessageSink::spill`]),
//! which go to a spool file of the queue ([`crate::queue::spool`], where the design is
//! written down) so that a session's memory does not grow with the message. Out: the
//! message committed to the [`Store`] — on stable storage before the session answers
//! `250 2.0.0 <id> Message accepted for delivery` — and sendmail's `from=` log line. The
//! spool of a message that is refused, reset or abandoned is dropped
//! ([`MessageSink::discard`], or the connection's end): its file has no name, so closing
//! it gives the space back.
//!
//! The headers added at receipt are scanned for in the message's head, which stays in
//! memory (`smtp::body::KEEP_HEAD`, twice the default `MaxHeadersLength`); they are
//! written before the head in the queue entry, then the head, the spooled bytes and the
//! rest (`Store::commit_spooled`).
//!
//! On the way the headers sendmail adds at receipt are added (RFC 5321 §4.4, sendmail's cf
//! `H` lines): `Received:` from the cf's `HReceived` template (sendmail's own when the cf has
//! none), expanded with the connection's macros (`$s` HELO name, `$_` client, `$r` protocol,
//! `$i` queue id, `$u` the recipient when there is exactly one, `$b` date,
//! `${daemon_name}`), and `Message-Id:` / `Date:` when the message has none.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use chrono::Utc;

use crate::config::Config;
use crate::config::macros::{Layered, expand, rfc5322_now};
use crate::dns::format_ip;
use crate::log::{Logger, Severity};
use crate::queue::spool::Spool;
use crate::queue::{self, QueueError, QueueId, Store, maildrop};
use crate::smtp::command;
use crate::smtp::conn::{CommitError, MessageSink};
use crate::smtp::session::Message;

/// sendmail's `Received:` template (cf/m4/cfhead.m4, `confRECEIVED_HEADER`: the AUTH and TLS
/// comments included), used when the cf defines none; here it also names the daemon.
const DEFAULT_RECEIVED: &str = "$?sfrom $s $.$?_($?s$|from $.$_)\n\t\
     $.$?{auth_type}(authenticated$?{auth_ssf} bits=${auth_ssf}$.)\n\t\
     $.by $j ($v/$Z)$?{daemon_name} (daemon ${daemon_name})$.$?r with $r$. id $i$?{tls_version}\n\t\
     (version=${tls_version} cipher=${cipher} bits=${cipher_bits} verify=${verify})$.$?u\n\t\
     for $u; $|;\n\t$.$b";

/// sendmail's `WkRecipFact` (`RecipientFactor`): each recipient adds this much to the work
/// priority.
const RECIPIENT_FACTOR: i64 = 30_000;
/// sendmail's `WkClassFact` (`ClassFactor`): each unit of precedence class takes this much
/// off (the oracle: `Precedence: bulk`, class -60, 47 bytes, 3 recipients: 198047).
const CLASS_FACTOR: i64 = 1_800;

/// Where accepted messages go.
#[derive(Clone)]
pub enum Destination {
    /// The daemon's own store.
    Store(Store),
    /// The maildrop of this queue directory (`-bs` and other command-line submissions).
    Maildrop(PathBuf),
}

/// Commits each message of one connection into the queue.
pub struct QueueSink {
    pub dest: Destination,
    pub config: Arc<Config>,
    pub logger: Logger,
    /// Where the bytes of the message being received past its head go.
    pub spool: SpoolState,
    /// The cf's rulesets, to name each recipient's mailer in the `stat=queued` lines of
    /// DeliveryMode queue/defer ([`queued_lines`]).
    pub rules: Option<Arc<crate::rules::handle::Handle>>,
}

/// The spool of the message being received (a [`Destination::Store`] only; the maildrop
/// of a command-line submission takes its message whole, in memory, from a local user).
#[derive(Debug, Default)]
pub enum SpoolState {
    /// Nothing spilled for the current message.
    #[default]
    Idle,
    Active(Spool),
    /// Spooling failed; the message will be refused with this error.
    Failed(QueueError),
}

impl QueueSink {
    pub fn new(dest: Destination, config: Arc<Config>, logger: Logger) -> QueueSink {
        QueueSink {
            dest,
            config,
            logger,
            spool: SpoolState::Idle,
            rules: None,
        }
    }

    /// The same, with the cf's rulesets for the `stat=queued` lines.
    pub fn with_rules(mut self, rules: Option<Arc<crate::rules::handle::Handle>>) -> QueueSink {
        self.rules = rules;
        self
    }
}

/// DeliveryMode queue or defer: sendmail's `deliver()` marks each recipient of a mailer that
/// no alias expansion waits for (an SMTP mailer; local ones are expanded in the queue run)
/// queued and logs it (LogLevel > 8): `to=<a@b>, delay=00:00:00, mailer=esmtp, pri=N,
/// stat=queued`, in RCPT order, once each (oracle: 65-access-connect-relay).
fn queued_lines(
    msg: &Message,
    cfg: &Config,
    rules: Option<&crate::rules::handle::Handle>,
    priority: i64,
) -> Vec<String> {
    use crate::config::options::DeliveryMode;
    use crate::deliver::route::{Route, route_with};
    if !matches!(
        cfg.options.delivery_mode,
        DeliveryMode::QueueOnly | DeliveryMode::Defer
    ) {
        return Vec::new();
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for r in &msg.recipients {
        if seen.contains(&r.shown.as_str()) {
            continue;
        }
        seen.push(&r.shown);
        let bare = r.shown.trim_start_matches('<').trim_end_matches('>');
        if let Route::Remote { mailer, .. } = route_with(rules, cfg, bare) {
            out.push(format!(
                "to={}, delay=00:00:00, mailer={mailer}, pri={priority}, stat=queued",
                r.shown
            ));
        }
    }
    out
}

impl MessageSink for QueueSink {
    fn spills(&self) -> bool {
        matches!(self.dest, Destination::Store(_))
    }

    fn spill(&mut self, bytes: Vec<u8>) -> impl Future<Output = ()> + Send {
        let state = std::mem::take(&mut self.spool);
        let store = match &self.dest {
            Destination::Store(s) => Some(s.clone()),
            Destination::Maildrop(_) => None,
        };
        let slot = &mut self.spool;
        async move {
            *slot = match state {
                SpoolState::Failed(e) => SpoolState::Failed(e),
                SpoolState::Idle => match store.map(|s| s.spool()) {
                    Some(Ok(sp)) => append(sp, bytes).await,
                    Some(Err(e)) => SpoolState::Failed(e),
                    None => SpoolState::Failed(QueueError::ReadOnly),
                },
                SpoolState::Active(sp) => append(sp, bytes).await,
            };
        }
    }

    fn discard(&mut self) {
        self.spool = SpoolState::Idle;
    }

    fn commit(&mut self, mut msg: Message) -> impl Future<Output = Result<(), CommitError>> + Send {
        // The body moves on into the queue entry (one copy of a message of up to the size
        // limit, not two); the log line keeps its size.
        let body = std::mem::take(&mut msg.body);
        let spool = std::mem::take(&mut self.spool);
        let size = body.len() as u64 + msg.spilled;
        let prepared = prepare(&msg, body, &self.config);
        // sendmail's e_class for the from= line (the Precedence: header as received)
        let class = prepared.as_ref().map_or(0, |(q, _, added)| {
            let received = q.body.get(*added..).unwrap_or(&[]);
            crate::deliver::dsn::precedence_class(&self.config.priorities, received)
        });
        let dest = self.dest.clone();
        let logger = self.logger.clone();
        let queued_log = match (&prepared, logger.enabled(8)) {
            (Ok((q, _, _)), true) if !msg.discard => queued_lines(
                &msg,
                &self.config,
                self.rules.as_deref(),
                q.envelope.priority,
            ),
            _ => Vec::new(),
        };
        async move {
            let (queued, msgid, added) = prepared?;
            if msg.discard {
                // a check ruleset's $#discard (access map DISCARD): answered 250, logged as
                // sendmail logs it (the from= line, then "discarded"), nothing queued
                drop(spool);
                if logger.enabled(4) {
                    logger.log(
                        Severity::Info,
                        Some(&msg.qid),
                        format_args!("{}", msg.from_log_line_sized(size, class, msgid.as_deref())),
                    );
                }
                logger.log(Severity::Info, Some(&msg.qid), format_args!("discarded"));
                return Ok(());
            }
            let temp = commit_error;
            let spool = match spool {
                SpoolState::Failed(e) => return Err(temp(e)),
                SpoolState::Active(sp) if sp.len() == msg.spilled && msg.spilled > 0 => Some(sp),
                SpoolState::Idle if msg.spilled == 0 => None,
                _ => {
                    return Err(CommitError::Temporary(format!(
                        "spool of {} does not hold the {} bytes spilled",
                        msg.qid, msg.spilled
                    )));
                }
            };
            match (dest, spool) {
                (Destination::Store(store), Some(sp)) => store
                    .commit_spooled(queued, added + msg.spill_at, sp)
                    .await
                    .map(drop)
                    .map_err(temp)?,
                (_, Some(_)) => {
                    return Err(CommitError::Temporary("spool without a store".into()));
                }
                (Destination::Store(store), None) => {
                    store.commit(queued).await.map(drop).map_err(temp)?
                }
                (Destination::Maildrop(qdir), None) => {
                    tokio::task::spawn_blocking(move || maildrop::submit(&qdir, &queued))
                        .await
                        .map_err(|e| CommitError::Temporary(e.to_string()))?
                        .map(drop)
                        .map_err(temp)?
                }
            }
            if logger.enabled(4) {
                logger.log(
                    Severity::Info,
                    Some(&msg.qid),
                    format_args!("{}", msg.from_log_line_sized(size, class, msgid.as_deref())),
                );
            }
            for line in queued_log {
                logger.log(Severity::Info, Some(&msg.qid), format_args!("{line}"));
            }
            Ok(())
        }
    }
}

async fn append(mut sp: Spool, bytes: Vec<u8>) -> SpoolState {
    match sp.append(bytes).await {
        Ok(_) => SpoolState::Active(sp),
        Err(e) => SpoolState::Failed(e),
    }
}

/// A failed commit: `452 4.3.1 Insufficient system storage` when the disk is full (the
/// client keeps the message and retries), else the generic temporary failure.
fn commit_error(e: QueueError) -> CommitError {
    if queue::space::is_disk_full(&e) {
        CommitError::Refused(crate::smtp::reply::insufficient_storage())
    } else {
        CommitError::Temporary(e.to_string())
    }
}

/// Builds the queue entry: envelope, and `body` (the message's, taken out of it) with the
/// headers added at receipt; also how many bytes were added before the body. When part of
/// the message was spilled, only the head (`body[..msg.spill_at]`) is scanned for the
/// headers: the rest of `body` comes after the spilled bytes.
fn prepare(
    msg: &Message,
    body: Vec<u8>,
    cfg: &Config,
) -> Result<(queue::Message, Option<String>, usize), CommitError> {
    let id = QueueId::new(msg.qid.clone()).map_err(|e| CommitError::Temporary(e.to_string()))?;
    let now = SystemTime::now();
    let macros = receipt_macros(msg);
    let lookup = Layered {
        top: &macros,
        base: cfg,
    };
    let hostname = expand("$j", &lookup);
    let mut added = String::new();
    let template = cfg
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Received"))
        .map(|h| h.value.as_str())
        .unwrap_or(DEFAULT_RECEIVED);
    added.push_str(&format!("Received: {}\n", expand(template, &lookup)));
    let head = if msg.spilled > 0 {
        &body[..msg.spill_at.min(body.len())]
    } else {
        &body[..]
    };
    let (more, msgid) = id_and_date(head, &msg.qid, &hostname);
    let class = crate::deliver::dsn::precedence_class(&cfg.priorities, head);
    added.push_str(&more);
    // PrivacyOptions=authwarnings: the warning the session logged at MAIL, as a header.
    if msg.helo.is_none() && cfg.options.auth_warnings() {
        added.push_str(&format!(
            "X-Authentication-Warning: {hostname}: {} didn't use HELO protocol\n",
            msg.client.display()
        ));
    }
    let added_len = added.len();
    let size = body.len() + msg.spilled as usize;
    let mut with_headers = added.into_bytes();
    with_headers.reserve_exact(size);
    with_headers.extend_from_slice(&body);
    drop(body);

    // A client's bare CR or blank in the sender is a `.` from here on (sendmail's
    // BlankSub): it never reaches a `From ` line, `Return-Path:` or the next MAIL FROM.
    let sender = crate::mailbox::blank_sub(&bare(&msg.sender.raw));
    let mut env = queue::Envelope::new(id, sender);
    env.arrival = now;
    env.recipients = msg.recipients.iter().map(recipient).collect();
    // the transaction's last refused recipient, as sendmail's qf M line (mailq shows it
    // until a delivery attempt says something else)
    if let Some(text) = &msg.last_error {
        for r in &mut env.recipients {
            r.status = Some(text.clone());
        }
    }
    env.params = queue::EsmtpParams {
        size: msg.mail_params.size,
        body: msg.mail_params.body.map(|b| match b {
            command::BodyType::SevenBit => queue::BodyType::SevenBit,
            command::BodyType::EightBitMime => queue::BodyType::EightBitMime,
        }),
        ret: msg.mail_params.ret.map(|r| match r {
            command::Ret::Full => queue::Ret::Full,
            command::Ret::Hdrs => queue::Ret::Hdrs,
        }),
        envid: msg.mail_params.envid.clone(),
        smtputf8: msg.mail_params.smtputf8,
        deliver_by: msg.mail_params.by,
    };
    env.client = queue::ClientInfo {
        daemon: Some(msg.daemon_name.clone()),
        name: msg.client.name.clone(),
        addr: msg.client.ip.map(format_ip),
        protocol: Some(queue::Protocol::from_name(msg.protocol).unwrap_or(queue::Protocol::Smtp)),
    };
    if msg.daemon_name.is_empty() {
        env.client.daemon = None;
    }
    env.msgid = msgid.clone();
    env.quarantine = msg.quarantine.clone();
    env.priority = size as i64 - CLASS_FACTOR * i64::from(class)
        + RECIPIENT_FACTOR * msg.recipients.len() as i64;
    Ok((
        queue::Message {
            envelope: env,
            body: with_headers,
        },
        msgid,
        added_len,
    ))
}

/// `Message-Id:` and `Date:` for a message that lacks them (sendmail adds both at receipt):
/// the lines to add, and the message's id (its own, or the one added).
pub fn id_and_date(body: &[u8], qid: &str, host: &str) -> (String, Option<String>) {
    let (header_end, existing) = crate::headers::scan(body);
    let mut added = String::new();
    let msgid = existing.or_else(|| {
        let m = queue::id::message_id(Utc::now(), qid, host);
        added.push_str(&format!("Message-Id: {m}\n"));
        Some(m)
    });
    if !crate::headers::has(&body[..header_end], "date") {
        added.push_str(&format!("Date: {}\n", rfc5322_now()));
    }
    (added, msgid)
}

/// The macros of one received message.
fn receipt_macros(msg: &Message) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Some(h) = &msg.helo {
        m.insert("s".to_string(), h.clone());
    }
    m.insert("_".into(), msg.client.display());
    m.insert("r".into(), msg.protocol.to_string());
    m.insert("i".into(), msg.qid.clone());
    m.insert("daemon_name".into(), msg.daemon_name.clone());
    if let Some(t) = &msg.tls {
        m.extend(t.macros().map(|(k, v)| (k.to_string(), v)));
    }
    if let Some(a) = &msg.auth {
        m.extend(a.macros().map(|(k, v)| (k.to_string(), v)));
    }
    if let [only] = msg.recipients.as_slice() {
        m.insert("u".into(), format!("<{}>", bare(&only.addr.raw)));
    }
    m.insert("b".into(), rfc5322_now());
    m
}

fn recipient(r: &crate::smtp::session::Recipient) -> queue::Recipient {
    let mut q = queue::Recipient::new(bare(&r.addr.raw));
    if let Some(n) = r.params.notify {
        q.notify = queue::Notify {
            never: n.never,
            success: n.success,
            failure: n.failure,
            delay: n.delay,
        };
    }
    q.orcpt = r.params.orcpt.clone();
    q
}

/// An address without its angle brackets (`<a@b>` → `a@b`, `<>` → ``).
fn bare(raw: &str) -> String {
    raw.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A received message with no body from `sender` to `rcpts` (paths as sent).
    fn message(qid: &str, sender: &str, rcpts: &[&str]) -> Message {
        use crate::smtp::command::parse_path;
        use crate::smtp::session::Recipient;
        Message {
            qid: qid.into(),
            sender: parse_path(sender).unwrap(),
            mail_params: Default::default(),
            recipients: rcpts
                .iter()
                .map(|a| Recipient {
                    addr: parse_path(a).unwrap(),
                    shown: a.to_string(),
                    params: Default::default(),
                })
                .collect(),
            body: Vec::new(),
            spilled: 0,
            spill_at: 0,
            helo: None,
            protocol: "SMTP",
            client: crate::smtp::session::ClientInfo {
                ip: None,
                port: 0,
                name: None,
            },
            daemon_name: "MTA".into(),
            tls: None,
            auth: None,
            quarantine: None,
            discard: false,
            last_error: None,
        }
    }

    /// DeliveryMode=q logs `stat=queued` for the SMTP recipients only, once each; other
    /// modes log none (oracle: 65-access-connect-relay, 05-outside-to-local).
    #[test]
    fn queue_only_logs_smtp_recipients_queued() {
        let msg = message(
            "6B64nF5V018234",
            "<a@remote.example>",
            &[
                "<user@remote.example>",
                "<root>",
                "<user@remote.example>",
                "<other@far.example>",
            ],
        );
        let cfg = |mode: &str| {
            let o = crate::config::Override {
                name: "DeliveryMode".into(),
                value: mode.into(),
            };
            Config::from_str("default.cf", crate::config::DEFAULT_CF, &[o]).unwrap()
        };
        assert_eq!(
            queued_lines(&msg, &cfg("q"), None, 120),
            [
                "to=<user@remote.example>, delay=00:00:00, mailer=esmtp, pri=120, stat=queued",
                "to=<other@far.example>, delay=00:00:00, mailer=esmtp, pri=120, stat=queued",
            ]
        );
        assert!(queued_lines(&msg, &cfg("b"), None, 120).is_empty());
    }

    /// sendmail 8.17.1.9 (Debian's cf, `Pbulk=-60`): 47 bytes with `Precedence: bulk`
    /// to 3 recipients is `class=-60` and priority 47 + 60 × 1800 + 3 × 30000 = 198047.
    #[test]
    fn priority_counts_size_class_and_recipients() {
        let msg = message(
            "6B696cNw011354",
            "<prober@remote.example.test>",
            &["<root>", "<a@relay.example>", "<b@relay.example>"],
        );
        let cf = format!("{}\nPbulk=-60\n", crate::config::DEFAULT_CF);
        let cfg = Config::from_str("t.cf", &cf, &[]).unwrap();
        let body = b"Subject: probe\nPrecedence: bulk\n\nbody line one\n".to_vec();
        assert_eq!(body.len(), 47);
        let (q, _, _) = prepare(&msg, body, &cfg).unwrap();
        assert_eq!(q.envelope.priority, 198_047);
        let (q, _, _) = prepare(&msg, b"Subject: x\n\nbody\n".to_vec(), &cfg).unwrap();
        assert_eq!(q.envelope.priority, 17 + 90_000);
    }

    #[test]
    fn addresses_lose_their_brackets() {
        assert_eq!(bare("<a@b>"), "a@b");
        assert_eq!(bare("<>"), "");
        assert_eq!(bare("root"), "root");
    }

    #[test]
    fn the_default_received_template_names_client_daemon_and_id() {
        let mut m = BTreeMap::new();
        for (k, v) in [
            ("s", "client.example.test"),
            ("_", "localhost [IPv6:0:0:0:0:0:0:0:1]"),
            ("j", "mta.example.test"),
            ("v", "0.1.0"),
            ("Z", "0.1.0"),
            ("r", "ESMTP"),
            ("i", "6AO6rKe2007088"),
            ("u", "<root@mta.example.test>"),
            ("b", "Tue, 24 Nov 2026 06:53:20 GMT"),
            ("daemon_name", "MTA-v6"),
        ] {
            m.insert(k.to_string(), v.to_string());
        }
        assert_eq!(
            expand(DEFAULT_RECEIVED, &m),
            "from client.example.test (localhost [IPv6:0:0:0:0:0:0:0:1])\n\t\
             by mta.example.test (0.1.0/0.1.0) (daemon MTA-v6) with ESMTP id 6AO6rKe2007088\n\t\
             for <root@mta.example.test>; Tue, 24 Nov 2026 06:53:20 GMT"
        );
    }
}
