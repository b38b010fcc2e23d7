"""The studio's one door into xnodectl's services: every call the studio makes goes through here.

Nothing in this file decides anything: it names the service function the CLI calls for the same
job, so a rename in the service layer is fixed in this one place.
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
from xnodectl.render import RenderedApp
from xnodectl.verify.sign_in import Rejected as SignInRejected
from xnodectl.wallet import claim as claimmod
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
    from xnodectl import sshkeys

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


# --- wallet sign-in (listening beyond loopback): the node gate's own SIWE code -----------------

SIGN_IN_CHAIN_ID = 1


def owner_address(ws: Workspace, given: str | None) -> str:
    """The workspace owner's address (lowercase): --owner, else the operator wallet's (the
    keystore deploys are signed with), read without its password."""
    from xnodectl.verify import eip191
    from xnodectl.wallet import keystore

    if given:
        try:
            return eip191.normalize_address(given)
        except ValueError as exc:
            raise UsageError(str(exc), hint="--owner takes 0x and 40 hex digits") from None
    path = operator_keystore(ws)
    if not path.is_file():
        raise UsageError(
            "listening beyond loopback needs the workspace owner's wallet sign-in, and no owner "
            "is known",
            hint=f"pass --owner 0xADDR, or create the operator wallet {path}: xnodectl wallet new",
        )
    return eip191.normalize_address(keystore.read_address(path))


def sign_in_message(host: str, address: str, nonce: str, workspace: str) -> str:
    """The EIP-4361 text the browser wallet signs (checksummed address, issued now, 5 min)."""
    from eth_utils.address import is_address, to_checksum_address

    from xnodectl.verify import sign_in

    if not isinstance(address, str) or not is_address(address):
        raise UsageError(
            f"'{address[:60]}' is not an Ethereum address", hint="reconnect the wallet"
        )
    return sign_in.build(
        domain=host,
        uri=f"http://{host}/",
        address=to_checksum_address(address),
        chain_id=SIGN_IN_CHAIN_ID,
        nonce=nonce,
        statement=f"Sign in to Xnode Studio for the workspace {workspace}.",
    )


def verify_sign_in(message: str, signature: str, hosts: frozenset[str], owner: str) -> Any:
    """sign_in.verify, as the node's wallet gate calls it; raises sign_in.Rejected."""
    from xnodectl.verify import sign_in

    policy = sign_in.Policy(
        domains=hosts,
        uri_for=lambda d: f"http://{d}/",
        chain_id=SIGN_IN_CHAIN_ID,
        allowed=frozenset({owner}),
    )
    return sign_in.verify(message, signature, policy)


# --- images: `xnodectl image build` ----------------------------------------------------------

IMAGE_FORMATS = tuple(f.value for f in ImageFormat)


@dataclass(frozen=True)
class ImageChoice:
    owner: str
    ssh_key: str  # the public key line, "" for none (claim flow)
    format: str = "iso"
    hostname: str | None = None


def image_dry_run(choice: ImageChoice) -> tuple[dict[str, str], list[str], str]:
    """`image build --dry-run`: the generated flake's files, the exact nix argv, and where the
    files would live (the same request and plan the CLI builds)."""
    from xnodectl import image, sshkeys, workspace

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
    )
    plan = image.plan(req)
    return dict(plan.files), plan.argv(image.DRY_RUN_DIR), str(image.DRY_RUN_DIR)


def image_argv(choice: ImageChoice, key_file: Path | None, out: Path) -> list[str]:
    """The exact `xnodectl image build ... --json` the studio runs for a build."""
    argv = [sys.executable, "-m", "xnodectl", "image", "build", "--owner", choice.owner]
    if key_file is not None:
        argv += ["--ssh-key", str(key_file)]
    argv += ["--format", choice.format, "-o", str(out), "--json"]
    return argv + (["--hostname", choice.hostname] if choice.hostname else [])


# --- claim: `xnodectl claim HOST` (wallet/claim.py's prepare and finish, nodes.pin_claimed) ---

ClaimRequest = claimmod.ClaimRequest
PreparedClaim = claimmod.PreparedClaim
ClaimResult = claimmod.ClaimResult


@dataclass(frozen=True)
class ClaimChoice:
    """The claim form, as `xnodectl claim HOST --port --node --expect-host-key`."""

    host: str
    port: int = claimmod.DEFAULT_PORT
    name: str | None = None
    expect_host_key: str | None = None


def operator_key(ws: Workspace) -> tuple[Path, sshkeys.PublicKey]:
    """The key a claim authorizes: the workspace's operator key (settings.ssh_key, the one
    deploys log in with), its public half read as `claim --ssh-key` reads it."""
    key = ws.load().settings.ssh_key
    if not key:
        raise UsageError(
            "the workspace has no operator SSH key (settings.ssh_key in inventory.toml)",
            hint='set it under [settings], e.g. ssh_key = "~/.ssh/id_ed25519"',
        )
    path = Path(key).expanduser()  # as deploys read it
    return path, claimmod.read_public_key(path)


def operator_keystore(ws: Workspace) -> Path:
    """The operator wallet: settings.signer_keystore, else the CLI's --wallet default."""
    import os

    from xnodectl.wallet import keystore

    named = ws.load().settings.signer_keystore or os.environ.get("XNODECTL_WALLET")
    return Path(named).expanduser() if named else keystore.default_path()


def claim_request(ws: Workspace, choice: ClaimChoice) -> ClaimRequest:
    """The CLI's checks in the CLI's order, before the node is contacted: the key, the name and
    the expected host key (nodes.expected_fingerprint), the host and port."""
    from xnodectl import nodes

    _path, key = operator_key(ws)
    expect = choice.expect_host_key
    if choice.name:
        expect = nodes.expected_fingerprint(ws, choice.name, expect)
    request = ClaimRequest(host=choice.host, port=choice.port, ssh_key=key, expect_host_key=expect)
    claimmod.check_request(request)
    return request


def prepare_claim(
    request: ClaimRequest, address: str, name: str | None
) -> tuple[PreparedClaim, str]:
    """wallet.claim.prepare, and the inventory name: the one given (checked by claim_request),
    else the node's own, checked here before anything is signed."""
    prepared = claimmod.prepare(request, address)
    if name:
        return prepared, name
    try:
        inventory.check_node_name(prepared.node)
    except UsageError as exc:
        raise UsageError(
            f"the node calls itself: {exc.message}",
            hint="give it an inventory name: lowercase letters, digits and '-'",
        ) from None
    return prepared, prepared.node


def finish_claim(ws: Workspace, prepared: PreparedClaim, signature: str, name: str) -> ClaimResult:
    """wallet.claim.finish, then the pin `xnodectl claim` makes (nodes.pin_claimed)."""
    from xnodectl import nodes

    result = claimmod.finish(prepared, signature)
    nodes.pin_claimed(
        ws,
        name,
        prepared.request.host,
        result.host_key,
        owner=result.address,
        authorized_key=result.authorized_key,
    )
    return result


def claim_with_keystore(
    ws: Workspace, request: ClaimRequest, password: str, name: str | None
) -> tuple[str, ClaimResult]:
    """The CLI's claim: unlock the operator keystore (the CLI's unlock code), prepare, sign,
    finish and pin. The password is used here and dropped."""
    from xnodectl.wallet import keystore

    signer = keystore.load_signer(operator_keystore(ws), password)
    prepared, chosen = prepare_claim(request, signer.address, name)
    result = finish_claim(ws, prepared, signer.sign_message(prepared.message), chosen)
    return chosen, result
