"""Deploy benchmark against test Xnodes (tests/xnodes.py). Prints one JSON object as its LAST line.

The closure is a stand-in (tests/standin.py: ~300 leaf paths, ~50 MB), NOT NixOS; every figure
says so. Fresh nodes for every measurement, so every copy moves the whole closure:
  raw_seconds            plain `nix copy` + ssh `nix-env --set` + `switch-to-configuration switch`
  xnodectl_seconds       `xnodectl deploy` of the same change (CLI start, eval, preflight, lock,
                         copy, two-phase activation, confirmation over a new connection)
  overhead_seconds       xnodectl - raw (target <= 0.5)
  noop_seconds           redeploy of the unchanged system, median of --noop-runs runs (each in
                         noop_runs; target <= 0.5, noop_bytes_copied 0 summed over all of them)
  fleet_seconds          one `xnodectl deploy --all` to 8 fresh nodes
  parallel_raw_seconds   the raw copy + switch on 8 fresh nodes at once (target ratio <= 1.10)
  serial_raw_seconds     the raw loop one node after another

Fleet and parallel raw share two busy cores with the nodes, so one pair of runs swings by 20 %:
they are measured in `--rounds` side-by-side pairs (alternating which goes first, fresh nodes each
time). `fleet_vs_parallel_raw` is the median of the pairs' ratios; `fleet_seconds` and
`parallel_raw_seconds` are the medians of each; every pair is in `fleet_rounds`.

The `xnodectl` run is the one installed next to this Python (the venv's), else the one on PATH;
its bytecode is compiled first, as `pip install` does (an editable install under
PYTHONDONTWRITEBYTECODE, as on the project's test machine, would otherwise recompile the package on
every start).

The closure's leaves are this run's own (a random salt): each workspace has its own owner key,
so every deploy signs the whole closure as a first deploy does, and the signatures of earlier runs
do not pile up on shared paths (after ~190 runs on one machine, `nix path-info` of the closure was
6.4 MB of signatures and every copy carried them).

The nodes' stores live in RAM (/dev/shm when it has room, else --tmp): 58 nodes x 50 MB written
to this VM's disk made the kernel's writeback, not the deploy, decide which run was slower.

Run from the repository root: python bench/deploy.py [--nodes 8] [--size 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import secrets
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import positive_int, ram_dir
from tests.standin import StandinFlake
from tests.xnodes import NIX_CONF, Fleet, Node
from xnodectl import inventory as inv
from xnodectl import process, storekey
from xnodectl.workspace import GITIGNORE, Workspace


async def raw(node: Node, system: str) -> None:
    """What a careful operator would type: copy, set the profile, switch."""
    await process.arun(["nix", "copy", "--to", node.store_uri, system], env=node.nix_env())
    cmd = (
        f"nix-env -p /nix/var/nix/profiles/system --set {shlex.quote(system)} && "
        f"{shlex.quote(system)}/bin/switch-to-configuration switch"
    )
    await process.arun(node.ssh_argv(cmd))


def workspace(base: Path, name: str, nodes: list[Node], size: int, salt: str) -> Path:
    """A stand-in workspace as `xnodectl init` leaves it: git, secrets/ ignored, an owner store
    key (every deploy signs the closure it copies with it). `salt`: the run's own closure (see
    the module's doc)."""
    flake = StandinFlake(base / name, [n.name for n in nodes], size=size, leaf_salt=salt).write()
    (flake.directory / ".gitignore").write_text(GITIGNORE)
    inventory = inv.Inventory(settings=inv.Settings(ssh_key=str(nodes[0].key)))
    for n in nodes:
        inventory.nodes[n.name] = inv.Node(host=n.host, port=n.port, host_key=n.host_key)
    inv.save(inventory, flake.directory / inv.FILENAME)
    storekey.ensure(Workspace(flake.directory))
    return flake.directory


def xnodectl_path() -> str:
    beside = Path(sys.executable).parent / "xnodectl"
    return str(beside) if beside.exists() else (shutil.which("xnodectl") or "xnodectl")


def xnodectl(ws: Path) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    result = process.run(
        [xnodectl_path(), "deploy", "--all", "--json", "--workspace", str(ws)],
        check=False,
        timeout=600,
    )
    seconds = time.monotonic() - started
    report = json.loads(result.stdout.splitlines()[-1])
    if not report.get("ok"):
        raise SystemExit(f"xnodectl deploy failed: {json.dumps(report)[:2000]} {result.stderr}")
    return seconds, report


def timed(coro: object) -> float:
    started = time.monotonic()
    asyncio.run(coro)  # type: ignore[arg-type]  # a coroutine object
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=positive_int, default=8)
    parser.add_argument("--size", type=positive_int, default=300)
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--noop-runs", type=positive_int, default=5)
    parser.add_argument("--tmp", type=Path, default=None, help="where the nodes' stores go")
    args = parser.parse_args()
    os.environ["NIX_CONFIG"] = NIX_CONF
    compileall.compile_dir(Path(__file__).resolve().parent.parent / "xnodectl", quiet=1)
    base = Path(tempfile.mkdtemp(prefix="xnbench-", dir=args.tmp or ram_dir()))
    fleet = Fleet(base / "nodes")
    try:
        n, rounds = args.nodes, args.rounds
        nodes = [fleet.new() for _ in range(2 + n + 2 * n * rounds)]
        one_raw, one_x, ser_raw = nodes[0], nodes[1], nodes[2 : 2 + n]
        pairs = [
            (nodes[2 + n + 2 * n * r : 2 + 2 * n + 2 * n * r], nodes[2 + 2 * n + 2 * n * r :][:n])
            for r in range(rounds)
        ]
        salt = secrets.token_hex(4)
        ws_one = workspace(base, "ws-one", [one_x], args.size, salt)
        ws_fleets = [
            workspace(base, f"ws-fleet-{r}", p[0], args.size, salt) for r, p in enumerate(pairs)
        ]
        t = time.monotonic()
        system = StandinFlake(ws_one, [one_x.name], size=args.size, leaf_salt=salt).build(
            one_x.name
        )
        build_s = time.monotonic() - t
        closure = json.loads(
            process.run(["nix", "path-info", "--json", "--recursive", system]).stdout
        )
        size_bytes = sum(p["narSize"] for p in closure)

        raw_s = timed(raw(one_raw, system))
        x_s, _ = xnodectl(ws_one)
        noops = [xnodectl(ws_one) for _ in range(args.noop_runs)]
        noop_runs = [seconds for seconds, _ in noops]
        noop_s = statistics.median(noop_runs)
        noop_bytes = sum(int(node["bytes_copied"]) for _, noop in noops for node in noop["nodes"])

        async def all_raw(group: list[Node]) -> None:
            await asyncio.gather(*(raw(node, system) for node in group))

        measured: list[tuple[float, float]] = []
        for r, (ws_fleet, (_, par_raw)) in enumerate(zip(ws_fleets, pairs, strict=True)):
            if r % 2 == 0:
                fleet_s, _ = xnodectl(ws_fleet)
                par_s = timed(all_raw(par_raw))
            else:
                par_s = timed(all_raw(par_raw))
                fleet_s, _ = xnodectl(ws_fleet)
            measured.append((fleet_s, par_s))
        fleet_s = statistics.median(f for f, _ in measured)
        par_s = statistics.median(p for _, p in measured)
        started = time.monotonic()
        for node in ser_raw:
            asyncio.run(raw(node, system))
        ser_s = time.monotonic() - started
    finally:
        fleet.destroy()
        shutil.rmtree(base, ignore_errors=True)  # every node's store: gigabytes per run
    result = {
        "closure": "stand-in (tests/standin.py), not NixOS", "closure_paths": len(closure),
        "closure_bytes": size_bytes, "build_seconds": round(build_s, 3),
        "raw_seconds": round(raw_s, 3), "xnodectl_seconds": round(x_s, 3),
        "overhead_seconds": round(x_s - raw_s, 3), "noop_seconds": round(noop_s, 3),
        "noop_runs": [round(t, 3) for t in noop_runs],
        "noop_bytes_copied": noop_bytes, "fleet_nodes": n, "fleet_seconds": round(fleet_s, 3),
        "parallel_raw_seconds": round(par_s, 3), "serial_raw_seconds": round(ser_s, 3),
        "fleet_vs_parallel_raw": round(statistics.median(f / p for f, p in measured), 3),
        "fleet_rounds": [[round(f, 3), round(p, 3), round(f / p, 3)] for f, p in measured],
        "fleet_vs_serial_raw": round(fleet_s / ser_s, 3),
        "targets": {"overhead_seconds": 0.5, "noop_seconds": 0.5, "fleet_vs_parallel_raw": 1.10},
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
