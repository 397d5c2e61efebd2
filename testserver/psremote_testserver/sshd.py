"""Debian's OpenSSH server on 127.0.0.1 for tests, running the endpoint's out-of-process mode as its
``powershell`` subsystem (as PowerShell's ``Subsystem powershell /usr/bin/pwsh -sshs`` does).

``python -m psremote_testserver.sshd [--no-subsystem] [--dir DIR]`` prints one JSON line (see
``SshServer.info``) once sshd listens, then runs until SIGTERM/SIGINT, until the process that started
it exits, or until sshd dies; it stops sshd and every session it started and removes its directory.

Everything is throwaway and lives in one directory: the host key, the user's key (authorized for
every account this sshd lets in), a second key that is not authorized, a known_hosts file with the
host key and one with another key for the same host (a "changed" host key), sshd_config, the
subsystem's wrapper and the logs. sshd runs as root (it needs /run/sshd and, for password logons,
/etc/shadow); key logons are for the fixture's own user, password logons for ``psremote-ssh``, a
system account the fixture creates once (``ensure_password_user``: no home, shell /bin/sh because
sshd runs a subsystem through the login shell, a random password kept root-only in
/var/lib/psremote-testserver/ssh-password). This sshd lets in those two accounts only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
PRIVSEP_DIR = "/run/sshd"
SUBSYSTEM = "powershell"
PASSWORD_USER = "psremote-ssh"
STATE_DIR = Path("/var/lib/psremote-testserver")
PASSWORD_FILE = STATE_DIR / "ssh-password"
SYSTEM_PYTHON = "/usr/bin/python3"
#: How long sshd may take to say it listens.
START_TIMEOUT = 15.0
PORT_ATTEMPTS = 5


class SshdError(Exception):
    """sshd could not be set up or started."""


# -- the password account --------------------------------------------------------------------------------
def ensure_password_user() -> Tuple[str, str]:
    """The account for password logons and its password, created on first use (root only; idempotent and
    safe against concurrent fixtures: a lock file serialises the set-up)."""
    if os.geteuid() != 0:
        raise SshdError("password logons need root (useradd, /etc/shadow)")
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(STATE_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        created = False
        try:
            pwd.getpwnam(PASSWORD_USER)
        except KeyError:
            _run(
                ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh",
                 "--comment", "psremote test sshd password logons", PASSWORD_USER]
            )
            created = True
        if created or not PASSWORD_FILE.exists():
            password = "Psr-" + secrets.token_urlsafe(18)
            _run(["chpasswd"], input_text=f"{PASSWORD_USER}:{password}\n")
            fd = os.open(PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(password + "\n")
        return PASSWORD_USER, PASSWORD_FILE.read_text().strip()


def _run(command: List[str], input_text: Optional[str] = None) -> str:
    stdin = None if input_text is not None else subprocess.DEVNULL
    done = subprocess.run(command, input=input_text, stdin=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise SshdError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()[:500]}")
    return done.stdout


# -- keys ------------------------------------------------------------------------------------------------
def _keygen(path: Path, comment: str) -> str:
    for old in (path, path.with_suffix(".pub")):  # a reused --dir: fresh keys, no overwrite prompt
        old.unlink(missing_ok=True)
    _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    kind, blob = path.with_suffix(".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def fingerprint(public_key: str) -> str:
    """OpenSSH's SHA256 fingerprint of ``"ssh-ed25519 AAAA..."``."""
    digest = hashlib.sha256(base64.b64decode(public_key.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the subsystem ---------------------------------------------------------------------------------------
def _readable_by_all(path: str) -> bool:
    """Every directory on the way is searchable and the target readable by other users."""
    current = Path(path).resolve()
    if not current.exists() or not os.stat(current).st_mode & stat.S_IROTH:
        return False
    for parent in current.parents:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
    return True


def _python_for_others(directory: Path, copy_packages: Optional[bool]) -> Tuple[Optional[str], List[str], str]:
    """The interpreter and import path another account runs the endpoint with, or None and why not.

    The endpoint's packages are used where they are when every account can read them; otherwise
    (a virtualenv under /root, say), or when ``copy_packages`` is true, the packages the out-of-process
    mode imports are copied into ``directory/site``."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return None, [], f"{SYSTEM_PYTHON} is missing"
    version = _run([SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).strip()
    if version != "%d.%d" % sys.version_info[:2]:
        return None, [], f"{SYSTEM_PYTHON} is Python {version}, the endpoint's packages are for {sys.version_info[0]}.{sys.version_info[1]}"
    paths = _import_path()
    if copy_packages is None:
        copy_packages = not all(_readable_by_all(path) for path in paths)
    if copy_packages:
        paths = [_copy_packages(directory / "site")]
    return SYSTEM_PYTHON, paths, ""


def _copy_packages(site: Path) -> str:
    """Copy the top-level packages and modules the out-of-process mode imports from the endpoint's import
    path (not the standard library) into ``site``, readable by every account."""
    from . import outofproc  # noqa: F401 - loads what the mode needs

    roots = [Path(path).resolve() for path in _import_path()]
    tops: Dict[str, Path] = {}
    for name, module in list(sys.modules.items()):
        location = getattr(module, "__file__", None)
        if not location or name.startswith(("__editable__", "_distutils_hack")):
            continue
        location_path = Path(location).resolve()
        for root in roots:
            if root in location_path.parents:
                top = location_path.relative_to(root).parts[0]
                tops[top] = root / top
    site.mkdir(mode=0o755, exist_ok=True)
    for top, source in tops.items():
        if source.is_dir():
            shutil.copytree(source, site / top, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            shutil.copy2(source, site / top)
    for path in [site, *site.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    return str(site)


def _import_path() -> List[str]:
    """Where the endpoint and its packages (psrpcore, cryptography) are imported from."""
    package_root = str(Path(__file__).resolve().parent.parent)
    paths = [package_root, sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    return list(dict.fromkeys(paths))


def _wrapper(directory: Path, other_python: Optional[str], other_path: List[str]) -> str:
    """A shell script running the out-of-process mode: with this interpreter for the fixture's own user,
    with the system's (same version, the same packages on PYTHONPATH) for other accounts, which may not
    be able to reach this interpreter (a virtualenv under /root, say)."""
    log = f'{shlex.quote(str(directory / "logs"))}/outofproc-$(id -un)-$$.log'
    own_path = shlex.quote(os.pathsep.join(_import_path()))
    lines = [
        "#!/bin/sh",
        "# The endpoint's out-of-process mode as this sshd's powershell subsystem (psremote_testserver.sshd).",
        f'if [ "$(id -u)" = "{os.getuid()}" ]; then',
        f"  PYTHONPATH={own_path} exec {shlex.quote(sys.executable)} -m psremote_testserver.outofproc --log {log}",
        "fi",
    ]
    if other_python:
        other = shlex.quote(os.pathsep.join(other_path))
        lines.append(f"PYTHONPATH={other} exec {shlex.quote(other_python)} -m psremote_testserver.outofproc --log {log}")
    else:
        lines += ["echo 'psremote_testserver.sshd: no interpreter for this account' >&2", "exit 1"]
    return "\n".join(lines) + "\n"


# -- sshd ------------------------------------------------------------------------------------------------
def _config(directory: Path, port: int, users: List[str], subsystem: bool) -> str:
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {directory / 'host_ed25519'}",
        "PidFile none",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        "PermitRootLogin yes",
        "PubkeyAuthentication yes",
        "PasswordAuthentication yes",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        # The keys live in a temporary directory under /tmp (sticky, world-writable): sshd's
        # ownership checks would refuse them.
        "StrictModes no",
        f"AllowUsers {' '.join(users)}",
        "AllowTcpForwarding no",
        "AllowAgentForwarding no",
        "X11Forwarding no",
        "PermitTTY no",
        # Tests may log on from many threads at once: no random refusals of unauthenticated connections.
        "MaxStartups 200",
        "LogLevel VERBOSE",
    ]
    if subsystem:
        lines.append(f"Subsystem {SUBSYSTEM} {directory / 'powershell-subsystem'}")
    return "\n".join(lines) + "\n"


class SshServer:
    """A running sshd (``start()``); ``info`` is what the CLI prints."""

    def __init__(self, directory: Path, owned: bool, subsystem: bool, copy_packages: Optional[bool] = None) -> None:
        self.directory = directory
        self.copy_packages = copy_packages
        self.owned = owned  # remove the directory on stop
        self.subsystem = subsystem
        self.process: Optional[subprocess.Popen] = None
        self.info: Dict[str, Any] = {}
        self._drain: Optional[threading.Thread] = None

    def _prepare(self) -> None:
        directory = self.directory
        os.chmod(directory, 0o755)  # other accounts read authorized_keys and run the wrapper
        logs = directory / "logs"
        logs.mkdir(exist_ok=True)
        os.chmod(logs, 0o1777)
        host_key = _keygen(directory / "host_ed25519", "psremote-test-host")
        user_key = _keygen(directory / "user_ed25519", "psremote-test-user")
        _keygen(directory / "wrong_ed25519", "psremote-test-unauthorized")
        other_host_key = _keygen(directory / "other_host_ed25519", "psremote-test-other-host")
        authorized = directory / "authorized_keys"
        authorized.write_text(user_key + "\n")
        os.chmod(authorized, 0o644)
        user = pwd.getpwuid(os.getuid()).pw_name
        password_user = password = None
        unavailable = ""
        other_python, other_path, unavailable = _python_for_others(directory, self.copy_packages)
        if other_python is not None:
            try:
                password_user, password = ensure_password_user()
            except SshdError as exc:
                unavailable = str(exc)
        wrapper = directory / "powershell-subsystem"
        wrapper.write_text(_wrapper(directory, other_python, other_path))
        os.chmod(wrapper, 0o755)
        self.info = {
            "host_public_key": host_key,
            "host_key_fingerprint": fingerprint(host_key),
            "other_host_public_key": other_host_key,
            "user": user,
            "user_key_path": str(directory / "user_ed25519"),
            "user_public_key": user_key,
            "wrong_key_path": str(directory / "wrong_ed25519"),
            "password_user": password_user,
            "password": password,
            "password_unavailable": unavailable or None,
            "subsystem": SUBSYSTEM if self.subsystem else None,
            "subsystem_command": str(wrapper) if self.subsystem else None,
            "dir": str(directory),
        }

    def _launch(self, port: int) -> Optional[str]:
        """Start sshd on ``port``; None once it listens, else what it said (and it is gone)."""
        users = [self.info["user"]] + ([self.info["password_user"]] if self.info["password_user"] else [])
        config = self.directory / "sshd_config"
        config.write_text(_config(self.directory, port, users, self.subsystem))
        log_path = self.directory / "logs" / "sshd.log"
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its sessions share its process group: stop() ends them too
        )
        said: List[str] = []
        ready = threading.Event()

        def drain() -> None:
            with open(log_path, "ab") as log:
                for raw in process.stderr:
                    log.write(raw)
                    log.flush()
                    if not ready.is_set():
                        line = raw.decode(errors="replace").strip()
                        said.append(line)
                        if line.startswith("Server listening on 127.0.0.1 port"):
                            ready.set()
            process.stderr.close()
            ready.set()

        self._drain = threading.Thread(target=drain, name="sshd-log", daemon=True)
        self._drain.start()
        if not ready.wait(START_TIMEOUT):
            said.append("(no 'Server listening' line in time)")
        if process.poll() is None and said and said[-1].startswith("Server listening"):
            self.process = process
            return None
        self._kill(process)
        return " / ".join(said[-5:]) or f"exit status {process.returncode}"

    def _kill(self, process: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if self._drain is not None:
            self._drain.join(5)

    def start(self) -> "SshServer":
        if not os.access(SSHD, os.X_OK):
            raise SshdError(f"{SSHD} is missing: install openssh-server (make ssh-deps)")
        try:
            os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise SshdError(f"cannot create {PRIVSEP_DIR} (sshd's privilege separation directory): {exc}") from None
        self._prepare()
        failure = ""
        for _ in range(PORT_ATTEMPTS):  # sshd has no port 0: a free port may be taken before sshd binds it
            port = _free_port()
            failure = self._launch(port) or ""
            if not failure:
                break
            if "Address already in use" not in failure:
                raise SshdError(f"sshd did not start: {failure}")
        else:
            raise SshdError(f"sshd did not start: {failure}")
        known = f"[127.0.0.1]:{port} {self.info['host_public_key']}"
        changed = f"[127.0.0.1]:{port} {self.info['other_host_public_key']}"
        (self.directory / "known_hosts").write_text(known + "\n")
        (self.directory / "known_hosts_changed").write_text(changed + "\n")
        (self.directory / "known_hosts_empty").write_text("")
        self.info.update(
            port=port,
            pid=self.process.pid,
            known_hosts_line=known,
            known_hosts_path=str(self.directory / "known_hosts"),
            changed_known_hosts_line=changed,
            changed_known_hosts_path=str(self.directory / "known_hosts_changed"),
            empty_known_hosts_path=str(self.directory / "known_hosts_empty"),
            sshd_log=str(self.directory / "logs" / "sshd.log"),
        )
        return self

    @property
    def port(self) -> int:
        return self.info["port"]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None:
            self._kill(self.process)
            self.process = None
        if self.owned:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "SshServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start(subsystem: bool = True, directory: Optional[str] = None, copy_packages: Optional[bool] = None) -> SshServer:
    """Start an sshd (with the ``powershell`` subsystem unless ``subsystem`` is false); stop() it after.

    ``copy_packages``: give other accounts (the password user) a copy of the endpoint's packages
    (None: only when they cannot read them where they are)."""
    owned = directory is None
    path = Path(tempfile.mkdtemp(prefix="psremote-sshd-")) if owned else Path(directory).resolve()
    path.mkdir(parents=True, exist_ok=True)
    server = SshServer(path, owned, subsystem, copy_packages)
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise


@contextlib.contextmanager
def running(subsystem: bool = True, copy_packages: Optional[bool] = None) -> Iterator[SshServer]:
    server = start(subsystem, copy_packages=copy_packages)
    try:
        yield server
    finally:
        server.stop()


def main(argv: Optional[List[str]] = None) -> int:
    parent = os.getppid()  # read first: a parent that exits at once must not be missed
    parser = argparse.ArgumentParser(
        prog="python -m psremote_testserver.sshd",
        description="Start OpenSSH's sshd on 127.0.0.1 (a free port, throwaway keys) with the endpoint's "
        "out-of-process mode as its 'powershell' subsystem; print one JSON line; run until SIGTERM/SIGINT "
        "or until the parent process exits.",
    )
    parser.add_argument("--no-subsystem", action="store_true", help="configure no powershell subsystem (a server without it)")
    parser.add_argument("--dir", metavar="DIR", help="keep keys, config and logs in DIR (kept afterwards; default: a temporary directory, removed)")
    parser.add_argument(
        "--copy-packages",
        action="store_true",
        help="give the password account a copy of the endpoint's packages even when it could read them in place",
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = start(subsystem=not args.no_subsystem, directory=args.dir, copy_packages=args.copy_packages or None)
    except SshdError as exc:
        print(f"psremote_testserver.sshd: {exc}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(server.info), flush=True)
        while not stop.wait(0.5):
            if os.getppid() != parent:
                break  # nobody will stop us: stop now
            if not server.alive():
                print("psremote_testserver.sshd: sshd exited", file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
