"""The users file (pyspnego's NTLM_USER_FILE format, ``DOMAIN:USER:PASSWORD``).

Basic credentials are checked here. For NTLM and Negotiate the acceptor reads
its own copy: pyspnego only matches a line when the client's domain equals the
line's domain, while Windows also accepts ``user`` (no domain) and
``user@DOMAIN`` for the same account. So the copy handed to pyspnego lists
every spelling of each account. The copy holds the LM and NT hashes (pyspnego's
smbpasswd-style lines) rather than the password: pyspnego reads the file on
every logon and would otherwise recompute the LM hash with its pure-Python DES
each time, which made the logon the endpoint's most expensive step.
"""

from __future__ import annotations

import hmac
import os
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Tuple


class UsersFileError(ValueError):
    pass


@dataclass(frozen=True)
class User:
    domain: str
    name: str
    password: str = ""

    def __repr__(self) -> str:  # never show the password
        return f"User({self.principal!r})"

    @property
    def principal(self) -> str:
        return f"{self.domain}\\{self.name}" if self.domain else self.name


def split_user(text: str) -> Tuple[Optional[str], str]:
    """``DOMAIN\\user`` and ``user@DOMAIN`` -> (domain, user); plain ``user`` -> (None, user)."""
    if "\\" in text:
        domain, name = text.split("\\", 1)
        return domain, name
    if "@" in text:
        name, domain = text.rsplit("@", 1)
        return domain, name
    return None, text


class UserStore:
    def __init__(self, users: List[User]) -> None:
        self.users = users
        self._ntlm_dir: Optional[str] = None

    @classmethod
    def load(cls, path: str) -> "UserStore":
        users = []
        with open(path, encoding="utf-8") as handle:
            for number, raw in enumerate(handle, 1):
                line = raw.rstrip("\r\n")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                fields = line.split(":")
                if len(fields) != 3 or not fields[1]:
                    # pyspnego reads exactly three fields, so a password with ':' cannot work there either.
                    raise UsersFileError(f"{path}:{number}: expected DOMAIN:USER:PASSWORD")
                users.append(User(fields[0], fields[1], fields[2]))
        if not users:
            raise UsersFileError(f"{path}: no users")
        return cls(users)

    def check_basic(self, username: str, password: str) -> Optional[User]:
        domain, name = split_user(username)
        for user in self.users:
            if user.name.lower() != name.lower():
                continue
            if domain is not None and domain.lower() != user.domain.lower():
                continue
            if hmac.compare_digest(user.password.encode("utf-8"), password.encode("utf-8")):
                return user
        return None

    def lookup(self, account: str) -> Optional[User]:
        """The account named ``user``, ``DOMAIN\\user`` or ``user@DOMAIN`` (case-insensitive), if any."""
        domain, name = split_user(account)
        for user in self.users:
            if user.name.lower() == name.lower() and (domain is None or domain.lower() == user.domain.lower()):
                return user
        return None

    def write_ntlm_file(self) -> str:
        """Write the acceptor's copy (mode 0600 in a private directory); returns its path.

        Each spelling is one smbpasswd-style line, ``NAME:0:LM_HASH:NT_HASH:[U]:LCT-00000000``
        (pyspnego reads only the name and the two hashes), with NAME ``DOMAIN\\user``, ``user`` or
        ``user@DOMAIN``: the same entries as ``DOMAIN:user:PASSWORD``, ``:user:PASSWORD`` and
        ``:user@DOMAIN:PASSWORD`` would be.
        """
        from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1

        self._ntlm_dir = tempfile.mkdtemp(prefix="psremote-testserver-")
        path = os.path.join(self._ntlm_dir, "ntlm_users")
        lines = []
        for user in self.users:
            hashes = f"{lmowfv1(user.password).hex().upper()}:{ntowfv1(user.password).hex().upper()}"
            names = [f"{user.domain}\\{user.name}", user.name, f"{user.name}@{user.domain}"] if user.domain else [user.name]
            lines.extend(f"{name}:0:{hashes}:[U]:LCT-00000000" for name in names)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        return path

    def remove_ntlm_file(self) -> None:
        if self._ntlm_dir is None:
            return
        path = os.path.join(self._ntlm_dir, "ntlm_users")
        for action in (lambda: os.unlink(path), lambda: os.rmdir(self._ntlm_dir)):
            try:
                action()
            except OSError:
                pass
        self._ntlm_dir = None
