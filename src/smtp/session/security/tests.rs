//! STARTTLS and AUTH in the sans-IO session: what is offered when, the exchanges, and the
//! state after a handshake.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::super::tests::logs;
use super::super::*;
use super::*;
use crate::tls::{TlsInfo, Verify};

struct AcceptAll;

impl Policy for AcceptAll {
    fn check_mail(&self, _: &PolicyContext<'_>, _: &Address, _: &MailParams) -> Decision {
        Decision::Accept
    }
    fn check_rcpt(&self, ctx: &PolicyContext<'_>, _: &Address, _: &RcptParams) -> Decision {
        // Relaying for the authenticated only, as the relay rules do.
        if ctx.auth.is_some() {
            Decision::Accept
        } else {
            Decision::Reject {
                reply: reply::relaying_denied("<x@elsewhere.test>"),
                log: None,
            }
        }
    }
}

/// Knows one user: alice / secret.
struct OneUser;

impl Authenticator for OneUser {
    fn verify(&self, user: &str, password: &str) -> bool {
        user == "alice" && password == "secret"
    }
}

fn session(flags: &str, ip: &str, needs_tls: bool) -> Session {
    let ip: IpAddr = ip.parse().unwrap();
    Session::new(SessionContext {
        hostname: "mx.example.test".into(),
        greeting: "mx.example.test ready".into(),
        daemon_name: "MSA".into(),
        daemon_flags: flags.into(),
        client: ClientInfo {
            ip: Some(ip),
            port: 4000,
            name: None,
        },
        max_message_size: 0,
        max_recipients: 0,
        max_headers_length: 32768,
        seven_bit_input: false,
        features: Features::default(),
        privacy: Privacy::default(),
        log_level: 9,
        version: "0.1.0".into(),
        help: None,
        connect_reject: None,
        policy: Arc::new(AcceptAll),
        ids: Arc::new(QueueIdGen::new()),
        security: Security {
            starttls: true,
            authenticator: Some(Arc::new(OneUser)),
            mechanisms: crate::auth::Mechanism::allowed(None),
            auth_needs_tls: needs_tls,
            failure_limit: None,
        },
        macros: Default::default(),
        bad_rcpt_throttle: 0,
    })
}

fn tls13() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
        cipher_bits: 256,
        alg_bits: 256,
        verify: Verify::No,
    }
}

fn say(s: &mut Session, line: &str) -> Vec<Action> {
    s.handle(line.as_bytes(), false)
}

fn replies(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply(r) => Some(String::from_utf8(r.to_bytes()).unwrap()),
            _ => None,
        })
        .collect()
}

fn plain(user: &str, pw: &str) -> String {
    format!("AUTH PLAIN {}", STANDARD.encode(format!("\0{user}\0{pw}")))
}

#[test]
fn ehlo_offers_auth_then_starttls_and_starttls_asks_the_driver_for_a_handshake() {
    let mut s = session("", "127.0.0.1", false);
    let ehlo = replies(&say(&mut s, "EHLO c.example.test")).concat();
    let auth = ehlo.find("250-AUTH LOGIN PLAIN\r\n").expect("AUTH");
    let tls = ehlo.find("250-STARTTLS\r\n").expect("STARTTLS");
    assert!(auth < tls && tls < ehlo.find("250 HELP").unwrap(), "{ehlo}");
    let out = say(&mut s, "STARTTLS");
    assert_eq!(replies(&out), ["220 2.0.0 Ready to start TLS\r\n"]);
    assert_eq!(out.last(), Some(&Action::StartTls));
}

#[test]
fn after_the_handshake_the_dialogue_restarts_and_the_protocol_gains_an_s() {
    let mut s = session("", "127.0.0.1", false);
    say(&mut s, "EHLO c.example.test");
    say(&mut s, "STARTTLS");
    let out = s.tls_started(tls13());
    assert_eq!(
        logs(&out),
        [
            "STARTTLS=server, relay=[127.0.0.1], version=TLSv1.3, verify=NO, \
          cipher=TLS_AES_256_GCM_SHA384, bits=256/256"
        ]
    );
    assert_eq!(s.protocol(), "SMTP", "EHLO is needed again");
    let ehlo = replies(&say(&mut s, "EHLO c.example.test")).concat();
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(s.protocol(), "ESMTPS");
    assert_eq!(
        replies(&say(&mut s, "STARTTLS")),
        ["503 5.5.0 TLS already active\r\n"]
    );
}

#[test]
fn without_tls_a_client_that_needs_it_is_offered_no_auth() {
    let mut s = session("", "192.0.2.7", true);
    let ehlo = replies(&say(&mut s, "EHLO c.example.test")).concat();
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert_eq!(
        replies(&say(&mut s, &plain("alice", "secret"))),
        ["503 5.3.3 AUTH not available\r\n"]
    );
    s.tls_started(tls13());
    let ehlo = replies(&say(&mut s, "EHLO c.example.test")).concat();
    assert!(ehlo.contains("250-AUTH LOGIN PLAIN\r\n"), "{ehlo}");
    assert_eq!(
        replies(&say(&mut s, &plain("alice", "secret"))),
        ["235 2.0.0 OK Authenticated\r\n"]
    );
    assert_eq!(s.protocol(), "ESMTPSA");
}

#[test]
fn login_takes_two_lines_and_a_second_auth_is_refused() {
    let mut s = session("", "::1", false);
    assert_eq!(
        replies(&say(&mut s, "AUTH LOGIN")),
        ["334 VXNlcm5hbWU6\r\n"]
    );
    assert_eq!(
        replies(&say(&mut s, &STANDARD.encode("alice"))),
        ["334 UGFzc3dvcmQ6\r\n"]
    );
    let out = say(&mut s, &STANDARD.encode("secret"));
    assert_eq!(replies(&out), ["235 2.0.0 OK Authenticated\r\n"]);
    assert_eq!(
        logs(&out),
        ["AUTH=server, relay=[IPv6:0:0:0:0:0:0:0:1], authid=alice, mech=LOGIN, bits=0"]
    );
    assert_eq!(
        s.authenticated().map(|a| a.authen.as_str()),
        Some("alice"),
        "before EHLO too, as sendmail"
    );
    assert_eq!(
        replies(&say(&mut s, "AUTH PLAIN")),
        ["503 5.5.0 Already Authenticated\r\n"]
    );
}

#[test]
fn refusals_name_the_reason() {
    let mut s = session("", "127.0.0.1", false);
    assert_eq!(
        replies(&say(&mut s, "AUTH")),
        ["501 5.5.2 AUTH mechanism must be specified\r\n"]
    );
    assert_eq!(
        replies(&say(&mut s, "AUTH CRAM-MD5")),
        ["504 5.3.3 AUTH mechanism CRAM-MD5 not available\r\n"]
    );
    assert_eq!(replies(&say(&mut s, "AUTH PLAIN")), ["334 \r\n"]);
    assert_eq!(replies(&say(&mut s, "*")), ["501 5.0.0 AUTH aborted\r\n"]);
    say(&mut s, "MAIL FROM:<a@c.example.test>");
    assert_eq!(
        replies(&say(&mut s, &plain("alice", "secret"))),
        ["503 5.5.0 AUTH not permitted during a mail transaction\r\n"]
    );
}

#[test]
fn failures_are_logged_delayed_more_each_time_and_the_third_ends_the_session() {
    let mut s = session("", "127.0.0.1", false);
    let first = say(&mut s, &plain("alice", "guess"));
    assert_eq!(
        logs(&first),
        [
            "AUTH failure (PLAIN): authentication failure (-13) SASL(-13): authentication \
          failure: Password verification failed, user=alice, relay=[127.0.0.1]"
        ]
    );
    assert!(first.contains(&Action::Delay(Duration::from_secs(1))));
    assert_eq!(replies(&first), ["535 5.7.0 authentication failed\r\n"]);
    let second = say(&mut s, &plain("bob", "secret"));
    assert!(second.contains(&Action::Delay(Duration::from_secs(2))));
    let third = say(&mut s, &plain("alice", "guess"));
    assert_eq!(
        replies(&third),
        ["421 4.7.0 mx.example.test Too many AUTH failures; closing connection\r\n"]
    );
    assert!(s.is_closed());
}

#[test]
fn m_a_needs_auth_before_mail_and_auth_then_permits_relaying() {
    let mut s = session("Ea", "127.0.0.1", false);
    say(&mut s, "EHLO c.example.test");
    assert_eq!(
        replies(&say(&mut s, "MAIL FROM:<a@c.example.test>")),
        ["530 5.7.0 Authentication required\r\n"]
    );
    say(&mut s, &plain("alice", "secret"));
    assert_eq!(
        replies(&say(&mut s, "MAIL FROM:<a@c.example.test>")),
        ["250 2.1.0 <a@c.example.test>... Sender ok\r\n"]
    );
    assert_eq!(
        replies(&say(&mut s, "RCPT TO:<x@elsewhere.test>")),
        ["250 2.1.5 <x@elsewhere.test>... Recipient ok\r\n"]
    );
    assert_eq!(s.protocol(), "ESMTPA");
}

#[test]
fn m_capital_a_and_s_turn_both_off() {
    let mut s = session("SA", "127.0.0.1", false);
    let ehlo = replies(&say(&mut s, "EHLO c.example.test")).concat();
    assert!(
        !ehlo.contains("AUTH") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    assert_eq!(
        replies(&say(&mut s, "STARTTLS")),
        ["503 5.5.0 TLS not available\r\n"]
    );
    assert_eq!(
        replies(&say(&mut s, "AUTH PLAIN")),
        ["503 5.3.3 AUTH not available\r\n"]
    );
}

#[test]
fn credentials_never_reach_the_log() {
    assert_eq!(
        loggable("AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
        "AUTH PLAIN ***"
    );
    assert_eq!(loggable("auth login"), "auth login");
    assert_eq!(loggable("MAIL FROM:<a@b>"), "MAIL FROM:<a@b>");
}

#[test]
fn login_refusals_use_the_login_plug_ins_words() {
    let mut s = session("", "127.0.0.1", false);
    say(&mut s, "AUTH LOGIN");
    say(&mut s, &STANDARD.encode("alice"));
    let refused = say(&mut s, &STANDARD.encode("guess"));
    assert_eq!(
        logs(&refused),
        [
            "AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication \
          failure: checkpass failed, user=alice, relay=[127.0.0.1]"
        ]
    );
}

#[test]
fn every_auth_command_counts_and_the_one_past_the_mechanisms_is_logged_as_an_attack() {
    // Two mechanisms offered: the limit is three AUTH commands (sendmail: n_mechs + 1).
    let mut s = session("", "127.0.0.1", false);
    for cmd in ["AUTH CRAM-MD5", "AUTH"] {
        assert_eq!(logs(&say(&mut s, cmd)), Vec::<String>::new(), "{cmd}");
    }
    let third = say(&mut s, &plain("alice", "secret"));
    assert_eq!(
        logs(&third)[0],
        "[127.0.0.1]: possible SMTP attack: command=AUTH, count=3"
    );
    assert!(third.contains(&Action::Delay(Duration::from_secs(1))));
    assert_eq!(replies(&third), ["235 2.0.0 OK Authenticated\r\n"]);
}

#[test]
fn an_initial_response_that_is_not_base64_is_refused_and_logged_as_sendmail_does() {
    let mut s = session("", "127.0.0.1", false);
    let out = say(&mut s, "AUTH PLAIN !!!notbase64");
    assert_eq!(
        replies(&out),
        ["501 5.5.4 cannot BASE64 decode '!!!notbase64'\r\n"]
    );
    assert_eq!(
        logs(&out),
        ["AUTH decode64 error [-5 for \"!!!notbase64\"], relay=[127.0.0.1]"]
    );
    // After a challenge the answer is sendmail's other wording, and nothing is logged.
    say(&mut s, "AUTH LOGIN");
    let out = say(&mut s, "###");
    assert_eq!(
        replies(&out),
        ["501 5.5.4 cannot decode AUTH parameter ###\r\n"]
    );
    assert!(logs(&out).is_empty());
}
