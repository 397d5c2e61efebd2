"""Fixtures: the loopback endpoint (launched by psremote_testserver.testing) and
psremote clients connected to it.

Every endpoint a test starts is terminated at teardown (SIGTERM, then SIGKILL); the URL line is
read with a timeout so an endpoint that fails to start fails the test instead of hanging it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

import psremote

from psremote_testserver.testing import DOMAIN, PASSWORD, USER, Endpoint, launch

# Never let a proxy from the environment intercept loopback traffic.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

#: The endpoint is plain http on 127.0.0.1: NTLM there needs the host in trusted_hosts (nothing
#: else proves the server), as WinRM's TrustedHosts would.
TRUSTED = ["127.0.0.1"]


@pytest.fixture(scope="session")
def users_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users"
    path.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n")
    return path


@pytest.fixture(scope="session")
def start_endpoint(users_file, tmp_path_factory):
    """Factory: start_endpoint('--allow-unencrypted') -> Endpoint; all are stopped at session end.
    For HTTPS pass ``cafile`` (the CA that signed ``--tls-cert``) so ``Endpoint.state()`` works."""
    started: List[Endpoint] = []

    def start(*extra: str, control: bool = True, cafile: Optional[str] = None) -> Endpoint:
        endpoint = launch(users_file, tmp_path_factory.mktemp("endpoint"), *extra, control=control, cafile=cafile)
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()


@pytest.fixture(scope="session")
def test_certs(tmp_path_factory) -> Dict[str, Any]:
    """The endpoint's test certificates (psremote_testserver.certs): paths by stem (``ca``,
    ``server``, ``server_key``, ``client_key_encrypted``, ...) and ``server_spki_sha256``."""
    from psremote_testserver import certs

    return certs.generate(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def endpoint(start_endpoint) -> Endpoint:
    """The default endpoint: all auth schemes, sealing required, control URL on."""
    return start_endpoint()


@pytest.fixture(scope="session")
def credentials(endpoint) -> Dict[str, str]:
    """Keyword arguments for Client/AsyncClient against the default endpoint."""
    return {"url": endpoint.url, "username": USER, "password": PASSWORD, "auth": "ntlm", "trusted_hosts": TRUSTED}


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
        PSREMOTE_TRUSTED_HOSTS=",".join(TRUSTED),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def psremote_records() -> Iterator[List[logging.LogRecord]]:
    """Every record of the ``psremote`` logger tree at INFO and above. Request it before the
    clients are created, so the native side forwards their records."""
    records: List[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("psremote")
    handler = Collect(logging.INFO)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
