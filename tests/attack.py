"""Attackers for tests/test_attacks_*.py: raw requests, slow (slowloris) clients and floods.

Everything targets 127.0.0.1 (or another loopback address, to play a second client: Linux
routes all of 127.0.0.0/8 to the loopback interface) and stops by itself: slow clients after
`limit` seconds at most, floods after a fixed number of requests.
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/") or len(lines[0].split()) < 2:
        return Answer(0, {}, raw)  # no status line: nothing, or an HTTP/0.9-style answer
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, body)


def send_raw(
    port: int,
    data: bytes,
    *,
    source: str = "127.0.0.1",
    address: str = "127.0.0.1",
    timeout: float = 10,
) -> Answer:
    """Send `data` as is, read until the server closes (or answers with a Content-Length)."""
    with socket.create_connection((address, port), timeout, (source, 0)) as conn:
        conn.sendall(data)
        raw = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            raw += chunk
            answer = parse(raw)
            length = answer.headers.get("content-length")
            if length is not None and len(answer.body) >= int(length):
                break
    return parse(raw)


def request(
    port: int,
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    source: str = "127.0.0.1",
) -> Answer:
    data = json.dumps(body).encode() if body is not None else b""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    return send_raw(port, ("\r\n".join(lines) + "\r\n\r\n").encode() + data, source=source)


@dataclass
class SlowClients:
    """`count` connections that send a request's headers one byte per `interval` and never end
    them; records how long the server kept each one open. Gives up after `limit` seconds."""

    port: int
    sources: list[str]
    interval: float = 1.0
    limit: float = 20.0
    held: list[float] = field(default_factory=list)  # seconds until the server closed each one
    refused_at_once: int = 0  # closed (or answered) within the first interval
    still_open: int = 0  # open when `limit` was reached
    opened_at: float = 0.0  # time.monotonic() when the first connection was opened
    _thread: threading.Thread | None = None

    def start(self) -> SlowClients:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def wait(self) -> SlowClients:
        assert self._thread is not None
        self._thread.join(self.limit + 10)
        return self

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        started = self.opened_at = time.monotonic()
        opened: dict[socket.socket, float] = {}
        for source in self.sources:
            conn = socket.create_connection(("127.0.0.1", self.port), 5, (source, 0))
            conn.sendall(b"GET /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            conn.setblocking(False)
            selector.register(conn, selectors.EVENT_READ)
            opened[conn] = time.monotonic()
        next_byte = time.monotonic() + self.interval
        while opened and time.monotonic() - started < self.limit:
            for key, _ in selector.select(timeout=max(0.0, next_byte - time.monotonic())):
                self._closed(key.fileobj, opened, selector)  # type: ignore[arg-type]
            if time.monotonic() >= next_byte:
                next_byte += self.interval
                for conn in list(opened):
                    try:
                        conn.send(b"a")
                    except OSError:
                        self._closed(conn, opened, selector)
        self.still_open = len(opened)
        for conn in opened:
            conn.close()

    def _closed(
        self, conn: socket.socket, opened: dict[socket.socket, float], sel: selectors.BaseSelector
    ) -> None:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data and not data.startswith(b"HTTP/"):
            return
        seconds = time.monotonic() - opened.pop(conn)
        if seconds < self.interval:
            self.refused_at_once += 1
        else:
            self.held.append(seconds)
        sel.unregister(conn)
        conn.close()
