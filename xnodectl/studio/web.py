"""What every route shares: the page renderer, the form reader, errors as the CLI's one line."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from xnodectl.errors import ExitCode, XnodeError
from xnodectl.studio import access, services
from xnodectl.studio.deploys import Runs

HERE = Path(__file__).parent
logger = logging.getLogger(__name__)

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass
class Studio:
    """The state one studio process serves from."""

    ws: services.Workspace
    keys: access.Keys
    runs: Runs
    nonces: services.NonceStore | None = None  # wallet sign-in (beyond loopback) only


def studio(request: Request) -> Studio:
    state: Studio = request.app.state.studio
    return state


def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    st = studio(request)
    html = _env.get_template(name).render(
        csrf=st.keys.csrf,
        workspace=str(st.ws.root),
        path=request.url.path,
        running=len(st.runs.running()),
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def html(name: str, **context: Any) -> str:
    return _env.get_template(name).render(**context)


def fragment(name: str, **context: Any) -> HTMLResponse:
    return HTMLResponse(html(name, **context), headers=_HEADERS)


_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    # Everything comes from the studio itself: no CDN, no inline script.
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
}


async def form(request: Request) -> dict[str, str]:
    """The submitted form (the Guard already checked its CSRF token and kept its body)."""
    body = await request.body()
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def status_of(error: XnodeError) -> int:
    return 400 if error.exit_code is ExitCode.BAD_INPUT else 502


def wants_json(request: Request) -> bool:
    api = request.url.path.startswith(("/api/", "/auth/"))
    return api or "application/json" in request.headers.get("accept", "")


async def on_error(request: Request, exc: Exception) -> Response:
    """One catch point, as in the CLI: an XnodeError is its one line; anything else is an
    internal error line, never a traceback."""
    if isinstance(exc, XnodeError):
        line, status = exc.one_line(), status_of(exc)
    else:
        logger.exception("studio internal error")
        line = (
            f"error: internal error: {type(exc).__name__}: {exc} "
            "(hint: rerun with --debug for the traceback and report it)"
        )
        status = 500
    if wants_json(request):
        return JSONResponse({"error": line}, status_code=status, headers=_HEADERS)
    return page(request, "error.html", status=status, error=line)
