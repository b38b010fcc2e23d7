"""The studio's ASGI application: routes, static files, the access guard, one error handler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from xnodectl.studio import access, claims, fleet, images, pages, runs, services, signin
from xnodectl.studio.deploys import Runs
from xnodectl.studio.web import HERE, Studio, on_error

ROUTES = [
    Route("/", pages.catalogue, name="catalogue"),
    Route("/templates/{name}", pages.template_page, name="template"),
    Route("/templates/{name}", pages.template_submit, methods=["POST"]),
    Route("/api/templates/{name}/preview", pages.preview_api, methods=["POST"]),
    Route("/nodes", fleet.nodes_page, name="nodes"),
    Route("/nodes/add", fleet.add_page),
    Route("/nodes/add", fleet.add_submit, methods=["POST"]),
    Route("/nodes/claim", claims.claim_page),
    Route("/nodes/claim", claims.claim_submit, methods=["POST"]),
    Route("/api/claims", claims.prepare_api, methods=["POST"]),
    Route("/api/claims/{id}", claims.finish_api, methods=["POST"]),
    Route("/nodes/{name}", fleet.node_page, name="node"),
    Route("/nodes/{name}/rollback", fleet.rollback, methods=["POST"]),
    Route("/fragments/fleet", fleet.fleet_fragment),
    Route("/deploys", runs.deploys_page, name="deploys"),
    Route("/deploys", runs.start, methods=["POST"]),
    Route("/deploys/{id}", runs.run_page, name="deploy"),
    Route("/deploys/{id}/events", runs.events),
    Route("/deploys/{id}/cancel", runs.cancel, methods=["POST"]),
    Route("/images", images.images_page, name="images"),
    Route("/images", images.images_submit, methods=["POST"]),
    Route("/images/{id}", images.build_page),
    Route("/images/{id}/events", images.build_events),
    Route("/images/{id}/download", images.download),
    Route("/auth/login", signin.login_page),
    Route("/auth/login", signin.login, methods=["POST"]),
    Route("/auth/nonce", signin.nonce),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]


def interrupt_all(guard: access.Guard) -> None:
    """Ctrl-C to every deploy and image build this studio runs (they settle and report)."""
    app = guard.app
    state: Studio = app.state.studio  # type: ignore[attr-defined]
    for run in state.runs.running():
        state.runs.cancel(run)
    app.state.builds.interrupt()  # type: ignore[attr-defined]


def create(ws: services.Workspace, keys: access.Keys) -> access.Guard:
    """The app behind its guard: nothing answers before the Host, session and CSRF checks."""
    nonces = services.NonceStore() if keys.owner is not None else None
    state = Studio(ws=ws, keys=keys, runs=Runs(), nonces=nonces)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        watcher = asyncio.create_task(state.runs.watch(ws))
        yield
        watcher.cancel()
        await state.runs.shutdown()  # Ctrl-C of the studio is Ctrl-C of its deploys

    app = Starlette(
        routes=ROUTES,
        exception_handlers={services.XnodeError: on_error, Exception: on_error},
        lifespan=lifespan,
    )
    app.state.studio = state
    app.state.builds = images.Builds()
    app.state.claims = claims.PendingClaims()
    return access.Guard(app, keys)
