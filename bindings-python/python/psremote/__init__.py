"""psremote: PowerShell Remoting for Python, backed by a Rust core."""

from psremote._native import __version__

__all__ = ["__version__"]
