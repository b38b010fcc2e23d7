"""xnodectl/deploy/units.py held to facts/switch-to-configuration.json (what nixpkgs'
switch-to-configuration does, with the file and commit it was read from): the constants, and the
behaviour each fact states."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from xnodectl.deploy import units
from xnodectl.deploy.units import Comparison, Tree

FACTS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent.parent / "facts" / "switch-to-configuration.json").read_text()
)
F: dict[str, Any] = FACTS["facts"]


def test_every_fact_names_a_read_source() -> None:
    assert FACTS["pin"]["rev"] == "02e08985a27c65ffd33d434eeb2e660a2e4dc84d"
    for name, source in FACTS["sources"].items():
        assert source["repo"] == "NixOS/nixpkgs", name
        assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]), name
    for name, fact in F.items():
        assert fact["source"] in FACTS["sources"], name
        assert fact["says"].strip(), name


def test_constants_match_the_facts() -> None:
    assert set(F["bool-values"]["true"]) == units.TRUE_WORDS
    assert set(F["unit-section-ignored-keys"]["keys"]) == units.UNIT_IGNORED
    assert F["unit-section-ignored-keys"]["reload-key"] == units.RELOAD_KEY
    assert set(F["mount-options-reload"]["reload-only-mounts"]) == units.RELOAD_ONLY_MOUNTS
    assert set(F["targets"]["not-restarted"]) == units.TARGETS_NOT_STARTED
    never = F["never-restarted"]
    assert set(never["names"]) == units.NEVER_RESTARTED
    assert tuple(never["suffixes"]) == units.NEVER_RESTARTED_SUFFIXES
    assert tuple(never["prefixes"]) == units.OWN_RULES_PREFIXES
    keys = {**F["changed-unit-keys"]["keys"], "X-StopOnRemoval": F["removed-units"]["key"]}
    for key, spec in keys.items():
        assert units.KEYS[key] == (spec["section"], spec["default"]), key


def _info(text: str) -> units.UnitInfo:
    data: units.UnitInfo = {}
    units.parse_ini(data, text)
    return data


@pytest.mark.parametrize("key", F["unit-section-ignored-keys"]["keys"])
def test_ignored_unit_keys_behave_as_stated(key: str) -> None:
    old = _info("[Unit]\nAfter=x\n[Service]\nExecStart=/bin/a\n")
    new = _info(f"[Unit]\nAfter=x\n{key}=something\n[Service]\nExecStart=/bin/a\n")
    want = Comparison.RELOAD if key == units.RELOAD_KEY else Comparison.EQUAL
    assert units.compare(old, new) == want
    # the same key in any other section is a real difference
    other = _info(f"[Unit]\nAfter=x\n[Service]\nExecStart=/bin/a\n{key}=something\n")
    assert units.compare(old, other) == Comparison.RESTART


@pytest.mark.parametrize("word", ["1", "yes", "true", "on", "0", "no", "false", "off", "maybe"])
def test_bool_words(word: str) -> None:
    info = _info(f"[Service]\nX-ReloadIfChanged={word}\n")
    assert units.flag(info, "X-ReloadIfChanged") is (word in F["bool-values"]["true"])
    # the last value counts
    last = _info(f"[Service]\nX-ReloadIfChanged={word}\nX-ReloadIfChanged=no\n")
    assert units.flag(last, "X-ReloadIfChanged") is False


def _tree(files: dict[str, str]) -> Tree:
    return Tree({n: f"/nix/store/{abs(hash(t)):x}-{n}" for n, t in files.items()}, files)


@pytest.mark.parametrize("key", sorted(F["changed-unit-keys"]["keys"]))
def test_each_changed_unit_key_flips_the_outcome(key: str) -> None:
    """Set to the opposite of its default in the NEW unit, each key changes what happens to a
    changed, active, non-socket-activated .service."""
    section, default = units.KEYS[key]
    value = "false" if default else "true"
    old = _tree({"a.service": "[Service]\nExecStart=/bin/a 1\n"})
    plain = _tree({"a.service": "[Service]\nExecStart=/bin/a 2\n"})
    flipped = _tree({"a.service": f"[Service]\nExecStart=/bin/a 2\n[{section}]\n{key}={value}\n"})
    active = ["a.service", "a.socket"]
    sock = {"a.socket": "[Socket]\nListenStream=1\n"}
    if key == "X-NotSocketActivated":  # only matters for a socket-activated service
        old, plain, flipped = (_tree({**t.texts, **sock}) for t in (old, plain, flipped))
    before = units.classify(old, plain, active)
    after = units.classify(old, flipped, active)
    assert before != after, key


def test_removed_unit_key_is_read_from_the_old_unit() -> None:
    kept = _tree({"a.service": "[Unit]\nX-StopOnRemoval=false\n[Service]\nExecStart=/bin/a\n"})
    gone = _tree({})
    assert units.classify(kept, gone, ["a.service"]).stop == ()
    plain = _tree({"a.service": "[Service]\nExecStart=/bin/a\n"})
    assert units.classify(plain, gone, ["a.service"]).stop == ("a.service",)
