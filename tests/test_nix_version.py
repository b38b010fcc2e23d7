"""The Nix version check: anything that evaluates the pinned nixpkgs refuses, in one line and
before evaluating, a nix older than what that nixpkgs states (lib/minver.nix, facts/nixpkgs.json).
Flakes that do not evaluate nixpkgs (the tests' stand-in fixtures) still run on this machine's 2.8.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnodectl import nix
from xnodectl.cli import app
from xnodectl.errors import ExternalError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake_nix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A `nix` first on PATH that reports a version (written to ./version) and fails otherwise."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nix"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then echo "nix (Nix) $(cat {bin_dir}/version)"; exit 0; fi\n'
        "echo 'error: this stand-in nix only reports its version' >&2; exit 1\n"
    )
    script.chmod(0o755)
    (bin_dir / "version").write_text("2.8.0")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    nix.installed_version.cache_clear()
    yield bin_dir
    nix.installed_version.cache_clear()


def _flake(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "flake"
    d.mkdir(exist_ok=True)
    (d / "flake.nix").write_text(text)
    return d


def test_the_minimum_is_the_pins_own() -> None:
    facts = json.loads((ROOT / "facts" / "nixpkgs.json").read_text())
    assert nix.MINIMUM_NIX == facts["minimumNixVersion"]


def test_an_old_nix_is_refused_for_a_nixpkgs_flake(fake_nix: Path, tmp_path: Path) -> None:
    flake = _flake(tmp_path, '{ inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05"; }')
    with pytest.raises(ExternalError) as caught:
        nix.require_version(f"{flake}#nixosConfigurations.a.config.system.build.toplevel")
    assert str(caught.value.message) == (
        f"nix 2.8.0 is too old to evaluate the pinned nixpkgs (it needs nix >= {nix.MINIMUM_NIX})"
    )
    assert caught.value.hint is not None
    assert "experimental-features = nix-command flakes" in caught.value.hint
    assert "nixos.org/nix/install" in caught.value.hint


def test_a_current_nix_passes(fake_nix: Path, tmp_path: Path) -> None:
    (fake_nix / "version").write_text("2.24.10")
    flake = _flake(tmp_path, '{ inputs.nixpkgs.url = "github:NixOS/nixpkgs"; }')
    nix.require_version(f"path:{flake}#x")
    (fake_nix / "version").write_text("2.18.0")
    nix.installed_version.cache_clear()
    nix.require_version(f"git+file://{flake}#x")


def test_fixture_flakes_without_nixpkgs_run_on_any_nix(fake_nix: Path, tmp_path: Path) -> None:
    flake = _flake(tmp_path, "{ outputs = { self }: { }; }")
    nix.require_version(f"{flake}#x")  # no nixpkgs: the version is not even asked
    nix.require_version("github:owner/repo#x")  # not local: nothing to read, nix will say


def test_an_image_flake_needs_the_version_when_its_xnodectl_evaluates_nixpkgs(
    fake_nix: Path, tmp_path: Path
) -> None:
    image = _flake(tmp_path, f'{{ inputs.xnodectl.url = "git+file://{ROOT}"; }}')
    assert nix.evaluates_nixpkgs(f"{image}#packages.x86_64-linux.default")
    with pytest.raises(ExternalError, match="too old"):
        nix.require_version(f"{image}#packages.x86_64-linux.default")
    fixture = tmp_path / "fixture"
    fixture.mkdir()
    (fixture / "flake.nix").write_text("{ outputs = { self }: { }; }")
    (image / "flake.nix").write_text(f'{{ inputs.xnodectl.url = "path:{fixture}"; }}')
    assert not nix.evaluates_nixpkgs(str(image))
    (image / "flake.nix").write_text('{ inputs.xnodectl.url = "github:xnodectl/xnodectl"; }')
    assert nix.evaluates_nixpkgs(str(image))


def test_a_workspace_plan_says_why_nothing_could_be_built(fake_nix: Path, tmp_path: Path) -> None:
    """Every workspace evaluates nixpkgs: the check applies; the plan reports it per node."""
    ws = tmp_path / "ws"
    runner = CliRunner()
    result = runner.invoke(app, ["init", str(ws), "template=ipfs"])
    assert result.exit_code == 0, result.output
    assert nix.evaluates_nixpkgs(str(ws))
    result = runner.invoke(app, ["deploy", "--plan"], env={"XNODECTL_WORKSPACE": str(ws)})
    assert "nix 2.8.0 is too old to evaluate the pinned nixpkgs" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
