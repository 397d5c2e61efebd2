"""A deliberately small WinRM client for tests that need to break the rules.

It drives pyspnego's initiator over one http.client keep-alive connection and
does its own MIME framing (independent of the server's encryption.py), so the
tests can send plaintext after auth, corrupt seals, or pick any ShellId.
"""

from __future__ import annotations

import base64
import http.client
import re
import ssl
import struct
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

import spnego

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
CMD_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
SEALED_TYPE = 'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";boundary="Encrypted Boundary"'


@dataclass
class Response:
    status: int
    headers: List[Tuple[str, str]]
    body: bytes
    plaintext: Optional[bytes] = None

    def header(self, name: str) -> Optional[str]:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def all_headers(self, name: str) -> List[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    @property
    def xml(self) -> ET.Element:
        return ET.fromstring(self.plaintext if self.plaintext is not None else self.body)


class AuthFailed(Exception):
    pass


def sealed_body(header: bytes, data: bytes, length: int, boundary_line: bytes = b"--Encrypted Boundary", closing: bytes = b"--Encrypted Boundary--\r\n") -> bytes:
    return (
        boundary_line + b"\r\n"
        b"\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
        b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + str(length).encode() + b"\r\n"
        + boundary_line + b"\r\n"
        b"\tContent-Type: application/octet-stream\r\n" + struct.pack("<I", len(header)) + header + data + closing
    )


def open_sealed(body: bytes) -> Tuple[int, bytes, bytes]:
    """(declared length, signature header, ciphertext) of a single-part sealed reply."""
    match = re.match(
        rb"--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
        rb"\tOriginalContent: type=application/soap\+xml;charset=UTF-8;Length=(\d+)\r\n"
        rb"--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n(.*)--Encrypted Boundary--\r\n\Z",
        body,
        re.DOTALL,
    )
    assert match, f"reply is not sealed in the exact B.3 layout: {body[:200]!r}"
    payload = match.group(2)
    (header_len,) = struct.unpack("<I", payload[:4])
    return int(match.group(1)), payload[4 : 4 + header_len], payload[4 + header_len :]


class RawClient:
    """One keep-alive connection. Over HTTPS pass ``ssl_context``; ``channel_bindings`` and any
    other keyword go to ``spnego.client`` (e.g. ``credssp_negotiate_context``)."""

    def __init__(
        self,
        url: str,
        user: str = "user",
        password: str = "Passw0rd!",
        scheme: str = "NTLM",
        ssl_context: Optional[ssl.SSLContext] = None,
        **spnego_kwargs,
    ) -> None:
        parts = urlsplit(url)
        self.path = parts.path
        self.url = url
        self.user = user
        self.password = password
        self.scheme = scheme
        self.spnego_kwargs = spnego_kwargs
        if parts.scheme == "https":
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=30, context=ssl_context)
        else:
            self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.ctx = None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def post(self, body: bytes, headers: Optional[Dict[str, str]] = None) -> Response:
        self.conn.request("POST", self.path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        data = response.read()
        return Response(response.status, response.getheaders(), data)

    def authenticate(self) -> Response:
        protocol = {"NTLM": "ntlm", "CREDSSP": "credssp"}.get(self.scheme.upper(), "negotiate")
        self.ctx = spnego.client(self.user, self.password, hostname="127.0.0.1", service="host", protocol=protocol, **self.spnego_kwargs)
        token = self.ctx.step()
        while True:
            response = self.post(b"", {"Authorization": f"{self.scheme} {base64.b64encode(token).decode()}"})
            in_token = None
            for value in response.all_headers("WWW-Authenticate"):
                if value.lower().startswith(self.scheme.lower() + " "):
                    in_token = base64.b64decode(value.split(" ", 1)[1])
            if response.status == 401 and in_token:
                token = self.ctx.step(in_token)
                continue
            if response.status != 200:
                raise AuthFailed(response.status)
            if in_token:
                self.ctx.step(in_token)
            assert self.ctx.complete
            return response

    def post_sealed(self, xml: bytes, corrupt: bool = False, **framing) -> Response:
        wrapped = self.ctx.wrap_winrm(xml)
        header = wrapped.header
        if corrupt:
            header = header[:5] + bytes([header[5] ^ 0x55]) + header[6:]
        body = sealed_body(header, wrapped.data, len(xml), **framing)
        response = self.post(body, {"Content-Type": SEALED_TYPE})
        if (response.header("Content-Type") or "").startswith("multipart/encrypted"):
            length, sig, data = open_sealed(response.body)
            response.plaintext = self.ctx.unwrap_winrm(sig, data)
            assert len(response.plaintext) == length
        return response

    def post_plain(self, xml: bytes, headers: Optional[Dict[str, str]] = None) -> Response:
        all_headers = {"Content-Type": "application/soap+xml;charset=UTF-8"}
        all_headers.update(headers or {})
        return self.post(xml, all_headers)


# -- SOAP requests --------------------------------------------------------------------------------
def envelope(
    action: str,
    body: str = "",
    shell_id: Optional[str] = None,
    resource_uri: str = CMD_URI,
    options: Optional[Dict[str, str]] = None,
    timeout: str = "PT20S",
    max_envelope: int = 153600,
    message_id: Optional[str] = None,
    session_id: Optional[str] = None,
) -> Tuple[str, bytes]:
    """(MessageID, envelope bytes); ``session_id`` adds a wsmv:SessionId header (``uuid:...``)."""
    message_id = message_id or f"uuid:{str(uuid.uuid4()).upper()}"
    option_xml = ""
    if options:
        option_xml = '<w:OptionSet s:mustUnderstand="true">' + "".join(
            f'<w:Option Name="{name}">{value}</w:Option>' for name, value in options.items()
        ) + "</w:OptionSet>"
    session = f'<p:SessionId s:mustUnderstand="false">{session_id}</p:SessionId>' if session_id else ""
    selector = f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>' if shell_id else ""
    xml = (
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:w="{NS["w"]}" xmlns:p="{NS["p"]}" xmlns:rsp="{NS["rsp"]}">'
        f'<s:Header><a:Action s:mustUnderstand="true">{action}</a:Action>'
        f'<p:DataLocale s:mustUnderstand="false" xml:lang="en-US"/><w:Locale s:mustUnderstand="false" xml:lang="en-US"/>'
        f'<w:MaxEnvelopeSize s:mustUnderstand="true">{max_envelope}</w:MaxEnvelopeSize>'
        f"<a:MessageID>{message_id}</a:MessageID><w:OperationTimeout>{timeout}</w:OperationTimeout>"
        f'<a:ReplyTo><a:Address s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>'
        f'<w:ResourceURI s:mustUnderstand="true">{resource_uri}</w:ResourceURI>'
        f"<a:To>http://127.0.0.1/wsman</a:To>{session}{option_xml}{selector}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )
    return message_id, xml.encode()


def create_shell(**kwargs) -> Tuple[str, bytes]:
    return envelope(
        TRANSFER + "Create",
        "<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>",
        **kwargs,
    )


def command(shell_id: str, line: str, *arguments: str, **kwargs) -> Tuple[str, bytes]:
    args = "".join(f"<rsp:Arguments>{a}</rsp:Arguments>" for a in arguments)
    body = f"<rsp:CommandLine><rsp:Command>{line}</rsp:Command>{args}</rsp:CommandLine>"
    return envelope(SHELL + "Command", body, shell_id=shell_id, **kwargs)


def receive(shell_id: str, command_id: str, **kwargs) -> Tuple[str, bytes]:
    body = f'<rsp:Receive><rsp:DesiredStream CommandId="{command_id}">stdout stderr</rsp:DesiredStream></rsp:Receive>'
    return envelope(SHELL + "Receive", body, shell_id=shell_id, **kwargs)


def signal(shell_id: str, command_id: str, code: str = "terminate", **kwargs) -> Tuple[str, bytes]:
    body = f'<rsp:Signal CommandId="{command_id}"><rsp:Code>{SHELL}signal/{code}</rsp:Code></rsp:Signal>'
    return envelope(SHELL + "Signal", body, shell_id=shell_id, **kwargs)


def delete_shell(shell_id: str, **kwargs) -> Tuple[str, bytes]:
    return envelope(TRANSFER + "Delete", "", shell_id=shell_id, **kwargs)


def shell_id_of(root: ET.Element) -> str:
    return root.find(".//w:Selector[@Name='ShellId']", NS).text


def command_id_of(root: ET.Element) -> str:
    return root.find(".//rsp:CommandId", NS).text


def relates_to(root: ET.Element) -> str:
    return root.find("s:Header/a:RelatesTo", NS).text


@dataclass
class Fault:
    value: str
    subcode: str
    reason: str
    code: int
    machine: str
    message: str
    detail: Optional[str] = None
    extra: Dict[str, str] = field(default_factory=dict)


def parse_fault(root: ET.Element) -> Fault:
    fault = root.find("s:Body/s:Fault", NS)
    assert fault is not None, "not a fault"
    wsman = fault.find("s:Detail/f:WSManFault", NS)
    detail = fault.find("s:Detail/w:FaultDetail", NS)
    return Fault(
        value=fault.find("s:Code/s:Value", NS).text,
        subcode=fault.find("s:Code/s:Subcode/s:Value", NS).text,
        reason=fault.find("s:Reason/s:Text", NS).text,
        code=int(wsman.get("Code")),
        machine=wsman.get("Machine"),
        message="".join(wsman.find("f:Message", NS).itertext()),
        detail=detail.text if detail is not None else None,
    )
