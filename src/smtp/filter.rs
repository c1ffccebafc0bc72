//! The session's questions to content filters (milters), and their answers.
//!
//! In the sans-IO session, a command that filters must see first ends in
//! [`super::session::Action::Filter`] with a [`FilterCall`]; the driver asks the sink
//! ([`super::conn::MessageSink::filter`]) and hands the [`FilterVerdict`] back to
//! [`super::session::Session::filtered`], which only then gives the command's reply. The
//! filters themselves (the milter protocol) live above this layer, in `crate::milter`.

use super::reply::Reply;

/// What the filters are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterCall {
    /// A client connected (before the greeting).
    Connect,
    /// HELO/EHLO with this name; `macros`: the TLS parameters of the session so far
    /// (`{tls_version}`, `{cipher}`, `{cipher_bits}`, `{cert_subject}`, `{cert_issuer}`).
    Helo {
        name: String,
        macros: Vec<(String, String)>,
    },
    /// MAIL: the envelope id, then `<sender>` and its ESMTP arguments; `macros`: who
    /// authenticated (`{auth_type}`, `{auth_authen}`, `{auth_ssf}`, `{auth_author}`).
    Mail {
        qid: String,
        args: Vec<String>,
        macros: Vec<(String, String)>,
    },
    /// RCPT: `<recipient>` and its ESMTP arguments; `rejected` when the server already
    /// refused it (filters that asked see those too).
    Rcpt { args: Vec<String>, rejected: bool },
    /// The DATA command.
    Data,
    /// A command the server does not know.
    Unknown { line: String },
    /// The transaction ended without a message (RSET, a new HELO).
    Abort,
    /// The session is over.
    Close,
}

impl FilterCall {
    /// False for what filters are only told (an abort, the end, an unknown command, a
    /// recipient already refused): the session goes on without waiting for an answer.
    pub fn wants_verdict(&self) -> bool {
        !matches!(
            self,
            FilterCall::Abort
                | FilterCall::Close
                | FilterCall::Unknown { .. }
                | FilterCall::Rcpt { rejected: true, .. }
        )
    }
}

/// What the filters answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterVerdict {
    /// Go on as without filters.
    Continue,
    /// Refuse the command with this reply. At connect and HELO: the command itself goes on,
    /// and every later transaction command gets this reply instead (sendmail's nullserver).
    Refuse(Reply),
    /// Give this reply (a 421) and close the connection.
    Shutdown(Reply),
}
