"""Deploys started from the studio: the real `xnodectl deploy --json`, its events streamed to the
browser as they happen.

Why a child process and not the engine in-process: Cancel sends the child SIGINT, which is exactly
Ctrl-C in a terminal, so every guarantee the CLI gives on Ctrl-C (each node settled on its old or
new generation, the report written, exit 130) holds by construction, and a studio restart or crash
cannot take a running deploy with it half-way. Its stdout is the engine's own `--json` stream.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import IO, Any

from xnodectl import process
from xnodectl.studio import services

TERMINAL = frozenset({"ok", "failed", "skipped"})


@dataclass
class NodeProgress:
    node: str
    phase: str = "waiting"
    status: str = "-"
    bytes: int | None = None
    total_bytes: int | None = None
    elapsed: float = 0.0
    outcome: str | None = None
    message: str | None = None

    def apply(self, event: dict[str, Any]) -> None:
        self.phase, self.status = event.get("phase", self.phase), event.get("status", self.status)
        self.elapsed = float(event.get("elapsed", self.elapsed))
        if event.get("bytes") is not None:
            self.bytes = event["bytes"]
        if event.get("total_bytes") is not None:
            self.total_bytes = event["total_bytes"]
        if event.get("message"):
            self.message = str(event["message"])


@dataclass
class Run:
    id: str
    argv: list[str]
    nodes: dict[str, NodeProgress]
    started: float = field(default_factory=time.time)
    lines: list[dict[str, Any]] = field(default_factory=list)  # events, then the report
    report: dict[str, Any] | None = None
    exit_code: int | None = None
    error: str | None = None  # the CLI's one-line error (stderr), if it ended with one
    cancelled: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    proc: process.Spawned | None = None

    @property
    def done(self) -> bool:
        return self.exit_code is not None

    def feed(self, item: dict[str, Any]) -> None:
        item = {**item, "received": time.time()}
        if item.get("type") == "report":
            self.report = item
            for n in item.get("nodes", []):
                progress = self.nodes.setdefault(n["node"], NodeProgress(n["node"]))
                progress.outcome = n.get("outcome")
                progress.message = n.get("rollback_reason") or n.get("error") or progress.message
        elif item.get("type") == "event":
            self.nodes.setdefault(item["node"], NodeProgress(item["node"])).apply(item)
        self.lines.append(item)
        self._wake()

    def finish(self, code: int, stderr: str) -> None:
        self.exit_code = code
        errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
        self.error = errors[-1] if errors else None
        self.lines.append({"type": "end", "exit_code": code, "error": self.error})
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def follow(self, start: int = 0) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """Every line from `start` on, then each new one as it arrives, until the run ends."""
        index = start
        while True:
            waiter = self.changed
            while index < len(self.lines):
                yield index, self.lines[index]
                index += 1
            if self.done and index >= len(self.lines):
                return
            await waiter.wait()


def _pump(stream: IO[bytes], on_line: Callable[[bytes], None]) -> None:
    for raw in iter(stream.readline, b""):
        on_line(raw)


class Runs:
    """The deploys this studio started, newest last."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}

    def get(self, run_id: str) -> Run | None:
        return self.runs.get(run_id)

    def running(self) -> list[Run]:
        return [r for r in self.runs.values() if not r.done]

    def start(self, ws: services.Workspace, choice: services.DeployChoice, names: list[str]) -> Run:
        services.check_deploy(ws, choice)  # bad input: the CLI's one-line error, nothing started
        return self.launch(services.deploy_argv(ws, choice), names)

    def launch(self, argv: list[str], names: list[str]) -> Run:
        """Run `argv` (a deploy with --json) and follow its stdout; bench/studio.py gives an
        emitter of engine events here to time the way from the engine to the browser."""
        run = Run(time.strftime("%Y%m%dT%H%M%S") + f"-{len(self.runs) + 1}", argv,
                  {n: NodeProgress(n) for n in names})  # fmt: skip
        self.runs[run.id] = run
        loop = asyncio.get_running_loop()
        proc = process.spawn(argv, stdout=process.PIPE, stderr=process.PIPE, new_session=True)
        run.proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        err: list[bytes] = []

        def on_line(raw: bytes) -> None:
            try:
                item = json.loads(raw)
            except ValueError:
                return
            if isinstance(item, dict):
                loop.call_soon_threadsafe(run.feed, item)

        def watch() -> None:
            errors = threading.Thread(target=_pump, args=(proc.stderr, err.append), daemon=True)
            errors.start()
            _pump(proc.stdout, on_line)  # type: ignore[arg-type]  # asserted not None above
            code = proc.wait()
            errors.join()
            stderr = b"".join(err).decode(errors="replace")
            loop.call_soon_threadsafe(run.finish, code, stderr)

        threading.Thread(target=watch, name=f"deploy-{run.id}", daemon=True).start()
        return run

    def cancel(self, run: Run) -> bool:
        """Ctrl-C for the run: SIGINT to the deploy, which settles every node and reports."""
        if run.done or run.proc is None:
            return False
        run.cancelled = True
        run.proc.send_signal(signal.SIGINT)
        return True

    async def shutdown(self) -> None:
        """The studio stops: every running deploy gets Ctrl-C and is waited for."""
        for run in self.running():
            self.cancel(run)
        while self.running():
            await asyncio.sleep(0.05)
