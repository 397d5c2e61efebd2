"""Fault injection through the public Python API (issue 12 item 5): for each class of broken or
hostile server behaviour (the endpoint's ``--misbehave`` modes and ``--drop-connection``), a
command or pipeline raises the right exception (or, where the fault is harmless, returns the
right result), in bounded memory, without hanging, and leaves no shell, pool, pipeline or
command on the endpoint.

Each case runs in a child process, so its peak RSS (VmHWM) is that exchange's alone. Nothing here
measures time beyond generous hang guards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import pytest

from conftest import PASSWORD, USER
from psremote_testserver.fault_cases import CASES, Case

COUNTERS = ("commands", "pipelines", "pools", "shells")
#: Peak RSS growth a faulty reply may cost the client (generous: the replies are bounded at
#: 228736 bytes; an unbounded client reached hundreds of MiB on the oversized modes).
MAX_GROWTH_KB = 64 * 1024
#: Hang guard for one child (every case fails or finishes within seconds).
HANG_GUARD = 90

CHILD = textwrap.dedent(
    """
    import json, sys
    import psremote

    def peak_kb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

    url, user, password, op, timeout = sys.argv[1:6]
    timeout = float(timeout) if timeout != "-" else None
    kwargs = {"timeout": timeout} if timeout is not None else {}
    with psremote.Client(url=url, username=user, password=password, auth="ntlm",
                         trusted_hosts="127.0.0.1", operation_timeout=2) as client:
        before = peak_kb()
        try:
            if op == "cmd":
                result = client.run_cmd("echo", ["hi"], **kwargs)
                value = result.stdout.decode()
            else:
                result = client.run_ps("Write-Output hello", **kwargs)
                value = [str(v) for v in result.output]
            outcome = {"error": None, "value": value}
        except psremote.PSRemoteError as exc:
            outcome = {"error": type(exc).__name__, "message": str(exc)}
        outcome["growth_kb"] = peak_kb() - before
    print(json.dumps(outcome))
    """
)


def run_case(endpoint, case: Case) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, endpoint.url, USER, PASSWORD, case.op, str(case.timeout) if case.timeout else "-"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(HANG_GUARD + 30)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fault(start_endpoint, case: Case):
    endpoint = start_endpoint(*case.args)
    outcome = run_case(endpoint, case)
    if case.error is None or (case.retried and outcome["error"] is None):
        assert outcome["value"] in ("hi\n", ["hello"]), outcome
    else:
        assert outcome["error"] == case.error, outcome
        assert case.message in outcome["message"], outcome
    assert outcome["growth_kb"] < MAX_GROWTH_KB, outcome
    for counter in COUNTERS:
        state = endpoint.wait_state(counter, 0, timeout=30)
        assert state[counter] == 0, (counter, state)
    if case.max_injected is not None:
        injected = endpoint.state()["timeouts_injected"]
        # Without the back-off, about 500 a second: well over a thousand.
        assert 0 < injected <= case.max_injected, endpoint.state()
