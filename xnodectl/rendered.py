"""What rendering a template produces: the app's module text and the facts the engine reads
(ports, health probes, secrets, users, routes). Plain data without the renderer (jinja2), so the
deploy engine can carry it without loading the renderer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Port:
    port: int
    protocol: str  # tcp | udp
    public: bool
    purpose: str
    metrics: bool = False
    metrics_path: str | None = None


@dataclass(frozen=True)
class Probe:
    kind: str  # systemd | tcp | http
    target: str  # unit name, port number or URL
    status: int = 200
    timeout: int = 60


@dataclass(frozen=True)
class Secret:
    param: str
    path: str
    owner: str
    group: str


@dataclass(frozen=True)
class RenderedApp:
    instance: str
    template: str
    params: Mapping[str, Any]
    # What the user gave (validated); the inventory keeps only this so template defaults can evolve.
    given: Mapping[str, Any]
    ports: tuple[Port, ...]
    probes: tuple[Probe, ...]
    secrets: tuple[Secret, ...]
    users: tuple[str, ...]
    routes: tuple[tuple[str, int], ...]
    source: str = field(repr=False)

    @property
    def filename(self) -> str:
        return f"{self.instance}.nix"
