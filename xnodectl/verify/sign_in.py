"""SIWE (EIP-4361) sign-in messages: built (operator, and the gate for a browser wallet) and
verified strictly and offline (the node).

`siwe` parses and serializes the message; eth-account recovers the EIP-191 signer. siwe's own
`verify` is not used: it builds a web3 provider and does not check URI, chain id, issued-at,
scheme or the presence of an expiration, all of which an Xnode requires.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from xnodectl.verify.eip191 import recover_address

MAX_MESSAGE = 4096

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
    """What a node accepts. `uri_for(domain)` is the one URI a message for `domain` may carry;
    `scheme` is the scheme the request really arrived over (a message naming one must match)."""

    domains: frozenset[str]
    uri_for: Callable[[str], str]
    chain_id: int
    allowed: frozenset[str]  # lowercase 0x addresses
    scheme: str = "http"
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


def timestamp(value: str) -> float:
    """Unix seconds of an RFC 3339 time as a SIWE message carries it (siwe keeps it a string)."""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise Rejected(f"malformed message: bad time {str(value)[:40]!r}") from None
    if parsed.tzinfo is None:
        raise Rejected(f"malformed message: time {str(value)[:40]!r} has no time zone")
    return parsed.timestamp()


def _check_time(message: Any, policy: Policy, now: float) -> tuple[float, float]:
    issued = timestamp(message.issued_at)
    if issued > now + policy.skew:
        raise Rejected(f"issued-at {message.issued_at} is in the future")
    if message.expiration_time is None:
        raise Rejected("the message has no expiration time")
    expires = timestamp(message.expiration_time)
    if expires <= now:
        raise Rejected(f"the message expired at {message.expiration_time}")
    if expires - issued > policy.max_lifetime:
        raise Rejected(f"the message is valid for more than {policy.max_lifetime} seconds")
    if message.not_before is not None and timestamp(message.not_before) > now + policy.skew:
        raise Rejected(f"the message is not valid before {message.not_before}")
    return issued, expires


def _check_target(message: Any, policy: Policy) -> None:
    if message.domain not in policy.domains:
        raise Rejected(f"domain {message.domain!r} is not this node's")
    if message.uri != policy.uri_for(message.domain):
        raise Rejected(f"URI {message.uri!r} is not {policy.uri_for(message.domain)!r}")
    if int(message.chain_id) != policy.chain_id:
        raise Rejected(f"chain id {message.chain_id} is not {policy.chain_id}")
    # EIP-4361: a message that names a scheme is only valid for a request over that scheme.
    if message.scheme is not None and message.scheme != policy.scheme:
        raise Rejected(f"scheme {message.scheme!r} is not this connection's ({policy.scheme})")


def verify(text: str, signature: str, policy: Policy, *, now: float | None = None) -> SignIn:
    """Check everything but the nonce (the caller's store owns it). Raises Rejected."""
    now = time.time() if now is None else now
    message = _parse(text)
    try:
        signer = recover_address(text, signature)
    except ValueError as exc:
        raise Rejected(f"bad signature: {exc}") from None
    if signer.lower() != str(message.address).lower():
        raise Rejected("the signature does not match the message (tampered, or another key)")
    if signer.lower() not in policy.allowed:
        raise Rejected(f"address {signer} is not allowed on this node")
    _check_target(message, policy)
    issued, expires = _check_time(message, policy, now)
    return SignIn(
        address=signer,
        domain=str(message.domain),
        nonce=str(message.nonce),
        statement=str(message.statement or ""),
        resources=tuple(message.resources or ()),
        issued_at=issued,
        expires_at=expires,
    )
