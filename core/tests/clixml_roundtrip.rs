//! Property tests: arbitrary value trees and strings survive writing and reading back.

use std::sync::Arc;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use psremote::clixml::{
    Container, Limits, PsObject, Value, decode_string, encode_string, from_str, from_str_many, to_string, write_to,
};

/// Strings built to hit the escaping rules: controls, C1 controls, astral characters, `_x` look-alikes,
/// XML metacharacters, and arbitrary characters.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => any::<char>().prop_map(String::from),
        2 => "[a-zA-Z0-9 ]{1,6}",
        1 => (0u32..0x20).prop_map(|c| char::from_u32(c).map(String::from).unwrap_or_default()),
        1 => (0x7Fu32..0xA1).prop_map(|c| char::from_u32(c).map(String::from).unwrap_or_default()),
        1 => (0x10000u32..0x110000).prop_map(|c| char::from_u32(c).map(String::from).unwrap_or_default()),
        1 => Just("_x".to_owned()),
        1 => Just("_X".to_owned()),
        1 => Just("_".to_owned()),
        1 => "[0-9A-Fa-f]{1,8}_?",
        1 => Just("_x005F_".to_owned()),
        1 => Just("_xD834__xDD1E_".to_owned()),
        1 => Just("&amp;<>\"']]>".to_owned()),
        1 => Just("\r\n\t".to_owned()),
        1 => Just("\u{FEFF}\u{FFFE}\u{FFFF}".to_owned()),
    ];
    vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

fn primitive() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        text().prop_map(Value::Str),
        any::<u16>().prop_map(Value::Char),
        any::<bool>().prop_map(Value::Bool),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,7})?(Z|[+-][0-9]{2}:[0-9]{2})?"
            .prop_map(Value::DateTime),
        "-?P([0-9]{1,3}D)?T([0-9]{1,2}H)?([0-9]{1,2}M)?[0-9]{1,2}(\\.[0-9]{1,7})?S".prop_map(Value::Duration),
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        proptest::num::f32::ANY.prop_map(Value::Float),
        proptest::num::f64::ANY.prop_map(Value::Double),
        "-?[0-9]{1,20}(\\.[0-9]{1,8})?".prop_map(Value::Decimal),
        vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        any::<u128>().prop_map(|n| Value::Guid(uuid::Uuid::from_u128(n))),
        text().prop_map(Value::Uri),
        "[0-9]{1,5}\\.[0-9]{1,5}(\\.[0-9]{1,5}){0,2}".prop_map(Value::Version),
        text().prop_map(Value::XmlDocument),
        text().prop_map(Value::ScriptBlock),
        vec(any::<u8>(), 0..48).prop_map(Value::SecureString),
    ]
}

fn type_names() -> impl Strategy<Value = Arc<[String]>> {
    // A small pool makes repeated lists (written as <TNRef>) likely.
    let pool = |names: &[&str]| -> Arc<[String]> { names.iter().map(|n| (*n).to_owned()).collect() };
    prop_oneof![
        Just(pool(&["System.Management.Automation.PSCustomObject", "System.Object"])),
        Just(pool(&["System.Collections.Hashtable", "System.Object"])),
        vec(text(), 0..4).prop_map(Arc::from),
    ]
}

fn container(inner: impl Strategy<Value = Value> + Clone) -> impl Strategy<Value = Container> {
    prop_oneof![
        vec(inner.clone(), 0..5).prop_map(Container::List),
        vec(inner.clone(), 0..5).prop_map(Container::Enumerable),
        vec(inner.clone(), 0..5).prop_map(Container::Queue),
        vec(inner.clone(), 0..5).prop_map(Container::Stack),
        vec((inner.clone(), inner), 0..5).prop_map(Container::Dictionary),
    ]
}

/// Value trees up to four objects deep.
fn value() -> impl Strategy<Value = Value> {
    primitive().prop_recursive(4, 48, 5, |inner| {
        (
            option::of(type_names()),
            option::of(text()),
            option::of(prop_oneof![3 => primitive(), 1 => inner.clone()]),
            option::of(container(inner.clone())),
            vec((text(), inner.clone()), 0..4),
            vec((text(), inner), 0..4),
        )
            .prop_map(|(type_names, to_string, value, container, adapted, extended)| {
                Value::from(PsObject { type_names, to_string, value, container, adapted, extended })
            })
    })
}

fn limits() -> Limits {
    Limits::default()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn value_trees_round_trip(v in value()) {
        let xml = to_string(&v);
        let back = from_str(&xml, &limits());
        prop_assert!(back.is_ok(), "{:?}\n{}", back, xml);
        prop_assert_eq!(back.ok(), Some(v));
    }

    /// An object that occurs twice is written once and then as <Ref>, and reads back shared.
    #[test]
    fn shared_objects_round_trip_as_references(shared in value(), other in value()) {
        let shared = match shared {
            Value::Object(obj) => obj,
            leaf => Arc::new(PsObject { value: Some(leaf), ..PsObject::new() }),
        };
        let outer = PsObject {
            container: Some(Container::List(vec![Value::Object(shared.clone()), other, Value::Object(shared.clone())])),
            extended: vec![("again".into(), Value::Object(shared))],
            ..PsObject::new()
        };
        let v = Value::from(outer);
        let xml = to_string(&v);
        prop_assert_eq!(xml.matches("<Ref ").count() >= 2, true);
        let back = from_str(&xml, &limits()).map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(&back, &v);
        let outer = back.as_object().expect("object");
        let Some(Container::List(items)) = &outer.container else { panic!("list") };
        match (&items[0], &items[2], &outer.extended[0].1) {
            (Value::Object(a), Value::Object(b), Value::Object(c)) => {
                prop_assert!(Arc::ptr_eq(a, b) && Arc::ptr_eq(a, c));
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// Several values written one after the other, bare or inside <Objs>, read back as a sequence.
    #[test]
    fn sequences_round_trip(values in vec(value(), 0..4), wrapped in any::<bool>()) {
        let mut xml = String::new();
        if wrapped {
            xml.push_str("<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\">");
        }
        for v in &values {
            write_to(v, &mut xml);
        }
        if wrapped {
            xml.push_str("</Objs>");
        }
        let back = from_str_many(&xml, &limits()).map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(back, values);
    }

    #[test]
    fn strings_survive_encode_decode(s in text()) {
        let encoded = encode_string(&s);
        prop_assert_eq!(decode_string(&encoded), s.as_str());
        // The encoded form has no character that XML 1.0 text cannot carry or that UTF-16 splits.
        prop_assert!(encoded.chars().all(|c| !matches!(c as u32, 0..=0x1F | 0x7F..=0x9F | 0x10000..)), "{}", encoded);
    }

    #[test]
    fn arbitrary_strings_survive_encode_decode(s in any::<String>()) {
        let encoded = encode_string(&s);
        prop_assert_eq!(decode_string(&encoded), s.as_str());
        let xml = to_string(&Value::Str(s.clone()));
        prop_assert_eq!(from_str(&xml, &limits()).ok(), Some(Value::Str(s)));
    }

    /// Decoding never panics and is the identity on text without `_x`.
    #[test]
    fn decode_is_total(s in text()) {
        let decoded = decode_string(&s);
        if !s.contains("_x") && !s.contains("_X") {
            prop_assert_eq!(decoded, s.as_str());
        }
    }

    #[test]
    fn property_names_round_trip(name in text(), v in primitive()) {
        let obj = Value::from(PsObject { adapted: vec![(name.clone(), v.clone())], ..PsObject::new() });
        let back = from_str(&to_string(&obj), &limits()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.property(&name), Some(&v));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn doubles_round_trip_bit_exactly(bits in any::<u64>()) {
        let d = f64::from_bits(bits);
        let back = from_str(&to_string(&Value::Double(d)), &limits()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Value::Double(back) = back else { panic!("not a double") };
        prop_assert!(back.to_bits() == d.to_bits() || (back.is_nan() && d.is_nan()), "{d:e} -> {back:e}");
    }

    #[test]
    fn singles_round_trip_bit_exactly(bits in any::<u32>()) {
        let f = f32::from_bits(bits);
        let back = from_str(&to_string(&Value::Float(f)), &limits()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Value::Float(back) = back else { panic!("not a single") };
        prop_assert!(back.to_bits() == f.to_bits() || (back.is_nan() && f.is_nan()), "{f:e} -> {back:e}");
    }
}

#[test]
fn write_to_appends() {
    let mut out = String::from("prefix");
    write_to(&Value::I32(5), &mut out);
    assert_eq!(out, "prefix<I32>5</I32>");
}

#[test]
fn ref_ids_restart_in_every_call() {
    let obj = Value::from(PsObject::custom(vec![("a".into(), Value::I32(1))]));
    let first = to_string(&obj);
    assert_eq!(first, to_string(&obj));
    assert!(first.starts_with("<Obj RefId=\"0\"><TN RefId=\"0\">"), "{first}");
}

#[test]
fn custom_object_shape() {
    let obj = PsObject::custom(vec![("Name".into(), Value::Str("x".into())), ("Count".into(), Value::I32(2))]);
    assert_eq!(
        to_string(&Value::from(obj)),
        "<Obj RefId=\"0\"><TN RefId=\"0\"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN>\
         <MS><S N=\"Name\">x</S><I32 N=\"Count\">2</I32></MS></Obj>"
    );
}

#[test]
fn equal_type_name_lists_are_written_once() {
    let a = Value::from(PsObject::custom(vec![]));
    let b = Value::from(PsObject::custom(vec![]));
    let list = Value::from(PsObject { container: Some(Container::List(vec![a, b])), ..PsObject::new() });
    let xml = to_string(&list);
    assert_eq!(xml.matches("<TN ").count(), 1, "{xml}");
    assert!(xml.contains("<TNRef RefId=\"0\" />"), "{xml}");
    let back = from_str(&xml, &limits()).expect("reads");
    let Some(Container::List(items)) = &back.as_object().expect("object").container else { panic!("list") };
    let names = |v: &Value| v.as_object().and_then(|o| o.type_names.clone()).expect("names");
    assert!(Arc::ptr_eq(&names(&items[0]), &names(&items[1])));
}

#[test]
fn writer_forms_match_powershell() {
    let obj = PsObject {
        type_names: Some(Arc::from(vec!["T&<1>".to_owned()])),
        to_string: Some("a\nb".into()),
        value: Some(Value::I32(3)),
        adapted: vec![("p\"q".into(), Value::Nil)],
        extended: vec![("e".into(), Value::Guid(uuid::Uuid::from_u128(0xABCDEF)))],
        ..PsObject::new()
    };
    let v = Value::from(PsObject { extended: vec![("x".into(), Value::from(obj))], ..PsObject::new() });
    assert_eq!(
        to_string(&v),
        "<Obj RefId=\"0\"><MS><Obj N=\"x\" RefId=\"1\"><TN RefId=\"0\"><T>T&amp;&lt;1&gt;</T></TN>\
         <ToString>a_x000A_b</ToString><I32>3</I32><Props><Nil N=\"p&quot;q\" /></Props>\
         <MS><G N=\"e\">00000000-0000-0000-0000-000000abcdef</G></MS></Obj></MS></Obj>"
    );
}

#[test]
fn property_sets_read_as_nested_objects() {
    let xml =
        "<Obj RefId=\"0\"><MS><S N=\"a\">1</S><MS N=\"set\"><I32 N=\"b\">2</I32><MS N=\"inner\" /></MS></MS></Obj>";
    let v = from_str(xml, &limits()).expect("reads");
    let set = v.property("set").expect("set");
    assert_eq!(set.property("b"), Some(&Value::I32(2)));
    assert_eq!(set.property("inner"), Some(&Value::from(PsObject::new())));
    assert_eq!(from_str(&to_string(&v), &limits()).expect("reads again"), v);
}

#[test]
fn reader_tolerances() {
    let l = limits();
    // BOM, whitespace, XML declaration, comments, CDATA, entity and character references.
    let xml = "\u{FEFF} <?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- c -->\n<Objs Version=\"1.1.0.1\" \
               xmlns=\"http://schemas.microsoft.com/powershell/2004/04\">\n  <Obj RefId=\"a\">\n    <MS>\n      \
               <S N=\"s\">x&amp;y&lt;&gt;&quot;&apos;&#65;&#x42;<![CDATA[<c>]]><!-- no -->z</S>\n      \
               <B N=\"b\"> 1 </B>\n      <Db N=\"d\">1.0E+38</Db>\n      <Sg N=\"f\">-INF</Sg>\n      \
               <Ref N=\"self-later\" RefId=\"b\" />\n    </MS>\n  </Obj>\n</Objs>\n";
    let err = from_str(xml, &l).expect_err("ref b undefined");
    assert!(err.to_string().contains("undefined object reference"), "{err}");
    let xml = xml.replace("RefId=\"b\"", "RefId=\"a\"");
    assert!(matches!(from_str(&xml, &l), Err(psremote::clixml::ClixmlError::CyclicRef { .. })));
    let xml = xml.replace("<Ref N=\"self-later\" RefId=\"a\" />", "");
    let v = from_str(&xml, &l).expect("reads");
    assert_eq!(v.property("s").and_then(Value::as_str), Some("x&y<>\"'AB<c>z"));
    assert_eq!(v.property("b"), Some(&Value::Bool(true)));
    assert_eq!(v.property("d"), Some(&Value::Double(1e38)));
    assert_eq!(v.property("f"), Some(&Value::Float(f32::NEG_INFINITY)));
    // Raw CR LF inside text is normalized to LF as XML requires.
    assert_eq!(from_str("<S>a\r\nb</S>", &l).expect("reads"), Value::Str("a\nb".into()));
    // Bytes with a BOM.
    assert_eq!(psremote::clixml::from_bytes(b"\xEF\xBB\xBF<I32>2</I32>", &l).expect("reads"), Value::I32(2));
    // Empty elements.
    assert_eq!(from_str("<S />", &l).expect("reads"), Value::Str(String::new()));
    assert_eq!(from_str("<BA></BA>", &l).expect("reads"), Value::Bytes(Vec::new()));
    assert_eq!(from_str_many("  ", &l).expect("reads"), Vec::<Value>::new());
}
