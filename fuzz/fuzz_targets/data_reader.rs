//! The DATA reader (`smtp::data`): the input is fed whole and in two pieces cut at a
//! fuzzer-chosen point; both must end the same way, consume the same bytes and keep the
//! same body, and a kept body is never larger than the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sendmail_rs::smtp::body::Limits;
use sendmail_rs::smtp::data::DataReader;

fuzz_target!(|input: &[u8]| {
    let Some((&cut, data)) = input.split_first() else {
        return;
    };
    let limits = Limits {
        max_size: u64::from(cut) * 4,
        max_headers: u64::from(cut) * 2,
        seven_bit: cut & 1 == 1,
    };
    let mut whole = DataReader::new(limits);
    let (used_whole, end_whole) = whole.feed(data);

    let mut split = DataReader::new(limits);
    let at = usize::from(cut).min(data.len());
    let (mut used, mut end) = split.feed(&data[..at]);
    if end.is_none() {
        let (more, e) = split.feed(&data[at..]);
        used += more;
        end = e;
    }
    assert_eq!(end, end_whole, "the cut changed how the body ended");
    assert_eq!(used, used_whole, "the cut changed the bytes consumed");
    assert!(used <= data.len());
    assert_eq!(split.size(), whole.size());
    let (split, whole) = (split.into_body(), whole.into_body());
    assert_eq!(split.exceeded(), whole.exceeded());
    assert_eq!(split.headers_exceeded(), whole.headers_exceeded());
    let body = whole.into_body();
    assert!(
        body.len() as u64 <= limits.size_limit(),
        "kept {} bytes over {}",
        body.len(),
        limits.size_limit()
    );
    assert_eq!(split.into_body(), body);
});
