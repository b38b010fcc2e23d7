"""A small TOML writer for the files xnodectl owns (inventory). tomllib reads them back."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def key(name: str) -> str:
    return name if _BARE.match(name) else json.dumps(name)


def value(v: Any) -> str:
    match v:
        case bool():
            return "true" if v else "false"
        case int() | float():
            return repr(v)
        case str():
            # JSON string escapes are a subset of TOML basic-string escapes.
            return json.dumps(v, ensure_ascii=False)
        case Mapping():
            return (
                "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
                if v
                else "{}"
            )
        case list() | tuple():
            return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def table(header: str, data: Mapping[str, Any]) -> str:
    lines = [f"[{header}]"] if header else []
    lines += [f"{key(k)} = {value(v)}" for k, v in data.items() if v is not None]
    return "\n".join(lines) + "\n"
