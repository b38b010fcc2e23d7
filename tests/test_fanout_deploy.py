"""`xnodectl deploy --fan-out` / `--via` end to end against real test Xnodes: the operator's bytes
counted on the wire (a counting relay in front of every node's sshd; peers use the real ports via
inventory peer_port), signatures checked by the nodes, faults. Stand-in closures, not NixOS."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import XnodeFactory
from tests.fanout_rig import FanWs, Outcome, owner_key
from tests.xnodes import NIX_CONF
from xnodectl.cli import app


@pytest.fixture
def fan_ws(
    tmp_path: Path, xnode_factory: XnodeFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    monkeypatch.setenv("NIX_CONFIG", NIX_CONF)
    made: list[FanWs] = []

    def make(n: int, size: int = 40, **knobs: Any) -> FanWs:
        nodes = xnode_factory(n, fresh=True)
        salt = f"fanout-deploy-{secrets.token_hex(4)}"
        made.append(FanWs.create(tmp_path / f"ws{len(made)}", nodes, size, salt, **knobs))
        return made[-1]

    yield make
    for ws in made:
        ws.close()


def deploy(ws: FanWs, *args: str) -> tuple[int, list[dict[str, Any]], dict[str, Any], str]:
    """The deploy through typer's CliRunner (in this process)."""
    result = CliRunner().invoke(app, ws.deploy_argv(*args))
    out = Outcome.parse(result.exit_code, result.stdout, result.stderr)
    return out.code, out.events, out.report, out.stderr


def owner_public(ws: FanWs) -> str:
    return ws.owner_public


def closure_bytes(report: dict[str, Any]) -> int:
    return max(int(n["bytes_copied"]) for n in report["nodes"])


def test_deploy_fan_out_8_nodes_operator_sends_the_closure_once(fan_ws: Any) -> None:
    ws: FanWs = fan_ws(8)
    # The nodes trust the owner key the deploy is about to create: make it first (the key is
    # created on demand by any command that needs it).
    code = CliRunner().invoke(app, ["store-key", "show", "-w", str(ws.root)]).exit_code
    assert code == 0
    for node in ws.nodes:
        node.trust_store([owner_public(ws)])
    for proxy in ws.proxies.values():
        proxy.reset()
    code, events, report, err = deploy(ws, "--fan-out", "tree:2")
    assert code == 0, (err, report)
    assert report["deployed"] == 8
    d = closure_bytes(report)
    assert ws.operator_sent <= 1.1 * d, (ws.operator_sent, d)
    assert report["operator_bytes"] == d
    nodes = report["nodes"]
    assert sum(n["bytes_from_operator"] for n in nodes) == d
    assert sum(n["bytes_from_peers"] for n in nodes) == 7 * d
    copy_ok = [e for e in events if e["phase"] == "copy" and e["status"] == "ok"]
    assert sum("from peers" in e.get("message", "") for e in copy_ok) == 7


def test_fan_out_with_canary_a_node_that_refuses_fails_alone(fan_ws: Any) -> None:
    """Canary first (from the operator), then the rest from peers; one node trusts another key:
    it refuses the path, fails with a clear report, the others are deployed."""
    ws: FanWs = fan_ws(4, size=10)
    assert CliRunner().invoke(app, ["store-key", "show", "-w", str(ws.root)]).exit_code == 0
    public = owner_public(ws)
    _f, other = owner_key(ws.root.parent / "other-key", "someone-else")
    for node in ws.nodes:
        node.trust_store([public])
    stranger = ws.nodes[2]
    stranger.trust_store([other])
    code, _events, report, err = deploy(ws, "--fan-out", "tree:1", "--canary", "1")
    assert code == 3, (err, report)
    by = {n["node"]: n for n in report["nodes"]}
    assert by[stranger.name]["outcome"] == "failed"
    assert "not signed by a key the node trusts" in by[stranger.name]["error"]
    assert stranger.current_system() is None
    others = [n for n in ws.nodes if n is not stranger]
    assert all(by[n.name]["outcome"] == "deployed" for n in others), report
    assert by[ws.nodes[0].name]["bytes_from_operator"] > 0  # the canary seeds


def test_deploy_via_file_cache(fan_ws: Any, tmp_path: Path) -> None:
    ws: FanWs = fan_ws(3, size=20)
    assert CliRunner().invoke(app, ["store-key", "show", "-w", str(ws.root)]).exit_code == 0
    cache = tmp_path / "cache"
    for node in ws.nodes:
        node.trust_store([owner_public(ws)], substituters=[f"file://{cache}"])
    code, _events, report, err = deploy(ws, "--via", f"file://{cache}?compression=none")
    assert code == 0, (err, report)
    d = closure_bytes(report)
    assert report["operator_bytes"] == d
    assert all(n["bytes_from_caches"] == d for n in report["nodes"])
    assert ws.operator_sent < 0.2 * d


def test_bad_fan_out_and_via_are_refused_before_anything(fan_ws: Any) -> None:
    ws: FanWs = fan_ws(1, size=1)
    for args in (("--fan-out", "star"), ("--via", "ftp://x")):
        code, events, _report, err = deploy(ws, *args)
        assert code == 2 and err.startswith("error: ") and not events, err
    assert ws.nodes[0].current_system() is None


def test_plan_says_where_bytes_come_from(fan_ws: Any) -> None:
    ws: FanWs = fan_ws(3, size=2)
    result = CliRunner().invoke(
        app, ["deploy", "--plan", "--json", "--all", "-w", str(ws.root), "--fan-out", "tree:2"]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    plans = data["nodes"] if isinstance(data, dict) else data
    assert [p["copy_from"] for p in plans] == ["operator", "peers (tree:2)", "peers (tree:2)"]
    text = CliRunner().invoke(
        app, ["deploy", "--plan", "--all", "-w", str(ws.root), "--via", "file:///srv/c"]
    )
    assert text.exit_code == 0 and text.stdout.count("copy from: cache file:///srv/c") == 3


def test_unreachable_cache_falls_back_to_the_operator_and_says_so(fan_ws: Any) -> None:
    ws: FanWs = fan_ws(2, size=5)
    url = "ssh-ng://root@127.0.0.1?ssh-key=/nonexistent&base64-ssh-public-host-key=eA=="
    code, events, report, err = deploy(ws, "--via", url)
    assert code == 0, (err, report)
    falls = [e for e in events if "falling back to the operator" in e.get("message", "")]
    assert {e["node"] for e in falls} == {n.name for n in ws.nodes}
    assert all(n["bytes_from_operator"] == n["bytes_copied"] > 0 for n in report["nodes"])


def test_a_workspace_with_an_owner_key_signs_every_closure(fan_ws: Any) -> None:
    ws: FanWs = fan_ws(1, size=3)
    result = CliRunner().invoke(app, ["store-key", "show", "-w", str(ws.root)])
    name = result.stdout.strip().partition(":")[0]
    code, _events, report, err = deploy(
        ws,
    )
    assert code == 0, (err, report)
    node = ws.nodes[0]
    system = node.current_system()
    assert system is not None
    assert any(sig.startswith(name + ":") for sig in node.signatures(system))
    signers = CliRunner().invoke(app, ["store-key", "signers", node.name, "-w", str(ws.root)])
    assert signers.exit_code == 0 and name in signers.stdout


def test_an_older_workspace_gets_its_key_before_the_build(
    fan_ws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key a deploy creates is in inventory.toml when the build reads it, so the system
    deployed (mkXnode storeKeys -> xnode.trust.storeKeys) already trusts it."""
    from xnodectl import inventory as inv
    from xnodectl import storekey
    from xnodectl.deploy import build
    from xnodectl.workspace import Workspace

    ws: FanWs = fan_ws(1, size=1)
    assert storekey.load(Workspace(ws.root)) is None
    seen: list[list[str]] = []
    real = build.build

    async def spy(root: Path, *args: Any, **kw: Any) -> Any:
        seen.append(inv.load(root / inv.FILENAME).settings.store_keys)
        return await real(root, *args, **kw)

    monkeypatch.setattr(build, "build", spy)
    code, _events, report, err = deploy(ws)
    assert code == 0, (err, report)
    key = storekey.load(Workspace(ws.root))
    assert key is not None and seen == [[key.public]]
