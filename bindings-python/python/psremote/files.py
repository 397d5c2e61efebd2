"""Copy and fetch (``Client.copy`` / ``Client.fetch`` and their asyncio twins): the argument
checks and the progress relay both faces share. The transfer itself is the core's.

A progress callback is ``callback(done, total)``: bytes done so far and the file's size (None
when not known yet). It runs on one of psremote's I/O threads, after each chunk; keep it short.
Raising (or returning ``False``) stops the transfer: the exception is re-raised by ``copy`` or
``fetch``, nothing half-written is kept and nothing is left on the server.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, Callable, List, Optional, TextIO, Tuple, Union

from psremote import _logging
from psremote._options import normalize_configuration_name
from psremote.exceptions import ConfigurationError, FileTransferError
from psremote.progress import _tqdm_class

__all__ = ["ProgressCallback", "TransferPath"]

#: A local or remote path: a ``str`` or an ``os.PathLike`` (a ``pathlib.Path``, or a
#: ``pathlib.PureWindowsPath`` for a Windows server).
TransferPath = Union[str, "os.PathLike[str]"]
#: ``callback(done, total)``: bytes so far and the file's size, or None while unknown.
ProgressCallback = Callable[[int, Optional[int]], Any]

_log = logging.getLogger("psremote.client")


def path_arg(name: str, value: Any) -> str:
    """A path argument as text: a ``str`` or a path-like, never empty."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str or a path-like object, not {type(value).__name__}")
    if not value:
        raise ConfigurationError(f"{name} must not be empty")
    return value


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover (unreachable)


class ProgressRelay:
    """The callable handed to the native transfer: calls the user's callback, draws a tqdm bar
    (``show_progress=True``; plain lines on ``stream`` when tqdm is not installed) and keeps
    the first exception, which stops the transfer."""

    def __init__(self, what: str, show_progress: bool, callback: Optional[ProgressCallback], stream: Optional[TextIO] = None) -> None:
        if callback is not None and not callable(callback):
            raise ConfigurationError(f"progress must be a callable(done, total) or None, not {type(callback).__name__}")
        self.what = what
        self.error: Optional[BaseException] = None
        self._callback = callback
        self._show = bool(show_progress)
        self._stream = stream if stream is not None else sys.stderr
        self._tqdm: Any = _tqdm_class() if self._show else None
        self._bar: Any = None
        self._last_tenth = -1
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._callback is not None or self._show

    def __call__(self, done: int, total: Optional[int]) -> bool:
        if self.error is not None:
            return False
        try:
            if self._callback is not None and self._callback(done, total) is False:
                raise _Stopped()
            if self._show:
                with self._lock:
                    self._draw(done, total)
        except BaseException as e:  # noqa: BLE001 - re-raised by the caller once the transfer stopped
            self.error = e
            return False
        return True

    def _draw(self, done: int, total: Optional[int]) -> None:
        if self._tqdm is not None:
            if self._bar is None:
                self._bar = self._tqdm(
                    total=total,
                    desc=self.what,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    file=self._stream if self._tqdm.__module__ == "tqdm.std" else None,
                    leave=True,
                )
            if total is not None and self._bar.total != total:
                self._bar.total = total
            self._bar.update(done - self._bar.n)
            return
        # Without tqdm: a line at each tenth (or each chunk while the size is unknown).
        tenth = done * 10 // total if total else -1
        if tenth == self._last_tenth and tenth != -1:
            return
        self._last_tenth = tenth
        of = f" of {_human(total)} ({done * 100 // total}%)" if total else ""
        self._stream.write(f"{self.what}: {_human(done)}{of}\n")
        self._stream.flush()

    def native(self) -> Optional["ProgressRelay"]:
        """What to hand to the native call: this relay, or None when nobody listens."""
        return self if self.active else None

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def finish(self, outcome: Tuple[str, int, str, List[str]]) -> str:
        """The path a finished transfer returns; the server's warnings go to the log."""
        self.close()
        path, size, sha1, warnings = outcome
        for warning in warnings:
            _logging.log(logging.WARNING, "the server warned during a file transfer", _log, warning=warning)
        _logging.log(logging.DEBUG, f"{self.what}: done", _log, path=path, bytes=size, sha1=sha1)
        return path

    def reraise(self, exc: BaseException) -> None:
        """Raises the callback's exception (chained to the transfer's) when it is what stopped
        the transfer; otherwise returns."""
        self.close()
        if self.error is None or not isinstance(exc, FileTransferError) or exc.kind != "Cancelled":
            return
        error = self.error
        if isinstance(error, _Stopped):
            stopped = FileTransferError(f"{self.what}: stopped by the progress callback")
            # The same facts as the transfer's own error: kind "Cancelled", its side and path.
            stopped.kind, stopped.side, stopped.path = exc.kind, exc.side, exc.path
            raise stopped from exc
        raise error.with_traceback(error.__traceback__) from exc


class _Stopped(Exception):
    """The progress callback returned False."""


def transfer_arguments(
    what: str,
    src: Any,
    dest: Any,
    *,
    expand_variables: bool,
    show_progress: bool,
    progress: Optional[ProgressCallback],
    timeout: Optional[float],
    configuration_name: Optional[str],
    default_configuration: str,
) -> Tuple[str, str, bool, Optional[float], str, ProgressRelay]:
    """Checks the arguments of a copy or fetch; returns what the native call takes."""
    source = path_arg("src", src)
    destination = path_arg("dest", dest)
    if not isinstance(expand_variables, bool):
        raise ConfigurationError(f"expand_variables must be a bool, not {type(expand_variables).__name__}")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigurationError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
        timeout = float(timeout)
    name = normalize_configuration_name(configuration_name or default_configuration)
    relay = ProgressRelay(f"{what} {os.path.basename(source) or source}", show_progress, progress)
    return source, destination, expand_variables, timeout, name, relay
