"""The node agent's replies, typed: the JSON of `xnode-activate` validated at this edge
(pydantic) and handed up as frozen dataclasses; and the one probe request it reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from xnodectl.rendered import Probe


class _Lock(BaseModel):
    model_config = ConfigDict(extra="ignore")
    holder: str = "?"
    since: str | int | None = None
    seen: str | int | None = None
    age: int | None = None


class _Info(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: int | str = "?"
    current: str | None = None
    profile: str | None = None
    generation: int | None = None
    store_free_bytes: int | None = None
    lock: _Lock | None = None
    signed_deploys: bool = False
    active: str | None = None
    lock_stale_after: int | None = None


class _Check(BaseModel):
    model_config = ConfigDict(extra="ignore")
    kind: str = "?"
    target: str = "?"
    ok: bool = False
    detail: str | None = None
    seconds: float | None = None


class _Generation(BaseModel):
    model_config = ConfigDict(extra="ignore")
    number: int
    path: str = ""
    current: bool = False
    date: str | None = None


@dataclass(frozen=True)
class LockInfo:
    holder: str
    since: str | None
    seen: str | None
    age: int | None = None  # seconds since the last heartbeat, on the node's boot clock


@dataclass(frozen=True)
class Info:
    version: str
    current: str | None
    profile: str | None  # the system profile = the boot default
    generation: int | None
    store_free_bytes: int | None
    lock: LockInfo | None
    signed_deploys: bool
    active: str | None = None  # the deploy in progress on the node (not settled yet)
    # seconds without a heartbeat after which the node lets another deploy take its lock over
    lock_stale_after: int | None = None

    def runs(self, system: str) -> bool:
        """The node runs `system` AND boots it: a deploy of `system` is a no-op."""
        return self.current == system and self.profile == system


@dataclass(frozen=True)
class WaitResult:
    state: str  # activated | failed | rolled-back | interrupted
    exit_code: int | None
    log_tail: str
    reason: str | None
    rolled_back: bool = False  # the agent already returned to the previous system
    fallback: str | None = None  # the previous system was gone: what the node returned to


@dataclass(frozen=True)
class ProbeCheck:
    kind: str
    target: str
    ok: bool
    detail: str | None
    seconds: float | None


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    results: tuple[ProbeCheck, ...]

    def failures(self) -> str:
        bad = [r for r in self.results if not r.ok]
        return "; ".join(f"{r.kind} {r.target}: {r.detail or 'failed'}" for r in bad) or (
            "probe failed"
        )


@dataclass(frozen=True)
class Generation:
    number: int
    path: str
    current: bool
    date: str | None


def probe_request(probes: Sequence[Probe], cap: int | None = None) -> bytes:
    """The `probe --file` JSON: each probe's kind, target, expected status and seconds to retry
    (at most `cap`)."""
    return json.dumps(
        [
            {
                "kind": p.kind,
                "target": _agent_target(p),
                "status": p.status,
                "timeout": p.timeout if cap is None else min(p.timeout, cap),
            }
            for p in probes
        ]
    ).encode()


def _agent_target(probe: Probe) -> str:
    """The agent's tcp probe connects to HOST:PORT; a template's tcp probe names only its port
    (the app listens on the node itself): 127.0.0.1:PORT. A bare port was read as a host name
    (bash's /dev/tcp/4001/4001 connects to 0.0.15.161), so every tcp probe failed."""
    if probe.kind == "tcp" and ":" not in probe.target:
        return f"127.0.0.1:{probe.target}"
    return probe.target


def _text(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def wait_result(data: dict[str, Any]) -> WaitResult:
    return WaitResult(
        str(data.get("state")),
        data.get("exit_code"),
        str(data.get("log_tail") or ""),
        data.get("reason"),
        bool(data.get("rolled_back")),
        data.get("fallback"),
    )


def info_of(data: dict[str, Any]) -> Info:
    """Raises pydantic.ValidationError on a reply that is not an `info` reply."""
    model = _Info.model_validate(data)
    lock = model.lock
    return Info(
        str(model.version),
        model.current,
        model.profile,
        model.generation,
        model.store_free_bytes,
        None
        if lock is None
        else LockInfo(lock.holder, _text(lock.since), _text(lock.seen), lock.age),
        model.signed_deploys,
        model.active,
        model.lock_stale_after,
    )


def probe_result_of(data: dict[str, Any]) -> ProbeResult:
    checks = [_Check.model_validate(r) for r in data.get("results") or []]
    return ProbeResult(
        bool(data.get("ok")),
        tuple(ProbeCheck(c.kind, c.target, c.ok, c.detail, c.seconds) for c in checks),
    )


def generations_of(data: dict[str, Any]) -> list[Generation]:
    gens = [_Generation.model_validate(g) for g in data.get("generations") or []]
    return [Generation(g.number, g.path, g.current, g.date) for g in gens]


class _Transition(BaseModel):
    model_config = ConfigDict(extra="ignore")
    state: str
    boot: str | None = None
    uptime_ms: int | None = None


class _DeployRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    holder: str | None = None
    started: str | None = None
    system: str | None = None
    previous: str | None = None
    previous_generation: int | None = None
    generation: int | None = None
    state: str | None = None
    decision: str | None = None
    reason: str | None = None
    fallback: str | None = None
    exit_code: int | None = None
    rolled_back: bool = False
    settled: bool = False
    journal: list[_Transition] = []
    log_tail: str = ""


@dataclass(frozen=True)
class Transition:
    state: str
    boot: str | None  # the node's boot it happened on (timers run on that boot's clock)
    uptime_ms: int | None  # milliseconds since that boot


@dataclass(frozen=True)
class DeployRecord:
    """One deploy as the node recorded it (`xnode-activate history`)."""

    id: str
    holder: str | None  # the lock holder it ran under, where the node has evidence of one
    started: str | None  # wall clock (display only)
    system: str | None
    previous: str | None
    previous_generation: int | None
    generation: int | None  # the profile generation it became (confirmed deploys)
    state: str | None
    decision: str | None  # confirm | rollback | None (not decided yet)
    reason: str | None  # why it was rolled back / failed / interrupted
    fallback: str | None
    exit_code: int | None  # of its activation
    rolled_back: bool
    settled: bool
    journal: tuple[Transition, ...]
    log_tail: str


def history_of(data: dict[str, Any]) -> list[DeployRecord]:
    """Raises pydantic.ValidationError on a reply that is not a `history` reply."""
    records = [_DeployRecord.model_validate(d) for d in data["deploys"]]
    return [
        DeployRecord(
            **r.model_dump(exclude={"journal"}),
            journal=tuple(Transition(t.state, t.boot, t.uptime_ms) for t in r.journal),
        )
        for r in records
    ]
