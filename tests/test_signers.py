"""`xnodectl store-key signers NODE` against a real test Xnode: who signed each path of the system
it runs, and which paths carry no valid signature by a trusted key."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import XnodeFactory
from tests.fanout_rig import owner_key, sign
from tests.standin import StandinFlake
from tests.xnodes import Node
from xnodectl import inventory as inv
from xnodectl import process
from xnodectl.cli import app
from xnodectl.deploy import signers
from xnodectl.workspace import Workspace


def workspace(tmp_path: Path, node: Node, keys: list[str]) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.save(
        inv.Inventory(
            settings=inv.Settings(ssh_key=str(node.key), store_keys=keys),
            nodes={node.name: inv.Node(host=node.host, port=node.port, host_key=node.host_key)},
        )
    )
    return ws


def run_system(node: Node, system: str) -> None:
    process.run(["nix", "copy", "--to", node.store_uri, system], env=node.nix_env())
    assert node.local(f"ln -sfn {system} /run/current-system").ok


def test_signers_name_the_owner_and_flag_unsigned_paths(
    tmp_path: Path, xnode_factory: XnodeFactory
) -> None:
    key_file, public = owner_key(tmp_path / "keys", "owner-sig")
    salt = secrets.token_hex(4)
    flake = StandinFlake(tmp_path / "flake", ["n"], size=3, leaf_salt=salt).write()
    system = flake.build("n")
    sign(key_file, system)
    node = xnode_factory(1)[0]
    run_system(node, system)
    ws = workspace(tmp_path, node, [public])
    found = asyncio.run(signers.signers(ws, node.name))
    assert found.system == system and len(found.paths) == 4
    assert found.by_signer() == {"owner-sig": 4} and not found.untrusted

    # Another system, never signed: every path is flagged, and the CLI exits 1.
    flake.configure(version="2", leaf_salt=salt + "u")
    unsigned = flake.build("n")
    run_system(node, unsigned)
    found = asyncio.run(signers.signers(ws, node.name))
    assert found.by_signer() == {"(unsigned)": 4} and len(found.untrusted) == 4
    result = CliRunner().invoke(
        app, ["store-key", "signers", node.name, "--json", "-w", str(ws.root)]
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["system"] == unsigned and len(data["untrusted"]) == 4
