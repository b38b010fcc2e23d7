"""`xnodectl deploy`, start to end: prepare -> deploy/start.py (the workspace written, the build
started) -> the build awaited (the first wave's preflights run meanwhile) -> the fleet's waves ->
one report with every node in it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping

from xnodectl.deploy import build, fleet, prepare, sources, start
from xnodectl.deploy.events import Clock, Event, FleetReport, Outcome, Sink
from xnodectl.deploy.job import DeployOptions
from xnodectl.deploy.journal import Journal
from xnodectl.deploy.node import NodeDeploy
from xnodectl.deploy.stage import manifest_maker
from xnodectl.errors import DeployFailed, Interrupted, XnodeError
from xnodectl.workspace import Workspace


async def deploy(
    ws: Workspace,
    prepared: prepare.Prepared,
    req: prepare.Request,
    sink: Sink,
    started: start.Started,
) -> FleetReport:
    """The deploy, journaled in the workspace (deploy/journal.py): a studio open on it follows
    the run wherever it was started. `started`: its first step (deploy/start.py, which also
    stops what this leaves: the build, the SSH masters)."""
    run_id = prepare.deploy_id()
    journal = Journal(ws.root, run_id, prepared.names)

    def both(event: Event) -> None:
        sink(event)
        journal(event)

    try:
        report = await _deploy(ws, prepared, req, both, run_id, started)
        error = exit_error(report)
        journal.end(report.to_json(), int(error.exit_code) if error is not None else 0)
        return report
    finally:
        journal.close()


async def _deploy(
    ws: Workspace,
    prepared: prepare.Prepared,
    req: prepare.Request,
    sink: Sink,
    run_id: str,
    started: start.Started,
) -> FleetReport:
    clock = Clock(started.at)
    settings = prepared.inventory.settings
    names = list(prepared.names)
    signed = any(prepared.inventory.nodes[n].signed_deploys for n in names)
    opts = DeployOptions(
        deploy_id=run_id,
        confirm_timeout=prepared.confirm_timeout,
        activation_timeout=prepared.activation_timeout,
        substitute=req.substitute,
        manifest=manifest_maker(settings) if signed else None,
    )
    session = prepared.session or prepare.session_of(prepared.inventory)
    fopts = prepared.fleet
    plan = sources.Plan(fan_out=req.fan_out, via=req.via, substitute=req.substitute)
    # The first wave's preflights (connection, facts, lock) run while the system builds (NixOS
    # evaluation takes seconds): they leave the critical path, and an unreachable node is reported
    # before the build ends. Only as many as may deploy at once.
    first = fopts.first(names)
    early = {
        n: NodeDeploy(
            prepared.target(n),
            opts,
            session,
            sink,
            clock,
            carries_secrets=bool(prepared.secrets.get(n)),
        )
        for n in first
    }
    for node in early.values():
        node.start_preflight()
    try:
        built = await build.build(
            ws.root, names, sink, clock, running=started.build, since=started.at
        )
        # A failed build changes nothing in the workspace.
        prepare.restore(ws, prepared, started.snapshot, built.failed)
        jobs, failed = await build.jobs(prepared, built, clock, _runs(early))
        dist = sources.for_run(
            plan, jobs, prepared.inventory, session.dir, opts.deploy_id, started.signer
        )
        if dist is not None:
            jobs = [dataclasses.replace(job, sources=dist) for job in jobs]
    except BaseException as exc:
        await _abandon(early.values())
        session.close()
        if not isinstance(exc, asyncio.CancelledError):
            raise
        reason = "interrupted while building; the node is on its old generation"
        return FleetReport(
            [fleet.skipped(n, reason, sink, clock, Outcome.INTERRUPTED) for n in names],
            clock.elapsed(),
            interrupted=True,
        )
    try:
        reports, interrupted = await fleet.run(jobs, opts, fopts, session, sink, clock, early)
    finally:
        await _abandon(early.values())  # nodes never deployed: failed builds, skipped waves
        if dist is not None:  # the deploy's key leaves every holder
            await dist.close(lambda name: session.ssh(prepared.target(name)))
        session.close()
    by_name = {r.node: r for r in [*reports, *failed]}
    operator = dist.operator_bytes if dist is not None else None
    return FleetReport([by_name[n] for n in names], clock.elapsed(), interrupted, operator)


def _runs(early: Mapping[str, NodeDeploy]) -> Callable[[str, str], Awaitable[bool]]:
    async def runs(node: str, system: str) -> bool:
        return node in early and await early[node].runs(system)

    return runs


async def _abandon(nodes: Iterable[NodeDeploy]) -> None:
    """Release the nodes whose preflight ran but which were never deployed (lock, connection)."""
    await asyncio.gather(*(n.abandon() for n in nodes), return_exceptions=True)


def exit_error(report: FleetReport) -> XnodeError | None:
    """The error the CLI exits with, or None when every node is fine."""
    if report.interrupted:
        return Interrupted(
            "interrupted: "
            + "; ".join(f"{n.node} is on its {n.state.value} generation" for n in report.nodes)
        )
    if not report.ok:
        unreachable = sum(1 for n in report.nodes if n.unreachable)
        return DeployFailed(
            report.failed, len(report.nodes), unreachable, report.count(Outcome.SKIPPED)
        )
    return None
