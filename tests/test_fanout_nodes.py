"""Fan-out and caches against real test Xnodes: bytes counted on the operator's side of the wire.

Closures are stand-ins (tests/standin.py), not NixOS.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import XnodeFactory
from tests.fanout_rig import Rig, owner_key, sign, ssh_ng_cache
from tests.standin import StandinFlake
from tests.xnodes import NIX_ENV
from xnodectl import nix, process
from xnodectl.deploy import peers, sources
from xnodectl.deploy.fanout import Tree
from xnodectl.remote import Session

TREE2 = Tree(2)


def closure(tmp_path: Path, salt: str, size: int = 40) -> tuple[str, int]:
    # A new closure every run: the host store keeps the signatures of earlier runs.
    salt = f"{salt}-{secrets.token_hex(4)}"
    flake = StandinFlake(tmp_path / "flake", ["n"], size=size, leaf_salt=salt).write()
    system = flake.build("n")
    return system, asyncio.run(nix.closure(system, env=NIX_ENV)).nar_size


def run(
    rig: Rig, system: str, *, fan_out: Tree | None = TREE2, via: str | None = None, **kw: Any
) -> tuple[sources.Distribution, dict[str, sources.Bytes | BaseException], list[str]]:
    session = Session(identity=rig.identity)
    notes: list[str] = []
    try:
        dist = rig.distribution(session, system, fan_out=fan_out, via=via)
        results = asyncio.run(rig.copy_all(session, dist, notes=notes, **kw))
    finally:
        session.close()
    return dist, results, notes


def test_tree_fanout_of_8_nodes_operator_sends_the_closure_once(
    tmp_path: Path, xnode_factory: XnodeFactory, operator_key: object
) -> None:
    key_file, public = owner_key(tmp_path / "keys")
    system, size = closure(tmp_path, "fanout-8")  # unsigned: the distribution signs it
    nodes = xnode_factory(8, fresh=True)
    for node in nodes:
        node.trust_store([public])
    rig = Rig.create(nodes, nodes[0].key)
    session = Session(identity=nodes[0].key)
    try:
        dist = rig.distribution(session, system, fan_out=Tree(2), signer=key_file)
        results = asyncio.run(rig.copy_all(session, dist))
    finally:
        session.close()
        rig.close()
    assert all(isinstance(r, sources.Bytes) for r in results.values()), results
    assert all(node.has_path(system) for node in nodes)
    # Counted on the wire between the operator and the nodes (ssh framing, control commands).
    assert rig.operator_sent <= 1.1 * size, (rig.operator_sent, size)
    from_operator = [n for n, b in dist.per_node.items() if b.operator]
    assert len(from_operator) == 1 and dist.operator_bytes == size
    assert sum(b.peers for b in dist.per_node.values()) == 7 * size
    for node in nodes:
        assert any(sig.startswith("test-owner:") for sig in node.signatures(system))
        # the deploy's key is gone from every holder
        keys = node.local("cat /run/xnode/fanout/keys/root 2>/dev/null").stdout
        assert "xnode-fanout-" not in keys
        assert not node.local("ls /run/xnode/fanout/ | grep pull-").stdout


@pytest.fixture
def trusted(tmp_path: Path, xnode_factory: XnodeFactory) -> Any:
    """(key_file, public, make(n) -> Rig over n fresh nodes trusting the owner key)."""
    key_file, public = owner_key(tmp_path / "keys")
    rigs: list[Rig] = []

    def make(n: int) -> Rig:
        nodes = xnode_factory(n, fresh=True)
        for node in nodes:
            node.trust_store([public])
        rigs.append(Rig.create(nodes, nodes[0].key))
        return rigs[-1]

    yield key_file, public, make
    for rig in rigs:
        rig.close()


def test_foreign_key_refused_and_the_rest_go_on(tmp_path: Path, trusted: Any) -> None:
    """A node that trusts another key refuses the owner-signed closure from its peer: its copy
    fails with a clear message; the others still get the closure."""
    key_file, _public, make = trusted
    system, _size = closure(tmp_path, "fanout-foreign", size=10)
    sign(key_file, system)
    rig = make(4)
    _other_file, other_public = owner_key(tmp_path / "other", "someone-else")
    stranger = rig.nodes[1]
    stranger.trust_store([other_public])
    _dist, results, notes = run(rig, system, fan_out=Tree(1))
    refused = results[stranger.name]
    assert isinstance(refused, peers.SignatureRefused), results
    assert "not signed by a key the node trusts" in refused.message
    assert not stranger.has_path(system)
    for node in rig.nodes:
        if node is not stranger:
            assert isinstance(results[node.name], sources.Bytes), (node.name, results, notes)
            assert node.has_path(system)


def test_unsigned_path_refused(tmp_path: Path, trusted: Any) -> None:
    """The seed already held one path of the closure, unsigned (copied before signing existed):
    the node pulling from it refuses that path and fails; that seed serves nobody else."""
    key_file, _public, make = trusted
    system, _size = closure(tmp_path, "fanout-unsigned", size=10)
    rig = make(3)
    seed = rig.nodes[0]
    leaf = next(p for p in asyncio.run(nix.closure(system, env=NIX_ENV)).paths if "leaf" in p)
    process.run(["nix", "copy", "--to", seed.store_uri, leaf], env=seed.nix_env())
    assert not seed.signatures(leaf)
    sign(key_file, system)
    dist, results, notes = run(rig, system, fan_out=Tree(1))
    assert isinstance(results[seed.name], sources.Bytes)
    failed = [n for n, r in results.items() if isinstance(r, peers.SignatureRefused)]
    assert len(failed) == 1, (results, notes)
    assert leaf in str(results[failed[0]])
    rest = [n.name for n in rig.nodes if n.name not in (seed.name, failed[0])]
    assert all(isinstance(results[n], sources.Bytes) for n in rest), (results, notes)
    assert dist.schedule is not None and seed.name in dist.schedule.failed


def test_peer_killed_mid_copy_falls_back(tmp_path: Path, trusted: Any) -> None:
    """The only holder's sshd dies while a node pulls from it: that node falls back to the
    operator and says so; nobody waits on the dead peer."""
    key_file, _public, make = trusted
    system, _size = closure(tmp_path, "fanout-kill", size=40)
    sign(key_file, system)
    rig = make(3)
    seed = rig.nodes[0]
    killed: list[str] = []

    def watch(node: str, kind: str) -> None:
        if kind == "peers" and not killed:
            killed.append(node)
            seed.stop()

    dist, results, notes = run(rig, system, fan_out=Tree(2), watch=watch)
    assert killed, "no pull from the seed was seen"
    others = [n for n in rig.nodes if n is not seed]
    for node in others:
        assert isinstance(results[node.name], sources.Bytes), (results, notes)
        assert node.has_path(system)
    assert any("falling back" in n or "no peer could serve" in n for n in notes), notes
    assert any(f"peer '{seed.name}'" in n for n in notes), notes
    assert dist.schedule is not None and seed.name in dist.schedule.failed


def test_via_file_cache(tmp_path: Path, trusted: Any) -> None:
    """--via file://: the operator pushes once; nodes substitute from their configured cache."""
    key_file, public, make = trusted
    system, size = closure(tmp_path, "fanout-file-cache", size=20)
    sign(key_file, system)
    cache_dir = tmp_path / "cache"
    url = f"file://{cache_dir}?compression=none"
    rig = make(3)
    for node in rig.nodes:
        node.trust_store([public], substituters=[f"file://{cache_dir}"])
    dist, results, notes = run(rig, system, fan_out=None, via=url)
    assert all(isinstance(r, sources.Bytes) for r in results.values()), (results, notes)
    assert dist.pushed_bytes == size and dist.operator_bytes == size
    assert all(b.caches == size and b.operator == 0 for b in dist.per_node.values())
    assert rig.operator_sent < 0.05 * size  # commands only: the bytes came from the cache
    assert all(node.has_path(system) for node in rig.nodes)


def test_unreachable_cache_falls_back_to_the_operator(tmp_path: Path, trusted: Any) -> None:
    key_file, _public, make = trusted
    system, size = closure(tmp_path, "fanout-no-cache", size=5)
    sign(key_file, system)
    rig = make(2)
    url = "ssh-ng://root@127.0.0.1?ssh-key=/nonexistent&base64-ssh-public-host-key=eA=="
    dist, results, notes = run(rig, system, fan_out=None, via=url)
    assert all(isinstance(r, sources.Bytes) for r in results.values()), (results, notes)
    assert all(b.operator == size for b in dist.per_node.values())
    assert len([n for n in notes if "falling back to the operator" in n]) == 2, notes


def test_via_ssh_ng_cache(tmp_path: Path, trusted: Any, xnode_fleet: Any) -> None:
    """--via ssh-ng://: the cache is another sshd store (port 22 on its own loopback address, as
    Nix 2.8 store URLs carry no port); its host key is pinned in the URL."""
    key_file, public, make = trusted
    system, size = closure(tmp_path, "fanout-ssh-cache", size=20)
    sign(key_file, system)
    with ssh_ng_cache(xnode_fleet, public) as (cache_node, url):
        rig = make(2)
        for node in rig.nodes:
            node.trust_store([public], substituters=[url])
        dist, results, notes = run(rig, system, fan_out=None, via=url)
        assert all(isinstance(r, sources.Bytes) for r in results.values()), (results, notes)
        assert dist.pushed_bytes == size
        assert all(b.caches == size for b in dist.per_node.values()), dist.per_node
        assert cache_node.has_path(system)


def test_nodes_with_different_systems_share_the_common_paths(tmp_path: Path, trusted: Any) -> None:
    """Every node's system differs (its name is baked in), their leaves do not: peers serve the
    shared part, the operator sends each node only its own top path."""
    key_file, _public, make = trusted
    rig = make(4)
    names = [n.name for n in rig.nodes]
    salt = f"fanout-per-node-{secrets.token_hex(4)}"
    flake = StandinFlake(tmp_path / "flake", names, size=20, leaf_salt=salt, per_node=True)
    flake.write()
    systems = {name: flake.build(name) for name in names}
    closures = {s: asyncio.run(nix.closure(s, env=NIX_ENV)) for s in systems.values()}
    for system in systems.values():
        sign(key_file, system)
    session = Session(identity=rig.identity)
    try:
        plan = sources.Plan(fan_out=Tree(2), copy_timeout=120)
        dist = sources.Distribution(
            plan, closures, rig.endpoints, key=sources.make_key(plan, session.dir, "t")
        )
        results = asyncio.run(rig.copy_all(session, dist, systems))
    finally:
        session.close()
    assert all(isinstance(r, sources.Bytes) for r in results.values()), results
    assert all(node.has_path(systems[node.name]) for node in rig.nodes)
    shared = sum(p.nar_size for p in closures[systems[names[0]]].paths.values() if "leaf" in p.path)
    seeds = [n for n, b in dist.per_node.items() if b.operator >= shared]
    assert len(seeds) == 1, dist.per_node
    for name, got in dist.per_node.items():
        if name not in seeds:
            assert got.peers == shared and 0 < got.operator < 0.05 * shared, (name, got)
    assert rig.operator_sent < 1.1 * shared
