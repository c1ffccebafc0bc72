//! Local delivery: a message and one local [`Target`] in, an [`Outcome`] out.
//!
//! In: the message (headers, blank line, body; LF line ends, as the queue keeps it), its
//! envelope sender, and a target from alias expansion ([`crate::aliases::Target`]): a local
//! user, a `/file`, a `|program`. Out: [`Outcome::Delivered`], or a temporary / permanent
//! failure carrying sendmail's `dsn=` code and `stat=` text for the `to=` log line.
//!
//! * **mbox** (a user's `<spool>/USER`, `/var/mail` by default, and `/file` targets): a
//!   `From <sender> <ctime date>` line, an optional `Return-Path: <sender>` header (the
//!   local mailer's `P` flag), the message with every line that starts with `From ` quoted
//!   as `>From ` — the *mboxo* rule mail.local and sendmail's `E` mailer flag apply (lines
//!   already starting with `>From ` are left alone) — then a blank line. Locking, as mail
//!   readers expect: the dotlock `USER.lock` beside the mailbox (created with `O_EXCL`; one
//!   older than [`LocalDelivery::stale_lock`] is removed), then an `fcntl` write lock and a
//!   `flock` on the mailbox itself (Linux keeps the two apart, so readers using either are
//!   excluded). The message is appended — together with every other message for that
//!   mailbox that is ready, under the same lock ([`batch`]) — fsynced once, and on an error
//!   the file is truncated back: a mailbox never holds half a message, and the failure is
//!   temporary. `/file` targets are locked with `fcntl` + `flock` only (no dotlock: the
//!   directory is usually not ours).
//! * **Maildir** (a `/file` target ending in `/`, or [`MailboxFormat::Maildir`] for users):
//!   written unnamed in `new/` (`O_TMPFILE`; where that cannot be, in `tmp/`), fsynced,
//!   linked (renamed) into `new/` as `<secs>.<pid>_<seq>.<host>`, and `new/`
//!   fsynced once for every delivery renamed into it meanwhile ([`batch`]; the files' own
//!   fsyncs run side by side on the delivering threads, so that their writeback, inode
//!   blocks and cache flushes are shared by whichever wait together — [`batch`] gives what
//!   was weighed against that and measured); every directory below the trusted base is opened relative to its parent
//!   with `O_NOFOLLOW` (and must belong to the user, for a user's Maildir), and `tmp`
//!   and `new` are kept open for the next deliveries while the path still leads to them.
//! * **`|program`**: `/bin/sh -c <command text>` (only the alias's own text goes to the
//!   shell, never an address), clean environment `PATH=/bin:/usr/bin`, `SHELL=/bin/sh`,
//!   `HOME`, `USER` and `LOGNAME` (of the owner), `SENDER`, working directory the user's home or `/` (sendmail's `D=$z:/`), the message
//!   on stdin, a time limit. The exit status maps through sysexits(3) as sendmail's
//!   `giveresponse` does: `EX_TEMPFAIL`, `EX_OSERR`, `EX_IOERR` and death by a signal are
//!   temporary, everything else permanent.
//!
//! * **The cf's rulesets** ([`LocalDelivery::rules`]): as sendmail's `deliver()` does for
//!   every mailer, each target's mailer — `local` for a user, `prog` for a `|program`,
//!   `*file*` for a `/file` — rewrites the envelope sender into `$g` (rulesets 3, 1, its
//!   `S=`, 4: the `From ` line and `Return-Path:`; `<>` becomes `MAILER-DAEMON` through
//!   the `local` and `prog` mailers' `EnvFromL`, and stays empty for `*file*`) and the
//!   address headers (rulesets 1/2, `S=`/`R=` header parts, 4) before anything is written
//!   ([`crate::rules::deliver::for_local`]); a `|program` then reads what the cf's `prog`
//!   mailer's flags ask for (a `From ` line unless `n`). Without rulesets the message is
//!   written as queued and a program reads the message alone.
//!
//! Privileges (when running as root): a `|program` runs as its owner — the user whose
//! `.forward` named it, the non-root owner of an include file — or as `DefaultUser` for
//! the system alias file (std's `Command::uid/gid`, which also drops supplementary groups).
//! File work stays in this process as root, made safe by checks on the open descriptor: a
//! user's mailbox is opened without following symlinks, must be a regular file with one
//! link owned by that user, and a newly created one (`O_EXCL`) is given to the user with
//! mode 0600; a `/file` named on a user's behalf must already exist and belong to them; a
//! Maildir on a `.forward`'s behalf is refused. Running file deliveries fully as the recipient
//! (sendmail changes uid for them) is still to come.
//!
//! Sources: sendmail 8.17 `deliver.c` (`mailfile`, `putfromline`, `giveresponse`),
//! `conf.c` (`SysExMsg`), mail.local(8); RFC 3463 for the status codes; the Maildir
//! specification (cr.yp.to/proto/maildir.html) for the unique names.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::asuser::{Who, open_as};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::aliases::Target;
use crate::queue::Message;
use crate::sysexits::*;

/// What happened to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `dsn=2.0.0, stat=Sent`.
    Delivered,
    /// Try again later: `stat=Deferred: <reason>`.
    Temporary { dsn: String, reason: String },
    /// Bounce: `stat=<reason>`.
    Permanent { dsn: String, reason: String },
}

impl Outcome {
    fn temp(dsn: &str, reason: impl Into<String>) -> Outcome {
        Outcome::Temporary {
            dsn: dsn.to_string(),
            reason: reason.into(),
        }
    }

    fn perm(dsn: &str, reason: impl Into<String>) -> Outcome {
        Outcome::Permanent {
            dsn: dsn.to_string(),
            reason: reason.into(),
        }
    }

    /// The unknown-user bounce: `dsn=5.1.1, stat=User unknown`.
    pub fn user_unknown() -> Outcome {
        Outcome::perm("5.1.1", "User unknown")
    }

    /// The `dsn=` field.
    pub fn dsn(&self) -> &str {
        match self {
            Outcome::Delivered => "2.0.0",
            Outcome::Temporary { dsn, .. } | Outcome::Permanent { dsn, .. } => dsn,
        }
    }

    /// The `stat=` field: `Sent`, `Deferred: …`, or the permanent reason. A mailer's
    /// temporary exit status other than `EX_TEMPFAIL` is its sysexits text alone, as
    /// sendmail's `giveresponse` words it (the oracle, a `Mlocal` program that cannot be
    /// executed — its child exits `EX_OSERR`: `dsn=4.0.0, stat=Operating system error`).
    pub fn stat(&self) -> String {
        match self {
            Outcome::Delivered => "Sent".to_string(),
            Outcome::Temporary { reason, .. }
                if reason == "Deferred" || BARE_TEMPORARY_TEXTS.contains(&reason.as_str()) =>
            {
                reason.clone()
            }
            Outcome::Temporary { reason, .. } => format!("Deferred: {reason}"),
            Outcome::Permanent { reason, .. } => reason.clone(),
        }
    }

    pub fn is_temporary(&self) -> bool {
        matches!(self, Outcome::Temporary { .. })
    }

    /// sendmail's reading of a mailer's exit status (`giveresponse`, `SysExMsg`).
    pub fn from_exit_code(code: i32) -> Outcome {
        let (smtp, dsn, text) = match code {
            EX_OK => return Outcome::Delivered,
            EX_USAGE => (500, "5.0.0", "Bad usage"),
            EX_DATAERR => (501, "5.6.0", "Data format error"),
            EX_NOINPUT => (550, "5.3.0", "Cannot open input"),
            EX_NOUSER => (550, "5.1.1", "User unknown"),
            EX_NOHOST => (550, "5.1.2", "Host unknown"),
            EX_UNAVAILABLE => (554, "5.0.0", "Service unavailable"),
            EX_SOFTWARE => (554, "5.3.0", "Internal error"),
            EX_OSERR => (451, "4.0.0", "Operating system error"),
            EX_OSFILE => (554, "5.3.5", "System file missing"),
            EX_CANTCREAT => (550, "5.0.0", "Can't create output"),
            EX_IOERR => (451, "4.0.0", "I/O error"),
            EX_TEMPFAIL => (450, "4.0.0", "Deferred"),
            EX_PROTOCOL => (554, "5.5.0", "Remote protocol error"),
            EX_NOPERM => (550, "5.0.0", "Insufficient permission"),
            EX_CONFIG => (554, "5.3.5", "Local configuration error"),
            _ => return Outcome::perm("5.3.0", format!("unknown mailer error {code}")),
        };
        if smtp < 500 {
            Outcome::temp(dsn, text)
        } else {
            Outcome::perm(dsn, text)
        }
    }
}

/// The sysexits texts of temporary exit statuses other than `EX_TEMPFAIL`
/// ([`Outcome::from_exit_code`]): `stat=` shows them without `Deferred: `.
const BARE_TEMPORARY_TEXTS: [&str; 2] = ["Operating system error", "I/O error"];

/// How a user's mailbox is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxFormat {
    /// `<spool_dir>/<user>`.
    Mbox,
    /// `<home>/<this>/` (for example `Maildir`).
    Maildir(PathBuf),
}

/// A local account: who gets the mailbox, and as whom a program runs.
pub type MailUser = crate::aliases::LocalUser;

/// Looks `name` up in the system's password database.
pub fn system_mail_user(name: &str) -> Option<MailUser> {
    crate::aliases::system_user(name)
}

/// How [`LocalDelivery`] finds a user by name.
pub type UserLookup = Box<dyn Fn(&str) -> Option<MailUser> + Send + Sync>;

/// The message as local delivery sees it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// Envelope sender, no angle brackets; empty for `<>`.
    pub sender: &'a str,
    /// Headers, blank line, body; LF line ends.
    pub message: &'a [u8],
    /// The sender as the cf's rules rewrote it for this target's mailer (sendmail's `$g`,
    /// [`LocalDelivery::rules`]), written as it is, even empty. None without rules.
    pub rpath: Option<&'a str>,
    /// `${client_addr}` for a mailer's argv: the SMTP client of the message (`IPv6:…` as
    /// the queue keeps it).
    pub client_addr: Option<&'a str>,
    /// Where the lines sendmail logs while it delivers go (a mailer program that cannot be
    /// run: `Warning: program … unsafe`, `SYSERR(root): Cannot exec …`), with the queue id.
    /// None: not logged.
    pub log: Option<(&'a crate::log::Logger, Option<&'a str>)>,
}

impl<'a> Delivery<'a> {
    pub fn from_message(msg: &'a Message) -> Delivery<'a> {
        Delivery {
            sender: &msg.envelope.sender,
            message: &msg.body,
            rpath: None,
            client_addr: msg.envelope.client.addr.as_deref(),
            log: None,
        }
    }

    /// The `From ` line's sender (and `$g`): the rewritten sender if there is one, else
    /// the envelope sender, `MAILER-DAEMON` for `<>`.
    fn envelope_from(&self) -> &str {
        match self.rpath {
            Some(rpath) => rpath,
            None if self.sender.is_empty() => "MAILER-DAEMON",
            None => self.sender,
        }
    }

    /// The `Return-Path:` address: the rewritten sender if there is one, else the
    /// envelope sender (empty for `<>`).
    fn return_path(&self) -> &str {
        self.rpath.unwrap_or(self.sender)
    }
}

/// The mailer sendmail delivers `target` with, whose `S=`/`R=` rulesets rewrite it.
fn mailer_of(target: &Target) -> Option<&'static str> {
    match target {
        Target::User(_) => Some("local"),
        Target::File(_) => Some("*file*"),
        Target::Program(_) => Some("prog"),
        Target::Remote(_) | Target::Error { .. } => None,
    }
}

/// The local delivery agent's settings.
pub struct LocalDelivery {
    /// Where mbox mailboxes live (`/var/mail`).
    pub spool_dir: PathBuf,
    pub format: MailboxFormat,
    /// Add `Return-Path: <sender>` at the top (sendmail's local mailer `P` flag).
    pub return_path: bool,
    /// How long to wait for a mailbox lock before deferring.
    pub lock_timeout: Duration,
    /// A dotlock older than this is someone's leftover and is removed.
    pub stale_lock: Duration,
    /// How long a `|program` may run.
    pub program_timeout: Duration,
    /// This host's name, for Maildir file names.
    pub hostname: String,
    /// How users are looked up ([`system_mail_user`] by default).
    pub users: UserLookup,
    /// sendmail's `DefaultUser` (uid, gid): when running as root, `|program`s of the
    /// system alias file (no owner) run as this; None keeps the current user.
    pub default_user: Option<(u32, u32)>,
    /// The cf's `local` mailer when it names a program installed here (procmail,
    /// mail.local, sensible-mda): users' mail goes through it instead of the built-in mbox.
    pub mailer: Option<mailer::LocalMailer>,
    /// The cf's rulesets, when it has any: each target's envelope sender and address
    /// headers are then rewritten for its mailer (`local`, `prog`, `*file*`) before they
    /// are written, as sendmail does ([`crate::rules::deliver`]). None leaves them as
    /// queued.
    pub rules: Option<std::sync::Arc<crate::rules::handle::Handle>>,
    /// The `F=` letters of the cf's `prog` mailer. When the rules rewrote a message for a
    /// `|program` ([`Delivery::rpath`]), its input follows them as sendmail writes it
    /// ([`mailer::input`]: a `From ` line unless `n`, …); otherwise the program reads the
    /// message alone.
    pub prog_flags: Option<String>,
    /// `UnixFromLine` with the cf's macros expanded, `$g` and `$d` left as
    /// [`FROM_SENDER`]/[`FROM_DATE`] for [`from_line`] (default `From $g $d`).
    pub unix_from_line: String,
    /// `SafeFileEnvironment`: `/file` deliveries resolve inside this directory as if it were
    /// the root (sendmail chroots there; here `openat2` with `RESOLVE_IN_ROOT`, so no symlink
    /// or `..` leaves it), the directory's own prefix of the name removed, and only regular
    /// files without execute bits or extra hard links take mail; `/dev/null` takes it and
    /// keeps nothing (sendmail's special case). None: files anywhere, as before.
    pub safe_file_environment: Option<PathBuf>,
    /// The mailboxes being written: deliveries to one mailbox that are ready together share
    /// one lock and one fsync ([`batch`]). One per configuration generation (the runtime
    /// builds the agent once), shared by all the threads that deliver.
    pub batches: std::sync::Arc<Batches>,
}

/// Which mbox: its path, how it is opened (a kind of target) and for whom.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MboxKey {
    pub path: PathBuf,
    kind: u8,
    uid: Option<u32>,
}

/// Which Maildir: its `new` directory (device and inode, however it was reached).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MaildirKey {
    pub dev: u64,
    pub ino: u64,
}

/// The group commits of one agent: mbox entries and Maildir files by mailbox; and the
/// Maildirs' open directories.
#[derive(Default)]
pub struct Batches {
    /// Each entry with its delivery's status file ([`inflight::current`]).
    pub mbox: batch::Group<MboxKey, (Vec<u8>, Option<PathBuf>)>,
    pub maildir: batch::Group<MaildirKey, ()>,
    /// `tmp` and `new` of each Maildir delivered to, kept open for the configuration
    /// generation ([`LocalDelivery::deliver_maildir`]).
    maildirs: std::sync::Mutex<HashMap<MaildirPath, Arc<MaildirDirs>>>,
}

/// A Maildir as a delivery names it: base, path below it, and the owner's uid.
type MaildirPath = (PathBuf, PathBuf, Option<u32>);

/// At most this many Maildirs keep their directories open (two descriptors each); past it
/// the kept ones are closed and reopened as they are used.
const MAILDIRS_KEPT: usize = 256;

/// The open `tmp` and `new` directories of one Maildir, checked as [`open_dir_at`] checks
/// them when opened, and `new`'s device and inode.
struct MaildirDirs {
    tmp: File,
    new: File,
    key: MaildirKey,
}

impl Batches {
    /// Syncs so far (mbox rounds + Maildir rounds) and the messages they made durable.
    pub fn totals(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let (a, b) = (&self.mbox.counters, &self.maildir.counters);
        (
            a.syncs.load(Relaxed) + b.syncs.load(Relaxed),
            a.messages.load(Relaxed) + b.messages.load(Relaxed),
        )
    }
}

/// Stands for `$g` in [`LocalDelivery::unix_from_line`].
pub const FROM_SENDER: char = '\u{1}';
/// Stands for `$d` in [`LocalDelivery::unix_from_line`].
pub const FROM_DATE: char = '\u{2}';
/// sendmail's default `UnixFromLine`, `From $g $d`, in [`from_line`]'s form.
pub const DEFAULT_FROM_LINE: &str = "From \u{1} \u{2}";

/// `UnixFromLine` (the cf's other macros already expanded) for the cf: `$g` and `$d` become
/// [`FROM_SENDER`] and [`FROM_DATE`].
pub fn from_line_template(config: &crate::config::Config) -> String {
    let keep = |name: &str| match name {
        "g" => Some(FROM_SENDER.to_string()),
        "d" => Some(FROM_DATE.to_string()),
        _ => None,
    };
    let lookup = crate::config::macros::Layered {
        top: &keep,
        base: config,
    };
    config.options.unix_from_line.expand(&lookup)
}

/// The first line of an mbox entry (and of a mailer's input): `template` with the sender
/// (`$g`) and sendmail's `ctime` date (`$d`) put in, and a newline.
pub fn from_line(template: &str, d: &Delivery, when: SystemTime) -> String {
    let date = chrono::DateTime::<chrono::Local>::from(when)
        .format("%a %b %e %H:%M:%S %Y")
        .to_string();
    let mut out = String::with_capacity(template.len() + 64);
    for c in template.chars() {
        match c {
            FROM_SENDER => out.push_str(d.envelope_from()),
            FROM_DATE => out.push_str(&date),
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

impl Default for LocalDelivery {
    fn default() -> Self {
        LocalDelivery {
            spool_dir: PathBuf::from("/var/mail"),
            format: MailboxFormat::Mbox,
            return_path: true,
            lock_timeout: Duration::from_secs(60),
            stale_lock: Duration::from_secs(300),
            program_timeout: Duration::from_secs(600),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into()),
            users: Box::new(system_mail_user),
            default_user: None,
            mailer: None,
            rules: None,
            prog_flags: None,
            unix_from_line: DEFAULT_FROM_LINE.to_string(),
            safe_file_environment: None,
            batches: std::sync::Arc::default(),
        }
    }
}

/// Set once unnamed Maildir files ([`write_unnamed`]) cannot be made or linked here.
static NO_UNNAMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes `bytes` into an unnamed file of `new` (`O_TMPFILE`), fsyncs it and links it in as
/// `name`. `Ok(false)`: this file system or process cannot (nothing was left behind).
fn write_unnamed(
    new: &File,
    name: &str,
    owner: Option<&MailUser>,
    bytes: &[u8],
) -> io::Result<bool> {
    use nix::errno::Errno;
    use nix::fcntl::AtFlags;
    let flags = OFlag::O_WRONLY | OFlag::O_TMPFILE | OFlag::O_CLOEXEC;
    let mut f = match nix::fcntl::openat(new.as_fd(), ".", flags, Mode::from_bits_truncate(0o600)) {
        Ok(fd) => File::from(fd),
        Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if let Some(u) = owner {
        give_to(&f, u);
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    // The descriptor itself needs CAP_DAC_READ_SEARCH; its /proc name does not.
    let by_fd = nix::unistd::linkat(f.as_fd(), "", new.as_fd(), name, AtFlags::AT_EMPTY_PATH);
    let linked = match by_fd {
        Err(Errno::EEXIST) => by_fd,
        Err(_) => {
            use std::os::fd::AsRawFd;
            let proc = format!("/proc/self/fd/{}", f.as_raw_fd());
            let cwd = nix::fcntl::AT_FDCWD;
            nix::unistd::linkat(
                cwd,
                proc.as_str(),
                new.as_fd(),
                name,
                AtFlags::AT_SYMLINK_FOLLOW,
            )
        }
        ok => ok,
    };
    match linked {
        Ok(()) => Ok(true),
        Err(e @ (Errno::EEXIST | Errno::ENOSPC | Errno::EDQUOT | Errno::EIO)) => Err(e.into()),
        Err(_) => Ok(false),
    }
}

/// Maildir unique-name sequence within this process.
static MAILDIR_SEQ: AtomicU64 = AtomicU64::new(0);
/// How long a finished program's output pipes may stay open (a background child).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// Longest program output kept (for the log / bounce).
pub const MAX_PROGRAM_OUTPUT: usize = 4096;

impl LocalDelivery {
    /// Settings from the configuration: `Return-Path:` if the `local` mailer has flag `P`
    /// (or there is no such mailer), lock wait `Timeout.fileopen` (sendmail's default 60 s),
    /// Maildir names with `$w`, `DefaultUser` (else `mailnull`, else 1:1, as sendmail).
    /// The spool directory stays `/var/mail`.
    pub fn from_config(config: &crate::config::Config) -> LocalDelivery {
        let default_user = crate::aliases::default_user(config);
        let mut d = LocalDelivery {
            return_path: config.mailer("local").is_none_or(|m| m.has_flag('P')),
            default_user: Some(default_user),
            mailer: mailer::LocalMailer::from_config(config),
            prog_flags: config.mailer("prog").map(|m| m.flags.clone()),
            unix_from_line: from_line_template(config),
            safe_file_environment: config.options.safe_file_environment.clone(),
            ..LocalDelivery::default()
        };
        let fileopen = config.options.timeouts.fileopen;
        if !fileopen.is_zero() {
            d.lock_timeout = fileopen;
        }
        if !config.host.short.is_empty() {
            d.hostname = config.host.short.clone();
        }
        d
    }

    /// Delivers to one target. `owner` is the target's owner from
    /// [`crate::aliases::Expander::expand_owned`]: the user whose `.forward` named it, None
    /// for the system alias file. A `|program` runs as the owner (as [`Self::default_user`]
    /// without one) when we are root; a `/file` of an owner must already exist and belong
    /// to them; a Maildir of an owner is refused (nothing is created with root's rights on
    /// a user's say-so). [`Target::Remote`] is not local: a permanent `5.3.5` error here.
    ///
    /// With [`Self::rules`], the target's mailer rewrites the sender and the address
    /// headers first.
    pub fn deliver(&self, target: &Target, owner: Option<&MailUser>, d: &Delivery) -> Outcome {
        let rewritten = match (&self.rules, mailer_of(target)) {
            (Some(rules), Some(mailer)) => Some(rules.for_local(mailer, d.sender, d.message)),
            _ => None,
        };
        match &rewritten {
            Some((rpath, message)) => {
                let d = Delivery {
                    message,
                    rpath: Some(rpath),
                    ..*d
                };
                self.deliver_target(target, owner, &d)
            }
            None => self.deliver_target(target, owner, d),
        }
    }

    /// [`Self::deliver`] of a message as it is.
    fn deliver_target(&self, target: &Target, owner: Option<&MailUser>, d: &Delivery) -> Outcome {
        match target {
            Target::User(name) => self.deliver_user(name, d),
            Target::File(path) if path.as_os_str().to_string_lossy().ends_with('/') => {
                match owner {
                    Some(u) if u.uid != nix::unistd::geteuid().as_raw() => Outcome::perm(
                        "5.3.0",
                        format!(
                            "{}: Maildir delivery on behalf of {} is not supported",
                            path.display(),
                            u.name
                        ),
                    ),
                    _ => self.deliver_maildir(path, Path::new(""), None, d),
                }
            }
            Target::File(path) => match (&self.safe_file_environment, owner) {
                (Some(root), owner) => self.deliver_safe_file(root, path, owner, d),
                (None, Some(u)) if u.uid != nix::unistd::geteuid().as_raw() => {
                    self.deliver_owned_file(path, u, d)
                }
                (None, _) => self.deliver_file(path, d),
            },
            Target::Program(cmd) => self.deliver_program(cmd, owner, d),
            Target::Remote(addr) => Outcome::perm(
                "5.3.5",
                format!("{addr}: not a local address (local configuration error)"),
            ),
            Target::Error {
                reason,
                dsn,
                temporary,
                ..
            } => {
                if *temporary {
                    Outcome::temp(dsn, reason.clone())
                } else {
                    Outcome::perm(dsn, reason.clone())
                }
            }
        }
    }

    /// A local user's mailbox, per [`LocalDelivery::format`].
    pub fn deliver_user(&self, name: &str, d: &Delivery) -> Outcome {
        if let Some(m) = &self.mailer {
            return self.deliver_by_mailer(m, name, d);
        }
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
            return Outcome::user_unknown();
        }
        let Some(user) = (self.users)(name) else {
            return Outcome::user_unknown();
        };
        match &self.format {
            MailboxFormat::Mbox => {
                let path = self.spool_dir.join(&user.name);
                self.deliver_mbox(&path, Some(&user), true, d)
            }
            MailboxFormat::Maildir(rel) => self.deliver_maildir(&user.home, rel, Some(&user), d),
        }
    }

    /// A user's mail through the cf's `local` mailer program ([`mailer`]).
    fn deliver_by_mailer(&self, m: &mailer::LocalMailer, name: &str, d: &Delivery) -> Outcome {
        let user = (self.users)(&m.user_arg(name));
        let home = user.as_ref().map(|u| u.home.display().to_string());
        let r = mailer::Recipient {
            user: name,
            host: "",
            home: home.as_deref(),
            client_addr: d.client_addr,
        };
        m.deliver(
            &r,
            user.as_ref(),
            self.default_user,
            d,
            self.program_timeout,
        )
    }

    /// A `/file` target of the system alias file: mbox format, `fcntl` + `flock`, created
    /// 0600 if absent. As sendmail's `mailfile()`: `/dev/null` is delivered without being
    /// opened, and when we are root the file is opened (and created) with
    /// [`Self::default_user`]'s rights ([`crate::asuser`]), so a file that user may not write
    /// is `Can't create output`, never written as root.
    pub fn deliver_file(&self, path: &Path, d: &Delivery) -> Outcome {
        if path == Path::new("/dev/null") {
            return Outcome::Delivered;
        }
        let who = self
            .default_user
            .filter(|_| nix::unistd::geteuid().is_root())
            .map(|(uid, gid)| Who::uid(uid, gid));
        self.deliver_mbox_as(path, None, false, who.as_ref(), d)
    }

    /// A `/file` under `SafeFileEnvironment` (see [`Self::safe_file_environment`]); a file
    /// named by a user's `.forward` (an `owner` other than us) must exist and be theirs.
    pub fn deliver_safe_file(
        &self,
        root: &Path,
        path: &Path,
        owner: Option<&MailUser>,
        d: &Delivery,
    ) -> Outcome {
        if path == Path::new("/dev/null") {
            return Outcome::Delivered;
        }
        let cant = |why: String| {
            Outcome::perm(
                "5.0.0",
                format!("Can't create output: {}: {why}", path.display()),
            )
        };
        let inside = path.strip_prefix(root).unwrap_or(path);
        let inside = inside.strip_prefix("/").unwrap_or(inside);
        let someone_else = owner.filter(|u| u.uid != nix::unistd::geteuid().as_raw());
        let key = MboxKey {
            path: root.join(inside),
            kind: 3,
            uid: someone_else.map(|u| u.uid),
        };
        self.batched_mbox(key, path, d, |_| {
            let (file, _created) = match open_in_root(root, inside, someone_else.is_none()) {
                Ok(x) => x,
                Err(e)
                    if is_permanent_open_error(&e) || e.raw_os_error() == Some(nix::libc::ELOOP) =>
                {
                    return Err(cant(e.to_string()));
                }
                Err(e) => return Err(io_outcome(path, &e)),
            };
            match file.metadata() {
                Ok(m) if !m.is_file() => Err(cant("not a regular file".into())),
                Ok(m) if m.nlink() != 1 => Err(cant("file has more than one link".into())),
                Ok(m) if m.mode() & 0o111 != 0 => Err(cant("file is executable".into())),
                Ok(m) if someone_else.is_some_and(|u| m.uid() != u.uid) => Err(cant(
                    "not a regular file of its owner (files named in a .forward must exist and belong to its owner)"
                        .into(),
                )),
                Ok(_) => Ok((file, None)),
                Err(e) => Err(io_outcome(path, &e)),
            }
        })
    }

    /// A `/file` named by a user's `.forward`: only an existing regular file of theirs
    /// (checked on the open descriptor, so no symlink or rename race), never created.
    pub fn deliver_owned_file(&self, path: &Path, owner: &MailUser, d: &Delivery) -> Outcome {
        let cant = |why: String| {
            Outcome::perm(
                "5.0.0",
                format!("Can't create output: {}: {why}", path.display()),
            )
        };
        let key = MboxKey {
            path: path.to_path_buf(),
            kind: 2,
            uid: Some(owner.uid),
        };
        self.batched_mbox(key, path, d, |_| {
            let file = match OpenOptions::new()
                .append(true)
                .custom_flags(OPEN_FLAGS)
                .open(path)
            {
                Ok(f) => f,
                Err(e) if is_permanent_open_error(&e) => return Err(cant(e.to_string())),
                Err(e) => return Err(io_outcome(path, &e)),
            };
            match file.metadata() {
                Ok(m) if m.is_file() && m.nlink() == 1 && m.uid() == owner.uid => Ok((file, None)),
                Ok(_) => Err(cant(format!(
                    "not a regular file of {} (files named in a .forward must exist and belong to its owner)",
                    owner.name
                ))),
                Err(e) => Err(io_outcome(path, &e)),
            }
        })
    }

    /// Appends `d` to the mbox `key` names, together with the other deliveries to it that
    /// are ready ([`batch`]): the leader of a round opens the file (`open`, given the lock
    /// deadline: the file and its dotlock, if any), takes the `fcntl` + `flock` locks,
    /// appends every queued entry, syncs once and unlocks.
    fn batched_mbox(
        &self,
        key: MboxKey,
        path: &Path,
        d: &Delivery,
        open: impl FnOnce(Instant) -> Result<(File, Option<DotLock>), Outcome>,
    ) -> Outcome {
        let bytes = mbox_entry(d, self.return_path, &self.unix_from_line, SystemTime::now());
        let mut lead = match self.batches.mbox.join(key, (bytes, inflight::current())) {
            Ok(lead) => lead,
            Err(outcome) => return outcome,
        };
        let deadline = Instant::now() + self.lock_timeout;
        let (mut file, dotlock) = match open(deadline) {
            Ok(x) => x,
            Err(o) => return lead.fail_own(o),
        };
        if let Err(o) = lock_file(&file, path, deadline) {
            return lead.fail_own(o);
        }
        let entries = lead.take();
        // where each entry goes, for a daemon that would restart before the fsync returns
        if let Ok(mut at) = file.metadata().map(|m| m.len()) {
            for (bytes, status) in &entries {
                if let Some(status) = status {
                    inflight::appending(status, path, at, bytes);
                }
                at += bytes.len() as u64;
            }
        }
        let refs: Vec<&[u8]> = entries.iter().map(|(b, _)| b.as_slice()).collect();
        let outcomes = batch::append_batch(&mut file, &refs)
            .into_iter()
            .map(|r| match r {
                Ok(()) => Outcome::Delivered,
                Err(e) => io_outcome(path, &e),
            })
            .collect();
        // unlocked (fcntl, flock, dotlock) before the waiting deliveries hear of it
        drop(file);
        drop(dotlock);
        lead.finish(outcomes)
    }

    /// Appends to the mbox at `path`; see the module doc for the format and locking.
    pub fn deliver_mbox(
        &self,
        path: &Path,
        owner: Option<&MailUser>,
        dotlock: bool,
        d: &Delivery,
    ) -> Outcome {
        self.deliver_mbox_as(path, owner, dotlock, None, d)
    }

    /// [`Self::deliver_mbox`], the file opened with `who`'s rights when given.
    fn deliver_mbox_as(
        &self,
        path: &Path,
        owner: Option<&MailUser>,
        dotlock: bool,
        who: Option<&Who>,
        d: &Delivery,
    ) -> Outcome {
        let key = MboxKey {
            path: path.to_path_buf(),
            kind: if dotlock { 1 } else { 0 },
            uid: owner.map(|u| u.uid).or(who.map(|w| w.uid)),
        };
        self.batched_mbox(key, path, d, |deadline| {
            let dotlock = match dotlock {
                true => Some(DotLock::acquire(path, deadline, self.stale_lock)?),
                false => None,
            };
            let file = match open_or_create(path, who) {
                Ok((f, created)) => {
                    // only a file this call created (O_EXCL) is handed to the user
                    if created && let Some(u) = owner {
                        give_to(&f, u);
                    }
                    f
                }
                Err(e) if owner.is_none() && is_permanent_open_error(&e) => {
                    return Err(Outcome::perm(
                        "5.0.0",
                        format!("Can't create output: {}: {e}", path.display()),
                    ));
                }
                Err(e) => return Err(io_outcome(path, &e)),
            };
            match file.metadata() {
                Ok(m) if !m.is_file() => Err(Outcome::temp(
                    "4.3.0",
                    format!("{}: not a regular file", path.display()),
                )),
                Ok(m) if m.nlink() > 1 => Err(Outcome::temp(
                    "4.3.0",
                    format!("{}: too many links", path.display()),
                )),
                // mail.local: a mailbox must belong to its user (when we can tell them apart)
                Ok(m)
                    if owner.is_some_and(|u| m.uid() != u.uid)
                        && nix::unistd::geteuid().is_root() =>
                {
                    Err(Outcome::temp(
                        "4.3.0",
                        format!(
                            "{}: mailbox owned by uid {}, not by its user",
                            path.display(),
                            m.uid()
                        ),
                    ))
                }
                Ok(_) => Ok((file, dotlock)),
                Err(e) => Err(io_outcome(path, &e)),
            }
        })
    }

    /// Writes one message into the Maildir `base/rel` (creating it and `tmp`, `new`, `cur`).
    /// `base` is trusted (an alias-file path, a home directory from the password file);
    /// below it every directory is opened with `O_NOFOLLOW` relative to its parent's
    /// descriptor and, for a user's Maildir, must belong to that user — so a symlink or a
    /// renamed directory cannot send root's writes elsewhere. The opened `tmp` and `new`
    /// are kept for the next deliveries ([`Batches`]; five opens per message otherwise):
    /// each use first checks that the path still leads to that `new` (one `lstat`), so a
    /// Maildir moved away or replaced is opened again, with the checks; a write through a
    /// kept directory that fails is tried once more through freshly opened ones.
    pub fn deliver_maildir(
        &self,
        base: &Path,
        rel: &Path,
        owner: Option<&MailUser>,
        d: &Delivery,
    ) -> Outcome {
        let dir = base.join(rel);
        let mut bytes = Vec::with_capacity(d.message.len() + 64);
        if self.return_path {
            push_return_path(&mut bytes, d);
        }
        bytes.extend_from_slice(d.message);
        // the name each file is about to get, for a daemon that would restart before the
        // fsync of `new` returns (see `inflight::placing`)
        let status = inflight::current();
        let placing = |name: &str| {
            if let Some(status) = &status {
                inflight::placing(status, &dir.join("new").join(name));
            }
        };
        let write = |fresh: bool| {
            let dirs = self.maildir_dirs(base, rel, owner, fresh)?;
            let name = self.write_maildir_file(&dirs.tmp, &dirs.new, owner, &bytes, &placing)?;
            Ok::<_, io::Error>((dirs, name))
        };
        let written = write(false).or_else(|_| write(true));
        let (dirs, name) = match written {
            Ok(x) => x,
            Err(e) => {
                self.forget_maildir(base, rel, owner);
                return io_outcome(&dir, &e);
            }
        };
        let new = &dirs.new;
        // One fsync of `new` for every file renamed into it before that fsync began.
        let outcome = match self.batches.maildir.join(dirs.key.clone(), ()) {
            Err(outcome) => outcome,
            Ok(mut lead) => {
                let taken = lead.take();
                let o = match new.sync_all() {
                    Ok(()) => Outcome::Delivered,
                    Err(e) => io_outcome(&dir, &e),
                };
                lead.finish(vec![o; taken.len()])
            }
        };
        if outcome != Outcome::Delivered {
            // not durable: nobody is told it was delivered, and it is taken back
            let _ = nix::unistd::unlinkat(
                new.as_fd(),
                name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        outcome
    }

    /// The kept `tmp` and `new` of the Maildir `base/rel` when its path still leads to that
    /// `new` (and not `fresh`), else [`Self::open_maildir`]'s, then kept.
    fn maildir_dirs(
        &self,
        base: &Path,
        rel: &Path,
        owner: Option<&MailUser>,
        fresh: bool,
    ) -> io::Result<Arc<MaildirDirs>> {
        let key = (base.to_path_buf(), rel.to_path_buf(), owner.map(|u| u.uid));
        let lock = || {
            self.batches
                .maildirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        let kept = lock().get(&key).cloned().filter(|_| !fresh);
        if let Some(d) = kept
            && let Ok(m) = fs::symlink_metadata(base.join(rel).join("new"))
            && (m.dev(), m.ino()) == (d.key.dev, d.key.ino)
        {
            return Ok(d);
        }
        let (tmp, new) = self.open_maildir(base, rel, owner)?;
        let m = new.metadata()?;
        let d = Arc::new(MaildirDirs {
            tmp,
            new,
            key: MaildirKey {
                dev: m.dev(),
                ino: m.ino(),
            },
        });
        let mut kept = lock();
        if kept.len() >= MAILDIRS_KEPT {
            kept.clear();
        }
        kept.insert(key, d.clone());
        Ok(d)
    }

    /// Closes the kept directories of the Maildir `base/rel` (after a failed delivery).
    fn forget_maildir(&self, base: &Path, rel: &Path, owner: Option<&MailUser>) {
        let key = (base.to_path_buf(), rel.to_path_buf(), owner.map(|u| u.uid));
        let mut kept = self
            .batches
            .maildirs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        kept.remove(&key);
    }

    /// Opens (creating as needed) the Maildir `base/rel` and its `tmp`, `new` and `cur`;
    /// returns `tmp` and `new`.
    fn open_maildir(
        &self,
        base: &Path,
        rel: &Path,
        owner: Option<&MailUser>,
    ) -> io::Result<(File, File)> {
        if owner.is_none() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(base)?;
        }
        let mut dir = open_dir(base)?;
        for part in rel.components() {
            let std::path::Component::Normal(name) = part else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "Maildir path must be plain names below the base",
                ));
            };
            dir = open_dir_at(&dir, name, owner)?;
        }
        let tmp = open_dir_at(&dir, "tmp".as_ref(), owner)?;
        let new = open_dir_at(&dir, "new".as_ref(), owner)?;
        open_dir_at(&dir, "cur".as_ref(), owner)?;
        Ok((tmp, new))
    }

    /// Writes `bytes` as a new file of `new` under a unique name, on disk before the name
    /// appears there (whose own fsync [`Self::deliver_maildir`] shares with the deliveries
    /// beside it); the name. The file is made unnamed in `new` (`O_TMPFILE`), written,
    /// fsynced and only then linked in under its name: the name appears at once with the
    /// whole message, as the Maildir specification's `tmp`-then-rename gives, but the file
    /// system changes one directory instead of two (measured on ext4: three disk writes
    /// per file fsync instead of four, as `tmp` is not written), and a crash leaves nothing
    /// behind in `tmp`. Where that cannot be done (no `O_TMPFILE`, no `/proc` for the
    /// link), the specification's way: `tmp/<name>`, fsync, rename into `new`. A file that
    /// could not be written is removed. `placing` is told the name before anything is
    /// written.
    fn write_maildir_file(
        &self,
        tmp: &File,
        new: &File,
        owner: Option<&MailUser>,
        bytes: &[u8],
        placing: &dyn Fn(&str),
    ) -> io::Result<String> {
        let name = self.maildir_name();
        placing(&name);
        if !NO_UNNAMED.load(Ordering::Relaxed) {
            match write_unnamed(new, &name, owner, bytes) {
                Ok(true) => return Ok(name),
                Ok(false) => NO_UNNAMED.store(true, Ordering::Relaxed),
                Err(e) => return Err(e),
            }
        }
        self.write_maildir_tmp(tmp, new, owner, bytes, name)
    }

    /// [`Self::write_maildir_file`] through `tmp/<name>` and a rename.
    fn write_maildir_tmp(
        &self,
        tmp: &File,
        new: &File,
        owner: Option<&MailUser>,
        bytes: &[u8],
        name: String,
    ) -> io::Result<String> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut f = File::from(nix::fcntl::openat(
            tmp.as_fd(),
            name.as_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )?);
        let result = (|| -> io::Result<()> {
            if let Some(u) = owner {
                give_to(&f, u);
            }
            f.write_all(bytes)?;
            f.sync_all()?;
            nix::fcntl::renameat(tmp.as_fd(), name.as_str(), new.as_fd(), name.as_str())?;
            Ok(())
        })();
        match result {
            Ok(()) => Ok(name),
            Err(e) => {
                let _ = nix::unistd::unlinkat(
                    tmp.as_fd(),
                    name.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
                Err(e)
            }
        }
    }

    /// `<secs>.<pid>_<seq>.<host>`, with `/` and `:` in the host name escaped as the
    /// Maildir specification asks.
    fn maildir_name(&self) -> String {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let seq = MAILDIR_SEQ.fetch_add(1, Ordering::Relaxed);
        let host = self.hostname.replace('/', "\\057").replace(':', "\\072");
        static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let pid = PID.get_or_init(std::process::id);
        format!("{secs}.{pid}_{seq}.{host}")
    }

    /// Runs `/bin/sh -c cmd` with the message on stdin; see the module doc. When we are
    /// root it runs as `owner`, or as [`Self::default_user`] without one.
    pub fn deliver_program(&self, cmd: &str, owner: Option<&MailUser>, d: &Delivery) -> Outcome {
        let ids = match owner {
            Some(u) => Some((u.uid, u.gid)),
            None => self.default_user,
        };
        let ids = ids.filter(|_| nix::unistd::geteuid().is_root());
        let input = match (&self.prog_flags, d.rpath) {
            (Some(flags), Some(_)) => Some(mailer::input(
                flags,
                d,
                &self.unix_from_line,
                SystemTime::now(),
            )),
            _ => None,
        };
        let d = match &input {
            Some(message) => &Delivery { message, ..*d },
            None => d,
        };
        match run_program(cmd, owner, ids, d, self.program_timeout) {
            Ok(run) => run.outcome,
            Err(e) => Outcome::temp("4.3.0", format!("cannot run {cmd}: {e}")),
        }
    }
}

/// What became of one local recipient: every target its expansion gave, with the outcome
/// of each local one, and the addresses that are not local (for the remote side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    pub results: Vec<(Target, Outcome)>,
    pub remote: Vec<String>,
}

impl RecipientReport {
    /// One outcome for the queue's recipient: `Delivered` when every target took it; else
    /// the first temporary failure (the whole recipient is retried — targets that already
    /// took the message get it again: sendmail avoids that by queueing each expanded
    /// address on its own, which our queue file does not do yet); else the first
    /// permanent one.
    pub fn combined(&self) -> Outcome {
        let outcomes = || self.results.iter().map(|(_, o)| o);
        outcomes()
            .find(|o| o.is_temporary())
            .or_else(|| outcomes().find(|o| matches!(o, Outcome::Permanent { .. })))
            .cloned()
            .unwrap_or(Outcome::Delivered)
    }
}

/// For the queue runner, a recipient routed to the `local` mailer (`user` as ruleset 0
/// left it): expands it through the aliases and `.forward`, delivers to every local
/// target, and hands back the non-local ones. Blocking (file locks, programs): call it from
/// `spawn_blocking`.
pub fn deliver_recipient(
    agent: &LocalDelivery,
    expander: &crate::aliases::Expander<'_>,
    user: &str,
    msg: &Message,
) -> RecipientReport {
    let d = Delivery {
        log: expander.log,
        ..Delivery::from_message(msg)
    };
    let mut report = RecipientReport {
        results: Vec::new(),
        remote: Vec::new(),
    };
    for (target, owner) in expander.expand_owned(user) {
        match target {
            Target::Remote(addr) => report.remote.push(addr),
            t => {
                let o = agent.deliver(&t, owner.as_ref(), &d);
                report.results.push((t, o));
            }
        }
    }
    report
}

/// A finished `|program` delivery: the outcome and what the program printed.
#[derive(Debug)]
pub struct ProgramRun {
    pub outcome: Outcome,
    /// stdout and stderr (the first [`MAX_PROGRAM_OUTPUT`] bytes), for the bounce.
    pub output: Vec<u8>,
}

/// A program to run, as data: the mailer or `|program` delivery describes it, and
/// [`run_command`] runs it directly or under [`inflight`]'s supervisor.
#[derive(Debug, Clone)]
pub struct Program {
    pub path: PathBuf,
    /// `argv[0]` when it is not the path.
    pub arg0: Option<std::ffi::OsString>,
    pub args: Vec<std::ffi::OsString>,
    /// The whole environment (nothing else of the daemon's is passed on).
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    /// The working directory, entered after the switch to `ids`.
    pub cwd: PathBuf,
    /// (uid, gid) to switch to in the child (std drops supplementary groups too).
    pub ids: Option<(u32, u32)>,
}

impl Program {
    /// The command that runs the program itself (no supervisor).
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.path);
        if let Some(a) = &self.arg0 {
            c.arg0(a);
        }
        c.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd);
        if let Some((uid, gid)) = self.ids {
            c.uid(uid).gid(gid);
        }
        c
    }
}

/// Runs the program; kills its process group when the time limit passes.
/// `ids`: (uid, gid) to switch to in the child (std drops supplementary groups too).
pub fn run_program(
    cmd: &str,
    owner: Option<&MailUser>,
    ids: Option<(u32, u32)>,
    d: &Delivery,
    timeout: Duration,
) -> io::Result<ProgramRun> {
    let home = owner
        .map(|u| u.home.clone())
        .filter(|h| h.is_dir())
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = vec![
        ("PATH".into(), "/bin:/usr/bin".into()),
        ("SHELL".into(), "/bin/sh".into()),
        ("HOME".into(), home.clone().into()),
        ("SENDER".into(), d.envelope_from().into()),
    ];
    if let Some(u) = owner {
        env.push(("USER".into(), u.name.clone().into()));
        env.push(("LOGNAME".into(), u.name.clone().into()));
    }
    let p = Program {
        path: "/bin/sh".into(),
        arg0: None,
        args: vec!["-c".into(), cmd.into()],
        env,
        cwd: home,
        ids,
    };
    run_command(&p, d.message.to_vec(), timeout)
}

/// Runs a program (its own process group, piped stdio) with `message` on stdin; kills the
/// group when `timeout` passes; the exit status read as sendmail reads it.
pub fn run_command(p: &Program, message: Vec<u8>, timeout: Duration) -> io::Result<ProgramRun> {
    // Under the queue runner: a supervisor records how the program ends (inflight), and
    // the program reads the message from a file of its own, so that a daemon that dies
    // while writing cannot hand it a truncated message that it would then deliver.
    let (mut c, status_file) = match inflight::supervise(p) {
        Some((c, f)) => (c, Some(f)),
        None => (p.command(), None),
    };
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut message = message;
    if status_file.is_some() {
        c.stdin(inflight::input_file(&message)?);
        message.clear();
    }
    let mut child = c.spawn()?;
    drop(status_file);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            // A program that does not read its input is not an error (EPIPE).
            let _ = s.write_all(&message);
        }
        drop(stdin);
    });
    // Output is collected by reader threads that report over a channel, so that a
    // background process still holding the pipes cannot keep the delivery waiting.
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Vec<u8>)>();
    let pipes = [
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    ];
    let mut n_pipes = 0;
    for (i, pipe) in pipes.into_iter().enumerate() {
        let Some(mut r) = pipe else { continue };
        n_pipes += 1;
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if tx.send((i, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            // an empty chunk: this pipe is at its end
            let _ = tx.send((i, Vec::new()));
        });
    }
    drop(tx);
    let mut parts: [Vec<u8>; 2] = Default::default();
    let mut open = n_pipes;
    // Keeps what fits, counts pipes that ended; false when the channel is empty for `wait`.
    let drain = |wait: Duration, parts: &mut [Vec<u8>; 2], open: &mut usize| {
        match rx.recv_timeout(wait) {
            Ok((_, chunk)) if chunk.is_empty() => *open -= 1,
            Ok((i, chunk)) => {
                let room = MAX_PROGRAM_OUTPUT.saturating_sub(parts[i].len());
                parts[i].extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Err(_) => return false,
        }
        true
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        if open == 0 {
            std::thread::sleep(Duration::from_millis(10));
        } else {
            drain(Duration::from_millis(10), &mut parts, &mut open);
        }
    };
    // The writer is not waited for: it ends when the pipe closes.
    drop(writer);
    let grace = Instant::now() + OUTPUT_GRACE;
    while open > 0
        && drain(
            grace.saturating_duration_since(Instant::now()),
            &mut parts,
            &mut open,
        )
    {}
    let mut output = parts.concat();
    output.truncate(MAX_PROGRAM_OUTPUT);
    let outcome = match status {
        None => Outcome::temp(
            "4.4.7",
            format!("program timed out after {}s", timeout.as_secs()),
        ),
        Some(st) => match st.code() {
            Some(code) => Outcome::from_exit_code(code),
            // died by a signal: sendmail's endmailer returns EX_TEMPFAIL
            None => Outcome::temp("4.3.0", "program died with a signal"),
        },
    };
    Ok(ProgramRun { outcome, output })
}

/// The `From ` line ([`from_line`] of `from_template`) + optional `Return-Path:` + the
/// message with `From ` lines quoted + a final newline if missing + one blank line.
pub fn mbox_entry(
    d: &Delivery,
    return_path: bool,
    from_template: &str,
    when: SystemTime,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(d.message.len() + 128);
    out.extend_from_slice(from_line(from_template, d, when).as_bytes());
    if return_path {
        push_return_path(&mut out, d);
    }
    for line in d.message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !d.message.is_empty() && !d.message.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

pub(crate) fn push_return_path(out: &mut Vec<u8>, d: &Delivery) {
    let has = d
        .message
        .get(..12)
        .is_some_and(|h| h.eq_ignore_ascii_case(b"return-path:"));
    if !has {
        out.extend_from_slice(format!("Return-Path: <{}>\n", d.return_path()).as_bytes());
    }
}

/// The file operations [`append_or_rollback`] needs; a real [`File`] in use, a file with
/// a byte budget in tests to play a full disk.
pub trait AppendFile {
    fn current_len(&self) -> io::Result<u64>;
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
    fn truncate_to(&mut self, len: u64) -> io::Result<()>;
}

impl AppendFile for File {
    fn current_len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }
    fn sync(&mut self) -> io::Result<()> {
        // the appended bytes and the new size: all a reader needs (fdatasync)
        self.sync_data()
    }
    fn truncate_to(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.sync_all()
    }
}

/// Appends and fsyncs one entry; on failure cuts the file back to where it was (a batch of
/// one: [`batch::append_batch`]).
pub fn append_or_rollback<F: AppendFile>(f: &mut F, bytes: &[u8]) -> io::Result<()> {
    batch::append_batch(f, &[bytes]).pop().unwrap_or(Ok(()))
}

/// When running as root, hands a new file or directory to the recipient (0600/0700 kept).
fn give_to(f: &File, u: &MailUser) {
    if nix::unistd::geteuid().is_root() {
        let _ = nix::unistd::fchown(
            f.as_fd(),
            Some(nix::unistd::Uid::from_raw(u.uid)),
            Some(nix::unistd::Gid::from_raw(u.gid)),
        );
    }
}

/// A directory we trust by path.
fn open_dir(path: &Path) -> io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    Ok(File::from(nix::fcntl::open(path, flags, Mode::empty())?))
}

/// `name` below `parent`, not through a symlink, created (0700, given to `owner`) if
/// absent; a directory that exists must belong to `owner` when we are root.
fn open_dir_at(
    parent: &File,
    name: &std::ffi::OsStr,
    owner: Option<&MailUser>,
) -> io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let open = || nix::fcntl::openat(parent.as_fd(), name, flags, Mode::empty()).map(File::from);
    let dir = match open() {
        Ok(d) => d,
        Err(nix::errno::Errno::ENOENT) => {
            match nix::sys::stat::mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700)) {
                Ok(()) => {
                    let d = open()?;
                    if let Some(u) = owner {
                        give_to(&d, u);
                    }
                    return Ok(d);
                }
                Err(nix::errno::Errno::EEXIST) => open()?,
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(u) = owner
        && nix::unistd::geteuid().is_root()
        && dir.metadata()?.uid() != u.uid
    {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not owned by {}", name.to_string_lossy(), u.name),
        ));
    }
    Ok(dir)
}

/// Opens `path` for appending; creates it (0600, `O_EXCL`) if absent. `true` if created.
fn open_or_create(path: &Path, who: Option<&Who>) -> io::Result<(File, bool)> {
    let open = |opts: &mut OpenOptions| match who {
        Some(w) => open_as(path, opts, w),
        None => opts.open(path),
    };
    for _ in 0..3 {
        match open(OpenOptions::new().append(true).custom_flags(OPEN_FLAGS)) {
            Ok(f) => return Ok((f, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match open(
            OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(OPEN_FLAGS),
        ) {
            Ok(f) => return Ok((f, true)),
            // someone else created it in between: open theirs
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "file keeps appearing and disappearing",
    ))
}

/// Opens `inside` (relative) for appending with `root` as the root of every name on the
/// way (`RESOLVE_IN_ROOT`: `..` and absolute symlinks stay inside; the last component is
/// never a symlink), creating it (mode 0600) when `create` and it does not exist. The flag
/// says whether it was created.
fn open_in_root(root: &Path, inside: &Path, create: bool) -> io::Result<(File, bool)> {
    use nix::fcntl::{OpenHow, ResolveFlag, openat2};
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY)
        .open(root)?;
    let base = OFlag::O_WRONLY
        | OFlag::O_APPEND
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let how = OpenHow::new()
        .flags(base)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(&dir, inside, how) {
        Ok(fd) => return Ok((File::from(fd), false)),
        Err(nix::errno::Errno::ENOENT) if create => {}
        Err(e) => return Err(e.into()),
    }
    // openat2 takes a mode only together with O_CREAT.
    let how = how
        .flags(base | OFlag::O_CREAT | OFlag::O_EXCL)
        .mode(Mode::from_bits_truncate(0o600));
    let fd = openat2(&dir, inside, how)?;
    Ok((File::from(fd), true))
}

/// Flags for opening a mailbox or file: never through a symlink, never block on a FIFO,
/// never acquire a controlling terminal.
const OPEN_FLAGS: i32 = nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY;

fn is_permanent_open_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::IsADirectory | io::ErrorKind::PermissionDenied
    ) || e.raw_os_error() == Some(nix::libc::ELOOP)
}

/// An I/O failure on a mailbox: always temporary; full disk and quota get `4.2.2`.
fn io_outcome(path: &Path, e: &io::Error) -> Outcome {
    let dsn = match e.raw_os_error() {
        Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT) => "4.2.2",
        _ => "4.3.0",
    };
    Outcome::temp(dsn, format!("{}: {e}", path.display()))
}

/// Takes an `fcntl` write lock and a `flock` on the whole file, retrying until `deadline`.
fn lock_file(f: &File, path: &Path, deadline: Instant) -> Result<(), Outcome> {
    let busy = || {
        Outcome::temp(
            "4.2.0",
            format!("{}: mailbox busy (locked)", path.display()),
        )
    };
    let lk = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    loop {
        match nix::fcntl::fcntl(f.as_fd(), nix::fcntl::FcntlArg::F_SETLK(&lk)) {
            Ok(_) => break,
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EACCES) => {}
            Err(e) => return Err(io_outcome(path, &io::Error::from(e))),
        }
        if Instant::now() >= deadline {
            return Err(busy());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(io_outcome(path, &e)),
        }
        if Instant::now() >= deadline {
            return Err(busy());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `<mailbox>.lock`, created with `O_EXCL`, removed on drop.
struct DotLock {
    path: PathBuf,
}

impl DotLock {
    fn acquire(mailbox: &Path, deadline: Instant, stale: Duration) -> Result<DotLock, Outcome> {
        let mut s = mailbox.as_os_str().to_os_string();
        s.push(".lock");
        let path = PathBuf::from(s);
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(DotLock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let old = fs::symlink_metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok());
                    if old.is_some_and(|age| age > stale) {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                }
                Err(e) => return Err(io_outcome(&path, &e)),
            }
            if Instant::now() >= deadline {
                return Err(Outcome::temp(
                    "4.2.0",
                    format!("{}: mailbox busy (lock file held)", path.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

pub mod batch;
pub mod inflight;
pub mod mailer;

#[cfg(test)]
mod tests;
