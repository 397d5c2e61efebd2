"""The psremote.remote.psremote connection plugin under ansible-core (from PyPI), against the
loopback endpoints: `ansible -m raw` over 50 inventory hosts, the same inventory with the built-in
psrp plugin (pypsrp), return codes and errors, the security rule for NTLM, put_file/fetch_file
through Ansible's workers and through Ansible's plugin loader, pipelined input, reset and close.
Every test ends with nothing open on any endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re

import pytest
from conftest import PLUGIN, assert_clean, logons, write_inventory

HOSTS = 50
HELLO = "Write-Output 'hello from {{ inventory_hostname }}'"


def test_raw_on_50_hosts(endpoints, run_ansible, tmp_path):
    names = write_inventory(tmp_path / "hosts.ini", endpoints, HOSTS)
    before = logons(endpoints)
    run = run_ansible(tmp_path / "hosts.ini", PLUGIN, "raw", HELLO)
    assert run.process.returncode == 0, run.output()
    assert sorted(run.results) == names
    assert len(set(re.findall(r"ansible_host=(\S+)", (tmp_path / "hosts.ini").read_text()))) == HOSTS
    for name in names:
        result = run.results[name]
        assert result["rc"] == 0 and "msg" not in result, (name, result)
        assert result["stdout"] == f"hello from {name}"
        assert result["stderr"] == ""
    # Each host logged on at its endpoint (one connection per host and task).
    assert logons(endpoints) - before >= HOSTS
    assert_clean(endpoints)


def test_same_inventory_with_the_psrp_plugin(endpoints, run_ansible, tmp_path):
    # Switching is changing ansible_connection: the built-in psrp plugin (pypsrp) runs the same
    # inventory (the ansible_psrp_* variables) to the same results.
    names = write_inventory(tmp_path / "hosts.ini", endpoints, HOSTS)
    run = run_ansible(tmp_path / "hosts.ini", "psrp", "raw", HELLO)
    assert run.process.returncode == 0, run.output()
    assert sorted(run.results) == names
    for name in names:
        result = run.results[name]
        assert (result["rc"], result["stdout"].rstrip("\r\n")) == (0, f"hello from {name}")
    assert_clean(endpoints)


@pytest.mark.parametrize("connection", [PLUGIN, "psrp"])
def test_return_codes_and_errors(endpoints, run_ansible, tmp_path, connection):
    write_inventory(tmp_path / "hosts.ini", endpoints, 3)
    script = "Write-Output out; Write-Host host -NoNewline; Write-Host line; exit 3"
    results = run_ansible(tmp_path / "hosts.ini", connection, "raw", script, pattern="win01").results
    assert results["win01"]["rc"] == 3 and results["win01"]["msg"] == "non-zero return code"
    assert results["win01"]["stdout"].rstrip("\r\n").startswith("out\r\nhost")
    assert results["win01"]["stdout"].rstrip("\r\n").endswith("line")

    # A non-terminating error shows in stderr and leaves the return code at 0 (as psrp does).
    results = run_ansible(tmp_path / "hosts.ini", connection, "raw", "Write-Error -Message boom; 'after'", pattern="win02").results
    result = results["win02"]
    assert result["rc"] == 0 and result["stdout"].rstrip("\r\n") == "after"
    assert "boom\r\n" in result["stderr"]
    assert "FullyQualifiedErrorId : Microsoft.PowerShell.Commands.WriteErrorException" in result["stderr"]

    results = run_ansible(tmp_path / "hosts.ini", connection, "raw", "Invoke-Failure broken", pattern="win03").results
    assert results["win03"]["rc"] == 1 and "broken" in results["win03"]["stderr"]
    assert_clean(endpoints)


def test_ntlm_over_http_needs_trusted_hosts(endpoints, run_ansible, tmp_path):
    # psremote never sends NTLM to a server nothing vouches for: without the trusted hosts the
    # task fails before a byte is sent, and the message names the variable.
    write_inventory(tmp_path / "hosts.ini", endpoints, 2, ansible_psremote_trusted_hosts=None)
    requests = [e.state()["requests"] for e in endpoints]
    run = run_ansible(tmp_path / "hosts.ini", PLUGIN, "raw", HELLO)
    assert run.process.returncode != 0
    for name in ("win01", "win02"):
        result = run.results[name]
        assert not result.get("unreachable"), result
        assert "refused by security policy" in result["msg"], result["msg"]
        assert "ansible_psremote_trusted_hosts" in result["msg"], result["msg"]
    assert [e.state()["requests"] for e in endpoints] == requests

    # A trusted-hosts pattern that does not match is refused the same way.
    write_inventory(tmp_path / "other.ini", endpoints, 1, ansible_psremote_trusted_hosts="10.0.0.*")
    run = run_ansible(tmp_path / "other.ini", PLUGIN, "raw", HELLO)
    assert "ansible_psremote_trusted_hosts" in run.results["win01"]["msg"]
    assert [e.state()["requests"] for e in endpoints] == requests


def test_https_certificate_validation(https_endpoint, run_ansible, tmp_path):
    endpoint, certs = https_endpoint
    https = dict(ansible_psrp_protocol="https", ansible_psremote_trusted_hosts=None)

    # A certificate that verifies (the CA from ansible_psrp_ca_cert) proves the server: NTLM
    # needs no trusted hosts then.
    write_inventory(tmp_path / "ca.ini", [endpoint], 2, ansible_psrp_ca_cert=certs["ca"], **https)
    run = run_ansible(tmp_path / "ca.ini", PLUGIN, "raw", HELLO)
    assert run.process.returncode == 0, run.output()
    assert [run.results[n]["stdout"] for n in ("win01", "win02")] == ["hello from win01", "hello from win02"]

    # Without the CA the certificate does not verify: unreachable, nothing run.
    write_inventory(tmp_path / "noca.ini", [endpoint], 1, **https)
    run = run_ansible(tmp_path / "noca.ini", PLUGIN, "raw", HELLO)
    assert run.results["win01"].get("unreachable"), run.results["win01"]

    # cert_validation=ignore skips the check (warned), and then nothing proves the server:
    # NTLM is refused again until the host is named as trusted.
    write_inventory(tmp_path / "ignore.ini", [endpoint], 1, ansible_psrp_cert_validation="ignore", **https)
    run = run_ansible(tmp_path / "ignore.ini", PLUGIN, "raw", HELLO)
    assert "ansible_psremote_trusted_hosts" in run.results["win01"]["msg"], run.results["win01"]
    write_inventory(
        tmp_path / "trusted.ini", [endpoint], 1, ansible_psrp_cert_validation="ignore",
        **{**https, "ansible_psremote_trusted_hosts": "127.0.0.1"},
    )  # fmt: skip
    run = run_ansible(tmp_path / "trusted.ini", PLUGIN, "raw", HELLO)
    assert run.results["win01"]["stdout"] == "hello from win01", run.output()
    assert "[WARNING]: psremote:" in run.process.stderr and "verif" in run.process.stderr, run.output()
    assert_clean([endpoint])


def test_wrong_password_is_unreachable(endpoints, run_ansible, tmp_path):
    write_inventory(tmp_path / "hosts.ini", endpoints, 2, ansible_password="wrong")
    run = run_ansible(tmp_path / "hosts.ini", PLUGIN, "raw", HELLO)
    assert run.process.returncode != 0
    for name in ("win01", "win02"):
        assert run.results[name].get("unreachable"), run.results[name]
    assert_clean(endpoints)


def test_put_and_fetch_through_ansible(endpoints, run_ansible, tmp_path):
    # put_file then fetch_file per host, run by Ansible's workers (tests/action_plugins).
    count = 10
    write_inventory(tmp_path / "hosts.ini", endpoints, count)
    remote, back = tmp_path / "remote", tmp_path / "back"
    remote.mkdir()
    back.mkdir()
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(700_000))
    args = f"src={source} remote={remote}/{{{{ inventory_hostname }}}}.bin dest={back}/{{{{ inventory_hostname }}}}.bin"
    run = run_ansible(tmp_path / "hosts.ini", PLUGIN, "psremote_roundtrip", args)
    assert run.process.returncode == 0, run.output()
    digest = hashlib.sha1(source.read_bytes()).hexdigest()
    for i in range(count):
        name = f"win{i + 1:02d}"
        assert run.results[name]["changed"], run.results[name]
        assert hashlib.sha1((remote / f"{name}.bin").read_bytes()).hexdigest() == digest
        assert hashlib.sha1((back / f"{name}.bin").read_bytes()).hexdigest() == digest
    assert_clean(endpoints)


def test_put_and_fetch_through_the_plugin_loader(endpoints, new_connection, tmp_path):
    from ansible.errors import AnsibleFileNotFound

    endpoint = endpoints[0]
    connection = new_connection(endpoint)
    assert type(connection).__module__ == "ansible_collections.psremote.remote.plugins.connection.psremote"
    remote = tmp_path / "remote dir"
    remote.mkdir()
    for size in (0, 1, 3_000_000):
        source = tmp_path / f"in-{size}"
        source.write_bytes(os.urandom(size))
        connection.put_file(str(source), str(remote / f"copy-{size}"))
        assert (remote / f"copy-{size}").read_bytes() == source.read_bytes()
        # The shell plugin may hand over a quoted path; the plugin unquotes it as psrp does.
        dest = tmp_path / f"out-{size}"
        connection.fetch_file(f"'{remote / f'copy-{size}'}'", str(dest))
        assert dest.read_bytes() == source.read_bytes()

    # A remote directory is not transferred (as with psrp: the caller makes the directory).
    connection.fetch_file(str(remote), str(tmp_path / "dir-copy"))
    assert not (tmp_path / "dir-copy").exists()
    with pytest.raises(AnsibleFileNotFound):
        connection.fetch_file(str(remote / "missing"), str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()
    with pytest.raises(AnsibleFileNotFound):
        connection.put_file(str(tmp_path / "no-such-file"), str(remote / "never"))
    assert not (remote / "never").exists()
    connection.close()
    assert_clean([endpoint])


def test_pipelined_input_reset_and_close(endpoints, new_connection):
    from ansible.plugins.shell.powershell import _common_args

    endpoint = endpoints[1]
    # The psremote variable wins over psrp's when both are set.
    connection = new_connection(endpoint, ansible_psrp_path="nowhere", ansible_psremote_path="/wsman")
    # How Ansible starts a pipelined PowerShell module: an encoded script, and the module's data
    # as in_data, which reaches the script as pipeline input one line per object.
    script = base64.b64encode("Write-Output".encode("utf-16-le")).decode()
    cmd = " ".join(_common_args) + " -EncodedCommand " + script
    rc, stdout, stderr = connection.exec_command(cmd, in_data=b'{"json": 1}\nsecond line\n\x00\x00\x00\x00\nrest')
    assert (rc, stdout, stderr) == (0, b'{"json": 1}\r\nsecond line\r\n\x00\x00\x00\x00\r\nrest', b"")
    assert endpoint.state()["pools"] == 1

    rc, stdout, _ = connection.exec_command("'still here'; exit 7")
    assert (rc, stdout) == (7, b"still here")

    connection.reset()  # a new client and pool; the old pool is deleted on the server
    assert endpoint.wait_state("pools", 1)["pools"] == 1
    assert connection.exec_command("Write-Output again") == (0, b"again", b"")
    connection.close()
    assert_clean([endpoint])
    # A closed connection connects again when it is used, as Ansible expects.
    assert connection.exec_command("Write-Output back")[1] == b"back"
    connection.close()
    assert_clean([endpoint])


def test_proxy_variables(endpoints, new_connection, tmp_path, monkeypatch):
    from ansible.errors import AnsibleConnectionFailure, AnsibleError

    from psremote_testserver import proxies

    endpoint = endpoints[0]
    tiny = proxies.start_tinyproxy(tmp_path / "proxy", auth=True)
    try:
        url = f"http://{proxies.HTTP_USER}:{proxies.HTTP_PASSWORD}@127.0.0.1:{tiny.port}"
        connection = new_connection(endpoint, ansible_psrp_proxy=url)
        rc, stdout, _ = connection.exec_command("'through the proxy'")
        assert (rc, stdout) == (0, b"through the proxy")
        connection.close()

        # psrp's ignore_proxy: the controller's proxy variables are not read.
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxies.free_port()}")
        with pytest.raises((AnsibleConnectionFailure, AnsibleError)) as info:
            new_connection(endpoint).exec_command("'never'")
        assert "proxy" in str(info.value)
        direct = new_connection(endpoint, ansible_psrp_ignore_proxy=True)
        assert direct.exec_command("'direct'")[:2] == (0, b"direct")
        direct.close()
    finally:
        monkeypatch.undo()  # the endpoint's control URL is read with urllib, which reads http_proxy too
        log = tiny.stop()
    assert f"CONNECT 127.0.0.1:{endpoint.port}" in log
    assert_clean([endpoint])
