"""status, generations, rollback, node unlock: what nodes run, and moving them back."""

from typing import Annotated

import typer

from xnodectl.cli import output
from xnodectl.cli.deploy import AllOpt, JsonOpt, NodeOpt, TagOpt, WsOpt, _run, _selection, _ws


def status_cmd(
    node: NodeOpt = None,
    tag: TagOpt = None,
    all_nodes: AllOpt = False,
    as_json: JsonOpt = False,
    workspace: WsOpt = None,
) -> None:
    """Per node: current vs desired system, drift, apps, health. Exit 6 if a node was
    unreachable."""
    from dataclasses import asdict

    from xnodectl.deploy import status

    report = _run(
        lambda: status.status(_ws(workspace), _selection(node, tag, all_nodes), output.info)
    )
    if as_json:
        output.as_json([asdict(s) for s in report.nodes])
    else:
        rows = [
            [
                s.node,
                "yes" if s.reachable else "no",
                str(s.current_generation or "-"),
                {True: "DRIFT", False: "in sync", None: "unknown"}[s.drift],
                {True: "healthy", False: "UNHEALTHY", None: "-"}[s.healthy],
                ", ".join(s.apps) or "-",
            ]
            for s in report.nodes
        ]
        output.result(output.table(rows, ["NODE", "REACHABLE", "GEN", "DRIFT", "HEALTH", "APPS"]))
        for s in report.nodes:
            for what, why in s.unknown.items():
                output.info(f"{s.node}: unknown {what}: {why}")
    error = report.exit_error()
    if error is not None:
        raise error


def rollback_cmd(
    node: Annotated[str, typer.Option("--node", "-n", help="Node to roll back.")],
    to: Annotated[
        int | None, typer.Option("--to", min=1, help="Generation (default: previous).")
    ] = None,
    as_json: JsonOpt = False,
    workspace: WsOpt = None,
) -> None:
    """Switch a node back to an earlier generation (default: the previous one)."""
    from xnodectl.deploy import rollback

    generation = _run(lambda: rollback.to_generation(_ws(workspace), node, to))
    if as_json:
        output.as_json({"node": node, "generation": generation})
        return
    output.result(f"{node}: now on generation {generation if generation is not None else '?'}")


def unlock_cmd(
    name: Annotated[str, typer.Argument(help="Node name.")], workspace: WsOpt = None
) -> None:
    """Release a node's deploy lock left by an operator that is gone (shows who held it);
    refused while a deploy is still settling on the node."""
    from xnodectl.deploy import unlock

    held = _run(lambda: unlock.unlock(_ws(workspace), name))
    if held is None:
        output.info(f"{name}: the deploy lock was not held")
    else:
        output.info(f"{name}: released the deploy lock of {held.holder} (held {held.age} s)")
    output.result(name)


def generations_cmd(
    node: Annotated[str, typer.Option("--node", "-n", help="Node to list.")],
    as_json: JsonOpt = False,
    workspace: WsOpt = None,
) -> None:
    """List a node's system generations."""
    from dataclasses import asdict

    from xnodectl.deploy import status

    gens = _run(lambda: status.generations(_ws(workspace), node))
    if as_json:
        output.as_json([asdict(g) for g in gens])
        return
    rows = [[str(g.number), "*" if g.current else "", g.date or "", g.path] for g in gens]
    output.result(output.table(rows, ["GEN", "CURRENT", "DATE", "SYSTEM"]))
