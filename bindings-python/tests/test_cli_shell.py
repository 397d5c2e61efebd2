"""``psremote shell`` on a pseudo-terminal against the endpoint: PowerShell's views formatted by
the server for the terminal's width, the error view, escaping, completion through TabExpansion2,
history across sessions, the remote prompt, Ctrl-C and exit."""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import stat
import struct
import subprocess
import termios
import time

import pytest
from test_cli import PROMPT, PSREMOTE, Pty

from psremote import cli_shell
from psremote.records import ErrorRecord


class SizedPty(Pty):
    """A Pty whose terminal has ``columns`` x ``rows`` cells."""

    def __init__(self, args, env, columns=120, rows=40):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.process = subprocess.Popen(["setsid", "-c", *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.buffer = b""


def shell_env(child_env, home, **extra):
    env = dict(child_env, HOME=str(home), TERM="xterm", **extra)
    for name in ("NO_COLOR", "COLUMNS", "LINES", "PSREMOTE_HISTORY", "XDG_STATE_HOME", "INPUTRC"):
        env.pop(name, None)
    env.update(extra)
    return env


def open_shell(env, *options, columns=120):
    term = SizedPty(PSREMOTE + ["shell", "--url", env["PSREMOTE_URL"], "--auth", "ntlm", *options], env, columns=columns)
    term.read_until(PROMPT)
    return term


def run(term, line, until=PROMPT):
    term.send(line + "\r")
    return term.read_until(until)


def screen_lines(screen: bytes):
    """The screen's lines without colour codes (the only escape sequences the shell writes)."""
    text = re.sub(rb"\x1b\[[0-9;?]*[a-zA-Z]", b"", screen).decode()
    return [line.rstrip("\r") for line in text.split("\n")]


def finish(term):
    """Leaves with 'exit' (the exit status), or kills a shell that is stuck; once."""
    if getattr(term, "closed", False):
        return term.process.returncode
    term.closed = True
    if term.process.poll() is None:
        try:
            term.send("exit\r")
        except OSError:
            pass
    return term.close()


def leave(term):
    assert finish(term) == 0


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    (root / "subdir").mkdir(parents=True)
    (root / "notes.txt").write_text("twelve bytes")
    (root / "subdir" / "inner.txt").write_text("")
    return root


def test_views_errors_prompt_and_escaping(child_env, tmp_path, tree):
    (tree / "evil\x1b[31mred\x07").write_text("x")
    term = open_shell(shell_env(child_env, tmp_path, PSREMOTE_HISTORY="off"))
    try:
        # The prompt is the remote prompt function's: the location after Set-Location.
        screen = run(term, f"Set-Location '{tree}'")
        assert f"]: PS {tree}> ".encode() in screen

        out = screen_lines(run(term, "Get-ChildItem"))
        at = out.index(f"    Directory: {tree}")
        assert out[at + 2 : at + 4] == [
            "Mode                 LastWriteTime         Length Name",
            "----                 -------------         ------ ----",
        ]
        rows = out[at + 4 : at + 7]
        assert rows[0].startswith("d-----") and rows[0].endswith("                subdir")
        assert rows[1].startswith("-a----") and rows[1].endswith(" evil\\u{001b}[31mred\\u{0007}")
        assert rows[2].endswith("             12 notes.txt")

        # More than four properties: the list view.
        out = screen_lines(run(term, "New-TestObject -Properties 5 -Size 3"))
        assert [line for line in out if line.startswith("Property")] == [f"Property{i} : abc" for i in range(1, 6)]

        # Errors in PowerShell's view, in red; a BEL from the server is shown, not rung.
        screen = run(term, 'Get-Item nope; Write-Error "bell`a"')
        assert f"\x1b[31mGet-Item: Cannot find path '{tree}/nope' because it does not exist.".encode() in screen
        assert b"\x1b[31mWrite-Error: bell\\u{0007}" in screen
        assert b"\x07" not in screen

        # Progress is one transient line on the terminal, escaped, cleared when the command ends;
        # warnings and verbose messages are yellow lines.
        screen = run(term, 'Write-Progress -Activity "Copy`a" -Status Half -PercentComplete 50; Write-Warning careful; Write-Verbose chatty')
        assert b"\r\x1b[KCopy\\u{0007}: Half [50%]" in screen and b"\x07" not in screen
        assert b"\x1b[33mWARNING: careful" in screen and b"\x1b[33mVERBOSE: chatty" in screen

        # A statement that is not finished continues on '>> '.
        term.send("Write-Output 'first\r")
        term.read_until(rb">> ")
        out = screen_lines(run(term, "second'"))
        assert "first" in out and "second" in out
        leave(term)
    finally:
        finish(term)


# The end of a line's output: 6*7 as the server prints it (not as the terminal echoes it), then a prompt.
DONE = rb"\r\n42\r\n[\s\S]*" + PROMPT


def test_width_follows_the_terminal(child_env, tmp_path):
    layouts = {}
    for columns in (120, 60):
        term = open_shell(shell_env(child_env, tmp_path, PSREMOTE_HISTORY="off"), columns=columns)
        try:
            out = screen_lines(run(term, "New-TestObject -Properties 2 -Size 80; 6*7", until=DONE))
            leave(term)
        finally:
            finish(term)
        header = next(line for line in out if line.startswith("Property1"))
        row = next(line for line in out if line.startswith("abc"))
        layouts[columns] = (header.split(), row)
    # 120 columns: both columns, the second cut with an ellipsis to end in the last-but-one cell.
    assert layouts[120][0] == ["Property1", "Property2"]
    assert len(layouts[120][1]) == 119 and layouts[120][1].endswith("\u2026")
    # 60 columns: the second column cannot fit and is left out; the first is cut.
    assert layouts[60][0] == ["Property1"]
    assert len(layouts[60][1]) == 59 and layouts[60][1].endswith("\u2026")

    # A terminal resized during the session: the next line is formatted for the new width.
    term = open_shell(shell_env(child_env, tmp_path, PSREMOTE_HISTORY="off"), columns=120)
    try:
        fcntl.ioctl(term.master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 60, 0, 0))
        # (The resize makes readline redraw its prompt: wait for the output's end, not a prompt.)
        out = screen_lines(run(term, "New-TestObject -Properties 2 -Size 80; Write-Error after-resize; 6*7", until=DONE))
        header = next(line for line in out if line.startswith("Property1"))
        row = next(line for line in out if line.startswith("abc"))
        assert (header.split(), row) == layouts[60]
        assert "Write-Error: after-resize" in out
        leave(term)
    finally:
        finish(term)


def test_tab_completion_through_the_server(child_env, tmp_path, tree):
    term = open_shell(shell_env(child_env, tmp_path, PSREMOTE_HISTORY="off"))
    try:
        run(term, f"Set-Location '{tree}'")
        term.send("Get-Chi\t")
        term.read_until(rb"ldItem")
        term.send(" -Pa\t")
        term.read_until(rb"th")
        term.send(" ./sub\t")
        term.read_until(rb"dir")
        out = screen_lines(run(term, ""))
        # The line ran as completed: Get-ChildItem -Path ./subdir.
        assert f"    Directory: {tree}/subdir" in out and any(line.endswith(" inner.txt") for line in out)

        # Several matches: a second Tab lists them by their ListItemText.
        term.send("Write-\t\t")
        listed = screen_lines(term.read_until(rb"Write-Warning[\s\S]*Write-"))
        names = " ".join(listed).split()
        assert {"Write-Error", "Write-Output", "Write-Verbose", "Write-Warning"} <= set(names)
        term.send("\x15")  # clear the line
        out = screen_lines(run(term, "Write-Output done"))
        assert "done" in out
        leave(term)
    finally:
        finish(term)


def test_history_is_kept_across_sessions(child_env, tmp_path):
    state = tmp_path / "state"
    env = shell_env(child_env, tmp_path, XDG_STATE_HOME=str(state))
    term = open_shell(env)
    try:
        run(term, "Write-Output first-session")
        run(term, " Write-Output not-recorded")
        # An answer to Read-Host is read outside readline: it never reaches the history.
        term.send("Read-Host 'Answer'\r")
        term.read_until(rb"Answer: ")
        run(term, "hunter2")
        leave(term)
    finally:
        finish(term)
    path = state / "psremote" / "history"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    recorded = path.read_text()
    assert "Write-Output first-session" in recorded and "Read-Host 'Answer'" in recorded
    assert "not-recorded" not in recorded and "hunter2" not in recorded

    # A second session finds it: Up brings the line back.
    term = open_shell(env)
    try:
        term.send("\x1b[A" * 3)  # exit, Read-Host, then the first line
        term.read_until(rb"first-session")
        out = screen_lines(run(term, ""))
        assert "first-session" in out
        term.send("\x04")  # Ctrl-D leaves too
        assert term.close() == 0
        term.closed = True
    finally:
        finish(term)

    # --no-history reads and writes nothing.
    other = tmp_path / "other-state"
    term = open_shell(dict(env, XDG_STATE_HOME=str(other)), "--no-history")
    try:
        run(term, "Write-Output unrecorded")
        leave(term)
    finally:
        finish(term)
    assert not other.exists()


def test_ctrl_c_stops_the_pipeline_and_exit_leaves(child_env, start_endpoint, tmp_path):
    endpoint = start_endpoint()
    env = shell_env(child_env, tmp_path, PSREMOTE_URL=endpoint.url, PSREMOTE_HISTORY="off")
    term = open_shell(env)
    try:
        term.send("Invoke-Stall\r")
        assert endpoint.wait_state("pipelines_running", 1)["pipelines_running"] == 1
        term.send("\x03")
        term.read_until(rb"\^C[\s\S]*" + PROMPT)
        assert endpoint.wait_state("pipelines_running", 0)["pipelines_running"] == 0
        assert "still here" in screen_lines(run(term, "Write-Output 'still here'"))
        term.send("exit\r")
        assert term.close() == 0
    finally:
        if term.process.poll() is None:
            term.process.kill()
            term.close()
    assert endpoint.wait_state("pools", 0)["pools"] == 0


def test_completion_gives_up_on_a_slow_server(client):
    with client.runspace_pool() as pool:
        # The endpoint never answers the completion of a line starting with Invoke-Stall.
        assert cli_shell.completions(pool, "Invoke-Stall -", 14, timeout=0.5) == (14, 0, [])
        # The stalled pipeline was stopped; the pool completes the next line.
        index, length, matches = cli_shell.completions(pool, "Get-Process -N", 14)
        assert (index, length, matches) == (12, 2, [("-Name", "Name")])
        assert ("$PSVersionTable", "PSVersionTable") in cli_shell.completions(pool, "Write-Output $PSV", 17)[2]


def test_history_keeps_the_last_lines(tmp_path):
    readline = pytest.importorskip("readline")
    path = tmp_path / "dir" / "history"
    history = cli_shell.History(str(path))
    readline.clear_history()
    for i in range(cli_shell.HISTORY_LENGTH + 5):
        readline.add_history(f"Write-Output {i}")
        if i == cli_shell.HISTORY_LENGTH:
            # Lines PSReadLine takes for sensitive are not written to the file.
            readline.add_history("$p = ConvertTo-SecureString 'hunter2' -AsPlainText -Force")
            readline.add_history("Connect-Api -ApiKey abc123")
    history.save()
    readline.clear_history()
    lines = path.read_text().splitlines()
    assert len(lines) == cli_shell.HISTORY_LENGTH and lines[-1] == f"Write-Output {cli_shell.HISTORY_LENGTH + 4}"
    assert not any("hunter2" in line or "abc123" in line for line in lines)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_incomplete_statements():
    assert cli_shell.incomplete("Get-Thing {")
    assert cli_shell.incomplete("Write-Output 'open")
    assert cli_shell.incomplete('Write-Output "a `" b')
    assert cli_shell.incomplete("Get-ChildItem |")
    assert cli_shell.incomplete("Get-ChildItem `")
    assert not cli_shell.incomplete("if ($x) { 'a}' }")
    assert not cli_shell.incomplete("Write-Output 'it''s' # {")
    assert not cli_shell.incomplete("Write-Output done")


def test_history_location():
    args = argparse.Namespace(history=None, no_history=False)
    assert cli_shell.history_path(args, {"XDG_STATE_HOME": "/state"}) == "/state/psremote/history"
    home = os.path.expanduser("~")
    assert cli_shell.history_path(args, {"XDG_STATE_HOME": "relative"}) == f"{home}/.local/state/psremote/history"
    assert cli_shell.history_path(args, {}) == f"{home}/.local/state/psremote/history"
    assert cli_shell.history_path(args, {"PSREMOTE_HISTORY": "/h/file"}) == "/h/file"
    assert cli_shell.history_path(args, {"PSREMOTE_HISTORY": "off"}) is None
    assert cli_shell.history_path(argparse.Namespace(history="/x", no_history=False), {"PSREMOTE_HISTORY": "off"}) == "/x"
    assert cli_shell.history_path(argparse.Namespace(history="/x", no_history=True), {}) is None


def test_concise_error_view_of_failed_pipelines():
    assert cli_shell.concise(ErrorRecord("boom", activity="Invoke-Failure")) == "Invoke-Failure: boom"
    assert cli_shell.concise(ErrorRecord("parse error")) == "parse error"


def set_mode(term, mode):
    """Turns on one of the endpoint's interactive misbehaviours (psrp_interactive.TEST_MODE)."""
    return run(term, f"New-Item env: -Name PSREMOTE_TEST_INTERACTIVE -Value {mode} | Out-Null")


def test_a_hostile_server_never_breaks_the_shell(child_env, tmp_path):
    term = open_shell(shell_env(child_env, tmp_path, PSREMOTE_HISTORY="off"))
    try:
        # ConsoleColor values out of range and a progress of 12345 percent: the text is printed
        # uncoloured, the progress line without its percentage, the shell goes on.
        set_mode(term, "host-garbage")
        screen = run(term, "Write-Output survived")
        assert b"odd survived" in screen and b"Traceback" not in screen
        assert b"\r\x1b[KGarbage: status" in screen and b"12345" not in screen

        # A prompt of a megabyte with a title escape in it: escaped and cut.
        term.send("New-Item env: -Name PSREMOTE_TEST_INTERACTIVE -Value prompt-huge | Out-Null\r")
        screen = term.read_until(rb"PPP\.\.\.")
        assert b"\x1b]0;" not in screen and b"\x07" not in screen
        assert b"PS \\u{001b}]0;title\\u{0007}PPP" in screen
        assert len(max(screen.split(b"\n"), key=len)) < 2 * cli_shell.PROMPT_LIMIT

        # A prompt function that throws: the location's prompt instead.
        term.send("New-Item env: -Name PSREMOTE_TEST_INTERACTIVE -Value prompt-throws | Out-Null\r")
        term.read_until(rb"\]: PS /[^\r\n]*> ")

        # CompletionMatches that is no list, a negative ReplacementIndex: nothing completes.
        set_mode(term, "completion-garbage")
        term.send("Write-Outp\t")
        term.send("ut garbage-ignored\r")
        assert "garbage-ignored" in screen_lines(term.read_until(PROMPT))

        # A thousand matches: the shell lists the first COMPLETION_LIMIT.
        set_mode(term, "completion-huge")
        term.send("Get-\t")
        term.read_until(rb"Huge00")  # the matches' common start
        term.send("\t\t")
        last = cli_shell.COMPLETION_LIMIT - 1
        listed = term.read_until(f"Get-Huge{last:05d}[\\s\\S]*{PROMPT.decode()}".encode())
        assert b"Get-Huge00000" in listed and f"Get-Huge{last + 1:05d}".encode() not in listed
        term.send("\x15")
        assert "still here" in screen_lines(run(term, "Write-Output 'still here'"))
        leave(term)
    finally:
        finish(term)


def test_a_server_that_goes_away_ends_the_session(child_env, start_endpoint, tmp_path):
    endpoint = start_endpoint()
    state = tmp_path / "state"
    env = shell_env(child_env, tmp_path, PSREMOTE_URL=endpoint.url, XDG_STATE_HOME=str(state))
    term = open_shell(env)
    try:
        run(term, "Write-Output before")
        endpoint.stop()
        term.send("Write-Output after\r")
        with pytest.raises(AssertionError, match="terminal closed"):
            term.read_until(rb"never printed")
        screen = term.buffer.decode(errors="replace")
        # One line saying so, the connection's status, the history kept, no traceback and no
        # second complaint about closing the pool.
        assert term.close() == 3
        term.closed = True
        assert "psremote: the session to 127.0.0.1 ended: ConnectError:" in screen
        assert "Traceback" not in screen and "cannot close" not in screen
    finally:
        finish(term)
    assert "Write-Output after" in (state / "psremote" / "history").read_text()


def test_get_credential_shows_its_prompt_escaped_and_keeps_the_password_out(child_env, tmp_path):
    state = tmp_path / "state"
    term = open_shell(shell_env(child_env, tmp_path, XDG_STATE_HOME=str(state)))
    try:
        # The caption and message of PromptForCredential are shown (they were swallowed with
        # the writes the shell prints from the event stream), escaped like every server string.
        term.send('Get-Credential -UserName "bob`a" -Title "Sign`a in" -Message "For the share"\r')
        screen = term.read_until(rb"Password for user bob\\u\{0007\}: ")
        assert b"Sign\\u{0007} in" in screen and b"For the share" in screen and b"\x07" not in screen
        out = screen_lines(run(term, "pw-not-kept"))
        assert "pw-not-kept" not in " ".join(out)  # getpass does not echo it
        leave(term)
    finally:
        finish(term)
    recorded = (state / "psremote" / "history").read_text()
    assert "Get-Credential" in recorded and "pw-not-kept" not in recorded


def test_cli_host_prompt_shows_the_label_escaped(monkeypatch, capsys):
    from psremote.cli import CliHost

    # PowerShell's Read-Host -Prompt arrives as a Prompt host call with one FieldDescription.
    host = CliHost(color=False)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("typed\n"))
    answers = host.prompt("", "", [{"Name": "Name\x1b[2J", "Label": "", "ParameterTypeFullName": "System.String"}])
    assert answers == {"Name\x1b[2J": "typed"}
    assert capsys.readouterr().out == "Name\\u{001b}[2J: "
    # The server's own writes stay no-ops here (printed from the event stream instead).
    host.write_line("not printed")
    assert capsys.readouterr().out == ""


def test_a_stalled_prompt_function_gives_the_plain_prompt(client, monkeypatch):
    monkeypatch.setattr(cli_shell, "PROMPT_TIMEOUT", 0.5)
    with client.runspace_pool() as pool:
        assert cli_shell.remote_prompt(pool).startswith("PS /")  # the endpoint's own prompt
        pool.run_ps("New-Item env: -Name PSREMOTE_TEST_INTERACTIVE -Value prompt-stalls")
        # No second wait for Get-Location after the prompt function timed out.
        assert cli_shell.remote_prompt(pool) == "PS> "
        # The stalled pipeline was stopped: the pool runs the next line.
        assert pool.run_ps("Write-Output next").output == ["next"]


def wait_for_echo_off(term):
    """Waits until the terminal's echo is off in its line mode: a secret's read has begun
    (readline at the prompt turns both off; a pty master reports its terminal's settings)."""
    term.read_until(rb"AsSecureString\r\n")
    for _ in range(400):
        lflag = termios.tcgetattr(term.master)[3]
        if not lflag & termios.ECHO and lflag & termios.ICANON:
            return
        time.sleep(0.05)
    raise AssertionError("the secret's read never turned echo off")


def test_ctrl_c_at_a_read_host_prompt_gives_the_terminal_back(child_env, tmp_path):
    term = open_shell(shell_env(child_env, tmp_path, PSREMOTE_HISTORY="off"))
    try:
        # Ctrl-C while Read-Host waits: the read gives up with the pipeline, so the next line
        # typed at the prompt runs (it was swallowed by the read left waiting on the terminal).
        term.send("Read-Host 'Q'\r")
        term.read_until(rb"Q: ")
        term.send("\x03")
        term.read_until(rb"\^C[\s\S]*" + PROMPT)
        assert "after-read-host" in screen_lines(run(term, "Write-Output after-read-host"))

        # The same for a secret, whose read turned echo off: the terminal echoes again.
        term.send("Read-Host -AsSecureString\r")
        wait_for_echo_off(term)
        term.send("\x03")
        term.read_until(rb"\^C[\s\S]*" + PROMPT)
        term.send("Write-Output echoed-again\r")
        screen = term.read_until(rb"echoed-again\r\n[\s\S]*" + PROMPT)
        assert screen.count(b"echoed-again") == 2  # the terminal's echo, then the output

        # A secret typed once the read turned echo off (as a person types after the prompt) is
        # not echoed.
        term.send("Read-Host -AsSecureString\r")
        wait_for_echo_off(term)
        term.send("typed-secret\r")
        screen = term.read_until(PROMPT)
        assert b"typed-secret" not in screen
        leave(term)
    finally:
        finish(term)
