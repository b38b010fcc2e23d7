"""`xnodectl deploy --engine nixops4`: the same fleet applied by nixops4 (a subprocess, one runner).

The workspace's nixops4/flake.nix (written before each run) exports the inventory as a nixops4
root (xnodeos/nixops4.nix); nixops4 then builds, copies and switches on its own: no two-phase
activation, no health gate, no JSON events (deploy/engine.py refuses the options that need them).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from xnodectl import process
from xnodectl.deploy.prepare import Prepared, write
from xnodectl.errors import ToolMissing
from xnodectl.workspace import Workspace, write_nixops4_root

HINT = (
    "get nixops4 from its flake: nix shell github:nixops4/nixops4 (or add "
    "inputs.nixops4.packages.${system}.default to your dev shell)"
)


def apply_argv(members: list[str]) -> list[str]:
    return ["nixops4", "apply", "--no-interactive", *members]


async def apply(ws: Workspace, prepared: Prepared, on_log: Callable[[str], None]) -> None:
    if shutil.which("nixops4") is None:
        raise ToolMissing("'nixops4' was not found on PATH", hint=HINT)
    write(ws, prepared)  # nixops4 builds on its own: nothing to undo here
    root = write_nixops4_root(ws)
    names = list(prepared.names)
    members = [] if len(names) == len(prepared.inventory.nodes) else names
    await process.arun(apply_argv(members), on_stderr_line=on_log, cwd=root)
