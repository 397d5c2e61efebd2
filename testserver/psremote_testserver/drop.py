"""A connection cut in the middle of a command (``--drop-connection send:N`` / ``receive:N``).

The Nth command-level Send (a ``<rsp:Stream>`` with a ``CommandId``: pipeline input) or the
Nth command-level Receive (a ``<rsp:DesiredStream>`` with a ``CommandId``: a pipeline's
output) is read and then dropped: the server closes the TCP connection without processing
the request or answering it, as a network failure or a proxy timing out would. Everything else
(the shell, the running command, its other connections) goes on, so a test can check what the
client cleans up afterwards through ``/_control/state``. Fires once.
"""

from __future__ import annotations

import re
import threading
from typing import Optional, Tuple

from .soap import ACTION_RECEIVE, ACTION_SEND

_ACTION = re.compile(rb"<(?:\w+:)?Action[^>]*>\s*([^<\s]+)\s*<")
_COMMAND_ID = re.compile(rb"<(?:\w+:)?(?:Stream|DesiredStream)\b[^>]*\bCommandId=")
_ACTIONS = {"send": ACTION_SEND, "receive": ACTION_RECEIVE}


def parse(spec: str) -> Tuple[str, int]:
    """``send:N`` or ``receive:N`` (N >= 1) as (action URI, N); ValueError otherwise."""
    kind, _, count = spec.partition(":")
    if kind not in _ACTIONS or not count.isdigit() or int(count) < 1:
        raise ValueError(f"--drop-connection takes send:N or receive:N with N >= 1, not {spec!r}")
    return _ACTIONS[kind], int(count)


class ConnectionDrop:
    def __init__(self, spec: Optional[str]) -> None:
        self._target = parse(spec) if spec else None
        self._lock = threading.Lock()
        self._seen = 0

    def should_drop(self, plaintext: bytes) -> bool:
        """Whether this request is the one to drop (counts command-level requests of the action)."""
        if self._target is None:
            return False
        action, nth = self._target
        found = _ACTION.search(plaintext)
        if found is None or found.group(1).decode("ascii", "replace") != action or not _COMMAND_ID.search(plaintext):
            return False
        with self._lock:
            self._seen += 1
            return self._seen == nth
