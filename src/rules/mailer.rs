//! Mailer definitions (`M` lines) as the rules and `-bt` see them: number, name, path,
//! flags, the four rewriting rulesets, and sendmail's three built-in mailers.
//!
//! In: the configuration's [`Mailer`]s (fields by letter, as parsed) and the ruleset table.
//! Out: [`MailerDef`]s numbered as sendmail numbers them (`prog`, `*file*`, `*include*`
//! first), and the `=M` listing line of each.
//!
//! Source: sendmail 8.17 readcf.c (`makemailer`, `printmailer`), conf.c (`setupmailers`).

use super::macros::{MacroNames, translate_dollars};
use super::print::xputs;
use super::ruleset::{Lookup, RuleSets};
use crate::config::Mailer;
use std::collections::BTreeSet;

/// One mailer, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailerDef {
    pub number: usize,
    pub name: String,
    /// `P=`.
    pub path: String,
    /// `F=` letters.
    pub flags: BTreeSet<u8>,
    /// `S=` envelope/header sender rulesets (`None`: not set).
    pub sender_env: Option<usize>,
    pub sender_hdr: Option<usize>,
    /// `R=` envelope/header recipient rulesets.
    pub rcpt_env: Option<usize>,
    pub rcpt_hdr: Option<usize>,
    /// `M=` maximum message size.
    pub max_size: i64,
    /// `L=` line limit.
    pub line_limit: i64,
    /// `E=` end of line, unescaped.
    pub eol: Vec<u8>,
    /// `C=` default charset.
    pub charset: Option<String>,
    /// `T=` MTA/address/diagnostic types.
    pub types: [Option<String>; 3],
    /// `r=` maximum recipients per connection.
    pub max_rcpt: i64,
    /// `A=` argv, internal form.
    pub argv: Vec<Vec<u8>>,
}

impl MailerDef {
    pub fn has_flag(&self, f: u8) -> bool {
        self.flags.contains(&f)
    }
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            out.push(match b[i + 1] {
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                c => c,
            });
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn ruleset_pair(sets: &RuleSets, v: &str) -> (Option<usize>, Option<usize>) {
    let find = |s: &str| match sets.find(s.trim()) {
        Lookup::Found(n, _) => Some(n),
        _ => None,
    };
    match v.split_once('/') {
        Some((a, b)) => (find(a), find(b)),
        None => {
            let n = find(v);
            (n, n)
        }
    }
}

/// Build the mailer table: the built-ins, then the cf's `M` lines (a cf mailer with a
/// built-in's name replaces it in place).
pub fn build(lines: &[Mailer], sets: &RuleSets, names: &mut MacroNames) -> Vec<MailerDef> {
    let builtins: [(&str, &[(char, &str)]); 3] = [
        (
            "prog",
            &[
                ('P', "/bin/sh"),
                ('F', "lsouDq9"),
                ('T', "X-Unix/X-Unix/X-Unix"),
                ('A', "sh -c $u"),
            ],
        ),
        (
            "*file*",
            &[
                ('P', "[FILE]"),
                ('F', "lsDFMPEouq9"),
                ('T', "X-Unix/X-Unix/X-Unix"),
                ('A', "FILE $u"),
            ],
        ),
        (
            "*include*",
            &[('P', "/dev/null"), ('F', "su"), ('A', "INCLUDE $u")],
        ),
    ];
    let mut out: Vec<MailerDef> = Vec::new();
    let builtins = builtins.iter().map(|(name, fields)| {
        let fields: Vec<(char, String)> = fields.iter().map(|(k, v)| (*k, v.to_string())).collect();
        (name.to_string(), fields)
    });
    let lines = lines.iter().map(|m| (m.name.clone(), m.fields.clone()));
    for (name, fields) in builtins.chain(lines) {
        let def = make(&name, &fields, sets, names);
        match out.iter_mut().find(|d| d.name == def.name) {
            Some(slot) => {
                let n = slot.number;
                *slot = MailerDef { number: n, ..def };
            }
            None => out.push(MailerDef {
                number: out.len(),
                ..def
            }),
        }
    }
    out
}

fn make(
    name: &str,
    fields: &[(char, String)],
    sets: &RuleSets,
    names: &mut MacroNames,
) -> MailerDef {
    let mut d = MailerDef {
        number: 0,
        name: name.to_string(),
        path: String::new(),
        flags: BTreeSet::new(),
        sender_env: Some(0),
        sender_hdr: Some(0),
        rcpt_env: Some(0),
        rcpt_hdr: Some(0),
        max_size: 0,
        line_limit: 0,
        eol: b"\n".to_vec(),
        charset: None,
        types: [None, None, None],
        max_rcpt: 100,
        argv: Vec::new(),
    };
    for (k, v) in fields {
        match k {
            'P' => d.path = v.clone(),
            'F' => d
                .flags
                .extend(v.bytes().filter(|b| !b.is_ascii_whitespace())),
            'S' => (d.sender_env, d.sender_hdr) = ruleset_pair(sets, v),
            'R' => (d.rcpt_env, d.rcpt_hdr) = ruleset_pair(sets, v),
            'M' => d.max_size = v.parse().unwrap_or(0),
            'L' => d.line_limit = v.parse().unwrap_or(0),
            'E' => d.eol = unescape(v),
            'C' => d.charset = Some(v.clone()),
            'r' => d.max_rcpt = v.parse().unwrap_or(100),
            'T' => {
                let mut p = v.splitn(3, '/');
                for t in d.types.iter_mut() {
                    *t = p.next().filter(|s| !s.is_empty()).map(str::to_string);
                }
            }
            'A' => {
                d.argv = v
                    .split_whitespace()
                    .map(|w| translate_dollars(names, w.as_bytes()))
                    .collect()
            }
            _ => {}
        }
    }
    if d.path == "[IPC]" {
        // sendmail's defaults for a network mailer without `T=` (what `=M` shows)
        for (t, default) in d.types.iter_mut().zip(["dns", "rfc822", "smtp"]) {
            t.get_or_insert_with(|| default.to_string());
        }
    }
    d
}

/// One `=M` line (sendmail's `printmailer`).
pub fn print(out: &mut Vec<u8>, m: &MailerDef, sets: &RuleSets, names: &MacroNames) {
    let rs = |n: Option<usize>| match n {
        Some(n) => sets.display_name(n),
        None => "-1".to_string(),
    };
    out.extend_from_slice(
        format!(
            "mailer {} ({}): P={} S={}/{} R={}/{} M={} U=-1:-1 F=",
            m.number,
            m.name,
            m.path,
            rs(m.sender_env),
            rs(m.sender_hdr),
            rs(m.rcpt_env),
            rs(m.rcpt_hdr),
            m.max_size
        )
        .as_bytes(),
    );
    out.extend(m.flags.iter().filter(|&&f| f < 0x80));
    out.extend_from_slice(format!(" L={} E=", m.line_limit).as_bytes());
    xputs(out, names, &m.eol);
    if let Some(c) = &m.charset {
        out.extend_from_slice(format!(" C={c}").as_bytes());
    }
    let t = |x: &Option<String>| x.clone().unwrap_or_else(|| "<undefined>".into());
    out.extend_from_slice(
        format!(
            " T={}/{}/{} r={}",
            t(&m.types[0]),
            t(&m.types[1]),
            t(&m.types[2]),
            m.max_rcpt
        )
        .as_bytes(),
    );
    if !m.argv.is_empty() {
        out.extend_from_slice(b" A=");
        for (i, a) in m.argv.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            xputs(out, names, a);
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_first_and_cf_prog_replaces_in_place() {
        let mut sets = RuleSets::default();
        sets.declare(Some("parse"), Some(0)).unwrap();
        sets.declare(Some("EnvToL"), None).unwrap();
        let lines = crate::config::Config::from_str(
            "t.cf",
            "Mlocal, P=/bin/true, R=EnvToL, A=true\nMprog, P=/bin/sh, F=lsDFMoqeu9, A=sh -c $u\n",
            &[],
        )
        .unwrap()
        .mailers;
        let mut names = MacroNames::new();
        let ms = build(&lines, &sets, &mut names);
        assert_eq!(
            ms.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["prog", "*file*", "*include*", "local"]
        );
        let mut out = Vec::new();
        print(&mut out, &ms[1], &sets, &names);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "mailer 1 (*file*): P=[FILE] S=parse/parse R=parse/parse M=0 U=-1:-1 F=9DEFMPloqsu L=0 E=\\n T=X-Unix/X-Unix/X-Unix r=100 A=FILE $u\n"
        );
        assert_eq!(ms[3].rcpt_env, ms[3].rcpt_hdr);
    }
}
