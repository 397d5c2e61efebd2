"""What the endpoint refuses, and how: HTTP statuses and counters."""

from __future__ import annotations

import base64

import pytest
import rawclient as rc
import winrm
from conftest import PASSWORD, USER, winrm_session


def test_first_request_offers_enabled_schemes(endpoint, start_endpoint):
    with rc.RawClient(endpoint.url) as client:
        response = client.post_plain(rc.create_shell()[1])
    assert response.status == 401
    assert response.all_headers("WWW-Authenticate") == ["Negotiate", "NTLM", 'Basic realm="WSMAN"']

    ntlm_only = start_endpoint("--auth", "ntlm")
    with rc.RawClient(ntlm_only.url) as client:
        assert client.post(b"").all_headers("WWW-Authenticate") == ["NTLM"]


def test_plaintext_after_ntlm_auth_is_401(endpoint):
    before = endpoint.state()["plaintext_after_auth_refused"]
    with rc.RawClient(endpoint.url) as client:
        client.authenticate()
        response = client.post_plain(rc.create_shell()[1])
        assert response.status == 401
    assert endpoint.state()["plaintext_after_auth_refused"] == before + 1


def test_sealed_request_on_authenticated_connection_works(endpoint):
    with rc.RawClient(endpoint.url, scheme="Negotiate") as client:
        final = client.authenticate()
        # SPNEGO ends with the acceptor's mechListMIC token on the 200.
        assert any(v.startswith("Negotiate ") for v in final.all_headers("WWW-Authenticate"))
        message_id, xml = rc.create_shell()
        response = client.post_sealed(xml)
        assert response.status == 200
        assert rc.relates_to(response.xml) == message_id
        shell_id = rc.shell_id_of(response.xml)
        assert client.post_sealed(rc.delete_shell(shell_id)[1]).status == 200


def test_new_connection_must_authenticate_again(endpoint):
    with rc.RawClient(endpoint.url) as first:
        first.authenticate()
        with rc.RawClient(endpoint.url) as second:
            response = second.post(b"<x/>", {"Content-Type": rc.SEALED_TYPE})
            assert response.status == 401


def test_wrong_password_is_401(endpoint):
    before = endpoint.state()["auth_failures"]
    with rc.RawClient(endpoint.url, password="wrong") as client:
        with pytest.raises(rc.AuthFailed) as failure:
            client.authenticate()
        assert failure.value.args == (401,)
    assert endpoint.state()["auth_failures"] == before + 1


def test_unknown_user_is_401(endpoint):
    with rc.RawClient(endpoint.url, user="nobody") as client:
        with pytest.raises(rc.AuthFailed):
            client.authenticate()


def test_basic_over_http_refused_without_allow_unencrypted(endpoint):
    with pytest.raises(winrm.exceptions.InvalidCredentialsError), winrm_session(endpoint.url, auth=(USER, PASSWORD), transport="basic") as s:
        s.run_cmd("echo", ["x"])
    # Even correct credentials on a raw request get 401.
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with rc.RawClient(endpoint.url) as client:
        response = client.post_plain(rc.create_shell()[1], {"Authorization": f"Basic {token}"})
        assert response.status == 401


def test_basic_with_allow_unencrypted(start_endpoint):
    server = start_endpoint("--allow-unencrypted")
    for user in (USER, f"DOMAIN\\{USER}", f"{USER}@domain"):
        with winrm_session(server.url, auth=(user, PASSWORD), transport="basic") as s:
            assert s.run_cmd("echo", ["plain"]).std_out == b"plain\n"
    for user, password in ((USER, "wrong"), (f"OTHER\\{USER}", PASSWORD)):
        with pytest.raises(winrm.exceptions.InvalidCredentialsError), winrm_session(server.url, auth=(user, password), transport="basic") as s:
            s.run_cmd("echo", ["x"])


def test_ntlm_plaintext_allowed_with_allow_unencrypted(start_endpoint):
    server = start_endpoint("--allow-unencrypted")
    with winrm_session(server.url, auth=(USER, PASSWORD), transport="ntlm", message_encryption="never") as s:
        assert s.run_cmd("echo", ["p"]).std_out == b"p\n"


def test_oversized_envelope_is_413(start_endpoint):
    server = start_endpoint("--max-envelope-kb", "8")
    with rc.RawClient(server.url) as client:
        client.authenticate()
        padding = "<!--" + "x" * 9000 + "-->"
        _, xml = rc.create_shell()
        big = xml.replace(b"<s:Body>", b"<s:Body>" + padding.encode())
        assert len(big) > 8 * 1024
        assert client.post_sealed(big).status == 413
        # The seal stayed in step, so the connection is still usable.
        response = client.post_sealed(rc.create_shell()[1])
        assert response.status == 200
        client.post_sealed(rc.delete_shell(rc.shell_id_of(response.xml))[1])
    # A declared length far beyond the limit is refused before the body is read.
    with rc.RawClient(server.url) as client:
        client.conn.putrequest("POST", client.path)
        client.conn.putheader("Content-Length", str(50 * 1024 * 1024))
        client.conn.endheaders()
        response = client.conn.getresponse()
        assert response.status == 413
        assert response.getheader("Connection") == "close"


def test_client_bad_seal_is_400_and_closes(endpoint):
    before = endpoint.state()["bad_seal"]
    with rc.RawClient(endpoint.url) as client:
        client.authenticate()
        response = client.post_sealed(rc.create_shell()[1], corrupt=True)
        assert response.status == 400
        assert response.header("Connection") == "close"
    assert endpoint.state()["bad_seal"] == before + 1


def test_crlf_before_closing_boundary_is_rejected(endpoint):
    # Server 2025 answers 400 to this framing mistake; so do we.
    with rc.RawClient(endpoint.url) as client:
        client.authenticate()
        response = client.post_sealed(rc.create_shell()[1], closing=b"\r\n--Encrypted Boundary--\r\n")
        assert response.status == 400


def test_lenient_framing_is_accepted(endpoint):
    with rc.RawClient(endpoint.url) as client:
        client.authenticate()
        response = client.post_sealed(rc.create_shell()[1], boundary_line=b"-- Encrypted Boundary", closing=b"-- Encrypted Boundary\r\n")
        assert response.status == 200
        shell_id = rc.shell_id_of(response.xml)
        response = client.post_sealed(rc.delete_shell(shell_id)[1], closing=b"")
        assert response.status == 200


def test_control_url_needs_flag(start_endpoint):
    server = start_endpoint(control=False)
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(server.base + "/_control/state", timeout=10)
    assert failure.value.code == 404
    failure.value.close()
