"""Templates ipfs, ai-chatbot, postgres and static-web: CLI errors for their parameters, the
security properties of what they render, their Nix logic evaluated by the real nix-instantiate,
composition with the rest of the catalogue, and the shape of their VM tests.

The Nix evaluations call a rendered app module with a small stand-in for nixpkgs' `lib` and `pkgs`
(the real nixpkgs cannot be evaluated here: Nix 2.8, no network). The stand-in implements only the
few functions the modules call, with nixpkgs' semantics (`mkForce`/`mkAfter` keep their priority
marker so tests can see it); the modules' own logic (bind addresses, package choice, listen
addresses, site root, assertions) is what runs. The VM tests themselves run in CI (NixOS, KVM).
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.golden import defaults_params, example_params
from tests.nixcheck import eval_json, parse_ok
from tests.nixstub import EVAL_MODULES, STUB_LIB, STUB_PKGS
from xnodectl import catalog
from xnodectl.cli import app
from xnodectl.errors import ParamError
from xnodectl.render import check_collisions, render
from xnodectl.rendered import RenderedApp

MINE = ("ipfs", "ai-chatbot", "postgres", "static-web")
ROOT = Path(__file__).resolve().parent.parent
# Parameters static-web requires; prefixed to its error cases so only the bad word is wrong.
REQUIRED = {"static-web": ["domain=www.example.org", "acme_email=ops@example.org"]}
HASH = "sha256-" + "A" * 43 + "="
REV = "0123456789abcdef0123456789abcdef01234567"


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


# (template, bad word, text the error line must contain)
BAD_WORDS = [
    # ipfs
    ("ipfs", "storage_maxx=1GB", "did you mean 'storage_max'"),
    ("ipfs", "storage_max=50", "matching"),
    ("ipfs", "storage_max=50gb", "matching"),
    ("ipfs", "storage_max=1PB", "matching"),
    ("ipfs", "profile=turbo", "allowed values: server, lowpower"),
    ("ipfs", "swarm_port=0", "out of range"),
    ("ipfs", "api_port=65536", "out of range"),
    ("ipfs", "gateway_port=http", "a whole number"),
    ("ipfs", "expose=maybe", "true or false"),
    ("ipfs", "wallet_gate=2", "true or false"),
    ("ipfs", "gateway_fetch=never", "true or false"),
    # ai-chatbot
    ("ai-chatbot", "model=llama3", "did you mean 'models'"),
    ("ai-chatbot", "models=llama3.2:3b,Bad Model", "matching"),
    ("ai-chatbot", "models=../../etc/passwd", "matching"),
    ("ai-chatbot", "models=llama3;reboot", "matching"),
    ("ai-chatbot", "accel=tpu", "allowed values: cpu, cuda, rocm, vulkan"),
    ("ai-chatbot", "webui_port=99999", "out of range"),
    ("ai-chatbot", "ollama_port=x", "a whole number"),
    ("ai-chatbot", "webui_auth=perhaps", "true or false"),
    ("ai-chatbot", "expose=2", "true or false"),
    # postgres
    ("postgres", "version=13", "allowed values: 14, 15, 16, 17, 18"),
    ("postgres", "version=9.6", "allowed values"),
    ("postgres", "databases=postgres", "matching"),
    ("postgres", "databases=App", "matching"),
    ("postgres", 'databases=a"b', "matching"),
    ("postgres", "users=postgres", "matching"),
    ("postgres", "users=x;drop", "matching"),
    ("postgres", "password=hunter2", "is a secret"),
    ("postgres", "port=0", "out of range"),
    ("postgres", "listen_address=::", "matching"),
    ("postgres", "listen_address=10.0.0.256", "matching"),
    ("postgres", "listen_address=0.0.0.0 x", "matching"),
    ("postgres", "allowed_cidrs=10.0.0.0", "matching"),
    ("postgres", "allowed_cidrs=0.0.0.0/33", "matching"),
    ("postgres", "backup_schedule=every day", "matching"),
    ("postgres", "backup_schedule=25:00", "matching"),
    ("postgres", "backup_schedule=daily; reboot", "matching"),
    ("postgres", "backup_retention=10m", "out of range"),
    ("postgres", "backup_retention=2weeks", "a duration such as"),
    ("postgres", "backup_dir=/var/../etc", "matching"),
    ("postgres", "backup_dir=backups", "matching"),
    ("postgres", "open_firewall=sure", "true or false"),
    # static-web
    ("static-web", "domain=Example.ORG", "matching"),
    ("static-web", "domain=exa mple.org", "matching"),
    ("static-web", "domain=localhost", "matching"),
    ("static-web", "source=s3", "allowed values: local, tarball, git"),
    ("static-web", "source_hash=sha256-short", "matching"),
    ("static-web", "source_hash=md5-" + "A" * 22 + "==", "matching"),
    ("static-web", "source_rev=abc123", "matching"),
    ("static-web", "source_url=http://example.org/site.tar.gz", "matching"),
    ("static-web", "source_url=https://example.org/${builtins.currentTime}", "matching"),
    ("static-web", "root=/var/www/../../etc", "matching"),
    ("static-web", "root=www", "matching"),
    ("static-web", "subdir=../secrets", "matching"),
    ("static-web", "csp=default-src 'self'\"; add_header X 1", "matching"),
    ("static-web", "csp=$host", "matching"),
    ("static-web", "acme_email=not-an-email", "matching"),
    ("static-web", "check_port=0", "out of range"),
    ("static-web", "acme=sometimes", "true or false"),
]


@pytest.mark.parametrize(("template", "word", "expected"), BAD_WORDS)
def test_bad_parameter_is_one_error_line_and_writes_nothing(
    template: str, word: str, expected: str, tmp_path: Path
) -> None:
    key = word.partition("=")[0]
    required = [w for w in REQUIRED.get(template, []) if w.partition("=")[0] != key]
    words = [f"template={template}", *required, word]
    code, out, err = cli("render", *words, "-o", str(tmp_path))
    assert code == 2, err
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "(hint: " in lines[0], lines[0]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_missing_required_parameter_names_it(tmp_path: Path) -> None:
    code, _, err = cli(
        "render", "template=static-web", "acme_email=a@example.org", "-o", str(tmp_path)
    )
    assert code == 2
    assert "needs parameter 'domain'" in err and "(hint: add domain=" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", MINE)
def test_show_json_gives_schema_and_example(name: str) -> None:
    code, out, err = cli("templates", "show", name, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["example"] == catalog.get(name).meta.example
    props = data["parameters"]["properties"]
    for pname, spec in catalog.get(name).params.items():
        assert props[pname]["description"], f"{name}.{pname} has no description"
        assert ("default" in props[pname]) is (spec.default is not None and not spec.secret)


# The app modules under the one stand-in nixpkgs lib (tests/nixstub.py: priorities stay visible
# as markers, as in the real lib). Packages are plain store-path strings.
_STUB = """
let
  lib = STUB_LIB;
  # The stand-in output path carries the fetcher's arguments so tests can read them back.
  fetcher = kind: args: { outPath = "/nix/store/stub-${kind}=${builtins.toJSON args}"; };
  pkgs = builtins.listToAttrs (map (n: { name = n; value = "/nix/store/stub-${n}"; }) [
    "coreutils" "findutils" "ollama-cpu" "ollama-cuda" "ollama-rocm" "ollama-vulkan"
    "postgresql_14" "postgresql_15" "postgresql_16" "postgresql_17" "postgresql_18"
  ]) // { fetchzip = fetcher "fetchzip"; fetchgit = fetcher "fetchgit"; inherit (STUB_PKGS) jq; };
  config = { services.postgresql.finalPackage = "/nix/store/stub-postgresql-final"; };
  outer = import (/. + PATH) { };
in
  { inner = (builtins.head outer.imports) { inherit config lib pkgs; }; inherit outer; }
"""


def _render(name: str, **params: Any) -> RenderedApp:
    """The defaults (required values from the example) with `params` on top."""
    t = catalog.get(name)
    return render(t, {**defaults_params(t), **params})


def _eval(rendered: RenderedApp, tmp_path: Path, attr: str) -> Any:
    file = tmp_path / rendered.filename
    file.write_text(rendered.source)
    stub = _STUB.replace("STUB_LIB", STUB_LIB).replace("STUB_PKGS", STUB_PKGS)
    stub = stub.replace("PATH", json.dumps(str(file)))
    return eval_json(f"({stub}).{attr}")


def _system(rendered: RenderedApp, tmp_path: Path) -> Any:
    """The configuration of the render together with the XnodeOS modules, merged by the stand-in
    module system (tests/nixlib/eval.nix) with the option facts of the pin."""
    file = tmp_path / rendered.filename
    file.write_text(rendered.source)
    facts = ROOT / "facts" / "nixos-options.json"
    schema = f"(builtins.fromJSON (builtins.readFile {facts})).options"
    modules = f"[ {ROOT / 'modules'} {file} {{ xnode.owner.allowUnreachable = true; }} ]"
    return eval_json(f"({EVAL_MODULES} {{ modules = {modules}; schema = {schema}; }}).config")


def _firewall(rendered: RenderedApp) -> tuple[list[int], list[int]]:
    found = {}
    for proto in ("TCP", "UDP"):
        m = re.search(rf"allowed{proto}Ports = \[([^\]]*)\]", rendered.source)
        assert m, proto
        found[proto] = [int(x) for x in m.group(1).split()]
    return found["TCP"], found["UDP"]


# ipfs


@pytest.mark.parametrize(("expose", "gate"), list(itertools.product([False, True], repeat=2)))
def test_ipfs_api_and_gateway_stay_on_loopback(expose: bool, gate: bool, tmp_path: Path) -> None:
    rendered = _render("ipfs", expose=expose, wallet_gate=gate)
    assert _firewall(rendered) == ([4001], [4001])  # only the swarm port, whatever is exposed
    kubo = _eval(rendered, tmp_path, "inner.services.kubo")
    assert kubo["settings"]["Addresses"]["API"] == ["/ip4/127.0.0.1/tcp/5001"]
    assert kubo["settings"]["Addresses"]["Gateway"] == "/ip4/127.0.0.1/tcp/8080"
    routes = _eval(rendered, tmp_path, "inner.xnode.proxy.routes")
    assert set(routes) == {"/ipfs/", "/ipns/"}
    for route in routes.values():
        assert route == {"port": 8080, "public": expose, "walletGate": gate}
    assert not any(p.public for p in rendered.ports if p.port in (5001, 8080))
    # kubo serves Prometheus metrics on the API port, not at /metrics.
    assert [(p.port, p.metrics_path) for p in rendered.ports if p.metrics] == [
        (5001, "/debug/metrics/prometheus")
    ]


def test_ipfs_swarm_port_storage_and_profile(tmp_path: Path) -> None:
    rendered = _render("ipfs", swarm_port=4101, storage_max="2TB", profile="lowpower")
    assert _firewall(rendered) == ([4101], [4101])
    inner = _eval(rendered, tmp_path, "inner")
    swarm = inner["services"]["kubo"]["settings"]["Addresses"]["Swarm"]
    assert "/ip4/0.0.0.0/tcp/4101" in swarm and "/ip4/0.0.0.0/udp/4101/quic-v1" in swarm
    assert all("/4101" in addr for addr in swarm)
    assert inner["services"]["kubo"]["settings"]["Datastore"]["StorageMax"] == "2TB"
    assert inner["services"]["kubo"]["enableGC"] is True  # StorageMax is only enforced with GC
    assert inner["services"]["kubo"]["settings"]["Gateway"] == {"NoFetch": False}
    local = _eval(_render("ipfs", gateway_fetch=False), tmp_path, "inner.services.kubo.settings")
    assert local["Gateway"] == {"NoFetch": True}
    pre = inner["systemd"]["services"]["ipfs"]["preStart"]
    assert pre["_type"] == "order"
    # Applied without kubo's per-call backup (private key included): a dry run, then replace.
    assert "ipfs --offline config profile apply --dry-run lowpower |" in pre["content"]
    assert (
        "/nix/store/" in pre["content"]
        and "/bin/jq .NewCfg | ipfs --offline config replace -" in (pre["content"])
    )
    assert "profile apply lowpower" not in pre["content"]
    server = _eval(_render("ipfs"), tmp_path, "inner")
    assert "systemd" not in server
    assert server["services"]["kubo"]["localDiscovery"] is False


# ai-chatbot


@pytest.mark.parametrize("accel", ["cpu", "cuda", "rocm", "vulkan"])
def test_ai_chatbot_package_variant_and_loopback(accel: str, tmp_path: Path) -> None:
    rendered = _render("ai-chatbot", accel=accel, models=["qwen2.5:7b", "nomic-embed-text"])
    assert _firewall(rendered) == ([], [])
    inner = _eval(rendered, tmp_path, "inner")
    ollama, webui = inner["services"]["ollama"], inner["services"]["open-webui"]
    assert ollama["package"] == f"/nix/store/stub-ollama-{accel}"
    assert ollama["host"] == "127.0.0.1" and ollama["openFirewall"] is False
    assert ollama["loadModels"] == ["qwen2.5:7b", "nomic-embed-text"]
    assert webui["host"] == "127.0.0.1" and webui["openFirewall"] is False
    assert webui["environment"]["OLLAMA_BASE_URL"] == "http://127.0.0.1:11434"
    # The module's privacy defaults are replaced by `environment`, so they must be repeated.
    assert webui["environment"]["ANONYMIZED_TELEMETRY"] == "False"
    assert webui["environment"]["DO_NOT_TRACK"] == "True"


@pytest.mark.parametrize(("expose", "gate"), list(itertools.product([False, True], repeat=2)))
def test_ai_chatbot_proxy_site_is_the_only_way_in(expose: bool, gate: bool, tmp_path: Path) -> None:
    rendered = _render(
        "ai-chatbot",
        expose=expose,
        wallet_gate=gate,
        webui_port=8181,
        ollama_port=11500,
        port=8282,
        webui_auth=False,
    )
    # Only the proxy's port may open, and only when exposed; ollama and Open WebUI never do.
    assert _firewall(rendered) == ([8282] if expose else [], [])
    inner = _eval(rendered, tmp_path, "inner")
    assert inner["xnode"]["proxy"]["sites"] == {
        "ai-chatbot": {
            "listenPort": 8282,
            "backendPort": 8181,
            "public": expose,
            "walletGate": gate,
        }
    }
    assert inner["services"]["open-webui"]["port"] == 8181
    assert inner["services"]["open-webui"]["environment"]["WEBUI_AUTH"] == "False"
    assert inner["services"]["open-webui"]["environment"]["OLLAMA_BASE_URL"].endswith(":11500")
    assert rendered.routes == ()


# postgres

SECRET = "/var/lib/xnode/secrets/postgres/password"


def test_postgres_secret_is_only_a_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sentinel = "pg-S3NTINEL-4b1d"
    monkeypatch.setenv("XNODE_SECRET_POSTGRES_PASSWORD", sentinel)
    t = catalog.get("postgres")
    for rendered in (render(t, defaults_params(t)), render(t, example_params(t))):
        assert sentinel not in rendered.source
        assert [(s.param, s.path) for s in rendered.secrets] == [("password", SECRET)]
        unit = _eval(rendered, tmp_path, "inner.systemd.services.postgres-password")
        assert unit["serviceConfig"]["LoadCredential"] == [f"password:{SECRET}"]
        assert unit["serviceConfig"]["User"] == "postgres"
        script = unit["script"]
        # The password is read by psql from the credential and quoted by psql itself.
        assert '\\set pw `cat "$CREDENTIALS_DIRECTORY/password"`' in script.splitlines()
        assert "ALTER ROLE :\"role\" WITH LOGIN PASSWORD :'pw';" in script.splitlines()
        assert "SQL" in script.splitlines()  # heredoc terminator at column 0
        assert SECRET not in script and "/nix/store" not in SECRET
        # A rotated secret file is applied again, once, and the server keeps running: with the
        # XnodeOS modules, exactly one path unit watches the file and it restarts only the unit
        # that applies the password (not postgresql.service, not a second applier).
        systemd = _system(rendered, tmp_path)["systemd"]
        watchers = {n: p for n, p in systemd["paths"].items() if SECRET in str(p["pathConfig"])}
        assert list(watchers) == ["xnode-secrets-postgres"]
        restart = systemd["services"]["xnode-secrets-postgres"]["script"]
        assert restart == "systemctl try-restart postgres-password.service"


def test_postgres_listens_on_loopback_unless_opened(tmp_path: Path) -> None:
    rendered = _render("postgres")
    assert _firewall(rendered) == ([], [])
    pg = _eval(rendered, tmp_path, "inner.services.postgresql")
    assert pg["settings"]["listen_addresses"] == {
        "_type": "override",
        "priority": 50,
        "content": "127.0.0.1",
    }
    assert pg["package"] == "/nix/store/stub-postgresql_17"
    assert pg["authentication"] == ""
    assert pg["ensureUsers"] == [
        {"name": "app", "ensureDBOwnership": True, "ensureClauses": {"login": True}}
    ]
    assert _eval(rendered, tmp_path, "inner.assertions") == [
        {
            "assertion": True,
            "message": "postgres: open_firewall=true needs a listen_address "
            "other than 127.0.0.1/localhost",
        }
    ]


def test_postgres_opened_on_request_with_password_rules(tmp_path: Path) -> None:
    rendered = _render(
        "postgres",
        listen_address="10.1.2.3",
        open_firewall=True,
        port=5433,
        allowed_cidrs=["10.0.0.0/8", "192.168.1.0/24"],
        version="16",
        databases=["app"],
        users=["app", "reader"],
    )
    assert _firewall(rendered) == ([5433], [])
    pg = _eval(rendered, tmp_path, "inner.services.postgresql")
    # A specific address is listened on beside loopback (local clients, health probe).
    assert pg["settings"]["listen_addresses"]["content"] == "127.0.0.1,10.1.2.3"
    assert pg["settings"]["port"] == 5433
    assert pg["package"] == "/nix/store/stub-postgresql_16"
    assert pg["authentication"] == (
        "host all all 10.0.0.0/8 scram-sha-256\nhost all all 192.168.1.0/24 scram-sha-256\n"
    )
    owners = {u["name"]: u["ensureDBOwnership"] for u in pg["ensureUsers"]}
    assert owners == {"app": True, "reader": False}
    assert _eval(rendered, tmp_path, "inner.assertions")[0]["assertion"] is True


def test_postgres_open_firewall_needs_allowed_networks_at_render_time() -> None:
    with pytest.raises(ParamError, match="'allowed_cidrs' is needed when open_firewall=true"):
        _render("postgres", open_firewall=True)


def test_postgres_open_firewall_on_loopback_fails_the_build(tmp_path: Path) -> None:
    rendered = _render("postgres", open_firewall=True, allowed_cidrs=["10.0.0.0/8"])
    assert _eval(rendered, tmp_path, "inner.assertions")[0]["assertion"] is False


def test_postgres_backups_schedule_and_retention(tmp_path: Path) -> None:
    rendered = _render(
        "postgres",
        backup_schedule="*-*-* 03:30:00",
        backup_retention="30d",
        backup_dir="/srv/pg-dumps",
    )
    inner = _eval(rendered, tmp_path, "inner")
    unit = inner["systemd"]["services"]["postgres-backup"]
    assert unit["startAt"] == "*-*-* 03:30:00"
    assert unit["environment"] == {
        "PGPORT": "5432",
        "BACKUP_DIR": "/srv/pg-dumps",
        "KEEP_MINUTES": str(30 * 24 * 60),
    }
    assert unit["serviceConfig"]["User"] == "postgres" and unit["serviceConfig"]["UMask"] == "0077"
    assert '-mmin +"$KEEP_MINUTES" -delete' in unit["script"]
    assert inner["systemd"]["tmpfiles"]["rules"] == ["d /srv/pg-dumps 0700 postgres postgres -"]
    assert inner["systemd"]["timers"]["postgres-backup"]["timerConfig"]["Persistent"] is True
    off = _eval(_render("postgres", backup=False), tmp_path, "inner.systemd")
    assert set(off["services"]) == {"postgres-password"}
    assert "timers" not in off


# static-web


def test_static_web_local_root_tls_and_headers(tmp_path: Path) -> None:
    rendered = _render("static-web")
    assert _firewall(rendered) == ([80, 443], [])
    inner = _eval(rendered, tmp_path, "inner")
    vhost = inner["services"]["nginx"]["virtualHosts"]["www.example.org"]
    assert vhost["root"] == "/var/www/site"  # a string on the node, never copied to the store
    assert vhost["enableACME"] is True and vhost["forceSSL"] is True
    headers = vhost["extraConfig"]
    assert "add_header Content-Security-Policy \"default-src 'self';" in headers
    for name in (
        "X-Content-Type-Options",
        "X-Frame-Options",
        "Referrer-Policy",
        "Permissions-Policy",
        "Strict-Transport-Security",
    ):
        assert f"add_header {name} " in headers
    assert inner["security"]["acme"] == {
        "acceptTerms": True,
        "defaults": {"email": "webmaster@example.org"},
    }
    # The local root is created with a placeholder page that never replaces an existing one.
    assert inner["systemd"]["tmpfiles"]["rules"] == [
        "d /var/www/site 0755 root root -",
        "f /var/www/site/index.html 0644 root root - www.example.org is served by xnodectl: "
        "put the site in /var/www/site",
    ]
    check = inner["services"]["nginx"]["virtualHosts"]["static-web-check"]
    assert check["listen"] == [{"addr": "127.0.0.1", "port": 8088}]
    assert inner["assertions"] == []


def test_static_web_without_acme_is_http_only(tmp_path: Path) -> None:
    rendered = _render("static-web", acme=False)
    assert _firewall(rendered) == ([80], [])
    inner = _eval(rendered, tmp_path, "inner")
    vhost = inner["services"]["nginx"]["virtualHosts"]["www.example.org"]
    assert vhost["enableACME"] is False and vhost["forceSSL"] is False
    assert "Strict-Transport-Security" not in vhost["extraConfig"]
    assert "security" not in inner


@pytest.mark.parametrize("source", ["tarball", "git"])
def test_static_web_pinned_sources(source: str, tmp_path: Path) -> None:
    rendered = _render(
        "static-web",
        source=source,
        source_url="https://example.org/site",
        source_rev=REV,
        source_hash=HASH,
        subdir="public",
    )
    inner = _eval(rendered, tmp_path, "inner")
    fetcher = "fetchzip" if source == "tarball" else "fetchgit"
    root = inner["services"]["nginx"]["virtualHosts"]["www.example.org"]["root"]
    prefix, _, rest = root.partition("=")
    assert prefix == f"/nix/store/stub-{fetcher}" and rest.endswith("/public")
    expected = {"url": "https://example.org/site", "hash": HASH}
    if source == "git":
        expected["rev"] = REV
    assert json.loads(rest.removesuffix("/public")) == expected
    assert inner["assertions"] == []
    assert "systemd" not in inner  # a pinned source needs no directory on the node


def test_static_web_unpinned_source_is_refused_at_render_time() -> None:
    with pytest.raises(ParamError, match="'source_hash' is needed when source=git"):
        _render("static-web", source="git", source_url="https://example.org/site.git")
    with pytest.raises(ParamError, match="'source_rev' is needed when source=git"):
        _render(
            "static-web",
            source="git",
            source_url="https://example.org/site.git",
            source_hash="sha256-" + "A" * 43 + "=",
        )
    with pytest.raises(ParamError, match="'source_url' is needed when source=tarball"):
        _render("static-web", source="tarball")


# Composition and VM tests


def test_my_defaults_compose_with_every_template() -> None:
    """Default ports, users and routes of these four never collide with any other template's."""
    apps = [render(t, defaults_params(t)) for t in catalog.all_templates()]
    check_collisions(apps)
    for name in MINE:
        assert name in {a.instance for a in apps}


VM_NODE_ARGS = f'{{ lib = {STUB_LIB}; pkgs = {{ netcat = "netcat"; }}; config = {{ }}; }}'


@pytest.mark.parametrize("name", MINE)
def test_vm_test_parses_and_wires_the_golden_render(name: str) -> None:
    path = ROOT / "vm-tests" / f"{name}.nix"
    assert parse_ok(path.read_text())
    expr = f"""
      let
        test = import {json.dumps(str(path))} {{
          pkgs = {{ testers.runNixOSTest = t: t; stdenv.hostPlatform.system = "x86_64-linux"; }};
          self = {{ nixosModules.default = "xnode-modules";
                   packages.x86_64-linux.xnodectl = "xnodectl-package"; }};
        }};
        node = test.nodes.node {VM_NODE_ARGS};
      in {{
        inherit (test) name testScript;
        nodes = builtins.attrNames test.nodes;
        imports = map toString node.imports;
        package = node.xnode.package;
      }}
    """
    data = eval_json(expr)
    assert isinstance(data, dict)
    assert data["name"] == f"xnode-template-{name}"
    assert data["nodes"] == ["client", "node"]
    assert data["package"] == "xnodectl-package"
    assert data["imports"][0] == "xnode-modules"
    golden = Path(data["imports"][1])
    assert golden.parent == ROOT / "tests" / "golden" / name and golden.is_file()
    script = data["testScript"]
    ast.parse(script, filename=f"vm-tests/{name}.nix testScript")  # valid Python once Nix is done
    assert "start_all()" in script and "client.fail(" in script
    for probe in catalog.get(name).meta.health:
        if probe.kind == "systemd":
            assert f'wait_for_unit("{probe.unit}")' in script, probe.unit
    if catalog.get(name).params.keys() & {"password"}:
        assert "nix-store -qR /run/current-system | xargs grep" in script
