"""The offline option check (tests/optioncheck.py) over everything xnodectl ships, and proof that
it fails on the mistakes it exists for: a misspelled option, a value outside an enum, a wrong
type, a deprecated option, a unit ordered after network-online.target without wanting it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests import optioncheck
from tests.golden import GOLDEN

ROOT = Path(__file__).resolve().parent.parent


def _golden_variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    source = (GOLDEN / name / "example.nix").read_text()
    assert old in source, f"{old!r} is not in the {name} golden render"
    path = tmp_path / f"{name}.nix"
    path.write_text(source.replace(old, new, 1))
    return path


def _problems(tmp_path: Path, module_text: str) -> list[str]:
    path = tmp_path / "module.nix"
    path.write_text(module_text)
    problems, _ = optioncheck.check(only="extra/", extra={"m": path})
    return [f"{p.path}: {p.message}" for p in problems]


def test_everything_shipped_passes_the_check_in_seconds() -> None:
    start = time.monotonic()
    problems, checked = optioncheck.check()
    elapsed = time.monotonic() - start
    assert problems == [], "\n".join(map(str, problems))
    assert checked > 3000
    assert elapsed < 30, elapsed


def test_every_golden_render_vm_test_and_configuration_is_a_target() -> None:
    results = optioncheck.evaluate(optioncheck.load_schema())
    names = set(results)
    for template in GOLDEN.iterdir():
        assert {f"golden/{template.name}/defaults", f"golden/{template.name}/example"} <= names
    for test in (ROOT / "vm-tests").glob("*.nix"):
        assert any(n.startswith(f"vm-tests/{test.stem}/") for n in names), test.stem
    assert {"xnodeos/xnodeos", "xnodeos/xnodeos-installer"} <= names
    # Only nixpkgs' own modules are out of reach here, and they are named.
    for result in results.values():
        assert all(m.startswith("/stand-in/nixpkgs/") for m in result["externalModules"])


def test_a_misspelled_option_in_a_golden_render_fails(tmp_path: Path) -> None:
    bad = _golden_variant(tmp_path, "ipfs", "enableGC = true;", "enableGc = true;")
    problems, _ = optioncheck.check(only="extra/", extra={"ipfs": bad})
    assert [(p.path, p.message) for p in problems] == [
        ("services.kubo.enableGc", optioncheck.UNKNOWN)
    ]


def test_a_wrong_enum_value_in_a_golden_render_fails(tmp_path: Path) -> None:
    bad = _golden_variant(tmp_path, "ethereum-node", 'syncmode = "snap";', 'syncmode = "snapshot";')
    problems, _ = optioncheck.check(only="extra/", extra={"eth": bad})
    assert [(p.path, p.message) for p in problems] == [
        (
            "services.geth.sepolia.syncmode",
            "'snapshot' is not one of ['snap', 'fast', 'full', 'light']",
        )
    ]


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (
            "{ networking.firewall.allowedTCPPorts = [ 80 70000 ]; }",
            "networking.firewall.allowedTCPPorts: 70000 is outside 0..65535 at [1]",
        ),
        (
            '{ services.postgresql.ensureUsers = [ { name = "a"; ensureClauses.logn = true; } ]; }',
            "services.postgresql.ensureUsers: [0].ensureClauses.logn: no such sub-option",
        ),
        (
            '{ systemd.services.x.wantedBy = [ "multi-user.targt" ]; }',
            "systemd.services.x.wantedBy: 'multi-user.targt' does not match",
        ),
        ('{ xnode.proxy.routes."/a/".prot = 80; }', "xnode.proxy.routes./a/.prot: no such option"),
        (
            '{ services.kubo.enable = "yes"; }',
            "services.kubo.enable: expected a boolean, got string",
        ),
        (
            '{ services.journald.extraConfig = "SystemMaxUse=1G"; }',
            "services.journald.extraConfig: deprecated: removed in 26.11",
        ),
        (
            '{ systemd.services.x.after = [ "network-online.target" ]; }',
            "systemd.services.x.after: ordered after network-online.target without wants/requires",
        ),
        ("{ services.postgresql.finalPackage = null; }", "read-only option"),
    ],
)
def test_the_check_catches(module: str, expected: str, tmp_path: Path) -> None:
    problems = _problems(tmp_path, module)
    assert any(expected in p for p in problems), problems


def test_inactive_definitions_are_name_checked_only(tmp_path: Path) -> None:
    """As the real module system: a false mkIf's value is never evaluated, its names are."""
    text = '{ lib, ... }: { boot.loader.timeout = lib.mkIf false (throw "evaluated"); }'
    assert _problems(tmp_path, text) == []
    text = "{ lib, ... }: { boot.loader.timeoutt = lib.mkIf false 3; }"
    assert _problems(tmp_path, text) == [f"boot.loader.timeoutt: {optioncheck.UNKNOWN}"]


def test_wants_with_after_network_online_passes(tmp_path: Path) -> None:
    online = '[ "network-online.target" ]'
    text = f"{{ systemd.services.x = {{ after = {online}; wants = {online}; }}; }}"
    assert _problems(tmp_path, text) == []
