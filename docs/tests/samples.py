"""Finding the samples of the documentation's pages.

A sample is a fenced ```python block (run whole) or a ```console block (its ``$ psremote ...``
lines run; a line ending in ``\\`` continues on the next). MyST comment lines right before a
block (``% sample: <environment>``, ``% expect: <text>``) say how to run and check it; see
docs/README.md. Other fences (``text``, ``powershell``...) are shown, never run; a ```c fence
is an error (C code is included from examples/c, which make c-test compiles and runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

DOCS = Path(__file__).resolve().parent.parent

#: The environments a ``% sample:`` line may name (docs/README.md says what each gives and checks).
ENVIRONMENTS = ("default", "kerberos", "https", "basic-https", "cert", "credssp", "fleet", "cmd")
#: Console commands the runner runs; other commands in console blocks are shown only.
RUNNABLE_COMMANDS = ("psremote", "kinit", "export")


class SampleError(ValueError):
    """A page's sample markup is wrong (unknown environment, annotation without a block...)."""


@dataclass
class Block:
    page: str
    """The page's path under docs/, e.g. ``getting-started.md``."""
    line: int
    """1-based line of the opening fence."""
    kind: str
    """``python`` or ``console``."""
    code: str
    """The Python source, or the console commands (one per line, ``$ `` removed, continuations joined)."""
    environment: str = "default"
    expect: List[str] = field(default_factory=list)
    """Texts the block's output must contain."""
    commands: List[str] = field(default_factory=list)
    """A console block's commands."""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)(.*)$")
_ANNOTATION = re.compile(r"^%\s*(sample|expect)\s*:\s*(.*?)\s*$")


def pages() -> List[Path]:
    """Every page of the documentation (Markdown under docs/, this runner's guide left out)."""
    found = []
    for path in sorted(DOCS.rglob("*.md")):
        relative = path.relative_to(DOCS)
        if relative.parts[0] in ("_build", "tests", "_ext") or relative.as_posix() == "README.md":
            continue
        found.append(path)
    return found


def console_commands(body: List[str]) -> List[str]:
    """The ``$ `` lines of a console block with their continuations, ``$ `` removed."""
    commands: List[str] = []
    current: Optional[str] = None
    for raw in body:
        if current is not None:
            current += "\n" + raw
        elif raw.startswith("$ "):
            current = raw[2:]
        else:
            continue  # output shown in the page
        if current.endswith("\\"):
            continue
        commands.append(current)
        current = None
    if current is not None:
        raise SampleError(f"a console command ends with a continuation: {current!r}")
    return commands


def extract(path: Path) -> List[Block]:
    """The samples of one page, in page order."""
    page = path.relative_to(DOCS).as_posix() if path.is_relative_to(DOCS) else str(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: List[Block] = []
    pending: dict = {}
    pending_line = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        annotation = _ANNOTATION.match(line.strip())
        if annotation:
            key, value = annotation.groups()
            if key == "sample":
                if value not in ENVIRONMENTS:
                    raise SampleError(f"{page}:{index + 1}: unknown sample environment {value!r} (known: {', '.join(ENVIRONMENTS)})")
                if "sample" in pending:
                    raise SampleError(f"{page}:{index + 1}: two '% sample:' lines for one block")
                pending["sample"] = value
            else:
                if not value:
                    raise SampleError(f"{page}:{index + 1}: '% expect:' without a text")
                pending.setdefault("expect", []).append(value)
            pending_line = index + 1
            index += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            indent, marks, language, _ = fence.groups()
            body: List[str] = []
            end = index + 1
            while end < len(lines) and not re.match(rf"^\s*{re.escape(marks[0])}{{{len(marks)},}}\s*$", lines[end]):
                body.append(lines[end][len(indent) :] if lines[end].startswith(indent) else lines[end])
                end += 1
            if end >= len(lines):
                raise SampleError(f"{page}:{index + 1}: a fence that is never closed")
            if language.lower() in ("c", "cpp", "c++", "h"):
                raise SampleError(
                    f"{page}:{index + 1}: C code is not written in pages: literalinclude it from examples/c, "
                    "which make c-test builds and runs"
                )
            if language in ("python", "console"):
                commands = console_commands(body) if language == "console" else []
                code = "\n".join(body) + "\n" if language == "python" else "\n".join(commands)
                environment, expect = pending.get("sample", "default"), pending.get("expect", [])
                blocks.append(Block(page, index + 1, language, code, environment, expect, commands))
            elif pending:
                raise SampleError(f"{page}:{pending_line}: annotation before a ```{language or 'plain'} block, which does not run")
            pending = {}
            index = end + 1
            continue
        if pending and line.strip():
            raise SampleError(f"{page}:{pending_line}: annotation not right before a code block")
        index += 1
    if pending:
        raise SampleError(f"{page}:{pending_line}: annotation at the end of the page")
    return blocks
