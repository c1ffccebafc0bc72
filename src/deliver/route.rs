//! Mailer choice: which mailer, host and user one recipient goes to.
//!
//! In: a recipient address, the configuration, and the cf's ruleset engine when it has one.
//! Out: a [`Route`]. A cf with rulesets resolves the address through rulesets 3 and 0
//! (`$# mailer $@ host $: user`), as sendmail's `parseaddr` does; without rulesets, this
//! host's names (`$=w`) are local and everything else goes by MX (`esmtp`, on the port its
//! `A=TCP $h PORT` names), or to the smart host (`DS`). Used by the queue runner, by the
//! SMTP recipient check (VRFY/EXPN, "User unknown") and by `-bv`.

use crate::config::Config;
use crate::deliver::remote::route as hops;

/// Where one recipient goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    /// Over SMTP to `host` (`$h`: a domain for MX, `[name]` or an address literal).
    Remote {
        mailer: String,
        host: String,
        port: u16,
    },
    /// A local mailer (`local`, `prog`, `*file*` …).
    Local { mailer: String, user: String },
    /// The rules refused the address (`$#error`).
    Error { text: String },
}

/// The route of `addr` through the cf's rulesets when there are any, else the built-in rules.
pub fn route_with(rules: Option<&crate::rules::handle::Handle>, cfg: &Config, addr: &str) -> Route {
    match rules {
        Some(rules) => match rules.resolve(addr) {
            Ok((mailer, host, user)) => by_mailer(cfg, mailer, host, user),
            Err(text) => Route::Error { text },
        },
        None => builtin_route(cfg, addr),
    }
}

fn by_mailer(cfg: &Config, mailer: String, host: Option<String>, user: String) -> Route {
    match cfg.mailer(&mailer) {
        Some(m) if m.path == "[IPC]" && m.argv.first().is_some_and(|a| a == "TCP") => {
            let port = hops::mailer_port(&m.argv).unwrap_or(25);
            Route::Remote {
                mailer,
                host: host.unwrap_or_default(),
                port,
            }
        }
        _ => Route::Local { mailer, user },
    }
}

/// sendmail's standard routing without rulesets, from the same reading of the address as
/// the relay check ([`crate::mailbox::parse`]): mail stays here unless the address's own
/// domain is another host, and then goes to that host (or the smart host), never to a host
/// named in a quoted or escaped local part, a `%` or `!` hack or a source route.
fn builtin_route(cfg: &Config, addr: &str) -> Route {
    use crate::mailbox::{self, Domain};
    let m = match mailbox::parse(addr) {
        Ok(m) => m,
        Err(e) => {
            return Route::Error {
                text: e.to_string(),
            };
        }
    };
    let domain = match &m.domain {
        Some(Domain::Invalid(_)) => {
            return Route::Error {
                text: "Invalid host name".into(),
            };
        }
        Some(d) if !cfg.is_local_name(&d.class_key()) => d,
        // No domain, or this host's: the local part names a user here, whatever it holds.
        _ => {
            // The local mailer reads its user in lower case unless it has `F=u`.
            let fold = cfg.mailer("local").is_none_or(|l| !l.has_flag('u'));
            let user = m.local_user();
            return Route::Local {
                mailer: "local".into(),
                user: if fold { user.to_lowercase() } else { user },
            };
        }
    };
    let smart = cfg.macros.get("S").map(String::as_str).unwrap_or("");
    match hops::smart_host(smart) {
        Some(Ok((mailer, target))) => {
            let mailer = mailer.unwrap_or_else(|| "relay".to_string());
            let port = cfg
                .mailer(&mailer)
                .and_then(|m| hops::mailer_port(&m.argv).ok())
                .unwrap_or(25);
            Route::Remote {
                mailer,
                host: host_text(&target),
                port,
            }
        }
        _ => Route::Remote {
            mailer: "esmtp".into(),
            host: match domain {
                Domain::Literal(ip) => crate::dns::bracketed(*ip),
                d => d.class_key(),
            },
            port: cfg
                .mailer("esmtp")
                .and_then(|m| hops::mailer_port(&m.argv).ok())
                .unwrap_or(25),
        },
    }
}

/// `$h` for a smart host target (`[name]`, an address literal, or a domain).
fn host_text(t: &hops::Target) -> String {
    match t {
        hops::Target::Mx(d) => d.clone(),
        hops::Target::Host(h) => format!("[{h}]"),
        hops::Target::Literal(ip) => crate::dns::bracketed(*ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_routes() {
        let cfg = Config::from_str(
            "t.cf",
            "Djmta.example.test\nMesmtp, P=[IPC], F=mDFMuX, A=TCP $h\nMrelay, P=[IPC], F=mDFMuX, A=TCP $h 2599\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            builtin_route(&cfg, "root@mta.example.test"),
            Route::Local {
                mailer: "local".into(),
                user: "root".into()
            }
        );
        assert_eq!(
            builtin_route(&cfg, "bob@remote.example.test"),
            Route::Remote {
                mailer: "esmtp".into(),
                host: "remote.example.test".into(),
                port: 25
            }
        );
        let smart = Config::from_str(
            "t.cf",
            "Djmta.example.test\nDSrelay:[127.0.0.1]\nMrelay, P=[IPC], F=mDFMuX, A=TCP $h 2599\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            builtin_route(&smart, "bob@remote.example.test"),
            Route::Remote {
                mailer: "relay".into(),
                host: "[127.0.0.1]".into(),
                port: 2599
            }
        );
    }

    /// Issue 16: every relay form goes to this host or to the address's own domain, never to
    /// a host named in a quoted or escaped local part, a `%`/`!` hack or a source route.
    #[test]
    fn builtin_routes_of_every_relay_form() {
        let cfg = Config::from_str(
            "t.cf",
            "Djmta.example.test\nMesmtp, P=[IPC], F=mDFMuX, A=TCP $h\n",
            &[],
        )
        .unwrap();
        let local = |u: &str| Route::Local {
            mailer: "local".into(),
            user: u.into(),
        };
        let remote = |h: &str| Route::Remote {
            mailer: "esmtp".into(),
            host: h.into(),
            port: 25,
        };
        let error = Route::Error {
            text: "Invalid host name".into(),
        };
        #[rustfmt::skip]
        let table = [
            ("\"relaytest@foreign.example.net\"", local("\"relaytest@foreign.example.net\"")),
            ("<\"relaytest@foreign.example.net\">", local("\"relaytest@foreign.example.net\"")),
            ("\"relaytest@foreign.example.net\"@mta.example.test", local("\"relaytest@foreign.example.net\"")),
            ("relaytest%foreign.example.net@mta.example.test", local("relaytest%foreign.example.net")),
            ("relaytest%foreign.example.net", local("relaytest%foreign.example.net")),
            ("foreign.example.net!relaytest", local("foreign.example.net!relaytest")),
            ("relaytest\\@foreign.example.net", local("relaytest\\@foreign.example.net")),
            ("@foreign.example.net:root@mta.example.test", local("root")),
            ("@mta.example.test:relaytest@foreign.example.net", remote("foreign.example.net")),
            ("relaytest(x@mta.example.test)@foreign.example.net", remote("foreign.example.net")),
            ("relaytest@foreign.example.net(@mta.example.test)", remote("foreign.example.net")),
            ("\"bob\"@Foreign.Example.NET.", remote("foreign.example.net")),
            ("ROOT@MTA.EXAMPLE.TEST.", local("root")),
            ("\"root\"", local("root")),
            ("root@[127.0.0.1]", local("root")),
            ("bob@[192.0.2.1]", remote("[192.0.2.1]")),
            ("bob@[IPv6:2001:db8::1]", remote("[IPv6:2001:db8:0:0:0:0:0:1]")),
            ("bob@[300.1.2.3]", error.clone()),
            ("bob@[foreign.example.net]", error.clone()),
            ("bob@foreign..example.net", error.clone()),
            ("\"|/bin/true\"", local("\"|/bin/true\"")),
            ("\\root", local("\\root")),
        ];
        for (addr, want) in table {
            let got = builtin_route(&cfg, addr);
            assert_eq!(got, want, "{addr}");
            if let Route::Remote { host, .. } = &got {
                let own = crate::mailbox::parse(addr).unwrap().domain.unwrap();
                let own = match own {
                    crate::mailbox::Domain::Literal(ip) => crate::dns::bracketed(ip),
                    d => d.class_key(),
                };
                assert_eq!(host, &own, "{addr}: routed to another host than its own");
            }
        }
    }
}
