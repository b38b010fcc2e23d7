"""The engine's output writer (deploy/events.py `_Writer`): a line is written at once when that
cannot block, else by a thread; a reader that stops reading never stalls the deploy, and nothing
is lost or reordered on the way from one to the other."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from pathlib import Path
from typing import IO

from xnodectl.deploy.events import _Writer


def _put(writer: _Writer, out: IO[str], line: str) -> None:
    def write() -> None:
        out.write(line)
        out.flush()

    writer.put(write, out, len(line))


def test_a_full_pipe_sends_lines_to_the_thread_in_order_then_writes_resume_at_once() -> None:
    read_fd, write_fd = os.pipe()
    out = os.fdopen(write_fd, "w", encoding="utf-8")
    writer = _Writer()
    # 300 lines of 1 KB: several times what a pipe holds, and nobody reads yet.
    first = [f"{i:05d} {'x' * 1000}\n" for i in range(300)]
    started = time.monotonic()
    for line in first:
        _put(writer, out, line)
    assert time.monotonic() - started < 2.0  # a write that blocked would hang here for good
    assert writer._queued > 0 and writer._queued > writer._done  # the full pipe: the thread's

    got = bytearray()

    def read_all() -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as reader:
            while chunk := reader.read(65536):
                got.extend(chunk)

    reader = threading.Thread(target=read_all)
    reader.start()
    writer.flush()  # the reader drains the pipe; the thread catches up
    queued = writer._queued
    second = [f"after {i}\n" for i in range(50)]
    for line in second:
        _put(writer, out, line)
    assert writer._queued == queued  # an empty queue and room in the pipe: written at once
    writer.flush()
    out.close()
    reader.join(10)
    assert got.decode() == "".join(first + second)


def test_a_regular_file_is_written_at_once_and_no_thread_starts(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    writer = _Writer()
    with path.open("a", encoding="utf-8") as out:
        for i in range(100):
            _put(writer, out, f"{i}\n")
            assert path.read_text().endswith(f"{i}\n")  # on disk when put returns
    assert writer._thread is None


def test_memory_is_written_at_once() -> None:
    writer = _Writer()
    out = io.StringIO()
    _put(writer, out, "one\n")
    assert out.getvalue() == "one\n" and writer._thread is None


def test_a_socket_or_terminal_goes_to_the_thread() -> None:
    """Poll cannot promise that a write to these does not block: the thread writes them."""
    left, right = socket.socketpair()
    with left, right:
        out = left.makefile("w", encoding="utf-8")
        writer = _Writer()
        _put(writer, out, "hello\n")
        assert writer._thread is not None and writer._queued == 1
        writer.flush()
        assert right.recv(100) == b"hello\n"
        out.close()


def test_a_reader_gone_loses_output_but_not_the_run() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    out = os.fdopen(write_fd, "w", encoding="utf-8")
    writer = _Writer()
    _put(writer, out, "nobody reads this\n")  # EPIPE (SIGPIPE is ignored by Python): dropped
    writer.flush()
    try:
        out.close()
    except BrokenPipeError:
        pass
