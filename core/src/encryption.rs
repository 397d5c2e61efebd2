//! WinRM message encryption framing (MS-WSMV 2.2.9.1, PROTOCOL.md B.3), sans-IO.
//!
//! The security context seals the SOAP body into a signature/header and a ciphertext; this module
//! only lays those bytes out as the `multipart/encrypted` body and takes them apart again.

use crate::error::{Error, Result};

/// The MIME boundary WinRM uses.
pub const BOUNDARY: &str = "Encrypted Boundary";

/// Which `protocol=` the multipart body names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// NTLM or Kerberos under the Negotiate (or NTLM) HTTP scheme.
    Spnego,
    /// Kerberos under the `Kerberos` HTTP scheme.
    Kerberos,
}

impl Protocol {
    /// The protocol string.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Spnego => "application/HTTP-SPNEGO-session-encrypted",
            Protocol::Kerberos => "application/HTTP-Kerberos-session-encrypted",
        }
    }

    /// The HTTP `Content-Type` of a sealed body.
    pub fn content_type(self) -> String {
        format!("multipart/encrypted;protocol=\"{}\";boundary=\"{BOUNDARY}\"", self.as_str())
    }
}

/// Lays out one sealed SOAP body. `plaintext_len` is the length of the SOAP body before sealing.
pub fn frame(protocol: Protocol, plaintext_len: usize, header: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let meta = format!(
        "--{BOUNDARY}\r\n\tContent-Type: {}\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={plaintext_len}\r\n--{BOUNDARY}\r\n\tContent-Type: application/octet-stream\r\n",
        protocol.as_str()
    );
    let closing = format!("--{BOUNDARY}--\r\n");
    let mut out = Vec::with_capacity(meta.len() + 4 + header.len() + ciphertext.len() + closing.len());
    out.extend_from_slice(meta.as_bytes());
    // INVARIANT: security headers are a few dozen bytes, far below u32::MAX.
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(ciphertext);
    // No CRLF between the ciphertext and the closing boundary: Server 2025 answers 400 to it.
    out.extend_from_slice(closing.as_bytes());
    out
}

/// One sealed part of a reply, borrowed from the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedPart<'a> {
    /// The plaintext length announced in `OriginalContent`.
    pub length: usize,
    /// The signature/header the security context checks.
    pub header: &'a [u8],
    /// The encrypted SOAP bytes.
    pub ciphertext: &'a [u8],
}

/// Whether an HTTP `Content-Type` announces a sealed body.
pub fn is_sealed_content_type(content_type: &str) -> bool {
    let ct = content_type.trim_start().to_ascii_lowercase();
    ct.starts_with("multipart/encrypted") || ct.starts_with("multipart/x-multi-encrypted")
}

/// Splits a sealed body into its parts. Tolerates `-- Encrypted Boundary` (with a space) and a
/// missing closing `--`.
pub fn parse(body: &[u8]) -> Result<Vec<SealedPart<'_>>> {
    let markers = find_markers(body);
    if markers.is_empty() {
        return Err(Error::protocol("sealed body has no MIME boundary"));
    }
    // Sections between consecutive markers; the text after the last marker is the epilogue.
    let mut sections = Vec::with_capacity(markers.len());
    for (i, &(_, content_start)) in markers.iter().enumerate() {
        let end = markers.get(i + 1).map_or(body.len(), |&(start, _)| start);
        sections.push(&body[content_start..end]);
    }
    let mut parts = Vec::new();
    let mut it = sections.into_iter();
    while let Some(meta) = it.next() {
        // The closing marker is followed by `--` (or nothing): the end of the body.
        if meta.starts_with(b"--") || meta.iter().all(u8::is_ascii_whitespace) {
            break;
        }
        let length = original_length(meta)?;
        let data = it.next().ok_or_else(|| Error::protocol("sealed body ends after its metadata part"))?;
        let data = strip_octet_stream_header(data)?;
        if data.len() < 4 {
            return Err(Error::protocol("sealed part too short for its header length"));
        }
        let hlen = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let rest = &data[4..];
        if hlen > rest.len() {
            return Err(Error::protocol("sealed part shorter than its announced header"));
        }
        let (header, ciphertext) = rest.split_at(hlen);
        parts.push(SealedPart { length, header, ciphertext });
    }
    if parts.is_empty() {
        return Err(Error::protocol("sealed body carries no encrypted part"));
    }
    Ok(parts)
}

/// Positions of `--Encrypted Boundary` / `-- Encrypted Boundary`: (marker start, content start
/// after the marker and its line break).
fn find_markers(body: &[u8]) -> Vec<(usize, usize)> {
    let b = BOUNDARY.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 <= body.len() {
        let Some(pos) = find(&body[i..], b"--") else { break };
        let start = i + pos;
        let mut j = start + 2;
        if body.get(j) == Some(&b' ') {
            j += 1;
        }
        if body[j..].starts_with(b) {
            let mut content = j + b.len();
            if body[content..].starts_with(b"\r\n") {
                content += 2;
            } else if body[content..].starts_with(b"\n") {
                content += 1;
            }
            out.push((start, content));
            i = content;
        } else {
            i = start + 1;
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn original_length(meta: &[u8]) -> Result<usize> {
    let text = String::from_utf8_lossy(meta);
    let line = text
        .lines()
        .find(|l| l.trim_start().to_ascii_lowercase().starts_with("originalcontent:"))
        .ok_or_else(|| Error::protocol("sealed part without OriginalContent"))?;
    let value = line
        .split(';')
        .find_map(|p| p.trim().strip_prefix("Length=").or_else(|| p.trim().strip_prefix("length=")))
        .ok_or_else(|| Error::protocol("OriginalContent without Length"))?;
    value.trim().parse().map_err(|_| Error::protocol(format!("OriginalContent Length {value:?} is not a number")))
}

fn strip_octet_stream_header(data: &[u8]) -> Result<&[u8]> {
    let pos = find(data, b"application/octet-stream")
        .ok_or_else(|| Error::protocol("sealed part without its octet-stream header"))?;
    let after = &data[pos + b"application/octet-stream".len()..];
    Ok(after.strip_prefix(b"\r\n").or_else(|| after.strip_prefix(b"\n")).unwrap_or(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_without_crlf_before_the_closing_boundary() {
        let body = frame(Protocol::Spnego, 3, &[1; 16], b"abc");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=3\r\n--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n\x10\0\0\0"));
        assert!(body.ends_with(b"abc--Encrypted Boundary--\r\n"));
        let parts = parse(&body).unwrap();
        assert_eq!(parts, vec![SealedPart { length: 3, header: &[1; 16], ciphertext: b"abc" }]);
    }

    #[test]
    fn parses_a_space_in_the_boundary_and_a_missing_epilogue() {
        let body = b"-- Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=2\r\n-- Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n\x01\0\0\0Hxy-- Encrypted Boundary\r\n";
        let parts = parse(body).unwrap();
        assert_eq!(parts[0].header, b"H");
        assert_eq!(parts[0].ciphertext, b"xy");
        assert_eq!(parts[0].length, 2);
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for body in [&b""[..], b"hello", b"--Encrypted Boundary\r\nno length", b"--Encrypted Boundary\r\n\tOriginalContent: type=x;Length=1\r\n--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n\xff\0\0\0ab"] {
            assert_eq!(parse(body).unwrap_err().kind(), crate::ErrorKind::Protocol);
        }
    }
}
