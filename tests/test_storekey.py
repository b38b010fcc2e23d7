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


def test_public_half_without_a_subprocess_matches_nix() -> None:
    for name in ("k-1", "xnode-owner-0a1b2c3d"):
        secret = nixsign.generate_secret_key(name)
        assert nixsign.public_of(secret) == nixsign.public_key(secret)
    assert nixsign.public_of("k-1:" + "A" * 40) is None
    assert nixsign.public_of("no-colon") is None
    assert nixsign.public_of("k-1:%%%") is None


def test_sign_argv_of_listed_paths_only() -> None:
    assert nixsign.sign_argv(Path("/s/k"), ["/nix/store/a", "/nix/store/b"], recursive=False) == [
        *FLAGS, "store", "sign", "--key-file", "/s/k", "/nix/store/a", "/nix/store/b",
    ]  # fmt: skip


def test_refuses_a_workspace_outside_git(tmp_path: Path) -> None:
    """A flake outside git is copied whole into the store: the key would go with it."""
    ws = workspace(tmp_path, git=False)
    with pytest.raises(UsageError, match="not in a git repository"):
        storekey.ensure(ws)
    assert not storekey.secret_path(ws).exists()


def test_a_workspace_inside_a_repository_is_checked_there(tmp_path: Path) -> None:
    """A workspace in a subdirectory of a git repository: the flake takes that repository's
    tracked files, so what counts is whether the repository ignores its secrets/."""
    repo = tmp_path / "repo"
    repo.mkdir()
    process.run(["git", "init", "-q", str(repo)])
    root = repo / "fleet"
    root.mkdir()
    ws = Workspace(root)
    ws.save(inv.Inventory())
    with pytest.raises(UsageError, match="not git-ignored"):
        storekey.ensure(ws)
    (repo / ".gitignore").write_text("fleet/secrets/\n")
    assert storekey.ensure(ws).secret_file == root / "secrets" / "nix-store-key"


def _no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(argv: list[str], **_kw: Any) -> process.Result:
        raise AssertionError(f"unexpected subprocess: {argv}")

    monkeypatch.setattr(process, "run", refuse)


def test_deploy_of_a_workspace_with_its_key_costs_no_subprocess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ws = workspace(tmp_path)
    key = storekey.ensure(ws)
    inventory = ws.load()
    _no_subprocess(monkeypatch)
    with caplog.at_level("WARNING"):
        assert storekey.for_deploy(ws, inventory, required=False) == key.secret_file
        assert storekey.for_deploy(ws, inventory, required=True) == key.secret_file
    assert not caplog.records


def test_deploy_of_an_older_workspace_creates_the_key_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ws = workspace(tmp_path)
    with caplog.at_level("WARNING"):
        signer = storekey.for_deploy(ws, ws.load(), required=False)
    assert signer == storekey.secret_path(ws)
    assert stat.S_IMODE(signer.stat().st_mode) == 0o600
    key = storekey.load(ws)
    assert key is not None and ws.load().settings.store_keys == [key.public]
    [record] = caplog.records
    assert "created the owner store signing key " + key.name in record.getMessage()
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert storekey.for_deploy(ws, ws.load(), required=False) == signer
    assert not caplog.records  # once


def test_deploy_lists_a_key_the_inventory_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ws = workspace(tmp_path)
    key = storekey.ensure(ws)
    with ws.edit() as inventory:
        inventory.settings.store_keys = []
    with caplog.at_level("WARNING"):
        assert storekey.for_deploy(ws, ws.load(), required=False) == key.secret_file
    assert ws.load().settings.store_keys == [key.public]
    assert "listed the owner store key" in caplog.text


def test_deploy_of_a_workspace_that_cannot_hold_a_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """secrets/ not git-ignored: a plain deploy goes on unsigned and says why; --fan-out/--via
    (required) refuse; no key file either way."""
    ws = workspace(tmp_path, ignore="result*\n")
    with caplog.at_level("WARNING"):
        assert storekey.for_deploy(ws, ws.load(), required=False) is None
    assert "closures are not signed" in caplog.text and "not git-ignored" in caplog.text
    with pytest.raises(UsageError, match="not git-ignored"):
        storekey.for_deploy(ws, ws.load(), required=True)
    assert not storekey.secret_path(ws).exists()
    assert ws.load().settings.store_keys == []


FAKE_NIXPKGS = """{ outputs = { self }: { lib = {
  optional = c: x: if c then [ x ] else [ ];
  hasSuffix = suffix: s: let n = builtins.stringLength s; m = builtins.stringLength suffix;
    in n >= m && builtins.substring (n - m) m s == suffix;
}; }; }
"""
# mkXnode returns what it was given: the test reads the storeKeys the workspace flake passes it
# (xnodeos/mk-xnode.nix sets xnode.trust.storeKeys from them; tests/test_trust_module.py checks
# that and what modules/trust.nix makes of them).
FAKE_XNODECTL = """{ inputs.nixpkgs.url = "path:@NIXPKGS@";
  outputs = { self, nixpkgs }: { lib.mkXnode = args: args; }; }
"""


def _fake_xnodectl(tmp_path: Path) -> Path:
    nixpkgs = tmp_path / "fake-nixpkgs"
    nixpkgs.mkdir()
    (nixpkgs / "flake.nix").write_text(FAKE_NIXPKGS)
    xnodectl = tmp_path / "fake-xnodectl"
    xnodectl.mkdir()
    (xnodectl / "flake.nix").write_text(FAKE_XNODECTL.replace("@NIXPKGS@", str(nixpkgs)))
    return xnodectl


def test_init_makes_the_key_the_nodes_trust_and_keeps_it_out_of_git_and_the_store(
    tmp_path: Path,
) -> None:
    """`xnodectl init`: secrets/nix-store-key (0600, git-ignored), its public half in the
    inventory; the workspace flake, evaluated by the real nix in a private store, hands that
    public key to mkXnode and its source in the store holds no secrets/."""
    from typer.testing import CliRunner

    from xnodectl.cli import app

    root = tmp_path / "ws"
    result = CliRunner().invoke(app, ["init", str(root)])
    assert result.exit_code == 0, result.stderr
    ws = Workspace(root)
    key = storekey.load(ws)
    assert key is not None and f"owner store key {key.name}" in result.stderr
    assert stat.S_IMODE(key.secret_file.stat().st_mode) == 0o600
    assert ws.load().settings.store_keys == [key.public]
    secret = key.secret_file.read_text().strip()
    assert secret not in (root / "inventory.toml").read_text()
    tracked = process.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard"])
    assert "inventory.toml" in tracked.stdout and "secrets" not in tracked.stdout

    store = tmp_path / "store"
    env = {"NIX_CONFIG": f"experimental-features = nix-command flakes\nstore = {store}\n"}
    override = ["--override-input", "xnodectl", f"path:{_fake_xnodectl(tmp_path)}"]
    flags = [*override, "--no-write-lock-file"]
    attr = f"{root}#nixosConfigurations.local.storeKeys"
    evaluated = process.run(["nix", "eval", "--json", *flags, attr], env=env, timeout=120)
    assert json.loads(evaluated.stdout) == [key.public]
    meta = process.run(["nix", "flake", "metadata", "--json", *flags, str(root)], env=env)
    source = store / json.loads(meta.stdout)["path"].lstrip("/")
    assert (source / "inventory.toml").is_file() and not (source / "secrets").exists()
    assert not any(secret in f.read_text() for f in source.rglob("*") if f.is_file())


def test_an_image_trusts_the_workspace_key_made_for_a_build_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert storekey.for_image(None, create=True) == []  # outside a workspace: none
    ws = workspace(tmp_path)
    with caplog.at_level("WARNING"):
        assert storekey.for_image(ws, create=False) == []  # a dry run creates nothing
    assert not storekey.secret_path(ws).exists()
    assert "the build creates it" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        trusted = storekey.for_image(ws, create=True)
    key = storekey.load(ws)
    assert key is not None and trusted == [key.public] == ws.load().settings.store_keys
    assert "created the owner store signing key " + key.name in caplog.text
    caplog.clear()
    assert storekey.for_image(ws, create=True) == trusted and not caplog.records
    (tmp_path / "bare").mkdir()
    bare = workspace(tmp_path / "bare", git=False)
    with caplog.at_level("WARNING"):
        assert storekey.for_image(bare, create=True) == []
    assert "the image trusts no owner store key" in caplog.text
    assert not storekey.secret_path(bare).exists()


def test_image_build_in_an_older_workspace(tmp_path: Path) -> None:
    """The CLI: a dry run or bad input leaves the workspace without a key; a dry run's flake
    trusts the keys the workspace lists."""
    from typer.testing import CliRunner

    from xnodectl.cli import app as cli

    ws = workspace(tmp_path)
    env = {"XNODECTL_WORKSPACE": str(ws.root)}
    owner = "0x" + "ab" * 20
    bad = CliRunner().invoke(cli, ["image", "build", "--owner", "0x12"], env=env)
    assert bad.exit_code != 0 and not storekey.secret_path(ws).exists()
    dry = CliRunner().invoke(
        cli, ["image", "build", "--owner", owner, "--dry-run", "--json"], env=env
    )
    assert dry.exit_code == 0, dry.output
    assert not storekey.secret_path(ws).exists()
    key = storekey.ensure(ws)
    dry = CliRunner().invoke(
        cli, ["image", "build", "--owner", owner, "--dry-run", "--json"], env=env
    )
    assert key.public in json.loads(dry.stdout)["files"]["identity.nix"]
