"""The engine that runs a PSRP pipeline's commands (psrp_commands holds the commands themselves).

There is no PowerShell here. A pipeline's ``Cmds`` (and scripts in the
language of psrp_script) are executed by ``Runner`` against a fixed command
set written in Python; every object and record they produce goes to the
client as a real PSRP message through psrpcore's ServerPipeline (via the
``PipelineHost`` the pool provides). README.md lists the commands.

Error semantics follow PowerShell's three kinds of error:

* non-terminating (Write-Error, a missing path): an error record, the
  command goes on;
* statement-terminating (unknown command, parameter binding, a host that
  cannot prompt): inside a script the record goes to the error stream and
  the next statement runs; for a ``Cmds`` command the pipeline fails;
* script-terminating (Invoke-Failure, a script that does not parse, a script
  on the Restricted endpoint): the pipeline fails with the record.
"""

from __future__ import annotations

import abc
import inspect
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

from psrpcore.types import (
    DebugRecord,
    ErrorCategory,
    ErrorRecord,
    InformationRecord,
    PSDouble,
    PSObject,
    VerboseRecord,
    WarningRecord,
)

from . import psrp_records as records
from . import psrp_script as script

# -- control flow ----------------------------------------------------------------------------------------


class PipelineStopped(Exception):
    """The client asked to stop the pipeline (or the pool is going away)."""


class TerminatingError(Exception):
    """Statement-terminating error."""

    def __init__(self, error: ErrorRecord) -> None:
        super().__init__(str(error))
        self.record = error


class ScriptTerminatingError(TerminatingError):
    """Ends the whole pipeline (state Failed)."""


class ScriptExit(Exception):
    """``exit [code]`` ran: the remaining statements are skipped and the pipeline completes."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exit {code}")
        self.code = code


class HostCallFailed(Exception):
    """The client answered a host call with an error record."""

    def __init__(self, error: Any) -> None:
        super().__init__(str(error))
        self.record = error


class RawItem:
    """An object as CLIXML bytes: client input taken without deserialising it, or output serialised once."""

    __slots__ = ("clixml",)

    def __init__(self, clixml: bytes) -> None:
        self.clixml = clixml


class PipelineHost(abc.ABC):
    """What the engine needs from the pipeline it runs in (implemented by psrp_pool.Pipeline)."""

    @abc.abstractmethod
    def check_stop(self) -> None:
        """Raise PipelineStopped if the pipeline was asked to stop."""

    @abc.abstractmethod
    def sleep(self, seconds: float) -> None:
        """Sleep, waking (and raising PipelineStopped) as soon as a stop arrives."""

    @abc.abstractmethod
    def write_item(self, item: Any) -> None:
        """One object of the pipeline's output (a RawItem goes out as its bytes)."""

    @abc.abstractmethod
    def write_error(self, error: ErrorRecord) -> None: ...

    @abc.abstractmethod
    def write_warning(self, message: str) -> None: ...

    @abc.abstractmethod
    def write_verbose(self, message: str) -> None: ...

    @abc.abstractmethod
    def write_debug(self, message: str) -> None: ...

    @abc.abstractmethod
    def write_information(self, data: Any, source: str, tags: List[str]) -> None: ...

    @abc.abstractmethod
    def write_progress(self, **fields: Any) -> None: ...

    @abc.abstractmethod
    def host_ui_available(self) -> bool:
        """Whether the client declared a host with a UI for this pipeline."""

    @abc.abstractmethod
    def host_info(self) -> Any:
        """The psrpcore HostInfo that applies to this pipeline (None when the client sent none)."""

    @abc.abstractmethod
    def host_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a ServerHostRequestor method; waits for the client's answer unless the method is void."""

    @abc.abstractmethod
    def serialize(self, value: Any) -> bytes: ...

    @abc.abstractmethod
    def deserialize(self, clixml: bytes) -> Any: ...

    @abc.abstractmethod
    def input_items(self) -> Optional[Iterator[Any]]:
        """The client's pipeline input (None when the pipeline has NoInput)."""

    @property
    @abc.abstractmethod
    def session(self) -> "SessionState": ...


@dataclass
class SessionState:
    """Per-runspace-pool state that commands may change (reset by RESET_RUNSPACE_STATE)."""

    environment: Dict[str, str] = field(default_factory=dict)
    location: Optional[str] = None  # Set-Location's; None is this process's working directory

    def reset(self) -> None:
        self.environment.clear()
        self.location = None


@dataclass
class Configuration:
    name: str
    restricted: bool = False
    allowed: Optional[Tuple[str, ...]] = None  # lower-case command names, None = all


CONFIGURATIONS = {
    "microsoft.powershell": Configuration("Microsoft.PowerShell"),
    "restricted": Configuration("Restricted", restricted=True, allowed=("get-date", "write-output")),
}

# -- streams ---------------------------------------------------------------------------------------------
OUTPUT, NULL = "output", "null"
_RESULT_OUTPUT = 1
_RESULT_ERROR = 2
_RESULT_NULL = (8, 0x40)  # .NET PipelineResultTypes.Null; MS-PSRP's flag value


def _code(value: Any) -> int:
    if value is None:
        return 0
    return int(getattr(value, "value", value) or 0)


def _target(value: Any) -> Optional[str]:
    code = _code(value)
    if code == _RESULT_OUTPUT:
        return OUTPUT
    if code in _RESULT_NULL:
        return NULL
    return None


def merges_of(command: Any) -> Dict[str, str]:
    """Where a psrpcore Command sends its non-output streams (MergeMyResult/MergeToResult, Merge*)."""
    merges: Dict[str, str] = {}
    if _code(command.merge_my) == _RESULT_ERROR:
        target = _target(command.merge_to)
        if target:
            merges["error"] = target
    for kind in ("error", "warning", "verbose", "debug", "information"):
        target = _target(getattr(command, f"merge_{kind}", None))
        if target:
            merges[kind] = target
    return merges


class Streams:
    """Routes records to the client, or into a command's output when merged (2>&1 and friends)."""

    def __init__(
        self,
        host: PipelineHost,
        parent: Optional["Streams"] = None,
        merges: Optional[Dict[str, str]] = None,
        pending: Optional[Deque[Any]] = None,
    ) -> None:
        self.host = host
        self.parent = parent
        self.merges = merges or {}
        self.pending = pending

    def _route(self, kind: str, make_object: Callable[[], Any], write: Callable[[], None]) -> None:
        target = self.merges.get(kind)
        if target == OUTPUT and self.pending is not None:
            self.pending.append(make_object())
        elif target == NULL:
            return
        elif self.parent is not None:
            self.parent._route(kind, make_object, write)
        else:
            write()

    def error(self, error: ErrorRecord) -> None:
        self._route("error", lambda: error, lambda: self.host.write_error(error))

    def warning(self, message: str) -> None:
        self._route("warning", lambda: WarningRecord(Message=message), lambda: self.host.write_warning(message))

    def verbose(self, message: str) -> None:
        self._route("verbose", lambda: VerboseRecord(Message=message), lambda: self.host.write_verbose(message))

    def debug(self, message: str) -> None:
        self._route("debug", lambda: DebugRecord(Message=message), lambda: self.host.write_debug(message))

    def information(self, data: Any, source: str, tags: Sequence[str]) -> None:
        self._route(
            "information",
            lambda: InformationRecord.create(data, source, tags=list(tags)),
            lambda: self.host.write_information(data, source, list(tags)),
        )

    def progress(self, **fields: Any) -> None:
        self.host.write_progress(**fields)


# -- parameters ------------------------------------------------------------------------------------------
@dataclass
class Param:
    name: str
    position: Optional[int] = None
    switch: bool = False
    remaining: bool = False  # takes every positional value no positional parameter took
    kind: str = "any"  # any, str, int, float, list, strlist, intlist
    mandatory: bool = False
    aliases: Tuple[str, ...] = ()


_DOTNET_TYPES = {"int": "System.Int32", "float": "System.Double", "str": "System.String", "intlist": "System.Int32[]"}


@dataclass
class CommandSpec:
    name: str
    func: Callable[["Invocation"], Iterator[Any]]
    params: List[Param]
    cmdlet_class: str
    raw_input: bool = False  # consumes pipeline input as RawItem without deserialising

    def find(self, name: str) -> Optional[Param]:
        lowered = name.lower()
        for param in self.params:
            if param.name.lower() == lowered or lowered in (a.lower() for a in param.aliases):
                return param
        matches = [p for p in self.params if p.name.lower().startswith(lowered)]
        return matches[0] if len(matches) == 1 else None

    def error(self, error_id: str, message: str, target: Any = None) -> TerminatingError:
        return TerminatingError(records.parameter_error(self.name, self.cmdlet_class, error_id, message, target))


def _convert(spec: CommandSpec, param: Param, value: Any) -> Any:
    kind = param.kind
    if param.switch:
        if value is None:
            return True
        if isinstance(value, str):
            return value.strip().lower() not in ("false", "0", "")
        return bool(value)
    if value is None or kind == "any":
        return value
    try:
        if kind == "str":
            return value if isinstance(value, str) else text_of(value)
        if kind == "int":
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, float):
                if value != int(value):
                    return int(round(value))
                return int(value)
            return (
                int(str(value).strip(), 0) if str(value).strip().lower().startswith("0x") else int(str(value).strip())
            )
        if kind == "float":
            return float(value)
        items = value if isinstance(value, (list, tuple)) else [value]
        if kind == "list":
            return list(items)
        if kind == "strlist":
            return [text_of(item) for item in items]
        if kind == "intlist":
            return [int(item) for item in items]
    except (TypeError, ValueError):
        type_name = _DOTNET_TYPES.get(kind, "System.Object")
        raise spec.error(
            "CannotConvertArgumentNoMessage",
            f'Cannot bind parameter \'{param.name}\'. Cannot convert value "{text_of(value)}" to type "{type_name}". '
            'Error: "Input string was not in a correct format."',
            value,
        ) from None
    return value


def bind(spec: CommandSpec, pairs: Sequence[Tuple[Optional[str], Any]]) -> Dict[str, Any]:
    """Named and positional arguments -> {parameter name: converted value}."""
    bound: Dict[str, Any] = {}
    positional: List[Any] = []
    for name, value in pairs:
        if name is None:
            positional.append(value)
            continue
        param = spec.find(name)
        if param is None:
            raise spec.error(
                "NamedParameterNotFound", f"A parameter cannot be found that matches parameter name '{name}'.", name
            )
        if param.name in bound:
            raise spec.error(
                "ParameterAlreadyBound",
                f"Cannot bind parameter because parameter '{param.name}' is specified more than once.",
                name,
            )
        bound[param.name] = _convert(spec, param, value)
    slots = sorted((p for p in spec.params if p.position is not None), key=lambda p: p.position)
    rest = next((p for p in spec.params if p.remaining), None)
    extra: List[Any] = []
    for value in positional:
        slot = next((p for p in slots if p.name not in bound), None)
        if slot is not None:
            bound[slot.name] = _convert(spec, slot, value)
        elif rest is not None and rest.name not in bound:
            extra.append(value)
        else:
            raise spec.error(
                "PositionalParameterNotFound",
                f"A positional parameter cannot be found that accepts argument '{text_of(value)}'.",
                value,
            )
    if extra and rest is not None:
        bound[rest.name] = _convert(spec, rest, extra[0] if len(extra) == 1 else extra)
    missing = [p.name for p in spec.params if p.mandatory and p.name not in bound]
    if missing:
        raise spec.error(
            "MissingMandatoryParameter",
            f"Cannot process command because of one or more missing mandatory parameters: {' '.join(missing)}.",
        )
    return bound


def script_pairs(spec: CommandSpec, call: script.CommandCall) -> List[Tuple[Optional[str], Any]]:
    """A script command's tokens as (name, value) pairs; switches do not take the next value."""
    pairs: List[Tuple[Optional[str], Any]] = []
    arguments = call.arguments
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if isinstance(argument, script.Parameter):
            param = spec.find(argument.name)
            if param is None:
                raise spec.error(
                    "NamedParameterNotFound",
                    f"A parameter cannot be found that matches parameter name '{argument.name}'.",
                    argument.name,
                )
            if argument.has_value:
                pairs.append((param.name, argument.value))
            elif param.switch:
                pairs.append((param.name, True))
            elif index + 1 < len(arguments) and isinstance(arguments[index + 1], script.Values):
                pairs.append((param.name, arguments[index + 1].value))
                index += 1
            else:
                type_name = _DOTNET_TYPES.get(param.kind, "System.Object")
                raise spec.error(
                    "MissingArgument",
                    f"Missing an argument for parameter '{param.name}'. Specify a parameter of type '{type_name}' and try again.",
                    param.name,
                )
        else:
            pairs.append((None, argument.value))
        index += 1
    return pairs


def cmds_pairs(spec: CommandSpec, command: Any) -> List[Tuple[Optional[str], Any]]:
    """A psrpcore Command's Args; ``{N: name, V: null}`` is a switch that is present."""
    pairs: List[Tuple[Optional[str], Any]] = []
    for name, value in command.parameters:
        if name:
            param = spec.find(str(name))
            if param is not None and param.switch and value is None:
                value = True
        pairs.append((str(name) if name else None, value))
    return pairs


# -- invocation ------------------------------------------------------------------------------------------
class Invocation:
    """One command running in a pipeline: its bound parameters, input and streams."""

    def __init__(
        self,
        runner: "Runner",
        spec: CommandSpec,
        params: Dict[str, Any],
        upstream: Optional[Iterator[Any]],
        streams: Streams,
    ) -> None:
        self.runner = runner
        self.host = runner.host
        self.spec = spec
        self.params = params
        self.upstream = upstream
        self.streams = streams

    def get(self, name: str, default: Any = None) -> Any:
        value = self.params.get(name)
        return default if value is None else value

    def has(self, name: str) -> bool:
        return name in self.params

    def inputs(self) -> Iterator[Any]:
        if self.upstream is None:
            return iter(())
        return self.upstream

    def drain(self) -> None:
        for _ in self.inputs():
            pass

    def value(self, item: Any) -> Any:
        """The object itself (deserialising raw input on demand)."""
        if isinstance(item, RawItem):
            return self.host.deserialize(item.clixml)
        return item

    def fqid(self, error_id: str) -> str:
        return f"{error_id},{self.spec.cmdlet_class}"


def text_of(value: Any) -> str:
    """PowerShell-ish string conversion."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (list, tuple)):
        return " ".join(text_of(v) for v in value)
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, PSObject) and not isinstance(value, (str, int, float)):
        to_string = value.PSObject.to_string
        if to_string is not None:
            return str(to_string)
    return str(value)


def _drain_pending(generator: Iterator[Any], pending: Deque[Any]) -> Iterator[Any]:
    for item in generator:
        while pending:
            yield pending.popleft()
        yield item
    while pending:
        yield pending.popleft()


class Runner:
    """Runs one pipeline's statements (psrpcore ``Command`` lists) to completion."""

    def __init__(self, host: PipelineHost, configuration: Configuration) -> None:
        self.host = host
        self.configuration = configuration
        self.base = Streams(host)

    # -- entry points ----------------------------------------------------------------------------------
    def run(self, commands: Sequence[Any], no_input: bool) -> None:
        statements = split_statements(commands)
        external = None if no_input else self.host.input_items()
        try:
            for index, statement in enumerate(statements):
                upstream = self._cmds_statement(statement, external if index == 0 else None)
                for item in upstream:
                    self.host.check_stop()
                    self.host.write_item(item)
        except ScriptExit:
            pass  # PowerShell completes the pipeline; the code went to the host (SetShouldExit)
        self.host.check_stop()

    @classmethod
    def wants_raw_input(cls, commands: Sequence[Any]) -> bool:
        """Whether the command receiving the client's input can take it undeserialised."""
        if not commands:
            return False
        first = commands[0]
        name = first.command_text
        if first.is_script:
            try:
                statements = script.parse(name)
            except script.ScriptError:
                return False
            if not statements or not statements[0].commands or statements[0].source is not None:
                return False
            name = statements[0].commands[0].name
        spec = COMMANDS.get(name.lower())
        return spec is not None and spec.raw_input

    # -- Cmds ----------------------------------------------------------------------------------------------
    def _lookup(self, name: str) -> CommandSpec:
        spec = COMMANDS.get(name.lower())
        allowed = self.configuration.allowed
        if spec is None or (allowed is not None and spec.name.lower() not in allowed):
            raise TerminatingError(records.command_not_found(name))
        return spec

    def _cmds_statement(self, commands: Sequence[Any], external: Optional[Iterator[Any]]) -> Iterator[Any]:
        # Resolve and bind every command before anything runs, as PowerShell prepares a pipeline.
        stages: List[Callable[[Optional[Iterator[Any]]], Iterator[Any]]] = []
        for command in commands:
            merges = merges_of(command)
            pending: Deque[Any] = deque()
            streams = Streams(self.host, self.base, merges, pending) if merges else self.base
            if command.is_script:
                if self.configuration.restricted:
                    raise ScriptTerminatingError(records.scripts_not_allowed(command.command_text))
                native = FILE_SCRIPTS(command.command_text) if FILE_SCRIPTS else None
                if native is not None:
                    # A known file-transfer script (psrp_files): run natively with its arguments.
                    spec = self._lookup(native)
                    stage = self._command_stage(spec, bind(spec, cmds_pairs(spec, command)), streams)
                else:
                    statements = self.parse(command.command_text)
                    stage = self._script_stage(statements, streams)
            else:
                spec = self._lookup(command.command_text)
                params = bind(spec, cmds_pairs(spec, command))
                stage = self._command_stage(spec, params, streams)
            if merges:
                stage = self._with_pending(stage, pending)
            stages.append(stage)
        upstream = external
        for stage in stages:
            upstream = stage(upstream)
        return upstream if upstream is not None else iter(())

    @staticmethod
    def _with_pending(stage: Callable[[Optional[Iterator[Any]]], Iterator[Any]], pending: Deque[Any]):
        return lambda upstream: _drain_pending(stage(upstream), pending)

    def _command_stage(self, spec: CommandSpec, params: Dict[str, Any], streams: Streams):
        return lambda upstream: self._invoke(spec, params, upstream, streams)

    def _script_stage(self, statements: List[script.Statement], streams: Streams):
        return lambda upstream: self.run_script(statements, upstream, streams)

    def _invoke(
        self, spec: CommandSpec, params: Dict[str, Any], upstream: Optional[Iterator[Any]], streams: Streams
    ) -> Iterator[Any]:
        invocation = Invocation(self, spec, params, upstream, streams)
        for item in spec.func(invocation):
            self.host.check_stop()
            yield item

    # -- scripts -------------------------------------------------------------------------------------------
    def parse(self, text: str) -> List[script.Statement]:
        try:
            return script.parse(text)
        except script.ScriptError as exc:
            raise ScriptTerminatingError(records.parse_error(text, str(exc))) from None

    def run_script(
        self, statements: List[script.Statement], upstream: Optional[Iterator[Any]], streams: Streams
    ) -> Iterator[Any]:
        for index, statement in enumerate(statements):
            try:
                yield from self._script_statement(statement, upstream if index == 0 else None, streams)
            except ScriptTerminatingError:
                raise
            except TerminatingError as error:
                streams.error(error.record)
            except ZeroDivisionError:
                streams.error(
                    records.record(
                        ["System.Management.Automation.RuntimeException", "System.SystemException"],
                        "Attempted to divide by zero.",
                        "RuntimeException",
                        ErrorCategory.NotSpecified,
                        reason="RuntimeException",
                    )
                )

    def _script_statement(
        self, statement: script.Statement, upstream: Optional[Iterator[Any]], streams: Streams
    ) -> Iterator[Any]:
        if statement.arithmetic is not None:
            value = statement.arithmetic
            yield PSDouble(value) if isinstance(value, float) else value
            return
        if statement.source is not None:
            upstream = iter([literal(v) for v in statement.source.items])
        elif len(statement.commands) == 1 and statement.commands[0].name.lower() == "exit":
            self._exit(statement.commands[0])
        chain = []
        for call in statement.commands:
            spec = self._lookup(call.name)
            chain.append((spec, bind(spec, script_pairs(spec, call))))
        for spec, params in chain:
            upstream = self._invoke(spec, params, upstream, streams)
        if upstream is not None:
            yield from upstream


    def _exit(self, call: script.CommandCall) -> None:
        """The ``exit`` keyword: ``exit``, ``exit N`` or ``exit $LASTEXITCODE``. As in a remote
        PowerShell runspace, the code goes to the client's host as a SetShouldExit call (when
        the client declared a host) and the script ends without an error. No native program
        runs in a PSRP pipeline here, so ``$LASTEXITCODE`` is always ``$null``, which is 0."""
        if len(call.arguments) > 1 or any(isinstance(a, script.Parameter) for a in call.arguments):
            raise ScriptTerminatingError(records.parse_error("exit", "Unexpected token in expression or statement."))
        value = call.arguments[0].value if call.arguments else None
        if isinstance(value, str) and value.lower() == "$lastexitcode":
            value = None
        try:
            code = 0 if value is None else int(value)
        except (TypeError, ValueError):
            raise TerminatingError(
                records.record(
                    ["System.Management.Automation.RuntimeException", "System.SystemException"],
                    f'Cannot convert value "{text_of(value)}" to type "System.Int32".',
                    "InvalidCastFromStringToInteger",
                    ErrorCategory.InvalidArgument,
                    reason="RuntimeException",
                )
            ) from None
        info = self.host.host_info()
        if info is not None and not info.IsHostNull:
            self.host.host_call("set_should_exit", code)
        raise ScriptExit(code)


def literal(value: Any) -> Any:
    """Script literals as PowerShell types them (a decimal is a Double)."""
    return PSDouble(value) if isinstance(value, float) else value


def split_statements(commands: Sequence[Any]) -> List[List[Any]]:
    statements: List[List[Any]] = [[]]
    for command in commands:
        statements[-1].append(command)
        if command.end_of_statement:
            statements.append([])
    return [statement for statement in statements if statement]


# -- the command registry --------------------------------------------------------------------------------
COMMANDS: Dict[str, CommandSpec] = {}
# Recognises file-transfer scripts by their text (set by psrp_files): script text -> command name.
FILE_SCRIPTS: Optional[Callable[[str], Optional[str]]] = None


def command(name: str, cmdlet_class: str, params: Sequence[Param] = (), raw_input: bool = False):
    def register(func: Callable[[Invocation], Iterator[Any]]):
        assert inspect.isgeneratorfunction(func), f"{name} must be a generator"
        COMMANDS[name.lower()] = CommandSpec(name, func, list(params), cmdlet_class, raw_input)
        return func

    return register
