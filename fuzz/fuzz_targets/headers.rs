//! The header parsing done at receipt and for `sendmail -t`: the header scan that finds
//! `Message-Id:` and the end of the header block, the Message-Id/Date addition, and the
//! RFC 5322 address-list splitter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sendmail_rs::headers;
use sendmail_rs::receive;
use sendmail_rs::submit;

fuzz_target!(|body: &[u8]| {
    let (end, msgid) = headers::scan(body);
    assert!(end <= body.len());
    let (added, id) = receive::id_and_date(body, "6AO6rKe2007088", "fuzz.example.test");
    if msgid.is_none() {
        assert!(added.starts_with("Message-Id: "), "no Message-Id added");
    }
    assert!(id.is_some());
    let _ = headers::has(&body[..end], "date");
    for a in submit::parse_address_list(&String::from_utf8_lossy(body)) {
        assert!(!a.is_empty());
    }
});
