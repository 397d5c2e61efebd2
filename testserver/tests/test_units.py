"""Unit tests of the pure parts: MIME framing, durations, fault XML, users file."""

from __future__ import annotations

import struct
from pathlib import Path
import xml.etree.ElementTree as ET

import pytest
from psremote_testserver import encryption, faults, soap
from psremote_testserver.users import UserStore, UsersFileError
from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1

SEALED = 'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";boundary="Encrypted Boundary"'


def fake_wrap(data: bytes):
    return b"S" * 16, bytes(b ^ 0x5A for b in data)


def fake_unwrap(header: bytes, data: bytes) -> bytes:
    if header != b"S" * 16:
        raise ValueError("bad signature")
    return bytes(b ^ 0x5A for b in data)


def test_seal_layout_is_exact():
    content_type, body = encryption.seal(b"<x/>", fake_wrap)
    assert content_type == SEALED
    assert body == (
        b"--Encrypted Boundary\r\n"
        b"\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
        b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=4\r\n"
        b"--Encrypted Boundary\r\n"
        b"\tContent-Type: application/octet-stream\r\n"
        + struct.pack("<I", 16)
        + b"S" * 16
        + bytes(b ^ 0x5A for b in b"<x/>")
        + b"--Encrypted Boundary--\r\n"
    )
    assert encryption.unseal(body, content_type, fake_unwrap) == b"<x/>"


@pytest.mark.parametrize(
    "transform",
    [
        lambda b: b.replace(b"--Encrypted Boundary\r\n", b"-- Encrypted Boundary\r\n"),
        lambda b: b[: -len(b"--Encrypted Boundary--\r\n")] + b"--Encrypted Boundary\r\n",
        lambda b: b[: -len(b"--Encrypted Boundary--\r\n")],
        lambda b: b[:-2],  # closing boundary without CRLF
    ],
    ids=["space-boundary", "no-final-dashes", "no-terminator", "no-final-crlf"],
)
def test_unseal_is_lenient(transform):
    _, body = encryption.seal(b"<envelope/>", fake_wrap)
    assert encryption.unseal(transform(body), SEALED, fake_unwrap) == b"<envelope/>"


def test_unseal_rejects_length_mismatch_and_bad_signature():
    _, body = encryption.seal(b"<envelope/>", fake_wrap)
    with pytest.raises(encryption.SealError):
        encryption.unseal(body.replace(b"Length=11", b"Length=12"), SEALED, fake_unwrap)
    with pytest.raises(encryption.SealError):
        encryption.unseal(body.replace(b"S" * 16, b"T" * 16), SEALED, fake_unwrap)
    with pytest.raises(encryption.FramingError):
        encryption.unseal(b"garbage", SEALED, fake_unwrap)
    with pytest.raises(encryption.FramingError):
        encryption.unseal(body, SEALED.replace("SPNEGO", "CredSSP"), fake_unwrap)


def test_corrupt_signature_flips_one_checksum_byte():
    _, good = encryption.seal(b"<x/>", fake_wrap)
    _, bad = encryption.seal(b"<x/>", fake_wrap, corrupt_signature=True)
    differences = [i for i, (a, b) in enumerate(zip(good, bad)) if a != b]
    assert len(differences) == 1
    assert good.index(b"S" * 16) + 4 == differences[0]


@pytest.mark.parametrize(
    "text, seconds",
    [("PT20S", 20), ("PT60.000S", 60), ("PT0.5S", 0.5), ("P0DT0H1M30S", 90), ("PT1H", 3600), ("P1D", 86400)],
)
def test_parse_duration(text, seconds):
    assert soap.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["PT-1S", "-PT1S", "P", "PT", "20", "PTS", "PT1.2.3S"])
def test_parse_duration_rejects(text):
    assert soap.parse_duration(text) is None


def test_timeout_fault_matches_windows_shape():
    xml = soap.fault_envelope(faults.operation_timeout(), "uuid:ABC", "127.0.0.1").decode()
    assert xml.startswith(
        '<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
        'xmlns:e="http://schemas.xmlsoap.org/ws/2004/08/eventing" xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" '
        'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
    )
    body = xml[xml.index("<s:Body>") :]
    message = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  "
    assert body == (
        "<s:Body><s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:TimedOut</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{message}</s:Text></s:Reason><s:Detail>'
        '<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858793" Machine="127.0.0.1">'
        f"<f:Message>{message}</f:Message></f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>"
    )
    assert "<a:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</a:Action>" in xml
    assert "<a:RelatesTo>uuid:ABC</a:RelatesTo>" in xml


def test_unknown_shell_fault_nests_provider_fault():
    root = ET.fromstring(soap.fault_envelope(faults.unknown_shell(), "uuid:X", "127.0.0.1"))
    ns = {**soap.NS}
    outer = root.find("s:Body/s:Fault/s:Detail/f:WSManFault", ns)
    provider = outer.find("f:Message/f:ProviderFault", ns)
    assert provider.get("provider") == "Shell provider"
    assert provider.find("f:WSManFault", ns).get("Code") == "2150858843"


def test_users_file(tmp_path):
    path = tmp_path / "users"
    path.write_text("# comment\nDOMAIN:alice:pa ss\n:bob:secret\n")
    store = UserStore.load(str(path))
    assert store.check_basic("alice", "pa ss").principal == "DOMAIN\\alice"
    assert store.check_basic("domain\\ALICE", "pa ss") is not None
    assert store.check_basic("alice@domain", "pa ss") is not None
    assert store.check_basic("OTHER\\alice", "pa ss") is None
    assert store.check_basic("alice", "wrong") is None
    assert store.check_basic("bob", "secret").principal == "bob"
    assert "pa ss" not in repr(store.users)
    ntlm = store.write_ntlm_file()
    try:
        lines = Path(ntlm).read_text().splitlines()
        # smbpasswd-style lines with the LM and NT hashes: no password, and no DES per logon.
        alice = lmowfv1("pa ss").hex().upper() + ":" + ntowfv1("pa ss").hex().upper()
        bob = lmowfv1("secret").hex().upper() + ":" + ntowfv1("secret").hex().upper()
        assert lines == [
            f"DOMAIN\\alice:0:{alice}:[U]:LCT-00000000",
            f"alice:0:{alice}:[U]:LCT-00000000",
            f"alice@DOMAIN:0:{alice}:[U]:LCT-00000000",
            f"bob:0:{bob}:[U]:LCT-00000000",
        ]
        assert all("pa ss" not in line and "secret" not in line for line in lines)
        # pyspnego finds the same account under each spelling, as with DOMAIN:USER:PASSWORD lines.
        from spnego._ntlm import _get_credential

        for domain, name in (("DOMAIN", "alice"), ("", "alice"), ("", "alice@DOMAIN"), ("domain", "ALICE")):
            assert _get_credential(ntlm, domain, name)[2:] == (lmowfv1("pa ss"), ntowfv1("pa ss"))
    finally:
        store.remove_ntlm_file()
    path.write_text("DOMAIN:alice:has:colon\n")
    with pytest.raises(UsersFileError):
        UserStore.load(str(path))
