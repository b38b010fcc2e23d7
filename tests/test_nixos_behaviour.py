"""The code held to facts/nixos-behaviour.json: what nixpkgs modules (and the services they run)
do, read from their sources, and what the templates, modules and VM tests must therefore do.

Shell scripts from the renders run for real here (bash, cmp, jq) against stand-ins of the tools
they drive (kubo's `ipfs`, `grafana`) that play the real tool's worst case: kubo writes a backup
of the whole config, private key included, on every non-dry-run `profile apply`; Grafana refuses
the new admin password until its server has created the admin."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.golden import defaults_params, example_params
from tests.nixcheck import eval_json
from tests.nixstub import EVAL_MODULES, RESOLVE, STUB_LIB, STUB_PKGS
from xnodectl import catalog, process
from xnodectl.render import render
from xnodectl.rendered import RenderedApp

ROOT = Path(__file__).resolve().parent.parent
FACTS = json.loads((ROOT / "facts" / "nixos-behaviour.json").read_text())["facts"]
SCHEMA = f"(builtins.fromJSON (builtins.readFile {ROOT / 'facts' / 'nixos-options.json'})).options"


def _renders(name: str) -> list[RenderedApp]:
    t = catalog.get(name)
    return [render(t, defaults_params(t)), render(t, example_params(t))]


def _inner(rendered: RenderedApp, tmp_path: Path, config: str = "{ }") -> Any:
    """The template's own module (inside the render's wrapper), properties discharged."""
    file = tmp_path / rendered.filename
    file.write_text(rendered.source)
    return eval_json(
        f"let outer = import {file} {{ }}; inner = builtins.head outer.imports; in {RESOLVE} "
        f"(inner {{ lib = {STUB_LIB}; pkgs = {STUB_PKGS}; config = {config}; }})"
    )


def _system(modules: str) -> Any:
    return eval_json(f"({EVAL_MODULES} {{ modules = {modules}; schema = {SCHEMA}; }}).config")


def _tcp_port(multiaddr: str) -> int | None:
    match = re.fullmatch(r"/ip[46]/[^/]+/tcp/(\d+)", multiaddr)
    return int(match.group(1)) if match else None


# ---- kubo ------------------------------------------------------------------------------------


def test_ipfs_has_no_tcp_probe_on_a_port_systemd_holds(tmp_path: Path) -> None:
    """kubo-sockets: those ports accept connections while kubo is down."""
    for rendered in _renders("ipfs"):
        settings = _inner(rendered, tmp_path)["services"]["kubo"]["settings"]
        held = set()
        for key in FACTS["kubo-sockets"]["settings"]:
            section, name = key.split(".")
            value = settings[section][name]
            for addr in [value] if isinstance(value, str) else value:
                if (port := _tcp_port(addr)) is not None:
                    held.add(port)
        assert held, "the render puts no TCP address on the API or gateway"
        tcp = {int(p.target) for p in rendered.probes if p.kind == "tcp"}
        assert not tcp & held, f"TCP probes on socket-held ports {tcp & held}"
        # What still proves kubo answers: an HTTP probe on each held port.
        http = {
            int(re.findall(r":(\d+)/", p.target)[0]) for p in rendered.probes if p.kind == "http"
        }
        assert held <= http


FAKE_IPFS = r"""#!/bin/bash
# Stand-in kubo CLI: a JSON config in $IPFS_PATH/config; `profile apply` without --dry-run backs
# the whole config up first, as kubo does (config-pre-<profile>-<n>), private key included.
set -euo pipefail
cfg="$IPFS_PATH/config"
[ "$1" = --offline ] && shift
case "$1 $2" in
  "config profile")
    if [ "$4" = --dry-run ]; then
      jq -c '{OldCfg: del(.Identity.PrivKey), NewCfg: (del(.Identity.PrivKey)
        | .Swarm.ConnMgr.HighWater = 40 | .Routing.Type = "autoclient")}' "$cfg"
    else
      cp "$cfg" "$IPFS_PATH/config-pre-$4-$RANDOM"
      jq '.Swarm.ConnMgr.HighWater = 40 | .Routing.Type = "autoclient"' "$cfg" > "$cfg.new"
      mv "$cfg.new" "$cfg"
    fi ;;
  "config replace")
    new=$(cat)
    if jq -e '.Identity.PrivKey' <<< "$new" >/dev/null; then
      echo "Error: setting private key with API is not supported" >&2; exit 1
    fi
    jq --argjson new "$new" '.Identity.PrivKey as $k | $new | .Identity.PrivKey = $k' "$cfg" \
      > "$cfg.new"
    mv "$cfg.new" "$cfg" ;;
  *) echo "stand-in ipfs: unexpected $*" >&2; exit 2 ;;
esac
"""


def _module_restart(ipfs_path: Path) -> None:
    """What nixpkgs kubo.nix's preStart does first (kubo-prestart-rebuilds-config): back to the
    default config with the old identity."""
    cfg = json.loads((ipfs_path / "config").read_text())
    fresh = {"Identity": cfg["Identity"], "Swarm": {"ConnMgr": {"HighWater": 96}}, "Routing": {}}
    (ipfs_path / "config").write_text(json.dumps(fresh))


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed (apt-get install jq)")
def test_lowpower_profile_survives_restarts_and_leaves_no_key_backups(tmp_path: Path) -> None:
    rendered = _renders("ipfs")[1]
    assert rendered.params["profile"] == "lowpower"
    script = _inner(rendered, tmp_path)["systemd"]["services"]["ipfs"]["preStart"]
    jq = shutil.which("jq")
    assert jq is not None
    script = re.sub(r"/nix/store/[^ ]*/bin/jq", jq, script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ipfs").write_text(FAKE_IPFS)
    (bin_dir / "ipfs").chmod(0o755)
    repo = tmp_path / "repo"
    repo.mkdir()
    key = "CAESQPRIVATEKEY"
    (repo / "config").write_text(json.dumps({"Identity": {"PeerID": "12D3", "PrivKey": key}}))
    env = {"IPFS_PATH": str(repo), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    (repo / "config-pre-lowpower-1").write_text("left by the old template")
    for _ in range(3):  # three service starts
        _module_restart(repo)
        process.run(["bash", "-e", "-c", script], env=env)
        cfg = json.loads((repo / "config").read_text())
        assert cfg["Swarm"]["ConnMgr"]["HighWater"] == 40 and cfg["Routing"]["Type"] == "autoclient"
        assert cfg["Identity"]["PrivKey"] == key
    assert sorted(p.name for p in repo.iterdir()) == ["config"], "backups with the private key"


# ---- postgres and grafana: secret rotation ---------------------------------------------------


def _rendered_file(name: str, tmp_path: Path, variant: int = 1) -> Path:
    rendered = _renders(name)[variant]
    file = tmp_path / rendered.filename
    file.write_text(rendered.source)
    return file


def test_postgres_rotation_reapplies_once_without_restarting_the_server(tmp_path: Path) -> None:
    file = _rendered_file("postgres", tmp_path)
    config = _system(f"[ {ROOT / 'modules'} {file} {{ xnode.owner.allowUnreachable = true; }} ]")
    secret = "/var/lib/xnode/secrets/postgres/password"
    watchers = [n for n, p in config["systemd"]["paths"].items() if secret in str(p["pathConfig"])]
    assert watchers == ["xnode-secrets-postgres"]
    script = config["systemd"]["services"]["xnode-secrets-postgres"]["script"]
    assert script == "systemctl try-restart postgres-password.service"
    unit = config["systemd"]["services"]["postgres-password"]
    assert unit["serviceConfig"]["RemainAfterExit"] is True  # a restart runs it exactly once


FAKE_GRAFANA = r"""#!/bin/bash
# Stand-in grafana CLI: `cli ... admin reset-admin-password --password-from-stdin` fails until the
# server has created the admin (the first two calls here), then records the password it read.
set -euo pipefail
n=$(cat "$STATE/calls" 2>/dev/null || echo 0); echo $((n + 1)) > "$STATE/calls"
[[ " $* " == *" admin reset-admin-password --password-from-stdin "* ]] || exit 2
[[ " $* " == *" --homepath "* ]] || exit 2
if [ "$n" -lt 2 ]; then echo "Could not find the admin user" >&2; exit 1; fi
cat > "$STATE/password"
"""


def test_grafana_admin_password_rotation_takes_effect(tmp_path: Path) -> None:
    """grafana-admin-password-first-start-only: a unit sets it, after every start and rotation."""
    file = _rendered_file("monitoring", tmp_path)
    config = _system(f"[ {ROOT / 'modules'} {file} {{ xnode.owner.allowUnreachable = true; }} ]")
    services = config["systemd"]["services"]
    unit = services["grafana-admin-password"]
    secret = "/var/lib/xnode/secrets/monitoring/grafana_admin_password"
    assert unit["serviceConfig"]["LoadCredential"] == [f"password:{secret}"]
    assert {"grafana.service"} <= set(unit["after"]) & set(unit["requires"])
    assert "multi-user.target" in unit["wantedBy"]
    rotate = services["xnode-secrets-monitoring"]["script"]
    assert rotate == "systemctl try-restart grafana.service grafana-admin-password.service"
    # The script, run: retries until the admin exists, feeds the credential on stdin.
    state = tmp_path / "state"
    (state / "bin").mkdir(parents=True)
    (state / "bin" / "grafana").write_text(FAKE_GRAFANA)
    (state / "bin" / "grafana").chmod(0o755)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "password").write_text("new-admin-password\n")
    script = unit["script"].replace("sleep 2", "sleep 0")
    env = {
        "PATH": f"{state / 'bin'}:/usr/bin:/bin",
        "CREDENTIALS_DIRECTORY": str(creds),
        "STATE": str(state),
    }
    process.run(["bash", "-c", script], env=env)
    assert (state / "password").read_text() == "new-admin-password\n"
    assert (state / "calls").read_text().strip() == "3"


# ---- VM tests ----------------------------------------------------------------------------------


def test_base_vm_test_locks_root_despite_the_test_instrumentation(tmp_path: Path) -> None:
    fact = FACTS["test-instrumentation-root-password"]
    instrumentation = tmp_path / "instrumentation.nix"
    instrumentation.write_text(
        "{ lib, ... }: { users.users.root.hashedPasswordFile = lib.mkOverride "
        f'{fact["priority"]} "/nix/store/00000000000000000000000000000000-hashed-password.root"; }}'
    )
    expr = f"""
      let
        lib = {STUB_LIB};
        pkgs = {STUB_PKGS} // {{ lib = lib; }};
        self = {{
          nixosModules.default = {ROOT / "modules"};
          packages.x86_64-linux.xnodectl = pkgs.standInPackage "xnodectl";
        }};
        test = (import {ROOT / "vm-tests" / "xnodeos-base.nix"} {{ inherit pkgs self; }}).test;
        machine = ({EVAL_MODULES} {{
          modules = [ test.nodes.machine {instrumentation} ];
          schema = {SCHEMA};
        }}).config;
      in {{
        password = machine.users.users.root.hashedPasswordFile;
        nodes = builtins.attrNames test.nodes;
        gen2 = machine.specialisation.gen2.configuration
          .environment.etc."xnode-test-generation".text;
      }}
    """
    result: Any = eval_json(expr)
    assert result["password"] is None
    # The second generation is the same machine (a specialisation), not a node of its own.
    assert result["nodes"] == ["machine", "scanner"]
    assert result["gen2"] == "2"


def test_disk_images_keep_the_esp_masks() -> None:
    """disk-image-filesystems-priority: the image's /boot at 60 drops weaker definitions."""
    prio = FACTS["disk-image-filesystems-priority"]["priority"]
    filesystems = (
        '{ "/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };'
        ' "/boot" = { device = "/dev/disk/by-label/ESP"; fsType = "vfat"; }; }'
    )
    disk_image = f"{{ fileSystems = {STUB_LIB}.mkOverride {prio} {filesystems}; }}"
    node = '{ xnode.owner.allowUnreachable = true; networking.hostName = "n"; }'
    modules = ROOT / "modules"
    base = _system(f"[ {modules} {node} ]")
    assert base["fileSystems"]["/boot"]["options"] == ["fmask=0077", "dmask=0077"]
    expr = (
        f"let node = ({EVAL_MODULES} {{ modules = [ {modules} {node} ];"
        f" schema = {SCHEMA}; }}).config; in"
        f" ({EVAL_MODULES} {{ modules = [ {modules} {node} ({disk_image})"
        f" node.image.modules.qemu-efi ]; schema = {SCHEMA}; }}).config.fileSystems"
    )
    image: Any = eval_json(expr)
    assert image["/boot"]["options"] == ["fmask=0077", "dmask=0077"]
    assert image["/boot"]["device"] == "/dev/disk/by-label/ESP"
    # The defect, shown: without the image module, the image's /boot has no masks at all.
    without: Any = eval_json(expr.replace(" node.image.modules.qemu-efi", ""))
    assert without["/boot"]["options"] == []


def test_installed_nodes_mount_by_partition_uuid() -> None:
    node = '{ xnode.owner.allowUnreachable = true; networking.hostName = "edge-1"; }'
    other = node.replace("edge-1", "edge-2")
    a = _system(f"[ {ROOT / 'modules'} {node} ]")
    b = _system(f"[ {ROOT / 'modules'} {other} ]")
    uuids = a["xnode"]["base"]["partUuids"]
    assert a["fileSystems"]["/"]["device"] == f"/dev/disk/by-partuuid/{uuids['root']}"
    assert a["fileSystems"]["/boot"]["device"] == f"/dev/disk/by-partuuid/{uuids['esp']}"
    uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12}"
    assert re.fullmatch(uuid, uuids["root"]) and re.fullmatch(uuid, uuids["esp"])
    assert uuids["root"] != uuids["esp"]
    assert set(uuids.values()).isdisjoint(b["xnode"]["base"]["partUuids"].values())
    assert "by-label" not in json.dumps(a["fileSystems"])


def test_ethereum_jwt_closure_search_has_a_positive_control() -> None:
    script = (ROOT / "vm-tests" / "ethereum-node.nix").read_text()
    block = script.split('with subtest("the JWT is not in the system closure"):', 1)[1]
    block = block.split("with subtest(", 1)[0]
    control = block.index("t.assertNotEqual(control")
    value = block.index("'{secret}'")
    assert control < value, "the control must run before the search it validates"
    assert "JWT_FILE" in block[: block.index("t.assertNotEqual(control")]


def test_installer_vm_test_starts_with_blank_disks_and_one_nixos_label() -> None:
    """qemu-vm-default-filesystems: default filesystems would format the first disk `nixos`."""
    targets = ROOT / "tests" / "nixlib" / "targets.nix"
    expr = (
        f'let t = import {targets} {{ schema = {SCHEMA}; only = "vm-tests/xnodeos-installer/"; }};'
        ' c = t."vm-tests/xnodeos-installer/installer".config; in {'
        " defaults = c.virtualisation.useDefaultFilesystems;"
        ' root = c.virtualisation.fileSystems."/"; }'
    )
    result: Any = eval_json(expr)
    assert result["defaults"] is False
    assert result["root"]["device"] == "/dev/vdb" and "label" not in json.dumps(result["root"])
