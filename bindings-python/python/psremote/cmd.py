"""WinRS cmd shells (blocking API): :class:`CmdShell` and the :class:`CmdProcess` commands
running in it. Open a shell with :meth:`psremote.Client.cmd_shell`; the asyncio twins are
:class:`psremote.aio.AsyncCmdShell` and :class:`psremote.aio.AsyncCmdProcess`.

Output arrives as the command writes it, as :class:`~psremote.records.CmdChunk` tuples
``(stream, data)``: iterate the process, or :meth:`CmdProcess.read` with a timeout.
:meth:`CmdProcess.wait` collects whatever has not been read into a
:class:`~psremote.records.CmdResult`. Shells use the UTF-8 code page (65001) unless told
otherwise, so output decodes as UTF-8.

Windows' faults come as :class:`~psremote.WSManFault` with the server's ``code``: for example
2150858843 (``INVALID_SELECTORS``) when the shell or the command no longer exists on the
server, 87 (``ERROR_INVALID_PARAMETER``) for a request the server rejects, 2147942402 when the
program is not found (with ``skip_cmd_shell``).
"""

from __future__ import annotations

import collections
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Deque, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from psremote import _fork, _logging
from psremote.exceptions import ClosedError, ConfigurationError, OperationTimeoutError, PSRemoteError
from psremote.records import CmdChunk, CmdResult

if TYPE_CHECKING:
    from psremote.client import Client

__all__ = ["CmdProcess", "CmdShell", "INVALID_SELECTORS", "UTF8_CODEPAGE"]

_log = logging.getLogger("psremote.client")

#: The code page new shells ask for unless told otherwise: UTF-8.
UTF8_CODEPAGE = 65001
#: The WS-Man fault code (:attr:`psremote.WSManFault.code`) for a shell or command id the
#: server does not know, e.g. a shell that was deleted or timed out.
INVALID_SELECTORS = 2150858843

#: What ``stdin`` and ``send`` accept; a str is sent as UTF-8.
StdinData = Union[bytes, bytearray, memoryview, str]
#: The native arguments of a shell: environment, working directory, code page, no_profile, idle_timeout.
ShellArgs = Tuple[List[Tuple[str, str]], Optional[str], Optional[int], bool, Optional[float]]


def _stdin_bytes(data: Optional[StdinData], what: str = "stdin") -> Optional[bytes]:
    if data is None:
        return None
    if isinstance(data, str):
        return data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes or str, not {type(data).__name__}")
    return bytes(data)


def _cmd_arguments(executable: str, args: Iterable[Any], stdin: Optional[StdinData]) -> Tuple[str, List[str], Optional[bytes]]:
    if not isinstance(executable, str) or not executable:
        raise ConfigurationError("a command needs the executable's name as a non-empty str")
    if isinstance(args, (str, bytes)):
        raise TypeError("args must be a sequence of arguments, not a single string (use args=[...])")
    arguments = []
    for arg in args:
        if not isinstance(arg, (str, int, float)) or isinstance(arg, bool):
            raise TypeError(f"command arguments must be str (or numbers), not {type(arg).__name__}")
        arguments.append(str(arg))
    return executable, arguments, _stdin_bytes(stdin)


def _shell_options(
    environment: Optional[Mapping[str, str]],
    working_directory: Union[str, "os.PathLike[str]", None],
    codepage: Optional[int],
    no_profile: bool,
    idle_timeout: Optional[float],
) -> ShellArgs:
    """Checks the options of a new shell and returns them as the native module takes them."""
    env: List[Tuple[str, str]] = []
    if environment is not None:
        if not isinstance(environment, Mapping):
            raise TypeError(f"environment must be a mapping of names to values, not {type(environment).__name__}")
        for name, value in environment.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"environment names and values must be str, got {name!r}: {value!r}")
            if not name:
                raise ConfigurationError("an environment variable needs a non-empty name")
            env.append((name, value))
    directory = os.fspath(working_directory) if working_directory is not None else None
    if directory is not None and not isinstance(directory, str):
        raise TypeError("working_directory must be a str or a path")
    if codepage is not None:
        if isinstance(codepage, bool) or not isinstance(codepage, int) or not 0 < codepage <= 0xFFFFFFFF:
            raise ConfigurationError(f"codepage must be a positive int (65001 is UTF-8) or None, got {codepage!r}")
    if idle_timeout is not None:
        if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float)) or not 0 < idle_timeout < 1e9:
            raise ConfigurationError(f"idle_timeout must be a positive number of seconds or None, got {idle_timeout!r}")
        idle_timeout = float(idle_timeout)
    return env, directory, codepage, bool(no_profile), idle_timeout


def _check_timeout(timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout or timeout < 0:
        raise ConfigurationError(f"timeout must be a number of seconds (0 or more) or None, got {timeout!r}")
    return float(timeout)


def _result(chunks: Iterable[CmdChunk], exit_code: Optional[int], process_id: str) -> CmdResult:
    if exit_code is None:
        raise ClosedError(f"command {process_id} was terminated before it reported an exit code")
    stdout = b"".join(c.data for c in chunks if c.stream == "stdout")
    stderr = b"".join(c.data for c in chunks if c.stream == "stderr")
    return CmdResult(stdout, stderr, exit_code)


class CmdProcess:
    """A command running in a :class:`CmdShell` (from :meth:`CmdShell.start`).

    * Output: ``for stream, data in process:`` yields :class:`~psremote.records.CmdChunk`
      tuples as they arrive and ends when the command has ended; :meth:`read` takes one with a
      timeout; :meth:`wait` collects the rest into a :class:`~psremote.records.CmdResult`.
      Chunks already taken are not in that result.
    * Input: :meth:`send` writes to stdin (bytes, or str as UTF-8) in as many pieces as you
      like; ``end=True`` (or :meth:`close_stdin`) closes it.
    * :meth:`ctrl_c` interrupts the command, which then ends as it chooses (its exit code
      tells); :meth:`terminate` stops and releases it at once: the output ends after what had
      already arrived, and the exit code stays None unless the server reported one first.

    One thread reads at a time; any other thread may send, interrupt or terminate meanwhile.
    A blocking call releases the GIL, and Ctrl-C interrupts it without losing output (the
    remote command keeps running; leaving a ``with`` block terminates it). Leaving a ``with``
    block or dropping the object releases a command that is still running.
    """

    def __init__(self, native: Any, shell: "CmdShell", executable: str) -> None:
        self._native = native
        self._shell = shell
        self._executable = executable
        self._generation = _fork.generation()
        self._pushback: Deque[CmdChunk] = collections.deque()
        self._finished = False
        #: The server's id for the command.
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
        """Whether the output has ended (all of it was read)."""
        return self._finished and not self._pushback

    def read(self, timeout: Optional[float] = None) -> Optional[CmdChunk]:
        """The next chunk of output, or None once the command has ended. With ``timeout``
        (seconds), raises :class:`~psremote.OperationTimeoutError` when nothing arrived in
        time; nothing is lost, and the command keeps running."""
        self._check()
        if self._pushback:
            return self._pushback.popleft()
        if self._finished:
            return None
        chunk = self._native.next_chunk(_check_timeout(timeout))
        if chunk is None:
            self._finished = True
            return None
        return CmdChunk(*chunk)

    def __iter__(self) -> Iterator[CmdChunk]:
        return self

    def __next__(self) -> CmdChunk:
        chunk = self.read()
        if chunk is None:
            raise StopIteration
        return chunk

    def send(self, data: StdinData, end: bool = False) -> None:
        """Writes ``data`` to the command's stdin (a str as UTF-8); ``end=True`` closes stdin
        afterwards. Raises :class:`~psremote.ClosedError` once the command has ended."""
        payload = _stdin_bytes(data, "data")
        self._check()
        self._native.send_stdin(payload, bool(end))

    def close_stdin(self) -> None:
        """Closes stdin, so a command that reads it to the end can finish."""
        self.send(b"", end=True)

    def ctrl_c(self) -> None:
        """Sends Ctrl-C (WinRS signal ``ctrl_c``). Does nothing once the command has ended."""
        self._check()
        self._native.ctrl_c()

    def terminate(self) -> None:
        """Stops the command and releases it on the server. Calling it again does nothing."""
        self._check()
        self._native.terminate()

    def wait(self, timeout: Optional[float] = None) -> CmdResult:
        """Reads until the command ends and returns the output not read yet with the exit code.

        With ``timeout`` (seconds), raises :class:`~psremote.OperationTimeoutError` when the
        command is still running then; what was gathered stays for the next read or wait.
        Raises :class:`~psremote.ClosedError` when the command was terminated before it
        reported an exit code."""
        limit = _check_timeout(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        taken: List[CmdChunk] = []
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                chunk = self.read(left)
                if chunk is None:
                    break
                taken.append(chunk)
        except BaseException:
            # A timeout or Ctrl-C: the output gathered so far goes back, nothing is lost.
            self._pushback.extendleft(reversed(taken))
            raise
        return _result(taken, self.exit_code, self.id)

    def __enter__(self) -> "CmdProcess":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._finished or self._generation != _fork.generation():
            return
        try:
            self.terminate()
        except PSRemoteError as e:
            _logging.log(logging.DEBUG, "cannot terminate the command", _log, command=self.id, error=str(e))

    def __repr__(self) -> str:
        state = f"exit_code={self.exit_code}" if self._finished else "running"
        return f"<CmdProcess {self.id} {self._executable!r} {state}>"


class CmdShell:
    """An open cmd shell (WinRS): from :meth:`psremote.Client.cmd_shell`. Commands started in
    it share its environment, working directory and code page. Close it with :meth:`close` or
    a ``with`` block; a shell that is dropped is deleted on the server in the background.
    May be shared between threads."""

    def __init__(self, native: Any, client: Optional[Client] = None) -> None:
        self._native = native
        self._client = client
        self._closed = False
        self._generation = _fork.generation()
        #: The server's id for the shell.
        self.id: str = native.id

    def _check(self) -> None:
        _fork.check(self._generation, "cmd shell")
        if self._closed:
            raise ClosedError(f"cmd shell {self.id} is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self, executable: str, args: Iterable[Any] = (), *, skip_cmd_shell: bool = False) -> CmdProcess:
        """Starts ``executable`` with ``args`` and returns the running :class:`CmdProcess`.

        The server joins the executable and the arguments with spaces into one command line
        and runs it through ``cmd.exe /c``, so quote arguments with spaces yourself.
        ``skip_cmd_shell=True`` (``WINRS_SKIP_CMD_SHELL``) starts the program directly (then
        ``executable`` must name a program, not a shell built-in)."""
        executable, arguments, _ = _cmd_arguments(executable, args, None)
        self._check()
        native = self._native.start(executable, arguments, bool(skip_cmd_shell))
        return CmdProcess(native, self, executable)

    def attach(self, command_id: Optional[str] = None) -> CmdProcess:
        """A :class:`CmdProcess` for a command this shell already runs, by the id the server
        gave it (``proc.id`` of a process whose object is gone): reading it receives the output
        the server still holds. An id the server does not know raises :class:`NotFoundError` on
        the first read. ``None`` reads the shell's own output streams (shell plugins that write
        at shell level; a cmd shell refuses it with a :class:`WSManFault`)."""
        self._check()
        native = self._native.attach(command_id)
        return CmdProcess(native, self, command_id or "")

    def run(
        self, executable: str, args: Iterable[Any] = (), stdin: Optional[StdinData] = None, *, skip_cmd_shell: bool = False
    ) -> CmdResult:
        """Runs a command to the end and returns its :class:`~psremote.records.CmdResult`.
        ``stdin`` (bytes, or str as UTF-8), when given, is sent and stdin closed (``b""``
        closes it without data); without it nothing is sent, so a command that reads stdin
        waits for it."""
        data = _stdin_bytes(stdin)
        with self.start(executable, args, skip_cmd_shell=skip_cmd_shell) as process:
            if data is not None:
                process.send(data, end=True)
            return process.wait()

    def close(self) -> None:
        """Deletes the shell on the server (its commands end with it). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._generation != _fork.generation():
            return  # the parent's shell: nothing of it may be touched in a forked child
        self._native.close()

    def __enter__(self) -> "CmdShell":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as e:  # noqa: BLE001 - the exception already propagating matters more
            _logging.log(logging.WARNING, "cannot close the cmd shell", _log, shell=self.id, error=str(e))

    def __repr__(self) -> str:
        return f"<CmdShell {self.id}{' closed' if self._closed else ''}>"
