"""CredSSP through the Python package, against the endpoint's pyspnego acceptor (its own TLS
channel, NTLM inside, then the delegated TSCredentials checked against the users file).

CredSSP hands the user's password to the server, so it obeys NTLM's rule (a verified https
certificate or ``trusted_hosts``) and every delegation is an audit warning on the logger
``psremote.audit``. Over http every body is sealed with the CredSSP channel; over https TLS carries
them. What the server received (``credssp_user``, whether ``credssp_password_ok``) comes from its
control state, which records the delegated account, never the password.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List

import pytest

import psremote
from psremote import AuthenticationError, SecurityPolicyError
from psremote_testserver.testing import DOMAIN, PASSWORD, USER, Endpoint, wait_for

TRUSTED = ["127.0.0.1"]
DOMAIN_USER = f"{DOMAIN}\\{USER}"
WRONG_PASSWORD = "Not-The-CredSSP-Passw0rd"


@pytest.fixture(scope="module")
def credssp_http(start_endpoint) -> Endpoint:
    return start_endpoint("--auth", "credssp,ntlm")


@pytest.fixture(scope="module")
def credssp_https(start_endpoint, test_certs) -> Endpoint:
    return start_endpoint(
        "--tls-cert", test_certs["server"], "--tls-key", test_certs["server_key"], "--auth", "credssp,ntlm", cafile=test_certs["ca"]
    )


def http_client(endpoint: Endpoint, **kwargs: Any) -> psremote.Client:
    options: Dict[str, Any] = dict(url=endpoint.url, username=DOMAIN_USER, password=PASSWORD, auth="credssp", trusted_hosts=TRUSTED)
    options.update(kwargs)
    return psremote.Client(**options)


def https_client(endpoint: Endpoint, test_certs: Dict[str, Any], **kwargs: Any) -> psremote.Client:
    options: Dict[str, Any] = dict(url=endpoint.url, username=DOMAIN_USER, password=PASSWORD, auth="credssp", ca_file=test_certs["ca"])
    options.update(kwargs)
    return psremote.Client(**options)


def last_logon(endpoint: Endpoint) -> Dict[str, Any]:
    logons = endpoint.state()["logons"]
    assert logons, "the endpoint recorded no logon"
    return logons[-1]


def assert_delegated(endpoint: Endpoint) -> Dict[str, Any]:
    """The last logon was CredSSP (NTLM inside) and delegated our account with the right password."""
    logon = last_logon(endpoint)
    assert (logon["scheme"], logon["mechanism"]) == ("credssp", "ntlm"), logon
    assert logon["credssp_user"] == DOMAIN_USER, logon
    assert logon["credssp_password_ok"] is True, logon
    return logon


def full_text(record: logging.LogRecord) -> str:
    return f"{logging.Formatter().format(record)} {record.__dict__!r}"


# --- over http: sealed ----------------------------------------------------------------------------


def test_credssp_over_http_seals_every_body_and_delegates(credssp_http):
    before = credssp_http.state()
    with http_client(credssp_http) as client:
        assert client.run_ps("Write-Output sealed-by-credssp").output == ["sealed-by-credssp"]
        assert client.run_cmd("echo", ["credssp-cmd"]).text.strip() == "credssp-cmd"
        info = client.connection_info
    assert info is not None
    assert (info.mechanism, info.negotiated, info.encryption) == ("credssp", "credssp", "message-encryption")
    assert (info.tls, info.channel_binding) == (False, False)
    logon = assert_delegated(credssp_http)
    assert logon["tls"] is None
    after = credssp_http.state()
    assert after["sealed_requests"] > before["sealed_requests"], after
    assert after["plain_requests"] == before["plain_requests"], after


def test_large_bodies_travel_in_chunks(credssp_http):
    # More than 16 KiB each way: sealed in several CredSSP records.
    big = "".join(chr(ord("a") + i % 26) for i in range(40_000))
    with http_client(credssp_http) as client:
        result = client.powershell().add_command("Write-Output").add_parameter("InputObject", big).invoke()
    assert result.output == [big]
    assert credssp_http.state()["bad_seal"] == 0


def test_credssp_over_http_needs_trusted_hosts(credssp_http):
    requests = credssp_http.state()["requests"]
    with pytest.raises(SecurityPolicyError) as info:
        psremote.Client(url=credssp_http.url, username=DOMAIN_USER, password=PASSWORD, auth="credssp").connect()
    assert "credssp" in str(info.value) and "trusted_hosts" in str(info.value)
    assert PASSWORD not in str(info.value)
    assert credssp_http.state()["requests"] == requests


# --- over https: TLS carries the bodies -------------------------------------------------------------


def test_credssp_over_https_with_the_ca_file(credssp_https, test_certs):
    before = credssp_https.state()
    # The verified certificate proves the server: no trusted_hosts.
    with https_client(credssp_https, test_certs) as client:
        assert client.run_ps("Write-Output inside-tls").output == ["inside-tls"]
        info = client.connection_info
    assert info is not None
    assert (info.mechanism, info.negotiated, info.encryption) == ("credssp", "credssp", "tls")
    assert info.tls and info.tls_version in ("TLSv1.2", "TLSv1.3")
    logon = assert_delegated(credssp_https)
    assert logon["tls"] == info.tls_version
    after = credssp_https.state()
    assert after["plain_requests"] > before["plain_requests"], after
    assert after["sealed_requests"] == before["sealed_requests"], after


def test_credssp_over_https_seals_too_when_asked(credssp_https, test_certs):
    before = credssp_https.state()
    with https_client(credssp_https, test_certs, encryption="always") as client:
        assert client.run_ps("Write-Output tls-and-credssp").output == ["tls-and-credssp"]
        assert client.connection_info is not None and client.connection_info.encryption == "tls+message-encryption"
    assert_delegated(credssp_https)
    after = credssp_https.state()
    assert after["sealed_requests"] > before["sealed_requests"], after
    assert after["plain_requests"] == before["plain_requests"], after


def test_async_client_over_https(credssp_https, test_certs):
    async def main() -> psremote.ConnectionInfo:
        async with psremote.AsyncClient(
            url=credssp_https.url, username=DOMAIN_USER, password=PASSWORD, auth="credssp", ca_file=test_certs["ca"]
        ) as client:
            assert (await client.run_ps("Write-Output async-credssp")).output == ["async-credssp"]
            info = client.connection_info
            assert info is not None
            return info

    assert asyncio.run(main()).negotiated == "credssp"
    assert_delegated(credssp_https)


# --- the audit warning ------------------------------------------------------------------------------


def test_every_delegation_is_an_audit_warning(credssp_http, psremote_records):
    with http_client(credssp_http) as client:
        client.run_ps("Write-Output audited")

    def delegations() -> List[logging.LogRecord]:
        return [
            r
            for r in psremote_records
            if r.name == "psremote.audit" and getattr(r, "psremote", {}).get("event") == "credssp_delegation"
            and r.psremote.get("endpoint") == credssp_http.url
        ]

    assert wait_for(lambda: bool(delegations())), [r.getMessage() for r in psremote_records]
    record = delegations()[0]
    assert record.levelno == logging.WARNING
    assert "hands the user's credentials to the server" in record.getMessage()
    assert record.psremote.get("user") == DOMAIN_USER
    # The connect event says what was negotiated; nothing carries the password.
    assert wait_for(
        lambda: any(
            r.name == "psremote.audit" and r.psremote.get("event") == "connect" and r.psremote.get("negotiated") == "credssp"
            for r in psremote_records
        )
    )
    for r in psremote_records:
        assert PASSWORD not in full_text(r), r.getMessage()


def test_the_warning_goes_through_caplog_too(credssp_https, test_certs, caplog):
    caplog.set_level(logging.WARNING, logger="psremote")
    with https_client(credssp_https, test_certs) as client:
        client.run_ps("1")
    assert wait_for(
        lambda: any(r.name == "psremote.audit" and "hands the user's credentials" in r.getMessage() for r in caplog.records)
    ), caplog.text
    assert PASSWORD not in caplog.text


# --- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "https"])
def test_wrong_password_is_an_authentication_error(credssp_http, credssp_https, test_certs, transport):
    endpoint = credssp_http if transport == "http" else credssp_https
    before = len(endpoint.state()["logons"])
    with pytest.raises(AuthenticationError) as info:
        if transport == "http":
            http_client(endpoint, password=WRONG_PASSWORD).connect()
        else:
            https_client(endpoint, test_certs, password=WRONG_PASSWORD).connect()
    error = info.value
    assert error.mechanism == "credssp", error
    assert "wrong user name or password" in str(error), error
    assert WRONG_PASSWORD not in str(error) and WRONG_PASSWORD not in repr(error)
    assert len(endpoint.state()["logons"]) == before, "no logon completed"
