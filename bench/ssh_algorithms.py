"""The SSH algorithm choices of xnodectl/remote.py, measured side by side against the defaults.

Against test Xnodes (tests/xnodes.py: real sshd, private Nix stores, loopback). Prints one JSON
object as its LAST line:
  fresh_*      a new connection running `true`: OpenSSH's default key exchange (sntrup761x25519
               where the client has it) vs curve25519 first (xnodectl's fresh connections, which
               carry commands and replies only). Wall-clock and ssh-client CPU per connection,
               medians of --connections runs, alternated.
  copy_*       `nix copy` of the stand-in closure (tests/standin.py: ~300 paths, ~50 MB, NOT
               NixOS) to a fresh node: OpenSSH's default cipher vs AES-GCM first (xnodectl's
               multiplexed master on AES hardware), medians of --copies runs, alternated.

Run from the repository root: python bench/ssh_algorithms.py [--connections 15] [--copies 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import positive_int, ram_dir
from tests.standin import StandinFlake
from tests.xnodes import NIX_CONF, NIX_ENV, Fleet, Node
from xnodectl import process, remote


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def connect(node: Node, extra: list[str]) -> tuple[float, float]:
    """Wall seconds and this side's CPU seconds of one new connection running `true`."""
    cpu, started = _children_cpu(), time.perf_counter()
    process.run(["ssh", *extra, *node.ssh_options(), node.destination, "true"])
    return time.perf_counter() - started, _children_cpu() - cpu


def copy(node: Node, system: str, extra: str) -> float:
    env = {**NIX_ENV, "NIX_SSHOPTS": f"{node.nix_sshopts} {extra}".strip()}
    started = time.perf_counter()
    process.run(["nix", "copy", "--to", node.store_uri, system], env=env, timeout=300)
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=positive_int, default=15)
    parser.add_argument("--copies", type=positive_int, default=3)
    args = parser.parse_args()
    os.environ["NIX_CONFIG"] = NIX_CONF
    base = Path(tempfile.mkdtemp(prefix="xnssh-", dir=ram_dir()))
    fleet = Fleet(base / "nodes")
    kex = ["-o", remote.fresh_kex()]
    aes = f"-o {remote.AES_FIRST}"
    try:
        node = fleet.new()
        system = StandinFlake(base / "ws", [node.name], size=300).write().build()
        default_conn: list[tuple[float, float]] = []
        ours_conn: list[tuple[float, float]] = []
        connect(node, [])  # warm up sshd and the page cache
        for _ in range(args.connections):
            default_conn.append(connect(node, []))
            ours_conn.append(connect(node, kex))
        default_copy: list[float] = []
        ours_copy: list[float] = []
        for _ in range(args.copies):  # a fresh node for every copy: the whole closure moves
            default_copy.append(copy(fleet.new(), system, ""))
            ours_copy.append(copy(fleet.new(), system, aes))
    finally:
        fleet.destroy()
        shutil.rmtree(base, ignore_errors=True)
    fresh_default = median([w for w, _ in default_conn])
    fresh_ours = median([w for w, _ in ours_conn])
    copy_default, copy_ours = median(default_copy), median(ours_copy)
    result = {
        "closure": "stand-in (tests/standin.py), not NixOS",
        "cpu_has_aes": remote._cpu_has_aes(),
        "fresh_default_kex_seconds": fresh_default,
        "fresh_curve25519_seconds": fresh_ours,
        "fresh_default_kex_client_cpu_seconds": median([c for _, c in default_conn]),
        "fresh_curve25519_client_cpu_seconds": median([c for _, c in ours_conn]),
        "fresh_ratio": round(fresh_ours / fresh_default, 3),
        "copy_default_cipher_seconds": copy_default,
        "copy_aes_gcm_first_seconds": copy_ours,
        "copy_ratio": round(copy_ours / copy_default, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
