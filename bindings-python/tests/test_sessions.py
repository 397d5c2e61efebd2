"""Sessions that outlive the client, from Python: disconnect, reconnect, is_alive, list_pools,
connect_pool and attach_pipeline, blocking and asyncio, against the loopback endpoint, with
pypsrp 0.9.1 as the independent peer on the other side of a disconnect (it disconnects a pool
psremote reattaches, and reattaches a pool psremote disconnected).

Every test leaves the endpoint with no shell, disconnected or not (a disconnected pool is
deleted by reconnect + close or by connect + close).
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from typing import Iterator

import pytest
from pypsrp.complex_objects import PSInvocationState, RunspacePoolState
from pypsrp.powershell import PowerShell as PyPowerShell
from pypsrp.powershell import RunspacePool as PyRunspacePool
from pypsrp.wsman import WSMan

import psremote
from psremote import ConfigurationError, DisconnectedError, NotFoundError, PoolInfo
from psremote.aio import AsyncClient
from psremote_testserver.testing import PASSWORD, USER, Endpoint, wait_for

from conftest import TRUSTED

SLOW_SCRIPT = "Write-Output before; Start-Sleep -Milliseconds 300; Write-Output after"
#: Produces its output only after the test has disconnected (generous: the disconnect is one
#: request), so that output is what the server keeps while the pool is disconnected.
LATE_SCRIPT = "Start-Sleep -Seconds 2; Write-Output late1; Write-Output late2"
HANG_GUARD = 30.0


@pytest.fixture(scope="module")
def sessions_endpoint(start_endpoint) -> Endpoint:
    """An endpoint of this module's own, so its shell counts are this module's alone."""
    return start_endpoint()


@pytest.fixture
def endpoint_clean(sessions_endpoint) -> Iterator[Endpoint]:
    """The endpoint, checked empty after the test: no shell, no disconnected one, no command."""
    yield sessions_endpoint
    state = sessions_endpoint.wait_state("shells", 0, timeout=HANG_GUARD)
    assert (state["shells"], state["disconnected"], state["pools"]) == (0, 0, 0), state
    state = sessions_endpoint.wait_state("commands", 0, timeout=HANG_GUARD)
    assert state["commands"] == 0, state


def new_client(endpoint: Endpoint) -> psremote.Client:
    return psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts=TRUSTED)


def new_async_client(endpoint: Endpoint) -> AsyncClient:
    return AsyncClient(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts=TRUSTED)


def pypsrp_wsman(endpoint: Endpoint) -> WSMan:
    return WSMan(
        "127.0.0.1",
        port=endpoint.port,
        ssl=False,
        auth="negotiate",
        username=USER,
        password=PASSWORD,
        encryption="always",
        path="wsman",
    )


def listed(client: psremote.Client, pool_id: str) -> PoolInfo:
    [info] = [p for p in client.list_pools() if p.id.upper() == pool_id.upper()]
    return info


def pypsrp_disconnect_with_pipeline(endpoint: Endpoint, script: str) -> tuple:
    """pypsrp opens a pool, starts ``script`` and disconnects; its connection then ends."""
    with pypsrp_wsman(endpoint) as connection:
        pool = PyRunspacePool(connection)
        pool.open()
        ps = PyPowerShell(pool)
        ps.add_script(script)
        ps.begin_invoke()
        pool.disconnect()
        assert pool.state == RunspacePoolState.DISCONNECTED
    return pool.id, ps.id


# -- pypsrp disconnects, psremote lists and reattaches ---------------------------------------------
def test_pool_disconnected_by_pypsrp_is_listed_and_reattached(endpoint_clean):
    pool_id, command_id = pypsrp_disconnect_with_pipeline(endpoint_clean, SLOW_SCRIPT)
    with new_client(endpoint_clean) as client:
        info = listed(client, pool_id)
        assert info.disconnected and info.state == "Disconnected"
        assert info.configuration_name == "Microsoft.PowerShell"
        assert [p.upper() for p in info.pipelines] == [command_id.upper()]
        assert info.owner and info.buffer_mode == "block" and info.idle_timeout and info.idle_timeout > 0

        pool = client.connect_pool(info)
        try:
            assert pool.state == "Opened" and not pool.disconnected
            assert listed(client, pool_id).state == "Connected"
            pipeline = pool.attach_pipeline(info.pipelines[0])
            result = pipeline.result()
            assert result.output == ["before", "after"]
            assert result.state == "Completed"
            # The reattached pool runs new pipelines too.
            assert pool.run_ps("Write-Output again").output == ["again"]
        finally:
            pool.close()


def test_connect_pool_by_id_and_stream_events(endpoint_clean):
    pool_id, command_id = pypsrp_disconnect_with_pipeline(endpoint_clean, SLOW_SCRIPT)
    with new_client(endpoint_clean) as client:
        with client.connect_pool(pool_id.lower()) as pool:
            with pool.attach_pipeline(command_id) as pipeline:
                outputs = [e.value for e in pipeline if e.kind == "output"]
            assert outputs == ["before", "after"]
            assert pipeline.finished


# -- psremote disconnects, pypsrp reattaches -------------------------------------------------------
def test_pool_disconnected_by_psremote_is_reattached_by_pypsrp(endpoint_clean):
    client = new_client(endpoint_clean)
    pool = client.runspace_pool()
    # Output the pipeline writes after the disconnect is what the server keeps for pypsrp
    # (what psremote received before it went to psremote's handle).
    pipeline = pool.start(LATE_SCRIPT)
    pool.disconnect()
    assert pool.disconnected and pool.state == "Disconnected"
    pool_id, command_id = pool.id, pipeline.id
    # The client ends without deleting its disconnected pool: that is what disconnecting is for.
    client.close()
    del pipeline, pool, client
    gc.collect()
    state = endpoint_clean.state()
    assert (state["shells"], state["disconnected"]) == (1, 1)

    with pypsrp_wsman(endpoint_clean) as connection:
        found = [p for p in PyRunspacePool.get_runspace_pools(connection) if p.id.upper() == pool_id.upper()]
        assert len(found) == 1
        other = found[0]
        assert other.state == RunspacePoolState.DISCONNECTED
        assert [p.upper() for p in other.pipelines] == [command_id.upper()]
        try:
            other.connect()
            [ps] = other.create_disconnected_power_shells()
            assert ps.connect() == ["late1", "late2"]
            assert ps.state == PSInvocationState.COMPLETED
            ps.close()
        finally:
            other.close()


# -- psremote alone: output produced while disconnected arrives after reconnect ---------------------
def test_disconnect_reconnect_receives_output_produced_meanwhile(endpoint_clean):
    with new_client(endpoint_clean) as client, client.runspace_pool() as pool:
        pipeline = pool.start(LATE_SCRIPT)
        pool.disconnect()
        assert endpoint_clean.state()["disconnected"] == 1
        # The pipeline finishes on the server while nobody receives.
        assert wait_for(lambda: endpoint_clean.state()["pipelines_running"] == 0, timeout=HANG_GUARD)
        assert [p.upper() for p in listed(client, pool.id).pipelines] == [pipeline.id.upper()]
        pool.reconnect()
        assert pool.state == "Opened" and endpoint_clean.state()["disconnected"] == 0
        assert pipeline.result().output == ["late1", "late2"]
        assert pool.run_ps("Write-Output next").output == ["next"]


def test_another_psremote_client_connects_and_attaches(endpoint_clean):
    first = new_client(endpoint_clean)
    pool = first.runspace_pool(idle_timeout=600, buffer_mode="block")
    # Sleeps long enough to be still running on the server when the second attach comes.
    pipeline = pool.start("Start-Sleep -Seconds 5; Write-Output late1; Write-Output late2")
    pool.disconnect()
    pool_id, command_id = pool.id, pipeline.id
    first.close()
    del pipeline, pool, first
    gc.collect()
    with new_client(endpoint_clean) as second:
        info = listed(second, pool_id)
        assert info.idle_timeout == 600.0 and info.buffer_mode == "block"
        with second.connect_pool(info) as attached:
            again = attached.attach_pipeline(command_id)
            # While it is attached (and still running), a second attach is refused here.
            # (Once its result is read the pipeline is released on the server, and an attach
            # after that is the server's NotFound: which one depends on how far the release got.)
            with pytest.raises(ConfigurationError):
                attached.attach_pipeline(command_id)
            assert again.result().output == ["late1", "late2"]


# -- calls on a disconnected pool --------------------------------------------------------------------
def test_calls_on_a_disconnected_pool_raise_disconnected_error(endpoint_clean):
    with new_client(endpoint_clean) as client, client.runspace_pool() as pool:
        pool.disconnect()
        with pytest.raises(DisconnectedError):
            pool.run_ps("Write-Output no")
        with pytest.raises(DisconnectedError):
            pool.available_runspaces()
        with pytest.raises(DisconnectedError):
            pool.disconnect()
        assert pool.is_alive()  # a disconnected pool still exists on the server
        pool.reconnect()
        assert pool.available_runspaces() == 1
        assert pool.run_ps("Write-Output yes").output == ["yes"]


def test_reconnect_of_an_opened_pool_is_refused(endpoint_clean):
    with new_client(endpoint_clean) as client, client.runspace_pool() as pool:
        with pytest.raises(psremote.PSRemoteError):
            pool.reconnect()
        assert pool.run_ps("Write-Output still").output == ["still"]


# -- is_alive ------------------------------------------------------------------------------------------
def test_is_alive_on_a_live_and_on_a_deleted_pool(endpoint_clean):
    with new_client(endpoint_clean) as client:
        pool = client.runspace_pool()
        assert pool.is_alive()
        # Another client (pypsrp's WSMan) deletes the shell underneath.
        with pypsrp_wsman(endpoint_clean) as connection:
            from pypsrp.wsman import SelectorSet

            selectors = SelectorSet()
            selectors.add_option("ShellId", pool.id)
            connection.delete("http://schemas.microsoft.com/powershell/Microsoft.PowerShell", selector_set=selectors)
        assert pool.is_alive() is False
        assert pool.closed
        with pytest.raises(psremote.ClosedError):
            pool.run_ps("1")
        pool.close()  # nothing left to delete


# -- a pool that is gone ------------------------------------------------------------------------------
def test_idle_timeout_deletes_a_disconnected_pool_then_reconnect_and_connect_are_not_found(endpoint_clean):
    with new_client(endpoint_clean) as client:
        pool = client.runspace_pool(idle_timeout=1)
        assert listed(client, pool.id).idle_timeout == 1.0
        pool.disconnect()
        # The server deletes it once it has waited 1 s for a client.
        assert wait_for(lambda: endpoint_clean.state()["shells"] == 0, timeout=HANG_GUARD)
        with new_client(endpoint_clean) as other:
            with pytest.raises(NotFoundError) as gone:
                other.connect_pool(pool.id)
            assert gone.value.code == 2150858843  # InvalidSelectors
            assert isinstance(gone.value, LookupError)
        with pytest.raises(NotFoundError):
            pool.reconnect()
        assert pool.closed and pool.is_alive() is False


def test_connect_to_a_pool_that_never_existed(endpoint_clean):
    with new_client(endpoint_clean) as client:
        with pytest.raises(NotFoundError):
            client.connect_pool(str(uuid.uuid4()).upper())
        with pytest.raises(ConfigurationError):
            client.connect_pool("not a pool id")
        with pytest.raises(ConfigurationError):
            client.connect_pool(42)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            client.connect_pool("")


def test_attach_to_an_unknown_pipeline_is_not_found(endpoint_clean):
    pool_id, _ = pypsrp_disconnect_with_pipeline(endpoint_clean, "Write-Output x")
    with new_client(endpoint_clean) as client, client.connect_pool(pool_id) as pool:
        with pytest.raises(NotFoundError):
            pool.attach_pipeline(str(uuid.uuid4()).upper())
        with pytest.raises(ConfigurationError):
            pool.attach_pipeline("nope")
        assert pool.run_ps("Write-Output fine").output == ["fine"]


# -- buffer modes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["block", "drop"])
def test_buffer_modes(start_endpoint, mode):
    endpoint = start_endpoint("--psrp-buffer-kb", "64")
    with new_client(endpoint) as client, client.runspace_pool(buffer_mode=mode) as pool:
        assert listed(client, pool.id).buffer_mode == mode
        # 200 objects of about 1 KB each, produced once the pool is disconnected: more than the
        # 64 KB the endpoint buffers per pipeline.
        pipeline = pool.start("Start-Sleep -Seconds 2; New-TestObject -Count 200 -Size 1000")
        pool.disconnect()
        if mode == "drop":
            # The pipeline does not wait for a client: it finishes, dropping its oldest output.
            assert wait_for(lambda: endpoint.state()["pipelines_running"] == 0, timeout=HANG_GUARD)
        else:
            # It waits for a client once its buffer is full.
            assert wait_for(lambda: endpoint.state()["disconnected"] == 1, timeout=HANG_GUARD)
        pool.reconnect()
        result = pipeline.result()
        assert result.state == "Completed"
        if mode == "block":
            assert len(result.output) == 200
        else:
            assert 0 < len(result.output) < 200
    state = endpoint.wait_state("shells", 0, timeout=HANG_GUARD)
    assert (state["shells"], state["disconnected"]) == (0, 0)


def test_outlive_options_are_checked(endpoint_clean):
    with new_client(endpoint_clean) as client:
        with pytest.raises(ConfigurationError):
            client.runspace_pool(buffer_mode="sometimes")
        with pytest.raises(ConfigurationError):
            client.runspace_pool(idle_timeout=0)
        with pytest.raises(ConfigurationError):
            client.runspace_pool(idle_timeout=True)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            client.connect_pool(str(uuid.uuid4()), buffer_mode="Keep")


# -- asyncio -------------------------------------------------------------------------------------------------
def test_async_pool_disconnected_by_pypsrp_is_listed_and_reattached(endpoint_clean):
    pool_id, command_id = pypsrp_disconnect_with_pipeline(endpoint_clean, SLOW_SCRIPT)

    async def main() -> None:
        async with new_async_client(endpoint_clean) as client:
            [info] = [p for p in await client.list_pools() if p.id.upper() == pool_id.upper()]
            assert info.disconnected and [p.upper() for p in info.pipelines] == [command_id.upper()]
            async with await client.connect_pool(info) as pool:
                pipeline = await pool.attach_pipeline(info.pipelines[0])
                assert (await pipeline.result()).output == ["before", "after"]
                assert (await pool.run_ps("Write-Output again")).output == ["again"]

    asyncio.run(asyncio.wait_for(main(), HANG_GUARD))


def test_async_disconnect_reconnect_is_alive(endpoint_clean):
    async def main() -> None:
        async with new_async_client(endpoint_clean) as client:
            pool = await client.runspace_pool(idle_timeout=300, buffer_mode="drop")
            try:
                assert await pool.is_alive()
                pipeline = await pool.start(LATE_SCRIPT)
                await pool.disconnect()
                assert pool.disconnected
                with pytest.raises(DisconnectedError):
                    await pool.run_ps("1")
                [info] = [p for p in await client.list_pools() if p.id == pool.id]
                assert (info.state, info.buffer_mode, info.idle_timeout) == ("Disconnected", "drop", 300.0)
                assert await pool.is_alive()
                await pool.reconnect()
                assert (await pipeline.result()).output == ["late1", "late2"]
            finally:
                await pool.close()
            assert await pool.is_alive() is False

    asyncio.run(asyncio.wait_for(main(), HANG_GUARD))


def test_async_disconnected_pool_outlives_the_client_and_is_connected_again(endpoint_clean):
    async def main() -> None:
        async with new_async_client(endpoint_clean) as first:
            pool = await first.runspace_pool()
            pipeline = await pool.start(LATE_SCRIPT)
            await pool.disconnect()
            pool_id, command_id = pool.id, pipeline.id
        async with new_async_client(endpoint_clean) as second:
            with pytest.raises(NotFoundError):
                await second.connect_pool(str(uuid.uuid4()))
            attached = await second.connect_pool(pool_id)
            try:
                assert (await (await attached.attach_pipeline(command_id)).result()).output == ["late1", "late2"]
            finally:
                await attached.close()

    asyncio.run(asyncio.wait_for(main(), HANG_GUARD))
