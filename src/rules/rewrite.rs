//! The rewriting engine: match a token vector against a ruleset's rules and rewrite it.
//!
//! In: a token vector and a ruleset number. Out: the rewritten vector and a status
//! (`EX_OK`, `EX_TEMPFAIL` when a map lookup failed temporarily, `EX_CONFIG`/`EX_DATAERR` on
//! broken rules). In test mode every ruleset call prints its `input:`/`returns:` trace line.
//!
//! Semantics (op.txt §5.1.3 and parseaddr.c `rewrite`): rules are tried in order; a rule
//! whose LHS matches is applied and tried again (at most 100 times in a row), unless its RHS
//! starts with `$:` (apply once, go on) or `$@` (apply once, return). A vector starting with
//! `$#` is final. `$>set` calls run right to left after map lookups (`$[ $]`, `$( $)`).
//! Matching is sendmail's backtracking matcher; it is bounded by a step budget so hostile
//! rules cannot hang the process.

use super::macros::{MacroNames, Macros};
use super::maps::Maps;
use super::print::printav;
use super::ruleset::{Lookup, RuleSets};
use super::token::{Table, Token, TokenTables, Tokens, meta, prescan};
use crate::sysexits::{EX_CONFIG, EX_DATAERR, EX_OK, EX_TEMPFAIL, EX_USAGE};

/// Maximum tokens in a rewritten vector (sendmail's MAXATOM).
pub const MAXATOM: usize = super::token::MAXATOM;
/// Rewrites of the same rule in a row before "Infinite loop" (sendmail: 100).
pub const LOOP_LIMIT: usize = 100;
/// Default nesting limit of `$>` calls (MaxRuleRecursion).
pub const MAX_RULE_RECURSION: usize = 50;
/// Subroutine calls in one rewritten vector (sendmail's MAX_SUBR).
pub const MAX_SUBR: usize = 16;
/// Matcher steps per rule before the match is abandoned (not in sendmail: fuzz safety).
pub const MATCH_BUDGET: usize = 1_000_000;
/// Longest map key / class phrase (sendmail's MAXKEY / MAXLINE are in this range).
const MAXKEY: usize = 1024;

/// Everything the rules read while running.
#[derive(Debug, Clone)]
pub struct Engine {
    pub tables: TokenTables,
    pub names: MacroNames,
    pub macros: Macros,
    pub rulesets: RuleSets,
    pub maps: Maps,
    /// `BlankSub`: joins adjacent atoms in class phrases and map keys.
    pub space_sub: u8,
    /// Nesting limit of `$>` calls.
    pub max_recursion: usize,
    /// Print `input:`/`returns:` lines (address test mode).
    pub trace: bool,
    /// Trace lines and messages, in order. `-bt` prints them; other callers drain them
    /// (see [`check::take_messages`](super::check::take_messages)).
    pub out: Vec<u8>,
    /// The most serious status reported by `syserr`-like failures (for the exit code).
    pub exit_stat: i32,
    /// The address being processed (sendmail's `e_to`): prefixes error messages.
    pub e_to: Option<Vec<u8>>,
    /// Maps whose failure to open was already reported.
    pub reported_maps: std::collections::HashSet<String>,
    /// Where `syserr` also goes, as sendmail's `syserr` logs every one: the mail log and the
    /// user named in `SYSERR(user)` (set where the daemon builds its engine; `None`: only
    /// the message output above).
    pub syserr_log: Option<(crate::log::Logger, String)>,
    /// Whether a `syserr` happened since this was last cleared (the caller's to reset).
    pub syserr_seen: bool,
}

impl Default for Engine {
    fn default() -> Self {
        Engine {
            tables: TokenTables::default(),
            names: MacroNames::new(),
            macros: Macros::default(),
            rulesets: RuleSets::default(),
            maps: Maps::default(),
            space_sub: b' ',
            max_recursion: MAX_RULE_RECURSION,
            trace: false,
            out: Vec::new(),
            exit_stat: EX_OK,
            e_to: None,
            reported_maps: Default::default(),
            syserr_log: None,
            syserr_seen: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Match {
    first: usize,
    /// One past the last matched token (first == end: matched nothing).
    end: usize,
    pattern: usize,
}

/// Concatenate tokens as sendmail's `cataddr`: adjacent atoms joined by `sep` (none when
/// `sep` is `None`); with `external`, METAQUOTE is removed.
pub fn cataddr(tables: &TokenTables, toks: &[Token], sep: Option<u8>, external: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev_atom = false;
    for t in toks {
        let atom = t.first().is_some_and(|&c| tables.is_atom_start(c));
        if prev_atom
            && atom
            && let Some(s) = sep
        {
            out.push(s);
        }
        let mut i = 0;
        while i < t.len() {
            let c = t[i];
            i += 1;
            if c == meta::METAQUOTE && external && i < t.len() {
                out.push(t[i]);
                i += 1;
            } else {
                out.push(c);
            }
        }
        prev_atom = atom;
    }
    out
}

/// Remove double quotes and the backslashes that quote (sendmail's `stripquotes`).
pub fn stripquotes(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c == b'\\' {
            if i < s.len() {
                out.push(s[i]);
                i += 1;
            }
        } else if c != b'"' {
            out.push(c);
        }
    }
    out
}

enum Step {
    Advance,
    Backup,
    Extend(usize),
}

impl Engine {
    /// A user error as test mode prints it: SMTP and enhanced codes dropped, prefixed by
    /// the current address (`addr... text`) when its reply code is one sendmail names it for. `msg` is Latin-1 (one char per byte).
    pub fn usrerr(&mut self, msg: &str) {
        let bytes: Vec<u8> = msg.chars().map(|c| c as u32 as u8).collect();
        self.usrerr_bytes(&bytes);
    }

    /// [`usrerr`](Self::usrerr) for a message in bytes. Like sendmail's message output,
    /// every byte loses its eighth bit, and a byte that becomes NUL ends the line.
    pub fn usrerr_bytes(&mut self, msg: &[u8]) {
        let text = strip_codes_bytes(msg);
        let mut line = Vec::new();
        // sendmail's fmtmsg names the address only for replies 050, 250, 550 and 553 (a
        // message without a code is a 553): `552 full` is printed as `full`.
        let code = match msg {
            [a, b, c, b' ' | b'-', ..] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
                [*a, *b, *c]
            }
            _ => *b"553",
        };
        let named = matches!(&code, b"050" | b"250" | b"550" | b"553");
        if let Some(to) = self.e_to.as_ref().filter(|_| named) {
            line.extend_from_slice(&shorten(to));
            line.extend_from_slice(b"... ");
        }
        line.extend_from_slice(text);
        let end = line
            .iter()
            .position(|&b| b & 0x7f == 0)
            .unwrap_or(line.len());
        line.truncate(end);
        for b in line.iter_mut() {
            *b &= 0x7f;
        }
        line.push(b'\n');
        self.out.extend_from_slice(&line);
    }

    /// A configuration/software error (sendmail's `syserr`): printed without the address
    /// prefix, and the exit status becomes `EX_SOFTWARE` (70).
    pub fn syserr(&mut self, msg: &str) {
        self.syserr_seen = true;
        if let Some((log, user)) = &self.syserr_log {
            log.log(
                crate::log::Severity::Crit,
                Some("NOQUEUE"),
                format_args!("SYSERR({user}): {}", strip_codes(msg)),
            );
        }
        let saved = self.e_to.take();
        self.usrerr(msg);
        self.e_to = saved;
        self.setstat(crate::sysexits::EX_SOFTWARE);
    }

    /// sendmail's `setstat`: remember the first status that is neither OK nor a temporary
    /// failure (a later hard failure replaces a temporary one: the oracle's `-bv` of a
    /// 4.x.x `error:` address then a 5.7.1 one exits 65).
    pub fn setstat(&mut self, st: i32) {
        if self.exit_stat == EX_OK || self.exit_stat == crate::sysexits::EX_TEMPFAIL {
            self.exit_stat = st;
        }
    }

    fn class_has(&self, class: u8, toks: &[Token]) -> bool {
        let phrase = cataddr(&self.tables, toks, Some(self.space_sub), true);
        phrase.len() < MAXKEY && self.macros.in_class(class, &phrase)
    }

    /// Try to match `lhs` against `pvp`; on success the match list is returned.
    fn match_lhs(&self, lhs: &[Token], pvp: &[Token]) -> Option<Vec<Match>> {
        let mut ml: Vec<Match> = Vec::with_capacity(lhs.len());
        let (mut rvp, mut avp) = (0usize, 0usize);
        let mut budget = MATCH_BUDGET;
        let mut step = Step::Advance;
        loop {
            budget = budget.checked_sub(1)?;
            match step {
                Step::Advance => {
                    if avp >= pvp.len() && rvp >= lhs.len() {
                        return Some(ml);
                    }
                    if rvp >= lhs.len() {
                        step = Step::Backup;
                        continue;
                    }
                    let rp = &lhs[rvp];
                    let kind = rp[0];
                    if avp >= pvp.len() && kind != meta::MATCHZANY && kind != meta::MATCHZERO {
                        step = Step::Backup;
                        continue;
                    }
                    match kind {
                        meta::MATCHCLASS => {
                            ml.push(Match {
                                first: avp,
                                end: avp,
                                pattern: rvp,
                            });
                            step = Step::Extend(ml.len() - 1);
                            continue;
                        }
                        meta::MATCHNCLASS | meta::MATCHONE | meta::MATCHANY => {
                            if kind == meta::MATCHNCLASS
                                && self.macros.in_class(
                                    rp.get(1).copied().unwrap_or(0),
                                    &cataddr(&self.tables, &pvp[avp..=avp], None, true),
                                )
                            {
                                step = Step::Backup;
                                continue;
                            }
                            ml.push(Match {
                                first: avp,
                                end: avp + 1,
                                pattern: rvp,
                            });
                            avp += 1;
                        }
                        meta::MATCHZANY => ml.push(Match {
                            first: avp,
                            end: avp,
                            pattern: rvp,
                        }),
                        meta::MATCHZERO => {}
                        meta::MACRODEXPAND => {
                            let id = rp.get(1).copied().unwrap_or(0);
                            if let Some(v) = self.macros.get(id) {
                                let mut v: &[u8] = v;
                                let start = avp;
                                let mut ok = true;
                                while !v.is_empty() {
                                    match pvp.get(avp) {
                                        Some(t)
                                            if v.len() >= t.len()
                                                && v[..t.len()].eq_ignore_ascii_case(t)
                                                && !t.is_empty() =>
                                        {
                                            v = &v[t.len()..];
                                            avp += 1;
                                        }
                                        _ => {
                                            ok = false;
                                            break;
                                        }
                                    }
                                }
                                if !ok {
                                    avp = start;
                                    step = Step::Backup;
                                    continue;
                                }
                            }
                        }
                        _ => {
                            if !rp.eq_ignore_ascii_case(&pvp[avp]) {
                                step = Step::Backup;
                                continue;
                            }
                            avp += 1;
                        }
                    }
                    rvp += 1;
                }
                Step::Extend(i) => {
                    if avp >= pvp.len() {
                        step = Step::Backup;
                        continue;
                    }
                    avp += 1;
                    ml[i].end = avp;
                    let m = ml[i];
                    let class = lhs[m.pattern].get(1).copied().unwrap_or(0);
                    if self.class_has(class, &pvp[m.first..m.end]) {
                        rvp = m.pattern + 1;
                        step = Step::Advance;
                    }
                }
                Step::Backup => {
                    step = Step::Advance;
                    let mut resumed = false;
                    while let Some(m) = ml.pop() {
                        rvp = m.pattern;
                        avp = m.end;
                        if avp >= pvp.len() {
                            continue;
                        }
                        let kind = lhs[rvp][0];
                        if kind == meta::MATCHANY || kind == meta::MATCHZANY {
                            ml.push(Match { end: avp + 1, ..m });
                            avp += 1;
                            rvp += 1;
                            resumed = true;
                            break;
                        }
                        if kind == meta::MATCHCLASS {
                            ml.push(m);
                            step = Step::Extend(ml.len() - 1);
                            resumed = true;
                            break;
                        }
                    }
                    if !resumed {
                        return None;
                    }
                }
            }
        }
    }

    /// Run ruleset `set` on `pvp` (sendmail's `rewrite`). `maxatom` bounds the vector.
    pub fn rewrite(
        &mut self,
        pvp: &mut Tokens,
        set: usize,
        reclevel: usize,
        maxatom: usize,
    ) -> i32 {
        let name = self.rulesets.display_name(set);
        if self.trace {
            self.out
                .extend_from_slice(format!("{:<16.16}   input:", name).as_bytes());
            printav(&mut self.out, &self.names, pvp);
        }
        if reclevel > self.max_recursion {
            self.syserr(&format!(
                "rewrite: excessive recursion (max {}), ruleset {}",
                self.max_recursion, name
            ));
            return EX_CONFIG;
        }
        let reclevel = reclevel + 1;
        if maxatom == 0 {
            return EX_USAGE;
        }
        let mut rstat = EX_OK;
        let nrules = self.rulesets.rules(set).len();
        let mut ruleno = 0usize;
        let mut loopcount = 0usize;
        while ruleno < nrules {
            if pvp.first().is_some_and(|t| meta::is(t, meta::CANONNET)) {
                break;
            }
            loopcount += 1;
            if loopcount > LOOP_LIMIT {
                self.syserr(&format!(
                    "554 5.3.5 Infinite loop in ruleset {}, rule {}",
                    name,
                    ruleno + 1
                ));
                break;
            }
            let rule = self.rulesets.rules(set)[ruleno].clone();
            let Some(ml) = self.match_lhs(&rule.lhs, pvp) else {
                ruleno += 1;
                loopcount = 0;
                continue;
            };
            let mut rhs: &[Token] = &rule.rhs;
            let mut stop = false;
            if let Some(first) = rhs.first() {
                if meta::is(first, meta::CANONUSER) {
                    rhs = &rhs[1..];
                    ruleno += 1;
                    loopcount = 0;
                } else if meta::is(first, meta::CANONHOST) {
                    rhs = &rhs[1..];
                    stop = true;
                }
            }
            let mut npvp: Tokens = Vec::new();
            for rp in rhs {
                if meta::is(rp, meta::MATCHREPL) {
                    let d = rp.get(1).copied().unwrap_or(b'0');
                    let idx = (d as usize).wrapping_sub(b'1' as usize);
                    let Some(m) = ml.get(idx) else {
                        self.syserr(&format!(
                            "554 5.3.5 rewrite: ruleset {}: replacement ${} out of bounds",
                            name, d as char
                        ));
                        return EX_CONFIG;
                    };
                    for t in &pvp[m.first..m.end] {
                        if npvp.len() >= maxatom {
                            return self.too_long();
                        }
                        npvp.push(t.clone());
                    }
                    continue;
                }
                if npvp.len() >= maxatom {
                    return self.too_long();
                }
                if !meta::is(rp, meta::MACRODEXPAND) {
                    npvp.push(rp.clone());
                    continue;
                }
                let id = rp.get(1).copied().unwrap_or(0);
                let Some(val) = self.macros.get(id).map(|v| v.to_vec()) else {
                    continue;
                };
                if val.is_empty() {
                    continue;
                }
                let scan = prescan(&self.tables, &val, None, Table::Ext, false);
                self.print_diags(&val, &scan.diagnostics);
                let Ok(toks) = scan.result else {
                    return EX_DATAERR;
                };
                for t in toks {
                    npvp.push(t);
                    if npvp.len() >= maxatom {
                        return self.too_long();
                    }
                }
            }
            match self.do_lookups(&mut npvp, maxatom, &mut rstat) {
                Ok(()) => {}
                Err(st) => return st,
            }
            let status = self.callsubr(&mut npvp, reclevel);
            if rstat == EX_OK || status == EX_TEMPFAIL {
                rstat = status;
            }
            *pvp = npvp;
            if stop {
                break;
            }
        }
        if self.trace {
            self.out
                .extend_from_slice(format!("{:<16.16} returns:", name).as_bytes());
            printav(&mut self.out, &self.names, pvp);
        }
        rstat
    }

    fn too_long(&mut self) -> i32 {
        self.syserr("554 5.3.0 rewrite: expansion too long");
        EX_DATAERR
    }

    /// Print prescan diagnostics the way `usrerr` shows them in test mode (the scanned
    /// text is the current address meanwhile).
    pub fn print_diags(&mut self, addr: &[u8], diags: &[String]) {
        let saved = self.e_to.replace(addr.to_vec());
        for d in diags {
            self.usrerr(d);
        }
        self.e_to = saved;
    }

    /// Replace `$[ host $]` and `$( map key $@ arg $: default $)` in `npvp`.
    fn do_lookups(
        &mut self,
        npvp: &mut Tokens,
        maxatom: usize,
        rstat: &mut i32,
    ) -> Result<(), i32> {
        let mut i = 0;
        while i < npvp.len() {
            let (endtok, mapname, keystart) = if meta::is(&npvp[i], meta::HOSTBEGIN) {
                (meta::HOSTEND, b"host".to_vec(), i + 1)
            } else if meta::is(&npvp[i], meta::LOOKUPBEGIN) {
                match npvp.get(i + 1) {
                    Some(n) => (meta::LOOKUPEND, n.clone(), i + 2),
                    None => {
                        self.syserr("554 5.3.0 rewrite: missing mapname");
                        return Err(EX_CONFIG);
                    }
                }
            } else {
                i += 1;
                continue;
            };
            let mapname = String::from_utf8_lossy(&mapname).into_owned();
            let exists = self.maps.maps.contains_key(&mapname);
            if !exists {
                self.syserr(&format!("554 5.3.0 rewrite: map {mapname} not found"));
            }
            // split key / args / default
            let mut j = keystart;
            let mut key_end = None;
            let mut args: Vec<Vec<u8>> = Vec::new();
            let mut default: Option<(usize, usize)> = None;
            let mut seg: Option<(u8, usize)> = None; // current $@ / $: segment
            let close_seg = |seg: Option<(u8, usize)>,
                             end: usize,
                             args: &mut Vec<Vec<u8>>,
                             default: &mut Option<(usize, usize)>,
                             this: &Engine,
                             npvp: &Tokens| {
                if let Some((kind, start)) = seg {
                    if kind == meta::CANONHOST {
                        args.push(cataddr(
                            &this.tables,
                            &npvp[start..end],
                            Some(this.space_sub),
                            true,
                        ));
                    } else {
                        *default = Some((start, end));
                    }
                }
            };
            while j < npvp.len() && !meta::is(&npvp[j], endtok) {
                let t = npvp[j][0];
                if t == meta::CANONHOST || t == meta::CANONUSER {
                    if key_end.is_none() {
                        key_end = Some(j);
                    }
                    close_seg(seg, j, &mut args, &mut default, self, npvp);
                    seg = Some((t, j + 1));
                }
                j += 1;
            }
            close_seg(seg, j, &mut args, &mut default, self, npvp);
            let key_end = key_end.unwrap_or(j);
            let after = if j < npvp.len() { j + 1 } else { j };
            let key_toks: Tokens = npvp[keystart..key_end].to_vec();
            let map_sub = self
                .maps
                .maps
                .get(&mapname)
                .and_then(|m| m.space_sub)
                .unwrap_or(self.space_sub);
            let mut key = cataddr(&self.tables, &key_toks, Some(map_sub), true);
            key.truncate(MAXKEY);
            let keep_quotes = self.maps.maps.get(&mapname).is_some_and(|m| m.keep_quotes);
            if !keep_quotes {
                key = stripquotes(&key);
            }
            let (replac, external) = if exists {
                let mut argv = vec![key.clone()];
                argv.extend(args);
                let ans = self.map_lookup(&mapname, &key, &argv);
                if ans.status == EX_TEMPFAIL {
                    *rstat = EX_TEMPFAIL;
                }
                let tapp = self
                    .maps
                    .maps
                    .get(&mapname)
                    .and_then(|m| m.tempfail_append.clone());
                match (ans.status, tapp) {
                    (EX_TEMPFAIL, Some(t)) => (Some([key.clone(), t].concat()), true),
                    _ => (ans.value.clone(), ans.value.is_some()),
                }
            } else {
                (None, false)
            };
            let replac = match replac {
                Some(r) => Some(r),
                None => default
                    .map(|(a, b)| cataddr(&self.tables, &npvp[a..b], Some(self.space_sub), false)),
            };
            let xpvp: Tokens = match replac {
                None => key_toks,
                Some(r) if r.is_empty() => Vec::new(),
                Some(r) => {
                    let table = if external { Table::Ext } else { Table::Int };
                    let scan = prescan(&self.tables, &r, None, table, false);
                    self.print_diags(&r, &scan.diagnostics);
                    match scan.result {
                        Ok(t) => t,
                        Err(_) => return Err(EX_DATAERR),
                    }
                }
            };
            let n = xpvp.len();
            npvp.splice(i..after, xpvp);
            if npvp.len() > maxatom {
                return Err(self.too_long());
            }
            i += n;
        }
        Ok(())
    }

    /// One map lookup, including the `macro` class, which sets a macro.
    pub fn map_lookup(
        &mut self,
        mapname: &str,
        key: &[u8],
        argv: &[Vec<u8>],
    ) -> super::maps::MapAnswer {
        if let Some(msg) = self.maps.maps.get(mapname).and_then(|m| m.open_failure())
            && self.reported_maps.insert(mapname.to_string())
        {
            self.syserr(&msg);
        }
        let is_macro = self
            .maps
            .maps
            .get(mapname)
            .is_some_and(|m| matches!(m.kind, super::maps::MapKind::Macro));
        if is_macro {
            let name = String::from_utf8_lossy(key).into_owned();
            let name = name
                .trim_start_matches('{')
                .trim_end_matches('}')
                .to_string();
            if let Some(id) = self.names.id(&name) {
                match argv.get(1) {
                    Some(v) => self.macros.define(id, v.clone()),
                    None => self.macros.undefine(id),
                }
            }
        }
        self.maps.lookup(mapname, key, argv, 0)
    }

    /// Run the `$>set` calls in `pvp`, rightmost first (sendmail's `callsubr`).
    fn callsubr(&mut self, pvp: &mut Tokens, reclevel: usize) -> i32 {
        let mut calls: Vec<(usize, usize)> = Vec::new();
        let mut j = 0;
        while j < pvp.len() {
            if meta::is(&pvp[j], meta::CALLSUBR) && j + 1 < pvp.len() {
                let name = String::from_utf8_lossy(&stripquotes(&pvp[j + 1])).into_owned();
                let set = match self.rulesets.find(&name) {
                    Lookup::Found(n, len) if len == name.len() => n,
                    _ => {
                        self.syserr(&format!("554 5.3.5 Unknown ruleset {name}"));
                        return EX_CONFIG;
                    }
                };
                if self.rulesets.rules(set).is_empty() {
                    pvp.drain(j..j + 2);
                    j += 1;
                    continue;
                }
                if calls.len() + 1 >= MAX_SUBR {
                    self.syserr(&format!(
                        "554 5.3.0 Too many subroutine calls ({MAX_SUBR} max)"
                    ));
                    return EX_CONFIG;
                }
                calls.push((set, j));
            }
            j += 1;
        }
        let mut rstat = EX_OK;
        while let Some((set, idx)) = calls.pop() {
            let mut tail = pvp.split_off(idx);
            tail.drain(0..2);
            let status = self.rewrite(&mut tail, set, reclevel, MAXATOM.saturating_sub(idx));
            pvp.extend(tail);
            if status != EX_OK && status != EX_TEMPFAIL {
                return status;
            }
            if rstat == EX_OK || status == EX_TEMPFAIL {
                rstat = status;
            }
        }
        rstat
    }
}

/// [`strip_codes`] on bytes.
pub fn strip_codes_bytes(msg: &[u8]) -> &[u8] {
    let mut m = msg;
    if m.len() >= 4 && m[..3].iter().all(u8::is_ascii_digit) && m[3] == b' ' {
        m = &m[4..];
        let word = m.split(|&b| b == b' ').next().unwrap_or(b"");
        let parts: Vec<&[u8]> = word.split(|&b| b == b'.').collect();
        let is_dsn = parts.len() == 3
            && parts
                .iter()
                .all(|x| !x.is_empty() && x.iter().all(u8::is_ascii_digit));
        if is_dsn && m.len() > word.len() {
            m = &m[word.len() + 1..];
        }
    }
    m
}

/// Drop a leading `553 ` and `5.1.3 ` from a message.
pub fn strip_codes(msg: &str) -> &str {
    let b = msg.as_bytes();
    let mut m = msg;
    if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ' {
        m = &msg[4..];
        let dsn_len = m
            .split(' ')
            .next()
            .filter(|w| {
                let p: Vec<&str> = w.split('.').collect();
                p.len() == 3
                    && p.iter()
                        .all(|x| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit()))
            })
            .map(str::len);
        if let Some(n) = dsn_len
            && m.len() > n
        {
            m = &m[n + 1..];
        }
    }
    m
}

/// sendmail's `shortenstring(s, MAXSHORTSTR)`: long strings become head...tail.
pub fn shorten(s: &[u8]) -> Vec<u8> {
    const MAXSHORTSTR: usize = 203;
    if s.len() < MAXSHORTSTR {
        return s.to_vec();
    }
    let half = (MAXSHORTSTR - 3) / 2;
    [&s[..half], b"...".as_slice(), &s[s.len() - half..]].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ruleset::compile_rule;

    /// (name, number, rules as (LHS, RHS)).
    type SetSpec<'a> = (&'a str, usize, &'a [(&'a str, &'a str)]);

    fn engine(sets: &[SetSpec]) -> Engine {
        let mut e = Engine {
            tables: TokenTables::new(b".:%@!^/[]+"),
            ..Default::default()
        };
        for (name, num, rules) in sets {
            let n = e.rulesets.declare(Some(name), Some(*num)).unwrap();
            for (l, r) in *rules {
                let rule = compile_rule(&mut e.names, &e.macros, &e.tables, Table::NoComment, l, r)
                    .unwrap();
                e.rulesets.push(n, rule);
            }
        }
        e
    }

    fn run(e: &mut Engine, set: usize, input: &str) -> String {
        let mut t = prescan(&e.tables, input.as_bytes(), None, Table::NoComment, false)
            .result
            .unwrap();
        e.rewrite(&mut t, set, 0, MAXATOM);
        let mut out = Vec::new();
        printav(&mut out, &e.names, &t);
        String::from_utf8(out).unwrap().trim().to_string()
    }

    #[test]
    fn zero_or_more_and_one_or_more() {
        let mut e = engine(&[("t", 1, &[("$* @ $+", "$: <$2> $1")])]);
        assert_eq!(run(&mut e, 1, "a@b.c"), "< b . c > a");
        assert_eq!(run(&mut e, 1, "@b"), "< b >");
        assert_eq!(run(&mut e, 1, "a@"), "a @");
    }

    #[test]
    fn exactly_one_and_backtracking() {
        let mut e = engine(&[("t", 1, &[("$+ . $- @ $*", "$: $2 | $1")])]);
        assert_eq!(run(&mut e, 1, "a.b.c@x"), "c | a . b");
    }

    #[test]
    fn class_match_spans_several_tokens() {
        let mut e = engine(&[(
            "t",
            1,
            &[("$* @ $=w", "$: local $2"), ("$* @ $~w", "$: one $2")],
        )]);
        e.macros.add_to_class(b'w', b"oracle.example.test");
        assert_eq!(
            run(&mut e, 1, "a@oracle.example.test"),
            "local oracle . example . test"
        );
        assert_eq!(run(&mut e, 1, "a@elsewhere"), "one elsewhere");
        assert_eq!(run(&mut e, 1, "a@b.c"), "a @ b . c");
    }

    #[test]
    fn zero_match_and_literals_are_case_insensitive() {
        let mut e = engine(&[("t", 1, &[("$@", "$@ empty"), ("ROOT", "$@ got")])]);
        assert_eq!(run(&mut e, 1, "root"), "got");
    }

    #[test]
    fn rule_repeats_until_it_no_longer_matches() {
        let mut e = engine(&[("t", 1, &[("$* . . $*", "$1 . $2")])]);
        // ".." is two operator tokens; the rule collapses each pair until none remain
        assert_eq!(run(&mut e, 1, "a...b"), "a . b");
    }

    #[test]
    fn canonhost_prefix_returns_at_once() {
        let mut e = engine(&[("t", 1, &[("$*", "$@ x $1"), ("$*", "never")])]);
        assert_eq!(run(&mut e, 1, "a"), "x a");
    }

    #[test]
    fn subroutine_calls_and_mailer_triple_stops() {
        let mut e = engine(&[
            ("outer", 1, &[("$*", "$: $>inner $1"), ("$#", "never")]),
            ("inner", 2, &[("$+", "$# local $: $1")]),
        ]);
        assert_eq!(run(&mut e, 1, "bob"), "$# local $: bob");
    }

    #[test]
    fn infinite_loop_is_cut_after_100() {
        let mut e = engine(&[("t", 1, &[("$*", "$1 x")])]);
        e.trace = false;
        let out = run(&mut e, 1, "a");
        assert_eq!(out.split(' ').count(), 101);
        let msg = String::from_utf8(e.out.clone()).unwrap();
        assert!(msg.contains("Infinite loop in ruleset t, rule 1"));
    }

    #[test]
    fn recursion_is_bounded() {
        let mut e = engine(&[("t", 1, &[("$*", "$@ $>t $1")])]);
        run(&mut e, 1, "a");
        let msg = String::from_utf8(e.out.clone()).unwrap();
        assert!(msg.contains("excessive recursion"));
    }

    #[test]
    fn conditional_else_is_an_operator() {
        let mut e = engine(&[("t", 1, &[("$* $| $*", "$: $2 $| $1")])]);
        let mut t = vec![b"a".to_vec(), vec![meta::CONDELSE], b"b".to_vec()];
        e.rewrite(&mut t, 1, 0, MAXATOM);
        assert_eq!(t, vec![b"b".to_vec(), vec![meta::CONDELSE], b"a".to_vec()]);
    }

    #[test]
    fn deferred_macro_on_both_sides() {
        let mut e = engine(&[("t", 1, &[("$&h", "$: host $&h")])]);
        e.macros.define(b'h', b"mx.example".to_vec());
        assert_eq!(run(&mut e, 1, "mx.example"), "host mx . example");
        assert_eq!(run(&mut e, 1, "other"), "other");
    }

    #[test]
    fn map_lookup_with_default_and_args() {
        let mut e = engine(&[(
            "t",
            1,
            &[("$*", "$: $(arith + $@ $1 $@ 2 $) $(nosuch $1 $: dflt $)")],
        )]);
        e.maps.maps.insert(
            "arith".into(),
            crate::rules::maps::Map::new("arith", "arith", ""),
        );
        assert_eq!(run(&mut e, 1, "40"), "42 dflt");
    }

    #[test]
    fn host_canonification() {
        let mut e = engine(&[("t", 1, &[("$*", "$: $[ $1 $]")])]);
        e.maps.hosts.hosts = vec![(
            "127.0.0.1".into(),
            vec!["oracle.example.test".into(), "oracle".into()],
        )];
        e.maps.maps.insert(
            "host".into(),
            crate::rules::maps::Map::new("host", "host", ""),
        );
        assert_eq!(run(&mut e, 1, "oracle"), "oracle . example . test .");
        assert_eq!(run(&mut e, 1, "unknown"), "unknown");
    }

    #[test]
    fn trace_lines_are_formatted_like_sendmail() {
        let mut e = engine(&[("canonify", 3, &[("$*", "$@ $1")])]);
        e.trace = true;
        run(&mut e, 3, "root");
        assert_eq!(
            String::from_utf8(e.out).unwrap(),
            "canonify           input: root\ncanonify         returns: root\n"
        );
    }

    #[test]
    fn hostile_pattern_terminates() {
        let mut e = engine(&[("t", 1, &[("$* $* $* $* $* $* x", "y")])]);
        let long = "a ".repeat(200);
        let _ = run(&mut e, 1, &long);
    }
}

#[cfg(test)]
mod send_sync {
    /// The SMTP server shares one engine per configuration across tasks.
    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::Engine>();
    }
}
