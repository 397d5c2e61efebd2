"""PowerShell over SSH through the Python API and the CLI: ``Client("host", transport="ssh", ...)``
against Debian's OpenSSH server (``psremote_testserver.sshd``: 127.0.0.1, throwaway keys, the
endpoint's out-of-process mode as its ``powershell`` subsystem). Key, password and agent logons;
the host key refusals as :class:`psremote.HostKeyError` with both fingerprints; accepting an
unknown key (warned on ``psremote.audit``, recorded); the logon and subsystem refusals; asyncio;
option checks; ``psremote run --transport ssh``."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import psremote
from psremote import AsyncClient, Client
from psremote.exceptions import (
    AuthenticationError,
    ConfigurationError,
    HostKeyError,
    SecurityPolicyError,
    TransportError,
)
from psremote_testserver import proxies, sshd

PSREMOTE = [sys.executable, "-m", "psremote"]


@pytest.fixture(scope="module")
def server() -> Iterator[sshd.SshServer]:
    with sshd.running() as s:
        yield s


@pytest.fixture(scope="module")
def bare() -> Iterator[sshd.SshServer]:
    with sshd.running(subsystem=False) as s:
        yield s


def key_options(s: sshd.SshServer, **extra: Any) -> Dict[str, Any]:
    options: Dict[str, Any] = dict(
        transport="ssh",
        port=s.port,
        username=s.info["user"],
        key_file=s.info["user_key_path"],
        known_hosts=s.info["known_hosts_path"],
    )
    options.update(extra)
    return options


def test_key_logon_runs_pipelines(server: sshd.SshServer) -> None:
    with Client("127.0.0.1", **key_options(server)) as client:
        assert client.transport == "ssh"
        assert client.url == f"ssh://{server.info['user']}@127.0.0.1:{server.port}/powershell"
        assert "transport='ssh'" in repr(client)
        assert client.ssh is not None and client.ssh.key_file == server.info["user_key_path"]
        result = client.run_ps("Write-Output 'hello over ssh'; Write-Warning careful")
        assert result.output == ["hello over ssh"]
        assert list(result.warnings) == ["careful"]
        with client.runspace_pool() as pool:
            assert pool.run_ps("Write-Output 1 2 3").output == [1, 2, 3]
            secret = pool.run_ps("ConvertTo-SecureString 'ssh-secret' -AsPlainText -Force").output[0]
            assert isinstance(secret, psremote.SecureString) and secret.get_value() == "ssh-secret"
        # cmd shells are WS-Man's.
        with pytest.raises(ConfigurationError, match="WS-Man"):
            client.run_cmd("whoami")


def test_password_and_agent_logons(server: sshd.SshServer, tmp_path: Path) -> None:
    user, password = server.info["password_user"], server.info["password"]
    assert user and password, server.info["password_unavailable"]
    with Client("127.0.0.1", transport="ssh", port=server.port, username=user, password=password,
                known_hosts=server.info["known_hosts_path"]) as client:  # fmt: skip
        assert client.run_ps("Write-Output 'by password'").output == ["by password"]
        assert password not in repr(client) and password not in repr(client.ssh)

    socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if socket.exists():
                break
            time.sleep(0.025)
        env = dict(os.environ, SSH_AUTH_SOCK=str(socket))
        subprocess.run(["ssh-add", "-q", server.info["user_key_path"]], env=env, check=True, capture_output=True)
        with Client("127.0.0.1", **key_options(server, key_file=None, agent=str(socket))) as client:
            assert client.run_ps("Write-Output 'by agent'").output == ["by agent"]
    finally:
        agent.kill()
        agent.wait()


def test_host_key_refusals(server: sshd.SshServer) -> None:
    fingerprint = server.info["host_key_fingerprint"]
    with Client("127.0.0.1", **key_options(server, known_hosts=server.info["empty_known_hosts_path"])) as client:
        with pytest.raises(HostKeyError) as caught:
            client.run_ps("1")
    e = caught.value
    assert isinstance(e, SecurityPolicyError)
    assert (e.problem, e.fingerprint, e.algorithm) == ("unknown", fingerprint, "ssh-ed25519")
    assert e.host == f"[127.0.0.1]:{server.port}" and e.recorded_fingerprints == ()
    assert fingerprint in str(e) and "accept_unknown_host_key" in str(e)

    # A changed key is refused even when unknown keys are accepted; both fingerprints are named.
    changed = server.info["changed_known_hosts_path"]
    with Client("127.0.0.1", **key_options(server, known_hosts=changed, accept_unknown_host_key=True)) as client:
        with pytest.raises(HostKeyError) as caught:
            client.run_ps("1")
    e = caught.value
    old = sshd.fingerprint(server.info["other_host_public_key"])
    assert e.problem == "changed" and e.recorded_fingerprints == (old,)
    assert fingerprint in str(e) and old in str(e) and "CHANGED" in str(e)


def test_accepting_an_unknown_host_key(server: sshd.SshServer, tmp_path: Path, psremote_records: List[logging.LogRecord]) -> None:
    known = tmp_path / "known_hosts"
    with Client("127.0.0.1", **key_options(server, known_hosts=known, accept_unknown_host_key=True)) as client:
        assert client.run_ps("Write-Output accepted").output == ["accepted"]
    assert known.read_text() == server.info["known_hosts_line"] + "\n"
    deadline = time.monotonic() + 10
    warnings: List[logging.LogRecord] = []
    while not warnings and time.monotonic() < deadline:
        warnings = [
            r for r in psremote_records
            if r.name == "psremote.audit" and getattr(r, "psremote", {}).get("event") == "host_key_accepted"
            and getattr(r, "psremote", {}).get("endpoint") == f"127.0.0.1:{server.port}"
        ]  # fmt: skip
        time.sleep(0.02)
    assert warnings and warnings[0].levelno == logging.WARNING
    assert server.info["host_key_fingerprint"] in warnings[0].getMessage() + str(warnings[0].psremote)  # type: ignore[attr-defined]
    # Recorded: strict from now on.
    with Client("127.0.0.1", **key_options(server, known_hosts=known)) as client:
        assert client.run_ps("Write-Output known").output == ["known"]


def test_logon_and_subsystem_refusals(server: sshd.SshServer, bare: sshd.SshServer) -> None:
    with Client("127.0.0.1", **key_options(server, key_file=server.info["wrong_key_path"])) as client:
        with pytest.raises(AuthenticationError, match="publickey") as caught:
            client.run_ps("1")
    assert caught.value.mechanism == "ssh-publickey"
    with Client("127.0.0.1", transport="ssh", port=server.port, username=server.info["password_user"],
                password="not-the-password", known_hosts=server.info["known_hosts_path"]) as client:  # fmt: skip
        with pytest.raises(AuthenticationError, match="refused the password"):
            client.run_ps("1")
    with Client("127.0.0.1", **key_options(bare, known_hosts=bare.info["known_hosts_path"])) as client:
        with pytest.raises(TransportError, match="without the PowerShell subsystem"):
            client.run_ps("1")


def test_asyncio_over_ssh(server: sshd.SshServer) -> None:
    async def main() -> List[Any]:
        async with AsyncClient("127.0.0.1", **key_options(server)) as client:
            result = await client.run_ps("Write-Output async; 40 + 2")
            return list(result.output)

    assert asyncio.run(main()) == ["async", 42]


def test_option_checks() -> None:
    with pytest.raises(ConfigurationError, match="one way to log on"):
        Client("h", transport="ssh", username="u", key_file="/k", password="p")
    with pytest.raises(ConfigurationError, match="needs key_file"):
        Client("h", transport="ssh", username="u", key_passphrase="x", agent=True)
    with pytest.raises(ConfigurationError, match="username is required"):
        Client("h", transport="ssh", key_file="/k")
    with pytest.raises(ConfigurationError, match="not url"):
        Client(url="http://h:5985/wsman", transport="ssh", username="u", agent=True)
    with pytest.raises(ConfigurationError, match="apply to transport='ssh'"):
        Client("h", username="u", password="p", key_file="/k")
    with pytest.raises(ConfigurationError, match="unknown transport"):
        Client("h", transport="telnet", username="u", password="p")
    with pytest.raises(ConfigurationError, match="accept_unknown_host_key must be True or False"):
        Client("h", transport="ssh", username="u", agent=True, accept_unknown_host_key="yes")
    # Paths take ~ as ssh does.
    with Client("h", transport="ssh", username="u", key_file="~/id", known_hosts="~/kh") as client:
        assert client.ssh is not None
        assert (client.ssh.key_file, client.ssh.known_hosts) == (os.path.expanduser("~/id"), os.path.expanduser("~/kh"))
    # Nothing is contacted before a pool opens: a client for an unreachable host is fine until then.
    client = Client("127.0.0.1", transport="ssh", port=1, username="u", agent=True)
    assert client.url == "ssh://u@127.0.0.1:1/powershell"
    with pytest.raises(psremote.ConnectError):
        client.run_ps("1")
    client.close()


def test_wsman_options_are_refused_not_ignored_over_ssh_and_process() -> None:
    ssh: Dict[str, Any] = dict(transport="ssh", username="u", agent=True)
    for option, value in (
        ("auth", "ntlm"),
        ("https", True),
        ("path", "/other"),
        ("configuration_name", "JEA"),
        ("trusted_hosts", ["h"]),
        ("insecure_skip_verify", True),
        ("encryption", "always"),
        ("ca_file", "/ca.pem"),
    ):
        with pytest.raises(ConfigurationError, match=f"^{option} applies to transport='wsman', not transport='ssh'"):
            Client("h", **ssh, **{option: value})
        with pytest.raises(ConfigurationError, match=f"^{option} applies to transport='wsman', not transport='process'"):
            Client(transport="process", **{option: value})
    with pytest.raises(ConfigurationError, match="ignore_proxy applies to transport='wsman'.*SSH reads no proxy from the environment"):
        Client("h", **ssh, ignore_proxy=True)
    with pytest.raises(ConfigurationError, match="auth, https apply to transport='wsman'"):
        Client("h", **ssh, auth="basic", https=True)
    with pytest.raises(ConfigurationError, match="port applies to transport='wsman', not transport='process'"):
        Client(transport="process", port=5986)
    # Their defaults, given explicitly, are fine.
    Client("h", **ssh, auth="negotiate", https=False, configuration_name="Microsoft.PowerShell", ignore_proxy=False).close()


def test_proxy_options_over_ssh_are_checked_as_for_wsman() -> None:
    ssh: Dict[str, Any] = dict(transport="ssh", username="u", agent=True)
    with pytest.raises(ConfigurationError, match="proxy_password needs proxy="):
        Client("h", **ssh, proxy_password="secret-pw")
    with pytest.raises(ConfigurationError, match="proxy_username needs proxy="):
        Client("h", **ssh, proxy_username="pu", proxy_password="secret-pw")
    with pytest.raises(ConfigurationError, match="proxy_password needs proxy_username") as caught:
        Client("h", **ssh, proxy="http://127.0.0.1:3128", proxy_password="secret-pw")
    assert "secret-pw" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="proxy must be a URL"):
        Client("h", **ssh, proxy=3128)
    with pytest.raises(ConfigurationError, match="proxy must be a URL"):
        Client("h", **ssh, proxy="  ")
    # The URL is taken without its surrounding blanks, as over WS-Man.
    with Client("h", **ssh, proxy=" http://127.0.0.1:3128 ", proxy_username="pu", proxy_password="secret-pw") as client:
        assert client.options.proxy == "http://127.0.0.1:3128"
        assert client.options.proxy_username == "pu"
        assert "secret-pw" not in repr(client) and "secret-pw" not in repr(client.options)


def test_options_of_ssh_and_process_clients_name_what_they_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    from psremote.cli import _prompt_name

    with Client("server1", transport="ssh", port=2222, username="admin", agent=True) as client:
        o = client.options
        assert (o.transport, o.host, o.port, o.username) == ("ssh", "server1", 2222, "admin")
        assert o.url == "ssh://admin@server1:2222"
        assert _prompt_name(client) == "server1"
    with Client(transport="process") as client:
        o = client.options
        assert (o.transport, o.host, o.port, o.username) == ("process", "", 0, "")
        assert _prompt_name(client) == "process"
    client = Client("server2", username="u", password="p")
    assert (client.options.transport, client.options.host) == ("wsman", "server2")
    assert _prompt_name(client) == "server2"
    client.close()
    # agent= takes ~ as ssh does; password='' is a password (only None falls back to the environment).
    with Client("h", transport="ssh", username="u", agent="~/agent.sock") as client:
        assert client.ssh is not None and client.ssh.agent_socket == os.path.expanduser("~/agent.sock")
    from psremote._options import ssh_transport

    monkeypatch.setenv("PSREMOTE_PASSWORD", "from-the-environment")
    common: Dict[str, Any] = dict(
        url=None, port=None, key_file=None, key_passphrase=None, agent=False, known_hosts=None,
        accept_unknown_host_key=False, subsystem="powershell",
    )  # fmt: skip
    assert ssh_transport("h", username="u", password="", **common).password == ""
    assert ssh_transport("h", username="u", password=None, **common).password == "from-the-environment"
    with pytest.raises(ConfigurationError, match="one way to log on"):
        ssh_transport("h", username="u", password="", **dict(common, agent=True))


def test_cli_over_ssh(server: sshd.SshServer) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PSREMOTE_PASSWORD", None)
    base = ["run", "127.0.0.1", "--transport", "ssh", "--port", str(server.port), "--user", server.info["user"]]
    done = subprocess.run(
        PSREMOTE + base + ["--key-file", server.info["user_key_path"], "--known-hosts", server.info["known_hosts_path"],
                           "-c", "Write-Output 'cli over ssh'; Write-Warning careful"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["cli over ssh"]
    assert "WARNING: careful" in done.stderr
    refused = subprocess.run(
        PSREMOTE + base + ["--key-file", server.info["user_key_path"], "--known-hosts",
                           server.info["changed_known_hosts_path"], "-c", "1"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "CHANGED" in refused.stderr and server.info["host_key_fingerprint"] in refused.stderr
    password = subprocess.run(
        PSREMOTE + ["run", "127.0.0.1", "--transport", "ssh", "--port", str(server.port), "--user",
                    server.info["password_user"], "--known-hosts", server.info["known_hosts_path"], "-c", "'pw'"],
        env=dict(env, PSREMOTE_PASSWORD=server.info["password"]), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert password.returncode == 0 and password.stdout.strip() == "pw", password.stderr
    misuse = subprocess.run(
        PSREMOTE + ["run", "127.0.0.1", "--user", "u", "--key-file", "/k", "-c", "1"],
        env=dict(env, PSREMOTE_PASSWORD="x"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert misuse.returncode != 0 and "--key-file apply to --transport ssh" in misuse.stderr
    # WS-Man's switches are usage errors with --transport ssh, not ignored.
    for extra, words in (
        (["--ignore-proxy"], "--ignore-proxy applies to --transport wsman, not ssh (SSH reads no proxy"),
        (["--https", "--auth", "ntlm"], "--auth, --https apply to --transport wsman, not ssh"),
        (["--configuration-name", "JEA"], "--configuration-name applies to --transport wsman"),
    ):
        wrong = subprocess.run(
            PSREMOTE + base + ["--key-file", server.info["user_key_path"], *extra, "-c", "1"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert wrong.returncode == 2 and words in wrong.stderr, wrong.stderr


def test_through_an_http_proxy(server: sshd.SshServer, tmp_path: Path) -> None:
    proxy = proxies.start_tinyproxy(tmp_path, auth=True)
    try:
        options = key_options(server, proxy=proxy.url, proxy_username=proxies.HTTP_USER,
                              proxy_password=proxies.HTTP_PASSWORD)  # fmt: skip
        with Client("127.0.0.1", **options) as client:
            assert client.run_ps("Write-Output 'through a tunnel'").output == ["through a tunnel"]
            assert proxies.HTTP_PASSWORD not in repr(client)
        with Client("127.0.0.1", **key_options(server, proxy=proxy.url)) as client:
            with pytest.raises(psremote.ProxyError):
                client.run_ps("1")
        # The CLI's --proxy and --proxy-user reach the SSH connection too (the password from
        # the environment): without the proxy's credentials the proxy refuses it, which a
        # connection made directly would not be.
        env = dict(os.environ, PYTHONUNBUFFERED="1", PSREMOTE_PROXY_PASSWORD=proxies.HTTP_PASSWORD)
        env.pop("PSREMOTE_PASSWORD", None)
        base = ["run", "127.0.0.1", "--transport", "ssh", "--port", str(server.port), "--user", server.info["user"],
                "--key-file", server.info["user_key_path"], "--known-hosts", server.info["known_hosts_path"],
                "--proxy", proxy.url]  # fmt: skip
        done = subprocess.run(
            PSREMOTE + base + ["--proxy-user", proxies.HTTP_USER, "-c", "Write-Output 'cli through a tunnel'"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0 and done.stdout.splitlines() == ["cli through a tunnel"], done.stderr
        refused = subprocess.run(PSREMOTE + base + ["-c", "1"], env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "proxy" in refused.stderr.lower(), refused.stderr
        assert proxies.HTTP_PASSWORD not in done.stderr + refused.stderr
    finally:
        log = proxy.stop()
    assert f"127.0.0.1:{server.port}" in log
