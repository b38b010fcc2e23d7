"""Every template: loads, renders (defaults and example) to golden files that the real
nix-instantiate parses, composes with every other template, and never renders a secret value."""

from __future__ import annotations

import itertools
import os

import pytest

from tests import golden
from tests.golden import defaults_params, example_params
from tests.nixcheck import parse_ok
from xnodectl import catalog
from xnodectl.errors import CollisionError
from xnodectl.render import check_collisions, render

TEMPLATES = catalog.names()
REQUIRED = {
    "ethereum-node",
    "ethereum-validator",
    "ipfs",
    "ai-chatbot",
    "postgres",
    "static-web",
    "monitoring",
    "bitcoin-node",
    "dev-env",
    "vaultwarden",
}


def test_catalogue_has_the_promised_templates() -> None:
    missing = REQUIRED - set(TEMPLATES)
    assert not missing, f"templates missing from the catalogue: {sorted(missing)}"


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("variant", golden.VARIANTS)
def test_render_matches_golden_and_parses(name: str, variant: str) -> None:
    source = golden.rendered(catalog.get(name), variant)
    expected = golden.path(name, variant)
    assert expected.is_file(), f"no golden file {expected}: run python -m tests.golden {name}"
    assert source == expected.read_text(), f"render differs from {expected}"
    assert parse_ok(source), f"{name} {variant} render does not parse"


@pytest.mark.parametrize("name", TEMPLATES)
def test_metadata_is_sane(name: str) -> None:
    t = catalog.get(name)
    assert t.meta.health, f"{name} declares no health probes"
    assert t.meta.ports or t.meta.routes, f"{name} declares no ports"
    for pname, spec in t.params.items():
        if spec.secret:
            assert spec.default is None, f"{name}.{pname}: a secret cannot have a default"
            assert pname not in t.meta.example
    assert t.meta.example, f"{name} has no example parameter set"


@pytest.mark.parametrize("name", TEMPLATES)
def test_secret_values_never_reach_rendered_nix(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    """Secret sources (env and secret files) hold a sentinel; no render may contain it."""
    t = catalog.get(name)
    sentinel = "S3NTINEL-secret-value-7f3a"
    for pname, spec in t.params.items():
        if spec.secret:
            monkeypatch.setenv(
                f"XNODE_SECRET_{name.upper().replace('-', '_')}_{pname.upper()}", sentinel
            )
    for params in (defaults_params(t), example_params(t)):
        app = render(t, params)
        assert sentinel not in app.source
        for secret in app.secrets:
            assert secret.path.startswith("/var/lib/xnode/secrets/")
            assert secret.path in app.source, f"{name}: secret {secret.param} is never used"
            assert "/nix/store" not in secret.path


PAIRS = list(itertools.combinations(TEMPLATES, 2))


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_every_pair_composes_or_reports_a_collision(first: str, second: str) -> None:
    apps = [render(catalog.get(n), example_params(catalog.get(n))) for n in (first, second)]
    try:
        check_collisions(apps)
    except CollisionError as exc:
        assert "both" in exc.message and exc.hint
        return
    combined = "\n".join(a.source for a in apps)
    assert all(parse_ok(a.source) for a in apps), combined[:200]


@pytest.mark.parametrize("name", TEMPLATES)
def test_show_prints_an_example_command_that_renders_the_example(name: str) -> None:
    import shlex

    from typer.testing import CliRunner

    from xnodectl.cli import app

    shown = CliRunner().invoke(app, ["templates", "show", name])
    assert shown.exit_code == 0
    line = shown.stdout.strip().splitlines()[-1]
    assert line.startswith("example: xnodectl render ")
    words = shlex.split(line.removeprefix("example: xnodectl "))
    rendered = CliRunner().invoke(app, [*words, "-o", "-"])
    assert rendered.exit_code == 0, rendered.stderr
    assert rendered.stdout.rstrip("\n") == golden.path(name, "example").read_text().rstrip("\n")
