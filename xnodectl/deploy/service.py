"""The deploy service behind `xnodectl deploy`: inventory -> render -> build -> fleet -> report."""

from __future__ import annotations

import asyncio
import secrets as pysecrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xnodectl import apps, nix
from xnodectl import inventory as inv
from xnodectl.deploy import fleet
from xnodectl.deploy import secrets as sec
from xnodectl.deploy.events import (
    Clock,
    Event,
    FleetReport,
    NodeReport,
    NodeState,
    Outcome,
    Phase,
    Sink,
    Status,
)
from xnodectl.deploy.pipeline import DeployOptions, ManifestMaker, NodeDeploy, NodeJob
from xnodectl.errors import CommandFailed, DeployFailed, Interrupted, UsageError, XnodeError
from xnodectl.inventory import AppEntry
from xnodectl.remote import Session, Target
from xnodectl.render import RenderedApp
from xnodectl.workspace import Workspace, write_apps

BUILD_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Selection:
    nodes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    all: bool = False

    @property
    def empty(self) -> bool:
        return not (self.nodes or self.tags or self.all)


def select(inventory: inv.Inventory, selection: Selection, *, default_all: bool) -> list[str]:
    """Node names in inventory order; an unknown name or a tag matching nothing is bad input."""
    if selection.all or (selection.empty and default_all):
        names = list(inventory.nodes)
    elif selection.empty:
        if len(inventory.nodes) == 1:
            return list(inventory.nodes)
        raise UsageError(
            f"which nodes? the inventory has {len(inventory.nodes)}",
            hint="pass --node NAME, --tag TAG or --all",
        )
    else:
        for name in selection.nodes:
            inventory.node(name)  # raises with a did-you-mean hint
        tagged = {n for n, node in inventory.nodes.items() if set(node.tags) & set(selection.tags)}
        for tag in selection.tags:
            if not any(tag in node.tags for node in inventory.nodes.values()):
                raise UsageError(
                    f"no node has the tag '{tag}'", hint="see the tags with: xnodectl node list"
                )
        names = [n for n in inventory.nodes if n in selection.nodes or n in tagged]
    if not names:
        raise UsageError("the inventory has no nodes", hint="add one: xnodectl node add NAME HOST")
    return names


def apply_words(
    inventory: inv.Inventory, names: Sequence[str], words: Sequence[str], app_name: str | None
) -> None:
    """`template=NAME k=v ...`: add that app to (or update it on) each selected node."""
    request = apps.parse_request(words, app_name)
    apps.render_request(request)  # validates the parameters before the inventory changes
    instance = request.name or request.template
    for name in names:
        node = inventory.nodes[name]
        entry = AppEntry(
            template=request.template,
            name=None if instance == request.template else instance,
            params=dict(request.params),
        )
        node.apps = [a for a in node.apps if a.instance != instance] + [entry]


def target_of(name: str, node: inv.Node) -> Target:
    return Target(node=name, host=node.host, port=node.port, user=node.user, host_key=node.host_key)


def render_nodes(inventory: inv.Inventory, names: Sequence[str]) -> dict[str, list[RenderedApp]]:
    return {name: apps.render_node(inventory.nodes[name].apps) for name in names}


def deploy_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + pysecrets.token_hex(3)


async def build(
    flake: Path,
    names: Sequence[str],
    sink: Sink,
    clock: Clock,
    timeout: float = BUILD_TIMEOUT_S,
    fail_fast: bool = False,
) -> dict[str, str | XnodeError]:
    """Build all selected systems in one nix call; on failure, per node to say which failed."""
    for name in names:
        sink(Event(name, Phase.BUILD, Status.START, clock.elapsed()))
    started = time.monotonic()
    attrs = [nix.toplevel_attr(flake, n) for n in names]
    out: dict[str, str | XnodeError] = {}
    try:
        out.update(
            zip(names, await nix.build(attrs, timeout=timeout, fail_fast=fail_fast), strict=True)
        )
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
        if isinstance(result, XnodeError):
            sink(
                Event(
                    name,
                    Phase.BUILD,
                    Status.FAILED,
                    clock.elapsed(),
                    seconds=seconds,
                    message=result.message,
                )
            )
        else:
            sink(
                Event(
                    name, Phase.BUILD, Status.OK, clock.elapsed(), seconds=seconds, message=result
                )
            )
    return out


def manifest_maker(settings: inv.Settings) -> ManifestMaker:
    """Owner-signed manifests (wallet area). Loaded once, lazily, only when needed: the wallet of
    settings.signer_keystore (default: the operator wallet), unlocked like every wallet command
    ($XNODECTL_WALLET_PASSWORD or a prompt)."""
    from xnodectl.wallet import keystore, manifest

    path = Path(settings.signer_keystore) if settings.signer_keystore else keystore.default_path()
    signer = keystore.load_signer(path, keystore.read_password(confirm=False, path=path))

    def make(node: str, system: str, previous: str | None) -> bytes:
        data: bytes = manifest.sign_manifest(
            manifest.build_manifest(node, system, previous), signer
        )
        return data

    return make


@dataclass(frozen=True)
class Request:
    selection: Selection
    words: tuple[str, ...] = ()
    app_name: str | None = None
    fleet: fleet.FleetOptions = field(default_factory=fleet.FleetOptions)
    confirm_timeout: int | None = None
    activation_timeout: float = 300.0
    substitute: bool = False


def prepare(
    ws: Workspace, req: Request
) -> tuple[inv.Inventory, list[str], dict[str, list[RenderedApp]]]:
    """Everything that can be wrong with the input, checked before any node is touched."""
    inventory = ws.load()
    names = select(inventory, req.selection, default_all=not req.words)
    if req.words:
        apply_words(inventory, names, req.words, req.app_name)
    rendered = render_nodes(inventory, names)
    for name in names:
        sec.collect(name, ws.secrets_dir(), rendered[name])  # missing secret -> exit 2 now
    return inventory, names, rendered


async def deploy(ws: Workspace, req: Request, sink: Sink) -> FleetReport:
    """The deploy, journaled in the workspace (deploy/journal.py) so that a studio open on it
    follows the run wherever it was started."""
    from xnodectl.deploy.journal import Journal

    run_id = deploy_id()
    journal = Journal(ws.root, run_id)

    def both(event: Event) -> None:
        sink(event)
        journal(event)

    try:
        report = await _deploy(ws, req, both, run_id)
        error = exit_error(report)
        journal.end(report.to_json(), int(error.exit_code) if error is not None else 0)
        return report
    finally:
        journal.close()


async def _deploy(ws: Workspace, req: Request, sink: Sink, run_id: str) -> FleetReport:
    clock = Clock()
    inventory, names, rendered = prepare(ws, req)
    if req.words:
        ws.save(inventory)
    for name in names:
        write_apps(ws, name, rendered[name])
    settings = inventory.settings
    maker = (
        manifest_maker(settings) if any(inventory.nodes[n].signed_deploys for n in names) else None
    )
    opts = DeployOptions(
        deploy_id=run_id,
        confirm_timeout=req.confirm_timeout or settings.confirm_timeout,
        activation_timeout=req.activation_timeout,
        substitute=req.substitute,
        manifest=maker,
    )
    session = Session(Path(settings.ssh_key).expanduser() if settings.ssh_key else None)
    # The first wave's preflights (connection, facts, lock) run while the system builds (NixOS
    # evaluation takes seconds): they leave the critical path, and an unreachable node is reported
    # before the build ends. Only as many as may deploy at once.
    first = fleet.waves(names, req.fleet.canary)[0][: req.fleet.max_parallel]
    early = {
        n: NodeDeploy(target_of(n, inventory.nodes[n]), opts, session, sink, clock) for n in first
    }
    for node in early.values():
        node.start_preflight()
    try:
        built = await build(ws.root, names, sink, clock)
        jobs, failed = await _jobs(ws, inventory, names, rendered, built)
    except BaseException as exc:
        await _abandon(early.values())
        session.close()
        if not isinstance(exc, asyncio.CancelledError):
            raise
        return FleetReport(
            [
                fleet.skipped(
                    n,
                    "interrupted while building; the node is on its old generation",
                    sink,
                    clock,
                    Outcome.INTERRUPTED,
                )
                for n in names
            ],
            clock.elapsed(),
            interrupted=True,
        )
    try:
        reports, interrupted = await fleet.run(jobs, opts, req.fleet, session, sink, clock, early)
    finally:
        await _abandon(early.values())  # nodes never deployed: failed builds, skipped waves
        session.close()
    by_name = {r.node: r for r in [*reports, *failed]}
    return FleetReport([by_name[n] for n in names], clock.elapsed(), interrupted)


async def _abandon(nodes: Iterable[NodeDeploy]) -> None:
    """Release the nodes whose preflight ran but which were never deployed (lock, connection)."""
    await asyncio.gather(*(n.abandon() for n in nodes), return_exceptions=True)


async def _jobs(
    ws: Workspace,
    inventory: inv.Inventory,
    names: Sequence[str],
    rendered: dict[str, list[RenderedApp]],
    built: dict[str, str | XnodeError],
) -> tuple[list[NodeJob], list[NodeReport]]:
    closures: dict[str, nix.Closure] = {}
    jobs, failed = [], []
    for name in names:
        system = built[name]
        if isinstance(system, XnodeError):
            failed.append(
                NodeReport(
                    name, Outcome.FAILED, NodeState.OLD, error=f"build failed: {system.message}"
                )
            )
            continue
        if system not in closures:  # one path-info per distinct closure
            closures[system] = await nix.closure(system)
        node = inventory.nodes[name]
        jobs.append(
            NodeJob(
                target=target_of(name, node),
                system=system,
                closure=closures[system],
                secrets=tuple(sec.collect(name, ws.secrets_dir(), rendered[name])),
                probes=tuple(p for app in rendered[name] for p in app.probes),
            )
        )
    return jobs, failed


def exit_error(report: FleetReport) -> XnodeError | None:
    """The error the CLI exits with (codes 3 / 4 / 130), or None when every node is fine."""
    if report.interrupted:
        return Interrupted(
            "interrupted: "
            + "; ".join(f"{n.node} is on its {n.state.value} generation" for n in report.nodes)
        )
    if report.failed:
        return DeployFailed(report.failed, len(report.nodes))
    return None
