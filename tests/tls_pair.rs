//! Two sendmail-rs daemons relaying to each other over STARTTLS, end to end: daemon B holds a
//! certificate for its name signed by a test CA (rcgen) and queues mail for its domain;
//! daemon A sends everything to B through a `DSrelay:[…]` smart host with the CA as
//! `CACertFile`. A message goes into A with swaks, over `::1` and over `127.0.0.1`. Both logs
//! show sendmail's `STARTTLS=` lines with one cipher, B's `Received:` says `with ESMTPS`, and
//! A's `to=` line says `stat=Sent`.

mod support;

use std::process::Command;

use support::Daemon;
use support::pki::TestCa;

/// Daemon B: the TLS server, final destination for b.example.test, queue only.
fn start_b(ca: &TestCa) -> Daemon {
    ca.write_leaf(&["b.example.test"], "b.pem", "b.key");
    let cf = format!(
        "Djb.example.test\n\
         Cwb.example.test\n\
         O DaemonPortOptions=Name=B-v6, Family=inet6, Port=0, Addr=::1\n\
         O DaemonPortOptions=Name=B-v4, Family=inet, Port=0, Addr=127.0.0.1\n\
         O ServerCertFile={}\n\
         O ServerKeyFile={}\n\
         O DeliveryMode=queueonly\n",
        ca.p("b.pem"),
        ca.p("b.key"),
    );
    Daemon::start(&cf, &[])
}

/// Daemon A: relays everything to B at `literal` (the `DS` macro) port `port`, trusting `ca`.
fn start_a(ca: &TestCa, literal: &str, port: u16) -> Daemon {
    let cf = format!(
        "Dja.example.test\n\
         DSrelay:{literal}\n\
         O DaemonPortOptions=Name=A-v4, Family=inet, Port=0, Addr=127.0.0.1\n\
         O CACertFile={}\n\
         Mrelay, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=2040, T=DNS/RFC822/SMTP, A=TCP $h {port}\n",
        ca.p("ca.pem"),
    );
    Daemon::start(&cf, &[])
}

/// The line of `log` containing `needle`.
fn line_with<'a>(log: &'a str, needle: &str) -> &'a str {
    log.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in:\n{log}"))
}

/// The `cipher=` value of a `STARTTLS=` line.
fn cipher_of(line: &str) -> &str {
    let rest = line.split(", cipher=").nth(1).expect(line);
    rest.split(',').next().unwrap()
}

/// One message into A with swaks; B over `literal` (its listener `b_name`); `relay` is B as
/// A's log names it and `peer` is A as B's log names it.
fn relay_pair(b_name: &str, literal: &str, relay: &str, peer: &str) {
    let ca = TestCa::new("tls-pair test CA");
    let mut b = start_b(&ca);
    let b_addr = b.addr_of(b_name);
    let mut a = start_a(&ca, literal, b_addr.port());
    let a_addr = a.addr_of("A-v4");
    let out = Command::new("swaks")
        .args(["--server", &a_addr.ip().to_string()])
        .args(["--port", &a_addr.port().to_string()])
        .args(["--ehlo", "client.example.test"])
        .args(["--from", "alice@client.example.test"])
        .args(["--to", "root@b.example.test"])
        .args(["--header", "Subject: A to B over TLS"])
        .output()
        .expect("swaks is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{out:?}");

    let a_log = a.wait_log("stat=");
    let to = line_with(&a_log, "to=<root@b.example.test>");
    assert!(to.contains(&format!("relay={relay}")), "{to}");
    assert!(to.contains("stat=Sent ("), "{to}");
    let client = line_with(&a_log, "STARTTLS=client, relay=");
    assert!(
        client.contains(&format!(
            ": STARTTLS=client, relay={relay}, version=TLSv1.3, verify=OK, cipher=TLS_"
        )),
        "{client}"
    );

    let b_log = b.wait_log("STARTTLS=server, relay=");
    let server = line_with(&b_log, "STARTTLS=server, relay=");
    assert!(server.contains(peer), "{server}");
    assert!(
        server.contains("], version=TLSv1.3, verify=NO, cipher=TLS_"),
        "{server}"
    );
    assert_eq!(cipher_of(client), cipher_of(server), "{client}\n{server}");
    let bits = format!(", bits={}", client.split(", bits=").nth(1).expect(client));
    assert!(server.ends_with(&bits), "{client}\n{server}");

    let b_log = b.wait_log("proto=ESMTPS");
    assert!(line_with(&b_log, "from=<alice@client.example.test>").contains("proto=ESMTPS"));
    let queued = b.queue_text();
    assert!(
        queued.contains("Received: from a.example.test ("),
        "{queued}"
    );
    assert!(queued.contains("by b.example.test"), "{queued}");
    assert!(queued.contains("with ESMTPS id "), "{queued}");
    let tls = format!("(version=TLSv1.3 cipher={} ", cipher_of(server));
    assert!(queued.contains(&tls), "{queued}");
    assert!(queued.contains("Subject: A to B over TLS"), "{queued}");
}

#[test]
fn two_daemons_relay_over_starttls_on_ipv6() {
    relay_pair(
        "B-v6",
        "[IPv6:::1]",
        "[IPv6:0:0:0:0:0:0:0:1]",
        "[IPv6:0:0:0:0:0:0:0:1]",
    );
}

#[test]
fn two_daemons_relay_over_starttls_on_ipv4() {
    relay_pair("B-v4", "[127.0.0.1]", "[127.0.0.1]", "[127.0.0.1]");
}
