//! Printing tokens the way sendmail's `xputs`/`printav` do: metasymbols as `$#`, `$&{name}`,
//! 8-bit bytes as `M-x`, `\n`/`\r`/`\t` as backslash letters, other controls as nothing.
//!
//! In: tokens (internal form) and the macro name table. Out: bytes for `-bt` output.
//!
//! Source: sendmail 8.17 util.c `xputs`, `printav`.

use super::macros::MacroNames;
use super::token::{Token, meta};

/// Append `s` as `xputs` prints it.
pub fn xputs(out: &mut Vec<u8>, names: &MacroNames, s: &[u8]) {
    let mut i = 0;
    while i < s.len() {
        let mut c = s[i];
        i += 1;
        if c >= 0x80 {
            if c == meta::MATCHREPL {
                out.push(b'$');
                let Some(&n) = s.get(i) else { continue };
                i += 1;
                print_char(out, n);
                continue;
            }
            if c == meta::MACROEXPAND || c == meta::MACRODEXPAND {
                out.push(b'$');
                if c == meta::MACRODEXPAND {
                    out.push(b'&');
                }
                let Some(&n) = s.get(i) else { continue };
                if b"=~&?".contains(&n) {
                    out.push(n);
                    i += 1;
                }
                let Some(&n) = s.get(i) else { continue };
                i += 1;
                if n >= 0x80 {
                    out.extend_from_slice(names.name(n).as_bytes());
                } else {
                    out.push(n);
                }
                continue;
            }
            let known = meta::NAMES.iter().find(|(_, m)| *m == c);
            if let Some((letter, _)) = known {
                out.push(b'$');
                out.push(*letter);
            }
            if (c == meta::MATCHCLASS || c == meta::MATCHNCLASS)
                && let Some(&n) = s.get(i)
            {
                {
                    i += 1;
                    if n >= 0x80 {
                        out.extend_from_slice(names.name(n).as_bytes());
                    } else {
                        out.push(n);
                    }
                }
            }
            if known.is_some() {
                continue;
            }
            out.extend_from_slice(b"M-");
            c &= 0x7f;
        }
        print_char(out, c);
    }
}

fn print_char(out: &mut Vec<u8>, c: u8) {
    if c.is_ascii_graphic() || c == b' ' {
        out.push(c);
        return;
    }
    let letter = match c {
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => return,
    };
    out.push(b'\\');
    out.push(letter);
}

/// Append a token vector as `printav` prints it: each token preceded by a space, then LF.
pub fn printav(out: &mut Vec<u8>, names: &MacroNames, toks: &[Token]) {
    for t in toks {
        out.push(b' ');
        xputs(out, names, t);
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(toks: &[Token]) -> String {
        let mut out = Vec::new();
        printav(&mut out, &MacroNames::new(), toks);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn metasymbols_print_with_dollar() {
        let toks = vec![
            vec![meta::CANONNET],
            b"local".to_vec(),
            vec![meta::CANONUSER],
            vec![meta::MATCHREPL, b'1'],
            vec![meta::MATCHCLASS, b'w'],
            vec![meta::MACRODEXPAND, b'h'],
            vec![meta::CONDELSE],
        ];
        assert_eq!(show(&toks), " $# local $: $1 $=w $&h $|\n");
    }

    #[test]
    fn long_macro_names_print_in_braces() {
        let mut names = MacroNames::new();
        let id = names.id("client_addr").unwrap();
        let mut out = Vec::new();
        xputs(&mut out, &names, &[meta::MACRODEXPAND, id]);
        assert_eq!(out, b"$&{client_addr}");
    }

    #[test]
    fn eight_bit_and_controls() {
        assert_eq!(show(&[b"j\xf6rg".to_vec()]), " jM-vrg\n");
        assert_eq!(show(&[b"a\x01b".to_vec()]), " ab\n");
        assert_eq!(show(&[b"a\tb".to_vec()]), " a\\tb\n");
    }
}
