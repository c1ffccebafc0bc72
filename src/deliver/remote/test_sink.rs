//! Test support: a small SMTP server that records what a client sends and answers as
//! configured (per-recipient refusals, no EHLO, a refusing greeting, a drop during DATA).
//! Used over `tokio::io::duplex` and over real loopback sockets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// How the sink behaves.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The greeting line(s), e.g. `220 sink ESMTP`.
    pub greeting: String,
    /// EHLO keywords after the hello line; `None`: EHLO gets `500 5.5.1`.
    pub ehlo: Option<Vec<String>>,
    /// Goes into `250 2.0.0 Ok: queued as <tag>`.
    pub tag: String,
    /// Answer nothing after MAIL until DATA has arrived too (proves the client pipelined).
    pub require_pipelining: bool,
    /// Close the connection after reading the first DATA line.
    pub drop_in_data: bool,
    pub mail_reply: String,
}

impl SinkConfig {
    pub fn new(tag: &str) -> SinkConfig {
        SinkConfig {
            greeting: "220 sink.example.test ESMTP ready".to_string(),
            ehlo: Some(
                [
                    "PIPELINING",
                    "8BITMIME",
                    "SIZE 1000000",
                    "DSN",
                    "ENHANCEDSTATUSCODES",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ),
            tag: tag.to_string(),
            require_pipelining: false,
            drop_in_data: false,
            mail_reply: "250 2.1.0 Sender ok".to_string(),
        }
    }
}

/// What the sink saw on one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Command lines, without CRLF.
    pub commands: Vec<String>,
    /// The DATA bytes as sent (CRLF, dot-stuffed), without the final `.` line.
    pub data: Vec<u8>,
    /// The client's address (TCP sinks only).
    pub peer: Option<std::net::SocketAddr>,
}

pub type Log = Arc<Mutex<Vec<Seen>>>;

/// The recipient's answer, by local part: `busy…` 450, `nosuch…` 550, others 250.
fn rcpt_reply(line: &str) -> String {
    let addr = line
        .split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map(|(a, _)| a)
        .unwrap_or("");
    let local = addr.split('@').next().unwrap_or("");
    if local.starts_with("busy") {
        format!("450 4.2.1 <{addr}>... Mailbox busy")
    } else if local.starts_with("nosuch") {
        format!("550 5.1.1 <{addr}>... User unknown")
    } else {
        format!("250 2.1.5 <{addr}>... Recipient ok")
    }
}

/// Serves one connection; returns when the client quits or goes away (bounded by a 10 s
/// wait per line).
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    cfg: SinkConfig,
    log: Log,
    peer: Option<std::net::SocketAddr>,
) {
    let (r, mut w) = tokio::io::split(io);
    let mut lines = BufReader::new(r);
    let mut seen = Seen {
        peer,
        ..Seen::default()
    };
    let _ = w
        .write_all(format!("{}\r\n", cfg.greeting).as_bytes())
        .await;
    let mut pending: Vec<String> = Vec::new();
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), lines.read_line(&mut line)).await;
        let Ok(Ok(n)) = read else { break };
        if n == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        seen.commands.push(line.clone());
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        if cfg.require_pipelining && (verb == "MAIL" || !pending.is_empty()) && verb != "DATA" {
            pending.push(line);
            continue;
        }
        let mut replies = Vec::new();
        for held in pending.drain(..) {
            replies.push(answer(&held, &cfg));
        }
        if verb == "DATA" {
            replies.push("354 Enter mail, end with \".\" on a line by itself".to_string());
            write_lines(&mut w, &replies).await;
            if !read_data(&mut lines, &mut seen, cfg.drop_in_data).await {
                break;
            }
            write_lines(&mut w, &[format!("250 2.0.0 Ok: queued as {}", cfg.tag)]).await;
            continue;
        }
        replies.push(answer(&line, &cfg));
        write_lines(&mut w, &replies).await;
        if verb == "QUIT" {
            break;
        }
    }
    log.lock().unwrap().push(seen);
}

fn answer(line: &str, cfg: &SinkConfig) -> String {
    let verb = line
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    match verb.as_str() {
        "EHLO" => match &cfg.ehlo {
            Some(kws) => {
                let mut out = vec!["250-sink.example.test Hello".to_string()];
                for (i, k) in kws.iter().enumerate() {
                    let sep = if i + 1 == kws.len() { ' ' } else { '-' };
                    out.push(format!("250{sep}{k}"));
                }
                if kws.is_empty() {
                    out[0] = "250 sink.example.test Hello".to_string();
                }
                out.join("\r\n")
            }
            None => "500 5.5.1 Command unrecognized: \"EHLO\"".to_string(),
        },
        "HELO" => "250 sink.example.test Hello".to_string(),
        "MAIL" => cfg.mail_reply.clone(),
        "RCPT" => rcpt_reply(line),
        "QUIT" => "221 2.0.0 sink.example.test closing connection".to_string(),
        "RSET" => "250 2.0.0 Reset state".to_string(),
        _ => "500 5.5.1 Command unrecognized".to_string(),
    }
}

async fn write_lines<W: AsyncWrite + Unpin>(w: &mut W, replies: &[String]) {
    let mut out = String::new();
    for r in replies {
        out.push_str(r);
        out.push_str("\r\n");
    }
    let _ = w.write_all(out.as_bytes()).await;
    let _ = w.flush().await;
}

/// Reads DATA up to the `.` line; false if the connection ended (or was dropped on purpose).
async fn read_data<R: AsyncBufReadExt + Unpin>(lines: &mut R, seen: &mut Seen, drop: bool) -> bool {
    loop {
        let mut buf = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), lines.read_until(b'\n', &mut buf)).await;
        let Ok(Ok(n)) = read else { return false };
        if n == 0 || drop {
            return false;
        }
        if buf == b".\r\n" {
            return true;
        }
        seen.data.extend_from_slice(&buf);
    }
}

/// A sink on a loopback socket: accepts until dropped.
pub struct TcpSink {
    pub log: Log,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpSink {
    pub fn start(listener: tokio::net::TcpListener, cfg: SinkConfig) -> TcpSink {
        let log: Log = Arc::default();
        let l = log.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                tokio::spawn(serve(stream, cfg.clone(), l.clone(), Some(peer)));
            }
        });
        TcpSink { log, task }
    }
}
