"""Which engine applies a deploy, and what only the native one can honour."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from xnodectl.errors import UsageError


class Engine(StrEnum):
    NATIVE = "native"  # two-phase activation, health gate, rollback, events (this package)
    NIXOPS4 = "nixops4"  # `nixops4 apply` on a generated root (deploy/nixops4.py)


def refuse_unsupported(engine: Engine, native_only: Sequence[str]) -> None:
    """`native_only`: the options the operator gave that only the native engine honours."""
    if engine is Engine.NIXOPS4 and native_only:
        raise UsageError(
            f"--engine nixops4 cannot honour {', '.join(native_only)}",
            hint="drop them, or use the native engine (the default)",
        )
