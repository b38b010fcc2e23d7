"""Where each node's closure comes from: the operator, a peer (`--fan-out`) or a cache (`--via`).

One `Distribution` per run, over every system the run deploys (nodes' systems differ, their
closures mostly do not); the copy stage calls `copy(node, ssh, system)` for each node. From a peer
a node pulls the part of its closure the peer holds (the intersection of the two closures, which is
itself closed under references); the rest, typically the node's own configuration, comes from the
operator. Bytes are NAR sizes of the paths each copy reports done, booked under the source that
sent them; `operator_bytes` adds the one push to a cache. A peer or cache that fails sends the node
to the next source and says so (`note`); a path refused for its signature fails the node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xnodectl import inventory as inv
from xnodectl import nix, nixsign
from xnodectl.deploy import cache, peers
from xnodectl.deploy.events import NodeReport, Phase, Status, human_bytes
from xnodectl.deploy.fanout import Schedule, Source, Tree
from xnodectl.deploy.job import NodeJob, NodeRun
from xnodectl.errors import CommandFailed, XnodeError
from xnodectl.remote import RemoteError, Ssh

PROGRESS_EVERY_S = 0.25  # as the operator-only copy (stage.py)

Note = Callable[[str], None]  # a fallback the operator should see
OnPath = Callable[[str, str, int], None]  # (source kind, path, NAR bytes; < 0: booked elsewhere)


class CopyFailed(XnodeError):
    """The node did not get the closure (the message says from where it tried)."""


@dataclass
class Bytes:
    operator: int = 0
    peers: int = 0
    caches: int = 0

    @property
    def total(self) -> int:
        return self.operator + self.peers + self.caches


@dataclass(frozen=True)
class Plan:
    fan_out: Tree | None = None
    via: str | None = None
    copy_timeout: float = 3600.0
    substitute: bool = False  # operator copies: --substitute-on-destination

    @property
    def plain(self) -> bool:
        return self.fan_out is None and self.via is None


def shared_roots(mine: nix.Closure, theirs: nix.Closure) -> list[str]:
    """The paths of `mine` that `theirs` also holds, as the few roots whose closures cover them."""
    shared = mine.paths.keys() & theirs.paths.keys()
    referenced = {r for p in shared for r in mine.paths[p].references if r != p}
    return sorted(shared - referenced)


@dataclass
class Distribution:
    plan: Plan
    closures: Mapping[str, nix.Closure]  # system -> its closure, every system of the run
    endpoints: Mapping[str, peers.Endpoint]  # how peers reach each node
    key: peers.PeerKey | None = None  # needed with fan_out
    signer: Path | None = None  # the owner's secret key file: closures are signed before copies
    pushed_bytes: int = 0  # the operator's push to the cache
    per_node: dict[str, Bytes] = field(default_factory=dict)
    schedule: Schedule | None = None
    held: dict[str, str] = field(default_factory=dict)  # node -> the system it holds
    _push: asyncio.Task[None] | None = None
    signed: tuple[int, float] = (0, 0.0)  # paths this run signed, seconds it took
    _signing: asyncio.Task[None] | None = None
    _sign_started: bool = False
    _sign_said: bool = False
    _notes: dict[str, Note] = field(default_factory=dict)
    _watch: dict[str, OnPath] = field(default_factory=dict)
    _booked: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> path -> kind

    def __post_init__(self) -> None:
        if self.plan.fan_out is not None:
            self.schedule = Schedule(self.plan.fan_out)
        self._sizes = {p.path: p.nar_size for c in self.closures.values() for p in c.paths.values()}
        self._key = nixsign.key_name(self.signer) if self.signer is not None else ""

    @property
    def operator_bytes(self) -> int:
        return self.pushed_bytes + sum(b.operator for b in self.per_node.values())

    def _counter(self, node: str, kind: str) -> Callable[[str], None]:
        """Books each path once per node, under the source that sent it last: a copy killed
        mid-path still reports that path done (Nix stops its activity as the copy fails), and
        the next source sends it again; it moves there (`watch` sees -size, then +size)."""
        got = self.per_node.setdefault(node, Bytes())
        booked = self._booked.setdefault(node, {})

        def add(kind: str, path: str, size: int) -> None:
            setattr(got, kind, getattr(got, kind) + size)
            if (watch := self._watch.get(node)) is not None:
                watch(kind, path, size)

        def on_path(path: str) -> None:
            size = self._sizes.get(path, 0)
            if (before := booked.get(path)) is not None:
                add(before, path, -size)
            booked[path] = kind
            add(kind, path, size)

        return on_path

    def note(self, node: str, message: str) -> None:
        if (note := self._notes.get(node)) is not None:
            note(message)

    async def copy(
        self,
        node: str,
        ssh: Ssh,
        system: str,
        *,
        on_path: OnPath | None = None,
        note: Note | None = None,
    ) -> Bytes:
        """Give `node` the closure of `system` (one of `closures`); `on_path` sees every path
        arrive, `note` every fallback.

        Raises CopyFailed, peers.SignatureRefused or the node's own RemoteError."""
        self.per_node.setdefault(node, Bytes())
        if on_path is not None:
            self._watch[node] = on_path
        if note is not None:
            self._notes[node] = note
        await self._signed(node)
        if self.plan.via is not None and await self._from_cache(node, ssh, system):
            await self.holds(node, system)
            return self.per_node[node]
        if self.schedule is None:
            await self._from_operator(node, ssh, system)
        else:
            await self._fan_out(node, ssh, system, self.schedule)
        return self.per_node[node]

    async def holds(self, node: str, system: str) -> None:
        """`node` has the whole closure of `system` (copied, or it had it): it may serve."""
        self.held[node] = system
        if self.schedule is not None:
            await self.schedule.holds(node)

    def start_signing(self) -> None:
        """Start (once) the one `nix store sign` of the paths the owner has not signed yet."""
        if self.signer is None or self._sign_started:
            return
        self._sign_started = True
        if self._signing is None and (paths := nixsign.unsigned(self.closures.values(), self._key)):
            self._signing = asyncio.ensure_future(self._sign(self.signer, paths))

    async def _sign(self, signer: Path, paths: list[str]) -> None:
        started = time.monotonic()
        await nixsign.sign(signer, paths, recursive=False)
        self.signed = (len(paths), time.monotonic() - started)

    async def _signed(self, node: str) -> None:
        """Wait for the owner's signatures on every path a copy may move (none to wait for when
        every path carried one already); a copy that had to wait says how long."""
        self.start_signing()
        if self._signing is None:
            return
        started = time.monotonic()
        try:
            await asyncio.shield(self._signing)
        except CommandFailed as exc:
            raise CopyFailed(f"signing the closure failed: {exc.message}") from exc
        count, seconds = self.signed
        waited = time.monotonic() - started
        if waited < 0.001 and self._sign_said:
            return
        self._sign_said = True  # the first copy says it, and every copy that waited
        self.note(
            node,
            f"signed {count} paths with {self._key} in {seconds:.3f} s; "
            f"the copy waited {waited:.3f} s for it",
        )

    async def _from_cache(self, node: str, ssh: Ssh, system: str) -> bool:
        assert self.plan.via is not None
        try:
            if self._push is None:
                self._push = asyncio.ensure_future(self._push_once(self.plan.via))
            await asyncio.shield(self._push)
            await cache.substitute(
                ssh, system, on_path=self._counter(node, "caches"), timeout=self.plan.copy_timeout
            )
        except cache.CacheFailed as exc:
            self.note(node, f"cache {self.plan.via}: {exc.message}; falling back to the operator")
            return False
        return True

    async def _push_once(self, url: str) -> None:
        def on_path(path: str) -> None:
            self.pushed_bytes += self._sizes.get(path, 0)

        systems = sorted(self.closures)  # one copy: shared paths go up once
        await cache.push(url, systems, on_path=on_path, timeout=self.plan.copy_timeout)

    async def _from_operator(self, node: str, ssh: Ssh, system: str) -> None:
        try:
            await nix.copy(
                ssh.target.store_uri,
                [system],
                sshopts=ssh.sshopts(),
                substitute=self.plan.substitute,
                on_path=self._counter(node, "operator"),
                timeout=self.plan.copy_timeout,
            )
        except CommandFailed as exc:
            raise CopyFailed(f"copy failed: {exc.message}") from exc

    async def _fan_out(self, node: str, ssh: Ssh, system: str, schedule: Schedule) -> None:
        tried: set[str] = set()
        while True:
            source = await schedule.acquire(node, tried)
            try:
                await self._copy_from(node, ssh, system, source)
            except peers.PeerFailed as exc:
                await schedule.release(node, source, ok=False, peer_failed=True)
                tried.add(source.peer)
                self.note(node, f"{exc.message}; trying another source")
                continue
            except peers.SignatureRefused:
                # The node fails; the peer that served a refused path serves nobody else.
                await schedule.release(node, source, ok=False, peer_failed=True)
                raise
            except BaseException:
                await schedule.release(node, source, ok=False, peer_failed=False)
                raise
            self.held[node] = system
            await schedule.release(node, source, ok=True, peer_failed=False)
            return

    async def _copy_from(self, node: str, ssh: Ssh, system: str, source: Source) -> None:
        assert self.key is not None
        user = self.endpoints[node].user
        if source.is_operator:
            if source.fallback:
                self.note(node, "no peer could serve it: copying from the operator")
            await self._from_operator(node, ssh, system)
            try:
                await peers.serve(ssh, self.key, user, timeout=30)
            except peers.PeerFailed as exc:  # it has the closure; peers that try it skip it
                self.note(node, f"{exc.message}; it will not serve other nodes")
            return
        theirs = self.closures[self.held[source.peer]]
        roots = shared_roots(self.closures[system], theirs)
        if roots:
            await peers.pull(
                ssh,
                self.endpoints[source.peer],
                self.key,
                roots,
                serve_as=user,
                on_path=self._counter(node, "peers"),
                timeout=self.plan.copy_timeout,
            )
        if set(self.closures[system].paths) - set(theirs.paths):
            # The node's own part (its configuration): from the operator.
            await self._from_operator(node, ssh, system)

    async def close(self, ssh_of: Callable[[str], Ssh]) -> None:
        """Revoke the deploy's key on every holder (best effort: sshd's expiry covers the rest);
        a signing no copy waited for (every node was up to date) is stopped, never waited on:
        the next deploy that copies signs what it left."""
        if self._signing is not None and not self._signing.done():
            self._signing.cancel()
            await asyncio.gather(self._signing, return_exceptions=True)
        if self.schedule is None or self.key is None:
            return
        key = self.key

        async def one(node: str) -> None:
            ssh = ssh_of(node)
            try:
                await peers.revoke(ssh, key, self.endpoints[node].user, timeout=10)
            except XnodeError:
                pass
            finally:
                await ssh.close()

        await asyncio.gather(*(one(n) for n in self.schedule.holders))


def make_key(plan: Plan, directory: Path, deploy_id: str) -> peers.PeerKey | None:
    return peers.PeerKey.create(directory, deploy_id) if plan.fan_out is not None else None


def _where(report: NodeReport) -> str:
    parts = [
        f"{kind} {human_bytes(n)}"
        for kind, n in (
            ("operator", report.bytes_from_operator),
            ("peers", report.bytes_from_peers),
            ("caches", report.bytes_from_caches),
        )
        if n
    ]
    return "from " + ", ".join(parts) if parts else "nothing new"


async def copy_from_sources(run: NodeRun, ssh: Ssh, dist: Distribution, total: int) -> None:
    """The copy stage through the run's sources: events say where the bytes came from, a fallback
    is a progress event with its reason, a refused signature fails the node."""
    run.emit(Phase.COPY, Status.START, bytes=0, paths=0, total_bytes=total)
    report = run.report

    def progress(message: str | None = None) -> None:
        run.emit(
            Phase.COPY,
            Status.PROGRESS,
            bytes=report.bytes_copied,
            paths=report.paths_copied,
            total_bytes=total,
            message=message,
        )

    def on_path(kind: str, _path: str, size: int) -> None:
        report.paths_copied += 1 if size >= 0 else -1  # -size: booked again elsewhere
        report.bytes_copied += size
        field_name = f"bytes_from_{kind}"
        setattr(report, field_name, getattr(report, field_name) + size)
        now = time.monotonic()
        if now - run.last_progress >= PROGRESS_EVERY_S:
            run.last_progress = now
            progress()

    try:
        await dist.copy(run.node, ssh, run.job.system, on_path=on_path, note=progress)
    except (CopyFailed, peers.SignatureRefused, RemoteError) as exc:
        raise run.fail(Phase.COPY, exc.message) from exc
    run.emit(
        Phase.COPY,
        Status.OK,
        bytes=report.bytes_copied,
        paths=report.paths_copied,
        total_bytes=total,
        message=_where(report),
    )


def for_run(
    plan: Plan,
    jobs: Sequence[NodeJob],
    inventory: inv.Inventory,
    session_dir: Path,
    deploy_id: str,
    signer: Path | None,
) -> Distribution | None:
    """The run's sources; None when the operator copies unsigned closures itself (no owner key,
    no --fan-out, no --via: the copy stage's own `nix copy`)."""
    if plan.plain and signer is None:
        return None
    closures = {job.system: job.closure for job in jobs if job.closure is not None}
    endpoints = {
        job.target.node: peers.endpoint_of(job.target.node, inventory.nodes[job.target.node])
        for job in jobs
    }
    dist = Distribution(
        plan,
        closures,
        endpoints,
        key=make_key(plan, session_dir, deploy_id),
        signer=signer,
    )
    dist.start_signing()  # now: it runs while the nodes' preflights and stage steps do
    return dist
