//! Recipient address → [`Target`](super::Target)s: aliases, `:include:`, `~/.forward`.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use super::parse::split_members;
use super::safefile::{DontBlame, Kind};
use super::{AliasTable, MAX_DEPTH, Member, Target};
use crate::asuser::Who;
use crate::log::{Logger, Severity};

/// A local account, as far as expansion needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// A target and whose authority it runs under: the user whose `.forward` (or the non-root
/// owner of the include file) named it; None for entries of the system alias file.
pub type OwnedTarget = (Target, Option<LocalUser>);

/// The account with this uid; a bare record (name = the number, home `/`) if it has none.
fn user_by_uid(uid: u32, gid: u32) -> LocalUser {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => LocalUser {
            name: u.name,
            uid,
            gid: u.gid.as_raw(),
            home: u.dir,
        },
        _ => LocalUser {
            name: uid.to_string(),
            uid,
            gid,
            home: PathBuf::from("/"),
        },
    }
}

/// Looks a user up in the system's password database.
pub fn system_user(name: &str) -> Option<LocalUser> {
    let u = nix::unistd::User::from_name(name).ok().flatten()?;
    Some(LocalUser {
        name: u.name,
        gid: u.gid.as_raw(),
        uid: u.uid.as_raw(),
        home: u.dir,
    })
}

/// Expands recipient addresses through an [`AliasTable`], includes and `.forward` files.
pub struct Expander<'a> {
    table: &'a AliasTable,
    /// Domains that are this host (sendmail's `$=w`), lower case: `user@<one of these>` is
    /// the local `user`.
    pub local_domains: Vec<String>,
    /// Follow `~/.forward` of local users.
    pub forward: bool,
    /// How users are looked up ([`system_user`] by default).
    pub users: &'a dyn Fn(&str) -> Option<LocalUser>,
    /// Where `alias X => Y` lines (`LogLevel > 10`, sendmail 8.17 `alias.c`) and
    /// `forward <file>: <why>` warnings go.
    pub log: Option<(&'a Logger, Option<&'a str>)>,
    /// `DontBlameSendmail`: which safe-file checks are relaxed (none by default).
    pub dont_blame: DontBlame,
    /// sendmail's `DefaultUser` (uid, gid): an `:include:` of the alias file (no owner) is
    /// read with its rights, as sendmail's `include()` does; None reads with ours.
    pub default_user: Option<(u32, u32)>,
    /// `ForwardPath`: the `.forward` files to try, in order, the first that exists wins;
    /// the cf's macros expanded, the user's home (`$z`) and name (`$u`) left as
    /// [`HOME`] and [`USER`]. Default `$z/.forward`.
    pub forward_path: Vec<String>,
}

/// Stands for `$z` (the user's home directory) in [`Expander::forward_path`].
pub const HOME: char = '\u{1}';
/// Stands for `$u` (the user's name) in [`Expander::forward_path`].
pub const USER: char = '\u{2}';

/// `ForwardPath` of `config` as [`Expander::forward_path`] keeps it: split at `:`, the cf's
/// macros (`$w`, `$j`, …) expanded, `$z` and `$u` kept for each user. Empty: no `.forward`.
pub fn forward_path_of(config: &crate::config::Config) -> Vec<String> {
    let keep = |name: &str| match name {
        "z" => Some(HOME.to_string()),
        "u" => Some(USER.to_string()),
        _ => None,
    };
    let lookup = crate::config::macros::Layered {
        top: &keep,
        base: config,
    };
    config
        .options
        .forward_path
        .expand(&lookup)
        .split(':')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

impl<'a> Expander<'a> {
    pub fn new(table: &'a AliasTable) -> Expander<'a> {
        Expander {
            table,
            local_domains: Vec::new(),
            forward: true,
            users: &system_user,
            log: None,
            dont_blame: DontBlame::default(),
            forward_path: vec![format!("{HOME}/.forward")],
            default_user: None,
        }
    }

    /// An expander for `config`: local domains from class `w` plus `$j`, `.forward` on.
    pub fn from_config(table: &'a AliasTable, config: &crate::config::Config) -> Expander<'a> {
        Expander::from_config_as(table, config, default_user(config))
    }

    /// [`Expander::from_config`] with `DefaultUser` already resolved to `ids`: the
    /// runtime resolves it once per configuration generation, as a password-file lookup
    /// through NSS costs about 60 system calls (measured: two per delivered message were
    /// 114 of its 187 system calls).
    pub fn from_config_as(
        table: &'a AliasTable,
        config: &crate::config::Config,
        ids: (u32, u32),
    ) -> Expander<'a> {
        let mut e = Expander::new(table);
        e.dont_blame = DontBlame::from_words(&config.options.dont_blame_sendmail);
        e.forward_path = forward_path_of(config);
        e.default_user = Some(ids);
        e.local_domains = config.classes.get("w").cloned().unwrap_or_default();
        if !config.host.fqdn.is_empty() {
            e.local_domains.push(config.host.fqdn.clone());
        }
        e
    }

    /// All targets for `addr`, duplicates removed, in order of first appearance.
    pub fn expand(&self, addr: &str) -> Vec<Target> {
        self.expand_owned(addr)
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    /// Like [`Expander::expand`], with each target's owner: local delivery runs a `|program`
    /// as that user and writes a `/file` only if that user owns it.
    pub fn expand_owned(&self, addr: &str) -> Vec<OwnedTarget> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut chain = Vec::new();
        self.expand_address(addr, 0, None, &mut chain, &mut out);
        out.retain(|(t, _)| seen.insert(t.clone()));
        out
    }

    /// `Some(local part)` when `addr` is local (no domain, or a local domain).
    fn local_part<'s>(&self, addr: &'s str) -> Option<&'s str> {
        let addr = addr.trim();
        let addr = addr
            .strip_prefix('<')
            .and_then(|a| a.strip_suffix('>'))
            .unwrap_or(addr);
        match addr.rsplit_once('@') {
            None => Some(addr),
            Some((user, dom)) => {
                let dom = dom.trim_end_matches('.').to_ascii_lowercase();
                self.local_domains
                    .iter()
                    .any(|d| d.trim_end_matches('.').eq_ignore_ascii_case(&dom))
                    .then_some(user)
            }
        }
    }

    fn note(&self, sev: Severity, min_level: u32, msg: fmt::Arguments<'_>) {
        if let Some((logger, qid)) = self.log
            && logger.enabled(min_level)
        {
            logger.log(sev, qid, msg);
        }
    }

    fn expand_address(
        &self,
        addr: &str,
        depth: usize,
        owner: Option<&LocalUser>,
        chain: &mut Vec<String>,
        out: &mut Vec<OwnedTarget>,
    ) {
        let mut push = |t: Target| out.push((t, owner.cloned()));
        let Some(local) = self.local_part(addr) else {
            push(Target::Remote(addr.trim().to_string()));
            return;
        };
        // `\user`: that user's mailbox, no alias and no `.forward` (sendmail's QNOALIAS).
        if let Some(user) = local.strip_prefix('\\') {
            push(Target::User(user.to_string()));
            return;
        }
        let key = local.to_ascii_lowercase();
        if chain.contains(&key) {
            // Self-reference: deliver to the user without aliasing again.
            push(Target::User(local.to_string()));
            return;
        }
        if depth > MAX_DEPTH {
            push(loop_error(addr, depth));
            return;
        }
        if let Some(alias) = self.table.get(local) {
            self.note(
                Severity::Info,
                10,
                format_args!("alias {} => {}", addr.trim(), alias.rhs.trim()),
            );
            chain.push(key);
            for m in alias.members() {
                self.expand_member(&m, depth + 1, owner, chain, out);
            }
            chain.pop();
            return;
        }
        if self.forward
            && let Some(user) = (self.users)(local)
        {
            let members = match self.read_forward(&user) {
                Ok(Some(members)) => members,
                Ok(None) => {
                    push(Target::User(local.to_string()));
                    return;
                }
                Err(why) => {
                    push(Target::Error {
                        address: local.to_string(),
                        reason: format!("transient .forward open error ({why}): message queued"),
                        dsn: "4.3.0".into(),
                        temporary: true,
                    });
                    return;
                }
            };
            chain.push(key);
            for m in members {
                self.expand_member(&m, depth + 1, Some(&user), chain, out);
            }
            chain.pop();
            return;
        }
        push(Target::User(local.to_string()));
    }

    fn expand_member(
        &self,
        m: &Member,
        depth: usize,
        owner: Option<&LocalUser>,
        chain: &mut Vec<String>,
        out: &mut Vec<OwnedTarget>,
    ) {
        let owned = |t: Target| (t, owner.cloned());
        match m {
            Member::Address(a) => self.expand_address(a, depth, owner, chain, out),
            Member::Direct(u) => out.push(owned(Target::User(u.clone()))),
            Member::File(p) => out.push(owned(Target::File(p.clone()))),
            Member::Program(c) => out.push(owned(Target::Program(c.clone()))),
            Member::Include(p) => {
                if depth > MAX_DEPTH {
                    out.push(owned(loop_error(
                        &format!(":include:{}", p.display()),
                        depth,
                    )));
                    return;
                }
                let key = format!(":include:{}", p.display());
                if chain.contains(&key) {
                    out.push(owned(Target::Error {
                        address: key,
                        reason: "include loop".into(),
                        dsn: "5.4.6".into(),
                        temporary: false,
                    }));
                    return;
                }
                // read as sendmail's include() does: as the controlling user, else DefaultUser
                let reader = match owner {
                    Some(u) => Some(Who::user(&u.name, u.uid, u.gid)),
                    None => self.default_user.map(|(uid, gid)| Who::uid(uid, gid)),
                };
                match super::safefile::read(
                    p,
                    None,
                    Kind::Include,
                    &self.dont_blame,
                    reader.as_ref(),
                ) {
                    Ok(file) => {
                        // sendmail runs an include file's entries as its owner (unless root)
                        let file_owner = (file.uid != 0).then(|| user_by_uid(file.uid, file.gid));
                        let owner = file_owner.as_ref().or(owner);
                        chain.push(key);
                        for m in split_members(&strip_comments(&file.text)) {
                            self.expand_member(&m, depth + 1, owner, chain, out);
                        }
                        chain.pop();
                    }
                    Err(why) => {
                        let temporary = why.is_transient();
                        out.push(owned(Target::Error {
                            address: key,
                            reason: format!("Cannot open {}: {why}", p.display()),
                            dsn: if temporary { "4.3.0" } else { "5.3.0" }.into(),
                            temporary,
                        }))
                    }
                }
            }
        }
    }

    /// The members of the user's `.forward`: the first file of [`Self::forward_path`]
    /// that exists and is safe (sendmail's `forward()`: a missing or unsafe one, logged, sends
    /// it on to the next). None when there is none or it is empty; an error when reading
    /// failed for a passing reason (sendmail then queues the address).
    fn read_forward(&self, user: &LocalUser) -> Result<Option<Vec<Member>>, ReadSafeError> {
        let home = user.home.to_string_lossy();
        for template in &self.forward_path {
            let path: PathBuf = template
                .replace(HOME, &home)
                .replace(USER, &user.name)
                .into();
            match self.read_one_forward(&path, user)? {
                Some(members) => return Ok((!members.is_empty()).then_some(members)),
                None => continue,
            }
        }
        Ok(None)
    }

    /// One `.forward` candidate: its members, None when missing or unsafe (logged).
    fn read_one_forward(
        &self,
        path: &Path,
        user: &LocalUser,
    ) -> Result<Option<Vec<Member>>, ReadSafeError> {
        let reader = Who::user(&user.name, user.uid, user.gid);
        match super::safefile::read(
            path,
            Some(user.uid),
            Kind::Forward,
            &self.dont_blame,
            Some(&reader),
        ) {
            Ok(file) => Ok(Some(split_members(&strip_comments(&file.text)))),
            Err(ReadSafeError::Missing) => Ok(None),
            Err(why) if why.is_transient() => {
                self.note(
                    Severity::Err,
                    2,
                    format_args!("forward {}: transient error: {why}", path.display()),
                );
                Err(why)
            }
            Err(why) => {
                // sendmail: LOG_WARNING when LogLevel > 2 (root) / > 10 (otherwise).
                let level = if nix::unistd::geteuid().is_root() {
                    2
                } else {
                    10
                };
                self.note(
                    Severity::Warning,
                    level,
                    format_args!("forward {}: {why}", path.display()),
                );
                Ok(None)
            }
        }
    }
}

fn loop_error(addr: &str, depth: usize) -> Target {
    Target::Error {
        address: addr.trim().to_string(),
        reason: format!("aliasing/forwarding loop broken ({depth} aliases deep; {MAX_DEPTH} max)"),
        dsn: "5.4.6".into(),
        temporary: false,
    }
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `.forward` or include file that passed the checks, and who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeFile {
    pub text: String,
    pub uid: u32,
    pub gid: u32,
}

/// Why a `.forward` or include file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadSafeError {
    Missing,
    Unsafe(String),
    /// Reading failed; `transient` as sendmail's `transienterror()` judges the errno.
    Io {
        message: String,
        transient: bool,
    },
}

impl ReadSafeError {
    pub(crate) fn io(e: &std::io::Error) -> ReadSafeError {
        use nix::libc::*;
        let transient = matches!(
            e.raw_os_error(),
            Some(EIO | EAGAIN | ETIMEDOUT | ENOSPC | ENOMEM | ENFILE | EMFILE | EINTR | ESTALE)
        );
        // sendmail's words (strerror), without Rust's "(os error N)"
        let message = match e.raw_os_error() {
            Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
            None => e.to_string(),
        };
        ReadSafeError::Io { message, transient }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ReadSafeError::Io {
                transient: true,
                ..
            }
        )
    }
}

impl fmt::Display for ReadSafeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadSafeError::Missing => f.write_str("No such file or directory"),
            ReadSafeError::Unsafe(s) | ReadSafeError::Io { message: s, .. } => f.write_str(s),
        }
    }
}

/// sendmail's safe-file rules with `DontBlameSendmail=safe` ([`super::safefile`]): a
/// `.forward` when `owner` is given (it must be theirs or root's), an include file otherwise.
pub fn read_safe(path: &Path, owner: Option<u32>) -> Result<SafeFile, ReadSafeError> {
    let kind = match owner {
        Some(_) => Kind::Forward,
        None => Kind::Include,
    };
    super::safefile::read(path, owner, kind, &DontBlame::default(), None)
}

/// sendmail's `DefaultUser` of `config` as (uid, gid): the option, else `mailnull`, else
/// 1:1.
pub fn default_user(config: &crate::config::Config) -> (u32, u32) {
    match &config.options.default_user {
        Some(spec) => resolve_user_spec(&spec.user, spec.group.as_deref()),
        None => system_user("mailnull").map(|u| (u.uid, u.gid)),
    }
    .unwrap_or((1, 1))
}

/// `DefaultUser=user[:group]`: names or numbers.
pub fn resolve_user_spec(user: &str, group: Option<&str>) -> Option<(u32, u32)> {
    let (uid, mut gid) = match user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => system_user(user).map(|u| (u.uid, u.gid))?,
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => nix::unistd::Group::from_name(g)
                .ok()
                .flatten()?
                .gid
                .as_raw(),
        };
    }
    Some((uid, gid))
}
