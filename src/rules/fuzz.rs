//! Entry points for fuzzing the engine: arbitrary bytes in, a result out, never a panic.
//!
//! In: raw bytes for an address, and (for [`rewrite`]) cf text with `S`/`R` lines. Out: the
//! tokens `prescan` makes of the address, or the address after one ruleset, as bytes.
//! Both are bounded the way sendmail bounds them (`MAXNAME`, `MAXATOM`, the 100-rewrite
//! loop limit, the subroutine depth), so a fuzz target needs no timeout of its own beyond
//! the input size it chooses.
//!
//! Used by the fuzz crate (`fuzz/`) and by the tests below, which feed pseudo-random input.

use super::cf::{HostInfo, load_lenient};
use super::rewrite::{MAXATOM, cataddr};
use super::ruleset::Lookup;
use super::token::{Table, TokenTables, Tokens, prescan};

/// The operator characters of an m4-generated cf (`O OperatorChars=.:%@!^/[]+`).
pub const OPERATOR_CHARS: &[u8] = b".:%@!^/[]+";

/// `prescan` on `addr` with the usual operator characters: the tokens, or `None` when
/// sendmail would refuse the address (too long, unbalanced, empty).
pub fn tokenize(addr: &[u8]) -> Option<Tokens> {
    let tables = TokenTables::new(OPERATOR_CHARS);
    prescan(&tables, addr, None, Table::Ext, false).result.ok()
}

/// Loads `cf` (errors are ignored, as a fuzzer wants), then runs ruleset `set` (a name or a
/// number) on `addr`. Returns the rewritten address and the rewriting status, or `None`
/// when the ruleset does not exist or the address does not scan.
pub fn rewrite(cf: &[u8], set: &str, addr: &[u8]) -> Option<(Vec<u8>, i32)> {
    let host = HostInfo {
        hostname: "fuzz.example.test".into(),
        addresses: vec![std::net::IpAddr::from([127, 0, 0, 1])],
    };
    let (mut e, _, _) = load_lenient(cf, "fuzz.cf", &host);
    let n = match e.rulesets.find(set) {
        Lookup::Found(n, len) if len == set.len() => n,
        _ => set.parse().ok()?,
    };
    let mut pvp = prescan(&e.tables, addr, None, Table::Ext, false)
        .result
        .ok()?;
    let status = e.rewrite(&mut pvp, n, 0, MAXATOM);
    Some((cataddr(&e.tables, &pvp, None, false), status))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift: reproducible pseudo-random bytes.
    fn bytes(seed: &mut u64, alphabet: &[u8], len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                alphabet[(*seed % alphabet.len() as u64) as usize]
            })
            .collect()
    }

    #[test]
    fn tokens_of_an_address() {
        let t = tokenize(b"Joe <joe@host.example>").unwrap();
        let t: Vec<&[u8]> = t.iter().map(Vec::as_slice).collect();
        assert_eq!(
            t,
            [
                &b"Joe"[..],
                b"<",
                b"joe",
                b"@",
                b"host",
                b".",
                b"example",
                b">"
            ]
        );
        assert_eq!(tokenize(b""), None);
    }

    #[test]
    fn a_ruleset_rewrites() {
        let cf = b"V10\nScanonify=3\nR$* @ $*\t$@ $1 < @ $2 >\n";
        let (out, status) = rewrite(cf, "canonify", b"bob@x").unwrap();
        assert_eq!((out.as_slice(), status), (&b"bob<@x>"[..], 0));
        assert_eq!(rewrite(cf, "3", b"bob@x").unwrap().0, b"bob<@x>");
        assert_eq!(rewrite(cf, "nosuch", b"bob@x"), None);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let addr_chars = b"abc@.<>()\"\\:;,%!/[]+ \t\x80\xff$|";
        let rule_chars = b"ab@.<> $*+-=~&#:|123()[]\n\tSR";
        for _ in 0..300 {
            let n = 1 + (seed % 80) as usize;
            let a = bytes(&mut seed, addr_chars, n);
            let _ = tokenize(&a);
            let mut cf = b"V10\nS1\nR".to_vec();
            let n = 1 + (seed % 60) as usize;
            cf.extend(bytes(&mut seed, rule_chars, n));
            let _ = rewrite(&cf, "1", &a);
        }
    }
}
