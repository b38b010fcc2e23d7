"""The stand-in systems' app units (StandinFlake(serve_apps=True)): a real template's rendered
health probes (ipfs: a systemd unit, a TCP port, two HTTP paths with their statuses) pass on two
test Xnodes deployed by the real engine, and fail where the real app would: on a node whose app
died (while the other node still serves the same ports on the shared loopback), on a node whose
app turns unhealthy, and when the port is taken by someone else. (A rollback to a system without
the app: tests/test_studio_browser.py.)
Systems are stand-ins (tests/standin.py), not NixOS."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

from tests.test_deploy_nodes import make_ws
from tests.xnodes import NIX_CONF, Node, free_port


def _ipfs_words() -> list[str]:
    return ["template=ipfs", f"gateway_port={free_port()}", f"api_port={free_port()}",
            f"swarm_port={free_port()}"]  # fmt: skip


def _probe(node: Node, words: list[str]) -> tuple[bool, dict[str, tuple[bool, str]]]:
    """The app's rendered probes, run by the node's agent (1 s each, as the engine sends them):
    all ok, and per target (ok, detail)."""
    from xnodectl import app_request
    from xnodectl.deploy.replies import probe_request

    app = app_request.render_request(app_request.parse_request(words, None))
    node.put("/tmp/probes.json", probe_request(app.probes, cap=1).decode())
    code, out = node.activate_helper("probe", "--file", "/tmp/probes.json")
    results = out["results"]
    assert isinstance(results, list) and code == (0 if out["ok"] else 1), out
    return bool(out["ok"]), {r["target"]: (r["ok"], r["detail"]) for r in results}


def test_ipfs_probes_pass_on_two_nodes_and_fail_where_the_app_is_gone(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, monkeypatch: object
) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("NIX_CONFIG", NIX_CONF)
    n1, n2 = xnode_factory(2)
    ws = make_ws(tmp_path, [n1, n2], serve_apps=True)
    words = _ipfs_words()
    code, events, report, err = ws.deploy("--all", *words)
    assert code == 0, (err, report)
    for n in (n1, n2):
        probe = [e for e in events if e["node"] == n.name and e["phase"] == "probe"]
        assert probe[-1]["status"] == "ok", probe
        assert n.local("systemctl is-active ipfs.service").stdout.strip() == "active"

    # n1's app dies: its probes fail although n2 serves the same ports on the same loopback.
    assert n1.local("kill $(cat /run/xnode-test/apps.pid)").ok
    ok1, checks1 = _probe(n1, words)
    ok2, checks2 = _probe(n2, words)
    assert (ok1, ok2) == (False, True), (checks1, checks2)
    assert checks1["ipfs.service"] == (False, "inactive")
    http = [c for t, c in checks1.items() if t.startswith("http://")]
    assert http == [(False, "HTTP 000"), (False, "HTTP 000")]  # both paths unanswered
    # n2's app turns unhealthy: its HTTP probes get 500.
    n2.local("touch /run/xnode-test/unhealthy")
    _, checks2 = _probe(n2, words)
    assert [c for t, c in checks2.items() if t.startswith("http://")] == [
        (False, "HTTP 500"), (False, "HTTP 500")
    ]  # fmt: skip


def test_a_taken_port_fails_the_switch(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, monkeypatch: object
) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("NIX_CONFIG", NIX_CONF)
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], serve_apps=True)
    assert ws.deploy("--all")[0] == 0
    words = _ipfs_words()
    port = int(words[1].split("=")[1])
    with socket.socket() as taken:  # someone else's listener, without SO_REUSEPORT
        taken.bind(("127.0.0.1", port))
        taken.listen()
        code, _, report, _ = ws.deploy("--all", *words)
    (r,) = report["nodes"]
    assert code == 4 and r["outcome"] in {"failed", "rolled-back"}, r
    assert "activation exited with code 4" in r["rollback_reason"] and n1.generation() == 1
    log = n1.local("cat /var/lib/xnode-test/app-server.log").stdout
    assert f"port {port}: [Errno 98] Address already in use" in log


def test_a_templates_tcp_probe_reaches_the_nodes_own_port() -> None:
    """Templates name a tcp probe by its port only; the agent connects to HOST:PORT, and read a
    bare port as a host (0.0.15.161 for 4001): every tcp probe failed on every node."""
    from xnodectl.deploy.replies import probe_request
    from xnodectl.rendered import Probe

    sent = json.loads(probe_request([Probe("tcp", "4001"), Probe("tcp", "10.0.0.1:22")]))
    assert [p["target"] for p in sent] == ["127.0.0.1:4001", "10.0.0.1:22"]
