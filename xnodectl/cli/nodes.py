"""node add/remove/list: the inventory's nodes."""

from pathlib import Path
from typing import Annotated, Any

import typer

from xnodectl.cli import output
from xnodectl.cli.options import JsonOpt, WsOpt


def register(app: typer.Typer) -> None:
    from xnodectl.cli import new_app, status

    node = new_app("Manage the inventory's nodes.")
    node.command("add")(node_add)
    node.command("remove")(node_remove)
    node.command("list")(node_list)
    node.command("unlock")(status.unlock_cmd)
    app.add_typer(node, name="node")


def _ws(workspace: Path | None) -> Any:
    from xnodectl import workspace as wsmod

    return wsmod.find(workspace)


def node_add(
    name: Annotated[str, typer.Argument(help="Node name (lowercase, digits, '-').")],
    host: Annotated[str, typer.Argument(help="Address (IP or DNS name).")],
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="SSH port.")] = 22,
    user: Annotated[str, typer.Option("--user", help="SSH user.")] = "root",
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", help="Give the node this tag (repeatable; replaces its tags)."),
    ] = None,
    host_key: Annotated[
        str | None, typer.Option("--host-key", help="Pinned host key 'ssh-ed25519 AAAA...'.")
    ] = None,
    scan: Annotated[
        bool,
        typer.Option("--scan", help="Fetch the host key now (check the printed fingerprint!)."),
    ] = False,
    authorized_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--authorized-key",
            help="Public key file (.pub) that may log in as root; kept in every deployed system "
            "(repeatable).",
        ),
    ] = None,
    workspace: WsOpt = None,
) -> None:
    """Add a node (or update its address/key, keeping its apps)."""
    from xnodectl import nodes

    request = nodes.NodeAdd(
        name=name,
        host=host,
        port=port,
        user=user,
        tags=tuple(tag or ()),
        host_key=host_key,
        scan=scan,
        authorized_keys=tuple(authorized_key or ()),
    )
    added = nodes.add(_ws(workspace), request, output.info)
    output.info(("updated" if added.updated else "added") + f" node '{name}'")
    output.result(name)


def node_remove(
    name: Annotated[str, typer.Argument(help="Node name.")], workspace: WsOpt = None
) -> None:
    """Remove a node from the inventory and its apps/<node>/; the machine is untouched."""
    from xnodectl import nodes

    nodes.remove(_ws(workspace), name)
    output.info(f"removed node '{name}'")


def node_list(as_json: JsonOpt = False, workspace: WsOpt = None) -> None:
    """List the inventory's nodes."""
    inventory = _ws(workspace).load()
    if as_json:
        output.as_json({n: node.model_dump() for n, node in inventory.nodes.items()})
        return
    rows = [
        [
            n,
            f"{node.user}@{node.host}:{node.port}",
            ",".join(node.tags) or "-",
            "pinned" if node.host_key else "NOT PINNED",
            ", ".join(a.instance for a in node.apps) or "-",
        ]
        for n, node in inventory.nodes.items()
    ]
    output.result(output.table(rows, ["NODE", "ADDRESS", "TAGS", "HOST KEY", "APPS"]))
