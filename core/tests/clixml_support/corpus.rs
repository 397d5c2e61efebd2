//! Extracts the PSRP messages recorded in the real-Windows transcripts (pypsrp's YAML recordings).
//!
//! Each YAML entry is a `request:` or `response:` holding one SOAP envelope on one line (long plain
//! scalars are folded onto indented continuation lines). Base64 inside `<rsp:Stream>`,
//! `<creationXml>` and `<rsp:Arguments>` holds PSRP fragments (MS-PSRP 2.2.4: 21-byte big-endian
//! header), reassembled per sender and object id into messages (MS-PSRP 2.2.1: 40-byte header, then
//! UTF-8 CLIXML). Streams that are not PSRP (WinRS cmd output) fail to parse as fragments and are
//! skipped. This is a test helper, deliberately simple and line based, not a YAML parser.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// One reassembled PSRP message.
#[derive(Debug, Clone)]
pub struct Message {
    /// The YAML file it came from.
    pub file: String,
    /// `true` for client-to-server (a `request:` entry).
    pub from_client: bool,
    /// MS-PSRP message type.
    pub message_type: u32,
    /// The message data (CLIXML) with any UTF-8 byte-order mark still in front.
    pub data: Vec<u8>,
}

impl Message {
    /// The data without a leading UTF-8 byte-order mark.
    pub fn clixml(&self) -> &[u8] {
        self.data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&self.data)
    }
}

/// The YAML files of the recorded scenarios, sorted by name (the `_template.yml` excluded).
pub fn transcript_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('_')))
        .collect();
    files.sort();
    files
}

/// Every complete PSRP message of every transcript in `dir`, in recording order.
pub fn messages(dir: &Path) -> Vec<Message> {
    let mut out = Vec::new();
    for file in transcript_files(dir) {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        messages_of_yaml(&name, &text, &mut out);
    }
    out
}

/// Joins folded YAML lines into one logical line per `request:` / `response:` entry.
fn entries(yaml: &str) -> Vec<(bool, String)> {
    let mut entries: Vec<(bool, String)> = Vec::new();
    let mut open = false;
    for line in yaml.lines() {
        if let Some(rest) = line.strip_prefix("- request:") {
            entries.push((true, rest.trim().to_owned()));
            open = true;
        } else if let Some(rest) = line.strip_prefix("  response:") {
            entries.push((false, rest.trim().to_owned()));
            open = true;
        } else if open && line.starts_with("    ") {
            if let Some((_, current)) = entries.last_mut() {
                current.push(' ');
                current.push_str(line.trim());
            }
        } else {
            open = false;
        }
    }
    entries
}

/// The text of every `<tag ...>text</tag>` in `line`.
fn element_texts<'l>(line: &'l str, tag: &str) -> Vec<&'l str> {
    let mut texts = Vec::new();
    let open = format!("<{tag}");
    let mut rest = line;
    while let Some(at) = rest.find(&open) {
        rest = &rest[at + open.len()..];
        if !rest.starts_with([' ', '>']) {
            continue;
        }
        let Some(gt) = rest.find('>') else { break };
        if rest[..gt].ends_with('/') {
            continue;
        }
        let body = &rest[gt + 1..];
        let Some(end) = body.find('<') else { break };
        if body[end..].starts_with(&format!("</{tag}>")) {
            texts.push(&body[..end]);
        }
        rest = &body[end..];
    }
    texts
}

/// One PSRP fragment (MS-PSRP 2.2.4).
struct Fragment<'b> {
    object_id: u64,
    start: bool,
    end: bool,
    data: &'b [u8],
}

/// Splits a blob into PSRP fragments; `None` unless it is exactly a sequence of whole fragments.
fn fragments(blob: &[u8]) -> Option<Vec<Fragment<'_>>> {
    let mut out = Vec::new();
    let mut rest = blob;
    while !rest.is_empty() {
        let header = rest.get(..21)?;
        let object_id = u64::from_be_bytes(header[0..8].try_into().ok()?);
        let flags = header[16];
        let len = u32::from_be_bytes(header[17..21].try_into().ok()?) as usize;
        let data = rest.get(21..21 + len)?;
        out.push(Fragment { object_id, start: flags & 1 != 0, end: flags & 2 != 0, data });
        rest = &rest[21 + len..];
    }
    (!out.is_empty()).then_some(out)
}

fn messages_of_yaml(file: &str, yaml: &str, out: &mut Vec<Message>) {
    // Partial messages keyed by (sender, object id): client and server count object ids separately.
    let mut partial: HashMap<(bool, u64), Vec<u8>> = HashMap::new();
    for (from_client, line) in entries(yaml) {
        let mut blobs = Vec::new();
        for tag in ["rsp:Stream", "creationXml", "rsp:Arguments"] {
            blobs.extend(element_texts(&line, tag));
        }
        for b64 in blobs {
            let Ok(blob) = BASE64.decode(b64.trim()) else { continue };
            let Some(frags) = fragments(&blob) else { continue };
            for Fragment { object_id, start, end, data } in frags {
                let key = (from_client, object_id);
                if start {
                    partial.insert(key, Vec::new());
                }
                let Some(buffer) = partial.get_mut(&key) else { continue };
                buffer.extend_from_slice(data);
                if !end {
                    continue;
                }
                let Some(message) = partial.remove(&key) else { continue };
                if message.len() < 40 {
                    continue;
                }
                let destination = u32::from_le_bytes([message[0], message[1], message[2], message[3]]);
                if destination != 1 && destination != 2 {
                    continue;
                }
                let message_type = u32::from_le_bytes([message[4], message[5], message[6], message[7]]);
                out.push(Message { file: file.to_owned(), from_client, message_type, data: message[40..].to_vec() });
            }
        }
    }
}
