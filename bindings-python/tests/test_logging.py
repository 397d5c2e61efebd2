"""Logging goes through the standard logging module under "psremote", structured, and never
carries a secret."""

from __future__ import annotations

import logging
import time
from typing import List

import pytest

import psremote
from psremote import _logging

from conftest import PASSWORD, USER


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=1)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        parts = []
        for r in self.records:
            parts.append(r.getMessage())
            parts.append(repr(getattr(r, "psremote", None)))
        return "\n".join(parts)


@pytest.fixture
def collected():
    logger = logging.getLogger("psremote")
    handler = Collect()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        _logging.disable_trace()
        _logging.sync_native_level()


def settle(handler: Collect, predicate, timeout: float = 5.0) -> None:
    # Native records come through a forwarder thread.
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_records_arrive_under_psremote_with_fields(collected, credentials):
    with psremote.Client(**credentials) as client:
        client.run_ps("Write-Output logged")
    settle(collected, lambda: any(r.name == "psremote.client" and "connected" in r.getMessage() for r in collected.records))
    names = {r.name for r in collected.records}
    assert all(n == "psremote" or n.startswith("psremote.") for n in names)
    # (An earlier test's client may log its "disconnected" audit event meanwhile.)
    connected = [r for r in collected.records if r.getMessage().startswith("connected")]
    assert connected, names
    assert connected[0].psremote.get("mechanism") == "ntlm"
    started = [
        r for r in collected.records if r.name == "psremote.client" and r.getMessage().startswith("pipeline started")
    ]
    assert started and started[0].psremote["commands"] == ["<script>"]


def test_password_never_logged(collected, endpoint, credentials):
    secret_script = "ConvertTo-SecureString 'script-secret' -AsPlainText -Force"
    _logging.enable_trace()
    try:
        with psremote.Client(**credentials) as client:
            client.run_ps(secret_script)
            pool = client.runspace_pool()
            pool.powershell().add_command("Write-Output").add_argument(psremote.PSCredential("u", "cred-secret")).invoke()
            pool.close()
        with pytest.raises(psremote.AuthenticationError):
            psremote.Client(url=endpoint.url, username=USER, password="Wr0ng-Passw0rd", auth="ntlm", trusted_hosts="127.0.0.1").connect()
    finally:
        _logging.disable_trace()
    settle(collected, lambda: any("authentication" in r.getMessage().lower() or r.levelno >= logging.WARNING for r in collected.records), 2.0)
    time.sleep(0.3)
    text = collected.text()
    assert collected.records
    for secret in (PASSWORD, "Wr0ng-Passw0rd", "cred-secret"):
        assert secret not in text


def test_emit_maps_targets_and_redacts():
    handler = Collect()
    logger = logging.getLogger("psremote")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        _logging.emit(logging.INFO, "psremote::transport::connection", "hello", [("password", "x"), ("host", "h")])
        _logging.emit(logging.DEBUG, "sspi::ntlm", "dependency noise", {})
        _logging.emit(logging.WARNING, "sspi::utils", "Encryption using session key (not sub-session key)", {})
        _logging.emit(_logging.TRACE, "psremote::psrp", "payload", {})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    (record,) = handler.records
    assert record.name == "psremote.transport.connection"
    assert record.psremote == {"password": "***", "host": "h"}
    assert record.getMessage() == "hello password='***' host='h'"


def test_trace_is_an_explicit_opt_in():
    assert not _logging.trace_enabled()
    assert not _logging.enabled(_logging.TRACE, "psremote::psrp")
    _logging.enable_trace(level_logger=False)
    try:
        assert _logging.trace_enabled()
    finally:
        _logging.disable_trace()
