//! The metrics listener (our option `MetricsAddress`): `/metrics` in the Prometheus text
//! format, and `/healthz`.
//!
//! In: a bound TCP socket (the daemon opens it with the SMTP sockets, before the fork, and
//! again on SIGHUP when the option changed) and the daemon's [`Shared`] state. Out: for each
//! connection, one HTTP/1.1 response, then the connection is closed:
//!
//! * `GET /metrics` → `200`, [`crate::metrics::Metrics::render`] with the queue's gauges
//!   read now (messages queued from the store's index; the oldest arrival from each
//!   message's envelope, read once per message and remembered while it stays queued; the
//!   journal's fdatasyncs and batch sizes from the committer);
//! * `GET /healthz` → `200 ok` with a one-line summary when at least one SMTP listener is
//!   accepting and the queue directory is there, else `503` and what is wrong;
//! * another path `404`, another method (HEAD too) `405`; a request that is not HTTP, larger than
//!   [`MAX_REQUEST`] or slower than [`REQUEST_TIME`] gets `400`/`408` or is dropped.
//!
//! The request is parsed with `httparse` (hyper's parser: one small crate without
//! dependencies); the rest — one GET, one response, `Connection: close` — is a few lines, so
//! no HTTP server stack is pulled in. At most [`MAX_CLIENTS`] requests are served at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::log::Severity;
use crate::metrics::QueueGauges;
use crate::queue::QueueId;
use crate::runtime::Shared;

/// The largest request head read (request line and headers).
pub const MAX_REQUEST: usize = 8192;
/// The time a client has to send its request and read the answer.
pub const REQUEST_TIME: Duration = Duration::from_secs(10);
/// Requests served at the same time; more wait in the listen backlog.
pub const MAX_CLIENTS: usize = 8;

/// The arrival time of each queued message, read once per message.
type Arrivals = Arc<Mutex<HashMap<QueueId, SystemTime>>>;

/// Serves until `stop` fires (or is dropped).
pub async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            shared.logger.log(
                Severity::Err,
                None,
                format_args!("metrics: cannot listen: {e}"),
            );
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        shared.logger.log(
            Severity::Info,
            None,
            format_args!("metrics: listening on {addr}"),
        );
    }
    let arrivals: Arrivals = Arc::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        let permit = tokio::select! {
            _ = &mut stop => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (shared, arrivals) = (shared.clone(), arrivals.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REQUEST_TIME, answer(stream, &shared, &arrivals)).await;
        });
    }
}

/// Reads one request and writes its response.
async fn answer(
    mut stream: tokio::net::TcpStream,
    shared: &Arc<Shared>,
    arrivals: &Arrivals,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let request = loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse(&buf) {
            Parsed::Partial if buf.len() < MAX_REQUEST => continue,
            Parsed::Partial => break Err((431, "request too large")),
            Parsed::Bad => break Err((400, "bad request")),
            Parsed::Request(method, path) => break Ok((method, path)),
        }
    };
    let (status, body, content_type) = match request {
        Err((status, why)) => (status, format!("{why}\n"), "text/plain; charset=utf-8"),
        Ok((method, _)) if method != "GET" => {
            (405, "only GET\n".to_string(), "text/plain; charset=utf-8")
        }
        Ok((_, path)) => route(&path, shared, arrivals).await,
    };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        reason(status),
        body.len(),
        if status == 405 { "Allow: GET\r\n" } else { "" },
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await?;
    // A lingering close: what the client still sends (the rest of an oversized request) is
    // read and dropped until it closes, so that closing with unread input (a reset) cannot
    // destroy the answer before the client reads it.
    let mut rest = [0u8; 1024];
    let mut drained = 0;
    while drained < MAX_LINGER {
        match tokio::time::timeout(LINGER_TIME, stream.read(&mut rest)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
    Ok(())
}

/// At most this much input is read and dropped after the answer, for at most this long
/// between reads.
const MAX_LINGER: usize = 64 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(2);

enum Parsed {
    Partial,
    Bad,
    Request(String, String),
}

/// The method and path (query cut off) of a complete request head.
fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => match (req.method, req.path) {
            (Some(m), Some(p)) => {
                let path = p.split('?').next().unwrap_or(p);
                Parsed::Request(m.to_string(), path.to_string())
            }
            _ => Parsed::Bad,
        },
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::Bad,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The Prometheus text format's content type.
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn route(
    path: &str,
    shared: &Arc<Shared>,
    arrivals: &Arrivals,
) -> (u16, String, &'static str) {
    let plain = "text/plain; charset=utf-8";
    match path {
        "/metrics" => {
            let (shared, arrivals) = (shared.clone(), arrivals.clone());
            let gauges =
                tokio::task::spawn_blocking(move || queue_gauges(&shared, &arrivals)).await;
            match gauges {
                Ok(g) => (200, crate::metrics::global().render(&g), EXPOSITION),
                Err(e) => (503, format!("queue not read: {e}\n"), plain),
            }
        }
        "/healthz" => match health(shared) {
            Ok(text) => (200, text, plain),
            Err(text) => (503, text, plain),
        },
        _ => (
            404,
            "not found (try /metrics or /healthz)\n".to_string(),
            plain,
        ),
    }
}

/// `ok` and a summary when some SMTP listener accepts and the queue is there.
fn health(shared: &Shared) -> Result<String, String> {
    let listening = crate::metrics::global().listeners();
    let queue = shared.queue.dir();
    let queue_ok = queue.is_dir() && shared.queue.ids().is_ok();
    match (listening, queue_ok) {
        (0, _) => Err("unhealthy: no SMTP listener is accepting\n".to_string()),
        (_, false) => Err(format!(
            "unhealthy: queue {} cannot be read\n",
            queue.display()
        )),
        (n, true) => Ok(format!(
            "ok: {n} SMTP listener(s), queue {}\n",
            queue.display()
        )),
    }
}

/// The queue's gauges now (blocking: reads the envelopes of messages not seen before).
fn queue_gauges(shared: &Shared, arrivals: &Arrivals) -> QueueGauges {
    let ids = shared.queue.ids().unwrap_or_default();
    let mut known = arrivals.lock().unwrap_or_else(|e| e.into_inner());
    let queued: std::collections::HashSet<&QueueId> = ids.iter().collect();
    known.retain(|id, _| queued.contains(id));
    for id in &ids {
        if known.contains_key(id) {
            continue;
        }
        if let Ok(m) = shared.queue.load(id) {
            known.insert(id.clone(), m.envelope.arrival);
        }
    }
    let now = SystemTime::now();
    let oldest_age = known.values().min().map_or(0.0, |t| {
        now.duration_since(*t).unwrap_or_default().as_secs_f64()
    });
    let committer = shared.queue.committer_stats();
    QueueGauges {
        messages: ids.len() as u64,
        oldest_age,
        fdatasyncs: committer.batches,
        frames: committer.ops,
        batch_sizes: shared.queue.batch_sizes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_is_read_whole_before_it_is_answered() {
        assert!(matches!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        ));
        match parse(b"GET /metrics?name[]=x HTTP/1.1\r\nHost: x\r\n\r\n") {
            Parsed::Request(m, p) => assert_eq!((m.as_str(), p.as_str()), ("GET", "/metrics")),
            _ => panic!("not parsed"),
        }
        assert!(matches!(
            parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Parsed::Bad
        ));
    }
}
