//! CLIXML string escaping (MS-PSRP 2.2.5.1.1, PowerShell `EncodeString`) and XML text escaping.
//!
//! PowerShell encodes strings before handing them to the XML writer: every UTF-16 code unit that XML
//! cannot carry safely (C0 and C1 controls, every surrogate) becomes `_xHHHH_`, and an underscore that
//! could be mistaken for the start of such a sequence becomes `_x005F_`. Decoding follows
//! `XmlConvert.DecodeName`. XML escaping of `&`, `<`, `>` (and `"` in attributes) is a separate layer
//! that the writer applies on top; the public functions here only do the `_x` layer.

use std::borrow::Cow;

/// How [`encode_into`] must treat XML metacharacters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `_x` encoding only: the result is plain text (for [`encode_string`]).
    Plain,
    /// `_x` encoding plus XML escaping for element content.
    Text,
    /// `_x` encoding plus XML escaping for a double-quoted attribute value.
    Attr,
}

/// Marks the bytes at which the encoder has to stop copying and look closer.
///
/// Every marked byte is ASCII or the first byte of a UTF-8 sequence, so the runs between marked bytes
/// always end on character boundaries.
const fn special_bytes(mode: Mode) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[0x7F] = true;
    table[b'_' as usize] = true;
    // U+0080..=U+00BF start with 0xC2; only U+0080..=U+009F need encoding, checked when met.
    table[0xC2] = true;
    // Four-byte sequences are the characters that UTF-16 stores as surrogate pairs.
    let mut lead = 0xF0;
    while lead < 0x100 {
        table[lead] = true;
        lead += 1;
    }
    if !matches!(mode, Mode::Plain) {
        table[b'&' as usize] = true;
        table[b'<' as usize] = true;
        table[b'>' as usize] = true;
    }
    if matches!(mode, Mode::Attr) {
        table[b'"' as usize] = true;
    }
    table
}

static PLAIN: [bool; 256] = special_bytes(Mode::Plain);
static TEXT: [bool; 256] = special_bytes(Mode::Text);
static ATTR: [bool; 256] = special_bytes(Mode::Attr);

fn table(mode: Mode) -> &'static [bool; 256] {
    match mode {
        Mode::Plain => &PLAIN,
        Mode::Text => &TEXT,
        Mode::Attr => &ATTR,
    }
}

/// Appends `_xHHHH_` with four uppercase hex digits, as PowerShell writes it.
fn push_code_unit(out: &mut String, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push_str("_x");
    for shift in [12u16, 8, 4, 0] {
        out.push(char::from(HEX[usize::from((unit >> shift) & 0xF)]));
    }
    out.push('_');
}

/// Encodes `s` onto `out`; `mode` says whether XML metacharacters are escaped as well.
fn encode_into(out: &mut String, s: &str, mode: Mode) {
    let special = table(mode);
    let bytes = s.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !special[usize::from(b)] {
            i += 1;
            continue;
        }
        out.push_str(&s[copied..i]);
        let mut width = 1;
        match b {
            b'_' => {
                if matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
                    push_code_unit(out, u16::from(b'_'));
                } else {
                    out.push('_');
                }
            }
            b'&' => out.push_str("&amp;"),
            b'<' => out.push_str("&lt;"),
            b'>' => out.push_str("&gt;"),
            b'"' => out.push_str("&quot;"),
            0xC2 => {
                width = 2;
                match bytes.get(i + 1) {
                    Some(&second @ 0x80..=0x9F) => push_code_unit(out, u16::from(second)),
                    _ => out.push_str(&s[i..i + 2]),
                }
            }
            0xF0..=0xFF => {
                // A four-byte UTF-8 sequence: write its UTF-16 surrogate pair as two escapes.
                let c = s[i..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
                width = c.len_utf8();
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    push_code_unit(out, *unit);
                }
            }
            // C0 controls and DEL.
            _ => push_code_unit(out, u16::from(b)),
        }
        i += width;
        copied = i;
    }
    out.push_str(&s[copied..]);
}

/// Encodes a string the way PowerShell's serializer does before writing it (MS-PSRP 2.2.5.1.1).
///
/// Each UTF-16 code unit in U+0000–U+001F, U+007F–U+009F or U+D800–U+DFFF (so both halves of every
/// surrogate pair) becomes `_xHHHH_` with uppercase hex digits, and `_` followed by `x` or `X` becomes
/// `_x005F_`. Everything else, including `&`, `<` and `>`, is returned unchanged: XML escaping is a
/// separate step that the writer performs. Borrows when nothing needs encoding.
pub fn encode_string(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| PLAIN[usize::from(b)]) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    encode_into(&mut out, s, Mode::Plain);
    if out.len() == s.len() {
        // Only harmless underscores and U+00A0..U+00BF were met: nothing changed.
        return Cow::Borrowed(s);
    }
    Cow::Owned(out)
}

/// Appends `s` as element content: `_x` encoding, then XML escaping of `&`, `<` and `>`.
pub(super) fn write_text(out: &mut String, s: &str) {
    encode_into(out, s, Mode::Text);
}

/// Appends `s` as a double-quoted attribute value: `_x` encoding, then XML escaping incl. `"`.
pub(super) fn write_attr(out: &mut String, s: &str) {
    encode_into(out, s, Mode::Attr);
}

/// Appends `s` with XML escaping only, for element content that PowerShell does not `_x` encode
/// (date, duration, decimal and version text).
pub(super) fn write_xml_only(out: &mut String, s: &str) {
    let mut copied = 0;
    for (i, b) in s.bytes().enumerate() {
        let replacement = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            _ => continue,
        };
        out.push_str(&s[copied..i]);
        out.push_str(replacement);
        copied = i + 1;
    }
    out.push_str(&s[copied..]);
}

fn hex_value(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' => Some(u32::from(b - b'0')),
        b'a'..=b'f' => Some(u32::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u32::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Reads `digits` hex digits at `bytes[at..]`.
fn hex_run(bytes: &[u8], at: usize, digits: usize) -> Option<u32> {
    let run = bytes.get(at..at + digits)?;
    run.iter().try_fold(0u32, |acc, &b| Some((acc << 4) | hex_value(b)?))
}

/// Collects decoded UTF-16 code units into a `String`, pairing surrogates.
struct Utf16Sink {
    out: String,
    /// A high surrogate waiting for its low half.
    high: Option<u16>,
}

impl Utf16Sink {
    fn flush_high(&mut self) {
        if self.high.take().is_some() {
            self.out.push(char::REPLACEMENT_CHARACTER);
        }
    }

    fn push_unit(&mut self, unit: u16) {
        match unit {
            0xDC00..=0xDFFF => match self.high.take() {
                Some(high) => {
                    let c = 0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(unit) - 0xDC00);
                    self.out.push(char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                None => self.out.push(char::REPLACEMENT_CHARACTER),
            },
            0xD800..=0xDBFF => {
                self.flush_high();
                self.high = Some(unit);
            }
            _ => {
                self.flush_high();
                self.out.push(char::from_u32(u32::from(unit)).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
        }
    }

    fn push_str(&mut self, s: &str) {
        if !s.is_empty() {
            self.flush_high();
            self.out.push_str(s);
        }
    }
}

/// Decodes `_xHHHH_` and `_xHHHHHHHH_` sequences with `XmlConvert.DecodeName` semantics.
///
/// The `x` may be upper or lower case and the hex digits of either case. Sequences are matched left to
/// right without overlapping, so `_x005F_x0041_` decodes to `_x0041_`. An eight-digit sequence above
/// U+10FFFF stays as written. Escaped surrogate pairs are joined; a surrogate without its partner becomes
/// U+FFFD, since a Rust string cannot hold it. Borrows when there is nothing to decode.
pub fn decode_string(s: &str) -> Cow<'_, str> {
    let bytes = s.as_bytes();
    let Some(first) = find_escape_start(s, 0) else {
        return Cow::Borrowed(s);
    };
    let mut sink = Utf16Sink { out: String::with_capacity(s.len()), high: None };
    let mut copied = 0;
    let mut i = first;
    while i < bytes.len() {
        if bytes[i] != b'_' || !matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
            i += 1;
            continue;
        }
        if let Some(unit) = hex_run(bytes, i + 2, 4).filter(|_| bytes.get(i + 6) == Some(&b'_')) {
            sink.push_str(&s[copied..i]);
            // Four hex digits always fit a UTF-16 code unit.
            sink.push_unit(unit as u16);
            i += 7;
            copied = i;
        } else if let Some(code) = hex_run(bytes, i + 2, 8).filter(|_| bytes.get(i + 10) == Some(&b'_')) {
            if code <= 0x10FFFF {
                sink.push_str(&s[copied..i]);
                match u16::try_from(code) {
                    Ok(unit) => sink.push_unit(unit),
                    Err(_) => {
                        sink.flush_high();
                        sink.out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                    }
                }
                copied = i + 11;
            }
            // Out of range: DecodeName skips the sequence but leaves its text in place.
            i += 11;
        } else {
            i += 1;
        }
        // Jump to the next candidate instead of stepping through plain text byte by byte.
        i = find_escape_start(s, i).unwrap_or(bytes.len());
    }
    sink.push_str(&s[copied..]);
    sink.flush_high();
    if copied == 0 {
        // Only out-of-range sequences were met: the text is unchanged.
        return Cow::Borrowed(s);
    }
    Cow::Owned(sink.out)
}

/// Finds the first `_x` or `_X` at or after `from`.
fn find_escape_start(s: &str, from: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = from;
    loop {
        // `str::find` with an ASCII char runs the standard library's word-at-a-time memchr, where a
        // byte-by-byte search was a tenth of decoding real messages. Every `i` here follows an ASCII
        // byte (or is 0), so it is a char boundary; `position` covers any other case.
        let rest = s.get(i..);
        let offset = match rest {
            Some(rest) => rest.find('_')?,
            None => bytes.get(i..)?.iter().position(|&b| b == b'_')?,
        };
        let at = i + offset;
        if matches!(bytes.get(at + 1), Some(b'x' | b'X')) {
            return Some(at);
        }
        i = at + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_controls_surrogates_and_underscore_x() {
        assert_eq!(encode_string("plain_text"), "plain_text");
        assert!(matches!(encode_string("plain_text"), Cow::Borrowed(_)));
        assert_eq!(encode_string("a\nb\tc\u{7f}\u{80}\u{9f}\u{a0}"), "a_x000A_b_x0009_c_x007F__x0080__x009F_\u{a0}");
        assert_eq!(encode_string("\u{1D11E}"), "_xD834__xDD1E_");
        assert_eq!(encode_string("_x_X_y_"), "_x005F_x_x005F_X_y_");
        assert_eq!(encode_string("<&>\""), "<&>\"");
        assert!(matches!(encode_string("caf\u{e9} \u{a0}"), Cow::Borrowed(_)));
    }

    #[test]
    fn xml_layers() {
        let mut out = String::new();
        write_text(&mut out, "a<b>&\"c\"\n");
        assert_eq!(out, "a&lt;b&gt;&amp;\"c\"_x000A_");
        out.clear();
        write_attr(&mut out, "a<b>&\"c\"_x");
        assert_eq!(out, "a&lt;b&gt;&amp;&quot;c&quot;_x005F_x");
        out.clear();
        write_xml_only(&mut out, "1<2&3>_x\n");
        assert_eq!(out, "1&lt;2&amp;3&gt;_x\n");
    }

    #[test]
    fn decodes_like_decode_name() {
        assert_eq!(decode_string("abc"), "abc");
        assert_eq!(decode_string("a_x000A_b"), "a\nb");
        assert_eq!(decode_string("a_X000a_b"), "a\nb");
        assert_eq!(decode_string("_x005F_x0041_"), "_x0041_");
        assert_eq!(decode_string("_xD834__xDD1E_"), "\u{1D11E}");
        assert_eq!(decode_string("_x0001D11E_"), "\u{1D11E}");
        assert_eq!(decode_string("_x00000041_"), "A");
        assert_eq!(decode_string("_x00110000_"), "_x00110000_");
        assert_eq!(decode_string("_xD834_"), "\u{FFFD}");
        assert_eq!(decode_string("_xDD1E_x"), "\u{FFFD}x");
        assert_eq!(decode_string("_xD834_a"), "\u{FFFD}a");
        assert_eq!(decode_string("_xD834__xD834__xDD1E_"), "\u{FFFD}\u{1D11E}");
        assert_eq!(decode_string("_x001G_"), "_x001G_");
        assert_eq!(decode_string("_x00_"), "_x00_");
        assert_eq!(decode_string("__x0041_"), "_A");
        assert_eq!(decode_string("_x0041"), "_x0041");
        assert_eq!(decode_string("_x0000_"), "\0");
    }
}
