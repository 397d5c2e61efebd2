"""HTTPS, channel binding, client certificates and CredSSP, proved with independent peers:
pypsrp 0.9.1, pywinrm 0.5.0 (requests-ntlm, requests-credssp) and pyspnego's initiators."""

from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List

import pytest
import rawclient as rc
import spnego
import winrm
from conftest import DOMAIN, PASSWORD, USER, winrm_session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pypsrp.exceptions import AuthenticationError
from pypsrp.shell import Process, WinRS
from pypsrp.wsman import WSMan
from requests_credssp.exceptions import NTStatusException
from spnego.channel_bindings import GssChannelBindings

from psremote_testserver import certs as test_certs
from psremote_testserver.auth import CERTIFICATE_PROFILE

ALL_AUTH = "negotiate,ntlm,credssp,basic,certificate"
ACCOUNT = f"{DOMAIN}\\{USER}"


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Dict[str, str]:
    return test_certs.generate(tmp_path_factory.mktemp("certs"))


def start_https(start_endpoint, certs, *extra: str, cert: str = "server"):
    return start_endpoint("--tls-cert", certs[cert], "--tls-key", certs[f"{cert}_key"], *extra, cafile=certs["ca"])


@pytest.fixture(scope="session")
def https(start_endpoint, certs):
    """HTTPS with every scheme, client certificates requested, relaxed channel binding."""
    return start_https(start_endpoint, certs, "--client-ca", certs["ca"], "--auth", ALL_AUTH)


def wsman(endpoint, certs, **kwargs) -> WSMan:
    options = dict(port=endpoint.port, ssl=True, auth="negotiate", username=USER, password=PASSWORD, path="wsman", cert_validation=certs["ca"])
    options.update(kwargs)
    return WSMan(options.pop("server", "127.0.0.1"), **options)


def echo(connection: WSMan, text: str = "hi") -> bytes:
    with connection, WinRS(connection) as shell:
        process = Process(shell, "echo", [text])
        process.invoke()
        return process.stdout


def https_winrm(endpoint, certs, **kwargs):
    url = f"https://localhost:{endpoint.port}/wsman"
    return winrm_session(url, server_cert_validation="validate", ca_trust_path=certs["ca"], **kwargs)


def logons_after(endpoint, before: int) -> List[dict]:
    return endpoint.state()["logons"][before:]


def client_context(certs, **options) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs["ca"])
    for name, value in options.items():
        setattr(context, name, value)
    return context


def bindings_for(cert_file: str, algorithm: hashes.HashAlgorithm) -> GssChannelBindings:
    der = x509.load_pem_x509_certificate(Path(cert_file).read_bytes()).public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(algorithm)
    digest.update(der)
    return GssChannelBindings(application_data=b"tls-server-end-point:" + digest.finalize())


def create_and_delete_plain(client: rc.RawClient) -> None:
    response = client.post_plain(rc.create_shell()[1])
    assert response.status == 200, response.status
    assert client.post_plain(rc.delete_shell(rc.shell_id_of(response.xml))[1]).status == 200


# -- HTTPS ---------------------------------------------------------------------------------------
def test_https_url_and_control_state(https, certs):
    assert https.url.startswith("https://127.0.0.1:") and https.url.endswith("/wsman")
    assert "logons" in https.state()
    with pytest.raises(urllib.error.URLError) as failure:  # the test CA is not in the default store
        urllib.request.urlopen(https.base + "/_control/state", timeout=10, context=ssl.create_default_context())
    assert isinstance(failure.value.reason, ssl.SSLCertVerificationError)


def test_first_401_offers_credssp_but_not_certificate(https, certs):
    with rc.RawClient(https.url, ssl_context=client_context(certs)) as client:
        response = client.post(b"")
    assert response.status == 401
    assert response.all_headers("WWW-Authenticate") == ["Negotiate", "NTLM", "CredSSP", 'Basic realm="WSMAN"']


def test_pypsrp_negotiate_binds_the_channel_and_sends_plaintext(https, certs):
    before = https.state()
    assert echo(wsman(https, certs)) == b"hi\n"
    after = https.state()
    [logon] = after["logons"][len(before["logons"]) :]
    assert logon["scheme"] == "negotiate" and logon["mechanism"] == "ntlm"
    assert (logon["tls"], logon["channel_binding"], logon["delegated"]) == ("TLSv1.3", "match", False)
    assert after["plain_requests"] > before["plain_requests"]
    assert after["sealed_requests"] == before["sealed_requests"]
    assert after["plaintext_after_auth_refused"] == before["plaintext_after_auth_refused"]


def test_pywinrm_ntlm_binds_the_channel(https, certs):
    before = len(https.state()["logons"])
    with https_winrm(https, certs, auth=(ACCOUNT, PASSWORD), transport="ntlm") as session:
        assert session.run_cmd("echo", ["ntlm"]).std_out == b"ntlm\n"
    logons = logons_after(https, before)
    assert [(entry["scheme"], entry["principal"], entry["channel_binding"]) for entry in logons][:1] == [("ntlm", ACCOUNT, "match")]


def test_message_encryption_over_https_still_works(https, certs):
    before = https.state()["sealed_requests"]
    assert echo(wsman(https, certs, encryption="always", server="localhost")) == b"hi\n"
    assert https.state()["sealed_requests"] > before


def test_sha384_signed_certificate_binds_with_sha384(start_endpoint, certs):
    server = start_https(start_endpoint, certs, cert="server_sha384")
    assert echo(wsman(server, certs)) == b"hi\n"
    assert server.state()["logons"][-1]["channel_binding"] == "match"
    right = bindings_for(certs["server_sha384"], hashes.SHA384())
    with rc.RawClient(server.url, ssl_context=client_context(certs), channel_bindings=right) as client:
        client.authenticate()
    assert server.state()["logons"][-1]["channel_binding"] == "match"
    # SHA-256 of the same certificate is the wrong binding for it.
    wrong = bindings_for(certs["server_sha384"], hashes.SHA256())
    with rc.RawClient(server.url, ssl_context=client_context(certs), channel_bindings=wrong) as client:
        with pytest.raises(rc.AuthFailed):
            client.authenticate()


def test_tls_max_1_2(start_endpoint, certs):
    server = start_https(start_endpoint, certs, "--tls-max", "1.2")
    assert echo(wsman(server, certs)) == b"hi\n"
    assert [(entry["tls"], entry["channel_binding"]) for entry in server.state()["logons"]] == [("TLSv1.2", "match")]
    only_13 = client_context(certs, minimum_version=ssl.TLSVersion.TLSv1_3)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.base + "/_control/state", timeout=10, context=only_13)


def test_basic_over_https_without_allow_unencrypted(https, certs, endpoint):
    before = len(https.state()["logons"])
    with https_winrm(https, certs, auth=(USER, PASSWORD), transport="basic") as session:
        assert session.run_cmd("echo", ["basic"]).std_out == b"basic\n"
    logons = logons_after(https, before)
    assert [(entry["scheme"], entry["principal"], entry["tls"]) for entry in logons] == [("basic", ACCOUNT, "TLSv1.3")]
    with pytest.raises(winrm.exceptions.InvalidCredentialsError), https_winrm(https, certs, auth=(USER, "wrong"), transport="basic") as session:
        session.run_cmd("echo", ["x"])
    # Over HTTP, Basic stays refused without --allow-unencrypted.
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with rc.RawClient(endpoint.url) as client:
        assert client.post_plain(rc.create_shell()[1], {"Authorization": f"Basic {token}"}).status == 401


# -- channel binding -----------------------------------------------------------------------------
def test_relaxed_accepts_a_client_without_bindings(https, certs):
    with rc.RawClient(https.url, ssl_context=client_context(certs)) as client:
        client.authenticate()
        create_and_delete_plain(client)  # plaintext after NTLM: TLS is the encryption layer
    assert https.state()["logons"][-1]["channel_binding"] == "absent"


@pytest.mark.parametrize("scheme", ["NTLM", "Negotiate"])
def test_wrong_bindings_are_refused(https, certs, scheme):
    before = https.state()["auth_failures"]
    wrong = GssChannelBindings(application_data=b"tls-server-end-point:" + bytes(32))
    with rc.RawClient(https.url, scheme=scheme, ssl_context=client_context(certs), channel_bindings=wrong) as client:
        with pytest.raises(rc.AuthFailed):
            client.authenticate()
    assert https.state()["auth_failures"] == before + 1


def test_strict_requires_bindings(start_endpoint, certs):
    server = start_https(start_endpoint, certs, "--cbt", "strict")
    with rc.RawClient(server.url, ssl_context=client_context(certs)) as client:
        with pytest.raises(rc.AuthFailed):
            client.authenticate()
    with pytest.raises(AuthenticationError):
        echo(wsman(server, certs, negotiate_send_cbt=False))
    assert echo(wsman(server, certs)) == b"hi\n"
    right = bindings_for(certs["server"], hashes.SHA256())
    with rc.RawClient(server.url, scheme="Negotiate", ssl_context=client_context(certs), channel_bindings=right) as client:
        client.authenticate()
        create_and_delete_plain(client)
    assert [entry["channel_binding"] for entry in server.state()["logons"]] == ["match", "match"]
    assert server.state()["auth_failures"] == 2


def test_cbt_none_checks_nothing(start_endpoint, certs):
    server = start_https(start_endpoint, certs, "--cbt", "none")
    wrong = GssChannelBindings(application_data=b"tls-server-end-point:" + bytes(32))
    with rc.RawClient(server.url, ssl_context=client_context(certs), channel_bindings=wrong) as client:
        client.authenticate()
    assert server.state()["logons"][-1]["channel_binding"] == "not-checked"


# -- client certificates -------------------------------------------------------------------------
def test_pywinrm_certificate_logon(https, certs):
    before = len(https.state()["logons"])
    with https_winrm(https, certs, auth=("", ""), transport="certificate", cert_pem=certs["client"], cert_key_pem=certs["client_key"]) as session:
        assert session.run_cmd("echo", ["cert"]).std_out == b"cert\n"
    [logon] = logons_after(https, before)
    assert (logon["scheme"], logon["mechanism"], logon["principal"]) == ("certificate", "certificate", ACCOUNT)
    assert logon["client_cert_subject"] == "CN=user,O=psremote tests"


def test_pypsrp_certificate_with_encrypted_key(https, certs):
    connection = wsman(https, certs, auth="certificate", certificate_pem=certs["client"], certificate_key_pem=certs["client_key_encrypted"], certificate_key_password="keypass")
    assert echo(connection) == b"hi\n"
    assert https.state()["logons"][-1]["scheme"] == "certificate"


def test_unmapped_certificate_is_401(https, certs):
    before = https.state()["auth_failures"]
    with pytest.raises(winrm.exceptions.InvalidCredentialsError), https_winrm(
        https, certs, auth=("", ""), transport="certificate", cert_pem=certs["client_unmapped"], cert_key_pem=certs["client_unmapped_key"]
    ) as session:
        session.run_cmd("echo", ["x"])
    assert https.state()["auth_failures"] > before


def test_certificate_header_without_a_certificate_is_401(https, certs, endpoint):
    with rc.RawClient(https.url, ssl_context=client_context(certs)) as client:
        assert client.post_plain(rc.create_shell()[1], {"Authorization": CERTIFICATE_PROFILE}).status == 401
    with rc.RawClient(endpoint.url) as client:  # plain HTTP, certificate not enabled
        assert client.post_plain(rc.create_shell()[1], {"Authorization": CERTIFICATE_PROFILE}).status == 401


def test_foreign_certificate_fails_the_handshake(https, certs):
    before = https.state()["tls_handshake_failures"]
    context = client_context(certs)
    context.load_cert_chain(certs["client_foreign"], certs["client_foreign_key"])
    with rc.RawClient(https.url, ssl_context=context) as client:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            client.post_plain(rc.create_shell()[1], {"Authorization": CERTIFICATE_PROFILE})
    assert https.wait_state("tls_handshake_failures", before + 1)["tls_handshake_failures"] == before + 1


# -- CredSSP -------------------------------------------------------------------------------------
def test_pypsrp_credssp_over_https_records_the_delegated_user(https, certs):
    before = len(https.state()["logons"])
    assert echo(wsman(https, certs, auth="credssp", username=ACCOUNT)) == b"hi\n"
    [logon] = logons_after(https, before)
    assert (logon["scheme"], logon["mechanism"], logon["principal"], logon["tls"]) == ("credssp", "ntlm", ACCOUNT, "TLSv1.3")
    assert (logon["credssp_user"], logon["credssp_password_ok"], logon["channel_binding"]) == (ACCOUNT, True, "not-checked")
    assert "Passw0rd" not in str(https.state())


def test_pywinrm_credssp_over_https_sealed(https, certs):
    before = https.state()
    with https_winrm(https, certs, auth=(ACCOUNT, PASSWORD), transport="credssp", message_encryption="always") as session:
        assert session.run_cmd("echo", ["credssp"]).std_out == b"credssp\n"
    after = https.state()
    assert after["logons"][-1]["credssp_user"] == ACCOUNT
    assert after["sealed_requests"] > before["sealed_requests"]


def test_credssp_delegating_another_password(https, certs):
    inner = spnego.client(ACCOUNT, PASSWORD, hostname="127.0.0.1", protocol="ntlm")
    with rc.RawClient(https.url, ACCOUNT, "not-the-password", scheme="CredSSP", ssl_context=client_context(certs), credssp_negotiate_context=inner) as client:
        client.authenticate()
    logon = https.state()["logons"][-1]
    assert (logon["credssp_user"], logon["credssp_password_ok"]) == (ACCOUNT, False)


def test_credssp_wrong_password_is_refused(https, certs):
    before = https.state()["auth_failures"]
    # The acceptor answers with a TSRequest carrying the logon failure's NTSTATUS.
    with pytest.raises(NTStatusException) as failure:
        echo(wsman(https, certs, auth="credssp", username=ACCOUNT, password="wrong"))
    assert failure.value.args[0] == 0x8009030C  # SEC_E_LOGON_DENIED
    assert https.state()["auth_failures"] == before + 1


def test_credssp_over_http_sealed_in_16k_chunks(start_endpoint):
    server = start_endpoint("--auth", "negotiate,credssp")
    connection = WSMan("127.0.0.1", port=server.port, ssl=False, auth="credssp", username=ACCOUNT, password=PASSWORD, path="wsman")
    with connection, WinRS(connection) as shell:
        process = Process(shell, "cat")
        process.begin_invoke()
        process.send(b"x" * 40000, end=True)  # a Send over 16 KiB: x-multi-encrypted from the client
        process.end_invoke()
        assert process.stdout == b"x" * 40000  # Receive replies over 16 KiB: x-multi-encrypted from us
    with winrm_session(server.url, auth=(ACCOUNT, PASSWORD), transport="credssp") as session:
        assert session.run_cmd("echo", ["http"]).std_out == b"http\n"
    state = server.state()
    assert [(entry["scheme"], entry["tls"], entry["credssp_user"]) for entry in state["logons"]] == [("credssp", None, ACCOUNT)] * 2
    assert state["plain_requests"] == 0 and state["sealed_requests"] > 0
    # Plaintext after a CredSSP logon over HTTP is refused like after NTLM.
    with rc.RawClient(server.url, ACCOUNT, PASSWORD, scheme="CredSSP") as client:
        client.authenticate()
        assert client.post_plain(rc.create_shell()[1]).status == 401


# -- units: the framing, the binding check, certificate identities --------------------------------
@pytest.fixture
def ntlm_acceptor(tmp_path, monkeypatch) -> None:
    """Lets in-process pyspnego acceptors find the test account."""
    ntlm_file = tmp_path / "ntlm_users"
    ntlm_file.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n:{USER}:{PASSWORD}\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(ntlm_file))


def credssp_pair():
    """An in-process pyspnego CredSSP initiator and acceptor, handshake done."""
    client = spnego.client(ACCOUNT, PASSWORD, hostname="127.0.0.1", protocol="credssp")
    server = spnego.server(protocol="credssp")
    token = client.step()
    while not (client.complete and server.complete):
        token = server.step(token)
        if token is None or client.complete:
            break
        token = client.step(token)
    if token is not None and not server.complete:
        server.step(token)
    assert client.complete and server.complete
    return client, server


def test_credssp_framing_round_trips_with_pypsrp(ntlm_acceptor):
    from pypsrp.encryption import WinRMEncryption

    from psremote_testserver import encryption

    client, server = credssp_pair()
    peer = WinRMEncryption(client, WinRMEncryption.CREDSSP)
    wrap = lambda data: (lambda r: (r.header, r.data))(server.wrap_winrm(data))  # noqa: E731
    unwrap = server.unwrap_winrm

    plaintext = bytes(range(256)) * 160  # 40960 bytes: chunks of 16384, 16384, 8192
    content_type, body = encryption.seal(plaintext, wrap, protocol=encryption.CREDSSP_PROTOCOL)
    assert content_type == 'multipart/x-multi-encrypted;protocol="application/HTTP-CredSSP-session-encrypted";boundary="Encrypted Boundary"'
    parts = encryption.split_parts(body)
    assert [part.length for part in parts] == [16384, 16384, 8192]
    for part in parts:
        record = part.header + part.ciphertext  # one TLS application-data record per chunk
        assert record[0] == 0x17 and int.from_bytes(record[3:5], "big") == len(record) - 5
        assert len(part.header) == 17  # TLS 1.3 trailer: 16-byte tag + content type byte
    assert body.endswith(b"--Encrypted Boundary--\r\n") and body.count(b"--Encrypted Boundary--") == 1
    assert peer.unwrap_message(body, "Encrypted Boundary") == plaintext

    short_type, short = encryption.seal(b"<short/>", wrap, protocol=encryption.CREDSSP_PROTOCOL)
    assert short_type.startswith("multipart/encrypted;") and peer.unwrap_message(short, "Encrypted Boundary") == b"<short/>"

    # What pypsrp sends: x-multi-encrypted over 16 KiB, multipart/encrypted below.
    media, request = peer.wrap_message(plaintext)
    request_type = f'{media};protocol="{encryption.CREDSSP_PROTOCOL}";boundary="Encrypted Boundary"'
    assert media == "multipart/x-multi-encrypted"
    assert encryption.unseal(request, request_type, unwrap, encryption.CREDSSP_PROTOCOL) == plaintext
    with pytest.raises(encryption.FramingError):  # x-multi-encrypted belongs to CredSSP only
        encryption.unseal(request, request_type.replace("CredSSP", "SPNEGO"), unwrap)


def test_cbt_check_reads_ntlm_authenticate(certs, ntlm_acceptor):
    from psremote_testserver import cbt

    ours = cbt.server_bindings(x509.load_pem_x509_certificate(Path(certs["server"]).read_bytes()).public_bytes(serialization.Encoding.DER))
    assert ours.application_data == b"tls-server-end-point:" + bytes.fromhex(certs["server_end_point"])
    assert len(bytes.fromhex(certs["server_sha384_end_point"])) == 48

    def authenticate(protocol: str, bindings=None) -> bytes:
        client = spnego.client(USER, PASSWORD, hostname="127.0.0.1", protocol=protocol, channel_bindings=bindings, options=spnego.NegotiateOptions.use_ntlm)
        server = spnego.server(protocol=protocol)
        first = client.step()
        assert cbt.check(first, ours, "strict") is None  # NEGOTIATE: nothing to check
        return client.step(server.step(first))

    for protocol in ("ntlm", "negotiate"):
        assert cbt.check(authenticate(protocol, ours), ours, "strict") == cbt.MATCH
        assert cbt.check(authenticate(protocol), ours, "relaxed") == cbt.ABSENT
        with pytest.raises(cbt.BindingError):
            cbt.check(authenticate(protocol), ours, "strict")
        with pytest.raises(cbt.BindingError):
            cbt.check(authenticate(protocol, GssChannelBindings(application_data=b"tls-server-end-point:x")), ours, "relaxed")
        assert cbt.check(authenticate(protocol), ours, "none") is None


def test_cert_identity(certs):
    from psremote_testserver.tls import cert_identity

    def identity(name: str):
        return cert_identity(x509.load_pem_x509_certificate(Path(certs[name]).read_bytes()).public_bytes(serialization.Encoding.DER))

    assert (identity("client").upn, identity("client").common_name) == ("user@DOMAIN", "user")
    assert identity("client_unmapped").upn == "nobody@DOMAIN"
    assert (identity("server").upn, identity("server").subject) == (None, "CN=localhost,O=psremote tests")
