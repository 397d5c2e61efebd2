"""One version everywhere: the Cargo workspace's `version` is the only place it is written.

The crates inherit it (`version.workspace = true`), maturin gives it to the wheel (pyproject's
`dynamic = ["version"]`), the native module compiles it in (`env!("CARGO_PKG_VERSION")`) and
`psremote.__version__`, `psremote --version` and the installed metadata must all say it, and so
must the C header's `PSR_VERSION_*` (written out in bindings-c/src/lib.rs, tied to the crate
version by its unit test, copied into include/psremote.h by cbindgen).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psremote
from psremote import _native

ROOT = Path(__file__).resolve().parents[2]


def workspace_version() -> str:
    manifest = (ROOT / "Cargo.toml").read_text()
    section = manifest.split("[workspace.package]", 1)[1].split("\n[", 1)[0]
    match = re.search(r'^version = "([^"]+)"$', section, re.M)
    assert match, "no version in [workspace.package]"
    return match.group(1)


def test_every_crate_takes_the_workspace_version():
    members = re.search(r"^members = \[(.*)\]$", (ROOT / "Cargo.toml").read_text(), re.M)
    assert members
    crates = re.findall(r'"([^"]+)"', members.group(1))
    assert {"core", "bindings-python", "bindings-c"} <= set(crates)
    for crate in crates:
        package = (ROOT / crate / "Cargo.toml").read_text().split("[package]", 1)[1].split("\n[", 1)[0]
        assert re.search(r"^version\.workspace = true$", package, re.M), f"{crate} sets a version of its own"


def test_the_wheel_takes_its_version_from_cargo():
    project = (ROOT / "pyproject.toml").read_text().split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^dynamic = \[.*"version".*\]$', project, re.M)
    assert not re.search(r"^version\s*=", project, re.M)


def test_version_agrees_with_cargo_the_metadata_and_the_cli():
    version = workspace_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:[-+.][0-9A-Za-z.]+)?", version)
    assert psremote.__version__ == version
    assert _native.__version__ == version
    assert importlib.metadata.version("psremote") == version

    script = shutil.which("psremote", path=os.path.dirname(sys.executable))
    assert script is not None, "the psremote console script is not installed next to this Python"
    done = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"psremote {version}\n"
    module = subprocess.run([sys.executable, "-m", "psremote", "--version"], capture_output=True, text=True, timeout=60)
    assert module.returncode == 0, module.stderr
    assert module.stdout == f"psremote {version}\n"


def test_the_c_header_has_the_version():
    header = (ROOT / "include" / "psremote.h").read_text()
    parts = {
        name: int(value)
        for name, value in re.findall(r"^#define PSR_VERSION_(MAJOR|MINOR|PATCH) (\d+)$", header, re.M)
    }
    assert set(parts) == {"MAJOR", "MINOR", "PATCH"}, "include/psremote.h lacks PSR_VERSION_MAJOR/MINOR/PATCH"
    numbers = re.match(r"(\d+)\.(\d+)\.(\d+)", workspace_version())
    assert numbers
    assert (parts["MAJOR"], parts["MINOR"], parts["PATCH"]) == tuple(int(n) for n in numbers.groups())


def test_the_changelog_has_the_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert f"## [{workspace_version()}]" in changelog
