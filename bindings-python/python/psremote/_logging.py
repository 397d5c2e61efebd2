"""Logging: the Rust core's tracing events and the package's own records, through the
standard :mod:`logging` module.

Every record goes to the logger ``psremote`` or one of its children (``psremote.transport``,
``psremote.psrp.pool``, ...), with its structured fields in ``record.psremote`` (a dict).
Configure it like any other library logger::

    logging.getLogger("psremote").setLevel(logging.DEBUG)

Protocol payloads (message bodies, CLIXML) are only logged after an explicit opt-in with
:func:`enable_trace`, at level ``TRACE`` (5, below DEBUG). Secrets never reach a log: the
native side never emits them, and :func:`emit` also masks any field whose name says it holds
one.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union

__all__ = ["TRACE", "disable_trace", "emit", "enable_trace", "enabled", "sync_native_level", "trace_enabled"]

#: Level of protocol payload records; below ``logging.DEBUG``.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

ROOT = "psremote"
_root = logging.getLogger(ROOT)
_loggers: Dict[str, logging.Logger] = {}
_trace = False

# Field names (lower-cased, compared by substring) whose values are never written.
_SECRET_WORDS = ("password", "passwd", "secret", "token", "session_key", "private_key", "credential", "authorization")


def enable_trace(level_logger: bool = True) -> None:
    """Opt in to protocol payload records at level ``TRACE``.

    Payloads are still redacted by the core (no SecureString plaintext, no credentials), but
    they can contain anything your scripts send or receive: enable this only to debug. With
    ``level_logger`` (the default) the ``psremote`` logger's level is set to ``TRACE`` too.
    """
    global _trace
    _trace = True
    if level_logger:
        _root.setLevel(TRACE)
    sync_native_level()


def disable_trace() -> None:
    """Stops payload records again (the logger level is left as it is)."""
    global _trace
    _trace = False
    sync_native_level()


_native_level: Optional[int] = None


def sync_native_level() -> None:
    """Tells the native module the most verbose level anyone listens to, so it forwards
    nothing more (called when clients, pools and pipelines are created, and by
    :func:`enable_trace`). Configure logging before creating a Client to see its records."""
    global _native_level
    level = _root.getEffectiveLevel()
    if level < logging.DEBUG and not _trace:
        level = logging.DEBUG
    if level == _native_level:
        return
    try:
        from psremote import _native
    except ImportError:
        return
    setter = getattr(_native, "set_log_level", None)
    if setter is not None:
        setter(level)
        _native_level = level


def trace_enabled() -> bool:
    """Whether :func:`enable_trace` was called; the native side asks before building payloads."""
    return _trace


def _logger_for(target: str) -> logging.Logger:
    logger = _loggers.get(target)
    if logger is None:
        # Rust targets look like "psremote::transport::connection" or "psremote_python::pipeline".
        parts = [p for p in target.replace("::", ".").split(".") if p]
        if parts and parts[0] in ("psremote", "psremote_python", "_native"):
            parts = parts[1:]
        name = ".".join([ROOT, *parts]) if parts else ROOT
        logger = logging.getLogger(name)
        _loggers[target] = logger
    return logger


def enabled(level: int, target: str = ROOT) -> bool:
    """Whether a record at this level for this target would be handled (cheap check for the
    native side before it formats anything)."""
    if level <= TRACE and not _trace:
        return False
    return _logger_for(target).isEnabledFor(level)


def _redact(fields: Mapping[str, Any]) -> Dict[str, Any]:
    clean: Dict[str, Any] = {}
    for key, value in fields.items():
        lowered = str(key).lower()
        if any(word in lowered for word in _SECRET_WORDS):
            clean[key] = "***"
        else:
            clean[key] = value
    return clean


class _FieldsText:
    """Renders the fields as `` key=value`` pairs, only when a handler formats the record."""

    __slots__ = ("fields",)

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return "".join(f" {k}={v!r}" if isinstance(v, str) else f" {k}={v}" for k, v in self.fields.items())


def emit(level: int, target: str, message: str, fields: Union[Mapping[str, Any], Iterable[Tuple[str, Any]], None] = None) -> None:
    """Forwards one native tracing event to :mod:`logging`.

    Called by the native module (with the GIL held) for every event it emits; it must never
    raise, so any failure is swallowed after a best-effort report.
    """
    try:
        if level <= logging.WARNING and not target.startswith("psremote"):
            # Dependencies (sspi, hyper) log per message at DEBUG, and warn of conditions normal
            # here (sspi: Kerberos delegation sealing with the session key): trace volume, never
            # printed by logging's last-resort handler. Their errors pass.
            level = TRACE
        if level <= TRACE and not _trace:
            return
        logger = _logger_for(target)
        if not logger.isEnabledFor(level):
            return
        if fields is None:
            fields = {}
        elif not isinstance(fields, Mapping):
            fields = dict(fields)
        clean = _redact(fields)
        logger.log(level, "%s%s", message, _FieldsText(clean), extra={"psremote": clean})
    except Exception:  # noqa: BLE001 - a log call must not break the caller
        logging.getLogger(ROOT).debug("cannot forward a native log record", exc_info=False)


def log(level: int, message: str, /, logger: Optional[logging.Logger] = None, **fields: Any) -> None:
    """The package's own structured records (the same shape as the native ones)."""
    target = logger or _root
    if target.isEnabledFor(level):
        clean = _redact(fields)
        target.log(level, "%s%s", message, _FieldsText(clean), extra={"psremote": clean}, stacklevel=2)
