"""xnodectl.process: the one runner. Real child processes (sh), no mocks."""

from __future__ import annotations

import asyncio

import pytest

from xnodectl import childwatch, process
from xnodectl.errors import CommandFailed, ToolMissing


def test_arun_streams_every_stderr_line_across_chunk_boundaries() -> None:
    # 3000 lines of ~100 bytes (several 64 KiB reads), then a last line without a newline.
    script = (
        'i=0; while [ $i -lt 3000 ]; do printf "%0100d\\n" $i >&2; i=$((i+1)); done; '
        "printf tail >&2; echo out"
    )
    seen: list[str] = []
    result = asyncio.run(process.arun(["sh", "-c", script], on_stderr_line=seen.append))
    assert result.stdout == "out\n"
    assert seen == [f"{i:0100d}" for i in range(3000)] + ["tail"]
    assert result.stderr.splitlines() == seen


def test_arun_failure_and_timeout_and_missing_tool() -> None:
    with pytest.raises(CommandFailed) as info:
        asyncio.run(process.arun(["sh", "-c", "echo bad >&2; exit 3"]))
    assert info.value.returncode == 3 and "bad" in info.value.stderr
    with pytest.raises(CommandFailed) as slow:
        asyncio.run(process.arun(["sleep", "5"], timeout=0.2))
    assert "timed out" in slow.value.stderr
    with pytest.raises(ToolMissing):
        asyncio.run(process.arun(["xnodectl-no-such-tool"]))


def test_arun_timeout_returns_although_a_grandchild_holds_the_pipes() -> None:
    """Like an ssh multiplexing master keeping a killed client's stdio: the timeout still ends
    the call at once (our pipe ends are closed), not when the grandchild exits."""
    import time

    started = time.monotonic()
    with pytest.raises(CommandFailed, match="timed out"):
        asyncio.run(process.arun(["sh", "-c", "sleep 30 & sleep 30"], timeout=0.3))
    assert time.monotonic() - started < 5


def test_children_are_awaited_without_a_thread_each() -> None:
    """The CLI's event loop learns of exited children by pidfd (Python 3.11's default starts a
    thread per child); results and exit codes are unchanged."""
    import threading

    before = asyncio.get_child_watcher()
    childwatch.install()
    try:

        async def main() -> tuple[int, int, list[int]]:
            idle = threading.active_count()
            tasks = [
                asyncio.ensure_future(
                    process.arun(["sh", "-c", f"sleep 0.3; exit {i}"], check=False)
                )
                for i in range(6)
            ]
            await asyncio.sleep(0.15)
            busy = threading.active_count()
            results = await asyncio.gather(*tasks)
            return idle, busy, [r.returncode for r in results]

        idle, busy, codes = asyncio.run(main())
        # Another loop afterwards, in another thread (a studio's, in the same process), still
        # starts and awaits children (3.11's own pidfd watcher stays bound to the first loop).
        later: list[int] = []
        thread = threading.Thread(
            target=lambda: later.append(
                asyncio.run(process.arun(["sh", "-c", "exit 7"], check=False)).returncode
            )
        )
        thread.start()
        thread.join(30)
    finally:
        asyncio.set_child_watcher(before)
    assert codes == list(range(6))
    assert busy == idle, f"{busy - idle} threads for 6 children"
    assert later == [7]
