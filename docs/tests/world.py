"""The world the samples run in: ``example.com`` played on 127.0.0.1.

* A throwaway MIT realm ``EXAMPLE.COM`` (psremote_testserver.kdc) with the user ``alice`` and
  the services ``HTTP/<host>.example.com`` of the hosts the pages name, in the endpoints' keytab.
* A private CA ("Example Corp Root CA", written as ``corp-ca.pem`` into each sample's working
  directory), a server certificate for ``*.example.com`` and a client certificate for
  ``alice@EXAMPLE.COM`` (``alice.pem``, ``alice-key.pem``).
* Two loopback endpoints (psremote_testserver) for the accounts ``EXAMPLE\\alice`` and
  ``alice@EXAMPLE.COM``: http with Negotiate, Kerberos, NTLM and CredSSP (the WinRM port 5985)
  and https with those, Basic and client certificates (5986). Cmd commands find Windows-like
  ``ipconfig``, ``whoami``, ``hostname``, ``ver`` and ``cmd /c`` first on their PATH.
* The proxy (proxy.py) that sends every ``*.example.com:5985/5986`` connection to them.

Nothing listens anywhere but 127.0.0.1, and no sample learns an endpoint's real address.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any, Dict, List

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from psremote_testserver import certs
from psremote_testserver.kdc import Realm
from psremote_testserver.testing import Endpoint, launch

from proxy import SampleProxy

USER = "alice"
DOMAIN = "EXAMPLE"
REALM = "EXAMPLE.COM"
PASSWORD = "Corp-Passw0rd!"
HOSTS = ("win01", "win02", "dc01", "web01", "web02", "web03", "web04", "web05", "sql01", "app01", "jump01")

#: Windows-looking programs for cmd samples (the endpoint runs commands with /bin/sh).
SHIMS = {
    "ipconfig": """#!/bin/sh
printf '\\r\\nWindows IP Configuration\\r\\n\\r\\n'
printf 'Ethernet adapter Ethernet:\\r\\n\\r\\n'
printf '   Connection-specific DNS Suffix  . : example.com\\r\\n'
printf '   IPv4 Address. . . . . . . . . . . : 10.0.0.21\\r\\n'
printf '   Subnet Mask . . . . . . . . . . . : 255.255.255.0\\r\\n'
printf '   Default Gateway . . . . . . . . . : 10.0.0.1\\r\\n'
""",
    "whoami": "#!/bin/sh\nprintf 'example\\\\alice\\r\\n'\n",
    "hostname": "#!/bin/sh\nprintf 'WIN01\\r\\n'\n",
    "ver": "#!/bin/sh\nprintf '\\r\\nMicrosoft Windows [Version 10.0.20348.2340]\\r\\n'\n",
    # cmd /c COMMAND...: expands %NAME% from the environment as cmd.exe does (an unknown name
    # stays as written), then runs the rest.
    "cmd": """#!/bin/sh
case "$1" in /c|/C) shift ;; esac
line=$(printf '%s' "$*" | awk '{ out = ""; s = $0
  while (match(s, /%[A-Za-z_][A-Za-z0-9_]*%/)) {
    name = substr(s, RSTART + 1, RLENGTH - 2)
    value = (name in ENVIRON) ? ENVIRON[name] : substr(s, RSTART, RLENGTH)
    out = out substr(s, 1, RSTART - 1) value; s = substr(s, RSTART + RLENGTH)
  }
  print out s }')
exec /bin/sh -c "$line"
""",
}


class World:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: Dict[str, Path] = {}
        self.realm = Realm(directory / "realm", realm=REALM)
        self.realm.users = {USER: PASSWORD}
        self.realm.services = tuple(f"HTTP/{host}.example.com" for host in HOSTS)
        self.endpoints: Dict[str, Endpoint] = {}
        self.proxy: SampleProxy
        self.state_calls: Dict[str, int] = {"http": 0, "https": 0}

    # -- set-up ------------------------------------------------------------------------------
    def start(self) -> "World":
        self.realm.start()
        self._certificates()
        self._shims()
        users = self.directory / "users"
        users.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n{REALM}:{USER}:{PASSWORD}\n")
        env = self.realm.env()
        env["PATH"] = f"{self.directory / 'shims'}{os.pathsep}{os.environ.get('PATH', '')}"
        # The server's temp folder: samples write remote files as a Windows user would, to
        # $env:TEMP\name or %TEMP%\name, which the endpoint expands from its environment. Here
        # that lands inside the world's directory (the backslash is part of a Unix file name),
        # never in the directory make runs in.
        server_temp = self.directory / "server-temp"
        server_temp.mkdir()
        env["TEMP"] = env["TMP"] = str(server_temp)
        common = ["--keytab", str(self.realm.keytab)]
        (self.directory / "http").mkdir()
        (self.directory / "https").mkdir()
        # The endpoints' working directory is where relative remote paths land (a copy to
        # "report.csv"); a scratch directory, never the checkout the tests run from.
        server_root = self.directory / "server-root"
        server_root.mkdir()
        here = os.getcwd()
        os.chdir(server_root)
        try:
            self._launch(users, env, common)
        finally:
            os.chdir(here)
        upstreams = {5985: ("127.0.0.1", self.endpoints["http"].port), 5986: ("127.0.0.1", self.endpoints["https"].port)}
        self.proxy = SampleProxy(upstreams).start()
        return self

    def _launch(self, users: Path, env: Dict[str, str], common: List[str]) -> None:
        self.endpoints["http"] = launch(users, self.directory / "http", *common, "--auth", "negotiate,kerberos,ntlm,credssp", env=env)
        self.endpoints["https"] = launch(
            users,
            self.directory / "https",
            *common,
            "--auth",
            "negotiate,kerberos,ntlm,credssp,basic,certificate",
            "--tls-cert",
            str(self.files["server"]),
            "--tls-key",
            str(self.files["server_key"]),
            "--client-ca",
            str(self.files["corp-ca.pem"]),
            env=env,
            cafile=str(self.files["corp-ca.pem"]),
        )

    def stop(self) -> None:
        proxy = getattr(self, "proxy", None)
        if proxy is not None:
            proxy.stop()
        for endpoint in self.endpoints.values():
            endpoint.stop()
        self.realm.stop()

    def _certificates(self) -> None:
        directory = self.directory / "pki"
        directory.mkdir()
        ca = certs.make_ca("Example Corp Root CA")
        # 127.0.0.1 too, for the runner's own requests to the control URL.
        names = [x509.DNSName("*.example.com"), x509.DNSName("example.com"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        server = certs.make_leaf(ca, "*.example.com", names, ExtendedKeyUsageOID.SERVER_AUTH)
        client = certs.make_leaf(ca, USER, [certs.upn_name(f"{USER}@{REALM}")], ExtendedKeyUsageOID.CLIENT_AUTH)
        written = {
            "corp-ca.pem": certs.cert_pem(ca.cert),
            "server": certs.cert_pem(server.cert),
            "server_key": certs.key_pem(server.key),
            "alice.pem": certs.cert_pem(client.cert),
            "alice-key.pem": certs.key_pem(client.key),
        }
        for name, data in written.items():
            path = directory / name
            path.write_bytes(data)
            path.chmod(0o600)
            self.files[name] = path

    def _shims(self) -> None:
        directory = self.directory / "shims"
        directory.mkdir()
        for name, text in SHIMS.items():
            path = directory / name
            path.write_text(text)
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    # -- a page's process --------------------------------------------------------------------
    def workdir(self, directory: Path) -> Path:
        """A fresh working directory with the files samples may name."""
        directory.mkdir(parents=True)
        for name in ("corp-ca.pem", "alice.pem", "alice-key.pem"):
            shutil.copy(self.files[name], directory / name)
            (directory / name).chmod(0o600)
        (directory / "hosts.txt").write_text("# the web farm\nweb01.example.com\nweb02.example.com\nweb03.example.com\n")
        (directory / "home").mkdir()
        return directory

    def base_env(self, workdir: Path) -> Dict[str, str]:
        """The environment of every sample: the proxy, the password, a krb5.conf without a realm
        (so no sample finds a KDC unless it asks for Kerberos) and a home of its own."""
        empty_krb5 = workdir / "home" / "krb5.conf"
        # No realm, and nothing that would make MIT's library ask DNS about a sample's host
        # names (a Negotiate that tries Kerberos first would canonicalize the name).
        empty_krb5.write_text(
            "[libdefaults]\n    dns_lookup_kdc = false\n    dns_lookup_realm = false\n"
            "    rdns = false\n    dns_canonicalize_hostname = false\n"
        )
        keep = ("LANG", "LC_ALL", "TERM", "SYSTEMROOT", "TMPDIR")
        env = {name: os.environ[name] for name in keep if name in os.environ}
        venv_bin = str(Path(sys.executable).parent)
        env.update(
            PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            HOME=str(workdir / "home"),
            HTTP_PROXY=self.proxy.url,
            HTTPS_PROXY=self.proxy.url,
            http_proxy=self.proxy.url,
            https_proxy=self.proxy.url,
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            PSREMOTE_PASSWORD=PASSWORD,
            KRB5_CONFIG=str(empty_krb5),
            KRB5CCNAME=f"FILE:{workdir / 'home' / 'no-ccache'}",
            PYTHONUNBUFFERED="1",
            NO_COLOR="1",
            COLUMNS="100",
        )
        return env

    def environment(self, name: str, workdir: Path) -> Dict[str, str]:
        """What a ``% sample: NAME`` block gets on top of the base environment."""
        if name == "kerberos":
            return {"KRB5_CONFIG": str(self.realm.krb5_conf), "KRB5CCNAME": f"FILE:{workdir / 'home' / 'krb5cc_alice'}"}
        return {}

    def kinit(self, workdir: Path) -> None:
        """alice's ticket in the page's credential cache, as `kinit alice@EXAMPLE.COM` would get."""
        self.realm.kinit(USER, PASSWORD, workdir / "home" / "krb5cc_alice", forwardable=True)

    def state(self, which: str) -> Dict[str, Any]:
        self.state_calls[which] += 1
        return self.endpoints[which].state()

    def logons_since(self, before: Dict[str, int]) -> List[Dict[str, Any]]:
        """The logons both endpoints recorded after the counts in ``before``."""
        found: List[Dict[str, Any]] = []
        for which in ("http", "https"):
            found.extend(self.state(which)["logons"][before[which] :])
        return found

    def logon_counts(self) -> Dict[str, int]:
        return {which: len(self.state(which)["logons"]) for which in ("http", "https")}
