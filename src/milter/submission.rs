//! Command-line mail through the filters: what `sendmail -t` left in the maildrop meets the
//! same filters as mail over SMTP before it is queued.
//!
//! In: one picked-up queue message, the filter list and the connection facts sendmail's MSP
//! would present (it relays through the MTA on `127.0.0.1`: client `localhost`, HELO with `$j`,
//! the daemon's name). Out: [`Filtered`] — the message as the filters left it; dropped when
//! they discarded it; left for later when they tempfailed; or, when they rejected it, every
//! recipient marked failed with the filter's reply so that the sender gets the bounce the
//! MSP would have sent (the submitter is long gone).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::config::{FilterDef, MilterConfig};
use super::engine::{Edit, Engine, Outcome, bare, join_message, split_message};
use super::proto::Family;
use crate::log::{Logger, Severity};
use crate::queue::maildrop::Filtered;
use crate::queue::{DeliveryState, Message, Recipient};

/// Who the filters are told the mail comes from.
pub struct Origin {
    /// `$j`.
    pub host: String,
    /// `{daemon_name}` of the daemon the MSP would connect to.
    pub daemon_name: String,
}

/// Runs `msg` through the filters `list`.
pub async fn filter(
    cfg: Arc<MilterConfig>,
    list: &[Arc<FilterDef>],
    origin: &Origin,
    logger: &Logger,
    mut msg: Message,
) -> Filtered {
    let mut engine = Engine::new(cfg, list, logger.clone());
    let mut macros = BTreeMap::new();
    macros.insert("j".to_string(), origin.host.clone());
    macros.insert("_".to_string(), "localhost [127.0.0.1]".to_string());
    macros.insert("daemon_name".to_string(), origin.daemon_name.clone());
    macros.insert("client_addr".to_string(), "127.0.0.1".to_string());
    macros.insert("client_name".to_string(), "localhost".to_string());
    let qid = msg.envelope.id.to_string();
    let family = Family::Inet(0, "127.0.0.1".to_string());
    let out = engine.connect("localhost", family, &macros).await;
    let out = match out {
        Outcome::Continue => {
            macros.insert("s".into(), origin.host.clone());
            let out = engine.helo(&origin.host, &macros).await;
            if out == Outcome::Continue {
                transaction(&mut engine, &mut macros, &qid, &mut msg).await
            } else {
                out
            }
        }
        o => o,
    };
    engine.quit().await;
    let say = |text: String| {
        if logger.enabled(3) {
            logger.log(Severity::Info, Some(&qid), format_args!("{text}"));
        }
    };
    match out {
        Outcome::Continue => Filtered::Keep(Box::new(msg)),
        Outcome::Discard => {
            say("Milter: data, discard".into());
            Filtered::Drop
        }
        Outcome::Tempfail | Outcome::Shutdown => {
            say("Milter: data, reject=451 4.3.2 Please try again later".into());
            Filtered::Later("451 4.3.2 Please try again later".into())
        }
        Outcome::Reject => {
            say("Milter: data, reject=554 5.7.1 Command rejected".into());
            Filtered::Keep(Box::new(refused(msg, "554 5.7.1 Command rejected")))
        }
        Outcome::ReplyCode(text) => {
            say(format!("Milter: data, reject={text}"));
            if text.starts_with('4') {
                Filtered::Later(text)
            } else {
                Filtered::Keep(Box::new(refused(msg, &text)))
            }
        }
    }
}

/// MAIL, RCPT, DATA and the message; the filters' changes applied to `msg`.
async fn transaction(
    engine: &mut Engine,
    macros: &mut BTreeMap<String, String>,
    qid: &str,
    msg: &mut Message,
) -> Outcome {
    engine.qid = Some(qid.to_string());
    macros.insert("i".into(), qid.to_string());
    macros.insert("mail_addr".into(), msg.envelope.sender.clone());
    let out = engine
        .mail(vec![format!("<{}>", msg.envelope.sender)], macros)
        .await;
    if out != Outcome::Continue {
        return out;
    }
    let mut kept = Vec::new();
    for r in &msg.envelope.recipients {
        macros.insert("rcpt_addr".into(), r.address.clone());
        match engine
            .rcpt(vec![format!("<{}>", r.address)], false, macros)
            .await
        {
            Outcome::Continue => kept.push(r.clone()),
            Outcome::Discard => return Outcome::Discard,
            Outcome::Shutdown | Outcome::Tempfail => return Outcome::Tempfail,
            // One recipient refused: that one fails, the others go on.
            _ => kept.push(failed(r.clone(), "550 5.7.1 Command rejected")),
        }
    }
    macros.remove("rcpt_addr");
    msg.envelope.recipients = kept;
    let out = engine.data_cmd(macros).await;
    if out != Outcome::Continue {
        return out;
    }
    let (headers, body) = split_message(&msg.body);
    if let Some((_, id)) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("message-id"))
    {
        macros.insert("msg_id".into(), id.trim().to_string());
    }
    let mut edit = Edit {
        headers,
        body,
        sender: format!("<{}>", msg.envelope.sender),
        sender_args: None,
        rcpts: msg
            .envelope
            .recipients
            .iter()
            .filter(|r| r.state == DeliveryState::Pending)
            .map(|r| (format!("<{}>", r.address), None))
            .collect(),
        changed: false,
        quarantine: None,
    };
    let out = engine.eom(&mut edit, macros).await;
    if out != Outcome::Continue {
        return out;
    }
    // Held in the queue (mailq -qQ shows it), never delivered while quarantined.
    msg.envelope.quarantine = edit.quarantine.take();
    if edit.changed {
        msg.body = join_message(&edit.headers, &edit.body);
        msg.envelope.sender = bare(&edit.sender);
        let wanted: Vec<String> = edit.rcpts.iter().map(|(a, _)| bare(a)).collect();
        msg.envelope.recipients.retain(|r| {
            r.state != DeliveryState::Pending
                || wanted.iter().any(|w| w.eq_ignore_ascii_case(&r.address))
        });
        for w in wanted {
            if !msg
                .envelope
                .recipients
                .iter()
                .any(|r| r.address.eq_ignore_ascii_case(&w))
            {
                msg.envelope.recipients.push(Recipient::new(w));
            }
        }
    }
    Outcome::Continue
}

/// Every pending recipient failed with `reply` (the bounce goes to the sender).
fn refused(mut msg: Message, reply: &str) -> Message {
    msg.envelope.recipients = msg
        .envelope
        .recipients
        .into_iter()
        .map(|r| {
            if r.state == DeliveryState::Pending {
                failed(r, reply)
            } else {
                r
            }
        })
        .collect();
    msg
}

fn failed(mut r: Recipient, reply: &str) -> Recipient {
    r.state = DeliveryState::Failed;
    r.status = Some(reply.to_string());
    r.dsn_code = reply
        .split_whitespace()
        .nth(1)
        .filter(|c| c.split('.').count() == 3)
        .map(String::from);
    r
}
