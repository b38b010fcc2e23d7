"""`xnodectl deploy --plan`: what a deploy would change, per node, without changing anything.

Everything that can be known offline is shown (rendered module diff, ports, secrets, probes,
resource hints); what cannot (node state, closure diff) is marked unknown WITH the reason. Every
network step is bounded, so a plan on a machine with no node and no network still ends quickly.
"""

from __future__ import annotations

import asyncio
import difflib
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xnodectl import catalog, nix, process
from xnodectl import inventory as inv
from xnodectl.deploy import units, unittree
from xnodectl.deploy.agent import Agent, Info
from xnodectl.deploy.build import build
from xnodectl.deploy.events import Clock
from xnodectl.deploy.prepare import Prepared, Request, prepare, session_of, target_of
from xnodectl.errors import XnodeError
from xnodectl.remote import Session
from xnodectl.rendered import RenderedApp
from xnodectl.workspace import Workspace, git_track, write_apps

BUILD_BUDGET_S = 12.0
NODE_BUDGET_S = 6.0


@dataclass
class AppChange:
    app: str
    template: str
    change: str  # added | changed | removed | unchanged
    diff: str = ""


@dataclass(frozen=True)
class SecretPlan:
    app: str
    param: str
    path: str
    present: bool
    source: str | None
    looked_in: tuple[str, ...]


@dataclass(frozen=True)
class Resources:
    min_cpus: int = 0
    min_ram_mb: int = 0
    min_disk_gb: int = 0


@dataclass
class NodePlan:
    node: str
    address: str
    apps: list[AppChange] = field(default_factory=list)
    ports_opened: list[str] = field(default_factory=list)
    secrets: list[SecretPlan] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    desired_system: str | None = None
    current_system: str | None = None
    current_generation: int | None = None
    closure_bytes: int | None = None
    bytes_to_copy: int | None = None
    paths_to_copy: int | None = None
    copy_from: str = "operator"  # operator | peers | cache <url> (--fan-out / --via)
    packages: dict[str, list[str]] | None = None
    reboot_needed: bool | None = None
    units: units.UnitChanges | None = None
    unknown: dict[str, str] = field(default_factory=dict)

    @property
    def changes(self) -> bool:
        return any(a.change != "unchanged" for a in self.apps) or (
            self.desired_system is not None and self.desired_system != self.current_system
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "changes": self.changes}


# The current system's kernel (reboot needed?) and its units, in the round trip that asks it.
KERNEL_AND_UNITS = (
    'printf "K\\t%s\\n" "$(readlink -f "$1/kernel" || true)"\n' + unittree.NODE_SCRIPT
)


def _app_changes(ws: Workspace, node: str, apps: Sequence[RenderedApp]) -> list[AppChange]:
    directory = ws.apps_dir(node)
    out = []
    for app in apps:
        path = directory / app.filename
        old = path.read_text() if path.is_file() else ""
        if old == app.source:
            out.append(AppChange(app.instance, app.template, "unchanged"))
            continue
        diff = "".join(
            difflib.unified_diff(
                old.splitlines(True),
                app.source.splitlines(True),
                f"a/apps/{node}/{app.filename}",
                f"b/apps/{node}/{app.filename}",
            )
        )
        out.append(AppChange(app.instance, app.template, "changed" if old else "added", diff))
    wanted = {a.filename for a in apps}
    for path in sorted(directory.glob("*.nix")) if directory.is_dir() else []:
        if path.name not in wanted:
            out.append(AppChange(path.stem, "?", "removed"))
    return out


def static(ws: Workspace, prepared: Prepared, name: str) -> NodePlan:
    """What is known without building or contacting the node (also the deploy prompt's summary)."""
    node, apps = prepared.inventory.nodes[name], prepared.rendered[name]
    plan = NodePlan(name, f"{node.user}@{node.host}:{node.port}", apps=_app_changes(ws, name, apps))
    plan.ports_opened = sorted(
        {
            f"{p.port}/{p.protocol} ({a.instance}: {p.purpose})"
            for a in apps
            for p in a.ports
            if p.public
        }
    )
    plan.secrets = [
        SecretPlan(v.app, v.param, v.path, v.present, v.source, v.looked_in)
        for v in prepared.secrets[name]
    ]
    plan.probes = [
        f"{p.kind} {p.target} ({a.instance}, {p.timeout}s)" for a in apps for p in a.probes
    ]
    metas = [catalog.get(app.template).meta.resources for app in apps]
    plan.resources = Resources(
        max((m.min_cpus for m in metas), default=0),
        sum(m.min_ram_mb for m in metas),
        sum(m.min_disk_gb for m in metas),
    )
    return plan


def _scratch(ws: Workspace, prepared: Prepared) -> Path:
    """A throwaway copy of the workspace with the desired state, so planning writes nothing."""
    root = Path(tempfile.mkdtemp(prefix="xnodectl-plan-"))
    shutil.copytree(
        ws.root,
        root,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(".git", "secrets", "result*"),
    )
    copy = Workspace(root)
    copy.save(prepared.inventory)
    process.run(["git", "init", "-q", str(root)], check=False)
    for name, apps in prepared.rendered.items():
        write_apps(copy, name, apps, track=False)
    git_track(copy)
    return root


async def _node_state(session: Session, plan: NodePlan, node: inv.Node) -> Info | None:
    try:
        ssh = session.ssh(target_of(plan.node, node))
    except XnodeError as exc:
        plan.unknown["node"] = exc.message
        return None
    agent = Agent(ssh)
    try:
        info = await agent.info(timeout=NODE_BUDGET_S)
    except XnodeError as exc:
        plan.unknown["node"] = exc.message
        return None
    finally:
        await ssh.close()
    plan.current_system, plan.current_generation = info.current, info.generation
    return info


async def _closure_diff(session: Session, plan: NodePlan, node: inv.Node) -> None:
    """Package diff, bytes to copy, reboot and units: needs the built system AND the node's
    current closure."""
    assert plan.desired_system is not None
    new = await nix.closure(plan.desired_system, timeout=NODE_BUDGET_S)
    plan.closure_bytes = new.nar_size
    if plan.current_system is None:
        return
    ssh = session.ssh(target_of(plan.node, node))
    agent = Agent(ssh)
    try:
        old = (
            await agent.run_script(
                'nix-store -qR "$1"', [plan.current_system], timeout=NODE_BUDGET_S
            )
        ).split()
        invalid = await agent.missing_paths(list(new.paths), timeout=NODE_BUDGET_S)
        new_units = unittree.read_tree(Path(plan.desired_system))
        reply = await agent.run_script(
            KERNEL_AND_UNITS,
            [plan.current_system],
            timeout=NODE_BUDGET_S,
            input=unittree.node_input(new_units),
        )
    finally:
        await ssh.close()
    kernel = next((k[2:] for k in reply.splitlines() if k.startswith("K\t")), "").strip()
    node_units = unittree.parse_node_reply(reply, new_units)
    plan.units = units.classify(node_units.old, new_units, node_units.active)
    diff = nix.diff_closures(old, new, set(new.paths) - invalid)
    plan.bytes_to_copy, plan.paths_to_copy = diff.bytes_to_copy, diff.paths_to_copy
    plan.packages = {
        "added": [f"{c.name} {c.after}".strip() for c in diff.added],
        "removed": [f"{c.name} {c.before}".strip() for c in diff.removed],
        "upgraded": [f"{c.name} {c.before} -> {c.after}" for c in diff.upgraded],
    }
    new_kernel = Path(plan.desired_system, "kernel")
    plan.reboot_needed = (
        (new_kernel.resolve() != Path(kernel)) if (kernel and new_kernel.exists()) else False
    )


async def plan(ws: Workspace, req: Request) -> list[NodePlan]:
    prepared = prepare(ws, req, need_secrets=False)
    names = list(prepared.names)
    inventory = prepared.inventory
    plans = {n: static(ws, prepared, n) for n in names}
    scratch = _scratch(ws, prepared)
    session = session_of(inventory)
    try:
        built, _ = await asyncio.gather(
            _bounded_build(scratch, names),
            asyncio.gather(*(_node_state(session, plans[n], inventory.nodes[n]) for n in names)),
        )
        for name in names:
            await _finish(session, plans[name], inventory.nodes[name], built.get(name))
        _sources(req, [plans[n] for n in names])
    finally:
        session.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return [plans[n] for n in names]


def _sources(req: Request, plans: Sequence[NodePlan]) -> None:
    """Where each node's bytes would come from: with --fan-out the first node that needs a copy
    gets it from the operator and the others from peers; with --via every node from the cache
    (the operator pushes once)."""
    if req.via is not None:
        for p in plans:
            p.copy_from = f"cache {req.via}"
    elif req.fan_out is not None:
        seeded = False
        for p in plans:
            if p.bytes_to_copy != 0 and seeded:
                p.copy_from = f"peers (tree:{req.fan_out.degree})"
            seeded = seeded or p.bytes_to_copy != 0


async def _bounded_build(flake: Path, names: list[str]) -> dict[str, str | XnodeError]:
    try:
        built = await build(
            flake, names, lambda _e: None, Clock(), timeout=BUILD_BUDGET_S, fail_fast=True
        )
    except XnodeError as exc:
        return dict.fromkeys(names, exc)
    return built.systems


async def _finish(
    session: Session, plan: NodePlan, node: inv.Node, built: str | XnodeError | None
) -> None:
    if isinstance(built, str):
        plan.desired_system = built
    else:
        why = built.message if built is not None else "not built"
        plan.unknown["closure"] = (
            f"the system could not be built here ({why.strip()[-300:]}); "
            "nix may need network to fetch the workspace's inputs"
        )
    if plan.desired_system is not None:
        try:
            await _closure_diff(session, plan, node)
        except XnodeError as exc:
            plan.unknown["closure"] = f"closure diff unavailable: {exc.message}"
    if "node" in plan.unknown and plan.desired_system is not None:
        plan.unknown.setdefault(
            "closure",
            "package diff and bytes to copy need the node's current system (node unreachable)",
        )
    if plan.units is None:
        plan.unknown.setdefault("units", _units_unknown(plan))


def _units_unknown(plan: NodePlan) -> str:
    missing = [
        why
        for why, lacking in (
            ("the system is not built here (see closure)", plan.desired_system is None),
            ("the node's current system is unknown (see node)", plan.current_system is None),
        )
        if lacking
    ] or ["the comparison failed (see closure)"]
    return (
        "units to start, stop, restart and reload need the built system and the node's "
        "current one: " + "; ".join(missing)
    )
