//! Reads the recorded Windows exchanges in `tests/data/windows-transcripts` and pulls the PSRP
//! messages out of them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine as _;
use psremote::psrp::fragment::Defragmenter;
use psremote::psrp::message::Message;
use psremote::wsman::ns;
use psremote::wsman::xml::{self, Element};

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/windows-transcripts")
}

/// One recorded request/response pair.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub request: String,
    pub response: String,
    /// Keys such as `transport_error`, `timeout`, `auth_error`, `http_error` that the original
    /// suite used to inject failures.
    pub injected: Vec<String>,
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        inner.replace("''", "'")
    } else {
        v.to_owned()
    }
}

/// Parses one transcript file (the subset of YAML these files use).
pub fn load(name: &str) -> Vec<Exchange> {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    let mut out: Vec<Exchange> = Vec::new();
    // Which scalar the last key line opened: long plain scalars continue on lines indented by
    // four spaces (YAML folding joins them with one space).
    let mut open: Option<&'static str> = None;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let (key, rest) = if let Some(r) = line.strip_prefix("- request:") {
            out.push(Exchange { request: String::new(), response: String::new(), injected: Vec::new() });
            ("request", r)
        } else if let Some(r) = line.strip_prefix("  response:") {
            ("response", r)
        } else {
            let t = line.trim_start();
            if let (Some(key), Some(ex)) = (open, out.last_mut())
                && line.starts_with("    ")
            {
                let v = if key == "request" { &mut ex.request } else { &mut ex.response };
                v.push(' ');
                v.push_str(t);
                continue;
            }
            open = None;
            if let Some(ex) = out.last_mut()
                && line.starts_with("  ")
                && !line.starts_with("    ")
                && t.ends_with(':')
            {
                ex.injected.push(t.trim_end_matches(':').to_owned());
            }
            continue;
        };
        let mut value = rest.trim().to_owned();
        // A single-quoted scalar may be folded over several lines.
        let quoted = value.starts_with('\'');
        if quoted {
            while !(value.len() > 1 && value.ends_with('\'') && !value.ends_with("''")) {
                match lines.next() {
                    Some(l) => {
                        value.push(' ');
                        value.push_str(l.trim());
                    }
                    None => break,
                }
            }
        }
        let value = unquote(&value);
        let ex = out.last_mut().unwrap();
        if key == "request" {
            ex.request = value
        } else {
            ex.response = value
        }
        open = if quoted { None } else { Some(key) };
    }
    out
}

/// Every transcript file name, sorted.
pub fn names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("test_") && n.ends_with(".yml"))
        .collect();
    v.sort();
    v
}

/// Which side sent a PSRP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Client,
    Server,
}

/// A reassembled PSRP message found in a transcript.
#[derive(Debug, Clone)]
pub struct Found {
    pub file: String,
    pub side: Side,
    pub message: Message,
}

fn b64(s: &str) -> Vec<u8> {
    let s: String = s.split_ascii_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn walk<'a>(e: &'a Element, out: &mut Vec<&'a Element>) {
    out.push(e);
    for c in &e.children {
        walk(c, out);
    }
}

/// Every PSRP message in a transcript, in order, with fragments reassembled per sender and target.
pub fn psrp_messages(name: &str) -> Vec<Found> {
    let mut out = Vec::new();
    let mut defrag: HashMap<(Side, Option<String>), Defragmenter> = HashMap::new();
    let mut push = |side: Side, target: Option<String>, data: Vec<u8>, out: &mut Vec<Found>| {
        let d = defrag.entry((side, target.map(|t| t.to_uppercase()))).or_default();
        for m in d.push(&data).unwrap_or_else(|e| panic!("{name}: {e}")) {
            out.push(Found { file: name.to_owned(), side, message: Message::decode(&m).unwrap() });
        }
    };
    for ex in load(name) {
        let req = xml::parse(ex.request.as_bytes()).unwrap_or_else(|e| panic!("{name}: request: {e}"));
        let resource =
            req.path(&[(ns::SOAP, "Header"), (ns::WSMAN, "ResourceURI")]).map(|e| e.text.clone()).unwrap_or_default();
        if !resource.starts_with("http://schemas.microsoft.com/powershell") {
            continue;
        }
        let mut all = Vec::new();
        walk(&req, &mut all);
        for e in all {
            match e.name.as_str() {
                "creationXml" | "connectXml" => push(Side::Client, None, b64(&e.text), &mut out),
                "CommandLine" if e.is(ns::SHELL, "CommandLine") => {
                    let id = e.attr("CommandId").map(str::to_owned);
                    for a in e.children_named(ns::SHELL, "Arguments") {
                        push(Side::Client, id.clone(), b64(&a.text), &mut out);
                    }
                }
                "Stream" if e.is(ns::SHELL, "Stream") => {
                    push(Side::Client, e.attr("CommandId").map(str::to_owned), b64(&e.text), &mut out)
                }
                _ => {}
            }
        }
        let Ok(resp) = xml::parse(ex.response.as_bytes()) else { continue };
        let mut all = Vec::new();
        walk(&resp, &mut all);
        for e in all {
            if e.is(ns::SHELL, "Stream") && e.attr("Name") == Some("stdout") {
                push(Side::Server, e.attr("CommandId").map(str::to_owned), b64(&e.text), &mut out);
            } else if e.name == "connectResponseXml" {
                push(Side::Server, None, b64(&e.text), &mut out);
            }
        }
    }
    out
}
