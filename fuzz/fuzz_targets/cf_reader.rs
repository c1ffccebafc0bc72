//! The sendmail.cf reader (`config::from_reader`) and the ruleset engine built from what it
//! read (`rules::cf::load`, which goes through the same reader). Any text either loads or is
//! refused with errors; nothing panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sendmail_rs::config;
use sendmail_rs::rules::cf::{HostInfo, load};

fuzz_target!(|text: &[u8]| {
    if let Err(errors) = config::from_reader(Path::new("fuzz.cf"), text, &[]) {
        assert!(!errors.is_empty(), "refused without an error");
        for e in &errors {
            let _ = e.to_string();
        }
    }
    let host = HostInfo {
        hostname: "fuzz.example.test".into(),
        addresses: vec!["127.0.0.1".parse().unwrap()],
    };
    let _ = load(text, "fuzz.cf", &host);
});
