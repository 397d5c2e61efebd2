"""The audit trail and secrets hygiene, seen through Python's logging.

A whole session (a refused logon, NTLM with message encryption, a runspace pool, the session
key exchange, a SecureString sent as a parameter and echoed back, a cmd command) runs with
payload tracing on (``psremote.enable_trace()``) and a handler at the lowest level on the
``psremote`` logger tree. The audit events (logger ``psremote.audit``) must be there with their
fields; the password, the SecureString's plaintext and every session key the endpoint generated
(from its control state: hex, upper-case hex, base64, byte lists) must appear nowhere in any
record, formatted in full (message, args, ``record.__dict__`` with the structured fields).
Arguments reach the audit records only with ``audit_arguments=True``.

The endpoint here is the module's own, with an account whose password no other test uses, so
that no unrelated text can match it by accident.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest

import psremote
from psremote import AuthenticationError, SecureString, _logging
from psremote_testserver.testing import Endpoint, launch

SECRET_PASSWORD = "Zq7!py-unique-Pa55word"
WRONG_PASSWORD = "Wrong-Typed-Py-Secret-991"
SECURE_PLAINTEXT = "launch-code-py-4471-xyzzy"
DOMAIN_USER = "DOMAIN\\user"
TRUSTED = ["127.0.0.1"]

# Every audit event of a session, in the order they first happen.
SESSION_EVENTS = (
    "connect",
    "pool_open",
    "pipeline_start",
    "pipeline_end",
    "shell_open",
    "command_start",
    "command_end",
    "shell_close",
    "pool_close",
)


@pytest.fixture(scope="module")
def secret_endpoint(tmp_path_factory) -> Iterator[Endpoint]:
    directory = tmp_path_factory.mktemp("audit-endpoint")
    users = directory / "users"
    users.write_text(f"DOMAIN:user:{SECRET_PASSWORD}\n")
    endpoint = launch(users, directory)
    try:
        yield endpoint
    finally:
        endpoint.stop()


class Capture(logging.Handler):
    """Keeps every record, at every level."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(level=1)
        self.endpoint = endpoint
        self.records: List[logging.LogRecord] = []
        self.lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.lock_records:
            self.records.append(record)

    def snapshot(self) -> List[logging.LogRecord]:
        with self.lock_records:
            return list(self.records)

    def audit(self, event: str) -> List[logging.LogRecord]:
        """The audit records of `event` about this module's endpoint (a client of an earlier
        test may still log its own, e.g. when it is dropped)."""
        return [
            r
            for r in self.snapshot()
            if r.name == "psremote.audit" and fields(r).get("event") == event and fields(r).get("endpoint") == self.endpoint
        ]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Native records reach logging through a forwarder thread: poll for them."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


def fields(record: logging.LogRecord) -> Dict[str, Any]:
    return getattr(record, "psremote", None) or {}


_FORMATTER = logging.Formatter(
    "%(asctime)s %(name)s %(levelno)s %(levelname)s %(pathname)s %(filename)s %(module)s %(lineno)d "
    "%(funcName)s %(thread)d %(threadName)s %(process)d %(processName)s %(message)s"
)


def full_text(record: logging.LogRecord) -> str:
    """The record as any handler could render it: formatted (with the exception, if any), the
    message, its template and args (each as str and repr), and every attribute (the structured
    ``psremote`` fields included)."""
    parts = [_FORMATTER.format(record), record.getMessage(), str(record.msg), repr(record.msg)]
    args = record.args if isinstance(record.args, tuple) else (record.args,)
    for arg in args or ():
        parts.append(str(arg))
        parts.append(repr(arg))
    for key, value in fields(record).items():
        parts.append(f"{key}={value!s} {value!r}")
    parts.append(repr(record.__dict__))
    return "\n".join(parts)


@pytest.fixture
def captured(secret_endpoint) -> Iterator[Capture]:
    """Payload tracing on, and every record of the ``psremote`` tree kept (set up before any
    client is created, so the native side forwards everything)."""
    logger = logging.getLogger("psremote")
    handler = Capture(secret_endpoint.url)
    old_level = logger.level
    logger.addHandler(handler)
    psremote.enable_trace()
    logger.setLevel(1)
    _logging.sync_native_level()
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        psremote.disable_trace()
        _logging.sync_native_level()


def secret_needles(session_keys: List[str]) -> List[str]:
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    needles = [
        SECRET_PASSWORD,
        WRONG_PASSWORD,
        SECURE_PLAINTEXT,
        b64(SECRET_PASSWORD.encode()),
        b64(SECURE_PLAINTEXT.encode()),
        b64(SECRET_PASSWORD.encode("utf-16-le")),
        b64(SECURE_PLAINTEXT.encode("utf-16-le")),
        SECRET_PASSWORD.encode("utf-16-le").hex(),
        SECURE_PLAINTEXT.encode("utf-16-le").hex(),
        str(list(SECRET_PASSWORD.encode("utf-16-le"))),
    ]
    for key in session_keys:
        data = bytes.fromhex(key)
        assert len(data) >= 16, key
        needles += [
            key.lower(),
            key.upper(),
            b64(data),
            base64.urlsafe_b64encode(data).decode(),
            str(list(data)),  # also Rust's Debug of a byte vector
            str(list(data[:16])),
            repr(data),
            data.hex(":"),
        ]
    return needles


def test_a_whole_session_is_audited_and_leaks_no_secret(secret_endpoint, captured):
    leaked_text: List[str] = []  # errors and reprs produced on the way

    # A wrong password first: neither the error nor the logs may echo what was typed.
    with pytest.raises(AuthenticationError) as info:
        psremote.Client(url=secret_endpoint.url, username=DOMAIN_USER, password=WRONG_PASSWORD, auth="ntlm", trusted_hosts=TRUSTED).connect()
    leaked_text += [str(info.value), repr(info.value)]

    client = psremote.Client(url=secret_endpoint.url, username=DOMAIN_USER, password=SECRET_PASSWORD, auth="ntlm", trusted_hosts=TRUSTED)
    leaked_text += [repr(client), repr(client.options)]
    with client:
        info_ = client.connection_info
        assert info_ is not None and (info_.negotiated, info_.encryption) == ("ntlm", "message-encryption")
        pool = client.runspace_pool()
        secret = SecureString(SECURE_PLAINTEXT)
        ps = pool.powershell().add_command("Write-Output").add_parameter("InputObject", secret)
        leaked_text += [repr(secret), repr(ps), repr(pool)]
        result = ps.invoke()
        leaked_text.append(repr(result))
        (back,) = result.output
        assert isinstance(back, SecureString) and back.get_value() == SECURE_PLAINTEXT
        # A PSCredential travels the same way (its password as a SecureString).
        cred = psremote.PSCredential(DOMAIN_USER, SECURE_PLAINTEXT)
        (cred_back,) = pool.powershell().add_command("Write-Output").add_argument(cred).invoke().output
        assert cred_back.password.get_value() == SECURE_PLAINTEXT
        out = client.run_cmd("echo", ["unlogged-arg-8812"])
        assert out.text.strip() == "unlogged-arg-8812"
        pool.close()

    assert captured.wait_for(lambda: all(captured.audit(e) for e in SESSION_EVENTS)), {
        e: len(captured.audit(e)) for e in SESSION_EVENTS
    }
    records = captured.snapshot()
    # The capture saw the session in detail: trace-level payload records too.
    assert any(r.levelno <= _logging.TRACE for r in records), "nothing was captured at TRACE"

    # One connect event per authenticated connection (Receives run on connections of their own).
    connects = captured.audit("connect")
    assert connects
    for connect in connects:
        assert connect.levelno == logging.INFO
        assert connect.getMessage().startswith("connected")
        assert fields(connect)["endpoint"] == secret_endpoint.url
        assert (fields(connect)["mechanism"], fields(connect)["negotiated"]) == ("ntlm", "ntlm")
        assert fields(connect)["encryption"] == "message-encryption"
        assert fields(connect)["channel_binding"] == "false"
        assert fields(connect)["user"] == DOMAIN_USER

    (pool_open,) = captured.audit("pool_open")
    shell_id = fields(pool_open)["shell_id"]
    assert "Microsoft.PowerShell" in fields(pool_open)["configuration"]
    starts = captured.audit("pipeline_start")
    assert [fields(r)["commands"] for r in starts] == ["Write-Output", "Write-Output"]
    assert all(fields(r)["arguments_logged"] == "false" and fields(r)["shell_id"] == shell_id for r in starts)
    ends = captured.audit("pipeline_end")
    assert {fields(r)["pipeline"] for r in ends} == {fields(r)["pipeline"] for r in starts}
    assert all("Completed" in fields(r)["state"] for r in ends)
    (command_start,) = captured.audit("command_start")
    assert fields(command_start)["command"] == "echo" and "arguments" not in fields(command_start)
    (pool_close,) = captured.audit("pool_close")
    assert fields(pool_close)["shell_id"] == shell_id and fields(pool_close)["ok"] == "true"
    # Not opted in: no argument reaches the audit trail (trace payloads may carry it).
    for r in records:
        if r.name == "psremote.audit":
            assert "unlogged-arg-8812" not in full_text(r), r.getMessage()

    session_keys = secret_endpoint.state()["session_keys"]
    assert session_keys, "the endpoint generated no session key: the key exchange did not happen"
    texts = [full_text(r) for r in records]
    for needle in secret_needles(session_keys):
        for text in texts:
            assert needle not in text, f"a secret ({len(needle)} chars) is in a log record"
        for text in leaked_text:
            assert needle not in text, f"a secret ({len(needle)} chars) is in an error or repr"


def test_arguments_reach_the_audit_trail_only_when_opted_in(secret_endpoint, captured):
    def run(audit_arguments: bool, word: str) -> None:
        with psremote.Client(
            url=secret_endpoint.url,
            username=DOMAIN_USER,
            password=SECRET_PASSWORD,
            auth="ntlm",
            trusted_hosts=TRUSTED,
            audit_arguments=audit_arguments,
        ) as client:
            with client.runspace_pool() as pool:
                ps = pool.powershell().add_command("Write-Output").add_parameter("InputObject", f"ps-{word}")
                assert ps.invoke().output == [f"ps-{word}"]
                # A SecureString argument is logged as what travels: ciphertext, never the plaintext.
                ps = pool.powershell().add_command("Write-Output").add_parameter("InputObject", SecureString(SECURE_PLAINTEXT))
                assert ps.invoke().output[0].get_value() == SECURE_PLAINTEXT
            assert client.run_cmd("echo", [f"cmd-{word}"]).text.strip() == f"cmd-{word}"

    run(False, "not-audited-7731")
    run(True, "opted-in-5521")

    def audit_text() -> str:
        return "\n".join(full_text(r) for r in captured.snapshot() if r.name == "psremote.audit")

    assert captured.wait_for(lambda: "cmd-opted-in-5521" in audit_text()), audit_text()
    assert captured.wait_for(lambda: len(captured.audit("pool_close")) >= 2)
    text = audit_text()
    assert "not-audited-7731" not in text
    starts = [fields(r) for r in captured.audit("pipeline_start")]
    opted = [f for f in starts if f["arguments_logged"] == "true"]
    plain = [f for f in starts if f["arguments_logged"] == "false"]
    assert len(opted) == 2 and len(plain) == 2, starts
    assert all(f["commands"] == "Write-Output" for f in plain)
    assert "ps-opted-in-5521" in opted[0]["commands"] and "InputObject" in opted[0]["commands"]
    commands = {fields(r).get("arguments") for r in captured.audit("command_start")}
    assert "cmd-opted-in-5521" in commands and not any(c and "not-audited" in c for c in commands)
    # Opting in to arguments never opts in to secrets.
    session_keys = secret_endpoint.state()["session_keys"]
    all_text = [full_text(r) for r in captured.snapshot()]
    for needle in secret_needles(session_keys):
        assert not any(needle in t for t in all_text), f"a secret ({len(needle)} chars) is in a log record"
