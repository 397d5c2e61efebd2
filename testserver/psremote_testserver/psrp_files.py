"""File transfer scripts, carried out natively (there is no PowerShell here).

Six scripts are recognised by a stable signature of their text (README.md, "File
transfer scripts") and run as the hidden commands below, with the script's arguments
(path, expand-variables flag):

* psremote's ``copy.ps1`` / ``fetch.ps1`` (core/src/client/files/): chunked base64 input or
  output, the SHA-1 as the last object, ``PSRemote.File.<Kind>`` error ids, acknowledgement
  progress records every 2 MiB, a temporary file beside the destination;
* pypsrp 0.9.1's ``copy.ps1`` / ``fetch.ps1``: the same input contract, a temporary file in the
  temp folder moved into place at the end; a fetch answers with the whole file as ONE base64
  string (as Windows does) and fails on an empty file (``TransformFinalBlock`` on ``$null``);
* pypsrp 1.0's ``copy.ps1`` / ``fetch.ps1`` (its ``psrp`` package: ``copy_file`` /
  ``fetch_file``): named parameters (``-Path``, ``-ExpandVariables``, fetch's ``-BufferSize``);
  the copy reads byte arrays, the hex SHA-1 (as UTF-8 bytes) last, and answers with the absolute
  path; the fetch answers with byte arrays of ``BufferSize`` and the hex SHA-1 last.

Paths are this host's paths; ``%VAR%`` (and for psremote's scripts ``$env:VAR`` and
``${env:VAR}``) expand from this process's environment, relative paths from its working
directory. Errors follow what Windows would answer (pypsrp's thrown texts, .NET method
exceptions; psremote's ids). Everything streams: input is written as it arrives and output is
read a chunk at a time, except pypsrp's fetch whose contract is one string.

``PSREMOTE_TESTSERVER_CORRUPT_FILE=1`` (the CLI's ``--corrupt-file-chunk``) flips one byte of
the first chunk written (copy) or sent (fetch), so clients can be shown a hash mismatch.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import re
import tempfile
from typing import Any, Callable, Iterator, Optional

from psrpcore.types import ErrorCategory

from . import psrp_records as records
from .psrp_runtime import Invocation, Param, RawItem, ScriptTerminatingError, command

CORRUPT_ENV = "PSREMOTE_TESTSERVER_CORRUPT_FILE"
ACK_EVERY = 2 * 1024 * 1024
FETCH_CHUNK = 131072

PSREMOTE_COPY = "Invoke-PSRemoteCopyScript"
PSREMOTE_FETCH = "Invoke-PSRemoteFetchScript"
PYPSRP_COPY = "Invoke-PypsrpCopyScript"
PYPSRP_FETCH = "Invoke-PypsrpFetchScript"
PSRP10_COPY = "Invoke-Psrp10CopyScript"
PSRP10_FETCH = "Invoke-Psrp10FetchScript"

# pypsrp 1.0's scripts come first: its copy.ps1 also holds the needles of 0.9.1's.
_SIGNATURES = (
    (PSRP10_COPY, ("[byte[]]", "$InputObject", "Set-Property 'MaximumAllowedMemory' $null", "Transport failure, hash mismatch")),
    (PSRP10_FETCH, ("is a directory, src must be a file", "$BufferSize", "[byte[]]$buffer[0..($read - 1)]")),
    (PSREMOTE_COPY, ("# psremote: receive one file from the client", "'psremote:copy-ack'")),
    (PSREMOTE_FETCH, ("# psremote: send one file of this host to the client", "'psremote:fetch-size'")),
    (PYPSRP_COPY, ("Set-Property 'MaximumAllowedMemory' $null", "Transport failure, hash mismatch")),
    (PYPSRP_FETCH, ("is a directory, src must be a file", "$MyInvocation.UnboundArguments[0]", "ToBase64String($bytes)")),
)


def recognise(text: str) -> Optional[str]:
    """The native command standing for a known file-transfer script, or None."""
    for name, needles in _SIGNATURES:
        if all(n in text for n in needles):
            return name
    return None


def _corrupting() -> bool:
    return os.environ.get(CORRUPT_ENV) == "1"


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x01]) + data[1:] if data else data


# -- paths -------------------------------------------------------------------------------------------------
_PERCENT = re.compile(r"%([^%]+)%")
_PS_ENV = re.compile(r"(?i)\$\{env:(?P<a>[^}]+)\}|\$env:(?P<b>[a-z0-9_]+)")


def _expand_percent(text: str) -> str:
    return _PERCENT.sub(lambda m: os.environ.get(m.group(1), m.group(0)), text)


def _expand_ps(text: str) -> str:
    def one(m: "re.Match[str]") -> str:
        name = m.group("a") or m.group("b")
        return os.environ.get(name, m.group(0))

    return _PS_ENV.sub(one, text)


def _resolve(path: str) -> str:
    return os.path.abspath(path)


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


# -- psremote's scripts ------------------------------------------------------------------------------------
_CATEGORY = {
    "NotFound": ErrorCategory.ObjectNotFound,
    "ParentNotFound": ErrorCategory.ObjectNotFound,
    "IsADirectory": ErrorCategory.InvalidArgument,
    "InvalidPath": ErrorCategory.InvalidArgument,
    "AccessDenied": ErrorCategory.PermissionDenied,
    "DiskFull": ErrorCategory.ResourceUnavailable,
    "InUse": ErrorCategory.ResourceBusy,
    "HashMismatch": ErrorCategory.InvalidResult,
    "Cancelled": ErrorCategory.OperationStopped,
    "Protocol": ErrorCategory.InvalidData,
}


def _psremote_error(kind: str, message: str, target: Any) -> ScriptTerminatingError:
    category = _CATEGORY.get(kind, ErrorCategory.WriteError)
    return ScriptTerminatingError(
        records.record(["System.IO.IOException", "System.SystemException"], message, "PSRemote.File." + kind, category, target)
    )


def _os_kind(e: OSError) -> str:
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "AccessDenied"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "DiskFull"
    if e.errno == errno.ENOENT:
        return "NotFound"
    if e.errno == errno.EISDIR:
        return "IsADirectory"
    if e.errno in (errno.ENAMETOOLONG, errno.EINVAL):
        return "InvalidPath"
    if e.errno in (errno.ETXTBSY, errno.EBUSY):
        return "InUse"
    return "Io"


def _os_error(e: OSError, action: str, target: str, parent_missing: bool = False) -> ScriptTerminatingError:
    kind = _os_kind(e)
    if kind == "NotFound" and parent_missing:
        kind = "ParentNotFound"
    return _psremote_error(kind, f"Cannot {action} '{target}': {e.strerror}.", target)


def _psremote_path(inv: Invocation, what: str) -> str:
    text = str(inv.get("Path", "") or "")
    if _is_true(inv.get("ExpandVariables")):
        text = _expand_ps(_expand_percent(text))
    if not text:
        raise _psremote_error("InvalidPath", f"The {what} path is empty.", text)
    return _resolve(text)


_PATH_PARAMS = [Param("Path", position=0), Param("ExpandVariables", position=1)]


@command(PSREMOTE_COPY, "PSRemote.TestServer.CopyScript", _PATH_PARAMS)
def _psremote_copy(inv: Invocation) -> Iterator[Any]:
    dest = _psremote_path(inv, "destination")
    if os.path.isdir(dest):
        raise _psremote_error("IsADirectory", f"The destination '{dest}' is a directory; give the path of a file.", dest)
    folder, name = os.path.split(dest)
    if not name:
        raise _psremote_error("InvalidPath", f"The destination '{dest}' does not name a file.", dest)
    if not os.path.isdir(folder):
        raise _psremote_error("ParentNotFound", f"The folder '{folder}' of the destination does not exist.", dest)
    temporary = os.path.join(folder, "psremote-" + os.urandom(8).hex() + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        raise _os_error(e, "create a file in", folder) from None
    sha1 = hashlib.sha1()
    written = acknowledged = 0
    corrupt = _corrupting()
    held: Any = None
    try:
        with os.fdopen(fd, "wb") as stream:
            for item in inv.inputs():
                if held is not None:
                    try:
                        data = base64.b64decode(str(held), validate=True)
                    except ValueError:
                        raise _psremote_error("Protocol", "An input chunk is not valid base64.", dest) from None
                    if corrupt and data:
                        data, corrupt = _flip(data), False
                    sha1.update(data)
                    try:
                        stream.write(data)
                    except OSError as e:
                        raise _os_error(e, "write", dest) from None
                    written += len(data)
                    if written - acknowledged >= ACK_EVERY:
                        inv.streams.progress(activity="psremote:copy-ack", activity_id=29811, status_description=str(written))
                        acknowledged = written
                held = item
            if held is None:
                raise _psremote_error("Protocol", "No input was received: the file hash is missing.", dest)
            if str(held) == "psremote:abort":
                raise _psremote_error("Cancelled", "The client cancelled the copy.", dest)
            try:
                expected = base64.b64decode(str(held), validate=True).decode("ascii").lower()
            except (ValueError, UnicodeDecodeError):
                expected = ""
            if not re.fullmatch(r"[0-9a-f]{40}", expected):
                raise _psremote_error("Protocol", "The last input is not the SHA-1 of the file.", dest)
            try:
                stream.flush()
                os.fsync(stream.fileno())
            except OSError as e:
                raise _os_error(e, "write", dest) from None
        actual = sha1
        if actual.hexdigest() != expected:
            raise _psremote_error(
                "HashMismatch",
                "The copied data does not match the client's file: hash mismatch\r\n"
                f"Actual: {actual.hexdigest()}\r\nExpected: {expected}",
                dest,
            )
        try:
            os.replace(temporary, dest)
        except OSError as e:
            raise _os_error(e, "replace", dest) from None
        yield dest
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


@command(PSREMOTE_FETCH, "PSRemote.TestServer.FetchScript", _PATH_PARAMS)
def _psremote_fetch(inv: Invocation) -> Iterator[Any]:
    source = _psremote_path(inv, "source")
    if os.path.isdir(source):
        raise _psremote_error("IsADirectory", f"The source '{source}' is a directory; give the path of a file.", source)
    try:
        stream = open(source, "rb")
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise _psremote_error("NotFound", f"The source '{source}' does not exist.", source) from None
        raise _os_error(e, "open", source) from None
    corrupt = _corrupting()
    with stream:
        inv.streams.progress(
            activity="psremote:fetch-size", activity_id=29812, status_description=str(os.fstat(stream.fileno()).st_size)
        )
        sha1 = hashlib.sha1()
        while True:
            try:
                data = stream.read(FETCH_CHUNK)
            except OSError as e:
                raise _os_error(e, "read", source) from None
            if not data:
                break
            sha1.update(data)
            if corrupt:
                data, corrupt = _flip(data), False
            yield base64.b64encode(data).decode("ascii")
            if len(data) < FETCH_CHUNK:
                break
    yield sha1.hexdigest()


# -- pypsrp 0.9.1's scripts --------------------------------------------------------------------------------
_DOTNET = {
    errno.EACCES: ("UnauthorizedAccessException", "Access to the path '{0}' is denied."),
    errno.EPERM: ("UnauthorizedAccessException", "Access to the path '{0}' is denied."),
    errno.EISDIR: ("UnauthorizedAccessException", "Access to the path '{0}' is denied."),
    errno.ENOENT: ("DirectoryNotFoundException", "Could not find a part of the path '{0}'."),
    errno.ENOSPC: ("IOException", "There is not enough space on the disk."),
}


def _method_error(method: str, arity: int, inner: str, message: str) -> ScriptTerminatingError:
    """A .NET method's exception under ``$ErrorActionPreference = 'Stop'``."""
    text = f'Exception calling "{method}" with "{arity}" argument(s): "{message}"'
    return ScriptTerminatingError(
        records.record(
            ["System.Management.Automation.MethodInvocationException", "System.Management.Automation.MethodException"]
            + records.RUNTIME,
            text,
            inner,
            ErrorCategory.NotSpecified,
            reason="MethodInvocationException",
        )
    )


def _dotnet_error(method: str, arity: int, e: OSError, path: str) -> ScriptTerminatingError:
    inner, template = _DOTNET.get(e.errno or 0, ("IOException", "{1}"))
    return _method_error(method, arity, inner, template.format(path, e.strerror))


def _pypsrp_path(inv: Invocation) -> str:
    text = str(inv.get("Path", "") or "")
    if _is_true(inv.get("ExpandVariables")):
        text = _expand_percent(text)
    return _resolve(text)


@command(PYPSRP_COPY, "PSRemote.TestServer.PypsrpCopyScript", _PATH_PARAMS)
def _pypsrp_copy(inv: Invocation) -> Iterator[Any]:
    yield from _pypsrp_copy_items(inv, lambda item: base64.b64decode(str(item or "")))


_PSRP10_COPY_PARAMS = [Param("Path", position=0, mandatory=True), Param("ExpandVariables", switch=True)]


@command(PSRP10_COPY, "PSRemote.TestServer.Psrp10CopyScript", _PSRP10_COPY_PARAMS)
def _psrp10_copy(inv: Invocation) -> Iterator[Any]:
    yield from _pypsrp_copy_items(inv, lambda item: bytes(item or b""))


def _pypsrp_copy_items(inv: Invocation, decode: Callable[[Any], bytes]) -> Iterator[Any]:
    """pypsrp's copy (0.9.1 sends base64 strings, 1.0 byte arrays): every input but the last is file
    data, the last the hex SHA-1; a temporary file is moved into place once the hashes match."""
    fd, temporary = tempfile.mkstemp(prefix="tmp", suffix=".tmp")
    sha1 = hashlib.sha1()
    corrupt = _corrupting()
    last = b""
    try:
        with os.fdopen(fd, "wb") as stream:
            held: Optional[bytes] = None
            for item in inv.inputs():
                if held is not None:
                    data = held
                    if corrupt and data:
                        data, corrupt = _flip(data), False
                    sha1.update(data)
                    try:
                        stream.write(data)
                    except OSError as e:
                        raise _dotnet_error("Write", 3, e, temporary) from None
                held = decode(item)
            last = held or b""
        dest = _pypsrp_path(inv)
        expected = last.decode("utf-8", "replace")
        actual = sha1.hexdigest()
        if actual != expected:
            raise ScriptTerminatingError(
                records.thrown(f"Transport failure, hash mismatch\r\nActual: {actual}\r\nExpected: {expected}")
            )
        try:
            if os.path.isdir(dest):
                raise OSError(errno.EACCES, "Access denied")
            if os.path.exists(dest):
                os.unlink(dest)
            elif not os.path.isdir(os.path.dirname(dest)):
                raise OSError(errno.ENOENT, "No such directory")
        except OSError as e:
            raise _dotnet_error("Delete", 1, e, dest) from None
        try:
            _move(temporary, dest)
        except OSError as e:
            raise _dotnet_error("Move", 2, e, dest) from None
        yield dest
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _move(source: str, dest: str) -> None:
    """File.Move: a rename, or a copy and delete across volumes (a partial copy is removed)."""
    try:
        os.rename(source, dest)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    try:
        with open(source, "rb") as src, open(dest, "xb") as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
    except OSError:
        if os.path.exists(dest):
            os.unlink(dest)
        raise
    os.unlink(source)


@command(PYPSRP_FETCH, "PSRemote.TestServer.PypsrpFetchScript", _PATH_PARAMS)
def _pypsrp_fetch(inv: Invocation) -> Iterator[Any]:
    source = _pypsrp_path(inv)
    if os.path.isdir(source):
        raise ScriptTerminatingError(records.thrown(f"The path at '{source}' is a directory, src must be a file"))
    if not os.path.exists(source):
        raise ScriptTerminatingError(records.thrown(f"The path at '{source}' does not exist"))
    try:
        stream = open(source, "rb")
    except OSError as e:
        raise _dotnet_error("OpenRead", 0, e, source) from None
    with stream:
        size = os.fstat(stream.fileno()).st_size
        if size == 0:
            # The loop never runs and TransformFinalBlock gets $null.
            raise _method_error(
                "TransformFinalBlock", 3, "ArgumentNullException", "Value cannot be null.\r\nParameter name: inputBuffer"
            )
        # ONE string holding the whole file (pypsrp's contract), built as CLIXML bytes directly.
        sha1 = hashlib.sha1()
        parts = [b"<S>"]
        corrupt = _corrupting()
        while True:
            data = stream.read(3 * 1024 * 1024)
            if not data:
                break
            sha1.update(data)
            if corrupt:
                data, corrupt = _flip(data), False
            parts.append(base64.b64encode(data))
        parts.append(b"</S>")
    yield RawItem(b"".join(parts))
    yield sha1.hexdigest()


_PSRP10_FETCH_PARAMS = [
    Param("Path", mandatory=True),
    Param("BufferSize", kind="int", mandatory=True),
    Param("ExpandVariables", switch=True),
]


@command(PSRP10_FETCH, "PSRemote.TestServer.Psrp10FetchScript", _PSRP10_FETCH_PARAMS)
def _psrp10_fetch(inv: Invocation) -> Iterator[Any]:
    source = _pypsrp_path(inv)
    if os.path.isdir(source):
        raise ScriptTerminatingError(records.thrown(f"The path at '{source}' is a directory, src must be a file"))
    if not os.path.exists(source):
        raise ScriptTerminatingError(records.thrown(f"The path at '{source}' does not exist"))
    size = int(inv.params["BufferSize"])
    if size <= 0:
        raise _method_error("Read", 3, "ArgumentOutOfRangeException", "Positive number required.")
    try:
        stream = open(source, "rb")
    except OSError as e:
        raise _dotnet_error("OpenRead", 0, e, source) from None
    sha1 = hashlib.sha1()
    corrupt = _corrupting()
    with stream:
        for data in iter(lambda: stream.read(size), b""):
            sha1.update(data)
            if corrupt:
                data, corrupt = _flip(data), False
            yield data  # a byte[] (CLIXML <BA>)
    yield sha1.hexdigest()


def _install() -> None:
    from . import psrp_runtime

    psrp_runtime.FILE_SCRIPTS = recognise


_install()
