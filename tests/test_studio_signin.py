"""Wallet sign-in when the studio listens beyond loopback: SIWE verified by the node gate's code
(verify.sign_in), real secp256k1 signatures (eth-account), only the workspace owner."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from starlette.testclient import TestClient
from typer.testing import CliRunner

from xnodectl.cli import app as cli
from xnodectl.studio import access, services
from xnodectl.studio.app import create

HOST = "192.0.2.2:8370"
OWNER = Account.from_key("0x" + "11" * 32)
STRANGER = Account.from_key("0x" + "22" * 32)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.stderr
    keys = access.Keys.new("192.0.2.2", 8370, owner=OWNER.address.lower())
    app = create(services.Workspace(Path(result.stdout.strip())), keys)
    with TestClient(app, base_url=f"http://{HOST}") as c:
        yield c


def sign(client: TestClient, account: object, address: str | None = None) -> dict[str, str]:
    addr = address or account.address  # type: ignore[attr-defined]
    message = client.get(f"/auth/nonce?address={addr}").json()["message"]
    signature = account.sign_message(encode_defunct(text=message)).signature.hex()  # type: ignore[attr-defined]
    return {"message": message, "signature": "0x" + signature.removeprefix("0x")}


def test_nothing_without_sign_in_and_the_token_does_not_open_it(client: TestClient) -> None:
    token = client.app.app.state.studio.keys.token  # type: ignore[attr-defined]
    for path in ("/", f"/?token={token}", "/nodes", "/templates/ipfs"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/auth/login"
        assert "set-cookie" not in response.headers
    assert client.post("/deploys").status_code == 403
    page = client.get("/auth/login").text
    assert "Sign in with wallet" in page and "/ws" not in page  # the workspace path stays hidden


def test_owner_signs_in_once_per_nonce(client: TestClient) -> None:
    signed = sign(client, OWNER)
    assert (
        f"{HOST} wants you to sign in with your Ethereum account:\n{OWNER.address}"
        in (signed["message"])
    )
    response = client.post("/auth/login", json=signed, headers={"origin": f"http://{HOST}"})
    assert response.status_code == 200 and response.json()["address"] == OWNER.address
    assert "HttpOnly" in response.headers["set-cookie"]
    assert client.get("/").status_code == 200
    again = client.post("/auth/login", json=signed)
    assert again.status_code == 403 and "nonce unknown" in again.json()["error"]
    csrf = re.search(r'name="csrf-token" content="([0-9a-f]+)"', client.get("/").text)
    assert csrf and client.post("/deploys", data={"canary": "x"}).status_code == 403


def test_refusals(client: TestClient) -> None:
    stranger = client.post("/auth/login", json=sign(client, STRANGER))
    assert stranger.status_code == 403 and "is not allowed" in stranger.json()["error"]
    forged = sign(client, STRANGER, OWNER.address)  # the owner's message, another key's signature
    refused = client.post("/auth/login", json=forged)
    assert refused.status_code == 403 and "does not match" in refused.json()["error"]
    cross = client.post("/auth/login", json=sign(client, OWNER), headers={"origin": "http://evil"})
    assert cross.status_code == 403 and "origin" in cross.json()["error"]
    elsewhere = client.get("/auth/nonce?address=" + OWNER.address, headers={"host": "evil:1"})
    assert elsewhere.status_code == 421
    bad = client.get("/auth/nonce?address=0x1234")
    assert bad.status_code == 400 and bad.json()["error"].startswith("error: '0x1234' is not")
    junk = client.post("/auth/login", content=b"{")
    assert junk.status_code == 400
    assert client.get("/", follow_redirects=False).status_code == 303  # still not signed in
