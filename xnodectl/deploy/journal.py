"""The deploy journal: a run's events and its report, as the `--json` stream, in the workspace.

`<workspace>/.xnodectl/runs/<deploy id>.jsonl`: a header line (`"type": "run"`: id, pid, nodes,
argv, start time), then every event, then the report and an `end` line with the exit code the
CLI exits with. Whoever deploys (the CLI in a terminal, a studio's child process), a studio open
on the workspace follows the file and shows the run live. `.xnodectl/` ignores itself for git
(the workspace's files are tracked so that flakes see them).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from xnodectl.deploy.events import Event, _Writer

KEEP = 50  # journals kept per workspace; older ones are removed when a run starts


def runs_dir(root: Path) -> Path:
    state = root / ".xnodectl"
    runs = state / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    ignore = state / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# xnodectl's own state (deploy journals): never tracked\n*\n")
    return runs


def _prune(runs: Path) -> None:
    old = sorted(runs.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)[:-KEEP]
    for path in old:
        path.unlink(missing_ok=True)


class Journal:
    """A sink (events) that also takes the report and the exit code; each line is written and
    flushed as the engine emits it (by the process's one writer, events._Writer), so a reader
    sees an event at once. Nothing is written before the first event: a run refused for bad
    input leaves the workspace as it was."""

    def __init__(self, root: Path, deploy_id: str, nodes: Sequence[str] = ()) -> None:
        self.root = root
        self.deploy_id = deploy_id
        self.nodes = list(nodes)
        self.path: Path | None = None
        self._file: IO[str] | None = None
        self._writer = _Writer.shared()

    def _open(self) -> IO[str]:
        runs = runs_dir(self.root)
        _prune(runs)
        self.path = runs / f"{self.deploy_id}.jsonl"
        file = self.path.open("a", encoding="utf-8")
        header = {
            "type": "run",
            "id": self.deploy_id,
            "pid": os.getpid(),
            "nodes": self.nodes,
            "argv": ["xnodectl", *sys.argv[1:]],
            "started": time.time(),
        }
        file.write(json.dumps(header) + "\n")
        return file

    def _put(self, line: str) -> None:
        # The journal is a regular file: written at once (it opens on the first line; until then
        # the thread takes it, as creating the directory may touch the disk).
        self._writer.put(lambda: self._write(line), self._file, len(line))

    def _write(self, line: str) -> None:
        if self._file is None:
            self._file = self._open()
        self._file.write(line)
        self._file.flush()

    def __call__(self, event: Event) -> None:
        self._put(event.line)

    def end(self, report: dict[str, Any], exit_code: int) -> None:
        self._put(json.dumps(report) + "\n")
        self._put(json.dumps({"type": "end", "exit_code": exit_code}) + "\n")

    def close(self) -> None:
        self._writer.flush()
        if self._file is not None:
            self._file.close()
