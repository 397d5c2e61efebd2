"""Core errors arrive as the classes of psremote.exceptions, with their data."""

from __future__ import annotations

import pickle
import socket

import pytest

import psremote
from psremote import (
    AuthenticationError,
    ClosedError,
    ConnectError,
    OperationTimeoutError,
    PipelineError,
    ProtocolError,
    PSRemoteError,
    TransportError,
    WSManFault,
)

from conftest import PASSWORD, USER


def test_hierarchy():
    assert issubclass(ConnectError, TransportError)
    assert issubclass(TransportError, ConnectionError)
    assert issubclass(OperationTimeoutError, TimeoutError)
    assert issubclass(psremote.ConfigurationError, ValueError)
    for cls in (
        AuthenticationError, ClosedError, ConnectError, OperationTimeoutError, PipelineError, ProtocolError,
        TransportError, WSManFault, psremote.ConfigurationError,
    ):  # fmt: skip
        assert issubclass(cls, PSRemoteError)
        # The native side constructs each with the message alone, then sets attributes.
        error = cls("message")
        assert str(error) == "message"


def test_exceptions_pickle_with_their_data():
    fault = WSManFault("boom")
    fault.code = 5
    back = pickle.loads(pickle.dumps(fault))
    assert (str(back), back.code, back.message) == ("boom", 5, "boom")
    record = psremote.ErrorRecord("bad", "Id", 13)
    error = pickle.loads(pickle.dumps(PipelineError("bad", error_record=record)))
    assert error.fully_qualified_error_id == "Id" and error.category_name == "ObjectNotFound"


def test_wrong_password_is_an_authentication_error(endpoint):
    for auth in ("ntlm", "negotiate"):
        with pytest.raises(AuthenticationError) as info:
            psremote.Client(url=endpoint.url, username=USER, password="wrong", auth=auth, trusted_hosts="127.0.0.1").connect()
        assert info.value.mechanism in ("ntlm", "negotiate")
        assert "wrong" not in str(info.value)


def test_nothing_listening_is_a_connect_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = psremote.Client("127.0.0.1", port=port, username=USER, password=PASSWORD, connect_timeout=5, trusted_hosts="127.0.0.1")
    with pytest.raises(ConnectError) as info:
        client.run_ps("Get-Date")
    assert isinstance(info.value, ConnectionError)
    assert info.value.address is not None and str(port) in info.value.address


def test_unknown_configuration_is_a_wsman_fault(client):
    with pytest.raises(WSManFault) as info:
        client.runspace_pool("NoSuchEndpoint")
    fault = info.value
    assert fault.code == 2150858752
    assert fault.message
    assert fault.subcode is None or "DestinationUnreachable" in fault.subcode


def test_restricted_configuration_runs_only_its_commands(client):
    with client.runspace_pool("Restricted") as pool:
        assert pool.run_ps(pool.powershell().add_command("Write-Output").add_argument("ok")).output == ["ok"]
        result = pool.run_ps("Get-Date")
        assert result.state == "Failed"
        assert result.terminating_error is not None
        assert result.terminating_error.fully_qualified_error_id == "ScriptsNotAllowed"
        with pytest.raises(PipelineError) as info:
            result.raise_for_errors()
        assert info.value.category_name == "ParserError"


def test_failed_pipeline_raises_pipeline_error_with_the_record(client):
    result = client.run_ps("Write-Output before; Invoke-Failure 'it broke'")
    assert result.state == "Failed" and result.had_errors
    assert result.output == ["before"]
    with pytest.raises(PipelineError) as info:
        result.raise_for_errors()
    error = info.value
    assert str(error) == "it broke"
    assert error.fully_qualified_error_id == "it broke"
    assert error.reason == "RuntimeException"
    assert error.error_record is result.terminating_error
    assert error.result is result
    with pytest.raises(PipelineError):
        client.run_ps("Invoke-Failure x", raise_on_error=True)


def test_non_terminating_errors_raise_on_request(client):
    result = client.run_ps("Write-Error -Message 'soft' -ErrorId MyId; Write-Output after")
    assert result.state == "Completed" and result.had_errors
    assert result.output == ["after"]
    assert result.errors[0].message == "soft"
    assert result.errors[0].fully_qualified_error_id.startswith("MyId")
    with pytest.raises(PipelineError, match="soft"):
        client.run_ps("Write-Error soft", raise_on_error=True)
    assert client.run_ps("Write-Output fine", raise_on_error=True).output == ["fine"]
    assert client.run_ps("Write-Output fine").raise_for_errors().output == ["fine"]


def test_unknown_command_fails_the_pipeline(client):
    result = client.powershell().add_command("Get-Nothing").invoke()
    assert result.state == "Failed"
    assert result.terminating_error.category_name == "ObjectNotFound"


def test_next_event_timeout_is_an_operation_timeout(pool):
    with pool.start("Invoke-Stall") as handle:
        with pytest.raises(OperationTimeoutError) as info:
            handle.next_event(timeout=0.3)
        assert isinstance(info.value, TimeoutError)
        handle.stop()
        events = list(handle)
    assert events[-1].kind == "state" and events[-1].value.state == "Stopped"


def test_closed_pool_is_a_closed_error(client):
    pool = client.runspace_pool()
    pool.close()
    assert pool.closed
    with pytest.raises(ClosedError):
        pool.run_ps("Get-Date")
    with pytest.raises(ClosedError):
        pool.available_runspaces()


def test_native_closed_error(client):
    pool = client.runspace_pool()
    native = pool._native
    native.close()
    with pytest.raises(ClosedError):
        native.start([[{"text": "Get-Date", "is_script": False, "parameters": []}]], False, False)
    pool.close()


@pytest.mark.parametrize("mode", ["bad-base64", "truncated-xml", "bad-seal", "wrong-relates-to", "unsealed"])
def test_broken_replies_are_protocol_errors(start_endpoint, mode):
    endpoint = start_endpoint("--misbehave", mode)
    with psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts="127.0.0.1") as client:
        with pytest.raises(ProtocolError):
            client.run_ps("Get-Date")


def test_oversized_request_is_a_transport_error(start_endpoint):
    endpoint = start_endpoint("--max-envelope-kb", "16")
    with psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", max_envelope_size=512000, trusted_hosts="127.0.0.1") as client:
        with pytest.raises(TransportError) as info:
            client.run_ps(client.powershell().add_command("Write-Output").add_argument("x" * 200_000))
    assert info.value.status == 413
    assert "MaxEnvelopeSize" in str(info.value)


def test_server_text_in_exceptions_is_shown_not_obeyed():
    import psremote

    hostile = "access denied\x1b[2J\x1b[31m\x07\r\u202egnp.exe\u200b"
    text = str(psremote.WSManFault(hostile))
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "\u202e" not in text
    assert text == "access denied\\u{001b}[2J\\u{001b}[31m\\u{0007}\\u{000d}\\u{202e}gnp.exe\\u{200b}"
    assert str(psremote.PipelineError("line one\nline two\ttabbed")) == "line one\nline two\ttabbed"
    huge = str(psremote.ProtocolError("x" * 1_000_000))
    assert len(huge) < 17_000 and huge.endswith("(983616 more characters)")
