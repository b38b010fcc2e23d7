"""The one stand-in nixpkgs lib (tests/nixlib/lib.nix) on the points where the four it replaced
disagreed with the real lib: properties stay markers (mkIf is never evaluated eagerly), the
priorities are lib/modules.nix's, and shell quoting is lib/strings.nix's (quotes escaped; a word
of safe characters left bare), checked by the real bash reading the words back."""

from __future__ import annotations

import json

import pytest

from tests.nixcheck import eval_json
from tests.nixstub import RESOLVE, STUB_LIB
from xnodectl import process


def _eval(expr: str) -> object:
    return eval_json(f"let lib = {STUB_LIB}; in {expr}")


def test_mkif_is_a_marker_and_never_forces_its_content() -> None:
    got = _eval('let m = lib.mkIf false (throw "forced"); in { t = m._type; c = m.condition; }')
    assert got == {"t": "if", "c": False}
    # Discharged like the module system: a false condition defines nothing.
    assert eval_json(f'{RESOLVE} {{ a = ({STUB_LIB}).mkIf false (throw "forced"); b = 1; }}') == {
        "b": 1
    }


def test_priorities_are_the_real_ones() -> None:
    names = ["mkVMOverride", "mkForce", "mkImageMediaOverride", "mkDefault", "mkOptionDefault"]
    got = _eval("map (f: (f null).priority) [ " + " ".join(f"lib.{n}" for n in names) + " ]")
    assert got == [10, 50, 60, 1000, 1500]
    assert _eval("map (f: (f null).priority) [ lib.mkBefore lib.mkAfter ]") == [500, 1500]


def test_resolve_keeps_the_strongest_definition_and_orders_lists() -> None:
    expr = (
        f"let lib = {STUB_LIB}; in {RESOLVE} (lib.mkMerge [ {{ x = lib.mkDefault 1; l = [ 2 ]; }}"
        " { x = 2; l = lib.mkBefore [ 1 ]; } { x = lib.mkDefault 3; l = lib.mkAfter [ 3 ]; } ])"
    )
    assert eval_json(expr) == {"x": 2, "l": [1, 2, 3]}


WORDS = [
    "plain",
    "with space",
    "it's",
    'double"quote',
    "$HOME",
    "back\\slash",
    "new\nline",
    "",
    "-x",
]


@pytest.mark.parametrize("word", WORDS)
def test_escape_shell_arg_round_trips_through_bash(word: str) -> None:
    quoted = _eval(f"lib.escapeShellArg {json.dumps(word)}")
    assert isinstance(quoted, str)
    out = process.run(["bash", "-c", f"printf '%s' {quoted}"]).stdout
    assert out == word


def test_escape_shell_args_is_bare_only_for_safe_words() -> None:
    got = _eval('lib.escapeShellArgs [ "grafana.service" "a b" "it\'s" "/nix/store/x-y:1" ]')
    assert got == "grafana.service 'a b' 'it'\\''s' /nix/store/x-y:1"
