//! The built-in relay rules: who may send mail to where, when the cf has no rulesets to say.
//!
//! In: the session's client and a recipient address. Out: a [`Decision`]. sendmail's standard
//! rules (cf `proto.m4` check_rcpt / Relay_ok), as the facts file records them:
//! * mail to this host's names (`$=w`: `Cw` lines, the `Fw` file, the host's own names and
//!   address literals) is accepted from anyone;
//! * mail to `relay-domains` (class `R`) or a subdomain of one is accepted from anyone;
//! * otherwise only the host itself may relay: exactly `127.0.0.1` and `::1` — not the rest of
//!   127/8, so `127.0.0.9` is an outside client, as in sendmail;
//! * the address is read once, by [`crate::mailbox::parse`], which the router reads it with
//!   too: a local part that names another host once unquoted (`"a@b"`, `a\@b`, `a%b`,
//!   `b!a`) is never local and never relayable; a source route is dropped and the mailbox
//!   after it decides; an address literal must be a valid address to be one of `$=w`.
//!
//! [`KnownUsers`] then refuses what an SMTP client may not name — a program, a file, an
//! include list (`550 5.7.1 <"|x">... Cannot mail directly to programs`) — and unknown
//! users, and tells the session which spellings reach one mailbox ([`Policy::recipient_key`]).
//!
//! Everything refused gets `550 5.7.1 <addr>... Relaying denied` and sendmail's log line
//! `ruleset=check_rcpt, arg1=<addr>, relay=…, reject=550 5.7.1 <addr>... Relaying denied`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::config::Config;
use crate::config::daemon_options::Modifiers;
use crate::dns::format_ip;
use crate::mailbox::{self, AddrError, Domain, LocalKind, Mailbox};
use crate::rules::check::{Verdict, rscheck, take_messages};
use crate::rules::handle::Handle;
use crate::smtp::command::{Address, MailParams, RcptParams};
use crate::smtp::reply::{self, Reply};
use crate::smtp::session::{ClientInfo, Decision, Policy, PolicyContext};

/// The relay rules of one configuration.
#[derive(Debug, Clone, Default)]
pub struct BuiltinPolicy {
    /// `$=w`, lower case.
    local_names: Vec<String>,
    /// `$=R`, lower case.
    relay_domains: Vec<String>,
}

impl BuiltinPolicy {
    pub fn new(local_names: &[String], relay_domains: &[String]) -> BuiltinPolicy {
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect();
        BuiltinPolicy {
            local_names: lower(local_names),
            relay_domains: lower(relay_domains),
        }
    }

    /// `$=w` and `$=R` of a configuration, with the host's own names added to `$=w`.
    pub fn from_config(cfg: &Config) -> BuiltinPolicy {
        let r = cfg.classes.get("R").cloned().unwrap_or_default();
        BuiltinPolicy::new(&cfg.local_names(), &r)
    }

    /// Whether `domain` is one of this host's names (`$=w`).
    pub fn is_local(&self, domain: &Domain) -> bool {
        !matches!(domain, Domain::Invalid(_)) && self.local_names.contains(&domain.class_key())
    }

    fn is_relay_domain(&self, domain: &Domain) -> bool {
        match domain {
            Domain::Name(d) => self
                .relay_domains
                .iter()
                .any(|r| d == r || d.ends_with(&format!(".{r}"))),
            Domain::Literal(_) => self.relay_domains.contains(&domain.class_key()),
            Domain::Invalid(_) => false,
        }
    }

    /// Whether mail to `m` stays on this host: no domain or one of `$=w`, and no other
    /// host named in the local part.
    pub fn is_local_mailbox(&self, m: &Mailbox) -> bool {
        !m.hides_route() && m.domain.as_ref().is_none_or(|d| self.is_local(d))
    }
}

/// The host itself: exactly the loopback addresses sendmail's `$=R` default names.
pub fn is_relay_client(ip: Option<IpAddr>) -> bool {
    match ip.map(|i| i.to_canonical()) {
        None => true, // the command line (-bs)
        Some(ip) => ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

impl Policy for BuiltinPolicy {
    fn check_mail(&self, ctx: &PolicyContext<'_>, sender: &Address, _: &MailParams) -> Decision {
        if let Some(d) = unqualified_sender(ctx, sender) {
            return d;
        }
        if sender.is_null() {
            return Decision::Accept;
        }
        let b = bare(&sender.raw);
        let shown = format!("<{b}>");
        match mailbox::parse(&sender.raw) {
            Err(e) => invalid_address(&shown, e),
            // sendmail's check_mail finds no such host (`[300.1.2.3]`, `exa mple.org`).
            Ok(Mailbox {
                domain: Some(Domain::Invalid(_)),
                ..
            }) => {
                let reply = reply::sender_domain_unknown(&shown, &mailbox::blank_sub(b));
                let log = format!(
                    "ruleset=check_mail, arg1={shown}, relay={}, reject={reply}",
                    ctx.client.display()
                );
                Decision::Reject {
                    reply,
                    log: Some(log),
                }
            }
            Ok(_) => Decision::Accept,
        }
    }

    fn check_rcpt(&self, ctx: &PolicyContext<'_>, rcpt: &Address, _: &RcptParams) -> Decision {
        let shown = rcpt.raw.trim().to_string();
        // The same reading the router makes of it ([`crate::mailbox`]).
        let m = match mailbox::parse(&rcpt.raw) {
            Ok(m) => m,
            Err(e) => return invalid_address(&shown, e),
        };
        // An authenticated client may relay (sendmail's TrustAuthMech, built in); whatever
        // it names, the router sends it nowhere but to the address's own domain.
        if self.is_local_mailbox(&m) || is_relay_client(ctx.client.ip) || ctx.auth.is_some() {
            return Decision::Accept;
        }
        let relay_ok =
            !m.hides_route() && m.domain.as_ref().is_some_and(|d| self.is_relay_domain(d));
        if relay_ok {
            return Decision::Accept;
        }
        let reply = reply::relaying_denied(&shown);
        let log = format!(
            "ruleset=check_rcpt, arg1={shown}, relay={}, reject={}",
            ctx.client.display(),
            reply
        );
        Decision::Reject {
            reply,
            log: Some(log),
        }
    }
}

/// An address as the client wrote it, without the angle brackets around it.
fn bare(raw: &str) -> &str {
    raw.trim().trim_start_matches('<').trim_end_matches('>')
}

/// sendmail's canonify refusing an address (`553 5.1.2 <a@b..c>... Invalid host name`).
fn invalid_address(shown: &str, e: AddrError) -> Decision {
    Decision::Reject {
        reply: Reply::new(553, Some("5.1.2"), format!("{shown}... {e}")),
        log: None,
    }
}

/// The per-session macros the rulesets may test (`$&{auth_type}`, `$&{verify}` …).
const SESSION_MACROS: &[&str] = &[
    "auth_type",
    "auth_authen",
    "auth_author",
    "auth_ssf",
    "tls_version",
    "cipher",
    "cipher_bits",
    "alg_bits",
    "verify",
];

/// This session's TLS and AUTH macro values.
fn session_macros(ctx: &PolicyContext<'_>) -> Vec<(&'static str, String)> {
    let mut m = Vec::new();
    if let Some(a) = ctx.auth {
        m.extend(a.macros());
    }
    if let Some(t) = ctx.tls {
        m.extend(t.macros());
    }
    m
}

/// sendmail's own check on MAIL (srvrsmtp.c, not a ruleset): an unqualified sender is
/// refused unless the daemon has Modifier `u` (`553 5.5.4 <sender>... Domain name required
/// for sender address sender`).
pub fn unqualified_sender(ctx: &PolicyContext<'_>, sender: &Address) -> Option<Decision> {
    if sender.is_null() {
        return None;
    }
    if let Err(e) = mailbox::parse(&sender.raw) {
        return Some(invalid_address(sender.raw.trim(), e));
    }
    if sender.domain.is_some() || ctx.daemon_flags.contains('u') {
        return None;
    }
    let bare = bare(&sender.raw);
    match mailbox::parse(&sender.raw) {
        Err(e) => return Some(invalid_address(sender.raw.trim(), e)),
        // `<"a@b">`: the user sendmail reads holds its `@` (the oracle answers `Sender ok`).
        Ok(m) if m.local.contains('@') => return None,
        Ok(_) => {}
    }
    let reply = reply::domain_required(&format!("<{bare}>"), bare);
    Some(Decision::Reject { reply, log: None })
}

/// The cf's own rulesets decide: `check_relay` at connect, `check_mail` at MAIL, `check_rcpt`
/// at RCPT, as sendmail's `rscheck` runs them (the access map, relay-domains, `$=w`, all as
/// the m4-generated rules say). The engine is shared; each check sets the connection's macros
/// (`${client_addr}`, `${client_name}`, `${daemon_flags}` …) under its lock.
pub struct RulesPolicy {
    rules: Arc<Handle>,
}

impl RulesPolicy {
    pub fn new(rules: Arc<Handle>) -> RulesPolicy {
        RulesPolicy { rules }
    }

    /// The engine handle these checks run on (shared with delivery).
    pub fn handle(&self) -> &Arc<Handle> {
        &self.rules
    }

    /// Runs `set` on `arg` for this client; `Some((code, dsn, text))` when it refuses.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        client: &ClientInfo,
        daemon_flags: &str,
        session: &[(&'static str, String)],
        set: &str,
        arg: &str,
        arg2: Option<&str>,
        sender: Option<&str>,
    ) -> Option<(u16, Option<String>, String)> {
        let mut e = self.rules.engine();
        let name = client.name.clone().unwrap_or_else(|| match client.ip {
            Some(ip) => format!("[{}]", format_ip(ip)),
            None => "localhost".to_string(),
        });
        let addr = client
            .ip
            .map(format_ip)
            .unwrap_or_else(|| "127.0.0.1".to_string());
        // `${daemon_flags}`: letters separated by spaces, upper case doubled (`M=Ea` → `EE a`).
        let flags = Modifiers::parse(daemon_flags).daemon_flags();
        for (k, v) in [
            ("client_addr", addr.as_str()),
            ("client_name", name.as_str()),
            (
                "client_resolve",
                if client.name.is_some() { "OK" } else { "FAIL" },
            ),
            ("daemon_flags", flags.as_str()),
            ("f", sender.unwrap_or("")),
        ] {
            if let Some(id) = e.names.id(k) {
                e.macros.define(id, v.as_bytes().to_vec());
            }
        }
        // The TLS and AUTH macros: this session's values, empty when it has none (the
        // engine is shared between sessions).
        for k in SESSION_MACROS {
            let v = session.iter().find(|(n, _)| n == k).map_or("", |(_, v)| v);
            if let Some(id) = e.names.id(k) {
                e.macros.define(id, v.as_bytes().to_vec());
            }
        }
        let verdict = rscheck(&mut e, set, arg.as_bytes(), arg2.map(str::as_bytes), true);
        let _ = take_messages(&mut e);
        match verdict {
            Verdict::Reject { code, dsn, text } => Some((code, dsn, text)),
            _ => None,
        }
    }

    /// `check_relay` for a new connection: the reply that makes the session a "nullserver"
    /// and the log line, when the ruleset refuses the client.
    pub fn check_relay(&self, client: &ClientInfo, daemon_flags: &str) -> Option<(Reply, String)> {
        let name = client.name.clone().unwrap_or_else(|| {
            client
                .ip
                .map(|ip| format!("[{}]", format_ip(ip)))
                .unwrap_or_default()
        });
        let addr = client.ip.map(format_ip).unwrap_or_default();
        let (code, dsn, text) = self.run(
            client,
            daemon_flags,
            &[],
            "check_relay",
            &name,
            Some(&addr),
            None,
        )?;
        let reply = Reply::new(code, dsn.as_deref(), text);
        let log = format!(
            "ruleset=check_relay, arg1={name}, arg2={addr}, relay={}, reject={reply}",
            client.display()
        );
        Some((reply, log))
    }

    fn check(&self, ctx: &PolicyContext<'_>, set: &str, addr: &Address) -> Decision {
        // The address as the client wrote it (`<<a@b>>`, or without brackets), as sendmail
        // passes it to the ruleset and echoes it; `$f` as sendmail reads the sender (a blank
        // is a `.`: `pro.be@example.org`).
        let shown = addr.raw.trim().to_string();
        let sender = match set {
            "check_mail" => Some(addr),
            _ => ctx.sender,
        }
        .map(|s| mailbox::blank_sub(bare(&s.raw)));
        let session = session_macros(ctx);
        match self.run(
            ctx.client,
            ctx.daemon_flags,
            &session,
            set,
            &shown,
            None,
            sender.as_deref(),
        ) {
            None => Decision::Accept,
            Some((code, dsn, text)) => {
                let reply = Reply::new(code, dsn.as_deref(), format!("{shown}... {text}"));
                let log = format!(
                    "ruleset={set}, arg1={shown}, relay={}, reject={reply}",
                    ctx.client.display()
                );
                Decision::Reject {
                    reply,
                    log: Some(log),
                }
            }
        }
    }
}

impl Policy for RulesPolicy {
    fn check_mail(&self, ctx: &PolicyContext<'_>, sender: &Address, _: &MailParams) -> Decision {
        if let Some(d) = unqualified_sender(ctx, sender) {
            return d;
        }
        self.check(ctx, "check_mail", sender)
    }

    fn check_rcpt(&self, ctx: &PolicyContext<'_>, rcpt: &Address, _: &RcptParams) -> Decision {
        self.check(ctx, "check_rcpt", rcpt)
    }
}

/// After the relay rules accept a recipient, sendmail's recipient lookup: an address that
/// routes to a local mailer must be an alias or a user of this host, else `550 5.1.1
/// <addr>... User unknown` (logged as `<addr>... User unknown`).
pub struct KnownUsers {
    pub inner: Arc<dyn Policy>,
    pub rules: Option<Arc<Handle>>,
    pub config: Arc<Config>,
    /// Read again when its files change ([`crate::aliases::LiveAliases`]).
    pub aliases: crate::aliases::LiveAliases,
    /// Where the low-disk-space alert goes (None: not logged).
    pub logger: Option<crate::log::Logger>,
}

impl KnownUsers {
    /// `MinFreeBlocks` (plus the announced SIZE) on the queue's filesystem; too little is
    /// logged as sendmail logs it (at alert, LogLevel > 0) and refused with `452 4.4.5`.
    fn enough_disk(&self, p: &MailParams) -> bool {
        let opts = &self.config.options;
        let size = p.size.unwrap_or(0);
        match crate::queue::space::check(&opts.queue_directory, opts.min_free_blocks, size) {
            crate::queue::space::Space::Enough => true,
            crate::queue::space::Space::Low {
                available,
                needed,
                block_size,
            } => {
                if let Some(logger) = &self.logger {
                    logger.log(
                        crate::log::Severity::Alert,
                        None,
                        format_args!(
                            "low on space (SMTP-DAEMON needs {size} bytes + {} blocks in {}), max avail: {available} blocks of {block_size} bytes (need {needed})",
                            opts.min_free_blocks,
                            opts.queue_directory.display()
                        ),
                    );
                }
                false
            }
        }
    }

    /// Whether `user` (a local mailer's user, as the route gives it) is an alias or an
    /// account. A program, file or include list is none: the client may not name those.
    fn exists(&self, user: &str) -> bool {
        let user = user.strip_prefix('\\').unwrap_or(user);
        self.aliases.current().get(user).is_some()
            || nix::unistd::User::from_name(user).ok().flatten().is_some()
    }

    /// A local mailer's user as the mailer reads it: lower case unless it has `F=u`.
    fn fold(&self, mailer: &str, user: String) -> String {
        match self.config.mailer(mailer) {
            Some(m) if m.has_flag('u') => user,
            _ => user.to_lowercase(),
        }
    }

    /// The route of a recipient as the client wrote it.
    fn route(&self, rcpt: &Address) -> crate::deliver::route::Route {
        crate::deliver::route::route_with(self.rules.as_deref(), &self.config, bare(&rcpt.raw))
    }
}

impl KnownUsers {
    /// VRFY/EXPN: the address expanded through the aliases, each final address as sendmail
    /// shows it (`root <root@host>`: the passwd full name, or the user name), or
    /// `550 5.1.1 x... User unknown`.
    fn expand_reply(&self, arg: &str) -> Reply {
        use crate::aliases::{Expander, Target};
        let bare = arg.trim().trim_start_matches('<').trim_end_matches('>');
        let host = crate::config::macros::expand("$j", &*self.config);
        let user =
            match crate::deliver::route::route_with(self.rules.as_deref(), &self.config, bare) {
                crate::deliver::route::Route::Local { user, .. } => user,
                crate::deliver::route::Route::Remote { .. } => {
                    return Reply::new(250, Some("2.1.5"), format!("<{bare}>"));
                }
                crate::deliver::route::Route::Error { text } => {
                    return Reply::new(553, Some("5.1.3"), text);
                }
            };
        let aliases = self.aliases.current();
        let mut expander = Expander::from_config(&aliases, &self.config);
        expander.forward = false;
        let mut lines: Vec<String> = Vec::new();
        for target in expander.expand(&user) {
            let line = match target {
                Target::User(name) => match nix::unistd::User::from_name(&name).ok().flatten() {
                    Some(u) => {
                        let gecos = u
                            .gecos
                            .to_string_lossy()
                            .split(',')
                            .next()
                            .unwrap_or("")
                            .to_string();
                        let full = if gecos.is_empty() {
                            name.clone()
                        } else {
                            gecos
                        };
                        format!("{full} <{name}@{host}>")
                    }
                    None => return reply::user_unknown(&user),
                },
                Target::File(p) => format!("<{}>", p.display()),
                Target::Program(cmd) => format!("<\"|{cmd}\">"),
                Target::Remote(r) => format!("<{r}>"),
                Target::Error {
                    address, reason, ..
                } => {
                    return Reply::new(550, Some("5.1.1"), format!("{address}... {reason}"));
                }
            };
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        if lines.is_empty() {
            return reply::user_unknown(&user);
        }
        Reply::multi(250, Some("2.1.5"), lines)
    }
}

impl Policy for KnownUsers {
    fn check_mail(&self, ctx: &PolicyContext<'_>, sender: &Address, p: &MailParams) -> Decision {
        match self.inner.check_mail(ctx, sender, p) {
            Decision::Accept | Decision::AcceptAs(_) if !self.enough_disk(p) => Decision::Reject {
                reply: reply::insufficient_disk_space(),
                log: None,
            },
            d => d,
        }
    }

    fn check_rcpt(&self, ctx: &PolicyContext<'_>, rcpt: &Address, p: &RcptParams) -> Decision {
        let decision = self.inner.check_rcpt(ctx, rcpt, p);
        if !matches!(decision, Decision::Accept | Decision::AcceptAs(_)) {
            return decision;
        }
        use crate::deliver::route::Route;
        let shown = format!("<{}>", bare(&rcpt.raw));
        let refuse = |reply: Reply| Decision::Reject {
            log: Some(reply.text().to_string()),
            reply,
        };
        match self.route(rcpt) {
            // sendmail (recipient.c): a client names no program, file or include list.
            Route::Local { mailer, user } => {
                let kind = match mailer.as_str() {
                    "prog" => LocalKind::Program,
                    "*file*" => LocalKind::File,
                    "*include*" => LocalKind::Include,
                    _ => mailbox::kind_of(&user),
                };
                match kind {
                    LocalKind::Program => refuse(reply::cannot_mail_directly(&shown, "programs")),
                    LocalKind::File => refuse(reply::cannot_mail_directly(&shown, "files")),
                    LocalKind::Include => refuse(reply::cannot_mail_directly(&shown, ":include:s")),
                    LocalKind::User
                        if mailer == "local" && !self.exists(&self.fold(&mailer, user.clone())) =>
                    {
                        refuse(reply::user_unknown(&shown))
                    }
                    LocalKind::User => decision,
                }
            }
            // The built-in rules found no host in it.
            Route::Error { text } if self.rules.is_none() => {
                refuse(Reply::new(553, Some("5.1.2"), format!("{shown}... {text}")))
            }
            _ => decision,
        }
    }

    /// One mailbox however it is spelled: the local mailer's user (folded to lower case
    /// unless the mailer has `F=u`), so `ROOT`, `Root@HOST.` and `"root"` are one recipient
    /// as in sendmail. Other routes: the address as written.
    fn recipient_key(&self, _: &PolicyContext<'_>, rcpt: &Address) -> Option<String> {
        match self.route(rcpt) {
            crate::deliver::route::Route::Local { mailer, user } => {
                let user = self.fold(&mailer, user);
                Some(format!("{mailer}:{user}"))
            }
            _ => None,
        }
    }

    fn vrfy(&self, _: &PolicyContext<'_>, arg: &str) -> Reply {
        self.expand_reply(arg)
    }

    fn expn(&self, _: &PolicyContext<'_>, arg: &str) -> Reply {
        self.expand_reply(arg)
    }

    fn etrn(&self, ctx: &PolicyContext<'_>, node: &str) -> Reply {
        self.inner.etrn(ctx, node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dj_is_a_local_name() {
        let cfg = Config::from_str("t.cf", "Djmta.example.test\n", &[]).unwrap();
        let p = BuiltinPolicy::from_config(&cfg);
        assert!(
            p.is_local(&Domain::Name("mta.example.test".into())),
            "{p:?}"
        );
    }
}
