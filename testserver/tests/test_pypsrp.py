"""pypsrp 0.9.1 (Negotiate, message encryption) driving WinRS cmd shells."""

from __future__ import annotations

import os
import time

import pytest
from conftest import PASSWORD, USER
from pypsrp.exceptions import AuthenticationError
from pypsrp.shell import Process, SignalCode, WinRS
from pypsrp.wsman import WSMan


def wsman(endpoint, **kwargs) -> WSMan:
    options = dict(
        port=endpoint.port,
        ssl=False,
        auth="negotiate",
        username=USER,
        password=PASSWORD,
        encryption="always",
        path="wsman",
    )
    options.update(kwargs)
    return WSMan("127.0.0.1", **options)


def test_invoke(endpoint):
    with wsman(endpoint) as connection, WinRS(connection) as shell:
        process = Process(shell, "echo", ["hi"])
        process.invoke()
        assert process.stdout == b"hi\n"
        assert process.stderr == b""
        assert process.rc == 0


def test_exit_code_and_stderr(endpoint):
    with wsman(endpoint) as connection, WinRS(connection) as shell:
        process = Process(shell, "echo bad >&2; exit 7")
        process.invoke()
        assert (process.stdout, process.stderr, process.rc) == (b"", b"bad\n", 7)


def test_stdin(endpoint):
    with wsman(endpoint) as connection, WinRS(connection) as shell:
        process = Process(shell, "cat")
        process.begin_invoke()
        process.send(b"line one\n", end=False)
        process.send(b"line two\n", end=True)
        process.end_invoke()
        assert process.stdout == b"line one\nline two\n"
        assert process.rc == 0


def test_environment_and_working_directory(endpoint, tmp_path):
    environment = {"PSREMOTE_A": "alpha", "PSREMOTE_B": "with spaces & <xml>"}
    with wsman(endpoint) as connection, WinRS(connection, environment=environment, working_directory=str(tmp_path)) as shell:
        process = Process(shell, 'echo "$PSREMOTE_A|$PSREMOTE_B"; pwd')
        process.invoke()
        assert process.stdout.decode().splitlines() == ["alpha|with spaces & <xml>", str(tmp_path)]


def test_skip_cmd_shell_runs_argv_directly(endpoint):
    with wsman(endpoint) as connection, WinRS(connection) as shell:
        process = Process(shell, "/bin/echo", ["$HOME", "a;b"], no_shell=True)
        process.invoke()
        assert process.stdout == b"$HOME a;b\n"


def test_missing_working_directory_faults(endpoint, tmp_path):
    from pypsrp.exceptions import WSManFaultError

    with wsman(endpoint) as connection, WinRS(connection, working_directory=str(tmp_path / "nope")) as shell:
        with pytest.raises(WSManFaultError) as failure:
            Process(shell, "echo", ["x"]).invoke()
        assert failure.value.code == 2147942667


def test_terminate_kills_long_running_command(endpoint):
    with wsman(endpoint) as connection, WinRS(connection) as shell:
        process = Process(shell, "echo $$; exec sleep 30")
        process.begin_invoke()
        while not process.stdout.endswith(b"\n"):
            process.poll_invoke()
        pid = int(process.stdout)
        assert endpoint.state()["commands"] >= 1
        process.signal(SignalCode.TERMINATE)
        deadline = time.monotonic() + 10
        while _alive(pid):
            assert time.monotonic() < deadline, "process survived Signal Terminate"
            time.sleep(0.05)


def test_ctrl_c_interrupts(endpoint):
    with wsman(endpoint) as connection, WinRS(connection) as shell:
        process = Process(shell, "echo started; sleep 30")
        process.begin_invoke()
        while not process.stdout:
            process.poll_invoke()
        process.signal(SignalCode.CTRL_C)
        process.end_invoke()
        assert process.rc == 130  # 128 + SIGINT, as a POSIX shell reports it


def test_receive_timeout_is_polled_through(endpoint):
    # OperationTimeout 2 s, command 3 s: the first Receive ends in the TimedOut fault,
    # pypsrp swallows it (code 2150858793) and polls again.
    with wsman(endpoint, operation_timeout=2) as connection, WinRS(connection) as shell:
        process = Process(shell, "sleep 3; echo finished")
        started = time.monotonic()
        process.invoke()
        assert process.stdout == b"finished\n"
        assert process.rc == 0
        assert time.monotonic() - started >= 2.5


def test_close_leaves_no_shell(start_endpoint):
    server = start_endpoint()  # own endpoint: other tests' shells do not blur the count
    with wsman(server) as connection:
        shell = WinRS(connection)
        shell.open()
        Process(shell, "sleep 30").begin_invoke()
        state = server.state()
        assert state["shells"] == 1 and state["commands"] == 1
        shell.close()
    state = server.state()
    assert state["shells"] == 0 and state["commands"] == 0


def test_wrong_password(endpoint):
    with pytest.raises(AuthenticationError):
        with wsman(endpoint, password="nope") as connection, WinRS(connection):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
