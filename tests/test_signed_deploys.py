"""Owner-signed deploys: manifest unit tests for every refusal, then real test Xnodes.

On the test Xnodes (tests/xnodes.py: real sshd, private Nix stores, the real xnode-activate) the
node requires signed deploys and runs the real `xnode-verify-manifest`. Systems are stand-in
closures (tests/standin.py), not NixOS.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from typer.testing import CliRunner

from tests.standin import StandinFlake
from tests.xnodes import NIX_CONF, Node
from xnodectl import inventory as inv
from xnodectl import process
from xnodectl.cli import app
from xnodectl.nodeside import verify_manifest
from xnodectl.wallet import keystore
from xnodectl.wallet.manifest import build_manifest, canonical_text, sign_manifest
from xnodectl.wallet.signer import KeystoreSigner, recover_address

SYSTEM = "/nix/store/" + "a" * 32 + "-nixos-system-node-a-25.11"
PREVIOUS = "/nix/store/" + "b" * 32 + "-nixos-system-node-a-25.11"
VERIFIER = f"{sys.executable} -m xnodectl.nodeside.verify_manifest"


@pytest.fixture
def owner() -> LocalAccount:
    account: LocalAccount = Account.create()
    return account


def signed(account: LocalAccount, **over: Any) -> dict[str, Any]:
    manifest = build_manifest("node-a", SYSTEM, PREVIOUS)
    manifest.update(over)
    data: dict[str, Any] = json.loads(sign_manifest(manifest, KeystoreSigner(account)))
    return data


def verify(tmp_path: Path, owner: LocalAccount, data: dict[str, Any], **over: Any) -> int:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    args = {
        "--manifest": str(path),
        "--system": SYSTEM,
        "--node": "node-a",
        "--previous": PREVIOUS,
        "--owner": owner.address,
        "--state-dir": str(tmp_path / "st"),
    }
    args.update(over)
    return verify_manifest.main([x for pair in args.items() for x in pair])


def test_manifest_shape_and_canonical_signature(owner: LocalAccount) -> None:
    manifest = build_manifest("node-a", SYSTEM, None, now=1_700_000_000.9)
    assert list(manifest) == ["node", "system", "previous", "time", "nonce"]
    assert manifest["time"] == 1_700_000_000 and manifest["previous"] is None
    assert (
        len(manifest["nonce"]) == 32
        and build_manifest("n", SYSTEM, None)["nonce"] != (manifest["nonce"])
    )
    text = canonical_text(manifest)
    assert text.endswith(json.dumps(manifest, sort_keys=True, separators=(",", ":")))
    assert " " not in text.splitlines()[-1]
    data = json.loads(sign_manifest(manifest, KeystoreSigner(owner)))
    assert set(data) == {"manifest", "signature", "address"}
    assert recover_address(text, data["signature"]) == owner.address == data["address"]
    with pytest.raises(ValueError, match="exactly the fields"):
        sign_manifest({**manifest, "extra": 1}, KeystoreSigner(owner))


def test_accepts_and_audits(
    tmp_path: Path, owner: LocalAccount, capsys: pytest.CaptureFixture[str]
) -> None:
    data = signed(owner)
    assert verify(tmp_path, owner, data) == 0
    assert json.loads(capsys.readouterr().out)["accepted"] is True
    audit = (tmp_path / "st" / "audit.log").read_text().splitlines()
    assert len(audit) == 1
    entry = json.loads(audit[0])
    assert entry["address"] == owner.address.lower() and entry["nonce"] == data["manifest"]["nonce"]
    assert entry["system"] == SYSTEM and entry["signature"] == data["signature"]
    assert (tmp_path / "st" / "nonces" / data["manifest"]["nonce"]).exists()
    # The very same manifest again: a replay.
    assert verify(tmp_path, owner, data) == 1
    assert "already used (replayed manifest)" in capsys.readouterr().err
    assert len((tmp_path / "st" / "audit.log").read_text().splitlines()) == 1


def _tamper(owner: LocalAccount) -> dict[str, Any]:
    data = signed(owner)
    data["manifest"]["system"] = SYSTEM.replace("aaaa", "cccc")
    return data


def _unsigned(owner: LocalAccount) -> dict[str, Any]:
    data = signed(owner)
    del data["signature"]
    return data


Refusal = tuple[Callable[[LocalAccount], dict[str, Any]], dict[str, str], str]
REFUSALS: dict[str, Refusal] = {
    "unsigned": (_unsigned, {}, "unsigned manifest"),
    "foreign signer": (lambda o: signed(Account.create()), {}, "not by the owner"),
    "tampered": (_tamper, {}, "tampered manifest"),
    "tampered, address dropped": (lambda o: {**_tamper(o), "address": ""}, {}, "not by the owner"),
    "wrong node": (signed, {"--node": "node-b"}, "is for node 'node-a', not 'node-b'"),
    "wrong system": (signed, {"--system": PREVIOUS}, "is for system"),
    "node changed since signing": (signed, {"--previous": SYSTEM}, "replayed onto a changed node"),
    "fresh node, manifest expects one": (signed, {"--previous": ""}, "but it runs None"),
    "stale": (lambda o: signed(o, time=int(time.time()) - 301), {}, "stale manifest"),
    "future": (lambda o: signed(o, time=int(time.time()) + 120), {}, "in the future"),
    "extra field": (
        lambda o: {**signed(o), "manifest": {**signed(o)["manifest"], "x": 1}},
        {},
        "fields must be exactly",
    ),
    "bad nonce": (lambda o: signed(o, nonce="../../etc/passwd"), {}, "nonce must be"),
    "bool time": (lambda o: signed(o, time=True), {}, "time must be an integer"),
    "garbage signature": (lambda o: {**signed(o), "signature": "0xzz"}, {}, "bad manifest"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals(
    case: str, tmp_path: Path, owner: LocalAccount, capsys: pytest.CaptureFixture[str]
) -> None:
    make, args, reason = REFUSALS[case]
    assert verify(tmp_path, owner, make(owner), **args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0]
    assert not (tmp_path / "st" / "audit.log").exists()


def test_refuses_without_owner_or_file(
    tmp_path: Path, owner: LocalAccount, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(signed(owner)))
    code = verify_manifest.main(
        [
            "--manifest",
            str(path),
            "--system",
            SYSTEM,
            "--node",
            "node-a",
            "--previous",
            PREVIOUS,
            "--owner-file",
            str(tmp_path / "none"),
        ]
    )
    assert code == 1 and "no owner address" in capsys.readouterr().err
    path.write_text("not json")
    assert verify(tmp_path, owner, {}) == 1  # {} has no manifest object
    code = verify_manifest.main(
        ["--manifest", str(path), "--system", SYSTEM, "--node", "node-a", "--owner", owner.address]
    )
    assert code == 1 and "not JSON" in capsys.readouterr().err.splitlines()[-1]


def test_console_script_exit_codes(tmp_path: Path, owner: LocalAccount) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(signed(owner)))
    argv = [
        *VERIFIER.split(),
        "--manifest",
        str(path),
        "--system",
        SYSTEM,
        "--node",
        "node-a",
        "--previous",
        PREVIOUS,
        "--owner",
        owner.address,
        "--state-dir",
        str(tmp_path / "s"),
    ]
    assert process.run(argv, check=False).returncode == 0
    again = process.run(argv, check=False)
    assert again.returncode == 1 and again.stderr.strip().endswith("(replayed manifest)")


# ---- against real test Xnodes --------------------------------------------------------------------


def require_signed(node: Node, owner: LocalAccount) -> None:
    etc = node.workdir / "etc-xnode"
    (etc / "owner-address").write_text(owner.address + "\n")
    (etc / "require-signed-deploys").touch()
    (etc / "verify-manifest-cmd").write_text(VERIFIER + "\n")


def workspace(tmp_path: Path, node: Node, wallet: Path) -> StandinFlake:
    flake = StandinFlake(tmp_path / "ws", [node.name]).write()
    inventory = inv.Inventory(
        settings=inv.Settings(ssh_key=str(node.key), signer_keystore=str(wallet))
    )
    inventory.nodes[node.name] = inv.Node(
        host=node.host, port=node.port, host_key=node.host_key, signed_deploys=True
    )
    inv.save(inventory, flake.directory / inv.FILENAME)
    return flake


def deploy(flake: StandinFlake) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        app,
        [
            "deploy",
            "--json",
            "--workspace",
            str(flake.directory),
            "--confirm-timeout",
            "5",
            "--all",
        ],
    )
    assert "Traceback" not in result.output
    reports = [json.loads(x) for x in result.stdout.splitlines() if '"report"' in x]
    report = next(r for r in reports if r.get("type") == "report")
    return result.exit_code, report["nodes"][0]


@pytest.mark.nodes
def test_engine_signs_and_node_refuses_foreign_wallet(
    xnode_factory: Callable[..., list[Node]],
    tmp_path: Path,
    owner: LocalAccount,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (node,) = xnode_factory(1)
    require_signed(node, owner)
    monkeypatch.setenv("NIX_CONFIG", NIX_CONF)
    monkeypatch.setenv("XNODECTL_WALLET_PASSWORD", "owner password")
    wallet = tmp_path / "owner.json"
    keystore.create(wallet, "owner password", private_key=bytes(owner.key), scrypt_n=2**14)
    flake = workspace(tmp_path, node, wallet)
    code, report = deploy(flake)
    assert code == 0, report
    assert node.current_system() == report["system_after"] and node.generation() == 1
    audit = node.local("cat /var/lib/xnode/deploy/manifests/audit.log").stdout.splitlines()
    assert [json.loads(a)["address"] for a in audit] == [owner.address.lower()]
    assert json.loads(audit[0])["system"] == report["system_after"]

    # `xnodectl rollback` on a signed node signs the rollback with the same keystore.
    flake.configure(version="2")
    code, report = deploy(flake)
    assert code == 0 and node.generation() == 2, report
    result = CliRunner().invoke(
        app, ["rollback", "--node", node.name, "--workspace", str(flake.directory)]
    )
    assert result.exit_code == 0, result.stderr
    assert node.generation() == 1 and node.current_system() == report["system_before"]
    audit = node.local("cat /var/lib/xnode/deploy/manifests/audit.log").stdout.splitlines()
    assert json.loads(audit[-1])["system"] == report["system_before"]
    flake.configure(version="1")

    # The same workspace signing with another wallet: refused, the node keeps its generation.
    foreign = tmp_path / "foreign.json"
    keystore.create(foreign, "owner password", scrypt_n=2**14)
    inventory = inv.load(flake.directory / inv.FILENAME)
    inventory.settings.signer_keystore = str(foreign)
    inv.save(inventory, flake.directory / inv.FILENAME)
    before = (node.current_system(), node.generation(), node.activations())
    flake.configure(version="2")
    code, report = deploy(flake)
    assert code == 4
    assert "refused: manifest signed by" in json.dumps(report)
    assert (node.current_system(), node.generation(), node.activations()) == before


def _begin(
    node: Node, system: str, deploy_id: str, manifest: bytes | None
) -> tuple[int, dict[str, Any]]:
    extra: list[str] = []
    if manifest is not None:
        node.put(f"/tmp/{deploy_id}.json", manifest)
        extra = ["--manifest", f"/tmp/{deploy_id}.json"]
    return node.activate_helper(
        "begin", "--system", system, "--deploy-id", deploy_id, "--confirm-timeout", "30", *extra
    )


def _deploy(node: Node, system: str, deploy_id: str, manifest: bytes) -> None:
    code, out = _begin(node, system, deploy_id, manifest)
    assert code == 0, out
    assert node.activate_helper("wait", "--deploy-id", deploy_id, "--timeout", "10")[1] == {
        "state": "activated"
    }
    assert node.activate_helper("confirm", "--deploy-id", deploy_id)[0] == 0


@pytest.mark.nodes
def test_helper_refuses_unsigned_replayed_stale(
    xnode_factory: Callable[..., list[Node]],
    tmp_path: Path,
    owner: LocalAccount,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Drives `xnode-activate begin --manifest` over SSH, as the engine does."""
    (node,) = xnode_factory(1)
    require_signed(node, owner)
    monkeypatch.setenv("NIX_CONFIG", NIX_CONF)
    flake = StandinFlake(tmp_path / "flake", ["any"]).write()
    v1 = flake.build()
    flake.configure(version="2")
    v2 = flake.build()
    process.run(["nix", "copy", "--to", node.store_uri, v1, v2], env=node.nix_env())
    me = KeystoreSigner(owner)
    _deploy(node, v1, "first", sign_manifest(build_manifest(node.name, v1, None), me))
    to_v2 = sign_manifest(build_manifest(node.name, v2, v1), me)
    _deploy(node, v2, "second", to_v2)
    # Signed deploys cover rollback (issue 13 item 8): unsigned or foreign, refused, no change.
    before = (node.current_system(), node.generation(), node.activations())
    code, out = node.activate_helper("rollback", "--to", "1")
    assert code == 4 and "requires owner-signed deploys" in str(out["error"]), out
    node.put("/tmp/back-foreign.json", sign_manifest(
        build_manifest(node.name, v1, v2), KeystoreSigner(Account.create())))  # fmt: skip
    code, out = node.activate_helper(
        "rollback", "--to", "1", "--manifest", "/tmp/back-foreign.json"
    )
    assert code == 4 and "not by the owner" in str(out["error"]), out
    assert (node.current_system(), node.generation(), node.activations()) == before
    node.put("/tmp/back.json", sign_manifest(build_manifest(node.name, v1, v2), me))
    code, out = node.activate_helper("rollback", "--to", "1", "--manifest", "/tmp/back.json")
    assert code == 0, out  # back on v1: `to_v2` matches the node again
    assert node.current_system() == v1
    state = (node.current_system(), node.generation(), node.activations())

    unsigned = json.loads(to_v2)
    del unsigned["signature"]
    stale = sign_manifest(build_manifest(node.name, v2, v1, now=time.time() - 900), me)
    cases = {
        "no manifest": (None, "requires owner-signed deploys"),
        "unsigned": (json.dumps(unsigned).encode(), "refused: unsigned manifest"),
        "replayed": (to_v2, "refused: manifest nonce was already used"),
        "stale": (stale, "refused: stale manifest"),
        "foreign": (
            sign_manifest(build_manifest(node.name, v2, v1), KeystoreSigner(Account.create())),
            "not by the owner",
        ),
    }
    for deploy_id, (manifest, reason) in cases.items():
        code, out = _begin(node, v2, deploy_id.replace(" ", "-"), manifest)
        assert code == 4 and reason in str(out["error"]), (deploy_id, out)
        assert (node.current_system(), node.generation(), node.activations()) == state
    audit = node.local("wc -l < /var/lib/xnode/deploy/manifests/audit.log").stdout.strip()
    assert audit == "3"  # two deploys and the signed rollback
