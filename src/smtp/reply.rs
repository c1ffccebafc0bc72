//! Every SMTP reply the server sends, with sendmail 8.17's exact wording.
//!
//! In: the variable parts of a reply (host name, client text, an address as the client wrote
//! it, a queue id). Out: a [`Reply`] (code, enhanced status code, text lines) that
//! [`Reply::to_bytes`] renders in RFC 5321 form, `250-first\r\n250 last\r\n`, with the
//! enhanced code (RFC 2034) repeated on every line as sendmail does.
//!
//! Sources: recorded sendmail 8.17.1.9 transcripts (`shared/conformance/smtp/*.txt`,
//! `shared/oracle/samples/1*.txt`), sendmail-facts.md §5. Replies not seen in a recording are
//! marked "(unrecorded)" and follow sendmail's source wording as far as it is known.

use std::fmt;

/// sendmail's `MAXSHORTSTR`: longer echoed strings are shortened to `head...tail`.
pub const MAXSHORTSTR: usize = 203;

/// One SMTP reply: a 3-digit code, an optional enhanced status code, one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// RFC 3463 code such as `2.1.0`, printed after the code on every line.
    pub enhanced: Option<String>,
    /// The text lines (at least one; an empty line is allowed).
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, enhanced: Option<&str>, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: enhanced.map(str::to_owned),
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply (continuation lines use `code-`).
    pub fn multi(code: u16, enhanced: Option<&str>, lines: Vec<String>) -> Reply {
        let lines = if lines.is_empty() {
            vec![String::new()]
        } else {
            lines
        };
        Reply {
            code,
            enhanced: enhanced.map(str::to_owned),
            lines,
        }
    }

    /// The wire form: every line ends in CRLF, all but the last use `code-`. A CR or LF
    /// inside a line's text (a client's bare CR echoed in `500 … Command unrecognized`) is
    /// sent as a space, so it can neither end the line early nor forge another reply line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{}", self.code, sep).as_bytes());
            if let Some(enh) = &self.enhanced {
                out.extend_from_slice(enh.as_bytes());
                out.push(b' ');
            }
            out.extend(line.bytes().map(|b| match b {
                b'\r' | b'\n' => b' ',
                b => b,
            }));
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The first line's text without code and enhanced code (what sendmail logs for a user
    /// error, e.g. `<a@b>... User unknown`).
    pub fn text(&self) -> &str {
        self.lines.first().map(String::as_str).unwrap_or("")
    }
}

/// `code enhanced text` of the first line, as in `reject=550 5.7.1 ...` log fields.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = &self.enhanced {
            write!(f, " {e}")?;
        }
        write!(f, " {}", self.text())
    }
}

/// sendmail's `shortenstring(s, MAXSHORTSTR)`: strings longer than `m` keep their first and
/// last `(m - 3) / 2` characters around `...`.
pub fn shorten(s: &str, m: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= m {
        return s.to_owned();
    }
    let keep = (m.saturating_sub(3)) / 2;
    let head: String = chars[..keep].iter().collect();
    let tail: String = chars[chars.len() - keep..].iter().collect();
    format!("{head}...{tail}")
}

// ---------------------------------------------------------------------------------------
// Connection-level replies.

/// The 220 greeting: `ESMTP` is inserted after the first word of the (macro-expanded)
/// `SmtpGreetingMessage`; each newline in it starts a `220-` continuation line.
pub fn greeting(text: &str) -> Reply {
    let mut lines: Vec<String> = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| {
            // Continuation lines lose one leading white space character.
            let l = if i > 0 {
                l.strip_prefix([' ', '\t']).unwrap_or(l)
            } else {
                l
            };
            l.trim_end_matches('\r').to_owned()
        })
        .collect();
    if let Some(first) = lines.first_mut() {
        *first = match first.split_once(' ') {
            Some((word, rest)) => format!("{word} ESMTP {rest}"),
            None => format!("{first} ESMTP"),
        };
    }
    Reply::multi(220, None, lines)
}

/// `221 2.0.0 <host> closing connection` (QUIT).
pub fn closing(host: &str) -> Reply {
    Reply::new(221, Some("2.0.0"), format!("{host} closing connection"))
}

/// `421 4.4.1 <host> Lost input channel from <client>` (written to a dead peer).
pub fn lost_input(host: &str, client: &str) -> Reply {
    Reply::new(
        421,
        Some("4.4.1"),
        format!("{host} Lost input channel from {client}"),
    )
}

/// `421 4.3.2 <host> Shutting down` (daemon stopping; unrecorded).
pub fn shutting_down(host: &str) -> Reply {
    Reply::new(421, Some("4.3.2"), format!("{host} Shutting down"))
}

/// `421 4.7.0 <host> Command too long, possible attack <client>`.
pub fn command_too_long(host: &str, client: &str) -> Reply {
    Reply::new(
        421,
        Some("4.7.0"),
        format!("{host} Command too long, possible attack {client}"),
    )
}

/// `451 4.4.1 timeout waiting for input during <what>` (DATA timeout; unrecorded).
pub fn timeout(during: &str) -> Reply {
    Reply::new(
        451,
        Some("4.4.1"),
        format!("timeout waiting for input during {during}"),
    )
}

/// `554 5.5.0 SMTP protocol error` (input arrived before the EHLO/DATA reply).
pub fn protocol_error() -> Reply {
    Reply::new(554, Some("5.5.0"), "SMTP protocol error")
}

/// `550 5.0.0 Command rejected` (every command after a protocol error).
/// The greeting after pre-greeting traffic (FEATURE(greet_pause)):
/// `554 <host> ESMTP not accepting messages`.
pub fn not_accepting_messages(host: &str) -> Reply {
    Reply::new(554, None, format!("{host} ESMTP not accepting messages"))
}

pub fn command_rejected() -> Reply {
    Reply::new(550, Some("5.0.0"), "Command rejected")
}

// ---------------------------------------------------------------------------------------
// HELO / EHLO.

/// `250 <host> Hello <client>, pleased to meet you` (HELO).
pub fn helo(host: &str, client: &str) -> Reply {
    Reply::new(
        250,
        None,
        format!("{host} Hello {client}, pleased to meet you"),
    )
}

/// The EHLO reply: the hello line, then one line per keyword.
pub fn ehlo(host: &str, client: &str, keywords: &[String]) -> Reply {
    let mut lines = vec![format!("{host} Hello {client}, pleased to meet you")];
    lines.extend(keywords.iter().cloned());
    Reply::multi(250, None, lines)
}

/// `501 5.0.0 HELO requires domain address` (or EHLO).
pub fn helo_requires_domain(verb: &str) -> Reply {
    Reply::new(
        501,
        Some("5.0.0"),
        format!("{verb} requires domain address"),
    )
}

/// `501 5.0.0 Invalid domain name`.
pub fn invalid_domain() -> Reply {
    Reply::new(501, Some("5.0.0"), "Invalid domain name")
}

// ---------------------------------------------------------------------------------------
// Simple commands.

/// `250 2.0.0 OK` (NOOP).
pub fn noop() -> Reply {
    Reply::new(250, Some("2.0.0"), "OK")
}

/// `250 2.0.0 Reset state` (RSET).
pub fn reset() -> Reply {
    Reply::new(250, Some("2.0.0"), "Reset state")
}

/// `250 2.0.0 Verbose mode` (VERB).
pub fn verbose() -> Reply {
    Reply::new(250, Some("2.0.0"), "Verbose mode")
}

/// `502 5.7.0 Verbose unavailable` (VERB with PrivacyOptions=noverb; unrecorded).
pub fn verbose_unavailable() -> Reply {
    Reply::new(502, Some("5.7.0"), "Verbose unavailable")
}

/// `500 5.5.1 Command unrecognized: "<line>"`.
pub fn unrecognized(line: &str) -> Reply {
    Reply::new(
        500,
        Some("5.5.1"),
        format!("Command unrecognized: \"{}\"", shorten(line, MAXSHORTSTR)),
    )
}

/// `502 5.5.1 Command not implemented: "<line>"` (SEND, SOML, SAML, TURN).
pub fn not_implemented(line: &str) -> Reply {
    Reply::new(
        502,
        Some("5.5.1"),
        format!(
            "Command not implemented: \"{}\"",
            shorten(line, MAXSHORTSTR)
        ),
    )
}

/// `502 5.7.0 Sorry, we do not allow this operation` (ETRN with M=E, EXPN with noexpn).
pub fn not_allowed() -> Reply {
    Reply::new(502, Some("5.7.0"), "Sorry, we do not allow this operation")
}

/// `252 2.5.2 Cannot VRFY user; try RCPT to attempt delivery (or try finger)` (novrfy).
pub fn cannot_vrfy() -> Reply {
    Reply::new(
        252,
        Some("2.5.2"),
        "Cannot VRFY user; try RCPT to attempt delivery (or try finger)",
    )
}

/// `501 5.5.2 Argument required` (VRFY/EXPN without argument).
pub fn argument_required() -> Reply {
    Reply::new(501, Some("5.5.2"), "Argument required")
}

/// `500 5.5.2 Parameter required` (ETRN without argument).
pub fn parameter_required() -> Reply {
    Reply::new(500, Some("5.5.2"), "Parameter required")
}

/// `459 4.5.4 Queue <group> unknown` (ETRN `#group`; sendmail 8.17, observed).
pub fn etrn_unknown_queue_group(group: &str) -> Reply {
    Reply::new(459, Some("4.5.4"), format!("Queue {group} unknown"))
}

/// `451 4.3.0 Unable to start queue run` (ETRN while the queue runner cannot take a request).
pub fn etrn_not_started() -> Reply {
    Reply::new(451, Some("4.3.0"), "Unable to start queue run")
}

/// `250 2.0.0 Queuing for node <node> started` (ETRN).
pub fn etrn_started(node: &str) -> Reply {
    Reply::new(
        250,
        Some("2.0.0"),
        format!("Queuing for node {node} started"),
    )
}

/// `454 4.3.3 TLS not available after start` (STARTTLS without a usable certificate).
pub fn tls_not_available() -> Reply {
    Reply::new(454, Some("4.3.3"), "TLS not available after start")
}

/// `501 5.5.2 Syntax error (no parameters allowed)` (STARTTLS with an argument).
pub fn starttls_no_parameters() -> Reply {
    Reply::new(501, Some("5.5.2"), "Syntax error (no parameters allowed)")
}

/// `503 5.5.0 TLS not available` (STARTTLS on an `M=S` daemon).
pub fn tls_not_offered() -> Reply {
    Reply::new(503, Some("5.5.0"), "TLS not available")
}

/// `421 4.7.0 <host> Too many bad commands; closing connection`.
pub fn too_many_bad_commands(host: &str) -> Reply {
    Reply::new(
        421,
        Some("4.7.0"),
        format!("{host} Too many bad commands; closing connection"),
    )
}

/// `421 4.7.0 <host> Rejecting open proxy <client>` (first command GET/POST/CONNECT/USER).
pub fn open_proxy(host: &str, client: &str) -> Reply {
    Reply::new(
        421,
        Some("4.7.0"),
        format!("{host} Rejecting open proxy {client}"),
    )
}

/// `503 5.3.3 AUTH not available` (AUTH without SASL mechanisms; unrecorded).
pub fn auth_not_available() -> Reply {
    Reply::new(503, Some("5.3.3"), "AUTH not available")
}

/// `220 2.0.0 Ready to start TLS` (STARTTLS accepted; the handshake follows).
pub fn ready_to_start_tls() -> Reply {
    Reply::new(220, Some("2.0.0"), "Ready to start TLS")
}

/// `503 5.5.0 TLS already active` (STARTTLS inside TLS).
pub fn tls_already_active() -> Reply {
    Reply::new(503, Some("5.5.0"), "TLS already active")
}

/// `503 5.5.0 Already Authenticated` (a second AUTH).
pub fn already_authenticated() -> Reply {
    Reply::new(503, Some("5.5.0"), "Already Authenticated")
}

/// `503 5.5.0 AUTH not permitted during a mail transaction`.
pub fn auth_in_transaction() -> Reply {
    Reply::new(
        503,
        Some("5.5.0"),
        "AUTH not permitted during a mail transaction",
    )
}

/// `501 5.5.2 AUTH mechanism must be specified` (AUTH without an argument).
pub fn auth_mechanism_required() -> Reply {
    Reply::new(501, Some("5.5.2"), "AUTH mechanism must be specified")
}

/// `504 5.3.3 AUTH mechanism <name> not available` (the name cut to 32 characters).
pub fn auth_mechanism_unavailable(name: &str) -> Reply {
    let name: String = name.chars().take(32).collect();
    Reply::new(
        504,
        Some("5.3.3"),
        format!("AUTH mechanism {name} not available"),
    )
}

/// `334 <base64 challenge>` (no enhanced code, RFC 4954).
pub fn auth_challenge(text: &str) -> Reply {
    Reply::new(334, None, text)
}

/// `501 5.0.0 AUTH aborted` (the client answered `*`).
pub fn auth_aborted() -> Reply {
    Reply::new(501, Some("5.0.0"), "AUTH aborted")
}

/// `501 5.5.4 cannot decode AUTH parameter <text>` (a SASL line that is not base64).
/// sendmail's answer to an AUTH command whose initial response is not base64 (a line sent
/// after a `334` gets [`auth_cannot_decode`]).
pub fn auth_cannot_decode_initial(text: &str) -> Reply {
    Reply::new(
        501,
        Some("5.5.4"),
        format!("cannot BASE64 decode '{}'", shorten(text, MAXSHORTSTR)),
    )
}

pub fn auth_cannot_decode(text: &str) -> Reply {
    Reply::new(
        501,
        Some("5.5.4"),
        format!(
            "cannot decode AUTH parameter {}",
            shorten(text, MAXSHORTSTR)
        ),
    )
}

/// `235 2.0.0 OK Authenticated`.
pub fn authenticated() -> Reply {
    Reply::new(235, Some("2.0.0"), "OK Authenticated")
}

/// `535 5.7.0 authentication failed`.
pub fn auth_failed() -> Reply {
    Reply::new(535, Some("5.7.0"), "authentication failed")
}

/// `421 4.7.0 <host> Too many AUTH failures; closing connection` (ours: sendmail leaves
/// the limit to the SASL library).
pub fn too_many_auth_failures(host: &str) -> Reply {
    Reply::new(
        421,
        Some("4.7.0"),
        format!("{host} Too many AUTH failures; closing connection"),
    )
}

/// `530 5.7.0 Authentication required` (MAIL on an `M=a` daemon before AUTH).
pub fn auth_required() -> Reply {
    Reply::new(530, Some("5.7.0"), "Authentication required")
}

/// `503 5.0.0 Polite people say HELO first` (PrivacyOptions=needmailhelo; unrecorded).
pub fn polite_helo_first() -> Reply {
    Reply::new(503, Some("5.0.0"), "Polite people say HELO first")
}

/// `503 5.0.0 I demand that you introduce yourself first` (needvrfyhelo/needexpnhelo).
pub fn introduce_yourself() -> Reply {
    Reply::new(
        503,
        Some("5.0.0"),
        "I demand that you introduce yourself first",
    )
}

// ---------------------------------------------------------------------------------------
// HELP.

/// The end line of every HELP answer is `214 2.0.0 End of HELP info`; `text` are the lines
/// before it.
pub fn help(text: &[String]) -> Reply {
    let mut lines = text.to_vec();
    lines.push("End of HELP info".to_owned());
    Reply::multi(214, Some("2.0.0"), lines)
}

/// `504 5.3.0 HELP topic "<topic>" unknown`.
pub fn help_unknown(topic: &str) -> Reply {
    Reply::new(
        504,
        Some("5.3.0"),
        format!("HELP topic \"{topic}\" unknown"),
    )
}

/// `502 5.3.0 Sendmail <version> -- HELP not implemented` (no readable HelpFile).
pub fn help_not_implemented(version: &str) -> Reply {
    Reply::new(
        502,
        Some("5.3.0"),
        format!("Sendmail {version} -- HELP not implemented"),
    )
}

// ---------------------------------------------------------------------------------------
// The mail transaction.

/// `250 2.1.0 <addr>... Sender ok` (a long address shortened, as every `addr...` prefix).
pub fn sender_ok(addr: &str) -> Reply {
    Reply::new(
        250,
        Some("2.1.0"),
        format!("{}... Sender ok", shorten(addr, MAXSHORTSTR)),
    )
}

/// `250 2.1.5 <addr>... Recipient ok` (a long address shortened: the oracle answers
/// `<r{99}...r{84}@x.example.test>... Recipient ok` for a 255-byte argument).
pub fn recipient_ok(addr: &str) -> Reply {
    Reply::new(
        250,
        Some("2.1.5"),
        format!("{}... Recipient ok", shorten(addr, MAXSHORTSTR)),
    )
}

/// `503 5.5.0 Sender already specified`.
pub fn sender_already_specified() -> Reply {
    Reply::new(503, Some("5.5.0"), "Sender already specified")
}

/// `503 5.0.0 Need MAIL before RCPT`.
pub fn need_mail_before_rcpt() -> Reply {
    Reply::new(503, Some("5.0.0"), "Need MAIL before RCPT")
}

/// `503 5.0.0 Need MAIL command` (DATA without MAIL).
pub fn need_mail() -> Reply {
    Reply::new(503, Some("5.0.0"), "Need MAIL command")
}

/// `503 5.0.0 Need RCPT (recipient)` (DATA without an accepted RCPT).
pub fn need_rcpt() -> Reply {
    Reply::new(503, Some("5.0.0"), "Need RCPT (recipient)")
}

/// `452 4.5.3 Too many recipients` (MaxRecipientsPerMessage reached).
pub fn too_many_recipients() -> Reply {
    Reply::new(452, Some("4.5.3"), "Too many recipients")
}

/// `501 5.5.2 Syntax error in parameters scanning "<word>"` (MAIL/RCPT without FROM:/TO:).
pub fn syntax_scanning(word: &str) -> Reply {
    Reply::new(
        501,
        Some("5.5.2"),
        format!(
            "Syntax error in parameters scanning \"{}\"",
            shorten(word, MAXSHORTSTR)
        ),
    )
}

/// `553 5.0.0 <addr>... Unbalanced '<'` (or `'>'`, `'"'`, `'('`, `')'`).
pub fn unbalanced(addr: &str, what: char) -> Reply {
    Reply::new(
        553,
        Some("5.0.0"),
        format!("{}... Unbalanced '{what}'", shorten(addr, MAXSHORTSTR)),
    )
}

/// `553 5.1.3 <addr>... Invalid route address`.
pub fn invalid_route(addr: &str) -> Reply {
    Reply::new(
        553,
        Some("5.1.3"),
        format!("{}... Invalid route address", shorten(addr, MAXSHORTSTR)),
    )
}

/// `553 5.1.3 <addr>... Hostname required`.
pub fn hostname_required(addr: &str) -> Reply {
    Reply::new(
        553,
        Some("5.1.3"),
        format!("{}... Hostname required", shorten(addr, MAXSHORTSTR)),
    )
}

/// `553 5.1.3 <addr>... User address required` (`RCPT TO:<>`; unrecorded).
pub fn user_address_required(addr: &str) -> Reply {
    Reply::new(
        553,
        Some("5.1.3"),
        format!("{}... User address required", shorten(addr, MAXSHORTSTR)),
    )
}

/// `553 5.1.0 <addr>... prescan: token too long`.
pub fn token_too_long(addr: &str) -> Reply {
    Reply::new(
        553,
        Some("5.1.0"),
        format!("{}... prescan: token too long", shorten(addr, MAXSHORTSTR)),
    )
}

/// `553 5.1.0 <addr>... Address "addr" too long (255 bytes max)`: a MAIL/RCPT path over
/// [`crate::smtp::command::MAX_PATH`] bytes; `addr` is its first 255 bytes, shortened before
/// the `...` (sendmail 8.17.1.9, differential scenarios 82 and 82b: `<` + 239 `r` +
/// `@x.example.test>` is refused, one byte less is accepted).
pub fn path_too_long(addr: &str) -> Reply {
    Reply::new(
        553,
        Some("5.1.0"),
        format!(
            "{}... Address \"{addr}\" too long ({} bytes max)",
            shorten(addr, MAXSHORTSTR),
            crate::smtp::command::MAX_PATH
        ),
    )
}

/// `553 5.1.0 <addr>... Address too long` (unrecorded).
pub fn address_too_long(addr: &str) -> Reply {
    Reply::new(
        553,
        Some("5.1.0"),
        format!("{}... Address too long", shorten(addr, MAXSHORTSTR)),
    )
}

/// `555 5.5.4 <NAME> parameter unrecognized`.
pub fn param_unrecognized(name: &str) -> Reply {
    Reply::new(555, Some("5.5.4"), format!("{name} parameter unrecognized"))
}

/// `501 5.5.2 <NAME> requires a value` (`BY=`, `AUTH=` keep their `=`).
pub fn param_requires_value(name: &str) -> Reply {
    Reply::new(501, Some("5.5.2"), format!("{name} requires a value"))
}

/// `501 5.5.0 Duplicate <NAME> parameter`.
pub fn param_duplicate(name: &str) -> Reply {
    Reply::new(501, Some("5.5.0"), format!("Duplicate {name} parameter"))
}

/// `501 5.5.4 Unknown BODY type <value>`.
pub fn bad_body(value: &str) -> Reply {
    Reply::new(501, Some("5.5.4"), format!("Unknown BODY type {value}"))
}

/// `501 5.5.2 Bad argument "<value>" to RET`.
pub fn bad_ret(value: &str) -> Reply {
    Reply::new(
        501,
        Some("5.5.2"),
        format!("Bad argument \"{value}\" to RET"),
    )
}

/// `501 5.5.4 Bad argument "<word>"  to NOTIFY` (sendmail's two spaces).
pub fn bad_notify(word: &str) -> Reply {
    Reply::new(
        501,
        Some("5.5.4"),
        format!("Bad argument \"{word}\"  to NOTIFY"),
    )
}

/// `501 5.5.4 Syntax error in <NAME> parameter value` (ENVID, ORCPT, AUTH).
pub fn param_syntax(name: &str) -> Reply {
    Reply::new(
        501,
        Some("5.5.4"),
        format!("Syntax error in {name} parameter value"),
    )
}

/// `504 5.7.0 Sorry, <NAME> not supported, we do not allow DSN`.
pub fn dsn_not_supported(name: &str) -> Reply {
    Reply::new(
        504,
        Some("5.7.0"),
        format!("Sorry, {name} not supported, we do not allow DSN"),
    )
}

/// `552 5.2.3 Message size exceeds maximum value` (SIZE= overflows).
pub fn size_too_big() -> Reply {
    Reply::new(552, Some("5.2.3"), "Message size exceeds maximum value")
}

/// `552 5.2.3 Message size invalid` (negative SIZE=).
pub fn size_invalid() -> Reply {
    Reply::new(552, Some("5.2.3"), "Message size invalid")
}

/// `501 5.5.2 BY=<value> out of range`.
pub fn by_out_of_range(value: &str) -> Reply {
    Reply::new(501, Some("5.5.2"), format!("BY={value} out of range"))
}

/// `501 5.5.2 BY= missing ';'`.
pub fn by_missing_semicolon() -> Reply {
    Reply::new(501, Some("5.5.2"), "BY= missing ';'")
}

/// `501 5.5.4 mode R requires BY time > 0`.
pub fn by_mode_r_needs_time() -> Reply {
    Reply::new(501, Some("5.5.4"), "mode R requires BY time > 0")
}

/// `555 5.5.2 time 30 less than 60`: `BY=30;R` under `DeliverByMin=60`.
pub fn by_time_below_min(seconds: i64, min: i64) -> Reply {
    Reply::new(
        555,
        Some("5.5.2"),
        format!("time {seconds} less than {min}"),
    )
}

/// `501 5.5.2 illegal by-mode 'x'` / `illegal by-trace 'x'`.
pub fn by_illegal(what: &str, c: char) -> Reply {
    let c = if c.is_ascii_graphic() { c } else { '?' };
    Reply::new(501, Some("5.5.2"), format!("illegal by-{what} '{c}'"))
}

/// `501 5.5.4 Too many parameters`.
pub fn too_many_params() -> Reply {
    Reply::new(501, Some("5.5.4"), "Too many parameters")
}

/// `552 5.2.3 Message size exceeds fixed maximum message size (<max>)` (MAIL SIZE=).
pub fn size_exceeds(max: u64) -> Reply {
    Reply::new(
        552,
        Some("5.2.3"),
        format!("Message size exceeds fixed maximum message size ({max})"),
    )
}

/// `354 End data with <CR><LF>.<CR><LF>`.
pub fn start_data() -> Reply {
    Reply::new(354, None, "End data with <CR><LF>.<CR><LF>")
}

/// `250 2.0.0 <qid> Message accepted for delivery`.
pub fn accepted(qid: &str) -> Reply {
    Reply::new(
        250,
        Some("2.0.0"),
        format!("{qid} Message accepted for delivery"),
    )
}

/// `421 4.5.0 Bare linefeed (LF) not allowed` (DATA; the connection is closed).
pub fn bare_lf() -> Reply {
    Reply::new(421, Some("4.5.0"), "Bare linefeed (LF) not allowed")
}

/// `421 4.5.0 Bare carriage return (CR) not allowed` (DATA; the connection is closed).
pub fn bare_cr() -> Reply {
    Reply::new(421, Some("4.5.0"), "Bare carriage return (CR) not allowed")
}

/// `552 5.2.3 Message exceeds maximum fixed size (<max>)` (end of DATA; recorded from
/// sendmail 8.17.1.9 `-bs -O MaxMessageSize=1000` for this project, 2026-12-02).
pub fn message_too_big(max: u64) -> Reply {
    Reply::new(
        552,
        Some("5.2.3"),
        format!("Message exceeds maximum fixed size ({max})"),
    )
}

/// `552 5.6.0 Headers too large (<max> max)` (the header block is over `MaxHeadersLength`;
/// recorded from sendmail 8.17.1.9 for this project, 2026-12-02).
pub fn headers_too_large(max: u64) -> Reply {
    Reply::new(552, Some("5.6.0"), format!("Headers too large ({max} max)"))
}

// ---------------------------------------------------------------------------------------
// CHUNKING (RFC 3030) and SMTPUTF8 (RFC 6531): not in sendmail 8.17 (the oracle answers
// BDAT as an unknown command and SMTPUTF8 as an unknown parameter), so these are ours.

/// `250 2.0.0 <n> octets received` (a BDAT chunk that is not the last).
pub fn chunk_received(octets: u64) -> Reply {
    Reply::new(250, Some("2.0.0"), format!("{octets} octets received"))
}

/// `501 5.5.4 Syntax: BDAT <octets> [LAST]`.
pub fn bdat_syntax() -> Reply {
    Reply::new(501, Some("5.5.4"), "Syntax: BDAT <octets> [LAST]")
}

/// `503 5.5.1 DATA not allowed after BDAT` (RFC 3030 §2: one transaction, one of the two).
pub fn data_after_bdat() -> Reply {
    Reply::new(503, Some("5.5.1"), "DATA not allowed after BDAT")
}

/// `501 5.5.4 SMTPUTF8 parameter does not take a value` (RFC 6531 §3.4).
pub fn smtputf8_takes_no_value() -> Reply {
    Reply::new(
        501,
        Some("5.5.4"),
        "SMTPUTF8 parameter does not take a value",
    )
}

/// `553 5.6.7 <addr>... Non-ASCII address requires SMTPUTF8` (RFC 6531 §3.5: 553, and the
/// enhanced code RFC 5248 registers as "non-ASCII addresses not permitted").
pub fn non_ascii_address(addr: &str) -> Reply {
    Reply::new(
        553,
        Some("5.6.7"),
        format!("{addr}... Non-ASCII address requires SMTPUTF8"),
    )
}

/// `451 4.3.0 Temporary system failure. Please try again later.` (the queue could not
/// store the message; unrecorded).
pub fn local_error() -> Reply {
    Reply::new(
        451,
        Some("4.3.0"),
        "Temporary system failure. Please try again later.",
    )
}

/// `452 4.4.5 Insufficient disk space; try again later` (MAIL, when the queue's filesystem
/// has fewer than `MinFreeBlocks` free; sendmail 8.17 srvrsmtp.c).
pub fn insufficient_disk_space() -> Reply {
    Reply::new(
        452,
        Some("4.4.5"),
        "Insufficient disk space; try again later",
    )
}

/// `452 4.3.1 Insufficient system storage` (end of DATA, when the commit failed because the
/// queue's disk is full: nothing was queued, the client keeps the message).
pub fn insufficient_storage() -> Reply {
    Reply::new(452, Some("4.3.1"), "Insufficient system storage")
}

/// The relay check's refusal (sendmail's check_rcpt: `550 5.7.1 <a@b>... Relaying denied`).
pub fn relaying_denied(addr: &str) -> Reply {
    Reply::new(550, Some("5.7.1"), format!("{addr}... Relaying denied"))
}

/// sendmail's refusal of an unqualified sender (`553 5.5.4 <sender>... Domain name required
/// for sender address sender`).
pub fn domain_required(shown: &str, bare: &str) -> Reply {
    Reply::new(
        553,
        Some("5.5.4"),
        format!("{shown}... Domain name required for sender address {bare}"),
    )
}

/// A local recipient that is neither an alias nor a user (`550 5.1.1 <a@b>... User unknown`).
pub fn user_unknown(shown: &str) -> Reply {
    Reply::new(550, Some("5.1.1"), format!("{shown}... User unknown"))
}

/// sendmail's check_mail when the sender's domain names no host (`553 5.1.8 <a@[300.1.2.3]>...
/// Domain of sender address a@[300.1.2.3] does not exist`; `sender` is `$f`).
pub fn sender_domain_unknown(shown: &str, sender: &str) -> Reply {
    Reply::new(
        553,
        Some("5.1.8"),
        format!("{shown}... Domain of sender address {sender} does not exist"),
    )
}

/// sendmail's refusal of a program, file or include list named by an SMTP client
/// (`550 5.7.1 <"|/bin/true">... Cannot mail directly to programs`; `what` is `programs`,
/// `files` or `:include:s`).
pub fn cannot_mail_directly(shown: &str, what: &str) -> Reply {
    Reply::new(
        550,
        Some("5.7.1"),
        format!("{shown}... Cannot mail directly to {what}"),
    )
}

// ---------------------------------------------------------------------------------------
// Mail filters (milter): sendmail 8.17 srvrsmtp.c MILTER_REPLY, smtp_data().

/// `550 5.7.1 Command rejected` (a filter rejected MAIL, RCPT or DATA).
pub fn milter_rejected() -> Reply {
    Reply::new(550, Some("5.7.1"), "Command rejected")
}

/// `554 5.7.1 Command rejected` (a filter rejected the message at its end).
pub fn milter_data_rejected() -> Reply {
    Reply::new(554, Some("5.7.1"), "Command rejected")
}

/// `451 4.3.2 Please try again later` (a filter tempfailed; sendmail's `MSG_TEMPFAIL`).
pub fn milter_tempfail() -> Reply {
    Reply::new(451, Some("4.3.2"), "Please try again later")
}

/// `421 4.7.0 <host> closing connection` (a filter shut the session down).
pub fn milter_shutdown(host: &str) -> Reply {
    Reply::new(421, Some("4.7.0"), format!("{host} closing connection"))
}

/// A filter's own reply text (`SMFIR_REPLYCODE`: `550 5.7.1 text`, multi-line with `-`), as a
/// reply; `None` when it does not start with a 4xx/5xx code.
pub fn from_filter(text: &str) -> Option<Reply> {
    let mut lines = Vec::new();
    let mut code = None;
    let mut enhanced = None;
    for raw in text.split("\r\n").filter(|l| !l.is_empty()) {
        let c: u16 = raw.get(..3)?.parse().ok()?;
        if !(400..600).contains(&c) || code.is_some_and(|k| k != c) {
            return None;
        }
        code = Some(c);
        let rest = raw.get(4..).unwrap_or("");
        let (enh, msg) = match rest.split_once(' ') {
            Some((e, m)) if is_enhanced(e) => (Some(e.to_string()), m),
            _ if is_enhanced(rest) => (Some(rest.to_string()), ""),
            _ => (None, rest),
        };
        if enhanced.is_none() {
            enhanced = enh;
        }
        lines.push(msg.to_string());
    }
    Some(Reply {
        code: code?,
        enhanced,
        lines,
    })
}

fn is_enhanced(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `554 <host> ESMTP not accepting messages`: the greeting of a session the filters refused
/// at connect (sendmail's greetcode 554 with its default greetmsg).
pub fn not_accepting(host: &str) -> Reply {
    Reply::new(554, None, format!("{host} ESMTP not accepting messages"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz input (`session` target): `ar<CR>b` after `DATAe` was echoed with its bare CR,
    /// a reply line broken in two on the wire.
    #[test]
    fn a_bare_cr_or_lf_in_echoed_text_stays_inside_its_line() {
        let r = unrecognized("ar\rb");
        assert_eq!(
            r.to_bytes(),
            b"500 5.5.1 Command unrecognized: \"ar b\"\r\n".to_vec()
        );
        let r = Reply::multi(250, None, vec!["one\nx".into(), "two\r".into()]);
        assert_eq!(r.to_bytes(), b"250-one x\r\n250 two \r\n".to_vec());
    }

    fn wire(r: &Reply) -> String {
        String::from_utf8(r.to_bytes()).unwrap()
    }

    #[test]
    fn single_line_with_enhanced_code() {
        assert_eq!(wire(&noop()), "250 2.0.0 OK\r\n");
        assert_eq!(wire(&reset()), "250 2.0.0 Reset state\r\n");
    }

    #[test]
    fn continuation_lines_repeat_the_enhanced_code() {
        let r = help(&[
            "HELP [ <topic> ]".into(),
            "\tThe HELP command gives help info.".into(),
        ]);
        assert_eq!(
            wire(&r),
            "214-2.0.0 HELP [ <topic> ]\r\n214-2.0.0 \tThe HELP command gives help info.\r\n\
             214 2.0.0 End of HELP info\r\n"
        );
    }

    #[test]
    fn greeting_inserts_esmtp_after_first_word() {
        let r = greeting(
            "oracle.example.test Sendmail 8.17.1.9/8.17.1.9; Tue, 24 Nov 2026 06:53:20 GMT",
        );
        assert_eq!(
            wire(&r),
            "220 oracle.example.test ESMTP Sendmail 8.17.1.9/8.17.1.9; Tue, 24 Nov 2026 06:53:20 GMT\r\n"
        );
    }

    #[test]
    fn greeting_newline_makes_continuation_lines() {
        let r = greeting("host.example first\n second line");
        assert_eq!(
            wire(&r),
            "220-host.example ESMTP first\r\n220 second line\r\n"
        );
        assert_eq!(wire(&greeting("lonely")), "220 lonely ESMTP\r\n");
    }

    #[test]
    fn ehlo_lists_keywords_in_order() {
        let r = ehlo(
            "oracle.example.test",
            "localhost [IPv6:0:0:0:0:0:0:0:1]",
            &["ENHANCEDSTATUSCODES".into(), "HELP".into()],
        );
        assert_eq!(
            wire(&r),
            "250-oracle.example.test Hello localhost [IPv6:0:0:0:0:0:0:0:1], pleased to meet you\r\n\
             250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n"
        );
    }

    #[test]
    fn recorded_wordings() {
        let cases: Vec<(Reply, &str)> = vec![
            (
                closing("oracle.example.test"),
                "221 2.0.0 oracle.example.test closing connection",
            ),
            (
                unrecognized("FOOBAR"),
                "500 5.5.1 Command unrecognized: \"FOOBAR\"",
            ),
            (
                not_implemented("TURN"),
                "502 5.5.1 Command not implemented: \"TURN\"",
            ),
            (
                helo_requires_domain("HELO"),
                "501 5.0.0 HELO requires domain address",
            ),
            (invalid_domain(), "501 5.0.0 Invalid domain name"),
            (need_mail_before_rcpt(), "503 5.0.0 Need MAIL before RCPT"),
            (need_mail(), "503 5.0.0 Need MAIL command"),
            (need_rcpt(), "503 5.0.0 Need RCPT (recipient)"),
            (
                sender_already_specified(),
                "503 5.5.0 Sender already specified",
            ),
            (sender_ok("<a@b>"), "250 2.1.0 <a@b>... Sender ok"),
            (recipient_ok("<root>"), "250 2.1.5 <root>... Recipient ok"),
            (
                syntax_scanning("FROM"),
                "501 5.5.2 Syntax error in parameters scanning \"FROM\"",
            ),
            (
                unbalanced("<root", '<'),
                "553 5.0.0 <root... Unbalanced '<'",
            ),
            (
                invalid_route("<a@b@c>"),
                "553 5.1.3 <a@b@c>... Invalid route address",
            ),
            (
                hostname_required("root@"),
                "553 5.1.3 root@... Hostname required",
            ),
            (
                param_unrecognized("FOO"),
                "555 5.5.4 FOO parameter unrecognized",
            ),
            (start_data(), "354 End data with <CR><LF>.<CR><LF>"),
            (
                accepted("6AO6rK6i007134"),
                "250 2.0.0 6AO6rK6i007134 Message accepted for delivery",
            ),
            (bare_lf(), "421 4.5.0 Bare linefeed (LF) not allowed"),
            (bare_cr(), "421 4.5.0 Bare carriage return (CR) not allowed"),
            (
                not_allowed(),
                "502 5.7.0 Sorry, we do not allow this operation",
            ),
            (
                tls_not_available(),
                "454 4.3.3 TLS not available after start",
            ),
            (
                help_unknown("nosuchtopi"),
                "504 5.3.0 HELP topic \"nosuchtopi\" unknown",
            ),
            (verbose(), "250 2.0.0 Verbose mode"),
            (
                insufficient_disk_space(),
                "452 4.4.5 Insufficient disk space; try again later",
            ),
            (
                insufficient_storage(),
                "452 4.3.1 Insufficient system storage",
            ),
            (argument_required(), "501 5.5.2 Argument required"),
            (protocol_error(), "554 5.5.0 SMTP protocol error"),
            (command_rejected(), "550 5.0.0 Command rejected"),
            (
                lost_input("oracle.example.test", "localhost [127.0.0.1]"),
                "421 4.4.1 oracle.example.test Lost input channel from localhost [127.0.0.1]",
            ),
            (
                command_too_long("oracle.example.test", "localhost [IPv6:0:0:0:0:0:0:0:1]"),
                "421 4.7.0 oracle.example.test Command too long, possible attack localhost [IPv6:0:0:0:0:0:0:0:1]",
            ),
        ];
        for (reply, want) in cases {
            assert_eq!(wire(&reply), format!("{want}\r\n"));
            assert_eq!(reply.to_string(), want);
        }
    }

    #[test]
    fn shorten_keeps_head_and_tail() {
        let long = format!("<{}@remote.example.test>", "x".repeat(1000));
        let s = shorten(&long, MAXSHORTSTR);
        assert_eq!(s.len(), 203);
        assert!(s.starts_with("<xxxx"));
        assert!(s.ends_with("x@remote.example.test>"));
        assert_eq!(&s[100..103], "...");
        assert_eq!(shorten("short", MAXSHORTSTR), "short");
    }
}
