"""Pipelines: the builder, every stream, streaming events, stop, input, pool operations."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

import psremote
from psremote import ConfigurationError, PowerShell, PSEvent


def test_run_ps_collects_every_stream(client):
    result = client.run_ps(
        "Write-Output out; Write-Error err; Write-Warning warn; Write-Verbose verb; Write-Debug dbg; "
        "Write-Information info -Tags t1,t2; Write-Progress -Activity act -Status stat -PercentComplete 40"
    )
    assert result.state == "Completed"
    assert result.output == ["out"]
    assert [e.message for e in result.errors] == ["err"]
    assert result.warnings == ["warn"] and result.verbose == ["verb"] and result.debug == ["dbg"]
    (info,) = result.information
    assert info.message_data == "info" and info.tags == ["t1", "t2"] and info.source == "Write-Information"
    assert info.time_generated is not None and info.time_generated.tzinfo is not None
    (progress,) = result.progress
    assert (progress.activity, progress.status_description, progress.percent_complete) == ("act", "stat", 40)
    assert not progress.completed
    assert result.had_errors and result.terminating_error is None
    text = repr(result)
    assert text.startswith("<PSResult state=Completed output=1") and "errors=1" in text


def test_result_is_a_sequence_of_output(client):
    result = client.run_ps("1, 2, 3 | Write-Output")
    assert list(result) == [1, 2, 3] and len(result) == 3 and result[-1] == 3


def test_builder_commands_parameters_and_statements(client):
    ps = client.powershell()
    ps.add_command("Write-Output").add_parameter("InputObject", ["a", "b"])
    ps.add_statement().add_command("Write-Output").add_argument(1).add_argument(2)
    ps.add_statement().add_script("1 + 2")
    ps.add_statement().add_command("Write-Output").add_parameters({"InputObject": [7], "NoEnumerate": None})
    assert len(ps.commands) == 4
    assert repr(ps).startswith("<PowerShell Write-Output -InputObject ['a', 'b']; Write-Output 1 2; {1 + 2}")
    result = ps.invoke()
    assert result.output == ["a", "b", 1, 2, 3, [7]]


def test_pipeline_of_commands(client):
    ps = client.powershell().add_command("Write-Output").add_argument("text").add_command("Out-String")
    assert [str(o).strip() for o in ps.invoke().output] == ["text"]


def test_merge_error_into_output(client):
    ps = client.powershell().add_script("Write-Error e1; Write-Output o1").merge_error()
    result = ps.invoke()
    assert result.errors == []
    assert len(result.output) == 2
    assert isinstance(result.output[0], psremote.PSObject)  # the ErrorRecord object itself
    assert result.output[1] == "o1"
    merged = client.powershell().add_script("Write-Warning w; Write-Verbose v").merge_all().invoke()
    assert merged.warnings == [] and merged.verbose == [] and len(merged.output) == 2


def test_builder_misuse_is_explained():
    ps = PowerShell()
    with pytest.raises(ConfigurationError, match="add_command"):
        ps.add_parameter("Name", 1)
    with pytest.raises(ConfigurationError, match="add_command"):
        ps.merge_error()
    with pytest.raises(ConfigurationError, match="command name"):
        ps.add_command("")
    with pytest.raises(ConfigurationError, match="no runspace pool"):
        ps.add_command("Get-Date").invoke()
    ps.add_statement().add_statement()
    assert ps.clear().commands == []


def test_empty_pipeline_is_refused(pool):
    with pytest.raises(ConfigurationError, match="empty"):
        pool.powershell().invoke()


def test_unbound_powershell_runs_through_client(client):
    ps = PowerShell().add_command("Write-Output").add_argument("unbound")
    assert client.run_ps(ps).output == ["unbound"]


def test_events_arrive_in_order_while_running(pool):
    handle = pool.start("Write-Output first; Write-Progress -Activity a -Status s -PercentComplete 10; Start-Sleep -Milliseconds 1500; Write-Output second")
    seen = []
    t0 = time.monotonic()
    first_at = None
    for event in handle:
        assert isinstance(event, PSEvent)
        if event.kind == "output" and event.value == "first":
            first_at = time.monotonic() - t0
        seen.append(event.kind)
    assert seen == ["output", "progress", "output", "state"]
    assert handle.state == "Completed" and handle.finished
    # "first" arrived long before the sleep ended: the events stream.
    assert first_at is not None and first_at < 1.0
    assert list(handle) == []


def test_event_kinds_and_values(pool):
    events = list(pool.start("Write-Error e; Write-Warning w; Write-Information i; Write-Progress -Activity a -Completed; Write-Host hi"))
    kinds = [e.kind for e in events]
    assert kinds[:4] == ["error", "warning", "information", "progress"]
    assert isinstance(events[0].value, psremote.ErrorRecord)
    assert isinstance(events[2].value, psremote.InformationRecord)
    assert isinstance(events[3].value, psremote.ProgressRecord) and events[3].value.completed
    assert events[-1] == PSEvent("state", psremote.PipelineState("Completed", None))


def test_result_after_partial_iteration(pool):
    handle = pool.start("1, 2, 3, 4 | Write-Output")
    assert next(handle).value == 1
    result = handle.result()
    assert result.output == [2, 3, 4] and result.state == "Completed"


def test_stop_a_running_pipeline(pool, endpoint):
    ps = pool.powershell().add_command("Invoke-Stall")
    handle = ps.start()
    threading.Timer(0.3, ps.stop).start()
    t0 = time.monotonic()
    result = handle.result()
    assert time.monotonic() - t0 < 5
    assert result.state == "Stopped"
    assert result.terminating_error is not None
    assert "PipelineStopped" in (result.terminating_error.fully_qualified_error_id or "")
    state = endpoint.wait_state("pipelines_running", 0)
    assert state["pipelines_running"] == 0


def test_leaving_the_with_block_stops_the_pipeline(pool, endpoint):
    with pool.start("Write-Output x; Invoke-Stall") as handle:
        assert next(handle).value == "x"
    assert endpoint.wait_state("pipelines_running", 0)["pipelines_running"] == 0
    # The pool is still usable.
    assert pool.run_ps("Write-Output y").output == ["y"]


def test_input_from_a_list(client):
    result = client.run_ps(client.powershell().add_command("Measure-Input"), input=list(range(10)))
    assert result.output[0].Count == 10


def test_input_from_a_generator_in_batches(client):
    def numbers():
        yield from range(2500)

    result = client.run_ps(client.powershell().add_command("Write-Output"), input=numbers())
    assert result.output == list(range(2500))


def test_input_is_consumed_lazily(pool):
    produced = []

    def slow():
        for i in itertools.count():
            produced.append(i)
            yield i
            if i == 2:
                return
            time.sleep(0.1)

    handle = pool.powershell().add_command("Write-Output").start(input=slow())
    outputs = [e.value for e in handle if e.kind == "output"]
    assert outputs == [0, 1, 2] and produced == [0, 1, 2]


def test_a_single_string_is_one_input_object(client):
    assert client.run_ps(client.powershell().add_command("Measure-Input"), input="abc").output[0].Count == 1


def test_input_iterable_that_fails_stops_the_pipeline(pool):
    def broken():
        yield 1
        raise ValueError("input broke")

    with pytest.raises(ValueError, match="input broke"):
        pool.powershell().add_command("Measure-Input").invoke(input=broken())
    assert pool.run_ps("Write-Output ok").output == ["ok"]


def test_many_pipelines_on_one_pool(pool):
    for i in range(50):
        assert pool.run_ps(pool.powershell().add_command("Write-Output").add_argument(i)).output == [i]


def test_pool_operations(client):
    with client.runspace_pool(min_runspaces=1, max_runspaces=3) as pool:
        assert pool.state == "Opened" and pool.protocol_version == "2.3"
        data = pool.application_private_data
        assert data is not None
        assert pool.available_runspaces() == 3
        assert pool.set_max_runspaces(5) is True
        assert pool.available_runspaces() == 5
        assert pool.set_min_runspaces(2) is True
        assert pool.set_min_runspaces(0) is False
        assert pool.reset_runspace_state() is True
        assert repr(pool).startswith(f"<RunspacePool {pool.id} state=Opened")
    assert pool.closed and "Closed" in repr(pool)


def test_concurrent_pipelines_on_one_pool(pool):
    # max_runspaces=2: both run at once.
    first = pool.start("Start-Sleep -Milliseconds 300; Write-Output a")
    second = pool.start("Write-Output b")
    assert second.result().output == ["b"]
    assert first.result().output == ["a"]


def test_add_to_history_is_accepted(pool):
    assert pool.run_ps("Write-Output h", add_to_history=True).output == ["h"]


def test_huge_output_spans_many_fragments(client):
    (text,) = client.run_ps("New-HugeObject 1000000").output
    assert len(text) == 1_000_000 and text.startswith("abc")


def test_show_progress_writes_text_without_tqdm(client, capsys, monkeypatch):
    monkeypatch.setattr("psremote.progress._tqdm_class", lambda: None)
    client.run_ps("Write-Progress -Activity copying -Status half -PercentComplete 50; Write-Progress -Activity copying -Completed", show_progress=True)
    err = capsys.readouterr().err
    assert "copying: half [50%]" in err and "copying: done" in err


def test_show_progress_uses_tqdm(client, capsys):
    import tqdm  # noqa: F401  (installed by make test)
    client.run_ps("Write-Progress -Activity bar -Status s -PercentComplete 30", show_progress=True)
    err = capsys.readouterr().err
    assert "bar" in err and "30%" in err
