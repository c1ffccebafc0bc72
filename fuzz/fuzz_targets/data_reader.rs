//! The DATA reader (`smtp::data`): the input is fed whole and in two pieces cut at a
//! fuzzer-chosen point; both must end the same way, consume the same bytes and keep the
//! same body, and a kept body is never larger than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sendmail_rs::smtp::data::DataReader;

fuzz_target!(|input: &[u8]| {
    let Some((&cut, data)) = input.split_first() else {
        return;
    };
    let max = u64::from(cut) * 4;
    let mut whole = DataReader::new(max);
    let (used_whole, end_whole) = whole.feed(data);

    let mut split = DataReader::new(max);
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
    assert_eq!(split.exceeded(), whole.exceeded());
    let body = whole.into_body();
    if max > 0 {
        assert!(body.len() as u64 <= max, "kept {} bytes over {max}", body.len());
    }
    assert_eq!(split.into_body(), body);
});
