"""Interpreter exit after asyncio use: no crash.

A runtime thread completing an asyncio future releases the GIL inside ``call_soon_threadsafe``;
if the program returns from ``asyncio.run`` meanwhile, that thread used to take the GIL back
during ``Py_FinalizeEx`` and the process died (SIGSEGV, or "PyGILState_Release: thread state
must be current"), in about one run of six. The binding's atexit hook now stops runtime threads
from attaching before finalization begins (bindings-python/src/shutdown.rs).

Each program runs in its own interpreter against the loopback endpoint, many times, a few at a
time: a crash is a nonzero exit status (a signal is a negative one) or CPython's fatal error text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Tuple

PROGRAM = r"""
import asyncio, json, logging, sys
from psremote import AsyncClient

kwargs = json.loads(sys.argv[1])
mode = sys.argv[2]
delay = float(sys.argv[3])
if mode.endswith("-logged"):
    # The log forwarder thread attaches too: keep it busy up to the exit.
    logging.basicConfig(stream=sys.stdout)
    logging.getLogger("psremote").setLevel(logging.DEBUG)


async def main():
    client = AsyncClient(**kwargs)
    if mode.startswith("run_cmd"):
        result = await client.run_cmd("echo", ["shutdown"])
        assert result.stdout.strip() == b"shutdown", result
    elif mode.startswith("run_ps"):
        result = await client.run_ps("Write-Output shutdown")
        assert result.output == ["shutdown"], result.output
    else:
        # Exit with a pipeline and a command still running; they end around the exit.
        ms = int(delay * 1000)
        asyncio.ensure_future(client.run_ps(f"Start-Sleep -Milliseconds {ms}; Write-Output late"))
        asyncio.ensure_future(client.run_cmd("sleep", [str(delay)]))
        await asyncio.sleep(delay)


asyncio.run(main())
"""

MODES = ["run_cmd", "run_ps", "in_flight", "run_ps-logged"]
RUNS = 200
PARALLEL = 4
HANG_GUARD = 60.0


def _run(args: Tuple[str, str, str]) -> Tuple[str, int, str]:
    kwargs, mode, delay = args
    p = subprocess.run(
        [sys.executable, "-c", PROGRAM, kwargs, mode, delay],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=HANG_GUARD,
    )
    return mode, p.returncode, p.stderr.decode(errors="replace")


def test_asyncio_programs_exit_cleanly(start_endpoint, credentials):
    # An endpoint of its own: the in-flight runs exit without closing what they opened, which
    # must not show up in the shared endpoint's state that other tests count.
    own = start_endpoint()
    kwargs = json.dumps({**credentials, "url": own.url})
    # The in-flight runs end their operations at different moments around the exit.
    jobs = [(kwargs, MODES[i % len(MODES)], f"{0.15 + (i % 7) * 0.05:.2f}") for i in range(RUNS)]
    crashes: Dict[str, List[str]] = {}
    with ThreadPoolExecutor(PARALLEL) as pool:
        for mode, code, stderr in pool.map(_run, jobs):
            if code != 0 or "thread state" in stderr or "Fatal Python error" in stderr:
                crashes.setdefault(mode, []).append(f"exit {code}: {stderr[-400:]}")
    summary = {mode: len(c) for mode, c in crashes.items()}
    assert not crashes, f"{sum(summary.values())} of {RUNS} runs crashed {summary}; first: {next(iter(crashes.values()))[0]}"
