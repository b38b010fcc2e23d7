"""remote.Session.warm against real test Xnodes: the master opened in the background is the one the
node's first command uses, its failure is that command's failure (once, not twice), and nothing it
started outlives the session. The key exchange each connection uses is checked on the wire side:
ssh -G shows what a given argv would negotiate first."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.conftest import XnodeFactory
from tests.xnodes import Node
from xnodectl import inventory as inv
from xnodectl import process
from xnodectl.deploy import prepare
from xnodectl.errors import UsageError
from xnodectl.remote import Session, Target, Unreachable
from xnodectl.workspace import Workspace

REFUSE = "mkdir -p /run/xnode-test && touch /run/xnode-test/refuse-ssh"


def _target(node: Node) -> Target:
    return Target(node.name, node.host, node.port, "root", node.host_key)


def _ssh_processes(session: Session) -> list[str]:
    found = process.run(["pgrep", "-af", f"ControlPath={session.dir}"], check=False).stdout
    return [line for line in found.splitlines() if " ssh " in f" {line.split(' ', 1)[-1]}"]


def _wait_master(session: Session, node: str, seconds: float = 10) -> Path:
    sock = session.dir / f"{node}.sock"
    deadline = time.monotonic() + seconds
    while not sock.exists():
        assert time.monotonic() < deadline, "the warm master never came up"
        time.sleep(0.02)
    return sock


def test_the_first_command_rides_the_warm_master(xnode: Node) -> None:
    """Once the warm master is up, the node refuses every NEW login: the command still runs (it
    went over the warm master), a fresh connection is refused (the control)."""
    session = Session(identity=xnode.key)
    try:
        session.warm(_target(xnode))
        _wait_master(session, xnode.name)
        xnode.local(REFUSE)
        ssh = session.ssh(_target(xnode))
        result = asyncio.run(ssh.run(["echo", "over-the-master"], timeout=20))
        assert result.stdout.strip() == "over-the-master"
        with pytest.raises(Unreachable):
            asyncio.run(ssh.run(["true"], timeout=20, fresh=True))
    finally:
        xnode.local("rm -f /run/xnode-test/refuse-ssh")
        asyncio.run(session.ssh(_target(xnode)).close())
        session.close()
    assert not _ssh_processes(session)


def test_a_hung_node_costs_one_connect_timeout_not_two(xnode: Node) -> None:
    """sshd frozen: the warm-up times out after ConnectTimeout (2 s here); the first command, sent
    1.2 s later, fails with that, as Unreachable naming the node, instead of waiting 2 s more."""
    session = Session(identity=xnode.key, connect_timeout=2)
    xnode.freeze()
    try:
        started = time.monotonic()
        session.warm(_target(xnode))
        ssh = session.ssh(_target(xnode))
        time.sleep(1.2)
        with pytest.raises(Unreachable, match=f"node '{xnode.name}'"):
            asyncio.run(ssh.run(["true"], timeout=30))
        took = time.monotonic() - started
    finally:
        xnode.thaw()
        session.close()
    assert 1.5 < took < 2.9, took
    assert not _ssh_processes(session)


def test_a_warm_up_nobody_used_is_closed_with_the_session(xnode: Node) -> None:
    session = Session(identity=xnode.key)
    session.warm(_target(xnode))
    sock = _wait_master(session, xnode.name)
    assert _ssh_processes(session)  # the master persists in the background
    session.close()
    assert not sock.exists() and not session.dir.exists()
    assert not _ssh_processes(session)


def test_a_warm_up_cut_short_is_killed(xnode: Node) -> None:
    session = Session(identity=xnode.key, connect_timeout=30)
    xnode.freeze()
    try:
        session.warm(_target(xnode))
        time.sleep(0.2)
        assert _ssh_processes(session)
        session.close()
        assert not _ssh_processes(session)
    finally:
        xnode.thaw()


def _workspace(tmp_path: Path, nodes: list[Node], apps: list[inv.AppEntry]) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    inventory = inv.Inventory(settings=inv.Settings(ssh_key=str(nodes[0].key)))
    for node in nodes:
        inventory.nodes[node.name] = inv.Node(
            host=node.host, port=node.port, host_key=node.host_key, apps=list(apps)
        )
    inv.save(inventory, root / inv.FILENAME)
    return Workspace(root)


def test_prepare_connects_early_only_to_the_first_wave_and_closes_on_bad_input(
    tmp_path: Path, xnode_factory: XnodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = xnode_factory(3)
    ws = _workspace(tmp_path, nodes, [])
    warmed: list[str] = []
    monkeypatch.setattr(Session, "warm", lambda self, target, **kw: warmed.append(target.node))
    fleet = prepare.FleetOptions(max_parallel=None, canary=1)
    req = prepare.Request(prepare.Selection(all=True), fleet=fleet)
    prepared = prepare.prepare(ws, req, connect_early=True)
    assert warmed == [nodes[0].name] and prepared.session is not None
    prepared.session.close()
    warmed.clear()
    req = prepare.Request(prepare.Selection(all=True), fleet=prepare.FleetOptions(2))
    prepare.prepare(ws, req, connect_early=True).session.close()  # type: ignore[union-attr]
    assert warmed == [nodes[0].name, nodes[1].name]
    assert prepare.prepare(ws, req).session is None  # plan, nixops4, a deploy that asks first
    monkeypatch.undo()

    sessions: list[Session] = []
    real = prepare.session_of

    def recorded(inventory: inv.Inventory) -> Session:
        sessions.append(real(inventory))
        return sessions[-1]

    monkeypatch.setattr(prepare, "session_of", recorded)
    bad = prepare.Request(prepare.Selection(all=True), words=("template=postgres", "port=banana"))
    with pytest.raises(UsageError):
        prepare.prepare(ws, bad, connect_early=True)
    assert len(sessions) == 1 and not sessions[0].dir.exists()
    assert not _ssh_processes(sessions[0])


def test_the_master_kex_follows_what_the_node_may_carry(tmp_path: Path) -> None:
    """A node with an app whose template declares a secret parameter gets a post-quantum master
    (no KexAlgorithms override); a node without gets the cheap one; a later `ssh` of the node
    follows the master whatever it asks, so a secret never rides a non-post-quantum master."""
    with_secret = inv.AppEntry(template="postgres")
    plain = inv.AppEntry(template="ipfs")
    from xnodectl import catalog

    assert any(s.secret for s in catalog.get("postgres").params.values())
    assert not any(s.secret for s in catalog.get("ipfs").params.values())
    assert prepare.may_carry_secrets(inv.Node(host="h", apps=[with_secret]))
    assert not prepare.may_carry_secrets(inv.Node(host="h", apps=[plain]))
    assert not prepare.may_carry_secrets(inv.Node(host="h"))
    session = Session()
    try:
        target = Target("n1", "10.0.0.9", 22, "root", "ssh-ed25519 AAAA")
        first = session.ssh(target)  # fixes the master: not post-quantum
        later = session.ssh(target, carries_secrets=True)
        assert not first.carries_secrets and not later.carries_secrets
        assert "ControlPath=none" in later.argv(["cat"], secret=True)
    finally:
        session.close()


def test_fleet_waves_and_first_nodes() -> None:
    names = ["a", "b", "c", "d"]
    assert prepare.FleetOptions(10, 0).waves(names) == [names]
    assert prepare.FleetOptions(10, 1).waves(names) == [["a"], ["b", "c", "d"]]
    assert prepare.FleetOptions(10, 4).waves(names) == [names]  # canary = the fleet: one wave
    assert prepare.FleetOptions(2, 0).first(names) == ["a", "b"]
    assert prepare.FleetOptions(10, 3).first(names) == ["a", "b", "c"]
    assert prepare.FleetOptions(2, 3).first(names) == ["a", "b"]


def test_a_node_without_a_pinned_key_is_not_warmed() -> None:
    """Its own first step reports the missing key (a per-node failure in the deploy report)."""
    session = Session()
    try:
        session.warm(Target("n1", "10.0.0.9", 22, "root", None))
        assert session.warming("n1") is None and not _ssh_processes(session)
    finally:
        session.close()
