"""Records of the PowerShell streams and the results of pipelines and commands."""

from __future__ import annotations

import dataclasses
import datetime
import html
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, NamedTuple, Optional

from psremote.exceptions import PipelineError
from psremote.values import PSObject, _html_value

__all__ = [
    "CmdChunk",
    "CmdResult",
    "ConnectionInfo",
    "ServerConfig",
    "ErrorRecord",
    "HostCall",
    "InformationRecord",
    "PSEvent",
    "PSResult",
    "PipelineState",
    "ProgressRecord",
]

# System.Management.Automation.ErrorCategory, by value.
ERROR_CATEGORIES = (
    "NotSpecified", "OpenError", "CloseError", "DeviceError", "DeadlockDetected", "InvalidArgument",
    "InvalidData", "InvalidOperation", "InvalidResult", "InvalidType", "MetadataError", "NotImplemented",
    "NotInstalled", "ObjectNotFound", "OperationStopped", "OperationTimeout", "SyntaxError", "ParserError",
    "PermissionDenied", "ResourceBusy", "ResourceExists", "ResourceUnavailable", "ReadError", "WriteError",
    "FromStdErr", "SecurityError", "ProtocolError", "ConnectionError", "AuthenticationError",
    "LimitsExceeded", "QuotaExceeded", "NotEnabled",
)  # fmt: skip


@dataclass(frozen=True)
class ErrorRecord:
    """An error the server reported (System.Management.Automation.ErrorRecord)."""

    message: str
    fully_qualified_error_id: Optional[str] = None
    category: int = 0
    activity: Optional[str] = None
    reason: Optional[str] = None
    target_name: Optional[str] = None
    target_type: Optional[str] = None
    category_message: Optional[str] = None
    details_message: Optional[str] = None
    script_stack_trace: Optional[str] = None
    position_message: Optional[str] = None

    @classmethod
    def from_native(cls, data: Dict[str, Any]) -> "ErrorRecord":
        try:
            return cls(**data)
        except TypeError:
            # Tolerate fields a newer native module may add.
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def category_name(self) -> str:
        """The ErrorCategory's name, e.g. ``"ObjectNotFound"``."""
        if 0 <= self.category < len(ERROR_CATEGORIES):
            return ERROR_CATEGORIES[self.category]
        return str(self.category)

    def __str__(self) -> str:
        return self.details_message or self.message

    def format(self) -> str:
        """The record as PowerShell's console prints it."""
        lines = [str(self)]
        if self.position_message:
            lines.append(self.position_message)
        category = self.category_message or f"{self.category_name}: ({self.target_name or ''}) [{self.activity or ''}], {self.reason or ''}"
        lines.append(f"    + CategoryInfo          : {category}")
        if self.fully_qualified_error_id:
            lines.append(f"    + FullyQualifiedErrorId : {self.fully_qualified_error_id}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ProgressRecord:
    """A Write-Progress record."""

    activity: str
    activity_id: int = 0
    status_description: str = ""
    current_operation: Optional[str] = None
    parent_activity_id: int = -1
    percent_complete: int = -1
    seconds_remaining: int = -1
    completed: bool = False

    @classmethod
    def from_native(cls, data: Dict[str, Any]) -> "ProgressRecord":
        try:
            return cls(**data)
        except TypeError:
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_psobject(cls, obj: Any) -> "ProgressRecord":
        """From the ProgressRecord object a WriteProgress host call carries."""
        if not isinstance(obj, PSObject):
            return cls(activity=str(obj))
        kind = obj.get("Type")
        if kind is None:
            kind = obj.get("RecordType")

        def number(name: str, default: int) -> int:
            value = obj.get(name)
            return default if value is None else int(value)

        return cls(
            activity=str(obj.get("Activity", "")),
            activity_id=number("ActivityId", 0),
            status_description=str(obj.get("StatusDescription") or ""),
            current_operation=obj.get("CurrentOperation"),
            parent_activity_id=number("ParentActivityId", -1),
            percent_complete=number("PercentComplete", -1),
            seconds_remaining=number("SecondsRemaining", -1),
            completed=str(kind) == "Completed" or (isinstance(kind, int) and int(kind) == 1),
        )


@dataclass(frozen=True)
class InformationRecord:
    """A Write-Information (or Write-Host) record."""

    message_data: Any
    source: Optional[str] = None
    time_generated: Optional[datetime.datetime] = None
    tags: List[str] = field(default_factory=list)

    @classmethod
    def from_native(cls, data: Dict[str, Any]) -> "InformationRecord":
        try:
            return cls(**data)
        except TypeError:
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in names})

    def __str__(self) -> str:
        return str(self.message_data)


class HostCall(NamedTuple):
    """A host method the server called on this client (Write-Host and the like)."""

    method: str
    parameters: List[Any]


class PipelineState(NamedTuple):
    """The final state of a pipeline: ``"Completed"``, ``"Stopped"`` or ``"Failed"``."""

    state: str
    error: Optional[ErrorRecord]


class PSEvent(NamedTuple):
    """One event of a running pipeline, in the order the server produced it.

    ``kind`` and the type of ``value``:

    ``"output"`` the object; ``"error"`` :class:`ErrorRecord`; ``"warning"``, ``"verbose"``,
    ``"debug"`` ``str``; ``"information"`` :class:`InformationRecord`; ``"progress"``
    :class:`ProgressRecord`; ``"host"`` :class:`HostCall`; ``"state"`` :class:`PipelineState`
    (always the last event).
    """

    kind: str
    value: Any


def convert_event(kind: str, payload: Any) -> PSEvent:
    """A native ``(kind, payload)`` tuple as a :class:`PSEvent`."""
    if kind == "output" or kind in ("warning", "verbose", "debug"):
        return PSEvent(kind, payload)
    if kind == "error":
        return PSEvent(kind, ErrorRecord.from_native(payload))
    if kind == "progress":
        return PSEvent(kind, ProgressRecord.from_native(payload))
    if kind == "information":
        return PSEvent(kind, InformationRecord.from_native(payload))
    if kind == "host":
        return PSEvent(kind, HostCall(payload["method"], payload["parameters"]))
    if kind == "state":
        error = payload.get("error")
        return PSEvent(kind, PipelineState(payload["state"], ErrorRecord.from_native(error) if error else None))
    return PSEvent(kind, payload)


@dataclass(eq=False)
class PSResult:
    """Everything a pipeline produced: its output, every stream and its final state.

    Iterating, indexing and ``len`` work on the output list.
    """

    output: List[Any] = field(default_factory=list)
    errors: List[ErrorRecord] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    verbose: List[str] = field(default_factory=list)
    debug: List[str] = field(default_factory=list)
    information: List[InformationRecord] = field(default_factory=list)
    progress: List[ProgressRecord] = field(default_factory=list)
    host_calls: List[HostCall] = field(default_factory=list)
    #: ``"Completed"``, ``"Stopped"`` or ``"Failed"``; ``None`` while the result is incomplete.
    state: Optional[str] = None
    #: The record that failed (or stopped) the pipeline.
    terminating_error: Optional[ErrorRecord] = None

    @property
    def had_errors(self) -> bool:
        """True when the pipeline did not complete or wrote to the error stream."""
        return self.state != "Completed" or bool(self.errors)

    def raise_for_errors(self) -> "PSResult":
        """Raises :class:`PipelineError` if the pipeline failed, stopped or wrote errors;
        otherwise returns the result itself."""
        record = self.terminating_error or (self.errors[0] if self.errors else None)
        if record is not None:
            raise PipelineError(str(record), error_record=record, result=self)
        if self.state not in ("Completed", None):
            raise PipelineError(f"the pipeline ended in state {self.state}", result=self)
        return self

    def _absorb(self, kind: str, payload: Any) -> None:
        """Adds one native event (the slow path: everything but output)."""
        if kind == "output":
            self.output.append(payload)
        elif kind == "error":
            self.errors.append(ErrorRecord.from_native(payload))
        elif kind == "warning":
            self.warnings.append(payload)
        elif kind == "verbose":
            self.verbose.append(payload)
        elif kind == "debug":
            self.debug.append(payload)
        elif kind == "information":
            self.information.append(InformationRecord.from_native(payload))
        elif kind == "progress":
            self.progress.append(ProgressRecord.from_native(payload))
        elif kind == "host":
            self.host_calls.append(HostCall(payload["method"], payload["parameters"]))
        elif kind == "state":
            self.state = payload["state"]
            error = payload.get("error")
            if error:
                self.terminating_error = ErrorRecord.from_native(error)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.output)

    def __len__(self) -> int:
        return len(self.output)

    def __getitem__(self, index: Any) -> Any:
        return self.output[index]

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        parts = [f"state={self.state}", f"output={len(self.output)}"]
        for name in ("errors", "warnings", "verbose", "debug", "information", "progress"):
            count = len(getattr(self, name))
            if count:
                parts.append(f"{name}={count}")
        if self.terminating_error is not None:
            parts.append(f"terminating_error={str(self.terminating_error)!r}")
        return f"<PSResult {' '.join(parts)}>"

    def _repr_html_(self) -> str:
        return render_output_html(self.output) + _streams_html(self)


_MAX_ROWS = 200
_MAX_COLUMNS = 20


def render_output_html(values: List[Any]) -> str:
    """An HTML table of objects: one column per property, or one ``Value`` column for scalars."""
    if not values:
        return "<p><em>no output</em></p>"
    shown = values[:_MAX_ROWS]
    columns: Dict[str, None] = {}
    for value in shown:
        if isinstance(value, PSObject):
            for name in value.properties:
                if len(columns) >= _MAX_COLUMNS:
                    break
                columns.setdefault(name, None)
    header = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in columns)
    scalar_column = not columns or any(not isinstance(v, PSObject) for v in shown)
    if scalar_column:
        header = "<th style='text-align:left'>Value</th>" + header
    rows = []
    for value in shown:
        cells = []
        if isinstance(value, PSObject):
            if scalar_column:
                cells.append("<td></td>" if value.value is None else f"<td>{_html_value(value.value)}</td>")
            props = value.properties
            cells.extend(f"<td style='text-align:left'>{_html_value(props.get(c))}</td>" for c in columns)
        else:
            cells.append(f"<td style='text-align:left'>{_html_value(value)}</td>")
            cells.extend("<td></td>" for _ in columns)
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p><em>{len(values) - _MAX_ROWS} more rows</em></p>" if len(values) > _MAX_ROWS else ""
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def _streams_html(result: PSResult) -> str:
    parts = []
    colours = (("errors", "#c00"), ("warnings", "#b58900"), ("verbose", "#2aa198"), ("debug", "#2aa198"))
    for name, colour in colours:
        for item in getattr(result, name):
            label = name.rstrip("s").upper()
            parts.append(f"<div style='color:{colour}'>{label}: {html.escape(str(item))}</div>")
    if result.terminating_error is not None:
        parts.append(f"<div style='color:#c00'><b>{result.state}</b>: {html.escape(str(result.terminating_error))}</div>")
    return "".join(parts)


class CmdChunk(NamedTuple):
    """A piece of a command's output as it arrived (``for stream, data in process``)."""

    #: ``"stdout"`` or ``"stderr"``.
    stream: str
    #: The bytes, as the command wrote them (in the shell's code page, UTF-8 by default). A
    #: character may be split between two chunks: decode the joined bytes, or use an incremental
    #: decoder (``codecs.getincrementaldecoder("utf-8")``).
    data: bytes

    def __repr__(self) -> str:
        return f"CmdChunk({self.stream}, {_short(self.data)})"


@dataclass(frozen=True)
class CmdResult:
    """What a cmd-shell command produced."""

    stdout: bytes
    stderr: bytes
    exit_code: int

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def __repr__(self) -> str:
        return f"CmdResult(exit_code={self.exit_code}, stdout={_short(self.stdout)}, stderr={_short(self.stderr)})"


def _short(data: bytes) -> str:
    return repr(data) if len(data) <= 80 else repr(data[:77]) + f"... ({len(data)} bytes)"


@dataclass(frozen=True)
class ConnectionInfo:
    """What the client's most recent connection established (``Client.connection_info``):
    what an audit log would want, and never a secret."""

    endpoint: str
    """The endpoint URL."""
    mechanism: str
    """The mechanism configured: ``negotiate``, ``ntlm``, ``kerberos``, ``basic``, ``credssp`` or ``certificate``."""
    negotiated: str
    """The mechanism actually used on the wire."""
    encryption: str
    """What protects the messages: ``message-encryption``, ``tls``, ``tls+message-encryption`` or ``none``."""
    channel_binding: bool
    """Whether the authentication was bound to the TLS channel (tls-server-end-point)."""
    tls_version: Optional[str] = None
    """``TLSv1.2`` or ``TLSv1.3`` over https, None over http."""
    cipher_suite: Optional[str] = None
    """The negotiated TLS cipher suite, e.g. ``TLS13_AES_256_GCM_SHA384``."""
    certificate_sha256: Optional[str] = None
    """SHA-256 fingerprint of the server's certificate (lowercase hex)."""
    proxy: Optional[str] = None
    """The proxy the connection went through, as a URL without credentials
    (``http://proxy:3128``, ``socks5h://proxy:1080``), or None for a direct connection."""

    @property
    def tls(self) -> bool:
        """Whether the connection runs over TLS."""
        return self.tls_version is not None


@dataclass(frozen=True)
class ServerConfig:
    """The server's WinRM configuration (``winrm/config``, :meth:`Client.server_config`): the
    limits requests are sized by, and every setting by its path (``entries``). Reading it
    needs administrator rights on Windows."""

    max_envelope_size_kb: Optional[int] = None
    """``MaxEnvelopeSizekb``: the largest request the server accepts, in KiB."""
    max_timeout_ms: Optional[int] = None
    """``MaxTimeoutms``: the longest OperationTimeout the server accepts."""
    max_batch_items: Optional[int] = None
    """``MaxBatchItems``."""
    shell_idle_timeout_ms: Optional[int] = None
    """``Winrs/IdleTimeout``."""
    max_shells_per_user: Optional[int] = None
    """``Winrs/MaxShellsPerUser``."""
    max_memory_per_shell_mb: Optional[int] = None
    """``Winrs/MaxMemoryPerShellMB``."""
    max_concurrent_operations_per_user: Optional[int] = None
    """``Service/MaxConcurrentOperationsPerUser``."""
    entries: Dict[str, str] = field(default_factory=dict)
    """Every setting, keyed by its path below ``Config`` (``Service/Auth/Basic``)."""

    @property
    def max_envelope_size(self) -> Optional[int]:
        """``MaxEnvelopeSizekb`` in bytes."""
        return None if self.max_envelope_size_kb is None else self.max_envelope_size_kb * 1024

    @classmethod
    def _from_native(cls, d: Dict[str, Any]) -> "ServerConfig":
        fields = {k: v for k, v in d.items() if k != "entries"}
        return cls(**fields, entries=dict(d.get("entries", [])))
