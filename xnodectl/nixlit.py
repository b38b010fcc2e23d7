"""Python value -> Nix literal. The only way a value enters Nix source.

Strings always become double-quoted Nix strings in which `\\`, `"` and every `$` are
escaped and control characters use escapes, so no value can end the string or start an
interpolation. Paths are emitted as strings, never as Nix path literals (which would copy files
into the world-readable store).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from xnodectl.errors import UsageError

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_ESCAPES = {"\\": "\\\\", '"': '\\"', "$": "\\$", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SPECIAL = re.compile(r'[\\"$\n\r\t]')
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]*$")
_KEYWORDS = frozenset(
    {
        "if",
        "then",
        "else",
        "assert",
        "with",
        "let",
        "in",
        "rec",
        "inherit",
        "or",
        "true",
        "false",
        "null",
    }
)


@dataclass(frozen=True)
class NixExpr:
    """Nix source written by a template author or by xnodectl itself, never by a user value."""

    source: str

    def __str__(self) -> str:
        return self.source


class NixEncodeError(UsageError):
    pass


def string(value: str) -> str:
    if "\x00" in value:
        raise NixEncodeError("a string value contains a NUL byte, which Nix strings cannot hold")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NixEncodeError("a string value is not valid Unicode text") from exc
    return '"' + _SPECIAL.sub(lambda m: _ESCAPES[m.group(0)], value) + '"'


def attr_name(name: str) -> str:
    """An attribute name: bare when it is a plain identifier, else a quoted string."""
    if _IDENT.match(name) and name not in _KEYWORDS:
        return name
    return string(name)


def encode(value: object) -> str:
    """Encode a Python value as Nix source that evaluates to exactly that value."""
    match value:
        case NixExpr(source=source):
            return source
        case None:
            return "null"
        case bool():
            return "true" if value else "false"
        case int():
            if not _INT_MIN <= value <= _INT_MAX:
                raise NixEncodeError(f"integer {value} does not fit Nix's 64-bit integers")
            if value == _INT_MIN:  # its magnitude is no Nix literal: 2**63 overflows
                return f"({_INT_MIN + 1} - 1)"
            return str(value) if value >= 0 else f"({value})"
        case float():
            if not math.isfinite(value):
                raise NixEncodeError(f"{value} has no Nix literal")
            text = repr(value)
            return text if value >= 0 else f"({text})"
        case str():
            return string(value)
        case Mapping():
            items = []
            for key, item in value.items():
                if not isinstance(key, str):
                    raise NixEncodeError(f"attribute names must be strings, got {key!r}")
                items.append(f"{attr_name(key)} = {encode(item)};")
            return "{ " + " ".join(items) + " }" if items else "{ }"
        case Sequence():
            return "[ " + " ".join(encode(item) for item in value) + " ]" if value else "[ ]"
        case _:
            raise NixEncodeError(f"cannot encode a {type(value).__name__} as a Nix value")
