"""Options are validated when a client is constructed, before any I/O, with messages that
say what to change."""

from __future__ import annotations

import pytest

import psremote
from psremote import AsyncClient, Client, ConfigurationError

BASE = {"username": "user", "password": "pw"}


def make(**kwargs):
    args = dict(BASE)
    args.update(kwargs)
    host = args.pop("host", "server.example")
    return Client(host, **args)


def test_defaults_build_the_url():
    client = make()
    assert client.url == "http://server.example:5985/wsman"
    assert client.options.auth == "negotiate"
    assert client.options.port == 5985
    # Constructing does no I/O and keeps no password on the Python side.
    assert client.options.password == ""
    assert "pw" not in repr(client)
    client.close()


def test_url_form_sets_host_port_and_path():
    client = Client(url="http://10.0.0.1:1234/custom", **BASE)
    assert (client.options.host, client.options.port, client.options.path) == ("10.0.0.1", 1234, "/custom")
    assert client.url == "http://10.0.0.1:1234/custom"
    # A URL as the first argument works too.
    assert Client("http://h:5985/wsman", **BASE).options.host == "h"


def test_ipv6_host():
    client = Client(url="http://[::1]:5985/wsman", **BASE)
    assert client.options.host == "::1"


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"port": 0}, "port must be between 1 and 65535"),
        ({"port": 70000}, "port must be between 1 and 65535"),
        ({"port": "5985"}, "port must be an int"),
        ({"port": True}, "port must be an int"),
        ({"auth": "digest"}, "unknown auth 'digest'"),
        ({"auth": "kerberos"}, "not supported yet"),
        ({"auth": "credssp"}, "not supported yet"),
        ({"auth": "certificate"}, "not supported yet"),
        ({"https": True}, "https is not supported yet"),
        ({"auth": "basic"}, "allow_unencrypted=True"),
        ({"auth": "basic", "allow_unencrypted": True, "encryption": "always"}, "cannot be met by basic"),
        ({"encryption": "never"}, "only possible with auth='basic'"),
        ({"encryption": "sometimes"}, "unknown encryption policy"),
        ({"operation_timeout": 0}, "operation_timeout must be a positive number"),
        ({"operation_timeout": -5}, "operation_timeout must be a positive number"),
        ({"operation_timeout": 0.5}, "operation_timeout must be at least 1 seconds"),
        ({"operation_timeout": float("nan")}, "operation_timeout must be a positive number"),
        ({"connect_timeout": 0}, "connect_timeout must be a positive number"),
        ({"connect_timeout": "10"}, "connect_timeout must be a number of seconds"),
        ({"max_envelope_size": 1000}, "below the WS-Man minimum of 8192"),
        ({"max_envelope_size": 2**40}, "does not fit in 32 bits"),
        ({"locale": "english please"}, "not a language tag"),
        ({"data_locale": "??"}, "not a language tag"),
        ({"configuration_name": "bad name!"}, "is not a session configuration name"),
        ({"configuration_name": ""}, "is not a session configuration name"),
        ({"path": "wsman"}, "path must start with '/'"),
        ({"host": ""}, "host is required"),
        ({"host": "bad host/x"}, "is not a host name"),
        ({"username": ""}, "username is required"),
        ({"url": "ftp://x/wsman", "host": None}, "must start with http"),
        ({"url": "http://h:99999/wsman", "host": None}, "cannot read URL"),
        ({"url": "https://h/wsman", "host": None}, "https is not supported yet"),
        ({"url": "http://h/wsman", "host": "h"}, "either host or url"),
    ],
)
def test_invalid_options_say_what_to_change(kwargs, words):
    with pytest.raises(ConfigurationError) as info:
        make(**kwargs)
    assert words in str(info.value)
    # ConfigurationError is a ValueError too, and part of the one hierarchy.
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, psremote.PSRemoteError)


def test_async_client_validates_the_same(monkeypatch):
    with pytest.raises(ConfigurationError, match="not supported yet"):
        AsyncClient("h", auth="kerberos", **BASE)


def test_password_from_environment(monkeypatch):
    monkeypatch.setenv("PSREMOTE_PASSWORD", "from-env")
    client = Client("h", username="u")
    assert client.options.password == ""
    monkeypatch.delenv("PSREMOTE_PASSWORD")
    with pytest.raises(ConfigurationError, match="PSREMOTE_PASSWORD"):
        Client("h", username="u")


def test_basic_needs_explicit_opt_in(caplog):
    client = make(auth="basic", allow_unencrypted=True)
    assert client.options.auth == "basic"
    assert any("plaintext" in r.getMessage() for r in caplog.records if r.name.startswith("psremote"))
    # The warning never carries the password.
    assert all("pw" not in r.getMessage().split() for r in caplog.records)


def test_configuration_name_accepts_resource_uri():
    client = make(configuration_name="http://schemas.microsoft.com/powershell/JEAMaintenance")
    assert client.options.configuration_name == "JEAMaintenance"


def test_auth_names_are_case_insensitive():
    assert make(auth="NTLM").options.auth == "ntlm"


def test_runspace_pool_arguments_are_validated():
    client = make()
    with pytest.raises(ConfigurationError, match="min_runspaces"):
        client.runspace_pool(min_runspaces=0)
    with pytest.raises(ConfigurationError, match="max_runspaces"):
        client.runspace_pool(min_runspaces=2, max_runspaces=1)
    with pytest.raises(ConfigurationError, match="host must be a psremote.PSHost"):
        client.runspace_pool(host=object())
    with pytest.raises(ConfigurationError, match="configuration name"):
        client.runspace_pool("no spaces allowed")


def test_closed_client_raises_closed_error():
    client = make()
    client.close()
    client.close()  # twice is fine
    with pytest.raises(psremote.ClosedError):
        client.run_ps("Get-Date")
    with pytest.raises(psremote.ClosedError):
        client.run_cmd("echo")
