//! Server text on its way to a person: an exception message, a log line, a terminal. A server
//! chooses every character of a fault message or an error record, so characters that act on a
//! terminal instead of showing (escape sequences, BEL, carriage return, bidirectional overrides,
//! zero-width characters) are written out as `\u{…}` escapes. Newlines and tabs stay.

use std::borrow::Cow;

/// Whether `c` would act on a terminal or reorder text rather than show: Unicode's control
/// (Cc, but for tab and newline), format (Cf) and line/paragraph separator (Zl, Zp) characters.
fn acts(c: char) -> bool {
    if c == '\n' || c == '\t' {
        return false;
    }
    c.is_control()
        || matches!(c as u32,
            0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2 | 0x180E
            | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
            | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

/// `text` with every character that acts on a terminal written as a `\u{…}` escape.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if acts(c) {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_acts_on_a_terminal_and_keeps_the_rest() {
        assert_eq!(printable("plain text\nline two\ttab"), "plain text\nline two\ttab");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(printable("red\u{1b}[31m"), "red\\u{001b}[31m");
        assert_eq!(printable("bell\u{7}"), "bell\\u{0007}");
        assert_eq!(printable("a\rb"), "a\\u{000d}b");
        assert_eq!(printable("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(printable("zero\u{200b}width"), "zero\\u{200b}width");
        assert_eq!(printable("日本 ü"), "日本 ü");
    }
}
