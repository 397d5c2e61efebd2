"""HTTP/1.1 carrier: keep-alive connections, HTTPS, authentication, sealing, control URL.

One handler object lives as long as its TCP connection, so the connection's
security context lives on it (``self.auth``). A long-polling Receive blocks
only its own connection's thread, and so does a TLS handshake.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import socketserver
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional, Tuple
from urllib.parse import urlsplit

from . import encryption, psrp_pool
from .auth import DEFAULT_SCHEMES, TOKEN_SCHEMES, ConnectionAuth
from .dispatch import Dispatcher
from .engines import RequestContext
from .drop import ConnectionDrop
from . import misbehave
from .misbehave import FILLER, HUGE_REPLY_BYTES, Misbehaviour
from .stats import Stats
from .tls import ConnectionTls, ServerTls, TlsSettings
from .users import UserStore

log = logging.getLogger(__name__)

CONTROL_STATE = "/_control/state"


@dataclass
class ServerConfig:
    port: int = 0
    path: str = "/wsman"
    schemes: Tuple[str, ...] = DEFAULT_SCHEMES
    allow_unencrypted: bool = False
    max_envelope_kb: int = 500
    max_timeout_ms: int = 60000
    control: bool = False
    capture_dir: Optional[str] = None
    misbehave: Optional[str] = None
    drop_connection: Optional[str] = None
    # Answer every SOAP request with "Connection: close" and close: each request of a client
    # then needs a connection (and a logon) of its own, as behind some proxies and balancers.
    close_after_reply: bool = False
    tls: Optional[TlsSettings] = None
    cbt: str = "relaxed"

    @property
    def max_envelope_bytes(self) -> int:
        return self.max_envelope_kb * 1024


class Capture:
    """Writes each received request (request line, headers, body) to DIR/NNNNNN.http."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self._directory = directory
        self._lock = threading.Lock()
        self._count = 0

    def write(self, raw: bytes) -> None:
        with self._lock:
            self._count += 1
            number = self._count
        with open(os.path.join(self._directory, f"{number:06d}.http"), "wb") as handle:
            handle.write(raw)


class WinRMServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # Parallel test suites open many connections at once; a short backlog drops SYNs (1 s stalls).
    request_queue_size = 128

    def __init__(self, config: ServerConfig, users: UserStore, dispatcher: Dispatcher) -> None:
        self.config = config
        self.users = users
        self.dispatcher = dispatcher
        self.stats = Stats()
        self.misbehaviour = Misbehaviour(config.misbehave, self.stats)
        self.connection_drop = ConnectionDrop(config.drop_connection)
        self.capture = Capture(config.capture_dir) if config.capture_dir else None
        self.tls = ServerTls(config.tls) if config.tls else None
        super().__init__(("127.0.0.1", config.port), WinRMHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the address up in DNS (getfqdn) for a name nothing here
        # uses; for addresses other than 127.0.0.1 that lookup can take seconds each.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), port

    @classmethod
    def sibling(cls, primary: "WinRMServer", address: str) -> "WinRMServer":
        """Another listening socket for `primary`, on another loopback address and the same port:
        the same users, shells, counters and misbehaviour, so one process serves many distinct
        host addresses (a fleet on the 127.0.0.0/8 range)."""
        server = cls.__new__(cls)
        for name in ("config", "users", "dispatcher", "stats", "misbehaviour", "connection_drop", "capture", "tls"):
            setattr(server, name, getattr(primary, name))
        ThreadingHTTPServer.__init__(server, (address, primary.server_address[1]), WinRMHandler)
        return server

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}{self.config.path}"

    def get_request(self):
        sock, address = super().get_request()
        # Without this, Nagle + delayed ACK stall keep-alive request/response pairs at ~10/s.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            sock = self.tls.wrap(sock)  # the handshake runs on the connection's thread (setup)
        return sock, address

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("connection %s: %s", client_address, error)
        else:
            log.exception("unexpected error on connection %s", client_address)


def serve_siblings(servers: List["WinRMServer"], stop: threading.Event) -> None:
    """Accepts on every sibling socket from one thread (each connection still gets its own
    handler thread) until `stop` is set."""
    with selectors.DefaultSelector() as selector:
        for server in servers:
            selector.register(server.socket, selectors.EVENT_READ, server)
        while not stop.is_set():
            for key, _ in selector.select(timeout=0.2):
                key.data._handle_request_noblock()


class WinRMHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    # Buffer writes so headers and body leave in one send; handle_one_request flushes.
    wbufsize = 1 << 16
    server: WinRMServer

    def setup(self) -> None:
        self.tls: Optional[ConnectionTls] = None
        self._handshake_failed = False
        if self.server.tls is not None:
            try:
                self.tls = self.server.tls.handshake(self.request)
            except (ssl.SSLError, OSError) as exc:
                # An unverifiable client certificate ends up here, as does a client that
                # rejected our certificate or speaks no common version.
                log.info("%s TLS handshake failed: %s", self.client_address[0], exc)
                self.server.stats.bump("tls_handshake_failures")
                self._handshake_failed = True
        super().setup()
        config = self.server.config
        self.auth = ConnectionAuth(self.server.users, config.schemes, config.allow_unencrypted, tls=self.tls, cbt_mode=config.cbt)
        self.server.stats.bump("connections_opened")

    def handle(self) -> None:
        if not self._handshake_failed:
            super().handle()

    def version_string(self) -> str:
        return self.server_version

    def handle_expect_100(self) -> bool:
        proceed = super().handle_expect_100()
        self.wfile.flush()  # writes are buffered; the client is waiting for this line
        return proceed

    def log_request(self, code="-", size="-") -> None:
        pass  # do_POST logs one structured line itself

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing --------------------------------------------------------------------------
    def _respond(self, status: int, headers: List[Tuple[str, str]], body: bytes = b"", close: bool = False) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(body)
        self._status = status
        self._sent = len(body)

    def _stream_filler(self, status: int, headers: List[Tuple[str, str]], mode: str) -> None:
        """An oversized (``huge-reply``) or endless chunked (``endless-body``) body of filler,
        written until it is complete or the client hangs up; the connection then closes. One
        fixed buffer is written over and over: the endpoint holds no more than it."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if mode == "huge-reply":
            self.send_header("Content-Length", str(HUGE_REPLY_BYTES))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self._status = status
        self._sent = 0
        chunk = b"%x\r\n" % len(FILLER) + FILLER + b"\r\n"
        try:
            while mode == "endless-body" or self._sent < HUGE_REPLY_BYTES:
                if mode == "endless-body":
                    self.wfile.write(chunk)
                    self._sent += len(FILLER)
                else:
                    part = FILLER[: HUGE_REPLY_BYTES - self._sent]
                    self.wfile.write(part)
                    self._sent += len(part)
            self.wfile.flush()
        except OSError as exc:  # the client hung up, as a bounded client does
            log.info("%s hung up after %d filler bytes (%s): %s", self.client_address[0], self._sent, mode, exc)

    def _read_body(self) -> Optional[bytes]:
        """The request body, or None after answering an unreadable one (the connection then closes)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # WinRM refuses chunked requests too; demand Content-Length.
            self._respond(411, [], close=True)
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if length < 0:
                raise ValueError(length)
        except ValueError:
            self._respond(400, [], close=True)
            return None
        if length > self.server.config.max_envelope_bytes * 2 + (1 << 20):
            # Far too big to be worth reading (even sealed): refuse without draining.
            self._respond(413, [], close=True)
            return None
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return None
        return body

    def _capture(self, body: bytes) -> None:
        if self.server.capture is None:
            return
        head = self.raw_requestline + "".join(f"{k}: {v}\r\n" for k, v in self.headers.raw_items()).encode("latin-1")
        self.server.capture.write(head + b"\r\n" + body)

    # -- methods ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if self.server.config.control and path == CONTROL_STATE:
            state = {
                **self.server.dispatcher.counts(),
                **self.server.stats.snapshot(),
                "session_keys": list(psrp_pool.SESSION_KEYS),
            }
            self._respond(200, [("Content-Type", "application/json")], json.dumps(state).encode())
        elif path == self.server.config.path:
            self._respond(405, [("Allow", "POST")])
        else:
            self._respond(404, [])

    def do_POST(self) -> None:
        started = time.monotonic()
        self._status, self._sent = 0, 0
        self._note = {"action": "-", "sealed": False}
        body = self._read_body()
        if body is None:
            return
        self._capture(body)
        if urlsplit(self.path).path != self.server.config.path:
            self._respond(404, [])
            return
        self.server.stats.bump("requests")
        try:
            self._serve_wsman(body)
        finally:
            log.info(
                "%s POST %s -> %s action=%s auth=%s sealed=%s in=%d out=%d %.1fms",
                self.client_address[0],
                self.path,
                self._status,
                self._note["action"],
                self.auth.session_scheme or ("basic" if self.headers.get("Authorization", "").lower().startswith("basic") else "-"),
                self._note["sealed"],
                len(body),
                self._sent,
                (time.monotonic() - started) * 1000,
            )

    def _serve_wsman(self, body: bytes) -> None:
        config, stats = self.server.config, self.server.stats
        result = self.auth.process(self.headers.get("Authorization"))
        if result.logon is not None:
            stats.add_logon(result.logon)
        if result.status != "ok":
            if result.status == "denied":
                stats.bump("auth_failures")
            self._respond(401, result.headers)
            return
        final_token = result.headers
        if config.misbehave == "no-final-token":
            final_token = [(k, v) for k, v in final_token if k.lower() != "www-authenticate"]
        if not body:
            # pypsrp and pywinrm authenticate with an empty POST before sealing anything.
            self._respond(200, final_token)
            return

        content_type = self.headers.get("Content-Type", "")
        sealed = encryption.is_encrypted(content_type)
        self._note["sealed"] = sealed
        if sealed:
            if not self.auth.session_established:
                self._respond(400, [], close=True)
                return
            try:
                plaintext = encryption.unseal(body, content_type, self.auth.unwrap, self.auth.seal_protocol)
            except encryption.FramingError as exc:
                log.info("bad encrypted framing: %s", exc)
                self._respond(400, [], close=True)
                return
            except encryption.SealError as exc:
                log.info("bad seal: %s", exc)
                stats.bump("bad_seal")
                self._respond(400, [], close=True)
                return
        else:
            if result.scheme in TOKEN_SCHEMES and not config.allow_unencrypted and self.tls is None:
                # AllowUnencrypted=false: over HTTP an authenticated connection must seal every
                # body. Over HTTPS, TLS is the encryption layer and plaintext is fine.
                stats.bump("plaintext_after_auth_refused")
                self.auth.reset()
                self._respond(401, self.auth.offers())
                return
            plaintext = body
        stats.bump("sealed_requests" if sealed else "plain_requests")

        if len(plaintext) > config.max_envelope_bytes:
            self._respond(413, final_token)
            return

        if self.server.connection_drop.should_drop(plaintext):
            stats.bump("connections_dropped")
            self._note["action"] = "dropped"
            self.close_connection = True
            return
        ctx = RequestContext(
            principal=result.principal or "",
            client_ip=self.client_address[0],
            endpoint_url=self.server.url,
            max_timeout=config.max_timeout_ms / 1000.0,
            max_envelope_size=config.max_envelope_bytes,
            allow_unencrypted=config.allow_unencrypted,
            auth_schemes=tuple(config.schemes),
            cbt=config.cbt,
        )
        try:
            reply = self.server.misbehaviour.stall(plaintext, ctx.max_timeout) or self.server.dispatcher.handle(plaintext, ctx)
        except Exception:  # noqa: BLE001 - a server bug must not take the connection thread down silently
            log.exception("internal error handling request")
            self._respond(500, final_token, close=True)
            return
        if reply.request_action:
            self._note["action"] = reply.request_action.rsplit("/", 1)[-1]
            stats.bump_action(self._note["action"])
        if reply.status == 400:
            self._respond(400, final_token)
            return

        tampered = self.server.misbehaviour.apply(reply.request_action, reply.status, reply.xml, sealed)
        if tampered.forget_shell is not None:
            # The client cannot name the shell for its Delete: the endpoint lets it go.
            self.server.dispatcher.discard_shell(tampered.forget_shell)
        if tampered.oversize is not None:
            out_type = encryption.content_type(self.auth.seal_protocol) if sealed else encryption.SOAP_CONTENT_TYPE
            self._stream_filler(reply.status, final_token + [("Content-Type", out_type)], tampered.oversize)
            return
        if sealed and not tampered.unsealed:
            out_type, out = misbehave.seal(tampered.xml, self.auth.wrap, self.auth.seal_protocol, tampered.seal_fault)
        else:
            out_type, out = encryption.SOAP_CONTENT_TYPE, tampered.xml
        if tampered.framing is not None:
            self._send_framed(tampered.framing, reply.status, final_token + [("Content-Type", out_type)], out)
            return
        self._respond(reply.status, final_token + [("Content-Type", out_type)], out, close=config.close_after_reply)

    def _send_framed(self, mode: str, status: int, headers: List[Tuple[str, str]], body: bytes) -> None:
        """A reply whose HTTP framing is broken (the HTTP framing misbehaviours)."""
        status_line = f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n".encode("latin-1")
        headers = [("Server", self.version_string()), ("Date", self.date_time_string())] + headers
        raw, close = misbehave.framed(mode, status_line, headers, body)
        self.wfile.write(raw)
        self.wfile.flush()
        self._status, self._sent = status, len(raw)
        if close:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_WR)
            except OSError:
                pass
