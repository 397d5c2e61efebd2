"""Shell engines, keyed by WS-Management resource URI.

The HTTP, auth and encryption layers never look inside a shell: the dispatcher
parses the envelope, finds the engine for ``wsman:ResourceURI`` here, and hands
it the request. The cmd shell registers its exact URI, the PSRP engine the
``http://schemas.microsoft.com/powershell/`` prefix.
"""

from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Tuple

from .soap import NS_DEFAULT, WSManRequest


@dataclass
class RequestContext:
    """Facts about the request that do not come from its envelope."""

    principal: str
    client_ip: str
    endpoint_url: str
    max_timeout: float  # seconds, the --max-timeout-ms cap
    max_envelope_size: int  # bytes, the --max-envelope-kb limit
    # What the winrm/config document reports about the listener (see dispatch.config_document).
    allow_unencrypted: bool = False
    auth_schemes: Tuple[str, ...] = ()
    cbt: str = "relaxed"


@dataclass
class Reply:
    """The s:Body content of a successful reply; the action is the request's + "Response"."""

    body: str
    prefixes: Tuple[str, ...] = NS_DEFAULT


CONNECTED = "Connected"
DISCONNECTED = "Disconnected"


def owner_key(principal: str) -> str:
    """The account part of a principal (``DOMAIN\\user``, ``user@REALM``, ``user``), case-folded: shells belong
    to a user whichever spelling or mechanism the client logged on with."""
    principal = principal.replace("\\@", "@")  # MIT's enterprise names: user\\@REALM@REALM
    if "\\" in principal:
        principal = principal.split("\\", 1)[1]
    return principal.split("@", 1)[0].lower()


def span(seconds: float) -> str:
    """ShellRunTime / ShellInactivity as Windows writes them: P0DT0H0M2S."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"P{days}DT{hours}H{minutes}M{secs}S"


class Shell(abc.ABC):
    """What the dispatcher needs to know about an open shell."""

    shell_id: str
    resource_uri: str
    owner: str = ""
    # Lifecycle, kept by the dispatcher: Connected/Disconnected, the wsmv:SessionId of the client that
    # holds (or last held) the shell, monotonic times for ShellRunTime/ShellInactivity, and a counter
    # that changes on every Disconnect/Reconnect/Connect (so a stale idle timer knows it is stale).
    state: str = CONNECTED
    client_session: Optional[str] = None
    created: float = 0.0
    last_activity: float = 0.0
    generation: int = 0

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    @property
    def disconnected(self) -> bool:
        return self.state == DISCONNECTED

    @abc.abstractmethod
    def live_commands(self) -> int:
        """Commands not yet released by Signal Terminate or shell deletion."""

    def extra_counts(self) -> Dict[str, int]:
        """Engine-specific counters for the control state (summed over shells)."""
        return {}


class ShellEngine(abc.ABC):
    #: Actions (besides transfer Create and Delete) this engine answers.
    actions: FrozenSet[str] = frozenset()

    @abc.abstractmethod
    def create(self, request: WSManRequest, ctx: RequestContext, taken: "ShellTable") -> Tuple[Shell, Reply]:
        """Create a shell from a transfer/Create request (``taken`` tells which ShellIds exist)."""

    @abc.abstractmethod
    def handle(self, shell: Shell, request: WSManRequest, ctx: RequestContext) -> Reply:
        """Answer one of ``actions`` for an existing shell; raise faults.WSManFault to fail."""

    @abc.abstractmethod
    def delete(self, shell: Shell) -> None:
        """Release everything the shell holds (processes, threads)."""

    @abc.abstractmethod
    def describe(self, shell: Shell) -> str:
        """The shell's ``rsp:Shell`` element as transfer Get and Enumerate return it."""

    def command_ids(self, shell: Shell) -> List[str]:
        """CommandIds of the shell's live commands (Enumerate of .../windows/shell/Command)."""
        return []


class EngineRegistry:
    def __init__(self) -> None:
        self._exact: Dict[str, ShellEngine] = {}
        self._prefixes: List[Tuple[str, ShellEngine]] = []

    def register(self, resource_uri: str, engine: ShellEngine) -> None:
        self._exact[resource_uri.lower()] = engine

    def register_prefix(self, prefix: str, engine: ShellEngine) -> None:
        self._prefixes.append((prefix.lower(), engine))

    def lookup(self, resource_uri: str) -> Optional[ShellEngine]:
        key = resource_uri.lower()
        if key in self._exact:
            return self._exact[key]
        for prefix, engine in self._prefixes:
            if key.startswith(prefix) and len(key) > len(prefix):
                return engine
        return None


class ShellTable:
    """Open shells by ShellId (compared case-insensitively, as Windows does)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shells: Dict[str, Tuple[ShellEngine, Shell]] = {}

    def add(self, engine: ShellEngine, shell: Shell) -> None:
        with self._lock:
            self._shells[shell.shell_id.upper()] = (engine, shell)

    def get(self, shell_id: Optional[str]) -> Optional[Tuple[ShellEngine, Shell]]:
        if not shell_id:
            return None
        with self._lock:
            return self._shells.get(shell_id.upper())

    def contains(self, shell_id: str) -> bool:
        with self._lock:
            return shell_id.upper() in self._shells

    def pop(self, shell_id: str) -> Optional[Tuple[ShellEngine, Shell]]:
        with self._lock:
            return self._shells.pop(shell_id.upper(), None)

    def all(self) -> List[Tuple[ShellEngine, Shell]]:
        with self._lock:
            return list(self._shells.values())

    def pop_all(self) -> List[Tuple[ShellEngine, Shell]]:
        with self._lock:
            shells = list(self._shells.values())
            self._shells.clear()
            return shells

    def counts(self, extra_keys: Tuple[str, ...] = ()) -> Dict[str, int]:
        """{"shells", "commands"} plus every engine counter (``extra_keys`` are reported even when 0)."""
        with self._lock:
            shells = [shell for _, shell in self._shells.values()]
        result = {
            "shells": len(shells),
            "commands": sum(shell.live_commands() for shell in shells),
            "disconnected": sum(1 for shell in shells if shell.disconnected),
        }
        result.update((key, 0) for key in extra_keys)
        for shell in shells:
            for key, value in shell.extra_counts().items():
                result[key] = result.get(key, 0) + value
        return result
