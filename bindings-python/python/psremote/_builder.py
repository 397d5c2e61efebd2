"""The pipeline description shared by the sync and async PowerShell classes."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple, TypeVar

from psremote.exceptions import ConfigurationError
from psremote.values import contains_secret

_B = TypeVar("_B", bound="PipelineBuilder")

_MERGE_FLAGS = ("merge_error", "merge_warning", "merge_verbose", "merge_debug", "merge_information")


def _new_command(text: str, is_script: bool, use_local_scope: Optional[bool]) -> Dict[str, Any]:
    return {
        "text": text,
        "is_script": is_script,
        "use_local_scope": use_local_scope,
        "parameters": [],
        "merge_error": False,
        "merge_warning": False,
        "merge_verbose": False,
        "merge_debug": False,
        "merge_information": False,
    }


class PipelineBuilder:
    """Statements of commands and scripts, with their parameters, like PowerShell's
    ``System.Management.Automation.PowerShell`` class. Every method returns ``self``::

        ps.add_command("Get-ChildItem").add_parameter("Path", "C:\\\\").add_parameter("Force")
        ps.add_command("Select-Object").add_parameter("First", 3)
        ps.add_statement().add_script("Get-Date")
    """

    def __init__(self) -> None:
        self._statements: List[List[Dict[str, Any]]] = [[]]

    # --- building ---------------------------------------------------------------------------

    def add_command(self: _B, name: str, *, use_local_scope: Optional[bool] = None) -> _B:
        """Appends a command (cmdlet, function or executable) to the current statement."""
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("add_command needs a command name such as 'Get-Process'")
        self._statements[-1].append(_new_command(name, False, use_local_scope))
        return self

    def add_script(self: _B, script: str, use_local_scope: Optional[bool] = None) -> _B:
        """Appends a script to the current statement; its parameters are the script's ``param()``."""
        if not isinstance(script, str):
            raise ConfigurationError(f"add_script needs the script text as a str, not {type(script).__name__}")
        self._statements[-1].append(_new_command(script, True, use_local_scope))
        return self

    def _last(self, action: str) -> Dict[str, Any]:
        statement = self._statements[-1]
        if not statement:
            raise ConfigurationError(f"{action} needs a command: call add_command() or add_script() first")
        return statement[-1]

    def add_parameter(self: _B, name: str, value: Any = None) -> _B:
        """Adds ``-name value`` to the last command; without a value it is a switch (``-Force``)."""
        if not isinstance(name, str) or not name:
            raise ConfigurationError("add_parameter needs a parameter name (without the leading '-')")
        command = self._last("add_parameter")
        command["parameters"].append((name.lstrip("-"), value))
        return self

    def add_parameters(self: _B, parameters: Mapping[str, Any]) -> _B:
        """Adds every ``name: value`` pair, in order."""
        for name, value in parameters.items():
            self.add_parameter(name, value)
        return self

    def add_argument(self: _B, value: Any) -> _B:
        """Adds a positional argument to the last command."""
        command = self._last("add_argument")
        command["parameters"].append((None, value))
        return self

    def add_statement(self: _B) -> _B:
        """Starts a new statement (like ``;`` in a script)."""
        if self._statements[-1]:
            self._statements.append([])
        return self

    def _merge(self: _B, flag: str) -> _B:
        self._last(flag)[flag] = True
        return self

    def merge_error(self: _B) -> _B:
        """Sends the last command's errors to its output (``2>&1``)."""
        return self._merge("merge_error")

    def merge_warning(self: _B) -> _B:
        return self._merge("merge_warning")

    def merge_verbose(self: _B) -> _B:
        return self._merge("merge_verbose")

    def merge_debug(self: _B) -> _B:
        return self._merge("merge_debug")

    def merge_information(self: _B) -> _B:
        return self._merge("merge_information")

    def merge_all(self: _B) -> _B:
        """Sends every stream of the last command to its output (``*>&1``)."""
        command = self._last("merge_all")
        for flag in _MERGE_FLAGS:
            command[flag] = True
        return self

    def clear(self: _B) -> _B:
        """Removes every command."""
        self._statements = [[]]
        return self

    # --- reading ----------------------------------------------------------------------------

    @property
    def commands(self) -> List[List[Tuple[str, List[Tuple[Optional[str], Any]]]]]:
        """The statements as lists of ``(text, parameters)``."""
        return [[(c["text"], list(c["parameters"])) for c in st] for st in self._statements if st]

    def _native_statements(self) -> List[List[Dict[str, Any]]]:
        statements = [st for st in self._statements if st]
        if not statements:
            raise ConfigurationError("the pipeline is empty: call add_command() or add_script() first")
        return statements

    def _describe(self) -> List[str]:
        """Command names for logs: scripts are not logged (they may hold secrets)."""
        return [("<script>" if c["is_script"] else c["text"]) for st in self._statements for c in st]

    def __repr__(self) -> str:
        parts = []
        for st in self._statements:
            if not st:
                continue
            texts = []
            for c in st:
                text = c["text"] if not c["is_script"] else "{" + (c["text"][:40] + ("..." if len(c["text"]) > 40 else "")) + "}"
                for name, value in c["parameters"]:
                    if name is None:
                        texts_value = "***" if contains_secret(value) else repr(value)
                        text += f" {texts_value}"
                    elif value is None:
                        text += f" -{name}"
                    else:
                        shown = "***" if contains_secret(value) else repr(value)
                        text += f" -{name} {shown}"
                texts.append(text)
            parts.append(" | ".join(texts))
        return f"<{type(self).__name__} {'; '.join(parts) or '(empty)'}>"


def script_or_builder(script: Any, builder_type: type) -> PipelineBuilder:
    """Accepts a script text or a PipelineBuilder (of either flavour)."""
    if isinstance(script, PipelineBuilder):
        return script
    if isinstance(script, str):
        builder = builder_type()
        builder.add_script(script)
        return builder
    raise TypeError(f"expected a script (str) or a PowerShell object, not {type(script).__name__}")


# System.Management.Automation.CommandTypes flags, for command_metadata().
COMMAND_TYPES = {
    "alias": 1,
    "function": 2,
    "filter": 4,
    "cmdlet": 8,
    "externalscript": 16,
    "application": 32,
    "script": 64,
    "workflow": 128,
    "configuration": 256,
    "all": 511,
}


def command_type_flags(value: Any) -> int:
    """CommandTypes flags from an int, a name ("Cmdlet"), a comma list ("Alias, Cmdlet") or an
    iterable of names; ``None`` means what Get-Command lists by default (Alias, Function,
    Filter, Cmdlet)."""
    if value is None:
        return 15
    if isinstance(value, bool):
        raise ConfigurationError("command_type must be an int, a name or names of CommandTypes")
    if isinstance(value, int):
        if not 0 < value <= 511:
            raise ConfigurationError(f"command_type {value} is not a CommandTypes value (1-511)")
        return value
    names = value.split(",") if isinstance(value, str) else list(value)
    flags = 0
    for name in names:
        key = str(name).strip().lower()
        if key not in COMMAND_TYPES:
            raise ConfigurationError(f"unknown command type {name!r}; known: {', '.join(sorted(COMMAND_TYPES))}")
        flags |= COMMAND_TYPES[key]
    if flags == 0:
        raise ConfigurationError("command_type names no command type")
    return flags


def string_list(name: str, value: Any) -> List[str]:
    """A str or an iterable of str as a list (None: empty)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    items = list(value)
    if not all(isinstance(i, str) for i in items):
        raise ConfigurationError(f"{name} must be a str or an iterable of str")
    return items
