"""Reply and fault shapes, compared with what real Windows servers send.

The expected values come from shared/conformance/windows-transcripts
(test_winrs_standard.yml, test_winrs_bad_cmd_id.yml, test_winrs_no_cmd_shell.yml)
and the real OperationTimeout and InvalidSelectors faults.
"""

from __future__ import annotations

import base64
import re
import uuid

import pytest
import rawclient as rc

WINDOWS_PREFIXES = re.compile(
    rb'^<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    rb'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
)


@pytest.fixture
def client(endpoint):
    with rc.RawClient(endpoint.url) as raw:
        raw.authenticate()
        yield raw


@pytest.fixture
def shell(client):
    response = client.post_sealed(rc.create_shell()[1])
    assert response.status == 200
    shell_id = rc.shell_id_of(response.xml)
    yield shell_id
    client.post_sealed(rc.delete_shell(shell_id)[1])


def test_create_response_shape(client):
    message_id, xml = rc.create_shell()
    response = client.post_sealed(xml)
    assert response.status == 200
    assert WINDOWS_PREFIXES.match(response.plaintext)
    root = response.xml
    assert root.find("s:Header/a:Action", rc.NS).text == rc.TRANSFER + "CreateResponse"
    assert rc.relates_to(root) == message_id
    shell_id = rc.shell_id_of(root)
    assert re.fullmatch(r"[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}", shell_id)
    assert root.find("s:Body/x:ResourceCreated/a:ReferenceParameters/w:ResourceURI", rc.NS).text == rc.CMD_URI
    echo = root.find("s:Body/rsp:Shell", rc.NS)
    assert echo.find("rsp:ShellId", rc.NS).text == shell_id
    assert echo.find("rsp:Owner", rc.NS).text.lower().endswith("user")
    assert echo.find("rsp:InputStreams", rc.NS).text == "stdin"
    assert echo.find("rsp:OutputStreams", rc.NS).text == "stdout stderr"
    delete = client.post_sealed(rc.delete_shell(shell_id)[1])
    assert delete.status == 200
    assert delete.xml.find("s:Header/a:Action", rc.NS).text == rc.TRANSFER + "DeleteResponse"


def test_command_receive_signal_shapes(client, shell):
    client_command_id = str(uuid.uuid4()).upper()
    _, xml = rc.command(shell, "printf", "hi")
    xml = xml.replace(b"<rsp:CommandLine>", f'<rsp:CommandLine CommandId="{client_command_id}">'.encode())
    response = client.post_sealed(xml)
    assert response.status == 200
    assert rc.command_id_of(response.xml) == client_command_id

    message_id, xml = rc.receive(shell, client_command_id)
    response = client.post_sealed(xml)
    assert response.status == 200
    root = response.xml
    assert rc.relates_to(root) == message_id
    assert root.find("s:Header/a:Action", rc.NS).text == rc.SHELL + "ReceiveResponse"
    streams = root.findall("s:Body/rsp:ReceiveResponse/rsp:Stream", rc.NS)
    data = b"".join(base64.b64decode(s.text) for s in streams if s.get("Name") == "stdout" and s.text)
    assert data == b"hi"
    ends = sorted(s.get("Name") for s in streams if s.get("End") == "true")
    assert ends == ["stderr", "stdout"]
    state = root.find("s:Body/rsp:ReceiveResponse/rsp:CommandState", rc.NS)
    assert state.get("State") == rc.SHELL + "CommandState/Done"
    assert state.get("CommandId") == client_command_id
    assert state.find("rsp:ExitCode", rc.NS).text == "0"

    # Both spellings of Terminate work; after it the command id is gone.
    response = client.post_sealed(rc.signal(shell, client_command_id, "Terminate")[1])
    assert response.status == 200
    assert response.xml.find("s:Body/rsp:SignalResponse", rc.NS) is not None
    fault = client.post_sealed(rc.receive(shell, client_command_id)[1])
    assert fault.status == 500


def test_unknown_shell_id_is_invalid_selectors(client):
    for _, xml in (
        rc.command(str(uuid.uuid4()).upper(), "echo"),
        rc.receive(str(uuid.uuid4()).upper(), str(uuid.uuid4()).upper()),
        rc.delete_shell(str(uuid.uuid4()).upper()),
    ):
        response = client.post_sealed(xml)
        assert response.status == 500
        assert response.header("Content-Type").startswith("multipart/encrypted;")  # faults are sealed too
        fault = rc.parse_fault(response.xml)
        assert fault.code == 2150858843
        assert (fault.value, fault.subcode) == ("s:Sender", "w:InvalidSelectors")
        assert fault.detail == "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors"
        assert fault.machine == "127.0.0.1"
        assert response.xml.find("s:Header/a:Action", rc.NS).text == "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"


def test_unknown_command_id(client, shell):
    message_id, xml = rc.receive(shell, str(uuid.uuid4()).upper())
    response = client.post_sealed(xml)
    assert response.status == 500
    assert rc.relates_to(response.xml) == message_id
    fault = rc.parse_fault(response.xml)
    assert fault.code == 2150858843
    assert fault.message.startswith("The Windows Remote Shell received a request to perform an operation on a command identifier")


def test_operation_timeout_fault(client, shell):
    response = client.post_sealed(rc.command(shell, "sleep", "5")[1])
    command_id = rc.command_id_of(response.xml)
    message_id, xml = rc.receive(shell, command_id, timeout="PT0.300S")
    response = client.post_sealed(xml)
    assert response.status == 500
    root = response.xml
    assert rc.relates_to(root) == message_id
    fault = rc.parse_fault(root)
    text = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  "
    assert fault == rc.Fault("s:Receiver", "w:TimedOut", text, 2150858793, "127.0.0.1", text, None)
    client.post_sealed(rc.signal(shell, command_id)[1])


def test_bad_operation_timeout_is_invalid_header(client, shell):
    response = client.post_sealed(rc.receive(shell, str(uuid.uuid4()), timeout="PT-1S")[1])
    fault = rc.parse_fault(response.xml)
    assert (fault.code, fault.subcode) == (2150858767, "a:InvalidMessageInformationHeader")
    assert "PT-1S" in fault.message


def test_receive_respects_max_envelope_size(client, shell):
    response = client.post_sealed(rc.command(shell, "head -c 100000 /dev/urandom")[1])
    command_id = rc.command_id_of(response.xml)
    received, done, replies = b"", False, 0
    while not done:
        response = client.post_sealed(rc.receive(shell, command_id, max_envelope=16384)[1])
        assert response.status == 200
        assert len(response.plaintext) <= 16384
        replies += 1
        body = response.xml.find("s:Body/rsp:ReceiveResponse", rc.NS)
        for stream in body.findall("rsp:Stream", rc.NS):
            received += base64.b64decode(stream.text or "")
        done = body.find("rsp:CommandState", rc.NS).get("State").endswith("/Done")
    assert len(received) == 100000
    assert replies >= 7


def test_missing_file_with_skip_cmd_shell(client, shell):
    response = client.post_sealed(rc.command(shell, "/nonexistent/program", options={"WINRS_SKIP_CMD_SHELL": "TRUE"})[1])
    assert response.status == 500
    fault = rc.parse_fault(response.xml)
    assert (fault.value, fault.subcode, fault.code) == ("s:Receiver", "w:InternalError", 2147942402)
    assert fault.message == "The system cannot find the file specified. "


def test_unknown_resource_uri(client):
    # (PSRP configurations are served now; test_psrp_wire covers an unknown configuration name.)
    response = client.post_sealed(rc.create_shell(resource_uri="http://schemas.microsoft.com/wbem/wsman/1/wmi/root/cimv2/Nope")[1])
    assert response.status == 500
    fault = rc.parse_fault(response.xml)
    assert (fault.subcode, fault.code) == ("w:DestinationUnreachable", 2150858752)


def test_unknown_action(client, shell):
    response = client.post_sealed(rc.envelope(rc.SHELL + "Disconnect", "<rsp:Disconnect/>", shell_id=shell)[1])
    assert response.status == 500
    fault = rc.parse_fault(response.xml)
    assert fault.subcode == "a:ActionNotSupported"


def test_not_xml_is_400(client):
    assert client.post_sealed(b"this is not xml").status == 400


def test_send_on_one_connection_wakes_receive_on_another(endpoint, client, shell):
    # A pending Receive occupies its connection; input arrives over a second, separately
    # authenticated (and separately sealed) connection, as a PSRP client does it.
    import threading

    command_id = rc.command_id_of(client.post_sealed(rc.command(shell, "cat")[1]).xml)
    result = {}

    def poll():
        result["response"] = client.post_sealed(rc.receive(shell, command_id, timeout="PT20S")[1])

    waiter = threading.Thread(target=poll)
    waiter.start()
    with rc.RawClient(endpoint.url, scheme="Negotiate") as other:
        other.authenticate()
        stream = base64.b64encode(b"across\n").decode()
        body = f'<rsp:Send><rsp:Stream Name="stdin" CommandId="{command_id}" End="true">{stream}</rsp:Stream></rsp:Send>'
        response = other.post_sealed(rc.envelope(rc.SHELL + "Send", body, shell_id=shell)[1])
        assert response.status == 200
        assert response.xml.find("s:Body/rsp:SendResponse", rc.NS) is not None
    waiter.join(20)
    streams = result["response"].xml.findall("s:Body/rsp:ReceiveResponse/rsp:Stream", rc.NS)
    assert b"".join(base64.b64decode(s.text) for s in streams if s.text) == b"across\n"
    client.post_sealed(rc.signal(shell, command_id)[1])
