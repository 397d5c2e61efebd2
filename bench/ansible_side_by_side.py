#!/usr/bin/env python3
"""`ansible -m raw` on N inventory hosts with the psremote connection plugin and with the built-in
psrp plugin (pypsrp 0.9.1), side by side, against loopback endpoints (issue 14 item 6).

Each endpoint process also listens on its own loopback addresses (``--listen-range``), so every
host has an address of its own; the hosts are spread over ``--endpoints`` processes. One inventory
serves both plugins (the ``ansible_psrp_*`` variables, which psremote reads too, plus
``ansible_psremote_trusted_hosts``: NTLM with message encryption over http); only
``ansible_connection`` changes. Rounds alternate the plugins (A B A B ...); each run is one
``ansible`` process (``-f --forks`` workers), timed from start to exit, with the CPU seconds of
that process and its workers and the largest resident set of any one of them (``getrusage`` of
a small parent of its own, ``--measure``), and the endpoints' CPU seconds. Every run is checked (exit 0, every host's
stdout) and nothing may be left open on the endpoints. Nothing here asserts a time.

    .venv/bin/python bench/ansible_side_by_side.py [--hosts 50] [--endpoints 5] [--forks 10]
        [--rounds 3] [--psremote-site target/bench/site]

``--psremote-site`` puts a release build of the psremote package first on the plugin's
PYTHONPATH (``make bench`` builds one there); without it the virtualenv's (debug) build runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from psremote_testserver.testing import DOMAIN, PASSWORD, USER, Endpoint, launch

ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS = ROOT / "ansible"
ANSIBLE = str(Path(sys.executable).parent / "ansible")
PLUGINS = {"psremote": "psremote.remote.psremote", "psrp": "psrp"}
COMMAND = "Write-Output 'hello from {{ inventory_hostname }}'"
CLK_TCK = os.sysconf("SC_CLK_TCK")
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start_endpoints(count: int, per_endpoint: int, users: Path, logs: Path) -> Dict[str, Any]:
    endpoints: List[Endpoint] = []
    addresses: List[List[str]] = []
    for k in range(count):
        subnet = 31 + k
        log_dir = logs / f"endpoint-{k}"
        log_dir.mkdir()
        endpoint = launch(users, log_dir, "--listen-range", f"127.0.{subnet}.1-127.0.{subnet}.{per_endpoint}")
        endpoints.append(endpoint)
        addresses.append([f"127.0.{subnet}.{j + 1}" for j in range(per_endpoint)])
    return {"endpoints": endpoints, "addresses": addresses}


def write_inventory(path: Path, hosts: int, endpoints: List[Endpoint], addresses: List[List[str]]) -> List[str]:
    names = [f"win{i + 1:04d}" for i in range(hosts)]
    lines = ["[windows]"]
    for i, name in enumerate(names):
        k = i % len(endpoints)
        lines.append(f"{name} ansible_host={addresses[k][i // len(endpoints)]} ansible_port={endpoints[k].port}")
    lines += [
        "[windows:vars]",
        f"ansible_user={USER}",
        f"ansible_password={PASSWORD}",
        "ansible_psrp_protocol=http",
        "ansible_psrp_auth=ntlm",
        "ansible_psrp_path=wsman",
        "ansible_psremote_trusted_hosts=127.0.*",
    ]
    path.write_text("\n".join(lines) + "\n")
    return names


def ansible_env(work: Path, psremote_site: Optional[str]) -> Dict[str, str]:
    (work / "ansible.cfg").write_text("[defaults]\n")
    env = {
        **os.environ,
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        "ANSIBLE_CONFIG": str(work / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_HOME": str(work / "home"),
        "ANSIBLE_LOCAL_TEMP": str(work / "local-tmp"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }
    if psremote_site:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(psremote_site).resolve()), env.get("PYTHONPATH")) if p)
    return env


def run_once(plugin: str, inventory: Path, names: List[str], forks: int, env: Dict[str, str], work: Path,
             endpoints: List[Endpoint], label: str) -> Dict[str, Any]:
    tree = work / f"tree-{label}"
    command = [
        sys.executable, ANSIBLE, "windows", "-i", str(inventory), "-f", str(forks),
        "-e", f"ansible_connection={PLUGINS[plugin]}", "-t", str(tree), "-m", "raw", "-a", COMMAND,
    ]  # fmt: skip
    usage_file = work / f"usage-{label}.json"
    # Through a small parent of its own (--measure), so the resource usage is this run's alone.
    measured = [sys.executable, __file__, "--measure", str(usage_file), "--", *command]
    endpoint_cpu = sum(process_cpu(e.process.pid) for e in endpoints)
    started = time.perf_counter()
    process = subprocess.run(measured, cwd=work, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    endpoint_cpu = sum(process_cpu(e.process.pid) for e in endpoints) - endpoint_cpu
    usage = json.loads(usage_file.read_text())
    ok = 0
    for name in names:
        path = tree / name
        result = json.loads(path.read_text()) if path.exists() else {}
        if result.get("rc") == 0 and result.get("stdout", "").rstrip("\r\n") == f"hello from {name}":
            ok += 1
    if process.returncode != 0 or ok != len(names):
        sys.stderr.write(process.stdout[-4000:] + process.stderr[-4000:])
        raise SystemExit(f"{plugin}: ansible exited {process.returncode}, {ok} of {len(names)} hosts answered correctly")
    return {"wall": wall, "cpu": usage["cpu"], "max_rss_mb": usage["max_rss_kb"] / 1024, "endpoint_cpu": endpoint_cpu, "ok": ok}


def measure(usage_file: str, command: List[str]) -> int:
    """Runs ``command`` and writes the CPU seconds and the largest resident set (KiB) of it and
    every process it waited for (Ansible waits for its workers)."""
    code = subprocess.call(command)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    Path(usage_file).write_text(json.dumps({"cpu": usage.ru_utime + usage.ru_stime, "max_rss_kb": usage.ru_maxrss}))
    return code


def versions(psremote_site: Optional[str]) -> Dict[str, str]:
    from importlib.metadata import version

    probe = subprocess.run(
        [sys.executable, "-c", "import psremote, os; print(os.path.dirname(psremote.__file__))"],
        env=ansible_env(Path(tempfile.mkdtemp()), psremote_site), capture_output=True, text=True,
    )  # fmt: skip
    return {
        "ansible-core": version("ansible-core"),
        "pypsrp": version("pypsrp"),
        "psremote": probe.stdout.strip() or probe.stderr.strip()[-200:],
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
    }


def main() -> int:
    if len(sys.argv) > 3 and sys.argv[1] == "--measure" and sys.argv[3] == "--":
        return measure(sys.argv[2], sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--psremote-site", help="directory with a (release) build of the psremote package")
    parser.add_argument("--out", help="also write the table (markdown) here")
    args = parser.parse_args()
    per_endpoint = -(-args.hosts // args.endpoints)
    if per_endpoint > 250:
        parser.error("at most 250 hosts per endpoint: raise --endpoints")

    with tempfile.TemporaryDirectory(prefix="psremote-ansible-bench-") as tmp:
        work = Path(tmp)
        users = work / "users"
        users.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n")
        logs = work / "logs"
        logs.mkdir()
        started = start_endpoints(args.endpoints, per_endpoint, users, logs)
        endpoints: List[Endpoint] = started["endpoints"]
        try:
            inventory = work / "hosts.ini"
            names = write_inventory(inventory, args.hosts, endpoints, started["addresses"])
            env = ansible_env(work, args.psremote_site)
            results: Dict[str, List[Dict[str, Any]]] = {p: [] for p in PLUGINS}
            for round_ in range(args.rounds):
                for plugin in PLUGINS:
                    result = run_once(plugin, inventory, names, args.forks, env, work, endpoints, f"{plugin}-{round_}")
                    results[plugin].append(result)
                    print(f"round {round_ + 1} {plugin}: {result['wall']:.2f} s", file=sys.stderr)
            leftovers = {}
            for endpoint in endpoints:
                for key in ("shells", "pools", "commands", "pipelines"):
                    state = endpoint.wait_state(key, 0)
                    if state[key]:
                        leftovers[f"{endpoint.url} {key}"] = state[key]
        finally:
            for endpoint in endpoints:
                endpoint.stop()

    info = versions(args.psremote_site)
    median = {p: {k: statistics.median(r[k] for r in rs) for k in ("wall", "cpu", "endpoint_cpu")} for p, rs in results.items()}
    ours, theirs = median["psremote"], median["psrp"]
    lines = [
        f"`ansible -m raw` on {args.hosts} hosts ({args.endpoints} endpoint processes, forks {args.forks}), "
        f"median of {args.rounds} rounds; ansible-core {info['ansible-core']}, pypsrp {info['pypsrp']}, "
        f"Python {info['python']}, {info['cpus']} CPUs; psremote from {info['psremote']}",
        "",
        "| connection | wall s | ms per host | controller CPU s | largest process RSS MiB | endpoint CPU s | hosts ok |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for plugin in PLUGINS:
        m = median[plugin]
        rss = statistics.median(r["max_rss_mb"] for r in results[plugin])
        lines.append(
            f"| {PLUGINS[plugin]} | {m['wall']:.2f} | {1000 * m['wall'] / args.hosts:.0f} | {m['cpu']:.2f} | "
            f"{rss:.0f} | {m['endpoint_cpu']:.2f} | {results[plugin][-1]['ok']}/{args.hosts} |"
        )
    lines += [
        f"| psremote / psrp | {ours['wall'] / theirs['wall']:.2f}x | | {ours['cpu'] / theirs['cpu']:.2f}x | | "
        f"{ours['endpoint_cpu'] / theirs['endpoint_cpu']:.2f}x | |",
        "",
        "Left open on the endpoints afterwards: " + (", ".join(f"{k}={v}" for k, v in leftovers.items()) or "nothing"),
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
