//! SMTP AUTH (RFC 4954) on the server side: the SASL mechanisms PLAIN (RFC 4616) and LOGIN
//! (draft-murchison-sasl-login), and the password file they are checked against.
//!
//! In: the `AUTH <mechanism> [initial-response]` arguments and each base64 line the client
//! sends after a `334`. Out: [`Step`]s — the next `334` challenge, the decoded
//! [`Credentials`], or why the exchange ended. Sans-IO: no socket, no clock; the session
//! ([`crate::smtp::session`]) turns steps into replies, checks the credentials with an
//! [`Authenticator`] ([`passwd::PasswordFile`], or the site's Cyrus `saslauthd`:
//! [`saslauthd::Saslauthd`]) and logs as sendmail does.
//!
//! Failures are also counted per client address across connections ([`limit`]).
//!
//! sendmail 8.17 with Cyrus SASL is the model (srvrsmtp.c `CMDAUTH`): `*` cancels, `=` is an
//! empty initial response, LOGIN asks `Username:` then `Password:`.

pub mod limit;
pub mod passwd;
pub mod saslauthd;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The mechanisms sendmail-rs implements, in the order EHLO lists them.
pub const MECHANISMS: &[Mechanism] = &[Mechanism::Login, Mechanism::Plain];

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    /// The mechanism of that name (case-insensitive), if implemented.
    pub fn parse(name: &str) -> Option<Mechanism> {
        MECHANISMS
            .iter()
            .copied()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }

    /// The mechanisms to offer: ours, limited to `AuthMechanisms` when it is set and then in
    /// its order (sendmail's `intersect(AuthMechanisms, <the SASL library's list>)` keeps the
    /// option's order: the oracle offers `AUTH PLAIN LOGIN` under Debian's sasl.m4, whose
    /// list ends `PLAIN LOGIN`, and `AUTH LOGIN PLAIN` under `LOGIN PLAIN`).
    pub fn allowed(configured: Option<&[String]>) -> Vec<Mechanism> {
        let Some(names) = configured else {
            return MECHANISMS.to_vec();
        };
        let mut out = Vec::new();
        for m in names.iter().filter_map(|n| Mechanism::parse(n)) {
            if !out.contains(&m) {
                out.push(m);
            }
        }
        out
    }

    /// The SASL plug-in's own words when the password is refused (Cyrus SASL 2.1's `plain.c`
    /// and `login.c`, as the oracle logs them under saslauthd and under sasldb).
    pub fn refusal(self) -> &'static str {
        match self {
            Mechanism::Plain => "Password verification failed",
            Mechanism::Login => "checkpass failed",
        }
    }
}

/// Whether `text` is base64 as the exchange decodes it (`=`, the empty response, is).
pub fn is_base64(text: &str) -> bool {
    let text = text.trim();
    text == "=" || STANDARD.decode(text).is_ok()
}

/// What the client proved it knows.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The identity to act as (PLAIN's authzid); `None` when empty.
    pub authzid: Option<String>,
    /// The user name (`authid=` in the log, `${auth_authen}`).
    pub authcid: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .finish_non_exhaustive()
    }
}

/// Why an exchange ended without credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Abort {
    /// The client sent `*` (`501 5.0.0 AUTH aborted`).
    Cancelled,
    /// A line that is not base64 (the text as sent).
    NotBase64(String),
    /// Decoded, but not what the mechanism expects (SASL "bad protocol").
    Malformed(&'static str),
}

/// The next thing the session does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `334 <text>` (already base64) and wait for a line.
    Challenge(String),
    /// Check these.
    Done(Credentials),
    Abort(Abort),
}

/// One exchange in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    mech: Mechanism,
    /// LOGIN: the user name, once given.
    user: Option<String>,
}

impl Exchange {
    /// Starts `mech`; `initial` is the initial response as written (`=`: empty).
    pub fn start(mech: Mechanism, initial: Option<&str>) -> (Exchange, Step) {
        let mut ex = Exchange { mech, user: None };
        let step = match initial {
            Some(text) => ex.respond(text),
            None => match mech {
                Mechanism::Plain => Step::Challenge(String::new()),
                Mechanism::Login => Step::Challenge(STANDARD.encode("Username:")),
            },
        };
        (ex, step)
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// The client's answer to the last challenge.
    pub fn respond(&mut self, line: &str) -> Step {
        let line = line.trim();
        if line == "*" {
            return Step::Abort(Abort::Cancelled);
        }
        let decoded = if line == "=" {
            Vec::new()
        } else {
            match STANDARD.decode(line) {
                Ok(d) => d,
                Err(_) => return Step::Abort(Abort::NotBase64(line.to_string())),
            }
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return Step::Abort(Abort::Malformed("not UTF-8"));
        };
        match self.mech {
            Mechanism::Plain => plain(&text),
            Mechanism::Login => match self.user.take() {
                None => {
                    self.user = Some(text);
                    Step::Challenge(STANDARD.encode("Password:"))
                }
                Some(user) => Step::Done(Credentials {
                    authzid: None,
                    authcid: user,
                    password: text,
                }),
            },
        }
    }
}

/// RFC 4616: `authzid NUL authcid NUL passwd`.
fn plain(text: &str) -> Step {
    let mut parts = text.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Abort(Abort::Malformed("need authentication name"));
    };
    if authcid.is_empty() {
        return Step::Abort(Abort::Malformed("need authentication name"));
    }
    Step::Done(Credentials {
        authzid: (!authzid.is_empty()).then(|| authzid.to_string()),
        authcid: authcid.to_string(),
        password: password.to_string(),
    })
}

/// Checks a user's password.
pub trait Authenticator: Send + Sync {
    /// True when `password` is `user`'s.
    fn verify(&self, user: &str, password: &str) -> bool;
}

/// Runs another authenticator's (deliberately slow) hash computation so that it does not
/// hold up the other sessions on the same runtime worker: on a multi-threaded tokio runtime
/// the worker hands its other tasks over first (`block_in_place`); elsewhere it just runs.
pub struct Offloaded<A>(pub A);

impl<A: Authenticator> Authenticator for Offloaded<A> {
    fn verify(&self, user: &str, password: &str) -> bool {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(|| self.0.verify(user, password))
        } else {
            self.0.verify(user, password)
        }
    }
}

impl<A: Authenticator + ?Sized> Authenticator for Arc<A> {
    fn verify(&self, user: &str, password: &str) -> bool {
        (**self).verify(user, password)
    }
}

#[cfg(test)]
mod tests;
