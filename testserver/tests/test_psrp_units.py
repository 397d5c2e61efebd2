"""Unit tests of the PSRP engine's pure parts: script grammar, parameter binding, fragment framing."""

from __future__ import annotations

import struct
import uuid

import pytest
from psremote_testserver import psrp_runtime as runtime
from psremote_testserver import psrp_script as script
from psremote_testserver import psrp_wire as wire
from psremote_testserver.psrp_commands import format_lines
from psremote_testserver.psrp_runtime import COMMANDS, Param, TerminatingError, bind, script_pairs


# -- script grammar ------------------------------------------------------------------------------------
def test_statements_split_on_semicolons_and_newlines():
    statements = script.parse("Write-Output a; Write-Output b\n\n# note\nGet-Date | Out-String -Stream")
    assert [s.text for s in statements] == ["Write-Output a", "Write-Output b", "Get-Date | Out-String -Stream"]
    assert [c.name for c in statements[2].commands] == ["Get-Date", "Out-String"]


@pytest.mark.parametrize(
    "text, value",
    [("1+1", 2), ("2 * 3 - 1", 5), ("10/4", 2.5), ("7 -2", 5), ("2*-3", -6), ("8/2", 4)],
)
def test_arithmetic_statements(text, value):
    (statement,) = script.parse(text)
    assert statement.arithmetic == value


def test_literals_and_quotes():
    (statement,) = script.parse("""Cmd 'it''s' "a`tb""c" 42 -7 1.5 $TRUE $null bare,word""")
    values = [a.value for a in statement.commands[0].arguments]
    assert values == ["it's", 'a\tb"c', 42, -7, 1.5, True, None, ["bare", "word"]]


def test_parameters_and_colon_values():
    (statement,) = script.parse("Cmd -Name value -Switch -Count:3 -List 1,2")
    arguments = statement.commands[0].arguments
    assert [(type(a).__name__, getattr(a, "name", None)) for a in arguments] == [
        ("Parameter", "Name"), ("Values", None), ("Parameter", "Switch"), ("Parameter", "Count"), ("Parameter", "List"), ("Values", None),
    ]  # fmt: skip
    assert arguments[3].value == 3 and arguments[3].has_value


def test_value_source_statement():
    (statement,) = script.parse("1, 'two', 3 | Measure-Input")
    assert statement.source.items == [1, "two", 3]
    assert [c.name for c in statement.commands] == ["Measure-Input"]


@pytest.mark.parametrize("text", ["Write-Output 'open", 'Write-Output "open', "Write-Output a |", "| Write-Output"])
def test_syntax_errors(text):
    with pytest.raises(script.ScriptError):
        script.parse(text)


# -- binding ----------------------------------------------------------------------------------------------
def spec(*params):
    def run(inv):
        yield from ()

    return runtime.CommandSpec("Test-Thing", run, list(params), "Test.ThingCommand")


def test_bind_positional_named_and_remaining():
    s = spec(
        Param("Path", position=0, kind="str"),
        Param("Count", kind="int"),
        Param("Rest", remaining=True),
        Param("Force", switch=True),
    )
    assert bind(s, [(None, "p"), ("count", "5"), (None, "x"), (None, "y"), ("Fo", None)]) == {
        "Path": "p", "Count": 5, "Rest": ["x", "y"], "Force": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    "pairs, error_id",
    [
        ([("Bogus", 1)], "NamedParameterNotFound"),
        ([(None, 1), (None, 2)], "PositionalParameterNotFound"),
        ([("Count", "abc")], "CannotConvertArgumentNoMessage"),
        ([], "MissingMandatoryParameter"),
        ([("Path", "a"), ("Path", "b")], "ParameterAlreadyBound"),
    ],
)
def test_bind_errors(pairs, error_id):
    s = spec(Param("Path", position=0, kind="str", mandatory=True), Param("Count", kind="int"))
    if error_id == "MissingMandatoryParameter":
        pairs = [("Count", 1)]
    with pytest.raises(TerminatingError) as failure:
        bind(s, pairs)
    assert failure.value.record.FullyQualifiedErrorId == f"{error_id},Test.ThingCommand"


def test_script_switches_do_not_take_values():
    (statement,) = script.parse("ConvertTo-SecureString -AsPlainText pw -Force")
    convert = COMMANDS["convertto-securestring"]
    assert bind(convert, script_pairs(convert, statement.commands[0])) == {
        "AsPlainText": True,
        "String": "pw",
        "Force": True,
    }
    (statement,) = script.parse("Write-Progress -Activity")
    with pytest.raises(TerminatingError) as failure:
        script_pairs(COMMANDS["write-progress"], statement.commands[0])
    assert failure.value.record.FullyQualifiedErrorId.startswith("MissingArgument,")


def test_every_command_is_documented():
    readme = (__import__("pathlib").Path(__file__).parents[1] / "README.md").read_text()
    missing = [c.name for c in COMMANDS.values() if f"`{c.name}`" not in readme]
    assert not missing


def test_format_lines():
    assert format_lines("a\nb") == ["a", "b"]
    assert format_lines(True) == ["True"]
    assert format_lines(None) == []


# -- fragments ----------------------------------------------------------------------------------------------
def fragment(object_id, fragment_id, flags, blob):
    return struct.pack(">QQBI", object_id, fragment_id, flags, len(blob)) + blob


def message(message_type=0x00041002, pid=None, data=b"<S>x</S>"):
    return struct.pack("<II", 2, message_type) + uuid.uuid4().bytes_le + (pid or uuid.UUID(int=0)).bytes_le + data


def test_defragmenter_joins_and_checks_order():
    blob = message(data=b"<S>" + b"y" * 100 + b"</S>")
    parts = [blob[:50], blob[50:90], blob[90:]]
    defragmenter = wire.Defragmenter()
    assert defragmenter.feed(fragment(7, 0, 1, parts[0]) + fragment(7, 1, 0, parts[1])) == []
    (done,) = defragmenter.feed(fragment(7, 2, 2, parts[2]))
    assert done.blob == blob and done.message_type == 0x00041002 and done.pipeline_id is None
    with pytest.raises(wire.FragmentError):
        wire.Defragmenter().feed(fragment(8, 1, 2, parts[0]))
    with pytest.raises(wire.FragmentError):
        wire.Defragmenter().feed(fragment(8, 0, 3, b"short"))


def test_out_queue_fragments_within_budget():
    queue = wire.OutQueue()
    queue.push(1, b"a" * 1000)
    queue.push(2, b"b" * 10)
    taken = queue.take(chars=1000, per_fragment_chars=50, fragment_size=300)
    headers = [struct.unpack(">QQBI", f[:21]) for f in taken]
    assert headers == [(1, 0, 1, 300), (1, 1, 0, 300)]
    assert sum(50 + wire.base64_length(len(f)) for f in taken) <= 1000
    rest = queue.take(chars=100000, per_fragment_chars=50, fragment_size=300)
    assert [struct.unpack(">QQBI", f[:21]) for f in rest] == [(1, 2, 0, 300), (1, 3, 2, 100), (2, 0, 3, 10)]
    assert queue.pending == 0 and len(queue) == 0


def test_out_queue_always_makes_progress():
    queue = wire.OutQueue()
    queue.push(1, b"z" * 500)
    (first,) = queue.take(chars=60, per_fragment_chars=50, fragment_size=1000)
    assert len(first) > 21


def test_largest_blob_fits():
    for chars in range(40, 400):
        blob = wire.largest_blob(chars)
        assert wire.base64_length(21 + blob) <= chars < wire.base64_length(21 + blob + 4)


# -- messages the pool makes once -------------------------------------------------------------------------
def test_completed_state_is_what_psrpcore_serialises():
    from psrpcore import ServerPipeline, ServerRunspacePool
    from psremote_testserver.psrp_pool import completed_state_clixml

    pool = ServerRunspacePool()
    pipeline = ServerPipeline(pool, uuid.uuid4())
    pipeline.complete()
    (blob,) = wire.split_whole_fragments(pool.data_to_send().data)
    assert struct.unpack_from("<I", blob, 4)[0] == wire.PIPELINE_STATE
    assert blob[wire.MESSAGE_HEADER_LEN :] == completed_state_clixml()
