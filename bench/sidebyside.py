#!/usr/bin/env python3
"""psremote side by side with pypsrp 0.9.1 (and pywinrm 0.5.0 for cmd) against one loopback endpoint.

``make bench`` runs it in full, ``make bench-smoke`` (part of ``make test``) in a tiny version that
only checks that every contender produced the right output and that the proxy counted its traffic.
Nothing here asserts a time.

Every contender reaches the endpoint through a delay proxy (bench/delayproxy.py, a process of its
own) that adds a round trip of ``--rtt-ms`` (half each way; default 0 then 20 ms, one table each)
and counts TCP connections, HTTP requests, NTLM logons, 401 challenges and bytes each way; the
worker reads those counters around its measured window, as it reads the endpoint's.

The driver (this file without ``--worker``) runs every scenario as a series of rounds; in each
round every contender runs once, in its own subprocess (``--worker SCENARIO CONTENDER``), one after
the other (A B A B ...). A worker connects, warms up, measures one window and prints one JSON line:
the scenario's numbers, its own CPU seconds and peak resident memory (VmHWM), and the endpoint's
CPU seconds (utime + stime of the endpoint process from ``/proc/PID/stat``) and WS-Man requests
(``/_control/state``) inside that window. The endpoint is started fresh for each scenario; the
table reports medians over the rounds and psremote/incumbent ratios.

Contenders: psremote's Python API (``PYTHONPATH=--psremote-site``: ``make bench`` points it at a
release build, the smoke run uses the debug build in the virtualenv), pypsrp 0.9.1, pywinrm 0.5.0
(cmd only); for decoding also psremote's core (the Rust ``clixml-decode --json``) and psrpcore.
Everyone connects with NTLM and message encryption over HTTP (psremote with ``trusted_hosts``).

Options worth knowing: ``--only latency,output`` runs some scenarios, ``--contenders psremote``
some contenders; ``--rounds N``; ``--rtt-ms 0,20`` the round trips (one table each); ``--quick``
mid-sized inputs for development (a minute or two per RTT); ``--trace DIR`` writes, per RTT and
scenario, every HTTP request each contender made in its measured window (connection, NTLM message,
WS-Man action from the endpoint's log, status, sizes) to ``DIR/RTTms-SCENARIO.log``;
``--profile DIR`` runs Python workers under cProfile and writes ``DIR/SCENARIO-CONTENDER.txt``;
``--endpoint-profile DIR`` runs the endpoint under cProfile (every thread) and writes
``DIR/endpoint-SCENARIO.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD, DOMAIN = "user", "Passw0rd!", "DOMAIN"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Never let a proxy from the environment intercept loopback traffic (requests honours it).
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

#: The short script of the latency and fan-out scenarios (one output object).
SHORT_SCRIPT = "Write-Output 'hello'"
SHORT_OUTPUT = ["hello"]

FULL: Dict[str, Any] = dict(
    rounds=3,
    decode_bytes=100_000_000,  # each decoder reads the input repeatedly up to this many bytes ...
    decode_budget=8.0,  # ... or for this many seconds, whichever comes first (at least one pass)
    decode_rows=10_000,  # objects of 20 properties in the synthetic message
    latency_calls=200,
    latency_warmup=20,
    output_objects=100_000,
    output_properties=20,
    input_bytes=100_000_000,
    input_object_chars=10_000,
    cmd_bytes=50_000_000,
    setup_reps=15,
    fanout_pools=200,
    file_bytes=100_000_000,
)
#: Mid-sized inputs for development: every scenario in about a minute per RTT.
QUICK: Dict[str, Any] = dict(
    FULL,
    rounds=1,
    decode_bytes=10_000_000,
    decode_budget=2.0,
    latency_calls=30,
    latency_warmup=5,
    output_objects=10_000,
    input_bytes=10_000_000,
    cmd_bytes=5_000_000,
    setup_reps=5,
    fanout_pools=50,
    file_bytes=10_000_000,
)
SMOKE: Dict[str, Any] = dict(
    rounds=1,
    decode_bytes=1_000_000,
    decode_budget=0.5,
    decode_rows=200,
    latency_calls=5,
    latency_warmup=1,
    output_objects=200,
    output_properties=20,
    input_bytes=1_000_000,
    input_object_chars=10_000,
    cmd_bytes=1_000_000,
    setup_reps=2,
    fanout_pools=10,
    file_bytes=1_000_000,
)

SCENARIOS: Dict[str, List[str]] = {
    "decode": ["psremote-core", "psremote", "pypsrp", "psrpcore"],
    "latency": ["psremote", "pypsrp"],
    "output": ["psremote", "pypsrp"],
    "input": ["psremote", "pypsrp"],
    "cmd": ["psremote", "pywinrm"],
    "setup": ["psremote", "pypsrp"],
    "fanout": ["psremote", "pypsrp"],
    "copy": ["psremote", "pypsrp"],
    "fetch": ["psremote", "pypsrp"],
}
#: What one operation of a scenario is, for the per-operation network columns: the number of
#: operations in the result under this key (the whole window is one operation where absent).
OPERATIONS: Dict[str, str] = {"latency": "calls", "setup": "reps", "fanout": "pools"}
#: The proxy's counters a worker reports for its window (delayproxy.COUNTERS).
NET_COUNTERS = ("connections", "requests", "bytes_up", "bytes_down", "ntlm_logons", "challenges")


# =============================================================================================
# Measurement helpers (used by workers)
# =============================================================================================


def process_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> float:
    """CPU seconds every process on the machine has used so far (all cores, from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """VmHWM of this process: its peak resident set, MB (10^6 bytes)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    return 0.0


def current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    return 0.0


class Endpoint:
    """What a worker knows of the endpoint: the URL it connects to (the delay proxy's), the endpoint's
    own URL and process id, and the proxy's control port and process id."""

    def __init__(self, url: str, direct_url: str, pid: int, proxy: str, trace: bool) -> None:
        self.url = url
        self.pid = pid
        self.port = int(url.split(":")[2].split("/")[0])
        self.base = direct_url.rsplit("/", 1)[0]
        self.proxy: Optional[Any] = None
        self.proxy_pid = 0
        self.trace = trace
        if proxy:
            from delayproxy import Control

            control_port, pid_text = proxy.split(":")
            self.proxy, self.proxy_pid = Control(int(control_port)), int(pid_text)

    def requests(self) -> int:
        with urllib.request.urlopen(self.base + "/_control/state", timeout=10) as response:
            return int(json.load(response)["requests"])

    def net(self) -> Dict[str, Any]:
        return self.proxy.ask(op="snapshot") if self.proxy else {}

    def mark(self, label: str) -> None:
        """With ``--trace``: a line in the proxy's request log before each measured operation."""
        if self.trace and self.proxy:
            self.proxy.ask(op="mark", label=label)


class Window:
    """The measured part of a worker: wall time, own CPU, endpoint CPU and WS-Man requests."""

    def __init__(self, endpoint: Optional[Endpoint]) -> None:
        self.endpoint = endpoint
        self.result: Dict[str, Any] = {}

    def __enter__(self) -> "Window":
        self._requests = self.endpoint.requests() if self.endpoint else 0
        self._net = self.endpoint.net() if self.endpoint else {}
        self._proxy_cpu = process_cpu(self.endpoint.proxy_pid) if self.endpoint and self.endpoint.proxy_pid else 0.0
        self._server = process_cpu(self.endpoint.pid) if self.endpoint else 0.0
        self._cpu = own_cpu()
        self._children = children_cpu()
        self._busy = machine_busy()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        seconds = time.perf_counter() - self._start
        busy = machine_busy() - self._busy
        self.result = {"seconds": seconds, "client_cpu": own_cpu() - self._cpu}
        ours = self.result["client_cpu"] + children_cpu() - self._children
        if self.endpoint:
            self.result["endpoint_cpu"] = process_cpu(self.endpoint.pid) - self._server
            self.result["requests"] = self.endpoint.requests() - self._requests
            ours += self.result["endpoint_cpu"]
            if self._net:
                net = self.endpoint.net()
                self.result["net"] = {k: net[k] - self._net[k] for k in NET_COUNTERS}
                self.result["net"]["log"] = [self._net["log_length"], net["log_length"]]
                self.result["proxy_cpu"] = process_cpu(self.endpoint.proxy_pid) - self._proxy_cpu
                ours += self.result["proxy_cpu"]
        # Everything else the machine did meanwhile (other users, the commands the endpoint ran):
        # a quiet machine shows a few hundredths of a second.
        self.result["other_cpu"] = max(busy - ours, 0.0)


class CheckFailed(Exception):
    """A contender produced the wrong output."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


# =============================================================================================
# Contenders' connections
# =============================================================================================


def psremote_options(ep: Endpoint) -> Dict[str, Any]:
    return dict(
        url=ep.url, username=USER, password=PASSWORD, auth="ntlm", encryption="always", trusted_hosts=["127.0.0.1"]
    )


def pypsrp_wsman(ep: Endpoint) -> Any:
    from pypsrp.wsman import WSMan

    return WSMan(
        "127.0.0.1",
        port=ep.port,
        path="wsman",
        ssl=False,
        auth="ntlm",
        username=USER,
        password=PASSWORD,
        encryption="always",
        cert_validation=False,
    )


def pypsrp_script(pool: Any, script: str, input: Any = None) -> List[Any]:
    from pypsrp.powershell import PowerShell

    ps = PowerShell(pool)
    ps.add_script(script)
    output = ps.invoke(input=input)
    check(not ps.had_errors, f"pypsrp: {script!r} had errors: {ps.streams.error}")
    return output


def pypsrp_props(obj: Any) -> Dict[str, Any]:
    return {**obj.adapted_properties, **obj.extended_properties}


# =============================================================================================
# Scenarios (worker side): each returns the JSON result of one measured run
# =============================================================================================


def read_corpus(dump: Path) -> List[bytes]:
    data = (dump / "corpus.bin").read_bytes()
    messages, at = [], 0
    while at < len(data):
        (length,) = struct.unpack_from("<I", data, at)
        messages.append(data[at + 4 : at + 4 + length])
        at += 4 + length
    return messages


def _strip_bom(data: bytes) -> bytes:
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def decoder(contender: str) -> Callable[[bytes], Any]:
    """CLIXML bytes (one message's data) -> the contender's Python value."""
    if contender == "psremote":
        from psremote._native import clixml_loads

        return clixml_loads
    if contender == "pypsrp":
        from pypsrp.serializer import Serializer

        # What pypsrp's Message.unpack does with a message's data: strip the BOM, decode, deserialize.
        return lambda data: Serializer().deserialize(_strip_bom(data).decode("utf-8"))
    if contender == "psrpcore":
        import xml.etree.ElementTree as ET

        import psrpcore
        from psrpcore.types import deserialize

        cipher = psrpcore.PSRemotingCrypto()
        return lambda data: deserialize(ET.fromstring(_strip_bom(data)), cipher)
    raise ValueError(contender)


def run_decode(contender: str, p: Dict[str, Any], ep: Optional[Endpoint]) -> Dict[str, Any]:
    dump = Path(p["dump_dir"])
    inputs = {"corpus": read_corpus(dump), "synthetic": [(dump / "synthetic.xml").read_bytes()]}
    decode = decoder(contender)
    out: Dict[str, Any] = {}
    for name, messages in inputs.items():
        size = sum(map(len, messages))
        for m in messages:  # warm-up, and every message must decode
            value = decode(m)
        if name == "synthetic":
            check(len(value) == p["decode_rows"], f"{contender}: {len(value)} synthetic objects, not {p['decode_rows']}")
        del value
        decoded, values, passes = 0, 0, 0
        with Window(None) as w:
            start = time.perf_counter()
            while decoded < p["decode_bytes"] and (passes == 0 or time.perf_counter() - start < p["decode_budget"]):
                for m in messages:
                    value = decode(m)
                    values += len(value) if name == "synthetic" else 1
                    del value
                decoded += size
                passes += 1
        out[name] = {**w.result, "bytes": decoded, "values": values}
    return out


def run_latency(contender: str, p: Dict[str, Any], ep: Endpoint) -> Dict[str, Any]:
    calls: List[float] = []
    if contender == "psremote":
        import psremote

        with psremote.Client(**psremote_options(ep)) as client, client.runspace_pool() as pool:
            for _ in range(p["latency_warmup"]):
                pool.run_ps(SHORT_SCRIPT)
            with Window(ep) as w:
                for _ in range(p["latency_calls"]):
                    ep.mark("invocation")
                    t = time.perf_counter()
                    result = pool.run_ps(SHORT_SCRIPT)
                    calls.append(time.perf_counter() - t)
                    check(list(result.output) == SHORT_OUTPUT, f"psremote latency output {result.output!r}")
    else:
        from pypsrp.powershell import RunspacePool

        with pypsrp_wsman(ep) as wsman, RunspacePool(wsman) as pool:
            for _ in range(p["latency_warmup"]):
                pypsrp_script(pool, SHORT_SCRIPT)
            with Window(ep) as w:
                for _ in range(p["latency_calls"]):
                    ep.mark("invocation")
                    t = time.perf_counter()
                    output = pypsrp_script(pool, SHORT_SCRIPT)
                    calls.append(time.perf_counter() - t)
                    check(output == SHORT_OUTPUT, f"pypsrp latency output {output!r}")
    return {**w.result, "calls": len(calls), "median_ms": statistics.median(calls) * 1000}


def run_output(contender: str, p: Dict[str, Any], ep: Endpoint) -> Dict[str, Any]:
    n, props = p["output_objects"], p["output_properties"]
    script = f"New-TestObject -Count {n} -Properties {props}"
    if contender == "psremote":
        import psremote

        with psremote.Client(**psremote_options(ep)) as client, client.runspace_pool() as pool:
            pool.run_ps(SHORT_SCRIPT)
            with Window(ep) as w:
                output = pool.run_ps(script).output
            check(len(output) == n, f"psremote: {len(output)} objects, not {n}")
            check(len(output[-1].properties) == props, "psremote: wrong property count")
            del output
    else:
        from pypsrp.powershell import RunspacePool

        with pypsrp_wsman(ep) as wsman, RunspacePool(wsman) as pool:
            pypsrp_script(pool, SHORT_SCRIPT)
            with Window(ep) as w:
                output = pypsrp_script(pool, script)
            check(len(output) == n, f"pypsrp: {len(output)} objects, not {n}")
            check(len(pypsrp_props(output[-1])) == props, "pypsrp: wrong property count")
            del output
    return {**w.result, "objects": n}


def run_input(contender: str, p: Dict[str, Any], ep: Endpoint) -> Dict[str, Any]:
    chars = p["input_object_chars"]
    count = max(p["input_bytes"] // chars, 1)
    items = [("%07d" % i) + "x" * (chars - 7) for i in range(count)]
    if contender == "psremote":
        import psremote

        with psremote.Client(**psremote_options(ep)) as client, client.runspace_pool() as pool:
            pool.run_ps(SHORT_SCRIPT)
            with Window(ep) as w:
                output = pool.powershell().add_command("Measure-Input").invoke(input=items).output
            measured = (output[0].Count, output[0].Bytes)
    else:
        from pypsrp.powershell import PowerShell, RunspacePool

        with pypsrp_wsman(ep) as wsman, RunspacePool(wsman) as pool:
            pypsrp_script(pool, SHORT_SCRIPT)
            with Window(ep) as w:
                ps = PowerShell(pool)
                ps.add_cmdlet("Measure-Input")
                output = ps.invoke(input=items)  # type: ignore[arg-type]  # pypsrp takes lists too
            check(not ps.had_errors, "pypsrp: Measure-Input had errors")
            props = pypsrp_props(output[0])
            measured = (props["Count"], props["Bytes"])
    check(measured[0] == count, f"{contender}: the endpoint counted {measured[0]} input objects, not {count}")
    check(measured[1] >= count * chars, f"{contender}: the endpoint measured {measured[1]} bytes of CLIXML")
    return {**w.result, "bytes": count * chars, "objects": count, "clixml_bytes": measured[1]}


def cmd_line(n: int) -> str:
    return f"head -c {n} /dev/zero | tr '\\0' x"


def run_cmd(contender: str, p: Dict[str, Any], ep: Endpoint) -> Dict[str, Any]:
    n = p["cmd_bytes"]
    if contender == "psremote":
        import psremote

        with psremote.Client(**psremote_options(ep)) as client:
            client.run_cmd("echo", ["ok"])
            with Window(ep) as w:
                ep.mark("run_cmd")
                result = client.run_cmd(cmd_line(n))
            stdout, code = result.stdout, result.exit_code
    else:
        from winrm.protocol import Protocol

        protocol = Protocol(
            ep.url,
            transport="ntlm",
            username=USER,
            password=PASSWORD,
            message_encryption="always",
            server_cert_validation="ignore",
        )

        def run(command: str) -> Tuple[bytes, bytes, int]:
            shell = protocol.open_shell()
            try:
                command_id = protocol.run_command(shell, command)
                out = protocol.get_command_output(shell, command_id)
                protocol.cleanup_command(shell, command_id)
                return out
            finally:
                protocol.close_shell(shell)

        try:
            run("echo ok")
            with Window(ep) as w:
                ep.mark("run_cmd")
                stdout, _, code = run(cmd_line(n))
        finally:
            protocol.transport.close_session()
    check(code == 0 and len(stdout) == n and stdout[:1] == b"x", f"{contender}: {len(stdout)} bytes, exit {code}")
    return {**w.result, "bytes": n}


def run_setup(contender: str, p: Dict[str, Any], ep: Endpoint) -> Dict[str, Any]:
    if contender == "psremote":
        import psremote

        def once() -> None:
            with psremote.Client(**psremote_options(ep)) as client, client.runspace_pool() as pool:
                check(pool.state == "Opened", f"psremote pool state {pool.state}")
    else:
        from pypsrp.powershell import RunspacePool

        def once() -> None:
            with pypsrp_wsman(ep) as wsman, RunspacePool(wsman) as pool:
                check(pool.state == 2, f"pypsrp pool state {pool.state}")  # RunspacePoolState.OPENED

    once()
    times = []
    with Window(ep) as w:
        for _ in range(p["setup_reps"]):
            ep.mark("set-up")
            t = time.perf_counter()
            once()
            times.append(time.perf_counter() - t)
    return {**w.result, "reps": len(times), "median_ms": statistics.median(times) * 1000}


def run_fanout(contender: str, p: Dict[str, Any], ep: Endpoint) -> Dict[str, Any]:
    n = p["fanout_pools"]
    if contender == "psremote":
        import asyncio

        import psremote

        async def one_pool() -> List[Any]:
            async with psremote.AsyncClient(**psremote_options(ep)) as client:
                async with client.runspace_pool() as pool:
                    return list((await pool.run_ps(SHORT_SCRIPT)).output)

        async def all_at_once() -> List[List[Any]]:
            return await asyncio.gather(*(one_pool() for _ in range(n)))

        baseline = current_rss_mb()
        with Window(ep) as w:
            outputs = asyncio.run(all_at_once())
    else:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        from pypsrp.powershell import RunspacePool

        started = threading.Barrier(n)

        def one_thread(_: int) -> List[Any]:
            started.wait()
            with pypsrp_wsman(ep) as wsman, RunspacePool(wsman) as pool:
                return pypsrp_script(pool, SHORT_SCRIPT)

        baseline = current_rss_mb()
        with Window(ep) as w:
            with ThreadPoolExecutor(max_workers=n) as executor:
                outputs = list(executor.map(one_thread, range(n)))
    check(len(outputs) == n and all(o == SHORT_OUTPUT for o in outputs), f"{contender}: fan-out outputs wrong")
    return {**w.result, "pools": n, "baseline_rss_mb": baseline}


def pypsrp_client(ep: Endpoint) -> Any:
    from pypsrp.client import Client

    return Client(
        "127.0.0.1", port=ep.port, path="wsman", ssl=False, auth="ntlm", username=USER, password=PASSWORD,
        encryption="always", cert_validation=False,
    )


def run_files(direction: str, contender: str, p: Dict[str, Any], ep: Endpoint) -> Dict[str, Any]:
    """copy (local -> server) or fetch (server -> local) of one file of ``file_bytes`` random bytes;
    the endpoint shares this machine's file system, so both ends are files in one directory."""
    n = p["file_bytes"]
    with tempfile.TemporaryDirectory(prefix="psremote-bench-files-") as tmp:
        src, dest, small = Path(tmp) / "src.bin", Path(tmp) / "dest.bin", Path(tmp) / "small.bin"
        with open(src, "wb") as f:
            for at in range(0, n, 1 << 20):
                f.write(os.urandom(min(1 << 20, n - at)))
        small.write_bytes(b"warm-up")
        if contender == "psremote":
            import psremote

            with psremote.Client(**psremote_options(ep)) as client:
                transfer = client.copy if direction == "copy" else client.fetch
                transfer(str(small), str(dest))
                with Window(ep) as w:
                    ep.mark(direction)
                    transfer(str(src), str(dest))
        else:
            client = pypsrp_client(ep)
            try:
                transfer = client.copy if direction == "copy" else client.fetch
                transfer(str(small), str(dest))
                with Window(ep) as w:
                    ep.mark(direction)
                    transfer(str(src), str(dest))
            finally:
                client.wsman.close()
        check(dest.stat().st_size == n and dest.read_bytes() == src.read_bytes(), f"{contender}: {direction} differs")
    return {**w.result, "bytes": n}


def run_copy(contender: str, p: Dict[str, Any], ep: Endpoint) -> Dict[str, Any]:
    return run_files("copy", contender, p, ep)


def run_fetch(contender: str, p: Dict[str, Any], ep: Endpoint) -> Dict[str, Any]:
    return run_files("fetch", contender, p, ep)


RUNNERS: Dict[str, Callable[[str, Dict[str, Any], Any], Dict[str, Any]]] = {
    "decode": run_decode,
    "latency": run_latency,
    "output": run_output,
    "input": run_input,
    "cmd": run_cmd,
    "setup": run_setup,
    "fanout": run_fanout,
    "copy": run_copy,
    "fetch": run_fetch,
}


def worker(args: argparse.Namespace) -> int:
    scenario, contender = args.worker
    params: Dict[str, Any] = json.loads(args.params)
    profile: Optional[str] = args.profile_out or None
    url = args.url
    endpoint = Endpoint(url, args.direct_url or url, args.pid, args.proxy, args.trace_marks) if url else None
    run = RUNNERS[scenario]
    try:
        if profile:
            import cProfile
            import io
            import pstats

            profiler = cProfile.Profile()
            result = profiler.runcall(run, contender, params, endpoint)
            text = io.StringIO()
            stats = pstats.Stats(profiler, stream=text)
            stats.sort_stats("tottime").print_stats(35)
            stats.sort_stats("cumtime").print_stats(35)
            Path(profile).write_text(text.getvalue())
        else:
            result = run(contender, params, endpoint)
    except CheckFailed as failure:
        print(json.dumps({"error": str(failure)}))
        return 1
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))
    return 0


# =============================================================================================
# The driver
# =============================================================================================


class RunningEndpoint:
    """A fresh endpoint for one scenario (``--users``, ``--control``), stopped afterwards."""

    def __init__(self, users: Path, log_dir: Path, profile: Optional[Path], verbose: bool = False) -> None:
        from psremote_testserver.testing import read_url_line

        log_dir.mkdir(parents=True, exist_ok=True)
        self.profile = profile
        self.log = log_dir / "endpoint.log"
        # --verbose logs one line per request (its WS-Man action): --trace reads them.
        args = ["--port", "0", "--users", str(users), "--control", *(["--verbose"] if verbose else [])]
        if profile:
            command = [sys.executable, __file__, "--serve-profiled", str(profile), *args]
        else:
            command = [sys.executable, "-m", "psremote_testserver", *args]
        with open(self.log, "wb") as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL)
        self.url = read_url_line(self.process, 15)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30 if self.profile else 10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


class RunningProxy:
    """The delay proxy (delayproxy.py) in front of one endpoint, in a process of its own."""

    def __init__(self, endpoint_url: str, rtt_ms: float, keep_log: bool) -> None:
        target = endpoint_url.split("/")[2]
        command = [sys.executable, str(Path(__file__).with_name("delayproxy.py")), "--target", target, "--rtt-ms", str(rtt_ms)]
        if keep_log:
            command.append("--log")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        from psremote_testserver.testing import read_url_line

        port, control = read_url_line(self.process, 15).split()
        self.url = endpoint_url.replace(target, f"127.0.0.1:{port}", 1)
        self.control_port = int(control)

    def log(self) -> List[Dict[str, Any]]:
        from delayproxy import Control

        control = Control(self.control_port)
        try:
            return list(control.ask(op="log"))
        finally:
            control.close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


ENDPOINT_LINE = re.compile(r"POST \S+ -> (\d+) action=(\S+) .* in=(\d+) out=(\d+) ")


def write_trace(
    path: Path, log: List[Dict[str, Any]], endpoint_log: Path, runs: List[Tuple[str, Dict[str, Any]]], rtt_ms: float
) -> None:
    """Each contender's measured window as the proxy saw it, one request a line, with the WS-Man
    action the endpoint logged for it. The endpoint's lines come in the order it answered; each is
    paired with the first unpaired proxied request of the same status and request and reply sizes
    (sealed bodies make the sizes distinctive enough; a wrong pairing could only swap two requests
    of identical sizes)."""
    answered = sorted((e for e in log if "status" in e and e.get("status") is not None), key=lambda e: e["answered"])
    for line in endpoint_log.read_text(errors="replace").splitlines():
        match = ENDPOINT_LINE.search(line)
        if not match:
            continue
        status, action, size_in, size_out = int(match[1]), match[2], int(match[3]), int(match[4])
        for entry in answered:
            if "ws_action" not in entry and entry["status"] == status and entry["length"] == size_in and (
                entry.get("reply_length") == size_out or status == 500
            ):
                entry["ws_action"] = action
                break
    out = [f"# requests through the delay proxy at {rtt_ms:g} ms RTT (times in ms since the proxy started)"]
    for contender, result in runs:
        start, end = result.get("net", {}).get("log", [0, 0])
        out.append(f"\n## {contender} (log entries {start}..{end})")
        for entry in log[start:end]:
            if "mark" in entry:
                out.append(f"{entry['t']:10.1f}  -- {entry['mark']} --")
            elif "event" in entry:
                out.append(f"{entry['t']:10.1f}  conn {entry['conn']:>3} {entry['event']}")
            else:
                action = entry.get("action") or entry.get("ws_action") or "?"
                auth = entry["auth"] if entry["auth"] != "-" else ""
                done = entry.get("answered")
                out.append(
                    f"{entry['t']:10.1f}  conn {entry['conn']:>3} {action:<9} {auth:<18} "
                    f"{entry['length']:>8} B -> {entry.get('status')} {entry.get('reply_length', 0):>8} B"
                    + (f"  answered at {done:.1f}" if done is not None else "  (unanswered)")
                )
    path.write_text("\n".join(out) + "\n")


def serve_profiled(out: str, argv: List[str]) -> int:
    """The endpoint with a cProfile on every thread (CPU time); the merged statistics go to ``out`` at exit."""
    import cProfile
    import io
    import pstats
    import threading

    profiles: List[cProfile.Profile] = []
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        # Per-thread CPU time: a thread waiting for the GIL or a lock is not charged.
        profiler = cProfile.Profile(time.thread_time)
        profiles.append(profiler)
        profiler.runcall(original, self)

    threading.Thread.run = run  # type: ignore[method-assign]
    from psremote_testserver import cli

    code = cli.main(argv)
    text = io.StringIO()
    stats: Optional[pstats.Stats] = None
    for profiler in profiles:
        try:
            if stats is None:
                stats = pstats.Stats(profiler, stream=text)
            else:
                stats.add(profiler)
        except TypeError:  # a thread still running has no statistics yet
            continue
    if stats is not None:
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumtime").print_stats("psremote_testserver|psrpcore|spnego", 40)
    Path(out).write_text(text.getvalue())
    return code


def run_worker(
    scenario: str,
    contender: str,
    params: Dict[str, Any],
    endpoint: Optional[RunningEndpoint],
    proxy: Optional[RunningProxy],
    args: argparse.Namespace,
) -> Dict[str, Any]:
    if contender == "psremote-core":
        return run_core_decode(params, args)
    command = [sys.executable, __file__, "--worker", scenario, contender, "--params", json.dumps(params)]
    if endpoint is not None:
        command += ["--pid", str(endpoint.process.pid), "--direct-url", endpoint.url]
        if proxy is not None:
            command += ["--url", proxy.url, "--proxy", f"{proxy.control_port}:{proxy.process.pid}"]
            if args.trace:
                command.append("--trace-marks")
        else:
            command += ["--url", endpoint.url]
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        command += ["--profile-out", str(Path(args.profile) / f"{scenario}-{contender}.txt")]
    env = dict(os.environ)
    if args.psremote_site:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(args.psremote_site).resolve()), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise SystemExit(f"{scenario}/{contender} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    if done.returncode != 0 or "error" in result:
        raise SystemExit(f"{scenario}/{contender}: {result.get('error')}\n{done.stderr}")
    return result


def run_core_decode(params: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Any]:
    """psremote's core: the Rust ``clixml-decode --json`` on the same inputs (Rust values)."""
    env = {**os.environ, "BENCH_BYTES": str(params["decode_bytes"]), "ROWS": str(params["decode_rows"])}
    done = subprocess.run([args.decode_bin, "--json"], capture_output=True, text=True, env=env, timeout=600, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["peak_rss_mb"] = usage.ru_maxrss * 1024 / 1e6  # the largest child so far: an upper bound
    return result


def median(values: List[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> Dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": f"{os.cpu_count()} x {model or platform.machine()}",
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def versions(args: argparse.Namespace) -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("psremote", "pypsrp", "pywinrm", "psrpcore", "pyspnego"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "?"
    out["psremote build"] = "release" if args.psremote_site else "debug (virtualenv)"
    out["python"] = platform.python_version()
    try:
        out["rust"] = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        out["rust"] = "?"
    return out


def commit() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    rev = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return rev + (" (with uncommitted changes)" if dirty else "")


# ---- the table --------------------------------------------------------------------------------


def fmt(x: float, unit: str = "") -> str:
    if x != x:  # nan
        return "-"
    if abs(x) >= 1000:
        s = f"{x:,.0f}"
    elif abs(x) >= 100:
        s = f"{x:.0f}"
    elif abs(x) >= 10:
        s = f"{x:.1f}"
    else:
        s = f"{x:.2f}"
    return s + unit


def per_op(scenario: str, result: Dict[str, Any]) -> Tuple[float, int]:
    """The wall time of one operation of a scenario (ms) and the operations in a result's window."""
    key = OPERATIONS.get(scenario)
    ops = int(result.get(key, 1)) if key else 1
    if "median_ms" in result:
        return float(result["median_ms"]), ops
    return float(result.get("seconds", float("nan"))) * 1000, ops


def net_cells(results: Dict[str, List[Dict[str, Any]]], contenders: List[str], scenario: str, rtt_ms: float) -> Dict[str, str]:
    """The per-operation network and CPU columns of a scenario: "psremote / incumbent" medians."""

    def values(contender: str, get: Callable[[Dict[str, Any], float, int], float]) -> float:
        return median([get(r, *per_op(scenario, r)) for r in results.get(contender, [])])

    def wall_rt(r: Dict[str, Any], wall: float, ops: int) -> float:
        return wall / rtt_ms if rtt_ms else float("nan")

    def cpu_ms(r: Dict[str, Any], wall: float, ops: int) -> float:
        return r.get("client_cpu", float("nan")) * 1000 / ops

    def count(key: str, scale: float = 1.0) -> Callable[[Dict[str, Any], float, int], float]:
        return lambda r, wall, ops: r["net"][key] / ops / scale if "net" in r else float("nan")

    def pair(get: Callable[[Dict[str, Any], float, int], float], ratio: bool = False) -> str:
        nums = [values(c, get) for c in contenders]
        text = " / ".join(fmt(x) for x in nums)
        if ratio and len(nums) == 2 and nums[1] and nums[0] == nums[0] and nums[1] == nums[1]:
            text += f" ({nums[0] / nums[1]:.2f}x)"
        return text

    cells = {
        "rt": pair(wall_rt) if rtt_ms else "",
        "requests": pair(count("requests")),
        "connections": pair(count("connections")),
        "logons": pair(count("ntlm_logons")),
        "kb": " / ".join(
            f"{fmt(values(c, count('bytes_up', 1000)))}:{fmt(values(c, count('bytes_down', 1000)))}" for c in contenders
        ),
        "cpu": pair(cpu_ms, ratio=True),
    }
    return {k: ("" if v.replace("-", "").replace("/", "").replace(":", "").strip() == "" else v) for k, v in cells.items()}


def targets_for(rtt_ms: float) -> Dict[str, Optional[Tuple[str, float]]]:
    """Targets of issue 13 (at 20 ms: the network; at 0 ms: throughput and client CPU), and of
    issue 7 on loopback where issue 13 names none."""
    if rtt_ms:
        return {
            "latency": ("<=", 0.8), "latency_rt": ("<=", 2.1), "setup": ("<=", 0.7), "setup_rt": ("<=", 6),
            "fanout": ("<=", 0.5), "copy": (">=", 2), "fetch": (">=", 2),
        }
    return {
        "decode_py": (">=", 30), "decode_core": (">=", 100), "latency": ("<=", 0.5), "latency_cpu": ("<=", 0.3),
        "output": (">=", 10), "input": (">=", 3), "cmd": (">=", 2), "setup": ("<=", 0.7), "fanout": ("<=", 0.3),
        "fanout_rss": ("<=", 0.3), "copy": (">=", 5), "fetch": (">=", 5),
    }


def table(
    results: Dict[str, Dict[str, List[Dict[str, Any]]]], params: Dict[str, Any], rtt_ms: float, smoke: bool = False
) -> Tuple[str, List[Dict[str, Any]]]:
    """Markdown table of medians and ratios at one round-trip time; also the rows as data."""
    rows: List[Dict[str, Any]] = []
    goal = targets_for(rtt_ms)

    def med(scenario: str, contender: str, get: Callable[[Dict[str, Any]], float]) -> float:
        return median([get(r) for r in results.get(scenario, {}).get(contender, [])])

    def add(
        number: str,
        what: str,
        unit: str,
        scenario: str,
        get: Callable[[Dict[str, Any]], float],
        incumbent: str,
        target: Optional[str],
        third: Optional[str] = None,
        contender: str = "psremote",
        cpu: Optional[Callable[[Dict[str, Any]], float]] = None,
    ) -> None:
        if scenario not in results:
            return
        bound = goal.get(target) if target else None
        # An absolute target (round trips, core decode) compares psremote's own number.
        absolute = target is not None and (target.endswith("_rt") or target == "decode_core")
        ours = med(scenario, contender, get)
        theirs = med(scenario, incumbent, get) if incumbent else float("nan")
        ratio = ours / theirs if theirs and theirs == theirs else float("nan")
        met = None
        if bound is not None:
            op, limit = bound
            value = ours if absolute or not incumbent else ratio
            met = value >= limit if op == ">=" else value <= limit
        cpu_get = cpu or (lambda r: r.get("endpoint_cpu", float("nan")))
        wall_get = lambda r: r.get("seconds", float("nan"))  # noqa: E731
        row = {
            "scenario": scenario,
            "number": number,
            "what": what,
            "unit": unit,
            "psremote": ours,
            "incumbent_name": incumbent,
            "incumbent": theirs,
            "third_name": third,
            "third": med(scenario, third, get) if third else float("nan"),
            "ratio": ratio,
            "target": f"{bound[0]} {bound[1]:g}{' ' + unit if absolute else 'x'}" if bound else "",
            "met": met,
            "endpoint_cpu": [med(scenario, c, cpu_get) for c in (contender, incumbent) if c],
            "endpoint_share": [
                med(scenario, c, cpu_get) / med(scenario, c, wall_get) if c else float("nan") for c in (contender, incumbent) if c
            ],
            "net": net_cells(results[scenario], [c for c in (contender, incumbent) if c], scenario, rtt_ms)
            if scenario != "decode" else {},
        }
        rows.append(row)

    d = "decode"
    mbps = lambda k: (lambda r: r[k]["bytes"] / 1e6 / r[k]["seconds"])  # noqa: E731
    ops = lambda k: (lambda r: r[k]["values"] / r[k]["seconds"])  # noqa: E731
    nan = lambda r: float("nan")  # noqa: E731
    add("1", "Decode corpus -> Python objects", "MB/s", d, mbps("corpus"), "pypsrp", "decode_py", "psrpcore", cpu=nan)
    add("1", "Decode corpus -> Python objects", "messages/s", d, ops("corpus"), "pypsrp", None, "psrpcore", cpu=nan)
    add("1", "Decode synthetic -> Python objects", "MB/s", d, mbps("synthetic"), "pypsrp", "decode_py", "psrpcore", cpu=nan)
    add("1", "Decode synthetic -> Python objects", "objects/s", d, ops("synthetic"), "pypsrp", None, "psrpcore", cpu=nan)
    add("1", "Decode corpus -> Rust values (core)", "MB/s", d, mbps("corpus"), "", "decode_core", contender="psremote-core", cpu=nan)
    add("1", "Decode synthetic -> Rust values (core)", "MB/s", d, mbps("synthetic"), "", "decode_core", contender="psremote-core", cpu=nan)
    add("1", "Decode synthetic -> Rust values (core)", "objects/s", d, ops("synthetic"), "", None, contender="psremote-core", cpu=nan)
    per_call = lambda key: (lambda r: r[key] / r["calls"] * 1000)  # noqa: E731
    add("2", "Invocation latency (open pool)", "ms", "latency", lambda r: r["median_ms"], "pypsrp", "latency")
    if rtt_ms:
        add("2", "Invocation: round trips (median / RTT)", "RTT", "latency", lambda r: r["median_ms"] / rtt_ms, "pypsrp",
            "latency_rt")
    add("2", "WS-Man requests per invocation (endpoint)", "requests", "latency", lambda r: r["requests"] / r["calls"],
        "pypsrp", None)
    add("2", "Client CPU per invocation", "ms", "latency", per_call("client_cpu"), "pypsrp", "latency_cpu")
    add("2", "Endpoint CPU per invocation", "ms", "latency", per_call("endpoint_cpu"), "pypsrp", None)
    add("3", f"Output: {params['output_objects']:,} objects x {params['output_properties']} properties", "objects/s",
        "output", lambda r: r["objects"] / r["seconds"], "pypsrp", "output")
    add("4", f"Input: {params['input_bytes'] / 1e6:g} MB as {params['input_object_chars']:,}-char strings", "MB/s",
        "input", lambda r: r["bytes"] / 1e6 / r["seconds"], "pypsrp", "input")
    add("5", f"cmd: {params['cmd_bytes'] / 1e6:g} MB of stdout", "MB/s", "cmd", lambda r: r["bytes"] / 1e6 / r["seconds"],
        "pywinrm", "cmd")
    add("6", "Set-up: connect (NTLM), open + close a pool", "ms", "setup", lambda r: r["median_ms"], "pypsrp", "setup")
    if rtt_ms:
        add("6", "Set-up: round trips (median / RTT)", "RTT", "setup", lambda r: r["median_ms"] / rtt_ms, "pypsrp",
            "setup_rt")
    add("7", f"Fan-out: {params['fanout_pools']} pools at once, total time", "s", "fanout", lambda r: r["seconds"], "pypsrp",
        "fanout")
    add("7", f"Fan-out: {params['fanout_pools']} pools at once, peak RSS", "MB", "fanout", lambda r: r["peak_rss_mb"],
        "pypsrp", "fanout_rss")
    add("7", "Fan-out: RSS before the fan-out", "MB", "fanout", lambda r: r["baseline_rss_mb"], "pypsrp", None)
    add("8", f"copy: {params['file_bytes'] / 1e6:g} MB file to the server", "MB/s", "copy",
        lambda r: r["bytes"] / 1e6 / r["seconds"], "pypsrp", "copy")
    add("8", f"fetch: {params['file_bytes'] / 1e6:g} MB file from the server", "MB/s", "fetch",
        lambda r: r["bytes"] / 1e6 / r["seconds"], "pypsrp", "fetch")

    lines = [
        "| # | measurement | unit | psremote | incumbent | psrpcore | psremote/incumbent | target | met "
        "| round trips per op | requests per op | TCP connections per op | NTLM logons per op "
        "| KB sent:received per op | client CPU ms per op | endpoint CPU s, share of wall |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    shown: set = set()
    for r in rows:
        incumbent = f"{fmt(r['incumbent'])} ({r['incumbent_name']})" if r["incumbent_name"] else ""
        third = fmt(r["third"]) if r["third_name"] else ""
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] == r["ratio"] else ""
        met = "" if smoke else {None: "", True: "yes", False: "**no**"}[r["met"]]
        first = r["scenario"] not in shown
        shown.add(r["scenario"])
        cpu = " / ".join(f"{c:.2f} ({s * 100:.0f}%)" for c, s in zip(r["endpoint_cpu"], r["endpoint_share"]) if c == c)
        net = r["net"] if first else {}  # the per-operation columns once per scenario, on its first row
        if not first:
            cpu = ""
        cells = " | ".join(net.get(k, "") for k in ("rt", "requests", "connections", "logons", "kb", "cpu"))
        lines.append(
            f"| {r['number']} | {r['what']} | {r['unit']} | {fmt(r['psremote'])} | {incumbent} | {third} | {ratio} | "
            f"{r['target']} | {met} | {cells} | {cpu} |"
        )
    return "\n".join(lines), rows


def quietness(results: Dict[str, Dict[str, List[Dict[str, Any]]]]) -> str:
    """How much CPU the rest of the machine used during the measured windows (largest over rounds)."""
    parts = []
    for scenario, by_contender in results.items():
        worst = []
        for contender, runs in by_contender.items():
            values: List[float] = [r["other_cpu"] for r in runs if isinstance(r.get("other_cpu"), float)]
            for key in ("corpus", "synthetic"):
                values += [r[key]["other_cpu"] for r in runs if isinstance(r.get(key), dict) and "other_cpu" in r[key]]
            if values:
                worst.append(f"{contender} {max(values):.2f}")
        if worst:
            parts.append(f"{scenario}: " + ", ".join(worst))
    proxy = []
    for scenario, by_contender in results.items():
        spent = [r["proxy_cpu"] for runs in by_contender.values() for r in runs if "proxy_cpu" in r]
        if spent:
            proxy.append(f"{scenario} {max(spent):.2f}")
    return (
        "CPU seconds used by other processes during the measured windows (largest over the rounds): "
        + "; ".join(parts)
        + "."
        + (" Of which the delay proxy (largest): " + ", ".join(proxy) + "." if proxy else "")
    )


def check_counted(scenario: str, contender: str, result: Dict[str, Any]) -> None:
    """The smoke run's check on the network columns: the proxy saw the contender's traffic."""
    net = result.get("net", {})
    if not (net.get("requests", 0) > 0 and net.get("bytes_up", 0) > 0 and net.get("bytes_down", 0) > 0):
        raise SystemExit(f"{scenario}/{contender}: the delay proxy counted no traffic in the window: {net}")


def driver(args: argparse.Namespace) -> int:
    params: Dict[str, Any] = dict(SMOKE if args.smoke else QUICK if args.quick else FULL)
    if args.rounds:
        params["rounds"] = args.rounds
    rtts = [float(x) for x in (args.rtt_ms or ("20" if args.smoke else "0,20")).split(",")]
    scenarios = [s for s in SCENARIOS if not args.only or s in args.only.split(",")]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    trace_dir = Path(args.trace) if args.trace else None
    if trace_dir:
        trace_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    info: Dict[str, Any] = {
        "machine": machine(), "commit": commit(), "versions": versions(args), "params": params, "rtt_ms": rtts
    }
    by_rtt: Dict[str, Dict[str, Dict[str, List[Dict[str, Any]]]]] = {}
    with tempfile.TemporaryDirectory(prefix="psremote-bench-") as tmp:
        tmp_path = Path(tmp)
        users = tmp_path / "users"
        users.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n")
        if "decode" in scenarios:
            dump = tmp_path / "decode"
            env = {**os.environ, "ROWS": str(params["decode_rows"])}
            subprocess.run([args.decode_bin, "--dump", str(dump)], check=True, env=env)
            params["dump_dir"] = str(dump)
        for index, rtt in enumerate(rtts):
            results = by_rtt.setdefault(f"{rtt:g}", {})
            for scenario in scenarios:
                if scenario == "decode" and index > 0:
                    continue  # no network: once is enough
                contenders = [c for c in SCENARIOS[scenario] if not args.contenders or c in args.contenders.split(",")]
                endpoint, proxy = None, None
                t = time.monotonic()
                try:
                    if scenario != "decode":
                        name = f"{rtt:g}ms-{scenario}"
                        profile = Path(args.endpoint_profile) / f"endpoint-{name}.txt" if args.endpoint_profile else None
                        if profile:
                            profile.parent.mkdir(parents=True, exist_ok=True)
                        endpoint = RunningEndpoint(users, tmp_path / f"endpoint-{name}", profile, verbose=bool(trace_dir))
                        proxy = RunningProxy(endpoint.url, rtt, keep_log=bool(trace_dir))
                    runs: List[Tuple[str, Dict[str, Any]]] = []
                    for round_number in range(params["rounds"]):
                        for contender in contenders:
                            result = run_worker(scenario, contender, params, endpoint, proxy, args)
                            if proxy is not None:
                                check_counted(scenario, contender, result)
                            results.setdefault(scenario, {}).setdefault(contender, []).append(result)
                            runs.append((contender, result))
                            if args.verbose:
                                print(f"  {rtt:g} ms {scenario} round {round_number + 1} {contender}: {json.dumps(result)}",
                                      file=sys.stderr)
                    log = proxy.log() if proxy is not None and trace_dir else []
                finally:
                    if proxy is not None:
                        proxy.stop()
                    if endpoint is not None:
                        endpoint.stop()
                if trace_dir and endpoint is not None:
                    write_trace(trace_dir / f"{rtt:g}ms-{scenario}.log", log, endpoint.log, runs, rtt)
                print(f"{rtt:g} ms {scenario}: {time.monotonic() - t:.1f} s", file=sys.stderr)
    info["duration_s"] = round(time.monotonic() - started, 1)
    head = (
        f"Machine: {info['machine']['cpu']}, {info['machine']['memory']}, {info['machine']['os']} "
        f"(load before: {info['machine']['load_before']}); commit {info['commit']}; "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + f"; {params['rounds']} round(s), medians; {info['duration_s']} s."
    )
    if args.smoke:
        head = (
            "Smoke run: every contender's output was checked and the delay proxy counted its traffic; debug builds "
            "and tiny inputs, so the numbers mean nothing.\n" + head
        )
    parts, rows_by_rtt = [head], {}
    for key, results in by_rtt.items():
        rtt = float(key)
        markdown, rows = table(results, params, rtt, args.smoke)
        rows_by_rtt[key] = rows
        parts.append(f"### Round trip {key} ms (the delay proxy adds {rtt / 2:g} ms each way)\n\n{markdown}\n\n{quietness(results)}")
    text = "\n\n".join(parts) + "\n"
    print(text)
    (out_dir / "results.md").write_text(text)
    (out_dir / "results.json").write_text(json.dumps({**info, "rows": rows_by_rtt, "runs": by_rtt}, indent=1, default=str))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks outputs and counts only")
    parser.add_argument("--quick", action="store_true", help="mid-sized inputs, one round (for development)")
    parser.add_argument(
        "--rtt-ms", default="", help="comma-separated round trips the delay proxy adds, one table each (default 0,20; smoke 20)"
    )
    parser.add_argument("--trace", default="", help="write each scenario's request log (per contender) into this directory")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    parser.add_argument("--contenders", default="", help="comma-separated contenders (default: all)")
    parser.add_argument("--out", default=str(ROOT / "target" / "bench"))
    parser.add_argument("--psremote-site", default="", help="directory holding a psremote build (PYTHONPATH)")
    parser.add_argument("--decode-bin", default=str(ROOT / "target" / "release" / "clixml-decode"))
    parser.add_argument("--profile", default="", help="cProfile the Python workers into this directory")
    parser.add_argument("--endpoint-profile", default="", help="cProfile the endpoint into this directory")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("SCENARIO", "CONTENDER"), help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--direct-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--proxy", default="", help=argparse.SUPPRESS)
    parser.add_argument("--trace-marks", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--serve-profiled", default="", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.serve_profiled:
        return serve_profiled(args.serve_profiled, rest)
    if rest:
        parser.error(f"unknown arguments {rest}")
    if args.worker:
        return worker(args)
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
