"""The fault-injection cases of issue 12 item 5, shared by the Python suite
(bindings-python/tests/test_fault_injection.py), the C suite (bindings-c/tests/faults.py) and the
table of bench/faults.py: for each class of broken or hostile server behaviour, the endpoint's
arguments that inject it, the operation it breaks (``cmd``: run_cmd of ``echo hi``; ``ps``: a
``Write-Output hello`` pipeline on a new pool) and what a client must report: the Python exception
class and the C result code, with a piece of the message, or success where the fault is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

#: Python exception class -> C result code.
C_RESULTS = {
    None: "PSR_RESULT_OK",
    "TransportError": "PSR_RESULT_TRANSPORT",
    "ProtocolError": "PSR_RESULT_PROTOCOL",
    "OperationTimeoutError": "PSR_RESULT_TIMEOUT",
}


@dataclass
class Case:
    fault_class: str
    args: Sequence[str]
    op: str  # "cmd" (run_cmd) or "ps" (run_ps)
    error: Optional[str]  # the exception class, None when the call must succeed
    message: str = ""  # a piece of the message
    timeout: Optional[float] = None
    #: Receives the endpoint may answer at once with the OperationTimeout fault.
    max_injected: Optional[int] = None
    #: The request may be sent again after the fault: success is right too.
    retried: bool = False
    id: str = field(default="")

    def __post_init__(self) -> None:
        self.id = self.id or f"{self.fault_class}:{self.args[-1]}:{self.op}"

    @property
    def c_result(self) -> str:
        return C_RESULTS[self.error]


def mode(name: str) -> Sequence[str]:
    return ("--misbehave", name)


CASES = [
    # HTTP framing.
    Case("http-framing", mode("bad-status-line"), "cmd", "TransportError", "status"),
    Case("http-framing", mode("bad-chunked"), "cmd", "TransportError"),
    Case("http-framing", mode("truncated-body"), "cmd", "TransportError"),
    Case("http-framing", mode("length-mismatch"), "ps", "ProtocolError", "sealed reply"),
    # Oversized and endless bodies.
    Case("oversized-body", mode("huge-reply"), "cmd", "TransportError", "228736-byte limit"),
    Case("oversized-body", mode("endless-body"), "ps", "TransportError", "228736-byte limit"),
    # XML bombs; an unknown huge attribute within the reply limit is ignored.
    Case("xml-bomb", mode("xml-entity-bomb"), "cmd", "ProtocolError", "unknown entity"),
    Case("xml-bomb", mode("xml-deep-nesting"), "ps", "ProtocolError", "nesting too deep"),
    Case("xml-bomb", mode("xml-huge-attribute"), "cmd", None),
    # WS-Man content.
    Case("wsman-content", mode("truncated-xml"), "cmd", "ProtocolError", "malformed xml"),
    Case("wsman-content", mode("bad-base64"), "cmd", "ProtocolError", "base64"),
    Case("wsman-content", mode("wrong-relates-to"), "ps", "ProtocolError", "relates to"),
    # Forged or foreign ids.
    Case("foreign-id", mode("foreign-command-id"), "cmd", "ProtocolError", "another command"),
    Case("foreign-id", mode("foreign-command-id"), "ps", "ProtocolError", "another command"),
    Case("foreign-id", mode("foreign-rpid"), "ps", "ProtocolError", "names runspace pool"),
    Case("foreign-id", mode("foreign-pid"), "ps", "ProtocolError", "names pipeline"),
    # Missing fields; a ReceiveResponse without CommandState is followed by another Receive.
    Case("missing-field", mode("no-shell-id"), "cmd", "ProtocolError", "no ShellId"),
    Case("missing-field", mode("no-shell-id"), "ps", "ProtocolError", "no ShellId"),
    Case("missing-field", mode("no-command-id"), "cmd", "ProtocolError", "no CommandId"),
    Case("missing-field", mode("no-command-id"), "ps", "ProtocolError", "no CommandId"),
    Case("missing-field", mode("no-exit-code"), "cmd", "ProtocolError", "exit code"),
    Case("missing-field", mode("no-command-state"), "cmd", None),
    # Sealing.
    Case("sealing", mode("bad-seal"), "cmd", "ProtocolError", "failed verification"),
    Case("sealing", mode("seal-wrong-sequence"), "ps", "ProtocolError", "sequence number"),
    Case("sealing", mode("seal-truncated"), "cmd", "ProtocolError", "failed verification"),
    Case("sealing", mode("unsealed"), "ps", "ProtocolError", "unsealed"),
    # PSRP fragments and CLIXML.
    Case("psrp-clixml", mode("psrp-wrong-object-id"), "ps", "ProtocolError", "without its start"),
    Case("psrp-clixml", mode("psrp-overlapping-fragments"), "ps", "ProtocolError", "started twice"),
    Case("psrp-clixml", mode("psrp-huge-blob-length"), "ps", "ProtocolError", "announces 4294967295 bytes"),
    Case("psrp-clixml", mode("clixml-unknown-refid"), "ps", "ProtocolError", "undefined object reference"),
    Case("psrp-clixml", mode("clixml-deep-nesting"), "ps", "ProtocolError", "nesting depth"),
    # Immediate OperationTimeout faults for three seconds: the loops back off, then finish.
    Case("immediate-timeout", mode("immediate-timeout"), "cmd", None, max_injected=20),
    Case("immediate-timeout", mode("immediate-timeout"), "ps", None, max_injected=60),
    # Every Receive held for its OperationTimeout and then faulted, for ever: the caller's
    # deadline (``timeout=``) ends the call, and the shell is deleted.
    Case("endless-timeout", mode("stalled-receives"), "cmd", "OperationTimeoutError", "within", timeout=3.0),
    Case("endless-timeout", mode("stalled-receives"), "ps", "OperationTimeoutError", "within", timeout=3.0),
    # A connection dropped mid-request (the first command-level Receive): a TransportError, or
    # the right result where the client sends a Receive that got no reply once more.
    Case("dropped-connection", ("--drop-connection", "receive:1"), "cmd", "TransportError", retried=True),
    Case("dropped-connection", ("--drop-connection", "receive:1"), "ps", "TransportError", retried=True),
]
