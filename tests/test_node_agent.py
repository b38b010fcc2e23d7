"""xnode-activate (the node side of the deploy engine) driven over real SSH on real test Xnodes.

Systems are stand-in closures from tests/standin.py (not NixOS); the figures printed are measured
against them on loopback.
"""

from __future__ import annotations

import datetime
import json
import random
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import XnodeFactory
from tests.standin import StandinFlake
from tests.xnodes import HELPER, Fault, Node
from xnodectl import process

CONFIRM = 2  # seconds: the dead-man timer of the tests about it (the others use 30)


@pytest.fixture(scope="module")
def systems(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Three stand-in system generations (v1, v2, v3) with a health endpoint."""
    flake = StandinFlake(tmp_path_factory.mktemp("standin") / "flake", ["any"], health=True)
    flake.write()
    built = []
    for version in ("1", "2", "3"):
        flake.configure(version=version)
        built.append(flake.build())
    yield built


def push(node: Node, *paths: str) -> None:
    process.run(["nix", "copy", "--to", node.store_uri, *paths], env=node.nix_env())


def helper(node: Node, *args: str, expect: int = 0) -> dict[str, Any]:  # JSON from the node
    code, out = node.activate_helper(*args)
    assert code == expect, (args, code, out)
    return out


def begin(
    node: Node, system: str, deploy_id: str, *extra: str, confirm: int | None = 30, expect: int = 0
) -> dict[str, Any]:
    """`begin`; confirm=None leaves --confirm-timeout out (the node's default applies)."""
    timeout = ["--confirm-timeout", str(confirm)] if confirm is not None else []
    return helper(node, "begin", "--system", system, "--deploy-id", deploy_id,
                  *timeout, *extra, expect=expect)  # fmt: skip


def deploy(node: Node, system: str, deploy_id: str) -> int:
    """A full, successful two-phase deploy; returns the new generation."""
    begin(node, system, deploy_id)
    assert helper(node, "wait", "--deploy-id", deploy_id, "--timeout", "10") == {
        "state": "activated"
    }
    generation = helper(node, "confirm", "--deploy-id", deploy_id)["generation"]
    assert isinstance(generation, int)
    return generation


def log_time(log: str, marker: str) -> float:
    """Seconds since the epoch of the first deploy-log line containing `marker`."""
    line = next(line for line in log.splitlines() if marker in line)
    stamp = datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
    return stamp.replace(tzinfo=datetime.UTC).timestamp()


def wait_until(check: object, seconds: float) -> float:
    """Poll `check()` until true; returns the seconds it took (fails the test after `seconds`)."""
    assert callable(check)
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, "condition not reached in time"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def node(xnode_factory: XnodeFactory, systems: list[str]) -> Node:
    """A node running v1 as generation 1, deployed through the helper itself.

    Set up inside the node's namespace (no SSH round trips) to keep the suite fast; the tests
    themselves drive the helper over SSH.
    """
    (fresh,) = xnode_factory(1)
    push(fresh, *systems)
    setup = fresh.local(
        f"xnode-activate begin --system {systems[0]} --deploy-id initial --confirm-timeout 30 && "
        "xnode-activate wait --deploy-id initial --timeout 10 && "
        "xnode-activate confirm --deploy-id initial"
    )
    assert setup.ok and fresh.generation() == 1, setup.stdout
    return fresh


def test_happy_two_phase(node: Node, systems: list[str], tmp_path: Path) -> None:
    v1, v2 = systems[0], systems[1]
    assert helper(node, "lock", "--holder", "op-1")["took_over"] is None
    assert begin(node, v2, "happy") == {"deploy_id": "happy", "previous": v1}
    assert helper(node, "wait", "--deploy-id", "happy", "--timeout", "10")["state"] == "activated"
    # Running the new system, but the boot default has not moved yet.
    assert node.current_system() == v2
    assert (node.generation(), node.boot_system()) == (1, v1)
    probes = [
        {"kind": "http", "target": f"http://127.0.0.1:{node.health_port}/", "timeout": 5},
        {"kind": "tcp", "target": f"127.0.0.1:{node.health_port}", "timeout": 5},
    ]
    node.put("/tmp/probes.json", json.dumps(probes))
    result = helper(node, "probe", "--file", "/tmp/probes.json")
    assert result["ok"] is True and len(result["results"]) == 2
    assert helper(node, "confirm", "--deploy-id", "happy") == {"generation": 2}
    assert (node.generation(), node.boot_system(), node.current_system()) == (2, v2, v2)
    assert node.activations()[-2:] == [f"activating {v2} test", f"activating {v2} boot"]
    # A retried confirm (lost connection) gets the same answer; the deploy is no longer active.
    assert helper(node, "confirm", "--deploy-id", "happy") == {"generation": 2}
    info = helper(node, "info")
    assert info["generation"] == 2 and info["active"] is None and info["current"] == v2
    assert info["lock"] == {
        "holder": "op-1",
        "since": info["lock"]["since"],
        "seen": info["lock"]["seen"],
        "age": info["lock"]["age"],
    }
    assert 0 <= info["lock"]["age"] < 60  # seconds on the boot clock since its last heartbeat
    assert helper(node, "unlock", "--holder", "op-1") == {"unlocked": True}
    log = node.local("cat /var/lib/xnode/deploy/happy/log").stdout
    assert "dead-man timer armed" in log and "is the boot default" in log


def test_activation_failure_reported_with_log_and_rolled_back(
    node: Node, systems: list[str]
) -> None:
    v1, v2 = systems[0], systems[1]
    node.set_fault(Fault.ACTIVATION_FAILS, system=v2)
    started = time.monotonic()
    begin(node, v2, "fails")
    out = helper(node, "wait", "--deploy-id", "fails", "--timeout", "10")
    seconds = time.monotonic() - started
    print(f"\n[stand-in] activation failure reported {seconds:.2f} s after begin")
    assert seconds < 5
    assert out["state"] == "failed" and out["exit_code"] == 4 and out["rolled_back"] is True
    assert "injected fault" in str(out["log_tail"])
    assert (node.current_system(), node.generation()) == (v1, 1)
    helper(node, "confirm", "--deploy-id", "fails", expect=1)


def test_activation_hang_times_out_and_dead_man_rolls_back(node: Node, systems: list[str]) -> None:
    v1, v2 = systems[0], systems[1]
    node.set_fault(Fault.ACTIVATION_HANGS, system=v2)
    begin(node, v2, "hangs", "--activation-timeout", "2")
    out = helper(node, "wait", "--deploy-id", "hangs", "--timeout", "1", expect=5)
    assert out["error"] == "timeout" and out["state"] == "activating"
    assert "hanging" in str(out["log_tail"])
    out = helper(node, "wait", "--deploy-id", "hangs", "--timeout", "10")
    assert out["state"] == "failed" and "timed out after 2s" in str(out["reason"])
    assert (node.current_system(), node.generation()) == (v1, 1)
    assert not [cmd for cmd in node.namespace_commands() if "2147483647" in cmd]  # was killed


def test_no_confirm_rolls_back_within_window(node: Node, systems: list[str]) -> None:
    v1, v2 = systems[0], systems[1]
    begin(node, v2, "unconfirmed", confirm=CONFIRM)
    assert helper(node, "wait", "--deploy-id", "unconfirmed", "--timeout", "10")["state"] == (
        "activated"
    )
    state = "cat /var/lib/xnode/deploy/unconfirmed/state"
    seconds = wait_until(lambda: node.local(state).stdout.strip() == "rolled-back", CONFIRM + 5)
    assert node.current_system() == v1
    # The node's own log times the timer: armed when activation ended, never fired early.
    log = node.local("cat /var/lib/xnode/deploy/unconfirmed/log").stdout
    armed, fired, done = (log_time(log, marker) for marker in
                          ("timer armed", "no confirmation within", "re-activated"))  # fmt: skip
    print(
        f"\n[stand-in] rollback done {done - armed:.2f} s after the activation ended "
        f"(window {CONFIRM} s); the operator saw it {seconds:.2f} s after `wait` returned"
    )
    assert CONFIRM <= fired - armed < CONFIRM + 1
    assert done - armed <= CONFIRM + 5
    out = helper(node, "wait", "--deploy-id", "unconfirmed", "--timeout", "5")
    assert out == {"state": "rolled-back", "reason": f"no confirmation within {CONFIRM}s",
                   "rolled_back": True}  # fmt: skip
    assert "too late" in str(helper(node, "confirm", "--deploy-id", "unconfirmed", expect=1))
    assert node.generation() == 1


def test_refused_new_connections_roll_back(node: Node, systems: list[str]) -> None:
    """The new system breaks SSH logins: the confirmation can't arrive, the node heals itself."""
    v1, v2 = systems[0], systems[1]
    node.set_fault(Fault.REFUSE_SSH, system=v2)
    # The node's own default timer (modules/deploy-agent.nix writes this file) applies.
    (node.workdir / "etc-xnode" / "deploy-confirm-timeout").write_text(f"{CONFIRM}\n")
    assert helper(node, "info")["confirm_timeout"] == CONFIRM
    begin(node, v2, "nossh", confirm=None)
    time.sleep(0.5)
    assert (
        "Permission denied"
        in node.run(["xnode-activate", "confirm", "--deploy-id", "nossh"]).stderr
    )
    wait_until(lambda: node.current_system() == v1, CONFIRM + 5)
    assert helper(node, "wait", "--deploy-id", "nossh", "--timeout", "5")["state"] == "rolled-back"
    assert node.generation() == 1


def test_confirm_after_session_killed_mid_activation(node: Node, systems: list[str]) -> None:
    v2 = systems[1]
    node.set_fault(Fault.ACTIVATION_SLOW, system=v2)
    session = process.spawn(node.ssh_argv(
        f"xnode-activate begin --system {v2} --deploy-id cut --confirm-timeout 10 && "
        "xnode-activate wait --deploy-id cut --timeout 30"))  # fmt: skip
    wait_until(lambda: "activating " + v2 + " test" in node.activations(), 5)
    node.kill_sessions()
    session.wait(timeout=5)
    assert node.current_system() != v2  # still mid-activation when the session died
    out = helper(node, "wait", "--deploy-id", "cut", "--timeout", "10")
    assert out == {"state": "activated"}
    assert helper(node, "confirm", "--deploy-id", "cut") == {"generation": 2}
    assert (node.current_system(), node.boot_system()) == (v2, v2)


def test_session_killed_mid_confirm_still_confirms(node: Node, systems: list[str]) -> None:
    """The connection drops while `confirm` writes the boot entry: confirm still completes."""
    v2 = systems[1]
    begin(node, v2, "cut-confirm")
    helper(node, "wait", "--deploy-id", "cut-confirm", "--timeout", "10")
    node.set_fault(Fault.BOOT_SLOW)
    session = process.spawn(node.ssh_argv("xnode-activate confirm --deploy-id cut-confirm"))
    wait_until(lambda: f"activating {v2} boot" in node.activations(), 5)
    node.kill_sessions()
    session.wait(timeout=5)
    assert node.generation() == 2  # the profile was set before the boot entry
    wait_until(lambda: "is the boot default" in node.local(
        "cat /var/lib/xnode/deploy/cut-confirm/log").stdout, 5)  # fmt: skip
    assert helper(node, "confirm", "--deploy-id", "cut-confirm") == {"generation": 2}
    assert (node.current_system(), node.boot_system()) == (v2, v2)


def test_confirm_killed_half_way_is_resumed(node: Node, systems: list[str]) -> None:
    """kill -9 of `confirm` after the profile moved: a retried confirm finishes the job once."""
    v2 = systems[1]
    begin(node, v2, "resume")
    helper(node, "wait", "--deploy-id", "resume", "--timeout", "10")
    node.set_fault(Fault.BOOT_SLOW)
    session = process.spawn(node.ssh_argv("xnode-activate confirm --deploy-id resume"))
    wait_until(lambda: f"activating {v2} boot" in node.activations(), 5)
    pid = node.local("cat /var/lib/xnode/deploy/resume/confirm.pid").stdout.strip()
    # confirm first (so it cannot react to its child's death), then the `boot` it was running
    node.local(f"kids=$(pgrep -P {pid}); kill -KILL {pid}; kill -KILL $kids")
    session.wait(timeout=5)
    assert node.local("cat /var/lib/xnode/deploy/resume/state").stdout.strip() == "confirming"
    assert helper(node, "confirm", "--deploy-id", "resume") == {"generation": 2}
    assert node.activations()[-2:] == [f"activating {v2} boot"] * 2  # boot entry written again
    assert len(helper(node, "generations")["generations"]) == 2  # no extra generation
    assert helper(node, "info")["active"] is None


def test_chained_confirm_records_the_process_doing_the_work(node: Node, systems: list[str]) -> None:
    """The engine sends `chain 3 confirm ... 3 unlock ...`: confirm runs in a subshell, and the
    pid it records (for a retried confirm to wait on) must be that subshell's, not its parent's."""
    v2 = systems[1]
    begin(node, v2, "chained")
    helper(node, "wait", "--deploy-id", "chained", "--timeout", "10")
    node.set_fault(Fault.BOOT_SLOW)
    session = process.spawn(
        node.ssh_argv("xnode-activate chain 3 confirm --deploy-id chained 1 version")
    )
    wait_until(lambda: f"activating {v2} boot" in node.activations(), 5)
    pid = node.local("cat /var/lib/xnode/deploy/chained/confirm.pid").stdout.strip()
    children = node.local(f"pgrep -P {pid} -f switch-to-configuration").stdout.split()
    assert children, "confirm.pid is not the process running `switch-to-configuration boot`"
    session.wait(timeout=30)  # boot takes 2 s under the fault
    node.clear_faults()
    assert helper(node, "confirm", "--deploy-id", "chained") == {"generation": 2}


def test_abort_after_failed_health_probe(node: Node, systems: list[str]) -> None:
    v1, v2 = systems[0], systems[1]
    node.set_fault(Fault.HEALTH_FAILS, system=v2)
    begin(node, v2, "unhealthy")
    helper(node, "wait", "--deploy-id", "unhealthy", "--timeout", "10")
    probes = [{"kind": "http", "target": f"http://127.0.0.1:{node.health_port}/", "timeout": 1}]
    node.put("/tmp/probes.json", json.dumps(probes))
    result = helper(node, "probe", "--file", "/tmp/probes.json", expect=1)
    assert result["ok"] is False and "HTTP 500" in json.dumps(result)
    out = helper(node, "abort", "--deploy-id", "unhealthy", "--reason", "health probe failed")
    assert out == {"state": "rolled-back", "reason": "health probe failed", "rolled_back": True}
    assert (node.current_system(), node.generation()) == (v1, 1)
    healthy = process.run(["curl", "-s", f"http://127.0.0.1:{node.health_port}/"], check=False)
    assert healthy.stdout.startswith(f"ok {v1}")
    # Aborting again is harmless; aborting a confirmed deploy is refused.
    helper(node, "abort", "--deploy-id", "unhealthy", "--reason", "again")
    helper(node, "abort", "--deploy-id", "initial", "--reason", "x", expect=1)


def test_lock_contention_and_stale_takeover(node: Node, systems: list[str]) -> None:
    assert helper(node, "lock", "--holder", "a")["took_over"] is None
    refused = helper(node, "lock", "--holder", "b", expect=3)
    assert refused["error"] == "locked" and refused["holder"] == "a"
    helper(node, "unlock", "--holder", "b", expect=3)
    time.sleep(1.1)
    assert helper(node, "lock", "--holder", "c", "--stale-after", "0")["took_over"] == "a"
    # A second deploy while one is in flight is refused, lock or not.
    begin(node, systems[1], "first")
    assert begin(node, systems[2], "second", expect=3) == {"error": "busy", "deploy_id": "first"}
    helper(node, "abort", "--deploy-id", "first", "--reason", "test over")


def test_generations_and_rollback(node: Node, systems: list[str]) -> None:
    v1, v2, v3 = systems
    assert deploy(node, v2, "to-v2") == 2
    assert deploy(node, v3, "to-v3") == 3
    gens = helper(node, "generations")["generations"]
    assert [(g["number"], g["path"], g["current"]) for g in gens] == [
        (1, v1, False), (2, v2, False), (3, v3, True)]  # fmt: skip
    assert helper(node, "rollback") == {"generation": 2, "path": v2, "from": 3}
    assert (node.current_system(), node.generation()) == (v2, 2)
    assert helper(node, "rollback", "--to", "1")["path"] == v1
    assert (node.current_system(), node.boot_system()) == (v1, v1)
    assert helper(node, "rollback", "--to", "9", expect=1)["error"] == "no generation 9"
    assert node.activations()[-1] == f"activating {v1} switch"


def test_full_store_reported(xnode_factory: XnodeFactory) -> None:
    (small,) = xnode_factory(1, store_size="32m")
    assert helper(small, "info")["store_free_bytes"] > 16 * 1024 * 1024
    small.fill_store(leave_bytes=100 * 1024)
    assert helper(small, "info")["store_free_bytes"] <= 100 * 1024


VERIFIER = """#!/bin/sh
echo "$@" >> /var/lib/xnode-test/verifier-calls
echo "checking signature" >&2
[ -e /var/lib/xnode-test/accept ] && exit 0
echo "signature is not the owner's" >&2
exit 1
"""


def test_signed_deploys_refuse_before_any_change(node: Node, systems: list[str]) -> None:
    """A stand-in verifier (the real one is the wallet's xnode-verify-manifest)."""
    v1, v2 = systems[0], systems[1]
    verifier = node.workdir / "xnode-test" / "bin" / "fake-verifier"
    verifier.write_text(VERIFIER)
    verifier.chmod(0o755)
    (node.workdir / "etc-xnode" / "verify-manifest-cmd").write_text("fake-verifier\n")
    (node.workdir / "etc-xnode" / "require-signed-deploys").touch()
    assert helper(node, "info")["signed_deploys"] is True
    before = node.activations()
    out = begin(node, v2, "unsigned", expect=4)
    assert "requires owner-signed deploys" in str(out["error"])
    node.put("/tmp/manifest.json", json.dumps({"manifest": {}, "signature": "0x", "address": "0x"}))
    out = begin(node, v2, "forged", "--manifest", "/tmp/manifest.json", expect=4)
    assert out == {"error": "refused: signature is not the owner's"}
    assert node.activations() == before and node.current_system() == v1
    assert not node.local("test -e /var/lib/xnode/deploy/forged").ok
    (node.workdir / "xnode-test" / "accept").touch()
    begin(node, v2, "signed", "--manifest", "/tmp/manifest.json")
    calls = (node.workdir / "xnode-test" / "verifier-calls").read_text().splitlines()
    assert (
        calls[-1]
        == f"--manifest /tmp/manifest.json --system {v2} --node {node.name} --previous {v1}"
    )
    assert helper(node, "wait", "--deploy-id", "signed", "--timeout", "10")["state"] == "activated"


def test_uploaded_helper_runs_without_install(node: Node, systems: list[str]) -> None:
    """The engine may upload the script to a node that lacks it and run it with bash."""
    node.local("rm /var/lib/xnode-test/bin/xnode-activate")
    assert node.run("command -v xnode-activate").returncode != 0
    node.put("/tmp/xa", HELPER.read_text(), mode="0700")
    assert node.activate_helper("info")[0] != 0
    run = node.run(["bash", "/tmp/xa", "begin", "--system", systems[1], "--deploy-id", "up",
                    "--confirm-timeout", "30"])  # fmt: skip
    assert run.ok, run.stderr
    waited = node.run(["bash", "/tmp/xa", "wait", "--deploy-id", "up", "--timeout", "10"])
    assert json.loads(waited.stdout) == {"state": "activated"}
    confirmed = node.run(["bash", "/tmp/xa", "confirm", "--deploy-id", "up"])
    assert json.loads(confirmed.stdout) == {"generation": 2}


def test_reboot_before_confirm_boots_the_old_generation(node: Node, systems: list[str]) -> None:
    """Power loss mid-deploy: the boot default never moved, so the old system comes back."""
    v1, v2 = systems[0], systems[1]
    begin(node, v2, "reboot")
    assert helper(node, "wait", "--deploy-id", "reboot", "--timeout", "10")["state"] == "activated"
    node.reboot()
    assert (node.current_system(), node.generation()) == (v1, 1)
    assert node.activations()[-1] == f"activating {v1} boot-up"
    out = helper(node, "wait", "--deploy-id", "reboot", "--timeout", "5")
    assert out["state"] == "interrupted" and v1 in out["reason"]
    assert "interrupted" in helper(node, "confirm", "--deploy-id", "reboot", expect=1)["error"]
    assert helper(node, "info")["active"] is None
    assert deploy(node, v2, "after-reboot") == 2  # the interrupted deploy does not block


def test_probe_fallbacks_on_bare_nodes(node: Node) -> None:
    """Probes work with python3/jq/curl or, on a bare node, with nix eval and bash /dev/tcp."""
    probes = [
        {"kind": "http", "target": f"http://127.0.0.1:{node.health_port}/health", "timeout": 3},
        {"kind": "http", "target": f"http://127.0.0.1:{node.health_port}/", "status": 404,
         "timeout": 1},
        {"kind": "tcp", "target": f"127.0.0.1:{node.port}", "timeout": 2},
        {"kind": "systemd", "target": "sshd.service", "timeout": 1},
    ]  # fmt: skip
    node.put("/tmp/probes.json", json.dumps(probes))
    for without in ("", "curl python3", "curl python3 jq"):
        check_probes(node, without)


def check_probes(node: Node, without: str) -> None:
    run = node.run(
        f"XNODE_ACTIVATE_WITHOUT='{without}' xnode-activate probe --file /tmp/probes.json"
    )
    out = json.loads(run.stdout)
    assert run.returncode == 1 and out["ok"] is False, without
    assert [(r["kind"], r["ok"], r["detail"]) for r in out["results"]] == [
        ("http", True, "HTTP 200"),
        ("http", False, "HTTP 200"),  # wanted 404
        ("tcp", True, "connected"),
        ("systemd", False, "systemd is not running on this node"),  # as on test Xnodes
    ]


def test_concurrent_lock_has_one_winner(node: Node) -> None:
    contenders = [
        process.spawn(node.ssh_argv(["xnode-activate", "lock", "--holder", f"h{i}"]))
        for i in range(6)
    ]
    codes = [proc.wait(timeout=30) for proc in contenders]
    assert sorted(codes) == [0, 3, 3, 3, 3, 3]
    winner = f"h{codes.index(0)}"
    assert helper(node, "info")["lock"]["holder"] == winner


def test_lock_contenders_never_see_a_half_written_lock(tmp_path: Path) -> None:
    """Many rounds of 8 simultaneous `lock` calls on one state directory (the helper run locally,
    so contenders really overlap): exactly one winner each round, and no takeover. Without the
    lock guard a contender that found the winner's directory before its files judged it stale
    (no heartbeat yet) and took it over: 3 winners in some rounds."""
    for r in range(25):
        state = tmp_path / f"s{r}"
        env = {"XNODE_DEPLOY_STATE": str(state), "PATH": "/usr/bin:/bin"}
        contenders = [
            process.spawn(
                ["bash", str(HELPER), "lock", "--holder", f"h{i}"], env=env, stdout=process.PIPE
            )
            for i in range(8)
        ]
        results = [(proc.wait(timeout=60), proc.communicate()[0].decode()) for proc in contenders]
        winners = [json.loads(out) for code, out in results if code == 0]
        assert len(winners) == 1, (r, results)
        assert winners[0]["took_over"] is None
        assert (state / "lock" / "holder").read_text().strip() == winners[0]["holder"]


def test_log_timestamps_match_date() -> None:
    """The helper stamps its log lines without forking `date`: the civil date computed in bash
    must be date's, across leap days, centuries and the epoch."""
    epochs = [0, 951782400, 951868799, 1709164800, 4107542400, 946684799, 1795000000]
    epochs += [random.randrange(0, 4102444800) for _ in range(200)]
    script = (
        f"source {shlex.quote(str(HELPER))}; "
        'for e in "$@"; do stamp_at "$e.045678"; echo "$STAMP"; done'
    )
    ours = process.run(["bash", "-c", script, "bash", *map(str, epochs)]).stdout.split()
    dates = process.run(
        ["bash", "-c", 'for e in "$@"; do date -u -d "@$e" +%Y-%m-%dT%H:%M:%S.045Z; done', "bash",
         *map(str, epochs)]
    ).stdout.split()  # fmt: skip
    assert ours == dates


def test_chain_runs_commands_in_one_process_and_stops_at_the_first_failure() -> None:
    result = process.run(
        ["bash", str(HELPER), "chain", "1", "version", "2", "lock", "--bad", "1", "version"],
        check=False,
    )
    frames = [line for line in result.stdout.splitlines() if line.startswith("@@rc ")]
    assert result.returncode == 2 and frames == ["@@rc 0", "@@rc 2"]
    assert json.loads(result.stdout.splitlines()[0]) == {"version": 3}
    assert "unknown argument --bad" in result.stdout
    bad = process.run(["bash", str(HELPER), "chain", "3", "version"], check=False)
    assert bad.returncode == 2 and "bad command count" in bad.stdout
