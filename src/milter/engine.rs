//! The filters of one SMTP session: every stage sent to every filter in order, with
//! sendmail's states, failure rule and log lines.
//!
//! In: the stages of one session (connect, HELO, MAIL, RCPT, DATA, unknown commands, the
//! finished message, RSET/abort, end) with the macro values of the moment. Out: an
//! [`Outcome`] per stage — continue, reject, tempfail, discard, shutdown (421) or a filter's
//! own reply — and, at end of message, the message as the filters left it ([`Edit`]) with
//! their quarantine reason. Mirrors `milter_init`, `milter_command`, `milter_send_command`,
//! `milter_data` of sendmail 8.17's `sendmail/milter.c`: a filter that fails is closed
//! ("to error state"); then `F=T` tempfails, `F=4` shuts the connection down, `F=R` rejects,
//! and without a flag the mail goes on as if the filter were not there. Connections stay open
//! for the whole SMTP session (an `A` after each message).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::client::{Client, ClientError};
use super::config::{FilterDef, MilterConfig, OnError};
use super::proto::{CHUNK_SIZE, Command, Family, Reply, Stage, actions, flags};
use crate::log::{Logger, Severity};

/// What the filters decided about a stage (sendmail's `state` letter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    Reject,
    Tempfail,
    Discard,
    /// 421 and close (`SMFIR_SHUTDOWN`, or `F=4` after a failure).
    Shutdown,
    /// A filter's own reply (`SMFIR_REPLYCODE`), e.g. `550 5.7.1 spam`.
    ReplyCode(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Connected and negotiated, between messages.
    Open,
    /// In a message.
    InMsg,
    /// Done with this message (accepted it, or it was rejected).
    Done,
    /// Done with this connection (accepted at connect/HELO).
    Closable,
    /// Failed; closed.
    Error,
    /// Quit.
    Closed,
}

struct Slot {
    def: Arc<FilterDef>,
    client: Option<Client>,
    state: State,
    /// The client came from the pool (another session's connection, ended with `K`).
    reused: bool,
    /// The last thing the filter answered was an end of message with "continue": libmilter
    /// then takes `SMFIC_QUIT_NC` (from any other state it ignores it, and the next
    /// session's connect with it), so only then is the connection given back to the pool.
    at_eom: bool,
}

/// The message as filters see and change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// Headers in order: name and value as in the message after the colon (leading blank
    /// and folding kept, LF line ends).
    pub headers: Vec<(String, String)>,
    /// The body with LF line ends.
    pub body: Vec<u8>,
    /// Envelope sender as the filters left it (`<a@b>`), and its ESMTP arguments if changed.
    pub sender: String,
    pub sender_args: Option<String>,
    /// Recipients (`<x@y>`) with ESMTP arguments (`NOTIFY=…`) when a filter gave some.
    pub rcpts: Vec<(String, Option<String>)>,
    /// Set when a filter replaced the body, changed the headers, sender or recipients.
    pub changed: bool,
    /// `SMFIR_QUARANTINE` reason.
    pub quarantine: Option<String>,
}

/// The filters of one session.
pub struct Engine {
    cfg: Arc<MilterConfig>,
    slots: Vec<Slot>,
    logger: Logger,
    /// The envelope id for log lines (`NOQUEUE` before MAIL).
    pub qid: Option<String>,
    /// Set when opening or negotiating a filter failed and its `F=` rule ended filtering
    /// (sendmail logs "initialization failed" then, not "connect").
    pub init_failed: bool,
}

impl Engine {
    /// The filters of `list`; nothing is connected yet.
    pub fn new(cfg: Arc<MilterConfig>, list: &[Arc<FilterDef>], logger: Logger) -> Engine {
        Engine {
            slots: list
                .iter()
                .map(|d| Slot {
                    def: d.clone(),
                    client: None,
                    state: State::Closed,
                    reused: false,
                    at_eom: false,
                })
                .collect(),
            cfg,
            logger,
            qid: None,
            init_failed: false,
        }
    }

    /// True when there is no filter at all.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn log(&self, level: u32, sev: Severity, text: std::fmt::Arguments<'_>) {
        if self.cfg.log_level > level {
            self.logger.log(sev, self.qid.as_deref(), text);
        }
    }

    /// sendmail's `milter_error`: close, error state, log.
    fn fail(&mut self, i: usize, err: &ClientError) {
        let name = self.slots[i].def.name.clone();
        self.log(0, Severity::Err, format_args!("Milter ({name}): {err}"));
        let s = &mut self.slots[i];
        s.client = None;
        s.state = State::Error;
        self.log(
            0,
            Severity::Info,
            format_args!("Milter ({name}): to error state"),
        );
    }

    /// What a failed filter means for the session (`MILTER_CHECK_ERROR`); `None`: go on.
    fn on_error(&self, i: usize) -> Option<Outcome> {
        match self.slots[i].def.on_error {
            OnError::Tempfail => Some(Outcome::Tempfail),
            OnError::Shutdown => Some(Outcome::Shutdown),
            OnError::Reject => Some(Outcome::Reject),
            OnError::Ignore => None,
        }
    }

    /// Opens and negotiates every filter (`milter_init`), then sends the connection
    /// (`milter_connect`). A filter that cannot be reached follows its `F=` rule.
    pub async fn connect(
        &mut self,
        hostname: &str,
        family: Family,
        macros: &BTreeMap<String, String>,
    ) -> Outcome {
        if self.slots.is_empty() {
            self.log(10, Severity::Info, format_args!("Milter: no active filter"));
            return Outcome::Continue;
        }
        let mut state = Outcome::Continue;
        for i in 0..self.slots.len() {
            if let Some(c) = self.cfg.pool.take(&self.slots[i].def) {
                self.slots[i].client = Some(c);
                self.slots[i].state = State::Open;
                self.slots[i].reused = true;
                continue;
            }
            if let Some(o) = self.open_slot(i).await {
                state = o;
                break;
            }
        }
        if state != Outcome::Continue {
            self.init_failed = true;
            self.quit().await;
            return state;
        }
        self.log(
            9,
            Severity::Info,
            format_args!("Milter: connect to filters"),
        );
        let cmd = Command::Connect {
            hostname: hostname.to_string(),
            family,
        };
        let out = self.connect_stage(&cmd, macros).await;
        let out = match out {
            // A reply code cannot be given before the greeting: its class decides.
            Outcome::ReplyCode(r) if r.starts_with("421 ") => Outcome::Shutdown,
            Outcome::ReplyCode(r) if r.starts_with('4') => Outcome::Tempfail,
            Outcome::ReplyCode(_) => Outcome::Reject,
            o => o,
        };
        if out != Outcome::Continue {
            self.log(9, Severity::Info, format_args!("Milter: connect, ending"));
            self.quit().await;
        } else {
            self.close_closable().await;
        }
        out
    }

    /// Opens and negotiates the filter of slot `i` (`milter_open` + `milter_negotiate`).
    /// `Some`: it failed and its `F=` rule ends filtering with that outcome.
    async fn open_slot(&mut self, i: usize) -> Option<Outcome> {
        let def = self.slots[i].def.clone();
        self.slots[i].reused = false;
        match Client::open(&def, self.cfg.max_data_size).await {
            Ok(c) => {
                self.slots[i].client = Some(c);
                self.slots[i].state = State::Open;
                self.log(
                    9,
                    Severity::Info,
                    format_args!("Milter ({}): init success to negotiate", def.name),
                );
                None
            }
            Err(e) => {
                let what = if matches!(e, ClientError::Connect(_)) {
                    "open"
                } else {
                    "negotiate"
                };
                self.fail(i, &e);
                self.log(
                    0,
                    Severity::Err,
                    format_args!("Milter ({}): init failed to {what}", def.name),
                );
                self.on_error(i)
            }
        }
    }

    /// The connect stage to every filter in order. A connection taken from the pool that
    /// turns out closed or broken (the filter restarted, or timed it out while it was idle)
    /// is replaced by a new one and the stage sent again: that is not the filter failing.
    async fn connect_stage(&mut self, cmd: &Command, macros: &BTreeMap<String, String>) -> Outcome {
        for i in 0..self.slots.len() {
            match self.slots[i].state {
                State::Error => match self.on_error(i) {
                    Some(o) => return o,
                    None => continue,
                },
                State::Open => {}
                _ => continue,
            }
            if self.slots[i].reused {
                let tried = self.exchange(i, Some(Stage::Connect), cmd, macros).await;
                match tried {
                    Ok(reply) => {
                        self.slots[i].reused = false;
                        let out = match reply {
                            Some(r) => self.interpret(i, cmd, r),
                            None => Outcome::Continue,
                        };
                        if out != Outcome::Continue {
                            return out;
                        }
                        continue;
                    }
                    Err(e) => {
                        self.log(
                            10,
                            Severity::Info,
                            format_args!(
                                "Milter ({}): reused connection: {e}, reconnecting",
                                self.slots[i].def.name
                            ),
                        );
                        self.slots[i].client = None;
                        if let Some(o) = self.open_slot(i).await {
                            self.init_failed = true;
                            return o;
                        }
                        if self.slots[i].client.is_none() {
                            continue;
                        }
                    }
                }
            }
            let out = match self.exchange(i, Some(Stage::Connect), cmd, macros).await {
                Ok(Some(r)) => self.interpret(i, cmd, r),
                Ok(None) => Outcome::Continue,
                Err(e) => {
                    self.fail(i, &e);
                    self.on_error(i).unwrap_or(Outcome::Continue)
                }
            };
            if out != Outcome::Continue {
                return out;
            }
        }
        Outcome::Continue
    }

    /// HELO/EHLO (aborts a message in progress first).
    pub async fn helo(&mut self, name: &str, macros: &BTreeMap<String, String>) -> Outcome {
        self.reset_for_new().await;
        let out = self
            .command(Stage::Helo, &Command::Helo(name.to_string()), macros, false)
            .await;
        self.close_closable().await;
        out
    }

    /// MAIL: `args[0]` is `<sender>`, the rest its ESMTP arguments.
    pub async fn mail(&mut self, args: Vec<String>, macros: &BTreeMap<String, String>) -> Outcome {
        self.reset_for_new().await;
        self.log(
            14,
            Severity::Info,
            format_args!("Milter: sender: {}", args.join(" ")),
        );
        let out = self
            .command(Stage::EnvFrom, &Command::Mail(args), macros, false)
            .await;
        if is_final(&out) {
            self.abort().await;
        }
        if out == Outcome::Reject {
            self.log(10, Severity::Info, format_args!("Milter: reject, sender"));
        }
        out
    }

    /// RCPT; `rejected`: the MTA already refused it (sent only to filters that asked).
    pub async fn rcpt(
        &mut self,
        args: Vec<String>,
        rejected: bool,
        macros: &BTreeMap<String, String>,
    ) -> Outcome {
        self.log(
            14,
            Severity::Info,
            format_args!("Milter: rcpts: {}", args.join(" ")),
        );
        self.command(Stage::EnvRcpt, &Command::Rcpt(args), macros, rejected)
            .await
    }

    /// The DATA command.
    pub async fn data_cmd(&mut self, macros: &BTreeMap<String, String>) -> Outcome {
        self.command(Stage::Data, &Command::Data, macros, false)
            .await
    }

    /// A command the server did not recognise.
    pub async fn unknown(&mut self, line: &str) -> Outcome {
        let none = BTreeMap::new();
        self.command_nomacros(&Command::Unknown(line.to_string()), &none)
            .await
    }

    /// Ends the message for every filter still in it (`milter_abort`).
    pub async fn abort(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].state != State::InMsg {
                continue;
            }
            self.log(
                10,
                Severity::Info,
                format_args!("Milter ({}): abort filter", self.slots[i].def.name),
            );
            self.slots[i].at_eom = false;
            let r = match self.slots[i].client.as_mut() {
                Some(c) => c.send(&Command::Abort).await,
                None => continue,
            };
            match r {
                Ok(()) => self.slots[i].state = State::Done,
                Err(e) => self.fail(i, &e),
            }
        }
    }

    /// Ends the session for every filter (`milter_quit`).
    pub async fn quit(&mut self) {
        for i in 0..self.slots.len() {
            self.quit_one(i).await;
        }
    }

    async fn quit_one(&mut self, i: usize) {
        if self.slots[i].state != State::Error {
            self.close_one(i).await;
        }
        // Logged once the connection is closed or back in the pool.
        let name = self.slots[i].def.name.clone();
        self.log(
            18,
            Severity::Info,
            format_args!("Milter ({name}): quit filter"),
        );
    }

    /// `milter_quit_filter` for a filter not in error: `Q` and close, or `K` and back to
    /// the pool.
    async fn close_one(&mut self, i: usize) {
        if let Some(mut c) = self.slots[i].client.take() {
            // Version 6 filters (libmilter 8.14 and later) take `K`: the connection then
            // serves the next session without a new connect and negotiation.
            if self.slots[i].at_eom
                && c.negotiated.version >= 6
                && self.cfg.pool.wants(&self.slots[i].def)
                && c.send(&Command::QuitNewConnection).await.is_ok()
            {
                self.cfg.pool.put(&self.slots[i].def, c);
            } else {
                let _ = c.send(&Command::Quit).await;
            }
        }
        self.slots[i].at_eom = false;
        self.slots[i].state = State::Closed;
    }

    /// Filters that accepted the connection are done with it (`milter_per_connection_check`).
    async fn close_closable(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].state == State::Closable {
                self.quit_one(i).await;
            }
        }
    }

    /// A new transaction: filters still in the old one are aborted, done ones reopened.
    async fn reset_for_new(&mut self) {
        self.abort().await;
        for s in &mut self.slots {
            if s.state == State::Done {
                s.state = State::Open;
            }
        }
    }

    fn stage_macros(
        &self,
        i: usize,
        stage: Stage,
        values: &BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let own = self.slots[i].client.as_ref().and_then(|c| {
            c.negotiated
                .symlists
                .iter()
                .find(|(s, _)| *s == stage)
                .map(|(_, l)| l)
        });
        let names = own.map_or(self.cfg.macros(stage), |l| l.as_slice());
        names
            .iter()
            .filter_map(|n| lookup(values, n).map(|v| (n.clone(), v.to_string())))
            .collect()
    }

    /// `milter_command`: macros then the command to each filter in order, until one decides.
    async fn command(
        &mut self,
        stage: Stage,
        cmd: &Command,
        macros: &BTreeMap<String, String>,
        rejected_rcpt: bool,
    ) -> Outcome {
        self.command_inner(Some(stage), cmd, macros, rejected_rcpt)
            .await
    }

    async fn command_nomacros(
        &mut self,
        cmd: &Command,
        macros: &BTreeMap<String, String>,
    ) -> Outcome {
        self.command_inner(None, cmd, macros, false).await
    }

    async fn command_inner(
        &mut self,
        stage: Option<Stage>,
        cmd: &Command,
        macros: &BTreeMap<String, String>,
        rejected_rcpt: bool,
    ) -> Outcome {
        for i in 0..self.slots.len() {
            match self.slots[i].state {
                State::Error => match self.on_error(i) {
                    Some(o) => return o,
                    None => continue,
                },
                State::Open | State::InMsg => {}
                _ => continue,
            }
            if self.slots[i].client.is_none() {
                continue;
            }
            if rejected_rcpt && !self.client(i).skips(flags::RCPT_REJ) {
                // sendmail sends the macros anyway; they go out with the next command.
                if let Some(stage) = stage {
                    self.queue_macros(i, stage, macros);
                }
                continue;
            }
            let out = match self.exchange(i, stage, cmd, macros).await {
                Ok(Some(r)) => self.interpret(i, cmd, r),
                Ok(None) => Outcome::Continue,
                Err(e) => {
                    self.fail(i, &e);
                    self.on_error(i).unwrap_or(Outcome::Continue)
                }
            };
            if out != Outcome::Continue {
                return out;
            }
        }
        Outcome::Continue
    }

    /// Queues the macros of `stage` for filter `i` (sent with the command that follows).
    fn queue_macros(&mut self, i: usize, stage: Stage, macros: &BTreeMap<String, String>) {
        let pairs = self.stage_macros(i, stage, macros);
        if !pairs.is_empty() {
            self.client(i).queue(&Command::Macros {
                stage_letter: stage.command_letter(),
                pairs,
            });
        }
    }

    /// `milter_send_command`'s I/O: the stage's macros and the command in one write, then the
    /// answer. `Ok(None)`: the filter asked not to get this command, or not to answer it.
    async fn exchange(
        &mut self,
        i: usize,
        stage: Option<Stage>,
        cmd: &Command,
        macros: &BTreeMap<String, String>,
    ) -> Result<Option<Reply>, ClientError> {
        self.slots[i].at_eom = false;
        if let Some(stage) = stage {
            self.queue_macros(i, stage, macros);
        }
        let (skip, noreply, action, _) = command_flags(cmd);
        if skip != 0 && self.client(i).skips(skip) {
            // The macros still go out (as sendmail sends them), with the next command.
            return Ok(None);
        }
        self.client(i).send(cmd).await?;
        if noreply != 0 && self.client(i).skips(noreply) {
            return Ok(None);
        }
        self.client(i).read(action).await.map(Some)
    }

    fn client(&mut self, i: usize) -> &mut Client {
        self.slots[i].client.as_mut().expect("open filter")
    }

    /// `milter_send_command`'s verdict: what filter `i`'s answer to `cmd` means.
    fn interpret(&mut self, i: usize, cmd: &Command, reply: Reply) -> Outcome {
        let (_, _, action, default) = command_flags(cmd);
        let name = self.slots[i].def.name.clone();
        match reply {
            Reply::ReplyCode(text) => {
                self.log(
                    10,
                    Severity::Info,
                    format_args!("milter={name}, action={action}, reject={text}"),
                );
                Outcome::ReplyCode(text)
            }
            Reply::BadReplyCode => {
                self.log(
                    10,
                    Severity::Info,
                    format_args!("milter={name}, action={action}, reject={default}"),
                );
                Outcome::ReplyCode(default.to_string())
            }
            Reply::Reject => {
                self.log(
                    10,
                    Severity::Info,
                    format_args!("milter={name}, action={action}, reject"),
                );
                Outcome::Reject
            }
            Reply::Discard => {
                self.log(
                    10,
                    Severity::Info,
                    format_args!("milter={name}, action={action}, discard"),
                );
                Outcome::Discard
            }
            Reply::Tempfail => {
                self.log(
                    10,
                    Severity::Info,
                    format_args!("milter={name}, action={action}, tempfail"),
                );
                Outcome::Tempfail
            }
            Reply::Shutdown => Outcome::Shutdown,
            Reply::Accept => {
                self.slots[i].state = if matches!(cmd, Command::Connect { .. } | Command::Helo(_)) {
                    State::Closable
                } else {
                    State::Done
                };
                self.log(
                    10,
                    Severity::Info,
                    format_args!("milter={name}, action={action}, accepted"),
                );
                Outcome::Continue
            }
            Reply::Continue => {
                if matches!(cmd, Command::Mail(_)) {
                    self.slots[i].state = State::InMsg;
                }
                self.log(
                    12,
                    Severity::Info,
                    format_args!("milter={name}, action={action}, continue"),
                );
                Outcome::Continue
            }
            Reply::Skip => {
                self.log(
                    12,
                    Severity::Info,
                    format_args!("milter={name}, action={action}, skip"),
                );
                Outcome::Continue
            }
            other => {
                self.log(
                    0,
                    Severity::Err,
                    format_args!(
                        "milter_send_command({name}): action={action} returned bogus response {}",
                        other.letter()
                    ),
                );
                self.slots[i].client = None;
                self.slots[i].state = State::Error;
                self.log(
                    0,
                    Severity::Info,
                    format_args!("Milter ({name}): to error state"),
                );
                self.on_error(i).unwrap_or(Outcome::Continue)
            }
        }
    }

    /// End of message (`milter_data`): to each filter in turn its headers, end of headers,
    /// body and end of message, applying what it changes before the next one sees the
    /// message.
    pub async fn eom(&mut self, edit: &mut Edit, macros: &BTreeMap<String, String>) -> Outcome {
        let mut state = Outcome::Continue;
        for i in 0..self.slots.len() {
            match self.slots[i].state {
                State::Error => match self.on_error(i) {
                    Some(o) => {
                        state = o;
                        break;
                    }
                    None => continue,
                },
                State::Open | State::InMsg => {}
                _ => continue,
            }
            if self.slots[i].client.is_none() {
                continue;
            }
            self.slots[i].state = State::InMsg;
            match self.eom_one(i, edit, macros).await {
                Ok(Outcome::Continue) => {}
                Ok(o) => {
                    state = o;
                    self.slots[i].state = State::Done;
                    break;
                }
                Err(e) => {
                    self.fail(i, &e);
                    if let Some(o) = self.on_error(i) {
                        state = o;
                        break;
                    }
                }
            }
        }
        self.abort().await;
        state
    }

    async fn eom_one(
        &mut self,
        i: usize,
        edit: &mut Edit,
        macros: &BTreeMap<String, String>,
    ) -> Result<Outcome, ClientError> {
        let name = self.slots[i].def.name.clone();
        self.slots[i].at_eom = false;
        let leadspc = self.client(i).skips(flags::HDR_LEADSPC);
        if !self.client(i).skips(flags::NOHDRS) {
            for k in 0..edit.headers.len() {
                let (h, v) = &edit.headers[k];
                let v = if leadspc {
                    v.as_str()
                } else {
                    v.strip_prefix(' ').unwrap_or(v)
                };
                let cmd = Command::Header {
                    name: h.clone(),
                    value: v.as_bytes().to_vec(),
                };
                match self.step(i, &cmd).await? {
                    Step::Go => {}
                    Step::Skip => break,
                    Step::Done => return Ok(Outcome::Continue),
                    Step::Stop(o) => return Ok(o),
                }
            }
        }
        if !self.client(i).skips(flags::NOEOH) {
            self.queue_macros(i, Stage::Eoh, macros);
            match self.step(i, &Command::EndOfHeaders).await? {
                Step::Go | Step::Skip => {}
                Step::Done => return Ok(Outcome::Continue),
                Step::Stop(o) => return Ok(o),
            }
        }
        if !self.client(i).skips(flags::NOBODY) {
            let crlf = to_crlf(&edit.body);
            let noreply = self.client(i).skips(flags::NR_BODY);
            for chunk in crlf.chunks(CHUNK_SIZE) {
                if noreply {
                    // Unanswered chunks go out together, a write per few chunks.
                    self.client(i).queue_body(chunk);
                    if self.client(i).queued() >= 4 * CHUNK_SIZE {
                        self.client(i).flush().await?;
                    }
                    continue;
                }
                match self.step(i, &Command::Body(chunk.to_vec())).await? {
                    Step::Go => {}
                    Step::Skip => break,
                    Step::Done => return Ok(Outcome::Continue),
                    Step::Stop(o) => return Ok(o),
                }
            }
        }
        self.queue_macros(i, Stage::Eom, macros);
        self.client(i).send(&Command::EndOfMessage).await?;
        let eom_deadline = Instant::now() + self.client(i).timeouts.eom;
        let read_timeout = self.client(i).timeouts.read;
        let granted = self.client(i).negotiated.actions;
        let mut new_body: Option<Vec<u8>> = None;
        loop {
            if Instant::now() >= eom_deadline {
                return Err(ClientError::EomTimeout);
            }
            let deadline = (Instant::now() + read_timeout).min(eom_deadline);
            let reply = match self.client(i).read_until(deadline, "eom").await {
                Err(ClientError::Timeout { .. }) if Instant::now() >= eom_deadline => {
                    return Err(ClientError::EomTimeout);
                }
                r => r?,
            };
            let is_continue = reply == Reply::Continue;
            if reply.precedes_verdict() {
                // The verdict follows: it must not wait for our delayed ACK.
                self.client(i).ack_now();
            }
            match reply {
                Reply::ReplyCode(t) => {
                    self.log(
                        12,
                        Severity::Info,
                        format_args!("milter={name}, reject={t}"),
                    );
                    return Ok(Outcome::ReplyCode(t));
                }
                Reply::BadReplyCode => {
                    let t = "554 5.7.1 Command rejected".to_string();
                    self.log(
                        12,
                        Severity::Info,
                        format_args!("milter={name}, reject={t}"),
                    );
                    return Ok(Outcome::ReplyCode(t));
                }
                Reply::Reject => {
                    self.log(12, Severity::Info, format_args!("milter={name}, reject"));
                    return Ok(Outcome::Reject);
                }
                Reply::Discard => {
                    self.log(12, Severity::Info, format_args!("milter={name}, discard"));
                    return Ok(Outcome::Discard);
                }
                Reply::Tempfail => {
                    self.log(12, Severity::Info, format_args!("milter={name}, tempfail"));
                    return Ok(Outcome::Tempfail);
                }
                Reply::Shutdown => return Ok(Outcome::Shutdown),
                Reply::Continue | Reply::Accept => {
                    if let Some(b) = new_body.take() {
                        edit.body = from_crlf(&b);
                        edit.changed = true;
                    }
                    self.slots[i].state = State::Done;
                    // After "accept" libmilter goes back to its HELO state, not to EOM.
                    self.slots[i].at_eom = is_continue;
                    return Ok(Outcome::Continue);
                }
                Reply::Progress => {}
                Reply::Quarantine(reason) => {
                    self.lied(granted, actions::QUARANTINE, &name, "quarantining");
                    self.log(
                        3,
                        Severity::Info,
                        format_args!("milter={name}, quarantine={reason}"),
                    );
                    edit.quarantine = Some(reason);
                }
                Reply::ReplaceBody(chunk) => {
                    if granted & actions::CHGBODY == 0 {
                        self.log(
                            0,
                            Severity::Err,
                            format_args!(
                                "milter_data({name}): lied about replacing body, rejecting request and tempfailing message"
                            ),
                        );
                        return Ok(Outcome::Tempfail);
                    }
                    if new_body.is_none() {
                        self.log(
                            8,
                            Severity::Info,
                            format_args!("Milter ({name}) message: body replaced"),
                        );
                    }
                    new_body
                        .get_or_insert_with(Vec::new)
                        .extend_from_slice(&chunk);
                }
                other => self.modify(i, &name, granted, other, edit),
            }
        }
    }

    fn lied(&self, granted: u32, bit: u32, name: &str, what: &str) {
        if granted & bit == 0 {
            self.log(
                9,
                Severity::Warning,
                format_args!("milter_data({name}): lied about {what}, honoring request anyway"),
            );
        }
    }

    /// Header, sender and recipient changes (`milter_addheader` … `milter_delrcpt`).
    fn modify(&mut self, i: usize, name: &str, granted: u32, reply: Reply, edit: &mut Edit) {
        let leadspc = self.slots[i]
            .client
            .as_ref()
            .is_some_and(|c| c.skips(flags::HDR_LEADSPC));
        let shape = |v: &str| {
            if leadspc {
                v.to_string()
            } else {
                format!(" {v}")
            }
        };
        edit.changed = true;
        match reply {
            Reply::AddHeader { name: h, value } => {
                self.lied(granted, actions::ADDHDRS, name, "adding headers");
                self.log(
                    8,
                    Severity::Info,
                    format_args!("Milter ({name}) add: header: {h}: {value}"),
                );
                edit.headers.push((h, shape(&value)));
            }
            Reply::InsertHeader {
                index,
                name: h,
                value,
            } => {
                self.lied(granted, actions::ADDHDRS, name, "adding headers");
                self.log(
                    8,
                    Severity::Info,
                    format_args!("Milter ({name}) insert ({index}): header: {h}: {value}"),
                );
                let at = (index as usize).min(edit.headers.len());
                edit.headers.insert(at, (h, shape(&value)));
            }
            Reply::ChangeHeader {
                index,
                name: h,
                value,
            } => {
                self.lied(granted, actions::CHGHDRS, name, "changing headers");
                let pos = edit
                    .headers
                    .iter()
                    .enumerate()
                    .filter(|(_, (n, _))| n.eq_ignore_ascii_case(&h))
                    .nth((index.max(1) - 1) as usize)
                    .map(|(p, _)| p);
                match (pos, value.is_empty()) {
                    (None, true) => self.log(
                        8,
                        Severity::Info,
                        format_args!("Milter ({name}) delete (noop): header: {h}"),
                    ),
                    (None, false) => {
                        self.log(
                            8,
                            Severity::Info,
                            format_args!("Milter ({name}) change (add): header: {h}: {value}"),
                        );
                        edit.headers.push((h, shape(&value)));
                    }
                    (Some(p), true) => {
                        self.log(
                            8,
                            Severity::Info,
                            format_args!(
                                "Milter ({name}) delete: header {h}:{}",
                                edit.headers[p].1
                            ),
                        );
                        edit.headers.remove(p);
                    }
                    (Some(p), false) => {
                        self.log(
                            8,
                            Severity::Info,
                            format_args!(
                                "Milter ({name}) change: header {h}: from {} to {value}",
                                edit.headers[p].1
                            ),
                        );
                        edit.headers[p].1 = shape(&value);
                    }
                }
            }
            Reply::ChangeFrom { sender, args } => {
                self.lied(granted, actions::CHGFROM, name, "changing sender");
                self.log(
                    8,
                    Severity::Info,
                    format_args!("Milter ({name}) chgfrom: {sender}"),
                );
                edit.sender = angle(&sender);
                edit.sender_args = args;
            }
            Reply::AddRcpt(r) => {
                self.lied(granted, actions::ADDRCPT, name, "adding recipients");
                self.log(
                    8,
                    Severity::Info,
                    format_args!("Milter ({name}) add: rcpt: {r}"),
                );
                add_rcpt(edit, angle(&r), None);
            }
            Reply::AddRcptPar { rcpt, args } => {
                self.lied(
                    granted,
                    actions::ADDRCPT_PAR,
                    name,
                    "adding recipients with parameters",
                );
                self.log(
                    8,
                    Severity::Info,
                    format_args!("Milter ({name}) add: rcpt: {rcpt}"),
                );
                add_rcpt(edit, angle(&rcpt), args);
            }
            Reply::DelRcpt(r) => {
                self.lied(granted, actions::DELRCPT, name, "removing recipients");
                let want = bare(&r);
                let before = edit.rcpts.len();
                edit.rcpts
                    .retain(|(a, _)| !bare(a).eq_ignore_ascii_case(&want));
                let n = before - edit.rcpts.len();
                self.log(
                    8,
                    Severity::Info,
                    format_args!("Milter ({name}) delete: rcpt {r}, naddrs={n}"),
                );
            }
            other => {
                self.log(
                    0,
                    Severity::Err,
                    format_args!(
                        "milter_data({name}): returned bogus response {}",
                        other.letter()
                    ),
                );
            }
        }
    }

    /// One header/EOH/body command inside the message and its answer. A command the filter
    /// does not answer (`SMFIP_NR_*`) is only queued: it goes out with the next one that
    /// is answered (at the latest the end of message), in one write.
    async fn step(&mut self, i: usize, cmd: &Command) -> Result<Step, ClientError> {
        let (_, noreply, action, default) = command_flags(cmd);
        if self.client(i).skips(noreply) {
            self.client(i).queue(cmd);
            if self.client(i).queued() >= 4 * CHUNK_SIZE {
                self.client(i).flush().await?;
            }
            return Ok(Step::Go);
        }
        self.client(i).send(cmd).await?;
        let name = self.slots[i].def.name.clone();
        let reply = self.client(i).read(action).await?;
        let word = match &reply {
            Reply::Continue => Some((12, "continue".to_string())),
            Reply::Skip => Some((12, "skip".to_string())),
            Reply::Reject => Some((10, "reject".to_string())),
            Reply::Discard => Some((10, "discard".to_string())),
            Reply::Tempfail => Some((10, "tempfail".to_string())),
            Reply::ReplyCode(t) => Some((10, format!("reject={t}"))),
            Reply::BadReplyCode => Some((10, format!("reject={default}"))),
            _ => None,
        };
        if let Some((level, word)) = word {
            self.log(
                level,
                Severity::Info,
                format_args!("milter={name}, action={action}, {word}"),
            );
        }
        Ok(match reply {
            Reply::Continue => Step::Go,
            Reply::Skip => Step::Skip,
            Reply::Accept => {
                self.slots[i].state = State::Done;
                self.log(
                    10,
                    Severity::Info,
                    format_args!("milter={name}, action={action}, accepted"),
                );
                Step::Done
            }
            Reply::Reject => Step::Stop(Outcome::Reject),
            Reply::Discard => Step::Stop(Outcome::Discard),
            Reply::Tempfail => Step::Stop(Outcome::Tempfail),
            Reply::Shutdown => Step::Stop(Outcome::Shutdown),
            Reply::ReplyCode(t) => Step::Stop(Outcome::ReplyCode(t)),
            Reply::BadReplyCode => Step::Stop(Outcome::ReplyCode(default.to_string())),
            other => {
                return Err(ClientError::Proto(super::proto::ProtoError::Bogus(
                    other.letter() as u8,
                )));
            }
        })
    }
}

enum Step {
    Go,
    Skip,
    Done,
    Stop(Outcome),
}

/// True for outcomes that end the transaction.
fn is_final(o: &Outcome) -> bool {
    !matches!(o, Outcome::Continue)
}

/// Per command: the "do not send" flag, the "no reply" flag, sendmail's action name and its
/// default reply for an invalid reply code.
fn command_flags(cmd: &Command) -> (u32, u32, &'static str, &'static str) {
    match cmd {
        Command::Connect { .. } => (
            flags::NOCONNECT,
            flags::NR_CONN,
            "connect",
            "554 Command rejected",
        ),
        Command::Helo(_) => (
            flags::NOHELO,
            flags::NR_HELO,
            "helo",
            "550 Command rejected",
        ),
        Command::Mail(_) => (
            flags::NOMAIL,
            flags::NR_MAIL,
            "mail",
            "550 5.7.1 Command rejected",
        ),
        Command::Rcpt(_) => (
            flags::NORCPT,
            flags::NR_RCPT,
            "rcpt",
            "550 5.7.1 Command rejected",
        ),
        Command::Header { .. } => (
            flags::NOHDRS,
            flags::NR_HDR,
            "header",
            "550 5.7.1 Command rejected",
        ),
        Command::Body(_) => (
            flags::NOBODY,
            flags::NR_BODY,
            "body",
            "554 5.7.1 Command rejected",
        ),
        Command::EndOfHeaders => (
            flags::NOEOH,
            flags::NR_EOH,
            "eoh",
            "550 5.7.1 Command rejected",
        ),
        Command::Unknown(_) => (
            flags::NOUNKNOWN,
            flags::NR_UNKN,
            "unknown",
            "550 5.7.1 Command rejected",
        ),
        Command::Data => (
            flags::NODATA,
            flags::NR_DATA,
            "data",
            "550 5.7.1 Command rejected",
        ),
        _ => (0, 0, "default", "550 5.7.1 Command rejected"),
    }
}

/// A macro's value: `i` and `{mail_addr}` are looked up as written, `{x}` also as `x`.
fn lookup<'a>(values: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    if let Some(v) = values.get(name) {
        return Some(v);
    }
    let inner = name.strip_prefix('{').and_then(|n| n.strip_suffix('}'))?;
    values.get(inner).map(String::as_str)
}

fn add_rcpt(edit: &mut Edit, r: String, args: Option<String>) {
    let b = bare(&r);
    if !edit
        .rcpts
        .iter()
        .any(|(a, _)| bare(a).eq_ignore_ascii_case(&b))
    {
        edit.rcpts.push((r, args));
    }
}

/// `a@b` → `<a@b>` (kept when already bracketed).
fn angle(a: &str) -> String {
    let t = a.trim();
    if t.starts_with('<') {
        t.to_string()
    } else {
        format!("<{t}>")
    }
}

/// `<a@b>` → `a@b`.
pub fn bare(a: &str) -> String {
    a.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

/// LF → CRLF (a CR already before the LF is kept single), as `milter_body` sends it.
pub fn to_crlf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32);
    let mut prev = 0u8;
    for &b in body {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// CRLF → LF (`milter_replbody`).
pub fn from_crlf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\r' && body.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(body[i]);
        i += 1;
    }
    out
}

/// Splits a message (LF line ends) into its headers and body.
pub fn split_message(msg: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        let end = msg[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(msg.len(), |e| pos + e + 1);
        let line = &msg[pos..end];
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            return (headers, msg[end..].to_vec());
        }
        if matches!(text[0], b' ' | b'\t')
            && let Some(last) = headers.last_mut()
        {
            last.1.push('\n');
            last.1.push_str(&String::from_utf8_lossy(text));
            pos = end;
            continue;
        }
        match text.iter().position(|&b| b == b':') {
            Some(c) if c > 0 && text[..c].iter().all(|b| b.is_ascii_graphic()) => {
                headers.push((
                    String::from_utf8_lossy(&text[..c]).into_owned(),
                    String::from_utf8_lossy(&text[c + 1..]).into_owned(),
                ));
            }
            // Not a header: the body starts here (no blank line).
            _ => return (headers, msg[pos..].to_vec()),
        }
        pos = end;
    }
    (headers, Vec::new())
}

/// Joins headers and body back into a message (LF line ends, blank line between).
pub fn join_message(headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64 * headers.len() + 1);
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.push(b':');
        out.extend_from_slice(v.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_and_join_without_change() {
        let m = b"Subject: hi\nX-Long: a\n\tb\nFrom: <a@b>\n\nbody\nline\n";
        let (h, b) = split_message(m);
        assert_eq!(
            h,
            vec![
                ("Subject".to_string(), " hi".to_string()),
                ("X-Long".to_string(), " a\n\tb".to_string()),
                ("From".to_string(), " <a@b>".to_string()),
            ]
        );
        assert_eq!(b, b"body\nline\n");
        assert_eq!(join_message(&h, &b), m);
    }

    #[test]
    fn body_line_ends_go_out_as_crlf_and_come_back_as_lf() {
        assert_eq!(to_crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc");
        assert_eq!(from_crlf(b"a\r\nb\r\n\rc"), b"a\nb\n\rc");
    }

    #[test]
    fn macro_names_are_found_with_and_without_braces() {
        let mut v = BTreeMap::new();
        v.insert("daemon_name".to_string(), "MTA".to_string());
        v.insert("i".to_string(), "Q1".to_string());
        assert_eq!(lookup(&v, "{daemon_name}"), Some("MTA"));
        assert_eq!(lookup(&v, "i"), Some("Q1"));
        assert_eq!(lookup(&v, "{if_addr}"), None);
    }
}
