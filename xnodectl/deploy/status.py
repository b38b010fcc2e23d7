"""`xnodectl status` and `xnodectl generations`: read what nodes run, through their agents.

Every step is bounded; steps that take over a second say so on stderr (`progress`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from xnodectl import app_request, nix
from xnodectl import inventory as inv
from xnodectl.deploy.agent import Agent
from xnodectl.deploy.prepare import Selection, select, session_of, target_of
from xnodectl.deploy.replies import Generation, ProbeCheck
from xnodectl.errors import NodeUnreachable, XnodeError
from xnodectl.remote import Session, Unreachable
from xnodectl.workspace import Workspace

STATUS_BUDGET_S = 10.0
PROBE_BUDGET_S = 5
SLOW_STEP_S = 1.0  # steps longer than this are announced on stderr

Progress = Callable[[str], None]


@dataclass
class NodeStatus:
    node: str
    reachable: bool = False
    current_system: str | None = None
    current_generation: int | None = None
    desired_system: str | None = None
    drift: bool | None = None  # None: unknown (see `unknown`)
    apps: list[str] = field(default_factory=list)
    healthy: bool | None = None
    health: list[ProbeCheck] = field(default_factory=list)
    unknown: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusReport:
    nodes: tuple[NodeStatus, ...]

    @property
    def unreachable(self) -> list[str]:
        return [s.node for s in self.nodes if not s.reachable]

    def exit_error(self) -> XnodeError | None:
        if not self.unreachable:
            return None
        return NodeUnreachable(
            f"{len(self.unreachable)} of {len(self.nodes)} nodes unreachable: "
            + ", ".join(self.unreachable),
            hint="check the address and that sshd runs: xnodectl node list",
        )


class _Announce:
    """Says on stderr that a step is running once it took a second, and how long it took."""

    def __init__(self, progress: Progress, what: str) -> None:
        self.progress, self.what = progress, what
        self.started = time.monotonic()
        self.timer = asyncio.get_running_loop().call_later(
            SLOW_STEP_S, lambda: progress(f"{what} ...")
        )

    def done(self, result: str) -> None:
        self.timer.cancel()
        seconds = time.monotonic() - self.started
        if seconds >= SLOW_STEP_S:
            self.progress(f"{self.what}: {result} ({seconds:.1f}s)")


async def _desired(ws: Workspace, st: NodeStatus, progress: Progress) -> None:
    step = _Announce(progress, f"{st.node}: evaluating the desired system")
    try:
        st.desired_system = await nix.eval_out_path(
            nix.toplevel_attr(ws.root, st.node), timeout=STATUS_BUDGET_S
        )
        step.done("done")
    except XnodeError as exc:
        st.unknown["desired"] = f"could not evaluate the workspace: {exc.message}"
        step.done("unknown")


async def _current(session: Session, st: NodeStatus, node: inv.Node, progress: Progress) -> None:
    step = _Announce(progress, f"{st.node}: asking the node")
    try:
        ssh = session.ssh(target_of(st.node, node))
    except XnodeError as exc:
        st.unknown["node"] = exc.message
        step.done("unknown")
        return
    agent = Agent(ssh, install_missing=True)
    try:
        info = await agent.info(timeout=STATUS_BUDGET_S)
        st.reachable, st.current_system = True, info.current
        st.current_generation = info.generation
        probes = [p for app in app_request.render_node(node.apps) for p in app.probes]
        if probes:
            result = await agent.probe(probes, timeout=PROBE_BUDGET_S + 10, cap=PROBE_BUDGET_S)
            st.healthy, st.health = result.ok, list(result.results)
        step.done("reachable")
    except XnodeError as exc:
        st.unknown["node"] = exc.message
        step.done("unreachable" if isinstance(exc, Unreachable) else "unknown")
    finally:
        await ssh.close()


async def _one(
    ws: Workspace, session: Session, name: str, node: inv.Node, progress: Progress
) -> NodeStatus:
    st = NodeStatus(name, apps=[f"{a.instance} ({a.template})" for a in node.apps])
    await asyncio.gather(_desired(ws, st, progress), _current(session, st, node, progress))
    if st.desired_system and st.reachable:
        st.drift = st.desired_system != st.current_system
    return st


async def status(ws: Workspace, selection: Selection, progress: Progress) -> StatusReport:
    inventory = ws.load()
    names = select(inventory, selection, default_all=True)
    session = session_of(inventory)
    try:
        found = await asyncio.gather(
            *(_one(ws, session, n, inventory.nodes[n], progress) for n in names)
        )
    finally:
        session.close()
    return StatusReport(tuple(found))


async def generations(ws: Workspace, name: str) -> list[Generation]:
    inventory = ws.load()
    session = session_of(inventory)
    ssh = session.ssh(target_of(name, inventory.node(name)))
    try:
        return await Agent(ssh, install_missing=True).generations(timeout=STATUS_BUDGET_S)
    finally:
        await ssh.close()
        session.close()
