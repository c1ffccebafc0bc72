//! STARTTLS and AUTH toward a sink on loopback: the certificate check recorded as
//! `verify=`, Modifiers `S` and `A`, a failed handshake (next host, or `TLSFallbacktoClear`),
//! and credentials sent only over TLS.

use super::test_sink::{Seen, SinkConfig, SinkTls, TestPki};
use super::tests::{World, dual_stack_zone, send_with, settings, world};
use super::tls::{TlsFiles, TlsSettings};
use super::*;

/// A sink on `[::1]` only, offering STARTTLS with a certificate for `mx.d.test`.
async fn tls_world(tls: SinkTls, auth: Option<(&str, &str)>) -> World {
    let mut cfg = SinkConfig::new("T");
    cfg.tls = tls;
    cfg.auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
    world(dual_stack_zone(), true, false, cfg).await
}

fn sessions(w: &World) -> Vec<Seen> {
    w._sinks[0].log.lock().unwrap().clone()
}

fn with_tls(files: &TlsFiles) -> Settings {
    let mut s = settings();
    s.tls = Some(TlsSettings::load(files));
    s
}

/// One message to `bob@d.test` with STARTTLS and no CA.
async fn send_tls(w: &World) -> Report {
    send_with(
        w,
        &with_tls(&TlsFiles::default()),
        "d.test",
        &["bob@d.test"],
    )
    .await
}

fn delivered(r: &Report) {
    assert_eq!(
        r.outcomes,
        vec![Outcome::Delivered {
            reply: "2.0.0 Ok: queued as T-V6".into()
        }],
        "{r:?}"
    );
}

/// The `STARTTLS=client` line, with the version and cipher checked for shape.
fn starttls_line<'a>(r: &'a Report, verify: &str) -> &'a str {
    let line = r
        .noqid_log
        .iter()
        .find(|l| l.starts_with("STARTTLS=client, relay="))
        .unwrap_or_else(|| panic!("no STARTTLS line in {:?}", r.noqid_log));
    let want =
        format!("STARTTLS=client, relay=mx.d.test., version=TLSv1.3, verify={verify}, cipher=TLS_");
    assert!(line.starts_with(&want), "{line}");
    assert!(
        line.ends_with(", bits=256/256") || line.ends_with(", bits=128/128"),
        "{line}"
    );
    line
}

#[tokio::test]
async fn starttls_is_used_when_offered_and_an_unknown_ca_is_recorded_not_refused() {
    let pki = TestPki::new(&["mx.d.test"]);
    let w = tls_world(SinkTls::On(pki.server.clone()), None).await;
    let r = send_tls(&w).await;
    delivered(&r);
    starttls_line(&r, "FAIL");
    let seen = sessions(&w);
    assert_eq!(seen.len(), 1);
    let after = seen[0].after_tls.expect("the session went over TLS");
    assert_eq!(seen[0].commands[after - 1], "STARTTLS");
    // EHLO again after the handshake, then the transaction.
    assert_eq!(seen[0].commands[after], "EHLO oracle.example.test");
    assert!(seen[0].commands[after + 1].starts_with("MAIL From:<sender@client.example.test>"));
    assert!(
        !seen[0].commands[after + 1..]
            .iter()
            .any(|c| c == "STARTTLS")
    );
}

#[tokio::test]
async fn verify_is_ok_with_the_ca_in_cacertfile_or_cacertpath() {
    // The certificate names another host: sendmail checks the chain, not the name.
    let pki = TestPki::new(&["other.example.test"]);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let w = tls_world(SinkTls::On(pki.server.clone()), None).await;
    let files = TlsFiles {
        ca_file: Some(ca),
        ..TlsFiles::default()
    };
    let r = send_with(&w, &with_tls(&files), "d.test", &["bob@d.test"]).await;
    delivered(&r);
    starttls_line(&r, "OK");

    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("0a1b2c3d.0"), &pki.ca_pem).unwrap();
    let files = TlsFiles {
        ca_path: Some(certs),
        ..TlsFiles::default()
    };
    let r = send_with(&w, &with_tls(&files), "d.test", &["bob@d.test"]).await;
    starttls_line(&r, "OK");

    // Another CA's certificate in CACertFile: FAIL, and the mail still goes.
    let stranger = TestPki::new(&["x.test"]);
    let other = dir.path().join("other.pem");
    std::fs::write(&other, &stranger.ca_pem).unwrap();
    let files = TlsFiles {
        ca_file: Some(other),
        ..TlsFiles::default()
    };
    let r = send_with(&w, &with_tls(&files), "d.test", &["bob@d.test"]).await;
    delivered(&r);
    starttls_line(&r, "FAIL");
}

#[tokio::test]
async fn modifier_s_keeps_the_client_from_starttls() {
    let pki = TestPki::new(&["mx.d.test"]);
    let w = tls_world(SinkTls::On(pki.server.clone()), None).await;
    let mut s = with_tls(&TlsFiles::default());
    s.client = ClientOptions::parse(&["Family=inet6, M=S".to_string()]).unwrap();
    let r = send_with(&w, &s, "d.test", &["bob@d.test"]).await;
    delivered(&r);
    assert!(r.noqid_log.is_empty(), "{:?}", r.noqid_log);
    let seen = sessions(&w);
    assert_eq!(seen[0].after_tls, None);
    assert!(!seen[0].commands.iter().any(|c| c == "STARTTLS"));
}

#[tokio::test]
async fn a_failed_handshake_defers_or_with_fallback_retries_in_clear() {
    let w = tls_world(SinkTls::Broken, None).await;
    let r = send_tls(&w).await;
    assert_eq!(
        r.outcomes,
        vec![Outcome::Temporary {
            dsn: "4.7.0".into(),
            text: "Deferred: 454 4.7.0 TLS handshake failed.".into()
        }]
    );
    assert_eq!(r.noqid_log.len(), 2, "{:?}", r.noqid_log);
    assert!(
        r.noqid_log[0].starts_with("STARTTLS=client, error: connect failed=-1, reason="),
        "{:?}",
        r.noqid_log
    );
    assert_eq!(
        r.noqid_log[1],
        "ruleset=tls_server, arg1=SOFTWARE, relay=mx.d.test, reject=454 4.7.0 TLS handshake failed."
    );
    assert_eq!(sessions(&w).len(), 1);

    // TLSFallbacktoClear: the same address again at once, without STARTTLS.
    let files = TlsFiles {
        fallback_to_clear: true,
        ..TlsFiles::default()
    };
    let r = send_with(&w, &with_tls(&files), "d.test", &["bob@d.test"]).await;
    delivered(&r);
    let seen = sessions(&w);
    assert_eq!(seen.len(), 3, "one more failed session and one in clear");
    assert!(seen[1].commands.iter().any(|c| c == "STARTTLS"));
    assert!(!seen[2].commands.iter().any(|c| c == "STARTTLS"));
    assert!(seen[2].commands.iter().any(|c| c.starts_with("MAIL From:")));
}

fn authinfo(dir: &std::path::Path, entry: &str) -> Maps {
    let file = dir.join("authinfo");
    std::fs::write(&file, format!("{entry}\n")).unwrap();
    crate::makemap::build_from_text(&file).unwrap();
    let mut maps = Maps::default();
    maps.maps.insert(
        auth::MAP_NAME.into(),
        Map::new(auth::MAP_NAME, "hash", &file.display().to_string()),
    );
    maps
}

#[tokio::test]
async fn auth_plain_and_login_to_a_smart_host_over_tls() {
    let pki = TestPki::new(&["mx.d.test"]);
    let dir = tempfile::tempdir().unwrap();
    let w = tls_world(SinkTls::On(pki.server.clone()), Some(("user", "s3cret"))).await;
    let mut s = with_tls(&TlsFiles::default());
    s.log_level = 10;
    for (mech, n) in [("PLAIN", 0), ("LOGIN", 1)] {
        let entry = format!("AuthInfo:mx.d.test \"U:user\" \"P:s3cret\" \"M:{mech}\"");
        s.authinfo = Some(authinfo(dir.path(), &entry));
        let r = send_with(&w, &s, "d.test", &["bob@remote.test"]).await;
        delivered(&r);
        starttls_line(&r, "FAIL");
        assert_eq!(
            r.noqid_log.last().unwrap(),
            &format!("AUTH=client, relay=mx.d.test., mech={mech}, bits=0")
        );
        let seen = &sessions(&w)[n];
        assert_eq!(seen.authenticated, Some(format!("{mech} user")));
        assert_eq!(seen.auth_attempts, [(mech.to_string(), true)]);
    }
    // A wrong password: refused, and the mail still goes without AUTH.
    s.authinfo = Some(authinfo(
        dir.path(),
        "AuthInfo: \"U:user\" \"P:wrong\" \"M:PLAIN\"",
    ));
    let r = send_with(&w, &s, "d.test", &["bob@remote.test"]).await;
    delivered(&r);
    assert_eq!(
        r.noqid_log.last().unwrap(),
        "AUTH=client, relay=mx.d.test., mech=PLAIN, refused: 535 5.7.0 authentication failed"
    );
    assert_eq!(sessions(&w)[2].authenticated, None);
}

#[tokio::test]
async fn credentials_are_never_sent_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    // The server offers AUTH but no STARTTLS.
    let w = tls_world(SinkTls::Off, Some(("user", "s3cret"))).await;
    let mut s = with_tls(&TlsFiles::default());
    s.authinfo = Some(authinfo(
        dir.path(),
        "AuthInfo:mx.d.test \"U:user\" \"P:s3cret\"",
    ));
    let r = send_with(&w, &s, "d.test", &["bob@remote.test"]).await;
    delivered(&r);
    assert_eq!(
        r.noqid_log,
        ["AUTH=client, relay=mx.d.test., not sending credentials without TLS"]
    );
    let seen = sessions(&w);
    assert!(seen[0].auth_attempts.is_empty());
    assert!(!seen[0].commands.iter().any(|c| c.starts_with("AUTH")));

    // Modifier A: no AUTH even over TLS.
    let pki = TestPki::new(&["mx.d.test"]);
    let w = tls_world(SinkTls::On(pki.server.clone()), Some(("user", "s3cret"))).await;
    s.client = ClientOptions::parse(&["Family=inet6, M=A".to_string()]).unwrap();
    let r = send_with(&w, &s, "d.test", &["bob@remote.test"]).await;
    delivered(&r);
    assert!(sessions(&w)[0].auth_attempts.is_empty());
}

/// A sink on `[::1]` offering STARTTLS that answers it with `reply`.
async fn starttls_reply_world(reply: &str) -> World {
    let pki = TestPki::new(&["mx.d.test"]);
    let mut cfg = SinkConfig::new("T");
    cfg.tls = SinkTls::On(pki.server.clone());
    cfg.starttls_reply = reply.to_string();
    world(dual_stack_zone(), true, false, cfg).await
}

#[tokio::test]
async fn what_the_server_sends_in_clear_after_its_220_is_never_read_as_a_reply() {
    // A fake reply in the same packet as the 220: taken as the answer to the EHLO after the
    // handshake, it would shift every later reply by one.
    let w = starttls_reply_world("220 2.0.0 Ready to start TLS\r\n250 2.0.0 injected").await;
    let r = send_tls(&w).await;
    delivered(&r);
    starttls_line(&r, "FAIL");
}

#[tokio::test]
async fn a_refused_starttls_goes_on_in_clear_and_a_senseless_reply_defers() {
    let w = starttls_reply_world("454 4.7.0 TLS not available due to temporary reason").await;
    let r = send_tls(&w).await;
    delivered(&r);
    assert!(r.noqid_log.is_empty(), "{:?}", r.noqid_log);
    let seen = sessions(&w);
    let starttls = seen[0]
        .commands
        .iter()
        .position(|c| c == "STARTTLS")
        .unwrap();
    assert!(
        seen[0].commands[starttls + 1].starts_with("MAIL From:"),
        "{seen:?}"
    );

    let w = starttls_reply_world("250 2.0.0 what?").await;
    let r = send_tls(&w).await;
    assert_eq!(
        r.outcomes,
        vec![Outcome::Temporary {
            dsn: "4.7.0".into(),
            text: "Deferred: 454 4.7.0 STARTTLS failed.".into()
        }]
    );
    assert_eq!(
        r.noqid_log,
        ["ruleset=tls_server, arg1=PROTOCOL, relay=mx.d.test, reject=454 4.7.0 STARTTLS failed."]
    );
    assert!(
        !sessions(&w)[0]
            .commands
            .iter()
            .any(|c| c.starts_with("MAIL"))
    );
}

#[tokio::test]
async fn a_temporary_auth_failure_defers_as_sendmail_does() {
    let pki = TestPki::new(&["mx.d.test"]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SinkConfig::new("T");
    cfg.tls = SinkTls::On(pki.server.clone());
    cfg.auth = Some(("user".into(), "pw".into()));
    cfg.auth_tempfail = true;
    let w = world(dual_stack_zone(), true, false, cfg).await;
    let mut s = with_tls(&TlsFiles::default());
    s.authinfo = Some(authinfo(dir.path(), "AuthInfo: \"U:user\" \"P:pw\""));
    let r = send_with(&w, &s, "d.test", &["bob@remote.test"]).await;
    assert_eq!(
        r.outcomes,
        vec![Outcome::Temporary {
            dsn: "4.3.0".into(),
            text: "Deferred: Temporary AUTH failure".into()
        }]
    );
    assert_eq!(
        r.noqid_log.last().unwrap(),
        "AUTH=client, relay=mx.d.test., temporary failure, connection abort"
    );
    assert!(
        !sessions(&w)[0]
            .commands
            .iter()
            .any(|c| c.starts_with("MAIL"))
    );
}

#[test]
fn settings_take_the_tls_options_and_the_authinfo_map_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&["x.test"]);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let map = dir.path().join("authinfo");
    std::fs::write(&map, "AuthInfo:smart.test \"U:u\" \"P:p\"\n").unwrap();
    crate::makemap::build_from_text(&map).unwrap();
    let cf = format!(
        "V10\nDjoracle.example.test\nO CACertFile={}\nO TLSFallbacktoClear=True\nO LogLevel=12\nKauthinfo hash -o {}.db\n",
        ca.display(),
        map.display()
    );
    let config = Config::from_str("tls.cf", &cf, &[]).expect("config");
    let s = Settings::from_config(&config).unwrap();
    let tls = s.tls.as_ref().unwrap();
    assert!(tls.fallback_to_clear);
    assert!(tls.problems.is_empty(), "{:?}", tls.problems);
    assert_eq!(s.log_level, 12);
    let ip = "127.0.0.1".parse().unwrap();
    let mut log = Vec::new();
    let info = s.auth_for("smart.test.", ip, &mut log).unwrap();
    assert_eq!((info.authid.as_str(), info.password.as_str()), ("u", "p"));
    assert!(s.auth_for("other.test.", ip, &mut log).is_none());
    assert!(log.is_empty());

    // A bad entry is logged, not used. The map is rebuilt as an admin would (makemap): a
    // text file rewritten within the same clock tick as the `.db` would not count as newer.
    std::fs::write(&map, "AuthInfo:smart.test \"U:u\"\n").unwrap();
    crate::makemap::build_from_text(&map).unwrap();
    let s = Settings::from_config(&config).unwrap();
    assert!(s.auth_for("smart.test.", ip, &mut log).is_none());
    assert_eq!(
        log,
        ["AUTH=client, relay=smart.test., AuthInfo: no password (P:)"]
    );
}
