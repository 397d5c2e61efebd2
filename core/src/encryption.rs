//! WinRM message encryption framing (MS-WSMV 2.2.9.1, PROTOCOL.md B.3), sans-IO.
//!
//! The security context seals the SOAP body into a signature/header and a ciphertext; this module
//! only lays those bytes out as the `multipart/encrypted` body and takes them apart again.
//!
//! CredSSP (MS-WSMV 2.2.9.1.3) seals at most [`CREDSSP_CHUNK`] bytes (one TLS record) per part: a
//! longer body is split into chunks, each sealed into its own metadata + octet-stream pair with
//! its own `Length`, under `multipart/x-multi-encrypted`. [`seal_with`] and [`unseal_with`] do the
//! chunking around a sealing function, so the layout is tested without any cryptography.

use crate::error::{Error, Result};

/// The MIME boundary WinRM uses.
pub const BOUNDARY: &str = "Encrypted Boundary";

/// The most plaintext one CredSSP part carries: the largest TLS record (2^14 bytes).
pub const CREDSSP_CHUNK: usize = 16384;

/// Which `protocol=` the multipart body names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// NTLM or Kerberos under the Negotiate (or NTLM) HTTP scheme.
    Spnego,
    /// Kerberos under the `Kerberos` HTTP scheme.
    Kerberos,
    /// CredSSP: records of its inner TLS channel.
    CredSsp,
}

impl Protocol {
    /// The protocol string.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Spnego => "application/HTTP-SPNEGO-session-encrypted",
            Protocol::Kerberos => "application/HTTP-Kerberos-session-encrypted",
            Protocol::CredSsp => "application/HTTP-CredSSP-session-encrypted",
        }
    }

    /// The HTTP `Content-Type` of a sealed body of one part.
    pub fn content_type(self) -> String {
        self.content_type_for(1)
    }

    /// The HTTP `Content-Type` of a sealed body of `parts` parts: several go under
    /// `multipart/x-multi-encrypted`.
    pub fn content_type_for(self, parts: usize) -> String {
        let media = if parts > 1 { "multipart/x-multi-encrypted" } else { "multipart/encrypted" };
        format!("{media};protocol=\"{}\";boundary=\"{BOUNDARY}\"", self.as_str())
    }

    /// How much plaintext one part seals: CredSSP one TLS record's worth, the others the whole body.
    pub fn chunk_size(self) -> Option<usize> {
        match self {
            Protocol::CredSsp => Some(CREDSSP_CHUNK),
            Protocol::Spnego | Protocol::Kerberos => None,
        }
    }
}

/// Lays out one sealed SOAP body. `plaintext_len` is the length of the SOAP body before sealing.
pub fn frame(protocol: Protocol, plaintext_len: usize, header: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    frame_parts(protocol, &[SealedPart { length: plaintext_len, header, ciphertext }])
}

/// The closing boundary of a sealed body.
pub const CLOSING: &[u8] = b"--Encrypted Boundary--\r\n";

/// What goes before one part's ciphertext: its metadata, the octet-stream header, the security
/// header's length and the header itself. A body of one part is `frame_head`, the ciphertext,
/// [`CLOSING`]: a sender can hand the three over as they are, without laying them end to end.
pub fn frame_head(protocol: Protocol, plaintext_len: usize, header: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(200 + header.len());
    put_head(&mut out, protocol, plaintext_len, header);
    out
}

fn put_head(out: &mut Vec<u8>, protocol: Protocol, plaintext_len: usize, header: &[u8]) {
    let meta = format!(
        "--{BOUNDARY}\r\n\tContent-Type: {}\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={}\r\n--{BOUNDARY}\r\n\tContent-Type: application/octet-stream\r\n",
        protocol.as_str(),
        plaintext_len
    );
    out.extend_from_slice(meta.as_bytes());
    // INVARIANT: security headers are a few dozen bytes, far below u32::MAX.
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header);
}

/// Lays out a sealed body of one or more parts, each `length` being its own plaintext's length.
pub fn frame_parts(protocol: Protocol, parts: &[SealedPart<'_>]) -> Vec<u8> {
    let size = parts.iter().map(|p| 200 + p.header.len() + p.ciphertext.len()).sum::<usize>() + CLOSING.len();
    let mut out = Vec::with_capacity(size);
    for part in parts {
        put_head(&mut out, protocol, part.length, part.header);
        out.extend_from_slice(part.ciphertext);
    }
    // No CRLF between the ciphertext and the closing boundary: Server 2025 answers 400 to it.
    out.extend_from_slice(CLOSING);
    out
}

/// Seals `plaintext` part by part (one part, or CredSSP's chunks) with `wrap`, which turns one
/// chunk into its header and ciphertext, and frames the parts. Returns the Content-Type and the
/// body.
pub fn seal_with<F>(protocol: Protocol, plaintext: &[u8], mut wrap: F) -> Result<(String, Vec<u8>)>
where
    F: FnMut(&[u8]) -> Result<(Vec<u8>, Vec<u8>)>,
{
    let size = protocol.chunk_size().unwrap_or(plaintext.len()).max(1);
    let mut sealed = Vec::with_capacity(plaintext.len().div_ceil(size).max(1));
    if plaintext.is_empty() {
        sealed.push((0, wrap(plaintext)?));
    }
    for chunk in plaintext.chunks(size) {
        sealed.push((chunk.len(), wrap(chunk)?));
    }
    let parts: Vec<SealedPart<'_>> = sealed
        .iter()
        .map(|(length, (header, ciphertext))| SealedPart { length: *length, header, ciphertext })
        .collect();
    Ok((protocol.content_type_for(parts.len()), frame_parts(protocol, &parts)))
}

/// Takes a sealed body apart and unseals every part with `unwrap` (header, ciphertext ->
/// plaintext), checking each part's announced length; returns the joined plaintext.
pub fn unseal_with<F>(body: &[u8], mut unwrap: F) -> Result<Vec<u8>>
where
    F: FnMut(&[u8], &[u8]) -> Result<Vec<u8>>,
{
    let mut out = Vec::with_capacity(body.len());
    for part in parse(body)? {
        let data = unwrap(part.header, part.ciphertext)?;
        if data.len() != part.length {
            return Err(Error::protocol(format!(
                "unsealed {} bytes where OriginalContent announced {}",
                data.len(),
                part.length
            )));
        }
        out.extend_from_slice(&data);
    }
    Ok(out)
}

/// One sealed part of a body, borrowed.
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
    fn head_ciphertext_and_closing_are_the_framed_body() {
        assert_eq!(CLOSING, format!("--{BOUNDARY}--\r\n").as_bytes());
        let header = [7u8; 60];
        let mut pieces = frame_head(Protocol::Kerberos, 5, &header);
        pieces.extend_from_slice(b"12345");
        pieces.extend_from_slice(CLOSING);
        assert_eq!(pieces, frame(Protocol::Kerberos, 5, &header, b"12345"));
    }

    #[test]
    fn parses_a_space_in_the_boundary_and_a_missing_epilogue() {
        let body = b"-- Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=2\r\n-- Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n\x01\0\0\0Hxy-- Encrypted Boundary\r\n";
        let parts = parse(body).unwrap();
        assert_eq!(parts[0].header, b"H");
        assert_eq!(parts[0].ciphertext, b"xy");
        assert_eq!(parts[0].length, 2);
    }

    /// A stand-in for a TLS record: a 17-byte "header" naming the chunk's length, then the
    /// chunk XORed, so a part unwrapped with another part's header is caught.
    fn fake_wrap(chunk: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut header = vec![0xAA; 17];
        header[..8].copy_from_slice(&(chunk.len() as u64).to_le_bytes());
        Ok((header, chunk.iter().map(|b| b ^ 0x5c).collect()))
    }

    fn fake_unwrap(header: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>> {
        assert_eq!(header.len(), 17);
        assert_eq!(u64::from_le_bytes(header[..8].try_into().unwrap()) as usize, ciphertext.len());
        Ok(ciphertext.iter().map(|b| b ^ 0x5c).collect())
    }

    #[test]
    fn credssp_splits_into_16k_chunks_and_joins_them_again() {
        let plaintext: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let (content_type, body) = seal_with(Protocol::CredSsp, &plaintext, fake_wrap).unwrap();
        assert_eq!(
            content_type,
            "multipart/x-multi-encrypted;protocol=\"application/HTTP-CredSSP-session-encrypted\";boundary=\"Encrypted Boundary\""
        );
        let parts = parse(&body).unwrap();
        let lengths: Vec<usize> = parts.iter().map(|p| p.length).collect();
        assert_eq!(lengths, [16384, 16384, 40_000 - 2 * 16384]);
        assert!(parts.iter().all(|p| p.header.len() == 17 && p.ciphertext.len() == p.length));
        let text = String::from_utf8_lossy(&body);
        assert_eq!(text.matches("\tContent-Type: application/HTTP-CredSSP-session-encrypted\r\n").count(), 3);
        assert_eq!(text.matches("--Encrypted Boundary--").count(), 1);
        assert!(body.ends_with(b"--Encrypted Boundary--\r\n"));
        assert_eq!(unseal_with(&body, fake_unwrap).unwrap(), plaintext);
    }

    #[test]
    fn one_chunk_stays_multipart_encrypted() {
        for len in [1, 100, CREDSSP_CHUNK] {
            let (content_type, body) = seal_with(Protocol::CredSsp, &vec![7; len], fake_wrap).unwrap();
            assert!(content_type.starts_with("multipart/encrypted;"), "{len}: {content_type}");
            assert_eq!(parse(&body).unwrap().len(), 1);
        }
        let (content_type, body) = seal_with(Protocol::CredSsp, &vec![7; CREDSSP_CHUNK + 1], fake_wrap).unwrap();
        assert!(content_type.starts_with("multipart/x-multi-encrypted;"));
        assert_eq!(parse(&body).unwrap().iter().map(|p| p.length).collect::<Vec<_>>(), [CREDSSP_CHUNK, 1]);
        // The other protocols seal a body whole, however long.
        let (content_type, body) = seal_with(Protocol::Spnego, &vec![7; 40_000], fake_wrap).unwrap();
        assert!(content_type.starts_with("multipart/encrypted;"));
        assert_eq!(parse(&body).unwrap().len(), 1);
    }

    #[test]
    fn a_part_that_unseals_to_another_length_is_refused() {
        let (_, body) = seal_with(Protocol::CredSsp, &[1; 20_000], fake_wrap).unwrap();
        let err = unseal_with(&body, |h, c| {
            fake_unwrap(h, c).map(|mut p| {
                p.pop();
                p
            })
        })
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Protocol);
        assert!(err.to_string().contains("OriginalContent announced 16384"), "{err}");
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for body in [&b""[..], b"hello", b"--Encrypted Boundary\r\nno length", b"--Encrypted Boundary\r\n\tOriginalContent: type=x;Length=1\r\n--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n\xff\0\0\0ab"] {
            assert_eq!(parse(body).unwrap_err().kind(), crate::ErrorKind::Protocol);
        }
    }
}
