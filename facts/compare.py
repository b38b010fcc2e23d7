"""Compare facts/*.json with what facts/generate.nix read from a nixpkgs (CI: the pinned one).

    python3 facts/compare.py generated.json [--write]

Prints every difference and exits 1 if there is one; --write takes the generated values (the
"about", "source" and hand-kept fields such as "deprecated" or "apply" stay). Standard library
only: CI runs it before anything is installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _load(name: str) -> Any:
    return json.loads((HERE / name).read_text())


def _save(name: str, data: Any) -> None:
    (HERE / name).write_text(json.dumps(data, indent=1) + "\n")


def compare(generated: dict[str, Any], write: bool) -> list[str]:
    diffs: list[str] = []
    options = _load("nixos-options.json")
    for path, entry in options["options"].items():
        new = generated["options"][path]
        for key in ("type", "default"):
            if key in new and new[key] != entry.get(key):
                diffs.append(f"option {path}: {key} {entry.get(key)} -> {new[key]}")
                entry[key] = new[key]
        if bool(new.get("readOnly")) != bool(entry.get("readOnly")):
            diffs.append(f"option {path}: readOnly -> {bool(new.get('readOnly'))}")
            entry["readOnly"] = bool(new.get("readOnly"))
    python = _load("python-packages.json")
    for name, entry in python["packages"].items():
        if generated["python"][name] != entry["version"]:
            diffs.append(f"python {name}: {entry['version']} -> {generated['python'][name]}")
            entry["version"] = generated["python"][name]
    nixpkgs = _load("nixpkgs.json")
    for key in ("minimumNixVersion", "nixosRelease"):
        if generated[key] != nixpkgs[key]:
            diffs.append(f"{key}: {nixpkgs[key]} -> {generated[key]}")
            nixpkgs[key] = generated[key]
    for alias, still in generated["aliases"].items():
        if not still:
            diffs.append(f"alias {alias}: no longer an alias in this nixpkgs (drop the fact)")
    if write:
        _save("nixos-options.json", options)
        _save("python-packages.json", python)
        _save("nixpkgs.json", nixpkgs)
    return diffs


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        sys.stderr.write("usage: python3 facts/compare.py GENERATED.json [--write]\n")
        return 2
    diffs = compare(json.loads(Path(argv[0]).read_text()), "--write" in argv[1:])
    for line in diffs:
        print(line)
    sys.stderr.write(f"{len(diffs)} differences between facts/ and the pinned nixpkgs\n")
    return 1 if diffs and "--write" not in argv[1:] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
