"""Resident memory stays flat over 10,000 invocations on one pool (about a minute)."""

from __future__ import annotations

import gc

import pytest

import psremote

from conftest import PASSWORD, USER

WARMUP = 1_000
TOTAL = 10_000
# Generous: a leak of even 3 KB per invocation would exceed it.
MAX_GROWTH_KB = 30 * 1024


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_memory_flat_over_10000_invocations(start_endpoint):
    endpoint = start_endpoint()
    with psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts="127.0.0.1") as client:
        with client.runspace_pool() as pool:
            ps = pool.powershell().add_command("Write-Output").add_argument("x")
            for _ in range(WARMUP):
                assert ps.invoke().output == ["x"]
            gc.collect()
            after_warmup = rss_kb()
            for _ in range(TOTAL - WARMUP):
                assert ps.invoke().output == ["x"]
            gc.collect()
            after_all = rss_kb()
            # Every finished pipeline was released on the server too.
            state = endpoint.wait_state("pipelines", 0)
            assert state["pipelines"] == 0, state
    growth = after_all - after_warmup
    print(f"RSS after {WARMUP}: {after_warmup} KB, after {TOTAL}: {after_all} KB, growth {growth} KB")
    assert growth < MAX_GROWTH_KB
