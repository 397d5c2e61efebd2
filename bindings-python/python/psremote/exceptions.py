"""The one exception hierarchy of psremote.

Every error psremote raises derives from :class:`PSRemoteError`. Where the meaning matches a
builtin, the class also derives from it, so ``except TimeoutError`` and ``except
ConnectionError`` keep working. The native module raises these classes by name with the
message as the only argument and then sets the data attributes; so every constructor accepts
exactly one positional message, and every data attribute has a class-level default.

Messages never contain secrets: no password, key or SecureString plaintext.
"""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING, Optional

from psremote import _text

if TYPE_CHECKING:
    from psremote.records import ErrorRecord, PSResult

__all__ = [
    "AuthenticationError",
    "ClosedError",
    "ConfigurationError",
    "ConnectError",
    "FileTransferError",
    "HashMismatchError",
    "HostKeyError",
    "DisconnectedError",
    "NotFoundError",
    "OperationTimeoutError",
    "OutputTooLargeError",
    "PSRemoteError",
    "PipelineError",
    "ProtocolError",
    "ProxyError",
    "SecurityPolicyError",
    "TLSError",
    "TransferDiskFullError",
    "TransferFileNotFoundError",
    "TransferIsADirectoryError",
    "TransferPermissionError",
    "TransportError",
    "WSManFault",
]


class PSRemoteError(Exception):
    """Base class of every psremote error."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)

    def __str__(self) -> str:
        # The text often holds the server's words: shown, never obeyed, and kept short (the
        # full data stays on the exception's attributes).
        return _text.message(self.args[0]) if self.args else ""


class ConfigurationError(PSRemoteError, ValueError):
    """An option cannot be used; the message says what to change."""


class AuthenticationError(PSRemoteError):
    """The server refused the credentials, or the authentication exchange failed."""

    #: The mechanism that was tried: ``"ntlm"``, ``"negotiate"``, ``"basic"``, ...
    mechanism: Optional[str] = None


class TransportError(PSRemoteError, ConnectionError):
    """The HTTP exchange failed or the server answered with an unexpected status."""

    #: The HTTP status when the server answered with one.
    status: Optional[int] = None
    #: A reply over the client's limit: its declared Content-Length, or the bytes received when a
    #: chunked body passed the limit (``None`` for other transport errors).
    reply_size: Optional[int] = None
    #: A reply over the client's limit: the limit in bytes (the announced MaxEnvelopeSize plus a
    #: margin for sealing).
    reply_limit: Optional[int] = None


class ConnectError(TransportError):
    """No TCP connection could be made."""

    #: The ``host:port`` that was tried.
    address: Optional[str] = None


class TLSError(ConnectError):
    """The TLS handshake failed or the server's certificate did not verify; the message says
    why (untrusted issuer, a name the certificate does not carry, a pin that does not match)."""


class ProxyError(ConnectError):
    """The proxy between the client and the server gave no tunnel: it is unreachable, refused
    the tunnel or the proxy credentials, closed the connection or broke the protocol. The
    message names the proxy (never its credentials) and why."""

    #: The proxy's URL without credentials, e.g. ``"http://proxy.example:3128"``.
    proxy: Optional[str] = None
    #: Why: ``"unreachable"``, ``"authentication"``, ``"refused"``, ``"protocol"``, ``"closed"``,
    #: ``"io"`` or ``"timeout"``.
    reason: Optional[str] = None
    #: The HTTP status (such as 407 or 403) or SOCKS5 reply code of a proxy that refused, else None.
    status: Optional[int] = None


class SecurityPolicyError(PSRemoteError):
    """A security rule refused the operation before anything was sent, e.g. NTLM towards a
    server whose identity nothing proves, or Basic over HTTP. The message names the ways out."""


class HostKeyError(SecurityPolicyError):
    """The SSH server's host key failed the ``known_hosts`` check: not recorded for the host
    (refused unless ``accept_unknown_host_key=True``), CHANGED (other keys recorded for it, of
    any algorithm: refused always, since this is what an attacker in the middle looks like), or
    marked ``@revoked``. The message names the fingerprints and what to do."""

    #: ``"unknown"``, ``"changed"`` or ``"revoked"``.
    problem: Optional[str] = None
    #: The name the key was looked up under: ``host``, or ``[host]:port`` for another port than 22.
    host: Optional[str] = None
    #: The type of the key the server offered (``"ssh-ed25519"``, ...).
    algorithm: Optional[str] = None
    #: The fingerprint of the key the server offered, as OpenSSH prints it (``"SHA256:..."``).
    fingerprint: Optional[str] = None
    #: The ``known_hosts`` file consulted.
    known_hosts: Optional[str] = None
    #: The fingerprints the file records for the host (a changed key), or the revoked entry's.
    recorded_fingerprints: "tuple[str, ...]" = ()


class WSManFault(PSRemoteError):
    """The server answered with a WS-Management SOAP fault."""

    #: The WS-Man fault code (for example 2150858752 for an unknown resource URI).
    code: Optional[int] = None
    #: The machine that reported the fault.
    machine: Optional[str] = None
    #: The SOAP subcode, e.g. ``"w:DestinationUnreachable"``.
    subcode: Optional[str] = None

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        #: The fault's message text.
        self.message: str = message


class ProtocolError(PSRemoteError):
    """The server's reply broke the protocol (bad XML, bad base64, bad seal, ...)."""


class OperationTimeoutError(PSRemoteError, TimeoutError):
    """An operation did not finish in time."""


class OutputTooLargeError(PSRemoteError):
    """A command wrote more stdout and stderr than ``run_cmd`` collects (``max_output``); the
    command was terminated and its shell deleted. Read a command's output as it comes
    (:meth:`CmdShell.start`) to take any amount."""

    #: The limit in bytes.
    output_limit: Optional[int] = None


class ClosedError(PSRemoteError):
    """The client, runspace pool or pipeline was already closed, or was created in another
    process before a fork."""


class DisconnectedError(PSRemoteError):
    """The runspace pool is disconnected: :meth:`RunspacePool.reconnect` (or connect from
    another client) before running anything on it."""


class NotFoundError(WSManFault, LookupError):
    """The server has no such runspace pool or pipeline (deleted, expired after its idle
    timeout, or never there); ``code`` is the server's InvalidSelectors fault code."""


class PipelineError(PSRemoteError):
    """A pipeline failed or wrote errors.

    Raised by ``invoke(..., raise_on_error=True)`` and :meth:`PSResult.raise_for_errors`.
    The fields of the server's ErrorRecord are copied onto the exception.
    """

    error_record: Optional[ErrorRecord] = None
    #: The whole result, when the error comes from a finished pipeline.
    result: Optional[PSResult] = None
    fully_qualified_error_id: Optional[str] = None
    category: Optional[int] = None
    category_name: Optional[str] = None
    activity: Optional[str] = None
    reason: Optional[str] = None
    target_name: Optional[str] = None
    target_type: Optional[str] = None
    script_stack_trace: Optional[str] = None
    position_message: Optional[str] = None

    def __init__(
        self,
        message: str = "",
        *,
        error_record: Optional[ErrorRecord] = None,
        result: Optional[PSResult] = None,
    ) -> None:
        super().__init__(message)
        self.result = result
        if error_record is not None:
            self.error_record = error_record
            self.fully_qualified_error_id = error_record.fully_qualified_error_id
            self.category = error_record.category
            self.category_name = error_record.category_name
            self.activity = error_record.activity
            self.reason = error_record.reason
            self.target_name = error_record.target_name
            self.target_type = error_record.target_type
            self.script_stack_trace = error_record.script_stack_trace
            self.position_message = error_record.position_message

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keyword arguments do not survive BaseException's default pickling.
        return (_rebuild_pipeline_error, (str(self), self.error_record, self.result))


def _rebuild_pipeline_error(
    message: str, error_record: Optional[ErrorRecord], result: Optional[PSResult]
) -> PipelineError:
    return PipelineError(message, error_record=error_record, result=result)


class FileTransferError(PSRemoteError, OSError):
    """A file copy or fetch failed (``Client.copy`` / ``Client.fetch``). Nothing half-written is
    left: a partial destination is removed on whichever side it was written.

    The subclasses also derive from the builtin that means the same, so ``except
    FileNotFoundError`` catches a missing source on either side."""

    #: What went wrong: ``"NotFound"``, ``"IsADirectory"``, ``"ParentNotFound"``,
    #: ``"AccessDenied"``, ``"DiskFull"``, ``"InUse"``, ``"InvalidPath"``, ``"HashMismatch"``,
    #: ``"Cancelled"`` or ``"Io"``.
    kind: Optional[str] = None
    #: ``"local"`` (this machine) or ``"remote"`` (the server).
    side: Optional[str] = None
    #: The path concerned, as the failing side names it.
    path: Optional[str] = None
    #: For a hash mismatch: the SHA-1 of what was sent (lowercase hex).
    expected_sha1: Optional[str] = None
    #: For a hash mismatch: the SHA-1 of what arrived (lowercase hex).
    actual_sha1: Optional[str] = None
    #: The server's ``FullyQualifiedErrorId`` when the server reported the failure.
    fully_qualified_error_id: Optional[str] = None

    def __init__(self, message: str = "") -> None:
        super().__init__(message)

    def __str__(self) -> str:
        # The text often holds the server's words: shown, never obeyed, and kept short (the
        # full data stays on the exception's attributes).
        return _text.message(self.args[0]) if self.args else ""


class TransferFileNotFoundError(FileTransferError, FileNotFoundError):
    """The source file does not exist, or the destination's folder does not (``kind`` says
    which: ``"NotFound"`` or ``"ParentNotFound"``)."""


class TransferIsADirectoryError(FileTransferError, IsADirectoryError):
    """A directory where a file is expected (the source, or the destination: copy and fetch
    write one file and never copy into a folder)."""


class TransferPermissionError(FileTransferError, PermissionError):
    """The operating system of the failing side refused access."""


class TransferDiskFullError(FileTransferError):
    """No space left where the file was being written (``errno`` is ``ENOSPC``)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.errno = _errno.ENOSPC


class HashMismatchError(FileTransferError):
    """The SHA-1 of what arrived differs from the SHA-1 of what was sent; the destination was
    not written (``expected_sha1`` and ``actual_sha1`` say both)."""
