//! The out-of-process transport's framing (MS-PSRP 2.2.3.x `OutOfProc`; PROTOCOL.md §D),
//! sans-IO: the packets PowerShell exchanges over a byte stream instead of WS-Man, one XML
//! element per line, as `pwsh -s` (server mode) and the `powershell` SSH subsystem speak it.
//!
//! ```text
//! <Data Stream='Default' PSGuid='00000000-0000-0000-0000-000000000000'>BASE64</Data>
//! <DataAck PSGuid='…' />  <Command PSGuid='…' />  <CommandAck PSGuid='…' />
//! <Signal PSGuid='…' />   <SignalAck PSGuid='…' /> <Close PSGuid='…' />  <CloseAck PSGuid='…' />
//! ```
//!
//! The base64 of a `Data` packet holds whole PSRP fragments ([`super::fragment`]); the all-zero
//! GUID names the runspace pool, any other GUID the pipeline with that id. PowerShell writes
//! GUIDs in lowercase `D` format and single-quoted attributes; this reader takes GUIDs in any
//! case, either quote, attributes in any order and `\r\n` line ends, and nothing else: every
//! other element, attribute, or a line longer than the limit is a typed
//! [`Error::Protocol`](crate::Error) that says what was wrong.
//!
//! Reference: [MS-PSRP 3.1.5.3.x, OutOfProcess](https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-psrp/)
//! and PowerShell's `OutOfProcessUtils` (`CreateDataPacket`, `CreatePSGuidPacket`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{Error, Result};

/// PowerShell's fragment size on the out-of-process transport, header included
/// (`BaseTransportManager.DefaultFragmentSize`, 32 KiB).
pub const DEFAULT_FRAGMENT_SIZE: usize = 32 << 10;

/// What a line holds besides its base64: the element names, attributes and the line end.
pub const LINE_OVERHEAD: usize = 256;

/// The stream a `Data` packet travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataStream {
    /// Everything but host responses (WS-Man's `stdin`).
    Default,
    /// Host responses (WS-Man's `pr`).
    PromptResponse,
}

impl DataStream {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            DataStream::Default => "Default",
            DataStream::PromptResponse => "PromptResponse",
        }
    }

    /// The out-of-process stream of a WS-Man input stream.
    pub fn of(stream: super::InputStream) -> Self {
        match stream {
            super::InputStream::Stdin => DataStream::Default,
            super::InputStream::PromptResponse => DataStream::PromptResponse,
        }
    }
}

/// The kinds of packet that carry only a GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuidPacket {
    /// The server took a `Data` packet (client flow control: one `Data` per GUID in flight).
    DataAck,
    /// The client creates a pipeline.
    Command,
    /// The server made the pipeline's transport.
    CommandAck,
    /// The client stops a pipeline.
    Signal,
    /// The server stopped it.
    SignalAck,
    /// The client closes a pipeline, or (all-zero GUID) the session.
    Close,
    /// The server closed it.
    CloseAck,
}

impl GuidPacket {
    const ALL: [GuidPacket; 7] = [
        GuidPacket::DataAck,
        GuidPacket::Command,
        GuidPacket::CommandAck,
        GuidPacket::Signal,
        GuidPacket::SignalAck,
        GuidPacket::Close,
        GuidPacket::CloseAck,
    ];

    /// The element name.
    pub fn name(self) -> &'static str {
        match self {
            GuidPacket::DataAck => "DataAck",
            GuidPacket::Command => "Command",
            GuidPacket::CommandAck => "CommandAck",
            GuidPacket::Signal => "Signal",
            GuidPacket::SignalAck => "SignalAck",
            GuidPacket::Close => "Close",
            GuidPacket::CloseAck => "CloseAck",
        }
    }

    /// Whether a server sends this kind (the acknowledgements); a client sends the others.
    pub fn from_server(self) -> bool {
        matches!(self, GuidPacket::DataAck | GuidPacket::CommandAck | GuidPacket::SignalAck | GuidPacket::CloseAck)
    }
}

/// One out-of-process packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// PSRP fragments for the pool (nil GUID) or a pipeline.
    Data {
        /// The stream.
        stream: DataStream,
        /// The pool (nil) or the pipeline.
        guid: uuid::Uuid,
        /// Whole PSRP fragments, decoded from base64.
        data: Vec<u8>,
    },
    /// Any other packet: its kind and GUID.
    Guid(GuidPacket, uuid::Uuid),
}

impl Packet {
    /// The GUID the packet names.
    pub fn guid(&self) -> uuid::Uuid {
        match self {
            Packet::Data { guid, .. } | Packet::Guid(_, guid) => *guid,
        }
    }

    /// The packet as one line, `\n` included.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Packet::Data { stream, guid, data } => encode_data(*stream, *guid, &[data]),
            Packet::Guid(kind, guid) => encode_guid(*kind, *guid),
        }
    }

    /// Whether a server sends this packet.
    pub fn from_server(&self) -> bool {
        match self {
            Packet::Data { .. } => true,
            Packet::Guid(kind, _) => kind.from_server(),
        }
    }
}

/// A `Data` line whose base64 is written from `pieces` (fragment headers and message bytes
/// where they lie) laid end to end, `\n` included.
pub fn encode_data(stream: DataStream, guid: uuid::Uuid, pieces: &[&[u8]]) -> Vec<u8> {
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len.div_ceil(3) * 4 + 100);
    out.extend_from_slice(b"<Data Stream='");
    out.extend_from_slice(stream.name().as_bytes());
    out.extend_from_slice(b"' PSGuid='");
    out.extend_from_slice(guid.as_hyphenated().to_string().as_bytes());
    out.extend_from_slice(b"'>");
    // Base64 of the concatenation: whole 3-byte groups across piece boundaries.
    let mut carry: Vec<u8> = Vec::with_capacity(3);
    let mut text = String::new();
    for piece in pieces {
        let mut piece: &[u8] = piece;
        if !carry.is_empty() {
            let take = (3 - carry.len()).min(piece.len());
            carry.extend_from_slice(&piece[..take]);
            piece = &piece[take..];
            if carry.len() < 3 {
                continue;
            }
            B64.encode_string(&carry, &mut text);
            carry.clear();
        }
        let whole = piece.len() / 3 * 3;
        B64.encode_string(&piece[..whole], &mut text);
        carry.extend_from_slice(&piece[whole..]);
    }
    B64.encode_string(&carry, &mut text);
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"</Data>\n");
    out
}

/// A GUID-only packet as one line, `\n` included.
pub fn encode_guid(kind: GuidPacket, guid: uuid::Uuid) -> Vec<u8> {
    format!("<{} PSGuid='{}' />\n", kind.name(), guid.as_hyphenated()).into_bytes()
}

/// The longest line (line end excluded) of a `Data` packet carrying `max_data` bytes.
pub fn max_line_for(max_data: usize) -> usize {
    max_data.div_ceil(3) * 4 + LINE_OVERHEAD
}

/// Why a line was refused, shortened and escaped for an error message.
fn shown(line: &[u8]) -> String {
    const SHOW: usize = 60;
    let text = String::from_utf8_lossy(&line[..line.len().min(SHOW)]);
    let mut out = crate::text::printable(&text).into_owned();
    if line.len() > SHOW {
        out.push('…');
    }
    out
}

fn bad(line: &[u8], why: impl std::fmt::Display) -> Error {
    Error::protocol(format!("out-of-process packet {why}: \"{}\"", shown(line)))
}

/// Reads one packet from one line (without its line end).
pub fn parse_line(line: &[u8]) -> Result<Packet> {
    let text = std::str::from_utf8(line).map_err(|_| bad(line, "is not UTF-8"))?;
    let rest = text.strip_prefix('<').ok_or_else(|| bad(line, "does not start with '<'"))?;
    let name_end = rest.find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/').unwrap_or(rest.len());
    let name = &rest[..name_end];
    let mut rest = &rest[name_end..];
    let mut attributes: Vec<(&str, &str)> = Vec::new();
    // Attributes up to '>' or '/>'.
    let self_closing = loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
        if let Some(r) = rest.strip_prefix("/>") {
            rest = r;
            break true;
        }
        if let Some(r) = rest.strip_prefix('>') {
            rest = r;
            break false;
        }
        let eq = rest.find('=').ok_or_else(|| bad(line, "has a malformed attribute"))?;
        let attr = rest[..eq].trim_end_matches(|c: char| c.is_ascii_whitespace());
        if attr.is_empty() || !attr.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad(line, "has a malformed attribute"));
        }
        let after = rest[eq + 1..].trim_start_matches(|c: char| c.is_ascii_whitespace());
        let quote = after.chars().next().filter(|q| *q == '\'' || *q == '"');
        let quote = quote.ok_or_else(|| bad(line, format!("has attribute {attr} without quotes")))?;
        let body = &after[1..];
        let close =
            body.find(quote).ok_or_else(|| bad(line, format!("has attribute {attr} without its closing quote")))?;
        if attributes.iter().any(|(a, _)| *a == attr) {
            return Err(bad(line, format!("repeats attribute {attr}")));
        }
        attributes.push((attr, &body[..close]));
        rest = &body[close + 1..];
    };
    let guid_of = |attributes: &[(&str, &str)]| -> Result<uuid::Uuid> {
        let value = attributes
            .iter()
            .find(|(a, _)| *a == "PSGuid")
            .map(|(_, v)| *v)
            .ok_or_else(|| bad(line, format!("<{name}> has no PSGuid")))?;
        // The hyphenated form only, in either case.
        if value.len() != 36 {
            return Err(bad(line, format!("<{name}> has a PSGuid that is not a GUID")));
        }
        uuid::Uuid::try_parse(value).map_err(|_| bad(line, format!("<{name}> has a PSGuid that is not a GUID")))
    };
    if name == "Data" {
        if self_closing {
            return Err(bad(line, "<Data> has no content"));
        }
        if attributes.len() != 2 {
            return Err(bad(line, "<Data> must have exactly the attributes Stream and PSGuid"));
        }
        let stream = match attributes.iter().find(|(a, _)| *a == "Stream").map(|(_, v)| *v) {
            Some("Default") => DataStream::Default,
            Some("PromptResponse") => DataStream::PromptResponse,
            Some(_) => return Err(bad(line, "<Data> names an unknown Stream")),
            None => return Err(bad(line, "<Data> has no Stream")),
        };
        let guid = guid_of(&attributes)?;
        let end = rest.find('<').ok_or_else(|| bad(line, "<Data> is not closed"))?;
        if rest[end..].trim_end_matches(|c: char| c.is_ascii_whitespace()) != "</Data>" {
            return Err(bad(line, "<Data> is not closed by </Data>"));
        }
        let data = B64.decode(rest[..end].trim()).map_err(|_| bad(line, "<Data> holds invalid base64"))?;
        return Ok(Packet::Data { stream, guid, data });
    }
    let kind = GuidPacket::ALL
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| bad(line, format!("has an unknown element <{}>", crate::text::printable(name))))?;
    if !self_closing {
        return Err(bad(line, format!("<{name}> must be an empty element")));
    }
    if !rest.trim_end_matches(|c: char| c.is_ascii_whitespace()).is_empty() {
        return Err(bad(line, format!("has text after <{name} />")));
    }
    if attributes.len() != 1 {
        return Err(bad(line, format!("<{name}> must have exactly the attribute PSGuid")));
    }
    Ok(Packet::Guid(kind, guid_of(&attributes)?))
}

/// Incremental reader of the server's packets: bytes in as they arrive, packets out once their
/// line is complete. A line is bounded (`max_line` bytes); the buffer never holds more than one
/// line beyond what was handed out. Client-to-server packets (`Command`, `Signal`, `Close`)
/// from the server are refused.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_line: usize,
    lines: u64,
}

impl Decoder {
    /// A decoder for a server's packets whose `Data` carries at most `max_data` bytes.
    pub fn new(max_data: usize) -> Self {
        Self { buf: Vec::new(), max_line: max_line_for(max_data), lines: 0 }
    }

    /// The longest line accepted, line end excluded.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Lines read so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Whether bytes of an unfinished line are held.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Takes bytes and returns the packets whose lines they completed, in order. After an
    /// error the decoder must not be used again.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<Packet>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    if self.buf.len() + i > self.max_line + 1 {
                        return Err(self.too_long());
                    }
                    self.buf.extend_from_slice(&bytes[..i]);
                    bytes = &bytes[i + 1..];
                    let line = std::mem::take(&mut self.buf);
                    out.push(self.packet(&line)?);
                }
                None => {
                    if self.buf.len() + bytes.len() > self.max_line + 1 {
                        return Err(self.too_long());
                    }
                    self.buf.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
        }
        Ok(out)
    }

    /// The end of the stream: an unfinished line is an error.
    pub fn finish(&self) -> Result<()> {
        if self.buf.is_empty() { Ok(()) } else { Err(bad(&self.buf, "was cut off by the end of the stream")) }
    }

    fn too_long(&self) -> Error {
        Error::protocol(format!(
            "out-of-process line {} is longer than {} bytes (starts \"{}\")",
            self.lines + 1,
            self.max_line,
            shown(&self.buf)
        ))
    }

    fn packet(&mut self, line: &[u8]) -> Result<Packet> {
        self.lines += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.max_line {
            return Err(self.too_long());
        }
        if line.is_empty() {
            return Err(Error::protocol(format!("out-of-process line {} is empty", self.lines)));
        }
        let packet = parse_line(line)?;
        if let Packet::Guid(kind, _) = &packet
            && !kind.from_server()
        {
            return Err(bad(line, format!("<{}> is sent by clients, not servers", kind.name())));
        }
        Ok(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: &str = "5b1be6c6-ecfa-4ba8-806b-8dd7c290a0fa";

    fn pid() -> uuid::Uuid {
        uuid::Uuid::parse_str(PID).unwrap()
    }

    #[test]
    fn encodes_what_powershell_writes() {
        let nil = uuid::Uuid::nil();
        assert_eq!(
            Packet::Data { stream: DataStream::Default, guid: nil, data: vec![0, 1] }.encode(),
            b"<Data Stream='Default' PSGuid='00000000-0000-0000-0000-000000000000'>AAE=</Data>\n"
        );
        assert_eq!(encode_guid(GuidPacket::Close, pid()), format!("<Close PSGuid='{PID}' />\n").into_bytes());
    }

    #[test]
    fn data_from_pieces_equals_data_from_the_whole() {
        let whole: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for cuts in [vec![1, 2, 3], vec![0, 5, 500], vec![999], vec![2, 4, 7, 8, 11]] {
            let mut pieces = Vec::new();
            let mut at = 0;
            for c in cuts {
                pieces.push(&whole[at..c]);
                at = c;
            }
            pieces.push(&whole[at..]);
            assert_eq!(
                encode_data(DataStream::PromptResponse, pid(), &pieces),
                encode_data(DataStream::PromptResponse, pid(), &[&whole])
            );
        }
    }

    #[test]
    fn reads_guids_in_any_case_either_quote_and_any_attribute_order() {
        let upper = PID.to_uppercase();
        let p = parse_line(format!("<CloseAck PSGuid=\"{upper}\"/>").as_bytes()).unwrap();
        assert_eq!(p, Packet::Guid(GuidPacket::CloseAck, pid()));
        let p = parse_line(format!("<Data PSGuid='{upper}' Stream='Default'>AAE=</Data>").as_bytes()).unwrap();
        assert_eq!(p, Packet::Data { stream: DataStream::Default, guid: pid(), data: vec![0, 1] });
    }

    #[test]
    fn refuses_garbage_naming_what_was_wrong() {
        let cases: &[(&str, &str)] = &[
            ("hello", "does not start with '<'"),
            ("<Foo PSGuid='00000000-0000-0000-0000-000000000000' />", "unknown element <Foo>"),
            ("<DataAck />", "exactly the attribute PSGuid"),
            ("<DataAck PSGuid='nope' />", "not a GUID"),
            ("<DataAck PSGuid='00000000000000000000000000000000' />", "not a GUID"),
            ("<DataAck PSGuid='00000000-0000-0000-0000-000000000000' X='1' />", "exactly the attribute PSGuid"),
            ("<DataAck PSGuid='00000000-0000-0000-0000-000000000000'>", "must be an empty element"),
            ("<DataAck PSGuid='00000000-0000-0000-0000-000000000000' /> x", "text after"),
            ("<DataAck PSGuid=00000000-0000-0000-0000-000000000000 />", "without quotes"),
            ("<Data Stream='Default' PSGuid='00000000-0000-0000-0000-000000000000'>AA!=</Data>", "invalid base64"),
            ("<Data Stream='Other' PSGuid='00000000-0000-0000-0000-000000000000'>AAE=</Data>", "unknown Stream"),
            ("<Data Stream='Default' PSGuid='00000000-0000-0000-0000-000000000000'>AAE=", "not closed"),
            ("<Data Stream='Default' PSGuid='00000000-0000-0000-0000-000000000000'>AAE=</Close>", "closed by"),
            ("<Data PSGuid='00000000-0000-0000-0000-000000000000'>AAE=</Data>", "exactly the attributes"),
            ("<Data Stream='Default' Stream='Default'>AAE=</Data>", "repeats attribute"),
        ];
        for (line, why) in cases {
            let e = parse_line(line.as_bytes()).unwrap_err();
            assert!(matches!(e, Error::Protocol(_)), "{line}: {e}");
            assert!(e.to_string().contains(why), "{line}: {e}");
        }
        assert!(parse_line(&[b'<', 0xff, 0xfe]).unwrap_err().to_string().contains("not UTF-8"));
    }

    #[test]
    fn decoder_reassembles_lines_split_anywhere() {
        let lines = [
            encode_guid(GuidPacket::DataAck, uuid::Uuid::nil()),
            encode_data(DataStream::Default, pid(), &[&[7u8; 100]]),
            b"<CommandAck PSGuid='5B1BE6C6-ECFA-4BA8-806B-8DD7C290A0FA' />\r\n".to_vec(),
        ];
        let all = lines.concat();
        for step in [1, 2, 7, 64, all.len()] {
            let mut d = Decoder::new(1024);
            let mut got = Vec::new();
            for chunk in all.chunks(step) {
                got.extend(d.feed(chunk).unwrap());
            }
            d.finish().unwrap();
            assert_eq!(got.len(), 3);
            assert_eq!(got[0], Packet::Guid(GuidPacket::DataAck, uuid::Uuid::nil()));
            assert_eq!(got[1], Packet::Data { stream: DataStream::Default, guid: pid(), data: vec![7; 100] });
            assert_eq!(got[2], Packet::Guid(GuidPacket::CommandAck, pid()));
            assert_eq!(d.lines(), 3);
        }
    }

    #[test]
    fn decoder_bounds_the_line_and_holds_no_more() {
        let mut d = Decoder::new(300);
        let max = d.max_line();
        assert_eq!(max, 400 + LINE_OVERHEAD);
        // An endless line without a newline is refused once past the limit, fed in pieces.
        let mut fed = 0;
        let err = loop {
            match d.feed(&[b'A'; 97]) {
                Ok(p) => assert!(p.is_empty()),
                Err(e) => break e,
            }
            fed += 97;
            assert!(fed <= max + 1, "the decoder held {fed} bytes");
        };
        assert!(err.to_string().contains("longer than"), "{err}");
        // A data line at the limit passes; one byte of data more does not.
        let fits = encode_data(DataStream::Default, pid(), &[&[1u8; 300]]);
        assert_eq!(Decoder::new(300).feed(&fits).unwrap().len(), 1);
        let mut big = Decoder::new(300);
        let over = encode_data(DataStream::Default, pid(), &[&[1u8; 300 + 3 * LINE_OVERHEAD / 4]]);
        assert!(big.feed(&over).is_err());
    }

    #[test]
    fn decoder_refuses_client_packets_empty_lines_and_a_cut_line() {
        let mut d = Decoder::new(100);
        let e = d.feed(&encode_guid(GuidPacket::Command, pid())).unwrap_err();
        assert!(e.to_string().contains("sent by clients"), "{e}");
        let e = Decoder::new(100).feed(b"\n").unwrap_err();
        assert!(e.to_string().contains("line 1 is empty"), "{e}");
        let mut d = Decoder::new(100);
        assert!(d.feed(b"<DataAck PSGuid=").unwrap().is_empty());
        assert!(d.has_partial());
        assert!(d.finish().unwrap_err().to_string().contains("cut off"));
    }
}
