//! The CLIXML reader: quick-xml events straight into [`Value`]s, without an intermediate tree.
//!
//! Element forms are those of MS-PSRP 2.2.5 and PowerShell's deserializer. The reader keeps the
//! objects being built on an explicit stack instead of recursing, so its own stack use does not grow
//! with the nesting of the input, whatever [`Limits::max_depth`] says. Every check that protects
//! against hostile input lives here: nesting depth and value count (both measured as if `<Ref>`s were
//! written out in full, so shared subtrees cannot multiply the work of whoever walks the result),
//! undefined and cyclic references, and strict parsing of primitive texts.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesRef, BytesStart, BytesText, Event};

use super::escape::decode_string;
use super::value::{Container, PsObject, Value};
use super::{ClixmlError, Limit, Limits};

type Result<T, E = ClixmlError> = std::result::Result<T, E>;

/// Reads every top-level value of `xml` (see [`super::from_str_many`]).
pub(super) fn read_document(xml: &str, limits: &Limits) -> Result<Vec<Value>> {
    let mut xml_reader = quick_xml::Reader::from_str(xml);
    let config = xml_reader.config_mut();
    config.trim_text(false);
    config.check_end_names = true;
    config.expand_empty_elements = false;
    let mut reader = Reader {
        xml: xml_reader,
        limits,
        values: 0,
        deepest: 0,
        stack: Vec::new(),
        top: Vec::new(),
        document: DocumentState::Bare,
        objects: HashMap::new(),
        type_lists: HashMap::new(),
        pending_props: Vec::new(),
        pending_items: Vec::new(),
        pending_entries: Vec::new(),
        scratch: String::new(),
        input: xml,
    };
    reader.run()
}

/// A RefId. PowerShell numbers them 0, 1, 2…, which are kept as numbers to avoid an allocation; any
/// other text is kept as text. Only canonical decimal forms become numbers, so `"01"` and `"1"` stay
/// different ids as they are different strings.
#[derive(Clone, PartialEq, Eq, Hash)]
enum RefId {
    Num(u64),
    Text(Box<str>),
}

impl RefId {
    fn new(id: &str) -> Self {
        let canonical = !id.is_empty()
            && id.len() <= 19
            && id.bytes().all(|b| b.is_ascii_digit())
            && (id == "0" || !id.starts_with('0'));
        match canonical.then(|| id.parse().ok()).flatten() {
            Some(n) => RefId::Num(n),
            None => RefId::Text(id.into()),
        }
    }

    fn text(&self) -> String {
        match self {
            RefId::Num(n) => n.to_string(),
            RefId::Text(t) => truncate(t),
        }
    }
}

/// An object that later `<Ref>`s may point at, with its measurements for the limits.
struct Shared {
    obj: Arc<PsObject>,
    /// Values in the object's tree, itself included, with references expanded.
    size: usize,
    /// Levels of nesting of the object's tree, itself included, with references expanded.
    height: usize,
}

/// The attributes the reader cares about.
#[derive(Default)]
struct Attrs {
    /// `N`, decoded.
    name: Option<String>,
    ref_id: Option<RefId>,
}

/// Where the text of a primitive element ended up.
enum Text<'a> {
    /// One piece of the input (or of quick-xml's end-of-line normalization).
    Input(Cow<'a, str>),
    /// Several pieces (text split by references, CDATA or comments) joined in `Reader::scratch`.
    Scratch,
}

/// The sequence containers, which all read the same way.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sequence {
    List,
    Enumerable,
    Queue,
    Stack,
}

impl Sequence {
    fn from_tag(tag: &[u8]) -> Option<Sequence> {
        match tag {
            b"LST" => Some(Sequence::List),
            b"IE" => Some(Sequence::Enumerable),
            b"QUE" => Some(Sequence::Queue),
            b"STK" => Some(Sequence::Stack),
            _ => None,
        }
    }

    fn container(self, items: Vec<Value>) -> Container {
        match self {
            Sequence::List => Container::List(items),
            Sequence::Enumerable => Container::Enumerable(items),
            Sequence::Queue => Container::Queue(items),
            Sequence::Stack => Container::Stack(items),
        }
    }
}

/// Which element of an object the reader is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Directly inside `<Obj>`.
    Body,
    /// Inside `<Props>`.
    Adapted,
    /// Inside `<MS>` (of an object, or the body of a property set).
    Extended,
    /// Inside `<LST>`, `<IE>`, `<QUE>` or `<STK>`.
    Items(Sequence),
    /// Inside `<DCT>`, between entries.
    Dictionary,
    /// Inside `<En>`.
    Entry,
}

impl Part {
    fn element(self) -> &'static str {
        match self {
            Part::Body => "Obj",
            Part::Adapted => "Props",
            Part::Extended => "MS",
            Part::Items(Sequence::List) => "LST",
            Part::Items(Sequence::Enumerable) => "IE",
            Part::Items(Sequence::Queue) => "QUE",
            Part::Items(Sequence::Stack) => "STK",
            Part::Dictionary => "DCT",
            Part::Entry => "En",
        }
    }
}

/// What a frame on the stack is building.
enum FrameKind {
    /// An `<Obj>`, with its RefId if it had one.
    Object(Option<RefId>),
    /// A property set (`<MS N="..">` inside `<MS>` or `<Props>`), read as an object of its own.
    PropertySet,
}

/// An object under construction.
struct Frame {
    kind: FrameKind,
    part: Part,
    /// The `N` attribute of the element, handed to the parent with the finished value.
    name: Option<String>,
    obj: PsObject,
    /// Where the open section's values start in the reader's pending buffer for that kind of section
    /// (`pending_props` for `<Props>`/`<MS>`, `pending_items` for sequences, `pending_entries` for
    /// `<DCT>`). Sections nest strictly, so each buffer works as a stack shared by all frames, and every
    /// finished section is moved out into a vector of exactly its size.
    mark: usize,
    /// The key and value of the open `<En>`.
    key: Option<Value>,
    value: Option<Value>,
    /// `Reader::values` when the object started (its own element already counted).
    values_before: usize,
    /// `Reader::deepest` of the enclosing object, restored when this one ends.
    deepest_before: usize,
}

/// What the top level has seen.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DocumentState {
    /// Bare values (or nothing yet).
    Bare,
    /// Inside `<Objs>`.
    InObjs,
    /// After `</Objs>`: only whitespace may follow.
    AfterObjs,
}

/// The primitive elements of MS-PSRP 2.2.5.1, plus `<Nil/>`.
// The variants are spelled like the elements they stand for.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prim {
    Nil,
    S,
    C,
    B,
    DT,
    TS,
    By,
    SB,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    Sg,
    Db,
    D,
    BA,
    G,
    URI,
    Version,
    XD,
    SBK,
    SS,
}

impl Prim {
    fn from_tag(tag: &[u8]) -> Option<Prim> {
        Some(match tag {
            b"S" => Prim::S,
            b"I32" => Prim::I32,
            b"B" => Prim::B,
            b"Nil" => Prim::Nil,
            b"I64" => Prim::I64,
            b"Version" => Prim::Version,
            b"DT" => Prim::DT,
            b"U32" => Prim::U32,
            b"G" => Prim::G,
            b"C" => Prim::C,
            b"TS" => Prim::TS,
            b"By" => Prim::By,
            b"SB" => Prim::SB,
            b"U16" => Prim::U16,
            b"I16" => Prim::I16,
            b"U64" => Prim::U64,
            b"Sg" => Prim::Sg,
            b"Db" => Prim::Db,
            b"D" => Prim::D,
            b"BA" => Prim::BA,
            b"URI" => Prim::URI,
            b"XD" => Prim::XD,
            b"SBK" => Prim::SBK,
            b"SS" => Prim::SS,
            _ => return None,
        })
    }

    fn tag(self) -> &'static str {
        match self {
            Prim::Nil => "Nil",
            Prim::S => "S",
            Prim::C => "C",
            Prim::B => "B",
            Prim::DT => "DT",
            Prim::TS => "TS",
            Prim::By => "By",
            Prim::SB => "SB",
            Prim::U16 => "U16",
            Prim::I16 => "I16",
            Prim::U32 => "U32",
            Prim::I32 => "I32",
            Prim::U64 => "U64",
            Prim::I64 => "I64",
            Prim::Sg => "Sg",
            Prim::Db => "Db",
            Prim::D => "D",
            Prim::BA => "BA",
            Prim::G => "G",
            Prim::URI => "URI",
            Prim::Version => "Version",
            Prim::XD => "XD",
            Prim::SBK => "SBK",
            Prim::SS => "SS",
        }
    }
}

/// What a value element is.
#[derive(Clone, Copy)]
enum ValueTag {
    Prim(Prim),
    Obj,
    Ref,
}

impl ValueTag {
    fn from_tag(tag: &[u8]) -> Option<ValueTag> {
        match tag {
            b"Obj" => Some(ValueTag::Obj),
            b"Ref" => Some(ValueTag::Ref),
            _ => Prim::from_tag(tag).map(ValueTag::Prim),
        }
    }
}

struct Reader<'a, 'l> {
    xml: quick_xml::Reader<&'a [u8]>,
    limits: &'l Limits,
    /// Values read so far, references counted at the size of what they point at.
    values: usize,
    /// Deepest level reached since the innermost open object began.
    deepest: usize,
    /// The objects being read, innermost last; its length is the current nesting depth.
    stack: Vec<Frame>,
    /// Finished top-level values.
    top: Vec<Value>,
    document: DocumentState,
    /// Finished objects that carried a RefId.
    objects: HashMap<RefId, Shared>,
    /// Type name lists that carried a RefId.
    type_lists: HashMap<RefId, Arc<[String]>>,
    /// Values of the open sections, see [`Frame::mark`].
    pending_props: Vec<(String, Value)>,
    pending_items: Vec<Value>,
    pending_entries: Vec<(Value, Value)>,
    /// Reused buffer for element texts that arrive in several pieces.
    scratch: String,
    /// The whole input, to turn slices that quick-xml borrows from it back into `&str` without
    /// validating their UTF-8 again.
    input: &'a str,
}

impl<'a> Reader<'a, '_> {
    fn run(&mut self) -> Result<Vec<Value>> {
        loop {
            match self.read()? {
                Event::Start(start) => self.start(&start, false)?,
                Event::Empty(start) => self.start(&start, true)?,
                Event::End(_) => self.end()?,
                Event::Eof => {
                    if self.stack.is_empty() && self.document != DocumentState::InObjs {
                        return Ok(std::mem::take(&mut self.top));
                    }
                    return Err(ClixmlError::UnexpectedEof(self.context()));
                }
                Event::Decl(_) | Event::DocType(_)
                    if self.stack.is_empty() && self.top.is_empty() && self.document == DocumentState::Bare => {}
                other => self.skip_between(self.context(), other)?,
            }
        }
    }

    /// The element the reader is in, for error messages.
    fn context(&self) -> &'static str {
        match self.stack.last() {
            Some(frame) => frame.part.element(),
            None if self.document == DocumentState::InObjs => "Objs",
            None => "#document",
        }
    }

    fn read(&mut self) -> Result<Event<'a>> {
        self.xml
            .read_event()
            .map_err(|source| ClixmlError::MalformedXml { position: self.xml.error_position(), source })
    }

    /// The next event inside the element `parent`, where the end of the input is an error.
    fn next_event(&mut self, parent: &'static str) -> Result<Event<'a>> {
        match self.read()? {
            Event::Eof => Err(ClixmlError::UnexpectedEof(parent)),
            event => Ok(event),
        }
    }

    /// Accepts what may stand between elements: whitespace, comments, processing instructions.
    fn skip_between(&self, parent: &'static str, event: Event<'a>) -> Result<()> {
        match event {
            Event::Text(text) if text.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) => Ok(()),
            Event::Comment(_) | Event::PI(_) => Ok(()),
            Event::Eof => Err(ClixmlError::UnexpectedEof(parent)),
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => {
                Err(ClixmlError::InvalidStructure(format!("unexpected text inside <{parent}>")))
            }
            Event::Decl(_) | Event::DocType(_) => {
                Err(ClixmlError::InvalidStructure(format!("unexpected declaration inside <{parent}>")))
            }
            Event::Start(start) | Event::Empty(start) => Err(unknown_tag(&start, parent)),
            Event::End(_) => Err(ClixmlError::InvalidStructure(format!("unexpected end tag inside <{parent}>"))),
        }
    }

    /// Reads up to the end tag of an element that must have no content.
    fn expect_end(&mut self, parent: &'static str) -> Result<()> {
        loop {
            match self.next_event(parent)? {
                Event::End(_) => return Ok(()),
                other => self.skip_between(parent, other)?,
            }
        }
    }

    fn attributes(&self, start: &BytesStart<'_>) -> Result<Attrs> {
        let mut attrs = Attrs::default();
        // quick-xml's duplicate check allocates for every element; only N and RefId matter here, so
        // check those two by hand.
        for attr in start.attributes().with_checks(false) {
            let attr = attr.map_err(|e| self.malformed(e.into()))?;
            let key = attr.key.local_name();
            let is_name = key.as_ref() == b"N";
            if !is_name && key.as_ref() != b"RefId" {
                continue;
            }
            if (is_name && attrs.name.is_some()) || (!is_name && attrs.ref_id.is_some()) {
                let position = usize::try_from(self.xml.buffer_position()).unwrap_or(usize::MAX);
                return Err(self.malformed(AttrError::Duplicated(position, position).into()));
            }
            let text = match self.input_str(&attr.value) {
                Some(raw) if !raw.contains('&') => Cow::Borrowed(raw),
                _ => attr.decode_and_unescape_value(self.xml.decoder()).map_err(|e| self.malformed(e))?,
            };
            if is_name {
                attrs.name = Some(match decode_string(&text) {
                    Cow::Borrowed(_) => text.into_owned(),
                    Cow::Owned(decoded) => decoded,
                });
            } else {
                attrs.ref_id = Some(RefId::new(&text));
            }
        }
        Ok(attrs)
    }

    fn malformed(&self, source: quick_xml::Error) -> ClixmlError {
        ClixmlError::MalformedXml { position: self.xml.buffer_position(), source }
    }

    fn count(&mut self, n: usize) -> Result<()> {
        self.values = self.values.saturating_add(n);
        if self.values > self.limits.max_objects {
            return Err(ClixmlError::LimitExceeded { limit: Limit::Objects, max: self.limits.max_objects });
        }
        Ok(())
    }

    fn depth_exceeded(&self) -> ClixmlError {
        ClixmlError::LimitExceeded { limit: Limit::Depth, max: self.limits.max_depth }
    }

    /// The innermost open object. Only called where one is open.
    fn frame(&mut self) -> Result<&mut Frame> {
        self.stack.last_mut().ok_or_else(|| ClixmlError::InvalidStructure("no open object".into()))
    }

    /// Dispatches a start tag (or an empty element) by where the reader is.
    fn start(&mut self, start: &BytesStart<'a>, empty: bool) -> Result<()> {
        let Some(frame) = self.stack.last_mut() else {
            return self.start_top(start, empty);
        };
        let tag = start.local_name();
        match frame.part {
            Part::Body => self.start_in_body(start, empty),
            Part::Adapted | Part::Extended if tag.as_ref() == b"MS" => self.start_property_set(start, empty),
            Part::Dictionary if tag.as_ref() == b"En" => {
                if empty {
                    return Err(entry_incomplete());
                }
                frame.part = Part::Entry;
                Ok(())
            }
            Part::Dictionary => Err(unknown_tag(start, "DCT")),
            Part::Adapted | Part::Extended | Part::Items(_) | Part::Entry => self.start_value(start, empty),
        }
    }

    fn start_top(&mut self, start: &BytesStart<'a>, empty: bool) -> Result<()> {
        if self.document == DocumentState::AfterObjs {
            return Err(ClixmlError::InvalidStructure("content after </Objs>".into()));
        }
        if start.local_name().as_ref() != b"Objs" {
            return self.start_value(start, empty);
        }
        if self.document != DocumentState::Bare || !self.top.is_empty() {
            return Err(ClixmlError::InvalidStructure("<Objs> must be the only top-level element".into()));
        }
        self.document = if empty { DocumentState::AfterObjs } else { DocumentState::InObjs };
        Ok(())
    }

    /// A child of `<Obj>` itself.
    fn start_in_body(&mut self, start: &BytesStart<'a>, empty: bool) -> Result<()> {
        let tag = start.local_name();
        match tag.as_ref() {
            b"TN" | b"TNRef" => {
                once(self.frame()?.obj.type_names.is_none(), "type names")?;
                let list = if tag.as_ref() == b"TN" {
                    self.type_names(start, empty)?
                } else {
                    self.type_names_ref(start, empty)?
                };
                self.frame()?.obj.type_names = Some(list);
            }
            b"ToString" => {
                once(self.frame()?.obj.to_string.is_none(), "<ToString>")?;
                let text = self.text(empty, "ToString")?;
                let text = self.decoded_text(text);
                self.frame()?.obj.to_string = Some(text);
            }
            b"Props" | b"MS" if !empty => {
                let mark = self.pending_props.len();
                let frame = self.frame()?;
                frame.part = if tag.as_ref() == b"MS" { Part::Extended } else { Part::Adapted };
                frame.mark = mark;
            }
            b"Props" | b"MS" => {}
            b"DCT" => {
                let mark = self.pending_entries.len();
                let frame = self.frame()?;
                once(frame.obj.container.is_none(), "container")?;
                if empty {
                    frame.obj.container = Some(Container::Dictionary(Vec::new()));
                } else {
                    frame.part = Part::Dictionary;
                    frame.mark = mark;
                }
            }
            other => match Sequence::from_tag(other) {
                Some(sequence) => {
                    let mark = self.pending_items.len();
                    let frame = self.frame()?;
                    once(frame.obj.container.is_none(), "container")?;
                    if empty {
                        frame.obj.container = Some(sequence.container(Vec::new()));
                    } else {
                        frame.part = Part::Items(sequence);
                        frame.mark = mark;
                    }
                }
                // The underlying value: a primitive (extended primitives, enums) or, as Windows writes
                // for an object wrapping another object, a nested <Obj> or <Ref>.
                None => {
                    once(self.frame()?.obj.value.is_none(), "underlying value")?;
                    self.start_value(start, empty)?;
                }
            },
        }
        Ok(())
    }

    /// A value element (primitive, `<Obj>` or `<Ref>`) in any place that takes one.
    fn start_value(&mut self, start: &BytesStart<'a>, empty: bool) -> Result<()> {
        let tag = ValueTag::from_tag(start.local_name().as_ref()).ok_or_else(|| unknown_tag(start, self.context()))?;
        let attrs = self.attributes(start)?;
        self.count(1)?;
        let value = match tag {
            ValueTag::Prim(prim) => self.primitive(prim, empty)?,
            ValueTag::Ref => self.reference(attrs.ref_id, empty)?,
            ValueTag::Obj => {
                self.push(FrameKind::Object(attrs.ref_id), Part::Body, attrs.name)?;
                return if empty { self.finish() } else { Ok(()) };
            }
        };
        self.deliver(attrs.name, value)
    }

    /// A property set, `<MS N="set">` inside `<MS>` or `<Props>`.
    fn start_property_set(&mut self, start: &BytesStart<'a>, empty: bool) -> Result<()> {
        let name = self.attributes(start)?.name.ok_or_else(|| missing_name(self.context()))?;
        self.count(1)?;
        self.push(FrameKind::PropertySet, Part::Extended, Some(name))?;
        if empty { self.finish() } else { Ok(()) }
    }

    /// Opens an object one level deeper.
    fn push(&mut self, kind: FrameKind, part: Part, name: Option<String>) -> Result<()> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(self.depth_exceeded());
        }
        let deepest_before = std::mem::replace(&mut self.deepest, self.stack.len() + 1);
        self.stack.push(Frame {
            kind,
            part,
            name,
            obj: PsObject::default(),
            mark: self.pending_props.len(),
            key: None,
            value: None,
            values_before: self.values,
            deepest_before,
        });
        Ok(())
    }

    /// Closes the innermost object and hands it to its parent.
    fn finish(&mut self) -> Result<()> {
        let level = self.stack.len();
        let mut frame = self.stack.pop().ok_or_else(|| ClixmlError::InvalidStructure("no open object".into()))?;
        if matches!(frame.kind, FrameKind::PropertySet) {
            frame.obj.extended.extend(self.pending_props.drain(frame.mark..));
        }
        // The object's own element was counted before it was pushed.
        let size = self.values - frame.values_before + 1;
        let height = self.deepest + 1 - level;
        self.deepest = self.deepest.max(frame.deepest_before);
        let obj = Arc::new(frame.obj);
        if let FrameKind::Object(Some(id)) = frame.kind {
            self.objects.insert(id, Shared { obj: Arc::clone(&obj), size, height });
        }
        self.deliver(frame.name, Value::Object(obj))
    }

    /// Puts a finished value where the reader is.
    fn deliver(&mut self, name: Option<String>, value: Value) -> Result<()> {
        let Some(frame) = self.stack.last_mut() else {
            self.top.push(value);
            return Ok(());
        };
        match frame.part {
            Part::Body => frame.obj.value = Some(value),
            Part::Adapted => self.pending_props.push((name.ok_or_else(|| missing_name("Props"))?, value)),
            Part::Extended => self.pending_props.push((name.ok_or_else(|| missing_name("MS"))?, value)),
            Part::Items(_) => self.pending_items.push(value),
            Part::Entry => {
                let slot = match name.as_deref() {
                    Some("Key") => &mut frame.key,
                    Some("Value") => &mut frame.value,
                    _ if frame.key.is_none() => &mut frame.key,
                    _ => &mut frame.value,
                };
                if slot.is_some() {
                    return Err(ClixmlError::InvalidStructure("<En> holds more than one key or value".into()));
                }
                *slot = Some(value);
            }
            Part::Dictionary => return Err(ClixmlError::InvalidStructure("value outside <En> in <DCT>".into())),
        }
        Ok(())
    }

    /// An end tag; quick-xml has checked that it closes the element that is open.
    fn end(&mut self) -> Result<()> {
        let Some(frame) = self.stack.last_mut() else {
            if self.document == DocumentState::InObjs {
                self.document = DocumentState::AfterObjs;
                return Ok(());
            }
            return Err(ClixmlError::InvalidStructure("unexpected end tag at the top level".into()));
        };
        let mark = frame.mark;
        match frame.part {
            Part::Body => return self.finish(),
            Part::Extended if matches!(frame.kind, FrameKind::PropertySet) => return self.finish(),
            // Appending keeps every property if a sender repeats the section.
            Part::Adapted => frame.obj.adapted.extend(self.pending_props.drain(mark..)),
            Part::Extended => frame.obj.extended.extend(self.pending_props.drain(mark..)),
            Part::Items(sequence) => {
                frame.obj.container = Some(sequence.container(self.pending_items.drain(mark..).collect()));
            }
            Part::Dictionary => {
                frame.obj.container = Some(Container::Dictionary(self.pending_entries.drain(mark..).collect()));
            }
            Part::Entry => {
                let (Some(key), Some(value)) = (frame.key.take(), frame.value.take()) else {
                    return Err(entry_incomplete());
                };
                self.pending_entries.push((key, value));
                frame.part = Part::Dictionary;
                return Ok(());
            }
        }
        frame.part = Part::Body;
        Ok(())
    }

    fn type_names(&mut self, start: &BytesStart<'a>, empty: bool) -> Result<Arc<[String]>> {
        let id = self.attributes(start)?.ref_id;
        let mut names = Vec::new();
        if !empty {
            loop {
                let (start, empty) = match self.next_event("TN")? {
                    Event::Start(start) => (start, false),
                    Event::Empty(start) => (start, true),
                    Event::End(_) => break,
                    other => {
                        self.skip_between("TN", other)?;
                        continue;
                    }
                };
                if start.local_name().as_ref() != b"T" {
                    return Err(unknown_tag(&start, "TN"));
                }
                self.count(1)?;
                let text = self.text(empty, "T")?;
                names.push(self.decoded_text(text));
            }
        }
        let list: Arc<[String]> = names.into();
        if let Some(id) = id {
            self.type_lists.insert(id, Arc::clone(&list));
        }
        Ok(list)
    }

    fn type_names_ref(&mut self, start: &BytesStart<'a>, empty: bool) -> Result<Arc<[String]>> {
        let id = self.attributes(start)?.ref_id;
        if !empty {
            self.expect_end("TNRef")?;
        }
        let id = id.ok_or_else(|| ClixmlError::InvalidStructure("<TNRef> without RefId".into()))?;
        match self.type_lists.get(&id) {
            Some(list) => Ok(Arc::clone(list)),
            None => Err(ClixmlError::UndefinedTypeNameRef { id: id.text() }),
        }
    }

    fn reference(&mut self, ref_id: Option<RefId>, empty: bool) -> Result<Value> {
        if !empty {
            self.expect_end("Ref")?;
        }
        let id = ref_id.ok_or_else(|| ClixmlError::InvalidStructure("<Ref> without RefId".into()))?;
        let Some(shared) = self.objects.get(&id) else {
            let open = self.stack.iter().any(|f| matches!(&f.kind, FrameKind::Object(Some(open)) if *open == id));
            return Err(if open {
                ClixmlError::CyclicRef { id: id.text() }
            } else {
                ClixmlError::UndefinedRef { id: id.text() }
            });
        };
        let (obj, size, height) = (Arc::clone(&shared.obj), shared.size, shared.height);
        // The <Ref> element itself was already counted as one value.
        self.count(size - 1)?;
        let reach = self.stack.len() + height;
        if reach > self.limits.max_depth {
            return Err(self.depth_exceeded());
        }
        self.deepest = self.deepest.max(reach);
        Ok(Value::Object(obj))
    }

    /// Collects the character data of a primitive element up to its end tag.
    fn text(&mut self, empty: bool, tag: &'static str) -> Result<Text<'a>> {
        let mut first: Option<Cow<'a, str>> = None;
        let mut joined = false;
        if empty {
            return Ok(Text::Input(Cow::Borrowed("")));
        }
        loop {
            let piece = match self.next_event(tag)? {
                Event::Text(text) => match self.borrowed_text(&text) {
                    Some(piece) => piece,
                    None => text.xml10_content().map_err(|e| self.malformed(e.into()))?,
                },
                Event::CData(data) => data.xml10_content().map_err(|e| self.malformed(e.into()))?,
                Event::GeneralRef(reference) => {
                    let c = resolve_reference(&reference)?;
                    self.join(&mut first, &mut joined);
                    self.scratch.push(c);
                    continue;
                }
                Event::End(_) => break,
                Event::Comment(_) | Event::PI(_) => continue,
                Event::Start(start) | Event::Empty(start) => {
                    let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                    return Err(ClixmlError::InvalidStructure(format!("element <{name}> inside <{tag}>")));
                }
                Event::Decl(_) | Event::DocType(_) | Event::Eof => {
                    return Err(ClixmlError::InvalidStructure(format!("unexpected markup inside <{tag}>")));
                }
            };
            if !joined && first.is_none() {
                first = Some(piece);
            } else {
                self.join(&mut first, &mut joined);
                self.scratch.push_str(&piece);
            }
        }
        Ok(if joined { Text::Scratch } else { Text::Input(first.unwrap_or(Cow::Borrowed(""))) })
    }

    /// The input slice that quick-xml handed out, as `&'a str`, without validating its UTF-8 again.
    ///
    /// quick-xml borrows event contents from the input, so the slice's address gives its offset in
    /// `self.input`; distinct allocations never overlap, so anything else falls outside the range and
    /// gives `None`, as does a slice that does not start and end on character boundaries.
    fn input_str(&self, bytes: &[u8]) -> Option<&'a str> {
        let offset = bytes.as_ptr().addr().checked_sub(self.input.as_ptr().addr())?;
        self.input.get(offset..offset.checked_add(bytes.len())?)
    }

    /// A text event's content with XML end-of-line normalization, borrowed from the input when possible.
    fn borrowed_text(&self, text: &BytesText<'a>) -> Option<Cow<'a, str>> {
        let s = self.input_str(text)?;
        if !s.contains('\r') {
            return Some(Cow::Borrowed(s));
        }
        // XML turns CR LF and lone CR into LF.
        Some(Cow::Owned(s.replace("\r\n", "\n").replace('\r', "\n")))
    }

    /// Switches text collection over to `scratch`.
    fn join(&mut self, first: &mut Option<Cow<'a, str>>, joined: &mut bool) {
        if !*joined {
            self.scratch.clear();
            if let Some(first) = first.take() {
                self.scratch.push_str(&first);
            }
            *joined = true;
        }
    }

    fn text_str<'t>(&'t self, text: &'t Text<'a>) -> &'t str {
        match text {
            Text::Input(s) => s,
            Text::Scratch => &self.scratch,
        }
    }

    /// The text with `_x` escapes decoded, as an owned string.
    fn decoded_text(&self, text: Text<'a>) -> String {
        match text {
            Text::Input(s) => match decode_string(&s) {
                Cow::Borrowed(_) => s.into_owned(),
                Cow::Owned(decoded) => decoded,
            },
            Text::Scratch => decode_string(&self.scratch).into_owned(),
        }
    }

    fn primitive(&mut self, prim: Prim, empty: bool) -> Result<Value> {
        if prim == Prim::Nil {
            if !empty {
                self.expect_end("Nil")?;
            }
            return Ok(Value::Nil);
        }
        let text = self.text(empty, prim.tag())?;
        match prim {
            Prim::S => return Ok(Value::Str(self.decoded_text(text))),
            Prim::URI => return Ok(Value::Uri(self.decoded_text(text))),
            Prim::XD => return Ok(Value::XmlDocument(self.decoded_text(text))),
            Prim::SBK => return Ok(Value::ScriptBlock(self.decoded_text(text))),
            _ => {}
        }
        parse_primitive(prim, self.text_str(&text))
    }
}

fn unknown_tag(start: &BytesStart<'_>, parent: &'static str) -> ClixmlError {
    ClixmlError::UnknownTag { tag: truncate(&String::from_utf8_lossy(start.name().as_ref())), parent }
}

fn once(free: bool, what: &str) -> Result<()> {
    if free { Ok(()) } else { Err(ClixmlError::InvalidStructure(format!("more than one {what} in <Obj>"))) }
}

/// Keeps error messages short whatever the input.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn resolve_reference(reference: &BytesRef<'_>) -> Result<char> {
    let name = String::from_utf8_lossy(reference);
    let c = match name.as_ref() {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => reference.resolve_char_ref().ok().flatten(),
    };
    c.ok_or_else(|| ClixmlError::InvalidEscape { reference: truncate(&name) })
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Parses a primitive's text; XML whitespace around numbers is ignored as `XmlConvert` does.
fn parse_primitive(prim: Prim, text: &str) -> Result<Value> {
    let trimmed = text.trim_matches(is_xml_space);
    let invalid = || ClixmlError::InvalidPrimitive {
        tag: prim.tag(),
        // SecureString text is never echoed: under protocol 2.4 it is the plain password.
        text: if prim == Prim::SS { "<redacted>".into() } else { truncate(text) },
    };
    let value = match prim {
        Prim::C => trimmed.parse().map(Value::Char).ok(),
        Prim::B => match trimmed {
            "true" | "1" => Some(Value::Bool(true)),
            "false" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        Prim::By => trimmed.parse().map(Value::U8).ok(),
        Prim::SB => trimmed.parse().map(Value::I8).ok(),
        Prim::U16 => trimmed.parse().map(Value::U16).ok(),
        Prim::I16 => trimmed.parse().map(Value::I16).ok(),
        Prim::U32 => trimmed.parse().map(Value::U32).ok(),
        Prim::I32 => trimmed.parse().map(Value::I32).ok(),
        Prim::U64 => trimmed.parse().map(Value::U64).ok(),
        Prim::I64 => trimmed.parse().map(Value::I64).ok(),
        Prim::Sg => parse_float(trimmed).map(Value::Float),
        Prim::Db => parse_float(trimmed).map(Value::Double),
        Prim::DT => checked_text(text, trimmed, |b| b.is_ascii_digit() || b"-:T.+Z".contains(&b)).map(Value::DateTime),
        Prim::TS => {
            checked_text(text, trimmed, |b| b.is_ascii_digit() || b"-PYMWDTHS.".contains(&b)).map(Value::Duration)
        }
        Prim::D => checked_text(text, trimmed, |b| b.is_ascii_digit() || b"+-.".contains(&b)).map(Value::Decimal),
        Prim::Version => checked_text(text, trimmed, |b| b.is_ascii_digit() || b == b'.').map(Value::Version),
        Prim::BA => decode_base64(trimmed).map(Value::Bytes),
        Prim::SS => decode_base64(trimmed).map(Value::SecureString),
        Prim::G => uuid::Uuid::try_parse(trimmed).ok().map(Value::Guid),
        // Strings and Nil are handled by the caller.
        Prim::Nil | Prim::S | Prim::URI | Prim::XD | Prim::SBK => None,
    };
    value.ok_or_else(invalid)
}

/// Parses `Sg` / `Db` text: `INF`, `-INF`, `NaN`, or a decimal number with optional exponent.
fn parse_float<F: std::str::FromStr + From<f32>>(text: &str) -> Option<F> {
    match text {
        "INF" => Some(F::from(f32::INFINITY)),
        "-INF" => Some(F::from(f32::NEG_INFINITY)),
        "NaN" => Some(F::from(f32::NAN)),
        // Rust also reads "inf" and "nan" spellings that XmlConvert does not write; refuse them.
        _ if text.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) => text.parse().ok(),
        _ => None,
    }
}

/// Keeps `text` exactly as written if its trimmed form is non-empty and made of allowed bytes.
fn checked_text(text: &str, trimmed: &str, allowed: impl Fn(u8) -> bool) -> Option<String> {
    (!trimmed.is_empty() && trimmed.bytes().all(allowed)).then(|| text.to_owned())
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    if text.bytes().any(|b| b.is_ascii_whitespace()) {
        // Line-wrapped base64 is legal in xs:base64Binary.
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        return BASE64.decode(compact).ok();
    }
    BASE64.decode(text).ok()
}

fn missing_name(parent: &'static str) -> ClixmlError {
    ClixmlError::InvalidStructure(format!("property without N attribute inside <{parent}>"))
}

fn entry_incomplete() -> ClixmlError {
    ClixmlError::InvalidStructure("<En> needs a key and a value".into())
}
