"""The ethereum-node and ethereum-validator templates: CLI errors for their parameters, and what
their renders mean once the real nix evaluates them (listen addresses, firewall, JWT plumbing,
network flags, checkpoint URL, validator flags and secrets).

Renders are evaluated with the real `nix-instantiate --eval --strict --json`. The NixOS module
system and nixpkgs cannot be evaluated here (Nix 2.8, no network), so the template's module
function is called with a stand-in `lib` (only `escapeShellArgs`) and `pkgs` (store-path-like
strings): the values the template sets are real Nix values, the nixpkgs modules that consume them
are exercised by the VM tests in vm-tests/.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.golden import example_params
from tests.nixcheck import eval_json
from xnodectl import catalog, process
from xnodectl.cli import app
from xnodectl.errors import CollisionError
from xnodectl.nixlit import string as nix_string
from xnodectl.render import check_collisions, render

FEE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
JWT = "/var/lib/ethereum-jwt/jwt.hex"
SECRETS = "/var/lib/xnode/secrets/ethereum-validator"

# Calls the rendered wrapper, then the template's own module function inside it.
_EVAL = """
let
  wrapper = import %(file)s { };
  inner = builtins.head wrapper.imports;
  lib.escapeShellArgs = args: builtins.concatStringsSep " " (map (a: "'" + a + "'") args);
  pkgs = builtins.listToAttrs (map (n: { name = n; value = "/nix/store/x-" + n; })
    [ "openssl" "lighthouse" "coreutils" "gnutar" "jq" ]);
in {
  body = inner { config = { }; inherit lib pkgs; };
  firewall = wrapper.networking.firewall;
  apps = wrapper.xnode.apps;
}
"""


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _evaluate(template: str, params: Mapping[str, object], tmp_path: Path) -> dict[str, Any]:
    source = render(catalog.get(template), params).source
    file = tmp_path / f"{template}.nix"
    file.write_text(source)
    result = eval_json(_EVAL % {"file": nix_string(str(file))})
    assert isinstance(result, dict)
    return result


# --- CLI errors: exit 2, one error line, no traceback, nothing written -------------------------

NODE = "template=ethereum-node"
VALIDATOR = "template=ethereum-validator"
ERROR_CASES = [
    pytest.param(
        [NODE, "network=goerli"], "allowed values: mainnet, sepolia", id="unknown-network"
    ),
    pytest.param(
        [NODE, "network=hoodi"], "allowed values: mainnet, sepolia", id="hoodi-not-offered"
    ),
    pytest.param([NODE, "rpc_port=70000"], "out of range", id="port-out-of-range"),
    pytest.param([NODE, "beacon_quic_port=0"], "out of range", id="port-zero"),
    pytest.param([NODE, "rpc_apis=eth,admin"], "allowed values: eth, net, web3", id="admin-api"),
    pytest.param([NODE, "checkpoint_sync_url=ftp://x.org"], "checkpoint_sync_url", id="bad-scheme"),
    pytest.param(
        [NODE, "checkpoint_sync_url=https://x.org/$(id)"], "checkpoint_sync_url", id="shell-in-url"
    ),
    pytest.param([NODE, "history=pruned"], "allowed values: postmerge, all, archive", id="history"),
    pytest.param([VALIDATOR], "needs parameter 'fee_recipient'", id="missing-fee-recipient"),
    pytest.param(
        [VALIDATOR, "fee_recipient=0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"],
        "wrong EIP-55 checksum",
        id="bad-checksum",
    ),
    pytest.param(
        [VALIDATOR, "fee_recipient=0x1234"], "not an Ethereum address", id="short-address"
    ),
    pytest.param(
        [VALIDATOR, f"fee_recipient={FEE}", "graffiti=" + "g" * 33],
        "at most 32 characters",
        id="graffiti-too-long",
    ),
    pytest.param(
        [VALIDATOR, f"fee_recipient={FEE}", "graffiti=caf\u00e9"],
        "graffiti",
        id="graffiti-not-ascii",
    ),
    pytest.param(
        [VALIDATOR, f"fee_recipient={FEE}", "beacon_node=ftp://10.0.0.2:5052"],
        "URL",
        id="bad-url-scheme",
    ),
    pytest.param(
        [VALIDATOR, f"fee_recipient={FEE}", "beacon_node=localhost:5052"],
        "URL",
        id="url-without-scheme",
    ),
    pytest.param(
        [VALIDATOR, f"fee_recipient={FEE}", "metrics_port=65536"],
        "out of range",
        id="validator-port",
    ),
    pytest.param(
        [VALIDATOR, f"fee_recipient={FEE}", "network=holesky"],
        "allowed values: mainnet, sepolia, hoodi",
        id="validator-network",
    ),
]


@pytest.mark.parametrize(("words", "expected"), ERROR_CASES)
def test_bad_parameters_are_one_error_line(words: list[str], expected: str, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = _run("render", *words, "-o", str(out_dir))
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0]
    assert "Traceback" not in err
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("secret", ["keystore_password", "keystores"])
def test_secret_on_command_line_is_refused_and_not_echoed(secret: str, tmp_path: Path) -> None:
    value = "hunter2-do-not-print"
    code, out, err = _run(
        "render", VALIDATOR, f"fee_recipient={FEE}", f"{secret}={value}", "-o", str(tmp_path)
    )
    assert code == 2
    assert err.startswith(f"error: parameter '{secret}' is a secret") and len(err.splitlines()) == 1
    assert value not in err and value not in out
    assert list(tmp_path.iterdir()) == []


def test_lowercase_fee_recipient_is_rendered_checksummed(tmp_path: Path) -> None:
    code, out, err = _run("render", VALIDATOR, f"fee_recipient={FEE.lower()}", "-o", str(tmp_path))
    assert code == 0, err
    assert f'"--suggested-fee-recipient" "{FEE}"' in Path(out.strip()).read_text()


# --- ethereum-node renders, evaluated ----------------------------------------------------------


def test_node_defaults_listen_on_loopback_and_open_only_p2p(tmp_path: Path) -> None:
    ev = _evaluate("ethereum-node", {}, tmp_path)
    geth = ev["body"]["services"]["geth"]["mainnet"]
    beacon = ev["body"]["services"]["lighthouse"]["beacon"]
    assert geth["network"] is None  # geth.nix: null = mainnet
    assert geth["http"]["address"] == geth["websocket"]["address"] == "127.0.0.1"
    assert geth["authrpc"]["address"] == "127.0.0.1"
    assert beacon["http"]["address"] == "127.0.0.1"
    assert ev["firewall"]["allowedTCPPorts"] == [9000, 30303]
    assert ev["firewall"]["allowedUDPPorts"] == [9000, 9001, 30303]
    assert "'--quic-port' '9001'" in beacon["extraArgs"]
    assert "'--checkpoint-sync-url' 'https://mainnet.checkpoint.sigp.io'" in beacon["extraArgs"]
    assert geth["extraArgs"] == [
        "--history.chain",
        "postmerge",
        "--history.transactions",
        "2350000",
    ]


def test_node_opens_rpc_and_beacon_api_only_when_asked(tmp_path: Path) -> None:
    ev = _evaluate("ethereum-node", {"open_rpc": "true", "open_beacon_api": "yes"}, tmp_path)
    geth = ev["body"]["services"]["geth"]["mainnet"]
    assert geth["http"]["address"] == geth["websocket"]["address"] == "0.0.0.0"
    assert geth["extraArgs"][-2:] == ["--http.vhosts", "*"]
    assert ev["body"]["services"]["lighthouse"]["beacon"]["http"]["address"] == "0.0.0.0"
    assert ev["firewall"]["allowedTCPPorts"] == [5052, 8545, 8546, 9000, 30303]
    # The Engine API and the metrics never leave loopback.
    assert geth["authrpc"]["address"] == geth["metrics"]["address"] == "127.0.0.1"
    assert 8551 not in ev["firewall"]["allowedTCPPorts"]
    ports = {(p["port"], p["protocol"]): p for p in ev["apps"]["ethereum-node"]["ports"]}
    assert ports[(8545, "tcp")]["public"] and not ports[(8551, "tcp")]["public"]
    assert ports[(6060, "tcp")]["metrics"] and ports[(5054, "tcp")]["metrics"]


def test_node_jwt_is_made_on_the_node_and_passed_as_credential(tmp_path: Path) -> None:
    ev = _evaluate("ethereum-node", example_params(catalog.get("ethereum-node")), tmp_path)
    units = ev["body"]["systemd"]["services"]
    jwt_unit = units["ethereum-jwt"]
    assert jwt_unit["serviceConfig"]["Type"] == "oneshot"
    assert jwt_unit["serviceConfig"]["StateDirectory"] == "ethereum-jwt"
    assert jwt_unit["serviceConfig"]["StateDirectoryMode"] == "0700"
    assert "openssl rand -hex 32" in jwt_unit["script"] and "chmod 0400" in jwt_unit["script"]
    geth = ev["body"]["services"]["geth"]["sepolia"]
    assert geth["authrpc"]["jwtsecret"] == "/run/credentials/geth-sepolia.service/jwt"
    assert units["geth-sepolia"]["serviceConfig"]["LoadCredential"] == [f"jwt:{JWT}"]
    assert units["geth-sepolia"]["requires"] == ["ethereum-jwt.service"]
    assert ev["body"]["services"]["lighthouse"]["beacon"]["execution"]["jwtPath"] == JWT
    assert units["lighthouse-beacon"]["requires"] == ["ethereum-jwt.service"]
    source = render(catalog.get("ethereum-node"), {}).source
    for forbidden in (
        "writeText",
        "writeFile",
        "builtins.readFile",
        "/tmp",
        "toFile",
        "/nix/store",
    ):
        assert forbidden not in source


def test_node_network_flags_follow_the_network(tmp_path: Path) -> None:
    ev = _evaluate("ethereum-node", {"network": "sepolia"}, tmp_path)
    body = ev["body"]
    assert set(body["services"]["geth"]) == {"sepolia"}
    assert body["services"]["geth"]["sepolia"]["network"] == "sepolia"
    assert body["services"]["lighthouse"]["network"] == "sepolia"
    beacon_args = body["services"]["lighthouse"]["beacon"]["extraArgs"]
    assert "'https://checkpoint-sync.sepolia.ethpandaops.io'" in beacon_args
    health = [h["target"] for h in ev["apps"]["ethereum-node"]["health"]]
    assert "geth-sepolia.service" in health
    assert "http://127.0.0.1:5052/eth/v1/node/version" in health


def test_node_checkpoint_url_override(tmp_path: Path) -> None:
    url = "https://beaconstate.example.org:8443/sync"
    ev = _evaluate("ethereum-node", {"network": "sepolia", "checkpoint_sync_url": url}, tmp_path)
    args = ev["body"]["services"]["lighthouse"]["beacon"]["extraArgs"]
    assert f"'--checkpoint-sync-url' '{url}'" in args
    assert "ethpandaops" not in args


def test_node_archive_and_beacon_history_options(tmp_path: Path) -> None:
    params = {
        "history": "archive",
        "sync_mode": "snap",
        "beacon_archive": "true",
        "prune_blobs": "false",
    }
    ev = _evaluate("ethereum-node", params, tmp_path)
    geth = ev["body"]["services"]["geth"]["mainnet"]
    assert (geth["syncmode"], geth["gcmode"]) == ("full", "archive")  # archive forces full sync
    assert geth["extraArgs"] == [
        "--history.chain",
        "all",
        "--history.transactions",
        "0",
        "--state.scheme",
        "hash",
    ]
    args = ev["body"]["services"]["lighthouse"]["beacon"]["extraArgs"]
    assert "'--genesis-backfill' '--reconstruct-historic-states' '--prune-blobs' 'false'" in args


# --- ethereum-validator renders, evaluated -----------------------------------------------------


def _validator(params: Mapping[str, object], tmp_path: Path) -> dict[str, Any]:
    ev = _evaluate("ethereum-validator", {"fee_recipient": FEE, **params}, tmp_path)
    unit = ev["body"]["systemd"]["services"]["lighthouse-validator"]
    assert isinstance(unit, dict)
    return unit


def test_validator_secrets_are_credentials_and_flags_are_safe_by_default(tmp_path: Path) -> None:
    unit = _validator({}, tmp_path)
    service = unit["serviceConfig"]
    assert service["LoadCredential"] == [
        f"keystores:{SECRETS}/keystores",
        f"keystore_password:{SECRETS}/keystore_password",
    ]
    assert service["DynamicUser"] is True and service["StateDirectory"] == "lighthouse-validator"
    script = unit["script"]
    exec_line = next(line for line in script.splitlines() if line.strip().startswith("exec "))
    for flag in (
        "'--network' 'mainnet'",
        "'--beacon-nodes' 'http://127.0.0.1:5052'",
        f"'--suggested-fee-recipient' '{FEE}'",
        "'--enable-doppelganger-protection'",
        "'--datadir' '/var/lib/lighthouse-validator/mainnet'",
        "'--metrics-address' '127.0.0.1'",
    ):
        assert flag in exec_line
    assert "--graffiti" not in exec_line  # empty graffiti = lighthouse's default
    assert "/var/lib/lighthouse-validator/mainnet/validators/slashing_protection.sqlite" in script
    assert "exit 78" in script and service["RestartPreventExitStatus"] == 78


def test_validator_options_reach_the_command_line(tmp_path: Path) -> None:
    unit = _validator(
        {
            "network": "hoodi",
            "doppelganger_protection": "false",
            "metrics": "off",
            "graffiti": "it's $HOME",
            "beacon_node": "https://10.0.0.2:5052",
        },
        tmp_path,
    )
    exec_line = next(line for line in unit["script"].splitlines() if "exec " in line)
    assert "'--network' 'hoodi'" in exec_line
    assert "'--beacon-nodes' 'https://10.0.0.2:5052'" in exec_line
    assert "--enable-doppelganger-protection" not in exec_line
    assert "--metrics" not in exec_line
    # Nix gives back the graffiti exactly (the $ did not start an interpolation).
    assert "'--graffiti' 'it's $HOME'" in exec_line


def test_node_and_validator_compose_on_one_node() -> None:
    apps = [
        render(catalog.get(n), example_params(catalog.get(n)))
        for n in ("ethereum-node", "ethereum-validator")
    ]
    check_collisions(apps)
    node, validator = apps
    assert {(p.port, p.protocol) for p in node.ports}.isdisjoint(
        {(p.port, p.protocol) for p in validator.ports}
    )
    assert validator.params["beacon_node"] == f"http://127.0.0.1:{node.params['beacon_api_port']}"


def test_two_nodes_or_two_validators_on_one_node_collide() -> None:
    for name in ("ethereum-node", "ethereum-validator"):
        t = catalog.get(name)
        first = render(t, example_params(t))
        second = render(
            t,
            {**example_params(t), "metrics_port": 5065}
            if name == "ethereum-validator"
            else {
                "p2p_port": 30304,
                "rpc_port": 18545,
                "ws_port": 18546,
                "authrpc_port": 18551,
                "geth_metrics_port": 16060,
                "beacon_p2p_port": 19000,
                "beacon_quic_port": 19001,
                "beacon_api_port": 15052,
                "beacon_metrics_port": 15054,
            },
            instance=f"{name}-2",
        )
        with pytest.raises(CollisionError, match="both run as user"):
            check_collisions([first, second])


def test_show_json_lists_only_the_networks_the_modules_accept() -> None:
    code, out, _ = _run("templates", "show", "ethereum-node", "--json")
    assert code == 0
    schema = json.loads(out)["parameters"]
    assert schema["properties"]["network"]["enum"] == ["mainnet", "sepolia"]
    assert "hoodi" in json.loads(out)["description"]
    code, out, _ = _run("templates", "show", "ethereum-validator", "--json")
    data = json.loads(out)
    assert data["parameters"]["required"] == ["fee_recipient"]
    assert data["parameters"]["properties"]["keystore_password"]["writeOnly"] is True


# --- the templates' own shell scripts, run for real ---------------------------------------------
# The start scripts are taken from the evaluated golden renders and run with the real bash,
# openssl, tar and jq of this machine; only their absolute state paths are moved into tmp_path
# (systemd's StateDirectory/RuntimeDirectory/LoadCredential are what the VM tests cover).

_SCRIPTS = """
let
  wrapper = import %(file)s { };
  inner = builtins.head wrapper.imports;
  lib.escapeShellArgs = args: builtins.concatStringsSep " " (map (a: "'" + a + "'") args);
  pkgs = { openssl = "/usr"; lighthouse = "/fake/lighthouse"; coreutils = ""; gnutar = "";
           jq = ""; };
  units = (inner { config = { }; inherit lib pkgs; }).systemd.services;
in builtins.mapAttrs (_: unit: unit.script or "") units
"""


def _script(template: str, unit: str, moves: Mapping[str, Path]) -> str:
    golden = Path(__file__).parent / "golden" / template / "example.nix"
    scripts = eval_json(_SCRIPTS % {"file": nix_string(str(golden))})
    assert isinstance(scripts, dict)
    text = str(scripts[unit])
    for old, new in moves.items():
        text = text.replace(old, str(new))
    return text


def _bash(script: str, env: Mapping[str, str] | None = None) -> process.Result:
    return process.run(["bash", "-e", "-c", script], check=False, env=env)


def _needs(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} on PATH")


def test_jwt_script_creates_keeps_and_repairs_the_secret(tmp_path: Path) -> None:
    _needs("openssl", "grep", "mktemp")
    script = _script("ethereum-node", "ethereum-jwt", {"/var/lib/ethereum-jwt": tmp_path})
    jwt = tmp_path / "jwt.hex"
    assert _bash(script).ok
    secret = jwt.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}\n?", secret)
    assert stat.S_IMODE(jwt.stat().st_mode) == 0o400
    assert _bash(script).ok and jwt.read_text() == secret  # kept across restarts
    jwt.chmod(0o600)
    jwt.write_text("not-a-secret\n")
    assert _bash(script).ok
    assert re.fullmatch(r"[0-9a-f]{64}\n?", jwt.read_text()) and jwt.read_text() != secret
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jwt.hex"]  # no temp file left over


def _keystore(pubkey: str) -> str:
    """Enough of an EIP-2335 keystore for the start script (lighthouse decrypts it in the VM)."""
    return json.dumps(
        {
            "crypto": {"kdf": {}, "checksum": {}, "cipher": {}},
            "pubkey": pubkey,
            "path": "m/12381/3600/0/0/0",
            "uuid": "0",
            "version": 4,
        }
    )


@pytest.fixture
def validator_start(tmp_path: Path) -> tuple[str, Path, dict[str, str]]:
    _needs("tar", "jq", "head", "tr")
    state, run_dir, creds = tmp_path / "state", tmp_path / "run", tmp_path / "creds"
    for directory in (state, run_dir, creds):
        directory.mkdir()
    script = _script(
        "ethereum-validator",
        "lighthouse-validator",
        {
            "/var/lib/lighthouse-validator": state,
            "/run/lighthouse-validator": run_dir,
        },
    ).replace("exec /fake/lighthouse/bin/lighthouse", "echo lighthouse")
    (creds / "keystore_password").write_text("pw\n")
    return script, tmp_path, {"CREDENTIALS_DIRECTORY": str(creds)}


PK1, PK2 = "a1" * 48, "b2" * 48


def test_validator_start_unpacks_a_tar_and_writes_definitions(
    validator_start: tuple[str, Path, dict[str, str]],
) -> None:
    script, root, env = validator_start
    keys = root / "keys"
    keys.mkdir()
    (keys / "keystore-m_12381_3600_0_0_0.json").write_text(_keystore(PK1))
    (keys / "keystore-m_12381_3600_1_0_0.json").write_text(_keystore("0x" + PK2))
    (keys / "deposit_data-1.json").write_text('[{"pubkey": "00"}]')
    process.run(["tar", "-C", str(root), "-cf", str(root / "creds" / "keystores"), "keys"])
    result = _bash(script, env)
    assert result.ok, result.stderr
    assert "loaded 2 validator keystore(s)" in result.stdout
    assert "ignoring deposit_data-1.json" in result.stderr
    exec_line = result.stdout.strip().splitlines()[-1]
    assert exec_line.startswith("lighthouse validator_client --network sepolia")
    defs = (root / "state/sepolia/validators/validator_definitions.yml").read_text()
    for pubkey in (PK1, PK2):
        assert f'voting_public_key: "0x{pubkey}"' in defs
        assert (root / f"run/keystores/0x{pubkey}.json").is_file()
    assert defs.count("type: local_keystore") == 2
    assert f"voting_keystore_password_path: {root}/creds/keystore_password" in defs


def test_validator_start_takes_a_single_keystore_and_rejects_garbage(
    validator_start: tuple[str, Path, dict[str, str]],
) -> None:
    script, root, env = validator_start
    (root / "creds" / "keystores").write_text("\n  " + _keystore(PK1))
    result = _bash(script, env)
    assert result.ok and "loaded 1 validator keystore(s)" in result.stdout
    (root / "creds" / "keystores").write_text("hello")
    result = _bash(script, env)
    assert result.returncode == 1 and "neither a keystore JSON" in result.stderr
    (root / "creds" / "keystores").write_text('{"not": "a keystore"}')
    result = _bash(script, env)
    assert result.returncode == 1 and "holds no EIP-2335 keystore" in result.stderr


def test_validator_start_refuses_when_the_slashing_database_went_missing(
    validator_start: tuple[str, Path, dict[str, str]],
) -> None:
    script, root, env = validator_start
    (root / "creds" / "keystores").write_text(_keystore(PK1))
    marker = root / "state/sepolia/.slashing-protection-initialized"
    db = root / "state/sepolia/validators/slashing_protection.sqlite"
    first = _bash(script, env)  # first start: no database yet, lighthouse may create it
    assert first.ok and not marker.exists()
    db.write_bytes(b"SQLite format 3\x00")
    assert _bash(script, env).ok and marker.exists()
    db.unlink()
    refused = _bash(script, env)
    assert refused.returncode == 78
    assert "refusing to start" in refused.stderr and "lighthouse" not in refused.stdout
