"""A deploy's first step, kept light: the workspace the build reads written, the owner's store key
made, and the ONE `nix build` of every selected system started. The engine (deploy/run.py and
everything it imports: ~80 ms on a slow 2-core machine) is imported after this, while Nix
evaluates, so the build (the longest step before the first copy) starts that much sooner."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from xnodectl import nix, storekey
from xnodectl.deploy import prepare
from xnodectl.deploy.events import FleetReport, Sink
from xnodectl.workspace import Workspace


@dataclass(frozen=True)
class Started:
    at: float  # time.monotonic() when the deploy began: the run's clock starts there
    snapshot: prepare.Snapshot  # the workspace as it was (a failed build restores it)
    signer: Path | None  # the owner's store key (deploy/sources.py signs with it)
    build: asyncio.Future[list[str]]  # every selected system's out path, in one nix call

    async def stop(self) -> None:
        """The build, if nobody awaited it: cancelled (its nix is killed)."""
        if not self.build.done():
            self.build.cancel()
            await asyncio.gather(self.build, return_exceptions=True)


def start(ws: Workspace, prepared: prepare.Prepared, req: prepare.Request) -> Started:
    """Inside the event loop (the build is one of its tasks; whoever does not await it cancels
    it, which kills nix)."""
    at = time.monotonic()
    snapshot = prepare.write(ws, prepared)
    # Every closure is signed with the owner key (made now for a workspace without one, before the
    # build bakes its public half in); only fan-out and caches refuse to run without it.
    signer = storekey.for_deploy(ws, prepared.inventory, required=not req.plain)
    attrs = [nix.toplevel_attr(ws.root, name) for name in prepared.names]
    build = asyncio.ensure_future(nix.build(attrs, timeout=prepare.BUILD_TIMEOUT_S))
    return Started(at, snapshot, signer, build)


async def deploy(
    ws: Workspace, prepared: prepare.Prepared, req: prepare.Request, sink: Sink
) -> FleetReport:
    """`xnodectl deploy`: this first step, then the engine (deploy/run.py), imported meanwhile.
    Whatever ended the run, a build nobody awaited is stopped and no SSH master of the first wave
    (prepare's `connect_early`) outlives it."""
    started: Started | None = None
    try:
        started = start(ws, prepared, req)
        await asyncio.sleep(0)  # the build task reaches its process (spawned before its first wait)
        from xnodectl.deploy import run

        return await run.deploy(ws, prepared, req, sink, started)
    finally:
        if started is not None:
            await started.stop()
        if prepared.session is not None:
            prepared.session.close()
