"""Client of the node-side helper `xnode-activate` (docs/deploy-protocol.md is the contract).

Every call is one SSH round trip over the node's multiplexed connection (or a fresh one where a
fresh connection is the point). The helper prints exactly one JSON object; non-zero = `{"error"}`.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from xnodectl.errors import ExternalError
from xnodectl.remote import Ssh

HELPER_DIR = "/var/lib/xnode/bin"
HELPER_PATH = f"{HELPER_DIR}/xnode-activate"
# The NixOS module puts the helper on PATH; nodes that got it from us have it in HELPER_DIR.
_PRELUDE = (
    'xa() { if command -v xnode-activate >/dev/null 2>&1; then xnode-activate "$@"; '
    f'else {HELPER_PATH} "$@"; fi; }}; '
)
# A file argument is sent on stdin, written to a private temp file, passed by path, then removed.
_WITH_FILE = 'f=$(mktemp) && cat >"$f" && {{ xa "$@" {flag} "$f"; rc=$?; rm -f "$f"; exit $rc; }}'
NOT_FOUND = 127


class HelperError(ExternalError):
    def __init__(self, node: str, command: str, data: dict[str, Any]) -> None:
        self.data = data
        self.reason = str(data.get("error", "unknown error"))
        super().__init__(f"node '{node}': xnode-activate {command}: {self.reason}")


class HelperMissing(HelperError):
    pass


class _Info(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: int | str = "?"
    current: str | None = None
    profile: str | None = None
    generation: int | None = None
    booted: str | None = None
    store_free_bytes: int | None = None
    lock: Any = None
    signed_deploys: bool = False


@dataclass(frozen=True)
class Info:
    version: str
    current: str | None
    generation: int | None
    store_free_bytes: int | None
    lock: Any
    signed_deploys: bool


@dataclass(frozen=True)
class WaitResult:
    state: str  # activated | failed | rolled-back
    exit_code: int | None
    log_tail: str
    reason: str | None
    rolled_back: bool = False  # the helper already returned to the previous system


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    results: list[dict[str, Any]]

    def failures(self) -> str:
        bad = [r for r in self.results if not r.get("ok", False)]
        return (
            "; ".join(
                f"{r.get('kind', '?')} {r.get('target', '?')}: "
                f"{r.get('detail') or r.get('error') or 'failed'}"
                for r in bad
            )
            or "probe failed"
        )


def bundled_source() -> bytes:
    """The helper shipped with xnodectl (uploaded to nodes that lack it)."""
    return (
        Path(__file__).resolve().parent.parent / "data" / "node" / "xnode-activate"
    ).read_bytes()


class Helper:
    def __init__(self, ssh: Ssh) -> None:
        self.ssh = ssh
        self.node = ssh.target.node

    def command(self, args: Sequence[str], file_flag: str | None = None) -> list[str]:
        script = _PRELUDE + (_WITH_FILE.format(flag=file_flag) if file_flag else 'xa "$@"')
        return ["sh", "-c", script, "xnode-activate", *args]

    async def call(
        self, *args: str, timeout: float, fresh: bool = False, file: tuple[str, bytes] | None = None
    ) -> dict[str, Any]:
        """Run one helper command; its JSON object, or HelperError with the helper's reason."""
        flag, data = file if file else (None, None)
        result = await self.ssh.run(
            self.command(args, flag), timeout=timeout, fresh=fresh, input=data
        )
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        if result.returncode == NOT_FOUND and not lines:
            raise HelperMissing(self.node, args[0], {"error": "xnode-activate is not installed"})
        try:
            parsed = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            parsed = {"error": f"not JSON: {lines[-1][:200]}"}
        if not isinstance(parsed, dict):
            parsed = {"error": f"not a JSON object: {lines[-1][:200]}"}
        if result.returncode != 0:
            if "error" not in parsed:
                tail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
                parsed["error"] = tail[0]
            raise HelperError(self.node, args[0], parsed)
        return parsed

    async def install(self, source: bytes, timeout: float = 20) -> None:
        tmp = f"{HELPER_PATH}.new"
        script = (
            f"mkdir -p {HELPER_DIR} && cat > {tmp} && chmod 0755 {tmp} && mv {tmp} {HELPER_PATH}"
        )
        result = await self.ssh.run(["sh", "-c", script], timeout=timeout, input=source)
        if not result.ok:
            raise HelperError(self.node, "install", {"error": result.stderr.strip()[-200:]})

    async def info(self, timeout: float) -> Info:
        data = await self.call("info", timeout=timeout)
        try:
            model = _Info.model_validate(data)
        except ValidationError as exc:
            raise HelperError(self.node, "info", {"error": f"bad reply: {exc}"}) from exc
        return Info(
            str(model.version),
            model.current,
            model.generation,
            model.store_free_bytes,
            model.lock,
            model.signed_deploys,
        )

    async def lock(self, holder: str, timeout: float) -> None:
        await self.call("lock", "--holder", holder, timeout=timeout)

    async def unlock(self, holder: str, timeout: float) -> None:
        await self.call("unlock", "--holder", holder, timeout=timeout)

    async def begin(
        self,
        system: str,
        deploy_id: str,
        confirm_timeout: int,
        activation_timeout: float,
        timeout: float,
        manifest: bytes | None = None,
    ) -> str | None:
        args = [
            "begin", "--system", system, "--deploy-id", deploy_id,
            "--confirm-timeout", str(confirm_timeout),
            "--activation-timeout", str(math.ceil(activation_timeout)),
        ]  # fmt: skip
        data = await self.call(
            *args, timeout=timeout, file=("--manifest", manifest) if manifest is not None else None
        )
        previous = data.get("previous")
        return str(previous) if previous else None

    async def wait(self, deploy_id: str, wait_s: float, *, fresh: bool = False) -> WaitResult:
        seconds = math.ceil(wait_s)  # the helper takes whole seconds
        data = await self.call(
            "wait", "--deploy-id", deploy_id, "--timeout", str(seconds),
            timeout=seconds + 10, fresh=fresh,
        )  # fmt: skip
        return WaitResult(
            str(data.get("state")),
            data.get("exit_code"),
            str(data.get("log_tail") or ""),
            data.get("reason"),
            bool(data.get("rolled_back")),
        )

    async def probe(self, probes: list[dict[str, Any]], timeout: float) -> ProbeResult:
        try:
            data = await self.call(
                "probe", timeout=timeout, file=("--file", json.dumps(probes).encode())
            )
        except HelperError as exc:
            if "results" not in exc.data:
                raise
            data = exc.data
        return ProbeResult(bool(data.get("ok")), list(data.get("results") or []))

    async def confirm(self, deploy_id: str, timeout: float) -> int | None:
        """Always over a NEW connection: proves the new system still accepts SSH logins."""
        data = await self.call("confirm", "--deploy-id", deploy_id, timeout=timeout, fresh=True)
        gen = data.get("generation")
        return int(gen) if gen is not None else None

    async def abort(self, deploy_id: str, reason: str, timeout: float) -> dict[str, Any]:
        return await self.call(
            "abort", "--deploy-id", deploy_id, "--reason", reason, timeout=timeout
        )

    async def generations(self, timeout: float) -> list[dict[str, Any]]:
        data = await self.call("generations", timeout=timeout)
        return list(data.get("generations") or [])

    async def rollback(self, to: int | None, timeout: float) -> dict[str, Any]:
        args = ["rollback"] + (["--to", str(to)] if to is not None else [])
        return await self.call(*args, timeout=timeout)

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
