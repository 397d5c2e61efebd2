//! The CLIXML vectors of `shared/vectors.json` (see PROTOCOL.md section E): string escaping,
//! primitive and container encodings, and real message bodies from Windows PowerShell 5.1.

#[path = "clixml_support/mod.rs"]
mod common;

use std::sync::Arc;

use psremote::clixml::{Container, Limits, PsObject, Value, decode_string, encode_string, from_str, to_string};

fn vectors() -> Vec<serde_json::Value> {
    let path = common::shared_dir().join("vectors.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors.json is JSON")
}

fn vector(id: &str) -> serde_json::Value {
    vectors().into_iter().find(|v| v["id"] == id).unwrap_or_else(|| panic!("vector {id} missing"))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(|s| s.as_str().expect("string").to_owned()).collect()
}

fn decode(xml: &str) -> Value {
    from_str(xml, &Limits::default()).unwrap_or_else(|e| panic!("{e}: {xml}"))
}

/// Decodes, re-encodes and checks the text comes back byte for byte.
fn assert_exact(xml: &str) -> Value {
    let value = decode(xml);
    assert_eq!(to_string(&value), xml);
    value
}

/// Decodes, re-encodes and checks the re-encoded text decodes to the same value.
fn assert_semantic(xml: &str) -> Value {
    let value = decode(xml);
    assert_eq!(decode(&to_string(&value)), value, "{xml}");
    value
}

fn obj(v: &Value) -> &PsObject {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v:?}"))
}

fn type_names(names: &[&str]) -> Option<Arc<[String]>> {
    Some(names.iter().map(|n| (*n).to_owned()).collect())
}

#[test]
fn string_escape_pypsrp() {
    let v = vector("clixml-string-escape-pypsrp");
    let inputs = strings(&v["input"]["strings"]);
    let encoded = strings(&v["expected"]["encoded"]);
    assert_eq!(inputs.len(), encoded.len());
    for (input, expected) in inputs.iter().zip(&encoded) {
        assert_eq!(encode_string(input), expected.as_str());
        assert_eq!(decode_string(expected), input.as_str());
        assert_eq!(to_string(&Value::Str(input.clone())), format!("<S>{expected}</S>"));
        assert_eq!(decode(&format!("<S>{expected}</S>")), Value::Str(input.clone()));
    }
}

#[test]
fn string_escape_psrpcore() {
    let v = vector("clixml-string-escape-psrpcore");
    let input = v["input"]["string"].as_str().expect("string");
    let expected = v["expected"]["encoded"].as_str().expect("string");
    // The vector spells the lone high surrogate U+D83C as the six characters `\uD83C` (JSON cannot
    // carry it) and appends a note after the last token; a Rust string cannot hold a lone surrogate
    // either, so encode the two sides around it.
    let input = &input[..input.find(" (").expect("note")];
    let (before, after) = input.split_once("\\uD83C").expect("marker");
    let encoded = format!("{}_xD83C_{}", encode_string(before), encode_string(after));
    assert_eq!(encoded, expected);
    // Decoding turns the lone surrogate into U+FFFD.
    assert_eq!(decode_string(expected), format!("{before}\u{FFFD}{after}"));
}

#[test]
fn string_server_output_real() {
    let v = vector("clixml-string-server-output-real");
    let value = v["input"]["value"].as_str().expect("string");
    let xml = v["expected"]["xml"].as_str().expect("string");
    assert_eq!(decode(xml), Value::Str(value.to_owned()));
    assert_eq!(to_string(&Value::Str(value.to_owned())), xml);
}

#[test]
fn primitives_psrpcore() {
    let v = vector("clixml-primitives-psrpcore");
    let cases = strings(&v["input"]["cases"]);
    let xml = strings(&v["expected"]["xml"]);
    assert_eq!(cases.len(), xml.len());
    let guid = uuid::Uuid::parse_str("f5853fa8-a3d8-438c-bf94-723d3fef8934").expect("guid");
    for (case, xml) in cases.iter().zip(&xml) {
        let text_between = |xml: &str| xml[xml.find('>').expect("tag") + 1..xml.rfind('<').expect("tag")].to_owned();
        let expected = match case.split_whitespace().next().expect("case") {
            "TimeSpan" => Value::Duration(text_between(xml)),
            "DateTime" => Value::DateTime(text_between(xml)),
            "Single" => match case.as_str() {
                "Single 1.0" => Value::Float(1.0),
                _ => Value::Float(3.402823e38),
            },
            "Double" => match case.as_str() {
                "Double overflow" => Value::Double(f64::INFINITY),
                "Double -overflow" => Value::Double(f64::NEG_INFINITY),
                _ => Value::Double(f64::MAX),
            },
            "Decimal" => Value::Decimal("1.10".into()),
            "Byte[]" => Value::Bytes(vec![0, 1, 2, 3]),
            "Guid" => Value::Guid(guid),
            "Char" => Value::Char(0xE9),
            other => panic!("unexpected case {other}"),
        };
        assert_eq!(decode(xml), expected, "{case}");
        if case == "Single 1.0" {
            // psrpcore writes `1.0`; .NET's XmlConvert (and this writer) write the shortest form.
            assert_eq!(to_string(&expected), "<Sg>1</Sg>");
        } else {
            assert_eq!(to_string(&expected), *xml, "{case}");
        }
    }
}

#[test]
fn spec_primitive_examples() {
    let v = vector("clixml-spec-primitive-examples");
    let xml = strings(&v["expected"]["xml"]);
    let expected = [
        Value::Str("This is a string".into()),
        Value::Char(97),
        Value::Bool(true),
        Value::DateTime("2008-04-11T10:42:32.2731993-07:00".into()),
        Value::Duration("PT9.0269026S".into()),
        Value::U8(254),
        Value::I8(-127),
        Value::U16(65535),
        Value::I16(-32767),
        Value::U32(4294967295),
        Value::I32(i32::MIN),
        Value::U64(u64::MAX),
        Value::I64(i64::MIN),
        Value::Float(12.34),
        Value::Double(12.34),
        Value::Decimal("12.34".into()),
        Value::Bytes(vec![1, 2, 3, 4]),
        Value::Guid(uuid::Uuid::parse_str("792e5b37-4505-47ef-b7d2-8711bb7affa8").expect("guid")),
        Value::Uri("http://www.microsoft.com/".into()),
        Value::Nil,
        Value::Version("6.2.1.3".into()),
        Value::ScriptBlock("get-command -type cmdlet".into()),
    ];
    assert_eq!(xml.len(), expected.len());
    for (xml, expected) in xml.iter().zip(expected) {
        assert_eq!(decode(xml), expected, "{xml}");
        assert_eq!(to_string(&expected), *xml);
    }
}

#[test]
fn containers() {
    let v = vector("clixml-containers");
    let items: Vec<Value> = strings(&v["input"]["values"]).into_iter().map(Value::Str).collect();
    let reversed: Vec<Value> = items.iter().rev().cloned().collect();
    let array = ["System.Object[]", "System.Array", "System.Object"];
    let cases = [
        ("queue", &["System.Collections.Queue", "System.Object"][..], Container::Queue(items.clone())),
        ("stack", &["System.Collections.Stack", "System.Object"][..], Container::Stack(reversed)),
        ("list", &array[..], Container::List(items.clone())),
        ("list_as_ie", &array[..], Container::Enumerable(items.clone())),
    ];
    for (key, names, container) in cases {
        let xml = v["expected"]["xml"][key].as_str().expect("xml");
        let value =
            Value::from(PsObject { type_names: type_names(names), container: Some(container), ..PsObject::new() });
        assert_eq!(to_string(&value), xml, "{key}");
        assert_eq!(decode(xml), value, "{key}");
    }
}

#[test]
fn progress_record_real() {
    let v = vector("psrp-progress-record-real");
    let value = assert_exact(v["expected"]["message"]["data"].as_str().expect("data"));
    assert_eq!(value.property("Activity").and_then(Value::as_str), Some("Preparing modules for first use."));
    assert_eq!(value.property("StatusDescription").and_then(Value::as_str), Some(" "));
    assert_eq!(value.property("CurrentOperation"), Some(&Value::Nil));
    assert_eq!(value.property("ParentActivityId").and_then(Value::as_i64), Some(-1));
    let record_type = value.property("Type").expect("Type");
    assert_eq!(record_type.as_i64(), Some(1));
    assert_eq!(obj(record_type).to_string.as_deref(), Some("Completed"));
    assert_eq!(obj(record_type).type_names()[1], "System.Enum");
}

#[test]
fn information_record_real() {
    let v = vector("psrp-information-record-real");
    let value = assert_exact(v["expected"]["message"]["data"].as_str().expect("data"));
    assert_eq!(value.property("TimeGenerated"), Some(&Value::DateTime("2018-06-13T23:45:29.4583203+00:00".into())));
    assert_eq!(value.property("User").and_then(Value::as_str), Some("WIN-NNMU24VVKJ0\\vagrant"));
    assert_eq!(value.property("ProcessId"), Some(&Value::U32(2780)));
    let tags = obj(value.property("Tags").expect("Tags"));
    assert_eq!(tags.container, Some(Container::List(Vec::new())));
}

#[test]
fn error_record_real() {
    let v = vector("psrp-error-record-real");
    let value = assert_exact(v["expected"]["message"]["data"].as_str().expect("data"));
    let record = obj(&value);
    assert_eq!(record.type_names()[0], "System.Management.Automation.ErrorRecord");
    assert_eq!(record.to_string.as_deref(), Some("error stream"));
    let exception = obj(value.property("Exception").expect("Exception"));
    assert_eq!(exception.property("HResult"), Some(&Value::I32(-2146233087)));
    assert_eq!(exception.adapted.len(), 8);
    let invocation = value.property("InvocationInfo").expect("InvocationInfo");
    let definition = invocation.property("MyCommand").and_then(Value::as_str).expect("MyCommand");
    assert!(definition.starts_with("$DebugPreference = 'Continue'\n            $VerbosePreference"));
    // <Ref> gives the very object read earlier.
    let bound = invocation.property("BoundParameters").expect("BoundParameters");
    let bound_again = value.property("InvocationInfo_BoundParameters").expect("ref");
    match (bound, bound_again) {
        (Value::Object(a), Value::Object(b)) => assert!(Arc::ptr_eq(a, b)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        value.property("ErrorDetails_ScriptStackTrace").and_then(Value::as_str),
        Some("at <ScriptBlock>, <No file>: line 5")
    );
    // Later objects share the type name list of an earlier <TN> through <TNRef>.
    let iteration = obj(value.property("PipelineIterationInfo").expect("PipelineIterationInfo"));
    assert_eq!(iteration.container, Some(Container::List(vec![Value::I32(0), Value::I32(0)])));
}

#[test]
fn runspace_availability_real() {
    let v = vector("psrp-runspace-availability-real");
    for m in v["expected"]["messages"].as_array().expect("messages") {
        let value = assert_exact(m["data"].as_str().expect("data"));
        let o = obj(&value);
        assert!(o.property_ci("ci").and_then(Value::as_i64).is_some());
        if m["type"] == "0x21004" {
            let response = o.property("SetMinMaxRunspacesResponse").expect("response");
            assert!(response.as_bool().is_some() || response.as_i64().is_some());
        }
    }
}

#[test]
fn pipeline_host_call_readline_real() {
    let v = vector("psrp-pipeline-host-call-readline-real");
    let call = assert_exact(v["expected"]["call"]["data"].as_str().expect("call"));
    assert_eq!(call.property("ci").and_then(Value::as_i64), Some(1));
    let mi = call.property("mi").expect("mi");
    assert_eq!(mi.as_i64(), Some(11));
    assert_eq!(obj(mi).to_string.as_deref(), Some("ReadLine"));
    let mp = obj(call.property("mp").expect("mp"));
    assert_eq!(mp.type_names()[0], "System.Collections.ArrayList");
    assert_eq!(mp.container, Some(Container::List(Vec::new())));
    let response = assert_exact(v["expected"]["response"]["data"].as_str().expect("response"));
    assert_eq!(response.property("mr").and_then(Value::as_str), Some("ReadLine response"));
}

#[test]
fn pscredential_host_response_real() {
    let v = vector("securestring-pscredential-host-response-real");
    let value = assert_exact(v["input"]["host_response_message"]["data"].as_str().expect("data"));
    let credential = obj(value.property("mr").expect("mr"));
    assert_eq!(credential.property("UserName").and_then(Value::as_str), Some("username"));
    match credential.property("Password") {
        Some(Value::SecureString(bytes)) => assert_eq!(bytes.len(), 32),
        other => panic!("{other:?}"),
    }
    assert!(format!("{credential:?}").contains("SecureString(<redacted>)"));
}

#[test]
fn session_capability_and_application_private_data_real() {
    let v = vector("psrp-receive-server-session-capability-real");
    let decoded = v["expected"]["decoded"].as_array().expect("decoded");
    let capability = assert_exact(decoded[0]["message"]["data"].as_str().expect("data"));
    assert_eq!(capability.property("protocolversion"), Some(&Value::Version("2.3".into())));
    let private = assert_exact(decoded[1]["message"]["data"].as_str().expect("data"));
    let data = obj(private.property("ApplicationPrivateData").expect("data"));
    let Some(Container::Dictionary(entries)) = &data.container else { panic!("{data:?}") };
    assert_eq!(entries[0].0, Value::Str("PSVersionTable".into()));
    let table = obj(&entries[0].1);
    // <TNRef RefId="0"/> resolves to the same list as the outer dictionary's <TN RefId="0">.
    assert!(Arc::ptr_eq(table.type_names.as_ref().expect("tn"), data.type_names.as_ref().expect("tn")));
    let Some(Container::Dictionary(versions)) = &table.container else { panic!("{table:?}") };
    assert!(versions.contains(&(Value::Str("PSVersion".into()), Value::Version("5.1.26236.5000".into()))));
}

#[test]
fn pipeline_output_and_state_real() {
    let v = vector("psrp-receive-pipeline-output-and-state-real");
    let decoded = v["expected"]["decoded"].as_array().expect("decoded");
    assert_eq!(assert_exact(decoded[0]["message"]["data"].as_str().expect("data")), Value::I32(2));
    let state = assert_exact(decoded[1]["message"]["data"].as_str().expect("data"));
    assert_eq!(state.property("PipelineState").and_then(Value::as_i64), Some(4));
    // pypsrp's CREATE_PIPELINE writes RefId before N, so only its meaning survives a round trip.
    let create = assert_semantic(v["input"]["create_pipeline_message"][0]["data"].as_str().expect("data"));
    let powershell = create.property("PowerShell").expect("PowerShell");
    let cmds = obj(powershell.property("Cmds").expect("Cmds"));
    let Some(Container::List(cmds)) = &cmds.container else { panic!("{cmds:?}") };
    assert_eq!(cmds[0].property("Cmd").and_then(Value::as_str), Some("1+1"));
    assert_eq!(powershell.property("ExtraCmds"), Some(&Value::Nil));
}

#[test]
fn public_key_request_empty_string() {
    let v = vector("psrp-message-public-key-request");
    assert_eq!(assert_semantic(v["input"]["data"].as_str().expect("data")), Value::Str(String::new()));
}

/// Every CLIXML text anywhere in the vectors (message `data` fields and `xml` fields) decodes and
/// survives a round trip.
#[test]
fn every_clixml_text_in_the_vectors_round_trips() {
    fn walk(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| walk(v, k, out)),
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, key, out)),
            serde_json::Value::String(s) if (key == "data" || key == "xml") && s.starts_with('<') => {
                out.push(s.clone())
            }
            _ => {}
        }
    }
    let mut texts = Vec::new();
    for v in vectors() {
        let id = v["id"].as_str().unwrap_or_default();
        if id.starts_with("clixml-") || id.starts_with("psrp-") || id.starts_with("securestring-") {
            walk(&v, "", &mut texts);
        }
    }
    assert!(texts.len() >= 60, "{}", texts.len());
    for xml in texts {
        assert_semantic(&xml);
    }
}
