"""Fan-out and caches against real test Xnodes: bytes counted on the operator's side of the wire.

Closures are stand-ins (tests/standin.py), not NixOS.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import XnodeFactory
from tests.fanout_rig import Rig, owner_key, sign
from tests.standin import StandinFlake
from xnodectl.deploy import peers, sources
from xnodectl.deploy.fanout import Tree
from xnodectl.remote import Session


def closure(tmp_path: Path, salt: str, size: int = 40) -> tuple[str, int]:
    flake = StandinFlake(tmp_path / "flake", ["n"], size=size, leaf_salt=salt).write()
    system = flake.build("n")
    from xnodectl import nix
    from tests.xnodes import NIX_ENV

    return system, asyncio.run(nix.closure(system, env=NIX_ENV)).nar_size


def test_tree_fanout_of_8_nodes_operator_sends_the_closure_once(
    tmp_path: Path, xnode_factory: XnodeFactory, operator_key: object
) -> None:
    key_file, public = owner_key(tmp_path / "keys")
    system, size = closure(tmp_path, "fanout-8")
    sign(key_file, system)
    nodes = xnode_factory(8, fresh=True)
    for node in nodes:
        node.trust_store([public])
    rig = Rig.create(nodes, nodes[0].key)
    session = Session(identity=nodes[0].key)
    try:
        dist = rig.distribution(session, system, fan_out=Tree(2))
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
