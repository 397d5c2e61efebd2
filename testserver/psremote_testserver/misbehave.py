"""Deliberately broken replies, for client robustness tests (``--misbehave MODE``).

Each mode is one small function over one reply, applied by the HTTP layer after the endpoint
built that reply correctly (so the shell and its commands exist as they would on a real
server, and the client can clean them up). A reply mode fires once: on the first reply it is
meant for (most wait for a ReceiveResponse, HTTP 200, whatever else went before); every other
reply goes out untouched. Receive timeout faults before it do not use it up, so a test need
not care how fast its command prints.

The modes, by class (``MODES`` lists them all):

* WS-Man content: ``truncated-xml``, ``bad-base64``, ``wrong-relates-to``.
* Sealing: ``bad-seal`` (a flipped signature byte), ``seal-wrong-sequence`` (sealed with the
  next sequence number: one message was sealed and thrown away first), ``seal-truncated`` (the
  encrypted part loses its last 16 bytes, the framing stays whole), ``unsealed`` (plaintext
  although the request was sealed). Each waits for a Receive that arrived sealed.
* HTTP framing: ``bad-status-line``, ``bad-chunked`` (a chunk size that is not hex),
  ``truncated-body`` (half the declared Content-Length, then the connection closes),
  ``length-mismatch`` (a Content-Length 100 bytes short of the body sent).
* Oversized and endless bodies: ``huge-reply`` (a Content-Length of HUGE_REPLY_BYTES and filler
  towards it), ``endless-body`` (a chunked body that never ends). Both stream one fixed filler
  buffer until the client hangs up, so the endpoint's own memory stays bounded.
* XML bombs: ``xml-entity-bomb`` (a DOCTYPE declaring nested entities, referenced in the
  body), ``xml-deep-nesting`` (DEEP_NESTING nested elements inside the ReceiveResponse),
  ``xml-huge-attribute`` (an unknown attribute of HUGE_ATTRIBUTE bytes on the ReceiveResponse:
  within the reply limit, so a client may ignore it).
* Forged ids: ``foreign-command-id`` (every CommandId of a command's ReceiveResponse renamed to
  a fresh one: another command's output), ``foreign-rpid`` / ``foreign-pid`` (the first PSRP
  message of a pipeline's ReceiveResponse names another runspace pool / pipeline).
* Missing fields: ``no-shell-id`` (a CreateResponse naming no ShellId), ``no-command-id``
  (a CommandResponse without its CommandId), ``no-exit-code`` (the Done of a ReceiveResponse
  without its rsp:ExitCode), ``no-command-state`` (the ReceiveResponse that carries the Done
  loses its CommandState: the command never finishes, as far as the client can tell).
* PSRP and CLIXML abuse, on the first PSRP message of a pipeline's ReceiveResponse:
  ``psrp-wrong-object-id`` (the message cut in two fragments whose object ids differ),
  ``psrp-overlapping-fragments`` (its first fragment sent twice), ``psrp-huge-blob-length``
  (a fragment declaring a 4 GiB blob), ``clixml-unknown-refid`` (the message's CLIXML a
  ``<Ref>`` to an object never sent), ``clixml-deep-nesting`` (CLIXML nested CLIXML_DEPTH
  deep). The rest of that Receive's data is dropped.
* ``no-final-token``: acts on authentication instead: the 200 that completes a logon carries
  no ``WWW-Authenticate`` token (no Kerberos AP-REP, no SPNEGO accept-completed), as an
  impostor that cannot prove the server's identity would answer.
* Receive timing, acting on requests before the endpoint handles them (``Misbehaviour.stall``):
  ``immediate-timeout`` answers every Receive at once with the OperationTimeout fault, for
  IMMEDIATE_SECONDS after the first Receive (then the endpoint serves normally, so the command
  can finish); ``stalled-receives`` holds every Receive, the pool's and the commands', for its
  OperationTimeout (at most the endpoint's MaxTimeout) and then answers the OperationTimeout
  fault, for ever: a pool never opens, a command never produces anything. Each Receive
  answered so counts in ``/_control/state``'s ``timeouts_injected``.
"""

from __future__ import annotations

import base64
import re
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from . import encryption, faults, soap
from .dispatch import MACHINE, SoapReply
from .soap import ACTION_COMMAND, ACTION_CREATE, ACTION_RECEIVE
from .stats import Stats

HUGE_REPLY_BYTES = 512 * 1024 * 1024
"""Far above any envelope and any test's memory bound, yet quick to send over loopback."""

FILLER = b"A" * (64 * 1024)
IMMEDIATE_SECONDS = 3.0
DEEP_NESTING = 20000
HUGE_ATTRIBUTE = 160 * 1024
CLIXML_DEPTH = 5000

_DATA_STREAM = re.compile(rb"(<rsp:Stream [^>]*>)([^<]+)(</rsp:Stream>)")
_STDOUT_STREAM = re.compile(rb'(<rsp:Stream Name="stdout" CommandId="[^"]+"[^>]*>)([^<]+)(</rsp:Stream>)')
_COMMAND_ID = re.compile(rb'CommandId="([^"]+)"')
_COMMAND_ID_ELEMENT = re.compile(rb"<rsp:CommandId>[^<]*</rsp:CommandId>")
_SHELL_ID = re.compile(rb"<rsp:ShellId>[^<]*</rsp:ShellId>|<w:Selector Name=\"ShellId\">[^<]*</w:Selector>")
_RELATES_TO = re.compile(rb"<a:RelatesTo>[^<]*</a:RelatesTo>")
_EXIT_CODE = re.compile(rb"<rsp:ExitCode>[^<]*</rsp:ExitCode>")
_COMMAND_STATE = re.compile(rb"<rsp:CommandState [^>]*(?:/>|>.*?</rsp:CommandState>)", re.S)
_DONE = re.compile(rb'<rsp:CommandState [^>]*State="[^"]*/Done"')
_RECEIVE_RESPONSE = b"<rsp:ReceiveResponse>"
_FRAGMENT = struct.Struct(">QQBI")
_START, _END = 0x01, 0x02
_MESSAGE_HEADER = 40


@dataclass
class Tampered:
    xml: bytes
    unsealed: bool = False  # send plaintext although the request was sealed
    seal_fault: Optional[str] = None  # "bad-seal", "seal-wrong-sequence" or "seal-truncated"
    oversize: Optional[str] = None  # "huge-reply" or "endless-body": stream filler instead of xml
    framing: Optional[str] = None  # an HTTP framing mode: write the reply with broken framing
    forget_shell: Optional[str] = None  # the shell the client cannot name: the endpoint drops it


When = Callable[[Optional[str], int, bytes, bool], bool]


def _receive_ok(action: Optional[str], status: int, xml: bytes, sealed: bool) -> bool:
    return action == ACTION_RECEIVE and status == 200


def _sealed_receive(action: Optional[str], status: int, xml: bytes, sealed: bool) -> bool:
    return _receive_ok(action, status, xml, sealed) and sealed


def _pipeline_data(action: Optional[str], status: int, xml: bytes, sealed: bool) -> bool:
    return _receive_ok(action, status, xml, sealed) and _first_message(xml) is not None


def _foreign_command_id(xml: bytes) -> Tampered:
    other = str(uuid.uuid4()).upper().encode()
    return Tampered(_COMMAND_ID.sub(b'CommandId="' + other + b'"', xml))


def _bad_base64(xml: bytes) -> Tampered:
    """Replace the first data Stream's text with '@@@', or add such a Stream if there is none."""
    if _DATA_STREAM.search(xml):
        return Tampered(_DATA_STREAM.sub(lambda m: m.group(1) + b"@@@" + m.group(3), xml, count=1))
    command_id = _COMMAND_ID.search(xml)
    cid = command_id.group(1) if command_id else b""
    stream = b'<rsp:Stream Name="stdout" CommandId="' + cid + b'">@@@</rsp:Stream>'
    return Tampered(xml.replace(_RECEIVE_RESPONSE, _RECEIVE_RESPONSE + stream, 1))


def _entity_bomb(xml: bytes) -> Tampered:
    # Each entity ten times the one before: &e9; would expand to 10^9 bytes.
    entities = [b'<!ENTITY e0 "' + b"x" * 10 + b'">']
    entities += [b"<!ENTITY e%d \"%s\">" % (i, b"&e%d;" % (i - 1) * 10) for i in range(1, 10)]
    doctype = b"<!DOCTYPE s:Envelope [" + b"".join(entities) + b"]>"
    body = xml.replace(_RECEIVE_RESPONSE, _RECEIVE_RESPONSE + b"<x>&e9;</x>", 1)
    return Tampered(doctype + body)


def _deep_nesting(xml: bytes) -> Tampered:
    nested = b"<x>" * DEEP_NESTING + b"</x>" * DEEP_NESTING
    return Tampered(xml.replace(_RECEIVE_RESPONSE, _RECEIVE_RESPONSE + nested, 1))


def _huge_attribute(xml: bytes) -> Tampered:
    opened = b'<rsp:ReceiveResponse Padding="' + b"y" * HUGE_ATTRIBUTE + b'">'
    return Tampered(xml.replace(_RECEIVE_RESPONSE, opened, 1))


def _first_message(xml: bytes) -> Optional[Tuple["re.Match[bytes]", int, bytes]]:
    """The first stdout Stream naming a command, and the object id and blob of its first whole
    PSRP message (None when there is no such message)."""
    stream = _STDOUT_STREAM.search(xml)
    if stream is None:
        return None
    try:
        data = base64.b64decode(stream.group(2), validate=True)
    except ValueError:
        return None
    if len(data) < _FRAGMENT.size:
        return None
    object_id, fragment_id, flags, length = _FRAGMENT.unpack_from(data)
    blob = data[_FRAGMENT.size : _FRAGMENT.size + length]
    if fragment_id != 0 or flags & (_START | _END) != _START | _END or len(blob) < _MESSAGE_HEADER:
        return None
    return stream, object_id, blob


def _fragment(object_id: int, fragment_id: int, flags: int, blob: bytes, declared: Optional[int] = None) -> bytes:
    return _FRAGMENT.pack(object_id, fragment_id, flags, len(blob) if declared is None else declared) + blob


def _with_stream_data(xml: bytes, data: bytes) -> Tampered:
    found = _first_message(xml)
    assert found is not None
    stream = found[0]
    replaced = stream.group(1) + base64.b64encode(data) + stream.group(3)
    return Tampered(xml[: stream.start()] + replaced + xml[stream.end() :])


def _psrp(change: Callable[[int, bytes], bytes]) -> Callable[[bytes], Tampered]:
    """A mode rewriting the first PSRP message of a pipeline's Receive into other fragments."""

    def tamper(xml: bytes) -> Tampered:
        found = _first_message(xml)
        assert found is not None
        _, object_id, blob = found
        return _with_stream_data(xml, change(object_id, blob))

    return tamper


def _two_fragments(object_id: int, blob: bytes, second_object_id: int, repeat_first: bool = False) -> bytes:
    half = len(blob) // 2
    first = _fragment(object_id, 0, _START, blob[:half])
    second = _fragment(second_object_id, 1, _END, blob[half:])
    return first + (first if repeat_first else b"") + second


def _with_clixml(blob: bytes, clixml: bytes) -> bytes:
    return blob[:_MESSAGE_HEADER] + b"\xef\xbb\xbf" + clixml


def _with_guid(blob: bytes, offset: int) -> bytes:
    return blob[:offset] + uuid.uuid4().bytes_le + blob[offset + 16 :]


_UNKNOWN_REF = b'<Obj RefId="0"><MS><Ref N="Value" RefId="4242" /></MS></Obj>'
_DEEP_CLIXML = b'<Obj RefId="0"><LST>' + b"<Obj><LST>" * CLIXML_DEPTH + b"</LST></Obj>" * CLIXML_DEPTH + b"</LST></Obj>"

REPLY_MODES: Dict[str, Tuple[When, Callable[[bytes], Tampered]]] = {
    "truncated-xml": (_receive_ok, lambda xml: Tampered(xml[: len(xml) // 2])),
    "bad-base64": (_receive_ok, _bad_base64),
    "wrong-relates-to": (
        _receive_ok,
        lambda xml: Tampered(
            _RELATES_TO.sub(f"<a:RelatesTo>uuid:{str(uuid.uuid4()).upper()}</a:RelatesTo>".encode(), xml, count=1)
        ),
    ),
    "bad-seal": (_sealed_receive, lambda xml: Tampered(xml, seal_fault="bad-seal")),
    "seal-wrong-sequence": (_sealed_receive, lambda xml: Tampered(xml, seal_fault="seal-wrong-sequence")),
    "seal-truncated": (_sealed_receive, lambda xml: Tampered(xml, seal_fault="seal-truncated")),
    "unsealed": (_sealed_receive, lambda xml: Tampered(xml, unsealed=True)),
    "bad-status-line": (_receive_ok, lambda xml: Tampered(xml, framing="bad-status-line")),
    "bad-chunked": (_receive_ok, lambda xml: Tampered(xml, framing="bad-chunked")),
    "truncated-body": (_receive_ok, lambda xml: Tampered(xml, framing="truncated-body")),
    "length-mismatch": (_receive_ok, lambda xml: Tampered(xml, framing="length-mismatch")),
    "huge-reply": (_receive_ok, lambda xml: Tampered(xml, oversize="huge-reply")),
    "endless-body": (_receive_ok, lambda xml: Tampered(xml, oversize="endless-body")),
    "xml-entity-bomb": (_receive_ok, _entity_bomb),
    "xml-deep-nesting": (_receive_ok, _deep_nesting),
    "xml-huge-attribute": (_receive_ok, _huge_attribute),
    "foreign-command-id": (lambda a, s, x, _: _receive_ok(a, s, x, _) and bool(_COMMAND_ID.search(x)), _foreign_command_id),
    "foreign-rpid": (_pipeline_data, _psrp(lambda oid, blob: _fragment(oid, 0, _START | _END, _with_guid(blob, 8)))),
    "foreign-pid": (_pipeline_data, _psrp(lambda oid, blob: _fragment(oid, 0, _START | _END, _with_guid(blob, 24)))),
    "no-shell-id": (lambda a, s, x, _: a == ACTION_CREATE and s == 200, lambda xml: Tampered(_SHELL_ID.sub(b"", xml))),
    "no-command-id": (
        lambda a, s, x, _: a == ACTION_COMMAND and s == 200,
        lambda xml: Tampered(_COMMAND_ID_ELEMENT.sub(b"", xml)),
    ),
    "no-exit-code": (
        lambda a, s, x, _: _receive_ok(a, s, x, _) and bool(_EXIT_CODE.search(x)),
        lambda xml: Tampered(_EXIT_CODE.sub(b"", xml)),
    ),
    "no-command-state": (
        lambda a, s, x, _: _receive_ok(a, s, x, _) and bool(_DONE.search(x)),
        lambda xml: Tampered(_COMMAND_STATE.sub(b"", xml)),
    ),
    "psrp-wrong-object-id": (_pipeline_data, _psrp(lambda oid, blob: _two_fragments(oid, blob, oid + 1000))),
    "psrp-overlapping-fragments": (_pipeline_data, _psrp(lambda oid, blob: _two_fragments(oid, blob, oid, True))),
    "psrp-huge-blob-length": (
        _pipeline_data,
        _psrp(lambda oid, blob: _fragment(oid, 0, _START | _END, blob, declared=0xFFFFFFFF)),
    ),
    "clixml-unknown-refid": (
        _pipeline_data,
        _psrp(lambda oid, blob: _fragment(oid, 0, _START | _END, _with_clixml(blob, _UNKNOWN_REF))),
    ),
    "clixml-deep-nesting": (
        _pipeline_data,
        _psrp(lambda oid, blob: _fragment(oid, 0, _START | _END, _with_clixml(blob, _DEEP_CLIXML))),
    ),
}

REQUEST_MODES = ("immediate-timeout", "endless-timeout", "stalled-receives")
MODES = tuple(REPLY_MODES) + ("no-final-token",) + REQUEST_MODES
FRAMING_MODES = ("bad-status-line", "bad-chunked", "truncated-body", "length-mismatch")


class Misbehaviour:
    def __init__(self, mode: Optional[str], stats: Optional[Stats] = None) -> None:
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown misbehave mode {mode!r}")
        self.mode = mode
        self._stats = stats
        self._lock = threading.Lock()
        self._spent = False
        self._window_end: Optional[float] = None

    def _claim(self) -> bool:
        with self._lock:
            if self._spent:
                return False
            self._spent = True
            return True

    def stall(self, plaintext: bytes, max_timeout: float) -> Optional[SoapReply]:
        """For the Receive timing modes: the OperationTimeout fault that answers this request
        without handling it (after holding it, for ``stalled-receives``), or None to handle it."""
        if self.mode not in REQUEST_MODES or b"Receive" not in plaintext:
            return None
        try:
            request = soap.parse_request(plaintext)
        except (soap.MalformedRequest, faults.WSManFault):
            return None
        if request.action != ACTION_RECEIVE:
            return None
        if self.mode == "immediate-timeout":
            now = time.monotonic()
            with self._lock:
                if self._window_end is None:
                    self._window_end = now + IMMEDIATE_SECONDS
                if now >= self._window_end:
                    return None
        else:
            asked = request.operation_timeout if request.operation_timeout is not None else max_timeout
            time.sleep(min(asked, max_timeout))
        if self._stats is not None:
            self._stats.bump("timeouts_injected")
        xml = soap.fault_envelope(faults.operation_timeout(), request.message_id, MACHINE)
        return SoapReply(500, xml, request.action, request.message_id)

    def apply(self, request_action: Optional[str], status: int, xml: bytes, sealed: bool) -> Tampered:
        found = REPLY_MODES.get(self.mode or "")
        if found is None:
            return Tampered(xml)
        when, tamper = found
        if not when(request_action, status, xml, sealed) or not self._claim():
            return Tampered(xml)
        tampered = tamper(xml)
        if self.mode == "no-shell-id":
            match = re.search(rb"<rsp:ShellId>([^<]*)</rsp:ShellId>", xml)
            tampered.forget_shell = match.group(1).decode() if match else None
        return tampered


def seal(xml: bytes, wrap: encryption.Wrap, protocol: str, fault: Optional[str]) -> Tuple[str, bytes]:
    """Seal a reply, breaking the seal as ``fault`` says (see the module doc)."""
    if fault == "bad-seal":
        return encryption.seal(xml, wrap, True, protocol)
    if fault == "seal-wrong-sequence":
        wrap(b"a message the client never sees")
        return encryption.seal(xml, wrap, False, protocol)
    if fault == "seal-truncated":
        header, ciphertext = wrap(xml)
        return encryption.content_type(protocol), encryption.frame(header, ciphertext[:-16], len(xml), protocol)
    return encryption.seal(xml, wrap, False, protocol)


def framed(mode: str, status_line: bytes, headers: List[Tuple[str, str]], body: bytes) -> Tuple[bytes, bool]:
    """The raw bytes of a reply whose HTTP framing is broken as ``mode`` says, and whether the
    connection is to be closed after them."""
    head = b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)
    if mode == "bad-status-line":
        return b"HTTP/1.1 two hundred OK\r\n" + head + b"Content-Length: %d\r\n\r\n" % len(body) + body, True
    if mode == "bad-chunked":
        return status_line + head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + body + b"\r\n0\r\n\r\n", True
    if mode == "truncated-body":
        return status_line + head + b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2], True
    if mode == "length-mismatch":
        return status_line + head + b"Content-Length: %d\r\n\r\n" % (len(body) - 100) + body, False
    raise ValueError(mode)
