//! The map file reader and writer (`mapdb`): arbitrary bytes given to `MapDb::decode` are
//! refused or read consistently (never a panic, never an entry beyond the file), and entries
//! derived from the input, written by `mapdb::encode` as makemap does, read back the same
//! (every key found, the first of equal keys winning, the entries in key order).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sendmail_rs::mapdb::{self, MapDb};

fuzz_target!(|data: &[u8]| {
    decoded_whole_or_refused(data);
    round_trip(data);
});

/// A file that decodes is internally consistent: iteration is sorted and every key is found.
fn decoded_whole_or_refused(data: &[u8]) {
    let Ok(db) = MapDb::decode(data.to_vec()) else {
        return;
    };
    let entries: Vec<_> = db.iter().collect();
    assert_eq!(entries.len(), db.len());
    for pair in entries.windows(2) {
        assert!(
            pair[0].0 <= pair[1].0,
            "an accepted map is out of key order"
        );
    }
    for (i, (k, _)) in entries.iter().enumerate() {
        let first = entries.iter().position(|(k2, _)| k2 == k).unwrap_or(i);
        assert_eq!(
            db.get(k),
            Some(entries[first].1),
            "lookup disagrees with iteration"
        );
    }
}

/// Entries cut from the input at NUL bytes (key, value, key, value…) round-trip; one flipped
/// byte in the image is refused.
fn round_trip(data: &[u8]) {
    let parts: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    let entries: Vec<(Vec<u8>, Vec<u8>)> = parts
        .chunks(2)
        .map(|c| {
            (
                c[0].to_vec(),
                c.get(1).copied().unwrap_or_default().to_vec(),
            )
        })
        .collect();
    let image = mapdb::encode(entries.clone());
    let db = MapDb::decode(image.clone()).expect("what encode writes decodes");
    assert_eq!(db.len(), entries.len());
    for (k, _) in &entries {
        let first = entries
            .iter()
            .find(|(k2, _)| k2 == k)
            .map(|e| e.1.as_slice());
        assert_eq!(db.get(k), first, "round trip lost the first value of a key");
    }
    let mut sorted = entries;
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let back: Vec<(Vec<u8>, Vec<u8>)> = db.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    assert_eq!(back, sorted, "iteration differs from what was written");
    if let Some(&b) = data.first() {
        let mut damaged = image;
        let at = usize::from(b) % damaged.len();
        damaged[at] ^= 1 + (data.len() as u8 & 0x7f);
        assert!(
            MapDb::decode(damaged).is_err(),
            "a damaged map was accepted"
        );
    }
}
