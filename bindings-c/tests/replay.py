"""Replays recorded real-Windows conversations through psremote's C API.

``python bindings-c/tests/replay.py BINARY [BINARY...] [--only NAME ...]``

For each scenario and each BINARY (bindings-c/tests/test_replay.c built as C, and as C++), starts
the replay server (``python -m psremote_testserver.replay``) on the scenario's recording in
core/tests/data/windows-transcripts/, runs ``BINARY SCENARIO URL`` (which makes the C calls
equivalent to what pypsrp did and checks the recorded outcome), then checks the server's
GET /_control/state as core/tests/replay.rs's ``assert_exact`` does: no unexpected request,
every recorded exchange served, every recorded PSRP message sent, no content differing from
the recording but for the differences a scenario makes on purpose (copy_file_failure's true
hash), and exactly the expected synthesized answers (psremote's Signal Terminate after a
pipeline and its separate END_OF_PIPELINE_INPUT Send, which the recorded client did not make),
plus per-scenario counts of the client's PSRP messages. Then stops the server. Every recording
without a scenario is listed in NOT_REPLAYED with the reason (checked once per run).

Prints the binary's lines, one ``  FAIL [scenario] ...`` line per failed server check, and last
``N passed, M failed`` summed over the binaries' checks and the server checks; a binary that
crashes or hangs (killed after LIMIT seconds) counts as one more failure. Exit status 0 only
when nothing failed. Runs with the virtualenv's python (psremote_testserver installed).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from psremote_testserver.testing import read_url_line

ROOT = Path(__file__).resolve().parents[2]
TRANSCRIPTS = ROOT / "core" / "tests" / "data" / "windows-transcripts"
USER = "replay"
PASSWORD = "Replay-Passw0rd!"
#: Longest one scenario's binary may run (the replay server holds a pool Receive 2 s at most).
LIMIT = 90.0


@dataclass
class Scenario:
    name: str  # the C program's scenario
    transcript: str
    synthesized: Sequence[str] = ()
    #: PSRP message type -> how many the client sent.
    messages: Dict[str, int] = field(default_factory=dict)
    server_args: Sequence[str] = ()
    #: Requests the recording has no answer for (action names).
    unexpected: Sequence[str] = ()
    #: Differences from the recording the scenario makes on purpose, each given by the pieces
    #: its report holds in that order.
    mismatches: Sequence[Sequence[str]] = ()


SIGNAL = "Signal shell1/cmd1"
COPY = ["Send shell1/cmd1", SIGNAL]
FILES = ["--ignore-script-text"]
AZ_SHA1 = "32d10c7b8cf96570ca04ce37f2a19d84240d3a89"
MOCKED_SHA1 = "c3499c2729730a7f807efb8676a92dcb6f8a3f8f"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


SCENARIOS: List[Scenario] = [
    Scenario("psrp_open_runspace", "test_psrp_open_runspace.yml", messages={"CREATE_PIPELINE": 0}),
    # The 2019 recording has pypsrp's Signal after each pipeline, so nothing is synthesized.
    Scenario("psrp_multiple_invocations", "test_psrp_multiple_invocations.yml", messages={"CREATE_PIPELINE": 2}),
    # The 2018 recordings have no Signal Terminate after the pipeline; psremote sends one.
    Scenario("psrp_clear_commands", "test_psrp_clear_commands.yml", [SIGNAL], {"CREATE_PIPELINE": 1}),
    Scenario("psrp_error_failed", "test_psrp_error_failed.yml", [SIGNAL], {"CREATE_PIPELINE": 1}),
    Scenario("psrp_stream_output_invocation", "test_psrp_stream_output_invocation.yml", [SIGNAL], {"CREATE_PIPELINE": 1}),
    # pypsrp sent the four inputs and their end in one Send; the C API sends each input as it is
    # given (psr_pipeline_send_input_json), and the end in a Send of its own: the first Send gets
    # the recorded answer, the other four are answered as its continuations.
    Scenario(
        "psrp_with_input",
        "test_psrp_with_input.yml",
        ["Send shell1/cmd1"] * 4 + [SIGNAL],
        {"PIPELINE_INPUT": 4, "END_OF_PIPELINE_INPUT": 1},
    ),
    # SetShouldExit is a void host call: nothing is answered.
    Scenario("psrp_pshost_methods", "test_psrp_pshost_methods.yml", [SIGNAL], {"PIPELINE_HOST_RESPONSE": 0}),
    # The first client frees its disconnected pools (they stay); a second one lists, connects and
    # closes them.
    Scenario("psrp_disconnect_runspaces", "test_psrp_disconnect_runspaces.yml"),
    Scenario("psrp_is_alive_invalid_selectors", "test_psrp_is_alive_invalid_selectors.yml"),
    Scenario("psrp_is_alive_other_wsman_error", "test_psrp_is_alive_other_wsman_error.yml"),
    # The dropped Get is sent again, which the recording cannot answer; the recorded client
    # stopped there, and psremote's close still deletes the pool.
    Scenario("psrp_is_alive_http_error", "test_psrp_is_alive_http_error.yml", unexpected=["Get", "Delete"]),
    Scenario("psrp_receive_failure", "test_psrp_receive_failure.yml"),
    Scenario("client_execute_cmd", "test_client_execute_cmd.yml"),
    Scenario("client_execute_cmd_environment", "test_client_execute_cmd_environment.yml"),
    Scenario("winrs_open_already_opened", "test_winrs_open_already_opened.yml"),
    Scenario("winrs_standard", "test_winrs_standard.yml"),
    Scenario("winrs_environment", "test_winrs_environment.yml"),
    Scenario("winrs_noprofile", "test_winrs_noprofile.yml"),
    Scenario("winrs_send", "test_winrs_send.yml"),
    Scenario("winrs_no_cmd_shell", "test_winrs_no_cmd_shell.yml"),
    # Copy and fetch: the recorded client ran pypsrp's scripts and psremote runs its own, so the
    # server leaves script text out of the comparison. psremote ends a copy's input in a Send of
    # its own and releases each pipeline with Signal Terminate; the recorded client did neither.
    Scenario(
        "client_copy_file", "test_client_copy_file.yml", COPY + ["Send shell2/cmd1", "Signal shell2/cmd1"],
        {"PIPELINE_INPUT": 4}, FILES,
    ),  # fmt: skip
    Scenario("client_copy_file_empty", "test_client_copy_file_empty.yml", COPY, server_args=FILES),
    # Six whole chunks of 85404 bytes, a short one, the hash.
    Scenario(
        "client_copy_file_really_large", "test_client_copy_file_really_large.yml", COPY, {"PIPELINE_INPUT": 8}, FILES
    ),
    # pypsrp's test had mocked a wrong hash, which Windows refused; psremote sends the true one.
    Scenario(
        "client_copy_file_failure", "test_client_copy_file_failure.yml", COPY, server_args=FILES,
        mismatches=[("PIPELINE_INPUT", b64(AZ_SHA1), " != recorded ", b64(MOCKED_SHA1))],
    ),  # fmt: skip
    Scenario("client_fetch_file", "test_client_fetch_file.yml", [SIGNAL], server_args=FILES),
    Scenario("client_fetch_file_expand_vars", "test_client_fetch_file_expand_vars.yml", [SIGNAL], server_args=FILES),
    Scenario("client_fetch_file_fail_dir", "test_client_fetch_file_fail_dir.yml", [SIGNAL], server_args=FILES),
    Scenario("client_fetch_file_fail_missing", "test_client_fetch_file_fail_missing.yml", [SIGNAL], server_args=FILES),
    Scenario("wsman_update_envelope_size_150", "test_wsman_update_envelope_size_150.yml"),
    Scenario("wsman_server_config_500", "test_wsman_update_envelope_size_500.yml"),
]

NO_KEY = (
    "the recorded session key was encrypted for pypsrp's test RSA key, which only the Rust API can set "
    "(PoolConfig.key_pair; core/tests/replay.rs replays it)"
)
#: Recordings not replayed through C, with the reason (each is replayed by core/tests/replay.rs or
#: bindings-python/tests/test_replay.py). Checked to cover every recording without a scenario.
NOT_REPLAYED: Dict[str, str] = {
    "test_winrs_bad_cmd_id.yml": "attaching to a cmd command by id is not in the C API",
    "test_winrs_fail_poll_process.yml": "a cmd shell's own streams (a shell-level Receive) are not in the C API",
    **{
        f"test_client_execute_ps{x}.yml": "pypsrp's execute_ps is a two-command pipeline (Invoke-Expression | "
        "Out-String -Stream); the C API starts a script or one command"
        for x in ("", "_failure")
    },
    "test_psrp_with_jea_configuration.yml": "its second pipeline has two statements; the C API starts a script or one command",
    "test_psrp_stream_no_output_invocation.yml": "the C API's pipelines always ask for invocation info "
    "(test_psrp_stream_output_invocation is replayed); there is no way to turn it off",
    "test_psrp_no_profile.yml": "psr_pool_open has no no-profile option",
    "test_psrp_with_history.yml": "add_to_history is not in the C API",
    "test_psrp_reset_runspace_state.yml": "add_to_history and reset_runspace_state are not in the C API",
    "test_psrp_set_runspaces.yml": "min/max runspaces and available_runspaces are not in the C API",
    **{
        f"test_psrp_run_protocol_version_{v}.yml": "merging the error stream into output (MergeError) is not in the C API"
        for v in ("2.2", "2.3")
    },
    "test_psrp_multiple_commands.yml": NO_KEY + "; and its pipeline has ten statements",
    "test_psrp_pshost_ui_mocked_methods.yml": NO_KEY + "; and psr_host answers ReadLine and PromptForCredential only "
    "(not ReadLineAsSecureString, Prompt, PromptForChoice)",
}


def coverage_check() -> Tuple[bool, str]:
    """Every recording is replayed here or listed in NOT_REPLAYED, not both."""
    on_disk = sorted(p.name for p in TRANSCRIPTS.glob("*.yml") if p.name != "_template.yml")
    replayed = {s.transcript for s in SCENARIOS}
    both = sorted(replayed & set(NOT_REPLAYED))
    listed = sorted(replayed | set(NOT_REPLAYED))
    missing = sorted(set(on_disk) - set(listed))
    extra = sorted(set(listed) - set(on_disk))
    ok = not both and not missing and not extra
    return ok, f"every recording replayed or explained (neither: {missing}; both: {both}; not on disk: {extra})"


class Replay:
    def __init__(self, scenario: Scenario, log: Path) -> None:
        args = [
            sys.executable, "-m", "psremote_testserver.replay", "--port", "0",
            "--transcript", str(TRANSCRIPTS / scenario.transcript),
            "--user", USER, "--password", PASSWORD, *scenario.server_args,
        ]  # fmt: skip
        self.log = log
        with open(log, "wb") as stderr:
            self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, cwd=ROOT)
        try:
            self.url = read_url_line(self.process, 30.0)
        except (TimeoutError, RuntimeError):
            self.stop()
            raise RuntimeError(f"the replay server did not start: {log.read_text()}") from None
        self.base = self.url.rsplit("/", 1)[0]

    def state(self) -> Dict[str, Any]:
        with urllib.request.urlopen(self.base + "/_control/state", timeout=10) as response:
            return json.load(response)  # type: ignore[no-any-return]

    def settled(self) -> Dict[str, Any]:
        """The state once nothing more arrives: unchanged for half a second (10 s at most)."""
        deadline = time.monotonic() + 10.0
        last = self.state()
        while True:
            time.sleep(0.5)
            now = self.state()
            if (now["trace"] == last["trace"] and now["unexpected"] == last["unexpected"]) or time.monotonic() > deadline:
                return now
            last = now

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def pairs(state: Dict[str, Any], key: str) -> List[str]:
    return [f"{p[0]} {p[1]}" for p in state.get(key) or []]


def clip(report: str, limit: int = 400) -> str:
    """A difference report short enough to print (a copy's chunk is 100 KiB of base64)."""
    return report if len(report) <= limit else f"{report[:limit]}... ({len(report)} characters)"


def expected_mismatches(expected: Sequence[Sequence[str]], got: List[str]) -> bool:
    """Each reported difference is the expected one: its pieces, in order."""

    def holds(report: str, pieces: Sequence[str]) -> bool:
        at = 0
        for piece in pieces:
            at = report.find(piece, at)
            if at < 0:
                return False
            at += len(piece)
        return True

    return len(got) == len(expected) and all(holds(g, e) for g, e in zip(got, expected))


def server_checks(scenario: Scenario, state: Dict[str, Any]) -> List[Tuple[bool, str]]:
    """assert_exact, and the counts of the client's PSRP messages."""
    checks = [
        (
            state["unexpected"] == list(scenario.unexpected),
            f"unexpected requests == {list(scenario.unexpected)} (got {state['unexpected']})",
        ),
        (pairs(state, "unused") == [], f"every recorded exchange made (never made: {pairs(state, 'unused')})"),
        (pairs(state, "incomplete") == [], f"every recorded message sent (missing in: {pairs(state, 'incomplete')})"),
        (
            expected_mismatches(scenario.mismatches, state["mismatches"]),
            f"nothing differs from the recording but {[list(m) for m in scenario.mismatches]} "
            f"(got {[clip(m) for m in state['mismatches']]})",
        ),
        (
            pairs(state, "synthesized") == list(scenario.synthesized),
            f"synthesized == {list(scenario.synthesized)} (got {pairs(state, 'synthesized')})",
        ),
    ]
    for kind, count in scenario.messages.items():
        sent = sum(1 for m in state.get("client_messages") or [] if m.get("type") == kind)
        checks.append((sent == count, f"{count} {kind} sent (got {sent})"))
    return checks


SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$")


def run_one(binary: Path, scenario: Scenario, workdir: Path, verbose: bool) -> Tuple[int, int]:
    tag = f"{binary.name}:{scenario.name}"
    print(f"=== {tag} ({scenario.transcript})", flush=True)
    replay = Replay(scenario, workdir / f"{binary.name}-{scenario.name}.server.log")
    passed = failed = 0
    try:
        try:
            proc = subprocess.run(
                [str(binary), scenario.name, replay.url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=LIMIT, cwd=ROOT
            )
            out = proc.stdout.decode("utf-8", "replace")
            rc = proc.returncode
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode("utf-8", "replace") + f"\n(killed after {LIMIT:.0f} s)\n"
            rc = -1
        summary = None
        for line in out.splitlines():
            m = SUMMARY.match(line)
            if m:
                summary = (int(m.group(1)), int(m.group(2)))
            elif verbose or line.startswith("  FAIL") or line.startswith("       "):
                print(line)
        if summary is None:
            print(out[-3000:])
            failed += 1
        else:
            passed += summary[0]
            failed += summary[1]
            if rc != 0 and summary[1] == 0:
                print(f"  FAIL [{tag}] exit status {rc} without a failed check")
                failed += 1
        state = replay.settled()
        brief = {k: v for k, v in state.items() if k not in ("client_messages", "trace")}
        brief["mismatches"] = [clip(m) for m in state["mismatches"]]
        for ok, what in server_checks(scenario, state):
            if ok:
                passed += 1
                if verbose:
                    print(f"  ok   [{tag}] server: {what}")
            else:
                failed += 1
                print(f"  FAIL [{tag}] server: {what}")
        if failed and not verbose:
            print(f"       server state: {json.dumps(brief)}")
    finally:
        replay.stop()
    if failed:
        print(f"       replay server log: {replay.log}")
    print(f"{tag}: {passed} passed, {failed} failed", flush=True)
    return passed, failed


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binaries", nargs="+", type=Path)
    parser.add_argument("--only", action="append", default=[], help="a scenario name (repeatable)")
    parser.add_argument("--workdir", type=Path, help="where the replay servers' logs go (default: a temporary folder)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    unknown = set(args.only) - {s.name for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    total_pass = total_fail = 0
    ok, what = coverage_check()
    if ok:
        total_pass += 1
    else:
        total_fail += 1
        print(f"  FAIL [coverage] {what}")
    with tempfile.TemporaryDirectory(prefix="psremote-c-replay-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for binary in (b.resolve() for b in args.binaries):
            # The binary and this table know the same scenarios.
            listed = subprocess.run([str(binary), "--list"], stdout=subprocess.PIPE, check=False).stdout.decode().split()
            if listed != [s.name for s in SCENARIOS]:
                print(f"  FAIL [{binary.name}] --list gives {listed}, the driver has {[s.name for s in SCENARIOS]}")
                total_fail += 1
            else:
                total_pass += 1
            for scenario in chosen:
                p, f = run_one(binary, scenario, workdir, args.verbose)
                total_pass += p
                total_fail += f
    print(f"{total_pass} passed, {total_fail} failed")
    return 0 if total_fail == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
