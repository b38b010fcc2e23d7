"""Claim a node from the studio: `xnodectl claim HOST` with the CLI's own prepare/finish steps.

Two ways to sign, one claim:
- the browser wallet (EIP-1193 `personal_sign`): POST /api/claims fetches the node's nonce and
  builds the exact SIWE message server-side; the browser signs that text; POST /api/claims/ID
  posts the signature to the node. The prepared claim never leaves this process: the browser
  gets the text to sign and an id, single-use and expiring with the node's nonce;
- the operator keystore: its password, sent once over the studio's loopback connection, unlocks
  it with the CLI's unlock code for this one claim; it is never stored nor sent back.
Either way the node is then pinned in the inventory by the CLI's service (nodes.pin_claimed).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xnodectl.studio import services, services_wallet
from xnodectl.studio.web import form, page, status_of, studio, wants_json

MAX_PENDING = 32


@dataclass(frozen=True)
class Pending:
    prepared: services_wallet.PreparedClaim
    name: str
    expires: float  # on the store's clock


class PendingClaims:
    """Claims prepared for a browser wallet, waiting for its signature: in this studio's memory
    only (so bound to its session), each taken once, gone when the node's nonce expires."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._items: dict[str, Pending] = {}
        self._lock = threading.Lock()

    def add(self, prepared: services_wallet.PreparedClaim, name: str) -> str:
        with self._lock:
            now = self.clock()
            self._items = {k: v for k, v in self._items.items() if v.expires > now}
            if len(self._items) >= MAX_PENDING:
                raise services.UsageError(
                    f"{MAX_PENDING} claims are already waiting for a signature",
                    hint="finish them or wait until they expire (5 minutes)",
                )
            claim_id = secrets.token_urlsafe(16)
            self._items[claim_id] = Pending(prepared, name, now + prepared.expires_in)
            return claim_id

    def take(self, claim_id: str) -> Pending:
        """The pending claim, removed: a second use of the id finds nothing."""
        with self._lock:
            item = self._items.pop(claim_id, None)
        if item is None:
            raise services.UsageError(
                "no pending claim with that id (already used, never started, or from another "
                "studio)",
                hint="start the claim again",
            )
        if self.clock() >= item.expires:
            raise services.UsageError(
                f"the pending claim expired (the node's nonce lives {item.prepared.expires_in} s)",
                hint="start the claim again and sign within that time",
            )
        return item


def _pending(request: Request) -> PendingClaims:
    claims: PendingClaims = request.app.state.claims
    return claims


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise services.UsageError(f"'{key}' must be text", hint="send the claim form's fields")
    return value.strip()


def _choice(data: dict[str, Any]) -> services_wallet.ClaimChoice:
    port = _text(data, "port") if not isinstance(data.get("port"), int) else str(data["port"])
    port = port or str(services_wallet.ClaimChoice.port)
    if not port.isdigit():
        raise services.UsageError(f"port '{port[:20]}' is not a number", hint="1 to 65535")
    return services_wallet.ClaimChoice(
        host=_text(data, "host"),
        port=int(port),
        name=_text(data, "name") or None,
        expect_host_key=_text(data, "expect_host_key") or None,
    )


async def _json(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise services.UsageError("the claim API takes a JSON object", hint="send {...} as JSON")
    return data


def _done(name: str, host: str, result: services_wallet.ClaimResult) -> dict[str, str]:
    return {
        "node": name,
        "host": host,
        "address": result.address,
        "authorized": result.authorized,
        "host_key_fingerprint": result.host_key_fingerprint,
    }


def _local(request: Request) -> bool:
    """The studio listens on loopback only (no owner sign-in): a password typed into it never
    crosses a network. Beyond loopback the studio speaks plain HTTP, so no password is taken."""
    return studio(request).keys.owner is None


def _key_facts(request: Request) -> dict[str, Any]:
    """What the page says about the key it authorizes and the keystore it can unlock."""
    ws = studio(request).ws
    facts: dict[str, Any] = {"keystore": str(services_wallet.operator_keystore(ws))}
    facts["local"] = _local(request)
    try:
        path, key = services_wallet.operator_key(ws)
        facts["key"] = {"path": str(path), "fingerprint": key.fingerprint, "comment": key.comment}
    except services.XnodeError as exc:
        facts["key_error"] = exc.one_line()
    return facts


async def claim_page(request: Request) -> Response:
    values = {"port": str(services_wallet.ClaimChoice.port)}
    return page(request, "claim.html", values=values, **_key_facts(request))


async def claim_submit(request: Request) -> Response:
    """The form's claim with the operator keystore (or JSON with Accept: application/json)."""
    st = studio(request)
    data = await form(request)
    password = data.pop("password", "")
    values = {k: data.get(k, "") for k in ("host", "port", "name", "expect_host_key")}
    try:
        if not _local(request):
            raise services.UsageError(
                "this studio listens beyond loopback (plain HTTP): it takes no keystore password",
                hint="claim with the browser wallet, or run xnodectl claim on your machine",
            )
        choice = _choice(data)
        req = services_wallet.claim_request(st.ws, choice)
        name, result = await run_in_threadpool(
            services_wallet.claim_with_keystore, st.ws, req, password, choice.name
        )
    except services.XnodeError as exc:
        if wants_json(request):
            raise
        ctx = {"values": values, "error": exc.one_line(), **_key_facts(request)}
        return page(request, "claim.html", status=status_of(exc), **ctx)
    done = _done(name, choice.host, result)
    if wants_json(request):
        return JSONResponse(done, headers={"cache-control": "no-store"})
    return page(request, "claim.html", values=values, done=done, **_key_facts(request))


async def prepare_api(request: Request) -> Response:
    """Step one for a browser wallet: the exact message to sign and the id to finish with."""
    st = studio(request)
    data = await _json(request)
    choice = _choice(data)
    req = services_wallet.claim_request(st.ws, choice)
    address = _text(data, "address")
    prepared, name = await run_in_threadpool(
        services_wallet.prepare_claim, req, address, choice.name
    )
    claim_id = _pending(request).add(prepared, name)
    return JSONResponse(
        {
            "id": claim_id,
            "message": prepared.message,
            "address": prepared.address,
            "node": name,
            "host_key_fingerprint": prepared.host_key.fingerprint,
            "ssh_key_fingerprint": req.ssh_key.fingerprint,
            "expires_in": prepared.expires_in,
        },
        headers={"cache-control": "no-store"},
    )


async def finish_api(request: Request) -> Response:
    """Step two: the wallet's signature of that message goes to the node; then the pin."""
    st = studio(request)
    data = await _json(request)
    signature = _text(data, "signature")
    pending = _pending(request).take(request.path_params["id"])
    result = await run_in_threadpool(
        services_wallet.finish_claim, st.ws, pending.prepared, signature, pending.name
    )
    done = _done(pending.name, pending.prepared.request.host, result)
    return JSONResponse(done, headers={"cache-control": "no-store"})
