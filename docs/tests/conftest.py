"""The samples' world (world.py) is started once for the whole run and stopped at its end."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from world import World

# The runner's own requests to the endpoints' control URLs must never go to a proxy.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Iterator[World]:
    started = World(tmp_path_factory.mktemp("world"))
    try:
        yield started.start()
    finally:
        started.stop()
