"""Deadlines and output limits of the calls that run something to the end (``run_ps``,
``run_cmd``, ``runspace_pool()``), and how long a closing client waits for its operations."""

from __future__ import annotations

import math
import time
from typing import Optional

from psremote.exceptions import ConfigurationError, OperationTimeoutError

#: The stdout and stderr bytes (together) ``run_cmd`` keeps unless told otherwise: 64 MiB.
DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024
#: How long a closing client waits for the operations it ends, and again for the Signal and
#: Delete requests that release their remote work.
CLOSE_GRACE = 30.0


def check_timeout(timeout: Optional[float]) -> Optional[float]:
    """A deadline in seconds: a positive number, or None for none."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigurationError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    return float(timeout)


def check_max_output(max_output: Optional[int]) -> Optional[int]:
    """An output limit in bytes: a positive int, or None for no limit."""
    if max_output is None:
        return None
    if isinstance(max_output, bool) or not isinstance(max_output, int) or max_output <= 0:
        raise ConfigurationError(f"max_output must be a positive int of bytes or None, got {max_output!r}")
    return max_output


class Deadline:
    """The time left of a call's ``timeout`` (None: no deadline)."""

    def __init__(self, timeout: Optional[float], what: str) -> None:
        self.timeout = check_timeout(timeout)
        self.what = what
        self._end = None if self.timeout is None else time.monotonic() + self.timeout

    def left(self) -> Optional[float]:
        """Seconds left (None: no deadline); raises the timeout once none are left."""
        if self._end is None:
            return None
        left = self._end - time.monotonic()
        if left <= 0:
            raise self.expired()
        return left

    def expired(self) -> OperationTimeoutError:
        return OperationTimeoutError(f"{self.what} did not finish within {self.timeout:g} s")
