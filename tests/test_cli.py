"""The CLI surface of the foundation: templates list/show, render, init, errors, --version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.nixcheck import eval_json, parse_ok
from tests.nixstub import STUB_LIB
from xnodectl.cli import app

FIXTURES = Path(__file__).parent / "fixtures" / "templates"
OWNER = "owner=0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


@pytest.fixture(autouse=True)
def fixture_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XNODECTL_TEMPLATES", str(FIXTURES))


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("xnodectl ")


def test_templates_list_and_show_json() -> None:
    code, out, _ = run("templates", "list", "--json")
    assert code == 0
    assert [t["name"] for t in json.loads(out)] == ["demo"]
    code, out, _ = run("templates", "show", "demo", "--json")
    data = json.loads(out)
    schema = data["parameters"]
    assert schema["properties"]["mode"]["enum"] == ["fast", "safe"]
    assert schema["properties"]["port"]["default"] == 8080
    assert schema["properties"]["password"]["writeOnly"] is True
    assert "default" not in schema["properties"]["password"]
    assert schema["required"] == ["owner"]
    assert data["example"]["title"] == "My page"


def test_render_writes_a_module_that_parses(tmp_path: Path) -> None:
    code, out, err = run("render", "template=demo", OWNER, "title=hi", "-o", str(tmp_path))
    assert code == 0, err
    path = Path(out.strip())
    assert path == tmp_path / "demo.nix"
    source = path.read_text()
    assert parse_ok(source)
    assert "allowedTCPPorts = [ ];" in source  # not opened unless asked
    assert '"/var/lib/xnode/secrets/demo/password"' in source


def test_render_to_stdout_and_open_port() -> None:
    code, out, _ = run("render", "template=demo", OWNER, "open=true", "-o", "-")
    assert code == 0
    assert "allowedTCPPorts = [ 8080 ];" in out
    assert '--bind ${ "0.0.0.0" }' in out


def test_checksummed_address_is_rendered_checksummed() -> None:
    code, out, _ = run("render", "template=demo", OWNER.lower(), "-o", "-")
    assert code == 0
    assert '"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"' in out


INJECTIONS = [
    '"; x = builtins.getEnv "HOME"; y = "',
    '${builtins.getEnv "HOME"}',
    "''; evil = true; ''",
    "a\nb = 1;",
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_attempts_render_as_plain_strings(value: str) -> None:
    code, out, _ = run("render", "template=demo", OWNER, f"title={value}", "-o", "-")
    assert code == 0
    assert parse_ok(out)
    # Pull the description back out of the rendered module with real Nix: it is exactly the text.
    module = out.split("imports = [\n    (\n", 1)[1].rsplit("    )\n  ];", 1)[0]
    expr = (
        f"let m = ({module}) {{ config = {{}}; lib = {STUB_LIB}; "
        'pkgs = { python3 = "/py"; }; }; in m.systemd.services.demo.description'
    )
    assert eval_json(expr) == "demo page " + value


ERRORS = [
    (["render", "template=dmeo"], "unknown template 'dmeo'", "did you mean 'demo'"),
    (
        ["render", "template=demo", OWNER, "prot=1"],
        "has no parameter 'prot'",
        "did you mean 'port'",
    ),
    (["render", "template=demo", OWNER, "port=http"], "expected a whole number", None),
    (["render", "template=demo", OWNER, "port=70000"], "out of range", "1 to 65535"),
    (["render", "template=demo", OWNER, "workers=0"], "out of range", "1 to 64"),
    (["render", "template=demo", OWNER, "mode=slow"], "got 'slow'", "allowed values: fast, safe"),
    (["render", "template=demo", OWNER, "open=maybe"], "expected true or false", None),
    (["render", "template=demo"], "needs parameter 'owner'", "owner="),
    (["render", "template=demo", "owner=0x123"], "not an Ethereum address", "40 hex"),
    (
        ["render", "template=demo", "owner=0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"],
        "wrong EIP-55 checksum",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    ),
    (["render", "template=demo", OWNER, "upstream=ftp://x"], "expected an http(s)://", None),
    (["render", "template=demo", OWNER, "retention=7 days"], "expected a duration", None),
    (["render", "template=demo", OWNER, "root=relative/dir"], "expected an absolute path", None),
    (["render", "template=demo", OWNER, "root=/a/../etc"], "without '..'", None),
    (["render", "template=demo", OWNER, "password=hunter2"], "is a secret", "XNODE_SECRET_"),
    (["render", "template=demo", OWNER, "title"], "not a key=value word", "key=value"),
    (["render", "template=demo", OWNER, "port=1", "port=2"], "given twice", None),
    (["render", OWNER], "no template given", "template=NAME"),
    (["render", "template=demo", OWNER, "title=" + "x" * 201], "at most 200 characters", None),
    (["templates", "show", "nope"], "unknown template 'nope'", None),
    (["render", "template=demo", OWNER, "--bogus"], "No such option", "--help"),
]


@pytest.mark.parametrize(("args", "message", "hint"), ERRORS)
def test_bad_input_is_one_error_line_exit_2_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str, hint: str | None
) -> None:
    out_dir = tmp_path / "out"
    full = [*args, "-o", str(out_dir)] if args[0] == "render" else args
    code, out, err = run(*full)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]
    if hint:
        assert "(hint: " in lines[0] and hint in lines[0]
    assert "Traceback" not in out + err
    assert out == ""
    assert not out_dir.exists()


def test_init_creates_a_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    code, out, err = run("init", str(ws), "template=demo", OWNER, "--node", "n1")
    assert code == 0, err
    assert Path(out.strip()) == ws
    flake = (ws / "flake.nix").read_text()
    assert parse_ok(flake)
    assert "inputs.xnodectl.url = " in flake
    inventory = (ws / "inventory.toml").read_text()
    assert "[nodes.n1]" in inventory and 'template = "demo"' in inventory
    assert parse_ok((ws / "apps" / "n1" / "demo.nix").read_text())
    assert "secrets/" in (ws / ".gitignore").read_text()
    assert (ws / "secrets").stat().st_mode & 0o777 == 0o700


def test_init_refuses_an_existing_workspace(tmp_path: Path) -> None:
    assert run("init", str(tmp_path / "ws"))[0] == 0
    before = (tmp_path / "ws" / "inventory.toml").read_text()
    code, _, err = run("init", str(tmp_path / "ws"), "template=demo", OWNER)
    assert code == 2 and "already exists" in err
    assert (tmp_path / "ws" / "inventory.toml").read_text() == before


def test_init_with_bad_parameters_creates_nothing(tmp_path: Path) -> None:
    code, _, err = run("init", str(tmp_path / "ws"), "template=demo", "owner=nope")
    assert code == 2 and err.startswith("error: ")
    assert not (tmp_path / "ws").exists()
