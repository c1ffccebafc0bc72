//! A whole SMTP session (`smtp::session`, sans-IO) fed from fuzz bytes, driven the way
//! `smtp::conn` drives it: lines up to LF (CR stripped) while in command state, raw bytes
//! while the session wants DATA/BDAT bytes, `committed` after every `Commit`, `tls_failed`
//! after `StartTls`, the peer lost at the end of the input. The first byte picks the
//! features (DSN, ETRN/EXPN, CHUNKING, SMTPUTF8, a size limit, a refused commit, the
//! "nullserver" mode) and whether the client sends ahead of the replies. Nothing touches a disk or a socket.
//!
//! Checked beyond "no panic": every reply is well formed on the wire (a 3-digit code
//! 200–599, `-` on every line but the last, ` ` on the last, CRLF, no CR or LF inside a
//! line); a `250 … Message accepted` comes only from a commit the queue confirmed; a
//! committed message has a recipient and a body within the size limit; nothing is answered
//! after `Close`.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sendmail_rs::queue::id::QueueIdGen;
use sendmail_rs::smtp::command::{Address, MailParams, RcptParams};
use sendmail_rs::smtp::filter::FilterVerdict;
use sendmail_rs::smtp::reply::Reply;
use sendmail_rs::smtp::session::{
    Action, ClientInfo, Decision, Features, Policy, PolicyContext, Privacy, Session, SessionContext,
};

/// The driver's longest command line (`smtp::conn`'s default `max_line`).
const MAX_LINE: usize = sendmail_rs::smtp::conn::MAX_COMMAND_LINE;

/// Accepts everything except the local part `nosuchuser` (550) and `tempfail` (451).
struct FuzzPolicy;

impl Policy for FuzzPolicy {
    fn check_mail(&self, _: &PolicyContext<'_>, sender: &Address, _: &MailParams) -> Decision {
        refuse_some(sender)
    }

    fn check_rcpt(&self, _: &PolicyContext<'_>, rcpt: &Address, _: &RcptParams) -> Decision {
        refuse_some(rcpt)
    }
}

fn refuse_some(a: &Address) -> Decision {
    let code = match a.local.as_str() {
        "nosuchuser" => 550,
        "tempfail" => 451,
        _ => return Decision::Accept,
    };
    Decision::Reject {
        reply: Reply::new(code, Some("5.1.1"), format!("{}... refused", a.raw)),
        log: None,
    }
}

fn context(flags: u8) -> SessionContext {
    SessionContext {
        hostname: "fuzz.example.test".into(),
        greeting: "fuzz.example.test Sendmail 8.17.1.9/8.17.1.9".into(),
        daemon_name: "MTA".into(),
        daemon_flags: String::new(),
        client: ClientInfo {
            ip: Some("127.0.0.1".parse().expect("literal address")),
            port: 40000,
            name: Some("localhost".into()),
        },
        max_message_size: if flags & 0x10 != 0 { 200 } else { 0 },
        max_headers_length: 1024,
        seven_bit_input: flags & 0x20 != 0,
        macros: Arc::default(),
        bad_rcpt_throttle: u32::from(flags & 0x80 != 0) * 2,
        max_recipients: 5,
        features: Features {
            dsn: flags & 1 != 0,
            etrn: flags & 2 != 0,
            expn: flags & 2 != 0,
            deliverby: flags & 1 != 0,
            chunking: flags & 4 != 0,
            smtputf8: flags & 8 != 0,
            ..Features::default()
        },
        privacy: Privacy::default(),
        log_level: 20,
        version: "8.17.1.9".into(),
        help: None,
        connect_reject: (flags & 0x40 != 0)
            .then(|| Reply::new(550, Some("5.7.1"), "Access denied")),
        policy: Arc::new(FuzzPolicy),
        ids: Arc::new(QueueIdGen::new()),
        security: Default::default(),
    }
}

/// What the driver has seen so far.
struct Check {
    /// `Commit`s not yet answered.
    pending: u32,
    /// Commits confirmed by the queue and not yet answered 250.
    confirmed: u32,
    closed: bool,
    max_size: u64,
}

impl Check {
    fn reply(&mut self, r: &Reply) {
        assert!(!self.closed, "a reply after Close: {r}");
        well_formed(&r.to_bytes());
        if r.code == 250 && r.text().contains("Message accepted") {
            assert!(
                self.confirmed > 0,
                "250 accepted without a confirmed commit: {r}"
            );
            self.confirmed -= 1;
        }
    }
}

fn well_formed(wire: &[u8]) {
    assert!(wire.ends_with(b"\r\n"), "reply without CRLF: {wire:?}");
    let lines: Vec<&[u8]> = wire[..wire.len() - 2].split(|&b| b == b'\n').collect();
    for (i, l) in lines.iter().enumerate() {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        assert!(l.len() >= 4, "short reply line: {l:?}");
        assert!(l[..3].iter().all(u8::is_ascii_digit), "bad code: {l:?}");
        assert!((b'2'..=b'5').contains(&l[0]), "code outside 2xx–5xx: {l:?}");
        let sep = if i + 1 == lines.len() { b' ' } else { b'-' };
        assert_eq!(l[3], sep, "bad separator: {l:?}");
        assert!(!l.contains(&b'\r'), "CR inside a reply line: {l:?}");
    }
}

fn run(s: &mut Session, c: &mut Check, actions: Vec<Action>, refuse_commit: bool) {
    let mut queue = std::collections::VecDeque::from(actions);
    while let Some(a) = queue.pop_front() {
        match a {
            Action::Reply(r) => c.reply(&r),
            Action::Commit(m) => {
                assert!(!m.recipients.is_empty(), "a message without recipients");
                if c.max_size > 0 {
                    assert!(m.body.len() as u64 <= c.max_size, "body over the limit");
                }
                c.pending += 1;
                let result = if refuse_commit {
                    Err(Reply::new(451, Some("4.3.0"), "queue full"))
                } else {
                    c.confirmed += 1;
                    Ok(())
                };
                c.pending -= 1;
                queue.extend(s.committed(result));
            }
            Action::StartTls => queue.extend(s.tls_failed("fuzz")),
            Action::Close => c.closed = true,
            // no filters are configured here; a filter call goes on as without filters
            Action::Filter(_) => queue.extend(s.filtered(FilterVerdict::Continue)),
            Action::Log(_) | Action::Delay(_) | Action::StartData => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut input)) = data.split_first() else {
        return;
    };
    let ctx = context(flags);
    let mut c = Check {
        pending: 0,
        confirmed: 0,
        closed: false,
        max_size: ctx.max_message_size,
    };
    let refuse_commit = flags & 0x20 != 0;
    // Set: the client sends ahead without waiting for replies (the HELO/EHLO/DATA check).
    let pipelined = flags & 0x80 != 0;
    let mut s = Session::new(ctx);
    let g = s.greeting();
    c.reply(&g);
    while !input.is_empty() && !c.closed && !s.is_closed() {
        if s.wants_data() {
            let (used, actions) = s.data(input);
            assert!(used <= input.len(), "consumed more than given");
            input = &input[used..];
            run(&mut s, &mut c, actions, refuse_commit);
            if used == 0 && s.wants_data() {
                break;
            }
            continue;
        }
        let Some(pos) = input.iter().position(|&b| b == b'\n') else {
            break;
        };
        let total = pos + 1;
        if total > MAX_LINE {
            let actions = s.line_too_long(total);
            run(&mut s, &mut c, actions, refuse_commit);
            break;
        }
        let line = &input[..pos];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let more = pipelined && input.len() > total;
        let actions = s.handle(line, more);
        input = &input[total..];
        run(&mut s, &mut c, actions, refuse_commit);
    }
    if !c.closed && !s.is_closed() {
        let actions = s.connection_lost();
        run(&mut s, &mut c, actions, refuse_commit);
    }
    assert_eq!(c.pending, 0);
    assert_eq!(c.confirmed, 0, "a confirmed commit was never answered 250");
});
