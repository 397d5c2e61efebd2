"""The WinRS text shell (resource URI .../windows/shell/cmd), on POSIX.

Windows joins Command and Arguments with spaces and hands the line to
``cmd.exe /c``; here the same line goes to ``/bin/sh -c``. With
WINRS_SKIP_CMD_SHELL=TRUE the program is executed directly with the
arguments as argv. Reply shapes follow shared/conformance/windows-transcripts
(test_winrs_*.yml).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import signal
import threading
import time
from typing import Dict, List, Optional, Tuple

from . import faults
from .cmd_process import STREAMS, Chunk, CmdProcess
from .engines import Reply, RequestContext, Shell, ShellEngine, ShellTable, span
from .soap import (
    ACTION_COMMAND,
    ACTION_RECEIVE,
    ACTION_SEND,
    ACTION_SIGNAL,
    NS,
    NS_RECEIVE,
    WSManRequest,
    attr,
    new_uuid,
    q,
    text,
)

log = logging.getLogger(__name__)

CMD_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
STATE = NS["rsp"] + "/CommandState/"
SIGNAL_PREFIX = NS["rsp"] + "/signal/"
# Signal codes (compared case-insensitively: clients send both .../terminate and .../Terminate).
SIGNALS = {"ctrl_c": signal.SIGINT, "ctrl_break": signal.SIGTERM}
DEFAULT_IDLE = "PT7200.000S"
# Variables of the server itself that a command must not inherit.
PRIVATE_ENV = ("NTLM_USER_FILE",)


class CmdShell(Shell):
    def __init__(self, shell_id: str, resource_uri: str, owner: str, client_ip: str) -> None:
        self.shell_id = shell_id
        self.resource_uri = resource_uri
        self.owner = owner
        self.client_ip = client_ip
        self.environment: Dict[str, str] = {}
        self.working_directory: Optional[str] = None
        self.input_streams = "stdin"
        self.output_streams = "stdout stderr"
        self.idle_timeout = DEFAULT_IDLE
        self.name: Optional[str] = None
        self.codepage: Optional[str] = None
        self.no_profile = False
        self._lock = threading.Lock()
        self._commands: Dict[str, CmdProcess] = {}

    def live_commands(self) -> int:
        with self._lock:
            return len(self._commands)

    def command(self, command_id: Optional[str]) -> CmdProcess:
        with self._lock:
            found = self._commands.get((command_id or "").upper())
        if found is None:
            raise faults.unknown_command()
        return found

    def add(self, process: CmdProcess) -> None:
        with self._lock:
            self._commands[process.command_id] = process

    def has(self, command_id: str) -> bool:
        with self._lock:
            return command_id in self._commands

    def remove(self, command_id: str) -> Optional[CmdProcess]:
        with self._lock:
            return self._commands.pop(command_id.upper(), None)

    def remove_all(self) -> List[CmdProcess]:
        with self._lock:
            processes = list(self._commands.values())
            self._commands.clear()
            return processes


class CmdEngine(ShellEngine):
    actions = frozenset({ACTION_COMMAND, ACTION_SEND, ACTION_RECEIVE, ACTION_SIGNAL})

    # -- Create -----------------------------------------------------------------------------
    def create(self, request: WSManRequest, ctx: RequestContext, taken: ShellTable) -> Tuple[Shell, Reply]:
        body = request.body.find(q("rsp", "Shell"))
        if body is None:
            raise faults.invalid_parameter()
        shell_id = (body.get("ShellId") or "").upper() or new_uuid()
        if taken.contains(shell_id):
            raise faults.invalid_parameter("A shell with the requested ShellId already exists. ")
        shell = CmdShell(shell_id, request.resource_uri, ctx.principal, ctx.client_ip)
        environment = body.find(q("rsp", "Environment"))
        if environment is not None:
            for variable in environment.findall(q("rsp", "Variable")):
                shell.environment[variable.get("Name", "")] = variable.text or ""
        for tag, attribute in (
            ("WorkingDirectory", "working_directory"),
            ("InputStreams", "input_streams"),
            ("OutputStreams", "output_streams"),
            ("IdleTimeOut", "idle_timeout"),
            ("Name", "name"),
        ):
            element = body.find(q("rsp", tag))
            if element is not None and (element.text or "").strip():
                setattr(shell, attribute, element.text.strip())
        shell.codepage = request.option("WINRS_CODEPAGE")
        shell.no_profile = request.option_true("WINRS_NOPROFILE")
        return shell, Reply(self._created_body(shell, ctx))

    @staticmethod
    def _created_body(shell: CmdShell, ctx: Optional[RequestContext]) -> str:
        address = ctx.endpoint_url if ctx is not None else ""
        parts = [
            f"<x:ResourceCreated><a:Address>{text(address)}</a:Address><a:ReferenceParameters>"
            f"<w:ResourceURI>{text(shell.resource_uri)}</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{shell.shell_id}</w:Selector></w:SelectorSet>'
            "</a:ReferenceParameters></x:ResourceCreated>",
            f'<rsp:Shell xmlns:rsp="{NS["rsp"]}">',
            f"<rsp:ShellId>{shell.shell_id}</rsp:ShellId>",
            f"<rsp:ResourceUri>{text(shell.resource_uri)}</rsp:ResourceUri>",
        ]
        if shell.name:
            parts.append(f"<rsp:Name>{text(shell.name)}</rsp:Name>")
        parts.append(f"<rsp:Owner>{text(shell.owner)}</rsp:Owner><rsp:ClientIP>{text(shell.client_ip)}</rsp:ClientIP>")
        if shell.environment:
            parts.append("<rsp:Environment>")
            for name, value in shell.environment.items():
                parts.append(f'<rsp:Variable Name="{attr(name)}">{attr(value)}</rsp:Variable>')
            parts.append("</rsp:Environment>")
        if shell.working_directory:
            parts.append(f"<rsp:WorkingDirectory>{text(shell.working_directory)}</rsp:WorkingDirectory>")
        parts.append(
            f"<rsp:IdleTimeOut>{text(shell.idle_timeout)}</rsp:IdleTimeOut>"
            f"<rsp:InputStreams>{text(shell.input_streams)}</rsp:InputStreams>"
            f"<rsp:OutputStreams>{text(shell.output_streams)}</rsp:OutputStreams>"
            "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>"
            "</rsp:Shell>"
        )
        return "".join(parts)

    def describe(self, shell: Shell) -> str:
        """The shell as transfer Get and Enumerate list it: the CreateResponse's rsp:Shell with its State
        and times (cmd shells cannot be disconnected here, so State is always Connected)."""
        assert isinstance(shell, CmdShell)
        now = time.monotonic()
        created = self._created_body(shell, None)
        body = created[created.index("<rsp:Shell ") :]
        return body.replace(
            "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>",
            f"<rsp:State>{shell.state}</rsp:State><rsp:ShellRunTime>{span(now - shell.created)}</rsp:ShellRunTime>"
            f"<rsp:ShellInactivity>{span(now - shell.last_activity)}</rsp:ShellInactivity>"
            f"<rsp:ChildProcesses>{shell.live_commands()}</rsp:ChildProcesses>",
        )

    def command_ids(self, shell: Shell) -> List[str]:
        assert isinstance(shell, CmdShell)
        with shell._lock:
            return list(shell._commands)

    # -- the rest --------------------------------------------------------------------------------
    def handle(self, shell: Shell, request: WSManRequest, ctx: RequestContext) -> Reply:
        assert isinstance(shell, CmdShell)
        handler = {
            ACTION_COMMAND: self._command,
            ACTION_SEND: self._send,
            ACTION_RECEIVE: self._receive,
            ACTION_SIGNAL: self._signal,
        }[request.action]
        return handler(shell, request, ctx)

    def delete(self, shell: Shell) -> None:
        assert isinstance(shell, CmdShell)
        for process in shell.remove_all():
            process.kill()

    def _command(self, shell: CmdShell, request: WSManRequest, ctx: RequestContext) -> Reply:
        line = request.body.find(q("rsp", "CommandLine"))
        command = line.find(q("rsp", "Command")) if line is not None else None
        if command is None or not (command.text or "").strip():
            raise faults.invalid_parameter()
        arguments = [argument.text or "" for argument in line.findall(q("rsp", "Arguments"))]
        command_id = (line.get("CommandId") or "").upper() or new_uuid()
        if shell.has(command_id):
            raise faults.invalid_parameter("A command with the requested CommandId already exists. ")

        if request.option_true("WINRS_SKIP_CMD_SHELL"):
            argv = [command.text.strip(), *arguments]
        else:
            argv = ["/bin/sh", "-c", " ".join([command.text.strip(), *arguments])]
        cwd = shell.working_directory or os.getcwd()
        if not os.path.isdir(cwd):
            raise faults.command_start_failed(faults.DIRECTORY_INVALID, "The directory name is invalid. ")
        env = {key: value for key, value in os.environ.items() if key not in PRIVATE_ENV}
        env.update(shell.environment)
        try:
            process = CmdProcess(command_id, argv, cwd, env)
        except FileNotFoundError:
            raise faults.command_start_failed(faults.FILE_NOT_FOUND, "The system cannot find the file specified. ") from None
        except PermissionError:
            raise faults.command_start_failed(faults.ACCESS_DENIED, "Access is denied. ") from None
        except (OSError, ValueError) as exc:  # ValueError: e.g. an environment name Popen rejects
            log.info("command start failed: %s", exc)
            raise faults.command_start_failed(faults.UNSPECIFIED, "Unspecified error ") from None
        shell.add(process)
        log.info("command %s started in shell %s (pid %d)", command_id, shell.shell_id, process.pid)
        return Reply(f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>")

    def _send(self, shell: CmdShell, request: WSManRequest, ctx: RequestContext) -> Reply:
        send = request.body.find(q("rsp", "Send"))
        if send is None:
            raise faults.invalid_parameter()
        writes = []
        for stream in send.findall(q("rsp", "Stream")):
            if stream.get("Name") not in shell.input_streams.split() or not stream.get("CommandId"):
                raise faults.invalid_parameter()
            process = shell.command(stream.get("CommandId"))
            try:
                data = base64.b64decode((stream.text or "").strip(), validate=True)
            except binascii.Error:
                raise faults.invalid_parameter() from None
            writes.append((process, data, (stream.get("End") or "").lower() == "true"))
        for process, data, end in writes:
            process.write_stdin(data, end)
        return Reply("<rsp:SendResponse/>")

    def _receive(self, shell: CmdShell, request: WSManRequest, ctx: RequestContext) -> Reply:
        desired = request.body.find(q("rsp", "Receive") + "/" + q("rsp", "DesiredStream"))
        if desired is None or not desired.get("CommandId"):
            # Windows' cmd plugin does not serve shell-level Receive (test_winrs_fail_poll_process.yml).
            raise faults.invalid_parameter()
        process = shell.command(desired.get("CommandId"))
        streams = [name for name in (desired.text or "").split() if name in STREAMS] or list(STREAMS)
        timeout = min(request.operation_timeout if request.operation_timeout is not None else ctx.max_timeout, ctx.max_timeout)
        command_id = process.command_id
        raw_budget = self._raw_budget(request.body_budget, command_id, streams)
        chunk = process.receive(streams, timeout, raw_budget)
        if chunk is None:
            raise faults.operation_timeout()
        return Reply(self._received_body(command_id, streams, chunk), NS_RECEIVE)

    @staticmethod
    def _received_body(command_id: str, streams: List[str], chunk: Chunk) -> str:
        parts = ["<rsp:ReceiveResponse>"]
        for name in streams:
            data = chunk.data.get(name)
            if data:
                encoded = base64.b64encode(data).decode("ascii")
                parts.append(f'<rsp:Stream Name="{name}" CommandId="{command_id}">{encoded}</rsp:Stream>')
        if chunk.done:
            for name in streams:
                parts.append(f'<rsp:Stream Name="{name}" CommandId="{command_id}" End="true"></rsp:Stream>')
            parts.append(
                f'<rsp:CommandState CommandId="{command_id}" State="{STATE}Done">'
                f"<rsp:ExitCode>{chunk.exit_code}</rsp:ExitCode></rsp:CommandState>"
            )
        else:
            parts.append(f'<rsp:CommandState CommandId="{command_id}" State="{STATE}Running"></rsp:CommandState>')
        parts.append("</rsp:ReceiveResponse>")
        return "".join(parts)

    def _raw_budget(self, body_budget: int, command_id: str, streams: List[str]) -> int:
        """Raw output bytes that fit, base64-encoded, in the reply body under MaxEnvelopeSize."""
        skeleton = self._received_body(command_id, streams, Chunk(done=True, exit_code=4294967295))
        per_stream = len(f'<rsp:Stream Name="stderr" CommandId="{command_id}"></rsp:Stream>')
        available = body_budget - len(skeleton) - len(streams) * (per_stream + 4)
        # Always make progress, even under a silly small MaxEnvelopeSize.
        return max(available, 1024) // 4 * 3

    def _signal(self, shell: CmdShell, request: WSManRequest, ctx: RequestContext) -> Reply:
        element = request.body.find(q("rsp", "Signal"))
        code_element = element.find(q("rsp", "Code")) if element is not None else None
        if element is None or code_element is None:
            raise faults.invalid_parameter()
        process = shell.command(element.get("CommandId"))
        code = (code_element.text or "").strip()
        name = code[len(SIGNAL_PREFIX) :].lower() if code.lower().startswith(SIGNAL_PREFIX.lower()) else ""
        if name == "terminate":
            shell.remove(process.command_id)
            process.kill()
            log.info("command %s terminated", process.command_id)
        elif name in SIGNALS:
            process.send_signal(SIGNALS[name])
        else:
            raise faults.invalid_parameter()
        return Reply("<rsp:SignalResponse/>")
