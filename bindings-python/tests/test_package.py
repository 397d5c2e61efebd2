"""The package's face: exports, typing markers, version."""

from __future__ import annotations

from pathlib import Path

import psremote


def test_public_names_exist():
    for name in psremote.__all__:
        assert hasattr(psremote, name), name
    assert psremote.__version__.count(".") >= 2


def test_ships_typing_information():
    package = Path(psremote.__file__).parent
    assert (package / "py.typed").exists()
    assert (package / "_native.pyi").exists()


def test_native_module_is_private():
    assert "_native" not in psremote.__all__
    assert not hasattr(psremote, "Client") or psremote.Client.__module__ == "psremote.client"
