"""Fleet runs: bounded parallelism, canary waves, failure budget, optional wave revert, Ctrl-C."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TypeVar

from xnodectl.deploy.events import (
    Clock,
    Event,
    NodeReport,
    NodeState,
    Outcome,
    Phase,
    Sink,
    Status,
)
from xnodectl.deploy.job import DeployOptions, NodeJob
from xnodectl.deploy.node import NodeDeploy, deploy_node
from xnodectl.deploy.prepare import FleetOptions
from xnodectl.deploy.rollback import revert
from xnodectl.remote import Session

__all__ = ["FleetOptions", "run", "skipped"]


T = TypeVar("T")


def skipped(
    node: str, reason: str, sink: Sink, clock: Clock, outcome: Outcome = Outcome.SKIPPED
) -> NodeReport:
    sink(Event(node, Phase.DONE, Status.SKIPPED, clock.elapsed(), message=reason))
    return NodeReport(
        node, outcome=outcome, state=NodeState.OLD, error=reason, seconds=clock.elapsed()
    )


class _Budget:
    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.failed = 0

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.failed > self.limit


async def _one(
    job: NodeJob,
    opts: DeployOptions,
    session: Session,
    sink: Sink,
    clock: Clock,
    sem: asyncio.Semaphore,
    budget: _Budget,
    started: NodeDeploy | None,
) -> NodeReport:
    try:
        async with sem:
            if budget.exhausted:
                return skipped(
                    job.target.node,
                    f"not started: more than {budget.limit} nodes failed",
                    sink,
                    clock,
                )
            report = await deploy_node(job, opts, session, sink, clock, started)
    except asyncio.CancelledError:  # cancelled while waiting for a slot: never touched
        return skipped(
            job.target.node,
            "interrupted before it started; the node is on its old generation",
            sink,
            clock,
            Outcome.INTERRUPTED,
        )
    if not report.ok:
        budget.failed += 1
    return report


async def _collect_interrupted(
    jobs: Sequence[NodeJob],
    wave: Sequence[NodeJob],
    tasks: Sequence[asyncio.Future[NodeReport]],
    reports: dict[str, NodeReport],
    sink: Sink,
    clock: Clock,
) -> None:
    """Ctrl-C: gather cancelled the wave's tasks; each settles its node and returns its report."""
    await asyncio.wait(tasks)
    for job, task in zip(wave, tasks, strict=True):
        reports[job.target.node] = (
            task.result()
            if not task.cancelled()
            else skipped(job.target.node, "interrupted", sink, clock, Outcome.INTERRUPTED)
        )
    for job in jobs:
        if job.target.node not in reports:
            reports[job.target.node] = skipped(
                job.target.node,
                "interrupted before it started; the node is on its old generation",
                sink,
                clock,
                Outcome.INTERRUPTED,
            )


async def run(
    jobs: Sequence[NodeJob],
    opts: DeployOptions,
    fopts: FleetOptions,
    session: Session,
    sink: Sink,
    clock: Clock,
    started: Mapping[str, NodeDeploy] | None = None,
) -> tuple[list[NodeReport], bool]:
    """Deploy all jobs; returns every node's report and whether the run was interrupted.
    `started`: nodes whose preflight already runs (the caller abandons those never deployed)."""
    started = started or {}
    sem = asyncio.Semaphore(fopts.max_parallel or len(jobs) or 1)
    budget = _Budget(fopts.max_failures)
    reports: dict[str, NodeReport] = {}
    plan = fopts.waves(jobs)
    for index, wave in enumerate(plan):
        tasks = [
            asyncio.ensure_future(
                _one(j, opts, session, sink, clock, sem, budget, started.get(j.target.node))
            )
            for j in wave
        ]
        try:
            results = await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            await _collect_interrupted(jobs, wave, tasks, reports, sink, clock)
            return [reports[j.target.node] for j in jobs], True
        for job, report in zip(wave, results, strict=True):
            reports[job.target.node] = report
        failed = [r for r in results if not r.ok]
        if failed and fopts.revert_wave_on_failure:
            reason = f"wave {index + 1} reverted: {', '.join(r.node for r in failed)} failed"
            await asyncio.gather(
                *(
                    revert(r, session, j.target, reason, sink, clock, opts.manifest)
                    for j, r in zip(wave, results, strict=True)
                    if r.outcome is Outcome.DEPLOYED
                )
            )
        if failed and index + 1 < len(plan):
            for job in (j for later in plan[index + 1 :] for j in later):
                reports[job.target.node] = skipped(
                    job.target.node, f"not started: wave {index + 1} had failures", sink, clock
                )
            break
    return [reports[j.target.node] for j in jobs], False
