"""``psremote shell HOST``: an interactive remote prompt that behaves as ``Enter-PSSession``.

Each line runs on the server as Enter-PSSession runs it: the line as a script whose errors are
merged into its output, followed by ``Out-Default``, so the server formats everything (tables,
lists, the error view) for the width of this terminal (the host's ``BufferSize``, sent when
the pool opens) and sends the text back as host calls (``WriteLine``, ``WriteErrorLine``), which
are printed here, in red for errors. After the terminal was resized the line ends in
``Out-String -Stream -Width <new width>`` instead (the pool's host data keep the old size). Warnings, verbose and debug messages arrive as records and
are printed as PowerShell prints them (``WARNING: ...``); progress is a transient line.
Everything the server sends is escaped before it reaches the terminal (``_text.printable``),
and what it sends is data, never trusted to be well formed: a colour that is no ConsoleColor
prints uncoloured, a prompt is cut after :data:`PROMPT_LIMIT` characters, a completion answer
gives at most :data:`COMPLETION_LIMIT` matches, and a prompt function that fails gives
``PS <location>> ``. When the server goes away the shell says so in one line and exits with
status 3 (:data:`EXIT_SESSION_LOST`); a line that fails while the pool lives is shown in red.

After each line the prompt comes from the remote ``prompt`` function (falling back to
``Get-Location``), shown as ``[host]: PS C:\\Users\\alice> ``. Tab completes through the
server's ``TabExpansion2`` on a separate pipeline of the same pool, giving up (no completions)
after :data:`COMPLETION_TIMEOUT` seconds. A line that is not finished (an open bracket or
quote, a trailing backtick or ``|``) continues on a ``>> `` line; an empty line ends it.

History is kept across sessions in ``$XDG_STATE_HOME/psremote/history`` (default
``~/.local/state/psremote/history``), created 0600, the last :data:`HISTORY_LENGTH` lines;
``--history FILE`` or ``$PSREMOTE_HISTORY`` moves it, ``--no-history`` or
``PSREMOTE_HISTORY=off`` turns it off. It holds only the lines typed at the prompt (answers to
Read-Host and Get-Credential are read outside readline and never recorded); a line typed with a
leading space is not recorded either, nor written is a line that PSReadLine would take for
sensitive (naming a password, AsPlainText, a token, an API key or a secret).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from psremote._text import printable
from psremote.client import Client, RunspacePool
from psremote.exceptions import OperationTimeoutError, PSRemoteError
from psremote.records import ErrorRecord, HostCall, InformationRecord, ProgressRecord, PSEvent

HISTORY_ENV = "PSREMOTE_HISTORY"
HISTORY_LENGTH = 1000
COMPLETION_TIMEOUT = 3.0
PROMPT_TIMEOUT = 5.0
#: The longest remote prompt shown (PowerShell's own are a line); a longer one is cut.
PROMPT_LIMIT = 256
#: The most completions taken from one TabExpansion2 answer (readline lists them all).
COMPLETION_LIMIT = 500
_OFF = ("", "off", "none", "0", "no", "false")
# PSReadLine's rule for lines it keeps out of the history file (they stay for this session).
_SENSITIVE = re.compile(r"password|asplaintext|token|apikey|secret", re.IGNORECASE)
_CLOSERS = {"(": ")", "{": "}", "[": "]"}
# ConsoleColor value -> ANSI foreground code.
_CONSOLE_ANSI = ("30", "34", "32", "36", "31", "35", "33", "37", "90", "94", "92", "96", "91", "95", "93", "97")


def _console_ansi(value: Any) -> Optional[str]:
    """The ANSI code of a ConsoleColor the server named; None for anything that is not one."""
    try:
        index = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return _CONSOLE_ANSI[index] if 0 <= index < len(_CONSOLE_ANSI) else None


def _one_line(text: Any) -> str:
    """Server text for one terminal line (a prompt, a completion): escaped, and its line
    breaks and tabs too, which printable leaves for multi-line output."""
    return "".join(f"\\u{{{ord(c):04x}}}" if c in "\n\t" else c for c in printable(text))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--history",
        metavar="FILE",
        help=f"keep the command history in FILE (default ${HISTORY_ENV}, else $XDG_STATE_HOME/psremote/history "
        "or ~/.local/state/psremote/history)",
    )
    parser.add_argument("--no-history", action="store_true", help=f"keep no history file (also {HISTORY_ENV}=off)")


# --- history ------------------------------------------------------------------------------------


def history_path(args: argparse.Namespace, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Where the history lives, or None when it is turned off."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    if getattr(args, "no_history", False):
        return None
    if getattr(args, "history", None):
        return os.path.expanduser(args.history)
    configured = env.get(HISTORY_ENV)
    if configured is not None:
        return None if configured.strip().lower() in _OFF else os.path.expanduser(configured)
    state = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # the XDG rule: a relative value is ignored
        state = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "psremote", "history")


class History:
    """readline's history, read from and written back to a file only its owner can read."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        try:
            import readline
        except ImportError:  # pragma: no cover - Windows without pyreadline
            self.path = None
            return
        self.readline = readline
        readline.set_history_length(HISTORY_LENGTH)
        if self.path is None:
            return
        try:
            readline.read_history_file(self.path)
        except OSError:
            pass

    def forget_last(self) -> None:
        """Drops the line just entered (it started with a space)."""
        readline = getattr(self, "readline", None)
        if readline is not None and readline.get_current_history_length() > 0:
            readline.remove_history_item(readline.get_current_history_length() - 1)

    def save(self) -> None:
        if self.path is None:
            return
        readline = self.readline
        lines = [readline.get_history_item(i) for i in range(1, readline.get_current_history_length() + 1)]
        kept = [line for line in lines if line is not None and not _SENSITIVE.search(line)]
        if len(kept) != len(lines):
            # As PSReadLine does: a line that looks like it holds a secret (a password given
            # with -AsPlainText, a token) is never written to the file.
            readline.clear_history()
            for line in kept:
                readline.add_history(line)
        try:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            # Created 0600 before readline writes into it (fopen keeps an existing file's mode).
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
            self.readline.write_history_file(self.path)
        except OSError as e:
            sys.stderr.write(f"psremote: the history was not saved: {e}\n")


# --- input --------------------------------------------------------------------------------------


def incomplete(text: str) -> bool:
    """Whether PowerShell would ask for more: an open bracket or quote (here-strings aside), a
    trailing backtick or pipe."""
    stack: List[str] = []
    quote: Optional[str] = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote is not None:
            if c == "`" and quote == '"':
                i += 2
                continue
            if c == quote:
                if i + 1 < len(text) and text[i + 1] == quote:
                    i += 2
                    continue
                quote = None
        elif c == "`":
            i += 2
            continue
        elif c == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        elif c in "'\"":
            quote = c
        elif c in _CLOSERS:
            stack.append(_CLOSERS[c])
        elif c in ")}]" and stack and stack[-1] == c:
            stack.pop()
        i += 1
    stripped = text.rstrip()
    return quote is not None or bool(stack) or stripped.endswith("`") or stripped.endswith("|")


# --- output -------------------------------------------------------------------------------------


def concise(record: ErrorRecord) -> str:
    """PowerShell 7's concise error view, for errors that did not come formatted by the server
    (a pipeline that failed): ``Command: message``."""
    message = str(record)
    command = record.activity or ""
    return f"{command}: {message}" if command else message


class ShellPrinter:
    """Prints a pipeline's events as the console does; every server string is escaped."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.progress_shown = False
        self.progress_tty = out.stderr.isatty()

    def close(self) -> None:
        self._clear_progress()

    def _clear_progress(self) -> None:
        if self.progress_shown:
            self.out.stderr.write("\r\x1b[K")
            self.out.stderr.flush()
            self.progress_shown = False

    def _line(self, text: str, color: Optional[str] = None, err: bool = False, end: str = "\n") -> None:
        self._clear_progress()
        if err:
            self.out.err(printable(text), color)
        else:
            self.out.out(printable(text), color, end=end)

    def __call__(self, event: PSEvent) -> None:
        kind, value = event
        if kind == "output":
            if value is not None:
                from psremote.cli import format_value  # the plain view, for a server without Out-Default

                self._line(format_value(value))
        elif kind == "error":
            self._line(concise(value), "red", err=True)
        elif kind == "warning":
            self._line(f"WARNING: {value}", "yellow", err=True)
        elif kind == "verbose":
            self._line(f"VERBOSE: {value}", "yellow", err=True)
        elif kind == "debug":
            self._line(f"DEBUG: {value}", "yellow", err=True)
        elif kind == "information":
            self.information(value)
        elif kind == "progress":
            self.show_progress(value)
        elif kind == "host":
            self.host(value)
        elif kind == "state":
            if value.error is not None and value.state == "Failed":
                self._line(concise(value.error), "red", err=True)

    def information(self, record: InformationRecord) -> None:
        if "PSHOST" in record.tags:  # Write-Host: printed from its host call
            return
        self._line(str(record.message_data if record.message_data is not None else ""))

    def show_progress(self, record: ProgressRecord) -> None:
        if not self.progress_tty:
            return
        if record.completed:
            self._clear_progress()
            return
        percent = record.percent_complete
        shown = isinstance(percent, int) and 0 <= percent <= 100
        text = f"{record.activity}: {record.status_description}" + (f" [{percent}%]" if shown else "")
        self.out.stderr.write("\r\x1b[K" + _one_line(text)[: max(self._columns() - 1, 10)])
        self.out.stderr.flush()
        self.progress_shown = True

    @staticmethod
    def _columns() -> int:
        import shutil

        return shutil.get_terminal_size(fallback=(120, 50)).columns

    def host(self, call: HostCall) -> None:
        method, params = call
        if method in ("Write1", "Write2"):
            text = str(params[-1]) if params else ""
            color = _console_ansi(params[0]) if method == "Write2" and len(params) > 2 else None
            self._line(text, color, end="")
        elif method in ("WriteLine1", "WriteLine2", "WriteLine3"):
            text = str(params[-1]) if params and method != "WriteLine1" else ""
            color = _console_ansi(params[0]) if method == "WriteLine3" and len(params) > 2 else None
            self._line(text, color)
        elif method == "WriteErrorLine":
            self._line(str(params[0]) if params else "", "red", err=True)
        elif method == "WriteWarningLine":
            self._line(f"WARNING: {params[0] if params else ''}", "yellow", err=True)
        elif method == "WriteVerboseLine":
            self._line(f"VERBOSE: {params[0] if params else ''}", "yellow", err=True)
        elif method == "WriteDebugLine":
            self._line(f"DEBUG: {params[0] if params else ''}", "yellow", err=True)
        elif method == "WriteProgress" and len(params) > 1:
            try:
                record = ProgressRecord.from_psobject(params[1])
            except (TypeError, ValueError, OverflowError):  # numbers that are not: no progress line
                return
            self.show_progress(record)


def terminal_width(default: int) -> int:
    import shutil

    return shutil.get_terminal_size(fallback=(default, 50)).columns


def run_line(pool: RunspacePool, line: str, out: Any, width: Optional[int] = None) -> None:
    """Runs one line as Enter-PSSession does: ``line 2>&1 | Out-Default``, in the history.

    The server formats for the terminal width the pool was opened with (its host data). With
    ``width`` (the terminal was resized since), the line ends in ``Out-String -Stream -Width``
    instead, so the server formats for the new width; errors then arrive as records and are
    shown in the concise view here."""
    printer = ShellPrinter(out)
    handle = None
    host: Any = getattr(pool, "host", None)
    try:
        if hasattr(host, "begin_line"):
            host.begin_line()
        if width is None:
            ps = pool.powershell().add_script(line).merge_error().add_command("Out-Default")
        else:
            ps = pool.powershell().add_script(line).add_command("Out-String").add_parameter("Stream")
            ps.add_parameter("Width", max(width - 1, 10))
        handle = ps.start(add_to_history=True)
        for event in handle:
            printer(event)
    except KeyboardInterrupt:
        # The handle already asked the server to stop the pipeline when Ctrl-C arrived during
        # a wait; stop it here too in case it arrived between two waits.
        if handle is not None and not handle.finished:
            try:
                handle.stop()
            except PSRemoteError:
                pass
        printer.close()
        out.err("^C", "yellow")
        return
    finally:
        # A Read-Host or Get-Credential still waiting on the terminal gives up (else it would
        # take the next line typed at the prompt).
        if hasattr(host, "end_line"):
            host.end_line()
        printer.close()


# --- the prompt and completion --------------------------------------------------------------------


def _text_of(value: Any) -> str:
    return "" if value is None else str(value)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def remote_prompt(pool: RunspacePool) -> str:
    """The remote ``prompt`` function's text, else ``PS <Get-Location>> ``, else ``PS> ``;
    escaped, and cut after :data:`PROMPT_LIMIT` characters."""
    return _cut(printable(_remote_prompt(pool)), PROMPT_LIMIT)


def _remote_prompt(pool: RunspacePool) -> str:
    try:
        result = pool.run_ps(pool.powershell().add_command("prompt"), timeout=PROMPT_TIMEOUT)
        text = "".join(_text_of(o) for o in result.output[:PROMPT_LIMIT])
        if text and result.state == "Completed":
            return text
    except (OperationTimeoutError, KeyboardInterrupt):
        # A server that stalls (or a person who will not wait for it) gets no second wait
        # for Get-Location: the plain prompt at once.
        return "PS> "
    except PSRemoteError:
        pass
    try:
        result = pool.run_ps(pool.powershell().add_command("Get-Location"), timeout=PROMPT_TIMEOUT)
        if result.output:
            location = result.output[0]
            path = location.get("Path") if hasattr(location, "get") else location
            return f"PS {_text_of(path)}> "
    except (PSRemoteError, KeyboardInterrupt):
        pass
    return "PS> "


def _items(value: Any) -> List[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    items = getattr(value, "items", None)
    if isinstance(items, (list, tuple)):
        return list(items)
    return [value]


def completions(pool: RunspacePool, line: str, cursor: int, timeout: float = COMPLETION_TIMEOUT) -> Tuple[int, int, List[Tuple[str, str]]]:
    """``TabExpansion2 -inputScript line -cursorColumn cursor`` on the server: (replacement
    index, replacement length, [(CompletionText, ListItemText)]); nothing after ``timeout``."""
    ps = pool.powershell().add_command("TabExpansion2").add_parameter("inputScript", line).add_parameter("cursorColumn", cursor)
    try:
        result = pool.run_ps(ps, timeout=timeout)
    except (PSRemoteError, KeyboardInterrupt):
        return cursor, 0, []
    if not result.output or not hasattr(result.output[0], "get"):
        return cursor, 0, []
    found = result.output[0]
    try:
        index = int(found.get("ReplacementIndex", cursor))
        length = int(found.get("ReplacementLength", 0))
    except (TypeError, ValueError):
        return cursor, 0, []
    matches = []
    for match in _items(found.get("CompletionMatches"))[:COMPLETION_LIMIT]:
        if hasattr(match, "get"):
            text = _text_of(match.get("CompletionText"))
            if text:
                matches.append((text, _text_of(match.get("ListItemText")) or text))
    return max(0, min(index, cursor)), max(0, length), matches


class Completer:
    """readline's completer: the whole line goes to the server, readline replaces the text up to
    the cursor with the line's start plus each match."""

    def __init__(self, pool: RunspacePool, readline: Any, prompt: Callable[[], str]) -> None:
        self.pool = pool
        self.readline = readline
        self.prompt = prompt
        self.matches: List[str] = []
        self.labels: Dict[str, str] = {}

    def install(self) -> None:
        rl = self.readline
        rl.set_completer(self)
        rl.set_completer_delims("")
        rl.set_completion_display_matches_hook(self.display)
        if "libedit" in (getattr(rl, "__doc__", "") or ""):
            rl.parse_and_bind("bind ^I rl_complete")
        else:
            rl.parse_and_bind("tab: complete")

    def __call__(self, text: str, state: int) -> Optional[str]:
        if state == 0:
            line = self.readline.get_line_buffer()
            cursor = self.readline.get_endidx()
            index, _, found = completions(self.pool, line, cursor)
            head = line[:index]
            self.matches = [head + _one_line(text) for text, _ in found]
            self.labels = {head + _one_line(text): _cut(_one_line(label), 200) for text, label in found}
        return self.matches[state] if state < len(self.matches) else None

    def display(self, substitution: str, matches: List[str], longest: int) -> None:
        labels = [self.labels.get(m, m) for m in matches]
        width = max(len(label) for label in labels) + 2
        columns = max(1, (ShellPrinter._columns() - 1) // width)
        sys.stdout.write("\n")
        for start in range(0, len(labels), columns):
            sys.stdout.write("".join(label.ljust(width) for label in labels[start : start + columns]).rstrip() + "\n")
        sys.stdout.write(self.prompt() + self.readline.get_line_buffer())
        sys.stdout.flush()


# --- the loop -------------------------------------------------------------------------------------


def prompt_name(client: Client) -> str:
    """The name in the shell's prompt: the host (the SSH server's over ssh), or 'process'."""
    if client.transport == "process":
        return "process"
    if client.ssh is not None:
        return client.ssh.host
    return client.options.host


def _read_statement(first_prompt: str, history: Optional[History]) -> Optional[str]:
    """One statement from the terminal, with ``>> `` lines while it is incomplete; None at EOF."""
    lines: List[str] = []
    prompt = first_prompt
    while True:
        line = input(prompt)
        if history is not None and line.startswith(" "):
            history.forget_last()
        lines.append(line)
        text = "\n".join(lines)
        if not line.strip() and len(lines) > 1:
            return text
        if not incomplete(text):
            return text
        prompt = ">> "


def _is_exit(text: str) -> bool:
    words = text.strip().split()
    return bool(words) and words[0].lower() in ("exit", "exit-pssession", "quit") and len(words) <= 2


#: The exit status when the session broke (the server went away): the CLI's connection status.
EXIT_SESSION_LOST = 3


class SessionLost(Exception):
    """A line could not run: the connection or the pool is gone."""


def shell(args: argparse.Namespace, out: Any, client_factory: Callable[[], Client], host: Any) -> int:
    with client_factory() as client:
        pool = client.runspace_pool(host=host)
        try:
            _loop(client, pool, args, out, host)
        except SessionLost as lost:
            # As Enter-PSSession says the session broke and returns to the local prompt: one
            # line, no traceback, and no second complaint from closing what is already gone.
            out.err(f"psremote: the session to {printable(prompt_name(client))} ended: {lost}", "red")
            _close_quietly(pool)
            return EXIT_SESSION_LOST
        except BaseException:
            _close_quietly(pool)
            raise
        pool.close()
    return 0


def _close_quietly(pool: RunspacePool) -> None:
    try:
        pool.close()
    except PSRemoteError:
        pass


def _loop(client: Client, pool: RunspacePool, args: argparse.Namespace, out: Any, host: Any) -> None:
    interactive = sys.stdin.isatty()
    name = printable(prompt_name(client))
    history = History(history_path(args)) if interactive else None
    opened_width = int(getattr(host, "buffer_size", (120, 0))[0])
    current = {"prompt": f"[{name}]: PS> "}
    if interactive:
        import readline

        Completer(pool, readline, lambda: current["prompt"]).install()
        out.out(f"Connected to {printable(client.url)}. Type 'exit' to leave; Ctrl-C stops a running command.")
    try:
        while True:
            if interactive:
                current["prompt"] = f"[{name}]: {remote_prompt(pool)}"
            try:
                if interactive:
                    text = _read_statement(current["prompt"], history)
                else:
                    text = sys.stdin.readline()
                    if not text:
                        break
            except EOFError:
                if interactive:
                    out.out("")
                break
            except KeyboardInterrupt:
                out.out("")
                continue
            if text is None:
                break
            if not text.strip():
                continue
            if _is_exit(text):
                break
            width = terminal_width(opened_width) if interactive else opened_width
            try:
                run_line(pool, text if interactive else text.strip(), out, None if width == opened_width else width)
            except KeyboardInterrupt:
                # Ctrl-C between reading the line and starting it (run_line handles the rest):
                # the shell goes on, as at the prompt.
                out.err("^C", "yellow")
            except PSRemoteError as e:
                failure = f"{type(e).__name__}: {printable(e)}"
                try:
                    alive = pool.is_alive()
                except PSRemoteError:
                    alive = False
                if not alive:
                    raise SessionLost(failure) from e
                out.err(failure, "red")  # the line failed, the session goes on
    finally:
        if history is not None:
            history.save()
