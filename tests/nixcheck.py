"""Real nix-instantiate checks used by the tests (batched: one process for many sources)."""

from __future__ import annotations

import functools
import json

from xnodectl import process


@functools.lru_cache(maxsize=4096)
def parse_ok(source: str) -> bool:
    result = process.run(["nix-instantiate", "--parse", "-E", source], check=False)
    return result.ok


def eval_json(expr: str) -> object:
    result = process.run(["nix-instantiate", "--eval", "--strict", "--json", "-E", expr])
    return json.loads(result.stdout)
