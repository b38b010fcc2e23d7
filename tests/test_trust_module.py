"""modules/trust.nix with the real Nix (stand-in lib) and the nixpkgs facts it relies on; mkXnode,
the workspace flake and `image build` hand it the owner's store keys."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.nixcheck import eval_json, parse_ok
from tests.nixstub import RESOLVE, STUB_LIB
from xnodectl import image, inventory, storekey
from xnodectl.deploy import peers
from xnodectl.errors import UsageError
from xnodectl.image_format import ImageFormat
from xnodectl.workspace import render_flake

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "modules" / "trust.nix"
KEY = "xnode-owner-0a1b2c3d:" + "A" * 43 + "="

# Facts about nixpkgs the module relies on, as read from the source (NixOS/nixpkgs
# nixos/modules/config/nix.nix at 013635633ffe11f70df1d639f563f21c42c1f778): every NixOS system
# gets the official key and substituter by list merge (so officialCache = false needs mkForce),
# require-sigs is a bool defaulting to true, the other two are listOf str.
NIXPKGS_NIX_SETTINGS = {
    "source": "NixOS/nixpkgs nixos/modules/config/nix.nix@013635633ffe11f70df1d639f563f21c42c1f778",
    "added_key": "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
    "added_substituter": "https://cache.nixos.org/",
    "added_with": {"trusted-public-keys": "plain list", "substituters": "mkAfter"},
    "types": {
        "require-sigs": "bool",
        "trusted-public-keys": "listOf str",
        "substituters": "listOf str",
    },
}
# services.openssh.authorizedKeysFiles: listOf str, %u expanded by sshd (AuthorizedKeysFile);
# modules/claim.nix relies on the same option.


def evaluate(trust: dict[str, Any], *, resolve: bool = True) -> Any:
    """The module with the stand-in lib; `resolve` discharges its properties (mkIf, mkMerge) as
    the module system does, else they stay markers (to see an mkForce)."""
    config = {"xnode": {"trust": {"storeKeys": [], "officialCache": True, "substituters": [],
                                  "servePeers": True, **trust}}}  # fmt: skip
    module = f"import {MODULE} {{ inherit lib config; }}"
    config_of = f"{RESOLVE} m.config" if resolve else "m.config"
    result = f"let m = {module}; in {{ config = {config_of}; }}"
    source = (
        f"let lib = {STUB_LIB}; config = builtins.fromJSON {json.dumps(json.dumps(config))};"
        f" in {result}"
    )
    return eval_json(source)


def test_defaults_add_the_owner_keys_next_to_the_official_cache() -> None:
    module = evaluate({"storeKeys": [KEY], "substituters": ["file:///mnt/cache"]})
    nix = module["config"]["nix"]["settings"]
    assert nix["require-sigs"] is True
    assert nix["trusted-public-keys"] == [KEY, NIXPKGS_NIX_SETTINGS["added_key"]]
    assert nix["substituters"] == ["file:///mnt/cache", NIXPKGS_NIX_SETTINGS["added_substituter"]]
    ssh = module["config"]["services"]["openssh"]
    assert ssh["authorizedKeysFiles"] == [f"{peers.FANOUT_DIR}/keys/%u"]
    assert module["config"]["environment"]["etc"]["xnode/store-keys"]["text"] == KEY + "\n"


def test_without_the_official_cache_only_the_owner_is_trusted() -> None:
    settings = evaluate({"storeKeys": [KEY], "officialCache": False, "servePeers": False})
    nix = settings["config"]["nix"]["settings"]
    assert nix["trusted-public-keys"] == [KEY] and nix["substituters"] == []
    assert "authorizedKeysFiles" not in settings["config"].get("services", {}).get("openssh", {})
    raw = evaluate({"storeKeys": [KEY], "officialCache": False}, resolve=False)
    forced = raw["config"]["nix"]["settings"]["trusted-public-keys"]
    assert forced["_type"] == "override" and forced["priority"] == 50  # beats nixpkgs' list


def test_nixpkgs_facts_match_the_code() -> None:
    source = MODULE.read_text()
    assert f'officialKey = "{NIXPKGS_NIX_SETTINGS["added_key"]}"' in source
    assert f'officialCache = "{NIXPKGS_NIX_SETTINGS["added_substituter"]}"' in source
    assert "mkForce" in source  # the official entries arrive by list merge
    assert storekey.OFFICIAL_CACHE_KEY == NIXPKGS_NIX_SETTINGS["added_key"]
    assert re.match(inventory.STORE_PUBLIC_KEY, storekey.OFFICIAL_CACHE_KEY)


def test_module_key_pattern_matches_the_inventory_pattern() -> None:
    module_re = re.search(r'strMatching "([^"]+)"', MODULE.read_text())
    assert module_re is not None
    for key in (KEY, storekey.OFFICIAL_CACHE_KEY, "k:short", "k-1:" + "A" * 86 + "=="):
        assert bool(re.fullmatch(module_re.group(1), key)) == bool(
            re.match(inventory.STORE_PUBLIC_KEY, key)
        ), key


def test_default_nix_imports_it_and_mkxnode_sets_it() -> None:
    assert "./trust.nix" in (ROOT / "modules" / "default.nix").read_text()
    mk = (ROOT / "xnodeos" / "mk-xnode.nix").read_text()
    assert "storeKeys ? [ ]" in mk and "xnode.trust.storeKeys = storeKeys;" in mk
    assert parse_ok(mk) and parse_ok(MODULE.read_text())


def test_workspace_flake_passes_the_inventory_keys() -> None:
    flake = render_flake("path:/x")
    assert parse_ok(flake)
    assert "storeKeys = (inventory.settings or { }).store_keys or [ ];" in flake
    assert "inherit storeKeys;" in flake


def test_image_bakes_the_store_keys_in() -> None:
    req = image.request(
        owner="0x" + "ab" * 20, key=None, fmt=ImageFormat.ISO, hostname="edge-1",
        system="x86_64-linux", disk=None, wipe=False, xnodectl_flake="path:/x",
        store_keys=[KEY],
    )  # fmt: skip
    identity = image.plan(req).files["identity.nix"]
    assert f'xnode.trust.storeKeys = [ "{KEY}" ];' in identity and parse_ok(identity)
    with pytest.raises(UsageError, match="not a Nix public store key"):
        image.request(
            owner="0x" + "ab" * 20, key=None, fmt=ImageFormat.ISO, hostname="edge-1",
            system="x86_64-linux", disk=None, wipe=False, xnodectl_flake="path:/x",
            store_keys=["k:" + "A" * 86 + "=="],
        )  # fmt: skip
