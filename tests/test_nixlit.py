"""The Nix literal encoder, checked against the real nix-instantiate."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.nixcheck import eval_json, parse_ok
from xnodectl import nixlit
from xnodectl.nixlit import NixEncodeError, NixExpr

# Nix strings hold any Unicode text except NUL; JSON output round-trips it.
nix_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))

BREAKOUTS = [
    '"; x = builtins.getEnv "HOME"; y = "',
    '${builtins.getEnv "HOME"}',
    "''",
    "''${x}''",
    "'' + builtins.readFile /etc/passwd + ''",
    "$${x}",
    "\\${x}",
    "\\",
    '\\"',
    "a\nb\r\nc\td",
    "# comment\n}; evil = true; {",
    "/* unterminated",
    "é ✓ \u2028 \U0001f600",
]


@pytest.mark.parametrize("value", BREAKOUTS)
def test_breakout_attempts_stay_plain_strings(value: str) -> None:
    assert eval_json(nixlit.encode(value)) == value
    # Inside an attribute set and a list, the value still cannot end the expression early.
    assert eval_json("{ a = " + nixlit.encode(value) + "; }") == {"a": value}
    assert eval_json(nixlit.encode([value, value])) == [value, value]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(nix_text, min_size=1, max_size=8))
def test_random_strings_round_trip_through_real_nix(values: list[str]) -> None:
    assert eval_json(nixlit.encode(values)) == values


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | nix_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(nix_text, children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_values_round_trip_through_real_nix(value: object) -> None:
    assert eval_json(nixlit.encode(value)) == value


def test_negative_numbers_in_lists_are_not_subtraction() -> None:
    assert eval_json(nixlit.encode([1, -2, 3])) == [1, -2, 3]


def test_integer_bounds_round_trip() -> None:
    bounds = [-(2**63), 2**63 - 1, 0, -1]
    assert eval_json(nixlit.encode(bounds)) == bounds


@pytest.mark.parametrize("bad", ["a\x00b", 2**63, float("nan"), object(), {1: "x"}, "\ud800"])
def test_unencodable_values_are_rejected(bad: object) -> None:
    with pytest.raises(NixEncodeError):
        nixlit.encode(bad)


def test_attr_names_quote_keywords_and_odd_names() -> None:
    assert nixlit.attr_name("services") == "services"
    assert nixlit.attr_name("if") == '"if"'
    assert nixlit.attr_name("a b") == '"a b"'
    assert parse_ok("{ " + nixlit.attr_name('x"; y = 1; "') + " = 1; }")


def test_nix_expr_passes_through_only_when_made_by_code() -> None:
    assert nixlit.encode(NixExpr("pkgs.hello")) == "pkgs.hello"
    assert nixlit.encode("pkgs.hello") == '"pkgs.hello"'
