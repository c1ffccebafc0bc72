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

/// sendmail's standard routing without rulesets.
fn builtin_route(cfg: &Config, addr: &str) -> Route {
    let (user, domain) = match addr.rsplit_once('@') {
        Some((u, d)) => (u.to_string(), Some(d.to_string())),
        None => (addr.to_string(), None),
    };
    match domain {
        None => Route::Local {
            mailer: "local".into(),
            user,
        },
        Some(d) if cfg.is_local_name(&d) => Route::Local {
            mailer: "local".into(),
            user,
        },
        Some(d) => {
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
                    host: d,
                    port: cfg
                        .mailer("esmtp")
                        .and_then(|m| hops::mailer_port(&m.argv).ok())
                        .unwrap_or(25),
                },
            }
        }
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
}
