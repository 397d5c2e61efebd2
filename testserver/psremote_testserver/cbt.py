"""Channel binding (RFC 5929 tls-server-end-point) checks for NTLM logons over HTTPS.

pyspnego's NTLM acceptor, given bindings, refuses an AUTHENTICATE message without the
MsvAvChannelBindings AV pair or with a different one, but accepts sixteen zero bytes (what a
client without bindings may send), and it cannot be told "accept tokens without bindings".
So the endpoint reads the AV pair itself (MS-NLMP 2.2.1.3, 2.2.2.1, 2.2.2.7) and decides:

* ``relaxed``: a token that carries bindings must carry ours; one without them (pair
  missing or all zeros) is accepted, as Windows' CbtHardeningLevel=Relaxed does.
* ``strict``: bindings are required and must match (CbtHardeningLevel=Strict).
* ``none``: nothing is checked.

The value in the AV pair is MD5 of the packed gss_channel_bindings_struct whose application
data is ``b"tls-server-end-point:" + H(server certificate DER)``.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Optional

from spnego.channel_bindings import GssChannelBindings

from .certs import end_point_hash

MODES = ("none", "relaxed", "strict")
PREFIX = b"tls-server-end-point:"

MATCH = "match"
ABSENT = "absent"
NOT_CHECKED = "not-checked"

_AUTHENTICATE = b"NTLMSSP\x00\x03\x00\x00\x00"
_NT_RESPONSE_FIELDS = 20  # offset of NtChallengeResponseFields in AUTHENTICATE_MESSAGE
_AV_PAIRS_OFFSET = 16 + 28  # NTProofStr, then the fixed part of NTLMv2_CLIENT_CHALLENGE
_MSV_AV_EOL = 0x0000
_MSV_AV_CHANNEL_BINDINGS = 0x000A


class BindingError(Exception):
    """The token's channel bindings are wrong, or missing where they are required."""


def server_bindings(cert_der: bytes) -> GssChannelBindings:
    """The channel bindings a client of the server with this certificate should send."""
    return GssChannelBindings(application_data=PREFIX + end_point_hash(cert_der))


def ntlm_authenticate(token: bytes) -> Optional[bytes]:
    """The NTLM AUTHENTICATE message inside a raw or SPNEGO-wrapped token, else None.

    The message runs from its signature to the end of the token: its fields are addressed by
    offsets from the signature, so trailing SPNEGO bytes (a mechListMIC) do no harm.
    """
    start = token.find(_AUTHENTICATE)
    return None if start < 0 else token[start:]


def _nt_response(message: bytes) -> bytes:
    if len(message) < _NT_RESPONSE_FIELDS + 8:
        return b""
    length, _, offset = struct.unpack_from("<HHI", message, _NT_RESPONSE_FIELDS)
    return message[offset : offset + length]


def av_channel_bindings(message: bytes) -> Optional[bytes]:
    """MsvAvChannelBindings of an AUTHENTICATE message; None when missing or all zeros.

    NTLMv1 responses (24 bytes) carry no AV pairs, so they report None too.
    """
    response = _nt_response(message)
    position = _AV_PAIRS_OFFSET
    while position + 4 <= len(response):
        av_id, av_len = struct.unpack_from("<HH", response, position)
        position += 4
        if av_id == _MSV_AV_EOL:
            break
        value = response[position : position + av_len]
        position += av_len
        if av_id == _MSV_AV_CHANNEL_BINDINGS:
            return None if value.strip(b"\x00") == b"" else value
    return None


def check(token: bytes, bindings: GssChannelBindings, mode: str) -> Optional[str]:
    """Checks one incoming auth token against the connection's bindings.

    Returns None when the token is not an NTLM AUTHENTICATE message (nothing to check in it),
    ``match`` or ``absent``; raises BindingError when the bindings differ, or are absent in
    ``strict`` mode. ``none`` mode checks nothing and returns None.
    """
    if mode == "none":
        return None
    message = ntlm_authenticate(token)
    if message is None:
        return None
    sent = av_channel_bindings(message)
    if sent is None:
        if mode == "strict":
            raise BindingError("channel bindings required but the client sent none")
        return ABSENT
    if sent != hashlib.md5(bindings.pack(), usedforsecurity=False).digest():
        raise BindingError("channel bindings do not match this connection")
    return MATCH
