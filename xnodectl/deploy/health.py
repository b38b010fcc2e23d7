"""Stage 6, health: the templates' probes (systemd unit active, TCP port open, HTTP status) run on
the node; a failure aborts, and the node returns to its previous system at once."""

from __future__ import annotations

from xnodectl.deploy.agent import Agent
from xnodectl.deploy.events import Phase, Status
from xnodectl.deploy.job import NodeRun
from xnodectl.deploy.rollback import roll_back
from xnodectl.errors import XnodeError

PROBE_SLACK_S = 15  # the round trip around the slowest probe's own budget


async def probe(run: NodeRun, agent: Agent) -> None:
    if not run.job.probes:
        run.emit(Phase.PROBE, Status.SKIPPED, message="no health probes")
        return
    run.emit(Phase.PROBE, Status.START)
    limit = max(p.timeout for p in run.job.probes) + PROBE_SLACK_S
    try:
        result = await agent.probe(run.job.probes, timeout=limit)
    except XnodeError as exc:
        await roll_back(run, agent, Phase.PROBE, f"health probe failed: {exc.message}")
        return
    if not result.ok:
        await roll_back(run, agent, Phase.PROBE, f"health probe failed: {result.failures()}")
        return
    run.emit(Phase.PROBE, Status.OK)
