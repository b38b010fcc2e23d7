"""What one node's deploy carries through the stages: its job (built system, closure, secrets,
probes), the run's options, and the run record that times each phase and emits its events."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xnodectl import nix
from xnodectl.deploy.events import Clock, Event, NodeReport, NodeState, Outcome, Phase, Sink, Status
from xnodectl.deploy.secrets import SecretValue
from xnodectl.errors import XnodeError
from xnodectl.remote import Target
from xnodectl.rendered import Probe

if TYPE_CHECKING:
    from xnodectl.deploy.sources import Distribution

STEP_TIMEOUT_S = 30.0  # one agent round trip that does no real work

ManifestMaker = Callable[[str, str, str | None], bytes]  # (node, system, previous) -> signed file


@dataclass(frozen=True)
class DeployOptions:
    deploy_id: str
    confirm_timeout: int = 30
    activation_timeout: float = 300.0
    preflight_timeout: float = 10.0
    substitute: bool = False
    manifest: ManifestMaker | None = None
    # While a node's deploy runs, its lock is refreshed this often: a copy longer than the node's
    # stale-after (900 s by default) must not let another deploy take the node over.
    lock_beat_s: float = 60.0


@dataclass(frozen=True)
class NodeJob:
    target: Target
    system: str
    closure: nix.Closure | None  # None: not read, as the node already runs `system`
    secrets: tuple[SecretValue, ...] = ()
    probes: tuple[Probe, ...] = ()
    build_seconds: float | None = None
    sources: Distribution | None = None  # the run's copy sources (owner signing, fan-out, cache)

    @property
    def paths(self) -> nix.Closure:
        """The closure a copy moves (read for every node that may need one)."""
        assert self.closure is not None, "a node that runs its system copies nothing"
        return self.closure

    @property
    def probe_budget(self) -> int:
        """Seconds the health gate may take: the probes run side by side, each within the
        timeout its template.toml gives it."""
        return max((p.timeout for p in self.probes), default=0)


class NodeFailed(XnodeError):
    """A step failed; the node's state is already settled and recorded in the report."""


@dataclass
class NodeRun:
    """Mutable per-node bookkeeping for one deploy; emits the events and times the phases."""

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
    last_progress: float = 0.0
    job_: NodeJob | None = None

    @property
    def node(self) -> str:
        return self.target.node

    @property
    def job(self) -> NodeJob:
        if self.job_ is None:
            raise RuntimeError("the node's job is set when its system is built")
        return self.job_

    def emit(self, phase: Phase, status: Status, **kw: Any) -> None:
        seconds = None
        if status in (Status.OK, Status.FAILED, Status.SKIPPED) and phase in self.started:
            seconds = round(time.monotonic() - self.started[phase], 3)
            self.report.phases[phase.value] = seconds
        elif status is Status.START:
            self.started[phase] = time.monotonic()
        self.sink(Event(self.node, phase, status, self.clock.elapsed(), seconds, **kw))

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
