"""The small HTTP layer shared by the claim service and the sign-in gate (stdlib http.server,
bounded by nodeside.server): JSON in and out, every malformed request a 4xx and one escaped line."""

from __future__ import annotations

import ipaddress
import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from xnodectl.nodeside.nonces import NonceLimit
from xnodectl.nodeside.server import BoundedServer, printable
from xnodectl.nodeside.server import logger as logger  # the services log through this one

MAX_BODY = 16 * 1024
# Content-Length is 1*DIGIT (RFC 9110 8.6): ASCII digits only. str.isdigit() also accepts
# characters such as '²', which int() then refuses.
_LENGTH = re.compile(r"[0-9]{1,9}")
# nginx sets this to $remote_addr; only believed from a loopback peer (nginx runs on the node).
REAL_IP_HEADER = "X-Real-IP"


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after

    @classmethod
    def from_limit(cls, exc: NonceLimit) -> BadRequest:
        return cls(HTTPStatus.TOO_MANY_REQUESTS, exc.reason, max(1, exc.retry_after))


class JsonHandler(BaseHTTPRequestHandler):
    """JSON in, JSON out, bounded bodies, one journal line per request, no server banner."""

    server_version = "xnode"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # Errors found before the version is parsed are answered with a status line (http.server's
    # default, HTTP/0.9, sends a bare HTML page a client cannot tell from a success).
    default_request_version = "HTTP/1.0"
    timeout = 10  # seconds per socket operation; the server's watchdog bounds a whole request
    server: BoundedServer
    answered = False  # a response was started for the current request
    extra_headers: ClassVar[dict[str, str]] = {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.client_address[0], printable(format % args))

    def handle_one_request(self) -> None:
        """One request under the server's deadline; an unexpected error is a 500, not a trace."""
        watchdog = self.server.watchdog
        watchdog.arm(self.connection, self.server.request_timeout)
        self.answered = False
        try:
            super().handle_one_request()
        except Exception as exc:
            self.close_connection = True
            logger.warning(
                "error in %s from %s: %s",
                printable(getattr(self, "requestline", "")),
                self.client_address[0],
                printable(type(exc).__name__),
            )
            if not self.answered and not self.wfile.closed:
                try:
                    self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
                except OSError:
                    pass
        finally:
            if self.connection in watchdog.expired:
                self._timed_out()
            watchdog.disarm(self.connection)

    def _timed_out(self) -> None:
        self.close_connection = True
        if not getattr(self, "raw_requestline", b""):
            return  # an idle keep-alive connection: closed without a word, as nginx does
        logger.warning("request from %s timed out", self.client_address[0])
        if not self.answered:
            try:
                self.send_json(
                    HTTPStatus.REQUEST_TIMEOUT,
                    {"error": "request timed out"},
                    {"Connection": "close"},
                )
            except OSError:
                pass

    def parse_request(self) -> bool:
        ok = super().parse_request()
        # The watchdog ended a trickled request: what was read is incomplete, never act on it.
        return ok and self.connection not in self.server.watchdog.expired

    def client(self) -> str:
        """The client's address: nginx's X-Real-IP when nginx (on loopback) forwarded it."""
        peer = str(self.client_address[0])
        forwarded = self.headers.get(REAL_IP_HEADER, "")
        try:
            if forwarded and ipaddress.ip_address(peer).is_loopback:
                return str(ipaddress.ip_address(forwarded.strip()))
        except ValueError:
            pass
        return peer

    def read_json(self) -> dict[str, Any]:
        length = self.headers.get("Content-Length")
        if length is None or not _LENGTH.fullmatch(length.strip()):
            raise BadRequest(
                HTTPStatus.LENGTH_REQUIRED, "a JSON body with a decimal Content-Length is needed"
            )
        if int(length) > MAX_BODY:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        raw = self.rfile.read(int(length))
        if len(raw) != int(length):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "the body is shorter than its Content-Length")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
        except RecursionError:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "the body is nested too deeply") from None
        if not isinstance(data, dict):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return data

    def field(self, data: dict[str, Any], name: str) -> str:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"missing string field '{name}'")
        return value

    def send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.answered = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in {**self.extra_headers, **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(
        self, status: HTTPStatus, data: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(data, sort_keys=True).encode() + b"\n"
        self.send(status, body, "application/json", headers)

    def refuse(self, status: HTTPStatus, reason: str, retry_after: int | None = None) -> None:
        logger.warning(
            "refused %s %s from %s: %s",
            printable(str(self.command)),
            printable(str(self.path)),
            self.client_address[0],
            printable(reason),
        )
        # A refused request's body may be unread: never parse it as the next request.
        self.close_connection = True
        headers = {"Connection": "close"}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        self.send_json(status, {"error": reason}, headers)

    def refuse_with(self, exc: BadRequest) -> None:
        self.refuse(exc.status, exc.reason, exc.retry_after)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Run `server` in a daemon thread (tests and the warm-up path use this)."""
    thread = threading.Thread(target=server.serve_forever, name="xnode-http", daemon=True)
    thread.start()
    return thread


def warm_up_siwe() -> None:
    """Import siwe (and web3) in the background so start-up is fast and the first sign-in is too."""

    def load() -> None:
        import siwe  # noqa: F401 - imported for its side effect of loading the module

    threading.Thread(target=load, name="siwe-import", daemon=True).start()
