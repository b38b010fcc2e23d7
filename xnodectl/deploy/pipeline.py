"""One node's deploy: preflight -> copy -> secrets -> (manifest) -> begin -> wait
-> probe -> confirm.

The preflight needs no built system, so the fleet's first wave runs it while the build runs
(`NodeDeploy.start_preflight`): connection, node facts and lock are ready when the closure is.

Two-phase activation (docs/deploy-protocol.md): the node runs `switch-to-configuration test`
detached, with its own dead-man timer; only a confirmation over a NEW SSH connection, sent after the
health probes passed, makes the new system the profile and boot default. Every exit path leaves the
node on its old or its new generation, and the report says which.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xnodectl import nix
from xnodectl.deploy import secrets
from xnodectl.deploy.events import (
    Clock,
    Event,
    NodeReport,
    NodeState,
    Outcome,
    Phase,
    Sink,
    Status,
)
from xnodectl.deploy.helper import (
    Helper,
    HelperError,
    Info,
    WaitResult,
    wait_result,
)
from xnodectl.errors import CommandFailed, XnodeError
from xnodectl.remote import RemoteError, Session, Ssh, Target, Unreachable
from xnodectl.render import Probe

# Free store space kept beyond what a copy needs (Nix needs room for its database and temp files).
FREE_MARGIN_BYTES = 16 * 1024 * 1024
STEP_TIMEOUT_S = 30.0  # one helper round trip that does no real work

ManifestMaker = Callable[[str, str, str | None], bytes]


@dataclass(frozen=True)
class DeployOptions:
    deploy_id: str
    confirm_timeout: int = 30
    activation_timeout: float = 300.0
    preflight_timeout: float = 10.0
    substitute: bool = False
    manifest: ManifestMaker | None = None  # (node, system, previous) -> signed manifest file


@dataclass(frozen=True)
class NodeJob:
    target: Target
    system: str
    closure: nix.Closure
    secrets: tuple[secrets.SecretValue, ...] = ()
    probes: tuple[Probe, ...] = ()


class NodeFailed(XnodeError):
    """A step failed; the node's state is already settled and recorded in the report."""


@dataclass
class _Run:
    """Mutable per-node bookkeeping for one deploy; emits the events."""

    target: Target
    opts: DeployOptions
    sink: Sink
    clock: Clock
    report: NodeReport
    started: dict[Phase, float] = field(default_factory=dict)
    begun: bool = False
    confirmed: bool = False
    locked: bool = False
    lock_unknown: bool = False  # a lock request went out and its reply never came back
    previous: str | None = None
    last_progress: float = 0.0
    _job: NodeJob | None = None

    @property
    def node(self) -> str:
        return self.target.node

    @property
    def job(self) -> NodeJob:
        if self._job is None:
            raise RuntimeError("the node's job is set when its system is built")
        return self._job

    def emit(self, phase: Phase, status: Status, **kw: Any) -> None:
        seconds = None
        if status in (Status.OK, Status.FAILED, Status.SKIPPED) and phase in self.started:
            seconds = round(time.monotonic() - self.started[phase], 3)
            self.report.phases[phase.value] = seconds
        elif status is Status.START:
            self.started[phase] = time.monotonic()
        self.sink(Event(self.node, phase, status, self.clock.elapsed(), seconds=seconds, **kw))

    def fail(
        self,
        phase: Phase,
        message: str,
        outcome: Outcome = Outcome.FAILED,
        state: NodeState = NodeState.OLD,
        reason: str | None = None,
    ) -> NodeFailed:
        self.report.outcome, self.report.state = outcome, state
        self.report.error, self.report.rollback_reason = message, reason
        self.emit(phase, Status.FAILED, message=message, rollback_reason=reason)
        return NodeFailed(message)


async def _preflight(run: _Run, helper: Helper) -> Info:
    """ONE round trip: reachable (bounded), host key (ssh enforces), helper present, node facts,
    and the deploy lock taken. A lock refusal still reports what the node runs."""
    run.emit(Phase.PREFLIGHT, Status.START)
    lock = ["lock", "--holder", run.opts.deploy_id]
    deadline = run.opts.preflight_timeout
    try:
        replies = await helper.chain(["info"], lock, timeout=deadline)  # uploads a missing helper
    except asyncio.CancelledError:
        run.lock_unknown = True  # the lock may have been taken: cleanup releases it if ours
        raise
    except HelperError as exc:
        if exc.done:
            _facts(run, helper.parse_info(exc.done[0]))
        holder = exc.data.get("holder")
        msg = (
            f"another deploy holds the node's lock ({holder}, since {exc.data.get('since')})"
            if exc.reason == "locked"
            else exc.message
        )
        raise run.fail(Phase.PREFLIGHT, msg) from exc
    except RemoteError as exc:
        raise run.fail(Phase.PREFLIGHT, exc.message) from exc
    run.locked = True
    info = helper.parse_info(replies[0])
    _facts(run, info)
    if info.current is None and info.generation is not None:
        # A profile exists but nothing runs: we could not say what "roll back" would return to.
        raise run.fail(
            Phase.PREFLIGHT,
            "the node's current system is unknown "
            "(/run/current-system missing while the system profile exists)",
        )
    run.emit(Phase.PREFLIGHT, Status.OK, generation_before=info.generation)
    return info


def _facts(run: _Run, info: Info) -> None:
    run.report.system_before, run.report.generation_before = info.current, info.generation


async def _missing_paths(run: _Run, helper: Helper) -> list[nix.PathInfo]:
    """The closure's paths the node lacks (one round trip), asked only when space is tight."""
    paths = "\n".join(run.job.closure.paths).encode()
    out = await helper.run_script(
        "xargs -r nix-store --check-validity --print-invalid",
        [],
        timeout=STEP_TIMEOUT_S,
        input=paths,
    )
    invalid = set(out.split())
    return [p for p in run.job.closure.paths.values() if p.path in invalid]


async def _copy(run: _Run, ssh: Ssh, total: int) -> None:
    """`nix copy` skips what the node has; bytes = NAR sizes of the paths it reports copied."""
    run.emit(Phase.COPY, Status.START, bytes=0, paths=0, total_bytes=total)
    sizes = {p.path: p.nar_size for p in run.job.closure.paths.values()}

    def on_path(path: str) -> None:
        run.report.paths_copied += 1
        run.report.bytes_copied += sizes.get(path, 0)
        now = time.monotonic()
        if now - run.last_progress >= 0.25:  # bounded event rate for --json readers
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


async def _stage(run: _Run, ssh: Ssh, helper: Helper, info: Info) -> bytes | None:
    """Space check, copy, secrets, manifest: all before the node changes."""
    need = run.job.closure.nar_size  # upper bound; exact only when it matters
    free = info.store_free_bytes
    if free is not None and free < need + FREE_MARGIN_BYTES:
        need = sum(p.nar_size for p in await _missing_paths(run, helper))
        if free < need + FREE_MARGIN_BYTES:
            raise run.fail(
                Phase.COPY,
                f"store full: {free} bytes free, "
                f"{need + FREE_MARGIN_BYTES} needed ({need} to copy + margin); nothing copied",
            )
    if need:
        await _copy(run, ssh, need)
    else:
        run.emit(Phase.COPY, Status.SKIPPED, bytes=0, paths=0, message="all paths present")
    if run.job.secrets:
        run.emit(Phase.SECRETS, Status.START)
        try:
            pending = await secrets.upload(ssh, run.job.secrets, timeout=STEP_TIMEOUT_S)
        except XnodeError as exc:
            raise run.fail(Phase.SECRETS, exc.message) from exc
        note = (
            f"owner not yet on the node (root-owned for now): {', '.join(pending)}"
            if pending
            else None
        )
        run.emit(Phase.SECRETS, Status.OK, message=note)
    return _manifest(run, info)


def _manifest(run: _Run, info: Info) -> bytes | None:
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


async def _activate(run: _Run, helper: Helper, manifest: bytes | None) -> None:
    """begin + wait in one round trip. A failed or hung activation is rolled back by the node."""
    run.emit(Phase.ACTIVATE, Status.START)
    # The helper kills a hung activation at activation_timeout and rolls back; allow for that.
    wait_s = run.opts.activation_timeout + run.opts.confirm_timeout + 10
    deadline = time.monotonic() + wait_s
    begin = helper.begin_args(
        run.job.system, run.opts.deploy_id, run.opts.confirm_timeout, run.opts.activation_timeout
    )
    # From here an interrupt must abort: `begin` may have run even if its reply never arrives.
    run.begun = True
    try:
        replies = await helper.chain(
            begin,
            helper.wait_args(run.opts.deploy_id, wait_s),
            timeout=wait_s + 10,
            file=("--manifest", manifest) if manifest is not None else None,
        )
        result = wait_result(replies[1])
    except HelperError as exc:
        if not exc.done:  # begin itself refused: nothing changed
            run.begun = False
            raise run.fail(Phase.ACTIVATE, exc.reason) from exc
        result = await _wait_again(run, helper, deadline, exc)
    except Unreachable:
        # Activation may restart sshd or the network: ask again over new connections.
        result = await _wait_again(run, helper, deadline, None)
    match result.state:
        case "activated":
            run.emit(Phase.ACTIVATE, Status.OK)
        case "failed":
            # The node's supervisor already re-activated the previous system.
            tail = result.log_tail.strip().splitlines()[-1:] or [""]
            reason = result.reason or f"activation exited {result.exit_code}"
            detail = f"{reason}: {tail[0]}" if tail[0] else reason
            state = NodeState.OLD if result.rolled_back else NodeState.UNKNOWN
            run.emit(
                Phase.ROLLBACK,
                Status.OK if result.rolled_back else Status.FAILED,
                rollback_reason=detail,
            )
            raise run.fail(Phase.ACTIVATE, detail, Outcome.ROLLED_BACK, state, detail)
        case _:
            raise run.fail(
                Phase.ACTIVATE,
                "the node rolled itself back",
                Outcome.ROLLED_BACK,
                NodeState.OLD,
                result.reason or result.state,
            )
    return None


async def _wait_again(
    run: _Run, helper: Helper, deadline: float, error: HelperError | None
) -> WaitResult:
    """The begin+wait session broke: wait again (fresh connections) until the deadline."""
    if error is not None and ("timeout" in error.reason or "timed out" in error.reason):
        await _rollback(
            run,
            helper,
            Phase.ACTIVATE,
            f"activation did not finish within {run.opts.activation_timeout:g} s",
        )
    while True:
        try:
            return await helper.wait(
                run.opts.deploy_id, max(1.0, deadline - time.monotonic()), fresh=True
            )
        except Unreachable:
            if time.monotonic() >= deadline:
                await _rollback(run, helper, Phase.ACTIVATE, "node unreachable during activation")
            await asyncio.sleep(1.0)
        except HelperError as exc:
            if exc.reason.startswith("no deploy"):  # begin never ran: nothing changed
                run.begun = False
                raise run.fail(Phase.ACTIVATE, "connection lost before activation began") from exc
            raise run.fail(
                Phase.ACTIVATE, exc.message, Outcome.ROLLED_BACK, NodeState.UNKNOWN
            ) from exc


async def _rollback(run: _Run, helper: Helper, phase: Phase, reason: str) -> None:
    """Abort now (the boot default never changed); raise with the settled state."""
    run.emit(Phase.ROLLBACK, Status.START, rollback_reason=reason)
    try:
        await helper.abort(run.opts.deploy_id, reason, timeout=run.opts.confirm_timeout + 30)
        state = NodeState.OLD
        run.emit(Phase.ROLLBACK, Status.OK, rollback_reason=reason)
    except XnodeError as exc:
        state = NodeState.UNKNOWN
        run.emit(
            Phase.ROLLBACK,
            Status.FAILED,
            message=f"{exc.message}; the node's timer rolls it back",
            rollback_reason=reason,
        )
    raise run.fail(phase, reason, Outcome.ROLLED_BACK, state, reason)


async def _probe(run: _Run, helper: Helper) -> None:
    if not run.job.probes:
        run.emit(Phase.PROBE, Status.SKIPPED, message="no health probes")
        return
    run.emit(Phase.PROBE, Status.START)
    probes = [
        {"kind": p.kind, "target": p.target, "status": p.status, "timeout": p.timeout}
        for p in run.job.probes
    ]
    limit = max(p.timeout for p in run.job.probes) + 15
    try:
        result = await helper.probe(probes, timeout=limit)
    except XnodeError as exc:
        return await _rollback(run, helper, Phase.PROBE, f"health probe failed: {exc.message}")
    if not result.ok:
        return await _rollback(
            run, helper, Phase.PROBE, f"health probe failed: {result.failures()}"
        )
    run.emit(Phase.PROBE, Status.OK)
    return None


async def _confirm(run: _Run, helper: Helper) -> None:
    """Confirm over NEW connections until the node's own deadline; else verify it rolled back."""
    run.emit(Phase.CONFIRM, Status.START)
    deadline = time.monotonic() + run.opts.confirm_timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            run.report.generation_after, unlocked = await helper.confirm(
                run.opts.deploy_id,
                timeout=max(2.0, deadline - time.monotonic()),
                unlock_holder=run.opts.deploy_id,
            )
            run.locked = not unlocked
        except RemoteError as exc:
            last = exc.message
            await asyncio.sleep(0.5)
            continue
        except HelperError as exc:
            raise run.fail(
                Phase.CONFIRM,
                exc.message,
                Outcome.ROLLED_BACK,
                await _settle(run, helper),
                exc.reason,
            ) from exc
        run.confirmed = True
        run.emit(
            Phase.CONFIRM,
            Status.OK,
            generation_before=run.report.generation_before,
            generation_after=run.report.generation_after,
        )
        return
    reason = f"confirmation did not arrive within {run.opts.confirm_timeout} s ({last})"
    state = await _settle(run, helper, wait_s=10.0)
    raise run.fail(Phase.CONFIRM, reason, Outcome.ROLLED_BACK, state, reason)


async def _settle(run: _Run, helper: Helper, wait_s: float = 0.0) -> NodeState:
    """Which system runs now (over the still-open multiplexed connection), waiting up to wait_s."""
    end = time.monotonic() + wait_s
    while True:
        try:
            info = await helper.info(timeout=5)
            if info.current == run.job.system and info.generation != run.report.generation_before:
                return NodeState.NEW
            if info.current == run.report.system_before:
                return NodeState.OLD
        except XnodeError:
            pass
        if time.monotonic() >= end:
            return NodeState.UNKNOWN
        await asyncio.sleep(0.5)


async def _interrupted(run: _Run, helper: Helper | None) -> None:
    """Ctrl-C: stop what runs, roll an unconfirmed activation back, record where the node is."""
    run.report.outcome = Outcome.INTERRUPTED
    if not run.begun or helper is None:
        run.report.state = NodeState.OLD
    elif run.confirmed:
        run.report.state = NodeState.NEW
    else:
        try:
            await helper.abort(run.opts.deploy_id, "interrupted by the operator", timeout=20)
        except XnodeError:
            pass
        run.report.state = await _settle(run, helper, wait_s=5.0)
    run.report.error = f"interrupted; the node is on its {run.report.state.value} generation"
    run.emit(Phase.DONE, Status.FAILED, message=run.report.error)


class NodeDeploy:
    """One node's deploy. `start_preflight` may run before the system is built; `deploy(job)` does
    the rest (starting the preflight itself if nobody did) and never raises for node failures:
    they are in the report. A node that will not be deployed after all is `abandon`ed."""

    def __init__(
        self, target: Target, opts: DeployOptions, session: Session, sink: Sink, clock: Clock
    ) -> None:
        self.report = NodeReport(target.node)
        self.run = _Run(target, opts, sink, clock, self.report)
        self.session = session
        self.ssh: Ssh | None = None
        self.helper: Helper | None = None
        self.used = False
        self._preflight: asyncio.Future[Info] | None = None
        self._started = time.monotonic()

    def start_preflight(self) -> None:
        if self._preflight is None:
            self._started = time.monotonic()
            self._preflight = asyncio.ensure_future(self._connect())

    async def _connect(self) -> Info:
        try:
            self.ssh = self.session.ssh(self.run.target)
        except XnodeError as exc:
            raise self.run.fail(Phase.PREFLIGHT, exc.one_line().removeprefix("error: ")) from exc
        self.helper = Helper(
            self.ssh,
            install_missing=True,
            announce_install=lambda done: self.run.emit(
                Phase.HELPER, Status.OK if done else Status.START
            ),
        )
        return await _preflight(self.run, self.helper)

    async def deploy(self, job: NodeJob) -> NodeReport:
        self.used = True
        self.run._job = job
        self.report.system_after = job.system
        self.start_preflight()
        assert self._preflight is not None
        try:
            info = await self._preflight
            assert self.ssh is not None and self.helper is not None
            await _pipeline(self.run, self.ssh, self.helper, info)
        except NodeFailed:
            pass
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # settling the node must not look cancelled to the runner
            await _interrupted(self.run, self.helper)
        finally:
            await self._cleanup()
            self.report.seconds = round(time.monotonic() - self._started, 3)
        return self.report

    async def abandon(self) -> None:
        """Not deployed after all (its build failed, its wave was skipped, Ctrl-C while building):
        stop the preflight, release the lock, close the connection. No-op once `deploy` ran."""
        if self.used:
            return
        self.used = True
        if self._preflight is not None:
            self._preflight.cancel()
            await asyncio.gather(self._preflight, return_exceptions=True)
        await self._cleanup()

    async def _cleanup(self) -> None:
        run, helper = self.run, self.helper
        if helper is not None and (run.locked or run.lock_unknown):
            try:
                await helper.unlock(run.opts.deploy_id, timeout=5)
            except (XnodeError, asyncio.CancelledError):
                pass  # a dead node keeps a stale lock; `lock --stale-after` frees it later
        if self.ssh is not None:
            try:
                await self.ssh.close()
            except (XnodeError, asyncio.CancelledError):
                pass


async def deploy_node(
    job: NodeJob,
    opts: DeployOptions,
    session: Session,
    sink: Sink,
    clock: Clock,
    started: NodeDeploy | None = None,
) -> NodeReport:
    """Deploy one node (continuing `started` if its preflight already ran); never raises for node
    failures (they are in the report)."""
    node = started or NodeDeploy(job.target, opts, session, sink, clock)
    return await node.deploy(job)


async def _pipeline(run: _Run, ssh: Ssh, helper: Helper, info: Info) -> None:
    # No-op only when the desired system both runs AND is the boot default.
    if info.current == run.job.system and info.profile == run.job.system:
        run.report.outcome, run.report.state = Outcome.UNCHANGED, NodeState.NEW
        run.report.generation_after = info.generation
        run.emit(Phase.DONE, Status.OK, message="already running the desired system")
        return
    manifest = await _stage(run, ssh, helper, info)
    await _activate(run, helper, manifest)
    await _probe(run, helper)
    await _confirm(run, helper)
    run.report.outcome, run.report.state = Outcome.DEPLOYED, NodeState.NEW
    run.emit(
        Phase.DONE,
        Status.OK,
        generation_before=run.report.generation_before,
        generation_after=run.report.generation_after,
    )
