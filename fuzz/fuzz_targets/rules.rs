//! The rules tokenizer and matcher through address test mode: a hostile address is
//! rewritten by the oracle's rulesets 3,0 and check_rcpt, as `sendmail -bt` would.
//! Nothing panics and every run finishes (loop, recursion and step limits).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sendmail_rs::rules::bt::Session;
use sendmail_rs::rules::cf::{HostInfo, load};

static CF: &str = include_str!("../../tests/fixtures/oracle.cf");

fn engine() -> &'static (
    sendmail_rs::rules::rewrite::Engine,
    sendmail_rs::rules::cf::CfExtras,
) {
    static E: OnceLock<(
        sendmail_rs::rules::rewrite::Engine,
        sendmail_rs::rules::cf::CfExtras,
    )> = OnceLock::new();
    E.get_or_init(|| {
        let host = HostInfo {
            hostname: "oracle.example.test".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
        };
        load(CF.as_bytes(), "oracle.cf", &host).expect("oracle.cf loads")
    })
}

fuzz_target!(|addr: &[u8]| {
    // One -bt line per ruleset list; a newline in the input would start another command.
    let addr: Vec<u8> = addr
        .iter()
        .map(|&b| if b == b'\n' { b' ' } else { b })
        .collect();
    let (e, x) = engine();
    let mut session = Session::new(e.clone(), x.clone());
    let mut input = Vec::new();
    for rs in [&b"3,0 "[..], b"check_rcpt ", b"check_mail "] {
        input.extend_from_slice(rs);
        input.extend_from_slice(&addr);
        input.push(b'\n');
    }
    let mut out = Vec::new();
    session.run(input.as_slice(), &mut out);
    assert!(out.starts_with(b"ADDRESS TEST MODE"));
});
