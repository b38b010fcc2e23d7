"""The small HTTP layer shared by the claim service and the sign-in gate (stdlib http.server)."""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

logger = logging.getLogger("xnode")

MAX_BODY = 16 * 1024


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class JsonHandler(BaseHTTPRequestHandler):
    """JSON in, JSON out, bounded bodies, one journal line per request, no server banner."""

    server_version = "xnode"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds per socket operation: a stalled client cannot hold a thread forever
    extra_headers: ClassVar[dict[str, str]] = {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.client_address[0], format % args)

    def read_json(self) -> dict[str, Any]:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise BadRequest(
                HTTPStatus.LENGTH_REQUIRED, "a JSON body with Content-Length is needed"
            )
        if int(length) > MAX_BODY:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        raw = self.rfile.read(int(length))
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
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

    def refuse(self, status: HTTPStatus, reason: str) -> None:
        logger.warning(
            "refused %s %s from %s: %s", self.command, self.path, self.client_address[0], reason
        )
        # A refused request's body may be unread: never parse it as the next request.
        self.close_connection = True
        self.send_json(status, {"error": reason}, {"Connection": "close"})


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
