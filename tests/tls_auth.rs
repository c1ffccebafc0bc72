//! STARTTLS, SMTPS and AUTH end to end: the real daemon with certificates made at test time
//! (rcgen: a CA, a server certificate it signs, client certificates), a password file made
//! with `openssl passwd -6`, and real peers — `openssl s_client -starttls smtp`, `swaks
//! --tls`, and a rustls client for what those tools cannot do on purpose (an injection, a
//! client certificate). Over `::1` and `127.0.0.1`; 127.0.0.2 is a client that may not relay.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::pki::TestCa;
use support::{Daemon, WAIT};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

/// A CA, the server's certificate and key signed by it, and a password file, on disk.
struct Pki {
    ca: TestCa,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            ca: TestCa::new("sendmail-rs test CA"),
        };
        pki.write_server_cert();
        let hash = openssl_passwd(PASSWORD);
        std::fs::write(
            pki.path("passwd"),
            format!("# sendmail-rs AUTH users\n{USER}:{hash}\n"),
        )
        .unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.ca.path(name)
    }

    fn p(&self, name: &str) -> String {
        self.ca.p(name)
    }

    /// A certificate for `names` signed by the CA, and its key.
    fn leaf(&self, names: &[&str]) -> (CertificateDer<'static>, KeyPair) {
        let (cert, key) = self.ca.leaf(names);
        (cert.der().clone(), key)
    }

    /// (Re)writes the server's certificate and key; returns the certificate.
    fn write_server_cert(&self) -> CertificateDer<'static> {
        let (cert, key) = self.leaf(&["mta.example.test", "localhost"]);
        let pem = pem_of("CERTIFICATE", &cert);
        std::fs::write(self.path("cert.pem"), pem).unwrap();
        std::fs::write(self.path("key.pem"), key.serialize_pem()).unwrap();
        cert
    }

    /// The options that turn on TLS and AUTH.
    fn options(&self) -> Vec<String> {
        vec![
            format!("ServerCertFile={}", self.p("cert.pem")),
            format!("ServerKeyFile={}", self.p("key.pem")),
            format!("CACertFile={}", self.p("ca.pem")),
            format!("AuthPasswordFile={}", self.p("passwd")),
        ]
    }
}

fn pem_of(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// `openssl passwd -6 PASSWORD`: the documented way to make a password file entry.
fn openssl_passwd(password: &str) -> String {
    let out = Command::new("openssl")
        .args(["passwd", "-6", password])
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

const CF: &str = "\
Djmta.example.test
Cwmta.example.test
O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1
O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1
O DaemonPortOptions=Name=SMTPS-v4, Family=inet, Port=0, Addr=127.0.0.1, M=s
O DaemonPortOptions=Name=MSA-v4, Family=inet, Port=0, Addr=127.0.0.1, M=Ea
O DaemonPortOptions=Name=NOTLS-v4, Family=inet, Port=0, Addr=127.0.0.1, M=SA
";

fn start(pki: &Pki, extra: &[&str]) -> Daemon {
    let opts = pki.options();
    let mut args: Vec<&str> = vec!["-O", "DeliveryMode=queueonly"];
    for o in &opts {
        args.push("-O");
        args.push(o);
    }
    args.extend_from_slice(extra);
    Daemon::start(CF, &args)
}

/// A line-oriented SMTP client over any byte stream (plain TCP, then TLS).
struct Client<S: Read + Write> {
    s: BufReader<S>,
}

impl<S: Read + Write> Client<S> {
    fn new(s: S) -> Client<S> {
        Client {
            s: BufReader::new(s),
        }
    }

    fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.s.read_line(&mut line).unwrap();
            assert!(n > 0, "connection closed; reply so far: {lines:?}");
            let line = line.trim_end_matches("\r\n").to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    fn send_raw(&mut self, bytes: &str) {
        self.s.get_mut().write_all(bytes.as_bytes()).unwrap();
        self.s.get_mut().flush().unwrap();
    }

    fn cmd(&mut self, line: &str) -> Vec<String> {
        self.send_raw(&format!("{line}\r\n"));
        self.reply()
    }

    /// True when the server closed the connection (EOF or reset).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.s.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    fn into_inner(self) -> S {
        assert!(self.s.buffer().is_empty(), "unread server bytes");
        self.s.into_inner()
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(addr: SocketAddr, source: Option<&str>) -> TcpStream {
    let s = match source {
        None => TcpStream::connect(addr).unwrap(),
        Some(src) => support::tcp_from(addr, src),
    };
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// The client side of a handshake that trusts only the test CA, optionally with a client
/// certificate; returns the stream and the server's certificate.
fn handshake(
    tcp: TcpStream,
    pki: &Pki,
    client_cert: Option<(CertificateDer<'static>, KeyPair)>,
) -> (Tls, CertificateDer<'static>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.issuer.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![cert],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap(),
    };
    let name = ServerName::try_from("mta.example.test").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    let cert = tls.conn.peer_certificates().unwrap()[0].clone();
    (tls, cert)
}

/// Greeting, EHLO, STARTTLS, handshake: the session ready for a second EHLO.
fn starttls(addr: SocketAddr, pki: &Pki, source: Option<&str>) -> (Client<Tls>, Vec<String>) {
    let mut c = Client::new(connect(addr, source));
    assert!(c.reply()[0].starts_with("220 "));
    let ehlo = c.cmd("EHLO client.example.test");
    assert_eq!(c.cmd("STARTTLS"), ["220 2.0.0 Ready to start TLS"]);
    let (tls, _) = handshake(c.into_inner(), pki, None);
    (Client::new(tls), ehlo)
}

fn auth_plain(user: &str, password: &str) -> String {
    format!(
        "AUTH PLAIN {}",
        STANDARD.encode(format!("\0{user}\0{password}"))
    )
}

#[test]
fn openssl_s_client_completes_starttls_over_v6_and_v4() {
    let pki = Pki::new();
    let mut d = start(&pki, &[]);
    for name in ["MTA-v6", "MTA-v4"] {
        let addr = d.addr_of(name);
        let mut child = Command::new("openssl")
            .args(["s_client", "-starttls", "smtp", "-connect"])
            .arg(addr.to_string())
            .args(["-CAfile", &pki.p("ca.pem"), "-verify_return_error"])
            .args([
                "-verify_hostname",
                "mta.example.test",
                "-crlf",
                "-ign_eof",
                "-quiet",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // One command at a time: EHLO followed by more input before its reply is a protocol
        // error (sendmail 8.18's check).
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdin.write_all(b"EHLO client.example.test\n").unwrap();
        let mut text = String::new();
        while !text.contains("250 HELP") {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "{name}: {text}");
            text.push_str(&line);
        }
        stdin.write_all(b"QUIT\n").unwrap();
        stdout.read_to_string(&mut text).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{name}: {out:?}");
        assert!(text.contains("250-AUTH LOGIN PLAIN"), "{name}: {text}");
        assert!(!text.contains("STARTTLS"), "not offered twice: {text}");
        assert!(
            text.contains("221 2.0.0 mta.example.test closing connection"),
            "{text}"
        );
    }
    let log = d.wait_log_count("STARTTLS=server, relay=", 2);
    let v6 = log
        .lines()
        .find(|l| l.contains("STARTTLS=server, relay=") && l.contains("[IPv6:0:0:0:0:0:0:0:1], "))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        v6.contains("version=TLSv1.3, verify=NO, cipher=TLS_AES_256_GCM_SHA384, bits=256/256")
            || v6.contains(
                "version=TLSv1.3, verify=NO, cipher=TLS_CHACHA20_POLY1305_SHA256, bits=256/256"
            )
            || v6.contains(
                "version=TLSv1.3, verify=NO, cipher=TLS_AES_128_GCM_SHA256, bits=128/128"
            ),
        "{v6}"
    );
    assert!(
        log.contains("relay=localhost [127.0.0.1], version=TLSv1.3"),
        "{log}"
    );
}

#[test]
fn swaks_sends_over_tls_with_auth_and_the_message_says_so() {
    let pki = Pki::new();
    let mut d = start(&pki, &[]);
    for name in ["MTA-v6", "MTA-v4"] {
        let addr = d.addr_of(name);
        let out = Command::new("swaks")
            .args([
                "--server",
                &addr.ip().to_string(),
                "--port",
                &addr.port().to_string(),
            ])
            .args(["--tls", "--ehlo", "client.example.test"])
            .args([
                "--auth",
                "PLAIN",
                "--auth-user",
                USER,
                "--auth-password",
                PASSWORD,
            ])
            .args([
                "--from",
                "alice@client.example.test",
                "--to",
                "root@mta.example.test",
            ])
            .args(["--header", &format!("Subject: over {name}")])
            .output()
            .expect("swaks is installed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {text}\n{out:?}");
        assert!(text.contains("<-  220 2.0.0 Ready to start TLS"), "{text}");
        assert!(text.contains("235 2.0.0 OK Authenticated"), "{text}");
        assert!(text.contains("Message accepted for delivery"), "{text}");
    }
    let log = d.wait_log_count("proto=ESMTPSA", 2);
    assert_eq!(log.matches("AUTH=server, relay=").count(), 2, "{log}");
    assert!(log.contains(", authid=alice, mech=PLAIN, bits=0"), "{log}");
    let queued = d.queue_text();
    assert!(queued.contains("(authenticated bits=0)"), "{queued}");
    assert!(queued.contains("with ESMTPSA id "), "{queued}");
    assert!(queued.contains("(version=TLSv1.3 cipher="), "{queued}");
    assert!(queued.contains(" verify=NO)"), "{queued}");
}

#[test]
fn commands_pipelined_after_starttls_are_never_executed() {
    let pki = Pki::new();
    let mut d = start(&pki, &[]);
    let mut c = Client::new(connect(d.addr_of("MTA-v4"), None));
    c.reply();
    c.cmd("EHLO client.example.test");
    c.send_raw("STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n");
    assert_eq!(c.reply(), ["220 2.0.0 Ready to start TLS"]);
    let (tls, _) = handshake(c.into_inner(), &pki, None);
    let mut c = Client::new(tls);
    assert_eq!(
        c.cmd("RCPT TO:<root@mta.example.test>"),
        ["503 5.0.0 Need MAIL before RCPT"],
        "the injected MAIL must not have run"
    );
    let ehlo = c.cmd("EHLO client.example.test");
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
    assert_eq!(
        c.cmd("MAIL FROM:<a@client.example.test>")[0],
        "250 2.1.0 <a@client.example.test>... Sender ok"
    );
    c.cmd("QUIT");
    let log = d.wait_log("from=<a@client.example.test>");
    assert!(!log.contains("injected@evil.test"), "{log}");
}

#[test]
fn an_smtps_daemon_handshakes_before_the_greeting() {
    let pki = Pki::new();
    let mut d = start(&pki, &[]);
    let (tls, cert) = handshake(connect(d.addr_of("SMTPS-v4"), None), &pki, None);
    assert!(!cert.is_empty());
    let mut c = Client::new(tls);
    assert!(c.reply()[0].starts_with("220 mta.example.test ESMTP"));
    let ehlo = c.cmd("EHLO client.example.test");
    assert!(
        ehlo.contains(&"250-AUTH LOGIN PLAIN".to_string()),
        "{ehlo:?}"
    );
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
    assert_eq!(
        c.cmd(&auth_plain(USER, PASSWORD)),
        ["235 2.0.0 OK Authenticated"]
    );
    c.cmd("QUIT");
    d.wait_log("STARTTLS=server, relay=localhost [127.0.0.1], version=TLSv1.3, verify=NO");
}

#[test]
fn the_right_password_succeeds_and_a_wrong_one_fails_and_is_logged() {
    let pki = Pki::new();
    let mut d = start(&pki, &[]);
    let mut c = Client::new(connect(d.addr_of("MTA-v6"), None));
    c.reply();
    let ehlo = c.cmd("EHLO client.example.test");
    assert!(
        ehlo.contains(&"250-AUTH LOGIN PLAIN".to_string()),
        "loopback: {ehlo:?}"
    );
    assert!(ehlo.contains(&"250-STARTTLS".to_string()), "{ehlo:?}");
    assert_eq!(
        c.cmd(&auth_plain(USER, "wrong")),
        ["535 5.7.0 authentication failed"]
    );
    assert_eq!(
        c.cmd("AUTH CRAM-MD5"),
        ["504 5.3.3 AUTH mechanism CRAM-MD5 not available"]
    );
    assert_eq!(c.cmd("AUTH LOGIN"), ["334 VXNlcm5hbWU6"]);
    assert_eq!(c.cmd(&STANDARD.encode(USER)), ["334 UGFzc3dvcmQ6"]);
    assert_eq!(
        c.cmd(&STANDARD.encode(PASSWORD)),
        ["235 2.0.0 OK Authenticated"]
    );
    assert_eq!(c.cmd("AUTH LOGIN"), ["503 5.5.0 Already Authenticated"]);
    c.cmd("QUIT");
    let log = d.wait_log("AUTH=server, relay=");
    assert!(
        log.contains(
            "AUTH failure (PLAIN): authentication failure (-13) SASL(-13): authentication \
             failure: Password verification failed, user=alice, relay=[IPv6:0:0:0:0:0:0:0:1]"
        ),
        "{log}"
    );
    assert!(
        log.contains("AUTH=server, relay=[IPv6:0:0:0:0:0:0:0:1], authid=alice, mech=LOGIN, bits=0"),
        "{log}"
    );
}

#[test]
fn the_third_failure_closes_the_session() {
    let pki = Pki::new();
    let mut d = start(&pki, &[]);
    let mut c = Client::new(connect(d.addr_of("MTA-v4"), None));
    c.reply();
    c.cmd("EHLO client.example.test");
    for _ in 0..2 {
        assert_eq!(
            c.cmd(&auth_plain(USER, "guess")),
            ["535 5.7.0 authentication failed"]
        );
    }
    assert_eq!(
        c.cmd(&auth_plain(USER, "guess")),
        ["421 4.7.0 mta.example.test Too many AUTH failures; closing connection"]
    );
    assert!(c.closed());
    d.wait_log_count("AUTH failure (PLAIN)", 3);
}

#[test]
fn with_authoptions_p_auth_waits_for_tls() {
    let pki = Pki::new();
    let mut d = start(&pki, &["-O", "AuthOptions=p"]);
    let addr = d.addr_of("MTA-v4");
    let mut c = Client::new(connect(addr, None));
    c.reply();
    let ehlo = c.cmd("EHLO client.example.test");
    assert!(!ehlo.iter().any(|l| l.contains("AUTH")), "{ehlo:?}");
    assert_eq!(
        c.cmd(&auth_plain(USER, PASSWORD)),
        ["503 5.3.3 AUTH not available"]
    );
    c.cmd("QUIT");
    let (mut c, _) = starttls(addr, &pki, None);
    let ehlo = c.cmd("EHLO client.example.test");
    assert!(
        ehlo.contains(&"250-AUTH LOGIN PLAIN".to_string()),
        "{ehlo:?}"
    );
    assert_eq!(
        c.cmd(&auth_plain(USER, PASSWORD)),
        ["235 2.0.0 OK Authenticated"]
    );
}

#[test]
fn auth_unlocks_relaying() {
    let pki = Pki::new();
    let mut d = start(&pki, &[]);
    let addr = d.addr_of("MTA-v4");
    let (mut c, _) = starttls(addr, &pki, Some("127.0.0.2"));
    c.cmd("EHLO client.example.test");
    c.cmd("MAIL FROM:<alice@client.example.test>");
    assert_eq!(
        c.cmd("RCPT TO:<friend@elsewhere.test>"),
        ["550 5.7.1 <friend@elsewhere.test>... Relaying denied"]
    );
    c.cmd("RSET");
    assert_eq!(
        c.cmd(&auth_plain(USER, PASSWORD)),
        ["235 2.0.0 OK Authenticated"]
    );
    c.cmd("MAIL FROM:<alice@client.example.test>");
    assert_eq!(
        c.cmd("RCPT TO:<friend@elsewhere.test>"),
        ["250 2.1.5 <friend@elsewhere.test>... Recipient ok"]
    );
}

#[test]
fn an_msa_with_m_a_refuses_mail_before_auth() {
    let pki = Pki::new();
    let mut d = start(&pki, &[]);
    let (mut c, ehlo) = starttls(d.addr_of("MSA-v4"), &pki, None);
    assert!(!ehlo.iter().any(|l| l.contains("ETRN")), "M=E: {ehlo:?}");
    c.cmd("EHLO client.example.test");
    assert_eq!(
        c.cmd("MAIL FROM:<alice@client.example.test>"),
        ["530 5.7.0 Authentication required"]
    );
    assert_eq!(
        c.cmd(&auth_plain(USER, PASSWORD)),
        ["235 2.0.0 OK Authenticated"]
    );
    assert_eq!(
        c.cmd("MAIL FROM:<alice@client.example.test>"),
        ["250 2.1.0 <alice@client.example.test>... Sender ok"]
    );
}

#[test]
fn m_s_and_m_a_turn_starttls_and_auth_off() {
    let pki = Pki::new();
    let mut d = start(&pki, &[]);
    let mut c = Client::new(connect(d.addr_of("NOTLS-v4"), None));
    c.reply();
    let ehlo = c.cmd("EHLO client.example.test");
    assert!(
        !ehlo
            .iter()
            .any(|l| l.contains("STARTTLS") || l.contains("AUTH")),
        "{ehlo:?}"
    );
    assert_eq!(c.cmd("STARTTLS"), ["503 5.5.0 TLS not available"]);
    assert_eq!(
        c.cmd(&auth_plain(USER, PASSWORD)),
        ["503 5.3.3 AUTH not available"]
    );
}

#[test]
fn client_certificates_are_requested_and_verified_against_the_ca() {
    let pki = Pki::new();
    let mut d = start(&pki, &[]);
    let addr = d.addr_of("MTA-v4");
    // Signed by the CA: verify=OK.
    let signed = pki.leaf(&["client.example.test"]);
    // Self-signed: verify=FAIL, and the session still goes on.
    let stranger_key = KeyPair::generate().unwrap();
    let stranger = CertificateParams::new(vec!["stranger.example.test".to_string()])
        .unwrap()
        .self_signed(&stranger_key)
        .unwrap();
    for cert in [signed, (stranger.der().clone(), stranger_key)] {
        let mut c = Client::new(connect(addr, None));
        c.reply();
        c.cmd("EHLO client.example.test");
        c.cmd("STARTTLS");
        let (tls, _) = handshake(c.into_inner(), &pki, Some(cert));
        let mut c = Client::new(tls);
        assert!(c.cmd("EHLO client.example.test")[0].starts_with("250-"));
        c.cmd("QUIT");
    }
    let log = d.wait_log_count("STARTTLS=server, relay=", 2);
    let verdicts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("STARTTLS=server, relay="))
        .map(|l| {
            l.split("verify=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(verdicts, ["OK", "FAIL"], "{log}");
}

#[test]
fn a_bad_certificate_stops_the_start_with_the_file_and_line() {
    let pki = Pki::new();
    std::fs::write(pki.path("cert.pem"), "garbage\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cf = dir.path().join("sendmail.cf");
    std::fs::write(
        &cf,
        format!(
            "{CF}O ServerCertFile={}\nO ServerKeyFile={}\n",
            pki.p("cert.pem"),
            pki.p("key.pem")
        ),
    )
    .unwrap();
    let out = support::run(&[
        "-bD",
        "-C",
        cf.to_str().unwrap(),
        "-O",
        &format!("QueueDirectory={}", dir.path().join("mqueue").display()),
        "-O",
        &format!("PidFile={}", dir.path().join("pid").display()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains(&format!(
            "{}:8: ServerCertFile: {}: no certificate",
            cf.display(),
            pki.p("cert.pem")
        )),
        "{err}"
    );
    assert!(!err.contains("listening on"), "{err}");
}

#[test]
fn hup_picks_up_a_replaced_certificate_and_keeps_it_when_the_new_one_is_bad() {
    let pki = Pki::new();
    let mut d = start(&pki, &[]);
    let addr = d.addr_of("SMTPS-v4");
    let (_, first) = handshake(connect(addr, None), &pki, None);
    let second = pki.write_server_cert();
    assert_ne!(first, second);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("configuration reloaded");
    let (_, now) = handshake(connect(addr, None), &pki, None);
    assert_eq!(now, second, "the new certificate after HUP");

    std::fs::write(pki.path("key.pem"), "not a key\n").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let log = d.wait_log("TLS certificate and AUTH passwords not reloaded");
    assert!(
        log.contains("ServerKeyFile: ") && log.contains("no private key"),
        "{log}"
    );
    d.wait_log_count("configuration reloaded", 2);
    let (_, kept) = handshake(connect(addr, None), &pki, None);
    assert_eq!(kept, second, "the running certificate is kept");
}

/// The embedded default cf (m4's rulesets): its MSA needs AUTH, and after AUTH its own
/// check_rcpt relays because `${auth_type}` is in `$={TrustAuthMech}`.
#[test]
fn the_default_cf_rules_relay_for_an_authenticated_client() {
    let pki = Pki::new();
    let mut args: Vec<String> = Vec::new();
    for o in pki.options() {
        args.push("-O".into());
        args.push(o);
    }
    for d in [
        "Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1",
        "Name=MSA-v4, Family=inet, Port=0, Addr=127.0.0.1, M=Ea",
    ] {
        args.push("-O".into());
        args.push(format!("DaemonPortOptions={d}"));
    }
    args.extend(["-O", "DeliveryMode=queueonly", "-O", "AliasFile="].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cf = format!("{}\nDjmta.example.test\n", sendmail_rs::config::DEFAULT_CF);
    let mut d = Daemon::start(&cf, &args);
    let relay_attempt = |c: &mut Client<Tls>| {
        // The null sender: the cf's check_mail would look the sender's domain up in DNS.
        assert_eq!(c.cmd("MAIL FROM:<>"), ["250 2.1.0 <>... Sender ok"]);
        c.cmd("RCPT TO:<friend@elsewhere.test>")
    };
    let (mut c, _) = starttls(d.addr_of("MTA-v4"), &pki, Some("127.0.0.2"));
    c.cmd("EHLO client.example.test");
    let refused = relay_attempt(&mut c);
    assert!(
        refused[0].starts_with("550 5.7.1 <friend@elsewhere.test>... Relaying denied"),
        "{refused:?}"
    );
    c.cmd("RSET");
    assert_eq!(
        c.cmd(&auth_plain(USER, PASSWORD)),
        ["235 2.0.0 OK Authenticated"]
    );
    assert_eq!(
        relay_attempt(&mut c),
        ["250 2.1.5 <friend@elsewhere.test>... Recipient ok"]
    );
    let (mut c, _) = starttls(d.addr_of("MSA-v4"), &pki, Some("127.0.0.2"));
    c.cmd("EHLO client.example.test");
    assert_eq!(
        c.cmd("MAIL FROM:<alice@client.example.test>"),
        ["530 5.7.0 Authentication required"]
    );
}

#[test]
fn a_failed_handshake_is_logged_and_ends_the_session() {
    let pki = Pki::new();
    let mut d = start(&pki, &[]);
    let mut c = Client::new(connect(d.addr_of("MTA-v4"), None));
    c.reply();
    c.cmd("EHLO client.example.test");
    assert_eq!(c.cmd("STARTTLS"), ["220 2.0.0 Ready to start TLS"]);
    c.send_raw("this is not a TLS ClientHello\r\n");
    assert!(c.closed());
    let log = d.wait_log("STARTTLS=server, error: accept failed, reason=");
    assert!(log.contains(", relay=localhost [127.0.0.1]"), "{log}");
}
