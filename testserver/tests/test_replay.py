"""The replay server (psremote_testserver.replay) proven with the client that made the
recordings: pypsrp 0.9.1 over Basic/HTTP replays Windows transcripts to the recorded outcome.
Also unit checks of the transcript reader, the id and GUID rewriting and the queue logic."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import _read_line

from psremote_testserver import replay

TRANSCRIPTS = Path(__file__).resolve().parents[2] / "core" / "tests" / "data" / "windows-transcripts"
USER = "replay-user"
PASSWORD = "replay-Passw0rd!"


@pytest.fixture
def start_replay(tmp_path):
    started = []

    def start(name: str, *extra: str):
        args = [
            sys.executable,
            "-m",
            "psremote_testserver.replay",
            "--port",
            "0",
            "--transcript",
            str(TRANSCRIPTS / name),
            "--user",
            USER,
            "--password",
            PASSWORD,
            *extra,
        ]
        with open(tmp_path / f"replay-{len(started)}.log", "wb") as log:
            process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        started.append(process)
        url = _read_line(process, 15)
        return url

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout:
            process.stdout.close()


def state(url: str) -> dict:
    base = url.rsplit("/", 1)[0]
    with urllib.request.urlopen(base + "/_control/state", timeout=10) as response:
        return json.load(response)


def wsman(url: str, **kwargs):
    from pypsrp.wsman import WSMan

    port = int(url.split(":")[2].split("/")[0])
    options = dict(
        port=port,
        username=USER,
        password=PASSWORD,
        ssl=False,
        auth="basic",
        encryption="never",
        path="wsman",
        operation_timeout=5,
    )
    options.update(kwargs)
    return WSMan("127.0.0.1", **options)


def assert_exact(st: dict) -> None:
    assert st["unexpected"] == [], st["unexpected_detail"]
    assert st["unused"] == []
    assert st["incomplete"] == []
    assert st["mismatches"] == []
    assert st["synthesized"] == []


def test_pypsrp_replays_multiple_invocations(start_replay):
    from pypsrp.powershell import PowerShell, RunspacePool

    url = start_replay("test_psrp_multiple_invocations.yml")
    with wsman(url) as connection:
        with RunspacePool(connection) as pool:
            ps = PowerShell(pool)
            ps.add_script("1+1")
            assert ps.invoke() == [2]
            ps.close()  # Signal Terminate, so that the object can run again
            assert ps.invoke() == [2, 2]  # pypsrp keeps the first invocation's output
            assert not ps.had_errors
            ps.close()
    st = state(url)
    assert_exact(st)
    assert st["served"] == 10
    assert [m["type"] for m in st["client_messages"]] == ["SESSION_CAPABILITY", "INIT_RUNSPACEPOOL", "CREATE_PIPELINE", "CREATE_PIPELINE"]


def test_pypsrp_replays_winrs_standard(start_replay):
    from pypsrp.shell import Process, SignalCode, WinRS

    url = start_replay("test_winrs_standard.yml")
    with wsman(url) as connection, WinRS(connection) as shell:
        process = Process(shell, "cmd.exe", ["/c", "echo", "hi"])
        process.invoke()
        process.signal(SignalCode.CTRL_C)
        assert (process.stdout, process.stderr, process.rc) == (b"hi\r\n", b"", 0)
    assert_exact(state(url))


def test_pypsrp_replays_set_runspaces(start_replay):
    from pypsrp.exceptions import InvalidPSRPOperation
    from pypsrp.powershell import RunspacePool

    url = start_replay("test_psrp_set_runspaces.yml")
    with wsman(url) as connection, RunspacePool(connection) as pool:
        assert pool.get_available_runspaces() == 1
        pool.max_runspaces = 5
        assert pool.get_available_runspaces() == 5
        pool.min_runspaces = 2
        with pytest.raises(InvalidPSRPOperation):
            pool.min_runspaces = -1
        with pytest.raises(InvalidPSRPOperation):
            pool.max_runspaces = -1
    assert_exact(state(url))


def test_pypsrp_replays_a_2018_recording_with_rfc_ordered_guids(start_replay):
    # Recorded by a pypsrp that wrote GUIDs in RFC byte order (the server echoed them); pypsrp
    # 0.9.1 writes .NET order and must get its own ids back.
    from pypsrp.powershell import PowerShell, RunspacePool

    url = start_replay("test_psrp_with_input.yml")
    script = (
        "begin {\n                $DebugPreference = 'Continue'\n                Write-Debug \"Start Block\"\n"
        "            }\n            process {\n                $input\n            }\n            end {\n"
        "                Write-Debug \"End Block\"\n            }"
    )
    with wsman(url) as connection, RunspacePool(connection) as pool:
        ps = PowerShell(pool)
        ps.add_script(script)
        assert ps.invoke(["1", 2, {"a": "b"}, ["a", "b"]]) == ["1", 2, {"a": "b"}, ["a", "b"]]
        assert [d.message for d in ps.streams.debug] == ["Start Block", "End Block"]
    assert_exact(state(url))


def test_pypsrp_replays_is_alive_faults(start_replay):
    from pypsrp.powershell import RunspacePool

    url = start_replay("test_psrp_is_alive_invalid_selectors.yml")
    with wsman(url) as connection:
        pool = RunspacePool(connection)
        pool.open()
        assert pool.is_alive() is True
        assert pool.is_alive() is False  # recorded transport_error: HTTP 500 InvalidSelectors
        pool.close()
    assert_exact(state(url))

    url = start_replay("test_psrp_is_alive_http_error.yml")
    with wsman(url) as connection:
        pool = RunspacePool(connection)
        pool.open()
        assert pool.is_alive() is True
        assert pool.is_alive() is False  # recorded http_error: the connection drops
        pool.close()
    assert_exact(state(url))


def test_pypsrp_replays_disconnect_enumerate_and_connect(start_replay):
    # Disconnect/Reconnect, then a fresh client object finds both pools by Enumerate (whose
    # answer lists the live ShellIds) and attaches with Connect (connectResponseXml rewritten).
    from pypsrp.powershell import RunspacePool, RunspacePoolState

    url = start_replay("test_psrp_disconnect_runspaces.yml")
    with wsman(url) as connection:
        pool1 = RunspacePool(connection)
        pool1.open()
        pool1.disconnect()
        pool1.connect()
        pool1.disconnect()
        pool2 = RunspacePool(connection)
        pool2.open()
        pool2.disconnect()
        pools = RunspacePool.get_runspace_pools(connection)
        assert sorted(p.id for p in pools) == sorted([pool1.id, pool2.id])
        for pool in pools:
            pool.connect()
            assert pool.state == RunspacePoolState.OPENED
        for pool in pools:
            pool.close()
    assert_exact(state(url))


def test_pypsrp_replays_winrs_no_cmd_shell_fault(start_replay):
    from pypsrp.exceptions import WSManFaultError
    from pypsrp.shell import Process, WinRS

    url = start_replay("test_winrs_no_cmd_shell.yml")
    with wsman(url) as connection, WinRS(connection) as shell:
        with pytest.raises(WSManFaultError) as failure:
            Process(shell, "powershell.exe", ["Write-Host", "hi"], no_shell=True).invoke()
        assert failure.value.code == 2147942402
        process = Process(
            shell, r"C:\Windows\system32\WindowsPowerShell\v1.0\powershell.exe", ["Write-Host", "hi"], no_shell=True
        )
        process.invoke()
        process.signal("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c")
        assert process.stdout == b"hi\n"
    assert_exact(state(url))


def test_a_wrong_request_is_reported(start_replay):
    from pypsrp.exceptions import WSManFaultError
    from pypsrp.shell import Process, WinRS

    url = start_replay("test_winrs_standard.yml")
    with wsman(url) as connection, WinRS(connection) as shell:
        process = Process(shell, "cmd.exe", ["/c", "echo", "bye"])
        process.invoke()
        assert process.stdout == b"hi\r\n"  # the recording answers regardless
        with pytest.raises(WSManFaultError) as failure:
            shell.send("stdin", b"x", command_id=process.id)
        assert "replay: unexpected Send" in str(failure.value)
        process.signal("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c")
    st = state(url)
    assert st["unexpected"] == ["Send"]
    assert st["mismatches"] == [
        "shell1/cmd1 Command: ['cmd.exe', '/c', 'echo', 'bye'] != recorded ['cmd.exe', '/c', 'echo', 'hi']"
    ]


def test_basic_credentials_are_checked(start_replay):
    url = start_replay("test_winrs_standard.yml")
    request = urllib.request.Request(url, data=b"<x/>", method="POST")
    token = base64.b64encode(f"{USER}:wrong".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(request, timeout=10)
    assert failure.value.code == 401
    assert failure.value.headers["WWW-Authenticate"] == 'Basic realm="WSMAN"'
    failure.value.close()


# ---------------------------------------------------------------------------------------------
# Units


def test_reads_folded_plain_and_quoted_scalars():
    text = (
        "messages:\n"
        "- request: <a>\n"
        "    b</a>\n"
        "  response: '<x>it''s\n"
        "    folded</x>'\n"
        "  transport_error:\n"
        "    protocol: http\n"
        "    code: 500\n"
        "- request: <c/>\n"
        "  response: null\n"
        "  http_error: true\n"
    )
    entries = replay.parse_transcript(text)
    assert entries[0]["request"] == "<a> b</a>"
    assert entries[0]["response"] == "<x>it's folded</x>"
    assert entries[0]["transport_error"] == {"protocol": "http", "code": 500}
    assert entries[1]["response"] is None and entries[1]["http_error"] is True


def test_every_transcript_parses():
    for path in sorted(TRANSCRIPTS.glob("test_*.yml")):
        entries = replay.parse_transcript(path.read_text(encoding="utf-8"))
        conversation = replay.Conversation(entries)
        assert conversation.exchanges, path.name
        for rec in conversation.exchanges:
            assert rec.info.action, (path.name, rec.index)


def _message(rpid: uuid.UUID, pid: uuid.UUID, kind: int, body: bytes, rfc: bool = False) -> bytes:
    raw = (lambda g: g.bytes) if rfc else (lambda g: g.bytes_le)
    return struct.pack("<II", 1, kind) + raw(rpid) + raw(pid) + body


def _fragments(message: bytes, object_id: int, sizes) -> bytes:
    out = b""
    at = 0
    for n, size in enumerate(sizes):
        flags = (1 if n == 0 else 0) | (2 if n == len(sizes) - 1 else 0)
        blob = message[at : at + size]
        out += struct.pack(">QQBI", object_id, n, flags, len(blob)) + blob
        at += size
    assert at == len(message)
    return out


def test_rewrites_guids_across_fragment_boundaries_and_call_ids():
    old_rpid, old_pid = uuid.uuid4(), uuid.uuid4()
    new_rpid, new_pid = uuid.uuid4(), uuid.uuid4()
    table = {}
    replay._add_guid(table, str(old_rpid), str(new_rpid))
    replay._add_guid(table, str(old_pid), str(new_pid))
    body = b"\xef\xbb\xbf<Obj RefId=\"0\"><MS><I32 N=\"x\">1</I32></MS></Obj>"
    msg = _message(old_rpid, old_pid, 0x00041004, body)
    # The PID straddles the first two fragments.
    frags = replay.split_fragments(_fragments(msg, 7, [30, 20, len(msg) - 50]))
    chunks = [frags[:1], frags[1:]]  # two rsp:Stream elements
    replay._rewrite_messages(chunks, table, {})
    frags = chunks[0] + chunks[1]
    assert [len(f.blob) for f in frags] == [30, 20, len(msg) - 50]
    joined = b"".join(f.blob for f in frags)
    assert joined == _message(new_rpid, new_pid, 0x00041004, body)
    # A pre-2019 recording echoes RFC byte order; the client gets .NET order. Null stays null.
    null = uuid.UUID(int=0)
    rfc = replay.split_fragments(_fragments(_message(old_rpid, null, 0x00021005, body, rfc=True), 1, [len(body) + 40]))
    replay._rewrite_messages([rfc], table, {})
    assert rfc[0].blob == _message(new_rpid, null, 0x00021005, body)
    avail = b"<Obj RefId=\"0\"><MS><B N=\"SetMinMaxRunspacesResponse\">true</B><I64 N=\"ci\">0</I64></MS></Obj>"
    frags = replay.split_fragments(_fragments(_message(old_rpid, null, 0x00021004, avail), 2, [len(avail) + 40]))
    replay._rewrite_messages([frags], table, {0: 12})
    assert frags[0].blob.endswith(b'<I64 N="ci">12</I64></MS></Obj>')


def test_conversation_routes_by_target_and_holds_pool_receives():
    entries = replay.parse_transcript((TRANSCRIPTS / "test_psrp_reset_runspace_state.yml").read_text(encoding="utf-8"))
    conv = replay.Conversation(entries, hold_cap=0.2)
    keys = [(replay.short_action(r.info.action), r.key[1]) for r in conv.exchanges]
    assert keys == [
        ("Create", "-"),
        ("Receive", "shell1"),
        ("Receive", "shell1"),
        ("Command", "shell1"),
        ("Receive", "shell1/cmd1"),
        ("Send", "shell1"),
        ("Receive", "shell1"),
        ("Command", "shell1"),
        ("Receive", "shell1/cmd2"),
        ("Delete", "shell1"),
    ]
    # The Receive answering RESET_RUNSPACE_STATE waits for the Send before it.
    assert conv.exchanges[6].prerequisites == [0, 5]
    assert conv.exchanges[8].prerequisites == [0, 7]
