//! Delivery through the oracle's cf rewrites the envelope and the headers as sendmail 8.17
//! does: the daemon runs `tests/fixtures/oracle.cf` (its smart host `DSrelay:[127.0.0.1]`
//! pointed at a sink on an ephemeral port), a message goes in over SMTP and from the command
//! line, and the sink records the `MAIL From:`, `RCPT To:` and headers it receives.
//!
//! The expected values are what the real sendmail 8.17.1.9, running the same cf as
//! oracle.example.test, sent to its sink (`../shared/oracle/sink.py`) for the same input on
//! 2026-12-02: unqualified addresses get `@$j` (ruleset `MasqSMTP`, `S=EnvFromSMTP/
//! HdrFromSMTP`), comments and phrases stay, `Bcc:` is not sent.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use support::{Daemon, Smtp, WAIT};

/// What the sink received for one message.
#[derive(Debug)]
struct Received {
    mail: String,
    rcpts: Vec<String>,
    data: String,
}

/// An SMTP sink on 127.0.0.1: every message it accepts is sent on the channel.
fn start_sink() -> (u16, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || serve(stream, tx));
        }
    });
    (port, rx)
}

fn serve(stream: TcpStream, tx: mpsc::Sender<Received>) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut say = |s: &str| w.write_all(format!("{s}\r\n").as_bytes());
    let _ = say("220 sink.test ESMTP");
    let (mut mail, mut rcpts) = (String::new(), Vec::new());
    let mut line = String::new();
    while r.read_line(&mut line).unwrap_or(0) > 0 {
        let cmd = line.trim_end().to_string();
        line.clear();
        let verb = cmd.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" => "250-sink.test\r\n250 8BITMIME",
            "MAIL" => {
                mail = cmd.clone();
                "250 ok"
            }
            "RCPT" => {
                rcpts.push(cmd.clone());
                "250 ok"
            }
            "DATA" => {
                let _ = say("354 go");
                let mut data = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 && line != ".\r\n" {
                    data.push_str(&line.replace("\r\n", "\n"));
                    line.clear();
                }
                line.clear();
                let msg = Received {
                    mail: std::mem::take(&mut mail),
                    rcpts: std::mem::take(&mut rcpts),
                    data,
                };
                let _ = tx.send(msg);
                "250 2.0.0 queued"
            }
            "QUIT" => {
                let _ = say("221 bye");
                return;
            }
            _ => "250 ok",
        };
        let _ = say(reply);
    }
}

const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost\n\
127.0.0.1\toracle.example.test oracle\n127.0.0.3\tremote.example.test\n";

/// The daemon on the oracle's cf, named oracle.example.test (UTS namespace), relaying to
/// the sink. The environment directory must outlive the daemon.
fn start_oracle_relaying_to(sink_port: u16) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("run/etc")).unwrap();
    std::fs::write(root.join("run/etc/hosts"), HOSTS).unwrap();
    std::fs::write(root.join("run/etc/service.switch"), "hosts files\n").unwrap();
    std::fs::write(root.join("run/aliases"), "postmaster: root\n").unwrap();
    std::fs::write(root.join("run/access"), "").unwrap();
    let cf = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oracle.cf"),
    )
    .unwrap()
    .replace("@ORACLE@", &root.display().to_string())
    .replace("A=TCP $h 2599", &format!("A=TCP $h {sink_port}"));
    let d = Daemon::start_wrapped(
        &cf,
        &[
            "-O",
            "DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1",
        ],
        support::AS_ORACLE_HOST,
    );
    (d, dir)
}

fn receive(rx: &mpsc::Receiver<Received>) -> Received {
    rx.recv_timeout(WAIT + Duration::from_secs(30))
        .expect("the sink received nothing")
}

const HEADERS_IN: &str = "From: Alice Example <alice>\r\n\
To: bob@remote.example.test, \"Carol C\" <carol>\r\n\
Cc: dave (Dave D), erin@remote.example.test\r\n\
Bcc: hidden\r\n\
Reply-To: alice\r\n\
Subject: rewritten\r\n\r\nbody\r\n.";

const HEADERS_OUT: &str = "From: Alice Example <alice@oracle.example.test>\n\
To: bob@remote.example.test, \"Carol C\" <carol@oracle.example.test>\n\
Cc: dave@oracle.example.test (Dave D), erin@remote.example.test\n\
Reply-To: alice@oracle.example.test\n\
Subject: rewritten\n";

#[test]
fn the_relay_mailer_gets_the_envelope_and_headers_sendmail_sends() {
    let (port, rx) = start_sink();
    let (mut d, _env) = start_oracle_relaying_to(port);
    let mut c = Smtp::connect(d.addr_of("MTA-v6"));
    c.reply();
    c.cmd("EHLO client.example.test");
    let r = c.cmd("MAIL FROM:<alice@oracle.example.test>");
    assert!(r[0].starts_with("250"), "{r:?}");
    let r = c.cmd("RCPT TO:<erin@remote.example.test>");
    assert!(r[0].starts_with("250"), "{r:?}");
    assert!(c.cmd("DATA")[0].starts_with("354"));
    c.send(HEADERS_IN);
    let r = c.reply();
    assert!(r[0].starts_with("250 2.0.0"), "{r:?}");
    c.cmd("QUIT");

    let got = receive(&rx);
    assert_eq!(got.mail, "MAIL From:<alice@oracle.example.test>");
    assert_eq!(got.rcpts, ["RCPT To:<erin@remote.example.test>"]);
    assert!(got.data.contains(HEADERS_OUT), "{}", got.data);
    assert!(!got.data.contains("Bcc:"), "{}", got.data);
    d.stop();
}

#[test]
fn an_unqualified_command_line_sender_is_qualified_with_j() {
    let (port, rx) = start_sink();
    let (mut d, _env) = start_oracle_relaying_to(port);
    d.addr_of("MTA-v6");
    let mut child = std::process::Command::new(support::sendmail_bin())
        .args(["-C", d.cf.to_str().unwrap(), "-O"])
        .arg(format!("QueueDirectory={}", d.queue_dir().display()))
        .args(["-f", "alice", "erin@remote.example.test"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let text = HEADERS_IN.replace("\r\n", "\n");
    let text = text.strip_suffix('.').unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());

    let got = receive(&rx);
    assert_eq!(got.mail, "MAIL From:<alice@oracle.example.test>");
    assert_eq!(got.rcpts, ["RCPT To:<erin@remote.example.test>"]);
    assert!(got.data.contains(HEADERS_OUT), "{}", got.data);
    d.stop();
}
