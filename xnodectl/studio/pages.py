"""Catalogue and template pages: cards, the schema-generated form, live preview and plan."""

from __future__ import annotations

import shlex
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from xnodectl.studio import forms, services
from xnodectl.studio.web import form as read_form
from xnodectl.studio.web import html, page, studio


def _card(t: services.Template) -> dict[str, Any]:
    meta = t.meta
    return {
        "name": t.name,
        "summary": meta.summary,
        "category": meta.category,
        "resources": meta.resources,
        "ports": [p.port for p in meta.ports],
        "health": [p.kind for p in meta.health],
        "secrets": [n for n, s in t.params.items() if s.secret],
    }


async def catalogue(request: Request) -> Response:
    cards = [_card(t) for t in services.templates()]
    return page(request, "catalogue.html", cards=cards)


def _preview(sub: forms.Submission) -> dict[str, Any]:
    """Render what the form says, as `xnodectl render` would; the first error, if any, as the
    CLI's one line."""
    command = shlex.join(["xnodectl", "render", "-o", "-", *sub.words])
    if sub.app_name:
        command += f" --name {shlex.quote(sub.app_name)}"
    out: dict[str, Any] = {"command": command, "fields": sub.errors, "error": None}
    try:
        app = services.render(sub.words, sub.app_name)
    except services.XnodeError as exc:
        out["error"] = exc.one_line()
        return out
    out["app"] = app
    out["module"] = app.source
    return out


def _context(request: Request, t: services.Template, sub: forms.Submission) -> dict[str, Any]:
    st = studio(request)
    preview = _preview(sub)
    app = preview.get("app")
    inventory = services.load(st.ws)
    return {
        "t": t,
        "card": _card(t),
        "fields": forms.fields(services.schema(t)),
        "values": sub.values,
        "app_name": sub.app_name or "",
        "preview": preview,
        "secrets": services.secret_needs(st.ws, app) if app is not None else [],
        "nodes": list(inventory.nodes),
        "chosen": [],
        "plans": None,
    }


async def template_page(request: Request) -> Response:
    t = services.template(request.path_params["name"])
    sub = forms.read(t, {**forms.initial(t), **_switches(t, forms.initial(t))})
    return page(request, "template.html", **_context(request, t, sub))


def _switches(t: services.Template, values: dict[str, str]) -> dict[str, str]:
    """Initial switch states in the form's own encoding (a present field is on)."""
    return {
        f.name: ("on" if values.get(f.name) == "true" else "")
        for f in forms.fields(services.schema(t))
        if f.widget == "switch"
    }


async def preview_api(request: Request) -> Response:
    """Live preview while typing: per-field errors, the render command, the module (as HTML)."""
    t = services.template(request.path_params["name"])
    sub = forms.read(t, await read_form(request))
    preview = _preview(sub)
    body = html("preview.html", preview=preview)
    return JSONResponse(
        {
            "fields": sub.errors,
            "error": preview["error"],
            "command": preview["command"],
            "html": body,
        },
        headers={"cache-control": "no-store"},
    )


async def template_submit(request: Request) -> Response:
    """The form's buttons: store secrets (0600, never shown again), plan, or deploy."""
    st = studio(request)
    t = services.template(request.path_params["name"])
    data = await read_form(request)
    sub = forms.read(t, data)
    ctx = _context(request, t, sub)
    app = ctx["preview"].get("app")
    if app is not None:
        for param, value in sub.secrets.items():
            services.store_secret(st.ws, app.instance, param, value.encode())
        ctx["secrets"] = services.secret_needs(st.ws, app)
    chosen = [n for n in ctx["nodes"] if data.get(f"node:{n}")]
    ctx["chosen"] = chosen
    action = data.get("action", "preview")
    if action == "plan" and app is not None and not sub.errors:
        ctx["plans"] = await services.plan(st.ws, chosen, sub.words, sub.app_name)
    elif action == "deploy" and app is not None and not sub.errors:
        choice = services.DeployChoice(tuple(chosen), (), tuple(sub.words), sub.app_name)
        run = st.runs.start(st.ws, choice, chosen or list(ctx["nodes"]))
        return RedirectResponse(f"/deploys/{run.id}", status_code=303)
    status = 400 if ctx["preview"]["error"] else 200
    return page(request, "template.html", status=status, **ctx)
