"""The one error hierarchy. Raise where the fact is known; `cli.main` is the one catch point.

Exit codes (documented in the README):
  0 success · 1 internal error · 2 bad input · 3 some nodes failed · 4 all nodes failed
  5 an external tool failed or is missing (nix, ssh, nixops4, qemu)
  6 a node could not be reached (every command that talks to nodes: deploy when every failed
    node was unreachable, status, generations, rollback, claim, sign-in) · 130 interrupted
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Iterable, Sequence
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    BAD_INPUT = 2
    SOME_FAILED = 3
    ALL_FAILED = 4
    EXTERNAL = 5
    UNREACHABLE = 6
    INTERRUPTED = 130


class XnodeError(Exception):
    """Base error: a message for the user and an optional hint on what to do."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text.replace("\n", " ")


class UsageError(XnodeError):
    """The user's input is wrong: arguments, parameters, files they wrote."""

    exit_code = ExitCode.BAD_INPUT


class ParamError(UsageError):
    """A template parameter is unknown, missing, mistyped or out of range."""


class TemplateNotFound(UsageError):
    pass


class TemplateError(UsageError):
    """A template's own files are broken (metadata or module source)."""


class InventoryError(UsageError):
    pass


class CollisionError(UsageError):
    """Two apps on one node claim the same port, user or route."""


class ExternalError(XnodeError):
    """An external tool is missing or failed."""

    exit_code = ExitCode.EXTERNAL


class CommandFailed(ExternalError):
    """A subprocess exited non-zero; the command is shown ready to copy and paste."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        detail = f": {_gist(stderr)}" if stderr.strip() else ""
        super().__init__(
            f"command failed with exit code {returncode}{detail}",
            hint=f"rerun it to see everything: {shlex.join(self.argv)}",
        )


def _gist(stderr: str) -> str:
    """The line of a tool's stderr that says what went wrong: Nix's last `error:` line, else the
    last line that is not advice such as "(use '--show-trace' ...)"."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    useful = [ln for ln in lines if not (ln.startswith("(") and ln.endswith(")"))]
    return (errors or useful or lines)[-1]


class ToolMissing(ExternalError):
    pass


class DeployFailed(XnodeError):
    """Some or all nodes of a fleet run failed; per-node details were already reported."""

    def __init__(self, failed: int, total: int, unreachable: int = 0, skipped: int = 0) -> None:
        self.failed = failed
        self.total = total
        if failed and unreachable == failed:
            self.exit_code = ExitCode.UNREACHABLE
        elif failed + skipped == total:
            self.exit_code = ExitCode.ALL_FAILED
        else:
            self.exit_code = ExitCode.SOME_FAILED
        parts = [f"{failed} of {total} nodes failed"]
        if unreachable:
            parts.append(f"{unreachable} unreachable")
        if skipped:
            parts.append(f"{skipped} skipped")
        super().__init__(", ".join(parts))


def _edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: typos, including swapped neighbours, cost 1."""
    rows = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
    return rows[-1][-1]


class WalletError(UsageError):
    """The operator wallet is missing, unreadable, or the password is wrong."""


class ClaimRefused(UsageError):
    """The node refused a claim (its reason is the message); nothing was authorized."""


class NodeUnreachable(ExternalError):
    """A node (its SSH, claim or sign-in service) could not be reached or answered nonsense."""

    exit_code = ExitCode.UNREACHABLE


class Interrupted(XnodeError):
    """Ctrl-C during a fleet run; the message says which generation each node was left on."""

    exit_code = ExitCode.INTERRUPTED


class Cancelled(Interrupted):
    """The operator answered no to a question; nothing was changed."""


def nearest(word: str, choices: Iterable[str]) -> str | None:
    """The closest known name to a mistyped one, for 'did you mean' hints."""
    options = list(choices)
    if not options:
        return None
    best = min(options, key=lambda c: (_edit_distance(word, c), c))
    if _edit_distance(word, best) <= max(2, len(word) // 3):
        return best
    found = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    options = sorted(choices)
    guess = nearest(word, options)
    known = ", ".join(options) if len(options) <= 12 else ", ".join(options[:12]) + ", ..."
    if guess:
        return f"did you mean '{guess}'? known: {known}"
    return f"known: {known}"
