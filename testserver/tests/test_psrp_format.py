"""The endpoint's formatting (psrp_format) against text PowerShell prints."""

from __future__ import annotations

import datetime

from psrpcore.types import ErrorCategory, PSCredential, PSCustomObject, PSObject, PSSecureString
from psremote_testserver import psrp_format as fmt
from psremote_testserver import psrp_records as records
from psremote_testserver.psrp_commands import file_item, format_lines


def lines(items, width=120, legacy=False):
    return [line for _, line in fmt.format_items(items, width, legacy)]


def test_file_view_matches_powershell_7(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "a.txt").write_text("hello world\n")
    items = [file_item(str(tmp_path / "docs"), "docs"), file_item(str(tmp_path / "a.txt"), "a.txt")]
    out = lines(items)
    # PowerShell 7's Get-ChildItem: the grouping header, then Mode (7, left), LastWriteTime (26,
    # right), Length (14, right), Name.
    assert out[:5] == ["", f"    Directory: {tmp_path}", "", "Mode                 LastWriteTime         Length Name",
                       "----                 -------------         ------ ----"]  # fmt: skip
    assert out[5].startswith("d-----") and out[5].endswith("                docs")
    assert out[6].startswith("-a----") and out[6].endswith("             12 a.txt")
    assert len(out[5]) == 7 + 1 + 26 + 1 + 14 + 1 + len("docs") and out[-1] == ""


def test_short_date_time_is_right_aligned_as_powershell_writes_it():
    assert fmt._short_date_time(datetime.datetime(2026, 1, 5, 9, 7)) == "  1/5/2026  9:07 AM"
    assert fmt._short_date_time(datetime.datetime(2026, 12, 16, 21, 30)) == "12/16/2026  9:30 PM"
    assert fmt.display(datetime.datetime(2026, 12, 6, 0, 5, 9)) == "12/6/2026 12:05:09 AM"


def test_process_view_has_powershell_7s_columns():
    process = PSCustomObject(Id=4242, ProcessName="pwsh", WorkingSet64=104857600, PrivateMemorySize64=52428800, CPU=1.5)
    process.PSObject.type_names = ["System.Diagnostics.Process", "System.Object"]
    assert lines([process]) == [
        "",
        " NPM(K)    PM(M)      WS(M)     CPU(s)      Id  SI ProcessName",
        " ------    -----      -----     ------      --  -- -----------",
        "      0    50.00     100.00       1.50    4242   0 pwsh",
        "",
    ]


def _service(status, name, display_name):
    service = PSCustomObject(Status=status, Name=name, DisplayName=display_name)
    service.PSObject.type_names = ["System.ServiceProcess.ServiceController", "System.Object"]
    return service


def test_service_view_as_windows_powershell_recorded_it():
    # Out-String -Stream of Get-Service winrm on Windows PowerShell 5.1 (a recording of pypsrp's
    # execute_ps): padded last column, "..." as the ellipsis.
    out = lines([_service("Running", "winrm", "Windows Remote Management (WS-Management)")], legacy=True)
    assert out == [
        "",
        "Status   Name               DisplayName                           ",
        "------   ----               -----------                           ",
        "Running  winrm              Windows Remote Management (WS-Manag...",
        "",
    ]
    # PowerShell 7 trims the last column and cuts with one character, "…".
    assert lines([_service("Running", "winrm", "Windows Remote Management (WS-Management)")])[3] == (
        "Running  winrm              Windows Remote Management (WS-Managem…"
    )


def test_small_objects_are_tables_large_ones_lists():
    out = lines([PSCustomObject(Name="a", Size=1), PSCustomObject(Name="bbb", Size=22)])
    assert out == ["", "Name Size", "---- ----", "a       1", "bbb    22", ""]
    big = PSCustomObject(A=1, Bee=2, C=3, D=4, Eeeee="five")
    assert lines([big, big]) == ["", "A     : 1", "Bee   : 2", "C     : 3", "D     : 4", "Eeeee : five"] * 2 + [""]


def test_width_cuts_the_last_column_and_hides_what_cannot_fit():
    row = PSCustomObject(Key="k", Text="x" * 50)
    assert lines([row], width=20)[1:4] == ["Key Text", "--- ----", "k   xxxxxxxxxxxxxxx…"]
    assert len(lines([row], width=20)[3]) == 20
    assert fmt.fit_widths([5, 10, 10], 12) == [5, 6, -1]
    assert fmt.cut("abcdef", 4, fmt.RIGHT) == "…def" and fmt.cut("abcdef", 4, fmt.LEFT) == "abc…"


def test_wide_list_values_wrap_under_the_value_column():
    obj = PSCustomObject(A=1, B=2, C=3, D=4, Long="y" * 30)
    out = lines([obj], width=20)
    assert out[5:8] == ["Long : yyyyyyyyyyyyy", "       yyyyyyyyyyyyy", "       yyyy"]


def test_scalars_errors_and_type_changes():
    error = records.write_error("it broke", None, ErrorCategory.NotSpecified, None)
    missing = records.record(["System.Management.Automation.ItemNotFoundException"], "Cannot find path '/x' because it does not exist.",
                             "PathNotFound", ErrorCategory.ObjectNotFound, target="/x", activity="Get-Item")  # fmt: skip
    out = list(fmt.format_items(["one", 2, True, error, missing, PSCustomObject(A=1)], 80))
    assert out == [
        ("out", "one"), ("out", "2"), ("out", "True"),
        ("error", "Write-Error: it broke"),
        ("error", "Get-Item: Cannot find path '/x' because it does not exist."),
        ("out", ""), ("out", "A"), ("out", "-"), ("out", "1"), ("out", ""),
    ]  # fmt: skip
    assert fmt.error_lines(records.command_not_found("Get-Nothing"))[0].startswith("Get-Nothing: The term 'Get-Nothing'")


def test_out_string_helpers():
    assert format_lines("a\nb") == ["a", "b"]
    assert format_lines(True) == ["True"]
    assert format_lines(None) == []
    empty = PSObject()
    empty.PSObject.to_string = "plain"
    assert format_lines(empty) == ["plain"]


def test_secure_strings_show_their_type_name():
    # PowerShell prints a SecureString as its type's name, never its (encrypted) content.
    secret = PSSecureString("hunter2")
    assert lines([secret]) == ["System.Security.SecureString"]
    credential = PSCredential("EXAMPLE\\bob", PSSecureString("hunter2"))
    out = lines([credential])
    assert any(line.endswith("System.Security.SecureString") for line in out) and not any("hunter2" in line for line in out)
