"""HTTP authentication, one instance per TCP connection (PROTOCOL.md B.1).

NTLM, Negotiate, Kerberos and CredSSP bind a security context to the connection: after
the token loop completes, later requests on the same connection need no Authorization
header, and their bodies are sealed with that context (over HTTPS they may also be
plaintext). Basic is checked on every request and never yields a context, so it can't
seal. Certificate authentication (``secprofile/https/mutual``) maps the connection's
verified TLS client certificate to an account.

Kerberos (Negotiate with the krb5 mechanism, or the ``Kerberos`` scheme) needs a keytab:
the CLI's ``--keytab`` sets ``KRB5_KTNAME`` and the GSSAPI acceptor takes the default acceptor
credential, so a ticket for any service principal in the keytab is accepted. Without a keytab
the CLI points ``KRB5_KTNAME`` at an empty keytab and Kerberos logons fail.

Each completed logon is reported once (``AuthResult.logon``) for the control state.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import spnego
from spnego.channel_bindings import GssChannelBindings

from . import cbt, encryption
from .stats import Logon
from .tls import ConnectionTls, cert_identity
from .users import UserStore

log = logging.getLogger(__name__)

# HTTP scheme name -> pyspnego protocol. The Negotiate acceptor also takes raw NTLM and raw
# Kerberos tokens (pypsrp's and pywinrm's kerberos transports send those under Negotiate).
TOKEN_SCHEMES = {"negotiate": "negotiate", "kerberos": "kerberos", "ntlm": "ntlm", "credssp": "credssp"}
SCHEME_NAMES = {"negotiate": "Negotiate", "kerberos": "Kerberos", "ntlm": "NTLM", "credssp": "CredSSP", "basic": "Basic"}
# In the order Windows offers them (Negotiate first, Basic last); certificate is never offered.
ALL_SCHEMES = ("negotiate", "kerberos", "ntlm", "credssp", "basic", "certificate")
DEFAULT_SCHEMES = ("negotiate", "ntlm", "basic")
# pyspnego's CredSSP acceptor reports this stage once it answered a failed inner logon.
CREDSSP_FAILURE_STAGE = "Authentication failure"
# The Authorization value of WS-Management's mutual-certificate security profile.
CERTIFICATE_PROFILE = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"
# GSS context flags (RFC 2744; GSS_C_CHANNEL_BOUND_FLAG is MIT's, 1.19+): the acceptor sets it
# when the initiator's authenticator carried channel bindings and they matched ours.
GSS_C_DELEG_FLAG = 0x1
GSS_C_CHANNEL_BOUND_FLAG = 0x800


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
    logon: Optional[Logon] = None
    """Set on the request that completed a logon (once per logon)."""


class ConnectionAuth:
    def __init__(
        self,
        users: UserStore,
        schemes: Tuple[str, ...],
        allow_unencrypted: bool,
        tls: Optional[ConnectionTls] = None,
        cbt_mode: str = "relaxed",
    ) -> None:
        self._users = users
        self._schemes = schemes
        self._allow_unencrypted = allow_unencrypted
        self._tls = tls
        self._cbt_mode = cbt_mode
        self._context = None
        self._context_scheme: Optional[str] = None
        self._binding: Optional[str] = None
        self._logged: Optional[Tuple[str, str]] = None
        self.principal: Optional[str] = None

    # -- state -------------------------------------------------------------------------
    @property
    def session_established(self) -> bool:
        """True once an NTLM/Negotiate context completed on this connection."""
        return self._context is not None and self._context.complete

    @property
    def session_scheme(self) -> Optional[str]:
        return self._context_scheme if self.session_established else None

    @property
    def seal_protocol(self) -> str:
        """The encrypted-body protocol of the connection's context (by HTTP scheme: Negotiate
        seals as SPNEGO whichever mechanism it chose)."""
        if self._context_scheme == "credssp":
            return encryption.CREDSSP_PROTOCOL
        if self._context_scheme == "kerberos":
            return encryption.KERBEROS_PROTOCOL
        return encryption.SPNEGO_PROTOCOL

    def reset(self) -> None:
        self._context = None
        self._context_scheme = None
        self._binding = None
        self._logged = None
        self.principal = None

    def offers(self) -> List[Tuple[str, str]]:
        values = []
        for scheme in ALL_SCHEMES:  # Windows lists Negotiate first, Basic last
            if scheme in self._schemes and scheme in SCHEME_NAMES:
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
            if self._logged is not None and self._logged[0] == "certificate":
                return AuthResult("ok", scheme="certificate", principal=self.principal)
            return AuthResult("challenge", self.offers())

        scheme_text, _, credentials = authorization.strip().partition(" ")
        scheme = "certificate" if scheme_text.lower() == CERTIFICATE_PROFILE else scheme_text.lower()
        if scheme not in self._schemes:
            log.info("auth: scheme %s is not enabled", scheme_text)
            return self._deny()
        if scheme == "basic":
            return self._basic(credentials.strip())
        if scheme == "certificate":
            return self._certificate()
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
        if not self._allow_unencrypted and self._tls is None:
            # Basic cannot seal, so with AllowUnencrypted=false Windows refuses it over HTTP.
            log.info("auth: basic refused because unencrypted traffic is not allowed")
            return self._deny()
        return AuthResult("ok", scheme="basic", principal=user.principal, logon=self._once(Logon("basic", "basic", user.principal)))

    def _certificate(self) -> AuthResult:
        """WS-Management https/mutual: the verified TLS client certificate names the account."""
        if self._tls is None or self._tls.peer_cert is None:
            log.info("auth: certificate logon without a verified client certificate")
            return self._deny()
        identity = cert_identity(self._tls.peer_cert)
        account = identity.upn or identity.common_name or ""
        user = self._users.lookup(account)
        if user is None:
            log.info("auth: client certificate %s maps to no account", identity.subject)
            return self._deny()
        self.principal = user.principal
        logon = Logon("certificate", "certificate", user.principal, client_cert_subject=identity.subject)
        return AuthResult("ok", scheme="certificate", principal=user.principal, logon=self._once(logon))

    def _once(self, logon: Logon) -> Optional[Logon]:
        """The logon to report, or None when this connection already reported the same one."""
        key = (logon.scheme, logon.principal)
        if self._logged == key:
            return None
        self._logged = key
        return self._stamp(logon)

    def _stamp(self, logon: Logon) -> Logon:
        logon.tls = self._tls.version if self._tls is not None else None
        return logon

    def _token(self, scheme: str, scheme_text: str, credentials: str) -> AuthResult:
        try:
            token = base64.b64decode(credentials, validate=True)
        except binascii.Error:
            return self._deny()
        if not token:
            return self._deny()
        if self._context is None or self._context.complete or self._context_scheme != scheme:
            # A new handshake on this connection replaces whatever context it had.
            self.reset()
            try:
                # Kerberos acquires the acceptor credential (the keytab) here.
                self._context = spnego.server(protocol=TOKEN_SCHEMES[scheme])
            except Exception as exc:  # noqa: BLE001 - e.g. no keytab: the logon cannot succeed
                log.info("auth: %s acceptor unavailable: %s", scheme_text, exc)
                return self._deny()
            self._context_scheme = scheme
        try:
            bindings = self._check_bindings(scheme, token)
        except cbt.BindingError as exc:
            log.info("auth: %s logon refused: %s", scheme_text, exc)
            return self._deny()
        try:
            out_token = self._context.step(token, channel_bindings=bindings)
        except Exception as exc:  # noqa: BLE001 - untrusted token: any parser error is a failed logon
            log.info("auth: %s logon failed: %s", scheme_text, exc)
            return self._deny()
        name = SCHEME_NAMES[scheme]
        if not self._context.complete:
            if not out_token:
                return self._deny()
            challenge = [("WWW-Authenticate", f"{name} {base64.b64encode(out_token).decode()}")]
            if scheme == "credssp" and self._context.get_extra_info("auth_stage") == CREDSSP_FAILURE_STAGE:
                # The inner logon failed: the token is a TSRequest carrying the NTSTATUS (CredSSP 3+).
                log.info("auth: CredSSP logon failed")
                self.reset()
                return AuthResult("denied", challenge)
            return AuthResult("challenge", challenge)
        try:
            self._check_gss_bindings(scheme)
        except cbt.BindingError as exc:
            log.info("auth: %s logon refused: %s", scheme_text, exc)
            return self._deny()
        self.principal = self._context.client_principal
        headers = []
        if out_token:
            # Kerberos: the AP-REP, which a client asking for mutual authentication needs.
            headers.append(("WWW-Authenticate", f"{name} {base64.b64encode(out_token).decode()}"))
        return AuthResult("ok", headers, scheme=scheme, principal=self.principal, logon=self._token_logon(scheme))

    # -- channel binding and the logon record ------------------------------------------------
    def _check_bindings(self, scheme: str, token: bytes) -> Optional[GssChannelBindings]:
        """Checks the token's channel bindings (cbt.py); returns the bindings to hand the acceptor.

        The acceptor gets them too (so pyspnego checks NTLM bindings again, and a GSSAPI
        Kerberos acceptor checks the authenticator's), except for a token that has none,
        which pyspnego would refuse even in relaxed mode. CredSSP binds to its own inner TLS
        channel instead (the public key), so the outer bindings do not apply.
        """
        if self._tls is None or self._cbt_mode == "none" or scheme == "credssp":
            return None
        verdict = cbt.check(token, self._tls.bindings, self._cbt_mode)
        if verdict is not None:
            self._binding = verdict
        return None if verdict == cbt.ABSENT else self._tls.bindings

    def _check_gss_bindings(self, scheme: str) -> None:
        """Kerberos over HTTPS: the verdict on the authenticator's channel bindings.

        MIT's acceptor, given bindings, refuses different ones itself but accepts an
        authenticator without any (as relaxed wants); it reports matching ones with
        GSS_C_CHANNEL_BOUND_FLAG. Strict mode refuses a logon without that flag.
        """
        if self._tls is None or self._cbt_mode == "none" or scheme == "credssp":
            return
        security = gss_security_context(self._context)
        if security is None:
            return  # NTLM: cbt.check decided already
        bound = bool(int(security.actual_flags) & GSS_C_CHANNEL_BOUND_FLAG)
        if not bound and self._cbt_mode == "strict":
            raise cbt.BindingError("channel bindings required but the Kerberos authenticator has none")
        self._binding = cbt.MATCH if bound else cbt.ABSENT

    def _token_logon(self, scheme: str) -> Logon:
        context = self._context
        logon = Logon(
            scheme=scheme,
            mechanism=context.negotiated_protocol or scheme,
            principal=self.principal or "",
            channel_binding=self._binding or cbt.NOT_CHECKED,
        )
        delegated = delegated_principal(context)
        if delegated is not None:
            logon.delegated = True
            logon.delegated_principal = delegated
        if scheme == "credssp":
            credential = context.get_extra_info("client_credential")
            user_name = getattr(credential, "username", None)
            if user_name is not None:
                domain = getattr(credential, "domain_name", "") or ""
                logon.credssp_user = f"{domain}\\{user_name}" if domain else user_name
                password = getattr(credential, "password", "") or ""
                logon.credssp_password_ok = self._users.check_basic(logon.credssp_user, password) is not None
        return self._stamp(logon)


def gss_security_context(context):
    """The python-gssapi SecurityContext of a Kerberos logon, or None (NTLM, CredSSP).

    pyspnego keeps it as ``_context`` of its GSSAPIProxy, which a NegotiateProxy keeps as its
    own ``_context`` (the chosen mechanism's context). pyspnego exposes neither the delegated
    credential nor the raw GSS flags, so the endpoint reaches in.
    """
    try:
        import gssapi
    except ImportError:
        return None
    inner = context
    for _ in range(3):
        if isinstance(inner, gssapi.SecurityContext):
            return inner
        try:
            inner = getattr(inner, "_context")
        except Exception:  # noqa: BLE001 - NegotiateProxy._context raises before a mech is chosen
            return None
    return None


def delegated_principal(context) -> Optional[str]:
    """The principal of the TGT the client forwarded (GSS_C_DELEG_FLAG), or None.

    MIT's acceptor stores the KRB-CRED from the authenticator's checksum in a memory ccache
    and hands it out as the context's delegated credential.
    """
    security = gss_security_context(context)
    if security is None or not int(security.actual_flags) & GSS_C_DELEG_FLAG:
        return None
    creds = security.delegated_creds
    if creds is None:
        return None
    try:
        return str(creds.name)
    except Exception:  # noqa: BLE001 - a credential without a readable name is still a delegation
        return ""
