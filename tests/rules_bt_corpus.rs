//! The recorded `sendmail -bt` corpus (`tests/data/conformance/bt/`), run in-process against
//! `rules::bt::Session`: every case's stdout and exit status must match byte for byte.
//!
//! The 702 cases take a while, so these tests are `#[ignore]`d; `.ci/run` runs them with
//! `cargo test --test rules_bt_corpus -- --ignored`.
//! The recorded environment (host name `oracle.example.test`, its hosts file, only `lo`
//! up) is reproduced by giving the session that host and a private copy of the files, so
//! no root or namespaces are needed; `scripts/bt-conformance.sh` runs the real binary in
//! the recorded namespaces instead.

use sendmail_rs::rules::bt::Session;
use sendmail_rs::rules::cf::{HostInfo, load};
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conformance")
}

struct Case {
    id: String,
    input: Vec<u8>,
    stdout: Vec<u8>,
    exit: i32,
}

fn unescape(line: &str) -> Vec<u8> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'\\' => out.push(b'\\'),
                b't' => out.push(b'\t'),
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b'x' if i + 3 < b.len() => {
                    let h = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(h, 16).unwrap());
                    i += 4;
                    continue;
                }
                c => {
                    out.push(b'\\');
                    out.push(c);
                }
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn parse_cases(text: &str) -> Vec<Case> {
    const NO_EOL: &str = "\\ no newline at end of output";
    let mut cases = Vec::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        let Some(id) = l.strip_prefix("=== CASE ") else {
            continue;
        };
        let (mut input, mut expected, mut exit) = (Vec::new(), Vec::<&str>::new(), 0);
        let mut section = "";
        for l in lines.by_ref() {
            if l == "=== END" {
                break;
            }
            match l {
                "--- INPUT" | "--- EXPECTED" | "--- STDERR" => section = l,
                _ if l.starts_with("--- EXIT ") => exit = l[9..].parse().unwrap(),
                _ if section == "--- INPUT" => {
                    input.extend(unescape(l));
                    input.push(b'\n');
                }
                _ if section == "--- EXPECTED" => expected.push(l),
                _ => {}
            }
        }
        let mut stdout = Vec::new();
        let no_eol = expected.last() == Some(&NO_EOL);
        if no_eol {
            expected.pop();
        }
        for (i, l) in expected.iter().enumerate() {
            stdout.extend(unescape(l));
            if !(no_eol && i + 1 == expected.len()) {
                stdout.push(b'\n');
            }
        }
        cases.push(Case {
            id: id.to_string(),
            input,
            stdout,
            exit,
        });
    }
    cases
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

fn host() -> HostInfo {
    HostInfo {
        hostname: "oracle.example.test".into(),
        addresses: vec!["127.0.0.1".parse().unwrap()],
    }
}

fn run_corpus(cases_file: &Path, cf_text: &[u8], subst: &str) {
    let text = std::fs::read_to_string(cases_file).unwrap();
    let cases = parse_cases(&text);
    assert!(cases.len() > 300, "corpus too small: {}", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let (engine, extras) = load(cf_text, "test.cf", &host()).expect("cf loads");
        let mut out = Vec::new();
        let rc = Session::new(engine, extras).run(c.input.as_slice(), &mut out);
        let expected = String::from_utf8_lossy(&c.stdout).replace("@ORACLE@", subst);
        if out != expected.as_bytes() || rc != c.exit {
            failures.push(format!(
                "{}: exit {rc} (want {})\n--- got\n{}\n--- want\n{}",
                c.id,
                c.exit,
                String::from_utf8_lossy(&out),
                expected
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
#[ignore = "702 recorded cases: slow; .ci/run runs them with --ignored"]
fn oracle_config_corpus() {
    let conf = corpus_dir();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("run/etc")).unwrap();
    std::fs::create_dir_all(d.join("pkg/etc/mail")).unwrap();
    std::fs::copy(conf.join("env/etc/hosts"), d.join("run/etc/hosts")).unwrap();
    std::fs::copy(conf.join("env/oracle/access"), d.join("run/access")).unwrap();
    // the recorded runs had the map built (`makemap hash access < access`), as a site does
    sendmail_rs::makemap::build_from_text(&d.join("run/access")).unwrap();
    std::fs::copy(conf.join("env/oracle/aliases"), d.join("run/aliases")).unwrap();
    std::fs::copy(
        conf.join("env/debian/etc/mail/helpfile"),
        d.join("pkg/etc/mail/helpfile"),
    )
    .unwrap();
    let subst = d.display().to_string();
    let cf = std::fs::read_to_string(conf.join("env/oracle/oracle.cf"))
        .unwrap()
        .replace("@ORACLE@", &subst);
    run_corpus(&conf.join("bt/oracle/cases.txt"), cf.as_bytes(), &subst);
}

#[test]
#[ignore = "702 recorded cases: slow; .ci/run runs them with --ignored"]
fn debian_config_corpus() {
    let conf = corpus_dir();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_dir(&conf.join("env/debian/etc"), &d.join("etc"));
    std::fs::copy(conf.join("env/etc/hosts"), d.join("etc/hosts")).unwrap();
    sendmail_rs::makemap::build_from_text(&d.join("etc/mail/access")).unwrap();
    let etc_mail = format!("{}/etc/mail/", d.display());
    let mut cf = std::fs::read_to_string(conf.join("env/debian/etc/mail/sendmail.cf"))
        .unwrap()
        .replace("/etc/mail/", &etc_mail);
    cf.push_str(&format!("O HostsFile={}/etc/hosts\n", d.display()));
    run_corpus(&conf.join("bt/debian/cases.txt"), cf.as_bytes(), "@ORACLE@");
}
