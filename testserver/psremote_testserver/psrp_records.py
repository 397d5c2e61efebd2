"""Error records and .NET-shaped objects the PSRP commands emit.

The shapes follow what Windows PowerShell 5.1 sends (see the records in
shared/conformance/windows-transcripts): exception type chains, fully
qualified error ids and the ``Category: (target:type) [activity], reason``
category message.
"""

from __future__ import annotations

import datetime
from typing import Any, List, Optional

from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PSDateTime,
)

HRESULT_FAIL = -2146233087  # COR_E_EXCEPTION, what PowerShell's exceptions carry


class CategoryInfo(ErrorCategoryInfo):
    """ErrorCategoryInfo whose message reads like PowerShell's (with the colon after the category)."""

    def __str__(self) -> str:
        return (
            f"{self.Category.name}: ({self.TargetName or ''}:{self.TargetType or ''}) "
            f"[{self.Activity or ''}], {self.Reason or ''}"
        )


def exception(type_chain: List[str], message: str) -> NETException:
    """A serialisable .NET exception; ``type_chain`` lists the most specific types first, without System.Exception."""
    value = NETException(Message=message, HResult=HRESULT_FAIL)
    value.PSObject.type_names = list(type_chain) + ["System.Exception", "System.Object"]
    value.PSObject.to_string = f"{type_chain[0] if type_chain else 'System.Exception'}: {message}"
    return value


RUNTIME = ["System.Management.Automation.RuntimeException", "System.SystemException"]


def record(
    type_chain: List[str],
    message: str,
    error_id: str,
    category: ErrorCategory,
    target: Any = None,
    activity: str = "",
    reason: Optional[str] = None,
    target_name: Optional[str] = None,
    target_type: Optional[str] = None,
) -> ErrorRecord:
    reason = reason or (type_chain[0].rsplit(".", 1)[-1] if type_chain else "Exception")
    if target_name is None:
        target_name = "" if target is None else str(target)
    if target_type is None:
        target_type = "" if target is None else _type_name(target)
    value = ErrorRecord(
        Exception=exception(type_chain, message),
        CategoryInfo=CategoryInfo(
            Category=category, Activity=activity, Reason=reason, TargetName=target_name, TargetType=target_type
        ),
        TargetObject=target,
        FullyQualifiedErrorId=error_id,
    )
    value.PSObject.to_string = message
    return value


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Int32"
    if isinstance(value, float):
        return "Double"
    if isinstance(value, str):
        return "String"
    names = getattr(getattr(value, "PSObject", None), "type_names", None)
    if names:
        return names[0].rsplit(".", 1)[-1]
    return type(value).__name__


# -- the records the command set uses ------------------------------------------------------------------
def command_not_found(name: str) -> ErrorRecord:
    message = (
        f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable program. "
        "Check the spelling of the name, or if a path was included, verify that the path is correct and try again."
    )
    return record(
        ["System.Management.Automation.CommandNotFoundException"] + RUNTIME,
        message,
        "CommandNotFoundException",
        ErrorCategory.ObjectNotFound,
        target=name,
    )


def scripts_not_allowed(text: str) -> ErrorRecord:
    """What a no-language (JEA) endpoint answers to any script."""
    return record(
        ["System.Management.Automation.ParseException"] + RUNTIME,
        "The syntax is not supported by this runspace. This can occur if the runspace is in no-language mode.",
        "ScriptsNotAllowed",
        ErrorCategory.ParserError,
        target=text,
        reason="ParseException",
    )


def parse_error(text: str, message: str) -> ErrorRecord:
    return record(
        ["System.Management.Automation.ParseException"] + RUNTIME,
        message,
        "ParseException",
        ErrorCategory.ParserError,
        target=text,
    )


def thrown(message: str) -> ErrorRecord:
    """A ``throw "message"`` error record (script-terminating)."""
    return record(
        ["System.Management.Automation.RuntimeException", "System.SystemException"],
        message,
        message,
        ErrorCategory.OperationStopped,
        target=message,
        reason="RuntimeException",
    )


def write_error(message: str, error_id: Optional[str], category: ErrorCategory, target: Any) -> ErrorRecord:
    exception_type = "Microsoft.PowerShell.Commands.WriteErrorException"
    return record(
        [exception_type, "System.SystemException"],
        message,
        error_id or exception_type,
        category,
        target=target,
        activity="Write-Error",
        reason="WriteErrorException",
        target_name="" if target is None else None,
        target_type="" if target is None else None,
    )


def parameter_error(command: str, cmdlet_class: str, error_id: str, message: str, target: Any = None) -> ErrorRecord:
    return record(
        ["System.Management.Automation.ParameterBindingException"] + RUNTIME,
        message,
        f"{error_id},{cmdlet_class}",
        ErrorCategory.InvalidArgument,
        target=target,
        activity=command,
        reason="ParameterBindingException",
    )


def host_unavailable(command: str, cmdlet_class: str) -> ErrorRecord:
    message = (
        "A command that prompts the user failed because the host program or the command type does not support user "
        "interaction. The host was attempting to request input from the user."
    )
    return record(
        ["System.Management.Automation.Host.HostException"] + RUNTIME,
        message,
        f"HostFunctionNotImplemented,{cmdlet_class}",
        ErrorCategory.NotImplemented,
        activity=command,
        reason="HostException",
    )


def now() -> PSDateTime:
    return to_ps_datetime(datetime.datetime.now().astimezone())


def to_ps_datetime(value: datetime.datetime) -> PSDateTime:
    return PSDateTime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        tzinfo=value.tzinfo,
    )
