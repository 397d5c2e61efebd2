"""Real proxies for the client's proxy tests, from Debian (``make proxy-deps``): tinyproxy (HTTP
CONNECT, optionally Basic) and microsocks (SOCKS5, optionally user/password), each started on a
free port of 127.0.0.1 and stopped by the test that started it.

Used by the Python tests (``start_tinyproxy`` / ``start_microsocks``) and by the C tests'
``run.sh`` (``python -m psremote_testserver.proxies tinyproxy|microsocks [--auth] DIR``: prints
the proxy's URL without credentials as one line, then runs until SIGTERM).

tinyproxy logs to stdout, block-buffered into its log file: the log is complete once it stopped
(``Proxy.stop()`` returns it). microsocks logs each connection to stderr as ``client[N] ADDR:
connected to HOST:PORT``, naming what the client asked for (the name with socks5h).
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List

#: Credentials of the proxies started with authentication. tinyproxy's configuration takes only
#: ``[A-Za-z0-9._-]``; microsocks takes anything.
HTTP_USER = "proxyuser"
HTTP_PASSWORD = "s3cret-proxy-pass"
SOCKS_USER = "sockuser"
SOCKS_PASSWORD = "s0ck pass:x"
START_TIMEOUT = 20.0


@dataclass
class Proxy:
    scheme: str
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        """The proxy's URL without credentials."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self) -> str:
        """Stops the proxy (SIGTERM, then SIGKILL) and returns its log."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(scheme: str, argv: List[str], port: int, log_path: Path, log_is_stdout: bool) -> Proxy:
    log = open(log_path, "wb")
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log if log_is_stdout else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if log_is_stdout else log,
        )
    finally:
        log.close()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Proxy(scheme, port, process, log_path)
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited at start ({process.returncode}): {log_path.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{argv[0]} did not listen on 127.0.0.1:{port}")
        time.sleep(0.02)


def start_tinyproxy(directory: Path, auth: bool = False) -> Proxy:
    """tinyproxy on a free port, CONNECT to any port; ``auth`` adds Basic (HTTP_USER)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 600",
        "MaxClients 50",
        "LogLevel Info",
        "Allow 127.0.0.1",
        "DisableViaHeader Yes",
    ]
    if auth:
        lines.append(f"BasicAuth {HTTP_USER} {HTTP_PASSWORD}")
    conf = directory / f"tinyproxy-{port}.conf"
    conf.write_text("\n".join(lines) + "\n")
    return _spawn("http", ["tinyproxy", "-d", "-c", str(conf)], port, directory / f"tinyproxy-{port}.log", True)


def start_microsocks(directory: Path, auth: bool = False, scheme: str = "socks5") -> Proxy:
    """microsocks on a free port; ``auth`` requires SOCKS_USER. ``scheme`` names the URL's
    scheme (``socks5`` or ``socks5h``)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = ["microsocks", "-i", "127.0.0.1", "-p", str(port)]
    if auth:
        argv += ["-u", SOCKS_USER, "-P", SOCKS_PASSWORD]
    return _spawn(scheme, argv, port, directory / f"microsocks-{port}.log", False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["tinyproxy", "microsocks"])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--auth", action="store_true")
    args = parser.parse_args()
    if args.kind == "tinyproxy":
        proxy = start_tinyproxy(args.directory, args.auth)
    else:
        proxy = start_microsocks(args.directory, args.auth)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(proxy.url, flush=True)
    while not stopping and proxy.process.poll() is None:
        time.sleep(0.1)
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
