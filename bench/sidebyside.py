#!/usr/bin/env python3
"""psremote side by side with pypsrp 0.9.1 (and pywinrm 0.5.0 for cmd) against one loopback endpoint.

``make bench`` runs it in full, ``make bench-smoke`` (part of ``make test``) in a tiny version that
only checks that every contender produced the right output. Nothing here asserts a time.

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
some contenders; ``--rounds N``;
``--profile DIR`` runs Python workers under cProfile and writes ``DIR/SCENARIO-CONTENDER.txt``;
``--endpoint-profile DIR`` runs the endpoint under cProfile (every thread) and writes
``DIR/endpoint-SCENARIO.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
)

SCENARIOS: Dict[str, List[str]] = {
    "decode": ["psremote-core", "psremote", "pypsrp", "psrpcore"],
    "latency": ["psremote", "pypsrp"],
    "output": ["psremote", "pypsrp"],
    "input": ["psremote", "pypsrp"],
    "cmd": ["psremote", "pywinrm"],
    "setup": ["psremote", "pypsrp"],
    "fanout": ["psremote", "pypsrp"],
}


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
    """What a worker knows of the endpoint: its URL and process id."""

    def __init__(self, url: str, pid: int) -> None:
        self.url = url
        self.pid = pid
        self.port = int(url.split(":")[2].split("/")[0])
        self.base = url.rsplit("/", 1)[0]

    def requests(self) -> int:
        with urllib.request.urlopen(self.base + "/_control/state", timeout=10) as response:
            return int(json.load(response)["requests"])


class Window:
    """The measured part of a worker: wall time, own CPU, endpoint CPU and WS-Man requests."""

    def __init__(self, endpoint: Optional[Endpoint]) -> None:
        self.endpoint = endpoint
        self.result: Dict[str, float] = {}

    def __enter__(self) -> "Window":
        self._requests = self.endpoint.requests() if self.endpoint else 0
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


RUNNERS: Dict[str, Callable[[str, Dict[str, Any], Any], Dict[str, Any]]] = {
    "decode": run_decode,
    "latency": run_latency,
    "output": run_output,
    "input": run_input,
    "cmd": run_cmd,
    "setup": run_setup,
    "fanout": run_fanout,
}


def worker(scenario: str, contender: str, params: Dict[str, Any], url: str, pid: int, profile: Optional[str]) -> int:
    endpoint = Endpoint(url, pid) if url else None
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

    def __init__(self, users: Path, log_dir: Path, profile: Optional[Path]) -> None:
        from psremote_testserver.testing import read_url_line

        log_dir.mkdir(parents=True, exist_ok=True)
        self.profile = profile
        args = ["--port", "0", "--users", str(users), "--control"]
        if profile:
            command = [sys.executable, __file__, "--serve-profiled", str(profile), *args]
        else:
            command = [sys.executable, "-m", "psremote_testserver", *args]
        with open(log_dir / "endpoint.log", "wb") as stderr:
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
    scenario: str, contender: str, params: Dict[str, Any], endpoint: Optional[RunningEndpoint], args: argparse.Namespace
) -> Dict[str, Any]:
    if contender == "psremote-core":
        return run_core_decode(params, args)
    command = [sys.executable, __file__, "--worker", scenario, contender, "--params", json.dumps(params)]
    if endpoint is not None:
        command += ["--url", endpoint.url, "--pid", str(endpoint.process.pid)]
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


def table(
    results: Dict[str, Dict[str, List[Dict[str, Any]]]], params: Dict[str, Any], smoke: bool = False
) -> Tuple[str, List[Dict[str, Any]]]:
    """Markdown table of medians and ratios; also the rows as data."""
    rows: List[Dict[str, Any]] = []

    def med(scenario: str, contender: str, get: Callable[[Dict[str, Any]], float]) -> float:
        return median([get(r) for r in results.get(scenario, {}).get(contender, [])])

    def add(
        number: str,
        what: str,
        unit: str,
        scenario: str,
        get: Callable[[Dict[str, Any]], float],
        incumbent: str,
        target: Optional[Tuple[str, float]],
        third: Optional[str] = None,
        contender: str = "psremote",
        cpu: Optional[Callable[[Dict[str, Any]], float]] = None,
    ) -> None:
        if scenario not in results:
            return
        ours = med(scenario, contender, get)
        theirs = med(scenario, incumbent, get) if incumbent else float("nan")
        ratio = ours / theirs if theirs and theirs == theirs else float("nan")
        met = None
        if target is not None:
            op, bound = target
            value = ours if not incumbent else ratio
            met = value >= bound if op == ">=" else value <= bound
        cpu_get = cpu or (lambda r: r.get("endpoint_cpu", float("nan")))
        client_get = cpu or (lambda r: r.get("client_cpu", float("nan")))
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
            "target": f"{target[0]} {target[1]:g}{'x' if incumbent else ' ' + unit}" if target else "",
            "met": met,
            "client_cpu": [med(scenario, c, client_get) for c in (contender, incumbent) if c],
            "endpoint_cpu": [med(scenario, c, cpu_get) for c in (contender, incumbent) if c],
            "endpoint_share": [
                med(scenario, c, cpu_get) / med(scenario, c, wall_get) if c else float("nan") for c in (contender, incumbent) if c
            ],
        }
        rows.append(row)

    d = "decode"
    mbps = lambda k: (lambda r: r[k]["bytes"] / 1e6 / r[k]["seconds"])  # noqa: E731
    ops = lambda k: (lambda r: r[k]["values"] / r[k]["seconds"])  # noqa: E731
    nan = lambda r: float("nan")  # noqa: E731
    add("1", "Decode corpus -> Python objects", "MB/s", d, mbps("corpus"), "pypsrp", (">=", 30), "psrpcore", cpu=nan)
    add("1", "Decode corpus -> Python objects", "messages/s", d, ops("corpus"), "pypsrp", None, "psrpcore", cpu=nan)
    add("1", "Decode synthetic -> Python objects", "MB/s", d, mbps("synthetic"), "pypsrp", (">=", 30), "psrpcore", cpu=nan)
    add("1", "Decode synthetic -> Python objects", "objects/s", d, ops("synthetic"), "pypsrp", None, "psrpcore", cpu=nan)
    add("1", "Decode corpus -> Rust values (core)", "MB/s", d, mbps("corpus"), "", (">=", 100), contender="psremote-core", cpu=nan)
    add("1", "Decode synthetic -> Rust values (core)", "MB/s", d, mbps("synthetic"), "", (">=", 100), contender="psremote-core", cpu=nan)
    add("1", "Decode synthetic -> Rust values (core)", "objects/s", d, ops("synthetic"), "", None, contender="psremote-core", cpu=nan)
    per_call_cpu = lambda r: r["endpoint_cpu"] / r["calls"] * 1000  # noqa: E731
    add("2", "Invocation latency (open pool)", "ms", "latency", lambda r: r["median_ms"], "pypsrp", ("<=", 0.5))
    add("2", "WS-Man requests per invocation", "requests", "latency", lambda r: r["requests"] / r["calls"], "pypsrp", None)
    add("2", "Endpoint CPU per invocation", "ms", "latency", per_call_cpu, "pypsrp", None)
    add("3", f"Output: {params['output_objects']:,} objects x {params['output_properties']} properties", "objects/s",
        "output", lambda r: r["objects"] / r["seconds"], "pypsrp", (">=", 10))
    add("4", f"Input: {params['input_bytes'] / 1e6:g} MB as {params['input_object_chars']:,}-char strings", "MB/s",
        "input", lambda r: r["bytes"] / 1e6 / r["seconds"], "pypsrp", (">=", 5))
    add("5", f"cmd: {params['cmd_bytes'] / 1e6:g} MB of stdout", "MB/s", "cmd", lambda r: r["bytes"] / 1e6 / r["seconds"],
        "pywinrm", (">=", 3))
    add("6", "Set-up: connect (NTLM), open + close a pool", "ms", "setup", lambda r: r["median_ms"], "pypsrp", ("<=", 0.7))
    add("7", f"Fan-out: {params['fanout_pools']} pools at once, total time", "s", "fanout", lambda r: r["seconds"], "pypsrp",
        ("<=", 0.3))
    add("7", f"Fan-out: {params['fanout_pools']} pools at once, peak RSS", "MB", "fanout", lambda r: r["peak_rss_mb"],
        "pypsrp", ("<=", 0.3))
    add("7", "Fan-out: RSS before the fan-out", "MB", "fanout", lambda r: r["baseline_rss_mb"], "pypsrp", None)

    lines = [
        "| # | measurement | unit | psremote | incumbent | psrpcore | psremote/incumbent | target | met "
        "| client CPU s (psremote / incumbent) | endpoint CPU s, share of wall (psremote / incumbent) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- |",
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
        client = " / ".join(f"{c:.2f}" for c in r["client_cpu"] if c == c)
        if not first:  # the CPU columns once per scenario, on its row with a target
            cpu = client = ""
        lines.append(
            f"| {r['number']} | {r['what']} | {r['unit']} | {fmt(r['psremote'])} | {incumbent} | {third} | {ratio} | "
            f"{r['target']} | {met} | {client} | {cpu} |"
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
    return "CPU seconds used by other processes during the measured windows (largest over the rounds): " + "; ".join(
        parts
    ) + "."


def driver(args: argparse.Namespace) -> int:
    params: Dict[str, Any] = dict(SMOKE if args.smoke else FULL)
    if args.rounds:
        params["rounds"] = args.rounds
    scenarios = [s for s in SCENARIOS if not args.only or s in args.only.split(",")]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    info: Dict[str, Any] = {"machine": machine(), "commit": commit(), "versions": versions(args), "params": params}
    results: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="psremote-bench-") as tmp:
        tmp_path = Path(tmp)
        users = tmp_path / "users"
        users.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n")
        if "decode" in scenarios:
            dump = tmp_path / "decode"
            env = {**os.environ, "ROWS": str(params["decode_rows"])}
            subprocess.run([args.decode_bin, "--dump", str(dump)], check=True, env=env)
            params["dump_dir"] = str(dump)
        for scenario in scenarios:
            contenders = [c for c in SCENARIOS[scenario] if not args.contenders or c in args.contenders.split(",")]
            endpoint = None
            if scenario != "decode":
                profile = Path(args.endpoint_profile) / f"endpoint-{scenario}.txt" if args.endpoint_profile else None
                if profile:
                    profile.parent.mkdir(parents=True, exist_ok=True)
                endpoint = RunningEndpoint(users, tmp_path / f"endpoint-{scenario}", profile)
            t = time.monotonic()
            try:
                for round_number in range(params["rounds"]):
                    for contender in contenders:
                        result = run_worker(scenario, contender, params, endpoint, args)
                        results.setdefault(scenario, {}).setdefault(contender, []).append(result)
                        if args.verbose:
                            print(f"  {scenario} round {round_number + 1} {contender}: {json.dumps(result)}", file=sys.stderr)
            finally:
                if endpoint is not None:
                    endpoint.stop()
            print(f"{scenario}: {time.monotonic() - t:.1f} s", file=sys.stderr)
    markdown, rows = table(results, params, args.smoke)
    info["duration_s"] = round(time.monotonic() - started, 1)
    head = (
        f"Machine: {info['machine']['cpu']}, {info['machine']['memory']}, {info['machine']['os']} "
        f"(load before: {info['machine']['load_before']}); commit {info['commit']}; "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + f"; {params['rounds']} round(s), medians; {info['duration_s']} s."
    )
    if args.smoke:
        head = "Smoke run: every contender's output was checked; debug builds and tiny inputs, so the numbers mean nothing.\n" + head
    text = f"{head}\n\n{markdown}\n\n{quietness(results)}\n"
    print(text)
    (out_dir / "results.md").write_text(text)
    (out_dir / "results.json").write_text(json.dumps({**info, "rows": rows, "runs": results}, indent=1, default=str))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks outputs only")
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
    parser.add_argument("--pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--serve-profiled", default="", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.serve_profiled:
        return serve_profiled(args.serve_profiled, rest)
    if rest:
        parser.error(f"unknown arguments {rest}")
    if args.worker:
        return worker(args.worker[0], args.worker[1], json.loads(args.params), args.url, args.pid, args.profile_out or None)
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
