"""Test certificates for the endpoint's HTTPS, channel binding and client certificate tests.

``python -m psremote_testserver.certs OUTDIR`` writes the PEM files below into OUTDIR and
prints :func:`generate`'s dict as JSON. Every key is RSA 2048 and every private key is
PKCS#8 PEM (unencrypted, except ``client-key-encrypted.pem``, password :data:`KEY_PASSWORD`).

* ``ca.pem``, ``ca-key.pem``: the test root CA clients are told to trust.
* ``server.pem``, ``server-key.pem``: leaf for DNS ``localhost`` and IP ``127.0.0.1``,
  serverAuth, signed sha256WithRSAEncryption by the CA.
* ``server-sha384.pem``, ``server-sha384-key.pem``: the same names, signed
  sha384WithRSAEncryption (so its tls-server-end-point hash is SHA-384).
* ``wrong-host.pem``, ``wrong-host-key.pem``: signed by the CA, only for DNS ``elsewhere.test``.
* ``other-ca.pem``, ``other-ca-key.pem``: a second root CA that clients do not trust;
  ``untrusted.pem``, ``untrusted-key.pem``: a localhost leaf it signed.
* ``client.pem``, ``client-key.pem``, ``client-key-encrypted.pem``: clientAuth certificate
  for ``user@DOMAIN`` (UPN otherName in subjectAltName, CN=user), signed by the CA.
* ``client-unmapped.pem``, ``client-unmapped-key.pem``: clientAuth for UPN ``nobody@DOMAIN``
  (no such account), signed by the CA.
* ``client-foreign.pem``, ``client-foreign-key.pem``: clientAuth for ``user@DOMAIN`` signed
  by the other CA.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import ipaddress
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
"""szOID_NT_PRINCIPAL_NAME: the otherName Windows maps client certificates by."""

KEY_PASSWORD = "keypass"
USER_UPN = "user@DOMAIN"
UNMAPPED_UPN = "nobody@DOMAIN"
WRONG_HOST = "elsewhere.test"
VALIDITY = datetime.timedelta(days=365)


@dataclass
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "psremote tests"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def make_ca(common_name: str) -> Issued:
    """A self-signed root CA (sha256WithRSAEncryption)."""
    key = _new_key()
    name = _name(common_name)
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def _der_utf8_string(text: str) -> bytes:
    """DER UTF8String (tag 0x0C) holding ``text``."""
    value = text.encode("utf-8")
    length = len(value)
    if length < 0x80:
        encoded_length = bytes([length])
    else:
        octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
        encoded_length = bytes([0x80 | len(octets)]) + octets
    return b"\x0c" + encoded_length + value


def upn_name(upn: str) -> x509.OtherName:
    """The subjectAltName entry Windows certificate mapping reads (otherName UPN)."""
    return x509.OtherName(UPN_OID, _der_utf8_string(upn))


def make_leaf(
    ca: Issued,
    common_name: str,
    names: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    algorithm: Union[hashes.SHA256, hashes.SHA384] = hashes.SHA256(),
) -> Issued:
    """An end-entity certificate signed by ``ca`` with one extended key usage."""
    key = _new_key()
    cert = (
        _builder(_name(common_name), ca.cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, algorithm)
    )
    return Issued(cert, key)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: rsa.RSAPrivateKey, password: Optional[str] = None) -> bytes:
    """PKCS#8 PEM, encrypted (PBES2) when a password is given."""
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if password is not None:
        encryption = serialization.BestAvailableEncryption(password.encode("utf-8"))
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def spki_sha256(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's DER SubjectPublicKeyInfo (what key pinning compares)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def end_point_hash_name(cert: x509.Certificate) -> str:
    """RFC 5929 tls-server-end-point hash: SHA-256 for MD5/SHA-1/SHA-256 signatures, else the signature's hash."""
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or algorithm.name in ("md5", "sha1", "sha256"):
        return "sha256"
    return algorithm.name


def end_point_hash(cert_der: bytes) -> bytes:
    """H(certificate DER) for the tls-server-end-point channel binding (RFC 5929 section 4.1)."""
    cert = x509.load_der_x509_certificate(cert_der)
    return hashlib.new(end_point_hash_name(cert), cert_der).digest()


def _write(outdir: Path, stem: str, issued: Issued, written: Dict[str, str], key: bool = True) -> None:
    cert_path = outdir / f"{stem}.pem"
    cert_path.write_bytes(cert_pem(issued.cert))
    written[stem.replace("-", "_")] = str(cert_path)
    if key:
        key_path = outdir / f"{stem}-key.pem"
        key_path.write_bytes(key_pem(issued.key))
        key_path.chmod(0o600)
        written[f"{stem}_key".replace("-", "_")] = str(key_path)


def generate(outdir: Path, host: str = "localhost", ip: str = "127.0.0.1") -> dict:
    """Write every test certificate into ``outdir``; returns their paths and fingerprints.

    Keys of the result are the file stems with ``_`` for ``-`` (``server``, ``server_key``,
    ``client_key_encrypted``, ...) plus ``client_key_password``, ``server_spki_sha256`` (hex
    SHA-256 of server.pem's DER SubjectPublicKeyInfo) and the tls-server-end-point hashes
    ``server_end_point`` and ``server_sha384_end_point`` (hex).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    server_names: List[x509.GeneralName] = [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address(ip))]
    server_auth, client_auth = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    written: Dict[str, str] = {}

    ca = make_ca("psremote test CA")
    other_ca = make_ca("psremote untrusted CA")
    _write(outdir, "ca", ca, written)
    _write(outdir, "other-ca", other_ca, written)

    server = make_leaf(ca, host, server_names, server_auth)
    server_sha384 = make_leaf(ca, host, server_names, server_auth, hashes.SHA384())
    _write(outdir, "server", server, written)
    _write(outdir, "server-sha384", server_sha384, written)
    _write(outdir, "wrong-host", make_leaf(ca, WRONG_HOST, [x509.DNSName(WRONG_HOST)], server_auth), written)
    _write(outdir, "untrusted", make_leaf(other_ca, host, server_names, server_auth), written)

    user_name = USER_UPN.split("@", 1)[0]
    client = make_leaf(ca, user_name, [upn_name(USER_UPN)], client_auth)
    _write(outdir, "client", client, written)
    encrypted = outdir / "client-key-encrypted.pem"
    encrypted.write_bytes(key_pem(client.key, KEY_PASSWORD))
    encrypted.chmod(0o600)
    written["client_key_encrypted"] = str(encrypted)
    _write(outdir, "client-unmapped", make_leaf(ca, UNMAPPED_UPN.split("@", 1)[0], [upn_name(UNMAPPED_UPN)], client_auth), written)
    _write(outdir, "client-foreign", make_leaf(other_ca, user_name, [upn_name(USER_UPN)], client_auth), written)

    return {
        **written,
        "client_key_password": KEY_PASSWORD,
        "server_spki_sha256": spki_sha256(server.cert),
        "server_end_point": end_point_hash(server.cert.public_bytes(serialization.Encoding.DER)).hex(),
        "server_sha384_end_point": end_point_hash(server_sha384.cert.public_bytes(serialization.Encoding.DER)).hex(),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m psremote_testserver.certs", description="Write the endpoint's test certificates.")
    parser.add_argument("outdir", type=Path, help="directory to write the PEM files into (created if missing)")
    parser.add_argument("--host", default="localhost", help="DNS name of the server certificates (default localhost)")
    parser.add_argument("--ip", default="127.0.0.1", help="IP address of the server certificates (default 127.0.0.1)")
    args = parser.parse_args(argv)
    print(json.dumps(generate(args.outdir, args.host, args.ip), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
