"""templates list/show, render, init."""

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from xnodectl.cli import output
from xnodectl.cli.options import JsonOpt

if TYPE_CHECKING:
    from xnodectl.workspace import Workspace

Words = Annotated[
    list[str] | None,
    typer.Argument(help="template=NAME followed by key=value parameters.", show_default=False),
]


def register(app: typer.Typer) -> None:
    from xnodectl.cli import new_app

    group = new_app("Browse the app template catalogue.")
    group.command("list")(list_templates)
    group.command("show")(show_template)
    app.add_typer(group, name="templates")
    app.command("render")(render_cmd)
    app.command("init")(init_cmd)


def _summary(t: object) -> dict[str, object]:
    from xnodectl.catalog import Template

    assert isinstance(t, Template)
    meta = t.meta
    return {
        "name": meta.name,
        "summary": meta.summary,
        "category": meta.category,
        "resources": meta.resources.model_dump(),
    }


def _default(value: object) -> str:
    """A default as the TOML value an operator would write (true, 8545, ["eth", "net"])."""
    import json

    return "no default" if value is None else "default " + json.dumps(value, ensure_ascii=False)


def list_templates(as_json: JsonOpt = False) -> None:
    """List the app templates."""
    from xnodectl import catalog

    templates = catalog.all_templates()
    if as_json:
        output.as_json([_summary(t) for t in templates])
        return
    rows = [[t.name, t.meta.category, t.meta.summary] for t in templates]
    output.result(output.table(rows, ["NAME", "CATEGORY", "SUMMARY"]))


def show_template(
    name: Annotated[str, typer.Argument(help="Template name.")], as_json: JsonOpt = False
) -> None:
    """Show a template: parameters (as JSON Schema), ports, health probes, resources, example."""
    from xnodectl import catalog
    from xnodectl.params import as_word

    t = catalog.get(name)
    data = {
        **_summary(t),
        "description": t.meta.description,
        "parameters": catalog.json_schema(t),
        "ports": [p.model_dump() for p in t.meta.ports],
        "health": [p.model_dump(exclude_none=True) for p in t.meta.health],
        "users": t.meta.users,
        "routes": [r.model_dump(exclude_none=True) for r in t.meta.routes],
        "example": t.meta.example,
    }
    if as_json:
        output.as_json(data)
        return
    lines = [f"{t.name} ({t.meta.category}): {t.meta.summary}"]
    if t.meta.description:
        lines.append(t.meta.description.strip())
    res = t.meta.resources
    lines.append(
        f"resources: >= {res.min_cpus} CPU, {res.min_ram_mb} MB RAM, {res.min_disk_gb} GB disk"
    )
    lines.append("parameters:")
    for pname, spec in t.params.items():
        kind = spec.type.value + (f"[{spec.items.value}]" if spec.items else "")
        extra = (
            "secret file"
            if spec.secret
            else ("required" if spec.required else _default(spec.default))
        )
        choices = f" one of {', '.join(spec.choices)}" if spec.choices else ""
        lines.append(f"  {pname} ({kind}, {extra}){choices}: {spec.description}")
    lines.append("ports:")
    for port in t.meta.ports:
        public = (
            "public"
            if port.public
            else (f"public if {port.public_if}" if port.public_if else "localhost only")
        )
        lines.append(f"  {port.port}/{port.protocol} {public}: {port.purpose}")
    lines.append("health:")
    for probe in t.meta.health:
        target = probe.unit or probe.url or probe.port
        lines.append(f"  {probe.kind} {target}")
    lines.append(
        "example: xnodectl render "
        + shlex.join(
            [f"template={t.name}", *(f"{k}={as_word(v)}" for k, v in t.meta.example.items())]
        )
    )
    output.result("\n".join(lines))


def render_cmd(
    words: Words = None,
    out: Annotated[
        str,
        typer.Option(
            "--output", "-o", metavar="DIR|-", help="Directory to write to, or - for stdout."
        ),
    ] = ".",
    name: Annotated[
        str | None, typer.Option("--name", help="App name (default: the template name).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Render a template into a NixOS module: xnodectl render template=NAME key=value ...

    Secret parameters take no value here: the module reads them from files on the node.
    """
    from xnodectl.app_request import parse_request, render_request

    rendered = render_request(parse_request(words or [], name))
    if out == "-":
        if as_json:
            output.as_json({**_rendered_json(rendered), "source": rendered.source})
        else:
            output.result(rendered.source.rstrip("\n"))
        return
    directory = Path(out)
    if directory.exists() and not directory.is_dir():
        from xnodectl.errors import UsageError

        raise UsageError(
            f"{directory} is not a directory", hint="give -o an existing or new directory"
        )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / rendered.filename
    path.write_text(rendered.source)
    output.info(f"rendered {rendered.template} as app '{rendered.instance}'")
    if as_json:
        output.as_json({"path": str(path), **_rendered_json(rendered)})
        return
    output.result(str(path))


def _rendered_json(rendered: object) -> dict[str, object]:
    from xnodectl.rendered import RenderedApp

    assert isinstance(rendered, RenderedApp)
    return {
        "app": rendered.instance,
        "template": rendered.template,
        "parameters": dict(rendered.params),
        "ports": [vars(p) for p in rendered.ports],
        "health": [vars(p) for p in rendered.probes],
        "secrets": [vars(s) for s in rendered.secrets],
    }


def init_cmd(
    directory: Annotated[Path, typer.Argument(help="Workspace directory to create.")],
    words: Words = None,
    node: Annotated[str, typer.Option("--node", help="Name of the first node.")] = "local",
    host: Annotated[str, typer.Option("--host", help="Address of the first node.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="SSH port of the first node.")
    ] = 2222,
    flake: Annotated[
        str | None,
        typer.Option(
            "--xnodectl-flake", metavar="FLAKE", help="Flake reference of xnodectl itself."
        ),
    ] = None,
) -> None:
    """Create an operator workspace (flake.nix, inventory.toml, apps/) with optional first app.

    The first node defaults to 'local', the VM that `xnodectl vm up` starts on 127.0.0.1:2222.
    """
    from xnodectl import inventory, workspace
    from xnodectl.app_request import parse_request, render_request

    apps = [render_request(parse_request(words, None))] if words else []
    ws = workspace.init(
        directory,
        xnodectl_flake=flake or workspace.default_flake(),
        node=inventory.Node(host=host, port=port),
        node_name=node,
        apps=apps,
    )
    output.info(
        f"created workspace with node '{node}'"
        + (f" running {', '.join(a.instance for a in apps)}" if apps else "")
    )
    _owner_key(ws)
    output.result(str(ws.root))


def _owner_key(ws: "Workspace") -> None:
    """Every workspace signs its closures with its owner's Nix key (secrets/nix-store-key); a
    machine without nix or git gets it on the first deploy that can make it."""
    from xnodectl import storekey
    from xnodectl.errors import XnodeError

    try:
        key = storekey.ensure(ws)
    except XnodeError as exc:
        output.info(f"no owner store key yet: {exc.one_line().removeprefix('error: ')}")
        return
    output.info(f"owner store key {key.name}: {key.secret_file.relative_to(ws.root)} (secret)")
