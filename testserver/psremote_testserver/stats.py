"""Counters reported by ``GET /_control/state``."""

from __future__ import annotations

import threading
from typing import Dict

COUNTERS = ("connections_opened", "requests", "auth_failures", "plaintext_after_auth_refused", "bad_seal")


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Dict[str, int] = {name: 0 for name in COUNTERS}

    def bump(self, name: str) -> None:
        with self._lock:
            self._values[name] += 1

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._values)
