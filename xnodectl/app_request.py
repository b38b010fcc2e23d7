"""App requests (`template=NAME key=value ...` words) and a node's app entries, rendered and checked
to compose: the one path behind render, init, plan and deploy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xnodectl import catalog
from xnodectl.errors import UsageError
from xnodectl.inventory import AppEntry
from xnodectl.params import split_words
from xnodectl.render import check_collisions, render
from xnodectl.rendered import RenderedApp


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


def render_node(entries: Sequence[AppEntry], done: Sequence[RenderedApp] = ()) -> list[RenderedApp]:
    """Render every app of one node and check they compose (no shared port, user or route).
    `done`: apps already rendered (by instance name), reused rather than rendered again."""
    ready = {a.instance: a for a in done}
    rendered = [
        ready.get(e.instance) or render(catalog.get(e.template), e.params, e.name) for e in entries
    ]
    check_collisions(rendered)
    return rendered
