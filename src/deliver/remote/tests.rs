//! Remote delivery end to end: a DNS server on 127.0.0.1 (random port) serving MX, AAAA
//! and A records that point at SMTP sinks on `[::1]` and `127.0.0.2`, all on one port.

use std::net::SocketAddr;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::TcpListener;

use super::test_sink::{SinkConfig, TcpSink};
use super::*;
use crate::dns::DnsOptions;
use crate::dns::test_server::{DnsServer, Zone};
use crate::queue::{Envelope, QueueId};

/// A port free on both `[::1]` and `127.0.0.2`, with listeners bound where asked.
struct Ports {
    port: u16,
    v6: Option<TcpListener>,
    v4: Option<TcpListener>,
}

async fn ports(want_v6: bool, want_v4: bool) -> Ports {
    for _ in 0..50 {
        let v4 = TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2");
        let port = v4.local_addr().unwrap().port();
        let Ok(v6) = TcpListener::bind(SocketAddr::new("::1".parse().unwrap(), port)).await else {
            continue;
        };
        // Listeners not wanted are closed: connections there are refused.
        return Ports {
            port,
            v6: want_v6.then_some(v6),
            v4: want_v4.then_some(v4),
        };
    }
    panic!("no port free on both [::1] and 127.0.0.2 after 50 tries");
}

pub(super) struct World {
    pub(super) dns: Dns,
    _dns_server: DnsServer,
    pub(super) _sinks: Vec<TcpSink>,
    pub(super) port: u16,
}

pub(super) async fn world(zone: Zone, want_v6: bool, want_v4: bool, cfg: SinkConfig) -> World {
    let server = DnsServer::start(zone).await;
    let dns = Dns::new(
        &[server.addr],
        DnsOptions {
            timeout: Duration::from_secs(2),
            attempts: 1,
        },
    )
    .unwrap();
    let p = ports(want_v6, want_v4).await;
    let mut sinks = Vec::new();
    if let Some(l) = p.v6 {
        let mut c = cfg.clone();
        c.tag = format!("{}-V6", cfg.tag);
        sinks.push(TcpSink::start(l, c));
    }
    if let Some(l) = p.v4 {
        let mut c = cfg.clone();
        c.tag = format!("{}-V4", cfg.tag);
        sinks.push(TcpSink::start(l, c));
    }
    World {
        dns,
        _dns_server: server,
        _sinks: sinks,
        port: p.port,
    }
}

pub(super) fn settings() -> Settings {
    Settings {
        helo_name: "oracle.example.test".into(),
        client: ClientOptions::default(),
        connect_timeout: Duration::from_secs(5),
        timeouts: ClientTimeouts::uniform(Duration::from_secs(5)),
        family: Family::Ipv6First,
        hosts: Hosts::default(),
        local_names: vec!["oracle.example.test".into()],
        tls: None,
        authinfo: None,
        log_level: 9,
        cache_size: 1,
        cache_timeout: Duration::from_secs(300),
    }
}

/// A delivery of `msg` to `rcpts` at `d.test` (the world's zone) on `port`.
pub(super) fn request<'a>(msg: &'a Message, rcpts: &'a [Recipient], port: u16) -> Request<'a> {
    Request {
        message: msg,
        recipients: rcpts,
        host: "d.test",
        port,
        on_accepted: None,
    }
}

pub(super) fn message() -> Message {
    Message {
        envelope: Envelope::new(
            QueueId::new("6AO7R0vX027769").unwrap(),
            "sender@client.example.test",
        ),
        body: b"Subject: test\n\nhello\n".to_vec(),
    }
}

async fn send(w: &World, host: &str, to: &[&str]) -> Report {
    send_with(w, &settings(), host, to).await
}

pub(super) async fn send_with(w: &World, s: &Settings, host: &str, to: &[&str]) -> Report {
    let msg = message();
    let rcpts: Vec<Recipient> = to.iter().map(|a| Recipient::new(*a)).collect();
    let req = Request {
        message: &msg,
        recipients: &rcpts,
        host,
        port: w.port,
        on_accepted: None,
    };
    let mut rng = StdRng::seed_from_u64(3);
    tokio::time::timeout(Duration::from_secs(30), deliver(&w.dns, s, &req, &mut rng))
        .await
        .expect("delivery finished in time")
}

pub(super) fn dual_stack_zone() -> Zone {
    Zone::default()
        .mx("d.test", 10, "mx.d.test")
        .aaaa("mx.d.test", "::1")
        .a("mx.d.test", "127.0.0.2")
}

#[tokio::test]
async fn ipv6_is_preferred_when_the_exchanger_has_both() {
    let w = world(dual_stack_zone(), true, true, SinkConfig::new("S")).await;
    let r = send(&w, "d.test", &["bob@d.test"]).await;
    assert_eq!(
        r.outcomes,
        vec![Outcome::Delivered {
            reply: "2.0.0 Ok: queued as S-V6".into()
        }]
    );
    assert_eq!(
        r.relay.as_deref(),
        Some("mx.d.test. [IPv6:0:0:0:0:0:0:0:1]")
    );
    assert!(r.log.is_empty(), "{:?}", r.log);
}

#[tokio::test]
async fn a_refused_ipv6_address_falls_back_to_ipv4() {
    let w = world(dual_stack_zone(), false, true, SinkConfig::new("S")).await;
    let r = send(&w, "d.test", &["bob@d.test"]).await;
    assert_eq!(
        r.outcomes,
        vec![Outcome::Delivered {
            reply: "2.0.0 Ok: queued as S-V4".into()
        }]
    );
    assert_eq!(r.relay.as_deref(), Some("mx.d.test. [127.0.0.2]"));
    assert_eq!(
        r.log,
        [format!(
            "makeconnection (mx.d.test. [IPv6:0:0:0:0:0:0:0:1].{} (10)) failed: Connection refused by mx.d.test.",
            w.port
        )]
    );
}

#[tokio::test]
async fn exchangers_are_tried_in_preference_order() {
    // The best exchanger (IPv4 only) is taken even though a worse one has IPv6.
    let zone = Zone::default()
        .mx("pref.test", 20, "second.pref.test")
        .mx("pref.test", 10, "first.pref.test")
        .a("first.pref.test", "127.0.0.2")
        .aaaa("second.pref.test", "::1");
    let w = world(zone, true, true, SinkConfig::new("P")).await;
    let r = send(&w, "pref.test", &["bob@pref.test"]).await;
    assert_eq!(r.relay.as_deref(), Some("first.pref.test. [127.0.0.2]"));
    assert_eq!(
        r.outcomes,
        vec![Outcome::Delivered {
            reply: "2.0.0 Ok: queued as P-V4".into()
        }]
    );

    // When the best refuses, the next one takes it.
    let zone = Zone::default()
        .mx("pref.test", 10, "first.pref.test")
        .mx("pref.test", 20, "second.pref.test")
        .a("first.pref.test", "127.0.0.2")
        .aaaa("second.pref.test", "::1");
    let w = world(zone, true, false, SinkConfig::new("P")).await;
    let r = send(&w, "pref.test", &["bob@pref.test"]).await;
    assert_eq!(
        r.relay.as_deref(),
        Some("second.pref.test. [IPv6:0:0:0:0:0:0:0:1]")
    );
    assert_eq!(r.log.len(), 1, "{:?}", r.log);
    assert!(
        r.log[0].starts_with("makeconnection (first.pref.test. [127.0.0.2]."),
        "{:?}",
        r.log
    );
}

#[tokio::test]
async fn a_temporary_greeting_hands_over_to_the_next_exchanger() {
    // Both exchangers resolve to the same sink, which always says 421: the session is tried
    // on each, then the recipients are deferred with the last reply.
    let zone = Zone::default()
        .mx("busy.test", 10, "a.busy.test")
        .mx("busy.test", 20, "b.busy.test")
        .a("a.busy.test", "127.0.0.2")
        .a("b.busy.test", "127.0.0.2");
    let mut cfg = SinkConfig::new("G");
    cfg.greeting = "421 4.3.2 Service not available".into();
    let w = world(zone, false, true, cfg).await;
    let r = send(&w, "busy.test", &["bob@busy.test"]).await;
    assert_eq!(r.relay.as_deref(), Some("b.busy.test. [127.0.0.2]"));
    assert_eq!(
        r.outcomes,
        vec![Outcome::Temporary {
            dsn: "4.3.2".into(),
            text: "Deferred: 421 4.3.2 Service not available".into()
        }]
    );
}

#[tokio::test]
async fn recipients_are_answered_one_by_one_over_one_connection() {
    let w = world(dual_stack_zone(), true, false, SinkConfig::new("R")).await;
    let r = send(&w, "d.test", &["ok@d.test", "busy@d.test", "nosuch@d.test"]).await;
    assert_eq!(
        r.outcomes[0],
        Outcome::Delivered {
            reply: "2.0.0 Ok: queued as R-V6".into()
        }
    );
    assert_eq!(r.outcomes[1].dsn(), "4.2.1");
    assert_eq!(
        r.outcomes[1].stat(),
        "Deferred: 450 4.2.1 <busy@d.test>... Mailbox busy"
    );
    assert!(matches!(&r.outcomes[1], Outcome::Temporary { .. }));
    assert_eq!(r.outcomes[2].dsn(), "5.1.1");
    assert!(matches!(&r.outcomes[2], Outcome::Permanent { .. }));
    let sessions = w._sinks[0].log.lock().unwrap().clone();
    assert_eq!(sessions.len(), 1, "one connection for all recipients");
}

#[tokio::test]
async fn an_implicit_mx_is_the_domain_itself() {
    let zone = Zone::default().a("plain.test", "127.0.0.2");
    let w = world(zone, false, true, SinkConfig::new("I")).await;
    let r = send(&w, "plain.test", &["bob@plain.test"]).await;
    assert_eq!(r.relay.as_deref(), Some("plain.test. [127.0.0.2]"));
    assert!(matches!(&r.outcomes[0], Outcome::Delivered { .. }));
}

#[tokio::test]
async fn literals_and_bracketed_hosts_skip_the_mx_lookup() {
    // The DNS has an MX for the name that would go elsewhere; [name] must not use it.
    let zone = Zone::default()
        .mx("smart.test", 10, "nowhere.test")
        .a("smart.test", "127.0.0.2");
    let w = world(zone, true, true, SinkConfig::new("L")).await;
    let r = send(&w, "[smart.test]", &["bob@far.test"]).await;
    assert_eq!(r.relay.as_deref(), Some("smart.test. [127.0.0.2]"));
    let r = send(&w, "[IPv6:::1]", &["bob@far.test"]).await;
    assert_eq!(
        r.relay.as_deref(),
        Some("[IPv6:0:0:0:0:0:0:0:1] [IPv6:0:0:0:0:0:0:0:1]")
    );
    assert_eq!(
        r.outcomes,
        vec![Outcome::Delivered {
            reply: "2.0.0 Ok: queued as L-V6".into()
        }]
    );
    let r = send(&w, "[127.0.0.2]", &["bob@far.test"]).await;
    assert_eq!(r.relay.as_deref(), Some("[127.0.0.2] [127.0.0.2]"));
}

#[tokio::test]
async fn dns_failures_bounce_or_defer_as_they_should() {
    let zone = Zone::default()
        .servfail("broken.test")
        .silent("slow.test")
        .mx("nullmx.test", 0, ".")
        .mx("dangling.test", 10, "gone.dangling.test");
    let w = world(zone, false, false, SinkConfig::new("N")).await;
    let cases: &[(&str, &str, bool)] = &[
        ("absent.test", "5.1.2", false),
        ("dangling.test", "5.1.2", false),
        ("nullmx.test", "5.1.10", false),
        ("broken.test", "4.4.3", true),
        ("slow.test", "4.4.3", true),
    ];
    for (domain, dsn, temporary) in cases {
        let r = send(&w, domain, &["bob@x"]).await;
        assert_eq!(r.outcomes.len(), 1);
        assert_eq!(r.outcomes[0].dsn(), *dsn, "{domain}: {:?}", r.outcomes);
        assert_eq!(
            matches!(r.outcomes[0], Outcome::Temporary { .. }),
            *temporary,
            "{domain}"
        );
        assert_eq!(r.relay, None, "{domain}");
    }
    let r = send(&w, "absent.test", &["bob@absent.test"]).await;
    assert_eq!(
        r.outcomes[0].stat(),
        "Host unknown (Name server: absent.test.: host not found)"
    );
    let r = send(&w, "broken.test", &["bob@broken.test"]).await;
    assert_eq!(
        r.outcomes[0].stat(),
        "Deferred: Name server: broken.test.: host name lookup failure"
    );
}

#[tokio::test]
async fn when_every_address_refuses_the_mail_is_deferred_never_bounced() {
    let w = world(dual_stack_zone(), false, false, SinkConfig::new("X")).await;
    let r = send(&w, "d.test", &["bob@d.test", "carol@d.test"]).await;
    let deferred = Outcome::Temporary {
        dsn: "4.4.1".into(),
        text: "Deferred: Connection refused by mx.d.test.".into(),
    };
    assert_eq!(r.outcomes, vec![deferred.clone(), deferred]);
    assert_eq!(r.relay.as_deref(), Some("mx.d.test. [127.0.0.2]"));
    assert_eq!(
        r.log,
        [
            format!(
                "makeconnection (mx.d.test. [IPv6:0:0:0:0:0:0:0:1].{} (10)) failed: Connection refused by mx.d.test.",
                w.port
            ),
            format!(
                "makeconnection (mx.d.test. [127.0.0.2].{} (2)) failed: Connection refused by mx.d.test.",
                w.port
            ),
        ]
    );
}

#[tokio::test]
async fn a_smart_host_literal_that_refuses_logs_as_sendmail_does() {
    // samples/46: relay:[127.0.0.1] down.
    let w = world(Zone::default(), false, false, SinkConfig::new("X")).await;
    let Some(Ok((mailer, target))) = route::smart_host("relay:[127.0.0.1]") else {
        panic!("smart host parses");
    };
    assert_eq!(mailer.as_deref(), Some("relay"));
    assert_eq!(target, Target::Literal("127.0.0.1".parse().unwrap()));
    let r = send(&w, "[127.0.0.1]", &["bob@remote.example.test"]).await;
    assert_eq!(
        r.log,
        [format!(
            "makeconnection ([127.0.0.1] [127.0.0.1].{} (2)) failed: Connection refused by [127.0.0.1]",
            w.port
        )]
    );
    assert_eq!(r.relay.as_deref(), Some("[127.0.0.1] [127.0.0.1]"));
    assert_eq!(r.outcomes[0].dsn(), "4.4.1");
    assert_eq!(
        r.outcomes[0].stat(),
        "Deferred: Connection refused by [127.0.0.1]"
    );
}

#[tokio::test]
async fn client_port_options_set_the_source_address_and_the_helo_name() {
    // samples/45: ClientPortOptions=Family=inet, Addr=127.0.0.5, M=h → the connection comes
    // from 127.0.0.5 and EHLO names it as the hosts file does.
    let w = world(dual_stack_zone(), false, true, SinkConfig::new("C")).await;
    let mut s = settings();
    s.client = ClientOptions::parse(&["Family=inet, Addr=127.0.0.5, M=h".to_string()]).unwrap();
    s.hosts = Hosts::parse("127.0.0.5 out5.example.test out5\n");
    let msg = message();
    let rcpts = vec![Recipient::new("bob@d.test")];
    let req = request(&msg, &rcpts, w.port);
    let r = deliver(&w.dns, &s, &req, &mut StdRng::seed_from_u64(1)).await;
    assert!(matches!(&r.outcomes[0], Outcome::Delivered { .. }), "{r:?}");
    let seen = w._sinks[0].log.lock().unwrap().clone();
    assert_eq!(
        seen[0].peer.map(|p| p.ip().to_string()).as_deref(),
        Some("127.0.0.5")
    );
    assert_eq!(seen[0].commands[0], "EHLO out5.example.test");

    // Without M=h the configured name is used, from the same source address.
    s.client = ClientOptions::parse(&["Family=inet, Addr=127.0.0.5".to_string()]).unwrap();
    let r = deliver(&w.dns, &s, &req, &mut StdRng::seed_from_u64(1)).await;
    assert!(matches!(&r.outcomes[0], Outcome::Delivered { .. }), "{r:?}");
    let seen = w._sinks[0].log.lock().unwrap().clone();
    assert_eq!(seen[1].commands[0], "EHLO oracle.example.test");
}

#[test]
fn settings_come_from_the_configuration() {
    let cf = "V10\nDjoracle.example.test\nO ClientPortOptions=Family=inet6, Addr=::1, Port=2600\nO HeloName=out.example.test\nO Timeout.connect=7s\n";
    let config = Config::from_str("test.cf", cf, &[]).expect("config");
    let s = Settings::from_config(&config).unwrap();
    assert_eq!(s.helo_name, "out.example.test");
    let no_helo = Config::from_str("j.cf", "V10\nDjoracle.example.test\n", &[]).expect("config");
    assert_eq!(
        Settings::from_config(&no_helo).unwrap().helo_name,
        "oracle.example.test"
    );
    assert_eq!(s.client.inet6.addr, Some("::1".parse().unwrap()));
    assert_eq!(s.client.inet6.port, 2600);
    assert_eq!(s.client.inet, connect::FamilyOptions::default());
    assert_eq!(s.connect_timeout, Duration::from_secs(7));
    assert_eq!(s.family, Family::Ipv6First);
    assert!(s.local_names.contains(&"oracle.example.test".to_string()));
    assert!(s.local_names.contains(&"localhost".to_string()));
    let bad = "V10\nO ClientPortOptions=Family=inet, Addr=not.an.ip\n";
    let config = Config::from_str("bad.cf", bad, &[]).expect("config");
    assert!(Settings::from_config(&config).is_err());
}

#[tokio::test]
async fn an_mx_list_naming_us_uses_only_better_exchangers() {
    let zone = Zone::default()
        .mx("loop.test", 10, "oracle.example.test")
        .mx("loop.test", 20, "other.loop.test")
        .a("other.loop.test", "127.0.0.2")
        .mx("backup.test", 5, "primary.backup.test")
        .mx("backup.test", 10, "oracle.example.test")
        .a("primary.backup.test", "127.0.0.2");
    let w = world(zone, false, true, SinkConfig::new("M")).await;
    let r = send(&w, "loop.test", &["bob@loop.test"]).await;
    assert_eq!(r.outcomes[0].dsn(), "5.3.5");
    assert_eq!(
        r.outcomes[0].stat(),
        "config error: mail loops back to me (MX problem?)"
    );
    let r = send(&w, "backup.test", &["bob@backup.test"]).await;
    assert_eq!(r.relay.as_deref(), Some("primary.backup.test. [127.0.0.2]"));
}

#[test]
fn the_to_line_has_sendmails_reply_and_stat_fields() {
    let unknown = Outcome::Permanent {
        dsn: "5.1.1".into(),
        text: "550 5.1.1 <nosuch@remote.example.test>... User unknown".into(),
    };
    assert_eq!(
        unknown.reply(),
        Some("550 5.1.1 <nosuch@remote.example.test>... User unknown")
    );
    assert_eq!(unknown.log_stat(), "User unknown");
    let later = Outcome::Temporary {
        dsn: "4.3.0".into(),
        text: "Deferred: 451 4.3.0 try again later".into(),
    };
    assert_eq!(later.reply(), Some("451 4.3.0 try again later"));
    assert_eq!(later.log_stat(), "Deferred: 451 4.3.0 try again later");
    let refused = Outcome::Temporary {
        dsn: "4.4.1".into(),
        text: "Deferred: Connection refused by [127.0.0.1]".into(),
    };
    assert_eq!(refused.reply(), None);
    let local = Outcome::Permanent {
        dsn: "5.1.1".into(),
        text: "User unknown".into(),
    };
    assert_eq!(
        (local.reply(), local.log_stat().as_str()),
        (None, "User unknown")
    );
}
