"""`xnodectl deploy --fan-out / --via` as a user runs it: the real CLI in its own process
(`python -m xnodectl`) against real test Xnodes, the operator's bytes counted on the wire by a
relay in front of every node's sshd. Faults: a peer's store server killed mid-copy, a path the
seed holds unsigned, an `ssh-ng://` cache; a workspace made before `init` created keys.
Stand-in closures (tests/standin.py), not NixOS."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import XnodeFactory
from tests.fanout_rig import FanWs, PeerKiller, ssh_ng_cache
from tests.xnodes import NIX_CONF, NIX_ENV, Fleet
from xnodectl import inventory as inv
from xnodectl import nix, process, storekey
from xnodectl.workspace import Workspace

FALLBACK = "no peer could serve it: copying from the operator"


@pytest.fixture
def cli_ws(
    tmp_path: Path, xnode_factory: XnodeFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """make(n, size, key=True) -> a FanWs over n fresh nodes; with `key`, the workspace has its
    owner key (as `xnodectl init` makes it) and every node trusts it (as XnodeOS does)."""
    monkeypatch.setenv("NIX_CONFIG", NIX_CONF)
    made: list[FanWs] = []

    def make(n: int, size: int, *, key: bool = True) -> FanWs:
        nodes = xnode_factory(n, fresh=True)
        salt = f"fanout-cli-{secrets.token_hex(4)}"
        ws = FanWs.create(tmp_path / f"ws{len(made)}", nodes, size, salt)
        made.append(ws)
        if key:
            public = storekey.ensure(Workspace(ws.root)).public
            for node in nodes:
                node.trust_store([public])
        return ws

    yield make
    for ws in made:
        ws.close()


def closure_bytes(ws: FanWs) -> int:
    system = ws.flake.build(ws.nodes[0].name)
    return asyncio.run(nix.closure(system, env=NIX_ENV)).nar_size


def test_peer_killed_mid_copy_falls_back_and_the_deploy_succeeds(cli_ws: Any) -> None:
    """tree:1 over 3 nodes: the seed serves one node at a time. Its store server dies (SIGKILL,
    with its sshd session) once it has sent 256 KiB: the pulling node says so, falls back (to
    the operator: no other holder exists yet) and is deployed; the third pulls from a holder;
    the run succeeds. The report's operator bytes are what the relays saw the operator send."""
    ws: FanWs = cli_ws(3, 60)
    d = closure_bytes(ws)
    with PeerKiller(ws.nodes) as killer:
        out = ws.cli("--fan-out", "tree:1")
    assert killer.killed, "no peer's store server was seen sending"
    peer, written = killer.killed[0]
    assert written < d, "killed after the whole closure: not mid-copy"
    assert out.code == 0, (out.stderr, out.report)
    assert out.report["deployed"] == 3
    [victim] = [
        n.name for n in ws.nodes if any(f"peer '{peer}'" in m for m in out.messages(n.name))
    ]
    said = out.messages(victim)
    gave_up = f"copy from peer '{peer}' failed"
    assert any(gave_up in m and "trying another source" in m for m in said), said
    assert any(FALLBACK in m for m in said) or any("from peers" in m for m in said), said
    nodes = out.report["nodes"]
    figures = [(n["bytes_copied"], n["bytes_from_operator"], n["bytes_from_peers"]) for n in nodes]
    assert all(n["bytes_copied"] == d for n in nodes), (d, figures, said)
    assert all(n["bytes_from_operator"] + n["bytes_from_peers"] == n["bytes_copied"] for n in nodes)
    assert out.report["operator_bytes"] == sum(n["bytes_from_operator"] for n in nodes)
    assert out.node(peer)["bytes_from_operator"] == d  # the seed
    # Truthful: the operator really sent what the report says, and not much more.
    assert out.report["operator_bytes"] <= ws.operator_sent <= 1.1 * out.report["operator_bytes"]
    assert all(n.current_system() is not None for n in ws.nodes)


def test_a_path_the_seed_holds_unsigned_fails_one_node_the_rest_go_on(cli_ws: Any) -> None:
    """The canary (the seed) held one leaf of the closure from before, unsigned: the operator's
    copy skips it, so the seed serves it unsigned. The node pulling it refuses it and fails with
    a report naming the path and the peer; the seed serves nobody else; the rest are deployed
    (from the operator, then from peers). Exit 3 (some nodes failed)."""
    ws: FanWs = cli_ws(4, 10)
    seed = ws.nodes[0]
    system = ws.flake.build(seed.name)
    leaf = next(p for p in asyncio.run(nix.closure(system, env=NIX_ENV)).paths if "leaf" in p)
    process.run(["nix", "copy", "--to", seed.store_uri, leaf], env=seed.nix_env())
    assert not seed.signatures(leaf)
    out = ws.cli("--fan-out", "tree:1", "--canary", "1")
    assert out.code == 3, (out.stderr, out.report)
    failed = [n for n in out.report["nodes"] if n["outcome"] == "failed"]
    assert len(failed) == 1, out.report
    error = failed[0]["error"]
    assert leaf in error and f"from peer '{seed.name}'" in error
    assert "not signed by a key the node trusts" in error
    assert failed[0]["node"] != seed.name
    assert out.report["deployed"] == 3
    loser = next(n for n in ws.nodes if n.name == failed[0]["node"])
    assert loser.current_system() is None
    for node in out.report["nodes"]:  # nobody else pulled from the seed
        if node["node"] not in (seed.name, loser.name):
            said = out.messages(node["node"])
            assert not any(f"peer '{seed.name}'" in m for m in said), said


def test_via_ssh_ng_cache(cli_ws: Any, xnode_fleet: Fleet) -> None:
    """--via ssh-ng://: the operator pushes once to another sshd store (port 22 on its own
    loopback address: Nix 2.8 store URLs carry no port; host key pinned in the URL); the nodes
    substitute from it, as their configuration lists it, checking the owner's signatures."""
    ws: FanWs = cli_ws(2, 20)
    public = ws.owner_public
    with ssh_ng_cache(xnode_fleet, public) as (cache, url):
        for node in ws.nodes:
            node.trust_store([public], substituters=[url])
        d = closure_bytes(ws)
        out = ws.cli("--via", url)
        assert out.code == 0, (out.stderr, out.report)
        assert out.report["operator_bytes"] == d  # the one push
        assert all(n["bytes_from_caches"] == d for n in out.report["nodes"]), out.report
        assert ws.operator_sent < 0.1 * d  # the nodes' bytes came from the cache
        assert cache.has_path(ws.flake.build(ws.nodes[0].name))


def test_deploy_of_a_workspace_without_a_key_creates_it_says_so_once_and_signs(
    cli_ws: Any,
) -> None:
    """A workspace made before `init` created keys: the first deploy makes the key (0600,
    secrets/), lists its public half for the system it builds, says so on stderr, signs what
    it copies; the next deploy says nothing about keys."""
    ws: FanWs = cli_ws(1, 3, key=False)
    out = ws.cli()
    assert out.code == 0, (out.stderr, out.report)
    key = storekey.load(Workspace(ws.root))
    assert key is not None
    assert inv.load(ws.root / inv.FILENAME).settings.store_keys == [key.public]
    notices = [line for line in out.stderr.splitlines() if "owner store signing key" in line]
    assert len(notices) == 1 and key.name in notices[0], out.stderr
    system = ws.nodes[0].current_system()
    assert system is not None
    assert any(sig.startswith(key.name + ":") for sig in ws.nodes[0].signatures(system))
    again = ws.cli()
    assert again.code == 0 and "owner store" not in again.stderr, again.stderr
    assert again.report["nodes"][0]["outcome"] == "unchanged"


def test_a_redeploy_elsewhere_signs_nothing(cli_ws: Any, tmp_path: Path) -> None:
    """The closure already carries the owner's signature: a deploy to a new node runs no
    `nix store sign` (a wrapper on PATH records every nix the CLI runs)."""
    ws: FanWs = cli_ws(2, 5)
    first, second = ws.nodes
    out = ws.cli("--node", first.name)
    assert out.code == 0, out.stderr
    log = tmp_path / "nix-calls"
    shim = tmp_path / "bin"
    shim.mkdir()
    real = process.run(["sh", "-c", "command -v nix"]).stdout.strip()
    (shim / "nix").write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    (shim / "nix").chmod(0o755)
    argv = [sys.executable, "-m", "xnodectl", *ws.deploy_argv("--node", second.name)]
    env = {"PATH": f"{shim}:/usr/bin:/bin"}
    result = process.run(argv, check=False, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    calls = log.read_text()
    assert "path-info" in calls and "copy" in calls  # the wrapper saw the CLI's nix
    assert "store sign" not in calls, calls
    system = second.current_system()
    assert system is not None and second.signatures(system)


def test_fan_out_with_max_failures_stops_and_nobody_waits_on_a_skipped_node(
    cli_ws: Any, tmp_path: Path
) -> None:
    """--max-failures 0 --max-parallel 1: the second node trusts another key, refuses what its
    peer serves and fails; no node starts after it (skipped, said so), nothing hangs waiting for
    a skipped node to become a holder; exit 3."""
    from tests.fanout_rig import owner_key

    ws: FanWs = cli_ws(4, 5)
    _file, other = owner_key(tmp_path / "other-key", "someone-else")
    ws.nodes[1].trust_store([other])
    out = ws.cli("--fan-out", "tree:1", "--max-parallel", "1", "--max-failures", "0", timeout=120)
    assert out.code == 3, (out.stderr, out.report)
    outcomes = [out.node(n.name)["outcome"] for n in ws.nodes]
    assert outcomes == ["deployed", "failed", "skipped", "skipped"], out.report
    assert "not signed by a key the node trusts" in out.node(ws.nodes[1].name)["error"]
    assert [n.current_system() is not None for n in ws.nodes] == [True, False, False, False]
