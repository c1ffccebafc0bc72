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
