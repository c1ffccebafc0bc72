//! Routing by mailertable, end to end: the daemon runs `tests/fixtures/oracle-mailertable.cf`
//! (the oracle's mc plus `FEATURE(`mailertable', `hash -o .../mailertable')`, compiled by
//! m4 from `tests/fixtures/oracle-mailertable.mc`), whose ruleset 0 (`Parse1`) looks the
//! recipient's domain up in `Kmailertable` and hands the entry to `MailerToTriple`. The map
//! is built with our `makemap` from the line `example.test esmtp:[127.0.0.2]`; the `esmtp`
//! mailer's `A=TCP $h PORT` names the sink's port. A message to user@example.test must reach
//! the sink on 127.0.0.2 through that route: not by MX (no DNS is asked) and not through the
//! smart host (`relay:[127.0.0.1]`, where nothing listens).
//!
//! The expected `-bt` answer is what sendmail 8.17.1.9 printed for `3,0 user@example.test`
//! on the same cf and map (2026-12-02, `makemap hash` of the oracle's package).

mod support;

use std::path::Path;

use support::Daemon;
use support::dsn_sink::{Sink, send};

/// sendmail 8.17's ruleset 0 result for user@example.test with the map below.
const ORACLE_TRIPLE: &str = "parse            returns: $# esmtp $@ [ 127 . 0 . 0 . 2 ] \
$: user < @ example . test >";

const MAILERTABLE: &str = "example.test\tesmtp:[127.0.0.2]\n";

const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost\n\
127.0.0.1\toracle.example.test oracle\n";

/// The cf's files under `root/run` (hosts, service switch, aliases, access map, the
/// mailertable built by `makemap`); returns the cf text, its mailers pointed at `port`.
fn oracle_env(root: &Path, port: u16) -> String {
    let run = root.join("run");
    std::fs::create_dir_all(run.join("etc")).unwrap();
    std::fs::write(run.join("etc/hosts"), HOSTS).unwrap();
    std::fs::write(run.join("etc/service.switch"), "hosts files\n").unwrap();
    std::fs::write(run.join("aliases"), "postmaster: root\n").unwrap();
    std::fs::write(run.join("access"), "").unwrap();
    let cf = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oracle-mailertable.cf"),
    )
    .unwrap()
    .replace("@ORACLE@", &root.display().to_string())
    .replace("A=TCP $h 2599", &format!("A=TCP $h {port}"));
    let cf_path = root.join("built.cf");
    std::fs::write(&cf_path, &cf).unwrap();
    makemap(root, &cf_path, &run.join("mailertable"));
    cf
}

/// `makemap -C cf hash MAP < MAILERTABLE` with the binary under the name `makemap`; there
/// is no text source beside the built map, so only the map can answer.
fn makemap(root: &Path, cf: &Path, map: &Path) {
    let link = root.join("makemap");
    std::os::unix::fs::symlink(support::sendmail_bin(), &link).unwrap();
    let (cf, map_s) = (cf.display().to_string(), map.display().to_string());
    let out = support::run_bin_with_input(&link, &["-C", &cf, "hash", &map_s], MAILERTABLE);
    assert!(out.status.success(), "{out:?}");
    assert!(root.join("run/mailertable.db").exists());
}

#[test]
fn a_mailertable_entry_routes_a_domain_to_its_mailer_and_host() {
    let sink = Sink::start_on("127.0.0.2");
    let env = tempfile::tempdir().unwrap();
    let cf = oracle_env(env.path(), sink.port);
    let mut d = Daemon::start_wrapped(
        &cf,
        &[
            "-O",
            "DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1",
        ],
        support::AS_ORACLE_HOST,
    );

    // The rules give sendmail's triple, from the built map.
    let bt = support::run_bin_with_input(
        Path::new(support::sendmail_bin()),
        &["-C", d.cf.to_str().unwrap(), "-bt"],
        "3,0 user@example.test\n",
    );
    let bt = String::from_utf8_lossy(&bt.stdout);
    assert!(bt.lines().any(|l| l == ORACLE_TRIPLE), "{bt}");

    send(
        &mut d,
        "<alice@oracle.example.test>",
        &["<user@example.test>"],
        "routed",
    );
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("X-Sink-Rcpt: To:<user@example.test>")
            && got[0].contains("Subject: routed\r\n"),
        "{}",
        got[0]
    );
    let log = d.wait_log("stat=Sent");
    let to = log
        .lines()
        .find(|l| l.contains("to=<user@example.test>, "))
        .unwrap();
    assert!(
        to.contains(", mailer=esmtp, ")
            && to.contains(", relay=[127.0.0.2] [127.0.0.2], dsn=2.0.0, stat=Sent ("),
        "{to}"
    );
    d.stop();
}
