//! Specifications of the alias file reader, expansion and `newaliases`.

use super::db::encode_db;
use super::*;
use crate::log::Logger;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const ORACLE: &str = "# oracle aliases (rebuilt into aliases.db by run-oracle.sh via sendmail -bi)
MAILER-DAEMON: postmaster
postmaster: root
abuse: root
alice: root
list: root, alice
";

fn p() -> &'static Path {
    Path::new("/etc/mail/aliases")
}

fn issues(text: &str) -> Vec<(usize, String)> {
    match parse(text, p()) {
        Err(AliasError::Parse(v)) => v.into_iter().map(|i| (i.line, i.message)).collect(),
        other => panic!("expected parse errors, got {other:?}"),
    }
}

#[test]
fn oracle_file_gives_sendmails_figures() {
    let t = parse(ORACLE, p()).unwrap();
    assert_eq!(t.figures(), (5, 11, 70));
    assert_eq!(t.get("list").unwrap().rhs, "root, alice");
}

#[test]
fn names_are_case_insensitive() {
    let t = parse("Alice: root\nPOSTMASTER: root\n", p()).unwrap();
    assert_eq!(t.get("ALICE").unwrap().name, "Alice");
    assert_eq!(t.get("alice").unwrap().line, 1);
    // sendmail always lower-cases postmaster
    assert_eq!(t.get("Postmaster").unwrap().name, "postmaster");
}

#[test]
fn continuation_lines_are_joined_with_their_whitespace() {
    let t = parse("list: root,\n\talice,\n  bob\nother: x\n", p()).unwrap();
    let a = t.get("list").unwrap();
    assert_eq!(a.rhs, "root,\talice,  bob");
    assert_eq!(
        a.members(),
        vec![
            Member::Address("root".into()),
            Member::Address("alice".into()),
            Member::Address("bob".into())
        ]
    );
    assert_eq!(t.get("other").unwrap().line, 4);
}

#[test]
fn backslash_newline_joins_lines_and_keeps_the_first_line_number() {
    let t = parse("# x\nlist: root, \\\nalice\nz: y\n", p()).unwrap();
    assert_eq!(t.get("list").unwrap().rhs, "root, alice");
    assert_eq!(t.get("list").unwrap().line, 2);
    assert_eq!(t.get("z").unwrap().line, 4);
}

#[test]
fn list_owners() {
    let t = parse("staff: a, b\nowner-staff: boss\n", p()).unwrap();
    assert_eq!(t.owner("STAFF").as_deref(), Some("owner-staff"));
    assert_eq!(t.owner("boss"), None);
}

#[test]
fn members_of_every_kind() {
    let t = parse(
        "all: \"|/usr/bin/prog -a, b > (x)\", /var/log/mail.copy, :include:/etc/mail/staff, \\root, <bob@example.com>\n",
        p(),
    )
    .unwrap();
    assert_eq!(
        t.get("all").unwrap().members(),
        vec![
            Member::Program("/usr/bin/prog -a, b > (x)".into()),
            Member::File("/var/log/mail.copy".into()),
            Member::Include("/etc/mail/staff".into()),
            Member::Direct("root".into()),
            Member::Address("bob@example.com".into()),
        ]
    );
}

#[test]
fn errors_name_the_line_and_all_are_collected() {
    let cases: &[(&str, &[(usize, &str)])] = &[
        ("nocolon root\n", &[(1, "missing colon")]),
        ("a: b\nempty:\n", &[(2, "missing value for alias")]),
        (
            "a: b\n\n  stray\n",
            &[(3, "Non-continuation line starts with space")],
        ),
        (
            "bob@oracle.example.test: root\n",
            &[(1, "cannot alias non-local names")],
        ),
        ("q: \"|prog\n", &[(1, "unbalanced")]),
        (
            "q: <a@b, c\nr: (x\n",
            &[(1, "bad address"), (2, "bad address")],
        ),
        (
            "q: :include:\nr: |\n",
            &[(1, "bad address"), (2, "bad address")],
        ),
        ("   \n", &[(1, "Non-continuation")]),
        (
            "x\nok: root\n# c\n y\nz:   \n",
            &[
                (1, "missing colon"),
                (4, "Non-continuation"),
                (5, "missing value"),
            ],
        ),
    ];
    for (text, want) in cases {
        let got = issues(text);
        assert_eq!(got.len(), want.len(), "{text:?}: {got:?}");
        for ((gl, gm), (wl, wm)) in got.iter().zip(want.iter()) {
            assert_eq!(gl, wl, "{text:?}: {gm}");
            assert!(gm.contains(wm), "{text:?}: {gm:?} lacks {wm:?}");
        }
    }
    let e = parse("nocolon\n", p()).unwrap_err().to_string();
    assert!(
        e.starts_with("/etc/mail/aliases: line 1: nocolon... missing colon"),
        "{e}"
    );
}

#[test]
fn duplicates_warn_and_the_last_wins() {
    let t = parse("a: one\nA: two\n", p()).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t.get("a").unwrap().rhs, "two");
    assert_eq!(t.warnings.len(), 1);
    assert_eq!(t.warnings[0].line, 2);
}

#[test]
fn specs() {
    assert_eq!(
        spec_path("/etc/mail/aliases").unwrap(),
        Path::new("/etc/mail/aliases")
    );
    assert_eq!(
        spec_path("hash:/etc/aliases").unwrap(),
        Path::new("/etc/aliases")
    );
    assert_eq!(
        spec_path("hash:-N /etc/aliases").unwrap(),
        Path::new("/etc/aliases")
    );
    assert!(matches!(
        spec_path("ldap:-k uid"),
        Err(AliasError::UnsupportedSpec(_))
    ));
}

fn no_users(_: &str) -> Option<LocalUser> {
    None
}

fn expander(t: &AliasTable) -> Expander<'_> {
    let mut e = Expander::new(t);
    e.users = &no_users;
    e.local_domains = vec!["oracle.example.test".into()];
    e
}

#[test]
fn expansion_of_lists_and_nested_aliases() {
    let t = parse(ORACLE, p()).unwrap();
    let e = expander(&t);
    assert_eq!(e.expand("list"), vec![Target::User("root".into())]);
    assert_eq!(
        e.expand("<list@oracle.example.test>"),
        vec![Target::User("root".into())]
    );
    assert_eq!(e.expand("MAILER-DAEMON"), vec![Target::User("root".into())]);
    assert_eq!(e.expand("nobody"), vec![Target::User("nobody".into())]);
    assert_eq!(
        e.expand("bob@remote.example.test"),
        vec![Target::Remote("bob@remote.example.test".into())]
    );
}

#[test]
fn self_reference_delivers_to_the_user_and_loops_end() {
    let t = parse("me: me, copy@elsewhere.test\na: b\nb: a\n", p()).unwrap();
    let e = expander(&t);
    assert_eq!(
        e.expand("me"),
        vec![
            Target::User("me".into()),
            Target::Remote("copy@elsewhere.test".into())
        ]
    );
    assert_eq!(e.expand("a"), vec![Target::User("a".into())]);
}

#[test]
fn deep_nesting_is_broken_at_max_depth() {
    let text: String = (0..15).map(|i| format!("l{i}: l{}\n", i + 1)).collect();
    let t = parse(&text, p()).unwrap();
    let got = expander(&t).expand("l0");
    match &got[..] {
        [Target::Error { reason, .. }] => {
            assert!(
                reason.contains("aliasing/forwarding loop broken"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    // exactly MAX_DEPTH levels are fine
    let text: String = (0..MAX_DEPTH)
        .map(|i| format!("m{i}: m{}\n", i + 1))
        .collect();
    let t = parse(&text, p()).unwrap();
    assert_eq!(
        expander(&t).expand("m0"),
        vec![Target::User(format!("m{MAX_DEPTH}"))]
    );
}

#[test]
fn include_files_and_include_loops() {
    let dir = tempfile::tempdir().unwrap();
    let inc = dir.path().join("staff");
    fs::write(&inc, "# staff\ncarol, dave\n\"|/bin/true\"\n").unwrap();
    let looped = dir.path().join("loop");
    fs::write(&looped, format!(":include:{}\n", looped.display())).unwrap();
    let text = format!(
        "staff: :include:{}\nloop: :include:{}\nmissing: :include:{}/nope\n",
        inc.display(),
        looped.display(),
        dir.path().display()
    );
    let t = parse(&text, p()).unwrap();
    let e = expander(&t);
    assert_eq!(
        e.expand("staff"),
        vec![
            Target::User("carol".into()),
            Target::User("dave".into()),
            Target::Program("/bin/true".into())
        ]
    );
    assert!(
        matches!(&e.expand("loop")[..], [Target::Error { reason, .. }] if reason == "include loop")
    );
    assert!(
        matches!(&e.expand("missing")[..], [Target::Error { reason, .. }] if reason.starts_with("Cannot open"))
    );
    // a world-writable include is refused
    fs::set_permissions(&inc, fs::Permissions::from_mode(0o666)).unwrap();
    assert!(
        matches!(&e.expand("staff")[..], [Target::Error { reason, .. }] if reason.contains("World writable file"))
    );
}

#[test]
fn dot_forward_is_followed_only_when_safe() {
    let home = tempfile::tempdir().unwrap();
    let fwd = home.path().join(".forward");
    fs::write(&fwd, "# keep a copy\n\\jo, jo@elsewhere.test\n").unwrap();
    fs::set_permissions(&fwd, fs::Permissions::from_mode(0o644)).unwrap();
    let me = nix::unistd::getuid().as_raw();
    let home_path = home.path().to_path_buf();
    let users = move |n: &str| {
        (n == "jo").then(|| LocalUser {
            name: "jo".into(),
            uid: me,
            gid: me,
            home: home_path.clone(),
        })
    };
    let t = AliasTable::default();
    let mut e = Expander::new(&t);
    e.users = &users;
    assert_eq!(
        e.expand("jo"),
        vec![
            Target::User("jo".into()),
            Target::Remote("jo@elsewhere.test".into())
        ]
    );
    fs::set_permissions(&fwd, fs::Permissions::from_mode(0o664)).unwrap();
    assert_eq!(e.expand("jo"), vec![Target::User("jo".into())]);
    e.forward = false;
    fs::set_permissions(&fwd, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(e.expand("jo"), vec![Target::User("jo".into())]);
}

#[test]
fn forward_owned_by_someone_else_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join(".forward");
    fs::write(&f, "x@y.test\n").unwrap();
    let owner = fs::metadata(&f).unwrap().uid();
    assert!(read_safe(&f, Some(owner)).is_ok());
    if owner != 0 {
        // only root-owned files may belong to "someone else"
        assert!(matches!(
            read_safe(&f, Some(owner + 1)),
            Err(ReadSafeError::Unsafe(_))
        ));
    } else {
        assert!(read_safe(&f, Some(12345)).is_ok());
    }
}

#[test]
fn rebuild_writes_a_map_that_load_prefers_and_reports_figures() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("aliases");
    fs::write(&text, ORACLE).unwrap();
    let spec = format!("hash:{}", text.display());
    let stats = rebuild(&spec).unwrap();
    assert_eq!((stats.aliases, stats.longest, stats.total), (5, 11, 70));
    assert_eq!(
        stats.figures_line(),
        format!(
            "{}: 5 aliases, longest 11 bytes, 70 bytes total",
            text.display()
        )
    );
    assert!(
        stats
            .rebuilt_line()
            .starts_with(&format!("alias database {} rebuilt by ", text.display()))
    );
    assert!(stats.db.exists());
    // sendmail's mark of a complete rebuild is in the map, and is no alias
    let raw = crate::mapdb::MapDb::open(&stats.db).unwrap();
    assert_eq!(raw.get(b"@"), Some(&b"@"[..]));
    let from_db = load(&spec).unwrap();
    assert_eq!(entries(&from_db), entries(&parse(ORACLE, &text).unwrap()));

    // the map is used while it is newer than the text: prove it by changing only the map
    let mut t2 = parse("only: indb\n", &text).unwrap();
    t2.warnings.clear();
    fs::write(&stats.db, encode_db(&t2)).unwrap();
    assert!(load(&spec).unwrap().get("only").is_some());

    // a corrupt map is ignored: the text is read
    let mut bytes = fs::read(&stats.db).unwrap();
    let n = bytes.len();
    bytes[n - 6] ^= 0xff;
    fs::write(&stats.db, &bytes).unwrap();
    assert!(load(&spec).unwrap().get("list").is_some());

    // a text newer than the map wins
    fs::write(&stats.db, encode_db(&t2)).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(&stats.db)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert!(load(&spec).unwrap().get("only").is_none());
}

/// As sendmail's newaliases: the good entries of a file with bad lines are built, the bad
/// ones reported (tests/differential 37-newaliases-bad-lines).
#[test]
fn rebuild_builds_the_good_entries_of_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("aliases");
    fs::write(&text, "good: root\nbad\n: nobody\n").unwrap();
    let stats = rebuild(text.to_str().unwrap()).unwrap();
    assert_eq!(stats.aliases, 1);
    assert_eq!(
        stats.errors.iter().map(|e| e.line).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(
        stats.errors[0].sendmail_words(),
        format!("{}: line 2: missing colon", text.display())
    );
    assert_eq!(
        stats.errors[1].sendmail_words(),
        format!("{}: line 3: : nobody... illegal alias name", text.display())
    );
    assert!(load(text.to_str().unwrap()).unwrap().get("good").is_some());
}

#[test]
fn missing_alias_file_is_an_empty_table_for_load_but_an_error_for_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("none");
    assert!(load(text.to_str().unwrap()).unwrap().is_empty());
    assert!(matches!(
        rebuild(text.to_str().unwrap()),
        Err(AliasError::Io { .. })
    ));
}

fn file_logger(dir: &Path, level: u32) -> (Logger, PathBuf) {
    let path = dir.join("maillog");
    let logger = Logger::new(crate::log::LogConfig {
        level,
        syslog: false,
        file: Some(path.clone()),
        ..Default::default()
    })
    .unwrap();
    (logger, path)
}

#[test]
fn alias_lines_are_logged_above_level_10() {
    let dir = tempfile::tempdir().unwrap();
    let t = parse(ORACLE, p()).unwrap();
    for (level, want) in [(14, true), (10, false)] {
        let (logger, path) = file_logger(dir.path(), level);
        let mut e = expander(&t);
        e.log = Some((&logger, Some("6AO7QsIw026975")));
        e.expand("<list@oracle.example.test>");
        let log = fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            log.contains("6AO7QsIw026975: alias <list@oracle.example.test> => root, alice"),
            want,
            "{log}"
        );
        assert_eq!(
            log.contains("6AO7QsIw026975: alias alice => root"),
            want,
            "{log}"
        );
        let _ = fs::remove_file(&path);
    }
}

#[test]
fn an_unsafe_forward_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let fwd = dir.path().join(".forward");
    fs::write(&fwd, "elsewhere@x.test\n").unwrap();
    fs::set_permissions(&fwd, fs::Permissions::from_mode(0o666)).unwrap();
    let home = dir.path().to_path_buf();
    let users = move |n: &str| {
        Some(LocalUser {
            name: n.into(),
            uid: 0,
            gid: 0,
            home: home.clone(),
        })
    };
    let (logger, path) = file_logger(dir.path(), 14);
    let t = AliasTable::default();
    let mut e = Expander::new(&t);
    e.users = &users;
    e.log = Some((&logger, None));
    assert_eq!(e.expand("jo"), vec![Target::User("jo".into())]);
    let log = fs::read_to_string(&path).unwrap();
    assert!(
        log.contains(&format!("forward {}: World writable file", fwd.display())),
        "{log}"
    );
}

#[test]
fn rebuild_stats_are_logged_like_sendmail() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("aliases");
    fs::write(&text, ORACLE).unwrap();
    let stats = rebuild(text.to_str().unwrap()).unwrap();
    let (logger, path) = file_logger(dir.path(), 9);
    stats.log(&logger);
    let log = fs::read_to_string(&path).unwrap();
    assert!(
        log.contains(&format!("alias database {} rebuilt by ", text.display())),
        "{log}"
    );
    assert!(log.contains(&format!(
        "{}: 5 aliases, longest 11 bytes, 70 bytes total",
        text.display()
    )));
}

#[test]
fn transient_read_errors_are_told_apart() {
    use nix::libc::{EACCES, EAGAIN, EIO, ENOSPC};
    for (errno, transient) in [(EIO, true), (EAGAIN, true), (ENOSPC, true), (EACCES, false)] {
        let e = ReadSafeError::io(&std::io::Error::from_raw_os_error(errno));
        assert_eq!(e.is_transient(), transient, "errno {errno}");
    }
    assert!(!ReadSafeError::Missing.is_transient());
    assert!(!ReadSafeError::Unsafe("x".into()).is_transient());
}

#[test]
fn an_unreadable_include_is_a_permanent_error_with_5_3_0() {
    let t = parse("x: :include:/nonexistent/dir/list\n", p()).unwrap();
    match &expander(&t).expand("x")[..] {
        [
            Target::Error {
                dsn,
                temporary,
                reason,
                ..
            },
        ] => {
            assert_eq!((dsn.as_str(), *temporary), ("5.3.0", false));
            assert!(reason.contains("/nonexistent/dir/list"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn newaliases_prints_figures_and_reports_every_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("aliases");
    let bad = dir.path().join("bad");
    fs::write(&good, ORACLE).unwrap();
    fs::write(&bad, "x: y\nnocolon\n  stray\n").unwrap();
    let (logger, _) = file_logger(dir.path(), 9);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_newaliases(&[good.display().to_string()], &logger, &mut out, &mut err);
    assert_eq!(code, crate::sysexits::EX_OK);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "{}: 5 aliases, longest 11 bytes, 70 bytes total\n",
            good.display()
        )
    );
    let (mut out, mut err2) = (Vec::new(), Vec::new());
    let code = run_newaliases(
        &[
            format!("hash:{}", bad.display()),
            good.display().to_string(),
        ],
        &logger,
        &mut out,
        &mut err2,
    );
    assert_eq!(code, crate::sysexits::EX_SOFTWARE);
    let err2 = String::from_utf8(err2).unwrap();
    assert!(
        err2.contains(&format!("{}: line 2: missing colon\n", bad.display())),
        "sendmail's words on the terminal: {err2}"
    );
    assert!(
        err2.contains(&format!("{}: line 3: Non-continuation", bad.display())),
        "{err2}"
    );
    assert!(
        db_path(&bad).exists(),
        "its good entry is built, as sendmail does"
    );
    assert_eq!(
        String::from_utf8(out).unwrap().lines().count(),
        2,
        "both files are rebuilt"
    );
    assert!(err.is_empty());
}

#[test]
fn continuation_lines_of_a_refused_entry_are_reported_as_stray() {
    // sendmail reports the bad first line, then the first of its continuation lines
    assert_eq!(
        issues("nocolon\n  a,\n  b\nbob@x.test: y\n\tz\nok: fine\n")
            .into_iter()
            .map(|(l, m)| (
                l,
                m.split("...")
                    .last()
                    .unwrap()
                    .trim()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string()
            ))
            .collect::<Vec<_>>(),
        vec![
            (1, "missing".to_string()),
            (2, "Non-continuation".to_string()),
            (4, "cannot".to_string()),
            (5, "Non-continuation".to_string()),
        ]
    );
}

#[test]
fn arbitrary_input_never_panics() {
    // a fixed pseudo-random walk over bytes that matter to the syntax
    let alphabet = b"ab@:,\"|/\\<>() \t\n#\r:include:\xc3\xa9";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        let len = (x % 60) as usize;
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(alphabet[(x % alphabet.len() as u64) as usize]);
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(t) = parse(&text, p()) {
            let e = expander(&t);
            for a in t.iter() {
                let _ = e.expand(&a.name);
            }
            let _ = encode_db(&t);
        }
        let _ = split_members(&text);
        let _ = spec_path(&text);
    }
}

/// What a compiled map keeps of a table: each lower-cased name and its right-hand side.
fn entries(t: &AliasTable) -> Vec<(String, String)> {
    let mut v: Vec<_> = t
        .iter()
        .map(|a| (a.name.to_ascii_lowercase(), a.rhs.clone()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_damaged_map_is_refused_never_misread() {
    let t = parse(ORACLE, p()).unwrap();
    let good = encode_db(&t);
    assert_eq!(
        entries(&super::db::decode_db(&good, p()).unwrap()),
        entries(&t)
    );
    for cut in 0..good.len() {
        assert!(
            super::db::decode_db(&good[..cut], p()).is_err(),
            "cut at {cut}"
        );
    }
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x5a;
        assert!(super::db::decode_db(&bad, p()).is_err(), "flip at {i}");
    }
}

#[test]
fn targets_carry_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    let me = nix::unistd::geteuid().as_raw();
    let home = dir.path().join("jo");
    fs::create_dir(&home).unwrap();
    fs::write(
        home.join(".forward"),
        "\"|/usr/bin/vacation jo\", /tmp/jo.copy\n",
    )
    .unwrap();
    let inc = dir.path().join("staff");
    fs::write(&inc, "/tmp/staff.copy\n").unwrap();
    if me == 0 {
        std::os::unix::fs::chown(&inc, Some(4242), Some(4243)).unwrap();
    }
    let home2 = home.clone();
    let users = move |n: &str| {
        (n == "jo").then(|| LocalUser {
            name: "jo".into(),
            uid: me,
            gid: me,
            home: home2.clone(),
        })
    };
    let t = parse(
        &format!("team: jo, \"|/bin/archive\", :include:{}\n", inc.display()),
        p(),
    )
    .unwrap();
    let mut e = Expander::new(&t);
    e.users = &users;
    let got = e.expand_owned("team");
    let owner_of = |t: Target| {
        got.iter()
            .find(|(x, _)| *x == t)
            .unwrap_or_else(|| panic!("{t:?} in {got:?}"))
            .1
            .as_ref()
            .map(|u| u.uid)
    };
    assert_eq!(
        owner_of(Target::Program("/usr/bin/vacation jo".into())),
        Some(me)
    );
    assert_eq!(owner_of(Target::File("/tmp/jo.copy".into())), Some(me));
    assert_eq!(owner_of(Target::Program("/bin/archive".into())), None);
    let inc_owner = owner_of(Target::File("/tmp/staff.copy".into()));
    assert_eq!(inc_owner, if me == 0 { Some(4242) } else { Some(me) });
}

#[test]
fn a_running_daemon_sees_an_alias_newaliases_just_added() {
    let d = tempfile::tempdir().unwrap();
    let text = d.path().join("aliases");
    fs::write(&text, "postmaster: root\n").unwrap();
    let spec = text.display().to_string();
    rebuild(&spec).unwrap();
    let live = LiveAliases::new(
        std::slice::from_ref(&spec),
        load_all(std::slice::from_ref(&spec)).unwrap(),
    );
    assert!(live.current().get("newlist").is_none());
    fs::write(&text, "postmaster: root\nnewlist: root\n").unwrap();
    rebuild(&spec).unwrap();
    assert!(live.current().get("newlist").is_some());
    // unchanged files: the same table, not read again
    assert!(std::sync::Arc::ptr_eq(&live.current(), &live.current()));
}

#[test]
fn forward_path_tries_each_file_in_turn_with_home_user_and_host() {
    let home = tempfile::tempdir().unwrap();
    let me = nix::unistd::getuid().as_raw();
    let home_path = home.path().to_path_buf();
    let users = move |n: &str| {
        (n == "jo").then(|| LocalUser {
            name: "jo".into(),
            uid: me,
            gid: me,
            home: home_path.clone(),
        })
    };
    // Debian's ForwardPath, with $w = mta.
    let cf = crate::config::Config::from_str(
        "t.cf",
        "Dwmta\nO ForwardPath=$z/.forward.$w:$z/.forward\n",
        &[],
    )
    .unwrap();
    let t = AliasTable::default();
    let mut e = Expander::from_config(&t, &cf);
    e.users = &users;
    let write = |name: &str, text: &str| {
        let p = home.path().join(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    };
    assert_eq!(e.expand("jo"), vec![Target::User("jo".into())]);
    write(".forward", "jo@second.test\n");
    assert_eq!(
        e.expand("jo"),
        vec![Target::Remote("jo@second.test".into())]
    );
    write(".forward.mta", "jo@first.test\n");
    assert_eq!(e.expand("jo"), vec![Target::Remote("jo@first.test".into())]);
    // An unsafe first file is passed over for the next, as sendmail's forward() does.
    fs::set_permissions(
        home.path().join(".forward.mta"),
        fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    assert_eq!(
        e.expand("jo"),
        vec![Target::Remote("jo@second.test".into())]
    );
    // $u, and an empty ForwardPath (submit.cf's `O ForwardPath`): no forwarding at all.
    let cf = crate::config::Config::from_str(
        "t.cf",
        &format!("O ForwardPath={}/fwd-$u\n", home.path().display()),
        &[],
    )
    .unwrap();
    write("fwd-jo", "jo@third.test\n");
    let mut e = Expander::from_config(&t, &cf);
    e.users = &users;
    assert_eq!(e.expand("jo"), vec![Target::Remote("jo@third.test".into())]);
    let cf = crate::config::Config::from_str("t.cf", "O ForwardPath\n", &[]).unwrap();
    let mut e = Expander::from_config(&t, &cf);
    e.users = &users;
    assert_eq!(e.expand("jo"), vec![Target::User("jo".into())]);
}
