"""What an interactive session (``Enter-PSSession``, ``psremote shell``) runs besides the user's
lines: ``Out-Default`` (the formatted text written through the client's host), ``Out-String``,
the ``prompt`` function, ``Get-Location``/``Set-Location`` and ``TabExpansion2``.

The pool's location starts at this process's working directory; relative paths of the file
commands resolve against it. ``Out-Default`` formats for the width of the host's buffer
(``BufferSize.Width`` of the HostDefaultData the client sent, less one column as the console
leaves the last cell free; 120 without a host) and writes each line with ``WriteLine``, error
lines with ``WriteErrorLine``; without a host UI it writes nothing, as PowerShell's does.

A test behaviour: a session environment variable ``PSREMOTE_TEST_INTERACTIVE`` (set with
``New-Item env: -Name PSREMOTE_TEST_INTERACTIVE -Value MODE``) makes this part of the
endpoint misbehave the way a hostile or broken server might, so clients can show they cope:
``prompt-throws`` (the prompt function fails), ``prompt-stalls`` (it never ends until stopped), ``prompt-huge`` (a prompt of HUGE_PROMPT
characters with control characters in it), ``completion-huge`` (HUGE_COMPLETIONS matches),
``completion-garbage`` (CompletionMatches a string, negative ReplacementIndex and Length),
``host-garbage`` (Out-Default writes with ConsoleColor values out of range and a
WriteProgress whose PercentComplete is 12345).
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterator, List, Optional, Tuple

from psrpcore.types import ErrorCategory, PSCustomObject, PSObject

from . import psrp_format
from . import psrp_records as records
from .psrp_runtime import COMMANDS, Invocation, Param, TerminatingError, command

_MS = "Microsoft.PowerShell.Commands."
DEFAULT_WIDTH = 120
TEST_MODE = "PSREMOTE_TEST_INTERACTIVE"
HUGE_PROMPT = 1024 * 1024
HUGE_COMPLETIONS = 1000


def _test_mode(inv: Invocation) -> str:
    return inv.host.session.environment.get(TEST_MODE, "")


class _RawColor:
    """A ConsoleColor value no ConsoleColor has (psrpcore sends ``.value``)."""

    def __init__(self, value: int) -> None:
        self.value = value

# Aliases a person types; each resolves to the command's own spec.
ALIASES = {
    "cd": "set-location",
    "sl": "set-location",
    "chdir": "set-location",
    "pwd": "get-location",
    "gl": "get-location",
    "ls": "get-childitem",
    "dir": "get-childitem",
    "gci": "get-childitem",
    "gi": "get-item",
    "echo": "write-output",
    "write": "write-output",
    "ps": "get-process",
    "gps": "get-process",
}

# Variables TabExpansion2 offers (the endpoint's language has none; these are what a session has).
VARIABLES = ("$true", "$false", "$null", "$HOME", "$PSVersionTable", "$PWD", "$Error", "$Host", "$PID")


def location(inv: Invocation) -> str:
    current = getattr(inv.host.session, "location", None)
    return current or os.getcwd()


def resolve_path(inv: Invocation, path: str) -> str:
    """``path`` against the pool's location (``~`` is this user's home)."""
    if path == "~" or path.startswith("~/"):
        path = os.path.expanduser(path)
    return os.path.normpath(os.path.join(location(inv), path))


def _host_width(inv: Invocation) -> int:
    info = inv.host.host_info()
    data = getattr(info, "HostDefaultData", None) if info is not None else None
    size = getattr(data, "BufferSize", None) if data is not None else None
    width = getattr(size, "Width", None) if size is not None else None
    return int(width) - 1 if width and int(width) > 1 else DEFAULT_WIDTH


def _source(inv: Invocation) -> Iterator[Any]:
    if inv.has("InputObject"):
        yield inv.params["InputObject"]
    for item in inv.inputs():
        yield inv.value(item)


@command("Out-Default", _MS + "OutDefaultCommand", [Param("InputObject")])
def _out_default(inv: Invocation) -> Iterator[Any]:
    width = _host_width(inv)
    show = inv.host.host_ui_available()
    garbage = _test_mode(inv) == "host-garbage"
    if garbage and show:
        inv.host.host_call("write_progress", 0, 1, "Garbage", "status", percent_complete=12345)
    for kind, line in psrp_format.format_items(_source(inv), width):
        inv.host.check_stop()
        if show and garbage:
            inv.host.host_call("write", "odd ", _RawColor(99), _RawColor(-3))
            inv.host.host_call("write_line", line, _RawColor(-1), None)
        elif show:
            inv.host.host_call("write_error_line" if kind == "error" else "write_line", line)
    yield from ()


@command(
    "Out-String",
    _MS + "OutStringCommand",
    [Param("InputObject"), Param("Stream", switch=True), Param("Width", kind="int")],
)
def _out_string(inv: Invocation) -> Iterator[Any]:
    width = inv.get("Width") or DEFAULT_WIDTH
    lines = (line for _, line in psrp_format.format_items(_source(inv), width))
    if inv.get("Stream"):
        yield from lines
    else:
        text = "\n".join(lines)
        yield text + "\n" if text else ""


def _path_info(path: str) -> PSObject:
    info = PSCustomObject(Drive=None, Provider="Microsoft.PowerShell.Core\\FileSystem", ProviderPath=path, Path=path)
    info.PSObject.type_names = ["System.Management.Automation.PathInfo", "System.Object"]
    info.PSObject.to_string = path
    return info


@command("Get-Location", _MS + "GetLocationCommand")
def _get_location(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    yield _path_info(location(inv))


@command(
    "Set-Location",
    _MS + "SetLocationCommand",
    [Param("Path", position=0, kind="str"), Param("PassThru", switch=True)],
)
def _set_location(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    target = resolve_path(inv, inv.get("Path", "~"))
    if not os.path.isdir(target):
        raise TerminatingError(
            records.record(
                ["System.Management.Automation.ItemNotFoundException", "System.Management.Automation.SessionStateException"]
                + records.RUNTIME,
                f"Cannot find path '{target}' because it does not exist.",
                inv.fqid("PathNotFound"),
                ErrorCategory.ObjectNotFound,
                target=target,
                activity=inv.spec.name,
                reason="ItemNotFoundException",
            )
        )
    inv.host.session.location = target
    if inv.get("PassThru"):
        yield _path_info(target)


@command("prompt", "PSRemote.TestServer.PromptFunction")
def _prompt(inv: Invocation) -> Iterator[Any]:
    """The default prompt function: ``PS <location>> ``."""
    inv.drain()
    mode = _test_mode(inv)
    if mode == "prompt-throws":
        raise TerminatingError(
            records.record(
                records.RUNTIME,
                "the prompt function failed",
                "PromptFailed",
                ErrorCategory.NotSpecified,
                activity="prompt",
                reason="RuntimeException",
            )
        )
    if mode == "prompt-stalls":
        while True:
            inv.host.sleep(3600)
    if mode == "prompt-huge":
        yield "PS \x1b]0;title\x07" + "P" * HUGE_PROMPT + "> "
        return
    yield f"PS {location(inv)}> "


# -- completion ----------------------------------------------------------------------------------------------
# CompletionResultType values.
PARAMETER_NAME, COMMAND, PROVIDER_ITEM, PROVIDER_CONTAINER, VARIABLE = 7, 2, 3, 4, 9
_BREAK = re.compile(r"[\s|;(){}]")


def _completion(text: str, list_text: str, kind: int, tooltip: str) -> PSObject:
    result = PSCustomObject(CompletionText=text, ListItemText=list_text, ResultType=kind, ToolTip=tooltip)
    result.PSObject.type_names = ["System.Management.Automation.CompletionResult", "System.Object"]
    result.PSObject.to_string = text
    return result


def _word_at(script: str, cursor: int) -> Tuple[int, str]:
    """The start and text of the word ending at ``cursor``."""
    start = cursor
    while start > 0 and not _BREAK.match(script[start - 1]):
        start -= 1
    return start, script[start:cursor]


def _command_of(script: str, start: int) -> Optional[str]:
    """The command name of the pipeline element the word at ``start`` belongs to."""
    element = re.split(r"[|;]", script[:start])[-1]
    words = element.split()
    return words[0] if words else None


def complete(inv: Invocation, script: str, cursor: int) -> Tuple[int, int, List[PSObject]]:
    """(replacement index, replacement length, matches) for the word before ``cursor``."""
    cursor = max(0, min(cursor, len(script)))
    start, word = _word_at(script, cursor)
    lowered = word.lower()
    matches: List[PSObject] = []
    if word.startswith("$"):
        for name in VARIABLES:
            if name.lower().startswith(lowered):
                matches.append(_completion(name, name[1:], VARIABLE, name[1:]))
    elif word.startswith("-") and _command_of(script, start):
        name = _command_of(script, start) or ""
        spec = COMMANDS.get(ALIASES.get(name.lower(), name.lower()))
        if spec is not None:
            for param in spec.params:
                if ("-" + param.name.lower()).startswith(lowered):
                    matches.append(_completion("-" + param.name, param.name, PARAMETER_NAME, f"[{param.kind}] {param.name}"))
    elif _command_of(script, start) is None and word and not any(c in word for c in "/\\.~"):
        specs = {spec.name: spec for spec in COMMANDS.values()}
        for spec in sorted(specs.values(), key=lambda s: s.name.lower()):
            if spec.name.lower().startswith(lowered) and not spec.name.startswith("Invoke-PSRemote"):
                matches.append(_completion(spec.name, spec.name, COMMAND, spec.name))
    else:
        matches = _path_matches(inv, word)
    return start, cursor - start, matches


def _path_matches(inv: Invocation, word: str) -> List[PSObject]:
    """Files and directories whose names start as the word's last segment does; a relative
    path comes back as ``./name`` (PowerShell adds the ``.\\``), a name needing quotes quoted."""
    bare = word[1:] if word[:1] in ("'", '"') else word
    directory, slash, prefix = bare.rpartition("/")
    base = resolve_path(inv, (directory or "/") if slash else ".")
    lead = (directory + "/") if slash else "./"
    try:
        entries = sorted(os.scandir(base), key=lambda e: (not e.is_dir(), e.name.lower()))
    except OSError:
        return []
    matches = []
    for entry in entries:
        if not entry.name.lower().startswith(prefix.lower()):
            continue
        text = lead + entry.name
        if bare != word or any(c in text for c in " '$`;(){}&,"):
            text = "'" + text.replace("'", "''") + "'"
        kind = PROVIDER_CONTAINER if entry.is_dir() else PROVIDER_ITEM
        matches.append(_completion(text, entry.name, kind, entry.path))
    return matches


@command(
    "TabExpansion2",
    "PSRemote.TestServer.TabExpansion2Function",
    [
        Param("InputScript", position=0, kind="str", mandatory=True),
        Param("CursorColumn", position=1, kind="int"),
        Param("Options"),
    ],
)
def _tab_expansion(inv: Invocation) -> Iterator[Any]:
    inv.drain()
    script = inv.params["InputScript"]
    if script.lstrip().lower().startswith("invoke-stall"):
        # A test behaviour: completing a line that starts with Invoke-Stall never ends (until
        # stopped), so clients can show that a slow completion does not hold the prompt.
        while True:
            inv.host.sleep(3600)
    cursor = inv.get("CursorColumn", len(script))
    index, length, matches = complete(inv, script, cursor)
    found: Any = matches
    mode = _test_mode(inv)
    if mode == "completion-huge":
        found = [_completion(f"Get-Huge{i:05d}", f"Get-Huge{i:05d}", COMMAND, "") for i in range(HUGE_COMPLETIONS)]
    elif mode == "completion-garbage":
        index, length, found = -7, -3, "not a list of completions"
    result = PSCustomObject(
        CurrentMatchIndex=-1, ReplacementIndex=index, ReplacementLength=length, CompletionMatches=found
    )
    result.PSObject.type_names = ["System.Management.Automation.CommandCompletion", "System.Object"]
    result.PSObject.to_string = "System.Management.Automation.CommandCompletion"
    yield result


def _install_aliases() -> None:
    for alias, target in ALIASES.items():
        if target in COMMANDS and alias not in COMMANDS:
            COMMANDS[alias] = COMMANDS[target]


_install_aliases()
