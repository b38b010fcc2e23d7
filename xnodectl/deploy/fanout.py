"""Fan-out schedule: which source each node copies the closure from (`--fan-out tree[:K]`).

The operator seeds ONE node; every node whose copy finished (a *holder*) then serves up to K nodes
at once. Rules (docs/deploy.md, "Fan-out"):
- peers are offered in the order they became holders; a peer that failed is skipped by everyone;
- a node never waits on a peer that is still copying: only finished copies are sources;
- the operator serves again only when no holder can serve now or later (every holder failed or
  was tried by this node, and no copy in flight can make a new one): that is the fallback.
Pure scheduling (no I/O): the copy itself is peers.py / the pipeline's copy stage.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from xnodectl.errors import UsageError

OPERATOR = ""  # the source name of the operator's own copy
DEFAULT_DEGREE = 2
_SPEC = re.compile(r"^tree(?::(\d+))?$")


@dataclass(frozen=True)
class Tree:
    degree: int = DEFAULT_DEGREE  # nodes one holder serves at once

    @classmethod
    def parse(cls, spec: str) -> Tree:
        match = _SPEC.match(spec)
        degree = int(match.group(1)) if match and match.group(1) else DEFAULT_DEGREE
        if match is None or not 1 <= degree <= 64:
            raise UsageError(
                f"--fan-out '{spec}' is not understood",
                hint="use tree (each node serves 2 others) or tree:K with K from 1 to 64",
            )
        return cls(degree)


@dataclass(frozen=True)
class Source:
    peer: str  # OPERATOR or the serving node's name
    fallback: bool = False  # the operator, after peers failed or none was left

    @property
    def is_operator(self) -> bool:
        return self.peer == OPERATOR


@dataclass
class Schedule:
    """Shared by every node of one run; all methods run on the event loop's thread."""

    tree: Tree
    holders: list[str] = field(default_factory=list)  # in the order they finished
    failed: set[str] = field(default_factory=set)
    _busy: dict[str, int] = field(default_factory=dict)
    _copying: set[str] = field(default_factory=set)
    _operator_seeded: bool = False
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def _free_peer(self, tried: set[str]) -> str | None:
        for peer in self.holders:
            if peer in self.failed or peer in tried:
                continue
            if self._busy.get(peer, 0) < self.tree.degree:
                return peer
        return None

    def _peers_possible(self, node: str, tried: set[str]) -> bool:
        """Could a peer serve `node` now or later (a usable holder, or a copy in flight)?"""
        usable = [p for p in self.holders if p not in self.failed and p not in tried]
        return bool(usable) or bool(self._copying - {node})

    def _pick(self, node: str, tried: set[str]) -> Source | None:
        peer = self._free_peer(tried)
        if peer is not None:
            return Source(peer)
        if not self._operator_seeded:
            self._operator_seeded = True
            return Source(OPERATOR)
        if not self._peers_possible(node, tried):
            return Source(OPERATOR, fallback=bool(tried) or bool(self.holders))
        return None

    async def acquire(self, node: str, tried: set[str]) -> Source:
        """The next source for `node` (never one in `tried`), waiting while every holder is busy
        or the only candidates are copies still in flight."""
        async with self._changed:
            while (source := self._pick(node, tried)) is None:
                await self._changed.wait()
            self._copying.add(node)
            if not source.is_operator:
                self._busy[source.peer] = self._busy.get(source.peer, 0) + 1
            return source

    async def release(self, node: str, source: Source, *, ok: bool, peer_failed: bool) -> None:
        """`node`'s copy from `source` ended; `ok`: it now holds the closure (serves others);
        `peer_failed`: the serving peer broke (it is skipped from now on)."""
        async with self._changed:
            self._copying.discard(node)
            if not source.is_operator:
                self._busy[source.peer] -= 1
                if peer_failed:
                    self.failed.add(source.peer)
            elif not ok and not self.holders:
                self._operator_seeded = False  # the seed failed: the operator seeds another
            if ok and node not in self.holders:
                self.holders.append(node)
            self._changed.notify_all()

    async def holds(self, node: str) -> None:
        """`node` already had the whole closure (nothing to copy): it serves from now on."""
        async with self._changed:
            if node not in self.holders:
                self.holders.append(node)
            self._operator_seeded = True
            self._changed.notify_all()

    async def gone(self, node: str) -> None:
        """`node` left the run without a copy (it failed before copying, or was skipped)."""
        async with self._changed:
            self._copying.discard(node)
            self._changed.notify_all()

    @asynccontextmanager
    async def slot(self, node: str, tried: set[str]) -> AsyncIterator[Source]:
        """acquire + release for callers that only know success or failure."""
        source = await self.acquire(node, tried)
        ok = False
        try:
            yield source
            ok = True
        finally:
            await self.release(node, source, ok=ok, peer_failed=not ok and not source.is_operator)
