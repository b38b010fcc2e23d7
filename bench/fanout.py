"""Fan-out benchmark against test Xnodes. Prints one JSON object as its LAST line.

The closure is a stand-in (tests/standin.py: ~300 leaf paths, ~50 MB), NOT NixOS; every figure
says so. Fresh nodes for every measurement. Every node's operator address is a counting TCP relay
(tests/countproxy.py), so `operator_bytes` is what the operator's ssh really sent on the wire
(closure, ssh framing, every command), not what the engine believes; peers reach each other on
their real ports.
  closure_bytes (D)            NAR size of the closure
  operator_bytes_<N>           bytes the operator sent, tree fan-out to N nodes (target <= 1.1 D)
  operator_bytes_plain_<N>     the same without fan-out (about N x D)
  copy_seconds_fanout_<N>      the copy stage of N nodes with fan-out (tree:K)
  copy_seconds_plain_<N>       the copy stage with the operator copying to all N at once
  parallel_raw_seconds_<N>     plain `nix copy` to all N at once, nothing else
  model_*                      minutes for a 20 Mbit/s operator uplink and 1 Gbit/s node links,
                               from the MEASURED operator bytes (all nodes share this machine's
                               2 cores and loopback, so wall time cannot show the uplink saving)
  sign_seconds                 `nix store sign --recursive` of the fresh closure
  verify_seconds               a peer pull with signature checks minus the same pull with
                               --no-check-sigs (median of --rounds pairs)

Run from the repository root: python bench/fanout.py [--nodes 8 16] [--size 300] [--degree 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import positive_int, ram_dir
from tests.fanout_rig import Rig, owner_key
from tests.standin import StandinFlake
from tests.xnodes import NIX_ENV, Fleet, Node
from xnodectl import nix, process
from xnodectl.deploy import peers, sources
from xnodectl.deploy.fanout import Tree
from xnodectl.remote import Session, Target

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


async def _pull(dest: Node, seed: Node, key: peers.PeerKey, system: str, check: bool) -> float:
    session = Session(identity=dest.key)
    ssh = session.ssh(Target(dest.name, dest.host, dest.port, dest.user, dest.host_key))
    endpoint = peers.Endpoint(seed.name, seed.host, seed.port, seed.user, seed.host_key)
    command = peers.pull_command(endpoint, key, [system], "root")
    if not check:
        unchecked = 'nix copy --no-check-sigs --from "$4"'
        command[2] = command[2].replace('nix copy --from "$4"', unchecked)
    try:
        started = time.monotonic()
        result = await process.arun(ssh.argv(command), input=key.private.read_bytes())
        assert result.ok
        return time.monotonic() - started
    finally:
        await ssh.close()
        session.close()


def verify_cost(fleet: Fleet, public: str, system: str, rounds: int) -> float:
    """Median over rounds of (checked pull - unchecked pull) from one seed to fresh nodes."""
    seed = fresh(fleet, 1, public)[0]
    process.run(["nix", "copy", "--to", seed.store_uri, system], env=seed.nix_env())
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:
        key = peers.PeerKey.create(Path(directory), "bench")
        line = shlex.quote(key.authorized_line())
        seed.local(f"mkdir -p /run/xnode/fanout/keys && echo {line} >> /run/xnode/fanout/keys/root")
        diffs = []
        for i in range(rounds):
            pair = fresh(fleet, 2, public)
            order = [(pair[0], True), (pair[1], False)]
            if i % 2:
                order.reverse()
            took = {check: asyncio.run(_pull(d, seed, key, system, check)) for d, check in order}
            diffs.append(took[True] - took[False])
            drop(fleet, pair)
    drop(fleet, [seed])
    return round(statistics.median(diffs), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=positive_int, nargs="+", default=[8, 16])
    parser.add_argument("--size", type=positive_int, default=300, help="leaf paths")
    parser.add_argument("--degree", type=positive_int, default=2, help="tree:K")
    parser.add_argument("--rounds", type=positive_int, default=3, help="verify-cost pairs")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="xnb-", dir=ram_dir()))
    fleet = Fleet(base / "fleet")
    flake = StandinFlake(base / "flake", ["n"], size=args.size, leaf_salt=secrets.token_hex(4))
    system = flake.write().build("n")
    d = asyncio.run(nix.closure(system, env=NIX_ENV)).nar_size
    key_file, public = owner_key(base / "keys", "bench-owner")
    started = time.monotonic()
    asyncio.run(nix.sign(key_file, [system], env=NIX_ENV))
    out: dict[str, Any] = {
        "closure": "stand-in (tests/standin.py), not NixOS",
        "closure_paths": args.size + 1,
        "closure_bytes": d,
        "sign_seconds": round(time.monotonic() - started, 3),
        "degree": args.degree,
    }
    try:
        for n in args.nodes:
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
        out["verify_seconds"] = verify_cost(fleet, public, system, args.rounds)
        out["sign_verify_seconds"] = round(out["sign_seconds"] + out["verify_seconds"], 3)
    finally:
        fleet.destroy()
        process.run(["rm", "-rf", str(base)], check=False)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
