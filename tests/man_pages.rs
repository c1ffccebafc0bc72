//! The man pages in `man/` are what `src/cli/manual.rs` renders, and `--help` prints the same
//! table: neither can drift from the other or from the flags the parser takes (the unit tests
//! in `cli::manual` check the parser against the table). `UPDATE_MAN=1 cargo test --test
//! man_pages` rewrites the pages after a change to the table.

mod support;

use std::path::Path;

use sendmail_rs::cli::manual::{PAGES, help, roff};

#[test]
fn the_pages_in_man_are_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let update = std::env::var_os("UPDATE_MAN").is_some();
    let mut stale = Vec::new();
    for page in PAGES {
        let path = dir.join(format!("{}.{}", page.name, page.section));
        let want = roff(page);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &want).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date (run UPDATE_MAN=1 cargo test --test man_pages): {stale:?}"
    );
}

#[test]
fn help_prints_the_same_table_under_every_name() {
    let dir = tempfile::tempdir().unwrap();
    for page in PAGES {
        let link = dir.path().join(page.name);
        std::os::unix::fs::symlink(support::sendmail_bin(), &link).unwrap();
        let out = std::process::Command::new(&link)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), help(page));
    }
}

#[test]
fn the_pages_render_without_warnings() {
    // man(1)'s own check when groff is installed; the page must produce no warning.
    let Ok(out) = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("man/sendmail.8"))
        .output()
    else {
        return;
    };
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
}
