"""Fixtures for the collection's tests: loopback endpoints, inventories over them, and `ansible`
run as a user runs it (a subprocess in a temporary directory, the collection found through
ANSIBLE_COLLECTIONS_PATH, results read from the tree callback's per-host JSON files).

Several endpoint processes share the inventory's hosts: each endpoint also listens on ten
loopback addresses of its own (``--listen-range``), so every host of the 50-host inventory has
an address of its own (127.0.21.1 to 127.0.25.10), at its endpoint's port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from psremote_testserver.testing import DOMAIN, PASSWORD, USER, Endpoint, launch

ROOT = Path(__file__).resolve().parents[2]
#: ANSIBLE_COLLECTIONS_PATH: the directory holding ansible_collections/psremote/remote.
COLLECTIONS = ROOT / "ansible"
ACTION_PLUGINS = Path(__file__).resolve().parent / "action_plugins"
PLUGIN = "psremote.remote.psremote"
ANSIBLE = str(Path(sys.executable).parent / "ansible")
#: Endpoint processes the 50-host inventory is spread over, and the addresses each listens on.
ENDPOINTS = 5
ADDRESSES_PER_ENDPOINT = 10
#: Endpoint URL -> the loopback addresses it listens on besides 127.0.0.1.
ADDRESSES: Dict[str, List[str]] = {}

os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


def assert_clean(endpoints: Sequence[Endpoint]) -> None:
    """Nothing open on any endpoint: no shell, pool, pipeline or command."""
    for endpoint in endpoints:
        for key in ("commands", "pipelines", "pools", "shells"):
            state = endpoint.wait_state(key, 0)
            assert state[key] == 0, (endpoint.url, state)


def logons(endpoints: Sequence[Endpoint]) -> int:
    return sum(len(e.state()["logons"]) for e in endpoints)


@pytest.fixture(scope="session")
def users_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users"
    path.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n")
    return path


@pytest.fixture(scope="session")
def endpoints(users_file, tmp_path_factory) -> Iterator[List[Endpoint]]:
    started: List[Endpoint] = []
    try:
        for k in range(ENDPOINTS):
            first, last = f"127.0.{21 + k}.1", f"127.0.{21 + k}.{ADDRESSES_PER_ENDPOINT}"
            endpoint = launch(users_file, tmp_path_factory.mktemp("endpoint"), "--listen-range", f"{first}-{last}")
            ADDRESSES[endpoint.url] = [f"127.0.{21 + k}.{j + 1}" for j in range(ADDRESSES_PER_ENDPOINT)]
            started.append(endpoint)
        yield started
    finally:
        for endpoint in started:
            endpoint.stop()


@pytest.fixture(scope="session")
def https_endpoint(users_file, tmp_path_factory) -> Iterator[Tuple[Endpoint, Dict[str, Any]]]:
    """An HTTPS endpoint (the test CA's certificate for 127.0.0.1) and the certificates."""
    from psremote_testserver import certs

    made = certs.generate(tmp_path_factory.mktemp("certs"))
    endpoint = launch(
        users_file,
        tmp_path_factory.mktemp("endpoint"),
        "--tls-cert", str(made["server"]), "--tls-key", str(made["server_key"]),
        cafile=str(made["ca"]),
    )  # fmt: skip
    try:
        yield endpoint, made
    finally:
        endpoint.stop()


#: What both plugins need for the loopback endpoints: NTLM over http with message encryption.
#: The ansible_psrp_* names are read by psrp and by psremote alike; psremote also needs the host
#: named as trusted before it sends NTLM over http (psrp has no such rule).
COMMON_VARS = {
    "ansible_user": USER,
    "ansible_password": PASSWORD,
    "ansible_psrp_protocol": "http",
    "ansible_psrp_auth": "ntlm",
    "ansible_psrp_path": "wsman",
    "ansible_psremote_trusted_hosts": "127.0.*",
}


def write_inventory(path: Path, endpoints: Sequence[Endpoint], count: int, **variables: Any) -> List[str]:
    """An INI inventory of ``count`` hosts (win01, win02, ...) spread over the endpoints in
    turn, each at an address of its own where the endpoint has them (else 127.0.0.1);
    ``variables`` override or add group variables (a None value removes one)."""
    names = [f"win{i + 1:02d}" for i in range(count)]
    lines = ["[windows]"]
    for i, name in enumerate(names):
        endpoint = endpoints[i % len(endpoints)]
        addresses = ADDRESSES.get(endpoint.url, [])
        slot = i // len(endpoints)
        address = addresses[slot] if slot < len(addresses) else "127.0.0.1"
        lines.append(f"{name} ansible_host={address} ansible_port={endpoint.port}")
    group = {**COMMON_VARS, **variables}
    lines.append("[windows:vars]")
    lines.extend(f"{key}={value}" for key, value in group.items() if value is not None)
    path.write_text("\n".join(lines) + "\n")
    return names


@dataclass
class AnsibleRun:
    process: subprocess.CompletedProcess
    results: Dict[str, Dict[str, Any]]

    def output(self) -> str:
        return f"exit {self.process.returncode}\nstdout:\n{self.process.stdout}\nstderr:\n{self.process.stderr}"


class AnsibleRunner:
    """Runs `ansible` in a directory of its own with the environment a user would set."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / "ansible.cfg").write_text("[defaults]\n")  # no /etc/ansible or ~/.ansible.cfg
        self.env = {
            **os.environ,
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
            "ANSIBLE_CONFIG": str(directory / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_ACTION_PLUGINS": str(ACTION_PLUGINS),
            "ANSIBLE_HOME": str(directory / "home"),
            "ANSIBLE_LOCAL_TEMP": str(directory / "local-tmp"),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
        }
        self.runs = 0

    def __call__(
        self,
        inventory: Path,
        connection: str,
        module: str,
        args: str,
        *,
        pattern: str = "windows",
        forks: int = 10,
        extra: Sequence[str] = (),
        timeout: float = 120,
    ) -> AnsibleRun:
        self.runs += 1
        tree = self.directory / f"tree-{self.runs}"
        command = [
            sys.executable, ANSIBLE, pattern, "-i", str(inventory), "-f", str(forks),
            "-e", f"ansible_connection={connection}", "-t", str(tree), "-m", module, "-a", args, *extra,
        ]  # fmt: skip
        process = subprocess.run(
            command, cwd=self.directory, env=self.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        results = {p.name: json.loads(p.read_text()) for p in tree.iterdir()} if tree.is_dir() else {}
        return AnsibleRun(process, results)


@pytest.fixture
def run_ansible(tmp_path) -> AnsibleRunner:
    return AnsibleRunner(tmp_path)


@pytest.fixture(scope="session")
def connection_loader() -> Any:
    """Ansible's connection plugin loader, in this process, with the repository's collection."""
    from ansible.plugins.loader import connection_loader, init_plugin_loader

    init_plugin_loader([str(COLLECTIONS)])
    return connection_loader


@pytest.fixture
def new_connection(connection_loader) -> Iterator[Any]:
    """Factory: new_connection(endpoint, **variables) -> the psremote connection plugin as
    Ansible's loader gives it, its options set from inventory-style variables. Every connection
    made is closed at teardown."""
    from ansible.playbook.play_context import PlayContext

    made: List[Any] = []

    def make(endpoint: Endpoint, **variables: Any) -> Any:
        connection = connection_loader.get(PLUGIN, PlayContext())
        assert connection is not None, "ansible-core did not load the psremote connection plugin"
        options: Dict[str, Optional[Any]] = {
            "inventory_hostname": "win-direct",
            "ansible_host": "127.0.0.1",
            "ansible_port": endpoint.port,
            **COMMON_VARS,
            **variables,
        }
        connection.set_options(var_options={k: v for k, v in options.items() if v is not None})
        made.append(connection)
        return connection

    yield make
    for connection in made:
        connection.close()
