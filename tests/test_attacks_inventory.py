"""Issue 13 item 6, played by an attacker who can edit a shared inventory.toml: user and host
values that would become ssh options are refused where the file is read, before any ssh runs.

Before the fix `user = "-oProxyCommand=touch MARKER"` stood before `--` in the ssh argv and the
real ssh client ran the proxy command (this test's marker file appeared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnodectl import inventory as inv
from xnodectl.cli import app

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def workspace(tmp_path: Path, host: str, user: str) -> Path:
    ws = tmp_path / "ws"
    CliRunner().invoke(app, ["init", str(ws)])
    (ws / "inventory.toml").write_text(
        "[nodes.n1]\n"
        f"host = {inv_string(host)}\n"
        f"user = {inv_string(user)}\n"
        "port = 1\n"
        f'host_key = "{KEY}"\n'
    )
    return ws


def inv_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


@pytest.mark.parametrize(
    ("host", "user", "field"),
    [
        ("127.0.0.1", "-oProxyCommand=touch {marker}", "user"),
        ("-oProxyCommand=touch {marker}", "root", "host"),
        ("127.0.0.1", "root -oProxyCommand=touch {marker}", "user"),
        ("127.0.0.1\n-oProxyCommand=touch {marker}", "root", "host"),
        ("127.0.0.1", "root@127.0.0.1", "user"),
    ],
)
def test_inventory_values_never_reach_ssh_as_options(
    tmp_path: Path, host: str, user: str, field: str
) -> None:
    marker = tmp_path / "pwned"
    ws = workspace(tmp_path, host.format(marker=marker), user.format(marker=marker))
    result = CliRunner().invoke(app, ["status", "--node", "n1", "-w", str(ws)])
    assert result.exit_code != 0
    err = result.stderr
    assert "Traceback" not in err and err.startswith("error: ") and f"n1.{field}" in err, err
    assert not marker.exists(), "ssh ran the injected proxy command"


def test_good_hosts_are_kept_and_idn_becomes_punycode(tmp_path: Path) -> None:
    for host, stored in [
        ("10.0.0.5", "10.0.0.5"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("node-a.example.org", "node-a.example.org"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("my_alias", "my_alias"),
    ]:
        text = f'[nodes.n1]\nhost = "{host}"\nuser = "deploy.bot-1"\n'
        node = inv.parse(text, tmp_path / "inventory.toml").nodes["n1"]
        assert (node.host, node.user) == (stored, "deploy.bot-1")
