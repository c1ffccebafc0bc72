//! Durable expansion: a local recipient → its aliases' and `.forward`'s targets, recorded in
//! the queue before any of them is delivered.
//!
//! In: a pending envelope recipient that routes to the `local` mailer, and the recipients
//! the message has already. Out: an [`Expansion`]: deliver it as it is (no alias, no
//! `.forward`), or its targets as new recipients (each marked [`Expanded`], with its parent
//! and owner), or a deferral when the expansion could not be completed (a `.forward` that
//! could not be read for a passing reason: nothing is recorded, it is expanded again later).
//!
//! Recorded targets are delivered on their own, each with its own state: a retry delivers
//! only the ones still pending, and never re-expands — sendmail's queue file likewise keeps
//! every expanded address (`QS_EXPANDED` parents, their children with `ctladdr`s; deliver.c,
//! recipient.c). A target is written as sendmail writes it: a user name, `/file`,
//! `|program`, or the remote address, which then goes the remote way.
//!
//! The log lines match the oracle (sendmail 8.17.1.9, alias `fwd: bob@remote.example.test,
//! /…/fwd.mbox, root`, run in a private namespace on 2026-12-02): `to=root, delay=…,
//! mailer=local, …`; `to=/…/fwd.mbox, ctladdr=<fwd@oracle.example.test> (1/0), delay=…,
//! mailer=*file*, …`; `to=bob@remote.example.test, delay=…, mailer=relay, relay=…` — the
//! target without angle brackets, a `ctladdr` only for files and programs. sendmail expands
//! at RCPT time (its `from=` line then counts `nrcpts=3`, and a member that is no user fails
//! the RCPT); we expand at the first delivery attempt, so `nrcpts=` counts the envelope.

use crate::aliases::{Expander, Target};
use crate::config::Config;
use crate::log::Logger;
use crate::queue::{DeliveryState, Expanded, Recipient};

/// What to do with one local recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expansion {
    /// Nothing to expand: deliver to this user's mailbox.
    Direct,
    /// These recipients replace it (a permanent expansion error is a target already
    /// failed, for the bounce).
    Targets(Vec<Recipient>),
    /// Try the expansion again later (the `stat=` reason).
    Deferred { dsn: String, reason: String },
}

/// Expands `user` (ruleset 0's `$:` for recipient `parent`) through the aliases file and
/// `.forward`s. Targets already among `existing` expansions are left out, and so is a user
/// whom `direct` (the local users the message's recipients name, lower case) already names:
/// each address is delivered once per message, as sendmail's duplicate suppression does
/// (`root` and an alias `alice: root` as recipients: one delivery to root). `default_user`:
/// `DefaultUser` as the runtime resolved it (None: looked up here); `log`: the logger and
/// the queue id. Blocking.
pub fn expand(
    cfg: &Config,
    default_user: Option<(u32, u32)>,
    log: (&Logger, &str),
    parent: &Recipient,
    user: &str,
    existing: &[Recipient],
    direct: &[String],
) -> Expansion {
    let table = match crate::aliases::load_all(&cfg.options.alias_files) {
        Ok(t) => t,
        Err(e) => {
            return Expansion::Deferred {
                dsn: "4.3.0".into(),
                reason: format!("aliases: {e}"),
            };
        }
    };
    let ids = default_user.unwrap_or_else(|| crate::aliases::default_user(cfg));
    let mut expander = Expander::from_config_as(&table, cfg, ids);
    expander.log = Some((log.0, Some(log.1)));
    let targets = expander.expand_owned(user);
    if let [(Target::User(name), None)] = targets.as_slice()
        && name.eq_ignore_ascii_case(user)
    {
        return Expansion::Direct;
    }
    let mut out: Vec<Recipient> = Vec::new();
    for (target, owner) in targets {
        let mut r = Recipient::new(match &target {
            Target::User(name) => name.clone(),
            Target::File(path) => path.display().to_string(),
            Target::Program(cmd) => format!("|{cmd}"),
            Target::Remote(addr) => addr.clone(),
            Target::Error { address, .. } => address.clone(),
        });
        if let Target::Error {
            reason,
            dsn,
            temporary,
            ..
        } = &target
        {
            if *temporary {
                return Expansion::Deferred {
                    dsn: dsn.clone(),
                    reason: reason.clone(),
                };
            }
            r.state = DeliveryState::Failed;
            r.status = Some(reason.clone());
        }
        r.notify = parent.notify;
        r.orcpt = parent.orcpt.clone();
        r.expanded = Some(Expanded {
            parent: parent.address.clone(),
            owner: owner.map(|u| u.name),
        });
        let dup = |o: &Recipient| o.expanded.is_some() && o.address == r.address;
        let named = matches!(&target, Target::User(n)
            if !n.eq_ignore_ascii_case(user) && direct.contains(&n.to_lowercase()));
        if !named && !existing.iter().any(dup) && !out.iter().any(dup) {
            out.push(r);
        }
    }
    Expansion::Targets(out)
}

/// `MeToo=false`: the sender is left out of the expansions it is a member of (sendmail's
/// `sendall` marks the envelope sender `QS_SENDER` and re-adds it, so an expanded copy of it
/// is dropped, silently: no `to=` line). `sender_user` is the local user the envelope sender
/// routes to. An envelope recipient naming the sender itself is kept (the oracle: `-O
/// MeToo=false -f daemon daemon root` delivers to both), and so is `root`: the oracle
/// delivers `-f root list` (`list: root, daemon`) to root too.
pub fn drop_sender(targets: &mut Vec<Recipient>, sender_user: &str) {
    if sender_user.eq_ignore_ascii_case("root") {
        return;
    }
    targets.retain(|t| {
        !(target_mailer(t) == Some("local")
            && t.address
                .trim_start_matches('\\')
                .eq_ignore_ascii_case(sender_user))
    });
}

/// The mailer an expanded target goes to without routing: `prog` for `|program`, `*file*`
/// for `/file`, `local` for a user name; None for an address (it is routed as usual).
pub fn target_mailer(r: &Recipient) -> Option<&'static str> {
    r.expanded.as_ref()?;
    let a = r.address.as_str();
    if a.starts_with('|') {
        Some("prog")
    } else if a.starts_with('/') {
        Some("*file*")
    } else if a.contains('@') {
        None
    } else {
        Some("local")
    }
}

/// The local target an expanded recipient names (for [`target_mailer`]'s mailers).
pub fn target_of(r: &Recipient) -> Target {
    let a = r.address.as_str();
    match a.strip_prefix('|') {
        Some(cmd) => Target::Program(cmd.to_string()),
        None if a.starts_with('/') => Target::File(a.into()),
        None => Target::User(a.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_with_aliases(text: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aliases");
        std::fs::write(&path, text).unwrap();
        let cfg = Config::from_str(
            "t.cf",
            &format!("Djmta.example.test\nO AliasFile={}\n", path.display()),
            &[],
        )
        .unwrap();
        (dir, cfg)
    }

    #[test]
    fn an_alias_becomes_its_targets_each_naming_its_parent() {
        let (_d, cfg) = cfg_with_aliases(
            "list: nosuchuser-direct, bob@remote.example, /tmp/x.mbox, \"|/bin/cat\"\n",
        );
        let parent = Recipient::new("list@mta.example.test");
        let log = Logger::stderr(0);
        let Expansion::Targets(t) = expand(&cfg, None, (&log, "Q1"), &parent, "list", &[], &[])
        else {
            panic!("not expanded");
        };
        let addrs: Vec<&str> = t.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(
            addrs,
            [
                "nosuchuser-direct",
                "bob@remote.example",
                "/tmp/x.mbox",
                "|/bin/cat"
            ]
        );
        assert!(
            t.iter()
                .all(|r| r.expanded.as_ref().unwrap().parent == parent.address)
        );
        let mailers: Vec<_> = t.iter().map(target_mailer).collect();
        assert_eq!(mailers, [Some("local"), None, Some("*file*"), Some("prog")]);
        assert_eq!(target_of(&t[3]), Target::Program("/bin/cat".into()));
    }

    #[test]
    fn a_plain_user_is_delivered_directly_and_duplicates_once() {
        let (_d, cfg) = cfg_with_aliases("a: root\nb: root, carol@remote.example\n");
        let log = Logger::stderr(0);
        let direct = expand(
            &cfg,
            None,
            (&log, "Q1"),
            &Recipient::new("root"),
            "root",
            &[],
            &[],
        );
        assert_eq!(direct, Expansion::Direct);
        let Expansion::Targets(first) = expand(
            &cfg,
            None,
            (&log, "Q1"),
            &Recipient::new("a"),
            "a",
            &[],
            &[],
        ) else {
            panic!()
        };
        let Expansion::Targets(second) = expand(
            &cfg,
            None,
            (&log, "Q1"),
            &Recipient::new("b"),
            "b",
            &first,
            &[],
        ) else {
            panic!()
        };
        let addrs: Vec<&str> = second.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(addrs, ["carol@remote.example"], "root is had once");
    }

    #[test]
    fn without_me_too_the_sender_is_dropped_from_its_own_lists_but_root_is_not() {
        // The oracle (sendmail 8.17.1.9, `-odi -O MeToo=false`, aliases `list: root, daemon`):
        // `-f daemon list` delivers to root only; `-f root list` to both.
        let (_d, cfg) = cfg_with_aliases("list: root, daemon, daemon@remote.example\n");
        let log = Logger::stderr(0);
        let parent = Recipient::new("list");
        let Expansion::Targets(all) = expand(&cfg, None, (&log, "Q1"), &parent, "list", &[], &[])
        else {
            panic!()
        };
        let mut t = all.clone();
        drop_sender(&mut t, "daemon");
        let addrs: Vec<&str> = t.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(addrs, ["root", "daemon@remote.example"]);
        let mut t = all.clone();
        drop_sender(&mut t, "root");
        assert_eq!(t, all);
    }

    #[test]
    fn an_alias_target_the_message_names_itself_is_left_out() {
        // sendmail (the oracle, tests/data/oracle-issue16.txt): RCPT root and RCPT alice
        // (`alice: root`) are nrcpts=2 and one delivery to root.
        let (_d, cfg) = cfg_with_aliases("alice: root, carol@remote.example\n");
        let log = Logger::stderr(0);
        let direct = ["root".to_string()];
        let Expansion::Targets(t) = expand(
            &cfg,
            None,
            (&log, "Q1"),
            &Recipient::new("alice"),
            "alice",
            &[],
            &direct,
        ) else {
            panic!()
        };
        let addrs: Vec<&str> = t.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(addrs, ["carol@remote.example"]);
    }
}
