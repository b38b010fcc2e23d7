"""What activating a new system would do to systemd units, predicted before the closure moves.

The rules are NixOS's switch-to-configuration's (facts/switch-to-configuration.json holds them
with their source; tests/test_plan_units_facts.py holds this module to it): compare each active
unit's old and new files (drop-ins included) after parsing, and decide from the NEW unit's X- keys.
This is a prediction, not a dry-activate: see LIMITS.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import Enum
from functools import cached_property
from typing import Any

UnitInfo = dict[str, dict[str, list[str]]]

TRUE_WORDS = frozenset({"1", "yes", "true", "on"})
RELOAD_KEY = "X-Reload-Triggers"
UNIT_IGNORED = frozenset(
    {
        RELOAD_KEY, "Description", "Documentation", "OnFailure", "OnSuccess", "OnFailureJobMode",
        "IgnoreOnIsolate", "StopWhenUnneeded", "RefuseManualStart", "RefuseManualStop",
        "AllowIsolate", "CollectMode", "SourcePath",
    }
)  # fmt: skip
RELOAD_ONLY_MOUNTS = frozenset({"-.mount", "nix.mount"})
NEVER_RESTARTED = frozenset(
    {"sysinit.target", "basic.target", "multi-user.target", "graphical.target"}
)
NEVER_RESTARTED_SUFFIXES = (".unit", ".slice", ".socket")
OWN_RULES_PREFIXES = ("systemd-nspawn@",)
TARGETS_NOT_STARTED = frozenset({"suspend.target", "hibernate.target", "hybrid-sleep.target"})
# (section, key) -> default, as switch-to-configuration reads them
KEYS: dict[str, tuple[str, bool]] = {
    "X-ReloadIfChanged": ("Service", False),
    "X-RestartIfChanged": ("Service", True),
    "RefuseManualStop": ("Unit", False),
    "X-OnlyManualStart": ("Unit", False),
    "X-StopIfChanged": ("Service", True),
    "X-NotSocketActivated": ("Service", False),
    "X-StopOnRemoval": ("Unit", True),
    "RefuseManualStart": ("Unit", False),
}
DEPENDENCY_DIRS = (".wants", ".requires", ".upholds")
MASKED = "/dev/null"

LIMITS = (
    "predicted from the unit files (switch-to-configuration's rules), not a dry-activate: "
    "restartTriggers and socket units show up as changed unit files; a unit whose own file is "
    "unchanged is not restarted even when something it depends on changed (nixpkgs does the "
    "same); restarts the activation script asks for and fstab mounts are not seen"
)


class Basis(Enum):
    SYSTEMD = "active units from the node's systemd"
    ASSUMED = (
        "the node's systemd could not be asked: every unit of its current system is assumed active"
    )


@dataclass(frozen=True)
class Tree:
    """A system's etc/systemd/system: entry (`a.service`, `a.service.d/x.conf`,
    `multi-user.target.wants/a.service`) -> resolved path, and the text of unit files and
    drop-ins (masked ones have none)."""

    entries: Mapping[str, str]
    texts: Mapping[str, str]

    def has(self, unit: str) -> bool:
        return unit in self.entries

    def masked(self, unit: str) -> bool:
        return self.entries.get(unit) == MASKED

    @cached_property
    def dirs(self) -> dict[str, list[str]]:
        """`a.service.d` -> its entries' names, sorted (as a glob lists them)."""
        out: dict[str, list[str]] = {}
        for entry in sorted(self.entries):
            if "/" in entry:
                directory, name = entry.split("/", 1)
                out.setdefault(directory, []).append(name)
        return out

    def dependencies(self, unit: str) -> set[str]:
        """What `unit` wants/requires/upholds, from its .wants/ dirs and its [Unit] keys."""
        found = {name for d in DEPENDENCY_DIRS for name in self.dirs.get(unit + d, [])}
        info = parse(self, unit)
        for key in ("Wants", "Requires", "Upholds", "BindsTo"):
            for value in (info or {}).get("Unit", {}).get(key, []):
                found.update(value.split())
        return found


@dataclass(frozen=True)
class UnitChanges:
    """What the switch would do. `restart` includes `stopped_then_started` (changed services
    stopped before the activation script and started after it: nixpkgs' default)."""

    start: tuple[str, ...]
    stop: tuple[str, ...]
    restart: tuple[str, ...]
    stopped_then_started: tuple[str, ...]
    reload: tuple[str, ...]
    not_restarted: tuple[str, ...]
    basis: str
    limits: str = LIMITS

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_ini(data: UnitInfo, text: str) -> None:
    """One unit file or drop-in into `data` (switch-to-configuration's reading: [Install]
    skipped, `Key=` clears the key, repeated keys accumulate, surrounding quotes dropped)."""
    section: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section is None or section == "Install" or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        keys = data.setdefault(section, {})
        if not value:
            keys[key] = []
        else:
            keys.setdefault(key, []).append(value)


_TEMPLATE = re.compile(r"^(.*)@[^.]*\.(.*)$")


def base_of(unit: str, *trees: Tree) -> str:
    """A template instance whose own file none of `trees` has is read from `name@.suffix`."""
    match = _TEMPLATE.match(unit)
    if match and not any(t.has(unit) for t in trees):
        return f"{match[1]}@.{match[2]}"
    return unit


def parse(tree: Tree, unit: str, base: str | None = None) -> UnitInfo | None:
    """The unit as systemd would load it from `tree`, or None if the tree lacks it."""
    base = base or base_of(unit, tree)
    if not tree.has(base):
        return None
    data: UnitInfo = {}
    parse_ini(data, tree.texts.get(base, ""))
    for name in (base, unit) if unit != base else (base,):
        for conf in (c for c in tree.dirs.get(f"{name}.d", []) if c.endswith(".conf")):
            parse_ini(data, tree.texts.get(f"{name}.d/{conf}", ""))
    return data


def flag(info: UnitInfo | None, key: str) -> bool:
    section, default = KEYS[key]
    values = (info or {}).get(section, {}).get(key)
    return values[-1] in TRUE_WORDS if values else default


class Comparison(Enum):
    EQUAL = "equal"
    RESTART = "restart"
    RELOAD = "reload"


def compare(old: UnitInfo, new: UnitInfo) -> Comparison:
    """switch-to-configuration's comparison of two parsed units."""
    result = Comparison.EQUAL
    for section in old.keys() | new.keys():
        before, after = old.get(section), new.get(section)
        if section != "Unit" and (before is None or after is None):
            return Comparison.RESTART
        for key in (before or {}).keys() | (after or {}).keys():
            a, b = (before or {}).get(key), (after or {}).get(key)
            if a == b:
                continue
            if section == "Unit" and key == RELOAD_KEY:
                result = Comparison.RELOAD if b is not None else result  # removed: ignored
            elif section == "Unit" and key in UNIT_IGNORED:
                continue
            elif section == "Mount" and key == "Options" and a is not None and b is not None:
                result = Comparison.RELOAD
            else:
                return Comparison.RESTART
    return result


@dataclass
class _Sets:
    stop: set[str]
    start: set[str]
    restart: set[str]
    reload: set[str]
    skip: set[str]


def _modified(unit: str, new: Tree, info: UnitInfo, active: set[str], out: _Sets) -> None:
    """A changed active unit: what switch-to-configuration does with it."""
    if unit in NEVER_RESTARTED or unit.endswith(NEVER_RESTARTED_SUFFIXES):
        return
    if unit.startswith(OWN_RULES_PREFIXES):
        return
    if unit.endswith(".mount"):
        (out.reload if unit in RELOAD_ONLY_MOUNTS else out.restart).add(unit)
        return
    if flag(info, "X-ReloadIfChanged") and unit not in out.restart | out.stop:
        out.reload.add(unit)
    elif (
        not flag(info, "X-RestartIfChanged")
        or flag(info, "RefuseManualStop")
        or flag(info, "X-OnlyManualStart")
    ):
        out.skip.add(unit)
    elif not flag(info, "X-StopIfChanged") or not unit.endswith(".service"):
        out.restart.add(unit)
        out.reload.discard(unit)
    else:
        base = re.sub(r"\.[a-z]*$", "", base_of(unit, new))
        sockets = " ".join(info.get("Service", {}).get("Sockets", [])).split() or [f"{base}.socket"]
        socket_activated = False
        for socket in (s for s in sockets if s in active):
            out.stop.add(socket)
            if new.has(socket):
                out.start.add(socket)
                socket_activated = True
        if not socket_activated or flag(info, "X-NotSocketActivated"):
            out.start.add(unit)
        out.stop.add(unit)
        out.reload.discard(unit)


def assumed_active(old: Tree) -> set[str]:
    """Without the node's systemd: every unit of the old system (template instances: those a
    unit wants), templates and drop-in dirs excluded."""
    names = {e.rsplit("/", 1)[-1] for e in old.entries if not e.endswith(".conf")}
    return {n for n in names if not n.endswith(("@.service", "@.socket", "@.target", "@.timer"))}


def classify(old: Tree, new: Tree, active: Iterable[str] | None) -> UnitChanges:
    """The units a switch from `old` to `new` would stop, start, restart and reload.
    `active`: the node's active units (None: unknown, every old unit assumed active)."""
    running = set(active) if active is not None else assumed_active(old)
    out = _Sets(set(), set(), set(), set(), set())
    targets: set[str] = set()
    for unit in sorted(running):
        base = base_of(unit, old, new)
        if not old.has(base):
            continue
        if not new.has(base) or new.masked(base):
            if flag(parse(old, unit, base), "X-StopOnRemoval"):
                out.stop.add(unit)
            continue
        new_info = parse(new, unit, base) or {}
        if unit.endswith(".target"):
            if not (
                unit in TARGETS_NOT_STARTED
                or flag(new_info, "RefuseManualStart")
                or flag(new_info, "X-OnlyManualStart")
            ):
                targets.add(unit)
            continue
        match compare(parse(old, unit, base) or {}, new_info):
            case Comparison.RESTART:
                _modified(unit, new, new_info, running, out)
            case Comparison.RELOAD if unit not in out.restart:
                out.reload.add(unit)
            case _:
                pass
    pulled = _pulled_in(new, targets, running)
    both = out.stop & out.start
    return UnitChanges(
        start=tuple(sorted((out.start | pulled) - out.stop)),
        stop=tuple(sorted(out.stop - out.start)),
        restart=tuple(sorted(out.restart | both)),
        stopped_then_started=tuple(sorted(both)),
        reload=tuple(sorted(out.reload - out.restart - both)),
        not_restarted=tuple(sorted(out.skip)),
        basis=(Basis.SYSTEMD if active is not None else Basis.ASSUMED).value,
    )


def _pulled_in(new: Tree, targets: set[str], running: set[str]) -> set[str]:
    """Units that start because an active target is started again: what the targets want in the
    new system, transitively (through running units too), that is not running now (targets
    themselves not listed, as nixpkgs hides them)."""
    seen: set[str] = set()
    todo = list(targets)
    while todo:
        unit = todo.pop()
        for dep in new.dependencies(unit):
            if dep not in seen and new.has(base_of(dep, new)):
                seen.add(dep)
                todo.append(dep)
    return {
        u for u in seen - running if not u.endswith(".target") and not new.masked(base_of(u, new))
    }
