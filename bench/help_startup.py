"""`xnodectl --help` start-up time vs `python -c "import typer"`, measured side by side.

Runs both commands alternately (so machine load hits both alike) and prints one JSON object as
its last line: medians in seconds and `ratio` (target < 1.6).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import positive_int
from xnodectl import process

BASE = [sys.executable, "-c", "import typer"]
# What the installed `xnodectl` script runs (xnodectl.cli:run), without the venv script's shim.
HELP = [
    sys.executable,
    "-c",
    "import sys; sys.argv = ['xnodectl', '--help']; from xnodectl.cli import run; run()",
]


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    process.run(argv)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="?", type=positive_int, default=21, help="pairs to time")
    runs = parser.parse_args().runs
    for argv in (BASE, HELP):  # warm the page cache and .pyc files
        timed(argv)
    base, help_ = [], []
    for _ in range(runs):
        base.append(timed(BASE))
        help_.append(timed(HELP))
    result = {
        "runs": runs,
        "import_typer_seconds": round(statistics.median(base), 4),
        "xnodectl_help_seconds": round(statistics.median(help_), 4),
    }
    result["ratio"] = round(result["xnodectl_help_seconds"] / result["import_typer_seconds"], 3)
    result["target_ratio"] = 1.6
    print(json.dumps(result))


if __name__ == "__main__":
    main()
