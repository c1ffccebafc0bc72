//! The manual: one table of every mode, flag and option of our own, rendered both as
//! `--help` text and as the man pages in `man/` (`sendmail.8`, `mailq.1`, `newaliases.1`,
//! `makemap.8`), so the two cannot drift apart.
//!
//! In: the [`Page`]s below. Out: [`help`] (plain text, what `sendmail --help` prints) and
//! [`roff`] (man(7) source). `tests/man_pages.rs` checks that the files in `man/` are what
//! [`roff`] renders (`UPDATE_MAN=1` rewrites them) and that every flag [`super::LowArgs`]
//! accepts is in the table.

/// One flag or option and what it does.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// As typed, e.g. `-bd`, `-C`, `-O LogFile=`.
    pub flag: &'static str,
    /// Its argument's name (empty: none).
    pub arg: &'static str,
    pub text: &'static str,
}

/// A titled list of entries.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    pub title: &'static str,
    pub entries: &'static [Entry],
}

/// One manual page.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub name: &'static str,
    /// 1 or 8.
    pub section: u8,
    pub summary: &'static str,
    pub synopsis: &'static [&'static str],
    /// Paragraphs.
    pub description: &'static [&'static str],
    pub sections: &'static [Section],
    /// Paragraphs of the FILES section.
    pub files: &'static [&'static str],
    pub see_also: &'static str,
}

const fn e(flag: &'static str, arg: &'static str, text: &'static str) -> Entry {
    Entry { flag, arg, text }
}

const MODES: &[Entry] = &[
    e(
        "-bm",
        "",
        "Read a message on standard input and queue it for the recipients named on the command line (the default mode).",
    ),
    e(
        "-bd",
        "",
        "Run as a daemon in the background: listen on every DaemonPortOptions of the configuration; the parent exits 0 once every socket is open. With -q<time>, run the queue at that interval.",
    ),
    e("-bD", "", "As -bd, in the foreground."),
    e(
        "-bs",
        "",
        "Speak SMTP on standard input and output; accepted messages are queued through the maildrop.",
    ),
    e("-bp", "", "List the queue (what mailq does)."),
    e(
        "-bi",
        "",
        "Rebuild the alias maps of every AliasFile (what newaliases does).",
    ),
    e(
        "-bt",
        "",
        "Address test mode: read ruleset and address lines, print each rewriting step as sendmail does.",
    ),
    e(
        "-bv",
        "",
        "Verify the recipients: print where each would be delivered; exit 67 if any is unknown.",
    ),
    e(
        "-q",
        "",
        "Run the queue once, now: every pending recipient of the selected messages is tried whatever its backoff. When a daemon holds the queue it does the run and this command waits for it.",
    ),
    e(
        "-q",
        "time",
        "With -bd: run the queue every time (30m, 1h, ...).",
    ),
    e(
        "-qI",
        "substr",
        "Limit a queue run to queue ids containing substr (-qR recipients, -qS senders; -q!I, -q!R, -q!S exclude). Repeated limits of one kind add up.",
    ),
    e(
        "-qf",
        "",
        "Run the queue in the foreground (the same as -q here).",
    ),
];

const FLAGS: &[Entry] = &[
    e(
        "-C",
        "file",
        "Read this configuration instead of /etc/mail/sendmail.cf. A user other than root gives up the set-group-id privilege with it.",
    ),
    e(
        "-O",
        "option=value",
        "Set an option by its long name, overriding the configuration. A DaemonPortOptions given here replaces all of the configuration's daemons. A user other than root keeps the privilege only for DeliveryMode, ErrorMode, IgnoreDots, SendMimeErrors, MeToo, Verbose, SevenBitInput, EightBitMode and OldStyleHeaders.",
    ),
    e(
        "-o",
        "Xvalue",
        "Set an option by its one-letter name (-oi, -odq, -oem).",
    ),
    e(
        "-f",
        "address",
        "The envelope sender (default: the invoking user).",
    ),
    e("-r", "address", "The same as -f."),
    e(
        "-F",
        "name",
        "The sender's full name, for an added From: header.",
    ),
    e(
        "-t",
        "",
        "Take the recipients from the To:, Cc: and Bcc: headers (Bcc: is removed); addresses on the command line are then left out.",
    ),
    e(
        "-i",
        "",
        "A line holding a single dot does not end the message (-oi is the same).",
    ),
    e(
        "-N",
        "dsn",
        "DSN NOTIFY for the recipients (never, or success, failure, delay).",
    ),
    e("-R", "ret", "DSN RET: full or hdrs."),
    e("-V", "envid", "DSN ENVID."),
    e("-L", "tag", "The syslog identifier (default sendmail)."),
    e(
        "-d",
        "category.level",
        "Debugging flags: accepted, noted in the start-up log line, not acted on.",
    ),
    e(
        "-X",
        "file",
        "Traffic log file: accepted, not acted on yet.",
    ),
    e("-v", "", "Verbose."),
    e(
        "-n -G -U -m -s -e -E",
        "",
        "Accepted for compatibility; no effect.",
    ),
    e(
        "-h -p -M -B -A -D",
        "value",
        "Accepted for compatibility; no effect.",
    ),
    e(
        "-Q",
        "[reason]",
        "With -q limits: quarantine the selected messages with reason; with -qQ and no reason, release them. While a daemon runs, the daemon makes the change; a message in delivery at that moment is skipped (\"Skipping ./id\"). With -v, each change is printed. A released message is delivered at the next queue run.",
    ),
    e(
        "--unprivileged",
        "",
        "Ours, not sendmail's: a first run without root on the embedded default. The daemons listen on [::1] and 127.0.0.1, port 2525 (MTA) and 2587 (MSA); the queue, pid file, statistics file and mail log (maillog) are in $XDG_STATE_HOME/sendmail-rs, else ~/.local/state/sendmail-rs. Options given after it still apply.",
    ),
    e("--help", "", "Print this summary and exit."),
];

const OWN_OPTIONS: &[Entry] = &[
    e(
        "LogFile=",
        "path",
        "Also write the mail log to this file, in syslog's file layout; reopened on SIGHUP.",
    ),
    e(
        "NameServers=",
        "addr[:port],...",
        "The DNS servers to ask, instead of /etc/resolv.conf.",
    ),
    e(
        "AuthPasswordFile=",
        "path",
        "The users AUTH PLAIN and LOGIN accept, one user:hash line each (SHA-512-crypt or argon2); without it, no AUTH.",
    ),
    e(
        "MinDataRate=",
        "n",
        "Bytes per second a message must average after a grace of Timeout.datablock (at most 5 minutes); default 500, 0 for none.",
    ),
    e(
        "Chunking=",
        "bool",
        "Offer CHUNKING (BDAT, RFC 3030); default false, because sendmail 8.17 has no CHUNKING and a drop-in answers EHLO as sendmail does.",
    ),
    e(
        "MetricsAddress=",
        "addr:port",
        "Serve /metrics (Prometheus text format) and /healthz over HTTP on this address, e.g. [::1]:9125; unset, no listener. A non-loopback address is a configuration error unless MetricsAllowRemote is set too.",
    ),
    e(
        "MetricsAllowRemote=",
        "bool",
        "Allow a MetricsAddress that is not loopback; default false.",
    ),
];

const SIGNALS: &[Entry] = &[
    e(
        "SIGHUP",
        "",
        "Re-read the configuration, the certificates and the password file; reopen only the listeners that changed. A configuration that no longer loads is logged and the running one kept.",
    ),
    e(
        "SIGTERM",
        "",
        "Stop accepting, finish what is acknowledged, exit.",
    ),
];

/// sendmail(8).
pub const SENDMAIL: Page = Page {
    name: "sendmail",
    section: 8,
    summary: "a memory-safe, IPv6-first mail transfer agent that runs sendmail's configuration",
    synopsis: &[
        "sendmail [flags] [address ...]",
        "sendmail -bd | -bD [-q time] [flags]",
        "sendmail -bs | -bp | -bi | -bt | -bv address ... | -q[limits]",
        "mailq | newaliases | makemap | mailstats",
    ],
    description: &[
        "sendmail-rs reads the sendmail.cf that m4 generates (without -C, /etc/mail/sendmail.cf, or its embedded default when that file does not exist), takes sendmail's command line and writes sendmail's log lines. One binary answers to several names: as mailq it lists the queue, as newaliases it rebuilds the aliases, as makemap and mailstats it takes those programs' flags; as sendmail-mta or /usr/lib/sendmail it is sendmail.",
        "Any local user may submit mail: the binary is installed set-group-id smmsp and writes the message into <QueueDirectory>/maildrop (owned by the queue's owner, group smmsp, mode 1730), from which the daemon picks it up within a second. The privilege is held back from the start and taken up only to write that file and, for mailq, to read the queue. Root's submission with no daemon running is delivered at once in the background.",
        "Exit statuses are sendmail's (sysexits(3)): 0 success, 64 usage, 67 unknown user, 71 a listener could not be opened, 73 the message could not be queued, 75 try again, 77 permission denied, 78 configuration error.",
    ],
    sections: &[
        Section {
            title: "MODES",
            entries: MODES,
        },
        Section {
            title: "FLAGS",
            entries: FLAGS,
        },
        Section {
            title: "OPTIONS OF OUR OWN (in sendmail.cf as O Name=value, or with -O)",
            entries: OWN_OPTIONS,
        },
        Section {
            title: "SIGNALS",
            entries: SIGNALS,
        },
    ],
    files: &[
        "/etc/mail/sendmail.cf: the configuration (m4 output).",
        "/var/spool/mqueue: the queue (journal/, maildrop/, control socket); root:smmsp 2750.",
        "/run/sendmail.pid: the daemon's pid and command line.",
        "/var/lib/sendmail/sendmail.st: the statistics (mailstats).",
    ],
    see_also: "mailq(1), newaliases(1), makemap(8), mailstats(8), aliases(5)",
};

/// mailq(1).
pub const MAILQ: Page = Page {
    name: "mailq",
    section: 1,
    summary: "list the mail queue",
    synopsis: &["mailq [-C file] [-O option=value]"],
    description: &[
        "mailq is sendmail -bp: it lists the messages in the queue, in sendmail's layout (queue id, size, time queued, sender, recipients and why each waits), without disturbing a running daemon. Submissions still in the maildrop are listed too, for root.",
        "Any user may list the queue (the set-group-id group smmsp reads it), unless the configuration's PrivacyOptions has restrictmailq: then only root and the members of the queue directory's group may (You are not permitted to see the queue, exit 77).",
    ],
    sections: &[Section {
        title: "FLAGS",
        entries: &[
            e(
                "-C",
                "file",
                "Read this configuration (a user other than root gives up the privilege).",
            ),
            e("-O", "option=value", "Set an option."),
            e("--help", "", "Print this summary and exit."),
        ],
    }],
    files: &["/var/spool/mqueue: the queue."],
    see_also: "sendmail(8)",
};

/// newaliases(1).
pub const NEWALIASES: Page = Page {
    name: "newaliases",
    section: 1,
    summary: "rebuild the alias maps",
    synopsis: &["newaliases [-C file] [-O option=value]"],
    description: &[
        "newaliases is sendmail -bi: it rebuilds the map (NAME.db) of every AliasFile of the configuration from its text, written beside and renamed into place, and prints how many aliases it stored. A running daemon sees the new map at its next lookup.",
    ],
    sections: &[Section {
        title: "FLAGS",
        entries: &[
            e("-C", "file", "Read this configuration."),
            e("-O", "option=value", "Set an option (e.g. AliasFile=)."),
            e("--help", "", "Print this summary and exit."),
        ],
    }],
    files: &["/etc/mail/aliases, /etc/mail/aliases.db: the default AliasFile and its map."],
    see_also: "sendmail(8), aliases(5)",
};

/// makemap(8).
pub const MAKEMAP: Page = Page {
    name: "makemap",
    section: 8,
    summary: "build a database map from its text",
    synopsis: &[
        "makemap [-C file] [-N] [-c size] [-D char] [-d] [-e] [-f] [-i type] [-l] [-o] [-r] [-s] [-t delimiter] [-u] [-v] type mapname",
    ],
    description: &[
        "makemap reads key and value lines on standard input (the key up to the first white space or the -t delimiter; lines starting with the comment character are skipped) and writes mapname.db, which the configuration's K lines of type hash or btree read. The file is sendmail-rs's own checked format (a sorted index with a CRC-32), written beside and renamed into place; a Berkeley DB file is refused, not misread.",
    ],
    sections: &[Section {
        title: "FLAGS",
        entries: &[
            e(
                "type",
                "",
                "hash, btree or implicit (all written in the same format).",
            ),
            e("-C", "file", "The configuration read for TrustedUser."),
            e("-N", "", "Accepted (keys are stored without their NUL)."),
            e("-c", "size", "Accepted (cache size)."),
            e("-D", "char", "The comment character (default #)."),
            e("-d", "", "Keep repeated keys (a lookup finds the first)."),
            e("-e", "", "Allow a key with an empty value."),
            e(
                "-f",
                "",
                "Keys keep their case (default: folded to lower case).",
            ),
            e("-i", "type", "Accepted (input type)."),
            e("-l", "", "List the map types this build writes and exit."),
            e("-o", "", "Add to the existing map instead of replacing it."),
            e("-r", "", "A repeated key replaces the earlier value."),
            e("-s", "", "Accepted (safe-file checks are always made)."),
            e(
                "-t",
                "delimiter",
                "The key/value delimiter (default: white space).",
            ),
            e("-u", "", "Print the map's entries instead of building it."),
            e("-v", "", "Print each entry as it is stored."),
        ],
    }],
    files: &["mapname.db: the map written."],
    see_also: "sendmail(8), newaliases(1)",
};

/// Every page, as installed.
pub const PAGES: &[Page] = &[SENDMAIL, MAILQ, NEWALIASES, MAKEMAP];

/// The page for a program name (`mailq`, `newaliases`, `makemap`; anything else: sendmail).
pub fn page_for(prog: &str) -> &'static Page {
    PAGES.iter().find(|p| p.name == prog).unwrap_or(&PAGES[0])
}

fn flag_with_arg(en: &Entry) -> String {
    match (en.arg.is_empty(), en.flag.ends_with('=')) {
        (true, _) => en.flag.to_string(),
        (false, true) => format!("{}{}", en.flag, en.arg),
        (false, false) if en.flag.starts_with("-q") || en.flag == "-o" => {
            format!("{}{}", en.flag, en.arg)
        }
        (false, false) => format!("{} {}", en.flag, en.arg),
    }
}

/// Word-wraps `text` at `width`, each line prefixed by `indent`.
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > width {
            out.push_str(indent);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(indent);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The `--help` text.
pub fn help(page: &Page) -> String {
    let mut out = format!("{} - {}\n\nUsage:\n", page.name, page.summary);
    for s in page.synopsis {
        out.push_str(&format!("  {s}\n"));
    }
    for s in page.sections {
        out.push_str(&format!("\n{}:\n", s.title));
        for en in s.entries {
            out.push_str(&format!("  {}\n", flag_with_arg(en)));
            out.push_str(&wrap(en.text, "        ", 80));
        }
    }
    out.push_str(&format!(
        "\nThe manual: man {} {}\n",
        page.section, page.name
    ));
    out
}

/// Escapes text for roff: backslashes, a leading dot or quote, hyphens as minus signs.
fn esc(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// The man page source.
pub fn roff(page: &Page) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        ".\\\" Generated from src/cli/manual.rs by tests/man_pages.rs (UPDATE_MAN=1); do not edit.\n\
         .TH {} {} \"\" \"sendmail-rs {}\" \"sendmail-rs\"\n",
        page.name.to_uppercase(),
        page.section,
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str(&format!(
        ".SH NAME\n{} \\- {}\n.SH SYNOPSIS\n",
        page.name,
        esc(page.summary)
    ));
    for (i, s) in page.synopsis.iter().enumerate() {
        if i > 0 {
            out.push_str(".br\n");
        }
        out.push_str(&format!(".B {}\n", esc(s)));
    }
    out.push_str(".SH DESCRIPTION\n");
    for (i, p) in page.description.iter().enumerate() {
        if i > 0 {
            out.push_str(".PP\n");
        }
        out.push_str(&format!("{}\n", esc(p)));
    }
    for s in page.sections {
        out.push_str(&format!(".SH \"{}\"\n", esc(s.title)));
        for en in s.entries {
            let head = if en.arg.is_empty() {
                format!("\\fB{}\\fR", esc(en.flag))
            } else {
                let sep = if flag_with_arg(en).contains(' ') && !en.flag.contains(' ') {
                    " "
                } else {
                    ""
                };
                format!("\\fB{}\\fR{sep}\\fI{}\\fR", esc(en.flag), esc(en.arg))
            };
            out.push_str(&format!(".TP\n{head}\n{}\n", esc(en.text)));
        }
    }
    if !page.files.is_empty() {
        out.push_str(".SH FILES\n");
        for (i, f) in page.files.iter().enumerate() {
            if i > 0 {
                out.push_str(".br\n");
            }
            out.push_str(&format!("{}\n", esc(f)));
        }
    }
    out.push_str(&format!(".SH \"SEE ALSO\"\n{}\n", esc(page.see_also)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{ArgsError, LowArgs};

    /// Every single-letter flag the parser accepts is in sendmail's page.
    #[test]
    fn every_flag_the_parser_takes_is_documented() {
        let documented: String = SENDMAIL
            .sections
            .iter()
            .flat_map(|s| s.entries.iter().map(|e| format!(" {} ", e.flag)))
            .collect();
        for c in ('a'..='z').chain('A'..='Z') {
            let taken = match LowArgs::parse([format!("-{c}")]) {
                Ok(_) | Err(ArgsError::MissingValue(_)) => true,
                Err(_) => false,
            };
            if taken {
                let word = format!("-{c}");
                assert!(
                    documented.split_whitespace().any(|w| w.starts_with(&word)),
                    "-{c} is accepted but not in src/cli/manual.rs"
                );
            }
        }
        assert!(LowArgs::parse(["--unprivileged"]).is_ok());
        assert!(documented.contains(" --unprivileged "));
    }

    #[test]
    fn help_and_page_come_from_the_same_entries() {
        let h = help(&SENDMAIL);
        let r = roff(&SENDMAIL);
        for s in SENDMAIL.sections {
            for en in s.entries {
                let first = en
                    .text
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ");
                assert!(h.contains(&first), "{first} in --help");
                assert!(r.contains(&esc(&first)), "{first} in the page");
            }
        }
    }
}
