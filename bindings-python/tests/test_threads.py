"""One Client shared by several threads; the GIL is released while waiting."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psremote


def test_threads_share_one_client(credentials):
    with psremote.Client(**credentials) as client:
        def work(i):
            out = client.run_ps(client.powershell().add_command("Write-Output").add_argument(i)).output
            cmd = client.run_cmd("echo", [str(i)]).text.strip()
            return out, cmd

        with ThreadPoolExecutor(max_workers=6) as executor:
            results = list(executor.map(work, range(24)))
    assert results == [([i], str(i)) for i in range(24)]


def test_threads_share_one_pool(pool):
    errors = []

    def work(i):
        try:
            for j in range(10):
                assert pool.run_ps(pool.powershell().add_command("Write-Output").add_argument(f"{i}-{j}")).output == [f"{i}-{j}"]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []


def test_gil_is_released_while_waiting(client):
    # A pure-Python counter keeps running while another thread waits on the server.
    ticks = 0
    done = threading.Event()

    def count():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        client.run_ps("Start-Sleep -Milliseconds 500")
    finally:
        done.set()
        counter.join()
    assert ticks > 20
