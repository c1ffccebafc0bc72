//! Addresses as a mailer sees them at delivery: rulesets 1/2/4 and the mailer's `S=`/`R=`.
//!
//! In: the engine, the cf's mailers, the envelope sender, and for one delivering mailer the
//! sender, each recipient and the message's header block. Out: the `MAIL From:` address,
//! each `RCPT To:` address, and the header block with every address header rewritten — what
//! sendmail puts on the wire for that mailer. [`for_delivery`] applies all three to a queued
//! message for the queue runner; [`for_local`] gives `$g` (the `From ` line's and
//! `Return-Path:`'s sender) and the headers for a local mailer (`local`, `prog`, `*file*`).
//!
//! * Envelope sender: `remotename(sender, m, RF_SENDERADDR|RF_CANONICAL)` — ruleset 3, 1,
//!   the mailer's `S=` envelope ruleset, 4; the bare address (a route in `<…>`).
//! * Envelope recipient: `parseaddr` — rulesets 3 and 0 choose the triple, then the `$:`
//!   user goes through 2, the mailer's `R=` envelope ruleset and 4 (`buildaddr`).
//! * Headers (`commaize`): each address of `From:`, `Sender:`, `Reply-To:`, `Errors-To:`,
//!   `Disposition-Notification-To:` and their `Resent-` forms through 3, 1, `S=` header
//!   part, 4; of `To:`, `Cc:`, `Apparently-To:` and `Resent-To/Cc:` through 3, 2, `R=`
//!   header part, 4. Comments and phrases are kept (`crackaddr`), addresses are joined
//!   with `, ` and folded before column 78 with eight spaces. When the sender's mailer has
//!   `F=C`, recipient addresses without `@` get the sender's `@domain` (RF_ADDDOMAIN).
//!   `Bcc:` and `Resent-Bcc:` are not sent.
//! * A mailer without an `S=`/`R=` ruleset gets the address unchanged, as in sendmail.
//!
//! Source: sendmail 8.17 deliver.c (`deliver`: `rpath = remotename(...)`), usersmtp.c
//! (`smtpmailfrom`, `smtprcpt`: `q_user`), headers.c (`putheader`, `commaize`), conf.c
//! (`HdrInfo`), parseaddr.c (`remotename`); op.txt §5.1.4 "Ruleset semantics" and the
//! mailer flags (§5.1.12, `C`).

use super::address::{Remote, Use, parseaddr, remotename_with};
use super::mailer::MailerDef;
use super::rewrite::{Engine, MAXATOM};
use super::token::{Table, Tokens, prescan};

/// sendmail's `commaize` line length: addresses are folded before this column.
const HEADER_COLUMNS: usize = 78;

/// How an address header is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderKind {
    /// `H_FROM`: a sender address (ruleset 1, `S=`).
    Sender,
    /// `H_RCPT`: a recipient address (ruleset 2, `R=`).
    Recipient,
    /// `H_BCC`: not sent.
    Blind,
}

/// sendmail's `HdrInfo` table: which headers carry addresses.
fn header_kind(name: &[u8]) -> Option<HeaderKind> {
    const SENDER: &[&str] = &[
        "from",
        "sender",
        "reply-to",
        "errors-to",
        "disposition-notification-to",
        "resent-from",
        "resent-sender",
        "resent-reply-to",
    ];
    const RECIPIENT: &[&str] = &["to", "cc", "apparently-to", "resent-to", "resent-cc"];
    let n = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
    if SENDER.contains(&n.as_str()) {
        Some(HeaderKind::Sender)
    } else if RECIPIENT.contains(&n.as_str()) {
        Some(HeaderKind::Recipient)
    } else if n == "bcc" || n == "resent-bcc" {
        Some(HeaderKind::Blind)
    } else {
        None
    }
}

/// Rewrites one message's addresses for its delivering mailers.
pub struct Rewriter<'a> {
    engine: &'a mut Engine,
    mailers: &'a [MailerDef],
    sender: Vec<u8>,
    /// The sender's `@ domain` tokens when its mailer has `F=C` (sendmail's `e_fromdomain`).
    from_domain: Option<Tokens>,
}

impl<'a> Rewriter<'a> {
    /// A rewriter for a message from `sender` (empty: the null sender `<>`).
    pub fn new(engine: &'a mut Engine, mailers: &'a [MailerDef], sender: &str) -> Rewriter<'a> {
        let mut r = Rewriter {
            engine,
            mailers,
            sender: sender.as_bytes().to_vec(),
            from_domain: None,
        };
        r.from_domain = r.sender_domain();
        r
    }

    fn mailer(&self, name: &str) -> Option<MailerDef> {
        self.mailers
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(name))
            .cloned()
    }

    /// sendmail's `setsender`: with `F=C` on the sender's mailer, the tokens from the last
    /// `@` of the sender after ruleset 3.
    fn sender_domain(&mut self) -> Option<Tokens> {
        if self.sender.is_empty() {
            return None;
        }
        let how = Use {
            sender: true,
            header: false,
        };
        let parsed = parseaddr(self.engine, self.mailers, &self.sender, how)?;
        let wants = self.mailer(&parsed.mailer)?.has_flag(b'C');
        let _ = super::check::take_messages(self.engine);
        if !wants {
            return None;
        }
        let mut pvp = prescan(&self.engine.tables, &self.sender, None, Table::Ext, false)
            .result
            .ok()?;
        self.engine.rewrite(&mut pvp, 3, 0, MAXATOM);
        let at = pvp.iter().rposition(|t| t.as_slice() == b"@")?;
        Some(pvp[at..].to_vec())
    }

    /// The envelope sender as `mailer` sends it (`MAIL From:`); the null sender stays empty.
    pub fn sender(&mut self, mailer: &str) -> String {
        if self.sender.is_empty() {
            return String::new();
        }
        self.rpath(mailer)
    }

    /// sendmail's `$g` for `mailer`: the envelope sender through rulesets 3, 1, the
    /// mailer's `S=` envelope ruleset and 4 — the `From ` line and `Return-Path:` of a
    /// local delivery. The null sender goes through them as `<>` (the `local` mailer's
    /// `EnvFromL` makes it `MAILER-DAEMON`; `*file*`, with no `S=`, leaves it empty).
    pub fn rpath(&mut self, mailer: &str) -> String {
        let Some(m) = self.mailer(mailer) else {
            return l1(&self.sender);
        };
        let how = Use {
            sender: true,
            header: false,
        };
        let flags = Remote {
            canonical: true,
            add_domain: None,
        };
        let sender = match self.sender.as_slice() {
            [] => b"<>".to_vec(),
            s => s.to_vec(),
        };
        let (out, _) = remotename_with(self.engine, &m, &sender, how, flags);
        let _ = super::check::take_messages(self.engine);
        l1(&out)
    }

    /// An envelope recipient as its mailer sends it (`RCPT To:`): the `$:` part of ruleset
    /// 0's triple after rulesets 2, `R=` and 4. `None` when the rules refuse it.
    pub fn recipient(&mut self, addr: &str) -> Option<String> {
        let parsed = parseaddr(self.engine, self.mailers, addr.as_bytes(), Use::default());
        let _ = super::check::take_messages(self.engine);
        parsed.filter(|a| !a.bad).map(|a| l1(&a.user))
    }

    /// The message (`headers`, blank line, body; LF line ends) with its address headers
    /// rewritten for `mailer` and `Bcc:` removed. The body is not touched.
    pub fn headers(&mut self, mailer: &str, message: &[u8]) -> Vec<u8> {
        let Some(m) = self.mailer(mailer) else {
            return message.to_vec();
        };
        let (head, body) = crate::headers::split(message);
        let mut out = Vec::with_capacity(message.len() + 64);
        for field in crate::headers::fields(head) {
            let colon = field.iter().position(|&b| b == b':');
            let kind = colon.and_then(|c| header_kind(&field[..c]));
            match (kind, colon) {
                (Some(HeaderKind::Blind), _) => {}
                (Some(kind), Some(c)) => {
                    let line = self.commaize(&m, kind, &field[..c], &field[c + 1..]);
                    out.extend_from_slice(&line);
                }
                _ => out.extend_from_slice(field),
            }
        }
        out.extend_from_slice(body);
        out
    }

    /// One address header, each address rewritten, joined and folded as `commaize` does.
    fn commaize(&mut self, m: &MailerDef, kind: HeaderKind, name: &[u8], value: &[u8]) -> Vec<u8> {
        let how = Use {
            sender: kind == HeaderKind::Sender,
            header: true,
        };
        let from_domain = self.from_domain.clone();
        let flags = Remote {
            canonical: false,
            add_domain: from_domain.as_deref().filter(|_| !how.sender),
        };
        let mut line = name.to_vec();
        line.extend_from_slice(b": ");
        let mut column = line.len();
        let mut first = true;
        for addr in split_addresses(&unfold(value)) {
            let (text, _) = remotename_with(self.engine, m, &addr, how, flags);
            if text.is_empty() {
                continue;
            }
            let width = text.len() + if first { 0 } else { 2 };
            if !first && column + width > HEADER_COLUMNS {
                line.extend_from_slice(b",\n        ");
                column = 8 + text.len();
            } else {
                if !first {
                    line.extend_from_slice(b", ");
                }
                column += width;
            }
            line.extend_from_slice(&text);
            first = false;
        }
        let _ = super::check::take_messages(self.engine);
        line.push(b'\n');
        line
    }
}

/// Bytes as a Latin-1 string (addresses need not be UTF-8).
fn l1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

/// A field body with its line breaks removed (RFC 5322 §2.2.3 unfolding).
fn unfold(value: &[u8]) -> Vec<u8> {
    value
        .iter()
        .copied()
        .filter(|&b| b != b'\n' && b != b'\r')
        .collect()
}

/// The addresses of a header value: split at commas outside quotes, comments and angle
/// brackets, each trimmed; empty ones dropped.
pub fn split_addresses(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let (mut quoted, mut escaped) = (false, false);
    let (mut comment, mut angle) = (0usize, 0usize);
    let mut current = Vec::new();
    for &c in value {
        if escaped {
            escaped = false;
        } else if c == b'\\' {
            escaped = true;
        } else if quoted {
            quoted = c != b'"';
        } else {
            match c {
                b'"' => quoted = true,
                b'(' => comment += 1,
                b')' => comment = comment.saturating_sub(1),
                b'<' if comment == 0 => angle += 1,
                b'>' if comment == 0 => angle = angle.saturating_sub(1),
                b',' if comment == 0 && angle == 0 => {
                    out.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
        }
        current.push(c);
    }
    out.push(current);
    out.into_iter()
        .map(|a| a.trim_ascii().to_vec())
        .filter(|a| !a.is_empty())
        .collect()
}

/// A queued message as `mailer` delivers it to `recipients`: the rewritten envelope sender,
/// each recipient's `RCPT To:` address (unchanged when the rules refuse it) and the headers.
pub fn for_delivery(
    engine: &mut Engine,
    mailers: &[MailerDef],
    mailer: &str,
    msg: &crate::queue::Message,
    recipients: &[crate::queue::Recipient],
) -> (crate::queue::Message, Vec<crate::queue::Recipient>) {
    let mut r = Rewriter::new(engine, mailers, &msg.envelope.sender);
    let mut out = msg.clone();
    out.envelope.sender = r.sender(mailer);
    out.body = r.headers(mailer, &msg.body);
    let rcpts = recipients
        .iter()
        .map(|rc| {
            let mut rc = rc.clone();
            if let Some(a) = r.recipient(&rc.address) {
                rc.address = a;
            }
            rc
        })
        .collect();
    (out, rcpts)
}

/// A message as local `mailer` (`local`, `prog`, `*file*`) writes it: the envelope
/// sender `$g` ([`Rewriter::rpath`]) and the message with its address headers rewritten.
pub fn for_local(
    engine: &mut Engine,
    mailers: &[MailerDef],
    mailer: &str,
    sender: &str,
    message: &[u8],
) -> (String, Vec<u8>) {
    let mut r = Rewriter::new(engine, mailers, sender);
    (r.rpath(mailer), r.headers(mailer, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::cf::{HostInfo, load};
    use crate::rules::mailer;

    fn oracle() -> (Engine, Vec<MailerDef>) {
        let text = std::fs::read_to_string("tests/fixtures/oracle.cf")
            .unwrap()
            .replace("@ORACLE@", "/nonexistent");
        let host = HostInfo {
            hostname: "oracle.example.test".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
        };
        let (mut e, x) = match load(text.as_bytes(), "oracle.cf", &host) {
            Ok(v) => v,
            Err(errs) => panic!("{errs:?}"),
        };
        let m = mailer::build(&x.mailers, &e.rulesets, &mut e.names);
        (e, m)
    }

    #[test]
    fn addresses_split_where_sendmail_splits_them() {
        let s = |v: &str| -> Vec<String> {
            split_addresses(v.as_bytes())
                .into_iter()
                .map(|a| String::from_utf8(a).unwrap())
                .collect()
        };
        assert_eq!(s("a, b@c ,"), ["a", "b@c"]);
        assert_eq!(s("\"Doe, J\" <j@x>, k"), ["\"Doe, J\" <j@x>", "k"]);
        assert_eq!(s("d (Dave, D), <e,f@g>"), ["d (Dave, D)", "<e,f@g>"]);
        assert_eq!(s("x\\,y, z"), ["x\\,y", "z"]);
        assert!(s("  ").is_empty());
    }

    #[test]
    fn unknown_mailers_and_the_null_sender_are_left_alone() {
        let (mut e, m) = oracle();
        let mut r = Rewriter::new(&mut e, &m, "");
        assert_eq!(r.sender("relay"), "");
        let mut r = Rewriter::new(&mut e, &m, "alice");
        assert_eq!(r.sender("no-such-mailer"), "alice");
        assert_eq!(
            r.headers("no-such-mailer", b"From: alice\n\nx"),
            b"From: alice\n\nx"
        );
    }

    /// Recorded from sendmail 8.17.1.9 on the oracle's cf: `sendmail -f alice
    /// erin@remote.example.test` with these headers, relayed through `DSrelay:[127.0.0.1]`;
    /// what its sink received (MAIL/RCPT and the headers).
    #[test]
    fn the_relay_mailer_rewrites_as_sendmail_did() {
        let (mut e, m) = oracle();
        let mut r = Rewriter::new(&mut e, &m, "alice");
        assert_eq!(r.sender("relay"), "alice@oracle.example.test");
        assert_eq!(
            r.recipient("erin@remote.example.test").as_deref(),
            Some("erin@remote.example.test")
        );
        let message = b"From: Alice Example <alice>\n\
To: bob@remote.example.test, \"Carol C\" <carol>\n\
Cc: dave (Dave D), erin@remote.example.test\n\
Reply-To: alice\n\
Subject: rw-cli-1\n\
\n\
body\n";
        let out = String::from_utf8(r.headers("relay", message)).unwrap();
        assert_eq!(
            out,
            "From: Alice Example <alice@oracle.example.test>\n\
To: bob@remote.example.test, \"Carol C\" <carol@oracle.example.test>\n\
Cc: dave@oracle.example.test (Dave D), erin@remote.example.test\n\
Reply-To: alice@oracle.example.test\n\
Subject: rw-cli-1\n\
\n\
body\n"
        );
    }

    /// Recorded the same way (null sender): long lists fold before column 78, groups pass,
    /// `Bcc:` is not sent, `Sender: <root>` is qualified inside its brackets.
    #[test]
    fn long_lists_fold_and_bcc_is_dropped_as_sendmail_did() {
        let (mut e, m) = oracle();
        let mut r = Rewriter::new(&mut e, &m, "");
        let message = b"From: alice\n\
To: aaaaaaaaaaaa, bbbbbbbbbbbbbbbb@remote.example.test, cccccccccccccc, ddddddddddd, \"E E\" <eeeeeeeeee>, fff\n\
Cc: undisclosed-recipients:;\n\
Bcc: hidden\n\
Sender: <root>\n\
Subject: rw-cli-2\n\
\n\
body\n";
        let out = String::from_utf8(r.headers("relay", message)).unwrap();
        assert_eq!(
            out,
            "From: alice@oracle.example.test\n\
To: aaaaaaaaaaaa@oracle.example.test, bbbbbbbbbbbbbbbb@remote.example.test,\n        \
cccccccccccccc@oracle.example.test, ddddddddddd@oracle.example.test,\n        \
\"E E\" <eeeeeeeeee@oracle.example.test>, fff@oracle.example.test\n\
Cc: undisclosed-recipients:;\n\
Sender: <root@oracle.example.test>\n\
Subject: rw-cli-2\n\
\n\
body\n"
        );
    }
    /// Recorded from sendmail 8.17.1.9 on the oracle's cf (2026-12-02): `sendmail -f S
    /// pipe archive root` with `pipe` a `|program` and `archive` a `/file` alias; the
    /// `From ` line (`$g`) each target got.
    #[test]
    fn local_mailers_rewrite_the_envelope_sender_as_sendmail_did() {
        let (mut e, m) = oracle();
        let cases = [
            ("", ["MAILER-DAEMON", "MAILER-DAEMON", ""]),
            ("alice", ["alice", "alice", "alice"]),
            ("Alice A <alice>", ["alice", "alice", "alice"]),
            (
                "alice@localhost",
                [
                    "alice@oracle.example.test",
                    "alice@oracle.example.test",
                    "alice@oracle.example.test",
                ],
            ),
            ("erin@remote", ["erin@remote", "erin@remote", "erin@remote"]),
        ];
        for (sender, want) in cases {
            let mut r = Rewriter::new(&mut e, &m, sender);
            let got = ["local", "prog", "*file*"].map(|mailer| r.rpath(mailer));
            assert_eq!(got, want, "sender {sender:?}");
        }
    }

    /// Recorded the same way: what landed in the mailbox, the program's input and the file
    /// (all three alike) for these headers (`root@oracle`, which needs `$[ $]` and the
    /// hosts file, is in tests/deliver_rewrite.rs).
    #[test]
    fn local_mailers_rewrite_headers_as_sendmail_did() {
        let (mut e, m) = oracle();
        let message = b"From: alice (Alice A)\n\
To: alice, root@localhost, Root <root@[127.0.0.1]>\n\
Cc: Carol <carol@localhost>, dave (Dave D)\n\
Subject: local-e\n\
\n\
body e\n";
        let want = "From: alice (Alice A)\n\
To: alice, root@oracle.example.test, Root <root@oracle.example.test>\n\
Cc: Carol <carol@oracle.example.test>, dave (Dave D)\n\
Subject: local-e\n\
\n\
body e\n";
        for mailer in ["local", "prog", "*file*"] {
            let (rpath, out) = for_local(&mut e, &m, mailer, "alice", message);
            assert_eq!(rpath, "alice");
            assert_eq!(String::from_utf8(out).unwrap(), want, "{mailer}");
        }
    }
}
