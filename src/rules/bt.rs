//! Address test mode (`sendmail -bt`): read commands, print what sendmail 8.17 prints.
//!
//! In: an [`Engine`] built from the cf, the cf extras (mailers, help file), input lines.
//! Out: the dialogue on `out` (banner, `> ` prompts, ruleset traces, command answers) and
//! the exit status (`0`, or `70`/`64` after errors, as sendmail's `ExitStat`).
//!
//! Commands (op.txt §"Testing the configuration", main.c `testmodeline`): `rules address`
//! (`3,0 root`, `canonify,parse a@b`), `.Dx value`, `.Cx word`, `=Sruleset`, `=M`, `$x`,
//! `$=X`, `/map`, `/parse`, `/try`, `/tryflags`, `/sender`, `/header`, `/canon`, `/mx`,
//! `/expand`, `/gethostbyname`, `/quit`, `?`. Input lines are read as fgets with sendmail's
//! 2048-byte buffer would read them.
//!
//! Host names are resolved as the `ServiceSwitchFile` says: the hosts file (`HostsFile`,
//! else `/etc/hosts`), and DNS where the switch names `dns` (`$[ $]`, the `host` map,
//! `/canon`, `/mx`); from the hosts file alone `/mx` finds no MX records. `-d` debug output
//! is not produced.
//!
//! Entry points: [`run`] (what `sendmail -bt` calls with the command line's source and
//! `-O` options), [`run_path`] (`-C file`), [`run_text`] (cf text in memory).

use super::address::{self, Use};
use super::cf::CfExtras;
use super::macros::translate_dollars;
use super::mailer::{self, MailerDef};
use super::print::xputs;
use super::rewrite::{Engine, MAXATOM};
use super::ruleset::{Lookup, MAXRWSETS};
use super::token::{Table, meta, prescan};
use crate::sysexits::{EX_OK, EX_SOFTWARE};
use std::io::{BufRead, Write};

/// sendmail's MAXLINE: fgets reads at most this many bytes minus one per call.
const MAXLINE: usize = 2048;

/// `sendmail -bt`: run address test mode on the configuration the command line chose.
///
/// `source` and `overrides` are [`crate::cli::Invocation`]'s; command-line options win over
/// the cf's. Returns the exit status (see [`run_path`]). For [`Source::Embedded`]
/// (no cf file at all) this reports the system cf as missing, as sendmail does; to run the
/// embedded default configuration instead, pass its text to [`run_text`].
///
/// [`Source::Embedded`]: crate::config::Source::Embedded
pub fn run(
    source: &crate::config::Source,
    overrides: &[crate::config::Override],
    input: impl BufRead,
    out: impl Write,
) -> i32 {
    let path = match source {
        crate::config::Source::File(p) => p.clone(),
        crate::config::Source::Embedded => std::path::PathBuf::from(crate::cli::SYSTEM_CF),
    };
    run_with(&path, overrides, input, out)
}

/// `sendmail -bt -C cf`: read the cf at `cf`, then run the dialogue on `input`/`out`.
///
/// Returns the exit status: 72 when the cf cannot be read (message on `out`, as
/// sendmail prints it), else the session's status; bad cf lines are reported on `out`
/// before the banner and make the status 70, as sendmail's `syserr` does.
pub fn run_path(cf: &std::path::Path, input: impl BufRead, out: impl Write) -> i32 {
    run_with(cf, &[], input, out)
}

fn run_with(
    cf: &std::path::Path,
    overrides: &[crate::config::Override],
    input: impl BufRead,
    mut out: impl Write,
) -> i32 {
    let text = match std::fs::read(cf) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(out, "{}", super::cf::cannot_open(cf, &e));
            return crate::sysexits::EX_OSFILE;
        }
    };
    run_text(&cf.display().to_string(), &text, overrides, input, out)
}

/// Address test mode on cf text already in memory (`name` labels its messages), e.g. the
/// embedded default configuration.
pub fn run_text(
    name: &str,
    text: &[u8],
    overrides: &[crate::config::Override],
    input: impl BufRead,
    mut out: impl Write,
) -> i32 {
    let host = super::cf::HostInfo::current();
    let (mut cfg, config_errors) = crate::config::from_reader_lenient(
        std::path::Path::new(name),
        text,
        overrides,
        crate::config::macros::HostNames::of_this_host(),
    );
    if cfg.options.hosts_file != std::path::Path::new("/etc/hosts") {
        cfg.host = crate::config::macros::HostNames::of_this_host_in(&cfg.options.hosts_file);
    }
    let (engine, extras, problems) = super::cf::from_config(&cfg, &host);
    let mut errors: Vec<String> = config_errors
        .iter()
        .map(super::cf::sendmail_words)
        .collect();
    errors.extend(problems);
    for e in &errors {
        let _ = writeln!(out, "{e}");
    }
    let mut session = Session::new(engine, extras);
    if !errors.is_empty() {
        session.exit_stat = EX_SOFTWARE;
    }
    session.run(input, out)
}

/// One `-bt` session.
pub struct Session {
    pub engine: Engine,
    pub extras: CfExtras,
    pub mailers: Vec<MailerDef>,
    /// `/tryflags`: header (vs envelope) address.
    pub header: bool,
    /// `/tryflags`: sender (vs recipient) address.
    pub sender: bool,
    exit_stat: i32,
}

enum Flow {
    Continue,
    Quit,
}

impl Session {
    pub fn new(mut engine: Engine, extras: CfExtras) -> Self {
        engine.trace = true;
        let mailers = mailer::build(&extras.mailers, &engine.rulesets, &mut engine.names);
        Session {
            engine,
            extras,
            mailers,
            header: false,
            sender: false,
            exit_stat: EX_OK,
        }
    }

    fn flush(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.engine.exit_stat != EX_OK && self.exit_stat == EX_OK {
            self.exit_stat = self.engine.exit_stat;
        }
        self.engine.exit_stat = EX_OK;
        out.write_all(&std::mem::take(&mut self.engine.out))
    }

    /// Output text built with [`lossy`]: each char is one byte.
    fn say(&mut self, s: &str) {
        self.engine.out.extend(s.chars().map(|c| c as u32 as u8));
    }

    fn syserr(&mut self, s: &str) {
        self.engine.syserr(s);
    }

    /// Run the dialogue to the end of input (or `/quit`); returns the exit status.
    pub fn run(&mut self, mut input: impl BufRead, mut out: impl Write) -> i32 {
        let _ = out.write_all(
            b"ADDRESS TEST MODE (ruleset 3 NOT automatically invoked)\nEnter <ruleset> <address>\n",
        );
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let _ = out.write_all(b"> ");
            let _ = out.flush();
            let mut line = match next_line(&mut input, &mut pending) {
                Some(l) => l,
                None => break,
            };
            // the line is a C string: a NUL byte ends it
            if let Some(nul) = line.iter().position(|&b| b == 0) {
                line.truncate(nul);
            }
            let flow = self.line(&line);
            let _ = self.flush(&mut out);
            if let Flow::Quit = flow {
                break;
            }
        }
        let _ = out.flush();
        self.exit_stat
    }

    /// Process one input line (sendmail's `testmodeline`).
    fn line(&mut self, raw: &[u8]) -> Flow {
        let start = raw.iter().take_while(|&&b| b == b' ').count();
        let line = &raw[start..];
        match line.first() {
            None | Some(b'#') => Flow::Continue,
            Some(b'?') => {
                self.help();
                Flow::Continue
            }
            Some(b'.') => {
                self.dot(line);
                Flow::Continue
            }
            Some(b'=') => {
                self.equals(line);
                Flow::Continue
            }
            Some(b'-') => {
                match line.get(1) {
                    Some(b'd') => {}
                    None => self.say("Usage: -d{debug arguments}\n"),
                    Some(_) => {
                        let s = format!("Unknown \"-\" command {}\n", lossy(line));
                        self.say(&s)
                    }
                }
                Flow::Continue
            }
            Some(b'$') => {
                self.dollar(line);
                Flow::Continue
            }
            Some(b'/') => self.slash(line),
            Some(_) => {
                self.rules(line);
                Flow::Continue
            }
        }
    }

    fn help(&mut self) {
        let text = self
            .extras
            .help_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .unwrap_or_default();
        let mut found = false;
        for l in text.split(|&b| b == b'\n') {
            if let Some(rest) = l.strip_prefix(b"-bt\t") {
                let text = String::from_utf8_lossy(rest).replace("$$", "$");
                self.engine.out.extend_from_slice(text.as_bytes());
                self.engine.out.push(b'\n');
                found = true;
            }
        }
        if found {
            self.say("End of HELP info\n");
        } else {
            self.say("HELP topic \"-bt\" unknown\n");
        }
    }

    /// Report the characters a `{name}` may not contain, as sendmail's `macid_parse`.
    fn check_name(&mut self, s: &[u8]) {
        for c in super::macros::MacroNames::invalid_chars(s) {
            self.syserr(&format!("Invalid macro/class character {}", c as char));
        }
    }

    fn dot(&mut self, line: &[u8]) {
        match line.get(1) {
            Some(b'D') => {
                let rest = &line[2..];
                self.check_name(rest);
                let (id, used) = match self.engine.names.parse_checked(rest) {
                    Ok(x) => x,
                    Err(e) => {
                        self.syserr(&e.to_string());
                        return;
                    }
                };
                // trailing blanks are dropped, but never the value's first character
                let mut value = &rest[used..];
                while value.len() > 1 && value.last().is_some_and(u8::is_ascii_whitespace) {
                    value = &value[..value.len() - 1];
                }
                let v = translate_dollars(&mut self.engine.names, value);
                self.engine.macros.define(id, v);
            }
            Some(b'C') => {
                let rest = &line[2..];
                if rest.is_empty() {
                    return;
                }
                self.check_name(rest);
                let (id, used) = match self.engine.names.parse_checked(rest) {
                    Ok(x) => x,
                    Err(e) => {
                        self.syserr(&e.to_string());
                        return;
                    }
                };
                let v = translate_dollars(&mut self.engine.names, &rest[used..]);
                let v = self.engine.macros.expand(&v);
                for w in v
                    .split(|b| b.is_ascii_whitespace())
                    .filter(|w| !w.is_empty())
                {
                    self.engine.macros.add_to_class(id, w);
                }
            }
            None => self.say("Usage: .[DC]macro value(s)\n"),
            Some(_) => {
                let s = format!("Unknown \".\" command {}\n", lossy(line));
                self.say(&s)
            }
        }
    }

    fn equals(&mut self, line: &[u8]) {
        match line.get(1) {
            Some(b'S') => {
                let name = lossy(&line[2..]);
                let Some(set) = self.find_ruleset(&name) else {
                    let s = format!("Undefined ruleset {name}\n");
                    self.say(&s);
                    return;
                };
                let rules = self.engine.rulesets.rules(set).to_vec();
                for r in rules {
                    let mut o = vec![b'R'];
                    for t in &r.lhs {
                        xputs(&mut o, &self.engine.names, t);
                        o.push(b' ');
                    }
                    o.extend_from_slice(b"\t\t");
                    for t in &r.rhs {
                        xputs(&mut o, &self.engine.names, t);
                        o.push(b' ');
                    }
                    o.push(b'\n');
                    self.engine.out.extend_from_slice(&o);
                }
            }
            Some(b'M') => self.print_mailers(),
            None => self.say("Usage: =Sruleset or =M\n"),
            Some(_) => {
                let s = format!("Unknown \"=\" command {}\n", lossy(line));
                self.say(&s)
            }
        }
    }

    /// sendmail's `strtorwset(name, NULL, ST_FIND)` with its error messages.
    fn find_ruleset(&mut self, spec: &str) -> Option<usize> {
        match self.engine.rulesets.find(spec) {
            Lookup::Found(n, _) => Some(n),
            Lookup::NotFound(_) => None,
            Lookup::BadNumber(n, _) => {
                self.syserr(&format!("bad ruleset {n} ({} max)", MAXRWSETS / 2));
                None
            }
            Lookup::BadName => {
                let shown: String = spec.trim_start().chars().take(20).collect();
                self.syserr(&format!("invalid ruleset name: \"{shown}\""));
                None
            }
        }
    }

    fn dollar(&mut self, line: &[u8]) {
        if line.get(1) == Some(&b'=') {
            self.check_name(&line[2..]);
            match self.engine.names.parse_checked(&line[2..]) {
                Ok((id, _)) => {
                    let mut words = self.engine.macros.class_entries(id);
                    words.sort_by_key(|(rank, w)| (stab_hash(w), *rank));
                    for (_, w) in words {
                        self.engine.out.extend_from_slice(&w);
                        self.engine.out.push(b'\n');
                    }
                }
                Err(e) => self.syserr(&e.to_string()),
            }
            return;
        }
        if let Some(&c) = line.get(1)
            && (c.is_ascii_digit() || (c != b'=' && meta::from_letter(c).is_some()))
        {
            // sendmail prints rule metasymbols as themselves
            let s = format!("${}\n", c as char);
            self.say(&s);
            return;
        }
        self.check_name(&line[1..]);
        let id = match self.engine.names.parse_checked(&line[1..]) {
            Ok((id, _)) => id,
            Err(e) => {
                self.syserr(&e.to_string());
                return;
            }
        };
        match self.engine.macros.get(id).map(|v| v.to_vec()) {
            None => self.say("Undefined\n"),
            Some(v) => {
                let mut o = Vec::new();
                xputs(&mut o, &self.engine.names, &v);
                o.push(b'\n');
                self.engine.out.extend_from_slice(&o);
            }
        }
    }

    fn slash(&mut self, line: &[u8]) -> Flow {
        let mut line = line.to_vec();
        while line.last().is_some_and(|b| b.is_ascii_whitespace()) {
            line.pop();
        }
        let (cmd, arg) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
            Some(i) => {
                let mut j = i;
                while j < line.len() && line[j].is_ascii_whitespace() {
                    j += 1;
                }
                (line[..i].to_vec(), line[j..].to_vec())
            }
            None => (line.clone(), Vec::new()),
        };
        let c = String::from_utf8_lossy(&cmd[1..]).to_ascii_lowercase();
        match c.as_str() {
            "" => self.say("Usage: /[canon|map|mx|parse|try|tryflags]\n"),
            "quit" => return Flow::Quit,
            "mx" => {
                if arg.is_empty() {
                    self.say("Usage: /mx address\n");
                } else if arg.first() == Some(&b'[') {
                    // an address literal is its own (only) mail exchanger
                    let a = lossy(&arg);
                    let s = format!("getmxrr({a}) returns 1 value(s):\n\t{a}\n");
                    self.say(&s);
                } else {
                    let a = lossy(&arg);
                    let hosts = self.mx_hosts(&a);
                    let mut s = format!("getmxrr({a}) returns {} value(s):\n", hosts.len());
                    for h in hosts {
                        s.push_str(&format!("\t{h}\n"));
                    }
                    self.say(&s);
                }
            }
            "canon" => {
                if arg.is_empty() {
                    self.say("Usage: /canon address\n");
                } else {
                    let a = lossy(&arg);
                    let c = (self.engine.maps.hosts.resolve(&a).ok().flatten())
                        .unwrap_or_else(|| a.clone());
                    let s = format!("getcanonname({a}) returns {c}\n");
                    self.say(&s);
                }
            }
            "map" => self.slash_map(&arg),
            "tryflags" => {
                if arg.is_empty() {
                    self.say("Usage: /tryflags [Hh|Ee][Ss|Rr]\n");
                } else {
                    for b in &arg {
                        match b {
                            b'H' | b'h' => self.header = true,
                            b'E' | b'e' => self.header = false,
                            b'S' | b's' => self.sender = true,
                            b'R' | b'r' => self.sender = false,
                            _ => {}
                        }
                    }
                    let v = format!(
                        "{} {}",
                        if self.header { 'h' } else { 'e' },
                        if self.sender { 's' } else { 'r' }
                    );
                    if let Some(id) = self.engine.names.id("addr_type") {
                        self.engine.macros.define(id, v.into_bytes());
                    }
                }
            }
            "expand" => {
                if arg.is_empty() {
                    self.say("Usage: /expand string\n");
                } else {
                    // 8.17 expands the raw text, whose `$` are not macro markers: the
                    // string comes back unchanged, without a newline
                    let v = self.engine.macros.expand(&arg);
                    let mut o = Vec::new();
                    xputs(&mut o, &self.engine.names, &v);
                    self.engine.out.extend_from_slice(&o);
                }
            }
            "gethostbyname" => {}
            "parse" => self.slash_parse(&arg),
            "try" => self.slash_try(&arg),
            "sender" => self.slash_sender(&arg),
            "header" => self.slash_header(&arg),
            _ => {
                let s = format!("Unknown \"/\" command {}\n", lossy(&cmd));
                self.say(&s);
            }
        }
        Flow::Continue
    }

    /// sendmail's `getmxrr` for `/mx`: the MX hosts by preference when the service switch
    /// names `dns` (the name itself when it has no MX record); none from the hosts file.
    fn mx_hosts(&self, name: &str) -> Vec<String> {
        let hosts = &self.engine.maps.hosts;
        let Some(dns) = hosts.dns.as_ref() else {
            return Vec::new();
        };
        if !hosts.services.contains(&super::maps::HostService::Dns) {
            return Vec::new();
        }
        match dns.mx(name) {
            crate::dns::Answer::Found(mut mx) => {
                mx.sort_by_key(|m| m.preference);
                mx.into_iter()
                    .filter(|m| !m.is_null())
                    .map(|m| m.exchange)
                    .collect()
            }
            crate::dns::Answer::NoData => vec![name.trim_end_matches('.').to_string()],
            _ => Vec::new(),
        }
    }

    fn slash_map(&mut self, arg: &[u8]) {
        if arg.is_empty() {
            self.say("Usage: /map mapname key\n");
            return;
        }
        let Some(sp) = arg.iter().position(|b| b.is_ascii_whitespace()) else {
            self.say("No key specified\n");
            return;
        };
        let name = lossy(&arg[..sp]);
        let key = arg[sp + 1..].to_vec();
        let Some(map) = self.engine.maps.maps.get(&name) else {
            let s = format!("Map named \"{name}\" not found\n");
            self.say(&s);
            return;
        };
        if !map.is_open() {
            let s = format!("Map named \"{name}\" not open\n");
            self.say(&s);
            return;
        }
        // the open failure (sendmail opens the map first) comes before the lookup's line
        let ans = self
            .engine
            .map_lookup(&name, &key, std::slice::from_ref(&key));
        let s = format!("map_lookup: {name} ({}) ", lossy(&key));
        self.say(&s);
        let s = match ans.value {
            None => format!("no match ({})\n", ans.status),
            Some(v) => format!("returns {} ({})\n", lossy(&v), ans.status),
        };
        self.say(&s);
    }

    /// `rules address`: run the address through each listed ruleset.
    fn rules(&mut self, line: &[u8]) {
        let start = line.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let line = &line[start..];
        let Some(sp) = line.iter().position(|b| b.is_ascii_whitespace()) else {
            self.say("No address!\n");
            return;
        };
        let spec = lossy(&line[..sp]);
        let addr = line[sp + 1..].to_vec();
        if self.invalid_addr(&addr) {
            return;
        }
        let table = if self.extras.config_level >= 9 {
            Table::NoCommentExt
        } else {
            Table::Ext
        };
        let mut pos = 0usize;
        loop {
            let rest = &addr[pos..];
            let scan = prescan(&self.engine.tables, rest, Some(b','), table, false);
            self.engine.print_diags(rest, &scan.diagnostics);
            let end = pos + scan.end;
            match scan.result {
                Ok(mut pvp) => self.run_spec(&spec, &mut pvp),
                Err(e) => self.prescan_failed(rest, &e),
            }
            if end >= addr.len() {
                break;
            }
            pos = end + 1;
        }
    }

    fn prescan_failed(&mut self, addr: &[u8], e: &super::token::PrescanError) {
        use super::token::PrescanError as P;
        if matches!(e, P::Empty) {
            return;
        }
        self.engine.print_diags(addr, &[e.to_string()]);
    }

    fn run_spec(&mut self, spec: &str, pvp: &mut Vec<Vec<u8>>) {
        let mut p = spec;
        while !p.is_empty() {
            let set = match self.engine.rulesets.find(p) {
                Lookup::Found(n, _) => Some(n),
                _ => self.find_ruleset(p),
            };
            let Some(set) = set else {
                let s = format!("Undefined ruleset {p}\n");
                self.say(&s);
                break;
            };
            let status = self.engine.rewrite(pvp, set, 0, MAXATOM);
            if status != EX_OK {
                let name = p.split(',').next().unwrap_or(p);
                let s = format!("== Ruleset {name} ({set}) status {status}\n");
                self.say(&s);
            }
            p = match p.find(',') {
                Some(i) => &p[i + 1..],
                None => "",
            };
        }
    }

    /// sendmail's `invalidaddr`: too long, or 8-bit bytes in 0x80..0x9f.
    fn invalid_addr(&mut self, addr: &[u8]) -> bool {
        address::invalid_addr(&mut self.engine, addr)
    }

    fn print_mailers(&mut self) {
        let mut o = Vec::new();
        for m in &self.mailers {
            mailer::print(&mut o, m, &self.engine.rulesets, &self.engine.names);
        }
        self.engine.out.extend_from_slice(&o);
    }

    /// `/header Name: value`: the header flags sendmail would give a user-supplied header.
    fn slash_header(&mut self, arg: &[u8]) {
        const H_USER: u32 = 0x0004_0000;
        let colon = arg.iter().position(|&b| b == b':');
        let name = colon.map(|c| &arg[..c]).unwrap_or(b"");
        let name_end = name
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        let name = &name[..name_end];
        if colon.is_none() || name.is_empty() || !name.iter().all(u8::is_ascii_graphic) {
            // the line went through quote_internal_chars: metasymbol bytes are quoted
            let mut shown = Vec::with_capacity(arg.len());
            for &b in arg {
                if (0x80..=0x9f).contains(&b) {
                    shown.push(0xff);
                }
                shown.push(b);
            }
            self.syserr(&format!("header syntax error, line \"{}\"", lossy(&shown)));
            self.say("ul = 00000000\n");
            return;
        }
        let flags = header_flags(&lossy(name)) | H_USER;
        let s = format!("ul = {flags:#010x}\n");
        self.say(&s);
    }

    fn how(&self) -> Use {
        Use {
            sender: self.sender,
            header: self.header,
        }
    }

    fn kind(&self) -> (&'static str, &'static str) {
        (
            if self.header { "header" } else { "envelope" },
            if self.sender { "sender" } else { "recipient" },
        )
    }

    fn slash_parse(&mut self, arg: &[u8]) {
        if arg.is_empty() {
            self.say("Usage: /parse address\n");
            return;
        }
        let cracked = address::crackaddr(arg);
        let mut o = b"Cracked address = ".to_vec();
        xputs(&mut o, &self.engine.names, &cracked);
        let (h, s) = self.kind();
        o.extend_from_slice(format!("\nParsing {h} {s} address\n").as_bytes());
        self.engine.out.extend_from_slice(&o);
        let how = self.how();
        match address::parseaddr(&mut self.engine, &self.mailers, arg, how) {
            None => self.say("Cannot parse\n"),
            Some(a) => {
                let line = match a.host.as_deref() {
                    Some(h) if !h.is_empty() => {
                        format!(
                            "mailer {}, host {}, user {}\n",
                            a.mailer,
                            lossy(h),
                            lossy(&a.user)
                        )
                    }
                    _ => format!("mailer {}, user {}\n", a.mailer, lossy(&a.user)),
                };
                self.say(&line);
            }
        }
    }

    fn slash_try(&mut self, arg: &[u8]) {
        let sp = arg.iter().position(|&b| b == b' ' || b == b'\t');
        let (name, addr) = match sp {
            Some(i) => {
                let mut j = i;
                while j < arg.len() && arg[j].is_ascii_whitespace() {
                    j += 1;
                }
                (lossy(&arg[..i]), arg[j..].to_vec())
            }
            None => (lossy(arg), Vec::new()),
        };
        if addr.is_empty() {
            self.say("Usage: /try mailer address\n");
            return;
        }
        let Some(m) = self
            .mailers
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(&name))
            .cloned()
        else {
            let s = format!("Unknown mailer {name}\n");
            self.say(&s);
            return;
        };
        let (h, s) = self.kind();
        let line = format!(
            "Trying {h} {s} address {} for mailer {name}\n",
            lossy(&addr)
        );
        self.say(&line);
        let how = self.how();
        let (out, rcode) = address::remotename(&mut self.engine, &m, &addr, how);
        let mut o = format!("Rcode = {rcode}, addr = ").into_bytes();
        o.extend_from_slice(&out);
        o.push(b'\n');
        self.engine.out.extend_from_slice(&o);
    }

    /// `/sender addr`: sendmail's `setsender`, then `addr=` the rewritten sender.
    fn slash_sender(&mut self, arg: &[u8]) {
        let how = Use {
            sender: true,
            header: false,
        };
        // setsender: {addr_type} is "e s" while the sender is parsed, undefined after
        let addr_type = self.engine.names.id("addr_type");
        if let Some(id) = addr_type {
            self.engine.macros.define(id, b"e s".to_vec());
        }
        let mut from = arg.to_vec();
        let mut parsed = if from.is_empty() {
            None
        } else {
            address::parseaddr(&mut self.engine, &self.mailers, &from, how)
        };
        if let Some(a) = &parsed
            && matches!(a.mailer.as_str(), "prog" | "*file*" | "*include*")
        {
            let saved = self.engine.e_to.replace(from.clone());
            self.engine.usrerr("553 5.1.7 Invalid sender address");
            self.engine.e_to = saved;
            parsed = None;
        }
        if parsed.as_ref().is_none_or(|a| a.bad) {
            from = real_user_name().into_bytes();
            parsed = address::parseaddr(&mut self.engine, &self.mailers, &from, Use::default());
        }
        let scan = prescan(&self.engine.tables, &from, None, Table::Ext, false);
        self.engine.print_diags(&from, &scan.diagnostics);
        if let Ok(mut pvp) = scan.result {
            self.engine.rewrite(&mut pvp, 3, 0, MAXATOM);
            self.engine.rewrite(&mut pvp, 1, 0, MAXATOM);
            self.engine.rewrite(&mut pvp, 4, 0, MAXATOM);
        }
        // what test mode prints is the parsed sender's user part (e_from.q_user)
        let v = parsed.map(|a| a.user).unwrap_or_default();
        if let Some(id) = addr_type {
            self.engine.macros.undefine(id);
        }
        let mut o = b"addr=".to_vec();
        o.extend_from_slice(&v);
        o.push(b'\n');
        self.engine.out.extend_from_slice(&o);
    }
}

/// Flags of the header fields sendmail knows (conf.c `HdrInfo`, sendmail.h `H_*`).
fn header_flags(name: &str) -> u32 {
    const H_EOH: u32 = 0x1;
    const H_RCPT: u32 = 0x2;
    const H_RESENT: u32 = 0x8;
    const H_ACHECK: u32 = 0x20;
    const H_FORCE: u32 = 0x40;
    const H_TRACE: u32 = 0x80;
    const H_FROM: u32 = 0x100;
    const H_RECEIPTTO: u32 = 0x400;
    const H_ERRORSTO: u32 = 0x800;
    const H_CTE: u32 = 0x1000;
    const H_CTYPE: u32 = 0x2000;
    const H_BCC: u32 = 0x4000;
    const H_ENCODABLE: u32 = 0x8000;
    const H_BINDLATE: u32 = 0x20000;
    const TABLE: &[(&str, u32)] = &[
        ("resent-sender", H_FROM | H_RESENT),
        ("resent-from", H_FROM | H_RESENT),
        ("resent-reply-to", H_FROM | H_RESENT),
        ("sender", H_FROM),
        ("from", H_FROM),
        ("reply-to", H_FROM),
        ("errors-to", H_FROM | H_ERRORSTO),
        ("full-name", H_ACHECK),
        ("return-receipt-to", H_RECEIPTTO),
        ("delivery-receipt-to", H_RECEIPTTO),
        ("disposition-notification-to", H_FROM),
        ("to", H_RCPT),
        ("resent-to", H_RCPT | H_RESENT),
        ("cc", H_RCPT),
        ("resent-cc", H_RCPT | H_RESENT),
        ("bcc", H_RCPT | H_BCC),
        ("resent-bcc", H_RCPT | H_BCC | H_RESENT),
        ("apparently-to", H_RCPT),
        ("message-id", 0),
        ("resent-message-id", H_RESENT),
        ("message", H_EOH),
        ("text", H_EOH),
        ("date", 0),
        ("resent-date", H_RESENT),
        ("received", H_TRACE | H_FORCE),
        ("x400-received", H_TRACE | H_FORCE),
        ("via", H_TRACE | H_FORCE),
        ("mail-from", H_TRACE | H_FORCE),
        ("comments", H_FORCE | H_ENCODABLE),
        ("return-path", H_FORCE | H_ACHECK | H_BINDLATE),
        ("content-transfer-encoding", H_CTE),
        ("content-type", H_CTYPE),
        ("content-length", H_ACHECK),
        ("subject", H_ENCODABLE),
        ("x-authentication-warning", H_FORCE),
    ];
    TABLE
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map_or(0, |(_, f)| *f)
}

/// The invoking user's login name (sendmail's `RealUserName`).
fn real_user_name() -> String {
    crate::log::real_user_name().unwrap_or_else(|| "root".into())
}

/// Bytes as a Latin-1 string (one char per byte): input and address text pass through
/// `format!` and [`Session::say`] unchanged, whatever bytes they hold.
fn lossy(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

/// sendmail's symbol table hash for class entries: the order `$=X` lists words in.
fn stab_hash(w: &[u8]) -> u32 {
    const STABSIZE: u32 = 2003;
    const ST_CLASS: u32 = 1;
    let mut h = ST_CLASS;
    for &c in w {
        h = ((h << 1) ^ c.to_ascii_lowercase() as u32) % STABSIZE;
    }
    h
}

/// Read the next line as `fgets(buf, MAXLINE)` does: at most MAXLINE-1 bytes, newline
/// removed. `None` at end of input.
fn next_line(input: &mut impl BufRead, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    if pending.is_empty() {
        let mut buf = Vec::new();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(_) => *pending = buf,
        }
    }
    let take = pending.len().min(MAXLINE - 1);
    let mut line: Vec<u8> = pending.drain(..take).collect();
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::cf::{HostInfo, load};

    fn session(cf: &str) -> Session {
        let host = HostInfo {
            hostname: "oracle.example.test".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
        };
        let (e, x) = load(cf.as_bytes(), "t.cf", &host).unwrap();
        Session::new(e, x)
    }

    fn talk(cf: &str, input: &str) -> (String, i32) {
        let mut s = session(cf);
        let mut out = Vec::new();
        let rc = s.run(input.as_bytes(), &mut out);
        (String::from_utf8(out).unwrap(), rc)
    }

    const CF: &str = "V10\nO OperatorChars=.:%@!^/[]+\nScanonify=3\nR$* @ $*\t$@ $1 < @ $2 >\nSparse=0\nR$+\t$# local $: $1\nMlocal, P=/bin/true, F=l, A=true $u\n";
    const BANNER: &str =
        "ADDRESS TEST MODE (ruleset 3 NOT automatically invoked)\nEnter <ruleset> <address>\n";

    /// `/mx` and `/canon` ask DNS (a real server on loopback) when the switch names `dns`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn mx_and_canon_ask_dns_when_the_switch_says_so() {
        use crate::dns::test_server::{DnsServer, Zone};
        use crate::rules::maps::HostService;
        let zone = Zone::default()
            .mx("dom.test", 20, "mx2.dom.test")
            .mx("dom.test", 10, "mx1.dom.test")
            .a("plain.dom.test", "192.0.2.1");
        let server = DnsServer::start(zone).await;
        let mut s = session(CF);
        s.engine.maps.hosts.services = vec![HostService::Files, HostService::Dns];
        s.engine.maps.hosts.dns = Some(crate::dns::BlockingCanon {
            name_servers: vec![server.addr],
        });
        let mut out = Vec::new();
        let input = "/mx dom.test\n/mx plain.dom.test\n/mx none.dom.test\n/canon plain.dom.test\n";
        s.run(input.as_bytes(), &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            format!(
                "{BANNER}> getmxrr(dom.test) returns 2 value(s):\n\tmx1.dom.test\n\tmx2.dom.test\n\
                 > getmxrr(plain.dom.test) returns 1 value(s):\n\tplain.dom.test\n\
                 > getmxrr(none.dom.test) returns 0 value(s):\n\
                 > getcanonname(plain.dom.test) returns plain.dom.test\n> "
            )
        );
    }

    #[test]
    fn ruleset_list_traces_each_call() {
        let (out, rc) = talk(CF, "3,0 bob@x\n");
        assert_eq!(
            out,
            format!(
                "{BANNER}> canonify           input: bob @ x\ncanonify         returns: bob < @ x >\nparse              input: bob < @ x >\nparse            returns: $# local $: bob < @ x >\n> "
            )
        );
        assert_eq!(rc, 0);
    }

    #[test]
    fn undefined_ruleset_and_missing_address() {
        let (out, _) = talk(CF, "nosuch root\nfoo\n");
        assert!(out.contains("> Undefined ruleset nosuch\n> No address!\n> "));
        let (out, rc) = talk(CF, "999 root\n");
        assert!(out.contains("bad ruleset 999 (100 max)\nUndefined ruleset 999\n"));
        assert_eq!(rc, 70);
    }

    #[test]
    fn macros_and_classes() {
        let (out, _) = talk(CF, ".Dxvalue of x\n$x\n$j\n$=w\n$e\n");
        assert!(out.contains("> > value of x\n> oracle.example.test\n> oracle\noracle.example.test\n[127.0.0.1]\n> Undefined\n"));
    }

    #[test]
    fn show_ruleset() {
        let (out, _) = talk(CF, "=Scanonify\n");
        assert!(out.contains("> R$* @ $* \t\t$@ $1 < @ $2 > \n"));
    }

    #[test]
    fn quit_ends_without_prompt() {
        let (out, _) = talk(CF, "/quit\n3,0 root\n");
        assert_eq!(out, format!("{BANNER}> "));
    }

    #[test]
    fn missing_cf_is_exit_72_and_bad_lines_are_reported() {
        let mut out = Vec::new();
        let rc = run_path(
            std::path::Path::new("/nonexistent/x.cf"),
            &b""[..],
            &mut out,
        );
        assert_eq!(rc, crate::sysexits::EX_OSFILE);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "/nonexistent/x.cf: line 0: cannot open: No such file or directory\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let cf = dir.path().join("bad.cf");
        std::fs::write(&cf, format!("{CF}Z junk\n")).unwrap();
        let mut out = Vec::new();
        let rc = run_path(&cf, &b"3,0 a\n"[..], &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!(
            "{}: line 8: unknown configuration line \"Z junk\"\n{BANNER}",
            cf.display()
        )));
        assert_eq!(rc, crate::sysexits::EX_SOFTWARE);
    }

    #[test]
    fn long_lines_are_read_in_fgets_pieces() {
        let mut pending = Vec::new();
        let long = format!("{}\n", "a".repeat(3000));
        let mut input = long.as_bytes();
        assert_eq!(next_line(&mut input, &mut pending).unwrap().len(), 2047);
        assert_eq!(next_line(&mut input, &mut pending).unwrap().len(), 953);
        assert_eq!(next_line(&mut input, &mut pending), None);
    }

    #[test]
    fn too_long_address() {
        let (out, _) = talk(CF, &format!("3,0 {}\n", "x".repeat(300)));
        assert!(out.contains(&format!(
            "Address \"{}\" too long (255 bytes max)\n",
            "x".repeat(255)
        )));
    }
}
