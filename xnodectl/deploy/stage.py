"""Stage 4, stage: everything the node needs before it changes: free store space checked, the
closure copied (`nix copy`, paths the node has are skipped), secrets uploaded root-only, and the
owner-signed manifest made for nodes that require one."""

from __future__ import annotations

import time
from pathlib import Path

from xnodectl import inventory as inv
from xnodectl import nix
from xnodectl.deploy import secrets
from xnodectl.deploy.agent import Agent, Info
from xnodectl.deploy.events import Phase, Status
from xnodectl.deploy.job import STEP_TIMEOUT_S, ManifestMaker, NodeRun
from xnodectl.deploy.sources import copy_from_sources
from xnodectl.errors import CommandFailed, XnodeError
from xnodectl.remote import Ssh

# Free store space kept beyond what a copy needs (Nix needs room for its database and temp files).
FREE_MARGIN_BYTES = 16 * 1024 * 1024
PROGRESS_EVERY_S = 0.25  # bounded event rate for --json readers


async def stage(run: NodeRun, ssh: Ssh, agent: Agent, info: Info) -> bytes | None:
    """Space check, copy, secrets, manifest: all before the node changes. Returns the manifest."""
    need = run.job.paths.nar_size  # upper bound; exact only when it matters
    free = info.store_free_bytes
    if free is not None and free < need + FREE_MARGIN_BYTES:
        missing = await agent.missing_paths(list(run.job.paths.paths), timeout=STEP_TIMEOUT_S)
        need = sum(p.nar_size for p in run.job.paths.paths.values() if p.path in missing)
        if free < need + FREE_MARGIN_BYTES:
            raise run.fail(
                Phase.COPY,
                f"store full: {free} bytes free, "
                f"{need + FREE_MARGIN_BYTES} needed ({need} to copy + margin); nothing copied",
            )
    if need:
        try:  # rooted on the node from before the first byte until `begin` roots it for good
            await agent.pin(run.job.system, timeout=STEP_TIMEOUT_S)
        except XnodeError as exc:
            raise run.fail(Phase.COPY, exc.message) from exc
        if run.job.sources is not None:
            await copy_from_sources(run, ssh, run.job.sources, need)
        else:
            await copy(run, ssh, need)
    else:
        run.emit(Phase.COPY, Status.SKIPPED, bytes=0, paths=0, message="all paths present")
    if run.job.secrets:
        await _secrets(run, ssh)
    return manifest(run, info)


async def copy(run: NodeRun, ssh: Ssh, total: int) -> None:
    """`nix copy` skips what the node has; bytes = NAR sizes of the paths it reports copied."""
    run.emit(Phase.COPY, Status.START, bytes=0, paths=0, total_bytes=total)
    sizes = {p.path: p.nar_size for p in run.job.paths.paths.values()}

    def on_path(path: str) -> None:
        run.report.paths_copied += 1
        run.report.bytes_copied += sizes.get(path, 0)
        run.report.bytes_from_operator += sizes.get(path, 0)
        now = time.monotonic()
        if now - run.last_progress >= PROGRESS_EVERY_S:
            run.last_progress = now
            run.emit(
                Phase.COPY,
                Status.PROGRESS,
                bytes=run.report.bytes_copied,
                paths=run.report.paths_copied,
                total_bytes=total,
            )

    try:
        await nix.copy(
            ssh.target.store_uri,
            [run.job.system],
            sshopts=ssh.sshopts(),
            substitute=run.opts.substitute,
            on_path=on_path,
        )
    except CommandFailed as exc:
        raise run.fail(Phase.COPY, f"copy failed: {exc.message}") from exc
    run.emit(
        Phase.COPY,
        Status.OK,
        bytes=run.report.bytes_copied,
        paths=run.report.paths_copied,
        total_bytes=total,
    )


async def _secrets(run: NodeRun, ssh: Ssh) -> None:
    run.emit(Phase.SECRETS, Status.START)
    try:
        pending = await secrets.upload(ssh, run.job.secrets, timeout=STEP_TIMEOUT_S)
    except XnodeError as exc:
        raise run.fail(Phase.SECRETS, exc.message) from exc
    note = (
        f"owner not yet on the node (root-owned for now): {', '.join(pending)}" if pending else None
    )
    run.emit(Phase.SECRETS, Status.OK, message=note)


def manifest(run: NodeRun, info: Info) -> bytes | None:
    if not info.signed_deploys:
        return None
    run.emit(Phase.MANIFEST, Status.START)
    if run.opts.manifest is None:
        raise run.fail(
            Phase.MANIFEST,
            "the node only accepts owner-signed deploys and no signer "
            "is configured (set signed_deploys = true and settings.signer_keystore)",
        )
    try:
        data = run.opts.manifest(run.node, run.job.system, info.current)
    except XnodeError as exc:
        raise run.fail(Phase.MANIFEST, exc.message) from exc
    run.emit(Phase.MANIFEST, Status.OK)
    return data


def manifest_maker(settings: inv.Settings) -> ManifestMaker:
    """Owner-signed manifests (wallet area). Loaded once, only when a selected node needs one: the
    wallet of settings.signer_keystore (default: the operator wallet), unlocked like every wallet
    command ($XNODECTL_WALLET_PASSWORD or a prompt)."""
    from xnodectl.wallet import keystore
    from xnodectl.wallet import manifest as signed

    path = Path(settings.signer_keystore) if settings.signer_keystore else keystore.default_path()
    signer = keystore.load_signer(path, keystore.read_password(confirm=False, path=path))

    def make(node: str, system: str, previous: str | None) -> bytes:
        data: bytes = signed.sign_manifest(signed.build_manifest(node, system, previous), signer)
        return data

    return make
