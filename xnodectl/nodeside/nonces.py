"""Single-use sign-in nonces held by a node service, bounded per client and in total.

Nothing is evicted before it expires: a flood, from one client or many, is answered with refusals
(429), so a nonce the owner already holds stays usable until its owner signs with it.
"""

from __future__ import annotations

import ipaddress
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

NONCE_BYTES = 16  # 128 bits
TTL = 300
CAPACITY = 4096  # about 0.5 MB at most
PER_CLIENT = 16  # pending nonces one client (one IPv4 address, one IPv6 /64) may hold


def client_key(address: str) -> str:
    """The unit a limit applies to: an IPv4 address, or the /64 an IPv6 host usually owns."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class NonceLimit(Exception):
    """No nonce now; `retry_after` seconds until one of the blocking nonces expires."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class _Entry:
    client: str
    expires: float


class NonceStore:
    def __init__(
        self,
        ttl: float = TTL,
        capacity: int = CAPACITY,
        per_client: int = PER_CLIENT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._per_client = per_client
        self._clock = clock
        self._issued: dict[str, _Entry] = {}  # insertion order = expiry order (fixed ttl)
        self._by_client: Counter[str] = Counter()
        self._lock = threading.Lock()

    def issue(self, client: str = "") -> str:
        """A fresh nonce for `client` (an IP address), or NonceLimit."""
        key = client_key(client)
        with self._lock:
            now = self._clock()
            self._expire(now)
            if self._by_client[key] >= self._per_client:
                oldest = next(e.expires for e in self._issued.values() if e.client == key)
                raise NonceLimit(
                    f"too many pending nonces for {key} (limit {self._per_client})",
                    math.ceil(oldest - now),
                )
            if len(self._issued) >= self._capacity:
                oldest = next(iter(self._issued.values())).expires
                raise NonceLimit("too many pending nonces on this node", math.ceil(oldest - now))
            nonce = secrets.token_hex(NONCE_BYTES)
            self._issued[nonce] = _Entry(key, now + self._ttl)
            self._by_client[key] += 1
        return nonce

    def problem(self, nonce: str) -> str | None:
        """Why `nonce` cannot be used now, or None if it can."""
        with self._lock:
            self._expire(self._clock())
            if nonce not in self._issued:
                return "nonce unknown, already used or expired (get a new one)"
        return None

    def consume(self, nonce: str) -> bool:
        """Atomically use the nonce once; False if another request used it first."""
        with self._lock:
            self._expire(self._clock())
            entry = self._issued.pop(nonce, None)
            if entry is None:
                return False
            self._drop_client(entry.client)
            return True

    def pending(self) -> int:
        with self._lock:
            return len(self._issued)

    def _drop_client(self, key: str) -> None:
        self._by_client[key] -= 1
        if self._by_client[key] <= 0:
            del self._by_client[key]

    def _expire(self, now: float) -> None:
        while self._issued:
            nonce, entry = next(iter(self._issued.items()))
            if entry.expires > now:
                break
            del self._issued[nonce]
            self._drop_client(entry.client)
