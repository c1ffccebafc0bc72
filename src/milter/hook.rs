//! Where the filters meet the SMTP session: a [`MessageSink`] that asks them.
//!
//! In: the session's [`FilterCall`]s (connect, HELO, MAIL, RCPT, DATA, unknown, abort,
//! end) and the finished [`Message`]. Out: a [`FilterVerdict`] per call with sendmail's reply
//! and log line (srvrsmtp.c `MILTER_REPLY`: `Milter: from=<a@b>, reject=550 5.7.1 Command
//! rejected` …), and the message as the filters left it — headers, body, sender and
//! recipients changed — committed by the inner sink, so what is queued is what the filters
//! decided. A discarded message is answered `250` and not queued.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::engine::{Edit, Engine, Outcome, bare, join_message, split_message};
use super::proto::Family;
use crate::log::{Logger, Severity};
use crate::smtp::command::{self, Command as SmtpCommand, Extensions};
use crate::smtp::conn::{CommitError, MessageSink};
use crate::smtp::filter::{FilterCall, FilterVerdict};
use crate::smtp::reply::{self, Reply};
use crate::smtp::session::{Message, Recipient};

/// Resolves an address to (mailer, host, user) for `{mail_*}`/`{rcpt_*}` macros.
pub type Resolver = Arc<dyn Fn(&str) -> Option<(String, Option<String>, String)> + Send + Sync>;

/// The client as the filters are told of it.
pub struct Peer {
    /// `{client_name}` (sendmail sends `localhost` when there is none).
    pub name: String,
    pub family: Family,
    /// The connection's macros (`j`, `_`, `{daemon_name}`, `{client_addr}` …).
    pub macros: BTreeMap<String, String>,
}

/// The session's filters in front of a sink.
pub struct FilteredSink<K> {
    pub inner: K,
    engine: Engine,
    /// The client's name and address as `SMFIC_CONNECT` carries them.
    client_name: String,
    family: Family,
    /// `$j`, for the 421 reply.
    host: String,
    /// Macro values of the moment (connection ones, then per command).
    macros: BTreeMap<String, String>,
    resolver: Option<Resolver>,
    logger: Logger,
    log_level: u32,
    /// sendmail's `sm_milterize`: false once the filters ended the session's filtering.
    active: bool,
    /// `EF_DISCARD` for the current transaction.
    discard: bool,
}

impl<K> FilteredSink<K> {
    /// The filters `engine` in front of `inner` for the client `peer`.
    pub fn new(
        inner: K,
        engine: Engine,
        peer: Peer,
        resolver: Option<Resolver>,
        logger: Logger,
        log_level: u32,
    ) -> FilteredSink<K> {
        FilteredSink {
            inner,
            engine,
            client_name: peer.name,
            family: peer.family,
            host: peer.macros.get("j").cloned().unwrap_or_default(),
            macros: peer.macros,
            resolver,
            logger,
            log_level,
            active: true,
            discard: false,
        }
    }

    fn log(&self, text: std::fmt::Arguments<'_>) {
        if self.log_level > 3 {
            self.logger
                .log(Severity::Info, self.engine.qid.as_deref(), text);
        }
    }

    /// `MILTER_REPLY(what)` of srvrsmtp.c for MAIL and RCPT.
    fn reply_for(&mut self, what: &str, addr: &str, out: Outcome) -> FilterVerdict {
        match out {
            Outcome::Continue => FilterVerdict::Continue,
            Outcome::Shutdown => {
                self.log(format_args!(
                    "Milter: {what}={addr}, reject=421, errormode=4"
                ));
                FilterVerdict::Shutdown(Reply::new(421, Some("4.3.0"), "closing connection"))
            }
            Outcome::ReplyCode(text) => {
                self.log(format_args!("Milter: {what}={addr}, reject={text}"));
                let r = reply::from_filter(&text).unwrap_or_else(reply::milter_rejected);
                if r.code == 421 {
                    FilterVerdict::Shutdown(r)
                } else {
                    FilterVerdict::Refuse(r)
                }
            }
            Outcome::Reject => {
                self.log(format_args!(
                    "Milter: {what}={addr}, reject=550 5.7.1 Command rejected"
                ));
                FilterVerdict::Refuse(reply::milter_rejected())
            }
            Outcome::Discard => {
                self.log(format_args!("Milter: {what}={addr}, discard"));
                self.discard = true;
                FilterVerdict::Continue
            }
            Outcome::Tempfail => {
                self.log(format_args!(
                    "Milter: {what}={addr}, reject=451 4.3.2 Please try again later"
                ));
                FilterVerdict::Refuse(reply::milter_tempfail())
            }
        }
    }

    async fn connect(&mut self) -> FilterVerdict {
        let out = self
            .engine
            .connect(&self.client_name, self.family.clone(), &self.macros)
            .await;
        let host = self.client_name.clone();
        let addr = self.macros.get("client_addr").cloned().unwrap_or_default();
        if self.engine.init_failed {
            self.active = false;
            let (what, v) = match out {
                Outcome::Tempfail => (
                    "temp failing commands",
                    FilterVerdict::Refuse(reply::milter_tempfail()),
                ),
                Outcome::Shutdown => (
                    "closing connection",
                    FilterVerdict::Shutdown(reply::milter_shutdown(&self.host)),
                ),
                _ => (
                    "rejecting commands",
                    FilterVerdict::Refuse(reply::command_rejected()),
                ),
            };
            self.log(format_args!("Milter: initialization failed, {what}"));
            return v;
        }
        let v = match out {
            Outcome::Continue | Outcome::Discard => return FilterVerdict::Continue,
            Outcome::Reject | Outcome::ReplyCode(_) => {
                self.log(format_args!(
                    "Milter: connect: host={host}, addr={addr}, rejecting commands"
                ));
                FilterVerdict::Refuse(reply::command_rejected())
            }
            Outcome::Tempfail => {
                self.log(format_args!(
                    "Milter: connect: host={host}, addr={addr}, temp failing commands"
                ));
                FilterVerdict::Refuse(reply::milter_tempfail())
            }
            Outcome::Shutdown => {
                self.log(format_args!(
                    "Milter: connect: host={host}, addr={addr}, shutdown"
                ));
                FilterVerdict::Shutdown(reply::milter_shutdown(&self.host))
            }
        };
        self.active = false;
        v
    }

    async fn helo(&mut self, name: String) -> FilterVerdict {
        self.macros.insert("s".into(), name.clone());
        let out = self.engine.helo(&name, &self.macros).await;
        let v = match out {
            Outcome::Continue | Outcome::Discard => return FilterVerdict::Continue,
            Outcome::Reject => {
                self.log(format_args!("Milter: helo={name}, reject=Command rejected"));
                FilterVerdict::Refuse(reply::command_rejected())
            }
            Outcome::Tempfail => {
                self.log(format_args!(
                    "Milter: helo={name}, reject=451 4.3.2 Please try again later"
                ));
                FilterVerdict::Refuse(reply::milter_tempfail())
            }
            Outcome::ReplyCode(text) => {
                self.log(format_args!("Milter: helo={name}, reject={text}"));
                match reply::from_filter(&text) {
                    Some(r) if r.code == 421 => FilterVerdict::Shutdown(r),
                    Some(r) => FilterVerdict::Refuse(r),
                    None => FilterVerdict::Refuse(reply::command_rejected()),
                }
            }
            Outcome::Shutdown => {
                let h = self.host.clone();
                self.log(format_args!(
                    "Milter: helo={name}, reject=421 4.7.0 {h} closing connection"
                ));
                FilterVerdict::Shutdown(reply::milter_shutdown(&h))
            }
        };
        self.active = false;
        v
    }

    fn resolve_into(&mut self, prefix: &str, addr: &str) {
        for k in ["mailer", "host", "addr"] {
            self.macros.remove(&format!("{prefix}_{k}"));
        }
        let b = bare(addr);
        let resolved = self.resolver.as_ref().and_then(|r| r(&b));
        match resolved {
            Some((mailer, host, user)) => {
                self.macros.insert(format!("{prefix}_mailer"), mailer);
                self.macros
                    .insert(format!("{prefix}_host"), host.unwrap_or_default());
                self.macros.insert(format!("{prefix}_addr"), user);
            }
            None => {
                self.macros.insert(format!("{prefix}_addr"), b);
            }
        }
    }

    async fn mail(&mut self, qid: String, args: Vec<String>) -> FilterVerdict {
        self.discard = false;
        self.engine.qid = Some(qid.clone());
        self.macros.insert("i".into(), qid);
        let addr = args.first().cloned().unwrap_or_default();
        self.resolve_into("mail", &addr);
        let out = self.engine.mail(args, &self.macros).await;
        self.reply_for("from", &addr, out)
    }

    async fn rcpt(&mut self, args: Vec<String>, rejected: bool) -> FilterVerdict {
        let addr = args.first().cloned().unwrap_or_default();
        if rejected {
            self.macros.insert("rcpt_mailer".into(), "error".into());
        } else {
            self.resolve_into("rcpt", &addr);
        }
        let out = self.engine.rcpt(args, rejected, &self.macros).await;
        for k in ["rcpt_mailer", "rcpt_host", "rcpt_addr"] {
            self.macros.remove(k);
        }
        if rejected {
            return FilterVerdict::Continue;
        }
        self.reply_for("to", &addr, out)
    }

    async fn data_cmd(&mut self) -> FilterVerdict {
        match self.engine.data_cmd(&self.macros).await {
            Outcome::Continue => FilterVerdict::Continue,
            Outcome::ReplyCode(text) => {
                self.log(format_args!("Milter: cmd=data, reject={text}"));
                match reply::from_filter(&text) {
                    Some(r) if r.code == 421 => FilterVerdict::Shutdown(r),
                    Some(r) => FilterVerdict::Refuse(r),
                    None => FilterVerdict::Refuse(reply::milter_rejected()),
                }
            }
            Outcome::Reject => {
                self.log(format_args!(
                    "Milter: cmd=data, reject=550 5.7.1 Command rejected"
                ));
                FilterVerdict::Refuse(reply::milter_rejected())
            }
            Outcome::Discard => {
                self.log(format_args!("Milter: cmd=data, discard"));
                self.discard = true;
                FilterVerdict::Continue
            }
            Outcome::Tempfail => {
                self.log(format_args!(
                    "Milter: cmd=data, reject=451 4.3.2 Please try again later"
                ));
                FilterVerdict::Refuse(reply::milter_tempfail())
            }
            Outcome::Shutdown => {
                let h = self.host.clone();
                self.log(format_args!(
                    "Milter: cmd=data, reject=421 4.7.0 {h} closing connection"
                ));
                FilterVerdict::Shutdown(reply::milter_shutdown(&h))
            }
        }
    }

    /// End of message: the filters see and change `msg`. `Ok(true)`: commit it; `Ok(false)`:
    /// discard it (answered 250, not queued).
    async fn eom(&mut self, msg: &mut Message) -> Result<bool, CommitError> {
        let (headers, body) = split_message(&msg.body);
        if let Some((_, id)) = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("message-id"))
        {
            self.macros.insert("msg_id".into(), id.trim().to_string());
        }
        let mut edit = Edit {
            headers,
            body,
            sender: angle(&msg.sender.raw),
            sender_args: None,
            rcpts: msg
                .recipients
                .iter()
                .map(|r| (angle(&r.addr.raw), None))
                .collect(),
            changed: false,
            quarantine: None,
        };
        let out = self.engine.eom(&mut edit, &self.macros).await;
        self.macros.remove("msg_id");
        let refused = |r: Reply| Err(CommitError::Refused(r));
        match out {
            Outcome::Continue => {}
            Outcome::ReplyCode(text) => {
                self.log(format_args!("Milter: data, reject={text}"));
                return refused(
                    reply::from_filter(&text).unwrap_or_else(reply::milter_data_rejected),
                );
            }
            Outcome::Reject => {
                self.log(format_args!(
                    "Milter: data, reject=554 5.7.1 Command rejected"
                ));
                return refused(reply::milter_data_rejected());
            }
            Outcome::Discard => {
                self.log(format_args!("Milter: data, discard"));
                return Ok(false);
            }
            Outcome::Tempfail => {
                self.log(format_args!(
                    "Milter: data, reject=451 4.3.2 Please try again later"
                ));
                return refused(reply::milter_tempfail());
            }
            Outcome::Shutdown => {
                let h = self.host.clone();
                self.log(format_args!(
                    "Milter: data, reject=421 4.7.0 {h} closing connection"
                ));
                return refused(reply::milter_shutdown(&h));
            }
        }
        // Held in the queue (mailq -qQ shows it), never delivered while quarantined.
        msg.quarantine = edit.quarantine.take();
        if self.log_level > 9 {
            self.logger.log(
                Severity::Info,
                self.engine.qid.as_deref(),
                format_args!("Milter accept: message"),
            );
        }
        if edit.changed {
            apply(msg, edit);
        }
        Ok(true)
    }
}

/// Puts the filters' changes into the message.
fn apply(msg: &mut Message, edit: Edit) {
    msg.body = join_message(&edit.headers, &edit.body);
    let ext = Extensions {
        dsn: true,
        deliverby: true,
        deliver_by_min: 0,
        smtputf8: true,
    };
    if bare(&edit.sender) != bare(&msg.sender.raw) || edit.sender_args.is_some() {
        let line = format!(
            "MAIL FROM:{} {}",
            edit.sender,
            edit.sender_args.as_deref().unwrap_or("")
        );
        if let SmtpCommand::Mail(Ok(m)) = command::parse_with(line.trim_end().as_bytes(), &ext) {
            msg.sender = m.path;
            if let (Some(_), Ok(p)) = (&edit.sender_args, m.params) {
                msg.mail_params = p;
            }
        }
    }
    let mut rcpts: Vec<Recipient> = Vec::new();
    for (addr, args) in &edit.rcpts {
        let b = bare(addr);
        if let Some(r) = msg
            .recipients
            .iter()
            .find(|r| bare(&r.addr.raw).eq_ignore_ascii_case(&b))
        {
            rcpts.push(r.clone());
            continue;
        }
        let line = format!("RCPT TO:{addr} {}", args.as_deref().unwrap_or(""));
        if let SmtpCommand::Rcpt(Ok(r)) = command::parse_with(line.trim_end().as_bytes(), &ext)
            && let Ok(params) = r.params
        {
            rcpts.push(Recipient {
                shown: r.path.raw.clone(),
                addr: r.path,
                params,
            });
        }
    }
    msg.recipients = rcpts;
}

fn angle(a: &str) -> String {
    let t = a.trim();
    if t.starts_with('<') {
        t.to_string()
    } else {
        format!("<{t}>")
    }
}

impl<K: MessageSink + Send> MessageSink for FilteredSink<K> {
    /// Filtered messages stay whole in memory (the filters read and may rewrite all of it),
    /// within the receipt limits (`MaxMessageSize`, else the hard cap).
    fn spills(&self) -> bool {
        false
    }

    async fn commit(&mut self, mut msg: Message) -> Result<(), CommitError> {
        if self.active && !self.discard && !self.engine.is_empty() {
            match self.eom(&mut msg).await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return Err(e),
            }
        } else if self.discard {
            self.discard = false;
            return Ok(());
        }
        self.inner.commit(msg).await
    }

    async fn filter(&mut self, call: FilterCall) -> FilterVerdict {
        {
            if !self.active && !matches!(call, FilterCall::Close | FilterCall::Abort) {
                return FilterVerdict::Continue;
            }
            match call {
                FilterCall::Connect => self.connect().await,
                FilterCall::Helo { name, macros } => {
                    self.macros.extend(macros);
                    self.helo(name).await
                }
                FilterCall::Mail { qid, args, macros } => {
                    self.macros.extend(macros);
                    self.mail(qid, args).await
                }
                FilterCall::Rcpt { args, rejected } => {
                    if self.discard {
                        return FilterVerdict::Continue;
                    }
                    self.rcpt(args, rejected).await
                }
                FilterCall::Data => {
                    if self.discard {
                        return FilterVerdict::Continue;
                    }
                    self.data_cmd().await
                }
                FilterCall::Unknown { line } => {
                    self.engine.unknown(&line).await;
                    FilterVerdict::Continue
                }
                FilterCall::Abort => {
                    self.engine.abort().await;
                    self.discard = false;
                    FilterVerdict::Continue
                }
                FilterCall::Close => {
                    self.engine.quit().await;
                    FilterVerdict::Continue
                }
            }
        }
    }
}
