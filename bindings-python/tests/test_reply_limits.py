"""A server's oversized reply is refused while it is read, through the public API: an endless
chunked body (the endpoint's ``--misbehave endless-body``) is a TransportError naming the size
and the limit, the client process's memory stays bounded, nothing hangs, and nothing is left on
the server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import PASSWORD, USER

# Runs in a child process, so that its peak RSS (ru_maxrss) is this exchange's alone.
CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import psremote
    from psremote.exceptions import TransportError

    url = sys.argv[1]
    with psremote.Client(url=url, username=sys.argv[2], password=sys.argv[3], auth="ntlm",
                         trusted_hosts="127.0.0.1", operation_timeout=5) as client:
        # The endpoint breaks the first Receive, so nothing runs before the measured command.
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            client.run_cmd("echo", ["hi"])
            outcome = {"error": None}
        except TransportError as exc:
            outcome = {"error": type(exc).__name__, "message": str(exc), "status": exc.status,
                       "reply_size": exc.reply_size, "reply_limit": exc.reply_limit}
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        outcome["growth_kb"] = after - before
        # The broken connection was discarded: the next command works.
        outcome["again"] = client.run_cmd("echo", ["again"]).stdout.decode()
    print(json.dumps(outcome))
    """
)


@pytest.mark.timeout(120)
def test_endless_reply_is_a_transport_error_in_bounded_memory(start_endpoint):
    endpoint = start_endpoint("--misbehave", "endless-body")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, endpoint.url, USER, PASSWORD],
        capture_output=True,
        text=True,
        timeout=100,  # hang guard only
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["error"] == "TransportError", outcome
    # The default limit for the default 153600-byte envelope: 153600 + 153600/16 + 64 KiB.
    assert "228736-byte limit" in outcome["message"], outcome
    assert "passed " in outcome["message"], outcome
    assert outcome["status"] is None
    assert outcome["reply_limit"] == 228736, outcome
    # Given up with the first chunk past the limit.
    assert 228736 < outcome["reply_size"] <= 228736 + 1024 * 1024, outcome
    assert outcome["again"] == "again\n"
    # Generous: an unbounded client holds the body until its read timeout, hundreds of MiB.
    assert outcome["growth_kb"] < 96 * 1024, outcome
    for key in ("commands", "shells"):
        assert endpoint.wait_state(key, 0)[key] == 0, endpoint.state()


def test_max_reply_size_replaces_the_derived_limit(start_endpoint):
    import psremote
    from psremote.exceptions import ConfigurationError, TransportError

    endpoint = start_endpoint("--misbehave", "endless-body")
    with psremote.Client(
        url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts="127.0.0.1", max_reply_size=1 << 20
    ) as client:
        with pytest.raises(TransportError) as info:
            client.run_cmd("echo", ["hi"])
        assert info.value.reply_limit == 1 << 20
        assert info.value.reply_size > 1 << 20
        assert client.run_cmd("echo", ["again"]).stdout == b"again\n"
    assert endpoint.wait_state("shells", 0)["shells"] == 0
    for bad in (0, -1, True, 1.5, "big"):
        with pytest.raises(ConfigurationError):
            psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts="127.0.0.1", max_reply_size=bad)


def test_max_events_ahead_pauses_the_reader_without_losing_output(start_endpoint):
    """A buffer of one event still delivers every output, in order; the option is checked."""
    import psremote
    from psremote.exceptions import ConfigurationError

    endpoint = start_endpoint("--psrp-buffer-kb", "4096")
    with psremote.Client(
        url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts="127.0.0.1", max_events_ahead=1
    ) as client:
        with client.runspace_pool() as pool:
            events = list(pool.start("New-TestObject -Count 300 -Size 3"))
    outputs = [e.value for e in events if e.kind == "output"]
    assert len(outputs) == 300, events[-3:]
    assert events[-1].kind == "state" and events[-1].value.state == "Completed", events[-1]
    assert endpoint.wait_state("pools", 0)["pools"] == 0
    for bad in (0, -1, True, 1.5, "many"):
        with pytest.raises(ConfigurationError):
            psremote.Client(url=endpoint.url, username=USER, password=PASSWORD, auth="ntlm", trusted_hosts="127.0.0.1", max_events_ahead=bad)
