"""`xnodectl --help` stays fast: it imports no heavy library (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import sys

import pytest

from xnodectl import process

HEAVY = {"asyncssh", "siwe", "web3", "eth_account", "jinja2", "Crypto"}
# typer >= 0.29 itself imports pydantic (typer._adapters) once a sub-command is resolved; the top
# level --help and --version must not even load that.
TOP_LEVEL_HEAVY = HEAVY | {"pydantic", "rich"}
PROBE = """
import json, sys
from xnodectl.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["deploy", "--help"],
        ["templates", "--help"],
        ["image", "--help"],
        ["wallet", "--help"],
        ["render", "--help"],
        ["--version"],
    ],
)
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    result = process.run([sys.executable, "-c", PROBE.format(argv=argv)], check=False)
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    heavy = TOP_LEVEL_HEAVY if len(argv) == 1 else HEAVY
    assert not (loaded & heavy), f"{argv} imported {sorted(loaded & heavy)}"
