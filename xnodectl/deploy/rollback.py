"""Rollback, in every form: abort an unconfirmed activation now (failed probe, Ctrl-C), find out
where the node settled, revert a wave's deployed nodes, and `xnodectl rollback` (move a node to
an earlier generation)."""

from __future__ import annotations

import asyncio
import time

from xnodectl.deploy.agent import Agent, AgentError, wait_result
from xnodectl.deploy.events import Clock, Event, NodeReport, NodeState, Outcome, Phase, Sink, Status
from xnodectl.deploy.job import STEP_TIMEOUT_S, ManifestMaker, NodeRun
from xnodectl.deploy.prepare import session_of, target_of
from xnodectl.deploy.replies import Generation
from xnodectl.deploy.stage import manifest_maker
from xnodectl.errors import UsageError, XnodeError
from xnodectl.remote import Session, Target
from xnodectl.workspace import Workspace

REVERT_TIMEOUT_S = 120.0
SWITCH_TIMEOUT_S = 300.0
# An interrupt can cut off `begin`'s reply, or `begin` itself before it reached the node: the node
# may still be about to start the activation. Its abort is asked again for this long.
BEGIN_LANDING_S = 5.0


def outcome_of(state: NodeState) -> Outcome:
    """A deploy that did not succeed: rolled back only if the node really runs its old system."""
    return Outcome.ROLLED_BACK if state is NodeState.OLD else Outcome.FAILED


async def roll_back(run: NodeRun, agent: Agent, phase: Phase, reason: str) -> None:
    """Abort now (the boot default never changed); raise with the state the node reports."""
    run.emit(Phase.ROLLBACK, Status.START, rollback_reason=reason)
    try:
        result = wait_result(
            await agent.abort(run.opts.deploy_id, reason, timeout=run.opts.confirm_timeout + 30)
        )
        if result.fallback:
            reason = f"{reason}; {result.fallback}"
        state = await settle(run, agent)
        ok = result.rolled_back and state is NodeState.OLD
        run.emit(
            Phase.ROLLBACK,
            Status.OK if ok else Status.FAILED,
            message=None if ok else f"the node runs {state.value} ({result.state})",
            rollback_reason=reason,
        )
    except XnodeError as exc:
        state = await settle(run, agent)
        run.emit(
            Phase.ROLLBACK,
            Status.FAILED,
            message=f"{exc.message}; the node's timer rolls it back",
            rollback_reason=reason,
        )
    raise run.fail(phase, reason, outcome_of(state), state, reason)


async def settle(run: NodeRun, agent: Agent, wait_s: float = 0.0) -> NodeState:
    """What the node says it runs now (over the still-open multiplexed connection), waiting up to
    wait_s for it to reach its old or its new (confirmed) system."""
    end = time.monotonic() + wait_s
    state = NodeState.UNKNOWN
    while True:
        try:
            info = await agent.info(timeout=5)
            if info.current == run.job.system:
                state = (
                    NodeState.NEW if info.profile == run.job.system else NodeState.NEW_UNCONFIRMED
                )
            elif info.current == run.report.system_before:
                state = NodeState.OLD
            else:
                state = NodeState.UNKNOWN
            if state in (NodeState.OLD, NodeState.NEW):
                return state
        except XnodeError:
            pass
        if time.monotonic() >= end:
            return state
        await asyncio.sleep(0.5)


async def interrupted(run: NodeRun, agent: Agent | None) -> None:
    """Ctrl-C: stop what runs, roll an unconfirmed activation back, record where the node is."""
    run.report.outcome = Outcome.INTERRUPTED
    if not run.begun or agent is None:
        run.report.state = NodeState.OLD
    elif run.confirmed:
        run.report.state = NodeState.NEW
    else:
        await _abort_landing(run, agent)
        run.report.state = await settle(run, agent, wait_s=5.0)
    run.report.error = f"interrupted; the node is on its {run.report.state.value} generation"
    run.emit(Phase.DONE, Status.FAILED, message=run.report.error)


async def _abort_landing(run: NodeRun, agent: Agent) -> None:
    """Abort the activation, asking again while the node knows no such deploy yet (a `begin` still
    on its way), so a late `begin` is rolled back now instead of by the node's timer."""
    end = time.monotonic() + BEGIN_LANDING_S
    while True:
        try:
            await agent.abort(run.opts.deploy_id, "interrupted by the operator", timeout=20)
        except AgentError as exc:
            if not exc.reason.startswith("no deploy") or time.monotonic() >= end:
                return
        except XnodeError:
            return
        else:
            return
        await asyncio.sleep(0.25)


async def revert(
    report: NodeReport,
    session: Session,
    target: Target,
    reason: str,
    sink: Sink,
    clock: Clock,
    maker: ManifestMaker | None = None,
) -> None:
    """Return a node that deployed fine to its previous generation (fleet revert of a wave)."""
    node = target.node
    sink(Event(node, Phase.ROLLBACK, Status.START, clock.elapsed(), rollback_reason=reason))
    ssh = session.ssh(target)
    try:
        manifest = (
            maker(node, report.system_before, report.system_after)
            if maker is not None and report.system_before is not None
            else None
        )
        await Agent(ssh).rollback(report.generation_before, REVERT_TIMEOUT_S, manifest)
        report.outcome, report.state, report.rollback_reason = (
            Outcome.ROLLED_BACK,
            NodeState.OLD,
            reason,
        )
        sink(Event(node, Phase.ROLLBACK, Status.OK, clock.elapsed(), rollback_reason=reason))
    except XnodeError as exc:
        report.error = f"wave revert failed: {exc.message}"
        sink(Event(node, Phase.ROLLBACK, Status.FAILED, clock.elapsed(), message=report.error))
    finally:
        await ssh.close()


async def to_generation(ws: Workspace, name: str, to: int | None) -> int | None:
    """`xnodectl rollback`: the node switches to generation `to` (default: the previous one);
    returns the generation it now runs and boots."""
    inventory = ws.load()
    session = session_of(inventory)
    ssh = session.ssh(target_of(name, inventory.node(name)))
    try:
        agent = Agent(ssh, install_missing=True)
        info = await agent.info(timeout=STEP_TIMEOUT_S)
        manifest = None
        if info.signed_deploys:  # the node wants the owner's signature for this generation too
            system = _target(await agent.generations(timeout=STEP_TIMEOUT_S), to).path
            manifest = manifest_maker(inventory.settings)(name, system, info.current)
        return await agent.rollback(to, SWITCH_TIMEOUT_S, manifest)
    finally:
        await ssh.close()
        session.close()


def _target(gens: list[Generation], to: int | None) -> Generation:
    """Generation `to`, or the newest one older than the current (what the agent picks too)."""
    current = next((g.number for g in gens if g.current), None)
    if to is None:
        older = [g for g in gens if current is not None and g.number < current]
        if older:
            return max(older, key=lambda g: g.number)
    else:
        for g in gens:
            if g.number == to:
                return g
    raise UsageError(
        f"no generation {to if to is not None else 'older than the current one'} on the node",
        hint="see them with: xnodectl generations --node NAME",
    )
