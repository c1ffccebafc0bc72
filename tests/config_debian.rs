//! Debian's own sendmail.cf, generated with m4 from Debian's sendmail.mc (plus the IPv6
//! `DAEMON_OPTIONS` lines that Debian ships commented out), must load without an error, and
//! give the daemons, rulesets, mailers and classes sendmail would build from it.
//!
//! Needs `m4` and Debian's `sendmail-cf` (`/usr/share/sendmail/cf`); without them this test
//! FAILS, saying what to install. The pre-generated copy in `tests/fixtures/` is loaded too.

use std::path::{Path, PathBuf};
use std::process::Command;

use sendmail_rs::config::daemon_options::{Addr, Family};
use sendmail_rs::config::{Config, Source, load};

const CF_DIR: &str = "/usr/share/sendmail/cf";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Debian's sendmail.mc as the maintainer scripts would compile it, with the IPv6
/// `DAEMON_OPTIONS` enabled and the maintainer-generated `/etc/mail/m4/*.m4` includes
/// (absent outside an installed system) removed.
fn debian_mc() -> String {
    let mc = std::fs::read_to_string(Path::new(CF_DIR).join("debian/sendmail.mc")).unwrap_or_else(|e| {
        panic!("cannot read {CF_DIR}/debian/sendmail.mc ({e}): install Debian's sendmail-cf and m4 (apt-get install -y m4 sendmail-cf)")
    });
    mc.lines()
        .map(|l| {
            if l.starts_with("include(`/etc/mail/m4/") {
                "dnl (maintainer-generated include removed)".to_string()
            } else if let Some(d) = l.strip_prefix("dnl DAEMON_OPTIONS(") {
                format!("DAEMON_OPTIONS({d}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn generate_debian_cf(dir: &Path) -> String {
    let mc = dir.join("sendmail.mc");
    std::fs::write(&mc, debian_mc()).unwrap();
    let out = Command::new("m4").arg(&mc).output().unwrap_or_else(|e| {
        panic!("cannot run m4 ({e}): install m4 and Debian's sendmail-cf (apt-get install -y m4 sendmail-cf)")
    });
    assert!(
        out.status.success(),
        "m4 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Points the non-optional `Fw` class file at our copy of Debian's local-host-names.
fn with_local_host_names(cf: &str) -> String {
    let ours = fixture("debian-etc-mail/local-host-names");
    cf.replace(
        "Fw/etc/mail/local-host-names",
        &format!("Fw{}", ours.display()),
    )
}

fn check_debian(c: &Config, expected_daemons: &[(&str, Family, &str, u16, &str)]) {
    // warnings: only options not supported yet, each named once
    for w in &c.warnings {
        assert!(
            w.contains(": option ") && w.ends_with(" is not supported yet; ignored"),
            "unexpected warning: {w}"
        );
    }
    assert!(c.warnings.len() < 60, "{} warnings", c.warnings.len());

    let got: Vec<(String, Family, Addr, u16, String)> = c
        .daemons
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                d.family,
                d.addr.clone(),
                d.port,
                d.modifiers.as_str().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, Family, Addr, u16, String)> = expected_daemons
        .iter()
        .map(|(n, f, a, p, m)| {
            (
                n.to_string(),
                *f,
                Addr::Ip {
                    ip: a.parse().unwrap(),
                    scope_id: 0,
                },
                *p,
                m.to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);

    assert_eq!(c.version, Some((10, Some("Berkeley".into()))));
    for (name, number) in [("canonify", 3), ("parse", 0), ("final", 4)] {
        assert_eq!(
            c.ruleset(name).map(|r| r.number),
            Some(number),
            "ruleset {name}"
        );
    }
    for name in [
        "check_rcpt",
        "checkmail",
        "check_relay",
        "Local_check_rcpt",
        "MailerToTriple",
        "EnvFromSMTP",
    ] {
        assert!(c.ruleset(name).is_some(), "ruleset {name}");
    }
    assert!(!c.ruleset("check_rcpt").unwrap().rules.is_empty());

    for m in ["local", "prog", "smtp", "esmtp", "smtp8", "dsmtp", "relay"] {
        let mailer = c.mailer(m).unwrap_or_else(|| panic!("mailer {m}"));
        assert!(!mailer.argv.is_empty() && !mailer.path.is_empty(), "{m}");
    }
    let esmtp = c.mailer("esmtp").unwrap();
    assert_eq!(
        (
            esmtp.path.as_str(),
            esmtp.flags.as_str(),
            esmtp.eol.as_str(),
            esmtp.line_limit
        ),
        ("[IPC]", "mDFMuXa", "\r\n", 990)
    );
    assert_eq!(esmtp.argv, vec!["TCP", "$h"]);
    assert_eq!(
        esmtp.sender_envelope_ruleset.as_deref(),
        Some("EnvFromSMTP")
    );
    assert_eq!(esmtp.sender_header_ruleset.as_deref(), Some("HdrFromSMTP"));
    assert_eq!(c.mailer("local").unwrap().path, "/usr/sbin/sensible-mda");
    assert_eq!(c.mailer("local").unwrap().eol, "\n");

    assert!(c.class_contains("w", "localhost"));
    assert!(
        c.class_contains("w", "oracle.example.test"),
        "local-host-names read into $=w"
    );
    assert_eq!(c.classes["O"], vec!["@", "%", "!"]);
    assert!(c.class_contains("t", "root"));
    assert!(c.maps.contains_key("access"));
    assert_eq!(
        c.macros.get("Z").map(String::as_str),
        Some("8.17.1.9/Debian-2+deb12u2")
    );
    assert!(
        c.headers
            .iter()
            .any(|h| h.name == "Received" && h.value.contains("\n\t"))
    );

    let o = &c.options;
    assert_eq!(o.log_level, 9);
    assert!(o.reject_nul);
    assert_eq!(o.queue_directory, PathBuf::from("/var/spool/mqueue"));
    assert_eq!(o.pid_file.raw, "/var/run/sendmail/mta/sendmail.pid");
    assert_eq!(o.privacy_options.len(), 7);
    assert_eq!(o.operator_chars, ".:%@!^/[]+");
    assert_eq!(o.timeouts.ident, std::time::Duration::from_secs(5));
    assert!(
        o.smtp_greeting_message
            .raw
            .starts_with("$j Sendmail $v/$Z; $b; (No UCE/UBE)")
    );
}

#[test]
fn debians_generated_sendmail_cf_loads_without_error() {
    assert!(
        Path::new(CF_DIR).join("m4/cf.m4").exists(),
        "{CF_DIR}/m4/cf.m4 missing: install m4 and Debian's sendmail-cf (apt-get install -y m4 sendmail-cf)"
    );
    let dir = tempfile::tempdir().unwrap();
    let cf = with_local_host_names(&generate_debian_cf(dir.path()));
    let path = dir.path().join("sendmail.cf");
    std::fs::write(&path, cf).unwrap();
    let c = load(&Source::File(path), &[]).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    check_debian(
        &c,
        &[
            ("MTA-v6", Family::Inet6, "::1", 25, ""),
            ("MTA-v4", Family::Inet, "127.0.0.1", 25, ""),
            ("MSP-v6", Family::Inet6, "::1", 587, "Ea"),
            ("MSP-v4", Family::Inet, "127.0.0.1", 587, "Ea"),
        ],
    );
}

#[test]
fn the_shipped_debian_cf_fixture_loads_without_error() {
    let text = std::fs::read_to_string(fixture("debian-sendmail.cf")).unwrap();
    let c = Config::from_str("debian-sendmail.cf", &with_local_host_names(&text), &[])
        .unwrap_or_else(|e| {
            panic!(
                "{}",
                e.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
    check_debian(
        &c,
        &[
            ("MTA-v4", Family::Inet, "127.0.0.1", 25, ""),
            ("MSP-v4", Family::Inet, "127.0.0.1", 587, "Ea"),
        ],
    );
}

#[test]
fn without_the_local_host_names_file_the_fw_line_is_an_error() {
    let text = std::fs::read_to_string(fixture("debian-sendmail.cf"))
        .unwrap()
        .replace(
            "Fw/etc/mail/local-host-names",
            "Fw/nonexistent/local-host-names",
        );
    let errors = Config::from_str("debian-sendmail.cf", &text, &[]).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().starts_with(
        "debian-sendmail.cf:100: cannot read class file /nonexistent/local-host-names"
    ));
}
