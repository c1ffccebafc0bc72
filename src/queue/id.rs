//! sendmail-style queue ids (`6AO6rKe2007088`) and the Message-Id sendmail makes from them.
//!
//! In: the current time (UTC), the process id and a per-process sequence number. Out: the id
//! string used for queue file names and as the prefix of every mail-log line.
//!
//! # The format [sendmail 8.17 `queue.c:assign_queueid`; facts §3.2]
//!
//! `Y M D h m s S1 S2 P…`, each of the first eight a character of `0-9A-Za-x` indexed by its
//! value (0..59), then the pid as `%06d`:
//!
//! | pos | meaning                              | example `6AO6rKe2007088`    |
//! |-----|--------------------------------------|-----------------------------|
//! | Y   | `tm_year % 60` (years since 1900)    | `6` = 126 % 60 (2026)       |
//! | M   | `tm_mon`, 0-11                       | `A` = 10 (November)         |
//! | D   | day of month, 1-31                   | `O` = 24                    |
//! | h m s | hour, minute, second (UTC)         | `6` `r` `K` = 06:53:20      |
//! | S1 S2 | sequence 0..3599 in base 60        | `e2` = 40·60 + 2 = 2402     |
//! | P   | pid, `%06d`                          | `007088`                    |
//!
//! sendmail prints the pid with `%06d`, so a pid ≥ 10^6 simply gives a longer id (15 or more
//! characters); we do the same. The sequence starts at a random value per process and wraps
//! modulo 3600.
//!
//! # More than 3600 ids in one second
//!
//! sendmail forks one process per connection. In a process, the time in its ids is that of
//! the process's first id, the sequence counts up from a random start, and when all 3600
//! values are used the process `sleep(1)`s until the clock moves on and takes a new base
//! time. We hand out ids from many tasks of one long-lived process, thousands per second,
//! and must neither block the runtime nor repeat an id, so ours differ in two ways:
//!
//! * the time is the current second (a daemon's ids would otherwise all carry its start
//!   time); the sequence still counts up across seconds from a random start, as sendmail's;
//! * the first 3600 ids of a second are exactly sendmail's 14-character form; the n-th block
//!   of 3600 after that (n ≥ 1) appends a suffix of letters (`A-Za-z`, base 52 of n-1 with
//!   `A` = 0: `A`, `B`, …, `z`, `BA`, …). The prefix keeps sendmail's layout (anything that
//!   reads the time or pid out of an id still works), and as a pid is all digits, a letter
//!   suffix can never make an id equal to another process's id, whatever its pid length.
//!
//! Time never runs backwards inside one generator: if the clock steps back, ids keep the last
//! second used, which keeps them unique. (Past 2^20 ids in one second, the next second is
//! borrowed.)

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};

/// The 60 characters of a queue id digit, indexed by value [sendmail `QueueIdChars`].
const ID_CHARS: &[u8; 60] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwx";
/// Characters of the overflow suffix (never digits, so they cannot be mistaken for the pid).
const SUFFIX_CHARS: &[u8; 52] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Sequence values per second (two base-60 digits).
pub const SEQ_PER_SECOND: u32 = 3600;

/// The id for `time` (UTC), `pid` and sequence `seq` (taken modulo 3600): sendmail's exact
/// 14-character form for pids below 10^6.
pub fn format_queue_id(time: DateTime<Utc>, pid: u32, seq: u32) -> String {
    let seq = seq % SEQ_PER_SECOND;
    let digits = [
        // tm_year % 60, where tm_year counts from 1900
        (time.year() - 1900).rem_euclid(60) as u32,
        time.month0(),
        time.day(),
        time.hour(),
        time.minute(),
        // a leap second (chrono's 60th second) still fits in one base-60 digit only as 59
        time.second().min(59),
        seq / 60,
        seq % 60,
    ];
    let mut id = String::with_capacity(16);
    for d in digits {
        id.push(ID_CHARS[d as usize] as char);
    }
    id.push_str(&format!("{pid:06}"));
    id
}

/// The parts of a queue id, as [`parse_queue_id`] reads them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueIdParts {
    /// `tm_year % 60`.
    pub year_mod60: u32,
    /// 0-11.
    pub month0: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0..3599.
    pub seq: u32,
    pub pid: u32,
    /// Our overflow suffix (empty for every id sendmail itself could make).
    pub suffix: String,
}

/// Reads an id back into its parts; `None` if it is not of the form described above.
pub fn parse_queue_id(id: &str) -> Option<QueueIdParts> {
    let b = id.as_bytes();
    if b.len() < 14 || !b.is_ascii() {
        return None;
    }
    let mut v = [0u32; 8];
    for (i, slot) in v.iter_mut().enumerate() {
        *slot = ID_CHARS.iter().position(|&c| c == b[i])? as u32;
    }
    let rest = &id[8..];
    let pid_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    if pid_len < 6 {
        return None;
    }
    let suffix = &rest[pid_len..];
    if !suffix.bytes().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let pid = rest[..pid_len].parse().ok()?;
    let (month0, day, hour, minute) = (v[1], v[2], v[3], v[4]);
    if month0 > 11 || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    Some(QueueIdParts {
        year_mod60: v[0],
        month0,
        day,
        hour,
        minute,
        second: v[5],
        seq: v[6] * 60 + v[7],
        pid,
        suffix: suffix.to_string(),
    })
}

/// sendmail's Message-Id for a message it creates: `<YYYYMMDDhhmm.<qid>@<host>>`, time in UTC
/// (e.g. `<202611240653.6AO6rKe2007088@oracle.example.test>`) [facts §3.2].
pub fn message_id(now: DateTime<Utc>, qid: &str, host: &str) -> String {
    format!("<{}.{qid}@{host}>", now.format("%Y%m%d%H%M"))
}

/// Hands out queue ids; shared by every session of one process (lock-free).
#[derive(Debug)]
pub struct QueueIdGen {
    /// Packed state, see [`Packed`].
    state: AtomicU64,
}

/// The generator's state in one atomic word: the Unix second of the last id (32 bits), the
/// sequence value that second started at (12 bits, 0..3599) and the index of the last id
/// within that second (20 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    sec: u64,
    base: u64,
    index: u64,
}

const INDEX_BITS: u32 = 20;
const INDEX_MAX: u64 = (1 << INDEX_BITS) - 1;

impl Packed {
    fn pack(self) -> u64 {
        (self.sec << 32) | (self.base << INDEX_BITS) | self.index
    }

    fn unpack(v: u64) -> Packed {
        Packed {
            sec: v >> 32,
            base: (v >> INDEX_BITS) & 0xfff,
            index: v & INDEX_MAX,
        }
    }

    /// The state after handing out one more id at second `now`.
    fn advance(self, now: u64) -> Packed {
        let seq = u64::from(SEQ_PER_SECOND);
        // the next second's sequence carries on from this one's, as sendmail's counter does
        let carry_on = (self.base + self.index + 1) % seq;
        if now > self.sec {
            Packed {
                sec: now,
                base: carry_on,
                index: 0,
            }
        } else if self.index < INDEX_MAX {
            Packed {
                index: self.index + 1,
                ..self
            }
        } else {
            // 2^20 ids in one second: borrow the next second rather than repeat an id.
            Packed {
                sec: self.sec + 1,
                base: carry_on,
                index: 0,
            }
        }
    }
}

impl Default for QueueIdGen {
    fn default() -> Self {
        QueueIdGen::new()
    }
}

impl QueueIdGen {
    /// A generator whose sequence starts at a random value, like sendmail's.
    pub fn new() -> QueueIdGen {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_i64(Utc::now().timestamp_nanos_opt().unwrap_or_default());
        QueueIdGen::with_offset((h.finish() % u64::from(SEQ_PER_SECOND)) as u32)
    }

    /// A generator whose first id has sequence `offset` (mod 3600); for tests.
    pub fn with_offset(offset: u32) -> QueueIdGen {
        // "the id before the first" sits at second 0, so the first real second starts at
        // `offset`
        let before = (u64::from(offset % SEQ_PER_SECOND) + u64::from(SEQ_PER_SECOND) - 1)
            % u64::from(SEQ_PER_SECOND);
        let start = Packed {
            sec: 0,
            base: before,
            index: 0,
        };
        QueueIdGen {
            state: AtomicU64::new(start.pack()),
        }
    }

    /// The next id (unique within this process), for the current time and pid.
    pub fn next_id(&self) -> String {
        self.next_id_at(Utc::now(), std::process::id())
    }

    /// The next id as if the clock read `now` and the process id were `pid`.
    pub fn next_id_at(&self, now: DateTime<Utc>, pid: u32) -> String {
        let now_s = now.timestamp().clamp(1, i64::from(u32::MAX)) as u64;
        let mut cur = self.state.load(Ordering::Relaxed);
        let got = loop {
            let next = Packed::unpack(cur).advance(now_s);
            match self.state.compare_exchange_weak(
                cur,
                next.pack(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break next,
                Err(actual) => cur = actual,
            }
        };
        let time = Utc.timestamp_opt(got.sec as i64, 0).single().unwrap_or(now);
        let seq = (got.base + got.index) % u64::from(SEQ_PER_SECOND);
        let mut id = format_queue_id(time, pid, seq as u32);
        let block = got.index / u64::from(SEQ_PER_SECOND);
        if block > 0 {
            push_suffix(&mut id, block - 1);
        }
        id
    }
}

/// Appends `k` in base 52 over [`SUFFIX_CHARS`] (`A` = 0), most significant first.
fn push_suffix(id: &mut String, mut k: u64) {
    let mut digits = Vec::new();
    loop {
        digits.push(SUFFIX_CHARS[(k % 52) as usize]);
        k /= 52;
        if k == 0 {
            break;
        }
    }
    id.extend(digits.iter().rev().map(|&c| c as char));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn the_oracle_example_round_trips() {
        // seq "e2" = 40*60 + 2
        let id = format_queue_id(t(2026, 11, 24, 6, 53, 20), 7088, 2402);
        assert_eq!(id, "6AO6rKe2007088");
        let p = parse_queue_id(&id).unwrap();
        assert_eq!(
            p,
            QueueIdParts {
                year_mod60: 6,
                month0: 10,
                day: 24,
                hour: 6,
                minute: 53,
                second: 20,
                seq: 2402,
                pid: 7088,
                suffix: String::new(),
            }
        );
    }

    #[test]
    fn more_oracle_ids_from_the_maillog() {
        // 6AO7Qs8t026926: 07:26:54, seq "8t" = 8*60+55
        assert_eq!(
            format_queue_id(t(2026, 11, 24, 7, 26, 54), 26926, 8 * 60 + 55),
            "6AO7Qs8t026926"
        );
        // year 2000 is tm_year 100 -> 40 -> 'e'; January is '0'; the 1st is '1'
        assert_eq!(
            format_queue_id(t(2000, 1, 1, 0, 0, 0), 1, 0),
            "e0100000000001"
        );
    }

    #[test]
    fn pids_of_a_million_and_more_make_a_longer_id() {
        let id = format_queue_id(t(2026, 11, 24, 6, 53, 20), 4_194_303, 0);
        assert_eq!(id, "6AO6rK004194303");
        assert_eq!(parse_queue_id(&id).unwrap().pid, 4_194_303);
    }

    #[test]
    fn parse_rejects_what_is_not_an_id() {
        for bad in [
            "",
            "NOQUEUE",
            "6AO6rKe2",
            "6AO6rKe20070",
            "6AO6rKe2007088!",
            "6CO6rKe2007088",
        ] {
            assert_eq!(parse_queue_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_sequence_starts_at_the_offset_and_wraps() {
        let g = QueueIdGen::with_offset(3599);
        let now = t(2026, 11, 24, 6, 53, 20);
        assert_eq!(g.next_id_at(now, 7088), "6AO6rKxx007088");
        assert_eq!(g.next_id_at(now, 7088), "6AO6rK00007088");
        // a new second carries the sequence on
        let next_second = t(2026, 11, 24, 6, 53, 21);
        assert_eq!(g.next_id_at(next_second, 7088), "6AO6rL01007088");
        assert_eq!(
            g.next_id_at(t(2026, 11, 24, 6, 54, 0), 7088),
            "6AO6s002007088"
        );
    }

    #[test]
    fn ten_thousand_ids_in_one_second_are_unique_and_keep_the_prefix() {
        let g = QueueIdGen::with_offset(17);
        let now = t(2026, 11, 24, 6, 53, 20);
        let ids: Vec<String> = (0..10_000).map(|_| g.next_id_at(now, 7088)).collect();
        let set: HashSet<&String> = ids.iter().collect();
        assert_eq!(set.len(), ids.len());
        assert!(ids[..3600].iter().all(|i| i.len() == 14));
        assert!(ids[3600].ends_with("007088A"), "{}", ids[3600]);
        assert!(ids[7200].ends_with("007088B"), "{}", ids[7200]);
        for id in &ids {
            let p = parse_queue_id(id).unwrap();
            assert_eq!((p.hour, p.minute, p.second, p.pid), (6, 53, 20, 7088));
        }
    }

    #[test]
    fn the_suffix_is_bijective_base_52() {
        let mut s = String::new();
        push_suffix(&mut s, 0);
        push_suffix(&mut s, 51);
        push_suffix(&mut s, 52);
        assert_eq!(s, "AzBA");
    }

    #[test]
    fn past_a_million_ids_in_one_second_the_next_second_is_borrowed() {
        let full = Packed {
            sec: 5,
            base: 7,
            index: INDEX_MAX,
        };
        assert_eq!(
            full.advance(5),
            Packed {
                sec: 6,
                base: (7 + INDEX_MAX + 1) % 3600,
                index: 0
            }
        );
        assert_eq!(Packed::unpack(full.pack()), full);
    }

    #[test]
    fn a_clock_stepping_back_does_not_repeat_ids() {
        let g = QueueIdGen::with_offset(0);
        let a = g.next_id_at(t(2026, 11, 24, 6, 53, 20), 1);
        let b = g.next_id_at(t(2026, 11, 24, 6, 53, 19), 1);
        assert_ne!(a, b);
        assert_eq!(&b[..6], "6AO6rK");
    }

    #[test]
    fn ids_from_many_threads_are_unique() {
        let g = std::sync::Arc::new(QueueIdGen::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..5000).map(|_| g.next_id()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for id in h.join().unwrap() {
                assert!(all.insert(id));
            }
        }
        assert_eq!(all.len(), 20_000);
    }

    #[test]
    fn message_id_is_sendmails() {
        assert_eq!(
            message_id(
                t(2026, 11, 24, 6, 53, 20),
                "6AO6rKe2007088",
                "oracle.example.test"
            ),
            "<202611240653.6AO6rKe2007088@oracle.example.test>"
        );
    }
}
