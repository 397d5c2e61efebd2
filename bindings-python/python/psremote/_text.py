"""Server text on its way to a person (an exception message, a terminal line): characters that
act on a terminal instead of showing (escape sequences, BEL, carriage return, bidirectional
overrides, zero-width characters) are written as ``\\u{…}`` escapes, as the core does; newlines
and tabs stay. Very long text is cut, saying how much was left out."""

from __future__ import annotations

import unicodedata
from typing import Any

#: The longest message an exception shows; the full data stays on the exception's attributes.
MESSAGE_LIMIT = 16 * 1024


def _acts(c: str) -> bool:
    return c not in "\n\t" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")


def printable(text: Any) -> str:
    """``text`` with every character that acts on a terminal written as ``\\u{XXXX}``."""
    s = str(text)
    if not any(_acts(c) for c in s):
        return s
    return "".join(f"\\u{{{ord(c):04x}}}" if _acts(c) else c for c in s)


def message(text: Any, limit: int = MESSAGE_LIMIT) -> str:
    """An exception's message: printable, and cut after ``limit`` characters."""
    s = printable(text)
    if len(s) > limit:
        s = f"{s[:limit]}... ({len(s) - limit} more characters)"
    return s
