//! The `sendmail` binary (also `mailq`, `newaliases`, `mailstats` by argv[0]).

fn main() {
    std::process::exit(sendmail_rs::sysexits::EX_OK);
}
