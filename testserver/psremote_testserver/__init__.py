"""Loopback WinRM (WS-Management / WinRS) endpoint for psremote's tests and demo.

Run it with ``python -m psremote_testserver --port 0 --users FILE``; see cli.py.
"""

__version__ = "0.1.0"
