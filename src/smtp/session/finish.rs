//! The end of a message, however it came (DATA or BDAT): the limits, then the commit.
//!
//! In: the received body ([`BodyBuf`]) of the current transaction, or the bare CR/LF that
//! ended it. Out: `552` for a message over the size limit (`552 5.2.3 Message exceeds
//! maximum fixed size (M)`; logged `from=`, `message size (N) exceeds maximum (M)`, `to=...
//! stat=...`) or over `MaxHeadersLength` (`552 5.6.0 Headers too large (M max)`; logged
//! `headers too large (M max) from HOST during message collect`, `from=`, `to=...`), both
//! recorded from sendmail 8.17.1.9 for this project (2026-12-02); `421 4.5.0 Bare linefeed/carriage return` and
//! the end of the session for a bare line end; otherwise [`Action::Commit`] of the
//! [`Message`], answered `250` by [`Session::committed`] once it is durable. This is the only
//! place a message is handed to the queue.

use super::*;
use crate::smtp::body::BodyBuf;

impl Session {
    /// The limits a message of this session is received under.
    pub(super) fn limits(&self) -> Limits {
        let body = self.tx.as_ref().and_then(|t| t.params.body);
        Limits {
            max_size: self.ctx.max_message_size,
            max_headers: self.ctx.max_headers_length,
            seven_bit: super::super::body::seven_bit_input(self.ctx.seven_bit_input, body),
        }
    }

    /// A complete body: refuse it for a broken limit, else commit it.
    pub(super) fn finish_body(&mut self, body: BodyBuf, out: &mut Vec<Action>) {
        let size = body.size();
        if body.exceeded() {
            let max = body.limits().size_limit();
            // when the header block ended within the limit sendmail has read it: its from=
            // line names the Message-Id, the message's own or the one it made up (oracle,
            // 89p-max-message-size; none for a message without a header block)
            let kept = body.into_body();
            let (_, rest) = crate::headers::split(&kept);
            let (header_end, existing) = crate::headers::scan(&kept);
            if !rest.is_empty() && header_end as u64 <= max {
                self.msgid_of_refused = Some(existing.unwrap_or_else(|| {
                    let (qid, host) = (self.qid(), &self.ctx.hostname);
                    crate::queue::id::message_id(chrono::Utc::now(), &qid, host)
                }));
            }
            let notice = format!("message size ({size}) exceeds maximum ({max})");
            self.refuse_message(notice, reply::message_too_big(max), false, size, out);
            return;
        }
        if body.headers_exceeded() {
            let max = body.limits().max_headers;
            let notice = format!(
                "headers too large ({max} max) from {} during message collect",
                self.ctx.client.host_name()
            );
            self.refuse_message(notice, reply::headers_too_large(max), true, size, out);
            return;
        }
        let Some(tx) = self.tx.take() else {
            return;
        };
        self.log_sender = None;
        let protocol = self.message_protocol(&tx.params);
        let spilled = body.spilled();
        let msg = Message {
            qid: self.qid(),
            sender: tx.sender,
            mail_params: tx.params,
            recipients: tx.rcpts,
            spilled,
            spill_at: if spilled > 0 {
                crate::smtp::body::KEEP_HEAD
            } else {
                0
            },
            body: body.into_body(),
            helo: self.helo.clone(),
            protocol,
            client: self.ctx.client.clone(),
            daemon_name: self.ctx.daemon_name.clone(),
            tls: self.sec.tls.clone(),
            auth: self.sec.auth.clone(),
            quarantine: tx.quarantine,
            discard: tx.discard,
            last_error: tx.last_error,
        };
        self.state = State::Committing(size);
        out.push(Action::Commit(Box::new(msg)));
    }

    /// Refuses the transaction's message with `answer`, logged as sendmail 8.17.1.9 logs it:
    /// the `notice`, the `from=` line (the notice comes first for headers, after it for the
    /// size), then `to=<r>, ..., stat=<answer text>` per recipient.
    fn refuse_message(
        &mut self,
        notice: String,
        answer: Reply,
        notice_first: bool,
        size: u64,
        out: &mut Vec<Action>,
    ) {
        let mut to_lines = Vec::new();
        self.log_undelivered(answer.text(), 4, &mut to_lines);
        if notice_first {
            self.log(Severity::Notice, true, notice, out);
            self.finish_transaction_sized(size, out);
        } else {
            self.finish_transaction_sized(size, out);
            self.log(Severity::Notice, true, notice, out);
        }
        out.extend(to_lines);
        out.push(Action::Reply(answer));
    }

    /// A bare LF or CR in the message: logged as sendmail's `collect:` line, answered 421,
    /// and the session ends.
    pub(super) fn bare_line_end(
        &mut self,
        end: DataEnd,
        size: u64,
        in_header: bool,
        out: &mut Vec<Action>,
    ) {
        let (info, answer) = if end == DataEnd::BareLf {
            ("Bare linefeed (LF) not allowed", reply::bare_lf())
        } else {
            ("Bare carriage return (CR) not allowed", reply::bare_cr())
        };
        let from = self
            .log_sender
            .as_ref()
            .map(|s| s.0.clone())
            .unwrap_or_default();
        let text = format!(
            "collect: relay={}, from={from}, info={info}, where={}, status=tempfail",
            self.ctx.client.host_name(),
            if in_header { "header" } else { "body" },
        );
        self.log(Severity::Notice, true, text, out);
        out.push(Action::Reply(answer));
        self.end_session(false, size, out);
    }
}
