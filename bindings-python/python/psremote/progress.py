"""Showing Write-Progress records: tqdm bars when tqdm is installed, text lines otherwise.

``invoke(show_progress=True)`` uses it; with ``start()`` feed it yourself::

    with ProgressDisplay() as display:
        for event in handle:
            if event.kind == "progress":
                display.update(event.value)
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional, TextIO

from psremote.records import ProgressRecord

__all__ = ["HostsProgress", "ProgressDisplay"]


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _tqdm_class() -> Any:
    try:
        from tqdm.std import tqdm as std_tqdm  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None
    if _in_notebook():
        try:
            import ipywidgets  # type: ignore[import-not-found,unused-ignore]  # noqa: F401  (tqdm.notebook draws with it)
            from tqdm.notebook import tqdm as notebook_tqdm  # type: ignore[import-untyped,unused-ignore]

            return notebook_tqdm
        except ImportError:
            pass
    return std_tqdm


class ProgressDisplay:
    """One bar (or text line) per progress activity; a record with ``completed`` closes it.

    ``use_tqdm=None`` picks tqdm when it is installed; ``stream`` defaults to ``sys.stderr``.
    """

    def __init__(self, stream: Optional[TextIO] = None, *, use_tqdm: Optional[bool] = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        tqdm_class = _tqdm_class() if use_tqdm in (None, True) else None
        if use_tqdm and tqdm_class is None:
            raise ImportError("use_tqdm=True needs the tqdm package: pip install tqdm")
        self._tqdm: Any = tqdm_class
        self._bars: Dict[int, Any] = {}
        self._last_text: Dict[int, str] = {}

    def update(self, record: ProgressRecord) -> None:
        key = record.activity_id
        if self._tqdm is not None:
            self._update_bar(key, record)
        else:
            self._update_text(key, record)

    def _update_bar(self, key: int, record: ProgressRecord) -> None:
        bar = self._bars.get(key)
        if record.completed:
            if bar is not None:
                if bar.n < 100 and record.percent_complete >= 0:
                    bar.update(100 - bar.n)
                bar.close()
                del self._bars[key]
            return
        if bar is None:
            bar = self._tqdm(
                total=100,
                desc=record.activity,
                unit="%",
                file=self.stream if self._tqdm.__module__ == "tqdm.std" else None,
                leave=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}",
            )
            self._bars[key] = bar
        if record.percent_complete >= 0 and record.percent_complete != bar.n:
            bar.update(record.percent_complete - bar.n)
        status = record.status_description
        if record.current_operation:
            status = f"{status} ({record.current_operation})"
        bar.set_postfix_str(status, refresh=True)

    def _update_text(self, key: int, record: ProgressRecord) -> None:
        if record.completed:
            text = f"{record.activity}: done"
        else:
            percent = f" [{record.percent_complete}%]" if record.percent_complete >= 0 else ""
            op = f" ({record.current_operation})" if record.current_operation else ""
            text = f"{record.activity}: {record.status_description}{op}{percent}"
        if self._last_text.get(key) == text:
            return
        self._last_text[key] = text
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        self._last_text.clear()

    def __enter__(self) -> "ProgressDisplay":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class HostsProgress:
    """A bar across a fleet's hosts (``run_many(..., show_progress=True)``): one step per host
    that reported, with the counts so far. tqdm when it is installed (``use_tqdm=None``), else a
    text line on ``stream`` (``sys.stderr``) at each tenth of the hosts and at the end."""

    def __init__(self, total: int, stream: Optional[TextIO] = None, *, use_tqdm: Optional[bool] = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        tqdm_class = _tqdm_class() if use_tqdm in (None, True) else None
        if use_tqdm and tqdm_class is None:
            raise ImportError("use_tqdm=True needs the tqdm package: pip install tqdm")
        self.counts: Dict[str, int] = {"Succeeded": 0, "Failed": 0, "Unreachable": 0}
        self.done = 0
        self._last_tenth = 0
        self._bar: Any = None
        if tqdm_class is not None:
            self._bar = tqdm_class(
                total=total,
                desc="hosts",
                unit="host",
                file=self.stream if tqdm_class.__module__ == "tqdm.std" else None,
                leave=True,
            )

    def _counts(self) -> str:
        c = self.counts
        return f"ok {c['Succeeded']}, failed {c['Failed']}, unreachable {c['Unreachable']}"

    def update(self, status: str) -> None:
        """One more host reported, with its status (``"Succeeded"``, ``"Failed"``, ``"Unreachable"``)."""
        self.done += 1
        self.counts[status] = self.counts.get(status, 0) + 1
        if self._bar is not None:
            self._bar.set_postfix_str(self._counts(), refresh=False)
            self._bar.update(1)
            return
        tenth = self.done * 10 // self.total if self.total else 10
        if tenth == self._last_tenth and self.done != self.total:
            return
        self._last_tenth = tenth
        self.stream.write(f"hosts: {self.done}/{self.total} ({self._counts()})\n")
        self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "HostsProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
