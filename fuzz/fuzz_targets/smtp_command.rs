//! The SMTP command parser (`smtp::command`): any line, with and without the DSN and
//! DELIVERBY (and SMTPUTF8) extensions, and the HELO name check. Nothing may panic; the parse must not
//! depend on the extensions for verbs other than MAIL and RCPT.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sendmail_rs::smtp::command::{self, Command, Extensions};

fuzz_target!(|line: &[u8]| {
    let all = command::parse(line);
    let none = command::parse_with(
        line,
        &Extensions {
            dsn: false,
            deliverby: false,
            smtputf8: false,
            deliver_by_min: 0,
        },
    );
    if !matches!(all, Command::Mail(_) | Command::Rcpt(_)) {
        assert_eq!(all, none, "extensions changed a non-MAIL/RCPT parse");
    }
    let _ = all.name();
    if let Command::Helo(arg) | Command::Ehlo(arg) = &all {
        let _ = command::check_helo_name(arg);
    }
    let _ = command::is_sync_point(line);
});
