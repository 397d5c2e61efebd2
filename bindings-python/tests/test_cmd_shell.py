"""WinRS cmd shells from Python, blocking and asyncio, against the loopback endpoint (which runs
the commands for real through /bin/sh -c). A dedicated endpoint per module, so that its
``/_control/state`` shows exactly what these tests leave behind: every test ends with no shell
and no command open there. pywinrm, a client proven against Windows, deletes shells and
releases commands underneath psremote.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
from pathlib import Path
from typing import Iterator, List

import pytest
import winrm

import psremote
from psremote import AsyncClient, CmdChunk, CmdResult, WSManFault
from psremote.cmd import INVALID_SELECTORS, UTF8_CODEPAGE
from psremote_testserver.testing import PASSWORD, USER, Endpoint, wait_for

TRUSTED = ["127.0.0.1"]
# A command a test ends itself (Ctrl-C, terminate); it never ends on its own within a test.
LONG = "echo started; sleep 600"
SIGINT_EXIT = 128 + 2  # what the endpoint reports for a command killed by SIGINT, as a POSIX shell would
SIGKILL_EXIT = 128 + 9


@pytest.fixture(scope="module")
def cmd_endpoint(start_endpoint) -> Endpoint:
    return start_endpoint()


@pytest.fixture(scope="module")
def kwargs(cmd_endpoint) -> dict:
    return {"url": cmd_endpoint.url, "username": USER, "password": PASSWORD, "auth": "ntlm", "trusted_hosts": TRUSTED}


@pytest.fixture(scope="module")
def client(kwargs) -> Iterator[psremote.Client]:
    with psremote.Client(**kwargs) as c:
        yield c


@pytest.fixture(autouse=True)
def nothing_left_open(cmd_endpoint) -> Iterator[None]:
    yield
    state = cmd_endpoint.wait_state("commands", 0)
    assert state["commands"] == 0, state
    state = cmd_endpoint.wait_state("shells", 0)
    assert state["shells"] == 0, state


@contextlib.contextmanager
def peer(endpoint: Endpoint) -> Iterator[winrm.Protocol]:
    """pywinrm's protocol object on the same endpoint and account; its connections are closed afterwards."""
    # Plain http: no certificate to validate (and pywinrm then reads no CA bundle from the environment).
    protocol = winrm.Protocol(
        endpoint.url,
        transport="ntlm",
        username=USER,
        password=PASSWORD,
        message_encryption="always",
        server_cert_validation="ignore",
    )
    try:
        yield protocol
    finally:
        protocol.transport.close_session()


def read_all(process) -> List[CmdChunk]:
    return list(process)


# --- options -------------------------------------------------------------------------------------


def test_environment_and_working_directory_reach_the_command(client, tmp_path):
    with client.cmd_shell(environment={"PSR_ONE": "välue 1", "PSR_TWO": "2"}, working_directory=tmp_path) as shell:
        result = shell.run('echo "$PSR_ONE|$PSR_TWO"; pwd')
    assert isinstance(result, CmdResult)
    assert result.text.splitlines() == ["välue 1|2", str(tmp_path.resolve())]
    assert result.exit_code == 0


def test_run_cmd_takes_the_shell_options(client, tmp_path):
    result = client.run_cmd("echo $PSR_X; pwd", environment={"PSR_X": "from run_cmd"}, working_directory=str(tmp_path))
    assert result.text.splitlines() == ["from run_cmd", str(tmp_path.resolve())]


def test_skip_cmd_shell_runs_the_program_directly(client):
    # Through the shell, $HOME is expanded; started directly, echo gets it as it is.
    assert client.run_cmd("echo", ["$HOME"]).text.strip() == os.environ["HOME"]
    assert client.run_cmd("echo", ["$HOME"], skip_cmd_shell=True).text == "$HOME\n"
    with client.cmd_shell() as shell:
        with shell.start("printf", ["%s|", "a", "b"], skip_cmd_shell=True) as process:
            assert process.wait().stdout == b"a|b|"


def test_a_working_directory_that_does_not_exist_is_the_servers_fault(client):
    with client.cmd_shell(working_directory="/nonexistent/psremote") as shell:
        with pytest.raises(WSManFault) as info:
            shell.start("pwd")
    assert info.value.code == 2147942667  # HRESULT_FROM_WIN32(ERROR_DIRECTORY), as Windows says
    assert "directory name is invalid" in str(info.value)


def test_the_code_page_and_other_options_reach_the_server(start_endpoint, tmp_path):
    """What the server receives, read from its capture of the plaintext requests (Basic over
    http, allowed for this test only): WINRS_CODEPAGE 65001 unless told otherwise, none for
    codepage=None, WINRS_NOPROFILE, the IdleTimeOut and WINRS_SKIP_CMD_SHELL."""
    capture = tmp_path / "capture"
    endpoint = start_endpoint("--allow-unencrypted", "--capture", str(capture))
    options = dict(url=endpoint.url, username=USER, password=PASSWORD, auth="basic", allow_unencrypted=True)

    def requests_since(seen: int) -> List[str]:
        files = sorted(capture.glob("*.http"))
        return [f.read_bytes().decode("utf-8", "replace") for f in files[seen:]]

    def creates(texts: List[str]) -> List[str]:
        return [t for t in texts if "/transfer/Create</" in t and "windows/shell/cmd" in t]

    with psremote.Client(**options) as client:
        seen = len(requests_since(0))
        with client.cmd_shell() as shell:
            shell.run("true")
        with client.cmd_shell(codepage=437, no_profile=True, idle_timeout=90) as shell:
            shell.run("true", skip_cmd_shell=True)
        with client.cmd_shell(codepage=None) as shell:
            shell.run("true")
        client.run_cmd("true")
        sent = requests_since(seen)
    default, oem, none, run_cmd = creates(sent)
    assert '<wsman:Option Name="WINRS_CODEPAGE">65001</wsman:Option>' in default
    assert '<wsman:Option Name="WINRS_NOPROFILE">FALSE</wsman:Option>' in default
    assert "IdleTimeOut" not in default
    assert '<wsman:Option Name="WINRS_CODEPAGE">437</wsman:Option>' in oem
    assert '<wsman:Option Name="WINRS_NOPROFILE">TRUE</wsman:Option>' in oem
    assert "<rsp:IdleTimeOut>PT90" in oem
    assert "WINRS_CODEPAGE" not in none
    assert '<wsman:Option Name="WINRS_CODEPAGE">65001</wsman:Option>' in run_cmd
    commands = [t for t in sent if "/windows/shell/Command</" in t]
    assert len(commands) == 4
    skipped = [t for t in commands if '<wsman:Option Name="WINRS_SKIP_CMD_SHELL">TRUE</wsman:Option>' in t]
    assert len(skipped) == 1
    assert UTF8_CODEPAGE == 65001
    assert endpoint.wait_state("shells", 0)["shells"] == 0


def test_bad_options_are_refused_before_anything_is_sent(client):
    with pytest.raises(psremote.ConfigurationError):
        client.cmd_shell(codepage=0)
    with pytest.raises(psremote.ConfigurationError):
        client.cmd_shell(idle_timeout=-1)
    with pytest.raises(TypeError):
        client.cmd_shell(environment=[("A", "1")])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        client.run_cmd("echo", environment={"A": 1})  # type: ignore[dict-item]
    with client.cmd_shell() as shell:
        with pytest.raises(TypeError):
            shell.start("echo", "not a list")
        with shell.start("cat") as process:
            with pytest.raises(TypeError):
                process.send(42)  # type: ignore[arg-type]
            with pytest.raises(psremote.ConfigurationError):
                process.read(timeout=-1)


# --- output, input, exit codes ----------------------------------------------------------------


def test_output_streams_before_the_command_ends(client):
    # The command cannot end before it reads a line, so its first line must arrive first.
    with client.cmd_shell() as shell:
        with shell.start("echo first; echo err >&2; read line; echo got $line; exit 5") as process:
            early: List[CmdChunk] = []
            while b"first\n" not in b"".join(c.data for c in early if c.stream == "stdout") or not any(
                c.stream == "stderr" for c in early
            ):
                chunk = process.read()
                assert chunk is not None
                early.append(chunk)
            assert not process.finished and process.exit_code is None
            process.send(b"it\n", end=True)
            rest = read_all(process)
    assert b"".join(c.data for c in early if c.stream == "stderr") == b"err\n"
    assert b"".join(c.data for c in rest) == b"got it\n"
    assert process.finished and process.exit_code == 5


def test_stdin_in_several_pieces(client):
    with client.cmd_shell() as shell:
        with shell.start("cat") as process:
            process.send(b"one ")
            process.send("twö ")  # str goes as UTF-8
            process.send(bytearray(b"\x00three\n"))
            process.send(b"")
            process.close_stdin()
            result = process.wait()
    assert result.stdout == b"one tw\xc3\xb6 \x00three\n"
    assert result.exit_code == 0
    with pytest.raises(psremote.ClosedError):
        process.send(b"too late")


def test_exit_codes_and_stderr(client):
    with client.cmd_shell() as shell:
        assert shell.run("exit", [3]).exit_code == 3
        ok = shell.run("echo out; echo err >&2")
        assert (ok.stdout, ok.stderr, ok.exit_code, ok.ok) == (b"out\n", b"err\n", 0, True)
        piped = shell.run("tr a-z A-Z", stdin="abc\n")
        assert piped.text == "ABC\n"
    assert client.run_cmd("exit 7").exit_code == 7


def test_a_read_that_times_out_loses_nothing(client):
    with client.cmd_shell() as shell:
        with shell.start("read x; echo got $x") as process:
            with pytest.raises(psremote.OperationTimeoutError):
                process.read(timeout=0.2)
            with pytest.raises(TimeoutError):  # the builtin works too
                process.read(timeout=0)
            process.send("y\n", end=True)
            assert process.wait().stdout == b"got y\n"


def test_wait_with_a_timeout_keeps_what_it_gathered(client):
    with client.cmd_shell() as shell:
        with shell.start("echo before; read x; echo after $x") as process:
            # Whether or not "before" arrived within the timeout, the second wait has it.
            with pytest.raises(psremote.OperationTimeoutError):
                process.wait(timeout=0.3)
            process.send("now\n", end=True)
            result = process.wait(timeout=30)
    assert result.stdout == b"before\nafter now\n" and result.exit_code == 0


def test_utf8_by_default(client):
    # The endpoint's shell writes UTF-8 as it is; the client decodes it as UTF-8 by default.
    result = client.run_cmd("printf", ["'h\\303\\251 \\342\\202\\254'"])
    assert result.text == "hé €"


# --- Ctrl-C and terminate ------------------------------------------------------------------------


def test_ctrl_c_ends_a_long_running_command(client):
    with client.cmd_shell() as shell:
        with shell.start(LONG) as process:
            assert process.read() == CmdChunk("stdout", b"started\n")
            process.ctrl_c()
            result = process.wait()
    assert result.exit_code == SIGINT_EXIT
    process.ctrl_c()  # after the end: nothing to interrupt, nothing sent


def test_ctrl_c_from_another_thread_while_one_reads(client):
    with client.cmd_shell() as shell:
        with shell.start(LONG) as process:
            assert process.read() == CmdChunk("stdout", b"started\n")
            rest: List[CmdChunk] = []
            reader = threading.Thread(target=lambda: rest.extend(process))
            reader.start()
            process.ctrl_c()
            reader.join(30)
            assert not reader.is_alive()
    assert rest == [] and process.exit_code == SIGINT_EXIT


def test_terminate_ends_a_long_running_command(client, cmd_endpoint):
    with client.cmd_shell() as shell:
        process = shell.start(LONG)
        assert process.read() == CmdChunk("stdout", b"started\n")
        assert cmd_endpoint.state()["commands"] == 1
        process.terminate()
        assert cmd_endpoint.state()["commands"] == 0  # released at once, not when the shell closes
        assert process.read() is None and process.finished
        assert process.exit_code is None  # no Receive was under way: the server reported none
        with pytest.raises(psremote.ClosedError):
            process.wait()
        process.terminate()  # again: nothing to do


def test_terminate_while_another_thread_reads(client):
    with client.cmd_shell() as shell:
        process = shell.start("sleep 600")
        seen: List[CmdChunk] = []
        reader = threading.Thread(target=lambda: seen.extend(process))
        reader.start()
        process.terminate()
        reader.join(30)
        assert not reader.is_alive() and seen == []
        # A Receive under way may still have seen the kill (the endpoint then reports 128 + 9).
        assert process.exit_code in (None, SIGKILL_EXIT)


def test_leaving_with_blocks_releases_everything(client, cmd_endpoint):
    with client.cmd_shell() as shell:
        with shell.start(LONG):
            pass  # leaving the block terminates the running command
        assert cmd_endpoint.wait_state("commands", 0)["commands"] == 0
        shell.start(LONG)  # dropped at once: released in the background
        gc.collect()
        assert cmd_endpoint.wait_state("commands", 0)["commands"] == 0
    assert shell.closed
    shell.close()  # twice: nothing to do
    with pytest.raises(psremote.ClosedError):
        shell.start("true")
    client.cmd_shell()  # dropped without close: deleted in the background
    gc.collect()


# --- Windows' faults -----------------------------------------------------------------------------


def test_a_shell_deleted_underneath_gives_the_servers_fault(client, cmd_endpoint):
    shell = client.cmd_shell()
    process = shell.start(LONG)
    assert process.read() == CmdChunk("stdout", b"started\n")
    with peer(cmd_endpoint) as pywinrm:
        pywinrm.close_shell(shell.id, close_session=False)  # pywinrm deletes it, commands and all
    with pytest.raises(WSManFault) as info:
        shell.start("true")
    assert info.value.code == INVALID_SELECTORS
    assert "invalid selectors" in info.value.message and info.value.machine == "127.0.0.1"
    with pytest.raises(WSManFault) as info:
        process.read()
    assert info.value.code == INVALID_SELECTORS
    shell.close()  # Delete of a shell already gone is what Delete wanted: no error


def test_an_unknown_command_id_gives_the_servers_fault(client, cmd_endpoint):
    with client.cmd_shell() as shell:
        process = shell.start("cat")
        with peer(cmd_endpoint) as pywinrm:
            pywinrm.cleanup_command(shell.id, process.id)  # pywinrm releases the command
        with pytest.raises(WSManFault) as info:
            process.send(b"anyone there?\n")
        assert info.value.code == INVALID_SELECTORS
        with pytest.raises(WSManFault) as info:
            process.read()
        assert info.value.code == INVALID_SELECTORS
        assert isinstance(info.value, psremote.PSRemoteError)


def test_attach_reads_a_command_by_its_id(client):
    with client.cmd_shell() as shell:
        started = shell.start("echo one; read line; echo $line")
        again = shell.attach(started.id)  # as if the first process object were gone
        again.send(b"two\n", end=True)
        result = again.wait(timeout=30)
        assert result.stdout == b"one\ntwo\n" and result.exit_code == 0
        with pytest.raises(psremote.NotFoundError) as info:
            shell.attach("0B5A4A1E-0000-4000-8000-000000000000").read()
        assert info.value.code == INVALID_SELECTORS
        with pytest.raises(psremote.ConfigurationError):
            shell.attach("not an id")


def test_client_close_closes_its_shells(kwargs, cmd_endpoint):
    client = psremote.Client(**kwargs)
    shell = client.cmd_shell()
    shell.start(LONG).read()
    assert cmd_endpoint.state()["shells"] == 1
    client.close()
    assert shell.closed


# --- asyncio -------------------------------------------------------------------------------------


def run(coro):
    return asyncio.run(coro)


def test_async_options_streaming_and_stdin(kwargs, tmp_path: Path):
    async def main():
        async with AsyncClient(**kwargs) as client:
            async with client.cmd_shell(environment={"PSR_A": "async"}, working_directory=tmp_path) as shell:
                process = await shell.start('echo "$PSR_A $(pwd)"; read x; read y; echo "$x$y"; exit 2')
                first = await process.read()
                assert not process.finished
                await process.send("pie")
                await process.send(b"ce\nmeal\n", end=True)
                rest = [chunk async for chunk in process]
                run_result = await shell.run("cat", stdin=b"abc")
            direct = await client.run_cmd("echo", ["$HOME"], skip_cmd_shell=True, environment={"Z": "1"})
            return first, rest, process.exit_code, run_result, direct

    first, rest, code, run_result, direct = run(main())
    assert first == CmdChunk("stdout", f"async {tmp_path.resolve()}\n".encode())
    assert b"".join(c.data for c in rest) == b"piecemeal\n"
    assert code == 2
    assert run_result.stdout == b"abc"
    assert direct.text == "$HOME\n"


def test_async_ctrl_c_and_terminate(kwargs, cmd_endpoint):
    async def main():
        async with AsyncClient(**kwargs) as client:
            shell = await client.cmd_shell()
            async with shell:
                process = await shell.start(LONG)
                assert await process.read() == CmdChunk("stdout", b"started\n")
                reading = asyncio.ensure_future(process.wait())
                await process.ctrl_c()
                interrupted = await reading

                process = await shell.start(LONG)
                assert await process.read() == CmdChunk("stdout", b"started\n")
                await process.terminate()
                after = await process.read()
                with pytest.raises(psremote.ClosedError):
                    await process.wait()
                return interrupted, after, process.exit_code

    interrupted, after, code = run(main())
    assert interrupted.exit_code == SIGINT_EXIT
    assert after is None and code is None


def test_async_reads_that_time_out_or_are_cancelled_lose_nothing(kwargs):
    async def main():
        async with AsyncClient(**kwargs) as client:
            async with client.cmd_shell() as shell:
                async with await shell.start("read x; echo got $x") as process:
                    with pytest.raises(psremote.OperationTimeoutError):
                        await process.read(timeout=0.2)
                    task = asyncio.ensure_future(process.read())
                    await asyncio.sleep(0.1)
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task
                    await process.send("z\n", end=True)
                    return await process.wait()

    assert run(main()).stdout == b"got z\n"


def test_async_faults_and_run_cmd_options(kwargs, cmd_endpoint):
    async def main():
        async with AsyncClient(**kwargs) as client:
            shell = await client.cmd_shell(codepage=None)
            with peer(cmd_endpoint) as pywinrm:
                pywinrm.close_shell(shell.id, close_session=False)
            with pytest.raises(WSManFault) as info:
                await shell.start("true")
            await shell.close()
            result = await client.run_cmd("echo $PSR_E", environment={"PSR_E": "e"}, no_profile=True)
            return info.value.code, result

    code, result = run(main())
    assert code == INVALID_SELECTORS
    assert result.text == "e\n"
