"""One PowerShell RunspacePool behind a WinRS shell, driven by psrpcore's ServerRunspacePool.

Threading: every touch of psrpcore state happens under the pool's lock.
Receives block on per-target Conditions (pool or pipeline) sharing that lock;
each pipeline runs its commands on its own thread and blocks on its own
Condition while it waits for input, a host response, a stop or queue space.
Nothing polls.

Outgoing data: after every psrpcore call the pool drains psrpcore's send
buffer with ``data_to_send()`` (whole messages), re-numbers the messages with
the pool's own ObjectId counter and queues them per target; a Receive cuts
its target's queue into fragments sized for that Receive's MaxEnvelopeSize.
Objects serialised once (New-TestObject) and client input echoed unchanged
join the same queue as raw PIPELINE_OUTPUT messages.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Iterator, List, Optional, Tuple

import psrpcore
from psrpcore import (
    CreatePipelineEvent,
    EndOfPipelineInputEvent,
    GetAvailableRunspacesEvent,
    GetCommandMetadataEvent,
    InvalidProtocolVersion,
    PipelineHostResponseEvent,
    PipelineInputEvent,
    PSRPPayload,
    PublicKeyEvent,
    ResetRunspaceStateEvent,
    ServerHostRequestor,
    ServerPipeline,
    ServerRunspacePool,
    SetMaxRunspacesEvent,
    SetMinRunspacesEvent,
    StreamType,
)
from psrpcore.types import (
    ApplicationPrivateData,
    DebugRecord,
    ErrorCategory,
    PipelineState,
    PSInvocationState,
    ProgressRecordType,
    PSDouble,
    PSPrimitiveDictionary,
    PSRPMessageType,
    PSVersion,
    VerboseRecord,
    WarningRecord,
    deserialize,
    serialize,
)

from . import psrp_records as records
from . import psrp_wire as wire
from . import psrp_commands  # noqa: F401 - registers the command set
from . import psrp_files  # noqa: F401 - registers the file-transfer scripts
from . import psrp_interactive  # noqa: F401 - registers Out-Default, TabExpansion2, prompt, locations
from .psrp_runtime import (
    Configuration,
    HostCallFailed,
    PipelineHost,
    PipelineStopped,
    RawItem,
    Runner,
    SessionState,
    TerminatingError,
)

log = logging.getLogger(__name__)

# The AES session keys this endpoint generated, in hex. A test fixture's disclosure: the control
# state reports them so that tests can prove a client never writes the key into its logs.
SESSION_KEYS: List[str] = []


def record_session_key(core: Any) -> None:
    """Notes the session key psrpcore just generated (its private cipher's AES key)."""
    try:
        key = core._cipher._cipher.algorithm.key  # noqa: SLF001 - psrpcore keeps it private
    except AttributeError:
        return
    SESSION_KEYS.append(bytes(key).hex())

# A Receive that finds output while the pipeline is still busy waits this long
# for more (or for completion), so short commands finish in one round trip.
COALESCE = 0.005
# Bytes queued for one pipeline before its command waits for a Receive (BufferMode Block).
HIGH_WATER = 4 << 20
# How long a stop Signal waits for the pipeline to report Stopped before answering.
STOP_WAIT = 5.0


# CREATE_PIPELINE data seen before -> psrpcore's PowerShell metadata made from it. Clients send the
# same few pipelines again and again, and deserialising one (its HostInfo alone holds dozens of
# objects) was the costliest step of a short invocation. The metadata is only read once made, so
# pipelines may share it. Data holding SecureStrings is never cached: those depend on a pool's key.
_PIPELINE_CACHE: "OrderedDict[Tuple[bytes, str], Any]" = OrderedDict()
_PIPELINE_CACHE_ENTRIES = 64
_PIPELINE_CACHE_MAX_DATA = 64 << 10
_pipeline_cache_lock = threading.Lock()


def _pipeline_cache_key(core: ServerRunspacePool, message: wire.IncomingMessage) -> Optional[Tuple[bytes, str]]:
    data = message.data
    if len(data) > _PIPELINE_CACHE_MAX_DATA or b"<SS" in data:
        return None
    capability = core.their_capability
    return data, str(getattr(capability, "protocolversion", "")) if capability is not None else ""


_completed_state: Optional[bytes] = None


def completed_state_clixml() -> bytes:
    """The CLIXML of PIPELINE_STATE Completed, as psrpcore's ``complete()`` serialises it (made once).

    It never varies, and serialising it through psrpcore for every pipeline was a large part of
    a short invocation's cost; the bytes are psrpcore's own."""
    global _completed_state
    if _completed_state is None:
        element = serialize(PipelineState(PipelineState=int(PSInvocationState.Completed)), psrpcore.PSRemotingCrypto())
        _completed_state = ET.tostring(element, encoding="utf-8", method="xml")
    return _completed_state


def mark_running(core: ServerPipeline) -> None:
    """psrpcore's ``start()`` without its PIPELINE_STATE Running message, which Windows never sends
    (it used to be serialised only to be dropped)."""
    if core.state not in (PSInvocationState.NotStarted, PSInvocationState.Stopped, PSInvocationState.Completed):
        core.start()  # raises psrpcore's InvalidPipelineState
    core._change_state(PSInvocationState.Running, emit=False)  # noqa: SLF001 - the documented no-message path


# SET_MAX_RUNSPACES, SET_MIN_RUNSPACES, GET_AVAILABLE_RUNSPACES, RESET_RUNSPACE_STATE: they carry a call id.
_CI_MESSAGES = (0x00021002, 0x00021003, 0x00021007, 0x0002100C)


class PoolClosed(Exception):
    """The pool was deleted."""


class PoolDisconnected(Exception):
    """The shell was disconnected while a Receive waited (or before it came)."""


class UnknownPipeline(Exception):
    """No pipeline with that CommandId (never created, or released by Terminate)."""


class ProtocolError(Exception):
    """The client's PSRP data cannot be processed."""


def _private_data() -> Dict[str, Any]:
    """APPLICATION_PRIVATE_DATA: a PSVersionTable like Windows PowerShell 5.1 sends."""
    table = PSPrimitiveDictionary(
        {
            "PSVersion": PSVersion("5.1.17763.1"),
            "PSEdition": "Desktop",
            "PSCompatibleVersions": [PSVersion(v) for v in ("1.0", "2.0", "3.0", "4.0", "5.0", "5.1.17763.1")],
            "CLRVersion": PSVersion("4.0.30319.42000"),
            "BuildVersion": PSVersion("10.0.17763.1"),
            "WSManStackVersion": PSVersion("3.0"),
            "PSRemotingProtocolVersion": PSVersion("2.3"),
            "SerializationVersion": PSVersion("1.1.0.1"),
        }
    )
    return {"PSVersionTable": table}


def _with_bom(blob: bytes) -> bytes:
    """Windows servers put a UTF-8 BOM before the CLIXML of every message (PROTOCOL.md F.9)."""
    if len(blob) <= wire.MESSAGE_HEADER_LEN:
        return blob
    return blob[: wire.MESSAGE_HEADER_LEN] + wire.BOM + blob[wire.MESSAGE_HEADER_LEN :]


class Target:
    """A Receive destination: the pool itself or one pipeline."""

    __slots__ = ("queue", "readable", "waiting", "want")

    def __init__(self, lock: threading.Lock) -> None:
        self.queue = wire.OutQueue()
        self.readable = threading.Condition(lock)
        self.waiting = 0
        self.want = 1  # queued bytes at which a waiting Receive wants to be woken


@dataclass
class Received:
    fragments: List[bytes]
    done: bool


class Pool:
    def __init__(
        self,
        runspace_pool_id: uuid.UUID,
        configuration: Configuration,
        fragment_size: Optional[int] = None,
        buffer_limit: Optional[int] = None,
        buffer_mode: str = "Block",
    ) -> None:
        self.id = runspace_pool_id
        self.configuration = configuration
        self.fragment_size = fragment_size
        # Output bytes queued per pipeline before BufferMode applies: Block waits for a Receive,
        # Drop (only while disconnected) discards the oldest unsent messages.
        self.buffer_limit = buffer_limit or HIGH_WATER
        self.buffer_mode = buffer_mode
        self.disconnected = False
        self.dropped = 0  # messages Drop discarded
        self.lock = threading.Lock()
        self.core = ServerRunspacePool(application_private_data=_private_data())
        self.target = Target(self.lock)
        self.slots = threading.Condition(self.lock)  # pipelines waiting for a free runspace
        self.pipelines: Dict[uuid.UUID, Pipeline] = {}
        self.session = SessionState()
        self.key_exchanged = False
        self.closed = False
        self.running = 0
        # Deserialises raw input on demand; it has no session key, so SecureStrings in such input stay encrypted.
        self.keyless_cipher = psrpcore.PSRemotingCrypto()
        self._defragmenter = wire.Defragmenter()
        self._object_id = 0
        self._incoming_id = 0

    # -- counts ------------------------------------------------------------------------------------------
    def counts(self) -> Dict[str, int]:
        with self.lock:
            pipelines = list(self.pipelines.values())
        return {
            "pipelines": len(pipelines),
            "pipelines_running": sum(1 for p in pipelines if p.thread is not None and not p.finished),
        }

    # -- incoming ----------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Process PSRP fragments from Create, Command or Send."""
        with self.lock:
            self._check_open()
            try:
                messages = self._defragmenter.feed(data)
            except wire.FragmentError as exc:
                raise ProtocolError(str(exc)) from None
            try:
                for message in messages:
                    self._incoming(message)
            finally:
                self._collect()

    def _incoming(self, message: wire.IncomingMessage) -> None:
        pipeline = self.pipelines.get(message.pipeline_id) if message.pipeline_id else None
        if message.message_type == wire.PIPELINE_INPUT and pipeline is not None and pipeline.raw_input:
            # psrpcore only deserialises PIPELINE_INPUT for the higher layer; a raw consumer needs the bytes.
            pipeline.add_input(RawItem(message.data))
            return
        cache_key = None
        if message.message_type in (wire.CREATE_PIPELINE, wire.GET_COMMAND_METADATA):
            if message.pipeline_id is None:
                raise ProtocolError("CREATE_PIPELINE without a pipeline id")
            if pipeline is None:
                pipeline = self._new_pipeline(message.pipeline_id)
            if message.message_type == wire.CREATE_PIPELINE:
                cache_key = _pipeline_cache_key(self.core, message)
                with _pipeline_cache_lock:
                    metadata = _PIPELINE_CACHE.get(cache_key) if cache_key is not None else None
                core_pipeline = self.core.pipeline_table.get(message.pipeline_id)
                if metadata is not None and core_pipeline is not None and pipeline.thread is None:
                    # What psrpcore's CreatePipeline processing does, without deserialising again.
                    core_pipeline.metadata = metadata
                    pipeline.start(metadata)
                    return
        blob = message.blob
        if message.message_type in _CI_MESSAGES and b'N="CI"' in blob:
            # pypsrp writes "CI" (PROTOCOL.md F.5): PowerShell reads property names
            # case-insensitively, psrpcore does not.
            blob = blob.replace(b'N="CI"', b'N="ci"')
        self._incoming_id += 1
        self.core.receive_data(
            PSRPPayload(wire.whole_fragment(self._incoming_id, blob), StreamType.default, message.pipeline_id)
        )
        try:
            while True:
                event = self.core.next_event()
                if event is None:
                    break
                self._event(event)
        except (psrpcore.PSRPCoreError, ET.ParseError, ValueError, KeyError, AttributeError, TypeError) as exc:
            log.info("PSRP message %#x rejected: %s", message.message_type, exc)
            raise ProtocolError(f"PSRP message {message.message_type:#x} could not be processed: {exc}") from None
        if cache_key is not None and pipeline is not None and pipeline.metadata is not None:
            with _pipeline_cache_lock:
                _PIPELINE_CACHE[cache_key] = pipeline.metadata
                while len(_PIPELINE_CACHE) > _PIPELINE_CACHE_ENTRIES:
                    _PIPELINE_CACHE.popitem(last=False)

    def _event(self, event: Any) -> None:
        core = self.core
        if isinstance(event, PublicKeyEvent):
            self.key_exchanged = True  # psrpcore queued ENCRYPTED_SESSION_KEY
            record_session_key(core)
        elif isinstance(event, SetMaxRunspacesEvent):
            accepted = event.count >= max(core.min_runspaces, 1)
            core.runspace_availability_response(event.ci, accepted)
            if accepted:
                self.slots.notify_all()
        elif isinstance(event, SetMinRunspacesEvent):
            core.runspace_availability_response(event.ci, 1 <= event.count <= core.max_runspaces)
        elif isinstance(event, GetAvailableRunspacesEvent):
            core.runspace_availability_response(event.ci, int(max(core.max_runspaces - self.running, 0)))
        elif isinstance(event, ResetRunspaceStateEvent):
            self.session.reset()
            core.runspace_availability_response(event.ci, True)
        elif isinstance(event, CreatePipelineEvent):
            # psrpcore made the metadata while processing the message (event.pipeline would make it again).
            self.pipelines[event.pipeline_id].start(core.pipeline_table[event.pipeline_id].metadata)
        elif isinstance(event, GetCommandMetadataEvent):
            self.pipelines[event.pipeline_id].start_metadata(event.pipeline)
        elif isinstance(event, PipelineInputEvent):
            pipeline = self.pipelines.get(event.pipeline_id)
            if pipeline is not None:
                pipeline.add_input(event.data)
        elif isinstance(event, EndOfPipelineInputEvent):
            pipeline = self.pipelines.get(event.pipeline_id)
            if pipeline is not None:
                pipeline.end_input()
        elif isinstance(event, PipelineHostResponseEvent):
            pipeline = self.pipelines.get(event.pipeline_id)
            if pipeline is not None:
                pipeline.host_response(event)
        # SessionCapability and InitRunspacePool: psrpcore queued the replies itself.

    # -- outgoing ----------------------------------------------------------------------------------------
    def _collect(self) -> None:
        """Move whatever psrpcore queued into the per-target queues (lock held)."""
        while True:
            payload = self.core.data_to_send()
            if payload is None:
                return
            if payload.pipeline_id is None:
                target = self.target
            else:
                pipeline = self.pipelines.get(payload.pipeline_id)
                if pipeline is None:
                    continue  # released: nobody will ask for it
                target = pipeline.target
            for blob in wire.split_whole_fragments(payload.data):
                self.deliver(target, _with_bom(blob))

    def deliver(self, target: Target, blob: bytes) -> None:
        """Queue one complete message for ``target`` under the next ObjectId (lock held)."""
        was_empty = not target.queue
        self._object_id += 1
        target.queue.push(self._object_id, blob)
        if target.waiting and (was_empty or target.queue.pending >= target.want):
            target.readable.notify_all()

    def receive(
        self, pipeline_id: Optional[uuid.UUID], timeout: float, chars: int, per_fragment: int
    ) -> Optional[Received]:
        """Long-poll for ``pipeline_id``'s (or the pool's) data; None when nothing came within ``timeout``.

        ``chars`` is the room left for Stream elements in the reply body and
        ``per_fragment`` what one element costs besides its base64 text.
        """
        deadline = time.monotonic() + timeout
        fill = max(chars * 3 // 4, 1)
        with self.lock:
            target, pipeline = self._target(pipeline_id)
            target.waiting += 1
            try:
                while not target.queue and not (pipeline is not None and pipeline.finished):
                    if self.disconnected:
                        raise PoolDisconnected()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    target.want = 1
                    target.readable.wait(remaining)
                    self._check_target(pipeline)
                if pipeline is not None and target.queue.pending < fill and pipeline.busy():
                    until = min(deadline, time.monotonic() + COALESCE)
                    target.want = fill
                    while target.queue.pending < fill and pipeline.busy() and not self.disconnected:
                        remaining = until - time.monotonic()
                        if remaining <= 0:
                            break
                        target.readable.wait(remaining)
                        self._check_target(pipeline)
            finally:
                target.waiting -= 1
                target.want = 1
            fragment_size = max(wire.largest_blob(chars - per_fragment), 1)
            if self.fragment_size:
                fragment_size = min(fragment_size, self.fragment_size)
            fragments = target.queue.take(chars, per_fragment, fragment_size)
            done = pipeline is not None and pipeline.finished and not target.queue
            if pipeline is not None and pipeline.blocked_on_output:
                pipeline.cond.notify_all()
            return Received(fragments, done)

    # -- pipelines ---------------------------------------------------------------------------------------
    def _target(self, pipeline_id: Optional[uuid.UUID]):
        self._check_open()
        if pipeline_id is None:
            return self.target, None
        pipeline = self.pipelines.get(pipeline_id)
        if pipeline is None:
            raise UnknownPipeline(str(pipeline_id))
        return pipeline.target, pipeline

    def _check_target(self, pipeline: Optional["Pipeline"]) -> None:
        self._check_open()
        if pipeline is not None and pipeline.released:
            raise UnknownPipeline(pipeline.command_id)

    def _check_open(self) -> None:
        if self.closed:
            raise PoolClosed()

    def _new_pipeline(self, pipeline_id: uuid.UUID) -> "Pipeline":
        existing = self.pipelines.get(pipeline_id)
        if existing is not None:
            self._release(existing)
        pipeline = Pipeline(self, pipeline_id)
        self.pipelines[pipeline_id] = pipeline
        return pipeline

    def command(self, pipeline_id: uuid.UUID, data: bytes) -> None:
        """WS-Man Command: a new pipeline and the first fragment(s) of its CREATE_PIPELINE."""
        with self.lock:
            self._check_open()
            existing = self.pipelines.get(pipeline_id)
            if existing is not None and existing.thread is not None and not existing.finished:
                raise ProtocolError(f"pipeline {pipeline_id} is still running")
            self._new_pipeline(pipeline_id)
        try:
            self.feed(data)
        except ProtocolError:
            with self.lock:
                pipeline = self.pipelines.get(pipeline_id)
                if pipeline is not None:
                    self._release(pipeline)
            raise

    def has_pipeline(self, pipeline_id: uuid.UUID) -> bool:
        with self.lock:
            self._check_open()
            return pipeline_id in self.pipelines

    def stop_pipeline(self, pipeline_id: uuid.UUID) -> None:
        """Signal crtl_c: stop, and give the pipeline a moment to report Stopped before the SignalResponse."""
        with self.lock:
            _, pipeline = self._target(pipeline_id)
            if pipeline.thread is None or pipeline.finished:
                return
            pipeline.request_stop()
            deadline = time.monotonic() + STOP_WAIT
            while not pipeline.finished and not pipeline.released:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                pipeline.cond.wait(remaining)

    def release_pipeline(self, pipeline_id: uuid.UUID) -> None:
        """Signal Terminate: forget the pipeline (stopping it first if it still runs)."""
        with self.lock:
            _, pipeline = self._target(pipeline_id)
            self._release(pipeline)

    def _release(self, pipeline: "Pipeline") -> None:
        pipeline.released = True
        pipeline.request_stop()
        if self.pipelines.get(pipeline.id) is pipeline:
            del self.pipelines[pipeline.id]
        if self.core.pipeline_table.get(pipeline.id) is pipeline.core:
            self.core.pipeline_table.pop(pipeline.id, None)
        pipeline.target.queue.clear()
        pipeline.target.readable.notify_all()

    def announce_close(self) -> None:
        """Queue RUNSPACEPOOL_STATE Closing then Closed for the pool's Receive, releasing any pipeline
        left, as PowerShell's server does when an out-of-process client closes the pool (WS-Man's
        Delete says nothing). ``close()`` still follows once they were sent."""
        with self.lock:
            self._check_open()
            for pipeline in list(self.pipelines.values()):
                self._release(pipeline)
            try:
                self.core.begin_close()
                self.core.close()
            except psrpcore.PSRPCoreError as exc:  # a pool that never opened has no states to report
                log.info("pool %s closed without its states: %s", self.id, exc)
            self._collect()

    def close(self) -> None:
        """Delete: stop every pipeline and refuse further use."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            for pipeline in list(self.pipelines.values()):
                self._release(pipeline)
            self.target.queue.clear()
            self.target.readable.notify_all()
            self.slots.notify_all()

    # -- Disconnect, Reconnect, Connect ----------------------------------------------------------------------
    def pipeline_ids(self) -> List[str]:
        """CommandIds of the pipelines not yet released (what Enumerate of a shell's commands lists)."""
        with self.lock:
            return [pipeline.command_id for pipeline in self.pipelines.values()]

    def disconnect(self, buffer_mode: str) -> None:
        """Waiting Receives return what is queued (or fail with PoolDisconnected); pipelines keep running."""
        with self.lock:
            self._check_open()
            self.disconnected = True
            self.buffer_mode = buffer_mode
            for target in [self.target, *(p.target for p in self.pipelines.values())]:
                target.readable.notify_all()
            for pipeline in self.pipelines.values():
                pipeline.cond.notify_all()  # a Drop-mode writer may go on now

    def reconnect(self, buffer_mode: str) -> None:
        with self.lock:
            self._check_open()
            self.disconnected = False
            self.buffer_mode = buffer_mode
            for pipeline in self.pipelines.values():
                pipeline.cond.notify_all()

    def connect_new_client(self, min_max: Optional[Tuple[int, int]], buffer_mode: str) -> bytes:
        """Connect from a new client: the connectResponseXml fragments (the server's SESSION_CAPABILITY and
        RUNSPACEPOOL_INIT_DATA, both with this pool's RPID, numbered on after what the pool sent), then
        APPLICATION_PRIVATE_DATA queued for the next pool Receive, as PowerShell's server does
        (ServerRemoteSession.ExecuteConnect, then HandlePostConnect)."""
        with self.lock:
            self._check_open()
            core = self.core
            if min_max is not None and min_max != (core.min_runspaces, core.max_runspaces):
                # PowerShell refuses to change the runspace counts on connect (ServerConnectFailedOnMismatchedRunspacePoolProperties).
                raise ProtocolError("The RunspacePool cannot be connected with other MinRunspaces or MaxRunspaces than it has.")
            capability = wire.message_header(0x00010002, self.id, None) + wire.BOM + (
                b'<Obj RefId="0"><MS><Version N="protocolversion">2.3</Version><Version N="PSVersion">2.0</Version>'
                b'<Version N="SerializationVersion">1.1.0.1</Version></MS></Obj>'
            )
            init_data = wire.message_header(0x0002100B, self.id, None) + wire.BOM + (
                b'<Obj RefId="0"><MS><I32 N="MinRunspaces">%d</I32><I32 N="MaxRunspaces">%d</I32></MS></Obj>'
                % (core.min_runspaces, core.max_runspaces)
            )
            response = b""
            for blob in (capability, init_data):
                self._object_id += 1
                response += wire.whole_fragment(self._object_id, blob)
            self._defragmenter = wire.Defragmenter()  # the new client numbers its fragments from 1
            self.disconnected = False
            self.buffer_mode = buffer_mode
            core.prepare_message(ApplicationPrivateData(ApplicationPrivateData=core.application_private_data))
            self._collect()
            for pipeline in self.pipelines.values():
                pipeline.cond.notify_all()
            return response


class Pipeline(PipelineHost):
    """A server pipeline: psrpcore's ServerPipeline plus the thread running its commands."""

    def __init__(self, pool: Pool, pipeline_id: uuid.UUID) -> None:
        self.pool = pool
        self.id = pipeline_id
        self.command_id = str(pipeline_id).upper()
        self.core = ServerPipeline(pool.core, pipeline_id)
        self.target = Target(pool.lock)
        self.cond = threading.Condition(pool.lock)
        self.thread: Optional[threading.Thread] = None
        self.metadata: Any = None
        self.raw_input = False
        self.inputs: Deque[Any] = deque()
        self.input_ended = False
        self.responses: Dict[int, Any] = {}
        self.stop_requested = False
        self.released = False
        self.finished = False
        self.idle = False  # waiting for input, a host response, a runspace or a timer
        self.blocked_on_output = False
        self.holds_slot = False
        self._output_header = wire.message_header(wire.PIPELINE_OUTPUT, pool.id, pipeline_id) + wire.BOM
        self._state_header = wire.message_header(wire.PIPELINE_STATE, pool.id, pipeline_id) + wire.BOM

    # -- control (pool lock held) ---------------------------------------------------------------------------
    def busy(self) -> bool:
        return not self.finished and not self.idle and not self.released

    def start(self, metadata: Any) -> None:
        self.metadata = metadata
        self.raw_input = not metadata.no_input and Runner.wants_raw_input(metadata.commands)
        self._spawn(self._run)

    def start_metadata(self, metadata: Any) -> None:
        self.metadata = metadata
        self._spawn(self._run_metadata)

    def _spawn(self, body) -> None:
        if self.thread is not None:
            raise ProtocolError("the pipeline was already created")
        self.thread = threading.Thread(target=body, name=f"psrp-{self.command_id[:8]}", daemon=True)
        self.thread.start()

    def request_stop(self) -> None:
        self.stop_requested = True
        self.cond.notify_all()
        self.pool.slots.notify_all()

    def add_input(self, item: Any) -> None:
        self.inputs.append(item)
        self.cond.notify_all()

    def end_input(self) -> None:
        self.input_ended = True
        self.cond.notify_all()

    def host_response(self, event: Any) -> None:
        self.responses[event.ci] = event
        self.cond.notify_all()

    # -- the pipeline thread -----------------------------------------------------------------------------
    def _begin(self) -> None:
        """Wait for a runspace (max_runspaces), then mark the pipeline Running without telling the client.

        Windows sends no Running state; psrpcore's start() queues one, which is dropped.
        """
        pool = self.pool
        with pool.lock:
            if not getattr(self.metadata, "is_nested", False):
                self.idle = True
                while pool.running >= max(pool.core.max_runspaces, 1) and not self.stop_requested and not pool.closed:
                    pool.slots.wait()
                self.idle = False
                pool.running += 1
                self.holds_slot = True
            if self.released or pool.closed:
                raise PipelineStopped()
            pool._collect()
            mark_running(self.core)

    def _run(self) -> None:
        outcome, error = "completed", None
        try:
            self._begin()
            self.check_stop()
            Runner(self, self.pool.configuration).run(self.metadata.commands, self.metadata.no_input)
        except PipelineStopped:
            outcome = "stopped"
        except TerminatingError as failure:
            outcome, error = "failed", failure.record
        except Exception as exc:  # noqa: BLE001 - a command bug must end the pipeline, not hang it
            log.exception("pipeline %s failed", self.command_id)
            outcome = "failed"
            error = records.record(
                ["System.InvalidOperationException", "System.SystemException"],
                f"The endpoint failed to run the pipeline: {exc}",
                "TestServerInternalError",
                ErrorCategory.NotSpecified,
                reason=type(exc).__name__,
            )
        self._finish(outcome, error)

    def _run_metadata(self) -> None:
        from .psrp_metadata import command_metadata

        outcome, error = "completed", None
        try:
            self._begin()
            for item in command_metadata(self.metadata, self.pool.configuration):
                self.check_stop()
                self.write_item(item)
        except PipelineStopped:
            outcome = "stopped"
        self._finish(outcome, error)

    def _finish(self, outcome: str, error: Any) -> None:
        pool = self.pool
        with pool.lock:
            if self.holds_slot:
                self.holds_slot = False
                pool.running -= 1
                pool.slots.notify_all()
            if not self.released and not pool.closed:
                if self.core.state.name == "NotStarted":
                    pool._collect()
                    mark_running(self.core)
                if outcome == "completed":
                    # What complete() queues, from bytes made once; after whatever psrpcore still holds.
                    pool._collect()
                    self.core._change_state(PSInvocationState.Completed, emit=False)  # noqa: SLF001
                    pool.deliver(self.target, self._state_header + completed_state_clixml())
                elif outcome == "stopped":
                    self.core.stop()
                else:
                    # psrpcore's ServerPipeline has no "failed" transition; send the state message ourselves.
                    state = PipelineState(PipelineState=5)
                    state.ExceptionAsErrorRecord = error
                    self.core.prepare_message(state)
                pool._collect()
            self.finished = True
            self.target.readable.notify_all()
            self.cond.notify_all()

    # -- PipelineHost (called on the pipeline thread) ---------------------------------------------------
    def check_stop(self) -> None:
        if self.stop_requested:
            raise PipelineStopped()

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self.pool.lock:
            self.idle = True
            try:
                while not self.stop_requested:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self.cond.wait(remaining)
            finally:
                self.idle = False
        raise PipelineStopped()

    def _writable(self) -> None:
        """Lock held: raise if stopped; wait while too much output is queued (BufferMode Block), or, while
        the shell is disconnected with BufferMode Drop, discard the oldest unsent messages instead."""
        pool = self.pool
        while True:
            if self.stop_requested or pool.closed:
                raise PipelineStopped()
            if self.target.queue.pending <= pool.buffer_limit:
                return
            if pool.disconnected and pool.buffer_mode == "Drop":
                pool.dropped += self.target.queue.drop_oldest(pool.buffer_limit)
                return
            self.blocked_on_output = True
            try:
                self.cond.wait()
            finally:
                self.blocked_on_output = False

    def write_item(self, item: Any) -> None:
        if isinstance(item, RawItem) or item is None:
            clixml = b"<Nil />" if item is None else item.clixml
            with self.pool.lock:
                self._writable()
                self.pool.deliver(self.target, self._output_header + clixml)
            return
        if isinstance(item, float) and not isinstance(item, PSDouble):
            item = PSDouble(item)
        with self.pool.lock:
            self._writable()
            self.core.write_output(item)
            self.pool._collect()

    def _write(self, method: str, *args: Any, **kwargs: Any) -> None:
        with self.pool.lock:
            self._writable()
            getattr(self.core, method)(*args, **kwargs)
            self.pool._collect()

    def write_error(self, error: Any) -> None:
        self._write(
            "write_error",
            exception=error.Exception,
            category_info=error.CategoryInfo,
            target_object=error.TargetObject,
            fully_qualified_error_id=error.FullyQualifiedErrorId,
            error_details=error.ErrorDetails,
            invocation_info=error.InvocationInfo,
            pipeline_iteration_info=error.PipelineIterationInfo,
            script_stack_trace=error.ScriptStackTrace,
        )

    def _informational(self, record_type: Any, message_type: PSRPMessageType, message: str) -> None:
        # ServerPipeline.write_warning() & co. leave out <ToString>, which Windows sends (and pypsrp shows).
        record = record_type(Message=message)
        record.PSObject.to_string = message
        with self.pool.lock:
            self._writable()
            self.core.prepare_message(record, message_type=message_type)
            self.pool._collect()

    def write_warning(self, message: str) -> None:
        self._informational(WarningRecord, PSRPMessageType.WarningRecord, message)

    def write_verbose(self, message: str) -> None:
        self._informational(VerboseRecord, PSRPMessageType.VerboseRecord, message)

    def write_debug(self, message: str) -> None:
        self._informational(DebugRecord, PSRPMessageType.DebugRecord, message)

    def write_information(self, data: Any, source: str, tags: List[str]) -> None:
        try:
            self._write("write_information", data, source, tags=tags)
        except InvalidProtocolVersion:
            pass  # a client older than 2.3 has no information stream

    def write_progress(self, **fields: Any) -> None:
        completed = fields.pop("completed", False)
        fields["record_type"] = ProgressRecordType.Completed if completed else ProgressRecordType.Processing
        self._write("write_progress", **fields)

    def _host_info(self) -> Any:
        info = getattr(self.metadata, "host", None)
        if info is None or info.UseRunspaceHost:
            info = self.pool.core.host
        return info

    def host_info(self) -> Any:
        """The HostInfo that applies to this pipeline (its own, or the pool's)."""
        return self._host_info()

    def host_ui_available(self) -> bool:
        info = self._host_info()
        return info is not None and not info.IsHostNull and not info.IsHostUINull

    def host_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self.pool.lock:
            self._writable()
            ci = getattr(ServerHostRequestor(self.core), method)(*args, **kwargs)
            self.pool._collect()
            if ci is None or ci < 0:
                return None  # void method: no answer comes
            self.idle = True
            try:
                while ci not in self.responses:
                    if self.stop_requested or self.pool.closed:
                        raise PipelineStopped()
                    self.cond.wait()
            finally:
                self.idle = False
            answer = self.responses.pop(ci)
        if answer.error is not None:
            raise HostCallFailed(answer.error)
        return answer.result

    def serialize(self, value: Any) -> bytes:
        return ET.tostring(serialize(value, self.pool.keyless_cipher), encoding="utf-8")

    def deserialize(self, clixml: bytes) -> Any:
        return deserialize(ET.fromstring(clixml), self.pool.keyless_cipher)

    def input_items(self) -> Optional[Iterator[Any]]:
        return self._inputs()

    def _inputs(self) -> Iterator[Any]:
        lock = self.pool.lock
        while True:
            with lock:
                self.idle = True
                try:
                    while not self.inputs and not self.input_ended:
                        if self.stop_requested or self.pool.closed:
                            raise PipelineStopped()
                        self.cond.wait()
                finally:
                    self.idle = False
                if not self.inputs:
                    return
                item = self.inputs.popleft()
            yield item

    @property
    def session(self) -> SessionState:
        return self.pool.session
