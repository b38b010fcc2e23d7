"""Who may talk to the studio: a token in the printed URL, a session cookie, the Host header (DNS
rebinding), and a CSRF token on every state-changing request.

The token works like Jupyter's: `xnodectl studio` prints http://127.0.0.1:PORT/?token=T; the first
request carrying it gets an HttpOnly, SameSite=Strict session cookie and is redirected to the
same URL without the token (so it leaves the address bar and the history). The cookie and the
CSRF token are HMACs of the token, so nothing else needs storing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

from xnodectl.errors import UsageError

COOKIE = "xnodectl_studio"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


class Forbidden(UsageError):
    """The request lacks the session, the CSRF token or a Host this studio answers to."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Reachable without a session when the studio listens beyond loopback (wallet sign-in).
SIGN_IN_PATHS = frozenset({"/auth/login", "/auth/nonce"})


@dataclass(frozen=True)
class Keys:
    token: str
    hosts: frozenset[str]  # Host header values this studio answers to
    # Beyond loopback: the workspace owner's address (lowercase); sessions come only from a
    # wallet sign-in by it, never from the token.
    owner: str | None = None

    @classmethod
    def new(
        cls,
        host: str,
        port: int,
        token: str | None = None,
        owner: str | None = None,
        domains: tuple[str, ...] = (),
    ) -> Keys:
        names = {host, "127.0.0.1", "localhost"} if is_loopback(host) else {host}
        names = {n for n in names if n not in ("0.0.0.0", "::")}  # not a name a browser uses
        shown = {f"[{n}]" if ":" in n else n for n in names}
        hosts = {f"{n}:{port}" for n in shown} | {d if ":" in d else f"{d}:{port}" for d in domains}
        return cls(token or secrets.token_urlsafe(32), frozenset(hosts), owner)

    def _mac(self, purpose: str) -> str:
        return hmac.new(self.token.encode(), purpose.encode(), hashlib.sha256).hexdigest()

    @property
    def session(self) -> str:
        return self._mac("session")

    @property
    def csrf(self) -> str:
        return self._mac("csrf")

    def valid_session(self, cookie: str | None) -> bool:
        return cookie is not None and hmac.compare_digest(cookie, self.session)

    def valid_csrf(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value, self.csrf)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def _cookie(scope: Scope) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed cookie header is no session, not a crash
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


Headers = list[tuple[bytes, bytes]]


async def _respond(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send, status: int, error: Forbidden) -> None:
    import json

    body = json.dumps({"error": error.one_line()}).encode()
    kind = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    await _respond(send, status, body, kind)


class Guard:
    """ASGI middleware: Host check, token -> cookie exchange, session check, CSRF header/field."""

    def __init__(self, app: Asgi, keys: Keys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host") or ""
        if host not in self.keys.hosts:
            await _refuse(send, 421, Forbidden(
                f"this studio does not answer to host '{host[:80]}'",
                hint="open the URL printed by xnodectl studio",
            ))  # fmt: skip
            return
        if self.keys.owner is not None and _public(scope):
            await self.app(scope, receive, send)  # the sign-in itself; the route checks Origin
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        token = query.pop("token", None)
        if token is not None and scope["method"] in SAFE_METHODS and self.keys.owner is None:
            if not hmac.compare_digest(token, self.keys.token):
                wrong = Forbidden("wrong studio token", hint="use the URL xnodectl studio printed")
                await _refuse(send, 403, wrong)
                return
            await self._enter(send, scope["path"], query)
            return
        if not self.keys.valid_session(_cookie(scope)):
            if self.keys.owner is not None and scope["method"] in SAFE_METHODS:
                await _respond(send, 303, b"", [(b"location", b"/auth/login")])
                return
            await _refuse(send, 403, Forbidden(
                "no studio session", hint="open the URL with ?token= that xnodectl studio printed"
            ))  # fmt: skip
            return
        if scope["method"] not in SAFE_METHODS and not await self._csrf_ok(scope, receive):
            await _refuse(send, 403, Forbidden(
                "missing or wrong CSRF token", hint="reload the page and submit it again"
            ))  # fmt: skip
            return
        await self.app(scope, _replay(scope, receive), send)

    async def _enter(self, send: Send, path: str, query: dict[str, str]) -> None:
        location = path + (f"?{urlencode(query)}" if query else "")
        cookie = f"{COOKIE}={self.keys.session}; HttpOnly; SameSite=Strict; Path=/"
        await _respond(send, 303, b"", [
            (b"location", location.encode()),
            (b"set-cookie", cookie.encode()),
            (b"cache-control", b"no-store"),
            (b"referrer-policy", b"no-referrer"),
        ])  # fmt: skip

    async def _csrf_ok(self, scope: Scope, receive: Receive) -> bool:
        """The header (fetch) or the form field (plain HTML forms). The body is read once here
        and replayed to the route."""
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        scope["studio.body"] = body
        if self.keys.valid_csrf(_header(scope, CSRF_HEADER.encode())):
            return True
        kind = _header(scope, b"content-type") or ""
        if kind.startswith("application/x-www-form-urlencoded"):
            fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            return self.keys.valid_csrf(fields.get(CSRF_FIELD))
        return False


def _public(scope: Scope) -> bool:
    path: str = scope["path"]
    if path.startswith("/static/"):
        return scope["method"] in SAFE_METHODS
    return path in SIGN_IN_PATHS and (path == "/auth/login" or scope["method"] in SAFE_METHODS)


def _replay(scope: Scope, receive: Receive) -> Receive:
    """The route reads the body the CSRF check already read (GET bodies pass through)."""
    body: bytes | None = scope.get("studio.body")
    if body is None:
        return receive
    sent = False

    async def replay() -> MutableMapping[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the client's disconnect, as the server says

    return replay
