"""One running command of a cmd shell: a child process with piped stdio.

Reader threads move stdout/stderr into buffers and a waiter thread records the
exit code; all of them notify one Condition, which Receive waits on (long
poll, no busy loop). Each command runs in its own session, so signals go to
its whole process group.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence


STREAMS = ("stdout", "stderr")
# How long Done waits for the pipes to close after the process itself exited
# (a background grandchild may keep them open forever).
PIPE_GRACE = 1.0
# When output arrives while the process is still running, wait this long for
# it to finish (or for a full reply's worth) so short commands complete in one Receive.
COALESCE = 0.01


@dataclass
class Chunk:
    data: Dict[str, bytes] = field(default_factory=dict)
    done: bool = False
    exit_code: Optional[int] = None


class CmdProcess:
    def __init__(self, command_id: str, argv: Sequence[str], cwd: str, env: Dict[str, str]) -> None:
        self.command_id = command_id
        # Raises OSError when the program cannot be started; the caller maps that to a fault.
        self._proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
            bufsize=0,
        )
        self._cond = threading.Condition()
        self._buffers = {name: bytearray() for name in STREAMS}
        self._eof = {name: False for name in STREAMS}
        self._exit_code: Optional[int] = None
        self._exited_at: Optional[float] = None
        self._reaped = False
        self._stdin_lock = threading.Lock()
        self._stdin_closed = False
        threads: List[threading.Thread] = [
            threading.Thread(target=self._read, args=("stdout", self._proc.stdout), daemon=True),
            threading.Thread(target=self._read, args=("stderr", self._proc.stderr), daemon=True),
            threading.Thread(target=self._wait, daemon=True),
        ]
        for thread in threads:
            thread.name = f"cmd-{command_id[:8]}-{thread.name}"
            thread.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    # -- background threads ------------------------------------------------------------------
    def _read(self, name: str, pipe) -> None:
        fd = pipe.fileno()
        try:
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                with self._cond:
                    if data:
                        self._buffers[name] += data
                    else:
                        self._eof[name] = True
                    self._cond.notify_all()
                if not data:
                    break
        finally:
            pipe.close()

    def _wait(self) -> None:
        code = self._proc.wait()
        # A process killed by a signal reports 128 + signal number, as a POSIX shell would.
        exit_code = code if code >= 0 else 128 - code
        with self._cond:
            self._exit_code = exit_code
            self._exited_at = time.monotonic()
            self._reaped = True
            self._cond.notify_all()

    # -- state (call with self._cond held) ------------------------------------------------------
    def _finished(self, now: float) -> bool:
        if self._exit_code is None:
            return False
        return all(self._eof.values()) or now >= self._exited_at + PIPE_GRACE

    def _next_wake(self, now: float, deadline: float) -> float:
        wake = deadline
        if self._exited_at is not None:
            wake = min(wake, self._exited_at + PIPE_GRACE)
        return max(0.0, wake - now)

    # -- operations -------------------------------------------------------------------------------
    def receive(self, streams: Sequence[str], timeout: float, max_bytes: int) -> Optional[Chunk]:
        """Wait up to ``timeout`` s for output or completion; None when nothing happened.

        At most ``max_bytes`` raw bytes are taken (stdout first); the rest stays
        for the next call. ``done`` is set only once the process has exited and
        everything in ``streams`` was delivered.
        """
        wanted = [name for name in streams if name in self._buffers]
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                pending = any(self._buffers[name] for name in wanted)
                if pending or self._finished(now):
                    break
                if now >= deadline:
                    return None
                self._cond.wait(self._next_wake(now, deadline))
            if pending and not self._finished(time.monotonic()):
                # Wait for more only while the reply has room for it: a stream of output goes out
                # in full replies at once, without a pause per Receive.
                coalesce_until = min(deadline, time.monotonic() + COALESCE)
                while (
                    not self._finished(time.monotonic())
                    and time.monotonic() < coalesce_until
                    and sum(len(self._buffers[name]) for name in wanted) < max_bytes
                ):
                    self._cond.wait(coalesce_until - time.monotonic())
            chunk = Chunk()
            left = max(max_bytes, 1)
            for name in wanted:
                buffer = self._buffers[name]
                take = min(len(buffer), left)
                if take:
                    chunk.data[name] = bytes(buffer[:take])
                    del buffer[:take]
                    left -= take
            remaining = any(self._buffers[name] for name in wanted)
            if self._finished(time.monotonic()) and not remaining:
                chunk.done = True
                chunk.exit_code = self._exit_code
            return chunk

    def write_stdin(self, data: bytes, end: bool) -> None:
        """Blocking write (a Send answers after the data reached the pipe); ignored once stdin is closed."""
        with self._stdin_lock:
            if self._stdin_closed:
                return
            try:
                view = memoryview(data)
                while view:  # raw pipe writes may be partial
                    written = self._proc.stdin.write(view)
                    view = view[written or 0 :]
                if end:
                    self._stdin_closed = True
                    self._proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                self._stdin_closed = True

    def send_signal(self, signum: int) -> None:
        with self._cond:
            group_alive = not self._reaped or not all(self._eof.values())
        if group_alive:
            try:
                os.killpg(self._proc.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def kill(self) -> None:
        """Kill the process group and close stdin; output threads end when the pipes close."""
        self.send_signal(signal.SIGKILL)
        if self._stdin_lock.acquire(timeout=5):
            try:
                if not self._stdin_closed:
                    self._stdin_closed = True
                    try:
                        self._proc.stdin.close()
                    except OSError:
                        pass
            finally:
                self._stdin_lock.release()
