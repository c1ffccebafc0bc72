//! The configuration: a sendmail.cf (or the embedded default) plus `-O`/`-o` overrides,
//! parsed once into a typed [`Config`].
//!
//! In: a path (`-C`, `/etc/mail/sendmail.cf`) or the embedded default text, and the command
//! line's option overrides. Out: [`Config`], or every error found, each naming file, line and
//! what was expected. Options the project does not implement yet become warnings (one line
//! each in the mail log), never silence and never a crash.
//!
//! sendmail semantics kept here (see `../shared/sendmail-facts.md` §1.4):
//! * each `DaemonPortOptions` occurrence adds one daemon; none means one default daemon;
//! * a `DaemonPortOptions` given on the command line is *sticky*: every cf line for it is then
//!   ignored, and each command-line occurrence adds one daemon;
//! * cf option values are macro-expanded at use; command-line values are literal.

pub mod cf;
pub mod daemon_options;

use std::path::PathBuf;

/// An option given on the command line (`-O Name=value`, `-oXvalue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Long name, or the one-letter name of `-oX`.
    pub name: String,
    pub value: String,
}

/// Where the configuration text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A sendmail.cf on disk.
    File(PathBuf),
    /// The configuration compiled into the binary (`config/default.cf`).
    Embedded,
}
