"""Stage 2, build: every selected node's system in ONE `nix build` (identical closures are built
once), then one `nix path-info` per distinct closure (NAR sizes = the bytes to move), unless every
node of that closure already runs it. The result is each node's job, or the reason its build
failed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xnodectl import nix
from xnodectl.deploy.events import Clock, Event, NodeReport, NodeState, Outcome, Phase, Sink, Status
from xnodectl.deploy.job import NodeJob
from xnodectl.deploy.prepare import BUILD_TIMEOUT_S, Prepared
from xnodectl.errors import CommandFailed, XnodeError


@dataclass(frozen=True)
class Built:
    systems: dict[str, str | XnodeError]  # node -> store path, or why its build failed
    seconds: float

    @property
    def failed(self) -> list[str]:
        return [n for n, s in self.systems.items() if isinstance(s, XnodeError)]


async def build(
    flake: Path,
    names: Sequence[str],
    sink: Sink,
    clock: Clock,
    timeout: float = BUILD_TIMEOUT_S,
    fail_fast: bool = False,
    running: Awaitable[list[str]] | None = None,
    since: float | None = None,
) -> Built:
    """Build all selected systems in one nix call; on failure, per node to say which failed.
    `running`: that one call, started at `since` (time.monotonic(); deploy/start.py)."""
    started = time.monotonic() if since is None else since
    for name in names:
        sink(Event(name, Phase.BUILD, Status.START, round(started - clock.start, 3)))
    attrs = [nix.toplevel_attr(flake, n) for n in names]
    out: dict[str, str | XnodeError] = {}
    try:
        if running is None:
            running = nix.build(attrs, timeout=timeout, fail_fast=fail_fast)
        out.update(zip(names, await running, strict=True))
    except CommandFailed as exc:
        if len(names) == 1:
            out[names[0]] = exc
        for name, attr in zip(names, attrs, strict=True):
            if name in out:
                continue
            try:
                out[name] = (await nix.build([attr], timeout=timeout, fail_fast=fail_fast))[0]
            except XnodeError as one:
                out[name] = one
    seconds = round(time.monotonic() - started, 3)
    for name in names:
        result = out[name]
        failed = isinstance(result, XnodeError)
        sink(
            Event(
                name,
                Phase.BUILD,
                Status.FAILED if failed else Status.OK,
                clock.elapsed(),
                seconds=seconds,
                message=result.message if isinstance(result, XnodeError) else result,
            )
        )
    return Built(out, seconds)


async def jobs(
    prepared: Prepared,
    built: Built,
    clock: Clock,
    runs: Callable[[str, str], Awaitable[bool]] | None = None,
) -> tuple[list[NodeJob], list[NodeReport]]:
    """The jobs of the nodes that built (closure sizes asked once per distinct system, the
    systems side by side), and the reports of those that did not.

    `runs(node, system)`: whether the node's early preflight finds it running `system` (and
    booting it). A system every node of which runs it already is nobody's copy: its closure is
    not waited for (the query starts anyway, so a node that needs it never waits longer)."""
    nodes: dict[str, list[str]] = {}
    for name in prepared.names:
        system = built.systems[name]
        if not isinstance(system, XnodeError):
            nodes.setdefault(system, []).append(name)
    read = await asyncio.gather(*(_closure(s, ns, runs) for s, ns in nodes.items()))
    closures = dict(zip(nodes, read, strict=True))
    out, failed = [], []
    for name in prepared.names:
        system = built.systems[name]
        if isinstance(system, XnodeError):
            failed.append(_failed(name, f"build failed: {system.message}", built, clock))
            continue
        closure = closures[system]
        if isinstance(closure, XnodeError):  # reported for the node, like a failed build
            failed.append(_failed(name, f"closure query failed: {closure.message}", built, clock))
            continue
        out.append(
            NodeJob(
                target=prepared.target(name),
                system=system,
                closure=closure,
                secrets=prepared.secrets[name],
                probes=tuple(p for app in prepared.rendered[name] for p in app.probes),
                build_seconds=built.seconds,
            )
        )
    return out, failed


async def _closure(
    system: str, nodes: Sequence[str], runs: Callable[[str, str], Awaitable[bool]] | None
) -> nix.Closure | XnodeError | None:
    """`system`'s closure; None when every node in `nodes` already runs it."""
    query = asyncio.ensure_future(nix.closure(system))
    check = asyncio.ensure_future(_all_run(system, nodes, runs))
    try:
        await asyncio.wait({query, check}, return_when=asyncio.FIRST_COMPLETED)
        if not query.done() and await check:
            return None
        return await query
    except XnodeError as exc:
        return exc
    finally:
        for task in (query, check):
            task.cancel()
        await asyncio.gather(query, check, return_exceptions=True)


async def _all_run(
    system: str, nodes: Sequence[str], runs: Callable[[str, str], Awaitable[bool]] | None
) -> bool:
    if runs is None:
        return False
    return all(await asyncio.gather(*(runs(n, system) for n in nodes)))


def _failed(name: str, error: str, built: Built, clock: Clock) -> NodeReport:
    return NodeReport(
        name,
        Outcome.FAILED,
        NodeState.OLD,
        seconds=clock.elapsed(),
        phases={Phase.BUILD.value: built.seconds},
        error=error,
    )
