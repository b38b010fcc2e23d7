"""`xnodectl node log NODE`: the node's own deploy audit log through the CLI, against a real test
Xnode (tests/xnodes.py; systems are stand-ins from tests/standin.py, not NixOS): after a deploy,
after a rollback decided by the node's own dead-man timer, with an agent too old to know the
command, and with bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.test_deploy_nodes import CONFIRM, _cli, _deploy_v1, catalogue, make_ws
from tests.xnodes import HELPER, Fault, Node
from xnodectl.deploy import journal

__all__ = ["catalogue"]  # the fixture, imported for the tests below


def _run_id(root: Path) -> str:
    """The id of the workspace's newest deploy (its journal's header; ids alone do not order
    deploys begun in the same second)."""
    headers = [json.loads(p.read_text().splitlines()[0]) for p in journal.runs_dir(root).glob("*")]
    return str(max(headers, key=lambda h: float(h["started"]))["id"])


def test_after_a_deploy_and_a_timer_rollback(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1])
    code, out, err = _cli(ws, "node", "log", n1.name)
    assert (code, out) == (0, "") and err.strip() == f"{n1.name}: no deploys recorded on the node"

    gen = _deploy_v1(ws, n1)
    first = _run_id(ws.root)
    code, out, err = _cli(ws, "node", "log", n1.name, "--json")
    assert code == 0, err
    (entry,) = json.loads(out)
    assert (entry["id"], entry["holder"], entry["state"]) == (first, first, "confirmed")
    assert (entry["decision"], entry["reason"], entry["generation"]) == ("confirm", None, gen)
    assert entry["system"] == n1.current_system()

    # The new system refuses new SSH logins: the confirmation (always over a new connection)
    # never arrives, and the node's own timer rolls back.
    n1.set_fault(Fault.REFUSE_SSH)
    code, _, report, _ = ws.deploy("--all")
    assert code == 4, report
    second = _run_id(ws.root)
    code, out, err = _cli(ws, "node", "log", n1.name, "--json")
    assert code == 0, err
    newest, older = json.loads(out)
    assert (newest["id"], older["id"]) == (second, first)
    assert newest["state"] == "rolled-back" and newest["decision"] == "rollback"
    timer = f"no confirmation within {CONFIRM}s"  # no app, no probe budget: the window
    assert newest["reason"] == timer  # the node's timer decided, not the operator
    assert newest["previous"] == entry["system"] and newest["generation"] is None
    assert [t["state"] for t in newest["journal"]][-2:] == ["rolling-back", "rolled-back"]
    assert "dead-man timer: no confirmation within" in newest["log_tail"]

    code, out, err = _cli(ws, "node", "log", n1.name, "--limit", "1")
    assert code == 0, err
    header, row = out.splitlines()[:2]
    assert header.split() == ["DEPLOY", "STARTED", "STATE", "GEN", "HOLDER", "DECISION"]
    assert row.split()[0] == second and "rolled-back" in row
    assert f"rollback: {timer}" in row
    assert len(out.splitlines()) == 2


def test_an_agent_without_history_and_bad_input(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1])
    old = tmp_path / "xnode-activate-old"  # this agent without its `history` line
    old.write_text(
        "".join(ln for ln in HELPER.read_text().splitlines(True) if 'cmd_history "$@"' not in ln)
    )
    n1.install_helper(old)
    code, out, err = _cli(ws, "node", "log", n1.name)
    assert (code, out) == (5, "")
    assert err.splitlines() == [
        f"error: node '{n1.name}': xnode-activate history: this node's agent has no `history` "
        "command (hint: the node's agent predates this xnodectl: deploy to the node with it "
        "(XnodeOS builds its agent from the deploy), then ask again)"
    ]
    code, out, err = _cli(ws, "node", "log", "nope")
    assert code == 2 and out == "" and err.startswith("error: ") and len(err.splitlines()) == 1
    code, _, err = _cli(ws, "node", "log", n1.name, "--limit", "0")
    assert code == 2 and err.startswith("error: Invalid value for '--limit'")
    n1.stop()
    code, out, err = _cli(ws, "node", "log", n1.name)
    assert code == 6 and out == "" and len(err.splitlines()) == 1, err
