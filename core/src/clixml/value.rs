//! The value model: what a CLIXML message decodes to and what the writer encodes.
//!
//! Element names follow MS-PSRP 2.2.5.1 (primitives) and 2.2.5.2 (complex objects). Texts whose
//! .NET types have no exact Rust counterpart (DateTime, TimeSpan, Decimal, Version) are kept as the
//! text seen on the wire, so nothing is lost in a round trip.

use std::fmt;
use std::sync::Arc;

/// One CLIXML value: a primitive element, `<Nil/>`, or a complex object (`<Obj>`).
///
/// Equality treats floating-point values as equal when their bits are equal or both are NaN, so that
/// every value equals itself and a decoded message can be compared with the original.
#[derive(Clone)]
pub enum Value {
    /// `<Nil/>`: .NET null.
    Nil,
    /// `<S>`: a string, with `_xHHHH_` escapes already decoded.
    Str(String),
    /// `<C>`: one UTF-16 code unit (written as its decimal value).
    Char(u16),
    /// `<B>`: a boolean.
    Bool(bool),
    /// `<DT>`: a DateTime, kept as the exact xs:dateTime text (`2008-04-11T10:42:32.2731993-07:00`).
    DateTime(String),
    /// `<TS>`: a TimeSpan, kept as the exact xs:duration text (`PT9.0269026S`).
    Duration(String),
    /// `<By>`: an unsigned byte.
    U8(u8),
    /// `<SB>`: a signed byte.
    I8(i8),
    /// `<U16>`
    U16(u16),
    /// `<I16>`
    I16(i16),
    /// `<U32>`
    U32(u32),
    /// `<I32>`
    I32(i32),
    /// `<U64>`
    U64(u64),
    /// `<I64>`
    I64(i64),
    /// `<Sg>`: a .NET Single.
    Float(f32),
    /// `<Db>`: a .NET Double.
    Double(f64),
    /// `<D>`: a .NET Decimal, kept as text (`12.34`).
    Decimal(String),
    /// `<BA>`: a byte array (base64 on the wire).
    Bytes(Vec<u8>),
    /// `<G>`: a GUID.
    Guid(uuid::Uuid),
    /// `<URI>`: a URI, with `_x` escapes decoded.
    Uri(String),
    /// `<Version>`: `major.minor[.build[.revision]]`, kept as text.
    Version(String),
    /// `<XD>`: an XML document, as text with `_x` escapes decoded.
    XmlDocument(String),
    /// `<SBK>`: a script block's text (`<SB>` is a signed byte, not a script block).
    ScriptBlock(String),
    /// `<SS>`: a SecureString, as the base64-decoded bytes seen on the wire (ciphertext under protocol
    /// 2.3 and older, see MS-PSRP 2.2.5.1.24). Its `Debug` output never shows the bytes.
    SecureString(Vec<u8>),
    /// `<Obj>`: a complex object. Objects referenced twice in one message (`<Ref>`) share the `Arc`.
    Object(Arc<PsObject>),
}

/// A complex object (MS-PSRP 2.2.5.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PsObject {
    /// The type names, most specific first (`<TN>`); objects whose `<TNRef>` points at the same list
    /// share one `Arc`.
    pub type_names: Option<Arc<[String]>>,
    /// `<ToString>`: the sender's string form of the object.
    pub to_string: Option<String>,
    /// The underlying value: the primitive of an extended primitive or an enum (e.g. `<I32>` inside
    /// `<Obj>`), or another object when PowerShell serializes an object that wraps one (an `<Obj>` or
    /// `<Ref>` directly inside `<Obj>`, seen in real Windows output).
    pub value: Option<Value>,
    /// The object's list or dictionary contents, if it is a collection.
    pub container: Option<Container>,
    /// Adapted properties (`<Props>`), in wire order.
    pub adapted: Vec<(String, Value)>,
    /// Extended (note) properties (`<MS>`), in wire order. A nested property set (`<MS N="set">`) is
    /// read as a property holding a [`PsObject`] with only extended properties.
    pub extended: Vec<(String, Value)>,
}

/// The collection part of a complex object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Container {
    /// `<LST>`: a list or array.
    List(Vec<Value>),
    /// `<IE>`: any other enumerable. Kept apart from [`Container::List`] so that a round trip writes
    /// the same element; both mean a sequence.
    Enumerable(Vec<Value>),
    /// `<QUE>`: a queue, first to dequeue first.
    Queue(Vec<Value>),
    /// `<STK>`: a stack, top first.
    Stack(Vec<Value>),
    /// `<DCT>`: a dictionary, as key/value pairs in wire order.
    Dictionary(Vec<(Value, Value)>),
}

impl Container {
    /// The items of a list, enumerable, queue or stack; `None` for a dictionary.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Container::List(items)
            | Container::Enumerable(items)
            | Container::Queue(items)
            | Container::Stack(items) => Some(items),
            Container::Dictionary(_) => None,
        }
    }
}

/// The type names PowerShell gives a `PSCustomObject`.
const CUSTOM_OBJECT_TYPES: [&str; 2] = ["System.Management.Automation.PSCustomObject", "System.Object"];

impl PsObject {
    /// An object with no type names, no value and no properties (the shape of PSRP message bodies).
    pub fn new() -> Self {
        Self::default()
    }

    /// A `PSCustomObject` (type names `System.Management.Automation.PSCustomObject`, `System.Object`)
    /// whose properties are written as extended properties (`<MS>`).
    pub fn custom(props: Vec<(String, Value)>) -> Self {
        let type_names: Arc<[String]> = CUSTOM_OBJECT_TYPES.iter().map(|t| (*t).to_owned()).collect();
        PsObject { type_names: Some(type_names), extended: props, ..Self::default() }
    }

    /// The property called `name`: extended properties first, then adapted ones. Exact match.
    pub fn property(&self, name: &str) -> Option<&Value> {
        self.extended.iter().chain(&self.adapted).find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Like [`PsObject::property`] but ignoring ASCII case, the way PowerShell matches names (a server
    /// sends `ci` where some clients send `CI`).
    pub fn property_ci(&self, name: &str) -> Option<&Value> {
        self.extended.iter().chain(&self.adapted).find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// The type names, most specific first; empty when the object has none.
    pub fn type_names(&self) -> &[String] {
        self.type_names.as_deref().unwrap_or(&[])
    }
}

impl Value {
    /// The text of a [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Any integer element as `i64` (`None` if it does not fit), also through an object whose
    /// underlying value is an integer (an enum such as `<Obj><TN>..</TN><ToString>Opened</ToString><I32>2</I32></Obj>`).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::U8(v) => Some(i64::from(*v)),
            Value::I8(v) => Some(i64::from(*v)),
            Value::U16(v) => Some(i64::from(*v)),
            Value::I16(v) => Some(i64::from(*v)),
            Value::U32(v) => Some(i64::from(*v)),
            Value::I32(v) => Some(i64::from(*v)),
            Value::U64(v) => i64::try_from(*v).ok(),
            Value::I64(v) => Some(*v),
            Value::Object(obj) => match &obj.value {
                Some(
                    inner @ (Value::U8(_)
                    | Value::I8(_)
                    | Value::U16(_)
                    | Value::I16(_)
                    | Value::U32(_)
                    | Value::I32(_)
                    | Value::U64(_)
                    | Value::I64(_)),
                ) => inner.as_i64(),
                _ => None,
            },
            _ => None,
        }
    }

    /// The value of a [`Value::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The object of a [`Value::Object`].
    pub fn as_object(&self) -> Option<&PsObject> {
        match self {
            Value::Object(obj) => Some(obj),
            _ => None,
        }
    }

    /// A property of an object value (extended first, then adapted); `None` for other values.
    pub fn property(&self, name: &str) -> Option<&Value> {
        self.as_object()?.property(name)
    }

    /// Whether this is [`Value::Nil`].
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }
}

impl From<PsObject> for Value {
    fn from(obj: PsObject) -> Self {
        Value::Object(Arc::new(obj))
    }
}

/// Floats are equal when their bits are, or when both are NaN (whatever the payload).
fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Nil, Nil) => true,
            (Str(a), Str(b))
            | (DateTime(a), DateTime(b))
            | (Duration(a), Duration(b))
            | (Decimal(a), Decimal(b))
            | (Uri(a), Uri(b))
            | (Version(a), Version(b))
            | (XmlDocument(a), XmlDocument(b))
            | (ScriptBlock(a), ScriptBlock(b)) => a == b,
            (Char(a), Char(b)) => a == b,
            (Bool(a), Bool(b)) => a == b,
            (U8(a), U8(b)) => a == b,
            (I8(a), I8(b)) => a == b,
            (U16(a), U16(b)) => a == b,
            (I16(a), I16(b)) => a == b,
            (U32(a), U32(b)) => a == b,
            (I32(a), I32(b)) => a == b,
            (U64(a), U64(b)) => a == b,
            (I64(a), I64(b)) => a == b,
            (Float(a), Float(b)) => same_f32(*a, *b),
            (Double(a), Double(b)) => same_f64(*a, *b),
            (Bytes(a), Bytes(b)) | (SecureString(a), SecureString(b)) => a == b,
            (Guid(a), Guid(b)) => a == b,
            // Arc's equality looks at the pointer first because PsObject is Eq: shared subtrees
            // compare in constant time.
            (Object(a), Object(b)) => a == b,
            _ => false,
        }
    }
}

// INVARIANT: the float comparison above is reflexive (NaN equals NaN), so equality is total.
impl Eq for Value {}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Value::*;
        match self {
            Nil => f.write_str("Nil"),
            Str(v) => f.debug_tuple("Str").field(v).finish(),
            Char(v) => f.debug_tuple("Char").field(v).finish(),
            Bool(v) => f.debug_tuple("Bool").field(v).finish(),
            DateTime(v) => f.debug_tuple("DateTime").field(v).finish(),
            Duration(v) => f.debug_tuple("Duration").field(v).finish(),
            U8(v) => f.debug_tuple("U8").field(v).finish(),
            I8(v) => f.debug_tuple("I8").field(v).finish(),
            U16(v) => f.debug_tuple("U16").field(v).finish(),
            I16(v) => f.debug_tuple("I16").field(v).finish(),
            U32(v) => f.debug_tuple("U32").field(v).finish(),
            I32(v) => f.debug_tuple("I32").field(v).finish(),
            U64(v) => f.debug_tuple("U64").field(v).finish(),
            I64(v) => f.debug_tuple("I64").field(v).finish(),
            Float(v) => f.debug_tuple("Float").field(v).finish(),
            Double(v) => f.debug_tuple("Double").field(v).finish(),
            Decimal(v) => f.debug_tuple("Decimal").field(v).finish(),
            Bytes(v) => f.debug_tuple("Bytes").field(v).finish(),
            Guid(v) => f.debug_tuple("Guid").field(v).finish(),
            Uri(v) => f.debug_tuple("Uri").field(v).finish(),
            Version(v) => f.debug_tuple("Version").field(v).finish(),
            XmlDocument(v) => f.debug_tuple("XmlDocument").field(v).finish(),
            ScriptBlock(v) => f.debug_tuple("ScriptBlock").field(v).finish(),
            // Ciphertext today, but plain UTF-16 under protocol 2.4: never print it.
            SecureString(_) => f.write_str("SecureString(<redacted>)"),
            Object(v) => f.debug_tuple("Object").field(v).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_string_debug_is_redacted() {
        let v = Value::SecureString(b"secret".to_vec());
        assert_eq!(format!("{v:?}"), "SecureString(<redacted>)");
        let obj = PsObject { adapted: vec![("Password".into(), v)], ..PsObject::new() };
        assert!(!format!("{obj:?}").contains("115"));
    }

    #[test]
    fn nan_equals_nan_and_zero_signs_differ() {
        assert_eq!(Value::Double(f64::NAN), Value::Double(-f64::NAN));
        assert_ne!(Value::Double(0.0), Value::Double(-0.0));
        assert_eq!(Value::Float(f32::NAN), Value::Float(f32::NAN));
        assert_ne!(Value::I32(1), Value::I64(1));
    }

    #[test]
    fn accessors() {
        let state = PsObject { value: Some(Value::I32(2)), ..PsObject::new() };
        let msg = PsObject::custom(vec![
            ("RunspaceState".into(), Value::from(state)),
            ("ci".into(), Value::I64(7)),
            ("big".into(), Value::U64(u64::MAX)),
        ]);
        let v = Value::from(msg);
        assert_eq!(v.property("RunspaceState").and_then(Value::as_i64), Some(2));
        assert_eq!(v.property("ci").and_then(Value::as_i64), Some(7));
        assert_eq!(v.property("big").and_then(Value::as_i64), None);
        assert_eq!(v.as_object().and_then(|o| o.property_ci("CI")).and_then(Value::as_i64), Some(7));
        assert_eq!(v.as_object().map(PsObject::type_names).map(<[String]>::len), Some(2));
        assert_eq!(Value::Bool(true).as_bool(), Some(true));
        assert_eq!(Value::Str("x".into()).as_str(), Some("x"));
        assert!(Value::Nil.is_nil());
    }

    #[test]
    fn extended_before_adapted() {
        let obj = PsObject {
            adapted: vec![("Name".into(), Value::I32(1))],
            extended: vec![("Name".into(), Value::I32(2))],
            ..PsObject::new()
        };
        assert_eq!(obj.property("Name"), Some(&Value::I32(2)));
    }
}
