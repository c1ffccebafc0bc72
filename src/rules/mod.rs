//! The ruleset engine (S/R lines) and address test mode (`-bt`).
//!
//! In: a configuration's rulesets, macros, classes and maps. Out: rewritten token vectors,
//! `$#mailer $@host $:user` triples, and the `-bt` dialogue.
//!
//! * [`token`] — `prescan`: text → tokens, with `OperatorChars`.
//! * [`macros`] — `$x` / `${name}` values, classes, `expand`.
//! * [`ruleset`] — `S`/`R` lines → compiled rules, ruleset names and numbers.
//! * [`rewrite`] — the matcher and rewriter (`$*`, `$+`, `$-`, `$=`, `$~`, `$&`, `$>`, ...).
//! * [`maps`] — `K` maps: host (hosts file), dequote, arith, macro, user, sequence, and
//!   hash/btree/dbm/implicit maps (the built `NAME.db`, else the text source), regex.
//! * [`regex_map`] — the `regex` map (POSIX patterns on the `regex` crate).
//! * [`print`](mod@print) — sendmail's `xputs`/`printav` output form.
//! * [`mailer`] — `M` lines and the built-in `prog`, `*file*`, `*include*` mailers.
//! * [`address`] — `parseaddr`/`buildaddr` (rulesets 3, 0, 2, R=, 4), `remotename`,
//!   `crackaddr`.
//! * [`cf`] — a parsed configuration turned into an [`rewrite::Engine`].
//! * [`deliver`] — rulesets 1/2/4 and the mailers' `S=`/`R=` at delivery: envelope and headers.
//! * [`handle`] — the shared engine handle: mailer choice and rewriting at delivery.
//! * [`check`] — `rscheck`: `check_mail`/`check_rcpt`/... verdicts for the SMTP server.
//! * [`smtp_macros`] — the macros a session defines for those checks (`${mail_from}` …).
//! * [`fuzz`] — panic-free entry points (tokenize, one ruleset) for the fuzz targets.
//! * [`bt`] — the `-bt` dialogue; [`bt::run`] is `sendmail -bt`.
//!
//! The engine is built from [`crate::config`]'s parsed [`Config`](crate::config::Config), the
//! one reader of sendmail.cf ([`cf::from_config`]): the configuration expands `$x` in a rule
//! when it reads the rule, with the macro values defined *above* it, as sendmail does, and
//! the engine tokenizes with the `OperatorChars` it holds; one reading of the file gives both
//! the options and the rulesets of a configuration generation.
//!
//! Source: Sendmail Installation and Operation Guide §5.1.3–5.1.11; sendmail 8.17
//! parseaddr.c, readcf.c, map.c.

pub mod address;
pub mod bt;
pub mod cf;
pub mod check;
pub mod deliver;
pub mod fuzz;
pub mod handle;
pub mod macros;
pub mod mailer;
pub mod maps;
pub mod print;
pub mod regex_map;
pub mod rewrite;
pub mod ruleset;
pub mod smtp_macros;
pub mod token;
