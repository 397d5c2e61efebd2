"""Counters and the logon log reported by ``GET /_control/state``."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

COUNTERS = (
    "connections_opened",
    "requests",
    "auth_failures",
    "plaintext_after_auth_refused",
    "bad_seal",
    "sealed_requests",
    "plain_requests",
    "tls_handshake_failures",
    "connections_dropped",
    "timeouts_injected",
)


@dataclass
class Logon:
    """One completed logon, as ``/_control/state`` lists it (never a secret)."""

    scheme: str
    """``negotiate``, ``ntlm``, ``kerberos``, ``basic``, ``credssp`` or ``certificate``."""
    mechanism: str
    """What actually authenticated: the context's negotiated protocol (``ntlm``, ``kerberos``),
    or the scheme itself for ``basic`` and ``certificate``."""
    principal: str
    tls: Optional[str] = None
    """``TLSv1.2``/``TLSv1.3`` over HTTPS, None over HTTP."""
    channel_binding: str = "not-checked"
    """``match``, ``absent`` or ``not-checked`` (see cbt.py)."""
    delegated: bool = False
    """Kerberos: the client delegated a forwardable TGT."""
    delegated_principal: Optional[str] = None
    """Kerberos: the client principal of the delegated TGT (``user@PSREMOTE.TEST``)."""
    credssp_user: Optional[str] = None
    """CredSSP: ``DOMAIN\\user`` of the delegated password credential."""
    credssp_password_ok: Optional[bool] = None
    """CredSSP: whether the delegated password is the users file's one."""
    client_cert_subject: Optional[str] = None
    """certificate: the client certificate's subject (RFC 4514)."""


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Dict[str, int] = {name: 0 for name in COUNTERS}
        self._logons: List[Logon] = []
        self._actions: Dict[str, int] = {}

    def bump(self, name: str) -> None:
        with self._lock:
            self._values[name] += 1

    def bump_action(self, action: str) -> None:
        """Counts a WS-Man request by its action's last segment (``Receive``, ``Signal``,
        ``Delete``, ...), once it was parsed and answered."""
        with self._lock:
            self._actions[action] = self._actions.get(action, 0) + 1

    def add_logon(self, logon: Logon) -> None:
        with self._lock:
            self._logons.append(logon)

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {**self._values, "actions": dict(self._actions), "logons": [asdict(logon) for logon in self._logons]}
