"""The samples' proxy: plays every ``*.example.com`` host on the loopback endpoints.

A small HTTP proxy on 127.0.0.1 that the sample processes reach through ``HTTP_PROXY`` and
``HTTPS_PROXY``. It takes ``CONNECT host:port`` (psremote tunnels http and https alike;
requests does for https) and absolute-form requests (``POST http://host:port/wsman``, what
requests sends for http through a proxy) and connects each to the endpoint that serves that
port: 5985 to the http endpoint, 5986 to the https one. After the head it copies bytes both
ways untouched, so NTLM, Kerberos and CredSSP keep their connection and TLS runs end to end
(the endpoint accepts the absolute form of the request line as it is).

Nothing else goes anywhere: another domain or port gets 403, and a host whose first label
starts with ``offline`` (``offline01.example.com``) gets 502, as from a proxy whose upstream
does not answer. Every request is counted by (host, port) and outcome, so the runner can check
that a sample's traffic really went through here.
"""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter
from typing import Dict, List, Optional, Tuple

DOMAIN = "example.com"
MAX_HEAD = 64 * 1024


class SampleProxy:
    """``SampleProxy({5985: ("127.0.0.1", p1), 5986: ("127.0.0.1", p2)}).start()``."""

    def __init__(self, upstreams: Dict[int, Tuple[str, int]]) -> None:
        self.upstreams = dict(upstreams)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        #: ("tunnel" | "forward" | "refused" | "offline", host, port) -> count.
        self.counts: Counter = Counter()
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "SampleProxy":
        self._thread = threading.Thread(target=self._serve, name="docs-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        try:
            self._listener.close()
        except OSError:
            pass

    def snapshot(self) -> Counter:
        with self._lock:
            return Counter(self.counts)

    def _count(self, outcome: str, host: str, port: int) -> None:
        with self._lock:
            self.counts[(outcome, host, port)] += 1

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        upstream: Optional[socket.socket] = None
        try:
            head = _read_head(client)
            if head is None:
                return
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            if len(parts) != 3:
                client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            method, target, _ = parts
            if method == "CONNECT":
                host, port = _split_authority(target)
                kind = "tunnel"
            else:
                match = re.match(r"http://([^/]+)(/.*)?$", target)
                if not match:
                    client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                host, port = _split_authority(match.group(1), default_port=80)
                kind = "forward"
            host = host.lower().rstrip(".")
            if not (host.endswith("." + DOMAIN) and port in self.upstreams):
                self._count("refused", host, port)
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            if host.split(".", 1)[0].startswith("offline"):
                self._count("offline", host, port)
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            upstream = socket.create_connection(self.upstreams[port], timeout=10)
            upstream.settimeout(None)
            self._count(kind, host, port)
            if kind == "tunnel":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(head)
            _splice(client, upstream)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass


def _split_authority(authority: str, default_port: int = 443) -> Tuple[str, int]:
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = authority.rpartition(":") if ":" in authority else (authority, "", "")
    try:
        return host, int(port) if port else default_port
    except ValueError:
        return host, -1


def _read_head(sock: socket.socket) -> Optional[bytes]:
    """The request head up to and including the blank line (byte by byte after the first
    read would be slow; the proxy reads in chunks and keeps what follows the head)."""
    data = b""
    sock.settimeout(30)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > MAX_HEAD:
            return None
    sock.settimeout(None)
    return data


def _splice(a: socket.socket, b: socket.socket) -> None:
    """Copies both ways until either side closes."""

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    other = threading.Thread(target=pump, args=(b, a), daemon=True)
    other.start()
    pump(a, b)
    other.join()


def hosts_seen(counts: Counter, kinds: Tuple[str, ...] = ("tunnel", "forward")) -> List[str]:
    """The distinct host names of the connections ``counts`` holds."""
    return sorted({host for (kind, host, _), n in counts.items() if kind in kinds and n > 0})
