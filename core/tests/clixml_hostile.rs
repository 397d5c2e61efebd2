//! Hostile input: limits hold, every malformation is an error naming the problem, nothing panics.

#[path = "clixml_support/mod.rs"]
mod common;

use proptest::collection::vec;
use proptest::prelude::*;
use psremote::clixml::{ClixmlError, Limit, Limits, Value, from_bytes, from_str, from_str_many, to_string};

fn limits() -> Limits {
    Limits::default()
}

fn nested_objects(depth: usize) -> String {
    let mut xml = String::new();
    for i in 0..depth {
        xml.push_str(&format!("<Obj RefId=\"{i}\"><LST>"));
    }
    xml.push_str("<I32>1</I32>");
    for _ in 0..depth {
        xml.push_str("</LST></Obj>");
    }
    xml
}

fn limit_of(result: Result<Value, ClixmlError>) -> Option<Limit> {
    match result {
        Err(ClixmlError::LimitExceeded { limit, .. }) => Some(limit),
        _ => None,
    }
}

#[test]
fn depth_limit() {
    assert!(from_str(&nested_objects(128), &limits()).is_ok());
    assert_eq!(limit_of(from_str(&nested_objects(129), &limits())), Some(Limit::Depth));
    let small = Limits { max_depth: 3, ..limits() };
    assert!(from_str(&nested_objects(3), &small).is_ok());
    assert_eq!(limit_of(from_str(&nested_objects(4), &small)), Some(Limit::Depth));
    // A million levels of nesting stop at the limit, long before the stack is in danger.
    assert_eq!(limit_of(from_str(&nested_objects(1_000_000), &limits())), Some(Limit::Depth));
    // Property sets count as levels too.
    let sets = format!("<Obj RefId=\"0\"><MS>{}{}</MS></Obj>", "<MS N=\"s\">".repeat(200), "</MS>".repeat(200));
    assert_eq!(limit_of(from_str(&sets, &limits())), Some(Limit::Depth));
}

#[test]
fn object_limit() {
    let many = |n: usize| format!("<Obj RefId=\"0\"><LST>{}</LST></Obj>", "<Nil />".repeat(n));
    let small = Limits { max_objects: 100, ..limits() };
    assert!(from_str(&many(99), &small).is_ok());
    assert_eq!(limit_of(from_str(&many(100), &small)), Some(Limit::Objects));
    let names = format!("<Obj RefId=\"0\"><TN RefId=\"0\">{}</TN></Obj>", "<T>x</T>".repeat(200));
    assert_eq!(limit_of(from_str(&names, &small)), Some(Limit::Objects));
}

/// Each object refers twice to the previous one: a few hundred bytes that would expand to 2^60 values
/// for anyone walking the tree. The object limit counts references at their expanded size.
#[test]
fn reference_amplification_is_bounded() {
    let mut xml = String::from("<Obj RefId=\"0\"><LST>");
    xml.push_str("<Obj RefId=\"1\"><LST><I32>1</I32></LST></Obj>");
    for i in 2..62 {
        xml.push_str(&format!("<Obj RefId=\"{i}\"><LST><Ref RefId=\"{0}\" /><Ref RefId=\"{0}\" /></LST></Obj>", i - 1));
    }
    xml.push_str("</LST></Obj>");
    assert_eq!(limit_of(from_str(&xml, &limits())), Some(Limit::Objects));
    // The same shape with few levels is fine, and the sharing survives.
    let small: String = xml.split("<Obj RefId=\"6\">").next().unwrap_or_default().to_owned() + "</LST></Obj>";
    assert!(from_str(&small, &limits()).is_ok(), "{small}");
}

/// A chain of references can make the expanded tree deeper than the text: measured too.
#[test]
fn reference_depth_is_bounded() {
    let mut xml = String::from("<Obj RefId=\"root\"><LST><Obj RefId=\"0\"><LST /></Obj>");
    for i in 1..200 {
        xml.push_str(&format!("<Obj RefId=\"{i}\"><MS><Ref N=\"p\" RefId=\"{}\" /></MS></Obj>", i - 1));
    }
    xml.push_str("</LST></Obj>");
    assert_eq!(limit_of(from_str(&xml, &limits())), Some(Limit::Depth));
}

#[test]
fn size_limit_is_checked_before_parsing() {
    let small = Limits { max_bytes: 10, ..limits() };
    assert_eq!(limit_of(from_str("<S>0123456789</S>", &small)), Some(Limit::Bytes));
    assert_eq!(limit_of(from_bytes(b"<S>0123456789</S>", &small)), Some(Limit::Bytes));
    assert!(from_str_many("<S>01234567</S>", &Limits { max_bytes: 15, ..limits() }).is_ok());
    // Not even well-formedness is looked at.
    assert_eq!(limit_of(from_str("<<<<<<<<<<<<<<", &small)), Some(Limit::Bytes));
}

#[track_caller]
fn assert_error(xml: &str, check: impl Fn(&ClixmlError) -> bool) {
    match from_str(xml, &limits()) {
        Err(e) if check(&e) => {
            let message = e.to_string();
            assert!(message.starts_with(|c: char| c.is_ascii_lowercase()), "{message}");
        }
        other => panic!("{xml}: {other:?}"),
    }
}

#[test]
fn undefined_and_cyclic_references() {
    assert_error(
        "<Obj RefId=\"0\"><MS><Ref N=\"x\" RefId=\"7\" /></MS></Obj>",
        |e| matches!(e, ClixmlError::UndefinedRef { id } if id == "7"),
    );
    assert_error(
        "<Obj RefId=\"0\"><TNRef RefId=\"3\" /></Obj>",
        |e| matches!(e, ClixmlError::UndefinedTypeNameRef { id } if id == "3"),
    );
    assert_error(
        "<Obj RefId=\"0\"><LST><Ref RefId=\"0\" /></LST></Obj>",
        |e| matches!(e, ClixmlError::CyclicRef { id } if id == "0"),
    );
    // Ids are strings: "01" is not "1".
    assert_error(
        "<Obj RefId=\"x\"><LST><Obj RefId=\"1\" /><Ref RefId=\"01\" /></LST></Obj>",
        |e| matches!(e, ClixmlError::UndefinedRef { id } if id == "01"),
    );
    assert_error("<Ref />", |e| matches!(e, ClixmlError::InvalidStructure(_)));
}

#[test]
fn unknown_tags() {
    let unknown = |tag: &str, parent: &str| {
        let (tag, parent) = (tag.to_owned(), parent.to_owned());
        move |e: &ClixmlError| matches!(e, ClixmlError::UnknownTag { tag: t, parent: p } if *t == tag && *p == parent)
    };
    assert_error("<Foo />", unknown("Foo", "#document"));
    assert_error("<Obj RefId=\"0\"><Foo /></Obj>", unknown("Foo", "Obj"));
    assert_error("<Obj RefId=\"0\"><LST><T>x</T></LST></Obj>", unknown("T", "LST"));
    assert_error("<Obj RefId=\"0\"><MS><ToString N=\"x\">y</ToString></MS></Obj>", unknown("ToString", "MS"));
    assert_error("<Obj RefId=\"0\"><TN RefId=\"0\"><S>x</S></TN></Obj>", unknown("S", "TN"));
    assert_error("<Obj RefId=\"0\"><DCT><S>x</S></DCT></Obj>", unknown("S", "DCT"));
    assert_error("<Obj RefId=\"0\"><LST><LST /></LST></Obj>", unknown("LST", "LST"));
    // Unknown type names are not an error.
    let v =
        from_str("<Obj RefId=\"0\"><TN RefId=\"0\"><T>No.Such.Type</T></TN><ToString>x</ToString></Obj>", &limits());
    assert!(v.is_ok());
}

#[test]
fn bad_primitive_texts() {
    let cases = [
        ("I32", "abc"),
        ("I32", "2147483648"),
        ("By", "256"),
        ("SB", "-129"),
        ("U64", "-1"),
        ("C", "65536"),
        ("B", "yes"),
        ("G", "not-a-guid"),
        ("BA", "!!!"),
        ("Db", "inf"),
        ("Db", "1.2.3.4x"),
        ("Sg", ""),
        ("DT", "yesterday"),
        ("TS", "one hour"),
        ("D", "1e5"),
        ("Version", "1.a"),
    ];
    for (tag, text) in cases {
        assert_error(
            &format!("<{tag}>{text}</{tag}>"),
            |e| matches!(e, ClixmlError::InvalidPrimitive { tag: t, text: x } if *t == tag && x == text),
        );
    }
    // SecureString text is never echoed into the error.
    assert_error(
        "<SS>password?</SS>",
        |e| matches!(e, ClixmlError::InvalidPrimitive { tag: "SS", text } if text == "<redacted>"),
    );
    // Long texts are cut.
    assert_error(
        &format!("<I32>{}</I32>", "9".repeat(10_000)),
        |e| matches!(e, ClixmlError::InvalidPrimitive { text, .. } if text.len() == 64),
    );
}

#[test]
fn invalid_references() {
    for reference in ["foo", "#xD800", "#0", "#x110000", "#xZZ", "nbsp"] {
        assert_error(
            &format!("<S>a&{reference};b</S>"),
            |e| matches!(e, ClixmlError::InvalidEscape { reference: r } if r == reference),
        );
    }
}

#[test]
fn malformed_xml() {
    for xml in
        ["<S>abc</I32>", "<S", "</S>", "<S a=>x</S>", "<S>a & b</S>", "<S N=\"x\" N=\"y\">a</S>", "<Obj RefId=\"0\">"]
    {
        match from_str(xml, &limits()) {
            Err(ClixmlError::MalformedXml { .. } | ClixmlError::UnexpectedEof(_)) => {}
            other => panic!("{xml}: {other:?}"),
        }
    }
    assert!(matches!(from_str("<S>abc", &limits()), Err(ClixmlError::UnexpectedEof("S"))));
    assert!(matches!(from_bytes(b"<S>\xFF</S>", &limits()), Err(ClixmlError::InvalidUtf8(_))));
}

#[test]
fn structural_errors() {
    let structure = |e: &ClixmlError| matches!(e, ClixmlError::InvalidStructure(_));
    assert_error("<Obj RefId=\"0\">text</Obj>", structure);
    assert_error("<I32>1</I32> trailing", structure);
    assert_error("<Obj RefId=\"0\"><MS><S>no name</S></MS></Obj>", structure);
    assert_error("<Obj RefId=\"0\"><MS><MS>no name</MS></MS></Obj>", structure);
    assert_error("<Obj RefId=\"0\"><DCT><En><S N=\"Key\">k</S></En></DCT></Obj>", structure);
    assert_error("<Obj RefId=\"0\"><DCT><En><S N=\"Key\">k</S><S N=\"Key\">k</S></En></DCT></Obj>", structure);
    assert_error("<Obj RefId=\"0\"><ToString>a</ToString><ToString>b</ToString></Obj>", structure);
    assert_error("<Obj RefId=\"0\"><I32>1</I32><I32>2</I32></Obj>", structure);
    assert_error("<Obj RefId=\"0\"><LST /><DCT /></Obj>", structure);
    assert_error("<S>a<B>true</B></S>", structure);
    assert_error("<Nil>x</Nil>", structure);
    assert_error("<Objs><I32>1</I32></Objs><I32>2</I32>", structure);
    assert_error("<I32>1</I32><Objs />", structure);
    assert_error("<I32>1</I32><I32>2</I32>", |e| matches!(e, ClixmlError::TopLevelCount(2)));
    assert_error("", |e| matches!(e, ClixmlError::TopLevelCount(0)));
    assert_error("<Objs><I32>1</I32><I32>2</I32></Objs>", |e| matches!(e, ClixmlError::TopLevelCount(2)));
    assert_eq!(from_str("<Objs><I32>1</I32></Objs>", &limits()).ok(), Some(Value::I32(1)));
}

/// A document 128 objects deep, mixing every shape that nests (lists, properties, dictionaries,
/// property sets), read, written, compared and dropped on a thread with a small stack. The reader keeps
/// its own stack; the writer, equality and drop recurse once per level.
#[test]
fn full_depth_fits_a_small_stack() {
    let mut xml = String::new();
    let shapes = [
        ("<Obj N=\"Value\" RefId=\"{i}\"><LST>", "</LST></Obj>"),
        ("<Obj N=\"Value\" RefId=\"{i}\"><MS><Obj N=\"p\" RefId=\"{i}x\"><Props>", "</Props></Obj></MS></Obj>"),
        ("<Obj N=\"Value\" RefId=\"{i}\"><DCT><En><S N=\"Key\">k</S>", "</En></DCT></Obj>"),
        ("<Obj N=\"Value\" RefId=\"{i}\"><MS><MS N=\"set\">", "</MS></MS></Obj>"),
    ];
    let mut closers = Vec::new();
    let mut level = 0;
    let mut i = 0;
    while level < 128 {
        let (open, close) = shapes[i % shapes.len()];
        let opens = open.matches("<Obj").count() + open.matches("<MS N").count();
        if level + opens > 128 {
            break;
        }
        xml.push_str(&open.replace("{i}", &i.to_string()));
        closers.push(close);
        level += opens;
        i += 1;
    }
    // A name that suits every innermost shape (list item, property, dictionary value).
    xml.push_str("<I32 N=\"Value\">1</I32>");
    while let Some(close) = closers.pop() {
        xml.push_str(close);
    }
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let v = from_str(&xml, &Limits::default()).map_err(|e| e.to_string())?;
            let again = from_str(&to_string(&v), &Limits::default()).map_err(|e| e.to_string())?;
            if v != again {
                return Err("round trip differs".to_owned());
            }
            drop(again);
            Ok(())
        })
        .expect("thread");
    let result = handle.join().expect("no stack overflow");
    assert!(result.is_ok(), "{result:?}");
}

/// Tokens that make up CLIXML, for a soup that reaches deep into the reader.
fn token() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec![
        "<Obj RefId=\"0\">",
        "<Obj RefId=\"1\" N=\"p\">",
        "<Obj>",
        "</Obj>",
        "<Ref RefId=\"0\" />",
        "<Ref N=\"r\" RefId=\"1\" />",
        "<TN RefId=\"0\">",
        "</TN>",
        "<TNRef RefId=\"0\" />",
        "<T>",
        "</T>",
        "<ToString>",
        "</ToString>",
        "<MS>",
        "</MS>",
        "<MS N=\"s\">",
        "<Props>",
        "</Props>",
        "<LST>",
        "</LST>",
        "<LST />",
        "<IE>",
        "</IE>",
        "<QUE>",
        "</QUE>",
        "<STK>",
        "</STK>",
        "<DCT>",
        "</DCT>",
        "<En>",
        "</En>",
        "<S N=\"Key\">",
        "<S N=\"Value\">",
        "<S>",
        "</S>",
        "<I32>",
        "</I32>",
        "<I32 N=\"Value\">",
        "<Nil />",
        "<Nil N=\"n\" />",
        "<B>true</B>",
        "<Db>1E+308</Db>",
        "<BA>AAEC</BA>",
        "<SS>AAEC</SS>",
        "<G>792e5b37-4505-47ef-b7d2-8711bb7affa8</G>",
        "<Objs>",
        "</Objs>",
        "12",
        "x",
        " ",
        "_x0041_",
        "_xD834_",
        "&amp;",
        "&#xD800;",
        "&#65;",
        "<![CDATA[c]]>",
        "<!-- c -->",
        "<?pi?>",
        "&",
        "<",
        ">",
        "\"",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        let _ = from_bytes(&bytes, &limits());
    }

    #[test]
    fn token_soup_never_panics(tokens in vec(token(), 0..64)) {
        let xml = tokens.concat();
        if let Ok(values) = from_str_many(&xml, &Limits { max_depth: 8, max_objects: 200, ..limits() }) {
            // Whatever was accepted can be written and read back.
            for v in values {
                let again = from_str(&to_string(&v), &limits());
                prop_assert_eq!(again.ok(), Some(v));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Corpus messages cut anywhere are errors, never panics.
    #[test]
    fn truncated_corpus_messages_fail_cleanly(pick in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
        let corpus = corpus();
        let data = corpus[pick.index(corpus.len())].as_slice();
        let cut = cut.index(data.len());
        prop_assert!(from_bytes(&data[..cut], &limits()).is_err());
    }

    /// Corpus messages with bytes overwritten never panic, and what still reads round-trips.
    #[test]
    fn mutated_corpus_messages_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let corpus = corpus();
        let mut data = corpus[pick.index(corpus.len())].clone();
        for (at, byte) in edits {
            let at = at.index(data.len());
            data[at] = byte;
        }
        if let Ok(v) = from_bytes(&data, &limits()) {
            prop_assert_eq!(from_str(&to_string(&v), &limits()).ok(), Some(v));
        }
    }
}

fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| common::clixml_corpus().into_iter().map(|m| m.clixml().to_vec()).collect())
}

#[test]
fn every_prefix_of_small_corpus_messages_fails_cleanly() {
    let mut checked = 0;
    for data in corpus().iter().filter(|d| d.len() < 2048) {
        for cut in 0..data.len() {
            assert!(from_bytes(&data[..cut], &limits()).is_err(), "{:?}", String::from_utf8_lossy(&data[..cut]));
            checked += 1;
        }
    }
    assert!(checked > 10_000, "{checked}");
}
