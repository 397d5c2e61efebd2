"""A throwaway MIT Kerberos realm for tests: ``PSREMOTE.TEST`` with a KDC on 127.0.0.1.

``Realm`` writes ``kdc.conf`` and ``krb5.conf`` into a directory, creates the database with
``kdb5_util``, adds the principals with ``kadmin.local``, exports the service keys to a keytab
and runs ``krb5kdc -n`` (in the foreground, so it stops with the object). Nothing outside the
directory is read or written: every tool gets ``KRB5_CONFIG``/``KRB5_KDC_PROFILE`` naming the
directory's files, so the system's ``/etc/krb5.conf`` and ``/etc/krb5kdc`` play no part.

The KDC listens on one free port for UDP and TCP alike. Principals:

* users ``user`` (``Passw0rd!``) and ``other`` (``Other-Passw0rd!``), both ``+requires_preauth``;
* services ``HTTP/localhost``, ``host/localhost``, ``WSMAN/localhost`` with random keys, all
  in ``keytab``;
* ``HTTP/elsewhere``, known to the KDC but not in the keytab (a ticket the endpoint cannot
  decrypt).

Command line: ``python -m psremote_testserver.kdc DIR`` creates the realm in DIR, prints one
JSON line (``Realm.describe()``) and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

REALM = "PSREMOTE.TEST"
USERS: Dict[str, str] = {"user": "Passw0rd!", "other": "Other-Passw0rd!"}
SERVICES = ("HTTP/localhost", "host/localhost", "WSMAN/localhost")
STRAY_SERVICE = "HTTP/elsewhere"
"""A service the KDC issues tickets for but whose key is not in the keytab."""

START_TIMEOUT = 10.0
_TOOL_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin", "/bin")


class RealmError(RuntimeError):
    """A Kerberos tool failed or the KDC did not come up."""


def find_tool(name: str) -> str:
    """The path of an MIT Kerberos program (``krb5kdc`` lives in /usr/sbin, often not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _TOOL_DIRS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise RealmError(f"{name} not found: install krb5-kdc, krb5-admin-server and krb5-user (make krb-deps)")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies, so a test run
    killed outright leaves no KDC behind (Linux; elsewhere the KDC outlives a killed parent)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP (the KDC serves both on it)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RealmError("no port free for both TCP and UDP")


def krb5_conf_text(realm: str, port: int, udp_preference_limit: Optional[int] = None) -> str:
    """The client configuration: no DNS, no reverse lookups, this realm's KDC on 127.0.0.1."""
    udp = f"    udp_preference_limit = {udp_preference_limit}\n" if udp_preference_limit is not None else ""
    return (
        "[libdefaults]\n"
        f"    default_realm = {realm}\n"
        "    dns_lookup_kdc = false\n"
        "    dns_lookup_realm = false\n"
        "    rdns = false\n"
        "    dns_canonicalize_hostname = false\n"
        "    ignore_acceptor_hostname = false\n"
        f"{udp}"
        "\n"
        "[realms]\n"
        f"    {realm} = {{\n"
        f"        kdc = 127.0.0.1:{port}\n"
        "    }\n"
        "\n"
        "[domain_realm]\n"
        f"    localhost = {realm}\n"
        f"    .localhost = {realm}\n"
        f"    elsewhere = {realm}\n"
    )


def _kdc_conf_text(realm: str, port: int, directory: Path) -> str:
    return (
        "[kdcdefaults]\n"
        f"    kdc_listen = 127.0.0.1:{port}\n"
        f"    kdc_tcp_listen = 127.0.0.1:{port}\n"
        "\n"
        "[realms]\n"
        f"    {realm} = {{\n"
        f"        database_name = {directory / 'principal'}\n"
        f"        key_stash_file = {directory / 'stash'}\n"
        f"        acl_file = {directory / 'kadm5.acl'}\n"
        f"        kdc_listen = 127.0.0.1:{port}\n"
        f"        kdc_tcp_listen = 127.0.0.1:{port}\n"
        "        max_life = 10h 0m 0s\n"
        "        max_renewable_life = 7d 0h 0m 0s\n"
        "        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n"
        "    }\n"
        "\n"
        "[logging]\n"
        f"    kdc = FILE:{directory / 'kdc.log'}\n"
        f"    admin_server = FILE:{directory / 'kadmin.log'}\n"
        f"    default = FILE:{directory / 'krb5.log'}\n"
    )


class Realm:
    """A running throwaway realm; use as a context manager or call ``start()``/``stop()``."""

    def __init__(self, directory: Optional[os.PathLike] = None, realm: str = REALM) -> None:
        self.realm = realm
        self.users: Dict[str, str] = dict(USERS)
        self.services = SERVICES
        self.stray_service = STRAY_SERVICE
        self._given_dir = directory is not None
        self.directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="psremote-realm-"))
        self.port = 0
        self._process: Optional[subprocess.Popen] = None

    # -- paths and environment -------------------------------------------------------------
    @property
    def kdc(self) -> str:
        """``127.0.0.1:PORT``, for UDP and TCP."""
        return f"127.0.0.1:{self.port}"

    @property
    def krb5_conf(self) -> Path:
        return self.directory / "krb5.conf"

    @property
    def kdc_conf(self) -> Path:
        return self.directory / "kdc.conf"

    @property
    def keytab(self) -> Path:
        return self.directory / "service.keytab"

    def principal(self, name: str) -> str:
        """``user`` -> ``user@PSREMOTE.TEST``."""
        return name if "@" in name else f"{name}@{self.realm}"

    def enterprise_principals(self, name: str) -> List[str]:
        """The principals standing for ``name`` sent as an enterprise name (``user@REALM``, also
        with the realm in lower case), escaped as kadmin writes them."""
        return [f"{name}\\@{realm}@{self.realm}" for realm in (self.realm, self.realm.lower())]

    def env(self, **extra: str) -> Dict[str, str]:
        """Environment variables pointing a process at this realm (add KRB5CCNAME/KRB5_KTNAME)."""
        values = {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            "KRB5RCACHEDIR": str(self.directory),
        }
        values.update(extra)
        return values

    def _tool_env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.pop("KRB5CCNAME", None)
        env.pop("KRB5_KTNAME", None)
        env.update(self.env())
        return env

    def describe(self) -> Dict[str, object]:
        return {
            "realm": self.realm,
            "kdc": self.kdc,
            "krb5_conf": str(self.krb5_conf),
            "kdc_conf": str(self.kdc_conf),
            "keytab": str(self.keytab),
            "users": dict(self.users),
            "services": [self.principal(s) for s in self.services],
            "stray_service": self.principal(self.stray_service),
            "enterprise_names": [f"{name}@{realm}" for name in self.users for realm in (self.realm, self.realm.lower())],
            "pid": self._process.pid if self._process else None,
        }

    # -- life cycle ------------------------------------------------------------------------
    def __enter__(self) -> "Realm":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "Realm":
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._create_database()
            for _ in range(3):
                if self._start_kdc():
                    return self
                # Another process took the port between the probe and the KDC's bind: pick anew.
                self.port = _free_port()
                self._write_configs()
            raise RealmError(f"krb5kdc did not start: {self._log_tail()}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops the KDC; removes the directory unless the caller named it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if not self._given_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_configs(self) -> None:
        self.krb5_conf.write_text(krb5_conf_text(self.realm, self.port))
        self.kdc_conf.write_text(_kdc_conf_text(self.realm, self.port, self.directory))

    def _run(self, *args: str, stdin: Optional[str] = None) -> str:
        result = subprocess.run(
            list(args),
            input=stdin if stdin is not None else "",
            env=self._tool_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise RealmError(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def _create_database(self) -> None:
        # A directory that held an earlier realm (the CLI's DIR) is reused: kdb5_util refuses
        # to overwrite a database and kadmin appends to a keytab.
        for old in self.directory.glob("principal*"):
            old.unlink()
        for name in ("stash", self.keytab.name):
            (self.directory / name).unlink(missing_ok=True)
        self.port = _free_port()
        self._write_configs()
        (self.directory / "kadm5.acl").write_text("")
        master = secrets.token_urlsafe(24)
        self._run(find_tool("kdb5_util"), "create", "-s", "-r", self.realm, "-P", master)
        queries: List[str] = []
        for name, password in self.users.items():
            queries.append(f'addprinc -pw "{password}" +requires_preauth {self.principal(name)}')
            for alias in self.enterprise_principals(name):
                # MIT 1.20's KDC looks an NT-ENTERPRISE name up as one principal whose first
                # component holds the whole name ("user\@PSREMOTE.TEST"); it has no alias
                # support in its db2 back end, so each spelling is a principal of its own with
                # the same password.
                queries.append(f'addprinc -pw "{password}" +requires_preauth {alias}')
        for service in self.services + (self.stray_service,):
            queries.append(f"addprinc -randkey {self.principal(service)}")
        queries.append(f"ktadd -k {self.keytab} -norandkey " + " ".join(self.principal(s) for s in self.services))
        # One kadmin.local process for every query (its shell reads commands from stdin).
        self._run(find_tool("kadmin.local"), "-r", self.realm, stdin="\n".join(queries) + "\n")
        if not self.keytab.exists():
            raise RealmError("kadmin.local wrote no keytab")

    def _start_kdc(self) -> bool:
        log = open(self.directory / "krb5kdc.stderr", "wb")
        try:
            self._process = subprocess.Popen(
                [find_tool("krb5kdc"), "-n", "-r", self.realm],
                env=self._tool_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            if self._answers():
                return True
            time.sleep(0.02)
        self.stop_kdc()
        return False

    def stop_kdc(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(5)

    def _answers(self) -> bool:
        """True once the KDC accepts TCP connections (it binds UDP and TCP before serving)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _log_tail(self) -> str:
        texts = []
        for name in ("krb5kdc.stderr", "kdc.log"):
            path = self.directory / name
            if path.exists():
                texts.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(texts)

    # -- helpers for tests -----------------------------------------------------------------
    def kinit(
        self,
        user: str,
        password: str,
        ccache: os.PathLike,
        forwardable: bool = False,
        krb5_conf: Optional[os.PathLike] = None,
        enterprise: bool = False,
        env: Optional[Dict[str, str]] = None,
    ) -> None:
        """Get a TGT for ``user`` into the file ccache ``ccache`` with MIT's kinit.

        ``krb5_conf`` overrides the client configuration (e.g. one from ``client_conf``);
        ``enterprise`` sends the name as an NT-ENTERPRISE principal (``kinit -E``), as SSPI does;
        ``env`` adds variables (e.g. ``KRB5_TRACE``). Raises RealmError with kinit's message when
        the KDC refuses.
        """
        args = [find_tool("kinit"), "-c", f"FILE:{os.fspath(ccache)}", "-f" if forwardable else "-F"]
        if enterprise:
            args.append("-E")
        args.append(user if enterprise else self.principal(user))
        tool_env = self._tool_env()
        if krb5_conf is not None:
            tool_env["KRB5_CONFIG"] = os.fspath(krb5_conf)
        tool_env.update(env or {})
        result = subprocess.run(args, input=password + "\n", env=tool_env, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RealmError(f"kinit {user} failed: {result.stderr.strip() or result.stdout.strip()}")

    def client_conf(self, path: os.PathLike, udp_preference_limit: Optional[int] = None) -> Path:
        """Write a krb5.conf for this realm to ``path`` (e.g. with ``udp_preference_limit = 1``,
        which makes every request go over TCP)."""
        target = Path(path)
        target.write_text(krb5_conf_text(self.realm, self.port, udp_preference_limit))
        return target


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m psremote_testserver.kdc DIR", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        realm = Realm(args[0]).start()
    except RealmError as exc:
        print(f"psremote_testserver.kdc: {exc}", file=sys.stderr)
        return 1
    try:
        print(json.dumps(realm.describe()), flush=True)
        while not stop.wait(0.5):
            if not realm.running:
                print("psremote_testserver.kdc: krb5kdc exited", file=sys.stderr)
                return 1
    finally:
        realm.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
