"""``psremote copy`` and ``psremote fetch`` against the loopback endpoint (whose file system is
this host's): the path written on stdout, a clear message and exit 1 when the transfer fails,
exit 2 for usage mistakes, and nothing left on the server."""

from __future__ import annotations

import os
import subprocess
import sys

PSREMOTE = [sys.executable, "-m", "psremote"]


def run_cli(args, env, timeout=60):
    return subprocess.run(PSREMOTE + args, env=env, capture_output=True, text=True, timeout=timeout)


def test_copy_and_fetch_with_url(child_env, endpoint, tmp_path):
    content = os.urandom(400_000)
    (tmp_path / "a.bin").write_bytes(content)
    url = ["--url", child_env["PSREMOTE_URL"], "--auth", "ntlm"]
    done = run_cli(["copy", *url, str(tmp_path / "a.bin"), str(tmp_path / "remote.bin")], child_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{tmp_path / 'remote.bin'}\n"
    assert done.stderr == ""  # no bar when stderr is not a terminal
    done = run_cli(["fetch", *url, str(tmp_path / "remote.bin"), str(tmp_path / "back.bin")], child_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{tmp_path / 'back.bin'}\n"
    assert (tmp_path / "back.bin").read_bytes() == content
    state = endpoint.wait_state("pipelines", 0)
    assert state["pipelines"] == 0, state


def test_host_argument(child_env, endpoint, tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    done = run_cli(
        ["copy", "--port", str(endpoint.port), "--auth", "ntlm", "127.0.0.1", str(tmp_path / "a.txt"), str(tmp_path / "b.txt")],
        child_env,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "b.txt").read_text() == "hello"


def test_a_failed_transfer_says_why_and_exits_1(child_env, tmp_path):
    url = ["--url", child_env["PSREMOTE_URL"], "--auth", "ntlm"]
    done = run_cli(["fetch", *url, str(tmp_path / "nope.bin"), str(tmp_path / "x.bin")], child_env)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "fetch failed on the server" in done.stderr and "nope.bin" in done.stderr, done.stderr
    done = run_cli(["copy", *url, str(tmp_path / "nope.bin"), str(tmp_path / "x.bin")], child_env)
    assert done.returncode == 1
    assert "copy failed here" in done.stderr and "nope.bin" in done.stderr, done.stderr
    done = run_cli(["copy", *url, "--no-expand", str(tmp_path), "%TEMP%/x.bin"], child_env)
    assert done.returncode == 1 and "is a directory" in done.stderr, done.stderr
    assert os.listdir(tmp_path) == []


def test_usage_mistakes_exit_2(child_env, tmp_path):
    done = run_cli(["copy", "--url", child_env["PSREMOTE_URL"], str(tmp_path / "a")], child_env)
    assert done.returncode == 2 and "copy needs SRC and DEST" in done.stderr, done.stderr
    done = run_cli(["fetch", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "--timeout", "-1", "a", "b"], child_env)
    assert done.returncode == 2 and "timeout must be a positive" in done.stderr, done.stderr
