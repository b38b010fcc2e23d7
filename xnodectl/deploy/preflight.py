"""Stage 3, preflight: ONE round trip that proves the node reachable (bounded), its host key (ssh
enforces the pinned one), the agent present (uploaded when missing), reads the node's facts and
takes its deploy lock. It needs no built system, so the first wave runs it while the build runs."""

from __future__ import annotations

import asyncio

from xnodectl.deploy.agent import Agent, AgentError, Info
from xnodectl.deploy.events import Phase, Status
from xnodectl.deploy.job import NodeRun
from xnodectl.remote import RemoteError, Unreachable


async def preflight(run: NodeRun, agent: Agent) -> Info:
    """Facts + lock. A lock refusal still reports what the node runs."""
    run.emit(Phase.PREFLIGHT, Status.START)
    lock = ["lock", "--holder", run.opts.deploy_id]
    try:
        replies = await agent.chain(["info"], lock, timeout=run.opts.preflight_timeout)
    except asyncio.CancelledError:
        run.lock_unknown = True  # the lock may have been taken: cleanup releases it if ours
        raise
    except AgentError as exc:
        if exc.done:
            _facts(run, agent.parse_info(exc.done[0]))
        msg = (
            f"another deploy holds the node's lock ({exc.data.get('holder')}, "
            f"since {exc.data.get('since')})"
            if exc.reason == "locked"
            else exc.message
        )
        raise run.fail(Phase.PREFLIGHT, msg) from exc
    except RemoteError as exc:
        run.report.unreachable = isinstance(exc, Unreachable)
        raise run.fail(Phase.PREFLIGHT, exc.message) from exc
    run.locked = True
    info = agent.parse_info(replies[0])
    _facts(run, info)
    try:
        await agent.ensure_version(info)
    except AgentError as exc:
        raise run.fail(Phase.PREFLIGHT, exc.message) from exc
    if info.current is None and info.generation is not None:
        # A profile exists but nothing runs: we could not say what "roll back" would return to.
        raise run.fail(
            Phase.PREFLIGHT,
            "the node's current system is unknown "
            "(/run/current-system missing while the system profile exists)",
        )
    run.emit(Phase.PREFLIGHT, Status.OK, generation_before=info.generation)
    return info


def _facts(run: NodeRun, info: Info) -> None:
    run.report.system_before, run.report.generation_before = info.current, info.generation
