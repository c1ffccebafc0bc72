//! The macros an SMTP session defines for the cf's check rulesets, with sendmail's values.
//!
//! In: the connection's macros (set once at connect by [`crate::inbound`]), the session's
//! state at a check (HELO name, protocol, queue id, sender, recipient, counts, AUTH and TLS)
//! and a way to resolve an address through rulesets 3 and 0. Out: the list of
//! `(name, value)` pairs that [`apply`] defines in the engine before `check_relay`,
//! `check_mail` or `check_rcpt` runs (every name in [`MANAGED`] is defined or cleared each
//! time: the engine is shared between sessions, so nothing may leak from one to the next).
//!
//! # The macros, where sendmail sets them and the values it gives
//!
//! Observed on Debian 12's sendmail 8.17.1.9 (the oracle of `tests/differential`) with
//! Debian's stock sendmail.mc plus `Local_check_rcpt`/`Local_check_mail`/`Local_check_relay`,
//! `check_data` and `check_eom` rulesets that log every value through a `syslog` map, one
//! session from 203.0.113.77 (`EHLO client.example.test`, `MAIL FROM:<someone@remote.example.test>
//! SIZE=100 BODY=8BITMIME`, three RCPTs, DATA) and one from 127.0.0.1 (`HELO h`,
//! `MAIL FROM:<>`, `RCPT TO:<root>`):
//!
//! | macro | set | value seen |
//! |---|---|---|
//! | `{client_addr}` | at connect (`getrequests`) | `203.0.113.77` |
//! | `{client_name}` | at connect | `[203.0.113.77]` (no PTR), `localhost` |
//! | `{client_ptr}` | at connect | as `{client_name}` |
//! | `{client_port}` | at connect | the client's port |
//! | `{client_resolve}` | at connect | `FAIL` (no PTR), `OK` |
//! | `{client_connections}` | at connect, with FEATURE(conncontrol): open connections from the address, this one included ([`crate::conncontrol`]) | `1` |
//! | `{client_rate}` | at connect, with FEATURE(ratecontrol): connections from the address in `ConnectionRateWindowSize` | `1` |
//! | `{daemon_name}` `{daemon_addr}` `{daemon_port}` `{daemon_family}` | at connect, from `DaemonPortOptions` | `MTA-v4` `127.0.0.1` `25` `inet` |
//! | `{daemon_flags}` | at connect, `M=` letters | empty for no `M=` |
//! | `{if_name}` | at connect: the name of the address the client reached | `localhost` |
//! | `{if_addr}` `{if_family}` | at connect, only for a non-loopback local address | empty on 127.0.0.1 |
//! | `$_` | at connect | `[203.0.113.77]`, `localhost [127.0.0.1]` |
//! | `$s` | at HELO/EHLO | `client.example.test` |
//! | `$r` | at HELO/EHLO | `SMTP`, `ESMTP` |
//! | `$i` | with the envelope (first MAIL) | the queue id |
//! | `{mail_from}` | at MAIL, the sender in angle brackets | `<someone@remote.example.test>`, `<>` |
//! | `$f` | at MAIL | `someone@remote.example.test`, empty for `<>` |
//! | `{mail_mailer}` `{mail_host}` `{mail_addr}` | at MAIL: the sender through rulesets 3, 0 | `esmtp` `remote.example.test.` `someone@remote.example.test`; `<>`: `local`, empty, empty |
//! | `{msg_size}` | at MAIL: the `SIZE=` parameter (at end of data: the size) | `100`; undefined without `SIZE=` |
//! | `{addr_type}` | `e s` while the sender is checked, `e r` for a recipient | `e r` |
//! | `{rcpt_mailer}` `{rcpt_host}` `{rcpt_addr}` | at RCPT, before `check_rcpt`: the recipient through rulesets 3, 0 | `local` (empty) `root`; `esmtp` `remote.example.test.` `user@remote.example.test` |
//! | `{nrcpts}` | at RCPT: the recipients accepted before this one | `0`, `1`, `2` |
//! | `{ntries}` | with the envelope | `0` |
//! | `{auth_type}` `{auth_authen}` `{auth_author}` `{auth_ssf}` | after AUTH succeeds | empty without AUTH |
//! | `{verify}` `{tls_version}` `{cipher}` `{cipher_bits}` `{cert_subject}` `{cert_issuer}` | after STARTTLS | empty without TLS |
//! | `{server_name}` `{server_addr}` | when this host connects out (client side), not in the server | empty |
//! | `{greet_delay}` | with FEATURE(greet_pause), when a pause applied | empty after a `GreetPause: 0` entry (not defined by sendmail-rs: a non-zero value was not observed) |
//!
//! With FEATURE(delay_checks) (Debian's mc) `check_rcpt` runs `check_mail` on
//! `$&{mail_from}` and `check_relay` on `$&{client_name} $| $&{client_addr}` for each
//! recipient, so those values are what decides every RCPT.

use std::collections::BTreeMap;

use super::rewrite::Engine;

/// Every macro a check sets or clears (connection macros come from the caller's map).
pub const MANAGED: &[&str] = &[
    "mail_from",
    "mail_mailer",
    "mail_host",
    "mail_addr",
    "rcpt_mailer",
    "rcpt_host",
    "rcpt_addr",
    "addr_type",
    "nrcpts",
    "ntries",
    "msg_size",
    "auth_type",
    "auth_authen",
    "auth_author",
    "auth_ssf",
    "verify",
    "tls_version",
    "cipher",
    "cipher_bits",
    "alg_bits",
    "cert_subject",
    "cert_issuer",
    "s",
    "r",
    "i",
    "f",
];

/// The connection macros a check may read (set at connect; cleared when absent).
pub const CONNECTION: &[&str] = &[
    "_",
    "client_addr",
    "client_name",
    "client_ptr",
    "client_port",
    "client_resolve",
    "client_connections",
    "client_rate",
    "daemon_name",
    "daemon_addr",
    "daemon_port",
    "daemon_family",
    "daemon_flags",
    "if_name",
    "if_addr",
    "if_family",
    "greet_delay",
];

/// An address as rulesets 3 and 0 resolve it: mailer, host, user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub mailer: String,
    pub host: String,
    pub addr: String,
}

/// What a check knows of the transaction.
#[derive(Debug, Clone, Default)]
pub struct Transaction<'a> {
    /// The HELO/EHLO name (`$s`).
    pub helo: Option<&'a str>,
    /// `SMTP`, `ESMTP`, … (`$r`).
    pub protocol: &'a str,
    /// The envelope's queue id (`$i`).
    pub qid: &'a str,
    /// The sender without its angle brackets (`""` for `<>`), when MAIL was given.
    pub sender: Option<&'a str>,
    /// The sender through rulesets 3, 0.
    pub sender_resolved: Option<Resolved>,
    /// The recipient being checked, through rulesets 3, 0.
    pub rcpt_resolved: Option<Resolved>,
    /// `true` while a recipient is checked (`{addr_type}` `e r`), `false` for the sender.
    pub checking_rcpt: bool,
    /// Recipients accepted so far.
    pub nrcpts: usize,
    /// MAIL's `SIZE=`.
    pub msg_size: Option<u64>,
    /// `(name, value)` of the AUTH and TLS macros in force.
    pub security: Vec<(&'static str, String)>,
}

/// The values of [`MANAGED`] for a check in `t` (`None`: undefined).
pub fn transaction_values(t: &Transaction<'_>) -> Vec<(&'static str, Option<String>)> {
    let mut v: BTreeMap<&'static str, Option<String>> =
        MANAGED.iter().map(|&k| (k, None)).collect();
    let mut set = |k: &'static str, val: String| {
        v.insert(k, Some(val));
    };
    if let Some(h) = t.helo {
        set("s", h.to_string());
    }
    if !t.protocol.is_empty() {
        set("r", t.protocol.to_string());
    }
    if !t.qid.is_empty() {
        set("i", t.qid.to_string());
        set("ntries", "0".into());
    }
    if let Some(s) = t.sender {
        set("mail_from", format!("<{s}>"));
        set("f", s.to_string());
        set(
            "addr_type",
            if t.checking_rcpt { "e r" } else { "e s" }.into(),
        );
        set("nrcpts", t.nrcpts.to_string());
        if let Some(n) = t.msg_size {
            set("msg_size", n.to_string());
        }
    }
    if let Some(r) = &t.sender_resolved {
        set("mail_mailer", r.mailer.clone());
        set("mail_host", r.host.clone());
        set("mail_addr", r.addr.clone());
    }
    if let Some(r) = &t.rcpt_resolved {
        set("rcpt_mailer", r.mailer.clone());
        set("rcpt_host", r.host.clone());
        set("rcpt_addr", r.addr.clone());
    }
    for (k, val) in &t.security {
        if let Some(slot) = v.get_mut(k) {
            *slot = Some(val.clone());
        }
    }
    v.into_iter().collect()
}

/// The connection macros of `conn`, each of [`CONNECTION`] present or `None`.
pub fn connection_values(conn: &BTreeMap<String, String>) -> Vec<(&'static str, Option<String>)> {
    CONNECTION
        .iter()
        .map(|&k| (k, conn.get(k).cloned()))
        .collect()
}

/// Defines (or clears) each macro of `values` in the engine.
pub fn apply(e: &mut Engine, values: &[(&'static str, Option<String>)]) {
    for (k, v) in values {
        let Some(id) = e.names.id(k) else { continue };
        match v {
            Some(v) => e.macros.define(id, v.as_bytes().to_vec()),
            None => e.macros.undefine(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(v: &'a [(&'static str, Option<String>)], k: &str) -> Option<&'a str> {
        v.iter()
            .find(|(n, _)| *n == k)
            .and_then(|(_, v)| v.as_deref())
    }

    #[test]
    fn null_sender_in_check_rcpt_is_angle_brackets() {
        let t = Transaction {
            helo: Some("h"),
            protocol: "SMTP",
            qid: "6B64jNku030377",
            sender: Some(""),
            sender_resolved: Some(Resolved {
                mailer: "local".into(),
                ..Resolved::default()
            }),
            rcpt_resolved: Some(Resolved {
                mailer: "local".into(),
                host: String::new(),
                addr: "root".into(),
            }),
            checking_rcpt: true,
            ..Transaction::default()
        };
        let v = transaction_values(&t);
        assert_eq!(get(&v, "mail_from"), Some("<>"));
        assert_eq!(get(&v, "f"), Some(""));
        assert_eq!(get(&v, "mail_mailer"), Some("local"));
        assert_eq!(get(&v, "mail_host"), Some(""));
        assert_eq!(get(&v, "rcpt_addr"), Some("root"));
        assert_eq!(get(&v, "addr_type"), Some("e r"));
        assert_eq!(get(&v, "nrcpts"), Some("0"));
        assert_eq!(get(&v, "ntries"), Some("0"));
        assert_eq!(get(&v, "msg_size"), None);
        assert_eq!(get(&v, "auth_type"), None);
        assert_eq!(get(&v, "s"), Some("h"));
        assert_eq!(get(&v, "r"), Some("SMTP"));
    }

    #[test]
    fn sender_check_has_e_s_and_size() {
        let t = Transaction {
            sender: Some("someone@remote.example.test"),
            msg_size: Some(100),
            nrcpts: 2,
            ..Transaction::default()
        };
        let v = transaction_values(&t);
        assert_eq!(get(&v, "mail_from"), Some("<someone@remote.example.test>"));
        assert_eq!(get(&v, "addr_type"), Some("e s"));
        assert_eq!(get(&v, "msg_size"), Some("100"));
        assert_eq!(get(&v, "nrcpts"), Some("2"));
        // nothing is left over from another session
        assert!(v.iter().any(|(k, v)| *k == "rcpt_addr" && v.is_none()));
    }

    #[test]
    fn connection_values_clear_what_is_absent() {
        let mut m = BTreeMap::new();
        m.insert("client_addr".to_string(), "203.0.113.77".to_string());
        let v = connection_values(&m);
        assert_eq!(get(&v, "client_addr"), Some("203.0.113.77"));
        assert!(v.iter().any(|(k, v)| *k == "client_rate" && v.is_none()));
    }
}
