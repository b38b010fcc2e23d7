"""The wallet gate behind a real nginx: the location blocks modules/wallet-gate.nix generates
(evaluated by real Nix, see test_wallet_modules.py) in front of the real gate and a backend.

Skipped where nginx is not installed (Debian: apt-get install nginx); NixOS runs the same flow in
vm-tests/wallet-gate.nix.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from tests import nginxconf
from tests.nginxconf import module_nginx, route
from tests.test_wallet_modules import base_config
from xnodectl import process
from xnodectl.nodeside import gate_server
from xnodectl.nodeside.httpbase import serve_in_thread

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Backend(BaseHTTPRequestHandler):
    """The app: answers 200 and reports who nginx said signed in."""

    def do_GET(self) -> None:
        body = json.dumps({"app": True, "user": self.headers.get("X-Xnode-Address")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Site:
    base: str
    owner: LocalAccount

    def get(
        self, path: str, headers: dict[str, str] | None = None, body: dict[str, Any] | None = None
    ) -> tuple[int, Any, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with OPENER.open(request, timeout=10) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    owner = Account.create()
    backend = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    serve_in_thread(backend)
    gate_port, nginx_port = free_port(), free_port()
    routes = {"/app/": route(backend.server_address[1], walletGate=True)}
    gate_cfg = {
        "enable": True,
        "port": gate_port,
        "allow": [],
        "domains": ["node-a"],
        "chainId": 1,
        "sessionTtl": 600,
        "secureCookie": "auto",
    }
    nginx = module_nginx(
        base_config(walletGate=gate_cfg, proxy={"port": nginx_port, "routes": routes, "sites": {}}),
        "modules/proxy.nix",
        "modules/wallet-gate.nix",
    )
    gate = gate_server.make_server(
        gate_server.Gate(
            gate_server.GateConfig(
                allowed=frozenset({owner.address.lower()}), domains=frozenset({"node-a"})
            )
        ),
        "127.0.0.1",
        gate_port,
    )
    serve_in_thread(gate)
    (tmp_path / "nginx.conf").write_text(nginxconf.render(nginx, tmp_path, 64))
    assert NGINX is not None
    daemon = process.spawn(
        [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"]
    )
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", nginx_port)) == 0:
                break
        error_log = tmp_path / "error.log"
        assert daemon.poll() is None, error_log.read_text() if error_log.exists() else "no log"
        assert time.monotonic() < deadline, "nginx did not start"
        time.sleep(0.05)
    yield Site(base=f"http://127.0.0.1:{nginx_port}", owner=owner)
    daemon.terminate()
    daemon.wait(timeout=10)
    for server in (gate, backend):
        server.shutdown()
        server.server_close()


def sign_in(site: Site, account: LocalAccount) -> tuple[int, Any]:
    status, _, body = site.get(f"/auth/nonce?address={account.address}")
    assert status == 200, body
    message = json.loads(body)["message"]
    signature = "0x" + bytes(account.sign_message(encode_defunct(text=message)).signature).hex()
    status, headers, body = site.get(
        "/auth/login", body={"message": message, "signature": signature}
    )
    return status, headers


def test_gate_through_nginx(site: Site) -> None:
    status, headers, _ = site.get("/app/page?x=1")
    assert status == 302 and headers["Location"].endswith("/auth/login?next=/app/page?x=1")
    status, headers, page = site.get("/auth/login?next=/app/")
    assert status == 200 and b"/auth/signin.js" in page
    assert site.get("/auth/check")[0] == 404  # internal to nginx
    assert sign_in(site, Account.create())[0] == 403

    status, headers = sign_in(site, site.owner)
    assert status == 200
    cookie = headers["Set-Cookie"].split(";")[0]
    status, _, body = site.get("/app/page", {"Cookie": cookie, "X-Xnode-Address": "0xforged"})
    assert status == 200
    assert json.loads(body) == {"app": True, "user": site.owner.address}
    # The session is bound to the host it was signed for.
    assert site.get("/app/page", {"Cookie": cookie, "Host": "node-a"})[0] == 302

    assert site.get("/auth/logout", {"Cookie": cookie}, body={})[0] == 204
    assert site.get("/app/page", {"Cookie": cookie})[0] == 302
