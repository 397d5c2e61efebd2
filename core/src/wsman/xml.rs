//! A small namespace-resolved element tree for WS-Management envelopes.
//!
//! SOAP replies are bounded by MaxEnvelopeSize (at most a few hundred KiB), so a tree is the
//! simplest correct reader here. CLIXML, which can be large, has its own streaming reader.

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

use crate::error::{Error, Result};

/// Deepest nesting accepted; WS-Man envelopes are shallow, so anything deeper is hostile.
const MAX_DEPTH: usize = 64;

/// One XML element with its namespace resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Namespace URI, empty when none.
    pub ns: String,
    /// Local name.
    pub name: String,
    /// Attributes as (namespace URI, local name, value).
    pub attrs: Vec<(String, String, String)>,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// Concatenated character data directly inside this element.
    pub text: String,
}

impl Element {
    /// Whether this element is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// The first child `{ns}name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// Every child `{ns}name`.
    pub fn children_named<'a>(&'a self, ns: &'a str, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// The value of the attribute with this local name (any namespace).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(_, n, _)| n == name).map(|(_, _, v)| v.as_str())
    }

    /// Follows a path of `(ns, name)` steps from this element.
    pub fn path(&self, steps: &[(&str, &str)]) -> Option<&Element> {
        let mut cur = self;
        for (ns, name) in steps {
            cur = cur.child(ns, name)?;
        }
        Some(cur)
    }

    /// All text inside this element and its descendants, in document order.
    pub fn deep_text(&self) -> String {
        let mut out = self.text.clone();
        for c in &self.children {
            out.push_str(&c.deep_text());
        }
        out
    }
}

fn ns_of(r: ResolveResult<'_>) -> Result<String> {
    match r {
        ResolveResult::Bound(ns) => Ok(String::from_utf8_lossy(ns.as_ref()).into_owned()),
        ResolveResult::Unbound => Ok(String::new()),
        ResolveResult::Unknown(p) => {
            Err(Error::protocol(format!("undeclared xml namespace prefix {:?}", String::from_utf8_lossy(&p))))
        }
    }
}

fn xml_err(e: impl std::fmt::Display) -> Error {
    Error::protocol(format!("malformed xml: {e}"))
}

/// Parses a whole document into its root element.
pub fn parse(bytes: &[u8]) -> Result<Element> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = NsReader::from_reader(bytes);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut buf = Vec::new();
    loop {
        let (res, ev) = reader.read_resolved_event_into(&mut buf).map_err(xml_err)?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if root.is_some() {
                    return Err(Error::protocol("malformed xml: content after the root element"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(Error::protocol("malformed xml: nesting too deep"));
                }
                let ns = ns_of(res)?;
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let mut attrs = Vec::new();
                for a in e.attributes() {
                    let a = a.map_err(xml_err)?;
                    let key = a.key;
                    if key.as_ref().starts_with(b"xmlns") {
                        continue;
                    }
                    let (ares, local) = reader.resolve_attribute(key);
                    let ans = ns_of(ares)?;
                    let value = a.unescape_value().map_err(xml_err)?.into_owned();
                    attrs.push((ans, String::from_utf8_lossy(local.as_ref()).into_owned(), value));
                }
                let el = Element { ns, name, attrs, children: Vec::new(), text: String::new() };
                if matches!(ev, Event::Empty(_)) {
                    attach(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or_else(|| xml_err("unbalanced end tag"))?;
                attach(&mut stack, &mut root, el);
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.decode().map_err(xml_err)?);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.decode().map_err(xml_err)?);
                }
            }
            Event::GeneralRef(r) => {
                let Some(top) = stack.last_mut() else { continue };
                if let Some(ch) = r.resolve_char_ref().map_err(xml_err)? {
                    top.text.push(ch);
                } else {
                    let name = r.decode().map_err(xml_err)?;
                    let ch = match name.as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(xml_err(format!("unknown entity &{other};"))),
                    };
                    top.text.push(ch);
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(xml_err("document ended inside an element"));
    }
    root.ok_or_else(|| xml_err("empty document"))
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// Escapes text for element content or a double-quoted attribute value.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaces_entities_and_bom() {
        let doc =
            b"\xEF\xBB\xBF<a:r xmlns:a=\"urn:a\" xmlns=\"urn:d\" a:k=\"v&amp;w\"><c>x &lt; y&#65;</c><a:e/></a:r>";
        let root = parse(doc).unwrap();
        assert!(root.is("urn:a", "r"));
        assert_eq!(root.attr("k"), Some("v&w"));
        assert_eq!(root.child("urn:d", "c").unwrap().text, "x < yA");
        assert!(root.child("urn:a", "e").is_some());
    }

    #[test]
    fn rejects_truncated_and_deep_documents() {
        assert_eq!(parse(b"<a><b>").unwrap_err().kind(), crate::ErrorKind::Protocol);
        assert_eq!(parse(b"").unwrap_err().kind(), crate::ErrorKind::Protocol);
        assert_eq!(parse(b"<a:b/>").unwrap_err().kind(), crate::ErrorKind::Protocol);
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
