"""Fork detection on the Python side: objects remember the fork generation they were created
in, and refuse to work in a forked child (their connections and the native runtime's threads
belong to the parent). The native module checks the process id too."""

from __future__ import annotations

import os

from psremote.exceptions import ClosedError

_generation = 0


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def generation() -> int:
    return _generation


def check(created_in: int, what: str) -> None:
    """Raises ClosedError when the object was created before a fork of this process."""
    if created_in != _generation:
        raise ClosedError(
            f"this {what} was created in the parent process before os.fork() and cannot be used in the child; "
            f"create a new psremote.Client in the child process (or use the 'spawn' multiprocessing start method)"
        )
