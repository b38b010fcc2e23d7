"""`xnodectl --help` stays fast: it imports no heavy library (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import sys

import pytest

from xnodectl import process

HEAVY = {"siwe", "web3", "eth_account", "jinja2", "Crypto"}
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


def test_the_program_flushes_everything_and_keeps_exit_codes() -> None:
    """`python -m xnodectl` runs xnodectl.cli:run, which skips the interpreter's teardown: the
    output must still be complete and the exit codes those of the command."""
    listed = process.run([sys.executable, "-m", "xnodectl", "templates", "list", "--json"])
    names = [t["name"] for t in json.loads(listed.stdout)]
    assert "ethereum-node" in names and len(names) >= 10
    bad = process.run(
        [sys.executable, "-m", "xnodectl", "deploy", "--workspace", "/nonexistent/ws"], check=False
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
    text = process.run(
        [sys.executable, "-c", "import sys; sys.exit('plain text'); "], check=False
    )  # the reference behaviour run() reproduces for sys.exit("text")
    probe = (
        "import sys; sys.argv = ['xnodectl']; import xnodectl.cli as c; "
        "c.main = lambda: sys.exit('plain text'); c.run()"
    )
    ours = process.run([sys.executable, "-c", probe], check=False)
    assert (ours.returncode, ours.stderr) == (text.returncode, text.stderr) == (1, "plain text\n")
