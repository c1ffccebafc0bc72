//! The mail log: sendmail-format lines to syslog, `LogFile`, or stderr.
//!
//! INTERFACE STUB — the real writer (syslog over /dev/log, LogFile, stderr) replaces the body;
//! the signatures below are what the rest of the crate calls.

use std::fmt;

/// syslog severities (RFC 5424 numbering), facility is always `mail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Emerg = 0,
    Alert = 1,
    Crit = 2,
    Err = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

/// Cheap to clone; shared by every task.
#[derive(Debug, Clone)]
pub struct Logger {
    level: u32,
}

impl Logger {
    /// A logger that writes to stderr only, at `LogLevel` `level`.
    pub fn stderr(level: u32) -> Logger {
        Logger { level }
    }

    /// sendmail's `LogLevel` in force.
    pub fn level(&self) -> u32 {
        self.level
    }

    /// Writes `sendmail[pid]: <qid>: <msg>` (or without `<qid>: ` when `qid` is None).
    pub fn log(&self, sev: Severity, qid: Option<&str>, msg: fmt::Arguments<'_>) {
        let _ = sev;
        match qid {
            Some(q) => eprintln!("sendmail[{}]: {q}: {msg}", std::process::id()),
            None => eprintln!("sendmail[{}]: {msg}", std::process::id()),
        }
    }
}
