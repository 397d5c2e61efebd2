"""Fixtures: the loopback endpoint (started like testserver/tests/conftest.py does) and
psremote clients connected to it.

Every endpoint a test starts is terminated at teardown (SIGTERM, then SIGKILL); the URL line is
read with a timeout so an endpoint that fails to start fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List
from urllib.parse import urlsplit

import pytest

import psremote

USER = "user"
PASSWORD = "Passw0rd!"
DOMAIN = "DOMAIN"
START_TIMEOUT = 15.0

# Never let a proxy from the environment intercept loopback traffic.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


@dataclass
class Endpoint:
    url: str
    process: subprocess.Popen
    stderr_path: Path

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None
        return port

    @property
    def base(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    def state(self) -> Dict[str, int]:
        with urllib.request.urlopen(self.base + "/_control/state", timeout=10) as response:
            return json.load(response)

    def wait_state(self, key: str, value: int, timeout: float = 10.0) -> Dict[str, int]:
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


def _read_line(process: subprocess.Popen, timeout: float) -> str:
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


@pytest.fixture(scope="session")
def users_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users"
    path.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n")
    return path


@pytest.fixture(scope="session")
def start_endpoint(users_file, tmp_path_factory):
    """Factory: start_endpoint('--allow-unencrypted') -> Endpoint; all are stopped at session end."""
    started: List[Endpoint] = []

    def start(*extra: str, control: bool = True) -> Endpoint:
        log_dir = tmp_path_factory.mktemp("endpoint")
        stderr_path = log_dir / "stderr.log"
        args = [sys.executable, "-m", "psremote_testserver", "--port", "0", "--users", str(users_file), "--verbose"]
        if control:
            args.append("--control")
        args.extend(extra)
        with open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL)
        try:
            url = _read_line(process, START_TIMEOUT)
        except (TimeoutError, RuntimeError):
            process.kill()
            process.wait()
            raise RuntimeError(f"endpoint failed to start: {stderr_path.read_text()}") from None
        endpoint = Endpoint(url, process, stderr_path)
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()


@pytest.fixture(scope="session")
def endpoint(start_endpoint) -> Endpoint:
    """The default endpoint: all auth schemes, sealing required, control URL on."""
    return start_endpoint()


@pytest.fixture(scope="session")
def credentials(endpoint) -> Dict[str, str]:
    """Keyword arguments for Client/AsyncClient against the default endpoint."""
    return {"url": endpoint.url, "username": USER, "password": PASSWORD, "auth": "ntlm"}


@pytest.fixture(scope="session")
def client(credentials) -> Iterator[psremote.Client]:
    """One client for the whole session (its default pool is reused across tests)."""
    with psremote.Client(**credentials) as c:
        yield c


@pytest.fixture
def pool(client) -> Iterator[psremote.RunspacePool]:
    """A fresh runspace pool per test."""
    with client.runspace_pool(max_runspaces=2) as p:
        yield p


@pytest.fixture
def child_env(endpoint) -> Dict[str, str]:
    """Environment for subprocesses (CLI, examples, signal tests)."""
    env = dict(os.environ)
    env.update(
        PSREMOTE_URL=endpoint.url,
        PSREMOTE_USER=f"{DOMAIN}\\{USER}",
        PSREMOTE_PASSWORD=PASSWORD,
        PYTHONUNBUFFERED="1",
    )
    return env
