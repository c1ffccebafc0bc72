//! `rules::check::rscheck` on the oracle's real cf (`tests/data/conformance/env/oracle`): the
//! verdicts the SMTP server will act on, for answers recorded from sendmail 8.17 -bt.
//! `#[ignore]`d like `rules_bt_corpus.rs` (`.ci/run` runs them).

use sendmail_rs::rules::cf::{HostInfo, load};
use sendmail_rs::rules::check::{Verdict, rscheck};
use sendmail_rs::rules::rewrite::Engine;
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conformance")
}

fn oracle_engine(dir: &Path) -> Engine {
    let conf = corpus_dir();
    std::fs::create_dir_all(dir.join("run/etc")).unwrap();
    std::fs::copy(conf.join("env/etc/hosts"), dir.join("run/etc/hosts")).unwrap();
    std::fs::copy(conf.join("env/oracle/access"), dir.join("run/access")).unwrap();
    sendmail_rs::makemap::build_from_text(&dir.join("run/access")).unwrap();
    std::fs::copy(conf.join("env/oracle/aliases"), dir.join("run/aliases")).unwrap();
    let cf = std::fs::read_to_string(conf.join("env/oracle/oracle.cf"))
        .unwrap()
        .replace("@ORACLE@", &dir.display().to_string());
    let host = HostInfo {
        hostname: "oracle.example.test".into(),
        addresses: vec!["127.0.0.1".parse().unwrap()],
    };
    load(cf.as_bytes(), "oracle.cf", &host)
        .expect("oracle cf loads")
        .0
}

fn set(e: &mut Engine, name: &str, value: &str) {
    let id = e.names.id(name).unwrap();
    e.macros.define(id, value.as_bytes().to_vec());
}

#[test]
#[ignore = "run with the recorded corpora: .ci/run runs them with --ignored"]
fn relaying_and_access_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = oracle_engine(dir.path());
    set(&mut e, "client_addr", "127.0.0.10");
    assert_eq!(
        rscheck(
            &mut e,
            "check_rcpt",
            b"<bob@remote.example.test>",
            None,
            true
        ),
        Verdict::Reject {
            code: 550,
            dsn: Some("5.7.1".into()),
            text: "Relaying denied".into()
        }
    );
    assert_eq!(
        rscheck(
            &mut e,
            "check_mail",
            b"<spammer@client.example.test>",
            None,
            true
        ),
        Verdict::Reject {
            code: 550,
            dsn: Some("5.7.1".into()),
            text: "Access denied".into()
        }
    );
    assert!(matches!(
        rscheck(
            &mut e,
            "check_rcpt",
            b"<root@oracle.example.test>",
            None,
            true
        ),
        Verdict::Accept(_)
    ));
    set(&mut e, "client_addr", "127.0.0.1");
    assert!(matches!(
        rscheck(
            &mut e,
            "check_rcpt",
            b"<bob@remote.example.test>",
            None,
            true
        ),
        Verdict::Accept(_)
    ));
}
