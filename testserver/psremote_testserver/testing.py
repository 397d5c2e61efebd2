"""Starting and stopping the endpoint from test suites (the endpoint's own and the Python
package's): one implementation, so both suites launch it the same way.

Every endpoint is terminated at teardown (SIGTERM, then SIGKILL after a grace period); the URL
line is read with a timeout so an endpoint that fails to start fails the test instead of hanging.
"""

from __future__ import annotations

import json
import os
import selectors
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional
from urllib.parse import urlsplit

USER = "user"
PASSWORD = "Passw0rd!"
DOMAIN = "DOMAIN"
START_TIMEOUT = 15.0
CA_ENV = "PSREMOTE_TESTSERVER_CA"
"""Names the CA file ``Endpoint.state()`` trusts over HTTPS when the Endpoint was given none."""


@dataclass
class Endpoint:
    url: str
    process: subprocess.Popen
    stderr_path: Path
    cafile: Optional[str] = None
    """CA (PEM) that signed the endpoint's HTTPS certificate, for the control URL."""

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None
        return port

    @property
    def base(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    def ssl_context(self) -> Optional[ssl.SSLContext]:
        """A client context trusting the endpoint's CA (None over HTTP)."""
        if not self.url.startswith("https:"):
            return None
        return ssl.create_default_context(cafile=self.cafile or os.environ.get(CA_ENV))

    def state(self) -> Dict[str, Any]:
        with urllib.request.urlopen(self.base + "/_control/state", timeout=10, context=self.ssl_context()) as response:
            return json.load(response)

    def wait_state(self, key: str, value: int, timeout: float = 10.0) -> Dict[str, Any]:
        """Polls the control state until state[key] == value (the server releases asynchronously)."""
        deadline = time.monotonic() + timeout
        state = self.state()
        while state[key] != value and time.monotonic() < deadline:
            time.sleep(0.05)
            state = self.state()
        return state

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout:
            self.process.stdout.close()
        return self.process.returncode


def read_url_line(process: subprocess.Popen, timeout: float) -> str:
    """Reads the one line a server prints on start, or fails after `timeout` seconds."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    line = b""
    try:
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError("endpoint did not print its URL in time")
            chunk = os.read(process.stdout.fileno(), 1)
            if not chunk:
                raise RuntimeError("endpoint exited before printing its URL")
            line += chunk
    finally:
        selector.close()
    return line.decode().strip()


def launch(
    users_file: Path,
    log_dir: Path,
    *extra: str,
    control: bool = True,
    cafile: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
) -> Endpoint:
    """Starts `python -m psremote_testserver` on a free port; the caller stops it.

    For HTTPS (``--tls-cert``/``--tls-key`` in ``extra``) pass the CA that signed the
    certificate as ``cafile`` (or set PSREMOTE_TESTSERVER_CA) so ``state()`` can connect.
    ``env`` adds environment variables (for Kerberos: ``kdc.Realm.env()``, with ``--keytab``).
    """
    stderr_path = log_dir / "stderr.log"
    args = [sys.executable, "-m", "psremote_testserver", "--port", "0", "--users", str(users_file), "--verbose"]
    if control:
        args.append("--control")
    args.extend(extra)
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
        )
    try:
        url = read_url_line(process, START_TIMEOUT)
    except (TimeoutError, RuntimeError):
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
        raise RuntimeError(f"endpoint failed to start: {stderr_path.read_text()}") from None
    return Endpoint(url, process, stderr_path, cafile=str(cafile) if cafile else None)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Polls `predicate` until it holds or `timeout` seconds pass (for state other threads or
    processes update: the endpoint's counters, records forwarded from native code)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
