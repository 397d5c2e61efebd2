"""Fleets from Python: psremote.run_many and psremote.aio.run_many against several loopback
endpoints. A mixed fleet (healthy hosts, a wrong password, a port nobody listens on, a host whose
Receives stall) gives one result per host with the class of error Client raises, in completion
order, and leaves nothing open on any endpoint; host lists come from names, files and range
patterns; every output object carries PSComputerName; the summary, the notebook display, the
DataFrames and the progress bar say what happened.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

import psremote
from psremote import progress as progress_module
from psremote.fleet import HostResult

from psremote_testserver.testing import PASSWORD, USER, Endpoint

TRUSTED = ["127.0.0.1"]
SHARED: Dict[str, Any] = {"username": USER, "password": PASSWORD, "auth": "ntlm", "trusted_hosts": TRUSTED}


@pytest.fixture(scope="module")
def good_a(start_endpoint) -> Endpoint:
    return start_endpoint()


@pytest.fixture(scope="module")
def good_b(start_endpoint) -> Endpoint:
    return start_endpoint()


@pytest.fixture(scope="module")
def stalled(start_endpoint) -> Endpoint:
    """Holds every Receive for its OperationTimeout, then faults, for ever: a host too slow."""
    return start_endpoint("--misbehave", "stalled-receives")


def dead_port() -> int:
    """A port on 127.0.0.1 where nothing listens (one just released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_clean(*endpoints: Endpoint) -> None:
    for endpoint in endpoints:
        for key in ("commands", "pipelines", "pools", "shells"):
            state = endpoint.wait_state(key, 0)
            assert state[key] == 0, state


def at(endpoint: Endpoint, name: str, **own: Any) -> Dict[str, Any]:
    return {"host": "127.0.0.1", "port": endpoint.port, "name": name, **own}


def by_host(results: List[HostResult]) -> Dict[str, HostResult]:
    found = {r.host: r for r in results}
    assert len(found) == len(results), [r.host for r in results]
    return found


def mixed_hosts(good_a: Endpoint, good_b: Endpoint, stalled: Endpoint) -> List[Any]:
    return [
        at(good_a, "good-a"),
        at(good_b, "good-b"),
        at(good_a, "wrong-password", password="not the password"),
        f"127.0.0.1:{dead_port()}",
        at(stalled, "stalled"),
        (f"127.0.0.1:{good_b.port}", {}),
    ]


def check_mixed(results: List[HostResult], total: int) -> None:
    assert sorted(r.index for r in results) == list(range(total))
    hosts = by_host(results)
    for name in ("good-a", "good-b", next(h for h in hosts if h.startswith("127.0.0.1:") and hosts[h].ok)):
        r = hosts[name]
        assert (r.status, r.error, r.attempts) == ("Succeeded", None, 1), r
        assert isinstance(r.result, psremote.PSResult) and r.result.state == "Completed"
        assert [str(o) for o in r.output] == ["hello", "2"]
        assert [o.PSComputerName for o in r.output] == [name, name]
        assert r.result.output == ["hello", 2]

    wrong = hosts["wrong-password"]
    assert wrong.status == "Failed" and isinstance(wrong.error, psremote.AuthenticationError), wrong
    assert wrong.attempts == 1, "a refused logon is no connection failure: never retried"
    assert wrong.result is None and wrong.output == []

    (dead,) = [r for r in results if r.status == "Unreachable"]
    assert isinstance(dead.error, psremote.ConnectError) and isinstance(dead.error, ConnectionError), dead
    assert dead.attempts == 2, "one retry after the first failed connection"

    slow = hosts["stalled"]
    assert slow.status == "Failed" and isinstance(slow.error, psremote.OperationTimeoutError), slow
    assert isinstance(slow.error, TimeoutError)
    assert "the run on stalled did not finish within 3 s" in str(slow.error)
    assert slow.reason is not None and slow.reason.startswith("OperationTimeoutError: ")


def test_a_mixed_fleet_gives_one_typed_result_per_host(good_a, good_b, stalled):
    hosts = mixed_hosts(good_a, good_b, stalled)
    run = psremote.run_many(
        hosts, "Write-Output hello; 1+1", throttle=3, timeout=3, connect_retries=1, retry_delay=0.05, **SHARED
    )
    results = list(run)
    assert len(results) == 6 and run.done
    check_mixed(results, 6)
    assert results == run.results

    summary = run.summary
    assert summary.counts == {"succeeded": 3, "failed": 2, "unreachable": 1, "pending": 0}
    assert summary.complete and not summary.ok
    assert sorted(summary.failed) == ["stalled", "wrong-password"]
    assert summary.unreachable == [r.host for r in results if r.status == "Unreachable"]
    assert [r.index for r in summary.results] == list(range(6)), "the summary lists hosts in host-list order"
    assert set(summary.times) == {r.host for r in results}
    assert str(summary).startswith("6 hosts: 3 succeeded, 2 failed, 1 unreachable (")
    assert_clean(good_a, good_b, stalled)


def test_the_asyncio_twin_gives_the_same_results(good_a, good_b, stalled):
    async def main() -> List[HostResult]:
        run = psremote.aio.run_many(
            mixed_hosts(good_a, good_b, stalled),
            "Write-Output hello; 1+1",
            throttle=3,
            timeout=3,
            connect_retries=1,
            retry_delay=0.05,
            **SHARED,
        )
        assert isinstance(run, psremote.AsyncFleetRun)
        with pytest.raises(psremote.PSRemoteError, match="has not finished"):
            run.to_pandas()
        results = [r async for r in run]
        assert run.done and run.summary.counts["pending"] == 0
        return results

    results = asyncio.run(main())
    assert len(results) == 6
    check_mixed(results, 6)
    assert_clean(good_a, good_b, stalled)


def test_a_failing_script_and_a_failing_command_are_failures(good_a):
    run = psremote.run_many(
        [at(good_a, "one"), at(good_a, "two")], "Write-Output before; Invoke-Failure -Message 'no disk'", **SHARED
    )
    for r in run:
        assert r.status == "Failed" and r.error is None, r
        assert isinstance(r.result, psremote.PSResult) and r.result.state == "Failed"
        assert r.result.terminating_error is not None and "no disk" in r.result.terminating_error.message
        assert r.reason is not None and "no disk" in r.reason
        assert [str(o) for o in r.output] == ["before"]

    failed = list(psremote.run_many([at(good_a, "exit")], executable="exit", args=["3"], **SHARED))
    assert [(r.status, r.result.exit_code if isinstance(r.result, psremote.CmdResult) else None) for r in failed] == [
        ("Failed", 3)
    ]
    assert failed[0].reason == "exit code 3"

    (echo,) = psremote.run_many([at(good_a, "echo")], executable="printf", args=["'one\\ntwo\\n'"], **SHARED)
    assert echo.ok and isinstance(echo.result, psremote.CmdResult) and echo.result.stdout == b"one\ntwo\n"
    assert [(o.value, o.PSComputerName) for o in echo.output] == [("one", "echo"), ("two", "echo")]
    assert_clean(good_a)


def test_the_session_configuration_and_the_cmd_options_reach_every_host(good_a, good_b):
    # The endpoint's "Restricted" configuration (a JEA-like endpoint in no-language mode) takes
    # no scripts: every host's pool opened in it, and the script was refused there.
    hosts = [at(good_a, "a"), at(good_b, "b")]
    refused = list(psremote.run_many(hosts, "Write-Output 'jea'", configuration_name="Restricted", **SHARED))
    assert sorted(r.host for r in refused) == ["a", "b"]
    for r in refused:
        assert r.status == "Failed" and r.error is None and isinstance(r.result, psremote.PSResult), r
        assert r.reason is not None and "no-language mode" in r.reason, r.reason
    # The same script in the default configuration runs.
    assert sorted(str(o) for r in psremote.run_many(hosts, "Write-Output 'jea'", **SHARED) for o in r.output) == ["jea", "jea"]

    run = psremote.run_many(
        hosts,
        executable="echo $FLEET_VAR; pwd; cat",
        environment={"FLEET_VAR": "from the fleet"},
        working_directory="/tmp",
        stdin=b"stdin for every host\n",
        **SHARED,
    )
    for r in run:
        assert r.ok and isinstance(r.result, psremote.CmdResult), r
        assert r.result.stdout == b"from the fleet\n/tmp\nstdin for every host\n", r.result
    assert_clean(good_a, good_b)


def test_every_output_object_carries_pscomputername(good_a):
    (r,) = psremote.run_many([at(good_a, "web01")], "Get-Item /; Write-Output text; 7; $true", **SHARED)
    item, text, number, flag = r.output
    # An object gets the note property, beside its own properties.
    assert item.PSComputerName == "web01" and item["PSComputerName"] == "web01"
    assert item.properties["Name"] == "/" and "PSComputerName" in item.extended_properties
    assert r.result is not None and r.result.output[0] is item
    # Other values are wrapped: .value is the value, str() its text.
    assert (text.value, str(text), text.PSComputerName) == ("text", "text", "web01")
    assert (number.value, number.PSComputerName) == (7, "web01")
    assert flag.value is True and flag.PSComputerName == "web01"
    assert r.result.output[1:] == ["text", 7, True], "the PSResult keeps the values as run_ps returns them"
    assert_clean(good_a)


def test_to_pandas_per_object_and_per_host(good_a, good_b):
    import pandas  # installed by make venv (bindings-python/requirements-test.txt)

    dead = f"127.0.0.1:{dead_port()}"
    run = psremote.run_many([at(good_a, "a"), at(good_b, "b"), dead], "Get-Item /; Write-Output x", **SHARED)
    frame = run.to_pandas()
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.columns[:2]) == ["PSComputerName", "Value"]
    assert list(frame["PSComputerName"]) == ["a", "a", "b", "b"], "one row per object, hosts in list order"
    assert frame["Name"].tolist()[0] == "/" and frame["Value"].tolist()[1] == "x"

    hosts = run.to_pandas(per="host")
    assert list(hosts["PSComputerName"]) == ["a", "b", dead]
    assert list(hosts["status"]) == ["Succeeded", "Succeeded", "Unreachable"]
    assert list(hosts["objects"]) == [2, 2, 0]
    assert hosts["error"].tolist()[2] == "ConnectError"
    with pytest.raises(ValueError, match="per must be"):
        run.to_pandas(per="row")
    assert_clean(good_a, good_b)


def test_to_pandas_without_pandas_says_what_to_install(good_a, monkeypatch):
    run = psremote.run_many([at(good_a, "a")], "1", **SHARED).wait()
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'psremote\[pandas\]'"):
        run.to_pandas()


def test_the_notebook_display_escapes_server_text(good_a):
    run = psremote.run_many(
        [at(good_a, "<i>named</i>"), at(good_a, "fine")], "Invoke-Failure -Message '<script>alert(1)</script>'", **SHARED
    )
    page = run._repr_html_()
    assert run.done, "the display runs the fleet to its end"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "&lt;i&gt;named&lt;/i&gt;" in page and "<i>" not in page
    assert "2 hosts: 0 succeeded, 2 failed, 0 unreachable" in page
    assert_clean(good_a)


def test_show_progress_without_tqdm(good_a, capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "_tqdm_class", lambda: None)
    hosts = [at(good_a, f"h{i}") for i in range(3)] + [f"127.0.0.1:{dead_port()}"]
    results = list(psremote.run_many(hosts, "1", show_progress=True, **SHARED))
    assert len(results) == 4
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "hosts: 4/4 (ok 3, failed 0, unreachable 1)", lines
    assert all(line.startswith("hosts: ") for line in lines)


def test_show_progress_with_tqdm(good_a, capsys):
    assert progress_module._tqdm_class() is not None
    results = list(psremote.run_many([at(good_a, f"h{i}") for i in range(3)], "1", show_progress=True, **SHARED))
    assert len(results) == 3
    err = capsys.readouterr().err
    assert "3/3" in err and "ok 3, failed 0, unreachable 0" in err


def test_hosts_from_a_file_and_a_range_pattern_reach_the_endpoints(good_a, good_b, tmp_path):
    hosts_file = tmp_path / "hosts.txt"
    hosts_file.write_text(
        f"# the fleet\n127.0.0.1:{good_a.port}   # the first endpoint\n\n127.0.0.[1-1]:{good_b.port}\n127.0.0.1:{good_a.port}\n"
    )
    expected = [f"127.0.0.1:{good_a.port}", f"127.0.0.1:{good_b.port}"]
    assert psremote.expand_hosts(hosts_file) == expected
    results = list(psremote.run_many(hosts_file, "Write-Output ok", **SHARED))
    assert sorted(r.host for r in results) == sorted(expected), "a host listed twice runs once"
    assert all(r.ok and [o.PSComputerName for o in r.output] == [r.host] for r in results)
    # A shared url gives the scheme, port and path; each host gives its host part.
    (r,) = psremote.run_many("127.0.0.1", "Write-Output ok", url=good_b.url, **SHARED)
    assert r.ok and r.host == "127.0.0.1"
    assert_clean(good_a, good_b)


def test_expand_hosts():
    assert psremote.expand_hosts("web[01-03].corp.example") == ["web01.corp.example", "web02.corp.example", "web03.corp.example"]
    assert psremote.expand_hosts("node[1-3]") == ["node1", "node2", "node3"]
    assert psremote.expand_hosts("n[8-10]", "m[08-10]") == ["n8", "n9", "n10", "m08", "m09", "m10"]
    assert psremote.expand_hosts("r[1-2]-n[01-02]") == ["r1-n01", "r1-n02", "r2-n01", "r2-n02"]
    assert psremote.expand_hosts("a,b, c", ["b", "d[1-1]"]) == ["a", "b", "c", "d1"]
    assert psremote.expand_hosts("[::1]:5985", "[fe80::1%eth0]") == ["[::1]:5985", "[fe80::1%eth0]"]
    assert psremote.expand_hosts("https://h[1-2]:5986/wsman") == ["https://h1:5986/wsman", "https://h2:5986/wsman"]
    with pytest.raises(psremote.ConfigurationError, match="counts down"):
        psremote.expand_hosts("web[10-01]")
    with pytest.raises(psremote.ConfigurationError, match=r"a range is \[FIRST-LAST\]"):
        psremote.expand_hosts("web[a-c]")
    with pytest.raises(psremote.ConfigurationError, match="more than"):
        psremote.expand_hosts("h[0-999]-[0-9999]")
    with pytest.raises(psremote.ConfigurationError, match="cannot read the host file"):
        psremote.expand_hosts(Path("/nonexistent/hosts.txt"))


def test_options_are_checked_before_any_host_is_contacted(good_a):
    requests = good_a.state()["requests"]
    with pytest.raises(psremote.ConfigurationError, match="host 'bad': port must be between"):
        psremote.run_many([at(good_a, "ok"), {"host": "127.0.0.1", "port": 70000, "name": "bad"}], "1", **SHARED)
    with pytest.raises(psremote.ConfigurationError, match="not both"):
        psremote.run_many("h", "1", executable="x", **SHARED)
    with pytest.raises(psremote.ConfigurationError, match="throttle"):
        psremote.run_many("h", "1", throttle=0, **SHARED)
    with pytest.raises(psremote.ConfigurationError, match="host '127.0.0.1:[0-9]+': every host of a run uses the run's configuration_name"):
        psremote.run_many(
            [at(good_a, "h1"), (f"127.0.0.1:{good_a.port}", {"configuration_name": "Other"})],
            "1",
            configuration_name="Restricted",
            **SHARED,
        )
    with pytest.raises(psremote.ConfigurationError, match="options of a cmd command"):
        psremote.run_many(at(good_a, "h"), "1", working_directory="/tmp", **SHARED)
    with pytest.raises(TypeError, match="unexpected client option"):
        psremote.run_many("h", "1", colour="blue", **SHARED)
    with pytest.raises(psremote.ConfigurationError, match="no hosts"):
        psremote.run_many([], "1", **SHARED)
    with pytest.raises(psremote.ConfigurationError, match="needs 'host'") as caught:
        psremote.run_many([{"password": "secret-value"}], "1", **SHARED)
    assert "secret-value" not in str(caught.value)
    assert good_a.state()["requests"] == requests, "no request reached the endpoint"


def test_a_fleet_takes_the_client_defaults_and_runs_over_ws_man_only(good_a):
    # Client's SSH and process options are not fleet options: a run with only the usual ones
    # starts (a port nobody listens on is that host's ConnectError, not a TypeError).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with psremote.run_many([f"127.0.0.1:{dead}"], "1", username="u", password="p", auth="ntlm", trusted_hosts=TRUSTED) as run:
        (result,) = list(run)
    assert isinstance(result.error, psremote.ConnectError), result
    requests = good_a.state()["requests"]
    with pytest.raises(psremote.ConfigurationError, match="transport='wsman' only"):
        psremote.run_many(at(good_a, "h"), "1", transport="ssh", **SHARED)
    with pytest.raises(psremote.ConfigurationError, match="transport='wsman' only"):
        psremote.run_many(at(good_a, "h"), "1", transport="process", **SHARED)
    with pytest.raises(psremote.ConfigurationError, match="key_file apply to transport='ssh' or 'process'"):
        psremote.run_many(at(good_a, "h"), "1", key_file="/k", **SHARED)
    with pytest.raises(psremote.ConfigurationError, match="host 'x': fleets .* transport='wsman' only"):
        psremote.run_many([{"host": "127.0.0.1", "name": "x", "transport": "ssh"}], "1", **SHARED)
    with pytest.raises(psremote.ConfigurationError, match="unknown transport"):
        psremote.run_many(at(good_a, "h"), "1", transport="telnet", **SHARED)
    assert good_a.state()["requests"] == requests, "no request reached the endpoint"
    with psremote.run_many(at(good_a, "h"), "1", transport="wsman", **SHARED) as run:
        (result,) = list(run)
    assert result.ok, result


def test_a_cancelled_run_reports_every_host_and_leaves_nothing(stalled):
    run = psremote.run_many([at(stalled, f"h{i}") for i in range(6)], "Write-Output x", throttle=2, **SHARED)
    with pytest.raises(psremote.OperationTimeoutError, match="no host finished within 0.5 s"):
        run.next_result(timeout=0.5)
    assert stalled.wait_state("pools", 2)["pools"] == 2
    run.cancel()
    results = list(run)
    assert len(results) == 6
    assert all(isinstance(r.error, psremote.ClosedError) and r.status == "Failed" for r in results), results
    assert sum(1 for r in results if r.attempts > 0) == 2, "only the two running hosts were contacted"
    assert_clean(stalled)


def test_leaving_a_with_block_cancels_the_rest(stalled):
    with psremote.run_many([at(stalled, f"h{i}") for i in range(4)], "Write-Output x", throttle=2, **SHARED) as run:
        assert stalled.wait_state("pools", 2)["pools"] == 2
    assert run.done and len(run.results) == 4
    assert all(isinstance(r.error, psremote.ClosedError) for r in run.results)
    assert_clean(stalled)


def test_cancelling_the_iterating_task_cancels_the_run(stalled):
    async def main() -> List[HostResult]:
        run = psremote.aio.run_many([at(stalled, f"h{i}") for i in range(4)], "Write-Output x", throttle=2, **SHARED)

        async def consume() -> None:
            async for _ in run:
                pass

        task = asyncio.ensure_future(consume())
        state = await asyncio.get_running_loop().run_in_executor(None, stalled.wait_state, "pools", 2)
        assert state["pools"] == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The run was cancelled with the task; its results are all still there.
        return [r async for r in run]

    results = asyncio.run(main())
    assert len(results) == 4
    assert all(isinstance(r.error, psremote.ClosedError) for r in results), results
    assert_clean(stalled)
