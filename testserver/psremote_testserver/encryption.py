"""WinRM message encryption framing (MS-WSMV 2.2.9.1, PROTOCOL.md B.3).

This module only knows the MIME layout. The cryptography itself comes from the
accepted pyspnego context through two callables, so the framing can be tested
without a security context and reused by any engine.

A sealed body looks like this (lines end CRLF, ``\\t`` is a TAB)::

    --Encrypted Boundary
    \\tContent-Type: application/HTTP-SPNEGO-session-encrypted
    \\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=<plaintext length>
    --Encrypted Boundary
    \\tContent-Type: application/octet-stream
    <u32 LE header length><header><ciphertext>--Encrypted Boundary--

There is no CRLF between the ciphertext and the closing boundary.

Kerberos uses the same layout: under the ``Negotiate`` HTTP scheme the protocol stays
``application/HTTP-SPNEGO-session-encrypted`` (whichever mechanism SPNEGO chose), under the
``Kerberos`` scheme it is ``application/HTTP-Kerberos-session-encrypted`` (MS-WSMV 2.2.9.1.2).
The header is the GSS wrap token's header (RFC 4121 CFX with AES: the 16-byte token header,
then the encrypted copy of that header and the 12-byte HMAC, 60 bytes in all for
aes256/aes128-cts-hmac-sha1-96, as SSPI's SECBUFFER_TOKEN holds it), the ciphertext the
encrypted plaintext with no padding.

CredSSP (MS-WSMV 2.2.9.1.3) uses the protocol ``application/HTTP-CredSSP-session-encrypted``.
Its "header" and ciphertext together are exactly one TLS application-data record of the
CredSSP TLS channel, and the u32 in front is the record's trailer length (MAC/tag and
padding: 17 for TLS 1.3, 16 for AES-GCM under TLS 1.2), as pyspnego and SSPI count it.
A plaintext over 16384 bytes (the largest TLS record) is split into 16384-byte chunks,
each sealed into its own metadata + octet-stream pair with its own Length, and the body is
sent as ``multipart/x-multi-encrypted`` with a single closing boundary.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Callable, List, Tuple

SPNEGO_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
CREDSSP_PROTOCOL = "application/HTTP-CredSSP-session-encrypted"
KERBEROS_PROTOCOL = "application/HTTP-Kerberos-session-encrypted"
CREDSSP_CHUNK = 16384
BOUNDARY = "Encrypted Boundary"
CONTENT_TYPE = f'multipart/encrypted;protocol="{SPNEGO_PROTOCOL}";boundary="{BOUNDARY}"'
CLOSING = f"--{BOUNDARY}--\r\n".encode()
SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"

_OCTET_STREAM_LINE = re.compile(rb"\A[ \t]*Content-Type:[ \t]*application/octet-stream[ \t]*\r\n", re.IGNORECASE)
_LENGTH = re.compile(rb"Length=(\d+)", re.IGNORECASE)
_META_TYPE = re.compile(rb"Content-Type:[ \t]*([^\r\n;]+)", re.IGNORECASE)

Unwrap = Callable[[bytes, bytes], bytes]
"""(header, ciphertext) -> plaintext; raises on a bad signature."""

Wrap = Callable[[bytes], Tuple[bytes, bytes]]
"""plaintext -> (header, ciphertext)."""


class FramingError(ValueError):
    """The body is not a well-formed encrypted MIME message."""


class SealError(ValueError):
    """The ciphertext did not verify or its length did not match ``Length=``."""


@dataclass
class SealedPart:
    """One metadata part plus its octet-stream part."""

    protocol: str
    length: int
    header: bytes
    ciphertext: bytes


def content_type_params(content_type: str) -> Tuple[str, dict]:
    """Split a Content-Type header into the lower-cased media type and its parameters."""
    pieces = [p.strip() for p in content_type.split(";")]
    params = {}
    for piece in pieces[1:]:
        if "=" in piece:
            key, value = piece.split("=", 1)
            params[key.strip().lower()] = value.strip().strip('"')
    return pieces[0].lower(), params


def is_encrypted(content_type: str) -> bool:
    media, _ = content_type_params(content_type or "")
    return media in ("multipart/encrypted", "multipart/x-multi-encrypted")


def _boundary_pattern(boundary: str) -> "re.Pattern[bytes]":
    # Some Microsoft endpoints write "-- Encrypted Boundary"; tolerate blanks after the dashes.
    # The closing form carries a trailing "--"; the CRLF after it may be missing at the very end.
    return re.compile(rb"--[ \t]*" + re.escape(boundary.encode()) + rb"(--)?(?:\r\n|\Z)")


def split_parts(body: bytes, boundary: str = BOUNDARY) -> List[SealedPart]:
    """Parse a sealed body into its parts, leniently (see module doc)."""
    pattern = _boundary_pattern(boundary)
    matches = list(pattern.finditer(body))
    if not matches or matches[0].start() != 0:
        raise FramingError("body does not start with the MIME boundary")

    segments = []
    for index, match in enumerate(matches):
        if match.group(1):  # closing boundary: anything after it is ignored
            break
        end = matches[index + 1].start() if index + 1 < len(matches) else len(body)
        segments.append(body[match.end() : end])
    # A body whose final boundary lacks the "--" ends with an empty segment.
    while segments and not segments[-1]:
        segments.pop()
    if not segments or len(segments) % 2:
        raise FramingError("expected pairs of metadata and octet-stream parts")

    parts = []
    for meta, payload in zip(segments[0::2], segments[1::2]):
        length = _LENGTH.search(meta)
        if length is None:
            raise FramingError("metadata part has no OriginalContent Length")
        protocol = _META_TYPE.search(meta)
        octet = _OCTET_STREAM_LINE.match(payload)
        if octet is None:
            raise FramingError("payload part does not declare application/octet-stream")
        payload = payload[octet.end() :]
        if len(payload) < 4:
            raise FramingError("payload too short for its header length")
        (header_len,) = struct.unpack("<I", payload[:4])
        if header_len > len(payload) - 4:
            raise FramingError("header length runs past the payload")
        parts.append(
            SealedPart(
                protocol=protocol.group(1).decode("ascii", "replace").strip() if protocol else "",
                length=int(length.group(1)),
                header=payload[4 : 4 + header_len],
                ciphertext=payload[4 + header_len :],
            )
        )
    return parts


def unseal(body: bytes, content_type: str, unwrap: Unwrap, protocol: str = SPNEGO_PROTOCOL) -> bytes:
    """Return the plaintext of a sealed request body.

    ``protocol`` is the one the connection's context seals with; a body declaring another
    raises FramingError, as does malformed framing. ``multipart/x-multi-encrypted`` (several
    parts) is accepted for CredSSP only. SealError means the unwrap failed or a part's
    plaintext length differs from its declared one.
    """
    media, params = content_type_params(content_type)
    allowed = ("multipart/encrypted", "multipart/x-multi-encrypted") if protocol == CREDSSP_PROTOCOL else ("multipart/encrypted",)
    if media not in allowed:
        raise FramingError(f"unsupported encrypted media type {media}")
    declared = params.get("protocol", "")
    if declared.lower() != protocol.lower():
        raise FramingError(f"unsupported encryption protocol {declared!r}")
    parts = split_parts(body, params.get("boundary", BOUNDARY))
    plaintext = bytearray()
    for part in parts:
        if part.protocol and part.protocol.lower() != protocol.lower():
            raise FramingError(f"unsupported part protocol {part.protocol!r}")
        try:
            data = unwrap(part.header, part.ciphertext)
        except Exception as exc:  # pyspnego raises several types for a bad token
            raise SealError(f"unwrap failed: {exc}") from exc
        if len(data) != part.length:
            raise SealError(f"plaintext length {len(data)} != declared {part.length}")
        plaintext += data
    return bytes(plaintext)


def frame_part(header: bytes, ciphertext: bytes, length: int, protocol: str = SPNEGO_PROTOCOL) -> bytes:
    """One metadata part and its octet-stream part (no closing boundary)."""
    return b"".join(
        (
            f"--{BOUNDARY}\r\n".encode(),
            f"\tContent-Type: {protocol}\r\n".encode(),
            f"\tOriginalContent: type={SOAP_CONTENT_TYPE};Length={length}\r\n".encode(),
            f"--{BOUNDARY}\r\n".encode(),
            b"\tContent-Type: application/octet-stream\r\n",
            struct.pack("<I", len(header)),
            header,
            ciphertext,
        )
    )


def frame(header: bytes, ciphertext: bytes, length: int, protocol: str = SPNEGO_PROTOCOL) -> bytes:
    """Build the exact B.3 body for one sealed message."""
    return frame_part(header, ciphertext, length, protocol) + CLOSING


def content_type(protocol: str, multi: bool = False) -> str:
    media = "multipart/x-multi-encrypted" if multi else "multipart/encrypted"
    return f'{media};protocol="{protocol}";boundary="{BOUNDARY}"'


def _corrupt(header: bytes) -> bytes:
    index = 4 if len(header) > 4 else 0
    return header[:index] + bytes([header[index] ^ 0xFF]) + header[index + 1 :]


def seal(plaintext: bytes, wrap: Wrap, corrupt_signature: bool = False, protocol: str = SPNEGO_PROTOCOL) -> Tuple[str, bytes]:
    """Seal a reply; returns (Content-Type, body).

    CredSSP seals at most 16384 bytes (one TLS record) per part: a longer plaintext becomes
    one part per chunk under ``multipart/x-multi-encrypted``, each part's Length being its
    chunk's. ``corrupt_signature`` flips one byte of the first part's header (for NTLM inside
    the checksum of the 16-byte signature, bytes 4..11), for the ``bad-seal`` misbehaviour.
    """
    size = CREDSSP_CHUNK if protocol == CREDSSP_PROTOCOL else max(len(plaintext), 1)
    chunks = [plaintext[i : i + size] for i in range(0, max(len(plaintext), 1), size)]
    parts = []
    for index, chunk in enumerate(chunks):
        header, ciphertext = wrap(chunk)
        if corrupt_signature and header and index == 0:
            header = _corrupt(header)
        parts.append(frame_part(header, ciphertext, len(chunk), protocol))
    return content_type(protocol, multi=len(chunks) > 1), b"".join(parts) + CLOSING
