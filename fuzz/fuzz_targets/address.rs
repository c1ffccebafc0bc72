//! The address parser: sendmail's `prescan` tokenizer, `crackaddr`, and `parseaddr`
//! (rulesets 3 and 0 of the oracle's sendmail.cf, then the mailer triple), for
//! recipients and senders. Nothing panics and every run finishes (loop and step limits).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sendmail_rs::rules::address::{Use, crackaddr, parseaddr};
use sendmail_rs::rules::bt::Session;
use sendmail_rs::rules::cf::{HostInfo, load};
use sendmail_rs::rules::token::{Table, prescan};

static CF: &str = include_str!("../../tests/fixtures/oracle.cf");

fn session() -> &'static Session {
    static S: OnceLock<Session> = OnceLock::new();
    S.get_or_init(|| {
        let host = HostInfo {
            hostname: "oracle.example.test".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
        };
        let (mut engine, extras) =
            load(CF.as_bytes(), "oracle.cf", &host).expect("oracle.cf loads");
        engine.trace = false;
        let mut s = Session::new(engine, extras);
        s.engine.trace = false;
        s
    })
}

fuzz_target!(|addr: &[u8]| {
    let s = session();
    let _ = prescan(&s.engine.tables, addr, None, Table::Ext, false);
    let _ = crackaddr(addr);
    for sender in [false, true] {
        let mut e = s.engine.clone();
        let how = Use {
            sender,
            header: false,
        };
        let _ = parseaddr(&mut e, &s.mailers, addr, how);
    }
});
