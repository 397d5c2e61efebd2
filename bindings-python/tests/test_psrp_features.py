"""The rest of PSRP from Python: command metadata, application arguments, nested pipelines, the
invocation-info switch, merges per command and the key exchange's deadline, against the loopback
endpoint (psrpcore's server side)."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import List

import pytest

import psremote
from psremote import ConfigurationError
from psremote.aio import AsyncClient
from psremote_testserver.testing import PASSWORD, USER


def _names(found: List[object]) -> List[str]:
    return sorted(str(getattr(m, "Name")) for m in found)


def test_command_metadata_by_name_and_type(pool):
    found = pool.command_metadata("Write-*")
    names = _names(found)
    assert "Write-Output" in names and "Write-Error" in names
    assert all(n.startswith("Write-") for n in names)
    assert pool.command_metadata(["Get-Date", "Get-Host"], command_type="Cmdlet")
    assert pool.command_metadata("No-SuchCommand") == []
    # Aliases only: the endpoint has none.
    assert pool.command_metadata("*", command_type="Alias") == []


def test_command_type_names_and_flags_are_checked(pool):
    with pytest.raises(ConfigurationError):
        pool.command_metadata(command_type="Cmdlets")
    with pytest.raises(ConfigurationError):
        pool.command_metadata(command_type=0)
    with pytest.raises(ConfigurationError):
        pool.command_metadata(name=[1, 2])


def test_application_arguments_reach_the_server(client):
    with client.runspace_pool(application_arguments={"tenant": "blue", "run": 7}) as pool:
        (info,) = pool.run_ps("Get-PSSenderInfo").output
    arguments = info.ApplicationArguments
    assert arguments["tenant"] == "blue" and arguments["run"] == 7
    with pytest.raises(ConfigurationError):
        client.runspace_pool(application_arguments={1: "no"})  # type: ignore[dict-item]


def test_exchange_key_has_a_deadline(pool):
    pool.exchange_key(timeout=30)
    with pytest.raises(ValueError):
        pool.exchange_key(timeout=0)


def _create_pipelines(capture) -> List[str]:
    """The CREATE_PIPELINE messages the server received, decoded from the captured requests."""
    found = []
    for path in sorted(capture.glob("*.http")):
        text = path.read_bytes().decode("utf-8", "replace")
        for arguments in re.findall(r"<rsp:Arguments>([^<]+)</rsp:Arguments>", text):
            blob = base64.b64decode(arguments)
            # fragment header (21 bytes) + message header (40 bytes), then the CLIXML
            found.append(blob[61:].decode("utf-8", "replace"))
    return found


def test_pipeline_switches_reach_the_server(start_endpoint, tmp_path):
    capture = tmp_path / "capture"
    endpoint = start_endpoint("--allow-unencrypted", "--capture", str(capture))
    options = dict(url=endpoint.url, username=USER, password=PASSWORD, auth="basic", allow_unencrypted=True)
    with psremote.Client(**options) as client:
        with client.runspace_pool() as pool:
            assert pool.run_ps("Write-Output plain").output == ["plain"]
            assert pool.run_ps("Write-Output quiet", invocation_info=False).output == ["quiet"]
            ps = pool.powershell().add_command("Write-Error").add_parameter("Message", "merged").merge_error()
            merged = ps.invoke()
            # With the error stream merged into output, the error arrives as output.
            assert merged.errors == [] and len(merged.output) == 1
            nested = pool.start("Write-Output x", nested=True)
            nested.result()
    plain, quiet, merged_msg, nested_msg = _create_pipelines(capture)
    assert '<ToString>AddInvocationInfo</ToString><I32>15</I32>' in plain
    assert '<B N="IsNested">false</B>' in plain
    assert '<ToString>None</ToString><I32>0</I32>' in quiet.split('N="RemoteStreamOptions"')[1][:200]
    # MergeMyResult Error (2) into MergeToResult Output (1)
    assert "<ToString>Error</ToString><I32>2</I32>" in merged_msg.split('N="MergeMyResult"')[1][:400]
    assert "<ToString>Output</ToString><I32>1</I32>" in merged_msg.split('N="MergeToResult"')[1][:400]
    assert '<B N="IsNested">true</B>' in nested_msg
    assert endpoint.wait_state("pools", 0)["pools"] == 0


def test_the_same_from_asyncio(credentials):
    async def main() -> None:
        async with AsyncClient(**credentials) as client:
            async with client.runspace_pool(application_arguments={"k": "v"}) as pool:
                found = await pool.command_metadata("Get-Date")
                assert _names(found) == ["Get-Date"]
                await pool.exchange_key(timeout=30)
                (info,) = (await pool.run_ps("Get-PSSenderInfo")).output
                assert info.ApplicationArguments["k"] == "v"
                result = await pool.run_ps("Write-Output a", invocation_info=False)
                assert result.output == ["a"]

    asyncio.run(main())


def test_server_limits_are_read_and_fitted(start_endpoint):
    endpoint = start_endpoint("--max-envelope-kb", "150", "--max-timeout-ms", "45000")
    options = dict(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts="127.0.0.1")
    big = ["x" * 400_000]
    with psremote.Client(**options) as client:
        config = client.server_config()
        assert config.max_envelope_size_kb == 150 and config.max_envelope_size == 153_600
        assert config.max_timeout_ms == 45_000
        assert "Service/AllowUnencrypted" in config.entries
        # Left alone, psremote sizes requests for a protocol 2.3 server (500 KB): this server
        # refuses them, and the error says why and what to do.
        with pytest.raises(psremote.TransportError) as info:
            client.run_ps(client.powershell().add_command("Measure-Input"), input=big)
        assert "MaxEnvelopeSizekb" in str(info.value) and "fit_envelope_to_server" in str(info.value)
    with psremote.Client(**options) as client:
        assert client.fit_envelope_to_server() == 153_600
        result = client.run_ps(client.powershell().add_command("Measure-Input"), input=big)
        assert result.output[0].Count == 1
    with psremote.Client(**options, max_envelope_size=100 * 1024) as client:
        assert client.fit_envelope_to_server() == 100 * 1024


def test_server_limits_from_asyncio(start_endpoint):
    endpoint = start_endpoint("--max-envelope-kb", "150")
    options = dict(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts="127.0.0.1")

    async def main() -> None:
        async with AsyncClient(**options) as client:
            assert (await client.server_config()).max_envelope_size_kb == 150
            assert await client.fit_envelope_to_server() == 153_600

    asyncio.run(main())
