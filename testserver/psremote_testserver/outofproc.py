"""The endpoint's out-of-process mode: one runspace pool on stdin/stdout in PowerShell's OutOfProc framing.

``python -m psremote_testserver --out-of-proc`` behaves like ``pwsh -s`` (and, as an SSH subsystem, like
``pwsh -sshs``): it reads one packet per line from stdin and writes one per line to stdout (MS-PSRP's
out-of-process transport, PROTOCOL.md §D). The PSRP side is the WS-Man endpoint's own ``Pool`` (psrpcore's
server side, the same commands, host calls, key exchange and file scripts); only the carrier differs.

Facts from PowerShell's OutOfProcServerMediator this follows: every Data the server writes is
``Stream='Default'``; every Data is acknowledged (also one for a pipeline that is gone), every Signal
too; closing the pool waits until every pipeline was closed and reports RUNSPACEPOOL_STATE Closing and
Closed before the pool's CloseAck; an empty line or EOF ends the session. Clients (pypsrp among them)
read stderr as part of stdout, so nothing but packets is written while the session is healthy: logs go
to ``--log FILE``, and stderr gets one line only when the mode gives up (malformed input, exit 2).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import logging
import os
import re
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from . import psrp_wire as wire
from .psrp_pool import Pool, PoolClosed, ProtocolError, UnknownPipeline
from .psrp_runtime import CONFIGURATIONS

log = logging.getLogger(__name__)

NULL_GUID = uuid.UUID(int=0)
#: PowerShell's fragment size on this transport, the 21-byte header included.
FRAGMENT_SIZE = 32768
#: Longest line accepted from the client; longer is malformed input.
MAX_LINE = 16 << 20
#: Base64 characters of PSRP fragments in one Data line the server writes (up to four whole fragments).
LINE_CHARS = 4 * wire.base64_length(FRAGMENT_SIZE)
#: How often the pool's pump looks whether the pool is being closed.
POOL_POLL = 0.25

CLIENT_PACKETS = ("Data", "Command", "Signal", "Close")
SERVER_PACKETS = ("Data", "DataAck", "CommandAck", "SignalAck", "CloseAck")
STREAMS = ("Default", "PromptResponse")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")

# Exit statuses.
EXIT_OK = 0
EXIT_MALFORMED = 2
EXIT_MISBEHAVE = 3


class FramingError(Exception):
    """A line that is no OutOfProc packet, or a packet that makes no sense now."""


@dataclass(frozen=True)
class Packet:
    kind: str
    guid: uuid.UUID
    stream: Optional[str] = None  # Data only
    data: bytes = b""  # Data only

    @property
    def pipeline_id(self) -> Optional[uuid.UUID]:
        return None if self.guid == NULL_GUID else self.guid


def parse(line: bytes, kinds=CLIENT_PACKETS) -> Packet:
    """One packet from one line (without its newline); exactly the attributes PowerShell writes.

    ``kinds`` are the element names accepted (a client's by default; tests read the server's with
    ``SERVER_PACKETS``)."""
    if not line.startswith(b"<") or b"<!" in line or b"<?" in line:
        raise FramingError(f"not an OutOfProc packet: {_show(line)}")
    try:
        element = ET.fromstring(line)
    except ET.ParseError as exc:
        raise FramingError(f"not an OutOfProc packet ({exc}): {_show(line)}") from None
    if element.tag not in kinds or len(element):
        raise FramingError(f"unexpected OutOfProc element {element.tag!r}")
    expected = {"Stream", "PSGuid"} if element.tag == "Data" else {"PSGuid"}
    if set(element.attrib) != expected:
        raise FramingError(f"{element.tag} needs exactly the attributes {sorted(expected)}, got {sorted(element.attrib)}")
    text = (element.text or "").strip()
    if not _GUID.match(element.attrib["PSGuid"]):
        raise FramingError(f"{element.tag}: PSGuid is not a GUID: {element.attrib['PSGuid'][:40]!r}")
    guid = uuid.UUID(element.attrib["PSGuid"])
    if element.tag != "Data":
        if text:
            raise FramingError(f"{element.tag} carries text")
        return Packet(element.tag, guid)
    stream = element.attrib["Stream"]
    if stream not in STREAMS:
        raise FramingError(f"Data: unknown Stream {stream[:40]!r}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FramingError("Data: the payload is not base64") from None
    if not data:
        raise FramingError("Data without PSRP fragments")
    return Packet("Data", guid, stream, data)


def data_line(guid: uuid.UUID, data: bytes, stream: str = "Default") -> bytes:
    return f"<Data Stream='{stream}' PSGuid='{guid}'>{base64.b64encode(data).decode()}</Data>".encode()


def guid_line(kind: str, guid: uuid.UUID) -> bytes:
    return f"<{kind} PSGuid='{guid}' />".encode()


def _show(line: bytes) -> str:
    return repr(line[:60]) + ("..." if len(line) > 60 else "")


class Writer:
    """Whole lines to one file descriptor, one writer at a time (unbuffered: a thread blocked on a
    full pipe holds no interpreter buffer lock that exit would need)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def line(self, line: bytes) -> None:
        with self.lock:
            self.raw(line + b"\n")
        log.debug("out %s", _show(line))

    def raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]


class Session:
    """One runspace pool served over OutOfProc packets; ``handle`` is called by the reader, in order."""

    def __init__(self, out: Writer, configuration_name: str = "microsoft.powershell", fragment_size: int = FRAGMENT_SIZE) -> None:
        self.out = out
        self.configuration = CONFIGURATIONS[configuration_name]
        self.fragment_size = fragment_size
        self.pool: Optional[Pool] = None
        self.closed = False
        # Pipelines announced by Command and not yet closed -> whether their CREATE_PIPELINE came.
        self.commands: Dict[uuid.UUID, bool] = {}
        self.changed = threading.Condition()
        self.pumps: Dict[Optional[uuid.UUID], threading.Thread] = {}
        self.stop_pool_pump = threading.Event()
        self.ack: Callable[[str, uuid.UUID], None] = self._ack

    # -- packets -------------------------------------------------------------------------------------
    def handle(self, packet: Packet) -> None:
        if self.closed and (packet.pipeline_id is None or packet.kind == "Command"):
            # Pipelines may still be closed (closing the pool waits for that), nothing else may start.
            raise FramingError(f"{packet.kind} after the runspace pool's Close")
        getattr(self, f"_on_{packet.kind.lower()}")(packet)

    def _on_data(self, packet: Packet) -> None:
        pid = packet.pipeline_id
        if pid is None:
            if self.pool is None:
                self._open(packet.data)
            self._feed(packet.data)
        else:
            with self.changed:
                created = self.commands.get(pid)
                if created is False:
                    self.commands[pid] = True
            if created is None:
                log.info("Data for pipeline %s, which is not open: acknowledged only", pid)
            elif created:
                self._feed(packet.data)  # input, end of input, host responses (PromptResponse)
            else:
                try:
                    self._pool().command(pid, packet.data)
                except PoolClosed:
                    raise FramingError("Data after the runspace pool was closed") from None
                except ProtocolError as exc:
                    raise FramingError(f"bad PSRP data: {exc}") from None
                self._start_pump(pid)
        self.ack("DataAck", packet.guid)

    def _on_command(self, packet: Packet) -> None:
        pid = packet.pipeline_id
        if pid is None:
            raise FramingError("Command for the runspace pool's guid")
        self._pool()
        with self.changed:
            if pid in self.commands:
                raise FramingError(f"Command for pipeline {pid}, which is already open")
            self.commands[pid] = False
        self.ack("CommandAck", packet.guid)

    def _on_signal(self, packet: Packet) -> None:
        pid = packet.pipeline_id
        if pid is None:
            raise FramingError("Signal for the runspace pool (PowerShell: IPCNoSignalForSession)")
        # The stop waits for the pipeline to report Stopped; the reader goes on meanwhile.
        threading.Thread(target=self._stop, args=(pid,), name=f"signal-{str(pid)[:8]}", daemon=True).start()

    def _on_close(self, packet: Packet) -> None:
        pid = packet.pipeline_id
        if pid is None:
            # PowerShell closes the pool only once every pipeline was closed; the reader goes on meanwhile.
            self.closed = True
            threading.Thread(target=self._close_pool, name="close-pool", daemon=True).start()
            return
        with self.changed:
            created = self.commands.pop(pid, None)
            self.changed.notify_all()
        if created:
            try:
                self._pool().release_pipeline(pid)
            except (UnknownPipeline, PoolClosed):
                pass
            pump = self.pumps.pop(pid, None)
            if pump is not None:
                pump.join()  # its last Data line goes before the CloseAck
        self.ack("CloseAck", packet.guid)

    # -- the pool ------------------------------------------------------------------------------------
    def _open(self, data: bytes) -> None:
        first = wire.FRAGMENT_HEADER_LEN
        if len(data) < first + wire.MESSAGE_HEADER_LEN:
            raise FramingError("the first Data holds no whole PSRP message header")
        runspace_pool_id = uuid.UUID(bytes_le=data[first + 8 : first + 24])
        log.info("runspace pool %s opening", runspace_pool_id)
        self.pool = Pool(runspace_pool_id, self.configuration, self.fragment_size - wire.FRAGMENT_HEADER_LEN)
        self._start_pump(None)

    def _pool(self) -> Pool:
        if self.pool is None:
            raise FramingError("the runspace pool was not opened yet (no Data for it came)")
        return self.pool

    def _feed(self, data: bytes) -> None:
        try:
            self._pool().feed(data)
        except PoolClosed:
            raise FramingError("Data after the runspace pool was closed") from None
        except ProtocolError as exc:
            raise FramingError(f"bad PSRP data: {exc}") from None

    def _start_pump(self, pid: Optional[uuid.UUID]) -> None:
        pump = threading.Thread(target=self._pump, args=(pid,), name=f"pump-{str(pid or 'pool')[:8]}", daemon=True)
        self.pumps[pid] = pump
        pump.start()

    def _pump(self, pid: Optional[uuid.UUID]) -> None:
        """Write one target's PSRP fragments as Data lines until it is finished, released or closed."""
        pool = self._pool()
        while pid is not None or not self.stop_pool_pump.is_set():
            try:
                got = pool.receive(pid, POOL_POLL if pid is None else 1.0, LINE_CHARS, 0)
            except (PoolClosed, UnknownPipeline):
                return
            if got is None:
                continue
            if got.fragments and not self._write_data(pid, got.fragments):
                return
            if got.done:
                return

    def _write_data(self, pid: Optional[uuid.UUID], fragments: List[bytes]) -> bool:
        try:
            self.out.line(data_line(pid or NULL_GUID, b"".join(fragments)))
            return True
        except OSError as exc:  # the client is gone; the reader sees EOF next
            log.info("stdout closed: %s", exc)
            return False

    def _stop(self, pid: uuid.UUID) -> None:
        try:
            with self.changed:
                created = self.commands.get(pid)
            if created and self.pool is not None:
                self.pool.stop_pipeline(pid)
        except (UnknownPipeline, PoolClosed):
            pass
        finally:
            self.ack("SignalAck", pid)

    def _close_pool(self) -> None:
        with self.changed:
            while self.commands:
                log.info("closing the pool waits for %d pipeline(s) to be closed", len(self.commands))
                self.changed.wait()
        pool = self.pool
        if pool is not None:
            self.stop_pool_pump.set()
            pump = self.pumps.pop(None, None)
            if pump is not None:
                pump.join()
            try:
                pool.announce_close()
                while True:  # the states (and anything before them), written by this thread now
                    got = pool.receive(None, 0, LINE_CHARS, 0)
                    if got is None or not got.fragments:
                        break
                    if not self._write_data(None, got.fragments):
                        break
            except PoolClosed:
                pass
            pool.close()
        log.info("runspace pool closed")
        self.ack("CloseAck", NULL_GUID)

    def _ack(self, kind: str, guid: uuid.UUID) -> None:
        try:
            self.out.line(guid_line(kind, guid))
        except OSError as exc:
            log.info("stdout closed: %s", exc)

    def shutdown(self) -> None:
        """EOF: stop everything (the client is gone)."""
        with self.changed:
            self.commands.clear()
            self.changed.notify_all()
        if self.pool is not None:
            self.pool.close()


# -- misbehaviour: faults a client must survive ----------------------------------------------------------
# Each runs when the Nth packet from the client (--misbehave-at N, counting every line read) arrives.
def _exit(session: Session, packet: Packet) -> None:
    log.info("misbehave exit at %s", packet.kind)
    os._exit(EXIT_MISBEHAVE)


def _exit_stderr(session: Session, packet: Packet) -> None:
    os.write(STDERR_FD, b"psremote_testserver --out-of-proc: simulated crash (--misbehave exit-stderr)\n")
    os._exit(EXIT_MISBEHAVE)


def _garbage(session: Session, packet: Packet) -> None:
    session.out.line(b"this is not an OutOfProc packet")
    session.handle(packet)


def _bad_base64(session: Session, packet: Packet) -> None:
    session.out.line(f"<Data Stream='Default' PSGuid='{packet.guid}'>*** not base64 ***</Data>".encode())
    session.handle(packet)


def _endless_line(session: Session, packet: Packet) -> None:
    session.out.raw(f"<Data Stream='Default' PSGuid='{packet.guid}'>".encode())
    chunk = b"A" * 65536
    try:
        while True:
            session.out.raw(chunk)
    except OSError:
        os._exit(EXIT_MISBEHAVE)


def _no_ack(session: Session, packet: Packet) -> None:
    session.ack = lambda kind, guid: log.info("misbehave: %s %s not sent", kind, guid)
    try:
        session.handle(packet)
    finally:
        session.ack = session._ack


def _foreign_ack(session: Session, packet: Packet) -> None:
    session.ack = lambda kind, guid: session._ack(kind, uuid.uuid4())
    try:
        session.handle(packet)
    finally:
        session.ack = session._ack


MISBEHAVE = {
    "exit": (_exit, "exit (status 3) without answering, writing nothing"),
    "exit-stderr": (_exit_stderr, "write one line to stderr and exit (status 3) without answering, as a crashing pwsh does"),
    "garbage": (_garbage, "write a line that is no packet, then answer as usual"),
    "bad-base64": (_bad_base64, "write a Data packet (the packet's guid) whose payload is not base64, then answer as usual"),
    "endless-line": (_endless_line, "start a Data packet and never end the line (64 KiB writes until stdout closes, then exit 3)"),
    "no-ack": (_no_ack, "process the packet but never acknowledge it (nothing else changes)"),
    "foreign-ack": (_foreign_ack, "acknowledge the packet with a random guid instead of its own"),
}

# The stderr the mode was started with; fd 2 itself points at the log (or nowhere) while serving.
STDERR_FD = 2


# -- the command line ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m psremote_testserver --out-of-proc",
        description="Serve one PowerShell runspace pool on stdin/stdout with the OutOfProc framing "
        "(as pwsh -s does; also an SSH 'powershell' subsystem). Exits 0 on EOF or an empty line, "
        "2 on malformed input (one line on stderr), 3 when --misbehave says so.",
    )
    parser.add_argument(
        "--configuration",
        choices=sorted(CONFIGURATIONS),
        default="microsoft.powershell",
        help="session configuration (default microsoft.powershell)",
    )
    parser.add_argument("--log", metavar="FILE", help="append a log here (never to stderr, which clients read as stdout)")
    parser.add_argument("--verbose", action="store_true", help="log every packet (kind and start) with --log")
    parser.add_argument(
        "--misbehave",
        choices=sorted(MISBEHAVE),
        help="one fault when the --misbehave-at'th packet arrives: "
        + "; ".join(f"{name}: {text}" for name, (_, text) in sorted(MISBEHAVE.items())),
    )
    parser.add_argument(
        "--misbehave-at",
        type=int,
        default=2,
        metavar="N",
        help="the packet (counting every line read from stdin, from 1) that --misbehave acts on (default 2: "
        "the first after the pool's opening Data)",
    )
    return parser


def _fatal(message: str) -> int:
    log.error("%s", message)
    try:
        os.write(STDERR_FD, f"psremote_testserver --out-of-proc: {message}\n".encode("utf-8", "replace"))
    except OSError:
        pass
    return EXIT_MALFORMED


def _quiet_standard_streams(log_file: Optional[str]) -> int:
    """Point fds 1 and 2 away from the client (a stray print or warning must not corrupt the stream)
    and return a private duplicate of stdout for the packets."""
    global STDERR_FD
    out_fd = os.dup(1)
    STDERR_FD = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    sink = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if log_file else devnull
    os.dup2(devnull, 1)
    os.dup2(sink, 2)
    for fd in {devnull, sink}:
        os.close(fd)
    return out_fd


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.misbehave_at < 1:
        build_parser().error("--misbehave-at counts from 1")
    out_fd = _quiet_standard_streams(args.log)
    logging.basicConfig(
        stream=sys.stderr,  # fd 2: the log file, or nowhere
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(process)d %(threadName)s %(levelname)s %(name)s: %(message)s",
    )
    session = Session(Writer(out_fd), args.configuration)
    fault = MISBEHAVE[args.misbehave][0] if args.misbehave else None
    stdin = sys.stdin.buffer
    count = 0
    try:
        while True:
            line = stdin.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                return _fatal(f"a line longer than {MAX_LINE} bytes")
            if not line.endswith(b"\n") and line:
                return _fatal(f"end of input inside a line: {_show(line)}")
            line = line.rstrip(b"\r\n")
            if not line.strip():
                log.info("end of input: closing")
                return EXIT_OK
            count += 1
            log.debug("in %s", _show(line))
            packet = parse(line)
            if fault is not None and count == args.misbehave_at:
                fault(session, packet)
            else:
                session.handle(packet)
    except FramingError as exc:
        return _fatal(str(exc))
    except OSError as exc:  # stdout closed under the reader's own ack: the client is gone
        log.info("stdout closed: %s", exc)
        return EXIT_OK
    finally:
        session.shutdown()
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
