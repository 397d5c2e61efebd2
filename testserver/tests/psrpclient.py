"""A PSRP client built from psrpcore's client objects over rawclient's sealed connection.

pypsrp shows that a real client works; this one lets the wire tests look at
every reply (Stream elements, CommandState, faults) and do what pypsrp cannot
(answer a host call with an error, pick MaxEnvelopeSize per request).
"""

from __future__ import annotations

import base64
import struct
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, List, Optional

import psrpcore
import rawclient as rc
from psrpcore.types import PSInvocationState, RunspacePoolState

PS_URI = "http://schemas.microsoft.com/powershell/"
PS_SIGNAL = "http://schemas.microsoft.com/powershell/signal/"
DONE = rc.NS["rsp"] + "/CommandState/Done"


@dataclass
class Reply:
    response: rc.Response
    streams: List[ET.Element] = field(default_factory=list)
    fragments: List[bytes] = field(default_factory=list)
    state: Optional[ET.Element] = None
    events: List[Any] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.state is not None and self.state.get("State") == DONE


def fragment_header(fragment: bytes):
    """(object id, fragment id, flags, blob length)."""
    return struct.unpack(">QQBI", fragment[:21])


class PSRPSession:
    def __init__(self, url: str, configuration: str = "Microsoft.PowerShell", max_envelope: int = 153600) -> None:
        self.raw = rc.RawClient(url)
        self.raw.authenticate()
        self.resource_uri = PS_URI + configuration
        self.max_envelope = max_envelope
        self.pool = psrpcore.ClientRunspacePool()
        self.shell_id = str(self.pool.runspace_pool_id).upper()

    def close(self) -> None:
        try:
            self.post(rc.TRANSFER + "Delete", "")
        finally:
            self.raw.close()

    def __enter__(self) -> "PSRPSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------------
    def post(self, action: str, body: str, shell: bool = True, **kwargs) -> rc.Response:
        kwargs.setdefault("max_envelope", self.max_envelope)
        _, xml = rc.envelope(
            action, body, shell_id=self.shell_id if shell else None, resource_uri=self.resource_uri, **kwargs
        )
        return self.raw.post_sealed(xml)

    def create(self, options=None) -> rc.Response:
        self.pool.open()
        payload = self.pool.data_to_send()
        body = (
            f'<rsp:Shell ShellId="{self.shell_id}"><rsp:InputStreams>stdin pr</rsp:InputStreams>'
            "<rsp:OutputStreams>stdout</rsp:OutputStreams>"
            f'<creationXml xmlns="http://schemas.microsoft.com/powershell">{base64.b64encode(payload.data).decode()}</creationXml>'
            "</rsp:Shell>"
        )
        return self.post(
            rc.TRANSFER + "Create",
            body,
            shell=False,
            options={"protocolversion": "2.3"} if options is None else options,
        )

    def open(self) -> None:
        response = self.create()
        assert response.status == 200, response.plaintext
        while self.pool.state != RunspacePoolState.Opened:
            self.receive()

    def receive(self, command_id: Optional[str] = None, timeout: str = "PT20S", **kwargs) -> Reply:
        attribute = f' CommandId="{command_id}"' if command_id else ""
        body = f"<rsp:Receive><rsp:DesiredStream{attribute}>stdout</rsp:DesiredStream></rsp:Receive>"
        response = self.post(rc.SHELL + "Receive", body, timeout=timeout, **kwargs)
        reply = Reply(response)
        if response.status != 200:
            return reply
        root = response.xml
        reply.streams = root.findall("s:Body/rsp:ReceiveResponse/rsp:Stream", rc.NS)
        reply.state = root.find("s:Body/rsp:ReceiveResponse/rsp:CommandState", rc.NS)
        for stream in reply.streams:
            data = base64.b64decode(stream.text or "")
            reply.fragments.append(data)
            pipeline_id = uuid.UUID(command_id) if command_id else None
            self.pool.receive_data(psrpcore.PSRPPayload(data, psrpcore.StreamType.default, pipeline_id))
        while True:
            event = self.pool.next_event()
            if event is None:
                break
            reply.events.append(event)
        return reply

    def send_pending(self, command_id: Optional[str] = None) -> None:
        """Send whatever psrpcore queued, one Send per payload, on stdin or pr."""
        while True:
            payload = self.pool.data_to_send()
            if payload is None:
                return
            name = "pr" if payload.stream_type == psrpcore.StreamType.prompt_response else "stdin"
            attribute = f' CommandId="{command_id}"' if command_id else ""
            body = f'<rsp:Send><rsp:Stream Name="{name}"{attribute}>{base64.b64encode(payload.data).decode()}</rsp:Stream></rsp:Send>'
            response = self.post(rc.SHELL + "Send", body)
            assert response.status == 200, response.plaintext

    # -- pipelines --------------------------------------------------------------------------------------
    def start(self, powershell: Any) -> str:
        powershell.start()
        payload = self.pool.data_to_send()
        command_id = str(powershell.pipeline_id).upper()
        body = (
            f'<rsp:CommandLine CommandId="{command_id}"><rsp:Command/>'
            f"<rsp:Arguments>{base64.b64encode(payload.data).decode()}</rsp:Arguments></rsp:CommandLine>"
        )
        response = self.post(rc.SHELL + "Command", body)
        assert response.status == 200, response.plaintext
        self.send_pending(command_id)
        return command_id

    def signal(self, command_id: str, code: str) -> rc.Response:
        body = f'<rsp:Signal CommandId="{command_id}"><rsp:Code>{code}</rsp:Code></rsp:Signal>'
        return self.post(rc.SHELL + "Signal", body)

    def run_to_end(self, powershell: Any, command_id: str, **kwargs) -> List[Reply]:
        replies = []
        while True:
            reply = self.receive(command_id, **kwargs)
            assert reply.response.status == 200, reply.response.plaintext
            replies.append(reply)
            if reply.done:
                assert powershell.state in (
                    PSInvocationState.Completed,
                    PSInvocationState.Failed,
                    PSInvocationState.Stopped,
                )
                return replies
