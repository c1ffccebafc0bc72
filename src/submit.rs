//! Command-line submission: `sendmail [-t] [-f addr] [-F name] [-i] [rcpt …] < message` and
//! `sendmail -bs` (SMTP on stdin/stdout) — what cron, mail(1) and scripts use.
//!
//! In: the message on standard input and the command line. Out: the message in the queue's
//! maildrop ([`crate::queue::maildrop`]), durable before this process exits 0, and sendmail's
//! `from=` log line (`relay=root@localhost`). A running daemon's pickup moves it into the
//! queue; without a daemon it waits there (and `mailq` shows it).
//!
//! sendmail(8) semantics kept: without `-i` (`-oi`) a line holding a single `.` ends the
//! message; `-t` takes recipients from `To:`, `Cc:` and `Bcc:` and deletes `Bcc:`, and the
//! addresses given on the command line are then *removed* from that list; `-f` sets the
//! envelope sender (default: the invoking user); `-F` the full name in an added `From:`.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use crate::cli::Invocation;
use crate::config::Config;
use crate::config::macros::{Layered, expand, rfc5322_now};
use crate::inbound::{Origin, conn_options, offer_etrn, server_features, session_context};
use crate::log::{Logger, Severity};
use crate::queue::{self, QueueId, id::QueueIdGen, maildrop};
use crate::receive::{Destination, QueueSink};
use crate::runtime::{Current, load_config, make_logger};
use crate::smtp::conn;
use crate::smtp::session::{ClientInfo, Session};
use crate::sysexits::{
    EX_CANTCREAT, EX_CONFIG, EX_IOERR, EX_NOINPUT, EX_OK, EX_SOFTWARE, EX_TEMPFAIL, EX_USAGE,
};

/// The invoking user's login name (`root` when it cannot be found).
pub fn invoking_user() -> String {
    crate::log::real_user_name().unwrap_or_else(|| "root".to_string())
}

/// Whether `-i`, `-oi` or `-O IgnoreDots` was given.
fn ignore_dots(inv: &Invocation) -> bool {
    inv.args.ignore_dots
        || inv.overrides.iter().any(|o| {
            (o.name == "i" || o.name.eq_ignore_ascii_case("IgnoreDots"))
                && matches!(o.value.trim(), "" | "t" | "T" | "y" | "Y" | "true" | "True")
        })
}

/// `sendmail [-t] … < message`: queue one message. Returns the exit code.
pub fn deliver(inv: &Invocation) -> i32 {
    let cfg = match load_config(inv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let logger =
        make_logger(&cfg, inv, false).unwrap_or_else(|_| Logger::stderr(cfg.options.log_level));
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("sendmail: cannot read the message: {e}");
        return EX_NOINPUT;
    }
    let user = invoking_user();
    let sender = inv.args.sender.clone().unwrap_or_else(|| user.clone());
    let sub = Submission {
        text: queue::file::to_lf(&input),
        ignore_dots: ignore_dots(inv),
        read_recipients: inv.args.read_recipients,
        args: inv.args.recipients.clone(),
    };
    let (mut body, recipients) = match sub.prepare() {
        Ok(x) => x,
        Err(msg) => {
            eprintln!("sendmail: {msg}");
            return EX_USAGE;
        }
    };
    if cfg.options.seven_bit_input {
        crate::smtp::body::strip_eighth_bit(&mut body);
    }
    let qid = QueueIdGen::new().next_id();
    let Ok(id) = QueueId::new(qid.clone()) else {
        return EX_SOFTWARE;
    };
    let relay = format!("{user}@localhost");
    let warning = (inv.args.sender.as_deref()).and_then(|f| sender_warning(&cfg, &user, f));
    if let Some(w) = &warning {
        logger.log(
            Severity::Info,
            Some(&qid),
            format_args!("Authentication-Warning: {w}"),
        );
    }
    let who = Submitter {
        sender: &sender,
        full_name: inv.args.full_name.as_deref(),
        relay: &relay,
        warning: warning.as_deref(),
    };
    // sendmail's `size=` (and the priority) count the message as it was read, without the
    // headers sendmail adds (the oracle: `size=46` for a 46-byte `sendmail -t` input).
    let size = body.len();
    let (body, msgid) = add_headers(&cfg, body, &qid, &who, &recipients);
    let mut env = queue::Envelope::new(id, sender.clone());
    env.recipients = recipients
        .iter()
        .map(|r| queue::Recipient::new(r.clone()))
        .collect();
    env.client.name = Some("localhost".into());
    env.msgid = msgid.clone();
    env.priority = size as i64 + 30_000 * recipients.len() as i64;
    let msg = queue::Message {
        envelope: env,
        body,
    };
    if let Err(e) = maildrop::submit(&cfg.options.queue_directory, &msg) {
        eprintln!("sendmail: cannot queue the message: {e}");
        logger.log(
            Severity::Err,
            Some(&qid),
            format_args!("SYSERR: cannot queue: {e}"),
        );
        return EX_CANTCREAT;
    }
    if logger.enabled(4) {
        let msgid = msgid.map(|m| format!(", msgid={m}")).unwrap_or_default();
        // sendmail's logsender: `from=%.200s`
        let sender = &sender[..sender.floor_char_boundary(200)];
        logger.log(
            Severity::Info,
            Some(&qid),
            format_args!(
                "from={sender}, size={size}, class=0, nrcpts={}{msgid}, relay={relay}",
                recipients.len()
            ),
        );
    }
    let at_once = matches!(
        cfg.options.delivery_mode,
        crate::config::options::DeliveryMode::Interactive
            | crate::config::options::DeliveryMode::Background
    );
    if at_once
        && nix::unistd::geteuid().is_root()
        && !queue::Store::in_use(&cfg.options.queue_directory)
    {
        deliver_in_background(inv, &qid);
    }
    EX_OK
}

/// Root's submission with no daemon holding the queue, under DeliveryMode `b` or `i` (the
/// default; `-odq` and `-odd` leave it queued): delivered at once, in the background, as
/// sendmail's DeliveryMode background does from the command line — a
/// detached `sendmail -qI<id>` with this command's `-C` and options (it moves the maildrop
/// into the queue and delivers this message; a daemon started meanwhile is asked to instead).
/// A user's submission waits in the maildrop for the daemon or `sendmail -q`.
fn deliver_in_background(inv: &Invocation, qid: &str) {
    queue_run_in_background(&inv.args, &format!("-qI{qid}"));
}

/// A detached `sendmail <run>` (`-qI<id>`, `-qR<limit>`) with this command's `-C` and
/// options; not waited for. Returns whether it started.
fn queue_run_in_background(args: &crate::cli::args::LowArgs, run: &str) -> bool {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return false;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg0("sendmail");
    if let Some(cf) = &args.config_file {
        cmd.arg("-C").arg(cf);
    }
    for (name, value) in &args.options {
        if name.chars().count() == 1 {
            cmd.arg(format!("-o{name}{value}"));
        } else {
            cmd.arg("-O").arg(format!("{name}={value}"));
        }
    }
    cmd.arg(run)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    // Not waited for: it outlives this process (reparented to init), as sendmail's child does.
    cmd.spawn().is_ok()
}

/// The message as read, and what the command line said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The input with LF line ends.
    pub text: Vec<u8>,
    pub ignore_dots: bool,
    pub read_recipients: bool,
    pub args: Vec<String>,
}

impl Submission {
    /// The message to queue (cut at a lone `.` unless `-i`; `Bcc:` removed under `-t`) and its
    /// recipients, or why there are none.
    pub fn prepare(&self) -> Result<(Vec<u8>, Vec<String>), String> {
        let mut text = self.text.clone();
        if !self.ignore_dots
            && let Some(end) = lone_dot(&text)
        {
            text.truncate(end);
        }
        let mut recipients: Vec<String> = Vec::new();
        if self.read_recipients {
            let (headers, rest) = crate::headers::split(&text);
            let mut kept = Vec::new();
            for field in crate::headers::fields(headers) {
                let name = field.split(|&b| b == b':').next().unwrap_or(b"");
                let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
                if matches!(name.as_str(), "to" | "cc" | "bcc") {
                    let value = String::from_utf8_lossy(&field[name.len() + 1..]).into_owned();
                    recipients.extend(parse_address_list(&value));
                }
                if name != "bcc" {
                    kept.extend_from_slice(field);
                }
            }
            kept.extend_from_slice(rest);
            text = kept;
            recipients.retain(|r| !self.args.iter().any(|a| a.eq_ignore_ascii_case(r)));
            if recipients.is_empty() {
                return Err("No recipient addresses found in header".to_string());
            }
        } else {
            recipients = self
                .args
                .iter()
                .flat_map(|a| parse_address_list(a))
                .collect();
            if recipients.is_empty() {
                return Err("Recipient names must be specified".to_string());
            }
        }
        Ok((text, recipients))
    }
}

/// Where a line holding only `.` starts.
fn lone_dot(text: &[u8]) -> Option<usize> {
    let mut start = 0;
    for line in text.split_inclusive(|&b| b == b'\n') {
        if line == b".\n" || line == b"." {
            return Some(start);
        }
        start += line.len();
    }
    None
}

/// The addresses of an RFC 5322 address list (`a@b, "Name" <c@d>, group: e@f;`).
pub fn parse_address_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut angle, mut comment) = (false, None::<String>, 0u32);
    let mut flush = |cur: &mut String, angle: &mut Option<String>| {
        let a = angle.take().unwrap_or_else(|| cur.trim().to_string());
        let a = a.trim().trim_end_matches(';').trim().to_string();
        if !a.is_empty() {
            out.push(a);
        }
        cur.clear();
    };
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' if comment == 0 => {
                quoted = !quoted;
                cur.push(c);
            }
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            _ if comment > 0 => {}
            '<' if !quoted => {
                let mut a = String::new();
                for n in chars.by_ref() {
                    if n == '>' {
                        break;
                    }
                    a.push(n);
                }
                angle = Some(a);
            }
            ':' if !quoted && angle.is_none() && !cur.contains('@') => cur.clear(), // group name
            ',' | ';' if !quoted => flush(&mut cur, &mut angle),
            _ => cur.push(c),
        }
    }
    flush(&mut cur, &mut angle);
    out
}

/// sendmail's warning for `-f` by a user who is not trusted (class `t`: `Troot`, `Tdaemon`,
/// `Tuucp` in m4's cfs; root always): `<host>: <user> set sender to <addr> using -f`,
/// logged and added as `X-Authentication-Warning:` (the sender is still used). `None` when
/// the user is trusted, names itself, or authwarnings is off.
fn sender_warning(cfg: &Config, user: &str, forged: &str) -> Option<String> {
    let trusted = user == "root" || cfg.class_contains("t", user);
    if trusted || forged == user || !cfg.options.auth_warnings() {
        return None;
    }
    let host = expand("$j", cfg);
    Some(format!("{host}: {user} set sender to {forged} using -f"))
}

/// Who submits a message on the command line, as the added headers show it.
struct Submitter<'a> {
    /// The envelope sender (`-f`, else the user).
    sender: &'a str,
    /// `-F`.
    full_name: Option<&'a str>,
    /// `$_`: `user@localhost`.
    relay: &'a str,
    /// The `-f` Authentication-Warning text, if one is due.
    warning: Option<&'a str>,
}

/// Adds `Received:`, `From:`, `Date:`, `Message-Id:` (and the `-f` warning) as sendmail does
/// for a local submission; returns the message and its Message-Id.
fn add_headers(
    cfg: &Config,
    body: Vec<u8>,
    qid: &str,
    who: &Submitter<'_>,
    recipients: &[String],
) -> (Vec<u8>, Option<String>) {
    let Submitter {
        sender,
        full_name,
        relay,
        warning,
    } = *who;
    let mut m = BTreeMap::new();
    m.insert("_".to_string(), relay.to_string());
    m.insert("i".to_string(), qid.to_string());
    m.insert("b".to_string(), rfc5322_now());
    // `$u` is the one recipient as it was given: sendmail writes `for root` for
    // `sendmail root` (tests/fixtures/oracle-local-delivery.txt, section d), where SMTP's
    // `RCPT TO:<root>` gives `for <root>`.
    if let [only] = recipients {
        m.insert("u".to_string(), only.clone());
    }
    let lookup = Layered { top: &m, base: cfg };
    let host = expand("$j", &lookup);
    let headers = &body[..crate::headers::scan(&body).0];
    let template = cfg
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Received"))
        .map(|h| h.value.as_str())
        .unwrap_or("$?_($_)\n\t$.by $j ($v/$Z) id $i$?u\n\tfor $u; $|;\n\t$.$b");
    let mut added = format!("Received: {}\n", expand(template, &lookup));
    if !crate::headers::has(headers, "from") {
        let addr = if sender.contains('@') {
            sender.to_string()
        } else {
            format!("{sender}@{host}")
        };
        match full_name {
            Some(n) => added.push_str(&format!("From: {n} <{addr}>\n")),
            None => added.push_str(&format!("From: {addr}\n")),
        }
    }
    let (more, msgid) = crate::receive::id_and_date(&body, qid, &host);
    added.push_str(&more);
    // After our headers, before the message's own (where sendmail's qf has it).
    if let Some(w) = warning {
        added.push_str(&format!("X-Authentication-Warning: {w}\n"));
    }
    let mut out = added.into_bytes();
    out.extend_from_slice(&body);
    (out, msgid)
}

/// `sendmail -bs`: one SMTP session on stdin/stdout; accepted messages go to the maildrop.
pub fn smtp_on_stdio(inv: &Invocation) -> i32 {
    let cfg = match load_config(inv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let logger =
        make_logger(&cfg, inv, false).unwrap_or_else(|_| Logger::stderr(cfg.options.log_level));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return EX_SOFTWARE;
        }
    };
    let (current, _) = match Current::new(cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return EX_CONFIG;
        }
    };
    let cfg = current.config.clone();
    let client = ClientInfo {
        ip: None,
        port: 0,
        name: Some(format!("{}@localhost", invoking_user())),
    };
    let mut macros = BTreeMap::new();
    macros.insert("_".to_string(), client.display());
    // sendmail's `-bs` defines `{client_addr}` as `0` and leaves `{client_name}` and
    // `{client_resolve}` undefined: Debian's greeting then reads `(No UCE/UBE) logging
    // access from: ()-root@localhost` (the oracle; tests/differential/scenarios/21a-*).
    macros.insert("client_addr".to_string(), "0".to_string());
    macros.insert(
        "daemon_flags".to_string(),
        crate::config::daemon_options::Modifiers::parse("cu").daemon_flags(),
    );
    let origin = Origin {
        daemon_name: String::new(),
        // DirectSubmissionModifiers' default for command-line submissions: `c u` (so an
        // unqualified sender is accepted).
        daemon_flags: "cu".to_string(),
        macros: &macros,
        features: server_features(&cfg),
        ids: Arc::new(QueueIdGen::new()),
        auth_limit: None,
    };
    let mut ctx = session_context(&current, client, origin);
    // sendmail's `-bs` offers ETRN and forks a queue run for it: here a detached
    // `sendmail -qR<limit>` (the oracle answers `250 2.0.0 Queuing for node … started`).
    let args = inv.args.clone();
    offer_etrn(
        &mut ctx,
        Arc::new(move |limit: &str| queue_run_in_background(&args, &format!("-qR{limit}"))),
    );

    let mut sink = QueueSink::new(
        Destination::Maildrop(cfg.options.queue_directory.clone()),
        cfg.clone(),
        logger.clone(),
    );
    let opts = conn_options(&cfg);
    let outcome = runtime.block_on(async {
        let stream = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
        conn::serve(
            stream,
            Session::new(ctx),
            &mut sink,
            &logger,
            &opts,
            std::future::pending(),
        )
        .await
    });
    match outcome.end {
        conn::EndReason::Closed | conn::EndReason::Lost => EX_OK,
        _ => EX_IOERR,
    }
}

/// `sendmail -bv addr…`: says where each address would be delivered, as sendmail prints it
/// (`root... deliverable: mailer local, user root`; `x... User unknown`), aliases expanded,
/// each final address once. The exit status is the first refusal's (sendmail's `setstat`):
/// 67 (EX_NOUSER) for an unknown user, an `error:` mailer's by its DSN (65 for 5.7.1), 64
/// for a syntax error; a temporary `error:` is no failure here.
pub fn verify(inv: &Invocation) -> i32 {
    use crate::aliases::{Expander, Target, load_all};
    use crate::deliver::route::{Route, route_with};
    let cfg = match load_config(inv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if inv.args.recipients.is_empty() {
        // sendmail's usrerr, without its name in front (oracle)
        eprintln!("Recipient names must be specified");
        return EX_USAGE;
    }
    let logger =
        make_logger(&cfg, inv, false).unwrap_or_else(|_| Logger::stderr(cfg.options.log_level));
    let (current, _) = match Current::new(cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return EX_CONFIG;
        }
    };
    let cfg = current.config.clone();
    // An alias file that cannot be read: sendmail's alias lookups fail temporarily, so
    // every local name is kept (deliverable), known user or not.
    let missing = |spec: &String| {
        crate::aliases::spec_path(spec)
            .is_ok_and(|p| !p.exists() && !crate::aliases::db_path(&p).exists())
    };
    let (table, aliases_unavailable) = match load_all(&cfg.options.alias_files) {
        Ok(t) => (t, cfg.options.alias_files.iter().any(missing)),
        Err(_) => (Default::default(), true),
    };
    let mut expander = Expander::from_config(&table, &cfg);
    expander.forward = false;
    // (mailer, user) of each final address, and its line: a recipient reached twice (an
    // alias and a virtusertable entry to the same user) is listed once, as the first.
    let mut deliverable: Vec<((String, String), String)> = Vec::new();
    let mut status = EX_OK;
    // sendmail's -bv has an envelope: each refused address is printed and logged (notice)
    // under its queue id, `6B64nF5V018234: nosuchuser... User unknown`.
    let qid = QueueIdGen::new().next_id();
    let refuse = |text: String| {
        println!("{text}");
        logger.log(Severity::Notice, Some(&qid), format_args!("{text}"));
    };
    let mut add = |mailer: &str, user: &str, line: String| {
        let key = (mailer.to_string(), user.to_string());
        if !deliverable.iter().any(|(k, _)| *k == key) {
            deliverable.push((key, line));
        }
    };
    for arg in &inv.args.recipients {
        // a program, file or :include: named here, not reached through an alias (and
        // `:include:/x` is no RFC 822 group)
        if let Some(what) = direct_target(arg) {
            refuse(format!("{}... Cannot mail directly to {what}", arg.trim()));
            setstat(&mut status, EX_USAGE);
            continue;
        }
        // the null address names nobody here: sendmail's `<>... User unknown`
        if arg.trim() == "<>" {
            refuse("<>... User unknown".to_string());
            setstat(&mut status, crate::sysexits::EX_NOUSER);
            continue;
        }
        // sendmail's prescan: `x<y... Unbalanced '<'`, then the text as it is, a local
        // name nobody has (`x<y... User unknown`)
        match unbalanced_angle(arg) {
            Some(c) if !arg.contains('@') => {
                refuse(format!("{arg}... Unbalanced '{c}'"));
                refuse(format!("{arg}... User unknown"));
                setstat(&mut status, crate::sysexits::EX_NOUSER);
                continue;
            }
            Some(c) => refuse(format!("{arg}... Unbalanced '{c}'")),
            None => {}
        }
        for addr in parse_address_list(arg) {
            match route_with(current.rules.as_deref(), &cfg, &addr) {
                Route::Error { text } => {
                    let (st, error, syserr) = error_status(current.rules.as_deref(), &addr);
                    if syserr {
                        // a configuration error (`buildaddr: unknown mailer bogus`): sendmail's
                        // syserr, logged as SYSERR(user) at crit
                        println!("{text}");
                        logger.log(
                            Severity::Crit,
                            Some(&qid),
                            format_args!("SYSERR({}): {text}", invoking_user()),
                        );
                        setstat(&mut status, st);
                    } else if st == EX_TEMPFAIL {
                        // sendmail keeps a temporary error: mailer's address (deliverable,
                        // to the *error* mailer) after saying why
                        refuse(text);
                        if let Some((host, user)) = error {
                            let host = host.map(|h| format!(", host {h}")).unwrap_or_default();
                            let line =
                                format!("{addr}... deliverable: mailer *error*{host}, user {user}");
                            add("*error*", &user, line);
                        }
                    } else {
                        refuse(text);
                        setstat(&mut status, if st == EX_OK { EX_USAGE } else { st });
                    }
                }
                Route::Remote { mailer, host, .. } => {
                    // the user as ruleset 0 gave it (`host!user@$j`, a virtusertable's `%1`)
                    let user = current
                        .rules
                        .as_ref()
                        .and_then(|r| r.resolve(&addr).ok())
                        .map_or_else(|| addr.clone(), |(_, _, u)| u);
                    let line =
                        format!("{addr}... deliverable: mailer {mailer}, host {host}, user {user}");
                    add(&mailer, &user, line)
                }
                Route::Local { mailer, user } => {
                    // An address that is no alias keeps its own name in the line (sendmail's
                    // q_paddr): `info@virtual.example.test... deliverable: mailer local, user root`.
                    let aliased = table.get(&user).is_some();
                    for target in expander.expand(&user) {
                        match target {
                            Target::User(name)
                                if aliases_unavailable
                                    || nix::unistd::User::from_name(&name)
                                        .ok()
                                        .flatten()
                                        .is_some() =>
                            {
                                let shown = if aliased { &name } else { &addr };
                                let line =
                                    format!("{shown}... deliverable: mailer {mailer}, user {name}");
                                add(&mailer, &name, line)
                            }
                            Target::User(name) => {
                                refuse(format!("{name}... User unknown"));
                                setstat(&mut status, crate::sysexits::EX_NOUSER);
                            }
                            Target::File(p) => {
                                let p = p.display().to_string();
                                let line = format!("{p}... deliverable: mailer *file*, user {p}");
                                add("*file*", &p, line)
                            }
                            Target::Program(cmd) => {
                                // the alias keeps its quotes in front, the user has none
                                let line =
                                    format!("\"|{cmd}\"... deliverable: mailer prog, user |{cmd}");
                                add("prog", &cmd, line)
                            }
                            // An alias's address goes through rulesets 3 and 0 again (where
                            // FEATURE(redirect) answers `551 User has moved` for `x.REDIRECT`).
                            Target::Remote(r) => {
                                match current.rules.as_ref().map(|p| p.resolve(&r)) {
                                    Some(Err(text)) => {
                                        // sendmail parses an alias's address with no current
                                        // recipient, so its message has no `addr... ` in front
                                        let prefix = format!("{r}... ");
                                        refuse(
                                            text.strip_prefix(&prefix).unwrap_or(&text).to_string(),
                                        );
                                        let (st, _, _) = error_status(current.rules.as_deref(), &r);
                                        setstat(
                                            &mut status,
                                            if st == EX_OK { EX_USAGE } else { st },
                                        );
                                    }
                                    Some(Ok((m, h, u))) => {
                                        let host =
                                            h.map(|h| format!(", host {h}")).unwrap_or_default();
                                        let line = format!(
                                            "{r}... deliverable: mailer {m}{host}, user {u}"
                                        );
                                        add(&m, &u, line)
                                    }
                                    None => {
                                        let line =
                                            format!("{r}... deliverable: mailer esmtp, user {r}");
                                        add("esmtp", &r, line)
                                    }
                                }
                            }
                            Target::Error {
                                address, reason, ..
                            } => {
                                refuse(format!("{address}... {reason}"));
                                setstat(&mut status, crate::sysexits::EX_NOUSER);
                            }
                        }
                    }
                }
            }
        }
    }
    for (_, line) in deliverable {
        println!("{line}");
    }
    // a temporary failure alone is no failure of -bv (the address stays deliverable)
    if status == EX_TEMPFAIL { EX_OK } else { status }
}

/// The bracket an address leaves unbalanced (outside quotes and comments): a `>` with no
/// `<` open, a `<` inside another, or a `<` never closed. sendmail 8.17's prescan refuses
/// each (`Unbalanced '<'`).
fn unbalanced_angle(addr: &str) -> Option<char> {
    let (mut open, mut quoted, mut comment, mut escaped) = (false, false, 0u32, false);
    for c in addr.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            _ if quoted => {}
            '(' => comment += 1,
            ')' if comment > 0 => comment -= 1,
            _ if comment > 0 => {}
            '<' if open => return Some('<'),
            '<' => open = true,
            '>' if !open => return Some('>'),
            '>' => open = false,
            _ => {}
        }
    }
    open.then_some('<')
}

/// What sendmail's `recipient()` refuses when no alias led there: an address naming a
/// program (`|cmd`), a file (`/path`) or an include list (`:include:`), answered `x...
/// Cannot mail directly to programs` (`files`, `:include:s`) by the oracle for `-bv`, exit 64.
fn direct_target(addr: &str) -> Option<&'static str> {
    let a = addr.trim();
    if a.starts_with('|') {
        Some("programs")
    } else if a.starts_with('/') {
        Some("files")
    } else if a.len() >= 9 && a[..9].eq_ignore_ascii_case(":include:") {
        Some(":include:s")
    } else {
        None
    }
}

/// sendmail's `setstat`: the first status that is neither OK nor a temporary failure.
fn setstat(status: &mut i32, st: i32) {
    if *status == EX_OK || *status == EX_TEMPFAIL {
        *status = st;
    }
}

/// The exit status sendmail's `buildaddr` sets for a refused address (an `error:` mailer's
/// DSN through `dsntoexitstat`, a syntax error's 64), the `error:` triple's host and user,
/// and whether the refusal was a configuration error (a syserr).
fn error_status(
    rules: Option<&crate::rules::handle::Handle>,
    addr: &str,
) -> (i32, Option<(Option<String>, String)>, bool) {
    use crate::rules::address::{Use, parseaddr};
    let Some(h) = rules else {
        return (crate::sysexits::EX_NOUSER, None, false);
    };
    let mut e = h.engine();
    e.exit_stat = EX_OK;
    e.syserr_seen = false;
    let parsed = parseaddr(&mut e, h.mailers(), addr.as_bytes(), Use::default());
    let _ = crate::rules::check::take_messages(&mut e);
    let st = std::mem::replace(&mut e.exit_stat, EX_OK);
    let syserr = std::mem::take(&mut e.syserr_seen);
    let error = parsed.filter(|a| a.mailer == "*error*").map(|a| {
        (
            a.host.map(|h| String::from_utf8_lossy(&h).into_owned()),
            String::from_utf8_lossy(&a.user).into_owned(),
        )
    });
    (st, error, syserr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_files_and_include_lists_are_not_mailed_directly() {
        assert_eq!(direct_target("|/bin/cat"), Some("programs"));
        assert_eq!(direct_target("/tmp/somefile"), Some("files"));
        assert_eq!(
            direct_target(":include:/etc/mail/inc.list"),
            Some(":include:s")
        );
        assert_eq!(direct_target(":INCLUDE:/x"), Some(":include:s"));
        assert_eq!(direct_target("root"), None);
        assert_eq!(direct_target("user@remote.example.test"), None);
    }

    #[test]
    fn unbalanced_angle_brackets_as_sendmails_prescan_finds_them() {
        // the oracle's -bv: `bad>addr` '>', `x<y` and `a<b<c>` '<'
        assert_eq!(unbalanced_angle("bad>addr"), Some('>'));
        assert_eq!(unbalanced_angle("x<y"), Some('<'));
        assert_eq!(unbalanced_angle("a<b<c>"), Some('<'));
        for fine in ["root", "Name <a@b>", "\"x<y\"@b", "a (x<y) <b@c>", "a\\<b"] {
            assert_eq!(unbalanced_angle(fine), None, "{fine}");
        }
    }

    fn sub(text: &str, t: bool, i: bool, args: &[&str]) -> Result<(String, Vec<String>), String> {
        let s = Submission {
            text: text.as_bytes().to_vec(),
            ignore_dots: i,
            read_recipients: t,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        s.prepare().map(|(b, r)| (String::from_utf8(b).unwrap(), r))
    }

    #[test]
    fn a_lone_dot_ends_the_message_unless_i() {
        let (b, _) = sub("Subject: x\n\nline\n.\nafter\n", false, false, &["root"]).unwrap();
        assert_eq!(b, "Subject: x\n\nline\n");
        let (b, _) = sub("Subject: x\n\nline\n.\nafter\n", false, true, &["root"]).unwrap();
        assert_eq!(b, "Subject: x\n\nline\n.\nafter\n");
    }

    #[test]
    fn t_reads_to_cc_bcc_removes_bcc_and_excludes_arguments() {
        let (b, r) = sub(
            "To: alice, \"Bob B\" <bob@example.test>\nCc: carol@example.test (C)\n\
             Bcc: dave@example.test,\n eve@example.test\nSubject: hi\n\nbody\n",
            true,
            false,
            &["carol@example.test"],
        )
        .unwrap();
        assert_eq!(
            r,
            [
                "alice",
                "bob@example.test",
                "dave@example.test",
                "eve@example.test"
            ]
        );
        assert!(!b.contains("Bcc") && !b.contains("eve@"), "{b}");
        assert!(b.contains("Subject: hi\n\nbody\n"), "{b}");
    }

    #[test]
    fn no_recipients_is_an_error() {
        assert_eq!(
            sub("Subject: x\n\n", false, false, &[]).unwrap_err(),
            "Recipient names must be specified"
        );
        assert_eq!(
            sub("Subject: x\n\n", true, false, &[]).unwrap_err(),
            "No recipient addresses found in header"
        );
    }

    #[test]
    fn address_lists() {
        assert_eq!(parse_address_list("a@b, c@d"), ["a@b", "c@d"]);
        assert_eq!(parse_address_list("friends: x@y, z@w;"), ["x@y", "z@w"]);
        assert_eq!(parse_address_list("\"Doe, J\" <j@d>"), ["j@d"]);
    }
}
