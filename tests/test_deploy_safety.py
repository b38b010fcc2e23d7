"""The engine on realistic stand-ins (issue 11): an app healthy only after N seconds, one that
never gets healthy, the operator killed (SIGKILL) or stopped (SIGTERM, SIGHUP) mid-deploy, a boot
loader that fails at confirm, a first deploy on a fresh node that fails its probe. Real test
Xnodes, the real CLI; systems are stand-ins (tests/standin.py), not NixOS.

Each test asserts the node's current system, generation, lock, and the report.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests import test_deploy_nodes as base
from tests.test_deploy_nodes import (
    PROBE_MODULE,
    Ws,
    _deploy_v1,
    _read_until,
    _spawn_deploy,
    make_ws,
)
from tests.xnodes import NIX_CONF, Fault, Node
from xnodectl import process
from xnodectl.cli import app

CONFIRM = base.CONFIRM  # 3 s
catalogue = base.catalogue


def slow_template(timeout: int) -> str:
    """probe-web with a probe budget of `timeout` seconds (its template.toml says so)."""
    return base.PROBE_TEMPLATE.replace("timeout = 3", f"timeout = {timeout}")


@pytest.fixture
def budget_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    budget = 8
    root = tmp_path / "templates" / "probe-web"
    root.mkdir(parents=True)
    (root / "template.toml").write_text(slow_template(budget))
    (root / "module.nix.j2").write_text(PROBE_MODULE)
    monkeypatch.setenv("XNODECTL_TEMPLATES", str(root.parent))
    monkeypatch.setenv("NIX_CONFIG", NIX_CONF)
    yield budget


def event(events: list[dict[str, Any]], phase: str, status: str) -> dict[str, Any]:
    found: dict[str, Any] = next(e for e in events if (e["phase"], e["status"]) == (phase, status))
    return found


def interrupted_on_old(proc: process.Spawned, sig: signal.Signals) -> None:
    """Signal the operator; its final report is written and says the node is on its old system."""
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=40)
    report = next(json.loads(x) for x in out.splitlines() if b'"report"' in x)
    assert proc.returncode == 130, err  # the final report is written, as for Ctrl-C
    assert report["interrupted"] and report["nodes"][0]["state"] == "old", report


def settled_on(node: Node, system: str | None, generation: int | None) -> None:
    """The node runs `system` as `generation`, nothing in progress, no lock left."""
    assert node.current_system() == system and node.generation() == generation
    code, info = node.activate_helper("info")
    assert code == 0 and info["active"] is None and info["lock"] is None, info


def test_slow_but_healthy_app_is_deployed(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, budget_catalogue: int
) -> None:
    """Healthy 5 s after the switch; probe budget 8 s (template.toml); confirm window 3 s. Before:
    the node's timer fired at 3 s, under the probes, and the deploy was always rolled back."""
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], with_app=True, health=True)
    n1.local("echo 5 > /var/lib/xnode-test/health-delay")
    code, events, report, err = ws.deploy()
    r = ws.node_report(report, n1.name)
    assert code == 0 and r["outcome"] == "deployed" and r["state"] == "new", (err, r)
    probe_s = event(events, "probe", "ok")["seconds"]
    print(f"\n[stand-in] slow app: probes passed after {probe_s:.1f} s (window {CONFIRM} s)")
    assert probe_s >= 4
    assert n1.current_system() == r["system_after"] and n1.generation() == r["generation_after"]


def test_hung_app_is_rolled_back_within_its_budget_plus_5s(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, budget_catalogue: int
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], with_app=True, health=True)
    gen = _deploy_v1(ws, n1)
    old = n1.current_system()
    new = ws.flake.build(n1.name)
    n1.set_fault(Fault.HEALTH_FAILS, system=new)
    code, events, report, _ = ws.deploy()
    r = ws.node_report(report, n1.name)
    assert code == 4 and r["outcome"] == "rolled-back" and r["state"] == "old", r
    took = event(events, "rollback", "ok")["elapsed"] - event(events, "activate", "ok")["elapsed"]
    print(
        f"\n[stand-in] hung app rolled back {took:.1f} s after activation "
        f"(budget {budget_catalogue} s)"
    )
    assert took <= budget_catalogue + 5, took
    assert n1.current_system() == old and n1.generation() == gen


@pytest.mark.parametrize(
    ("when", "sig"),
    [("copy", signal.SIGTERM), ("activate", signal.SIGTERM), ("activate", signal.SIGHUP)],
)
def test_sigterm_and_sighup_behave_like_ctrl_c(
    when: str,
    sig: signal.Signals,
    xnode_factory: Callable[..., list[Node]],
    tmp_path: Path,
    catalogue: None,
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], size=300 if when == "copy" else 0, leaf_bytes=200_000)
    gen = _deploy_v1(ws, n1)
    old = n1.current_system()
    if when == "activate":
        n1.set_fault(Fault.ACTIVATION_HANGS)
    ws.flake.build(n1.name)
    proc = _spawn_deploy(ws)
    seen: list[dict[str, Any]] = []
    _read_until(proc, lambda e: e.get("phase") == when and e.get("status") == "start", seen)
    if when == "activate":
        time.sleep(0.3)  # the hung activation runs; a copy is signalled as it starts
    interrupted_on_old(proc, sig)
    settled_on(n1, old, gen)


def test_operator_killed_after_begin_the_node_settles_and_frees_its_lock(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    """SIGKILL (nothing to catch) while the node activates: the node's own timer rolls back and
    releases the deploy's lock; the next deploy needs no unlock and no 900 s wait. (New logins
    are refused after the switch, so no confirmation can land between the event and the kill.)"""
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1])
    gen = _deploy_v1(ws, n1)
    old = n1.current_system()
    ws.flake.build(n1.name)
    n1.set_fault(Fault.REFUSE_SSH)
    proc = _spawn_deploy(ws)
    seen: list[dict[str, Any]] = []
    _read_until(proc, lambda e: e.get("phase") == "activate" and e.get("status") == "ok", seen)
    proc.kill()
    proc.communicate(timeout=10)
    deadline = time.monotonic() + CONFIRM + 10
    while n1.current_system() != old and time.monotonic() < deadline:
        time.sleep(0.2)
    assert n1.current_system() == old and n1.generation() == gen
    code, info = n1.activate_helper("info")
    assert code == 0 and info["lock"] is None and info["active"] is None, info
    n1.clear_faults()
    n1.local("rm -f /run/xnode-test/refuse-ssh")
    code, _, report, err = ws.deploy()
    assert code == 0, (err, report)


def test_operator_killed_during_copy_then_node_unlock(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    """SIGKILL during the copy leaves the lock of a dead operator: `node unlock` shows the holder
    and releases it (refused while a deploy is still settling)."""
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], size=300, leaf_bytes=200_000)
    _deploy_v1(ws, n1)
    ws.flake.build(n1.name)
    proc = _spawn_deploy(ws)
    seen: list[dict[str, Any]] = []
    _read_until(proc, lambda e: e.get("phase") == "copy" and e.get("status") == "start", seen)
    proc.kill()
    proc.communicate(timeout=10)
    code, _, report, _ = ws.deploy()
    assert code == 4 and "another deploy holds the node's lock" in report["nodes"][0]["error"]
    result = CliRunner().invoke(app, ["node", "unlock", n1.name, "--workspace", str(ws.root)])
    assert result.exit_code == 0, result.stderr
    assert "released the deploy lock of 2" in result.stderr  # the dead run's deploy id
    code, _, report, err = ws.deploy()
    assert code == 0, (err, report)
    # While a deploy settles on the node, unlock is refused.
    ws.flake.configure(version="3")
    system = ws.flake.build(n1.name)
    process.run(["nix", "copy", "--to", n1.store_uri, system], env=n1.nix_env())
    n1.activate_helper("lock", "--holder", "pending")
    n1.activate_helper("begin", "--system", system, "--deploy-id", "pending")
    result = CliRunner().invoke(app, ["node", "unlock", n1.name, "--workspace", str(ws.root)])
    assert result.exit_code == 2 and "still settling" in result.stderr, result.stderr


def test_boot_that_fails_at_confirm_is_reported_as_it_is(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    """Before: reported rolled back while the profile had moved."""
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1])
    gen = _deploy_v1(ws, n1)
    n1.set_fault(Fault.BOOT_FAILS)
    code, _, report, _ = ws.deploy()
    r = ws.node_report(report, n1.name)
    assert code == 4 and r["outcome"] == "failed" and r["state"] == "new", r
    assert "boot entry not updated" in r["error"]
    assert n1.current_system() == r["system_after"] and n1.generation() == gen + 1


def test_first_deploy_failing_its_probe_on_a_fresh_node_says_what_runs(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    """No previous system to return to: the node keeps the new, unconfirmed system, and the report
    says so (before: "rolled-back, state old")."""
    (n1,) = xnode_factory(1)
    ws: Ws = make_ws(tmp_path, [n1], with_app=True, health=True)
    n1.set_fault(Fault.HEALTH_FAILS)
    code, _, report, _ = ws.deploy()
    r = ws.node_report(report, n1.name)
    assert code == 4 and r["outcome"] == "failed" and r["state"] == "new-unconfirmed", r
    assert n1.current_system() == r["system_after"] and n1.generation() is None
    deploy_dir = n1.local("ls -d /var/lib/xnode/deploy/2*").stdout.strip()
    assert n1.local(f"cat {deploy_dir}/state").stdout.strip() == "rollback-failed"


def test_a_failed_build_leaves_the_workspace_as_it_was(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    """Before: a deploy whose build failed still rewrote apps/ and inventory.toml and staged the
    new files in git. Now the nodes whose build failed get their files back."""
    n1, n2 = xnode_factory(2)
    ws = make_ws(tmp_path, [n1, n2], health=True)
    (ws.root / "secrets" / "probe-web").mkdir(parents=True)
    (ws.root / "secrets" / "probe-web" / "token").write_text("s3cret")
    ws.flake.configure(nodes=[n1.name])  # the flake has no system for n2: its build fails
    inventory = ws.root / "inventory.toml"
    inventory.write_text("# the operator's own note\n" + inventory.read_text())
    before = inventory.read_text()
    words = ["template=probe-web", f"port={n1.health_port}"]
    code, _, report, _ = ws.deploy(*words, "--node", n2.name)  # every build fails
    assert code == 4 and "build failed" in report["nodes"][0]["error"]
    assert inventory.read_text() == before  # byte for byte, the comment included
    assert not list((ws.root / "apps" / n2.name).glob("*.nix"))
    staged = process.run(["git", "-C", str(ws.root), "ls-files", "apps"]).stdout
    assert f"apps/{n2.name}/" not in staged
    code, _, report, _ = ws.deploy(*words, "--all")  # n1 builds and deploys, n2 does not
    assert code == 3
    from xnodectl import inventory as inv

    nodes = inv.load(inventory).nodes
    assert [a.template for a in nodes[n1.name].apps] == ["probe-web"]
    assert nodes[n2.name].apps == []
    assert (ws.root / "apps" / n1.name / "probe-web.nix").exists()
    assert not (ws.root / "apps" / n2.name / "probe-web.nix").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_operator_stopped_during_the_probes(
    sig: signal.Signals,
    xnode_factory: Callable[..., list[Node]],
    tmp_path: Path,
    budget_catalogue: int,
) -> None:
    """SIGTERM while the (slow) probes run: aborted at once, report written. SIGKILL: nobody
    aborts; the node's own timer (probe budget + window) rolls back and frees the lock."""
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], with_app=True, health=True)
    gen = _deploy_v1(ws, n1)
    old = n1.current_system()
    ws.flake.build(n1.name)
    n1.local("echo 30 > /var/lib/xnode-test/health-delay")  # healthy only after the budget
    proc = _spawn_deploy(ws)
    seen: list[dict[str, Any]] = []
    _read_until(proc, lambda e: e.get("phase") == "probe" and e.get("status") == "start", seen)
    activated_at = time.monotonic()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=40)
    if sig == signal.SIGTERM:
        report = next(json.loads(x) for x in out.splitlines() if b'"report"' in x)
        assert proc.returncode == 130 and report["nodes"][0]["state"] == "old", report
        assert time.monotonic() - activated_at < budget_catalogue  # aborted, not timed out
    deadline = activated_at + budget_catalogue + CONFIRM + 5
    while n1.current_system() != old and time.monotonic() < deadline:
        time.sleep(0.2)
    assert n1.current_system() == old and n1.generation() == gen
    code, info = n1.activate_helper("info")
    assert code == 0 and info["active"] is None and info["lock"] is None, info


def test_an_unexpected_error_in_a_stage_still_ends_in_a_report(
    xnode_factory: Callable[..., list[Node]],
    tmp_path: Path,
    catalogue: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stage raising an error it does not handle itself: the run still reports every node
    (with what the node runs), and the node's timer takes it back."""
    from xnodectl.deploy import health
    from xnodectl.errors import ExternalError

    async def explode(*_: object) -> None:
        raise ExternalError("the probe runner exploded")

    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1])
    gen = _deploy_v1(ws, n1)
    old = n1.current_system()
    monkeypatch.setattr(health, "probe", explode)
    code, _, report, _ = ws.deploy()
    r = ws.node_report(report, n1.name)
    assert code == 4 and r["outcome"] == "failed" and r["state"] == "new-unconfirmed", r
    assert "the probe runner exploded" in r["error"]
    deadline = time.monotonic() + CONFIRM + 5
    while n1.current_system() != old and time.monotonic() < deadline:
        time.sleep(0.2)
    assert n1.current_system() == old and n1.generation() == gen


def test_the_lock_outlives_its_stale_after_while_the_deploy_works(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    """The node's lock goes stale after 2 s without a heartbeat; the deploy's build takes longer
    (a slow stand-in build, the preflight ran during it): the engine's heartbeat keeps the node,
    another operator is refused throughout, and the deploy goes through."""
    (n1,) = xnode_factory(1)
    (n1.workdir / "etc-xnode" / "deploy-lock-stale-after").write_text("2\n")
    salt = f"slow-build-beat-{time.time_ns()}"  # never built before: the build really takes ~5 s
    ws = make_ws(tmp_path, [n1], size=400, leaf_bytes=1000, leaf_salt=salt)
    proc = _spawn_deploy(ws)
    seen: list[dict[str, Any]] = []
    _read_until(proc, lambda e: e.get("phase") == "preflight" and e["status"] == "ok", seen)
    time.sleep(3.5)  # past the stale-after since the lock was taken
    code, out = n1.activate_helper("lock", "--holder", "intruder")
    running = proc.poll() is None  # the refusal came from the working deploy's lock
    stdout, err = proc.communicate(timeout=120)
    assert running
    assert code == 3 and out["error"] == "locked" and out["holder"] != "intruder", out
    report = next(json.loads(x) for x in stdout.splitlines() if b'"report"' in x)
    assert proc.returncode == 0 and report["ok"], err
    assert n1.current_system() == report["nodes"][0]["system_after"]
    code, info = n1.activate_helper("info")
    assert code == 0 and info["lock"] is None and info["lock_stale_after"] == 2, info


def test_interrupt_while_begin_is_on_its_way_rolls_back_now(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    """Ctrl-C reaches the operator while `begin` is still on its way (held back 1.5 s on the
    node): the first abort finds no deploy; the engine asks again, so the `begin` that lands is
    rolled back at once. Before, the report said `old` while the node switched to the new system
    and kept it, unconfirmed, until its timer."""
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1])
    gen = _deploy_v1(ws, n1)
    old = n1.current_system()
    ws.flake.build(n1.name)
    (n1.workdir / "etc-xnode" / "test-slow-begin").write_text("1\n")
    proc = _spawn_deploy(ws, "--confirm-timeout", "20")
    seen: list[dict[str, Any]] = []
    _read_until(proc, lambda e: e.get("phase") == "activate" and e.get("status") == "start", seen)
    time.sleep(0.3)  # the begin + wait session is open; begin sleeps on the node
    interrupted_on_old(proc, signal.SIGINT)
    time.sleep(2)  # whatever begin was going to do, it has done by now
    settled_on(n1, old, gen)


def test_a_json_reader_that_goes_away_does_not_turn_the_deploy_into_an_internal_error(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    """`xnodectl deploy --json | head -1`: the deploy still runs to its end and its exit code is
    the deploy's (before: `error: internal error: BrokenPipeError` and exit 70)."""
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1])
    ws.flake.build(n1.name)
    proc = _spawn_deploy(ws)
    assert proc.stdout is not None and proc.stderr is not None
    first = json.loads(proc.stdout.readline())
    proc.stdout.close()  # the reader is gone
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and first["type"] == "event", err
    assert "internal error" not in err
    assert n1.current_system() is not None and n1.generation() == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
@pytest.mark.parametrize("when", ["build", "confirm"])
def test_operator_signalled_while_building_or_confirming(
    when: str,
    sig: signal.Signals,
    xnode_factory: Callable[..., list[Node]],
    tmp_path: Path,
    catalogue: None,
) -> None:
    """The phases the other signal tests leave out. Whatever the signal: the node ends on ONE
    system that is also its boot default (never a new unconfirmed one left behind), with no
    deploy in progress; SIGTERM's report says what the node runs; a lock is left only by a
    SIGKILL before `begin`, and `node unlock` frees it."""
    (n1,) = xnode_factory(1)
    knobs: dict[str, Any] = {"size": 400, "leaf_bytes": 1000, "leaf_salt": f"{time.time_ns()}"}
    ws = make_ws(tmp_path, [n1], **(knobs if when == "build" else {}))
    gen = _deploy_v1(ws, n1)
    old = n1.current_system()
    if when == "confirm":
        ws.flake.build(n1.name)
    proc = _spawn_deploy(ws)
    seen: list[dict[str, Any]] = []
    phase, status = ("preflight", "ok") if when == "build" else ("confirm", "start")
    _read_until(proc, lambda e: (e.get("phase"), e.get("status")) == (phase, status), seen)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    deadline = time.monotonic() + CONFIRM + 10
    while n1.activate_helper("info")[1]["active"] is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    code, info = n1.activate_helper("info")
    assert code == 0 and info["active"] is None, info
    now = n1.current_system()
    assert now == n1.boot_system() and now is not None, (now, n1.boot_system())
    if when == "build":
        assert (now, n1.generation()) == (old, gen)
    if sig == signal.SIGTERM:
        report = next(json.loads(x) for x in out.splitlines() if b'"report"' in x)
        node = report["nodes"][0]
        assert proc.returncode in (0, 130), err  # the confirm may have landed first
        assert node["state"] == ("old" if now == old else "new"), (node, now)
        assert info["lock"] is None, info
    elif when == "build":  # killed before `begin`: the dead run's lock stays until unlocked
        assert info["lock"] is not None, info
        result = CliRunner().invoke(app, ["node", "unlock", n1.name, "--workspace", str(ws.root)])
        assert result.exit_code == 0, result.stderr
        assert n1.activate_helper("info")[1]["lock"] is None
    else:
        assert info["lock"] is None, info  # settled on the node: the lock went with it
