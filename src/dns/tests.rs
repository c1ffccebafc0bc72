//! The resolver against a real DNS server on loopback ([`super::test_server`]).

use std::time::Duration;

use super::test_server::{DnsServer, Zone};
use super::*;

async fn resolver(zone: Zone) -> (Dns, DnsServer) {
    let server = DnsServer::start(zone).await;
    // Long enough for a loaded CI machine; the silent-server case waits it out once.
    let opts = DnsOptions {
        timeout: Duration::from_secs(2),
        attempts: 1,
    };
    (Dns::new(&[server.addr], opts).expect("resolver"), server)
}

#[tokio::test]
async fn mx_answers_are_classified_as_hickory_reports_them() {
    let zone = Zone::default()
        .mx("mail.test", 20, "b.mail.test")
        .mx("mail.test", 10, "a.mail.test")
        .a("noMX.test", "192.0.2.1")
        .mx("nullmx.test", 0, ".")
        .servfail("broken.test")
        .silent("slow.test");
    let (dns, _server) = resolver(zone).await;
    assert_eq!(
        dns.mx("mail.test").await,
        Answer::Found(vec![
            MxRecord::new(20, "b.mail.test"),
            MxRecord::new(10, "a.mail.test")
        ])
    );
    assert_eq!(
        dns.mx("nomx.test").await,
        Answer::NoData,
        "name exists, no MX"
    );
    assert_eq!(dns.mx("absent.test").await, Answer::NxDomain);
    let null = dns.mx("nullmx.test").await;
    assert_eq!(null, Answer::Found(vec![MxRecord::new(0, ".")]));
    if let Answer::Found(r) = &null {
        assert!(r[0].is_null());
    }
    assert!(
        matches!(dns.mx("broken.test").await, Answer::Temporary(_)),
        "SERVFAIL"
    );
    let started = std::time::Instant::now();
    assert!(
        matches!(dns.mx("slow.test").await, Answer::Temporary(_)),
        "timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn address_lookups_keep_families_apart() {
    let zone = Zone::default()
        .a("both.test", "192.0.2.1")
        .aaaa("both.test", "2001:db8::1")
        .aaaa("six.test", "2001:db8::6");
    let (dns, _server) = resolver(zone).await;
    assert_eq!(
        dns.a("both.test").await,
        Answer::Found(vec!["192.0.2.1".parse().unwrap()])
    );
    assert_eq!(
        dns.aaaa("both.test.").await,
        Answer::Found(vec!["2001:db8::1".parse().unwrap()])
    );
    assert_eq!(dns.a("six.test").await, Answer::NoData);
    assert_eq!(dns.aaaa("none.test").await, Answer::NxDomain);
}

#[tokio::test]
async fn the_hosts_file_answers_for_localhost() {
    // /etc/hosts maps localhost on every system this runs on; the server knows nothing.
    let (dns, _server) = resolver(Zone::default()).await;
    match dns.a("localhost").await {
        Answer::Found(ips) => assert!(ips.contains(&std::net::Ipv4Addr::LOCALHOST)),
        other => panic!("localhost from /etc/hosts: {other:?}"),
    }
}

#[test]
fn addresses_are_bracketed_as_sendmail_logs_them() {
    assert_eq!(bracketed("127.0.0.1".parse().unwrap()), "[127.0.0.1]");
    assert_eq!(bracketed("::1".parse().unwrap()), "[IPv6:0:0:0:0:0:0:0:1]");
}

#[test]
fn a_resolver_can_be_built_outside_the_runtime() {
    let addr: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    assert!(Dns::new(&[addr], DnsOptions::default()).is_ok());
}

#[tokio::test]
async fn hosts_file_first_and_dns_only_where_the_service_switch_says() {
    let dir = tempfile::tempdir().unwrap();
    let switch = dir.path().join("service.switch");
    assert!(switch_uses_dns(&switch), "no file: sendmail's `dns files`");
    std::fs::write(&switch, "aliases files\n").unwrap();
    assert!(switch_uses_dns(&switch), "no hosts line: the default");
    std::fs::write(&switch, "hosts\tfiles dns\n").unwrap();
    assert!(switch_uses_dns(&switch));
    std::fs::write(&switch, "# hosts dns\nhosts files\n").unwrap();
    assert!(!switch_uses_dns(&switch));

    let files = hosts_by_name("192.0.2.7 relay.files.test relay\n2001:db8::7 Relay.Files.Test\n");
    let zone = Zone::default()
        .a("relay.files.test", "192.0.2.99")
        .mx("dns.test", 10, "relay.files.test")
        .a("only-dns.test", "192.0.2.8");
    let server = DnsServer::start(zone).await;
    let opts = DnsOptions {
        timeout: Duration::from_secs(2),
        attempts: 1,
    };
    // Files, then DNS: the file's address wins; a name it lacks is asked of the server.
    let both = Dns::with_files(&[server.addr], opts, files.clone(), true).unwrap();
    assert_eq!(
        both.a("RELAY.files.test.").await,
        Answer::Found(vec!["192.0.2.7".parse().unwrap()])
    );
    assert_eq!(
        both.aaaa("relay.files.test").await,
        Answer::Found(vec!["2001:db8::7".parse().unwrap()])
    );
    assert_eq!(
        both.a("only-dns.test").await,
        Answer::Found(vec!["192.0.2.8".parse().unwrap()])
    );
    assert!(matches!(both.mx("dns.test").await, Answer::Found(_)));
    // `hosts files` alone: the server is never asked.
    let files_only = Dns::with_files(&[server.addr], opts, files, false).unwrap();
    assert_eq!(files_only.a("only-dns.test").await, Answer::NxDomain);
    assert_eq!(files_only.mx("dns.test").await, Answer::NoData);
    assert_eq!(
        files_only.a("relay").await,
        Answer::Found(vec!["192.0.2.7".parse().unwrap()])
    );
    assert_eq!(files_only.aaaa("relay").await, Answer::NoData);
}
