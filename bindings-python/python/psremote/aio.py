"""The asyncio API: AsyncClient, AsyncRunspacePool, AsyncPowerShell, AsyncPipeline, and cmd
shells with AsyncCmdShell and AsyncCmdProcess.

Everything runs on the caller's event loop: the native module does the waiting on its own
runtime and completes an ``asyncio.Future`` of the calling loop through
``loop.call_soon_threadsafe``. No loop is created or nested, so it works inside Jupyter's
running loop. Cancelling a task that waits for a pipeline stops the remote pipeline.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
import collections
import os
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Deque, Dict, Generator, Iterable, List, Mapping, Optional, Tuple, Union

from psremote import _fork, _logging, _native
from psremote._limits import CLOSE_GRACE, DEFAULT_MAX_OUTPUT, check_max_output, check_timeout
from psremote._builder import PipelineBuilder, command_type_flags, script_or_builder, string_list
from psremote._options import normalize_configuration_name
from psremote.client import COLLECT_BATCH, DEFAULT_POOL_MAX_RUNSPACES, INPUT_BATCH, _application_arguments, _ClientBase, input_iterable
from psremote.cmd import UTF8_CODEPAGE, StdinData, _check_timeout, _cmd_arguments, _result, _shell_options, _stdin_bytes
from psremote.exceptions import ClosedError, ConfigurationError, NotFoundError, OperationTimeoutError, PSRemoteError
from psremote.files import ProgressCallback, TransferPath, transfer_arguments
from psremote.fleet import AsyncFleetRun, run_many_async as run_many
from psremote.host import PSHost
from psremote.progress import ProgressDisplay
from psremote.sessions import PoolInfo, outlive_options, pool_target
from psremote.records import CmdChunk, CmdResult, PipelineState, ProgressRecord, PSEvent, PSResult, ServerConfig, convert_event

__all__ = [
    "AsyncClient", "AsyncCmdProcess", "AsyncCmdShell", "AsyncFleetRun", "AsyncPipeline", "AsyncPowerShell", "AsyncRunspacePool",
    "run_many",
]

_log = logging.getLogger("psremote.client")
# How long a cancelled copy or fetch waits for the transfer to stop and clean up.
_CANCEL_GRACE = 10.0


def _retrieve(future: "asyncio.Future[Any]") -> None:
    # Marks an exception as seen when nobody awaits the future any more (after a
    # cancellation), so asyncio does not log "exception was never retrieved".
    if not future.cancelled():
        future.exception()


def _native_future(start: Callable[..., None], *args: Any) -> "asyncio.Future[Any]":
    """Starts a native ``*_async`` operation and returns the future it will complete."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    future.add_done_callback(_retrieve)
    start(future, *args)
    return future


async def _call(start: Callable[..., None], *args: Any) -> Any:
    """Awaits a native ``*_async`` operation. Cancelling the caller cancels the native future,
    and that cancels the operation: the native side drops it, which releases what it had
    opened on the server (Signal, Delete) in the background."""
    return await _native_future(start, *args)


async def _within(timeout: Optional[float], what: str, work: Awaitable[Any]) -> Any:
    """``work`` within ``timeout`` seconds (None: no limit); past it ``work`` is cancelled
    (which releases its remote work) and :class:`OperationTimeoutError` raised."""
    if timeout is None:
        return await work
    try:
        return await asyncio.wait_for(work, timeout)
    except asyncio.TimeoutError:
        raise OperationTimeoutError(f"{what} did not finish within {timeout:g} s") from None


class AsyncPipeline:
    """A running pipeline: ``async for event in pipeline`` yields
    :class:`~psremote.records.PSEvent` objects as they arrive; the last is the ``"state"``
    event. ``await result()`` collects what is left. ``async with`` stops it on exit if it is
    still running.
    """

    def __init__(self, native: Any, pool: "AsyncRunspacePool", commands: List[str]) -> None:
        self._native = native
        self._pool = pool
        self._commands = commands
        self._buffer: Deque[Tuple[str, Any]] = collections.deque()
        self._done_fetching = False
        self._pending: Optional["asyncio.Future[Any]"] = None
        self._final: Optional[PipelineState] = None
        self._input_task: Optional["asyncio.Task[None]"] = None
        self._input_error: Optional[BaseException] = None
        self._stopping = False
        self.id: str = native.id

    # --- input ------------------------------------------------------------------------------

    def _feed(self, source: Any) -> None:
        self._input_task = asyncio.ensure_future(self._send_input(input_iterable(source)))

    async def _send_input(self, source: Any) -> None:
        try:
            batch: List[Any] = []
            if hasattr(source, "__aiter__"):
                async for value in source:
                    batch.append(value)
                    if len(batch) >= INPUT_BATCH:
                        await _call(self._native.send_input_async, batch)
                        batch = []
            else:
                for value in source:
                    batch.append(value)
                    if len(batch) >= INPUT_BATCH:
                        await _call(self._native.send_input_async, batch)
                        batch = []
            if batch:
                await _call(self._native.send_input_async, batch)
            await _call(self._native.end_input_async)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - reported to the consumer of the pipeline
            if self._stopping:
                return
            self._input_error = e
            try:
                await _call(self._native.stop_async)
            except BaseException:  # noqa: BLE001
                pass

    def _check_input_error(self) -> None:
        if self._input_error is not None:
            error, self._input_error = self._input_error, None
            raise error

    # --- events -----------------------------------------------------------------------------

    def _cancelled(self) -> None:
        """The awaiting task was cancelled: stop the remote pipeline without waiting."""
        if self._done_fetching or self._stopping:
            return
        self._stopping = True
        if self._input_task is not None:
            self._input_task.cancel()
        try:
            _native_future(self._native.stop_async)
        except BaseException:  # noqa: BLE001 - best effort
            pass

    async def _fetch(self, max_events: int) -> bool:
        if self._done_fetching:
            return False
        # A fetch interrupted by a cancellation left its future here: its events are not lost.
        if self._pending is None:
            self._pending = _native_future(self._native.next_events_async, max_events)
        try:
            events = await asyncio.shield(self._pending)
        except asyncio.CancelledError:
            self._cancelled()
            raise
        finally:
            if self._pending is not None and self._pending.done():
                self._pending = None
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
        _logging.log(logging.DEBUG, "pipeline finished", _log, pool=self._pool.id, pipeline=self.id, state=self._final.state)
        return event

    async def _finish_input(self) -> None:
        task = self._input_task
        if task is not None and task.done():
            if not task.cancelled():
                task.result()
        self._check_input_error()

    def __aiter__(self) -> AsyncIterator[PSEvent]:
        return self

    async def __anext__(self) -> PSEvent:
        if not self._buffer and not await self._fetch(256):
            await self._finish_input()
            raise StopAsyncIteration
        kind, payload = self._buffer.popleft()
        if kind == "state":
            return self._note_state(payload)
        return convert_event(kind, payload)

    async def result(self, *, raise_on_error: bool = False, show_progress: bool = False) -> PSResult:
        """Waits for the end and returns what the pipeline produced from here on."""
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
                if not await self._fetch(COLLECT_BATCH):
                    break
        finally:
            if display is not None:
                display.close()
        if self._input_task is not None and not self._input_task.done():
            # The pipeline ended before consuming all input: the sender has nothing left to do.
            self._input_task.cancel()
        await self._finish_input()
        if raise_on_error:
            result.raise_for_errors()
        return result

    async def stop(self) -> None:
        """Stops the pipeline on the server."""
        self._stopping = True
        if self._input_task is not None and not self._input_task.done():
            self._input_task.cancel()
        if self._done_fetching:
            return
        await _call(self._native.stop_async)

    @property
    def state(self) -> Optional[str]:
        return self._final.state if self._final is not None else None

    @property
    def finished(self) -> bool:
        return self._final is not None

    async def __aenter__(self) -> "AsyncPipeline":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._done_fetching:
            try:
                await self.stop()
            except PSRemoteError as e:
                _logging.log(logging.DEBUG, "cannot stop the pipeline", _log, pipeline=self.id, error=str(e))

    def __repr__(self) -> str:
        return f"<AsyncPipeline {self.id} {' | '.join(self._commands)} state={self.state or 'Running'}>"


class AsyncPowerShell(PipelineBuilder):
    """A pipeline to run on an :class:`AsyncRunspacePool` (``pool.powershell()``)."""

    def __init__(self, pool: Optional[AsyncRunspacePool] = None) -> None:
        super().__init__()
        self.pool = pool
        self._running: Optional[AsyncPipeline] = None

    def _pool(self) -> "AsyncRunspacePool":
        if self.pool is None:
            raise ConfigurationError(
                "this AsyncPowerShell has no runspace pool: create it with pool.powershell() or pass it to client.run_ps()"
            )
        return self.pool

    async def start(
        self, input: Any = None, *, add_to_history: bool = False, invocation_info: bool = True, nested: bool = False
    ) -> AsyncPipeline:
        """Starts the pipeline; ``input`` may be an iterable or an async iterable;
        ``invocation_info`` and ``nested`` as for :meth:`psremote.PowerShell.start`."""
        handle = await self._pool()._start(self, input, add_to_history, invocation_info, nested)
        self._running = handle
        return handle

    async def invoke(
        self,
        input: Any = None,
        *,
        raise_on_error: bool = False,
        show_progress: bool = False,
        add_to_history: bool = False,
        invocation_info: bool = True,
        nested: bool = False,
    ) -> PSResult:
        handle = await self.start(input, add_to_history=add_to_history, invocation_info=invocation_info, nested=nested)
        return await handle.result(raise_on_error=raise_on_error, show_progress=show_progress)

    async def stop(self) -> None:
        if self._running is not None:
            await self._running.stop()


class AsyncRunspacePool:
    """An open runspace pool (asyncio). ``async with client.runspace_pool() as pool``."""

    def __init__(self, native: Any, client: "AsyncClient", host: Optional[PSHost]) -> None:
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

    @property
    def state(self) -> str:
        return str(self._native.state)

    @property
    def protocol_version(self) -> Optional[str]:
        return self._native.protocol_version

    @property
    def application_private_data(self) -> Any:
        return self._native.application_private_data

    @property
    def closed(self) -> bool:
        return self._closed

    def _usable(self) -> bool:
        return not self._closed and self._native.state == "Opened"

    def powershell(self) -> AsyncPowerShell:
        return AsyncPowerShell(self)

    async def _start(
        self, builder: PipelineBuilder, input: Any, add_to_history: bool, invocation_info: bool = True, nested: bool = False
    ) -> AsyncPipeline:
        self._check()
        statements = builder._native_statements()
        _logging.sync_native_level()
        native = await _call(
            self._native.start_async, statements, input is not None, add_to_history, bool(invocation_info), bool(nested)
        )
        handle = AsyncPipeline(native, self, builder._describe())
        _logging.log(logging.DEBUG, "pipeline started", _log, pool=self.id, pipeline=handle.id, commands=handle._commands)
        if input is not None:
            handle._feed(input)
        return handle

    async def run_ps(
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
        """As :meth:`psremote.RunspacePool.run_ps`; ``timeout`` (seconds) stops a pipeline still
        running then and raises :class:`OperationTimeoutError`."""
        builder = script_or_builder(script, AsyncPowerShell)

        async def run() -> PSResult:
            handle = await self._start(builder, input, add_to_history, invocation_info, nested)
            return await handle.result(raise_on_error=raise_on_error, show_progress=show_progress)

        return await _within(check_timeout(timeout), "the pipeline", run())

    async def start(
        self,
        script: Union[str, PipelineBuilder],
        input: Any = None,
        *,
        add_to_history: bool = False,
        invocation_info: bool = True,
        nested: bool = False,
    ) -> AsyncPipeline:
        builder = script_or_builder(script, AsyncPowerShell)
        return await self._start(builder, input, add_to_history, invocation_info, nested)

    async def command_metadata(self, name: Any = None, *, command_type: Any = None, namespace: Any = None) -> List[Any]:
        """What ``Get-Command`` knows about the server's commands; see
        :meth:`psremote.RunspacePool.command_metadata`."""
        self._check()
        names = string_list("name", name)
        flags = command_type_flags(command_type)
        found = await _call(self._native.command_metadata_async, names, flags, string_list("namespace", namespace))
        return list(found)

    async def exchange_key(self, timeout: Optional[float] = None) -> None:
        """Exchanges the session key (optional: it happens by itself when needed); gives up
        with :class:`OperationTimeoutError` after ``timeout`` seconds (60 by default)."""
        self._check()
        await _call(self._native.exchange_key_async, timeout)

    def set_max_runspaces(self, count: int) -> bool:
        """Blocking (a short round trip); the native API has no async variant."""
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

    async def disconnect(self) -> None:
        """As :meth:`psremote.RunspacePool.disconnect`."""
        self._check()
        await _call(functools.partial(_native.pool_disconnect_async, self._native))

    async def reconnect(self) -> None:
        """As :meth:`psremote.RunspacePool.reconnect`."""
        self._check()
        try:
            await _call(functools.partial(_native.pool_reconnect_async, self._native))
        except NotFoundError:
            self._closed = True
            raise

    async def is_alive(self) -> bool:
        """As :meth:`psremote.RunspacePool.is_alive`."""
        if self._closed:
            return False
        _fork.check(self._generation, "runspace pool")
        alive = bool(await _call(functools.partial(_native.pool_is_alive_async, self._native)))
        if not alive:
            self._closed = True
        return alive

    @property
    def disconnected(self) -> bool:
        """Whether the pool is disconnected."""
        return not self._closed and self._native.state == "Disconnected"

    async def attach_pipeline(self, pipeline_id: str) -> AsyncPipeline:
        """As :meth:`psremote.RunspacePool.attach_pipeline`."""
        self._check()
        if not isinstance(pipeline_id, str):
            raise ConfigurationError(f"pipeline_id must be a str, got {pipeline_id!r}")
        native = await _call(functools.partial(_native.pool_attach_pipeline_async, self._native), pipeline_id)
        return AsyncPipeline(native, self, [])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._generation != _fork.generation():
            return
        try:
            await _call(self._native.close_async)
        except ClosedError:
            pass

    async def __aenter__(self) -> "AsyncRunspacePool":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            await self.close()
            return
        try:
            await self.close()
        except Exception as e:  # noqa: BLE001
            _logging.log(logging.WARNING, "cannot close the runspace pool", _log, pool=self.id, error=str(e))

    def __repr__(self) -> str:
        return f"<AsyncRunspacePool {self.id} state={'Closed' if self._closed else self.state}>"


class _PoolOpener:
    """What ``AsyncClient.runspace_pool()`` returns: await it, or use it with ``async with``."""

    def __init__(self, opening: Awaitable[AsyncRunspacePool]) -> None:
        self._opening = opening
        self._pool: Optional[AsyncRunspacePool] = None

    def __await__(self) -> Generator[Any, None, AsyncRunspacePool]:
        return self._opening.__await__()

    async def __aenter__(self) -> AsyncRunspacePool:
        self._pool = await self._opening
        return self._pool

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._pool is not None:
            await self._pool.__aexit__(exc_type, exc, tb)


class AsyncCmdProcess:
    """A command running in an :class:`AsyncCmdShell`: the asyncio twin of
    :class:`psremote.cmd.CmdProcess`.

    ``async for stream, data in process`` yields :class:`~psremote.records.CmdChunk` tuples as
    they arrive; ``await read(timeout)`` takes one; ``await wait()`` collects the rest.
    ``await send(data, end=False)``, ``await ctrl_c()``, ``await terminate()``. A read that is
    cancelled or times out loses nothing: its chunk goes to the next read. ``async with``
    terminates a command that is still running on exit.
    """

    def __init__(self, native: Any, shell: "AsyncCmdShell", executable: str) -> None:
        self._native = native
        self._shell = shell
        self._executable = executable
        self._generation = _fork.generation()
        self._pushback: Deque[CmdChunk] = collections.deque()
        self._pending: Optional["asyncio.Future[Any]"] = None
        self._finished = False
        self.id: str = native.id

    def _check(self) -> None:
        _fork.check(self._generation, "cmd process")

    @property
    def exit_code(self) -> Optional[int]:
        """The exit code once the output has ended; None before (and after :meth:`terminate`
        unless the server had reported one)."""
        return self._native.exit_code  # type: ignore[no-any-return]

    @property
    def finished(self) -> bool:
        return self._finished and not self._pushback

    async def read(self, timeout: Optional[float] = None) -> Optional[CmdChunk]:
        """The next chunk, or None once the command has ended; with ``timeout`` (seconds),
        :class:`~psremote.OperationTimeoutError` when nothing arrived in time."""
        self._check()
        limit = _check_timeout(timeout)
        if self._pushback:
            return self._pushback.popleft()
        if self._finished:
            return None
        if self._pending is None:
            self._pending = _native_future(self._native.next_chunk_async)
        pending = self._pending
        try:
            if limit is None:
                chunk = await asyncio.shield(pending)
            else:
                chunk = await asyncio.wait_for(asyncio.shield(pending), limit)
        except asyncio.TimeoutError:
            raise OperationTimeoutError(f"no output from command {self.id} within {limit} s") from None
        finally:
            if pending.done():
                self._pending = None
        if chunk is None:
            self._finished = True
            return None
        return CmdChunk(*chunk)

    def __aiter__(self) -> AsyncIterator[CmdChunk]:
        return self

    async def __anext__(self) -> CmdChunk:
        chunk = await self.read()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def send(self, data: StdinData, end: bool = False) -> None:
        """Writes ``data`` (bytes, or str as UTF-8) to stdin; ``end=True`` closes it afterwards."""
        payload = _stdin_bytes(data, "data")
        self._check()
        await _call(self._native.send_stdin_async, payload, bool(end))

    async def close_stdin(self) -> None:
        await self.send(b"", end=True)

    async def ctrl_c(self) -> None:
        """Sends Ctrl-C. Does nothing once the command has ended."""
        self._check()
        await _call(self._native.ctrl_c_async)

    async def terminate(self) -> None:
        """Stops the command and releases it on the server."""
        self._check()
        await _call(self._native.terminate_async)

    async def wait(self, timeout: Optional[float] = None) -> CmdResult:
        """Reads until the command ends; the output not read yet and the exit code. On a
        timeout (:class:`~psremote.OperationTimeoutError`) or a cancellation, what was gathered
        stays for the next read."""
        limit = _check_timeout(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        taken: List[CmdChunk] = []
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                chunk = await self.read(left)
                if chunk is None:
                    break
                taken.append(chunk)
        except BaseException:
            self._pushback.extendleft(reversed(taken))
            raise
        return _result(taken, self.exit_code, self.id)

    async def __aenter__(self) -> "AsyncCmdProcess":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._finished or self._generation != _fork.generation():
            return
        try:
            await self.terminate()
        except PSRemoteError as e:
            _logging.log(logging.DEBUG, "cannot terminate the command", _log, command=self.id, error=str(e))

    def __repr__(self) -> str:
        state = f"exit_code={self.exit_code}" if self._finished else "running"
        return f"<AsyncCmdProcess {self.id} {self._executable!r} {state}>"


class AsyncCmdShell:
    """An open cmd shell (asyncio): ``async with client.cmd_shell(...) as shell``. The twin of
    :class:`psremote.CmdShell`."""

    def __init__(self, native: Any, client: Optional[AsyncClient] = None) -> None:
        self._native = native
        self._client = client
        self._closed = False
        self._generation = _fork.generation()
        self.id: str = native.id

    def _check(self) -> None:
        _fork.check(self._generation, "cmd shell")
        if self._closed:
            raise ClosedError(f"cmd shell {self.id} is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self, executable: str, args: Iterable[Any] = (), *, skip_cmd_shell: bool = False) -> AsyncCmdProcess:
        """Starts a command (see :meth:`psremote.CmdShell.start`)."""
        executable, arguments, _ = _cmd_arguments(executable, args, None)
        self._check()
        native = await _call(self._native.start_async, executable, arguments, bool(skip_cmd_shell))
        return AsyncCmdProcess(native, self, executable)

    def attach(self, command_id: Optional[str] = None) -> AsyncCmdProcess:
        """A process for a command this shell already runs (see
        :meth:`psremote.CmdShell.attach`); nothing is sent until it is read."""
        self._check()
        return AsyncCmdProcess(self._native.attach(command_id), self, command_id or "")

    async def run(
        self, executable: str, args: Iterable[Any] = (), stdin: Optional[StdinData] = None, *, skip_cmd_shell: bool = False
    ) -> CmdResult:
        """Runs a command to the end and returns its result; ``stdin`` as for
        :meth:`psremote.CmdShell.run`."""
        data = _stdin_bytes(stdin)
        async with await self.start(executable, args, skip_cmd_shell=skip_cmd_shell) as process:
            if data is not None:
                await process.send(data, end=True)
            return await process.wait()

    async def close(self) -> None:
        """Deletes the shell on the server. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._generation != _fork.generation():
            return
        await _call(self._native.close_async)

    async def __aenter__(self) -> "AsyncCmdShell":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            await self.close()
            return
        try:
            await self.close()
        except Exception as e:  # noqa: BLE001
            _logging.log(logging.WARNING, "cannot close the cmd shell", _log, shell=self.id, error=str(e))

    def __repr__(self) -> str:
        return f"<AsyncCmdShell {self.id}{' closed' if self._closed else ''}>"


class _ShellOpener:
    """What ``AsyncClient.cmd_shell()`` returns: await it, or use it with ``async with``."""

    def __init__(self, opening: Awaitable[AsyncCmdShell]) -> None:
        self._opening = opening
        self._shell: Optional[AsyncCmdShell] = None

    def __await__(self) -> Generator[Any, None, AsyncCmdShell]:
        return self._opening.__await__()

    async def __aenter__(self) -> AsyncCmdShell:
        self._shell = await self._opening
        return self._shell

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._shell is not None:
            await self._shell.__aexit__(exc_type, exc, tb)


class AsyncClient(_ClientBase):
    """The asyncio twin of :class:`~psremote.Client`: the same options, awaitable methods.

    ``async with AsyncClient(url=..., username=..., password=...) as client:``
    """

    def __init__(self, host: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._connecting: Optional["asyncio.Future[Any]"] = None
        self._pool: Optional[AsyncRunspacePool] = None
        self._pool_opening: Optional["asyncio.Future[AsyncRunspacePool]"] = None
        self._pools: "weakref.WeakSet[AsyncRunspacePool]" = weakref.WeakSet()
        self._shells: "weakref.WeakSet[AsyncCmdShell]" = weakref.WeakSet()

    async def connect(self) -> "AsyncClient":
        native = self._check()
        if self._connected:
            return self
        connecting = self._connecting
        if connecting is None or (connecting.done() and (connecting.cancelled() or connecting.exception() is not None)):
            connecting = self._connecting = asyncio.ensure_future(_call(native.connect_async))
        await asyncio.shield(connecting)
        self._connected = True
        return self

    async def server_config(self) -> ServerConfig:
        """The server's WinRM configuration; see :meth:`psremote.Client.server_config`."""
        await self.connect()
        return ServerConfig._from_native(await _call(self._check().server_config_async))

    async def fit_envelope_to_server(self) -> int:
        """Sizes later requests to the server's MaxEnvelopeSizekb; see
        :meth:`psremote.Client.fit_envelope_to_server`."""
        await self.connect()
        return int(await _call(self._check().fit_envelope_to_server_async))

    async def _open_pool(
        self,
        configuration_name: Optional[str],
        min_runspaces: int,
        max_runspaces: int,
        host: Optional[PSHost],
        no_profile: bool,
        application_arguments: Optional[Dict[str, Any]] = None,
        idle_timeout: Optional[float] = None,
        buffer_mode: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> AsyncRunspacePool:
        await self.connect()
        name = normalize_configuration_name(configuration_name or self.options.configuration_name)
        native = await _call(
            self._check().open_pool_async,
            name,
            min_runspaces,
            max_runspaces,
            host,
            no_profile,
            application_arguments,
            idle_timeout,
            buffer_mode,
            timeout,
        )
        pool = AsyncRunspacePool(native, self, host)
        self._pools.add(pool)
        return pool

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
    ) -> _PoolOpener:
        """``pool = await client.runspace_pool()`` or ``async with client.runspace_pool() as pool``;
        options as for :meth:`psremote.Client.runspace_pool` (``timeout`` bounds the opening)."""
        timeout = check_timeout(timeout)
        if configuration_name is not None:
            normalize_configuration_name(configuration_name)
        if isinstance(min_runspaces, bool) or not isinstance(min_runspaces, int) or min_runspaces < 1:
            raise ConfigurationError(f"min_runspaces must be an int of at least 1, got {min_runspaces!r}")
        if isinstance(max_runspaces, bool) or not isinstance(max_runspaces, int) or max_runspaces < min_runspaces:
            raise ConfigurationError(f"max_runspaces must be an int of at least min_runspaces ({min_runspaces}), got {max_runspaces!r}")
        if host is not None and not callable(getattr(host, "call", None)):
            raise ConfigurationError("host must be a psremote.PSHost (an object with a call() method)")
        arguments = _application_arguments(application_arguments)
        idle_timeout, buffer_mode = outlive_options(idle_timeout, buffer_mode)
        return _PoolOpener(
            self._open_pool(
                configuration_name, min_runspaces, max_runspaces, host, no_profile, arguments, idle_timeout, buffer_mode,
                timeout,
            )
        )

    async def list_pools(self) -> List[PoolInfo]:
        """As :meth:`psremote.Client.list_pools`."""
        await self.connect()
        found = await _call(functools.partial(_native.client_list_pools_async, self._check()))
        return [PoolInfo._from_native(d) for d in found]

    async def connect_pool(
        self,
        pool: Union[str, PoolInfo],
        *,
        configuration_name: Optional[str] = None,
        host: Optional[PSHost] = None,
        idle_timeout: Optional[float] = None,
        buffer_mode: Optional[str] = None,
    ) -> AsyncRunspacePool:
        """As :meth:`psremote.Client.connect_pool`."""
        shell_id, name = pool_target(pool, configuration_name)
        name = normalize_configuration_name(name or self.options.configuration_name)
        idle_timeout, buffer_mode = outlive_options(idle_timeout, buffer_mode)
        if host is not None and not callable(getattr(host, "call", None)):
            raise ConfigurationError("host must be a psremote.PSHost (an object with a call() method)")
        await self.connect()
        connect = functools.partial(_native.client_connect_pool_async, self._check())
        native = await _call(connect, shell_id, name, host, idle_timeout, buffer_mode)
        opened = AsyncRunspacePool(native, self, host)
        self._pools.add(opened)
        return opened

    async def _default_pool(self) -> AsyncRunspacePool:
        pool = self._pool
        if pool is not None and pool._usable():
            return pool
        if self._pool_opening is None or self._pool_opening.done():
            self._pool_opening = asyncio.ensure_future(
                self._open_pool(None, 1, DEFAULT_POOL_MAX_RUNSPACES, self.ps_host, False)
            )
            self._pool_opening.add_done_callback(_retrieve)
        opening = self._pool_opening
        pool = await asyncio.shield(opening)
        self._pool = pool
        return pool

    async def powershell(self) -> AsyncPowerShell:
        return AsyncPowerShell(await self._default_pool())

    async def run_ps(
        self,
        script: Union[str, PipelineBuilder],
        input: Any = None,
        *,
        raise_on_error: bool = False,
        show_progress: bool = False,
        timeout: Optional[float] = None,
    ) -> PSResult:
        """Runs a script or PowerShell on the client's runspace pool (opened on first use).
        ``timeout`` (seconds) bounds the whole call, opening the pool included: past it the
        pipeline is stopped and :class:`OperationTimeoutError` raised (a pool still opening
        goes on opening for the next call, bounded by the client's close)."""

        async def run() -> PSResult:
            pool = await self._default_pool()
            return await pool.run_ps(script, input, raise_on_error=raise_on_error, show_progress=show_progress)

        return await _within(check_timeout(timeout), "run_ps", run())

    async def run_cmd(
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
        """Runs a command in a new cmd shell; see :meth:`psremote.Client.run_cmd` (``timeout``,
        ``max_output``). Cancelling the awaiting task releases the command and its shell."""
        executable, arguments, data = _cmd_arguments(executable, args, stdin)
        env, directory, codepage, no_profile, _ = _shell_options(environment, working_directory, codepage, no_profile, None)
        timeout, max_output = check_timeout(timeout), check_max_output(max_output)
        await self.connect()
        stdout, stderr, exit_code = await _call(
            self._check().run_cmd_async, executable, arguments, data, env, directory, codepage, no_profile,
            bool(skip_cmd_shell), timeout, max_output,
        )
        return CmdResult(stdout, stderr, exit_code)

    async def _open_shell(self, options: Tuple[Any, ...]) -> AsyncCmdShell:
        await self.connect()
        shell = AsyncCmdShell(await _call(self._check().open_cmd_shell_async, *options), self)
        self._shells.add(shell)
        return shell

    def cmd_shell(
        self,
        *,
        environment: Optional[Mapping[str, str]] = None,
        working_directory: Union[str, "os.PathLike[str]", None] = None,
        codepage: Optional[int] = UTF8_CODEPAGE,
        no_profile: bool = False,
        idle_timeout: Optional[float] = None,
    ) -> _ShellOpener:
        """``shell = await client.cmd_shell(...)`` or ``async with client.cmd_shell(...) as
        shell``; the options are those of :meth:`psremote.Client.cmd_shell`."""
        options = _shell_options(environment, working_directory, codepage, no_profile, idle_timeout)
        return _ShellOpener(self._open_shell(options))

    async def copy(
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
        """As :meth:`psremote.Client.copy`; cancelling the awaiting task stops the transfer
        (the cancellation returns once the transfer has stopped)."""
        args = transfer_arguments(
            "copy", src, dest, expand_variables=expand_variables, show_progress=show_progress, progress=progress,
            timeout=timeout, configuration_name=configuration_name, default_configuration=self.options.configuration_name,
        )
        return await self._transfer(_native.client_copy_async, *args)

    async def fetch(
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
        """As :meth:`psremote.Client.fetch`; cancelling the awaiting task stops the transfer
        and removes the partial file before the cancellation returns."""
        args = transfer_arguments(
            "fetch", src, dest, expand_variables=expand_variables, show_progress=show_progress, progress=progress,
            timeout=timeout, configuration_name=configuration_name, default_configuration=self.options.configuration_name,
        )
        return await self._transfer(_native.client_fetch_async, *args)

    async def _transfer(self, start: Any, src: str, dest: str, expand: bool, timeout: Optional[float], name: str, relay: Any) -> str:
        cancel = _native.TransferCancel()
        future = _native_future(functools.partial(start, self._check()), src, dest, expand, timeout, name, relay.native(), cancel)
        try:
            outcome = await asyncio.shield(future)
        except asyncio.CancelledError:
            # Stop the transfer and wait (bounded) until it has cleaned up after itself.
            cancel.cancel()
            relay.close()
            await asyncio.wait([future], timeout=_CANCEL_GRACE)
            raise
        except BaseException as e:
            relay.reraise(e)
            raise
        return str(relay.finish(outcome))

    async def close(self) -> None:
        """Ends the operations this client still has in flight (their tasks get
        :class:`ClosedError`), closes the runspace pools and cmd shells it opened, and waits
        (bounded) until what the ended operations had opened on the server is released."""
        if self._closed:
            return
        self._closed = True
        native = self._native
        same_process = self._generation == _fork.generation()
        if native is not None and same_process:
            await _native_future(native.end_operations_async, CLOSE_GRACE)
        # A disconnected pool outlives its client: that is what disconnecting is for.
        pools = [p for p in self._pools if not p.disconnected]
        self._pool = None
        for pool in pools:
            try:
                await pool.close()
            except PSRemoteError as e:
                _logging.log(logging.WARNING, "cannot close a runspace pool", _log, pool=pool.id, error=str(e))
        for shell in list(self._shells):
            try:
                await shell.close()
            except PSRemoteError as e:
                _logging.log(logging.WARNING, "cannot close a cmd shell", _log, shell=shell.id, error=str(e))
        if native is not None and same_process:
            await _native_future(native.wait_for_cleanup_async, CLOSE_GRACE)
        self._native = None

    async def __aenter__(self) -> "AsyncClient":
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            await self.close()
            return
        try:
            await self.close()
        except Exception as e:  # noqa: BLE001
            _logging.log(logging.WARNING, "cannot close the client", _log, error=str(e))
