"""The out-of-process mode as the ``powershell`` subsystem of Debian's OpenSSH server
(``psremote_testserver.sshd``), reached by pypsrp 1.0.0b1's SSH connection (asyncssh, in
.venv-psrp) and by OpenSSH's own client; and the fixture's command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psrpcore
import pytest
from test_outofproc import psrp10, psrp10_python, TESTS

from psremote_testserver import outofproc, sshd

WAIT = 20


@pytest.fixture(scope="module")
def server():
    with sshd.running() as running:
        yield running.info


@pytest.fixture(scope="module")
def bare_server():
    """An sshd without the powershell subsystem."""
    with sshd.running(subsystem=False) as running:
        yield running.info


def ssh_args(info, scenario, *, known_hosts=None, user=None, key=None, password=None):
    args = ["ssh", scenario, str(info["port"]), known_hosts or info["known_hosts_path"], user or info["user"]]
    if password is not None:
        return args + ["--password", password]
    return args + ["--key", key or info["user_key_path"]]


def psrp10_failure(*args) -> str:
    done = subprocess.run(
        [psrp10_python(), str(TESTS / "psrp10_client.py"), *args], capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["failure"]


@pytest.mark.parametrize("scenario", ["basic", "host", "secure", "stop"])
def test_pypsrp10_ssh_key(server, scenario):
    result = psrp10(*ssh_args(server, scenario))
    expected = {
        "basic": {"output": ["hello async"], "warning": ["careful"], "error": ["oops"], "again": ["again"]},
        "host": {"output": ["typed answer"]},
        "secure": {"type": "PSSecureString", "plain": "secret"},
        "stop": {"state": "Stopped", "stopped": True, "output": ["before"], "after": ["still usable"]},
    }[scenario]
    assert result == expected


@pytest.mark.parametrize("scenario", ["basic", "secure"])
def test_pypsrp10_ssh_password(server, scenario):
    # Another account than the fixture's: the subsystem runs as that user, with the system's Python.
    assert server["password_user"], server["password_unavailable"]
    result = psrp10(*ssh_args(server, scenario, user=server["password_user"], password=server["password"]))
    assert result["output" if scenario == "basic" else "plain"] in (["hello async"], "secret")
    logs = list((Path(server["dir"]) / "logs").glob(f"outofproc-{server['password_user']}-*.log"))
    assert logs  # the mode ran as the password user


def test_pypsrp10_ssh_password_with_copied_packages():
    # What a checkout other accounts cannot read (under /root, say) gets: the mode's packages copied.
    with sshd.running(copy_packages=True) as running:
        info = running.info
        assert (Path(info["dir"]) / "site" / "psrpcore").is_dir()
        result = psrp10(*ssh_args(info, "basic", user=info["password_user"], password=info["password"]))
        assert result["output"] == ["hello async"]


def test_pypsrp10_ssh_refusals(server):
    assert psrp10_failure(*ssh_args(server, "basic", key=server["wrong_key_path"])).startswith("PermissionDenied")
    assert psrp10_failure(*ssh_args(server, "basic", user=server["password_user"], password="wrong")).startswith(
        "PermissionDenied"
    )
    assert psrp10_failure(*ssh_args(server, "basic", known_hosts=server["changed_known_hosts_path"])).startswith(
        "HostKeyNotVerifiable"
    )
    assert psrp10_failure(*ssh_args(server, "basic", known_hosts=server["empty_known_hosts_path"])).startswith(
        "HostKeyNotVerifiable"
    )


def test_pypsrp10_ssh_without_subsystem(bare_server):
    assert bare_server["subsystem"] is None
    assert psrp10_failure(*ssh_args(bare_server, "basic")) == "ChannelOpenError: Session request failed"


def openssh(info, *, subsystem="powershell", user_input=b"", timeout=WAIT):
    """OpenSSH's client running the subsystem with the fixture's key, strict host key checking."""
    command = [
        "ssh", "-F", "/dev/null", "-p", str(info["port"]), "-i", info["user_key_path"],
        "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={info['known_hosts_path']}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        f"{info['user']}@127.0.0.1", "-s", subsystem,
    ]  # fmt: skip
    return subprocess.run(command, input=user_input, capture_output=True, timeout=timeout)


def test_openssh_client_reaches_the_mode(server, bare_server):
    # EOF at once: the mode exits 0 and ssh passes the status on.
    done = openssh(server)
    assert (done.returncode, done.stdout) == (0, b"")
    # Malformed input: exit status 2 (sshd drops a subsystem's stderr).
    done = openssh(server, user_input=b"garbage\n")
    assert (done.returncode, done.stdout) == (2, b"")
    # A pool's opening Data (made by psrpcore's client) gets its DataAck.
    pool = psrpcore.ClientRunspacePool()
    pool.open()
    opening = outofproc.data_line(uuid.UUID(int=0), pool.data_to_send().data)
    done = openssh(server, user_input=opening + b"\n")
    assert done.returncode == 0
    assert f"<DataAck PSGuid='{uuid.UUID(int=0)}' />".encode() in done.stdout.splitlines()
    done = openssh(bare_server)
    assert done.returncode != 0 and b"subsystem request failed" in done.stderr


def test_fixture_cli_lifecycle(tmp_path):
    fixture = subprocess.Popen(
        [sys.executable, "-m", "psremote_testserver.sshd", "--no-subsystem"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(fixture.stdout.readline())
        for key in ("port", "host_key_fingerprint", "host_public_key", "known_hosts_line", "user_key_path", "user",
                    "password_user", "password", "subsystem", "pid"):  # fmt: skip
            assert key in info
        assert info["subsystem"] is None
        assert info["known_hosts_line"] == f"[127.0.0.1]:{info['port']} {info['host_public_key']}"
        assert info["host_key_fingerprint"].startswith("SHA256:")
        assert Path(info["user_key_path"]).exists()
        fixture.send_signal(signal.SIGTERM)
        assert fixture.wait(WAIT) == 0
        assert not Path(info["dir"]).exists()
        with pytest.raises(ProcessLookupError):
            os.kill(info["pid"], 0)
    finally:
        if fixture.poll() is None:
            fixture.kill()
            fixture.wait()
        fixture.stdout.close()
        fixture.stderr.close()


def test_fixture_stops_when_its_parent_exits(tmp_path):
    out = tmp_path / "info"
    # The shell starts the fixture and waits for a line on stdin; closing stdin ends the shell.
    parent = subprocess.Popen(
        ["sh", "-c", f'{sys.executable} -m psremote_testserver.sshd --no-subsystem > "{out}" & read line || true'],
        stdin=subprocess.PIPE,
    )
    try:
        for _ in range(WAIT * 20):
            if out.exists() and out.read_text().endswith("\n"):
                break
            time.sleep(0.05)
        info = json.loads(out.read_text())
        parent.stdin.close()
        assert parent.wait(WAIT) == 0
        for _ in range(WAIT * 20):
            if not Path(info["dir"]).exists():
                break
            time.sleep(0.05)
        assert not Path(info["dir"]).exists()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
