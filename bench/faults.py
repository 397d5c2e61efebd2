"""The fault-injection table of issue 12: each case of ``psremote_testserver.fault_cases`` run
once through the Python API against the loopback endpoint with that fault injected, printed as a
markdown table: the error a user gets, the client process's peak RSS (VmHWM) and the time from
the call to its failure (or result).

    .venv/bin/python bench/faults.py [--only ID ...]

A measurement, not a test: the suites (bindings-python/tests/test_fault_injection.py,
bindings-c/tests/faults.py) assert the outcomes without timing anything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from psremote_testserver.fault_cases import CASES
from psremote_testserver.testing import DOMAIN, PASSWORD, USER, launch

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import psremote

    def peak_kb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

    url, op, user, password, timeout = sys.argv[1:6]
    kwargs = {"timeout": float(timeout)} if timeout != "-" else {}
    with psremote.Client(url=url, username=user, password=password, auth="ntlm",
                         trusted_hosts="127.0.0.1", operation_timeout=2) as client:
        started = time.monotonic()
        try:
            if op == "cmd":
                client.run_cmd("echo", ["hi"], **kwargs)
            else:
                client.run_ps("Write-Output hello", **kwargs)
            outcome = {"error": None, "message": ""}
        except psremote.PSRemoteError as exc:
            outcome = {"error": type(exc).__name__, "message": str(exc)}
        outcome["seconds"] = time.monotonic() - started
    outcome["peak_kb"] = peak_kb()
    print(json.dumps(outcome))
    """
)


def short(message: str, limit: int = 90) -> str:
    message = message.replace("|", "\\|").replace("\n", " ")
    return message if len(message) <= limit else message[: limit - 1] + "…"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        users = Path(tmp) / "users"
        users.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n")
        for case in CASES:
            if args.only and case.id not in args.only:
                continue
            endpoint = launch(users, Path(tempfile.mkdtemp(dir=tmp)), *case.args)
            try:
                done = subprocess.run(
                    [sys.executable, "-c", CHILD, endpoint.url, case.op, USER, PASSWORD, str(case.timeout or "-")], capture_output=True, text=True, timeout=120
                )
                outcome = json.loads(done.stdout.strip().splitlines()[-1])
                left = sum(endpoint.wait_state(k, 0)[k] for k in ("shells", "pools", "pipelines", "commands"))
            finally:
                endpoint.stop()
            error = f"`{outcome['error']}`: {short(outcome['message'])}" if outcome["error"] else "none: right result"
            rows.append(
                f"| {case.fault_class} | `{' '.join(case.args[1:]) if case.args[0] == '--misbehave' else ' '.join(case.args)}` "
                f"| {case.op} | {error} | {outcome['peak_kb'] / 1024:.0f} MiB | {outcome['seconds']:.2f} s | {left} |"
            )
    print("| class | fault | call | error users get | peak RSS | time to fail | left on server |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
