//! ESMTP receipt into the durable queue, end to end: real clients (Python's smtplib, raw
//! sockets) over `::1` and `127.0.0.1`, the queue read back with `sendmail -bp`.

mod support;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Daemon, Smtp, WAIT};

const CF: &str = "\
Djmta.example.test
O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1
O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1
";

/// Receipt only: delivery would write to this machine's /var/mail.
const QUEUE_ONLY: &[&str] = &["-O", "DeliveryMode=queueonly"];

/// Sends one message with Python's smtplib; returns the server's last reply to DATA.
fn smtplib_send(host: &str, port: u16, from: &str, to: &str) -> String {
    let script = format!(
        "import smtplib\n\
         s = smtplib.SMTP('{host}', {port}, local_hostname='client.example.test', timeout=20)\n\
         s.ehlo()\n\
         s.mail('{from}')\n\
         s.rcpt('{to}')\n\
         code, text = s.data(b'Subject: test\\r\\nMessage-Id: <m1@client.example.test>\\r\\n\\r\\nHello.\\r\\n')\n\
         print(code, text.decode())\n\
         s.quit()\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .stderr(Stdio::inherit())
        .output()
        .expect("python3");
    assert!(out.status.success(), "smtplib failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn smtplib_over_both_families_lands_in_the_queue() {
    let mut d = Daemon::start(CF, QUEUE_ONLY);
    let v6 = d.addr_of("MTA-v6");
    let v4 = d.addr_of("MTA-v4");
    let r6 = smtplib_send(
        "::1",
        v6.port(),
        "sender@client.example.test",
        "root@mta.example.test",
    );
    let r4 = smtplib_send("127.0.0.1", v4.port(), "other@client.example.test", "root");
    let id6 = r6
        .strip_prefix("250 2.0.0 ")
        .and_then(|r| r.strip_suffix(" Message accepted for delivery"))
        .unwrap_or_else(|| panic!("{r6}"));
    assert_eq!(id6.len(), 14, "sendmail-style queue id: {id6}");
    assert!(r4.starts_with("250 2.0.0 "), "{r4}");

    let q = d.mailq();
    assert!(q.contains("(2 requests)"), "{q}");
    assert!(q.contains(id6), "{q}");
    assert!(q.contains("sender@client.example.test"), "{q}");
    assert!(q.contains("root@mta.example.test"), "{q}");
    assert!(q.contains("Total requests: 2"), "{q}");

    let log = d.wait_log("daemon=MTA-v4");
    let from6 = log
        .lines()
        .find(|l| l.contains(&format!("{id6}: from=")))
        .unwrap_or_else(|| panic!("no from= line:\n{log}"));
    assert!(
        from6.contains(
            "from=<sender@client.example.test>, size=59, class=0, nrcpts=1, \
             msgid=<m1@client.example.test>, proto=ESMTP, daemon=MTA-v6, relay="
        ),
        "{from6}"
    );
    assert!(from6.ends_with("[IPv6:0:0:0:0:0:0:0:1]"), "{from6}");
}

#[test]
fn relaying_is_for_the_host_itself_only() {
    let mut d = Daemon::start(CF, QUEUE_ONLY);
    let v4 = d.addr_of("MTA-v4");
    // 127.0.0.9 is on lo but is not the host's own address: an outside client.
    let mut c = Smtp::connect_from(v4, "127.0.0.9");
    c.reply();
    c.cmd("EHLO outside.example.test");
    assert_eq!(
        c.cmd("MAIL FROM:<a@outside.example.test>")[0],
        "250 2.1.0 <a@outside.example.test>... Sender ok"
    );
    assert_eq!(
        c.cmd("RCPT TO:<bob@remote.example.test>")[0],
        "550 5.7.1 <bob@remote.example.test>... Relaying denied"
    );
    for trick in [
        "<bob%remote.example.test@mta.example.test>",
        "<remote.example.test!bob@mta.example.test>",
        "<@mta.example.test:bob@remote.example.test>",
    ] {
        assert!(
            c.cmd(&format!("RCPT TO:{trick}"))[0].starts_with("550 5.7.1 "),
            "{trick}"
        );
    }
    let ok = c.cmd("RCPT TO:<root@mta.example.test>");
    assert!(ok[0].starts_with("250 2.1.5"), "{ok:?}");
    assert_eq!(
        c.cmd("RCPT TO:<nosuchuser@mta.example.test>")[0],
        "550 5.1.1 <nosuchuser@mta.example.test>... User unknown"
    );
    c.cmd("QUIT");
    d.wait_log("<nosuchuser@mta.example.test>... User unknown");
    d.wait_log("ruleset=check_rcpt, arg1=<bob@remote.example.test>, relay=[127.0.0.9], reject=550 5.7.1 <bob@remote.example.test>... Relaying denied");

    // The host itself may relay.
    let mut c = Smtp::connect(v4);
    c.reply();
    c.cmd("EHLO localhost");
    c.cmd("MAIL FROM:<root@mta.example.test>");
    assert!(c.cmd("RCPT TO:<bob@remote.example.test>")[0].starts_with("250 2.1.5"));
}

#[test]
fn a_killed_daemon_loses_no_acknowledged_message() {
    let mut d = Daemon::start(CF, QUEUE_ONLY);
    let v6 = d.addr_of("MTA-v6");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    // Clients send until the kill (bounded by time and count); the kill comes once some
    // messages are acknowledged, however slow the machine is.
    let stop = Instant::now() + Duration::from_secs(60);
    let clients: Vec<_> = (0..8)
        .map(|n| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let Ok(s) = std::net::TcpStream::connect(v6) else {
                    return;
                };
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut c = SmtpLite::new(s);
                if c.line().is_none() || !c.cmd("EHLO c.example.test") {
                    return;
                }
                for i in 0..500 {
                    if Instant::now() > stop {
                        break;
                    }
                    let ok = c.cmd("MAIL FROM:<s@client.example.test>")
                        && c.cmd("RCPT TO:<root@mta.example.test>")
                        && c.cmd("DATA");
                    if !ok {
                        return;
                    }
                    c.send(&format!("Subject: {n}-{i}\r\n\r\nbody\r\n.\r\n"));
                    match c.line() {
                        Some(l) if l.starts_with("250 2.0.0 ") => {
                            let id = l.split_whitespace().nth(2).unwrap().to_string();
                            acked.lock().unwrap().push(id);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let wait_until = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 16 && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(10));
    }
    d.signal(nix::sys::signal::Signal::SIGKILL);
    for c in clients {
        c.join().unwrap();
    }
    let _ = d.child.as_mut().unwrap().wait();
    let acked = acked.lock().unwrap().clone();
    assert!(
        !acked.is_empty(),
        "no message was acknowledged before the kill"
    );

    let q = d.mailq();
    let listed: Vec<&str> = q
        .lines()
        .filter(|l| l.len() > 14 && l.as_bytes()[0].is_ascii_alphanumeric())
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let set: HashSet<&str> = listed.iter().copied().collect();
    assert_eq!(set.len(), listed.len(), "a message listed twice:\n{q}");
    for id in &acked {
        assert!(set.contains(id.as_str()), "acknowledged {id} lost:\n{q}");
    }
    // The queue reopens after the crash: a restarted daemon accepts again.
    let qdir = format!("QueueDirectory={}", d.queue_dir().display());
    let mut d2 = Daemon::start(CF, &["-O", &qdir, "-O", "DeliveryMode=queueonly"]);
    let v6 = d2.addr_of("MTA-v6");
    let r = smtplib_send("::1", v6.port(), "s@client.example.test", "root");
    assert!(r.starts_with("250 2.0.0 "), "{r}");
    let _ = WAIT;
}

/// A bare line client for the load loop.
struct SmtpLite {
    r: std::io::BufReader<std::net::TcpStream>,
    w: std::net::TcpStream,
}

impl SmtpLite {
    fn new(s: std::net::TcpStream) -> SmtpLite {
        SmtpLite {
            r: std::io::BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    fn send(&mut self, text: &str) {
        use std::io::Write;
        let _ = self.w.write_all(text.as_bytes());
    }

    /// The last line of one reply, or None if the connection ended.
    fn line(&mut self) -> Option<String> {
        use std::io::BufRead;
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l).ok()? == 0 {
                return None;
            }
            if l.as_bytes().get(3) != Some(&b'-') {
                return Some(l.trim_end().to_string());
            }
        }
    }

    /// Sends a command; true when the reply is 2xx or 3xx.
    fn cmd(&mut self, line: &str) -> bool {
        self.send(&format!("{line}\r\n"));
        matches!(self.line(), Some(l) if l.starts_with('2') || l.starts_with('3'))
    }
}
