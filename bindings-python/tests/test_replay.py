"""psremote's Python API against recorded real-Windows conversations.

The replay server (``python -m psremote_testserver.replay``) answers each request with the
response a Windows server gave pypsrp for the equivalent request in
``core/tests/data/windows-transcripts/*.yml``, translating ids. Each test makes the calls of the
public Python API (``psremote.Client``, ``RunspacePool``, ``PowerShell``, ``CmdShell``, hosts,
``psremote.aio``) that are equivalent to what pypsrp did in the recording, checks the recorded
outcome (output, errors, streams, host calls, exit codes, states), and checks that the server
saw the recorded conversation (:meth:`Replay.assert_exact`): no unexpected request, every
recorded exchange made, every recorded PSRP message sent, and the client's commands,
arguments, input, host responses, environment and stdin equal to the recorded client's.

core/tests/replay.rs does the same through the Rust API. Every transcript is either replayed
here or listed in :data:`NOT_REPLAYED` with the reason (checked by
:func:`test_every_transcript_is_replayed_or_explained`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import pytest

import psremote
from psremote import AsyncClient, PSCredential, PSHost, PSObject, SecureString, WSManFault
from psremote.exceptions import HashMismatchError, TransferFileNotFoundError, TransferIsADirectoryError
from psremote_testserver.testing import read_url_line

ROOT = Path(__file__).resolve().parents[2]
TRANSCRIPTS = ROOT / "core" / "tests" / "data" / "windows-transcripts"
USER = "replay"
PASSWORD = "Replay-Passw0rd!"

#: Recordings without a test here, with the reason. The goal is an empty dict.
NOT_REPLAYED: Dict[str, str] = {}

#: Recordings with a test here (filled by :func:`replays`).
REPLAYED: Dict[str, str] = {}


def replays(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Registers the transcripts a test replays."""

    def register(test: Callable[..., Any]) -> Callable[..., Any]:
        for name in names:
            REPLAYED.setdefault(name, test.__name__)
        return test

    return register


# ---------------------------------------------------------------------------------------------
# The replay server


class Replay:
    """One replay server on one transcript; stopped by the fixture."""

    def __init__(self, transcript: str, log: Path, skip: Sequence[int] = (), extra: Sequence[str] = ()) -> None:
        self.name = transcript
        self.log = log
        args = [
            sys.executable, "-m", "psremote_testserver.replay", "--port", "0",
            "--transcript", str(TRANSCRIPTS / transcript), "--user", USER, "--password", PASSWORD,
            "--skip", ",".join(str(i) for i in skip), *extra,
        ]  # fmt: skip
        with open(log, "wb") as stderr:
            self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, cwd=ROOT)
        try:
            self.url = read_url_line(self.process, 30.0)
        except (TimeoutError, RuntimeError):
            self.stop()
            raise RuntimeError(f"the replay server did not start: {log.read_text()}") from None
        assert self.url.startswith("http://127.0.0.1:"), self.url
        self.base = self.url.rsplit("/", 1)[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def state(self) -> Dict[str, Any]:
        with urllib.request.urlopen(self.base + "/_control/state", timeout=10) as response:
            return json.load(response)  # type: ignore[no-any-return]

    def settled(self) -> Dict[str, Any]:
        """The state once the client's background requests (Signal Terminate after a
        pipeline, the last pool Receive) have reached the server: unchanged for half a second."""
        deadline = time.monotonic() + 10.0
        last = self.state()
        while True:
            time.sleep(0.5)
            now = self.state()
            if (now["trace"] == last["trace"] and now["unexpected"] == last["unexpected"]) or time.monotonic() > deadline:
                return now
            last = now

    def kwargs(self, **extra: Any) -> Dict[str, Any]:
        """Client options for this server: plaintext Basic, as the replay server speaks."""
        return {"url": self.url, "username": USER, "password": PASSWORD, "auth": "basic", "allow_unencrypted": True, **extra}

    def client(self, **extra: Any) -> psremote.Client:
        return psremote.Client(**self.kwargs(**extra))

    def async_client(self, **extra: Any) -> AsyncClient:
        return AsyncClient(**self.kwargs(**extra))

    def assert_exact(self, state: Dict[str, Any], synthesized: Iterable[str] = ()) -> None:
        """The server saw the recorded conversation: nothing unexpected, nothing recorded left
        unserved or incomplete, no content differing from the recording; ``synthesized`` lists
        the answers the server made up for requests the recorded client did not make (e.g.
        ``"Signal shell1/cmd1"``, psremote's Signal Terminate where a 2018 recording has none)."""
        brief = {k: v for k, v in state.items() if k != "client_messages"}
        context = f"{self.name}: {json.dumps(brief, indent=1)}"
        assert state["unexpected"] == [], f"unexpected requests; {context}"
        assert pairs(state, "unused") == [], f"recorded exchanges never made; {context}"
        assert pairs(state, "incomplete") == [], f"recorded messages never sent; {context}"
        assert state["mismatches"] == [], f"content differs from the recording; {context}"
        assert pairs(state, "synthesized") == list(synthesized), context


def pairs(state: Dict[str, Any], key: str) -> List[str]:
    """``[action, target]`` pairs as strings."""
    return [f"{p[0]} {p[1]}" for p in state.get(key) or []]


def client_messages(state: Dict[str, Any], kind: str) -> List[str]:
    """The client's PSRP messages of one type, as the server decoded them."""
    return [m["data"] for m in state["client_messages"] if m["type"] == kind]


@pytest.fixture
def replay(tmp_path: Path) -> Iterator[Callable[..., Replay]]:
    """Factory: ``replay("test_x.yml", skip=[3], extra=["--ignore-script-text"])`` starts a
    replay server; every one started is stopped at teardown, and its state is printed (pytest
    shows it when the test failed)."""
    started: List[Replay] = []

    def start(transcript: str, skip: Sequence[int] = (), extra: Sequence[str] = ()) -> Replay:
        server = Replay(transcript, tmp_path / f"replay-{len(started)}.log", skip, extra)
        started.append(server)
        return server

    yield start
    for server in started:
        try:
            brief = {k: v for k, v in server.state().items() if k != "client_messages"}
            print(f"{server.name} state at teardown: {json.dumps(brief)}")
        except OSError as e:
            print(f"{server.name}: no state ({e})")
        server.stop()
        print(f"{server.name} log:\n{server.log.read_text()}")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ---------------------------------------------------------------------------------------------
# Coverage of the transcript directory


def test_every_transcript_is_replayed_or_explained() -> None:
    on_disk = sorted(p.name for p in TRANSCRIPTS.glob("*.yml") if p.name != "_template.yml")
    assert on_disk, f"no transcripts in {TRANSCRIPTS}"
    both = sorted(set(REPLAYED) & set(NOT_REPLAYED))
    assert both == [], "listed as replayed and as not replayed"
    assert sorted([*REPLAYED, *NOT_REPLAYED]) == on_disk


# ---------------------------------------------------------------------------------------------
# WinRS cmd shells. pypsrp sent no WINRS_CODEPAGE, where psremote asks for UTF-8 by default:
# the recordings' shells are opened with codepage=None.


@replays("test_winrs_standard.yml")
def test_winrs_standard(replay) -> None:
    r = replay("test_winrs_standard.yml")
    with r.client() as client:
        with client.cmd_shell(codepage=None) as shell:
            process = shell.start("cmd.exe", ["/c", "echo", "hi"])
            result = process.wait()
    assert (result.stdout, result.stderr, result.exit_code) == (b"hi\r\n", b"", 0)
    assert process.exit_code == 0
    # pypsrp's Signal was ctrl_c after the command finished; psremote's Terminate takes its place.
    r.assert_exact(r.settled())


@replays("test_winrs_environment.yml")
def test_winrs_environment(replay) -> None:
    r = replay("test_winrs_environment.yml")
    special = '_-(){}[]<>*+-/\\?"!@#$^&|;:i,.`~0'
    environment = {"env1": "var1", "1234": "5678", special: special}
    with r.client() as client:
        with client.cmd_shell(environment=environment, codepage=None) as shell:
            result = shell.start("cmd.exe", ["/c", "set"]).wait()
    lines = result.stdout.decode().split("\r\n")
    assert "env1=var1" in lines and "1234=5678" in lines and f"{special}={special}" in lines, lines
    assert result.exit_code == 0
    r.assert_exact(r.settled())


@replays("test_winrs_noprofile.yml")
def test_winrs_noprofile_async(replay) -> None:
    r = replay("test_winrs_noprofile.yml")

    async def scenario() -> psremote.CmdResult:
        async with r.async_client() as client:
            async with client.cmd_shell(no_profile=True, codepage=None) as shell:
                process = await shell.start("cmd.exe", ["/c", "set"])
                return await process.wait()

    result = run(scenario())
    assert "USERPROFILE=C:\\Users\\Default\r\n" in result.text, result.text
    assert result.exit_code == 0
    r.assert_exact(r.settled())


@replays("test_winrs_send.yml")
def test_winrs_send(replay) -> None:
    r = replay("test_winrs_send.yml")
    with r.client() as client:
        with client.cmd_shell(codepage=None) as shell:
            process = shell.start("powershell.exe", ["-"])
            process.send('Write-Host "output 1";')
            process.send(b'Write-Host "output 2";', end=True)
            chunks = list(process)
    assert b"".join(c.data for c in chunks if c.stream == "stdout") == b"output 1\noutput 2\n"
    assert b"".join(c.data for c in chunks if c.stream == "stderr") == b""
    assert process.exit_code == 0 and process.finished
    r.assert_exact(r.settled())


def test_winrs_send_async(replay) -> None:
    r = replay("test_winrs_send.yml")

    async def scenario() -> psremote.CmdResult:
        async with r.async_client() as client:
            async with client.cmd_shell(codepage=None) as shell:
                async with await shell.start("powershell.exe", ["-"]) as process:
                    await process.send('Write-Host "output 1";')
                    await process.send('Write-Host "output 2";', end=True)
                    return await process.wait()

    result = run(scenario())
    assert (result.stdout, result.stderr, result.exit_code) == (b"output 1\noutput 2\n", b"", 0)
    r.assert_exact(r.settled())


@replays("test_winrs_open_already_opened.yml")
def test_winrs_open_already_opened(replay) -> None:
    # pypsrp opened the same WinRS object twice; only the first open reaches the server.
    r = replay("test_winrs_open_already_opened.yml")
    with r.client() as client:
        shell = client.cmd_shell(codepage=None)
        assert shell.id == "ED7FD87E-E041-4BC2-A22F-B58FF7833094"
        shell.close()
        shell.close()
        assert shell.closed
        with pytest.raises(psremote.ClosedError):
            shell.start("cmd.exe")
    r.assert_exact(r.settled())


@replays("test_winrs_no_cmd_shell.yml")
def test_winrs_no_cmd_shell(replay) -> None:
    """Commands started without cmd.exe (WINRS_SKIP_CMD_SHELL): the first names an executable
    the server cannot find, and its fault reaches the caller with its code."""
    r = replay("test_winrs_no_cmd_shell.yml")
    with r.client() as client:
        with client.cmd_shell(codepage=None) as shell:
            with pytest.raises(WSManFault) as failure:
                shell.start("powershell.exe", ["Write-Host", "hi"], skip_cmd_shell=True)
            assert failure.value.code == 2147942402, failure.value
            assert "The system cannot find the file specified" in str(failure.value)
            exe = "C:\\Windows\\system32\\WindowsPowerShell\\v1.0\\powershell.exe"
            result = shell.start(exe, ["Write-Host", "hi"], skip_cmd_shell=True).wait()
    assert (result.stdout, result.exit_code) == (b"hi\n", 0)
    r.assert_exact(r.settled())


# ---------------------------------------------------------------------------------------------
# pypsrp's Client.execute_cmd and execute_ps: one shell (or runspace pool) per call. pypsrp
# sent no stdin to these commands; psremote's Client.run_cmd always closes stdin with an empty
# Send (so a command reading stdin cannot wait forever), a request the recordings do not have,
# so the equivalent here is a shell, a command without stdin, and its output.


def execute_cmd(client: psremote.Client, command: str, **options: Any) -> psremote.CmdResult:
    """pypsrp's execute_cmd: a cmd shell of its own, the command, its output, the shell deleted."""
    with client.cmd_shell(codepage=None, **options) as shell:
        return shell.start(command).wait()


@replays("test_client_execute_cmd.yml")
def test_client_execute_cmd(replay) -> None:
    r = replay("test_client_execute_cmd.yml")
    with r.client() as client:
        listing = execute_cmd(client, "dir")
        echo = execute_cmd(client, "echo abc")
    assert listing.exit_code == 0 and listing.stderr == b""
    assert " Directory of C:\\Users\\vagrant\r\n" in listing.text, listing.text
    assert (echo.stdout, echo.stderr, echo.exit_code) == (b"abc\r\n", b"", 0)
    r.assert_exact(r.settled())


@replays("test_client_execute_cmd_environment.yml")
def test_client_execute_cmd_environment_async(replay) -> None:
    r = replay("test_client_execute_cmd_environment.yml")
    environment = {
        "string": "string value",
        "int": "1234",
        "bool": "True",
        "double_quote": 'double " quote',
        "single_quote": "single ' quote",
        "hyphen - var": "abc @ 123",
    }

    async def scenario() -> psremote.CmdResult:
        async with r.async_client() as client:
            async with client.cmd_shell(environment=environment, codepage=None) as shell:
                return await (await shell.start("set")).wait()

    result = run(scenario())
    lines = result.text.split("\r\n")
    for name, value in environment.items():
        assert f"{name}={value}" in lines, lines
    assert result.exit_code == 0
    r.assert_exact(r.settled())


def execute_ps(pool: psremote.RunspacePool, script: str) -> psremote.PSResult:
    """pypsrp's execute_ps: ``Invoke-Expression -Command script | Out-String -Stream``."""
    ps = pool.powershell()
    ps.add_command("Invoke-Expression").add_parameter("Command", script)
    ps.add_command("Out-String").add_parameter("Stream")
    return ps.invoke()


@replays("test_client_execute_ps.yml")
def test_client_execute_ps(replay) -> None:
    r = replay("test_client_execute_ps.yml")
    with r.client() as client:
        with client.runspace_pool() as pool:
            result = execute_ps(pool, "$serv = Get-Service -Name winrm; $serv.Name; $serv.Status; $serv")
    assert result.state == "Completed" and not result.had_errors
    assert result.output[:3] == ["winrm", "Running", ""]
    assert "Running  winrm              Windows Remote Management (WS-Manag..." in result.output
    assert [p.activity for p in result.progress] == ["Preparing modules for first use."]
    # pypsrp deleted the pool without a Signal after the pipeline; psremote sends one.
    r.assert_exact(r.settled(), ["Signal shell1/cmd1"])


@replays("test_client_execute_ps_failure.yml")
def test_client_execute_ps_failure_async(replay) -> None:
    r = replay("test_client_execute_ps_failure.yml")

    async def scenario() -> psremote.PSResult:
        async with r.async_client() as client:
            async with client.runspace_pool() as pool:
                ps = pool.powershell()
                ps.add_command("Invoke-Expression").add_parameter("Command", "Get-ServiceTypo -Name winrm")
                ps.add_command("Out-String").add_parameter("Stream")
                return await ps.invoke()

    result = run(scenario())
    assert result.output == []
    assert result.state == "Failed" and result.had_errors
    assert result.terminating_error is not None
    assert result.terminating_error.message.startswith("The term 'Get-ServiceTypo' is not recognized"), result.terminating_error
    with pytest.raises(psremote.PipelineError, match="Get-ServiceTypo"):
        result.raise_for_errors()
    r.assert_exact(r.settled(), ["Signal shell1/cmd1"])


# ---------------------------------------------------------------------------------------------
# PowerShell runspace pools. psremote sends Signal Terminate after each pipeline; the 2018
# recordings have none, so the server makes those answers up (listed as synthesized).


@replays("test_psrp_open_runspace.yml")
def test_psrp_open_runspace(replay) -> None:
    r = replay("test_psrp_open_runspace.yml")
    with r.client() as client:
        with client.runspace_pool() as pool:
            assert pool.state == "Opened"
            assert pool.protocol_version == "2.3"
            data = pool.application_private_data
            versions = data["PSVersionTable"]
            assert str(versions["PSVersion"]).startswith("5.1."), versions
        assert pool.closed
    r.assert_exact(r.settled())


@replays("test_psrp_no_profile.yml")
def test_psrp_no_profile(replay) -> None:
    r = replay("test_psrp_no_profile.yml")
    with r.client() as client:
        with client.runspace_pool(no_profile=True) as pool:
            result = pool.run_ps("$env:USERPROFILE.ToUpperInvariant()")
    assert result.output == ["C:\\WINDOWS\\SYSTEM32\\CONFIG\\SYSTEMPROFILE"]
    r.assert_exact(r.settled(), ["Signal shell1/cmd1"])


@replays("test_psrp_multiple_invocations.yml")
def test_psrp_multiple_invocations(replay) -> None:
    r = replay("test_psrp_multiple_invocations.yml")
    with r.client() as client:
        with client.runspace_pool() as pool:
            ps = pool.powershell().add_script("1+1")
            results = [ps.invoke(), ps.invoke()]
    for result in results:
        assert result.output == [2] and result.state == "Completed" and not result.had_errors
    state = r.settled()
    r.assert_exact(state)
    assert len(client_messages(state, "CREATE_PIPELINE")) == 2


@replays("test_psrp_clear_commands.yml")
def test_psrp_clear_commands(replay) -> None:
    # pypsrp added "echo hi", cleared the commands and added "echo new": one script is sent.
    r = replay("test_psrp_clear_commands.yml")
    with r.client() as client:
        with client.runspace_pool() as pool:
            ps = pool.powershell().add_script("echo hi")
            ps.clear()
            result = ps.add_script("echo new").invoke()
    assert result.output == ["new"]
    assert [(p.activity, p.completed) for p in result.progress] == [("Preparing modules for first use.", True)]
    r.assert_exact(r.settled(), ["Signal shell1/cmd1"])


@replays("test_psrp_error_failed.yml")
def test_psrp_error_failed(replay) -> None:
    r = replay("test_psrp_error_failed.yml")
    with r.client() as client:
        with client.runspace_pool() as pool:
            script = "$ErrorActionPreference = 'Stop'; Write-Output before; Write-Error error; Write-Output after"
            with pool.start(script) as pipeline:
                events = list(pipeline)
            assert pipeline.state == "Failed"
    assert [e.value for e in events if e.kind == "output"] == ["before"]
    kind, final = events[-1]
    assert kind == "state" and final.state == "Failed"
    assert final.error is not None and final.error.message == "error"
    r.assert_exact(r.settled(), ["Signal shell1/cmd1"])


def test_psrp_error_failed_raises(replay) -> None:
    r = replay("test_psrp_error_failed.yml")
    with r.client() as client:
        with client.runspace_pool() as pool:
            script = "$ErrorActionPreference = 'Stop'; Write-Output before; Write-Error error; Write-Output after"
            with pytest.raises(psremote.PipelineError) as failure:
                pool.run_ps(script, raise_on_error=True)
    result = failure.value.result
    assert result is not None and result.output == ["before"] and result.state == "Failed" and result.had_errors
    assert failure.value.error_record is not None and failure.value.error_record.message == "error"
    r.assert_exact(r.settled(), ["Signal shell1/cmd1"])


@replays("test_psrp_set_runspaces.yml")
def test_psrp_set_runspaces(replay) -> None:
    r = replay("test_psrp_set_runspaces.yml")
    with r.client() as client:
        with client.runspace_pool() as pool:
            assert pool.available_runspaces() == 1
            assert pool.set_max_runspaces(5) is True
            assert pool.available_runspaces() == 5
            assert pool.set_min_runspaces(2) is True
            assert pool.set_min_runspaces(-1) is False
            assert pool.set_max_runspaces(-1) is False
    r.assert_exact(r.settled())


@replays("test_psrp_reset_runspace_state.yml")
def test_psrp_reset_runspace_state(replay) -> None:
    r = replay("test_psrp_reset_runspace_state.yml")
    with r.client() as client:
        with client.runspace_pool() as pool:
            assert pool.run_ps("echo hi", add_to_history=True).output == ["hi"]
            assert pool.reset_runspace_state() is True
            result = pool.powershell().add_command("Get-History").invoke()
    assert result.output == [], "the history is gone"
    assert result.state == "Completed"
    r.assert_exact(r.settled(), ["Signal shell1/cmd1", "Signal shell1/cmd2"])


@replays("test_psrp_with_history.yml")
def test_psrp_with_history(replay) -> None:
    r = replay("test_psrp_with_history.yml")
    with r.client() as client:
        with client.runspace_pool() as pool:
            assert pool.run_ps("Write-Output 1; Write-Output 2", add_to_history=True).output == [1, 2]
            result = pool.run_ps("Get-History")
    (entry,) = result.output
    assert isinstance(entry, PSObject)
    assert entry.type_names[0] == "Microsoft.PowerShell.Commands.HistoryInfo"
    assert entry.CommandLine == "Write-Output 1; Write-Output 2"
    assert str(entry.ExecutionStatus) == "Completed"
    r.assert_exact(r.settled(), ["Signal shell1/cmd1", "Signal shell1/cmd2"])


WITH_INPUT_SCRIPT = """begin {
                $DebugPreference = 'Continue'
                Write-Debug "Start Block"
            }
            process {
                $input
            }
            end {
                Write-Debug "End Block"
            }"""


@replays("test_psrp_with_input.yml")
def test_psrp_with_input(replay) -> None:
    r = replay("test_psrp_with_input.yml")
    with r.client() as client:
        with client.runspace_pool() as pool:
            result = pool.run_ps(WITH_INPUT_SCRIPT, ["1", 2, {"a": "b"}, ["a", "b"]])
    assert result.state == "Completed"
    assert result.output == ["1", 2, {"a": "b"}, ["a", "b"]]
    assert result.debug == ["Start Block", "End Block"]
    # pypsrp sent the input and its end in one Send; psremote sends END_OF_PIPELINE_INPUT in a
    # second one, which the server answers as a continuation.
    state = r.settled()
    r.assert_exact(state, ["Send shell1/cmd1", "Signal shell1/cmd1"])
    assert len(client_messages(state, "PIPELINE_INPUT")) == 4


def test_psrp_with_input_async(replay) -> None:
    """The same conversation from asyncio, the input from a generator."""
    r = replay("test_psrp_with_input.yml")

    def values() -> Iterator[Any]:
        yield "1"
        yield 2
        yield {"a": "b"}
        yield ["a", "b"]

    async def scenario() -> psremote.PSResult:
        async with r.async_client() as client:
            async with client.runspace_pool() as pool:
                pipeline = await pool.start(WITH_INPUT_SCRIPT, values())
                return await pipeline.result()

    result = run(scenario())
    assert result.state == "Completed"
    assert result.output == ["1", 2, {"a": "b"}, ["a", "b"]]
    assert result.debug == ["Start Block", "End Block"]
    r.assert_exact(r.settled(), ["Send shell1/cmd1", "Signal shell1/cmd1"])


MERGED_SCRIPT = """begin {
    $DebugPreference = 'Continue'
    Write-Debug "Start Block"
    Write-Error "error"
}
process {
    $input
}
end {
    Write-Debug "End Block"
}"""


@replays("test_psrp_run_protocol_version_2.2.yml", "test_psrp_run_protocol_version_2.3.yml")
@pytest.mark.parametrize("version", ["2.2", "2.3"])
def test_psrp_run_protocol_version(replay, version: str) -> None:
    # The server of one recording answered protocol 2.2: the pipeline's commands then carry no
    # MergeInformation (a 2.3 property), as the recorded client's did.
    r = replay(f"test_psrp_run_protocol_version_{version}.yml")
    with r.client() as client:
        with client.runspace_pool() as pool:
            assert pool.protocol_version == version
            ps = pool.powershell().add_script(MERGED_SCRIPT).merge_error()
            result = ps.invoke(["message 1", 2, ["3", 3]])
    assert result.state == "Completed"
    assert len(result.output) == 4, result.output
    error = result.output[0]
    assert isinstance(error, PSObject)
    assert error.type_names[0] == "System.Management.Automation.ErrorRecord"
    assert error.to_string == "error"
    assert result.output[1:] == ["message 1", 2, ["3", 3]]
    assert result.errors == [], "the error was merged into output"
    assert result.debug == ["Start Block", "End Block"]
    state = r.settled()
    r.assert_exact(state, ["Send shell1/cmd1", "Signal shell1/cmd1"])
    assert len(client_messages(state, "PIPELINE_INPUT")) == 3
    assert len(client_messages(state, "END_OF_PIPELINE_INPUT")) == 1
    (pipeline,) = client_messages(state, "CREATE_PIPELINE")
    assert 'N="MergeError"' in pipeline
    assert ('N="MergeInformation"' in pipeline) == (version == "2.3")


STREAMS_SCRIPT = """$DebugPreference = 'Continue'
            $VerbosePreference = 'Continue'
            Write-Debug 'debug stream'
            Write-Verbose 'verbose stream'
            Write-Error 'error stream'
            Write-Output 'output stream'
            Write-Warning 'warning stream'
            Write-Information 'information stream'
            """


def check_streams(result: psremote.PSResult) -> None:
    assert result.state == "Completed"
    assert result.output == ["output stream"]
    assert [e.message for e in result.errors] == ["error stream"]
    assert result.debug == ["debug stream"]
    assert result.verbose == ["verbose stream"]
    assert result.warnings == ["warning stream"]
    assert [(str(i), i.source) for i in result.information] == [("information stream", "Write-Information")]
    assert len(result.progress) == 1
    assert result.had_errors


@replays("test_psrp_stream_output_invocation.yml")
def test_psrp_stream_output_invocation(replay) -> None:
    # invocation_info=True is the default, as pypsrp's recording asked (RemoteStreamOptions
    # AddInvocationInfo; the server compares it).
    r = replay("test_psrp_stream_output_invocation.yml")
    with r.client() as client:
        with client.runspace_pool() as pool:
            result = pool.powershell().add_script(STREAMS_SCRIPT).invoke()
    check_streams(result)
    r.assert_exact(r.settled(), ["Signal shell1/cmd1"])


@replays("test_psrp_stream_no_output_invocation.yml")
def test_psrp_stream_no_output_invocation_async(replay) -> None:
    r = replay("test_psrp_stream_no_output_invocation.yml")

    async def scenario() -> psremote.PSResult:
        async with r.async_client() as client:
            async with client.runspace_pool() as pool:
                return await pool.run_ps(STREAMS_SCRIPT, invocation_info=False)

    check_streams(run(scenario()))
    r.assert_exact(r.settled(), ["Signal shell1/cmd1"])


@replays("test_psrp_with_jea_configuration.yml")
def test_psrp_with_jea_configuration(replay) -> None:
    r = replay("test_psrp_with_jea_configuration.yml")
    with r.client() as client:
        with client.runspace_pool("JEARole") as pool:
            get = pool.powershell().add_command("Get-Item").add_parameter("Path", "WSMan:\\localhost\\Service\\AllowUnencrypted")
            first = get.invoke()
            # Two statements: the endpoint has no FileSystem provider, and its no-language mode
            # refuses the script.
            ps = pool.powershell().add_command("Get-Item").add_parameter("Path", "C:\\Windows").add_statement()
            ps.add_script("Set-Item -Path WSMan:\\localhost\\Service\\AllowUnencrypted -Value $false")
            second = ps.invoke()
    assert first.state == "Completed"
    (leaf,) = first.output
    assert leaf.type_names[0] == "Microsoft.WSMan.Management.WSManConfigLeafElement"
    assert second.state == "Failed"
    assert [e.message for e in second.errors] == ["Cannot find a provider with the name 'FileSystem'."]
    assert second.terminating_error is not None
    assert second.terminating_error.message.startswith("The syntax is not supported by this runspace."), second.terminating_error
    r.assert_exact(r.settled(), ["Signal shell1/cmd1", "Signal shell1/cmd2"])


class RecordingHost(PSHost):
    """Records every host call (method name and parameters) and answers from ``answers``;
    methods without an answer behave as PSHost's (NotImplementedError for what needs a person)."""

    def __init__(self, answers: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self.calls: List[Any] = []
        self.answers = answers or {}

    def call(self, method_name: str, method_id: int, parameters: List[Any]) -> Any:
        self.calls.append((method_name, list(parameters)))
        if method_name in self.answers:
            return self.answers[method_name]
        return super().call(method_name, method_id, parameters)


@replays("test_psrp_pshost_methods.yml")
def test_psrp_pshost_methods(replay) -> None:
    r = replay("test_psrp_pshost_methods.yml")
    host = RecordingHost()
    with r.client() as client:
        with client.runspace_pool(host=host) as pool:
            result = pool.run_ps("$host.CurrentCulture; $host.SetShouldExit(1)")
    assert result.state == "Completed"
    (culture,) = result.output
    assert culture.to_string == "en-US" and culture.LCID == 1033
    assert host.calls == [("SetShouldExit", [1])]
    assert [(c.method, c.parameters) for c in result.host_calls] == [("SetShouldExit", [1])]
    state = r.settled()
    r.assert_exact(state, ["Signal shell1/cmd1"])
    assert client_messages(state, "PIPELINE_HOST_RESPONSE") == [], "SetShouldExit is void: nothing is answered"


def test_psrp_key_exchange_with_another_key(replay) -> None:
    """A session key encrypted for another key pair: with its own generated key, psremote sends
    a well-formed PUBLIC_KEY and, given the recorded ENCRYPTED_SESSION_KEY (made for pypsrp's
    test key), fails the exchange with a clear error instead of hanging."""
    r = replay("test_psrp_multiple_commands.yml", skip=[5, 6])
    with r.client() as client:
        pool = client.runspace_pool()
        with pytest.raises(psremote.PSRemoteError, match="cannot decrypt the session key"):
            pool.exchange_key()
        assert pool.state == "Broken"
        try:
            pool.close()
        except psremote.PSRemoteError:
            pass
    state = r.settled()
    (key,) = client_messages(state, "PUBLIC_KEY")
    blob = base64.b64decode(key.split('<S N="PublicKey">')[1].split("</S>")[0])
    assert len(blob) == 276
    assert blob[:16] == bytes([6, 2, 0, 0, 0, 0xA4, 0, 0]) + b"RSA1" + bytes([0, 8, 0, 0])
    assert blob[16:20] == (65537).to_bytes(4, "little")
    assert state["unexpected"] == [] and state["mismatches"] == [], state



# ---------------------------------------------------------------------------------------------
# SecureStrings: the recordings exchanged the session key with pypsrp's published test RSA key
# (vector psrp-key-exchange-real). Given that key (a private, testing-only hook of the native
# pool), the recorded session key decrypts, and psremote encrypts every secret into exactly the
# ciphertext pypsrp sent (the server compares them).

PYPSRP_KEY_P = bytes.fromhex(
    "f8417a30800b68c766c29f80991870f0912052a967755c307c2f99300c65e9c1493f8f49c4706ebe26bd82c4435de417"
    "f12ca13402a3419edc1b444e30cffb205dba8d828574022d13974b7d217a20107b6cbecaa529c13868f429d56d10973d"
    "a7e773c4a056fa3d5b4cf96ba92c3b9c378bb9c3a9f2214ced38711025f39355"
)
PYPSRP_KEY_Q = bytes.fromhex(
    "c9b3671a98095c024dbd29894c559301868edf49a1e87b3d8d37ee5d186319ddde827811c5e54a07e739644cec83b36e"
    "8972b4b50ac00577d80987a67cbf8967aa4c12fce69b9b2120f9ddaf2e90acc7399380e849f2f7def18dc7f81b012249"
    "337a4b1964c24d625260b8764014f29eb76e8fc5d57e6e4d5472fcd30e0eafb3"
)


def use_pypsrp_key(pool: Any) -> None:
    """Makes the pool's key exchange (not started yet) use pypsrp's test key."""
    pool._native._use_session_key_primes(PYPSRP_KEY_P, PYPSRP_KEY_Q, 65537)


UNICODE = "こんにちは - actual_x000A_string\nnewline: \U00010437"


@replays("test_psrp_multiple_commands.yml")
def test_psrp_multiple_commands(replay) -> None:
    # The whole conversation, key exchange included.
    r = replay("test_psrp_multiple_commands.yml")
    with r.client() as client:
        with client.runspace_pool() as pool:
            use_pypsrp_key(pool)
            pool.exchange_key()
            with pytest.raises(psremote.ConfigurationError, match="already started"):
                use_pypsrp_key(pool)
            ps = pool.powershell()
            ps.add_command("Set-Variable").add_parameter("Name", "sec_string").add_parameter("Value", SecureString("Hello World"))
            ps.add_statement().add_script(
                "[System.Runtime.InteropServices.marshal]::PtrToStringAuto([System.Runtime.InteropServices.marshal]::SecureStringToBSTR($sec_string))"
            )
            ps.add_statement().add_command("ConvertTo-SecureString").add_parameter("String", "abc")
            ps.add_parameter("AsPlainText").add_parameter("Force")
            ps.add_statement().add_command("Set-Variable").add_parameters({"Name": "unicode_string", "Value": UNICODE})
            ps.add_statement().add_script("$unicode_string")
            ps.add_statement().add_command("cmd.exe").add_argument("/c echo hi")
            ps.add_statement().add_command("whoami.exe")
            ps.add_statement().add_command("Set-Variable").add_parameters({"Name": "integer", "Value": 123})
            ps.add_statement().add_script("$integer")
            ps.add_statement().add_command("Get-Service").add_parameter("Name", "winrm")
            result = ps.invoke()
    assert result.state == "Completed", result.errors
    assert len(result.output) == 7, result.output
    hello, abc, unicode, echo, whoami, integer, service = result.output
    assert hello == "Hello World"
    assert isinstance(abc, SecureString) and abc.get_value() == "abc"
    assert unicode == UNICODE
    assert echo == 'hi"'
    assert whoami == "win-nnmu24vvkj0\\vagrant"
    assert integer == 123
    assert isinstance(service, PSObject)
    assert service.type_names[0] == "System.ServiceProcess.ServiceController"
    assert service.to_string == "winrm"
    assert service.DisplayName == "Windows Remote Management (WS-Management)"
    r.assert_exact(r.settled(), ["Signal shell1/cmd1"])


class MockedUIHost(RecordingHost):
    """pypsrp's mocked host UI: answers the calls that need a person, records the writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: List[Any] = []
        self.prompts: List[Any] = []

    def read_line(self) -> str:
        return "ReadLine response"

    def read_line_as_secure_string(self) -> str:
        return "ReadLineAsSecureString response"

    def write(self, text: str, foreground_color: Optional[int] = None, background_color: Optional[int] = None) -> None:
        self.writes.append(("write", text, foreground_color, background_color))

    def write_line(self, text: str = "", foreground_color: Optional[int] = None, background_color: Optional[int] = None) -> None:
        self.writes.append(("write_line", text, foreground_color, background_color))

    def write_error_line(self, text: str) -> None:
        self.writes.append(("error", text))

    def write_debug_line(self, text: str) -> None:
        self.writes.append(("debug", text))

    def write_verbose_line(self, text: str) -> None:
        self.writes.append(("verbose", text))

    def write_warning_line(self, text: str) -> None:
        self.writes.append(("warning", text))

    def write_progress(self, source_id: int, record: psremote.ProgressRecord) -> None:
        self.writes.append(("progress", source_id, record.activity))

    def prompt(self, caption: str, message: str, descriptions: List[Any]) -> Dict[str, Any]:
        self.prompts.append(("prompt", caption, message, [(d.Name, d.Label) for d in descriptions]))
        return {"prompt field": "prompt response"}

    def prompt_for_credential(self, caption: str, message: str, user_name: str, target_name: str) -> PSCredential:
        self.prompts.append(("credential", caption, message, user_name, target_name))
        return PSCredential("username", SecureString("password"))

    def prompt_for_choice(self, caption: str, message: str, choices: List[Any], default_choice: int) -> int:
        self.prompts.append(("choice", caption, message, [c.Label for c in choices], default_choice))
        return 1


MOCKED_UI_SCRIPT = """$host.UI.ReadLine()
$host.UI.ReadLineAsSecureString()
$host.UI.Write("Write1")
$host.UI.Write([System.ConsoleColor]::Blue, [System.ConsoleColor]::White, "Write2")
$host.UI.WriteLine()
$host.UI.WriteLine("WriteLine2")
$host.UI.WriteLine([System.ConsoleColor]::Gray, [System.ConsoleColor]::Green, "WriteLine3")
$host.UI.WriteErrorLine("WriteErrorLine")
$host.UI.WriteDebugLine("WriteDebugLine")
$host.UI.WriteProgress(1, (New-Object -TypeName System.Management.Automation.ProgressRecord -ArgumentList 2, "activity", "description"))
$host.UI.WriteVerboseLine("WriteVerboseLine")
$host.UI.WriteWarningLine("WriteWarningLine")

$prompt_field = New-Object -TypeName System.Management.Automation.Host.FieldDescription -ArgumentList @("prompt field")
$prompt_field.Label = "PromptLabel"
$host.UI.Prompt("Prompt caption", "Prompt message", $prompt_field)

$host.UI.PromptForCredential("PromptForCredential caption", "PromptForCredential message", "PromptForCredential user", "PromptForCredential target")

$choice_field1 = New-Object -TypeName System.Management.Automation.Host.ChoiceDescription -ArgumentList "Prompt1 label", "Prompt1 help"
$choice_field2 = New-Object -TypeName System.Management.Automation.Host.ChoiceDescription -ArgumentList "Prompt2 label", "Prompt2 help"
$host.UI.PromptForChoice("PromptForChoice caption", "PromptForChoice message", @($choice_field1, $choice_field2), 0)"""

MOCKED_UI_CALLS = [
    "ReadLine", "ReadLineAsSecureString", "Write1", "Write2", "WriteLine1", "WriteLine2", "WriteLine3",
    "WriteErrorLine", "WriteDebugLine", "WriteProgress", "WriteProgress", "WriteVerboseLine",
    "WriteWarningLine", "Prompt", "PromptForCredential2", "PromptForChoice",
]  # fmt: skip
#: The calls that return nothing, which also come as "host" events of the pipeline.
VOID_CALLS = [m for m in MOCKED_UI_CALLS if m.startswith("Write")]


@replays("test_psrp_pshost_ui_mocked_methods.yml")
def test_psrp_pshost_ui_mocked_methods(replay) -> None:
    # The whole conversation with pypsrp's test key: the host answers secrets in plain text and
    # psremote encrypts them into exactly the ciphertexts pypsrp sent.
    r = replay("test_psrp_pshost_ui_mocked_methods.yml")
    host = MockedUIHost()
    with r.client() as client:
        with client.runspace_pool(host=host) as pool:
            use_pypsrp_key(pool)
            pool.exchange_key()
            result = psremote.PSResult()
            events = []
            with pool.start(MOCKED_UI_SCRIPT) as pipeline:
                for event in pipeline:
                    events.append(event)
            for kind, value in events:
                if kind == "output":
                    result.output.append(value)
                elif kind == "host":
                    result.host_calls.append(value)
                elif kind == "state":
                    result.state = value.state
                elif kind in ("debug", "verbose"):
                    getattr(result, kind).append(value)
                elif kind == "warning":
                    result.warnings.append(value)
                elif kind == "progress":
                    result.progress.append(value)
                elif kind == "error":
                    result.errors.append(value)
    assert result.state == "Completed", result.errors
    assert len(result.output) == 5, result.output
    line, secret, answers, credential, choice = result.output
    assert line == "ReadLine response"
    assert isinstance(secret, SecureString) and secret.get_value() == "ReadLineAsSecureString response"
    assert answers == {"prompt field": "prompt response"}
    assert isinstance(credential, PSCredential)
    assert credential.username == "username" and credential.password.get_value() == "password"
    assert choice == 1
    assert result.debug == ["WriteDebugLine"]
    assert result.verbose == ["WriteVerboseLine"]
    assert result.warnings == ["WriteWarningLine"]
    assert [p.activity for p in result.progress] == ["Preparing modules for first use.", "activity"]
    # The host saw every call in the order the server made them; the pipeline's event stream
    # carries the void ones in that order too.
    assert [name for name, _ in host.calls] == MOCKED_UI_CALLS
    assert [c.method for c in result.host_calls] == VOID_CALLS
    assert dict(host.calls)["Write2"] == [9, 15, "Write2"]
    assert host.writes[:7] == [
        ("write", "Write1", None, None),
        ("write", "Write2", 9, 15),
        ("write_line", "", None, None),
        ("write_line", "WriteLine2", None, None),
        ("write_line", "WriteLine3", 7, 10),
        ("error", "WriteErrorLine"),
        ("debug", "WriteDebugLine"),
    ]
    assert host.prompts == [
        ("prompt", "Prompt caption", "Prompt message", [("prompt field", "PromptLabel")]),
        ("credential", "PromptForCredential caption", "PromptForCredential message", "PromptForCredential user", "PromptForCredential target"),
        ("choice", "PromptForChoice caption", "PromptForChoice message", ["Prompt1 label", "Prompt2 label"], 0),
    ]
    state = r.settled()
    r.assert_exact(state, ["Signal shell1/cmd1"])
    assert len(client_messages(state, "PIPELINE_HOST_RESPONSE")) == 5



# ---------------------------------------------------------------------------------------------
# pypsrp's WSMan.update_max_envelope_size: one Get of winrm/config, whose MaxEnvelopeSizekb
# sizes the client's later requests.


@replays("test_wsman_update_envelope_size_150.yml", "test_wsman_update_envelope_size_500.yml")
@pytest.mark.parametrize("kb", [150, 500])
def test_wsman_update_envelope_size(replay, kb: int) -> None:
    r = replay(f"test_wsman_update_envelope_size_{kb}.yml")
    with r.client() as client:
        assert client.fit_envelope_to_server() == kb * 1024
    r.assert_exact(r.settled())


@pytest.mark.parametrize("kb", [150, 500])
def test_wsman_server_config_async(replay, kb: int) -> None:
    r = replay(f"test_wsman_update_envelope_size_{kb}.yml")

    async def scenario() -> Any:
        async with r.async_client() as client:
            return await client.server_config()

    config = run(scenario())
    assert config.max_envelope_size_kb == kb and config.max_envelope_size == kb * 1024
    assert config.max_timeout_ms == 60000
    assert config.max_batch_items == 32000
    assert config.shell_idle_timeout_ms == 7200000
    assert config.max_shells_per_user == 2147483647
    assert config.max_memory_per_shell_mb == 2147483647
    assert config.max_concurrent_operations_per_user == 1500
    assert config.entries["MaxEnvelopeSizekb"] == str(kb)
    assert config.entries["Service/AllowUnencrypted"] == "false"
    assert config.entries["Client/DefaultPorts/HTTPS"] == "5986"
    r.assert_exact(r.settled())


def test_wsman_update_envelope_size_keeps_the_users_size(replay) -> None:
    """A max_envelope_size the user gave is never changed by the server's: it is returned,
    without asking the server."""
    r = replay("test_wsman_update_envelope_size_500.yml")
    with r.client(max_envelope_size=200 * 1024) as client:
        assert client.fit_envelope_to_server() == 200 * 1024
    state = r.settled()
    assert state["served"] == 0 and state["unexpected"] == [], state
    assert pairs(state, "unused") == ["Get -"]



# ---------------------------------------------------------------------------------------------
# Sessions that outlive the client: disconnect, reconnect, list, connect, is_alive; commands and
# pipelines attached by id.


@replays("test_psrp_disconnect_runspaces.yml")
def test_psrp_disconnect_runspaces(replay) -> None:
    """pypsrp's test: two pools opened and disconnected (the first reconnected and disconnected
    again); a second client (a new WS-Man session) lists them, connects to each and closes them.
    Closing the first client leaves its disconnected pools on the server."""
    r = replay("test_psrp_disconnect_runspaces.yml")
    with r.client() as client:
        pool1 = client.runspace_pool()
        pool1.disconnect()
        assert pool1.state == "Disconnected" and pool1.disconnected
        with pytest.raises(psremote.DisconnectedError):
            pool1.run_ps("1")
        with pytest.raises(psremote.DisconnectedError):
            pool1.disconnect()
        pool1.reconnect()
        assert pool1.state == "Opened" and not pool1.disconnected
        pool1.disconnect()
        pool2 = client.runspace_pool()
        pool2.disconnect()
        ids = [pool1.id, pool2.id]
    with r.client() as client2:
        pools = client2.list_pools()
        assert [p.id for p in pools] == ids
        for info in pools:
            assert info.state == "Disconnected", info
            assert info.configuration_name == "Microsoft.PowerShell"
            assert info.owner == "WIN-NNMU24VVKJ0\\vagrant"
            assert info.idle_timeout == 7200
            assert info.buffer_mode == "block"
            assert info.pipelines == (), "Windows listed no commands"
        connected = [client2.connect_pool(info) for info in pools]
        for pool, info in zip(connected, pools):
            assert pool.state == "Opened" and pool.protocol_version == "2.3" and pool.id == info.id
        for pool in connected:
            pool.close()
    r.assert_exact(r.settled())


@replays("test_psrp_is_alive_invalid_selectors.yml")
def test_psrp_is_alive_invalid_selectors(replay) -> None:
    """is_alive on a live pool, then on one deleted behind the client's back (InvalidSelectors):
    False, and the pool counts as closed (no Delete follows, as in the recording)."""
    r = replay("test_psrp_is_alive_invalid_selectors.yml")
    with r.client() as client:
        pool = client.runspace_pool()
        assert pool.is_alive() is True
        assert pool.is_alive() is False
        assert pool.is_alive() is False, "known gone: no further request"
        assert pool.closed
        with pytest.raises(psremote.ClosedError):
            pool.run_ps("1")
        pool.close()
    r.assert_exact(r.settled())


@replays("test_psrp_is_alive_other_wsman_error.yml")
def test_psrp_is_alive_other_wsman_error_async(replay) -> None:
    """Any other fault of the Get (the recorded client provoked InvalidMessageInformationHeader)
    is an error, not a verdict; the pool is still closed normally."""
    r = replay("test_psrp_is_alive_other_wsman_error.yml")

    async def scenario() -> None:
        async with r.async_client() as client:
            async with client.runspace_pool() as pool:
                with pytest.raises(WSManFault) as failure:
                    await pool.is_alive()
                assert failure.value.code == 2150858767, failure.value
                assert not isinstance(failure.value, psremote.NotFoundError)

    run(scenario())
    r.assert_exact(r.settled())


@replays("test_psrp_is_alive_http_error.yml")
def test_psrp_is_alive_http_error(replay) -> None:
    """A Get whose connection drops (pypsrp injected a ConnectionError) is sent once more on a
    new connection (a Get may run twice). The recorded client stopped there, so the replay has
    no answer for the second Get (a fault) nor for psremote's Delete at close."""
    r = replay("test_psrp_is_alive_http_error.yml")
    with r.client() as client:
        pool = client.runspace_pool()
        assert pool.is_alive() is True
        with pytest.raises(psremote.WSManFault, match="unexpected Get"):
            pool.is_alive()
        assert not pool.closed
        try:
            pool.close()
        except psremote.PSRemoteError:
            pass
    state = r.settled()
    assert state["unexpected"] == ["Get", "Delete"], state
    assert pairs(state, "unused") == [] and state["mismatches"] == [], state


@replays("test_psrp_receive_failure.yml")
def test_psrp_receive_failure(replay) -> None:
    """The recorded client received for a CommandId the server never had: attaching to a
    pipeline by id, whose Receive gets Windows' InvalidSelectors fault (NotFoundError), and no
    Signal follows for a command the server does not know."""
    r = replay("test_psrp_receive_failure.yml")
    with r.client() as client:
        with client.runspace_pool() as pool:
            with pytest.raises(psremote.NotFoundError) as failure:
                pool.attach_pipeline("D1BF48DA-B26C-4F4A-BE52-B382AC20DD1F").result()
            assert failure.value.code == 2150858843
            assert isinstance(failure.value, LookupError)
    r.assert_exact(r.settled())


@replays("test_winrs_bad_cmd_id.yml")
def test_winrs_bad_cmd_id(replay) -> None:
    """pypsrp polled a CommandId the server never created: attaching to a command by an id the
    shell does not know, whose first read raises NotFoundError."""
    r = replay("test_winrs_bad_cmd_id.yml")
    with r.client() as client:
        with client.cmd_shell(codepage=None) as shell:
            real = shell.start("cmd.exe", ["/c", "echo", "hi"])
            unknown = shell.attach("87E77BEB-6761-4C48-9D70-A00266B8459A")
            with pytest.raises(psremote.NotFoundError) as failure:
                unknown.read()
            assert failure.value.code == 2150858843
            # pypsrp interrupted the real command (ctrl_c); psremote releases it with Terminate.
            real.terminate()
    r.assert_exact(r.settled())


@replays("test_winrs_fail_poll_process.yml")
def test_winrs_fail_poll_process_async(replay) -> None:
    """pypsrp polled a process it never started: a Receive without a CommandId, how psremote
    reads a shell's own streams; a cmd shell refuses it with InvalidParameter (87)."""
    r = replay("test_winrs_fail_poll_process.yml")

    async def scenario() -> None:
        async with r.async_client() as client:
            async with client.cmd_shell(codepage=None) as shell:
                own = shell.attach(None)
                with pytest.raises(WSManFault) as failure:
                    await own.read()
                assert failure.value.code == 87, failure.value
                with pytest.raises(psremote.PSRemoteError):
                    await own.ctrl_c()

    run(scenario())
    r.assert_exact(r.settled())



# ---------------------------------------------------------------------------------------------
# Files: copy and fetch. The recorded client ran pypsrp's scripts and psremote runs its own, so
# the replay server leaves script text out of the comparison (arguments, input, NoInput and the
# other flags still must match); the answers are Windows' answers to pypsrp's scripts. pypsrp
# did not expand variables in the paths (expand_variables=False); psremote ends the input in a
# Send of its own and releases each pipeline with Signal Terminate, which the recordings lack.

SCRIPTS_DIFFER = ["--ignore-script-text"]
AZ = b"abcdefghijklmnopqrstuvwxyz"
DOMAIN_DEST = "C:\\Users\\vagrant-domain\\Documents\\test_file"


def source_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "source"
    path.write_bytes(data)
    return path


def check_through_cmd(client: psremote.Client, expected_stdout: bytes) -> None:
    """The recordings' checks that the copied file is there, through cmd shells as pypsrp's
    test did."""
    with client.cmd_shell(codepage=None) as shell:
        assert shell.start(f"powershell.exe Get-Content {DOMAIN_DEST}").wait().stdout == expected_stdout
    with client.cmd_shell(codepage=None) as shell:
        assert shell.start(f"powershell Remove-Item -Path '{DOMAIN_DEST}'").wait().exit_code == 0


@replays("test_client_copy_file.yml")
def test_client_copy_file(replay, tmp_path: Path) -> None:
    r = replay("test_client_copy_file.yml", extra=SCRIPTS_DIFFER)
    src = source_file(tmp_path, AZ)
    with r.client() as client:
        first = client.copy(src, "test_file", expand_variables=False)
        assert first == DOMAIN_DEST
        # pypsrp's test copied again to the path the first copy returned.
        assert client.copy(str(src), first, expand_variables=False) == DOMAIN_DEST
        check_through_cmd(client, AZ + b"\r\n")
    r.assert_exact(r.settled(), ["Send shell1/cmd1", "Signal shell1/cmd1", "Send shell2/cmd1", "Signal shell2/cmd1"])


@replays("test_client_copy_file_empty.yml")
def test_client_copy_file_empty_async(replay, tmp_path: Path) -> None:
    r = replay("test_client_copy_file_empty.yml", extra=SCRIPTS_DIFFER)
    src = source_file(tmp_path, b"")

    async def scenario() -> str:
        async with r.async_client() as client:
            return await client.copy(src, "test_file", expand_variables=False)

    assert run(scenario()) == DOMAIN_DEST
    with r.client() as client:
        check_through_cmd(client, b"")
    r.assert_exact(r.settled(), ["Send shell1/cmd1", "Signal shell1/cmd1"])


@replays("test_client_copy_file_really_large.yml")
def test_client_copy_file_really_large(replay, tmp_path: Path) -> None:
    r = replay("test_client_copy_file_really_large.yml", extra=SCRIPTS_DIFFER)
    src = source_file(tmp_path, AZ * 20_000)
    progress: List[Any] = []
    # The recording's chunks are 85404 bytes (pypsrp with its payload size mocked to 113955
    # bytes); a client whose envelopes are 153968 bytes cuts the same chunks.
    with r.client(max_envelope_size=153_968) as client:
        dest = client.copy(src, "test_file", expand_variables=False, progress=lambda done, total: progress.append((done, total)))
    assert dest == "C:\\Users\\vagrant\\Documents\\test_file"
    assert progress == [(i * 85_404, 520_000) for i in range(1, 7)] + [(520_000, 520_000)]
    r.assert_exact(r.settled(), ["Send shell1/cmd1", "Signal shell1/cmd1"])


@replays("test_client_copy_file_failure.yml")
def test_client_copy_file_failure(replay, tmp_path: Path) -> None:
    """Windows refused the copy: the recorded client had a mocked hash, so Windows' answer is a
    hash mismatch; psremote sends the true hash and still gets (and types) the recorded failure."""
    r = replay("test_client_copy_file_failure.yml", extra=SCRIPTS_DIFFER)
    src = source_file(tmp_path, AZ)
    with r.client() as client:
        with pytest.raises(HashMismatchError) as failure:
            client.copy(src, "test_file", expand_variables=False)
    e = failure.value
    assert (e.kind, e.side, e.path) == ("HashMismatch", "remote", "test_file")
    assert e.actual_sha1 == "32d10c7b8cf96570ca04ce37f2a19d84240d3a89"
    assert e.expected_sha1 == "c3499c2729730a7f807efb8676a92dcb6f8a3f8f"
    assert "hash mismatch" in str(e)
    state = r.settled()
    # The only difference from the recording: the hash input (the true one, where pypsrp's test
    # had mocked a wrong one).
    true_hash = base64.b64encode(b"32d10c7b8cf96570ca04ce37f2a19d84240d3a89").decode()
    mocked_hash = base64.b64encode(b"c3499c2729730a7f807efb8676a92dcb6f8a3f8f").decode()
    (mismatch,) = state["mismatches"]
    assert "PIPELINE_INPUT" in mismatch and true_hash in mismatch and mocked_hash in mismatch, mismatch
    r.assert_exact({**state, "mismatches": []}, ["Send shell1/cmd1", "Signal shell1/cmd1"])


@replays("test_client_fetch_file.yml")
def test_client_fetch_file(replay, tmp_path: Path) -> None:
    r = replay("test_client_fetch_file.yml", extra=SCRIPTS_DIFFER)
    dest = tmp_path / "file.txt"
    with r.client() as client:
        assert client.fetch("C:\\temp\\file.txt", dest, expand_variables=False) == str(dest)
    assert dest.read_bytes() == b"abc\r\n" * 50_000 + b"\r\n"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("replay-")) == ["file.txt"]
    r.assert_exact(r.settled(), ["Signal shell1/cmd1"])


@replays("test_client_fetch_file_expand_vars.yml")
def test_client_fetch_file_expand_vars_async(replay, tmp_path: Path) -> None:
    r = replay("test_client_fetch_file_expand_vars.yml", extra=SCRIPTS_DIFFER)
    dest = tmp_path / "file.txt"

    async def scenario() -> str:
        async with r.async_client() as client:
            # The path travels unexpanded; the server expands it.
            return await client.fetch("%TEMP%\\file.txt", dest)

    assert run(scenario()) == str(dest)
    assert dest.read_bytes() == b"abc\r\n\r\n"
    r.assert_exact(r.settled(), ["Signal shell1/cmd1"])


@replays("test_client_fetch_file_fail_dir.yml", "test_client_fetch_file_fail_missing.yml")
@pytest.mark.parametrize(
    "transcript, src, error, kind, builtin, message",
    [
        (
            "test_client_fetch_file_fail_dir.yml", "C:\\Windows", TransferIsADirectoryError, "IsADirectory",
            IsADirectoryError, "The path at 'C:\\Windows' is a directory, src must be a file",
        ),
        (
            "test_client_fetch_file_fail_missing.yml", "C:\\fakefile.txt", TransferFileNotFoundError, "NotFound",
            FileNotFoundError, "The path at 'C:\\fakefile.txt' does not exist",
        ),
    ],
)  # fmt: skip
def test_client_fetch_file_failure(replay, tmp_path: Path, transcript: str, src: str, error: type, kind: str, builtin: type, message: str) -> None:
    r = replay(transcript, extra=SCRIPTS_DIFFER)
    local = tmp_path / "fetched"
    local.mkdir()
    with r.client() as client:
        with pytest.raises(error) as failure:
            client.fetch(src, local / "file.txt", expand_variables=False)
    e = failure.value
    assert isinstance(e, builtin)
    assert (e.kind, e.side, e.path) == (kind, "remote", src)
    assert e.fully_qualified_error_id == message
    assert list(local.iterdir()) == [], "nothing written locally"
    r.assert_exact(r.settled(), ["Signal shell1/cmd1"])
