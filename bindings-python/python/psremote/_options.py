"""Connection options: validated once, when a client is constructed, with messages that say
what to change. The native module validates again; this layer exists so the messages speak
Python (argument names) and so options the core does not support yet fail before any I/O."""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple
from urllib.parse import urlsplit

from psremote import _logging
from psremote.exceptions import ConfigurationError

AUTH_MECHANISMS = ("negotiate", "ntlm", "kerberos", "basic", "credssp", "certificate")
SUPPORTED_AUTH = ("negotiate", "ntlm", "basic")
ENCRYPTION_POLICIES = ("auto", "always", "never")
PASSWORD_ENV = "PSREMOTE_PASSWORD"
POWERSHELL_URI_PREFIX = "http://schemas.microsoft.com/powershell/"
DEFAULT_CONFIGURATION = "Microsoft.PowerShell"

_LOCALE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
_CONFIGURATION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_HOST = re.compile(r"^[A-Za-z0-9_.\-:\[\]%]+$")

_log = logging.getLogger("psremote.client")


@dataclass(frozen=True)
class ClientOptions:
    """Validated options; the password is kept out of ``repr``."""

    host: str
    port: int
    path: str
    https: bool
    auth: str
    username: str
    password: str = field(repr=False)
    encryption: str
    operation_timeout: float
    connect_timeout: float
    max_envelope_size: int
    locale: str
    data_locale: str
    configuration_name: str
    allow_unencrypted: bool

    @property
    def url(self) -> str:
        scheme = "https" if self.https else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{self.path}"

    def native_kwargs(self) -> dict:
        return dict(
            host=self.host,
            port=self.port,
            path=self.path,
            auth=self.auth,
            username=self.username,
            password=self.password,
            operation_timeout=self.operation_timeout,
            connect_timeout=self.connect_timeout,
            max_envelope_size=self.max_envelope_size,
            locale=self.locale,
            data_locale=self.data_locale,
            allow_unencrypted=self.allow_unencrypted,
        )


def _positive_seconds(name: str, value: Any, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value}")
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum:g} seconds, got {value:g}")
    return value


def normalize_configuration_name(name: Any) -> str:
    """Accepts a session configuration name (``Microsoft.PowerShell``, a JEA endpoint's name)
    or its full resource URI; returns the name."""
    if not isinstance(name, str):
        raise ConfigurationError(f"configuration_name must be a str, not {type(name).__name__}")
    if name.lower().startswith(POWERSHELL_URI_PREFIX):
        name = name[len(POWERSHELL_URI_PREFIX) :]
    if not _CONFIGURATION.match(name):
        raise ConfigurationError(
            f"configuration_name {name!r} is not a session configuration name: use letters, digits, '.', '_' "
            f"and '-', such as 'Microsoft.PowerShell' or the name of a JEA endpoint"
        )
    return name


def _split_url(url: str) -> Tuple[str, Optional[int], Optional[str], bool]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ConfigurationError(f"cannot read URL {url!r}: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigurationError(f"URL {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise ConfigurationError(f"URL {url!r} has no host")
    path = parts.path if parts.path not in ("", "/") else None
    return parts.hostname, port, path, parts.scheme == "https"


def build_options(
    host: Optional[str],
    *,
    url: Optional[str],
    username: Optional[str],
    password: Optional[str],
    auth: str,
    port: Optional[int],
    https: bool,
    path: Optional[str],
    encryption: str,
    operation_timeout: float,
    connect_timeout: float,
    max_envelope_size: int,
    locale: str,
    data_locale: Optional[str],
    configuration_name: str,
    allow_unencrypted: bool,
) -> ClientOptions:
    """Validates everything, in the order a user would fix it."""
    url_port: Optional[int] = None
    url_path: Optional[str] = None
    if url is None and isinstance(host, str) and "://" in host:
        url, host = host, None
    if url is not None:
        if host is not None:
            raise ConfigurationError("pass either host or url, not both")
        host, url_port, url_path, url_https = _split_url(url)
        https = https or url_https
    if not isinstance(host, str) or not host.strip():
        raise ConfigurationError("host is required: a host name or IP address, or url='http://host:5985/wsman'")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not _HOST.match(host):
        raise ConfigurationError(f"host {host!r} is not a host name or IP address (to give a URL, use url=...)")

    if not isinstance(https, bool):
        raise ConfigurationError("https must be True or False")
    if https:
        raise ConfigurationError(
            "https is not supported yet; use http (port 5985) with auth='negotiate' or 'ntlm', whose messages are encrypted"
        )

    if port is None:
        port = url_port if url_port is not None else (5986 if https else 5985)
    if isinstance(port, bool) or not isinstance(port, int):
        raise ConfigurationError(f"port must be an int between 1 and 65535, not {type(port).__name__}")
    if not 1 <= port <= 65535:
        raise ConfigurationError(f"port must be between 1 and 65535, got {port} (WinRM listens on 5985 for http)")

    if path is None:
        path = url_path or "/wsman"
    if not isinstance(path, str) or not path.startswith("/") or any(c.isspace() for c in path):
        raise ConfigurationError(f"path must start with '/' and contain no spaces, got {path!r} (the default is '/wsman')")

    if not isinstance(auth, str):
        raise ConfigurationError(f"auth must be a str, one of {', '.join(AUTH_MECHANISMS)}")
    auth = auth.lower()
    if auth not in AUTH_MECHANISMS:
        raise ConfigurationError(f"unknown auth {auth!r}: use one of {', '.join(AUTH_MECHANISMS)}")
    if auth not in SUPPORTED_AUTH:
        raise ConfigurationError(
            f"auth={auth!r} is not supported yet; use 'negotiate' (the default) or 'ntlm', "
            f"or 'basic' with allow_unencrypted=True"
        )

    if not isinstance(allow_unencrypted, bool):
        raise ConfigurationError("allow_unencrypted must be True or False")
    if encryption not in ENCRYPTION_POLICIES:
        raise ConfigurationError(f"unknown encryption policy {encryption!r}: use one of {', '.join(ENCRYPTION_POLICIES)}")
    if auth == "basic" and not https:
        if encryption == "always":
            raise ConfigurationError(
                "encryption='always' cannot be met by basic auth over http, which has no message encryption: "
                "use auth='negotiate' or 'ntlm'"
            )
        if not allow_unencrypted:
            raise ConfigurationError(
                "basic auth over http sends the password and every message in plaintext: use auth='negotiate' or "
                "'ntlm' (encrypted), or opt in with allow_unencrypted=True"
            )
    if encryption == "never":
        if auth != "basic":
            raise ConfigurationError(
                f"encryption='never' is only possible with auth='basic': {auth} always encrypts messages over http"
            )
        if not allow_unencrypted:
            raise ConfigurationError("encryption='never' also needs allow_unencrypted=True")

    if username is None or username == "":
        raise ConfigurationError("username is required, as 'user', 'DOMAIN\\user' or 'user@domain'")
    if not isinstance(username, str):
        raise ConfigurationError(f"username must be a str, not {type(username).__name__}")
    if password is None:
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            raise ConfigurationError(f"no password: pass password=... or set the environment variable {PASSWORD_ENV}")
    if not isinstance(password, str):
        raise ConfigurationError(f"password must be a str, not {type(password).__name__}")

    operation_timeout = _positive_seconds("operation_timeout", operation_timeout, minimum=1.0)
    connect_timeout = _positive_seconds("connect_timeout", connect_timeout)

    if isinstance(max_envelope_size, bool) or not isinstance(max_envelope_size, int):
        raise ConfigurationError("max_envelope_size must be an int number of bytes")
    if max_envelope_size < 8192:
        raise ConfigurationError(
            f"max_envelope_size {max_envelope_size} is below the WS-Man minimum of 8192 bytes (Windows' default is 512000)"
        )
    if max_envelope_size > 0xFFFFFFFF:
        raise ConfigurationError(f"max_envelope_size {max_envelope_size} does not fit in 32 bits")

    if not isinstance(locale, str) or not _LOCALE.match(locale):
        raise ConfigurationError(f"locale {locale!r} is not a language tag like 'en-US'")
    if data_locale is None:
        data_locale = locale
    elif not isinstance(data_locale, str) or not _LOCALE.match(data_locale):
        raise ConfigurationError(f"data_locale {data_locale!r} is not a language tag like 'en-US'")

    configuration_name = normalize_configuration_name(configuration_name)

    if allow_unencrypted and auth == "basic":
        _logging.log(
            logging.WARNING,
            "plaintext messages allowed by allow_unencrypted=True: the password and all data cross the network unprotected",
            _log,
            host=host,
            port=port,
        )
    return ClientOptions(
        host=host,
        port=port,
        path=path,
        https=https,
        auth=auth,
        username=username,
        password=password,
        encryption=encryption,
        operation_timeout=operation_timeout,
        connect_timeout=connect_timeout,
        max_envelope_size=max_envelope_size,
        locale=locale,
        data_locale=data_locale,
        configuration_name=configuration_name,
        allow_unencrypted=allow_unencrypted,
    )
