"""The claim service without root: it hands the approved key to root's `xnode-claim install`
(the real console script, started here the way the systemd path unit starts it) and answers only
once the installer has answered. A compromised service cannot get a second key in, nor make the
installer follow a link it planted."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.test_claim import Node, call, node  # noqa: F401 - the fixture, reused
from xnodectl import process
from xnodectl.nodeside import claim_install

INSTALL = Path(sys.executable).parent / "xnode-claim"


class PathUnit:
    """Plays xnode-claim-install.path: runs the installer whenever authorize.pub exists."""

    def __init__(self, state: Path, keys: Path, marker: Path) -> None:
        self.argv = [str(INSTALL), "install", "--state-dir", str(state),
                     "--authorized-keys", str(keys), "--marker", str(marker)]  # fmt: skip
        self.pending = state / claim_install.PENDING
        self.runs: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            if self.pending.exists() or self.pending.is_symlink():
                self.runs.append(process.run(self.argv, check=False, timeout=30).returncode)

    def settled(self, count: int) -> list[int]:
        """The exit codes once `count` runs have ended (the answer precedes the exit)."""
        deadline = time.monotonic() + 10
        while len(self.runs) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.runs

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def handoff(node: Node) -> Iterator[tuple[Node, PathUnit, Path]]:  # noqa: F811 - the fixture
    config = node.service.config
    node.service.config = replace(config, handoff=True)
    marker = config.state_dir.parent / "ssh-claimed"
    unit = PathUnit(config.state_dir, config.authorized_keys, marker)
    yield node, unit, marker
    unit.stop()


def test_unprivileged_service_hands_the_key_to_the_installer(
    handoff: tuple[Node, PathUnit, Path],
) -> None:
    svc, unit, marker = handoff
    code, answer = call(svc.base + "/claim", svc.body(svc.nonce()))
    assert code == 200, answer
    assert svc.operator_key.line().split()[1] in svc.authorized.read_text()
    assert marker.exists() and unit.settled(1) == [0]
    assert not (svc.service.config.state_dir / claim_install.PENDING).exists()
    # The service's flag alone cannot reopen claims: root's marker still closes them.
    svc.service.config.flag.unlink()
    code, answer = call(svc.base + "/claim", svc.body(svc.nonce()))
    assert code == 503 and "claims are closed" in answer["error"], answer
    assert svc.authorized.read_text().count("\n") == 1 and unit.settled(2) == [0, 1]


def test_installer_never_follows_a_planted_link(tmp_path: Path) -> None:
    state, secret = tmp_path / "state", tmp_path / "secret"
    state.mkdir()
    secret.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
    )
    (state / claim_install.PENDING).symlink_to(secret)
    keys, marker = tmp_path / "authorized_keys", tmp_path / "marker"
    with pytest.raises(claim_install.InstallRefused, match="cannot open"):
        claim_install.install(state, keys, marker)
    assert not keys.exists() and not marker.exists() and secret.exists()
    assert "error" in (state / claim_install.RESULT).read_text()
    (state / claim_install.RESULT).unlink()
    (state / claim_install.RESULT).symlink_to(tmp_path / "victim")
    (state / claim_install.PENDING).write_text("not a key\n")
    with pytest.raises(claim_install.InstallRefused):
        claim_install.install(state, keys, marker)
    assert not (tmp_path / "victim").exists()  # the answer replaced the link, never followed it
