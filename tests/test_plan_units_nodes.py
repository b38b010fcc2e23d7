"""The plan's units against a real test Xnode (tests/xnodes.py): the stand-in system (not NixOS)
carries unit files as NixOS does (one store path per unit, linked from etc/systemd/system); the
node is asked for its current ones in the round trip the plan already makes."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.standin import StandinFlake
from tests.xnodes import NIX_CONF, Node
from xnodectl import inventory as inv
from xnodectl.cli import app
from xnodectl.deploy.units import LIMITS, Basis
from xnodectl.studio import services, web


def unit(cmd: str, extra: str = "") -> str:
    return f"[Unit]\nDescription={cmd}\n{extra}\n[Service]\nExecStart=/bin/{cmd}\n"


V1 = {
    "multi-user.target": "[Unit]\nDescription=Multi-User System\n",
    "multi-user.target.wants/web.service": "",
    "multi-user.target.wants/db.service": "",
    "web.service": unit("web --port 80"),
    "db.service": unit("db", "After=network.target"),
    "db.service.d/limits.conf": "[Service]\nLimitNOFILE=1024\n",
    "backup.service": unit("backup"),  # wanted by nothing (a timer would start it)
}


def _run(ws: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [*args, "--workspace", str(ws)])
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_plan_lists_the_changed_and_the_new_unit(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIX_CONFIG", NIX_CONF)
    (node,) = xnode_factory(1)
    flake = StandinFlake(tmp_path / "ws", [node.name], units=V1).write()
    inventory = inv.Inventory(settings=inv.Settings(ssh_key=str(node.key)))
    inventory.nodes[node.name] = inv.Node(host=node.host, port=node.port, host_key=node.host_key)
    inv.save(inventory, flake.directory / inv.FILENAME)
    code, _, err = _run(flake.directory, "deploy", "--all", "--confirm-timeout", "3")
    assert code == 0, err
    current = node.current_system()
    assert current is not None and Path(current).name.endswith("standin-1")

    v2 = {
        **V1,
        "db.service.d/limits.conf": "[Service]\nLimitNOFILE=4096\n",  # a drop-in changed
        "web.service": unit("web --port 80").replace("Description=", "Description=new "),
        "cache.service": unit("cache"),
        "multi-user.target.wants/cache.service": "",
    }  # the web unit's file changed, but only its (ignored) Description
    flake.configure(version="2", units=v2)
    before = node.activations()
    node.local("touch /run/xnode-test/no-systemd")  # the node's systemctl cannot list units
    code, out, err = _run(flake.directory, "plan", "--json")
    assert code == 0, err
    (plan,) = json.loads(out)["nodes"]
    assert "units" not in plan["unknown"], plan["unknown"]
    expected = {
        "start": ["cache.service"],
        "stop": [],
        "restart": ["db.service"],
        "stopped_then_started": ["db.service"],
        "reload": [],
        "not_restarted": [],
        "basis": Basis.ASSUMED.value,
        "limits": LIMITS,
    }
    assert plan["units"] == expected
    code, out, err = _run(flake.directory, "plan")
    assert code == 0, err
    assert "  units to restart: db.service*\n" in out and "  units to start: cache.service\n" in out
    assert "units to stop: none" in out and "units basis: the node's systemd could not" in out

    # its systemd answers now, and says web.service failed: the restarted target starts it again
    node.local("rm /run/xnode-test/no-systemd; echo web.service > /run/xnode-test/failed-units")
    code, out, err = _run(flake.directory, "plan", "--json")
    assert code == 0, err
    (plan,) = json.loads(out)["nodes"]
    start = ["cache.service", "web.service"]
    assert plan["units"] == {**expected, "start": start, "basis": Basis.SYSTEMD.value}
    assert node.activations() == before and node.current_system() == current  # nothing changed

    # the studio's plan view: the same service, its short list per node
    plans = asyncio.run(services.plan(services.Workspace(flake.directory), [node.name], []))
    page = html.unescape(re.sub(r"<[^>]+>", "", web.html("plan.html", plans=plans)))
    lines = [line.strip() for line in page.splitlines() if line.strip()]
    assert "restart: db.service (stopped, then started after activation)" in lines
    assert "start: cache.service, web.service" in lines
    assert {"reload: none", "stop: none", "changed, not restarted: none"} <= set(lines)
    assert node.activations() == before


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_units_unknown_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that does not answer: no units, and why (the system itself was built); a node
    whose system cannot be built: no units either, pointing at the build's reason."""
    monkeypatch.setenv("NIX_CONFIG", NIX_CONF)
    flake = StandinFlake(tmp_path / "ws", ["gone"], units=V1).write()
    inventory = inv.Inventory()
    for name in ("gone", "unbuilt"):  # the flake has no system for "unbuilt"
        inventory.nodes[name] = inv.Node(host="127.0.0.1", port=1, host_key=KEY)
    inv.save(inventory, flake.directory / inv.FILENAME)
    code, out, err = _run(flake.directory, "plan", "--json")
    assert code == 0, err
    plans = {p["node"]: p for p in json.loads(out)["nodes"]}
    gone, unbuilt = plans["gone"], plans["unbuilt"]
    assert gone["desired_system"] is not None and gone["units"] is None
    assert gone["unknown"]["units"].endswith(": the node's current system is unknown (see node)")
    assert "node" in gone["unknown"]
    assert unbuilt["desired_system"] is None and unbuilt["units"] is None
    assert unbuilt["unknown"]["units"].endswith(
        ": the system is not built here (see closure); "
        "the node's current system is unknown (see node)"
    )
    assert "could not be built" in unbuilt["unknown"]["closure"]
