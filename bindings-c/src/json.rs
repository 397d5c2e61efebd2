//! The stable JSON mapping of CLIXML values (documented in the header and README):
//! strings, numbers, booleans, null as themselves; Decimal, DateTime, TimeSpan, Guid as strings;
//! byte arrays as base64; NaN/±Infinity as "NaN"/"Infinity"/"-Infinity"; SecureString as
//! `{"$secure": true}` (never the plaintext); lists as arrays; hashtables as objects; other objects
//! as `{"$types": [...], "$toString": ..., ["$value": ...], props...}`.

use std::sync::Arc;

use base64::Engine as _;
use psremote::clixml::{Container, PsObject, Value};
use serde_json::{Map, Number, Value as Json};

fn double(f: f64) -> Json {
    if f.is_nan() {
        Json::String("NaN".into())
    } else if f.is_infinite() {
        Json::String(if f > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        Number::from_f64(f).map(Json::Number).unwrap_or(Json::Null)
    }
}

/// A value as JSON.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Str(s) | Value::Uri(s) | Value::Version(s) | Value::XmlDocument(s) | Value::ScriptBlock(s) => {
            Json::String(s.clone())
        }
        Value::Char(c) => Json::String(char::from_u32(u32::from(*c)).unwrap_or('\u{FFFD}').to_string()),
        Value::Bool(b) => Json::Bool(*b),
        Value::U8(n) => (*n).into(),
        Value::I8(n) => (*n).into(),
        Value::U16(n) => (*n).into(),
        Value::I16(n) => (*n).into(),
        Value::U32(n) => (*n).into(),
        Value::I32(n) => (*n).into(),
        Value::U64(n) => (*n).into(),
        Value::I64(n) => (*n).into(),
        Value::Float(f) => double(f64::from(*f)),
        Value::Double(f) => double(*f),
        Value::Decimal(s) | Value::DateTime(s) | Value::Duration(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Guid(g) => Json::String(g.to_string()),
        Value::SecureString(_) => {
            let mut m = Map::new();
            m.insert("$secure".into(), Json::Bool(true));
            Json::Object(m)
        }
        Value::Object(o) => object(o),
    }
}

fn object(o: &PsObject) -> Json {
    let plain = o.adapted.is_empty() && o.extended.is_empty() && o.value.is_none();
    match &o.container {
        Some(Container::Dictionary(entries)) if plain => {
            let mut m = Map::new();
            for (k, v) in entries {
                let key = match to_json(k) {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(key, to_json(v));
            }
            return Json::Object(m);
        }
        Some(c) if plain => {
            return Json::Array(c.items().unwrap_or(&[]).iter().map(to_json).collect());
        }
        _ => {}
    }
    let mut m = Map::new();
    m.insert(
        "$types".into(),
        Json::Array(o.type_names.as_deref().unwrap_or(&[]).iter().cloned().map(Json::String).collect()),
    );
    m.insert("$toString".into(), o.to_string.clone().map(Json::String).unwrap_or(Json::Null));
    if let Some(v) = &o.value {
        m.insert("$value".into(), to_json(v));
    }
    if let Some(c) = &o.container {
        m.insert("$items".into(), object(&PsObject { container: Some(c.clone()), ..PsObject::new() }));
    }
    for (k, v) in o.extended.iter().chain(o.adapted.iter()) {
        m.entry(k.clone()).or_insert_with(|| to_json(v));
    }
    Json::Object(m)
}

/// JSON input as a value: objects become hashtables, arrays `System.Object[]`.
pub fn from_json(j: &Json) -> Value {
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                i32::try_from(i).map(Value::I32).unwrap_or(Value::I64(i))
            } else if let Some(u) = n.as_u64() {
                Value::U64(u)
            } else {
                Value::Double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(a) => Value::Object(Arc::new(PsObject {
            type_names: Some(
                vec!["System.Object[]".to_owned(), "System.Array".to_owned(), "System.Object".to_owned()].into(),
            ),
            container: Some(Container::List(a.iter().map(from_json).collect())),
            ..PsObject::new()
        })),
        Json::Object(m) => Value::Object(Arc::new(PsObject {
            type_names: Some(vec!["System.Collections.Hashtable".to_owned(), "System.Object".to_owned()].into()),
            container: Some(Container::Dictionary(
                m.iter().map(|(k, v)| (Value::Str(k.clone()), from_json(v))).collect(),
            )),
            ..PsObject::new()
        })),
    }
}
