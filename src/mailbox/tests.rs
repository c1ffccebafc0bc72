use super::*;

fn name(d: &str) -> Option<Domain> {
    Some(Domain::Name(d.to_string()))
}

fn invalid(d: &str) -> Option<Domain> {
    Some(Domain::Invalid(d.to_string()))
}

/// Every relay form of issue 16 item 1: (address, local part, kind, domain, names another
/// host in its local part).
#[test]
fn every_form_has_one_local_part_and_one_domain() {
    use LocalKind::*;
    let v4 = |s: &str| Some(Domain::Literal(s.parse().unwrap()));
    #[rustfmt::skip]
    let table: &[(&str, &str, LocalKind, Option<Domain>, bool)] = &[
        // quoted local parts: no domain, the @ inside is the local part's
        ("<\"relaytest@foreign.example.net\">", "relaytest@foreign.example.net", User, None, true),
        ("\"relaytest@foreign.example.net\"", "relaytest@foreign.example.net", User, None, true),
        ("<\"relaytest@foreign.example.net\"@mta.example.test>", "relaytest@foreign.example.net", User, name("mta.example.test"), true),
        ("<\"relaytest\"@foreign.example.net>", "relaytest", User, name("foreign.example.net"), false),
        ("<\"root\">", "root", User, None, false),
        ("<\"relaytest@foreign.example.net\"(c)>", "relaytest@foreign.example.net", User, None, true),
        // % and ! hacks
        ("<relaytest%foreign.example.net>", "relaytest%foreign.example.net", User, None, true),
        ("<relaytest%foreign.example.net@mta.example.test>", "relaytest%foreign.example.net", User, name("mta.example.test"), true),
        ("<foreign.example.net!relaytest>", "foreign.example.net!relaytest", User, None, true),
        ("<relaytest@foreign.example.net%mta.example.test>", "relaytest", User, invalid("foreign.example.net%mta.example.test"), false),
        // source routes: dropped, the mailbox decides
        ("<@mta.example.test:relaytest@foreign.example.net>", "relaytest", User, name("foreign.example.net"), false),
        ("<@foreign.example.net:root@mta.example.test>", "root", User, name("mta.example.test"), false),
        ("<@a,@b:relaytest@foreign.example.net>", "relaytest", User, name("foreign.example.net"), false),
        // literals
        ("<relaytest@[192.0.2.1]>", "relaytest", User, v4("192.0.2.1"), false),
        ("<root@[IPv6:::1]>", "root", User, Some(Domain::Literal("::1".parse().unwrap())), false),
        ("<relaytest@[300.1.2.3]>", "relaytest", User, invalid("[300.1.2.3]"), false),
        ("<relaytest@[127.1]>", "relaytest", User, invalid("[127.1]"), false),
        ("<root@[127.000.000.001]>", "root", User, invalid("[127.000.000.001]"), false),
        ("<relaytest@[foreign.example.net]>", "relaytest", User, invalid("[foreign.example.net]"), false),
        // trailing dots, case
        ("<relaytest@foreign.example.net.>", "relaytest", User, name("foreign.example.net"), false),
        ("<relaytest@foreign.example.net..>", "relaytest", User, name("foreign.example.net"), false),
        ("<ROOT@MTA.Example.TEST>", "ROOT", User, name("mta.example.test"), false),
        // backslash escapes
        ("<relaytest\\@foreign.example.net>", "relaytest@foreign.example.net", User, None, true),
        ("<relaytest\\@foreign.example.net@mta.example.test>", "relaytest@foreign.example.net", User, name("mta.example.test"), true),
        ("<relaytest@foreign.example.net\\@mta.example.test>", "relaytest", User, invalid("foreign.example.net\\@mta.example.test"), false),
        ("<\\root@mta.example.test>", "root", User, name("mta.example.test"), false),
        // comments
        ("<relaytest(@mta.example.test)@foreign.example.net>", "relaytest", User, name("foreign.example.net"), false),
        ("<relaytest@foreign.example.net(@mta.example.test)>", "relaytest", User, name("foreign.example.net"), false),
        ("<root@(x)mta.example.test>", "root", User, name("mta.example.test"), false),
        // white space and 8-bit
        ("<relaytest@foreign .example.net>", "relaytest", User, name("foreign.example.net"), false),
        ("<relaytest@foreign.exa mple.net>", "relaytest", User, invalid("foreign.exa mple.net"), false),
        ("<relaytest@foreign.example.net\r>", "relaytest", User, name("foreign.example.net"), false),
        ("<rélay@例子.测试>", "rélay", User, name("例子.测试"), false),
        ("<relay@foreign.example.net\u{7f}>", "relay", User, invalid("foreign.example.net\u{7f}"), false),
        // nested brackets, a phrase
        ("<<probe@example.org>>", "probe", User, name("example.org"), false),
        ("Some One <relaytest@foreign.example.net>", "relaytest", User, name("foreign.example.net"), false),
        // programs, files, include lists (issue 16 item 7)
        ("<\"|/bin/true\">", "|/bin/true", Program, None, false),
        ("<|/bin/true>", "|/bin/true", Program, None, false),
        ("<\"|/bin/true\"@mta.example.test>", "|/bin/true", Program, name("mta.example.test"), false),
        ("<\"/tmp/x\">", "/tmp/x", File, None, false),
        ("</tmp/x>", "/tmp/x", File, None, false),
        ("<:include:/etc/passwd>", ":include:/etc/passwd", Include, None, false),
        ("<\":include:/etc/passwd\"@mta.example.test>", ":include:/etc/passwd", Include, name("mta.example.test"), false),
        // after a backslash, or a blank: a user name (sendmail: User unknown)
        ("<\\|/bin/true>", "|/bin/true", User, None, false),
        ("<\"\\|/bin/true\">", "|/bin/true", User, None, false),
        ("<\" |/bin/true\">", " |/bin/true", User, None, false),
        ("<\"\\/tmp/x\">", "/tmp/x", User, None, false),
    ];
    for (text, local, kind, domain, hides) in table {
        let m = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(&m.local, local, "{text}");
        assert_eq!(&m.kind, kind, "{text}");
        assert_eq!(&m.domain, domain, "{text}");
        assert_eq!(m.hides_route(), *hides, "{text}");
    }
}

#[test]
fn a_leading_dot_or_an_empty_label_is_an_invalid_host() {
    for text in [
        "<probe@example..org>",
        "<probe@.example.org>",
        "<probe@.>",
        "<probe@client..example.test>",
    ] {
        assert_eq!(parse(text), Err(AddrError::InvalidHost), "{text}");
    }
}

#[test]
fn literals_name_the_forms_of_dollar_w() {
    let key = |t: &str| parse(t).unwrap().domain.unwrap().class_key();
    assert_eq!(key("a@[127.0.0.1]"), "[127.0.0.1]");
    assert_eq!(key("a@[IPv6:0:0:0:0:0:0:0:1]"), "[ipv6:::1]");
    assert_eq!(key("a@MTA.example.TEST."), "mta.example.test");
}

#[test]
fn blank_sub_turns_blanks_and_control_characters_into_dots() {
    for (from, to) in [
        ("x\ry@client.example.test", "x.y@client.example.test"),
        ("pro be@example.org", "pro.be@example.org"),
        ("\"pro be\"@example.org", "\"pro be\"@example.org"),
        ("\"x\ry\"@example.org", "\"x.y\"@example.org"),
        ("x@client.example.test\r", "x@client.example.test."),
        ("a\n\tb@c", "a..b@c"),
        ("plain@example.org", "plain@example.org"),
    ] {
        assert_eq!(blank_sub(from), to, "{from:?}");
    }
}
