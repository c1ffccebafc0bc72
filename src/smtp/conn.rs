//! The one SMTP I/O driver: a byte stream on one side, a [`Session`] on the other.
//!
//! In: an accepted stream (TCP, or stdin/stdout for `-bs`), a [`Session`], the
//! [`MessageSink`] that stores finished messages, the [`Logger`], [`ConnOptions`] (timeouts,
//! line limit) and a shutdown future. Out: a [`ConnOutcome`] (why the connection ended and
//! the session's counters) for the listener's log and statistics.
//!
//! What it does: writes the greeting; splits input into command lines (LF ends a line, one CR
//! before it is dropped) with a hard length limit (`421 4.7.0 ... Command too long`); tells
//! the session whether more input is already buffered (PIPELINING, RFC 2920, and sendmail
//! 8.18's check for input sent before the EHLO/DATA reply); batches the replies to pipelined
//! commands and flushes them when it has to wait for input; hands DATA bytes to the session;
//! awaits the sink before any `250 ... Message accepted`; applies the per-phase timeouts
//! (RFC 5321 4.5.3.2 defaults): a command line must arrive whole within `Timeout.command` (as
//! sendmail's `sfgets` times the whole line, so a client trickling a byte at a time is still
//! cut off), while DATA and BDAT input times out after `Timeout.datablock` without any byte
//! (sendmail's collect restarts its timer on progress), and the message as a whole must
//! keep up `MinDataRate` (`DataClock`, below); hands a spilling sink the bytes of a message past
//! its head as they arrive ([`MessageSink::spill`], [`SPILL_CHUNK`] at a time), so that a
//! session holds at most about `KEEP_HEAD + SPILL_CHUNK` of any message, and tells it to
//! drop them when the message ends without a commit; ends the session at the next command boundary once the
//! shutdown future completes (a message being received is finished first); writes
//! `421 4.4.1 <host> Lost input channel from <client>` when the peer goes away.
//!
//! TLS (RFC 3207): on [`Action::StartTls`] the driver sends the `220`, drops every byte the
//! client sent after the STARTTLS line (never executed: the CVE-2011-0411 injection), runs
//! the handshake with [`ConnOptions::tls`] and tells the session; with
//! [`ConnOptions::implicit_tls`] (an `M=s` daemon, SMTPS) the handshake comes before the
//! greeting.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::command;
use super::filter::{FilterCall, FilterVerdict};
use super::reply::{self, Reply};
use super::session::{Action, Message, Session, SessionStats};
use crate::log::{Logger, Severity};
use crate::tls::ServerTls;

mod stream;
use stream::Stream;

/// Longest command line, terminator included (sendmail's `MAXLINE`).
pub const MAX_COMMAND_LINE: usize = 2048;
/// Bytes of an over-long line that are read (and counted) before giving up on finding its
/// end.
pub const MAX_DISCARD: usize = 1 << 20;
/// Free room the input buffer gets before each read: the kernel writes straight into it,
/// so nothing is zeroed or copied on the way in.
const READ_ROOM: usize = 8192;

/// Per-phase read timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for the whole next command line (`Timeout.command`; RFC 5321 4.5.3.2.7: 5
    /// minutes).
    pub command: Duration,
    /// Waiting for more DATA or BDAT bytes (`Timeout.datablock`; RFC 5321 4.5.3.2.6: 3
    /// minutes).
    pub data_block: Duration,
    /// The least average rate, in bytes per second, at which a message must arrive
    /// (`MinDataRate`; 0: none). See `DataClock`.
    pub min_data_rate: u64,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            command: Duration::from_secs(5 * 60),
            data_block: Duration::from_secs(3 * 60),
            min_data_rate: crate::config::options::DEFAULT_MIN_DATA_RATE,
        }
    }
}

/// The most time a message is given before `MinDataRate` starts to count (less when
/// `Timeout.datablock` is shorter).
pub const DATA_GRACE: Duration = Duration::from_secs(5 * 60);
/// Bytes of a message the driver lets the session hold past its head before handing them
/// to [`MessageSink::spill`].
pub const SPILL_CHUNK: usize = 256 << 10;

/// The whole-message deadline of `MinDataRate` (op has none: sendmail restarts
/// `Timeout.datablock` on every read, so a client sending a byte a second holds a session
/// for as long as it likes). From the first byte the session expects of a message (after
/// DATA's `354`, or the first BDAT chunk) the message has a grace of `Timeout.datablock`
/// (at most [`DATA_GRACE`]), and every byte received adds `1/MinDataRate` seconds: at
/// 500 bytes/s a 50 MB message may take 28 hours, a client trickling a byte a second is
/// cut off after five minutes. Past the deadline the session ends as for
/// `Timeout.datablock`, in sendmail's words (`451 4.4.1 timeout waiting for input during
/// message collect`, logged `timeout waiting for input from HOST during message
/// collect`). Between the chunks of a BDAT transaction the clock keeps running.
#[derive(Debug, Clone, Copy)]
struct DataClock {
    start: Instant,
    bytes: u64,
}

impl DataClock {
    fn deadline(&self, t: &Timeouts) -> Option<Instant> {
        if t.min_data_rate == 0 {
            return None;
        }
        let earned = Duration::from_secs_f64(self.bytes as f64 / t.min_data_rate as f64);
        Some(self.start + t.data_block.min(DATA_GRACE) + earned)
    }
}

/// Driver settings.
#[derive(Debug, Clone)]
pub struct ConnOptions {
    pub timeouts: Timeouts,
    /// Longest command line, terminator included.
    pub max_line: usize,
    /// The server's TLS credentials (STARTTLS, SMTPS); `None`: no TLS.
    pub tls: Option<ServerTls>,
    /// Handshake before the greeting (`M=s`).
    pub implicit_tls: bool,
    /// FEATURE(greet_pause): how long to wait for the client to speak first before the
    /// greeting; if it does, [`Session::pre_greeting_traffic`].
    pub greet_pause: Option<Duration>,
    /// The daemon's live counters for the metrics listener: the session's messages,
    /// rejected recipients, TLS handshakes and AUTH failures are added as they happen.
    pub live: Option<Arc<crate::metrics::DaemonCounters>>,
}

impl Default for ConnOptions {
    fn default() -> ConnOptions {
        ConnOptions {
            timeouts: Timeouts::default(),
            max_line: MAX_COMMAND_LINE,
            tls: None,
            implicit_tls: false,
            greet_pause: None,
            live: None,
        }
    }
}

/// Why storing a message failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Not stored; the client is told to retry later (`451 4.3.0`).
    #[error("message not stored: {0}")]
    Temporary(String),
    /// Refused with this reply.
    #[error("message refused: {0}")]
    Refused(Reply),
}

/// Where finished messages go (the queue). Only after `commit` returns `Ok` does the client
/// get `250 ... Message accepted for delivery`.
///
/// A sink that [`spills`](MessageSink::spills) takes the bytes of the message being
/// received beyond its first [`super::body::KEEP_HEAD`] as they arrive
/// ([`MessageSink::spill`], in order), so the session holds a bounded part of it; the
/// [`Message`] handed to `commit` then says where they belong ([`Message::spilled`]).
/// [`MessageSink::discard`] drops them when the message will not be committed (refused,
/// reset, the client gone).
pub trait MessageSink {
    fn commit(&mut self, msg: Message) -> impl Future<Output = Result<(), CommitError>> + Send;

    /// Asks the content filters about a command (see [`FilterCall`]); only called for a
    /// session with filters enabled. Without filters: go on.
    fn filter(&mut self, _call: FilterCall) -> impl Future<Output = FilterVerdict> + Send {
        std::future::ready(FilterVerdict::Continue)
    }

    /// Takes bytes out of the session's memory (only called when `spills`).
    fn spill(&mut self, bytes: Vec<u8>) -> impl Future<Output = ()> + Send {
        drop(bytes);
        std::future::ready(())
    }

    /// Keeps spilled bytes; when false, the whole message stays in memory.
    fn spills(&self) -> bool {
        false
    }

    /// Drops the bytes spilled for a message that will not be committed.
    fn discard(&mut self) {}
}

/// A sink for servers without a queue: every message is refused with a temporary error, so
/// nothing is ever claimed as accepted.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoQueue;

impl MessageSink for NoQueue {
    fn commit(&mut self, _msg: Message) -> impl Future<Output = Result<(), CommitError>> + Send {
        std::future::ready(Err(CommitError::Temporary(
            "no mail queue is configured".into(),
        )))
    }
}

/// How the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The session closed it (QUIT, a 421, a protocol violation).
    Closed,
    /// The peer closed the connection or reading/writing failed.
    Lost,
    /// No input within the timeout.
    Timeout,
    /// The daemon is shutting down.
    Shutdown,
    /// A command line over the limit.
    LineTooLong,
}

/// What the listener learns about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnOutcome {
    pub end: EndReason,
    pub stats: SessionStats,
}

/// Runs one SMTP connection to its end.
pub async fn serve<S, K, F>(
    stream: S,
    session: Session,
    sink: &mut K,
    logger: &Logger,
    opts: &ConnOptions,
    shutdown: F,
) -> ConnOutcome
where
    S: AsyncRead + AsyncWrite + Unpin,
    K: MessageSink,
    F: Future<Output = ()>,
{
    let mut d = Driver {
        stream: Stream::Plain(stream),
        session,
        logger,
        input: Vec::with_capacity(READ_ROOM),
        output: Vec::new(),
        end: EndReason::Closed,
        write_failed: false,
        tls: opts.tls.clone(),
        handshake_timeout: opts.timeouts.command,
        live: opts.live.clone(),
        reported: SessionStats::default(),
    };
    if d.session.filters_enabled() {
        // The filters hear of the connection before the greeting (sendmail's milter_connect).
        let verdict = sink.filter(FilterCall::Connect).await;
        let actions = d.session.filtered(verdict);
        d.run(actions, sink).await;
    }
    if opts.implicit_tls {
        let actions = Box::pin(d.start_tls()).await;
        d.run(actions, sink).await;
    }
    if let Some(pause) = opts.greet_pause
        && !d.session.is_closed()
    {
        let start = Instant::now();
        if d.input_within(start + pause).await {
            let actions = d.session.pre_greeting_traffic(start.elapsed());
            d.run(actions, sink).await;
        }
    }
    if !d.session.is_closed() {
        let greeting = d.session.greeting();
        d.output.extend(greeting.to_bytes());
        d.flush().await;
    }
    let mut shutdown = pin!(shutdown);
    let mut stopping = false;
    // When the command line being read must be complete.
    let mut line_deadline: Option<Instant> = None;
    // The message being received (MinDataRate).
    let mut clock: Option<DataClock> = None;
    let spills = sink.spills();
    while !d.session.is_closed() {
        if spills {
            if d.session.receiving() {
                if let Some(bytes) = d.session.take_spill(SPILL_CHUNK) {
                    sink.spill(bytes).await;
                }
            } else {
                sink.discard();
            }
        }
        if !d.session.receiving() && !d.session.wants_data() {
            clock = None;
        }
        if d.write_failed {
            d.end = EndReason::Lost;
            let actions = d.session.connection_lost();
            d.run(actions, sink).await;
            break;
        }
        if d.session.wants_data() {
            if !d.input.is_empty() {
                let c = clock.get_or_insert(DataClock {
                    start: Instant::now(),
                    bytes: 0,
                });
                let (used, actions) = d.session.data(&d.input);
                c.bytes += used as u64;
                d.input.drain(..used);
                d.run(actions, sink).await;
                continue;
            }
        } else if stopping {
            d.end = EndReason::Shutdown;
            let actions = d.session.shutdown();
            d.run(actions, sink).await;
            continue;
        } else if let Some(pos) = d.input.iter().position(|&b| b == b'\n') {
            let total = pos + 1;
            if total > opts.max_line {
                d.end = EndReason::LineTooLong;
                let actions = d.session.line_too_long(total);
                d.run(actions, sink).await;
                continue;
            }
            if d.input.len() == total && command::is_sync_point(&d.input[..pos]) {
                // Like sendmail's channel_readable(): input that has already arrived
                // counts as sent before the reply.
                d.poll_input_now().await;
            }
            let mut line = &d.input[..pos];
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            let more = d.input.len() > total;
            line_deadline = None;
            let actions = d.session.handle(line, more);
            d.input.drain(..total);
            d.run(actions, sink).await;
            continue;
        } else if d.input.len() > opts.max_line {
            let deadline =
                *line_deadline.get_or_insert_with(|| Instant::now() + opts.timeouts.command);
            let total = d.discard_line(deadline).await;
            d.end = EndReason::LineTooLong;
            let actions = d.session.line_too_long(total);
            d.run(actions, sink).await;
            continue;
        }
        // Nothing complete is buffered: send what we have, then wait for input.
        d.flush().await;
        let (limit, during) = if d.session.wants_data() {
            line_deadline = None;
            let c = *clock.get_or_insert(DataClock {
                start: Instant::now(),
                bytes: 0,
            });
            let block = Instant::now() + opts.timeouts.data_block;
            let limit = c
                .deadline(&opts.timeouts)
                .map_or(block, |whole| whole.min(block));
            (limit, "message collect")
        } else {
            let deadline =
                *line_deadline.get_or_insert_with(|| Instant::now() + opts.timeouts.command);
            (deadline, "server cmd read")
        };
        d.make_read_room();
        tokio::select! {
            r = tokio::time::timeout_at(limit, d.stream.read_buf(&mut d.input)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    d.end = EndReason::Lost;
                    let actions = d.session.connection_lost();
                    d.run(actions, sink).await;
                }
                Ok(Ok(_)) => {}
                Err(_) => {
                    d.end = EndReason::Timeout;
                    let actions = d.session.timed_out(during);
                    d.run(actions, sink).await;
                }
            },
            () = &mut shutdown, if !stopping => stopping = true,
        }
    }
    d.flush().await;
    let _ = d.stream.shutdown().await;
    d.report();
    if d.session.filters_enabled() {
        sink.filter(FilterCall::Close).await;
    }
    ConnOutcome {
        end: d.end,
        stats: d.session.stats(),
    }
}

struct Driver<'a, S> {
    stream: Stream<S>,
    session: Session,
    logger: &'a Logger,
    /// Received, not yet processed.
    input: Vec<u8>,
    /// Replies not yet written.
    output: Vec<u8>,
    end: EndReason,
    write_failed: bool,
    tls: Option<ServerTls>,
    handshake_timeout: Duration,
    live: Option<Arc<crate::metrics::DaemonCounters>>,
    /// The session's counts already added to `live`.
    reported: SessionStats,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<'_, S> {
    async fn flush(&mut self) {
        if self.output.is_empty() || self.write_failed {
            self.output.clear();
            return;
        }
        let ok =
            self.stream.write_all(&self.output).await.is_ok() && self.stream.flush().await.is_ok();
        self.output.clear();
        if !ok {
            self.write_failed = true;
        }
    }

    /// Carries out the session's actions in order (a commit's answer is carried out too).
    async fn run<K: MessageSink>(&mut self, actions: Vec<Action>, sink: &mut K) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Reply(r) => self.output.extend(r.to_bytes()),
                Action::Log(l) => {
                    self.logger
                        .log(l.severity, l.qid.as_deref(), format_args!("{}", l.text))
                }
                Action::Delay(d) => {
                    self.flush().await;
                    tokio::time::sleep(d).await;
                }
                Action::StartData => self.flush().await,
                Action::Commit(msg) => {
                    let qid = msg.qid.clone();
                    // Boxed, as the TLS handshake below: a future held inline here would
                    // make every session's task that large while it waits for a command
                    // (the per-session memory of `bench/idle.py`).
                    let result = match Box::pin(sink.commit(*msg)).await {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            self.logger
                                .log(Severity::Err, Some(&qid), format_args!("{e}"));
                            Err(match e {
                                CommitError::Temporary(_) => reply::local_error(),
                                CommitError::Refused(r) => r,
                            })
                        }
                    };
                    queue.extend(self.session.committed(result));
                }
                Action::Close => self.flush().await,
                Action::Filter(call) => {
                    let wants = call.wants_verdict();
                    let verdict = sink.filter(call).await;
                    if wants {
                        queue.extend(self.session.filtered(verdict));
                    }
                }
                Action::StartTls => {
                    self.flush().await;
                    // Whatever the client pipelined after STARTTLS was sent in the clear
                    // before the handshake: it is dropped, never executed.
                    self.input.clear();
                    queue.extend(Box::pin(self.start_tls()).await);
                }
            }
        }
        self.report();
    }

    /// Adds what the session counted since the last report to the daemon's live counters.
    fn report(&mut self) {
        let Some(live) = &self.live else { return };
        let now = self.session.stats();
        let was = std::mem::replace(&mut self.reported, now);
        let add = |c: &std::sync::atomic::AtomicU64, now: u64, was: u64| {
            crate::metrics::DaemonCounters::add(c, now.saturating_sub(was));
        };
        add(&live.messages, now.messages.into(), was.messages.into());
        add(&live.bytes, now.bytes, was.bytes);
        add(
            &live.rejected_recipients,
            now.rejected_rcpts.into(),
            was.rejected_rcpts.into(),
        );
        add(
            &live.tls_handshakes,
            now.tls_handshakes.into(),
            was.tls_handshakes.into(),
        );
        add(
            &live.tls_failures,
            now.tls_failures.into(),
            was.tls_failures.into(),
        );
        add(
            &live.auth_failures,
            now.auth_failures.into(),
            was.auth_failures.into(),
        );
    }

    /// Runs the server side of the handshake on the plain stream; the session's answer.
    async fn start_tls(&mut self) -> Vec<Action> {
        let Some(tls) = self.tls.clone() else {
            return self.session.tls_failed("no certificate");
        };
        let plain = match std::mem::replace(&mut self.stream, Stream::Gone) {
            Stream::Plain(s) => s,
            other => {
                self.stream = other;
                return self.session.tls_failed("TLS already active");
            }
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(plain)).await {
            Ok(Ok(s)) => {
                let info = tls.info(s.get_ref().1);
                self.stream = Stream::Tls(Box::new(s));
                self.session.tls_started(info)
            }
            Ok(Err(e)) => {
                self.end = EndReason::Lost;
                self.session.tls_failed(&e.to_string())
            }
            Err(_) => {
                self.end = EndReason::Timeout;
                self.session.tls_failed("timeout")
            }
        }
    }

    /// Takes in what input has already arrived, without waiting for more: a zero-wait
    /// check, like sendmail's select() with a zero timeout. The yield first lets the runtime
    /// poll its I/O driver, so that bytes the kernel holds are seen as readable; then the
    /// stream is polled exactly once. (A timed wait here costs a timer tick, 1-2 ms, per
    /// EHLO and DATA.)
    /// Dropping the read while it is pending loses nothing (`read_buf` is cancel safe); EOF
    /// and errors are left for the next regular read.
    async fn poll_input_now(&mut self) {
        tokio::task::yield_now().await;
        self.make_read_room();
        let mut read = pin!(self.stream.read_buf(&mut self.input));
        let _ = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
    }

    /// Gives the input buffer room for a full read when less than half of it is free.
    fn make_read_room(&mut self) {
        if self.input.capacity() - self.input.len() < READ_ROOM / 2 {
            self.input.reserve(READ_ROOM);
        }
    }

    /// Whether the client sends anything before `deadline` (what it sends is kept as input).
    async fn input_within(&mut self, deadline: Instant) -> bool {
        let mut chunk = vec![0u8; READ_ROOM];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.input.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// Reads and drops the rest of an over-long line, until `deadline` at most; returns its
    /// length with terminator (or what was counted before [`MAX_DISCARD`], the deadline or
    /// the end of input).
    async fn discard_line(&mut self, deadline: Instant) -> usize {
        let mut total = self.input.len();
        self.input.clear();
        // On the heap: an array here would sit in every connection's future.
        let mut chunk = vec![0u8; READ_ROOM];
        while total < MAX_DISCARD {
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await;
            let n = match read {
                Ok(Ok(n)) if n > 0 => n,
                _ => break,
            };
            if let Some(pos) = chunk[..n].iter().position(|&b| b == b'\n') {
                total += pos + 1;
                self.input.extend_from_slice(&chunk[pos + 1..n]);
                break;
            }
            total += n;
        }
        total
    }
}

#[cfg(test)]
mod tests;
