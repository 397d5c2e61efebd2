"""Results, records and their notebook rendering."""

from __future__ import annotations

import io

import pytest

from psremote import CmdResult, ErrorRecord, PipelineError, ProgressDisplay, ProgressRecord, PSObject, PSResult


def obj(**props):
    return PSObject(["Test.Row", "System.Object"], None, {}, props)


def test_html_table_of_objects_escapes_everything():
    result = PSResult(output=[obj(Name="<b>x</b>", Size=1), obj(Name="y", Extra=True)], state="Completed")
    html = result._repr_html_()
    assert html.startswith("<table>")
    assert "<th style='text-align:left'>Name</th>" in html and ">Extra<" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html


def test_html_of_scalars_and_streams():
    result = PSResult(output=[1, "two"], errors=[ErrorRecord("bad <thing>")], warnings=["w"], state="Completed")
    html = result._repr_html_()
    assert ">Value<" in html and ">two<" in html
    assert "ERROR: bad &lt;thing&gt;" in html and "WARNING: w" in html
    assert "no output" in PSResult(state="Completed")._repr_html_()


def test_html_is_bounded():
    html = PSResult(output=list(range(1000)), state="Completed")._repr_html_()
    assert html.count("<tr>") == 201 and "800 more rows" in html


def test_raise_for_errors():
    ok = PSResult(output=[1], state="Completed")
    assert ok.raise_for_errors() is ok and not ok.had_errors
    stopped = PSResult(state="Stopped")
    with pytest.raises(PipelineError, match="Stopped"):
        stopped.raise_for_errors()
    record = ErrorRecord("nope", "Some.Id", 13, target_name="t", reason="R")
    with pytest.raises(PipelineError) as info:
        PSResult(errors=[record], state="Completed").raise_for_errors()
    assert info.value.error_record is record and info.value.category_name == "ObjectNotFound"
    assert info.value.target_name == "t" and info.value.reason == "R"


def test_error_record_format():
    record = ErrorRecord("msg", "Fq.Id", 5, activity="Act", reason="Why", target_name="tgt", position_message="At line:1")
    text = record.format()
    assert text.splitlines()[0] == "msg" and "At line:1" in text
    assert "InvalidArgument: (tgt) [Act], Why" in text and "FullyQualifiedErrorId : Fq.Id" in text
    assert ErrorRecord.from_native({"message": "m", "unknown_future_field": 1}).message == "m"
    assert ErrorRecord("m", category=99).category_name == "99"


def test_progress_display_text():
    stream = io.StringIO()
    display = ProgressDisplay(stream, use_tqdm=False)
    display.update(ProgressRecord("copy", status_description="files", percent_complete=10))
    display.update(ProgressRecord("copy", status_description="files", percent_complete=10))
    display.update(ProgressRecord("copy", status_description="files", percent_complete=60, current_operation="a.txt"))
    display.update(ProgressRecord("copy", completed=True))
    display.close()
    assert stream.getvalue().splitlines() == ["copy: files [10%]", "copy: files (a.txt) [60%]", "copy: done"]


def test_progress_display_tqdm():
    import tqdm  # noqa: F401  (installed by make test)
    stream = io.StringIO()
    with ProgressDisplay(stream, use_tqdm=True) as display:
        display.update(ProgressRecord("copy", activity_id=1, status_description="s", percent_complete=25))
        display.update(ProgressRecord("other", activity_id=2, status_description="s", percent_complete=75))
        display.update(ProgressRecord("copy", activity_id=1, completed=True, percent_complete=100))
    text = stream.getvalue()
    assert "copy" in text and "other" in text and "75%" in text


def test_progress_record_from_host_call_object():
    record = ProgressRecord.from_psobject(
        PSObject(["System.Management.Automation.ProgressRecord"], None, {}, {"Activity": "a", "ActivityId": 0, "ParentActivityId": 0, "PercentComplete": 0, "Type": "Completed"})
    )
    assert record.parent_activity_id == 0 and record.percent_complete == 0 and record.completed


def test_cmd_result():
    result = CmdResult(b"caf\xc3\xa9\n", b"\xff", 0)
    assert result.text == "café\n" and result.stderr_text == "\ufffd" and result.ok
    assert "exit_code=0" in repr(result)
    assert len(repr(CmdResult(b"x" * 500, b"", 1))) < 200
