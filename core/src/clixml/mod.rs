//! CLIXML, the XML serialization of .NET objects that PowerShell Remoting carries (MS-PSRP 2.2.5).
//!
//! [`from_str`] and friends turn one PSRP message body into a [`Value`]; [`to_string`] writes a
//! [`Value`] the way PowerShell's serializer does. Reading streams over quick-xml events and builds the
//! values directly; hostile input is bounded by [`Limits`]. Objects referenced with `<Ref>` and type
//! name lists referenced with `<TNRef>` come back as shared `Arc`s, and the writer turns shared `Arc`s
//! back into references. No cryptography happens here: `<SS>` stays ciphertext.
//!
//! References: [MS-PSRP 2.2.5](https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-psrp/c8c85974-ffd7-4455-84a8-e49016c20683)
//! and PowerShell's `serialization.cs`.
//!
//! This module only refers to its siblings through `super::`, so it can be mounted unchanged as a
//! module of a larger crate.

mod escape;
mod reader;
mod value;
mod writer;

use std::fmt;

pub use escape::{decode_string, encode_string};
pub use value::{Container, PsObject, Value};

/// Bounds on what the reader accepts, to keep hostile input from exhausting memory or stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of objects (`<Obj>` and nested property sets), counting objects reached through
    /// `<Ref>` as if they were written out. The reader itself does not recurse, but the writer, `Drop`,
    /// equality and most code that walks a [`Value`] do, once per level: keep this in the hundreds.
    pub max_depth: usize,
    /// Most values (primitives, `<Nil/>`, objects) one message may hold, counting every `<Ref>` as the
    /// full object it refers to; this also bounds the work of anyone walking the decoded tree.
    pub max_objects: usize,
    /// Largest input in bytes; larger input is rejected before parsing.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_depth: 128, max_objects: 1_000_000, max_bytes: 64 * 1024 * 1024 }
    }
}

/// Which of the [`Limits`] was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// [`Limits::max_depth`]
    Depth,
    /// [`Limits::max_objects`]
    Objects,
    /// [`Limits::max_bytes`]
    Bytes,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Depth => "nesting depth",
            Limit::Objects => "object count",
            Limit::Bytes => "input size",
        })
    }
}

/// Why a CLIXML document could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClixmlError {
    /// The input is not well-formed XML (as far as the streaming reader checks).
    #[error("malformed xml at byte {position}")]
    MalformedXml {
        /// Byte offset where the problem was found.
        position: u64,
        /// The XML reader's error.
        #[source]
        source: quick_xml::Error,
    },
    /// The bytes given to [`from_bytes`] are not UTF-8.
    #[error("input is not valid utf-8")]
    InvalidUtf8(#[source] std::str::Utf8Error),
    /// The input ended inside an element.
    #[error("unexpected end of input inside <{0}>")]
    UnexpectedEof(&'static str),
    /// An element that CLIXML does not allow at this place.
    #[error("unknown element <{tag}> inside <{parent}>")]
    UnknownTag {
        /// The element's name.
        tag: String,
        /// The enclosing element (`Obj`, `LST`, ...; `#document` at the top level).
        parent: &'static str,
    },
    /// The text of a primitive element does not parse as its type.
    #[error("invalid <{tag}> text {text:?}")]
    InvalidPrimitive {
        /// The element's name.
        tag: &'static str,
        /// The offending text (cut after 64 characters).
        text: String,
    },
    /// `<Ref RefId="..">` names no earlier object of the message.
    #[error("undefined object reference {id:?}")]
    UndefinedRef {
        /// The RefId.
        id: String,
    },
    /// `<TNRef RefId="..">` names no earlier type name list of the message.
    #[error("undefined type name reference {id:?}")]
    UndefinedTypeNameRef {
        /// The RefId.
        id: String,
    },
    /// `<Ref>` names an object that encloses it; a cycle cannot be represented with shared values.
    #[error("object reference {id:?} points at an enclosing object")]
    CyclicRef {
        /// The RefId.
        id: String,
    },
    /// One of the [`Limits`] was exceeded.
    #[error("{limit} limit of {max} exceeded")]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// Its configured value.
        max: usize,
    },
    /// An entity or character reference (`&name;`, `&#..;`) that XML does not define or that names no
    /// valid character.
    #[error("invalid reference &{reference};")]
    InvalidEscape {
        /// The text between `&` and `;` (cut after 64 characters).
        reference: String,
    },
    /// The elements are known but put together in a way CLIXML does not allow.
    #[error("invalid clixml structure: {0}")]
    InvalidStructure(String),
    /// [`from_str`] or [`from_bytes`] found other than exactly one top-level value.
    #[error("expected exactly one top-level value, found {0}")]
    TopLevelCount(usize),
}

/// Reads exactly one value: a bare primitive (`<I32>2</I32>`), an `<Obj>`, or an `<Objs>` wrapper
/// holding one. A leading byte-order mark and surrounding whitespace are ignored.
pub fn from_str(xml: &str, limits: &Limits) -> Result<Value, ClixmlError> {
    let mut values = from_str_many(xml, limits)?;
    if values.len() != 1 {
        return Err(ClixmlError::TopLevelCount(values.len()));
    }
    Ok(values.swap_remove(0))
}

/// Like [`from_str`], for UTF-8 bytes as they come out of a PSRP message (`EF BB BF` tolerated).
pub fn from_bytes(xml: &[u8], limits: &Limits) -> Result<Value, ClixmlError> {
    check_size(xml.len(), limits)?;
    let xml = xml.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(xml);
    from_str(std::str::from_utf8(xml).map_err(ClixmlError::InvalidUtf8)?, limits)
}

/// Reads every top-level value: the children of an `<Objs Version="1.1.0.1" xmlns="…">` wrapper (as
/// `Export-Clixml` writes), or a sequence of bare values. Empty input gives an empty list.
pub fn from_str_many(xml: &str, limits: &Limits) -> Result<Vec<Value>, ClixmlError> {
    check_size(xml.len(), limits)?;
    let xml = xml.strip_prefix('\u{FEFF}').unwrap_or(xml);
    reader::read_document(xml, limits)
}

fn check_size(len: usize, limits: &Limits) -> Result<(), ClixmlError> {
    if len > limits.max_bytes {
        return Err(ClixmlError::LimitExceeded { limit: Limit::Bytes, max: limits.max_bytes });
    }
    Ok(())
}

/// Writes one value as a PSRP message body would carry it. RefIds of objects and of type name lists
/// count from 0 in every call; an `Arc<PsObject>` met a second time becomes `<Ref RefId=".."/>`, and
/// a type name list met a second time becomes `<TNRef RefId=".."/>`.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write_to(value, &mut out);
    out
}

/// Like [`to_string`], appending to `out`.
pub fn write_to(value: &Value, out: &mut String) {
    writer::write_value(value, out);
}
