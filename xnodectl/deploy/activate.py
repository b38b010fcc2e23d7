"""Stage 5, activate: `begin` + `wait` in one round trip. The node runs
`switch-to-configuration test` detached, with its dead-man timer armed; a failing or hung
activation is rolled back by the node itself and the report carries its exit code and log tail."""

from __future__ import annotations

import asyncio
import time

from xnodectl.deploy.agent import Agent, AgentError, WaitResult, wait_result
from xnodectl.deploy.events import NodeState, Outcome, Phase, Status
from xnodectl.deploy.job import NodeRun
from xnodectl.deploy.rollback import outcome_of, roll_back, settle
from xnodectl.remote import Unreachable


async def activate(run: NodeRun, agent: Agent, manifest: bytes | None) -> None:
    run.emit(Phase.ACTIVATE, Status.START)
    # The agent kills a hung activation at activation_timeout and rolls back; allow for that.
    wait_s = run.opts.activation_timeout + run.job.probe_budget + run.opts.confirm_timeout + 10
    deadline = time.monotonic() + wait_s
    begin = agent.begin_args(
        run.job.system,
        run.opts.deploy_id,
        run.opts.confirm_timeout,
        run.opts.activation_timeout,
        run.job.probe_budget,
    )
    # From here an interrupt must abort: `begin` may have run even if its reply never arrives.
    run.begun = True
    try:
        replies = await agent.chain(
            begin,
            agent.wait_args(run.opts.deploy_id, wait_s),
            timeout=wait_s + 10,
            file=("--manifest", manifest) if manifest is not None else None,
        )
        result = wait_result(replies[1])
    except AgentError as exc:
        if not exc.done:  # begin itself refused: nothing changed
            run.begun = False
            raise run.fail(Phase.ACTIVATE, exc.reason) from exc
        result = await _wait_again(run, agent, deadline, exc)
    except Unreachable:
        # Activation may restart sshd or the network: ask again over new connections.
        result = await _wait_again(run, agent, deadline, None)
    if result.state == "activated":
        run.emit(Phase.ACTIVATE, Status.OK)
        return
    await _not_activated(run, agent, result)


async def _not_activated(run: NodeRun, agent: Agent, result: WaitResult) -> None:
    """The node did not keep the new system: say why and what it runs now (it says so itself)."""
    if result.state == "failed":
        # The node's supervisor already re-activated the previous system.
        tail = result.log_tail.strip().splitlines()[-1:] or [""]
        reason = result.reason or f"activation exited {result.exit_code}"
        detail = f"{reason}: {tail[0]}" if tail[0] else reason
        if result.fallback:
            detail = f"{detail}; {result.fallback}"
        state = await settle(run, agent)
        run.emit(
            Phase.ROLLBACK,
            Status.OK if result.rolled_back else Status.FAILED,
            rollback_reason=detail,
        )
        raise run.fail(Phase.ACTIVATE, detail, outcome_of(state), state, detail)
    reason = result.reason or result.state
    if result.fallback:
        reason = f"{reason}; {result.fallback}"
    state = await settle(run, agent)
    message = f"the node did not keep the new system ({result.state})"
    raise run.fail(Phase.ACTIVATE, message, outcome_of(state), state, reason)


async def _wait_again(
    run: NodeRun, agent: Agent, deadline: float, error: AgentError | None
) -> WaitResult:
    """The begin+wait session broke: wait again (fresh connections) until the deadline."""
    if error is not None and ("timeout" in error.reason or "timed out" in error.reason):
        await roll_back(
            run,
            agent,
            Phase.ACTIVATE,
            f"activation did not finish within {run.opts.activation_timeout:g} s",
        )
    while True:
        try:
            return await agent.wait(
                run.opts.deploy_id, max(1.0, deadline - time.monotonic()), fresh=True
            )
        except Unreachable:
            if time.monotonic() >= deadline:
                await roll_back(run, agent, Phase.ACTIVATE, "node unreachable during activation")
            await asyncio.sleep(1.0)
        except AgentError as exc:
            if exc.reason.startswith("no deploy"):  # begin never ran: nothing changed
                run.begun = False
                raise run.fail(Phase.ACTIVATE, "connection lost before activation began") from exc
            raise run.fail(
                Phase.ACTIVATE, exc.message, Outcome.ROLLED_BACK, NodeState.UNKNOWN
            ) from exc
