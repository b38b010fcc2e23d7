"""A counting TCP relay on loopback: the operator's side of the wire, measured.

Give the engine the relay's port as a node's SSH port (the pinned host key still has to match: the
relay only forwards bytes) and every byte the operator's ssh sends to that node, and receives from
it, is counted here, whatever the engine believes it copied. Nodes reach each other on their real
ports, so peer traffic never passes through a relay.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field


@dataclass
class CountingProxy:
    target_port: int
    host: str = "127.0.0.1"
    sent: int = 0  # operator -> node
    received: int = 0  # node -> operator
    connections: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: socket.socket | None = None
    _open: list[socket.socket] = field(default_factory=list)

    def start(self) -> int:
        """Listen on a free loopback port; returns it."""
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, 0))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, daemon=True).start()
        port: int = server.getsockname()[1]
        return port

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection((self.host, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
                self._open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while chunk := src.recv(262144):
                dst.sendall(chunk)
                with self._lock:
                    if outbound:
                        self.sent += len(chunk)
                    else:
                        self.received += len(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def reset(self) -> None:
        with self._lock:
            self.sent = self.received = self.connections = 0

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        with self._lock:
            for sock in self._open:
                sock.close()
            self._open.clear()
