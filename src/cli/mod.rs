//! The command line: `argv[0]` and sendmail's flags → one [`Invocation`] (what to do, with what).
//!
//! In: the program name (`sendmail`, `mailq`, `newaliases`, `mailstats`) and the words after it.
//! Out: an [`Invocation`]: the [`Mode`], the configuration source and its `-O`/`-o` overrides,
//! and the rest of what was typed. [`args`] reads the words ([`args::LowArgs`], as typed); this
//! module decides what they mean, as sendmail(8) does: `-bd` daemon, `-bD` daemon in the
//! foreground, `-bp` print the queue, `-q` alone runs the queue, and so on.

pub mod args;
pub mod manual;

use std::path::{Path, PathBuf};

pub use args::{ArgsError, LowArgs};

use crate::config::{Override, Source};

/// The system configuration file read when `-C` is not given.
pub const SYSTEM_CF: &str = "/etc/mail/sendmail.cf";

/// What this run of the binary does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `-bd` (detach) / `-bD` (stay in the foreground): the SMTP daemon.
    Daemon { foreground: bool },
    /// `-bs`: SMTP on stdin/stdout.
    Smtp,
    /// `-bp`, `mailq`: list the queue.
    PrintQueue,
    /// `-bt`: address test mode.
    AddressTest,
    /// `-bv`: verify the recipients.
    Verify,
    /// `-bi`, `newaliases`: rebuild the alias database.
    InitAliases,
    /// `-q` without `-bd`: run the queue once (or periodically with a time).
    QueueRun,
    /// `mailstats`: print the statistics file.
    Mailstats,
    /// `-bm` (the default): deliver a message read from stdin.
    Deliver,
}

/// One run, fully interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub mode: Mode,
    pub source: Source,
    pub overrides: Vec<Override>,
    /// `-q` interval for a daemon (`-bd -q30m`), as typed.
    pub queue_interval: Option<String>,
    /// The whole command line, for the pid file and `started as:`.
    pub command_line: String,
    pub args: LowArgs,
}

/// A command line that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// sendmail's words (main.c): `Frozen configurations unsupported` for `-bz`, else
    /// `Invalid operation mode X`; printed without a `sendmail:` prefix, exit 64.
    #[error("{}", if .0 == "z" { "Frozen configurations unsupported".to_string() } else { format!("Invalid operation mode {}", .0) })]
    UnknownMode(String),
    #[error("mode -b{0} is not supported yet")]
    Unsupported(String),
}

/// Interprets argv (including `argv[0]`). `system_cf` is the path read without `-C` (if present).
pub fn parse(argv: &[String], system_cf: &Path) -> Result<Invocation, CliError> {
    let prog = argv
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let low = LowArgs::parse(argv.iter().skip(1))?;
    let mode = match (prog.as_str(), low.mode.as_deref()) {
        ("mailq", _) => Mode::PrintQueue,
        ("newaliases", _) => Mode::InitAliases,
        ("mailstats", _) => Mode::Mailstats,
        (_, Some("d")) => Mode::Daemon { foreground: false },
        (_, Some("D")) => Mode::Daemon { foreground: true },
        (_, Some("s")) => Mode::Smtp,
        (_, Some("p")) => Mode::PrintQueue,
        (_, Some("t")) => Mode::AddressTest,
        (_, Some("v")) => Mode::Verify,
        (_, Some("i")) => Mode::InitAliases,
        (_, Some("m")) => Mode::Deliver,
        (_, Some(m @ ("a" | "C" | "h" | "H" | "P"))) => {
            return Err(CliError::Unsupported(m.to_string()));
        }
        (_, Some(other)) => return Err(CliError::UnknownMode(other.to_string())),
        (_, None) if low.queue.is_some() => Mode::QueueRun,
        (_, None) => Mode::Deliver,
    };
    let source = match &low.config_file {
        Some(f) => Source::File(PathBuf::from(f)),
        None if system_cf.exists() => Source::File(system_cf.to_path_buf()),
        None => Source::Embedded,
    };
    let mut overrides: Vec<Override> = Vec::new();
    if low.unprivileged {
        overrides.extend(unprivileged_overrides(&unprivileged_dir()));
    }
    overrides.extend(low.options.iter().map(|(name, value)| Override {
        name: name.clone(),
        value: value.clone(),
    }));
    let queue_interval = match &mode {
        // The -q flag that is a time (`-q30m`), not a limit (`-qRexample.com`).
        Mode::Daemon { .. } => low
            .queue_flags
            .iter()
            .find(|q| parse_time(q, 'm').is_some())
            .cloned(),
        _ => None,
    };
    Ok(Invocation {
        mode,
        source,
        overrides,
        queue_interval,
        command_line: argv.join(" "),
        args: low,
    })
}

/// Where `--unprivileged` keeps its queue, pid file, statistics and log:
/// `$XDG_STATE_HOME/sendmail-rs`, else `$HOME/.local/state/sendmail-rs`, else
/// `/tmp/sendmail-rs-<uid>`.
pub fn unprivileged_dir() -> PathBuf {
    let nonempty = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    nonempty("XDG_STATE_HOME")
        .or_else(|| nonempty("HOME").map(|h| h.join(".local/state")))
        .map(|d| d.join("sendmail-rs"))
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/sendmail-rs-{}", nix::unistd::getuid())))
}

/// `--unprivileged`: what a first run without root needs, as `-O` options placed before the
/// command line's own (which can still change any of them): the embedded default's four
/// daemons on loopback ports 2525 (MTA) and 2587 (MSA, `M=Ea`), IPv6 and IPv4; the queue,
/// pid file, statistics file and mail log (`LogFile`) under `dir`.
pub fn unprivileged_overrides(dir: &Path) -> Vec<Override> {
    let o = |name: &str, value: String| Override {
        name: name.to_string(),
        value,
    };
    let dpo = |v: &str| o("DaemonPortOptions", v.to_string());
    vec![
        dpo("Name=MTA-v6, Family=inet6, Port=2525, Addr=::1"),
        dpo("Name=MTA-v4, Family=inet, Port=2525, Addr=127.0.0.1"),
        dpo("Name=MSA-v6, Family=inet6, Port=2587, Addr=::1, M=Ea"),
        dpo("Name=MSA-v4, Family=inet, Port=2587, Addr=127.0.0.1, M=Ea"),
        o("QueueDirectory", dir.join("mqueue").display().to_string()),
        o("PidFile", dir.join("sendmail.pid").display().to_string()),
        o("StatusFile", dir.join("sendmail.st").display().to_string()),
        o("LogFile", dir.join("maillog").display().to_string()),
    ]
}

/// Options a non-root user may set with `-O`/`-o` and keep the privilege (sendmail's
/// options marked safe: they change how this one message is handled, never a path, a
/// user or a map).
pub const SAFE_OPTIONS: &[&str] = &[
    "DeliveryMode",
    "d",
    "ErrorMode",
    "e",
    "IgnoreDots",
    "i",
    "SendMimeErrors",
    "j",
    "MeToo",
    "m",
    "Verbose",
    "v",
    "SevenBitInput",
    "7",
    "EightBitMode",
    "8",
    "OldStyleHeaders",
    "o",
];

/// Once the command line is known: keeps the saved privilege only for a non-root user's
/// submission or `mailq` with the system configuration and safe options.
pub fn settle_privilege(inv: &Invocation) {
    if !keeps_privilege(inv, nix::unistd::getuid().is_root()) {
        crate::setgid::drop_for_good();
    }
}

/// Whether this invocation may keep the saved privilege.
pub fn keeps_privilege(inv: &Invocation, root: bool) -> bool {
    let mode_needs_it = matches!(inv.mode, Mode::Deliver | Mode::Smtp | Mode::PrintQueue);
    let safe_options = inv
        .args
        .options
        .iter()
        .all(|(name, _)| SAFE_OPTIONS.iter().any(|s| s.eq_ignore_ascii_case(name)));
    !root
        && mode_needs_it
        && inv.args.config_file.is_none()
        && !inv.args.unprivileged
        && safe_options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprivileged_puts_everything_in_one_directory_and_the_command_line_wins() {
        let argv: Vec<String> = "sendmail -bD --unprivileged -O LogLevel=12"
            .split_whitespace()
            .map(String::from)
            .collect();
        let i = parse(&argv, Path::new("/nonexistent/sendmail.cf")).unwrap();
        let names: Vec<&str> = i.overrides.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            names.iter().filter(|n| **n == "DaemonPortOptions").count(),
            4
        );
        assert_eq!(names.last(), Some(&"LogLevel"));
        let dir = unprivileged_dir();
        for name in ["QueueDirectory", "PidFile", "StatusFile", "LogFile"] {
            let o = i.overrides.iter().find(|o| o.name == name).unwrap();
            assert!(Path::new(&o.value).starts_with(&dir), "{name}={}", o.value);
        }
    }

    fn inv(line: &str) -> Invocation {
        let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(&argv, Path::new("/nonexistent/sendmail.cf")).expect(line)
    }

    #[test]
    fn modes_from_flags() {
        assert_eq!(inv("sendmail -bd").mode, Mode::Daemon { foreground: false });
        assert_eq!(inv("sendmail -bD").mode, Mode::Daemon { foreground: true });
        assert_eq!(inv("sendmail -bp").mode, Mode::PrintQueue);
        assert_eq!(inv("sendmail -q").mode, Mode::QueueRun);
        assert_eq!(inv("sendmail alice").mode, Mode::Deliver);
    }

    #[test]
    fn modes_from_program_name() {
        assert_eq!(inv("/usr/bin/mailq").mode, Mode::PrintQueue);
        assert_eq!(inv("newaliases").mode, Mode::InitAliases);
        assert_eq!(inv("/usr/sbin/mailstats").mode, Mode::Mailstats);
    }

    #[test]
    fn daemon_with_queue_interval_and_config() {
        let i = inv("/usr/sbin/sendmail -bd -q30m -C /x.cf -O LogLevel=14");
        assert_eq!(i.queue_interval.as_deref(), Some("30m"));
        assert_eq!(i.source, Source::File("/x.cf".into()));
        assert_eq!(
            i.overrides[0],
            Override {
                name: "LogLevel".into(),
                value: "14".into()
            }
        );
        assert_eq!(
            i.command_line,
            "/usr/sbin/sendmail -bd -q30m -C /x.cf -O LogLevel=14"
        );
    }

    #[test]
    fn a_queue_limit_is_not_an_interval() {
        let i = inv("sendmail -bd -qRexample.com -q1h");
        assert_eq!(i.queue_interval.as_deref(), Some("1h"));
        assert_eq!(i.args.queue_flags, ["Rexample.com", "1h"]);
        assert_eq!(inv("sendmail -bd -qSroot").queue_interval, None);
    }

    #[test]
    fn embedded_default_without_system_cf() {
        assert_eq!(inv("sendmail -bD").source, Source::Embedded);
    }

    #[test]
    fn bad_modes() {
        let argv = vec!["sendmail".to_string(), "-bz".to_string()];
        assert!(matches!(
            parse(&argv, Path::new("/nonexistent")),
            Err(CliError::UnknownMode(m)) if m == "z"
        ));
        // the oracle's words
        assert_eq!(
            CliError::UnknownMode("z".into()).to_string(),
            "Frozen configurations unsupported"
        );
        assert_eq!(
            CliError::UnknownMode("q".into()).to_string(),
            "Invalid operation mode q"
        );
    }
}

/// sendmail's time syntax (`30m`, `1h30m`, `90`, `2d`): units `s m h d w`, a bare number in
/// `default_unit`. Returns seconds, or None for malformed text.
pub fn parse_time(text: &str, default_unit: char) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = match rest.chars().next() {
            Some(c) if c.is_ascii_alphabetic() => {
                rest = &rest[1..];
                c
            }
            _ => default_unit,
        };
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(secs)?)?;
    }
    Some(total)
}

/// A `-q` interval as sendmail prints it in `starting daemon`: `00:30:00`, `1+00:00:00`.
pub fn format_interval(text: &str) -> String {
    let Some(secs) = parse_time(text, 'm') else {
        return text.to_string();
    };
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}+{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn sendmail_time_syntax() {
        assert_eq!(parse_time("30m", 'm'), Some(1800));
        assert_eq!(parse_time("1h30m", 'm'), Some(5400));
        assert_eq!(parse_time("90", 's'), Some(90));
        assert_eq!(parse_time("2x", 'm'), None);
        assert_eq!(parse_time("", 'm'), None);
        assert_eq!(format_interval("30m"), "00:30:00");
        assert_eq!(format_interval("1d2h"), "1+02:00:00");
    }

    // The set-group-id privilege (crate::setgid).
    fn inv_of(args: &[&str]) -> Invocation {
        let argv: Vec<String> = std::iter::once("sendmail")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        parse(&argv, Path::new("/nonexistent/sendmail.cf")).unwrap()
    }

    #[test]
    fn a_users_submission_and_mailq_keep_it() {
        assert!(keeps_privilege(&inv_of(&["-t"]), false));
        assert!(keeps_privilege(
            &inv_of(&["-oi", "-f", "me", "root"]),
            false
        ));
        assert!(keeps_privilege(&inv_of(&["-bs"]), false));
        assert!(keeps_privilege(&inv_of(&["-bp"]), false));
        assert!(keeps_privilege(
            &inv_of(&["-ODeliveryMode=b", "root"]),
            false
        ));
    }

    #[test]
    fn root_other_modes_other_files_drop_it() {
        assert!(!keeps_privilege(&inv_of(&["-t"]), true));
        assert!(!keeps_privilege(&inv_of(&["-bd"]), false));
        assert!(!keeps_privilege(&inv_of(&["-q"]), false));
        assert!(!keeps_privilege(&inv_of(&["-bi"]), false));
        assert!(!keeps_privilege(&inv_of(&["-bv", "root"]), false));
        assert!(!keeps_privilege(
            &inv_of(&["-C", "/tmp/x.cf", "root"]),
            false
        ));
        assert!(!keeps_privilege(
            &inv_of(&["-OQueueDirectory=/tmp/q", "root"]),
            false
        ));
        assert!(!keeps_privilege(&inv_of(&["-oQ/tmp/q", "root"]), false));
        assert!(!keeps_privilege(
            &inv_of(&["-OAliasFile=/tmp/a", "-bp"]),
            false
        ));
    }
}
