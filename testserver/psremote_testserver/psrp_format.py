"""PowerShell's formatting, as ``Out-Default`` and ``Out-String`` print objects (PowerShell 7).

Enough of the format system to show what an interactive session shows:

* the default views of a few known types: files and directories (``Mode LastWriteTime Length
  Name`` grouped under ``Directory: ...``), processes (``NPM(K) PM(M) WS(M) CPU(s) Id SI
  ProcessName``), ``PathInfo`` (``Path``) and services (``Status Name DisplayName``);
* any other object with at most four properties as a table, with more as a list
  (``Name : Value``, labels padded to the longest);
* scalars as their text; error records in PowerShell 7's concise view (``Command: message``).

Tables are sized as PowerShell sizes them: a column without a declared width takes the width
of its widest cell (the console formatter waits for the first objects to measure them; this one
measures the whole run of objects of one view), then ColumnWidthManager's rule fits the table to
the line: the rightmost visible column shrinks to what is left, and is hidden when less than one
cell would remain. A cell longer than its column is cut with an ellipsis ("…", or "..." in the
Windows PowerShell 5.1 style, which also pads the last column); right-aligned cells keep their
end ("…nd"), others their start. Rows of a view declared ``wrap`` (the file view) wrap their
cells onto more lines instead. Numbers are right-aligned.

A run of objects of one view is one block; a table block starts with an empty line and ends
with one, each list entry starts with one and the list ends with one, scalars print bare.
"""

from __future__ import annotations

import datetime
import decimal
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

from psrpcore.types import ErrorRecord, PSObject, PSSecureString

ELLIPSIS = "\u2026"
LEFT, RIGHT = "left", "right"


@dataclass
class Column:
    label: str
    value: Callable[[Any], str]
    width: int = 0  # 0: as wide as its widest cell
    align: str = LEFT


@dataclass
class TableView:
    columns: List[Column]
    wrap: bool = False
    group: Optional[Callable[[Any], str]] = None  # the "Directory: ..." grouping header


# -- values as text -----------------------------------------------------------------------------------------
def _datetime(value: datetime.datetime) -> str:
    """The en-US general date and long time (``G``): ``12/6/2026 1:05:09 PM``."""
    hour = value.hour % 12 or 12
    return f"{value.month}/{value.day}/{value.year} {hour}:{value.minute:02d}:{value.second:02d} {'AM' if value.hour < 12 else 'PM'}"


def _short_date_time(value: Any) -> str:
    """``{0,10:d} {0,8:t}``, the file view's LastWriteTime."""
    if not isinstance(value, datetime.datetime):
        return display(value)
    hour = value.hour % 12 or 12
    date = f"{value.month}/{value.day}/{value.year}"
    time = f"{hour}:{value.minute:02d} {'AM' if value.hour < 12 else 'PM'}"
    return f"{date:>10} {time:>8}"


def display(value: Any) -> str:
    """A property value as a table cell or list value shows it."""
    if value is None:
        return ""
    if isinstance(value, PSSecureString):  # its text is never shown, only its type's name
        return "System.Security.SecureString"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, datetime.datetime):
        return _datetime(value)
    if isinstance(value, float):
        return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(display(v) for v in value) + "}"
    if isinstance(value, PSObject) and not isinstance(value, (str, int, float, decimal.Decimal)):
        to_string = value.PSObject.to_string
        if to_string is not None:
            return str(to_string)
    return str(value)


def _get(obj: Any, name: str) -> Any:
    return getattr(obj, name, None)


def properties(obj: Any) -> List[Tuple[str, Any]]:
    if not isinstance(obj, PSObject):
        return []
    names: List[str] = []
    for prop in obj.PSObject.adapted_properties + obj.PSObject.extended_properties:
        if prop.name not in names:
            names.append(prop.name)
    return [(name, _get(obj, name)) for name in names]


def _is_scalar(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool, decimal.Decimal, datetime.datetime)):
        return True
    return not isinstance(value, PSObject) or not properties(value)


def _type_names(obj: Any) -> List[str]:
    return list(obj.PSObject.type_names) if isinstance(obj, PSObject) else []


# -- known views ---------------------------------------------------------------------------------------------
def _parent(item: Any) -> str:
    parent = display(_get(item, "PSParentPath"))
    return parent.split("::", 1)[1] if "::" in parent else parent


def _mb(name: str) -> Callable[[Any], str]:
    return lambda p: f"{(_get(p, name) or 0) / 1048576:,.2f}"


FILE_VIEW = TableView(
    [
        Column("Mode", lambda i: display(_get(i, "Mode")), 7),
        Column("LastWriteTime", lambda i: _short_date_time(_get(i, "LastWriteTime")), 26, RIGHT),
        Column("Length", lambda i: "" if _get(i, "PSIsContainer") else display(_get(i, "Length")), 14, RIGHT),
        Column("Name", lambda i: display(_get(i, "Name"))),
    ],
    wrap=True,
    group=lambda i: f"    Directory: {_parent(i)}",
)
PROCESS_VIEW = TableView(
    [
        Column("NPM(K)", lambda p: f"{(_get(p, 'NonpagedSystemMemorySize64') or 0) // 1024:,}", 7, RIGHT),
        Column("PM(M)", _mb("PrivateMemorySize64"), 8, RIGHT),
        Column("WS(M)", _mb("WorkingSet64"), 10, RIGHT),
        Column("CPU(s)", lambda p: f"{float(_get(p, 'CPU') or 0):,.2f}", 10, RIGHT),
        Column("Id", lambda p: display(_get(p, "Id")), 7, RIGHT),
        Column("SI", lambda p: display(_get(p, "SessionId") or 0), 3, RIGHT),
        Column("ProcessName", lambda p: display(_get(p, "ProcessName"))),
    ]
)
PATH_VIEW = TableView([Column("Path", lambda p: display(_get(p, "Path")))])
SERVICE_VIEW = TableView(
    [
        Column("Status", lambda s: display(_get(s, "Status")), 8),
        Column("Name", lambda s: display(_get(s, "Name")), 18),
        Column("DisplayName", lambda s: display(_get(s, "DisplayName")), 38),
    ]
)
KNOWN_VIEWS = {
    "System.IO.FileInfo": FILE_VIEW,
    "System.IO.DirectoryInfo": FILE_VIEW,
    "System.Diagnostics.Process": PROCESS_VIEW,
    "System.Management.Automation.PathInfo": PATH_VIEW,
    "System.ServiceProcess.ServiceController": SERVICE_VIEW,
}


def _generic_view(obj: Any) -> Optional[TableView]:
    """A table of the object's properties when it has at most four, else None (a list)."""
    props = properties(obj)
    if len(props) > 4:
        return None
    columns = []
    for name, value in props:
        numeric = isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)
        columns.append(Column(name, lambda o, n=name: display(_get(o, n)), 0, RIGHT if numeric else LEFT))
    return TableView(columns)


def _view_key(obj: Any) -> Tuple[str, ...]:
    """Objects with one key share a block (a table's header, a list's run)."""
    if isinstance(obj, ErrorRecord):
        return ("error",)
    if _is_scalar(obj):
        return ("scalar",)
    for name in _type_names(obj):
        if name in KNOWN_VIEWS:
            return ("known", name.replace("DirectoryInfo", "FileInfo"))
    kind = "table" if len(properties(obj)) <= 4 else "list"
    return (kind, (_type_names(obj) or ["?"])[0], *[name for name, _ in properties(obj)])


# -- cells ---------------------------------------------------------------------------------------------------
def cut(text: str, width: int, align: str, legacy: bool = False) -> str:
    """``text`` fitted into ``width`` cells: cut with an ellipsis when longer."""
    text = text.split("\n", 1)[0].rstrip("\r")
    if len(text) <= width:
        return text
    ellipsis = "..." if legacy else ELLIPSIS
    keep = width - len(ellipsis)
    if keep <= 0:
        return text[:width]
    return ellipsis + text[len(text) - keep :] if align == RIGHT else text[:keep] + ellipsis


def _pad(text: str, width: int, align: str, last: bool) -> str:
    if align == RIGHT:
        return text.rjust(width)
    return text if last else text.ljust(width)


def fit_widths(widths: List[int], line_width: int, minimum: int = 1, separator: int = 1) -> List[int]:
    """ColumnWidthManager: shrink, then hide, the rightmost visible column until the table fits
    (-1 marks a hidden column)."""
    widths = list(widths)
    while True:
        visible = [w for w in widths if w > 0]
        total = sum(visible) + separator * (len(visible) - 1)
        excess = total - line_width
        if excess <= 0 or not visible:
            return widths
        last = max(k for k, w in enumerate(widths) if w > 0)
        if widths[last] - excess < minimum:
            widths[last] = -1
        else:
            widths[last] -= excess


def table_lines(view: TableView, items: Sequence[Any], line_width: int, legacy: bool = False) -> List[str]:
    """The header, the dashes and one row (or more, wrapped) per item."""
    rows = [[column.value(item) for column in view.columns] for item in items]
    widths = []
    for k, column in enumerate(view.columns):
        if column.width:
            widths.append(column.width)
        else:
            widths.append(max([len(column.label)] + [len(row[k].split("\n", 1)[0]) for row in rows]))
    widths = fit_widths(widths, line_width)
    shown = [k for k, w in enumerate(widths) if w > 0]
    if not shown:
        return []

    def line(cells: List[str], aligns: List[str]) -> str:
        parts = []
        for position, k in enumerate(shown):
            last = position == len(shown) - 1
            parts.append(_pad(cut(cells[k], widths[k], aligns[k], legacy), widths[k], aligns[k], last and not legacy))
        return " ".join(parts).rstrip() if not legacy else " ".join(parts)

    aligns = [column.align for column in view.columns]
    out = [
        line([column.label for column in view.columns], aligns),
        line(["-" * min(len(column.label), widths[k]) for k, column in enumerate(view.columns)], aligns),
    ]
    for row in rows:
        if view.wrap and any(len(row[k]) > widths[k] for k in shown):
            chunks = {k: [row[k][i : i + widths[k]] for i in range(0, len(row[k]), widths[k])] or [""] for k in shown}
            for n in range(max(len(c) for c in chunks.values())):
                out.append(line([chunks[k][n] if k in chunks and n < len(chunks[k]) else "" for k in range(len(row))], aligns))
        else:
            out.append(line(row, aligns))
    return out


def list_lines(obj: Any, line_width: int) -> List[str]:
    """``Name : Value``, labels padded to the longest; long values wrap under the value column."""
    props = properties(obj)
    label_width = max(len(name) for name, _ in props)
    indent = label_width + 3
    room = max(line_width - indent, 1)
    out = []
    for name, value in props:
        text = display(value)
        pieces: List[str] = []
        for part in text.split("\n") or [""]:
            pieces.extend([part[i : i + room] for i in range(0, len(part), room)] or [""])
        out.append(f"{name.ljust(label_width)} : {pieces[0]}".rstrip())
        out.extend((" " * indent + piece).rstrip() for piece in pieces[1:])
    return out


def error_lines(record: Any) -> List[str]:
    """PowerShell 7's concise error view: ``Command: message``."""
    message = display(getattr(getattr(record, "Exception", None), "Message", None) or record)
    info = getattr(record, "CategoryInfo", None)
    command = getattr(info, "Activity", None) or ""
    if not command and getattr(info, "Reason", None) == "CommandNotFoundException":
        command = getattr(info, "TargetName", None) or ""
    text = f"{command}: {message}" if command else message
    return text.split("\n")


# -- the formatter -------------------------------------------------------------------------------------------
def format_items(items: Iterable[Any], line_width: int, legacy: bool = False) -> Iterator[Tuple[str, str]]:
    """``(kind, line)`` pairs for a stream of objects; kind is ``"out"`` or ``"error"``. Scalars
    and errors go out as they come; objects are held while their block lasts."""
    block: List[Any] = []
    key: Optional[Tuple[str, ...]] = None

    def flush() -> Iterator[Tuple[str, str]]:
        if not block:
            return
        yield from (("out", line) for line in _block_lines(key, block, line_width, legacy))
        block.clear()

    for item in items:
        item_key = _view_key(item)
        if item_key != key:
            yield from flush()
            key = item_key
        if item_key == ("scalar",):
            text = display(item)
            for line in text.split("\n") if text or item is not None else []:
                yield "out", line
        elif item_key == ("error",):
            for line in error_lines(item):
                yield "error", line
        else:
            block.append(item)
    yield from flush()


def _block_lines(key: Any, block: List[Any], line_width: int, legacy: bool) -> List[str]:
    out: List[str] = []
    if key[0] == "list":
        for item in block:
            out.append("")
            out.extend(list_lines(item, line_width))
        out.append("")
        return out
    view = KNOWN_VIEWS[key[1]] if key[0] == "known" else _generic_view(block[0])
    assert view is not None
    if view.group is None:
        groups = [(None, block)]
    else:
        groups = []
        for item in block:
            header = view.group(item)
            if groups and groups[-1][0] == header:
                groups[-1][1].append(item)
            else:
                groups.append((header, [item]))
    for header, members in groups:
        out.append("")
        if header is not None:
            out.extend([header, ""])
        out.extend(table_lines(view, members, line_width, legacy))
        out.append("")
    return out
