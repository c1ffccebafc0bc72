//! `mailq` / `sendmail -bp`: the queue listing in sendmail's layout.
//!
//! In: the queue's entries ([`QueueEntrySummary`], in run order) and the queue directory
//! as it should be displayed. Out: text, byte for byte what sendmail 8.17 prints
//! (`queue.c`: `print_single_queue`, `printqueue`, `prtstr`; samples `40-cli-queue.txt`,
//! `46-cli-deferred.txt`):
//!
//! ```text
//! \t\t<qdir> (1 request)
//! -----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------
//! 6AO7R0vX027769        5 Tue Nov 24 07:27 sender@client.example.test
//!                  (Deferred: Connection refused by [127.0.0.1])
//! \t\t\t\t\t bob@remote.example.test
//! \t\tTotal requests: 1
//! ```
//!
//! * id `%13s`, then a status column (sendmail: `*` locked, `X` load too high, `-` too
//!   young; here always blank, the daemon's locks are in-process).
//! * size `%8ld`: the body after the header/body separator, LF line ends (sendmail's `df`
//!   file size); time: the first 16 characters of `ctime(3)` in local time.
//! * sender, at most 39 columns; recipients still pending, `\n\t\t\t\t\t ` then at most 38
//!   columns. Unprintable bytes show as `\ooo`, `\` as `\\` (`prtstr`).
//! * if the message has a `BODY=` type or a pending recipient has a status text, a line
//!   `    %10.10s` with the body type, then `   (%.60s)` with the status text.
//! * addresses of messages received over SMTP show in angle brackets, as sendmail keeps
//!   the `MAIL`/`RCPT` argument; command-line ones bare; the null sender is `<>`.
//! * an empty queue is `<qdir> is empty`; the `Total requests: N` line always follows.
//!
//! `mailq -v` (sendmail's `Verbose`) lists the same entries wider (oracle, scenario 89bi):
//!
//! ```text
//! -----Q-ID----- --Size-- -Priority- ---Q-Time--- --------Sender/Recipient--------
//! 6B696cNw011354       14     198047 Dec  6 09:06 <prober@remote.example.test>
//!                  (Operating system error)
//! \t\t\t\t\t\t<root@oracle.example.test>
//! ```
//!
//! * after the size the work priority `%10ld` (the queue file's, [`Envelope::priority`]:
//!   sendmail's `e_msgpriority`, message size − class × `ClassFactor` + recipients ×
//!   `RecipientFactor`, plus `RetryFactor` per queue run), then `+` if a delay warning
//!   was sent, else a space, and the date without the weekday (`ctime(3)` + 4, 12 chars);
//! * the sender at most 78 columns, the status text at most 100, recipients after six
//!   tabs, at most 71 columns.
//!
//! [`Envelope::priority`]: crate::queue::Envelope::priority

use std::io::{self, Write};
use std::time::SystemTime;

use super::QueueError;
use super::store::{QueueEntrySummary, Store};

/// Lists the queue of `store` to `out` under the heading `qdir_display`; returns the
/// number of requests.
pub fn print_queue(
    store: &Store,
    qdir_display: &str,
    out: &mut impl Write,
) -> Result<usize, QueueError> {
    let entries = store.list()?;
    format_queue(&entries, qdir_display, false, out)
        .map_err(|e| QueueError::io("write queue listing to", "stdout", e))?;
    Ok(entries.len())
}

/// Writes the listing of `entries` (already in run order); `verbose`: `mailq -v`'s.
pub fn format_queue(
    entries: &[QueueEntrySummary],
    qdir_display: &str,
    verbose: bool,
    out: &mut impl Write,
) -> io::Result<()> {
    let n = entries.len();
    if n == 0 {
        writeln!(out, "{qdir_display} is empty")?;
    } else {
        writeln!(
            out,
            "\t\t{qdir_display} ({n} request{})",
            if n == 1 { "" } else { "s" }
        )?;
        writeln!(
            out,
            "{}",
            match verbose {
                true => {
                    "-----Q-ID----- --Size-- -Priority- ---Q-Time--- --------Sender/Recipient--------"
                }
                false => {
                    "-----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------"
                }
            }
        )?;
        for e in entries {
            format_entry(e, verbose, out)?;
        }
    }
    writeln!(out, "\t\tTotal requests: {n}")
}

fn format_entry(e: &QueueEntrySummary, verbose: bool, out: &mut impl Write) -> io::Result<()> {
    let env = &e.envelope;
    let smtp = env.client.protocol.is_some();
    // sendmail's column widths: sender, status text, recipient; the recipients' indent.
    let (sender_cols, status_cols, rcpt_cols, indent) = match verbose {
        true => (78, 100, 71, "\t\t\t\t\t\t"),
        false => (39, 60, 38, "\t\t\t\t\t "),
    };
    write!(out, "{:>13} {:>8} ", env.id.as_str(), e.body_size)?;
    if verbose {
        let warned = if env.notices.warned { '+' } else { ' ' };
        write!(
            out,
            "{:>10}{warned}{} ",
            env.priority,
            chrono::DateTime::<chrono::Local>::from(env.arrival).format("%b %e %H:%M")
        )?;
    } else {
        write!(out, "{} ", ctime16(env.arrival))?;
    }
    prtstr(out, &shown_address(&env.sender, smtp, true), sender_cols)?;
    if let Some(q) = &env.quarantine {
        write!(out, "\n     QUARANTINE: {}", truncate_chars(q, 60))?;
    }

    let status = e.pending().find_map(|r| r.status.as_deref());
    let body_type = env.params.body.map(|b| b.as_str()).unwrap_or("");
    if status.is_some() || !body_type.is_empty() {
        write!(out, "\n    {body_type:>10.10}")?;
        if let Some(s) = status {
            write!(out, "   ({})", truncate_chars(s, status_cols))?;
        }
    }
    for r in e.pending() {
        write!(out, "\n{indent}")?;
        prtstr(out, &shown_address(&r.address, smtp, false), rcpt_cols)?;
    }
    writeln!(out)
}

fn shown_address(addr: &str, smtp: bool, is_sender: bool) -> String {
    if addr.is_empty() && is_sender {
        "<>".to_string()
    } else if smtp {
        format!("<{addr}>")
    } else {
        addr.to_string()
    }
}

/// `ctime(3)` up to the minute: `Tue Nov 24 07:26` (day of month space-padded), local time.
fn ctime16(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Local>::from(t)
        .format("%a %b %e %H:%M")
        .to_string()
}

fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// sendmail's `prtstr`: at most `ml` columns; `\` doubled, bytes outside printable ASCII
/// as `\ooo` (only while at least 4 columns are left).
fn prtstr(out: &mut impl Write, s: &str, ml: i32) -> io::Result<()> {
    let mut ml = ml;
    for &c in s.as_bytes() {
        if ml <= 0 {
            break;
        }
        ml -= 1;
        if c == b'\\' {
            if ml > 0 {
                ml -= 1;
                out.write_all(b"\\\\")?;
            }
        } else if c.is_ascii_graphic() || c == b' ' {
            out.write_all(&[c])?;
        } else {
            ml -= 3;
            if ml > 0 {
                write!(out, "\\{c:03o}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::file::{BodyType, DeliveryState, Envelope, Protocol, Recipient};
    use crate::queue::{QueueId, file};
    use chrono::TimeZone;

    fn at_local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> SystemTime {
        chrono::Local
            .with_ymd_and_hms(y, mo, d, h, mi, 5)
            .single()
            .unwrap()
            .into()
    }

    fn entry(id: &str, sender: &str, rcpts: &[&str], body: &[u8]) -> QueueEntrySummary {
        let mut env = Envelope::new(QueueId::new(id).unwrap(), sender);
        env.recipients = rcpts.iter().map(|r| Recipient::new(*r)).collect();
        QueueEntrySummary {
            envelope: env,
            message_size: body.len() as u64,
            body_size: file::body_part_len(body) as u64,
        }
    }

    fn listing(entries: &[QueueEntrySummary], qdir: &str) -> String {
        let mut out = Vec::new();
        format_queue(entries, qdir, false, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// sendmail 8.17.1.9, `mailq -v` (differential scenario 89bi, 2026-12-06): the priority
    /// column, the date without weekday, the status text up to 100 columns, six tabs.
    #[test]
    fn verbose_listing_as_sendmail() {
        let mut e = entry(
            "6B696cNw011354",
            "prober@remote.example.test",
            &["root@oracle.example.test", "user@relay.example.net"],
            b"Subject: probe\n\nbody line one\n",
        );
        e.envelope.client.protocol = Some(Protocol::Smtp);
        e.envelope.arrival = at_local(2026, 12, 6, 9, 6);
        e.envelope.priority = 198_047;
        let status =
            "<user@other.example.net>... Relaying denied. IP name lookup failed [203.0.113.96]";
        e.envelope.recipients[0].status = Some(status.into());
        let mut out = Vec::new();
        format_queue(&[e.clone()], "/var/spool/mqueue", true, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "\t\t/var/spool/mqueue (1 request)
-----Q-ID----- --Size-- -Priority- ---Q-Time--- --------Sender/Recipient--------
6B696cNw011354       14     198047 Dec  6 09:06 <prober@remote.example.test>
                 ({status})
\t\t\t\t\t\t<root@oracle.example.test>
\t\t\t\t\t\t<user@relay.example.net>
\t\tTotal requests: 1
"
            )
        );
        // a delay warning sent: `+` before the date
        e.envelope.notices.warned = true;
        let mut out = Vec::new();
        format_queue(&[e], "/var/spool/mqueue", true, &mut out).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("      14     198047+Dec  6 09:06 <prober")
        );
    }

    // Verbatim from tests/data/oracle/samples/40-cli-queue.txt and 46-cli-deferred.txt
    // (sendmail 8.17.1.9 `-bp` output).
    const SAMPLE_40_ONE: &str = "\t\t$ORACLE/run/mqueue (1 request)
-----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------
6AO7QxZs027587        5 Tue Nov 24 07:26 sender@client.example.test
\t\t\t\t\t root
\t\tTotal requests: 1
";
    const SAMPLE_40_EMPTY: &str = "$ORACLE/run/mqueue is empty
\t\tTotal requests: 0
";
    const SAMPLE_46_DEFERRED: &str = "\t\t$ORACLE/run/mqueue (1 request)
-----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------
6AO7R0vX027769        5 Tue Nov 24 07:27 sender@client.example.test
                 (Deferred: Connection refused by [127.0.0.1])
\t\t\t\t\t bob@remote.example.test
\t\tTotal requests: 1
";

    #[test]
    fn one_queued_message_matches_sample_40() {
        let mut e = entry(
            "6AO7QxZs027587",
            "sender@client.example.test",
            &["root"],
            b"Subject: queued from cli\n\nbody\n",
        );
        e.envelope.arrival = at_local(2026, 11, 24, 7, 26);
        assert_eq!(listing(&[e], "$ORACLE/run/mqueue"), SAMPLE_40_ONE);
    }

    #[test]
    fn empty_queue_matches_sample_40() {
        assert_eq!(listing(&[], "$ORACLE/run/mqueue"), SAMPLE_40_EMPTY);
    }

    #[test]
    fn deferred_message_matches_sample_46() {
        let mut e = entry(
            "6AO7R0vX027769",
            "sender@client.example.test",
            &["bob@remote.example.test"],
            b"Subject: deferred\n\nbody\n",
        );
        e.envelope.arrival = at_local(2026, 11, 24, 7, 27);
        let r = &mut e.envelope.recipients[0];
        r.tries = 1;
        r.status = Some("Deferred: Connection refused by [127.0.0.1]".into());
        assert_eq!(listing(&[e], "$ORACLE/run/mqueue"), SAMPLE_46_DEFERRED);
    }

    #[test]
    fn smtp_messages_show_brackets_body_type_and_only_pending_recipients() {
        let mut e = entry(
            "6AO7BVso015427",
            "",
            &["alice@x.test", "done@x.test", "b\\ob\u{7}@x.test"],
            b"A: b\n\n12345678\n",
        );
        e.envelope.arrival = at_local(2026, 1, 2, 3, 4);
        e.envelope.client.protocol = Some(Protocol::Esmtp);
        e.envelope.params.body = Some(BodyType::EightBitMime);
        e.envelope.recipients[1].state = DeliveryState::Done;
        let got = listing(&[e.clone(), e], "/var/spool/mqueue");
        let job = "6AO7BVso015427        9 Fri Jan  2 03:04 <>\n      8BITMIME\n\t\t\t\t\t <alice@x.test>\n\t\t\t\t\t <b\\\\ob\\007@x.test>\n";
        assert_eq!(
            got,
            format!(
                "\t\t/var/spool/mqueue (2 requests)\n-----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------\n{job}{job}\t\tTotal requests: 2\n"
            )
        );
    }

    #[test]
    fn long_addresses_and_status_texts_are_cut_like_sendmail() {
        let long = "a".repeat(50);
        let mut e = entry("ID1", &long, &[&long], b"");
        e.envelope.arrival = at_local(2026, 1, 2, 3, 4);
        e.envelope.recipients[0].status = Some("x".repeat(70));
        let got = listing(&[e], "q");
        let want = format!(
            "          ID1        0 Fri Jan  2 03:04 {}\n{}({})\n\t\t\t\t\t {}\n",
            "a".repeat(39),
            " ".repeat(4 + 10 + 3),
            "x".repeat(60),
            "a".repeat(38)
        );
        assert!(got.contains(&want), "{got}");
    }

    #[test]
    fn print_queue_lists_what_the_store_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut env = Envelope::new(
            QueueId::new("6AO7QxZs027587").unwrap(),
            "sender@client.example.test",
        );
        env.arrival = at_local(2026, 11, 24, 7, 26);
        env.recipients = vec![Recipient::new("root")];
        let msg = file::Message {
            envelope: env,
            body: b"Subject: queued from cli\r\n\r\nbody\r\n".to_vec(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(store.commit(msg)).unwrap();

        let mut out = Vec::new();
        assert_eq!(
            print_queue(&store, "$ORACLE/run/mqueue", &mut out).unwrap(),
            1
        );
        assert_eq!(String::from_utf8(out).unwrap(), SAMPLE_40_ONE);

        rt.block_on(store.remove(&QueueId::new("6AO7QxZs027587").unwrap()))
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(
            print_queue(&store, "$ORACLE/run/mqueue", &mut out).unwrap(),
            0
        );
        assert_eq!(String::from_utf8(out).unwrap(), SAMPLE_40_EMPTY);
    }

    #[test]
    fn prtstr_escapes_and_counts_columns() {
        let mut out = Vec::new();
        prtstr(&mut out, "a\tb", 10).unwrap();
        assert_eq!(out, b"a\\011b");
        let mut out = Vec::new();
        prtstr(&mut out, "ab\t", 4).unwrap(); // 2 left for the tab: dropped, like sendmail
        assert_eq!(out, b"ab");
    }
}
