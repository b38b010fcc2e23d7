"""Stage 7, confirm: over a NEW SSH connection (proof that the new system still takes logins) the
node sets the system profile and the boot default and releases the lock. No confirmation within
the window = the node rolls itself back; then the report says which system it runs."""

from __future__ import annotations

import asyncio
import time

from xnodectl.deploy.agent import Agent, AgentError
from xnodectl.deploy.events import Outcome, Phase, Status
from xnodectl.deploy.job import NodeRun
from xnodectl.deploy.rollback import outcome_of, settle
from xnodectl.remote import RemoteError

RETRY_S = 0.5
SETTLE_S = 10.0  # how long to watch the node's own rollback after the window closed


async def confirm(run: NodeRun, agent: Agent) -> None:
    run.emit(Phase.CONFIRM, Status.START)
    deadline = time.monotonic() + run.opts.confirm_timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            run.report.generation_after, unlocked = await agent.confirm(
                run.opts.deploy_id,
                timeout=max(2.0, deadline - time.monotonic()),
                unlock_holder=run.opts.deploy_id,
            )
            run.locked = not unlocked
        except RemoteError as exc:
            last = exc.message
            await asyncio.sleep(RETRY_S)
            continue
        except AgentError as exc:
            state = await settle(run, agent)
            if exc.data.get("state") == "confirmed":  # the profile moved; `boot` failed
                run.confirmed = True
                raise run.fail(Phase.CONFIRM, exc.message, Outcome.FAILED, state) from exc
            raise run.fail(
                Phase.CONFIRM, exc.message, outcome_of(state), state, exc.reason
            ) from exc
        run.confirmed = True
        run.emit(
            Phase.CONFIRM,
            Status.OK,
            generation_before=run.report.generation_before,
            generation_after=run.report.generation_after,
        )
        return
    reason = f"confirmation did not arrive within {run.opts.confirm_timeout} s ({last})"
    state = await settle(run, agent, wait_s=SETTLE_S)
    raise run.fail(Phase.CONFIRM, reason, outcome_of(state), state, reason)
