"""node add/remove/list/log: the inventory's nodes, and a node's own deploy audit log."""

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
    node.command("log")(node_log)
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


def node_log(
    name: Annotated[str, typer.Argument(help="Node name.")],
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="How many deploys, newest first.")
    ] = 20,
    as_json: JsonOpt = False,
    workspace: WsOpt = None,
) -> None:
    """The node's own deploy audit log: every deploy it ran (from any workspace or machine), its
    states, decision and reason (a rollback by the node's own timer too), and its log's end."""
    from dataclasses import asdict

    from xnodectl.cli.deploy import _run
    from xnodectl.deploy import history

    records = _run(lambda: history.node_log(_ws(workspace), name, limit))
    if as_json:
        output.as_json([asdict(r) for r in records])
        return
    if not records:
        output.info(f"{name}: no deploys recorded on the node")
        return
    rows = [
        [
            r.id,
            r.started or "-",
            r.state or "-",
            f"{r.previous_generation or '-'} -> {r.generation or '-'}",
            r.holder or "-",
            (r.decision or "-") + (f": {r.reason}" if r.reason else ""),
        ]
        for r in records
    ]
    output.result(output.table(rows, ["DEPLOY", "STARTED", "STATE", "GEN", "HOLDER", "DECISION"]))
