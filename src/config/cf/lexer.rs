//! Physical lines → logical lines: continuation, comments, blank lines.
//!
//! In: the bytes of a sendmail.cf (any [`BufRead`]). Out: [`LogicalLine`]s, each with the
//! 1-based number of its first physical line. Rules (op §5, sendmail's `fgetfolded`):
//! * a physical line that begins with a space or a tab continues the logical line before it;
//!   the pieces are joined with `\n` and the continuation keeps its leading white space (an `H`
//!   line keeps its folding that way);
//! * a logical line that begins with `#` is a comment, an empty line separates logical lines;
//!   both are dropped (a continuation of a comment is part of the comment);
//! * `\r\n` line ends are accepted, bytes that are not UTF-8 are replaced (U+FFFD) rather
//!   than refused, so one stray byte in a comment cannot stop the daemon.

use std::io::BufRead;

/// One logical line of a sendmail.cf, comments and blank lines removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine {
    /// 1-based number of the first physical line.
    pub line: u32,
    /// The text, continuation lines joined with `\n`, no final newline.
    pub text: String,
}

/// Splits `r` into logical lines. Fails only if reading fails.
pub fn logical_lines(mut r: impl BufRead) -> std::io::Result<Vec<LogicalLine>> {
    let mut out: Vec<LogicalLine> = Vec::new();
    let mut current: Option<LogicalLine> = None;
    let mut buf = Vec::new();
    let mut number: u32 = 0;
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        number = number.saturating_add(1);
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let text = String::from_utf8_lossy(&buf);
        let continues = text.starts_with([' ', '\t']);
        match (&mut current, continues) {
            (Some(cur), true) => {
                cur.text.push('\n');
                cur.text.push_str(&text);
            }
            (None, true) if text.trim().is_empty() => {}
            _ => {
                if let Some(done) = current.take() {
                    push_unless_comment(&mut out, done);
                }
                if !text.is_empty() {
                    current = Some(LogicalLine {
                        line: number,
                        text: text.into_owned(),
                    });
                }
            }
        }
    }
    if let Some(done) = current {
        push_unless_comment(&mut out, done);
    }
    Ok(out)
}

fn push_unless_comment(out: &mut Vec<LogicalLine>, line: LogicalLine) {
    if !line.text.starts_with('#') {
        out.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<(u32, String)> {
        logical_lines(text.as_bytes())
            .unwrap()
            .into_iter()
            .map(|l| (l.line, l.text))
            .collect()
    }

    #[test]
    fn comments_and_blank_lines_are_dropped() {
        assert_eq!(
            lines("# comment\n\nDjhost\n#x\n"),
            vec![(3, "Djhost".to_string())]
        );
    }

    #[test]
    fn a_line_starting_with_space_or_tab_continues_the_previous_one() {
        assert_eq!(
            lines("Mlocal, P=/bin/x,\n\tF=lsD,\n  A=x $u\nDxy\n"),
            vec![
                (1, "Mlocal, P=/bin/x,\n\tF=lsD,\n  A=x $u".to_string()),
                (4, "Dxy".to_string())
            ]
        );
    }

    #[test]
    fn a_continuation_of_a_comment_is_a_comment() {
        assert_eq!(lines("#####\n \nDxy\n"), vec![(3, "Dxy".to_string())]);
    }

    #[test]
    fn crlf_line_ends_and_missing_final_newline_are_accepted() {
        assert_eq!(
            lines("Dab\r\nDcd"),
            vec![(1, "Dab".to_string()), (2, "Dcd".to_string())]
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        let got = logical_lines(&b"Dx\xffy\n"[..]).unwrap();
        assert_eq!(got[0].text, "Dx\u{fffd}y");
    }

    #[test]
    fn leading_whitespace_only_lines_at_the_start_are_ignored() {
        assert_eq!(lines("  \nDxy\n"), vec![(2, "Dxy".to_string())]);
    }
}
