//! The `sendmail` binary. One program, several names, as sendmail installs it: run as `mailq`
//! it lists the queue (`-bp`), as `newaliases` it rebuilds the aliases (`-bi`), as `mailstats`
//! it prints the statistics, as `makemap` it builds a database map from its text. Exit codes are sysexits(3).

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use sendmail_rs::cli::{self, Mode};
use sendmail_rs::deliver::local::inflight;
use sendmail_rs::setgid;
use sendmail_rs::sysexits::{EX_IOERR, EX_NOINPUT, EX_NOPERM, EX_OK, EX_USAGE};
use sendmail_rs::{daemon, makemap, queue, rules, runner, runtime, stats, submit};

fn main() {
    // Installed set-group-id smmsp: the privilege is held back from here on and used only
    // to write into the maildrop and to read the queue for mailq (sendmail_rs::setgid).
    setgid::at_start();
    // A mailer program's supervisor, started by the daemon (deliver::local::inflight).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == inflight::SUPERVISOR_FLAG) {
        setgid::drop_for_good();
        inflight::supervisor_main(&args[2..]);
    }
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // mailstats has its own flags (-C -c -f -o -p -P), not sendmail's.
    let prog = argv
        .first()
        .map(|a| Path::new(a).file_name().unwrap_or_default().to_owned());
    // --help, for every name: the summary src/cli/manual.rs also renders as the man pages.
    if argv.iter().skip(1).any(|a| a == "--help") {
        setgid::drop_for_good();
        let name = prog
            .as_deref()
            .and_then(|p| p.to_str())
            .unwrap_or("sendmail");
        print!("{}", cli::manual::help(cli::manual::page_for(name)));
        std::process::exit(EX_OK);
    }
    if prog.as_deref() == Some(std::ffi::OsStr::new("mailstats")) {
        setgid::drop_for_good();
        std::process::exit(stats::run_mailstats(&argv));
    }
    // makemap has its own flags too (makemap(8)).
    if prog.as_deref() == Some(std::ffi::OsStr::new("makemap")) {
        setgid::drop_for_good();
        std::process::exit(makemap::run(
            &argv[1..],
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ));
    }
    let inv = match cli::parse(&argv, Path::new(cli::SYSTEM_CF)) {
        Ok(inv) => inv,
        Err(e) => {
            setgid::drop_for_good();
            match e {
                // sendmail prints these without its name
                cli::CliError::UnknownMode(_) => eprintln!("{e}"),
                _ => eprintln!("sendmail: {e}"),
            }
            std::process::exit(EX_USAGE);
        }
    };
    cli::settle_privilege(&inv);
    if inv.args.unprivileged {
        // Its queue, pid file and log live here (cli::unprivileged_overrides).
        let dir = cli::unprivileged_dir();
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
        {
            eprintln!("sendmail: cannot create {}: {e}", dir.display());
            std::process::exit(sendmail_rs::sysexits::EX_CANTCREAT);
        }
        if matches!(inv.mode, Mode::Daemon { .. }) {
            eprintln!(
                "sendmail: --unprivileged: listening on [::1] and 127.0.0.1 ports 2525 (MTA) and 2587 (MSA); queue, pid file and log (maillog) in {}",
                dir.display()
            );
        }
    }
    // -d0.1: the version block first, as sendmail prints it after reading the cf.
    if sendmail_rs::version::wants_version_block(&inv.args.debug)
        && let Ok(cfg) = runtime::load_config(&inv)
    {
        print!("{}", sendmail_rs::version::version_block(&cfg));
    }
    let code = match inv.mode {
        Mode::Daemon { foreground } => daemon::run(inv, foreground),
        Mode::Mailstats => stats::run_mailstats(&argv),
        Mode::PrintQueue => print_queue(&inv),
        Mode::Deliver => submit::deliver(&inv),
        Mode::InitAliases => init_aliases(&inv),
        Mode::Verify => submit::verify(&inv),
        Mode::AddressTest => rules::bt::run(
            &inv.source,
            &inv.overrides,
            std::io::stdin().lock(),
            std::io::stdout().lock(),
        ),
        Mode::Smtp => submit::smtp_on_stdio(&inv),
        Mode::QueueRun => runner::cmdline::run(&inv),
    };
    std::process::exit(code);
}

/// `-bp` / `mailq`: the queue in sendmail's layout, read without disturbing a running daemon.
/// Any user may list it (the set-group-id group reads it), unless `PrivacyOptions` has
/// `restrictmailq`: then only root and the members of the queue directory's group, as in
/// sendmail.
fn print_queue(inv: &cli::Invocation) -> i32 {
    let cfg = match runtime::load_config(inv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let qdir = &cfg.options.queue_directory;
    if cfg
        .options
        .privacy_options
        .iter()
        .any(|w| w == "restrictmailq")
        && !may_see_queue(qdir)
    {
        // sendmail: usrerr("510 You are not permitted to see the queue"), exit EX_NOPERM.
        println!("You are not permitted to see the queue");
        return EX_NOPERM;
    }
    // `-qQ[substr]`: the quarantined messages, and only those (sendmail's hf files); the
    // other `-q` limits as a queue run reads them.
    let select = match runner::select::QueueRun::parse(&inv.args.queue_flags) {
        Ok(run) => run.select,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return EX_USAGE;
        }
    };
    setgid::with_privilege(|| list_queue(qdir, &select, inv.args.verbose))
}

/// `restrictmailq`: root, or the real group or a supplementary group is the queue
/// directory's.
fn may_see_queue(qdir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if nix::unistd::getuid().is_root() {
        return true;
    }
    let Ok(meta) = std::fs::metadata(qdir) else {
        return false;
    };
    let gid = nix::unistd::Gid::from_raw(meta.gid());
    nix::unistd::getgid() == gid || nix::unistd::getgroups().is_ok_and(|g| g.contains(&gid))
}

fn list_queue(qdir: &Path, select: &runner::select::Selection, verbose: bool) -> i32 {
    let store = match queue::Store::open_read_only(qdir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sendmail: cannot read the queue {}: {e}", qdir.display());
            return EX_NOINPUT;
        }
    };
    let mut entries = match store.list() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return EX_IOERR;
        }
    };
    // Command-line submissions not yet picked up by the daemon.
    let (waiting, corrupt) = queue::maildrop::waiting(qdir);
    entries.extend(waiting.iter().map(queue::QueueEntrySummary::of));
    entries.retain(|e| select.matches(&e.envelope));
    for path in corrupt {
        eprintln!("sendmail: {}: not a queue file", path.display());
    }
    let mut out = std::io::stdout().lock();
    match queue::format_queue(&entries, &qdir.display().to_string(), verbose, &mut out) {
        Ok(()) => EX_OK,
        Err(e) => {
            eprintln!("sendmail: {e}");
            EX_IOERR
        }
    }
}

/// `-bi` / `newaliases`: rebuild every `AliasFile`'s map.
fn init_aliases(inv: &cli::Invocation) -> i32 {
    let cfg = match runtime::load_config(inv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let logger = runtime::make_logger(&cfg, inv, false)
        .unwrap_or_else(|_| sendmail_rs::log::Logger::stderr(cfg.options.log_level));
    sendmail_rs::aliases::run_newaliases(
        &cfg.options.alias_files,
        &logger,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
}
