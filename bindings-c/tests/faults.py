"""Fault injection through psremote's C API (issue 12 item 5).

``python bindings-c/tests/faults.py BINARY [BINARY...] [--only ID ...]``

For each case of ``psremote_testserver.fault_cases`` (the Python suite's cases) and each BINARY
(bindings-c/tests/test_faults.c built as C, and as C++), starts the endpoint with the case's
fault injected, runs ``BINARY OP EXPECTED MESSAGE URL`` (which makes the C calls, checks the
result code, the error message and the peak RSS growth), then checks the endpoint's
GET /_control/state: no shell, pool, pipeline or command left, and, for the immediate
OperationTimeout cases, at most the allowed number of Receives answered at once. Then stops the
endpoint.

Prints the binary's FAIL lines, one ``  FAIL [case] ...`` line per failed endpoint check, and
last ``N passed, M failed`` summed over the binaries' checks and the endpoint checks; a binary
that crashes or hangs (killed after LIMIT seconds) counts as one more failure. Exit status 0
only when nothing failed. Runs with the virtualenv's python (psremote_testserver installed).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

from psremote_testserver.fault_cases import CASES, Case
from psremote_testserver.testing import DOMAIN, PASSWORD, USER, launch

#: Hang guard for one binary run (every case fails or finishes within seconds).
LIMIT = 90.0
COUNTERS = ("commands", "pipelines", "pools", "shells")
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.M)
#: Cases the C API cannot pass yet, with the reason (printed on every run); none at present.
NOT_IN_C: Dict[str, str] = {}


def run_case(binary: str, case: Case, workdir: Path, users: Path) -> Tuple[int, int]:
    endpoint = launch(users, Path(tempfile.mkdtemp(dir=workdir)), *case.args)
    passed = failed = 0
    try:
        try:
            done = subprocess.run(
                [binary, case.op, case.c_result + ("|PSR_RESULT_OK" if case.retried else ""), case.message, endpoint.url]
                + ([str(int(case.timeout * 1000))] if case.timeout is not None else []),
                capture_output=True,
                text=True,
                timeout=LIMIT,
            )
            out = done.stdout
            found = SUMMARY.findall(out)
            if found:
                passed, failed = int(found[-1][0]), int(found[-1][1])
            if done.returncode != 0 and failed == 0:
                failed += 1
                out += f"  FAIL [{case.id}] exit status {done.returncode}\n{done.stderr[-2000:]}"
        except subprocess.TimeoutExpired:
            failed += 1
            out = f"  FAIL [{case.id}] no answer within {LIMIT:.0f} s\n"
        for line in out.splitlines():
            if line.startswith("  FAIL") or line.startswith("       "):
                print(f"{line}  <{case.id}>" if line.startswith("  FAIL") else line)
        for counter in COUNTERS:
            state = endpoint.wait_state(counter, 0, timeout=30)
            if state[counter] == 0:
                passed += 1
            else:
                failed += 1
                print(f"  FAIL [{case.id}] {state[counter]} {counter} left on the endpoint")
        if case.max_injected is not None:
            injected = endpoint.state()["timeouts_injected"]
            if 0 < injected <= case.max_injected:
                passed += 1
            else:
                failed += 1
                print(f"  FAIL [{case.id}] {injected} Receives answered at once (at most {case.max_injected})")
    finally:
        endpoint.stop()
    return passed, failed


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--only", nargs="*", default=None, help="case ids to run")
    args = parser.parse_args(argv)
    total_passed = total_failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        users = workdir / "users"
        users.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n")
        for binary in args.binaries:
            for case in CASES:
                if args.only and case.id not in args.only:
                    continue
                if case.id in NOT_IN_C:
                    print(f"not run {Path(binary).name} {case.id}: {NOT_IN_C[case.id]}")
                    continue
                started = time.monotonic()
                passed, failed = run_case(binary, case, workdir, users)
                print(f"{'ok  ' if failed == 0 else 'FAIL'} {Path(binary).name} {case.id} ({time.monotonic() - started:.1f} s)")
                total_passed += passed
                total_failed += failed
    print(f"{total_passed} passed, {total_failed} failed")
    return 0 if total_failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
