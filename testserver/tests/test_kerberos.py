"""Kerberos against a real MIT KDC (psremote_testserver.kdc): the endpoint's acceptor under the
Negotiate and Kerberos schemes, message encryption, mutual authentication, delegation, channel
binding over HTTPS, and the KDC itself (UDP and TCP, refusals, enterprise names).

Peers: pyspnego's GSSAPI initiator (driven by a small client below, with its own MIME framing),
pypsrp 0.9.1 (auth="kerberos") and pywinrm 0.5.0 (transport="kerberos", pykerberos). The realm
is started once for the session; this module points the test process at it through
KRB5_CONFIG (and a per-test KRB5CCNAME) and puts the environment back afterwards.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import rawclient as rc
import spnego
from conftest import DOMAIN, PASSWORD, USER, winrm_session
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.shell import Process, WinRS
from pypsrp.wsman import WSMan
from spnego.channel_bindings import GssChannelBindings

from psremote_testserver import cbt
from psremote_testserver import certs as test_certs
from psremote_testserver.kdc import Realm, RealmError, find_tool
from psremote_testserver.testing import Endpoint, launch

SPNEGO_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
KERBEROS_PROTOCOL = "application/HTTP-Kerberos-session-encrypted"
UPN = "user@PSREMOTE.TEST"
KRB_PASSWORD = "Passw0rd!"
# RFC 4121 wrap token with aes256-cts-hmac-sha1-96, as WinRM frames it: 16-byte token header,
# 16-byte confounder, 16-byte encrypted header copy, 12-byte HMAC.
AES_WRAP_HEADER = 60
_ENV_KEYS = ("KRB5_CONFIG", "KRB5_KDC_PROFILE", "KRB5RCACHEDIR", "KRB5CCNAME", "KRB5_KTNAME", "KRB5_TRACE")


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def realm():
    started = time.monotonic()
    with Realm() as running:
        running.start_seconds = time.monotonic() - started
        yield running


@pytest.fixture(scope="module", autouse=True)
def krb_env(realm, tmp_path_factory):
    """This module's process environment: the test realm, and no ticket unless a test makes one."""
    saved = {key: os.environ.get(key) for key in _ENV_KEYS}
    empty = tmp_path_factory.mktemp("no-ccache") / "ccache"
    os.environ.pop("KRB5_KTNAME", None)
    os.environ.update(realm.env(KRB5CCNAME=f"FILE:{empty}"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def start_krb(realm, users_file, tmp_path_factory):
    """Factory for endpoints with the realm's keytab; all are stopped at session end."""
    started: List[Endpoint] = []

    def start(*extra: str, cafile: Optional[str] = None) -> Endpoint:
        log_dir = tmp_path_factory.mktemp("krb-endpoint")
        endpoint = launch(users_file, log_dir, "--keytab", str(realm.keytab), *extra, cafile=cafile, env=realm.env())
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()


@pytest.fixture(scope="session")
def krb_endpoint(start_krb) -> Endpoint:
    """HTTP, Negotiate (Kerberos or NTLM), Kerberos and NTLM offered, sealing required."""
    return start_krb("--auth", "negotiate,kerberos,ntlm")


@pytest.fixture
def ccache(tmp_path, monkeypatch):
    """A fresh file ccache that this test's GSSAPI calls use by default."""
    path = tmp_path / "ccache"
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{path}")
    return path


def logons_after(endpoint: Endpoint, before: int) -> List[dict]:
    return endpoint.state()["logons"][before:]


# -- a small Kerberos WinRM client ---------------------------------------------------------------
def seal(ctx, xml: bytes, protocol: str) -> bytes:
    wrapped = ctx.wrap_winrm(xml)
    return b"".join(
        (
            b"--Encrypted Boundary\r\n",
            f"\tContent-Type: {protocol}\r\n".encode(),
            f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={len(xml)}\r\n".encode(),
            b"--Encrypted Boundary\r\n",
            b"\tContent-Type: application/octet-stream\r\n",
            struct.pack("<I", len(wrapped.header)),
            wrapped.header,
            wrapped.data,
            b"--Encrypted Boundary--\r\n",
        )
    )


def open_sealed(body: bytes, protocol: str) -> Tuple[int, bytes, bytes]:
    """(declared length, header, ciphertext) of a one-part sealed reply in the exact layout."""
    match = re.match(
        rb"--Encrypted Boundary\r\n\tContent-Type: " + re.escape(protocol.encode()) + rb"\r\n"
        rb"\tOriginalContent: type=application/soap\+xml;charset=UTF-8;Length=(\d+)\r\n"
        rb"--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n(.*)--Encrypted Boundary--\r\n\Z",
        body,
        re.DOTALL,
    )
    assert match, f"reply is not sealed as {protocol}: {body[:200]!r}"
    payload = match.group(2)
    (header_len,) = struct.unpack("<I", payload[:4])
    return int(match.group(1)), payload[4 : 4 + header_len], payload[4 + header_len :]


class KerbClient:
    """One keep-alive connection authenticated by a pyspnego initiator for SPN ``service/host``
    while connecting to 127.0.0.1 (``url``)."""

    def __init__(
        self,
        url: str,
        scheme: str = "Kerberos",
        username: Optional[str] = UPN,
        password: Optional[str] = KRB_PASSWORD,
        service: str = "HTTP",
        hostname: str = "localhost",
        protocol: Optional[str] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        **spnego_kwargs,
    ) -> None:
        parts = re.match(r"(https?)://([^:/]+):(\d+)(/.*)", url)
        assert parts
        self.path = parts.group(4)
        if parts.group(1) == "https":
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(parts.group(2), int(parts.group(3)), timeout=30, context=ssl_context)
        else:
            self.conn = http.client.HTTPConnection(parts.group(2), int(parts.group(3)), timeout=30)
        self.scheme = scheme
        self.seal_protocol = KERBEROS_PROTOCOL if scheme == "Kerberos" else SPNEGO_PROTOCOL
        protocol = protocol or ("kerberos" if scheme == "Kerberos" else "negotiate")
        self.ctx = spnego.client(username, password, hostname=hostname, service=service, protocol=protocol, **spnego_kwargs)
        self.final_token: Optional[bytes] = None

    def __enter__(self) -> "KerbClient":
        return self

    def __exit__(self, *exc) -> None:
        self.conn.close()

    def post(self, body: bytes, headers: Dict[str, str]) -> rc.Response:
        self.conn.request("POST", self.path, body=body, headers=headers)
        response = self.conn.getresponse()
        return rc.Response(response.status, response.getheaders(), response.read())

    def authenticate(self) -> rc.Response:
        token = self.ctx.step()
        while True:
            response = self.post(b"", {"Authorization": f"{self.scheme} {base64.b64encode(token).decode()}"})
            in_token = None
            for value in response.all_headers("WWW-Authenticate"):
                if value.lower().startswith(self.scheme.lower() + " "):
                    in_token = base64.b64decode(value.split(" ", 1)[1])
            if response.status == 401 and in_token:
                token = self.ctx.step(in_token)
                continue
            if response.status != 200:
                raise rc.AuthFailed(response.status)
            self.final_token = in_token
            if in_token:
                self.ctx.step(in_token)
            assert self.ctx.complete
            return response

    def post_sealed(self, xml: bytes, protocol: Optional[str] = None) -> rc.Response:
        protocol = protocol or self.seal_protocol
        content_type = f'multipart/encrypted;protocol="{protocol}";boundary="Encrypted Boundary"'
        response = self.post(seal(self.ctx, xml, protocol), {"Content-Type": content_type})
        if (response.header("Content-Type") or "").startswith("multipart/encrypted"):
            assert f'protocol="{protocol}"' in response.header("Content-Type")
            length, header, data = open_sealed(response.body, protocol)
            self.reply_header_length = len(header)
            response.plaintext = self.ctx.unwrap_winrm(header, data)
            assert len(response.plaintext) == length
        return response

    def create_and_delete_shell(self) -> None:
        _, xml = rc.create_shell()
        created = self.post_sealed(xml)
        assert created.status == 200, created.body[:300]
        shell_id = rc.shell_id_of(created.xml)
        _, xml = rc.delete_shell(shell_id)
        assert self.post_sealed(xml).status == 200


def run_echo(client: KerbClient, text: str) -> bytes:
    """A cmd-shell command through sealed requests; returns its stdout."""
    _, xml = rc.create_shell()
    shell_id = rc.shell_id_of(client.post_sealed(xml).xml)
    _, xml = rc.command(shell_id, "echo", text)
    command_id = rc.command_id_of(client.post_sealed(xml).xml)
    out = b""
    for _ in range(50):
        _, xml = rc.receive(shell_id, command_id)
        root = client.post_sealed(xml).xml
        for stream in root.findall(".//rsp:Stream", rc.NS):
            if stream.get("Name") == "stdout" and stream.text:
                out += base64.b64decode(stream.text)
        state = root.find(".//rsp:CommandState", rc.NS)
        if state is not None and state.get("State", "").endswith("Done"):
            break
    _, xml = rc.delete_shell(shell_id)
    client.post_sealed(xml)
    return out


# -- the KDC -------------------------------------------------------------------------------------
def test_realm_starts_quickly_and_describes_itself(realm):
    assert realm.start_seconds < 5
    info = realm.describe()
    assert info["realm"] == "PSREMOTE.TEST"
    assert info["kdc"] == f"127.0.0.1:{realm.port}"
    assert info["users"] == {"user": "Passw0rd!", "other": "Other-Passw0rd!"}
    assert set(info["services"]) == {"HTTP/localhost@PSREMOTE.TEST", "host/localhost@PSREMOTE.TEST", "WSMAN/localhost@PSREMOTE.TEST"}
    conf = realm.krb5_conf.read_text()
    for line in ("default_realm = PSREMOTE.TEST", f"kdc = 127.0.0.1:{realm.port}", "dns_lookup_kdc = false", "rdns = false", "dns_canonicalize_hostname = false"):
        assert line in conf
    keytab = subprocess.run([find_tool("klist"), "-k", str(realm.keytab)], env={**os.environ, **realm.env()}, capture_output=True, text=True, check=True).stdout
    for service in info["services"]:
        assert service in keytab
    assert "HTTP/elsewhere" not in keytab


def _trace_kinit(realm: Realm, tmp_path: Path, krb5_conf: Optional[Path]) -> str:
    trace = tmp_path / "trace.log"
    realm.kinit("user", KRB_PASSWORD, tmp_path / "cc", krb5_conf=krb5_conf, env={"KRB5_TRACE": str(trace)})
    return trace.read_text()


def test_kdc_answers_over_udp_by_default(realm, tmp_path):
    trace = _trace_kinit(realm, tmp_path, None)
    assert f"dgram 127.0.0.1:{realm.port}" in trace


def test_kdc_answers_over_tcp(realm, tmp_path):
    """udp_preference_limit = 1 sends every request over TCP (the client under development uses TCP)."""
    conf = realm.client_conf(tmp_path / "krb5-tcp.conf", udp_preference_limit=1)
    assert "udp_preference_limit = 1" in conf.read_text()
    trace = _trace_kinit(realm, tmp_path, conf)
    assert f"stream 127.0.0.1:{realm.port}" in trace
    assert "dgram" not in trace


def test_logon_with_tickets_fetched_over_tcp(realm, krb_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("KRB5_CONFIG", str(realm.client_conf(tmp_path / "krb5-tcp.conf", udp_preference_limit=1)))
    trace = tmp_path / "trace.log"
    monkeypatch.setenv("KRB5_TRACE", str(trace))
    before = len(krb_endpoint.state()["logons"])
    with KerbClient(krb_endpoint.url) as client:
        client.authenticate()
        client.create_and_delete_shell()
    assert [(l["scheme"], l["mechanism"], l["principal"]) for l in logons_after(krb_endpoint, before)] == [("kerberos", "kerberos", UPN)]
    text = trace.read_text()
    assert f"stream 127.0.0.1:{realm.port}" in text and "dgram" not in text


def test_wrong_password_is_refused_at_the_kdc(realm, krb_endpoint, tmp_path):
    before = krb_endpoint.state()
    with pytest.raises(RealmError, match="Password incorrect"):
        realm.kinit("user", "wrong", tmp_path / "cc")
    with pytest.raises(Exception, match="(?i)password incorrect|preauthentication failed"):
        KerbClient(krb_endpoint.url, password="wrong").authenticate()
    connection = WSMan("127.0.0.1", port=krb_endpoint.port, ssl=False, auth="kerberos", username=UPN, password="wrong", path="wsman", negotiate_hostname_override="localhost")
    with pytest.raises(Exception, match="(?i)password incorrect|preauthentication failed"):
        with connection, WinRS(connection):
            pass
    after = krb_endpoint.state()
    assert after["logons"] == before["logons"]
    assert "PREAUTH_FAILED: user@PSREMOTE.TEST" in (realm.directory / "kdc.log").read_text()


def test_enterprise_name_logs_on_through_its_own_principal(realm, krb_endpoint, ccache):
    """MIT 1.20 has no enterprise-name lookup: kinit -E user@PSREMOTE.TEST (what SSPI sends for
    a UPN) finds the principal ``user\\@PSREMOTE.TEST`` the realm adds for it."""
    realm.kinit("user@PSREMOTE.TEST", KRB_PASSWORD, ccache, enterprise=True)
    before = len(krb_endpoint.state()["logons"])
    with KerbClient(krb_endpoint.url, username=None, password=None) as client:
        client.authenticate()
        client.create_and_delete_shell()
    assert [l["principal"] for l in logons_after(krb_endpoint, before)] == ["user\\@PSREMOTE.TEST@PSREMOTE.TEST"]


def test_kdc_cli_prints_its_realm_and_stops_on_sigterm(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "psremote_testserver.kdc", str(tmp_path / "realm")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        info = json.loads(process.stdout.readline())
        assert info["realm"] == "PSREMOTE.TEST" and info["kdc"].startswith("127.0.0.1:")
        assert set(info) >= {"realm", "kdc", "krb5_conf", "keytab", "users"}
        env = {**os.environ, "KRB5_CONFIG": info["krb5_conf"]}
        kinit = subprocess.run([find_tool("kinit"), "-c", f"FILE:{tmp_path / 'cc'}", "other"], input="Other-Passw0rd!\n", env=env, capture_output=True, text=True)
        assert kinit.returncode == 0, kinit.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        process.stdout.close()
        process.stderr.close()
    with pytest.raises(ProcessLookupError):
        os.kill(info["pid"], 0)


# -- the acceptor, with pyspnego's initiator ------------------------------------------------------
@pytest.mark.parametrize("scheme", ["Kerberos", "Negotiate"])
def test_logon_seals_and_runs_a_command(krb_endpoint, scheme):
    before = len(krb_endpoint.state()["logons"])
    with KerbClient(krb_endpoint.url, scheme=scheme) as client:
        response = client.authenticate()
        # Mutual authentication: the 200 carries the AP-REP (in SPNEGO for Negotiate).
        assert client.final_token, response.headers
        assert run_echo(client, "kerberos sealed").strip() == b"kerberos sealed"
        assert client.reply_header_length == AES_WRAP_HEADER
    logons = logons_after(krb_endpoint, before)
    assert [(l["scheme"], l["mechanism"], l["principal"], l["delegated"]) for l in logons] == [(scheme.lower(), "kerberos", UPN, False)]


def test_kerberos_wrap_header_is_sixty_bytes(krb_endpoint):
    with KerbClient(krb_endpoint.url) as client:
        client.authenticate()
        assert len(client.ctx.wrap_winrm(b"x" * 1000).header) == AES_WRAP_HEADER


def test_mutual_authentication_needs_the_final_token(krb_endpoint):
    """The initiator (mutual_auth requested by default) is incomplete until it reads the AP-REP."""
    with KerbClient(krb_endpoint.url) as client:
        token = client.ctx.step()
        assert not client.ctx.complete
        response = client.post(b"", {"Authorization": f"Kerberos {base64.b64encode(token).decode()}"})
        assert response.status == 200
        (value,) = response.all_headers("WWW-Authenticate")
        assert value.startswith("Kerberos ")
        client.ctx.step(base64.b64decode(value.split(" ", 1)[1]))
        assert client.ctx.complete


@pytest.mark.parametrize("service", ["HTTP", "host", "WSMAN"])
def test_every_keytab_service_is_accepted(krb_endpoint, service):
    with KerbClient(krb_endpoint.url, service=service) as client:
        client.authenticate()
        client.create_and_delete_shell()


def test_service_not_in_the_keytab_is_refused(realm, krb_endpoint):
    """HTTP/elsewhere is in the KDC (the client gets a ticket) but not in the endpoint's keytab."""
    before = krb_endpoint.state()
    with KerbClient(krb_endpoint.url, hostname="elsewhere") as client:
        with pytest.raises(rc.AuthFailed) as failed:
            client.authenticate()
    assert failed.value.args == (401,)
    after = krb_endpoint.state()
    assert after["auth_failures"] == before["auth_failures"] + 1
    assert after["logons"] == before["logons"]


def test_service_unknown_to_the_kdc_fails_at_the_client(krb_endpoint):
    with pytest.raises(Exception, match="(?i)not found in Kerberos database"):
        KerbClient(krb_endpoint.url, hostname="nowhere").authenticate()


def test_wrong_seal_protocol_for_the_scheme_is_refused(krb_endpoint):
    """Under the Kerberos scheme the body must say HTTP-Kerberos-session-encrypted."""
    with KerbClient(krb_endpoint.url) as client:
        client.authenticate()
        _, xml = rc.create_shell()
        assert client.post_sealed(xml, protocol=SPNEGO_PROTOCOL).status == 400


def test_ticket_from_a_ccache(realm, krb_endpoint, ccache):
    realm.kinit("other", "Other-Passw0rd!", ccache)
    before = len(krb_endpoint.state()["logons"])
    with KerbClient(krb_endpoint.url, username=None, password=None) as client:
        client.authenticate()
        client.create_and_delete_shell()
    assert [l["principal"] for l in logons_after(krb_endpoint, before)] == ["other@PSREMOTE.TEST"]


def test_delegation_with_a_forwardable_ticket(realm, krb_endpoint, ccache):
    realm.kinit("user", KRB_PASSWORD, ccache, forwardable=True)
    before = len(krb_endpoint.state()["logons"])
    delegate = spnego.ContextReq.default | spnego.ContextReq.delegate
    with KerbClient(krb_endpoint.url, username=None, password=None, context_req=delegate) as client:
        client.authenticate()
        client.create_and_delete_shell()
    (logon,) = logons_after(krb_endpoint, before)
    assert (logon["delegated"], logon["delegated_principal"]) == (True, UPN)


def test_no_delegation_without_a_forwardable_ticket(realm, krb_endpoint, ccache):
    realm.kinit("user", KRB_PASSWORD, ccache, forwardable=False)
    before = len(krb_endpoint.state()["logons"])
    delegate = spnego.ContextReq.default | spnego.ContextReq.delegate
    with KerbClient(krb_endpoint.url, username=None, password=None, context_req=delegate) as client:
        client.authenticate()
    (logon,) = logons_after(krb_endpoint, before)
    assert (logon["delegated"], logon["delegated_principal"]) == (False, None)


def test_delegation_with_a_password(krb_endpoint):
    """pyspnego asks the KDC for a forwardable TGT itself when the delegate flag is set."""
    before = len(krb_endpoint.state()["logons"])
    delegate = spnego.ContextReq.default | spnego.ContextReq.delegate
    with KerbClient(krb_endpoint.url, scheme="Negotiate", context_req=delegate) as client:
        client.authenticate()
    (logon,) = logons_after(krb_endpoint, before)
    assert (logon["scheme"], logon["mechanism"], logon["delegated"], logon["delegated_principal"]) == ("negotiate", "kerberos", True, UPN)


def test_negotiate_still_takes_ntlm(krb_endpoint):
    before = len(krb_endpoint.state()["logons"])
    with rc.RawClient(krb_endpoint.url, user=f"{DOMAIN}\\{USER}", password=PASSWORD, scheme="Negotiate") as client:
        client.authenticate()
        _, xml = rc.create_shell()
        assert client.post_sealed(xml).status == 200
    (logon,) = logons_after(krb_endpoint, before)
    assert (logon["scheme"], logon["mechanism"], logon["delegated"]) == ("negotiate", "ntlm", False)


def test_endpoint_without_keytab_refuses_kerberos(endpoint):
    with KerbClient(endpoint.url, scheme="Negotiate", protocol="kerberos") as client:
        with pytest.raises(rc.AuthFailed):
            client.authenticate()


def test_kerberos_scheme_needs_a_keytab(users_file):
    result = subprocess.run(
        [sys.executable, "-m", "psremote_testserver", "--port", "0", "--users", str(users_file), "--auth", "kerberos"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "--auth kerberos needs --keytab" in result.stderr


# -- channel binding over HTTPS ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Dict[str, str]:
    return test_certs.generate(tmp_path_factory.mktemp("krb-certs"))


def server_bindings(certs) -> GssChannelBindings:
    der = x509.load_pem_x509_certificate(Path(certs["server"]).read_bytes()).public_bytes(serialization.Encoding.DER)
    return cbt.server_bindings(der)


def https_logon(endpoint: Endpoint, certs, **kwargs) -> List[dict]:
    before = len(endpoint.state()["logons"])
    url = f"https://localhost:{endpoint.port}/wsman"
    with KerbClient(url, ssl_context=ssl.create_default_context(cafile=certs["ca"]), **kwargs) as client:
        client.authenticate()
        _, xml = rc.create_shell()
        response = client.post(xml, {"Content-Type": "application/soap+xml;charset=UTF-8"})  # TLS: plaintext is fine
        assert response.status == 200
    return logons_after(endpoint, before)


@pytest.mark.parametrize("mode", ["relaxed", "strict"])
def test_channel_binding_over_https(start_krb, certs, mode):
    endpoint = start_krb("--tls-cert", certs["server"], "--tls-key", certs["server_key"], "--auth", "negotiate,kerberos", "--cbt", mode, cafile=certs["ca"])
    (logon,) = https_logon(endpoint, certs, channel_bindings=server_bindings(certs))
    assert (logon["mechanism"], logon["channel_binding"], logon["tls"] is not None) == ("kerberos", "match", True)
    wrong = GssChannelBindings(application_data=cbt.PREFIX + b"\x00" * 32)
    with pytest.raises(rc.AuthFailed):
        https_logon(endpoint, certs, channel_bindings=wrong)
    if mode == "relaxed":
        (logon,) = https_logon(endpoint, certs, scheme="Negotiate")
        assert logon["channel_binding"] == "absent"
    else:
        with pytest.raises(rc.AuthFailed):
            https_logon(endpoint, certs, scheme="Negotiate")


# -- pypsrp ---------------------------------------------------------------------------------------
def pypsrp_wsman(endpoint: Endpoint, **kwargs) -> WSMan:
    options = dict(port=endpoint.port, ssl=False, auth="kerberos", username=UPN, password=KRB_PASSWORD, path="wsman", negotiate_hostname_override="localhost")
    options.update(kwargs)
    return WSMan("127.0.0.1", **options)


def pypsrp_echo(connection: WSMan, text: str) -> bytes:
    with connection, WinRS(connection) as shell:
        process = Process(shell, "echo", [text])
        process.invoke()
        return process.stdout


def test_pypsrp_kerberos_under_negotiate(krb_endpoint):
    """pypsrp picks the Negotiate header when offered and sends raw Kerberos tokens in it."""
    before = len(krb_endpoint.state()["logons"])
    assert pypsrp_echo(pypsrp_wsman(krb_endpoint), "pypsrp").strip() == b"pypsrp"
    (logon,) = logons_after(krb_endpoint, before)
    assert (logon["scheme"], logon["mechanism"], logon["principal"], logon["delegated"]) == ("negotiate", "kerberos", UPN, False)


def test_pypsrp_kerberos_scheme_seals_as_kerberos(start_krb, tmp_path):
    capture = tmp_path / "capture"
    endpoint = start_krb("--auth", "kerberos", "--capture", str(capture))
    assert pypsrp_echo(pypsrp_wsman(endpoint), "sealed").strip() == b"sealed"
    (logon,) = endpoint.state()["logons"]
    assert (logon["scheme"], logon["mechanism"]) == ("kerberos", "kerberos")
    requests = [path.read_bytes() for path in sorted(capture.iterdir())]
    assert any(b"Authorization: Kerberos " in request for request in requests)
    sealed = [request for request in requests if b"multipart/encrypted" in request]
    assert sealed and all(KERBEROS_PROTOCOL.encode() in request for request in sealed)


def test_pypsrp_delegation(krb_endpoint):
    before = len(krb_endpoint.state()["logons"])
    assert pypsrp_echo(pypsrp_wsman(krb_endpoint, negotiate_delegate=True), "delegated").strip() == b"delegated"
    (logon,) = logons_after(krb_endpoint, before)
    assert (logon["delegated"], logon["delegated_principal"]) == (True, UPN)


def test_pypsrp_powershell_over_kerberos(krb_endpoint):
    """PSRP messages (a large one included) sealed with the Kerberos context both ways."""
    text = "k" * 60000
    with pypsrp_wsman(krb_endpoint) as connection, RunspacePool(connection) as pool:
        shell = PowerShell(pool)
        shell.add_cmdlet("Write-Output").add_argument(text)
        assert shell.invoke() == [text]
        assert not shell.had_errors


# -- pywinrm --------------------------------------------------------------------------------------
def pywinrm_session(endpoint: Endpoint, **kwargs):
    options = dict(auth=(UPN, ""), transport="kerberos", kerberos_hostname_override="localhost", message_encryption="always")
    options.update(kwargs)
    return winrm_session(f"http://127.0.0.1:{endpoint.port}/wsman", **options)


def test_pywinrm_kerberos(realm, krb_endpoint, ccache):
    realm.kinit("user", KRB_PASSWORD, ccache)
    before = len(krb_endpoint.state()["logons"])
    with pywinrm_session(krb_endpoint) as session:
        result = session.run_cmd("echo", ["pywinrm"])
    assert (result.status_code, result.std_out.strip()) == (0, b"pywinrm")
    (logon,) = logons_after(krb_endpoint, before)
    assert (logon["scheme"], logon["mechanism"], logon["principal"], logon["delegated"]) == ("negotiate", "kerberos", UPN, False)


def test_pywinrm_kerberos_delegation(realm, krb_endpoint, ccache):
    realm.kinit("user", KRB_PASSWORD, ccache, forwardable=True)
    before = len(krb_endpoint.state()["logons"])
    with pywinrm_session(krb_endpoint, kerberos_delegation=True) as session:
        assert session.run_cmd("echo", ["hop"]).std_out.strip() == b"hop"
    (logon,) = logons_after(krb_endpoint, before)
    assert (logon["delegated"], logon["delegated_principal"]) == (True, UPN)
