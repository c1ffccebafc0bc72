//! What `sendmail -d0.1` prints before it does anything else: the version block admins read.
//!
//! In: the loaded configuration. Out: the text sendmail 8.17 prints for debug category 0 at
//! level 1 or more (observed on the oracle, `sendmail -d0.1 -bv root` with Debian's cf):
//!
//! ```text
//! Version 8.17.1.9
//!  Compiled with: DNSMAP IPV6_FULL LDAPMAP …
//!
//! ============ SYSTEM IDENTITY (after readcf) ============
//!       (short domain name) $w = oracle
//!   (canonical domain name) $j = oracle.example.test
//!          (subdomain name) $m = example.test
//!               (node name) $k = oracle.example.test
//! ========================================================
//!
//! ```
//!
//! The version is ours ([`crate::VERSION`]) and so is the "Compiled with" list: the
//! sendmail compile options whose behaviour this build has (`IPV6_FULL` addresses in the
//! log, the `regex` map, `Family=local` daemons, `STARTTLS` …), not sendmail's list.

use crate::config::Config;
use crate::config::macros::expand;

/// The compile options of sendmail's list that this build honours.
pub const COMPILED_WITH: &[&str] = &[
    "IPV6_FULL",
    "LOG",
    "MAP_REGEX",
    "NETINET",
    "NETINET6",
    "NETUNIX",
    "PIPELINING",
    "STARTTLS",
];

/// Whether the `-d` flags ask for category 0 at level 1 or more (`0.1`, `0-99.4`, `0`).
pub fn wants_version_block(debug: &[String]) -> bool {
    debug.iter().flat_map(|d| d.split(',')).any(|flag| {
        let (cats, level) = flag.split_once('.').unwrap_or((flag, "1"));
        let level: u32 = level.parse().unwrap_or(0);
        let first = cats.split('-').next().unwrap_or("");
        level >= 1 && first.parse::<u32>() == Ok(0)
    })
}

/// The block, each line ending in `\n`.
pub fn version_block(cfg: &Config) -> String {
    let mut out = format!("Version {}\n", crate::VERSION);
    out.push_str(&format!(" Compiled with: {}\n\n", COMPILED_WITH.join(" ")));
    out.push_str("============ SYSTEM IDENTITY (after readcf) ============\n");
    for (label, m) in [
        ("short domain name", "w"),
        ("canonical domain name", "j"),
        ("subdomain name", "m"),
        ("node name", "k"),
    ] {
        let mut value = expand(&format!("${m}"), cfg);
        if m == "k" && value.is_empty() {
            // sendmail's $k is the node name uname(2) gives
            value = nix::sys::utsname::uname()
                .map(|u| u.nodename().to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        out.push_str(&format!("{:>25} ${m} = {value}\n", format!("({label})")));
    }
    out.push_str("========================================================\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_flags_ask_for_it() {
        let yes = |s: &str| wants_version_block(&[s.to_string()]);
        assert!(yes("0.1"));
        assert!(yes("0.4"));
        assert!(yes("0"));
        assert!(yes("0-99.1"));
        assert!(yes("21.12,0.1"));
        assert!(!yes("0.0"));
        assert!(!yes("21.12"));
    }

    #[test]
    fn the_identity_lines_line_up_as_sendmail_prints_them() {
        let cfg =
            Config::from_str("t.cf", "Dwmx\nDjmx.example.test\nDmexample.test\n", &[]).unwrap();
        let b = version_block(&cfg);
        assert!(b.contains("\n      (short domain name) $w = mx\n"), "{b}");
        assert!(
            b.contains("\n  (canonical domain name) $j = mx.example.test\n"),
            "{b}"
        );
        assert!(
            b.contains("\n         (subdomain name) $m = example.test\n"),
            "{b}"
        );
        assert!(b.ends_with("========================================================\n\n"));
    }
}
