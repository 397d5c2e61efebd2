//! The CLIXML writer: values to text in the element forms PowerShell's serializer produces.
//!
//! Shapes follow MS-PSRP 2.2.5 as Windows PowerShell writes them: `<Obj N=".." RefId="..">` holding
//! `<TN>`/`<TNRef>`, `<ToString>`, the primitive, the container, `<Props>` and `<MS>` in that order,
//! self-closing empty elements written as `<Nil />`, and RefIds counting from 0 per message.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::escape::{write_attr, write_text, write_xml_only};
use super::value::{Container, PsObject, Value};

/// Writes `value` onto `out` with fresh RefId counters.
pub(super) fn write_value(value: &Value, out: &mut String) {
    let mut writer = Writer { out, objects: HashMap::new(), type_lists: HashMap::new(), scratch: String::new() };
    writer.value(None, value);
}

struct Writer<'v, 'o> {
    out: &'o mut String,
    /// Objects already written, by address, with their RefId. Every `Arc` stays alive while `'v`
    /// borrows the tree, so an address cannot be reused during one call.
    objects: HashMap<*const PsObject, usize>,
    /// Type name lists already written, by content, with their RefId.
    type_lists: HashMap<&'v [String], usize>,
    /// Reused buffer for float formatting.
    scratch: String,
}

impl<'v> Writer<'v, '_> {
    /// Writes `<tag` and the `N` attribute, leaving the start tag open.
    fn open(&mut self, tag: &str, name: Option<&str>) {
        self.out.push('<');
        self.out.push_str(tag);
        if let Some(name) = name {
            self.out.push_str(" N=\"");
            write_attr(self.out, name);
            self.out.push('"');
        }
    }

    fn close(&mut self, tag: &str) {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
    }

    /// Writes a whole primitive element whose content `body` appends.
    fn leaf(&mut self, tag: &str, name: Option<&str>, body: impl FnOnce(&mut String)) {
        self.open(tag, name);
        self.out.push('>');
        body(self.out);
        self.close(tag);
    }

    fn value(&mut self, name: Option<&str>, value: &'v Value) {
        match value {
            Value::Nil => {
                self.open("Nil", name);
                self.out.push_str(" />");
            }
            Value::Str(s) => self.leaf("S", name, |o| write_text(o, s)),
            Value::Char(c) => self.leaf("C", name, |o| push_display(o, c)),
            Value::Bool(b) => self.leaf("B", name, |o| o.push_str(if *b { "true" } else { "false" })),
            Value::DateTime(s) => self.leaf("DT", name, |o| write_xml_only(o, s)),
            Value::Duration(s) => self.leaf("TS", name, |o| write_xml_only(o, s)),
            Value::U8(v) => self.leaf("By", name, |o| push_display(o, v)),
            Value::I8(v) => self.leaf("SB", name, |o| push_display(o, v)),
            Value::U16(v) => self.leaf("U16", name, |o| push_display(o, v)),
            Value::I16(v) => self.leaf("I16", name, |o| push_display(o, v)),
            Value::U32(v) => self.leaf("U32", name, |o| push_display(o, v)),
            Value::I32(v) => self.leaf("I32", name, |o| push_display(o, v)),
            Value::U64(v) => self.leaf("U64", name, |o| push_display(o, v)),
            Value::I64(v) => self.leaf("I64", name, |o| push_display(o, v)),
            Value::Float(v) => {
                let mut scratch = std::mem::take(&mut self.scratch);
                self.leaf("Sg", name, |o| write_f32(o, *v, &mut scratch));
                self.scratch = scratch;
            }
            Value::Double(v) => {
                let mut scratch = std::mem::take(&mut self.scratch);
                self.leaf("Db", name, |o| write_f64(o, *v, &mut scratch));
                self.scratch = scratch;
            }
            Value::Decimal(s) => self.leaf("D", name, |o| write_xml_only(o, s)),
            Value::Bytes(b) => self.leaf("BA", name, |o| BASE64.encode_string(b, o)),
            Value::Guid(g) => self.leaf("G", name, |o| push_display(o, g.hyphenated())),
            Value::Uri(s) => self.leaf("URI", name, |o| write_text(o, s)),
            Value::Version(s) => self.leaf("Version", name, |o| write_xml_only(o, s)),
            Value::XmlDocument(s) => self.leaf("XD", name, |o| write_text(o, s)),
            Value::ScriptBlock(s) => self.leaf("SBK", name, |o| write_text(o, s)),
            Value::SecureString(b) => self.leaf("SS", name, |o| BASE64.encode_string(b, o)),
            Value::Object(obj) => self.object(name, obj),
        }
    }

    fn object(&mut self, name: Option<&str>, obj: &'v Arc<PsObject>) {
        let next_id = self.objects.len();
        let id = *self.objects.entry(Arc::as_ptr(obj)).or_insert(next_id);
        if id != next_id {
            self.open("Ref", name);
            self.out.push_str(" RefId=\"");
            push_display(self.out, id);
            self.out.push_str("\" />");
            return;
        }
        self.open("Obj", name);
        self.out.push_str(" RefId=\"");
        push_display(self.out, id);
        self.out.push_str("\">");
        if let Some(names) = &obj.type_names {
            self.type_names(names);
        }
        if let Some(text) = &obj.to_string {
            self.leaf("ToString", None, |o| write_text(o, text));
        }
        if let Some(value) = &obj.value {
            self.value(None, value);
        }
        if let Some(container) = &obj.container {
            self.container(container);
        }
        self.properties("Props", &obj.adapted);
        self.properties("MS", &obj.extended);
        self.close("Obj");
    }

    fn type_names(&mut self, names: &'v [String]) {
        let next_id = self.type_lists.len();
        let id = *self.type_lists.entry(names).or_insert(next_id);
        if id != next_id {
            self.out.push_str("<TNRef RefId=\"");
            push_display(self.out, id);
            self.out.push_str("\" />");
            return;
        }
        self.out.push_str("<TN RefId=\"");
        push_display(self.out, id);
        self.out.push_str("\">");
        for name in names {
            self.leaf("T", None, |o| write_text(o, name));
        }
        self.close("TN");
    }

    fn properties(&mut self, tag: &str, props: &'v [(String, Value)]) {
        if props.is_empty() {
            return;
        }
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        for (name, value) in props {
            self.value(Some(name), value);
        }
        self.close(tag);
    }

    fn container(&mut self, container: &'v Container) {
        let (tag, items) = match container {
            Container::List(items) => ("LST", items),
            Container::Enumerable(items) => ("IE", items),
            Container::Queue(items) => ("QUE", items),
            Container::Stack(items) => ("STK", items),
            Container::Dictionary(entries) => {
                if entries.is_empty() {
                    self.out.push_str("<DCT />");
                    return;
                }
                self.out.push_str("<DCT>");
                for (key, value) in entries {
                    self.out.push_str("<En>");
                    self.value(Some("Key"), key);
                    self.value(Some("Value"), value);
                    self.out.push_str("</En>");
                }
                self.out.push_str("</DCT>");
                return;
            }
        };
        self.out.push('<');
        self.out.push_str(tag);
        if items.is_empty() {
            self.out.push_str(" />");
            return;
        }
        self.out.push('>');
        for item in items {
            self.value(None, item);
        }
        self.close(tag);
    }
}

fn push_display(out: &mut String, v: impl std::fmt::Display) {
    // Writing into a String cannot fail.
    let _ = write!(out, "{v}");
}

/// Writes a Double as `XmlConvert.ToString` does: `INF`, `-INF`, `NaN`, or the shortest text that
/// reads back to the same value, laid out like .NET's round-trip ("R") format.
pub(super) fn write_f64(out: &mut String, v: f64, scratch: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v < 0.0 { "-INF" } else { "INF" });
    } else {
        scratch.clear();
        let _ = write!(scratch, "{:e}", v.abs());
        write_dotnet_float(out, scratch, v.is_sign_negative(), 15);
    }
}

/// Writes a Single like [`write_f64`], with .NET's 7-digit threshold for scientific notation.
pub(super) fn write_f32(out: &mut String, v: f32, scratch: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v < 0.0 { "-INF" } else { "INF" });
    } else {
        scratch.clear();
        let _ = write!(scratch, "{:e}", v.abs());
        write_dotnet_float(out, scratch, v.is_sign_negative(), 7);
    }
}

/// Lays out Rust's shortest scientific form (`d.ddde±x`) the way .NET's "R" format does: plain
/// digits while the decimal exponent fits within `max(digit count, precision)` places and the value is
/// at least 1e-4, otherwise `d.dddE+xx` with a signed exponent of at least two digits.
fn write_dotnet_float(out: &mut String, sci: &str, negative: bool, precision: usize) {
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (lead, rest) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digit_count = lead.len() + rest.len();
    // Position of the decimal point relative to the first digit.
    let scale = exponent + 1;
    let max_digits = i32::try_from(digit_count.max(precision)).unwrap_or(i32::MAX);
    if negative {
        out.push('-');
    }
    if scale > max_digits || scale < -3 {
        out.push_str(lead);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('E');
        out.push(if exponent < 0 { '-' } else { '+' });
        if exponent.abs() < 10 {
            out.push('0');
        }
        push_display(out, exponent.abs());
        return;
    }
    let digits = || lead.chars().chain(rest.chars());
    if scale <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale.unsigned_abs() as usize));
        out.extend(digits());
        return;
    }
    let whole = scale.unsigned_abs() as usize;
    out.extend(digits().take(whole));
    if whole >= digit_count {
        out.extend(std::iter::repeat_n('0', whole - digit_count));
    } else {
        out.push('.');
        out.extend(digits().skip(whole));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f64_text(v: f64) -> String {
        let mut out = String::new();
        write_f64(&mut out, v, &mut String::new());
        out
    }

    fn f32_text(v: f32) -> String {
        let mut out = String::new();
        write_f32(&mut out, v, &mut String::new());
        out
    }

    #[test]
    fn doubles_in_round_trip_form() {
        let cases: [(f64, &str); 20] = [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (1.5, "1.5"),
            (-60.0, "-60"),
            (12.34, "12.34"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.0 / 3.0, "0.3333333333333333"),
            (123456789012345.0, "123456789012345"),
            (1e15, "1E+15"),
            (9007199254740992.0, "9007199254740992"),
            (1.2345678901234567e19, "1.2345678901234567E+19"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e-5, "1E-05"),
            (f64::MAX, "1.7976931348623157E+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014E-308"),
            (5e-324, "5E-324"),
            (f64::INFINITY, "INF"),
            (f64::NEG_INFINITY, "-INF"),
        ];
        for (v, text) in cases {
            assert_eq!(f64_text(v), text, "{v:e}");
        }
        assert_eq!(f64_text(f64::NAN), "NaN");
    }

    #[test]
    fn singles_in_round_trip_form() {
        let cases: [(f32, &str); 9] = [
            (1.0, "1"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (12.34, "12.34"),
            (3.402823e38, "3.402823E+38"),
            (f32::MAX, "3.4028235E+38"),
            (1e7, "1E+07"),
            (1234567.0, "1234567"),
            (16777216.0, "16777216"),
        ];
        for (v, text) in cases {
            assert_eq!(f32_text(v), text, "{v:e}");
        }
    }
}
