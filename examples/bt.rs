//! Stand-alone address test mode for conformance runs until `sendmail -bt` is wired in
//! `main.rs`: `bt -C /path/sendmail.cf -bt [-O Name=value]` behaves like `sendmail -bt`.
//! It goes through the real command-line reader, so it is also the wiring to copy.

use sendmail_rs::cli::{self, Mode};
use std::path::Path;

fn main() {
    let mut argv: Vec<String> = std::env::args().collect();
    if let Some(a0) = argv.first_mut() {
        *a0 = "sendmail".into();
    }
    let inv = match cli::parse(&argv, Path::new(cli::SYSTEM_CF)) {
        Ok(inv) if inv.mode == Mode::AddressTest => inv,
        Ok(_) => {
            eprintln!("usage: bt -C cf -bt");
            std::process::exit(sendmail_rs::sysexits::EX_USAGE);
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(sendmail_rs::sysexits::EX_USAGE);
        }
    };
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let rc = sendmail_rs::rules::bt::run(&inv.source, &inv.overrides, stdin.lock(), stdout.lock());
    std::process::exit(rc);
}
