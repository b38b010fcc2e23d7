"""The node agent's protocol: the operator's client of `xnode-activate` (docs/deploy-protocol.md is
the contract). Replies become typed values here; nothing above this module sees the JSON.

Every call is one SSH round trip over the node's multiplexed connection (or a fresh one where a
fresh connection is the point). The helper prints exactly one JSON object; non-zero = `{"error"}`.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from xnodectl.deploy.replies import (
    DeployRecord,
    Generation,
    Info,
    ProbeResult,
    WaitResult,
    generations_of,
    history_of,
    info_of,
    probe_request,
    probe_result_of,
    wait_result,
)
from xnodectl.errors import ExternalError
from xnodectl.remote import Ssh
from xnodectl.rendered import Probe

__all__ = [
    "Agent",
    "AgentError",
    "AgentMissing",
    "AgentTooOld",
    "Info",
    "WaitResult",
    "wait_result",
]

HELPER_DIR = "/var/lib/xnode/bin"
HELPER_PATH = f"{HELPER_DIR}/xnode-activate"
# The NixOS module puts the helper on PATH; nodes that got it from us have it in HELPER_DIR.
_PRELUDE = (
    'xa() { if command -v xnode-activate >/dev/null 2>&1; then xnode-activate "$@"; '
    f'else {HELPER_PATH} "$@"; fi; }}; '
)
# After we uploaded the bundled helper (none installed, or one too old to `chain`): that one.
_PRELUDE_BUNDLED = f'xa() {{ {HELPER_PATH} "$@"; }}; '

NOT_FOUND = 127
# The agent protocol this engine speaks: 3 = journaled decisions, boot-clock timers, --probe-budget,
# `pin`, `recover` (docs/deploy-protocol.md).
PROTOCOL = 3


class AgentError(ExternalError):
    def __init__(
        self,
        node: str,
        command: str,
        data: dict[str, Any],
        done: list[dict[str, Any]] | None = None,
    ) -> None:
        self.data = data
        self.done = done or []  # replies of the chained commands that ran before this one
        self.reason = str(data.get("error", "unknown error"))
        super().__init__(f"node '{node}': xnode-activate {command}: {self.reason}")


class AgentMissing(AgentError):
    """No usable helper on the node: none at all, or one older than protocol version 2 (`chain`).
    The engine then uploads the bundled one (`Agent.install`) and uses it from then on."""


class AgentTooOld(AgentError):
    """The node's helper runs but lacks a command this xnodectl asks for (it answers `usage:`)."""

    def __init__(self, node: str, command: str, data: dict[str, Any]) -> None:
        super().__init__(node, command, data)
        self.hint = (
            "the node's agent predates this xnodectl: deploy to the node with it (XnodeOS builds "
            "its agent from the deploy), then ask again"
        )


def _parse_reply(lines: list[str], stderr: str, code: int) -> dict[str, Any]:
    try:
        parsed = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        parsed = {"error": f"not JSON: {lines[-1][:200]}"}
    if not isinstance(parsed, dict):
        parsed = {"error": f"not a JSON object: {lines[-1][:200]}"}
    if code != 0 and "error" not in parsed:
        tail = stderr.strip().splitlines()[-1:] or [f"exit {code}"]
        parsed["error"] = tail[0]
    return parsed


def bundled_source() -> bytes:
    """The helper shipped with xnodectl (uploaded to nodes that lack it)."""
    return (
        Path(__file__).resolve().parent.parent / "data" / "node" / "xnode-activate"
    ).read_bytes()


class Agent:
    def __init__(
        self,
        ssh: Ssh,
        *,
        install_missing: bool = False,
        announce_install: Callable[[bool], None] | None = None,
    ) -> None:
        """`install_missing`: a node without a usable helper gets the bundled one uploaded and the
        call retried. `announce_install(done)` is told before (False) and after (True) an upload
        (the deploy pipeline reports it as a phase of its own)."""
        self.ssh = ssh
        self.node = ssh.target.node
        self.install_missing = install_missing
        self.announce_install = announce_install
        self.bundled = False  # True once install() uploaded the bundled helper

    def command(self, chain: Sequence[Sequence[str]], file_flag: str | None = None) -> list[str]:
        """One `sh -c` running `xnode-activate chain`: the commands in order in ONE helper process,
        stopping at the first failure.

        Each command's exit code follows its JSON line as `@@rc N`; a file (manifest, probes) comes
        on stdin, is written to a private temp file and passed to the FIRST command by path. A
        helper that is not installed at all shows as `@@rc 127` with nothing before it.
        """
        parts = [_PRELUDE_BUNDLED if self.bundled else _PRELUDE]
        if file_flag:
            parts.append('f=$(mktemp) && trap \'rm -f "$f"\' EXIT && cat >"$f" || exit 1; ')
        words = []
        for index, args in enumerate(chain):
            extra = f' {file_flag} "$f"' if file_flag and index == 0 else ""
            words.append(f"{len(args) + (2 if extra else 0)} {shlex.join(args)}{extra}")
        parts.append(
            f"xa chain {' '.join(words)}; rc=$?; "
            f"[ $rc -ne {NOT_FOUND} ] || printf '\\n@@rc %s\\n' $rc; exit $rc"
        )
        return ["sh", "-c", "".join(parts)]

    async def chain(
        self,
        *chain: Sequence[str],
        timeout: float,
        fresh: bool = False,
        file: tuple[str, bytes] | None = None,
    ) -> list[dict[str, Any]]:
        """Several helper commands in ONE SSH round trip; AgentError at the first that failed."""
        try:
            return await self._chain(chain, timeout=timeout, fresh=fresh, file=file)
        except AgentMissing:
            if not self.install_missing or self.bundled:
                raise
            if self.announce_install is not None:
                self.announce_install(False)
            await self.install(bundled_source())
            if self.announce_install is not None:
                self.announce_install(True)
            return await self._chain(chain, timeout=timeout, fresh=fresh, file=file)

    async def _chain(
        self,
        chain: Sequence[Sequence[str]],
        *,
        timeout: float,
        fresh: bool,
        file: tuple[str, bytes] | None,
    ) -> list[dict[str, Any]]:
        flag, data = file if file else (None, None)
        result = await self.ssh.run(
            self.command(chain, flag), timeout=timeout, fresh=fresh, input=data
        )
        replies: list[dict[str, Any]] = []
        pending: list[str] = []
        for line in result.stdout.splitlines():
            if line.startswith("@@rc "):
                code = int(line.split()[1])
                reply = _parse_reply(pending, result.stderr, code)
                if code == NOT_FOUND and "error" in reply and not pending:
                    raise AgentMissing(
                        self.node,
                        chain[len(replies)][0],
                        {"error": "xnode-activate is not installed"},
                    )
                if code != 0:
                    raise AgentError(self.node, chain[len(replies)][0], reply, replies)
                replies.append(reply)
                pending = []
            elif line.strip():
                pending.append(line)
        if result.returncode == 2 and "@@rc " not in result.stdout:
            first = _parse_reply(pending, result.stderr, 2)
            if str(first.get("error", "")).startswith("usage:"):  # a helper without `chain`
                raise AgentMissing(
                    self.node,
                    chain[0][0],
                    {"error": "the node's xnode-activate predates protocol version 2 (chain)"},
                )
        if len(replies) < len(chain):  # the session ended early (killed, connection lost)
            raise AgentError(
                self.node,
                chain[len(replies)][0],
                _parse_reply(pending, result.stderr, result.returncode),
                replies,
            )
        return replies

    async def call(
        self, *args: str, timeout: float, fresh: bool = False, file: tuple[str, bytes] | None = None
    ) -> dict[str, Any]:
        """Run one helper command; its JSON object, or AgentError with the helper's reason."""
        return (await self.chain(args, timeout=timeout, fresh=fresh, file=file))[0]

    async def install(self, source: bytes, timeout: float = 20) -> None:
        tmp = f"{HELPER_PATH}.new"
        script = (
            f"mkdir -p {HELPER_DIR} && cat > {tmp} && chmod 0755 {tmp} && mv {tmp} {HELPER_PATH}"
        )
        result = await self.ssh.run(["sh", "-c", script], timeout=timeout, input=source)
        if not result.ok:
            raise AgentError(self.node, "install", {"error": result.stderr.strip()[-200:]})
        self.bundled = True

    async def info(self, timeout: float) -> Info:
        return self.parse_info(await self.call("info", timeout=timeout))

    def parse_info(self, data: dict[str, Any]) -> Info:
        try:
            return info_of(data)
        except ValidationError as exc:
            raise AgentError(self.node, "info", {"error": f"bad reply: {exc}"}) from exc

    async def unlock(self, holder: str, timeout: float) -> None:
        await self.call("unlock", "--holder", holder, timeout=timeout)

    def begin_args(
        self,
        system: str,
        deploy_id: str,
        confirm_timeout: int,
        activation_timeout: float,
        probe_budget: int = 0,
    ) -> list[str]:
        """`probe_budget`: seconds the health probes may take; the node's dead-man timer covers
        them AND the confirm window, so a slow but healthy app is not rolled back."""
        return [
            "begin", "--system", system, "--deploy-id", deploy_id,
            "--confirm-timeout", str(confirm_timeout),
            "--activation-timeout", str(math.ceil(activation_timeout)),
            "--probe-budget", str(probe_budget),
        ]  # fmt: skip

    async def pin(self, system: str, timeout: float) -> None:
        """A GC root on the node for `system` before it is copied there (until `begin`)."""
        await self.call("pin", "--system", system, timeout=timeout)

    async def ensure_version(self, info: Info) -> None:
        """Nodes whose agent predates PROTOCOL get the bundled one (as nodes without one do)."""
        if not self.bundled and not (info.version.isdecimal() and int(info.version) >= PROTOCOL):
            if self.announce_install is not None:
                self.announce_install(False)
            await self.install(bundled_source())
            if self.announce_install is not None:
                self.announce_install(True)

    def wait_args(self, deploy_id: str, wait_s: float) -> list[str]:
        return ["wait", "--deploy-id", deploy_id, "--timeout", str(math.ceil(wait_s))]

    async def wait(self, deploy_id: str, wait_s: float, *, fresh: bool = False) -> WaitResult:
        data = await self.call(
            *self.wait_args(deploy_id, wait_s), timeout=math.ceil(wait_s) + 10, fresh=fresh
        )
        return wait_result(data)

    async def probe(
        self, probes: Sequence[Probe], timeout: float, cap: int | None = None
    ) -> ProbeResult:
        try:
            data = await self.call(
                "probe", timeout=timeout, file=("--file", probe_request(probes, cap))
            )
        except AgentError as exc:
            if "results" not in exc.data:
                raise
            data = exc.data
        try:
            return probe_result_of(data)
        except ValidationError as exc:
            raise AgentError(self.node, "probe", {"error": f"bad reply: {exc}"}) from exc

    async def confirm(
        self, deploy_id: str, timeout: float, unlock_holder: str | None = None
    ) -> tuple[int | None, bool]:
        """Always over a NEW connection: proves the new system still accepts SSH logins.

        With `unlock_holder`, the deploy lock is released in the same round trip; returns
        (generation, whether the lock was released).
        """
        chain: list[list[str]] = [["confirm", "--deploy-id", deploy_id]]
        if unlock_holder is not None:
            chain.append(["unlock", "--holder", unlock_holder])
        try:
            replies = await self.chain(*chain, timeout=timeout, fresh=True)
        except AgentError as exc:
            if not exc.done:
                raise
            replies = exc.done  # confirmed; only the unlock failed
        gen = replies[0].get("generation")
        return (int(gen) if gen is not None else None), len(replies) == len(chain)

    async def abort(self, deploy_id: str, reason: str, timeout: float) -> dict[str, Any]:
        return await self.call(
            "abort", "--deploy-id", deploy_id, "--reason", reason, timeout=timeout
        )

    async def generations(self, timeout: float) -> list[Generation]:
        data = await self.call("generations", timeout=timeout)
        try:
            return generations_of(data)
        except ValidationError as exc:
            raise AgentError(self.node, "generations", {"error": f"bad reply: {exc}"}) from exc

    async def history(self, limit: int, timeout: float) -> list[DeployRecord]:
        """The node's own record of its newest `limit` deploys, newest first (read-only)."""
        try:
            data = await self.call("history", "--limit", str(limit), timeout=timeout)
        except AgentError as exc:
            if not exc.reason.startswith("usage:"):
                raise
            raise AgentTooOld(
                self.node, "history", {"error": "this node's agent has no `history` command"}
            ) from None
        try:
            return history_of(data)
        except (ValidationError, KeyError, TypeError) as exc:
            raise AgentError(self.node, "history", {"error": f"bad reply: {exc}"}) from exc

    async def rollback(
        self, to: int | None, timeout: float, manifest: bytes | None = None
    ) -> int | None:
        """Switch to generation `to` (default: the previous one); the generation now booted.
        `manifest`: the owner-signed manifest a node with signed deploys requires."""
        args = ["rollback"] + (["--to", str(to)] if to is not None else [])
        file = ("--manifest", manifest) if manifest is not None else None
        gen = (await self.call(*args, timeout=timeout, file=file)).get("generation")
        return int(gen) if isinstance(gen, int | str) and str(gen).isdecimal() else None

    async def missing_paths(self, paths: Sequence[str], timeout: float) -> set[str]:
        """Which of `paths` the node's store lacks (one round trip)."""
        out = await self.run_script(
            "xargs -r nix-store --check-validity --print-invalid",
            [],
            timeout=timeout,
            input="\n".join(paths).encode(),
        )
        return set(out.split())

    async def run_script(
        self, script: str, args: Sequence[str], timeout: float, input: bytes | None = None
    ) -> str:
        """A read-only shell one-liner on the node (closure queries for the plan)."""
        result = await self.ssh.run(["sh", "-c", script, "sh", *args], timeout=timeout, input=input)
        if not result.ok:
            raise ExternalError(
                f"node '{self.node}': {shlex.join(['sh', '-c', script])} failed: "
                f"{result.stderr.strip()[-200:]}"
            )
        return result.stdout
