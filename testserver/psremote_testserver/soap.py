"""SOAP 1.2 / WS-Management envelopes: request parsing and Windows-shaped replies.

Replies are written as text with the prefixes Windows uses (``s a x w rsp p``,
faults add ``e n``), declared on the envelope, so clients see what a real
server sends (see the recordings in shared/conformance).
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set
from xml.sax.saxutils import escape

from . import faults

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "e": "http://schemas.xmlsoap.org/ws/2004/08/eventing",
    "n": "http://schemas.xmlsoap.org/ws/2004/09/enumeration",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "cfg": "http://schemas.microsoft.com/wbem/wsman/1/config",
}
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"

TRANSFER = NS["x"] + "/"
SHELL = NS["rsp"] + "/"
ENUMERATION = NS["n"] + "/"
ACTION_CREATE = TRANSFER + "Create"
ACTION_DELETE = TRANSFER + "Delete"
ACTION_GET = TRANSFER + "Get"
ACTION_ENUMERATE = ENUMERATION + "Enumerate"
ACTION_PULL = ENUMERATION + "Pull"
ACTION_DISCONNECT = SHELL + "Disconnect"
ACTION_RECONNECT = SHELL + "Reconnect"
ACTION_CONNECT = SHELL + "Connect"
ACTION_COMMAND = SHELL + "Command"
ACTION_SEND = SHELL + "Send"
ACTION_RECEIVE = SHELL + "Receive"
ACTION_SIGNAL = SHELL + "Signal"
ACTION_FAULT = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"

# Namespace declarations per reply, as Windows writes them.
NS_DEFAULT = ("s", "a", "x", "w", "rsp", "p")
NS_RECEIVE = ("s", "a", "w", "rsp", "p")
NS_DELETE = ("s", "a", "w", "p")
NS_GET = ("s", "a", "x", "w", "p")
NS_ENUMERATE = ("s", "a", "n", "w", "p")
NS_FAULT = ("s", "a", "x", "e", "n", "w", "p")


def q(prefix: str, name: str) -> str:
    """ElementTree's ``{uri}name`` form."""
    return "{%s}%s" % (NS[prefix], name)


def attr(value: str) -> str:
    return escape(value, {'"': "&quot;"})


def text(value: str) -> str:
    return escape(value)


def new_uuid() -> str:
    return str(uuid.uuid4()).upper()


class MalformedRequest(ValueError):
    """The body is not a SOAP envelope at all (answered with HTTP 400)."""


_DURATION = re.compile(
    r"^(-)?P(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d*)?)S)?)?$"
)


def parse_duration(value: str) -> Optional[float]:
    """xs:duration (days and time only, as WS-Man uses) -> seconds; None if invalid or negative."""
    match = _DURATION.match(value.strip())
    if not match or value.strip() in ("P", "-P"):
        return None
    negative, days, hours, minutes, seconds = match.groups()
    if negative:
        return None
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


@dataclass
class WSManRequest:
    action: str
    message_id: str
    resource_uri: str
    body: ET.Element
    selectors: Dict[str, str] = field(default_factory=dict)  # names lower-cased
    options: Dict[str, str] = field(default_factory=dict)  # names as sent
    must_comply: Set[str] = field(default_factory=set)  # option names sent with MustComply="true"
    operation_timeout: Optional[float] = None
    max_envelope_size: Optional[int] = None
    to: Optional[str] = None
    session_id: Optional[str] = None  # wsmv:SessionId (upper case, "uuid:" kept), None when absent
    # Set by the dispatcher: bytes left for the reply body under MaxEnvelopeSize.
    body_budget: int = 0

    def option(self, name: str, default: Optional[str] = None) -> Optional[str]:
        for key, value in self.options.items():
            if key.lower() == name.lower():
                return value
        return default

    def option_true(self, name: str) -> bool:
        return (self.option(name) or "").strip().lower() == "true"

    def selector(self, name: str) -> Optional[str]:
        return self.selectors.get(name.lower())


def _header_text(header: ET.Element, tag: str) -> Optional[str]:
    element = header.find(tag)
    if element is None:
        return None
    return (element.text or "").strip()


def parse_request(data: bytes) -> WSManRequest:
    """Parse and validate a request envelope.

    Raises MalformedRequest when the bytes are not a SOAP envelope, and
    faults.WSManFault (with ``relates_to`` set when the MessageID was readable)
    for invalid WS-Addressing / WS-Management headers.
    """
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise MalformedRequest("DTDs are not allowed")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise MalformedRequest(str(exc)) from exc
    if root.tag != q("s", "Envelope"):
        raise MalformedRequest("root element is not a SOAP 1.2 Envelope")
    header = root.find(q("s", "Header"))
    body = root.find(q("s", "Body"))
    if header is None or body is None:
        raise MalformedRequest("envelope lacks Header or Body")

    message_id = _header_text(header, q("a", "MessageID"))
    action = _header_text(header, q("a", "Action"))
    resource_uri = _header_text(header, q("w", "ResourceURI"))
    relates = message_id or None
    if not message_id:
        raise faults.invalid_header("The WS-Management service cannot process the request. The request does not contain a MessageID header. ")
    if not action:
        raise faults.invalid_header("The WS-Management service cannot process the request. The request does not contain an Action header. ", relates)
    reply_to = header.find(q("a", "ReplyTo") + "/" + q("a", "Address"))
    if reply_to is not None and (reply_to.text or "").strip() != ANONYMOUS:
        raise faults.invalid_header(
            "The WS-Management service cannot process the request. Only the anonymous ReplyTo address is supported. ", relates
        )

    request = WSManRequest(action=action, message_id=message_id, resource_uri=resource_uri or "", body=body)
    request.to = _header_text(header, q("a", "To"))
    session_id = _header_text(header, q("p", "SessionId"))
    request.session_id = session_id.upper() if session_id else None

    timeout = _header_text(header, q("w", "OperationTimeout"))
    if timeout is not None:
        seconds = parse_duration(timeout)
        if seconds is None:
            raise faults.invalid_header(
                "The WS-Management service cannot process the request. "
                f"The XML contains an invalid timeout field in the SOAP header: {timeout}. ",
                relates,
            )
        request.operation_timeout = seconds

    size = _header_text(header, q("w", "MaxEnvelopeSize"))
    if size is not None:
        if not size.isdigit() or int(size) <= 0:
            raise faults.invalid_header(
                f"The WS-Management service cannot process the request. The MaxEnvelopeSize value {size} is invalid. ", relates
            )
        request.max_envelope_size = int(size)

    selector_set = header.find(q("w", "SelectorSet"))
    if selector_set is not None:
        for selector in selector_set.findall(q("w", "Selector")):
            request.selectors[selector.get("Name", "").lower()] = (selector.text or "").strip()
    option_set = header.find(q("w", "OptionSet"))
    if option_set is not None:
        for option in option_set.findall(q("w", "Option")):
            request.options[option.get("Name", "")] = (option.text or "").strip()
            if (option.get("MustComply") or "").strip().lower() == "true":
                request.must_comply.add(option.get("Name", ""))
    return request


def envelope(action: str, relates_to: Optional[str], body: str, prefixes: Iterable[str]) -> bytes:
    """A reply envelope in Windows' layout: Action, MessageID, To, RelatesTo."""
    declarations = " ".join(f'xmlns:{p}="{NS[p]}"' for p in prefixes)
    relates = f"<a:RelatesTo>{text(relates_to)}</a:RelatesTo>" if relates_to else ""
    return (
        f'<s:Envelope xml:lang="en-US" {declarations}><s:Header>'
        f"<a:Action>{text(action)}</a:Action>"
        f"<a:MessageID>uuid:{new_uuid()}</a:MessageID>"
        f"<a:To>{ANONYMOUS}</a:To>{relates}"
        f"</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode("utf-8")


def fault_envelope(fault: "faults.WSManFault", relates_to: Optional[str], machine: str) -> bytes:
    return envelope(ACTION_FAULT, relates_to, fault.to_xml(machine), NS_FAULT)


def child_texts(element: ET.Element, prefix: str, name: str) -> List[str]:
    return [(child.text or "") for child in element.findall(q(prefix, name))]
