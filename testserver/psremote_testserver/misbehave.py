"""Deliberately broken replies, for client robustness tests (``--misbehave MODE``).

The misbehaviour fires once: on the first Receive that gets a ReceiveResponse
(HTTP 200). Receive timeout faults before it do not use it up, so a test need
not care how fast its command prints. Modes that act on the seal
(``bad-seal``, ``unsealed``) wait for a Receive that arrived sealed.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass
from typing import Optional

from .soap import ACTION_RECEIVE

MODES = ("truncated-xml", "bad-base64", "bad-seal", "unsealed", "wrong-relates-to", "no-final-token")
"""``no-final-token`` acts on authentication instead: the 200 that completes a logon carries no
``WWW-Authenticate`` token (no Kerberos AP-REP, no SPNEGO accept-completed), as an impostor that
cannot prove the server's identity would answer."""

_DATA_STREAM = re.compile(rb"(<rsp:Stream [^>]*>)([^<]+)(</rsp:Stream>)")
_COMMAND_ID = re.compile(rb'CommandId="([^"]+)"')
_RELATES_TO = re.compile(rb"<a:RelatesTo>[^<]*</a:RelatesTo>")


@dataclass
class Tampered:
    xml: bytes
    unsealed: bool = False  # send plaintext although the request was sealed
    corrupt_signature: bool = False  # seal, then flip a signature byte


class Misbehaviour:
    def __init__(self, mode: Optional[str]) -> None:
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown misbehave mode {mode!r}")
        self.mode = mode
        self._lock = threading.Lock()
        self._spent = False

    def _claim(self) -> bool:
        with self._lock:
            if self._spent:
                return False
            self._spent = True
            return True

    def apply(self, request_action: Optional[str], status: int, xml: bytes, sealed: bool) -> Tampered:
        if self.mode in (None, "no-final-token") or request_action != ACTION_RECEIVE or status != 200:
            return Tampered(xml)
        if self.mode in ("bad-seal", "unsealed") and not sealed:
            return Tampered(xml)
        if not self._claim():
            return Tampered(xml)
        if self.mode == "truncated-xml":
            return Tampered(xml[: len(xml) // 2])
        if self.mode == "bad-base64":
            return Tampered(_bad_base64(xml))
        if self.mode == "wrong-relates-to":
            other = f"<a:RelatesTo>uuid:{str(uuid.uuid4()).upper()}</a:RelatesTo>".encode()
            return Tampered(_RELATES_TO.sub(other, xml, count=1))
        if self.mode == "bad-seal":
            return Tampered(xml, corrupt_signature=True)
        return Tampered(xml, unsealed=True)


def _bad_base64(xml: bytes) -> bytes:
    """Replace the first data Stream's text with '@@@', or add such a Stream if there is none."""
    if _DATA_STREAM.search(xml):
        return _DATA_STREAM.sub(lambda m: m.group(1) + b"@@@" + m.group(3), xml, count=1)
    command_id = _COMMAND_ID.search(xml)
    cid = command_id.group(1) if command_id else b""
    stream = b'<rsp:Stream Name="stdout" CommandId="' + cid + b'">@@@</rsp:Stream>'
    return xml.replace(b"<rsp:ReceiveResponse>", b"<rsp:ReceiveResponse>" + stream, 1)
