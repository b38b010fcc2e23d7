"""The studio's claim against the REAL claim service (tests/test_claim.py's `node`: the node-side
server on 127.0.0.1 with real host and operator keys), real secp256k1 signatures (eth-account)
standing in for the browser wallet's personal_sign, and the real operator keystore."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from starlette.testclient import TestClient
from typer.testing import CliRunner

from tests.test_claim import Node, node, sign
from xnodectl import inventory as inv
from xnodectl.cli import app as cli_app
from xnodectl.studio import access, services
from xnodectl.studio.app import create
from xnodectl.verify import sign_in
from xnodectl.wallet import keystore

__all__ = ["node"]  # the real claim service fixture, shared with the CLI's claim tests

BASE = "http://127.0.0.1:8370"
TOKEN = "claim-token-" + "z" * 20
PASSWORD = "keystore password 7"
COMMENT = "# the operator's own words"


@pytest.fixture
def ws(tmp_path: Path, node: Node) -> Path:
    """A workspace whose operator key (settings.ssh_key) is the key the claim authorizes, and
    whose keystore (settings.signer_keystore) holds the node owner's key."""
    made = CliRunner().invoke(cli_app, ["init", str(tmp_path / "ws")])
    assert made.exit_code == 0, made.stderr
    root = Path(made.stdout.strip())
    wallet = tmp_path / "owner.json"
    keystore.create(wallet, PASSWORD, private_key=bytes(node.owner.key), scrypt_n=2**14)
    path = root / inv.FILENAME
    text = path.read_text().replace(
        "[settings]\n",
        f'[settings]\n{COMMENT}\nssh_key = "{node.key_path}"\nsigner_keystore = "{wallet}"\n',
    )
    path.write_text(text)
    return root


@pytest.fixture
def client(ws: Path) -> Iterator[TestClient]:
    keys = access.Keys.new("127.0.0.1", 8370, TOKEN)
    with TestClient(create(services.Workspace(ws), keys), base_url=BASE) as c:
        c.get(f"/?token={TOKEN}", follow_redirects=False)
        match = re.search(r'name="csrf-token" content="([0-9a-f]+)"', c.get("/nodes/claim").text)
        assert match
        c.headers["x-csrf-token"] = match.group(1)
        yield c


def prepare(client: TestClient, node: Node, address: Any, **over: Any) -> Any:
    body = {"host": "127.0.0.1", "port": str(node.port), "address": address, **over}
    return client.post("/api/claims", json=body)


def pinned(ws: Path) -> inv.Node | None:
    return inv.load(ws / inv.FILENAME).nodes.get("node-a")


def test_wallet_claim_pins_the_node_once(client: TestClient, node: Node, ws: Path) -> None:
    """Prepare (the node's nonce, the exact message), sign in the 'browser', finish: the node
    authorizes the operator key and the inventory pins it as `xnodectl claim` does."""
    page = client.get("/nodes/claim").text
    assert node.operator_key.fingerprint in page and str(node.key_path) in page
    started = prepare(client, node, node.owner.address.lower())
    assert started.status_code == 200, started.text
    out = started.json()
    assert out["node"] == "node-a" and out["address"] == node.owner.address
    assert out["host_key_fingerprint"] == node.host_key.fingerprint
    assert out["ssh_key_fingerprint"] == node.operator_key.fingerprint
    message = out["message"]
    assert message.startswith(f"{node.domain} wants you to sign in with your Ethereum account:")
    assert f"\n{sign_in.claim_statement(node.operator_key.fingerprint)}\n" in message
    assert f"\n- {sign_in.host_key_resource(node.host_key.fingerprint)}" in message
    node.assert_nothing_authorized()  # nothing happens until the signature is posted

    done = client.post(f"/api/claims/{out['id']}", json={"signature": sign(node.owner, message)})
    assert done.status_code == 200, done.text
    assert done.json() == {
        "node": "node-a",
        "host": "127.0.0.1",
        "address": node.owner.address,
        "authorized": node.operator_key.fingerprint,
        "host_key_fingerprint": node.host_key.fingerprint,
    }
    assert node.authorized.read_text().strip() == node.operator_key.line()
    entry = pinned(ws)
    assert entry is not None and entry.owner == node.owner.address
    assert entry.host_key == " ".join(node.host_key.line().split()[:2])
    assert entry.authorized_keys == [node.operator_key.line()] and entry.port == 22
    assert COMMENT in (ws / inv.FILENAME).read_text()  # the operator's comments survive
    assert "node-a" in client.get("/nodes").text

    replay = client.post(f"/api/claims/{out['id']}", json={"signature": "0x00"})
    assert replay.status_code == 400
    assert replay.json()["error"].startswith("error: no pending claim with that id")
    again = prepare(client, node, node.owner.address)  # already claimed: the node says so
    assert again.status_code == 400
    error = again.json()["error"]
    assert error.startswith("error: the node refused: claims are closed")
    assert "xnodectl claim --reopen" in error


def test_wrong_owner_is_refused_and_nothing_pinned(
    client: TestClient, node: Node, ws: Path
) -> None:
    stranger = Account.create()
    out = prepare(client, node, stranger.address).json()
    done = client.post(
        f"/api/claims/{out['id']}", json={"signature": sign(stranger, out["message"])}
    )
    assert done.status_code == 400
    assert done.json()["error"] == (
        f"error: the node refused: address {stranger.address} is not allowed on this node "
        "(hint: check the wallet is the node's owner, the node's clock, and --chain-id)"
    )
    forged = prepare(client, node, node.owner.address).json()  # the owner's text, another's key
    refused = client.post(
        f"/api/claims/{forged['id']}", json={"signature": sign(stranger, forged["message"])}
    )
    assert refused.status_code == 400 and "the node refused" in refused.json()["error"]
    other = prepare(client, node, node.owner.address).json()  # the owner signs another text:
    text = other["message"].replace(node.operator_key.fingerprint, "SHA256:" + "B" * 43)
    swapped = client.post(f"/api/claims/{other['id']}", json={"signature": sign(node.owner, text)})
    assert swapped.status_code == 400  # the studio posts the text it built, not the browser's
    assert "the node refused" in swapped.json()["error"]
    node.assert_nothing_authorized()
    assert pinned(ws) is None


def test_unexpected_host_key_stops_before_anything_is_signed(
    client: TestClient, node: Node, ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The studio's line is the CLI's line for the same claim."""
    other = "SHA256:" + "A" * 43
    refused = prepare(client, node, node.owner.address, expect_host_key=other)
    assert refused.status_code == 400
    line = refused.json()["error"]
    assert line == (
        f"error: host key {node.host_key.fingerprint} is not the expected {other} "
        "(hint: someone may be impersonating the node; nothing was signed)"
    )
    monkeypatch.setenv(keystore.PASSWORD_ENV, PASSWORD)
    wallet = str(tmp_path / "owner.json")
    result = CliRunner().invoke(
        cli_app,
        ["claim", "127.0.0.1", "--port", str(node.port), "--wallet", wallet, "--no-inventory",
         "--ssh-key", str(node.key_path), "--expect-host-key", other],
    )  # fmt: skip
    assert result.exit_code == 2 and result.stderr.strip().splitlines()[-1] == line
    assert not client.app.app.state.claims._items  # type: ignore[attr-defined]
    node.assert_nothing_authorized()


def test_a_pending_claim_expires_with_the_nodes_nonce(client: TestClient, node: Node) -> None:
    out = prepare(client, node, node.owner.address).json()
    assert out["expires_in"] == 300  # the node's nonce lifetime
    claims = client.app.app.state.claims  # type: ignore[attr-defined]
    now = claims.clock()
    claims.clock = lambda: now + 301
    late = client.post(
        f"/api/claims/{out['id']}", json={"signature": sign(node.owner, out["message"])}
    )
    assert late.status_code == 400
    assert late.json()["error"].startswith("error: the pending claim expired")
    node.assert_nothing_authorized()


def test_keystore_form_claims_and_never_echoes_the_password(
    client: TestClient, node: Node, ws: Path
) -> None:
    form = {"csrf": client.headers["x-csrf-token"], "host": "127.0.0.1", "port": str(node.port)}
    wrong = client.post("/nodes/claim", data={**form, "password": "not it at all"})
    assert wrong.status_code == 400
    assert "error: wrong password for " in wrong.text and "not it at all" not in wrong.text
    node.assert_nothing_authorized()
    done = client.post("/nodes/claim", data={**form, "password": PASSWORD, "name": "edge"})
    assert done.status_code == 200, done.text
    assert PASSWORD not in done.text
    for shown in ("edge", "127.0.0.1", node.owner.address, node.host_key.fingerprint):
        assert shown in done.text
    entry = inv.load(ws / inv.FILENAME).nodes["edge"]
    assert entry.owner == node.owner.address and entry.host == "127.0.0.1"
    assert node.authorized.read_text().strip() == node.operator_key.line()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BAD: list[tuple[dict[str, Any], str]] = [
    ({"port": "x"}, "error: port 'x' is not a number (hint: 1 to 65535)"),
    ({"port": "70000"}, "error: claim port 70000 is out of range (hint: 1 to 65535)"),
    ({"host": "-oProxyCommand=x"}, "error: host '-oProxyCommand=x' holds spaces"),
    ({"host": ""}, "error: host '' is not a valid DNS name"),
    ({"name": "Node_A"}, "error: node name 'Node_A' is not allowed"),
    ({"address": "0x1234"}, "error: '0x1234' is not an Ethereum address"),
    ({"address": ["0x1"]}, "error: 'address' must be text"),
]


def test_bad_input_is_one_line_and_contacts_nothing(client: TestClient, node: Node) -> None:
    for over, error in BAD:
        fields = {"address": node.owner.address, **over}
        response = prepare(client, node, **fields)
        assert response.status_code == 400 and response.json()["error"].startswith(error), over
    assert not node.service.nonces._issued  # no nonce was asked for
    node.assert_nothing_authorized()
    studio_line = prepare(client, node, node.owner.address, host="bad host").json()["error"]
    cli = CliRunner().invoke(  # the same line, said before the CLI asks for a password
        cli_app,
        ["claim", "bad host", "--ssh-key", str(node.key_path), "--no-inventory"],
        env={keystore.PASSWORD_ENV: None, "XNODECTL_WALLET": "/nonexistent/wallet.json"},
    )
    assert cli.exit_code == 2 and cli.stderr.strip().splitlines()[-1] == studio_line


def test_unreachable_node_and_junk(client: TestClient, node: Node, ws: Path) -> None:
    port = _closed_port()
    gone = prepare(client, node, node.owner.address, port=str(port))
    assert gone.status_code == 502
    assert gone.json()["error"].startswith(
        f"error: cannot reach the claim service at http://127.0.0.1:{port}/claim/nonce"
    )
    junk = client.post("/api/claims", content=b"[1")
    assert junk.status_code == 400
    assert junk.json()["error"] == (
        "error: the claim API takes a JSON object (hint: send {...} as JSON)"
    )
    path = ws / inv.FILENAME
    path.write_text(path.read_text().replace(f'ssh_key = "{node.key_path}"\n', ""))
    nokey = prepare(client, node, node.owner.address)
    assert nokey.status_code == 400 and "no operator SSH key" in nokey.json()["error"]


def test_claim_routes_need_the_csrf_token(client: TestClient, node: Node) -> None:
    del client.headers["x-csrf-token"]
    out = prepare(client, node, node.owner.address)
    assert out.status_code == 403 and "CSRF" in out.json()["error"]
    form = {"host": "127.0.0.1", "port": str(node.port), "password": PASSWORD}
    assert client.post("/nodes/claim", data=form).status_code == 403
    assert client.post("/api/claims/x", json={"signature": "0x"}).status_code == 403
    node.assert_nothing_authorized()


def test_no_keystore_password_beyond_loopback(ws: Path, node: Node) -> None:
    """Listening on the network, the studio is plain HTTP: it neither asks for nor takes the
    keystore password (the browser wallet still claims)."""
    keys = access.Keys.new("192.0.2.2", 8370, owner=node.owner.address.lower())
    with TestClient(create(services.Workspace(ws), keys), base_url="http://192.0.2.2:8370") as c:
        c.cookies.set(access.COOKIE, keys.session)
        page = c.get("/nodes/claim").text
        assert 'type="password"' not in page and 'id="no-keystore"' in page
        form = {"csrf": keys.csrf, "host": "127.0.0.1", "port": str(node.port)}
        refused = c.post("/nodes/claim", data={**form, "password": PASSWORD})
        assert refused.status_code == 400 and PASSWORD not in refused.text
        assert "it takes no keystore password" in refused.text
        node.assert_nothing_authorized()
        c.headers["x-csrf-token"] = keys.csrf
        out = prepare(c, node, node.owner.address).json()
        done = c.post(
            f"/api/claims/{out['id']}", json={"signature": sign(node.owner, out["message"])}
        )
        assert done.status_code == 200 and done.json()["node"] == "node-a"
