//! Test support: a small SMTP server that records what a client sends and answers as
//! configured (per-recipient refusals, no EHLO, a refusing greeting, a drop during DATA),
//! with STARTTLS (a certificate from a test CA made with rcgen, or a broken handshake) and
//! AUTH PLAIN/LOGIN. Used over `tokio::io::duplex` and over real loopback sockets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// A test CA and a server certificate it signed, made at test time.
pub struct TestPki {
    /// The CA certificate, PEM (what `CACertFile` names).
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

impl TestPki {
    /// A CA and a certificate for `names` signed by it.
    pub fn new(names: &[&str]) -> TestPki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sendmail-rs test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .unwrap();
        TestPki {
            ca_pem: ca.pem(),
            server: Arc::new(server),
        }
    }
}

/// The sink's TLS behaviour.
#[derive(Clone)]
pub enum SinkTls {
    /// STARTTLS not offered.
    Off,
    /// STARTTLS offered and done with this configuration.
    On(Arc<rustls::ServerConfig>),
    /// STARTTLS offered, `220` given, then bytes that are no TLS, and the connection closed.
    Broken,
}

impl std::fmt::Debug for SinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SinkTls::Off => "Off",
            SinkTls::On(_) => "On",
            SinkTls::Broken => "Broken",
        })
    }
}

/// Anything the sink can talk over (plain or TLS).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

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
    pub tls: SinkTls,
    /// The answer to STARTTLS (lines joined with CRLF); the handshake follows only when it
    /// starts with `220`.
    pub starttls_reply: String,
    /// Answer every AUTH with `454 4.7.0 Temporary authentication failure`.
    pub auth_tempfail: bool,
    /// Offer `AUTH PLAIN LOGIN` (also in clear) and accept this user and password.
    pub auth: Option<(String, String)>,
    /// Close the connection, without a word, after this many messages on it (a hop that
    /// ends idle connections while the client still caches them).
    pub close_after: Option<usize>,
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
            tls: SinkTls::Off,
            starttls_reply: "220 2.0.0 Ready to start TLS".to_string(),
            auth_tempfail: false,
            auth: None,
            close_after: None,
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
    /// The commands given after the TLS handshake (from the EHLO after it on).
    pub after_tls: Option<usize>,
    /// `PLAIN user` / `LOGIN user` once the client authenticated, with the authorization id
    /// PLAIN sent (`PLAIN user as boss`).
    pub authenticated: Option<String>,
    /// Every AUTH attempt: mechanism, and whether it was made over TLS.
    pub auth_attempts: Vec<(String, bool)>,
    /// Messages taken (final `250` after DATA).
    pub messages: usize,
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
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    cfg: SinkConfig,
    log: Log,
    peer: Option<std::net::SocketAddr>,
) {
    let mut conn: BufReader<Box<dyn Io>> = BufReader::new(Box::new(io));
    let mut seen = Seen {
        peer,
        ..Seen::default()
    };
    write_lines(&mut conn, std::slice::from_ref(&cfg.greeting)).await;
    let mut pending: Vec<String> = Vec::new();
    let mut tls = false;
    loop {
        let Some(line) = read_line(&mut conn).await else {
            break;
        };
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
            replies.push(answer(&held, &cfg, tls));
        }
        if verb == "DATA" {
            replies.push("354 Enter mail, end with \".\" on a line by itself".to_string());
            write_lines(&mut conn, &replies).await;
            if !read_data(&mut conn, &mut seen, cfg.drop_in_data).await {
                break;
            }
            write_lines(&mut conn, &[format!("250 2.0.0 Ok: queued as {}", cfg.tag)]).await;
            seen.messages += 1;
            if cfg.close_after.is_some_and(|n| seen.messages >= n) {
                break;
            }
            continue;
        }
        if verb == "STARTTLS" && !cfg.starttls_reply.starts_with("220") {
            write_lines(&mut conn, std::slice::from_ref(&cfg.starttls_reply)).await;
            continue;
        }
        if verb == "STARTTLS" && !tls && !matches!(cfg.tls, SinkTls::Off) {
            match start_tls(conn, &cfg).await {
                Some(upgraded) => conn = upgraded,
                None => break,
            }
            tls = true;
            seen.after_tls = Some(seen.commands.len());
            continue;
        }
        if verb == "AUTH" && cfg.auth.is_some() {
            let reply = auth(&mut conn, &line, &cfg, tls, &mut seen).await;
            write_lines(&mut conn, &[reply]).await;
            continue;
        }
        replies.push(answer(&line, &cfg, tls));
        write_lines(&mut conn, &replies).await;
        if verb == "QUIT" {
            break;
        }
    }
    log.lock().unwrap().push(seen);
}

async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Option<String> {
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line)).await;
    match read {
        Ok(Ok(n)) if n > 0 => Some(line.trim_end_matches(['\r', '\n']).to_string()),
        _ => None,
    }
}

/// `220`, then the handshake; what the client sent before it is dropped. `None`: the
/// connection is over (a broken handshake on purpose, or a failed one).
async fn start_tls(
    mut conn: BufReader<Box<dyn Io>>,
    cfg: &SinkConfig,
) -> Option<BufReader<Box<dyn Io>>> {
    write_lines(&mut conn, std::slice::from_ref(&cfg.starttls_reply)).await;
    let mut io = conn.into_inner();
    match &cfg.tls {
        SinkTls::On(server) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(server.clone());
            let accept = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(io));
            let stream = accept.await.ok()?.ok()?;
            Some(BufReader::new(Box::new(stream)))
        }
        _ => {
            let _ = io.write_all(b"this is not TLS\r\n").await;
            let _ = io.shutdown().await;
            None
        }
    }
}

/// One AUTH exchange (PLAIN with an initial response, or LOGIN); the final reply.
async fn auth(
    conn: &mut BufReader<Box<dyn Io>>,
    line: &str,
    cfg: &SinkConfig,
    tls: bool,
    seen: &mut Seen,
) -> String {
    let Some((user, pass)) = &cfg.auth else {
        return "502 5.5.1 no AUTH".to_string();
    };
    let mut words = line.split_whitespace().skip(1);
    let mech = words.next().unwrap_or("").to_ascii_uppercase();
    seen.auth_attempts.push((mech.clone(), tls));
    if cfg.auth_tempfail {
        return "454 4.7.0 Temporary authentication failure".to_string();
    }
    let decode = |t: &str| {
        String::from_utf8(BASE64.decode(t.trim()).unwrap_or_default()).unwrap_or_default()
    };
    let (authz, got_user, got_pass) = match mech.as_str() {
        "PLAIN" => {
            let text = decode(words.next().unwrap_or(""));
            let parts: Vec<&str> = text.split('\0').collect();
            match parts.as_slice() {
                [z, u, p] => (z.to_string(), u.to_string(), p.to_string()),
                _ => return "501 5.5.2 bad PLAIN response".to_string(),
            }
        }
        "LOGIN" => {
            let mut answers = Vec::new();
            for prompt in ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"] {
                write_lines(conn, &[format!("334 {prompt}")]).await;
                let Some(answer) = read_line(conn).await else {
                    return "421 4.4.1 gone".to_string();
                };
                seen.commands.push(answer.clone());
                answers.push(decode(&answer));
            }
            (String::new(), answers[0].clone(), answers[1].clone())
        }
        _ => return "504 5.5.4 mechanism not supported".to_string(),
    };
    if &got_user != user || &got_pass != pass {
        return "535 5.7.0 authentication failed".to_string();
    }
    let mut who = format!("{mech} {got_user}");
    if !authz.is_empty() {
        who.push_str(&format!(" as {authz}"));
    }
    seen.authenticated = Some(who);
    "235 2.0.0 OK Authenticated".to_string()
}

/// The EHLO keywords: the configured ones, STARTTLS before TLS when it is on, AUTH when
/// set.
fn offered(kws: &[String], cfg: &SinkConfig, tls: bool) -> Vec<String> {
    let mut out = kws.to_vec();
    if !tls && !matches!(cfg.tls, SinkTls::Off) {
        out.push("STARTTLS".to_string());
    }
    if cfg.auth.is_some() {
        out.push("AUTH PLAIN LOGIN".to_string());
    }
    out
}

fn answer(line: &str, cfg: &SinkConfig, tls: bool) -> String {
    let verb = line
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    match verb.as_str() {
        "EHLO" => match &cfg.ehlo {
            Some(kws) => {
                let kws = &offered(kws, cfg, tls);
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
    /// Connections accepted so far.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
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
        let accepted: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let a = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(serve(stream, cfg.clone(), l.clone(), Some(peer)));
            }
        });
        TcpSink {
            log,
            accepted,
            task,
        }
    }
}
