//! The ESMTP receipt extensions beyond sendmail 8.17 (CHUNKING/BDAT, SMTPUTF8) and the
//! receipt limits (Timeout.command on a trickling client, MaxHeadersLength, MaxMessageSize),
//! end to end: the real daemon on `::1` and `127.0.0.1`, real clients (Python's smtplib,
//! swaks, raw sockets where no client speaks the extension: swaks and smtplib have no BDAT),
//! and the queue read back from disk.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sendmail_rs::queue::{Protocol, QueueId, QueuedMessage, Store};
use support::{Daemon, Smtp};

const CF: &str = "\
Djmta.example.test
O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1
O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1
";

/// Our `Chunking` option: CHUNKING/BDAT is off by default (sendmail 8.17 has none).
const CHUNKING: [&str; 2] = ["-O", "Chunking=true"];

/// Receipt only: delivery would write to this machine's /var/mail.
const QUEUE_ONLY: [&str; 2] = ["-O", "DeliveryMode=queueonly"];

fn start(extra: &[&str]) -> Daemon {
    let mut args = QUEUE_ONLY.to_vec();
    args.extend_from_slice(extra);
    Daemon::start(CF, &args)
}

/// The id in `250 2.0.0 <id> Message accepted for delivery`.
fn accepted_id(reply: &str) -> String {
    assert!(
        reply.starts_with("250 2.0.0 ") && reply.ends_with(" Message accepted for delivery"),
        "not an acceptance: {reply}"
    );
    reply.split(' ').nth(2).unwrap().to_string()
}

/// Stops the daemon and reads message `id` back from its queue.
fn queued(d: &mut Daemon, id: &str) -> QueuedMessage {
    d.stop();
    let store = Store::open_read_only(&d.queue_dir()).unwrap();
    store.load(&QueueId::new(id).unwrap()).unwrap()
}

fn ehlo(c: &mut Smtp) -> Vec<String> {
    c.reply();
    c.cmd("EHLO client.example.test")
}

#[test]
fn pipelined_bdat_chunks_land_in_the_queue_byte_for_byte_on_both_families() {
    // What a DATA client would have to dot-stuff, a BDAT client sends as it is: a line with
    // a lone dot, a line that looks like a command, NUL and 8-bit bytes.
    let first: &[u8] = b"Subject: chunked\r\nMessage-Id: <c1@client.example.test>\r\n\r\n.\r\nMAIL FROM:<evil@x>\r\n";
    let second: &[u8] = b"nul \x00 and 8bit \xe9\r\n..two dots\r\n";
    for name in ["MTA-v6", "MTA-v4"] {
        let mut d = start(&CHUNKING);
        let mut c = Smtp::connect(d.addr_of(name));
        assert!(ehlo(&mut c).contains(&"250-CHUNKING".to_string()));
        let mut wire =
            b"MAIL FROM:<sender@client.example.test>\r\nRCPT TO:<root@mta.example.test>\r\n"
                .to_vec();
        wire.extend(format!("BDAT {}\r\n", first.len()).as_bytes());
        wire.extend(first);
        wire.extend(format!("BDAT {} LAST\r\n", second.len()).as_bytes());
        wire.extend(second);
        c.send_raw(&wire);
        assert_eq!(
            c.reply()[0],
            "250 2.1.0 <sender@client.example.test>... Sender ok"
        );
        assert_eq!(
            c.reply()[0],
            "250 2.1.5 <root@mta.example.test>... Recipient ok"
        );
        assert_eq!(
            c.reply()[0],
            format!("250 2.0.0 {} octets received", first.len())
        );
        let id = accepted_id(&c.reply()[0]);
        c.cmd("QUIT");
        let log = d.wait_log(&format!("{id}: from=<sender@client.example.test>"));
        assert!(log.contains("proto=ESMTP"), "{log}");
        let m = queued(&mut d, &id);
        let body = String::from_utf8_lossy(&m.body).into_owned();
        assert!(
            body.starts_with("Received: from client.example.test"),
            "{body}"
        );
        assert!(body.contains("with ESMTP id"), "{body}");
        let sent = b"Subject: chunked\nMessage-Id: <c1@client.example.test>\n\n.\nMAIL FROM:<evil@x>\nnul \x00 and 8bit \xe9\n..two dots\n";
        assert!(m.body.ends_with(sent), "{name}: {body}");
    }
}

#[test]
fn bdat_without_a_transaction_is_read_and_refused_and_data_after_bdat_is_503() {
    let mut d = start(&CHUNKING);
    let mut c = Smtp::connect(d.addr_of("MTA-v6"));
    ehlo(&mut c);
    // The octets are consumed even though the command is refused: "QUIT\r\n" inside the
    // chunk must not end the session.
    c.send_raw(b"BDAT 6 LAST\r\nQUIT\r\n");
    assert_eq!(c.reply()[0], "503 5.0.0 Need MAIL command");
    c.cmd("MAIL FROM:<sender@client.example.test>");
    c.cmd("RCPT TO:<root@mta.example.test>");
    c.send_raw(b"BDAT 4\r\nab\r\n");
    assert_eq!(c.reply()[0], "250 2.0.0 4 octets received");
    assert_eq!(c.cmd("DATA")[0], "503 5.5.1 DATA not allowed after BDAT");
    assert_eq!(c.cmd("RSET")[0], "250 2.0.0 Reset state");
    c.cmd("MAIL FROM:<sender@client.example.test>");
    c.cmd("RCPT TO:<root@mta.example.test>");
    c.send_raw(b"BDAT 11 LAST\r\nSubject: \r\n");
    accepted_id(&c.reply()[0]);
    d.stop();
}

#[test]
fn a_bdat_message_over_max_message_size_is_refused_at_the_chunk_that_breaks_it() {
    let mut d = start(&["-O", "MaxMessageSize=1000", "-O", "Chunking=true"]);
    let mut c = Smtp::connect(d.addr_of("MTA-v4"));
    let keywords = ehlo(&mut c);
    assert!(
        keywords.contains(&"250-SIZE 1000".to_string()),
        "{keywords:?}"
    );
    c.cmd("MAIL FROM:<sender@client.example.test>");
    c.cmd("RCPT TO:<root@mta.example.test>");
    let line = format!("{}\r\n", "x".repeat(598));
    c.send_raw(format!("BDAT 600\r\n{line}").as_bytes());
    assert_eq!(c.reply()[0], "250 2.0.0 600 octets received");
    c.send_raw(format!("BDAT 600\r\n{line}BDAT 600 LAST\r\n{line}").as_bytes());
    assert_eq!(
        c.reply()[0],
        "552 5.2.3 Message exceeds maximum fixed size (1000)"
    );
    assert_eq!(c.reply()[0], "503 5.0.0 Need MAIL command");
    assert_eq!(c.cmd("NOOP")[0], "250 2.0.0 OK", "the session goes on");
    d.wait_log("message size (1198) exceeds maximum (1000)");
    d.stop();
}

/// Sends one message with Python's smtplib and `mail_options=['SMTPUTF8']`; prints the
/// EHLO keywords and the DATA reply.
fn smtplib_utf8(addr: SocketAddr, sender: &str, rcpt: &str) -> String {
    let script = "import smtplib\n\
         s = smtplib.SMTP('HOST', PORT, local_hostname='client.example.test', timeout=20)\n\
         s.ehlo()\n\
         print('smtputf8' in s.esmtp_features)\n\
         msg = 'Subject: caf\\u00e9\\r\\nFrom: SENDER\\r\\n\\r\\nbonjour\\r\\n'.encode('utf-8')\n\
         print(s.sendmail('SENDER', ['RCPT'], msg, mail_options=['SMTPUTF8']))\n\
         s.quit()\n"
        .replace("HOST", &addr.ip().to_string())
        .replace("PORT", &addr.port().to_string())
        .replace("SENDER", sender)
        .replace("RCPT", rcpt);
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(out.status.success(), "smtplib failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn smtputf8_addresses_are_accepted_with_the_option_and_kept_with_the_message() {
    let mut d = start(&["-O", "SmtpUTF8=true"]);
    let addr = d.addr_of("MTA-v6");
    let out = smtplib_utf8(addr, "jösé@client.example.test", "ü@bücher.example");
    assert_eq!(
        out, "True\n{}\n",
        "smtplib saw SMTPUTF8 and no refused recipient"
    );
    let log = d.wait_log("from=<jösé@client.example.test>");
    let line = log.lines().find(|l| l.contains("from=<jösé@")).unwrap();
    assert!(line.contains("proto=UTF8SMTP"), "{line}");
    let id = line
        .split(": from=")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap();
    // Without SMTPUTF8 on MAIL, a UTF-8 address is refused (RFC 6531 §3.5).
    let mut c = Smtp::connect(addr);
    ehlo(&mut c);
    assert_eq!(
        c.cmd("MAIL FROM:<jösé@client.example.test>")[0],
        "553 5.6.7 <jösé@client.example.test>... Non-ASCII address requires SMTPUTF8"
    );
    c.cmd("MAIL FROM:<sender@client.example.test>");
    assert!(c.cmd("RCPT TO:<ü@bücher.example>")[0].starts_with("553 5.6.7 "));
    c.cmd("QUIT");
    let m = queued(&mut d, id);
    assert!(
        m.envelope.params.smtputf8,
        "the flag travels with the message"
    );
    assert_eq!(m.envelope.client.protocol, Some(Protocol::Utf8smtp));
    assert_eq!(m.envelope.sender, "jösé@client.example.test");
    assert_eq!(m.envelope.recipients[0].address, "ü@bücher.example");
    let body = String::from_utf8(m.body).unwrap();
    assert!(body.contains("with UTF8SMTP id"), "{body}");
    assert!(body.contains("Subject: café"), "{body}");
}

#[test]
fn without_the_option_chunking_is_not_offered_and_bdat_is_an_unknown_command() {
    let mut d = start(&[]);
    let mut c = Smtp::connect(d.addr_of("MTA-v4"));
    let keywords = ehlo(&mut c);
    assert!(
        !keywords.iter().any(|k| k.contains("CHUNKING")),
        "{keywords:?}"
    );
    assert!(
        keywords.iter().any(|k| k == "250-DELIVERBY"),
        "{keywords:?}"
    );
    assert_eq!(
        c.cmd("BDAT 0 LAST")[0],
        "500 5.5.1 Command unrecognized: \"BDAT 0 LAST\""
    );
    d.stop();
}

#[test]
fn without_the_option_smtputf8_is_not_offered() {
    let mut d = start(&[]);
    let mut c = Smtp::connect(d.addr_of("MTA-v6"));
    let keywords = ehlo(&mut c);
    assert!(
        !keywords.iter().any(|k| k.contains("SMTPUTF8")),
        "{keywords:?}"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@client.example.test> SMTPUTF8")[0],
        "555 5.5.4 SMTPUTF8 parameter unrecognized"
    );
    d.stop();
}

#[test]
fn a_client_trickling_a_command_is_cut_off_by_timeout_command() {
    // Timeout.command=2s; the line would take 40 × 300 ms = 12 s. Every single read is
    // quick, so only a deadline on the whole line cuts it off.
    let mut d = start(&["-O", "Timeout.command=2s"]);
    for name in ["MTA-v6", "MTA-v4"] {
        let mut c = Smtp::connect(d.addr_of(name));
        c.reply();
        let stream = c.raw_clone();
        let finished = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (done, stopped) = (finished.clone(), stop.clone());
        let writer = std::thread::spawn(move || {
            let mut stream = stream;
            for b in b"MAIL FROM:<slow@client.example.test> \r\n" {
                std::thread::sleep(Duration::from_millis(300));
                if stopped.load(Ordering::SeqCst)
                    || std::io::Write::write_all(&mut stream, &[*b]).is_err()
                {
                    return;
                }
            }
            done.store(true, Ordering::SeqCst);
        });
        let reply = c.reply();
        assert!(
            reply[0].starts_with("421 4.4.1 mta.example.test Lost input channel from "),
            "{reply:?}"
        );
        assert!(
            !finished.load(Ordering::SeqCst),
            "the whole line was sent first"
        );
        stop.store(true, Ordering::SeqCst);
        assert!(c.closed());
        writer.join().unwrap();
    }
    let log = d.wait_log_count("during server cmd read", 2);
    assert!(log.contains("timeout waiting for input from localhost during server cmd read"));
    d.stop();
}

#[test]
fn headers_over_max_headers_length_are_refused_with_sendmails_reply() {
    let mut d = start(&["-O", "MaxHeadersLength=512"]);
    let port = d.addr_of("MTA-v6").port().to_string();
    let swaks = |header: &str| {
        let out = Command::new("swaks")
            .args(["--server", "::1", "--port", &port, "--timeout", "20"])
            .args(["--helo", "client.example.test"])
            .args([
                "--from",
                "sender@client.example.test",
                "--to",
                "root@mta.example.test",
            ])
            .args(["--add-header", header])
            .output()
            .expect("swaks is installed by .ci/run (apt-get install swaks)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let big = swaks(&format!("X-Big: {}", "a".repeat(600)));
    assert!(
        big.contains("<** 552 5.6.0 Headers too large (512 max)"),
        "{big}"
    );
    let small = swaks("X-Small: a");
    assert!(small.contains("Message accepted for delivery"), "{small}");
    let log = d.wait_log("stat=Headers too large (512 max)");
    let notice = log
        .lines()
        .find(|l| l.contains("headers too large"))
        .unwrap();
    assert!(notice.ends_with(" during message collect"), "{notice}");
    assert!(
        notice.contains(": headers too large (512 max) from "),
        "{notice}"
    );
    d.stop();
}

#[test]
fn bs_offers_what_the_daemon_offers() {
    // sendmail's -bs lists the daemon's keywords (tests/data/oracle/samples/42-cli-bs.txt).
    use std::io::{BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let cf = dir.path().join("sendmail.cf");
    std::fs::write(&cf, CF).unwrap();
    let mut child = Command::new(support::sendmail_bin())
        .args(["-bs", "-C", cf.to_str().unwrap()])
        .arg("-O")
        .arg(format!(
            "QueueDirectory={}",
            dir.path().join("mqueue").display()
        ))
        .arg("-O")
        .arg(format!("LogFile={}", dir.path().join("maillog").display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    let mut reply = || support::read_reply(&mut output);
    reply();
    input.write_all(b"EHLO localclient\r\n").unwrap();
    let keywords: Vec<String> = reply().iter().skip(1).map(|l| l[4..].to_string()).collect();
    for k in [
        "ENHANCEDSTATUSCODES",
        "PIPELINING",
        "EXPN",
        "VERB",
        "8BITMIME",
        "SIZE",
        "DSN",
        "DELIVERBY",
        "HELP",
    ] {
        assert!(
            keywords.contains(&k.to_string()),
            "{k} missing from {keywords:?}"
        );
    }
    assert!(!keywords.contains(&"CHUNKING".to_string()), "{keywords:?}");
    input.write_all(b"QUIT\r\n").unwrap();
    reply();
    drop(input);
    assert!(child.wait().unwrap().success());
}
