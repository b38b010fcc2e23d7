"""How the CLI's event loop learns that a child process exited, on Python 3.11: from the child's
pidfd in the epoll of the loop that started it, as Python 3.12 and later do by default.

Python 3.11's default waits for every child on a thread of its own; on a busy 2-core machine each
such thread's start and wake-up (a GIL hand-over) stalls the event loop that drives the whole
fleet, ~70 times per 8-node deploy. 3.11's own PidfdChildWatcher is bound to one loop (the first
that ran), so a second loop in the same process (the studio's, a test's) could not start children
any more; this one asks for the running loop at every child, as 3.12's does."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVarTuple, Unpack

Ts = TypeVarTuple("Ts")


class PidfdWatcher(asyncio.AbstractChildWatcher):
    def add_child_handler(
        self, pid: int, callback: Callable[[int, int, Unpack[Ts]], object], *args: *Ts
    ) -> None:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(pid)
        loop.add_reader(pidfd, self._exited, loop, pid, pidfd, callback, args)

    @staticmethod
    def _exited(
        loop: asyncio.AbstractEventLoop,
        pid: int,
        pidfd: int,
        callback: Callable[..., object],
        args: tuple[Any, ...],
    ) -> None:
        loop.remove_reader(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # reaped by someone else: its code is lost
            code = 255
        else:
            code = os.waitstatus_to_exitcode(status)
        os.close(pidfd)
        callback(pid, code, *args)

    def remove_child_handler(self, pid: int) -> bool:  # noqa: ARG002 (the interface's)
        return True  # the reader goes with the child's exit

    def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        pass  # every child uses the loop that started it

    def is_active(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def __enter__(self) -> PidfdWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def install() -> None:
    """Before `asyncio.run` (idempotent). Nothing on Python >= 3.12 (its default does this) or on
    a kernel without pidfds (before Linux 5.3: the threads stay)."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return
    if not isinstance(asyncio.get_child_watcher(), PidfdWatcher):
        asyncio.set_child_watcher(PidfdWatcher())
