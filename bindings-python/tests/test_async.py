"""The asyncio API runs on the caller's loop."""

from __future__ import annotations

import asyncio
import time

import pytest

import psremote
from psremote import AsyncClient, PipelineError


def run(coro):
    return asyncio.run(coro)


def test_run_ps_and_run_cmd(credentials):
    async def main():
        async with AsyncClient(**credentials) as client:
            result = await client.run_ps("Write-Output hello; Write-Warning careful")
            cmd = await client.run_cmd("echo", ["from", "sh"])
            return result, cmd

    result, cmd = run(main())
    assert result.output == ["hello"] and result.warnings == ["careful"]
    assert cmd.text.strip() == "from sh" and cmd.exit_code == 0


def test_gather_several_run_ps(credentials, endpoint):
    async def main():
        async with AsyncClient(**credentials) as client:
            t0 = time.monotonic()
            results = await asyncio.gather(*(client.run_ps(f"Start-Sleep -Milliseconds 600; Write-Output {i}") for i in range(4)))
            return results, time.monotonic() - t0

    results, elapsed = run(main())
    assert [r.output for r in results] == [[0], [1], [2], [3]]
    # The default pool runs 4 pipelines at once: far less than 4 x 600 ms.
    assert elapsed < 1.8


def test_async_iteration_of_events(credentials):
    async def main():
        async with AsyncClient(**credentials) as client:
            async with client.runspace_pool() as pool:
                handle = await pool.powershell().add_script("Write-Output a; Write-Verbose v; Write-Output b").start()
                return [(e.kind, e.value) async for e in handle], handle.state

    events, state = run(main())
    assert events[:3] == [("output", "a"), ("verbose", "v"), ("output", "b")]
    assert events[-1][0] == "state" and state == "Completed"


def test_async_input_from_async_iterable(credentials):
    async def numbers():
        for i in range(1500):
            yield i
            if i % 500 == 0:
                await asyncio.sleep(0)

    async def main():
        async with AsyncClient(**credentials) as client:
            pool = await client.runspace_pool()
            try:
                ps = pool.powershell().add_command("Measure-Input")
                from_async = await ps.invoke(input=numbers())
                from_sync = await pool.powershell().add_command("Write-Output").invoke(input=iter(range(3)))
                return from_async.output[0].Count, from_sync.output
            finally:
                await pool.close()

    assert run(main()) == (1500, [0, 1, 2])


def test_async_stop(credentials, endpoint):
    async def main():
        async with AsyncClient(**credentials) as client:
            async with client.runspace_pool() as pool:
                handle = await pool.start("Invoke-Stall")
                await asyncio.sleep(0.2)
                await handle.stop()
                return await handle.result()

    result = run(main())
    assert result.state == "Stopped"
    assert endpoint.wait_state("pipelines_running", 0)["pipelines_running"] == 0


def test_cancelling_a_task_stops_the_remote_pipeline(credentials, endpoint):
    async def main():
        async with AsyncClient(**credentials) as client:
            async with client.runspace_pool() as pool:
                task = asyncio.ensure_future(pool.run_ps("Invoke-Stall"))
                await asyncio.sleep(0.3)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                # The pool keeps working.
                return (await pool.run_ps("Write-Output after")).output

    assert run(main()) == ["after"]
    assert endpoint.wait_state("pipelines_running", 0)["pipelines_running"] == 0


def test_async_errors_and_raise_on_error(credentials):
    async def main():
        async with AsyncClient(**credentials) as client:
            with pytest.raises(PipelineError, match="async boom"):
                await client.run_ps("Invoke-Failure 'async boom'", raise_on_error=True)
            with pytest.raises(psremote.WSManFault):
                await client.runspace_pool("NoSuchEndpoint")
            async with client.runspace_pool() as pool:
                ps = pool.powershell().add_command("Write-Output").add_argument(1)
                assert (await ps.invoke()).output == [1]

    run(main())


def test_async_wrong_password(endpoint):
    async def main():
        async with AsyncClient(url=endpoint.url, username="user", password="nope", auth="ntlm", trusted_hosts="127.0.0.1"):
            pass

    with pytest.raises(psremote.AuthenticationError):
        run(main())


def test_async_host(credentials):
    class Host(psremote.PSHost):
        def read_line(self):
            return "async line"

    async def main():
        async with AsyncClient(**credentials, ps_host=Host()) as client:
            return (await client.run_ps("Read-Host")).output

    assert run(main()) == ["async line"]


def test_async_secure_string_after_key_exchange(credentials):
    async def main():
        async with AsyncClient(**credentials) as client:
            async with client.runspace_pool() as pool:
                await pool.exchange_key()
                secret = await pool.run_ps("ConvertTo-SecureString s3 -AsPlainText -Force")
                sent = await pool.powershell().add_command("Write-Output").invoke(input=[psremote.SecureString("in")])
                return secret.output[0].get_value(), sent.output[0].get_value()

    assert run(main()) == ("s3", "in")


def test_async_secure_string_exchanges_the_key_by_itself(credentials):
    async def main():
        async with AsyncClient(**credentials) as client:
            secret = await client.run_ps("ConvertTo-SecureString s3 -AsPlainText -Force")
            return secret.output[0].get_value()

    assert run(main()) == "s3"


def test_two_loops_one_after_the_other(credentials):
    client = AsyncClient(**credentials)

    async def once(text):
        return (await client.run_cmd("echo", [text])).text.strip()

    assert run(once("one")) == "one"
    assert run(once("two")) == "two"
    run(client.close())
