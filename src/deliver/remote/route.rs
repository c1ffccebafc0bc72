//! Where to connect: the pure part of routing, from a destination and DNS answers to the
//! ordered hosts and addresses to try.
//!
//! In: the host part the rules gave (`$h`: `example.com`, `[mx.example.com]`,
//! `[192.0.2.1]`, `[IPv6:2001:db8::1]`) or a smart host (`DS` macro: `relay:[host]`), the
//! mailer's `A=TCP $h PORT`, an MX [`Answer`], and per host its AAAA and A answers. Out: the
//! [`Hop`]s in the order to try and, per hop, its addresses; or the [`Outcome`] that ends the
//! attempt for every recipient of the domain (host unknown, null MX, name server trouble).
//!
//! Rules (RFC 5321 §5.1, RFC 7505, sendmail `domain.c:getmxrr`):
//! * lower MX preference first; equal preferences in random order (the RNG is a parameter,
//!   so tests fix it);
//! * no MX record but the name exists (NODATA) → the domain itself, preference 0 (implicit
//!   MX); NXDOMAIN → `Host unknown`, permanent (5.1.2); a name server failure → deferred;
//! * a single `MX 0 .` (null MX) → permanent, 5.1.10 `Domain does not accept mail`;
//! * `[name]` means "no MX lookup": the name's own addresses; `[addr]` skips DNS entirely;
//! * per host: IPv6 addresses (AAAA) first, then IPv4 (A), so a refused IPv6 connection
//!   falls back to IPv4 (the order is [`Family`]-selectable).
//!
//! * when we are one of the exchangers, only those with a better (lower) preference are
//!   used; none left is sendmail's `config error: mail loops back to me (MX problem?)`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::Rng;
use rand::seq::SliceRandom;

use crate::config::daemon_options::parse_port;
use crate::deliver::Outcome;
use crate::dns::{Answer, MxRecord, bracketed};

/// The SMTP port when the mailer's argv names none.
pub const DEFAULT_PORT: u16 = 25;

/// The destination of one delivery, before DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A mail domain: look up its MX records.
    Mx(String),
    /// `[name]`: a host name whose addresses are used directly (no MX lookup).
    Host(String),
    /// `[192.0.2.1]` or `[IPv6:2001:db8::1]`: no DNS at all.
    Literal(IpAddr),
}

/// A destination that cannot be routed at all (bad syntax); delivery bounces it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("empty host name")]
    Empty,
    #[error("bad address literal {0} (expected [192.0.2.1] or [IPv6:2001:db8::1])")]
    BadLiteral(String),
    #[error("bad port {0:?} in mailer argv (expected A=TCP $h [PORT])")]
    BadPort(String),
}

impl Target {
    /// Parses `$h` as the rules give it.
    pub fn parse(host: &str) -> Result<Target, RouteError> {
        let host = host.trim();
        if host.is_empty() {
            return Err(RouteError::Empty);
        }
        let Some(inner) = host.strip_prefix('[') else {
            return Ok(Target::Mx(host.trim_end_matches('.').to_string()));
        };
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| RouteError::BadLiteral(host.to_string()))?;
        if inner.len() > 5 && inner[..5].eq_ignore_ascii_case("IPv6:") {
            return inner[5..]
                .parse::<Ipv6Addr>()
                .map(|ip| Target::Literal(IpAddr::V6(ip)))
                .map_err(|_| RouteError::BadLiteral(host.to_string()));
        }
        if let Ok(v4) = inner.parse::<Ipv4Addr>() {
            return Ok(Target::Literal(IpAddr::V4(v4)));
        }
        let looks_numeric = inner.chars().all(|c| c.is_ascii_digit() || c == '.');
        if inner.is_empty() || looks_numeric || inner.contains(':') {
            return Err(RouteError::BadLiteral(host.to_string()));
        }
        Ok(Target::Host(inner.trim_end_matches('.').to_string()))
    }
}

/// A smart host (`DS` macro, `SMART_HOST`): `relay:[host]`, `esmtp:host`, `[host]`.
/// Returns the mailer named before the colon (if any) and the target; `None` when `DS` is
/// empty. A mailer prefix is recognised only when it is a plain word (so `[IPv6:…]` stays
/// whole).
pub fn smart_host(ds: &str) -> Option<Result<(Option<String>, Target), RouteError>> {
    let ds = ds.trim();
    if ds.is_empty() {
        return None;
    }
    let (mailer, host) = match ds.split_once(':') {
        Some((m, h))
            if !m.is_empty()
                && !m.starts_with('[')
                && m.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            (Some(m.to_string()), h)
        }
        _ => (None, ds),
    };
    Some(Target::parse(host).map(|t| (mailer, t)))
}

/// The port of a `TCP`/`IPC` mailer: `A=TCP $h 2525` → 2525, `A=TCP $h` → 25.
pub fn mailer_port(argv: &[String]) -> Result<u16, RouteError> {
    match argv.get(2) {
        None => Ok(DEFAULT_PORT),
        Some(p) => parse_port(p).map_err(|_| RouteError::BadPort(p.clone())),
    }
}

/// One host to try, from an MX record, the implicit MX, `[name]`, or a literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub preference: u16,
    pub host: HopHost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HopHost {
    /// A name to look up (AAAA, then A); without a trailing dot.
    Name(String),
    Literal(IpAddr),
}

impl Hop {
    pub fn name(preference: u16, name: &str) -> Hop {
        Hop {
            preference,
            host: HopHost::Name(name.trim_end_matches('.').to_string()),
        }
    }

    /// The host as sendmail writes it in `relay=` and `makeconnection`: a DNS name with its
    /// trailing dot (`mx.example.test.`), a literal bracketed (`[127.0.0.1]`).
    pub fn display(&self) -> String {
        match &self.host {
            HopHost::Name(n) => format!("{n}."),
            HopHost::Literal(ip) => bracketed(*ip),
        }
    }
}

/// The hops of a target that needs no MX lookup (`[name]`, `[addr]`); `None` for
/// [`Target::Mx`].
pub fn direct_hop(target: &Target) -> Option<Hop> {
    match target {
        Target::Mx(_) => None,
        Target::Host(name) => Some(Hop::name(0, name)),
        Target::Literal(ip) => Some(Hop {
            preference: 0,
            host: HopHost::Literal(*ip),
        }),
    }
}

/// From an MX answer for `domain` to the hosts to try, best first; equal preferences are
/// shuffled with `rng`.
pub fn mx_hops<R: Rng + ?Sized>(
    domain: &str,
    answer: &Answer<MxRecord>,
    rng: &mut R,
) -> Result<Vec<Hop>, Outcome> {
    let records = match answer {
        Answer::Found(records) => records,
        Answer::NoData => return Ok(vec![Hop::name(0, domain)]),
        Answer::NxDomain => return Err(host_unknown(domain)),
        Answer::Temporary(why) => return Err(lookup_failure(domain, why)),
    };
    let real: Vec<&MxRecord> = records.iter().filter(|r| !r.is_null()).collect();
    if real.is_empty() {
        return Err(Outcome::Permanent {
            dsn: "5.1.10".to_string(),
            text: "Domain does not accept mail".to_string(),
        });
    }
    let mut hops: Vec<Hop> = real
        .iter()
        .map(|r| Hop::name(r.preference, &r.exchange))
        .collect();
    hops.sort_by_key(|h| h.preference);
    let mut start = 0;
    while start < hops.len() {
        let pref = hops[start].preference;
        let end = start
            + hops[start..]
                .iter()
                .take_while(|h| h.preference == pref)
                .count();
        hops[start..end].shuffle(rng);
        start = end;
    }
    let mut seen = Vec::new();
    hops.retain(|h| {
        let fresh = !seen.contains(&h.host);
        seen.push(h.host.clone());
        fresh
    });
    Ok(hops)
}

/// RFC 5321 §5.1: if one of `ours` (our own names, lower case) is an exchanger, drop it and
/// every hop of the same or a worse preference. An empty result is a permanent error
/// (sendmail's `553 5.3.5 … config error: mail loops back to me (MX problem?)`).
pub fn drop_self(hops: Vec<Hop>, ours: &[String]) -> Result<Vec<Hop>, Outcome> {
    let is_ours = |h: &Hop| match &h.host {
        HopHost::Name(n) => ours.iter().any(|o| o.eq_ignore_ascii_case(n)),
        HopHost::Literal(_) => false,
    };
    let Some(limit) = hops
        .iter()
        .filter(|h| is_ours(h))
        .map(|h| h.preference)
        .min()
    else {
        return Ok(hops);
    };
    let kept: Vec<Hop> = hops.into_iter().filter(|h| h.preference < limit).collect();
    if kept.is_empty() {
        return Err(Outcome::Permanent {
            dsn: "5.3.5".to_string(),
            text: "config error: mail loops back to me (MX problem?)".to_string(),
        });
    }
    Ok(kept)
}

/// Which address family is tried first for each host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    #[default]
    Ipv6First,
    Ipv4First,
}

/// One host's addresses from its AAAA and A answers, in the order to try.
/// `Found` if either family has an address; otherwise `Temporary` if either lookup was,
/// `NxDomain` if both were, else `NoData`.
pub fn host_addresses(
    v6: &Answer<Ipv6Addr>,
    v4: &Answer<Ipv4Addr>,
    order: Family,
) -> Answer<IpAddr> {
    let six: Vec<IpAddr> = match v6 {
        Answer::Found(a) => a.iter().map(|ip| IpAddr::V6(*ip)).collect(),
        _ => Vec::new(),
    };
    let four: Vec<IpAddr> = match v4 {
        Answer::Found(a) => a.iter().map(|ip| IpAddr::V4(*ip)).collect(),
        _ => Vec::new(),
    };
    let mut all = match order {
        Family::Ipv6First => [six, four].concat(),
        Family::Ipv4First => [four, six].concat(),
    };
    let mut seen = Vec::new();
    all.retain(|ip| {
        let fresh = !seen.contains(ip);
        seen.push(*ip);
        fresh
    });
    if !all.is_empty() {
        return Answer::Found(all);
    }
    match (v6, v4) {
        (Answer::Temporary(w), _) | (_, Answer::Temporary(w)) => Answer::Temporary(w.clone()),
        (Answer::NxDomain, Answer::NxDomain) => Answer::NxDomain,
        _ => Answer::NoData,
    }
}

/// A hop with the addresses to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub hop: Hop,
    pub addrs: Vec<IpAddr>,
}

/// Keeps the hops that have addresses, in order. When none has any: deferred if a lookup
/// failed temporarily, else `Host unknown` (permanent) for `domain`.
pub fn usable_routes(
    domain: &str,
    resolved: Vec<(Hop, Answer<IpAddr>)>,
) -> Result<Vec<Route>, Outcome> {
    let mut routes = Vec::new();
    let mut temporary = None;
    for (hop, answer) in resolved {
        match answer {
            Answer::Found(addrs) => routes.push(Route { hop, addrs }),
            Answer::Temporary(why) if temporary.is_none() => {
                temporary = Some((hop.display(), why));
            }
            _ => {}
        }
    }
    if !routes.is_empty() {
        return Ok(routes);
    }
    match temporary {
        Some((host, why)) => Err(lookup_failure(host.trim_end_matches('.'), &why)),
        None => Err(host_unknown(domain)),
    }
}

/// sendmail's text for a name that does not exist: `Host unknown (Name server: x.: host
/// not found)`, DSN 5.1.2 (from memory of sendmail's logs; not in the recorded samples).
fn host_unknown(domain: &str) -> Outcome {
    Outcome::Permanent {
        dsn: "5.1.2".to_string(),
        text: format!("Host unknown (Name server: {domain}.: host not found)"),
    }
}

/// sendmail's deferral for a name server failure: `Deferred: Name server: x.: host name
/// lookup failure` (from memory of sendmail's logs). The resolver's reason is not shown.
fn lookup_failure(domain: &str, _why: &str) -> Outcome {
    Outcome::Temporary {
        dsn: "4.4.3".to_string(),
        text: format!("Deferred: Name server: {domain}.: host name lookup failure"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn names(hops: &[Hop]) -> Vec<String> {
        hops.iter().map(Hop::display).collect()
    }

    #[test]
    fn targets_parse_as_sendmail_writes_them() {
        let cases: &[(&str, Result<Target, RouteError>)] = &[
            ("example.com", Ok(Target::Mx("example.com".into()))),
            ("Example.COM.", Ok(Target::Mx("Example.COM".into()))),
            (
                "[mx.example.com]",
                Ok(Target::Host("mx.example.com".into())),
            ),
            (
                "[192.0.2.1]",
                Ok(Target::Literal("192.0.2.1".parse().unwrap())),
            ),
            (
                "[IPv6:2001:db8::1]",
                Ok(Target::Literal("2001:db8::1".parse().unwrap())),
            ),
            (
                "[ipv6:0:0:0:0:0:0:0:1]",
                Ok(Target::Literal("::1".parse().unwrap())),
            ),
            ("", Err(RouteError::Empty)),
            (
                "[192.0.2.300]",
                Err(RouteError::BadLiteral("[192.0.2.300]".into())),
            ),
            (
                "[IPv6:nope]",
                Err(RouteError::BadLiteral("[IPv6:nope]".into())),
            ),
            (
                "[2001:db8::1]",
                Err(RouteError::BadLiteral("[2001:db8::1]".into())),
            ),
            (
                "[mx.example.com",
                Err(RouteError::BadLiteral("[mx.example.com".into())),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&Target::parse(input), want, "{input}");
        }
    }

    #[test]
    fn smart_hosts_name_an_optional_mailer() {
        type Case<'a> = (&'a str, Option<(Option<&'a str>, Target)>);
        let cases: &[Case] = &[
            ("", None),
            (
                "relay:[127.0.0.1]",
                Some((Some("relay"), Target::Literal("127.0.0.1".parse().unwrap()))),
            ),
            (
                "[smart.example.test]",
                Some((None, Target::Host("smart.example.test".into()))),
            ),
            (
                "esmtp:smart.example.test",
                Some((Some("esmtp"), Target::Mx("smart.example.test".into()))),
            ),
            (
                "[IPv6:::1]",
                Some((None, Target::Literal("::1".parse().unwrap()))),
            ),
            (
                "relay:[IPv6:::1]",
                Some((Some("relay"), Target::Literal("::1".parse().unwrap()))),
            ),
        ];
        for (ds, want) in cases {
            let got = smart_host(ds).map(|r| r.unwrap());
            let want = want.as_ref().map(|(m, t)| (m.map(String::from), t.clone()));
            assert_eq!(got, want, "{ds}");
        }
    }

    #[test]
    fn the_mailer_argv_picks_the_port() {
        let argv = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(mailer_port(&argv("TCP $h")), Ok(25));
        assert_eq!(mailer_port(&argv("TCP $h 2599")), Ok(2599));
        assert_eq!(mailer_port(&argv("TCP $h smtp")), Ok(25));
        assert!(mailer_port(&argv("TCP $h 99999")).is_err());
    }

    #[test]
    fn mx_answers_become_hops_in_preference_order() {
        let mut rng = StdRng::seed_from_u64(1);
        let found = Answer::Found(vec![
            MxRecord::new(20, "b.example.test"),
            MxRecord::new(10, "a.example.test"),
            MxRecord::new(30, "c.example.test"),
        ]);
        assert_eq!(
            names(&mx_hops("example.test", &found, &mut rng).unwrap()),
            ["a.example.test.", "b.example.test.", "c.example.test."]
        );
        // NODATA: implicit MX, the domain itself.
        let implicit = mx_hops("example.test", &Answer::NoData, &mut rng).unwrap();
        assert_eq!(implicit, vec![Hop::name(0, "example.test")]);
        // NXDOMAIN: permanent.
        assert_eq!(
            mx_hops("nx.example.test", &Answer::NxDomain, &mut rng),
            Err(Outcome::Permanent {
                dsn: "5.1.2".into(),
                text: "Host unknown (Name server: nx.example.test.: host not found)".into()
            })
        );
        // SERVFAIL / timeout: deferred.
        assert_eq!(
            mx_hops(
                "sf.example.test",
                &Answer::Temporary("SERVFAIL".into()),
                &mut rng
            ),
            Err(Outcome::Temporary {
                dsn: "4.4.3".into(),
                text: "Deferred: Name server: sf.example.test.: host name lookup failure".into()
            })
        );
        // Null MX (RFC 7505).
        let null = Answer::Found(vec![MxRecord::new(0, ".")]);
        assert_eq!(
            mx_hops("nomail.example.test", &null, &mut rng),
            Err(Outcome::Permanent {
                dsn: "5.1.10".into(),
                text: "Domain does not accept mail".into()
            })
        );
    }

    #[test]
    fn when_we_are_an_exchanger_only_better_ones_are_used() {
        let hops = vec![
            Hop::name(10, "a.test"),
            Hop::name(20, "ME.test"),
            Hop::name(20, "b.test"),
            Hop::name(30, "c.test"),
        ];
        let ours = vec!["me.test".to_string()];
        assert_eq!(
            drop_self(hops.clone(), &ours),
            Ok(vec![Hop::name(10, "a.test")])
        );
        assert_eq!(drop_self(hops.clone(), &[]), Ok(hops));
        let only_me = vec![Hop::name(10, "me.test"), Hop::name(20, "b.test")];
        assert!(matches!(
            drop_self(only_me, &ours),
            Err(Outcome::Permanent { dsn, .. }) if dsn == "5.3.5"
        ));
    }

    #[test]
    fn equal_preferences_are_shuffled_but_never_cross_preferences() {
        let answer = Answer::Found(vec![
            MxRecord::new(10, "a1"),
            MxRecord::new(10, "a2"),
            MxRecord::new(10, "a3"),
            MxRecord::new(5, "first"),
            MxRecord::new(50, "last"),
        ]);
        let mut orders = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let hops = mx_hops("d", &answer, &mut StdRng::seed_from_u64(seed)).unwrap();
            let n = names(&hops);
            assert_eq!(n[0], "first.");
            assert_eq!(n[4], "last.");
            let mut middle = n[1..4].to_vec();
            orders.insert(middle.clone());
            middle.sort();
            assert_eq!(middle, ["a1.", "a2.", "a3."]);
        }
        assert!(orders.len() > 1, "ties were never reordered: {orders:?}");
        // The same seed gives the same order (the RNG is the only source of chance).
        let once = mx_hops("d", &answer, &mut StdRng::seed_from_u64(7)).unwrap();
        let again = mx_hops("d", &answer, &mut StdRng::seed_from_u64(7)).unwrap();
        assert_eq!(once, again);
    }

    #[test]
    fn literals_and_bracketed_names_skip_the_mx_lookup() {
        assert_eq!(direct_hop(&Target::Mx("x".into())), None);
        let lit = direct_hop(&Target::parse("[IPv6:::1]").unwrap()).unwrap();
        assert_eq!(lit.display(), "[IPv6:0:0:0:0:0:0:0:1]");
        let lit4 = direct_hop(&Target::parse("[127.0.0.1]").unwrap()).unwrap();
        assert_eq!(lit4.display(), "[127.0.0.1]");
        let name = direct_hop(&Target::parse("[smart.example.test]").unwrap()).unwrap();
        assert_eq!(name, Hop::name(0, "smart.example.test"));
    }

    #[test]
    fn addresses_put_ipv6_first_and_report_why_there_are_none() {
        let v6 = Answer::Found(vec!["2001:db8::1".parse().unwrap()]);
        let v4 = Answer::Found(vec![
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
        ]);
        let ips = |a: Answer<IpAddr>| match a {
            Answer::Found(v) => v.iter().map(ToString::to_string).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            ips(host_addresses(&v6, &v4, Family::Ipv6First)),
            ["2001:db8::1", "192.0.2.1", "192.0.2.2"]
        );
        assert_eq!(
            ips(host_addresses(&v6, &v4, Family::Ipv4First)),
            ["192.0.2.1", "192.0.2.2", "2001:db8::1"]
        );
        assert_eq!(
            ips(host_addresses(&Answer::NoData, &v4, Family::Ipv6First)),
            ["192.0.2.1", "192.0.2.2"]
        );
        assert_eq!(
            ips(host_addresses(
                &Answer::Temporary("t".into()),
                &v4,
                Family::Ipv6First
            )),
            ["192.0.2.1", "192.0.2.2"]
        );
        let cases: &[(Answer<Ipv6Addr>, Answer<Ipv4Addr>, Answer<IpAddr>)] = &[
            (Answer::NxDomain, Answer::NxDomain, Answer::NxDomain),
            (Answer::NoData, Answer::NxDomain, Answer::NoData),
            (Answer::NoData, Answer::NoData, Answer::NoData),
            (
                Answer::Temporary("x".into()),
                Answer::NxDomain,
                Answer::Temporary("x".into()),
            ),
            (
                Answer::NoData,
                Answer::Temporary("y".into()),
                Answer::Temporary("y".into()),
            ),
        ];
        for (six, four, want) in cases {
            assert_eq!(
                &host_addresses(six, four, Family::Ipv6First),
                want,
                "{six:?} {four:?}"
            );
        }
    }

    #[test]
    fn routes_without_addresses_are_dropped_or_end_the_attempt() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let good = (Hop::name(20, "b"), Answer::Found(vec![ip]));
        let gone = (Hop::name(10, "a"), Answer::NxDomain);
        let temp = (Hop::name(10, "a"), Answer::Temporary("t".into()));
        let routes = usable_routes("d", vec![gone.clone(), good.clone()]).unwrap();
        assert_eq!(
            routes,
            vec![Route {
                hop: Hop::name(20, "b"),
                addrs: vec![ip]
            }]
        );
        assert!(
            matches!(usable_routes("d", vec![gone.clone()]), Err(Outcome::Permanent { dsn, .. }) if dsn == "5.1.2")
        );
        assert!(
            matches!(usable_routes("d", vec![gone, temp]), Err(Outcome::Temporary { dsn, .. }) if dsn == "4.4.3")
        );
    }
}
