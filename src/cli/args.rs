//! What was typed: sendmail's getopt-style argv → [`LowArgs`], no interpretation yet.
//!
//! sendmail's flags glue their values (`-bd`, `-q30m`, `-oi`, `-ODaemonPortOptions=...`) or take
//! the next word (`-C file`, `-O Opt=val`); `lexopt` gives exactly that. Each flag is one arm of
//! [`LowArgs::parse`] with its meaning beside it (sendmail(8), op Appendix A; facts §2).

use std::ffi::OsString;

/// Everything the command line said, as typed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LowArgs {
    /// `-bX`: the mode letter(s) (`d`, `D`, `s`, `p`, `t`, `v`, `i`, `m`, ...).
    pub mode: Option<String>,
    /// `-C file`.
    pub config_file: Option<OsString>,
    /// `-O Name=value` and `-oXvalue`, in order.
    pub options: Vec<(String, String)>,
    /// `-q[time]`, `-qp[time]`, `-qf`, `-qI/R/S…`: the text after `q` (empty for plain `-q`).
    pub queue: Option<String>,
    /// Every `-q…` as typed after `q`, in order (`-qRx -qS!y` are several limits).
    pub queue_flags: Vec<String>,
    /// `-Q[reason]`: with `-q` limits, quarantine the selected messages with `reason`, or
    /// release them (`-Q` alone, with `-qQ…`).
    pub quarantine: Option<String>,
    /// `-d cat.level,…` debug flags (accepted, noted, not acted on).
    pub debug: Vec<String>,
    /// `-L tag`: the syslog identifier.
    pub log_tag: Option<String>,
    /// `-f addr` / `-r addr`: envelope sender.
    pub sender: Option<String>,
    /// `-F name`: sender full name.
    pub full_name: Option<String>,
    /// `-t`: take recipients from the headers.
    pub read_recipients: bool,
    /// `-i`: a lone `.` does not end the message.
    pub ignore_dots: bool,
    /// `-N dsn`, `-R ret`, `-V envid`: DSN parameters for command-line submission.
    pub dsn_notify: Option<String>,
    pub dsn_ret: Option<String>,
    pub dsn_envid: Option<String>,
    /// `-X file`: traffic log.
    pub traffic_log: Option<OsString>,
    /// `-v`: verbose.
    pub verbose: bool,
    /// Flags accepted for compatibility and otherwise ignored (`-n -G -U -hN -p -M -B -A`).
    pub ignored: Vec<String>,
    /// Words that are not flags: recipients (or the ruleset address for `-bv`).
    pub recipients: Vec<String>,
    /// `--unprivileged` (ours, not sendmail's): a first run without root — see
    /// [`super::unprivileged_overrides`].
    pub unprivileged: bool,
}

/// A command line sendmail would refuse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("option requires an argument -- '{0}'")]
    MissingValue(char),
    #[error("illegal option -- '{0}'")]
    Unknown(String),
    #[error("argument is not valid UTF-8: {0}")]
    NotUnicode(String),
    #[error("{0}")]
    Other(String),
}

impl From<lexopt::Error> for ArgsError {
    fn from(e: lexopt::Error) -> ArgsError {
        match e {
            lexopt::Error::MissingValue { option } => {
                ArgsError::MissingValue(option.and_then(|o| o.chars().last()).unwrap_or('?'))
            }
            lexopt::Error::UnexpectedOption(o) => ArgsError::Unknown(o),
            lexopt::Error::NonUnicodeValue(v) => {
                ArgsError::NotUnicode(v.to_string_lossy().into_owned())
            }
            other => ArgsError::Other(other.to_string()),
        }
    }
}

fn text(v: OsString) -> Result<String, ArgsError> {
    v.into_string()
        .map_err(|v| ArgsError::NotUnicode(v.to_string_lossy().into_owned()))
}

impl LowArgs {
    /// Parses argv without `argv[0]`.
    pub fn parse<I>(args: I) -> Result<LowArgs, ArgsError>
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        use lexopt::Arg::{Long, Short, Value};
        let mut p = lexopt::Parser::from_args(args);
        let mut a = LowArgs::default();
        while let Some(arg) = p.next()? {
            match arg {
                // -bX: operation mode
                Short('b') => a.mode = Some(text(p.value()?)?),
                // -C file: alternate configuration file
                Short('C') => a.config_file = Some(p.value()?),
                // -O Option=value: set option by long name
                Short('O') => {
                    let v = text(p.value()?)?;
                    let (name, value) = match v.split_once('=') {
                        Some((n, val)) => (n.trim().to_string(), val.to_string()),
                        None => (v.trim().to_string(), String::new()),
                    };
                    a.options.push((name, value));
                }
                // -oXvalue: set option by its one-letter name
                Short('o') => {
                    let v = text(p.value()?)?;
                    let mut chars = v.chars();
                    let letter = chars.next().ok_or(ArgsError::MissingValue('o'))?;
                    a.options
                        .push((letter.to_string(), chars.as_str().to_string()));
                }
                // -q[time]: queue run (once, or periodically with a time)
                Short('q') => {
                    let v = p.optional_value().map(text).transpose()?;
                    let v = v.unwrap_or_default();
                    a.queue_flags.push(v.clone());
                    a.queue = Some(v);
                }
                // -d flags: debugging
                Short('d') => a.debug.push(text(p.value()?)?),
                // -L tag: syslog identifier
                Short('L') => a.log_tag = Some(text(p.value()?)?),
                // -f addr / -r addr: envelope sender
                Short('f') | Short('r') => a.sender = Some(text(p.value()?)?),
                // -F name: full name of the sender
                Short('F') => a.full_name = Some(text(p.value()?)?),
                Short('t') => a.read_recipients = true,
                Short('i') => a.ignore_dots = true,
                Short('N') => a.dsn_notify = Some(text(p.value()?)?),
                Short('R') => a.dsn_ret = Some(text(p.value()?)?),
                Short('V') => a.dsn_envid = Some(text(p.value()?)?),
                Short('X') => a.traffic_log = Some(p.value()?),
                Short('v') => a.verbose = true,
                // Accepted for compatibility, with no effect yet.
                Short(c @ ('n' | 'G' | 'U' | 'm' | 's' | 'e' | 'E')) => {
                    a.ignored.push(format!("-{c}"))
                }
                Short(c @ ('h' | 'p' | 'M' | 'B' | 'A' | 'D')) => {
                    let v = text(p.value()?)?;
                    a.ignored.push(format!("-{c}{v}"));
                }
                Short('Q') => {
                    let v = p.optional_value().map(text).transpose()?;
                    a.quarantine = Some(v.unwrap_or_default());
                }
                Value(v) => a.recipients.push(text(v)?),
                // Ours: listeners on unprivileged loopback ports, state in the user's home.
                Long("unprivileged") => a.unprivileged = true,
                Short(c) => return Err(ArgsError::Unknown(c.to_string())),
                Long(l) => return Err(ArgsError::Unknown(format!("-{l}"))),
            }
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> LowArgs {
        LowArgs::parse(s.split_whitespace()).expect(s)
    }

    #[test]
    fn glued_values_as_sendmail_writes_them() {
        let a = parse("-bd -q30m -oi -OLogLevel=14");
        assert_eq!(a.mode.as_deref(), Some("d"));
        assert_eq!(a.queue.as_deref(), Some("30m"));
        assert_eq!(
            a.options,
            vec![("i".into(), "".into()), ("LogLevel".into(), "14".into())]
        );
    }

    #[test]
    fn separate_values() {
        let a = parse("-bD -C /etc/mail/test.cf -O DaemonPortOptions=Port=2525,Addr=::1 -L mta");
        assert_eq!(a.mode.as_deref(), Some("D"));
        assert_eq!(a.config_file, Some("/etc/mail/test.cf".into()));
        assert_eq!(
            a.options,
            vec![("DaemonPortOptions".into(), "Port=2525,Addr=::1".into())]
        );
        assert_eq!(a.log_tag.as_deref(), Some("mta"));
    }

    #[test]
    fn plain_q_runs_once_and_recipients_are_kept() {
        let a = parse("-q -f root -t -i alice bob");
        assert_eq!(a.queue.as_deref(), Some(""));
        assert_eq!(a.sender.as_deref(), Some("root"));
        assert!(a.read_recipients && a.ignore_dots);
        assert_eq!(a.recipients, vec!["alice", "bob"]);
    }

    #[test]
    fn debug_flags_and_ignored_flags() {
        let a = parse("-bD -d0.1 -n -h 12");
        assert_eq!(a.debug, vec!["0.1"]);
        assert_eq!(a.ignored, vec!["-n", "-h12"]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            LowArgs::parse(["-C"]).unwrap_err(),
            ArgsError::MissingValue('C')
        );
        assert_eq!(
            LowArgs::parse(["-Z"]).unwrap_err(),
            ArgsError::Unknown("Z".into())
        );
    }
}
