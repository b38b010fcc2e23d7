"""deploy, plan, status, rollback, generations."""

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from xnodectl.cli import output
from xnodectl.cli.options import WsOpt
from xnodectl.deploy.engine import Engine

if TYPE_CHECKING:
    from xnodectl.deploy import events, prepare
    from xnodectl.deploy.fanout import Tree
    from xnodectl.deploy.plan import NodePlan
    from xnodectl.deploy.prepare import Request, Selection
    from xnodectl.workspace import Workspace

T = TypeVar("T")

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


def register(app: typer.Typer) -> None:
    from xnodectl.cli import plan, status

    app.command("deploy")(deploy_cmd)
    app.command("plan")(plan.plan_cmd)
    app.command("status")(status.status_cmd)
    app.command("rollback")(status.rollback_cmd)
    app.command("generations")(status.generations_cmd)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; Ctrl-C, SIGTERM and SIGHUP (a closed terminal, a stopped CI job) cancel
    it alike: the fleet code settles every node first and the report is still written."""
    import asyncio
    import signal

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in stops:
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await make()
        finally:
            for sig in stops:
                loop.remove_signal_handler(sig)

    from xnodectl import childwatch

    childwatch.install()
    return asyncio.run(main())


def _ws(workspace: Path | None) -> "Workspace":
    from xnodectl import workspace as wsmod

    return wsmod.find(workspace)


def _selection(node: list[str] | None, tag: list[str] | None, all_nodes: bool) -> "Selection":
    from xnodectl.deploy.prepare import Selection

    return Selection(tuple(node or ()), tuple(tag or ()), all_nodes)


def _interactive() -> bool:
    """A terminal to ask on (stdin) and to show the question (stderr)."""
    import sys

    return sys.stdin.isatty() and sys.stderr.isatty()


def deploy_cmd(
    words: Words = None,
    node: NodeOpt = None,
    tag: TagOpt = None,
    all_nodes: AllOpt = False,
    plan: Annotated[
        bool, typer.Option("--plan", help="Show what would change; change nothing.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before deploying every node.")
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
        float | None,
        typer.Option(
            "--activation-timeout", min=1, help="Seconds an activation may run (default 300)."
        ),
    ] = None,
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
    fan_out: Annotated[
        str | None,
        typer.Option(
            "--fan-out",
            help="tree[:K]: copy the closure to one node; every node that has it serves K more "
            "(owner-signed paths only). The operator sends each byte about once.",
            show_default=False,
        ),
    ] = None,
    via: Annotated[
        str | None,
        typer.Option(
            "--via",
            help="Push the closure once to this Nix store URL (s3://, https://, ssh-ng://, "
            "file://); nodes substitute from it (their xnode.trust.substituters).",
            show_default=False,
        ),
    ] = None,
    engine: Annotated[
        Engine, typer.Option("--engine", help="Who applies the deploy.")
    ] = Engine.NATIVE,
    app_name: Annotated[
        str | None,
        typer.Option("--name", help="App name for template words (default: the template name)."),
    ] = None,
    workspace: WsOpt = None,
) -> None:
    """Deploy the inventory (or template=NAME k=v ... onto the selected nodes) atomically.

    On a terminal, a deploy without --node/--tag/--all shows what it would do to every node and
    asks first (--yes skips the question); without a terminal it needs a selection.

    Exit codes: 0 all nodes fine, 2 bad input, 3 some nodes failed, 4 all failed, 5 tool
    missing, 6 every failed node was unreachable, 130 interrupted (each node left on its old or
    new generation, as reported).
    """
    from xnodectl.deploy import engine as engines
    from xnodectl.deploy import prepare

    given = {
        "--json": as_json, "--max-parallel": max_parallel is not None, "--canary": canary > 0,
        "--max-failures": max_failures is not None, "--confirm-timeout": confirm_timeout,
        "--activation-timeout": activation_timeout, "--substitute-on-destination": substitute,
        "--revert-wave-on-failure": revert_wave, "--fan-out": fan_out is not None,
        "--via": via is not None,
    }  # fmt: skip
    engines.refuse_unsupported(engine, [name for name, on in given.items() if on])
    ws = _ws(workspace)
    req = prepare.Request(
        selection=_selection(node, tag, all_nodes),
        words=tuple(words or ()),
        app_name=app_name,
        fleet=prepare.FleetOptions(max_parallel, canary, max_failures, revert_wave),
        confirm_timeout=confirm_timeout,
        activation_timeout=activation_timeout,
        substitute=substitute,
        fan_out=_tree(fan_out) if fan_out is not None else None,
        via=_via(via) if via is not None else None,
    )
    if plan:
        from xnodectl.cli.plan import show_plan

        show_plan(ws, req, as_json)
        return
    ask = req.selection.empty and not req.words and not yes
    if ask and not _interactive():
        prepare.require_selection(req)
    # Without a question to ask, the first nodes' SSH handshakes start as soon as they are known.
    early = not ask and engine is Engine.NATIVE
    prepared = prepare.prepare(ws, req, connect_early=early)
    if ask:
        _ask(ws, prepared)
    if engine is Engine.NIXOPS4:
        from xnodectl.deploy import nixops4

        _run(lambda: nixops4.apply(ws, prepared, output.info))
        return
    _deploy(ws, prepared, req, as_json)


def _tree(text: str) -> "Tree":
    from xnodectl.deploy.fanout import Tree

    return Tree.parse(text)


def _via(url: str) -> str:
    from xnodectl.deploy.cache import check_url

    return check_url(url)


def _ask(ws: "Workspace", prepared: "prepare.Prepared") -> None:
    """Show what a deploy of every node would change (offline: no build, no node) and ask."""
    from xnodectl.deploy import plan as planmod
    from xnodectl.errors import Cancelled

    for name in prepared.names:
        output.info(_summary(planmod.static(ws, prepared, name)))
    if not typer.confirm(f"Deploy to all {len(prepared.names)} nodes?", err=True):
        raise Cancelled("deploy cancelled; nothing was changed")


def _summary(p: "NodePlan") -> str:
    changed = [f"{a.app} {a.change}" for a in p.apps if a.change != "unchanged"]
    return f"  {p.node} ({p.address}): " + (", ".join(changed) or "apps unchanged")


def _deploy(ws: "Workspace", prepared: "prepare.Prepared", req: "Request", as_json: bool) -> None:
    import json
    import sys

    from xnodectl.deploy import events, start

    sink = events.JsonSink() if as_json else events.ConsoleSink()
    try:
        report = _run(lambda: start.deploy(ws, prepared, req, sink))
    finally:
        sink.close()  # every event is out before the report
    if as_json:
        try:
            sys.stdout.write(json.dumps(report.to_json()) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # nobody reads the stream any more: the exit code still tells
            pass
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
        if report.operator_bytes is not None:
            peers = sum(n.bytes_from_peers for n in report.nodes)
            caches = sum(n.bytes_from_caches for n in report.nodes)
            output.result(
                f"operator sent {events.human_bytes(report.operator_bytes)}; nodes got "
                f"{events.human_bytes(peers)} from peers, {events.human_bytes(caches)} from caches"
            )
    from xnodectl.deploy import run as runmod

    error = runmod.exit_error(report)
    if error is not None:
        raise error


def _generations(n: "events.NodeReport") -> str:
    before = "-" if n.generation_before is None else str(n.generation_before)
    return f"{before} -> {n.generation_after}" if n.generation_after is not None else before
