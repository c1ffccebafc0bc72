//! Loading whole configurations: the embedded default, the oracle's cf, overrides, errors.

use std::path::PathBuf;
use std::time::Duration;

use sendmail_rs::config::daemon_options::{Addr, Family};
use sendmail_rs::config::macros::{MacroLookup, expand};
use sendmail_rs::config::options::DeliveryMode;
use sendmail_rs::config::{Config, Override, Source, load};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn ov(name: &str, value: &str) -> Override {
    Override {
        name: name.into(),
        value: value.into(),
    }
}

/// Warnings that only say "option X is not supported yet".
fn only_unsupported_option_warnings(c: &Config) {
    for w in &c.warnings {
        assert!(
            w.ends_with("is not supported yet; ignored") && w.contains(": option "),
            "unexpected warning: {w}"
        );
    }
}

#[test]
fn the_embedded_default_loads_with_only_unsupported_option_warnings() {
    let c = load(&Source::Embedded, &[]).unwrap_or_else(|e| panic!("{e:?}"));
    only_unsupported_option_warnings(&c);
    let daemons: Vec<(&str, Family, u16, &str)> = c
        .daemons
        .iter()
        .map(|d| (d.name.as_str(), d.family, d.port, d.modifiers.as_str()))
        .collect();
    assert_eq!(
        daemons,
        vec![
            ("MTA-v6", Family::Inet6, 25, ""),
            ("MTA-v4", Family::Inet, 25, ""),
            ("MSA-v6", Family::Inet6, 587, "Ea"),
            ("MSA-v4", Family::Inet, 587, "Ea"),
        ]
    );
    // The submission service: AUTH PLAIN/LOGIN required, STARTTLS once the certificate
    // is there; AUTH lets the client relay ($={TrustAuthMech}).
    let tls = &c.options;
    assert_eq!(
        tls.server_cert_file.as_ref().map(|t| t.raw.as_str()),
        Some("/etc/mail/tls/sendmail.crt")
    );
    assert_eq!(
        tls.auth_password_file.as_ref().map(|t| t.raw.as_str()),
        Some("/etc/mail/auth-passwd")
    );
    assert_eq!(
        tls.auth_mechanisms,
        Some(vec!["LOGIN".to_string(), "PLAIN".to_string()])
    );
    assert!(c.class_contains("TrustAuthMech", "PLAIN"));
    assert!(c.daemons.iter().all(|d| d.addr == Addr::Any));
    assert_eq!(c.options.log_level, 9);
    assert_eq!(
        c.options.queue_directory,
        PathBuf::from("/var/spool/mqueue")
    );
    assert_eq!(c.options.pid_file.raw, "/run/sendmail.pid");
    assert_eq!(
        c.options.status_file,
        Some(PathBuf::from("/var/lib/sendmail/sendmail.st"))
    );
    assert_eq!(c.options.alias_files, vec!["/etc/mail/aliases"]);
    assert_eq!(c.options.smtp_greeting_message.raw, "$j Sendmail $v/$Z; $b");
    for m in ["local", "prog", "smtp", "esmtp", "smtp8", "dsmtp", "relay"] {
        assert!(c.mailer(m).is_some(), "mailer {m}");
    }
    assert!(c.class_contains("w", "localhost"));
    assert_eq!(c.ruleset("canonify").map(|r| r.number), Some(3));
    assert!(c.ruleset("check_rcpt").is_some_and(|r| !r.rules.is_empty()));
    // $Z is ours, not 8.17.1.9
    assert_eq!(
        c.macro_value("Z").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_oracle_cf_loads() {
    let c = load(&Source::File(fixture("oracle.cf")), &[]).unwrap_or_else(|e| panic!("{e:?}"));
    only_unsupported_option_warnings(&c);
    assert_eq!(
        c.daemons
            .iter()
            .map(|d| (d.name.as_str(), d.port))
            .collect::<Vec<_>>(),
        vec![("MTA-v6", 2525), ("MTA-v4", 2526), ("MSA-v6", 2587)]
    );
    assert_eq!(
        c.macros.get("S").map(String::as_str),
        Some("relay:[127.0.0.1]")
    );
    let relay = c.mailer("relay").unwrap();
    assert_eq!(relay.path, "[IPC]");
    assert_eq!(relay.argv, vec!["TCP", "$h", "2599"]);
    assert_eq!(relay.eol, "\r\n");
    assert_eq!(relay.line_limit, 2040);
    assert_eq!(
        relay.recipient_envelope_ruleset.as_deref(),
        Some("MasqSMTP")
    );
    assert_eq!(c.mailer("local").unwrap().diag_type, "X-Unix");
    assert_eq!(c.maps["access"].class, "hash");
}

#[test]
fn command_line_daemon_options_are_sticky() {
    let text =
        "V10/Berkeley\nO DaemonPortOptions=Name=A, Port=25\nO DaemonPortOptions=Name=B, Port=26\n";
    let c = Config::from_str("t.cf", text, &[]).unwrap();
    assert_eq!(c.daemons.len(), 2);
    let c = Config::from_str(
        "t.cf",
        text,
        &[ov("DaemonPortOptions", "Name=EXTRA, Port=2608")],
    )
    .unwrap();
    assert_eq!(c.daemons.len(), 1);
    assert_eq!(
        c.notes
            .iter()
            .filter(|n| n.ends_with("ignored: set on the command line"))
            .count(),
        2,
        "{:?}",
        c.notes
    );
    let c = Config::from_str(
        "t.cf",
        text,
        &[ov("O", "Name=X"), ov("DaemonPortOptions", "Name=Y")],
    )
    .unwrap();
    assert_eq!(c.daemons.len(), 2);
}

#[test]
fn no_daemon_options_means_one_default_daemon() {
    let c = Config::from_str("t.cf", "V10/Berkeley\n", &[]).unwrap();
    let d = &c.daemons[..];
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].name.as_str(), d[0].family, d[0].port, &d[0].addr),
        ("Daemon0", Family::Inet, 25, &Addr::Any)
    );
}

#[test]
fn a_bad_daemon_value_is_an_error_at_its_line() {
    let errors = Config::from_str(
        "t.cf",
        "V10/Berkeley\n\nO DaemonPortOptions=Family=bogus\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .starts_with("t.cf:3: DaemonPortOptions: "),
        "{}",
        errors[0]
    );
}

#[test]
fn overrides_win_and_are_literal() {
    let text = "V10/Berkeley\nO LogLevel=9\nO SmtpGreetingMessage=$j ready\nO PrivacyOptions=goaway\nDjmx.example\n";
    let c = Config::from_str(
        "t.cf",
        text,
        &[
            ov("LogLevel", "14"),
            ov("SmtpGreetingMessage", "$j literal"),
            ov("p", "noetrn"),
            ov("Timeout.command", "25m"),
            ov("d", "q"),
        ],
    )
    .unwrap();
    assert_eq!(c.options.log_level, 14);
    assert_eq!(c.options.smtp_greeting_message.expand(&c), "$j literal");
    assert_eq!(c.options.privacy_options, vec!["noetrn", "goaway"]);
    assert_eq!(c.options.timeouts.command, Duration::from_secs(1500));
    assert_eq!(c.options.delivery_mode, DeliveryMode::QueueOnly);
    let c = Config::from_str("t.cf", text, &[]).unwrap();
    assert_eq!(
        c.options.smtp_greeting_message.expand(&c),
        "mx.example ready"
    );
}

#[test]
fn a_dj_line_wins_over_the_host_name() {
    let c = Config::from_str("t.cf", "V10/Berkeley\nDjmail.example.org\n", &[]).unwrap();
    assert_eq!(expand("$j", &c), "mail.example.org");
    let c = Config::from_str("t.cf", "V10/Berkeley\n", &[]).unwrap();
    assert_eq!(expand("$j", &c), c.host.fqdn);
}

#[test]
fn unsupported_and_unknown_options_are_warnings() {
    let text =
        "V10/Berkeley\nO SaveFromLine=True\nO SaveFromLine=False\nO Bogus=1\nO LogLev=3\nO Max=1\n";
    let c = Config::from_str("t.cf", text, &[]).unwrap();
    assert_eq!(
        c.warnings,
        vec![
            "t.cf:2: option SaveFromLine is not supported yet; ignored",
            "t.cf:4: readcf: unknown option name Bogus; ignored",
            "t.cf:5: Option LogLev used as abbreviation for LogLevel",
            "t.cf:6: readcf: ambiguous option name Max (matches MaxHopCount and MaxQueueAge); ignored",
        ]
    );
    assert_eq!(c.options.log_level, 3);
    assert_eq!(c.options.unsupported.len(), 2);
}

#[test]
fn every_error_is_reported_with_file_and_line() {
    let text = "V10/Berkeley\nO LogLevel=abc\nR$*\t$@ x\nZzz\nMbad, P=/bin/x\nSx\nR$*\tok\nFw/nonexistent/file/for/test\nO Timeout.bogus=1m\n";
    let errors = Config::from_str("t.cf", text, &[]).unwrap_err();
    let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        msgs,
        vec![
            "t.cf:4: unknown line type 'Z' (expected one of O D C F K M S R H P T V E Q X or a comment)",
            "t.cf:2: option LogLevel: bad number \"abc\" (expected a whole number)",
            "t.cf:3: R line outside a ruleset (expected an S line before the first R line)",
            "t.cf:5: mailer bad: A= argument required (expected A=argv)",
            "t.cf:8: cannot read class file /nonexistent/file/for/test: No such file or directory (os error 2) (expected an existing file, or `Fw-o /nonexistent/file/for/test` to make it optional)",
            "t.cf:9: option Timeout.bogus: invalid timeout bogus (expected one of initial helo mail rcpt datainit datablock datafinal rset quit misc command ident fileopen connect iconnect aconnect control lhlo auth starttls hoststatus queuewarn[.x] queuereturn[.x] resolver.*)",
        ]
    );
}

#[test]
fn a_missing_file_is_one_error() {
    let errors = load(&Source::File("/nonexistent/sendmail.cf".into()), &[]).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .starts_with("/nonexistent/sendmail.cf: cannot read: ")
    );
}

#[test]
fn class_files_are_read_with_their_format() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("names");
    std::fs::write(&f, "# comment\nalpha beta # trailing\n#skipped\ngamma\n").unwrap();
    let text = format!(
        "V10/Berkeley\nFw{} %[^\\#]\nF{{first}}{}\nFo-o /nonexistent/x\n",
        f.display(),
        f.display()
    );
    let c = Config::from_str("t.cf", &text, &[]).unwrap();
    assert_eq!(c.classes["w"], vec!["alpha", "beta", "gamma"]);
    assert_eq!(c.classes["first"], vec!["alpha", "gamma"]);
    assert!(!c.classes.contains_key("o"));
}

#[test]
fn rulesets_by_number_and_name() {
    let text = "V10/Berkeley\nS0\nR$*\t$#local $: $1\nScanonify=3\nR$*\t$@ $1\nSLocal_check_rcpt\nR$*\t$@ ok\nS3\nR$+\t$@ more\n";
    let c = Config::from_str("t.cf", text, &[]).unwrap();
    assert_eq!(c.ruleset("0").unwrap().rules.len(), 1);
    let canon = c.ruleset("canonify").unwrap();
    assert_eq!((canon.number, canon.rules.len()), (3, 2));
    assert_eq!(canon.rules[1].loc.line, 9);
    assert_eq!(c.ruleset_names["Local_check_rcpt"], 199);
    let errors = Config::from_str("t.cf", "V10\nSx=3\nSx=4\nS100\n", &[]).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn rules_classes_and_maps_are_expanded_when_read_but_deferred_macros_wait() {
    let text = "V10/Berkeley\nDjmx.example\nCw$j localhost\nKacc hash /etc/$j.db\nS0\nR$* < @ $=w . > $*\t$#local $: $1\nR$*\t$: $&j $j\nDjlater.example\nR$*\t$@ $j\n";
    let c = Config::from_str("t.cf", text, &[]).unwrap();
    assert_eq!(c.classes["w"], vec!["mx.example", "localhost"]);
    assert_eq!(c.maps["acc"].args, "/etc/mx.example.db");
    let rules = &c.ruleset("0").unwrap().rules;
    assert_eq!(rules[0].lhs, "$* < @ $=w . > $*");
    assert_eq!(rules[1].rhs, "$: $&j mx.example");
    // the value at the time the line is read
    assert_eq!(rules[2].rhs, "$@ later.example");
}

#[test]
fn mailers_get_sendmails_defaults_and_refusals() {
    let text = "V10/Berkeley\nMlocal, P=/usr/bin/procmail, F=lsDFM, S=EnvFromL/HdrFromL, R=EnvToL, T=DNS/RFC822/X-Unix, A=procmail -d $u\nMx, P=[IPC], F=mL, A=TCP $h\nMlocal, P=/bin/mail.local, A=mail.local $u\n";
    let c = Config::from_str("t.cf", text, &[]).unwrap();
    assert_eq!(
        c.mailers
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        vec!["local", "x"]
    );
    let local = c.mailer("local").unwrap();
    assert_eq!(
        local.path, "/bin/mail.local",
        "a redefinition replaces in place"
    );
    assert_eq!(local.eol, "\n", "argv with $u: local delivery line ends");
    let x = c.mailer("x").unwrap();
    assert_eq!(
        (
            x.eol.as_str(),
            x.line_limit,
            x.mta_type.as_str(),
            x.addr_type.as_str(),
            x.diag_type.as_str()
        ),
        ("\r\n", 990, "dns", "rfc822", "smtp")
    );
    assert!(x.has_flag('m') && !x.has_flag('u'));
    assert!(
        c.ruleset("EnvFromL").is_some()
            && c.ruleset("HdrFromL").is_some()
            && c.ruleset("EnvToL").is_some()
    );

    let bad = "V10\nMa, A=x\nMb, P=/x\nMc, P=[TCP], A=TCP $h\nMd, P=[IPC], A=TCP\nMe, P=/x, A=x, Z=1\nMf, P=/x, A=x, E=\n";
    let msgs: Vec<String> = Config::from_str("t.cf", bad, &[])
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        msgs,
        vec![
            "t.cf:2: mailer a: P= argument required (expected P=/path or P=[IPC])",
            "t.cf:3: mailer b: A= argument required (expected A=argv)",
            "t.cf:4: mailer c: P=[TCP] must be replaced by P=[IPC]",
            "t.cf:5: mailer d: too few parameters for [IPC] mailer (expected A=TCP $h)",
            "t.cf:6: mailer e: unknown mailer equate Z= (expected one of A C D E F L M N P Q R S T U W m r /)",
            "t.cf:7: mailer f: null end-of-line string (expected e.g. E=\\r\\n)",
        ]
    );
}

#[test]
fn headers_priorities_trusted_env_queue_groups_filters() {
    let text = "V10/Berkeley\nH?D?Date: $a\nHReceived: by $j\n\tid $i\nPjunk=-100\nTroot daemon\nETZ=UTC\nQfast, P=/q/fast, R=2\nXf1, S=local:/run/f1.sock\nLload\n";
    let c = Config::from_str("t.cf", text, &[]).unwrap();
    assert_eq!(c.headers[0].condition.as_deref(), Some("D"));
    assert_eq!(c.headers[1].value, "by $j\n\tid $i");
    assert_eq!(c.priorities, vec![("junk".to_string(), -100)]);
    assert_eq!(c.trusted, vec!["root", "daemon"]);
    assert!(c.class_contains("t", "daemon"));
    assert_eq!(c.env, vec![("TZ".to_string(), Some("UTC".to_string()))]);
    assert_eq!(c.queue_groups[0].name, "fast");
    assert_eq!(
        c.mail_filters[0].fields,
        vec![('S', "local:/run/f1.sock".to_string())]
    );
    assert_eq!(
        c.warnings,
        vec!["t.cf:10: L line (extended load average) is not supported; ignored"]
    );
}

#[test]
fn override_errors_name_the_command_line() {
    let errors = Config::from_str(
        "t.cf",
        "V10\n",
        &[ov("LogLevel", "9"), ov("MaxMessageSize", "big")],
    )
    .unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "command line:2: option MaxMessageSize: bad number \"big\" (expected a whole number)"
    );
    let c = Config::from_str("t.cf", "V10\n", &[ov("M", "xvalue"), ov("NoSuch", "1")]).unwrap();
    assert_eq!(c.macros["x"], "value");
    assert_eq!(
        c.warnings,
        vec!["command line:2: readcf: unknown option name NoSuch; ignored"]
    );
}

/// Nothing panics on input: random lines built from the characters that matter to the parser.
#[test]
fn random_input_gives_errors_not_panics() {
    let alphabet: Vec<char> = "ODCFKMSRHPTVEQXLZ=,{}?$&|.#\\\"\t \n/-o:@0123456789abcxyzé"
        .chars()
        .collect();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for _ in 0..3000 {
        let len = next(40);
        let text: String = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
        let text = format!("V10\n{text}\n");
        let _ = Config::from_str("fuzz.cf", &text, &[]);
        let _ = expand(&text, &std::collections::BTreeMap::<String, String>::new());
    }
    // many named rulesets: an error past the limit, no overflow
    let many: String = (0..150).map(|i| format!("Sname{i}\n")).collect();
    let errors = Config::from_str("t.cf", &format!("V10\n{many}"), &[]).unwrap_err();
    assert_eq!(errors.len(), 50);
}

/// The "not supported yet" warnings of a cf (issue 18 item 3: none on Debian's cf,
/// submit.cf and the embedded default).
fn not_supported(c: &Config) -> Vec<String> {
    c.warnings
        .iter()
        .filter(|w| w.contains("is not supported yet"))
        .cloned()
        .collect()
}

#[test]
fn every_option_of_debians_sendmail_cf_submit_cf_and_the_embedded_default_is_known() {
    let local_host_names = fixture("debian-etc-mail/local-host-names");
    for name in ["debian-sendmail.cf", "debian-submit.cf"] {
        let text = std::fs::read_to_string(fixture(name)).unwrap().replace(
            "/etc/mail/local-host-names",
            local_host_names.to_str().unwrap(),
        );
        let c = Config::from_str(name, &text, &[]).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(not_supported(&c), Vec::<String>::new(), "{name}");
    }
    let c = load(&Source::Embedded, &[]).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(not_supported(&c), Vec::<String>::new(), "embedded default");
}

#[test]
fn debians_option_values_are_read_into_their_fields() {
    let local_host_names = fixture("debian-etc-mail/local-host-names");
    let text = std::fs::read_to_string(fixture("debian-sendmail.cf"))
        .unwrap()
        .replace(
            "/etc/mail/local-host-names",
            local_host_names.to_str().unwrap(),
        );
    let c = Config::from_str("debian-sendmail.cf", &text, &[]).unwrap();
    let o = &c.options;
    assert!(!o.seven_bit_input);
    assert_eq!(o.blank_sub, '.');
    assert_eq!(o.queue_file_mode, Some(0o640));
    assert_eq!(o.resolver_options, "+WorkAroundBrokenAAAA");
    assert!(o.send_mime_errors && o.me_too && o.old_style_headers);
    assert!(!o.use_errors_to && !o.check_aliases && !o.rrt_implies_dsn);
    assert_eq!(o.forward_path.raw, "$z/.forward.$w:$z/.forward");
    assert_eq!(o.safe_file_environment, Some(PathBuf::from("/")));
    assert_eq!(o.unix_from_line.raw, "From $g $d");
    assert_eq!(o.must_quote_chars, ".'");
    assert_eq!(
        o.dead_letter_drop,
        Some(PathBuf::from("/var/lib/sendmail/dead.letter"))
    );
    assert_eq!(
        o.trusted_user.as_ref().map(|u| u.user.as_str()),
        Some("smmta")
    );
    assert_eq!(
        o.control_socket_name,
        Some(PathBuf::from("/var/run/sendmail/mta/smcontrol"))
    );
    assert_eq!(o.alias_wait, Duration::from_secs(600));
    assert_eq!(o.hosts_file, PathBuf::from("/etc/hosts"));
}
