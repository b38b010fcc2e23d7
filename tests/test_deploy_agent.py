"""The xnode-activate client: chained commands in one SSH session, reply parsing, error mapping.
SSH is replaced by a scripted stand-in (unit level); the real helper runs in
test_deploy_nodes.py."""

from __future__ import annotations

import asyncio
import shlex
from typing import Any

import pytest

from xnodectl.deploy.agent import Agent, AgentError, AgentMissing, bundled_source
from xnodectl.process import Result
from xnodectl.remote import Session, Ssh, Target
from xnodectl.rendered import Probe


class FakeSsh(Ssh):
    """Answers every call with (stdout, code, stderr), or each call with the next of `answers`."""

    def __init__(
        self,
        session: Session,
        stdout: str = "",
        code: int = 0,
        stderr: str = "",
        answers: list[tuple[str, int]] | None = None,
    ) -> None:
        super().__init__(Target("n1", "h", 22, "root", "ssh-ed25519 AAAA"), session)
        self.stdout, self.code, self.stderr = stdout, code, stderr
        self.answers = answers
        self.calls: list[dict[str, Any]] = []

    async def run(
        self,
        command: Any,
        *,
        timeout: float,
        input: bytes | None = None,
        fresh: bool = False,
        secret: bool = False,
    ) -> Result:
        self.calls.append({"command": list(command), "input": input, "fresh": fresh})
        if self.answers is not None:
            self.stdout, self.code = self.answers.pop(0)
        return Result(("ssh",), self.code, self.stdout, self.stderr, 0.0)


@pytest.fixture
def session() -> Any:
    s = Session()
    yield s
    s.close()


def test_chain_parses_each_reply(session: Session) -> None:
    ssh = FakeSsh(
        session, '{"version": 1, "current": "/nix/store/a"}\n@@rc 0\n{"holder": "d1"}\n@@rc 0\n'
    )
    replies = asyncio.run(Agent(ssh).chain(["info"], ["lock", "--holder", "d 1"], timeout=5))
    assert replies == [{"version": 1, "current": "/nix/store/a"}, {"holder": "d1"}]
    script = ssh.calls[0]["command"][2]
    assert ssh.calls[0]["command"][:2] == ["sh", "-c"]
    assert f"xa chain 1 info 3 lock --holder {shlex.quote('d 1')};" in script


def test_chain_failure_keeps_earlier_replies(session: Session) -> None:
    ssh = FakeSsh(
        session,
        '{"current": "/nix/store/a"}\n@@rc 0\n'
        '{"error": "locked", "holder": "other", "since": 5}\n@@rc 3\n',
        code=3,
    )
    with pytest.raises(AgentError) as info:
        asyncio.run(Agent(ssh).chain(["info"], ["lock", "--holder", "d1"], timeout=5))
    assert info.value.reason == "locked" and info.value.data["holder"] == "other"
    assert info.value.done == [{"current": "/nix/store/a"}]


def test_missing_helper(session: Session) -> None:
    ssh = FakeSsh(session, "\n@@rc 127\n", code=127, stderr="sh: xnode-activate: not found")
    with pytest.raises(AgentMissing):
        asyncio.run(Agent(ssh).info(timeout=5))


def test_session_cut_short_is_an_error_not_a_success(session: Session) -> None:
    ssh = FakeSsh(session, '{"deploy_id": "d1", "previous": null}\n@@rc 0\n', code=-1)
    with pytest.raises(AgentError) as info:
        asyncio.run(Agent(ssh).chain(["begin"], ["wait"], timeout=5))
    assert info.value.done == [{"deploy_id": "d1", "previous": None}]


def test_file_goes_on_stdin_and_confirm_is_fresh(session: Session) -> None:
    ssh = FakeSsh(session, '{"ok": true, "results": []}\n@@rc 0\n')
    probe = Probe("tcp", "80", timeout=90)
    result = asyncio.run(Agent(ssh).probe([probe], timeout=5, cap=5))
    sent = b'[{"kind": "tcp", "target": "127.0.0.1:80", "status": 200, "timeout": 5}]'
    assert result.ok and ssh.calls[0]["input"] == sent
    assert '--file "$f"' in ssh.calls[0]["command"][2] and not ssh.calls[0]["fresh"]
    ssh.stdout = '{"generation": 7}\n@@rc 0\n{"unlocked": true}\n@@rc 0\n'
    gen, unlocked = asyncio.run(Agent(ssh).confirm("d1", timeout=5, unlock_holder="d1"))
    assert (gen, unlocked) == (7, True) and ssh.calls[1]["fresh"] is True


def test_confirmed_even_if_unlock_fails(session: Session) -> None:
    ssh = FakeSsh(
        session, '{"generation": 7}\n@@rc 0\n{"error": "not the holder"}\n@@rc 3\n', code=3
    )
    assert asyncio.run(Agent(ssh).confirm("d1", timeout=5, unlock_holder="d1")) == (7, False)


def test_helper_without_chain_counts_as_missing_and_the_bundled_one_is_used_after_install(
    session: Session,
) -> None:
    """A node whose installed helper predates `chain` (protocol 1) answers with its usage line:
    that is AgentMissing, so the engine uploads the bundled helper and calls it by path."""
    usage = '{"error": "usage: xnode-activate info|lock|unlock|begin (see docs)"}\n'
    ssh = FakeSsh(session, usage, code=2)
    helper = Agent(ssh)
    with pytest.raises(AgentMissing):
        asyncio.run(helper.chain(["info"], ["lock", "--holder", "d1"], timeout=5))
    assert "command -v xnode-activate" in ssh.calls[0]["command"][2]
    ssh.stdout, ssh.code = "", 0
    asyncio.run(helper.install(b"#!/bin/sh\n"))
    ssh.stdout = '{"version": 2}\n@@rc 0\n'
    assert asyncio.run(helper.call("info", timeout=5)) == {"version": 2}
    script = ssh.calls[-1]["command"][2]
    assert "command -v" not in script and "/var/lib/xnode/bin/xnode-activate" in script


def test_a_real_usage_error_of_a_chained_command_is_not_missing(session: Session) -> None:
    ssh = FakeSsh(session, '{"error": "lock: unknown argument --x"}\n@@rc 2\n', code=2)
    with pytest.raises(AgentError) as info:
        asyncio.run(Agent(ssh).chain(["lock", "--x"], timeout=5))
    assert not isinstance(info.value, AgentMissing) and "unknown argument" in info.value.reason


def test_install_missing_uploads_the_bundled_helper_and_retries(session: Session) -> None:
    usage = '{"error": "usage: xnode-activate info|lock (see docs)"}\n'
    ssh = FakeSsh(session, answers=[(usage, 2), ("", 0), ('{"generations": []}\n@@rc 0\n', 0)])
    assert asyncio.run(Agent(ssh, install_missing=True).generations(timeout=5)) == []
    upload = ssh.calls[1]
    assert upload["input"] == bundled_source() and "mv" in upload["command"][2]
    assert "/var/lib/xnode/bin/xnode-activate" in ssh.calls[2]["command"][2]
    plain = FakeSsh(session, answers=[(usage, 2)])
    with pytest.raises(AgentMissing):  # without the flag: the caller decides
        asyncio.run(Agent(plain).generations(timeout=5))
