"""Replays a recorded Windows WinRM conversation to a live client.

``python -m psremote_testserver.replay --port 0 --transcript FILE [--user U --password P]``
prints one line, the endpoint URL, and answers every POST (Basic auth, plaintext SOAP, HTTP/1.1
keep-alive) with the response a real Windows server gave to the equivalent request in FILE
(one of ``core/tests/data/windows-transcripts/*.yml``).

Matching is not by global position. Recorded exchanges are grouped into queues keyed by
(wsa:Action, target), where the target is the n-th shell of the transcript (``shell1``) or the
k-th command created in that shell (``shell1/cmd2``; every Command makes a new one, even when
the recorded client reused its CommandId); a request takes the next unused exchange of its
own queue. Identifiers are translated both ways:

* ShellId: the client's ``rsp:Shell/@ShellId`` from its Create (PSRP clients choose it), or,
  when the client leaves it to the server (cmd shells), the recorded one is handed out.
* CommandId: the client's ``rsp:CommandLine/@CommandId`` or the recorded one.
* In responses: ``a:RelatesTo`` becomes the request's MessageID; recorded ShellId/CommandId
  text becomes the client's; inside PSRP payloads (``rsp:Stream`` and ``connectResponseXml``)
  the RPID/PID of each message header is rewritten to the client's GUID in .NET byte order
  (recordings made before 2019 carry the client's GUIDs in RFC order, echoed by the server:
  those are recognised too; null RPIDs stay null), reassembling messages per object and
  keeping the fragment boundaries; and the ``ci`` of RUNSPACE_AVAILABILITY answers is mapped
  from the recorded client's call ids to the live client's (pypsrp counts from 0).

Differences between clients that the server absorbs:

* A Receive is answered with its recorded response only once the requests the recorded
  client made before it on the same target (a pool Receive: Create and shell-level Sends; a
  command Receive: its Command, Sends and Signals) have been made, with all their PSRP
  messages. Until then, and when its queue is empty, a shell-level Receive is held like a
  real long poll and answered with an OperationTimeout fault after min(OperationTimeout,
  --hold-cap) seconds, so a client that keeps a pool Receive posted (as psremote does) sees
  what Windows would send.
* PSRP Sends are matched by the messages they carry (numbered per pipeline and stream), not
  by count: a live Send carrying messages of a recorded Send gets that Send's response; one
  carrying the rest of an already answered Send (the client split what the recorded client
  sent at once) gets a made-up SendResponse, listed under ``synthesized``.
* A Signal for a command the recording never signals (psremote's Signal Terminate after a
  pipeline, absent from 2018 recordings) gets a SignalResponse, listed under ``synthesized``.

What the live client sends is compared with the recording and differences are listed under
``mismatches``: cmd-shell Create (environment, working directory, WINRS_NOPROFILE,
WINRS_CODEPAGE), Command (command line, WINRS_SKIP_CMD_SHELL) and stdin; the PSRP shell's
resource URI and WINRS_NOPROFILE; each PSRP message's type, and for CREATE_PIPELINE its
statements, commands, arguments, merges and flags, for other messages their values
(type names, reference ids and call ids aside). ``--skip 3,4`` marks recorded exchanges the
client is not expected to make.

Recorded ``transport_error`` entries are answered with their HTTP status and recorded body;
``http_error`` entries (pypsrp's injected ConnectionError) drop the connection without a reply.
A request without a matching recorded exchange gets HTTP 500 with a WS-Man fault
"replay: unexpected <action> on <target>" and is logged.

``GET /_control/state`` returns JSON: ``served`` (count), ``unexpected`` (action names),
``unused`` ([action, target] of recorded exchanges never served), ``incomplete`` (served, but
some of their PSRP messages never sent), ``synthesized``, ``mismatches``, ``skipped``,
``timeouts`` (OperationTimeout faults made up), ``trace`` (what answered each request, in
order) and ``client_messages`` (the live client's PSRP messages, decoded).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import select
import signal
import socket
import struct
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
PS_NS = "http://schemas.microsoft.com/powershell"
PS_RESOURCE = "http://schemas.microsoft.com/powershell/"

ACTION_RECEIVE = SHELL + "/Receive"
ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_COMMAND = SHELL + "/Command"

OPERATION_TIMEOUT_CODE = 2150858793
UNEXPECTED_CODE = 2147500037  # E_FAIL: nothing a client would treat as control flow

# PSRP message types whose names appear in diagnostics.
MESSAGE_TYPES = {
    0x00010002: "SESSION_CAPABILITY",
    0x00010004: "INIT_RUNSPACEPOOL",
    0x00010005: "PUBLIC_KEY",
    0x00010006: "ENCRYPTED_SESSION_KEY",
    0x00010007: "PUBLIC_KEY_REQUEST",
    0x00010008: "CONNECT_RUNSPACEPOOL",
    0x00021002: "SET_MAX_RUNSPACES",
    0x00021003: "SET_MIN_RUNSPACES",
    0x00021004: "RUNSPACE_AVAILABILITY",
    0x00021005: "RUNSPACEPOOL_STATE",
    0x00021006: "CREATE_PIPELINE",
    0x00021007: "GET_AVAILABLE_RUNSPACES",
    0x00021008: "USER_EVENT",
    0x00021009: "APPLICATION_PRIVATE_DATA",
    0x0002100A: "GET_COMMAND_METADATA",
    0x0002100B: "RUNSPACEPOOL_INIT_DATA",
    0x0002100C: "RESET_RUNSPACE_STATE",
    0x00021100: "RUNSPACEPOOL_HOST_CALL",
    0x00021101: "RUNSPACEPOOL_HOST_RESPONSE",
    0x00041002: "PIPELINE_INPUT",
    0x00041003: "END_OF_PIPELINE_INPUT",
    0x00041004: "PIPELINE_OUTPUT",
    0x00041005: "ERROR_RECORD",
    0x00041006: "PIPELINE_STATE",
    0x00041007: "DEBUG_RECORD",
    0x00041008: "VERBOSE_RECORD",
    0x00041009: "WARNING_RECORD",
    0x00041010: "PROGRESS_RECORD",
    0x00041011: "INFORMATION_RECORD",
    0x00041100: "PIPELINE_HOST_CALL",
    0x00041101: "PIPELINE_HOST_RESPONSE",
}
RUNSPACE_AVAILABILITY = 0x00021004
# Client messages that carry a call id answered by RUNSPACE_AVAILABILITY.
CI_REQUESTS = {0x00021002, 0x00021003, 0x00021007, 0x0002100C}

CI_RE = re.compile(rb'(<I64 N="ci">)(-?\d+)(</I64>)', re.IGNORECASE)
STREAM_RE = re.compile(r"<((?:[\w.-]+:)?Stream)\b([^>]*?)(/>|>([^<]*)</\1>)", re.DOTALL)
CONNECT_RESPONSE_RE = re.compile(r"<((?:[\w.-]+:)?connectResponseXml)\b([^>]*)>([^<]*)</\1>", re.DOTALL)
RELATES_TO_RE = re.compile(r"(<(?:[\w.-]+:)?RelatesTo\b[^>]*>)([^<]*)(</(?:[\w.-]+:)?RelatesTo>)")
NAME_ATTR_RE = re.compile(r'\bName="([^"]*)"')


def short_action(action: str) -> str:
    return action.rstrip("/").rsplit("/", 1)[-1] if action else "?"


# --------------------------------------------------------------------------------------------
# Transcript files (the YAML subset the recordings use)


def _scalar(text: str) -> Any:
    value = text.strip()
    if value in ("", "~", "null", "Null", "NULL"):
        return None
    if value in ("true", "True", "yes", "Yes"):
        return True
    if value in ("false", "False", "no", "No"):
        return False
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if re.fullmatch(r"-?\d+\.\d*", value):
        return float(value)
    return value


def _quoted(first: str, lines: List[str], at: int) -> Tuple[str, int]:
    """Reads a single-quoted scalar starting with ``first`` (which begins with a quote), folded
    over the following lines as YAML does. Returns the value and the next line index."""
    parts = [first[1:]]

    def closed(piece: str) -> bool:
        # The closing quote is a quote not doubled.
        stripped = piece.rstrip()
        if not stripped.endswith("'"):
            return False
        run = len(stripped) - len(stripped.rstrip("'"))
        return run % 2 == 1

    while not closed(parts[-1]) and at < len(lines):
        parts.append(lines[at].strip())
        at += 1
    last = parts[-1].rstrip()
    parts[-1] = last[:-1]
    # Folding: a line break between non-empty lines is one space, each empty line a newline.
    out = parts[0].rstrip(" ")
    pending_newlines = 0
    for piece in parts[1:]:
        if piece == "":
            pending_newlines += 1
            continue
        out += ("\n" * pending_newlines) if pending_newlines else " "
        pending_newlines = 0
        out += piece
    out += "\n" * pending_newlines
    return out.replace("''", "'"), at


def parse_transcript(text: str) -> List[Dict[str, Any]]:
    """The ``messages:`` list as dicts with ``request``, ``response`` and the optional keys
    ``transport_error`` (dict), ``http_error``, ``auth_error``, ``timeout``, ``overrides``."""
    lines = text.splitlines()
    entries: List[Dict[str, Any]] = []
    current: Optional[Dict[str, Any]] = None
    nested_key: Optional[str] = None
    plain_key: Optional[str] = None
    key_re = re.compile(r"^([A-Za-z_][\w-]*):(?:\s+(.*))?$")
    at = 0
    while at < len(lines):
        line = lines[at]
        at += 1
        if not line.strip() or line.lstrip().startswith("#") or line.rstrip() == "messages:":
            continue
        if line.startswith("- "):
            current = {}
            entries.append(current)
            body = line[2:]
        elif line.startswith("  ") and not line.startswith("   ") and not line.startswith("  - ") and current is not None:
            body = line[2:]
        else:
            if current is not None and plain_key is not None and line.startswith("    "):
                # A plain scalar folded over more-indented lines (long envelopes are).
                current[plain_key] += " " + line.strip()
                continue
            # Nested content under the last key (e.g. transport_error: {protocol, code}).
            if current is not None and nested_key is not None:
                inner = line.strip()
                if isinstance(current.get(nested_key), dict):
                    m = key_re.match(inner.lstrip("- "))
                    if m and m.group(2) is not None:
                        current[nested_key][m.group(1)] = _scalar(m.group(2))
                current.setdefault("_raw_" + nested_key, []).append(line)
            continue
        m = key_re.match(body)
        if not m:
            continue
        key, value = m.group(1), m.group(2)
        plain_key = None
        if value is None or value.split("#", 1)[0].strip() == "":
            current[key] = {}
            nested_key = key
            continue
        nested_key = None
        if value.startswith("'"):
            current[key], at = _quoted(value, lines, at)
        elif value.startswith('"'):
            current[key] = json.loads(value)
        else:
            current[key] = _scalar(value) if key not in ("request", "response") or value.strip() == "null" else value
            if isinstance(current[key], str):
                plain_key = key
    return entries


# --------------------------------------------------------------------------------------------
# SOAP and PSRP helpers


@dataclass
class Payload:
    stream: str  # "stdin" or "pr" (creationXml and Command arguments count as "stdin")
    command_id: Optional[str]
    data: bytes
    end: bool = False


@dataclass
class RequestInfo:
    action: str
    message_id: str
    resource_uri: str
    shell_id: Optional[str]
    operation_timeout: Optional[float]
    options: Dict[str, str] = field(default_factory=dict)
    new_shell_id: Optional[str] = None  # rsp:Shell/@ShellId on Create
    new_command_id: Optional[str] = None  # rsp:CommandLine/@CommandId on Command
    command_id: Optional[str] = None  # CommandId referenced by Receive/Send/Signal/...
    environment: List[Tuple[str, str]] = field(default_factory=list)
    working_directory: Optional[str] = None
    command_line: Optional[List[str]] = None  # cmd shell: command then arguments
    signal_code: Optional[str] = None
    payloads: List[Payload] = field(default_factory=list)

    @property
    def is_psrp(self) -> bool:
        return self.resource_uri.startswith(PS_RESOURCE)


def _q(ns: str, name: str) -> str:
    return "{%s}%s" % (ns, name)


def parse_duration(text: Optional[str]) -> Optional[float]:
    if not text:
        return None
    m = re.fullmatch(r"\s*P(?:(\d+)D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d*)?)S)?\s*", text)
    if not m:
        return None
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def _b64(text: Optional[str]) -> bytes:
    return base64.b64decode("".join((text or "").split()))


def describe_request(text: str) -> RequestInfo:
    root = ET.fromstring(text.encode("utf-8") if isinstance(text, str) else text)
    header = root.find(_q(SOAP, "Header"))
    body = root.find(_q(SOAP, "Body"))

    def header_text(ns: str, name: str) -> str:
        el = header.find(_q(ns, name)) if header is not None else None
        return (el.text or "").strip() if el is not None else ""

    shell_id = None
    options: Dict[str, str] = {}
    if header is not None:
        for sel in header.iter(_q(WSMAN, "Selector")):
            if (sel.get("Name") or "").lower() == "shellid":
                shell_id = (sel.text or "").strip()
        for opt in header.iter(_q(WSMAN, "Option")):
            options[opt.get("Name") or ""] = (opt.text or "").strip()
    info = RequestInfo(
        action=header_text(WSA, "Action"),
        message_id=header_text(WSA, "MessageID"),
        resource_uri=header_text(WSMAN, "ResourceURI"),
        shell_id=shell_id,
        operation_timeout=parse_duration(header_text(WSMAN, "OperationTimeout")),
        options=options,
    )
    if body is None:
        return info
    for el in body.iter():
        tag = el.tag
        if tag == _q(SHELL, "Shell") and el.get("ShellId"):
            info.new_shell_id = el.get("ShellId")
        elif tag == _q(SHELL, "Variable"):
            info.environment.append((el.get("Name") or "", el.text or ""))
        elif tag == _q(SHELL, "WorkingDirectory"):
            info.working_directory = el.text or ""
        elif tag == _q(SHELL, "CommandLine"):
            info.new_command_id = el.get("CommandId")
            command = el.find(_q(SHELL, "Command"))
            arguments = [a.text or "" for a in el.findall(_q(SHELL, "Arguments"))]
            if info.is_psrp:
                for arg in arguments:
                    info.payloads.append(Payload("stdin", el.get("CommandId"), _b64(arg)))
            else:
                info.command_line = [(command.text or "") if command is not None else ""] + arguments
        elif el.get("CommandId") and info.command_id is None:
            info.command_id = el.get("CommandId")
        if tag == _q(SHELL, "Stream"):
            try:
                data = _b64(el.text)
            except ValueError:
                data = b""
            end = (el.get("End") or "").lower() == "true"
            info.payloads.append(Payload(el.get("Name") or "", el.get("CommandId"), data, end))
        elif tag == _q(SHELL, "Code"):
            info.signal_code = (el.text or "").strip()
        elif tag in (_q(PS_NS, "creationXml"), _q(PS_NS, "connectXml")):
            info.payloads.append(Payload("stdin", None, _b64(el.text)))
    return info


@dataclass
class Fragment:
    object_id: int
    fragment_id: int
    flags: int
    blob: bytes

    @property
    def start(self) -> bool:
        return bool(self.flags & 1)

    @property
    def end(self) -> bool:
        return bool(self.flags & 2)

    def pack(self) -> bytes:
        return struct.pack(">QQBI", self.object_id, self.fragment_id, self.flags, len(self.blob)) + self.blob


def split_fragments(data: bytes) -> List[Fragment]:
    out = []
    at = 0
    while at + 21 <= len(data):
        oid, fid, flags, length = struct.unpack_from(">QQBI", data, at)
        out.append(Fragment(oid, fid, flags, data[at + 21 : at + 21 + length]))
        at += 21 + length
    if at != len(data):
        raise ValueError("truncated PSRP fragment")
    return out


class MessageTracker:
    """Numbers the PSRP messages one sender writes to one stream (0, 1, 2, ... in the order
    their first fragment appears) and reassembles them."""

    def __init__(self) -> None:
        self.partial: Dict[int, Tuple[int, bytearray]] = {}
        self.next = 0
        self.types: Dict[int, int] = {}

    def feed(self, data: bytes) -> Tuple[List[int], List[Tuple[int, bytes]]]:
        return self.feed_fragments(split_fragments(data))

    def feed_fragments(self, fragments: List["Fragment"]) -> Tuple[List[int], List[Tuple[int, bytes]]]:
        touched: List[int] = []
        completed: List[Tuple[int, bytes]] = []
        for frag in fragments:
            if frag.start or frag.object_id not in self.partial:
                self.partial[frag.object_id] = (self.next, bytearray())
                self.next += 1
            ordinal, buf = self.partial[frag.object_id]
            buf += frag.blob
            if ordinal not in touched:
                touched.append(ordinal)
            if len(buf) >= 8 and ordinal not in self.types:
                self.types[ordinal] = message_type(bytes(buf[:8]))
            if frag.end:
                completed.append((ordinal, bytes(buf)))
                del self.partial[frag.object_id]
        return touched, completed


def message_type(message: bytes) -> int:
    return struct.unpack_from("<I", message, 4)[0] if len(message) >= 8 else 0


def message_ci(message: bytes) -> Optional[int]:
    m = CI_RE.search(message[40:])
    return int(m.group(2)) if m else None


def _fault(subcode_value: str, subcode: str, code: int, text: str, relates_to: str) -> str:
    esc = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        '<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
        'xmlns:e="http://schemas.xmlsoap.org/ws/2004/08/eventing" '
        'xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" '
        'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
        'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
        "<s:Header><a:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header>"
        "<s:Body><s:Fault>"
        f"<s:Code><s:Value>{subcode_value}</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{esc}</s:Text></s:Reason>'
        '<s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" '
        f'Code="{code}" Machine="replay"><f:Message>{esc}</f:Message></f:WSManFault></s:Detail>'
        "</s:Fault></s:Body></s:Envelope>"
    )


def operation_timeout_fault(relates_to: str) -> str:
    text = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  "
    return _fault("s:Receiver", "w:TimedOut", OPERATION_TIMEOUT_CODE, text, relates_to)


def unknown_shell_fault(relates_to: str) -> str:
    text = "The WS-Management service cannot process the request because the request contained invalid selectors for the resource. "
    return _fault("s:Sender", "w:InvalidSelectors", 2150858843, text, relates_to)


def unexpected_fault(text: str, relates_to: str) -> str:
    return _fault("s:Receiver", "w:InternalError", UNEXPECTED_CODE, text, relates_to)


def _clixml(message: bytes) -> Optional[ET.Element]:
    data = message[40:]
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        return None
    try:
        return ET.fromstring(data)
    except ET.ParseError:
        return None


def _leaves(el: Optional[ET.Element], skip_names=("ci",)) -> List[Tuple[str, str, str]]:
    """(tag, N, text) of every leaf, ignoring type names, ToString and reference ids: what a
    value means rather than how a serializer spelled it."""
    out: List[Tuple[str, str, str]] = []
    if el is None:
        return out

    def walk(e: ET.Element) -> None:
        if e.tag in ("TN", "TNRef", "ToString"):
            return
        name = e.get("N") or ""
        if name.lower() in skip_names:  # pypsrp writes "CI" where PowerShell writes "ci"
            return
        children = list(e)
        if not children:
            out.append((e.tag, name, (e.text or "").strip()))
        for c in children:
            walk(c)

    walk(el)
    return out


def _ms(obj: Optional[ET.Element]) -> Dict[str, ET.Element]:
    props: Dict[str, ET.Element] = {}
    if obj is None:
        return props
    for ms in obj.findall("MS"):
        for child in ms:
            if child.get("N") is not None:
                props[child.get("N")] = child
    return props


def _items(obj: Optional[ET.Element]) -> List[ET.Element]:
    if obj is None:
        return []
    lst = obj.find("LST")
    if lst is None:
        lst = obj.find("IE")
    return list(lst) if lst is not None else []


def _merge_value(el: Optional[ET.Element]) -> str:
    if el is None:
        return "-"
    number = el.find("I32")
    return (number.text or "").strip() if number is not None else "-"


def pipeline_summary(message: bytes, ignore_script_text: bool = False) -> Any:
    """What a CREATE_PIPELINE asks for: statements of commands (text, script flag, arguments,
    merges) plus the input and history flags. Host info and enum spellings are left out.
    With ``ignore_script_text`` a script's text is left out too (the client runs its own
    script where the recorded client ran another; everything else must still match)."""
    root = _clixml(message)
    if root is None:
        return None
    top = _ms(root)
    shell = _ms(top.get("PowerShell"))
    extra = shell.get("ExtraCmds")
    if extra is not None and extra.tag == "Obj":
        statements = [_ms(s).get("Cmds") for s in _items(extra)]
    else:
        statements = [shell.get("Cmds")]
    out = []
    for cmds in statements:
        stmt = []
        for cmd in _items(cmds):
            p = _ms(cmd)
            args = []
            for arg in _items(p.get("Args")):
                a = _ms(arg)
                name = a.get("N")
                args.append(
                    (None if name is None or name.tag == "Nil" else (name.text or ""), _leaves(a.get("V"), ()))
                )
            is_script = (p["IsScript"].text or "") if "IsScript" in p else None
            text = (p["Cmd"].text or "") if "Cmd" in p else None
            if ignore_script_text and is_script == "true":
                text = "<script text not compared>"
            stmt.append(
                {
                    "cmd": text,
                    "script": is_script,
                    "args": args,
                    "merge": [_merge_value(p.get(n)) for n in ("MergeMyResult", "MergeToResult")],
                }
            )
        out.append(stmt)
    flags = {n: (top[n].text or "") for n in ("NoInput", "AddToHistory", "IsNested") if n in top}
    flags["RemoteStreamOptions"] = _merge_value(top.get("RemoteStreamOptions"))
    return {"statements": out, "flags": flags}


def message_summary(message: bytes, ignore_script_text: bool = False) -> Any:
    """The part of a client message that must match the recording."""
    kind = message_type(message)
    if kind == 0x00021006:
        return pipeline_summary(message, ignore_script_text)
    if kind in (0x00010002, 0x00010005, 0x00010008):  # capability, public key (random), connect
        return None
    if kind == 0x00010004:
        props = _ms(_clixml(message))
        return [(n, (props[n].text or "")) for n in ("MinRunspaces", "MaxRunspaces") if n in props]
    return _leaves(_clixml(message))


# --------------------------------------------------------------------------------------------
# The recorded conversation

StreamKey = Tuple[int, Optional[int], str]  # (shell number, command number or None, stream)


@dataclass
class Recorded:
    index: int
    entry: Dict[str, Any]
    info: RequestInfo
    response: Optional[str]
    key: Tuple[str, str] = ("", "")
    shell: Optional[int] = None  # shell number (1-based) the exchange belongs to
    command: Optional[int] = None  # command number within the shell (1-based)
    creates_shell: Optional[int] = None
    creates_command: Optional[int] = None
    prerequisites: List[int] = field(default_factory=list)
    touches: Dict[StreamKey, List[int]] = field(default_factory=dict)  # PSRP message ordinals
    served: bool = False
    skipped: bool = False

    @property
    def name(self) -> str:
        return short_action(self.info.action)


@dataclass
class ShellRec:
    number: int
    recorded_id: str  # the id in the recording's selectors
    recorded_rpid: Optional[str]  # the recorded client's rsp:Shell/@ShellId (PSRP RPID)
    psrp: bool
    created: bool  # by a Create in the transcript (else only referenced)
    client_id: Optional[str] = None
    commands: Dict[str, int] = field(default_factory=dict)  # recorded CommandId (upper) -> latest number
    command_recorded: Dict[int, str] = field(default_factory=dict)  # number -> recorded CommandId
    command_created: Dict[int, bool] = field(default_factory=dict)
    command_client: Dict[int, str] = field(default_factory=dict)  # number -> client CommandId
    deleted: bool = False


def target_name(shell: Optional[int], command: Optional[int]) -> str:
    if shell is None:
        return "-"
    return f"shell{shell}" if command is None else f"shell{shell}/cmd{command}"


def _response_shell_id(response: Optional[str]) -> Optional[str]:
    if not response:
        return None
    m = re.search(r'<(?:[\w.-]+:)?Selector Name="ShellId">([^<]+)<', response)
    if m:
        return m.group(1).strip()
    m = re.search(r"<(?:[\w.-]+:)?ShellId>([^<]+)<", response)
    return m.group(1).strip() if m else None


def _response_command_id(response: Optional[str]) -> Optional[str]:
    if not response:
        return None
    m = re.search(r"<(?:[\w.-]+:)?CommandId>([^<]+)<", response)
    return m.group(1).strip() if m else None


def _simple_response(action: str, body: str, relates_to: str) -> str:
    return (
        '<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
        'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
        'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" '
        'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
        f"<s:Header><a:Action>{action}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )


def _is_true(value: Optional[str]) -> bool:
    return (value or "").strip().lower() == "true"


@dataclass
class Answer:
    kind: str  # "recorded", "synthesized", "timeout", "unexpected", "gone"
    record: Optional[Recorded] = None
    text: str = ""
    status: int = 200


class Conversation:
    """The recorded exchanges, their queues and the id bindings to the live client."""

    def __init__(
        self, entries: List[Dict[str, Any]], hold_cap: float = 2.0, skip=(), log=None, ignore_script_text: bool = False
    ) -> None:
        self.lock = threading.Condition()
        self.ignore_script_text = ignore_script_text
        self.hold_cap = hold_cap
        self.log = log or (lambda text: None)
        self.exchanges: List[Recorded] = []
        self.shells: List[ShellRec] = []
        self.shell_by_recorded: Dict[str, int] = {}
        self.queues: Dict[Tuple[str, str], List[int]] = {}
        self.served = 0
        self.timeouts = 0
        self.unexpected: List[str] = []
        self.unexpected_detail: List[Dict[str, str]] = []
        self.synthesized: List[List[str]] = []
        self.mismatches: List[str] = []
        self.trace: List[str] = []
        # PSRP messages per stream, numbered in send order, on both sides.
        self.recorded_messages: Dict[StreamKey, Dict[int, bytes]] = {}
        self.live_trackers: Dict[StreamKey, MessageTracker] = {}
        self.recorded_routes: Dict[Tuple[int, int], Optional[int]] = {}
        self.live_routes: Dict[Tuple[int, int], Optional[int]] = {}
        self.live_seen: Dict[StreamKey, set] = {}
        self.client_messages: List[Dict[str, Any]] = []
        self.ci_map: Dict[int, Dict[int, int]] = {}  # shell -> recorded ci -> live ci
        self._build(entries, set(skip))

    # -- building ----------------------------------------------------------------------------

    def _shell_for(self, recorded_id: str, psrp: bool) -> int:
        key = recorded_id.upper()
        if key not in self.shell_by_recorded:
            number = len(self.shells) + 1
            self.shells.append(ShellRec(number, recorded_id, None, psrp, created=False))
            self.shell_by_recorded[key] = number
        return self.shell_by_recorded[key]

    def _command_for(self, shell: ShellRec, recorded_id: str, created: bool) -> int:
        key = recorded_id.upper()
        # Every Command makes a new command, even when the recorded client reused its id
        # (pypsrp invokes one PowerShell object several times with the same CommandId).
        if created or key not in shell.commands:
            number = len(shell.command_recorded) + 1
            shell.commands[key] = number
            shell.command_recorded[number] = recorded_id
            shell.command_created[number] = created
        return shell.commands[key]

    def _build(self, entries: List[Dict[str, Any]], skip: set) -> None:
        trackers: Dict[StreamKey, MessageTracker] = {}
        for index, entry in enumerate(entries):
            info = describe_request(entry["request"])
            response = entry.get("response")
            if not isinstance(response, str):
                response = None
            rec = Recorded(index, entry, info, response, skipped=index in skip)
            if info.action == ACTION_CREATE and info.shell_id is None:
                recorded_id = _response_shell_id(response) or info.new_shell_id
                if recorded_id:
                    number = self._shell_for(recorded_id, info.is_psrp)
                    shell = self.shells[number - 1]
                    shell.created = True
                    shell.recorded_rpid = info.new_shell_id or recorded_id
                    rec.creates_shell = number
                    rec.shell = number
                rec.key = (info.action, "-")
            elif info.shell_id:
                number = self._shell_for(info.shell_id, info.is_psrp)
                shell = self.shells[number - 1]
                rec.shell = number
                if info.action == ACTION_COMMAND:
                    recorded_cmd = _response_command_id(response) or info.new_command_id
                    if recorded_cmd:
                        rec.creates_command = self._command_for(shell, recorded_cmd, True)
                    rec.key = (info.action, target_name(number, None))
                elif info.command_id:
                    rec.command = self._command_for(shell, info.command_id, False)
                    rec.key = (info.action, target_name(number, rec.command))
                else:
                    rec.key = (info.action, target_name(number, None))
            else:
                rec.key = (info.action, "-")
            if info.is_psrp and rec.shell is not None and not rec.skipped:
                touched, completed = self._feed(rec.shell, rec.creates_command, info.payloads, True, trackers)
                rec.touches = touched
                for sk, ordinal, msg in completed:
                    self.recorded_messages.setdefault(sk, {})[ordinal] = msg
            self.exchanges.append(rec)
            if rec.skipped:
                rec.served = True
            else:
                self.queues.setdefault(rec.key, []).append(index)
        # Happens-before: a Receive waits for the requests the recorded client made before it
        # on the same target (a pool Receive: shell-level Sends, Create, Connect...; a command
        # Receive: its Command, Sends and Signals), since its answer may depend on them.
        for rec in self.exchanges:
            if rec.info.action != ACTION_RECEIVE or rec.shell is None:
                continue
            rec.prerequisites = [
                other.index
                for other in self.exchanges[: rec.index]
                if other.shell == rec.shell
                and other.info.action != ACTION_RECEIVE
                and not other.skipped
                and (
                    other.creates_shell == rec.shell
                    or (rec.command is None and other.command is None and other.creates_command is None)
                    or (rec.command is not None and rec.command in (other.command, other.creates_command))
                )
            ]

    def _command_by_pid(self, shell: ShellRec, pid: bytes, recorded: bool) -> Optional[int]:
        """The command a PSRP message's PID names; recorded ids may be in RFC byte order."""
        found = None
        for number in sorted(shell.command_recorded):
            text = shell.command_recorded[number] if recorded else shell.command_client.get(number)
            try:
                g = uuid.UUID(text) if text else None
            except ValueError:
                g = None
            if g is not None and (pid == g.bytes_le or (recorded and pid == g.bytes)):
                found = number  # the latest command with that id
        return found

    def _feed(self, shell_no: int, creates: Optional[int], payloads: List[Payload], recorded: bool, trackers):
        """Numbers the PSRP messages of one request per stream. A message belongs to the
        pipeline its header's PID names (else to the CommandId of its rsp:Stream, else to the
        pool): 2018 pypsrp sent pipeline host responses without a CommandId attribute."""
        shell = self.shells[shell_no - 1]
        routes = self.recorded_routes if recorded else self.live_routes
        touched: Dict[StreamKey, List[int]] = {}
        completed: List[Tuple[StreamKey, int, bytes]] = []
        for p in payloads:
            if creates is not None:
                default: Optional[int] = creates
            elif p.command_id:
                if recorded:
                    default = shell.commands.get(p.command_id.upper())
                else:
                    default = next(
                        (n for n, c in sorted(shell.command_client.items(), reverse=True) if c.upper() == p.command_id.upper()),
                        None,
                    )
            else:
                default = None
            try:
                fragments = split_fragments(p.data)
            except ValueError:
                if not recorded:
                    self.mismatches.append(f"{target_name(shell_no, default)}: a malformed PSRP fragment")
                continue
            for frag in fragments:
                route_key = (shell_no, frag.object_id)
                if frag.start and len(frag.blob) >= 40:
                    pid = frag.blob[24:40]
                    command = default if pid == bytes(16) else (self._command_by_pid(shell, pid, recorded) or default)
                    routes[route_key] = command
                command = routes.get(route_key, default)
                sk = (shell_no, command, p.stream or "stdin")
                t, c = trackers.setdefault(sk, MessageTracker()).feed_fragments([frag])
                ords = touched.setdefault(sk, [])
                ords.extend(o for o in t if o not in ords)
                completed.extend((sk, o, m) for o, m in c)
        return touched, completed

    # -- binding live ids ----------------------------------------------------------------------

    def _bind_shell(self, client_id: str, action: str) -> Optional[int]:
        for shell in self.shells:
            if shell.client_id and shell.client_id.upper() == client_id.upper():
                return shell.number
        # A cmd shell's recorded id handed to the client, or a shell the recording only
        # references (never creates): bind on first use.
        for shell in self.shells:
            if shell.client_id is None and shell.recorded_id.upper() == client_id.upper():
                shell.client_id = client_id
                return shell.number
        for shell in self.shells:
            if shell.client_id is None and not shell.created and self.queues.get((action, target_name(shell.number, None))):
                shell.client_id = client_id
                return shell.number
        return None

    def _bind_command(self, shell: ShellRec, client_id: str, action: str) -> Optional[int]:
        for number, cid in sorted(shell.command_client.items(), reverse=True):
            if cid.upper() == client_id.upper():
                return number
        for number, rid in shell.command_recorded.items():
            if number not in shell.command_client and rid.upper() == client_id.upper():
                shell.command_client[number] = client_id
                return number
        # Unknown: a command the recording referenced without creating it (a deliberately
        # wrong CommandId) that has this action queued.
        for number in sorted(shell.command_recorded):
            if (
                number not in shell.command_client
                and not shell.command_created[number]
                and self.queues.get((action, target_name(shell.number, number)))
            ):
                shell.command_client[number] = client_id
                return number
        return None

    def resolve(self, info: RequestInfo) -> Tuple[Tuple[str, str], Optional[int], Optional[int]]:
        """The queue key for a live request, and its shell/command numbers."""
        if not info.shell_id:
            return (info.action, "-"), None, None
        number = self._bind_shell(info.shell_id, info.action)
        if number is None:
            return (info.action, "unknown-shell"), None, None
        shell = self.shells[number - 1]
        if info.action == ACTION_COMMAND or not info.command_id:
            return (info.action, target_name(number, None)), number, None
        command = self._bind_command(shell, info.command_id, info.action)
        if command is None:
            return (info.action, target_name(number, None) + "/unknown-cmd"), number, None
        return (info.action, target_name(number, command)), number, command

    # -- serving -------------------------------------------------------------------------------

    def _complete(self, rec: Recorded) -> bool:
        """Served, and (for PSRP) every message it carried has been sent by the live client."""
        if rec.skipped:
            return True
        if not rec.served:
            return False
        return all(set(ordinals) <= self.live_seen.get(sk, set()) for sk, ordinals in rec.touches.items())

    def _due(self, rec: Recorded) -> bool:
        return all(self._complete(self.exchanges[i]) for i in rec.prerequisites)

    def _head(self, key) -> Optional[Recorded]:
        queue = self.queues.get(key)
        return self.exchanges[queue[0]] if queue else None

    def _serve(self, rec: Recorded, how: str = "") -> None:
        self.queues[rec.key].remove(rec.index)
        rec.served = True
        self.served += 1
        self.trace.append(f"{rec.index}:{rec.name}:{rec.key[1]}{how}")

    def _unexpected(self, info: RequestInfo, target: str) -> Answer:
        text = f"replay: unexpected {short_action(info.action)} on {target}"
        self.unexpected.append(short_action(info.action))
        self.unexpected_detail.append({"action": short_action(info.action), "target": target})
        self.log(text)
        return Answer("unexpected", text=text)

    def take(self, info: RequestInfo, alive=lambda: True) -> Answer:
        """Chooses the answer for a live request."""
        with self.lock:
            key, shell_no, command_no = self.resolve(info)
            if info.action == ACTION_RECEIVE:
                return self._take_receive(info, key, shell_no, command_no, alive)
            if info.action == SHELL + "/Send" and info.is_psrp and shell_no is not None:
                answer = self._take_psrp_send(info, key, shell_no)
            else:
                rec = self._head(key)
                if rec is None:
                    answer = self._synthesize(info, key, shell_no, command_no)
                else:
                    self._serve(rec)
                    self._bind_created(rec, info)
                    self._observe(rec, info, shell_no)
                    answer = Answer("recorded", rec)
            self.lock.notify_all()
            return answer

    def _take_receive(self, info, key, shell_no, command_no, alive) -> Answer:
        wait = min(info.operation_timeout or 20.0, self.hold_cap)
        deadline = time.monotonic() + wait
        while True:
            rec = self._head(key)
            if rec is not None and self._due(rec):
                if not alive():
                    return Answer("gone")
                self._serve(rec)
                self.lock.notify_all()
                return Answer("recorded", rec)
            if rec is None and not (command_no is None and shell_no is not None):
                # A command-level Receive with nothing recorded has no reason to wait; a
                # shell-level one is a long poll.
                return self._unexpected(info, key[1])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.timeouts += 1
                return Answer("timeout")
            self.lock.wait(min(remaining, 0.25))
            if not alive():
                return Answer("gone")

    def _synthesize(self, info, key, shell_no, command_no) -> Answer:
        """Requests a real server answers trivially and the recorded client did not make."""
        name = short_action(info.action)
        shell = self.shells[shell_no - 1] if shell_no is not None else None
        if name == "Signal" and command_no is not None and shell is not None:
            # MS-WSMV: a client releases a finished command with Signal Terminate; older
            # pypsrp recordings skip it. After the shell's Delete, Windows says the shell is gone.
            self.synthesized.append([name, key[1]])
            self.trace.append(f"+:{name}:{key[1]}")
            if shell.deleted:
                return Answer("synthesized", text=unknown_shell_fault(info.message_id), status=500)
            return Answer("synthesized", text=_simple_response(SHELL + "/SignalResponse", "<rsp:SignalResponse/>", info.message_id))
        return self._unexpected(info, key[1])

    def _take_psrp_send(self, info: RequestInfo, key, shell_no: int) -> Answer:
        """Matches a PSRP Send by the messages it carries rather than by count: clients pack
        messages into Sends differently (one Send for input and end of input, or two)."""
        touched, completed = self._feed(shell_no, None, info.payloads, False, self.live_trackers)
        for sk, ords in touched.items():
            self.live_seen.setdefault(sk, set()).update(ords)
        # Any unserved recorded Send of the shell may carry these messages (the recorded client
        # may have addressed them differently).
        queue = [r for r in self.exchanges if r.name == "Send" and r.shell == shell_no and not r.served]
        if not touched:
            queue = [self.exchanges[i] for i in self.queues.get(key, [])]
        if not touched:
            rec = queue[0] if queue else None
            intersecting = [rec] if rec else []
        else:
            intersecting = [
                r for r in queue if any(set(r.touches.get(sk, ())) & set(ords) for sk, ords in touched.items())
            ]
        if intersecting:
            primary = intersecting[0]
            for r in intersecting:
                self._serve(r, "" if r is primary else " (merged)")
            # Recorded Sends whose messages the live client has now sent in full, in fewer Sends.
            for r in queue:
                if not r.served and r.touches and all(
                    set(o) <= self.live_seen.get(sk, set()) for sk, o in r.touches.items()
                ):
                    self._serve(r, " (merged)")
            self._compare_messages(completed, shell_no)
            return Answer("recorded", primary)
        self._compare_messages(completed, shell_no)
        if touched:
            # The rest of messages a recorded Send already carried (the live client split them).
            self.synthesized.append(["Send", key[1]])
            self.trace.append(f"+:Send:{key[1]}")
            return Answer("synthesized", text=_simple_response(SHELL + "/SendResponse", "<rsp:SendResponse/>", info.message_id))
        return self._unexpected(info, key[1])

    def _bind_created(self, rec: Recorded, info: RequestInfo) -> None:
        if rec.creates_shell is not None:
            shell = self.shells[rec.creates_shell - 1]
            shell.client_id = info.new_shell_id or shell.recorded_id
        if rec.creates_command is not None and rec.shell is not None:
            shell = self.shells[rec.shell - 1]
            shell.command_client[rec.creates_command] = info.new_command_id or shell.command_recorded[rec.creates_command]
        if rec.info.action == ACTION_DELETE and rec.shell is not None and rec.command is None:
            self.shells[rec.shell - 1].deleted = True

    def _observe(self, rec: Recorded, info: RequestInfo, shell_no: Optional[int]) -> None:
        """Feeds the live request's PSRP messages and compares what must match the recording."""
        name = rec.name
        where = rec.key[1] if rec.creates_command is None else target_name(rec.shell, rec.creates_command)
        if not info.is_psrp:
            r = rec.info
            if name == "Create":
                if dict(r.environment) != dict(info.environment):
                    self.mismatches.append(f"{where} Create: environment {info.environment} != recorded {r.environment}")
                if (r.working_directory or None) != (info.working_directory or None):
                    self.mismatches.append(f"{where} Create: working directory {info.working_directory!r} != recorded {r.working_directory!r}")
                for opt, default in (("WINRS_NOPROFILE", "FALSE"), ("WINRS_CODEPAGE", None)):
                    live, recd = info.options.get(opt, default), r.options.get(opt, default)
                    if (live or "").upper() != (recd or "").upper():
                        self.mismatches.append(f"{where} Create: option {opt}={live} != recorded {recd}")
            elif name == "Command":
                if r.command_line != info.command_line:
                    self.mismatches.append(f"{where} Command: {info.command_line} != recorded {r.command_line}")
                opt = "WINRS_SKIP_CMD_SHELL"
                if _is_true(info.options.get(opt)) != _is_true(r.options.get(opt)):
                    self.mismatches.append(f"{where} Command: option {opt}={info.options.get(opt)} != recorded {r.options.get(opt)}")
            elif name == "Send":
                live = [(p.stream, p.data, p.end) for p in info.payloads]
                recd = [(p.stream, p.data, p.end) for p in r.payloads]
                if live != recd:
                    self.mismatches.append(f"{where} Send: {live!r} != recorded {recd!r}")
            return
        if name == "Create" and rec.creates_shell is not None:
            uri = rec.info.resource_uri
            if uri != info.resource_uri:
                self.mismatches.append(f"{where} Create: resource {info.resource_uri} != recorded {uri}")
            opt = "WINRS_NOPROFILE"
            if _is_true(info.options.get(opt)) != _is_true(rec.info.options.get(opt)):
                self.mismatches.append(f"{where} Create: option {opt}={info.options.get(opt)} != recorded {rec.info.options.get(opt)}")
        if shell_no is None and rec.creates_shell is not None:
            shell_no = rec.creates_shell
        if shell_no is None:
            return
        touched, completed = self._feed(shell_no, rec.creates_command, info.payloads, False, self.live_trackers)
        for sk, ords in touched.items():
            self.live_seen.setdefault(sk, set()).update(ords)
        self._compare_messages(completed, shell_no)

    def _compare_messages(self, completed: List[Tuple[StreamKey, int, bytes]], shell_no: int) -> None:
        for sk, ordinal, live in completed:
            kind = message_type(live)
            where = f"{target_name(sk[0], sk[1])} {sk[2]} #{ordinal}"
            try:
                text = live[40:].decode("utf-8", "replace").lstrip("\ufeff")
            except Exception:  # pragma: no cover - decode with replace does not raise
                text = ""
            self.client_messages.append(
                {"target": target_name(sk[0], sk[1]), "stream": sk[2], "ordinal": ordinal, "type": MESSAGE_TYPES.get(kind, hex(kind)), "data": text[:20000]}
            )
            recorded = self.recorded_messages.get(sk, {}).get(ordinal)
            if recorded is None:
                self.mismatches.append(f"{where}: {MESSAGE_TYPES.get(kind, hex(kind))} that the recorded client did not send")
                continue
            if message_type(recorded) != kind:
                self.mismatches.append(
                    f"{where}: {MESSAGE_TYPES.get(kind, hex(kind))} where the recorded client sent {MESSAGE_TYPES.get(message_type(recorded))}"
                )
                continue
            if kind in CI_REQUESTS:
                rc, lc = message_ci(recorded), message_ci(live)
                if rc is not None and lc is not None:
                    self.ci_map.setdefault(shell_no, {})[rc] = lc
            want = message_summary(recorded, self.ignore_script_text)
            got = message_summary(live, self.ignore_script_text)
            if want != got:
                self.mismatches.append(f"{where} {MESSAGE_TYPES.get(kind)}: {got!r} != recorded {want!r}")

    def state(self) -> Dict[str, Any]:
        with self.lock:
            unused = [[r.name, r.key[1]] for r in self.exchanges if not r.served]
            incomplete = [[r.name, r.key[1]] for r in self.exchanges if r.served and not self._complete(r)]
            return {
                "served": self.served,
                "unexpected": list(self.unexpected),
                "unused": unused,
                "incomplete": incomplete,
                "synthesized": list(self.synthesized),
                "mismatches": list(self.mismatches),
                "skipped": [[r.name, r.key[1]] for r in self.exchanges if r.skipped],
                "unexpected_detail": list(self.unexpected_detail),
                "timeouts": self.timeouts,
                "trace": list(self.trace),
                "client_messages": list(self.client_messages),
            }

    # -- rewriting responses -------------------------------------------------------------------

    def rewrite(self, rec: Recorded, info: RequestInfo) -> str:
        text = rec.response or ""
        with self.lock:
            pairs: List[Tuple[str, str]] = []
            shell = self.shells[rec.shell - 1] if rec.shell is not None else None
            guid_map: Dict[bytes, bytes] = {}
            ci_map: Dict[int, int] = {}
            if shell is None:
                # Shell-less answers (Enumerate, ...) may list any shell.
                for other in self.shells:
                    if other.client_id and other.client_id.upper() != other.recorded_id.upper():
                        pairs.append((other.recorded_id, other.client_id))
            if shell is not None:
                if shell.client_id and shell.client_id.upper() != shell.recorded_id.upper():
                    pairs.append((shell.recorded_id, shell.client_id))
                own: Dict[str, Tuple[str, str, bool]] = {}
                for number, rid in shell.command_recorded.items():
                    cid = shell.command_client.get(number)
                    mine = number in (rec.command, rec.creates_command)
                    if cid and not own.get(rid.upper(), ("", "", False))[2]:
                        own[rid.upper()] = (rid, cid, mine)
                for rid, cid, _mine in own.values():
                    if cid.upper() != rid.upper():
                        pairs.append((rid, cid))
                if shell.psrp:
                    rpid = shell.recorded_rpid or shell.recorded_id
                    _add_guid(guid_map, rpid, shell.client_id or rpid)
                    if shell.recorded_id.upper() != rpid.upper():
                        _add_guid(guid_map, shell.recorded_id, shell.client_id or rpid)
                    for number, rid in shell.command_recorded.items():
                        _add_guid(guid_map, rid, shell.command_client.get(number) or rid)
                    # A recorded id used by several commands means this exchange's command.
                    for number in (rec.command, rec.creates_command):
                        if number is not None:
                            rid = shell.command_recorded[number]
                            _add_guid(guid_map, rid, shell.command_client.get(number) or rid, force=True)
                    ci_map = dict(self.ci_map.get(shell.number, {}))
        text = RELATES_TO_RE.sub(lambda m: m.group(1) + info.message_id + m.group(3), text, count=1)
        for old, new in pairs:
            text = re.sub(re.escape(old), new, text, flags=re.IGNORECASE)
        if shell is not None and shell.psrp and (guid_map or ci_map):
            text = _rewrite_psrp(text, guid_map, ci_map)
        return text


def _add_guid(table: Dict[bytes, bytes], recorded: str, client: str, force: bool = False) -> None:
    try:
        old = uuid.UUID(recorded)
        new = uuid.UUID(client)
    except ValueError:
        return
    if force or old.bytes_le not in table:
        table[old.bytes_le] = new.bytes_le
    # Recordings made before pypsrp's 2019 byte-order fix carry (and the server echoed) the
    # client's GUIDs in RFC order.
    if force or old.bytes not in table:
        table[old.bytes] = new.bytes_le


def _rewrite_messages(chunks: List[List[Fragment]], guid_map, ci_map) -> None:
    """Rewrites message headers (and availability call ids) in place across the fragments of
    one response; boundaries are kept, a length change goes to an object's last fragment."""
    order: List[Tuple[int, int]] = []
    by_object: Dict[int, List[Tuple[int, int]]] = {}
    for ci, frags in enumerate(chunks):
        for fi, frag in enumerate(frags):
            if frag.object_id not in by_object:
                order.append((ci, fi))
            by_object.setdefault(frag.object_id, []).append((ci, fi))
    for object_id, places in by_object.items():
        frags = [chunks[c][f] for c, f in places]
        if not frags[0].start:
            continue  # began in an earlier response; its header was rewritten there
        message = bytearray(b"".join(f.blob for f in frags))
        if len(message) < 40:
            continue
        for offset in (8, 24):
            old = bytes(message[offset : offset + 16])
            if old != bytes(16) and old in guid_map:
                message[offset : offset + 16] = guid_map[old]
        complete = frags[-1].end
        if complete and message_type(bytes(message)) == RUNSPACE_AVAILABILITY and ci_map:

            def swap(m):
                value = int(m.group(2))
                return m.group(1) + str(ci_map.get(value, value)).encode() + m.group(3)

            message = bytearray(message[:40] + CI_RE.sub(swap, bytes(message[40:])))
        at = 0
        for n, (c, f) in enumerate(places):
            old = chunks[c][f]
            size = len(old.blob) if n < len(places) - 1 else len(message) - at
            chunks[c][f] = Fragment(old.object_id, old.fragment_id, old.flags, bytes(message[at : at + size]))
            at += size


def _rewrite_psrp(text: str, guid_map, ci_map) -> str:
    matches = [m for m in STREAM_RE.finditer(text) if m.group(4) is not None]
    streams = []
    for m in matches:
        name = NAME_ATTR_RE.search(m.group(2))
        if name is None or name.group(1) != "stdout" or not m.group(4).strip():
            streams.append(None)
            continue
        try:
            streams.append(split_fragments(_b64(m.group(4))))
        except ValueError:
            streams.append(None)
    chunks = [s for s in streams if s is not None]
    if chunks:
        _rewrite_messages(chunks, guid_map, ci_map)
        pieces = []
        last = 0
        for m, frags in zip(matches, streams):
            if frags is None:
                continue
            pieces.append(text[last : m.start(4)])
            pieces.append(base64.b64encode(b"".join(f.pack() for f in frags)).decode())
            last = m.end(4)
        pieces.append(text[last:])
        text = "".join(pieces)

    def connect(m):
        try:
            frags = split_fragments(_b64(m.group(3)))
        except ValueError:
            return m.group(0)
        _rewrite_messages([frags], guid_map, ci_map)
        encoded = base64.b64encode(b"".join(f.pack() for f in frags)).decode()
        return f"<{m.group(1)}{m.group(2)}>{encoded}</{m.group(1)}>"

    return CONNECT_RESPONSE_RE.sub(connect, text)


# --------------------------------------------------------------------------------------------
# HTTP


class ReplayServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, port: int, conversation: Conversation, path: str, user: Optional[str], password: Optional[str], verbose: bool):
        self.conversation = conversation
        self.path = path
        self.user = user
        self.password = password
        self.verbose = verbose
        super().__init__(("127.0.0.1", port), ReplayHandler)


def _peer_closed(sock: socket.socket) -> bool:
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class ReplayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ReplayServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        if self.server.verbose:
            sys.stderr.write("replay: " + (format % args) + "\n")

    def _send(self, status: int, body: bytes, content_type: str = "application/soap+xml;charset=UTF-8", extra=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/_control/state":
            body = json.dumps(self.server.conversation.state()).encode()
            self._send(200, body, "application/json")
        else:
            self._send(404, b"")

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if self.server.user is None:
            return True
        names = {user, user.split("\\")[-1], user.split("@")[0]}
        return self.server.user in names and password == self.server.password

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.split("?", 1)[0] != self.server.path:
            self._send(404, b"")
            return
        if not self._authorized():
            self._send(401, b"", extra={"WWW-Authenticate": 'Basic realm="WSMAN"'})
            return
        if not raw:
            self._send(200, b"")
            return
        conversation = self.server.conversation
        try:
            info = describe_request(raw.decode("utf-8"))
        except (ET.ParseError, UnicodeDecodeError, ValueError) as e:
            with conversation.lock:
                conversation.unexpected.append("unparseable")
            self._send(400, f"replay: cannot parse the request: {e}".encode())
            return
        answer = conversation.take(info, alive=lambda: not _peer_closed(self.connection))
        if answer.kind == "gone":
            self.close_connection = True
            return
        if answer.kind == "timeout":
            self._send(500, operation_timeout_fault(info.message_id).encode())
            return
        if answer.kind == "unexpected":
            self._send(500, unexpected_fault(answer.text, info.message_id).encode())
            return
        if answer.kind == "synthesized":
            self._send(answer.status, answer.text.encode())
            return
        rec = answer.record
        entry = rec.entry
        delay = entry.get("timeout")
        if isinstance(delay, (int, float)) and delay > 0:
            time.sleep(min(float(delay), 10.0))
        if entry.get("http_error") is True:
            # pypsrp's injected ConnectionError: drop the connection without a reply.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        body = conversation.rewrite(rec, info).encode("utf-8") if rec.response is not None else b""
        status = 200
        te = entry.get("transport_error")
        if isinstance(te, dict) and te.get("code"):
            status = int(te["code"])
        elif rec.response and re.search(r"<(?:[\w.-]+:)?Fault\b", rec.response):
            status = 500
        self._send(status, body)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m psremote_testserver.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--path", default="/wsman")
    parser.add_argument("--transcript", required=True, help="a windows-transcripts/*.yml file")
    parser.add_argument("--user", help="accepted Basic user (default: any)")
    parser.add_argument("--password", help="accepted Basic password")
    parser.add_argument("--hold-cap", type=float, default=2.0, help="longest hold of a Receive in seconds (default 2)")
    parser.add_argument(
        "--skip", default="", help="comma-separated indexes of recorded exchanges the client will not make"
    )
    parser.add_argument(
        "--ignore-script-text",
        action="store_true",
        help="do not compare the text of scripts in CREATE_PIPELINE (arguments, input and flags still must match)",
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    skip = {int(x) for x in args.skip.split(",") if x.strip()}
    with open(args.transcript, encoding="utf-8") as handle:
        entries = parse_transcript(handle.read())

    def log(text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    conversation = Conversation(
        entries, hold_cap=args.hold_cap, skip=skip, log=log, ignore_script_text=args.ignore_script_text
    )
    server = ReplayServer(args.port, conversation, args.path, args.user, args.password, args.verbose)
    port = server.server_address[1]
    sys.stdout.write(f"http://127.0.0.1:{port}{args.path}\n")
    sys.stdout.flush()

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
