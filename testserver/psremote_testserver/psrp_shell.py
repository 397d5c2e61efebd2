"""The PowerShell (PSRP) shell engine: resource URIs http://schemas.microsoft.com/powershell/<configuration>.

WS-Man side of PROTOCOL.md A.6-A.7 and C.4: Create carries the pool's first
fragments in creationXml, Command the first CREATE_PIPELINE fragment(s) in
Arguments, Send the rest on stdin/pr, Receive returns stdout Streams (one
fragment each, as Windows does) with CommandState Done once a pipeline's
final state went out. Reply shapes copy shared/conformance/windows-transcripts
(test_psrp_*.yml). The PSRP state machine lives in psrp_pool.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Tuple

from . import faults
from . import psrp_wire as wire
from .engines import CONNECTED, DISCONNECTED, Reply, RequestContext, Shell, ShellEngine, ShellTable, span
from .psrp_runtime import CONFIGURATIONS, Configuration
from .psrp_pool import Pool, PoolClosed, PoolDisconnected, ProtocolError, UnknownPipeline
from .soap import (
    ACTION_COMMAND,
    ACTION_CONNECT,
    ACTION_DISCONNECT,
    ACTION_RECEIVE,
    ACTION_RECONNECT,
    ACTION_SEND,
    ACTION_SIGNAL,
    NS,
    NS_DELETE,
    NS_RECEIVE,
    WSManRequest,
    parse_duration,
    q,
    text,
)

log = logging.getLogger(__name__)

PS_PREFIX = "http://schemas.microsoft.com/powershell/"
PS_NS = "http://schemas.microsoft.com/powershell"
STATE = NS["rsp"] + "/CommandState/"
TERMINATE = (NS["rsp"] + "/signal/terminate").lower()
STOP_CODES = ("powershell/signal/crtl_c", "powershell/signal/ctrl_c")
DEFAULT_IDLE = "PT7200.000S"
BUFFER_MODES = {"block": "Block", "drop": "Drop"}
SESSION_CAPABILITY = 0x00010002
CONNECT_RUNSPACEPOOL = 0x00010008
RUNSPACEPOOL_INIT_DATA = 0x0002100B
_VERSION = re.compile(r"^2\.\d+$")
_KNOWN_PS_OPTIONS = {"protocolversion"}


def configuration_of(resource_uri: str) -> Optional[Configuration]:
    if not resource_uri.lower().startswith(PS_PREFIX):
        return None
    return CONFIGURATIONS.get(resource_uri[len(PS_PREFIX) :].lower())


def _b64(value: Optional[str]) -> bytes:
    try:
        return base64.b64decode((value or "").strip(), validate=True)
    except (binascii.Error, ValueError):
        raise faults.invalid_parameter() from None


def _guid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise faults.invalid_parameter() from None


class PSRPShell(Shell):
    def __init__(
        self,
        shell_id: str,
        resource_uri: str,
        pool: Pool,
        owner: str,
        client_ip: str,
        idle_timeout: str,
        input_streams: str,
        output_streams: str,
        name: str = "",
        buffer_mode: str = "Block",
    ) -> None:
        self.shell_id = shell_id
        self.resource_uri = resource_uri
        self.pool = pool
        self.owner = owner
        self.client_ip = client_ip
        self.idle_timeout = idle_timeout
        self.input_streams = input_streams
        self.output_streams = output_streams
        self.name = name
        self.buffer_mode = buffer_mode
        # --server-ids: the CommandIds this server chose, and the pipeline each one names.
        self.server_commands: Dict[str, uuid.UUID] = {}

    @property
    def idle_seconds(self) -> Optional[float]:
        return parse_duration(self.idle_timeout)

    def pipeline_of(self, command_id: str) -> uuid.UUID:
        """The pipeline a CommandId names: one the server chose, or the client's own id."""
        chosen = self.server_commands.get(command_id.upper())
        return chosen if chosen is not None else _guid(command_id)

    def live_commands(self) -> int:
        return self.pool.counts()["pipelines"]

    def extra_counts(self):
        return {"pools": 0 if self.pool.closed else 1, **self.pool.counts()}


def _duration(value: str) -> str:
    """An xs:duration as Windows writes IdleTimeOut (PT60.000S); invalid -> the fault for a bad value."""
    seconds = parse_duration(value)
    if seconds is None:
        raise faults.invalid_parameter()
    return f"PT{seconds:.3f}S"


def _buffer_mode(value: str) -> str:
    mode = BUFFER_MODES.get(value.strip().lower())
    if mode is None:
        raise faults.invalid_parameter()
    return mode


def _memory_used() -> str:
    """MemoryUsed as Windows reports it (the host process's working set, in MB)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return f"{pages * os.sysconf('SC_PAGE_SIZE') // (1 << 20)}MB"
    except (OSError, ValueError, IndexError):
        return "0MB"


class PSRPEngine(ShellEngine):
    actions = frozenset(
        {ACTION_COMMAND, ACTION_SEND, ACTION_RECEIVE, ACTION_SIGNAL, ACTION_DISCONNECT, ACTION_RECONNECT, ACTION_CONNECT}
    )

    def __init__(
        self, fragment_size: Optional[int] = None, server_ids: bool = False, buffer_limit: Optional[int] = None
    ) -> None:
        self.fragment_size = fragment_size
        self.buffer_limit = buffer_limit  # --psrp-buffer-kb, in bytes
        # Like PowerShell 2.0's WinRM plugin: ignore the ShellId and CommandId the client asks
        # for and answer with ids of our own (PSRP keeps the client's RPID and PID).
        self.server_ids = server_ids
        # --psrp-signal-delay-ms: seconds each Signal is held before it is carried out and answered.
        self.signal_delay = 0.0

    # -- Create ----------------------------------------------------------------------------------------
    def create(self, request: WSManRequest, ctx: RequestContext, taken: ShellTable) -> Tuple[Shell, Reply]:
        configuration = configuration_of(request.resource_uri)
        if configuration is None:
            raise faults.destination_unreachable(request.resource_uri)
        body = request.body.find(q("rsp", "Shell"))
        if body is None:
            raise faults.invalid_parameter()
        # The plugin compares option names ordinally: "protocolversion" exactly.
        if "protocolversion" not in request.options:
            raise faults.psrp_protocol_version_missing()
        version = request.options["protocolversion"]
        if not _VERSION.match(version):
            raise faults.psrp_protocol_version_mismatch(version)
        for name in sorted(request.must_comply):
            if name.upper().startswith("PS_") and name.lower() not in _KNOWN_PS_OPTIONS:
                raise faults.psrp_option_not_understood(name)

        shell_id = (body.get("ShellId") or "").strip().upper()
        pool_id = _guid(shell_id) if shell_id else uuid.uuid4()
        shell_id = str(uuid.uuid4() if self.server_ids else pool_id).upper()
        if taken.contains(shell_id):
            raise faults.invalid_parameter("A shell with the requested ShellId already exists. ")
        inputs = self._element_text(body, "InputStreams") or "stdin pr"
        outputs = self._element_text(body, "OutputStreams") or "stdout"
        if "stdout" not in outputs.split():
            raise faults.psrp_invalid_stream("output", "stdout")
        idle = self._element_text(body, "IdleTimeOut")
        seconds = parse_duration(idle) if idle else None
        idle_timeout = f"PT{seconds:.3f}S" if seconds is not None else DEFAULT_IDLE
        buffer = self._element_text(body, "BufferMode")
        buffer_mode = _buffer_mode(buffer) if buffer else "Block"

        pool = Pool(pool_id, configuration, self.fragment_size, self.buffer_limit, buffer_mode)
        creation = body.find(f"{{{PS_NS}}}creationXml")
        if creation is not None and (creation.text or "").strip():
            try:
                pool.feed(_b64(creation.text))
            except ProtocolError as exc:
                raise faults.psrp_bad_data(str(exc)) from None
        shell = PSRPShell(
            shell_id,
            request.resource_uri,
            pool,
            ctx.principal,
            ctx.client_ip,
            idle_timeout,
            inputs,
            outputs,
            self._element_text(body, "Name"),
            buffer_mode,
        )
        return shell, Reply(self._created_body(shell, ctx))

    @staticmethod
    def _element_text(body: ET.Element, tag: str) -> str:
        element = body.find(q("rsp", tag))
        return (element.text or "").strip() if element is not None else ""

    @classmethod
    def _created_body(cls, shell: PSRPShell, ctx: RequestContext) -> str:
        return (
            f"<x:ResourceCreated><a:Address>{text(ctx.endpoint_url)}</a:Address><a:ReferenceParameters>"
            f"<w:ResourceURI>{text(shell.resource_uri)}</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{shell.shell_id}</w:Selector></w:SelectorSet>'
            "</a:ReferenceParameters></x:ResourceCreated>" + cls._shell_xml(shell, live=False)
        )

    @staticmethod
    def _shell_xml(shell: PSRPShell, live: bool) -> str:
        """The rsp:Shell element: the CreateResponse's (``live`` False: times zero, no MemoryUsed) or
        transfer Get's and Enumerate's (test_psrp_is_alive_*.yml, test_psrp_disconnect_runspaces.yml)."""
        now = time.monotonic()
        run_time = span(now - shell.created) if live else "P0DT0H0M0S"
        inactivity = span(now - shell.last_activity) if live else "P0DT0H0M0S"
        name = f"<rsp:Name>{text(shell.name)}</rsp:Name>" if shell.name else ""
        extra = f"<rsp:MemoryUsed>{_memory_used()}</rsp:MemoryUsed><rsp:ChildProcesses>0</rsp:ChildProcesses>" if live else ""
        return (
            f'<rsp:Shell xmlns:rsp="{NS["rsp"]}">'
            f"<rsp:ShellId>{shell.shell_id}</rsp:ShellId>{name}"
            f"<rsp:ResourceUri>{text(shell.resource_uri)}</rsp:ResourceUri>"
            f"<rsp:Owner>{text(shell.owner)}</rsp:Owner><rsp:ClientIP>{text(shell.client_ip)}</rsp:ClientIP>"
            f"<rsp:ProcessId>{os.getpid()}</rsp:ProcessId>"
            f"<rsp:IdleTimeOut>{shell.idle_timeout}</rsp:IdleTimeOut>"
            f"<rsp:InputStreams>{text(shell.input_streams)}</rsp:InputStreams>"
            f"<rsp:OutputStreams>{text(shell.output_streams)}</rsp:OutputStreams>"
            "<rsp:MaxIdleTimeOut>PT2147483.647S</rsp:MaxIdleTimeOut>"
            "<rsp:Locale>en-US</rsp:Locale><rsp:DataLocale>en-US</rsp:DataLocale>"
            "<rsp:CompressionMode>NoCompression</rsp:CompressionMode><rsp:ProfileLoaded>Yes</rsp:ProfileLoaded>"
            f"<rsp:Encoding>UTF8</rsp:Encoding><rsp:BufferMode>{shell.buffer_mode}</rsp:BufferMode>"
            f"<rsp:State>{shell.state}</rsp:State>"
            f"<rsp:ShellRunTime>{run_time}</rsp:ShellRunTime><rsp:ShellInactivity>{inactivity}</rsp:ShellInactivity>"
            f"{extra}</rsp:Shell>"
        )

    def describe(self, shell: Shell) -> str:
        assert isinstance(shell, PSRPShell)
        return self._shell_xml(shell, live=True)

    def command_ids(self, shell: Shell) -> List[str]:
        assert isinstance(shell, PSRPShell)
        chosen = {str(pid).upper(): cid for cid, pid in shell.server_commands.items()}
        return [chosen.get(pid.upper(), pid) for pid in shell.pool.pipeline_ids()]

    # -- the rest -----------------------------------------------------------------------------------------
    def handle(self, shell: Shell, request: WSManRequest, ctx: RequestContext) -> Reply:
        assert isinstance(shell, PSRPShell)
        if configuration_of(request.resource_uri) is None:
            raise faults.destination_unreachable(request.resource_uri)
        handler = {
            ACTION_COMMAND: self._command,
            ACTION_SEND: self._send,
            ACTION_RECEIVE: self._receive,
            ACTION_SIGNAL: self._signal,
            ACTION_DISCONNECT: self._disconnect,
            ACTION_RECONNECT: self._reconnect,
            ACTION_CONNECT: self._connect,
        }[request.action]
        try:
            return handler(shell, request, ctx)
        except UnknownPipeline:
            raise faults.unknown_command() from None
        except PoolClosed:
            raise faults.unknown_shell() from None
        except PoolDisconnected:
            raise faults.shell_disconnected(shell.shell_id) from None
        except ProtocolError as exc:
            raise faults.psrp_bad_data(str(exc)) from None

    def delete(self, shell: Shell) -> None:
        assert isinstance(shell, PSRPShell)
        shell.pool.close()

    def _command(self, shell: PSRPShell, request: WSManRequest, ctx: RequestContext) -> Reply:
        line = request.body.find(q("rsp", "CommandLine"))
        if line is None:
            raise faults.invalid_parameter()
        data = b"".join(_b64(argument.text) for argument in line.findall(q("rsp", "Arguments")))
        command_id = (line.get("CommandId") or "").strip()
        if self.server_ids:
            pipeline_id = self._pipeline_id_of(data)
        else:
            pipeline_id = _guid(command_id) if command_id else self._pipeline_id_of(data)
        shell.pool.command(pipeline_id, data)
        answered = str(pipeline_id).upper()
        if self.server_ids:
            answered = str(uuid.uuid4()).upper()
            shell.server_commands[answered] = pipeline_id
        return Reply(f"<rsp:CommandResponse><rsp:CommandId>{answered}</rsp:CommandId></rsp:CommandResponse>")

    @staticmethod
    def _pipeline_id_of(data: bytes) -> uuid.UUID:
        """Without a CommandId attribute the pipeline id comes from the CREATE_PIPELINE header."""
        if len(data) >= 21 + 40:
            return uuid.UUID(bytes_le=data[21 + 24 : 21 + 40])
        return uuid.uuid4()

    def _send(self, shell: PSRPShell, request: WSManRequest, ctx: RequestContext) -> Reply:
        send = request.body.find(q("rsp", "Send"))
        if send is None:
            raise faults.invalid_parameter()
        chunks: List[bytes] = []
        for stream in send.findall(q("rsp", "Stream")):
            if stream.get("Name") not in ("stdin", "pr"):
                raise faults.psrp_invalid_stream("input", "stdin or pr")
            command_id = stream.get("CommandId")
            if command_id and not shell.pool.has_pipeline(shell.pipeline_of(command_id)):
                raise faults.unknown_command()
            chunks.append(_b64(stream.text))
        for chunk in chunks:
            if chunk:
                shell.pool.feed(chunk)
        return Reply("<rsp:SendResponse/>")

    def _receive(self, shell: PSRPShell, request: WSManRequest, ctx: RequestContext) -> Reply:
        desired = request.body.find(q("rsp", "Receive") + "/" + q("rsp", "DesiredStream"))
        if desired is None:
            raise faults.invalid_parameter()
        if "stdout" not in (desired.text or "").split():
            raise faults.psrp_invalid_stream("output", "stdout")
        command_id = (desired.get("CommandId") or "").strip()
        pipeline_id = shell.pipeline_of(command_id) if command_id else None
        command_id = command_id.upper()
        timeout = min(
            request.operation_timeout if request.operation_timeout is not None else ctx.max_timeout, ctx.max_timeout
        )
        fixed = (
            len(self._received_body(command_id, [], True)) if command_id else len(self._received_body("", [], False))
        )
        per_fragment = len(self._stream(command_id, ""))
        result = shell.pool.receive(pipeline_id, timeout, request.body_budget - fixed, per_fragment)
        if result is None:
            raise faults.operation_timeout()
        streams = ""
        if result.fragments:
            # One Stream element per fragment, as Windows sends them.
            opening, closing = per_fragment_tags(command_id)
            encoded = [binascii.b2a_base64(fragment, newline=False).decode("ascii") for fragment in result.fragments]
            streams = opening + (closing + opening).join(encoded) + closing
        return Reply(self._received_body(command_id, [streams], result.done), NS_RECEIVE)

    @staticmethod
    def _stream(command_id: str, payload: str) -> str:
        opening, closing = per_fragment_tags(command_id)
        return opening + payload + closing

    @staticmethod
    def _received_body(command_id: str, streams: List[str], done: bool) -> str:
        parts = ["<rsp:ReceiveResponse>", *streams]
        if command_id:
            if done:
                parts.append(
                    f'<rsp:CommandState CommandId="{command_id}" State="{STATE}Done"><rsp:ExitCode>0</rsp:ExitCode></rsp:CommandState>'
                )
            else:
                parts.append(f'<rsp:CommandState CommandId="{command_id}" State="{STATE}Running"></rsp:CommandState>')
        parts.append("</rsp:ReceiveResponse>")
        return "".join(parts)

    # -- Disconnect, Reconnect, Connect (MS-WSMV 3.1.4.15-17, MS-PSRP 3.1.4.9-10) -------------------------
    def _disconnect(self, shell: PSRPShell, request: WSManRequest, ctx: RequestContext) -> Reply:
        """Disconnect: a disconnected shell's pipelines keep running; their output waits (BufferMode)."""
        body = request.body.find(q("rsp", "Disconnect"))
        if body is not None:
            idle = self._element_text(body, "IdleTimeOut")
            buffer = self._element_text(body, "BufferMode")
            if idle:
                shell.idle_timeout = _duration(idle)
            if buffer:
                shell.buffer_mode = _buffer_mode(buffer)
        shell.state = DISCONNECTED
        shell.pool.disconnect(shell.buffer_mode)
        log.info("shell %s disconnected (idle timeout %s, %s)", shell.shell_id, shell.idle_timeout, shell.buffer_mode)
        return Reply("", NS_DELETE)


    def _reconnect(self, shell: PSRPShell, request: WSManRequest, ctx: RequestContext) -> Reply:
        """Reconnect by the client session that disconnected (same wsmv:SessionId); empty body, or
        ``rsp:Reconnect`` (optionally with CommandId, or BufferMode)."""
        body = request.body.find(q("rsp", "Reconnect"))
        command_id = (body.get("CommandId") or "").strip() if body is not None else ""
        same_client = not (request.session_id and shell.client_session) or request.session_id == shell.client_session
        if not same_client:
            if shell.disconnected:
                raise faults.client_session_mismatch(shell.shell_id)
            raise faults.connected_to_different_client(shell.shell_id)
        if body is not None:
            buffer = self._element_text(body, "BufferMode")
            if buffer:
                shell.buffer_mode = _buffer_mode(buffer)
        if command_id:
            if shell.disconnected:
                raise faults.shell_disconnected(shell.shell_id)
            if not shell.pool.has_pipeline(shell.pipeline_of(command_id)):
                raise faults.unknown_command()
            return Reply("", NS_DELETE)
        if shell.disconnected:
            shell.state = CONNECTED
            shell.pool.reconnect(shell.buffer_mode)
            log.info("shell %s reconnected", shell.shell_id)
        return Reply("", NS_DELETE)


    def _connect(self, shell: PSRPShell, request: WSManRequest, ctx: RequestContext) -> Reply:
        """Connect: a new client attaches to a disconnected pool (connectXml), then to its pipelines (CommandId)."""
        body = request.body.find(q("rsp", "Connect"))
        if body is None:
            raise faults.invalid_parameter()
        command_id = (body.get("CommandId") or "").strip()
        if command_id:
            if shell.disconnected:
                raise faults.shell_disconnected(shell.shell_id)
            if not shell.pool.has_pipeline(shell.pipeline_of(command_id)):
                raise faults.unknown_command()
            log.info("pipeline %s connected", command_id.upper())
            return Reply("<rsp:ConnectResponse/>")
        if not shell.disconnected:
            raise faults.connected_to_different_client(shell.shell_id)
        if "protocolversion" not in request.options:
            raise faults.psrp_protocol_version_missing()
        version = request.options["protocolversion"]
        if not _VERSION.match(version):
            raise faults.psrp_protocol_version_mismatch(version)
        buffer = self._element_text(body, "BufferMode")
        if buffer:
            shell.buffer_mode = _buffer_mode(buffer)
        connect_xml = body.find(f"{{{PS_NS}}}connectXml")
        data = _b64(connect_xml.text if connect_xml is not None else "")
        min_max = _read_connect_xml(data, shell.pool.id)
        blob = shell.pool.connect_new_client(min_max, shell.buffer_mode)
        shell.state = CONNECTED
        shell.client_session = request.session_id
        log.info("shell %s connected by a new client", shell.shell_id)
        encoded = base64.b64encode(blob).decode("ascii")
        return Reply(
            "<rsp:ConnectResponse>"
            f"<rsp:InputStreams>{text(shell.input_streams)}</rsp:InputStreams>"
            f"<rsp:OutputStreams>{text(shell.output_streams)}</rsp:OutputStreams>"
            f'<connectResponseXml xmlns="{PS_NS}">{encoded}</connectResponseXml>'
            "</rsp:ConnectResponse>"
        )

    def _signal(self, shell: PSRPShell, request: WSManRequest, ctx: RequestContext) -> Reply:
        element = request.body.find(q("rsp", "Signal"))
        code_element = element.find(q("rsp", "Code")) if element is not None else None
        command_id = (element.get("CommandId") or "").strip() if element is not None else ""
        if code_element is None or not command_id:
            raise faults.invalid_parameter()
        if self.signal_delay > 0:
            time.sleep(self.signal_delay)
        pipeline_id = shell.pipeline_of(command_id)
        code = (code_element.text or "").strip().lower()
        if code.endswith(STOP_CODES):
            shell.pool.stop_pipeline(pipeline_id)
        elif code == TERMINATE:
            shell.pool.release_pipeline(pipeline_id)
            log.info("pipeline %s released", command_id.upper())
        else:
            raise faults.invalid_parameter()
        return Reply("<rsp:SignalResponse/>")


def _read_connect_xml(data: bytes, pool_id: uuid.UUID) -> Optional[Tuple[int, int]]:
    """Check connectXml as PowerShell's server does (ServerRemoteSession.ExecuteConnect): exactly a whole
    SESSION_CAPABILITY fragment then a whole CONNECT_RUNSPACEPOOL fragment, for this pool. Returns the
    (MinRunspaces, MaxRunspaces) the client asked for, or None when it asked for none (pypsrp's ``<S />``)."""
    try:
        messages = wire.Defragmenter().feed(data)
    except wire.FragmentError as exc:
        raise faults.psrp_connect_invalid(f"The connect request data is not valid: {exc}") from None
    if [m.message_type for m in messages] != [SESSION_CAPABILITY, CONNECT_RUNSPACEPOOL]:
        raise faults.psrp_connect_invalid(
            "The connect request must carry SESSION_CAPABILITY and CONNECT_RUNSPACEPOOL, and nothing else."
        )
    for message in messages:
        if uuid.UUID(bytes_le=bytes(message.blob[8:24])) != pool_id:
            raise faults.psrp_connect_invalid("The connect request is for a different RunspacePool.")
    try:
        capability = ET.fromstring(messages[0].data)
        connect = ET.fromstring(messages[1].data)
    except ET.ParseError as exc:
        raise faults.psrp_connect_invalid(f"The connect request data is not valid: {exc}") from None
    version = capability.find(".//Version[@N='protocolversion']")
    if version is None or not _VERSION.match((version.text or "").strip()):
        raise faults.psrp_connect_invalid("The connect request carries no usable protocolversion.")
    low = connect.find(".//I32[@N='MinRunspaces']")
    high = connect.find(".//I32[@N='MaxRunspaces']")
    if low is None or high is None:
        return None
    try:
        values = int(low.text or ""), int(high.text or "")
    except ValueError:
        raise faults.psrp_connect_invalid("MinRunspaces and MaxRunspaces must be integers.") from None
    if values[0] < 1 or values[0] > values[1]:
        raise faults.psrp_connect_invalid("MinRunspaces and MaxRunspaces are not valid.")
    return values


def per_fragment_tags(command_id: str) -> Tuple[str, str]:
    if command_id:
        return f'<rsp:Stream Name="stdout" CommandId="{command_id}">', "</rsp:Stream>"
    return '<rsp:Stream Name="stdout">', "</rsp:Stream>"


