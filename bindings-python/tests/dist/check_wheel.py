"""Checks a built wheel before anyone installs it (`make dist` runs it on dist/*.whl).

    .venv-dist/bin/python bindings-python/tests/dist/check_wheel.py dist/psremote-*.whl

- `auditwheel show` must find the wheel consistent with manylinux_2_17_x86_64 (manylinux2014)
  or an older tag: the glibc symbol versions the module really uses, not just its file name;
- the file name carries the abi3 and both manylinux2014 spellings of the tag;
- the native module is stripped (no .symtab, no .debug_* sections);
- the package's typing files, the console script and both license files are inside, and the
  METADATA version is the Cargo workspace version.
Prints the wheel's size and the unpacked native module's size. Exits non-zero on any failure.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parents[3]
NEWEST_GLIBC = (2, 17)


def workspace_version() -> str:
    text = (ROOT / "Cargo.toml").read_text()
    section = text.split("[workspace.package]", 1)[1]
    match = re.search(r'^version = "([^"]+)"', section, re.M)
    assert match, "no version in [workspace.package]"
    return match.group(1)


def auditwheel_tag(wheel: Path) -> tuple[int, int]:
    shown = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(wheel)], capture_output=True, text=True, check=False
    )
    out = " ".join((shown.stdout + shown.stderr).split())
    if shown.returncode != 0:
        sys.exit(f"auditwheel show failed ({shown.returncode}): {out}")
    match = re.search(r'is consistent with the following platform tag: "manylinux_(\d+)_(\d+)_x86_64"', out)
    if not match:
        sys.exit(f"auditwheel found no manylinux x86_64 tag the wheel is consistent with: {out}")
    return int(match.group(1)), int(match.group(2))


def check(wheel: Path) -> None:
    failures: list[str] = []
    glibc = auditwheel_tag(wheel)
    print(f"auditwheel: consistent with manylinux_{glibc[0]}_{glibc[1]}_x86_64")
    if glibc > NEWEST_GLIBC:
        failures.append(f"the module needs glibc {glibc[0]}.{glibc[1]}, newer than {NEWEST_GLIBC[0]}.{NEWEST_GLIBC[1]}")

    for part in ("-cp39-abi3-", "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
        if part not in wheel.name:
            failures.append(f"the file name {wheel.name} lacks {part}")

    version = workspace_version()
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"psremote-{version}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode() if f"{info}/METADATA" in names else ""
        if f"\nVersion: {version}\n" not in metadata:
            failures.append(f"METADATA does not say Version: {version}")
        wanted = [
            "psremote/__init__.py", "psremote/cli.py", "psremote/_native.pyi", "psremote/py.typed",
            f"{info}/entry_points.txt", f"{info}/licenses/LICENSE-MIT", f"{info}/licenses/LICENSE-APACHE",
        ]
        failures += [f"missing from the wheel: {name}" for name in wanted if name not in names]
        scripts = archive.read(f"{info}/entry_points.txt").decode() if f"{info}/entry_points.txt" in names else ""
        if not re.search(r"^psremote\s*=\s*psremote\.cli:main\s*$", scripts, re.M):
            failures.append("the psremote console script is not declared")
        native = "psremote/_native.abi3.so"
        if native not in names:
            failures.append(f"missing from the wheel: {native}")
        else:
            so_size = archive.getinfo(native).file_size
            with archive.open(native) as raw:
                data = raw.read()
            sections = [s.name for s in ELFFile(io.BytesIO(data)).iter_sections()]
            left = [s for s in sections if s == ".symtab" or s.startswith(".debug")]
            if left:
                failures.append(f"{native} is not stripped: {', '.join(left)}")
            print(f"wheel {wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB; {native} unpacked: {so_size / 1e6:.1f} MB")

    if failures:
        sys.exit("wheel check failed:\n  " + "\n  ".join(failures))
    print("wheel check passed")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: check_wheel.py WHEEL")
    check(Path(sys.argv[1]))
