"""The security rules the core enforces, seen from Python: NTLM only towards a server that
HTTPS or ``trusted_hosts`` vouches for, Basic only over HTTPS, certificate verification (CA,
name, pins, TLS versions), the explicit and warned ``insecure_skip_verify``, message
encryption inside TLS, client certificates; and what ``connection_info`` reports.

The HTTPS endpoints serve the test certificates of ``psremote_testserver.certs``; what the
server saw (logons with their channel binding verdict, sealed and plaintext requests) comes from
its control state.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import psremote
from psremote import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    SecurityPolicyError,
    TLSError,
)
from psremote_testserver.testing import PASSWORD, USER, Endpoint

TRUSTED = ["127.0.0.1"]


def load(pem_path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(pem_path).read_bytes())


def spki_sha256(pem_path: str) -> str:
    cert = load(pem_path)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def cert_sha256(pem_path: str) -> str:
    cert = load(pem_path)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def https_args(test_certs: Dict[str, Any], cert: str = "server", *extra: str) -> List[str]:
    stem = cert.replace("-", "_")
    return ["--tls-cert", test_certs[stem], "--tls-key", test_certs[f"{stem}_key"], *extra]


@pytest.fixture(scope="module")
def https_endpoint(start_endpoint, test_certs) -> Endpoint:
    """HTTPS with the CA-signed localhost/127.0.0.1 certificate; client certificates verified
    against the CA; every scheme; channel bindings required when NTLM is used."""
    return start_endpoint(
        *https_args(test_certs, "server", "--client-ca", test_certs["ca"], "--auth", "negotiate,ntlm,credssp,basic,certificate", "--cbt", "strict"),
        cafile=test_certs["ca"],
    )


def https_client(endpoint: Endpoint, test_certs: Dict[str, Any], **kwargs: Any) -> psremote.Client:
    options: Dict[str, Any] = dict(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", ca_file=test_certs["ca"])
    options.update(kwargs)
    return psremote.Client(**options)


def last_logon(endpoint: Endpoint) -> Dict[str, Any]:
    logons = endpoint.state()["logons"]
    assert logons, "the endpoint recorded no logon"
    return logons[-1]


# --- NTLM needs something that proves the server -------------------------------------------------


@pytest.mark.parametrize("auth", ["ntlm", "negotiate"])
def test_ntlm_to_an_unverified_host_is_refused_before_any_request(endpoint, auth):
    before = endpoint.state()["requests"]
    with pytest.raises(SecurityPolicyError) as info:
        psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth=auth).connect()
    message = str(info.value)
    # The refusal names the three ways out and the host.
    assert "Kerberos" in message and "HTTPS" in message and "trusted_hosts" in message
    assert "127.0.0.1" in message
    assert PASSWORD not in message
    assert not isinstance(info.value, ConfigurationError)
    assert endpoint.state()["requests"] == before


def test_async_client_is_refused_the_same(endpoint):
    with pytest.raises(SecurityPolicyError, match="trusted_hosts"):
        psremote.AsyncClient(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm")


def test_trusted_hosts_that_do_not_name_the_host_are_refused(endpoint):
    with pytest.raises(SecurityPolicyError):
        psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts=["localhost", "10.0.0.*", "<local>"])


@pytest.mark.parametrize("trusted", ["127.0.0.*", "*", ["srv1", "127.0.0.1"], "srv1, 127.0.*"])
def test_trusted_host_patterns_accept_ntlm(endpoint, trusted):
    with psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts=trusted) as client:
        assert client.run_ps("Write-Output trusted").output == ["trusted"]
        info = client.connection_info
    assert info is not None
    assert (info.endpoint, info.mechanism, info.negotiated) == (endpoint.url, "ntlm", "ntlm")
    assert info.encryption == "message-encryption"
    assert (info.tls, info.tls_version, info.cipher_suite, info.certificate_sha256, info.channel_binding) == (False, None, None, None, False)


def test_connection_info_is_none_before_connecting(endpoint):
    client = psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts=TRUSTED)
    assert client.connection_info is None
    client.connect()
    assert client.connection_info is not None
    client.close()
    assert client.connection_info is None


def test_a_pool_reports_its_clients_connection(endpoint):
    with psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts=TRUSTED) as client:
        with client.runspace_pool() as pool:
            assert pool.connection_info is not None
            assert pool.connection_info == client.connection_info


# --- Basic only over HTTPS -----------------------------------------------------------------------


def test_basic_over_http_is_refused(endpoint):
    with pytest.raises(SecurityPolicyError) as info:
        psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="basic", trusted_hosts=TRUSTED)
    assert "https" in str(info.value) and "allow_unencrypted" in str(info.value)


def test_basic_over_https_is_accepted(https_endpoint, test_certs):
    with https_client(https_endpoint, test_certs, auth="basic") as client:
        assert client.run_ps("Write-Output basic").output == ["basic"]
        info = client.connection_info
    assert info is not None and (info.negotiated, info.encryption, info.tls_version) == ("basic", "tls", "TLSv1.3")
    logon = last_logon(https_endpoint)
    assert (logon["scheme"], logon["tls"]) == ("basic", "TLSv1.3")


# --- HTTPS: verification proves the server -------------------------------------------------------


def test_https_with_ca_file_allows_ntlm_without_trusted_hosts(https_endpoint, test_certs):
    with https_client(https_endpoint, test_certs) as client:
        assert client.run_ps("Write-Output over-tls").output == ["over-tls"]
        info = client.connection_info
    assert info is not None
    assert info.endpoint == https_endpoint.url and info.endpoint.startswith("https://127.0.0.1:")
    assert (info.mechanism, info.negotiated, info.encryption) == ("ntlm", "ntlm", "tls")
    assert info.tls and info.tls_version == "TLSv1.3" and info.cipher_suite and info.cipher_suite.startswith("TLS13_")
    assert info.certificate_sha256 == cert_sha256(test_certs["server"])
    assert info.channel_binding is True
    # The server checked the tls-server-end-point binding (--cbt strict would refuse none). NTLM
    # tokens travel under the Negotiate HTTP scheme, as WinRM clients send them.
    logon = last_logon(https_endpoint)
    assert (logon["mechanism"], logon["tls"], logon["channel_binding"]) == ("ntlm", "TLSv1.3", "match")


def test_negotiate_over_https_binds_the_channel_too(https_endpoint, test_certs):
    with https_client(https_endpoint, test_certs, auth="negotiate") as client:
        assert client.run_cmd("echo", ["hi"]).text.strip() == "hi"
    assert last_logon(https_endpoint)["channel_binding"] == "match"


def test_async_client_over_https(https_endpoint, test_certs):
    import asyncio

    async def main() -> psremote.ConnectionInfo:
        async with psremote.AsyncClient(url=https_endpoint.url, username=USER, password=PASSWORD, auth="ntlm", ca_file=test_certs["ca"]) as client:
            assert (await client.run_ps("1+1")).output == [2]
            info = client.connection_info
            assert info is not None
            return info

    assert asyncio.run(main()).tls_version == "TLSv1.3"


def test_untrusted_issuer_is_a_tls_error(start_endpoint, test_certs):
    endpoint = start_endpoint(*https_args(test_certs, "untrusted"), cafile=test_certs["other_ca"])
    for options in ({"ca_file": test_certs["ca"]}, {}):  # the given CA, then the system's
        with pytest.raises(TLSError) as info:
            https_client(endpoint, test_certs, **options).connect() if options else psremote.Client(
                url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm"
            ).connect()
        error = info.value
        # Which host, and why.
        assert f"127.0.0.1:{endpoint.port}" in str(error) and error.address == f"127.0.0.1:{endpoint.port}"
        assert "not issued by a trusted CA" in str(error)
        assert isinstance(error, ConnectError) and isinstance(error, ConnectionError)
    assert endpoint.state()["logons"] == []


def test_wrong_host_name_is_a_tls_error_unless_server_name_says_it(start_endpoint, test_certs):
    endpoint = start_endpoint(*https_args(test_certs, "wrong-host"), cafile=test_certs["ca"])
    with pytest.raises(TLSError) as info:
        https_client(endpoint, test_certs).connect()
    assert "not valid for the name \"127.0.0.1\"" in str(info.value) and "server_name" in str(info.value)
    # The certificate is for elsewhere.test: naming it verifies, and then NTLM is allowed.
    with https_client(endpoint, test_certs, server_name="elsewhere.test") as client:
        assert client.run_ps("Write-Output renamed").output == ["renamed"]
        assert client.connection_info is not None and client.connection_info.channel_binding


def test_server_name_that_the_certificate_carries(https_endpoint, test_certs):
    with https_client(https_endpoint, test_certs, server_name="localhost") as client:
        assert client.run_ps("1").output == [1]


def test_pinned_public_key_match_and_mismatch(https_endpoint, test_certs):
    pin = test_certs["server_spki_sha256"]
    assert pin == spki_sha256(test_certs["server"])
    with https_client(https_endpoint, test_certs, pinned_public_keys=["sha256/" + pin.upper()]) as client:
        assert client.run_ps("Write-Output pinned").output == ["pinned"]
    wrong = spki_sha256(test_certs["untrusted"])
    with pytest.raises(TLSError) as info:
        https_client(https_endpoint, test_certs, pinned_public_keys=[wrong]).connect()
    assert "matches none of the pinned keys" in str(info.value) and pin in str(info.value)


def test_a_pin_proves_the_server_without_a_ca(start_endpoint, test_certs):
    endpoint = start_endpoint(*https_args(test_certs, "untrusted"), cafile=test_certs["other_ca"])
    client = psremote.Client(
        url=endpoint.url,
        username=USER,
        password=PASSWORD,
        auth="ntlm",
        insecure_skip_verify=True,
        pinned_public_keys=spki_sha256(test_certs["untrusted"]),
    )
    with client:
        assert client.run_ps("Write-Output pinned-only").output == ["pinned-only"]


def test_insecure_skip_verify_refuses_ntlm_and_warns_on_every_connection(start_endpoint, test_certs, psremote_records):
    endpoint = start_endpoint(*https_args(test_certs, "untrusted"), cafile=test_certs["other_ca"])
    # Nothing proves the server any more, so NTLM is back to needing trusted_hosts.
    with pytest.raises(SecurityPolicyError, match="trusted_hosts"):
        psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", insecure_skip_verify=True)
    client = psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", insecure_skip_verify=True, trusted_hosts=TRUSTED)
    with client:
        assert client.run_ps("Write-Output unverified").output == ["unverified"]
        assert client.run_cmd("echo", ["x"]).ok
    # A second client: a connection of its own (one client may do all of the above on one).
    second = psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", insecure_skip_verify=True, trusted_hosts=TRUSTED)
    with second:
        assert second.run_cmd("echo", ["y"]).ok
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        warnings = [r for r in psremote_records if r.levelno == logging.WARNING and "verification is disabled" in r.getMessage()]
        connects = [r for r in psremote_records if r.name == "psremote.audit" and r.getMessage().startswith("connected")]
        if len(connects) >= 2 and len(warnings) >= len(connects):
            break
        time.sleep(0.05)
    assert len(connects) >= 2
    assert len(warnings) >= len(connects)
    assert all(r.psremote.get("endpoint") == endpoint.url for r in warnings)


def test_tls_versions(start_endpoint, test_certs):
    endpoint = start_endpoint(*https_args(test_certs, "server", "--tls-max", "1.2"), cafile=test_certs["ca"])
    with https_client(endpoint, test_certs) as client:
        client.run_ps("1")
        info = client.connection_info
    assert info is not None and info.tls_version == "TLSv1.2" and info.cipher_suite and info.cipher_suite.startswith("TLS_ECDHE_")
    assert last_logon(endpoint)["tls"] == "TLSv1.2"
    assert last_logon(endpoint)["channel_binding"] == "match"
    with pytest.raises(TLSError):
        https_client(endpoint, test_certs, min_tls_version="1.3").connect()


def test_tls_version_the_client_caps(https_endpoint, test_certs):
    with https_client(https_endpoint, test_certs, max_tls_version="1.2") as client:
        client.run_ps("1")
        assert client.connection_info is not None and client.connection_info.tls_version == "TLSv1.2"


def test_encryption_always_seals_inside_tls(https_endpoint, test_certs):
    before = https_endpoint.state()
    with https_client(https_endpoint, test_certs) as client:
        client.run_ps("Write-Output plain")
        assert client.connection_info is not None and client.connection_info.encryption == "tls"
    middle = https_endpoint.state()
    assert middle["sealed_requests"] == before["sealed_requests"]
    assert middle["plain_requests"] > before["plain_requests"]
    with https_client(https_endpoint, test_certs, encryption="always") as client:
        assert client.run_ps("Write-Output sealed").output == ["sealed"]
        assert client.connection_info is not None and client.connection_info.encryption == "tls+message-encryption"
    after = https_endpoint.state()
    assert after["sealed_requests"] > middle["sealed_requests"]
    assert after["plain_requests"] == middle["plain_requests"]


def test_credssp_passes_through_to_the_core(https_endpoint, test_certs, endpoint):
    # CredSSP hands the password to the server, so it obeys NTLM's rule: refused towards a host
    # nothing vouches for, fine over verified https.
    with pytest.raises(SecurityPolicyError):
        psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="credssp")
    with https_client(https_endpoint, test_certs, auth="credssp") as client:
        assert client.run_ps("Write-Output delegated").output == ["delegated"]
        info = client.connection_info
    assert info is not None and info.mechanism == "credssp"
    logon = last_logon(https_endpoint)
    assert logon["scheme"] == "credssp" and logon["credssp_password_ok"] is True


# --- client certificates -------------------------------------------------------------------------


def cert_client(endpoint: Endpoint, test_certs: Dict[str, Any], cert: str, key: str, **kwargs: Any) -> psremote.Client:
    return psremote.Client(
        url=endpoint.url, auth="certificate", ca_file=test_certs["ca"], client_certificate=test_certs[cert], client_key=test_certs[key], **kwargs
    )


def test_client_certificate_mapped_to_the_user(https_endpoint, test_certs):
    with cert_client(https_endpoint, test_certs, "client", "client_key") as client:
        assert client.run_ps("Write-Output by-certificate").output == ["by-certificate"]
        info = client.connection_info
    assert info is not None and (info.mechanism, info.encryption) == ("certificate", "tls")
    logon = last_logon(https_endpoint)
    assert logon["scheme"] == "certificate" and "user" in logon["principal"].lower()
    assert logon["client_cert_subject"].startswith("CN=user")


def test_unmapped_client_certificate_is_an_authentication_error(https_endpoint, test_certs):
    # Certificate authentication has no handshake of its own: the first request is refused.
    with pytest.raises(AuthenticationError) as info:
        with cert_client(https_endpoint, test_certs, "client_unmapped", "client_unmapped_key") as client:
            client.run_ps("1")
    assert info.value.mechanism == "certificate"


def test_client_certificate_from_a_foreign_ca_fails_the_connection(https_endpoint, test_certs):
    # The server refuses the certificate in the TLS handshake; under TLS 1.3 the client learns
    # it on its first read. TLSError and the current TransportError both derive from it.
    with pytest.raises(psremote.TransportError):
        with cert_client(https_endpoint, test_certs, "client_foreign", "client_foreign_key") as client:
            client.run_ps("1")


def test_encrypted_client_key_with_its_password(https_endpoint, test_certs):
    client = cert_client(https_endpoint, test_certs, "client", "client_key_encrypted", client_key_password=test_certs["client_key_password"])
    with client:
        assert client.run_ps("1").output == [1]
    assert test_certs["client_key_password"] not in repr(client) + repr(client.options)


def test_wrong_key_password_is_a_configuration_error_that_does_not_echo_it(https_endpoint, test_certs):
    wrong = "not-the-keypass-4711"
    with pytest.raises(ConfigurationError) as info:
        cert_client(https_endpoint, test_certs, "client", "client_key_encrypted", client_key_password=wrong)
    assert wrong not in str(info.value) and wrong not in repr(info.value)
    assert "client-key-encrypted.pem" in str(info.value)
    with pytest.raises(ConfigurationError, match="encrypted"):
        cert_client(https_endpoint, test_certs, "client", "client_key_encrypted")


def test_certificate_auth_needs_https(endpoint, test_certs):
    with pytest.raises((ConfigurationError, SecurityPolicyError)):
        psremote.Client(url=endpoint.url, auth="certificate", client_certificate=test_certs["client"])
