"""`template=NAME key=value ...` words -> rendered apps: the service behind render/init/deploy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xnodectl import catalog
from xnodectl.errors import UsageError
from xnodectl.inventory import AppEntry
from xnodectl.params import split_words
from xnodectl.render import RenderedApp, check_collisions, render


@dataclass(frozen=True)
class AppRequest:
    template: str
    params: dict[str, str]
    name: str | None = None


def parse_request(words: Sequence[str], name: str | None = None) -> AppRequest:
    values = split_words(words)
    template = values.pop("template", None)
    if template is None:
        raise UsageError(
            "no template given",
            hint="start with template=NAME; list them with: xnodectl templates list",
        )
    instance = values.pop("name", None) or name
    return AppRequest(template=template, params=values, name=instance)


def render_request(request: AppRequest) -> RenderedApp:
    return render(catalog.get(request.template), request.params, request.name)


def render_entry(entry: AppEntry) -> RenderedApp:
    return render(catalog.get(entry.template), entry.params, entry.name)


def render_node(entries: Sequence[AppEntry]) -> list[RenderedApp]:
    """Render every app of one node and check they compose (no shared port, user or route)."""
    rendered = [render_entry(e) for e in entries]
    check_collisions(rendered)
    return rendered


def example_params(template: catalog.Template) -> dict[str, Any]:
    return dict(template.meta.example)


def defaults_params(template: catalog.Template) -> dict[str, Any]:
    """The defaults render: every default, plus example values for required parameters."""
    return {
        name: template.meta.example[name]
        for name, spec in template.params.items()
        if spec.required and not spec.secret and name in template.meta.example
    }
