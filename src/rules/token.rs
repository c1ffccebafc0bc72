//! Tokens and the tokenizer (sendmail's `prescan`): address text in, a token vector out.
//!
//! In: a byte string (an address typed at `-bt`, a rule's LHS/RHS after macro expansion, a
//! map result) and [`TokenTables`] saying which bytes are operators. Out: [`Tokens`], each
//! token a byte string, plus the diagnostics sendmail prints while scanning (`Unbalanced '<'`
//! and friends), or a [`PrescanError`] when the address cannot be scanned at all.
//!
//! Internally sendmail marks rule metasymbols (`$*`, `$#`, `$>`, ...) with bytes 0x80..0xa0;
//! this module keeps that encoding ([`meta`]) so that the matcher, the rewriter and the
//! printer agree with sendmail on every byte, including 8-bit input that collides with them.
//!
//! Source: sendmail 8.17 parseaddr.c `prescan()` (state table, operator classes) and
//! op.txt §5.1.3 ("R and S -- Rewriting Rules", tokenisation with `$o`).

/// One token: a byte string, possibly starting with a [`meta`] byte.
pub type Token = Vec<u8>;
/// A token vector (sendmail's `pvp`).
pub type Tokens = Vec<Token>;

/// Sendmail's internal metasymbol bytes (sendmail.h).
pub mod meta {
    /// `$x`: macro expansion (followed by the macro id).
    pub const MACROEXPAND: u8 = 0o201;
    /// `$&x`: deferred macro expansion (followed by the macro id).
    pub const MACRODEXPAND: u8 = 0o202;
    /// Quotes the next byte.
    pub const METAQUOTE: u8 = 0o203;
    /// `$(`: map lookup begin.
    pub const LOOKUPBEGIN: u8 = 0o205;
    /// `$)`: map lookup end.
    pub const LOOKUPEND: u8 = 0o206;
    /// `$*`: zero or more tokens.
    pub const MATCHZANY: u8 = 0o220;
    /// `$+`: one or more tokens.
    pub const MATCHANY: u8 = 0o221;
    /// `$-`: exactly one token.
    pub const MATCHONE: u8 = 0o222;
    /// `$=X`: a phrase in class X.
    pub const MATCHCLASS: u8 = 0o223;
    /// `$~X`: one token not in class X.
    pub const MATCHNCLASS: u8 = 0o224;
    /// `$1`..`$9` on the RHS.
    pub const MATCHREPL: u8 = 0o225;
    /// `$#`: mailer.
    pub const CANONNET: u8 = 0o226;
    /// `$@`: host on the RHS, "match zero tokens" on the LHS.
    pub const CANONHOST: u8 = 0o227;
    /// `$:`: user.
    pub const CANONUSER: u8 = 0o230;
    /// `$>`: call a ruleset.
    pub const CALLSUBR: u8 = 0o231;
    /// `$?`: conditional.
    pub const CONDIF: u8 = 0o232;
    /// `$|`: conditional else, and an operator of its own in rules.
    pub const CONDELSE: u8 = 0o233;
    /// `$.`: conditional end.
    pub const CONDFI: u8 = 0o234;
    /// `$[`: host name canonification begin.
    pub const HOSTBEGIN: u8 = 0o235;
    /// `$]`: host name canonification end.
    pub const HOSTEND: u8 = 0o236;
    /// `$@` on a LHS.
    pub const MATCHZERO: u8 = CANONHOST;

    /// The `$c` letter of each single-byte metasymbol (sendmail's `MetaMacros`).
    pub const NAMES: &[(u8, u8)] = &[
        (b'*', MATCHZANY),
        (b'+', MATCHANY),
        (b'-', MATCHONE),
        (b'=', MATCHCLASS),
        (b'~', MATCHNCLASS),
        (b'#', CANONNET),
        (b'@', CANONHOST),
        (b':', CANONUSER),
        (b'>', CALLSUBR),
        (b'?', CONDIF),
        (b'|', CONDELSE),
        (b'.', CONDFI),
        (b'[', HOSTBEGIN),
        (b']', HOSTEND),
        (b'(', LOOKUPBEGIN),
        (b')', LOOKUPEND),
        (b'&', MACRODEXPAND),
    ];

    /// The metasymbol byte for `$c`, if `c` names one.
    pub fn from_letter(c: u8) -> Option<u8> {
        NAMES.iter().find(|(l, _)| *l == c).map(|(_, m)| *m)
    }

    /// The first byte of `tok`, if it is `m`.
    pub fn is(tok: &[u8], m: u8) -> bool {
        tok.first() == Some(&m)
    }
}

/// Character classes of the scanner (sendmail's OPR, ATM, QST, SPC, ONE, ILL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// An operator: a token of its own.
    Opr,
    /// Part of an atom.
    Atm,
    /// A double quote.
    Qst,
    /// White space (and `(` when comments are stripped).
    Spc,
    /// Takes the next byte into the same token (`$=X`, `$&X`, `$1`).
    One,
    /// Illegal.
    Ill,
}

/// The `()<>,;\r\n` that are operators whatever `OperatorChars` says.
pub const DELIMCHARS: &[u8] = b"()<>,;\r\n";
/// `OperatorChars` when the cf sets none (version 7 and later configs).
pub const DEFAULT_OPERATORS: &[u8] = b".:@[]";

/// Which table a scan uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// External strings: comments `( )` are stripped.
    Ext,
    /// Internal strings: metasymbols split, comments stripped.
    Int,
    /// Internal strings, comments kept as `(` `)` operators (rules of V9+ configs).
    NoComment,
    /// External strings with comments kept (addresses typed at `-bt` with V9+ configs):
    /// 8-bit bytes are part of atoms.
    NoCommentExt,
}

/// The three byte→class tables, built once from the configured operator characters.
#[derive(Debug, Clone)]
pub struct TokenTables {
    ext: [Class; 256],
    int: [Class; 256],
    noc: [Class; 256],
    noc_ext: [Class; 256],
}

impl TokenTables {
    /// Tables for the given `OperatorChars` (already macro-expanded), plus [`DELIMCHARS`].
    pub fn new(operators: &[u8]) -> Self {
        let mut base = [Class::Atm; 256];
        for c in [b'\t', b'\n', 0x0b, 0x0c, b'\r', b' '] {
            base[c as usize] = Class::Spc;
        }
        base[b'"' as usize] = Class::Qst;
        let mut ext = base;
        ext[b'(' as usize] = Class::Spc;
        ext[b')' as usize] = Class::Spc;
        let mut int = ext;
        let mut noc = base;
        noc[b'(' as usize] = Class::Opr;
        noc[b')' as usize] = Class::Opr;
        let mut noc_ext = noc;
        // metasymbols are operators; other 8-bit bytes are part of atoms
        for c in 0x80..=0x9f_usize {
            int[c] = Class::Opr;
            noc[c] = Class::Opr;
        }
        for c in [0o202usize, 0o223, 0o224, 0o225] {
            int[c] = Class::One;
            noc[c] = Class::One;
        }
        int[0xff] = Class::One;
        noc[0xff] = Class::One;
        for &c in operators.iter().chain(DELIMCHARS) {
            for t in [&mut ext, &mut int, &mut noc, &mut noc_ext] {
                if t[c as usize] == Class::Atm {
                    t[c as usize] = Class::Opr;
                }
            }
        }
        // 0xff starts a token that takes the next byte (stored as DEL, see `prescan`)
        noc_ext[0xff] = Class::One;
        TokenTables {
            ext,
            int,
            noc,
            noc_ext,
        }
    }

    fn table(&self, t: Table) -> &[Class; 256] {
        match t {
            Table::Ext => &self.ext,
            Table::Int => &self.int,
            Table::NoComment => &self.noc,
            Table::NoCommentExt => &self.noc_ext,
        }
    }

    /// The class of `c` in the internal table (used by `cataddr` to decide on spaces).
    pub fn is_atom_start(&self, c: u8) -> bool {
        self.int[c as usize] == Class::Atm
    }

    /// The class of `c` in the given table.
    pub fn class(&self, t: Table, c: u8) -> Class {
        self.table(t)[c as usize]
    }
}

impl Default for TokenTables {
    fn default() -> Self {
        TokenTables::new(DEFAULT_OPERATORS)
    }
}

/// Limits of a scan (sendmail's MAXATOM, MAXNAME, PSBUFSIZE).
pub const MAXATOM: usize = 1000;
/// Longest token and longest address, in bytes (sendmail's MAXNAME).
pub const MAXNAME: usize = 256;
/// The scan buffer (sendmail's PSBUFSIZE = MAXNAME + MAXATOM).
pub const PSBUFSIZE: usize = MAXNAME + MAXATOM;

/// Why an address could not be scanned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrescanError {
    /// The token buffer overflowed (`553 5.1.1 Address too long`).
    #[error("Address too long")]
    AddressTooLong,
    /// More than [`MAXATOM`] tokens.
    #[error("prescan: too many tokens")]
    TooManyTokens,
    /// One token longer than [`MAXNAME`].
    #[error("prescan: token too long")]
    TokenTooLong,
    /// No token at all.
    #[error("null leading token")]
    Empty,
}

/// What a scan produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The tokens, or why there are none.
    pub result: Result<Tokens, PrescanError>,
    /// Messages sendmail prints while scanning (`Unbalanced '<'`), in order, without code.
    pub diagnostics: Vec<String>,
    /// Offset in the input of the delimiter that ended the scan (or the end).
    pub end: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Opr,
    Atm,
    Qst,
    Spc,
    One,
    Ill,
}

const M: u8 = 1;
const B: u8 = 2;

fn next_state(old: St, ch: Class) -> (St, u8) {
    use Class as C;
    let to = |c: Class| match c {
        C::Opr => St::Opr,
        C::Atm => St::Atm,
        C::Qst => St::Qst,
        C::Spc => St::Spc,
        C::One => St::One,
        C::Ill => St::Ill,
    };
    match old {
        St::Opr => match ch {
            C::Spc | C::Ill => (to(ch), M | B),
            _ => (to(ch), B),
        },
        St::Atm => match ch {
            C::Atm => (St::Atm, 0),
            C::Spc | C::Ill => (to(ch), M | B),
            _ => (to(ch), B),
        },
        St::Qst => match ch {
            C::Qst => (St::Opr, 0),
            _ => (St::Qst, 0),
        },
        St::Spc => match ch {
            C::Spc => (St::Spc, M),
            C::Ill => (St::Ill, M | B),
            _ => (to(ch), 0),
        },
        St::One => match ch {
            C::Ill => (St::Ill, M | B),
            _ => (St::Opr, 0),
        },
        St::Ill => match ch {
            C::Ill => (St::Ill, M),
            C::Spc => (St::Spc, M | B),
            _ => (to(ch), B),
        },
    }
}

/// Scan `addr` into tokens, stopping at `delim` (outside quotes and angle brackets) or the
/// end. `ignore` suppresses the repairs and messages for unbalanced input (as sendmail does
/// when reading the cf).
pub fn prescan(
    tables: &TokenTables,
    addr: &[u8],
    delim: Option<u8>,
    table: Table,
    ignore: bool,
) -> Scan {
    let tab = tables.table(table);
    let mut diags = Vec::new();
    let mut toks: Tokens = Vec::new();
    let mut used = 0usize; // bytes of the scan buffer used, like sendmail's q - pvpbuf
    let mut bslash = false;
    let mut route_syntax = false;
    let mut cmnt = 0i32;
    let mut angle = 0i32;
    let mut state = St::Atm;
    let mut c: Option<u8> = None; // lookahead; None = NOCHAR
    let mut p = 0usize;
    let mut at_end = false;
    let stopped_at_delim;
    let fail = |e: PrescanError, diags: Vec<String>, p: usize| Scan {
        result: Err(e),
        diagnostics: diags,
        end: p.saturating_sub(1),
    };
    loop {
        let mut tok: Token = Vec::new();
        let mut ended_by_delim = false;
        loop {
            if let Some(ch) = c
                && !bslash
            {
                if used >= PSBUFSIZE - 5 {
                    return fail(PrescanError::AddressTooLong, diags, p);
                }
                // sendmail stores a 0xff byte as DEL (0x7f)
                tok.push(if ch == 0xff { 0x7f } else { ch });
                used += 1;
            }
            // read a new input character
            let mut ch: u8;
            if p >= addr.len() || addr[p] == 0 {
                p += 1;
                if ignore {
                    at_end = true;
                    c = None;
                    break;
                } else if state == St::Qst {
                    diags.push("Unbalanced '\"'".into());
                    ch = b'"';
                } else if cmnt > 0 {
                    diags.push("Unbalanced '('".into());
                    ch = b')';
                } else if angle > 0 {
                    ch = b'>';
                    diags.push("Unbalanced '<'".into());
                } else {
                    at_end = true;
                    c = None;
                    break;
                }
                p -= 1;
            } else {
                ch = addr[p];
                p += 1;
                if Some(ch) == delim && cmnt <= 0 && state != St::Qst && angle > 0 {
                    // special case for better error management
                    if delim == Some(b',') && !route_syntax && !ignore {
                        diags.push("Unbalanced '<'".into());
                        ch = b'>';
                        p -= 1;
                    }
                } else if Some(ch) == delim && cmnt <= 0 && state != St::Qst && angle <= 0 {
                    ended_by_delim = true;
                    c = Some(ch);
                    break;
                }
            }
            let mut cur = Some(ch);
            if bslash {
                bslash = false;
                if cmnt > 0 {
                    c = None;
                    continue;
                } else if ch != b'!' || state == St::Qst {
                    if used >= PSBUFSIZE - 5 {
                        return fail(PrescanError::AddressTooLong, diags, p);
                    }
                    tok.push(b'\\');
                    used += 1;
                    c = Some(ch);
                    continue;
                }
            }
            if ch == b'\\' {
                bslash = true;
            } else if state == St::Qst {
                // nothing
            } else if ch == b'(' && tab[b'(' as usize] == Class::Spc {
                cmnt += 1;
                cur = None;
            } else if ch == b')' && tab[b'(' as usize] == Class::Spc {
                if cmnt <= 0 {
                    if !ignore {
                        diags.push("Unbalanced ')'".into());
                        cur = None;
                    }
                } else {
                    cmnt -= 1;
                }
            } else if cmnt > 0 {
                cur = None;
            } else if ch == b'<' {
                angle += 1;
                let rest = &addr[p.min(addr.len())..];
                let first = rest.iter().find(|b| !b.is_ascii_whitespace());
                if first == Some(&b'@') {
                    route_syntax = true;
                }
            } else if ch == b'>' {
                if angle <= 0 {
                    if !ignore {
                        diags.push("Unbalanced '>'".into());
                        cur = None;
                    }
                } else {
                    angle -= 1;
                }
                route_syntax = false;
            } else if delim == Some(b' ') && ch.is_ascii_whitespace() {
                cur = Some(b' ');
            }
            let Some(ch) = cur else {
                c = None;
                continue;
            };
            if Some(ch) == delim && angle <= 0 && state != St::Qst {
                ended_by_delim = true;
                c = Some(ch);
                break;
            }
            let (ns, bits) = next_state(state, tab[ch as usize]);
            state = ns;
            if state == St::Ill {
                if ch.is_ascii_graphic() || ch == b' ' {
                    diags.push(format!("Illegal character {}", ch as char));
                } else {
                    diags.push(format!("Illegal character 0x{ch:02x}"));
                }
            }
            c = if bits & M != 0 { None } else { Some(ch) };
            if bits & B != 0 {
                break;
            }
        }
        if !tok.is_empty() {
            if used >= PSBUFSIZE - 5 {
                return fail(PrescanError::AddressTooLong, diags, p);
            }
            used += 1;
            if toks.len() >= MAXATOM {
                return fail(PrescanError::TooManyTokens, diags, p);
            }
            if tok.len() > MAXNAME {
                return fail(PrescanError::TokenTooLong, diags, p);
            }
            toks.push(tok);
        }
        if at_end || ended_by_delim {
            stopped_at_delim = ended_by_delim;
            break;
        }
    }
    let end = if stopped_at_delim { p - 1 } else { addr.len() };
    if toks.is_empty() {
        return Scan {
            result: Err(PrescanError::Empty),
            diagnostics: diags,
            end,
        };
    }
    Scan {
        result: Ok(toks),
        diagnostics: diags,
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(s: &str, t: Table) -> Vec<String> {
        let tables = TokenTables::new(b".:%@!^/[]+");
        let r = prescan(&tables, s.as_bytes(), None, t, false);
        r.result
            .unwrap()
            .into_iter()
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .collect()
    }

    #[test]
    fn splits_operators_and_atoms() {
        assert_eq!(
            scan("bob@remote.example.test", Table::Ext),
            ["bob", "@", "remote", ".", "example", ".", "test"]
        );
        assert_eq!(scan("root+tag", Table::Ext), ["root", "+", "tag"]);
        assert_eq!(scan("bob=x", Table::Ext), ["bob=x"]);
    }

    #[test]
    fn quoted_strings_are_one_token() {
        assert_eq!(
            scan("\"john doe\"@x", Table::Ext),
            ["\"john doe\"", "@", "x"]
        );
    }

    #[test]
    fn comments_stripped_or_kept() {
        assert_eq!(scan("root (Root User)", Table::Ext), ["root"]);
        assert_eq!(scan("root(x)", Table::NoComment), ["root", "(", "x", ")"]);
    }

    #[test]
    fn unbalanced_angle_is_repaired_with_a_message() {
        let tables = TokenTables::default();
        let r = prescan(&tables, b"<bob@x", None, Table::Ext, false);
        assert_eq!(r.diagnostics, ["Unbalanced '<'"]);
        assert_eq!(r.result.unwrap().last().unwrap(), b">");
    }

    #[test]
    fn unbalanced_quote_is_closed() {
        let tables = TokenTables::default();
        let r = prescan(&tables, b"\"bob", None, Table::Ext, false);
        assert_eq!(r.diagnostics, ["Unbalanced '\"'"]);
        assert_eq!(r.result.unwrap(), vec![b"\"bob\"".to_vec()]);
    }

    #[test]
    fn stops_at_delimiter_outside_brackets() {
        let tables = TokenTables::default();
        let r = prescan(&tables, b"a@b, c@d", Some(b','), Table::Ext, false);
        assert_eq!(r.end, 3);
        assert_eq!(r.result.unwrap().len(), 3);
    }

    #[test]
    fn backslash_is_kept_inside_token() {
        assert_eq!(scan("\\root", Table::Ext), ["\\root"]);
    }

    #[test]
    fn metasymbols_split_and_take_their_argument() {
        let tables = TokenTables::default();
        let input = [
            meta::MATCHZANY,
            b'x',
            meta::MATCHCLASS,
            b'w',
            meta::MATCHREPL,
            b'1',
        ];
        let r = prescan(&tables, &input, None, Table::Int, true)
            .result
            .unwrap();
        assert_eq!(
            r,
            vec![
                vec![meta::MATCHZANY],
                b"x".to_vec(),
                vec![meta::MATCHCLASS, b'w'],
                vec![meta::MATCHREPL, b'1']
            ]
        );
    }

    #[test]
    fn too_long_token_fails() {
        let tables = TokenTables::default();
        let long = vec![b'y'; 300];
        let r = prescan(&tables, &long, None, Table::Ext, false);
        assert_eq!(r.result, Err(PrescanError::TokenTooLong));
    }

    #[test]
    fn empty_input_has_no_tokens() {
        let tables = TokenTables::default();
        assert_eq!(
            prescan(&tables, b"   ", None, Table::Ext, false).result,
            Err(PrescanError::Empty)
        );
    }
}
