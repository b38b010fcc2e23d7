"""`xnode-activate history`: the node's own audit log of its deploys, driven over real SSH on real
test Xnodes (systems are stand-ins from tests/standin.py, not NixOS). Every field of an entry is
asserted, for a confirmed deploy, one the node's own dead-man timer rolled back, and one begun
without the lock."""

from __future__ import annotations

import re
from typing import Any

from tests import test_node_agent as base
from tests.conftest import XnodeFactory
from tests.test_node_agent import CONFIRM, begin, helper, wait_until
from tests.xnodes import Node

node = base.node  # a node on v1 (generation 1, deploy "initial", begun without the lock)
systems = base.systems

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _journal(entry: dict[str, Any]) -> list[str]:
    """The states of an entry's journal, after checking each transition's boot-clock fields."""
    boots = {t["boot"] for t in entry["journal"]}
    assert len(boots) == 1 and next(iter(boots)), entry["journal"]  # all on this boot
    ups = [t["uptime_ms"] for t in entry["journal"]]
    assert all(isinstance(u, int) for u in ups) and ups == sorted(ups), ups
    return [t["state"] for t in entry["journal"]]


def test_a_node_without_deploys(xnode_factory: XnodeFactory) -> None:
    (fresh,) = xnode_factory(1)
    assert helper(fresh, "history") == {"node": fresh.name, "deploys": []}


def test_confirmed_and_timer_rolled_back_deploys(node: Node, systems: list[str]) -> None:
    v1, v2, v3 = systems
    helper(node, "lock", "--holder", "d-ok")
    begin(node, v2, "d-ok")
    assert helper(node, "wait", "--deploy-id", "d-ok", "--timeout", "10")["state"] == "activated"
    assert helper(node, "confirm", "--deploy-id", "d-ok") == {"generation": 2}
    # Nobody confirms the next one: the node's own timer rolls it back.
    helper(node, "lock", "--holder", "d-timer")
    begin(node, v3, "d-timer", confirm=CONFIRM)
    wait_until(lambda: helper(node, "info")["lock"] is None, CONFIRM + 10)
    assert node.current_system() == v2

    out = helper(node, "history")
    assert out["node"] == node.name
    timer, ok, initial = out["deploys"]  # newest first
    assert STAMP.match(timer.pop("started")) and STAMP.match(ok.pop("started"))
    assert _journal(timer) == ["starting", "activating", "activated", "rolling-back", "rolled-back"]
    assert "dead-man timer: no confirmation within 2s" in timer.pop("log_tail")
    assert {k: v for k, v in timer.items() if k != "journal"} == {
        "id": "d-timer", "holder": "d-timer", "system": v3, "previous": v2,
        "previous_generation": 2, "generation": None, "state": "rolled-back",
        "decision": "rollback", "reason": f"no confirmation within {CONFIRM}s", "fallback": None,
        "exit_code": 0, "rolled_back": True, "settled": True,
    }  # fmt: skip
    assert _journal(ok) == ["starting", "activating", "activated", "confirming", "confirmed"]
    assert "confirm: generation 2 is the boot default" in ok.pop("log_tail")
    assert {k: v for k, v in ok.items() if k != "journal"} == {
        "id": "d-ok", "holder": "d-ok", "system": v2, "previous": v1,
        "previous_generation": 1, "generation": 2, "state": "confirmed", "decision": "confirm",
        "reason": None, "fallback": None, "exit_code": 0, "rolled_back": False, "settled": True,
    }  # fmt: skip
    # Begun without the lock: the node has no evidence of a holder, and says so.
    assert (initial["id"], initial["holder"], initial["generation"]) == ("initial", None, 1)

    assert [d["id"] for d in helper(node, "history", "--limit", "1")["deploys"]] == ["d-timer"]
    for bad in (["--limit", "0"], ["--limit", "x"], ["--since", "1"]):
        assert "error" in helper(node, "history", *bad, expect=2)


def test_the_log_tail_is_bounded(node: Node) -> None:
    """A deploy whose log grew large (a chatty activation): the last 20 lines, at most 4000
    characters, ending with the log's last line."""
    lines = "".join(f"{i:04d} " + "x" * 300 + "\n" for i in range(100))
    node.put("/tmp/chatty", lines)
    assert node.local("cat /tmp/chatty >> /var/lib/xnode/deploy/initial/log").ok
    (entry,) = helper(node, "history")["deploys"]
    tail = entry["log_tail"]
    assert len(tail) <= 4000 and tail.endswith("0099 " + "x" * 300)
