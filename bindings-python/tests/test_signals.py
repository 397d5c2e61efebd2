"""Ctrl-C interrupts a blocking call quickly and stops the remote pipeline; a forked child
gets a clear error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

STALL_SCRIPT = textwrap.dedent(
    """
    import os, psremote
    with psremote.Client(url=os.environ["PSREMOTE_URL"], username=os.environ["PSREMOTE_USER"], auth="ntlm", trusted_hosts=os.environ["PSREMOTE_TRUSTED_HOSTS"]) as client:
        with client.runspace_pool() as pool:
            print("ready", flush=True)
            pool.run_ps("Invoke-Stall")
    """
)


def test_ctrl_c_in_a_subprocess_stops_the_pipeline(start_endpoint, child_env):
    endpoint = start_endpoint()
    child_env["PSREMOTE_URL"] = endpoint.url
    process = subprocess.Popen(
        [sys.executable, "-c", STALL_SCRIPT], env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "ready"
        assert endpoint.wait_state("pipelines_running", 1)["pipelines_running"] == 1
        t0 = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(10)
        elapsed = time.monotonic() - t0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    assert "KeyboardInterrupt" in stderr, stderr
    assert process.returncode in (1, -signal.SIGINT)
    assert elapsed < 2.0
    state = endpoint.wait_state("pipelines", 0)
    assert (state["pipelines"], state["pipelines_running"], state["pools"]) == (0, 0, 0), state


def test_ctrl_c_in_process_leaves_the_pool_usable(pool, endpoint):
    handle = pool.start("Write-Output started; Invoke-Stall")
    assert next(handle).value == "started"
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        for _ in handle:
            pass
    assert time.monotonic() - t0 < 1.5
    timer.join()
    assert endpoint.wait_state("pipelines_running", 0)["pipelines_running"] == 0
    assert pool.run_ps("Write-Output again").output == ["again"]


FORK_SCRIPT = textwrap.dedent(
    """
    import os, sys, psremote
    client = psremote.Client(url=os.environ["PSREMOTE_URL"], username=os.environ["PSREMOTE_USER"], auth="ntlm", trusted_hosts=os.environ["PSREMOTE_TRUSTED_HOSTS"])
    assert client.run_ps("Write-Output parent").output == ["parent"]
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            client.run_ps("Write-Output child")
        except psremote.ClosedError as e:
            print("child:", type(e).__name__, e, flush=True)
            code = 0 if "fork" in str(e) else 2
        except BaseException as e:
            print("child other:", type(e).__name__, e, flush=True)
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print("child exit", os.waitstatus_to_exitcode(status), flush=True)
    # The parent's client is unaffected.
    print("parent", client.run_ps("Write-Output still").output, flush=True)
    client.close()
    """
)


def test_fork_gives_a_clear_error(child_env):
    done = subprocess.run([sys.executable, "-c", FORK_SCRIPT], env=child_env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "child: ClosedError" in done.stdout and "os.fork()" in done.stdout
    assert "child exit 0" in done.stdout
    assert "parent ['still']" in done.stdout
