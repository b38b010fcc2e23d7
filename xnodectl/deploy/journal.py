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
    """A sink (events) that also takes the report and the exit code; writes on its own thread,
    each line flushed, so a reader sees an event as soon as the engine emits it."""

    def __init__(self, root: Path, deploy_id: str, nodes: Sequence[str]) -> None:
        runs = runs_dir(root)
        _prune(runs)
        self.path = runs / f"{deploy_id}.jsonl"
        self._file: IO[str] = self.path.open("a", encoding="utf-8")
        self._writer = _Writer()
        header = {
            "type": "run",
            "id": deploy_id,
            "pid": os.getpid(),
            "nodes": list(nodes),
            "argv": ["xnodectl", *sys.argv[1:]],
            "started": time.time(),
        }
        self._put(header)

    def _put(self, data: dict[str, Any]) -> None:
        line = json.dumps(data) + "\n"
        self._writer.put(lambda: self._write(line))

    def _write(self, line: str) -> None:
        self._file.write(line)
        self._file.flush()

    def __call__(self, event: Event) -> None:
        self._put(event.to_json())

    def end(self, report: dict[str, Any], exit_code: int) -> None:
        self._put(report)
        self._put({"type": "end", "exit_code": exit_code})

    def close(self) -> None:
        self._writer.close()
        self._file.close()
