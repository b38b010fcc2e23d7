"""The CLI as a new user meets it: help text, -h, output formats, hints, prompts, exit codes."""

from __future__ import annotations

import json
import os
import pty
import re
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from xnodectl.cli import app
from xnodectl.errors import ExitCode

README = Path(__file__).resolve().parent.parent / "README.md"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def command_paths() -> list[list[str]]:
    """Every command and group of the CLI, as the words that reach it."""
    found: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        found.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


PATHS = command_paths()


def test_every_command_is_walked() -> None:
    assert len(PATHS) > 20 and ["node", "add"] in PATHS and ["image", "build"] in PATHS


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "xnodectl")
def test_help_shows_words_not_python_types_and_accepts_h(path: list[str]) -> None:
    code, long_help, err = run(*path, "--help")
    assert code == 0, err
    code, short_help, err = run(*path, "-h")
    assert code == 0, err
    assert short_help == long_help
    for python_type in ("<str>", "<int", "<float", "<path>", "<list[", "<bool>", "{"):
        assert python_type not in long_help, f"{python_type} in help of {path}:\n{long_help}"


def test_help_shows_the_choices_and_readable_metavars() -> None:
    _, out, _ = run("image", "build", "--help")
    assert "--format [iso|qcow2|raw]" in out
    assert "--ssh-key PATH" in out
    _, out, _ = run("deploy", "--help")
    assert "native" in out and "nixops4" in out  # --engine's words
    assert "--max-parallel N" in out and "[WORDS...]" in out
    _, out, _ = run("init", "--help")
    assert "init [OPTIONS] DIRECTORY [WORDS...]" in out


def test_node_add_tag_help_says_what_it_does() -> None:
    _, out, _ = run("node", "add", "--help")
    assert "Give the node this tag" in out
    assert "Nodes with this tag" not in out


def test_render_to_stdout_honours_json() -> None:
    code, out, err = run("render", "-o", "-", "--json", "template=ipfs")
    assert code == 0, err
    data = json.loads(out)
    assert data["app"] == "ipfs" and data["source"].startswith("#") and "path" not in data
    code, out, _ = run("render", "-o", "-", "template=ipfs")
    assert code == 0 and not out.startswith("{")


def test_templates_show_prints_toml_values_not_python_reprs() -> None:
    code, out, _ = run("templates", "show", "ethereum-node")
    assert code == 0
    assert 'default ["eth", "net", "web3"]' in out and "default false" in out
    assert 'default "mainnet"' in out
    assert "['eth'" not in out and "default False" not in out and "default True" not in out


@pytest.mark.parametrize(
    ("word", "hint"),
    [
        ("max_peers=lots", "type it like max_peers=50"),
        ("prune_blobs=maybe", "type it like prune_blobs=true"),
        ("tx_index_blocks=1.5", "type it like tx_index_blocks=2350000"),
    ],
)
def test_wrong_type_hint_says_what_to_type(word: str, hint: str) -> None:
    code, _, err = run("render", "-o", "-", "template=ethereum-node", word)
    assert code == 2 and f"(hint: {hint})" in err, err
    assert len(err.strip().splitlines()) == 1


def test_wallet_new_refuses_a_short_password_before_asking_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a real terminal (a pty): one prompt, then the error; the wallet is not created."""
    monkeypatch.delenv("XNODECTL_WALLET_PASSWORD", raising=False)
    wallet = tmp_path / "wallet.json"
    argv = [sys.executable, "-m", "xnodectl", "wallet", "new", "--wallet", str(wallet)]
    pid, fd = pty.fork()
    if pid == 0:  # the child: xnodectl with the pty as its terminal
        os.execv(sys.executable, argv)
    seen = b""
    while b"password for" not in seen:
        seen += os.read(fd, 1024)
    os.write(fd, b"short\n")
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    text = seen.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 2, text
    assert "shorter than" in text and "repeat the password" not in text
    assert not wallet.exists()


def test_readme_exit_code_table_is_the_one_in_errors() -> None:
    """README's table lists exactly errors.ExitCode, the codes every command exits with."""
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", README.read_text(), re.M)
    assert {int(code) for code, _ in rows} == {int(c) for c in ExitCode}
