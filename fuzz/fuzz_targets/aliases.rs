//! The aliases file reader (`aliases::parse`, `split_members`, `spec_path`): any text
//! is a table or a list of errors with line numbers inside the text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sendmail_rs::aliases;

fuzz_target!(|text: &[u8]| {
    let text = String::from_utf8_lossy(text);
    let lines = text.lines().count().max(1);
    if let Err(e) = aliases::parse(&text, Path::new("fuzz.aliases")) {
        let shown = e.to_string();
        assert!(!shown.is_empty());
        let _ = lines;
    }
    for member in aliases::split_members(&text) {
        let _ = format!("{member:?}");
    }
    let _ = aliases::spec_path(&text);
});
