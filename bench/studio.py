"""Xnode Studio benchmark. Prints one JSON object as its LAST line.

  first_page_seconds      `xnodectl studio` started -> URL printed -> first page (the catalogue)
                          answered 200 over HTTP (median of --starts runs)
  server_ms               per page: median time of --requests GETs over HTTP with the session
                          cookie (loopback; the preview is the live-typing POST)
  event_latency_ms        an engine event written by the engine's own `--json` sink
                          (xnodectl.deploy.events.JsonSink) in a child process -> the studio reads
                          the pipe -> SSE -> shown in the deploy table of a real headless Chromium
                          (a MutationObserver stamps it): median and max over --events events
                          (target: median under 100 ms)

Workspace: the README's first command's (`xnodectl init DIR template=ethereum-node
network=sepolia`), no node. The /nodes page's status fragment (which contacts nodes) is not timed.
Run from the repository root: python bench/studio.py [--starts 3] [--requests 20] [--events 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import positive_int
from tests.studio_browser import CHROMEDRIVER, CHROMIUM, browser, studio, wait
from xnodectl import process

EMITTER = """
import sys, time
from xnodectl.deploy.events import Event, JsonSink, Phase, Status
sink = JsonSink()
time.sleep(float(sys.argv[1]))
for i in range(int(sys.argv[2])):
    sink(Event("bench", Phase.COPY, Status.PROGRESS, 0.0, bytes=i, message=repr(time.time())))
    time.sleep(0.05)
sink.close()
print('{"type": "report", "ok": true, "interrupted": false, "seconds": 0, "failed": 0, '
      '"total": 1, "nodes": []}', flush=True)
"""

OBSERVE = """
const cell = document.querySelector('#progress tr[data-node="bench"] .outcome');
window.benchSeen = [];
new MutationObserver(() => window.benchSeen.push([cell.textContent, Date.now()]))
  .observe(cell, {childList: true, characterData: true, subtree: true});
"""


def workspace(root: Path) -> Path:
    out = process.run([sys.executable, "-m", "xnodectl", "init", str(root / "xnodes"),
                       "template=ethereum-node", "network=sepolia"])  # fmt: skip
    return Path(out.stdout.strip())


class Session:
    """An HTTP client holding the studio's session cookie (what the browser holds)."""

    def __init__(self, url: str) -> None:
        self.base = url.split("?")[0].rstrip("/")
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with self.opener.open(url) as response:
            self.first = response.read().decode()
        self.csrf = self.first.split('name="csrf-token" content="')[1].split('"')[0]

    def get(self, path: str) -> float:
        started = time.perf_counter()
        with self.opener.open(self.base + path) as response:
            response.read()
            assert response.status == 200, path
        return time.perf_counter() - started

    def post(self, path: str, body: bytes) -> float:
        request = urllib.request.Request(
            self.base + path, data=body, headers={"X-CSRF-Token": self.csrf}
        )
        started = time.perf_counter()
        with self.opener.open(request) as response:
            response.read()
        return time.perf_counter() - started


def first_page(ws: Path) -> float:
    started = time.perf_counter()
    with studio(ws) as (url, _proc):
        Session(url)
        return time.perf_counter() - started


def pages(ws: Path, requests: int) -> dict[str, float]:
    paths = ["/", "/templates/ipfs", "/templates/ethereum-node", "/nodes", "/deploys"]
    out: dict[str, float] = {}
    with studio(ws) as (url, _proc):
        s = Session(url)
        for path in paths:
            s.get(path)  # warm
            out[path] = statistics.median(s.get(path) for _ in range(requests)) * 1000
        body = b"storage_max=100GB&profile=server&gateway_fetch=on"
        out["POST /api/templates/ipfs/preview"] = (
            statistics.median(s.post("/api/templates/ipfs/preview", body) for _ in range(requests))
            * 1000
        )
    return {k: round(v, 1) for k, v in out.items()}


def latency(ws: Path, events: int) -> list[float]:
    """The studio in this process (to hand it the emitter); Chromium shows the deploy page."""
    import uvicorn

    from xnodectl.studio import access, services
    from xnodectl.studio.app import create
    from xnodectl.studio.server import Listen, bind

    sock = bind(Listen("127.0.0.1", 0))
    port = sock.getsockname()[1]
    keys = access.Keys.new("127.0.0.1", port)
    guard = create(services.Workspace(ws), keys)
    server = uvicorn.Server(uvicorn.Config(guard, log_level="warning", lifespan="on"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.serve(sockets=[sock]),), daemon=True
    )
    thread.start()
    runs = guard.app.state.studio.runs  # type: ignore[attr-defined]

    async def launch() -> Any:
        return runs.launch([sys.executable, "-c", EMITTER, "3", str(events)], ["bench"])

    try:
        with browser(Path(tempfile.mkdtemp(prefix="studio-bench-"))) as b:
            b.get(f"http://127.0.0.1:{port}/?token={keys.token}")
            run = asyncio.run_coroutine_threadsafe(launch(), loop).result(10)
            b.get(f"http://127.0.0.1:{port}/deploys/{run.id}")
            b.execute_script(OBSERVE)
            wait(lambda: len(b.execute_script("return window.benchSeen")) >= events, 30, "events")
            seen = b.execute_script("return window.benchSeen")
    finally:
        server.should_exit = True
        thread.join(10)
    return [(at / 1000 - float(text)) * 1000 for text, at in seen if text.strip()][:events]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=positive_int, default=3)
    parser.add_argument("--requests", type=positive_int, default=20)
    parser.add_argument("--events", type=positive_int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        ws = workspace(Path(tmp))
        starts = [first_page(ws) for _ in range(args.starts)]
        result: dict[str, Any] = {
            "first_page_seconds": round(statistics.median(starts), 3),
            "first_page_runs": [round(s, 3) for s in starts],
            "server_ms": pages(ws, args.requests),
        }
        if CHROMIUM.exists() and CHROMEDRIVER.exists():
            lat = latency(ws, args.events)
            result["event_latency_ms"] = {
                "median": round(statistics.median(lat), 1),
                "max": round(max(lat), 1),
                "events": len(lat),
                "target_median": 100,
            }
        else:
            result["event_latency_ms"] = "skipped: needs /usr/bin/chromium and chromedriver"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
