"""The claim: the real claim service on 127.0.0.1, real secp256k1 signatures, real SSH keys.

Every refusal is a 4xx with a clear reason, and nothing is authorized.
"""

from __future__ import annotations

import json
import socket
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from hypothesis import given, settings
from hypothesis import strategies as st
from siwe import SiweMessage
from typer.testing import CliRunner

from xnodectl import inventory as inv
from xnodectl import process, sshkeys
from xnodectl.cli import app
from xnodectl.errors import ClaimRefused
from xnodectl.nodeside import claim_server
from xnodectl.nodeside.httpbase import serve_in_thread
from xnodectl.nodeside.nonces import NonceLimit, NonceStore, client_key
from xnodectl.verify import sign_in
from xnodectl.wallet import claim, keystore
from xnodectl.wallet.signer import KeystoreSigner

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def ssh_key(directory: Path, name: str) -> Path:
    path = directory / name
    process.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)])
    return path


def call(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with OPENER.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@dataclass
class Node:
    service: claim_server.ClaimService
    port: int
    host_key: sshkeys.PublicKey
    owner: LocalAccount
    operator_key: sshkeys.PublicKey
    key_path: Path

    @property
    def domain(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"http://{self.domain}"

    @property
    def authorized(self) -> Path:
        return self.service.config.authorized_keys

    def nonce(self) -> str:
        status, info = call(self.base + "/claim/nonce")
        assert status == 200, info
        assert info["host_key_fingerprint"] == self.host_key.fingerprint
        return str(info["nonce"])

    def body(
        self, nonce: str, *, signer: LocalAccount | None = None, **over: Any
    ) -> dict[str, Any]:
        """A correct claim body; `over` replaces message fields (domain, uri, chain_id, ...)."""
        signer = signer or self.owner
        fields: dict[str, Any] = {
            "domain": self.domain,
            "uri": self.base + "/claim",
            "address": signer.address,
            "chain_id": 1,
            "nonce": nonce,
            "statement": sign_in.claim_statement(self.operator_key.fingerprint),
            "resources": [sign_in.host_key_resource(self.host_key.fingerprint)],
        }
        fields.update(over)
        message = sign_in.build(**fields)
        return {
            "message": message,
            "signature": sign(signer, message),
            "ssh_public_key": self.operator_key.line(),
        }

    def assert_nothing_authorized(self) -> None:
        assert not self.authorized.exists()
        assert not self.service.config.flag.exists()


def sign(account: LocalAccount, text: str) -> str:
    return "0x" + bytes(account.sign_message(encode_defunct(text=text)).signature).hex()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    owner = Account.create()
    host = ssh_key(tmp_path, "host_key")
    operator = ssh_key(tmp_path, "operator")
    config = claim_server.ClaimConfig(
        owner=owner.address.lower(),
        chain_id=1,
        domains=frozenset(),
        authorized_keys=tmp_path / "ssh" / "authorized_keys.d" / "root",
        state_dir=tmp_path / "claim",
        host_key=host.with_suffix(".pub"),
        node_name="node-a",
    )
    service = claim_server.ClaimService(config)
    server = claim_server.make_server(service, "127.0.0.1", 0)
    serve_in_thread(server)
    yield Node(
        service=service,
        port=server.server_address[1],
        host_key=sshkeys.parse(host.with_suffix(".pub").read_text()),
        owner=owner,
        operator_key=sshkeys.parse(operator.with_suffix(".pub").read_text()),
        key_path=operator,
    )
    server.shutdown()
    server.server_close()


def _tampered(node: Node, nonce: str) -> dict[str, Any]:
    body = node.body(nonce)
    body["message"] = body["message"].replace("Chain ID: 1", "Chain ID: 5")
    return body


def _no_expiration(node: Node, nonce: str) -> dict[str, Any]:
    message = SiweMessage(
        domain=node.domain,
        address=node.owner.address,
        uri=node.base + "/claim",
        version="1",
        chain_id=1,
        issued_at=sign_in.iso(time.time()),
        nonce=nonce,
        statement=sign_in.claim_statement(node.operator_key.fingerprint),
        resources=[sign_in.host_key_resource(node.host_key.fingerprint)],
    ).prepare_message()
    return {
        "message": message,
        "signature": sign(node.owner, message),
        "ssh_public_key": node.operator_key.line(),
    }


def _other_key(node: Node, nonce: str) -> dict[str, Any]:
    body = node.body(nonce)
    other = sshkeys.parse(ssh_key(node.key_path.parent, "intruder").with_suffix(".pub").read_text())
    body["ssh_public_key"] = other.line()
    return body


def _with_options(node: Node, nonce: str) -> dict[str, Any]:
    body = node.body(nonce)
    body["ssh_public_key"] = 'command="/bin/sh" ' + node.operator_key.line()
    return body


Case = Callable[[Node, str], dict[str, Any]]
CASES: dict[str, tuple[Case, int, str]] = {
    "unknown nonce": (
        lambda n, _: n.body("0123456789abcdef0123456789abcdef"),
        403,
        "nonce unknown",
    ),
    "expired message": (lambda n, x: n.body(x, now=time.time() - 400), 403, "expired at"),
    "future issued-at": (lambda n, x: n.body(x, now=time.time() + 600), 403, "in the future"),
    "wrong domain": (
        lambda n, x: n.body(x, domain="evil.example", uri="http://evil.example/claim"),
        403,
        "domain 'evil.example' is not this node's",
    ),
    "wrong URI": (lambda n, x: n.body(x, uri=n.base + "/other"), 403, "URI"),
    "wrong chain id": (lambda n, x: n.body(x, chain_id=5), 403, "chain id 5 is not 1"),
    "another address": (lambda n, x: n.body(x, signer=Account.create()), 403, "not allowed"),
    "owner address, other key": (
        lambda n, x: {**n.body(x), "signature": sign(Account.create(), n.body(x)["message"])},
        403,
        "does not match the message",
    ),
    "tampered message": (_tampered, 403, "does not match the message"),
    "malformed message": (
        lambda n, x: {**n.body(x), "message": "please let me in"},
        400,
        "malformed message",
    ),
    "bad signature": (lambda n, x: {**n.body(x), "signature": "0x1234"}, 403, "bad signature"),
    "no expiration": (_no_expiration, 403, "no expiration"),
    "lifetime too long": (lambda n, x: n.body(x, lifetime=3600), 403, "more than 600 seconds"),
    "statement names another key": (_other_key, 403, "does not authorize exactly the key"),
    "other host key": (
        lambda n, x: n.body(x, resources=["urn:xnode:ssh-host-key:SHA256:AAAA"]),
        403,
        "does not name this node's host key",
    ),
    "key with options": (_with_options, 400, "ssh_public_key"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refusals_authorize_nothing(node: Node, case: str) -> None:
    make, status, reason = CASES[case]
    code, answer = call(node.base + "/claim", make(node, node.nonce()))
    assert code == status, answer
    assert reason in answer["error"]
    node.assert_nothing_authorized()


def test_bad_requests(node: Node) -> None:
    request = urllib.request.Request(node.base + "/claim", data=b"[1]", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        OPENER.open(request, timeout=10)
    assert info.value.code == 400
    code, answer = call(node.base + "/claim", {"message": "x"})
    assert code == 400 and "missing string field 'signature'" in answer["error"]
    node.assert_nothing_authorized()


def test_valid_claim_then_closed_then_replay_refused(node: Node) -> None:
    body = node.body(node.nonce())
    code, answer = call(node.base + "/claim", body)
    assert code == 200, answer
    assert answer["authorized"] == node.operator_key.fingerprint
    assert answer["host_key_fingerprint"] == node.host_key.fingerprint
    assert node.authorized.read_text() == node.operator_key.line() + "\n"
    assert stat.S_IMODE(node.authorized.stat().st_mode) == 0o600
    assert stat.S_IMODE(node.authorized.parent.stat().st_mode) == 0o700
    assert json.loads(node.service.config.flag.read_text())["address"] == node.owner.address
    # Claims are closed now.
    assert call(node.base + "/claim/nonce")[0] == 410
    code, answer = call(node.base + "/claim", body)
    assert code == 410 and "already claimed" in answer["error"]
    # The owner reopens (as `xnode-claim reopen` does); the same signed body is still refused.
    state = node.service.config.state_dir
    assert (
        claim_server.main(["reopen", "--state-dir", str(state), "--marker", str(state / "m")]) == 0
    )
    code, answer = call(node.base + "/claim", body)
    assert code == 403 and "nonce unknown, already used or expired" in answer["error"]
    assert node.authorized.read_text().count("\n") == 1


def test_nonces_are_single_use_random_and_expire() -> None:
    now = [1000.0]
    store = NonceStore(ttl=60, capacity=3, clock=lambda: now[0])
    first = store.issue()
    assert len(first) == 32 and store.problem(first) is None
    assert store.consume(first) and not store.consume(first)
    second = store.issue()
    now[0] += 61
    assert store.problem(second) is not None and not store.consume(second)


def test_a_nonce_flood_never_evicts_a_pending_nonce() -> None:
    """Issue 13 item 4: 1120 requests used to evict the owner's pending nonce (oldest first)."""
    now = [1000.0]
    store = NonceStore(ttl=300, capacity=64, per_client=4, clock=lambda: now[0])
    owner = store.issue("192.0.2.7")
    refused = 0
    for i in range(2000):  # one flooder, then many addresses, then one IPv6 /64 in many hosts
        client = "198.51.100.9" if i < 500 else f"10.{i // 250}.{i % 250}.1"
        if i >= 1500:
            client = f"2001:db8:0:1::{i:x}"
        try:
            store.issue(client)
        except NonceLimit as exc:
            refused += 1
            assert 0 < exc.retry_after <= 300
    assert store.problem(owner) is None and store.consume(owner)
    assert refused >= 2000 - 64 and store.pending() <= 64
    with pytest.raises(NonceLimit, match=r"198\.51\.100\.9"):
        store.issue("198.51.100.9")
    now[0] += 301  # everything expired: every client is served again
    assert store.issue("198.51.100.9") and store.pending() == 1
    assert (
        client_key("2001:db8:0:1::5") == client_key("2001:db8:0:1:ffff::1") == "2001:db8:0:1::/64"
    )
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"


def test_operator_claim_pins_host_key_in_inventory(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / inv.FILENAME).write_text("")
    wallet = tmp_path / "wallet.json"
    keystore.create(wallet, "operator password", private_key=bytes(node.owner.key), scrypt_n=2**14)
    monkeypatch.setenv(keystore.PASSWORD_ENV, "operator password")
    result = CliRunner().invoke(
        app,
        [
            "claim",
            "127.0.0.1",
            "--port",
            str(node.port),
            "--wallet",
            str(wallet),
            "--ssh-key",
            str(node.key_path),
            "--node",
            "node-a",
            "--workspace",
            str(ws),
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"node-a\t{node.host_key.fingerprint}"
    entry = inv.load(ws / inv.FILENAME).nodes["node-a"]
    assert entry.host_key == " ".join(node.host_key.line().split()[:2])
    # The claimed key becomes xnode.owner.sshKeys at the next deploy, so no deploy locks it out.
    assert entry.authorized_keys == [node.operator_key.line()]
    assert entry.host == "127.0.0.1" and entry.owner == node.owner.address
    assert node.authorized.read_text().strip() == node.operator_key.line()
    # A second claim is refused by the node: one line, exit 2, no traceback.
    again = CliRunner().invoke(
        app,
        [
            "claim",
            "127.0.0.1",
            "--port",
            str(node.port),
            "--wallet",
            str(wallet),
            "--ssh-key",
            str(node.key_path),
            "--no-inventory",
        ],
    )
    assert again.exit_code == 2
    last = again.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the node refused: claims are closed")
    assert "xnodectl claim --reopen" in last
    assert "Traceback" not in again.output


def test_unexpected_host_key_stops_before_signing(node: Node) -> None:
    signer = KeystoreSigner(node.owner)
    request = claim.ClaimRequest(
        host="127.0.0.1",
        port=node.port,
        ssh_key=node.operator_key,
        expect_host_key="SHA256:not-the-real-one",
    )
    with pytest.raises(ClaimRefused, match="is not the expected"):
        claim.claim(request, signer)
    node.assert_nothing_authorized()


def test_wrong_wallet_is_refused_by_the_node(node: Node) -> None:
    request = claim.ClaimRequest(host="127.0.0.1", port=node.port, ssh_key=node.operator_key)
    with pytest.raises(ClaimRefused, match="not allowed on this node"):
        claim.claim(request, KeystoreSigner(Account.create()))
    node.assert_nothing_authorized()
    result = claim.claim(request, KeystoreSigner(node.owner))
    assert result.authorized == node.operator_key.fingerprint


def test_server_exits_after_claim(tmp_path: Path) -> None:
    owner = Account.create()
    host = ssh_key(tmp_path, "host")
    operator = sshkeys.parse(ssh_key(tmp_path, "op").with_suffix(".pub").read_text())
    config = claim_server.ClaimConfig(
        owner=owner.address.lower(),
        chain_id=1,
        domains=frozenset(),
        authorized_keys=tmp_path / "ak",
        state_dir=tmp_path / "state",
        host_key=host.with_suffix(".pub"),
    )
    server = claim_server.make_server(
        claim_server.ClaimService(config), "127.0.0.1", 0, exit_after_claim=True
    )
    thread = serve_in_thread(server)
    request = claim.ClaimRequest(host="127.0.0.1", port=server.server_address[1], ssh_key=operator)
    claim.claim(request, KeystoreSigner(owner))
    thread.join(timeout=10)
    assert not thread.is_alive()
    server.server_close()


@pytest.fixture
def sshd(node: Node, tmp_path: Path) -> Iterator[int]:
    """A real sshd that reads the claim's authorized_keys file, with the node's host key."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = tmp_path / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1:{port}\n"
        f"HostKey {node.service.config.host_key.with_suffix('')}\n"
        f"PidFile {tmp_path}/sshd.pid\n"
        f"AuthorizedKeysFile {node.authorized.parent}/%u\n"
        "StrictModes no\n"  # pytest's tmp dirs sit under the world-writable /tmp
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    daemon = process.spawn(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)])
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert daemon.poll() is None and time.monotonic() < deadline, "sshd did not start"
        time.sleep(0.05)
    yield port
    daemon.terminate()
    daemon.wait(timeout=10)


def test_claimed_key_logs_in_with_the_pinned_host_key(
    node: Node, sshd: int, tmp_path: Path
) -> None:
    """After the claim a real sshd accepts the key, checked against the pinned host key."""

    def ssh() -> process.Result:
        return process.run(
            [
                "ssh",
                "-p",
                str(sshd),
                "-i",
                str(node.key_path),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={tmp_path}/known_hosts",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "root@127.0.0.1",
                "echo claimed",
            ],
            check=False,
            timeout=30,
        )

    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{sshd} {node.host_key.line()}\n")
    refused = ssh()
    assert refused.returncode == 255 and "Permission denied" in refused.stderr
    request = claim.ClaimRequest(host="127.0.0.1", port=node.port, ssh_key=node.operator_key)
    result = claim.claim(request, KeystoreSigner(node.owner))
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{sshd} {result.host_key}\n")
    accepted = ssh()
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.strip() == "claimed"


NODE_SIDE_PROBE = """
import json, sys
import xnodectl.nodeside.claim_server, xnodectl.nodeside.gate_server
import xnodectl.nodeside.verify_manifest
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))
"""


def test_node_side_programs_start_without_siwe_or_web3() -> None:
    """siwe imports web3 (about a second); the services load it in the background after start."""
    loaded = set(json.loads(process.run([sys.executable, "-c", NODE_SIDE_PROBE]).stdout))
    assert not loaded & {"siwe", "web3", "eth_account", "pydantic"}


def test_claim_dates_the_message_by_the_node_clock(tmp_path: Path) -> None:
    """A fresh node whose clock is 10 minutes ahead (no time sync yet) can still be claimed."""
    owner = Account.create()
    host = ssh_key(tmp_path, "host")
    operator = sshkeys.parse(ssh_key(tmp_path, "op").with_suffix(".pub").read_text())
    config = claim_server.ClaimConfig(
        owner=owner.address.lower(),
        chain_id=1,
        domains=frozenset(),
        authorized_keys=tmp_path / "ak",
        state_dir=tmp_path / "state",
        host_key=host.with_suffix(".pub"),
    )
    service = claim_server.ClaimService(config, clock=lambda: time.time() + 600)
    server = claim_server.make_server(service, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        request = claim.ClaimRequest(
            host="127.0.0.1", port=server.server_address[1], ssh_key=operator
        )
        assert claim.claim(request, KeystoreSigner(owner)).authorized == operator.fingerprint
    finally:
        server.shutdown()
        server.server_close()


def test_claim_appends_to_existing_keys_without_gluing_lines(node: Node) -> None:
    other = sshkeys.parse(ssh_key(node.key_path.parent, "earlier").with_suffix(".pub").read_text())
    node.authorized.parent.mkdir(parents=True)
    node.authorized.write_text(other.line())  # no trailing newline
    code, answer = call(node.base + "/claim", node.body(node.nonce()))
    assert code == 200, answer
    assert node.authorized.read_text().splitlines() == [other.line(), node.operator_key.line()]


FUZZ_ACCOUNT = Account.create()
FUZZ_POLICY = sign_in.Policy(
    domains=frozenset({"node:8740"}),
    uri_for=lambda d: f"http://{d}/claim",
    chain_id=1,
    allowed=frozenset({FUZZ_ACCOUNT.address.lower()}),
)


@settings(max_examples=150, deadline=None)
@given(
    edits=st.lists(
        st.tuples(
            st.integers(0, 10_000),
            st.sampled_from(
                ["", "x", ":", "\n", " ", "0", "Z", "/", "é", "\r", "\x00", "Chain ID: 5"]
            ),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_altered_message_is_rejected_with_a_reason(edits: list[tuple[int, str]]) -> None:
    """Edited messages never pass and never raise anything but a refusal."""
    message = sign_in.build(
        domain="node:8740",
        uri="http://node:8740/claim",
        address=FUZZ_ACCOUNT.address,
        chain_id=1,
        nonce="0123456789abcdef",
        statement="Authorize SSH key SHA256:x as root.",
    )
    signature = sign(FUZZ_ACCOUNT, message)
    text = message
    for position, insert in edits:
        at = position % len(text)
        text = text[:at] + insert + text[at + 1 :]
    if text == message:
        return
    with pytest.raises(sign_in.Rejected):
        sign_in.verify(text, signature, FUZZ_POLICY)


def test_claim_pinning_keeps_the_operators_comments(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / inv.FILENAME).write_text(
        '# our fleet\n\n# the claimed box\n[nodes.node-a]\nhost = "127.0.0.1" # loopback\n'
    )
    wallet = tmp_path / "wallet.json"
    keystore.create(wallet, "operator password", private_key=bytes(node.owner.key), scrypt_n=2**14)
    monkeypatch.setenv(keystore.PASSWORD_ENV, "operator password")
    result = CliRunner().invoke(
        app,
        ["claim", "127.0.0.1", "--port", str(node.port), "--wallet", str(wallet),
         "--ssh-key", str(node.key_path), "--node", "node-a", "--workspace", str(ws)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    text = (ws / inv.FILENAME).read_text()
    for comment in ("# our fleet", "# the claimed box", '"127.0.0.1" # loopback'):
        assert comment in text, text
    assert inv.load(ws / inv.FILENAME).nodes["node-a"].owner == node.owner.address


def test_claim_refuses_a_bad_node_name_before_signing(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / inv.FILENAME).write_text("")
    monkeypatch.setenv(keystore.PASSWORD_ENV, "unused")
    result = CliRunner().invoke(
        app,
        ["claim", "127.0.0.1", "--port", str(node.port), "--wallet", str(tmp_path / "none.json"),
         "--ssh-key", str(node.key_path), "--node", "Node_A", "--workspace", str(ws)],
    )  # fmt: skip
    assert result.exit_code == 2 and "node name 'Node_A' is not allowed" in result.stderr
    node.assert_nothing_authorized()


def test_claim_refuses_an_expected_key_other_than_the_pinned_one(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    pinned = node.host_key.line().split()[:2]
    (ws / inv.FILENAME).write_text(
        f'[nodes.node-a]\nhost = "127.0.0.1"\nhost_key = "{" ".join(pinned)}"\n'
    )
    monkeypatch.setenv(keystore.PASSWORD_ENV, "unused")
    result = CliRunner().invoke(
        app,
        ["claim", "127.0.0.1", "--port", str(node.port), "--wallet", str(tmp_path / "none.json"),
         "--ssh-key", str(node.key_path), "--node", "node-a", "--workspace", str(ws),
         "--expect-host-key", "SHA256:" + "A" * 43],
    )  # fmt: skip
    assert result.exit_code == 2 and "differs from the inventory's pinned key" in result.stderr
    node.assert_nothing_authorized()


def test_journal_lines_are_escaped() -> None:
    from xnodectl.nodeside.server import printable

    line = printable("GET /\x1b[31m\u202e\u2028é\\ x\x00\x9b")
    assert line == "GET /\\x1b[31m\\u202e\\u2028é\\x5c x\\x00\\x9b"
    assert line.isprintable() and printable("a" * 400).endswith("a...")
