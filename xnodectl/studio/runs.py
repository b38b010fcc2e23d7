"""Deploy pages: choose nodes or tags and the fleet options, start, watch it live (SSE), cancel."""

from __future__ import annotations

import json
import shlex
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from xnodectl.studio import services
from xnodectl.studio.deploys import Run
from xnodectl.studio.web import form, page, studio


def _count(data: dict[str, str], key: str, label: str) -> int | None:
    text = data.get(key, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise services.UsageError(
            f"{label} '{text[:20]}' is not a whole number", hint="use 0 or more"
        )
    return int(text)


async def deploys_page(request: Request) -> Response:
    st = studio(request)
    inventory = services.load(st.ws)
    tags = sorted({t for n in inventory.nodes.values() for t in n.tags})
    runs = list(reversed(st.runs.runs.values()))
    return page(request, "deploys.html", nodes=inventory.nodes, tags=tags, runs=runs)


async def start(request: Request) -> Response:
    st = studio(request)
    data = await form(request)
    inventory = services.load(st.ws)
    nodes = tuple(n for n in inventory.nodes if data.get(f"node:{n}"))
    tags = tuple(t for n in inventory.nodes.values() for t in n.tags if data.get(f"tag:{t}"))
    parallel = _count(data, "max_parallel", "max parallel")
    if parallel == 0:
        raise services.UsageError("max parallel must be at least 1", hint="use 1 or more")
    choice = services.DeployChoice(
        nodes=nodes,
        tags=tuple(dict.fromkeys(tags)),
        canary=_count(data, "canary", "canary") or 0,
        max_parallel=parallel,
        max_failures=_count(data, "max_failures", "max failures"),
    )
    names = [n for n, node in inventory.nodes.items() if n in nodes or set(node.tags) & set(tags)]
    run = st.runs.start(st.ws, choice, names or list(inventory.nodes))
    return RedirectResponse(f"/deploys/{run.id}", status_code=303)


def _run(request: Request) -> Run:
    run = studio(request).runs.get(request.path_params["id"])
    if run is None:
        raise services.UsageError(
            f"no deploy '{request.path_params['id'][:40]}' in this studio", hint="see /deploys"
        )
    return run


async def run_page(request: Request) -> Response:
    run = _run(request)
    # Ours: `python -m xnodectl deploy ...`; followed from a journal: the terminal's own argv.
    command = shlex.join(run.argv if run.pid is not None else ["xnodectl", *run.argv[3:]])
    return page(request, "deploy.html", run=run, command=command)


async def events(request: Request) -> Response:
    """Server-sent events: every line of the run's `--json` stream (replayed from Last-Event-ID),
    then `end` with the exit code and the CLI's error line."""
    run = _run(request)
    last = request.headers.get("last-event-id", "")
    start_at = int(last) + 1 if last.isdigit() else 0

    async def stream() -> AsyncIterator[bytes]:
        async for index, item in run.follow(start_at):
            kind = item.get("type", "event")
            yield f"id: {index}\nevent: {kind}\ndata: {json.dumps(item)}\n\n".encode()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


async def cancel(request: Request) -> Response:
    st = studio(request)
    st.runs.cancel(_run(request))
    return RedirectResponse(f"/deploys/{request.path_params['id']}", status_code=303)
