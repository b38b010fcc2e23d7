"""SIWE (EIP-4361) sign-in messages: build them (operator) and verify them strictly (node), offline.

`siwe` parses and serializes the message; eth-account recovers the EIP-191 signer. siwe's own
`verify` is not used: it builds a web3 provider and does not check URI, chain id, issued-at or
the presence of an expiration, all of which an Xnode requires.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from xnodectl.wallet.signer import recover_address

MAX_MESSAGE = 4096
NONCE_BYTES = 16  # 128 bits


# The claim vocabulary, shared by `xnodectl claim` and the node's claim service: the statement
# names the one SSH key being authorized; the resource binds the signature to the node's host key.
CLAIM_PATH = "/claim"
HOST_KEY_URN = "urn:xnode:ssh-host-key:"


def claim_statement(key_fingerprint: str) -> str:
    return f"Authorize SSH key {key_fingerprint} as root on this Xnode."


def host_key_resource(host_key_fingerprint: str) -> str:
    return HOST_KEY_URN + host_key_fingerprint


class Rejected(Exception):
    """A sign-in was refused; `reason` is one line for the client and the journal."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Policy:
    """What a node accepts. `uri_for(domain)` is the one URI a message for `domain` may carry."""

    domains: frozenset[str]
    uri_for: Callable[[str], str]
    chain_id: int
    allowed: frozenset[str]  # lowercase 0x addresses
    max_lifetime: int = 600  # expiration - issued-at, seconds
    skew: int = 60  # tolerated clock difference, seconds


@dataclass(frozen=True)
class SignIn:
    address: str  # checksummed
    domain: str
    nonce: str
    statement: str
    resources: tuple[str, ...]
    issued_at: float
    expires_at: float


def iso(ts: float) -> str:
    return (
        datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def build(
    *,
    domain: str,
    uri: str,
    address: str,
    chain_id: int,
    nonce: str,
    statement: str,
    resources: Sequence[str] = (),
    now: float | None = None,
    lifetime: int = 300,
) -> str:
    """The EIP-4361 text to sign: issued now, expiring `lifetime` seconds later."""
    from siwe import SiweMessage

    issued = time.time() if now is None else now
    message = SiweMessage(
        domain=domain,
        address=address,
        uri=uri,
        version="1",
        chain_id=chain_id,
        issued_at=iso(issued),
        expiration_time=iso(issued + lifetime),
        nonce=nonce,
        statement=statement,
        resources=list(resources) or None,
    )
    return str(message.prepare_message())


def _parse(text: str) -> Any:
    from pydantic import ValidationError
    from siwe import SiweMessage

    if len(text) > MAX_MESSAGE:
        raise Rejected(f"malformed message: longer than {MAX_MESSAGE} characters")
    try:
        message = SiweMessage.from_message(text)
    except (ValueError, ValidationError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Rejected(f"malformed message: not EIP-4361 ({first[:120]})") from None
    # Only the canonical serialization is accepted, so what was checked is exactly what was signed.
    if message.prepare_message() != text:
        raise Rejected("malformed message: not in canonical EIP-4361 form")
    return message


def _timestamp(value: Any) -> float:
    return float(value._datetime.timestamp())


def _check_time(message: Any, policy: Policy, now: float) -> tuple[float, float]:
    issued = _timestamp(message.issued_at)
    if issued > now + policy.skew:
        raise Rejected(f"issued-at {message.issued_at} is in the future")
    if message.expiration_time is None:
        raise Rejected("the message has no expiration time")
    expires = _timestamp(message.expiration_time)
    if expires <= now:
        raise Rejected(f"the message expired at {message.expiration_time}")
    if expires - issued > policy.max_lifetime:
        raise Rejected(f"the message is valid for more than {policy.max_lifetime} seconds")
    if message.not_before is not None and _timestamp(message.not_before) > now + policy.skew:
        raise Rejected(f"the message is not valid before {message.not_before}")
    return issued, expires


def verify(text: str, signature: str, policy: Policy, *, now: float | None = None) -> SignIn:
    """Check everything but the nonce (the caller's store owns it). Raises Rejected."""
    at = time.time() if now is None else now
    message = _parse(text)
    try:
        signer = recover_address(text, signature)
    except ValueError as exc:
        raise Rejected(f"bad signature: {exc}") from None
    if signer.lower() != str(message.address).lower():
        raise Rejected("the signature does not match the message (tampered, or another key)")
    if signer.lower() not in policy.allowed:
        raise Rejected(f"address {signer} is not allowed on this node")
    if message.domain not in policy.domains:
        raise Rejected(f"domain {message.domain!r} is not this node's")
    if message.uri != policy.uri_for(message.domain):
        raise Rejected(f"URI {message.uri!r} is not {policy.uri_for(message.domain)!r}")
    if int(message.chain_id) != policy.chain_id:
        raise Rejected(f"chain id {message.chain_id} is not {policy.chain_id}")
    if message.scheme not in (None, "http", "https"):
        raise Rejected(f"scheme {message.scheme!r} is not allowed")
    issued, expires = _check_time(message, policy, at)
    return SignIn(
        address=signer,
        domain=str(message.domain),
        nonce=str(message.nonce),
        statement=str(message.statement or ""),
        resources=tuple(message.resources or ()),
        issued_at=issued,
        expires_at=expires,
    )


class NonceStore:
    """Server-side single-use nonces: random 128-bit, expiring, bounded in number."""

    def __init__(
        self, ttl: float = 300, capacity: int = 1024, clock: Callable[[], float] = time.time
    ) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._clock = clock
        self._issued: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self) -> str:
        nonce = secrets.token_hex(NONCE_BYTES)
        with self._lock:
            self._expire()
            while len(self._issued) >= self._capacity:
                self._issued.popitem(last=False)  # oldest first: a flood only evicts old nonces
            self._issued[nonce] = self._clock() + self._ttl
        return nonce

    def problem(self, nonce: str) -> str | None:
        """Why `nonce` cannot be used now, or None if it can."""
        with self._lock:
            self._expire()
            if nonce not in self._issued:
                return "nonce unknown, already used or expired (get a new one)"
        return None

    def consume(self, nonce: str) -> bool:
        """Atomically use the nonce once; False if another request used it first."""
        with self._lock:
            self._expire()
            return self._issued.pop(nonce, None) is not None

    def _expire(self) -> None:
        now = self._clock()
        for nonce in [n for n, until in self._issued.items() if until <= now]:
            del self._issued[nonce]
