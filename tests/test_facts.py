"""pyproject.toml's bounds against the pinned nixpkgs (facts/python-packages.json).

nixpkgs' Python runtime-dependency check fails a build whose bounds the packaged versions do not
meet, so a bound above what the pin carries breaks `packages.xnodectl` and every VM test.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.nixcheck import eval_json
from xnodectl import process

ROOT = Path(__file__).resolve().parent.parent
FACTS = json.loads((ROOT / "facts" / "python-packages.json").read_text())


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def unmet(requirements: list[str], facts: dict[str, Any]) -> list[str]:
    """Requirements the pinned versions cannot meet (or that have no fact at all)."""
    known = {canonicalize_name(n): e["version"] for n, e in facts["packages"].items()}
    built = facts["built_by_package_nix"]
    known |= {canonicalize_name(n): v for n, v in built.items() if n != "about"}
    problems = []
    for text in requirements:
        req = Requirement(text)
        version = known.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req.name}: no fact (add it to facts/python-packages.json)")
        elif not req.specifier.contains(Version(version), prereleases=True):
            problems.append(f"{req.name}{req.specifier}: the pin carries {version}")
    return problems


def test_runtime_and_build_bounds_are_met_by_the_pin() -> None:
    project = _pyproject()
    assert unmet(project["project"]["dependencies"], FACTS) == []
    assert unmet(project["build-system"]["requires"], FACTS) == []


def test_the_check_catches_the_typer_bound_that_broke_the_build() -> None:
    assert unmet(["typer>=0.29"], FACTS) == ["typer>=0.29: the pin carries 0.27.2"]
    assert unmet(["left-pad>=1"], FACTS) == [
        "left-pad: no fact (add it to facts/python-packages.json)"
    ]


def _package_nix() -> str:
    return (ROOT / "package.nix").read_text()


def test_package_nix_builds_the_versions_recorded() -> None:
    text = _package_nix()
    for name, version in FACTS["built_by_package_nix"].items():
        if name == "about":
            continue
        assert re.search(rf'pname = "{name}";\s*version = "{re.escape(version)}";', text), name


def test_every_runtime_dependency_is_in_package_nix() -> None:
    """A dependency added to pyproject.toml but not to package.nix fails the runtime-deps check."""
    block = re.search(r"dependencies = with python3Packages; \[(.*?)\]", _package_nix(), re.S)
    assert block is not None
    attrs = set(block.group(1).split()) | {"siwe", "abnf"}
    for text in _pyproject()["project"]["dependencies"]:
        name = canonicalize_name(Requirement(text).name)
        entry = FACTS["packages"].get(name)
        attr = entry["attr"] if entry else name
        assert attr in attrs, f"{name} is in pyproject.toml but not in package.nix's dependencies"


def test_every_fact_names_its_source() -> None:
    for name, entry in FACTS["packages"].items():
        source = entry["source"]
        assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]), name
        assert source["path"] == f"pkgs/development/python-modules/{entry['attr']}/default.nix"


def test_no_nix_file_uses_an_alias_of_the_pin() -> None:
    """nixpkgs aliases (pkgs/top-level/aliases.nix) warn or vanish between releases."""
    aliases = json.loads((ROOT / "facts" / "nixpkgs.json").read_text())["aliases"]
    files = [p for p in ROOT.rglob("*.nix") if ".venv" not in p.parts]
    files += list((ROOT / "templates").rglob("*.j2"))
    for path in files:
        text = path.read_text()
        for alias in aliases:
            assert not re.search(rf"\bpkgs\.{re.escape(alias)}\b", text), f"{path}: pkgs.{alias}"


def _generated_as_recorded() -> dict[str, Any]:
    """What facts/generate.nix prints when the pin agrees with every recorded fact."""
    options = json.loads((ROOT / "facts" / "nixos-options.json").read_text())["options"]
    nixpkgs = json.loads((ROOT / "facts" / "nixpkgs.json").read_text())
    return {
        "options": {
            p: {"type": e["type"], **{k: e[k] for k in ("default", "readOnly") if k in e}}
            for p, e in options.items()
        },
        "python": {n: e["version"] for n, e in FACTS["packages"].items()},
        "minimumNixVersion": nixpkgs["minimumNixVersion"],
        "nixosRelease": nixpkgs["nixosRelease"],
        "aliases": dict.fromkeys(nixpkgs["aliases"], True),
    }


def test_compare_reports_every_difference_and_nothing_else(tmp_path: Path) -> None:
    generated = tmp_path / "generated.json"
    argv = [sys.executable, str(ROOT / "facts" / "compare.py"), str(generated)]
    same = _generated_as_recorded()
    generated.write_text(json.dumps(same))
    result = process.run(argv, check=False)
    assert result.returncode == 0 and result.stdout == "", result.stdout
    changed = json.loads(json.dumps(same))
    changed["python"]["typer"] = "0.26.0"
    changed["options"]["services.geth.<name>.syncmode"]["type"]["values"] = ["snap", "full"]
    changed["aliases"]["nixfmt-rfc-style"] = False
    generated.write_text(json.dumps(changed))
    result = process.run(argv, check=False)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 3, lines
    assert "python typer: 0.27.2 -> 0.26.0" in lines
    assert any(line.startswith("option services.geth.<name>.syncmode: type") for line in lines)


def test_the_generators_type_reading_agrees_with_the_option_check() -> None:
    """facts/types.nix (what CI's generator applies to the real lib of the pin) walked over the
    option declarations of xnodectl's own modules, with the stand-in lib that carries the real
    lib/types.nix names, descriptions and getSubOptions: every type reads back as the option check
    encodes it,
    through `<name>` elements, nested submodules, ranges, patterns and enums."""
    nixlib = ROOT / "tests" / "nixlib"
    modules = " ".join(
        str(ROOT / m)
        for m in ("modules", "xnodeos/installer.nix", "vm-tests/lib/secret-upload.nix")
    )
    expr = f"""
      let
        lib = import {nixlib / "lib.nix"};
        t = import {ROOT / "facts" / "types.nix"} lib;
        ev = import {nixlib / "eval.nix"} {{ }} {{ modules = [ {modules} ]; }};
        read = path: t.typeJson (t.find ev.optionTree [ ] (lib.splitString "." path)).type;
      in map (path: {{ inherit path; got = read path; want = ev.options.${{path}}; }})
        (builtins.attrNames ev.options)
    """
    results = eval_json(expr)
    assert isinstance(results, list) and len(results) > 50
    kinds = {json.dumps(r["want"]["t"]) for r in results}
    assert {'"int"', '"enum"', '"strMatching"', '"listOf"', '"nullOr"'} <= kinds
    assert any("<name>" in r["path"] for r in results)
    assert [r for r in results if r["got"] != r["want"]] == []
