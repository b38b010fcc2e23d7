"""What the benchmarks share: argument checking and where the test Xnodes' stores go."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (a bad value is argparse's one-line error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def ram_dir(need_bytes: int = 8 * 1024**3) -> Path | None:
    """/dev/shm when it has `need_bytes` free, else None (the default temp dir): benchmarks keep
    their nodes' stores in RAM, so the disk's writeback does not decide which run is slower."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and shutil.disk_usage(shm).free > need_bytes else None
