//! The session's STARTTLS (RFC 3207) and AUTH (RFC 4954) commands.
//!
//! In: `STARTTLS` and `AUTH` command lines, the SASL lines that follow a `334`, and the
//! driver's report of a finished (or failed) TLS handshake. Out: [`Action`]s, as every
//! handler of the session: replies, log lines, [`Action::StartTls`] (the driver drops what
//! the client pipelined after the command and runs the handshake), delays after failed
//! attempts.
//!
//! sendmail 8.17 (srvrsmtp.c, op.txt "STARTTLS", "SMTP AUTHENTICATION") is followed:
//! STARTTLS offered only with a certificate and without `M=S`, the dialogue restarting from
//! EHLO after the handshake, the `STARTTLS=server, …` and `AUTH=server, …` lines at
//! LogLevel > 8, `AUTH failure (MECH): …, relay=…` at LogLevel ≥ 9, `M=a` (MAIL needs
//! AUTH) and `M=A` (no AUTH). Plain-text mechanisms are offered over TLS, and without it
//! only to a loopback client unless `AuthOptions` has `p` (sendmail: never without TLS
//! with `p`, always without it). Differences: failures are slowed down (1 s, then 2 s) and
//! the third closes the session with a 421 (sendmail relies on the SASL library).

use std::sync::Arc;
use std::time::Duration;

use super::{Action, Session, State};
use crate::auth::limit::AuthLimit;
use crate::auth::{Abort, Authenticator, Credentials, Exchange, Mechanism, Step};
use crate::log::Severity;
use crate::smtp::reply;
use crate::tls::TlsInfo;

/// Failed AUTH attempts a session may make; the last one closes it.
pub const MAX_AUTH_FAILURES: u32 = 3;
/// The delay before the reply to the first failed attempt; it doubles with each.
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// What a session may offer for STARTTLS and AUTH (fixed for the connection).
#[derive(Clone, Default)]
pub struct Security {
    /// A certificate is loaded: STARTTLS can be offered (unless the daemon has `M=S`).
    pub starttls: bool,
    /// Checks AUTH credentials; `None`: no AUTH (no password file).
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// The mechanisms to offer (ours ∩ `AuthMechanisms`).
    pub mechanisms: Vec<Mechanism>,
    /// Plain-text mechanisms only after STARTTLS (`AuthOptions=p`, or a non-loopback client).
    pub auth_needs_tls: bool,
    /// The daemon's AUTH failures per client address (none for `-bs`).
    pub failure_limit: Option<Arc<AuthLimit>>,
}

/// A successful AUTH: `${auth_type}`, `${auth_authen}`, `${auth_author}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthInfo {
    pub mechanism: Mechanism,
    pub authen: String,
    /// The identity asked for (PLAIN's authzid), else the user name.
    pub author: String,
}

impl AuthInfo {
    /// The `(name, value)` pairs of sendmail's AUTH macros (`auth_ssf` 0: no SASL layer).
    pub fn macros(&self) -> [(&'static str, String); 4] {
        [
            ("auth_type", self.mechanism.name().to_string()),
            ("auth_authen", self.authen.clone()),
            ("auth_author", self.author.clone()),
            ("auth_ssf", "0".to_string()),
        ]
    }
}

/// The session's TLS and AUTH state.
#[derive(Debug, Default)]
pub(super) struct SecurityState {
    pub(super) tls: Option<TlsInfo>,
    pub(super) auth: Option<AuthInfo>,
    failures: u32,
}

/// A command line as it may be logged: AUTH's initial response (credentials) is left out.
pub(super) fn loggable(line: &str) -> std::borrow::Cow<'_, str> {
    let mut words = line.split_ascii_whitespace();
    let is_auth = words.next().is_some_and(|w| w.eq_ignore_ascii_case("AUTH"));
    match (is_auth, words.next(), words.next()) {
        (true, Some(mech), Some(_)) => format!("AUTH {mech} ***").into(),
        _ => line.into(),
    }
}

impl Session {
    /// The driver finished the TLS handshake (after STARTTLS, or before the greeting of an
    /// `M=s` daemon): log it as sendmail does and restart the dialogue from EHLO.
    pub fn tls_started(&mut self, info: TlsInfo) -> Vec<Action> {
        let mut out = Vec::new();
        self.stats.tls_handshakes += 1;
        if self.ctx.log_level > 8 {
            let text = info.log_line("server", &self.ctx.client.display());
            self.log(Severity::Info, false, text, &mut out);
        }
        if self.tx.is_some() {
            self.finish_transaction(&mut out);
        }
        self.helo = None;
        self.esmtp = false;
        self.n_helo = 0;
        self.sec.auth = None;
        self.sec.tls = Some(info);
        out
    }

    /// The handshake failed: the stream is unusable, the session ends.
    pub fn tls_failed(&mut self, reason: &str) -> Vec<Action> {
        let mut out = Vec::new();
        self.stats.tls_failures += 1;
        if self.ctx.log_level > 5 {
            let text = format!(
                "STARTTLS=server, error: accept failed, reason={reason}, relay={}",
                self.ctx.client.display()
            );
            self.log(Severity::Warning, false, text, &mut out);
        }
        self.end_session(false, 0, &mut out);
        out
    }

    /// The negotiated TLS parameters, once the session runs over TLS.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.sec.tls.as_ref()
    }

    /// Who authenticated, if anyone did.
    pub fn authenticated(&self) -> Option<&AuthInfo> {
        self.sec.auth.as_ref()
    }

    pub(super) fn starttls_cmd(&mut self, args: &str, out: &mut Vec<Action>) {
        let r = if !args.is_empty() {
            reply::starttls_no_parameters()
        } else if self.ctx.daemon_flags.contains('S') {
            reply::tls_not_offered()
        } else if self.sec.tls.is_some() {
            reply::tls_already_active()
        } else if !self.ctx.security.starttls {
            reply::tls_not_available()
        } else {
            out.push(Action::Reply(reply::ready_to_start_tls()));
            out.push(Action::StartTls);
            return;
        };
        out.push(Action::Reply(r));
    }

    /// STARTTLS goes in EHLO.
    pub(super) fn starttls_offered(&self) -> bool {
        self.ctx.security.starttls && self.sec.tls.is_none() && !self.ctx.daemon_flags.contains('S')
    }

    /// The mechanisms AUTH offers now (empty: no AUTH keyword, AUTH refused).
    pub(super) fn auth_mechanisms(&self) -> Vec<&'static str> {
        let s = &self.ctx.security;
        let usable = s.authenticator.is_some()
            && !self.ctx.daemon_flags.contains('A')
            && (self.sec.tls.is_some() || !s.auth_needs_tls);
        if !usable {
            return Vec::new();
        }
        s.mechanisms.iter().map(|m| m.name()).collect()
    }

    /// `M=a` and nobody authenticated: MAIL is refused.
    pub(super) fn auth_required(&self) -> bool {
        self.ctx.daemon_flags.contains('a')
            && !self.ctx.daemon_flags.contains('A')
            && self.sec.auth.is_none()
    }

    pub(super) fn auth_cmd(&mut self, arg: &str, out: &mut Vec<Action>) {
        let offered = self.auth_mechanisms();
        if offered.is_empty() {
            out.push(Action::Reply(reply::auth_not_available()));
            return;
        }
        if self.sec.auth.is_some() {
            out.push(Action::Reply(reply::already_authenticated()));
            return;
        }
        if self.tx.is_some() {
            out.push(Action::Reply(reply::auth_in_transaction()));
            return;
        }
        if let Some(n) = self.address_exhausted() {
            self.refuse_guessing(n, out);
            return;
        }
        // sendmail's "crude way to avoid crack attempts": every AUTH that gets this far counts,
        // limit one more than the mechanisms offered.
        let limit = u32::try_from(offered.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        self.attack_check(super::Counter::Auth(limit), "AUTH", out);
        let mut words = arg.split_ascii_whitespace();
        let Some(name) = words.next() else {
            out.push(Action::Reply(reply::auth_mechanism_required()));
            return;
        };
        let mech = Mechanism::parse(name).filter(|m| offered.contains(&m.name()));
        let Some(mech) = mech else {
            out.push(Action::Reply(reply::auth_mechanism_unavailable(name)));
            return;
        };
        let initial = words.next();
        if let Some(text) = initial.filter(|t| !crate::auth::is_base64(t)) {
            if self.ctx.log_level > 5 {
                let text = format!(
                    "AUTH decode64 error [-5 for \"{}\"], relay={}",
                    reply::shorten(text, reply::MAXSHORTSTR),
                    self.ctx.client.display()
                );
                self.log(Severity::Warning, true, text, out);
            }
            out.push(Action::Reply(reply::auth_cannot_decode_initial(text)));
            return;
        }
        let (exchange, step) = Exchange::start(mech, initial);
        self.auth_step(exchange, step, out);
    }

    /// A line sent in answer to a `334` challenge.
    pub(super) fn auth_response(&mut self, line: &str) -> Vec<Action> {
        let mut out = Vec::new();
        let State::Auth(mut exchange) = std::mem::replace(&mut self.state, State::Command) else {
            return out;
        };
        let step = exchange.respond(line);
        self.auth_step(exchange, step, &mut out);
        out
    }

    fn auth_step(&mut self, exchange: Exchange, step: Step, out: &mut Vec<Action>) {
        let mech = exchange.mechanism();
        match step {
            Step::Challenge(text) => {
                out.push(Action::Reply(reply::auth_challenge(&text)));
                self.state = State::Auth(exchange);
            }
            Step::Done(creds) => self.auth_check(mech, creds, out),
            Step::Abort(Abort::Cancelled) => out.push(Action::Reply(reply::auth_aborted())),
            Step::Abort(Abort::NotBase64(text)) => {
                out.push(Action::Reply(reply::auth_cannot_decode(&text)))
            }
            Step::Abort(Abort::Malformed(detail)) => {
                let why =
                    format!("bad protocol / cancel (-5) SASL(-5): bad protocol / cancel: {detail}");
                self.auth_failure(mech, &why, None, out);
            }
        }
    }

    fn auth_check(&mut self, mech: Mechanism, creds: Credentials, out: &mut Vec<Action>) {
        let ok = self
            .ctx
            .security
            .authenticator
            .as_ref()
            .is_some_and(|a| a.verify(&creds.authcid, &creds.password));
        // Acting as someone else is not supported: the authzid must be the user itself.
        let as_self = creds.authzid.as_ref().is_none_or(|z| *z == creds.authcid);
        if !(ok && as_self) {
            let why = format!(
                "authentication failure (-13) SASL(-13): authentication failure: {}",
                mech.refusal()
            );
            self.auth_failure(mech, &why, Some(&creds.authcid), out);
            return;
        }
        if self.ctx.log_level > 8 {
            let text = format!(
                "AUTH=server, relay={}, authid={}, mech={}, bits=0",
                self.ctx.client.display(),
                reply::shorten(&creds.authcid, 128),
                mech.name()
            );
            self.log(Severity::Info, false, text, out);
        }
        self.sec.auth = Some(AuthInfo {
            mechanism: mech,
            author: creds.authcid.clone(),
            authen: creds.authcid,
        });
        out.push(Action::Reply(reply::authenticated()));
    }

    /// sendmail's LOGAUTHFAIL, a growing delay, and the end of the session at the limit.
    fn auth_failure(
        &mut self,
        mech: Mechanism,
        why: &str,
        user: Option<&str>,
        out: &mut Vec<Action>,
    ) {
        self.sec.failures += 1;
        self.stats.auth_failures += 1;
        if self.ctx.log_level >= 9 {
            let user = user.map_or(String::new(), |u| {
                format!(", user={}", reply::shorten(u, reply::MAXSHORTSTR))
            });
            let text = format!(
                "AUTH failure ({}): {why}{user}, relay={}",
                mech.name(),
                self.ctx.client.display()
            );
            self.log(Severity::Warning, true, text, out);
        }
        let by_address = match (&self.ctx.security.failure_limit, self.ctx.client.ip) {
            (Some(limit), Some(ip)) => {
                limit.record_failure(ip, std::time::Instant::now());
                self.address_exhausted()
            }
            _ => None,
        };
        if let Some(n) = by_address {
            self.refuse_guessing(n, out);
            return;
        }
        if self.sec.failures >= MAX_AUTH_FAILURES {
            out.push(Action::Reply(reply::too_many_auth_failures(
                &self.ctx.hostname,
            )));
            self.end_session(false, 0, out);
            return;
        }
        out.push(Action::Delay(
            AUTH_FAILURE_DELAY * (1 << (self.sec.failures - 1)),
        ));
        out.push(Action::Reply(reply::auth_failed()));
    }

    /// The failures counted against the client's address once it may not try any more.
    fn address_exhausted(&self) -> Option<u32> {
        let limit = self.ctx.security.failure_limit.as_ref()?;
        limit.exhausted(self.ctx.client.ip?, std::time::Instant::now())
    }

    /// The address has used up its AUTH attempts (across connections): sendmail's
    /// `possible SMTP attack` line (fail2ban's `sendmail-auth` filter matches it), the 421,
    /// and the end of the session, without looking at any credentials.
    fn refuse_guessing(&mut self, failures: u32, out: &mut Vec<Action>) {
        if self.ctx.log_level > 5 {
            let text = format!(
                "{}: possible SMTP attack: command=AUTH, count={failures}",
                self.ctx.client.display()
            );
            self.log(Severity::Info, true, text, out);
        }
        out.push(Action::Reply(reply::too_many_auth_failures(
            &self.ctx.hostname,
        )));
        self.end_session(false, 0, out);
    }

    /// `$r`: the protocol with RFC 3848's `S` (TLS) and `A` (authenticated).
    pub(super) fn protocol_name(&self) -> &'static str {
        match (self.esmtp, self.sec.tls.is_some(), self.sec.auth.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }
}

#[cfg(test)]
mod tests;
