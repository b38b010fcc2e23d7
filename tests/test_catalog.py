"""Template metadata validation: a broken template is a clear error naming the file and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from xnodectl import catalog
from xnodectl.errors import CollisionError, TemplateError
from xnodectl.render import check_collisions, render

DEMO = Path(__file__).parent / "fixtures" / "templates" / "demo"
OWNER = {"owner": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}


def broken(tmp_path: Path, old: str, new: str) -> Path:
    target = tmp_path / "demo"
    shutil.copytree(DEMO, target)
    meta = target / "template.toml"
    text = meta.read_text()
    assert old in text
    meta.write_text(text.replace(old, new, 1))
    return target


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('type = "port"', 'type = "socket"', "parameters.port.type"),
        ('category = "web"', 'category = "games"', "category"),
        ("min_ram_mb = 64", "min_ram_mb = -1", "resources.min_ram_mb"),
        ('port = "{port}"', 'port = "{prt}"', "'{prt}' names no parameter"),
        ('public_if = "open"', 'public_if = "title"', "is not a bool parameter"),
        ("default = 8080", "default = 99999", "parameters.port: bad default"),
        ('choices = ["fast", "safe"]', "choices = []", "needs 'choices'"),
        ('kind = "systemd"\nunit = "demo.service"', 'kind = "systemd"', "needs 'unit'"),
        ('name = "demo"', 'name = "other"', "differs from its directory name"),
        ('summary = "A web', 'sumary = "A web', "summary"),
        ('title = "My page"', 'titel = "My page"', "example.titel"),
        ("[parameters.title]", "[parameters.name]", "parameters.name: not a usable parameter name"),
        ("[parameters.title]", "[parameters.Title]", "parameters.Title: not a usable parameter"),
        ("[resources]", "[resources", "not valid TOML"),
        ("[parameters.title]", '[parameters.title]\nname = "x"', "parameters.title.name: extra"),
        ("default = 8080", "default = 8080\nmax = 80", "parameters.port: bad default"),
    ],
)
def test_broken_metadata_names_file_and_field(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    directory = broken(tmp_path, old, new)
    with pytest.raises(TemplateError) as info:
        catalog.load_template_dir(directory)
    assert str(directory / "template.toml") in info.value.message or "TOML" in info.value.message
    assert message in info.value.message


def test_missing_module_source(tmp_path: Path) -> None:
    directory = broken(tmp_path, "name", "name")
    (directory / "module.nix.j2").unlink()
    with pytest.raises(TemplateError, match=r"module\.nix\.j2: missing"):
        catalog.load_template_dir(directory)


def test_undefined_variable_in_module_is_a_template_error(tmp_path: Path) -> None:
    directory = broken(tmp_path, "name", "name")
    (directory / "module.nix.j2").write_text("{ ... }: { x = {{ nosuchparam }}; }\n")
    with pytest.raises(TemplateError, match="nosuchparam"):
        render(catalog.load_template_dir(directory), OWNER)


def test_sandbox_blocks_python_internals(tmp_path: Path) -> None:
    directory = broken(tmp_path, "name", "name")
    (directory / "module.nix.j2").write_text("{ ... }: { x = {{ title.__class__.__mro__ }}; }\n")
    with pytest.raises(TemplateError):
        render(catalog.load_template_dir(directory), OWNER)


def test_ident_filter_refuses_unsafe_text(tmp_path: Path) -> None:
    directory = broken(tmp_path, "name", "name")
    (directory / "module.nix.j2").write_text('{ ... }: { x = "a-{{ title|ident }}"; }\n')
    template = catalog.load_template_dir(directory)
    assert 'x = "a-ok.1"' in render(template, {**OWNER, "title": "ok.1"}).source
    with pytest.raises(Exception, match="cannot be used as a name"):
        render(template, {**OWNER, "title": 'x"; y = "'})


def test_two_instances_of_a_template_collide_on_port_and_user() -> None:
    template = catalog.load_template_dir(DEMO)
    first = render(template, OWNER, "web1")
    second = render(template, OWNER, "web2")
    with pytest.raises(CollisionError, match="both use tcp port 8080"):
        check_collisions([first, second])
    moved = render(template, {**OWNER, "port": "8081"}, "web2")
    with pytest.raises(CollisionError, match="both run as user 'demo'"):
        check_collisions([first, moved])


def test_ports_and_probes_follow_their_when_flag(tmp_path: Path) -> None:
    directory = broken(tmp_path, 'purpose = "HTTP"', 'purpose = "HTTP"\nwhen = "open"')
    meta = directory / "template.toml"
    meta.write_text(meta.read_text().replace('kind = "http"', 'kind = "http"\nwhen = "open"'))
    template = catalog.load_template_dir(directory)
    closed = render(template, OWNER)
    assert closed.ports == () and [p.kind for p in closed.probes] == ["systemd"]
    opened = render(template, {**OWNER, "open": "true"})
    assert [p.port for p in opened.ports] == [8080] and len(opened.probes) == 2


def test_when_must_name_a_bool_parameter(tmp_path: Path) -> None:
    directory = broken(tmp_path, 'purpose = "HTTP"', 'purpose = "HTTP"\nwhen = "title"')
    with pytest.raises(TemplateError, match=r"ports\[0\]\.when: 'title' is not a bool"):
        catalog.load_template_dir(directory)


def test_requires_rules_are_checked_at_load_and_render(tmp_path: Path) -> None:
    directory = broken(
        tmp_path, "[example]", '[[requires]]\nwhen = "open"\nparams = ["tags"]\n\n[example]'
    )
    template = catalog.load_template_dir(directory)
    render(template, OWNER)  # rule not triggered
    with pytest.raises(Exception, match="parameter 'tags' is needed when open=true"):
        render(template, {**OWNER, "open": "yes"})
    assert render(template, {**OWNER, "open": "yes", "tags": "a,b"}).params["tags"] == ["a", "b"]
    bad = broken(
        tmp_path / "2", "[example]", '[[requires]]\nwhen = "open"\nparams = ["nope"]\n\n[example]'
    )
    with pytest.raises(TemplateError, match=r"requires\[0\]: 'nope' is not a non-secret parameter"):
        catalog.load_template_dir(bad)


def test_app_names_are_checked() -> None:
    template = catalog.load_template_dir(DEMO)
    with pytest.raises(Exception, match="app name"):
        render(template, OWNER, "Bad Name")
