"""--misbehave: only the first ReceiveResponse is broken, in exactly the advertised way."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import pytest
import rawclient as rc


def run_until_receive(server):
    client = rc.RawClient(server.url)
    client.authenticate()
    shell = rc.shell_id_of(client.post_sealed(rc.create_shell()[1]).xml)
    command_id = rc.command_id_of(client.post_sealed(rc.command(shell, "echo", "hi")[1]).xml)
    message_id, xml = rc.receive(shell, command_id)
    return client, shell, command_id, message_id, xml


def second_receive_is_normal(client, shell, command_id):
    message_id, xml = rc.receive(shell, command_id)
    response = client.post_sealed(xml)
    assert response.status == 200
    assert rc.relates_to(response.xml) == message_id
    state = response.xml.find("s:Body/rsp:ReceiveResponse/rsp:CommandState", rc.NS)
    assert state.get("State").endswith("/Done")


def test_truncated_xml(start_endpoint):
    client, shell, command_id, _, xml = run_until_receive(start_endpoint("--misbehave", "truncated-xml"))
    with client:
        response = client.post_sealed(xml)  # sealed properly, so it unwraps and Length matches
        assert response.status == 200
        with pytest.raises(ET.ParseError):
            ET.fromstring(response.plaintext)
        assert response.plaintext.startswith(b"<s:Envelope")
        second_receive_is_normal(client, shell, command_id)


def test_bad_base64(start_endpoint):
    client, shell, command_id, _, xml = run_until_receive(start_endpoint("--misbehave", "bad-base64"))
    with client:
        response = client.post_sealed(xml)
        texts = [s.text for s in response.xml.findall("s:Body/rsp:ReceiveResponse/rsp:Stream", rc.NS)]
        assert "@@@" in texts
        with pytest.raises(ValueError):
            base64.b64decode("@@@", validate=True)


def test_bad_seal(start_endpoint):
    client, _, _, _, xml = run_until_receive(start_endpoint("--misbehave", "bad-seal"))
    with client:
        wrapped = client.ctx.wrap_winrm(xml)
        response = client.post(rc.sealed_body(wrapped.header, wrapped.data, len(xml)), {"Content-Type": rc.SEALED_TYPE})
        assert response.status == 200
        _, signature, data = rc.open_sealed(response.body)  # framing intact
        assert len(signature) == 16
        with pytest.raises(Exception):
            client.ctx.unwrap_winrm(signature, data)


def test_unsealed(start_endpoint):
    client, shell, command_id, message_id, xml = run_until_receive(start_endpoint("--misbehave", "unsealed"))
    with client:
        response = client.post_sealed(xml)
        assert response.status == 200
        assert response.header("Content-Type") == "application/soap+xml;charset=UTF-8"
        assert response.plaintext is None
        assert rc.relates_to(ET.fromstring(response.body)) == message_id
        second_receive_is_normal(client, shell, command_id)


def test_wrong_relates_to(start_endpoint):
    client, shell, command_id, message_id, xml = run_until_receive(start_endpoint("--misbehave", "wrong-relates-to"))
    with client:
        response = client.post_sealed(xml)
        assert response.status == 200
        related = rc.relates_to(response.xml)
        assert related.startswith("uuid:") and related != message_id
        second_receive_is_normal(client, shell, command_id)
