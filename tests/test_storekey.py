"""The workspace owner's Nix store key (xnodectl/storekey.py) and the nix.py signing functions:
real `nix key` / `nix store sign` / `nix path-info --sigs` (Nix 2.8 here), exact argv."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.standin import StandinFlake
from tests.xnodes import NIX_ENV
from xnodectl import inventory as inv
from xnodectl import nixsign, process, storekey
from xnodectl.errors import InventoryError, UsageError
from xnodectl.workspace import GITIGNORE, Workspace

FLAGS = ["nix", "--extra-experimental-features", "nix-command flakes"]


def workspace(tmp_path: Path, *, git: bool = True, ignore: str = GITIGNORE) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    ws = Workspace(root)
    ws.save(inv.Inventory())
    if git:
        process.run(["git", "init", "-q", str(root)])
        (root / ".gitignore").write_text(ignore)
    return ws


def test_argv() -> None:
    assert nixsign.generate_secret_key_argv("k-1") == [
        *FLAGS, "key", "generate-secret", "--key-name", "k-1",
    ]  # fmt: skip
    assert nixsign.public_key_argv() == [*FLAGS, "key", "convert-secret-to-public"]
    assert nixsign.sign_argv(Path("/s/k"), ["/nix/store/x"]) == [
        *FLAGS, "store", "sign", "--key-file", "/s/k", "--recursive", "/nix/store/x",
    ]  # fmt: skip
    assert nixsign.signatures_argv(["/nix/store/x"], store="ssh-ng://h") == [
        *FLAGS, "path-info", "--json", "--sigs", "--recursive", "--store", "ssh-ng://h",
        "/nix/store/x",
    ]  # fmt: skip
    assert "--no-check-sigs" not in nixsign.copy_from_argv("ssh://p", ["/nix/store/x"])


def test_parse_signatures_both_json_shapes() -> None:
    old = json.dumps(
        [{"path": "/nix/store/a", "signatures": ["k-1:AAA"]}, {"path": "/nix/store/b"}]
    )
    new = json.dumps({"/nix/store/a": {"signatures": ["k-1:AAA"]}, "/nix/store/c": None})
    assert nixsign.parse_signatures(old, []) == {"/nix/store/a": ("k-1:AAA",), "/nix/store/b": ()}
    assert nixsign.parse_signatures(new, []) == {"/nix/store/a": ("k-1:AAA",)}
    assert nixsign.signer_name("k-1:AAA") == "k-1"


def test_ensure_creates_once_private_and_lists_the_public_key(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    key = storekey.ensure(ws)
    secret = storekey.secret_path(ws)
    assert secret.parent == ws.root / "secrets"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert key.public.startswith(key.name + ":") and key.public != secret.read_text().strip()
    assert ws.load().settings.store_keys == [key.public]
    assert storekey.ensure(ws) == key  # idempotent
    assert key.public in (ws.root / "inventory.toml").read_text()
    assert secret.read_text().strip() not in (ws.root / "inventory.toml").read_text()
    # git never sees it
    status = process.run(["git", "-C", str(ws.root), "status", "--porcelain", "--ignored"])
    assert "!! secrets/" in status.stdout


def test_rotate_and_retire(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    old = storekey.ensure(ws)
    new = storekey.rotate(ws)
    assert new.public != old.public
    assert ws.load().settings.store_keys == [new.public, old.public]
    assert storekey.retire(ws) == [old.public]
    assert ws.load().settings.store_keys == [new.public]


def test_refuses_a_workspace_that_does_not_ignore_secrets(tmp_path: Path) -> None:
    ws = workspace(tmp_path, ignore="result*\n")
    with pytest.raises(UsageError, match="not git-ignored"):
        storekey.ensure(ws)
    assert not storekey.secret_path(ws).exists()


def test_refuses_an_exposed_or_damaged_key(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    key = storekey.ensure(ws)
    key.secret_file.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others"):
        storekey.load(ws)
    key.secret_file.chmod(0o600)
    key.secret_file.write_text("not a key\n")
    with pytest.raises(UsageError, match="not a Nix secret signing key"):
        storekey.load(ws)


def test_inventory_refuses_a_secret_or_garbage_as_store_key(tmp_path: Path) -> None:
    secret = nixsign.generate_secret_key("k-1")
    for bad in (secret, "k-1:short", "no-colon"):
        text = f'[settings]\nstore_keys = ["{bad}"]\n'
        with pytest.raises(InventoryError, match="not a Nix public key"):
            inv.parse(text, tmp_path / "inventory.toml")


def test_sign_and_read_signatures_for_real(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    key = storekey.ensure(ws)
    flake = StandinFlake(tmp_path / "flake", ["n"], size=3, leaf_salt="storekey").write()
    system = flake.build("n")
    before = asyncio.run(nixsign.signatures([system], env=NIX_ENV))
    assert len(before) == 4 and not any(
        nixsign.signer_name(s) == key.name for sigs in before.values() for s in sigs
    )
    asyncio.run(nixsign.sign(key.secret_file, [system], env=NIX_ENV))
    after = asyncio.run(nixsign.signatures([system], env=NIX_ENV))
    assert all(key.name in {nixsign.signer_name(s) for s in sigs} for sigs in after.values())


def test_keygen_never_puts_the_secret_in_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    real = process.run

    def spy(argv: list[str], **kw: Any) -> process.Result:
        seen.append(argv)
        return real(argv, **kw)

    monkeypatch.setattr(process, "run", spy)
    secret = nixsign.generate_secret_key("k-1")
    nixsign.public_key(secret)
    assert all(secret not in " ".join(argv) for argv in seen)
