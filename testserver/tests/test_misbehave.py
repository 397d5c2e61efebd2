"""--misbehave: only the first ReceiveResponse is broken, in exactly the advertised way."""

from __future__ import annotations

import base64
import re
import time
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


def receive_until_done(client, shell, command_id):
    """Receives until the command reports Done; returns the ReceiveResponses in order."""
    replies = []
    for _ in range(50):  # hang guard: echo ends within a couple of Receives
        _, xml = rc.receive(shell, command_id)
        response = client.post_sealed(xml)
        assert response.status == 200
        replies.append(response.xml)
        state = response.xml.find("s:Body/rsp:ReceiveResponse/rsp:CommandState", rc.NS)
        if state is not None and state.get("State").endswith("/Done"):
            return replies
    raise AssertionError("the command never reported Done")


def test_no_exit_code(start_endpoint):
    client, shell, command_id, _, xml = run_until_receive(start_endpoint("--misbehave", "no-exit-code"))
    with client:
        first = client.post_sealed(xml)
        replies = [first.xml]
        state = first.xml.find("s:Body/rsp:ReceiveResponse/rsp:CommandState", rc.NS)
        if state is None or not state.get("State").endswith("/Done"):
            replies += receive_until_done(client, shell, command_id)
        done = replies[-1].find("s:Body/rsp:ReceiveResponse/rsp:CommandState", rc.NS)
        assert done.get("CommandId") == command_id
        assert done.find("rsp:ExitCode", rc.NS) is None
        output = b"".join(
            base64.b64decode(s.text or "")
            for r in replies
            for s in r.findall("s:Body/rsp:ReceiveResponse/rsp:Stream", rc.NS)
            if s.get("Name") == "stdout"
        )
        assert output == b"hi\n"


def test_foreign_command_id(start_endpoint):
    client, shell, command_id, _, xml = run_until_receive(start_endpoint("--misbehave", "foreign-command-id"))
    with client:
        response = client.post_sealed(xml)
        body = response.xml.find("s:Body/rsp:ReceiveResponse", rc.NS)
        named = [e.get("CommandId") for e in body if e.get("CommandId") is not None]
        assert named, "the reply names no command at all"
        assert len(set(named)) == 1 and named[0].lower() != command_id.lower()
        # Only the ids changed: the data is the real command's.
        data = b"".join(base64.b64decode(s.text or "") for s in body.findall("rsp:Stream", rc.NS))
        assert data in (b"", b"hi\n")


def endpoint_rss_kb(endpoint) -> int:
    with open(f"/proc/{endpoint.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("mode", ["huge-reply", "endless-body"])
def test_oversized_replies_stream_and_stop_when_the_client_hangs_up(start_endpoint, mode):
    endpoint = start_endpoint("--misbehave", mode)
    client, shell, command_id, _, xml = run_until_receive(endpoint)
    wrapped = client.ctx.wrap_winrm(xml)
    client.conn.request("POST", client.path, body=rc.sealed_body(wrapped.header, wrapped.data, len(xml)), headers={"Content-Type": rc.SEALED_TYPE})
    response = client.conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("multipart/encrypted")
    if mode == "huge-reply":
        assert response.getheader("Content-Length") == str(512 * 1024 * 1024)
    else:
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.getheader("Content-Length") is None
    # 32 MiB of filler, then hang up; the endpoint streams it rather than holding it.
    got = 0
    while got < 32 * 1024 * 1024:
        block = response.read(1024 * 1024)
        assert block == b"A" * len(block) and block
        got += len(block)
    assert endpoint_rss_kb(endpoint) < 200 * 1024
    client.close()
    # The endpoint goes on serving, and the shell is still there for a client to delete.
    with rc.RawClient(endpoint.url) as other:
        other.authenticate()
        assert other.post_sealed(rc.delete_shell(shell)[1]).status == 200
    assert endpoint.wait_state("shells", 0)["shells"] == 0


def raw_reply(client, message_xml) -> bytes:
    """Posts a sealed request on the client's socket and returns the raw HTTP reply (the framing
    modes break what http.client could read): up to the end of the connection, or for a reply
    that keeps it open, up to its declared length and 100 bytes more."""
    wrapped = client.ctx.wrap_winrm(message_xml)
    body = rc.sealed_body(wrapped.header, wrapped.data, len(message_xml))
    head = f"POST /wsman HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {rc.SEALED_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n"
    sock = client.conn.sock
    sock.sendall(head.encode() + body)
    sock.settimeout(10)  # hang guard
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
        headers, _, rest = data.partition(b"\r\n\r\n")
        declared = re.search(rb"Content-Length: (\d+)", headers)
        if declared and len(rest) >= int(declared.group(1)) + 100:
            return data


@pytest.mark.parametrize(
    "mode, check",
    [
        ("bad-status-line", lambda raw: raw.startswith(b"HTTP/1.1 two hundred OK\r\n")),
        ("bad-chunked", lambda raw: b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" in raw),
        ("truncated-body", lambda raw: int(raw.split(b"Content-Length: ")[1].split(b"\r\n")[0]) > len(raw.split(b"\r\n\r\n", 1)[1])),
        ("length-mismatch", lambda raw: int(raw.split(b"Content-Length: ")[1].split(b"\r\n")[0]) == len(raw.split(b"\r\n\r\n", 1)[1]) - 100),
    ],
)
def test_http_framing(start_endpoint, mode, check):
    client, _, _, _, xml = run_until_receive(start_endpoint("--misbehave", mode))
    with client:
        raw = raw_reply(client, xml)
        assert check(raw), raw[:300]


@pytest.mark.parametrize("mode", ["seal-wrong-sequence", "seal-truncated"])
def test_broken_seals(start_endpoint, mode):
    client, _, _, _, xml = run_until_receive(start_endpoint("--misbehave", mode))
    with client:
        wrapped = client.ctx.wrap_winrm(xml)
        response = client.post(rc.sealed_body(wrapped.header, wrapped.data, len(xml)), {"Content-Type": rc.SEALED_TYPE})
        assert response.status == 200
        length, signature, data = rc.open_sealed(response.body)  # the framing is whole
        if mode == "seal-truncated":
            assert len(data) == length - 16
        with pytest.raises(Exception):
            client.ctx.unwrap_winrm(signature, data)


@pytest.mark.parametrize(
    "mode, check",
    [
        ("xml-entity-bomb", lambda p: p.startswith(b"<!DOCTYPE s:Envelope [<!ENTITY e0") and b"<x>&e9;</x>" in p),
        ("xml-deep-nesting", lambda p: p.count(b"<x>") == 20000 and ET.fromstring(p.replace(b"<x>", b"").replace(b"</x>", b"")) is not None),
        ("xml-huge-attribute", lambda p: b'<rsp:ReceiveResponse Padding="' + b"y" * 1000 in p),
        ("no-command-state", lambda p: b"CommandState" not in p and b"<rsp:ReceiveResponse>" in p),
    ],
)
def test_xml_and_missing_fields(start_endpoint, mode, check):
    client, shell, command_id, _, xml = run_until_receive(start_endpoint("--misbehave", mode))
    with client:
        response = client.post_sealed(xml)
        for _ in range(50):  # hang guard: Receive timeouts do not use the misbehaviour up
            if response.plaintext is not None and check(response.plaintext):
                break
            _, xml = rc.receive(shell, command_id)
            response = client.post_sealed(xml)
        assert check(response.plaintext), response.plaintext[:300]


def test_immediate_timeout_answers_every_receive_at_once_then_serves(start_endpoint):
    endpoint = start_endpoint("--misbehave", "immediate-timeout")
    client, shell, command_id, _, xml = run_until_receive(endpoint)
    with client:
        response = client.post_sealed(xml)
        assert response.status == 500
        assert rc.parse_fault(response.xml).subcode == "w:TimedOut"
        assert endpoint.state()["timeouts_injected"] == 1
        # After the first three seconds the endpoint serves normally.
        time.sleep(3.2)
        replies = receive_until_done(client, shell, command_id)
        assert replies
        assert endpoint.state()["timeouts_injected"] == 1
