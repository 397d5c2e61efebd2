"""Process-level behaviour: the URL line, options, clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import PASSWORD, USER, winrm_session
from pypsrp.shell import Process, WinRS
from pypsrp.wsman import WSMan


def test_url_line_and_custom_path(start_endpoint):
    server = start_endpoint("--path", "/custom/wsman")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/custom/wsman", server.url)


def test_sigterm_kills_running_commands(start_endpoint):
    server = start_endpoint()
    connection = WSMan(
        "127.0.0.1", port=server.port, ssl=False, auth="ntlm", username=USER, password=PASSWORD, encryption="always", path="wsman"
    )
    shell = WinRS(connection)
    shell.open()
    process = Process(shell, "echo $$; exec sleep 60")
    process.begin_invoke()
    while not process.stdout.endswith(b"\n"):
        process.poll_invoke()
    pid = int(process.stdout)
    os.kill(pid, 0)
    assert server.stop() == 0
    deadline = time.monotonic() + 10
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "command outlived the endpoint"
        time.sleep(0.05)
    connection.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stops_cleanly(users_file, signum):
    process = subprocess.Popen(
        [sys.executable, "-m", "psremote_testserver", "--port", "0", "--users", str(users_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = process.stdout.readline().decode()
        assert line.startswith("http://127.0.0.1:")
        process.send_signal(signum)
        assert process.wait(10) == 0
        assert process.stdout.read() == b""  # exactly one line on stdout
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_bad_users_file_fails_fast(tmp_path):
    users = tmp_path / "users"
    users.write_text("no colons here\n")
    result = subprocess.run(
        [sys.executable, "-m", "psremote_testserver", "--port", "0", "--users", str(users)],
        capture_output=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert result.stdout == b""
    assert b"DOMAIN:USER:PASSWORD" in result.stderr


def test_passwords_never_logged(start_endpoint):
    server = start_endpoint()
    with winrm_session(server.url, auth=(USER, PASSWORD), transport="ntlm", message_encryption="always") as s:
        s.run_cmd("echo", ["x"])
    server.stop()
    log = server.stderr_path.read_text()
    assert "POST /wsman -> 200 action=Create" in log
    assert PASSWORD not in log


def test_the_endpoint_stops_when_the_process_that_started_it_is_gone(users_file, tmp_path):
    # A parent that starts an endpoint, reads its URL and exits without stopping it (a test
    # run that crashed): the endpoint notices and exits instead of lingering with open ports.
    starter = (
        "import subprocess, sys, os\n"
        f"p = subprocess.Popen([sys.executable, '-m', 'psremote_testserver', '--port', '0', '--users', {str(users_file)!r}],"
        " stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)\n"
        "p.stdout.readline()\n"
        "print(p.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, timeout=60, check=True)
    pid = int(out.stdout.strip())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return  # exited and reaped
        if state == "Z":
            return  # exited; its new parent has not reaped it
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the endpoint kept running after its parent exited")
