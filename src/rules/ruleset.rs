//! Rulesets: `S` lines name and number them, `R` lines fill them.
//!
//! In: ruleset declarations (`Sname=N`, `SN`, `Sname`) and rules as cf text (LHS, RHS). Out:
//! [`RuleSets`], each rule as two token vectors in internal form, ready for the matcher.
//! Macros (`$x`) in rules are expanded when the rule is read; `$&x` stays deferred.
//!
//! Source: sendmail 8.17 readcf.c (`R` and `S` lines, `strtorwset`), op.txt §5.1.3–5.1.4.

use super::macros::{MacroNames, Macros, translate_dollars};
use super::token::{Table, TokenTables, Tokens, meta, prescan};
use std::collections::HashMap;
use std::sync::Arc;

/// Number of ruleset slots (sendmail's MAXRWSETS).
pub const MAXRWSETS: usize = 200;

/// One `R` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Pattern tokens.
    pub lhs: Tokens,
    /// Replacement tokens.
    pub rhs: Tokens,
}

/// Why a rule or ruleset line was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A ruleset number outside 0..MAXRWSETS.
    #[error("bad ruleset {0} ({max} max)", max = MAXRWSETS)]
    BadNumber(i64),
    /// A ruleset name that is not `[A-Za-z0-9_]+`.
    #[error("invalid ruleset name: \"{0}\"")]
    BadName(String),
    /// The same name declared with two numbers.
    #[error("{name}: ruleset changed value (old {old}, new {new})")]
    Renumbered {
        name: String,
        old: usize,
        new: usize,
    },
    /// No free slot for a named ruleset.
    #[error("too many named rulesets ({max} max)", max = MAXRWSETS)]
    TooMany,
    /// `$N` on the RHS with fewer than N wildcards on the LHS (the rule is kept).
    #[error("replacement ${0} out of bounds")]
    ReplacementOutOfBounds(char),
    /// `$(` or `$[` inside another lookup (the rule is kept).
    #[error("cannot nest map lookups")]
    NestedLookup,
    /// A LHS wildcard on the RHS (the rule is kept).
    #[error("Inappropriate use of {0} on RHS")]
    RhsMeta(&'static str),
    /// A metasymbol that has no meaning on a LHS (`$:`, `$>`, `$1`, ...).
    #[error("Inappropriate use of {0} on LHS")]
    LhsMeta(&'static str),
}

/// All rulesets of a configuration.
#[derive(Debug, Clone)]
pub struct RuleSets {
    rules: Vec<Vec<Arc<Rule>>>,
    names: Vec<Option<String>>,
    by_name: HashMap<String, usize>,
    next_auto: usize,
}

impl Default for RuleSets {
    fn default() -> Self {
        RuleSets {
            rules: vec![Vec::new(); MAXRWSETS],
            names: vec![None; MAXRWSETS],
            by_name: HashMap::new(),
            next_auto: MAXRWSETS,
        }
    }
}

impl RuleSets {
    /// Declare a ruleset (an `S` line) and return its number.
    pub fn declare(
        &mut self,
        name: Option<&str>,
        number: Option<usize>,
    ) -> Result<usize, RuleError> {
        if let Some(n) = number
            && n >= MAXRWSETS
        {
            return Err(RuleError::BadNumber(n as i64));
        }
        let Some(name) = name else {
            return Ok(number.unwrap_or(0));
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(RuleError::BadName(name.to_string()));
        }
        if let Some(&old) = self.by_name.get(name) {
            return match number {
                Some(n) if n != old => Err(RuleError::Renumbered {
                    name: name.to_string(),
                    old,
                    new: n,
                }),
                _ => Ok(old),
            };
        }
        let n = match number {
            Some(n) => n,
            None => {
                let mut n = self.next_auto;
                loop {
                    if n <= 1 {
                        return Err(RuleError::TooMany);
                    }
                    n -= 1;
                    if self.names[n].is_none() && self.rules[n].is_empty() {
                        break;
                    }
                }
                self.next_auto = n;
                n
            }
        };
        self.names[n] = Some(name.to_string());
        self.by_name.insert(name.to_string(), n);
        Ok(n)
    }

    /// Append a rule to ruleset `n`.
    pub fn push(&mut self, n: usize, rule: Rule) {
        if let Some(set) = self.rules.get_mut(n) {
            set.push(Arc::new(rule));
        }
    }

    /// The rules of ruleset `n` (empty when undefined).
    pub fn rules(&self, n: usize) -> &[Arc<Rule>] {
        self.rules.get(n).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// The name printed in traces: the declared name or the number.
    pub fn display_name(&self, n: usize) -> String {
        match self.names.get(n).and_then(|x| x.as_ref()) {
            Some(s) => s.clone(),
            None => n.to_string(),
        }
    }

    /// Look a ruleset up by name or number (sendmail's `strtorwset(..., ST_FIND)`): returns
    /// the number and the bytes consumed, or `None` when not found.
    pub fn find(&self, s: &str) -> Lookup {
        // leading white space is skipped (and counted as consumed)
        let skipped = s.len() - s.trim_start().len();
        match self.find_trimmed(&s[skipped..]) {
            Lookup::Found(n, len) => Lookup::Found(n, len + skipped),
            Lookup::NotFound(len) => Lookup::NotFound(len + skipped),
            Lookup::BadNumber(n, len) => Lookup::BadNumber(n, len + skipped),
            Lookup::BadName => Lookup::BadName,
        }
    }

    fn find_trimmed(&self, s: &str) -> Lookup {
        let b = s.as_bytes();
        if b.first().is_some_and(|c| c.is_ascii_digit()) {
            let len = b.iter().take_while(|c| c.is_ascii_digit()).count();
            let n: i64 = s[..len].parse().unwrap_or(i64::MAX);
            // numbers above MAXRWSETS/2 belong to named rulesets and cannot be typed
            if n < 0 || n as usize >= MAXRWSETS / 2 {
                return Lookup::BadNumber(n, len);
            }
            return Lookup::Found(n as usize, len);
        }
        let len = b
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .count();
        if len == 0 {
            return Lookup::BadName;
        }
        match self.by_name.get(&s[..len]) {
            Some(&n) => Lookup::Found(n, len),
            None => Lookup::NotFound(len),
        }
    }
}

/// Result of [`RuleSets::find`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Ruleset number and the length of the name.
    Found(usize, usize),
    /// A well-formed name that is not declared.
    NotFound(usize),
    /// A number out of range.
    BadNumber(i64, usize),
    /// Not a name at all.
    BadName,
}

/// Turn an `R` line's LHS and RHS text into a [`Rule`]: translate `$` sequences, expand
/// macros now (deferred `$&x` stays), tokenize with the configured table.
pub fn compile_rule(
    names: &mut MacroNames,
    macros: &Macros,
    tables: &TokenTables,
    table: Table,
    lhs: &str,
    rhs: &str,
) -> Result<Rule, RuleError> {
    let l = macros.expand(&translate_dollars(names, lhs.as_bytes()));
    let r = macros.expand(&translate_dollars(names, rhs.as_bytes()));
    let lhs = prescan(tables, &l, None, table, true)
        .result
        .unwrap_or_default();
    for t in &lhs {
        let botch = match t[0] {
            meta::MATCHREPL => Some("$1-$9"),
            meta::CANONUSER => Some("$:"),
            meta::CALLSUBR => Some("$>"),
            meta::CONDIF => Some("$?"),
            meta::CONDFI => Some("$."),
            meta::HOSTBEGIN => Some("$["),
            meta::HOSTEND => Some("$]"),
            meta::LOOKUPBEGIN => Some("$("),
            meta::LOOKUPEND => Some("$)"),
            _ => None,
        };
        if let Some(b) = botch {
            return Err(RuleError::LhsMeta(b));
        }
    }
    let rhs = prescan(tables, &r, None, table, true)
        .result
        .unwrap_or_default();
    Ok(Rule { lhs, rhs })
}

/// What sendmail warns about in a rule it still uses: `$N` beyond the LHS wildcards, LHS
/// wildcards on the RHS.
pub fn rule_warnings(rule: &Rule) -> Vec<RuleError> {
    let fuzzy = rule
        .lhs
        .iter()
        .filter(|t| {
            matches!(
                t[0],
                meta::MATCHZANY
                    | meta::MATCHANY
                    | meta::MATCHONE
                    | meta::MATCHCLASS
                    | meta::MATCHNCLASS
            )
        })
        .count();
    let mut out = Vec::new();
    let mut open = 0usize;
    for t in &rule.rhs {
        match t[0] {
            meta::LOOKUPBEGIN | meta::HOSTBEGIN => {
                if open > 0 {
                    out.push(RuleError::NestedLookup);
                }
                open += 1;
            }
            meta::LOOKUPEND | meta::HOSTEND => open = open.saturating_sub(1),
            _ => {}
        }
        match t[0] {
            meta::MATCHREPL => {
                let d = t.get(1).copied().unwrap_or(b'0');
                if (d as usize).saturating_sub(b'0' as usize) > fuzzy {
                    out.push(RuleError::ReplacementOutOfBounds(d as char));
                }
            }
            meta::MATCHZANY => out.push(RuleError::RhsMeta("$*")),
            meta::MATCHANY => out.push(RuleError::RhsMeta("$+")),
            meta::MATCHONE => out.push(RuleError::RhsMeta("$-")),
            meta::MATCHCLASS => out.push(RuleError::RhsMeta("$=")),
            meta::MATCHNCLASS => out.push(RuleError::RhsMeta("$~")),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rhs_problems_are_warnings() {
        let mut names = MacroNames::new();
        let tables = TokenTables::default();
        let r = compile_rule(
            &mut names,
            &Macros::default(),
            &tables,
            Table::Int,
            "$* @ $+",
            "$3 $*",
        )
        .unwrap();
        assert_eq!(
            rule_warnings(&r),
            vec![
                RuleError::ReplacementOutOfBounds('3'),
                RuleError::RhsMeta("$*")
            ]
        );
    }

    #[test]
    fn named_rulesets_get_numbers_from_the_top() {
        let mut rs = RuleSets::default();
        assert_eq!(rs.declare(Some("canonify"), Some(3)).unwrap(), 3);
        assert_eq!(rs.declare(Some("Parse0"), None).unwrap(), 199);
        assert_eq!(rs.declare(Some("Parse1"), None).unwrap(), 198);
        assert_eq!(rs.find("canonify,parse"), Lookup::Found(3, 8));
        assert_eq!(rs.find("3,0"), Lookup::Found(3, 1));
        assert_eq!(rs.find("nosuch"), Lookup::NotFound(6));
        assert_eq!(rs.find("PARSE0"), Lookup::NotFound(6));
        assert_eq!(rs.find(" 3"), Lookup::Found(3, 2));
        assert_eq!(rs.display_name(2), "2");
        assert_eq!(rs.display_name(3), "canonify");
    }

    #[test]
    fn renumbering_is_an_error() {
        let mut rs = RuleSets::default();
        rs.declare(Some("x"), Some(5)).unwrap();
        assert!(rs.declare(Some("x"), Some(6)).is_err());
        assert!(rs.declare(Some("bad-name"), None).is_err());
        assert!(rs.declare(None, Some(200)).is_err());
    }

    #[test]
    fn compiles_rule_with_macros_expanded_and_deferred_kept() {
        let mut names = MacroNames::new();
        let mut macros = Macros::default();
        macros.define(b'j', b"oracle.example.test".to_vec());
        let tables = TokenTables::new(b".:%@!^/[]+");
        let r = compile_rule(
            &mut names,
            &macros,
            &tables,
            Table::NoComment,
            "$* < @ *LOCAL* > $*",
            "$1 < @ $j . > $2 $&h",
        )
        .unwrap();
        assert_eq!(r.lhs.len(), 6);
        let rhs: Vec<&[u8]> = r.rhs.iter().map(|t| t.as_slice()).collect();
        assert_eq!(rhs[3], b"oracle");
        assert_eq!(rhs.last().unwrap(), &[meta::MACRODEXPAND, b'h']);
    }

    #[test]
    fn rejects_rhs_metasymbols_on_lhs() {
        let mut names = MacroNames::new();
        let tables = TokenTables::default();
        let e = compile_rule(
            &mut names,
            &Macros::default(),
            &tables,
            Table::Int,
            "$: x",
            "y",
        );
        assert_eq!(e, Err(RuleError::LhsMeta("$:")));
    }
}
