//! Macros and classes: the `$x` / `${name}` values and `$=X` word lists the rules read.
//!
//! In: `D`/`C` values (cf text with `$` sequences), names typed at `-bt`. Out: macro ids (one
//! byte, as sendmail encodes them inside rules), [`translate_dollars`] (cf text → internal
//! bytes), [`Macros::expand`] (internal bytes → text with `$x` replaced), and class lookup.
//!
//! Single-letter macros use the letter as id; long names (`{client_addr}`) get ids from
//! 0xa0 upward in order of first use, like sendmail's `macid()`.
//!
//! Source: sendmail 8.17 macro.c (`expand`, `macid_parse`), readcf.c (`translate_dollars`).

use super::token::meta;
use std::collections::{BTreeMap, HashMap};

/// First id given to a long macro name.
const FIRST_LONG_ID: u16 = 0o240;

/// Macro name ↔ id table.
#[derive(Debug, Clone, Default)]
pub struct MacroNames {
    by_name: HashMap<String, u8>,
    by_id: BTreeMap<u8, String>,
    next: u16,
}

impl MacroNames {
    /// A table with sendmail's predefined long names registered first.
    pub fn new() -> Self {
        MacroNames {
            next: FIRST_LONG_ID,
            ..Default::default()
        }
    }

    /// The id of a long name (registering it if new); `None` when the id space is full.
    pub fn id(&mut self, name: &str) -> Option<u8> {
        if name.len() == 1 {
            return Some(name.as_bytes()[0]);
        }
        if let Some(&i) = self.by_name.get(name) {
            return Some(i);
        }
        if self.next > 0xff {
            return None;
        }
        let i = self.next as u8;
        self.next += 1;
        self.by_name.insert(name.to_string(), i);
        self.by_id.insert(i, name.to_string());
        Some(i)
    }

    /// The id of a name without registering it.
    pub fn find(&self, name: &str) -> Option<u8> {
        if name.len() == 1 {
            return Some(name.as_bytes()[0]);
        }
        self.by_name.get(name).copied()
    }

    /// The printable name of an id: `x` or `{name}`.
    pub fn name(&self, id: u8) -> String {
        match self.by_id.get(&id) {
            Some(n) => format!("{{{n}}}"),
            // an id in the long-name range that names nothing (8-bit input after `$&`)
            None if id >= 0x80 => "{***UNDEFINED MACRO***}".to_string(),
            None => (id as char).to_string(),
        }
    }

    /// The bare name of an id (no braces).
    pub fn bare_name(&self, id: u8) -> String {
        match self.by_id.get(&id) {
            Some(n) => n.clone(),
            None => (id as char).to_string(),
        }
    }

    /// Parse a macro name at the start of `s`: `x` or `{name}` (a one-letter `{x}` is `x`).
    /// Returns the id and the number of bytes used; `None` when there is no name.
    pub fn parse(&mut self, s: &[u8]) -> Option<(u8, usize)> {
        match s.first()? {
            b'{' => {
                let close = s.iter().position(|&b| b == b'}')?;
                // characters other than letters, digits and '_' are dropped (and
                // reported by the caller, see `invalid_chars`)
                let name: String = s[1..close]
                    .iter()
                    .filter(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .map(|&b| b as char)
                    .collect();
                if name.is_empty() {
                    return None;
                }
                Some((self.id(&name)?, close + 1))
            }
            0 => None,
            &c => Some((c, 1)),
        }
    }
}

impl MacroNames {
    /// The characters of a `{name}` at the start of `s` that a name may not contain
    /// (sendmail: "Invalid macro/class character").
    pub fn invalid_chars(s: &[u8]) -> Vec<u8> {
        if s.first() != Some(&b'{') {
            return Vec::new();
        }
        let Some(close) = s.iter().position(|&b| b == b'}') else {
            return Vec::new();
        };
        s[1..close]
            .iter()
            .filter(|b| !(b.is_ascii_alphanumeric() || **b == b'_'))
            .copied()
            .collect()
    }
}

/// Why a macro or class name could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing usable after `$`/`.D`.
    #[error("Name required for macro/class")]
    Missing,
    /// `{name` without `}`; carries the text after `{`.
    #[error("Unbalanced {{ on {0}\nUnable to assign macro/class ID (mid = 0xffffffff)")]
    Unbalanced(String),
}

impl MacroNames {
    /// Like [`parse`](Self::parse), telling a missing name from an unclosed `{`.
    pub fn parse_checked(&mut self, s: &[u8]) -> Result<(u8, usize), NameError> {
        if s.first() == Some(&b'{') && !s.contains(&b'}') {
            return Err(NameError::Unbalanced(
                String::from_utf8_lossy(&s[1..]).into_owned(),
            ));
        }
        self.parse(s).ok_or(NameError::Missing)
    }
}

/// Turn cf text into internal form: `$x` → MACROEXPAND x, `$*` → MATCHZANY, `$1` → MATCHREPL
/// 1, `$=X` → MATCHCLASS X, `$&X` → MACRODEXPAND X, `${name}` → MACROEXPAND id.
pub fn translate_dollars(names: &mut MacroNames, s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b != b'$' || i + 1 >= s.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let c = s[i + 1];
        i += 2;
        if c.is_ascii_digit() {
            out.push(meta::MATCHREPL);
            out.push(c);
        } else if let Some(m) = meta::from_letter(c) {
            out.push(m);
            if matches!(m, meta::MATCHCLASS | meta::MATCHNCLASS | meta::MACRODEXPAND)
                && let Some((id, used)) = names.parse(&s[i..])
            {
                out.push(id);
                i += used;
            }
        } else if let Some((id, used)) = names.parse(&s[i - 1..]) {
            out.push(meta::MACROEXPAND);
            out.push(id);
            i += used - 1;
        } else {
            out.push(b'$');
            out.push(c);
        }
    }
    out
}

/// Macro values (internal form) and class members.
///
/// Class words live in one table shared by all classes, as in sendmail's symbol table: a
/// word keeps the spelling it was first added with, whichever class that was.
#[derive(Debug, Clone, Default)]
pub struct Macros {
    values: HashMap<u8, Vec<u8>>,
    /// Every class word ever added, in order, with its first spelling.
    words: Vec<Vec<u8>>,
    /// Lower-cased word → index in `words`.
    word_index: HashMap<Vec<u8>, usize>,
    /// Class id → word indices, in the order added.
    classes: HashMap<u8, Vec<usize>>,
}

impl Macros {
    /// Define (or redefine) a macro; the value is in internal form.
    pub fn define(&mut self, id: u8, value: Vec<u8>) {
        self.values.insert(id, value);
    }

    /// Remove a macro.
    pub fn undefine(&mut self, id: u8) {
        self.values.remove(&id);
    }

    /// The raw (internal form) value of a macro.
    pub fn get(&self, id: u8) -> Option<&[u8]> {
        self.values.get(&id).map(|v| v.as_slice())
    }

    /// Add a word to a class (case-insensitive, no duplicates).
    pub fn add_to_class(&mut self, class: u8, word: &[u8]) {
        let key = word.to_ascii_lowercase();
        let idx = match self.word_index.get(&key) {
            Some(&i) => i,
            None => {
                self.words.push(word.to_vec());
                self.word_index.insert(key, self.words.len() - 1);
                self.words.len() - 1
            }
        };
        let list = self.classes.entry(class).or_default();
        if !list.contains(&idx) {
            list.push(idx);
        }
    }

    /// Every defined macro: id and raw (internal form) value, in id order.
    pub fn defined(&self) -> Vec<(u8, &[u8])> {
        let mut v: Vec<(u8, &[u8])> = self
            .values
            .iter()
            .map(|(id, v)| (*id, v.as_slice()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// The ids of every class with at least one word, in id order.
    pub fn class_ids(&self) -> Vec<u8> {
        let mut v: Vec<u8> = self
            .classes
            .iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(id, _)| *id)
            .collect();
        v.sort_unstable();
        v
    }

    /// Is `word` in class `class`?
    pub fn in_class(&self, class: u8, word: &[u8]) -> bool {
        let Some(i) = self.word_index.get(&word.to_ascii_lowercase()) else {
            return false;
        };
        self.classes.get(&class).is_some_and(|l| l.contains(i))
    }

    /// The members of a class in the order they were added (first spellings).
    pub fn class(&self, class: u8) -> Vec<Vec<u8>> {
        self.class_entries(class)
            .into_iter()
            .map(|(_, w)| w)
            .collect()
    }

    /// Members with their global insertion rank (for symbol-table ordering).
    pub fn class_entries(&self, class: u8) -> Vec<(usize, Vec<u8>)> {
        self.classes
            .get(&class)
            .map(|l| l.iter().map(|&i| (i, self.words[i].clone())).collect())
            .unwrap_or_default()
    }

    /// Expand `$x`, `$?x ... $| ... $.` in internal text; `$&x` and rule metasymbols are
    /// kept. Values are expanded recursively (bounded depth, and no more values once the
    /// output reaches [`crate::config::macros::MAX_EXPANSION`]).
    pub fn expand(&self, s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.expand_into(s, &mut out, 0);
        out
    }

    fn expand_into(&self, s: &[u8], out: &mut Vec<u8>, depth: usize) {
        // conditional stack: true = copying at this level
        let mut skip_level = 0usize; // >0: skipping inside a false branch at this depth
        let mut iflev = 0usize;
        let mut i = 0;
        while i < s.len() {
            let c = s[i];
            i += 1;
            match c {
                meta::CONDIF => {
                    let id = s.get(i).copied().unwrap_or(0);
                    i += 1;
                    iflev += 1;
                    if skip_level == 0 {
                        let defined = self.values.get(&id).is_some_and(|v| !v.is_empty());
                        if !defined {
                            skip_level = iflev;
                        }
                    }
                    continue;
                }
                meta::CONDELSE if iflev > 0 => {
                    if skip_level == iflev {
                        skip_level = 0;
                    } else if skip_level == 0 {
                        skip_level = iflev;
                    }
                    continue;
                }
                meta::CONDFI if iflev > 0 => {
                    if skip_level == iflev {
                        skip_level = 0;
                    }
                    iflev -= 1;
                    continue;
                }
                _ => {}
            }
            if skip_level > 0 {
                if c == meta::MACROEXPAND || c == meta::MACRODEXPAND {
                    i += 1;
                }
                continue;
            }
            if c == meta::MACROEXPAND {
                let id = s.get(i).copied().unwrap_or(0);
                i += 1;
                if out.len() >= crate::config::macros::MAX_EXPANSION {
                    continue;
                }
                if let Some(v) = self.values.get(&id) {
                    if depth < 20 {
                        self.expand_into(v, out, depth + 1);
                    } else {
                        out.extend_from_slice(v);
                    }
                }
                continue;
            }
            if c == meta::MACRODEXPAND {
                out.push(c);
                if let Some(&id) = s.get(i) {
                    out.push(id);
                    i += 1;
                }
                continue;
            }
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_dollar_sequences() {
        let mut n = MacroNames::new();
        let t = translate_dollars(&mut n, b"$* $=w $1 $&h ${client_addr} $j");
        let id = n.find("client_addr").unwrap();
        assert_eq!(
            t,
            [
                meta::MATCHZANY,
                b' ',
                meta::MATCHCLASS,
                b'w',
                b' ',
                meta::MATCHREPL,
                b'1',
                b' ',
                meta::MACRODEXPAND,
                b'h',
                b' ',
                meta::MACROEXPAND,
                id,
                b' ',
                meta::MACROEXPAND,
                b'j'
            ]
        );
    }

    #[test]
    fn expands_recursively_and_keeps_deferred() {
        let mut n = MacroNames::new();
        let mut m = Macros::default();
        m.define(b'w', b"oracle".to_vec());
        m.define(b'j', translate_dollars(&mut n, b"$w.example.test"));
        let s = translate_dollars(&mut n, b"<$j> $&x");
        assert_eq!(
            m.expand(&s),
            [
                b"<oracle.example.test> ".as_slice(),
                &[meta::MACRODEXPAND, b'x']
            ]
            .concat()
        );
    }

    /// Fuzz input (`cf_reader`): a macro whose value names itself several times grew as
    /// (references)^(depth) and took over 1 GB; the expansion now stops at its bound.
    #[test]
    fn a_self_referencing_macro_expands_to_a_bounded_length() {
        let mut n = MacroNames::new();
        let mut m = Macros::default();
        m.define(b'u', translate_dollars(&mut n, b"e $u $u"));
        let out = m.expand(&translate_dollars(&mut n, b"$u"));
        assert!(out.starts_with(b"e e e "));
        assert!(
            out.len() < 2 * crate::config::macros::MAX_EXPANSION,
            "{}",
            out.len()
        );
    }

    #[test]
    fn conditionals() {
        let mut n = MacroNames::new();
        let mut m = Macros::default();
        m.define(b'x', b"X".to_vec());
        let s = translate_dollars(&mut n, b"a$?xyes$|no$.b$?ynope$.c");
        assert_eq!(m.expand(&s), b"ayesbc");
    }

    #[test]
    fn classes_are_case_insensitive() {
        let mut m = Macros::default();
        m.add_to_class(b'w', b"Oracle");
        assert!(m.in_class(b'w', b"ORACLE"));
        assert!(!m.in_class(b'w', b"other"));
    }
}
