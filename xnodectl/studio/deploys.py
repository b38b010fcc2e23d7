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
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
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
    pid: int | None = None  # a deploy this studio did not start (followed through its journal)

    @property
    def done(self) -> bool:
        return self.exit_code is not None

    def feed(self, item: dict[str, Any]) -> None:
        item = {**item, "received": time.time()}
        if item.get("type") == "report":
            if "total" in item:  # a deploy's report (an image build's has none)
                item["summary"] = summary(item)
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


COUNTS = (
    ("deployed", "deployed"),
    ("unchanged", "unchanged"),
    ("failed", "failed"),
    ("unreachable", "unreachable"),
    ("skipped", "skipped"),
    ("interrupted_nodes", "interrupted"),
)


def summary(report: dict[str, Any]) -> str:
    """The report's own counts in words, e.g. "2 deployed of 2 nodes in 1.7 s"."""
    counts = ", ".join(f"{report[key]} {word}" for key, word in COUNTS if report.get(key))
    text = (
        f"{counts or 'nothing done'} of {report.get('total', 0)} nodes in {report.get('seconds')} s"
    )
    return text + (" (interrupted)" if report.get("interrupted") else "")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class _Tail:
    """A journal being followed: new complete lines are fed to the run as they are written."""

    path: Path
    run: Run
    offset: int
    partial: bytes = b""

    def pump(self) -> bool:
        """Feed what was appended; True once the run has ended (its end line, or the deploy
        process is gone without one)."""
        with self.path.open("rb") as file:
            file.seek(self.offset)
            data = file.read()
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        for raw in lines:
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if item.get("type") == "end":
                self.run.finish(int(item.get("exit_code", 1)), "")
                return True
            self.run.feed(item)
        if self.run.pid is not None and not _alive(self.run.pid) and not data:
            self.run.finish(1, "error: the deploy process ended without a report")
            return True
        return False


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
        if run.done:
            return False
        run.cancelled = True
        if run.proc is not None:
            run.proc.send_signal(signal.SIGINT)
        elif run.pid is not None and _alive(run.pid):
            os.kill(run.pid, signal.SIGINT)  # a terminal's deploy: exactly its Ctrl-C
        return True

    async def watch(self, ws: services.Workspace, every: float = 0.05) -> None:
        """Follow the workspace's deploy journals: a deploy started anywhere else (a terminal)
        while the studio runs shows up here, live. The studio's own children are skipped (they
        are followed through their stdout)."""
        directory = services.journal_dir(ws)
        since = time.time()
        tails: dict[Path, _Tail | None] = {}
        while True:
            for path in directory.glob("*.jsonl"):
                if path not in tails:
                    tails[path] = self._adopt(path, since)
            for path, tail in list(tails.items()):
                if tail is not None and tail.pump():
                    tails[path] = None  # ended
            await asyncio.sleep(every)

    def _adopt(self, path: Path, since: float) -> _Tail | None:
        try:
            with path.open("rb") as file:
                first = file.readline()
            header = json.loads(first)
        except (OSError, ValueError):
            return None
        own = {r.proc.pid for r in self.runs.values() if r.proc is not None}
        pid = int(header.get("pid", 0))
        if pid in own or float(header.get("started", 0)) < since - 5:
            return None  # ours, or over before the studio started
        nodes = [str(n) for n in header.get("nodes", [])]
        run = Run(
            str(header["id"]), list(header.get("argv", [])), {n: NodeProgress(n) for n in nodes}
        )
        run.pid = pid
        self.runs[run.id] = run
        return _Tail(path, run, len(first))

    async def shutdown(self) -> None:
        """The studio stops: every running deploy gets Ctrl-C and is waited for."""
        for run in self.running():
            self.cancel(run)
        while self.running():
            await asyncio.sleep(0.05)
