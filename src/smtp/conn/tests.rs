//! Driver tests over an in-memory stream (`tokio::io::duplex`).

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadBuf};

use super::*;
use crate::queue::id::QueueIdGen;
use crate::smtp::command::{Address, MailParams, RcptParams};
use crate::smtp::session::{
    ClientInfo, Decision, Features, Policy, PolicyContext, Privacy, SessionContext,
};

struct AcceptAll;

impl Policy for AcceptAll {
    fn check_mail(&self, _: &PolicyContext<'_>, _: &Address, _: &MailParams) -> Decision {
        Decision::Accept
    }
    fn check_rcpt(&self, _: &PolicyContext<'_>, _: &Address, _: &RcptParams) -> Decision {
        Decision::Accept
    }
}

/// Keeps every committed message.
#[derive(Default, Clone)]
struct Keep(Arc<Mutex<Vec<Message>>>);

impl MessageSink for Keep {
    fn commit(&mut self, msg: Message) -> impl Future<Output = Result<(), CommitError>> + Send {
        self.0.lock().unwrap().push(msg);
        std::future::ready(Ok(()))
    }
}

fn session() -> Session {
    Session::new(SessionContext {
        hostname: "mx.example.test".into(),
        greeting: "mx.example.test sendmail-rs ready".into(),
        daemon_name: "MTA-v6".into(),
        daemon_flags: String::new(),
        client: ClientInfo {
            ip: Some("::1".parse().unwrap()),
            port: 4000,
            name: Some("localhost".into()),
        },
        max_message_size: 0,
        max_headers_length: 0,
        seven_bit_input: false,
        max_recipients: 0,
        // BDAT is exercised here: on, as under our `Chunking` option.
        features: Features {
            chunking: true,
            ..Features::default()
        },
        privacy: Privacy::default(),
        log_level: 9,
        version: "0.1.0".into(),
        help: None,
        connect_reject: None,
        policy: Arc::new(AcceptAll),
        ids: Arc::new(QueueIdGen::new()),
        security: Default::default(),
        macros: Default::default(),
        bad_rcpt_throttle: 0,
    })
}

fn quick() -> ConnOptions {
    ConnOptions {
        timeouts: Timeouts {
            command: Duration::from_secs(5),
            data_block: Duration::from_secs(5),
            min_data_rate: 0,
        },
        max_line: MAX_COMMAND_LINE,
        ..ConnOptions::default()
    }
}

/// The client side: writes and reads whole replies.
struct Client {
    r: BufReader<tokio::io::ReadHalf<DuplexStream>>,
    w: tokio::io::WriteHalf<DuplexStream>,
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
    }

    /// One reply (all its lines), or empty at end of stream.
    async fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).await.unwrap() == 0 {
                return lines;
            }
            assert!(line.ends_with("\r\n"), "{line:?}");
            let line = line.trim_end().to_owned();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    async fn first_line(&mut self) -> String {
        self.reply().await.into_iter().next().unwrap_or_default()
    }

    async fn at_eof(&mut self) -> bool {
        self.reply().await.is_empty()
    }
}

fn pair() -> (DuplexStream, Client) {
    let (server, client) = tokio::io::duplex(1 << 16);
    let (r, w) = tokio::io::split(client);
    (
        server,
        Client {
            r: BufReader::new(r),
            w,
        },
    )
}

#[tokio::test]
async fn a_whole_session_with_pipelining() {
    let (server, mut c) = pair();
    let mut sink = Keep::default();
    let logger = Logger::stderr(9);
    let opts = quick();
    let serve = serve(
        server,
        session(),
        &mut sink,
        &logger,
        &opts,
        std::future::pending(),
    );
    let client = async move {
        assert_eq!(
            c.reply().await,
            ["220 mx.example.test ESMTP sendmail-rs ready"]
        );
        c.send(b"EHLO client.example.test\r\n").await;
        let ehlo = c.reply().await;
        assert_eq!(
            ehlo[0],
            "250-mx.example.test Hello localhost [IPv6:0:0:0:0:0:0:0:1], pleased to meet you"
        );
        assert_eq!(ehlo.last().unwrap(), "250 HELP");
        c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@mx.example.test>\r\nRCPT TO:<c@mx.example.test>\r\nDATA\r\n")
            .await;
        assert_eq!(
            c.first_line().await,
            "250 2.1.0 <a@client.test>... Sender ok"
        );
        assert_eq!(
            c.first_line().await,
            "250 2.1.5 <b@mx.example.test>... Recipient ok"
        );
        assert_eq!(
            c.first_line().await,
            "250 2.1.5 <c@mx.example.test>... Recipient ok"
        );
        assert_eq!(c.first_line().await, "354 End data with <CR><LF>.<CR><LF>");
        c.send(b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n").await;
        assert_accepted(&c.first_line().await);
        assert_eq!(
            c.first_line().await,
            "221 2.0.0 mx.example.test closing connection"
        );
        assert!(c.at_eof().await);
    };
    let (outcome, ()) = tokio::join!(serve, client);
    assert_eq!(outcome.end, EndReason::Closed);
    assert_eq!(outcome.stats.messages, 1);
    assert_eq!(outcome.stats.bytes, 18);
    let kept = sink.0.lock().unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].recipients.len(), 2);
    assert_eq!(kept[0].body, b"Subject: hi\n\nbody\n");
}

#[tokio::test]
async fn without_a_queue_nothing_is_accepted() {
    let (server, mut c) = pair();
    let logger = Logger::stderr(9);
    let opts = quick();
    let mut nq = NoQueue;
    let serve = serve(
        server,
        session(),
        &mut nq,
        &logger,
        &opts,
        std::future::pending(),
    );
    let client = async move {
        c.reply().await;
        // HELO must wait for its reply (sendmail 8.18 rejects input pipelined after it).
        c.send(b"HELO x.test\r\n").await;
        c.reply().await;
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
            .await;
        for _ in 0..3 {
            c.reply().await;
        }
        c.send(b"body\r\n.\r\n").await;
        assert_eq!(
            c.first_line().await,
            "451 4.3.0 Temporary system failure. Please try again later."
        );
        c.send(b"QUIT\r\n").await;
        assert_eq!(
            c.first_line().await,
            "221 2.0.0 mx.example.test closing connection"
        );
    };
    let (outcome, ()) = tokio::join!(serve, client);
    assert_eq!(outcome.stats.messages, 0);
}

#[tokio::test]
async fn peer_closing_is_lost_input() {
    let (server, mut c) = pair();
    let logger = Logger::stderr(9);
    let opts = quick();
    let mut nq = NoQueue;
    let serve = serve(
        server,
        session(),
        &mut nq,
        &logger,
        &opts,
        std::future::pending(),
    );
    let client = async move {
        c.reply().await;
        c.send(b"EHLO x.test\r\n").await;
        c.reply().await;
        c.send(b"MAIL FROM:<a@b.test>\r\n").await;
        assert_eq!(c.first_line().await, "250 2.1.0 <a@b.test>... Sender ok");
        drop(c);
    };
    let (outcome, ()) = tokio::join!(serve, client);
    assert_eq!(outcome.end, EndReason::Lost);
    assert!(outcome.stats.mail_issued);
}

#[tokio::test]
async fn bare_lf_in_data_closes() {
    let (server, mut c) = pair();
    let logger = Logger::stderr(9);
    let opts = quick();
    let mut sink = Keep::default();
    let serve = serve(
        server,
        session(),
        &mut sink,
        &logger,
        &opts,
        std::future::pending(),
    );
    let client = async move {
        c.reply().await;
        // HELO must wait for its reply (sendmail 8.18 rejects input pipelined after it).
        c.send(b"HELO x.test\r\n").await;
        c.reply().await;
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
            .await;
        for _ in 0..3 {
            c.reply().await;
        }
        c.send(b"Subject: x\r\n\r\nbody\n.\r\nMAIL FROM:<evil@b.test>\r\n")
            .await;
        assert_eq!(
            c.first_line().await,
            "421 4.5.0 Bare linefeed (LF) not allowed"
        );
        assert!(c.at_eof().await);
    };
    let (outcome, ()) = tokio::join!(serve, client);
    assert_eq!(outcome.end, EndReason::Closed);
    assert!(sink.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn commands_pipelined_after_helo_are_rejected() {
    let (server, mut c) = pair();
    let logger = Logger::stderr(9);
    let opts = quick();
    let mut nq = NoQueue;
    let serve = serve(
        server,
        session(),
        &mut nq,
        &logger,
        &opts,
        std::future::pending(),
    );
    let client = async move {
        c.reply().await;
        c.send(b"HELO x.test\r\nMAIL FROM:<a@b.test>\r\nQUIT\r\n")
            .await;
        assert_eq!(c.first_line().await, "554 5.5.0 SMTP protocol error");
        assert_eq!(c.first_line().await, "550 5.0.0 Command rejected");
        assert_eq!(
            c.first_line().await,
            "221 2.0.0 mx.example.test closing connection"
        );
        assert!(c.at_eof().await);
    };
    tokio::join!(serve, client);
}

#[tokio::test]
async fn body_pipelined_with_data_is_a_protocol_error() {
    let (server, mut c) = pair();
    let logger = Logger::stderr(9);
    let opts = quick();
    let mut nq = NoQueue;
    let serve = serve(
        server,
        session(),
        &mut nq,
        &logger,
        &opts,
        std::future::pending(),
    );
    let client = async move {
        c.reply().await;
        c.send(b"EHLO x.test\r\n").await;
        c.reply().await;
        c.send(b"MAIL FROM:<a@b.test>\r\n").await;
        c.reply().await;
        c.send(b"RCPT TO:<c@d.test>\r\n").await;
        c.reply().await;
        c.send(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n").await;
        assert_eq!(c.first_line().await, "554 5.5.0 SMTP protocol error");
        assert!(c.at_eof().await);
    };
    tokio::join!(serve, client);
}

#[tokio::test]
async fn over_long_command_line() {
    let (server, mut c) = pair();
    let logger = Logger::stderr(9);
    let opts = quick();
    let mut nq = NoQueue;
    let serve = serve(
        server,
        session(),
        &mut nq,
        &logger,
        &opts,
        std::future::pending(),
    );
    let client = async move {
        c.reply().await;
        let mut ok = b"NOOP ".to_vec();
        ok.extend(std::iter::repeat_n(b'x', 995));
        ok.extend(b"\r\n");
        c.send(&ok).await;
        assert_eq!(c.first_line().await, "250 2.0.0 OK");
        let mut long = b"NOOP ".to_vec();
        long.extend(std::iter::repeat_n(b'y', 5000));
        long.extend(b"\r\n");
        c.send(&long).await;
        assert_eq!(
            c.first_line().await,
            "421 4.7.0 mx.example.test Command too long, possible attack localhost [IPv6:0:0:0:0:0:0:0:1]"
        );
        assert!(c.at_eof().await);
    };
    let (outcome, ()) = tokio::join!(serve, client);
    assert_eq!(outcome.end, EndReason::LineTooLong);
}

#[tokio::test]
async fn shutdown_ends_an_idle_session() {
    let (server, mut c) = pair();
    let logger = Logger::stderr(9);
    let opts = quick();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        let _ = rx.await;
    };
    let mut nq = NoQueue;
    let serve = serve(server, session(), &mut nq, &logger, &opts, stop);
    let client = async move {
        c.reply().await;
        c.send(b"NOOP\r\n").await;
        assert_eq!(c.first_line().await, "250 2.0.0 OK");
        tx.send(()).unwrap();
        assert_eq!(
            c.first_line().await,
            "421 4.3.2 mx.example.test Shutting down"
        );
        assert!(c.at_eof().await);
    };
    let (outcome, ()) = tokio::join!(serve, client);
    assert_eq!(outcome.end, EndReason::Shutdown);
}

#[tokio::test]
async fn shutdown_lets_a_message_finish() {
    let (server, mut c) = pair();
    let logger = Logger::stderr(9);
    let opts = quick();
    let mut sink = Keep::default();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        let _ = rx.await;
    };
    let serve = serve(server, session(), &mut sink, &logger, &opts, stop);
    let client = async move {
        c.reply().await;
        // HELO must wait for its reply (sendmail 8.18 rejects input pipelined after it).
        c.send(b"HELO x.test\r\n").await;
        c.reply().await;
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
            .await;
        for _ in 0..3 {
            c.reply().await;
        }
        c.send(b"Subject: x\r\n").await;
        tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.send(b"\r\nbody\r\n.\r\n").await;
        assert_accepted(&c.first_line().await);
        assert_eq!(
            c.first_line().await,
            "421 4.3.2 mx.example.test Shutting down"
        );
        assert!(c.at_eof().await);
    };
    let (outcome, ()) = tokio::join!(serve, client);
    assert_eq!(outcome.end, EndReason::Shutdown);
    assert_eq!(sink.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn idle_client_times_out() {
    let (server, mut c) = pair();
    let logger = Logger::stderr(9);
    let mut opts = quick();
    opts.timeouts.command = Duration::from_millis(100);
    let mut nq = NoQueue;
    let serve = serve(
        server,
        session(),
        &mut nq,
        &logger,
        &opts,
        std::future::pending(),
    );
    let client = async move {
        c.reply().await;
        assert_eq!(
            c.first_line().await,
            "421 4.4.1 mx.example.test Lost input channel from localhost [IPv6:0:0:0:0:0:0:0:1]"
        );
        assert!(c.at_eof().await);
    };
    let (outcome, ()) = tokio::join!(serve, client);
    assert_eq!(outcome.end, EndReason::Timeout);
}

#[tokio::test]
async fn idle_client_in_data_times_out_with_451() {
    let (server, mut c) = pair();
    let logger = Logger::stderr(9);
    let mut opts = quick();
    opts.timeouts.data_block = Duration::from_millis(100);
    let mut nq = NoQueue;
    let serve = serve(
        server,
        session(),
        &mut nq,
        &logger,
        &opts,
        std::future::pending(),
    );
    let client = async move {
        c.reply().await;
        c.send(b"HELO x.test\r\n").await;
        c.reply().await;
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
            .await;
        for _ in 0..3 {
            c.reply().await;
        }
        c.send(b"Subject: x\r\n").await;
        assert_eq!(
            c.first_line().await,
            "451 4.4.1 timeout waiting for input during message collect"
        );
        assert_eq!(
            c.first_line().await,
            "421 4.4.1 mx.example.test Lost input channel from localhost [IPv6:0:0:0:0:0:0:0:1]"
        );
        assert!(c.at_eof().await);
    };
    let (outcome, ()) = tokio::join!(serve, client);
    assert_eq!(outcome.end, EndReason::Timeout);
}

/// The listener spawns one task per connection: `serve` must be `Send`.
#[tokio::test]
async fn serve_runs_in_a_spawned_task() {
    let (server, mut c) = pair();
    let task = tokio::spawn(async move {
        let logger = Logger::stderr(9);
        let mut sink = Keep::default();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let mut rx = rx;
        let stop = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        serve(
            server,
            session(),
            &mut sink,
            &logger,
            &ConnOptions::default(),
            stop,
        )
        .await
    });
    c.reply().await;
    c.send(b"QUIT\r\n").await;
    assert_eq!(
        c.first_line().await,
        "221 2.0.0 mx.example.test closing connection"
    );
    let outcome = task.await.unwrap();
    assert_eq!(outcome.end, EndReason::Closed);
}

/// `250 2.0.0 <14-character queue id> Message accepted for delivery`.
fn assert_accepted(line: &str) {
    let id = line
        .strip_prefix("250 2.0.0 ")
        .and_then(|r| r.strip_suffix(" Message accepted for delivery"))
        .unwrap_or_else(|| panic!("not an acceptance: {line}"));
    assert_eq!(id.len(), 14, "{line}");
    assert!(id.chars().all(|c| c.is_ascii_alphanumeric()), "{line}");
}

/// Writes `bytes` one at a time, `gap` apart (a client that trickles).
async fn trickle(w: &mut tokio::io::WriteHalf<DuplexStream>, bytes: &[u8], gap: Duration) {
    for b in bytes {
        tokio::time::sleep(gap).await;
        w.write_all(std::slice::from_ref(b)).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_command_line_must_arrive_whole_within_the_command_timeout() {
    // Timeout.command=2s; one byte every 500 ms: every read is quick, the line is not.
    let (server, mut c) = pair();
    let logger = Logger::stderr(9);
    let mut opts = quick();
    opts.timeouts.command = Duration::from_secs(2);
    let mut nq = NoQueue;
    let serve = serve(
        server,
        session(),
        &mut nq,
        &logger,
        &opts,
        std::future::pending(),
    );
    let client = async move {
        c.reply().await;
        trickle(&mut c.w, b"NOOP\r\n", Duration::from_millis(300)).await;
        assert_eq!(
            c.first_line().await,
            "250 2.0.0 OK",
            "a slow but whole line"
        );
        let started = Instant::now();
        let Client { r, w } = &mut c;
        let mut line = String::new();
        tokio::select! {
            () = trickle(w, b"MAIL FROM:<a@b.test>\r\n", Duration::from_millis(500)) => {
                panic!("the whole line was taken")
            }
            n = r.read_line(&mut line) => assert!(n.unwrap() > 0),
        }
        assert_eq!(
            line,
            "421 4.4.1 mx.example.test Lost input channel from localhost [IPv6:0:0:0:0:0:0:0:1]\r\n"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
    };
    let (outcome, ()) = tokio::join!(serve, client);
    assert_eq!(outcome.end, EndReason::Timeout);
}

#[tokio::test(start_paused = true)]
async fn message_input_may_trickle_as_long_as_it_moves() {
    // Timeout.datablock=2s: DATA bytes 500 ms apart keep the message alive.
    let (server, mut c) = pair();
    let mut sink = Keep::default();
    let logger = Logger::stderr(9);
    let mut opts = quick();
    opts.timeouts.data_block = Duration::from_secs(2);
    let serve = serve(
        server,
        session(),
        &mut sink,
        &logger,
        &opts,
        std::future::pending(),
    );
    let client = async move {
        c.reply().await;
        c.send(b"HELO x.test\r\n").await;
        c.reply().await;
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
            .await;
        for _ in 0..3 {
            c.reply().await;
        }
        trickle(
            &mut c.w,
            b"Subject: slow\r\n\r\nbody\r\n.\r\n",
            Duration::from_millis(500),
        )
        .await;
        assert_accepted(&c.first_line().await);
    };
    let ((), _) = tokio::join!(client, serve);
    assert_eq!(sink.0.lock().unwrap()[0].body, b"Subject: slow\n\nbody\n");
}

#[tokio::test]
async fn pipelined_bdat_chunks_split_across_reads() {
    let (server, mut c) = pair();
    let mut sink = Keep::default();
    let logger = Logger::stderr(9);
    let opts = quick();
    let serve = serve(
        server,
        session(),
        &mut sink,
        &logger,
        &opts,
        std::future::pending(),
    );
    let client = async move {
        c.reply().await;
        c.send(b"EHLO client.example.test\r\n").await;
        assert!(c.reply().await.contains(&"250-CHUNKING".to_string()));
        // The first chunk's "\r\n.\r\n" is data, not an end; its CR and LF are split
        // between the two chunks; commands follow the last chunk in the same write.
        c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@mx.example.test>\r\nBDAT 22\r\nSubject: c\r\n\r\n.\r\nQUIT\r")
            .await;
        c.send(b"BDAT 11 LAST\r\n\n\r\n..").await;
        c.send(b".end\r\nNOOP\r\n").await;
        assert_eq!(
            c.first_line().await,
            "250 2.1.0 <a@client.test>... Sender ok"
        );
        c.first_line().await;
        assert_eq!(c.first_line().await, "250 2.0.0 22 octets received");
        assert_accepted(&c.first_line().await);
        assert_eq!(c.first_line().await, "250 2.0.0 OK");
        c.send(b"QUIT\r\n").await;
        c.reply().await;
        assert!(c.at_eof().await);
    };
    let (outcome, ()) = tokio::join!(serve, client);
    assert_eq!(outcome.end, EndReason::Closed);
    let kept = sink.0.lock().unwrap();
    assert_eq!(kept[0].body, b"Subject: c\n\n.\nQUIT\n\n...end\n");
}

/// A client whose input arrives in the given pieces: `Some(bytes)` is one read's worth,
/// already there when the server looks; `None` is "not sent yet" (one poll answers
/// Pending); after the last piece, end of stream. What the server writes is kept.
struct Scripted {
    pieces: VecDeque<Option<&'static [u8]>>,
    written: Vec<u8>,
}

impl Scripted {
    fn new(pieces: &[Option<&'static [u8]>]) -> Self {
        Scripted {
            pieces: pieces.iter().copied().collect(),
            written: Vec::new(),
        }
    }
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.pieces.pop_front() {
            Some(Some(bytes)) => buf.put_slice(bytes),
            Some(None) => {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            None => {}
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.written.extend_from_slice(bytes);
        Poll::Ready(Ok(bytes.len()))
    }
    fn poll_flush(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs a session over `pieces` and returns what the server wrote.
async fn scripted_session(pieces: &[Option<&'static [u8]>]) -> String {
    let mut stream = Scripted::new(pieces);
    let logger = Logger::stderr(9);
    let opts = quick();
    let mut nq = NoQueue;
    serve(
        &mut stream,
        session(),
        &mut nq,
        &logger,
        &opts,
        std::future::pending(),
    )
    .await;
    String::from_utf8(stream.written).unwrap()
}

#[tokio::test]
async fn a_command_that_arrived_in_a_later_read_before_the_ehlo_reply_is_rejected() {
    let out = scripted_session(&[
        Some(b"EHLO x.test\r\n"),
        Some(b"MAIL FROM:<a@b.test>\r\n"),
        Some(b"QUIT\r\n"),
    ])
    .await;
    assert!(
        out.contains("\r\n554 5.5.0 SMTP protocol error\r\n"),
        "{out}"
    );
}

#[tokio::test]
async fn a_client_that_waits_for_the_ehlo_reply_is_served() {
    let out = scripted_session(&[
        Some(b"EHLO x.test\r\n"),
        None,
        Some(b"MAIL FROM:<a@b.test>\r\n"),
        None,
        Some(b"QUIT\r\n"),
    ])
    .await;
    assert!(!out.contains("554"), "{out}");
    assert!(out.contains("\r\n250 2.1.0"), "{out}");
}

#[tokio::test]
async fn a_body_that_arrived_in_a_later_read_before_the_354_is_rejected() {
    let out = scripted_session(&[
        Some(b"EHLO x.test\r\n"),
        None,
        Some(b"MAIL FROM:<a@b.test>\r\n"),
        None,
        Some(b"RCPT TO:<c@d.test>\r\n"),
        None,
        Some(b"DATA\r\n"),
        Some(b"Subject: x\r\n\r\nbody\r\n.\r\n"),
    ])
    .await;
    assert!(
        out.contains("\r\n554 5.5.0 SMTP protocol error\r\n"),
        "{out}"
    );
    assert!(!out.contains("354"), "{out}");
}

/// Spills into memory as the queue's spool would, and puts the message back together at
/// the commit; records the largest body the session held at any spill.
#[derive(Default)]
struct Spilling {
    spooled: Vec<u8>,
    discards: usize,
    held_max: usize,
    whole: Vec<Vec<u8>>,
}

impl MessageSink for Spilling {
    fn spills(&self) -> bool {
        true
    }
    fn spill(&mut self, bytes: Vec<u8>) -> impl Future<Output = ()> + Send {
        self.spooled.extend_from_slice(&bytes);
        std::future::ready(())
    }
    fn discard(&mut self) {
        if !self.spooled.is_empty() {
            self.discards += 1;
        }
        self.spooled.clear();
    }
    fn commit(&mut self, msg: Message) -> impl Future<Output = Result<(), CommitError>> + Send {
        assert_eq!(msg.spilled, self.spooled.len() as u64);
        self.held_max = self.held_max.max(msg.body.len());
        let mut whole = msg.body[..msg.spill_at.min(msg.body.len())].to_vec();
        whole.append(&mut self.spooled);
        whole.extend_from_slice(&msg.body[msg.spill_at.min(msg.body.len())..]);
        if msg.spilled == 0 {
            whole = msg.body.clone();
        }
        self.whole.push(whole);
        std::future::ready(Ok(()))
    }
}

#[tokio::test]
async fn a_big_message_leaves_the_session_in_spills_and_comes_back_whole() {
    let (server, mut c) = pair();
    let mut sink = Spilling::default();
    let logger = Logger::stderr(0);
    let opts = quick();
    // 3 MB of numbered lines: DATA, then the same text in three BDAT chunks.
    let mut text = String::from("Subject: big\r\n\r\n");
    for i in 0..60_000 {
        text.push_str(&format!(
            "line {i:08} ..........................................\r\n"
        ));
    }
    let lf = text.replace("\r\n", "\n").into_bytes();
    let t = text.clone();
    let client = async move {
        assert!(c.first_line().await.starts_with("220"));
        c.send(b"EHLO c.test\r\n").await;
        c.reply().await;
        c.send(b"MAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.example.test>\r\nDATA\r\n")
            .await;
        for _ in 0..3 {
            c.reply().await;
        }
        c.send(t.as_bytes()).await;
        c.send(b".\r\n").await;
        assert!(c.first_line().await.starts_with("250 2.0.0"));
        let b = t.as_bytes();
        let third = b.len() / 3;
        c.send(b"MAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.example.test>\r\n")
            .await;
        c.reply().await;
        c.reply().await;
        for (i, part) in [&b[..third], &b[third..2 * third], &b[2 * third..]]
            .iter()
            .enumerate()
        {
            let last = if i == 2 { " LAST" } else { "" };
            c.send(format!("BDAT {}{last}\r\n", part.len()).as_bytes())
                .await;
            c.send(part).await;
            assert!(c.first_line().await.starts_with("250 2.0.0"));
        }
        // A reset transaction: its spilled bytes are given back.
        c.send(b"MAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.example.test>\r\nBDAT 600000\r\n")
            .await;
        c.reply().await;
        c.reply().await;
        c.send(&b[..600_000]).await;
        c.reply().await;
        c.send(b"RSET\r\n").await;
        c.reply().await;
        c.send(b"QUIT\r\n").await;
        c.reply().await;
    };
    let ((), _) = tokio::join!(client, async {
        serve(
            server,
            session(),
            &mut sink,
            &logger,
            &opts,
            std::future::pending(),
        )
        .await
    });
    assert_eq!(sink.whole.len(), 2);
    for w in &sink.whole {
        assert_eq!(w.len(), lf.len());
        assert!(w == &lf, "message put back together differs");
    }
    assert!(
        sink.held_max < crate::smtp::body::KEEP_HEAD + SPILL_CHUNK + (64 << 10),
        "the session held {} bytes",
        sink.held_max
    );
    assert_eq!(sink.discards, 1, "the reset message's spill is dropped");
}

/// The daemon's live counters see a message as soon as it is committed, while the session
/// goes on (a client that stays connected for hours is still counted).
#[tokio::test]
async fn a_message_is_counted_live_before_the_session_ends() {
    use std::sync::atomic::Ordering;
    let (server, mut c) = pair();
    let mut sink = Keep::default();
    let logger = Logger::stderr(9);
    let live = Arc::new(crate::metrics::DaemonCounters::default());
    let opts = ConnOptions {
        live: Some(live.clone()),
        ..quick()
    };
    let serve = serve(
        server,
        session(),
        &mut sink,
        &logger,
        &opts,
        std::future::pending(),
    );
    let seen = live.clone();
    let client = async move {
        c.reply().await;
        c.send(b"HELO client.example.test\r\n").await;
        c.reply().await;
        c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@mx.example.test>\r\nDATA\r\n")
            .await;
        for _ in 0..3 {
            c.reply().await;
        }
        c.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n").await;
        assert_accepted(&c.first_line().await);
        let during = (
            seen.messages.load(Ordering::Relaxed),
            seen.bytes.load(Ordering::Relaxed),
        );
        c.send(b"QUIT\r\n").await;
        c.reply().await;
        during
    };
    let (outcome, during) = tokio::join!(serve, client);
    assert_eq!(during, (1, 18));
    assert_eq!(outcome.stats.messages, 1);
    // reported once: the end of the session adds nothing more
    assert_eq!(live.messages.load(Ordering::Relaxed), 1);
}
