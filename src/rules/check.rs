//! Policy checks through rulesets (sendmail's `rscheck`): `check_mail`, `check_rcpt`,
//! `check_relay`, `check_compat` and friends, as the SMTP server calls them.
//!
//! In: the engine, the mailer table, a ruleset name and one or two strings (two are joined
//! with `$|`). Out: a [`Verdict`]: accept (with the rewritten tokens), discard, quarantine,
//! or reject with the SMTP code, enhanced status code and text the ruleset chose
//! (`$#error $@ 5.7.1 $: "550 Relaying denied"`). A ruleset that does not exist accepts.
//!
//! Source: sendmail 8.17 parseaddr.c (`rscheck`, `buildaddr` for `$#error`), op.txt
//! §5.1.4 ("Special rulesets").

use super::rewrite::{Engine, MAXATOM, cataddr, stripquotes};
use super::ruleset::Lookup;
use super::token::{Table, Tokens, meta, prescan};

/// What a check ruleset decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No `$#error`/`$#discard`: go on. Carries what the ruleset returned.
    Accept(Tokens),
    /// `$#discard`: accept, then throw the message away.
    Discard,
    /// `$#error $@ quarantine $: reason`.
    Quarantine(String),
    /// `$#error`: refuse with this reply.
    Reject {
        /// SMTP reply code (`550`, `451`, ...).
        code: u16,
        /// Enhanced status code (`5.7.1`), when the rule gave one.
        dsn: Option<String>,
        /// Reply text.
        text: String,
    },
}

impl Verdict {
    /// A 4xx rejection.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Verdict::Reject { code, .. } if (400..500).contains(code))
    }
}

fn is_dsn(s: &str) -> bool {
    let p: Vec<&str> = s.split('.').collect();
    p.len() == 3
        && matches!(p[0], "2" | "4" | "5")
        && p[1..]
            .iter()
            .all(|x| !x.is_empty() && x.len() <= 3 && x.bytes().all(|c| c.is_ascii_digit()))
}

/// Run ruleset `set` on `p1` (and `p2`, joined by `$|`) as the SMTP server does.
/// `strip_comments` selects the tokenizer (`RSF_RMCOMM`).
pub fn rscheck(
    e: &mut Engine,
    set: &str,
    p1: &[u8],
    p2: Option<&[u8]>,
    strip_comments: bool,
) -> Verdict {
    let n = match e.rulesets.find(set) {
        Lookup::Found(n, len) if len == set.len() => n,
        _ => return Verdict::Accept(Vec::new()),
    };
    let mut buf = p1.to_vec();
    if let Some(p2) = p2 {
        buf.push(meta::CONDELSE);
        buf.extend_from_slice(p2);
    }
    let table = if strip_comments {
        Table::Int
    } else {
        Table::NoComment
    };
    let Ok(mut pvp) = prescan(&e.tables, &buf, None, table, !strip_comments).result else {
        return Verdict::Accept(Vec::new());
    };
    e.rewrite(&mut pvp, n, 0, MAXATOM);
    if !pvp.first().is_some_and(|t| meta::is(t, meta::CANONNET)) {
        return Verdict::Accept(pvp);
    }
    let mailer = pvp.get(1).map(|t| t.as_slice()).unwrap_or(b"");
    match mailer {
        b"discard" => Verdict::Discard,
        b"error" => error_verdict(e, &pvp),
        _ => Verdict::Accept(pvp),
    }
}

/// The messages accumulated in the engine since the last call (for the mail log), each
/// without its newline. Long-running callers drain them after every check.
pub fn take_messages(e: &mut Engine) -> Vec<String> {
    let out = std::mem::take(&mut e.out);
    out.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

/// The longest `$#error` text, quotes included, that `buildaddr` keeps.
const ERROR_TEXT_MAX: usize = 255;

/// Decode `$#error [$@ host] $: text` as `buildaddr` does.
fn error_verdict(e: &Engine, pvp: &Tokens) -> Verdict {
    let host_at = pvp.iter().position(|t| meta::is(t, meta::CANONHOST));
    let user_at = pvp.iter().position(|t| meta::is(t, meta::CANONUSER));
    let host = match (host_at, user_at) {
        (Some(h), Some(u)) if h < u => {
            String::from_utf8_lossy(&cataddr(&e.tables, &pvp[h + 1..u], Some(e.space_sub), true))
                .into_owned()
        }
        (Some(h), None) => {
            String::from_utf8_lossy(&cataddr(&e.tables, &pvp[h + 1..], Some(e.space_sub), true))
                .into_owned()
        }
        _ => String::new(),
    };
    if host == "quarantine" {
        let reason = user_at
            .map(|u| cataddr(&e.tables, &pvp[u + 1..], Some(b' '), true))
            .unwrap_or_default();
        return Verdict::Quarantine(String::from_utf8_lossy(&reason).into_owned());
    }
    let mut user = user_at
        .map(|u| cataddr(&e.tables, &pvp[u + 1..], Some(b' '), false))
        .unwrap_or_default();
    // buildaddr's buffer: the text (quotes and all) ends after 255 bytes, before its quotes
    // are stripped (oracle: a long `$: "…" $&{x} "…"` reply is cut there)
    user.truncate(ERROR_TEXT_MAX);
    let msg = String::from_utf8_lossy(&stripquotes(&user)).into_owned();
    let b = msg.as_bytes();
    let host_dsn = is_dsn(&host).then(|| host.clone());
    if b.len() >= 4
        && b[..3].iter().all(u8::is_ascii_digit)
        && b[3] == b' '
        && matches!(b[0], b'2'..=b'5')
    {
        let code: u16 = msg[..3].parse().unwrap_or(553);
        let rest = &msg[4..];
        let (dsn, text) = match rest.split_once(' ') {
            Some((d, t)) if is_dsn(d) => (Some(d.to_string()), t.to_string()),
            _ if is_dsn(rest) => (Some(rest.to_string()), String::new()),
            _ => (host_dsn, rest.to_string()),
        };
        return Verdict::Reject { code, dsn, text };
    }
    Verdict::Reject {
        code: 553,
        dsn: Some(host_dsn.unwrap_or_else(|| "5.3.0".into())),
        text: msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::cf::{HostInfo, load};

    fn engine() -> Engine {
        let cf = "V10\nO OperatorChars=.:%@!^/[]+\nScheck_rcpt\nR<$* @ spam.example>\t$#error $@ 5.7.1 $: \"550 Go away\"\nR<$* @ later.example>\t$#error $@ 4.3.0 $: \"451 Try later\"\nR<$* @ quiet.example>\t$#discard $: x\nR<$* @ odd.example>\t$#error $: bad address\nR<$* @ q.example>\t$#error $@ quarantine $: held for review\nScheck_relay\nR$* $| 10.$*\t$#error $@ 5.7.1 $: \"554 5.7.1 no relay\"\nMlocal, P=/bin/true, F=l, A=true\n";
        load(cf.as_bytes(), "t.cf", &HostInfo::default()).unwrap().0
    }

    #[test]
    fn error_triples_become_replies() {
        let mut e = engine();
        assert_eq!(
            rscheck(&mut e, "check_rcpt", b"<a@spam.example>", None, true),
            Verdict::Reject {
                code: 550,
                dsn: Some("5.7.1".into()),
                text: "Go away".into()
            }
        );
        let v = rscheck(&mut e, "check_rcpt", b"<a@later.example>", None, true);
        assert!(v.is_temporary());
        assert_eq!(
            rscheck(&mut e, "check_rcpt", b"<a@odd.example>", None, true),
            Verdict::Reject {
                code: 553,
                dsn: Some("5.3.0".into()),
                text: "bad address".into()
            }
        );
        assert_eq!(
            rscheck(&mut e, "check_relay", b"host", Some(b"10.1.2.3"), false),
            Verdict::Reject {
                code: 554,
                dsn: Some("5.7.1".into()),
                text: "no relay".into()
            }
        );
    }

    #[test]
    fn a_long_error_text_is_cut_after_255_bytes_with_its_quotes() {
        // 30 quoted labels and an atom each: the text ends inside the label that crosses byte
        // 255, as the oracle's reply did
        let mut rhs = String::from("$#error $@ 5.7.1 $: \"550 x\"");
        for i in 0..30 {
            rhs.push_str(&format!(" \" l{i:06}:\" v"));
        }
        let cf = format!("V10\nScheck_rcpt\nR$*\t{rhs}\nMlocal, P=/bin/true, F=l, A=x\n");
        let (mut e, _, errs) =
            crate::rules::cf::load_lenient(cf.as_bytes(), "t.cf", &HostInfo::default());
        assert!(errs.is_empty(), "{errs:?}");
        let Verdict::Reject { code, text, .. } =
            rscheck(&mut e, "check_rcpt", b"<a@b>", None, true)
        else {
            panic!("no reject");
        };
        assert_eq!(code, 550);
        // quoted: `"550 x"` (7) + 20 × `" l0000NN:"v` (12) = 247, then `" l000020:"` cut
        // after its first 8 bytes: `" l00002`
        assert!(text.ends_with(" l000019:v l00002"), "{text}");
    }

    #[test]
    fn messages_are_drained() {
        let cf = "V10\nKm hash /nonexistent/m\nScheck_mail\nR$*\t$: $(m $1 $)\nMlocal, P=/bin/true, F=l, A=x\n";
        let (mut e, _, errs) =
            crate::rules::cf::load_lenient(cf.as_bytes(), "t.cf", &HostInfo::default());
        assert!(errs.is_empty());
        let _ = rscheck(&mut e, "check_mail", b"<a@b>", None, true);
        assert_eq!(
            take_messages(&mut e),
            ["hash map \"m\": missing map file /nonexistent/m.db: No such file or directory"]
        );
        assert!(e.out.is_empty());
    }

    #[test]
    fn discard_quarantine_accept_and_missing_rulesets() {
        let mut e = engine();
        assert_eq!(
            rscheck(&mut e, "check_rcpt", b"<a@quiet.example>", None, true),
            Verdict::Discard
        );
        assert_eq!(
            rscheck(&mut e, "check_rcpt", b"<a@q.example>", None, true),
            Verdict::Quarantine("held for review".into())
        );
        assert!(matches!(
            rscheck(&mut e, "check_rcpt", b"<a@fine.example>", None, true),
            Verdict::Accept(_)
        ));
        assert_eq!(
            rscheck(&mut e, "check_mail", b"<a@b>", None, true),
            Verdict::Accept(Vec::new())
        );
    }
}
