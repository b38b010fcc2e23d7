"""The node services' HTTP server: bounded threads, a deadline per request, one-line logs.

http.server gives a thread per connection and a per-operation socket timeout only, so a client
trickling one byte at a time holds a thread for ever and a flood of connections makes threads
without end. Here:
- at most `max_connections` handler threads, and `per_client` of them for one address (an IPv6
  /64 counts as one); a connection over either limit gets a 503 at once, without a thread;
- a request (request line, headers, body and the answer) has `request_timeout` seconds in all,
  and so does an idle keep-alive connection: one watchdog thread shuts the socket when it ends;
- a handler's unexpected error is one escaped journal line and a 500, never a traceback.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from xnodectl.nodeside.nonces import client_key

logger = logging.getLogger("xnode")

MAX_CONNECTIONS = 64
PER_CLIENT = 8
REQUEST_TIMEOUT = 10.0
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 5\r\nConnection: close\r\nContent-Length: 35\r\n\r\n"
    b'{"error": "too many connections"}\r\n'
)


def printable(text: str, limit: int = 300) -> str:
    """`text` safe for one journal line: anything not printable (control characters, DEL, C1,
    line separators, bidi overrides) and the backslash itself as \\xNN / \\uNNNN escapes."""
    out = "".join(_escape(c) if not c.isprintable() or c == "\\" else c for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class Watchdog:
    """Shuts a connection's socket when its deadline passes (one thread for all connections)."""

    def __init__(self, tick: float = 0.2) -> None:
        self._tick = tick
        self._deadlines: dict[socket.socket, float] = {}
        self.expired: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def arm(self, sock: socket.socket, seconds: float) -> None:
        with self._lock:
            self._deadlines[sock] = time.monotonic() + seconds
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="xnode-deadline", daemon=True
                )
                self._thread.start()

    def disarm(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(sock, None)
            self.expired.discard(sock)

    def _run(self) -> None:
        while True:
            time.sleep(self._tick)
            now = time.monotonic()
            with self._lock:
                late = [s for s, until in self._deadlines.items() if until <= now]
                for sock in late:
                    del self._deadlines[sock]
                    self.expired.add(sock)
            for sock in late:
                try:
                    # The handler's blocked read returns at once; it can still answer 408.
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass


class BoundedServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        max_connections: int = MAX_CONNECTIONS,
        per_client: int = PER_CLIENT,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.max_connections = max_connections
        self.per_client = per_client
        self.request_timeout = request_timeout
        self.watchdog = Watchdog()
        self._active: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._refused = 0
        self._refused_logged = 0.0
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        key = client_key(str(client_address[0]))
        with self._lock:
            full = sum(self._active.values()) >= self.max_connections
            if not full and self._active[key] < self.per_client:
                self._active[key] += 1
                admitted = True
            else:
                admitted = False
        if not admitted:
            self._busy(request, key)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._release(key)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(client_key(str(client_address[0])))

    def _release(self, key: str) -> None:
        with self._lock:
            self._active[key] -= 1
            if self._active[key] <= 0:
                del self._active[key]

    def active(self) -> int:
        with self._lock:
            return sum(self._active.values())

    def _busy(self, request: socket.socket, key: str) -> None:
        try:
            request.setblocking(False)
            request.send(_BUSY)  # fits the socket buffer of a fresh connection, or is dropped
        except OSError:
            pass
        self.shutdown_request(request)
        with self._lock:
            self._refused += 1
            now = time.monotonic()
            if now - self._refused_logged < 10:
                return
            count, self._refused, self._refused_logged = self._refused, 0, now
        logger.warning("refused %d connection(s) over the limits (last from %s)", count, key)

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002 - API
        """socketserver prints a traceback here; a node service logs one line instead."""
        import sys

        exc = sys.exc_info()[1]
        logger.warning(
            "connection from %s failed: %s", client_address[0], printable(type(exc).__name__)
        )
