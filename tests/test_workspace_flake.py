"""The workspace's xnodectl flake input carries only what git tracks (issue: a `path:` input
copied the whole checkout, .venv and .git included, 226 MB, into the store on every change).

Measured with the real nix in a private store: the first fetch of a checkout, a second fetch of
the same checkout (0 bytes), and a fetch after one tracked file changed (under 5 MB)."""

from __future__ import annotations

import json
from pathlib import Path

from xnodectl import process, workspace

ROOT = Path(__file__).resolve().parent.parent
FIVE_MB = 5 * 1024 * 1024


def _store_bytes(store: Path) -> int:
    return sum(f.stat().st_size for f in (store / "nix" / "store").rglob("*") if f.is_file())


def _fetch(url: str, store: Path) -> str:
    env = {"NIX_CONFIG": f"experimental-features = nix-command flakes\nstore = {store}\n"}
    result = process.run(["nix", "flake", "metadata", "--json", url], env=env, timeout=120)
    return str(json.loads(result.stdout)["path"])


def _checkout(tmp_path: Path) -> Path:
    """A checkout as a developer has it: tracked sources, a 20 MB ignored .venv, a .git."""
    src = tmp_path / "xnodectl"
    (src / "templates" / "t").mkdir(parents=True)
    (src / "flake.nix").write_text("{ outputs = { self }: { }; }\n")
    (src / "templates" / "t" / "module.nix.j2").write_text("{ }\n")
    (src / ".gitignore").write_text(".venv/\n")
    (src / ".venv").mkdir()
    (src / ".venv" / "big").write_bytes(b"\0" * (20 * 1024 * 1024))
    process.run(["git", "init", "-q", str(src)])
    process.run(["git", "-C", str(src), "add", "-A"])
    git = ["git", "-C", str(src), "-c", "user.email=t@t", "-c", "user.name=t"]
    process.run([*git, "commit", "-qm", "init"])
    return src


def test_this_checkout_is_a_git_flake_input() -> None:
    assert workspace.checkout_flake(ROOT) == f"git+file://{ROOT}"
    assert workspace.checkout_flake(ROOT / "docs") is None


def test_tracked_files_of_this_checkout_are_under_5_mb() -> None:
    files = process.run(["git", "-C", str(ROOT), "ls-files", "-z"]).stdout.split("\0")
    size = sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())
    assert size < FIVE_MB, size


def test_store_growth_unchanged_zero_changed_small(tmp_path: Path) -> None:
    src = _checkout(tmp_path)
    url = workspace.checkout_flake(src)
    assert url is not None and url.startswith("git+file://")
    store = tmp_path / "store"
    first = _fetch(url, store)
    after_first = _store_bytes(store)
    assert after_first < FIVE_MB  # the ignored 20 MB .venv stayed out
    assert not (Path(str(store) + first) / ".venv").exists()
    assert _fetch(url, store) == first
    assert _store_bytes(store) == after_first  # unchanged checkout: 0 bytes
    (src / "templates" / "t" / "module.nix.j2").write_text("{ changed = true; }\n")
    assert _fetch(url, store) != first
    assert 0 < _store_bytes(store) - after_first < FIVE_MB  # a dirty tracked file: a new copy


def test_a_path_input_would_have_copied_the_venv(tmp_path: Path) -> None:
    """The defect, shown: the same checkout as `path:` carries the ignored .venv."""
    src = _checkout(tmp_path)
    store = tmp_path / "store"
    _fetch(f"path:{src}", store)
    assert _store_bytes(store) > 20 * 1024 * 1024


def test_the_nixops4_root_follows_no_input_nixops4_nixos_lacks() -> None:
    """nixops4-nixos has no `nixops4` input: a `follows` for it fails to lock."""
    text = (ROOT / "xnodectl" / "data" / "workspace" / "nixops4.flake.nix.j2").read_text()
    assert "inputs.nixops4-nixos.inputs." not in text
