//! The real daemon after a crash that left a torn journal tail: it logs one
//! `queue recovery:` line for the cut, delivers what was acknowledged, and never delivers
//! anything from the torn bytes.
//!
//! The torn tails are the ones a crash or a power cut leaves after the last acknowledged
//! frame (see `src/queue/store.rs`): a real `Put` frame cut short, the same frame whole but
//! with a CRC that does not match (a sector that never reached the disk), a block of a batch
//! behind zeros. The frame copies carry another subject, so that a delivery from them would
//! show at the sink. Zeros alone are no damage: the daemon writes them ahead of its frames.

mod support;

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use sendmail_rs::queue::QueueId;
use sendmail_rs::queue::file::{self, Frame, FrameRead};
use support::dsn_sink::{Sink, relay_to, send, wait_for};

const ACKED: &str = "acknowledged-before-the-kill";
/// Same length as [`ACKED`], so the copied queue file keeps its layout.
const TORN: &str = "written-when-it-was-killed!!";

fn newest_segment(qdir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(qdir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("a journal segment")
}

/// The id and queue file of the last `Put` frame of `seg`, and the length of its frames.
fn last_put(seg: &[u8]) -> (QueueId, Vec<u8>, usize) {
    let (mut pos, mut last) = (0, None);
    while let FrameRead::Frame { frame, len } = file::read_frame(&seg[pos..]) {
        if let Frame::Put { id, file } = frame {
            last = Some((id, file.to_vec()));
        }
        pos += len;
    }
    assert!(
        seg[pos..].iter().all(|&b| b == 0),
        "the killed daemon left whole frames, then zeros"
    );
    let (id, file) = last.expect("a Put frame");
    (id, file, pos)
}

fn replace(hay: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = hay.to_vec();
    let mut i = 0;
    let mut n = 0;
    while let Some(at) = out[i..]
        .windows(from.len())
        .position(|w| w == from.as_bytes())
    {
        out[i + at..i + at + from.len()].copy_from_slice(to.as_bytes());
        i += at + from.len();
        n += 1;
    }
    assert!(n > 0, "{from:?} is in the queue file");
    out
}

/// Queues one message, SIGKILLs the daemon, writes `tear(the message's Put frame,
/// the same frame with another subject)` after the last frame of the newest segment (over
/// the zeroed bytes the daemon keeps ahead of its frames, and past them), starts a daemon on
/// the same queue and checks the recovery line (`reported`) and what reaches the sink.
fn crash_tear_and_restart(tear: impl Fn(&[u8], &[u8]) -> Vec<u8>, reported: bool) {
    let sink = Sink::start();
    let (mut first, _) = relay_to(&sink, &["-O", "DeliveryMode=queueonly"]);
    send(
        &mut first,
        "<sender@client.example.test>",
        &["<rcpt@remote.example.test>"],
        ACKED,
    );
    first.signal(Signal::SIGKILL);
    first.child.as_mut().unwrap().wait().unwrap();

    let qdir = first.queue_dir();
    let seg_path = newest_segment(&qdir);
    let seg = std::fs::read(&seg_path).unwrap();
    let (id, queue_file, frames) = last_put(&seg);
    let mut real = Vec::new();
    file::put_frame(&mut real, &id, &queue_file);
    let mut torn = Vec::new();
    file::put_frame(&mut torn, &id, &replace(&queue_file, ACKED, TORN));
    let mut damaged = seg[..frames].to_vec();
    damaged.extend_from_slice(&tear(&real, &torn));
    if damaged.len() < seg.len() {
        damaged.extend_from_slice(&seg[damaged.len()..]);
    }
    let dropped = damaged.len() - frames;
    std::fs::write(&seg_path, &damaged).unwrap();

    let queue = format!("QueueDirectory={}", qdir.display());
    let (mut second, _) = relay_to(&sink, &["-O", &queue, "-q1h"]);
    // The queue run at start delivers the acknowledged message, once, and nothing else.
    let log = second.wait_log(" to=<rcpt@remote.example.test>");
    let seg_name = seg_path.file_name().unwrap().to_str().unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("queue recovery: "))
        .collect();
    if reported {
        assert_eq!(lines.len(), 1, "{log}");
        let want = format!("queue recovery: {seg_name}: {dropped} unacknowledged bytes dropped (");
        assert!(lines[0].contains(&want), "{want}\n{}", lines[0]);
    } else {
        assert!(lines.is_empty(), "zeros are no damage:\n{log}");
    }
    assert_eq!(
        std::fs::read(&seg_path).map(|b| b.len()).unwrap_or(frames),
        frames,
        "the segment is cut back to its last whole frame"
    );
    sink.wait_messages(1);
    let cf = second.cf.display().to_string();
    wait_for(
        || {
            let out = support::run(&["-bp", "-C", &cf, "-O", &queue]);
            String::from_utf8_lossy(&out.stdout)
                .contains("is empty")
                .then_some(())
        },
        "an empty queue",
    );
    second.stop();
    let got = sink.messages();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].contains(&format!("Subject: {ACKED}")), "{}", got[0]);
    assert!(!got.iter().any(|m| m.contains(TORN)), "{got:#?}");
}

#[test]
fn a_frame_cut_short_after_the_last_acknowledged_one_is_dropped_at_start() {
    crash_tear_and_restart(
        |_, torn| {
            let at = torn
                .windows(TORN.len())
                .position(|w| w == TORN.as_bytes())
                .unwrap();
            torn[..at + TORN.len() + 5].to_vec()
        },
        true,
    );
}

#[test]
fn a_whole_frame_whose_crc_does_not_match_is_dropped_at_start() {
    crash_tear_and_restart(
        |real, torn| {
            // The torn copy's bytes under the real frame's header (and CRC).
            let mut t = torn.to_vec();
            t[..file::FRAME_HEADER_LEN].copy_from_slice(&real[..file::FRAME_HEADER_LEN]);
            t
        },
        true,
    );
}

#[test]
fn zeros_after_the_last_frame_are_the_end_and_bytes_after_them_are_dropped() {
    // Zeros alone are what the daemon writes ahead of its frames: the end, no damage.
    crash_tear_and_restart(|_, _| vec![0; 300 << 10], false);
    // A block of a batch that reached the disk without the blocks before it.
    crash_tear_and_restart(
        |_, torn| {
            let mut t = vec![0; 8192];
            t.extend_from_slice(&torn[..100]);
            t
        },
        true,
    );
}
