"""Tests of the benchmark's delay proxy (bench/delayproxy.py): what it counts and that it keeps
each direction's bytes in order. Run by ``make bench-smoke``; no timing is asserted."""

from __future__ import annotations

import base64
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from delayproxy import Control, HttpScanner, ntlm_message_type  # noqa: E402

NTLM_1 = b"NTLMSSP\x00" + struct.pack("<I", 1) + b"\x00" * 24
NTLM_3 = b"NTLMSSP\x00" + struct.pack("<I", 3) + b"\x00" * 60


def http_server() -> Tuple[socket.socket, List[bytes]]:
    """A tiny HTTP/1.1 server: 401 to an NTLM type-1, a chunked 200 to /chunked, else a 200 that
    echoes the body; keeps connections open. Returns the listening socket and the bodies seen."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: List[bytes] = []

    def serve(conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
                length = int(headers.get(b"content-length", b"0"))
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                seen.append(body)
                auth = headers.get(b"authorization", b"")
                if auth and NTLM_1 in base64.b64decode(auth.split()[1]):
                    conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate AAAA\r\nContent-Length: 0\r\n\r\n")
                elif lines[0].split()[1] == b"/chunked":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener, seen


@pytest.fixture
def proxy() -> Iterator[Tuple[int, Control, List[bytes]]]:
    listener, seen = http_server()
    target = f"127.0.0.1:{listener.getsockname()[1]}"
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("delayproxy.py")), "--target", target, "--rtt-ms", "4", "--log"],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    port, control_port = map(int, process.stdout.readline().split())
    control = Control(control_port)
    try:
        yield port, control, seen
    finally:
        control.close()
        process.terminate()
        process.wait(10)
        process.stdout.close()
        listener.close()


def read_response(sock: socket.socket, buf: bytes = b"") -> Tuple[bytes, bytes]:
    """One response (Content-Length or chunked) and what followed it."""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    if b"chunked" in head:
        while not rest.endswith(b"0\r\n\r\n"):
            rest += sock.recv(65536)
        return head + b"\r\n\r\n" + rest, b""
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += sock.recv(65536)
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


def post(path: str, body: bytes, auth: bytes = b"", soap: bool = False) -> bytes:
    extra = b"Authorization: Negotiate " + base64.b64encode(auth) + b"\r\n" if auth else b""
    if soap:
        extra += b"Content-Type: application/soap+xml;charset=UTF-8\r\n"
    return b"POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s" % (path.encode(), extra, len(body), body)


def test_counts_connections_requests_logons_challenges_and_bytes(proxy: Tuple[int, Control, List[bytes]]) -> None:
    port, control, seen = proxy
    before = control.ask(op="snapshot")
    sent = received = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as first:
        for request in (post("/wsman", b"", NTLM_1), post("/wsman", b"", NTLM_3), post("/wsman", b"x" * 70000)):
            first.sendall(request)
            reply, _ = read_response(first)
            sent, received = sent + len(request), received + len(reply)
        # Two requests in one write (pipelined) are two requests; a chunked reply is framed.
        both = post("/chunked", b"<s:Envelope><a:Action>http://x/y/Receive</a:Action>", soap=True) + post("/wsman", b"z")
        first.sendall(both)
        reply1, rest = read_response(first)
        reply2, _ = read_response(first, rest)
        sent, received = sent + len(both), received + len(reply1) + len(reply2)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as second:
            request = post("/wsman", b"", NTLM_1)
            second.sendall(request)
            reply, _ = read_response(second)
            sent, received = sent + len(request), received + len(reply)
            after = control.ask(op="snapshot")
    delta = {k: after[k] - before[k] for k in ("connections", "requests", "responses", "ntlm_logons", "challenges")}
    assert delta == {"connections": 2, "requests": 6, "responses": 6, "ntlm_logons": 2, "challenges": 2}
    assert (after["bytes_up"] - before["bytes_up"], after["bytes_down"] - before["bytes_down"]) == (sent, received)
    log = [e for e in control.ask(op="log") if "method" in e]
    assert [(e["conn"], e["auth"], e["status"]) for e in log] == [
        (1, "negotiate/ntlm-1", 401),
        (1, "negotiate/ntlm-3", 200),
        (1, "-", 200),
        (1, "-", 200),
        (1, "-", 200),
        (2, "negotiate/ntlm-1", 401),
    ]
    assert log[3]["action"] == "Receive"  # a plaintext SOAP body's action is read
    assert len(seen) == 6


def test_keeps_order_of_many_small_writes(proxy: Tuple[int, Control, List[bytes]]) -> None:
    port, _, _ = proxy
    body = b"".join(b"%06d," % i for i in range(20000))
    request = post("/wsman", body)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for at in range(0, len(request), 1000):  # many chunks in flight at once
            sock.sendall(request[at : at + 1000])
        reply, _ = read_response(sock)
    assert reply.split(b"\r\n\r\n", 1)[1] == body


def test_ntlm_message_type_bare_and_wrapped() -> None:
    assert ntlm_message_type(NTLM_1) == 1
    assert ntlm_message_type(b"\x60\x28\x06\x06+\x06\x01\x05\x05\x02" + NTLM_3) == 3  # inside SPNEGO
    assert ntlm_message_type(b"not ntlm") is None


def test_scanner_finds_heads_across_split_reads() -> None:
    heads: List[str] = []

    def on_head(start: str, headers: dict) -> Tuple[str, int, bool]:
        heads.append(start)
        if "chunked" in headers.get("transfer-encoding", ""):
            return "chunked", 0, False
        return "length", int(headers.get("content-length", "0")), False

    stream = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\n" + b"y" * 26 + b"\r\n0\r\n\r\n"
        + b"HTTP/1.1 500 Error\r\nContent-Length: 4\r\n\r\nbody"
        + b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
    )
    scanner = HttpScanner(on_head)
    for at in range(len(stream)):  # one byte at a time: every boundary split
        scanner.feed(stream[at : at + 1])
    assert heads == ["HTTP/1.1 200 OK", "HTTP/1.1 500 Error", "HTTP/1.1 401 Unauthorized"]
