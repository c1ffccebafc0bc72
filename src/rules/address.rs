//! Address parsing on top of the rules: `parseaddr` (rulesets 3 and 0, then the mailer
//! triple), `buildaddr`, `remotename` (an address as a given mailer will see it) and
//! `crackaddr` (the address with its route part replaced by `$g`).
//!
//! In: an address string, the engine, the mailer table, and whether it is a sender or
//! recipient, envelope or header address. Out: an [`Address`] (mailer, host, user), or the
//! rewritten string with the rewriting status; messages go to the engine's output.
//!
//! Source: sendmail 8.17 parseaddr.c (`parseaddr`, `buildaddr`, `remotename`),
//! headers.c (`crackaddr`), util.c (`dsntoexitstat`).

use super::mailer::MailerDef;
use super::rewrite::{Engine, MAXATOM, cataddr, stripquotes};
use super::token::{Table, Tokens, meta, prescan};
use crate::sysexits::{
    EX_CONFIG, EX_DATAERR, EX_IOERR, EX_NOHOST, EX_NOUSER, EX_OK, EX_OSERR, EX_PROTOCOL,
    EX_SOFTWARE, EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE,
};

/// How an address is used (sendmail's RF_SENDERADDR / RF_HEADERADDR).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Use {
    pub sender: bool,
    pub header: bool,
}

/// A resolved address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Mailer name (`*error*` for `$#error`).
    pub mailer: String,
    /// Host part, as bytes (addresses are not necessarily UTF-8).
    pub host: Option<Vec<u8>>,
    /// User part, as bytes.
    pub user: Vec<u8>,
    /// Resolved to the error mailer (or no mailer at all).
    pub bad: bool,
}

/// Bytes as a Latin-1 string (one char per byte), for messages that carry address text.
fn l1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

/// Map an enhanced status code to a sysexits value (sendmail's `dsntoexitstat`), as the
/// oracle's `-bv` exit status shows it for an `error:` mailer with each code (8.17.1.9:
/// `5.1.0` 65, `5.1.4` 69, `5.1.5` 78, `5.2.3` 65, `5.3.x` 71, `5.4.0`/`5.4.2` 74, `5.4.1`/
/// `5.4.3`/`5.4.5` a temporary failure, `5.4.4` 76, `5.4.6` 78, `5.6.x` 69, `5.7.x` 65; a
/// class other than 2, 4 or 5: 78).
pub fn dsn_to_exit(code: &str) -> i32 {
    let p: Vec<u32> = code.split('.').map(|x| x.parse().unwrap_or(0)).collect();
    let (c0, c1, c2) = (
        p.first().copied().unwrap_or(0),
        p.get(1).copied().unwrap_or(0),
        p.get(2).copied().unwrap_or(0),
    );
    match c0 {
        2 => return EX_OK,
        4 => return EX_TEMPFAIL,
        5 => {}
        _ => return EX_CONFIG,
    }
    match (c1, c2) {
        (1, 0) => EX_DATAERR,
        (1, 1) | (1, 6) => EX_NOUSER,
        (1, 2) | (1, 8) => EX_NOHOST,
        (1, 3) | (1, 7) => EX_USAGE,
        (1, 5) => EX_CONFIG,
        (2, 3) => EX_DATAERR,
        (3, _) => EX_OSERR,
        (4, 0) | (4, 2) => EX_IOERR,
        (4, 1) | (4, 3) | (4, 5) => EX_TEMPFAIL,
        (4, 4) => EX_PROTOCOL,
        (4, 6) => EX_CONFIG,
        (5, _) => EX_PROTOCOL,
        (7, _) => EX_DATAERR,
        _ => EX_UNAVAILABLE,
    }
}

const ERROR_CODES: &[(&str, i32)] = &[
    ("usage", EX_USAGE),
    ("nouser", EX_NOUSER),
    ("nohost", EX_NOHOST),
    ("unavailable", EX_UNAVAILABLE),
    ("software", EX_SOFTWARE),
    ("tempfail", EX_TEMPFAIL),
    ("protocol", EX_PROTOCOL),
    ("config", EX_CONFIG),
];

/// Scan, check and rewrite an address through rulesets 3 and 0, then build it
/// (sendmail's `parseaddr` with delimiter NUL). `None` when it cannot be scanned.
pub fn parseaddr(e: &mut Engine, mailers: &[MailerDef], addr: &[u8], how: Use) -> Option<Address> {
    let saved = e.e_to.replace(addr.to_vec());
    let r = parse_inner(e, mailers, addr, how);
    e.e_to = saved;
    r
}

fn parse_inner(e: &mut Engine, mailers: &[MailerDef], addr: &[u8], how: Use) -> Option<Address> {
    let scan = prescan(&e.tables, addr, None, Table::Ext, false);
    for d in &scan.diagnostics {
        e.usrerr(d);
    }
    let mut pvp = match scan.result {
        Ok(p) => p,
        Err(super::token::PrescanError::Empty) => return None,
        Err(err) => {
            e.usrerr(&err.to_string());
            return None;
        }
    };
    if invalid_addr(e, addr) {
        return None;
    }
    e.rewrite(&mut pvp, 3, 0, MAXATOM);
    e.rewrite(&mut pvp, 0, 0, MAXATOM);
    let mut a = buildaddr(e, mailers, pvp, how);
    if let Some((shown, why)) = ctrl_char_problem(&a.user) {
        let dsn = if how.sender { "5.1.7" } else { "5.1.3" };
        let saved = e.e_to.take();
        e.usrerr(&format!(
            "501 {dsn} Syntax error in mailbox address \"{}\" ({why})",
            l1(&shown)
        ));
        e.e_to = saved;
        a.user = shown;
        a.bad = true;
    }
    Some(a)
}

/// sendmail's `hasctrlchar`: unquoted control characters, a trailing backslash, 8-bit
/// bytes 0x80..0x9f or an unbalanced quote make a user part bad. Returns the part with
/// the offending bytes replaced by `?` and the reason.
fn ctrl_char_problem(user: &[u8]) -> Option<(Vec<u8>, &'static str)> {
    let mut shown = user.to_vec();
    let mut why = None;
    let mut quoted = false;
    let mut i = 0;
    while i < shown.len() {
        let c = shown[i];
        if !quoted && (c < 32 || c == 127) {
            why = Some("non-printable character");
            shown[i] = b'?';
            i += 1;
            continue;
        }
        if c == b'"' {
            quoted = !quoted;
        } else if c == b'\\' {
            i += 1;
            if i >= shown.len() {
                why = Some("trailing \\ character");
                shown[i - 1] = b'?';
                break;
            }
        }
        if shown[i] & 0xe0 == 0x80 {
            why = Some("8-bit character");
            shown[i] = b'?';
        }
        i += 1;
    }
    if quoted {
        why = Some("unbalanced quote");
    }
    why.map(|w| (shown, w))
}

/// sendmail's `invalidaddr`: an address longer than MAXNAME-1, or with bytes 0x80..0x9f.
pub fn invalid_addr(e: &mut Engine, addr: &[u8]) -> bool {
    const MAXNAME: usize = super::token::MAXNAME;
    if addr.len() > MAXNAME - 1 {
        // sendmail cuts the address in place while it complains: the current address
        // shown before the message is cut too
        let saved = e.e_to.as_mut().map(|t| {
            let full = t.clone();
            t.truncate(MAXNAME - 1);
            full
        });
        e.usrerr(&format!(
            "553 5.1.0 Address \"{}\" too long ({} bytes max)",
            l1(&addr[..MAXNAME - 1]),
            MAXNAME - 1
        ));
        if let Some(full) = saved {
            e.e_to = Some(full);
        }
        return true;
    }
    if addr.iter().any(|&b| b & 0xe0 == 0x80) {
        let shown: Vec<u8> = addr
            .iter()
            .map(|&b| if b & 0xe0 == 0x80 { b'?' } else { b })
            .collect();
        let saved = e.e_to.take();
        e.usrerr(&format!(
            "501 5.1.3 8-bit character in mailbox address \"{}\"",
            l1(&shown)
        ));
        e.e_to = saved;
        e.setstat(EX_USAGE);
        return true;
    }
    false
}

fn find_mailer<'a>(mailers: &'a [MailerDef], name: &str) -> Option<&'a MailerDef> {
    mailers.iter().find(|m| m.name.eq_ignore_ascii_case(name))
}

/// Turn a `$# mailer $@ host $: user` vector into an [`Address`], rewriting the user part
/// through ruleset 2, the mailer's recipient ruleset and ruleset 4 (sendmail's `buildaddr`).
///
/// With V10 configurations sender and recipient addresses take the same path here, so
/// `_how` only documents the caller's intent.
pub fn buildaddr(e: &mut Engine, mailers: &[MailerDef], tv: Tokens, _how: Use) -> Address {
    let bad = |m: &str| Address {
        mailer: m.to_string(),
        host: None,
        user: Vec::new(),
        bad: true,
    };
    if !tv.first().is_some_and(|t| meta::is(t, meta::CANONNET)) {
        e.syserr("554 5.3.5 buildaddr: no mailer in parsed address");
        return bad("*error*");
    }
    let mname = tv.get(1).map(|t| l1(t)).unwrap_or_default();
    let mut i = 2;
    let host_start = if tv.get(i).is_some_and(|t| meta::is(t, meta::CANONHOST)) {
        i += 1;
        Some(i)
    } else {
        None
    };
    while i < tv.len() && !meta::is(&tv[i], meta::CANONUSER) {
        i += 1;
    }
    if i >= tv.len() {
        e.syserr("554 5.3.5 buildaddr: no user");
        return bad("*error*");
    }
    let host = match host_start {
        Some(h) if h != i => Some(cataddr(&e.tables, &tv[h..i], Some(e.space_sub), true)),
        _ => None,
    };
    let mut user_toks: Tokens = tv[i + 1..].to_vec();
    let ubuf = cataddr(&e.tables, &user_toks, Some(b' '), false);
    if mname.eq_ignore_ascii_case("error") {
        let user = ubuf.clone();
        match &host {
            Some(h) if h.contains(&b'.') => e.setstat(dsn_to_exit(&l1(h))),
            Some(h) if h.first().is_some_and(u8::is_ascii_digit) => e.setstat(
                h.iter()
                    .take_while(|c| c.is_ascii_digit())
                    .fold(0i32, |a, d| {
                        a.saturating_mul(10).saturating_add((d - b'0') as i32)
                    }),
            ),
            Some(h) => e.setstat(
                ERROR_CODES
                    .iter()
                    .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(h))
                    .map_or(EX_UNAVAILABLE, |(_, c)| *c),
            ),
            None => e.setstat(EX_UNAVAILABLE),
        }
        let mb = stripquotes(&ubuf);
        if mb.len() >= 4
            && mb[..3].iter().all(u8::is_ascii_digit)
            && mb[3] == b' '
            && matches!(mb[0], b'2'..=b'5')
        {
            e.usrerr_bytes(&mb);
        } else {
            e.usrerr_bytes(&[b"553 5.3.0 ".as_slice(), &mb].concat());
        }
        return Address {
            mailer: "*error*".into(),
            host,
            user,
            bad: true,
        };
    }
    let Some(mut m) = find_mailer(mailers, &mname) else {
        e.syserr(&format!("554 5.3.5 buildaddr: unknown mailer {mname}"));
        return bad("*error*");
    };
    if host.is_none() && !m.has_flag(b'l') {
        e.syserr("554 5.3.5 buildaddr: no host");
        return bad("*error*");
    }
    let mut p: &[u8] = &ubuf;
    if p.first() == Some(&b'"') {
        p = &p[1..];
    }
    if p.first() == Some(&b'|') && m.has_flag(b'|') {
        m = find_mailer(mailers, "prog").unwrap_or(m);
    } else if p.first() == Some(&b'/') && m.has_flag(b'/') {
        m = find_mailer(mailers, "*file*").unwrap_or(m);
    } else if p.first() == Some(&b':') && m.has_flag(b':') {
        let s = stripquotes(&ubuf);
        if s.len() >= 9 && s[..9].eq_ignore_ascii_case(b":include:") {
            return Address {
                mailer: "*include*".into(),
                host,
                user: s[9..].to_vec(),
                bad: false,
            };
        }
    }
    let m = m.clone();
    e.macros.define(b'h', host.clone().unwrap_or_default());
    let maxatom = MAXATOM.saturating_sub(3);
    e.rewrite(&mut user_toks, 2, 0, maxatom);
    if let Some(r) = m.rcpt_env
        && r > 0
    {
        e.rewrite(&mut user_toks, r, 0, maxatom);
    }
    e.rewrite(&mut user_toks, 4, 0, maxatom);
    let mut user = cataddr(&e.tables, &user_toks, Some(e.space_sub), true);
    let mut host = host;
    if let Some(h) = host.as_mut()
        && !m.has_flag(b'H')
    {
        h.make_ascii_lowercase();
    }
    if !m.has_flag(b'u') {
        user.make_ascii_lowercase();
    }
    Address {
        mailer: m.name.clone(),
        host,
        user,
        bad: false,
    }
}

/// The address with its machine-readable part replaced by `$g` (sendmail's `crackaddr`),
/// in internal form (`$g` is MACROEXPAND g).
pub fn crackaddr(addr: &[u8]) -> Vec<u8> {
    let out = crack(addr);
    // sendmail builds this in a MAXNAME buffer; what does not fit becomes "<$g>"
    if out.len() > super::token::MAXNAME {
        return vec![b'<', meta::MACROEXPAND, b'g', b'>'];
    }
    out
}

fn crack(addr: &[u8]) -> Vec<u8> {
    let lt = first_angle(addr);
    // a group name ("name:") before any route-addr is kept, quoted when needed
    if let Some(colon) = group_colon(addr)
        && lt.is_none_or(|lt| colon < lt)
    {
        let name = &addr[..colon];
        let t = name
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(name.len());
        let mut out = quote_phrase(&name[t..]);
        out.push(b':');
        let rest = &addr[colon + 1..];
        let ws = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
        out.extend_from_slice(&rest[..ws]);
        out.append(&mut crack_angle(&rest[ws..]));
        return out;
    }
    crack_angle(addr)
}

/// The first top-level `<` (outside quotes and comments).
fn first_angle(addr: &[u8]) -> Option<usize> {
    let (mut quote, mut cmnt, mut bs) = (false, 0i32, false);
    for (i, &c) in addr.iter().enumerate() {
        if bs {
            bs = false;
            continue;
        }
        match c {
            b'\\' => bs = true,
            b'"' if cmnt == 0 => quote = !quote,
            b'(' if !quote => cmnt += 1,
            b')' if !quote && cmnt > 0 => cmnt -= 1,
            b'<' if !quote && cmnt == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// crackaddr without the group-name step.
fn crack_angle(addr: &[u8]) -> Vec<u8> {
    // the route-addr is the last top-level '<' ... '>'; all before it is the phrase
    let (mut quote, mut cmnt, mut bs) = (false, 0i32, false);
    let mut lt = None;
    for (i, &c) in addr.iter().enumerate() {
        if bs {
            bs = false;
            continue;
        }
        match c {
            b'\\' => bs = true,
            b'"' if cmnt == 0 => quote = !quote,
            b'(' if !quote => cmnt += 1,
            b')' if !quote && cmnt > 0 => cmnt -= 1,
            b'<' if !quote && cmnt == 0 => lt = Some(i),
            _ => {}
        }
    }
    if let Some(lt) = lt {
        let mut gt = None;
        let mut quote = false;
        for (i, &c) in addr.iter().enumerate().skip(lt + 1) {
            match c {
                b'"' => quote = !quote,
                b'>' if !quote => {
                    gt = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let phrase = &addr[..lt];
        let pend = phrase
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        let mut out = quote_phrase(&phrase[..pend]);
        out.extend_from_slice(&phrase[pend..]);
        out.push(b'<');
        let inner_end = gt.unwrap_or(addr.len());
        let inner = &addr[lt + 1..inner_end];
        out.append(&mut crackaddr_plain_in(inner, true));
        out.push(b'>');
        if let Some(gt) = gt {
            // what follows the route-addr is kept, without stray '>'
            let (mut q, mut c) = (false, 0i32);
            for &b in &addr[gt + 1..] {
                match b {
                    b'"' if c == 0 => q = !q,
                    b'(' if !q => c += 1,
                    b')' if !q && c > 0 => c -= 1,
                    b'>' if !q && c == 0 => continue,
                    _ => {}
                }
                out.push(b);
            }
        }
        return out;
    }
    crackaddr_plain(addr)
}

/// A display phrase or group name with characters that must be quoted
/// (`MustQuoteChars`, outside quoted strings) comes back inside double quotes.
fn quote_phrase(p: &[u8]) -> Vec<u8> {
    let mut quote = false;
    let mut special = false;
    for &c in p {
        match c {
            b'"' => quote = !quote,
            _ if !quote && b"@,;:\\()[].'<>".contains(&c) => special = true,
            _ => {}
        }
    }
    if !special {
        return p.to_vec();
    }
    let mut out = vec![b'"'];
    for &c in p {
        if c == b'"' {
            out.push(b'\\');
        }
        out.push(c);
    }
    out.push(b'"');
    out
}

/// The top-level `:` ending a group name, if any.
fn group_colon(addr: &[u8]) -> Option<usize> {
    let (mut quote, mut cmnt, mut bs, mut bracket) = (false, 0i32, false, false);
    for (i, &c) in addr.iter().enumerate() {
        if bs {
            bs = false;
            continue;
        }
        match c {
            b'\\' => bs = true,
            b'"' if cmnt == 0 => quote = !quote,
            b'(' if !quote => cmnt += 1,
            b')' if !quote && cmnt > 0 => cmnt -= 1,
            b'[' if !quote && cmnt == 0 => bracket = true,
            b']' if !quote && cmnt == 0 => bracket = false,
            b':' if !quote && cmnt == 0 && !bracket => return Some(i),
            _ => {}
        }
    }
    None
}

/// Without angle brackets: comments are kept, the address text (however split by
/// comments) becomes one `$g`, a group's closing `;` is kept.
fn crackaddr_plain(addr: &[u8]) -> Vec<u8> {
    crackaddr_plain_in(addr, false)
}

/// `in_angle`: the text is the inside of `<...>`, so a comment at its start is still
/// separated from the `<` by a space.
fn crackaddr_plain_in(addr: &[u8], in_angle: bool) -> Vec<u8> {
    let g = [meta::MACROEXPAND, b'g'];
    if in_angle && addr.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    let mut out: Vec<u8> = Vec::new();
    let mut after_comment = false;
    let mut pending: Vec<u8> = Vec::new();
    let mut put_g = false;
    let mut i = 0;
    while i < addr.len() {
        let c = addr[i];
        if c.is_ascii_whitespace() {
            pending.push(c);
            i += 1;
            continue;
        }
        if c == b'(' {
            let start = i;
            let mut depth = 0i32;
            while i < addr.len() {
                match addr[i] {
                    b'\\' => i += 1,
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            if !out.is_empty() || in_angle {
                if pending.is_empty() && !out.last().is_some_and(|b| b.is_ascii_whitespace()) {
                    pending.push(b' ');
                }
                out.append(&mut pending);
            }
            pending.clear();
            out.extend_from_slice(&addr[start..i.min(addr.len())]);
            // an unclosed comment is closed
            out.extend(std::iter::repeat_n(b')', depth.max(0) as usize));
            after_comment = true;
            continue;
        }
        if c == b';' {
            pending.clear();
            out.push(b';');
            // an empty group still gets its address macro, right after the ';'
            if !put_g {
                out.extend_from_slice(&g);
                put_g = true;
            }
            i += 1;
            continue;
        }
        // address text
        if !put_g {
            if !out.is_empty() {
                if after_comment && pending.is_empty() {
                    pending.push(b' ');
                }
                out.append(&mut pending);
            }
            out.extend_from_slice(&g);
            put_g = true;
        }
        pending.clear();
        if c == b'"' {
            i += 1;
            while i < addr.len() && addr[i] != b'"' {
                if addr[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
        } else if c == b'\\' {
            i += 1;
        }
        i += 1;
    }
    if !put_g {
        out.extend_from_slice(&g);
    }
    out
}

/// An address as mailer `m` will see it (sendmail's `remotename`): rulesets 3, 1 or 2, the
/// mailer's sender/recipient ruleset, 4; the result put back into its comment/phrase form.
/// Returns the text and the rewriting status.
pub fn remotename(e: &mut Engine, m: &MailerDef, name: &[u8], how: Use) -> (Vec<u8>, i32) {
    remotename_with(e, m, name, how, Remote::default())
}

/// The rest of sendmail's `remotename` flags, used at delivery.
#[derive(Debug, Clone, Copy, Default)]
pub struct Remote<'a> {
    /// RF_CANONICAL: the bare address (`$g`, in `<…>` when it is a route), no comment or
    /// phrase kept — the envelope form.
    pub canonical: bool,
    /// RF_ADDDOMAIN with the sender's `@domain` tokens (set when the sender's mailer has
    /// `F=C`): appended to an address without `@`, then ruleset 3 again.
    pub add_domain: Option<&'a [super::token::Token]>,
}

/// [`remotename`] with the delivery-time flags of [`Remote`].
pub fn remotename_with(
    e: &mut Engine,
    m: &MailerDef,
    name: &[u8],
    how: Use,
    flags: Remote<'_>,
) -> (Vec<u8>, i32) {
    let rwset = match (how.sender, how.header) {
        (true, true) => m.sender_hdr,
        (true, false) => m.sender_env,
        (false, true) => m.rcpt_hdr,
        (false, false) => m.rcpt_env,
    };
    let Some(rwset) = rwset else {
        return (name.to_vec(), EX_OK);
    };
    if let Some(id) = e.names.id("addr_type") {
        let v = format!(
            "{} {}",
            if how.header { 'h' } else { 'e' },
            if how.sender { 's' } else { 'r' }
        );
        e.macros.define(id, v.into_bytes());
    }
    let fancy = if m.has_flag(b'c') || flags.canonical {
        vec![meta::MACROEXPAND, b'g']
    } else {
        crackaddr(name)
    };
    let scan = prescan(&e.tables, name, None, Table::Ext, false);
    e.print_diags(name, &scan.diagnostics);
    let mut pvp = match scan.result {
        Ok(p) => p,
        Err(super::token::PrescanError::Empty) => return (name.to_vec(), EX_OK),
        Err(err) => {
            e.print_diags(name, &[err.to_string()]);
            // prescan cuts an over-long address in place
            let mut n = name.to_vec();
            if err == super::token::PrescanError::AddressTooLong {
                n.truncate(super::token::MAXNAME);
            }
            return (n, EX_OK);
        }
    };
    let mut stat = EX_OK;
    let mut tf = |st: i32| {
        if st == EX_TEMPFAIL {
            stat = EX_TEMPFAIL;
        }
    };
    tf(e.rewrite(&mut pvp, 3, 0, MAXATOM));
    if let Some(domain) = flags.add_domain
        && !pvp.iter().any(|t| t.as_slice() == b"@")
    {
        pvp.extend(domain.iter().cloned());
        tf(e.rewrite(&mut pvp, 3, 0, MAXATOM));
    }
    tf(e.rewrite(&mut pvp, if how.sender { 1 } else { 2 }, 0, MAXATOM));
    if rwset > 0 {
        tf(e.rewrite(&mut pvp, rwset, 0, MAXATOM));
    }
    tf(e.rewrite(&mut pvp, 4, 0, MAXATOM));
    // sendmail builds this in a MAXNAME-sized buffer: longer results are cut
    let mut lbuf = cataddr(&e.tables, &pvp, Some(e.space_sub), false);
    lbuf.truncate(super::token::MAXNAME - 2);
    let old = e.macros.get(b'g').map(|v| v.to_vec());
    let route = flags.canonical && lbuf.first() == Some(&b'@');
    e.macros.define(b'g', lbuf);
    let mut out = if route {
        e.macros.expand(&[b'<', meta::MACROEXPAND, b'g', b'>'])
    } else {
        e.macros.expand(&fancy)
    };
    out.truncate(super::token::MAXNAME - 1);
    match old {
        Some(v) => e.macros.define(b'g', v),
        None => e.macros.undefine(b'g'),
    }
    (out, stat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crackaddr_forms() {
        let c = |s: &str| {
            let v = crackaddr(s.as_bytes());
            let mut out = Vec::new();
            crate::rules::print::xputs(&mut out, &crate::rules::macros::MacroNames::new(), &v);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(c("root"), "$g");
        assert_eq!(c("Full Name <user@example.com>"), "Full Name <$g>");
        assert_eq!(c("root (Root User)"), "$g (Root User)");
        assert_eq!(c("<bob@remote"), "<$g>");
        assert_eq!(
            c("\"Bob Smith\" <bob@x> trailing"),
            "\"Bob Smith\" <$g> trailing"
        );
    }

    #[test]
    fn dsn_codes_map_to_exit_status() {
        assert_eq!(dsn_to_exit("5.1.3"), EX_USAGE);
        assert_eq!(dsn_to_exit("5.1.1"), EX_NOUSER);
        assert_eq!(dsn_to_exit("4.4.0"), EX_TEMPFAIL);
        assert_eq!(dsn_to_exit("5.7.1"), EX_DATAERR);
        assert_eq!(dsn_to_exit("5.4.6"), EX_CONFIG);
        assert_eq!(dsn_to_exit("5.3.0"), EX_OSERR);
        assert_eq!(dsn_to_exit("5.4.1"), EX_TEMPFAIL);
        assert_eq!(dsn_to_exit("3.0.0"), EX_CONFIG);
    }
}
