"""Deliberately broken replies, for client robustness tests (``--misbehave MODE``).

The misbehaviour fires once: on the first Receive that gets a ReceiveResponse
(HTTP 200). Receive timeout faults before it do not use it up, so a test need
not care how fast its command prints. Modes that act on the seal
(``bad-seal``, ``unsealed``) wait for a Receive that arrived sealed;
``no-exit-code`` waits for a ReceiveResponse that carries an ``rsp:ExitCode``
(the command's Done) and drops it; ``foreign-command-id`` waits for one that
names a command (a command's or pipeline's Receive) and renames every
``CommandId`` in it, on its Streams and its CommandState, to a fresh id: the
reply then carries another command's output.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass
from typing import Optional

from .soap import ACTION_RECEIVE

MODES = (
    "truncated-xml",
    "bad-base64",
    "bad-seal",
    "unsealed",
    "wrong-relates-to",
    "no-final-token",
    "no-exit-code",
    "foreign-command-id",
    "huge-reply",
    "endless-body",
)
"""``no-final-token`` acts on authentication instead: the 200 that completes a logon carries no
``WWW-Authenticate`` token (no Kerberos AP-REP, no SPNEGO accept-completed), as an impostor that
cannot prove the server's identity would answer.

``huge-reply`` answers the first Receive with a ``Content-Length`` of HUGE_REPLY_BYTES and
streams filler towards it; ``endless-body`` answers it with a chunked body that never ends. Both
stop when the client hangs up, and both write one fixed filler buffer over and over, so the
endpoint's own memory stays bounded however long the client keeps reading."""

HUGE_REPLY_BYTES = 512 * 1024 * 1024
"""Far above any envelope and any test's memory bound, yet quick to send over loopback."""

FILLER = b"A" * (64 * 1024)

_DATA_STREAM = re.compile(rb"(<rsp:Stream [^>]*>)([^<]+)(</rsp:Stream>)")
_COMMAND_ID = re.compile(rb'CommandId="([^"]+)"')
_RELATES_TO = re.compile(rb"<a:RelatesTo>[^<]*</a:RelatesTo>")
_EXIT_CODE = re.compile(rb"<rsp:ExitCode>[^<]*</rsp:ExitCode>")


@dataclass
class Tampered:
    xml: bytes
    unsealed: bool = False  # send plaintext although the request was sealed
    corrupt_signature: bool = False  # seal, then flip a signature byte
    oversize: Optional[str] = None  # "huge-reply" or "endless-body": stream filler instead of xml


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
        if self.mode == "no-exit-code" and not _EXIT_CODE.search(xml):
            return Tampered(xml)
        if self.mode == "foreign-command-id" and not _COMMAND_ID.search(xml):
            return Tampered(xml)
        if not self._claim():
            return Tampered(xml)
        if self.mode == "no-exit-code":
            return Tampered(_EXIT_CODE.sub(b"", xml))
        if self.mode == "foreign-command-id":
            other = str(uuid.uuid4()).upper().encode()
            return Tampered(_COMMAND_ID.sub(b'CommandId="' + other + b'"', xml))
        if self.mode in ("huge-reply", "endless-body"):
            return Tampered(xml, oversize=self.mode)
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
