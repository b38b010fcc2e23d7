"""Nodes: the fleet table from `status` (refreshing itself), a node's page, generations and
rollback."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from xnodectl.studio import services
from xnodectl.studio.web import form, fragment, page, studio

REFRESH_S = 10


async def nodes_page(request: Request) -> Response:
    inventory = services.load(studio(request).ws)
    return page(request, "nodes.html", nodes=inventory.nodes, refresh=REFRESH_S)


async def fleet_fragment(request: Request) -> Response:
    """The table body, from `xnodectl status` (the page fetches it every REFRESH_S seconds)."""
    st = studio(request)
    rows = await services.status(st.ws)
    return fragment("fleet_rows.html", rows=rows)


async def node_page(request: Request) -> Response:
    st = studio(request)
    name = request.path_params["name"]
    inventory = services.load(st.ws)
    node = inventory.node(name)  # unknown name: the CLI's error with its did-you-mean hint
    gens: list[dict[str, object]] = []
    gens_error = None
    try:
        gens = await services.generations(st.ws, name)
    except services.XnodeError as exc:
        gens_error = exc.one_line()
    return page(
        request,
        "node.html",
        node_name=name,
        node=node,
        generations=gens,
        generations_error=gens_error,
        history=services.node_history(st.ws, name),
        message=request.query_params.get("message"),
    )


async def rollback(request: Request) -> Response:
    st = studio(request)
    name = request.path_params["name"]
    data = await form(request)
    to_text = data.get("to", "").strip()
    if to_text and not to_text.isdigit():
        raise services.UsageError(
            f"generation '{to_text[:20]}' is not a number", hint="pick one from the list"
        )
    result = await services.rollback(st.ws, name, int(to_text) if to_text else None)
    message = f"{name}: now on generation {result.get('generation', '?')}"
    return RedirectResponse(f"/nodes/{name}?{urlencode({'message': message})}", status_code=303)
