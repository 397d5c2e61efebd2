"""WS-Management faults in the shape Windows sends them (PROTOCOL.md A.9).

Each constructor mirrors one fault seen from a real server in
shared/conformance/windows-transcripts (or the closest documented code where
no recording exists); messages keep Windows' trailing ". ".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple
from xml.sax.saxutils import escape

FAULT_DETAIL = "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/"

# Codes (decimal, as the f:WSManFault Code attribute carries them).
RESOURCE_NOT_FOUND = 2150858752  # 0x80338000
INVALID_ACTION_URI = 2150858753  # 0x80338001
INVALID_HEADER = 2150858767  # 0x8033800F
OPERATION_TIMEOUT = 2150858793  # 0x80338029
INVALID_SELECTORS = 2150858843  # 0x8033805B
INVALID_PARAMETER = 87
FILE_NOT_FOUND = 2147942402  # HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)
ACCESS_DENIED = 2147942405  # HRESULT_FROM_WIN32(ERROR_ACCESS_DENIED)
DIRECTORY_INVALID = 2147942667  # HRESULT_FROM_WIN32(ERROR_DIRECTORY)
UNSPECIFIED = 2147500037  # E_FAIL
# WinRS codes for disconnected shells (wsmerror.h).
SHELL_DISCONNECTED = 2150859204  # 0x803381C4 ERROR_WINRS_SHELL_DISCONNECTED
CLIENT_SESSION_MISMATCH = 2150859206  # 0x803381C6 ERROR_WINRS_SHELL_CLIENTSESSIONID_MISMATCH
CONNECTED_TO_DIFFERENT_CLIENT = 2150859213  # 0x803381CD ERROR_WINRS_SHELL_CONNECTED_TO_DIFFERENT_CLIENT
# The PowerShell WSMan plugin (pwrshplugin.dll) reports these (PowerShell's WSManPluginErrorCodes).
PS_PROTOCOL_VERSION_MISMATCH = 2152991685  # 0x80540BC5
PS_OPTION_NOT_UNDERSTOOD = 2152991686  # 0x80540BC6
PS_PROTOCOL_VERSION_MISSING = 2152991687  # 0x80540BC7

CMD_PLUGIN = ("Shell cmd plugin", r"%systemroot%\system32\winrscmd.dll")
SHELL_PROVIDER = ("Shell provider", r"%systemroot%\system32\WsmSvc.dll")
PS_PLUGIN = ("microsoft.powershell", r"C:\Windows\system32\pwrshplugin.dll")
# What the plugin says it is compatible with (Windows PowerShell 5.1).
PS_BUILD = "10.0.17763.1"
PS_PROTOCOL = "2.3"


@dataclass(eq=False)
class WSManFault(Exception):
    """A fault reply. ``relates_to`` is filled in by whoever knows the request's MessageID."""

    value: str  # s:Sender or s:Receiver
    subcode: str  # e.g. w:TimedOut
    reason: str
    code: int
    message: str
    detail: Optional[str] = None  # w:FaultDetail URI
    provider: Optional[Tuple[str, str]] = None  # (provider, path) for f:ProviderFault
    nested: bool = False  # ProviderFault wraps a second WSManFault (as for an unknown ShellId)
    relates_to: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.subcode} ({self.code}): {self.message.strip()}"

    def to_xml(self, machine: str) -> str:
        f_ns = 'xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"'
        message = escape(self.message)
        if self.provider is not None:
            provider, path = (escape(part, {'"': "&quot;"}) for part in self.provider)
            if self.nested:
                inner = (
                    f'<f:WSManFault {f_ns} Code="{self.code}" Machine="{machine}">'
                    f"<f:Message>{message}</f:Message></f:WSManFault>"
                )
            else:
                inner = message
            message = f'<f:ProviderFault provider="{provider}" path="{path}">{inner}</f:ProviderFault>'
        detail = f"<w:FaultDetail>{self.detail}</w:FaultDetail>" if self.detail else ""
        return (
            "<s:Fault>"
            f"<s:Code><s:Value>{self.value}</s:Value><s:Subcode><s:Value>{self.subcode}</s:Value></s:Subcode></s:Code>"
            f'<s:Reason><s:Text xml:lang="en-US">{escape(self.reason)}</s:Text></s:Reason>'
            f"<s:Detail>{detail}"
            f'<f:WSManFault {f_ns} Code="{self.code}" Machine="{machine}"><f:Message>{message}</f:Message></f:WSManFault>'
            "</s:Detail></s:Fault>"
        )


def operation_timeout(relates_to: Optional[str] = None) -> WSManFault:
    # Real shape: s:Receiver / w:TimedOut, no FaultDetail, reason and message identical
    # (two trailing spaces, as Windows writes it).
    text = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  "
    return WSManFault("s:Receiver", "w:TimedOut", text, OPERATION_TIMEOUT, text, relates_to=relates_to)


_SELECTORS_REASON = (
    "The WS-Management service cannot process the request because the request contained invalid selectors for the resource. "
)


def unknown_shell() -> WSManFault:
    """Unknown or deleted ShellId (vectors.json wsman-fault-invalid-selectors-real)."""
    return WSManFault(
        "s:Sender",
        "w:InvalidSelectors",
        _SELECTORS_REASON,
        INVALID_SELECTORS,
        _SELECTORS_REASON,
        detail=FAULT_DETAIL + "UnexpectedSelectors",
        provider=SHELL_PROVIDER,
        nested=True,
    )


def unknown_command() -> WSManFault:
    """Unknown CommandId (test_winrs_bad_cmd_id.yml)."""
    return WSManFault(
        "s:Sender",
        "w:InvalidSelectors",
        _SELECTORS_REASON,
        INVALID_SELECTORS,
        "The Windows Remote Shell received a request to perform an operation on a command identifier that does not exist. "
        "Either the command has completed execution or the client specified an invalid command identifier. ",
        detail=FAULT_DETAIL + "UnexpectedSelectors",
    )


def invalid_parameter(message: str = "The parameter is incorrect. ") -> WSManFault:
    """test_winrs_fail_poll_process.yml: a cmd-plugin InvalidParameter."""
    return WSManFault(
        "s:Sender",
        "w:InvalidParameter",
        message,
        INVALID_PARAMETER,
        message,
        detail=FAULT_DETAIL + "InvalidValue",
        provider=CMD_PLUGIN,
    )


def command_start_failed(code: int, message: str) -> WSManFault:
    """test_winrs_no_cmd_shell.yml: the plugin could not start the process."""
    return WSManFault("s:Receiver", "w:InternalError", message, code, message, provider=CMD_PLUGIN)


def invalid_header(message: str, relates_to: Optional[str] = None) -> WSManFault:
    """test_psrp_is_alive_other_wsman_error.yml (bad OperationTimeout)."""
    return WSManFault(
        "s:Sender",
        "a:InvalidMessageInformationHeader",
        "The WS-Management service cannot process the request. The request contains one or more invalid SOAP headers. ",
        INVALID_HEADER,
        message,
        relates_to=relates_to,
    )


def destination_unreachable(resource_uri: str) -> WSManFault:
    """Unknown resource URI: the wording of Windows' "not found in the WS-Management catalog" error."""
    message = (
        f"The WS-Management service cannot process the request. The resource URI ({resource_uri}) was not found in the "
        "WS-Management catalog. The catalog contains the metadata that describes resources, or logical endpoints. "
    )
    return WSManFault(
        "s:Sender",
        "w:DestinationUnreachable",
        "The WS-Management service cannot process the request because the resource URI is not valid. ",
        RESOURCE_NOT_FOUND,
        message,
        detail=FAULT_DETAIL + "InvalidResourceURI",
    )


def action_not_supported(action: str) -> WSManFault:
    message = (
        "The WS-Management service cannot process the request because the WS-Addressing Action URI in the request is "
        f"not compatible with the resource. Action: {action} "
    )
    return WSManFault(
        "s:Sender",
        "a:ActionNotSupported",
        "The action is not supported by the service. ",
        INVALID_ACTION_URI,
        message,
        detail=FAULT_DETAIL + "ActionMismatch",
    )


def _ps_plugin(code: int, message: str) -> WSManFault:
    """An error the PowerShell plugin reports back through WinRM (a ProviderFault naming pwrshplugin.dll)."""
    return WSManFault("s:Receiver", "w:InternalError", message, code, message, provider=PS_PLUGIN)


def psrp_protocol_version_missing() -> WSManFault:
    """Create without the protocolversion option (PowerShell's WSManPluginProtocolVersionNotFound)."""
    return _ps_plugin(
        PS_PROTOCOL_VERSION_MISSING,
        f"An option with name protocolversion is expected from the client. Make sure the client is compatible with the "
        f"build {PS_BUILD} and the protocol version {PS_PROTOCOL} of PowerShell.",
    )


def psrp_protocol_version_mismatch(version: str) -> WSManFault:
    return _ps_plugin(
        PS_PROTOCOL_VERSION_MISMATCH,
        f'<PSProtocolVersionError ServerProtocolVersion="{PS_PROTOCOL}" ServerBuildVersion="{PS_BUILD}">Powershell plugin '
        f"does not support the protocol version {version} requested by client.</PSProtocolVersionError>",
    )


def psrp_option_not_understood(name: str) -> WSManFault:
    return _ps_plugin(
        PS_OPTION_NOT_UNDERSTOOD,
        f"PowerShell plugin does not understand the option {name}. Make sure the client is compatible with the build "
        f"{PS_BUILD} and the protocol version {PS_PROTOCOL} of PowerShell.",
    )


def psrp_invalid_stream(kind: str, allowed: str) -> WSManFault:
    return _ps_plugin(
        INVALID_PARAMETER,
        f"The supplied {kind} stream is not valid. Only {allowed} is supported as {kind} stream.",
    )


def psrp_bad_data(message: str) -> WSManFault:
    """PSRP data the plugin cannot decode (fragments out of order, CLIXML that does not parse)."""
    return _ps_plugin(UNSPECIFIED, message)


def _shell_state(code: int, message: str) -> WSManFault:
    """A WinRS shell-state error: s:Receiver / w:InternalError from the Shell provider (the codes are
    wsmerror.h's; no recording shows these faults, so the wording is the endpoint's own)."""
    return WSManFault("s:Receiver", "w:InternalError", message, code, message, provider=SHELL_PROVIDER, nested=True)


def shell_disconnected(shell_id: str) -> WSManFault:
    """Any request other than Disconnect, Reconnect, Connect, Delete (and Get) on a disconnected shell
    (MS-WSMV 3.1.4.1.31.7), and a Receive that was waiting when the shell was disconnected."""
    return _shell_state(
        SHELL_DISCONNECTED,
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell is disconnected. "
        "Reconnect or connect to the shell and retry the operation. ",
    )


def client_session_mismatch(shell_id: str) -> WSManFault:
    """Reconnect from a client session (wsmv:SessionId) other than the one that disconnected the shell."""
    return _shell_state(
        CLIENT_SESSION_MISMATCH,
        f"The Windows Remote Shell with ShellId {shell_id} cannot be reconnected because the request comes from a "
        "different client session. Use Connect to attach a new client to a disconnected shell. ",
    )


def connected_to_different_client(shell_id: str) -> WSManFault:
    """Connect to a shell that is not disconnected, or Reconnect to one another client holds (MS-WSMV 3.1.4.16-17)."""
    return _shell_state(
        CONNECTED_TO_DIFFERENT_CLIENT,
        f"The Windows Remote Shell with ShellId {shell_id} is connected to a client. Only a disconnected shell can "
        "be connected to. ",
    )


def psrp_connect_invalid(message: str) -> WSManFault:
    """connectXml that is not SESSION_CAPABILITY + CONNECT_RUNSPACEPOOL for this pool (PowerShell's
    ServerConnectFailedOnInputValidation)."""
    return _ps_plugin(UNSPECIFIED, message)


def invalid_enumeration_context() -> WSManFault:
    """A Pull whose EnumerationContext is unknown or expired (WS-Enumeration's fault subcode; no recording
    shows Windows' code for it, 87 stands in)."""
    text = "The enumeration context supplied in the message is not valid. "
    return WSManFault("s:Receiver", "n:InvalidEnumerationContext", text, INVALID_PARAMETER, text)
