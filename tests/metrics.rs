//! The metrics listener (`MetricsAddress`) end to end: the real daemon with its metrics on an
//! ephemeral port of `::1`, real SMTP traffic (messages delivered to a file, one deferred at a
//! refused next hop, one bounced by a program alias, a recipient refused, a TLS handshake, a
//! failed AUTH), then `/metrics` read over HTTP and checked value by value. The text is held
//! to the exposition format by a strict parser written here, and by `promtool check metrics`
//! when there is one (`PROMTOOL=/path`, or `promtool` on the PATH: `.ci/run` extracts it from
//! Debian's `prometheus` package). `/healthz`, the refusal of a non-loopback address without
//! `MetricsAllowRemote`, and a SIGHUP that moves the listener are checked too.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::ServerName;
use support::pki::TestCa;
use support::{Daemon, Smtp, WAIT};

// ------------------------------------------------------------------------------------------
// HTTP

/// One GET over a fresh connection: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "{head}");
    if path == "/metrics" && status == 200 {
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
    }
    (status, body.to_string())
}

/// The metrics listener's address, from its `n`-th `metrics: listening on` log line (the
/// first at the start, the second after a SIGHUP moved it).
fn metrics_addr(d: &mut Daemon, n: usize) -> SocketAddr {
    let needle = "metrics: listening on ";
    let log = d.wait_log_count(needle, n);
    let line = log.lines().rev().find(|l| l.contains(needle)).unwrap();
    line.split(needle).nth(1).unwrap().trim().parse().unwrap()
}

// ------------------------------------------------------------------------------------------
// A strict reader of the text exposition format (version 0.0.4)

/// Every sample: (name, labels) → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    let ok_rest = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
    matches!(chars.next(), Some(c) if ok_first(c)) && chars.all(ok_rest)
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// `{a="x",b="y\"z"}` → the labels, and what follows.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in a label value".into()),
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Reads the whole text or says which line is wrong and why: names and label names as the
/// format allows, label values with only its three escapes, `# TYPE` once per family and
/// before its samples, each sample inside the family its `# TYPE` announced (histograms:
/// `_bucket` with `le`, `_sum`, `_count`), no series twice, counters never negative, and per
/// histogram series: buckets in increasing `le`, cumulative counts never decreasing, a
/// `+Inf` bucket equal to `_count`, and a `_sum`.
fn parse_exposition(text: &str) -> Result<Samples, String> {
    let mut samples = Samples::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: std::collections::BTreeSet<String> = Default::default();
    let mut current: Option<(String, String)> = None;
    let mut seen_families: Vec<String> = Vec::new();
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let err = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix("# ") {
            let mut w = c.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("HELP"), Some(name), Some(_)) => {
                    let fresh = helps.insert(name.to_string());
                    if !is_name(name, true) || !fresh {
                        return Err(err("bad or repeated HELP".into()));
                    }
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_name(name, true)
                        || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        || types.insert(name.into(), kind.into()).is_some()
                    {
                        return Err(err("bad or repeated TYPE".into()));
                    }
                    if seen_families.contains(&name.to_string()) {
                        return Err(err("TYPE after the family's samples".into()));
                    }
                    current = Some((name.to_string(), kind.to_string()));
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(err(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(err)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before the value".into()))?
            .split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(err)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        let Some((family, kind)) = &current else {
            return Err(err("a sample before any TYPE".into()));
        };
        let ok = match kind.as_str() {
            "histogram" => {
                (name == format!("{family}_bucket") && labels.contains_key("le"))
                    || name == format!("{family}_sum")
                    || name == format!("{family}_count")
            }
            "summary" => {
                name == family
                    || name == format!("{family}_sum")
                    || name == format!("{family}_count")
            }
            _ => name == family,
        };
        if !ok {
            return Err(err(format!("sample outside its family {family} ({kind})")));
        }
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(err("a negative counter".into()));
        }
        if !seen_families.contains(family) {
            seen_families.push(family.clone());
        }
        if samples.insert((name.to_string(), labels), value).is_some() {
            return Err(err("the same series twice".into()));
        }
    }
    for (family, kind) in &types {
        if kind == "histogram" {
            check_histogram(family, &samples)?;
        }
    }
    Ok(samples)
}

fn check_histogram(family: &str, samples: &Samples) -> Result<(), String> {
    // series → [(le, count)] in the order read (BTreeMap order is by label text: re-sort)
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    for ((name, labels), v) in samples {
        if *name == format!("{family}_bucket") {
            let mut l = labels.clone();
            let le = parse_value(&l.remove("le").unwrap())?;
            series.entry(l).or_default().push((le, *v));
        }
    }
    for (labels, mut buckets) in series {
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        for w in buckets.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(format!("{family}{labels:?}: le {} twice", w[0].0));
            }
            if w[1].1 < w[0].1 {
                return Err(format!(
                    "{family}{labels:?}: buckets decrease at le {}",
                    w[1].0
                ));
            }
        }
        let last = buckets.last().unwrap();
        if last.0 != f64::INFINITY {
            return Err(format!("{family}{labels:?}: no +Inf bucket"));
        }
        let count = samples
            .get(&(format!("{family}_count"), labels.clone()))
            .ok_or(format!("{family}{labels:?}: no _count"))?;
        if *count != last.1 {
            return Err(format!(
                "{family}{labels:?}: +Inf {} != _count {count}",
                last.1
            ));
        }
        if !samples.contains_key(&(format!("{family}_sum"), labels.clone())) {
            return Err(format!("{family}{labels:?}: no _sum"));
        }
    }
    Ok(())
}

/// The value of `name` with `labels` (label order free).
fn value(s: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let l = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s.get(&(name.to_string(), l)).copied()
}

/// `promtool check metrics` on the text, when promtool is there; whether it ran.
fn promtool_check(text: &str) -> bool {
    let tool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_string());
    let child = Command::new(&tool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("promtool not found ({tool}); the exposition parser alone checked the text");
        return false;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {out:?}\n{text}"
    );
    true
}

// ------------------------------------------------------------------------------------------
// The reader itself is strict: what it refuses

#[test]
fn the_exposition_parser_refuses_what_the_format_does_not_allow() {
    let good = "# HELP a_total x\n# TYPE a_total counter\na_total{d=\"q\\\"\"} 1\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
    let s = parse_exposition(good).unwrap();
    assert_eq!(value(&s, "a_total", &[("d", "q\"")]), Some(1.0));
    for bad in [
        "a_total 1\n",                        // no TYPE
        "# TYPE a counter\na 1\na 2\n",       // twice
        "# TYPE a counter\nb 1\n",            // outside its family
        "# TYPE a counter\na{x=\"\\t\"} 1\n", // bad escape
        "# TYPE a counter\na -1\n",           // negative counter
        "# TYPE a gauge\na one\n",            // not a number
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n", // +Inf != count
        "# TYPE 1a gauge\n1a 1\n",                                        // bad name
        "# TYPE a gauge\na 1",                                            // no final newline
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

// ------------------------------------------------------------------------------------------
// The daemon

/// A CA and the server's certificate signed by it; a password file with `alice`.
struct Pki {
    ca: TestCa,
}

impl Pki {
    fn new() -> Pki {
        let ca = TestCa::new("sendmail-rs metrics test CA");
        let (cert, key) = ca.leaf(&["mta.example.test", "localhost"]);
        std::fs::write(ca.path("cert.pem"), cert.pem()).unwrap();
        std::fs::write(ca.path("key.pem"), key.serialize_pem()).unwrap();
        let out = Command::new("openssl")
            .args(["passwd", "-6", "correct horse"])
            .output()
            .expect("openssl is installed");
        let hash = String::from_utf8(out.stdout).unwrap();
        std::fs::write(ca.path("passwd"), format!("alice:{}\n", hash.trim())).unwrap();
        Pki { ca }
    }
}

/// STARTTLS and a completed handshake (rustls), then QUIT over TLS.
fn starttls_session(addr: SocketAddr, pki: &Pki) {
    let mut c = Smtp::connect(addr);
    c.reply();
    c.cmd("EHLO client.example.test");
    assert_eq!(c.cmd("STARTTLS"), ["220 2.0.0 Ready to start TLS"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.issuer.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("mta.example.test").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, c.raw_clone());
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls.write_all(b"QUIT\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    assert!(
        String::from_utf8_lossy(&rest).starts_with("221 "),
        "{rest:?}"
    );
}

/// One message from `<box@mta.example.test>` to `rcpt`, in its own session; `extra`: an
/// extra RCPT that must be refused.
fn send(addr: SocketAddr, rcpt: &str, extra: Option<&str>) {
    let mut c = Smtp::connect(addr);
    assert!(c.reply()[0].starts_with("220 "));
    c.cmd("EHLO client.example.test");
    assert!(c.cmd("MAIL FROM:<box@mta.example.test>")[0].starts_with("250"));
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert!(r[0].starts_with("250"), "{rcpt}: {r:?}");
    if let Some(x) = extra {
        let r = c.cmd(&format!("RCPT TO:<{x}>"));
        assert!(r[0].starts_with("550"), "{x}: {r:?}");
    }
    assert!(c.cmd("DATA")[0].starts_with("354"));
    c.send("Subject: counted\r\n\r\nbody\r\n.");
    let r = c.reply();
    assert!(r[0].starts_with("250 2.0.0 "), "{r:?}");
    c.cmd("QUIT");
}

#[test]
fn ten_messages_are_counted_and_the_text_is_valid_exposition() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    // alias targets: a file (delivered, as DefaultUser: a sticky directory), and a program
    // that exits 67 (EX_NOUSER: a permanent failure, so a bounce to box)
    std::fs::set_permissions(
        dir.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o1777),
    )
    .unwrap();
    let mbox = dir.path().join("box.mbox");
    let aliases = dir.path().join("aliases");
    std::fs::write(
        &aliases,
        format!(
            "box: {}\nnouser: \"|/bin/sh -c 'exit 67'\"\npostmaster: box\n",
            mbox.display()
        ),
    )
    .unwrap();
    // nothing listens on the smart host's port: its recipients are deferred
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cf = format!(
        "Djmta.example.test\n\
         O AliasFile={}\n\
         DSrelay:[127.0.0.1]\n\
         O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1\n\
         Mrelay, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=2040, T=DNS/RFC822/SMTP, A=TCP $h {refused}\n",
        aliases.display()
    );
    let opts = [
        format!("ServerCertFile={}", pki.ca.p("cert.pem")),
        format!("ServerKeyFile={}", pki.ca.p("key.pem")),
        format!("AuthPasswordFile={}", pki.ca.p("passwd")),
    ];
    let mut args = vec!["-O", "MetricsAddress=[::1]:0"];
    for o in &opts {
        args.extend(["-O", o.as_str()]);
    }
    let mut d = Daemon::start(&cf, &args);
    let smtp = d.addr_of("MTA-v6");
    let metrics = metrics_addr(&mut d, 1);
    assert!(metrics.ip().is_loopback() && metrics.is_ipv6(), "{metrics}");

    // 8 delivered (one session also has a recipient refused), 1 deferred, 1 bounced
    for i in 0..8 {
        let extra = (i == 0).then_some("nosuch@mta.example.test");
        send(smtp, "box@mta.example.test", extra);
    }
    send(smtp, "bob@remote.example.test", None);
    send(smtp, "nouser@mta.example.test", None);
    // a TLS handshake, and a failed AUTH
    starttls_session(smtp, &pki);
    let mut c = Smtp::connect(smtp);
    c.reply();
    c.cmd("EHLO client.example.test");
    let bad = STANDARD.encode("\0alice\0wrong");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {bad}")),
        ["535 5.7.0 authentication failed"]
    );
    c.cmd("QUIT");

    // the 8 messages and the bounce to box are delivered, the deferred one stays queued
    // (read until then, bounded: the log line comes before the queue is written back)
    d.wait_log_count("stat=Sent", 9);
    d.wait_log("stat=Deferred");
    d.wait_log("stat=User unknown");
    let daemon = [("daemon", "MTA-v6")];
    let until = Instant::now() + WAIT;
    let (text, s) = loop {
        let (status, text) = get(metrics, "/metrics");
        assert_eq!(status, 200, "{text}");
        let s = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let settled = value(&s, "sendmail_queue_messages", &[]) == Some(1.0)
            && value(&s, "sendmail_smtpd_sessions_open", &daemon) == Some(0.0)
            && value(
                &s,
                "sendmail_messages_delivered_total",
                &[("mailer", "*file*")],
            ) == Some(9.0);
        if settled || Instant::now() > until {
            break (text, s);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let expect = |name: &str, labels: &[(&str, &str)], want: f64| {
        assert_eq!(
            value(&s, name, labels),
            Some(want),
            "{name}{labels:?}\n{text}\n{}",
            d.log_text()
        );
    };
    expect("sendmail_messages_received_total", &daemon, 10.0);
    expect("sendmail_smtpd_connects_total", &daemon, 12.0);
    expect("sendmail_smtpd_sessions_open", &daemon, 0.0);
    expect("sendmail_smtpd_recipients_rejected_total", &daemon, 1.0);
    expect("sendmail_smtpd_tls_connections_total", &daemon, 1.0);
    expect("sendmail_smtpd_tls_handshake_failures_total", &daemon, 0.0);
    expect(
        "sendmail_smtpd_sasl_authentication_failures_total",
        &daemon,
        1.0,
    );
    expect("sendmail_smtpd_listeners", &[], 1.0);
    expect("sendmail_smtp_tls_connections_total", &[], 0.0);
    // 8 to box, and the bounce of the ninth message to box (its sender)
    expect(
        "sendmail_messages_delivered_total",
        &[("mailer", "*file*")],
        9.0,
    );
    expect(
        "sendmail_messages_deferred_total",
        &[("mailer", "relay")],
        1.0,
    );
    expect(
        "sendmail_messages_bounced_total",
        &[("mailer", "prog")],
        1.0,
    );
    expect(
        "sendmail_delivery_delay_seconds_count",
        &[("mailer", "*file*")],
        9.0,
    );
    expect("sendmail_queue_messages", &[], 1.0);
    let age = value(&s, "sendmail_queue_oldest_message_age_seconds", &[]).unwrap();
    assert!((0.0..WAIT.as_secs_f64() * 4.0).contains(&age), "{age}");
    // every commit, crossing-off and removal went through the journal: 10 messages and a
    // bounce received, so at least 11 frames, in at most as many fdatasyncs
    let syncs = value(&s, "sendmail_journal_fdatasyncs_total", &[]).unwrap();
    let frames = value(&s, "sendmail_journal_frames_total", &[]).unwrap();
    assert!(syncs >= 1.0 && frames >= 11.0 && syncs <= frames, "{text}");
    expect("sendmail_journal_batch_size_count", &[], syncs);
    expect(
        "sendmail_journal_batch_size_bucket",
        &[("le", "+Inf")],
        syncs,
    );
    let ran = promtool_check(&text);
    eprintln!(
        "promtool check metrics: {}",
        if ran { "passed" } else { "not run" }
    );

    // the queue and the listener are up: healthy
    let (status, body) = get(metrics, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ok: 1 SMTP listener(s), queue "), "{body}");
    assert_eq!(get(metrics, "/nothing").0, 404);
}

#[test]
fn healthz_answers_and_sighup_moves_the_listener_when_the_option_changes() {
    let cf = |addr: &str| {
        format!(
            "Djmta.example.test\n\
             O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1\n\
             O MetricsAddress={addr}\n"
        )
    };
    let mut d = Daemon::start(&cf("[::1]:0"), &[]);
    let first = metrics_addr(&mut d, 1);
    let (status, body) = get(first, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ok: 1 SMTP listener(s), queue "), "{body}");
    // without its queue directory, the daemon is not healthy
    let away = d.dir.path().join("mqueue.away");
    std::fs::rename(d.queue_dir(), &away).unwrap();
    let (status, body) = get(first, "/healthz");
    std::fs::rename(&away, d.queue_dir()).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("unhealthy: queue ") && body.ends_with(" cannot be read\n"),
        "{body}"
    );
    assert_eq!(get(first, "/healthz").0, 200);
    // a POST is refused; an oversized request head is answered 431
    let mut s = TcpStream::connect(first).unwrap();
    write!(s, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    assert!(
        r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET\r\n"),
        "{r}"
    );
    let mut s = TcpStream::connect(first).unwrap();
    let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(10_000));
    let _ = s.write_all(long.as_bytes());
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");

    std::fs::write(&d.cf, cf("127.0.0.1:0")).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let moved = metrics_addr(&mut d, 2);
    assert!(moved.is_ipv4(), "{moved}");
    assert_eq!(get(moved, "/healthz").0, 200);
    assert!(
        TcpStream::connect(first).is_err(),
        "the old listener is closed"
    );
    assert!(d.stop().success());
}

/// Runs `sendmail -bD` with `args` to its exit; (status, stderr).
fn start_fails(cf: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(support::sendmail_bin())
        .arg("-bD")
        .arg("-C")
        .arg(cf)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_non_loopback_metrics_address_needs_metrics_allow_remote() {
    let dir = tempfile::tempdir().unwrap();
    let cf = dir.path().join("sendmail.cf");
    std::fs::write(
        &cf,
        "Djmta.example.test\nO DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1\n",
    )
    .unwrap();
    let common = |extra: &'static [&'static str]| {
        let mut v: Vec<String> = vec![
            "-O".into(),
            format!("QueueDirectory={}", dir.path().join("mq").display()),
            "-O".into(),
            format!("PidFile={}", dir.path().join("pid").display()),
            "-O".into(),
            format!("LogFile={}", dir.path().join("log").display()),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // 78 (EX_CONFIG), the option named, nothing started
    let args = common(&["-O", "MetricsAddress=192.0.2.1:9125"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = start_fails(&cf, &args);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("option MetricsAddress: 192.0.2.1:9125 is not a loopback address")
            && err.contains("O MetricsAllowRemote=True"),
        "{err}"
    );
    assert!(!dir.path().join("pid").exists());
    // the same in the cf, with its line
    std::fs::write(
        &cf,
        "Djmta.example.test\nO DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1\nO MetricsAddress=[2001:db8::1]:9125\n",
    )
    .unwrap();
    let args = common(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = start_fails(&cf, &args);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("sendmail.cf:3: option MetricsAddress: [2001:db8::1]:9125 is not a loopback"),
        "{err}"
    );
    // allowed: the check passes, and the address (not on this host) cannot be bound: 71
    let args = common(&["-O", "MetricsAllowRemote=True"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = start_fails(&cf, &args);
    assert_eq!(code, Some(71), "{err}");
    assert!(
        err.contains("MetricsAddress=[2001:db8::1]:9125: cannot listen: "),
        "{err}"
    );
    // a malformed value is an error naming the option too
    let args = common(&["-O", "MetricsAddress=localhost"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = start_fails(&cf, &args);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("option MetricsAddress: bad address \"localhost\""),
        "{err}"
    );
}
