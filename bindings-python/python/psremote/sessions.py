"""Sessions that outlive the client: what :meth:`psremote.Client.list_pools` reports, and the
checks of the options that decide how a disconnected pool lives on the server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple, Union

from psremote.exceptions import ConfigurationError

__all__ = ["PoolInfo"]

#: The ``buffer_mode`` values: what the server does with output produced while a pool is
#: disconnected. ``"block"`` stops the pipelines until a client receives again (Windows'
#: default), ``"drop"`` keeps them running and discards the oldest output that does not fit.
BUFFER_MODES = ("block", "drop")


@dataclass(frozen=True)
class PoolInfo:
    """A runspace pool on the server, connected or not, as the server describes it.

    Pass it (or its ``id``) to :meth:`psremote.Client.connect_pool` to attach to a disconnected
    pool, then :meth:`psremote.RunspacePool.attach_pipeline` with one of ``pipelines``.
    Everything but ``id``, ``configuration_name``, ``state`` and ``pipelines`` is the server's
    text, empty (or None) when it left the field out.
    """

    #: The pool (shell) id.
    id: str
    #: The session configuration, e.g. ``"Microsoft.PowerShell"``.
    configuration_name: str
    #: ``"Connected"`` or ``"Disconnected"``.
    state: str
    #: The CommandIds of the pipelines the server still holds (finished or not).
    pipelines: Tuple[str, ...]
    name: Optional[str] = None
    resource_uri: str = ""
    #: The account that owns the pool.
    owner: str = ""
    #: The address of the client that created or last connected it.
    client_ip: str = ""
    process_id: Optional[int] = None
    #: Seconds a disconnected pool waits for a client before the server deletes it.
    idle_timeout: Optional[float] = None
    #: The largest idle timeout the server allows.
    max_idle_timeout: Optional[float] = None
    #: ``"block"`` or ``"drop"`` the server's default when None.
    buffer_mode: Optional[str] = None
    locale: str = ""
    data_locale: str = ""
    #: How long the pool has existed and been idle, as the server writes it (``P0DT0H0M9S``).
    shell_run_time: str = ""
    shell_inactivity: str = ""
    #: Memory in use, as the server writes it (``46MB``).
    memory_used: str = ""
    child_processes: Optional[int] = None
    profile_loaded: str = ""
    compression_mode: str = ""
    encoding: str = ""

    @property
    def disconnected(self) -> bool:
        """Whether the pool is disconnected (a client may connect to it)."""
        return self.state.lower() == "disconnected"

    @classmethod
    def _from_native(cls, d: Mapping[str, Any]) -> "PoolInfo":
        fields = dict(d)
        fields["pipelines"] = tuple(fields.get("pipelines") or ())
        if fields.get("buffer_mode") is not None:
            fields["buffer_mode"] = str(fields["buffer_mode"]).lower()
        return cls(**fields)


def outlive_options(idle_timeout: Optional[float], buffer_mode: Optional[str]) -> Tuple[Optional[float], Optional[str]]:
    """Checks ``idle_timeout`` (seconds) and ``buffer_mode`` (``"block"``/``"drop"``)."""
    if idle_timeout is not None:
        if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float)) or not 0 < idle_timeout < 1e9:
            raise ConfigurationError(f"idle_timeout must be a positive number of seconds or None, got {idle_timeout!r}")
        idle_timeout = float(idle_timeout)
    if buffer_mode is not None:
        if not isinstance(buffer_mode, str) or buffer_mode.lower() not in BUFFER_MODES:
            raise ConfigurationError(f"buffer_mode must be 'block' or 'drop', got {buffer_mode!r}")
        buffer_mode = buffer_mode.lower()
    return idle_timeout, buffer_mode


def pool_target(pool: Union[str, PoolInfo], configuration_name: Optional[str]) -> Tuple[str, Optional[str]]:
    """The shell id and configuration name to connect to (a PoolInfo brings its own name)."""
    if isinstance(pool, PoolInfo):
        return pool.id, configuration_name or pool.configuration_name
    if isinstance(pool, str) and pool.strip():
        return pool.strip(), configuration_name
    raise ConfigurationError(f"connect_pool needs a pool id or a PoolInfo, got {pool!r}")
