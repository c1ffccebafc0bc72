//! From a queued message and a recipient to mailboxes, files and programs, the way the
//! queue runner will do it: `newaliases`, load the map, expand, deliver each local target.
//! Temp directories only; users come from a lookup table, not /etc/passwd.

use std::fs;
use std::path::{Path, PathBuf};

use sendmail_rs::aliases::{self, Expander, LocalUser, Target};
use sendmail_rs::config::{Config, DEFAULT_CF};
use sendmail_rs::deliver::local::{Delivery, LocalDelivery, MailUser, Outcome};
use sendmail_rs::queue::{Envelope, Message, QueueId, Recipient};

fn config() -> Config {
    let cf = format!("{DEFAULT_CF}\nDjmx.example.test\nCwmx.example.test\n");
    Config::from_str("test.cf", &cf, &[]).expect("default cf parses")
}

fn message(sender: &str, rcpt: &str) -> Message {
    let mut env = Envelope::new(QueueId::new("6AO7QsIw026975").unwrap(), sender);
    env.recipients.push(Recipient::new(rcpt));
    Message {
        envelope: env,
        body: b"Subject: team news\nFrom: boss@example.test\n\nFrom now on, Fridays off.\n"
            .to_vec(),
    }
}

fn home(root: &Path, name: &str) -> PathBuf {
    root.join("home").join(name)
}

#[test]
fn a_list_reaches_mailboxes_a_file_and_a_program() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let spool = root.join("spool");
    fs::create_dir_all(&spool).unwrap();
    for u in ["jo", "kim"] {
        fs::create_dir_all(home(&root, u)).unwrap();
    }
    let archive = root.join("archive.mbox");
    let piped = root.join("piped.txt");
    let alias_file = root.join("aliases");
    fs::write(
        &alias_file,
        format!(
            "# team\nteam: jo, kim@mx.example.test,\n\t{},\n\t\"|cat > {}\",\n\tfriend@elsewhere.test\nowner-team: jo\n",
            archive.display(),
            piped.display()
        ),
    )
    .unwrap();

    // newaliases
    let spec = format!("hash:{}", alias_file.display());
    let stats = aliases::rebuild(&spec).unwrap();
    assert_eq!(stats.aliases, 2);
    let table = aliases::load_all(&[spec]).unwrap();

    // expansion
    let cfg = config();
    let users_root = root.clone();
    let users = move |n: &str| {
        ["jo", "kim"].contains(&n).then(|| LocalUser {
            name: n.into(),
            uid: 0,
            gid: 0,
            home: home(&users_root, n),
        })
    };
    let mut expander = Expander::from_config(&table, &cfg);
    expander.users = &users;
    let msg = message("boss@example.test", "team@mx.example.test");
    let owned = expander.expand_owned(&msg.envelope.recipients[0].address);
    assert!(
        owned.iter().all(|(_, owner)| owner.is_none()),
        "all from the system file"
    );
    let targets: Vec<Target> = owned.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(
        targets,
        vec![
            Target::User("jo".into()),
            Target::User("kim".into()),
            Target::File(archive.clone()),
            Target::Program(format!("cat > {}", piped.display())),
            Target::Remote("friend@elsewhere.test".into()),
        ]
    );
    assert_eq!(table.owner("team").as_deref(), Some("owner-team"));

    // delivery of the local ones
    let users_root = root.clone();
    let agent = LocalDelivery {
        spool_dir: spool.clone(),
        users: Box::new(move |n| {
            ["jo", "kim"].contains(&n).then(|| MailUser {
                name: n.into(),
                uid: 0,
                gid: 0,
                home: home(&users_root, n),
            })
        }),
        // the program writes into our temp dir: keep the current user for it
        default_user: None,
        // the built-in mbox delivery (the cf's Mlocal names procmail, which a cf read from a
        // file would run, and defer if it is not installed)
        mailer: None,
        ..LocalDelivery::from_config(&cfg)
    };
    let d = Delivery::from_message(&msg);
    for (t, owner) in &owned {
        let outcome = agent.deliver(t, owner.as_ref(), &d);
        match t {
            Target::Remote(_) => assert!(matches!(outcome, Outcome::Permanent { .. })),
            _ => assert_eq!(
                (outcome.dsn(), outcome.stat()),
                ("2.0.0", "Sent".into()),
                "{t:?}"
            ),
        }
    }
    for mbox in [spool.join("jo"), spool.join("kim"), archive] {
        let text = fs::read_to_string(&mbox).unwrap();
        assert!(text.starts_with("From boss@example.test "), "{text}");
        assert!(text.contains("\nReturn-Path: <boss@example.test>\nSubject: team news\n"));
        assert!(text.ends_with("\n>From now on, Fridays off.\n\n"), "{text}");
    }
    assert_eq!(fs::read(&piped).unwrap(), msg.body);
}

#[test]
fn an_unknown_user_bounces_with_sendmails_status() {
    let dir = tempfile::tempdir().unwrap();
    let agent = LocalDelivery {
        spool_dir: dir.path().to_path_buf(),
        users: Box::new(|_| None),
        ..LocalDelivery::default()
    };
    let msg = message("", "ghost");
    let o = agent.deliver(
        &Target::User("ghost".into()),
        None,
        &Delivery::from_message(&msg),
    );
    assert_eq!((o.dsn(), o.stat()), ("5.1.1", "User unknown".to_string()));
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
}

#[test]
fn the_runner_helper_delivers_a_recipient_and_reports_one_outcome() {
    use sendmail_rs::deliver::local::deliver_recipient;
    let dir = tempfile::tempdir().unwrap();
    let table = aliases::parse(
        "all: jo, ghost, far@away.test\nboth: jo, kim\n",
        Path::new("aliases"),
    )
    .unwrap();
    let none = |_: &str| None;
    let mut expander = Expander::new(&table);
    expander.users = &none;
    let agent = LocalDelivery {
        spool_dir: dir.path().to_path_buf(),
        users: Box::new(|n| {
            ["jo", "kim"].contains(&n).then(|| MailUser {
                name: n.into(),
                uid: 0,
                gid: 0,
                home: "/".into(),
            })
        }),
        ..LocalDelivery::default()
    };
    let msg = message("boss@example.test", "all");
    let r = deliver_recipient(&agent, &expander, "all", &msg);
    assert_eq!(r.remote, vec!["far@away.test".to_string()]);
    assert_eq!(r.results.len(), 2);
    assert_eq!(r.results[0].1, Outcome::Delivered);
    assert_eq!(r.combined(), Outcome::user_unknown());
    let r = deliver_recipient(&agent, &expander, "both", &msg);
    assert_eq!(r.combined(), Outcome::Delivered);
    let jo = fs::read_to_string(dir.path().join("jo")).unwrap();
    assert!(jo.starts_with("From boss@example.test "));
    assert_eq!(jo.matches("\nFrom boss@example.test ").count(), 1);
    assert_eq!(jo.matches("\n>From now on").count(), 2);
    assert_eq!(jo.matches("\nFrom now on").count(), 0);
}
