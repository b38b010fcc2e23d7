"""Templates monitoring, bitcoin-node, dev-env and vaultwarden: CLI errors for their parameters,
security properties of what they render, and their Nix logic evaluated by the real nix-instantiate.

The Nix evaluations call a rendered app module with a small stand-in for nixpkgs' `lib` and `pkgs`
(the real nixpkgs cannot be evaluated here: Nix 2.8, no network). The stand-in implements only the
handful of list/attrset functions the modules call, with nixpkgs' semantics; the modules' own logic
(metrics discovery, network flags, bind addresses) is what runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.golden import example_params
from tests.nixcheck import eval_json
from tests.nixstub import STUB_LIB, STUB_PKGS
from xnodectl import catalog
from xnodectl.cli import app
from xnodectl.render import render
from xnodectl.rendered import RenderedApp

MINE = ("monitoring", "bitcoin-node", "dev-env", "vaultwarden")
SECRET_ROOT = "/var/lib/xnode/secrets/"


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


# (template, bad word, text the error line must contain)
BAD_WORDS = [
    # monitoring
    ("monitoring", "retension=7d", "has no parameter 'retension'"),
    ("monitoring", "retention=15days", "a duration such as"),
    ("monitoring", "retention=10m", "out of range"),
    ("monitoring", "scrape_interval=1s", "out of range"),
    ("monitoring", "expose=maybe", "true or false"),
    ("monitoring", "wallet_gate=2", "true or false"),
    ("monitoring", "extra_targets=10.0.0.7", "matching"),
    ("monitoring", "extra_targets=ok:9100,bad target:1", "matching"),
    ("monitoring", "grafana_port=70000", "out of range"),
    ("monitoring", "prometheus_port=http", "a whole number"),
    ("monitoring", "grafana_admin_password=hunter2", "is a secret"),
    ("monitoring", "grafana_secret_key=hunter2", "is a secret"),
    # bitcoin-node
    ("bitcoin-node", "network=testnet3", "'testnet3'"),
    ("bitcoin-node", "network=MAINNET", "'MAINNET'"),
    ("bitcoin-node", "prune_mib=100", "out of range"),
    ("bitcoin-node", "prune_mib=lots", "a whole number"),
    ("bitcoin-node", "dbcache_mib=2", "out of range"),
    ("bitcoin-node", "dbcache_mib=20000", "out of range"),
    ("bitcoin-node", "rpc_port=0", "out of range"),
    ("bitcoin-node", "open_p2p=perhaps", "true or false"),
    ("bitcoin-node", "prune=1000", "true or false"),
    ("bitcoin-node", "rpc_user=alice", "has no parameter 'rpc_user'"),
    ("bitcoin-node", "rpcauth=hunter2", "is a secret"),
    # dev-env
    ("dev-env", "user=Root", "matching"),
    ("dev-env", "user=a;b", "matching"),
    ("dev-env", "workspace=relative/dir", "matching"),
    ("dev-env", "workspace=/home/../etc", "matching"),
    ("dev-env", "workspace=/home/my dir", "matching"),
    ("dev-env", "port=99999", "out of range"),
    ("dev-env", "expose=yesplease", "true or false"),
    ("dev-env", "passwd=x", "has no parameter 'passwd'"),
    ("dev-env", "password=hunter2", "is a secret"),
    # vaultwarden
    ("vaultwarden", "database=mysql", "'mysql'"),
    ("vaultwarden", "domain=vault.example.org", "URL"),
    ("vaultwarden", "domain=https://example.org/vault", "matching"),
    ("vaultwarden", "domain=ftp://example.org", "URL"),
    ("vaultwarden", "signups_allowed=sometimes", "true or false"),
    ("vaultwarden", "port=-1", "out of range"),
    ("vaultwarden", "signup_allowed=true", "has no parameter 'signup_allowed'"),
    ("vaultwarden", "admin_token=hunter2", "is a secret"),
]


@pytest.mark.parametrize(("template", "word", "expected"), BAD_WORDS)
def test_bad_parameter_is_one_error_line_and_writes_nothing(
    template: str, word: str, expected: str, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    code, out, err = cli("render", f"template={template}", word, "-o", str(out_dir))
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "(hint: " in lines[0], err
    assert expected in lines[0], err
    assert "Traceback" not in err
    assert "hunter2" not in err  # a secret given by mistake is not echoed back
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize(
    ("template", "word", "allowed"),
    [
        ("bitcoin-node", "network=testnet3", "mainnet, testnet, testnet4, signet, regtest"),
        ("vaultwarden", "database=mysql", "sqlite, postgresql"),
    ],
)
def test_bad_enum_hint_lists_the_allowed_values(template: str, word: str, allowed: str) -> None:
    code, _, err = cli("render", f"template={template}", word, "-o", "-")
    assert code == 2
    assert f"allowed values: {allowed}" in err


def test_misspelt_parameter_gets_a_suggestion() -> None:
    _, _, err = cli("render", "template=monitoring", "retension=7d", "-o", "-")
    assert "retention" in err.split("(hint:")[1]


def _render(name: str, **params: object) -> RenderedApp:
    return render(catalog.get(name), params)


def _all_renders() -> list[tuple[str, RenderedApp]]:
    out = []
    for name in MINE:
        t = catalog.get(name)
        out.append((f"{name}-defaults", render(t, {})))
        out.append((f"{name}-example", render(t, example_params(t))))
    return out


@pytest.mark.parametrize(
    ("label", "rendered"), _all_renders(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_secrets_appear_only_as_quoted_paths(label: str, rendered: RenderedApp) -> None:
    source = rendered.source
    assert rendered.secrets, f"{label} declares no secret"
    for secret in rendered.secrets:
        # Every use is a quoted Nix string, never a path literal (which would copy the file
        # into the world-readable store), and never read at evaluation time.
        for match in re.finditer(re.escape(secret.path), source):
            assert source[match.start() - 1] == '"', f"{label}: unquoted secret path"
    assert "readFile" not in source
    assert "hashedPassword" not in source  # code-server's option puts the hash in the store
    assert not re.search(r"\bADMIN_TOKEN\s+=", source)  # vaultwarden's `config` is in the store
    assert not re.search(r"[0-9a-f]{64}", source)  # no rpcauth hash


@pytest.mark.parametrize(
    ("label", "rendered"), _all_renders(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_nothing_binds_publicly_by_default(label: str, rendered: RenderedApp) -> None:
    source = re.sub(r"#[^\n]*", "", rendered.source)  # comments may name the defaults they avoid
    assert "0.0.0.0" not in source
    assert "::" not in source.replace("::1", "")
    if "bitcoin" not in label:
        assert "allowedTCPPorts = [ ];" in source
        assert "allowedUDPPorts = [ ];" in source


def test_proxy_routes_are_private_unless_exposed() -> None:
    for name, route in (
        ("monitoring", "/grafana/"),
        ("dev-env", "/code/"),
        ("vaultwarden", "/vault/"),
    ):
        private = _render(name).source
        public = _render(name, expose=True).source
        assert f'xnode.proxy.routes."{route}"' in private
        assert "public = false;" in private and "public = true;" not in private
        assert "public = true;" in public
        # The route only makes the proxy public: the app's own port stays closed.
        assert "allowedTCPPorts = [ ];" in public


def test_wallet_gate_parameter_reaches_the_route() -> None:
    for name in ("monitoring", "dev-env"):
        assert "walletGate = false;" in _render(name).source
        assert "walletGate = true;" in _render(name, wallet_gate=True).source


def test_bitcoind_rpc_is_never_public() -> None:
    for open_p2p in (True, False):
        for network in ("mainnet", "testnet", "testnet4", "signet", "regtest"):
            app_ = _render("bitcoin-node", network=network, open_p2p=open_p2p, rpc_port=8332)
            rpc = [p for p in app_.ports if p.port == 8332]
            assert rpc and not any(p.public for p in rpc)
            tcp = re.search(r"allowedTCPPorts = \[([^\]]*)\]", app_.source)
            assert tcp is not None
            assert "8332" not in tcp.group(1)
            assert ("8333" in tcp.group(1)) is open_p2p
            assert app_.source.count("-rpcbind=") == 1
            assert '"-rpcbind=127.0.0.1"' in app_.source
            assert '"-rpcallowip=127.0.0.1"' in app_.source


# The app modules under the one stand-in nixpkgs lib and packages (tests/nixstub.py).
_STUB = """
let
  lib = STUB_LIB;
  pkgs = STUB_PKGS;
  outer = import (/. + PATH) { };
  inner = builtins.head outer.imports;
in
  inner { inherit lib pkgs; config = CONFIG; }
"""


def _eval_module(rendered: RenderedApp, tmp_path: Path, attr: str, config: dict[str, Any]) -> Any:
    file = tmp_path / rendered.filename
    file.write_text(rendered.source)
    expr = _STUB.replace("STUB_LIB", STUB_LIB).replace("STUB_PKGS", STUB_PKGS)
    expr = expr.replace("PATH", json.dumps(str(file))).replace(
        "CONFIG", f"builtins.fromJSON {json.dumps(json.dumps(config))}"
    )
    return eval_json(f"({expr}).{attr}")


def _port(port: int, *, metrics: bool = False, **extra: object) -> dict[str, object]:
    return {
        "port": port,
        "protocol": "tcp",
        "public": False,
        "purpose": "",
        "metrics": metrics,
    } | extra


def test_monitoring_scrapes_other_apps_metrics_ports(tmp_path: Path) -> None:
    rendered = _render("monitoring", extra_targets=["10.0.0.7:9100"])
    apps = {
        "monitoring": {"ports": [_port(9090), _port(9100, metrics=True)]},
        "ipfs": {
            "ports": [
                _port(4001),
                _port(
                    5001,
                    metrics=True,
                    purpose="API; Prometheus metrics at /debug/metrics/prometheus)",
                ),
            ]
        },
        "lighthouse": {"ports": [_port(5054, metrics=True, purpose="beacon metrics (127.0.0.1)")]},
        "geth": {
            "ports": [
                _port(8545),
                _port(6060, metrics=True, metricsPath="/debug/metrics/prometheus"),
            ]
        },
        "postgres": {"ports": [_port(5432)]},
    }
    jobs = _eval_module(
        rendered, tmp_path, "services.prometheus.scrapeConfigs", {"xnode": {"apps": apps}}
    )
    by_name = {j["job_name"]: j for j in jobs}
    assert set(by_name) == {
        "prometheus",
        "node",
        "geth-6060",
        "ipfs-5001",
        "lighthouse-5054",
        "extra",
    }
    assert by_name["node"]["static_configs"][0]["targets"] == ["127.0.0.1:9100"]
    assert by_name["ipfs-5001"]["metrics_path"] == "/debug/metrics/prometheus"
    assert by_name["lighthouse-5054"]["metrics_path"] == "/metrics"
    assert by_name["ipfs-5001"]["static_configs"][0]["labels"] == {"xnode_app": "ipfs"}
    assert by_name["geth-6060"]["metrics_path"] == "/debug/metrics/prometheus"
    assert by_name["extra"]["static_configs"][0]["targets"] == ["10.0.0.7:9100"]


def test_monitoring_alone_scrapes_itself_and_the_node(tmp_path: Path) -> None:
    jobs = _eval_module(
        _render("monitoring"),
        tmp_path,
        "services.prometheus.scrapeConfigs",
        {"xnode": {"apps": {}}},
    )
    assert [j["job_name"] for j in jobs] == ["prometheus", "node"]


def test_monitoring_grafana_reads_secrets_through_the_file_provider(tmp_path: Path) -> None:
    security = _eval_module(
        _render("monitoring"),
        tmp_path,
        "services.grafana.settings.security",
        {"xnode": {"apps": {}}},
    )
    assert (
        security["admin_password"] == f"$__file{{{SECRET_ROOT}monitoring/grafana_admin_password}}"
    )
    assert security["secret_key"] == f"$__file{{{SECRET_ROOT}monitoring/grafana_secret_key}}"


@pytest.mark.parametrize(
    ("network", "flag"),
    [
        ("mainnet", None),
        ("testnet", "-testnet"),
        ("testnet4", "-testnet4"),
        ("signet", "-signet"),
        ("regtest", "-regtest"),
    ],
)
def test_bitcoind_network_flags(network: str, flag: str | None, tmp_path: Path) -> None:
    rendered = _render("bitcoin-node", network=network, prune=True, prune_mib=600)
    cfg = _eval_module(rendered, tmp_path, f"services.bitcoind.{network}", {})
    opts = cfg["extraCmdlineOptions"]
    network_flags = [
        o
        for o in opts
        if o.startswith("-") and o.lstrip("-") in {"testnet", "testnet4", "signet", "regtest"}
    ]
    assert network_flags == ([flag] if flag else [])
    assert cfg["prune"] == 600
    assert cfg["user"] == "bitcoind"
    assert cfg["extraConfig"].strip() == "includeconf=/run/xnode-bitcoind/rpcauth.conf"
    unit = _eval_module(
        rendered, tmp_path, f'systemd.services."bitcoind-{network}".serviceConfig', {}
    )
    assert unit["LoadCredential"] == [f"rpcauth:{SECRET_ROOT}bitcoin-node/rpcauth"]


def test_bitcoind_without_prune_sets_none(tmp_path: Path) -> None:
    cfg = _eval_module(_render("bitcoin-node"), tmp_path, "services.bitcoind.mainnet", {})
    assert "prune" not in cfg
    assert "-bind=127.0.0.1" not in cfg["extraCmdlineOptions"]  # open_p2p defaults to true


def test_vaultwarden_config(tmp_path: Path) -> None:
    rendered = _render("vaultwarden", domain="https://vault.example.org", database="postgresql")
    postgres_port = {"services": {"postgresql": {"settings": {"port": 5433}}}}
    cfg = _eval_module(rendered, tmp_path, "services.vaultwarden", postgres_port)
    assert cfg["config"]["ROCKET_ADDRESS"] == "127.0.0.1"
    assert cfg["config"]["ROCKET_PORT"] == 8222
    assert cfg["config"]["DOMAIN"] == "https://vault.example.org/vault"
    assert cfg["config"]["SIGNUPS_ALLOWED"] is False
    assert (
        cfg["config"]["DATABASE_URL"] == "postgresql:///vaultwarden?host=/run/postgresql&port=5433"
    )
    assert "ADMIN_TOKEN" not in cfg["config"]
    assert cfg["dbBackend"] == "postgresql"
    assert cfg["environmentFile"] == "/run/xnode-vaultwarden/env"
    sqlite = _eval_module(_render("vaultwarden"), tmp_path, "services.vaultwarden.config", {})
    assert "DATABASE_URL" not in sqlite


def test_dev_env_user_and_workspace(tmp_path: Path) -> None:
    rendered = _render("dev-env", user="alice", workspace="/srv/code")
    config = {"services": {"code-server": {"group": "code-server"}}}
    rules = _eval_module(rendered, tmp_path, "systemd.tmpfiles.rules", config)
    assert rules == ["d /srv/code 0750 alice code-server -"]
    cs = _eval_module(rendered, tmp_path, "services.code-server", config)
    assert cs["host"] == "127.0.0.1"
    assert cs["extraArguments"] == ["/srv/code"]
    assert cs["extraEnvironment"]["CODE_SERVER_CONFIG"] == "/run/alice/config.yaml"


def test_all_four_compose_on_one_node_with_defaults() -> None:
    from xnodectl.app_request import render_node
    from xnodectl.inventory import AppEntry

    apps = render_node([AppEntry(template=name) for name in MINE])
    routes = sorted(path for app_ in apps for path, _ in app_.routes)
    assert routes == ["/code/", "/grafana/", "/vault/"]


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        # A moved port that lands on another app's port.
        (
            [("monitoring", {"grafana_port": "4444"}), ("dev-env", {})],
            "both use tcp port 4444",
        ),
        # Two bitcoin nodes (say mainnet and testnet) would share the bitcoind user.
        (
            [
                ("bitcoin-node", {}),
                ("bitcoin-node", {"network": "testnet", "p2p_port": "18333", "rpc_port": "18332"}),
            ],
            "both run as user 'bitcoind'",
        ),
    ],
)
def test_collisions_are_reported_before_any_build(
    entries: list[tuple[str, dict[str, str]]], expected: str
) -> None:
    from xnodectl.app_request import render_node
    from xnodectl.errors import CollisionError
    from xnodectl.inventory import AppEntry

    apps = [AppEntry(template=t, name=f"{t}-{i}", params=p) for i, (t, p) in enumerate(entries)]
    with pytest.raises(CollisionError) as caught:
        render_node(apps)
    assert expected in caught.value.message
    assert caught.value.hint
