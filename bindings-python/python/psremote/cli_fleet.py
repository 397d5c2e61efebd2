"""``psremote run -H/-f`` and ``psremote cmd -H/-f``: one script or command on many hosts.

Each host's output is printed as the host finishes, every line prefixed with the host's name
(server text escaped, as everywhere the CLI prints it); its error records, warnings and failure
go to stderr the same way. ``--json`` prints one JSON object per host and line (NDJSON);
``--output-dir DIR`` writes each host's output to ``DIR/HOST.txt`` (its error stream, when it
has one, to ``DIR/HOST.err``; with ``--json``, ``DIR/HOST.json``) instead of printing it. A
summary line goes to stderr at the end; the exit status is 0 when every host succeeded, 1
otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from psremote._text import printable
from psremote.exceptions import ConfigurationError
from psremote.fleet import DEFAULT_THROTTLE, FleetSummary, HostResult, run_many
from psremote.hosts import expand_hosts
from psremote.records import CmdResult, PSResult

#: Host names listed in the summary line per status; the rest are counted.
SUMMARY_NAMES = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The fleet options of ``run`` and ``cmd``."""
    group = parser.add_argument_group("fleet (several hosts at once)")
    group.add_argument(
        "-H",
        "--hosts",
        action="append",
        default=[],
        metavar="LIST",
        help="run on these hosts: names, HOST:PORT, URLs or ranges such as web[01-40].corp.example, comma-separated "
        "(repeatable); with --url, the URL gives the scheme, port and path",
    )
    group.add_argument(
        "-f", "--hosts-file", action="append", default=[], metavar="FILE", help="a file of hosts, one per line, # comments (repeatable)"
    )
    group.add_argument("--throttle", type=int, metavar="N", help=f"hosts at once (default {DEFAULT_THROTTLE})")
    group.add_argument(
        "--connect-retries", type=int, metavar="N", help="further attempts at a host that cannot be reached (default 0)"
    )
    group.add_argument(
        "--output-dir", metavar="DIR", help="write each host's output to DIR/HOST.txt (DIR/HOST.json with --json) instead of printing it"
    )


def wanted(args: argparse.Namespace) -> bool:
    """Whether the command line names a fleet (-H or -f)."""
    return bool(getattr(args, "hosts", None) or getattr(args, "hosts_file", None))


def check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuses fleet options without hosts."""
    if not wanted(args):
        given = [o for o, v in (("--throttle", args.throttle), ("--connect-retries", args.connect_retries), ("--output-dir", args.output_dir)) if v is not None]
        if given:
            parser.error(f"{', '.join(given)} only apply with -H/--hosts or -f/--hosts-file")
        return


def cmd_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The shell and command options of `psremote cmd`, for every host of a fleet (stdin is read
    once and sent to each)."""
    environment: Dict[str, str] = {}
    for item in args.env:
        name, _, value = item.partition("=")
        environment[name] = value  # _cmd checked the NAME=VALUE form
    return {
        "environment": environment or None,
        "working_directory": args.cwd,
        "codepage": args.codepage,
        "no_profile": args.no_profile,
        "skip_cmd_shell": args.skip_cmd_shell,
        "stdin": sys.stdin.buffer.read() if args.stdin else None,
    }


# --- one host -------------------------------------------------------------------------------------


def host_json(r: HostResult) -> Dict[str, Any]:
    """A host's result as one JSON object."""
    from psremote.cli import result_json

    data: Dict[str, Any] = {
        "host": r.host,
        "index": r.index,
        "status": r.status,
        "elapsed": round(r.elapsed, 3),
        "attempts": r.attempts,
        "error": None if r.error is None else {"type": type(r.error).__name__, "message": str(r.error)},
    }
    if isinstance(r.result, PSResult):
        data.update(result_json(r.result))
    elif isinstance(r.result, CmdResult):
        data.update(stdout=r.result.text, stderr=r.result.stderr_text, exit_code=r.result.exit_code)
    return data


def _lines(text: str) -> List[str]:
    return text.rstrip("\n").splitlines()


def host_text(r: HostResult) -> Tuple[List[str], List[Tuple[str, Optional[str]]]]:
    """A host's output lines, and its error-stream lines with their colour, as the single-host
    CLI prints them (server text as it came: the caller escapes it for a terminal)."""
    from psremote.cli import format_value

    out: List[str] = []
    err: List[Tuple[str, Optional[str]]] = []
    if r.error is not None:
        err.append((f"{r.status}: {type(r.error).__name__}: {r.error}", "red"))
    elif isinstance(r.result, PSResult):
        result = r.result
        for value in result.output:
            if value is not None:
                out.extend(_lines(format_value(value)))
        for info in result.information:
            out.extend(_lines(str(info)))
        err.extend((line, "red") for record in result.errors for line in _lines(record.format()))
        err.extend((f"WARNING: {w}", "yellow") for w in result.warnings)
        err.extend((f"VERBOSE: {v}", "cyan") for v in result.verbose)
        err.extend((f"DEBUG: {d}", "yellow") for d in result.debug)
        if result.state == "Failed" and result.terminating_error is not None:
            err.extend((line, "red") for line in _lines(result.terminating_error.format()))
        elif result.state == "Stopped":
            err.append(("the pipeline was stopped", "yellow"))
    elif isinstance(r.result, CmdResult):
        out.extend(_lines(r.result.text))
        err.extend((line, None) for line in _lines(r.result.stderr_text))
        if r.result.exit_code != 0:
            err.append((f"exit code {r.result.exit_code}", "red"))
    return out, err


class OutputDir:
    """Writes each host's output to a file of its own, named after the host."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigurationError(f"cannot create the output directory {path!r}: {e.strerror or e}") from None
        self._used: Dict[str, None] = {}

    def stem(self, r: HostResult) -> str:
        """A file name for the host: its name with anything unsafe in a file name replaced;
        two hosts that come out the same get their list position added."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", r.host) or "_"
        if safe.startswith("."):
            safe = "_" + safe
        if safe.lower() in self._used:
            safe = f"{safe}-{r.index}"
        self._used[safe.lower()] = None
        return safe

    def write(self, r: HostResult, as_json: bool) -> None:
        stem = self.stem(r)
        if as_json:
            (self.path / f"{stem}.json").write_text(json.dumps(host_json(r), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            return
        if isinstance(r.result, CmdResult):
            (self.path / f"{stem}.txt").write_bytes(r.result.stdout)
            err_lines = [f"exit code {r.result.exit_code}"] if r.result.exit_code != 0 else []
            if r.result.stderr or err_lines:
                (self.path / f"{stem}.err").write_bytes(r.result.stderr + "".join(f"{line}\n" for line in err_lines).encode())
            return
        out, err = host_text(r)
        (self.path / f"{stem}.txt").write_text("".join(f"{line}\n" for line in out), encoding="utf-8")
        if err:
            (self.path / f"{stem}.err").write_text("".join(f"{line}\n" for line, _ in err), encoding="utf-8")


# --- the run --------------------------------------------------------------------------------------


def summary_line(summary: FleetSummary) -> str:
    parts = [str(summary)]
    for label, names in (("failed", summary.failed), ("unreachable", summary.unreachable)):
        if names:
            shown = ", ".join(printable(n) for n in names[:SUMMARY_NAMES])
            more = f" and {len(names) - SUMMARY_NAMES} more" if len(names) > SUMMARY_NAMES else ""
            parts.append(f"{label}: {shown}{more}")
    return "psremote: " + "; ".join(parts)


def run(args: argparse.Namespace, out: Any, client_options: Dict[str, Any], script: Optional[str] = None) -> int:
    """Runs ``script`` (``run``) or ``args.executable`` (``cmd``) on the hosts of -H and -f."""
    from psremote.cli import EXIT_ERRORS

    hosts = expand_hosts(*args.hosts, *(Path(f) for f in args.hosts_file))
    if args.url is not None:
        client_options["url"] = args.url
    work: Dict[str, Any] = (
        {"script": script} if script is not None else {"executable": args.executable, "args": list(args.arguments), **cmd_options(args)}
    )
    files = OutputDir(args.output_dir) if args.output_dir else None
    with run_many(
        hosts,
        throttle=DEFAULT_THROTTLE if args.throttle is None else args.throttle,
        timeout=args.timeout,
        connect_retries=args.connect_retries or 0,
        **work,
        **client_options,
    ) as results:
        for r in results:
            name = printable(r.host)
            if files is not None:
                files.write(r, args.json)
                if not r.ok:
                    out.err(f"{name}: {printable(r.reason)}", "red")
            elif args.json:
                out.out(json.dumps(host_json(r), ensure_ascii=False))
            else:
                lines, err = host_text(r)
                for line in lines:
                    out.out(f"{name}: {printable(line)}")
                for line, colour in err:
                    out.err(f"{name}: {printable(line)}", colour)
        summary = results.summary
    out.err(summary_line(summary), None if summary.ok else "red")
    return 0 if summary.ok else EXIT_ERRORS


def arguments_for_cmd(args: argparse.Namespace) -> None:
    """With -H/-f there is no HOST: ``cmd``'s first positional is the executable."""
    if args.host is not None:
        args.arguments = [args.executable, *args.arguments]
        args.executable, args.host = args.host, None


__all__ = ["add_arguments", "check", "host_json", "host_text", "run", "summary_line", "wanted", "OutputDir"]
