"""pypsrp 0.9.1's PowerShell API (RunspacePool, PowerShell, Client.execute_ps) against the PSRP engine."""

from __future__ import annotations

import datetime
import time
import xml.etree.ElementTree as ET

import pytest
from conftest import PASSWORD, USER
from pypsrp.client import Client
from pypsrp.complex_objects import ObjectMeta, PSCredential, PSInvocationState, RunspacePoolState
from pypsrp.exceptions import InvalidPSRPOperation, WSManFaultError
from pypsrp.host import PSHost, PSHostUserInterface
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan


def wsman(endpoint, **kwargs) -> WSMan:
    options = dict(
        port=endpoint.port,
        ssl=False,
        auth="negotiate",
        username=USER,
        password=PASSWORD,
        encryption="always",
        path="wsman",
    )
    options.update(kwargs)
    return WSMan("127.0.0.1", **options)


@pytest.fixture
def pool(endpoint):
    with wsman(endpoint) as connection, RunspacePool(connection) as runspace_pool:
        yield runspace_pool


def run_script(pool, text, **kwargs):
    ps = PowerShell(pool)
    ps.add_script(text)
    return ps, ps.invoke(**kwargs)


def props(obj):
    """Property bag of a deserialised pypsrp GenericComplexObject."""
    return {**obj.adapted_properties, **obj.extended_properties}


# -- basics ------------------------------------------------------------------------------------------------
def test_script_output(pool):
    ps, output = run_script(pool, "Write-Output hello")
    assert output == ["hello"]
    assert ps.state == PSInvocationState.COMPLETED
    assert not ps.had_errors


def test_cmdlet_with_named_parameter(pool):
    ps = PowerShell(pool)
    ps.add_cmdlet("Write-Output").add_parameter("InputObject", "x")
    assert ps.invoke() == ["x"]


def test_statements_and_positional_arguments(pool):
    ps = PowerShell(pool)
    ps.add_script("Write-Output a b").add_statement().add_cmdlet("Write-Output").add_argument("c").add_statement()
    ps.add_cmdlet("Write-Output").add_parameter("InputObject", [1, 2])
    assert ps.invoke() == ["a", "b", "c", 1, 2]


def test_script_grammar(pool):
    script = "1+1; 2 * 3 - 1\n'single ''quoted'''; \"double `\"q`\"\"\n5 # comment\n$true; 1, 2 | Write-Output"
    _, output = run_script(pool, script)
    assert output == [2, 5, "single 'quoted'", 'double "q"', 5, True, 1, 2]


def test_streams(pool):
    ps, output = run_script(
        pool,
        "Write-Warning warn; Write-Verbose verb; Write-Debug dbg; Write-Error -Message err; "
        "Write-Information info -Tags a,b; Write-Progress -Activity act -Status st -PercentComplete 40 -Id 3; 'out'",
    )
    assert output == ["out"]
    assert ps.state == PSInvocationState.COMPLETED and not ps.had_errors
    assert [str(r) for r in ps.streams.warning] == ["warn"]
    assert [str(r) for r in ps.streams.verbose] == ["verb"]
    assert [str(r) for r in ps.streams.debug] == ["dbg"]
    assert [str(r) for r in ps.streams.error] == ["err"]
    assert ps.streams.error[0].fq_error == "Microsoft.PowerShell.Commands.WriteErrorException"
    assert ps.streams.error[0].message == "NotSpecified: (:) [Write-Error], WriteErrorException"
    (information,) = ps.streams.information
    assert (information.message_data, information.tags, information.source) == ("info", ["a", "b"], "Write-Information")
    (progress,) = ps.streams.progress
    assert (progress.activity, progress.description, progress.percent_complete, progress.activity_id) == (
        "act",
        "st",
        40,
        3,
    )


def test_merge_error_into_output(pool):
    ps = PowerShell(pool)
    ps.add_script("Write-Error bad; 'after'").merge_error("output")
    output = ps.invoke()
    assert ps.streams.error == []
    assert output[1] == "after"
    assert str(output[0]) == "bad"


# -- input ---------------------------------------------------------------------------------------------------
def test_pipeline_input_echo(pool):
    ps = PowerShell(pool)
    ps.add_cmdlet("Write-Output")
    assert ps.invoke(input=[1, "two", 3]) == [1, "two", 3]


def test_measure_input(pool):
    ps = PowerShell(pool)
    ps.add_cmdlet("Measure-Input")
    (result,) = ps.invoke(input=[1, 2, 3])
    # pypsrp serialises each int as <I32>n</I32>: 12 bytes.
    assert props(result) == {"Count": 3, "Bytes": 36}
    ps = PowerShell(pool)
    ps.add_script("New-TestObject -Count 50 -Properties 2 -Size 5 | Measure-Input")
    (result,) = ps.invoke()
    assert props(result)["Count"] == 50


def test_input_into_script_and_value_commands(pool):
    ps = PowerShell(pool)
    ps.add_script("Out-String -Stream")
    assert ps.invoke(input=["a", 7]) == ["a", "7"]


# -- failures and stopping ---------------------------------------------------------------------------------
def test_invoke_failure_fails_pipeline(pool):
    ps, output = run_script(pool, "'before'; Invoke-Failure -Message boom; 'never'")
    assert output == ["before"]
    assert ps.state == PSInvocationState.FAILED and ps.had_errors
    assert [str(e) for e in ps.streams.error] == ["boom"]


def test_command_not_found(pool):
    ps, output = run_script(pool, "Get-Nothing; 'next'")
    assert output == ["next"] and ps.state == PSInvocationState.COMPLETED
    (error,) = ps.streams.error
    assert error.fq_error == "CommandNotFoundException" and error.category == 13  # ObjectNotFound
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-Nothing")
    assert ps.invoke() == [] and ps.state == PSInvocationState.FAILED
    assert ps.streams.error[0].fq_error == "CommandNotFoundException"


def test_parameter_binding_error(pool):
    ps = PowerShell(pool)
    ps.add_cmdlet("Write-Output").add_parameter("Bogus", 1)
    ps.invoke()
    assert ps.state == PSInvocationState.FAILED
    assert ps.streams.error[0].fq_error == "NamedParameterNotFound,Microsoft.PowerShell.Commands.WriteOutputCommand"


def test_stop_stalled_pipeline(endpoint, pool):
    ps = PowerShell(pool)
    ps.add_script("Invoke-Stall")
    ps.begin_invoke()
    ps.poll_invoke(timeout=1)
    assert ps.state == PSInvocationState.RUNNING
    started = time.monotonic()
    ps.stop()
    assert ps.state == PSInvocationState.STOPPED
    assert time.monotonic() - started < 2
    assert endpoint.state()["pipelines_running"] == 0


def test_receive_timeout_is_polled_through(endpoint):
    with wsman(endpoint, operation_timeout=1) as connection, RunspacePool(connection) as pool:
        started = time.monotonic()
        _, output = run_script(pool, "Start-Sleep -Milliseconds 1500; 'slept'")
        assert output == ["slept"] and time.monotonic() - started >= 1.4


# -- secure strings, hosts ---------------------------------------------------------------------------------
def test_secure_string_after_key_exchange(pool):
    pool.exchange_keys()
    ps = PowerShell(pool)
    ps.add_cmdlet("ConvertTo-SecureString").add_parameter("String", "s3cret").add_parameter(
        "AsPlainText"
    ).add_parameter("Force")
    assert ps.invoke() == ["s3cret"]


def test_secure_string_without_key_cannot_be_read(pool):
    _, output = run_script(pool, "ConvertTo-SecureString pw -AsPlainText -Force")
    # As from a PowerShell 3+ server: encrypted with a session key the client never received.
    (value,) = output
    assert isinstance(value, ET.Element) and value.tag == "SS"


def test_convert_to_secure_string_requires_force(pool):
    ps, _ = run_script(pool, "ConvertTo-SecureString pw -AsPlainText")
    assert ps.streams.error[0].fq_error.startswith("ImportSecureString_ForceRequired,")


class RecordingUI(PSHostUserInterface):
    def __init__(self) -> None:
        super().__init__()
        self.written = []

    def ReadLine(self, runspace, pipeline):
        return "typed line"

    def ReadLineAsSecureString(self, runspace, pipeline):
        return runspace.serialize("hidden", ObjectMeta("SS"))

    def Write1(self, runspace, pipeline, value):
        self.written.append(("Write1", value))

    def WriteLine2(self, runspace, pipeline, value):
        self.written.append(("WriteLine2", value))

    def WriteLine3(self, runspace, pipeline, foreground, background, value):
        self.written.append(("WriteLine3", foreground, background, value))

    def PromptForCredential1(self, runspace, pipeline, caption, message, user_name, target_name):
        self.written.append(("PromptForCredential1", caption, message, user_name))
        return PSCredential(username=user_name or "bob", password="pa55")


@pytest.fixture
def hosted(endpoint):
    ui = RecordingUI()
    host = PSHost(None, None, False, "pytest", None, ui, "1.0")
    with wsman(endpoint) as connection, RunspacePool(connection, host=host) as pool:
        yield pool, ui


def test_read_host_and_write_host(hosted):
    pool, ui = hosted
    ps, output = run_script(
        pool, "Read-Host; Read-Host -Prompt Name; Write-Host hello there; Write-Host -ForegroundColor Red red"
    )
    assert output == ["typed line", "typed line"]
    assert ui.written == [("Write1", "Name: "), ("WriteLine2", "hello there"), ("WriteLine3", 12, 0, "red")]
    assert [(str(i.message_data), i.tags) for i in ps.streams.information] == [
        ("hello there", ["PSHOST"]),
        ("red", ["PSHOST"]),
    ]


def test_secure_host_calls(hosted):
    pool, ui = hosted
    pool.exchange_keys()
    ps, output = run_script(pool, "Read-Host -AsSecureString")
    assert output == ["hidden"]
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-Credential").add_parameter("UserName", "alice")
    (credential,) = ps.invoke()
    assert (credential.username, credential.password) == ("alice", "pa55")
    assert ui.written[-1] == (
        "PromptForCredential1",
        "Windows PowerShell credential request",
        "Enter your credentials.",
        "alice",
    )


def test_exit_reaches_the_host_as_set_should_exit(hosted):
    # What Ansible's psrp connection plugin appends to a raw command: the code arrives as the
    # host call SetShouldExit, the rest of the script is skipped and the pipeline completes.
    pool, _ = hosted
    ps, output = run_script(pool, "Write-Output before\nexit 3\nWrite-Output after")
    assert output == ["before"] and pool.host.rc == 3
    assert ps.state == PSInvocationState.COMPLETED and not ps.had_errors
    ps, output = run_script(pool, "Write-Output x\nexit $LASTEXITCODE")
    assert output == ["x"] and pool.host.rc == 0 and not ps.had_errors


def test_exit_without_host(pool):
    ps, output = run_script(pool, "'one'; exit 4; 'two'")
    assert output == ["one"] and ps.state == PSInvocationState.COMPLETED and not ps.had_errors
    ps, _ = run_script(pool, "exit nope")
    assert ps.streams.error[0].fq_error == "InvalidCastFromStringToInteger"


def test_read_host_without_host(pool):
    ps, output = run_script(pool, "Read-Host; 'after'")
    assert output == ["after"] and ps.state == PSInvocationState.COMPLETED
    assert ps.streams.error[0].fq_error == "HostFunctionNotImplemented,Microsoft.PowerShell.Commands.ReadHostCommand"


# -- the runspace pool -------------------------------------------------------------------------------------
def test_runspace_counts_and_reset(pool):
    pool.max_runspaces = 3
    assert pool.max_runspaces == 3
    pool.min_runspaces = 2
    assert pool.min_runspaces == 2
    assert pool.get_available_runspaces() == 3
    with pytest.raises(InvalidPSRPOperation):
        pool.min_runspaces = 5  # above max: the server answers False
    pool.reset_runspace_state()
    assert pool.state == RunspacePoolState.OPENED


def test_two_pipelines_at_once(pool):
    pool.max_runspaces = 2
    first, second = PowerShell(pool), PowerShell(pool)
    first.add_script("Start-Sleep -Milliseconds 800; 'first'")
    second.add_script("Start-Sleep -Milliseconds 800; 'second'")
    started = time.monotonic()
    first.begin_invoke()
    second.begin_invoke()
    assert first.end_invoke() == ["first"] and second.end_invoke() == ["second"]
    assert time.monotonic() - started < 1.5  # one after the other would take 1.6 s


def test_one_runspace_queues_pipelines(pool):
    first, second = PowerShell(pool), PowerShell(pool)
    first.add_script("Start-Sleep -Milliseconds 300; 'first'")
    second.add_script("'second'")
    started = time.monotonic()
    first.begin_invoke()
    second.begin_invoke()
    assert second.end_invoke() == ["second"]
    assert time.monotonic() - started >= 0.25  # waited for the only runspace
    assert first.end_invoke() == ["first"]


def test_pipeline_reuse_after_close(pool):
    ps = PowerShell(pool)
    ps.add_script("'once'")
    assert ps.invoke() == ["once"]
    ps.close()  # Signal Terminate; the next invocation reuses the CommandId
    assert ps.invoke() == ["once", "once"]


def test_command_metadata(pool):
    names = [m.name for m in pool.get_command_metadata("Write-*")]
    assert "Write-Output" in names and "Get-Date" not in names


def test_restricted_configuration(endpoint):
    with wsman(endpoint) as connection, RunspacePool(connection, configuration_name="Restricted") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-Date")
        (date,) = ps.invoke()
        assert ps.state == PSInvocationState.COMPLETED
        ps = PowerShell(pool)
        ps.add_cmdlet("Write-Output").add_argument("ok")
        assert ps.invoke() == ["ok"]
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-Process")
        ps.invoke()
        assert ps.state == PSInvocationState.FAILED and ps.streams.error[0].fq_error == "CommandNotFoundException"
        ps, _ = run_script(pool, "Get-Date")
        assert ps.state == PSInvocationState.FAILED and ps.streams.error[0].fq_error == "ScriptsNotAllowed"


def test_unknown_configuration(endpoint):
    with wsman(endpoint) as connection:
        with pytest.raises(WSManFaultError) as failure:
            RunspacePool(connection, configuration_name="NoSuchEndpoint").open()
    assert failure.value.code == 2150858752


# -- commands ----------------------------------------------------------------------------------------------
def test_file_system_commands(pool, tmp_path):
    (tmp_path / "b.txt").write_text("12345")
    (tmp_path / "a_dir").mkdir()
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-ChildItem").add_parameter("Path", str(tmp_path))
    directory, file = ps.invoke()
    assert directory.types[0] == "System.IO.DirectoryInfo" and props(directory)["PSIsContainer"] is True
    assert file.types[0] == "System.IO.FileInfo"
    assert (props(file)["Name"], props(file)["Length"], props(file)["FullName"]) == (
        "b.txt",
        5,
        str(tmp_path / "b.txt"),
    )
    ps, output = run_script(pool, f"Get-Item '{tmp_path / 'missing'}'; Get-Item '{tmp_path / 'b.txt'}'")
    assert props(output[0])["Name"] == "b.txt"
    assert ps.streams.error[0].fq_error == "PathNotFound,Microsoft.PowerShell.Commands.GetItemCommand"


def test_get_process(endpoint, pool):
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-Process").add_parameter("Id", endpoint.process.pid)
    (process,) = ps.invoke()
    assert process.types[0] == "System.Diagnostics.Process"
    assert props(process)["Id"] == endpoint.process.pid and props(process)["WorkingSet64"] > 0
    assert props(process)["ProcessName"].startswith("python")


def test_get_date(pool):
    _, (value,) = run_script(pool, "Get-Date")
    # pypsrp hands DateTime values over as their xs:dateTime text.
    assert abs(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() - time.time()) < 60


def test_large_output_spans_receives(pool):
    _, output = run_script(pool, "New-HugeObject -Size 300000; New-TestObject -Count 500 -Properties 3 -Size 8")
    assert len(output) == 501
    assert len(output[0]) == 300000 and output[0][:3] == "abc"
    assert props(output[1]) == {"Property1": "abcdefgh", "Property2": "abcdefgh", "Property3": "abcdefgh"}


def test_tiny_fragments(start_endpoint):
    server = start_endpoint("--psrp-fragment-size", "200")
    with wsman(server) as connection, RunspacePool(connection) as pool:
        _, output = run_script(pool, "New-HugeObject -Size 5000; Write-Warning w")
        assert len(output[0]) == 5000
        ps = PowerShell(pool)
        ps.add_cmdlet("Write-Output")
        assert ps.invoke(input=list(range(50))) == list(range(50))


def test_execute_ps(endpoint):
    with Client(
        "127.0.0.1",
        port=endpoint.port,
        ssl=False,
        auth="negotiate",
        username=USER,
        password=PASSWORD,
        encryption="always",
        path="wsman",
    ) as client:
        output, streams, had_errors = client.execute_ps("Write-Output hi")
        assert (output, had_errors) == ("hi", False)
        output, streams, had_errors = client.execute_ps("Write-Error oops; 'next'", environment={"PSREMOTE_X": "1"})
        assert output == "next" and [str(e) for e in streams.error] == ["oops"]


def test_close_leaves_no_pool(start_endpoint):
    server = start_endpoint()
    with wsman(server) as connection:
        pool = RunspacePool(connection)
        pool.open()
        ps = PowerShell(pool)
        ps.add_script("Invoke-Stall")
        ps.begin_invoke()
        state = server.state()
        assert (state["shells"], state["pools"], state["pipelines"], state["pipelines_running"]) == (1, 1, 1, 1)
        pool.close()
    deadline = time.monotonic() + 5
    while True:
        state = server.state()
        if state["pipelines_running"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (state["shells"], state["pools"], state["pipelines"], state["pipelines_running"], state["commands"]) == (
        0,
        0,
        0,
        0,
        0,
    )


# -- many host addresses from one process (fleet tests) ----------------------------------------------------


def test_listen_range_serves_the_same_endpoint_on_other_loopback_addresses(start_endpoint):
    endpoint = start_endpoint("--listen-range", "127.0.3.1-127.0.3.3")
    for address in ("127.0.3.1", "127.0.3.3"):
        with WSMan(address, port=endpoint.port, ssl=False, auth="negotiate", username=USER, password=PASSWORD,
                   encryption="always", path="wsman") as connection, RunspacePool(connection) as pool:
            ps = PowerShell(pool)
            ps.add_script("Write-Output 'hi'")
            assert ps.invoke() == ["hi"]
    # One process, one set of counters: both connections were counted where 127.0.0.1 reports.
    state = endpoint.wait_state("pools", 0)
    assert state["connections_opened"] >= 2, state


@pytest.mark.parametrize(
    "bad, why",
    [
        ("10.0.0.1-10.0.0.2", "127.0.0.0/8"),
        ("127.0.3.9-127.0.3.1", "at most"),
        ("127.0.0.1-127.1.0.0", "at most"),
        ("nonsense", "4 octets"),
    ],
)
def test_listen_range_refuses_what_is_not_a_small_loopback_range(start_endpoint, bad, why):
    with pytest.raises(RuntimeError) as info:
        start_endpoint("--listen-range", bad)
    assert "argument --listen-range" in str(info.value) and why in str(info.value), info.value
