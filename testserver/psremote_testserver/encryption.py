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
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Callable, List, Tuple

SPNEGO_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
BOUNDARY = "Encrypted Boundary"
CONTENT_TYPE = f'multipart/encrypted;protocol="{SPNEGO_PROTOCOL}";boundary="{BOUNDARY}"'
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


def unseal(body: bytes, content_type: str, unwrap: Unwrap) -> bytes:
    """Return the plaintext of a sealed request body.

    Raises FramingError for malformed framing or an unsupported protocol and
    SealError when the unwrap fails or the plaintext length differs from the
    declared one.
    """
    media, params = content_type_params(content_type)
    if media != "multipart/encrypted":
        raise FramingError(f"unsupported encrypted media type {media}")
    protocol = params.get("protocol", "")
    if protocol.lower() != SPNEGO_PROTOCOL.lower():
        raise FramingError(f"unsupported encryption protocol {protocol!r}")
    parts = split_parts(body, params.get("boundary", BOUNDARY))
    plaintext = bytearray()
    for part in parts:
        if part.protocol and part.protocol.lower() != SPNEGO_PROTOCOL.lower():
            raise FramingError(f"unsupported part protocol {part.protocol!r}")
        try:
            data = unwrap(part.header, part.ciphertext)
        except Exception as exc:  # pyspnego raises several types for a bad token
            raise SealError(f"unwrap failed: {exc}") from exc
        if len(data) != part.length:
            raise SealError(f"plaintext length {len(data)} != declared {part.length}")
        plaintext += data
    return bytes(plaintext)


def frame(header: bytes, ciphertext: bytes, length: int, protocol: str = SPNEGO_PROTOCOL) -> bytes:
    """Build the exact B.3 body for one sealed message."""
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
            f"--{BOUNDARY}--\r\n".encode(),
        )
    )


def seal(plaintext: bytes, wrap: Wrap, corrupt_signature: bool = False) -> Tuple[str, bytes]:
    """Seal a reply; returns (Content-Type, body).

    ``corrupt_signature`` flips one byte of the checksum inside the 16-byte
    NTLM signature (bytes 4..11), for the ``bad-seal`` misbehaviour.
    """
    header, ciphertext = wrap(plaintext)
    if corrupt_signature and header:
        index = 4 if len(header) > 4 else 0
        header = header[:index] + bytes([header[index] ^ 0xFF]) + header[index + 1 :]
    return CONTENT_TYPE, frame(header, ciphertext, len(plaintext))
