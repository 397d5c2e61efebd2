"""The ``psremote`` command line.

    psremote run HOST -c SCRIPT [--json]      run a PowerShell script, print its streams
    psremote cmd [--json] HOST EXE [ARGS...]  run a command in a cmd shell (WinRS); options go
                                              before HOST: everything after EXE is its arguments
    psremote shell HOST                       an interactive remote prompt, like Enter-PSSession
    psremote run -H web[01-40],db1 -f hosts.txt -c SCRIPT [--throttle N] [--json] [--output-dir DIR]
    psremote cmd -H LIST EXE [ARGS...]        the same on many hosts at once (see cli_fleet)

The password comes from the ``PSREMOTE_PASSWORD`` environment variable or a prompt; it is never
a command-line argument (other users can read those); so does the password of an encrypted
client key (``PSREMOTE_KEY_PASSWORD``) and of a proxy (``--proxy-user``, password from
``PSREMOTE_PROXY_PASSWORD`` or a prompt). The user name may come from ``PSREMOTE_USER``, the
trusted hosts (``--trusted-hosts``) from ``PSREMOTE_TRUSTED_HOSTS``.

Exit status: ``run`` 0, or 1 when the pipeline failed or wrote errors; ``cmd`` the remote exit
code; 2 for invalid options; 3 when the connection or authentication failed; 130 after Ctrl-C.
With ``-H``/``-f`` (several hosts): 0 when every host succeeded, 1 when any failed or was
unreachable.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import decimal
import getpass
import json
import logging
import os
import shlex
import sys
import threading
import uuid
from typing import Any, Dict, Iterator, Optional, Sequence, TextIO

from psremote import __version__, cli_fleet, cli_shell
from psremote._limits import Deadline
from psremote._options import AUTH_MECHANISMS, ENCRYPTION_POLICIES, PASSWORD_ENV, TRANSPORTS
from psremote._text import printable
from psremote.client import Client, Pipeline
from psremote.exceptions import ConfigurationError, FileTransferError, OperationTimeoutError, PSRemoteError
from psremote.host import ConsoleHost
from psremote.progress import ProgressDisplay
from psremote.records import ErrorRecord, HostCall, InformationRecord, ProgressRecord, PSEvent, PSResult
from psremote.values import PSCredential, PSEnum, PSObject, SecureString

USER_ENV = "PSREMOTE_USER"
TRUSTED_HOSTS_ENV = "PSREMOTE_TRUSTED_HOSTS"
KEY_PASSWORD_ENV = "PSREMOTE_KEY_PASSWORD"
PROXY_PASSWORD_ENV = "PSREMOTE_PROXY_PASSWORD"

EXIT_ERRORS = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_INTERRUPTED = 130

_ANSI = {"red": "31", "yellow": "33", "cyan": "36", "green": "32", "bold": "1"}
# ConsoleColor value -> ANSI foreground code.
_CONSOLE_ANSI = ("30", "34", "32", "36", "31", "35", "33", "37", "90", "94", "92", "96", "91", "95", "93", "97")


class Output:
    """Where and how the CLI prints: stdout for output, stderr for the other streams, ANSI
    colours only on terminals (and never with NO_COLOR or --no-color)."""

    def __init__(self, color: Optional[bool], stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        if color is None:
            color = "NO_COLOR" not in os.environ
            self.color_out = color and self.stdout.isatty()
            self.color_err = color and self.stderr.isatty()
        else:
            self.color_out = self.color_err = color

    def paint(self, text: str, color: Optional[str], err: bool) -> str:
        if color is None or not (self.color_err if err else self.color_out):
            return text
        code = _ANSI.get(color, color)
        return f"\x1b[{code}m{text}\x1b[0m"

    def out(self, text: str, color: Optional[str] = None, end: str = "\n") -> None:
        self.stdout.write(self.paint(text, color, False) + end)
        self.stdout.flush()

    def err(self, text: str, color: Optional[str] = None) -> None:
        self.stderr.write(self.paint(text, color, True) + "\n")
        self.stderr.flush()


# --- formatting ------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """An output object as text, roughly as PowerShell's console shows it."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, PSObject):
        props = value.properties
        if not props or value.value is not None:
            return str(value)
        width = max(len(k) for k in props)
        return "\n".join(f"{k.ljust(width)} : {format_scalar(v)}" for k, v in props.items()) + "\n"
    if isinstance(value, list):
        return "\n".join(format_value(v) for v in value)
    if isinstance(value, dict):
        if not value:
            return ""
        width = max(len(str(k)) for k in value)
        return "\n".join(f"{str(k).ljust(width)} : {format_scalar(v)}" for k, v in value.items())
    return str(value)


def format_scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(format_scalar(v) for v in value) + "}"
    return str(value)


def to_jsonable(value: Any, depth: int = 0) -> Any:
    """A value as JSON data: objects as property dicts, secrets masked."""
    if depth > 32:
        return str(value)
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, PSEnum):
        return value.name
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, SecureString):
        return "***"
    if isinstance(value, PSCredential):
        return {"UserName": value.username, "Password": "***"}
    if isinstance(value, PSObject):
        data: Dict[str, Any] = {k: to_jsonable(v, depth + 1) for k, v in value.properties.items()}
        if value.value is not None and not data:
            return to_jsonable(value.value, depth + 1)
        if value.items is not None:
            data["@items"] = to_jsonable(value.items, depth + 1)
        if value.type_names:
            data["@type"] = value.type_names[0]
        return data
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, depth + 1) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    return str(value)


def result_json(result: PSResult) -> Dict[str, Any]:
    return {
        "output": to_jsonable(result.output),
        "errors": [to_jsonable(e) for e in result.errors],
        "warnings": result.warnings,
        "verbose": result.verbose,
        "debug": result.debug,
        "information": [to_jsonable(i) for i in result.information],
        "progress": [to_jsonable(p) for p in result.progress],
        "state": result.state,
        "terminating_error": to_jsonable(result.terminating_error),
        "had_errors": result.had_errors,
    }


class EventPrinter:
    """Prints pipeline events as they arrive."""

    def __init__(self, out: Output, show_progress: bool) -> None:
        self.out = out
        self.progress = ProgressDisplay(out.stderr, use_tqdm=None) if show_progress else None
        self.pending_newline = False

    def close(self) -> None:
        if self.pending_newline:
            self.out.out("", end="\n")
            self.pending_newline = False
        if self.progress is not None:
            self.progress.close()

    def __call__(self, event: PSEvent) -> None:
        kind, value = event
        if kind == "output":
            if value is not None:
                self.out.out(format_value(value))
        elif kind == "error":
            self.print_error(value)
        elif kind == "warning":
            self.out.err(f"WARNING: {value}", "yellow")
        elif kind == "verbose":
            self.out.err(f"VERBOSE: {value}", "cyan")
        elif kind == "debug":
            self.out.err(f"DEBUG: {value}", "yellow")
        elif kind == "information":
            self.print_information(value)
        elif kind == "progress":
            if self.progress is not None:
                self.progress.update(value)
        elif kind == "host":
            self.print_host(value)
        elif kind == "state":
            if value.error is not None and value.state == "Failed":
                self.print_error(value.error)
            elif value.state == "Stopped":
                self.out.err("the pipeline was stopped", "yellow")

    def print_error(self, record: ErrorRecord) -> None:
        self.out.err(record.format(), "red")

    def print_information(self, record: InformationRecord) -> None:
        # Write-Host also arrives as a host call (printed from the "host" event).
        if "PSHOST" in record.tags:
            return
        self.out.out(format_value(record.message_data))

    def print_host(self, call: HostCall) -> None:
        method, params = call
        if method in ("Write1", "Write2"):
            text = str(params[-1]) if params else ""
            color = _CONSOLE_ANSI[int(params[0])] if method == "Write2" and params and params[0] is not None else None
            self.out.out(text, color, end="")
        elif method in ("WriteLine1", "WriteLine2", "WriteLine3"):
            text = str(params[-1]) if params and method != "WriteLine1" else ""
            color = _CONSOLE_ANSI[int(params[0])] if method == "WriteLine3" and params and params[0] is not None else None
            self.out.out(text, color)
        elif method == "WriteErrorLine":
            self.out.err(str(params[0]) if params else "", "red")
        elif method == "WriteWarningLine":
            self.out.err(f"WARNING: {params[0] if params else ''}", "yellow")
        elif method == "WriteVerboseLine":
            self.out.err(f"VERBOSE: {params[0] if params else ''}", "cyan")
        elif method == "WriteDebugLine":
            self.out.err(f"DEBUG: {params[0] if params else ''}", "yellow")
        elif method == "WriteProgress" and self.progress is not None and len(params) > 1:
            self.progress.update(ProgressRecord.from_psobject(params[1]))


class CliHost(ConsoleHost):
    """Answers Read-Host, Get-Credential and prompts on the terminal. The server's writes are
    printed from the pipeline's event stream instead (in order with the output), so they are
    no-ops here; what a prompt itself shows (Read-Host's label, Get-Credential's caption and
    message, the choices of a PromptForChoice) is written by ConsoleHost, escaped. On a
    terminal, answers are read so that Ctrl-C cancels them (see :meth:`end_line`); secrets
    with echo off, restored whatever happens."""

    _prompting = 0
    #: How often a read on the terminal looks whether Ctrl-C cancelled it, in seconds.
    INPUT_POLL = 0.1

    def __init__(self, stdout: Optional[TextIO] = None, *, color: Optional[bool] = None) -> None:
        super().__init__(stdout, color=color)
        # Set while the shell is not running a line (at its prompt, or after Ctrl-C): a read
        # on the terminal then gives up. Clear for a host that no shell manages (psremote run).
        self._input_closed = threading.Event()
        self._reading = threading.Lock()  # held by a read on the terminal

    def begin_line(self) -> None:
        """The shell runs a line: its Read-Host may read the terminal."""
        self._input_closed.clear()

    def end_line(self) -> None:
        """The line ended or Ctrl-C stopped it: a read still waiting on the terminal (on the
        worker thread that answers host calls), or one of the stopped pipeline that arrives
        late, gives up, so it never takes what is typed at the shell's prompt. Returns once no
        read is under way (it notices within INPUT_POLL seconds)."""
        self._input_closed.set()
        with self._reading:
            pass

    def _read_terminal(self, secret: bool, prompt: str = "") -> str:
        with self._reading:
            return self._read_terminal_locked(secret, prompt)

    def _read_terminal_locked(self, secret: bool, prompt: str) -> str:
        import select
        import termios  # POSIX terminals only, as readline

        if self._input_closed.is_set():
            raise EOFError("the prompt was cancelled (Ctrl-C)")
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd) if secret else None
        if saved is not None:
            quiet = list(saved)
            quiet[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSADRAIN, quiet)
        if prompt:  # after echo is off, so that nothing typed after it shows (as getpass)
            self.stdout.write(prompt)
            self.stdout.flush()
        data = b""
        try:
            while not data.endswith(b"\n"):
                if self._input_closed.is_set():
                    raise EOFError("the prompt was cancelled (Ctrl-C)")
                ready, _, _ = select.select([fd], [], [], self.INPUT_POLL)
                if ready and not self._input_closed.is_set():
                    chunk = os.read(fd, 4096)  # the terminal's canonical mode: a whole line
                    if not chunk:
                        raise EOFError("end of input")
                    data += chunk
        finally:
            if saved is not None:
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)
                self.stdout.write("\n")
                self.stdout.flush()
        return data.decode(errors="replace").rstrip("\r\n")

    def read_line(self) -> str:
        return self._read_terminal(False) if sys.stdin.isatty() else super().read_line()

    def read_secret(self, prompt: str) -> str:
        if not sys.stdin.isatty():
            return super().read_secret(prompt)
        return self._read_terminal(True, prompt)

    def write(self, text: str, foreground_color: Optional[int] = None, background_color: Optional[int] = None) -> None:
        if self._prompting:
            super().write(text, foreground_color, background_color)

    def write_line(self, text: str = "", foreground_color: Optional[int] = None, background_color: Optional[int] = None) -> None:
        if self._prompting:
            super().write_line(text, foreground_color, background_color)

    def _asking(self, method: Any, *args: Any) -> Any:
        self._prompting += 1
        try:
            return method(*args)
        finally:
            self._prompting -= 1

    def prompt(self, caption: str, message: str, descriptions: Any) -> Dict[str, Any]:
        # PowerShell's Read-Host -Prompt and a mandatory parameter's prompt come as Prompt.
        if caption:
            self._asking(self.write_line, caption)
        if message:
            self._asking(self.write_line, message)
        return self._asking(super().prompt, caption, message, descriptions)

    def prompt_for_credential(self, caption: str, message: str, user_name: str, target_name: str) -> PSCredential:
        return self._asking(super().prompt_for_credential, caption, message, user_name, target_name)

    def prompt_for_choice(self, caption: str, message: str, choices: Any, default_choice: int) -> int:
        return self._asking(super().prompt_for_choice, caption, message, choices, default_choice)

    def write_error_line(self, text: str) -> None:
        pass

    def write_warning_line(self, text: str) -> None:
        pass

    def write_verbose_line(self, text: str) -> None:
        pass

    def write_debug_line(self, text: str) -> None:
        pass


# --- arguments ---------------------------------------------------------------------------------


def _connection_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument("host", nargs="?", help="host name or IP address (or give --url)")
    group.add_argument("--url", help="endpoint URL, e.g. http://server:5985/wsman")
    group.add_argument("--process-executable", metavar="PROGRAM", help="with --transport process: the program (default pwsh)")
    group.add_argument(
        "--process-args",
        metavar="ARGS",
        help="with --transport process: its arguments as one shell-quoted string (default '-NoLogo -s')",
    )
    group.add_argument("-u", "--user", help=f"user name: user, DOMAIN\\user or user@domain (default ${USER_ENV})")
    group.add_argument("--auth", default="negotiate", choices=AUTH_MECHANISMS, help="authentication (default negotiate)")
    group.add_argument("--port", type=int, help="TCP port (default 5985)")
    group.add_argument("--path", help="URL path (default /wsman)")
    group.add_argument(
        "--allow-unencrypted", action="store_true", help="allow plaintext messages (basic auth over http): unsafe"
    )
    group.add_argument("--configuration-name", help="session configuration (JEA endpoint), default Microsoft.PowerShell")
    group.add_argument("--operation-timeout", type=float, default=20.0, help="seconds (default 20)")
    group.add_argument("--connect-timeout", type=float, default=30.0, help="seconds (default 30)")
    group.add_argument(
        "--proxy",
        metavar="URL",
        help="tunnel through this proxy: http://HOST:PORT (CONNECT), socks5://HOST:PORT or socks5h://HOST:PORT "
        "(name resolved by the proxy); default: $https_proxy/$http_proxy/$all_proxy unless $no_proxy names the host "
        "(with --transport ssh only this switch gives a proxy: SSH reads none from the environment)",
    )
    group.add_argument(
        "--proxy-user", metavar="USER", help=f"log on to the proxy as USER (password from ${PROXY_PASSWORD_ENV} or a prompt)"
    )
    group.add_argument(
        "--ignore-proxy",
        "--no-proxy",
        dest="ignore_proxy",
        action="store_true",
        help="ignore the environment's proxy variables (connect directly unless --proxy is given); WS-Man only",
    )
    security = common.add_argument_group("security")
    security.add_argument("--https", action="store_true", help="connect over HTTPS (default port 5986)")
    security.add_argument(
        "--trusted-hosts",
        metavar="LIST",
        default=os.environ.get(TRUSTED_HOSTS_ENV),
        help="comma list of hosts (wildcards, <local>) towards which NTLM is accepted without HTTPS proving the "
        f"server, as WinRM's TrustedHosts (default ${TRUSTED_HOSTS_ENV})",
    )
    security.add_argument("--ca-file", metavar="PEM", help="trust these CA certificates instead of the system's")
    security.add_argument("--server-name", metavar="NAME", help="the name the server's certificate must carry")
    security.add_argument(
        "--pin", action="append", metavar="SHA256", help="require this public-key pin (hex SHA-256 of the SPKI); repeatable"
    )
    security.add_argument(
        "--insecure-skip-verify",
        action="store_true",
        help="do not verify the server's certificate: DANGEROUS, anyone on the path can impersonate the server",
    )
    security.add_argument("--client-cert", metavar="PEM", help="client certificate (for --auth certificate)")
    security.add_argument(
        "--client-key", metavar="PEM", help=f"its private key (an encrypted key's password from ${KEY_PASSWORD_ENV})"
    )
    security.add_argument("--encryption", choices=ENCRYPTION_POLICIES, default="auto", help="message encryption (default auto)")
    ssh = common.add_argument_group("PowerShell over SSH (--transport ssh)")
    ssh.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="wsman",
        help="wsman (WinRM, the default), ssh (the server's powershell subsystem, as Enter-PSSession -HostName) "
        "or process (a local program speaking PowerShell's out-of-process transport on stdin/stdout; no HOST)",
    )
    ssh.add_argument(
        "--key-file", metavar="FILE", help=f"log on with this private key (an encrypted key's passphrase from ${KEY_PASSWORD_ENV})"
    )
    ssh.add_argument("--agent", action="store_true", help="log on with the keys of the SSH agent ($SSH_AUTH_SOCK)")
    ssh.add_argument("--known-hosts", metavar="FILE", help="the known_hosts file (default ~/.ssh/known_hosts)")
    ssh.add_argument(
        "--accept-unknown-host-key",
        action="store_true",
        help="accept and record a host key known_hosts does not have (unverified; a changed key is still refused)",
    )
    common.add_argument("--no-color", action="store_true", help="never colour the output")
    common.add_argument("-v", "--verbose", action="count", default=0, help="log to stderr (-v info, -vv debug)")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _connection_parser()
    parser = argparse.ArgumentParser(
        prog="psremote",
        description="PowerShell Remoting from the command line. The password comes from "
        f"${PASSWORD_ENV} or a prompt, never from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"psremote {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,cmd,shell,copy,fetch,pools}")
    sub.required = True

    run = sub.add_parser("run", parents=[common], help="run a PowerShell script")
    run.add_argument("-c", "--command", dest="script", required=True, help="the script; '-' reads it from stdin")
    run.add_argument("--json", action="store_true", help="print one JSON document with every stream at the end")
    run.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop the script and fail after this long, opening included (default: never); with -H/-f, per host",
    )
    cli_fleet.add_arguments(run)

    cmd = sub.add_parser("cmd", parents=[common], help="run a command in a cmd shell (WinRS)")
    cmd.add_argument("--json", action="store_true", help="print stdout, stderr and the exit code as JSON")
    cmd.add_argument("--stdin", action="store_true", help="send this process's stdin to the command")
    cmd.add_argument(
        "-e", "--env", action="append", default=[], metavar="NAME=VALUE", help="an environment variable (repeatable)"
    )
    cmd.add_argument("--cwd", metavar="DIR", help="the shell's working directory")
    cmd.add_argument("--codepage", type=int, default=65001, metavar="N", help="console code page (default 65001, UTF-8)")
    cmd.add_argument("--no-profile", action="store_true", help="do not load the user's profile")
    cmd.add_argument("--skip-cmd-shell", action="store_true", help="start the program directly, not through cmd.exe")
    cmd.add_argument("--timeout", type=float, metavar="SECONDS", help="stop the command and fail after this long (default: never)")
    cli_fleet.add_arguments(cmd)
    # What _parse names the host with when argparse gave it to the program (not for users).
    cmd.add_argument("--host", dest="host_option", help=argparse.SUPPRESS)
    cmd.add_argument("executable", help="the program to run")
    cmd.add_argument("arguments", nargs=argparse.REMAINDER, help="its arguments")

    shell = sub.add_parser(
        "shell",
        parents=[common],
        help="an interactive remote PowerShell prompt, like Enter-PSSession",
        description="Each line runs on the server followed by Out-Default, so output looks as PowerShell prints it "
        "(tables, lists, errors) for this terminal's width. Tab completes commands, parameters, variables and paths "
        "through the server (TabExpansion2); the prompt shows the remote location; a line with an open bracket or "
        "quote continues on '>> '. Ctrl-C stops the running command, 'exit' or Ctrl-D leaves. History is kept in "
        "$XDG_STATE_HOME/psremote/history (~/.local/state/psremote/history), mode 0600, 1000 lines; a line typed "
        "with a leading space is not recorded, and lines naming a password, AsPlainText, a token, an API key or a secret "
        "are not written (PSReadLine's rule).",
    )
    cli_shell.add_arguments(shell)

    pools = sub.add_parser("pools", parents=[common], help="list your runspace pools on the server; remove disconnected ones")
    pools.add_argument("--json", action="store_true", help="one JSON object per pool, one per line")
    pools.add_argument(
        "--close", action="append", default=[], metavar="ID", help="connect to this disconnected pool and delete it (repeatable)"
    )

    for name, help_text, src_help, dest_help in (
        ("copy", "copy a local file to the server", "the local file", "the remote file (its full path; replaced if it exists)"),
        ("fetch", "fetch a file of the server", "the remote file", "the local file (replaced if it exists)"),
    ):
        transfer = sub.add_parser(name, parents=[common], help=help_text)
        transfer.add_argument("src", metavar="SRC", help=src_help)
        transfer.add_argument("dest", metavar="DEST", nargs="?", help=dest_help)
        transfer.add_argument(
            "--no-expand", action="store_true", help="take the remote path verbatim (no %%VAR%% or $env:VAR expansion)"
        )
        transfer.add_argument("--timeout", type=float, metavar="SECONDS", help="give up after this long (default: never)")
        transfer.add_argument("--no-progress", action="store_true", help="no progress bar (there is none unless stderr is a terminal)")
    return parser


def _password() -> str:
    password = os.environ.get(PASSWORD_ENV)
    if password is not None:
        return password
    if not sys.stdin.isatty():
        raise ConfigurationError(f"no password: set {PASSWORD_ENV} (stdin is not a terminal to prompt on)")
    return getpass.getpass("Password: ")


def _proxy_options(args: argparse.Namespace) -> Dict[str, Any]:
    """--proxy, --proxy-user and --ignore-proxy; a proxy password never comes from the command line."""
    options: Dict[str, Any] = {"ignore_proxy": args.ignore_proxy}
    if args.proxy is not None:
        userinfo = args.proxy.partition("://")[2].rpartition("@")[0] if "://" in args.proxy else args.proxy.rpartition("@")[0]
        if ":" in userinfo:
            raise ConfigurationError(
                f"--proxy: give no password in the URL (other users can read command lines): use --proxy-user and ${PROXY_PASSWORD_ENV}"
            )
        options["proxy"] = args.proxy
    if args.proxy_user:
        password = os.environ.get(PROXY_PASSWORD_ENV)
        if password is None:
            if not sys.stdin.isatty():
                raise ConfigurationError(f"no proxy password: set {PROXY_PASSWORD_ENV} (stdin is not a terminal to prompt on)")
            password = getpass.getpass("Proxy password: ")
        options["proxy_username"] = args.proxy_user
        options["proxy_password"] = password
    return options


def _ssh_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The client options of --transport ssh: a key file, the agent, or else a password."""
    user = args.user or os.environ.get(USER_ENV)
    if not user:
        raise ConfigurationError(f"no user name: pass --user or set {USER_ENV}")
    if args.url is not None:
        raise ConfigurationError("--transport ssh takes a HOST, not --url")
    if args.key_file and args.agent:
        raise ConfigurationError("give --key-file or --agent, not both")
    _refuse_wsman_switches(args, "ssh")
    options: Dict[str, Any] = dict(
        transport="ssh",
        username=user,
        port=args.port,
        operation_timeout=args.operation_timeout,
        connect_timeout=args.connect_timeout,
        known_hosts=args.known_hosts,
        accept_unknown_host_key=args.accept_unknown_host_key,
        **_proxy_options(args),
    )
    # SSH reads no proxy from the environment, so there is nothing for --ignore-proxy to ignore
    # (refused above); --proxy and --proxy-user send the SSH connection through a proxy.
    del options["ignore_proxy"]
    if args.key_file:
        options.update(key_file=args.key_file, key_passphrase=os.environ.get(KEY_PASSWORD_ENV))
    elif args.agent:
        options["agent"] = True
    else:
        options["password"] = _password()
    return options


def _refuse_wsman_switches(args: argparse.Namespace, transport: str) -> None:
    """WS-Man's switches given with --transport ssh or process are usage errors, not ignored."""
    given = [
        switch
        for switch, value, default in (
            ("--auth", args.auth, "negotiate"),
            ("--path", args.path, None),
            ("--allow-unencrypted", args.allow_unencrypted, False),
            ("--configuration-name", args.configuration_name, None),
            ("--https", args.https, False),
            ("--trusted-hosts", args.trusted_hosts, os.environ.get(TRUSTED_HOSTS_ENV)),
            ("--ca-file", args.ca_file, None),
            ("--server-name", args.server_name, None),
            ("--pin", args.pin, None),
            ("--insecure-skip-verify", args.insecure_skip_verify, False),
            ("--client-cert", args.client_cert, None),
            ("--client-key", args.client_key, None),
            ("--encryption", args.encryption, "auto"),
            ("--ignore-proxy", args.ignore_proxy, False),
        )
        if value != default
    ]
    if transport == "process":
        given += [
            switch
            for switch, value, default in (
                ("--port", args.port, None),
                ("--connect-timeout", args.connect_timeout, 30.0),
                ("--proxy", args.proxy, None),
                ("--proxy-user", args.proxy_user, None),
            )
            if value != default
        ]
        ssh_only = [f"--{name.replace('_', '-')}" for name in ("key_file", "agent", "known_hosts", "accept_unknown_host_key") if getattr(args, name)]
        if ssh_only:
            raise ConfigurationError(f"{', '.join(ssh_only)} {'applies' if len(ssh_only) == 1 else 'apply'} to --transport ssh, not process")
        if args.user is not None:
            raise ConfigurationError("--user applies to --transport wsman and ssh, not process (the program runs as you)")
    if given:
        why = " (SSH reads no proxy from the environment)" if given == ["--ignore-proxy"] else ""
        verb = "applies" if len(given) == 1 else "apply"
        raise ConfigurationError(f"{', '.join(given)} {verb} to --transport wsman, not {transport}{why}")


def _client_options(args: argparse.Namespace, out: Output) -> Dict[str, Any]:
    """The client options of the connection arguments (all but the host)."""
    if args.transport == "process":
        if cli_fleet.wanted(args):
            raise ConfigurationError("host lists (-H, -f) run over WS-Man only, not --transport process")
        return _process_options(args)
    if args.transport == "ssh":
        if cli_fleet.wanted(args):
            raise ConfigurationError("host lists (-H, -f) run over WS-Man only, not --transport ssh")
        if args.accept_unknown_host_key:
            out.err("psremote: warning: --accept-unknown-host-key: an unknown host key is accepted unverified", "yellow")
        return _ssh_options(args)
    ssh_only = [f"--{name.replace('_', '-')}" for name in ("key_file", "agent", "known_hosts", "accept_unknown_host_key") if getattr(args, name)]
    if ssh_only:
        raise ConfigurationError(f"{', '.join(ssh_only)} apply to --transport ssh")
    certificate = args.auth == "certificate"
    user = args.user or os.environ.get(USER_ENV)
    if not user and not certificate:
        raise ConfigurationError(f"no user name: pass --user or set {USER_ENV}")
    options: Dict[str, Any] = dict(
        url=args.url,
        username=user or "",
        password="" if certificate else _password(),
        auth=args.auth,
        port=args.port,
        path=args.path,
        allow_unencrypted=args.allow_unencrypted,
        operation_timeout=args.operation_timeout,
        connect_timeout=args.connect_timeout,
        https=args.https,
        encryption=args.encryption,
        trusted_hosts=args.trusted_hosts,
        ca_file=args.ca_file,
        server_name=args.server_name,
        pinned_public_keys=args.pin,
        insecure_skip_verify=args.insecure_skip_verify,
        client_certificate=args.client_cert,
        client_key=args.client_key,
        client_key_password=os.environ.get(KEY_PASSWORD_ENV) if args.client_cert else None,
        **_proxy_options(args),
    )
    if args.configuration_name:
        options["configuration_name"] = args.configuration_name
    if args.insecure_skip_verify:
        out.err("psremote: warning: --insecure-skip-verify: the server's certificate is not verified", "yellow")
    return options


def _process_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The client options of --transport process."""
    if args.host is not None or args.url is not None:
        raise ConfigurationError("--transport process starts a local program: give no HOST or --url")
    _refuse_wsman_switches(args, "process")
    options: Dict[str, Any] = dict(transport="process", executable=args.process_executable, operation_timeout=args.operation_timeout)
    if args.process_args is not None:
        try:
            options["arguments"] = shlex.split(args.process_args)
        except ValueError as e:
            raise ConfigurationError(f"--process-args: {e}") from None
    return options


def _client(args: argparse.Namespace, out: Output) -> Client:
    if getattr(args, "transport", "wsman") == "process":
        return Client(**_process_options(args))
    if args.process_executable is not None or args.process_args is not None:
        raise ConfigurationError("--process-executable and --process-args need --transport process")
    if args.host is None and args.url is None:
        raise ConfigurationError("give the HOST to connect to, or --url")
    return Client(args.host if args.url is None else None, **_client_options(args, out))


# --- commands ----------------------------------------------------------------------------------


def _run(args: argparse.Namespace, out: Output) -> int:
    script = sys.stdin.read() if args.script == "-" else args.script
    if cli_fleet.wanted(args):
        return cli_fleet.run(args, out, _client_options(args, out), script=script)
    deadline = Deadline(args.timeout, "the script")
    with _client(args, out) as client:
        with client.runspace_pool(host=CliHost(), timeout=deadline.left()) as pool:
            if args.json:
                try:
                    result = pool.run_ps(script, timeout=deadline.left())
                except OperationTimeoutError:
                    raise deadline.expired() from None
                out.out(json.dumps(result_json(result), indent=2, ensure_ascii=False))
                return EXIT_ERRORS if result.had_errors else 0
            printer = EventPrinter(out, show_progress=out.stderr.isatty())
            had_errors = False
            # Leaving the block (the deadline passed) stops the pipeline.
            with pool.start(script) as handle:
                try:
                    for event in _events_within(handle, deadline):
                        if event.kind == "error" or (event.kind == "state" and event.value.state != "Completed"):
                            had_errors = True
                        printer(event)
                finally:
                    printer.close()
            return EXIT_ERRORS if had_errors else 0


def _events_within(handle: Pipeline, deadline: Deadline) -> Iterator[PSEvent]:
    """The pipeline's events as they arrive, until its end or the deadline (then the timeout)."""
    while True:
        try:
            event = handle.next_event(timeout=deadline.left())
        except OperationTimeoutError:
            raise deadline.expired() from None
        if event is None:
            return
        yield event


def _cmd(args: argparse.Namespace, out: Output) -> int:
    environment: Dict[str, str] = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigurationError(f"--env wants NAME=VALUE, not {item!r}")
        environment[name] = value
    if cli_fleet.wanted(args):
        return cli_fleet.run(args, out, _client_options(args, out))
    stdin = sys.stdin.buffer.read() if args.stdin else None
    with _client(args, out) as client:
        result = client.run_cmd(
            args.executable,
            args.arguments,
            stdin,
            environment=environment or None,
            working_directory=args.cwd,
            codepage=args.codepage,
            no_profile=args.no_profile,
            skip_cmd_shell=args.skip_cmd_shell,
            timeout=args.timeout,
        )
    if args.json:
        out.out(
            json.dumps(
                {"stdout": result.text, "stderr": result.stderr_text, "exit_code": result.exit_code}, ensure_ascii=False
            )
        )
    else:
        _write_bytes(out.stdout, result.stdout)
        _write_bytes(out.stderr, result.stderr)
    return result.exit_code


def _write_bytes(stream: TextIO, data: bytes) -> None:
    stream.flush()
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:
        stream.write(data.decode("utf-8", errors="replace"))
        stream.flush()


_prompt_name = cli_shell.prompt_name


def _shell(args: argparse.Namespace, out: Output) -> int:
    """``shell``: an interactive prompt as Enter-PSSession gives one (cli_shell)."""
    return cli_shell.shell(args, out, lambda: _client(args, out), CliHost())


def _transfer(args: argparse.Namespace, out: Output) -> int:
    """``copy``/``fetch``: prints the path written; a failed transfer is exit 1 with why."""
    with _client(args, out) as client:
        call = client.copy if args.command == "copy" else client.fetch
        try:
            path = call(
                args.src,
                args.dest,
                expand_variables=not args.no_expand,
                show_progress=not args.no_progress and out.stderr.isatty(),
                timeout=args.timeout,
            )
        except FileTransferError as e:
            side = {"local": "here", "remote": "on the server"}.get(e.side or "", "")
            out.err(f"psremote: {args.command} failed {side}: {e}".replace("  ", " "), "red")
            return EXIT_ERRORS
    out.out(path)
    return 0


def _pools(args: argparse.Namespace, out: Output) -> int:
    """``pools``: the account's runspace pools on the server, connected or disconnected; with
    ``--close``, connects to each named disconnected pool and deletes it."""
    with _client(args, out) as client:
        for pool_id in args.close:
            client.connect_pool(pool_id).close()
            out.err(f"psremote: pool {printable(pool_id)} deleted")
        for info in client.list_pools():
            if args.json:
                record = dataclasses.asdict(info)
                record["pipelines"] = list(info.pipelines)
                out.out(json.dumps(record, ensure_ascii=False))
                continue
            idle = "" if info.idle_timeout is None else f"idle {info.idle_timeout:g}s"
            fields = [info.id, info.state, info.configuration_name, f"{len(info.pipelines)} pipeline(s)", idle]
            out.out("  ".join(printable(f) for f in fields if f))
    return 0


def _parse(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(words)
    if args.command != "cmd":
        return args
    # `psremote cmd HOST -u USER PROGRAM ARGS`: an optional positional takes nothing once options
    # follow it, so argparse gives HOST to the program and the rest to its arguments. Without
    # a host, a URL or a fleet that line could only fail; the program's arguments are the tail
    # of the line, so the word before them is the host: parse again with it named as one.
    alone = args.transport == "wsman" and args.url is None and not args.hosts and not args.hosts_file
    if alone and args.host is None and args.host_option is None and args.arguments:
        k = len(words) - len(args.arguments) - 1
        if k >= 0 and words[k] == args.executable:
            args = parser.parse_args(words[:k] + ["--host", words[k]] + words[k + 1 :])
    if args.host_option is not None:
        if args.host is not None:
            # The optional positional took the program's name (two plain words followed).
            args.arguments = [args.executable, *args.arguments]
            args.executable = args.host
        args.host = args.host_option
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    out = Output(False if args.no_color else None)
    if args.verbose:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose > 1 else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    no_host = args.url is not None or args.transport == "process"
    if args.command in ("copy", "fetch"):
        if no_host and args.host is not None and args.dest is None:
            # With --url there is no HOST: the two positionals are SRC and DEST.
            args.host, args.src, args.dest = None, args.host, args.src
        if args.dest is None:
            parser.error(f"{args.command} needs SRC and DEST")
    if args.command in ("run", "cmd"):
        cli_fleet.check(args, parser)
        if cli_fleet.wanted(args) and args.host is not None:
            if args.command == "cmd":
                cli_fleet.arguments_for_cmd(args)
            else:
                parser.error("give HOST or -H/-f, not both")
    if no_host and args.host is not None:
        if args.command == "cmd":
            # With --url there is no HOST: the first positional is the executable.
            args.arguments = [args.executable, *args.arguments]
            args.executable, args.host = args.host, None
        elif args.url is not None:
            parser.error("give HOST or --url, not both")
        else:
            parser.error("--transport process starts a local program: give no HOST")
    commands = {"run": _run, "cmd": _cmd, "shell": _shell, "copy": _transfer, "fetch": _transfer, "pools": _pools}
    try:
        return commands[args.command](args, out)
    except ConfigurationError as e:
        out.err(f"psremote: {e}", "red")
        return EXIT_USAGE
    except PSRemoteError as e:
        out.err(f"psremote: {type(e).__name__}: {e}", "red")
        return EXIT_CONNECTION
    except KeyboardInterrupt:
        out.err("psremote: interrupted", "yellow")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
