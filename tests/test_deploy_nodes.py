"""The deploy engine against real test Xnodes (tests/xnodes.py): real sshd, private Nix stores,
real `nix copy`, the real xnode-activate. Systems are stand-in closures (tests/standin.py),
not NixOS.

Every fault of issue 5 is injected for real; each test asserts the node's generation afterwards
AND the report.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.standin import StandinFlake
from tests.xnodes import NIX_CONF, Fault, Node
from xnodectl import inventory as inv
from xnodectl import process
from xnodectl.cli import app

CONFIRM = 3  # seconds: short confirmation window for tests

PROBE_TEMPLATE = """
name = "probe-web"
summary = "Test fixture: an HTTP health probe on the stand-in's health server"
category = "web"
[resources]
min_ram_mb = 1
min_disk_gb = 0
[parameters.port]
type = "port"
required = true
description = "health port"
[parameters.token]
type = "string"
secret = true
owner = "root"
description = "a secret file"
[[health]]
kind = "http"
url = "http://127.0.0.1:{port}/"
timeout = 3
"""
PROBE_MODULE = "{ ... }: { }\n"


@dataclass
class Ws:
    root: Path
    flake: StandinFlake
    nodes: list[Node]

    def deploy(self, *args: str) -> tuple[int, list[dict[str, Any]], dict[str, Any], str]:
        """`xnodectl deploy --json ARGS`: exit code, events, final report, stderr. Without
        --node/--tag, every node (--all: a run without a terminal must say so)."""
        if not {"--node", "-n", "--tag", "-t"} & set(args):
            args = ("--all", *args)
        result = CliRunner().invoke(
            app,
            [
                "deploy",
                "--json",
                "--workspace",
                str(self.root),
                "--confirm-timeout",
                str(CONFIRM),
                *args,
            ],
        )
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        events = [x for x in lines if x.get("type") == "event"]
        reports = [x for x in lines if x.get("type") == "report"]
        assert "Traceback" not in result.stderr + result.stdout
        return result.exit_code, events, reports[-1] if reports else {}, result.stderr

    def node_report(self, report: dict[str, Any], name: str) -> dict[str, Any]:
        found: dict[str, Any] = next(n for n in report["nodes"] if n["node"] == name)
        return found


@pytest.fixture
def catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    root = tmp_path / "templates" / "probe-web"
    root.mkdir(parents=True)
    (root / "template.toml").write_text(PROBE_TEMPLATE)
    (root / "module.nix.j2").write_text(PROBE_MODULE)
    monkeypatch.setenv("XNODECTL_TEMPLATES", str(root.parent))
    monkeypatch.setenv("NIX_CONFIG", NIX_CONF)
    yield


def make_ws(tmp_path: Path, nodes: list[Node], *, with_app: bool = False, **knobs: Any) -> Ws:
    names = [n.name for n in nodes]
    flake = StandinFlake(tmp_path / "ws", names, **knobs).write()
    inventory = inv.Inventory(settings=inv.Settings(ssh_key=str(nodes[0].key)))
    for n in nodes:
        apps = (
            [inv.AppEntry(template="probe-web", params={"port": n.health_port})] if with_app else []
        )
        inventory.nodes[n.name] = inv.Node(
            host=n.host, port=n.port, host_key=n.host_key, tags=["test"], apps=apps
        )
    inv.save(inventory, flake.directory / inv.FILENAME)
    if with_app:
        secret = flake.directory / "secrets" / "probe-web" / "token"
        secret.parent.mkdir(parents=True)
        secret.write_text("s3cret")
    return Ws(flake.directory, flake, nodes)


def phases(events: list[dict[str, Any]], node: str) -> list[tuple[str, str]]:
    return [(e["phase"], e["status"]) for e in events if e["node"] == node]


def test_deploy_then_noop_then_upgrade(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], with_app=True, health=True)
    code, events, report, err = ws.deploy("--all")
    assert code == 0, (err, report)
    r = ws.node_report(report, n1.name)
    assert r["outcome"] == "deployed" and r["state"] == "new"
    assert n1.current_system() == r["system_after"] and n1.generation() == r["generation_after"]
    assert n1.local("cat /var/lib/xnode/secrets/probe-web/token").stdout == "s3cret"
    mode = n1.local("stat -c %a /var/lib/xnode/secrets/probe-web/token").stdout.strip()
    assert mode == "400"
    assert ("probe", "ok") in phases(events, n1.name)
    assert ("confirm", "ok") in phases(events, n1.name)
    gen = n1.generation()
    assert gen is not None

    started = time.monotonic()
    code, events, report, _ = ws.deploy("--all")
    assert code == 0
    r = ws.node_report(report, n1.name)
    assert r["outcome"] == "unchanged" and r["bytes_copied"] == 0
    assert n1.generation() == gen and time.monotonic() - started < 5

    ws.flake.configure(version="2")
    code, _, report, _ = ws.deploy("--node", n1.name)
    r = ws.node_report(report, n1.name)
    assert code == 0 and r["generation_before"] == gen and r["generation_after"] == gen + 1
    assert n1.current_system() == r["system_after"] != r["system_before"]


def test_one_deploy_parses_renders_and_reads_secrets_once(
    xnode_factory: Callable[..., list[Node]],
    tmp_path: Path,
    catalogue: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The traced deploy (`deploy template=... --node N` with a secret): the inventory is parsed
    once, the app rendered once, its secret read once; the table's TIME is real."""
    from xnodectl import app_request, render
    from xnodectl.deploy import secrets

    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], health=True)
    (ws.root / "secrets" / "probe-web").mkdir(parents=True)
    (ws.root / "secrets" / "probe-web" / "token").write_text("s3cret")
    counts = {"load": 0, "render": 0, "secret": 0}

    def counted(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(inv, "load", counted("load", inv.load))
    monkeypatch.setattr(app_request, "render", counted("render", render.render))
    monkeypatch.setattr(secrets, "_find", counted("secret", secrets._find))
    code, _, report, err = ws.deploy(
        "template=probe-web", f"port={n1.health_port}", "--node", n1.name
    )
    assert code == 0, (err, report)
    assert counts == {"load": 1, "render": 1, "secret": 1}
    assert n1.local("cat /var/lib/xnode/secrets/probe-web/token").stdout == "s3cret"
    r = ws.node_report(report, n1.name)
    assert r["seconds"] > 0 and {"build", "preflight", "copy", "activate", "confirm"} <= set(
        r["phases"]
    )
    text = CliRunner().invoke(app, ["deploy", "--workspace", str(ws.root), "--all"])
    assert text.exit_code == 0
    row = next(line for line in text.stdout.splitlines() if line.startswith(n1.name))
    assert " 0.0s " not in row


def test_unreachable_node_reported_fast_before_copy(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    n1, n2 = xnode_factory(2)
    ws = make_ws(tmp_path, [n1, n2])
    n2.stop()
    code, events, report, _ = ws.deploy("--all")
    assert code == 6  # every failed node was unreachable: the exit code of status/rollback too
    r2 = ws.node_report(report, n2.name)
    assert r2["outcome"] == "failed" and r2["state"] == "old" and "unreachable" in r2["error"]
    assert r2["unreachable"] is True and report["unreachable"] == 1 and report["failed"] == 1
    # real times: the run up to the node's end, and each phase it went through
    assert r2["seconds"] > 0 and set(r2["phases"]) >= {"build", "preflight"}
    assert report["seconds"] >= r2["seconds"] > r2["phases"]["preflight"] > 0
    assert not any(e["phase"] == "copy" for e in events if e["node"] == n2.name)
    fail = next(e for e in events if e["node"] == n2.name and e["status"] == "failed")
    start = next(e for e in events if e["node"] == n2.name and e["phase"] == "preflight")
    assert fail["elapsed"] - start["elapsed"] <= 10
    assert ws.node_report(report, n1.name)["outcome"] == "deployed"
    assert n2.current_system() is None


def test_hung_node_reported_within_10s(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1])
    n1.freeze()
    try:
        code, _, report, _ = ws.deploy("--all")
    finally:
        n1.thaw()
    r = ws.node_report(report, n1.name)
    assert code == 6 and r["outcome"] == "failed" and r["state"] == "old"
    assert r["phases"]["preflight"] <= 11
    assert n1.current_system() is None


def _deploy_v1(ws: Ws, node: Node) -> int:
    code, _, report, err = ws.deploy("--all")
    assert code == 0, (err, report)
    gen = node.generation()
    assert gen is not None
    ws.flake.configure(version="2")
    return gen


@pytest.mark.parametrize(
    "fault", [Fault.ACTIVATION_FAILS, Fault.ACTIVATION_HANGS, Fault.HEALTH_FAILS, Fault.REFUSE_SSH]
)
def test_activation_faults_roll_back(
    fault: Fault, xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], with_app=True, health=True)
    gen = _deploy_v1(ws, n1)
    old = n1.current_system()
    n1.set_fault(fault)
    code, events, report, _ = ws.deploy("--all", "--activation-timeout", "3")
    r = ws.node_report(report, n1.name)
    assert code == 4, json.dumps([report, events])
    assert r["outcome"] == "rolled-back" and r["state"] == "old", r
    assert n1.current_system() == old and n1.generation() == gen  # boot default never moved
    assert r["rollback_reason"]
    # Timing targets of issue 5, measured from the moment the fault can first be seen: failed
    # activation reported <= 5 s after it ended; a hung one killed at the activation timeout (3 s)
    # and reported <= 5 s later; a failed probe rolled back <= 5 s after its 3 s probe timeout;
    # no confirmation -> rolled back (and verified) within the confirm window + 5 s.
    start_phase = "confirm" if fault is Fault.REFUSE_SSH else "activate"
    start = next(
        e for e in events
        if e["node"] == n1.name and e["phase"] == start_phase and e["status"] == "start"
    )  # fmt: skip
    end = next(e for e in events if e["node"] == n1.name and e["status"] == "failed")
    limit = {
        Fault.ACTIVATION_FAILS: 5,
        Fault.ACTIVATION_HANGS: 3 + 5,
        Fault.HEALTH_FAILS: 3 + 5,
        Fault.REFUSE_SSH: CONFIRM + 5,
    }[fault]
    took = end["elapsed"] - start["elapsed"]
    assert took <= limit, (fault, took)


def test_host_key_changed_is_refused(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    n1, n2 = xnode_factory(2)
    ws = make_ws(tmp_path, [n1])
    inventory = inv.load(ws.root / inv.FILENAME)
    inventory.nodes[n1.name].host_key = n2.host_key  # someone else's key
    inv.save(inventory, ws.root / inv.FILENAME)
    code, events, report, _ = ws.deploy("--all")
    r = ws.node_report(report, n1.name)
    assert code == 4 and r["outcome"] == "failed" and r["state"] == "old"
    assert "host key" in r["error"] and n1.name in r["error"]
    assert n1.current_system() is None and not any(e["phase"] == "copy" for e in events)


def test_store_full_is_refused_before_copy(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1, store_size="64m")
    ws = make_ws(tmp_path, [n1], size=20, leaf_bytes=100_000)
    n1.fill_store(leave_bytes=1024 * 1024)
    code, events, report, _ = ws.deploy("--all")
    r = ws.node_report(report, n1.name)
    assert code == 4 and "store full" in r["error"] and r["state"] == "old"
    # refused as the copy's first step, before a byte moved
    copy = [e for e in events if e["phase"] == "copy"]
    assert [e["status"] for e in copy] == ["failed"] and r["bytes_copied"] == 0
    assert n1.current_system() is None


def test_second_deploy_at_same_time_is_refused(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1])
    code, data = n1.activate_helper("lock", "--holder", "other-operator")
    assert code == 0, data
    code, _, report, _ = ws.deploy("--all")
    r = ws.node_report(report, n1.name)
    assert code == 4 and "lock" in r["error"] and "other-operator" in r["error"]
    assert n1.current_system() is None


def test_preflight_runs_during_the_build_and_a_failed_build_releases_the_node(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    """The first wave's preflights (connection, facts, lock) overlap the build; a node whose
    system then fails to build is left exactly as it was: untouched and unlocked."""
    n1, n2 = xnode_factory(2)
    ws = make_ws(tmp_path, [n1, n2])
    ws.flake.configure(nodes=[n1.name])  # the flake has no system for n2: its build fails
    code, events, report, _ = ws.deploy("--all")
    assert code == 3
    built = next(e for e in events if e["phase"] == "build" and e["status"] != "start")
    for n in (n1, n2):
        checked = next(e for e in events if e["node"] == n.name and e["phase"] == "preflight")
        assert checked["elapsed"] <= built["elapsed"]  # started before the build ended
    r2 = ws.node_report(report, n2.name)
    assert r2["outcome"] == "failed" and "build failed" in r2["error"] and r2["state"] == "old"
    assert n2.current_system() is None
    code, info = n2.activate_helper("info")
    assert code == 0 and info["lock"] is None  # the early preflight's lock was released
    assert ws.node_report(report, n1.name)["outcome"] == "deployed"


def test_wave_with_one_failing_node(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    nodes = xnode_factory(3)
    ws = make_ws(tmp_path, nodes, per_node=True)
    nodes[1].set_fault(Fault.ACTIVATION_FAILS)
    code, _, report, _ = ws.deploy("--all", "--max-parallel", "3")
    assert code == 3 and report["failed"] == 1
    assert ws.node_report(report, nodes[1].name)["outcome"] == "rolled-back"
    for n in (nodes[0], nodes[2]):
        r = ws.node_report(report, n.name)
        assert r["outcome"] == "deployed" and n.current_system() == r["system_after"]


def test_canary_failure_stops_later_waves(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    nodes = xnode_factory(2)
    ws = make_ws(tmp_path, nodes)
    nodes[0].set_fault(Fault.ACTIVATION_FAILS)
    code, _, report, _ = ws.deploy("--all", "--canary", "1")
    assert code == 4
    assert ws.node_report(report, nodes[1].name)["outcome"] == "skipped"
    assert nodes[1].current_system() is None


def test_sshd_killed_mid_copy(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], size=120, leaf_bytes=200_000)
    ws.flake.build(n1.name)

    def killer() -> None:
        for _ in range(200):
            if n1.local("ls /nix/store | grep -c standin-leaf || true").stdout.strip() not in (
                "",
                "0",
            ):
                break
            time.sleep(0.02)
        n1.stop()

    import threading

    thread = threading.Thread(target=killer)
    thread.start()
    code, _, report, _ = ws.deploy("--all")
    thread.join()
    r = ws.node_report(report, n1.name)
    assert code == 4 and r["outcome"] == "failed" and r["state"] == "old", r
    assert r["error"].startswith("copy failed"), r  # it died mid-copy, not before
    assert n1.current_system() is None
    n1.start()


def _spawn_deploy(ws: Ws, *extra: str) -> process.Spawned:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return process.spawn(
        [
            "xnodectl",
            "-v",
            "deploy",
            "--json",
            "--workspace",
            str(ws.root),
            "--confirm-timeout",
            str(CONFIRM),
            "--all",
            *extra,
        ],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def _read_until(
    proc: process.Spawned,
    pred: Callable[[dict[str, Any]], bool],
    seen: list[dict[str, Any]],
) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        event = json.loads(raw)
        seen.append(event)
        if pred(event):
            return
    raise AssertionError(f"stream ended before the awaited event: {seen[-3:]}")


@pytest.mark.parametrize("when", ["copy", "activate"])
def test_ctrl_c(
    when: str, xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], size=120 if when == "copy" else 0, leaf_bytes=200_000)
    gen = _deploy_v1(ws, n1)
    old = n1.current_system()
    if when == "activate":
        n1.set_fault(Fault.ACTIVATION_HANGS)
    ws.flake.build(n1.name)
    proc = _spawn_deploy(ws)
    seen: list[dict[str, Any]] = []
    _read_until(
        proc,
        lambda e: (
            e.get("phase") == when
            and e.get("status") in ("start", "progress")
            and (when != "activate" or e["status"] == "start")
        ),
        seen,
    )
    if when == "activate":
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 40
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate()
    lines = [json.loads(x) for x in out.splitlines() if x.strip()]
    report = next(x for x in lines if x.get("type") == "report")
    assert proc.returncode == 130, err
    assert report["interrupted"] and report["nodes"][0]["state"] == "old"
    assert b"old generation" in err
    assert n1.current_system() == old and n1.generation() == gen
    if when == "activate":  # the hung activation was aborted, not left to its timers
        code, info = n1.activate_helper("info")
        assert code == 0 and info["active"] is None, info


def test_ctrl_c_while_building_releases_the_early_preflight(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    """Ctrl-C while the system builds, after the node's preflight (run during the build) took its
    lock: nothing was copied or activated, and the lock is released."""
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], size=400, leaf_bytes=1000, leaf_salt="slow-build")  # builds ~5 s
    proc = _spawn_deploy(ws)
    seen: list[dict[str, Any]] = []
    _read_until(proc, lambda e: e.get("phase") == "preflight" and e["status"] == "ok", seen)
    assert not any(e["phase"] == "build" and e["status"] != "start" for e in seen)  # still building
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=40)
    report = next(json.loads(x) for x in out.splitlines() if b'"report"' in x)
    assert proc.returncode == 130, err
    assert report["interrupted"] and report["nodes"][0]["state"] == "old"
    assert n1.current_system() is None
    code, info = n1.activate_helper("info")
    assert code == 0 and info["lock"] is None, info


def _cli(ws: Ws, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [*args, "--workspace", str(ws.root)])
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_status_generations_rollback(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], with_app=True, health=True)
    gen1 = _deploy_v1(ws, n1)  # now the workspace wants version 2: drift
    code, out, err = _cli(ws, "status", "--json")
    assert code == 0, err
    (st,) = json.loads(out)
    assert st["reachable"] and st["current_generation"] == gen1
    assert st["drift"] is True and st["healthy"] is True
    assert ws.deploy("--all")[0] == 0
    code, out, _ = _cli(ws, "status", "--json")
    assert json.loads(out)[0]["drift"] is False

    code, out, _ = _cli(ws, "generations", "--node", n1.name, "--json")
    gens = json.loads(out)
    assert [g["number"] for g in gens] == [gen1, gen1 + 1]
    assert [g["current"] for g in gens] == [False, True]

    code, out, err = _cli(ws, "rollback", "--node", n1.name, "--json")
    assert code == 0, err
    assert json.loads(out)["generation"] == gen1 and n1.generation() == gen1
    code, out, _ = _cli(ws, "status", "--json")
    assert json.loads(out)[0]["drift"] is True


def test_revert_wave_on_failure(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    nodes = xnode_factory(2)
    ws = make_ws(tmp_path, nodes)
    gen0 = _deploy_v1(ws, nodes[0])
    olds = [n.current_system() for n in nodes]
    nodes[1].set_fault(Fault.ACTIVATION_FAILS)
    code, _, report, _ = ws.deploy("--all", "--revert-wave-on-failure")
    assert code == 4
    for node, old in zip(nodes, olds, strict=True):
        r = ws.node_report(report, node.name)
        assert r["outcome"] == "rolled-back" and r["state"] == "old", r
        assert node.current_system() == old
    assert "wave 1 reverted" in ws.node_report(report, nodes[0].name)["rollback_reason"]
    assert nodes[0].generation() == gen0


def test_text_output_progress_on_stderr_table_on_stdout(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], size=5, leaf_bytes=10_000)
    result = CliRunner().invoke(app, ["deploy", "--workspace", str(ws.root), "--all"])
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "preflight" in result.stderr and "confirm" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["NODE", "OUTCOME", "ON"]
    assert lines[1].split()[:3] == [n1.name, "deployed", "new"]


def test_plan_against_a_reachable_node(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], size=3, leaf_bytes=10_000)
    gen = _deploy_v1(ws, n1)  # the workspace now wants version 2 with new leaves
    ws.flake.configure(leaf_salt="2")
    before = n1.activations()
    code, out, err = _cli(ws, "plan", "--json")
    assert code == 0, err
    (plan,) = json.loads(out)["nodes"]
    assert plan["current_generation"] == gen and plan["current_system"] == n1.current_system()
    assert plan["desired_system"] != plan["current_system"] and plan["changes"]
    assert plan["paths_to_copy"] == 4 and plan["bytes_to_copy"] > 30_000
    assert any("standin-1 -> " in u or "->" in u for u in plan["packages"]["upgraded"])
    assert "node" not in plan["unknown"] and "closure" not in plan["unknown"]
    assert n1.activations() == before and n1.generation() == gen  # the plan changed nothing


def test_node_add_scan_pins_the_real_key(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1])
    code, out, err = _cli(ws, "node", "add", "n9", n1.host, "--port", str(n1.port), "--scan")
    assert code == 0, err
    assert "SHA256:" in err and out.strip() == "n9"
    assert inv.load(ws.root / inv.FILENAME).nodes["n9"].host_key == n1.host_key


def test_helper_is_uploaded_when_missing(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    n1.local("rm -f /var/lib/xnode-test/bin/xnode-activate")
    ws = make_ws(tmp_path, [n1])
    code, events, report, err = ws.deploy("--all")
    assert code == 0, (err, report)
    assert ("upload-helper", "ok") in phases(events, n1.name)
    assert n1.local("test -x /var/lib/xnode/bin/xnode-activate").returncode == 0
    assert n1.current_system() == ws.node_report(report, n1.name)["system_after"]


def test_helper_too_old_to_chain_is_replaced_by_the_bundled_one(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    """A node whose installed helper predates protocol 2 (a deploy-agent module from an older
    xnodectl) answers `chain` with its usage line: the engine uploads its own and deploys."""
    (n1,) = xnode_factory(1)
    old = tmp_path / "xnode-activate-v1"
    old.write_text(
        "#!/bin/sh\n"
        'echo \'{"error": "usage: xnode-activate info|lock|unlock|begin|wait|probe|confirm'
        "|abort|generations|rollback (see docs/deploy-protocol.md)\"}'\n"
        "exit 2\n"
    )
    n1.install_helper(old)
    ws = make_ws(tmp_path, [n1])
    code, events, report, err = ws.deploy("--all")
    assert code == 0, (err, report)
    assert ("upload-helper", "ok") in phases(events, n1.name)
    assert n1.current_system() == ws.node_report(report, n1.name)["system_after"]
    assert n1.boot_system() == n1.current_system()  # confirmed with the uploaded helper too


def test_status_and_generations_upload_the_helper_when_the_node_has_none(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1])
    code, _, report, err = ws.deploy("--all")
    assert code == 0, (err, report)
    n1.local("rm -f /var/lib/xnode-test/bin/xnode-activate /var/lib/xnode/bin/xnode-activate")
    code, out, err = _cli(ws, "generations", "--node", n1.name, "--json")
    assert code == 0, err
    assert [g["number"] for g in json.loads(out)] == [n1.generation()]
    code, out, err = _cli(ws, "status", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["reachable"] is True
    assert n1.local("test -x /var/lib/xnode/bin/xnode-activate").returncode == 0
