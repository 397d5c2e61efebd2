"""HTTP authentication, one instance per TCP connection (PROTOCOL.md B.1).

NTLM and Negotiate bind a security context to the connection: after the token
loop completes, later requests on the same connection need no Authorization
header, and their bodies are sealed with that context. Basic is checked on
every request and never yields a context, so it can't seal.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import spnego

from .users import UserStore

log = logging.getLogger(__name__)

# HTTP scheme name -> pyspnego protocol. The Negotiate acceptor also takes raw NTLM tokens.
TOKEN_SCHEMES = {"negotiate": "negotiate", "ntlm": "ntlm"}
SCHEME_NAMES = {"negotiate": "Negotiate", "ntlm": "NTLM", "basic": "Basic"}
ALL_SCHEMES = ("negotiate", "ntlm", "basic")


@dataclass
class AuthResult:
    """What the HTTP layer should do with a request.

    ``status`` is ``ok`` (serve it), ``challenge`` (401, handshake continues or
    has not started) or ``denied`` (401, logon failed or refused).
    """

    status: str
    headers: List[Tuple[str, str]] = field(default_factory=list)
    scheme: Optional[str] = None
    principal: Optional[str] = None


class ConnectionAuth:
    def __init__(self, users: UserStore, schemes: Tuple[str, ...], allow_unencrypted: bool) -> None:
        self._users = users
        self._schemes = schemes
        self._allow_unencrypted = allow_unencrypted
        self._context = None
        self._context_scheme: Optional[str] = None
        self.principal: Optional[str] = None

    # -- state -------------------------------------------------------------------------
    @property
    def session_established(self) -> bool:
        """True once an NTLM/Negotiate context completed on this connection."""
        return self._context is not None and self._context.complete

    @property
    def session_scheme(self) -> Optional[str]:
        return self._context_scheme if self.session_established else None

    def reset(self) -> None:
        self._context = None
        self._context_scheme = None
        self.principal = None

    def offers(self) -> List[Tuple[str, str]]:
        values = []
        for scheme in ALL_SCHEMES:  # Windows lists Negotiate first, Basic last
            if scheme in self._schemes:
                values.append(("WWW-Authenticate", 'Basic realm="WSMAN"' if scheme == "basic" else SCHEME_NAMES[scheme]))
        return values

    # -- sealing -----------------------------------------------------------------------
    def unwrap(self, header: bytes, ciphertext: bytes) -> bytes:
        return self._context.unwrap_winrm(header, ciphertext)

    def wrap(self, plaintext: bytes) -> Tuple[bytes, bytes]:
        result = self._context.wrap_winrm(plaintext)
        return result.header, result.data

    # -- the Authorization header ----------------------------------------------------------
    def process(self, authorization: Optional[str]) -> AuthResult:
        if not authorization:
            if self.session_established:
                return AuthResult("ok", scheme=self._context_scheme, principal=self.principal)
            return AuthResult("challenge", self.offers())

        scheme_text, _, credentials = authorization.strip().partition(" ")
        scheme = scheme_text.lower()
        if scheme not in self._schemes:
            log.info("auth: scheme %s is not enabled", scheme_text)
            return self._deny()
        if scheme == "basic":
            return self._basic(credentials.strip())
        return self._token(scheme, scheme_text, credentials.strip())

    def _deny(self) -> AuthResult:
        self.reset()
        return AuthResult("denied", self.offers())

    def _basic(self, credentials: str) -> AuthResult:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            username, _, password = decoded.partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return self._deny()
        user = self._users.check_basic(username, password)
        if user is None:
            log.info("auth: basic logon failed for %s", username)
            return self._deny()
        if not self._allow_unencrypted:
            # Basic cannot seal, so with AllowUnencrypted=false Windows refuses it over HTTP.
            log.info("auth: basic refused because unencrypted traffic is not allowed")
            return self._deny()
        return AuthResult("ok", scheme="basic", principal=user.principal)

    def _token(self, scheme: str, scheme_text: str, credentials: str) -> AuthResult:
        try:
            token = base64.b64decode(credentials, validate=True)
        except binascii.Error:
            return self._deny()
        if not token:
            return self._deny()
        if self._context is None or self._context.complete or self._context_scheme != scheme:
            # A new handshake on this connection replaces whatever context it had.
            self._context = spnego.server(protocol=TOKEN_SCHEMES[scheme])
            self._context_scheme = scheme
            self.principal = None
        try:
            out_token = self._context.step(token)
        except Exception as exc:  # noqa: BLE001 - untrusted token: any parser error is a failed logon
            log.info("auth: %s logon failed: %s", scheme_text, exc)
            return self._deny()
        name = SCHEME_NAMES[scheme]
        if not self._context.complete:
            if not out_token:
                return self._deny()
            return AuthResult("challenge", [("WWW-Authenticate", f"{name} {base64.b64encode(out_token).decode()}")])
        self.principal = self._context.client_principal
        headers = []
        if out_token:
            headers.append(("WWW-Authenticate", f"{name} {base64.b64encode(out_token).decode()}"))
        return AuthResult("ok", headers, scheme=scheme, principal=self.principal)
