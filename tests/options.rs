//! Options of Debian's sendmail.cf that change what the daemon does (issue 18 item 3), each
//! shown end to end on the real binary: `SendMimeErrors`, `SevenBitInput`, `QueueFileMode`,
//! `HostsFile`. (`ForwardPath`, `UnixFromLine`, `ServiceSwitchFile` are shown by unit tests
//! beside their code; the options that have no effect here are listed in the README.)

mod support;

use std::os::unix::fs::PermissionsExt;

use support::{Daemon, Smtp};

const CF: &str = "\
Djmta.example.test
Cwmta.example.test
O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1
";

fn start(extra: &[&str]) -> Daemon {
    let mut args = vec!["-O", "DeliveryMode=queueonly"];
    args.extend_from_slice(extra);
    Daemon::start(CF, &args)
}

fn ehlo(c: &mut Smtp) -> Vec<String> {
    c.reply();
    c.cmd("EHLO client.example.test")
}

/// Sends one message with `params` on MAIL and `data` (already CRLF) as its text.
fn send(c: &mut Smtp, params: &str, data: &[u8]) {
    assert!(c.cmd(&format!("MAIL FROM:<a@client.example.test>{params}"))[0].starts_with("250"));
    assert!(c.cmd("RCPT TO:<root@mta.example.test>")[0].starts_with("250"));
    assert!(c.cmd("DATA")[0].starts_with("354"));
    c.send_raw(data);
    let r = c.reply();
    assert!(r[0].starts_with("250 2.0.0"), "{r:?}");
}

#[test]
fn send_mime_errors_false_offers_no_dsn_and_refuses_its_parameters_as_sendmail() {
    let mut d = start(&[]);
    let mut c = Smtp::connect(d.addr_of("MTA-v4"));
    assert!(ehlo(&mut c).iter().any(|l| l == "250-DSN"));
    let mut d = start(&["-O", "SendMimeErrors=False"]);
    let mut c = Smtp::connect(d.addr_of("MTA-v4"));
    let keywords = ehlo(&mut c);
    assert!(!keywords.iter().any(|l| l.ends_with("DSN")), "{keywords:?}");
    // The oracle's words (sendmail 8.17.1.9, O SendMimeErrors=False).
    assert_eq!(
        c.cmd("MAIL FROM:<a@client.example.test> RET=HDRS"),
        ["504 5.7.0 Sorry, RET not supported, we do not allow DSN"]
    );
    assert!(c.cmd("MAIL FROM:<a@client.example.test>")[0].starts_with("250"));
    assert_eq!(
        c.cmd("RCPT TO:<root@mta.example.test> NOTIFY=NEVER"),
        ["504 5.7.0 Sorry, NOTIFY not supported, we do not allow DSN"]
    );
}

#[test]
fn seven_bit_input_clears_the_eighth_bit_unless_the_client_says_8bitmime() {
    let mut d = start(&["-O", "SevenBitInput=True"]);
    let mut c = Smtp::connect(d.addr_of("MTA-v4"));
    ehlo(&mut c);
    send(
        &mut c,
        "",
        b"Subject: one caf\xe9\r\n\r\nfirst caf\xe9\r\n.\r\n",
    );
    send(
        &mut c,
        " BODY=8BITMIME",
        b"Subject: two caf\xe9\r\n\r\nsecond caf\xe9\r\n.\r\n",
    );
    // Past 64 KiB the message streams to a spool file: the bytes there are cut too.
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..2000 {
        big.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123\r\n",
        );
    }
    big.extend_from_slice(b"tail caf\xe9\r\n.\r\n");
    send(&mut c, "", &big);
    let q = std::fs::read_dir(d.queue_dir().join("journal"))
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect::<Vec<u8>>();
    let has = |needle: &[u8]| q.windows(needle.len()).any(|w| w == needle);
    // 0xe9 & 0x7f = 'i'
    assert!(has(b"Subject: one cafi\n\nfirst cafi\n"));
    assert!(has(b"Subject: two caf\xe9\n\nsecond caf\xe9\n"));
    assert!(!has(b"first caf\xe9"));
    assert!(has(b"tail cafi\n") && !has(b"tail caf\xe9"));
    drop(c);
    d.stop();
}

#[test]
fn queue_file_mode_is_the_mode_of_the_queue_files() {
    let mut d = start(&["-O", "QueueFileMode=0640"]);
    let mut c = Smtp::connect(d.addr_of("MTA-v4"));
    ehlo(&mut c);
    send(&mut c, "", b"Subject: mode\r\n\r\nx\r\n.\r\n");
    let segs: Vec<_> = std::fs::read_dir(d.queue_dir().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    assert!(!segs.is_empty());
    for s in segs {
        let mode = std::fs::metadata(&s).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{}", s.display());
    }
}

#[test]
fn hosts_file_names_the_clients_instead_of_etc_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 gateway.site.test gateway\n").unwrap();
    let mut d = start(&["-O", &format!("HostsFile={}", hosts.display())]);
    let mut c = Smtp::connect(d.addr_of("MTA-v4"));
    let greeting = ehlo(&mut c);
    assert!(
        greeting[0].contains("Hello gateway.site.test [127.0.0.1]"),
        "{greeting:?}"
    );
    send(&mut c, "", b"Subject: h\r\n\r\nx\r\n.\r\n");
    let log = d.wait_log("relay=gateway.site.test [127.0.0.1]");
    assert!(!log.contains("relay=localhost [127.0.0.1]"), "{log}");
}
