"""`xnodectl plan` (and `deploy --plan`): what a deploy would change, as text or JSON."""

from typing import TYPE_CHECKING, Annotated

import typer

from xnodectl.cli import output
from xnodectl.cli.deploy import (
    AllOpt,
    NodeOpt,
    TagOpt,
    Words,
    _run,
    _selection,
    _ws,
)
from xnodectl.cli.options import JsonOpt, WsOpt
from xnodectl.units import human_bytes

if TYPE_CHECKING:
    from xnodectl.deploy.plan import NodePlan
    from xnodectl.deploy.prepare import Request
    from xnodectl.deploy.units import UnitChanges
    from xnodectl.workspace import Workspace

DIFF_LINES = 40  # lines of each module diff the text plan shows


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
    from xnodectl.deploy import prepare

    req = prepare.Request(
        selection=_selection(node, tag, all_nodes), words=tuple(words or ()), app_name=app_name
    )
    show_plan(_ws(workspace), req, as_json)


def show_plan(ws: "Workspace", req: "Request", as_json: bool) -> None:
    from xnodectl.deploy import plan as planmod

    plans = _run(lambda: planmod.plan(ws, req))
    if as_json:
        output.as_json({"nodes": [p.to_json() for p in plans]})
        return
    output.result("\n\n".join(_plan_text(p) for p in plans))


def _diff_lines(diff: str) -> list[str]:
    """A module diff, cut at DIFF_LINES with a line saying how much was left out."""
    lines = diff.splitlines()
    shown = [f"    {line}" for line in lines[:DIFF_LINES]]
    if len(lines) > DIFF_LINES:
        shown.append(
            f"    [... {len(lines) - DIFF_LINES} more lines of this diff cut; "
            "the whole diff: xnodectl plan --json]"
        )
    return shown


def _plan_text(p: "NodePlan") -> str:
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
        lines.extend(_diff_lines(a.diff))
    lines.append("  ports opened: " + (", ".join(p.ports_opened) or "none"))
    for s in p.secrets:
        where = s.source if s.present else " or ".join(s.looked_in)
        lines.append(
            f"  secret {s.app}/{s.param}: "
            + ("present" if s.present else "MISSING")
            + f" ({where})"
        )
    lines.append("  health probes: " + (", ".join(p.probes) or "none"))
    r = p.resources
    lines.append(
        f"  resources: >= {r.min_cpus} CPU, {r.min_ram_mb} MB RAM, {r.min_disk_gb} GB disk"
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
            f"  to copy: {p.paths_to_copy} paths, {human_bytes(p.bytes_to_copy)} "
            f"(closure {human_bytes(p.closure_bytes)}); reboot needed: "
            f"{'yes' if p.reboot_needed else 'no'}"
        )
    if p.units is not None:
        lines.extend(_units_lines(p.units))
    lines.append(f"  copy from: {p.copy_from}")
    for what, why in p.unknown.items():
        lines.append(f"  unknown {what}: {why}")
    return "\n".join(lines)


def _units_lines(u: "UnitChanges") -> list[str]:
    """What the switch would do to systemd units (a prediction: its basis and limits say how)."""
    later = set(u.stopped_then_started)
    restart = [f"{n}*" if n in later else n for n in u.restart]
    lines = [
        f"  units to {label}: " + (", ".join(names) or "none")
        for label, names in (
            ("restart", restart),
            ("reload", u.reload),
            ("start", u.start),
            ("stop", u.stop),
        )
    ]
    if later:
        lines.insert(1, "    (* stopped before the activation script, started after it)")
    if u.not_restarted:
        lines.append("  units changed, NOT restarted: " + ", ".join(u.not_restarted))
    lines.append(f"  units basis: {u.basis}; {u.limits}")
    return lines
