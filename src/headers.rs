//! RFC 5322 header blocks: the one place that says where a message's header block ends and
//! what its fields are.
//!
//! In: message bytes as the queue keeps them (header fields, a blank line, the body). Out:
//! the header block and the rest ([`split`]), the fields with their continuation lines
//! ([`fields`]), a field's value ([`value`], [`find`]), and [`scan`] for receipt (where the
//! block ends and its `Message-Id:`).
//!
//! One rule for every caller: a line ends at LF; the block ends at the first empty line, which
//! is `\n` or `\r\n`; a line starting with a space or a tab continues the field before it
//! (RFC 5322 §2.2.3). A message without an empty line is all header block; one that starts
//! with an empty line has none.

/// The header block (each field's lines with their newlines, no blank line) and the rest,
/// which starts with the blank line when there is one.
pub fn split(message: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line == b"\n" || line == b"\r\n" {
            return message.split_at(pos);
        }
        pos += line.len();
    }
    (message, &[])
}

/// Where the header block ends, after its blank line (the body's first byte; the message's
/// length when it has no blank line), and the value of its `Message-Id:` field, if any.
pub fn scan(message: &[u8]) -> (usize, Option<String>) {
    let (head, rest) = split(message);
    let blank = rest
        .iter()
        .position(|&b| b == b'\n')
        .map_or(rest.len(), |i| i + 1);
    (head.len() + blank, find(head, "message-id"))
}

/// The fields of a header block, each with its continuation lines and newlines.
pub fn fields(head: &[u8]) -> Vec<&[u8]> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    for line in head.split_inclusive(|&b| b == b'\n') {
        match (line.first(), spans.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => last.1 = pos + line.len(),
            _ => spans.push((pos, pos + line.len())),
        }
        pos += line.len();
    }
    spans.into_iter().map(|(a, b)| &head[a..b]).collect()
}

/// The value of `field` (trimmed) when its name is `name` (any case).
pub fn value(field: &[u8], name: &str) -> Option<String> {
    let colon = field.iter().position(|&b| b == b':')?;
    let field_name = &field[..colon];
    if field_name.is_ascii() {
        // The common case without the lossy copy of the whole field: the same test on
        // bytes (`char::is_whitespace` of an ASCII byte, as `str::trim_end`).
        let end = field_name
            .iter()
            .rposition(|&b| !char::from(b).is_whitespace())
            .map_or(0, |i| i + 1);
        let n = &field_name[..end];
        return n.eq_ignore_ascii_case(name.as_bytes()).then(|| {
            String::from_utf8_lossy(&field[colon + 1..])
                .trim()
                .to_string()
        });
    }
    let text = String::from_utf8_lossy(field);
    let (n, v) = text.split_once(':')?;
    n.trim_end()
        .eq_ignore_ascii_case(name)
        .then(|| v.trim().to_string())
}

/// The value of the first field `name` (any case) of a header block.
pub fn find(head: &[u8], name: &str) -> Option<String> {
    fields(head).into_iter().find_map(|f| value(f, name))
}

/// Whether a header block has a field `name` (any case).
pub fn has(head: &[u8], name: &str) -> bool {
    fields(head).into_iter().any(|f| value(f, name).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_value_is_found_by_its_name_whatever_its_bytes() {
        assert_eq!(
            value(b"Precedence: bulk\r\n", "precedence").as_deref(),
            Some("bulk")
        );
        // whitespace before the colon, VT included (str::trim_end's), any case
        assert_eq!(
            value(b"PRECEDENCE \x0b\t: list \n", "precedence").as_deref(),
            Some("list")
        );
        assert_eq!(value(b"Precedenc: bulk\n", "precedence"), None);
        assert_eq!(value(b"no colon here\n", "no colon here"), None);
        // 8-bit bytes in the value become U+FFFD; in the name, the whole field is read so
        assert_eq!(
            value(b"Subject: a\xffb\n", "subject").as_deref(),
            Some("a\u{fffd}b")
        );
        assert_eq!(value(b"Subj\xe9ct: x\n", "subject"), None);
        assert_eq!(value(b"X\xc2\xa0: y\n", "x").as_deref(), Some("y"));
    }

    #[test]
    fn header_scan_finds_message_id_and_the_end_of_the_headers() {
        let body = b"Subject: x\nMessage-ID: <a@b>\n\nMessage-Id: <not@header>\n";
        let (end, id) = scan(body);
        assert_eq!(&body[..end], b"Subject: x\nMessage-ID: <a@b>\n\n");
        assert_eq!(id.as_deref(), Some("<a@b>"));
        assert!(has(b"Date: now\n", "date"));
        assert!(!has(b"X-Date: now\n", "date"));
    }

    #[test]
    fn header_fields_keep_their_continuations_and_the_block_splits_before_the_blank_line() {
        let f = fields(b"A: 1\n  2\nB: 3\n");
        assert_eq!(f, [&b"A: 1\n  2\n"[..], b"B: 3\n"]);
        assert_eq!(split(b"A: 1\n\nbody\n"), (&b"A: 1\n"[..], &b"\nbody\n"[..]));
    }

    #[test]
    fn the_block_ends_at_the_first_empty_line_of_either_kind() {
        assert_eq!(split(b"A: 1\n\nbody\n"), (&b"A: 1\n"[..], &b"\nbody\n"[..]));
        assert_eq!(
            split(b"A: 1\r\n\r\nbody\n"),
            (&b"A: 1\r\n"[..], &b"\r\nbody\n"[..])
        );
        assert_eq!(split(b"\nbody\n"), (&b""[..], &b"\nbody\n"[..]));
        assert_eq!(split(b"A: 1\nB: 2\n"), (&b"A: 1\nB: 2\n"[..], &b""[..]));
    }

    #[test]
    fn scan_finds_the_body_and_the_message_id_of_the_block_only() {
        let m = b"Subject: x\nMessage-ID: <a@b>\n\nMessage-Id: <not@header>\n";
        assert_eq!(scan(m), (30, Some("<a@b>".to_string())));
        assert_eq!(scan(b"A: 1\r\n\r\nbody"), (8, None));
        assert_eq!(scan(b"A: 1\n"), (5, None));
    }

    #[test]
    fn fields_keep_their_continuations() {
        assert_eq!(
            fields(b"A: 1\n  2\nB: 3\n\tx\n"),
            [&b"A: 1\n  2\n"[..], &b"B: 3\n\tx\n"[..]]
        );
    }

    #[test]
    fn values_are_found_by_name_in_any_case_and_not_by_prefix() {
        assert!(has(b"Date: now\n", "date"));
        assert!(!has(b"X-Date: now\n", "date"));
        assert_eq!(find(b"To: a\nFROM: b\n", "from").as_deref(), Some("b"));
    }
}
