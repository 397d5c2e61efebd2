"""GET_COMMAND_METADATA: describe the endpoint's commands (MS-PSRP 2.2.3.21-2.2.3.23).

The output is a CommandMetadataCount followed by one CommandMetadata object
per matching command, as a PowerShell server answers.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Iterator

from psrpcore.types import CommandMetadataCount, CommandTypes, PSCustomObject, PSDict, PSNoteProperty, PSObject

from .psrp_runtime import COMMANDS, CommandSpec, Configuration

_TYPES = {
    "int": "System.Int32",
    "float": "System.Double",
    "str": "System.String",
    "strlist": "System.String[]",
    "intlist": "System.Int32[]",
}


def _parameter(param: Any) -> PSObject:
    value = PSObject()
    value.PSObject.type_names = ["System.Management.Automation.ParameterMetadata", "System.Object"]
    type_name = (
        "System.Management.Automation.SwitchParameter" if param.switch else _TYPES.get(param.kind, "System.Object")
    )
    for name, prop in (
        ("Name", param.name),
        ("ParameterType", type_name),
        ("Aliases", list(param.aliases)),
        ("IsDynamic", False),
        ("SwitchParameter", param.switch),
    ):
        value.PSObject.adapted_properties.append(PSNoteProperty(name, value=prop))
    value.PSObject.to_string = param.name
    return value


def _metadata(spec: CommandSpec) -> PSCustomObject:
    value = PSCustomObject(
        Name=spec.name,
        Namespace=spec.cmdlet_class.rsplit(".", 1)[0],
        HelpUri="",
        CommandType=CommandTypes.Cmdlet,
        OutputType=[],
        Parameters=PSDict({param.name: _parameter(param) for param in spec.params}),
    )
    value.PSObject.type_names.insert(0, "Selected.System.Management.Automation.CmdletInfo")
    return value


def command_metadata(request: Any, configuration: Configuration) -> Iterator[Any]:
    patterns = [str(n).lower() for n in (request.name or ["*"])]
    wanted = int(getattr(request.command_type, "value", request.command_type) or CommandTypes.All.value)
    found = []
    if wanted & CommandTypes.Cmdlet.value:
        for key in sorted(COMMANDS):
            spec = COMMANDS[key]
            if configuration.allowed is not None and key not in configuration.allowed:
                continue
            if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns):
                found.append(spec)
    yield CommandMetadataCount(Count=len(found))
    for spec in found:
        yield _metadata(spec)
