//! BDAT (RFC 3030 CHUNKING): the message in counted chunks instead of DATA.
//!
//! In: `BDAT <octets> [LAST]` (parsed by `smtp::command`), then exactly that many octets
//! through [`Session::data`]. Out: after each chunk one reply — `250 2.0.0 <n> octets
//! received`, or, after the `LAST` chunk, the same commit and `250 2.0.0 <id> Message
//! accepted for delivery` as DATA (`finish.rs`).
//!
//! Rules (RFC 3030 §2-§4):
//! * the octets of a BDAT whose size parses are always read, even when the command is
//!   refused (no MAIL, no RCPT), so that the session stays in step with a pipelining client;
//! * chunks are read as counted octets: no dot-stuffing, no end marker; CRLF becomes the
//!   queue's LF, and a bare CR or LF is refused as in DATA (`smtp::chunk`);
//! * DATA after BDAT in one transaction is `503`; RSET, HELO/EHLO and errors drop the
//!   chunks received so far with the transaction;
//! * the size limit (MaxMessageSize, or the hard cap) and MaxHeadersLength apply to the sum
//!   of the chunks; the chunk that breaks one is answered `552` and ends the transaction,
//!   so later chunks get `503 Need MAIL` (the client must not send them, §2);
//! * BDAT is not a synchronisation point: a client may pipeline chunks and commands.

use super::*;
use crate::smtp::chunk::ChunkReader;

/// A chunk being read.
#[derive(Debug)]
pub(super) struct Chunk {
    /// Octets still to come.
    remaining: u64,
    /// The chunk's size as announced.
    size: u64,
    last: bool,
    /// Set when the chunk is read only to be dropped: the reply to give after it.
    refusal: Option<Reply>,
}

impl Chunk {
    /// The chunk's octets go into the message (it was not refused).
    pub(super) fn feeding(&self) -> bool {
        self.refusal.is_none()
    }
}

impl Session {
    /// CHUNKING is offered (and BDAT understood) in this session.
    pub(super) fn chunking_offered(&self) -> bool {
        self.ctx.features.chunking && self.nullserver.is_none()
    }

    /// `BDAT <octets> [LAST]`.
    pub(super) fn bdat_cmd(
        &mut self,
        text: &str,
        arg: Result<(u64, bool), String>,
        out: &mut Vec<Action>,
    ) {
        if !self.chunking_offered() {
            self.bad_command(text, out);
            return;
        }
        let Ok((size, last)) = arg else {
            self.user_error(reply::bdat_syntax(), out);
            return;
        };
        let refusal = match &self.tx {
            None => Some(reply::need_mail()),
            Some(tx) if tx.rcpts.is_empty() => Some(reply::need_rcpt()),
            Some(_) => None,
        };
        let limits = self.limits();
        if let Some(tx) = &mut self.tx
            && refusal.is_none()
        {
            tx.chunks.get_or_insert_with(|| ChunkReader::new(limits));
        }
        self.state = State::Chunk(Chunk {
            remaining: size,
            size,
            last,
            refusal,
        });
        if size == 0 {
            self.chunk_end(out);
        }
    }

    /// Octets of the current chunk; returns how many were used (the rest are commands).
    pub(super) fn chunk_data(&mut self, input: &[u8]) -> (usize, Vec<Action>) {
        let mut out = Vec::new();
        let State::Chunk(chunk) = &mut self.state else {
            return (0, out);
        };
        let n = usize::try_from(chunk.remaining)
            .unwrap_or(usize::MAX)
            .min(input.len());
        chunk.remaining -= n as u64;
        let done = chunk.remaining == 0;
        let feeding = chunk.refusal.is_none();
        if feeding
            && let Some(reader) = self.tx.as_mut().and_then(|t| t.chunks.as_mut())
            && let Err(end) = reader.feed(&input[..n])
        {
            let (size, in_header) = (reader.body().size(), reader.body().in_header());
            self.state = State::Command;
            self.bare_line_end(end, size, in_header, &mut out);
            return (n, out);
        }
        if done {
            self.chunk_end(&mut out);
        }
        (n, out)
    }

    /// The body received so far in chunks (for the log of a lost connection).
    pub(super) fn chunked_size(&self) -> u64 {
        self.tx
            .as_ref()
            .and_then(|t| t.chunks.as_ref())
            .map_or(0, |c| c.body().size())
    }

    /// A chunk has been read: answer it, and after the last one commit the message.
    fn chunk_end(&mut self, out: &mut Vec<Action>) {
        let State::Chunk(chunk) = std::mem::replace(&mut self.state, State::Command) else {
            return;
        };
        if let Some(r) = chunk.refusal {
            out.push(Action::Reply(r));
            return;
        }
        let Some(reader) = self.tx.as_mut().and_then(|t| t.chunks.take()) else {
            return;
        };
        let over = reader.body().exceeded() || reader.body().headers_exceeded();
        if !(chunk.last || over) {
            if let Some(tx) = &mut self.tx {
                tx.chunks = Some(reader);
            }
            out.push(Action::Reply(reply::chunk_received(chunk.size)));
            return;
        }
        let (size, in_header) = (reader.body().size(), reader.body().in_header());
        match reader.finish() {
            Ok(body) => self.finish_body(body, out),
            Err(end) => self.bare_line_end(end, size, in_header, out),
        }
    }
}
