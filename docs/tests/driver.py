"""Runs one page's samples in order, in this process (started by test_samples.py per page).

``python driver.py PLAN.json`` with the control pipe's descriptors in DOCS_SAMPLES_CTL
(``read,write``). The plan is a list of blocks: ``{"kind", "code", "commands", "where", "env"}``. For each
block the driver says ``begin N`` on the pipe, waits for ``go`` (the runner notes the
endpoints' state), applies the block's environment variables, runs it, and says
``end N {json}`` with ``ok``, the output and the error. Python blocks share one namespace, as
a reader typing the page into one interpreter would; console blocks run their commands with
bash, each must exit 0 (``export NAME=VALUE`` lines hold for the rest of the page). The driver stops at the first failing block: later ones build on it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
import sys
import traceback
from typing import Any, Dict, List, Tuple

COMMAND_TIMEOUT = 120


class _Tee(io.TextIOBase):
    """Writes to the real stream and keeps a copy (the block's output for checks)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        self.real.write(text)
        return len(text)

    def flush(self) -> None:
        self.real.flush()

    def isatty(self) -> bool:
        return False


def run_python(code: str, where: str, namespace: Dict[str, Any]) -> Tuple[bool, str, str]:
    out, err = _Tee(sys.stdout), _Tee(sys.stderr)
    try:
        compiled = compile(code, where, "exec")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            exec(compiled, namespace)
    except BaseException:  # a sample's failure of any kind fails the block, with its traceback
        return False, out.copy.getvalue() + err.copy.getvalue(), traceback.format_exc()
    return True, out.copy.getvalue() + err.copy.getvalue(), ""


def run_console(commands: List[str], kinit_password: str, exports: Dict[str, str]) -> Tuple[bool, str, str]:
    output: List[str] = []
    for command in commands:
        words = shlex.split(command.replace("\\\n", " "), posix=True)
        if not words:
            continue
        if words[0] == "export":
            for assignment in words[1:]:
                name, sep, value = assignment.partition("=")
                if not sep:
                    return False, "".join(output), f"{command}: export without a value: {assignment!r}"
                exports[name] = os.environ[name] = os.path.expandvars(value)
            continue
        if words[0] == "kinit":
            completed = subprocess.run(
                words, input=kinit_password + "\n", capture_output=True, text=True, timeout=COMMAND_TIMEOUT
            )
        elif words[0] == "psremote":
            completed = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL
            )
        else:
            # Shown to the reader (pip, openssl...), not run here: docs/README.md lists what runs.
            continue
        output.append(completed.stdout + completed.stderr)
        sys.stdout.write(completed.stdout)
        sys.stderr.write(completed.stderr)
        if completed.returncode != 0:
            return False, "".join(output), f"{command}: {words[0]} exited with {completed.returncode}"
    return True, "".join(output), ""


def main() -> int:
    plan = json.loads(open(sys.argv[1], encoding="utf-8").read())
    read_fd, write_fd = (int(fd) for fd in os.environ.pop("DOCS_SAMPLES_CTL").split(","))
    control_in = os.fdopen(read_fd, "r", encoding="utf-8")
    control_out = os.fdopen(write_fd, "w", encoding="utf-8")
    base_env = dict(os.environ)
    namespace: Dict[str, Any] = {"__name__": "__main__"}
    exports: Dict[str, str] = {}  # a console block's `export`s hold for the rest of the page
    for number, block in enumerate(plan["blocks"]):
        control_out.write(f"begin {number}\n")
        control_out.flush()
        if control_in.readline().strip() != "go":
            return 1
        os.environ.clear()
        os.environ.update(base_env)
        os.environ.update(block["env"])
        os.environ.update(exports)
        if block["kind"] == "python":
            ok, output, error = run_python(block["code"], block["where"], namespace)
        else:
            ok, output, error = run_console(block["commands"], plan["kinit_password"], exports)
        sys.stdout.flush()
        sys.stderr.flush()
        control_out.write(f"end {number} " + json.dumps({"ok": ok, "output": output, "error": error}) + "\n")
        control_out.flush()
        if control_in.readline().strip() != "go" or not ok:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
