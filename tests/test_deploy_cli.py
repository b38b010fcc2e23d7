"""deploy/plan/node CLI without nodes: the README's offline main job, bad input, inventory
errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnodectl import inventory as inv
from xnodectl.cli import app

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    code, out, err = run("init", str(tmp_path / "ws"), "template=ethereum-node")
    assert code == 0, err
    return Path(out.strip())


def test_offline_plan_is_useful_and_quick(ws: Path) -> None:
    """No node, no network: exit 0 within ~15 s, with the unknowns and their reasons."""
    started = time.monotonic()
    code, out, err = run("deploy", "--plan", "--workspace", str(ws))
    assert code == 0, err
    assert time.monotonic() - started < 15
    assert "node local (root@127.0.0.1:2222)" in out
    assert "workspace up to date; what the node runs now is unknown" in out
    assert (
        "app ethereum-node (ethereum-node): module unchanged in apps/local/ethereum-node.nix" in out
    )
    assert "health probes: systemd" in out and "resources: >= " in out
    assert "unknown node: node 'local' has no pinned host key" in out
    assert "unknown closure:" in out


def test_plan_json_with_template_words_changes_nothing(ws: Path) -> None:
    before = (ws / inv.FILENAME).read_text()
    code, out, err = run(
        "plan", "--json", "--workspace", str(ws), "template=ipfs", "--node", "local"
    )
    assert code == 0, err
    node = json.loads(out)["nodes"][0]
    assert node["changes"] is True
    assert {a["app"]: a["change"] for a in node["apps"]}["ipfs"] == "added"
    assert (
        "+++ b/apps/local/ipfs.nix" in next(a for a in node["apps"] if a["app"] == "ipfs")["diff"]
    )
    assert "node" in node["unknown"] and "closure" in node["unknown"]
    assert (ws / inv.FILENAME).read_text() == before
    assert not (ws / "apps" / "local" / "ipfs.nix").exists()


def test_plan_shows_missing_secret(ws: Path) -> None:
    code, out, _ = run(
        "plan",
        "--workspace",
        str(ws),
        "template=vaultwarden",
        "domain=https://vault.example.org",
        "--node",
        "local",
    )
    assert code == 0
    assert "MISSING" in out and "XNODE_SECRET_VAULTWARDEN_" in out


def test_deploy_missing_secret_is_bad_input_before_anything(ws: Path) -> None:
    before = (ws / inv.FILENAME).read_text()
    code, _, err = run(
        "deploy",
        "--workspace",
        str(ws),
        "template=vaultwarden",
        "domain=https://vault.example.org",
        "--node",
        "local",
    )
    assert code == 2 and "needs secret" in err and "hint:" in err
    assert (ws / inv.FILENAME).read_text() == before


def test_node_add_list_remove(ws: Path) -> None:
    code, _, err = run(
        "node",
        "add",
        "edge-1",
        "10.0.0.7",
        "--port",
        "2200",
        "--tag",
        "eu",
        "--host-key",
        KEY,
        "--workspace",
        str(ws),
    )
    assert code == 0, err
    code, out, _ = run("node", "list", "--json", "--workspace", str(ws))
    data = json.loads(out)
    assert data["edge-1"]["port"] == 2200 and data["edge-1"]["host_key"] == KEY
    assert data["edge-1"]["tags"] == ["eu"]
    code, out, _ = run("node", "list", "--workspace", str(ws))
    assert "edge-1" in out and "NOT PINNED" in out  # 'local' has no key yet
    assert run("node", "remove", "edge-1", "--workspace", str(ws))[0] == 0
    assert "edge-1" not in inv.load(ws / inv.FILENAME).nodes


def test_node_add_keeps_authorized_keys_and_apps(ws: Path, tmp_path: Path) -> None:
    from xnodectl import process

    key = tmp_path / "op"
    process.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@laptop", "-f", str(key)])
    pub = key.with_suffix(".pub").read_text().strip()
    args = ["--authorized-key", str(key.with_suffix(".pub")), "--workspace", str(ws)]
    assert run("node", "add", "local", "10.0.0.9", *args)[0] == 0
    assert run("node", "add", "local", "10.0.0.9", *args)[0] == 0  # no duplicate
    node = inv.load(ws / inv.FILENAME).nodes["local"]
    assert node.authorized_keys == [pub] and node.host == "10.0.0.9"
    assert [a.template for a in node.apps] == ["ethereum-node"]  # apps survive an update
    code, _, err = run(
        "node", "add", "local", "h", "--authorized-key", str(key), "--workspace", str(ws)
    )
    assert code == 2 and "PRIVATE key" in err


@pytest.mark.parametrize("args", [
    ["node", "add", "Bad_Name", "h"],
    ["node", "add", "n2", "h", "--host-key", "not a key"],
    ["node", "remove", "nope"],
    ["deploy", "--node", "nope"],
    ["deploy", "--tag", "nope"],
    ["deploy", "--engine", "teleport"],
    ["deploy", "template=nope"],
    ["rollback", "--node", "nope"],
])  # fmt: skip
def test_bad_input_exits_2_with_one_line(ws: Path, args: list[str]) -> None:
    code, out, err = run(*args, "--workspace", str(ws))
    assert code == 2, (code, out, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_inventory_error_has_line_number(ws: Path) -> None:
    path = ws / inv.FILENAME
    path.write_text(path.read_text().replace("port = 2222", "port = 99999"))
    code, _, err = run("node", "list", "--workspace", str(ws))
    assert code == 2 and f"{path}:" in err and "port" in err


def test_nixops4_missing_says_how_to_get_it(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    code, _, err = run("deploy", "--engine", "nixops4", "--all", "--workspace", str(ws))
    assert code == 5 and "nixops4" in err and "nix shell github:nixops4/nixops4" in err


def test_nixops4_root_is_a_flake_of_its_own_over_the_git_tree(ws: Path) -> None:
    """The native path never needs the nixops4 repositories; the nixops4 root reads the
    workspace as git+file (tracked files only, so secrets/ cannot reach the store)."""
    from tests.nixcheck import parse_ok
    from xnodectl.workspace import Workspace, write_nixops4_root

    assert "nixops4" not in (ws / "flake.nix").read_text().split("# `xnodectl deploy", 1)[0]
    assert "inputs.nixops4" not in (ws / "flake.nix").read_text()
    root = write_nixops4_root(Workspace(ws))
    text = (root / "flake.nix").read_text()
    assert parse_ok(text)
    assert f'inputs.workspace.url = "git+file://{ws}";' in text


def test_help_lists_commands() -> None:
    _, out, _ = run("--help")
    for cmd in ("deploy", "plan", "status", "rollback", "generations", "node"):
        assert cmd in out


def test_nixops4_refuses_what_it_cannot_honour(ws: Path) -> None:
    before = (ws / inv.FILENAME).read_text()
    code, _, err = run(
        "deploy", "--engine", "nixops4", "--all", "--json", "--canary", "1",
        "--activation-timeout", "9", "--substitute-on-destination", "--workspace", str(ws),
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (
        "--engine nixops4 cannot honour --json, --canary, --activation-timeout, "
        "--substitute-on-destination" in err
    )
    assert (ws / inv.FILENAME).read_text() == before


def test_engine_choices_are_in_the_help() -> None:
    _, out, _ = run("deploy", "--help")
    assert "native" in out and "nixops4" in out


def test_deploy_without_a_terminal_needs_a_selection(ws: Path) -> None:
    code, _, err = run("deploy", "--workspace", str(ws))
    assert code == 2 and "needs a selection" in err and "--all" in err


def test_deploy_on_a_terminal_shows_the_summary_and_asks(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xnodectl.cli import deploy as cli_deploy

    monkeypatch.setattr(cli_deploy, "_interactive", lambda: True)
    before = (ws / inv.FILENAME).read_text()
    result = CliRunner().invoke(app, ["deploy", "--workspace", str(ws)], input="n\n")
    assert result.exit_code == 130, result.stderr
    assert "local (root@127.0.0.1:2222): apps unchanged" in result.stderr
    assert "Deploy to all 1 nodes? [y/N]" in result.stderr
    assert "deploy cancelled; nothing was changed" in result.stderr
    # CliRunner echoes the typed answer on stdout; nothing else may be there
    assert result.stdout.strip() == "n" and (ws / inv.FILENAME).read_text() == before


def test_plan_diff_cut_says_how_much_was_cut(ws: Path) -> None:
    args = ["plan", "--workspace", str(ws), "template=ipfs", "--node", "local"]
    code, out, err = run(*args)
    assert code == 0, err
    _, js, _ = run(*args, "--json")
    diff = next(a for a in json.loads(js)["nodes"][0]["apps"] if a["app"] == "ipfs")["diff"]
    total = len(diff.splitlines())
    assert total > 40
    assert (
        f"[... {total - 40} more lines of this diff cut; the whole diff: xnodectl plan --json]"
        in (out)
    )


def test_template_words_store_typed_values_as_init_does(ws: Path) -> None:
    from xnodectl.deploy import prepare
    from xnodectl.workspace import Workspace

    words = ("template=postgres", "port=5434")
    req = prepare.Request(prepare.Selection(("local",)), words)
    prepared = prepare.prepare(Workspace(ws), req, need_secrets=False)
    entry = next(a for a in prepared.inventory.nodes["local"].apps if a.template == "postgres")
    assert entry.params["port"] == 5434  # an int, as `init` stores it, not "5434"


UNROUTABLE = "10.255.255.1"  # connects time out: a node that is down


def test_unreachable_is_exit_6_in_every_command_and_status_shows_progress(ws: Path) -> None:
    assert (
        run("node", "add", "local", UNROUTABLE, "--host-key", KEY, "--workspace", str(ws))[0] == 0
    )
    started = time.monotonic()
    code, out, err = run("status", "--workspace", str(ws))
    assert code == 6, (out, err)
    assert time.monotonic() - started < 15
    assert "local: asking the node ..." in err and "local: asking the node: unreachable (" in err
    assert "1 of 1 nodes unreachable: local" in err
    assert "NODE" in out  # the table is still printed
    # A node that refuses (nothing listens): as unreachable, without the timeout's wait.
    add = ["node", "add", "refusing", "127.0.0.1", "--port", "1", "--host-key", KEY]
    assert run(*add, "--workspace", str(ws))[0] == 0
    for args in (["generations", "--node", "refusing"], ["rollback", "--node", "refusing"]):
        code, _, err = run(*args, "--workspace", str(ws))
        assert code == 6, (args, err)
