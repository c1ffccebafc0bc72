//! The session's side of content filters: each command that filters must see waits for
//! their verdict ([`Action::Filter`] → [`Session::filtered`]) before it is answered.

use super::*;
use crate::smtp::filter::{FilterCall, FilterVerdict};

fn filtered_session() -> Session {
    let mut s = Session::new(oracle_ctx());
    assert_eq!(s.enable_filters(), FilterCall::Connect);
    s
}

/// The filter calls among `actions`.
fn calls(actions: &[Action]) -> Vec<FilterCall> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Filter(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn each_command_waits_for_the_filters_before_its_reply() {
    let mut s = filtered_session();
    assert!(s.filtered(FilterVerdict::Continue).is_empty());
    assert!(s.greeting().to_string().starts_with("220 "));
    let a = s.handle(b"EHLO client.example.test", false);
    assert_eq!(
        calls(&a),
        [FilterCall::Helo {
            name: "client.example.test".into(),
            macros: Vec::new(),
        }]
    );
    assert!(replies(&a).is_empty(), "no reply before the verdict");
    assert!(replies(&s.filtered(FilterVerdict::Continue))[0].starts_with("250-"));
    let a = s.handle(b"MAIL FROM:<a@client.example.test> SIZE=10", false);
    let calls_made = calls(&a);
    let [FilterCall::Mail { args, .. }] = calls_made.as_slice() else {
        panic!("{a:?}");
    };
    assert_eq!(*args, ["<a@client.example.test>", "SIZE=10"]);
    assert_eq!(
        replies(&s.filtered(FilterVerdict::Continue)),
        ["250 2.1.0 <a@client.example.test>... Sender ok"]
    );
    let a = s.handle(b"RCPT TO:<b@remote.example.test>", false);
    assert_eq!(
        calls(&a),
        [FilterCall::Rcpt {
            args: vec!["<b@remote.example.test>".into()],
            rejected: false
        }]
    );
    let refusal = Reply::new(550, Some("5.7.1"), "Command rejected");
    assert_eq!(
        replies(&s.filtered(FilterVerdict::Refuse(refusal))),
        ["550 5.7.1 <b@remote.example.test>... Command rejected"]
    );
    // Refused: DATA has no recipient.
    assert_eq!(talk(&mut s, &["DATA"]), ["503 5.0.0 Need RCPT (recipient)"]);
    s.handle(b"RCPT TO:<c@remote.example.test>", false);
    s.filtered(FilterVerdict::Continue);
    let a = s.handle(b"DATA", false);
    assert_eq!(calls(&a), [FilterCall::Data]);
    let a = s.filtered(FilterVerdict::Continue);
    assert!(replies(&a)[0].starts_with("354 "));
    assert!(s.wants_data());
}

#[test]
fn a_refused_sender_leaves_no_transaction() {
    let mut s = filtered_session();
    s.filtered(FilterVerdict::Continue);
    s.handle(b"HELO client.example.test", false);
    s.filtered(FilterVerdict::Continue);
    s.handle(b"MAIL FROM:<a@client.example.test>", false);
    let r = Reply::new(451, Some("4.3.2"), "Please try again later");
    assert_eq!(
        replies(&s.filtered(FilterVerdict::Refuse(r))),
        ["451 4.3.2 Please try again later"]
    );
    assert_eq!(
        talk(&mut s, &["RCPT TO:<b@remote.example.test>"]),
        ["503 5.0.0 Need MAIL before RCPT"]
    );
}

#[test]
fn refused_at_connect_the_greeting_is_554_and_commands_are_refused() {
    let mut s = filtered_session();
    s.filtered(FilterVerdict::Refuse(crate::smtp::reply::command_rejected()));
    assert_eq!(
        s.greeting().to_string().trim_end(),
        "554 oracle.example.test ESMTP not accepting messages"
    );
    let a = s.handle(b"MAIL FROM:<a@client.example.test>", false);
    assert!(calls(&a).is_empty(), "no filter after the refusal");
    assert_eq!(replies(&a), ["550 5.0.0 Command rejected"]);
}

#[test]
fn shut_down_by_a_filter_the_session_closes_with_its_421() {
    let mut s = filtered_session();
    let r = crate::smtp::reply::milter_shutdown("oracle.example.test");
    s.filtered(FilterVerdict::Shutdown(r));
    assert_eq!(
        s.greeting().to_string().trim_end(),
        "421 4.7.0 oracle.example.test closing connection"
    );
    assert!(s.is_closed());
    let mut s = filtered_session();
    s.filtered(FilterVerdict::Continue);
    s.handle(b"HELO client.example.test", false);
    s.filtered(FilterVerdict::Continue);
    s.handle(b"MAIL FROM:<a@client.example.test>", false);
    let r = Reply::new(421, Some("4.3.0"), "closing connection");
    let a = s.filtered(FilterVerdict::Shutdown(r));
    assert_eq!(replies(&a), ["421 4.3.0 closing connection"]);
    assert!(s.is_closed());
}

#[test]
fn rset_tells_the_filters_and_refused_recipients_are_only_told() {
    let mut s = filtered_session();
    s.filtered(FilterVerdict::Continue);
    s.handle(b"HELO client.example.test", false);
    s.filtered(FilterVerdict::Continue);
    s.handle(b"MAIL FROM:<a@client.example.test>", false);
    s.filtered(FilterVerdict::Continue);
    let a = s.handle(b"RCPT TO:<nosuchuser@oracle.example.test>", false);
    assert_eq!(
        calls(&a),
        [FilterCall::Rcpt {
            args: vec!["<nosuchuser@oracle.example.test>".into()],
            rejected: true
        }]
    );
    assert!(replies(&a)[0].starts_with("550 5.1.1"), "answered at once");
    let a = s.handle(b"RSET", false);
    assert_eq!(calls(&a), [FilterCall::Abort]);
    assert_eq!(replies(&a), ["250 2.0.0 Reset state"]);
}
