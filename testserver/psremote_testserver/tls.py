"""HTTPS: the listener's TLS context, what each connection's handshake established, and
the identity in a client certificate.

The handshake runs on the connection's own thread (``handshake``), not in the accept loop,
so a slow or broken client cannot stall other connections.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spnego.channel_bindings import GssChannelBindings

from . import cbt
from .certs import UPN_OID

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class TlsSettings:
    """The TLS command line options."""

    cert_file: str
    key_file: str
    min_version: str = "1.2"
    max_version: str = "1.3"
    client_ca: Optional[str] = None


@dataclass(frozen=True)
class ConnectionTls:
    """What one connection's handshake established."""

    version: str
    """``TLSv1.2`` or ``TLSv1.3``."""
    bindings: GssChannelBindings
    """tls-server-end-point channel bindings of the certificate this listener serves."""
    peer_cert: Optional[bytes] = None
    """The client's certificate (DER), present only when it verified against ``--client-ca``."""


@dataclass(frozen=True)
class CertIdentity:
    subject: str
    """RFC 4514 subject, e.g. ``CN=user,O=psremote tests``."""
    upn: Optional[str]
    """The subjectAltName otherName UPN (``user@DOMAIN``), if any."""
    common_name: Optional[str]


class ServerTls:
    """The listener's SSLContext and the channel bindings its certificate implies."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = VERSIONS[settings.min_version]
        context.maximum_version = VERSIONS[settings.max_version]
        context.load_cert_chain(settings.cert_file, settings.key_file)
        if settings.client_ca:
            # Ask for a certificate but let clients without one in (they may use another scheme).
            # One that does not verify fails the handshake.
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cafile=settings.client_ca)
        self.context = context
        with open(settings.cert_file, "rb") as handle:
            self.cert_der = x509.load_pem_x509_certificate(handle.read()).public_bytes(serialization.Encoding.DER)
        self.bindings = cbt.server_bindings(self.cert_der)

    def wrap(self, sock) -> ssl.SSLSocket:
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)

    def handshake(self, sock: ssl.SSLSocket) -> ConnectionTls:
        """Runs the server side of the handshake; raises OSError (ssl.SSLError) when it fails."""
        sock.settimeout(HANDSHAKE_TIMEOUT)
        sock.do_handshake()
        sock.settimeout(None)
        return ConnectionTls(version=sock.version() or "", bindings=self.bindings, peer_cert=sock.getpeercert(binary_form=True))


def _der_string(value: bytes) -> Optional[str]:
    """The text of a DER string (UTF8String and friends), looking through an explicit [0] tag."""
    if len(value) < 2:
        return None
    tag, length, position = value[0], value[1], 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(value[2 : 2 + count], "big")
        position += count
    content = value[position : position + length]
    if tag == 0xA0:
        return _der_string(content)
    if tag in (0x0C, 0x13, 0x16, 0x1E):  # UTF8String, PrintableString, IA5String, BMPString
        return content.decode("utf-16-be" if tag == 0x1E else "utf-8", "replace")
    return None


def cert_identity(der: bytes) -> CertIdentity:
    """Subject, UPN and CN of a client certificate, as Windows certificate mapping reads them."""
    cert = x509.load_der_x509_certificate(der)
    upn = None
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = None
    if names is not None:
        for other in names.get_values_for_type(x509.OtherName):
            if other.type_id == UPN_OID:
                upn = _der_string(other.value)
                break
    common_names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    common_name = str(common_names[0].value) if common_names else None
    return CertIdentity(subject=cert.subject.rfc4514_string(), upn=upn, common_name=common_name)
