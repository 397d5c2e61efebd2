"""``psremote run -H/-f`` and ``psremote cmd -H/-f`` against several loopback endpoints: each
host's output prefixed with its name, server text escaped, NDJSON with --json, a file per host
with --output-dir, a summary line on stderr, exit status 1 when any host failed, and nothing
left open on any endpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from psremote import cli

from psremote_testserver.testing import DOMAIN, PASSWORD, USER, Endpoint

PSREMOTE = [sys.executable, "-m", "psremote"]


@pytest.fixture(scope="module")
def one(start_endpoint) -> Endpoint:
    return start_endpoint()


@pytest.fixture(scope="module")
def two(start_endpoint) -> Endpoint:
    return start_endpoint()


@pytest.fixture(scope="module")
def stalled(start_endpoint) -> Endpoint:
    return start_endpoint("--misbehave", "stalled-receives")


@pytest.fixture
def env() -> Dict[str, str]:
    e = dict(os.environ)
    e.update(
        PSREMOTE_USER=f"{DOMAIN}\\{USER}", PSREMOTE_PASSWORD=PASSWORD, PSREMOTE_TRUSTED_HOSTS="127.0.0.1", PYTHONUNBUFFERED="1"
    )
    return e


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(args: List[str], env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(PSREMOTE + args, env=env, capture_output=True, text=True, timeout=60)


def assert_clean(*endpoints: Endpoint) -> None:
    for endpoint in endpoints:
        for key in ("commands", "pipelines", "pools", "shells"):
            state = endpoint.wait_state(key, 0)
            assert state[key] == 0, state


def addr(endpoint: Endpoint) -> str:
    return f"127.0.0.1:{endpoint.port}"


def test_run_on_a_mixed_fleet(one, two, stalled, env, tmp_path):
    dead = f"127.0.0.1:{dead_port()}"
    hosts_file = tmp_path / "hosts.txt"
    hosts_file.write_text(f"# more hosts\n{addr(two)}\n{dead}  # switched off\n")
    done = run_cli(
        ["run", "--auth", "ntlm", "-H", f"{addr(one)},{addr(stalled)}", "-f", str(hosts_file), "--throttle", "2",
         "--timeout", "3", "-c", "Write-Output hello; Write-Warning careful"],
        env,
    )  # fmt: skip
    assert done.returncode == cli.EXIT_ERRORS, done.stderr
    out = done.stdout.splitlines()
    assert sorted(out) == sorted([f"{addr(one)}: hello", f"{addr(two)}: hello"])
    err = done.stderr.splitlines()
    assert f"{addr(one)}: WARNING: careful" in err and f"{addr(two)}: WARNING: careful" in err
    assert any(line.startswith(f"{addr(stalled)}: Failed: OperationTimeoutError: ") for line in err), err
    assert any(line.startswith(f"{dead}: Unreachable: ConnectError: ") for line in err), err
    summary = err[-1]
    assert summary.startswith("psremote: 4 hosts: 2 succeeded, 1 failed, 1 unreachable ("), summary
    assert f"failed: {addr(stalled)}" in summary and f"unreachable: {dead}" in summary
    assert_clean(one, two, stalled)


def test_run_on_a_healthy_fleet_exits_0(one, two, env):
    done = run_cli(["run", "--auth", "ntlm", "-H", addr(one), "-H", addr(two), "-c", "Write-Output ok"], env)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted([f"{addr(one)}: ok", f"{addr(two)}: ok"])
    assert done.stderr.splitlines()[-1].startswith("psremote: 2 hosts: 2 succeeded, 0 failed, 0 unreachable")


def test_run_json_gives_one_line_per_host(one, two, env):
    dead = f"127.0.0.1:{dead_port()}"
    done = run_cli(
        ["run", "--auth", "ntlm", "--json", "-H", f"{addr(one)},{addr(two)},{dead}", "-c", "Write-Output a; Get-Item /"], env
    )
    assert done.returncode == cli.EXIT_ERRORS
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(d["host"] for d in lines) == sorted([addr(one), addr(two), dead])
    by_host = {d["host"]: d for d in lines}
    for host in (addr(one), addr(two)):
        d = by_host[host]
        assert (d["status"], d["error"], d["state"]) == ("Succeeded", None, "Completed")
        assert d["output"][0] == "a"
        assert d["output"][1]["Name"] == "/" and d["output"][1]["PSComputerName"] == host
    failed = by_host[dead]
    assert failed["status"] == "Unreachable" and failed["error"]["type"] == "ConnectError"
    assert "output" not in failed
    assert sorted(d["index"] for d in lines) == [0, 1, 2]
    assert "3 hosts: 2 succeeded, 0 failed, 1 unreachable" in done.stderr
    assert_clean(one, two)


def test_output_dir_writes_a_file_per_host(one, two, env, tmp_path):
    folder = tmp_path / "out"
    done = run_cli(
        ["run", "--auth", "ntlm", "--output-dir", str(folder), "--url", one.url, "-H", "127.0.0.1",
         "-H", addr(two), "-c", "Write-Output hello; Write-Error oops"],
        env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    names = sorted(os.listdir(folder))
    assert names == sorted(["127.0.0.1.txt", "127.0.0.1.err", f"127.0.0.1_{two.port}.txt", f"127.0.0.1_{two.port}.err"])
    assert (folder / "127.0.0.1.txt").read_text() == "hello\n"
    assert "oops" in (folder / "127.0.0.1.err").read_text()

    as_json = tmp_path / "json"
    failing = run_cli(
        ["run", "--auth", "ntlm", "--json", "--output-dir", str(as_json), "-H", addr(one), "-c", "Invoke-Failure -Message broken"],
        env,
    )
    assert failing.returncode == cli.EXIT_ERRORS
    data = json.loads((as_json / f"127.0.0.1_{one.port}.json").read_text())
    assert data["status"] == "Failed" and data["state"] == "Failed" and "broken" in data["terminating_error"]["message"]
    assert f"{addr(one)}: broken" in failing.stderr
    assert_clean(one, two)


def test_cmd_on_a_fleet(one, two, env, tmp_path):
    done = run_cli(["cmd", "--auth", "ntlm", "-H", f"{addr(one)},{addr(two)}", "echo", "hi", "there"], env)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted([f"{addr(one)}: hi there", f"{addr(two)}: hi there"])

    failing = run_cli(["cmd", "--auth", "ntlm", "--json", "-H", addr(one), "exit", "3"], env)
    assert failing.returncode == cli.EXIT_ERRORS
    (line,) = [json.loads(x) for x in failing.stdout.splitlines()]
    assert (line["status"], line["exit_code"]) == ("Failed", 3)

    folder = tmp_path / "cmd"
    written = run_cli(["cmd", "--auth", "ntlm", "--output-dir", str(folder), "-H", addr(one), "printf", "'a\\nb'"], env)
    assert written.returncode == 0, written.stderr
    assert (folder / f"127.0.0.1_{one.port}.txt").read_bytes() == b"a\nb"
    assert_clean(one, two)


def test_server_text_is_escaped_before_the_terminal(one, env):
    done = run_cli(["cmd", "--auth", "ntlm", "-H", addr(one), "printf", "'\\033[31mred\\007'"], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{addr(one)}: \\u{{001b}}[31mred\\u{{0007}}\n"
    assert "\x1b" not in done.stdout + done.stderr


def test_cmd_options_reach_every_host(one, two, env):
    done = run_cli(
        ["cmd", "--auth", "ntlm", "--cwd", "/tmp", "--env", "FLEET=yes", "-H", f"{addr(one)},{addr(two)}", "echo $FLEET; pwd"],
        env,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(
        [f"{addr(one)}: yes", f"{addr(one)}: /tmp", f"{addr(two)}: yes", f"{addr(two)}: /tmp"]
    )
    assert_clean(one, two)


def test_fleet_usage_errors(one, env):
    both = run_cli(["run", "--auth", "ntlm", "127.0.0.1", "-H", addr(one), "-c", "1"], env)
    assert both.returncode == cli.EXIT_USAGE and "not both" in both.stderr
    lonely = run_cli(["run", "--auth", "ntlm", "127.0.0.1", "--throttle", "3", "-c", "1"], env)
    assert lonely.returncode == cli.EXIT_USAGE and "--throttle only apply with -H" in lonely.stderr
    bad_range = run_cli(["run", "--auth", "ntlm", "-H", "web[9-1]", "-c", "1"], env)
    assert bad_range.returncode == cli.EXIT_USAGE and "counts down" in bad_range.stderr
    missing = run_cli(["run", "--auth", "ntlm", "-f", str(Path("/nonexistent/hosts")), "-c", "1"], env)
    assert missing.returncode == cli.EXIT_USAGE and "cannot read the host file" in missing.stderr
    # Client's SSH and process options are no fleet options: a fleet with dead hosts runs and
    # reports them, without a traceback.
    dead = run_cli(["run", "--auth", "ntlm", "-H", f"127.0.0.1:{dead_port()},127.0.0.1:{dead_port()}", "-c", "1"], env)
    assert "Traceback" not in dead.stderr and dead.returncode not in (0, cli.EXIT_USAGE), dead.stderr
    ssh = run_cli(["run", "--transport", "ssh", "-H", addr(one), "-c", "1"], env)
    assert ssh.returncode == cli.EXIT_USAGE and "WS-Man only" in ssh.stderr, ssh.stderr
