"""The offline option check: every NixOS option xnodectl sets, held to the pinned release.

tests/nixlib/targets.nix evaluates every golden render (with the XnodeOS modules), the XnodeOS
configurations and every VM test node with the real nix-instantiate and the stand-in module
system (tests/nixlib/eval.nix); each defined option path and value comes back as JSON and is
checked here against facts/nixos-options.json (nixpkgs options) and the modules' own
declarations. An unknown option, a wrong type, a value outside an enum, a deprecated or read-only
option, and a unit ordered after network-online.target without wanting it are errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnodectl import process

ROOT = Path(__file__).resolve().parent.parent
FACTS = ROOT / "facts" / "nixos-options.json"
TARGETS = ROOT / "tests" / "nixlib" / "targets.nix"
Json = Any


@dataclass(frozen=True)
class Problem:
    target: str
    path: str
    message: str
    file: str = ""

    def __str__(self) -> str:
        where = f" ({self.file})" if self.file else ""
        return f"{self.target}: {self.path}: {self.message}{where}"


UNKNOWN = "no such option (not in the pinned nixpkgs, not declared here)"


def load_schema(path: Path = FACTS) -> dict[str, Json]:
    options: dict[str, Json] = json.loads(path.read_text())["options"]
    return options


def evaluate(
    schema: Mapping[str, Json], only: str | None = None, extra: Mapping[str, Path] | None = None
) -> Json:
    """One nix-instantiate for every target: {target: {report, options, externalModules}}.

    `only`: targets whose name starts with it; `extra`: more modules (name -> file), each
    evaluated with the XnodeOS modules as target `extra/<name>`.
    """
    only_nix = "null" if only is None else json.dumps(only)
    extra_nix = " ".join(f"{json.dumps(n)} = [ {f} ];" for n, f in (extra or {}).items())
    expr = (
        "builtins.mapAttrs (_: t: { inherit (t) report options externalModules; }) "
        f"(import {TARGETS} {{ schema = builtins.fromJSON {json.dumps(json.dumps(schema))}; "
        f"only = {only_nix}; extra = {{ {extra_nix} }}; }})"
    )
    result = process.run(["nix-instantiate", "--eval", "--strict", "--json", "-E", expr])
    return json.loads(result.stdout)


def _pattern(path: str) -> re.Pattern[str]:
    parts = [r"[^\x00]+" if p == "<name>" else re.escape(p) for p in path.split(".")]
    return re.compile(r"\x00".join(parts))


class Schema:
    """Option paths (with `<name>` wildcards) -> facts entries; exact names win over wildcards."""

    def __init__(self, options: Mapping[str, Json]) -> None:
        self.entries = dict(options)
        self._compiled = [
            (path.count("<name>"), _pattern(path), path) for path in sorted(self.entries)
        ]

    def lookup(self, loc: list[str]) -> tuple[str, Json] | None:
        key = "\x00".join(loc)
        matches = [(n, p) for n, rx, p in self._compiled if rx.fullmatch(key)]
        if not matches:
            return None
        _, path = min(matches)
        return path, self.entries[path]


_POSIX = {"[:alnum:]": "a-zA-Z0-9", "[:alpha:]": "a-zA-Z", "[:digit:]": "0-9", "[:space:]": r"\s"}


def _regex(pattern: str) -> re.Pattern[str]:
    for cls, py in _POSIX.items():
        pattern = pattern.replace(cls, py)
    return re.compile(pattern)


def type_errors(value: Json, ty: Json, where: str = "") -> Iterator[str]:
    """Why `value` (serialised by eval.nix) is not of type `ty` (the facts' normal form)."""
    t = ty.get("t")
    if isinstance(value, dict) and value.get("__inactive"):
        return
    at = f" at {where}" if where else ""
    kind = _kind(value)
    if t in ("anything", "raw", "unspecified", "deferredModule"):
        return
    if t in ("str", "lines"):
        if kind != "string":
            yield f"expected a string{at}, got {kind}"
    elif t == "bool":
        if kind != "bool":
            yield f"expected a boolean{at}, got {kind}"
    elif t == "int":
        if kind != "int":
            yield f"expected an integer{at}, got {kind}"
        elif not ty.get("min", value) <= value <= ty.get("max", value):
            yield f"{value} is outside {ty.get('min', '-inf')}..{ty.get('max', 'inf')}{at}"
    elif t == "float":
        if kind not in ("int", "float"):
            yield f"expected a number{at}, got {kind}"
    elif t == "path":
        text = value.get("__path") if kind == "path" else value
        if kind == "package" or (isinstance(text, str) and text.startswith("/")):
            return
        yield f"expected an absolute path{at}, got {kind} {value!r:.60}"
    elif t == "package":
        if kind != "package" and not (kind == "string" and value.startswith("/nix/store/")):
            yield f"expected a package{at}, got {kind}"
    elif t == "attrs":
        if kind != "set":
            yield f"expected an attribute set{at}, got {kind}"
    elif t == "enum":
        if value not in ty["values"]:
            yield f"{value!r} is not one of {ty['values']}{at}"
    elif t == "strMatching":
        if kind != "string" or not _regex(ty["pattern"]).fullmatch(value):
            yield f"{value!r} does not match {ty['pattern']!r}{at}"
    elif t == "nullOr":
        if value is not None:
            yield from type_errors(value, ty["elem"], where)
    elif t in ("oneOf", "coercedTo"):
        choices = ty["of"] if t == "oneOf" else [ty["from"], ty["to"]]
        if all(list(type_errors(value, c, where)) for c in choices):
            yield f"{value!r:.60} is none of {[c.get('t') for c in choices]}{at}"
    elif t == "listOf":
        if kind != "list":
            yield f"expected a list{at}, got {kind}"
        else:
            for i, item in enumerate(value):
                yield from type_errors(item, ty["elem"], f"{where}[{i}]")
    elif t == "attrsOf":
        if kind != "set":
            yield f"expected an attribute set{at}, got {kind}"
        else:
            for k, item in value.items():
                yield from type_errors(item, ty["elem"], f"{where}.{k}")
    elif t == "submodule":
        yield from _submodule_errors(value, ty["options"], where)
    else:
        yield f"the check does not know type {t!r}{at}"


def _submodule_errors(value: Json, options: Mapping[str, Json], where: str) -> Iterator[str]:
    if _kind(value) != "set":
        yield f"expected a submodule value (attribute set) at {where or 'top'}, got {_kind(value)}"
        return
    for key, item in value.items():
        name = f"{where}.{key}" if where else key
        sub = {k[len(key) + 1 :]: v for k, v in options.items() if k.startswith(key + ".")}
        if key in options:
            yield from type_errors(item, options[key], name)
        elif sub:
            yield from _submodule_errors(item, sub, name)
        elif "<name>" in options:
            yield from type_errors(item, options["<name>"], name)
        else:
            yield f"{name}: no such sub-option (one of {sorted(options)})"


def _kind(value: Json) -> str:
    match value:
        case bool():
            return "bool"
        case int():
            return "int"
        case float():
            return "float"
        case str():
            return "string"
        case None:
            return "null"
        case list():
            return "list"
        case {"__package": _}:
            return "package"
        case {"__path": _}:
            return "path"
        case {"__function": _}:
            return "function"
        case dict():
            return "set"
    return type(value).__name__


def check_target(name: str, result: Json, schema: Schema) -> list[Problem]:
    problems: list[Problem] = []
    declared: dict[str, Json] = result["options"]
    own = Schema({p: {"type": t} for p, t in declared.items()})
    for entry in result["report"]:
        loc: list[str] = entry["loc"]
        path = ".".join(loc)
        files = sorted({d["file"] for d in entry["defs"]})
        file = ", ".join(Path(f).name for f in files)
        found = own.lookup(loc) or schema.lookup(loc)
        if not entry["known"] or found is None:
            problems.append(Problem(name, path, UNKNOWN, file))
            continue
        _, fact = found
        if fact.get("deprecated"):
            problems.append(Problem(name, path, f"deprecated: {fact['deprecated']}", file))
        if fact.get("readOnly"):
            problems.append(Problem(name, path, "read-only option: it may not be set", file))
        for d in entry["defs"]:
            if d["active"]:
                for why in type_errors(d["value"], fact["type"]):
                    problems.append(Problem(name, path, why, Path(d["file"]).name))
    problems.extend(_unit_ordering(name, result["report"]))
    return problems


def _unit_ordering(name: str, report: list[Json]) -> Iterator[Problem]:
    """`after = network-online.target` without wanting it (NixOS warns; it waits for nothing)."""
    units: dict[str, dict[str, set[str]]] = {}
    for entry in report:
        loc = entry["loc"]
        if len(loc) == 4 and loc[:2] == ["systemd", "services"] and entry["known"]:
            field = units.setdefault(loc[2], {}).setdefault(loc[3], set())
            for d in entry["defs"]:
                if d["active"] and isinstance(d["value"], list):
                    field.update(v for v in d["value"] if isinstance(v, str))
    for unit, fields in units.items():
        wanted = fields.get("wants", set()) | fields.get("requires", set())
        if "network-online.target" in fields.get("after", set()) - wanted:
            yield Problem(
                name,
                f"systemd.services.{unit}.after",
                "ordered after network-online.target without wants/requires on it",
            )


def check(
    only: str | None = None, extra: Mapping[str, Path] | None = None, facts: Path = FACTS
) -> tuple[list[Problem], int]:
    """(problems, number of option definitions checked) for every target."""
    options = load_schema(facts)
    results = evaluate(options, only, extra)
    schema = Schema(options)
    problems: list[Problem] = []
    count = 0
    for name in sorted(results):
        problems.extend(check_target(name, results[name], schema))
        count += sum(len(e["defs"]) for e in results[name]["report"])
    return problems, count


if __name__ == "__main__":
    found, checked = check()
    for p in found:
        print(p)
    print(f"{checked} option definitions checked, {len(found)} problems")
