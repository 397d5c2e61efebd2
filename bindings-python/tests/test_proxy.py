"""Proxies from Python: ``proxy=``, ``proxy_username``/``proxy_password`` and ``ignore_proxy``
on Client and AsyncClient, through Debian's tinyproxy (HTTP CONNECT, Basic) and microsocks
(SOCKS5, user/password), started by these tests on 127.0.0.1
(``psremote_testserver.proxies``). The environment's ``http_proxy``/``no_proxy`` apply when no
proxy is given; a proxy that refuses or is unreachable raises ``ProxyError``.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List

import pytest

import psremote
from psremote import ConfigurationError, ConnectError, ProxyError, cli
from psremote_testserver import proxies
from psremote_testserver.proxies import HTTP_PASSWORD, HTTP_USER, SOCKS_PASSWORD, SOCKS_USER, Proxy

TRUSTED = ["127.0.0.1", "localhost"]


@pytest.fixture(scope="module")
def proxy_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("proxies")


@pytest.fixture(scope="module")
def tinyproxy_auth(proxy_dir) -> Iterator[Proxy]:
    proxy = proxies.start_tinyproxy(proxy_dir, auth=True)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def tinyproxy(proxy_dir) -> Iterator[Proxy]:
    proxy = proxies.start_tinyproxy(proxy_dir)
    yield proxy
    proxy.stop()


@pytest.fixture
def microsocks(proxy_dir) -> Iterator[Proxy]:
    """A SOCKS5 proxy with a logon, per test: its log says what each test asked for."""
    proxy = proxies.start_microsocks(proxy_dir, auth=True, scheme="socks5h")
    yield proxy
    proxy.stop()


def kwargs(endpoint, **extra):
    options = dict(url=endpoint.url, username="user", password="Passw0rd!", auth="ntlm", trusted_hosts=TRUSTED)
    options.update(extra)
    return options


def test_through_tinyproxy_with_credentials_in_the_url_or_apart(endpoint, tinyproxy_auth, psremote_records):
    in_url = f"http://{HTTP_USER}:{HTTP_PASSWORD}@127.0.0.1:{tinyproxy_auth.port}"
    with psremote.Client(**kwargs(endpoint, proxy=in_url)) as client:
        assert client.run_ps("Write-Output through-connect").output == ["through-connect"]
        info = client.connection_info
        assert info is not None
        assert (info.proxy, info.encryption, info.negotiated) == (tinyproxy_auth.url, "message-encryption", "ntlm")
        # What Python keeps shows no proxy secret.
        assert client.options.proxy == tinyproxy_auth.url
        assert HTTP_PASSWORD not in repr(client.options) and HTTP_PASSWORD not in repr(client)
    apart = kwargs(endpoint, proxy=tinyproxy_auth.url, proxy_username=HTTP_USER, proxy_password=HTTP_PASSWORD)
    with psremote.Client(**apart) as client:
        assert client.run_ps("1 + 1").output == [2]
        assert client.options.proxy_password is None
    connects = [r for r in psremote_records if getattr(r, "psremote", {}).get("event") == "connect"]
    assert connects and all(r.psremote.get("proxy") == tinyproxy_auth.url for r in connects)
    for record in psremote_records:
        assert HTTP_PASSWORD not in record.getMessage()


def test_asyncio_through_socks5h_sends_the_name(endpoint, microsocks):
    url = endpoint.url.replace("127.0.0.1", "localhost")

    async def main() -> List[object]:
        async with psremote.AsyncClient(
            **kwargs(endpoint, url=url, proxy=microsocks.url, proxy_username=SOCKS_USER, proxy_password=SOCKS_PASSWORD)
        ) as client:
            result = await client.run_ps("Write-Output socks")
            info = client.connection_info
            assert info is not None and info.proxy == microsocks.url
            return result.output

    assert asyncio.run(main()) == ["socks"]
    log = microsocks.stop()
    assert f"connected to localhost:{endpoint.port}" in log


def test_proxy_failures_are_proxy_errors(endpoint, tinyproxy_auth, microsocks):
    with pytest.raises(ProxyError) as info:
        psremote.Client(**kwargs(endpoint, proxy=tinyproxy_auth.url, proxy_username=HTTP_USER, proxy_password="wrong")).connect()
    err = info.value
    assert (err.proxy, err.reason, err.status) == (tinyproxy_auth.url, "authentication", 401)
    assert isinstance(err, ConnectError) and isinstance(err, ConnectionError)
    assert "wrong" not in str(err) and tinyproxy_auth.url in str(err)

    with pytest.raises(ProxyError) as info:
        psremote.Client(**kwargs(endpoint, proxy=tinyproxy_auth.url)).connect()
    assert (info.value.reason, info.value.status) == ("authentication", 407)

    with pytest.raises(ProxyError) as info:
        psremote.Client(**kwargs(endpoint, proxy=microsocks.url)).connect()
    assert (info.value.reason, info.value.status) == ("authentication", None)

    dead = f"socks5://127.0.0.1:{proxies.free_port()}"
    with pytest.raises(ProxyError) as info:
        psremote.Client(**kwargs(endpoint, proxy=dead)).connect()
    assert (info.value.proxy, info.value.reason) == (dead, "unreachable")

    # Through a working proxy to a port where nothing listens: tinyproxy's 500.
    nothing = f"http://127.0.0.1:{proxies.free_port()}/wsman"
    auth = f"http://{HTTP_USER}:{HTTP_PASSWORD}@127.0.0.1:{tinyproxy_auth.port}"
    with pytest.raises(ProxyError) as info:
        psremote.Client(**kwargs(endpoint, url=nothing, proxy=auth)).connect()
    assert (info.value.reason, info.value.status) == ("refused", 500)


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(proxy="https://u:topsecret@127.0.0.1:1"), "https://"),
        (dict(proxy="socks4://127.0.0.1:1"), "SOCKS4"),
        (dict(proxy="http://u:topsecret@127.0.0.1:99999"), "port"),
        (dict(proxy=""), "proxy must be a URL"),
        (dict(proxy=3128), "proxy must be a URL"),
        (dict(proxy="http://127.0.0.1:1", proxy_password="topsecret"), "proxy_password needs proxy_username"),
        (dict(ignore_proxy="yes"), "ignore_proxy"),
    ],
)
def test_bad_proxy_options_are_configuration_errors(endpoint, options, words):
    with pytest.raises(ConfigurationError) as info:
        psremote.Client(**kwargs(endpoint, **options))
    assert words in str(info.value)
    assert "topsecret" not in str(info.value)


def test_the_environment_is_honoured_unless_ignored(endpoint, tinyproxy, monkeypatch):
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", tinyproxy.url)
    with psremote.Client(**kwargs(endpoint)) as client:
        assert client.run_ps("'env'").output == ["env"]
        assert client.connection_info is not None and client.connection_info.proxy == tinyproxy.url
    with psremote.Client(**kwargs(endpoint, ignore_proxy=True)) as client:
        client.connect()
        assert client.connection_info is not None and client.connection_info.proxy is None
    # The variables are read once, when the client is made.
    pinned = psremote.Client(**kwargs(endpoint))
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxies.free_port()}")
    with pinned:
        pinned.connect()
        assert pinned.connection_info is not None and pinned.connection_info.proxy == tinyproxy.url
    monkeypatch.setenv("no_proxy", "127.0.0.0/8")
    with psremote.Client(**kwargs(endpoint)) as client:
        client.connect()
        assert client.connection_info is not None and client.connection_info.proxy is None
    # An explicit proxy is used whatever no_proxy says.
    monkeypatch.setenv("no_proxy", "*")
    with psremote.Client(**kwargs(endpoint, proxy=tinyproxy.url)) as client:
        client.connect()
        assert client.connection_info is not None and client.connection_info.proxy == tinyproxy.url
    log = tinyproxy.stop()
    assert log.count(f"CONNECT 127.0.0.1:{endpoint.port}") >= 2


def test_fleet_hosts_share_the_proxy(endpoint, tinyproxy_auth):
    auth = f"http://{HTTP_USER}:{HTTP_PASSWORD}@127.0.0.1:{tinyproxy_auth.port}"
    hosts = [endpoint.url, endpoint.url.replace("127.0.0.1", "localhost")]
    common = dict(username="user", password="Passw0rd!", auth="ntlm", trusted_hosts=TRUSTED)
    results = sorted(psremote.run_many(hosts, "Write-Output fleet", proxy=auth, **common), key=lambda r: r.index)
    assert [(r.status, r.result.output if r.result else r.error) for r in results] == [("Succeeded", ["fleet"])] * 2
    # A proxy that is down leaves every host unreachable, as a dead host would.
    dead = f"http://127.0.0.1:{proxies.free_port()}"
    results = list(psremote.run_many(hosts, "Write-Output fleet", proxy=dead, **common))
    assert [r.status for r in results] == ["Unreachable"] * 2
    assert all(isinstance(r.error, ProxyError) for r in results)


def test_logging_names_the_proxy_never_its_password(endpoint, tinyproxy_auth, caplog):
    caplog.set_level(logging.DEBUG, logger="psremote")
    auth = f"http://{HTTP_USER}:{HTTP_PASSWORD}@127.0.0.1:{tinyproxy_auth.port}"
    with psremote.Client(**kwargs(endpoint, proxy=auth)) as client:
        client.connect()
    assert HTTP_PASSWORD not in caplog.text


# --- the command line ------------------------------------------------------------------------


def run_cli(args, env):
    return subprocess.run([sys.executable, "-m", "psremote", *args], env=env, capture_output=True, text=True, timeout=60)


def test_cli_proxy_options(child_env, endpoint, tinyproxy_auth):
    base = ["run", "--url", endpoint.url, "--auth", "ntlm", "-c", "Write-Output via-cli"]
    env = dict(child_env, PSREMOTE_PROXY_PASSWORD=HTTP_PASSWORD)
    done = run_cli([*base, "--proxy", tinyproxy_auth.url, "--proxy-user", HTTP_USER], env)
    assert (done.returncode, done.stdout) == (0, "via-cli\n"), done.stderr

    wrong = run_cli([*base, "--proxy", tinyproxy_auth.url, "--proxy-user", HTTP_USER], dict(env, PSREMOTE_PROXY_PASSWORD="wrong"))
    assert wrong.returncode == cli.EXIT_CONNECTION and "ProxyError" in wrong.stderr and "wrong" not in wrong.stderr

    in_url = f"http://{HTTP_USER}:{HTTP_PASSWORD}@127.0.0.1:{tinyproxy_auth.port}"
    refused = run_cli([*base, "--proxy", in_url], env)
    assert refused.returncode == cli.EXIT_USAGE and "PSREMOTE_PROXY_PASSWORD" in refused.stderr
    assert HTTP_PASSWORD not in refused.stderr


def test_cli_ignores_the_environment_on_request(child_env, endpoint):
    env = {k: v for k, v in child_env.items() if k.lower() != "no_proxy"}
    env["http_proxy"] = f"http://127.0.0.1:{proxies.free_port()}"
    base = ["run", "--url", endpoint.url, "--auth", "ntlm", "-c", "Write-Output direct"]
    through_dead = run_cli(base, env)
    assert through_dead.returncode == cli.EXIT_CONNECTION and "ProxyError" in through_dead.stderr
    for switch in ("--ignore-proxy", "--no-proxy"):
        done = run_cli([*base, switch], env)
        assert (done.returncode, done.stdout) == (0, "direct\n"), done.stderr
