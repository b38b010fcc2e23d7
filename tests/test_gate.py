"""The wallet gate: the real sign-in service on 127.0.0.1 with real secp256k1 signatures."""

from __future__ import annotations

import json
import shutil
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

from xnodectl import process
from xnodectl.nodeside import gate_server
from xnodectl.nodeside.httpbase import serve_in_thread

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Gate:
    port: int
    owner: LocalAccount
    friend: LocalAccount
    gate: gate_server.Gate

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(
        self, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with OPENER.open(request, timeout=10) as response:
                return Answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.headers, exc.read())

    def login_body(
        self, account: LocalAccount, headers: dict[str, str] | None = None
    ) -> dict[str, str]:
        prepared = self.call(f"/auth/nonce?address={account.address.lower()}", headers=headers)
        assert prepared.status == 200, prepared.body
        message = prepared.json()["message"]
        signature = account.sign_message(encode_defunct(text=message)).signature
        return {"message": message, "signature": "0x" + bytes(signature).hex()}

    def login(self, account: LocalAccount, headers: dict[str, str] | None = None) -> Answer:
        return self.call("/auth/login", self.login_body(account, headers), headers)


def cookie_of(answer: Answer) -> str:
    header = answer.headers["Set-Cookie"]
    return str(header.split(";")[0])


@pytest.fixture
def gate() -> Iterator[Gate]:
    owner, friend = Account.create(), Account.create()
    config = gate_server.GateConfig(
        allowed=frozenset({owner.address.lower(), friend.address.lower()}),
        domains=frozenset(),
        node_name="node-a",
        session_ttl=600,
    )
    service = gate_server.Gate(config)
    server = gate_server.make_server(service, "127.0.0.1", 0)
    serve_in_thread(server)
    yield Gate(port=server.server_address[1], owner=owner, friend=friend, gate=service)
    server.shutdown()
    server.server_close()


def test_check_without_session_is_401(gate: Gate) -> None:
    assert gate.call("/auth/check").status == 401
    assert gate.call("/auth/check", headers={"Cookie": "xnode_session=made-up"}).status == 401
    assert gate.call("/auth/check", headers={"Cookie": "garbage;;=="}).status == 401


def test_owner_login_check_logout(gate: Gate) -> None:
    answer = gate.login(gate.owner)
    assert answer.status == 200, answer.body
    assert answer.json()["address"] == gate.owner.address
    attributes = [a.strip() for a in answer.headers["Set-Cookie"].split(";")]
    assert "HttpOnly" in attributes and "SameSite=Strict" in attributes and "Path=/" in attributes
    assert "Secure" not in attributes  # plain HTTP: a Secure cookie would never come back
    cookie = cookie_of(answer)
    check = gate.call("/auth/check", headers={"Cookie": cookie})
    assert check.status == 204
    session = gate.call("/auth/session", headers={"Cookie": cookie})
    assert session.status == 200 and session.json()["address"] == gate.owner.address
    assert 0 < session.json()["expires_in"] <= 600
    assert gate.call("/auth/session").status == 401
    assert check.headers["X-Xnode-Address"] == gate.owner.address
    # Bound to the node it was issued for: another Host does not pass.
    other = gate.call("/auth/check", headers={"Cookie": cookie, "Host": "other.example"})
    assert other.status == 401
    out = gate.call("/auth/logout", {}, headers={"Cookie": cookie})
    assert out.status == 204 and "Max-Age=0" in out.headers["Set-Cookie"]
    assert gate.call("/auth/check", headers={"Cookie": cookie}).status == 401


def test_allow_list_and_refusals(gate: Gate) -> None:
    assert gate.login(gate.friend).status == 200
    stranger = gate.login(Account.create())
    assert stranger.status == 403 and "not allowed" in stranger.json()["error"]
    assert "Set-Cookie" not in stranger.headers
    body = gate.login_body(gate.owner)
    assert gate.call("/auth/login", body).status == 200
    replay = gate.call("/auth/login", body)
    assert replay.status == 403 and "nonce unknown" in replay.json()["error"]
    forged = {**gate.login_body(gate.owner), "signature": "0x" + "11" * 65}
    assert gate.call("/auth/login", forged).status == 403
    malformed = gate.call("/auth/login", {"message": "let me in", "signature": "0x00"})
    assert malformed.status == 400 and "malformed" in malformed.json()["error"]


def test_foreign_domain_and_origin_are_refused(gate: Gate) -> None:
    wrong_host = gate.call(
        f"/auth/nonce?address={gate.owner.address}", headers={"Host": "phish.example"}
    )
    assert (
        wrong_host.status == 403 and "not served as 'phish.example'" in wrong_host.json()["error"]
    )
    body = gate.login_body(gate.owner)
    cross = gate.call("/auth/login", body, headers={"Origin": "http://phish.example"})
    assert cross.status == 403 and "origin" in cross.json()["error"]
    assert "Set-Cookie" not in cross.headers


def test_secure_cookie_behind_tls(gate: Gate) -> None:
    tls = {"X-Forwarded-Proto": "https"}
    answer = gate.login(gate.owner, tls)
    assert answer.status == 200, answer.body
    assert "Secure" in [a.strip() for a in answer.headers["Set-Cookie"].split(";")]
    # The signed URI must then be https: an http message is refused behind TLS.
    plain = gate.login_body(gate.owner)
    refused = gate.call("/auth/login", plain, tls)
    assert refused.status == 403 and "URI" in refused.json()["error"]


def test_sign_in_page_is_self_contained(gate: Gate) -> None:
    page = gate.call("/auth/login?next=/chat/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.body.decode()
    assert '<script src="/auth/signin.js"></script>' in html and "node-a" in html
    script = gate.call("/auth/signin.js")
    assert script.status == 200 and b"personal_sign" in script.body
    for text in (html, script.body.decode()):
        assert "https://" not in text and "http://" not in text  # no CDN, nothing external


def test_sessions_expire() -> None:
    now = [100.0]
    sessions = gate_server.Sessions(ttl=60, clock=lambda: now[0])
    token = sessions.create("0xabc", "node:80")
    assert sessions.get(token, "node:80") is not None
    assert sessions.get(token, "other:80") is None
    now[0] += 61
    assert sessions.get(token, "node:80") is None


def test_address_reported_by_nginx_is_a_valid_domain(gate: Gate) -> None:
    """Behind nginx the browser's Host is the node's address; nginx vouches for it."""
    via_nginx = {"Host": "10.0.0.5", "X-Xnode-Server": "10.0.0.5:80"}
    answer = gate.login(gate.owner, via_nginx)
    assert answer.status == 200, answer.body
    cookie = cookie_of(answer)
    assert gate.call("/auth/check", headers={"Cookie": cookie, "Host": "10.0.0.5"}).status == 204
    assert gate.call("/auth/check", headers={"Cookie": cookie}).status == 401  # other host
    # Without nginx's header that address is not this node's.
    refused = gate.call(f"/auth/nonce?address={gate.owner.address}", headers={"Host": "10.0.0.5"})
    assert refused.status == 403


# The sign-in page's own script, run by Node.js with a stand-in DOM and a stand-in wallet whose
# personal_sign asks the test (over HTTP) to sign with the owner's real key.
SCRIPT_HARNESS = r"""
const [base, signer, next] = process.argv.slice(2);
const elements = {};
const status = { textContent: '', className: '' };
const element = (id) => ({ addEventListener: (event, fn) => { elements[id] = fn; } });
global.document = { getElementById: (id) => (id === 'status' ? status : element(id)) };
const realFetch = global.fetch;
let cookie = '';
global.fetch = async (path, options = {}) => {
  const headers = Object.assign({}, options.headers || {}, cookie ? { Cookie: cookie } : {});
  const response = await realFetch(base + path, Object.assign({}, options, { headers }));
  const set = response.headers.get('set-cookie');
  if (set) cookie = set.split(';')[0];
  return response;
};
let address = null;
global.window = {
  location: { origin: base, search: '?next=' + encodeURIComponent(next),
              assign: (url) => { console.log(JSON.stringify({ went: url, cookie })); },
              replace: (url) => { console.log(JSON.stringify({ replaced: url })); } },
  ethereum: { request: async ({ method, params }) => {
    if (method === 'eth_requestAccounts') {
      address = (await (await realFetch(signer)).json()).address.toLowerCase();
      return [address];
    }
    if (method === 'personal_sign') {
      if (params[1] !== address) throw new Error('personal_sign params are [message, address]');
      const answer = await realFetch(signer, { method: 'POST', body: params[0] });
      return (await answer.json()).signature;
    }
    throw new Error('unexpected wallet method ' + method);
  } },
};
require(process.argv[5]);  // the page's script
setTimeout(async () => {
  await elements.signin();
  if (status.className === 'error') console.log(JSON.stringify({ error: status.textContent }));
}, 200);
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_sign_in_page_script_signs_in_with_a_wallet(gate: Gate, tmp_path: Path) -> None:
    owner = gate.owner

    class Wallet(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer({"address": owner.address})

        def do_POST(self) -> None:
            text = self.rfile.read(int(self.headers["Content-Length"])).decode()
            signature = owner.sign_message(encode_defunct(text=text)).signature
            self._answer({"signature": "0x" + bytes(signature).hex()})

        def _answer(self, data: dict[str, str]) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    wallet = ThreadingHTTPServer(("127.0.0.1", 0), Wallet)
    serve_in_thread(wallet)
    try:
        script = tmp_path / "signin.js"
        script.write_bytes(gate.call("/auth/signin.js").body)
        harness = tmp_path / "harness.js"
        harness.write_text(SCRIPT_HARNESS)
        result = process.run(
            [
                "node",
                str(harness),
                gate.base,
                f"http://127.0.0.1:{wallet.server_address[1]}/",
                "/grafana/?tab=1",
                str(script),
            ],
            timeout=30,
        )
    finally:
        wallet.shutdown()
        wallet.server_close()
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["went"] == gate.base + "/grafana/?tab=1", result.stdout + result.stderr
    cookie = events[-1]["cookie"]
    assert gate.call("/auth/check", headers={"Cookie": cookie}).status == 204


# The page's script with a signed-in session (GET /auth/session answers 200): it goes straight on
# to `next`. Each target is resolved as the browser resolves location.replace(url): WHATWG URL,
# which Node.js implements to the same standard.
REDIRECT_HARNESS = r"""
const [base, script, ...nexts] = process.argv.slice(2);
(async () => {
  for (const next of nexts) {
    let went = null;
    global.document = { getElementById: () => ({ addEventListener: () => {} }) };
    global.fetch = async () => ({ ok: true, json: async () => ({}) });
    global.window = { location: { origin: base, search: '?next=' + encodeURIComponent(next),
                                  replace: (url) => { went = url; } } };
    delete require.cache[require.resolve(script)];
    require(script);
    await new Promise((resolve) => setTimeout(resolve, 10));
    const resolved = went === null ? null : new URL(went, base + '/auth/login');
    console.log(JSON.stringify({ next, went, origin: resolved && resolved.origin,
                                 href: resolved && resolved.href }));
  }
})();
"""

HOSTILE_NEXT = [
    "/\t/evil.example",
    "/\r/evil.example",
    "/\n/evil.example",
    "/\t\t/evil.example/x?y",
    "//evil.example",
    "/\\evil.example",
    "\\/evil.example",
    "/.//evil.example",
    " //evil.example",
    "https://evil.example/",
    "http:evil.example",
    "javascript:alert(1)",
    "data:text/html,hi",
]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_sign_in_page_never_redirects_off_origin(gate: Gate, tmp_path: Path) -> None:
    """Issue 13 item 1: `next=/%09/evil.example` passed the old check and, with TAB dropped by
    URL parsing, sent a signed-in owner to http://evil.example/."""
    script = tmp_path / "signin.js"
    script.write_bytes(gate.call("/auth/signin.js").body)
    harness = tmp_path / "redirect.js"
    harness.write_text(REDIRECT_HARNESS)
    same = ["/grafana/?tab=1#top", "/", "grafana/", "/a/../b"]
    result = process.run(
        ["node", str(harness), gate.base, str(script), *HOSTILE_NEXT, *same], timeout=30
    )
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["next"] for e in events] == HOSTILE_NEXT + same, result.stderr
    for event in events:
        assert event["origin"] == gate.base, event
    hrefs = {e["next"]: e["href"] for e in events}
    assert hrefs["/grafana/?tab=1#top"] == gate.base + "/grafana/?tab=1#top"
    assert hrefs["/a/../b"] == gate.base + "/b"
    assert hrefs["/\t/evil.example"] == gate.base + "/"
