//! Stand-alone address test mode for conformance runs until `sendmail -bt` is wired:
//! `bt -C /path/sendmail.cf -bt` reads commands on stdin like `sendmail -bt`.

use std::path::PathBuf;

fn main() {
    let mut cf = PathBuf::from("/etc/mail/sendmail.cf");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "-C" {
            if let Some(p) = args.next() {
                cf = PathBuf::from(p);
            }
        } else if let Some(p) = a.strip_prefix("-C") {
            cf = PathBuf::from(p);
        }
    }
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let rc = sendmail_rs::rules::bt::run_path(&cf, stdin.lock(), stdout.lock());
    std::process::exit(rc);
}
