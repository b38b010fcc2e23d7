"""Fleet scheduling (waves, failure budget, parallel limit) with the per-node pipeline replaced by a
scripted stand-in: the scheduling logic is tested alone here; real nodes are in
test_deploy_nodes.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from xnodectl import nix
from xnodectl.deploy import fleet
from xnodectl.deploy.events import Clock, Event, NodeReport, NodeState, Outcome
from xnodectl.deploy.job import DeployOptions, NodeJob
from xnodectl.remote import Session, Target


def jobs(n: int) -> list[NodeJob]:
    closure = nix.Closure("/nix/store/x", {})
    return [
        NodeJob(Target(f"n{i}", "h", 22, "root", "ssh-ed25519 AAAA"), "/nix/store/x", closure)
        for i in range(n)
    ]


def run(
    monkeypatch: pytest.MonkeyPatch, n: int, failing: set[str], fopts: fleet.FleetOptions
) -> tuple[list[NodeReport], list[str], int]:
    started: list[str] = []
    peak = 0
    active = 0

    async def fake(job: NodeJob, *args: Any) -> NodeReport:
        nonlocal active, peak
        started.append(job.target.node)
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        ok = job.target.node not in failing
        return NodeReport(
            job.target.node,
            Outcome.DEPLOYED if ok else Outcome.FAILED,
            NodeState.NEW if ok else NodeState.OLD,
        )

    monkeypatch.setattr(fleet, "deploy_node", fake)
    events: list[Event] = []
    session = Session()
    try:
        reports, interrupted = asyncio.run(
            fleet.run(jobs(n), DeployOptions("d1"), fopts, session, events.append, Clock())
        )
    finally:
        session.close()
    assert not interrupted
    return reports, started, peak


def test_parallel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    reports, started, peak = run(monkeypatch, 7, set(), fleet.FleetOptions(max_parallel=3))
    assert peak == 3 and len(started) == 7 and all(r.ok for r in reports)


def test_one_failure_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    reports, _, _ = run(monkeypatch, 4, {"n1"}, fleet.FleetOptions())
    assert [r.outcome for r in reports] == [
        Outcome.DEPLOYED,
        Outcome.FAILED,
        Outcome.DEPLOYED,
        Outcome.DEPLOYED,
    ]


def test_canary_failure_skips_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    reports, started, _ = run(monkeypatch, 4, {"n0"}, fleet.FleetOptions(canary=1))
    assert started == ["n0"]
    assert [r.outcome for r in reports[1:]] == [Outcome.SKIPPED] * 3


def test_max_failures_stops_starting_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    reports, started, _ = run(
        monkeypatch, 5, {"n0", "n1"}, fleet.FleetOptions(max_parallel=1, max_failures=1)
    )
    assert started == ["n0", "n1"]
    assert [r.outcome for r in reports[2:]] == [Outcome.SKIPPED] * 3
    assert all(r.state is NodeState.OLD for r in reports[2:])


def test_failed_skipped_and_interrupted_are_counted_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: "4 of 4 nodes failed" for one failure and three skips."""
    from xnodectl.deploy.events import FleetReport
    from xnodectl.deploy.run import exit_error
    from xnodectl.errors import ExitCode

    reports, _, _ = run(monkeypatch, 4, {"n0"}, fleet.FleetOptions(canary=1))
    report = FleetReport(reports, 1.0)
    data = report.to_json()
    assert (data["failed"], data["skipped"], data["deployed"], data["total"]) == (1, 3, 0, 4)
    error = exit_error(report)
    assert error is not None and error.message == "1 of 4 nodes failed, 3 skipped"
    assert error.exit_code is ExitCode.ALL_FAILED  # no node ended on the new system
    assert all(r.seconds > 0 for r in reports[1:])  # skipped nodes carry real times too
