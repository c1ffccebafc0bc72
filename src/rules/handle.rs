//! The shared handle on one configuration's ruleset engine, for everything that runs the
//! cf's rules outside the SMTP checks: mailer choice at delivery and verification
//! ([`Handle::resolve`]), and the rewriting of a message for its mailer
//! ([`Handle::for_delivery`], [`Handle::for_local`]).
//!
//! In: an [`Engine`] built from the configuration and the cf's mailers. Out: `$#` triples and
//! rewritten messages. The engine keeps per-call state (macros, messages), so every use takes
//! its lock; the SMTP policy ([`crate::policy::RulesPolicy`]) runs its `check_*` rulesets
//! through the same lock ([`Handle::engine`]).

use std::sync::{Mutex, MutexGuard};

use crate::rules::address::{Use, parseaddr};
use crate::rules::check::take_messages;
use crate::rules::mailer::{self, MailerDef};
use crate::rules::rewrite::Engine;

/// One configuration generation's ruleset engine and its numbered mailers.
pub struct Handle {
    engine: Mutex<Engine>,
    /// The cf's mailers as the engine numbers them (for ruleset 0's `$#` triples).
    mailers: Vec<MailerDef>,
}

impl Handle {
    pub fn new(mut engine: Engine, mailer_lines: &[crate::config::Mailer]) -> Handle {
        let mailers = mailer::build(mailer_lines, &engine.rulesets, &mut engine.names);
        Handle {
            engine: Mutex::new(engine),
            mailers,
        }
    }

    /// The engine, locked for one run of its rulesets.
    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cf's mailers as the engine numbers them.
    pub fn mailers(&self) -> &[MailerDef] {
        &self.mailers
    }

    /// Ruleset 3 then 0 on a recipient, as sendmail's `parseaddr`: the mailer triple, or the
    /// error the rules chose.
    pub fn resolve(&self, addr: &str) -> Result<(String, Option<String>, String), String> {
        let mut e = self.engine();
        let parsed = parseaddr(&mut e, &self.mailers, addr.as_bytes(), Use::default());
        let messages = take_messages(&mut e);
        match parsed {
            Some(a) if !a.bad && a.mailer != "*error*" => Ok((
                a.mailer,
                a.host.map(|h| String::from_utf8_lossy(&h).into_owned()),
                String::from_utf8_lossy(&a.user).into_owned(),
            )),
            _ => Err(messages
                .last()
                .cloned()
                .unwrap_or_else(|| format!("{addr}... unresolvable address"))),
        }
    }

    /// A queued message as `mailer` delivers it: envelope sender, recipients and address
    /// headers through rulesets 1/2/4 and the mailer's `S=`/`R=` ([`crate::rules::deliver`]).
    pub fn for_delivery(
        &self,
        mailer: &str,
        msg: &crate::queue::Message,
        rcpts: &[crate::queue::Recipient],
    ) -> (crate::queue::Message, Vec<crate::queue::Recipient>) {
        let mut e = self.engine();
        crate::rules::deliver::for_delivery(&mut e, &self.mailers, mailer, msg, rcpts)
    }

    /// A message as local `mailer` (`local`, `prog`, `*file*`) writes it: `$g` (the
    /// envelope sender through rulesets 1/4 and `S=`) and the message with its address
    /// headers rewritten ([`crate::rules::deliver::for_local`]).
    pub fn for_local(&self, mailer: &str, sender: &str, message: &[u8]) -> (String, Vec<u8>) {
        let mut e = self.engine();
        crate::rules::deliver::for_local(&mut e, &self.mailers, mailer, sender, message)
    }
}
