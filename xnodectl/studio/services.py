"""The studio's one door into xnodectl's services: every call the studio makes goes through here.

Nothing in this file decides anything: it names the service function the CLI calls for the same
job, so a rename in the service layer is fixed in this one place. The owner's wallet (sign-in,
claim) has its half of the door in services_wallet.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnodectl import app_request, catalog, inventory, params, remote, sshkeys
from xnodectl.catalog import Template
from xnodectl.deploy import plan as planmod
from xnodectl.deploy import prepare, replies
from xnodectl.deploy import rollback as rollbackmod
from xnodectl.deploy import secrets as secretmod
from xnodectl.deploy import status as statusmod
from xnodectl.errors import UsageError, XnodeError
from xnodectl.image_format import ImageFormat
from xnodectl.nodeside.nonces import NonceStore
from xnodectl.rendered import RenderedApp
from xnodectl.verify.sign_in import Rejected as SignInRejected
from xnodectl.workspace import Workspace
from xnodectl.workspace import find as find_workspace

Generation = replies.Generation
DeployRecord = replies.DeployRecord

__all__ = [
    "DeployRecord",
    "Generation",
    "NonceStore",
    "SignInRejected",
    "Template",
    "UsageError",
    "Workspace",
    "XnodeError",
    "find_workspace",
]


def templates() -> list[Template]:
    return catalog.all_templates()


def template(name: str) -> Template:
    return catalog.get(name)


def schema(t: Template) -> dict[str, Any]:
    return catalog.json_schema(t)


def check_value(t: Template, name: str, value: str) -> None:
    """One parameter typed as the CLI would read `name=value` (raises the CLI's ParamError)."""
    params.coerce(t.params[name], value)


def render(words: Sequence[str], name: str | None = None) -> RenderedApp:
    """`xnodectl render template=... k=v ...`: parse, validate, render (the CLI's service)."""
    return app_request.render_request(app_request.parse_request(words, name))


def load(ws: Workspace) -> inventory.Inventory:
    return ws.load()


def secret_needs(ws: Workspace, app: RenderedApp) -> tuple[secretmod.SecretValue, ...]:
    """Each secret of the app: present or not, and where it was found (the value stays here)."""
    return secretmod.read(ws.secrets_dir(), [app])


def store_secret(ws: Workspace, app: str, param: str, value: bytes) -> None:
    secretmod.store(ws.secrets_dir(), app, param, value)


def selection(nodes: Sequence[str] = (), tags: Sequence[str] = ()) -> prepare.Selection:
    """Nothing chosen means every node, as `--all` (the studio always says which)."""
    return prepare.Selection(tuple(nodes), tuple(tags), all=not (nodes or tags))


async def plan(
    ws: Workspace, nodes: Sequence[str], words: Sequence[str], app_name: str | None = None
) -> list[planmod.NodePlan]:
    """`xnodectl plan [template=... k=v] --node ...`."""
    req = prepare.Request(selection=selection(nodes), words=tuple(words), app_name=app_name)
    return await planmod.plan(ws, req)


async def status(ws: Workspace) -> tuple[statusmod.NodeStatus, ...]:
    report = await statusmod.status(ws, selection(), lambda _line: None)
    return report.nodes


async def generations(ws: Workspace, node: str) -> list[replies.Generation]:
    return await statusmod.generations(ws, node)


async def rollback(ws: Workspace, node: str, to: int | None) -> int | None:
    """`xnodectl rollback --node NODE [--to N]`: the generation the node now runs."""
    return await rollbackmod.to_generation(ws, node, to)


@dataclass(frozen=True)
class ScannedKey:
    host_key: str
    fingerprint: str


def scan(host: str, port: int) -> ScannedKey:
    """`node add --scan`'s first half: the host key the node presents, and its fingerprint."""
    key = remote.scan_host_key(host, port)
    return ScannedKey(key, fingerprint(key))


def fingerprint(host_key: str) -> str:

    return sshkeys.parse(host_key, "host key").fingerprint


@dataclass(frozen=True)
class NodeChoice:
    """The add-a-node form, as `xnodectl node add NAME HOST --port --user --tag --host-key`."""

    name: str
    host: str
    port: int = 22
    user: str = "root"
    tags: tuple[str, ...] = ()
    host_key: str | None = None


def check_node(choice: NodeChoice) -> None:
    """The node service's checks of name, host, port and user, before the host is contacted."""
    from xnodectl import nodes

    inventory.check_node_name(choice.name)
    nodes.checked_node({"host": choice.host, "port": choice.port, "user": choice.user})


def add_node(ws: Workspace, choice: NodeChoice) -> None:
    """`xnodectl node add` with the key the operator accepted (the node service, not a copy)."""
    from xnodectl import nodes

    if not choice.host_key:
        raise UsageError("no host key was accepted", hint="scan the node's host key first")
    request = nodes.NodeAdd(
        name=choice.name,
        host=choice.host,
        port=choice.port,
        user=choice.user,
        tags=choice.tags,
        host_key=choice.host_key,
    )
    nodes.add(ws, request, lambda _line: None)


@dataclass(frozen=True)
class DeployChoice:
    """What the deploy form chose; becomes the argv of the real `xnodectl deploy --json`."""

    nodes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    app_name: str | None = None
    canary: int = 0
    max_parallel: int | None = None
    max_failures: int | None = None


def deploy_argv(ws: Workspace, choice: DeployChoice) -> list[str]:
    """The exact CLI command the studio runs for a deploy (shown on the page, ready to copy)."""
    argv = [sys.executable, "-m", "xnodectl", "deploy", "--json", "--workspace", str(ws.root)]
    for n in choice.nodes:
        argv += ["--node", n]
    for t in choice.tags:
        argv += ["--tag", t]
    if not (choice.nodes or choice.tags):
        argv.append("--all")
    if choice.canary:
        argv += ["--canary", str(choice.canary)]
    if choice.max_parallel is not None:
        argv += ["--max-parallel", str(choice.max_parallel)]
    if choice.max_failures is not None:
        argv += ["--max-failures", str(choice.max_failures)]
    if choice.app_name:
        argv += ["--name", choice.app_name]
    return [*argv, *choice.words]


def check_deploy(ws: Workspace, choice: DeployChoice) -> None:
    """Everything that can be wrong with a deploy's input, checked before it starts (the same
    `prepare` the engine runs first), so a bad form is one error line, not a failed run."""
    prepare.prepare(
        ws,
        prepare.Request(
            selection=selection(choice.nodes, choice.tags),
            words=choice.words,
            app_name=choice.app_name,
        ),
    )


def journal_dir(ws: Workspace) -> Path:
    """Where every deploy of the workspace journals its events (deploy.journal)."""
    from xnodectl.deploy import journal

    return journal.runs_dir(ws.root)


async def node_log(ws: Workspace, node: str) -> list[replies.DeployRecord]:
    """`xnodectl node log NODE`: the deploy audit log the node itself keeps."""
    from xnodectl.deploy import history

    return await history.node_log(ws, node)


def workspace_of(path: Path | None) -> Workspace:
    return find_workspace(path)


# --- images: `xnodectl image build` ----------------------------------------------------------

IMAGE_FORMATS = tuple(f.value for f in ImageFormat)


@dataclass(frozen=True)
class ImageChoice:
    owner: str
    ssh_key: str  # the public key line, "" for none (claim flow)
    format: str = "iso"
    hostname: str | None = None
    store_keys: tuple[str, ...] = ()  # the workspace's (image_store_keys)


def image_store_keys(ws: Workspace, *, build: bool) -> tuple[str, ...]:
    """The keys `xnodectl image build` run in the workspace makes the image trust (the owner
    key is created for a build of a workspace without one; a dry run creates nothing)."""
    from xnodectl import storekey

    return tuple(storekey.for_image(ws, create=build))


def image_dry_run(choice: ImageChoice) -> tuple[dict[str, str], list[str], str]:
    """`image build --dry-run`: the generated flake's files, the exact nix argv, and where the
    files would live (the same request and plan the CLI builds)."""
    from xnodectl import image, workspace

    if choice.format not in IMAGE_FORMATS:  # the form offers only these; a forged value:
        raise UsageError(
            f"format '{choice.format[:20]}' is not an image format",
            hint="one of " + ", ".join(IMAGE_FORMATS),
        )
    req = image.request(
        owner=choice.owner,
        key=sshkeys.parse(choice.ssh_key, "SSH key") if choice.ssh_key else None,
        fmt=ImageFormat(choice.format),
        hostname=choice.hostname,
        system="x86_64-linux",
        disk=None,
        wipe=False,
        xnodectl_flake=workspace.default_flake(),
        store_keys=choice.store_keys,
    )
    plan = image.plan(req)
    return dict(plan.files), plan.argv(image.DRY_RUN_DIR), str(image.DRY_RUN_DIR)


def image_argv(choice: ImageChoice, key_file: Path | None, out: Path) -> list[str]:
    """The exact `xnodectl image build ... --json` the studio runs for a build."""
    argv = [sys.executable, "-m", "xnodectl", "image", "build", "--owner", choice.owner]
    if key_file is not None:
        argv += ["--ssh-key", str(key_file)]
    argv += ["--format", choice.format, "-o", str(out), "--json"]
    for key in choice.store_keys:
        argv += ["--store-key", key]
    return argv + (["--hostname", choice.hostname] if choice.hostname else [])
