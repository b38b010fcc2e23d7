"""Fan-out benchmark against test Xnodes. Prints one JSON object as its LAST line.

The closure is a stand-in (tests/standin.py: ~300 leaf paths, ~50 MB), NOT NixOS; every figure
says so. Fresh nodes for every measurement. Every node's operator address is a counting TCP relay
(tests/countproxy.py), so `operator_bytes` is what the operator's ssh really sent on the wire
(closure, ssh framing, every command), not what the engine believes; peers reach each other on
their real ports.
  closure_bytes (D)            NAR size of the closure
  operator_bytes_<N>           bytes the operator sent, tree fan-out to N nodes (target <= 1.1 D)
  operator_bytes_plain_<N>     the same without fan-out (about N x D)
  fleet_seconds(_fanout)_<N>   one `xnodectl deploy --all` to N fresh nodes without (with) fan-out
  copy_seconds_fanout_<N>      the copy stage of N nodes with fan-out (tree:K)
  copy_seconds_plain_<N>       the copy stage with the operator copying to all N at once
  parallel_raw_seconds_<N>     plain `nix copy` to all N at once, nothing else
  model_*                      minutes for a 20 Mbit/s operator uplink and 1 Gbit/s node links,
                               from the MEASURED operator bytes (all nodes share this machine's
                               2 cores and loopback, so wall time cannot show the uplink saving)
  sign_seconds                 `nix store sign --recursive` with a key new to the closure (median)
  verify_seconds               `nix store verify --no-contents` of the closure against the owner
                               key minus the same walk with --no-trust (median of --rounds pairs)
  deploy_signed_seconds        `xnodectl deploy --node X` of the closure to one fresh node from a
                               workspace with a NEW owner key (every path signed during the deploy)
  deploy_resigned_seconds      the same closure to another fresh node, already signed by that key
                               (a redeploy elsewhere: nothing to sign)
  deploy_unsigned_seconds      the same closure to a fresh node from a workspace without a key
  deploy_sign_seconds          the signed deploy's one `nix store sign` (its own event says)
  deploy_sign_wait_seconds     how long that deploy's copy waited for it: what signing adds to
                               the critical path (median; _max_ the worst round)
  sign_deploy_overhead_seconds median of the rounds' (signed - unsigned) + the unsigned run's own
                               `git check-ignore` (it asks whether a key could be made; the
                               signed run does not): what signing adds to a single-node deploy
                               (target < 0.2); medians of --rounds rounds, order alternating

Run from the repository root: python bench/fanout.py [--nodes 8 16] [--size 300] [--degree 2]
  [--rounds 5] [--sign-only] (closure, signing and verification figures, no fleet runs)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import positive_int, ram_dir
from bench.deploy import xnodectl_path
from tests.fanout_rig import Rig, owner_key
from tests.standin import StandinFlake
from tests.xnodes import NIX_CONF, NIX_ENV, Fleet, Node
from xnodectl import inventory as inv
from xnodectl import nix, nixsign, process, storekey
from xnodectl.deploy import sources
from xnodectl.deploy.fanout import Tree
from xnodectl.remote import Session
from xnodectl.workspace import GITIGNORE, Workspace

UPLINK_BPS = 20e6  # operator uplink, bits per second
NODE_BPS = 1e9  # node links


def fresh(fleet: Fleet, n: int, public: str) -> list[Node]:
    nodes = [fleet.new() for _ in range(n)]
    for node in nodes:
        node.trust_store([public])
    return nodes


def drop(fleet: Fleet, nodes: list[Node]) -> None:
    for node in nodes:
        node.destroy()
        fleet.nodes.remove(node)


def distribute(
    fleet: Fleet, n: int, public: str, system: str, fan_out: Tree | None, *, counting: bool
) -> dict[str, Any]:
    nodes = fresh(fleet, n, public)
    rig = Rig.create(nodes, fleet.key.path, counting=counting)
    session = Session(identity=fleet.key.path)
    try:
        dist = rig.distribution(session, system, fan_out=fan_out)
        started = time.monotonic()
        results = asyncio.run(rig.copy_all(session, dist))
        seconds = time.monotonic() - started
        failed = {k: str(v) for k, v in results.items() if not isinstance(v, sources.Bytes)}
        if failed or not all(node.has_path(system) for node in nodes):
            raise SystemExit(f"bench: copies failed: {failed}")
        return {"seconds": round(seconds, 3), "operator_bytes": rig.operator_sent}
    finally:
        session.close()
        rig.close()
        drop(fleet, nodes)


async def _raw(nodes: list[Node], system: str) -> None:
    await asyncio.gather(
        *(
            process.arun(["nix", "copy", "--to", n.store_uri, system], env=n.nix_env())
            for n in nodes
        )
    )


def parallel_raw(fleet: Fleet, n: int, public: str, system: str) -> float:
    nodes = fresh(fleet, n, public)
    try:
        started = time.monotonic()
        asyncio.run(_raw(nodes, system))
        return round(time.monotonic() - started, 3)
    finally:
        drop(fleet, nodes)


def fleet_seconds(
    base: Path, fleet: Fleet, n: int, size: int, salt: str, fan_out: str | None
) -> float:
    """One `xnodectl deploy --all` (build, preflight, copy, activation, confirmation) to n fresh
    nodes of a stand-in workspace that has an owner key, with or without --fan-out."""
    nodes = [fleet.new() for _ in range(n)]
    name = f"ws-{'fanout' if fan_out else 'plain'}-{n}-{secrets.token_hex(2)}"
    flake = StandinFlake(base / name, [x.name for x in nodes], size=size, leaf_salt=salt).write()
    (flake.directory / ".gitignore").write_text(GITIGNORE)
    inventory = inv.Inventory(settings=inv.Settings(ssh_key=str(fleet.key.path)))
    for x in nodes:
        inventory.nodes[x.name] = inv.Node(host=x.host, port=x.port, host_key=x.host_key)
    inv.save(inventory, flake.directory / inv.FILENAME)
    public = storekey.ensure(Workspace(flake.directory)).public
    for x in nodes:
        x.trust_store([public])
    flake.build(nodes[0].name)  # the build is not what is compared
    argv = [xnodectl_path(), "deploy", "--all", "--json", "--workspace", str(flake.directory)]
    if fan_out:
        argv += ["--fan-out", fan_out]
    try:
        started = time.monotonic()
        result = process.run(argv, check=False, timeout=900)
        seconds = time.monotonic() - started
        report = json.loads(result.stdout.splitlines()[-1])
        if not report.get("ok"):
            raise SystemExit(f"bench: deploy failed: {json.dumps(report)[:2000]} {result.stderr}")
        return round(seconds, 3)
    finally:
        drop(fleet, nodes)


def model_minutes(n: int, d: int, operator_bytes: int, degree: int) -> dict[str, float]:
    """Transfer time only: without fan-out the uplink carries n x D; with it the uplink carries
    the measured operator bytes, then holders serve `degree` nodes each per round, sharing their
    1 Gbit/s link."""
    plain = n * d * 8 / UPLINK_BPS
    holders, rounds = 1, 0
    while holders < n:
        holders += min(holders * degree, n - holders)
        rounds += 1
    fanout = operator_bytes * 8 / UPLINK_BPS + rounds * degree * d * 8 / NODE_BPS
    return {
        f"model_minutes_plain_{n}": round(plain / 60, 2),
        f"model_minutes_fanout_{n}": round(fanout / 60, 2),
        f"model_saving_{n}": round(plain / fanout, 1),
    }


def _timed(argv: list[str]) -> float:
    started = time.monotonic()
    process.run(argv, env=NIX_ENV, check=False)
    return time.monotonic() - started


def verify_cost(system: str, public: str, rounds: int) -> dict[str, float]:
    """What a node's Nix spends checking the closure's signatures: `nix store verify
    --no-contents` (every path's signature checked against the trusted key) minus the same walk
    with --no-trust (no signature checks); medians of `rounds` alternating pairs."""
    base = [*nix.BASE, "store", "verify", "--no-contents", "--recursive"]
    checked = [*base, "--sigs-needed", "1", "--option", "trusted-public-keys", public, system]
    unchecked = [*base, "--no-trust", system]
    with_sigs, without = [], []
    for i in range(rounds):
        if i % 2 == 0:
            with_sigs.append(_timed(checked))
            without.append(_timed(unchecked))
        else:
            without.append(_timed(unchecked))
            with_sigs.append(_timed(checked))
    diffs = [a - b for a, b in zip(with_sigs, without, strict=True)]
    return {
        "verify_walk_checked_seconds": round(statistics.median(with_sigs), 3),
        "verify_walk_unchecked_seconds": round(statistics.median(without), 3),
        # Negative = below this machine's noise: counted as 0.
        "verify_seconds": round(max(0.0, statistics.median(diffs)), 3),
    }


def sign_cost(system: str, directory: Path, rounds: int) -> float:
    """`nix store sign --recursive` of the closure with a key that has not signed it yet (the
    same work as a fresh closure): median of `rounds` new keys."""
    took = []
    for i in range(rounds):
        key_file, _ = owner_key(directory, f"bench-sign-{i}")
        started = time.monotonic()
        asyncio.run(nixsign.sign(key_file, [system], env=NIX_ENV))
        took.append(time.monotonic() - started)
    return round(statistics.median(took), 3)


def _sign_ws(base: Path, name: str, nodes: list[Node], size: int, salt: str, key: bool) -> Path:
    """A stand-in workspace as `xnodectl init` makes it (git, secrets/ ignored, owner key), or,
    `key=False`, one that cannot hold a key (secrets/ not ignored): its deploys sign nothing."""
    flake = StandinFlake(base / name, [x.name for x in nodes], size=size, leaf_salt=salt).write()
    if key:
        (flake.directory / ".gitignore").write_text(GITIGNORE)
    inventory = inv.Inventory(settings=inv.Settings(ssh_key=str(nodes[0].key)))
    for x in nodes:
        inventory.nodes[x.name] = inv.Node(host=x.host, port=x.port, host_key=x.host_key)
    inv.save(inventory, flake.directory / inv.FILENAME)
    if key:
        storekey.ensure(Workspace(flake.directory))
    return flake.directory


_SIGNED = re.compile(r"signed (\d+) paths with \S+ in ([0-9.]+) s; the copy waited ([0-9.]+) s")


def _deploy_one(ws: Path, node: str) -> tuple[float, float, float]:
    """Seconds of one `xnodectl deploy --node NODE`, the seconds its signing took and the
    seconds its copy waited for it (the engine's own event says both; 0 when it signed nothing
    or was done before the copy started)."""
    argv = [xnodectl_path(), "deploy", "--node", node, "--json", "--workspace", str(ws)]
    started = time.monotonic()
    result = process.run(argv, check=False, timeout=300)
    seconds = time.monotonic() - started
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.strip()]
    report = lines[-1]
    if not report.get("ok") or report["nodes"][0]["outcome"] != "deployed":
        raise SystemExit(f"bench: deploy failed: {json.dumps(report)[:2000]} {result.stderr}")
    said = [m for x in lines if (m := _SIGNED.search(x.get("message") or ""))]
    if not said:
        return seconds, 0.0, 0.0
    return seconds, float(said[0].group(2)), float(said[0].group(3))


def sign_deploy_cost(base: Path, fleet: Fleet, size: int, rounds: int) -> dict[str, Any]:
    """Single-node deploys of ONE closure (built once) to fresh nodes: from a workspace with a
    new owner key (signs every path), again from it to another node (nothing left to sign), and
    from a workspace without a key; rounds alternate which kind goes first."""
    salt = secrets.token_hex(4)
    signed, resigned, unsigned, diffs = [], [], [], []
    sign_took, waited, checks = [], [], []
    for r in range(rounds):
        nodes = [fleet.new() for _ in range(3)]
        for x in nodes:
            x.trust_store([])  # require-sigs, as XnodeOS (the operator's copy is not checked)
        ws_key = _sign_ws(base, f"ws-signed-{r}", nodes[:2], size, salt, key=True)
        ws_none = _sign_ws(base, f"ws-unsigned-{r}", nodes[2:], size, salt, key=False)
        StandinFlake(ws_none, [nodes[2].name], size=size, leaf_salt=salt).build(nodes[2].name)
        try:
            if r % 2 == 0:
                s = _deploy_one(ws_key, nodes[0].name)
                u = _deploy_one(ws_none, nodes[2].name)
            else:
                u = _deploy_one(ws_none, nodes[2].name)
                s = _deploy_one(ws_key, nodes[0].name)
            again = _deploy_one(ws_key, nodes[1].name)
        finally:
            drop(fleet, nodes)
        signed.append(s[0])
        sign_took.append(s[1])
        waited.append(s[2])
        resigned.append(again[0])
        unsigned.append(u[0])
        diffs.append(s[0] - u[0])
        probe = ["check-ignore", "-q", "--no-index", "secrets/nix-store-key"]
        checks.append(_timed(["git", "-C", str(ws_none), *probe]))
    extra = statistics.median(checks)
    return {
        "deploy_signed_seconds": round(statistics.median(signed), 3),
        "deploy_resigned_seconds": round(statistics.median(resigned), 3),
        "deploy_unsigned_seconds": round(statistics.median(unsigned), 3),
        "deploy_sign_seconds": round(statistics.median(sign_took), 3),
        "deploy_sign_wait_seconds": round(statistics.median(waited), 3),
        "deploy_sign_wait_max_seconds": round(max(waited), 3),
        "sign_deploy_overhead_seconds": round(statistics.median(diffs) + extra, 3),
        "resign_deploy_overhead_seconds": round(
            statistics.median(resigned) - statistics.median(unsigned) + extra, 3
        ),
        "sign_deploy_rounds": [
            [round(a, 3), round(b, 3), round(c, 3), round(w, 3)]
            for a, b, c, w in zip(signed, resigned, unsigned, waited, strict=True)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=positive_int, nargs="+", default=[8, 16])
    parser.add_argument("--size", type=positive_int, default=300, help="leaf paths")
    parser.add_argument("--degree", type=positive_int, default=2, help="tree:K")
    parser.add_argument("--rounds", type=positive_int, default=5, help="sign/verify rounds")
    parser.add_argument("--sign-only", action="store_true", help="no fleet runs")
    args = parser.parse_args()
    os.environ["NIX_CONFIG"] = NIX_CONF
    base = Path(tempfile.mkdtemp(prefix="xnb-", dir=ram_dir()))
    fleet = Fleet(base / "fleet")
    flake = StandinFlake(base / "flake", ["n"], size=args.size, leaf_salt=secrets.token_hex(4))
    system = flake.write().build("n")
    d = asyncio.run(nix.closure(system, env=NIX_ENV)).nar_size
    key_file, public = owner_key(base / "keys", "bench-owner")
    out: dict[str, Any] = {
        "closure": "stand-in (tests/standin.py), not NixOS",
        "closure_paths": args.size + 1,
        "closure_bytes": d,
        "sign_seconds": sign_cost(system, base / "keys", args.rounds),
        "degree": args.degree,
    }
    asyncio.run(nixsign.sign(key_file, [system], env=NIX_ENV))
    out.update(verify_cost(system, public, args.rounds))
    out["sign_verify_seconds"] = round(out["sign_seconds"] + out["verify_seconds"], 3)
    try:
        out.update(sign_deploy_cost(base, fleet, args.size, args.rounds))
        for n in [] if args.sign_only else args.nodes:
            print(f"bench: {n} nodes, fan-out tree:{args.degree}", file=sys.stderr)
            tree = Tree(args.degree)
            fan = distribute(fleet, n, public, system, tree, counting=True)
            out[f"operator_bytes_{n}"] = fan["operator_bytes"]
            out[f"operator_ratio_{n}"] = round(fan["operator_bytes"] / d, 3)
            print(f"bench: {n} nodes, operator copies to all", file=sys.stderr)
            plain = distribute(fleet, n, public, system, None, counting=True)
            out[f"operator_bytes_plain_{n}"] = plain["operator_bytes"]
            print(f"bench: {n} nodes, timings (no relay)", file=sys.stderr)
            timed = [
                distribute(fleet, n, public, system, tree, counting=False)["seconds"],
                distribute(fleet, n, public, system, None, counting=False)["seconds"],
                parallel_raw(fleet, n, public, system),
            ]
            out[f"copy_seconds_fanout_{n}"] = timed[0]
            out[f"copy_seconds_plain_{n}"] = timed[1]
            out[f"parallel_raw_seconds_{n}"] = timed[2]
            out.update(model_minutes(n, d, fan["operator_bytes"], args.degree))
            print(f"bench: {n} nodes, xnodectl deploy with and without fan-out", file=sys.stderr)
            salt = secrets.token_hex(4)  # both runs deploy the same, already built closure
            out[f"fleet_seconds_fanout_{n}"] = fleet_seconds(
                base, fleet, n, args.size, salt, f"tree:{args.degree}"
            )
            out[f"fleet_seconds_{n}"] = fleet_seconds(base, fleet, n, args.size, salt, None)
    finally:
        fleet.destroy()
        process.run(["rm", "-rf", str(base)], check=False)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
