"""The node agent's state machine under the faults a real node meets (issue 11): slow apps, a
wall clock that steps, the agent killed at every state write, the rollback target collected,
units that fail after the switch, a boot loader that fails. Real test Xnodes, the real agent;
systems are stand-ins (tests/standin.py), not NixOS.

Each test asserts the node's current system, profile generation, deploy state and lock.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests import test_node_agent as base
from tests.test_node_agent import begin, helper, push, wait_until
from tests.xnodes import Fault, Node

# the fixtures of the node-agent suite: a node on v1 (generation 1) and the v1..v3 systems
node = base.node
systems = base.systems

STATE = "/var/lib/xnode/deploy"


def state(node: Node, deploy_id: str) -> str:
    return node.local(f"cat {STATE}/{deploy_id}/state").stdout.strip()


def etc(node: Node, name: str) -> Path:
    """A node fact file (/etc/xnode/NAME), written from the host side."""
    return node.workdir / "etc-xnode" / name


def activated(node: Node, deploy_id: str) -> None:
    out = helper(node, "wait", "--deploy-id", deploy_id, "--timeout", "10")
    assert out == {"state": "activated"}, out


def settled_on(node: Node, system: str, generation: int) -> None:
    assert (node.current_system(), node.generation()) == (system, generation)
    info = helper(node, "info")
    assert info["active"] is None and info["lock"] is None, info


def test_probe_budget_extends_the_dead_man_timer(node: Node, systems: list[str]) -> None:
    """Probes may take their budget; the node's timer covers budget + confirm window, so a slow
    but healthy app is confirmed (before: the timer fired at the window, under the probes)."""
    v1, v2 = systems[0], systems[1]
    begin(node, v2, "slow", "--probe-budget", "4", confirm=2)
    activated(node, "slow")
    armed = time.monotonic()
    time.sleep(3)  # past the 2 s window: the old agent had rolled back here
    assert state(node, "slow") == "activated" and node.current_system() == v2
    assert helper(node, "confirm", "--deploy-id", "slow") == {"generation": 2}
    settled_on(node, v2, 2)
    # Unconfirmed, the timer fires at budget + window, never before.
    begin(node, v1, "slow-2", "--probe-budget", "3", confirm=2)
    activated(node, "slow-2")
    armed = time.monotonic()
    took = wait_until(lambda: state(node, "slow-2") == "rolled-back", 10)
    assert 5 - 0.5 <= time.monotonic() - armed <= 5 + 5, took
    settled_on(node, v2, 2)


@pytest.mark.parametrize("step", [-3600, 3600])
def test_wall_clock_steps_do_not_move_the_timer(node: Node, systems: list[str], step: int) -> None:
    """NTP steps the wall clock by an hour after activation: the timer fires at its window."""
    v1, v2 = systems[0], systems[1]
    begin(node, v2, "clock", confirm=3)
    activated(node, "clock")
    armed = time.monotonic()
    etc(node, "wall-clock-offset").write_text(f"{step}\n")
    wait_until(lambda: state(node, "clock") == "rolled-back", 3 + 5)
    assert time.monotonic() - armed >= 3 - 0.3  # not early on a forward step
    settled_on(node, v1, 1)
    log = node.local(f"cat {STATE}/clock/log").stdout
    assert "no confirmation within 3s" in log


def test_lock_age_follows_the_boot_clock_not_the_wall(node: Node) -> None:
    """A lock taken while the clock ran 30 days fast goes stale on time once it is corrected."""
    etc(node, "wall-clock-offset").write_text(f"{30 * 86400}\n")
    assert helper(node, "lock", "--holder", "fast")["holder"] == "fast"
    etc(node, "wall-clock-offset").write_text("0\n")
    out = helper(node, "lock", "--holder", "late", "--stale-after", "2", expect=3)
    assert out["error"] == "locked" and out["holder"] == "fast"
    time.sleep(3.2)  # stale = MORE than 2 whole seconds without a heartbeat
    assert helper(node, "lock", "--holder", "late", "--stale-after", "2")["took_over"] == "fast"
    etc(node, "wall-clock-offset").write_text(f"{-30 * 86400}\n")  # and a backward step
    assert helper(node, "info")["lock"]["age"] <= 1
    time.sleep(3.2)
    assert helper(node, "lock", "--holder", "third", "--stale-after", "2")["took_over"] == "late"


def test_a_pending_activation_keeps_its_lock_past_stale_after(
    node: Node, systems: list[str]
) -> None:
    """The lock of a deploy whose activation is still pending (here: probes under a long budget)
    is not stale however long since its last heartbeat; it is released once the deploy settled."""
    v2 = systems[1]
    assert helper(node, "lock", "--holder", "pending")["holder"] == "pending"
    begin(node, v2, "pending", "--probe-budget", "30", confirm=30)
    activated(node, "pending")
    time.sleep(3.2)  # more than 2 whole seconds without a heartbeat
    out = helper(node, "lock", "--holder", "other", "--stale-after", "2", expect=3)
    assert out["error"] == "locked" and out["holder"] == "pending", out
    assert helper(node, "confirm", "--deploy-id", "pending") == {"generation": 2}
    settled_on(node, v2, 2)  # settled: the lock went with it
    assert helper(node, "lock", "--holder", "other")["took_over"] is None


def test_supervisor_killed_after_activation_is_completed_by_the_next_call(
    node: Node, systems: list[str]
) -> None:
    """The process that was to decide dies: the next agent call after the deadline rolls back
    (before: the node stayed on the new, unconfirmed system with no timer)."""
    v1, v2 = systems[0], systems[1]
    begin(node, v2, "orphan", confirm=2)
    activated(node, "orphan")
    pid = node.local(f"cat {STATE}/orphan/supervisor.pid").stdout.strip()
    node.local(f"kill -KILL {pid}")
    assert state(node, "orphan") == "activated" and node.current_system() == v2
    time.sleep(2.5)
    info = helper(node, "info")  # any call completes the pending decision
    assert info["active"] is None and info["current"] == v1
    assert state(node, "orphan") == "rolled-back"
    assert "supervisor died" in node.local(f"readlink {STATE}/orphan/decision").stdout
    # A timely confirm still wins when only the timer died.
    begin(node, v2, "orphan-2", confirm=5)
    activated(node, "orphan-2")
    pid = node.local(f"cat {STATE}/orphan-2/supervisor.pid").stdout.strip()
    node.local(f"kill -KILL {pid}")
    assert helper(node, "confirm", "--deploy-id", "orphan-2") == {"generation": 2}
    settled_on(node, v2, 2)


# Every journal write, on the path that writes it: killed right after the write, before acting.
CRASH_POINTS = [
    ("starting", "confirm"), ("activating", "confirm"), ("activated", "confirm"),
    ("decided-confirm", "confirm"), ("confirming", "confirm"), ("confirmed", "confirm"),
    ("activated", "timer"), ("decided-rollback", "abort"), ("rolling-back", "abort"),
    ("rolled-back", "abort"), ("rolling-back", "timer"), ("rolled-back", "timer"),
    ("decided-rollback", "fails"), ("rolling-back", "fails"), ("failed", "fails"),
]  # fmt: skip


@pytest.mark.parametrize(("point", "path"), CRASH_POINTS)
def test_killed_at_every_state_write(node: Node, systems: list[str], point: str, path: str) -> None:
    """The agent process that writes `point` is SIGKILLed right after writing it; a later agent
    call completes the decision: the node ends on ONE system that is also its boot default (or
    on its old one with the profile unmoved), with no pending deploy and no lock of it left."""
    v1, v2 = systems[0], systems[1]
    if path == "fails":
        node.set_fault(Fault.ACTIVATION_FAILS, system=v2)
    helper(node, "lock", "--holder", "crash")
    etc(node, "test-crash-at").write_text(point + "\n")
    code, _ = node.activate_helper(
        "begin", "--system", v2, "--deploy-id", "crash", "--confirm-timeout", "2"
    )
    if point == "starting":
        assert code != 0  # begin itself died: nothing was activated
        time.sleep(0.5)
        assert node.current_system() == v1
    else:
        deadline = time.monotonic() + 15
        while (  # until activated, or until the process writing the crash point died
            state(node, "crash") in ("", "starting", "activating")
            and etc(node, "test-crash-at").exists()
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        if path == "confirm":
            node.activate_helper("confirm", "--deploy-id", "crash")
        elif path == "abort":
            node.activate_helper("abort", "--deploy-id", "crash", "--reason", "probe failed")
        time.sleep(3)  # past the 2 s window: a dead timer's deadline has passed
    assert not etc(node, "test-crash-at").exists(), f"crash point {point} never reached"
    info = helper(node, "info")  # the next call: recovery completes what the dead process left
    assert info["active"] is None, (point, path, info)
    final = state(node, "crash")
    if path == "confirm" and point not in ("starting", "activating"):
        assert final == "confirmed", (point, final)
        assert (node.current_system(), node.generation(), node.boot_system()) == (v2, 2, v2)
    elif point == "starting":
        assert (node.current_system(), node.generation()) == (v1, 1)
    else:
        assert final in ("rolled-back", "failed"), (point, path, final)
        assert (node.current_system(), node.generation(), node.boot_system()) == (v1, 1, v1)
    if point == "starting":  # no deploy began: the lock is its living operator's to release
        assert helper(node, "unlock", "--holder", "crash") == {"unlocked": True}
    else:
        assert info["lock"] is None  # the deploy's own lock went with its outcome
    assert helper(node, "lock", "--holder", "next")["holder"] == "next"


def test_previous_system_survives_gc_while_pending_and_the_copy_is_rooted(
    node: Node, systems: list[str]
) -> None:
    """The running system is in no profile (activated by hand): a GC during the pending deploy
    must not take it (before: nothing rooted it), nor the new system, nor a pinned copy."""
    _v1, v2, v3 = systems
    node.local(f"{v2}/bin/switch-to-configuration test")
    assert node.current_system() == v2 and node.generation() == 1
    begin(node, v3, "gc", confirm=30)
    activated(node, "gc")
    assert node.local("nix-store --gc").ok
    assert node.has_path(v2) and node.has_path(v3)
    out = helper(node, "abort", "--deploy-id", "gc", "--reason", "probe failed")
    assert out["rolled_back"] is True and "fallback" not in out
    assert (node.current_system(), node.generation()) == (v2, 1)


def test_rollback_falls_back_to_the_newest_good_generation_when_previous_is_gone(
    node: Node, systems: list[str]
) -> None:
    v1, v2, v3 = systems
    node.local(f"{v2}/bin/switch-to-configuration test")
    begin(node, v3, "gone", confirm=30)
    activated(node, "gone")
    node.local(f"rm -f /nix/var/nix/gcroots/xnode-deploy/previous-gone && "
               f"nix-store --delete --ignore-liveness {v2}")  # fmt: skip
    assert not node.has_path(v2)
    out = helper(node, "abort", "--deploy-id", "gone", "--reason", "probe failed")
    assert out["rolled_back"] is True and "fell back to generation 1" in out["fallback"]
    settled_on(node, v1, 1)


def test_switch_that_switches_then_exits_non_zero_is_rolled_back(
    node: Node, systems: list[str]
) -> None:
    v1, v2 = systems[0], systems[1]
    node.set_fault(Fault.SWITCH_THEN_FAILS, system=v2)
    begin(node, v2, "units")
    out = helper(node, "wait", "--deploy-id", "units", "--timeout", "10")
    assert out["state"] == "failed" and out["exit_code"] == 4 and out["rolled_back"] is True
    assert "units failed" in str(out["log_tail"])
    settled_on(node, v1, 1)


def test_boot_that_fails_at_confirm_says_the_profile_moved(node: Node, systems: list[str]) -> None:
    v2 = systems[1]
    begin(node, v2, "noboot")
    activated(node, "noboot")
    node.set_fault(Fault.BOOT_FAILS)
    out = helper(node, "confirm", "--deploy-id", "noboot", expect=1)
    assert out["state"] == "confirmed" and out["generation"] == 2 and out["boot_entry"] is False
    assert (node.current_system(), node.generation()) == (v2, 2)


def test_the_deploys_lock_is_released_when_the_node_settled(node: Node, systems: list[str]) -> None:
    """The operator died after `begin`: the node's own rollback releases its lock."""
    v1, v2 = systems[0], systems[1]
    helper(node, "lock", "--holder", "gone-operator")
    begin(node, v2, "gone-operator", confirm=2)
    activated(node, "gone-operator")
    assert helper(node, "info")["lock"]["holder"] == "gone-operator"
    wait_until(lambda: state(node, "gone-operator") == "rolled-back", 2 + 5)
    settled_on(node, v1, 1)


def test_pin_roots_a_closure_before_it_arrives(node: Node, systems: list[str]) -> None:
    v3 = systems[2]
    node.local(f"nix-store --delete {v3}")
    assert not node.has_path(v3)
    helper(node, "pin", "--system", v3)
    push(node, v3)
    assert node.local("nix-store --gc").ok and node.has_path(v3)
    begin(node, v3, "pinned")
    assert not node.local(f"ls /nix/var/nix/gcroots/xnode-deploy/pinned-{v3.split('/')[-1]}").ok
    activated(node, "pinned")
    assert node.local("nix-store --gc").ok and node.has_path(v3)


def test_a_state_that_cannot_be_written_is_said_so(node: Node, systems: list[str]) -> None:
    """Before: reported as "deploy id was used already" (and by the engine as unreachable)."""
    v2 = systems[1]
    node.local("touch /var/lib/xnode-test/not-a-dir")
    out = node.local(
        "XNODE_DEPLOY_STATE=/var/lib/xnode-test/not-a-dir "
        f"xnode-activate begin --system {v2} --deploy-id nowhere --confirm-timeout 30"
    )
    assert out.returncode == 1 and "cannot create the deploy's state directory" in out.stdout
    assert node.current_system() == systems[0]
