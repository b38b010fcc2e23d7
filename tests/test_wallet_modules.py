"""The wallet area's NixOS modules, evaluated by the real Nix evaluator with a stand-in `lib`.

Current nixpkgs cannot be evaluated here (Nix 2.8, no network), so a stand-in implements the few
`lib` functions the modules call, with nixpkgs' semantics for these uses (mkIf/mkMerge as plain
conditionals and merges, option types as inert values). This catches typos, wrong attribute paths
and wrong logic in the modules' `config`; the option types themselves are checked in CI's VM tests.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from tests.nixcheck import eval_json, parse_ok
from tests.nixstub import RESOLVE, STUB_LIB
from xnodectl import process
from xnodectl.wallet.manifest import build_manifest, sign_manifest
from xnodectl.wallet.signer import KeystoreSigner

ROOT = Path(__file__).resolve().parent.parent
FILES = [
    "modules/claim.nix",
    "modules/wallet-gate.nix",
    "modules/signed-deploys.nix",
    "vm-tests/claim.nix",
    "vm-tests/wallet-gate.nix",
]

PACKAGE = "/nix/store/00000000000000000000000000000000-xnodectl"


def evaluate(module: str, config: dict[str, Any], expr: str = "m.config") -> Any:
    """`expr` over `m`, the module applied to the stand-in lib and the given config."""
    source = (
        f"let lib = {STUB_LIB}; config = builtins.fromJSON {json.dumps(json.dumps(config))};"
        f" m0 = import {ROOT / module} {{ inherit lib config; }};"
        f" m = m0 // {{ config = {RESOLVE} m0.config; }}; in {expr}"
    )
    return eval_json(source)


def base_config(**xnode: Any) -> dict[str, Any]:
    if "proxy" in xnode:
        xnode["proxy"] = {"sites": {}, **xnode["proxy"]}
    return {
        "networking": {"hostName": "node-a", "domain": None, "fqdn": "node-a"},
        "environment": {"etc": {"xnode/owner-address": {}}},
        "xnode": {"package": PACKAGE, "owner": {"address": None, "sshKeys": []}, **xnode},
    }


@pytest.mark.parametrize("path", FILES)
def test_files_parse(path: str) -> None:
    assert parse_ok((ROOT / path).read_text())


@pytest.mark.parametrize(
    ("module", "option"),
    [("modules/claim.nix", "claim"), ("modules/wallet-gate.nix", "walletGate")],
)
def test_domain_pattern_accepts_host_port_only(module: str, option: str) -> None:
    text = (ROOT / module).read_text()
    pattern = re.search(
        r'domains = mkOption \{\s*type = types.listOf \(types.strMatching ("[^"]*")', text
    )
    assert pattern, option
    names = ["node:8740", "[::1]:8740", "apps.example.org", "a b", "x;y", "x\\\\y", ""]
    got = eval_json(
        f"map (s: builtins.match {pattern.group(1)} s != null) "
        f"[ {' '.join(json.dumps(n) for n in names)} ]"
    )
    assert got == [True, True, True, False, False, False, False]


CLAIM = {
    "enable": True,
    "port": 8740,
    "listenAddress": "0.0.0.0",
    "chainId": 1,
    "domains": ["node-a:8740"],
    "hostKey": "/etc/ssh/ssh_host_ed25519_key.pub",
    "exitAfterClaim": True,
}


def test_claim_enabled_by_default_only_with_owner_and_no_key() -> None:
    expr = "m.options.xnode.claim.enable.default"
    owner = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    assert evaluate("modules/claim.nix", base_config(claim=CLAIM), expr) is False
    with_owner = base_config(claim=CLAIM, owner={"address": owner, "sshKeys": []})
    assert evaluate("modules/claim.nix", with_owner, expr) is True
    baked = base_config(claim=CLAIM, owner={"address": owner, "sshKeys": ["ssh-ed25519 AAAA"]})
    assert evaluate("modules/claim.nix", baked, expr) is False


def test_claim_service_unit_and_firewall() -> None:
    from xnodectl.nodeside import claim_server

    config = evaluate("modules/claim.nix", base_config(claim=CLAIM))
    assert config["services"]["openssh"]["authorizedKeysFiles"] == [
        "/var/lib/xnode/ssh/authorized_keys.d/%u"
    ]
    unit = config["systemd"]["services"]["xnode-claim"]
    assert unit["unitConfig"]["ConditionPathExists"] == [
        "/etc/xnode/owner-address",
        "!/var/lib/xnode/claim/claimed",
        "!/var/lib/xnode/ssh/claimed",
    ]
    # Not root: the network-facing service writes only its own directory; root's installer,
    # started by a path unit when the approved key appears, appends it.
    service = unit["serviceConfig"]
    assert service["User"] == "xnode-claim" and service["ReadWritePaths"] == [
        "/var/lib/xnode/claim"
    ]
    assert config["users"]["users"]["xnode-claim"]["isSystemUser"] is True
    path = config["systemd"]["paths"]["xnode-claim-install"]["pathConfig"]["PathExists"]
    assert path == "/var/lib/xnode/claim/authorize.pub"
    install = config["systemd"]["services"]["xnode-claim-install"]["serviceConfig"]
    argv = shlex.split(install["ExecStart"])
    assert "User" not in install and install["Type"] == "oneshot"
    args = claim_server._args(argv[1:])
    assert args.command == "install" and str(args.marker) == "/var/lib/xnode/ssh/claimed"
    assert str(args.state_dir) + "/authorize.pub" == path
    argv = shlex.split(unit["serviceConfig"]["ExecStart"])
    assert argv[0] == f"{PACKAGE}/bin/xnode-claim" and argv[1] == "serve"
    assert argv[argv.index("--authorized-keys") + 1] == "/var/lib/xnode/ssh/authorized_keys.d/root"
    assert "--exit-after-claim" in argv and argv[argv.index("--domain") + 1] == "node-a:8740"
    assert config["networking"]["firewall"]["allowedTCPPorts"] == [8740]
    closed = evaluate("modules/claim.nix", base_config(claim={**CLAIM, "enable": False}))
    assert "xnode-claim" not in closed.get("systemd", {}).get("services", {})
    assert "firewall" not in closed.get("networking", {})
    # The claimed key keeps working after the claim service is switched off.
    assert closed["services"]["openssh"]["authorizedKeysFiles"]


def test_claim_service_arguments_are_accepted_by_xnode_claim() -> None:
    from xnodectl.nodeside import claim_server

    unit = evaluate("modules/claim.nix", base_config(claim=CLAIM))["systemd"]["services"]
    args = claim_server._args(shlex.split(unit["xnode-claim"]["serviceConfig"]["ExecStart"])[1:])
    assert args.port == 8740 and args.domain == ["node-a:8740"] and args.exit_after_claim


GATE = {
    "enable": True,
    "port": 8741,
    "allow": ["0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"],
    "domains": ["node-a"],
    "chainId": 1,
    "sessionTtl": 3600,
    "secureCookie": "auto",
}
ROUTES = {
    "/grafana/": {"port": 3000, "walletGate": True, "public": False},
    "/open/": {"port": 3001, "walletGate": False, "public": False},
}


def test_wallet_gate_guards_only_gated_routes() -> None:
    config = evaluate(
        "modules/wallet-gate.nix",
        base_config(walletGate=GATE, proxy={"port": 80, "routes": ROUTES}),
    )
    locations = config["services"]["nginx"]["virtualHosts"]["xnode-proxy"]["locations"]
    assert "auth_request /auth/check;" in locations["/grafana/"]["extraConfig"]
    assert "error_page 401 = @xnode_signin;" in locations["/grafana/"]["extraConfig"]
    assert "/open/" not in locations
    assert locations["/auth/"]["proxyPass"] == "http://127.0.0.1:8741"
    assert "proxy_set_header Host $http_host;" in locations["/auth/"]["extraConfig"]
    check = locations["= /auth/check"]
    assert check["proxyPass"] == "http://127.0.0.1:8741/auth/check"
    assert "internal;" in check["extraConfig"]
    assert locations["@xnode_signin"]["return"] == "302 /auth/login?next=$request_uri"
    from xnodectl.nodeside import gate_server

    argv = shlex.split(config["systemd"]["services"]["xnode-gate"]["serviceConfig"]["ExecStart"])
    assert argv[0] == f"{PACKAGE}/bin/xnode-gate"
    args = gate_server._args(argv[1:])
    assert args.listen == "127.0.0.1" and args.port == 8741
    assert args.domain == ["node-a", "node-a:80"] and args.allow == GATE["allow"]
    assert [a["assertion"] for a in config["assertions"]] == [True]


def test_wallet_gate_guards_gated_sites_on_their_own_port() -> None:
    sites = {
        "chat": {"listenPort": 8082, "backendPort": 8081, "walletGate": True},
        "open": {"listenPort": 8083, "backendPort": 8084, "walletGate": False},
    }
    config = evaluate(
        "modules/wallet-gate.nix",
        base_config(walletGate=GATE, proxy={"port": 80, "routes": {}, "sites": sites}),
    )
    hosts = config["services"]["nginx"]["virtualHosts"]
    assert set(hosts) == {"xnode-site-chat"}  # no xnode-proxy vhost without gated routes
    locations = hosts["xnode-site-chat"]["locations"]
    assert "auth_request /auth/check;" in locations["/"]["extraConfig"]
    assert locations["/auth/"]["proxyPass"] == "http://127.0.0.1:8741"
    assert locations["@xnode_signin"]["return"] == "302 /auth/login?next=$request_uri"
    from xnodectl.nodeside import gate_server

    argv = shlex.split(config["systemd"]["services"]["xnode-gate"]["serviceConfig"]["ExecStart"])
    # A SIWE message for the site names its port; the gate accepts exactly these domains.
    assert gate_server._args(argv[1:]).domain == ["node-a", "node-a:80", "node-a:8082"]


def test_wallet_gate_defaults() -> None:
    config = base_config(walletGate=GATE, proxy={"port": 8080, "routes": ROUTES})
    assert (
        evaluate("modules/wallet-gate.nix", config, "m.options.xnode.walletGate.enable.default")
        is True
    )
    assert evaluate(
        "modules/wallet-gate.nix", config, "m.options.xnode.walletGate.domains.default"
    ) == ["node-a"]
    config["networking"]["hostName"] = ""
    assert (
        evaluate("modules/wallet-gate.nix", config, "m.options.xnode.walletGate.domains.default")
        == []
    )
    none = base_config(walletGate=GATE, proxy={"port": 80, "routes": {"/open/": ROUTES["/open/"]}})
    assert (
        evaluate("modules/wallet-gate.nix", none, "m.options.xnode.walletGate.enable.default")
        is False
    )


def test_signed_deploys_verifier_line_runs_the_real_verifier(tmp_path: Path) -> None:
    config = base_config(requireSignedDeploys=True, signedDeploys={"maxAge": 300, "skew": 60})
    etc = evaluate("modules/signed-deploys.nix", config)["environment"]["etc"]
    assert "xnode/require-signed-deploys" in etc
    line = etc["xnode/verify-manifest-cmd"]["text"]
    # xnode-activate splits the line on whitespace (`read -r -a`), then appends its arguments.
    words = process.run(
        ["bash", "-c", 'read -r -a v <<<"$1"; printf "%s\\n" "${v[@]}"', "_", line]
    ).stdout.split()
    assert words[0] == f"{PACKAGE}/bin/xnode-verify-manifest"
    owner = Account.create()
    system = "/nix/store/" + "c" * 32 + "-system"
    path = tmp_path / "m.json"
    path.write_bytes(sign_manifest(build_manifest("node-a", system, None), KeystoreSigner(owner)))
    argv = [
        sys.executable,
        "-m",
        "xnodectl.nodeside.verify_manifest",
        *[w.replace("/var/lib/xnode", str(tmp_path)) for w in words[1:]],
        "--manifest",
        str(path),
        "--system",
        system,
        "--node",
        "node-a",
        "--previous",
        "",
        "--owner",
        owner.address,
    ]
    assert process.run(argv, check=False).returncode == 0
    assert (tmp_path / "deploy" / "manifests" / "audit.log").is_file()
    off = evaluate(
        "modules/signed-deploys.nix",
        base_config(requireSignedDeploys=False, signedDeploys={"maxAge": 300, "skew": 60}),
    )
    assert off == {}


def test_node_services_have_resource_limits_and_sandbox() -> None:
    """Issue 13 item 4: the units had neither TasksMax nor MemoryMax."""
    from xnodectl.nodeside import server

    claim_unit = evaluate("modules/claim.nix", base_config(claim=CLAIM))["systemd"]["services"]
    gate_config = base_config(walletGate=GATE, proxy={"port": 80, "routes": ROUTES})
    gate_unit = evaluate("modules/wallet-gate.nix", gate_config)["systemd"]["services"]
    for unit in (claim_unit["xnode-claim"], gate_unit["xnode-gate"]):
        sc = unit["serviceConfig"]
        # Room for every handler thread the server allows, plus its own few.
        assert server.MAX_CONNECTIONS + 4 <= sc["TasksMax"] <= 128
        assert sc["MemoryMax"] == "256M" and sc["LimitNOFILE"] >= 2 * server.MAX_CONNECTIONS
        assert sc["CapabilityBoundingSet"] == "" and sc["NoNewPrivileges"] is True
        assert sc["SystemCallFilter"][0] == "@system-service"
        assert sc["ProtectSystem"] == "strict" and sc["ProtectProc"] == "invisible"
    assert gate_unit["xnode-gate"]["serviceConfig"]["DynamicUser"] is True
