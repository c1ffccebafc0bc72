//! The `mailstats` command: sendmail 8.17's report of the statistics file, byte for byte,
//! plus our per-daemon table.
//!
//! In: `mailstats`' argv (`-C cf`, `-c`, `-f file`, `-o`, `-p`, `-P`), the cf's `StatusFile`
//! and `M` lines, and the statistics file ([`super`]). Out: the report on stdout, sendmail's
//! error messages and exit codes. The layout is described in [`super`]; transcripts of the
//! real program are in `tests/data/`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{Local, TimeZone};

use super::{
    DaemonCounts, MailerCounts, Snapshot, StatsError, io_err, lock_file, now, read_file,
    render_file, replace_file,
};

/// `mailstats` command-line options (sendmail 8.17: `-p`, `-P`, `-o`; `-C`/`-c`/`-f`
/// choose the files and are the caller's business).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailstatsOptions {
    /// `-p` / `-P`: program-readable output (`<since> <now>` first line, no `K`, no `=` line,
    /// a compact `C` row, no daemon table so scripts see exactly sendmail's lines).
    pub program: bool,
    /// `-p`: reset the file's counters after printing (counting restarts now).
    pub clear: bool,
    /// `-o`: leave out the mailer names.
    pub omit_names: bool,
}

/// `mailstats`: reads the statistics file at `path` and prints sendmail's report (and our
/// daemon table) to `out`. `mailer_names[i]` names mailer `i`.
pub fn print_mailstats(
    path: impl AsRef<Path>,
    mailer_names: &[String],
    out: &mut impl Write,
) -> Result<(), StatsError> {
    print_mailstats_with(path, mailer_names, MailstatsOptions::default(), out)
}

/// [`print_mailstats`] with `mailstats` options; with `clear`, the file is read and reset
/// under its lock, so counts saved meanwhile by a running daemon are not lost.
pub fn print_mailstats_with(
    path: impl AsRef<Path>,
    mailer_names: &[String],
    opts: MailstatsOptions,
    out: &mut impl Write,
) -> Result<(), StatsError> {
    let path = path.as_ref();
    let missing = || {
        io_err(path)(io::Error::new(
            io::ErrorKind::NotFound,
            "no statistics file (create it to start counting)",
        ))
    };
    let now = now();
    let text = if opts.clear {
        let _flock = lock_file(path)?.ok_or_else(missing)?;
        let snap = read_file(path)?.ok_or_else(missing)?;
        let text = render_mailstats_with(&snap, mailer_names, &Local, opts, now);
        replace_file(
            path,
            render_file(&Snapshot::new(now), mailer_names).as_bytes(),
        )?;
        text
    } else {
        let snap = read_file(path)?.ok_or_else(missing)?;
        render_mailstats_with(&snap, mailer_names, &Local, opts, now)
    };
    out.write_all(text.as_bytes()).map_err(|e| StatsError::Io {
        path: PathBuf::from("<stdout>"),
        source: e,
    })
}

/// The default report for `s`, dates in time zone `tz`.
pub fn render_mailstats<Tz: TimeZone>(s: &Snapshot, mailer_names: &[String], tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    render_mailstats_with(s, mailer_names, tz, MailstatsOptions::default(), now())
}

/// The report for `s` with `opts`, dates in time zone `tz`, `now` for `-p`'s first line.
pub fn render_mailstats_with<Tz: TimeZone>(
    s: &Snapshot,
    mailer_names: &[String],
    tz: &Tz,
    opts: MailstatsOptions,
    now: i64,
) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let k = if opts.program { "" } else { "K" };
    let mut o = if opts.program {
        format!("{} {now}\n", s.since)
    } else {
        let since = tz
            .timestamp_opt(s.since, 0)
            .single()
            .map(|t| t.format("%a %b %e %H:%M:%S %Y").to_string())
            .unwrap_or_else(|| s.since.to_string());
        let names_col = if opts.omit_names { "" } else { "  Mailer" };
        format!(
            "Statistics from {since}\n \
             M   msgsfr  bytes_from   msgsto    bytes_to  msgsrej msgsdis msgsqur{names_col}\n"
        )
    };
    let mut total = MailerCounts::default();
    for (i, m) in s.mailers.iter().enumerate().filter(|(_, m)| m.shown()) {
        o.push_str(&format!(
            "{i:2} {:8} {:10}{k} {:8} {:10}{k}   {:6}  {:6}  {:6}",
            m.msgs_from,
            m.kbytes_from,
            m.msgs_to,
            m.kbytes_to,
            m.rejected,
            m.discarded,
            m.quarantined
        ));
        if !opts.omit_names {
            let name = mailer_names.get(i).map(String::as_str).unwrap_or("");
            o.push_str(&format!("  {name}"));
        }
        o.push('\n');
        let mut f = total.fields();
        for (v, x) in f.iter_mut().zip(m.fields()) {
            *v += x;
        }
        total = MailerCounts::from_fields(f);
    }
    if !opts.program {
        o.push_str(&"=".repeat(69));
        o.push('\n');
    }
    let t = total;
    o.push_str(&format!(
        " T {:8} {:10}{k} {:8} {:10}{k}   {:6}  {:6}  {:6}\n",
        t.msgs_from, t.kbytes_from, t.msgs_to, t.kbytes_to, t.rejected, t.discarded, t.quarantined
    ));
    let c = s.connections;
    if opts.program {
        o.push_str(&format!(" C {:8} {:8} {:6}\n", c.from, c.to, c.rejected));
        return o;
    }
    o.push_str(&format!(
        " C {:8} {:10}  {:8} {:10}    {:6}\n",
        c.from, "", c.to, "", c.rejected
    ));
    let daemons: Vec<_> = s
        .daemons
        .iter()
        .filter(|(_, d)| **d != DaemonCounts::default())
        .collect();
    if !daemons.is_empty() {
        o.push_str("\n D    conns     msgs       bytes  rejects  Daemon\n");
        for (name, d) in daemons {
            o.push_str(&format!(
                "   {:8} {:8} {:10}K {:8}  {name}\n",
                d.connections, d.messages, d.kbytes, d.rejects
            ));
        }
    }
    o
}

/// Mailer names by index as sendmail numbers them: `prog` 0, `*file*` 1, `*include*` 2,
/// then each other `M` line of the cf in order (a second definition of a name keeps its
/// slot) [observed with the real 8.17 mailstats].
pub fn mailer_slots<'a>(names_in_cf_order: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut slots: Vec<String> = ["prog", "*file*", "*include*"].map(String::from).to_vec();
    for name in names_in_cf_order {
        if !slots.iter().any(|s| s == name) {
            slots.push(name.to_string());
        }
    }
    slots
}

/// What `mailstats` takes from a sendmail.cf: the `StatusFile` option (`O StatusFile=…` or
/// the one-letter `OS…`) and the mailer names (`M` lines), the same scan the real
/// `mailstats` does without reading the rest of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CfScan {
    pub status_file: Option<PathBuf>,
    /// By mailer index, see [`mailer_slots`].
    pub mailer_names: Vec<String>,
}

/// Scans cf text for [`CfScan`].
pub fn scan_cf(text: &str) -> CfScan {
    let mut status_file = None;
    let mut mailers = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('M') {
            let end = rest
                .find(|c: char| c == ',' || c.is_whitespace())
                .unwrap_or(rest.len());
            if end > 0 {
                mailers.push(&rest[..end]);
            }
        } else if let Some(rest) = line.strip_prefix("OS") {
            status_file = Some(PathBuf::from(rest.trim()));
        } else if let Some(rest) = line.strip_prefix("O ") {
            let rest = rest.trim_start();
            let key_len = "StatusFile".len();
            if rest.len() > key_len
                && rest.is_char_boundary(key_len)
                && rest[..key_len].eq_ignore_ascii_case("StatusFile")
            {
                let value = rest[key_len..].trim_start();
                if let Some(v) = value.strip_prefix('=') {
                    status_file = Some(PathBuf::from(v.trim()));
                }
            }
        }
    }
    CfScan {
        status_file,
        mailer_names: mailer_slots(mailers),
    }
}

/// `mailstats [-C cffile] [-c] [-P] [-f stfile] [-o] [-p]`, as sendmail 8.17's: `-C` names
/// the cf (default `system_cf`), `-c` uses `submit.cf` beside it, `-f` names the statistics
/// file instead of the cf's `StatusFile`; `-o`, `-p`, `-P` as [`MailstatsOptions`]. Returns
/// the exit code, with the real one's messages and codes: 64 bad usage, 66 cf or file
/// missing, 72 no `StatusFile`, 71 a file it cannot read (`EX_OSERR`, as sendmail's
/// "incorrect magic number").
pub fn mailstats_cli(
    argv: &[String],
    system_cf: &Path,
    out: &mut impl Write,
    err: &mut impl Write,
) -> i32 {
    use crate::sysexits::{EX_NOINPUT, EX_OK, EX_OSERR, EX_OSFILE, EX_USAGE};
    const USAGE: &str = "usage: mailstats [-C cffile] [-c] [-P] [-f stfile] [-o] [-p]";
    let mut cf: Option<PathBuf> = None;
    let mut submit = false;
    let mut stfile: Option<PathBuf> = None;
    let mut opts = MailstatsOptions::default();
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            let _ = writeln!(err, "{USAGE}");
            return EX_USAGE;
        };
        for (i, c) in flags.char_indices() {
            match c {
                'C' | 'f' => {
                    let rest = &flags[i + 1..];
                    let value = if rest.is_empty() {
                        match args.next() {
                            Some(v) => v.clone(),
                            None => {
                                let _ = writeln!(
                                    err,
                                    "mailstats: option requires an argument -- '{c}'\n{USAGE}"
                                );
                                return EX_USAGE;
                            }
                        }
                    } else {
                        rest.to_string()
                    };
                    if c == 'C' {
                        cf = Some(PathBuf::from(value));
                    } else {
                        stfile = Some(PathBuf::from(value));
                    }
                    break;
                }
                'c' => submit = true,
                'o' => opts.omit_names = true,
                'p' => {
                    opts.program = true;
                    opts.clear = true;
                }
                'P' => opts.program = true,
                _ => {
                    let _ = writeln!(err, "mailstats: invalid option -- '{c}'\n{USAGE}");
                    return EX_USAGE;
                }
            }
        }
    }
    // Like the daemon: without -C and without the system cf, the embedded default applies.
    let embedded = cf.is_none() && !submit && !system_cf.exists();
    let cf = cf.unwrap_or_else(|| {
        if submit {
            system_cf.with_file_name("submit.cf")
        } else {
            system_cf.to_path_buf()
        }
    });
    let read = if embedded {
        Ok(crate::config::DEFAULT_CF.as_bytes().to_vec())
    } else {
        fs::read(&cf)
    };
    let text = match read {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            let _ = writeln!(err, "mailstats: {}: {}", cf.display(), plain_io(&e));
            return EX_NOINPUT;
        }
    };
    let scan = scan_cf(&text);
    let Some(path) = stfile.or(scan.status_file) else {
        let _ = writeln!(err, "mailstats: no statistics file located");
        return EX_OSFILE;
    };
    match print_mailstats_with(&path, &scan.mailer_names, opts, out) {
        Ok(()) => EX_OK,
        Err(StatsError::Io { path, source }) if source.kind() == io::ErrorKind::NotFound => {
            let _ = writeln!(err, "mailstats: {}: {}", path.display(), plain_io(&source));
            EX_NOINPUT
        }
        Err(e) => {
            let _ = writeln!(err, "mailstats: {e}");
            EX_OSERR
        }
    }
}

/// The `mailstats` program: [`mailstats_cli`] on the process's stdout and stderr with the
/// system cf `/etc/mail/sendmail.cf`. `argv` is the whole command line (`argv[0]` first).
/// Returns the exit code.
pub fn run_mailstats(argv: &[String]) -> i32 {
    let stdout = io::stdout();
    let stderr = io::stderr();
    let code = mailstats_cli(
        argv,
        Path::new("/etc/mail/sendmail.cf"),
        &mut stdout.lock(),
        &mut stderr.lock(),
    );
    let _ = stdout.lock().flush();
    code
}

/// An io::Error as strerror(3) says it (without Rust's " (os error N)").
fn plain_io(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;
    use chrono::Utc;

    fn names() -> Vec<String> {
        [
            "prog",
            "*file*",
            "*include*",
            "local",
            "smtp",
            "esmtp",
            "relay",
        ]
        .map(String::from)
        .to_vec()
    }

    const REAL_BIN: &[u8] = include_bytes!("../../tests/data/sendmail-8.17-statistics.bin");
    /// `TZ=UTC mailstats -C m.cf` of the real 8.17.1.9 on `REAL_BIN`.
    const REAL_REPORT: &str = include_str!("../../tests/data/sendmail-8.17-mailstats.txt");

    #[test]
    fn report_matches_the_real_mailstats_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("statistics");
        fs::write(&p, REAL_BIN).unwrap();
        let snap = read_file(&p).unwrap().unwrap();
        assert_eq!(render_mailstats(&snap, &names(), &Utc), REAL_REPORT);
    }

    #[test]
    fn program_readable_and_nameless_reports_match_the_real_mailstats() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("statistics");
        fs::write(&p, REAL_BIN).unwrap();
        let snap = read_file(&p).unwrap().unwrap();
        let o = MailstatsOptions {
            omit_names: true,
            ..Default::default()
        };
        assert_eq!(
            render_mailstats_with(&snap, &names(), &Utc, o, 0),
            include_str!("../../tests/data/sendmail-8.17-mailstats-o.txt")
        );
        let real_p = include_str!("../../tests/data/sendmail-8.17-mailstats-P.txt");
        // the first line is "<since> <now>"; take "now" from the recording
        let now: i64 = real_p
            .lines()
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let o = MailstatsOptions {
            program: true,
            ..Default::default()
        };
        assert_eq!(render_mailstats_with(&snap, &names(), &Utc, o, now), real_p);
    }

    #[test]
    fn dash_p_prints_then_clears_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("statistics");
        let st = Stats::load(&p, &names()).unwrap();
        fs::write(&p, "").unwrap();
        st.mailer(3).from(10);
        st.daemon("MTA").connection();
        st.save().unwrap();
        let o = MailstatsOptions {
            program: true,
            clear: true,
            omit_names: false,
        };
        let mut out = Vec::new();
        print_mailstats_with(&p, &names(), o, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "\n 3        1          1        0          0        0       0       0  local\n"
            ),
            "{text}"
        );
        assert!(!text.contains("MTA"), "{text}");
        let after = Stats::load(&p, &names()).unwrap().snapshot();
        assert_eq!(after.mailers[3], MailerCounts::default());
        assert!(after.daemons.is_empty());
        // a running daemon's later counts go into the cleared file
        st.mailer(3).from(10);
        st.save().unwrap();
        assert_eq!(
            Stats::load(&p, &names()).unwrap().snapshot().mailers[3].msgs_from,
            1
        );
    }

    #[test]
    fn the_report_adds_our_daemon_table() {
        let mut s = Snapshot::new(1795502399);
        s.mailers[3].msgs_from = 2;
        s.daemons.insert(
            "MTA-v6".into(),
            DaemonCounts {
                connections: 10,
                messages: 5,
                kbytes: 34,
                rejects: 1,
            },
        );
        let r = render_mailstats(&s, &names(), &Utc);
        let want_tail = " C        0                    0                    0\n\
                         \n D    conns     msgs       bytes  rejects  Daemon\n\
                         \x20        10        5         34K        1  MTA-v6\n";
        assert!(r.ends_with(want_tail), "{r}");
        assert!(r.starts_with("Statistics from Tue Nov 24 06:39:59 2026\n"));
    }

    #[test]
    fn print_mailstats_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("statistics");
        let mut out = Vec::new();
        let e = print_mailstats(&p, &names(), &mut out).unwrap_err();
        assert!(e.to_string().contains("no statistics file"), "{e}");
        fs::write(
            &p,
            "version 1\nsince 0\nmailer 3 1 1 0 0 0 0 0 local\nend\n",
        )
        .unwrap();
        print_mailstats(&p, &names(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "\n 3        1          1K        0          0K        0       0       0  local\n"
            ),
            "{text}"
        );
    }

    fn run(args: &[&str], system_cf: &Path) -> (i32, String, String) {
        let argv: Vec<String> = std::iter::once("mailstats")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = mailstats_cli(&argv, system_cf, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn mailer_slots_put_prog_first_like_sendmail() {
        // the real mailstats on a cf with Mfoo, Mprog, Mlocal: prog 0, foo 3, local 4
        assert_eq!(
            mailer_slots(["foo", "prog", "local", "foo"]),
            ["prog", "*file*", "*include*", "foo", "local"]
        );
    }

    #[test]
    fn scan_cf_finds_status_file_and_mailers() {
        let cf = "# c\nV10/Berkeley\nO StatusFile=/var/lib/sendmail/sendmail.st\n\
                  Mlocal,\t\tP=/usr/bin/procmail, F=x\nMprog, P=/bin/sh\nMesmtp, P=[IPC]\n\
                  O StatusFileX=/no\n";
        let s = scan_cf(cf);
        assert_eq!(
            s.status_file.as_deref(),
            Some(Path::new("/var/lib/sendmail/sendmail.st"))
        );
        assert_eq!(
            s.mailer_names,
            ["prog", "*file*", "*include*", "local", "esmtp"]
        );
        assert_eq!(
            scan_cf("OS/tmp/st\n").status_file.as_deref(),
            Some(Path::new("/tmp/st"))
        );
        assert_eq!(
            scan_cf("O statusfile = /x\n").status_file.as_deref(),
            Some(Path::new("/x"))
        );
    }

    #[test]
    fn the_command_behaves_like_the_real_one() {
        let dir = tempfile::tempdir().unwrap();
        let st = dir.path().join("sendmail.st");
        let cf = dir.path().join("sendmail.cf");
        fs::write(
            &cf,
            format!(
                "V10\nO StatusFile={}\nMlocal, P=/x\nMprog, P=/bin/sh\nMsmtp, P=[IPC]\nMesmtp, P=[IPC]\nMrelay, P=[IPC]\n",
                st.display()
            ),
        )
        .unwrap();
        fs::write(&st, REAL_BIN).unwrap();
        let (code, out, err) = run(
            &["-C", cf.to_str().unwrap(), "-P"],
            Path::new("/nonexistent"),
        );
        assert_eq!((code, err.as_str()), (0, ""));
        assert!(out.ends_with(" 5        0          0   123456    9876543        0       0       0  esmtp\n T       12         34   123461    9876550        2       1       3\n C     1000     2000     30\n"), "{out}");

        // -f overrides the cf; flags combine
        let other = dir.path().join("other.st");
        fs::write(&other, "version 1\nmailer 6 1 1 0 0 0 0 0 relay\nend\n").unwrap();
        let (code, out, _) = run(
            &[
                &format!("-C{}", cf.display()),
                "-oP",
                "-f",
                other.to_str().unwrap(),
            ],
            Path::new("/x"),
        );
        assert_eq!(code, 0);
        assert!(
            out.contains("\n 6        1          1        0          0        0       0       0\n"),
            "{out}"
        );

        // the system cf and -c's submit.cf beside it
        let (code, _, _) = run(&["-P"], &cf);
        assert_eq!(code, 0);
        let (code, _, err) = run(&["-c"], &cf);
        assert_eq!(code, 66);
        assert!(
            err.contains("submit.cf: No such file or directory"),
            "{err}"
        );

        let (code, _, err) = run(&["-x"], &cf);
        assert_eq!(code, 64);
        assert!(
            err.contains("invalid option -- 'x'\nusage: mailstats"),
            "{err}"
        );
        assert_eq!(run(&["-C"], &cf).0, 64);
        assert_eq!(run(&["extra"], &cf).0, 64);

        let nost = dir.path().join("nost.cf");
        fs::write(&nost, "V10\nMlocal, P=/x\n").unwrap();
        let (code, _, err) = run(&["-C", nost.to_str().unwrap()], &cf);
        assert_eq!(
            (code, err.as_str()),
            (72, "mailstats: no statistics file located\n")
        );

        let (code, _, err) = run(&["-f", "/nonexistent/st"], &cf);
        assert_eq!(code, 66);
        assert!(err.starts_with("mailstats: /nonexistent/st: "), "{err}");

        fs::write(&other, "garbage").unwrap();
        let (code, _, err) = run(&["-f", other.to_str().unwrap()], &cf);
        assert_eq!(code, 71);
        assert!(err.contains("expected `version 1`"), "{err}");
    }
}
