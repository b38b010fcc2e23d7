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
    gens: list[services.Generation] = []
    log: list[services.DeployRecord] = []
    gens_error = log_error = None
    try:
        gens = await services.generations(st.ws, name)
    except services.XnodeError as exc:
        gens_error = exc.one_line()
    if gens_error is None:  # an unreachable node is said once, not twice
        try:
            log = await services.node_log(st.ws, name)
        except services.XnodeError as exc:
            log_error = exc.one_line()
    return page(
        request,
        "node.html",
        node_name=name,
        node=node,
        generations=gens,
        generations_error=gens_error,
        log=log,
        log_error=log_error,
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
    now = await services.rollback(st.ws, name, int(to_text) if to_text else None)
    message = f"{name}: now on generation {now if now is not None else '?'}"
    return RedirectResponse(f"/nodes/{name}?{urlencode({'message': message})}", status_code=303)


def _node_fields(data: dict[str, str]) -> dict[str, str]:
    return {k: data.get(k, "").strip() for k in ("name", "host", "port", "user", "tags")}


async def add_page(request: Request) -> Response:
    return page(request, "node_add.html", values={"port": "22", "user": "root"}, scanned=None)


async def add_submit(request: Request) -> Response:
    """Two steps, as `node add --scan` on a terminal: scan and show the host key's fingerprint,
    then add the node with exactly that key once the operator accepts it."""
    from starlette.concurrency import run_in_threadpool

    st = studio(request)
    data = await form(request)
    values = _node_fields(data)
    if not values["port"].isdigit():
        raise services.UsageError(
            f"port '{values['port'][:20]}' is not a number", hint="1 to 65535"
        )
    add = services.NodeChoice(
        name=values["name"],
        host=values["host"],
        port=int(values["port"]),
        user=values["user"] or "root",
        tags=tuple(t.strip() for t in values["tags"].split(",") if t.strip()),
        host_key=data.get("host_key") or None,
    )
    if data.get("action") == "accept":
        services.add_node(st.ws, add)
        message = (
            f"added node '{add.name}' with host key {services.fingerprint(add.host_key or '')}"
        )
        return RedirectResponse(f"/nodes/{add.name}?{urlencode({'message': message})}", 303)
    services.check_node(add)  # every value checked before the host is contacted
    scanned = await run_in_threadpool(services.scan, add.host, add.port)
    return page(request, "node_add.html", values=values, scanned=scanned)
