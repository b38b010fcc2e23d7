"""The test-Xnode harness itself: private stores, pinned host keys, faults, lifecycle."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import XnodeFactory
from tests.standin import StandinFlake
from tests.xnodes import Fault
from xnodectl import process


def test_nodes_are_private_and_pinned(xnode_factory: XnodeFactory, tmp_path: Path) -> None:
    started = time.monotonic()
    a, b = xnode_factory(2)
    print(f"2 test Xnodes started in {time.monotonic() - started:.2f} s")
    flake = StandinFlake(tmp_path / "flake", [a.name, b.name]).write()
    system = flake.build(a.name)
    process.run(["nix", "copy", "--to", a.store_uri, system], env=a.nix_env())
    assert a.has_path(system) and not b.has_path(system)
    assert a.run("cat /etc/xnode/node-name").stdout.strip() == a.name
    # b's host key is not a's: connecting to a with b's known_hosts must fail (pinning works).
    wrong = [arg.replace(str(a.known_hosts), str(b.known_hosts)) for arg in a.ssh_argv("true")]
    assert process.run(wrong, check=False).returncode == 255


def test_lifecycle_and_faults(xnode_factory: XnodeFactory, tmp_path: Path) -> None:
    (node,) = xnode_factory(1)
    flake = StandinFlake(tmp_path / "flake", [node.name]).write()
    system = flake.build()
    process.run(["nix", "copy", "--to", node.store_uri, system], env=node.nix_env())
    assert node.run(f"{system}/bin/switch-to-configuration test").ok
    assert node.current_system() == system and node.generation() is None
    node.stop()
    assert node.run("true", timeout=10).returncode == 255
    assert node.current_system() == system  # /run survives sshd dying
    node.start()
    node.set_fault(Fault.ACTIVATION_FAILS)
    failed = node.run(f"{system}/bin/switch-to-configuration test")
    assert failed.returncode == 4 and "injected fault" in failed.stderr
    assert node.run(f"{system}/bin/switch-to-configuration test").ok  # faults are one-shot
    node.set_fault(Fault.REFUSE_SSH)
    assert node.run(f"{system}/bin/switch-to-configuration test").ok
    assert "Permission denied" in node.run("true").stderr
    node.local(f"{system}/bin/switch-to-configuration test")
    assert node.run("true").ok
    assert node.activations()[-1] == f"activating {system} test"


def test_fill_store(xnode_factory: XnodeFactory) -> None:
    (node,) = xnode_factory(1, store_size="32m")
    assert node.fill_store(leave_bytes=256 * 1024) <= 256 * 1024
    node.unfill_store()
