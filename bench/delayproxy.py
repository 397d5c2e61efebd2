#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that delays every chunk by half a round trip each way and counts what
a WS-Man client does on the wire: TCP connections, HTTP requests, NTLM logons, 401 challenges and
bytes each way.

``python bench/delayproxy.py --target 127.0.0.1:5985 --rtt-ms 20`` prints one line, ``PORT
CONTROL_PORT``, and serves until killed (SIGTERM). bench/sidebyside.py runs one per scenario, in a
process of its own so that its CPU is neither the client's nor the endpoint's.

Delay: a chunk read at time t from one side is written to the other at t + rtt/2. A new connection
costs its TCP handshake, one round trip: the proxy accepts at once on loopback, so the client's
bytes are held as if it could only have sent them a round trip after it connected (a chunk read at
t leaves at max(t, connected + rtt) + rtt/2). Each direction
of each connection is a queue in arrival order, so order is kept per direction, and chunks are not
serialised behind each other (ten chunks read within a millisecond all leave within that
millisecond, rtt/2 later). Bandwidth is not limited; a direction stops reading once 16 MiB wait in
its queue (never reached by the benchmarks).

Counting: requests are the HTTP request heads on the client->server direction (WS-Man over
http:// keeps its HTTP framing plain even when the bodies are sealed); responses are parsed on the
way back (Content-Length or chunked) to pair each with its request. An NTLM logon is an
``Authorization: Negotiate|NTLM`` header carrying an NTLM type-1 (NEGOTIATE) message, bare or inside
SPNEGO. The SOAP Action of a plaintext body is recorded; a sealed body's is not readable here.

Control (second port, one JSON request per line, one JSON answer per line):
``{"op": "snapshot"}`` -> the counters and the request log's length; ``{"op": "log", "from": N}``
-> the request log from entry N; ``{"op": "mark", "label": "..."}`` appends a mark to the log
(workers mark the start of each measured operation when tracing).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import json
import os
import re
import signal
import struct
import sys
import time
from typing import Any, Deque, Dict, List, Optional, Set, Tuple

READ_SIZE = 256 * 1024
MAX_QUEUED = 16 * 1024 * 1024
#: Bytes of a plaintext SOAP body kept to find its Action (the header comes first).
ACTION_SCAN = 8192
ACTION_RE = re.compile(rb"<(?:[\w.-]+:)?Action\b[^>]*>\s*([^<\s]+)\s*<")
SCHEME_RE = re.compile(rb"^(Negotiate|NTLM|Kerberos|Basic|CredSSP)\s*(\S*)", re.I)

COUNTERS = ("connections", "requests", "responses", "bytes_up", "bytes_down", "ntlm_logons", "challenges")


def ntlm_message_type(token: bytes) -> Optional[int]:
    """The NTLM message type (1, 2, 3) inside a bare or SPNEGO-wrapped token, or None."""
    at = token.find(b"NTLMSSP\x00")
    if at < 0 or len(token) < at + 12:
        return None
    return int(struct.unpack_from("<I", token, at + 8)[0])


def parse_head(head: bytes) -> Tuple[str, Dict[str, str]]:
    lines = head.split(b"\r\n")
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return lines[0].decode("latin-1"), headers


class HttpScanner:
    """Finds message heads in one direction of a connection, chunk by chunk, without copying bodies."""

    def __init__(self, on_head: Any, on_body: Any = None) -> None:
        self.on_head = on_head  # (start line, headers) -> "length" | "chunked" | "close" and a length
        self.on_body = on_body  # bytes of the body (when the head asked for it), or None
        self.buf = b""
        self.state = "head"
        self.remaining = 0
        self.want_body = False

    def feed(self, data: bytes) -> None:
        if self.buf:  # a head or chunk-size line split across reads (rare): glue it on
            data, self.buf = self.buf + data, b""
        at, size = 0, len(data)
        while at < size:
            state = self.state
            if state == "head":
                end = data.find(b"\r\n\r\n", at)
                if end < 0:
                    self.buf = data[at:]
                    if len(self.buf) > 64 * 1024:  # not HTTP: stop scanning this direction
                        self.state, self.buf = "opaque", b""
                    return
                framing, length, self.want_body = self.on_head(*parse_head(data[at:end]))
                at = end + 4
                if framing == "chunked":
                    self.state = "chunk-size"
                elif framing == "close":
                    self.state = "opaque"
                elif length:
                    self.state, self.remaining = "body", length
            elif state in ("body", "chunk-data"):
                take = min(self.remaining, size - at)
                if state == "body" and self.want_body and self.on_body:
                    self.on_body(data[at : at + take])
                self.remaining -= take
                at += take
                if self.remaining == 0:
                    self.state = "head" if state == "body" else "chunk-size"
            elif state == "chunk-size":
                end = data.find(b"\r\n", at)
                if end < 0:
                    self.buf = data[at:]
                    return
                try:
                    chunk = int(data[at:end].split(b";")[0].strip(), 16)
                except ValueError:
                    self.state = "opaque"
                    return
                at = end + 2
                self.remaining = chunk + 2  # the data and its CRLF
                self.state = "chunk-data" if chunk else "trailer"
                if not chunk:
                    self.remaining = 0
            elif state == "trailer":
                end = data.find(b"\r\n", at)
                if end < 0:
                    self.buf = data[at:]
                    return
                if end == at:
                    self.state = "head"
                at = end + 2
            else:  # opaque: nothing more to learn on this direction
                return


class Stats:
    def __init__(self, keep_log: bool) -> None:
        self.values: Dict[str, int] = {name: 0 for name in COUNTERS}
        self.keep_log = keep_log
        self.log: List[Dict[str, Any]] = []
        self.started = time.monotonic()

    def now_ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 3)


class Direction:
    """One direction of one proxied connection: a reader task, a delay queue and a writer task."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, count: Any, not_before: float = 0.0
    ) -> None:
        self.reader, self.writer, self.delay, self.count = reader, writer, delay, count
        self.not_before = not_before  # the loop time before which nothing could have been sent
        self.queue: Deque[Tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.ready = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()

    async def pump_in(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.room.wait()
                data = await self.reader.read(READ_SIZE)
                self.count(data)
                self.queue.append((max(loop.time(), self.not_before) + self.delay, data))
                self.queued += len(data)
                if self.queued > MAX_QUEUED:
                    self.room.clear()
                self.ready.set()
                if not data:
                    return
        except (ConnectionError, OSError):
            self.queue.append((max(loop.time(), self.not_before) + self.delay, b""))
            self.ready.set()

    async def pump_out(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while not self.queue:
                    self.ready.clear()
                    await self.ready.wait()
                due, data = self.queue.popleft()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self.queued -= len(data)
                if self.queued <= MAX_QUEUED:
                    self.room.set()
                if not data:
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                    return
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, OSError):
            return


class Connection:
    """One client connection and its upstream twin, with the HTTP accounting of both directions."""

    def __init__(self, number: int, stats: Stats) -> None:
        self.number, self.stats = number, stats
        self.pending: Deque[Dict[str, Any]] = collections.deque()  # requests awaiting their response
        self.body_entry: Optional[Dict[str, Any]] = None
        self.body_seen = b""
        self.up = HttpScanner(self.on_request, self.on_request_body)
        self.down = HttpScanner(self.on_response)

    def on_request(self, start: str, headers: Dict[str, str]) -> Tuple[str, int, bool]:
        stats = self.stats
        stats.values["requests"] += 1
        method, _, rest = start.partition(" ")
        path = rest.rsplit(" ", 1)[0]
        auth = headers.get("authorization", "").encode("latin-1")
        auth_note = "-"
        match = SCHEME_RE.match(auth)
        if match:
            auth_note = match.group(1).decode().lower()
            try:
                token = base64.b64decode(match.group(2), validate=False)
            except (binascii.Error, ValueError):
                token = b""
            kind = ntlm_message_type(token)
            if kind is not None:
                auth_note += f"/ntlm-{kind}"
                if kind == 1:
                    stats.values["ntlm_logons"] += 1
        length = int(headers.get("content-length", "0") or 0)
        content_type = headers.get("content-type", "")
        plain = "soap+xml" in content_type and "multipart" not in content_type
        entry = {
            "t": stats.now_ms(),
            "conn": self.number,
            "method": method,
            "path": path,
            "auth": auth_note,
            "length": length,
            "sealed": "multipart/encrypted" in content_type,
            "action": None,
            "status": None,
        }
        self.pending.append(entry)
        if stats.keep_log:
            stats.log.append(entry)
        self.body_entry = entry if plain and stats.keep_log else None
        self.body_seen = b""
        framing = "chunked" if "chunked" in headers.get("transfer-encoding", "").lower() else "length"
        return framing, length, self.body_entry is not None

    def on_request_body(self, data: bytes) -> None:
        if self.body_entry is None or len(self.body_seen) >= ACTION_SCAN:
            return
        self.body_seen += data[: ACTION_SCAN - len(self.body_seen)]
        match = ACTION_RE.search(self.body_seen)
        if match:
            self.body_entry["action"] = match.group(1).decode("latin-1").rsplit("/", 1)[-1]
            self.body_entry = None

    def on_response(self, start: str, headers: Dict[str, str]) -> Tuple[str, int, bool]:
        stats = self.stats
        stats.values["responses"] += 1
        try:
            status = int(start.split(" ", 2)[1])
        except (IndexError, ValueError):
            status = 0
        if status == 401:
            stats.values["challenges"] += 1
        if self.pending:
            entry = self.pending.popleft()
            entry["status"] = status
            entry["answered"] = stats.now_ms()
            entry["reply_length"] = int(headers.get("content-length", "0") or 0)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return "chunked", 0, False
        if "content-length" in headers:
            return "length", int(headers["content-length"] or 0), False
        return "close", 0, False

    def count_up(self, data: bytes) -> None:
        self.stats.values["bytes_up"] += len(data)
        if data:
            self.up.feed(data)

    def count_down(self, data: bytes) -> None:
        self.stats.values["bytes_down"] += len(data)
        if data:
            self.down.feed(data)


class Proxy:
    def __init__(self, target: Tuple[str, int], rtt_ms: float, keep_log: bool) -> None:
        self.target = target
        self.delay = rtt_ms / 2000.0
        self.stats = Stats(keep_log)
        self.connections = 0
        # asyncio's stream protocol forgets a client's task once that client's side is closed:
        # without a reference here, a connection still draining could be garbage-collected.
        self.active: Set["asyncio.Task[Any]"] = set()

    async def serve_client(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.active.add(task)
            task.add_done_callback(self.active.discard)
        self.connections += 1
        self.stats.values["connections"] += 1
        conn = Connection(self.connections, self.stats)
        if self.stats.keep_log:
            self.stats.log.append({"t": self.stats.now_ms(), "conn": conn.number, "event": "connect"})
        handshake_done = asyncio.get_running_loop().time() + 2 * self.delay
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        up = Direction(client_reader, server_writer, self.delay, conn.count_up, not_before=handshake_done)
        down = Direction(server_reader, client_writer, self.delay, conn.count_down)
        tasks = [asyncio.ensure_future(t) for t in (up.pump_in(), up.pump_out(), down.pump_in(), down.pump_out())]
        try:
            await asyncio.gather(*tasks)
        except Exception:  # noqa: BLE001 - one side failed: close both below
            pass
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_writer, server_writer):
                writer.close()
            if self.stats.keep_log:
                self.stats.log.append({"t": self.stats.now_ms(), "conn": conn.number, "event": "close"})

    async def serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                request = json.loads(line)
                op = request.get("op")
                if op == "snapshot":
                    answer: Any = {**self.stats.values, "log_length": len(self.stats.log)}
                elif op == "log":
                    answer = self.stats.log[int(request.get("from", 0)) :]
                elif op == "mark":
                    if self.stats.keep_log:
                        self.stats.log.append({"t": self.stats.now_ms(), "mark": str(request.get("label", ""))})
                    answer = {"log_length": len(self.stats.log)}
                else:
                    answer = {"error": f"unknown op {op!r}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError):
            return
        finally:
            writer.close()


class Control:
    """A client of the proxy's control port (used by benchmark workers and the driver)."""

    def __init__(self, port: int) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")

    def ask(self, **request: Any) -> Any:
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        line = self.file.readline()
        if not line:
            raise ConnectionError("the delay proxy closed its control connection")
        return json.loads(line)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


async def serve(target: Tuple[str, int], rtt_ms: float, keep_log: bool) -> None:
    proxy = Proxy(target, rtt_ms, keep_log)
    server = await asyncio.start_server(proxy.serve_client, "127.0.0.1", 0, backlog=1024)
    control = await asyncio.start_server(proxy.serve_control, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    control_port = control.sockets[0].getsockname()[1]
    print(f"{port} {control_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Connections still open are simply dropped (asyncio.run would cancel each of them noisily).
    sys.stdout.flush()
    os._exit(0)



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the server")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round trip added (half each way)")
    parser.add_argument("--log", action="store_true", help="keep a per-request log for the control port")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    asyncio.run(serve((host, int(port)), args.rtt_ms, args.log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
