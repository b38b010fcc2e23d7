"""`xnodectl deploy --engine nixops4`: the same fleet applied by nixops4 (a subprocess, one runner).

The workspace's nixops4/flake.nix (written before each run) exports the inventory as a nixops4
root (xnodeos/nixops4.nix); nixops4 then
builds, copies and switches on its own (no two-phase activation, no health gate: say so to users).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from xnodectl import process
from xnodectl.deploy.service import Request, prepare
from xnodectl.errors import ToolMissing
from xnodectl.workspace import Workspace, write_apps, write_nixops4_root

HINT = (
    "get nixops4 from its flake: nix shell github:nixops4/nixops4 (or add "
    "inputs.nixops4.packages.${system}.default to your dev shell)"
)


def apply_argv(members: list[str]) -> list[str]:
    return ["nixops4", "apply", "--no-interactive", *members]


async def apply(ws: Workspace, req: Request, on_log: Callable[[str], None]) -> None:
    if shutil.which("nixops4") is None:
        raise ToolMissing("'nixops4' was not found on PATH", hint=HINT)
    inventory, names, rendered = prepare(ws, req)  # template words, rendering, collisions
    if req.words:
        ws.save(inventory)
    for name in names:
        write_apps(ws, name, rendered[name])
    root = write_nixops4_root(ws)
    members = [] if len(names) == len(inventory.nodes) else names
    await process.arun(apply_argv(members), on_stderr_line=on_log, cwd=root)
