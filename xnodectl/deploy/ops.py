"""status, generations, rollback: read or move one node's generations through xnode-activate."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xnodectl import apps, nix
from xnodectl import inventory as inv
from xnodectl.deploy.helper import Helper
from xnodectl.deploy.service import Selection, select, target_of
from xnodectl.errors import ExternalError, XnodeError
from xnodectl.remote import Session
from xnodectl.workspace import Workspace

STATUS_BUDGET_S = 10.0
PROBE_BUDGET_S = 5


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
    health: list[dict[str, Any]] = field(default_factory=list)
    unknown: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _session(inventory: inv.Inventory) -> Session:
    key = inventory.settings.ssh_key
    return Session(Path(key).expanduser() if key else None)


async def _one_status(ws: Workspace, session: Session, name: str, node: inv.Node) -> NodeStatus:
    st = NodeStatus(name, apps=[f"{a.instance} ({a.template})" for a in node.apps])
    try:
        st.desired_system = await nix.eval_out_path(
            nix.toplevel_attr(ws.root, name), timeout=STATUS_BUDGET_S
        )
    except XnodeError as exc:
        st.unknown["desired"] = f"could not evaluate the workspace: {exc.message}"
    try:
        ssh = session.ssh(target_of(name, node))
    except XnodeError as exc:
        st.unknown["node"] = exc.message
        return st
    helper = Helper(ssh, install_missing=True)
    try:
        info = await helper.info(timeout=STATUS_BUDGET_S)
        st.reachable, st.current_system, st.current_generation = (
            True,
            info.current,
            info.generation,
        )
        probes = [
            {
                "kind": p.kind,
                "target": p.target,
                "status": p.status,
                "timeout": min(p.timeout, PROBE_BUDGET_S),
            }
            for app in apps.render_node(node.apps)
            for p in app.probes
        ]
        if probes:
            result = await helper.probe(probes, timeout=PROBE_BUDGET_S + 10)
            st.healthy, st.health = result.ok, result.results
    except XnodeError as exc:
        st.unknown["node"] = exc.message
    finally:
        await ssh.close()
    if st.desired_system and st.reachable:
        st.drift = st.desired_system != st.current_system
    return st


async def status(ws: Workspace, selection: Selection) -> list[NodeStatus]:
    inventory = ws.load()
    names = select(inventory, selection, default_all=True)
    session = _session(inventory)
    try:
        return list(
            await asyncio.gather(*(_one_status(ws, session, n, inventory.nodes[n]) for n in names))
        )
    finally:
        session.close()


async def _with_helper(ws: Workspace, name: str, action: str, to: int | None = None) -> Any:
    inventory = ws.load()
    node = inventory.node(name)
    session = _session(inventory)
    ssh = session.ssh(target_of(name, node))
    helper = Helper(ssh, install_missing=True)
    try:
        if action == "generations":
            return await helper.generations(timeout=STATUS_BUDGET_S)
        return await helper.rollback(to, timeout=300)
    finally:
        await ssh.close()
        session.close()


async def generations(ws: Workspace, name: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await _with_helper(ws, name, "generations")
    return result


async def rollback(ws: Workspace, name: str, to: int | None) -> dict[str, Any]:
    result = await _with_helper(ws, name, "rollback", to)
    if not isinstance(result, dict):
        raise ExternalError(f"node '{name}': unexpected rollback reply")
    return result
