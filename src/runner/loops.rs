//! Mail loops: a message that has passed too many hosts is bounced, never delivered.
//!
//! In: a queued message (its header section, LF line ends, our own `Received:` included) and
//! `MaxHopCount`. Out: when the message carries more trace headers than that, the verdict
//! sendmail 8.17 gives at delivery (`sendall`): every pending recipient fails with
//! `554 5.4.6 Too many hops`, and one SYSERR line tells the admin
//! (`SYSERR(root): Too many hops 121 (25 max): from <a@x> via host, to <b@y>`). A loop
//! between two hosts thus ends after `MaxHopCount` passes instead of running forever.

use crate::queue::{DeliveryState, Message};

/// Header fields that count as a hop (sendmail's `H_TRACE` fields).
const TRACE_FIELDS: &[&str] = &["received", "via", "mail-from", "x400-received"];

/// The recipient status (`stat=`, the bounce's reason) of a message that looped.
pub const TOO_MANY_HOPS: &str = "554 5.4.6 Too many hops";
/// Its enhanced status code.
pub const TOO_MANY_HOPS_DSN: &str = "5.4.6";

/// How many trace header fields the header section of `message` holds (continuation lines
/// belong to their field; the section ends at the first empty line).
pub fn hop_count(message: &[u8]) -> u32 {
    let mut n = 0u32;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]);
        let name = name.trim_end();
        if TRACE_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name)) {
            n = n.saturating_add(1);
        }
    }
    n
}

/// The SYSERR text (after `SYSERR(user): `) when `msg` has more hops than `max` and still
/// has a pending recipient; `None` when it may be delivered.
pub fn too_many_hops(msg: &Message, max: u32) -> Option<String> {
    let env = &msg.envelope;
    let first = env
        .recipients
        .iter()
        .find(|r| r.state == DeliveryState::Pending)?;
    let hops = hop_count(&msg.body);
    if hops <= max {
        return None;
    }
    // sendmail's RealHostName: the client's name, else its [address]; localhost for the
    // command line.
    let via = match (&env.client.name, &env.client.addr) {
        (Some(n), _) => n.clone(),
        (None, Some(a)) => format!("[{a}]"),
        (None, None) => "localhost".to_string(),
    };
    Some(format!(
        "Too many hops {hops} ({max} max): from <{}> via {via}, to <{}>",
        env.sender, first.address
    ))
}

/// sendmail's `RealUserName` for the SYSERR prefix: the user who started the daemon
/// (root when it has since switched to `RunAsUser`).
pub fn real_user_name(switched_to_run_as_user: bool) -> String {
    let uid = nix::unistd::getuid();
    if switched_to_run_as_user && !uid.is_root() {
        return "root".into();
    }
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_trace_fields_in_the_header_only() {
        let m = b"Received: from a\n\tby b\nreceived : x\nVia: y\nMail-From: z\nX400-Received: q\n\
Delivered-To: d\nSubject: Received: no\n\nReceived: in the body\n";
        assert_eq!(hop_count(m), 5);
        assert_eq!(
            hop_count(b"Subject: x\r\nReceived: y\r\n\r\nReceived: z\r\n"),
            1
        );
        assert_eq!(hop_count(b""), 0);
    }
}
