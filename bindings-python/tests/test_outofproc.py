"""transport='process': the out-of-process transport over a local program, here the loopback
endpoint's out-of-process mode (``python -m psremote_testserver --out-of-proc``, psrpcore's
server behind PowerShell's OutOfProc framing on stdin/stdout, as ``pwsh -s`` serves it), from
the blocking and the asyncio API."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

import psremote
from psremote import AsyncClient, Client, PSCredential, PSHost, SecureString


def server_arguments(log: Path, *extra: str) -> List[str]:
    return ["-m", "psremote_testserver", "--out-of-proc", "--log", str(log), *extra]


def running(marker: Path) -> int:
    """Processes (not zombies) with ``marker`` on their command line."""
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if str(marker).encode() in cmdline and "Z" not in state:
            count += 1
    return count


def wait_gone(marker: Path) -> None:
    deadline = time.monotonic() + 10
    while running(marker):
        assert time.monotonic() < deadline, "the out-of-process server is still running"
        time.sleep(0.05)


@pytest.fixture
def server_log(tmp_path) -> Path:
    return tmp_path / "server.log"


@pytest.fixture
def process_client(server_log):
    with Client(transport="process", executable=sys.executable, arguments=server_arguments(server_log)) as client:
        yield client
    wait_gone(server_log)


class Host(PSHost):
    def __init__(self) -> None:
        super().__init__()
        self.threads = set()

    def read_line(self) -> str:
        self.threads.add(threading.current_thread().name)
        return "typed over stdin"

    def prompt_for_credential(self, caption, message, user_name, target_name):
        return PSCredential("DOMAIN\\someone", SecureString("cred-pass"))


def test_run_ps_streams_and_pools_over_a_process(process_client, server_log):
    client = process_client
    assert client.transport == "process"
    assert client.url == f"process:{sys.executable}"
    assert "transport='process'" in repr(client)
    result = client.run_ps("Write-Output hello; Write-Warning careful; Write-Verbose v; Write-Error oops")
    assert result.output == ["hello"]
    assert result.warnings == ["careful"] and result.verbose == ["v"]
    assert len(result.errors) == 1
    assert client.connection_info is None
    with client.runspace_pool(max_runspaces=2) as pool:
        assert pool.run_ps("Write-Output 1 2 3").output == [1, 2, 3]
        ps = pool.powershell().add_command("Write-Output")
        assert ps.invoke(input=["a", "b", 7]).output == ["a", "b", 7]
        assert pool.available_runspaces() >= 1
        assert pool.is_alive()


def test_host_calls_and_securestrings_over_a_process(process_client):
    host = Host()
    with process_client.runspace_pool(host=host) as pool:
        assert pool.run_ps("Read-Host -Prompt 'name'").output == ["typed over stdin"]
        assert threading.main_thread().name not in host.threads
        (cred,) = pool.run_ps("Get-Credential").output
        assert cred.username == "DOMAIN\\someone" and cred.password.get_value() == "cred-pass"
        pool.exchange_key()
        (secret,) = pool.run_ps("ConvertTo-SecureString -String 's3cr3t' -AsPlainText -Force").output
        assert isinstance(secret, SecureString) and secret.get_value() == "s3cr3t"


def test_stop_over_a_process(process_client):
    with process_client.runspace_pool() as pool:
        pipeline = pool.start("Write-Output first; Invoke-Stall")
        first = pipeline.next_event(timeout=10)
        assert first is not None
        pipeline.stop()
        result = pipeline.result()
        assert result.state == "Stopped"
        assert pool.run_ps("Write-Output after").output == ["after"]


def test_copy_and_fetch_over_a_process(process_client, tmp_path):
    source = tmp_path / "source.bin"
    data = bytes(i * 7 % 251 for i in range(200_000))
    source.write_bytes(data)
    remote = tmp_path / "remote.bin"
    process_client.copy(source, str(remote))
    assert remote.read_bytes() == data
    back = tmp_path / "back.bin"
    process_client.fetch(str(remote), back)
    assert back.read_bytes() == data


def test_wsman_only_calls_are_refused(process_client):
    for call, what in [
        (lambda: process_client.run_cmd("whoami"), "cmd shell"),
        (lambda: process_client.list_pools(), "listing runspace pools"),
        (lambda: process_client.server_config(), "WinRM configuration"),
    ]:
        with pytest.raises(psremote.ConfigurationError, match=what) as info:
            call()
        assert "WS-Man" in str(info.value) and "process" in str(info.value)
    with process_client.runspace_pool() as pool:
        with pytest.raises(psremote.ConfigurationError, match="disconnecting"):
            pool.disconnect()
        assert pool.run_ps("Write-Output ok").output == ["ok"]


def test_options_are_checked_before_anything_starts(tmp_path):
    with pytest.raises(psremote.ConfigurationError, match="do not apply"):
        Client("server", transport="process")
    with pytest.raises(psremote.ConfigurationError, match="do not apply"):
        Client(transport="process", username="user", password="pw")
    with pytest.raises(psremote.ConfigurationError, match="unknown transport"):
        Client(transport="carrier-pigeon")
    with pytest.raises(psremote.ConfigurationError, match="apply to transport='process'"):
        Client("server", username="u", password="p", executable="pwsh")
    with pytest.raises(psremote.ConfigurationError, match="list of str"):
        Client(transport="process", arguments="-NoLogo -s")
    with pytest.raises(psremote.ConfigurationError, match="non-empty str"):
        Client(transport="process", executable="")
    # The defaults name pwsh; nothing is started until a pool opens.
    client = Client(transport="process")
    assert client.url == "process:pwsh"
    client.close()


def test_a_missing_program_a_crash_and_garbage_are_typed_errors(tmp_path):
    with Client(transport="process", executable=str(tmp_path / "no-such-pwsh")) as client:
        with pytest.raises(psremote.ConnectError):
            client.run_ps("Write-Output 1")
    log = tmp_path / "crash.log"
    with Client(transport="process", executable=sys.executable, arguments=server_arguments(log, "--misbehave", "exit-stderr")) as client:
        with pytest.raises(psremote.TransportError, match="simulated crash") as info:
            client.run_ps("Write-Output 1")
        assert "exited with status 3" in str(info.value)
    wait_gone(log)
    log = tmp_path / "garbage.log"
    with Client(transport="process", executable=sys.executable, arguments=server_arguments(log, "--misbehave", "garbage")) as client:
        with pytest.raises(psremote.ProtocolError, match="does not start with"):
            client.run_ps("Write-Output 1")
    wait_gone(log)


def test_operation_timeout_bounds_the_wait_for_acknowledgements(tmp_path):
    # The endpoint's --misbehave no-ack never acknowledges; three operation timeouts end the
    # wait (60 s with the default 20). With operation_timeout=1 the timeout error comes well
    # inside the thread's generous bound; left out (the old behaviour) it would not.
    log = tmp_path / "no-ack.log"
    caught: List[BaseException] = []

    def run() -> None:
        options: Dict[str, Any] = dict(executable=sys.executable, arguments=server_arguments(log, "--misbehave", "no-ack"))
        with Client(transport="process", operation_timeout=1, **options) as client:
            try:
                client.run_ps("Write-Output 1")
            except BaseException as e:  # noqa: BLE001 - handed to the test thread
                caught.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(45)
    assert not worker.is_alive(), "operation_timeout=1 did not bound the wait for an acknowledgement"
    assert len(caught) == 1 and isinstance(caught[0], psremote.OperationTimeoutError), caught
    assert isinstance(caught[0], TimeoutError)
    wait_gone(log)
    with pytest.raises(psremote.ConfigurationError, match="operation_timeout"):
        Client(transport="process", operation_timeout=0)
    # The CLI passes --operation-timeout on.
    cli_log = tmp_path / "cli-no-ack.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    done = subprocess.run(
        [sys.executable, "-m", "psremote", "run", "--transport", "process", "--operation-timeout", "1",
         "--process-executable", sys.executable,
         "--process-args", " ".join(server_arguments(cli_log, "--misbehave", "no-ack")), "-c", "Write-Output 1"],
        env=env, capture_output=True, text=True, timeout=45,
    )  # fmt: skip
    assert done.returncode not in (0, 2) and "Traceback" not in done.stderr, done.stderr
    assert "time" in done.stderr.lower(), done.stderr
    wait_gone(cli_log)
    # WS-Man's switches and a proxy are usage errors with --transport process.
    for extra, words in (
        (["--proxy", "http://127.0.0.1:3128"], "--proxy applies to --transport wsman, not process"),
        (["--https"], "--https applies to --transport wsman, not process"),
        (["--user", "alice"], "--user applies to --transport wsman and ssh, not process"),
        (["--configuration-name", "JEA"], "--configuration-name applies to --transport wsman"),
        (["--key-file", "/k"], "--key-file applies to --transport ssh, not process"),
    ):
        wrong = subprocess.run(
            [sys.executable, "-m", "psremote", "run", "--transport", "process", *extra, "-c", "1"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert wrong.returncode == 2 and words in wrong.stderr, wrong.stderr


def test_asyncio_over_a_process(server_log, tmp_path):
    async def main():
        async with AsyncClient(transport="process", executable=sys.executable, arguments=server_arguments(server_log)) as client:
            assert client.transport == "process"
            results = await asyncio.gather(*(client.run_ps(f"Write-Output {i}") for i in range(3)))
            async with client.runspace_pool(host=Host()) as pool:
                answered = await pool.run_ps("Read-Host -Prompt 'name'")
            with pytest.raises(psremote.ConfigurationError, match="cmd shell"):
                await client.run_cmd("whoami")
            return results, answered

    results, answered = asyncio.run(main())
    assert [r.output for r in results] == [[0], [1], [2]]
    assert answered.output == ["typed over stdin"]
    wait_gone(server_log)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=1)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_audit_connect_event_names_the_transport(server_log):
    handler = Records()
    # The native side forwards what the `psremote` logger's level lets through.
    logger = logging.getLogger("psremote")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    psremote._logging.sync_native_level()
    try:
        with Client(transport="process", executable=sys.executable, arguments=server_arguments(server_log)) as client:
            assert client.run_ps("Write-Output 1").output == [1]
        deadline = time.monotonic() + 10

        def connects() -> List[Dict[str, Any]]:
            fields = [getattr(r, "psremote", None) or {} for r in list(handler.records)]
            audit = [f for r, f in zip(list(handler.records), fields) if r.name == "psremote.audit"]
            return [f for f in audit if f.get("event") == "connect" and f.get("transport") == "process"]

        while not connects():
            assert time.monotonic() < deadline, [r.getMessage() for r in handler.records]
            time.sleep(0.02)
        (event,) = connects()[:1]
        assert event["endpoint"] == f"process:{sys.executable}"
        assert "pid" in event["process"]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
        psremote._logging.sync_native_level()
    wait_gone(server_log)


def test_the_cli_runs_scripts_and_copies_over_a_process(tmp_path):
    log = tmp_path / "cli.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PSREMOTE_USER", None)
    base = [sys.executable, "-m", "psremote"]
    process = ["--transport", "process", "--process-executable", sys.executable, "--process-args", " ".join(server_arguments(log))]
    done = subprocess.run(
        base + ["run", *process, "-c", "Write-Output hi; Write-Warning careful"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["hi"]
    assert "WARNING: careful" in done.stderr
    source = tmp_path / "cli-source.txt"
    source.write_text("copied over stdin\n")
    remote = tmp_path / "cli-remote.txt"
    done = subprocess.run(base + ["copy", *process, str(source), str(remote)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert remote.read_text() == "copied over stdin\n"
    # WS-Man-only commands and a HOST are usage errors.
    done = subprocess.run(base + ["cmd", *process, "whoami"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "WS-Man" in done.stderr, done.stderr
    done = subprocess.run(base + ["run", "server", *process, "-c", "1"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no HOST" in done.stderr, done.stderr
    wait_gone(log)
