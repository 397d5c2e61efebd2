"""Options are validated when a client is constructed, before any I/O, with messages that
say what to change."""

from __future__ import annotations

from pathlib import Path

import pytest

import psremote
from psremote import AsyncClient, Client, ConfigurationError, SecurityPolicyError

# Negotiate falls back to NTLM, which the core refuses towards a host nothing vouches for; these
# tests are about other options, so every host is named in trusted_hosts.
BASE = {"username": "user", "password": "pw", "trusted_hosts": "*"}


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
        ({"auth": "certificate", "https": True}, "auth='certificate' needs client_certificate"),
        ({"auth": "basic", "allow_unencrypted": True, "encryption": "always"}, "cannot be met by auth='basic'"),
        ({"auth": "certificate", "https": True, "client_certificate": "c.pem", "encryption": "always"}, "cannot be met by auth='certificate'"),
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
        ({"ca_file": "ca.pem"}, "ca_file only apply to https"),
        ({"server_name": "x", "pinned_public_keys": ["00" * 32]}, "server_name, pinned_public_keys only apply to https"),
        ({"insecure_skip_verify": True}, "insecure_skip_verify only apply to https"),
        ({"client_certificate": "c.pem"}, "client_certificate only apply to https"),
        ({"https": True, "pinned_public_keys": ["abc"]}, "pinned_public_keys entry 'abc' is not a SHA-256 public-key pin"),
        ({"https": True, "pinned_public_keys": 5}, "pinned_public_keys must be a list of str"),
        ({"https": True, "min_tls_version": "1.1"}, "min_tls_version must be '1.2' or '1.3'"),
        ({"https": True, "max_tls_version": 1.3}, "max_tls_version must be '1.2' or '1.3'"),
        ({"https": True, "min_tls_version": "1.3", "max_tls_version": "1.2"}, "min_tls_version 1.3 is above max_tls_version 1.2"),
        ({"https": True, "insecure_skip_verify": "yes"}, "insecure_skip_verify must be True or False"),
        ({"https": True, "insecure_skip_verify": True, "ca_file": "ca.pem"}, "give one or the other"),
        ({"https": True, "client_key": "k.pem"}, "client_key needs client_certificate"),
        ({"https": True, "client_key_password": "x"}, "client_key_password needs client_certificate"),
        ({"https": True, "ca_file": "/no/such/ca.pem"}, "cannot read certificates from /no/such/ca.pem"),
        ({"https": True, "client_certificate": "/no/such/c.pem"}, "cannot read certificates from /no/such/c.pem"),
        ({"https": True, "server_name": ""}, "server_name must be a non-empty str"),
        ({"trusted_hosts": 5}, "trusted_hosts must be a list of str"),
        ({"trusted_hosts": ["ok", 5]}, "trusted_hosts entries must be str"),
        ({"trusted_hosts": "bad host!"}, "trusted_hosts entry 'bad host!' is not a host name"),
        ({"spn_service": ""}, "spn_service must be a non-empty str"),
        ({"spn_service": "HTTP/x", "auth": "ntlm"}, "SPN service class"),
        ({"delegate": "yes"}, "delegate must be True or False"),
        ({"audit_arguments": 1}, "audit_arguments must be True or False"),
        ({"kerberos_kdc": 5}, "kerberos_kdc must be a non-empty str"),
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
    with pytest.raises(ConfigurationError, match="unknown auth 'digest'"):
        AsyncClient("h", auth="digest", **BASE)
    with pytest.raises(ConfigurationError, match="ca_file only apply to https"):
        AsyncClient("h", ca_file="ca.pem", **BASE)


def test_password_from_environment(monkeypatch):
    monkeypatch.setenv("PSREMOTE_PASSWORD", "from-env")
    client = Client("h", username="u", trusted_hosts="h")
    assert client.options.password == ""
    monkeypatch.delenv("PSREMOTE_PASSWORD")
    with pytest.raises(ConfigurationError, match="PSREMOTE_PASSWORD"):
        Client("h", username="u", trusted_hosts="h")


def test_basic_over_http_is_refused_by_policy():
    with pytest.raises(SecurityPolicyError) as info:
        make(auth="basic")
    assert "allow_unencrypted" in str(info.value) and "https" in str(info.value)
    assert not isinstance(info.value, ConfigurationError)


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


def test_https_defaults_to_port_5986():
    client = make(https=True)
    assert client.url == "https://server.example:5986/wsman"
    assert Client(url="https://h/wsman", **BASE).options.port == 5986
    assert Client(url="https://h:443/x", **BASE).url == "https://h:443/x"


def test_trusted_hosts_accept_a_list_or_a_comma_string():
    assert make(trusted_hosts="srv1, *.example,10.0.0.*").options.trusted_hosts == ("srv1", "*.example", "10.0.0.*")
    assert make(trusted_hosts=["<local>", "server.example"]).options.trusted_hosts == ("<local>", "server.example")


def test_tls_options_are_kept():
    pin = "sha256/" + "AB" * 32
    client = make(
        https=True,
        server_name="name.example",
        pinned_public_keys=pin,
        min_tls_version="TLSv1.2",
        max_tls_version="1.3",
    )
    o = client.options
    assert (o.server_name, o.pinned_public_keys, o.min_tls_version, o.max_tls_version) == ("name.example", (pin,), "1.2", "1.3")


def test_the_client_key_password_stays_out_of_options_and_repr(test_certs):
    client = make(
        https=True,
        auth="certificate",
        client_certificate=test_certs["client"],
        client_key=Path(test_certs["client_key_encrypted"]),
        client_key_password=test_certs["client_key_password"],
        username=None,
        password=None,
    )
    assert client.options.client_key_password is None
    assert client.options.client_key == test_certs["client_key_encrypted"]
    assert test_certs["client_key_password"] not in repr(client) + repr(client.options)


def test_insecure_skip_verify_is_explicit():
    client = make(https=True, insecure_skip_verify=True)
    assert client.options.insecure_skip_verify is True
    assert "insecure_skip_verify" in psremote.Client.__doc__
