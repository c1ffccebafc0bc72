//! SMTPUTF8 (RFC 6531) in the session: who may use non-ASCII addresses, and what the
//! message's protocol is then called.
//!
//! In: a MAIL or RCPT address and whether the transaction's MAIL carried `SMTPUTF8` (which
//! `smtp::command` accepts only when the session offers it: `SmtpUTF8` option, sendmail's
//! EAI). Out: the refusal of a non-ASCII address without it (RFC 6531 §3.5: `553 5.6.7`),
//! and the `with` protocol of `Received:` (§3.7.3: `UTF8SMTP`, `UTF8SMTPA`, `UTF8SMTPS`,
//! `UTF8SMTPSA`).

use super::*;

impl Session {
    /// The refusal for a non-ASCII address in a transaction without SMTPUTF8.
    pub(super) fn non_ascii_refusal(addr: &Address, smtputf8: bool) -> Option<Reply> {
        (!smtputf8 && !addr.raw.is_ascii()).then(|| reply::non_ascii_address(&addr.raw))
    }

    /// The protocol a message of this transaction was received with.
    pub(super) fn message_protocol(&self, params: &MailParams) -> &'static str {
        if params.smtputf8 {
            utf8_protocol(self.protocol())
        } else {
            self.protocol()
        }
    }
}

/// The RFC 6531 §3.7.3 name for a transaction that used SMTPUTF8, from the plain one.
pub fn utf8_protocol(protocol: &str) -> &'static str {
    match protocol {
        "ESMTPA" => "UTF8SMTPA",
        "ESMTPS" => "UTF8SMTPS",
        "ESMTPSA" => "UTF8SMTPSA",
        _ => "UTF8SMTP",
    }
}

#[cfg(test)]
mod tests {
    use super::utf8_protocol;

    #[test]
    fn protocol_names_follow_rfc_6531() {
        assert_eq!(utf8_protocol("ESMTP"), "UTF8SMTP");
        assert_eq!(utf8_protocol("SMTP"), "UTF8SMTP");
        assert_eq!(utf8_protocol("ESMTPA"), "UTF8SMTPA");
        assert_eq!(utf8_protocol("ESMTPS"), "UTF8SMTPS");
        assert_eq!(utf8_protocol("ESMTPSA"), "UTF8SMTPSA");
    }
}
