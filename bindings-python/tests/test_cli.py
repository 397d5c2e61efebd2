"""The psremote command line: run, cmd, --json, and the interactive shell through a pty."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import psremote
from psremote import cli

PSREMOTE = [sys.executable, "-m", "psremote"]


def run_cli(args, env, input=None, timeout=30):
    return subprocess.run(PSREMOTE + args, env=env, capture_output=True, text=True, input=input, timeout=timeout)


def test_run_prints_output_and_streams(child_env):
    done = run_cli(
        ["run", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "-c", "Write-Output hi; Write-Warning careful; 2*3"],
        child_env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["hi", "6"]
    assert "WARNING: careful" in done.stderr
    assert "\x1b[" not in done.stdout + done.stderr  # no colours when not a terminal


def test_run_exit_code_reflects_errors(child_env):
    done = run_cli(["run", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "-c", "Write-Error oops"], child_env)
    assert done.returncode == 1
    assert "oops" in done.stderr and "FullyQualifiedErrorId" in done.stderr
    failed = run_cli(["run", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "-c", "Invoke-Failure fatal"], child_env)
    assert failed.returncode == 1 and "fatal" in failed.stderr


def test_run_json(child_env):
    done = run_cli(
        ["run", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "--json", "-c",
         "Write-Output a; Get-Item /; Write-Error e; ConvertTo-SecureString hidden-value -AsPlainText -Force"],
        child_env,
    )  # fmt: skip
    data = json.loads(done.stdout)
    assert data["output"][0] == "a"
    assert data["output"][1]["@type"].endswith("DirectoryInfo") and data["output"][1]["PSIsContainer"] is True
    assert data["output"][2] == "***"
    assert data["errors"][0]["message"] == "e"
    assert data["state"] == "Completed" and data["had_errors"] is True
    assert "hidden-value" not in done.stdout
    assert done.returncode == 1


def test_run_script_from_stdin(child_env):
    done = run_cli(["run", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "-c", "-"], child_env, input="Write-Output from-stdin\n")
    assert done.stdout.strip() == "from-stdin"


def test_host_argument_and_user_option(child_env, endpoint):
    env = dict(child_env)
    del env["PSREMOTE_USER"]
    done = run_cli(["run", "127.0.0.1", "--port", str(endpoint.port), "--auth", "ntlm", "--user", "user", "-c", "Write-Output ok"], env)
    assert done.stdout.strip() == "ok", done.stderr


def test_cmd(child_env):
    done = run_cli(["cmd", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "echo", "hello", "world"], child_env)
    assert done.returncode == 0 and done.stdout == "hello world\n"
    failing = run_cli(["cmd", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "ls", "/no/such/path"], child_env)
    assert failing.returncode != 0 and failing.stderr


def test_cmd_with_the_host_before_the_options(child_env, endpoint):
    env = dict(child_env)
    del env["PSREMOTE_USER"]
    # HOST first, psremote's options after it, then the program and its own options.
    done = run_cli(["cmd", "127.0.0.1", "--port", str(endpoint.port), "--auth", "ntlm", "-u", "user", "echo", "-n", "hello"], env)
    assert done.returncode == 0 and done.stdout == "hello", done.stderr
    # The program's options stay the program's when the host is given first and no option follows.
    done = run_cli(["cmd", "--port", str(endpoint.port), "--auth", "ntlm", "-u", "user", "127.0.0.1", "echo", "-n", "-u"], env)
    assert done.returncode == 0 and done.stdout == "-u", done.stderr
    done = run_cli(["cmd", "127.0.0.1", "--port", str(endpoint.port), "--auth", "ntlm", "-u", "user", "echo", "one", "two"], env)
    assert done.returncode == 0 and done.stdout == "one two\n", done.stderr
    words = ["cmd", "server", "-u", "U"]
    for program in (["ipconfig", "/all"], ["ping", "-n", "3"], ["a", "b", "c"], ["hostname"]):
        args = cli._parse(cli.build_parser(), words + program)
        assert (args.host, args.user, [args.executable, *args.arguments]) == ("server", "U", program)
    missing = run_cli(["cmd", "127.0.0.1", "--port", str(endpoint.port)], env)
    assert missing.returncode == cli.EXIT_USAGE and "executable" in missing.stderr


def test_cmd_json_and_stdin(child_env):
    done = run_cli(["cmd", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "--json", "--stdin", "cat"], child_env, input="piped in")
    assert json.loads(done.stdout) == {"stdout": "piped in", "stderr": "", "exit_code": 0}


def test_cmd_shell_options(child_env, tmp_path):
    done = run_cli(
        ["cmd", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "-e", "GREETING=hi there", "--env", "N=2",
         "--cwd", str(tmp_path), "--no-profile", "--skip-cmd-shell", "sh", "-c", "echo $GREETING $N; pwd"],
        child_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["hi there 2", str(tmp_path)]
    bad = run_cli(["cmd", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "--env", "novalue", "true"], child_env)
    assert bad.returncode == cli.EXIT_USAGE and "NAME=VALUE" in bad.stderr


def test_wrong_password_and_missing_password(child_env):
    env = dict(child_env, PSREMOTE_PASSWORD="wrong")
    done = run_cli(["run", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "-c", "1"], env)
    assert done.returncode == cli.EXIT_CONNECTION and "AuthenticationError" in done.stderr
    assert "wrong" not in done.stderr.replace("wrong password", "")
    env = dict(child_env)
    del env["PSREMOTE_PASSWORD"]
    done = run_cli(["run", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "-c", "1"], env)
    assert done.returncode == cli.EXIT_USAGE and "PSREMOTE_PASSWORD" in done.stderr


def test_invalid_options_exit_2(child_env):
    done = run_cli(["run", "--url", child_env["PSREMOTE_URL"], "--ca-file", "ca.pem", "-c", "1"], child_env)
    assert done.returncode == 2 and "ca_file only apply to https" in done.stderr
    done = run_cli(["run", "-c", "1"], child_env)
    assert done.returncode == 2 and "HOST" in done.stderr
    # There is no password option at all.
    done = run_cli(["run", "--password", "x", "-c", "1"], child_env)
    assert done.returncode == 2 and "unrecognized arguments" in done.stderr


def test_ntlm_needs_trusted_hosts_or_https(child_env):
    env = dict(child_env)
    del env["PSREMOTE_TRUSTED_HOSTS"]
    done = run_cli(["run", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "-c", "1"], env)
    assert done.returncode == 3
    assert "SecurityPolicyError" in done.stderr and "trusted_hosts" in done.stderr
    done = run_cli(["run", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm", "--trusted-hosts", "127.0.0.*", "-c", "1"], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def test_https_with_a_ca_file(child_env, start_endpoint, test_certs):
    endpoint = start_endpoint("--tls-cert", test_certs["server"], "--tls-key", test_certs["server_key"], cafile=test_certs["ca"])
    env = dict(child_env)
    del env["PSREMOTE_TRUSTED_HOSTS"]  # the verified certificate is what allows NTLM here
    done = run_cli(["run", "--url", endpoint.url, "--auth", "ntlm", "--ca-file", test_certs["ca"], "-c", "Write-Output tls"], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tls"
    # Without the CA the system's do not know the issuer.
    done = run_cli(["run", "--url", endpoint.url, "--auth", "ntlm", "-c", "1"], env)
    assert done.returncode == 3 and "TLSError" in done.stderr and "trusted CA" in done.stderr
    # Skipping verification is loud, and NTLM then needs trusted hosts again.
    done = run_cli(["run", "--url", endpoint.url, "--auth", "ntlm", "--insecure-skip-verify", "-c", "1"], env)
    assert done.returncode == 3 and "not verified" in done.stderr and "trusted_hosts" in done.stderr


def test_shell_from_a_pipe(child_env):
    script = "Write-Output one\nRead-Host 'Name'\nanswer\nWrite-Error bad\nexit\nWrite-Output never\n"
    done = run_cli(["shell", "--url", child_env["PSREMOTE_URL"], "--auth", "ntlm"], child_env, input=script)
    assert done.returncode == 0, done.stderr
    assert "one" in done.stdout and "answer" in done.stdout and "never" not in done.stdout
    assert "bad" in done.stderr


def test_console_script_is_declared():
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    assert 'psremote = "psremote.cli:main"' in pyproject.read_text()
    script = shutil.which("psremote", path=os.path.dirname(sys.executable))
    assert script is not None, "the psremote console script is not installed next to this Python"
    assert subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30).stdout.startswith("psremote ")


def test_json_conversion_masks_secrets():
    from psremote import PSCredential, SecureString

    assert cli.to_jsonable([SecureString("x"), PSCredential("u", "p")]) == ["***", {"UserName": "u", "Password": "***"}]


# The shell's prompt: [host]: PS <remote location>>
PROMPT = rb"\]: PS [^\r\n]*> "


class Pty:
    """A child process on a pseudo-terminal that is its controlling terminal (so ^C is SIGINT)."""

    def __init__(self, args, env):
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(["setsid", "-c", *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.buffer = b""

    def read_until(self, pattern: bytes, timeout: float = 15.0) -> bytes:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.buffer):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{pattern!r} not seen; screen: {self.buffer[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed before {pattern!r}; screen: {self.buffer[-2000:]!r}")
                self.buffer += chunk
        found = self.buffer
        self.buffer = b""
        return found

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
        return self.process.returncode


def test_interactive_shell_in_a_pty(child_env, start_endpoint, tmp_path):
    endpoint = start_endpoint()
    env = dict(child_env, PSREMOTE_URL=endpoint.url, PSREMOTE_HISTORY=str(tmp_path / "history"), TERM="xterm")
    env.pop("NO_COLOR", None)
    term = Pty(PSREMOTE + ["shell", "--url", endpoint.url, "--auth", "ntlm"], env)
    try:
        term.read_until(PROMPT)
        term.send("Write-Output 'hello pty'\r")
        screen = term.read_until(rb"hello pty[\s\S]*" + PROMPT)
        assert b"hello pty" in screen

        term.send("Write-Error red-error; Write-Warning yellow-warning; Write-Verbose cyan-verbose\r")
        screen = term.read_until(rb"cyan-verbose[\s\S]*" + PROMPT)
        assert b"\x1b[31mWrite-Error: red-error" in screen
        assert b"\x1b[33mWARNING: yellow-warning" in screen
        assert b"\x1b[33mVERBOSE: cyan-verbose" in screen

        term.send("Invoke-Stall\r")
        assert endpoint.wait_state("pipelines_running", 1)["pipelines_running"] == 1
        t0 = time.monotonic()
        term.send("\x03")
        term.read_until(rb"\^C[\s\S]*" + PROMPT, timeout=5)
        assert time.monotonic() - t0 < 2.5
        assert endpoint.wait_state("pipelines_running", 0)["pipelines_running"] == 0

        # Read-Host is answered on the terminal through the host.
        term.send("Read-Host 'Your name'\r")
        term.read_until(rb"Your name: ")
        term.send("Bob\r")
        # The terminal echoes the answer, then the pipeline outputs it.
        assert term.read_until(rb"Bob\s[\s\S]*" + PROMPT).count(b"Bob") == 2

        # The session goes on after Ctrl-C, and Ctrl-C at the prompt only gives a new prompt.
        # A person takes longer than this: CPython's readline notices a SIGINT that arrives
        # between printing the prompt and entering select() only at the next keystroke.
        time.sleep(0.3)
        term.send("\x03")
        term.read_until(PROMPT)
        term.send("1+1\r")
        assert b"2" in term.read_until(rb"2\s[\s\S]*" + PROMPT)
        term.send("exit\r")
        assert term.close() == 0
    finally:
        if term.process.poll() is None:
            term.process.kill()
            term.close()
    history = (tmp_path / "history").read_text()
    assert "Write-Output 'hello pty'" in history and "1+1" in history
    assert endpoint.wait_state("pools", 0)["pools"] == 0


def test_pools_lists_and_removes_disconnected_pools(child_env, credentials):
    with psremote.Client(**credentials) as client:
        pool = client.runspace_pool(idle_timeout=600)
        # Kept: a pipeline object dropped while running is stopped and released.
        stalled = pool.start("Invoke-Stall")
        pool.disconnect()
        pool_id = pool.id
        del stalled
    url = ["--url", child_env["PSREMOTE_URL"], "--auth", "ntlm"]
    listed = run_cli(["pools", *url], child_env)
    assert listed.returncode == 0, listed.stderr
    (line,) = [line for line in listed.stdout.splitlines() if line.startswith(pool_id)]
    assert "Disconnected" in line and "Microsoft.PowerShell" in line and "1 pipeline(s)" in line
    as_json = run_cli(["pools", "--json", *url], child_env)
    (record,) = [r for r in map(json.loads, as_json.stdout.splitlines()) if r["id"] == pool_id]
    assert record["state"] == "Disconnected" and len(record["pipelines"]) == 1
    closed = run_cli(["pools", "--close", pool_id, *url], child_env)
    assert closed.returncode == 0, closed.stderr
    assert pool_id not in closed.stdout and "deleted" in closed.stderr
    gone = run_cli(["pools", "--close", pool_id, *url], child_env)
    assert gone.returncode == cli.EXIT_CONNECTION and "NotFoundError" in gone.stderr


def test_server_text_is_shown_not_obeyed():
    assert cli.printable("red\x1b[31m bell\x07 \u202eevil\ttab") == "red\\u{001b}[31m bell\\u{0007} \\u{202e}evil\ttab"
