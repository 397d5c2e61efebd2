"""The command set of the PSRP engine (README.md documents each command).

Each command is a generator: it yields its output objects and writes records
through ``inv.streams``; the runtime (psrp_runtime) chains them into
pipelines and turns their errors into PowerShell's error semantics.
"""

from __future__ import annotations

import datetime
import fnmatch
import glob
import os
import stat
from typing import Any, Iterator, List, Optional, Tuple

from psrpcore.types import (
    ConsoleColor,
    ErrorCategory,
    ErrorRecord,
    PSCustomObject,
    PSDouble,
    PSNoteProperty,
    PSObject,
    PSSecureString,
)

from . import psrp_records as records
from .psrp_runtime import (
    HostCallFailed,
    Invocation,
    Param,
    RawItem,
    ScriptTerminatingError,
    TerminatingError,
    command,
    literal,
    text_of,
)

_MS = "Microsoft.PowerShell.Commands."


@command(
    "Write-Output",
    _MS + "WriteOutputCommand",
    [Param("InputObject", remaining=True), Param("NoEnumerate", switch=True)],
    raw_input=True,
)
def _write_output(inv: Invocation) -> Iterator[Any]:
    if inv.has("InputObject"):
        value = inv.params["InputObject"]
        if isinstance(value, (list, tuple)) and not inv.get("NoEnumerate"):
            for item in value:
                yield literal(item)
        else:
            yield literal(value)
    yield from inv.inputs()


def _category(value: Any) -> ErrorCategory:
    if value is None:
        return ErrorCategory.NotSpecified
    if isinstance(value, int):
        return ErrorCategory(value)
    for member in ErrorCategory:
        if member.name.lower() == str(value).lower():
            return member
    return ErrorCategory.NotSpecified


@command(
    "Write-Error",
    _MS + "WriteErrorCommand",
    [Param("Message", position=0, kind="str"), Param("ErrorId", kind="str"), Param("Category"), Param("TargetObject")],
)
def _write_error(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    message = inv.get("Message", "")
    inv.streams.error(
        records.write_error(message, inv.get("ErrorId"), _category(inv.get("Category")), inv.get("TargetObject"))
    )
    yield from ()


def _message_command(kind: str):
    def run(inv: Invocation) -> Iterator[Any]:
        inv.drain()
        getattr(inv.streams, kind)(inv.get("Message", ""))
        yield from ()

    return run


for _name, _kind in (("Write-Warning", "warning"), ("Write-Verbose", "verbose"), ("Write-Debug", "debug")):
    command(
        _name, _MS + _name.replace("-", "") + "Command", [Param("Message", position=0, kind="str", mandatory=True)]
    )(_message_command(_kind))


@command(
    "Write-Information",
    _MS + "WriteInformationCommand",
    [
        Param("MessageData", position=0, mandatory=True, aliases=("Msg", "Message")),
        Param("Tags", position=1, kind="strlist"),
    ],
)
def _write_information(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    inv.streams.information(inv.params["MessageData"], "Write-Information", inv.get("Tags", []))
    yield from ()


@command(
    "Write-Progress",
    _MS + "WriteProgressCommand",
    [
        Param("Activity", position=0, kind="str", mandatory=True),
        Param("Status", position=1, kind="str"),
        Param("Id", position=2, kind="int"),
        Param("PercentComplete", kind="int"),
        Param("SecondsRemaining", kind="int"),
        Param("CurrentOperation", kind="str"),
        Param("ParentId", kind="int"),
        Param("Completed", switch=True),
    ],
)
def _write_progress(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    inv.streams.progress(
        activity=inv.params["Activity"],
        activity_id=inv.get("Id", 0),
        status_description=inv.get("Status", "Processing"),
        current_operation=inv.get("CurrentOperation"),
        parent_activity_id=inv.get("ParentId", -1),
        percent_complete=inv.get("PercentComplete", -1),
        completed=bool(inv.get("Completed", False)),
        seconds_remaining=inv.get("SecondsRemaining", -1),
    )
    yield from ()


def _color(value: Any) -> Optional[ConsoleColor]:
    if value is None:
        return None
    if isinstance(value, int):
        return ConsoleColor(value)
    for member in ConsoleColor:
        if member.name.lower() == str(value).lower():
            return member
    raise ValueError(value)


def _host_information_message(
    text: str, no_newline: bool, foreground: Optional[ConsoleColor], background: Optional[ConsoleColor]
) -> PSObject:
    message = PSObject()
    message.PSObject.type_names = ["System.Management.Automation.HostInformationMessage", "System.Object"]
    for name, value in (
        ("Message", text),
        ("NoNewLine", no_newline),
        ("ForegroundColor", foreground),
        ("BackgroundColor", background),
    ):
        message.PSObject.adapted_properties.append(PSNoteProperty(name, value=value))
    message.PSObject.to_string = text
    return message


@command(
    "Write-Host",
    _MS + "WriteHostCommand",
    [
        Param("Object", remaining=True),
        Param("NoNewline", switch=True),
        Param("Separator", kind="str"),
        Param("ForegroundColor"),
        Param("BackgroundColor"),
    ],
)
def _write_host(inv: Invocation) -> Iterator[Any]:
    objects = inv.params.get("Object")
    values = list(objects) if isinstance(objects, (list, tuple)) else ([] if objects is None else [objects])
    values.extend(inv.value(item) for item in inv.inputs())
    text = inv.get("Separator", " ").join(text_of(v) for v in values)
    try:
        foreground, background = _color(inv.get("ForegroundColor")), _color(inv.get("BackgroundColor"))
    except ValueError as exc:
        raise inv.spec.error(
            "CannotConvertArgumentNoMessage", f'Cannot convert value "{exc}" to type "System.ConsoleColor".', str(exc)
        ) from None
    no_newline = bool(inv.get("NoNewline", False))
    if inv.host.host_ui_available():
        if no_newline:
            inv.host.host_call("write", text, foreground, background)
        else:
            inv.host.host_call("write_line", text, foreground, background)
    # PowerShell 5 also records Write-Host output in the information stream, tagged PSHOST.
    inv.streams.information(
        _host_information_message(text, no_newline, foreground, background), "Write-Host", ["PSHOST"]
    )
    yield from ()


@command("Read-Host", _MS + "ReadHostCommand", [Param("Prompt", remaining=True), Param("AsSecureString", switch=True)])
def _read_host(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    if not inv.host.host_ui_available():
        raise TerminatingError(records.host_unavailable(inv.spec.name, inv.spec.cmdlet_class))
    prompt = inv.params.get("Prompt")
    if prompt is not None:
        inv.host.host_call("write", f"{text_of(prompt)}: ")
    method = "read_line_as_secure_string" if inv.get("AsSecureString") else "read_line"
    try:
        answer = inv.host.host_call(method)
    except HostCallFailed as failure:
        inv.streams.error(failure.record)
        return
    yield answer


@command(
    "Get-Credential",
    _MS + "GetCredentialCommand",
    [
        Param("UserName", position=0, kind="str", aliases=("Credential",)),
        Param("Message", kind="str"),
        Param("Title", kind="str"),
    ],
)
def _get_credential(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    if not inv.host.host_ui_available():
        raise TerminatingError(records.host_unavailable(inv.spec.name, inv.spec.cmdlet_class))
    try:
        credential = inv.host.host_call(
            "prompt_for_credential",
            caption=inv.get("Title", "Windows PowerShell credential request"),
            message=inv.get("Message", "Enter your credentials."),
            username=inv.get("UserName"),
            target_name="",
        )
    except HostCallFailed as failure:
        inv.streams.error(failure.record)
        return
    if credential is not None:
        yield credential


@command(
    "Start-Sleep",
    _MS + "StartSleepCommand",
    [Param("Seconds", position=0, kind="float"), Param("Milliseconds", kind="int")],
)
def _start_sleep(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    seconds = inv.get("Seconds", 0.0) + inv.get("Milliseconds", 0) / 1000.0
    inv.host.sleep(max(seconds, 0.0))
    yield from ()


@command("Get-Date", _MS + "GetDateCommand")
def _get_date(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    yield records.now()


@command("Get-Host", _MS + "GetHostCommand")
def _get_host(inv: Invocation) -> Iterator[Any]:
    """The client's host as the server sees it: ``UI`` is ``$null`` without a UI and
    ``UI.RawUI`` is ``$null`` without a raw UI, as on Windows; the raw UI's properties come
    from the HostInfo default data the client sent (read by psrpcore)."""
    inv.drain()
    info = inv.host.host_info()
    raw_ui: Any = None
    data = getattr(info, "HostDefaultData", None) if info is not None else None
    if info is not None and not info.IsHostRawUINull and data is not None:

        def pair(v: Any, a: str, b: str) -> str:
            return f"{getattr(v, a)},{getattr(v, b)}"

        raw_ui = PSCustomObject(
            ForegroundColor=str(ConsoleColor(data.ForegroundColor).name),
            BackgroundColor=str(ConsoleColor(data.BackgroundColor).name),
            CursorPosition=pair(data.CursorPosition, "X", "Y"),
            WindowPosition=pair(data.WindowPosition, "X", "Y"),
            CursorSize=int(data.CursorSize),
            BufferSize=pair(data.BufferSize, "Width", "Height"),
            WindowSize=pair(data.WindowSize, "Width", "Height"),
            MaxWindowSize=pair(data.MaxWindowSize, "Width", "Height"),
            MaxPhysicalWindowSize=pair(data.MaxPhysicalWindowSize, "Width", "Height"),
            WindowTitle=str(data.WindowTitle),
        )
    ui: Any = None
    if inv.host.host_ui_available():
        ui = PSCustomObject(RawUI=raw_ui)
    yield PSCustomObject(Name="ServerRemoteHost", UI=ui)


# -- file system ---------------------------------------------------------------------------------------------
_FILE_TYPES = ["System.IO.FileInfo", "System.IO.FileSystemInfo", "System.MarshalByRefObject", "System.Object"]
_DIRECTORY_TYPES = ["System.IO.DirectoryInfo", "System.IO.FileSystemInfo", "System.MarshalByRefObject", "System.Object"]


def _mode(info: os.stat_result, is_dir: bool) -> str:
    return (
        ("d" if is_dir else "-")
        + ("a" if not is_dir else "-")
        + ("r" if not info.st_mode & stat.S_IWUSR else "-")
        + "---"
    )


def file_item(path: str, display: Optional[str] = None) -> PSObject:
    """A FileInfo/DirectoryInfo-shaped object for ``path``."""
    full = os.path.abspath(path)
    try:
        info = os.stat(full)
    except OSError:
        info = os.lstat(full)  # a dangling link shows as itself
    is_dir = stat.S_ISDIR(info.st_mode)
    name = os.path.basename(full.rstrip(os.sep)) or full
    base, extension = (name, "") if is_dir else os.path.splitext(name)
    written = records.to_ps_datetime(datetime.datetime.fromtimestamp(info.st_mtime).astimezone())
    written_utc = records.to_ps_datetime(datetime.datetime.fromtimestamp(info.st_mtime, datetime.timezone.utc))
    created = records.to_ps_datetime(datetime.datetime.fromtimestamp(info.st_ctime).astimezone())
    item = PSObject()
    item.PSObject.type_names = list(_DIRECTORY_TYPES if is_dir else _FILE_TYPES)
    adapted = [("Name", name), ("FullName", full)]
    if not is_dir:
        adapted += [
            ("Length", info.st_size),
            ("DirectoryName", os.path.dirname(full)),
            ("IsReadOnly", not os.access(full, os.W_OK)),
        ]
    adapted += [
        ("Extension", extension),
        ("CreationTime", created),
        ("LastWriteTime", written),
        ("LastWriteTimeUtc", written_utc),
    ]
    for prop, value in adapted:
        item.PSObject.adapted_properties.append(PSNoteProperty(prop, value=value))
    parent = os.path.dirname(full)
    for prop, value in (
        ("PSPath", "Microsoft.PowerShell.Core\\FileSystem::" + full),
        ("PSParentPath", "Microsoft.PowerShell.Core\\FileSystem::" + parent),
        ("PSChildName", name),
        ("PSIsContainer", is_dir),
        ("Mode", _mode(info, is_dir)),
        ("BaseName", base),
    ):
        item.PSObject.extended_properties.append(PSNoteProperty(prop, value=value))
    item.PSObject.to_string = display if display is not None else full
    return item


def _path_not_found(inv: Invocation, path: str) -> ErrorRecord:
    return records.record(
        ["System.Management.Automation.ItemNotFoundException", "System.Management.Automation.SessionStateException"]
        + records.RUNTIME,
        f"Cannot find path '{os.path.abspath(path)}' because it does not exist.",
        inv.fqid("PathNotFound"),
        ErrorCategory.ObjectNotFound,
        target=os.path.abspath(path),
        activity=inv.spec.name,
        reason="ItemNotFoundException",
    )


def _resolve(inv: Invocation, path: str) -> List[str]:
    # Relative to the pool's location (Set-Location), this process's directory at first.
    path = os.path.normpath(os.path.join(getattr(inv.host.session, "location", None) or os.getcwd(), os.path.expanduser(path)))
    if any(c in path for c in "*?["):
        found = sorted(glob.glob(path))
        if not found:
            inv.streams.error(_path_not_found(inv, path))
        return found
    if not os.path.lexists(path):
        inv.streams.error(_path_not_found(inv, path))
        return []
    return [path]


def _children(directory: str, pattern: Optional[str], recurse: bool) -> Iterator[Tuple[str, str]]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: (not e.is_dir(follow_symlinks=False), e.name.lower()))
    except OSError:
        return
    for entry in entries:
        if pattern is None or fnmatch.fnmatch(entry.name, pattern):
            yield entry.path, entry.name
        if recurse and entry.is_dir(follow_symlinks=False):
            yield from _children(entry.path, pattern, recurse)


@command(
    "Get-ChildItem",
    _MS + "GetChildItemCommand",
    [
        Param("Path", position=0, kind="strlist"),
        Param("Filter", position=1, kind="str"),
        Param("Recurse", switch=True),
        Param("Force", switch=True),
    ],
)
def _get_child_item(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    for path in inv.get("Path", ["."]):
        for resolved in _resolve(inv, path):
            if os.path.isdir(resolved):
                for child, name in _children(resolved, inv.get("Filter"), bool(inv.get("Recurse"))):
                    inv.host.check_stop()
                    try:
                        yield file_item(child, display=name)
                    except OSError:
                        continue
            else:
                yield file_item(resolved, display=os.path.basename(resolved))


@command(
    "Get-Item",
    _MS + "GetItemCommand",
    [Param("Path", position=0, kind="strlist", mandatory=True), Param("Force", switch=True)],
)
def _get_item(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    for path in inv.params["Path"]:
        for resolved in _resolve(inv, path):
            yield file_item(resolved)


# -- processes -------------------------------------------------------------------------------------------------
_PROCESS_TYPES = [
    "System.Diagnostics.Process",
    "System.ComponentModel.Component",
    "System.MarshalByRefObject",
    "System.Object",
]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_item(pid: int) -> Optional[PSObject]:
    """A Process-shaped object from /proc, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode("utf-8", "replace")
        with open(f"/proc/{pid}/statm", "rb") as handle:
            statm = handle.read().split()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    threads = int(fields[17])
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    try:
        handles = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        handles = 0
    try:
        path = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        path = None
    item = PSObject()
    item.PSObject.type_names = list(_PROCESS_TYPES)
    for prop, value in (
        ("Id", pid),
        ("ProcessName", name),
        ("WorkingSet64", int(statm[1]) * _PAGE),
        ("VirtualMemorySize64", int(statm[0]) * _PAGE),
        ("PrivateMemorySize64", (int(statm[1]) - int(statm[2])) * _PAGE),
        ("HandleCount", handles),
        ("Path", path),
    ):
        item.PSObject.adapted_properties.append(PSNoteProperty(prop, value=value))
    for prop, value in (("Name", name), ("CPU", PSDouble(cpu)), ("Threads", threads)):
        item.PSObject.extended_properties.append(PSNoteProperty(prop, value=value))
    item.PSObject.to_string = f"System.Diagnostics.Process ({name})"
    return item


def _pids() -> List[int]:
    try:
        return sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit())
    except OSError:
        return []


@command(
    "Get-Process",
    _MS + "GetProcessCommand",
    [Param("Name", position=0, kind="strlist", aliases=("ProcessName",)), Param("Id", kind="intlist")],
)
def _get_process(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    items = [item for item in (process_item(pid) for pid in (inv.get("Id") or _pids())) if item is not None]
    if inv.has("Id"):
        found = {item.Id for item in items}
        for pid in inv.get("Id"):
            if pid not in found:
                inv.streams.error(
                    records.record(
                        ["Microsoft.PowerShell.Commands.ProcessCommandException", "System.SystemException"],
                        f"Cannot find a process with the process identifier {pid}.",
                        inv.fqid("NoProcessFoundForGivenId"),
                        ErrorCategory.ObjectNotFound,
                        target=pid,
                        activity="Get-Process",
                        reason="ProcessCommandException",
                    )
                )
    names = inv.get("Name")
    if names:
        selected = []
        for name in names:
            matches = [item for item in items if fnmatch.fnmatch(item.ProcessName.lower(), name.lower())]
            if not matches and not any(c in name for c in "*?["):
                inv.streams.error(
                    records.record(
                        ["Microsoft.PowerShell.Commands.ProcessCommandException", "System.SystemException"],
                        f'Cannot find a process with the name "{name}". Verify the process name and call the cmdlet again.',
                        inv.fqid("NoProcessFoundForGivenName"),
                        ErrorCategory.ObjectNotFound,
                        target=name,
                        activity="Get-Process",
                        reason="ProcessCommandException",
                    )
                )
            selected.extend(m for m in matches if m not in selected)
        items = sorted(selected, key=lambda i: (i.ProcessName.lower(), i.Id))
    else:
        items.sort(key=lambda i: (i.ProcessName.lower(), i.Id))
    yield from items


# -- strings and secure strings -----------------------------------------------------------------------------
@command(
    "ConvertTo-SecureString",
    "Microsoft.PowerShell.Commands.ConvertToSecureStringCommand",
    [
        Param("String", position=0, kind="str"),
        Param("AsPlainText", switch=True),
        Param("Force", switch=True),
        Param("Key"),
        Param("SecureKey"),
    ],
)
def _convert_to_secure_string(inv: Invocation) -> Iterator[Any]:
    values = [inv.params["String"]] if inv.has("String") else [text_of(inv.value(item)) for item in inv.inputs()]
    for value in values:
        if not inv.get("AsPlainText"):
            raise TerminatingError(
                records.record(
                    ["System.FormatException", "System.SystemException"],
                    "Input string was not in a correct format.",
                    inv.fqid("ImportSecureString_InvalidArgument"),
                    ErrorCategory.InvalidArgument,
                    activity=inv.spec.name,
                    reason="FormatException",
                )
            )
        if not inv.get("Force"):
            raise TerminatingError(
                records.record(
                    ["System.ArgumentException", "System.SystemException"],
                    "The system cannot protect plain text input. To suppress this warning and convert the plain text to a "
                    "SecureString, reissue the command specifying the Force parameter. For more information ,type: "
                    "get-help ConvertTo-SecureString.",
                    inv.fqid("ImportSecureString_ForceRequired"),
                    ErrorCategory.InvalidArgument,
                    activity=inv.spec.name,
                    reason="ArgumentException",
                )
            )
        # Encrypted with the pool's session key when serialised: the exchanged key after PUBLIC_KEY, otherwise a
        # key the server made up that the client never received (what PowerShell 3+ servers do for 2.2+ clients).
        yield PSSecureString(value)


@command("Out-Null", _MS + "OutNullCommand", [Param("InputObject")], raw_input=True)
def _out_null(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    yield from ()


def format_lines(value: Any, width: int = 120) -> List[str]:
    """How Out-String shows a value (psrp_format: tables, lists, scalars as text)."""
    from . import psrp_format

    return [line for _, line in psrp_format.format_items([value], width)]


@command(
    "Invoke-Expression", _MS + "InvokeExpressionCommand", [Param("Command", position=0, kind="str", mandatory=True)]
)
def _invoke_expression(inv: Invocation) -> Iterator[Any]:
    statements = inv.runner.parse(inv.params["Command"])
    yield from inv.runner.run_script(statements, inv.upstream, inv.streams)


@command(
    "New-Item",
    _MS + "NewItemCommand",
    [
        Param("Path", position=0, kind="str"),
        Param("Name", kind="str"),
        Param("Value"),
        Param("ItemType", kind="str"),
        Param("Force", switch=True),
    ],
)
def _new_item(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    path = inv.get("Path", "")
    if path.lower().rstrip("\\/") not in ("env:", "env"):
        raise TerminatingError(
            records.record(
                ["System.NotSupportedException", "System.SystemException"],
                "This endpoint's New-Item only creates environment variables (-Path env:).",
                inv.fqid("NotSupported"),
                ErrorCategory.NotImplemented,
                target=path,
                activity=inv.spec.name,
                reason="NotSupportedException",
            )
        )
    name = inv.get("Name", "")
    value = text_of(inv.get("Value"))
    inv.host.session.environment[name] = value
    entry = PSCustomObject(Name=name, Value=value)
    entry.PSObject.type_names.insert(0, "System.Collections.DictionaryEntry")
    yield entry


# -- test behaviours -----------------------------------------------------------------------------------------
def _test_object(properties: int, size: int) -> PSCustomObject:
    text = ("abcdefghijklmnopqrstuvwxyz" * (size // 26 + 1))[:size]
    obj = PSCustomObject(**{f"Property{i}": text for i in range(1, properties + 1)})
    obj.PSObject.to_string = "@{" + "; ".join(f"Property{i}={text}" for i in range(1, properties + 1)) + "}"
    return obj


@command(
    "New-TestObject",
    "PSRemote.TestServer.NewTestObjectCommand",
    [Param("Count", position=0, kind="int"), Param("Properties", kind="int"), Param("Size", kind="int")],
)
def _new_test_object(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    count = max(inv.get("Count", 1), 0)
    item = RawItem(inv.host.serialize(_test_object(max(inv.get("Properties", 1), 0), max(inv.get("Size", 10), 0))))
    for _ in range(count):
        yield item


@command("Get-PSSenderInfo", "PSRemote.TestServer.GetPSSenderInfoCommand")
def _get_sender_info(inv: Invocation) -> Iterator[Any]:
    """What a script reads as ``$PSSenderInfo`` (the endpoint's language has no variables):
    the client's ApplicationArguments from INIT_RUNSPACEPOOL, as psrpcore read them."""
    inv.drain()
    core = inv.host.pool.core
    arguments = getattr(core, "application_arguments", None)
    yield PSCustomObject(ApplicationArguments=arguments)


@command("Measure-Input", "PSRemote.TestServer.MeasureInputCommand", [Param("InputObject")], raw_input=True)
def _measure_input(inv: Invocation) -> Iterator[Any]:
    count = 0
    total = 0
    source = [inv.params["InputObject"]] if inv.has("InputObject") else inv.inputs()
    for item in source:
        count += 1
        total += len(item.clixml) if isinstance(item, RawItem) else len(inv.host.serialize(item))
    result = PSCustomObject(Count=count, Bytes=total)
    result.PSObject.to_string = f"@{{Count={count}; Bytes={total}}}"
    yield result


@command("Invoke-Failure", "PSRemote.TestServer.InvokeFailureCommand", [Param("Message", position=0, kind="str")])
def _invoke_failure(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    raise ScriptTerminatingError(records.thrown(inv.get("Message", "Invoke-Failure was called.")))
    yield  # pragma: no cover - makes this a generator


@command("Invoke-Stall", "PSRemote.TestServer.InvokeStallCommand")
def _invoke_stall(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    while True:
        inv.host.sleep(3600)
    yield  # pragma: no cover


@command(
    "New-HugeObject",
    "PSRemote.TestServer.NewHugeObjectCommand",
    [Param("Size", position=0, kind="int", mandatory=True)],
)
def _new_huge_object(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    size = max(inv.params["Size"], 0)
    yield ("abcdefghijklmnopqrstuvwxyz" * (size // 26 + 1))[:size]
