"""Start the endpoint as a subprocess and stop it afterwards.

Every server a test starts is terminated (SIGTERM, then SIGKILL after a
grace period) at teardown; the URL line is read with a timeout so a server
that fails to start fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import List, Optional

import pytest

from psremote_testserver.testing import DOMAIN, PASSWORD, USER, Endpoint, launch
from psremote_testserver.testing import read_url_line as _read_line  # noqa: F401  (tests import it)

# Never let a proxy from the environment intercept loopback traffic.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


@contextlib.contextmanager
def winrm_session(url: str, **kwargs):
    """A pywinrm Session whose HTTP connections are closed afterwards, even when a call fails."""
    import winrm

    session = winrm.Session(url, **kwargs)
    try:
        yield session
    finally:
        session.protocol.transport.close_session()


@pytest.fixture(scope="session")
def users_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users"
    path.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n")
    return path


@pytest.fixture(scope="session")
def start_endpoint(users_file, tmp_path_factory):
    """Factory: start_endpoint('--misbehave', 'bad-seal') -> Endpoint; all are stopped at session end.

    For HTTPS endpoints pass the CA of their certificate as ``cafile`` (for ``state()``).
    """
    started: List[Endpoint] = []

    def start(*extra: str, control: bool = True, cafile: Optional[str] = None) -> Endpoint:
        endpoint = launch(users_file, tmp_path_factory.mktemp("endpoint"), *extra, control=control, cafile=cafile)
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()


@pytest.fixture(scope="session")
def endpoint(start_endpoint) -> Endpoint:
    """The default endpoint: all auth schemes, sealing required, control URL on."""
    return start_endpoint()
