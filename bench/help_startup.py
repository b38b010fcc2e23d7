"""`xnodectl --help` start-up time vs `python -c "import typer"`, measured side by side.

Runs both commands alternately (so machine load hits both alike) and prints one JSON object as
its last line: medians in seconds and `ratio` (target < 1.6).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from xnodectl import process

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 21
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
    for argv in (BASE, HELP):  # warm the page cache and .pyc files
        timed(argv)
    base, help_ = [], []
    for _ in range(RUNS):
        base.append(timed(BASE))
        help_.append(timed(HELP))
    result = {
        "runs": RUNS,
        "import_typer_seconds": round(statistics.median(base), 4),
        "xnodectl_help_seconds": round(statistics.median(help_), 4),
    }
    result["ratio"] = round(result["xnodectl_help_seconds"] / result["import_typer_seconds"], 3)
    result["target_ratio"] = 1.6
    print(json.dumps(result))


if __name__ == "__main__":
    main()
