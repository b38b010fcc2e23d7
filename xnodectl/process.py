"""The one subprocess runner. Nothing else in xnodectl imports `subprocess`.

argv lists only, never a shell; `check=True` by default; every call is logged at DEBUG (secret
values never travel in argv: they go through stdin); a failure becomes `CommandFailed`, shown
shell-joined for copy and paste.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xnodectl.errors import CommandFailed, ToolMissing

logger = logging.getLogger(__name__)

HINTS: Mapping[str, str] = {
    "nix": "install Nix >= 2.8 (Debian: apt-get install nix-bin) and enable flakes",
    "nix-instantiate": "install Nix (Debian: apt-get install nix-bin)",
    "ssh": "install OpenSSH (Debian: apt-get install openssh-client)",
    "nixops4": "get nixops4 from its flake: nix shell github:nixops4/nixops4",
    "qemu-system-x86_64": "install QEMU (Debian: apt-get install qemu-system-x86)",
}


# The handle `spawn` returns, for callers that must not import subprocess themselves.
Spawned = subprocess.Popen[bytes]
# `spawn(..., stdout=PIPE)`: read a long-running child's output as it comes (the studio's deploys).
PIPE = subprocess.PIPE


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


_STREAM_LIMIT = 2**16  # asyncio's default buffer limit for subprocess streams


def _env(extra: Mapping[str, str] | None) -> dict[str, str] | None:
    if not extra:
        return None
    env = dict(os.environ)
    env.update(extra)
    return env


def _missing(argv: Sequence[str]) -> ToolMissing:
    tool = Path(argv[0]).name
    return ToolMissing(f"'{tool}' was not found on PATH", hint=HINTS.get(tool, f"install {tool}"))


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> Result:
    """Run a command to completion and capture its output as text."""
    logger.debug("run: %s", shlex.join(argv))
    started = time.monotonic()
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.run(
            list(argv),
            input=data,
            capture_output=True,
            env=_env(env),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise _missing(argv) from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(argv, -1, f"timed out after {timeout} s") from exc
    result = Result(
        argv=tuple(argv),
        returncode=proc.returncode,
        stdout=proc.stdout.decode(errors="surrogateescape"),
        stderr=proc.stderr.decode(errors="surrogateescape"),
        seconds=time.monotonic() - started,
    )
    logger.debug("exit %d after %.2fs", result.returncode, result.seconds)
    if check and not result.ok:
        raise CommandFailed(argv, result.returncode, result.stderr)
    return result


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: int | None = subprocess.DEVNULL,
    stderr: int | None = subprocess.DEVNULL,
    new_session: bool = False,
) -> Spawned:
    """Start a long-running process (a test node's sshd, a QEMU VM) and return its handle."""
    logger.debug("spawn: %s", shlex.join(argv))
    try:
        return subprocess.Popen(
            list(argv),
            env=_env(env),
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            start_new_session=new_session,
        )
    except FileNotFoundError as exc:
        raise _missing(argv) from exc


async def finish(proc: Spawned, argv: Sequence[str], *, timeout: float | None = None) -> Result:
    """Await a `spawn`ed child (started with stderr=PIPE, before the event loop ran) without
    blocking the loop. On timeout or cancellation it is killed, as in `arun`."""
    import asyncio

    started = time.monotonic()
    try:
        _, err = await asyncio.wait_for(asyncio.to_thread(proc.communicate), timeout)
    except (TimeoutError, asyncio.CancelledError):
        if proc.poll() is None:
            proc.kill()
        await asyncio.to_thread(proc.wait)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise CommandFailed(argv, -1, f"timed out after {timeout} s") from None
    result = Result(
        argv=tuple(argv),
        returncode=proc.returncode,
        stdout="",
        stderr=(err or b"").decode(errors="surrogateescape"),
        seconds=time.monotonic() - started,
    )
    logger.debug("exit %d after %.2fs", result.returncode, result.seconds)
    return result


async def arun(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    on_stderr_line: Callable[[str], None] | None = None,
    cwd: Path | None = None,
) -> Result:
    """Async twin of `run` for the fleet engine; streams stderr lines to a callback.

    On timeout or cancellation the child is killed, so no process outlives its deploy step.
    """
    import asyncio  # here: commands that never run an event loop do not pay for it

    logger.debug("arun: %s", shlex.join(argv))
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        # asyncio.create_subprocess_exec, keeping the transport: its pipes are closed below.
        transport, protocol = await loop.subprocess_exec(
            lambda: asyncio.subprocess.SubprocessStreamProtocol(limit=_STREAM_LIMIT, loop=loop),
            argv[0],
            *argv[1:],
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_env(env),
            cwd=cwd,
        )
    except FileNotFoundError as exc:
        raise _missing(argv) from exc
    proc = asyncio.subprocess.Process(transport, protocol, loop)

    err_lines: list[str] = []

    def err_line(raw: bytes) -> None:
        line = raw.decode(errors="surrogateescape")
        err_lines.append(line)
        if on_stderr_line is not None:
            on_stderr_line(line)

    async def read_err() -> None:
        # In chunks, split here: `nix copy -v` writes ~600 lines per closure, and a line-at-a-time
        # read costs an event-loop round per line with a whole fleet copying at once.
        assert proc.stderr is not None
        partial = b""
        while chunk := await proc.stderr.read(65536):
            *complete, partial = (partial + chunk).split(b"\n")
            for raw in complete:
                err_line(raw)
        if partial:
            err_line(partial)

    async def feed_and_read() -> bytes:
        if input is not None:
            assert proc.stdin is not None
            proc.stdin.write(input)
            await proc.stdin.drain()
            proc.stdin.close()
        assert proc.stdout is not None
        out = await proc.stdout.read()
        return out

    try:
        out, _ = await asyncio.wait_for(asyncio.gather(feed_and_read(), read_err()), timeout)
        await proc.wait()
    except (TimeoutError, asyncio.CancelledError):
        if proc.returncode is None:
            proc.kill()
        # asyncio's wait() also waits for the pipes to close, and a grandchild may hold them (an
        # `ssh` multiplexing master keeps a killed client's stdio): close our ends first.
        for fd in (0, 1, 2):
            pipe = transport.get_pipe_transport(fd)
            if pipe is not None:
                pipe.close()
        await proc.wait()
        if isinstance(asyncio.current_task(), asyncio.Task) and asyncio.current_task().cancelling():  # type: ignore[union-attr]  # current_task is set inside a task
            raise
        raise CommandFailed(argv, -1, f"timed out after {timeout} s") from None
    result = Result(
        argv=tuple(argv),
        returncode=proc.returncode if proc.returncode is not None else -1,
        stdout=out.decode(errors="surrogateescape"),
        stderr="\n".join(err_lines),
        seconds=time.monotonic() - started,
    )
    logger.debug("exit %d after %.2fs", result.returncode, result.seconds)
    if check and not result.ok:
        raise CommandFailed(argv, result.returncode, result.stderr)
    return result
