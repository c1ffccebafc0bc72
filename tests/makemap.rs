//! `makemap` and `newaliases` as an administrator runs them: the binary under the name
//! `makemap` builds `NAME.db` from the text on stdin, `-bt` then answers `/map` from the
//! built map (the text source is gone), and `-bi` writes the alias map the same rules read.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

/// The binary under the name `makemap` (a symlink, as a package installs it).
fn makemap_bin(dir: &Path) -> PathBuf {
    let link = dir.join("makemap");
    std::os::unix::fs::symlink(support::sendmail_bin(), &link).unwrap();
    link
}

fn run_with_input(bin: &Path, args: &[&str], input: &str) -> Output {
    support::run_bin_with_input(bin, args, input)
}

/// The oracle's cf with its files in `dir` (access map, aliases, helpfile, queue).
fn oracle_cf(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string("tests/fixtures/oracle.cf")
        .unwrap()
        .replace("@ORACLE@/run/", &format!("{}/", dir.display()))
        .replace("@ORACLE@", &dir.display().to_string());
    let cf = dir.join("sendmail.cf");
    std::fs::write(&cf, text).unwrap();
    std::fs::create_dir_all(dir.join("mqueue")).unwrap();
    cf
}

#[test]
fn makemap_builds_the_map_that_bt_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cf = oracle_cf(dir.path());
    let mm = makemap_bin(dir.path());
    let access = dir.path().join("access");
    let (cf_s, access_s) = (cf.display().to_string(), access.display().to_string());
    let out = run_with_input(
        &mm,
        &["-C", &cf_s, "hash", &access_s],
        "Connect:192.0.2.7 REJECT\n# comment\nFrom:spammer@example.org\tERROR:550 go away\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("access.db").exists());
    assert!(!access.exists(), "makemap writes only NAME.db");

    let dump = run_with_input(&mm, &["-C", &cf_s, "-u", "hash", &access_s], "");
    assert_eq!(
        String::from_utf8_lossy(&dump.stdout),
        "connect:192.0.2.7\tREJECT\nfrom:spammer@example.org\tERROR:550 go away\n"
    );

    let bt = run_with_input(
        Path::new(support::sendmail_bin()),
        &["-C", &cf_s, "-bt"],
        "/map access Connect:192.0.2.7\n/map access connect:192.0.2.8\n",
    );
    let text = String::from_utf8_lossy(&bt.stdout);
    assert!(
        text.contains("map_lookup: access (Connect:192.0.2.7) returns REJECT (0)"),
        "{text}"
    );
    assert!(
        text.contains("map_lookup: access (connect:192.0.2.8) no match (0)"),
        "{text}"
    );
}

#[test]
fn bad_input_lines_are_named_and_the_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cf = oracle_cf(dir.path());
    let mm = makemap_bin(dir.path());
    let name = dir.path().join("m").display().to_string();
    let cf_s = cf.display().to_string();
    let out = run_with_input(
        &mm,
        &["-C", &cf_s, "btree", &name],
        "a 1\na 2\nlonely\nb 3\n",
    );
    assert_eq!(out.status.code(), Some(65), "EX_DATAERR");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "makemap: {name}: line 2: key a: duplicate key\nmakemap: {name}: line 3: no RHS for LHS lonely\n"
        )
    );
    let dump = run_with_input(&mm, &["-C", &cf_s, "-u", "btree", &name], "");
    assert_eq!(String::from_utf8_lossy(&dump.stdout), "a\t1\nb\t3\n");
}

#[test]
fn newaliases_writes_the_alias_map_the_rules_read() {
    let dir = tempfile::tempdir().unwrap();
    let cf = oracle_cf(dir.path());
    std::fs::write(
        dir.path().join("aliases"),
        "team: alice, bob\npostmaster: root\n",
    )
    .unwrap();
    let cf_s = cf.display().to_string();
    let out = support::run(&["-C", &cf_s, "-bi"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = dir.path().join("aliases.db");
    let map = sendmail_rs::mapdb::MapDb::open(&db).unwrap();
    assert_eq!(map.get(b"team"), Some(&b"alice, bob"[..]));
    // the text is gone: -bt's alias map answers from the built map alone
    std::fs::remove_file(dir.path().join("aliases")).unwrap();
    let bt = run_with_input(
        Path::new(support::sendmail_bin()),
        &["-C", &cf_s, "-bt"],
        "/map aliases team\n",
    );
    let text = String::from_utf8_lossy(&bt.stdout);
    assert!(
        text.contains("map_lookup: aliases (team) returns alice, bob (0)"),
        "{text}"
    );
}
