"""xnode-gate: wallet sign-in (SIWE) in front of app web UIs, checked by nginx `auth_request`.

GET /auth/login (page) · GET /auth/nonce[?address=] · POST /auth/login {message, signature}
POST /auth/logout · GET /auth/check (204 with a valid session, else 401). Sessions live in
memory with an expiry; the cookie is HttpOnly, SameSite=Strict, Secure behind TLS, and bound to
the host the owner signed in to. Listens on loopback only; nginx is the way in.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from xnodectl.nodeside import gate_page
from xnodectl.nodeside.httpbase import BadRequest, JsonHandler, logger, warm_up_siwe
from xnodectl.nodeside.nonces import NonceLimit, NonceStore
from xnodectl.nodeside.server import MAX_CONNECTIONS, BoundedServer
from xnodectl.verify import sign_in

DEFAULT_PORT = 8741
COOKIE = "xnode_session"
OWNER_FILE = Path("/etc/xnode/owner-address")
# nginx sets this to "$server_addr:$server_port": the address the browser reached, unforgeable.
SERVER_HEADER = "X-Xnode-Server"
CSP = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'"


@dataclass(frozen=True)
class GateConfig:
    allowed: frozenset[str]  # lowercase 0x addresses: the owner and the allow-list
    domains: frozenset[str]  # host[:port] names the node is reached by
    chain_id: int = 1
    session_ttl: int = 3600
    secure: Literal["auto", "always", "never"] = "auto"
    node_name: str = "this Xnode"
    nonce_ttl: int = 300
    max_lifetime: int = 600
    skew: int = 60


@dataclass(frozen=True)
class Session:
    address: str
    host: str
    expires_at: float


class Sessions:
    """Server-side sessions: random 256-bit tokens, expiring, revocable."""

    def __init__(self, ttl: int, clock: Callable[[], float] = time.time) -> None:
        self._ttl = ttl
        self._clock = clock
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, address: str, host: str) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            for old in [t for t, s in self._by_token.items() if s.expires_at <= now]:
                del self._by_token[old]
            self._by_token[token] = Session(address, host, now + self._ttl)
        return token

    def get(self, token: str, host: str) -> Session | None:
        with self._lock:
            session = self._by_token.get(token)
            if session is None or session.expires_at <= self._clock():
                self._by_token.pop(token, None)
                return None
        return session if session.host == host else None

    def drop(self, token: str) -> None:
        with self._lock:
            self._by_token.pop(token, None)


class Gate:
    def __init__(self, config: GateConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.nonces = NonceStore(ttl=config.nonce_ttl, clock=clock)
        self.sessions = Sessions(config.session_ttl, clock)

    def policy(self, domains: frozenset[str], scheme: str) -> sign_in.Policy:
        return sign_in.Policy(
            domains=self.config.domains | domains,
            uri_for=lambda d: f"{scheme}://{d}/",
            chain_id=self.config.chain_id,
            allowed=self.config.allowed,
            scheme=scheme,
            max_lifetime=self.config.max_lifetime,
            skew=self.config.skew,
        )

    def new_nonce(self, client: str) -> str:
        try:
            return self.nonces.issue(client)
        except NonceLimit as exc:
            raise BadRequest.from_limit(exc) from None

    def prepare(
        self, address: str, host: str, domains: frozenset[str], scheme: str, client: str = ""
    ) -> str:
        """The EIP-4361 text for a browser wallet to sign (the server does EIP-55 and time)."""
        from eth_utils.address import is_address, to_checksum_address

        if not is_address(address):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "not an Ethereum address")
        if host not in self.config.domains | domains:
            raise BadRequest(HTTPStatus.FORBIDDEN, f"this node is not served as {host!r}")
        return sign_in.build(
            domain=host,
            uri=f"{scheme}://{host}/",
            address=to_checksum_address(address),
            chain_id=self.config.chain_id,
            nonce=self.new_nonce(client),
            statement=f"Sign in to the apps of {self.config.node_name}.",
            now=self.clock(),
        )

    def login(
        self, message: str, signature: str, domains: frozenset[str], scheme: str
    ) -> tuple[str, sign_in.SignIn]:
        try:
            signed = sign_in.verify(
                message, signature, self.policy(domains, scheme), now=self.clock()
            )
        except sign_in.Rejected as exc:
            malformed = exc.reason.startswith("malformed")
            raise BadRequest(
                HTTPStatus.BAD_REQUEST if malformed else HTTPStatus.FORBIDDEN, exc.reason
            ) from None
        if not self.nonces.consume(signed.nonce):
            raise BadRequest(HTTPStatus.FORBIDDEN, "nonce unknown, already used or expired")
        logger.warning("sign-in by %s for %s", signed.address, signed.domain)
        return self.sessions.create(signed.address, signed.domain), signed


class GateHandler(JsonHandler):
    gate: Gate

    def _scheme(self) -> str:
        return "https" if self.headers.get("X-Forwarded-Proto") == "https" else "http"

    def _domains(self) -> frozenset[str]:
        """host:port names of this node as reached by the browser (see SERVER_HEADER)."""
        names: set[str] = set()
        default = 443 if self._scheme() == "https" else 80
        local = self.connection.getsockname()
        candidates = [(str(local[0]), str(local[1]))]
        forwarded = self.headers.get(SERVER_HEADER)
        if forwarded and self.client_address[0] in ("127.0.0.1", "::1"):
            addr, _, port = forwarded.rpartition(":")
            candidates.append((addr, port))
        for addr, port in candidates:
            host = f"[{addr}]" if ":" in addr and not addr.startswith("[") else addr
            names.add(f"{host}:{port}")
            if port == str(default):
                names.add(host)
        return frozenset(names)

    def _token(self) -> str | None:
        try:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            return None
        morsel = cookie.get(COOKIE)
        return morsel.value if morsel is not None and morsel.value else None

    def _cookie(self, token: str, max_age: int) -> str:
        secure = self.gate.config.secure == "always" or (
            self.gate.config.secure == "auto" and self._scheme() == "https"
        )
        parts = [f"{COOKIE}={token}", "Path=/", "HttpOnly", "SameSite=Strict", f"Max-Age={max_age}"]
        return "; ".join([*parts, "Secure"] if secure else parts)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        try:
            match url.path:
                case "/auth/check":
                    self._check()
                case "/auth/session":
                    self._session()
                case "/auth/nonce":
                    self._nonce(parse_qs(url.query).get("address", [""])[0])
                case "/auth/login" | "/auth/" | "/auth":
                    body = gate_page.render(
                        self.gate.config.node_name, max(0, len(self.gate.config.allowed) - 1)
                    )
                    self.send(
                        HTTPStatus.OK,
                        body,
                        "text/html; charset=utf-8",
                        {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY"},
                    )
                case "/auth/signin.js":
                    self.send(
                        HTTPStatus.OK, gate_page.SCRIPT.encode(), "text/javascript; charset=utf-8"
                    )
                case _:
                    self.refuse(HTTPStatus.NOT_FOUND, "not found")
        except BadRequest as exc:
            self.refuse_with(exc)

    def _check(self) -> None:
        token = self._token()
        session = self.gate.sessions.get(token, self.headers.get("Host", "")) if token else None
        if session is None:
            self.send(HTTPStatus.UNAUTHORIZED, b"", "text/plain")
            return
        self.send(HTTPStatus.NO_CONTENT, b"", "text/plain", {"X-Xnode-Address": session.address})

    def _session(self) -> None:
        """For the sign-in page: is this browser signed in already? (A SameSite=Strict cookie is
        not sent on a cross-site navigation, but is on the page's own same-origin request.)"""
        token = self._token()
        session = self.gate.sessions.get(token, self.headers.get("Host", "")) if token else None
        if session is None:
            self.send_json(HTTPStatus.UNAUTHORIZED, {"error": "not signed in"})
            return
        left = int(session.expires_at - self.gate.clock())
        self.send_json(HTTPStatus.OK, {"address": session.address, "expires_in": left})

    def _nonce(self, address: str) -> None:
        if not address:
            nonce = self.gate.new_nonce(self.client())
            self.send_json(HTTPStatus.OK, {"nonce": nonce, "chain_id": self.gate.config.chain_id})
            return
        host = self.headers.get("Host", "")
        message = self.gate.prepare(address, host, self._domains(), self._scheme(), self.client())
        self.send_json(HTTPStatus.OK, {"message": message})

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        try:
            if self.path == "/auth/login":
                self._login()
            elif self.path == "/auth/logout":
                token = self._token()
                if token:
                    self.gate.sessions.drop(token)
                self.send(
                    HTTPStatus.NO_CONTENT, b"", "text/plain", {"Set-Cookie": self._cookie("", 0)}
                )
            else:
                self.refuse(HTTPStatus.NOT_FOUND, "not found")
        except BadRequest as exc:
            self.refuse_with(exc)

    def _login(self) -> None:
        data = self.read_json()
        token, signed = self.gate.login(
            self.field(data, "message"),
            self.field(data, "signature"),
            self._domains(),
            self._scheme(),
        )
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != signed.domain:
            self.gate.sessions.drop(token)
            raise BadRequest(HTTPStatus.FORBIDDEN, f"origin {origin!r} does not match the domain")
        ttl = self.gate.config.session_ttl
        self.send_json(
            HTTPStatus.OK,
            {"address": signed.address, "expires_in": ttl},
            {"Set-Cookie": self._cookie(token, ttl)},
        )


def make_server(gate: Gate, host: str, port: int) -> BoundedServer:
    handler: type[GateHandler] = type("Handler", (GateHandler,), {"gate": gate})
    # Behind nginx every connection comes from 127.0.0.1: the per-client cap is nginx's job
    # (limit_conn per $binary_remote_addr), so here only the total is bounded.
    return BoundedServer((host, port), handler, per_client=MAX_CONNECTIONS)


def _allowed(args: argparse.Namespace) -> frozenset[str]:
    from xnodectl.verify.eip191 import normalize_address

    found = list(args.allow)
    if args.owner:
        found.append(args.owner)
    elif args.owner_file.exists():
        found.append(args.owner_file.read_text())
    try:
        allowed = frozenset(normalize_address(a) for a in found)
    except ValueError as exc:
        raise SystemExit(f"xnode-gate: {exc}") from None
    if not allowed:
        raise SystemExit(f"xnode-gate: no owner ({args.owner_file} missing) and no --allow")
    return allowed


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="xnode-gate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--owner", help="owner address (default: from --owner-file)")
    parser.add_argument("--owner-file", type=Path, default=OWNER_FILE)
    parser.add_argument("--allow", action="append", default=[], help="another allowed address")
    parser.add_argument(
        "--domain",
        action="append",
        default=[],
        help="host[:port] the node's apps are served as (repeatable)",
    )
    parser.add_argument("--chain-id", type=int, default=1)
    parser.add_argument("--session-ttl", type=int, default=3600, help="seconds")
    parser.add_argument("--secure-cookie", choices=["auto", "always", "never"], default="auto")
    parser.add_argument("--node-name", default=socket.gethostname())
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    args = _args(argv)
    config = GateConfig(
        allowed=_allowed(args),
        domains=frozenset(args.domain),
        chain_id=args.chain_id,
        session_ttl=args.session_ttl,
        secure=args.secure_cookie,
        node_name=args.node_name,
    )
    server = make_server(Gate(config), args.listen, args.port)
    warm_up_siwe()
    logger.warning(
        "wallet gate for %d address(es) on %s:%d", len(config.allowed), args.listen, args.port
    )
    with server:
        server.serve_forever()
    return 0


def entry() -> None:
    sys.exit(main())
