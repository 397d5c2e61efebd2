"""pywinrm 0.5.0 (NTLM, message encryption) against the endpoint."""

from __future__ import annotations

import re

import pytest
import winrm
from conftest import PASSWORD, USER, winrm_session


def session(endpoint, **kwargs):
    options = dict(auth=(USER, PASSWORD), transport="ntlm", message_encryption="always")
    options.update(kwargs)
    return winrm_session(endpoint.url, **options)


def test_echo(endpoint):
    with session(endpoint) as s:
        result = s.run_cmd("echo", ["hello"])
    assert result.std_out == b"hello\n"
    assert result.std_err == b""
    assert result.status_code == 0


def test_exit_code(endpoint):
    # Windows builds "exit 3" from Command + Arguments and runs it through the shell.
    with session(endpoint) as s:
        result = s.run_cmd("exit", ["3"])
    assert result.status_code == 3


def test_stderr(endpoint):
    with session(endpoint) as s:
        result = s.run_cmd("echo out; echo err >&2; exit 1")
    assert result.std_out == b"out\n"
    assert result.std_err == b"err\n"
    assert result.status_code == 1


def test_domain_forms_of_user(endpoint):
    for user in (f"DOMAIN\\{USER}", f"{USER}@DOMAIN"):
        with session(endpoint, auth=(user, PASSWORD)) as s:
            result = s.run_cmd("echo", ["ok"])
        assert result.std_out == b"ok\n"


def test_large_output_arrives_whole(endpoint):
    # 400 KB does not fit one 150 KB envelope: the endpoint spreads it over several Receives.
    with session(endpoint) as s:
        result = s.run_cmd("head -c 400000 /dev/zero | tr '\\0' x")
    assert result.std_out == b"x" * 400000
    assert result.status_code == 0


def test_wrong_password_is_401(endpoint):
    before = endpoint.state()["auth_failures"]
    with pytest.raises(winrm.exceptions.InvalidCredentialsError), session(endpoint, auth=(USER, "wrong")) as s:
        s.run_cmd("echo", ["x"])
    assert endpoint.state()["auth_failures"] > before


def test_every_body_after_handshake_is_sealed(start_endpoint, tmp_path):
    capture = tmp_path / "capture"
    server = start_endpoint("--capture", str(capture))
    with session(server) as s:
        result = s.run_cmd("echo", ["secret-output"])
    assert result.std_out == b"secret-output\n"

    requests = [path.read_bytes() for path in sorted(capture.iterdir())]
    posts = [raw for raw in requests if raw.startswith(b"POST ")]
    assert len(posts) >= 6  # handshake, Create, Command, Receive, Signal, Delete
    with_body = []
    for raw in posts:
        head, _, body = raw.partition(b"\r\n\r\n")
        if body:
            with_body.append((head, body))
        else:
            assert re.search(rb"(?im)^Authorization: NTLM ", head) or b"Content-Length: 0" in head
    assert len(with_body) >= 5
    for head, body in with_body:
        assert re.search(rb'(?im)^Content-Type: multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted"', head)
        assert body.startswith(b"--Encrypted Boundary\r\n")
        assert b"Envelope" not in body
        assert b"secret-output" not in body
        assert b"echo" not in body
