"""Error messages users see: a failed tool's own error line; typo hints."""

from __future__ import annotations

from pathlib import Path

import pytest

from xnodectl.errors import CommandFailed, WalletError, did_you_mean, nearest


def test_failed_command_shows_nix_error_not_its_advice() -> None:
    stderr = (
        "warning: Git tree '/ws' is dirty\n"
        "error: unable to download 'https://example.org/x': Couldn't resolve host name (6)\n"
        "(use '--show-trace' to show detailed location information)\n"
    )
    exc = CommandFailed(["nix", "build", ".#x"], 1, stderr)
    assert exc.message.endswith(
        "error: unable to download 'https://example.org/x': Couldn't resolve host name (6)"
    )
    assert exc.hint == "rerun it to see everything: nix build '.#x'"


def test_failed_command_without_error_line_shows_last_useful_line() -> None:
    exc = CommandFailed(["ssh", "n1"], 255, "Connection refused\n(some advice)\n")
    assert exc.message == "command failed with exit code 255: Connection refused"


def test_typo_hints() -> None:
    assert nearest("prot", ["port", "root", "title"]) == "port"
    assert nearest("zzzzzz", ["port"]) is None
    assert did_you_mean("netwrk", ["network", "port"]).startswith("did you mean 'network'?")


def test_unlocking_a_missing_wallet_says_so_before_any_prompt(tmp_path: Path) -> None:
    from xnodectl.wallet import keystore

    with pytest.raises(WalletError, match="no wallet at"):
        keystore.read_password(confirm=False, path=tmp_path / "none.json")
