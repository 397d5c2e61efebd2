"""Deadlines, the run_cmd output limit and cancellation that cleans up (issue 12).

A call past its ``timeout`` raises OperationTimeoutError, a command past ``max_output`` raises
OutputTooLargeError, and a cancelled asyncio call (or a client closed while calls are in flight)
releases its remote work: the endpoint's counts of shells, pools, pipelines and commands go back
to zero, it sees the Signal and/or Delete, and no Receive arrives afterwards. Polls use generous
guards; no test asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Dict, Tuple

import pytest

import psremote
from psremote import ClosedError, ConfigurationError, OperationTimeoutError, OutputTooLargeError

from conftest import PASSWORD, TRUSTED, USER

COUNTERS = ("commands", "pipelines", "pools", "shells")
#: The client's OperationTimeout: a held Receive is answered within it.
OPERATION_TIMEOUT = 2.0
#: How long a call is let run before it is cut short (the work never finishes by then).
SHORT = 2.0


def options(endpoint) -> Dict[str, Any]:
    return dict(
        url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts=TRUSTED,
        operation_timeout=OPERATION_TIMEOUT,
    )


def actions(endpoint) -> Dict[str, int]:
    return dict(endpoint.state().get("actions", {}))


def assert_nothing_left(endpoint) -> Dict[str, Any]:
    for counter in COUNTERS:
        state = endpoint.wait_state(counter, 0, timeout=30)
        assert state[counter] == 0, (counter, state)
    return state


def assert_released(endpoint, *, signal: bool = False) -> None:
    """Nothing left; the endpoint saw the Delete (and the Signal); and nothing polls it any more:
    its count of Receives stays the same over several OperationTimeouts."""
    assert_nothing_left(endpoint)
    seen = actions(endpoint)
    assert seen.get("Delete", 0) >= 1, seen
    if signal:
        assert seen.get("Signal", 0) >= 1, seen
    time.sleep(OPERATION_TIMEOUT + 1)
    before = actions(endpoint).get("Receive", 0)
    time.sleep(3 * OPERATION_TIMEOUT)
    assert actions(endpoint).get("Receive", 0) == before, actions(endpoint)


@pytest.fixture
def fresh(start_endpoint):
    """An endpoint of the test's own, so its counters are the test's alone."""
    return start_endpoint()


@pytest.fixture
def stalled(start_endpoint):
    """An endpoint that holds every Receive for its OperationTimeout and answers nothing."""
    return start_endpoint("--misbehave", "stalled-receives")


# --- deadlines, blocking ------------------------------------------------------------------------


def test_run_cmd_timeout_releases_the_command_and_shell(fresh):
    with psremote.Client(**options(fresh)) as client:
        with pytest.raises(OperationTimeoutError, match="did not finish within 2 s") as raised:
            client.run_cmd("sleep", ["60"], timeout=SHORT)
        assert isinstance(raised.value, TimeoutError)
        assert client.run_cmd("echo", ["in", "time"], timeout=60).stdout == b"in time\n"
        assert_released(fresh, signal=True)


def test_run_ps_timeout_stops_the_pipeline_and_keeps_the_pool(fresh):
    with psremote.Client(**options(fresh)) as client:
        with pytest.raises(OperationTimeoutError, match="run_ps did not finish within 2 s"):
            client.run_ps("Start-Sleep -Seconds 60", timeout=SHORT)
        assert fresh.wait_state("pipelines", 0, timeout=30)["pipelines"] == 0
        assert client.run_ps("Write-Output 7", timeout=60).output == [7]
        with client.runspace_pool() as pool:
            with pytest.raises(OperationTimeoutError, match="the pipeline did not finish"):
                pool.run_ps("Start-Sleep -Seconds 60", timeout=SHORT)
            assert pool.run_ps("Write-Output 8").output == [8]
            pipeline = pool.start("Start-Sleep -Seconds 60")
            with pytest.raises(OperationTimeoutError):
                pipeline.result(timeout=SHORT)
            assert fresh.wait_state("pipelines", 0, timeout=30)["pipelines"] == 0
    assert_released(fresh, signal=True)


def test_a_pool_that_never_opens_fails_at_its_deadline(stalled):
    with psremote.Client(**options(stalled)) as client:
        with pytest.raises(OperationTimeoutError, match="opening a runspace pool"):
            client.runspace_pool(timeout=SHORT)
        with pytest.raises(OperationTimeoutError):
            client.run_ps("Write-Output 1", timeout=SHORT)
        with pytest.raises(OperationTimeoutError):
            client.run_cmd("echo", ["never", "read"], timeout=SHORT)
    assert_released(stalled)


def test_bad_deadlines_and_limits_are_configuration_errors(client):
    for bad in (0, -1, float("nan"), float("inf"), "5", True):
        with pytest.raises(ConfigurationError, match="timeout"):
            client.run_cmd("echo", timeout=bad)
        with pytest.raises(ConfigurationError, match="timeout"):
            client.run_ps("1", timeout=bad)
        with pytest.raises(ConfigurationError, match="timeout"):
            client.runspace_pool(timeout=bad)
    for bad_size in (0, -5, 1.5, "10", True):
        with pytest.raises(ConfigurationError, match="max_output"):
            client.run_cmd("echo", max_output=bad_size)


# --- the output limit ---------------------------------------------------------------------------


def test_run_cmd_keeps_at_most_max_output_bytes(fresh):
    with psremote.Client(**options(fresh)) as client:
        both = "head -c 60000 /dev/zero; head -c 60000 /dev/zero 1>&2; sleep 60"
        with pytest.raises(OutputTooLargeError, match="more than 100000 bytes") as raised:
            client.run_cmd(both, max_output=100_000)
        assert raised.value.output_limit == 100_000
        assert client.run_cmd("head -c 100000 /dev/zero", max_output=100_000).stdout == bytes(100_000)
        assert len(client.run_cmd("head -c 300000 /dev/zero", max_output=None).stdout) == 300_000
        # The default keeps 64 MiB; a cmd shell's streaming output has no limit.
        assert len(client.run_cmd("head -c 300000 /dev/zero").stdout) == 300_000
        assert psremote._limits.DEFAULT_MAX_OUTPUT == 64 * 1024 * 1024
        assert_nothing_left(fresh)


def test_async_run_cmd_keeps_at_most_max_output_bytes(fresh):
    async def main() -> None:
        async with psremote.AsyncClient(**options(fresh)) as client:
            with pytest.raises(OutputTooLargeError):
                await client.run_cmd("head -c 200000 /dev/zero; sleep 60", max_output=1000)
            result = await client.run_cmd("head -c 200000 /dev/zero", max_output=None)
            assert len(result.stdout) == 200_000

    asyncio.run(main())
    assert_nothing_left(fresh)


# --- deadlines, asyncio -------------------------------------------------------------------------


def test_async_deadlines(fresh, start_endpoint):
    stalled = start_endpoint("--misbehave", "stalled-receives")

    async def main() -> None:
        async with psremote.AsyncClient(**options(fresh)) as client:
            with pytest.raises(OperationTimeoutError):
                await client.run_cmd("sleep", ["60"], timeout=SHORT)
            with pytest.raises(OperationTimeoutError, match="run_ps did not finish"):
                await client.run_ps("Start-Sleep -Seconds 60", timeout=SHORT)
            assert (await client.run_ps("Write-Output 3", timeout=60)).output == [3]
            async with client.runspace_pool() as pool:
                with pytest.raises(OperationTimeoutError, match="the pipeline did not finish"):
                    await pool.run_ps("Start-Sleep -Seconds 60", timeout=SHORT)
        async with psremote.AsyncClient(**options(stalled)) as client:
            with pytest.raises(OperationTimeoutError, match="opening a runspace pool"):
                await client.runspace_pool(timeout=SHORT)

    asyncio.run(main())
    assert_released(fresh, signal=True)
    assert_released(stalled)


# --- cancellation -------------------------------------------------------------------------------


def _cancelled_then_closed(endpoint, call: str) -> Tuple[float, float]:
    """The issue's scenario: ``asyncio.wait_for`` cuts ``call`` short, then the client closes.
    Returns the seconds from the cancellation to close's return, and to the counts at zero."""

    async def main() -> Tuple[float, float]:
        client = psremote.AsyncClient(**options(endpoint))
        await client.connect()
        work = {
            "run_cmd": lambda: client.run_cmd("sleep", ["60"]),
            "run_ps": lambda: client.run_ps("Start-Sleep -Seconds 60"),
            "runspace_pool": lambda: client.runspace_pool(),
        }[call]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(work(), SHORT)
        cancelled = time.monotonic()
        await client.close()
        closed = time.monotonic() - cancelled
        assert client._native is None
        return cancelled, closed

    cancelled, closed = asyncio.run(main())
    assert_nothing_left(endpoint)
    zero = time.monotonic() - cancelled
    return closed, zero


def test_cancelled_run_cmd_is_released_by_close(fresh):
    closed, zero = _cancelled_then_closed(fresh, "run_cmd")
    print(f"run_cmd: close returned {closed:.2f} s after the cancellation, counts at zero by {zero:.2f} s")
    assert_released(fresh, signal=True)


def test_cancelled_run_ps_is_released_by_close(fresh):
    closed, zero = _cancelled_then_closed(fresh, "run_ps")
    print(f"run_ps: close returned {closed:.2f} s after the cancellation, counts at zero by {zero:.2f} s")
    assert_released(fresh, signal=True)


def test_cancelled_pool_open_is_released_by_close(stalled):
    closed, zero = _cancelled_then_closed(stalled, "runspace_pool")
    print(f"runspace_pool: close returned {closed:.2f} s after the cancellation, counts at zero by {zero:.2f} s")
    assert_released(stalled)


def test_cancellation_alone_releases_run_cmd(fresh):
    """Without a close: the cancelled task's native operation ends and its shell is deleted."""

    async def main() -> None:
        async with psremote.AsyncClient(**options(fresh)) as client:
            task = asyncio.ensure_future(client.run_cmd("sleep", ["60"]))
            assert await _wait_until(lambda: fresh.state()["commands"] == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await _wait_until(lambda: client._native.operations_in_flight == 0)
            assert await _wait_until(lambda: all(fresh.state()[c] == 0 for c in COUNTERS))
            # The client goes on working.
            assert (await client.run_cmd("echo", ["after"])).stdout == b"after\n"

    asyncio.run(main())
    assert_released(fresh, signal=True)


def test_close_ends_a_blocking_call_in_another_thread(fresh):
    client = psremote.Client(**options(fresh))
    client.connect()
    failure: Dict[str, BaseException] = {}

    def run() -> None:
        try:
            client.run_cmd("sleep", ["60"])
        except BaseException as e:  # noqa: BLE001 - what the thread got is checked below
            failure["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    assert fresh.wait_state("commands", 1, timeout=30)["commands"] == 1
    client.close()
    thread.join(60)
    assert not thread.is_alive()
    assert isinstance(failure.get("error"), ClosedError), failure
    assert_released(fresh, signal=True)


async def _wait_until(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# --- the CLI ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "-c", "Start-Sleep -Seconds 60", "--timeout", "2"],
        ["run", "--json", "-c", "Start-Sleep -Seconds 60", "--timeout", "2"],
        ["cmd", "--timeout", "2", "sleep", "60"],
    ],
    ids=["run", "run-json", "cmd"],
)
def test_cli_timeout(fresh, child_env, argv):
    import subprocess
    import sys

    env = dict(child_env)
    done = subprocess.run(
        [sys.executable, "-m", "psremote", argv[0], "--url", fresh.url, "--auth", "ntlm", "--operation-timeout", "2",
         *argv[1:]],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0, done
    assert "OperationTimeoutError" in done.stderr and "did not finish within 2" in done.stderr, done.stderr
    assert_nothing_left(fresh)
