//! The real daemon after a crash that left a torn journal tail: it logs one
//! `queue recovery:` line for the cut, delivers what was acknowledged, and never delivers
//! anything from the torn bytes.
//!
//! The torn tails are the ones a crash or a power cut leaves after the last acknowledged
//! frame (see `src/queue/store.rs`): a real `Put` frame cut short, the same frame whole but
//! with a CRC that does not match (a sector that never reached the disk), zeros. The frame
//! copies carry another subject, so that a delivery from them would show at the sink.

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

/// The id and queue file of the last `Put` frame of `seg`.
fn last_put(seg: &[u8]) -> (QueueId, Vec<u8>) {
    let (mut pos, mut last) = (0, None);
    while let FrameRead::Frame { frame, len } = file::read_frame(&seg[pos..]) {
        if let Frame::Put { id, file } = frame {
            last = Some((id, file.to_vec()));
        }
        pos += len;
    }
    assert_eq!(pos, seg.len(), "the killed daemon left whole frames");
    last.expect("a Put frame")
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

/// Queues one message, SIGKILLs the daemon, appends `tear(the message's Put frame with
/// another subject)` to the newest segment, starts a daemon on the same queue and checks
/// the recovery line and what reaches the sink.
fn crash_tear_and_restart(tear: impl Fn(&[u8], &[u8]) -> Vec<u8>) {
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
    let (id, queue_file) = last_put(&seg);
    let mut real = Vec::new();
    file::put_frame(&mut real, &id, &queue_file);
    let mut torn = Vec::new();
    file::put_frame(&mut torn, &id, &replace(&queue_file, ACKED, TORN));
    let tail = tear(&real, &torn);
    let mut damaged = seg.clone();
    damaged.extend_from_slice(&tail);
    std::fs::write(&seg_path, &damaged).unwrap();

    let queue = format!("QueueDirectory={}", qdir.display());
    let (mut second, _) = relay_to(&sink, &["-O", &queue, "-q1h"]);
    let log = second.wait_log("queue recovery: ");
    let line = log
        .lines()
        .find(|l| l.contains("queue recovery: "))
        .unwrap();
    let seg_name = seg_path.file_name().unwrap().to_str().unwrap();
    assert!(
        line.contains(&format!(
            "queue recovery: {seg_name}: {} unacknowledged bytes dropped (",
            tail.len()
        )),
        "{line}"
    );
    assert_eq!(log.matches("queue recovery: ").count(), 1, "{log}");
    assert_eq!(
        std::fs::read(&seg_path)
            .map(|b| b.len())
            .unwrap_or(seg.len()),
        seg.len(),
        "the segment is cut back to its last whole frame"
    );

    // The queue run at start delivers the acknowledged message, once, and nothing else.
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
    crash_tear_and_restart(|_, torn| {
        let at = torn
            .windows(TORN.len())
            .position(|w| w == TORN.as_bytes())
            .unwrap();
        torn[..at + TORN.len() + 5].to_vec()
    });
}

#[test]
fn a_whole_frame_whose_crc_does_not_match_is_dropped_at_start() {
    crash_tear_and_restart(|real, torn| {
        // The torn copy's bytes under the real frame's header (and CRC).
        let mut t = torn.to_vec();
        t[..file::FRAME_HEADER_LEN].copy_from_slice(&real[..file::FRAME_HEADER_LEN]);
        t
    });
}

#[test]
fn zeros_after_the_last_frame_are_dropped_at_start() {
    crash_tear_and_restart(|_, _| vec![0; 4096]);
}
