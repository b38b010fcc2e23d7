"""deploy, plan, status, rollback, generations."""

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from xnodectl.cli import output

T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
Words = Annotated[
    list[str] | None,
    typer.Argument(
        help="Optional template=NAME key=value ...: add/update that app on the selected nodes.",
        show_default=False,
    ),
]
NodeOpt = Annotated[list[str] | None, typer.Option("--node", "-n", help="Node name (repeatable).")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", "-t", help="Nodes with this tag.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every node in the inventory.")]
WsOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="Workspace directory (default: find upwards)."),
]


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy_cmd)
    app.command("plan")(plan_cmd)
    app.command("status")(status_cmd)
    app.command("rollback")(rollback_cmd)
    app.command("generations")(generations_cmd)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; Ctrl-C cancels it; the fleet code settles every node first."""
    import asyncio
    import signal

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, task.cancel)
        try:
            return await make()
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    return asyncio.run(main())


def _ws(workspace: Path | None) -> Any:
    from xnodectl import workspace as wsmod

    return wsmod.find(workspace)


def _selection(node: list[str] | None, tag: list[str] | None, all_nodes: bool) -> Any:
    from xnodectl.deploy.service import Selection

    return Selection(tuple(node or ()), tuple(tag or ()), all_nodes)


def deploy_cmd(
    words: Words = None,
    node: NodeOpt = None,
    tag: TagOpt = None,
    all_nodes: AllOpt = False,
    plan: Annotated[
        bool, typer.Option("--plan", help="Show what would change; change nothing.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON event per line on stdout, then a report.")
    ] = False,
    max_parallel: Annotated[
        int | None,
        typer.Option(
            "--max-parallel",
            min=1,
            help="Nodes deployed at once (default: inventory settings, 10).",
        ),
    ] = None,
    canary: Annotated[
        int,
        typer.Option("--canary", min=0, help="Deploy this many nodes first; stop if any fails."),
    ] = 0,
    max_failures: Annotated[
        int | None,
        typer.Option(
            "--max-failures", min=0, help="Stop starting nodes after more than this many failed."
        ),
    ] = None,
    confirm_timeout: Annotated[
        int | None,
        typer.Option(
            "--confirm-timeout",
            min=1,
            help="Seconds the node waits for confirmation before rolling back (default 30).",
        ),
    ] = None,
    activation_timeout: Annotated[
        float, typer.Option("--activation-timeout", min=1, help="Seconds an activation may run.")
    ] = 300.0,
    substitute: Annotated[
        bool,
        typer.Option(
            "--substitute-on-destination",
            help="Let nodes fetch paths from their own binary caches.",
        ),
    ] = False,
    revert_wave: Annotated[
        bool,
        typer.Option(
            "--revert-wave-on-failure",
            help="If a node of a wave fails, roll back the wave's other nodes too.",
        ),
    ] = False,
    engine: Annotated[
        str, typer.Option("--engine", help="native (default) or nixops4.")
    ] = "native",
    app_name: Annotated[
        str | None,
        typer.Option("--name", help="App name for template words (default: the template name)."),
    ] = None,
    workspace: WsOpt = None,
) -> None:
    """Deploy the inventory (or template=NAME k=v ... onto the selected nodes) atomically.

    Exit codes: 0 all nodes fine, 2 bad input, 3 some nodes failed, 4 all failed, 5 tool
    missing, 130 interrupted (each node left on its old or new generation, as reported).
    """
    from xnodectl.deploy import fleet, service
    from xnodectl.errors import UsageError

    if engine not in ("native", "nixops4"):
        raise UsageError(f"unknown engine '{engine}'", hint="use --engine native or nixops4")
    ws = _ws(workspace)
    settings_parallel = max_parallel or ws.load().settings.max_parallel
    req = service.Request(
        selection=_selection(node, tag, all_nodes),
        words=tuple(words or ()),
        app_name=app_name,
        fleet=fleet.FleetOptions(settings_parallel, canary, max_failures, revert_wave),
        confirm_timeout=confirm_timeout,
        activation_timeout=activation_timeout,
        substitute=substitute,
    )
    if plan:
        _show_plan(ws, req, as_json)
        return
    if engine == "nixops4":
        from xnodectl.deploy import nixops4

        _run(lambda: nixops4.apply(ws, req, output.info))
        return
    _deploy(ws, req, as_json)


def _deploy(ws: Any, req: Any, as_json: bool) -> None:
    import json
    import sys

    from xnodectl.deploy import events, service

    sink = events.JsonSink() if as_json else events.ConsoleSink()
    try:
        report = _run(lambda: service.deploy(ws, req, sink))
    finally:
        sink.close()  # every event is out before the report
    if as_json:
        sys.stdout.write(json.dumps(report.to_json()) + "\n")
    else:
        rows = [
            [
                n.node, n.outcome.value, n.state.value, _generations(n),
                events.human_bytes(n.bytes_copied), f"{n.seconds:.1f}s",
                n.rollback_reason or n.error or "",
            ]
            for n in report.nodes
        ]  # fmt: skip
        output.result(
            output.table(rows, ["NODE", "OUTCOME", "ON", "GENERATION", "BYTES", "TIME", "DETAIL"])
        )
    error = service.exit_error(report)
    if error is not None:
        raise error


def _generations(n: Any) -> str:
    before = "-" if n.generation_before is None else str(n.generation_before)
    return f"{before} -> {n.generation_after}" if n.generation_after is not None else before


def plan_cmd(
    words: Words = None,
    node: NodeOpt = None,
    tag: TagOpt = None,
    all_nodes: AllOpt = False,
    as_json: JsonOpt = False,
    app_name: Annotated[
        str | None, typer.Option("--name", help="App name for template words.")
    ] = None,
    workspace: WsOpt = None,
) -> None:
    """Show what a deploy would change per node (same as deploy --plan); changes nothing."""
    from xnodectl.deploy import service

    req = service.Request(
        selection=_selection(node, tag, all_nodes), words=tuple(words or ()), app_name=app_name
    )
    _show_plan(_ws(workspace), req, as_json)


def _show_plan(ws: Any, req: Any, as_json: bool) -> None:
    from xnodectl.deploy import plan as planmod

    plans = _run(lambda: planmod.plan(ws, req))
    if as_json:
        output.as_json({"nodes": [p.to_json() for p in plans]})
        return
    output.result("\n\n".join(_plan_text(p) for p in plans))


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    return f"{n / 1_048_576:.1f} MiB" if n >= 1_048_576 else f"{n} B"


def _plan_text(p: Any) -> str:
    if p.changes:
        headline = "will change"
    elif p.current_system is None:
        headline = "workspace up to date; what the node runs now is unknown (see below)"
    else:
        headline = "no changes"
    lines = [f"node {p.node} ({p.address}): {headline}"]
    words = {
        "added": "new module",
        "changed": "module changes",
        "removed": "module removed",
        "unchanged": "module unchanged",
    }
    for a in p.apps:
        lines.append(
            f"  app {a.app} ({a.template}): {words.get(a.change, a.change)} "
            f"in apps/{p.node}/{a.app}.nix"
        )
        lines.extend(f"    {line}" for line in a.diff.splitlines()[:40])
    lines.append("  ports opened: " + (", ".join(p.ports_opened) or "none"))
    for s in p.secrets:
        where = s["source"] if s["present"] else " or ".join(s["looked_in"])
        lines.append(
            f"  secret {s['app']}/{s['param']}: "
            + ("present" if s["present"] else "MISSING")
            + f" ({where})"
        )
    lines.append("  health probes: " + (", ".join(p.probes) or "none"))
    r = p.resources
    lines.append(
        f"  resources: >= {r['min_cpus']} CPU, {r['min_ram_mb']} MB RAM, {r['min_disk_gb']} GB disk"
    )
    lines.append(
        f"  current: {p.current_system or 'unknown'} (generation "
        f"{p.current_generation if p.current_generation is not None else 'unknown'})"
    )
    lines.append(f"  desired: {p.desired_system or 'unknown'}")
    if p.packages is not None:
        for kind in ("added", "removed", "upgraded"):
            if p.packages[kind]:
                lines.append(f"  {kind}: " + ", ".join(p.packages[kind][:30]))
        lines.append(
            f"  to copy: {p.paths_to_copy} paths, {_size(p.bytes_to_copy)} "
            f"(closure {_size(p.closure_bytes)}); reboot needed: "
            f"{'yes' if p.reboot_needed else 'no'}"
        )
    for what, why in p.unknown.items():
        lines.append(f"  unknown {what}: {why}")
    return "\n".join(lines)


def status_cmd(
    node: NodeOpt = None,
    tag: TagOpt = None,
    all_nodes: AllOpt = False,
    as_json: JsonOpt = False,
    workspace: WsOpt = None,
) -> None:
    """Per node: current vs desired system, drift, apps, health."""
    from xnodectl.deploy import ops

    result = _run(lambda: ops.status(_ws(workspace), _selection(node, tag, all_nodes)))
    if as_json:
        output.as_json([s.to_json() for s in result])
        return
    rows = [
        [
            s.node,
            "yes" if s.reachable else "no",
            str(s.current_generation or "-"),
            {True: "DRIFT", False: "in sync", None: "unknown"}[s.drift],
            {True: "healthy", False: "UNHEALTHY", None: "-"}[s.healthy],
            ", ".join(s.apps) or "-",
        ]
        for s in result
    ]
    output.result(output.table(rows, ["NODE", "REACHABLE", "GEN", "DRIFT", "HEALTH", "APPS"]))
    for s in result:
        for what, why in s.unknown.items():
            output.info(f"{s.node}: unknown {what}: {why}")


def rollback_cmd(
    node: Annotated[str, typer.Option("--node", "-n", help="Node to roll back.")],
    to: Annotated[
        int | None, typer.Option("--to", min=1, help="Generation (default: previous).")
    ] = None,
    as_json: JsonOpt = False,
    workspace: WsOpt = None,
) -> None:
    """Switch a node back to an earlier generation (default: the previous one)."""
    from xnodectl.deploy import ops

    result = _run(lambda: ops.rollback(_ws(workspace), node, to))
    if as_json:
        output.as_json(result)
        return
    output.result(f"{node}: now on generation {result.get('generation', '?')}")


def generations_cmd(
    node: Annotated[str, typer.Option("--node", "-n", help="Node to list.")],
    as_json: JsonOpt = False,
    workspace: WsOpt = None,
) -> None:
    """List a node's system generations."""
    from xnodectl.deploy import ops

    gens = _run(lambda: ops.generations(_ws(workspace), node))
    if as_json:
        output.as_json(gens)
        return
    rows = [
        [
            str(g.get("number")),
            "*" if g.get("current") else "",
            str(g.get("date", "")),
            str(g.get("path", "")),
        ]
        for g in gens
    ]
    output.result(output.table(rows, ["GEN", "CURRENT", "DATE", "SYSTEM"]))
