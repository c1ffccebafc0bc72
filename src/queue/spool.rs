//! Spool files: where the bytes of a message being received wait for its commit, so that
//! a receiving session holds only a small, fixed amount of it in memory.
//!
//! In: runs of message bytes (LF line ends, as the queue keeps them) from the SMTP
//! session, appended as they arrive ([`Spool::append`]). Out: the file and the length and
//! CRC-32 of what it holds (`Spool::into_parts`), which [`super::Store::commit_spooled`]
//! copies into the journal frame of the message.
//!
//! # Design
//!
//! * **Where the bytes live.** One spool file per message being received, in
//!   `<queue>/spool/` (mode 0700 like the queue), so it is on the queue's filesystem: the
//!   committer copies it into the journal with `copy_file_range(2)`, which moves the bytes
//!   inside the kernel (no second copy in this process's memory, and a reflink where the
//!   filesystem can). The file is created `O_EXCL`, mode 0600, and **unlinked at once**:
//!   from then on it has no name, only this process's descriptor, so whatever ends the
//!   message — the commit, a refusal, a vanished client, a crash or SIGKILL — the kernel
//!   gives its blocks back when the descriptor closes. Only a death in the few
//!   microseconds between create and unlink leaves a name behind; [`super::Store::open`],
//!   which holds the queue's lock (so no other process is receiving into that directory),
//!   deletes everything in `spool/` and reports it.
//! * **Nothing is visible before the commit.** The journal is the only thing replayed at
//!   start-up, and the spool is never named in it: the message becomes a queue entry only
//!   when its whole `Put` frame — the envelope records, the headers added at receipt, the
//!   spool's bytes copied in, the END record — is written and the batch's fdatasync has
//!   returned, exactly as for a message committed from memory. The frame's checksum and
//!   the queue file's (computed while the bytes were spooled, combined with the rest by
//!   CRC-32's combine) cover the copied bytes, so a crash in the middle of the copy leaves
//!   a torn frame that recovery cuts off: no partly streamed message is ever delivered,
//!   and none is acknowledged before its fdatasync (the session's `250` waits for it).
//! * **No fsync of the spool.** Its bytes only need to reach the disk as part of the
//!   journal frame, whose fdatasync covers them; an unacknowledged message may be lost in
//!   a crash, which is the SMTP contract (the client keeps it and retries).
//! * **Writes off the async workers.** Each append is a positioned write from
//!   `spawn_blocking`, so a disk under write-back pressure stalls the one session that
//!   writes, never the runtime.
//! * **Bounded.** Only the size limit (`MaxMessageSize`, else the 64 MiB hard cap,
//!   `smtp::body::HARD_MAX_MESSAGE`) bounds a spool file: the session stops spooling (and
//!   drops the file) once the message is over it, and `MinFreeBlocks` is checked at MAIL
//!   as before. A write that fails (a full disk) makes the commit fail with `452`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::QueueError;
use super::file::Gap;

/// A spool file and what has been written to it.
#[derive(Debug)]
pub struct Spool {
    file: Arc<File>,
    gap: Gap,
}

impl Spool {
    /// Creates a new spool file in `dir` and unlinks it at once.
    pub(super) fn create(dir: &Path) -> Result<Spool, QueueError> {
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{}.{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| QueueError::io("create", &path, e))?;
        std::fs::remove_file(&path).map_err(|e| QueueError::io("remove", &path, e))?;
        Ok(Spool {
            file: Arc::new(file),
            gap: Gap::default(),
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.gap.len
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.gap.len == 0
    }

    /// Appends `bytes` (from a blocking thread); gives the buffer back for reuse.
    pub async fn append(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, QueueError> {
        let file = self.file.clone();
        let at = self.gap.len;
        let (bytes, written) = tokio::task::spawn_blocking(move || {
            let r = file.write_all_at(&bytes, at);
            (bytes, r)
        })
        .await
        .map_err(|_| QueueError::CommitterGone)?;
        written.map_err(|e| QueueError::io("write", "spool file", e))?;
        self.gap.len += bytes.len() as u64;
        self.gap.crc.update(&bytes);
        Ok(bytes)
    }

    /// Reads the whole spool back (for destinations that take a message in memory).
    pub fn read_all(&self) -> Result<Vec<u8>, QueueError> {
        let mut out = vec![0; self.gap.len as usize];
        self.file
            .read_exact_at(&mut out, 0)
            .map_err(|e| QueueError::io("read", "spool file", e))?;
        Ok(out)
    }

    pub(super) fn into_parts(self) -> (Arc<File>, Gap) {
        (self.file, self.gap)
    }
}
