"""Stage 1, prepare: everything that can be wrong with the input, checked before any node is
touched, done ONCE for deploy, plan and nixops4 alike: the inventory parsed, the nodes selected,
template words applied, every app rendered and checked to compose, every secret read, the
inventory's defaults resolved."""

from __future__ import annotations

import dataclasses
import secrets as pysecrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from xnodectl import inventory as inv
from xnodectl.deploy import secrets as sec
from xnodectl.errors import UsageError
from xnodectl.inventory import AppEntry
from xnodectl.remote import Session, Target
from xnodectl.workspace import Workspace, git_track, untrack, write_apps

if TYPE_CHECKING:  # rendering (jinja2) is imported once the first nodes' handshakes started
    from xnodectl.deploy.fanout import Tree
    from xnodectl.rendered import RenderedApp

T = TypeVar("T")


@dataclass(frozen=True)
class Selection:
    nodes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    all: bool = False

    @property
    def empty(self) -> bool:
        return not (self.nodes or self.tags or self.all)


@dataclass(frozen=True)
class FleetOptions:
    max_parallel: int | None = None  # None: the inventory's settings.max_parallel
    canary: int = 0  # nodes in the first wave; 0 = one wave
    max_failures: int | None = None  # stop starting nodes once more than this many failed
    revert_wave_on_failure: bool = False

    def waves(self, items: Sequence[T]) -> list[list[T]]:
        """The canary wave then the rest; one wave without a (smaller than the fleet) canary."""
        if self.canary <= 0 or self.canary >= len(items):
            return [list(items)]
        return [list(items[: self.canary]), list(items[self.canary :])]

    def first(self, names: Sequence[str]) -> list[str]:
        """The nodes that start first: the first wave, at most max_parallel of them (resolved)."""
        return self.waves(names)[0][: self.max_parallel]


@dataclass(frozen=True)
class Request:
    """What the operator asked for; None = the inventory's default (resolved by `prepare`)."""

    selection: Selection
    words: tuple[str, ...] = ()
    app_name: str | None = None
    fleet: FleetOptions = field(default_factory=FleetOptions)
    confirm_timeout: int | None = None
    activation_timeout: float | None = None
    substitute: bool = False
    fan_out: Tree | None = None  # --fan-out tree[:K]
    via: str | None = None  # --via STORE_URL

    @property
    def plain(self) -> bool:
        """Every node gets its closure from the operator (no fan-out, no cache)."""
        return self.fan_out is None and self.via is None


ACTIVATION_TIMEOUT_S = 300.0
BUILD_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Prepared:
    """One deploy's input, resolved: what every later stage reads instead of the files."""

    inventory: inv.Inventory
    names: tuple[str, ...]
    rendered: Mapping[str, tuple[RenderedApp, ...]]
    secrets: Mapping[str, tuple[sec.SecretValue, ...]]
    fleet: FleetOptions  # max_parallel resolved
    confirm_timeout: int  # resolved
    activation_timeout: float  # resolved
    changed_inventory: bool  # template words changed it: `write` saves it
    # `prepare(connect_early=True)`: the session whose masters to the first wave are opening.
    session: Session | None = None

    def target(self, name: str) -> Target:
        return target_of(name, self.inventory.nodes[name])


def session_of(inventory: inv.Inventory) -> Session:
    """The SSH session (key, multiplexing) for the inventory's nodes."""
    key = inventory.settings.ssh_key
    return Session(Path(key).expanduser() if key else None)


def target_of(name: str, node: inv.Node) -> Target:
    return Target(node=name, host=node.host, port=node.port, user=node.user, host_key=node.host_key)


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
) -> RenderedApp:
    """`template=NAME k=v ...`: add that app to (or update it on) each selected node. The app is
    rendered once, here (that validates the parameters); the entry keeps the typed values, as
    `init` stores them."""
    from xnodectl import app_request

    rendered = app_request.render_request(app_request.parse_request(words, app_name))
    entry = AppEntry(
        template=rendered.template,
        name=None if rendered.instance == rendered.template else rendered.instance,
        params=dict(rendered.given),
    )
    for name in names:
        node = inventory.nodes[name]
        node.apps = [a for a in node.apps if a.instance != rendered.instance] + [entry]
    return rendered


def prepare(
    ws: Workspace,
    req: Request,
    *,
    default_all: bool = True,
    need_secrets: bool = True,
    connect_early: bool = False,
) -> Prepared:
    """Parse, select, apply words, render and read secrets, each once. `need_secrets`: a missing
    secret is bad input now (deploy, nixops4); the plan shows it instead. `connect_early`: once
    the nodes are known, start opening the first wave's SSH masters (`Session.warm`) so the
    handshakes overlap the rest of the preparation; a failure closes them again."""
    inventory = ws.load()
    names = select(inventory, req.selection, default_all=default_all and not req.words)
    fleet = req.fleet
    if fleet.max_parallel is None:
        fleet = dataclasses.replace(fleet, max_parallel=inventory.settings.max_parallel)
    session = _connect(inventory, fleet.first(names), req) if connect_early else None
    try:
        return _prepare(ws, req, inventory, names, fleet, need_secrets, session)
    except BaseException:
        if session is not None:
            session.close()
        raise


def _connect(inventory: inv.Inventory, first: Sequence[str], req: Request) -> Session:
    """Warm the masters of the nodes that start first, each with the key exchange its secrets
    call for (template words: assumed to)."""
    session = session_of(inventory)
    for name in first:
        secrets = bool(req.words) or may_carry_secrets(inventory.nodes[name])
        session.warm(target_of(name, inventory.nodes[name]), carries_secrets=secrets)
    return session


def may_carry_secrets(node: inv.Node) -> bool:
    """Whether a deploy of `node` may upload a secret, known before rendering: one of its apps'
    templates declares a secret parameter (unknown templates fail in rendering, later)."""
    if not node.apps:
        return False
    from xnodectl import catalog
    from xnodectl.errors import XnodeError

    for app in node.apps:
        try:
            template = catalog.get(app.template)
        except XnodeError:
            return True
        if any(spec.secret for spec in template.params.values()):
            return True
    return False


def _prepare(
    ws: Workspace,
    req: Request,
    inventory: inv.Inventory,
    names: list[str],
    fleet: FleetOptions,
    need_secrets: bool,
    session: Session | None,
) -> Prepared:
    done = (apply_words(inventory, names, req.words, req.app_name),) if req.words else ()
    rendered: dict[str, tuple[RenderedApp, ...]] = {n: () for n in names}
    if any(inventory.nodes[n].apps for n in names):  # else no renderer (jinja2) is even loaded
        from xnodectl import app_request

        rendered = {n: tuple(app_request.render_node(inventory.nodes[n].apps, done)) for n in names}
    secrets = {n: sec.read(ws.secrets_dir(), rendered[n]) for n in names}
    if need_secrets:
        for name in names:
            sec.require(name, secrets[name])
    settings = inventory.settings
    return Prepared(
        inventory,
        tuple(names),
        rendered,
        secrets,
        fleet,
        req.confirm_timeout or settings.confirm_timeout,
        req.activation_timeout or ACTIVATION_TIMEOUT_S,
        bool(req.words),
        session,
    )


def require_selection(req: Request) -> None:
    """A deploy that cannot ask (no terminal) must say which nodes: never all by default."""
    if req.selection.empty and not req.words:
        raise UsageError(
            "which nodes? a deploy without a terminal to ask on needs a selection",
            hint="pass --all, --node NAME or --tag TAG",
        )


@dataclass(frozen=True)
class Snapshot:
    """The workspace files a deploy rewrites, as they were before it (to undo a failed build)."""

    inventory_text: str | None  # None: the deploy did not change the inventory
    apps: Mapping[str, Mapping[str, str]]  # node -> {file name: text} of apps/<node>/*.nix


def write(ws: Workspace, prepared: Prepared) -> Snapshot:
    """The workspace the build reads: the inventory (when words changed it) and apps/<node>/."""
    snapshot = Snapshot(
        ws.inventory_path.read_text() if prepared.changed_inventory else None,
        {n: _nix_files(ws, n) for n in prepared.names},
    )
    if prepared.changed_inventory:
        ws.save(prepared.inventory)
    for name in prepared.names:
        write_apps(ws, name, prepared.rendered[name], track=False)
    git_track(ws)
    return snapshot


def _nix_files(ws: Workspace, node: str) -> dict[str, str]:
    directory = ws.apps_dir(node)
    return (
        {f.name: f.read_text() for f in sorted(directory.glob("*.nix"))}
        if directory.is_dir()
        else {}
    )


def restore(ws: Workspace, prepared: Prepared, snapshot: Snapshot, failed: Sequence[str]) -> None:
    """Nodes whose build failed: their apps/<node>/ and inventory entries as they were (every node
    failed: the inventory file byte for byte, comments included); new files leave git's index."""
    if not failed:
        return
    dropped: list[str] = []
    for name in failed:
        directory = ws.apps_dir(name)
        before = snapshot.apps.get(name, {})
        for path in directory.glob("*.nix") if directory.is_dir() else []:
            if path.name not in before:
                path.unlink()
                dropped.append(str(path.relative_to(ws.root)))
        for file, text in before.items():
            (directory / file).write_text(text)
    if snapshot.inventory_text is not None:
        if set(failed) >= set(prepared.names):
            ws.inventory_path.write_text(snapshot.inventory_text)
        else:
            original = inv.parse(snapshot.inventory_text, ws.inventory_path)
            current = ws.load()
            for name in failed:
                current.nodes[name] = original.nodes[name]
            ws.save(current)
    untrack(ws, dropped)


def deploy_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + pysecrets.token_hex(3)
