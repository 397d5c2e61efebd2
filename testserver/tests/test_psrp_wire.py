"""The PSRP engine's WS-Man replies and faults, compared with Windows' (test_psrp_*.yml).

Driven by psrpcore's client over rawclient, so every Stream element,
CommandState and fault can be inspected.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid

import psrpcore
import pytest
import rawclient as rc
from psrpclient import PS_SIGNAL, PS_URI, PSRPSession, fragment_header
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    HostInfo,
    NETException,
    PSInvocationState,
)

BOM = b"\xef\xbb\xbf"
WINDOWS_SHELL_FIELDS = [
    "ShellId", "ResourceUri", "Owner", "ClientIP", "ProcessId", "IdleTimeOut", "InputStreams", "OutputStreams",
    "MaxIdleTimeOut", "Locale", "DataLocale", "CompressionMode", "ProfileLoaded", "Encoding", "BufferMode", "State",
    "ShellRunTime", "ShellInactivity",
]  # fmt: skip


@pytest.fixture
def session(endpoint):
    with PSRPSession(endpoint.url) as psrp:
        psrp.open()
        yield psrp


def output_events(replies):
    return [e.data for r in replies for e in r.events if isinstance(e, psrpcore.PipelineOutputEvent)]


def test_create_response_shape(endpoint):
    with PSRPSession(endpoint.url) as psrp:
        response = psrp.create()
        assert response.status == 200
        root = response.xml
        assert rc.shell_id_of(root) == psrp.shell_id  # the client's ShellId attribute is the shell id
        created = root.find("s:Body/x:ResourceCreated", rc.NS)
        assert created.find("a:ReferenceParameters/w:ResourceURI", rc.NS).text == PS_URI + "Microsoft.PowerShell"
        shell = root.find("s:Body/rsp:Shell", rc.NS)
        assert [child.tag.split("}")[1] for child in shell] == WINDOWS_SHELL_FIELDS
        values = {child.tag.split("}")[1]: child.text for child in shell}
        assert (values["InputStreams"], values["OutputStreams"], values["State"]) == ("stdin pr", "stdout", "Connected")
        assert values["IdleTimeOut"] == "PT7200.000S" and values["BufferMode"] == "Block"


def test_create_without_protocolversion(endpoint):
    with PSRPSession(endpoint.url) as psrp:
        response = psrp.create(options={})
        assert response.status == 500
        fault = rc.parse_fault(response.xml)
        assert (fault.value, fault.subcode, fault.code) == ("s:Receiver", "w:InternalError", 0x80540BC7)
        assert fault.message.startswith("An option with name protocolversion is expected from the client.")
        provider = response.xml.find(".//f:ProviderFault", rc.NS)
        assert provider.get("provider") == "microsoft.powershell"


def test_create_with_unsupported_protocol(endpoint):
    with PSRPSession(endpoint.url) as psrp:
        fault = rc.parse_fault(psrp.create(options={"protocolversion": "3.0"}).xml)
        assert fault.code == 0x80540BC5


def test_unknown_configuration(endpoint):
    with PSRPSession(endpoint.url, configuration="Nope") as psrp:
        fault = rc.parse_fault(psrp.create().xml)
        assert (fault.subcode, fault.code, fault.detail) == (
            "w:DestinationUnreachable",
            2150858752,
            "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidResourceURI",
        )


def test_pool_receive_times_out(session):
    started = time.monotonic()
    reply = session.receive(timeout="PT0.5S")
    assert reply.response.status == 500
    assert rc.parse_fault(reply.response.xml).code == 2150858793
    assert 0.4 < time.monotonic() - started < 3


def test_pipeline_receive_shape(session):
    ps = psrpcore.ClientPowerShell(session.pool)
    ps.add_script("Write-Output hi")
    command_id = session.start(ps)
    (reply,) = session.run_to_end(ps, command_id)
    assert [s.get("Name") for s in reply.streams] == ["stdout", "stdout"]
    assert all(s.get("CommandId") == command_id for s in reply.streams)
    # One whole fragment per Stream element, as Windows sends; every message starts its CLIXML with a BOM.
    headers = [fragment_header(f) for f in reply.fragments]
    assert [h[1:3] for h in headers] == [(0, 3), (0, 3)]
    assert headers[0][0] < headers[1][0]
    assert all(f[21 + 40 : 21 + 43] == BOM for f in reply.fragments)
    assert reply.state.find("rsp:ExitCode", rc.NS).text == "0"
    assert output_events([reply]) == ["hi"]
    states = [e.state for e in reply.events if isinstance(e, psrpcore.PipelineStateEvent)]
    assert states == [PSInvocationState.Completed]  # no Running state, like Windows


def test_reply_respects_max_envelope(session):
    ps = psrpcore.ClientPowerShell(session.pool)
    ps.add_script("New-HugeObject -Size 60000")
    command_id = session.start(ps)
    replies = session.run_to_end(ps, command_id, max_envelope=16384)
    assert len(replies) >= 5
    assert all(len(r.response.plaintext) <= 16384 for r in replies)
    (value,) = output_events(replies)
    assert len(value) == 60000
    fragment_ids = [fragment_header(f)[1] for r in replies for f in r.fragments]
    assert fragment_ids[:3] == [0, 1, 2]


@pytest.mark.parametrize("code", [PS_SIGNAL + "crtl_c", PS_SIGNAL + "ctrl_c", "powershell/signal/crtl_c"])
def test_stop_signal(session, code):
    ps = psrpcore.ClientPowerShell(session.pool)
    ps.add_script("Invoke-Stall")
    command_id = session.start(ps)
    assert session.receive(command_id, timeout="PT0.3S").response.status == 500  # nothing yet
    response = session.signal(command_id, code)
    assert response.status == 200
    assert response.xml.find("s:Body/rsp:SignalResponse", rc.NS) is not None
    (reply,) = session.run_to_end(ps, command_id)
    assert ps.state == PSInvocationState.Stopped
    stopped = [e for e in reply.events if isinstance(e, psrpcore.PipelineStateEvent)][0]
    assert stopped.reason.FullyQualifiedErrorId == "PipelineStopped"


def test_terminate_releases_pipeline(endpoint, session):
    ps = psrpcore.ClientPowerShell(session.pool)
    ps.add_script("Invoke-Stall")
    command_id = session.start(ps)
    assert endpoint.state()["pipelines"] >= 1
    response = session.signal(command_id, rc.SHELL + "signal/terminate")
    assert response.status == 200
    fault = rc.parse_fault(session.receive(command_id).response.xml)
    assert (fault.subcode, fault.code) == ("w:InvalidSelectors", 2150858843)
    fault = rc.parse_fault(session.signal(command_id, rc.SHELL + "signal/Terminate").xml)
    assert fault.code == 2150858843


def test_host_call_answered_with_error(session):
    host = HostInfo(IsHostNull=False, IsHostUINull=False, IsHostRawUINull=True, UseRunspaceHost=False)
    ps = psrpcore.ClientPowerShell(session.pool, host=host)
    ps.add_script("Read-Host; 'after'")
    command_id = session.start(ps)
    reply = session.receive(command_id)
    (call,) = [e for e in reply.events if isinstance(e, psrpcore.PipelineHostCallEvent)]
    assert call.method_identifier.name == "ReadLine"
    error = ErrorRecord(
        Exception=NETException(Message="no console here"),
        CategoryInfo=ErrorCategoryInfo(Category=ErrorCategory.ResourceUnavailable),
        FullyQualifiedErrorId="NoConsole",
    )
    ps.host_response(call.ci, error_record=error)
    session.send_pending()
    replies = session.run_to_end(ps, command_id)
    errors = [e.record for r in replies for e in r.events if isinstance(e, psrpcore.ErrorRecordEvent)]
    assert [str(e) for e in errors] == ["no console here"]
    assert output_events(replies) == ["after"] and ps.state == PSInvocationState.Completed


def test_pool_receive_wakes_on_other_connection(endpoint, session):
    """A shell-level Receive blocked on one connection returns as soon as a Send on another one produces data."""
    result = {}

    def wait():
        result["reply"] = session.receive(timeout="PT10S")

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    with rc.RawClient(endpoint.url) as other:
        other.authenticate()
        session.pool.get_available_runspaces()
        payload = session.pool.data_to_send()
        body = f'<rsp:Send><rsp:Stream Name="stdin">{base64.b64encode(payload.data).decode()}</rsp:Stream></rsp:Send>'
        _, xml = rc.envelope(rc.SHELL + "Send", body, shell_id=session.shell_id, resource_uri=session.resource_uri)
        started = time.monotonic()
        assert other.post_sealed(xml).status == 200
    waiter.join(5)
    assert time.monotonic() - started < 2
    (event,) = result["reply"].events
    assert isinstance(event, psrpcore.GetRunspaceAvailabilityEvent) and event.count == 1


def test_send_to_unknown_command(session):
    body = f'<rsp:Send><rsp:Stream Name="stdin" CommandId="{str(uuid.uuid4()).upper()}">AAAA</rsp:Stream></rsp:Send>'
    fault = rc.parse_fault(session.post(rc.SHELL + "Send", body).xml)
    assert fault.code == 2150858843


def test_malformed_psrp_data_faults(session):
    garbage = base64.b64encode(b"\x00" * 8 + b"\x00" * 8 + b"\x03" + b"\x00\x00\x00\x05" + b"short").decode()
    body = f'<rsp:Send><rsp:Stream Name="stdin">{garbage}</rsp:Stream></rsp:Send>'
    fault = rc.parse_fault(session.post(rc.SHELL + "Send", body).xml)
    assert fault.subcode == "w:InternalError"
    ps = psrpcore.ClientPowerShell(session.pool)  # the pool still works
    ps.add_script("'still here'")
    command_id = session.start(ps)
    assert output_events(session.run_to_end(ps, command_id)) == ["still here"]
