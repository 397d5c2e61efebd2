#!/usr/bin/env python3
"""One script on many hosts from one process: psremote.run_many against pypsrp 0.9.1 in a thread pool.

The hosts are distinct loopback addresses (127.0.10.1, 127.0.10.2, ...) served by a few endpoint
processes (``--listen-range``: each process listens on a block of addresses, same port). Each
contender runs in a subprocess of its own and reports its wall time, peak resident memory (VmHWM)
and CPU seconds, and how many hosts answered ``hello``; the driver prints one table with the
psremote/pypsrp ratios and checks that no endpoint was left with a shell, pool or pipeline open.

    make bench-fleet                  # 1,000 hosts, throttle 100, 4 endpoint processes
    python bench/fleet_scale.py --hosts 50 --endpoints 2 --throttle 20   # the make-test form

pypsrp runs as its users run it for a fleet: ``concurrent.futures.ThreadPoolExecutor`` with as many
workers as the throttle, each job a ``pypsrp.client.Client(...).execute_ps(script)`` (connect, open
a pool, run, close). psremote runs ``psremote.run_many(hosts, script, throttle=...)`` in the main
thread. Both use NTLM with message encryption over HTTP. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD, DOMAIN = "user", "Passw0rd!", "DOMAIN"
SCRIPT = "Write-Output 'hello'"
#: Addresses per endpoint process at most (one /24 block each: 127.0.(10+j).1-254).
PER_BLOCK = 254
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.0/8,localhost"


def vm_hwm_mb() -> float:
    """Peak resident set of this process (VmHWM), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_psremote(hosts: List[Tuple[str, int]], throttle: int) -> Dict[str, Any]:
    import psremote

    specs = [{"host": address, "port": port} for address, port in hosts]
    ok = failed = 0
    started = time.perf_counter()
    results = psremote.run_many(
        specs,
        SCRIPT,
        throttle=throttle,
        username=f"{DOMAIN}\\{USER}",
        password=PASSWORD,
        auth="ntlm",
        trusted_hosts=["127.*"],
    )
    for result in results:
        if result.ok and [str(o) for o in result.output] == ["hello"]:
            ok += 1
        else:
            failed += 1
            if failed <= 3:
                print(f"psremote: {result.host}: {result.error!r}", file=sys.stderr)
    return {"wall_s": time.perf_counter() - started, "ok": ok, "failed": failed}


def run_pypsrp(hosts: List[Tuple[str, int]], throttle: int) -> Dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from pypsrp.client import Client

    def one(address: str, port: int) -> List[Any]:
        client = Client(
            address,
            port=port,
            ssl=False,
            auth="ntlm",
            username=f"{DOMAIN}\\{USER}",
            password=PASSWORD,
            encryption="always",
            path="wsman",
        )
        output, _streams, _had_errors = client.execute_ps(SCRIPT)
        return [output]

    ok = failed = 0
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=throttle) as pool:
        futures = [pool.submit(one, address, port) for address, port in hosts]
        for future in as_completed(futures):
            try:
                out = future.result()
            except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                failed += 1
                if failed <= 3:
                    print(f"pypsrp: {exc!r}", file=sys.stderr)
                continue
            if [str(o).strip() for o in out] == ["hello"]:
                ok += 1
            else:
                failed += 1
    return {"wall_s": time.perf_counter() - started, "ok": ok, "failed": failed}


def worker(contender: str, hosts_file: str, throttle: int) -> None:
    hosts = [tuple(h) for h in json.loads(Path(hosts_file).read_text())]
    # The library is loaded first: the baseline is the process with it, before any host.
    if contender == "psremote":
        import psremote  # noqa: F401
    else:
        import pypsrp.client  # noqa: F401
    baseline_mb = vm_hwm_mb()
    cpu0 = cpu_seconds()
    run = run_psremote if contender == "psremote" else run_pypsrp
    result = run(hosts, throttle)  # type: ignore[arg-type]
    result.update(
        contender=contender,
        cpu_s=cpu_seconds() - cpu0,
        peak_rss_mb=vm_hwm_mb(),
        baseline_rss_mb=baseline_mb,
    )
    print(json.dumps(result), flush=True)


def start_endpoints(count: int, hosts: int, workdir: Path) -> Tuple[List[Any], List[Tuple[str, int]]]:
    sys.path.insert(0, str(ROOT / "testserver"))
    from psremote_testserver.testing import launch

    users = workdir / "users"
    users.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n")
    per = -(-hosts // count)
    if per > PER_BLOCK:
        raise SystemExit(f"{hosts} hosts over {count} endpoints is {per} per endpoint, over {PER_BLOCK}: add endpoints")
    endpoints, addresses = [], []
    for j in range(count):
        n = min(per, hosts - j * per)
        if n <= 0:
            break
        block = f"127.0.{10 + j}"
        log_dir = workdir / f"endpoint{j}"
        log_dir.mkdir()
        endpoint = launch(users, log_dir, "--listen-range", f"{block}.1-{block}.{n}")
        endpoints.append(endpoint)
        addresses += [(f"{block}.{i}", endpoint.port) for i in range(1, n + 1)]
    return endpoints, addresses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=4)
    parser.add_argument("--throttle", type=int, default=100)
    parser.add_argument("--contenders", default="psremote,pypsrp")
    parser.add_argument("--psremote-site", default="", help="directory holding a psremote build (PYTHONPATH)")
    parser.add_argument("--out", default="", help="also write the table (markdown) here")
    parser.add_argument("--worker", nargs=3, metavar=("CONTENDER", "HOSTS_FILE", "THROTTLE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        contender, hosts_file, throttle = args.worker
        worker(contender, hosts_file, int(throttle))
        return 0

    env = dict(os.environ)
    if args.psremote_site:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (args.psremote_site, env.get("PYTHONPATH", "")) if p)
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="psremote-fleet-") as tmp:
        workdir = Path(tmp)
        endpoints, hosts = start_endpoints(args.endpoints, args.hosts, workdir)
        hosts_file = workdir / "hosts.json"
        hosts_file.write_text(json.dumps(hosts))
        try:
            for contender in args.contenders.split(","):
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", contender, str(hosts_file), str(args.throttle)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=1800,
                )
                if proc.returncode != 0 or not proc.stdout.strip():
                    print(proc.stderr[-4000:], file=sys.stderr)
                    raise SystemExit(f"{contender} worker failed (exit {proc.returncode})")
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                for endpoint in endpoints:
                    state = endpoint.wait_state("pools", 0)
                    left = {k: state[k] for k in ("shells", "pools", "pipelines", "commands") if state[k]}
                    if left:
                        raise SystemExit(f"{contender} left {left} on {endpoint.url}")
        finally:
            for endpoint in endpoints:
                endpoint.stop()

    table = render(rows, args)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    bad = [r for r in rows if r["ok"] != args.hosts]
    if bad:
        print(f"not every host answered: {[(r['contender'], r['ok']) for r in bad]}", file=sys.stderr)
        return 1
    return 0


def render(rows: List[Dict[str, Any]], args: argparse.Namespace) -> str:
    by = {r["contender"]: r for r in rows}
    lines = [
        f"Fleet: {args.hosts} hosts (distinct 127.0.x.y addresses on {args.endpoints} endpoint processes), "
        f"throttle {args.throttle}, `{SCRIPT}`; machine {platform.machine()} {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}",
        "",
        "| contender | hosts answered | wall s | hosts/s | client CPU s | peak RSS MB | RSS with the library loaded MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['contender']} | {r['ok']} / {args.hosts} | {r['wall_s']:.2f} | {args.hosts / r['wall_s']:.0f} | "
            f"{r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['baseline_rss_mb']:.0f} |"
        )
    if "psremote" in by and "pypsrp" in by:
        p, q = by["psremote"], by["pypsrp"]
        lines += [
            "",
            f"psremote/pypsrp: wall {p['wall_s'] / q['wall_s']:.2f}x, client CPU {p['cpu_s'] / q['cpu_s']:.2f}x, "
            f"peak RSS {p['peak_rss_mb'] / q['peak_rss_mb']:.2f}x",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
