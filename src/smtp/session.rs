//! The sans-IO SMTP session state machine.
//!
//! In: command lines ([`Session::handle`]), DATA bytes ([`Session::data`]), the queue's
//! answer to a finished message ([`Session::committed`]) and connection events (peer gone,
//! timeout, shutdown, over-long line). Out: [`Action`]s for the driver (`smtp::conn`):
//! replies to write, log lines, anti-abuse delays, "switch to DATA", "commit this
//! message", "close". The session never touches a socket, a file or a clock other than
//! `Instant::now()` for the `delay=` of aborted recipients.
//!
//! Decisions that belong to other layers come in through [`Policy`] (sender and recipient
//! checks, VRFY/EXPN/ETRN answers); a finished message goes out as [`Action::Commit`] and is
//! answered `250` only after the driver reports a durable commit.
//!
//! sendmail 8.17 behaviour reproduced (srvrsmtp.c; recorded in
//! `shared/conformance/smtp/*.txt`, `sendmail-facts.md` §3.3, §5): greeting with `ESMTP`
//! inserted, the EHLO keyword order, HELO/EHLO domain check, command order 503s, the
//! anti-abuse counters (`MAXHELOCOMMANDS` 3, `MAXVRFYCOMMANDS` 6, `MAXETRNCOMMANDS` 8,
//! `MAXNOOPCOMMANDS` 20, `MAXBADCOMMANDS` 25) with their growing delays, the 8.18
//! pipelining check (HELO/EHLO or DATA followed by input before the reply → `554 5.5.0 SMTP
//! protocol error`), the "nullserver" mode of a connection refused by `check_relay`, and
//! the end-of-session log lines (`from=` of an aborted transaction, `to=... stat=RSET`,
//! `did not issue MAIL/EXPN/VRFY/ETRN`, `lost input channel`).
//!
//! Beyond sendmail 8.17, in their own files: BDAT (`session/bdat.rs`, RFC 3030), SMTPUTF8
//! (`session/utf8.rs`, RFC 6531); the end of every message, DATA or BDAT, with its size and
//! header limits and the one commit (`session/finish.rs`).

use crate::dns::format_ip;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::body::Limits;
use super::chunk::ChunkReader;
use super::command::{
    self, Address, ArgError, Command, MailFrom, MailParams, RcptParams, RcptTo, check_helo_name,
};
use super::data::{DataEnd, DataReader};
use super::filter::{FilterCall, FilterVerdict};
use super::reply::{self, Reply};
use crate::log::Severity;
use crate::queue::id::QueueIdGen;
use crate::tls::TlsInfo;

mod security;
pub use security::{AUTH_FAILURE_DELAY, AuthInfo, MAX_AUTH_FAILURES, Security};

/// Anti-abuse limits (sendmail compile-time defaults).
pub const MAX_HELO_COMMANDS: u32 = 3;
pub const MAX_VRFY_COMMANDS: u32 = 6;
pub const MAX_ETRN_COMMANDS: u32 = 8;
pub const MAX_NOOP_COMMANDS: u32 = 20;
pub const MAX_BAD_COMMANDS: u32 = 25;
/// Longest anti-abuse delay (sendmail `MAXTIMEOUT`, 4 minutes).
pub const MAX_ABUSE_DELAY: Duration = Duration::from_secs(240);
/// HELP topics are cut to this many characters (observed: `nosuchtopic` → `nosuchtopi`).
pub const HELP_TOPIC_MAX: usize = 10;

// ---------------------------------------------------------------------------------------
// Who is at the other end.

/// The connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Peer address; an IPv4-mapped IPv6 address is shown as IPv4. `None` for `-bs`.
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// Name from the reverse lookup (when it was confirmed), or for `-bs` `root@localhost`.
    pub name: Option<String>,
}

impl ClientInfo {
    /// sendmail's `$_` form: `localhost [IPv6:0:0:0:0:0:0:0:1]`, `[127.0.0.9]` when
    /// unresolved, the bare name when there is no address.
    pub fn display(&self) -> String {
        match (&self.name, self.ip) {
            (Some(n), Some(ip)) => format!("{n} [{}]", format_ip(ip)),
            (None, Some(ip)) => format!("[{}]", format_ip(ip)),
            (Some(n), None) => n.clone(),
            (None, None) => "localhost".to_owned(),
        }
    }

    /// sendmail's `RealHostName`: the name, else `[addr]` (the `relay=` of `collect:` lines).
    pub fn host_name(&self) -> String {
        match (&self.name, self.ip) {
            (Some(n), _) => n.clone(),
            (None, Some(ip)) => format!("[{}]", format_ip(ip)),
            (None, None) => "localhost".to_owned(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Configuration of one session.

/// ESMTP extensions this server really implements for this session (EHLO lists these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    pub pipelining: bool,
    /// EXPN works (the [`Policy`] can expand); also gates the VERB keyword, as in sendmail.
    pub expn: bool,
    /// VERB (only offered and accepted when EXPN is).
    pub verb: bool,
    pub eightbitmime: bool,
    /// DSN parameters are accepted and carried to the queue (RET, ENVID, NOTIFY, ORCPT).
    pub dsn: bool,
    /// ETRN can start a queue run.
    pub etrn: bool,
    /// DELIVERBY (RFC 2852): `BY=` on MAIL, kept with the message (`DeliverByMin` ≥ 0).
    pub deliverby: bool,
    /// `DeliverByMin`: EHLO says `DELIVERBY <n>` when above 0; a `BY=…;R` below it is
    /// refused.
    pub deliver_by_min: i64,
    /// CHUNKING: BDAT (RFC 3030), in `session/bdat.rs`; only with our `Chunking` option
    /// (sendmail 8.17 has none).
    pub chunking: bool,
    /// SMTPUTF8 (RFC 6531), in `session/utf8.rs`; only with the `SmtpUTF8` option.
    pub smtputf8: bool,
}

impl Default for Features {
    /// What the session itself implements end to end: PIPELINING and 8BITMIME (VERB is
    /// offered only together with EXPN, as in sendmail); CHUNKING is implemented but off,
    /// as sendmail 8.17 has none.
    fn default() -> Features {
        Features {
            pipelining: true,
            expn: false,
            verb: true,
            eightbitmime: true,
            dsn: false,
            etrn: false,
            deliverby: false,
            deliver_by_min: 0,
            chunking: false,
            smtputf8: false,
        }
    }
}

/// The `PrivacyOptions` that concern the SMTP server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Privacy {
    pub needmailhelo: bool,
    pub needexpnhelo: bool,
    pub needvrfyhelo: bool,
    pub noexpn: bool,
    pub novrfy: bool,
    pub noverb: bool,
    pub noetrn: bool,
    /// Log (and let the queue add `X-Authentication-Warning:`) when the client did not HELO.
    pub authwarnings: bool,
}

impl Privacy {
    /// Parses a `PrivacyOptions` value (`authwarnings,noexpn,novrfy`, `goaway`, `public`);
    /// words that do not concern the SMTP server are ignored.
    pub fn parse(value: &str) -> Privacy {
        let mut p = Privacy::default();
        for word in value.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
            match word.to_ascii_lowercase().as_str() {
                "needmailhelo" => p.needmailhelo = true,
                "needexpnhelo" => p.needexpnhelo = true,
                "needvrfyhelo" => p.needvrfyhelo = true,
                "noexpn" => p.noexpn = true,
                "novrfy" => p.novrfy = true,
                "noverb" => p.noverb = true,
                "noetrn" => p.noetrn = true,
                "authwarnings" => p.authwarnings = true,
                "public" => p = Privacy::default(),
                // everything but noetrn (sendmail 8.17's PRIV_GOAWAY mask leaves it out: the
                // oracle under goaway offers ETRN and runs it, tests/differential
                // 89r-privacy-goaway); added to the words before it, as sendmail ORs them
                "goaway" => {
                    p.needmailhelo = true;
                    p.needexpnhelo = true;
                    p.needvrfyhelo = true;
                    p.noexpn = true;
                    p.novrfy = true;
                    p.noverb = true;
                    p.authwarnings = true;
                }
                _ => {}
            }
        }
        p
    }
}

/// sendmail's HelpFile: `topic<TAB>text` lines; `#` lines are comments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HelpText {
    lines: Vec<String>,
}

impl HelpText {
    /// Reads the file named by the `HelpFile` option.
    pub fn load(path: &Path) -> std::io::Result<HelpText> {
        let bytes = std::fs::read(path)?;
        Ok(HelpText::parse(&String::from_utf8_lossy(&bytes)))
    }

    /// Parses helpfile text.
    pub fn parse(text: &str) -> HelpText {
        let lines = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect();
        HelpText { lines }
    }

    /// As sendmail's help(): every line that *starts with* `topic` (already lower case),
    /// the text after its first blank or tab, `$v` → `version`, `$$` → `$`.
    pub fn topic(&self, topic: &str, version: &str) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| l.starts_with(topic))
            .map(|l| {
                let text = l.split_once([' ', '\t']).map_or("", |(_, t)| t);
                text.replace("$v", version).replace("$$", "$")
            })
            .collect()
    }
}

/// Everything a session needs to know, fixed for the connection.
#[derive(Clone)]
pub struct SessionContext {
    /// `$j`, the host name in replies.
    pub hostname: String,
    /// The expanded `SmtpGreetingMessage` (without `ESMTP`, which is inserted).
    pub greeting: String,
    /// `Name=` of the daemon (`MTA-v6`), for the log.
    pub daemon_name: String,
    /// `M=` letters of the daemon (`E` no ETRN, `a` AUTH required, ...).
    pub daemon_flags: String,
    pub client: ClientInfo,
    /// `MaxMessageSize` (0: none; [`super::body::HARD_MAX_MESSAGE`] still applies).
    pub max_message_size: u64,
    /// `MaxHeadersLength` (0: none).
    pub max_headers_length: u64,
    /// `SevenBitInput`: messages are cut to seven bits unless `BODY=8BITMIME`.
    pub seven_bit_input: bool,
    /// `MaxRecipientsPerMessage` (0: none).
    pub max_recipients: u32,
    pub features: Features,
    pub privacy: Privacy,
    /// `LogLevel`.
    pub log_level: u32,
    /// `$v` for HELP and `HELP not implemented`.
    pub version: String,
    /// The HelpFile; `None` when absent or unreadable.
    pub help: Option<Arc<HelpText>>,
    /// Set when `check_relay` refused the client: every transaction command gets this
    /// reply and EHLO offers only ENHANCEDSTATUSCODES (sendmail's "nullserver").
    pub connect_reject: Option<Reply>,
    pub policy: Arc<dyn Policy>,
    pub ids: Arc<QueueIdGen>,
    /// What STARTTLS and AUTH may offer.
    pub security: Security,
    /// The macros defined at connect (`$_`, `${client_addr}`, `${daemon_name}` …), for the
    /// cf's check rulesets ([`crate::rules::smtp_macros`]).
    pub macros: Arc<BTreeMap<String, String>>,
    /// `BadRcptThrottle` (0: off).
    pub bad_rcpt_throttle: u32,
}

// ---------------------------------------------------------------------------------------
// The policy hook.

/// What the policy sees of the session.
#[derive(Debug, Clone, Copy)]
pub struct PolicyContext<'a> {
    pub client: &'a ClientInfo,
    pub helo: Option<&'a str>,
    pub daemon_name: &'a str,
    pub daemon_flags: &'a str,
    /// The envelope id (for log lines).
    pub qid: &'a str,
    /// The accepted sender (RCPT checks only).
    pub sender: Option<&'a Address>,
    /// Who authenticated (AUTH), for relaying and `${auth_type}`.
    pub auth: Option<&'a AuthInfo>,
    /// The TLS parameters, for `${verify}`, `${tls_version}` ….
    pub tls: Option<&'a TlsInfo>,
    /// The connection's macros ([`SessionContext::macros`]).
    pub macros: &'a BTreeMap<String, String>,
    /// `$r`: `SMTP`, `ESMTP` ….
    pub protocol: &'a str,
    /// Recipients accepted so far in this transaction (`${nrcpts}`).
    pub nrcpts: usize,
    /// MAIL's `SIZE=` (`${msg_size}`).
    pub msg_size: Option<u64>,
}

/// A policy's answer to MAIL or RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Accept; the reply echoes the address as the client wrote it.
    Accept,
    /// Accept; the reply echoes this text instead (`<postmaster>` for `<POSTMASTER>`).
    AcceptAs(String),
    /// Refuse with `reply`. `log`: the line to log at notice (e.g. `ruleset=check_rcpt,
    /// arg1=..., reject=...`); `None` logs the reply text as sendmail logs a user error.
    Reject { reply: Reply, log: Option<String> },
    /// Accept, but throw the message away at its end (a ruleset's `$#discard`, the access
    /// map's `DISCARD`): `log` is the notice sendmail logs now (`ruleset=check_rcpt,
    /// arg1=<a@b>, relay=…, discard`); the message is answered `250` and logged
    /// `discarded` instead of being queued.
    Discard { log: String },
    /// Accept, and queue the message held (a ruleset's `$#error $@ quarantine $: reason`,
    /// the access map's `QUARANTINE:reason`): `log` is sendmail's notice (`ruleset=…,
    /// arg1=…, relay=…, quarantine=reason`).
    Quarantine { log: String, reason: String },
}

/// Decisions the session leaves to the rules/alias layers (wired by the caller).
pub trait Policy: Send + Sync {
    /// check_mail: may this sender send?
    fn check_mail(
        &self,
        ctx: &PolicyContext<'_>,
        sender: &Address,
        params: &MailParams,
    ) -> Decision;

    /// check_rcpt plus the recipient lookup: relay allowed, user known?
    fn check_rcpt(&self, ctx: &PolicyContext<'_>, rcpt: &Address, params: &RcptParams) -> Decision;

    /// What makes two accepted recipients one (the mailbox they reach, e.g. `local:root`
    /// for `ROOT@host` and `"root"`); `None`: the address as echoed. A recipient whose key
    /// is already in the transaction is answered with the first one's echo and kept once.
    fn recipient_key(&self, _ctx: &PolicyContext<'_>, _rcpt: &Address) -> Option<String> {
        None
    }

    /// The VRFY answer. Default: sendmail's `PrivacyOptions=novrfy` reply.
    fn vrfy(&self, _ctx: &PolicyContext<'_>, _arg: &str) -> Reply {
        reply::cannot_vrfy()
    }

    /// The EXPN answer (only asked when [`Features::expn`] is set).
    fn expn(&self, _ctx: &PolicyContext<'_>, _arg: &str) -> Reply {
        reply::not_allowed()
    }

    /// Starts a queue run for ETRN (only asked when [`Features::etrn`] is set).
    fn etrn(&self, _ctx: &PolicyContext<'_>, node: &str) -> Reply {
        reply::etrn_started(node)
    }
}

// ---------------------------------------------------------------------------------------
// What comes out.

/// One log line for the driver to write with `Logger::log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub severity: Severity,
    /// The envelope id, or `None` for `NOQUEUE`.
    pub qid: Option<String>,
    pub text: String,
}

/// An accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub addr: Address,
    /// The form echoed in `Recipient ok` (and logged in `to=`).
    pub shown: String,
    pub params: RcptParams,
}

/// A finished message for the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The envelope id assigned at MAIL; the `250 <qid> Message accepted` reply uses it.
    pub qid: String,
    pub sender: Address,
    pub mail_params: MailParams,
    pub recipients: Vec<Recipient>,
    /// Dot-unstuffed body with `\n` line ends, but for the `spilled` bytes that the
    /// driver handed to [`super::conn::MessageSink::spill`], which belong at `spill_at`.
    pub body: Vec<u8>,
    /// Bytes of the message taken out during receipt (0: `body` is the whole message).
    pub spilled: u64,
    /// Where in `body` the spilled bytes belong.
    pub spill_at: usize,
    /// HELO/EHLO name, `None` if the client never said HELO (Authentication-Warning).
    pub helo: Option<String>,
    /// `ESMTP` after EHLO (`ESMTPS`, `ESMTPA`, `ESMTPSA` with TLS/AUTH), else `SMTP`.
    pub protocol: &'static str,
    pub client: ClientInfo,
    pub daemon_name: String,
    /// The session's TLS parameters (the `Received:` comment).
    pub tls: Option<TlsInfo>,
    /// Who authenticated.
    pub auth: Option<AuthInfo>,
    /// Set by a content filter (milter `SMFIR_QUARANTINE`): queue the message held, with
    /// this reason.
    pub quarantine: Option<String>,
    /// A check ruleset discarded the transaction ([`Decision::Discard`]): log it, answer
    /// `250`, queue nothing.
    pub discard: bool,
    /// The text of the transaction's last refused recipient (sendmail's `e_message`).
    pub last_error: Option<String>,
}

impl Message {
    /// sendmail's `from=` log line for this message (`msgid` from its Message-Id header).
    pub fn from_log_line(&self, msgid: Option<&str>) -> String {
        self.from_log_line_sized(self.body.len() as u64 + self.spilled, 0, msgid)
    }

    /// The `from=` line for a message of `size` bytes (its body already moved on) of
    /// precedence class `class` (sendmail's `e_class`).
    pub fn from_log_line_sized(&self, size: u64, class: i32, msgid: Option<&str>) -> String {
        from_line(
            &self.sender.raw,
            size,
            class,
            self.recipients.len(),
            msgid,
            self.mail_params.body,
            self.protocol,
            &self.daemon_name,
            &self.client,
        )
    }
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Reply(Reply),
    Log(LogLine),
    /// Sleep before the next reply (anti-abuse).
    Delay(Duration),
    /// From now on feed raw bytes to [`Session::data`] until it stops wanting them.
    StartData,
    /// Store this message durably, then call [`Session::committed`].
    Commit(Box<Message>),
    /// Drop any input already received and run the server side of a TLS handshake, then
    /// call [`Session::tls_started`] (or [`Session::tls_failed`]).
    StartTls,
    /// Flush and close the connection.
    Close,
    /// Ask the content filters (milters), then call [`Session::filtered`] with their answer;
    /// only then does the command get its reply.
    Filter(FilterCall),
}

/// An accepted RCPT not yet counted: its duplicate key and whether it repeats one.
#[derive(Debug)]
struct NewRecipient {
    key: Option<String>,
    rcpt: Recipient,
    duplicate: bool,
}

/// A command whose reply waits for the filters.
#[derive(Debug)]
enum Pending {
    Connect,
    Helo(Reply),
    Mail(Reply),
    Rcpt(Reply, NewRecipient),
    Data,
    /// Told only (rejected RCPT, unknown command, abort): no answer is awaited.
    Nothing,
}

/// Counters for the listener (connection statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Messages committed.
    pub messages: u32,
    /// Body bytes of committed messages.
    pub bytes: u64,
    /// Recipients refused.
    pub rejected_rcpts: u32,
    /// MAIL/EXPN/VRFY/ETRN was issued.
    pub mail_issued: bool,
    /// TLS handshakes completed, and failed.
    pub tls_handshakes: u32,
    pub tls_failures: u32,
    /// AUTH attempts that failed.
    pub auth_failures: u32,
}

// ---------------------------------------------------------------------------------------
// The machine.

#[derive(Debug)]
enum State {
    /// Reading commands.
    Command,
    /// Reading a DATA body.
    Data(DataReader),
    /// Reading the octets of a BDAT chunk.
    Chunk(bdat::Chunk),
    /// Waiting for [`Session::committed`]; the body size.
    Committing(u64),
    /// Waiting for the client's answer to an AUTH challenge.
    Auth(crate::auth::Exchange),
    Closed,
}

#[derive(Debug)]
struct Transaction {
    sender: Address,
    params: MailParams,
    rcpts: Vec<Recipient>,
    /// [`Policy::recipient_key`] of each recipient kept → its echo.
    keys: std::collections::HashMap<String, String>,
    /// Successful RCPT commands (duplicates included), for MaxRecipientsPerMessage.
    accepted: usize,
    started: Instant,
    /// The BDAT chunks received so far (`None` until the first BDAT).
    chunks: Option<ChunkReader>,
    /// A check ruleset said `$#discard` for the sender or a recipient.
    discard: bool,
    /// A check ruleset quarantined the transaction, with this reason.
    quarantine: Option<String>,
    /// The text of the last recipient refused in this transaction (sendmail's
    /// `e_message`, the queue file's M line that mailq shows in parentheses): a 5xx
    /// replaces it, a 4xx only fills it.
    last_error: Option<String>,
}

/// One SMTP session.
pub struct Session {
    ctx: SessionContext,
    state: State,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    /// Sender to log in `from=` when the transaction ends unfinished (EF_LOGSENDER).
    log_sender: Option<(String, Option<command::BodyType>)>,
    qid: Option<String>,
    /// sendmail's "nullserver": the reply to (almost) every command after a `check_relay`
    /// refusal or a pipelining violation.
    nullserver: Option<Reply>,
    /// `stats.rejected_rcpts` when the current MAIL was accepted: sendmail's `n_badrcpts`
    /// (BadRcptThrottle) counts the refused recipients of one transaction only.
    rejected_before_mail: u32,
    /// The `Possible SMTP RCPT flood` line of this transaction was logged (sendmail bumps
    /// its bad-RCPT count past the limit so that it is logged once, even when accepted
    /// RCPTs follow).
    rcpt_flood_logged: bool,
    /// The Message-Id of a message just refused for its size, for its `from=` line.
    msgid_of_refused: Option<String>,
    first_command: bool,
    last_cmd: String,
    stats: SessionStats,
    n_helo: u32,
    n_vrfy: u32,
    n_etrn: u32,
    n_noop: u32,
    n_auth: u32,
    n_bad: u32,
    verbose: bool,
    sec: security::SecurityState,
    /// The greeting to send instead of the configured one (pre-greeting traffic).
    greeting_override: Option<Reply>,
    /// Content filters are consulted (see [`Action::Filter`]).
    filters: bool,
    pending: Option<Pending>,
    /// The current command line, for the filters' MAIL/RCPT arguments.
    line: String,
    /// The filters refused the connection: the greeting is a 554.
    greet_refused: bool,
}

impl Session {
    pub fn new(ctx: SessionContext) -> Session {
        Session {
            state: State::Command,
            helo: None,
            esmtp: false,
            tx: None,
            log_sender: None,
            qid: None,
            nullserver: ctx.connect_reject.clone(),
            rejected_before_mail: 0,
            rcpt_flood_logged: false,
            msgid_of_refused: None,
            first_command: true,
            last_cmd: "startup".to_owned(),
            stats: SessionStats::default(),
            n_helo: 0,
            n_vrfy: 0,
            n_etrn: 0,
            n_noop: 0,
            n_auth: 0,
            n_bad: 0,
            verbose: false,
            sec: security::SecurityState::default(),
            greeting_override: None,
            filters: false,
            pending: None,
            line: String::new(),
            greet_refused: false,
            ctx,
        }
    }

    /// Consults content filters from now on: the driver first asks them about the connection
    /// ([`FilterCall::Connect`], answered through [`Session::filtered`] before the greeting).
    pub fn enable_filters(&mut self) -> FilterCall {
        self.filters = true;
        self.pending = Some(Pending::Connect);
        FilterCall::Connect
    }

    /// True when content filters are consulted.
    pub fn filters_enabled(&self) -> bool {
        self.filters
    }

    /// The filters' answer to the last [`Action::Filter`]: the command's reply now.
    pub fn filtered(&mut self, verdict: FilterVerdict) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(pending) = self.pending.take() else {
            return out;
        };
        if let FilterVerdict::Shutdown(r) = &verdict {
            if matches!(pending, Pending::Connect) {
                self.ctx.connect_reject = Some(r.clone());
                return out;
            }
            out.push(Action::Reply(r.clone()));
            self.end_session(false, 0, &mut out);
            return out;
        }
        let refusal = match verdict {
            FilterVerdict::Refuse(r) => Some(r),
            _ => None,
        };
        match pending {
            Pending::Connect | Pending::Helo(_) => {
                if let Some(r) = refusal {
                    if matches!(pending, Pending::Connect) && r.code >= 500 {
                        self.greet_refused = true;
                    }
                    self.nullserver = Some(r);
                }
                if let Pending::Helo(reply) = pending {
                    out.push(Action::Reply(reply));
                }
            }
            Pending::Mail(reply) => match refusal {
                None => out.push(Action::Reply(reply)),
                Some(r) => {
                    self.tx = None;
                    out.push(Action::Reply(r));
                }
            },
            Pending::Rcpt(reply, rcpt) => match refusal {
                None => {
                    out.push(Action::Reply(reply));
                    self.add_recipient(rcpt);
                }
                Some(mut r) => {
                    // sendmail's usrerr() names the recipient being refused.
                    if let Some(first) = r.lines.first_mut() {
                        *first = format!("{}... {first}", rcpt.rcpt.shown);
                    }
                    self.stats.rejected_rcpts += 1;
                    self.user_error(r, &mut out);
                }
            },
            Pending::Data => match refusal {
                None => self.start_data(&mut out),
                Some(r) => self.user_error(r, &mut out),
            },
            Pending::Nothing => {}
        }
        out
    }

    /// Asks the filters about `call` before `pending`'s reply.
    fn ask_filters(&mut self, call: FilterCall, pending: Pending, out: &mut Vec<Action>) {
        if call.wants_verdict() {
            self.pending = Some(pending);
        }
        out.push(Action::Filter(call));
    }

    /// `<address>` and the ESMTP arguments of the current MAIL/RCPT line.
    fn filter_args(&self) -> Vec<String> {
        let rest = self.line.split_once(':').map_or("", |(_, r)| r).trim();
        let mut words = rest.split_whitespace().map(String::from);
        let mut args = Vec::new();
        if let Some(first) = words.next() {
            args.push(if first.starts_with('<') {
                first
            } else {
                format!("<{first}>")
            });
        }
        args.extend(words);
        args
    }

    /// The greeting: `220 <host> ESMTP ...`. A `421` connection refusal is sent instead of
    /// it, and the session is then over.
    pub fn greeting(&mut self) -> Reply {
        if let Some(r) = &self.ctx.connect_reject
            && r.code == 421
        {
            self.state = State::Closed;
            return r.clone();
        }
        if let Some(r) = self.greeting_override.take() {
            return r;
        }
        if self.greet_refused {
            return reply::not_accepting(&self.ctx.hostname);
        }
        reply::greeting(&self.ctx.greeting)
    }

    /// FEATURE(greet_pause): the client spoke `after` the connect, before the greeting.
    /// The greeting becomes `554 <host> ESMTP not accepting messages` and every later
    /// command is refused ("nullserver"), with sendmail's log line.
    pub fn pre_greeting_traffic(&mut self, after: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        let addr = self
            .ctx
            .client
            .ip
            .map(format_ip)
            .unwrap_or_else(|| "0".to_owned());
        let text = format!(
            "rejecting commands from {} [{addr}] due to pre-greeting traffic after {} seconds",
            self.ctx.client.host_name(),
            after.as_secs()
        );
        self.log(Severity::Info, true, text, &mut out);
        self.nullserver = Some(reply::command_rejected());
        self.greeting_override = Some(reply::not_accepting_messages(&self.ctx.hostname));
        out
    }

    /// The context the session was made with.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// True while DATA bytes or BDAT octets are expected.
    pub fn wants_data(&self) -> bool {
        matches!(self.state, State::Data(_) | State::Chunk(_))
    }

    /// A message body is being received (DATA, or BDAT chunks so far) and no limit is
    /// broken yet: bytes taken out with [`Session::take_spill`] still belong to a message.
    pub fn receiving(&self) -> bool {
        match &self.state {
            State::Data(r) => r.body().intact(),
            State::Chunk(c) if c.feeding() => self.chunks_intact(),
            State::Command => self.chunks_intact(),
            _ => false,
        }
    }

    /// Bytes of the message being received beyond what it keeps in memory, once there are
    /// at least `min` (see [`super::body::BodyBuf::take_spill`]).
    pub fn take_spill(&mut self, min: usize) -> Option<Vec<u8>> {
        match &mut self.state {
            State::Data(r) => r.body_mut().take_spill(min),
            State::Chunk(_) | State::Command => self
                .tx
                .as_mut()
                .and_then(|t| t.chunks.as_mut())
                .and_then(|c| c.body_mut().take_spill(min)),
            _ => None,
        }
    }

    fn chunks_intact(&self) -> bool {
        self.tx
            .as_ref()
            .and_then(|t| t.chunks.as_ref())
            .is_some_and(|c| c.body().intact())
    }

    /// True once the session has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The counters so far.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// VERB was given.
    pub fn is_verbose(&self) -> bool {
        self.verbose
    }

    /// Handles one command line (terminator removed). `more_input`: the client has already
    /// sent more bytes after this line (needed for the HELO/EHLO/DATA pipelining check).
    pub fn handle(&mut self, line: &[u8], more_input: bool) -> Vec<Action> {
        let mut out = Vec::new();
        if matches!(self.state, State::Auth(_)) {
            return self.auth_response(&String::from_utf8_lossy(line));
        }
        if !matches!(self.state, State::Command) {
            // Lines are not expected now; the driver is out of step.
            return out;
        }
        // A NUL ends the command (sendmail keeps it as a C string; see command::parse_with).
        let line = line.split(|&b| b == 0).next().unwrap_or_default();
        let text: String = line.iter().map(|&b| char::from(b & 0x7f)).collect();
        if self.ctx.log_level > 14 {
            let shown = security::loggable(&text);
            self.log(Severity::Info, true, format!("<-- {shown}"), &mut out);
        }
        if std::mem::take(&mut self.first_command) && is_proxy_command(&text) {
            let text = format!(
                "{}: probable open proxy: command={}",
                self.ctx.client.display(),
                text.chars().take(40).collect::<String>()
            );
            self.log(Severity::Info, true, text, &mut out);
            out.push(Action::Reply(reply::open_proxy(
                &self.ctx.hostname,
                &self.ctx.client.display(),
            )));
            self.end_session(false, 0, &mut out);
            return out;
        }
        let ext = command::Extensions {
            dsn: self.ctx.features.dsn,
            deliverby: self.ctx.features.deliverby,
            deliver_by_min: self.ctx.features.deliver_by_min,
            smtputf8: self.ctx.features.smtputf8 && self.nullserver.is_none(),
        };
        let cmd = command::parse_with(line, &ext);
        if self.filters {
            self.line.clone_from(&text);
        }
        self.last_cmd = match &cmd {
            // sendmail names the last *known* command; unknown ones leave "startup".
            Command::Unrecognized(_) => "startup".to_owned(),
            Command::Bdat(_) if !self.chunking_offered() => "startup".to_owned(),
            Command::NotImplemented(t) => first_word(t).to_ascii_lowercase(),
            other => other.name().to_owned(),
        };
        if matches!(
            cmd,
            Command::Mail(_) | Command::Vrfy(_) | Command::Expn(_) | Command::Etrn(_)
        ) {
            self.stats.mail_issued = true;
        }
        if let Some(refusal) = self.nullserver.clone() {
            let normal = matches!(
                cmd,
                Command::Quit
                    | Command::Helo(_)
                    | Command::Ehlo(_)
                    | Command::Noop
                    | Command::Rset
                    | Command::Unrecognized(_)
                    | Command::Bdat(_)
            );
            if !normal {
                self.n_bad += 1;
                if self.n_bad > MAX_BAD_COMMANDS {
                    out.push(Action::Reply(reply::too_many_bad_commands(
                        &self.ctx.hostname,
                    )));
                    self.end_session(false, 0, &mut out);
                } else {
                    out.push(Action::Reply(refusal));
                }
                return out;
            }
        }
        match cmd {
            Command::Helo(arg) => self.helo_cmd(&arg, false, more_input, &mut out),
            Command::Ehlo(arg) => self.helo_cmd(&arg, true, more_input, &mut out),
            Command::Mail(m) => self.mail(m, &mut out),
            Command::Rcpt(r) => self.rcpt(r, &mut out),
            Command::Data => self.data_cmd(more_input, &mut out),
            Command::Rset => {
                out.push(Action::Reply(reply::reset()));
                self.clear_state("RSET", &mut out);
            }
            Command::Noop => {
                self.attack_check(Counter::Noop, "NOOP", &mut out);
                out.push(Action::Reply(reply::noop()));
            }
            Command::Verb => {
                if !(self.expn_offered() && self.ctx.features.verb && !self.ctx.privacy.noverb) {
                    out.push(Action::Reply(reply::verbose_unavailable()));
                } else {
                    self.attack_check(Counter::Noop, "VERB", &mut out);
                    self.verbose = true;
                    out.push(Action::Reply(reply::verbose()));
                }
            }
            Command::Help(topic) => self.help(&topic, &mut out),
            Command::Quit => self.quit(&mut out),
            Command::Vrfy(arg) => self.vrfy_expn(&text, &arg, false, &mut out),
            Command::Expn(arg) => self.vrfy_expn(&text, &arg, true, &mut out),
            Command::Etrn(arg) => self.etrn(&text, &arg, &mut out),
            Command::StartTls => self.starttls_cmd(rest_after_verb(&text), &mut out),
            Command::Auth(arg) => self.auth_cmd(&arg, &mut out),
            Command::NotImplemented(t) => out.push(Action::Reply(reply::not_implemented(&t))),
            Command::Bdat(arg) => self.bdat_cmd(&text, arg, &mut out),
            Command::Unrecognized(_) => {
                if self.filters && self.nullserver.is_none() {
                    let call = FilterCall::Unknown { line: text.clone() };
                    self.ask_filters(call, Pending::Nothing, &mut out);
                }
                self.bad_command(&text, &mut out)
            }
        }
        out
    }

    /// Feeds DATA bytes; returns how many were consumed (the rest are commands).
    pub fn data(&mut self, input: &[u8]) -> (usize, Vec<Action>) {
        if matches!(self.state, State::Chunk(_)) {
            return self.chunk_data(input);
        }
        let mut out = Vec::new();
        let State::Data(reader) = &mut self.state else {
            return (0, out);
        };
        let (used, end) = reader.feed(input);
        let Some(end) = end else {
            return (used, out);
        };
        let State::Data(reader) = std::mem::replace(&mut self.state, State::Command) else {
            return (used, out);
        };
        match end {
            DataEnd::Complete => self.finish_body(reader.into_body(), &mut out),
            DataEnd::BareLf | DataEnd::BareCr => {
                let (size, in_header) = (reader.size(), reader.in_header());
                self.bare_line_end(end, size, in_header, &mut out);
            }
        }
        (used, out)
    }

    /// The queue's answer to [`Action::Commit`]: `Ok` once the message is durable, or the
    /// reply to give (a 4xx).
    pub fn committed(&mut self, result: Result<(), Reply>) -> Vec<Action> {
        let mut out = Vec::new();
        let State::Committing(size) = self.state else {
            return out;
        };
        self.state = State::Command;
        match result {
            Ok(()) => {
                let qid = self.qid();
                self.stats.messages += 1;
                self.stats.bytes += size;
                out.push(Action::Reply(reply::accepted(&qid)));
            }
            Err(r) => out.push(Action::Reply(r)),
        }
        self.qid = None;
        out
    }

    /// The peer closed the connection (or reading failed).
    pub fn connection_lost(&mut self) -> Vec<Action> {
        self.connection_lost_after(false)
    }

    /// The connection ended; `timed_out`: by the read timeout (already logged).
    fn connection_lost_after(&mut self, timed_out: bool) -> Vec<Action> {
        let mut out = Vec::new();
        if self.is_closed() {
            return out;
        }
        let in_tx = self.tx.is_some();
        let level = self.ctx.log_level;
        if !timed_out && matches!(self.state, State::Data(_)) {
            // a close in the middle of DATA is collect()'s, as the oracle logs it
            // (85-quit-mid-data): no "lost input channel" line
            if level > 0 {
                self.log(
                    Severity::Warning,
                    true,
                    "collect: premature EOM: unexpected close".to_string(),
                    &mut out,
                );
            }
            if level > 1 {
                let from = self
                    .log_sender
                    .as_ref()
                    .map(|s| s.0.clone())
                    .unwrap_or_default();
                let text = format!(
                    "collect: relay={}, from={from}, info=unexpected close",
                    self.ctx.client.host_name()
                );
                self.log(Severity::Notice, true, text, &mut out);
            }
        } else if (in_tx && level > 1) || level > 19 {
            let text = format!(
                "lost input channel from {} to {} after {}",
                self.ctx.client.display(),
                self.ctx.daemon_name,
                self.last_cmd
            );
            self.log(Severity::Notice, true, text, &mut out);
        }
        out.push(Action::Reply(reply::lost_input(
            &self.ctx.hostname,
            &self.ctx.client.display(),
        )));
        let size = self.data_size();
        self.end_session(false, size, &mut out);
        out
    }

    /// No input within the timeout; `during` names the phase as sendmail does
    /// (`server cmd read`, `message collect`). Inside DATA the client also gets
    /// `451 4.4.1 timeout waiting for input during message collect`; then the session ends
    /// as for a lost connection.
    pub fn timed_out(&mut self, during: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if self.is_closed() {
            return out;
        }
        if self.ctx.log_level > 1 {
            let text = format!(
                "timeout waiting for input from {} during {during}",
                self.ctx.client.host_name()
            );
            self.log(Severity::Notice, true, text, &mut out);
        }
        if self.wants_data() {
            out.push(Action::Reply(reply::timeout(during)));
        }
        out.extend(self.connection_lost_after(true));
        out
    }

    /// The daemon is stopping: called at a command boundary.
    pub fn shutdown(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.is_closed() {
            return out;
        }
        out.push(Action::Reply(reply::shutting_down(&self.ctx.hostname)));
        self.end_session(false, 0, &mut out);
        out
    }

    /// A command line longer than the limit: `len` bytes including its terminator.
    pub fn line_too_long(&mut self, len: usize) -> Vec<Action> {
        let mut out = Vec::new();
        if self.is_closed() {
            return out;
        }
        let text = format!(
            "{}: SMTP violation, input too long: {len}",
            self.ctx.client.display()
        );
        self.log(Severity::Info, true, text, &mut out);
        out.push(Action::Reply(reply::command_too_long(
            &self.ctx.hostname,
            &self.ctx.client.display(),
        )));
        self.end_session(false, 0, &mut out);
        out
    }

    // ------------------------------------------------------------------------------
    // Command handlers.

    fn helo_cmd(&mut self, arg: &str, ehlo: bool, more_input: bool, out: &mut Vec<Action>) {
        let verb = if ehlo { "EHLO" } else { "HELO" };
        self.attack_check(Counter::Helo, "HELO/EHLO", out);
        if more_input {
            self.pipelining_violation(verb, out);
            self.nullserver = Some(reply::command_rejected());
            return;
        }
        let name = match check_helo_name(arg) {
            Ok(name) => name.to_owned(),
            Err(command::HeloError::Missing) => {
                out.push(Action::Reply(reply::helo_requires_domain(verb)));
                return;
            }
            Err(command::HeloError::Invalid(shown)) => {
                out.push(Action::Reply(reply::invalid_domain()));
                if self.ctx.log_level > 9 {
                    let text = format!(
                        "invalid domain name ({shown}) from {}",
                        self.ctx.client.display()
                    );
                    self.log(Severity::Info, true, text, out);
                }
                return;
            }
        };
        if self.helo.is_some() || self.tx.is_some() {
            self.clear_state(verb, out);
        }
        self.helo = Some(name);
        self.esmtp = ehlo;
        let client = self.ctx.client.display();
        let r = if ehlo {
            reply::ehlo(&self.ctx.hostname, &client, &self.ehlo_keywords())
        } else {
            reply::helo(&self.ctx.hostname, &client)
        };
        if self.filters && self.nullserver.is_none() {
            let name = self.helo.clone().unwrap_or_default();
            let macros = self
                .sec
                .tls
                .iter()
                .flat_map(|t| t.macros())
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            self.ask_filters(FilterCall::Helo { name, macros }, Pending::Helo(r), out);
            return;
        }
        out.push(Action::Reply(r));
    }

    /// The EHLO keywords, in sendmail's order, for what is really available.
    pub fn ehlo_keywords(&self) -> Vec<String> {
        let mut k = vec!["ENHANCEDSTATUSCODES".to_owned()];
        if self.nullserver.is_some() {
            return k;
        }
        let f = &self.ctx.features;
        if f.pipelining {
            k.push("PIPELINING".into());
        }
        if self.expn_offered() {
            k.push("EXPN".into());
            if f.verb && !self.ctx.privacy.noverb {
                k.push("VERB".into());
            }
        }
        if f.eightbitmime {
            k.push("8BITMIME".into());
        }
        if self.ctx.max_message_size > 0 {
            k.push(format!("SIZE {}", self.ctx.max_message_size));
        } else {
            k.push("SIZE".into());
        }
        if f.dsn {
            k.push("DSN".into());
        }
        if f.smtputf8 {
            k.push("SMTPUTF8".into());
        }
        if f.chunking {
            k.push("CHUNKING".into());
        }
        if self.etrn_allowed() {
            k.push("ETRN".into());
        }
        let mechs = self.auth_mechanisms();
        if !mechs.is_empty() {
            k.push(format!("AUTH {}", mechs.join(" ")));
        }
        if self.starttls_offered() {
            k.push("STARTTLS".into());
        }
        if f.deliverby && f.deliver_by_min > 0 {
            k.push(format!("DELIVERBY {}", f.deliver_by_min));
        } else if f.deliverby {
            k.push("DELIVERBY".into());
        }
        k.push("HELP".into());
        k
    }

    fn expn_offered(&self) -> bool {
        self.ctx.features.expn && !self.ctx.privacy.noexpn
    }

    fn etrn_allowed(&self) -> bool {
        self.ctx.features.etrn && !self.ctx.privacy.noetrn && !self.ctx.daemon_flags.contains('E')
    }

    fn mail(&mut self, m: Result<MailFrom, ArgError>, out: &mut Vec<Action>) {
        if self.ctx.privacy.needmailhelo && self.helo.is_none() {
            out.push(Action::Reply(reply::polite_helo_first()));
            return;
        }
        if self.tx.is_some() {
            out.push(Action::Reply(reply::sender_already_specified()));
            return;
        }
        if self.auth_required() {
            out.push(Action::Reply(reply::auth_required()));
            return;
        }
        if let Err(ArgError::Syntax(_)) = &m {
            // skipword failed: nothing else happens.
        } else if self.helo.is_none() && self.ctx.privacy.authwarnings {
            let text = format!(
                "Authentication-Warning: {}: {} didn't use HELO protocol",
                self.ctx.hostname,
                self.ctx.client.display()
            );
            self.log(Severity::Info, true, text, out);
        }
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                out.push(Action::Reply(e.reply()));
                return;
            }
        };
        let body = m.params.as_ref().ok().and_then(|p| p.body);
        self.log_sender = Some((m.path.raw.clone(), body));
        let params = match m.params {
            Ok(p) => p,
            Err(e) => {
                out.push(Action::Reply(e.reply()));
                return;
            }
        };
        if let Some(r) = Session::non_ascii_refusal(&m.path, params.smtputf8) {
            out.push(Action::Reply(r));
            return;
        }
        let qid = self.qid();
        let decision = {
            let pctx = PolicyContext {
                msg_size: params.size,
                ..self.policy_context(&qid, None)
            };
            self.ctx.policy.check_mail(&pctx, &m.path, &params)
        };
        let mut discard = false;
        let mut quarantine = None;
        let shown = match decision {
            Decision::Accept => m.path.raw.clone(),
            Decision::AcceptAs(s) => s,
            Decision::Discard { log } => {
                self.log(Severity::Notice, true, log, out);
                discard = true;
                m.path.raw.clone()
            }
            Decision::Quarantine { log, reason } => {
                self.log(Severity::Notice, true, log, out);
                quarantine = Some(reason);
                m.path.raw.clone()
            }
            Decision::Reject { reply, log } => {
                if let Some(text) = log {
                    self.log(Severity::Notice, true, text, out);
                }
                out.push(Action::Reply(reply));
                return;
            }
        };
        let max = self.limits().size_limit();
        if params.size.is_some_and(|s| s > max) {
            out.push(Action::Reply(reply::size_exceeds(max)));
            return;
        }
        if self.filters {
            let call = FilterCall::Mail {
                qid: qid.clone(),
                args: self.filter_args(),
                macros: self
                    .sec
                    .auth
                    .iter()
                    .flat_map(|a| a.macros())
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            };
            self.ask_filters(call, Pending::Mail(reply::sender_ok(&shown)), out);
        } else {
            out.push(Action::Reply(reply::sender_ok(&shown)));
        }
        self.tx = Some(Transaction {
            sender: m.path,
            params,
            rcpts: Vec::new(),
            keys: Default::default(),
            accepted: 0,
            started: Instant::now(),
            chunks: None,
            discard,
            quarantine,
            last_error: None,
        });
        self.rejected_before_mail = self.stats.rejected_rcpts;
        self.rcpt_flood_logged = false;
    }

    fn rcpt(&mut self, r: Result<RcptTo, ArgError>, out: &mut Vec<Action>) {
        if self.tx.is_none() {
            out.push(Action::Reply(reply::need_mail_before_rcpt()));
            return;
        }
        self.bad_rcpt_throttle(out);
        let max = self.ctx.max_recipients;
        let count = self.tx.as_ref().map_or(0, |t| t.accepted);
        if max > 0 && count >= max as usize {
            self.user_error(reply::too_many_recipients(), out);
            return;
        }
        let (path, params) = match r.and_then(|r| r.params.map(|p| (r.path, p))) {
            Ok(x) => x,
            Err(e) => {
                self.stats.rejected_rcpts += 1;
                // sendmail runs check_rcpt on `<>` too: Debian's cf answers it (`553 5.0.0
                // <>... User address required`, logged as the ruleset's reject)
                if let ArgError::UserAddressRequired(raw) = &e
                    && let Ok(null) = command::parse_path(raw)
                {
                    let qid = self.qid();
                    let sender = self.tx.as_ref().map(|t| &t.sender);
                    let pctx = self.policy_context(&qid, sender);
                    let d = self
                        .ctx
                        .policy
                        .check_rcpt(&pctx, &null, &RcptParams::default());
                    if let Decision::Reject {
                        reply,
                        log: Some(text),
                    } = d
                    {
                        self.log(Severity::Notice, true, text, out);
                        out.push(Action::Reply(reply));
                        return;
                    }
                }
                self.user_error(e.reply(), out);
                return;
            }
        };
        let smtputf8 = self.tx.as_ref().is_some_and(|t| t.params.smtputf8);
        if let Some(r) = Session::non_ascii_refusal(&path, smtputf8) {
            self.stats.rejected_rcpts += 1;
            self.user_error(r, out);
            return;
        }
        let qid = self.qid();
        let (decision, key) = {
            let sender = self.tx.as_ref().map(|t| &t.sender);
            let pctx = self.policy_context(&qid, sender);
            let d = self.ctx.policy.check_rcpt(&pctx, &path, &params);
            let key = match d {
                Decision::Reject { .. } => None,
                _ => self.ctx.policy.recipient_key(&pctx, &path),
            };
            (d, key)
        };
        let shown = match decision {
            Decision::Accept => path.raw.clone(),
            Decision::AcceptAs(s) => s,
            Decision::Discard { log } => {
                self.log(Severity::Notice, true, log, out);
                if let Some(tx) = self.tx.as_mut() {
                    tx.discard = true;
                }
                path.raw.clone()
            }
            Decision::Quarantine { log, reason } => {
                self.log(Severity::Notice, true, log, out);
                if let Some(tx) = self.tx.as_mut() {
                    tx.quarantine = Some(reason);
                }
                path.raw.clone()
            }
            Decision::Reject { reply, log } => {
                self.stats.rejected_rcpts += 1;
                self.note_refused(&reply);
                match log {
                    Some(text) => {
                        self.log(Severity::Notice, true, text, out);
                        out.push(Action::Reply(reply));
                    }
                    None => self.user_error(reply, out),
                }
                if self.filters {
                    let call = FilterCall::Rcpt {
                        args: self.filter_args(),
                        rejected: true,
                    };
                    self.ask_filters(call, Pending::Nothing, out);
                }
                return;
            }
        };
        let Some(tx) = &self.tx else {
            return;
        };
        // sendmail keeps one copy of a recipient given twice, however it is spelled
        // (nrcpts counts it once), and echoes the first spelling for the others.
        let first = match &key {
            Some(k) => tx.keys.get(k).cloned(),
            None => tx
                .rcpts
                .iter()
                .find(|x| x.shown == shown)
                .map(|x| x.shown.clone()),
        };
        let ok = reply::recipient_ok(first.as_deref().unwrap_or(&shown));
        let rcpt = Recipient {
            addr: path,
            shown,
            params,
        };
        let add = NewRecipient {
            key,
            rcpt,
            duplicate: first.is_some(),
        };
        if self.filters {
            let call = FilterCall::Rcpt {
                args: self.filter_args(),
                rejected: false,
            };
            self.ask_filters(call, Pending::Rcpt(ok, add), out);
            return;
        }
        out.push(Action::Reply(ok));
        self.add_recipient(add);
    }

    /// Counts an accepted RCPT and keeps the recipient unless it is a duplicate.
    fn add_recipient(&mut self, add: NewRecipient) {
        let Some(tx) = &mut self.tx else {
            return;
        };
        tx.accepted += 1;
        if add.duplicate {
            return;
        }
        if let Some(k) = add.key {
            tx.keys.insert(k, add.rcpt.shown.clone());
        }
        tx.rcpts.push(add.rcpt);
    }

    /// `BadRcptThrottle`: once this many RCPTs of the session were refused, each further
    /// RCPT waits a second first, and the first such wait is logged (`LogLevel` > 5) as
    /// sendmail logs it: `<client>: Possible SMTP RCPT flood, throttling.`
    fn bad_rcpt_throttle(&mut self, out: &mut Vec<Action>) {
        let limit = self.ctx.bad_rcpt_throttle;
        let bad = self.stats.rejected_rcpts - self.rejected_before_mail;
        if limit == 0 || bad < limit {
            return;
        }
        if bad == limit && !self.rcpt_flood_logged && self.ctx.log_level > 5 {
            self.rcpt_flood_logged = true;
            let text = format!(
                "{}: Possible SMTP RCPT flood, throttling.",
                self.ctx.client.display()
            );
            self.log(Severity::Info, true, text, out);
        }
        out.push(Action::Delay(Duration::from_secs(1)));
    }

    fn data_cmd(&mut self, more_input: bool, out: &mut Vec<Action>) {
        let Some(tx) = &self.tx else {
            out.push(Action::Reply(reply::need_mail()));
            return;
        };
        if tx.chunks.is_some() {
            out.push(Action::Reply(reply::data_after_bdat()));
            return;
        }
        if tx.rcpts.is_empty() {
            out.push(Action::Reply(reply::need_rcpt()));
            return;
        }
        if more_input {
            self.pipelining_violation("DATA", out);
            self.end_session(false, 0, out);
            return;
        }
        if self.filters {
            self.ask_filters(FilterCall::Data, Pending::Data, out);
            return;
        }
        self.start_data(out);
    }

    fn start_data(&mut self, out: &mut Vec<Action>) {
        self.state = State::Data(DataReader::new(self.limits()));
        out.push(Action::Reply(reply::start_data()));
        out.push(Action::StartData);
    }

    /// sendmail's help(): lines of the HelpFile whose key starts with the (lower-cased)
    /// topic; `smtp` without a topic.
    fn help(&mut self, topic: &str, out: &mut Vec<Action>) {
        let Some(help) = &self.ctx.help else {
            out.push(Action::Reply(reply::help_not_implemented(
                &self.ctx.version,
            )));
            return;
        };
        let asked = !topic.is_empty();
        let topic = if asked {
            topic.to_ascii_lowercase()
        } else {
            "smtp".to_owned()
        };
        let lines = help.topic(&topic, &self.ctx.version);
        if lines.is_empty() && asked {
            let shown: String = topic.chars().take(HELP_TOPIC_MAX).collect();
            out.push(Action::Reply(reply::help_unknown(&shown)));
        } else {
            out.push(Action::Reply(reply::help(&lines)));
        }
    }

    fn vrfy_expn(&mut self, line: &str, arg: &str, expn: bool, out: &mut Vec<Action>) {
        let verb = if expn { "EXPN" } else { "VRFY" };
        self.attack_check(Counter::Vrfy, verb, out);
        let p = self.ctx.privacy;
        let shown = format!(
            "{}: {}",
            self.ctx.client.display(),
            reply::shorten(line, reply::MAXSHORTSTR)
        );
        let refused = if expn { !self.expn_offered() } else { p.novrfy };
        if refused {
            out.push(Action::Reply(if expn {
                reply::not_allowed()
            } else {
                reply::cannot_vrfy()
            }));
            if self.ctx.log_level > 5 {
                self.log(Severity::Info, true, format!("{shown} [rejected]"), out);
            }
            return;
        }
        let need_helo = if expn { p.needexpnhelo } else { p.needvrfyhelo };
        if need_helo && self.helo.is_none() {
            out.push(Action::Reply(reply::introduce_yourself()));
            return;
        }
        if self.ctx.log_level > 5 {
            self.log(Severity::Info, true, shown, out);
        }
        if arg.is_empty() {
            out.push(Action::Reply(reply::argument_required()));
            return;
        }
        let qid = self.qid();
        let r = {
            let pctx = self.policy_context(&qid, None);
            if expn {
                self.ctx.policy.expn(&pctx, arg)
            } else {
                self.ctx.policy.vrfy(&pctx, arg)
            }
        };
        out.push(Action::Reply(r));
    }

    fn etrn(&mut self, line: &str, arg: &str, out: &mut Vec<Action>) {
        if !self.etrn_allowed() {
            out.push(Action::Reply(reply::not_allowed()));
            if self.ctx.log_level > 5 {
                let text = format!(
                    "{}: {} [rejected]",
                    self.ctx.client.display(),
                    reply::shorten(line, reply::MAXSHORTSTR)
                );
                self.log(Severity::Info, true, text, out);
            }
            return;
        }
        if arg.is_empty() {
            self.user_error(reply::parameter_required(), out);
            return;
        }
        self.attack_check(Counter::Etrn, "ETRN", out);
        if self.ctx.log_level > 5 {
            let text = format!(
                "{}: ETRN {}",
                self.ctx.client.display(),
                reply::shorten(arg, reply::MAXSHORTSTR)
            );
            self.log(Severity::Info, true, text, out);
        }
        let qid = self.qid();
        let r = {
            let pctx = self.policy_context(&qid, None);
            self.ctx.policy.etrn(&pctx, arg)
        };
        out.push(Action::Reply(r));
    }

    fn quit(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Reply(reply::closing(&self.ctx.hostname)));
        self.end_session(true, 0, out);
    }

    fn bad_command(&mut self, text: &str, out: &mut Vec<Action>) {
        let verb = first_word(text).to_ascii_lowercase();
        if matches!(verb.as_str(), "showq" | "debug" | "wiz") && self.ctx.log_level > 0 {
            let addr = self.ctx.client.ip.map_or("0".to_owned(), format_ip);
            let text = format!(
                "\"{verb}\" command from {} ({addr})",
                self.ctx.client.display()
            );
            self.log(Severity::Crit, true, text, out);
        }
        self.n_bad += 1;
        if self.n_bad > MAX_BAD_COMMANDS {
            out.push(Action::Reply(reply::too_many_bad_commands(
                &self.ctx.hostname,
            )));
            self.end_session(false, 0, out);
            return;
        }
        out.push(Action::Reply(reply::unrecognized(text)));
    }

    // ------------------------------------------------------------------------------
    // Bookkeeping.

    fn pipelining_violation(&mut self, verb: &str, out: &mut Vec<Action>) {
        let addr = self.ctx.client.ip.map_or("0".to_owned(), format_ip);
        let text = format!(
            "rejecting server {verb} from {} [{addr}] due to traffic before response",
            self.ctx.client.host_name()
        );
        self.log(Severity::Info, true, text, out);
        out.push(Action::Reply(reply::protocol_error()));
    }

    /// sendmail's `checksmtpattack`: past the limit, log once and delay 1, 2, 4... seconds.
    fn attack_check(&mut self, which: Counter, name: &str, out: &mut Vec<Action>) {
        let (count, max) = match which {
            Counter::Helo => (&mut self.n_helo, MAX_HELO_COMMANDS),
            Counter::Vrfy => (&mut self.n_vrfy, MAX_VRFY_COMMANDS),
            Counter::Etrn => (&mut self.n_etrn, MAX_ETRN_COMMANDS),
            Counter::Noop => (&mut self.n_noop, MAX_NOOP_COMMANDS),
            Counter::Auth(max) => (&mut self.n_auth, max),
        };
        *count += 1;
        let n = *count;
        if n < max {
            return;
        }
        if n == max && self.ctx.log_level > 5 {
            let text = format!(
                "{}: possible SMTP attack: command={name}, count={n}",
                self.ctx.client.display()
            );
            self.log(Severity::Info, true, text, out);
        }
        let shift = n - max;
        let delay = if shift >= 8 {
            MAX_ABUSE_DELAY
        } else {
            Duration::from_secs(1 << shift).min(MAX_ABUSE_DELAY)
        };
        out.push(Action::Delay(delay));
    }

    /// A user error reply; logged (as sendmail's usrerr) only inside a transaction.
    /// Keeps a refused recipient's text for the queue file's M line (sendmail's usrerr
    /// sets `e_message`: a permanent error always, a temporary one when there is none).
    fn note_refused(&mut self, r: &Reply) {
        if let Some(tx) = self.tx.as_mut()
            && (r.code >= 500 || tx.last_error.is_none())
        {
            tx.last_error = Some(r.text().to_string());
        }
    }

    fn user_error(&mut self, r: Reply, out: &mut Vec<Action>) {
        if self.tx.is_some() && self.ctx.log_level > 3 {
            self.log(Severity::Notice, true, r.text().to_owned(), out);
        }
        out.push(Action::Reply(r));
    }

    /// CLEAR_STATE: log the unfinished transaction, start a new envelope.
    fn clear_state(&mut self, why: &str, out: &mut Vec<Action>) {
        if self.filters && self.tx.is_some() {
            self.ask_filters(FilterCall::Abort, Pending::Nothing, out);
        }
        self.log_undelivered(why, 10, out);
        self.finish_transaction(out);
    }

    /// `to=<r>, delay=..., pri=0, stat=<why>` for each accepted recipient, newest first
    /// (LogLevel > `level`).
    fn log_undelivered(&mut self, why: &str, level: u32, out: &mut Vec<Action>) {
        if self.ctx.log_level <= level {
            return;
        }
        let Some(tx) = &self.tx else { return };
        let delay = format_delay(tx.started.elapsed());
        let mut seen: Vec<&str> = Vec::new();
        let mut lines = Vec::new();
        for r in tx.rcpts.iter().rev() {
            if seen.contains(&r.shown.as_str()) {
                continue;
            }
            seen.push(&r.shown);
            lines.push(format!("to={}, delay={delay}, pri=0, stat={why}", r.shown));
        }
        for text in lines {
            self.log(Severity::Info, true, text, out);
        }
    }

    /// Ends the transaction: the `from=` line of an unfinished one (LogLevel > 4), a fresh
    /// envelope id next time.
    /// A transaction that ends before its message: sendmail's `from=` says `size=` of the
    /// MAIL command's `SIZE=` (e_msgsize is set from it), else 0 (oracle).
    fn finish_transaction(&mut self, out: &mut Vec<Action>) {
        let announced = self.tx.as_ref().and_then(|t| t.params.size).unwrap_or(0);
        self.finish_transaction_sized(announced, out);
    }

    fn finish_transaction_sized(&mut self, size: u64, out: &mut Vec<Action>) {
        let nrcpts = self.tx.as_ref().map_or(0, |t| t.rcpts.len());
        let msgid = self.msgid_of_refused.take();
        if let Some((from, body)) = self.log_sender.take()
            && self.ctx.log_level > 4
        {
            let text = from_line(
                &from,
                size,
                0,
                nrcpts,
                msgid.as_deref(),
                body,
                self.protocol(),
                &self.ctx.daemon_name,
                &self.ctx.client,
            );
            self.log(Severity::Info, true, text, out);
        }
        let had_envelope = self.tx.is_some();
        self.tx = None;
        if had_envelope {
            self.qid = None;
        }
    }

    /// Final logs and Close.
    fn end_session(&mut self, quit: bool, size: u64, out: &mut Vec<Action>) {
        if quit {
            self.log_undelivered("aborted by sender", 9, out);
        }
        let size = match size {
            0 => self.tx.as_ref().and_then(|t| t.params.size).unwrap_or(0),
            n => n,
        };
        self.finish_transaction_sized(size, out);
        if !self.stats.mail_issued && self.nullserver.is_none() && self.ctx.log_level > 5 {
            let text = format!(
                "{} did not issue MAIL/EXPN/VRFY/ETRN during connection to {}",
                self.ctx.client.display(),
                // `-bs` has no daemon name; sendmail says `stdin` (the oracle).
                if self.ctx.daemon_name.is_empty() {
                    "stdin"
                } else {
                    &self.ctx.daemon_name
                }
            );
            self.log(Severity::Info, true, text, out);
        }
        self.state = State::Closed;
        out.push(Action::Close);
    }

    fn data_size(&self) -> u64 {
        match &self.state {
            State::Data(r) => r.size(),
            State::Chunk(_) => self.chunked_size(),
            _ => 0,
        }
    }

    fn protocol(&self) -> &'static str {
        self.protocol_name()
    }

    /// The envelope id, assigned on first use.
    fn qid(&mut self) -> String {
        if self.qid.is_none() {
            self.qid = Some(self.ctx.ids.next_id());
        }
        self.qid.clone().unwrap_or_default()
    }

    fn log(&mut self, severity: Severity, with_qid: bool, text: String, out: &mut Vec<Action>) {
        let qid = with_qid.then(|| self.qid());
        out.push(Action::Log(LogLine {
            severity,
            qid,
            text,
        }));
    }

    fn policy_context<'a>(
        &'a self,
        qid: &'a str,
        sender: Option<&'a Address>,
    ) -> PolicyContext<'a> {
        PolicyContext {
            client: &self.ctx.client,
            helo: self.helo.as_deref(),
            daemon_name: &self.ctx.daemon_name,
            daemon_flags: &self.ctx.daemon_flags,
            qid,
            sender,
            auth: self.sec.auth.as_ref(),
            tls: self.sec.tls.as_ref(),
            macros: &self.ctx.macros,
            protocol: self.protocol_name(),
            nrcpts: self.tx.as_ref().map_or(0, |t| t.rcpts.len()),
            msg_size: self.tx.as_ref().and_then(|t| t.params.size),
        }
    }
}

/// The first command of a connection looks like HTTP or a proxy request.
fn is_proxy_command(line: &str) -> bool {
    ["GET", "POST", "CONNECT", "USER"].iter().any(|verb| {
        line.len() > verb.len()
            && line[..verb.len()].eq_ignore_ascii_case(verb)
            && line[verb.len()..].starts_with(|c: char| c.is_ascii_whitespace())
    })
}

/// The command word of a line (after leading white space).
fn first_word(line: &str) -> &str {
    let t = line.trim_start_matches(|c: char| c.is_ascii_whitespace());
    t.split(|c: char| c.is_ascii_whitespace())
        .next()
        .unwrap_or("")
}

/// The argument text after the command word.
fn rest_after_verb(line: &str) -> &str {
    let t = line.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let end = t.find(|c: char| c.is_ascii_whitespace()).unwrap_or(t.len());
    t[end..].trim_matches(|c: char| c.is_ascii_whitespace())
}

#[derive(Debug, Clone, Copy)]
enum Counter {
    Helo,
    Vrfy,
    Etrn,
    Noop,
    /// AUTH commands, with their limit (the number of mechanisms offered, plus one).
    Auth(u32),
}

/// sendmail's `pintvl`: `HH:MM:SS`, with `Nd+` in front past a day.
pub fn format_delay(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    let mut out = String::new();
    if days > 0 {
        let _ = write!(out, "{days}d+");
    }
    let _ = write!(out, "{h:02}:{m:02}:{sec:02}");
    out
}

/// The `from=` line (sendmail headers.c:logsender field order).
#[allow(clippy::too_many_arguments)]
fn from_line(
    from: &str,
    size: u64,
    class: i32,
    nrcpts: usize,
    msgid: Option<&str>,
    body: Option<command::BodyType>,
    proto: &str,
    daemon: &str,
    client: &ClientInfo,
) -> String {
    // sendmail's logsender: `from=%.200s`
    let from = &from[..from.floor_char_boundary(200)];
    let mut s = format!("from={from}, size={size}, class={class}, nrcpts={nrcpts}");
    if let Some(m) = msgid {
        let _ = write!(s, ", msgid={m}");
    }
    if let Some(b) = body {
        let _ = write!(s, ", bodytype={}", b.as_str());
    }
    let _ = write!(s, ", proto={proto}");
    // sendmail's logsender: no `daemon=` without a daemon name (`-bs`).
    if !daemon.is_empty() {
        let _ = write!(s, ", daemon={daemon}");
    }
    let _ = write!(s, ", relay={}", client.display());
    s
}

mod bdat;
mod finish;
mod utf8;

pub use utf8::utf8_protocol;

#[cfg(test)]
mod tests;
