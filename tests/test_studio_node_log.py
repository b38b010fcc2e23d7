"""The studio's node page shows the deploy audit log the NODE keeps (`xnodectl node log`, the same
service function), so it holds what this workspace never saw: a deploy made from a second
workspace, a rollback the node's own timer decided. Real test Xnodes (stand-in systems, not NixOS)
behind the real app and guard (Starlette's TestClient)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from tests.test_deploy_nodes import CONFIRM, catalogue, make_ws
from tests.xnodes import HELPER, Fault, Node
from xnodectl.deploy import journal
from xnodectl.studio import access, services
from xnodectl.studio.app import create

__all__ = ["catalogue"]  # the fixture, imported for the tests below

BASE = "http://127.0.0.1:8370"
TOKEN = "test-token-" + "y" * 20


def _page(root: Path, node: str) -> str:
    keys = access.Keys.new("127.0.0.1", 8370, TOKEN)
    with TestClient(create(services.Workspace(root), keys), base_url=BASE) as c:
        c.get(f"/?token={TOKEN}", follow_redirects=False)
        response = c.get(f"/nodes/{node}")
        assert response.status_code == 200
        return html.unescape(response.text)


def _headers(root: Path) -> list[dict[str, Any]]:
    """The journal headers of the workspace's deploys (ids alone do not order deploys begun in
    the same second)."""
    return [
        json.loads(p.read_text().splitlines()[0]) for p in journal.runs_dir(root).glob("*.jsonl")
    ]


def _rows(page: str) -> list[tuple[str, str]]:
    """(deploy id, state) of each audit log row, in page order."""
    return re.findall(r'<tr data-deploy="([^"]+)" data-state="([^"]*)">', page)


def test_the_node_page_shows_deploys_only_the_node_knows(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    mine = make_ws(tmp_path / "mine", [n1])
    other = make_ws(tmp_path / "other", [n1])  # another operator's workspace, same node
    code, _, report, err = other.deploy("--all")
    assert code == 0, (err, report)
    other.flake.configure(version="2")
    n1.set_fault(Fault.REFUSE_SSH)  # the confirmation never arrives: the node's timer decides
    assert other.deploy("--all")[0] == 4
    ids = [h["id"] for h in sorted(_headers(other.root), key=lambda h: float(h["started"]))]
    assert len(ids) == 2 and not list(journal.runs_dir(mine.root).glob("*.jsonl"))

    page = _page(mine.root, n1.name)
    assert _rows(page) == [(ids[1], "rolled-back"), (ids[0], "confirmed")]  # newest first
    row = page[page.index(f'data-deploy="{ids[1]}"') :]
    row = row[: row.index("</tr>")]
    assert f"rollback: no confirmation within {CONFIRM}s" in row  # no probes: no budget
    assert f"<td>{ids[1]}</td>" in row  # the holder: the lock the deploy held
    assert "dead-man timer: no confirmation within" in page  # its log's tail, in the details
    assert "rolling-back" in page and 'id="log-error"' not in page


def test_an_agent_without_history_is_one_line_on_the_page(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, catalogue: None
) -> None:
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1])
    assert ws.deploy("--all")[0] == 0
    old = tmp_path / "xnode-activate-old"
    old.write_text(
        "".join(ln for ln in HELPER.read_text().splitlines(True) if 'cmd_history "$@"' not in ln)
    )
    n1.install_helper(old)
    page = _page(ws.root, n1.name)
    error = re.search(r'<p class="error" role="alert" id="log-error">(.*?)</p>', page)
    assert error is not None and error.group(1) == (
        f"error: node '{n1.name}': xnode-activate history: this node's agent has no `history` "
        "command (hint: the node's agent predates this xnodectl: deploy to the node with it "
        "(XnodeOS builds its agent from the deploy), then ask again)"
    )
    assert 'id="generations"' in page and not _rows(page)  # the rest of the page still works
