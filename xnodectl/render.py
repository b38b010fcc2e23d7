"""Render templates into NixOS modules.

Every `{{ expression }}` a template writes passes through `nixlit.encode` (Jinja's `finalize`), so a
parameter value can only ever appear in Nix source as a literal. Template authors write Nix around
those literals; they never paste user text into Nix source.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jinja2 import StrictUndefined, Undefined, UndefinedError
from jinja2 import TemplateError as JinjaError
from jinja2.sandbox import SandboxedEnvironment

from xnodectl import __version__, nixlit
from xnodectl.catalog import Template, substitute
from xnodectl.errors import CollisionError, ParamError, TemplateError, UsageError
from xnodectl.nixlit import NixExpr
from xnodectl.params import duration_seconds, resolve, secret_path
from xnodectl.rendered import Port, Probe, RenderedApp, Secret

_SAFE_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_INSTANCE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


def _ident(value: object) -> NixExpr:
    """Raw text for use inside a Nix string or attribute path; only safe characters pass."""
    text = str(value)
    if not _SAFE_IDENT.match(text):
        raise UsageError(
            f"'{text}' cannot be used as a name here", hint="use letters, digits, '-', '_' and '.'"
        )
    return NixExpr(text)


def _finalize(value: object) -> str:
    """Every `{{ }}` output: undefined names fail loudly, everything else is a Nix literal."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return nixlit.encode(value)


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined,
        finalize=_finalize,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ident"] = _ident
    env.filters["seconds"] = duration_seconds
    env.filters["nix"] = nixlit.encode  # explicit form, same encoder
    return env


_ENV = _environment()


def _ports(template: Template, values: Mapping[str, Any]) -> tuple[Port, ...]:
    out: list[Port] = []
    for meta in template.meta.ports:
        if meta.when is not None and not values.get(meta.when):
            continue
        number = int(substitute(str(meta.port), values))
        public = meta.public or (meta.public_if is not None and bool(values.get(meta.public_if)))
        protocols = ("tcp", "udp") if meta.protocol == "both" else (meta.protocol,)
        out.extend(
            Port(number, proto, public, meta.purpose, meta.metrics, meta.metrics_path)
            for proto in protocols
        )
    return tuple(out)


def _probes(template: Template, values: Mapping[str, Any]) -> tuple[Probe, ...]:
    out = []
    for meta in template.meta.health:
        if meta.when is not None and not values.get(meta.when):
            continue
        target = {"systemd": meta.unit, "tcp": meta.port, "http": meta.url}[meta.kind]
        out.append(Probe(meta.kind, substitute(str(target), values), meta.status, meta.timeout))
    return tuple(out)


def _header(template: Template, instance: str, values: Mapping[str, Any]) -> str:
    # Values go through the Nix encoder here too: it escapes newlines, so none can end the comment.
    shown = ", ".join(f"{k}={nixlit.encode(v)}" for k, v in values.items())
    return (
        f"# Rendered by xnodectl {__version__} from template '{template.name}' as app "
        f"'{instance}'.\n# Do not edit: change the parameters and render again.\n"
        f"# parameters: {shown}\n".replace("\n# parameters: \n", "\n")
    )


def render(
    template: Template, given: Mapping[str, object], instance: str | None = None
) -> RenderedApp:
    """Validate parameters and render one app module. Raises before anything is written."""
    instance = instance or template.name
    if not _INSTANCE.match(instance):
        raise UsageError(
            f"app name '{instance}' is not allowed",
            hint="use lowercase letters, digits and '-', starting with a letter",
        )
    values = resolve(template.params, given, template.name)
    check_requires(template, values)
    secrets = tuple(
        Secret(
            name,
            secret_path(instance, name),
            template.meta.parameters[name].owner,
            template.meta.parameters[name].group,
        )
        for name, spec in template.params.items()
        if spec.secret
    )
    context: dict[str, Any] = dict(values)
    for secret in secrets:
        context[secret.param] = secret.path
    context["app"] = instance
    ports = _ports(template, values)
    probes = _probes(template, values)
    routes = tuple(
        (r.path, int(substitute(str(r.port), values)))
        for r in template.meta.routes
        if r.when is None or values.get(r.when)
    )
    try:
        body = _ENV.from_string(template.module_source.read_text()).render(context)
    except UndefinedError as exc:
        raise TemplateError(f"{template.module_source}: {exc.message}") from exc
    except JinjaError as exc:
        raise TemplateError(f"{template.module_source}: {exc}") from exc
    source = _wrap(template, instance, values, body, ports, probes, secrets)
    return RenderedApp(
        instance=instance,
        template=template.name,
        params=values,
        given={k: values[k] for k in given if k in values},
        ports=ports,
        probes=probes,
        secrets=secrets,
        users=tuple(substitute(u, values) for u in template.meta.users),
        routes=routes,
        source=source,
    )


def _indent(text: str, prefix: str) -> str:
    return "".join(prefix + line if line.strip() else line for line in text.splitlines(True))


def _wrap(
    template: Template,
    instance: str,
    values: Mapping[str, Any],
    body: str,
    ports: Sequence[Port],
    probes: Sequence[Probe],
    secrets: Sequence[Secret],
) -> str:
    enc = nixlit.encode
    tcp = sorted({p.port for p in ports if p.public and p.protocol == "tcp"})
    udp = sorted({p.port for p in ports if p.public and p.protocol == "udp"})
    app = {
        "template": template.name,
        "health": [
            {"kind": p.kind, "target": p.target, "status": p.status, "timeout": p.timeout}
            for p in probes
        ],
        "secrets": [
            {"name": s.param, "path": s.path, "owner": s.owner, "group": s.group} for s in secrets
        ],
        "ports": [
            {
                "port": p.port,
                "protocol": p.protocol,
                "public": p.public,
                "purpose": p.purpose,
                "metrics": p.metrics,
            }
            | ({"metricsPath": p.metrics_path} if p.metrics_path else {})
            for p in ports
        ],
    }
    lines = [
        _header(template, instance, values),
        "{ ... }:\n{\n  imports = [\n    (\n",
        _indent(body.strip() + "\n", "      "),
        "    )\n  ];\n\n",
        "  # Ports the template declares public, opened only where its parameters ask.\n",
        f"  networking.firewall.allowedTCPPorts = {enc(tcp)};\n",
        f"  networking.firewall.allowedUDPPorts = {enc(udp)};\n\n",
        "  # What the deploy engine reads back: health probes, secret files, ports.\n",
        f"  xnode.apps.{nixlit.attr_name(instance)} = {enc(app)};\n",
        "}\n",
    ]
    return "".join(lines)


def _is_set(value: object) -> bool:
    return value not in (None, "", [], False)


def check_requires(template: Template, values: Mapping[str, Any]) -> None:
    """Cross-parameter rules of the template's `[[requires]]`, checked before anything renders."""
    for rule in template.meta.requires:
        trigger = values.get(rule.when)
        if not (trigger in rule.equals if rule.equals is not None else _is_set(trigger)):
            continue
        for name in rule.params:
            if not _is_set(values.get(name)):
                shown = str(trigger).lower() if isinstance(trigger, bool) else trigger
                spec = template.params[name]
                raise ParamError(
                    f"parameter '{name}' is needed when {rule.when}={shown}",
                    hint=f"add {name}=... ({spec.description})" if spec.description else None,
                )


def check_collisions(apps: Iterable[RenderedApp]) -> None:
    """Two apps on one node may not share a port, a user or a reverse-proxy route."""
    ports: dict[tuple[int, str], str] = {}
    users: dict[str, str] = {}
    routes: dict[str, str] = {}
    names: set[str] = set()
    for app in apps:
        if app.instance in names:
            raise CollisionError(
                f"two apps are named '{app.instance}'",
                hint="give one of them another name with --name",
            )
        names.add(app.instance)
        for port in app.ports:
            other = ports.setdefault((port.port, port.protocol), app.instance)
            if other != app.instance:
                raise CollisionError(
                    f"apps '{other}' and '{app.instance}' both use "
                    f"{port.protocol} port {port.port}",
                    hint=f"change the port parameter of '{app.instance}'",
                )
        for user in app.users:
            other = users.setdefault(user, app.instance)
            if other != app.instance:
                raise CollisionError(
                    f"apps '{other}' and '{app.instance}' both run as user '{user}'",
                    hint="a template can be deployed once per node",
                )
        for path, _port in app.routes:
            other = routes.setdefault(path, app.instance)
            if other != app.instance:
                raise CollisionError(
                    f"apps '{other}' and '{app.instance}' both claim the proxy route '{path}'",
                    hint=f"change the route parameter of '{app.instance}'",
                )


def render_nix(source: str, context: Mapping[str, Any]) -> str:
    """Render a Nix source template of xnodectl's own (workspace flake, image identity module)."""
    return _ENV.from_string(source).render(dict(context))
