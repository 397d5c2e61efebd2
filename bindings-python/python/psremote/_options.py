"""Connection options: validated once, when a client is constructed, with messages that say
what to change. The native module validates again and the core enforces the security rules
(NTLM only towards a server that HTTPS or ``trusted_hosts`` vouches for, Basic only over
HTTPS); this layer exists so the messages speak Python (argument names)."""

from __future__ import annotations

import logging
import math
import os
import re
import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from psremote import _logging
from psremote.exceptions import ConfigurationError

AUTH_MECHANISMS = ("negotiate", "ntlm", "kerberos", "basic", "credssp", "certificate")
# Mechanisms that cannot encrypt messages themselves (they rely on TLS, or on nothing).
UNSEALED_AUTH = ("basic", "certificate")
ENCRYPTION_POLICIES = ("auto", "always", "never")
TLS_VERSIONS = {"1.2": "1.2", "tlsv1.2": "1.2", "tls1.2": "1.2", "1.3": "1.3", "tlsv1.3": "1.3", "tls1.3": "1.3"}
# Options that only mean something for an https endpoint.
TLS_OPTIONS = (
    "ca_file",
    "ca_dir",
    "server_name",
    "pinned_public_keys",
    "insecure_skip_verify",
    "min_tls_version",
    "max_tls_version",
    "client_certificate",
)
PASSWORD_ENV = "PSREMOTE_PASSWORD"
#: How a client reaches PowerShell: WS-Man (WinRM), the server's powershell subsystem over SSH,
#: or a local process speaking the out-of-process transport on its stdin/stdout.
TRANSPORTS = ("wsman", "ssh", "process")
#: The options that only mean something for transport='ssh'.
SSH_ONLY = ("key_file", "key_passphrase", "agent", "known_hosts", "accept_unknown_host_key", "subsystem")
POWERSHELL_URI_PREFIX = "http://schemas.microsoft.com/powershell/"
DEFAULT_CONFIGURATION = "Microsoft.PowerShell"

_LOCALE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
_CONFIGURATION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_HOST = re.compile(r"^[A-Za-z0-9_.\-:\[\]%]+$")
_TRUSTED_HOST = re.compile(r"^(<local>|[A-Za-z0-9_.\-:\[\]%*]+)$")
_PIN = re.compile(r"^(sha256[/:])?([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$")

PathArg = Union[str, "os.PathLike[str]"]

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
    max_envelope_size: Optional[int]
    locale: str
    data_locale: str
    configuration_name: str
    allow_unencrypted: bool
    trusted_hosts: Tuple[str, ...] = ()
    ca_file: Optional[str] = None
    ca_dir: Optional[str] = None
    server_name: Optional[str] = None
    pinned_public_keys: Tuple[str, ...] = ()
    insecure_skip_verify: bool = False
    min_tls_version: Optional[str] = None
    max_tls_version: Optional[str] = None
    client_certificate: Optional[str] = None
    client_key: Optional[str] = None
    client_key_password: Optional[str] = field(default=None, repr=False)
    kerberos_kdc: Optional[str] = None
    spn_service: str = "HTTP"
    spn_hostname: Optional[str] = None
    delegate: bool = False
    audit_arguments: bool = False
    max_reply_size: Optional[int] = None
    max_events_ahead: int = 256
    proxy: Optional[str] = field(default=None, repr=False)
    proxy_username: Optional[str] = None
    proxy_password: Optional[str] = field(default=None, repr=False)
    ignore_proxy: bool = False
    #: ``'wsman'``, ``'ssh'`` or ``'process'``. Over ssh, ``host``, ``port`` and ``username`` are
    #: the SSH server's and the SSH account's; over process they are ``''``, 0 and ``''`` (there is
    #: no host). The WS-Man options keep their defaults (others are refused) and play no part.
    transport: str = "wsman"

    @property
    def url(self) -> str:
        if self.transport == "ssh":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"ssh://{self.username}@{host}:{self.port}"
        if self.transport == "process":
            return "process:"
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
            https=self.https,
            encryption=self.encryption,
            trusted_hosts=list(self.trusted_hosts),
            ca_file=self.ca_file,
            ca_dir=self.ca_dir,
            server_name=self.server_name,
            pinned_public_keys=list(self.pinned_public_keys),
            insecure_skip_verify=self.insecure_skip_verify,
            min_tls_version=self.min_tls_version,
            max_tls_version=self.max_tls_version,
            client_certificate=self.client_certificate,
            client_key=self.client_key,
            client_key_password=self.client_key_password,
            kerberos_kdc=self.kerberos_kdc,
            spn_service=self.spn_service,
            spn_hostname=self.spn_hostname,
            delegate=self.delegate,
            audit_arguments=self.audit_arguments,
            max_reply_size=self.max_reply_size,
            max_events_ahead=self.max_events_ahead,
            proxy=self.proxy,
            proxy_username=self.proxy_username,
            proxy_password=self.proxy_password,
            ignore_proxy=self.ignore_proxy,
        )

    def without_secrets(self) -> "ClientOptions":
        """These options as the Python side keeps them: the passwords live in the native client
        only, and the proxy URL keeps no user information."""
        return dataclasses.replace(
            self, password="", client_key_password=None, proxy_password=None, proxy=proxy_without_userinfo(self.proxy)
        )


def proxy_without_userinfo(url: Optional[str]) -> Optional[str]:
    """A proxy URL with any ``user:password@`` taken out."""
    if url is None or "@" not in url:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    host = rest.rpartition("@")[2]
    return f"{scheme}://{host}" if sep else host


def _positive_seconds(name: str, value: Any, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value}")
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum:g} seconds, got {value:g}")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, not {type(value).__name__}")
    return value


def _optional_text(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty str")
    return value.strip()


def _optional_path(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{name} must be a file path (str or os.PathLike)")
    return value


def _list_of_text(name: str, value: Any, example: str) -> Tuple[str, ...]:
    """A list (or tuple) of str, or one str holding a comma-separated list."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: Sequence[Any] = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise ConfigurationError(f"{name} must be a list of str or a comma-separated str, such as {example}")
    out: List[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(f"{name} entries must be str, not {type(item).__name__}")
        out.extend(part.strip() for part in item.split(",") if part.strip())
    return tuple(out)


def normalize_trusted_hosts(value: Any) -> Tuple[str, ...]:
    """``trusted_hosts`` as WinRM's TrustedHosts takes it: names, addresses, ``*`` wildcards and
    ``<local>``, as a list or one comma-separated str."""
    hosts = _list_of_text("trusted_hosts", value, "['server1', '*.corp.example', '10.0.0.*']")
    for host in hosts:
        if not _TRUSTED_HOST.match(host):
            raise ConfigurationError(
                f"trusted_hosts entry {host!r} is not a host name, address, wildcard pattern ('*.corp.example') or '<local>'"
            )
    return hosts


def _tls_version(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    version = TLS_VERSIONS.get(value.strip().lower()) if isinstance(value, str) else None
    if version is None:
        raise ConfigurationError(f"{name} must be '1.2' or '1.3', got {value!r}")
    return version


def _pins(value: Any) -> Tuple[str, ...]:
    pins = _list_of_text("pinned_public_keys", value, "['sha256/<64 hex digits>']")
    for pin in pins:
        if not _PIN.match(pin):
            raise ConfigurationError(
                f"pinned_public_keys entry {pin!r} is not a SHA-256 public-key pin: give the 64 hex digits of the "
                f"SHA-256 of the certificate's SubjectPublicKeyInfo (optionally 'sha256/'-prefixed or colon-separated)"
            )
    return pins


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
    max_envelope_size: Optional[int],
    locale: str,
    data_locale: Optional[str],
    configuration_name: str,
    allow_unencrypted: bool,
    trusted_hosts: Any = None,
    ca_file: Optional[PathArg] = None,
    ca_dir: Optional[PathArg] = None,
    server_name: Optional[str] = None,
    pinned_public_keys: Any = None,
    insecure_skip_verify: bool = False,
    min_tls_version: Optional[str] = None,
    max_tls_version: Optional[str] = None,
    client_certificate: Optional[PathArg] = None,
    client_key: Optional[PathArg] = None,
    client_key_password: Optional[str] = None,
    kerberos_kdc: Optional[str] = None,
    spn_service: str = "HTTP",
    spn_hostname: Optional[str] = None,
    delegate: bool = False,
    audit_arguments: bool = False,
    max_reply_size: Optional[int] = None,
    max_events_ahead: int = 256,
    proxy: Optional[str] = None,
    proxy_username: Optional[str] = None,
    proxy_password: Optional[str] = None,
    ignore_proxy: bool = False,
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

    if port is None:
        port = url_port if url_port is not None else (5986 if https else 5985)
    if isinstance(port, bool) or not isinstance(port, int):
        raise ConfigurationError(f"port must be an int between 1 and 65535, not {type(port).__name__}")
    if not 1 <= port <= 65535:
        raise ConfigurationError(f"port must be between 1 and 65535, got {port} (WinRM listens on 5985 for http, 5986 for https)")

    if path is None:
        path = url_path or "/wsman"
    if not isinstance(path, str) or not path.startswith("/") or any(c.isspace() for c in path):
        raise ConfigurationError(f"path must start with '/' and contain no spaces, got {path!r} (the default is '/wsman')")

    if not isinstance(auth, str):
        raise ConfigurationError(f"auth must be a str, one of {', '.join(AUTH_MECHANISMS)}")
    auth = auth.lower()
    if auth not in AUTH_MECHANISMS:
        raise ConfigurationError(f"unknown auth {auth!r}: use one of {', '.join(AUTH_MECHANISMS)}")
    # kerberos, credssp and certificate go to the core as they are: it says what it supports.

    if not isinstance(allow_unencrypted, bool):
        raise ConfigurationError("allow_unencrypted must be True or False")
    if encryption not in ENCRYPTION_POLICIES:
        raise ConfigurationError(f"unknown encryption policy {encryption!r}: use one of {', '.join(ENCRYPTION_POLICIES)}")
    if encryption == "always" and auth in UNSEALED_AUTH:
        raise ConfigurationError(
            f"encryption='always' cannot be met by auth={auth!r}, which has no message encryption: "
            f"use auth='negotiate', 'ntlm' or 'kerberos' (over https too)"
        )
    if encryption == "never" and not https:
        if auth != "basic":
            raise ConfigurationError(
                f"encryption='never' over http is only possible with auth='basic': {auth} always encrypts messages "
                f"over http (over https, TLS alone protects them)"
            )
        if not allow_unencrypted:
            raise ConfigurationError("encryption='never' also needs allow_unencrypted=True")
    # Basic over http without allow_unencrypted is refused by the core's security policy
    # (SecurityPolicyError), the same in every binding.

    trusted = normalize_trusted_hosts(trusted_hosts)
    given_tls = {
        "ca_file": ca_file,
        "ca_dir": ca_dir,
        "server_name": server_name,
        "pinned_public_keys": pinned_public_keys or None,
        "insecure_skip_verify": insecure_skip_verify or None,
        "min_tls_version": min_tls_version,
        "max_tls_version": max_tls_version,
        "client_certificate": client_certificate,
    }
    if not https:
        named = [name for name in TLS_OPTIONS if given_tls[name] is not None]
        if named:
            raise ConfigurationError(
                f"{', '.join(named)} only apply to https: pass https=True or an https:// URL (port 5986)"
            )
    ca_file = _optional_path("ca_file", ca_file)
    ca_dir = _optional_path("ca_dir", ca_dir)
    server_name = _optional_text("server_name", server_name)
    pins = _pins(pinned_public_keys)
    insecure_skip_verify = _flag("insecure_skip_verify", insecure_skip_verify)
    if insecure_skip_verify and (ca_file or ca_dir):
        raise ConfigurationError("insecure_skip_verify=True ignores ca_file and ca_dir: give one or the other")
    min_version = _tls_version("min_tls_version", min_tls_version)
    max_version = _tls_version("max_tls_version", max_tls_version)
    if min_version and max_version and min_version > max_version:
        raise ConfigurationError(f"min_tls_version {min_version} is above max_tls_version {max_version}")
    client_certificate = _optional_path("client_certificate", client_certificate)
    client_key = _optional_path("client_key", client_key)
    if client_key is not None and client_certificate is None:
        raise ConfigurationError("client_key needs client_certificate (the certificate it belongs to)")
    if client_key_password is not None:
        if not isinstance(client_key_password, str):
            raise ConfigurationError(f"client_key_password must be a str, not {type(client_key_password).__name__}")
        if client_certificate is None:
            raise ConfigurationError("client_key_password needs client_certificate and client_key")
    if auth == "certificate" and client_certificate is None:
        raise ConfigurationError("auth='certificate' needs client_certificate (and client_key, unless the certificate file holds the key)")
    kerberos_kdc = _optional_text("kerberos_kdc", kerberos_kdc)
    if not isinstance(spn_service, str) or not spn_service.strip():
        raise ConfigurationError("spn_service must be a non-empty str such as 'HTTP' (the default), 'host' or 'WSMAN'")
    spn_service = spn_service.strip()
    spn_hostname = _optional_text("spn_hostname", spn_hostname)
    delegate = _flag("delegate", delegate)
    audit_arguments = _flag("audit_arguments", audit_arguments)
    if max_reply_size is not None and (
        isinstance(max_reply_size, bool) or not isinstance(max_reply_size, int) or not 0 < max_reply_size < 1 << 63
    ):
        raise ConfigurationError("max_reply_size must be a positive int number of bytes, or None (derived from max_envelope_size)")
    if isinstance(max_events_ahead, bool) or not isinstance(max_events_ahead, int) or not 0 < max_events_ahead <= 1 << 20:
        raise ConfigurationError("max_events_ahead must be an int from 1 to 1048576 (events buffered per pipeline)")

    if proxy is not None and (not isinstance(proxy, str) or not proxy.strip()):
        raise ConfigurationError(
            "proxy must be a URL such as 'http://proxy:3128', 'socks5://proxy:1080' or 'socks5h://user:pass@proxy:1080', "
            "or None (the environment's https_proxy/http_proxy/all_proxy)"
        )
    for name, value in (("proxy_username", proxy_username), ("proxy_password", proxy_password)):
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"{name} must be a str, not {type(value).__name__}")
    if proxy_password is not None and not proxy_username:
        raise ConfigurationError("proxy_password needs proxy_username")
    ignore_proxy = _flag("ignore_proxy", ignore_proxy)

    if auth == "certificate":
        # The client certificate names the account; a user name and password are not used.
        username = username or ""
        password = password or ""
    if username is None or (username == "" and auth != "certificate"):
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

    if max_envelope_size is None:
        pass
    elif isinstance(max_envelope_size, bool) or not isinstance(max_envelope_size, int):
        raise ConfigurationError("max_envelope_size must be an int number of bytes, or None")
    elif max_envelope_size < 8192:
        raise ConfigurationError(
            f"max_envelope_size {max_envelope_size} is below the WS-Man minimum of 8192 bytes (Windows' default is 512000)"
        )
    elif max_envelope_size > 0xFFFFFFFF:
        raise ConfigurationError(f"max_envelope_size {max_envelope_size} does not fit in 32 bits")

    if not isinstance(locale, str) or not _LOCALE.match(locale):
        raise ConfigurationError(f"locale {locale!r} is not a language tag like 'en-US'")
    if data_locale is None:
        data_locale = locale
    elif not isinstance(data_locale, str) or not _LOCALE.match(data_locale):
        raise ConfigurationError(f"data_locale {data_locale!r} is not a language tag like 'en-US'")

    configuration_name = normalize_configuration_name(configuration_name)

    if allow_unencrypted and auth == "basic" and not https:
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
        trusted_hosts=trusted,
        ca_file=ca_file,
        ca_dir=ca_dir,
        server_name=server_name,
        pinned_public_keys=pins,
        insecure_skip_verify=insecure_skip_verify,
        min_tls_version=min_version,
        max_tls_version=max_version,
        client_certificate=client_certificate,
        client_key=client_key,
        client_key_password=client_key_password,
        kerberos_kdc=kerberos_kdc,
        spn_service=spn_service,
        spn_hostname=spn_hostname,
        delegate=delegate,
        audit_arguments=audit_arguments,
        max_reply_size=max_reply_size,
        max_events_ahead=max_events_ahead,
        proxy=proxy.strip() if proxy is not None else None,
        proxy_username=proxy_username,
        proxy_password=proxy_password,
        ignore_proxy=ignore_proxy,
    )


@dataclass(frozen=True)
class SshTransport:
    """The checked options of a ``transport='ssh'`` client (PowerShell over SSH: the server's
    ``powershell`` subsystem, each runspace pool on its own SSH connection). The password and the
    key's passphrase are kept out of ``repr``."""

    host: str
    port: int
    username: str
    key_file: Optional[str] = None
    key_passphrase: Optional[str] = field(default=None, repr=False)
    password: Optional[str] = field(default=None, repr=False)
    agent: bool = False
    agent_socket: Optional[str] = None
    known_hosts: Optional[str] = None
    accept_unknown_host_key: bool = False
    subsystem: str = "powershell"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.username}@{host}:{self.port}/{self.subsystem}"

    def native_kwargs(self) -> dict:
        return dict(
            host=self.host,
            port=self.port,
            username=self.username,
            key_file=self.key_file,
            key_passphrase=self.key_passphrase,
            password=self.password,
            agent=self.agent,
            agent_socket=self.agent_socket,
            known_hosts=self.known_hosts,
            accept_unknown_host_key=self.accept_unknown_host_key,
            subsystem=self.subsystem,
        )


def ssh_transport(
    host: Optional[str],
    *,
    url: Optional[str],
    username: Optional[str],
    password: Optional[str],
    port: Optional[int],
    key_file: Any,
    key_passphrase: Any,
    agent: Any,
    known_hosts: Any,
    accept_unknown_host_key: Any,
    subsystem: Any,
) -> SshTransport:
    """Checks the options of ``transport='ssh'``: a host, a user, one way to log on (a key file,
    a password, or the SSH agent), the known_hosts file and the host key policy."""
    if url is not None:
        raise ConfigurationError("transport='ssh' takes a host name or address, not url=")
    if not isinstance(host, str) or not host.strip():
        raise ConfigurationError("host is required: the SSH server's name or IP address")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not _HOST.match(host):
        raise ConfigurationError(f"host {host!r} is not a host name or IP address")
    if port is None:
        port = 22
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigurationError(f"port must be an int between 1 and 65535 (SSH listens on 22), got {port!r}")
    if not isinstance(username, str) or not username:
        raise ConfigurationError("username is required: the account to log on as over SSH")
    key_file = _optional_path("key_file", key_file)
    if key_file is not None:
        key_file = os.path.expanduser(key_file)
    if key_passphrase is not None:
        if not isinstance(key_passphrase, str):
            raise ConfigurationError(f"key_passphrase must be a str, not {type(key_passphrase).__name__}")
        if key_file is None:
            raise ConfigurationError("key_passphrase needs key_file (the encrypted key it opens)")
    agent_socket: Optional[str] = None
    if isinstance(agent, bool):
        use_agent = agent
    else:
        agent_socket = _optional_path("agent", agent)
        if agent_socket is not None:
            agent_socket = os.path.expanduser(agent_socket)
        use_agent = agent_socket is not None
    if password is not None and not isinstance(password, str):
        raise ConfigurationError(f"password must be a str, not {type(password).__name__}")
    # A password is given when it is not None: '' is an (empty) password, as over WS-Man, and
    # only None falls back to PSREMOTE_PASSWORD.
    ways = [
        name
        for name, given in (("key_file", key_file is not None), ("password", password is not None), ("agent", use_agent))
        if given
    ]
    if len(ways) > 1:
        raise ConfigurationError(f"give one way to log on over SSH, not {' and '.join(ways)}")
    if not ways:
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            raise ConfigurationError(
                f"transport='ssh' needs key_file=..., password=... (or {PASSWORD_ENV}) or agent=True (the SSH agent)"
            )
    known_hosts = _optional_path("known_hosts", known_hosts)
    if known_hosts is not None:
        known_hosts = os.path.expanduser(known_hosts)
    accept_unknown_host_key = _flag("accept_unknown_host_key", accept_unknown_host_key)
    if not isinstance(subsystem, str) or not subsystem.strip() or any(c.isspace() for c in subsystem):
        raise ConfigurationError(f"subsystem must be a subsystem name such as 'powershell', got {subsystem!r}")
    # An unknown host key accepted by accept_unknown_host_key is warned about by the core, on
    # the audit logger, when it happens.
    return SshTransport(
        host=host,
        port=port,
        username=username,
        key_file=key_file,
        key_passphrase=key_passphrase,
        password=password,
        agent=use_agent,
        agent_socket=agent_socket,
        known_hosts=known_hosts,
        accept_unknown_host_key=accept_unknown_host_key,
        subsystem=subsystem.strip(),
    )


@dataclass(frozen=True)
class ProcessTransport:
    """The program a ``transport='process'`` client starts for each runspace pool (None: the
    core's defaults, ``pwsh`` with ``-NoLogo -s``)."""

    executable: Optional[str] = None
    arguments: Optional[Tuple[str, ...]] = None


def process_transport(
    host: Optional[str],
    *,
    url: Optional[str],
    username: Optional[str],
    password: Optional[str],
    executable: Any,
    arguments: Any,
) -> ProcessTransport:
    """Checks the options of ``transport='process'``: a local program, no host or credentials."""
    given = [name for name, value in (("host", host), ("url", url), ("username", username), ("password", password)) if value is not None]
    if given:
        raise ConfigurationError(
            f"transport='process' starts a local program (executable=..., arguments=[...]): {', '.join(given)} do not apply"
        )
    if executable is not None:
        if isinstance(executable, os.PathLike):
            executable = os.fspath(executable)
        if not isinstance(executable, str) or not executable.strip() or "\0" in executable:
            raise ConfigurationError("executable must be a non-empty str: the program to start, such as 'pwsh'")
    if arguments is not None:
        if isinstance(arguments, (str, bytes)) or not isinstance(arguments, Sequence):
            raise ConfigurationError("arguments must be a list of str, such as ['-NoLogo', '-s']")
        for item in arguments:
            if not isinstance(item, str) or "\0" in item:
                raise ConfigurationError("arguments must be a list of str, such as ['-NoLogo', '-s']")
        arguments = tuple(arguments)
    return ProcessTransport(executable, arguments)


def check_transport(transport: Any) -> str:
    if not isinstance(transport, str) or transport.lower() not in TRANSPORTS:
        raise ConfigurationError(f"unknown transport {transport!r}: use one of {', '.join(TRANSPORTS)}")
    return transport.lower()
