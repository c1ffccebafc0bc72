//! The cf's `local` mailer as a program: `Mlocal, P=/usr/bin/procmail, A=procmail -a $h -d $u`.
//!
//! In: the configuration's `local` mailer, one local recipient (the user name ruleset 0 gave,
//! `$u`) and the message. Out: the argv sendmail builds from `A=`, the bytes it writes on the
//! program's stdin, and the program's exit status read as a delivery [`Outcome`].
//!
//! As sendmail's `deliver()` (deliver.c) and op §5.4 (mailer flags) describe it:
//! * **argv**: each `A=` word with its macros expanded (`$u` the user, `$h` the host part —
//!   empty for local mail —, `$g`/`$f` the envelope sender, `$z` the user's home,
//!   `${client_addr}`, and every `D` macro of the cf); a word that expands to nothing stays an
//!   empty argument. `$u` loses its quotes under flag `s` and is lower-cased unless flag `u`.
//! * **stdin**: a `From <sender> <ctime>` line unless flag `n`; `Return-Path: <sender>` under
//!   flag `P`; the message with LF line ends, lines starting with `From ` quoted as `>From `
//!   under flag `E`.
//! * **who runs it**: when we are root, the recipient (its uid and gid) — or `DefaultUser` if
//!   the cf's mailer does not ask for a password-file check (flag `w`) and there is no such
//!   user —, except under flag `S`, which keeps root (mail.local and procmail change to the
//!   user themselves). Working directory the user's home, else `/` (`D=$z:/`).
//! * **exit status**: sysexits as sendmail reads them ([`Outcome::from_exit_code`]):
//!   `EX_TEMPFAIL` (75) deferred, `EX_NOUSER` (67) a bounce, and so on; a program that
//!   cannot be started is a temporary failure, never a lost message.
//!
//! Differences: one program run per recipient even under flag `m` (sendmail hands all the
//! recipients of one delivery to one run). Debian's `Mlocal` (FEATURE(local_procmail):
//! `F=lsDFMAw5:/|@qSPfhn9`) and the embedded default have no `m`, so there sendmail too
//! runs procmail once per recipient; the generic MAILER(local) (`F=…Prmn9`,
//! `A=mail -d $u`) has it.
//!
//! A `P=` that is not installed: in a cf read from a file, as sendmail — `Warning: program
//! P unsafe: No such file or directory` (info), `SYSERR(root): Cannot exec P: No such file
//! or directory` (crit) and the recipient deferred, `dsn=4.0.0, stat=Operating system error`
//! (its child exits `EX_OSERR`), so nothing is delivered elsewhere behind the admin's back.
//! Only our own default configuration — embedded, or installed by the Debian package as
//! `/etc/mail/sendmail.cf` with its `Mlocal` unchanged — (whose `Mlocal` names
//! `/usr/bin/procmail`, which may not be installed) falls back to the built-in mbox
//! delivery, as mail.local would write it ([`super::LocalDelivery`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{Delivery, MailUser, Outcome};
use crate::config::Config;
use crate::config::macros::{Layered, MacroLookup, expand};

/// The `local` mailer's program, ready to run.
#[derive(Debug, Clone)]
pub struct LocalMailer {
    /// `P=`: an absolute path to an executable file.
    pub path: PathBuf,
    /// `A=` words, macros unexpanded.
    pub argv: Vec<String>,
    /// `F=` letters.
    pub flags: String,
    /// The cf's `D` macros, for the `A=` words.
    pub macros: BTreeMap<String, String>,
    /// `UnixFromLine`, as [`super::from_line_template`] gives it.
    pub from_line: String,
}

/// One recipient's values for the `A=` macros.
#[derive(Debug, Clone, Default)]
pub struct Recipient<'a> {
    /// `$u` as ruleset 0 gave it.
    pub user: &'a str,
    /// `$h`: the host part, empty for local mail.
    pub host: &'a str,
    /// `$z`: the user's home directory, if known.
    pub home: Option<&'a str>,
    /// `${client_addr}`: the SMTP client's address, if any.
    pub client_addr: Option<&'a str>,
}

impl LocalMailer {
    /// The cf's `local` mailer program; None without one (no such mailer, `[IPC]`, a `P=`
    /// that is not an absolute path) and, for our own default configuration only
    /// ([`is_our_default`]), when its program is not installed here (then the built-in mbox delivery serves).
    pub fn from_config(cfg: &Config) -> Option<LocalMailer> {
        let m = cfg.mailer("local")?;
        let path = PathBuf::from(&m.path);
        let usable = match is_our_default(cfg, m) {
            true => executable(&path),
            false => true,
        };
        (path.is_absolute() && usable).then(|| LocalMailer {
            path,
            argv: m.argv.clone(),
            flags: m.flags.clone(),
            macros: cfg.macros.clone(),
            from_line: super::from_line_template(cfg),
        })
    }

    pub fn has_flag(&self, f: char) -> bool {
        self.flags.contains(f)
    }

    /// `$u` as this mailer gets it.
    pub fn user_arg(&self, user: &str) -> String {
        let user = if self.has_flag('s') {
            user.replace('"', "")
        } else {
            user.to_string()
        };
        if self.has_flag('u') {
            user
        } else {
            user.to_lowercase()
        }
    }

    /// The argv for one recipient (`argv[0]` included, as `A=` has it).
    pub fn argv_for(&self, r: &Recipient, d: &Delivery) -> Vec<String> {
        // Values from the message are data, never macro text: `$` is doubled.
        let lit = |s: &str| s.replace('$', "$$");
        let mut top: BTreeMap<String, String> = BTreeMap::new();
        top.insert("u".into(), lit(&self.user_arg(r.user)));
        top.insert("h".into(), lit(r.host));
        top.insert("g".into(), lit(d.envelope_from()));
        top.insert("f".into(), lit(d.envelope_from()));
        if let Some(home) = r.home {
            top.insert("z".into(), lit(home));
        }
        if let Some(a) = r.client_addr {
            top.insert(
                "client_addr".into(),
                lit(a.strip_prefix("IPv6:").unwrap_or(a)),
            );
        }
        let lookup = Layered {
            top: &top,
            base: &self.macros,
        };
        self.argv.iter().map(|w| expand(w, &lookup)).collect()
    }

    /// What the program reads on stdin.
    pub fn input(&self, d: &Delivery, when: SystemTime) -> Vec<u8> {
        input(&self.flags, d, &self.from_line, when)
    }

    /// Runs the program for one recipient. `user` is the account when there is one;
    /// `default_user` the ids to run as without one (when root). Blocking.
    pub fn deliver(
        &self,
        r: &Recipient,
        user: Option<&MailUser>,
        default_user: Option<(u32, u32)>,
        d: &Delivery,
        timeout: Duration,
    ) -> Outcome {
        if self.has_flag('w') && user.is_none() {
            return Outcome::user_unknown();
        }
        if !executable(&self.path) {
            return self.cannot_exec(d);
        }
        let argv = self.argv_for(r, d);
        let home = user
            .map(|u| u.home.clone())
            .filter(|h| h.is_dir())
            .unwrap_or_else(|| PathBuf::from("/"));
        let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = vec![
            ("PATH".into(), "/bin:/usr/bin".into()),
            ("HOME".into(), home.clone().into()),
            ("SENDER".into(), d.envelope_from().into()),
        ];
        if let Some(u) = user {
            env.push(("USER".into(), u.name.clone().into()));
        }
        let ids = match user {
            Some(u) => Some((u.uid, u.gid)),
            None => default_user,
        };
        let ids = ids.filter(|_| nix::unistd::geteuid().is_root() && !self.has_flag('S'));
        let p = super::Program {
            path: self.path.clone(),
            arg0: argv.first().map(Into::into),
            args: argv.iter().skip(1).map(Into::into).collect(),
            env,
            cwd: home,
            ids,
        };
        match super::run_command(&p, self.input(d, SystemTime::now()), timeout) {
            Ok(run) => run.outcome,
            Err(e) => Outcome::Temporary {
                dsn: "4.3.0".into(),
                reason: format!("cannot run {}: {e}", self.path.display()),
            },
        }
    }
}

/// [`crate::config::Config::file`] of the embedded default configuration.
const EMBEDDED_CF: &str = "<embedded default.cf>";

/// Whether `cfg` is our own default configuration: the embedded one, or the copy the
/// Debian package installs as `/etc/mail/sendmail.cf` (recognised by its `local` mailer,
/// `P=`, `F=` and `A=` unchanged from the embedded default's). Only there does a missing
/// `P=` program fall back to the built-in mbox delivery; an admin's own `Mlocal` is run
/// as written, or deferred as sendmail does.
fn is_our_default(cfg: &Config, local: &crate::config::Mailer) -> bool {
    static DEFAULT_LOCAL: std::sync::LazyLock<Option<(String, String, Vec<String>)>> =
        std::sync::LazyLock::new(|| {
            let cfg = Config::from_str(EMBEDDED_CF, crate::config::DEFAULT_CF, &[]).ok()?;
            let m = cfg.mailer("local")?;
            Some((m.path.clone(), m.flags.clone(), m.argv.clone()))
        });
    cfg.file.as_path() == std::path::Path::new(EMBEDDED_CF)
        || DEFAULT_LOCAL.as_ref().is_some_and(|(path, flags, argv)| {
            *path == local.path && *flags == local.flags && *argv == local.argv
        })
}

/// A regular file with an execute bit.
fn executable(path: &std::path::Path) -> bool {
    std::fs::metadata(path).is_ok_and(|md| md.is_file() && md.permissions().mode() & 0o111 != 0)
}

impl LocalMailer {
    /// The program cannot be run: sendmail's `safefile` warning before the fork and its
    /// child's `Cannot exec` SYSERR (`RealUserName`: who we run as), then the exit status
    /// `EX_OSERR` read as any mailer's.
    fn cannot_exec(&self, d: &Delivery) -> Outcome {
        let why = match std::fs::metadata(&self.path) {
            Err(e) => crate::log::open_error_text(&e),
            Ok(md) if md.is_dir() => nix::errno::Errno::EISDIR.desc().to_string(),
            Ok(_) => nix::errno::Errno::EACCES.desc().to_string(),
        };
        if let Some((logger, qid)) = d.log {
            let path = self.path.display();
            logger.log(
                crate::log::Severity::Info,
                qid,
                format_args!("Warning: program {path} unsafe: {why}"),
            );
            let user =
                crate::log::real_user_name().unwrap_or_else(|| nix::unistd::getuid().to_string());
            logger.log(
                crate::log::Severity::Crit,
                qid,
                format_args!("SYSERR({user}): Cannot exec {path}: {why}"),
            );
        }
        Outcome::from_exit_code(crate::sysexits::EX_OSERR)
    }
}

/// What a mailer program with flags `flags` reads on stdin: a `From <sender> <ctime>` line
/// unless flag `n`, `Return-Path: <sender>` under flag `P`, the message with lines starting
/// with `From ` quoted as `>From ` under flag `E`.
pub fn input(flags: &str, d: &Delivery, from_template: &str, when: SystemTime) -> Vec<u8> {
    let mut out = Vec::with_capacity(d.message.len() + 128);
    if !flags.contains('n') {
        out.extend_from_slice(super::from_line(from_template, d, when).as_bytes());
    }
    if flags.contains('P') {
        super::push_return_path(&mut out, d);
    }
    let quote = flags.contains('E');
    for line in d.message.split_inclusive(|&b| b == b'\n') {
        if quote && line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    out
}

impl MacroLookup for &BTreeMap<String, String> {
    fn macro_value(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name).map(|v| Cow::Borrowed(v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailer(line: &str) -> LocalMailer {
        let cfg = Config::from_str("t.cf", &format!("Djmta.example.test\n{line}\n"), &[]).unwrap();
        let m = cfg.mailer("local").unwrap();
        LocalMailer {
            path: PathBuf::from(&m.path),
            argv: m.argv.clone(),
            flags: m.flags.clone(),
            macros: cfg.macros.clone(),
            from_line: crate::deliver::local::DEFAULT_FROM_LINE.to_string(),
        }
    }

    const MSG: &[u8] = b"Subject: hi\n\nFrom me\nbye\n";

    fn d(sender: &str) -> Delivery<'_> {
        Delivery {
            sender,
            message: MSG,
            rpath: None,
            client_addr: None,
            log: None,
        }
    }

    /// The package installs the embedded default as /etc/mail/sendmail.cf: that copy is
    /// still ours (a missing procmail falls back to the built-in mbox); a cf whose `Mlocal`
    /// differs in any of P=, F=, A= is the admin's.
    #[test]
    fn our_default_is_recognised_wherever_it_is_read_from() {
        let installed =
            Config::from_str("/etc/mail/sendmail.cf", crate::config::DEFAULT_CF, &[]).unwrap();
        assert!(is_our_default(
            &installed,
            installed.mailer("local").unwrap()
        ));
        for (from, to) in [
            ("P=/usr/bin/procmail", "P=/usr/local/bin/procmail"),
            ("A=procmail -a $h -d $u", "A=procmail -d $u"),
            ("F=lsDFMAw5:/|@qSPfhn9", "F=lsDFMAw5:/|@qSPfn9"),
        ] {
            assert!(crate::config::DEFAULT_CF.contains(from), "{from}");
            let text = crate::config::DEFAULT_CF.replace(from, to);
            let site = Config::from_str("/etc/mail/sendmail.cf", &text, &[]).unwrap();
            assert!(
                !is_our_default(&site, site.mailer("local").unwrap()),
                "{to}"
            );
        }
    }

    #[test]
    fn procmail_argv_as_sendmail_builds_it() {
        let m = mailer(
            "Mlocal, P=/usr/bin/procmail, F=lsDFMAw5:/|@qSPfhn9, S=EnvFromL/HdrFromL, R=EnvToL/HdrToL, T=DNS/RFC822/X-Unix, A=procmail -a $h -d $u",
        );
        let r = Recipient {
            user: "Alice",
            ..Recipient::default()
        };
        assert_eq!(
            m.argv_for(&r, &d("bob@example.test")),
            ["procmail", "-a", "", "-d", "alice"]
        );
    }

    #[test]
    fn debian_sensible_mda_argv_with_sender_and_client_address() {
        let m = mailer(
            "Mlocal, P=/usr/sbin/sensible-mda, F=lsDFMAw5:/|@qPn9S, A=sensible-mda $g $u $h ${client_addr}",
        );
        let r = Recipient {
            user: "\"bob\"",
            client_addr: Some("IPv6:0:0:0:0:0:0:0:1"),
            ..Recipient::default()
        };
        assert_eq!(
            m.argv_for(&r, &d("alice@client.example")),
            [
                "sensible-mda",
                "alice@client.example",
                "bob",
                "",
                "0:0:0:0:0:0:0:1"
            ]
        );
        assert_eq!(
            m.argv_for(&r, &d(""))[1],
            "MAILER-DAEMON",
            "the null sender"
        );
    }

    #[test]
    fn a_user_name_is_never_macro_text() {
        let m = mailer("Mlocal, P=/bin/x, F=lsu, A=x $u $j");
        let r = Recipient {
            user: "Ev$j",
            ..Recipient::default()
        };
        assert_eq!(m.argv_for(&r, &d("s@x")), ["x", "Ev$j", "mta.example.test"]);
    }

    #[test]
    fn stdin_follows_the_n_p_and_e_flags() {
        let plain = mailer("Mlocal, P=/bin/x, F=lsn, A=x $u");
        assert_eq!(plain.input(&d("s@x"), SystemTime::UNIX_EPOCH), MSG);
        let full = mailer("Mlocal, P=/bin/x, F=lsPE, A=x $u");
        let text = String::from_utf8(full.input(&d("s@x"), SystemTime::UNIX_EPOCH)).unwrap();
        let (from, rest) = text.split_once('\n').unwrap();
        assert!(
            from.starts_with("From s@x ") && from.ends_with("1970"),
            "{from}"
        );
        assert_eq!(rest, "Return-Path: <s@x>\nSubject: hi\n\n>From me\nbye\n");
    }

    /// sendmail 8.17.1.9, Debian's cf without `/usr/sbin/sensible-mda` (differential
    /// scenario 88): the warning, the SYSERR, and the recipient deferred.
    #[test]
    fn a_program_that_is_not_installed_defers_with_sendmails_lines() {
        let cf = "Mlocal, P=/nonexistent/procmail, F=lsn, A=procmail -d $u\n";
        let cfg = Config::from_str("t.cf", cf, &[]).unwrap();
        let m = LocalMailer::from_config(&cfg).expect("a cf read from a file keeps its P=");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("maillog");
        let logger = crate::log::Logger::new(crate::log::LogConfig {
            syslog: false,
            file: Some(file.clone()),
            ..Default::default()
        })
        .unwrap();
        let d = Delivery {
            log: Some((&logger, Some("QID1"))),
            ..d("a@b.example")
        };
        let r = Recipient {
            user: "root",
            ..Default::default()
        };
        let o = m.deliver(&r, None, None, &d, Duration::from_secs(5));
        assert_eq!(
            (o.dsn(), o.stat().as_str(), o.is_temporary()),
            ("4.0.0", "Operating system error", true)
        );
        let log = std::fs::read_to_string(&file).unwrap();
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .map_or_else(|| nix::unistd::getuid().to_string(), |u| u.name);
        assert!(
            log.contains(
                "QID1: Warning: program /nonexistent/procmail unsafe: No such file or directory\n"
            ),
            "{log}"
        );
        assert!(
            log.contains(&format!(
                "QID1: SYSERR({user}): Cannot exec /nonexistent/procmail: No such file or directory\n"
            )),
            "{log}"
        );
        // Only the embedded default falls back to the built-in mbox delivery.
        let cfg = Config::from_str(EMBEDDED_CF, cf, &[]).unwrap();
        assert!(LocalMailer::from_config(&cfg).is_none());
        let cfg = Config::from_str("t.cf", "Mlocal, P=/bin/cat, F=lsn, A=cat\n", &[]).unwrap();
        assert_eq!(
            LocalMailer::from_config(&cfg).unwrap().path,
            PathBuf::from("/bin/cat")
        );
    }
}
