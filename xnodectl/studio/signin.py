"""Wallet sign-in for a studio listening beyond loopback: SIWE (EIP-4361) through the browser
wallet (EIP-1193), verified by the node gate's own code (`verify.sign_in.verify`, single-use
nonces from `sign_in.NonceStore`) and allowed only for the workspace owner."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xnodectl.studio import access, services, services_wallet
from xnodectl.studio.web import page, studio


async def login_page(request: Request) -> Response:
    return page(request, "login.html", public=True)


async def nonce(request: Request) -> Response:
    st = studio(request)
    assert st.nonces is not None
    host = request.headers.get("host", "")
    address = request.query_params.get("address", "")
    message = services_wallet.sign_in_message(host, address, st.nonces.issue(), str(st.ws.root))
    return JSONResponse({"message": message}, headers={"cache-control": "no-store"})


def _refused(reason: str) -> Response:
    error = access.Forbidden(f"sign-in refused: {reason}", hint="sign in with the owner's wallet")
    return JSONResponse({"error": error.one_line()}, status_code=403)


async def login(request: Request) -> Response:
    st = studio(request)
    keys = st.keys
    if keys.owner is None or st.nonces is None:
        return _refused("this studio listens on loopback only; use its printed URL")
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc not in keys.hosts:
        return _refused(f"origin {origin[:80]!r} is not this studio")
    try:
        data = json.loads(await request.body())
        message, signature = str(data["message"]), str(data["signature"])
    except (ValueError, KeyError, TypeError):
        return JSONResponse(
            {"error": "error: the sign-in needs JSON {message, signature} (hint: reload)"},
            status_code=400,
        )
    try:
        signed = services_wallet.verify_sign_in(message, signature, keys.hosts, keys.owner)
    except services.SignInRejected as exc:
        return _refused(exc.reason)
    if not st.nonces.consume(signed.nonce):
        return _refused("nonce unknown, already used or expired (get a new one)")
    response = JSONResponse({"address": signed.address})
    cookie = f"{access.COOKIE}={keys.session}; HttpOnly; SameSite=Strict; Path=/"
    response.headers["set-cookie"] = cookie
    return response
