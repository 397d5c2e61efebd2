"""Every code sample of every documentation page runs against the loopback endpoints.

One test per page with samples: driver.py runs the page's blocks in order in one process (one
Python namespace), with the proxy of proxy.py playing ``*.example.com``. Around each block the
runner notes what the endpoints and the proxy saw and checks it against the block's
``% sample:`` environment (docs/README.md): every logon is of the kind the block claims, each
environment a page names is shown at least once, a fleet reaches several hosts, nothing asks
the proxy for a host outside example.com; and at the end, every connection the endpoints
accepted during the page came through the proxy. A failure names the page, the block's line,
its output and the error.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from proxy import hosts_seen
from samples import DOCS, Block, SampleError, extract, pages

PAGE_TIMEOUT = 240.0
DRIVER = Path(__file__).with_name("driver.py")


def _page_id(path: Path) -> str:
    return path.relative_to(DOCS).as_posix()


def _pages_with_samples() -> List[Path]:
    found = []
    for page in pages():
        try:
            if extract(page):
                found.append(page)
        except SampleError:
            found.append(page)  # the test reports the markup error
    return found


def _logon_matches(environment: str, logon: Dict[str, Any]) -> bool:
    scheme, mechanism, tls = logon["scheme"], logon["mechanism"], logon["tls"]
    if environment in ("default", "cmd"):
        return mechanism == "ntlm" and scheme in ("negotiate", "ntlm") and tls is None
    if environment == "kerberos":
        return mechanism == "kerberos"
    if environment == "https":
        return tls is not None and scheme in ("negotiate", "ntlm", "kerberos")
    if environment == "basic-https":
        return scheme == "basic" and tls is not None
    if environment == "cert":
        return scheme == "certificate"
    if environment == "credssp":
        return scheme == "credssp"
    if environment == "fleet":
        return True
    raise AssertionError(f"unknown environment {environment}")


def _describe(logon: Dict[str, Any]) -> str:
    over = logon["tls"] or "http"
    return f"{logon['scheme']}/{logon['mechanism']} as {logon['principal']} over {over}"


def _shown(environment: str, logons: List[Dict[str, Any]], proxy_delta: Counter, commands: int) -> bool:
    """Whether a block did what its environment is about (at least once per page)."""
    if environment == "fleet":
        return len(hosts_seen(proxy_delta, ("tunnel", "forward", "offline"))) >= 2
    if environment == "cmd":
        return commands > 0
    return any(_logon_matches(environment, logon) for logon in logons)


class _Run:
    """One page's driver process and the control protocol with it."""

    def __init__(self, plan_path: Path, workdir: Path, env: Dict[str, str]) -> None:
        self.ctl_read, child_write = os.pipe()
        child_read, self.ctl_write = os.pipe()
        env = dict(env, DOCS_SAMPLES_CTL=f"{child_read},{child_write}")
        self.log_path = workdir / "driver.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, str(DRIVER), str(plan_path)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            pass_fds=(child_read, child_write),
        )
        os.close(child_read)
        os.close(child_write)
        self.reader = os.fdopen(self.ctl_read, "r", encoding="utf-8")
        self.writer = os.fdopen(self.ctl_write, "w", encoding="utf-8")
        self.deadline = time.monotonic() + PAGE_TIMEOUT

    def receive(self) -> Optional[str]:
        selector = selectors.DefaultSelector()
        selector.register(self.reader, selectors.EVENT_READ)
        try:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError(f"the page's samples did not finish within {PAGE_TIMEOUT:.0f} s")
        finally:
            selector.close()
        line = self.reader.readline()
        return line or None

    def go(self) -> None:
        self.writer.write("go\n")
        self.writer.flush()

    def finish(self) -> str:
        for stream in (self.writer, self.reader):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        return self.log_path.read_text(errors="replace")


def _command_count(world) -> int:
    return sum(world.state(which)["actions"].get("Command", 0) for which in ("http", "https"))


def _failure(block: Block, output: str, error: str, problems: List[str]) -> str:
    text = [f"sample at {block.where} ({block.kind}, environment {block.environment}) failed"]
    text += [f"  - {problem}" for problem in problems]
    if output.strip():
        text += ["--- output ---", output.rstrip()]
    if error.strip():
        text += ["--- error ---", error.rstrip()]
    text += ["--- sample ---", block.code.rstrip()]
    return "\n".join(text)


class SampleFailure(AssertionError):
    """A page's samples failed or did not do what their annotations say."""


def run_page(page: Path, world, tmp_path: Path) -> str:
    """Runs one page's samples with every check; returns the driver's log (the samples' output).
    Raises SampleFailure naming the page, the block and why."""
    blocks = extract(page)
    name = _page_id(page) if page.is_relative_to(DOCS) else str(page)
    workdir = world.workdir(tmp_path / "work")
    env = world.base_env(workdir)
    if any(block.environment == "kerberos" for block in blocks):
        world.kinit(workdir)
    plan = {
        "kinit_password": env["PSREMOTE_PASSWORD"],
        "blocks": [
            {
                "kind": block.kind,
                "code": block.code,
                "commands": block.commands,
                "where": block.where,
                "env": world.environment(block.environment, workdir),
            }
            for block in blocks
        ],
    }
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))

    connections_before = {which: world.state(which)["connections_opened"] for which in ("http", "https")}
    calls_before = dict(world.state_calls)
    proxy_page_before = world.proxy.snapshot()
    shown: Dict[str, bool] = {}
    run = _Run(plan_path, workdir, env)
    failure: Optional[str] = None
    finished = 0
    try:
        while failure is None:
            message = run.receive()
            if message is None:
                break
            verb, number_text, *rest = message.split(" ", 2)
            block = blocks[int(number_text)]
            if verb == "begin":
                logons_before = world.logon_counts()
                commands_before = _command_count(world)
                proxy_before = world.proxy.snapshot()
                run.go()
                continue
            result = json.loads(rest[0])
            logons = world.logons_since(logons_before)
            proxy_delta = world.proxy.snapshot() - proxy_before
            commands = _command_count(world) - commands_before
            problems: List[str] = []
            if not result["ok"]:
                problems.append("the sample raised or a command failed")
            refused = sorted(f"{host}:{port}" for (kind, host, port) in proxy_delta if kind == "refused")
            if refused:
                problems.append(f"asked the proxy for {', '.join(refused)}: only *.example.com on 5985/5986 exist here")
            wrong = [_describe(logon) for logon in logons if not _logon_matches(block.environment, logon)]
            if wrong:
                problems.append(
                    f"logged on as {'; '.join(wrong)}, which '% sample: {block.environment}' does not cover "
                    "(annotate the block with the environment it uses: docs/README.md)"
                )
            for text in block.expect:
                if text not in result["output"]:
                    problems.append(f"the output lacks the expected {text!r}")
            shown[block.environment] = shown.get(block.environment, False) or _shown(block.environment, logons, proxy_delta, commands)
            if problems:
                failure = _failure(block, result["output"], result["error"], problems)
            else:
                finished += 1
            run.go()
    finally:
        log = run.finish()
    if failure is not None:
        raise SampleFailure(failure + "\n--- the page's process ---\n" + log[-4000:])
    if finished != len(blocks):
        raise SampleFailure(f"{name}: the driver stopped after {finished} of {len(blocks)} blocks\n{log[-4000:]}")
    if run.process.returncode != 0:
        raise SampleFailure(f"{name}: the driver exited with {run.process.returncode}\n{log[-4000:]}")

    # Each environment the page names was really used by one of its blocks.
    missing = sorted(env_name for env_name, ok in shown.items() if not ok and env_name != "default")
    if missing:
        raise SampleFailure(f"{name}: no block annotated {missing} did what the annotation says (docs/README.md)")

    # Every connection the endpoints accepted during the page came through the proxy (the
    # runner's own state requests aside), and the page did reach them.
    proxy_page = world.proxy.snapshot() - proxy_page_before
    through = {5985: 0, 5986: 0}
    for (kind, _, port), count in proxy_page.items():
        if kind in ("tunnel", "forward"):
            through[port] += count
    # A page whose console blocks only show commands (cc, cmake, make install) reaches nothing.
    talks = any(block.kind == "python" or any(c.split()[:1] == ["psremote"] for c in block.commands) for block in blocks)
    if talks and sum(through.values()) == 0:
        raise SampleFailure(f"{name}: no sample reached an endpoint through the proxy")
    for which, port in (("http", 5985), ("https", 5986)):
        deadline = time.monotonic() + 10
        while True:
            opened = world.state(which)["connections_opened"] - connections_before[which]
            own = world.state_calls[which] - calls_before[which]
            if opened - own == through[port] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if opened - own != through[port]:
            raise SampleFailure(
                f"{name}: the {which} endpoint accepted {opened - own} connections from samples, "
                f"the proxy carried {through[port]}: something reached it another way"
            )
    return f"{name}: {finished} of {len(blocks)} samples ran\n{log}"


@pytest.mark.parametrize("page", _pages_with_samples(), ids=_page_id)
def test_page_samples(page: Path, world, tmp_path: Path) -> None:
    try:
        print(run_page(page, world, tmp_path))
    except SampleFailure as failure:
        pytest.fail(str(failure), pytrace=False)
