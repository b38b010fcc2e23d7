"""Every template's NixOS VM test (vm-tests/<name>.nix, run by `nix flake check` where a current Nix
and KVM exist): its test script evaluates from the real .nix file (stand-ins for pkgs and self),
is valid Python without pyflakes findings (the NixOS test driver lints it the same way), and runs
every health probe the template declares through the shared runner vm-tests/lib/probes.py, which
also asks the node's own deploy agent (`xnode-activate probe`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.nixcheck import eval_json
from xnodectl import catalog, process

ROOT = Path(__file__).resolve().parent.parent
STUB = """
let
  pkgs = {
    testers.runNixOSTest = test: test;
    stdenv.hostPlatform.system = "x86_64-linux";
    python3.withPackages = f: "/nix/store/00000000000000000000000000000000-python3";
    writeScript = name: text: "/nix/store/00000000000000000000000000000000-${name}";
    writeText = name: text: "/nix/store/00000000000000000000000000000000-${name}";
  };
  self = {
    nixosModules.default = { };
    packages.x86_64-linux.xnodectl = "/nix/store/00000000000000000000000000000000-xnodectl";
  };
  test = import PATH { inherit pkgs self; };
in test.testScript
"""


@pytest.mark.parametrize("name", catalog.names())
def test_vm_test_script_is_clean_python_and_runs_every_probe(name: str, tmp_path: Path) -> None:
    path = ROOT / "vm-tests" / f"{name}.nix"
    assert path.is_file(), f"template {name} has no VM test"
    script = eval_json(STUB.replace("PATH", json.dumps(str(path))))
    assert isinstance(script, str)
    compile(script, f"{path} testScript", "exec")
    file = tmp_path / f"{name}.py"
    file.write_text(script)
    # F: pyflakes' rules (unused or redefined names, ...); the driver's globals (start_all,
    # machine names, subtest, t) are undefined names here, hence F821 is left out.
    lint = process.run(
        [
            "ruff",
            "check",
            "--isolated",
            "--no-cache",
            "--select",
            "F",
            "--ignore",
            "F821",
            str(file),
        ],
        check=False,
    )
    assert lint.ok, lint.stdout
    assert "def run_health_probes(" in script
    assert f'run_health_probes(node, "{name}"' in script or (
        f'run_health_probes(machine, "{name}"' in script
    )
