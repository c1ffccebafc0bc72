//! Settling a message's notices: the bounces, delay warnings and return receipts that are due
//! ([`crate::deliver::dsn`] plans and builds them) are queued as messages of their own, and
//! the recipients they report are marked.
//!
//! In: a queued message after a delivery attempt or at a scan. Out: the notices committed to
//! the store (each logged as sendmail logs it: `ID: DSN: reason`), the message marked, and
//! whether it changed.

use std::time::SystemTime;

use crate::deliver::dsn::{
    Addressee, Build, Notice, Settings, build, expire, log_reason, log_word, mark, plan,
};
use crate::log::Severity;
use crate::queue::{Message, QueueError, QueueId};
use crate::runtime::Shared;

/// Queues the notices due for `msg` and marks what they report; returns whether `msg`
/// changed (so the caller writes it back). A notice that cannot be queued leaves its
/// recipients unreported, to be tried at the next run.
pub async fn settle(shared: &Shared, msg: &mut Message) -> bool {
    let settings = shared.current().dsn.clone();
    let now = SystemTime::now();
    let expired = expire(&settings, msg, now);
    let mut plan = plan(&settings, msg, now);
    if plan.is_empty() {
        return expired;
    }
    let mut sent = Vec::new();
    for notice in std::mem::take(&mut plan.notices) {
        match send(shared, &settings, &notice, msg, now).await {
            Ok(()) => sent.push(notice),
            Err(e) => shared.logger.log(
                Severity::Err,
                Some(msg.envelope.id.as_str()),
                format_args!("DSN could not be queued: {e}"),
            ),
        }
    }
    plan.notices = sent;
    mark(msg, &plan);
    true
}

async fn send(
    shared: &Shared,
    settings: &Settings,
    notice: &Notice,
    original: &Message,
    now: SystemTime,
) -> Result<(), QueueError> {
    let orig_id = original.envelope.id.as_str();
    let id = QueueId::new(shared.qids.next_id())?;
    let b = Build {
        settings,
        notice,
        id: id.clone(),
        now,
    };
    let reason = log_reason(&b, original);
    if notice.to == Addressee::Dropped {
        // sendmail's savemail: with DeadLetterDrop set and no SafeFileEnvironment, the
        // failed notice is returned to no one and appended to that file (the oracle logs
        // "ID: NEWID: return to sender: REASON" then, at notice, "ID: Saved message in PATH").
        let options = &shared.current().config.options;
        if let (Some(path), None) = (
            options.dead_letter_drop.clone(),
            options.safe_file_environment.as_ref(),
        ) {
            shared.logger.log(
                Severity::Info,
                Some(orig_id),
                format_args!("{id}: return to sender: {reason}"),
            );
            let entry = dead_letter_entry(&original.body, now);
            match append_dead_letter(&path, &entry) {
                Ok(()) => {
                    shared.logger.log(
                        Severity::Notice,
                        Some(orig_id),
                        format_args!("Saved message in {}", path.display()),
                    );
                    return Ok(());
                }
                Err(e) => shared.logger.log(
                    Severity::Alert,
                    Some(orig_id),
                    format_args!("cannot save the message in {}: {e}", path.display()),
                ),
            }
        }
        shared.logger.log(
            Severity::Alert,
            Some(orig_id),
            format_args!("postmaster notify failed, notice dropped: {reason}"),
        );
        return Ok(());
    }
    let dsn = build(&b, original);
    shared.queue.commit(dsn).await?;
    shared.logger.log(
        Severity::Info,
        Some(orig_id),
        format_args!("{id}: {}: {reason}", log_word(notice, original)),
    );
    Ok(())
}

/// The dead-letter file's entry for a failed notice, in the mbox form sendmail writes it:
/// `From MAILER-DAEMON <ctime>`, `Return-Path: <MAILER-DAEMON>`, the message with its
/// `From ` lines quoted, a blank line.
fn dead_letter_entry(message: &[u8], when: SystemTime) -> Vec<u8> {
    let date = chrono::DateTime::<chrono::Local>::from(when).format("%a %b %e %H:%M:%S %Y");
    let mut out = format!("From MAILER-DAEMON {date}\nReturn-Path: <MAILER-DAEMON>\n").into_bytes();
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !message.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// Appends `entry` to `path` (created 0600), synced; cut back on failure.
fn append_dead_letter(path: &std::path::Path, entry: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    crate::deliver::local::append_or_rollback(&mut f, entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_is_an_mbox_entry_from_mailer_daemon() {
        let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_543_596);
        let entry = dead_letter_entry(b"Subject: x\n\nFrom here\nbody", when);
        let text = String::from_utf8(entry).unwrap();
        let (first, rest) = text.split_once('\n').unwrap();
        assert!(first.starts_with("From MAILER-DAEMON "), "{first}");
        assert_eq!(
            rest,
            "Return-Path: <MAILER-DAEMON>\nSubject: x\n\n>From here\nbody\n\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.letter");
        append_dead_letter(&path, b"one\n").unwrap();
        append_dead_letter(&path, b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
    }
}
