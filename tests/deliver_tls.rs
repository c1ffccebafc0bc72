//! STARTTLS and AUTH toward the next hop, end to end: the real binary relays through a smart
//! host that is an independent SMTP server with OpenSSL (Python's `ssl`,
//! `tests/fixtures/smtp_tls_sink.py`), over `[::1]` and `127.0.0.1`, with a certificate from
//! a test CA made at test time (rcgen). The mail log shows sendmail's `STARTTLS=client` and
//! `AUTH=client` lines and the `stat=Sent (…)` of the remote reply.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::pki::TestCa;
use support::{Daemon, Smtp};

/// Test CA (`ca.pem`) and a server certificate signed by it (`server.pem`, `server.key`).
fn write_pki() -> TestCa {
    let ca = TestCa::new("e2e test CA");
    ca.write_leaf(&["pysink.example.test"], "server.pem", "server.key");
    ca
}

/// The Python sink on `addr`; its port.
struct Sink {
    child: Child,
    port: u16,
    transcript: std::path::PathBuf,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sink(dir: &Path, addr: &str) -> Sink {
    let transcript = dir.join("transcript");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/smtp_tls_sink.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .arg(addr)
        .arg(dir.join("server.pem"))
        .arg(dir.join("server.key"))
        .arg(&transcript)
        .args(["relayuser", "s3cret"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the sink prints its port");
    Sink {
        child,
        port,
        transcript,
    }
}

/// `GET /metrics` from the daemon's metrics listener (its `metrics: listening on` line).
fn scrape(d: &mut Daemon) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.metrics_addr()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    text
}

/// Relays one message through the smart host `literal` (`DS` macro) to the sink on
/// `listen`; `relay` is the host as the log names it.
fn relay_once(literal: &str, listen: &str, relay: &str) {
    let dir = write_pki();
    let sink = start_sink(dir.dir.path(), listen);
    let authinfo = dir.path("authinfo");
    let addr_key = listen.replace("::1", "IPv6:0:0:0:0:0:0:0:1");
    std::fs::write(
        &authinfo,
        format!("AuthInfo:{addr_key} \"U:relayuser\" \"P:s3cret\" \"M:PLAIN\"\n"),
    )
    .unwrap();
    support::makemap(&authinfo);
    let cf = format!(
        "Djmta.example.test\n\
         DSrelay:{literal}\n\
         O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1\n\
         O CACertFile={}\n\
         Kauthinfo hash {}\n\
         Mrelay, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=2040, T=DNS/RFC822/SMTP, A=TCP $h {}\n",
        dir.p("ca.pem"),
        authinfo.display(),
        sink.port
    );
    let mut a = Daemon::start(&cf, &["-O", "MetricsAddress=127.0.0.1:0"]);
    let mut c = Smtp::connect(a.addr_of("MTA-v4"));
    c.reply();
    c.cmd("EHLO client.example.test");
    assert!(c.cmd("MAIL FROM:<sender@client.example.test>")[0].starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@remote.example.test>")[0].starts_with("250"));
    assert!(c.cmd("DATA")[0].starts_with("354"));
    c.send("Subject: over TLS\r\n\r\nencrypted hop\r\n.");
    assert!(c.reply()[0].starts_with("250 2.0.0 "));
    c.cmd("QUIT");

    let log = a.wait_log("stat=Sent");
    let tls = log
        .lines()
        .find(|l| l.contains("STARTTLS=client, relay="))
        .unwrap_or_else(|| panic!("no STARTTLS line:\n{log}"));
    assert!(
        tls.contains(&format!(
            ": STARTTLS=client, relay={relay}, version=TLSv1.3, verify=OK, cipher=TLS_"
        )),
        "{tls}"
    );
    assert!(
        tls.contains(", bits=256/256") || tls.contains(", bits=128/128"),
        "{tls}"
    );
    assert!(
        log.contains(&format!(": AUTH=client, relay={relay}, mech=PLAIN, bits=0")),
        "{log}"
    );
    let to = log
        .lines()
        .find(|l| l.contains("to=<bob@remote.example.test>"))
        .unwrap();
    assert!(
        to.contains("stat=Sent (2.0.0 Ok: queued as PYSINK)"),
        "{to}"
    );

    // The metrics listener counted the handshake.
    let metrics = scrape(&mut a);
    assert!(
        metrics.contains("\nsendmail_smtp_tls_connections_total 1\n")
            && metrics.contains("\nsendmail_smtp_tls_handshake_failures_total 0\n"),
        "{metrics}"
    );

    // The sink's side: TLS 1.3 with the same cipher, AUTH over it, EHLO again after it.
    let t = std::fs::read_to_string(&sink.transcript).unwrap();
    let lines: Vec<&str> = t.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("TLS: TLSv1.3 "))
        .expect(&t);
    let cipher = lines[at].split(' ').nth(2).unwrap();
    assert!(tls.contains(&format!("cipher={cipher},")), "{tls} vs {t}");
    assert!(lines[at + 1].starts_with("C: EHLO "), "{t}");
    assert!(lines.contains(&"AUTH: PLAIN relayuser"), "{t}");
    assert!(
        !lines[..at].iter().any(|l| l.starts_with("C: AUTH")),
        "no AUTH before TLS: {t}"
    );
}

#[test]
fn relaying_over_ipv4_uses_starttls_and_auth_to_the_smart_host() {
    relay_once("[127.0.0.1]", "127.0.0.1", "[127.0.0.1]");
}

#[test]
fn relaying_over_ipv6_uses_starttls_and_auth_to_the_smart_host() {
    relay_once("[IPv6:::1]", "::1", "[IPv6:0:0:0:0:0:0:0:1]");
}
