"""The blocking API: Client, RunspacePool, PowerShell and the running Pipeline.

Every blocking call releases the GIL while it waits, and Ctrl-C interrupts it within about a
tenth of a second; an interrupted pipeline is stopped on the server before the
``KeyboardInterrupt`` propagates. All objects may be shared between threads (a PowerShell
builder is a plain description: build it in one thread).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import weakref
from typing import Any, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from psremote import _fork, _logging, _native
from psremote._limits import CLOSE_GRACE, DEFAULT_MAX_OUTPUT, Deadline, check_max_output, check_timeout
from psremote._builder import PipelineBuilder, command_type_flags, script_or_builder, string_list
from psremote._options import (
    DEFAULT_CONFIGURATION,
    SSH_ONLY,
    ClientOptions,
    PathArg,
    ProcessTransport,
    SshTransport,
    build_options,
    check_transport,
    normalize_configuration_name,
    process_transport,
    proxy_without_userinfo,
    ssh_transport,
)
from psremote.cmd import UTF8_CODEPAGE, CmdShell, StdinData, _cmd_arguments, _shell_options
from psremote.exceptions import ClosedError, ConfigurationError, NotFoundError, OperationTimeoutError, PSRemoteError
from psremote.files import ProgressCallback, TransferPath, transfer_arguments
from psremote.host import PSHost
from psremote.progress import ProgressDisplay
from psremote.sessions import PoolInfo, outlive_options, pool_target
from psremote.records import CmdResult, ConnectionInfo, PipelineState, ProgressRecord, PSEvent, PSResult, ServerConfig, convert_event
from psremote.values import PSObject

__all__ = ["Client", "Pipeline", "PowerShell", "RunspacePool"]

_log = logging.getLogger("psremote.client")

#: Input objects sent per PIPELINE_INPUT batch.
INPUT_BATCH = 1000
#: Events taken from the native queue per call when collecting a result.
COLLECT_BATCH = 1000
#: Size of the runspace pool that ``Client.run_ps`` opens on first use.
DEFAULT_POOL_MAX_RUNSPACES = 4

# Values sent as one input object even though they are iterable.
_SINGLE_INPUT = (str, bytes, bytearray, dict, PSObject)


def input_iterable(input: Any) -> Any:
    """``input`` as an iterable of objects: a str, bytes, dict or PSObject is one object."""
    if isinstance(input, _SINGLE_INPUT) or dataclasses.is_dataclass(input):
        return (input,)
    return input


class _InputFeeder:
    """Sends objects from an iterable to a pipeline in batches, then ends its input."""

    def __init__(self, native: Any, pool: "RunspacePool", source: Iterable[Any]) -> None:
        self.native = native
        self.pool = pool
        self.source = source
        self.error: Optional[BaseException] = None
        self.stopped = False

    def run(self) -> None:
        try:
            # Values go to the native encoder as they are: it converts dataclasses and exchanges
            # the session key itself when a SecureString needs it.
            batch: List[Any] = []
            for value in self.source:
                if self.stopped:
                    return
                batch.append(value)
                if len(batch) >= INPUT_BATCH:
                    self.native.send_input(batch)
                    batch = []
            if self.stopped:
                return
            if batch:
                self.native.send_input(batch)
            self.native.end_input()
        except BaseException as e:  # noqa: BLE001 - reported to the consumer of the pipeline
            if self.stopped:
                return
            self.error = e
            try:
                self.native.stop()
            except BaseException:  # noqa: BLE001 - best effort: the input error is what matters
                pass


class Pipeline:
    """A running pipeline: iterate it for its events as they arrive.

    Each event is a :class:`~psremote.records.PSEvent` ``(kind, value)``; the last one is
    always ``("state", PipelineState(...))``. ``result()`` collects what is left into a
    :class:`~psremote.records.PSResult`. As a context manager, leaving the block stops the
    pipeline if it is still running.
    """

    def __init__(self, native: Any, pool: "RunspacePool", commands: List[str]) -> None:
        self._native = native
        self._pool = pool
        self._commands = commands
        self._buffer: Deque[Tuple[str, Any]] = collections.deque()
        self._done_fetching = False
        self._final: Optional[PipelineState] = None
        self._feeder: Optional[_InputFeeder] = None
        self._feeder_thread: Optional[threading.Thread] = None
        self._fetch_lock = threading.Lock()
        self.id: str = native.id

    # --- input ------------------------------------------------------------------------------

    def _feed(self, source: Any) -> None:
        feeder = _InputFeeder(self._native, self._pool, input_iterable(source))
        self._feeder = feeder
        if isinstance(feeder.source, (list, tuple)) and len(feeder.source) <= INPUT_BATCH:
            # Small, already materialised input: send it at once, without a thread.
            feeder.run()
            self._check_input_error()
            return
        thread = threading.Thread(target=feeder.run, name=f"psremote-input-{self.id}", daemon=True)
        self._feeder_thread = thread
        thread.start()

    def _check_input_error(self) -> None:
        feeder = self._feeder
        if feeder is not None and feeder.error is not None:
            error, feeder.error = feeder.error, None
            raise error

    # --- events -----------------------------------------------------------------------------

    def _interrupted(self, reason: str = "interrupted") -> None:
        """Ctrl-C arrived while waiting (or the input failed): stop the remote pipeline, best effort."""
        _logging.log(logging.INFO, f"{reason}: stopping the pipeline", _log, pipeline=self.id)
        if self._feeder is not None:
            self._feeder.stopped = True
        try:
            self._native.stop()
        except BaseException:  # noqa: BLE001 - a second Ctrl-C or a dead pool must not hide the first
            pass

    def _fetch(self, max_events: int, deadline: Optional[Deadline] = None) -> bool:
        """Refills the buffer; False once every event was fetched. Past the ``deadline`` the
        pipeline is stopped and the timeout raised."""
        with self._fetch_lock:
            if self._done_fetching:
                return False
            try:
                events = self._native.next_events(max_events, None if deadline is None else deadline.left())
            except KeyboardInterrupt:
                self._interrupted()
                raise
            except OperationTimeoutError:
                assert deadline is not None
                self._interrupted("timed out")
                raise deadline.expired() from None
            if not events:
                self._done_fetching = True
                return False
            self._buffer.extend(events)
            if events[-1][0] == "state":
                self._done_fetching = True
            return True

    def _note_state(self, payload: Any) -> PSEvent:
        event = convert_event("state", payload)
        self._final = event.value
        _logging.log(
            logging.DEBUG,
            "pipeline finished",
            _log,
            pool=self._pool.id,
            pipeline=self.id,
            state=self._final.state,
        )
        return event

    def __iter__(self) -> Iterator[PSEvent]:
        return self

    def __next__(self) -> PSEvent:
        if not self._buffer and not self._fetch(256):
            self._check_input_error()
            raise StopIteration
        kind, payload = self._buffer.popleft()
        if kind == "state":
            return self._note_state(payload)
        return convert_event(kind, payload)

    def next_event(self, timeout: Optional[float] = None) -> Optional[PSEvent]:
        """The next event, or None once the pipeline's events are exhausted; with a timeout
        (seconds), raises :class:`~psremote.OperationTimeoutError` when none arrived in time."""
        if not self._buffer:
            if self._done_fetching:
                self._check_input_error()
                return None
            with self._fetch_lock:
                try:
                    event = self._native.next_event(timeout)
                except KeyboardInterrupt:
                    self._interrupted()
                    raise
                if event is None:
                    self._done_fetching = True
                    self._check_input_error()
                    return None
                if event[0] == "state":
                    self._done_fetching = True
                self._buffer.append(event)
        kind, payload = self._buffer.popleft()
        if kind == "state":
            return self._note_state(payload)
        return convert_event(kind, payload)

    def result(self, *, raise_on_error: bool = False, show_progress: bool = False, timeout: Optional[float] = None) -> PSResult:
        """Waits for the pipeline to finish and returns what it produced from here on. With
        ``timeout`` (seconds), a pipeline still running then is stopped and
        :class:`~psremote.OperationTimeoutError` raised."""
        return self._result(raise_on_error, show_progress, Deadline(timeout, "the pipeline"))

    def _result(self, raise_on_error: bool, show_progress: bool, deadline: Deadline) -> PSResult:
        result = PSResult()
        output = result.output
        absorb = result._absorb
        display = ProgressDisplay() if show_progress else None
        try:
            while True:
                while self._buffer:
                    kind, payload = self._buffer.popleft()
                    if kind == "output":
                        output.append(payload)
                        continue
                    absorb(kind, payload)
                    if kind == "state":
                        self._note_state(payload)
                    elif kind == "progress" and display is not None:
                        display.update(ProgressRecord.from_native(payload))
                if not self._fetch(COLLECT_BATCH, deadline):
                    break
        finally:
            if display is not None:
                display.close()
        self._check_input_error()
        if raise_on_error:
            result.raise_for_errors()
        return result

    def stop(self) -> None:
        """Stops the pipeline on the server (its final state becomes ``Stopped``)."""
        if self._feeder is not None:
            self._feeder.stopped = True
        if self._final is not None or self._done_fetching:
            return
        self._native.stop()

    @property
    def state(self) -> Optional[str]:
        """The final state once it was received, else None."""
        return self._final.state if self._final is not None else None

    @property
    def finished(self) -> bool:
        return self._final is not None

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._done_fetching:
            try:
                self.stop()
            except PSRemoteError as e:
                _logging.log(logging.DEBUG, "cannot stop the pipeline", _log, pipeline=self.id, error=str(e))

    def __repr__(self) -> str:
        return f"<Pipeline {self.id} {' | '.join(self._commands)} state={self.state or 'Running'}>"


class PowerShell(PipelineBuilder):
    """A pipeline to run on a :class:`RunspacePool` (``pool.powershell()``), or to pass to
    :meth:`Client.run_ps`."""

    def __init__(self, pool: Optional[RunspacePool] = None) -> None:
        super().__init__()
        self.pool = pool
        self._running: Optional[Pipeline] = None

    def _pool(self) -> "RunspacePool":
        if self.pool is None:
            raise ConfigurationError(
                "this PowerShell has no runspace pool: create it with pool.powershell() or pass it to client.run_ps()"
            )
        return self.pool

    def start(
        self, input: Any = None, *, add_to_history: bool = False, invocation_info: bool = True, nested: bool = False
    ) -> Pipeline:
        """Starts the pipeline and returns at once; iterate the result for its events.
        ``input`` is any iterable of objects (sent in batches as it is consumed);
        ``invocation_info``: error, warning, verbose and debug records carry where they were
        raised (as PowerShell's own client asks); ``nested``: run as a nested pipeline (from a
        host call of a running pipeline)."""
        handle = self._pool()._start(self, input, add_to_history, invocation_info, nested)
        self._running = handle
        return handle

    def invoke(
        self,
        input: Any = None,
        *,
        raise_on_error: bool = False,
        show_progress: bool = False,
        add_to_history: bool = False,
        invocation_info: bool = True,
        nested: bool = False,
    ) -> PSResult:
        """Runs the pipeline to the end and returns everything it produced."""
        return self.start(input, add_to_history=add_to_history, invocation_info=invocation_info, nested=nested).result(
            raise_on_error=raise_on_error, show_progress=show_progress
        )

    def stop(self) -> None:
        """Stops the pipeline this object started last."""
        if self._running is not None:
            self._running.stop()


class RunspacePool:
    """An open runspace pool. Obtain one from :meth:`Client.runspace_pool`; close it with
    :meth:`close` or a ``with`` block."""

    def __init__(self, native: Any, client: "Client", host: Optional[PSHost]) -> None:
        self._native = native
        self._client = client
        self.host = host
        self._closed = False
        self._generation = _fork.generation()
        self.id: str = native.id

    def _check(self) -> None:
        _fork.check(self._generation, "runspace pool")
        if self._closed:
            raise ClosedError(f"runspace pool {self.id} is closed")

    # --- state --------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"Opened"``, ``"Closed"``, ``"Broken"``, ..."""
        return str(self._native.state)

    @property
    def protocol_version(self) -> Optional[str]:
        return self._native.protocol_version

    @property
    def application_private_data(self) -> Any:
        """What the server sent as APPLICATION_PRIVATE_DATA (usually ``PSVersionTable``)."""
        return self._native.application_private_data

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connection_info(self) -> Optional[ConnectionInfo]:
        """The client's :attr:`Client.connection_info` (the pool uses the client's connections)."""
        return self._client.connection_info

    def _usable(self) -> bool:
        return not self._closed and self._native.state == "Opened"

    # --- pipelines ----------------------------------------------------------------------------

    def powershell(self) -> PowerShell:
        """A new, empty PowerShell bound to this pool."""
        return PowerShell(self)

    def _start(
        self, builder: PipelineBuilder, input: Any, add_to_history: bool, invocation_info: bool = True, nested: bool = False
    ) -> Pipeline:
        self._check()
        statements = builder._native_statements()
        _logging.sync_native_level()
        native = self._native.start(statements, input is not None, add_to_history, bool(invocation_info), bool(nested))
        handle = Pipeline(native, self, builder._describe())
        _logging.log(logging.DEBUG, "pipeline started", _log, pool=self.id, pipeline=handle.id, commands=handle._commands)
        if input is not None:
            try:
                handle._feed(input)
            except KeyboardInterrupt:
                handle._interrupted()
                raise
            except BaseException:
                handle._interrupted("input failed")
                raise
        return handle

    def run_ps(
        self,
        script: Union[str, PipelineBuilder],
        input: Any = None,
        *,
        raise_on_error: bool = False,
        show_progress: bool = False,
        add_to_history: bool = False,
        invocation_info: bool = True,
        nested: bool = False,
        timeout: Optional[float] = None,
    ) -> PSResult:
        """Runs a script (or a PowerShell built elsewhere) to the end on this pool.
        ``invocation_info`` and ``nested`` as for :meth:`PowerShell.start`. With ``timeout``
        (seconds), a pipeline still running then is stopped on the server and
        :class:`~psremote.OperationTimeoutError` raised; the pool stays open."""
        return self._run_ps(script, input, raise_on_error, show_progress, add_to_history, invocation_info, nested,
                            Deadline(timeout, "the pipeline"))

    def _run_ps(
        self,
        script: Union[str, PipelineBuilder],
        input: Any,
        raise_on_error: bool,
        show_progress: bool,
        add_to_history: bool,
        invocation_info: bool,
        nested: bool,
        deadline: Deadline,
    ) -> PSResult:
        builder = script_or_builder(script, PowerShell)
        deadline.left()
        handle = self._start(builder, input, add_to_history, invocation_info, nested)
        return handle._result(raise_on_error, show_progress, deadline)

    def start(
        self,
        script: Union[str, PipelineBuilder],
        input: Any = None,
        *,
        add_to_history: bool = False,
        invocation_info: bool = True,
        nested: bool = False,
    ) -> Pipeline:
        """Starts a script (or PowerShell) and returns the running :class:`Pipeline`."""
        return self._start(script_or_builder(script, PowerShell), input, add_to_history, invocation_info, nested)

    def command_metadata(self, name: Any = None, *, command_type: Any = None, namespace: Any = None) -> List[Any]:
        """What ``Get-Command`` knows about the commands on the server (GET_COMMAND_METADATA),
        without running a pipeline: one CommandMetadata object (``Name``, ``Namespace``,
        ``CommandType``, ``Parameters``, ...) per command. ``name``: a name or names,
        wildcards allowed (all by default); ``command_type``: CommandTypes names or flags
        ("Cmdlet", "Alias, Function", 8; Alias, Function, Filter and Cmdlet by default);
        ``namespace``: module names to search."""
        self._check()
        names = string_list("name", name)
        flags = command_type_flags(command_type)
        return list(self._native.command_metadata(names, flags, string_list("namespace", namespace)))

    # --- pool operations ------------------------------------------------------------------

    def exchange_key(self, timeout: Optional[float] = None) -> None:
        """Exchanges the session key that protects SecureStrings. Optional: it happens by
        itself before the first SecureString or PSCredential crosses in either direction.
        Gives up with :class:`OperationTimeoutError` after ``timeout`` seconds (60 by default)."""
        self._check()
        self._native.exchange_key(timeout)

    def set_max_runspaces(self, count: int) -> bool:
        self._check()
        return bool(self._native.set_max_runspaces(count))

    def set_min_runspaces(self, count: int) -> bool:
        self._check()
        return bool(self._native.set_min_runspaces(count))

    def available_runspaces(self) -> int:
        self._check()
        return int(self._native.available_runspaces())

    def reset_runspace_state(self) -> bool:
        self._check()
        return bool(self._native.reset_runspace_state())

    # --- sessions that outlive the client -------------------------------------------------

    def disconnect(self) -> None:
        """Disconnects the pool: it and its pipelines keep running on the server, which keeps
        their output (``buffer_mode``) until :meth:`reconnect`, a :meth:`Client.connect_pool`
        from another client, or the idle timeout. Meanwhile running anything on it raises
        :class:`DisconnectedError`. :meth:`close` deletes it; :meth:`Client.close` leaves it
        on the server."""
        self._check()
        _native.pool_disconnect(self._native)

    def reconnect(self) -> None:
        """Reconnects to this disconnected pool; the output kept meanwhile arrives on the
        pipelines started before. A pool the server no longer has raises
        :class:`NotFoundError` (and this pool is closed)."""
        self._check()
        try:
            _native.pool_reconnect(self._native)
        except NotFoundError:
            self._closed = True
            raise

    def is_alive(self) -> bool:
        """Whether the server still has this pool (connected or disconnected). ``False`` marks
        the pool closed; other failures raise."""
        if self._closed:
            return False
        _fork.check(self._generation, "runspace pool")
        alive = bool(_native.pool_is_alive(self._native))
        if not alive:
            self._closed = True
        return alive

    @property
    def disconnected(self) -> bool:
        """Whether the pool is disconnected (see :meth:`disconnect`)."""
        return not self._closed and self._native.state == "Disconnected"

    def attach_pipeline(self, pipeline_id: str) -> Pipeline:
        """A :class:`Pipeline` for one started before a disconnect (by this client or the one
        that created the pool; ids in :attr:`PoolInfo.pipelines`): its events and result
        arrive as for one started here, beginning with the output the server kept. An id the
        server does not know raises :class:`NotFoundError` (here or from the first event)."""
        self._check()
        if not isinstance(pipeline_id, str):
            raise ConfigurationError(f"pipeline_id must be a str, got {pipeline_id!r}")
        native = _native.pool_attach_pipeline(self._native, pipeline_id)
        return Pipeline(native, self, [])

    def close(self) -> None:
        """Closes the pool (stopping its pipelines). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._generation != _fork.generation():
            return  # the parent's pool: nothing of it may be touched in a forked child
        try:
            self._native.close()
        except ClosedError:
            pass

    def __enter__(self) -> "RunspacePool":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as e:  # noqa: BLE001 - the exception already propagating matters more
            _logging.log(logging.WARNING, "cannot close the runspace pool", _log, pool=self.id, error=str(e))

    def __repr__(self) -> str:
        state = "Closed" if self._closed else self.state
        return f"<RunspacePool {self.id} state={state}>"


def _application_arguments(value: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """ApplicationArguments are a dictionary with string keys (a PSPrimitiveDictionary)."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigurationError("application_arguments must be a mapping with str keys")
    return dict(value)


class _ClientBase:
    """Option handling shared by Client and AsyncClient."""

    def __init__(
        self,
        host: Optional[str] = None,
        *,
        url: Optional[str] = None,
        username: Optional[str] = None,
        password: Optional[str] = None,
        auth: str = "negotiate",
        port: Optional[int] = None,
        https: bool = False,
        path: Optional[str] = None,
        encryption: str = "auto",
        operation_timeout: float = 20.0,
        connect_timeout: float = 30.0,
        max_envelope_size: Optional[int] = None,
        locale: str = "en-US",
        data_locale: Optional[str] = None,
        configuration_name: str = DEFAULT_CONFIGURATION,
        allow_unencrypted: bool = False,
        trusted_hosts: Union[str, Sequence[str], None] = None,
        ca_file: Optional[PathArg] = None,
        ca_dir: Optional[PathArg] = None,
        server_name: Optional[str] = None,
        pinned_public_keys: Union[str, Sequence[str], None] = None,
        insecure_skip_verify: bool = False,
        min_tls_version: Optional[str] = None,
        max_tls_version: Optional[str] = None,
        client_certificate: Optional[PathArg] = None,
        client_key: Optional[PathArg] = None,
        client_key_password: Optional[str] = None,
        kerberos_kdc: Optional[str] = None,
        spn_service: str = "HTTP",
        spn_hostname: Optional[str] = None,
        delegate: bool = False,
        audit_arguments: bool = False,
        max_reply_size: Optional[int] = None,
        max_events_ahead: int = 256,
        proxy: Optional[str] = None,
        proxy_username: Optional[str] = None,
        proxy_password: Optional[str] = None,
        ignore_proxy: bool = False,
        ps_host: Optional[PSHost] = None,
        transport: str = "wsman",
        key_file: Optional[PathArg] = None,
        key_passphrase: Optional[str] = None,
        agent: Union[bool, PathArg] = False,
        known_hosts: Optional[PathArg] = None,
        accept_unknown_host_key: bool = False,
        subsystem: str = "powershell",
        executable: Optional[PathArg] = None,
        arguments: Optional[Sequence[str]] = None,
    ) -> None:
        self.transport = check_transport(transport)
        ssh: Optional[SshTransport] = None
        process: Optional[ProcessTransport] = None
        if self.transport != "process" and (executable is not None or arguments is not None):
            raise ConfigurationError("executable and arguments apply to transport='process'")
        ssh_proxy: Dict[str, Any] = {}
        if self.transport != "wsman":
            # WS-Man's own options mean nothing to the other transports: a value other than the
            # default is refused rather than ignored.
            wsman_only: Dict[str, Tuple[Any, Any]] = dict(
                auth=(auth, "negotiate"),
                https=(https, False),
                path=(path, None),
                encryption=(encryption, "auto"),
                max_envelope_size=(max_envelope_size, None),
                configuration_name=(normalize_configuration_name(configuration_name), DEFAULT_CONFIGURATION),
                allow_unencrypted=(allow_unencrypted, False),
                trusted_hosts=(trusted_hosts or None, None),
                ca_file=(ca_file, None),
                ca_dir=(ca_dir, None),
                server_name=(server_name, None),
                pinned_public_keys=(pinned_public_keys or None, None),
                insecure_skip_verify=(insecure_skip_verify, False),
                min_tls_version=(min_tls_version, None),
                max_tls_version=(max_tls_version, None),
                client_certificate=(client_certificate, None),
                client_key=(client_key, None),
                client_key_password=(client_key_password, None),
                kerberos_kdc=(kerberos_kdc, None),
                spn_service=(spn_service, "HTTP"),
                spn_hostname=(spn_hostname, None),
                delegate=(delegate, False),
                max_reply_size=(max_reply_size, None),
                ignore_proxy=(ignore_proxy, False),
            )
            if self.transport == "process":
                wsman_only.update(port=(port, None), connect_timeout=(connect_timeout, 30.0))
            named = [name for name, (value, default) in wsman_only.items() if value != default]
            if named:
                why = " (SSH reads no proxy from the environment)" if named == ["ignore_proxy"] else ""
                raise ConfigurationError(
                    f"{', '.join(named)} {'applies' if len(named) == 1 else 'apply'} to transport='wsman', "
                    f"not transport={self.transport!r}{why}"
                )
        if self.transport == "ssh":
            ssh = ssh_transport(
                host,
                url=url,
                username=username,
                password=password,
                port=port,
                key_file=key_file,
                key_passphrase=key_passphrase,
                agent=agent,
                known_hosts=known_hosts,
                accept_unknown_host_key=accept_unknown_host_key,
                subsystem=subsystem,
            )
            if proxy is None and (proxy_username is not None or proxy_password is not None):
                raise ConfigurationError(
                    f"{'proxy_username' if proxy_username is not None else 'proxy_password'} needs proxy= "
                    "(SSH reads no proxy from the environment)"
                )
            # The proxy options are checked as for WS-Man (a str URL, credentials as a pair).
            build_options(
                "localhost",
                url=None,
                username="ssh",
                password="",
                auth="negotiate",
                port=None,
                https=False,
                path=None,
                encryption="auto",
                operation_timeout=operation_timeout,
                connect_timeout=connect_timeout,
                max_envelope_size=None,
                locale=locale,
                data_locale=data_locale,
                configuration_name=DEFAULT_CONFIGURATION,
                allow_unencrypted=False,
                proxy=proxy,
                proxy_username=proxy_username,
                proxy_password=proxy_password,
            )
            # The SSH connection's proxy is given only explicitly, as ssh takes it.
            ssh_proxy = dict(
                proxy=proxy.strip() if proxy is not None else None, proxy_username=proxy_username, proxy_password=proxy_password
            )
            # The WS-Man options are checked as usual but play no part.
            host, username, password, port = "localhost", "ssh", "", None
            proxy, proxy_username, proxy_password, ignore_proxy = None, None, None, True
        else:
            given = dict(zip(SSH_ONLY, (key_file, key_passphrase, agent or None, known_hosts, accept_unknown_host_key or None)))
            given["subsystem"] = None if subsystem == "powershell" else subsystem
            named = [name for name, value in given.items() if value is not None]
            if named:
                raise ConfigurationError(f"{', '.join(named)} apply to transport='ssh'")
            if self.transport == "process":
                process = process_transport(
                    host, url=url, username=username, password=password, executable=executable, arguments=arguments
                )
                if proxy is not None or proxy_username is not None or proxy_password is not None:
                    raise ConfigurationError("transport='process' starts a local program: proxy options do not apply")
                # The WS-Man options are checked as usual but play no part.
                host, username, password, ignore_proxy = "localhost", "process", "", True
        options = build_options(
            host,
            url=url,
            username=username,
            password=password,
            auth=auth,
            port=port,
            https=https,
            path=path,
            encryption=encryption,
            operation_timeout=operation_timeout,
            connect_timeout=connect_timeout,
            max_envelope_size=max_envelope_size,
            locale=locale,
            data_locale=data_locale,
            configuration_name=configuration_name,
            allow_unencrypted=allow_unencrypted,
            trusted_hosts=trusted_hosts,
            ca_file=ca_file,
            ca_dir=ca_dir,
            server_name=server_name,
            pinned_public_keys=pinned_public_keys,
            insecure_skip_verify=insecure_skip_verify,
            min_tls_version=min_tls_version,
            max_tls_version=max_tls_version,
            client_certificate=client_certificate,
            client_key=client_key,
            client_key_password=client_key_password,
            kerberos_kdc=kerberos_kdc,
            spn_service=spn_service,
            spn_hostname=spn_hostname,
            delegate=delegate,
            audit_arguments=audit_arguments,
            max_reply_size=max_reply_size,
            max_events_ahead=max_events_ahead,
            proxy=proxy,
            proxy_username=proxy_username,
            proxy_password=proxy_password,
            ignore_proxy=ignore_proxy,
        )
        if ps_host is not None and not callable(getattr(ps_host, "call", None)):
            raise ConfigurationError("ps_host must be a psremote.PSHost (an object with a call() method)")
        _logging.sync_native_level()
        if ssh is not None:
            self._native: Any = _native.Client.ssh(
                **ssh.native_kwargs(),
                **ssh_proxy,
                connect_timeout=options.connect_timeout,
                operation_timeout=options.operation_timeout,
                audit_arguments=options.audit_arguments,
                max_events_ahead=options.max_events_ahead,
            )
        elif process is not None:
            self._native = _native.Client.process(
                executable=process.executable,
                arguments=None if process.arguments is None else list(process.arguments),
                operation_timeout=options.operation_timeout,
                audit_arguments=options.audit_arguments,
                max_events_ahead=options.max_events_ahead,
            )
        else:
            self._native = _native.Client(**options.native_kwargs())
        #: The SSH options of a transport='ssh' client (without its secrets), else None.
        self.ssh: Optional[SshTransport] = (
            dataclasses.replace(ssh, password=None, key_passphrase=None) if ssh is not None else None
        )
        # The passwords (and the proxy URL's user information) live in the native client only.
        self.options: ClientOptions = options.without_secrets()
        if ssh is not None:
            self.options = dataclasses.replace(
                self.options,
                transport="ssh",
                host=ssh.host,
                port=ssh.port,
                username=ssh.username,
                proxy=proxy_without_userinfo(ssh_proxy["proxy"]),
                proxy_username=ssh_proxy["proxy_username"],
                ignore_proxy=False,
            )
        elif process is not None:
            self.options = dataclasses.replace(self.options, transport="process", host="", port=0, username="", ignore_proxy=False)
        self.ps_host = ps_host
        self._generation = _fork.generation()
        self._closed = False
        self._connected = False

    @property
    def url(self) -> str:
        return str(self._native.url) if self._native is not None else self.options.url

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connection_info(self) -> Optional[ConnectionInfo]:
        """What the most recent connection established (the mechanism actually used, what
        encrypts the messages, channel binding, TLS version, cipher suite and the server
        certificate's SHA-256), or None before the client connected."""
        native = self._native
        info = native.connection_info if native is not None else None
        return ConnectionInfo(**info) if info is not None else None

    def _check(self) -> Any:
        _fork.check(self._generation, "client")
        if self._closed or self._native is None:
            raise ClosedError("the client is closed")
        return self._native

    def __repr__(self) -> str:
        o = self.options
        if self.transport != "wsman":
            return f"<{type(self).__name__} {self.url} transport={self.transport!r}{' closed' if self._closed else ''}>"
        return f"<{type(self).__name__} {o.url} username={o.username!r} auth={o.auth!r}{' closed' if self._closed else ''}>"


class Client(_ClientBase):
    """A connection to one WinRM endpoint (blocking API).

    ``Client("server", username="DOMAIN\\\\user", password=...)``, or ``Client(url="http://...")``.
    The password may come from the ``PSREMOTE_PASSWORD`` environment variable. Every option is
    validated here, before any I/O, with a :class:`~psremote.ConfigurationError` that says
    what to change. Use it as a context manager, or call :meth:`close`.

    Security (Microsoft's remoting guidance, enforced by the core; a refusal is a
    :class:`~psremote.SecurityPolicyError` that names the ways out):

    * NTLM (``auth='ntlm'``, and ``'negotiate'`` when it falls back to NTLM) proves the user
      but not the server, so it is used only over https with a certificate that verifies, or
      towards a host named in ``trusted_hosts`` (WinRM's TrustedHosts: a list or a comma
      string of names, addresses, ``*`` wildcards, ``<local>``). Naming a host there accepts
      that its identity is not verified.
    * ``auth='basic'`` only over https (or over http with ``allow_unencrypted=True``).
    * https (``https=True`` or an ``https://`` URL, port 5986): the certificate is checked
      against the system's CAs, or ``ca_file``/``ca_dir``; ``server_name`` is the name it must
      carry when it is not the host; ``pinned_public_keys`` (hex SHA-256 of the
      SubjectPublicKeyInfo) also require one of those keys; ``min_tls_version`` /
      ``max_tls_version`` ('1.2', '1.3'). ``insecure_skip_verify=True`` disables the check
      (dangerous: anyone on the path can impersonate the server; every connection logs a
      warning, and NTLM then needs ``trusted_hosts`` again). TLS failures raise
      :class:`~psremote.TLSError` saying which host and why.
    * ``client_certificate``/``client_key`` (PEM files; ``client_key_password`` for an
      encrypted key, never shown) for ``auth='certificate'``.
    * ``encryption``: ``'auto'`` (message encryption over http, TLS alone over https),
      ``'always'`` (message encryption inside TLS too), ``'never'`` (Basic with
      ``allow_unencrypted`` over http, or TLS alone).
    * Kerberos: ``kerberos_kdc``, ``spn_service`` (default 'HTTP'), ``spn_hostname``,
      ``delegate``. ``audit_arguments=True`` puts pipeline arguments into audit log events.
    * ``max_reply_size``: the largest HTTP reply body accepted, in bytes; by default the
      MaxEnvelopeSize each request announces plus a margin for sealing (228736 bytes for the
      default 153600). A larger reply is a :class:`TransportError` with ``reply_size`` and
      ``reply_limit``, refused while it is read.
    * ``max_events_ahead``: events of one pipeline decoded and buffered before its reader
      takes them (default 256). A full buffer pauses that pipeline's Receive loop: a reader
      that does not keep up slows the server down instead of filling memory.

    * Proxies: ``proxy='http://[user:password@]host:port'`` (an HTTP proxy asked for a
      CONNECT tunnel, for http and https endpoints alike, so NTLM, Kerberos and CredSSP keep
      their connection and TLS runs end to end), ``'socks5://...'`` (the server's name resolved
      here) or ``'socks5h://...'`` (resolved by the proxy); without a port, 80 for http and
      1080 for SOCKS. ``proxy_username``/``proxy_password`` give the proxy's credentials apart
      (they replace any in the URL; Basic for HTTP proxies, RFC 1929 for SOCKS5; never shown).
      With no ``proxy``, the environment's ``https_proxy``/``http_proxy``/``all_proxy`` and
      ``no_proxy`` apply as requests reads them; ``ignore_proxy=True`` ignores them. A proxy
      that is unreachable, refuses the tunnel or the credentials, or breaks the protocol raises
      :class:`~psremote.ProxyError` (a :class:`ConnectError`) naming the proxy and ``reason``.

    :attr:`connection_info` tells what the connection actually established.

    Transports: ``transport='wsman'`` (the default: WinRM, everything above) or
    ``transport='process'``: a local program that speaks PowerShell's out-of-process transport
    on its stdin and stdout (``executable``, ``'pwsh'`` by default; ``arguments``,
    ``['-NoLogo', '-s']`` by default), started for each runspace pool and ended (killed if need
    be) with it; host, url and credentials do not apply. A process that exits or writes
    garbage is a :class:`TransportError` (with its exit status and stderr) or a
    :class:`ProtocolError`. Or ``transport='ssh'``: the server's ``powershell`` subsystem over
    SSH (``host``, ``port`` 22 by default, ``username``; one of ``key_file`` with
    ``key_passphrase``, ``password`` (None: ``PSREMOTE_PASSWORD``; ``''`` is an empty password)
    or ``agent`` (True, or the agent's socket path); ``known_hosts``,
    ``accept_unknown_host_key``, ``subsystem``; ``proxy``/``proxy_username``/``proxy_password``
    as above, but only given explicitly: the environment is not read for SSH). Over ssh and
    process, ``operation_timeout`` bounds the waits for the server's acknowledgements (three
    of it), ``audit_arguments`` and ``max_events_ahead`` apply; WS-Man's own options (auth,
    https, port for process, configuration_name, TLS, trusted_hosts, encryption,
    ignore_proxy...) are refused with a :class:`ConfigurationError` unless left at their
    defaults, and ``options`` names the SSH server (``host``, ``port``, ``username``) or,
    for a process, none (``''``, 0, ``''``). Cmd shells, ``run_cmd``, disconnect and reconnect,
    ``list_pools`` and the WinRM configuration exist only over WS-Man: a
    :class:`ConfigurationError` says so.
    """

    def __init__(self, host: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._connect_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._pool: Optional[RunspacePool] = None
        self._pools: "weakref.WeakSet[RunspacePool]" = weakref.WeakSet()
        self._shells: "weakref.WeakSet[CmdShell]" = weakref.WeakSet()

    def connect(self) -> "Client":
        """Authenticates now (otherwise the first operation does)."""
        native = self._check()
        if not self._connected:
            with self._connect_lock:
                if not self._connected:
                    native.connect()
                    self._connected = True
        return self

    def server_config(self) -> ServerConfig:
        """The server's WinRM configuration (``winrm/config``): MaxEnvelopeSizekb,
        MaxTimeoutms, shell limits, and every setting in ``entries``. Windows lets only
        administrators read it (others get a :class:`WSManFault`)."""
        self.connect()
        return ServerConfig._from_native(self._check().server_config())

    def fit_envelope_to_server(self) -> int:
        """Reads the server's MaxEnvelopeSizekb and sizes this client's later requests, pools
        and shells to it (pypsrp's ``update_max_payload_size``); returns the size in bytes now
        in use. A ``max_envelope_size`` given to the client is never changed: it is returned."""
        self.connect()
        return int(self._check().fit_envelope_to_server())

    def runspace_pool(
        self,
        configuration_name: Optional[str] = None,
        *,
        min_runspaces: int = 1,
        max_runspaces: int = 1,
        host: Optional[PSHost] = None,
        no_profile: bool = False,
        application_arguments: Optional[Mapping[str, Any]] = None,
        idle_timeout: Optional[float] = None,
        buffer_mode: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> RunspacePool:
        """Opens a runspace pool on the session configuration (JEA endpoint) given, or the
        client's; use it as a context manager to close it. ``application_arguments``: a mapping
        the server's scripts read as ``$PSSenderInfo.ApplicationArguments``. ``idle_timeout``
        (seconds) and ``buffer_mode`` (``"block"``/``"drop"``) decide how long the pool waits
        on the server once disconnected and what happens to output produced meanwhile (the
        server's defaults when None). ``timeout`` (seconds) bounds the opening: a server that
        does not finish it in time raises :class:`~psremote.OperationTimeoutError`, and the
        half-opened pool is deleted."""
        timeout = check_timeout(timeout)
        idle_timeout, buffer_mode = outlive_options(idle_timeout, buffer_mode)
        name = normalize_configuration_name(configuration_name or self.options.configuration_name)
        if isinstance(min_runspaces, bool) or not isinstance(min_runspaces, int) or min_runspaces < 1:
            raise ConfigurationError(f"min_runspaces must be an int of at least 1, got {min_runspaces!r}")
        if isinstance(max_runspaces, bool) or not isinstance(max_runspaces, int) or max_runspaces < min_runspaces:
            raise ConfigurationError(f"max_runspaces must be an int of at least min_runspaces ({min_runspaces}), got {max_runspaces!r}")
        if host is not None and not callable(getattr(host, "call", None)):
            raise ConfigurationError("host must be a psremote.PSHost (an object with a call() method)")
        arguments = _application_arguments(application_arguments)
        self.connect()
        native = self._check().open_pool(
            name, min_runspaces, max_runspaces, host, no_profile, arguments, idle_timeout, buffer_mode, timeout
        )
        pool = RunspacePool(native, self, host)
        self._pools.add(pool)
        return pool

    def list_pools(self) -> List[PoolInfo]:
        """The PowerShell runspace pools this account has on the server, connected or
        disconnected, each with the ids of its pipelines."""
        self.connect()
        return [PoolInfo._from_native(d) for d in _native.client_list_pools(self._check())]

    def connect_pool(
        self,
        pool: Union[str, PoolInfo],
        *,
        configuration_name: Optional[str] = None,
        host: Optional[PSHost] = None,
        idle_timeout: Optional[float] = None,
        buffer_mode: Optional[str] = None,
    ) -> RunspacePool:
        """Attaches this client to a disconnected pool (another client's, or one a program
        disconnected before it ended), given its id or its :class:`PoolInfo`; then
        :meth:`RunspacePool.attach_pipeline` reads the pipelines it was running. The
        configuration is the PoolInfo's, else ``configuration_name``, else the client's. A
        pool the server does not have raises :class:`NotFoundError`. ``host`` answers host
        calls from now on; ``idle_timeout`` and ``buffer_mode`` apply to a later
        :meth:`RunspacePool.disconnect`."""
        shell_id, name = pool_target(pool, configuration_name)
        name = normalize_configuration_name(name or self.options.configuration_name)
        idle_timeout, buffer_mode = outlive_options(idle_timeout, buffer_mode)
        if host is not None and not callable(getattr(host, "call", None)):
            raise ConfigurationError("host must be a psremote.PSHost (an object with a call() method)")
        self.connect()
        native = _native.client_connect_pool(self._check(), shell_id, name, host, idle_timeout, buffer_mode)
        opened = RunspacePool(native, self, host)
        self._pools.add(opened)
        return opened

    def _default_pool(self, deadline: Optional[Deadline] = None) -> RunspacePool:
        pool = self._pool
        if pool is not None and pool._usable():
            return pool
        with self._pool_lock:
            pool = self._pool
            if pool is None or not pool._usable():
                timeout = None if deadline is None else deadline.left()
                pool = self.runspace_pool(max_runspaces=DEFAULT_POOL_MAX_RUNSPACES, host=self.ps_host, timeout=timeout)
                self._pool = pool
        return pool

    def powershell(self) -> PowerShell:
        """A new PowerShell on the client's default runspace pool."""
        return PowerShell(self._default_pool())

    def run_ps(
        self,
        script: Union[str, PipelineBuilder],
        input: Any = None,
        *,
        raise_on_error: bool = False,
        show_progress: bool = False,
        timeout: Optional[float] = None,
    ) -> PSResult:
        """Runs a script, or a :class:`PowerShell` pipeline, on the client's runspace pool
        (opened on first use, up to 4 pipelines at once) and returns its :class:`PSResult`.
        ``timeout`` (seconds) bounds the whole call, opening the pool included: past it the
        pipeline is stopped (or the half-opened pool deleted) and
        :class:`~psremote.OperationTimeoutError` raised."""
        deadline = Deadline(timeout, "run_ps")
        pool = self._default_pool(deadline)
        return pool._run_ps(script, input, raise_on_error, show_progress, False, True, False, deadline)

    def run_cmd(
        self,
        executable: str,
        args: Iterable[Any] = (),
        stdin: Optional[StdinData] = None,
        *,
        environment: Optional[Mapping[str, str]] = None,
        working_directory: Union[str, "os.PathLike[str]", None] = None,
        codepage: Optional[int] = UTF8_CODEPAGE,
        no_profile: bool = False,
        skip_cmd_shell: bool = False,
        timeout: Optional[float] = None,
        max_output: Optional[int] = DEFAULT_MAX_OUTPUT,
    ) -> CmdResult:
        """Runs a command in a new cmd shell (WinRS) and returns its stdout, stderr and exit code.

        ``stdin`` (bytes, or str as UTF-8), when given, is sent and stdin closed; without it
        nothing is sent, so a command that reads stdin waits for it (``b""`` closes it). The
        shell options are those of :meth:`cmd_shell`, ``skip_cmd_shell`` that of
        :meth:`CmdShell.start`.

        ``timeout`` (seconds) bounds the whole call: past it
        :class:`~psremote.OperationTimeoutError` is raised and the command and its shell are
        released on the server. ``max_output``: the stdout and stderr bytes (together) kept,
        64 MiB by default, None for no limit; a command writing more is terminated and
        :class:`~psremote.OutputTooLargeError` raised (read a long output as it comes with
        :meth:`cmd_shell`)."""
        executable, arguments, data = _cmd_arguments(executable, args, stdin)
        env, directory, codepage, no_profile, _ = _shell_options(environment, working_directory, codepage, no_profile, None)
        timeout, max_output = check_timeout(timeout), check_max_output(max_output)
        self.connect()
        stdout, stderr, exit_code = self._check().run_cmd(
            executable, arguments, data, env, directory, codepage, no_profile, bool(skip_cmd_shell), timeout, max_output
        )
        return CmdResult(stdout, stderr, exit_code)

    def cmd_shell(
        self,
        *,
        environment: Optional[Mapping[str, str]] = None,
        working_directory: Union[str, "os.PathLike[str]", None] = None,
        codepage: Optional[int] = UTF8_CODEPAGE,
        no_profile: bool = False,
        idle_timeout: Optional[float] = None,
    ) -> CmdShell:
        """Opens a cmd shell (WinRS) for running commands with streaming output and stdin
        (:class:`~psremote.CmdShell`; use it as a context manager to close it).

        ``environment``: variables every command sees; ``working_directory``: where commands
        start; ``codepage``: the console code page of the output, UTF-8 (65001) by default,
        None for the server's default (the OEM code page, 437 on an English Windows);
        ``no_profile``: do not load the user profile; ``idle_timeout``: seconds without
        activity after which the server may delete the shell (None: the server's default)."""
        options = _shell_options(environment, working_directory, codepage, no_profile, idle_timeout)
        self.connect()
        shell = CmdShell(self._check().open_cmd_shell(*options), self)
        self._shells.add(shell)
        return shell

    def copy(
        self,
        src: TransferPath,
        dest: TransferPath,
        *,
        expand_variables: bool = True,
        show_progress: bool = False,
        progress: Optional[ProgressCallback] = None,
        timeout: Optional[float] = None,
        configuration_name: Optional[str] = None,
    ) -> str:
        """Copies the local file ``src`` to ``dest`` on the server and returns the absolute path
        the server wrote. Streamed in chunks over a runspace pool of its own and checked by
        SHA-1 on the server; an existing ``dest`` file is replaced, a ``dest`` that is a
        directory is refused. ``%VAR%``, ``$env:VAR`` and ``${env:VAR}`` in ``dest`` expand
        on the server unless ``expand_variables=False``.

        ``show_progress=True`` draws a tqdm bar on stderr (plain lines without tqdm);
        ``progress(done, total)`` is called after each chunk (see :meth:`copy`).
        ``timeout`` (seconds) bounds the whole call. Failures raise
        :class:`~psremote.FileTransferError` subclasses; Ctrl-C stops the transfer, and
        neither leaves a partial file nor anything else on the server."""
        args = transfer_arguments(
            "copy", src, dest, expand_variables=expand_variables, show_progress=show_progress, progress=progress,
            timeout=timeout, configuration_name=configuration_name, default_configuration=self.options.configuration_name,
        )
        return self._transfer(_native.client_copy, *args)

    def fetch(
        self,
        src: TransferPath,
        dest: TransferPath,
        *,
        expand_variables: bool = True,
        show_progress: bool = False,
        progress: Optional[ProgressCallback] = None,
        timeout: Optional[float] = None,
        configuration_name: Optional[str] = None,
    ) -> str:
        """Fetches the remote file ``src`` into the local file ``dest`` and returns its path.
        The data goes to a hidden ``.part`` file beside ``dest`` that replaces ``dest`` only
        once the SHA-1 matches the server's; on any failure (or Ctrl-C) it is removed. The
        options are those of :meth:`copy`."""
        args = transfer_arguments(
            "fetch", src, dest, expand_variables=expand_variables, show_progress=show_progress, progress=progress,
            timeout=timeout, configuration_name=configuration_name, default_configuration=self.options.configuration_name,
        )
        return self._transfer(_native.client_fetch, *args)

    def _transfer(self, call: Any, src: str, dest: str, expand: bool, timeout: Optional[float], name: str, relay: Any) -> str:
        native = self._check()
        try:
            outcome = call(native, src, dest, expand, timeout, name, relay.native(), _native.TransferCancel())
        except BaseException as e:
            relay.reraise(e)
            raise
        return str(relay.finish(outcome))

    def close(self) -> None:
        """Ends the operations this client still has in flight in other threads (they raise
        :class:`ClosedError`), closes the runspace pools and cmd shells it opened, waits
        (bounded) until what the ended operations had opened on the server is released, and
        drops its connections."""
        if self._closed:
            return
        native = self._native
        # Before the pool lock: a thread opening the default pool holds it until its open ends.
        if native is not None and self._generation == _fork.generation():
            native.end_operations(CLOSE_GRACE)
        with self._pool_lock:
            if self._closed:
                return
            self._closed = True
            # A disconnected pool outlives its client: that is what disconnecting is for.
            pools = [p for p in self._pools if not p.disconnected]
            shells = list(self._shells)
            self._pool = None
        errors = []
        closables: List[Union[RunspacePool, CmdShell]] = [*pools, *shells]
        for closable in closables:
            try:
                closable.close()
            except PSRemoteError as e:
                errors.append(e)
        if native is not None and self._generation == _fork.generation():
            native.wait_for_cleanup(CLOSE_GRACE)
        self._native = None
        if errors:
            _logging.log(logging.WARNING, "cannot close every runspace pool and cmd shell", _log, errors=[str(e) for e in errors])

    def __enter__(self) -> "Client":
        try:
            self.connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as e:  # noqa: BLE001
            _logging.log(logging.WARNING, "cannot close the client", _log, error=str(e))
