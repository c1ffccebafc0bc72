//! The ruleset engine is built from the parsed [`Config`](sendmail_rs::config::Config), the
//! one reader of sendmail.cf. Two records say it is the engine the rules always ran on:
//! * for every cf in `tests/fixtures/` (the oracle's, the mailertable one, Debian's default)
//!   and the embedded default, `cf-reader/*.engine` is the engine as the second reader
//!   (`rules/cf.rs`'s own lexer, deleted since) built it, described line by line — rulesets
//!   rule by rule, macros, classes, maps, mailers, token tables; the engine built from the
//!   configuration must give the same description;
//! * `cf-reader/edges.cf` holds the lines two readers most easily read differently (in-line
//!   `#` comments, `\#`, quoted and escaped `D` values, continuation lines, `F` classes from
//!   files and `|programs` with and without a scanf format, `K` map options); there the
//!   second reader was wrong and the configuration right, and `edges.bt-out` is what
//!   sendmail 8.17.1.9 (the oracle) answers in `-bt` to `edges.bt-in`.

use sendmail_rs::config::{self, macros::HostNames};
use sendmail_rs::rules::bt::Session;
use sendmail_rs::rules::cf::{self, HostInfo};
use sendmail_rs::rules::macros::MacroNames;
use sendmail_rs::rules::mailer;
use sendmail_rs::rules::rewrite::Engine;
use sendmail_rs::rules::ruleset::MAXRWSETS;
use sendmail_rs::rules::token::meta;
use std::fmt::Write;
use std::path::Path;

fn host() -> HostInfo {
    HostInfo {
        hostname: "oracle.example.test".into(),
        addresses: vec!["127.0.0.1".parse().unwrap()],
    }
}

/// Internal-form bytes as text: a macro or class id after its metasymbol becomes its name,
/// other bytes above 0x7f are written `\ooo`.
fn render(names: &MacroNames, b: &[u8]) -> String {
    let mut s = String::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let takes_id = matches!(
            c,
            meta::MACROEXPAND | meta::MACRODEXPAND | meta::MATCHCLASS | meta::MATCHNCLASS
        );
        if c >= 0x80 {
            let _ = write!(s, "\\{c:o}");
        } else {
            s.push(c as char);
        }
        if takes_id && i + 1 < b.len() {
            s.push_str(&names.name(b[i + 1]));
            i += 1;
        }
        i += 1;
    }
    s
}

/// The engine as text, independent of the order long macro names were first seen in.
fn describe(e: &mut Engine, x: &cf::CfExtras) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config level {}", x.config_level);
    let _ = writeln!(out, "help file {:?}", x.help_file);
    let _ = writeln!(
        out,
        "space_sub {:?} max_recursion {}",
        e.space_sub as char, e.max_recursion
    );
    let _ = writeln!(out, "tables {:?}", e.tables);
    let mut macros: Vec<String> = e
        .macros
        .defined()
        .into_iter()
        // the dates of the load, and the user who ran it
        .filter(|(id, _)| !matches!(id, b'b' | b'd' | b't' | b'_'))
        .map(|(id, v)| format!("macro {} = {}", e.names.name(id), render(&e.names, v)))
        .collect();
    macros.sort();
    out.extend(macros.into_iter().map(|l| l + "\n"));
    let mut classes: Vec<String> = e
        .macros
        .class_ids()
        .into_iter()
        .map(|id| {
            let words: Vec<String> = e
                .macros
                .class(id)
                .iter()
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            format!("class {} = {}", e.names.name(id), words.join(" "))
        })
        .collect();
    classes.sort();
    out.extend(classes.into_iter().map(|l| l + "\n"));
    for n in 0..MAXRWSETS {
        let rules = e.rulesets.rules(n);
        let name = e.rulesets.display_name(n);
        if rules.is_empty() && name == n.to_string() {
            continue;
        }
        let _ = writeln!(out, "ruleset {n} {name}");
        for r in rules {
            let side = |t: &[Vec<u8>]| {
                t.iter()
                    .map(|tok| render(&e.names, tok))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let _ = writeln!(out, "  R {}\t{}", side(&r.lhs), side(&r.rhs));
        }
    }
    let mut maps: Vec<_> = e.maps.maps.iter().collect();
    maps.sort_by_key(|(n, _)| n.as_str());
    for (name, m) in maps {
        let _ = writeln!(out, "map {name} = {m:?}");
    }
    let _ = writeln!(out, "host services {:?}", e.maps.hosts.services);
    for m in mailer::build(&x.mailers, &e.rulesets, &mut e.names) {
        let argv: Vec<String> = m.argv.iter().map(|a| render(&e.names, a)).collect();
        let _ = writeln!(
            out,
            "mailer {} {} P={} F={:?} S={:?}/{:?} R={:?}/{:?} M={} L={} E={:?} C={:?} T={:?} r={} A={:?}",
            m.number,
            m.name,
            m.path,
            m.flags.iter().map(|&f| f as char).collect::<String>(),
            m.sender_env,
            m.sender_hdr,
            m.rcpt_env,
            m.rcpt_hdr,
            m.max_size,
            m.line_limit,
            m.eol,
            m.charset,
            m.types,
            m.max_rcpt,
            argv
        );
    }
    out
}

/// The engine built from the parsed configuration, and the problems found.
fn from_config(text: &str, name: &str) -> (String, Vec<String>) {
    let (cfg, errors) = config::from_reader_lenient(
        Path::new(name),
        text.as_bytes(),
        &[],
        HostNames::from_fqdn(&host().hostname),
    );
    let (mut e, x, problems) = cf::from_config(&cfg, &host());
    let mut all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    all.extend(problems);
    (describe(&mut e, &x), all)
}

/// A private copy of the files the fixtures name, and each fixture's text pointing at it.
fn fixtures(dir: &Path) -> Vec<(&'static str, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let d = format!("{}/", dir.display());
    std::fs::copy(
        root.join("debian-etc-mail/local-host-names"),
        dir.join("local-host-names"),
    )
    .unwrap();
    std::fs::write(dir.join("words"), "a1 a2\na3 # c\n").unwrap();
    let prog = dir.join("prog.sh");
    std::fs::write(&prog, "#!/bin/sh\necho prog1 prog2\necho prog3 # c\n").unwrap();
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("hosts"),
        "127.0.0.1 localhost\n192.0.2.1 oracle.example.test oracle\n",
    )
    .unwrap();
    vec![
        (
            "oracle.cf",
            read("oracle.cf").replace("@ORACLE@", &dir.display().to_string()),
        ),
        (
            "oracle-mailertable.cf",
            read("oracle-mailertable.cf").replace("@ORACLE@", &dir.display().to_string()),
        ),
        (
            "debian-sendmail.cf",
            read("debian-sendmail.cf").replace("/etc/mail/", &d),
        ),
        (
            "default.cf",
            // its files in the private directory too, and no service switch of this machine
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/default.cf"),
            )
            .unwrap()
            .replace("/etc/mail/", &d)
                + &format!("O ServiceSwitchFile={d}service.switch\n"),
        ),
        ("edges.cf", read("cf-reader/edges.cf").replace("@DIR@", &d)),
    ]
}

#[test]
fn the_engine_from_config_is_the_recorded_engine() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cf-reader");
    let mut differ = Vec::new();
    for (name, text) in fixtures(dir.path()) {
        if name == "edges.cf" {
            continue;
        }
        let (got, errors) = from_config(&text, name);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        let got = got.replace(&d, "@DIR@");
        let want = std::fs::read_to_string(recorded.join(name.replace(".cf", ".engine"))).unwrap();
        if got != want {
            let diff: Vec<String> = want
                .lines()
                .filter(|l| !got.lines().any(|n| n == *l))
                .map(|l| format!("  recorded only: {l}"))
                .chain(
                    got.lines()
                        .filter(|l| !want.lines().any(|o| o == *l))
                        .map(|l| format!("  built only:    {l}")),
                )
                .collect();
            differ.push(format!("{name}:\n{}", diff.join("\n")));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[test]
fn the_lines_readers_part_on_read_as_sendmail_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cf-reader");
    let (_, text) = fixtures(dir.path())
        .into_iter()
        .find(|(n, _)| *n == "edges.cf")
        .unwrap();
    let (cfg, errors) = config::from_reader_lenient(
        Path::new("edges.cf"),
        text.as_bytes(),
        &[],
        HostNames::from_fqdn(&host().hostname),
    );
    assert!(errors.is_empty(), "{errors:#?}");
    let (engine, extras, problems) = cf::from_config(&cfg, &host());
    assert!(problems.is_empty(), "{problems:#?}");
    let input = std::fs::read(recorded.join("edges.bt-in")).unwrap();
    let mut out = Vec::new();
    let rc = Session::new(engine, extras).run(input.as_slice(), &mut out);
    let want = std::fs::read_to_string(recorded.join("edges.bt-out")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out), want);
    assert_eq!(rc, 0);
}
