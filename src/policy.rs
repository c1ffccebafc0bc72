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

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::config::Config;
use crate::dns::format_ip;
use crate::mailbox::{self, AddrError, Domain, LocalKind, Mailbox};
use crate::rules::address::{Use, parseaddr};
use crate::rules::check::{Verdict, rscheck, take_messages};
use crate::rules::handle::Handle;
use crate::rules::mailer::MailerDef;
use crate::rules::rewrite::Engine;
use crate::rules::smtp_macros::{self, Resolved};
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

/// A check ruleset's refusal as sendmail's `usrerr` words it (err.c `fmtmsg`): the address
/// goes in front of the text only for the codes 250, 252, 450, 550 and 553 (a `451 4.7.1 Try
/// again later` or `421 4.0.0 …` from the access map names none), and a reply without an
/// enhanced status code gets `X.0.0` from its first digit (`550 5.0.0 <a@b>... Your domain
/// is blocked`), as the oracle answers.
fn usrerr_reply(code: u16, dsn: Option<&str>, shown: &str, text: &str) -> Reply {
    let default_dsn = matches!(code / 100, 2 | 4 | 5).then(|| format!("{}.0.0", code / 100));
    let dsn = dsn.map(str::to_owned).or(default_dsn);
    let text = if matches!(code, 250 | 252 | 450 | 550 | 553) {
        format!("{shown}... {text}")
    } else {
        text.to_string()
    };
    Reply::new(code, dsn.as_deref(), text)
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

    /// An address through rulesets 3 and 0 (sendmail's `parseaddr`), for the
    /// `{mail_*}`/`{rcpt_*}` macros; the null sender is sendmail's `local` with no host or user.
    fn resolve_for_macros(
        e: &mut Engine,
        mailers: &[MailerDef],
        bare: &str,
        sender: bool,
    ) -> Resolved {
        if bare.is_empty() {
            return Resolved {
                mailer: "local".into(),
                ..Resolved::default()
            };
        }
        let how = Use {
            sender,
            header: false,
        };
        let parsed = parseaddr(e, mailers, bare.as_bytes(), how);
        let _ = take_messages(e);
        match parsed {
            Some(a) => Resolved {
                mailer: a.mailer,
                host: a
                    .host
                    .map(|h| String::from_utf8_lossy(&h).into_owned())
                    .unwrap_or_default(),
                addr: String::from_utf8_lossy(&a.user).into_owned(),
            },
            None => Resolved::default(),
        }
    }

    /// Runs `set` on `arg` with the connection's macros and, for MAIL and RCPT, the
    /// transaction's ([`crate::rules::smtp_macros`]); `Some((code, dsn, text))` when it refuses.
    fn run(
        &self,
        conn: &BTreeMap<String, String>,
        tx: Option<Transaction<'_>>,
        set: &str,
        arg: &str,
        arg2: Option<&str>,
    ) -> Option<(u16, Option<String>, String)> {
        match self.run_verdict(conn, tx, set, arg, arg2) {
            Verdict::Reject { code, dsn, text } => Some((code, dsn, text)),
            _ => None,
        }
    }

    /// As [`Self::run`], with the ruleset's whole verdict (accept, discard, reject).
    fn run_verdict(
        &self,
        conn: &BTreeMap<String, String>,
        tx: Option<Transaction<'_>>,
        set: &str,
        arg: &str,
        arg2: Option<&str>,
    ) -> Verdict {
        let mut e = self.rules.engine();
        let mailers = self.rules.mailers();
        smtp_macros::apply(&mut e, &smtp_macros::connection_values(conn));
        let mut t = smtp_macros::Transaction::default();
        if let Some(Transaction { ctx, sender, rcpt }) = tx {
            t = smtp_macros::Transaction {
                helo: ctx.helo,
                protocol: ctx.protocol,
                qid: ctx.qid,
                sender,
                sender_resolved: sender.map(|s| Self::resolve_for_macros(&mut e, mailers, s, true)),
                rcpt_resolved: rcpt.map(|r| Self::resolve_for_macros(&mut e, mailers, r, false)),
                checking_rcpt: rcpt.is_some(),
                nrcpts: ctx.nrcpts,
                msg_size: ctx.msg_size,
                security: session_macros(ctx),
            };
        }
        smtp_macros::apply(&mut e, &smtp_macros::transaction_values(&t));
        let verdict = rscheck(&mut e, set, arg.as_bytes(), arg2.map(str::as_bytes), true);
        let _ = take_messages(&mut e);
        verdict
    }

    /// `check_relay` for a new connection: the reply that makes the session a "nullserver"
    /// and the log line, when the ruleset refuses the client. `conn`: the connection's macros.
    pub fn check_relay(
        &self,
        client: &ClientInfo,
        conn: &BTreeMap<String, String>,
    ) -> Option<(Reply, String)> {
        let name = client.name.clone().unwrap_or_else(|| {
            client
                .ip
                .map(|ip| format!("[{}]", format_ip(ip)))
                .unwrap_or_default()
        });
        let addr = client.ip.map(format_ip).unwrap_or_default();
        // sendmail's process for a connection opens the maps anew: a rebuilt map is read,
        // a missing map file is reported (SYSERR) once per connection, at its first lookup.
        {
            let mut e = self.rules.engine();
            e.maps.reopen();
            e.reported_maps.clear();
        }
        let (code, dsn, text) = self.run(conn, None, "check_relay", &name, Some(&addr))?;
        let reply = Reply::new(code, dsn.as_deref(), text);
        let log = format!(
            "ruleset=check_relay, arg1={name}, arg2={addr}, relay={}, reject={reply}",
            client.display()
        );
        Some((reply, log))
    }

    /// FEATURE(greet_pause): the `greet_pause` ruleset on `client_name $| client_addr`
    /// (the access map's `GreetPause:` entries, else the FEATURE's default); its `$# N` is
    /// the pause in milliseconds before the greeting. `None`: no such ruleset, or no pause.
    pub fn greet_pause(
        &self,
        client: &ClientInfo,
        conn: &BTreeMap<String, String>,
    ) -> Option<std::time::Duration> {
        let name = client.name.clone().unwrap_or_else(|| {
            client
                .ip
                .map(|ip| format!("[{}]", format_ip(ip)))
                .unwrap_or_default()
        });
        let addr = client.ip.map(format_ip).unwrap_or_default();
        let mut e = self.rules.engine();
        smtp_macros::apply(&mut e, &smtp_macros::connection_values(conn));
        let verdict = rscheck(
            &mut e,
            "greet_pause",
            name.as_bytes(),
            Some(addr.as_bytes()),
            true,
        );
        let _ = take_messages(&mut e);
        let Verdict::Accept(pvp) = verdict else {
            return None;
        };
        if !pvp
            .first()
            .is_some_and(|t| crate::rules::token::meta::is(t, crate::rules::token::meta::CANONNET))
        {
            return None;
        }
        let ms: u64 = std::str::from_utf8(pvp.get(1)?).ok()?.parse().ok()?;
        (ms > 0).then(|| std::time::Duration::from_millis(ms))
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
        let rcpt = (set == "check_rcpt").then(|| bare(&addr.raw));
        let tx = Transaction {
            ctx,
            sender: sender.as_deref(),
            rcpt,
        };
        match self.run_verdict(ctx.macros, Some(tx), set, &shown, None) {
            Verdict::Accept(_) => Decision::Accept,
            // held in the queue (access QUARANTINE:), logged now as sendmail logs it
            Verdict::Quarantine(reason) => Decision::Quarantine {
                log: format!(
                    "ruleset={set}, arg1={shown}, relay={}, quarantine={reason}",
                    ctx.client.display()
                ),
                reason,
            },
            // sendmail logs the discard at once (srvrsmtp.c, LogLevel > 3) and throws the
            // message away at its end
            Verdict::Discard => Decision::Discard {
                log: format!(
                    "ruleset={set}, arg1={shown}, relay={}, discard",
                    ctx.client.display()
                ),
            },
            Verdict::Reject { code, dsn, text } => {
                let reply = usrerr_reply(code, dsn.as_deref(), &shown, &text);
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

/// What a MAIL or RCPT check knows beyond the connection.
struct Transaction<'a> {
    ctx: &'a PolicyContext<'a>,
    /// The sender as `$f` holds it (without brackets; `""` for `<>`).
    sender: Option<&'a str>,
    /// The recipient being checked, without brackets.
    rcpt: Option<&'a str>,
}

impl Policy for RulesPolicy {
    /// The cf's check_mail alone decides: an unqualified sender is refused by its rules
    /// (`553 5.5.4 … Domain name required`), unless the access map lets the client relay
    /// (Debian's `Connect:127 RELAY`), as in sendmail.
    /// sendmail's canonify first (`553 5.1.2 … Invalid host name`), then the cf's
    /// check_mail alone decides: an unqualified sender is refused by its rules (`553 5.5.4 …
    /// Domain name required`) unless the access map lets the client relay (Debian's
    /// `Connect:127 RELAY`), as in sendmail.
    fn check_mail(&self, ctx: &PolicyContext<'_>, sender: &Address, _: &MailParams) -> Decision {
        if !sender.is_null()
            && let Err(e) = mailbox::parse(&sender.raw)
        {
            return invalid_address(sender.raw.trim(), e);
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
        match crate::queue::space::check_recent(&opts.queue_directory, opts.min_free_blocks, size) {
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
    /// VRFY, as sendmail 8.17 answers it (tests/differential 18-vrfy-outside): a remote
    /// address `252 2.1.5 <addr>`; an alias is not expanded but shown as an address of this
    /// host, `250 2.1.5 <postmaster@host>`; a user as EXPN shows it.
    fn vrfy_reply(&self, arg: &str) -> Reply {
        let bare = bare(arg);
        let host = crate::config::macros::expand("$j", &*self.config);
        match crate::deliver::route::route_with(self.rules.as_deref(), &self.config, bare) {
            crate::deliver::route::Route::Remote { .. } => {
                Reply::new(252, Some("2.1.5"), format!("<{bare}>"))
            }
            crate::deliver::route::Route::Local { mailer, user }
                if mailer == "local" && self.aliases.current().get(&user).is_some() =>
            {
                Reply::new(250, Some("2.1.5"), format!("<{user}@{host}>"))
            }
            _ => self.expand_reply(arg),
        }
    }

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
                // unquoted, as the oracle answers (`250 2.1.5 <|/bin/cat>`)
                Target::Program(cmd) => format!("<|{cmd}>"),
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
        self.vrfy_reply(arg)
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
    #[test]
    fn usrerr_names_the_address_for_some_codes_and_fills_the_enhanced_code() {
        // the oracle's replies to access-map entries under delay_checks
        let r = |c, d, t| super::usrerr_reply(c, d, "<root@oracle.example.test>", t).to_string();
        assert_eq!(
            r(451, Some("4.7.1"), "Try again later"),
            "451 4.7.1 Try again later"
        );
        assert_eq!(
            r(421, None, "Closing the connection now"),
            "421 4.0.0 Closing the connection now"
        );
        assert_eq!(
            r(550, None, "Your domain is blocked"),
            "550 5.0.0 <root@oracle.example.test>... Your domain is blocked"
        );
        assert_eq!(
            r(450, Some("4.2.1"), "Mailbox busy"),
            "450 4.2.1 <root@oracle.example.test>... Mailbox busy"
        );
    }

    use super::*;

    /// The rulesets of Debian's stock sendmail.cf (tests/fixtures), as the daemon loads them.
    fn debian_rules() -> RulesPolicy {
        // the access map as the harness installs it, built with makemap (a hash map is
        // read from its .db only); the map is read into memory here, so the directory
        // may go at the end of this function
        let dir = tempfile::tempdir().unwrap();
        let access = dir.path().join("access");
        std::fs::copy("tests/differential/env/etc/mail/access", &access).unwrap();
        crate::makemap::build_from_text(&access).unwrap();
        let text = std::fs::read_to_string("tests/fixtures/debian-sendmail.cf")
            .unwrap()
            .replace(
                "Fw/etc/mail/local-host-names",
                "Fwtests/fixtures/debian-etc-mail/local-host-names",
            )
            .replace(
                "-T<TMPF> /etc/mail/access",
                &format!("-T<TMPF> {}", access.display()),
            );
        let host = crate::rules::cf::HostInfo {
            hostname: "oracle.example.test".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
        };
        let (engine, x) = match crate::rules::cf::load(text.as_bytes(), "sendmail.cf", &host) {
            Ok(v) => v,
            Err(errs) => panic!("{errs:?}"),
        };
        RulesPolicy::new(Arc::new(Handle::new(engine, &x.mailers)))
    }

    fn addr(raw: &str) -> Address {
        let bare = raw.trim_start_matches('<').trim_end_matches('>');
        let (local, domain) = match bare.rsplit_once('@') {
            Some((l, d)) => (l.to_string(), Some(d.to_string())),
            None => (bare.to_string(), None),
        };
        Address {
            raw: raw.to_string(),
            route: Vec::new(),
            local,
            domain,
        }
    }

    /// issue 18: Debian's FEATURE(delay_checks) re-checks the sender in check_rcpt through
    /// `${mail_from}`; with it undefined every recipient got `553 5.5.4 … Domain name
    /// required for sender address`, even for the null sender.
    #[test]
    fn delay_checks_sees_the_sender_through_mail_from() {
        let rules = debian_rules();
        let client = ClientInfo {
            ip: Some("127.0.0.1".parse().unwrap()),
            port: 40000,
            name: Some("localhost".into()),
        };
        let mut macros = BTreeMap::new();
        macros.insert("client_addr".to_string(), "127.0.0.1".to_string());
        macros.insert("client_name".to_string(), "localhost".to_string());
        macros.insert("client_resolve".to_string(), "OK".to_string());
        for sender in ["<>", "<someone@oracle.example.test>"] {
            let sender = addr(sender);
            let ctx = PolicyContext {
                client: &client,
                helo: Some("client.example.test"),
                daemon_name: "MTA-v4",
                daemon_flags: "",
                qid: "6B64jNku030377",
                sender: Some(&sender),
                auth: None,
                tls: None,
                macros: &macros,
                protocol: "SMTP",
                nrcpts: 0,
                msg_size: None,
            };
            let d = rules.check_rcpt(&ctx, &addr("<root>"), &RcptParams::default());
            assert_eq!(d, Decision::Accept, "sender {}", sender.raw);
        }
    }

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
