"""The endpoint's out-of-process mode (``python -m psremote_testserver --out-of-proc``).

Two independent clients drive it: pypsrp 1.0.0b1 (its ``psrp`` package, in its own virtualenv
.venv-psrp, through tests/psrp10_client.py) starts the mode as a local process, as it starts
``pwsh -s``; psrpcore's client side, over a line exchange written here, checks the framing packet
by packet (acknowledgements, the order of the pool's close) and how the mode ends on EOF and on
malformed input. Output waits are bounded only to turn a hang into a failure.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import List, Optional, Tuple

import psrpcore
import pytest
from psrpcore import ClientPowerShell, ClientRunspacePool, PSRPPayload, StreamType
from psrpcore.types import PSInvocationState, RunspacePoolState

from psremote_testserver import outofproc

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent.parent
NULL = "00000000-0000-0000-0000-000000000000"
# A hang guard, never an assertion about speed.
WAIT = 20


def mode_command(*extra: str) -> List[str]:
    return [sys.executable, "-m", "psremote_testserver", "--out-of-proc", *extra]


def psrp10_python() -> str:
    """pypsrp 1.0.0b1's interpreter: ``make .venv-psrp/.ok`` (part of ``make test``) builds it."""
    python = os.environ.get("PSREMOTE_PSRP10_PYTHON") or str(REPO / ".venv-psrp" / "bin" / "python")
    if not os.access(python, os.X_OK):
        pytest.fail(f"pypsrp 1.0.0b1's virtualenv is missing ({python}): run `make .venv-psrp/.ok`")
    return python


def psrp10(*args: str, timeout: float = 25) -> dict:
    """Run tests/psrp10_client.py in pypsrp 1.0.0b1's virtualenv; its JSON result."""
    done = subprocess.run(
        [psrp10_python(), str(TESTS / "psrp10_client.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.stdout.strip(), f"no result (status {done.returncode}); stderr: {done.stderr[-2000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "failure" not in result, result["failure"]
    assert done.returncode == 0
    return result


# -- pypsrp 1.0.0b1 over a local process -------------------------------------------------------------
MODES = [pytest.param([], id="sync"), pytest.param(["--async"], id="async")]


@pytest.mark.parametrize("mode", MODES)
def test_pypsrp10_process_streams(mode, tmp_path):
    result = psrp10("process", *mode, "basic", "--", *mode_command("--log", str(tmp_path / "log")))
    assert result["output"] in (["hello"], ["hello async"])
    assert result["warning"] == ["careful"]
    assert result["error"] == ["oops"]
    if not mode:
        assert result["had_errors"] is True
        assert result["numbers"] == [1, 2, 3]
        assert result["echoed"] == ["a", "b"]  # pipeline input
        assert result["thrown"] == "it broke"  # a terminating error fails the pipeline
    else:
        assert result["again"] == ["again"]
    assert "Traceback" not in (tmp_path / "log").read_text()


@pytest.mark.parametrize("mode", MODES)
def test_pypsrp10_process_host_call(mode):
    # Read-Host is a pipeline host call; pypsrp answers it as Data Stream='PromptResponse'.
    assert psrp10("process", *mode, "host", "--", *mode_command()) == {"output": ["typed answer"]}


@pytest.mark.parametrize("mode", MODES)
def test_pypsrp10_process_secure_string(mode):
    result = psrp10("process", *mode, "secure", "--", *mode_command())
    assert result == {"type": "PSSecureString", "plain": "secret"}


@pytest.mark.parametrize("mode", MODES)
def test_pypsrp10_process_stop(mode):
    result = psrp10("process", *mode, "stop", "--", *mode_command())
    assert result == {"state": "Stopped", "stopped": True, "output": ["before"], "after": ["still usable"]}


def test_pypsrp10_process_copy_and_fetch(tmp_path):
    # pypsrp 1.0's own copy.ps1 and fetch.ps1 (byte arrays, the SHA-1 last), run natively by the endpoint.
    result = psrp10("process", "--workdir", str(tmp_path), "files", "--", *mode_command())
    expected = result.pop("expected")
    for name in ("big", "empty"):
        assert result.pop(f"copy_{name}") == str(tmp_path / f"{name}.remote")
        assert result.pop(f"copied_{name}") == expected[name]
        assert result.pop(f"fetched_{name}") == expected[name]
    assert result == {"missing": f"The path at '{tmp_path / 'missing'}' does not exist"}


# -- the framing, packet by packet, with psrpcore's client ------------------------------------------
class Peer:
    """The mode as a child process, its stdout lines read by a thread into a queue."""

    def __init__(self, *extra: str, read_lines: bool = True) -> None:
        self.process = subprocess.Popen(
            mode_command(*extra), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lines: "queue.Queue[Optional[bytes]]" = queue.Queue()
        if read_lines:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip(b"\n"))
        self.lines.put(None)

    def send(self, line: bytes) -> None:
        self.process.stdin.write(line + b"\n")
        self.process.stdin.flush()

    def line(self) -> Optional[bytes]:
        return self.lines.get(timeout=WAIT)

    def packet(self) -> outofproc.Packet:
        line = self.line()
        assert line is not None, f"EOF; stderr: {self.stderr()}"
        return outofproc.parse(line, outofproc.SERVER_PACKETS)

    def finish(self) -> Tuple[int, str]:
        """Close stdin; the exit status and stderr."""
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        status = self.process.wait(timeout=WAIT)
        return status, self.stderr()

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(running)"
        return self.process.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except BrokenPipeError:
                pass


@pytest.fixture
def start():
    peers: List[Peer] = []

    def start(*extra: str, read_lines: bool = True) -> Peer:
        peers.append(Peer(*extra, read_lines=read_lines))
        return peers[-1]

    yield start
    for peer in peers:
        peer.kill()


class Client:
    """psrpcore's client pool behind hand-made packets."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.pool = ClientRunspacePool()
        self.events: List[object] = []

    def send_data(self, pid: Optional[uuid.UUID] = None, stream: str = "Default") -> str:
        payload = self.pool.data_to_send()
        guid = str(pid or NULL)
        self.peer.send(outofproc.data_line(uuid.UUID(guid), payload.data, stream))
        return guid

    def take(self, packet: outofproc.Packet) -> None:
        """Feed a server Data packet to psrpcore and collect its events."""
        assert packet.kind == "Data" and packet.stream == "Default"
        self.pool.receive_data(PSRPPayload(packet.data, StreamType.default, packet.pipeline_id))
        while True:
            event = self.pool.next_event()
            if event is None:
                return
            self.events.append(event)

    def until(self, kind: str, guid: str) -> List[outofproc.Packet]:
        """Read packets (feeding Data to psrpcore) until ``kind`` for ``guid``; the packets before it."""
        seen = []
        while True:
            packet = self.peer.packet()
            if packet.kind == kind and str(packet.guid) == guid:
                return seen
            if packet.kind == "Data":
                self.take(packet)
            seen.append(packet)

    def open(self) -> None:
        self.pool.open()
        self.send_data()
        self.until("DataAck", NULL)
        while self.pool.state != RunspacePoolState.Opened:
            self.take(self.peer.packet())

    def pipeline(self, script: str) -> ClientPowerShell:
        ps = ClientPowerShell(self.pool)
        ps.add_script(script)
        ps.start()
        pid = str(ps.pipeline_id)
        self.peer.send(outofproc.guid_line("Command", ps.pipeline_id))
        self.until("CommandAck", pid)
        self.send_data(ps.pipeline_id)
        self.until("DataAck", pid)
        return ps

    def finish_pipeline(self, ps: ClientPowerShell) -> None:
        while ps.state not in (PSInvocationState.Completed, PSInvocationState.Stopped, PSInvocationState.Failed):
            packet = self.peer.packet()
            assert packet.kind == "Data", packet
            self.take(packet)


def test_framing_parse_and_write():
    pid = uuid.UUID("5b1be6c6-ecfa-4ba8-806b-8dd7c290a0fa")
    assert outofproc.data_line(uuid.UUID(int=0), b"\x00\x01") == (
        b"<Data Stream='Default' PSGuid='00000000-0000-0000-0000-000000000000'>AAE=</Data>"
    )
    assert outofproc.guid_line("CommandAck", pid) == b"<CommandAck PSGuid='5b1be6c6-ecfa-4ba8-806b-8dd7c290a0fa' />"
    packet = outofproc.parse(b"<Data Stream='PromptResponse' PSGuid='5B1BE6C6-ECFA-4BA8-806B-8DD7C290A0FA'>AAE=</Data>")
    assert packet == outofproc.Packet("Data", pid, "PromptResponse", b"\x00\x01")
    assert outofproc.parse(b"<Signal PSGuid='5b1be6c6-ecfa-4ba8-806b-8dd7c290a0fa' />").pipeline_id == pid
    assert outofproc.parse(f"<Close PSGuid='{NULL}' />".encode()).pipeline_id is None
    bad = [
        b"hello",
        b"<Data Stream='Default' PSGuid='" + NULL.encode() + b"'>AAE=",  # unterminated
        b"<DataAck PSGuid='" + NULL.encode() + b"' />",  # an Ack from the client
        b"<Data PSGuid='" + NULL.encode() + b"'>AAE=</Data>",  # Stream missing
        b"<Data Stream='Other' PSGuid='" + NULL.encode() + b"'>AAE=</Data>",
        b"<Data Stream='Default' PSGuid='" + NULL.encode() + b"'>A*E=</Data>",  # not base64
        b"<Data Stream='Default' PSGuid='" + NULL.encode() + b"'></Data>",  # no fragments
        b"<Command PSGuid='not-a-guid' />",
        b"<Command PSGuid='" + NULL.encode() + b"' Extra='1' />",
        b"<Close PSGuid='" + NULL.encode() + b"'>text</Close>",
        b"<!DOCTYPE x [<!ENTITY a 'b'>]><Close PSGuid='" + NULL.encode() + b"' />",
    ]
    for line in bad:
        with pytest.raises(outofproc.FramingError):
            outofproc.parse(line)


def test_pipeline_packets_and_close_order(start):
    peer = start()
    client = Client(peer)
    client.open()
    ps = client.pipeline("Write-Output 'one'; Write-Output 'two'")
    client.finish_pipeline(ps)
    outputs = [e.data for e in client.events if isinstance(e, psrpcore.PipelineOutputEvent)]
    assert outputs == ["one", "two"]
    peer.send(outofproc.guid_line("Close", ps.pipeline_id))
    assert client.until("CloseAck", str(ps.pipeline_id)) == []
    # Data for a pipeline that is gone is acknowledged and dropped (PowerShell does so too).
    peer.send(outofproc.data_line(ps.pipeline_id, base64.b64decode("AAE=")))
    assert client.until("DataAck", str(ps.pipeline_id)) == []
    peer.send(outofproc.guid_line("Close", uuid.UUID(int=0)))
    before = client.until("CloseAck", NULL)
    # RUNSPACEPOOL_STATE Closing then Closed come before the pool's CloseAck (pypsrp 1.0 waits for them).
    assert [p.kind for p in before] and all(p.kind == "Data" and p.pipeline_id is None for p in before)
    states = [e.state for e in client.events if isinstance(e, psrpcore.RunspacePoolStateEvent)]
    assert states[-2:] == [RunspacePoolState.Closing, RunspacePoolState.Closed]
    assert peer.finish() == (0, "")


def test_large_output_in_many_fragments(start):
    peer = start()
    client = Client(peer)
    client.open()
    ps = client.pipeline("New-HugeObject 300000; Write-Output 'after'")
    client.finish_pipeline(ps)
    outputs = [e.data for e in client.events if isinstance(e, psrpcore.PipelineOutputEvent)]
    assert [len(outputs[0]), outputs[1]] == [300000, "after"]
    assert ps.state == PSInvocationState.Completed
    assert peer.finish() == (0, "")


def test_pool_close_waits_for_open_pipelines(start):
    peer = start()
    client = Client(peer)
    client.open()
    ps = client.pipeline("Invoke-Stall")
    peer.send(outofproc.guid_line("Close", uuid.UUID(int=0)))
    # Nothing for the pool until the pipeline was closed: the stop's SignalAck and the pipeline's
    # CloseAck come first, and only then the pool's states and CloseAck.
    peer.send(outofproc.guid_line("Signal", ps.pipeline_id))
    seen = client.until("SignalAck", str(ps.pipeline_id))
    assert not any(p.pipeline_id is None for p in seen)
    client.finish_pipeline(ps)
    assert ps.state == PSInvocationState.Stopped
    peer.send(outofproc.guid_line("Close", ps.pipeline_id))
    seen = client.until("CloseAck", str(ps.pipeline_id))
    assert not any(p.pipeline_id is None for p in seen)
    client.until("CloseAck", NULL)
    states = [e.state for e in client.events if isinstance(e, psrpcore.RunspacePoolStateEvent)]
    assert states[-2:] == [RunspacePoolState.Closing, RunspacePoolState.Closed]
    assert peer.finish() == (0, "")


def test_eof_mid_session_exits_cleanly(start):
    peer = start()
    client = Client(peer)
    client.open()
    client.pipeline("Invoke-Stall")
    assert peer.finish() == (0, "")  # the running pipeline is stopped, nothing on stderr


def test_empty_line_ends_the_session(start):
    peer = start()
    Client(peer).open()
    peer.send(b"")
    assert peer.line() is None
    assert peer.process.wait(timeout=WAIT) == 0


MALFORMED = [
    pytest.param(b"garbage that is no packet", "not an OutOfProc packet", id="garbage"),
    pytest.param(f"<DataAck PSGuid='{NULL}' />".encode(), "unexpected OutOfProc element 'DataAck'", id="ack-from-client"),
    pytest.param(f"<Signal PSGuid='{NULL}' />".encode(), "Signal for the runspace pool", id="signal-pool"),
    pytest.param(b"<Command PSGuid='5b1be6c6-ecfa-4ba8-806b-8dd7c290a0fa' />", "not opened yet", id="command-before-open"),
    pytest.param(f"<Data Stream='Default' PSGuid='{NULL}'>AAE=</Data>".encode(), "first Data", id="short-fragment"),
    pytest.param(f"<Data Stream='Default' PSGuid='{NULL}'>{'A' * 100}".encode(), "not an OutOfProc packet", id="unterminated"),
]


@pytest.mark.parametrize("line,message", MALFORMED)
def test_malformed_input_exits_2(start, line, message):
    peer = start()
    peer.send(line)
    assert peer.line() is None  # nothing written, stdout closed
    status, stderr = peer.finish()
    assert status == 2
    assert stderr.startswith("psremote_testserver --out-of-proc: ") and message in stderr
    assert stderr.count("\n") == 1


def test_bad_psrp_data_exits_2(start):
    peer = start()
    client = Client(peer)
    client.open()
    # A whole fragment whose message is no CLIXML.
    message = (2).to_bytes(4, "little") + (0x00021002).to_bytes(4, "little")  # to the server: SET_MAX_RUNSPACES
    message += client.pool.runspace_pool_id.bytes_le + bytes(16) + b"<nope>"
    fragment = (99).to_bytes(8, "big") + bytes(8) + b"\x03" + len(message).to_bytes(4, "big") + message
    peer.send(outofproc.data_line(uuid.UUID(int=0), fragment))
    status, stderr = peer.finish()
    assert status == 2 and "bad PSRP data" in stderr


def test_partial_line_at_eof_exits_2(start):
    peer = start()
    peer.process.stdin.write(b"<Close PSGuid='" + NULL.encode() + b"' />")  # no newline
    status, stderr = peer.finish()
    assert status == 2 and "end of input inside a line" in stderr


def test_packets_after_pool_close_exit_2(start):
    peer = start()
    client = Client(peer)
    client.open()
    peer.send(outofproc.guid_line("Close", uuid.UUID(int=0)))
    client.until("CloseAck", NULL)
    peer.send(b"<Command PSGuid='5b1be6c6-ecfa-4ba8-806b-8dd7c290a0fa' />")
    status, stderr = peer.finish()
    assert status == 2 and "after the runspace pool's Close" in stderr


# -- --misbehave: faults for clients ---------------------------------------------------------------------
def test_misbehave_exit(start):
    peer = start("--misbehave", "exit", "--misbehave-at", "2")
    client = Client(peer)
    client.open()
    peer.send(b"<Command PSGuid='5b1be6c6-ecfa-4ba8-806b-8dd7c290a0fa' />")
    assert peer.line() is None
    assert peer.process.wait(timeout=WAIT) == 3
    assert peer.stderr() == ""


def test_misbehave_exit_stderr(start):
    peer = start("--misbehave", "exit-stderr", "--misbehave-at", "1")
    peer.send(b"<Command PSGuid='5b1be6c6-ecfa-4ba8-806b-8dd7c290a0fa' />")
    assert peer.line() is None
    assert peer.process.wait(timeout=WAIT) == 3
    assert "simulated crash" in peer.stderr()


def test_misbehave_garbage_then_serves_on(start):
    peer = start("--misbehave", "garbage", "--misbehave-at", "1")
    client = Client(peer)
    client.pool.open()
    client.send_data()
    assert peer.line() == b"this is not an OutOfProc packet"
    client.until("DataAck", NULL)


@pytest.mark.parametrize("mode,check", [("bad-base64", "not base64"), ("foreign-ack", "foreign"), ("no-ack", "none")])
def test_misbehave_packets(start, mode, check):
    peer = start("--misbehave", mode, "--misbehave-at", "2")
    client = Client(peer)
    client.open()
    pid = uuid.UUID("5b1be6c6-ecfa-4ba8-806b-8dd7c290a0fa")
    peer.send(outofproc.guid_line("Command", pid))
    peer.send(outofproc.guid_line("Close", pid))  # the next packet, answered as usual
    if check == "not base64":
        with pytest.raises(outofproc.FramingError, match="not base64"):
            peer.packet()
        assert outofproc.parse(peer.line(), outofproc.SERVER_PACKETS) == outofproc.Packet("CommandAck", pid)
    elif check == "foreign":
        ack = peer.packet()
        assert ack.kind == "CommandAck" and ack.guid not in (pid, uuid.UUID(int=0))
    assert peer.packet() == outofproc.Packet("CloseAck", pid)
    assert peer.finish() == (0, "")


def test_misbehave_endless_line(start):
    peer = start("--misbehave", "endless-line", "--misbehave-at", "1", read_lines=False)
    peer.send(b"<Command PSGuid='5b1be6c6-ecfa-4ba8-806b-8dd7c290a0fa' />")
    head = peer.process.stdout.read(1 << 20)  # a MiB of one line, and no end in sight
    assert head.startswith(b"<Data Stream='Default' PSGuid=") and b"\n" not in head
    peer.process.stdout.close()
    assert peer.process.wait(timeout=WAIT) == 3
