"""Typed events (one per phase per node) and the reports a fleet run ends with."""

from __future__ import annotations

import functools
import json
import os
import queue
import select
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from xnodectl.units import human_bytes as human_bytes  # the deploy table uses it too


class Phase(StrEnum):
    BUILD = "build"
    PREFLIGHT = "preflight"
    HELPER = "upload-helper"
    COPY = "copy"
    SECRETS = "secrets"
    MANIFEST = "manifest"
    ACTIVATE = "activate"
    PROBE = "probe"
    CONFIRM = "confirm"
    ROLLBACK = "rollback"
    DONE = "done"


class Status(StrEnum):
    START = "start"
    PROGRESS = "progress"
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


class Outcome(StrEnum):
    DEPLOYED = "deployed"  # the node runs the new system and boots it
    UNCHANGED = "unchanged"  # it already ran the desired system: nothing copied or activated
    ROLLED_BACK = "rolled-back"  # activation happened, then the node returned to the old system
    FAILED = "failed"  # stopped before activation: the node never left its old system
    SKIPPED = "skipped"  # not attempted (a canary or too many others failed)
    INTERRUPTED = "interrupted"  # Ctrl-C; `state` says where the node was left


class NodeState(StrEnum):
    OLD = "old"  # running the generation it had before this run
    NEW = "new"  # running (and booting) the new generation
    NEW_UNCONFIRMED = "new-unconfirmed"  # running the new system, which is NOT its boot default
    UNKNOWN = "unknown"  # unreachable after activation started; its own timer decides


@dataclass(frozen=True)
class Event:
    node: str
    phase: Phase
    status: Status
    elapsed: float  # seconds since the run started
    seconds: float | None = None  # this phase's duration, on ok/failed
    bytes: int | None = None
    paths: int | None = None
    total_bytes: int | None = None
    generation_before: int | None = None
    generation_after: int | None = None
    message: str | None = None
    rollback_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"type": "event"}
        for name in _EVENT_FIELDS:  # not dataclasses.asdict: its deep copy, per event, is slow
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    @functools.cached_property
    def line(self) -> str:
        """The event as one line of the --json stream and the journal (serialized once)."""
        return json.dumps(self.to_json()) + "\n"


_EVENT_FIELDS = tuple(f.name for f in fields(Event))


@dataclass
class NodeReport:
    node: str
    outcome: Outcome = Outcome.FAILED
    state: NodeState = NodeState.OLD
    system_before: str | None = None
    system_after: str | None = None
    generation_before: int | None = None
    generation_after: int | None = None
    bytes_copied: int = 0
    paths_copied: int = 0
    # Where the copied bytes came from (NAR sizes): the operator, peers (--fan-out), caches (--via).
    bytes_from_operator: int = 0
    bytes_from_peers: int = 0
    bytes_from_caches: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    rollback_reason: str | None = None
    unreachable: bool = False  # it failed because SSH could not reach it

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.DEPLOYED, Outcome.UNCHANGED)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FleetReport:
    nodes: list[NodeReport]
    seconds: float
    interrupted: bool = False
    operator_bytes: int | None = None  # bytes the operator sent (copies + one push to a cache)

    def _operator_bytes(self) -> int:
        if self.operator_bytes is not None:
            return self.operator_bytes
        return sum(n.bytes_copied for n in self.nodes)  # the operator copied everything

    def count(self, *outcomes: Outcome) -> int:
        return sum(1 for n in self.nodes if n.outcome in outcomes)

    @property
    def failed(self) -> int:
        """Nodes that were tried and did not end on the new system (skipped ones are apart)."""
        return self.count(Outcome.FAILED, Outcome.ROLLED_BACK)

    @property
    def ok(self) -> bool:
        return all(n.ok for n in self.nodes)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "report",
            "ok": self.ok,
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
            "deployed": self.count(Outcome.DEPLOYED),
            "unchanged": self.count(Outcome.UNCHANGED),
            "failed": self.failed,
            "unreachable": sum(1 for n in self.nodes if n.unreachable),
            "skipped": self.count(Outcome.SKIPPED),
            "interrupted_nodes": self.count(Outcome.INTERRUPTED),
            "total": len(self.nodes),
            "operator_bytes": self._operator_bytes(),
            "nodes": [n.to_json() for n in self.nodes],
        }


Sink = Callable[[Event], None]


class Clock:
    def __init__(self, start: float | None = None) -> None:
        """`start`: a time.monotonic() reading (default: now)."""
        self.start = time.monotonic() if start is None else start

    def elapsed(self) -> float:
        return round(time.monotonic() - self.start, 3)


class _Writer:
    """Output in order, never blocking the event loop that drives every node.

    A line goes out at once when its stream takes it without blocking: a regular file, memory, or
    a pipe with room for it (poll; at most PIPE_BUF bytes). Otherwise (a full pipe, a terminal, a
    socket) it goes to a thread of its own, and so does every line after it until that thread has
    caught up. Measured on a busy 2-core machine, 8-node deploy: handing every line to the thread
    blocked the event loop ~1 ms per line (the wake of the thread and the GIL hand-over; 0.3 s per
    deploy), writing it at once costs microseconds; a reader that stops reading still never
    stalls a deploy."""

    _shared: _Writer | None = None

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._queued = 0  # jobs handed to the thread (counted by the producer)
        self._done = 0  # jobs the thread finished (counted by the thread)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @classmethod
    def shared(cls) -> _Writer:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def put(self, job: Callable[[], None], stream: Any = None, size: int = 0) -> None:
        """Run `job` (writing about `size` bytes to `stream`) now if that cannot block and nothing
        is still queued before it; else on the writer thread."""
        if stream is not None and self._queued == self._done and self._ready(stream, size):
            try:
                job()
            except (OSError, ValueError):  # the reader went away (closed pipe): output is moot
                pass
            return
        with self._lock:
            self._queued += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._drain, name="xnodectl-output", daemon=True
                )
                self._thread.start()
        self._jobs.put(job)

    @staticmethod
    def _ready(stream: Any, size: int) -> bool:
        try:
            fd = stream.fileno()
        except (OSError, ValueError, AttributeError):  # in memory (a test's StringIO)
            return True
        try:  # asked every time: a closed descriptor's number comes back for another file
            mode = os.fstat(fd).st_mode
        except OSError:
            return False
        if stat.S_ISREG(mode):
            return True
        if not stat.S_ISFIFO(mode) or size > select.PIPE_BUF:
            return False  # a terminal, a socket: poll does not promise room for the whole line
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & select.POLLOUT for _, ev in poller.poll(0))

    def _drain(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except (OSError, ValueError):  # the reader went away (closed pipe): output is moot
                pass
            finally:
                self._done += 1

    def flush(self) -> None:
        """Wait until everything queued so far is written."""
        if self._queued == self._done:
            return
        done = threading.Event()
        self.put(done.set)
        done.wait()


class JsonSink:
    """`--json`: one object per line on stdout, each flushed as it happens (by the writer)."""

    def __init__(self) -> None:
        self._out = sys.stdout
        self._writer = _Writer.shared()

    def __call__(self, event: Event) -> None:
        line = event.line
        self._writer.put(lambda: self._write(line), self._out, len(line))

    def _write(self, line: str) -> None:
        self._out.write(line)
        self._out.flush()

    def close(self) -> None:
        self._writer.flush()


class ConsoleSink:
    """Progress on stderr: one line per phase change; copy progress at most every half second."""

    def __init__(self) -> None:
        from rich.console import Console  # lazy: keeps `xnodectl --help` fast

        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self._last_progress: dict[str, float] = {}
        self._writer = _Writer.shared()

    def close(self) -> None:
        self._writer.flush()

    def __call__(self, event: Event) -> None:
        if event.status is Status.PROGRESS:
            last = self._last_progress.get(event.node, 0.0)
            if event.elapsed - last < 0.5:
                return
            self._last_progress[event.node] = event.elapsed
        style = {Status.FAILED: "red", Status.OK: "green", Status.SKIPPED: "yellow"}.get(
            event.status, ""
        )
        parts = [
            f"[{event.elapsed:6.1f}s]",
            f"{event.node:<12}",
            f"{event.phase.value:<13}",
            event.status.value,
        ]
        if event.bytes is not None:
            total = f"/{human_bytes(event.total_bytes)}" if event.total_bytes else ""
            parts.append(f"{human_bytes(event.bytes)}{total}")
        if event.seconds is not None:
            parts.append(f"({event.seconds:.1f}s)")
        if event.generation_after is not None:
            before = "-" if event.generation_before is None else event.generation_before
            parts.append(f"generation {before} -> {event.generation_after}")
        if event.message:
            parts.append(f"- {event.message}")
        if event.rollback_reason:
            parts.append(f"- rolled back: {event.rollback_reason}")
        line = " ".join(parts)
        self._writer.put(
            lambda: self.console.print(line, style=style or None, markup=False),
            self.console.file,
            2 * len(line) + 32,  # styles and the line end
        )
