"""Options shared by several commands, declared once."""

from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
WsOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="Workspace directory (default: find upwards)."),
]
