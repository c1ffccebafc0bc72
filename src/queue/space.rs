//! Disk protection for the queue: `MinFreeBlocks` at MAIL, and telling a full disk apart
//! from other commit failures.
//!
//! In: the queue directory, the `MinFreeBlocks` option and the size a client announced
//! (`MAIL FROM:<…> SIZE=n`, RFC 1870). Out: [`Space::Enough`] or [`Space::Low`] with the
//! figures for the log line; and [`is_disk_full`] for a [`QueueError`], which the receipt
//! path turns into `452 4.3.1 Insufficient system storage` instead of the generic `451`.
//!
//! sendmail 8.17 (`conf.c` `enoughdiskspace`, op.txt §4.10 "MinFreeBlocks"): the blocks
//! available to unprivileged users (`statvfs` `f_bavail`) on the queue's filesystem must be
//! at least `MinFreeBlocks`, plus the announced size in blocks; a check with neither a
//! minimum nor a size always passes. Too little space: `452 4.4.5 Insufficient disk space;
//! try again later` to MAIL (the client keeps the message and retries), and a log line. A
//! filesystem that cannot be asked counts as enough (sendmail does the same), so a
//! statvfs failure never refuses mail by itself.
//!
//! [`check_recent`] is [`check`] for every MAIL of a busy daemon: a figure at most
//! [`RECENT`] old is trusted only while it leaves at least [`RECENT_MARGIN`] bytes beyond
//! what is needed, so a refusal (and an acceptance near the limit) always rests on a fresh
//! statvfs, while a roomy queue costs one statvfs a second instead of one per MAIL (~1.4 %
//! of the daemon's CPU relaying to smtp-sink). A commit that meets a full disk anyway
//! answers `452 4.3.1` and loses nothing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::QueueError;

/// What [`check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Enough,
    /// Fewer blocks available than needed.
    Low {
        /// Blocks available to unprivileged users.
        available: u64,
        /// Blocks needed: `MinFreeBlocks` plus the announced size in blocks.
        needed: u64,
        /// The filesystem's block size in bytes.
        block_size: u64,
    },
}

/// The pure rule: `available` blocks of `block_size` bytes against `min_free` blocks plus a
/// message of `size` bytes (rounded up to whole blocks).
pub fn judge(available: u64, block_size: u64, min_free: u64, size: u64) -> Space {
    if min_free == 0 && size == 0 {
        return Space::Enough;
    }
    let size_blocks = size.div_ceil(block_size.max(1));
    let needed = min_free.saturating_add(size_blocks);
    if available < needed {
        Space::Low {
            available,
            needed,
            block_size,
        }
    } else {
        Space::Enough
    }
}

/// Asks the filesystem of `dir` (statvfs) and applies [`judge`]; [`Space::Enough`] when the
/// filesystem cannot be asked.
pub fn check(dir: &Path, min_free: u64, size: u64) -> Space {
    if min_free == 0 && size == 0 {
        return Space::Enough;
    }
    match nix::sys::statvfs::statvfs(dir) {
        Ok(st) => judge(
            st.blocks_available(),
            st.fragment_size().max(1),
            min_free,
            size,
        ),
        Err(_) => Space::Enough,
    }
}

/// How long a statvfs figure may serve [`check_recent`].
pub const RECENT: Duration = Duration::from_secs(1);
/// Bytes a recent figure must leave beyond the need to be trusted ([`check_recent`]):
/// more than a second of intake at any rate this daemon reaches.
pub const RECENT_MARGIN: u64 = 256 << 20;

/// The last statvfs of [`check_recent`]: directory, when, blocks available, block size.
static LAST: Mutex<Option<(PathBuf, Instant, u64, u64)>> = Mutex::new(None);

/// [`check`], reusing a statvfs at most [`RECENT`] old of the same directory when it left
/// [`RECENT_MARGIN`] bytes to spare beyond the need; otherwise asks the filesystem again.
pub fn check_recent(dir: &Path, min_free: u64, size: u64) -> Space {
    if min_free == 0 && size == 0 {
        return Space::Enough;
    }
    let now = Instant::now();
    {
        let last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((d, at, available, block_size)) = &*last
            && d == dir
            && now.duration_since(*at) < RECENT
        {
            let bs = (*block_size).max(1);
            let margin = RECENT_MARGIN.div_ceil(bs);
            let needed = min_free.saturating_add(size.div_ceil(bs));
            if *available >= needed.saturating_add(margin) {
                return Space::Enough;
            }
        }
    }
    match nix::sys::statvfs::statvfs(dir) {
        Ok(st) => {
            let (available, block_size) = (st.blocks_available(), st.fragment_size().max(1));
            *LAST.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((dir.to_path_buf(), now, available, block_size));
            judge(available, block_size, min_free, size)
        }
        Err(_) => Space::Enough,
    }
}

/// Whether a queue error is the disk (or the queue owner's quota) being full.
pub fn is_disk_full(e: &QueueError) -> bool {
    match e {
        QueueError::Io { source, .. } => {
            matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) || matches!(
                source.raw_os_error(),
                Some(nix::libc::ENOSPC | nix::libc::EDQUOT)
            )
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_figure_never_hides_too_little_space() {
        let dir = std::env::temp_dir();
        let st = nix::sys::statvfs::statvfs(&dir).expect("statvfs of the temp dir");
        let available = st.blocks_available();
        // An answer of plenty, kept for the next checks ...
        assert_eq!(check_recent(&dir, 1, 0), Space::Enough);
        assert_eq!(check_recent(&dir, 1, 0), Space::Enough);
        // ... is not trusted for a need it does not clear by RECENT_MARGIN: a need beyond
        // what the disk has is refused at once (the figure asked again, not the cached one).
        let too_much = available.saturating_add(1 << 40);
        assert!(matches!(
            check_recent(&dir, too_much, 0),
            Space::Low { needed, .. } if needed == too_much
        ));
        assert!(matches!(
            check_recent(&dir, 1, u64::MAX / 2),
            Space::Low { .. }
        ));
        assert_eq!(check_recent(&dir, 0, 0), Space::Enough);
    }

    #[test]
    fn no_minimum_and_no_size_always_passes() {
        assert_eq!(judge(0, 4096, 0, 0), Space::Enough);
    }

    #[test]
    fn min_free_blocks_must_be_available() {
        assert_eq!(judge(100, 4096, 100, 0), Space::Enough);
        assert_eq!(
            judge(99, 4096, 100, 0),
            Space::Low {
                available: 99,
                needed: 100,
                block_size: 4096
            }
        );
    }

    #[test]
    fn the_announced_size_adds_whole_blocks() {
        // 4097 bytes take two 4 KiB blocks: 100 + 2 are needed.
        assert_eq!(judge(102, 4096, 100, 4097), Space::Enough);
        assert!(matches!(
            judge(101, 4096, 100, 4097),
            Space::Low { needed: 102, .. }
        ));
        // a size alone is checked even without a minimum
        assert!(matches!(judge(1, 4096, 0, 8192), Space::Low { .. }));
    }

    #[test]
    fn a_filesystem_that_cannot_be_asked_counts_as_enough() {
        assert_eq!(
            check(Path::new("/nonexistent/queue/dir"), 100, 0),
            Space::Enough
        );
    }

    #[test]
    fn full_disk_errors_are_told_apart() {
        let full = QueueError::io(
            "append to",
            "/q/journal/1.seg",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        let raw = QueueError::io(
            "create",
            "/q/x",
            std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
        );
        let other = QueueError::io(
            "create",
            "/q/x",
            std::io::Error::from_raw_os_error(nix::libc::EIO),
        );
        assert!(is_disk_full(&full) && is_disk_full(&raw));
        assert!(!is_disk_full(&other) && !is_disk_full(&QueueError::ReadOnly));
    }
}
