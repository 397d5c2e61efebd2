"""Kerberos through the Python package, against a real MIT KDC and the endpoint's gssapi acceptor.

One throwaway realm (``psremote_testserver.kdc.Realm``, PSREMOTE.TEST on 127.0.0.1) serves the
whole module; the endpoint runs with the realm's keytab and ``KRB5_CONFIG`` pointing at the
realm's krb5.conf. The keytab holds ``HTTP/localhost``, so clients connect to ``localhost``
(towards ``127.0.0.1`` the SPN would be ``HTTP/127.0.0.1``, which no KDC knows, and Windows
refuses Kerberos to an address as well). What the server saw (the logon's mechanism, the
delegated ticket) comes from its control state.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import psremote
from psremote import AuthenticationError, ConfigurationError
from psremote_testserver.kdc import Realm
from psremote_testserver.testing import Endpoint, launch, wait_for

KRB_PASSWORD = "Passw0rd!"
WRONG_PASSWORD = "Not-The-Krb-Passw0rd"


@pytest.fixture(scope="module")
def realm() -> Iterator[Realm]:
    """A fresh realm for this module; its KDC is stopped and its directory removed afterwards."""
    r = Realm().start()
    try:
        yield r
    finally:
        r.stop()
    assert not r.running


@pytest.fixture(scope="module")
def krb_endpoint(realm: Realm, tmp_path_factory) -> Iterator[Endpoint]:
    """An endpoint accepting the realm's tickets (raw Kerberos and inside Negotiate) and NTLM for
    the same account (the NTLM fallback towards a trusted address)."""
    directory = tmp_path_factory.mktemp("krb-endpoint")
    users = directory / "users"
    users.write_text(f"{realm.realm}:user:{KRB_PASSWORD}\nDOMAIN:user:{KRB_PASSWORD}\n")
    endpoint = launch(
        users,
        directory,
        "--keytab",
        str(realm.keytab),
        "--auth",
        "negotiate,kerberos,ntlm",
        env=realm.env(),
    )
    try:
        yield endpoint
    finally:
        endpoint.stop()


def by_name(endpoint: Endpoint) -> str:
    """The endpoint's URL with the host name the keytab's SPN carries."""
    return endpoint.url.replace("127.0.0.1", "localhost")


def krb_client(realm: Realm, endpoint: Endpoint, **kwargs: Any) -> psremote.Client:
    options: Dict[str, Any] = dict(
        url=by_name(endpoint),
        username=f"{realm.realm}\\user",
        password=KRB_PASSWORD,
        auth="kerberos",
        kerberos_kdc=realm.kdc,
    )
    options.update(kwargs)
    return psremote.Client(**options)


def logons(endpoint: Endpoint) -> List[Dict[str, Any]]:
    return endpoint.state()["logons"]


def last_logon(endpoint: Endpoint) -> Dict[str, Any]:
    recorded = logons(endpoint)
    assert recorded, "the endpoint recorded no logon"
    return recorded[-1]


@pytest.fixture
def no_kdc_from_the_environment(monkeypatch, tmp_path) -> Path:
    """Neither PSREMOTE_KDC nor a krb5.conf names a KDC (KRB5_CONFIG names a file that does not
    exist, so /etc/krb5.conf is not read either); tests add back what they need."""
    monkeypatch.delenv("PSREMOTE_KDC", raising=False)
    missing = tmp_path / "no-krb5.conf"
    monkeypatch.setenv("KRB5_CONFIG", str(missing))
    return missing


# --- logon ----------------------------------------------------------------------------------------


def test_kerberos_logon_runs_a_powershell_pipeline(realm, krb_endpoint):
    with krb_client(realm, krb_endpoint) as client:
        result = client.powershell().add_command("Write-Output").add_parameter("InputObject", "kerberos-ok").invoke()
        assert result.output == ["kerberos-ok"]
        assert client.run_ps("1 + 1").output == [2]
        info = client.connection_info
    assert info is not None
    assert (info.mechanism, info.negotiated, info.encryption) == ("kerberos", "kerberos", "message-encryption")
    assert info.endpoint == by_name(krb_endpoint)
    assert (info.tls, info.channel_binding) == (False, False)
    logon = last_logon(krb_endpoint)
    assert (logon["scheme"], logon["mechanism"]) == ("kerberos", "kerberos"), logon
    assert logon["principal"] == f"user@{realm.realm}", logon
    assert logon["delegated"] is False and logon["delegated_principal"] is None, logon
    # After the logon every body was sealed with the Kerberos session key.
    state = krb_endpoint.state()
    assert state["sealed_requests"] > 0 and state["plain_requests"] == 0, state


def test_negotiate_chooses_kerberos_without_trusted_hosts(realm, krb_endpoint):
    # No trusted_hosts and plain http: NTLM would be refused, Kerberos proves the server.
    with krb_client(realm, krb_endpoint, auth="negotiate", username=f"user@{realm.realm}") as client:
        assert client.run_cmd("echo", ["negotiated"]).text.strip() == "negotiated"
        info = client.connection_info
    assert info is not None and (info.mechanism, info.negotiated) == ("negotiate", "kerberos")
    logon = last_logon(krb_endpoint)
    assert (logon["scheme"], logon["mechanism"]) == ("negotiate", "kerberos"), logon


# --- where the KDC comes from -----------------------------------------------------------------------


@pytest.mark.parametrize("username", ["PSREMOTE.TEST\\user", "user"])
def test_the_kdc_is_found_in_krb5_conf(realm, krb_endpoint, no_kdc_from_the_environment, monkeypatch, username):
    # Without any KDC named, Kerberos cannot start: a configuration error before any request.
    requests = krb_endpoint.state()["requests"]
    with pytest.raises(ConfigurationError) as info:
        krb_client(realm, krb_endpoint, kerberos_kdc=None, username=username).connect()
    assert "no KDC is known" in str(info.value) and "PSREMOTE_KDC" in str(info.value)
    assert krb_endpoint.state()["requests"] == requests
    # The realm's krb5.conf names the KDC (and, for a bare user name, the default realm).
    monkeypatch.setenv("KRB5_CONFIG", str(realm.krb5_conf))
    with krb_client(realm, krb_endpoint, kerberos_kdc=None, username=username) as client:
        assert client.run_ps("Write-Output from-krb5-conf").output == ["from-krb5-conf"]
        assert client.connection_info is not None and client.connection_info.negotiated == "kerberos"
    assert last_logon(krb_endpoint)["principal"] == f"user@{realm.realm}"


def test_the_kdc_is_found_in_psremote_kdc(realm, krb_endpoint, no_kdc_from_the_environment, monkeypatch):
    monkeypatch.setenv("PSREMOTE_KDC", f"udp://{realm.kdc}")
    with krb_client(realm, krb_endpoint, kerberos_kdc=None) as client:
        assert client.run_ps("Write-Output from-env").output == ["from-env"]
        assert client.connection_info is not None and client.connection_info.negotiated == "kerberos"
    assert last_logon(krb_endpoint)["mechanism"] == "kerberos"
    # Negotiate takes it from there too.
    with krb_client(realm, krb_endpoint, kerberos_kdc=None, auth="negotiate") as client:
        client.run_ps("1")
        assert client.connection_info is not None and client.connection_info.negotiated == "kerberos"


def test_the_kdc_option_wins_over_psremote_kdc(realm, krb_endpoint, monkeypatch):
    monkeypatch.setenv("PSREMOTE_KDC", "tcp://127.0.0.1:1")
    with krb_client(realm, krb_endpoint, kerberos_kdc=f"tcp://{realm.kdc}") as client:
        assert client.run_ps("Write-Output explicit").output == ["explicit"]


# --- delegation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["kerberos", "negotiate"])
def test_delegation_hands_the_server_a_forwarded_ticket(realm, krb_endpoint, psremote_records, auth):
    with krb_client(realm, krb_endpoint, auth=auth, delegate=True) as client:
        assert client.run_ps("Write-Output delegated").output == ["delegated"]
        assert client.connection_info is not None and client.connection_info.negotiated == "kerberos"
    logon = last_logon(krb_endpoint)
    assert logon["mechanism"] == "kerberos", logon
    assert logon["delegated"] is True, logon
    assert logon["delegated_principal"] == f"user@{realm.realm}", logon

    def delegation_warnings() -> List[logging.LogRecord]:
        return [r for r in psremote_records if r.name == "psremote.audit" and "delegating a forwardable Kerberos ticket" in r.getMessage()]

    assert wait_for(lambda: bool(delegation_warnings())), [r.getMessage() for r in psremote_records]
    warning = delegation_warnings()[0]
    assert warning.levelno == logging.WARNING
    assert warning.psremote.get("target_spn") == "HTTP/localhost"
    assert KRB_PASSWORD not in warning.getMessage()


def test_no_delegation_unless_asked(realm, krb_endpoint):
    with krb_client(realm, krb_endpoint, auth="negotiate") as client:
        client.run_ps("1")
    logon = last_logon(krb_endpoint)
    assert logon["delegated"] is False and logon["delegated_principal"] is None, logon


# --- asyncio --------------------------------------------------------------------------------------


def test_async_client_logs_on_with_kerberos(realm, krb_endpoint):
    async def main() -> psremote.ConnectionInfo:
        async with psremote.AsyncClient(
            url=by_name(krb_endpoint),
            username=f"{realm.realm}\\user",
            password=KRB_PASSWORD,
            auth="kerberos",
            kerberos_kdc=realm.kdc,
            delegate=True,
        ) as client:
            assert (await client.run_ps("Write-Output async-kerberos")).output == ["async-kerberos"]
            assert (await client.run_cmd("echo", ["async-cmd"])).text.strip() == "async-cmd"
            info = client.connection_info
            assert info is not None
            return info

    info = asyncio.run(main())
    assert (info.mechanism, info.negotiated, info.encryption) == ("kerberos", "kerberos", "message-encryption")
    logon = last_logon(krb_endpoint)
    assert (logon["mechanism"], logon["delegated"]) == ("kerberos", True), logon


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["kerberos", "negotiate"])
def test_wrong_password_is_an_authentication_error(realm, krb_endpoint, auth):
    before = len(logons(krb_endpoint))
    with pytest.raises(AuthenticationError) as info:
        krb_client(realm, krb_endpoint, auth=auth, password=WRONG_PASSWORD).connect()
    error = info.value
    assert error.mechanism == auth, error
    assert WRONG_PASSWORD not in str(error) and WRONG_PASSWORD not in repr(error)
    assert KRB_PASSWORD not in str(error)
    assert len(logons(krb_endpoint)) == before


def test_negotiate_with_an_unreachable_kdc_does_not_fall_back_to_ntlm(realm, krb_endpoint):
    before = len(logons(krb_endpoint))
    # Nothing listens on port 1, and no trusted_hosts names the server: NTLM may not stand in.
    with pytest.raises(AuthenticationError) as info:
        krb_client(realm, krb_endpoint, auth="negotiate", kerberos_kdc="tcp://127.0.0.1:1").connect()
    message = str(info.value)
    assert "NTLM may not stand in" in message, message
    assert "trusted_hosts" in message and "https" in message, message
    assert KRB_PASSWORD not in message
    assert len(logons(krb_endpoint)) == before
    # Naming the host in trusted_hosts allows the fallback, and connection_info reports it.
    with krb_client(realm, krb_endpoint, auth="negotiate", kerberos_kdc="tcp://127.0.0.1:1", trusted_hosts=["localhost"]) as client:
        assert client.run_ps("Write-Output fell-back").output == ["fell-back"]
        assert client.connection_info is not None and client.connection_info.negotiated == "ntlm"
    assert last_logon(krb_endpoint)["mechanism"] == "ntlm"


def test_a_ticket_for_a_service_the_server_has_no_key_for_is_refused(realm, krb_endpoint):
    # The KDC issues tickets for HTTP/elsewhere, but the endpoint's keytab has no key for it.
    with pytest.raises(AuthenticationError):
        krb_client(realm, krb_endpoint, spn_hostname="elsewhere").connect()
    # Service classes the keytab holds work.
    for service in ("WSMAN", "host"):
        with krb_client(realm, krb_endpoint, spn_service=service) as client:
            assert client.run_ps("1").output == [1]


# --- towards an address -----------------------------------------------------------------------------


def test_negotiate_towards_an_ip_address_warns_that_kerberos_cannot_be_used(realm, krb_endpoint, caplog):
    caplog.set_level(logging.INFO, logger="psremote")
    client = krb_client(realm, krb_endpoint, url=krb_endpoint.url, auth="negotiate", trusted_hosts=["127.0.0.1"])
    with client:
        assert client.run_ps("Write-Output by-address").output == ["by-address"]
        info = client.connection_info
    assert info is not None and (info.mechanism, info.negotiated) == ("negotiate", "ntlm")

    def warnings() -> List[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.levelno == logging.WARNING and "Kerberos cannot be used" in r.getMessage() and "IP address" in r.getMessage()
        ]

    assert wait_for(lambda: bool(warnings())), [r.getMessage() for r in caplog.records]
    record = warnings()[0]
    assert record.name == "psremote.audit"
    assert record.psremote.get("host") == "127.0.0.1"
    # Without trusted_hosts nothing could be used: refused before a request is sent.
    requests = krb_endpoint.state()["requests"]
    with pytest.raises(psremote.SecurityPolicyError):
        krb_client(realm, krb_endpoint, url=krb_endpoint.url, auth="negotiate").connect()
    assert krb_endpoint.state()["requests"] == requests
