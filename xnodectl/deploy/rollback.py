"""Rollback, in every form: abort an unconfirmed activation now (failed probe, Ctrl-C), find out
where the node settled, revert a wave's deployed nodes, and `xnodectl rollback` (move a node to
an earlier generation)."""

from __future__ import annotations

import asyncio
import time

from xnodectl.deploy.agent import Agent
from xnodectl.deploy.events import Clock, Event, NodeReport, NodeState, Outcome, Phase, Sink, Status
from xnodectl.deploy.job import NodeRun
from xnodectl.deploy.prepare import session_of, target_of
from xnodectl.errors import XnodeError
from xnodectl.remote import Session, Target
from xnodectl.workspace import Workspace

REVERT_TIMEOUT_S = 120.0
SWITCH_TIMEOUT_S = 300.0


async def roll_back(run: NodeRun, agent: Agent, phase: Phase, reason: str) -> None:
    """Abort now (the boot default never changed); raise with the settled state."""
    run.emit(Phase.ROLLBACK, Status.START, rollback_reason=reason)
    try:
        await agent.abort(run.opts.deploy_id, reason, timeout=run.opts.confirm_timeout + 30)
        state = NodeState.OLD
        run.emit(Phase.ROLLBACK, Status.OK, rollback_reason=reason)
    except XnodeError as exc:
        state = NodeState.UNKNOWN
        run.emit(
            Phase.ROLLBACK,
            Status.FAILED,
            message=f"{exc.message}; the node's timer rolls it back",
            rollback_reason=reason,
        )
    raise run.fail(phase, reason, Outcome.ROLLED_BACK, state, reason)


async def settle(run: NodeRun, agent: Agent, wait_s: float = 0.0) -> NodeState:
    """Which system runs now (over the still-open multiplexed connection), waiting up to wait_s."""
    end = time.monotonic() + wait_s
    while True:
        try:
            info = await agent.info(timeout=5)
            if info.current == run.job.system and info.generation != run.report.generation_before:
                return NodeState.NEW
            if info.current == run.report.system_before:
                return NodeState.OLD
        except XnodeError:
            pass
        if time.monotonic() >= end:
            return NodeState.UNKNOWN
        await asyncio.sleep(0.5)


async def interrupted(run: NodeRun, agent: Agent | None) -> None:
    """Ctrl-C: stop what runs, roll an unconfirmed activation back, record where the node is."""
    run.report.outcome = Outcome.INTERRUPTED
    if not run.begun or agent is None:
        run.report.state = NodeState.OLD
    elif run.confirmed:
        run.report.state = NodeState.NEW
    else:
        try:
            await agent.abort(run.opts.deploy_id, "interrupted by the operator", timeout=20)
        except XnodeError:
            pass
        run.report.state = await settle(run, agent, wait_s=5.0)
    run.report.error = f"interrupted; the node is on its {run.report.state.value} generation"
    run.emit(Phase.DONE, Status.FAILED, message=run.report.error)


async def revert(
    report: NodeReport, session: Session, target: Target, reason: str, sink: Sink, clock: Clock
) -> None:
    """Return a node that deployed fine to its previous generation (fleet revert of a wave)."""
    node = target.node
    sink(Event(node, Phase.ROLLBACK, Status.START, clock.elapsed(), rollback_reason=reason))
    ssh = session.ssh(target)
    try:
        await Agent(ssh).rollback(report.generation_before, timeout=REVERT_TIMEOUT_S)
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
        return await Agent(ssh, install_missing=True).rollback(to, timeout=SWITCH_TIMEOUT_S)
    finally:
        await ssh.close()
        session.close()
