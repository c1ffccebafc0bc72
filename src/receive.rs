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

use chrono::{Local, Utc};

use crate::config::Config;
use crate::config::macros::{Layered, expand, rfc5322_date};
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

/// sendmail's `WkRecipFact`: each recipient adds this much to the work priority.
const RECIPIENT_FACTOR: i64 = 30_000;

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
        }
    }
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
        let dest = self.dest.clone();
        let logger = self.logger.clone();
        async move {
            let (queued, msgid, added) = prepared?;
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
                    format_args!("{}", msg.from_log_line_sized(size, msgid.as_deref())),
                );
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
    env.priority = size as i64 + RECIPIENT_FACTOR * msg.recipients.len() as i64;
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
        added.push_str(&format!("Date: {}\n", rfc5322_date(&Local::now())));
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
    m.insert("b".into(), rfc5322_date(&Local::now()));
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
