//! The built-in relay rules: who may send mail to where, when the cf has no rulesets to say.
//!
//! In: the session's client and a recipient address. Out: a [`Decision`]. sendmail's standard
//! rules (cf `proto.m4` check_rcpt / Relay_ok), as the facts file records them:
//! * mail to this host's names (`$=w`: `Cw` lines, the `Fw` file, the host's own names and
//!   address literals) is accepted from anyone;
//! * mail to `relay-domains` (class `R`) or a subdomain of one is accepted from anyone;
//! * otherwise only the host itself may relay: exactly `127.0.0.1` and `::1` — not the rest of
//!   127/8, so `127.0.0.9` is an outside client, as in sendmail;
//! * a local part with `%` or `!`, or a source route, never smuggles a relay past the check: such
//!   an address counts as remote.
//!
//! Everything refused gets `550 5.7.1 <addr>... Relaying denied` and sendmail's log line
//! `ruleset=check_rcpt, arg1=<addr>, relay=…, reject=550 5.7.1 <addr>... Relaying denied`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::Config;
use crate::smtp::command::{Address, MailParams, RcptParams};
use crate::smtp::reply;
use crate::smtp::session::{Decision, Policy, PolicyContext};

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
        let mut w = cfg.classes.get("w").cloned().unwrap_or_default();
        w.extend([
            crate::config::macros::expand("$j", cfg),
            cfg.host.fqdn.clone(),
            cfg.host.short.clone(),
            "localhost".to_string(),
        ]);
        w.push("[127.0.0.1]".to_string());
        let r = cfg.classes.get("R").cloned().unwrap_or_default();
        BuiltinPolicy::new(&w, &r)
    }

    fn is_local_domain(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.local_names.contains(&d)
    }

    fn is_relay_domain(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.relay_domains
            .iter()
            .any(|r| d == *r || d.ends_with(&format!(".{r}")))
    }

    /// Whether the recipient stays on this host (no hidden relay in it).
    fn is_local_recipient(&self, rcpt: &Address) -> bool {
        if !rcpt.route.is_empty() || rcpt.local.contains(['%', '!']) {
            return false;
        }
        match &rcpt.domain {
            None => true,
            Some(d) => self.is_local_domain(d),
        }
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
    fn check_mail(&self, _: &PolicyContext<'_>, _: &Address, _: &MailParams) -> Decision {
        Decision::Accept
    }

    fn check_rcpt(&self, ctx: &PolicyContext<'_>, rcpt: &Address, _: &RcptParams) -> Decision {
        if self.is_local_recipient(rcpt) || is_relay_client(ctx.client.ip) {
            return Decision::Accept;
        }
        let relay_ok = rcpt.route.is_empty()
            && !rcpt.local.contains(['%', '!'])
            && rcpt
                .domain
                .as_deref()
                .is_some_and(|d| self.is_relay_domain(d));
        if relay_ok {
            return Decision::Accept;
        }
        let shown = format!(
            "<{}>",
            rcpt.raw.trim_start_matches('<').trim_end_matches('>')
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dj_is_a_local_name() {
        let cfg = Config::from_str("t.cf", "Djmta.example.test\n", &[]).unwrap();
        let p = BuiltinPolicy::from_config(&cfg);
        assert!(p.is_local_domain("mta.example.test"), "{p:?}");
    }
}
