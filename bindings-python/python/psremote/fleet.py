"""Fleets: one script (or one cmd command) on many hosts at once, as PowerShell's
``Invoke-Command -ComputerName (list) -ThrottleLimit N`` does.

::

    results = psremote.run_many("web[01-40].corp.example", "Get-Service W32Time",
                                username="CORP\\\\ops", throttle=32, show_progress=True)
    for r in results:                      # in the order the hosts finish
        print(r.host, r.status, [s.Status for s in r.output])
    print(results.summary)                 # 40 hosts: 38 succeeded, 1 failed, 1 unreachable (6.1 s)
    df = results.to_pandas()               # one row per object, with PSComputerName

The fan-out is the core's (``client::Fleet``): every host's connection, runspace pool (or cmd
shell) and pipeline run in a task of their own on psremote's runtime, at most ``throttle`` at
once, and whatever happens on one host (unreachable, logon refused, deadline, failing script) is
that host's :class:`HostResult`, never an exception that stops the others. The asyncio twin is
:func:`psremote.aio.run_many` (``async for r in ...``).

``PSComputerName``: every object in :attr:`HostResult.output` carries it, as with
``Invoke-Command``. A :class:`~psremote.PSObject` gets it as a note property (so it is also in
``HostResult.result.output``); any other value (a string, a number, a dict...) is wrapped in a
PSObject whose ``value`` is the value and whose ``str()`` is the value's, with the note
property beside it. :attr:`HostResult.result` keeps the values as ``run_ps`` returns them. For a
cmd fleet, ``output`` holds the lines of stdout, each wrapped that way.
"""

from __future__ import annotations

import asyncio
import html
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from psremote import _logging, _native
from psremote._limits import CLOSE_GRACE, DEFAULT_MAX_OUTPUT, check_max_output, check_timeout
from psremote._options import DEFAULT_CONFIGURATION
from psremote.cmd import UTF8_CODEPAGE, StdinData, _shell_options, _stdin_bytes
from psremote.exceptions import ConfigurationError, PSRemoteError
from psremote.hosts import HostsArg, host_entries, host_options, shared_options
from psremote.progress import HostsProgress
from psremote.records import CmdResult, PSResult
from psremote.values import PSObject

__all__ = ["AsyncFleetRun", "FleetRun", "FleetSummary", "HostResult", "run_many", "run_many_async"]

#: Hosts at once unless told otherwise (Invoke-Command's ThrottleLimit default).
DEFAULT_THROTTLE = 32
#: The statuses of a host's run.
SUCCEEDED, FAILED, UNREACHABLE = "Succeeded", "Failed", "Unreachable"

_MAX_HTML_ROWS = 200


def _tag(value: Any, host: str) -> PSObject:
    """``value`` carrying ``PSComputerName`` (see the module's documentation)."""
    if isinstance(value, PSObject):
        value.extended_properties["PSComputerName"] = host
        return value
    return PSObject([], None, {}, {"PSComputerName": host}, value)


@dataclass(frozen=True, eq=False)
class HostResult:
    """What one host of a fleet gave."""

    #: The host as named in the host list (``PSComputerName``).
    host: str
    #: Its position in the host list.
    index: int
    #: ``"Succeeded"`` (the script completed, non-terminating errors allowed, or the command
    #: exited with 0), ``"Failed"`` (the host answered: logon refused, a failed or stopped
    #: pipeline, a non-zero exit code, a deadline, a broken reply, a cancelled run) or
    #: ``"Unreachable"`` (no connection could be made, after the retries).
    status: str
    #: Seconds from the host's first connection attempt to its result.
    elapsed: float
    #: Connection attempts made (0 when the run was cancelled before the host's turn).
    attempts: int
    #: The :class:`~psremote.PSResult` (script) or :class:`~psremote.CmdResult` (command), as
    #: ``run_ps`` / ``run_cmd`` return it; None when the host gave an error instead.
    result: Union[PSResult, CmdResult, None]
    #: The exception ``Client`` would have raised (:class:`~psremote.ConnectError`,
    #: :class:`~psremote.AuthenticationError`, :class:`~psremote.OperationTimeoutError`,
    #: :class:`~psremote.ProtocolError`, :class:`~psremote.ClosedError` for a cancelled run...).
    error: Optional[PSRemoteError]
    #: The output objects, each carrying ``PSComputerName``.
    output: List[PSObject] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == SUCCEEDED

    @property
    def reason(self) -> Optional[str]:
        """Why the host did not succeed, in one line (None when it did)."""
        if self.ok:
            return None
        if self.error is not None:
            return f"{type(self.error).__name__}: {self.error}"
        if isinstance(self.result, CmdResult):
            return f"exit code {self.result.exit_code}"
        if isinstance(self.result, PSResult):
            if self.result.terminating_error is not None:
                return str(self.result.terminating_error)
            return f"the pipeline ended in state {self.result.state}"
        return self.status

    @classmethod
    def _from_native(cls, item: Tuple[int, str, str, float, int, str, Any]) -> "HostResult":
        index, host, status, elapsed, attempts, kind, payload = item
        if kind == "powershell":
            result = PSResult()
            output, absorb = result.output, result._absorb
            for event_kind, value in payload:
                if event_kind == "output":
                    output.append(value)
                else:
                    absorb(event_kind, value)
            tagged = [_tag(v, host) for v in output]
            return cls(host, index, status, elapsed, attempts, result, None, tagged)
        if kind == "cmd":
            stdout, stderr, exit_code = payload
            cmd = CmdResult(stdout, stderr, exit_code)
            return cls(host, index, status, elapsed, attempts, cmd, None, [_tag(line, host) for line in cmd.text.splitlines()])
        return cls(host, index, status, elapsed, attempts, None, payload)

    def __repr__(self) -> str:
        extra = f" output={len(self.output)}" if self.result is not None else ""
        why = f" reason={self.reason!r}" if not self.ok else ""
        return f"<HostResult {self.host} {self.status} {self.elapsed:.2f}s{extra}{why}>"


@dataclass(frozen=True)
class FleetSummary:
    """How a fleet's hosts fared: the results so far in host-list order, and the hosts still
    pending (none once the run ended)."""

    #: Hosts in the run.
    total: int
    #: The results received, in host-list order.
    results: Tuple[HostResult, ...]
    #: Seconds from the start of the run to its last result (or to now, while it runs).
    duration: float

    def _hosts(self, status: str) -> List[str]:
        return [r.host for r in self.results if r.status == status]

    @property
    def succeeded(self) -> List[str]:
        return self._hosts(SUCCEEDED)

    @property
    def failed(self) -> List[str]:
        return self._hosts(FAILED)

    @property
    def unreachable(self) -> List[str]:
        return self._hosts(UNREACHABLE)

    @property
    def pending(self) -> int:
        """Hosts without a result yet."""
        return self.total - len(self.results)

    @property
    def complete(self) -> bool:
        return self.pending == 0

    @property
    def counts(self) -> Dict[str, int]:
        """``{"succeeded": n, "failed": n, "unreachable": n, "pending": n}``."""
        return {
            "succeeded": len(self.succeeded),
            "failed": len(self.failed),
            "unreachable": len(self.unreachable),
            "pending": self.pending,
        }

    @property
    def times(self) -> Dict[str, float]:
        """Seconds each host took, by host."""
        return {r.host: r.elapsed for r in self.results}

    @property
    def ok(self) -> bool:
        """Whether every host succeeded."""
        return self.complete and all(r.ok for r in self.results)

    def __str__(self) -> str:
        c = self.counts
        text = f"{self.total} host{'s' if self.total != 1 else ''}: {c['succeeded']} succeeded, {c['failed']} failed, {c['unreachable']} unreachable"
        if c["pending"]:
            text += f", {c['pending']} pending"
        return f"{text} ({self.duration:.1f} s)"

    def _repr_html_(self) -> str:
        colours = {SUCCEEDED: "#2a2", FAILED: "#c00", UNREACHABLE: "#b58900"}
        # The hosts that need attention first, then the rest, each in host-list order.
        ordered = [r for r in self.results if not r.ok] + [r for r in self.results if r.ok]
        rows = []
        for r in ordered[:_MAX_HTML_ROWS]:
            count = "" if r.result is None else str(len(r.output))
            rows.append(
                "<tr>"
                f"<td style='text-align:left'>{html.escape(r.host)}</td>"
                f"<td style='text-align:left;color:{colours.get(r.status, '')}'>{html.escape(r.status)}</td>"
                f"<td>{r.elapsed:.2f}</td><td>{r.attempts}</td><td>{count}</td>"
                f"<td style='text-align:left'>{html.escape(_cut(r.reason or ''))}</td>"
                "</tr>"
            )
        more = f"<p><em>{len(ordered) - _MAX_HTML_ROWS} more hosts</em></p>" if len(ordered) > _MAX_HTML_ROWS else ""
        header = "".join(
            f"<th style='text-align:left'>{h}</th>" for h in ("PSComputerName", "Status", "Seconds", "Attempts", "Objects", "Reason")
        )
        return (
            f"<p><b>{html.escape(str(self))}</b></p>"
            f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"
        )


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _summary(total: int, results: Sequence[HostResult], started: float, ended: Optional[float]) -> FleetSummary:
    return FleetSummary(total, tuple(sorted(results, key=lambda r: r.index)), (ended or time.monotonic()) - started)


# --- pandas ----------------------------------------------------------------------------------------


def _pandas() -> Any:
    try:
        import pandas  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        raise ImportError("to_pandas() needs pandas: pip install 'psremote[pandas]' (or pip install pandas)") from None
    return pandas


def _frame(results: Sequence[HostResult], per: str) -> Any:
    """One row per output object (``per="object"``) or per host (``per="host"``)."""
    if per not in ("object", "host"):
        raise ValueError(f"per must be 'object' or 'host', not {per!r}")
    pandas = _pandas()
    ordered = sorted(results, key=lambda r: r.index)
    rows: List[Dict[str, Any]] = []
    if per == "host":
        for r in ordered:
            rows.append(
                {
                    "PSComputerName": r.host,
                    "status": r.status,
                    "elapsed": r.elapsed,
                    "attempts": r.attempts,
                    "objects": len(r.output),
                    "state": r.result.state if isinstance(r.result, PSResult) else None,
                    "exit_code": r.result.exit_code if isinstance(r.result, CmdResult) else None,
                    "error": type(r.error).__name__ if r.error is not None else None,
                    "reason": r.reason,
                }
            )
        return pandas.DataFrame(rows, columns=list(rows[0]) if rows else ["PSComputerName", "status"])
    for r in ordered:
        for obj in r.output:
            row: Dict[str, Any] = {"PSComputerName": r.host}
            if obj.value is not None:
                row["Value"] = obj.value
            row.update(obj.properties)
            rows.append(row)
    if not rows:
        return pandas.DataFrame(columns=["PSComputerName"])
    frame = pandas.DataFrame(rows)
    first = [c for c in ("PSComputerName", "Value") if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


# --- arguments -------------------------------------------------------------------------------------


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an int of at least {minimum}, not {value!r}")
    return value


def _start(
    hosts: HostsArg,
    script: Optional[str],
    executable: Optional[str],
    args: Iterable[Any],
    throttle: int,
    timeout: Optional[float],
    connect_retries: int,
    retry_delay: float,
    max_output: Optional[int],
    client_options: Dict[str, Any],
    cmd_options: Optional[Dict[str, Any]] = None,
) -> Tuple[Any, int]:
    """Checks everything, builds each host's native client configuration and starts the run."""
    if (script is None) == (executable is None):
        raise ConfigurationError("give a script, or executable= (and args=) for a cmd command, not both")
    if script is not None and not isinstance(script, str):
        raise ConfigurationError(f"script must be a str, not {type(script).__name__}")
    arguments: List[str] = []
    if executable is not None:
        if not isinstance(executable, str) or not executable:
            raise ConfigurationError("executable must be a non-empty str")
        if isinstance(args, (str, bytes)):
            raise ConfigurationError("args must be a list of arguments, not one str")
        arguments = [str(a) for a in args]
    throttle = _count("throttle", throttle, 1)
    timeout = check_timeout(timeout)
    connect_retries = _count("connect_retries", connect_retries, 0)
    if isinstance(retry_delay, bool) or not isinstance(retry_delay, (int, float)) or not 0 <= retry_delay < 86400:
        raise ConfigurationError(f"retry_delay must be a number of seconds from 0 to 86400, not {retry_delay!r}")
    max_output = check_max_output(max_output)
    shared = shared_options(client_options)
    cmd = dict(cmd_options or {})
    shell: Any = None
    stdin: Optional[bytes] = None
    skip_cmd_shell = bool(cmd.pop("skip_cmd_shell", False))
    if executable is None:
        given = [k for k, v in cmd.items() if v not in (None, False, UTF8_CODEPAGE)] + (["skip_cmd_shell"] if skip_cmd_shell else [])
        if given:
            raise ConfigurationError(f"{', '.join(sorted(given))}: options of a cmd command (executable=), not of a script")
    else:
        stdin = _stdin_bytes(cmd.get("stdin"))
        shell = _shell_options(
            cmd.get("environment"), cmd.get("working_directory"), cmd.get("codepage", UTF8_CODEPAGE), bool(cmd.get("no_profile")), None
        )
    natives = []
    for name, own in host_entries(hosts):
        options = host_options(shared, name, own)
        natives.append((name, _native.Client(**options.native_kwargs())))
    _logging.sync_native_level()
    fleet = _native.Fleet(
        natives,
        script,
        executable,
        arguments,
        throttle,
        timeout,
        connect_retries,
        float(retry_delay),
        max_output,
        configuration_name=shared.get("configuration_name", DEFAULT_CONFIGURATION),
        shell=shell,
        stdin=stdin,
        skip_cmd_shell=skip_cmd_shell,
    )
    return fleet, len(natives)


class _RunBase:
    """What the sync and async runs share: the results so far, the summary, the reports."""

    def __init__(self, native: Any, total: int, show_progress: bool) -> None:
        self._native = native
        self.total = total
        #: The results received so far, in the order the hosts finished.
        self.results: List[HostResult] = []
        self._cursor = 0
        self._done = False
        self._started = time.monotonic()
        self._ended: Optional[float] = None
        self._progress = HostsProgress(total) if show_progress else None

    def _received(self, item: Any) -> Optional[HostResult]:
        if item is None:
            self._finished()
            return None
        result = HostResult._from_native(item)
        self.results.append(result)
        if self._progress is not None:
            self._progress.update(result.status)
        return result

    def _finished(self) -> None:
        self._done = True
        self._ended = time.monotonic()
        if self._progress is not None:
            self._progress.close()

    @property
    def done(self) -> bool:
        """Whether every host has its result."""
        return self._done

    def cancel(self) -> None:
        """Stops the run: hosts not started yet report :class:`~psremote.ClosedError` without
        being contacted, running ones are cut off (what they opened on the server is released)."""
        self._native.cancel()

    def _summary(self) -> FleetSummary:
        return _summary(self.total, self.results, self._started, self._ended)

    def __repr__(self) -> str:
        state = "done" if self._done else "running"
        return f"<{type(self).__name__} {len(self.results)}/{self.total} hosts {state}>"


class FleetRun(_RunBase):
    """A fleet run (from :func:`run_many`): an iterator of :class:`HostResult` in the order the
    hosts finish. :attr:`summary`, :meth:`to_pandas` and the notebook display run it to its end
    first (the results not iterated yet are kept for the iteration). Ctrl-C cancels the run.
    As a context manager, leaving the block cancels what is still running and waits until it
    is released on the servers."""

    def __init__(self, native: Any, total: int, show_progress: bool) -> None:
        super().__init__(native, total, show_progress)
        self._lock = threading.Lock()

    def _fetch(self, timeout: Optional[float] = None) -> bool:
        """Takes the next result from the run; False once there is none."""
        seen = len(self.results)
        with self._lock:
            if len(self.results) != seen:
                return True  # another thread took one meanwhile
            if self._done:
                return False
            try:
                item = self._native.next(timeout)
            except KeyboardInterrupt:
                self._native.cancel()
                raise
            if item is None:
                # Hosts cut off by a deadline or a cancellation release their work in the
                # background: wait for it, so a program that ends next leaves nothing behind.
                self._native.wait_for_cleanup(CLOSE_GRACE)
            return self._received(item) is not None

    def __iter__(self) -> Iterator[HostResult]:
        return self

    def __next__(self) -> HostResult:
        while self._cursor >= len(self.results):
            if not self._fetch():
                raise StopIteration
        result = self.results[self._cursor]
        self._cursor += 1
        return result

    def next_result(self, timeout: Optional[float] = None) -> Optional[HostResult]:
        """The next result of the iteration, or None once there is none; with ``timeout``
        (seconds), :class:`~psremote.OperationTimeoutError` when no host finished in time
        (the run goes on)."""
        timeout = check_timeout(timeout)
        while self._cursor >= len(self.results):
            if not self._fetch(timeout):
                return None
        result = self.results[self._cursor]
        self._cursor += 1
        return result

    def wait(self) -> "FleetRun":
        """Runs to the end (every host has its result); returns the run."""
        while self._fetch():
            pass
        return self

    @property
    def summary(self) -> FleetSummary:
        """How the hosts fared (runs to the end first)."""
        return self.wait()._summary()

    def to_pandas(self, per: str = "object") -> Any:
        """A pandas DataFrame (runs to the end first): one row per output object, with
        ``PSComputerName``, its properties and ``Value`` for a value that is not an object
        (``per="object"``; hosts without output have no row), or one row per host with its
        status, time, attempts, object count, pipeline state or exit code, error class and
        reason (``per="host"``). Needs pandas (``pip install 'psremote[pandas]'``)."""
        return _frame(self.wait().results, per)

    def _repr_html_(self) -> str:
        return self.summary._repr_html_()

    def close(self) -> None:
        """Cancels what is still running, collects the remaining results and waits (bounded)
        until what the cut-off hosts had opened is released."""
        if self._done:
            return
        self._native.cancel()
        self.wait()

    def __enter__(self) -> "FleetRun":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncFleetRun(_RunBase):
    """The asyncio twin of :class:`FleetRun` (from :func:`psremote.aio.run_many`): ``async for``
    gives the results as hosts finish. :attr:`summary` and the notebook display show the
    results so far; ``await run.wait()`` runs to the end; :meth:`to_pandas` needs a finished
    run. Cancelling the task that iterates cancels the run (no result is lost: the rest arrive
    as :class:`~psremote.ClosedError` results). ``async with`` cancels and releases what is
    still running on exit."""

    def __init__(self, native: Any, total: int, show_progress: bool) -> None:
        super().__init__(native, total, show_progress)
        self._pending: Optional["asyncio.Future[Any]"] = None

    async def _fetch(self) -> bool:
        if self._done:
            return False
        if self._pending is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            self._native.next_async(future)
            self._pending = future
        try:
            item = await asyncio.shield(self._pending)
        except asyncio.CancelledError:
            # The result on its way stays in _pending for the next call.
            self._native.cancel()
            raise
        self._pending = None
        if item is None:
            await _wait_native(self._native.wait_for_cleanup_async, CLOSE_GRACE)
        return self._received(item) is not None

    def __aiter__(self) -> AsyncIterator[HostResult]:
        return self

    async def __anext__(self) -> HostResult:
        while self._cursor >= len(self.results):
            if not await self._fetch():
                raise StopAsyncIteration
        result = self.results[self._cursor]
        self._cursor += 1
        return result

    async def wait(self) -> "AsyncFleetRun":
        """Runs to the end; returns the run."""
        while await self._fetch():
            pass
        return self

    @property
    def summary(self) -> FleetSummary:
        """How the hosts fared so far (``pending`` counts those still running)."""
        return self._summary()

    def to_pandas(self, per: str = "object") -> Any:
        """As :meth:`FleetRun.to_pandas`, for a finished run (iterate to the end or
        ``await run.wait()`` first)."""
        if not self._done:
            raise PSRemoteError("the run has not finished: iterate it to the end or await run.wait() before to_pandas()")
        return _frame(self.results, per)

    def _repr_html_(self) -> str:
        return self._summary()._repr_html_()

    async def close(self) -> None:
        """Cancels what is still running, collects the remaining results and waits (bounded)
        until what the cut-off hosts had opened is released."""
        if self._done:
            return
        self._native.cancel()
        await self.wait()

    async def __aenter__(self) -> "AsyncFleetRun":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def _retrieve(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled():
        future.exception()


async def _wait_native(start: Any, *args: Any) -> Any:
    future = asyncio.get_running_loop().create_future()
    future.add_done_callback(_retrieve)
    start(future, *args)
    return await future


def run_many(
    hosts: HostsArg,
    script: Optional[str] = None,
    *,
    executable: Optional[str] = None,
    args: Iterable[Any] = (),
    throttle: int = DEFAULT_THROTTLE,
    timeout: Optional[float] = None,
    connect_retries: int = 0,
    retry_delay: float = 1.0,
    max_output: Optional[int] = DEFAULT_MAX_OUTPUT,
    show_progress: bool = False,
    stdin: Optional[StdinData] = None,
    environment: Optional[Mapping[str, str]] = None,
    working_directory: Union[str, "os.PathLike[str]", None] = None,
    codepage: Optional[int] = UTF8_CODEPAGE,
    no_profile: bool = False,
    skip_cmd_shell: bool = False,
    **client_options: Any,
) -> FleetRun:
    """Runs ``script`` (PowerShell), or ``executable`` with ``args`` in a cmd shell, on every
    host, at most ``throttle`` at once, and returns a :class:`FleetRun`: iterate it for each
    host's :class:`HostResult` as the hosts finish.

    ``hosts``: a host name, a comma-separated list or a range pattern (``web[01-40].corp.example``),
    a path-like naming a host file, or a list of those; a list may also hold mappings (``{"host":
    "a", "port": 5986, "https": True, "username": ..., "password": ...}``, ``"url"`` instead of
    ``"host"``, ``"name"`` for the name results carry) and ``(host, options)`` pairs, whose
    options override the shared ones for that host. See :func:`expand_hosts`.

    ``client_options``: what :class:`psremote.Client` takes (``username``, ``password``,
    ``auth``, ``port``, ``https``, ``trusted_hosts``, TLS options...), shared by every host; a
    shared ``url`` gives the scheme, port and path, each host's name its host part. Every
    host's options are checked here, before anything is contacted (a
    :class:`~psremote.ConfigurationError` names the host).

    ``timeout``: seconds for one host, from its connection to its pool's close (a host past it
    fails with :class:`~psremote.OperationTimeoutError`); ``connect_retries`` further attempts,
    ``retry_delay`` seconds apart, at a host whose connection could not be made (only then);
    ``max_output``: the bytes a cmd command may write (64 MiB by default); ``stdin``,
    ``environment``, ``working_directory``, ``codepage``, ``no_profile`` and ``skip_cmd_shell``
    as :meth:`psremote.Client.run_cmd` takes them (cmd commands only); ``configuration_name``
    (a client option) names the session configuration every host's pool opens, such as a JEA
    endpoint; ``show_progress``: a bar across the hosts on stderr (tqdm when installed, text lines
    otherwise)."""
    cmd = dict(
        stdin=stdin,
        environment=environment,
        working_directory=working_directory,
        codepage=codepage,
        no_profile=no_profile,
        skip_cmd_shell=skip_cmd_shell,
    )
    fleet, total = _start(
        hosts, script, executable, args, throttle, timeout, connect_retries, retry_delay, max_output, client_options, cmd
    )
    return FleetRun(fleet, total, show_progress)


def run_many_async(
    hosts: HostsArg,
    script: Optional[str] = None,
    *,
    executable: Optional[str] = None,
    args: Iterable[Any] = (),
    throttle: int = DEFAULT_THROTTLE,
    timeout: Optional[float] = None,
    connect_retries: int = 0,
    retry_delay: float = 1.0,
    max_output: Optional[int] = DEFAULT_MAX_OUTPUT,
    show_progress: bool = False,
    stdin: Optional[StdinData] = None,
    environment: Optional[Mapping[str, str]] = None,
    working_directory: Union[str, "os.PathLike[str]", None] = None,
    codepage: Optional[int] = UTF8_CODEPAGE,
    no_profile: bool = False,
    skip_cmd_shell: bool = False,
    **client_options: Any,
) -> AsyncFleetRun:
    """:func:`run_many` for asyncio (``psremote.aio.run_many``): ``async for r in
    run_many(...)``. The run starts at once; no event loop is needed until it is iterated."""
    cmd = dict(
        stdin=stdin,
        environment=environment,
        working_directory=working_directory,
        codepage=codepage,
        no_profile=no_profile,
        skip_cmd_shell=skip_cmd_shell,
    )
    fleet, total = _start(
        hosts, script, executable, args, throttle, timeout, connect_retries, retry_delay, max_output, client_options, cmd
    )
    return AsyncFleetRun(fleet, total, show_progress)
