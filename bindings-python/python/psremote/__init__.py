"""psremote: PowerShell Remoting (WinRM, PSRP) for Python, backed by a Rust core.

Blocking API::

    import psremote

    with psremote.Client("server", username="DOMAIN\\\\user", password="...") as client:
        result = client.run_ps("Get-Process | Select-Object -First 3")
        for obj in result:
            print(obj.ProcessName)
        print(client.run_cmd("ipconfig", ["/all"]).text)
        with client.cmd_shell(environment={"X": "1"}) as shell:   # WinRS, UTF-8 output
            for stream, data in shell.start("ping", ["-n", "3", "host"]):
                print(stream, data)

asyncio API: :class:`AsyncClient` (``async with``, ``await client.run_ps(...)``).
Fleets: :func:`run_many` runs one script on many hosts at once (``psremote.aio.run_many`` for
asyncio); :func:`expand_hosts` reads host lists, files and ``web[01-40]`` patterns.
Lower level: :meth:`Client.runspace_pool`, :class:`PowerShell` (``add_command``,
``add_parameter``, ``add_script``, ``add_statement``, ``invoke``, ``start``), host callbacks
(:class:`PSHost`), values (:class:`PSObject`, :class:`SecureString`, :class:`PSCredential`,
:class:`PSEnum`), one exception hierarchy under :class:`PSRemoteError`, logging under the
``psremote`` logger.
"""

from psremote._native import __version__
from psremote._logging import TRACE, disable_trace, enable_trace
from psremote.aio import AsyncClient, AsyncCmdProcess, AsyncCmdShell, AsyncPipeline, AsyncPowerShell, AsyncRunspacePool
from psremote.client import Client, Pipeline, PowerShell, RunspacePool
from psremote.cmd import CmdProcess, CmdShell
from psremote.exceptions import (
    AuthenticationError,
    ClosedError,
    ConfigurationError,
    ConnectError,
    DisconnectedError,
    HostKeyError,
    NotFoundError,
    OperationTimeoutError,
    OutputTooLargeError,
    PipelineError,
    ProtocolError,
    ProxyError,
    PSRemoteError,
    SecurityPolicyError,
    TLSError,
    TransportError,
    WSManFault,
)
from psremote.exceptions import (
    FileTransferError,
    HashMismatchError,
    TransferDiskFullError,
    TransferFileNotFoundError,
    TransferIsADirectoryError,
    TransferPermissionError,
)
from psremote.fleet import AsyncFleetRun, FleetRun, FleetSummary, HostResult, run_many
from psremote.host import ConsoleHost, PSHost
from psremote.hosts import expand_hosts
from psremote.progress import ProgressDisplay
from psremote.records import (
    CmdChunk,
    CmdResult,
    ConnectionInfo,
    ServerConfig,
    ErrorRecord,
    HostCall,
    InformationRecord,
    PipelineState,
    ProgressRecord,
    PSEvent,
    PSResult,
)
from psremote.sessions import PoolInfo
from psremote.values import PSCredential, PSCustomObject, PSEnum, PSObject, SecureString, to_pscustomobject

__all__ = [
    "TRACE",
    "AsyncClient",
    "AsyncCmdProcess",
    "AsyncCmdShell",
    "AsyncFleetRun",
    "AsyncPipeline",
    "AsyncPowerShell",
    "AsyncRunspacePool",
    "AuthenticationError",
    "Client",
    "ClosedError",
    "CmdChunk",
    "CmdProcess",
    "CmdResult",
    "CmdShell",
    "ConfigurationError",
    "ConnectError",
    "ConnectionInfo",
    "ServerConfig",
    "ConsoleHost",
    "DisconnectedError",
    "FleetRun",
    "FleetSummary",
    "ErrorRecord",
    "HostCall",
    "HostResult",
    "InformationRecord",
    "NotFoundError",
    "OperationTimeoutError",
    "OutputTooLargeError",
    "PSCredential",
    "PSCustomObject",
    "PSEnum",
    "PSEvent",
    "PSHost",
    "PSObject",
    "PSRemoteError",
    "PSResult",
    "Pipeline",
    "PipelineError",
    "PipelineState",
    "PoolInfo",
    "PowerShell",
    "ProgressDisplay",
    "ProgressRecord",
    "ProtocolError",
    "ProxyError",
    "SecurityPolicyError",
    "TLSError",
    "RunspacePool",
    "SecureString",
    "TransportError",
    "WSManFault",
    "FileTransferError",
    "HashMismatchError",
    "HostKeyError",
    "TransferDiskFullError",
    "TransferFileNotFoundError",
    "TransferIsADirectoryError",
    "TransferPermissionError",
    "__version__",
    "disable_trace",
    "enable_trace",
    "expand_hosts",
    "run_many",
    "to_pscustomobject",
]
