"""A server whose ReceiveResponse is not the answer to the Receive (issue 12 items 3 and 4): a Done
without an exit code, or another command's output, raises ProtocolError through the public API,
never a result, and leaves nothing on the endpoint."""

from __future__ import annotations

import asyncio

import pytest

import psremote
from psremote import ProtocolError

from conftest import PASSWORD, USER

COUNTERS = ("commands", "pipelines", "pools", "shells")


def connect(endpoint) -> psremote.Client:
    return psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts="127.0.0.1")


def assert_nothing_left(endpoint) -> None:
    for counter in COUNTERS:
        state = endpoint.wait_state(counter, 0)
        assert state[counter] == 0, (counter, state)


def test_done_without_an_exit_code_is_not_zero(start_endpoint):
    endpoint = start_endpoint("--misbehave", "no-exit-code")
    with connect(endpoint) as client:
        with pytest.raises(ProtocolError, match="exit code"):
            client.run_cmd("echo", ["hi"])
        # Only that reply was broken: the next command's real exit code comes through.
        assert client.run_cmd("exit 3").exit_code == 3
    assert_nothing_left(endpoint)


def test_streamed_done_without_an_exit_code_raises_and_keeps_it_unknown(start_endpoint):
    endpoint = start_endpoint("--misbehave", "no-exit-code")
    with connect(endpoint) as client, client.cmd_shell() as shell:
        process = shell.start("echo", ["hi"])
        with pytest.raises(ProtocolError):
            for _ in process:
                pass
        assert process.exit_code is None
    assert_nothing_left(endpoint)


def test_another_commands_output_is_refused_for_cmd(start_endpoint):
    endpoint = start_endpoint("--misbehave", "foreign-command-id")
    with connect(endpoint) as client:
        with pytest.raises(ProtocolError, match="another command"):
            client.run_cmd("echo", ["hi"])
        result = client.run_cmd("echo", ["again"])
        assert (result.stdout, result.exit_code) == (b"again\n", 0)
    assert_nothing_left(endpoint)


def test_another_pipelines_output_is_refused_for_powershell(start_endpoint):
    endpoint = start_endpoint("--misbehave", "foreign-command-id")
    with connect(endpoint) as client:
        with pytest.raises(ProtocolError, match="another command"):
            client.run_ps("Write-Output hello")
    assert_nothing_left(endpoint)


async def _run_cmd_async(endpoint) -> None:
    async with psremote.AsyncClient(
        url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts="127.0.0.1"
    ) as client:
        with pytest.raises(ProtocolError, match="exit code"):
            await client.run_cmd("echo", ["hi"])


def test_async_run_cmd_does_not_invent_an_exit_code(start_endpoint):
    endpoint = start_endpoint("--misbehave", "no-exit-code")
    asyncio.run(_run_cmd_async(endpoint))
    assert_nothing_left(endpoint)
