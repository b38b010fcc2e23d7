"""inventory.toml: the operator's comments survive every command that edits it, writes are
locked (no lost update between two commands), values are validated before anything is written,
and parameters are stored with their types."""

from __future__ import annotations

import os
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.xnodes import NIX_CONF, Node
from xnodectl import inventory as inv
from xnodectl import process
from xnodectl.cli import app

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

COMMENTED = """\
# Fleet of the Lisbon office. Ask Ana before removing a node.

[settings]
max_parallel = 4 # the uplink is slow

# The box under the desk.
[nodes.desk]
host = "10.0.0.2" # static lease
port = 2200
tags = ["office"]

# eth first: the others need it
[[nodes.desk.apps]]
template = "ipfs" # gateway for the team
"""
COMMENTS = [
    "# Fleet of the Lisbon office. Ask Ana before removing a node.",
    "max_parallel = 4 # the uplink is slow",
    "# The box under the desk.",
    " # static lease\n",
    'template = "ipfs" # gateway for the team',
]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def commented_workspace(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / inv.FILENAME).write_text(COMMENTED)
    return root


def assert_comments_kept(path: Path) -> None:
    text = path.read_text()
    for line in COMMENTS:
        assert line in text, f"lost {line!r}:\n{text}"
    tomllib.loads(text)  # and still valid TOML


def test_save_changes_only_what_changed(tmp_path: Path) -> None:
    path = commented_workspace(tmp_path) / inv.FILENAME
    inventory = inv.load(path)
    desk = inventory.nodes["desk"]
    desk.host_key = KEY
    desk.apps.append(inv.AppEntry(template="ai-chatbot", params={"port": 5434, "accel": "cpu"}))
    inventory.nodes["lab"] = inv.Node(host="lab.example.org")
    inv.save(inventory, path)
    assert_comments_kept(path)
    assert inv.load(path) == inventory
    text = path.read_text()
    assert "port = 22\n" not in text and 'user = "root"' not in text, "defaults stay unwritten"
    assert "port = 2200" in text  # what the operator wrote stays, even when it is unchanged

    inventory.nodes["desk"].apps = [a for a in desk.apps if a.template != "ipfs"]
    del inventory.nodes["lab"]
    inv.save(inventory, path)
    assert inv.load(path) == inventory
    assert "gateway for the team" not in path.read_text()  # the removed app's own comment goes
    assert "# The box under the desk." in path.read_text()


def test_del_and_control_characters_are_valid_toml(tmp_path: Path) -> None:
    """The old hand-written writer emitted DEL (U+007F) raw, which TOML forbids."""
    path = tmp_path / inv.FILENAME
    odd = 'a\x7fb\x1bc\u2028d"e\\f'
    inventory = inv.Inventory(
        nodes={
            "n1": inv.Node(
                host="h", tags=[odd], apps=[inv.AppEntry(template="t", params={"x": odd})]
            )
        }
    )
    inv.save(inventory, path)
    data = tomllib.loads(path.read_text())
    assert data["nodes"]["n1"]["tags"] == [odd]
    assert inv.load(path) == inventory


def test_comments_survive_node_add_and_remove(tmp_path: Path) -> None:
    ws = commented_workspace(tmp_path / "ws")
    code, _, err = run(
        "node", "add", "lab", "10.0.0.9", "--host-key", KEY, "--tag", "eu", "-w", str(ws)
    )
    assert code == 0, err
    code, _, err = run("node", "add", "desk", "10.0.0.3", "--port", "2200", "-w", str(ws))
    assert code == 0, err
    assert_comments_kept(ws / inv.FILENAME)
    assert 'host = "10.0.0.3" # static lease' in (ws / inv.FILENAME).read_text()
    assert inv.load(ws / inv.FILENAME).nodes["lab"].tags == ["eu"]
    assert run("node", "remove", "lab", "-w", str(ws))[0] == 0
    assert_comments_kept(ws / inv.FILENAME)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("host", "-oProxyCommand=touch /tmp/pwned"),
        ("host", "a; rm -rf /"),
        ("host", "a host"),
        ("host", "a\x07b"),
        ("user", "-oProxyCommand=x"),
        ("user", "root; rm -rf /"),
        ("user", "ro ot"),
    ],
)
def test_node_add_refuses_hosts_and_users_ssh_could_misread(
    tmp_path: Path, field: str, value: str
) -> None:
    ws = commented_workspace(tmp_path / "ws")
    before = (ws / inv.FILENAME).read_text()
    options = ["--scan", "-w", str(ws)]  # --scan: refused before any ssh-keyscan
    if field == "user":
        options += ["--user", value]
    words = [value] if field == "host" else ["h"]
    code, out, err = run("node", "add", *options, "--", "n2", *words)
    assert code == 2, (out, err)
    assert err.startswith(f"error: {field}: ") and len(err.strip().splitlines()) == 1, err
    assert (ws / inv.FILENAME).read_text() == before


def test_internationalised_host_is_stored_as_punycode(tmp_path: Path) -> None:
    ws = commented_workspace(tmp_path / "ws")
    assert run("node", "add", "n2", "bücher.example", "-w", str(ws))[0] == 0
    assert inv.load(ws / inv.FILENAME).nodes["n2"].host == "xn--bcher-kva.example"


def test_node_name_rule_holds_for_init_node_add_and_the_file(tmp_path: Path) -> None:
    code, _, err = run("init", str(tmp_path / "w0"), "--port", "70000")
    assert code == 2 and "65535" in err and not (tmp_path / "w0").exists()
    code, out, err = run("init", str(tmp_path / "w1"), "--node", "Bad_Name")
    assert code == 2 and "node name 'Bad_Name' is not allowed" in err, (out, err)
    assert not (tmp_path / "w1").exists()
    ws = commented_workspace(tmp_path / "w2")
    code, _, err = run("node", "add", "Bad_Name", "h", "-w", str(ws))
    assert code == 2 and "node name 'Bad_Name' is not allowed" in err
    (ws / inv.FILENAME).write_text('[nodes.Bad_Name]\nhost = "h"\n')
    code, _, err = run("node", "list", "-w", str(ws))
    assert code == 2 and "node name 'Bad_Name' is not allowed" in err


def test_init_and_deploy_words_store_typed_parameters(tmp_path: Path) -> None:
    code, _, err = run("init", str(tmp_path / "ws"), "template=ai-chatbot", "port=5434")
    assert code == 0, err
    app_entry = tomllib.loads((tmp_path / "ws" / inv.FILENAME).read_text())["nodes"]["local"]
    assert app_entry["apps"][0]["params"] == {"port": 5434}


@pytest.mark.slow
def test_simultaneous_node_adds_lose_nothing(tmp_path: Path) -> None:
    """30 pairs of real `xnodectl node add` processes started at the same moment: all 60 nodes
    are in the file afterwards (before the lock, about 5 of 30 pairs lost one)."""
    ws = commented_workspace(tmp_path / "ws")
    env = {**os.environ, "XNODECTL_WORKSPACE": str(ws)}
    cmd = [sys.executable, "-m", "xnodectl", "node", "add"]
    for pair in range(30):
        procs = [
            process.spawn([*cmd, f"n{pair}-{side}", f"10.1.{pair}.{side + 1}"], env=env)
            for side in range(2)
        ]
        assert [p.wait() for p in procs] == [0, 0]
    nodes = inv.load(ws / inv.FILENAME).nodes
    assert {f"n{p}-{s}" for p in range(30) for s in range(2)} <= set(nodes)
    assert_comments_kept(ws / inv.FILENAME)
    assert not [p.name for p in ws.iterdir() if p.name.endswith(".tmp")]


def test_deploy_template_words_keep_comments_and_store_typed_values(
    xnode_factory: Callable[..., list[Node]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real `xnodectl deploy template=probe-web port=N` onto a real test Xnode."""
    from tests.test_deploy_nodes import PROBE_MODULE, PROBE_TEMPLATE, make_ws

    root = tmp_path / "templates" / "probe-web"
    root.mkdir(parents=True)
    (root / "template.toml").write_text(PROBE_TEMPLATE)
    (root / "module.nix.j2").write_text(PROBE_MODULE)
    monkeypatch.setenv("XNODECTL_TEMPLATES", str(root.parent))
    monkeypatch.setenv("NIX_CONFIG", NIX_CONF)
    (n1,) = xnode_factory(1)
    ws = make_ws(tmp_path, [n1], health=True)
    path = ws.root / inv.FILENAME
    path.write_text("# the test fleet\n" + path.read_text() + "# end of the fleet\n")
    (ws.root / "secrets" / "probe-web").mkdir(parents=True)
    (ws.root / "secrets" / "probe-web" / "token").write_text("s3cret")
    code, _, report, err = ws.deploy(
        "--node", n1.name, "template=probe-web", f"port={n1.health_port}"
    )
    assert code == 0, (err, report)
    text = path.read_text()
    assert text.startswith("# the test fleet\n") and "# end of the fleet" in text, text
    params = tomllib.loads(text)["nodes"][n1.name]["apps"][0]["params"]
    assert params == {"port": n1.health_port}  # an integer, not "8123"


def test_a_save_keeps_what_another_command_saved_since_the_load(tmp_path: Path) -> None:
    """A deploy loads the inventory, builds for minutes, then saves its template words: a node
    added meanwhile by `node add` stays, and the deploy's own change lands."""
    ws = commented_workspace(tmp_path / "ws")
    path = ws / inv.FILENAME
    deploying = inv.load(path)
    code, _, err = run("node", "add", "lab", "10.0.0.9", "-w", str(ws))
    assert code == 0, err
    deploying.nodes["desk"].apps.append(inv.AppEntry(template="ai-chatbot", params={"port": 5434}))
    inv.save(deploying, path)
    after = inv.load(path)
    assert set(after.nodes) == {"desk", "lab"}
    assert [a.template for a in after.nodes["desk"].apps] == ["ipfs", "ai-chatbot"]
    assert_comments_kept(path)


def test_removing_the_last_app_leaves_no_empty_array(tmp_path: Path) -> None:
    path = commented_workspace(tmp_path) / inv.FILENAME
    inventory = inv.load(path)
    inventory.nodes["desk"].apps = []
    inv.save(inventory, path)
    assert "apps" not in path.read_text()
    assert inv.load(path) == inventory


def test_an_inventory_written_inline_stays_valid_inline(tmp_path: Path) -> None:
    path = tmp_path / inv.FILENAME
    path.write_text('nodes = { a = { host = "h", apps = [{ template = "ipfs" }] } } # inline\n')
    inventory = inv.load(path)
    inventory.nodes["a"].apps.append(inv.AppEntry(template="x", params={"k": 1}))
    inventory.nodes["b"] = inv.Node(host="h2", apps=[inv.AppEntry(template="y")])
    inv.save(inventory, path)
    assert inv.load(path) == inventory
    assert path.read_text().count("\n") == 1 and path.read_text().endswith("# inline\n")


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_value = st.one_of(_text, st.integers(-(2**40), 2**40), st.booleans(), st.lists(_text, max_size=3))
_app = st.builds(
    inv.AppEntry,
    template=st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True),
    params=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), _value),
)
_node = st.builds(
    inv.Node,
    host=st.sampled_from(["10.0.0.1", "::1", "node.example.org", "h"]),
    port=st.integers(1, 65535),
    tags=st.lists(_text, max_size=3),
    apps=st.lists(_app, max_size=3, unique_by=lambda a: a.instance),
)
_inventory = st.builds(
    inv.Inventory,
    nodes=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), _node, max_size=4
    ),
)


@settings(max_examples=60, deadline=None)
@given(first=_inventory, second=_inventory)
def test_any_inventory_round_trips_and_any_edit_lands(
    first: inv.Inventory, second: inv.Inventory
) -> None:
    """Whatever the content (any text, control characters included), the file is valid TOML that
    reads back as what was saved, first from scratch, then edited into another inventory."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / inv.FILENAME
        inv.save(first, path)
        assert inv.load(path) == first
        inv.save(second, path)
        assert inv.load(path) == second
