"""One node's deploy, stage after stage: preflight -> stage (copy, secrets, manifest) -> activate
-> health -> confirm; rollback wherever one fails (docs/deploy.md, "What one node goes through").

Two-phase activation (docs/deploy-protocol.md): only a confirmation over a NEW SSH connection,
sent after the health probes passed, makes the new system the profile and boot default. Every exit
path leaves the node on its old or its new generation, and the report says which.
"""

from __future__ import annotations

import asyncio

from xnodectl.deploy import activate, confirm, health, preflight, rollback, stage
from xnodectl.deploy.agent import Agent, Info
from xnodectl.deploy.events import Clock, NodeReport, NodeState, Outcome, Phase, Sink, Status
from xnodectl.deploy.job import STEP_TIMEOUT_S, DeployOptions, NodeFailed, NodeJob, NodeRun
from xnodectl.errors import XnodeError
from xnodectl.remote import Session, Ssh, Target


class NodeDeploy:
    """`start_preflight` may run before the system is built; `deploy(job)` does the rest (starting
    the preflight itself if nobody did) and never raises for node failures: they are in the
    report. A node that will not be deployed after all is `abandon`ed."""

    def __init__(
        self,
        target: Target,
        opts: DeployOptions,
        session: Session,
        sink: Sink,
        clock: Clock,
        *,
        carries_secrets: bool = False,
    ) -> None:
        """`carries_secrets`: this node's deploy uploads secrets (its SSH master then keeps the
        post-quantum key exchange, remote.py)."""
        self.report = NodeReport(target.node)
        self.carries_secrets = carries_secrets
        self.run = NodeRun(target, opts, sink, clock, self.report)
        self.session = session
        self.ssh: Ssh | None = None
        self.agent: Agent | None = None
        self.used = False
        self._preflight: asyncio.Future[Info] | None = None
        self._beat: asyncio.Task[None] | None = None

    def start_preflight(self) -> None:
        if self._preflight is None:
            self._preflight = asyncio.ensure_future(self._connect())

    async def _connect(self) -> Info:
        try:
            self.ssh = self.session.ssh(self.run.target, carries_secrets=self.carries_secrets)
        except XnodeError as exc:
            raise self.run.fail(Phase.PREFLIGHT, exc.one_line().removeprefix("error: ")) from exc
        self.agent = Agent(
            self.ssh,
            install_missing=True,
            announce_install=lambda done: self.run.emit(
                Phase.HELPER, Status.OK if done else Status.START
            ),
        )
        info = await preflight.preflight(self.run, self.agent)
        every = self.run.opts.lock_beat_s
        if info.lock_stale_after:  # the node says how long its lock lasts without a heartbeat
            every = min(every, info.lock_stale_after / 3)
        self._beat = asyncio.ensure_future(self._keep_lock(self.agent, every))
        return info

    async def runs(self, system: str) -> bool:
        """Whether the started preflight finds the node running `system` and booting it (the
        no-op the deploy then makes); False when it fails or was not started."""
        if self._preflight is None:
            return False
        try:  # shielded: whoever asks may be cancelled, the preflight goes on
            info = await asyncio.shield(self._preflight)
        except Exception:
            return False
        return info.runs(system)

    async def _keep_lock(self, agent: Agent, every: float) -> None:
        """Refresh the node's lock (`lock` by its holder = a heartbeat) until the deploy ends."""
        lock = ["lock", "--holder", self.run.opts.deploy_id]
        while True:
            await asyncio.sleep(every)
            try:
                await agent.chain(lock, timeout=STEP_TIMEOUT_S)
            except XnodeError:
                pass  # a node that stopped answering fails the step the deploy is in

    async def deploy(self, job: NodeJob) -> NodeReport:
        self.used = True
        self.run.job_ = job
        self.report.system_after = job.system
        if job.build_seconds is not None:
            self.report.phases[Phase.BUILD.value] = job.build_seconds
        self.start_preflight()
        assert self._preflight is not None
        try:
            info = await self._preflight
            assert self.ssh is not None and self.agent is not None
            await _stages(self.run, self.ssh, self.agent, info)
        except NodeFailed:
            pass
        except XnodeError as exc:  # a step without its own handling: still this node's report
            await self._unexpected(exc)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # settling the node must not look cancelled to the runner
            await rollback.interrupted(self.run, self.agent)
        finally:
            await self._cleanup()
            self.report.seconds = self.run.clock.elapsed()
        return self.report

    async def _unexpected(self, exc: XnodeError) -> None:
        run = self.run
        state = NodeState.OLD
        if run.begun and self.agent is not None:
            state = NodeState.NEW if run.confirmed else await rollback.settle(run, self.agent)
        outcome = rollback.outcome_of(state) if run.begun else Outcome.FAILED
        run.fail(Phase.DONE, exc.message, outcome, state)

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
        run, agent = self.run, self.agent
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
        if agent is not None and (run.locked or run.lock_unknown):
            try:
                await agent.unlock(run.opts.deploy_id, timeout=5)
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
    node = started or NodeDeploy(
        job.target, opts, session, sink, clock, carries_secrets=bool(job.secrets)
    )
    return await node.deploy(job)


async def _stages(run: NodeRun, ssh: Ssh, agent: Agent, info: Info) -> None:
    if info.runs(run.job.system):  # running AND the boot default: nothing to do
        run.report.outcome, run.report.state = Outcome.UNCHANGED, NodeState.NEW
        run.report.generation_after = info.generation
        run.emit(Phase.DONE, Status.OK, message="already running the desired system")
        return
    manifest = await stage.stage(run, ssh, agent, info)
    await activate.activate(run, agent, manifest)
    await health.probe(run, agent)
    await confirm.confirm(run, agent)
    run.report.outcome, run.report.state = Outcome.DEPLOYED, NodeState.NEW
    run.emit(
        Phase.DONE,
        Status.OK,
        generation_before=run.report.generation_before,
        generation_after=run.report.generation_after,
    )
