//! Which queued messages a queue run takes: sendmail's `-q` flags → a [`QueueRun`].
//!
//! In: the text after each `-q` on the command line (`""`, `30m`, `f`, `Rexample.com`,
//! `!Sroot`, `I6AO6`…). Out: a [`QueueRun`] (the interval, if any, and a [`Selection`]) and,
//! per message, whether the selection takes it ([`Selection::matches`]). Sans-IO.
//!
//! As sendmail(8) describes `-q[!]Isubstr`, `-q[!]Rsubstr`, `-q[!]Ssubstr`: a limit takes a
//! message whose queue id (I), one of whose recipients (R), or whose sender (S) contains the
//! substring; `!` takes those that do not. Several limits of one kind: a message passes if
//! any of them takes it; limits of different kinds must all pass (sendmail's
//! `QueueLimitId`/`QueueLimitRecipient`/`QueueLimitSender` lists, queue.c). Recipient and
//! sender substrings are matched without regard to case, ids exactly. A selected message is
//! run whole (every recipient still due), as sendmail runs a whole queue file.
//! `-q[!]Q[substr]` turns to the quarantined messages (sendmail's `hf` files: held by a mail
//! filter or by `-Q`), and only them; with a substring, those whose quarantine reason
//! contains it (or, with `!`, does not). Every other run leaves quarantined messages alone.
//! Not supported (an error, never silently ignored): `-qG` queue groups.

use std::time::Duration;

use crate::queue::Envelope;

/// What a set of `-q` flags asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueRun {
    /// `-q30m`: run the queue every so often (a daemon); None: once.
    pub interval: Option<Duration>,
    /// `-qf`: in the foreground (ours always is; kept for the record).
    pub foreground: bool,
    pub select: Selection,
}

/// The `-qI/-qR/-qS/-qQ` limits of one queue run; empty takes every message not
/// quarantined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub limits: Vec<Limit>,
    /// `-qQ`: the quarantined messages instead of the others.
    pub quarantined: bool,
}

/// One `-q[!]Xsubstr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub kind: LimitKind,
    /// `!`: take the messages that do *not* contain the substring.
    pub negate: bool,
    pub substr: String,
}

/// What a [`Limit`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `I`: the queue id.
    Id,
    /// `R`: any recipient's address.
    Recipient,
    /// `S`: the envelope sender.
    Sender,
    /// `Q`: the quarantine reason.
    Quarantine,
}

/// A `-q` flag that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("-q{0}: not a queue interval or limit (expected -q[time], -qf, -q[!]I/R/Ssubstr)")]
    Malformed(String),
    #[error("-q{0}: queue groups (-qG) are not supported")]
    Unsupported(String),
    #[error("-q{0}: a limit needs a substring")]
    Empty(String),
}

impl QueueRun {
    /// Reads the text after each `-q`, in the order typed.
    pub fn parse<S: AsRef<str>>(flags: &[S]) -> Result<QueueRun, SelectError> {
        let mut run = QueueRun::default();
        for flag in flags {
            run.add(flag.as_ref())?;
        }
        Ok(run)
    }

    fn add(&mut self, flag: &str) -> Result<(), SelectError> {
        let (negate, rest) = match flag.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, flag),
        };
        let mut chars = rest.chars();
        let kind = match chars.next() {
            None if !negate => return Ok(()),
            Some('I') => LimitKind::Id,
            Some('R') => LimitKind::Recipient,
            Some('S') => LimitKind::Sender,
            Some('Q') => {
                self.select.quarantined = true;
                if chars.as_str().is_empty() {
                    return Ok(());
                }
                LimitKind::Quarantine
            }
            Some('G') => return Err(SelectError::Unsupported(flag.to_string())),
            Some('f') if !negate && chars.as_str().is_empty() => {
                self.foreground = true;
                return Ok(());
            }
            Some('p') if !negate => return self.interval(flag, &rest[1..], "1s"),
            Some(c) if c.is_ascii_digit() && !negate => return self.interval(flag, rest, ""),
            _ => return Err(SelectError::Malformed(flag.to_string())),
        };
        let substr = chars.as_str();
        if substr.is_empty() {
            return Err(SelectError::Empty(flag.to_string()));
        }
        self.select.limits.push(Limit {
            kind,
            negate,
            substr: substr.to_string(),
        });
        Ok(())
    }

    fn interval(&mut self, flag: &str, text: &str, default: &str) -> Result<(), SelectError> {
        let text = if text.is_empty() { default } else { text };
        let secs = crate::cli::parse_time(text, 'm')
            .ok_or_else(|| SelectError::Malformed(flag.to_string()))?;
        self.interval = Some(Duration::from_secs(secs));
        Ok(())
    }
}

impl Selection {
    /// Whether this run takes the message with envelope `env`.
    pub fn matches(&self, env: &Envelope) -> bool {
        if env.quarantine.is_some() != self.quarantined {
            return false;
        }
        [
            LimitKind::Id,
            LimitKind::Recipient,
            LimitKind::Sender,
            LimitKind::Quarantine,
        ]
        .into_iter()
        .all(|kind| {
            let mut of_kind = self.limits.iter().filter(|l| l.kind == kind).peekable();
            of_kind.peek().is_none() || of_kind.any(|l| l.takes(env))
        })
    }

    /// The limits as `-q` flag texts (`R@example.com`, `!Sroot`), as [`QueueRun::parse`]
    /// reads them: how a selection travels to a running daemon.
    pub fn to_flags(&self) -> Vec<String> {
        let mut flags: Vec<String> = self
            .limits
            .iter()
            .map(|l| {
                let kind = match l.kind {
                    LimitKind::Id => 'I',
                    LimitKind::Recipient => 'R',
                    LimitKind::Sender => 'S',
                    LimitKind::Quarantine => 'Q',
                };
                format!("{}{kind}{}", if l.negate { "!" } else { "" }, l.substr)
            })
            .collect();
        if self.quarantined {
            flags.push("Q".into());
        }
        flags
    }
}

impl Limit {
    fn takes(&self, env: &Envelope) -> bool {
        let found = match self.kind {
            LimitKind::Id => env.id.as_str().contains(&self.substr),
            LimitKind::Recipient => env
                .recipients
                .iter()
                .any(|r| contains_ignore_case(&r.address, &self.substr)),
            LimitKind::Sender => contains_ignore_case(&env.sender, &self.substr),
            LimitKind::Quarantine => env
                .quarantine
                .as_deref()
                .is_some_and(|q| q.contains(&self.substr)),
        };
        found != self.negate
    }
}

fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    hay.to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{QueueId, Recipient};

    fn env(id: &str, sender: &str, rcpts: &[&str]) -> Envelope {
        let mut e = Envelope::new(QueueId::new(id).unwrap(), sender);
        e.recipients = rcpts.iter().map(|r| Recipient::new(*r)).collect();
        e
    }

    fn takes(flags: &[&str], e: &Envelope) -> bool {
        QueueRun::parse(flags).unwrap().select.matches(e)
    }

    #[test]
    fn plain_q_takes_everything_once() {
        let run = QueueRun::parse(&[""]).unwrap();
        assert_eq!(run, QueueRun::default());
        assert!(run.select.matches(&env("A1", "s@x", &["r@y"])));
    }

    #[test]
    fn intervals_and_foreground() {
        let run = QueueRun::parse(&["30m"]).unwrap();
        assert_eq!(run.interval, Some(Duration::from_secs(1800)));
        assert_eq!(
            QueueRun::parse(&["1h30m"]).unwrap().interval,
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            QueueRun::parse(&["p"]).unwrap().interval,
            Some(Duration::from_secs(1))
        );
        assert!(QueueRun::parse(&["f"]).unwrap().foreground);
    }

    #[test]
    fn recipient_sender_and_id_limits() {
        let e = env(
            "6AO6rKe2007088",
            "Alice@Client.example",
            &["bob@remote.example"],
        );
        assert!(takes(&["Rremote.EXAMPLE"], &e));
        assert!(!takes(&["Rother.example"], &e));
        assert!(takes(&["Salice@client"], &e));
        assert!(takes(&["I6AO6"], &e));
        assert!(!takes(&["I6ao6"], &e), "ids match exactly");
        assert!(!takes(&["!Rremote"], &e));
        assert!(takes(&["!Rother"], &e));
    }

    #[test]
    fn same_kind_is_any_different_kinds_are_all() {
        let e = env("Q1", "alice@a.example", &["bob@b.example"]);
        assert!(takes(&["Rnowhere", "Rb.example"], &e));
        assert!(!takes(&["Rb.example", "Snobody"], &e));
        assert!(takes(&["Rb.example", "Salice"], &e));
    }

    #[test]
    fn q_runs_take_the_quarantined_messages_and_only_them() {
        let mut held = env("A1", "s@x", &["r@y"]);
        held.quarantine = Some("held by test filter".into());
        let free = env("A2", "s@x", &["r@y"]);
        assert!(!takes(&[""], &held) && takes(&[""], &free));
        assert!(takes(&["Q"], &held) && !takes(&["Q"], &free));
        assert!(takes(&["Qtest filter"], &held) && !takes(&["Qother"], &held));
        assert!(takes(&["!Qother"], &held) && !takes(&["!Qtest"], &held));
        assert!(!takes(&["!Qother"], &free));
        assert!(takes(&["Q", "IA1"], &held) && !takes(&["Q", "IA2"], &held));
    }

    #[test]
    fn flags_round_trip_to_a_daemon() {
        let run = QueueRun::parse(&["Rb.example", "!Sroot", "IQ1", "Qspam", "Q"]).unwrap();
        let again = QueueRun::parse(&run.select.to_flags()).unwrap();
        assert_eq!(again.select, run.select);
    }

    #[test]
    fn bad_flags_are_errors() {
        assert!(matches!(
            QueueRun::parse(&["Gmain"]),
            Err(SelectError::Unsupported(_))
        ));
        assert!(matches!(
            QueueRun::parse(&["R"]),
            Err(SelectError::Empty(_))
        ));
        assert!(matches!(
            QueueRun::parse(&["x"]),
            Err(SelectError::Malformed(_))
        ));
        assert!(matches!(
            QueueRun::parse(&["!30m"]),
            Err(SelectError::Malformed(_))
        ));
    }
}
