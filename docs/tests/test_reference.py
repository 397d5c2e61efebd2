"""The Python reference page documents the whole public API: every name ``psremote`` exports
is the subject of an autodoc directive in docs/reference/python.md (a new export without its
entry fails here, before a reader misses it)."""

from __future__ import annotations

import re

import psremote
from samples import DOCS


def test_every_public_name_has_an_entry_in_the_python_reference():
    text = (DOCS / "reference" / "python.md").read_text()
    documented = set(re.findall(r"^\.\. auto(?:class|function|exception|data):: psremote\.(\w+)\s*$", text, flags=re.MULTILINE))
    exported = set(psremote.__all__)
    assert exported - documented == set()
    # Nothing documented under the package's name that it does not export.
    assert documented - exported == set()
