"""nginx.conf from the `services.nginx` values xnodectl's modules produce, rendered the way
nixpkgs' nginx module renders them, so tests run the real nginx on the real generated config.

Source: NixOS/nixpkgs nixos/modules/services/web-servers/nginx/default.nix (commit
000007c122b85672b78037272c41adbbe693a1a4, the version the search index holds): `configFile`
(http block: recommendedProxySettings' http-level lines, the $connection_upgrade map, vhosts,
then appendHttpConfig), `vhosts` (listen lines, server_name, locations, then extraConfig) and
`mkLocations` (proxy_pass, proxyWebsockets' three lines, return, extraConfig, then the
recommended proxy headers include). Only what xnodectl's modules use is rendered; anything else
in a location or vhost is an error here, so a module change cannot slip past these tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.nixcheck import eval_json
from tests.nixstub import RESOLVE, STUB_LIB

ROOT = Path(__file__).resolve().parent.parent

# nixpkgs `recommendedProxyConfig`, included in every proxyPass location that keeps
# recommendedProxySettings (the location option defaults to the service-wide one).
RECOMMENDED_HEADERS = """proxy_set_header Host $host;
proxy_set_header X-Real-IP $remote_addr;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Forwarded-Proto $scheme;
proxy_set_header X-Forwarded-Host $host;
proxy_set_header X-Forwarded-Server $host;
"""
RECOMMENDED_HTTP = (
    """proxy_redirect off;
proxy_connect_timeout 60s;
proxy_send_timeout 60s;
proxy_read_timeout 60s;
proxy_http_version 1.1;
proxy_set_header "Connection" "";
"""
    + RECOMMENDED_HEADERS
)
UPGRADE_MAP = "map $http_upgrade $connection_upgrade {\n  default upgrade;\n  '' close;\n}\n"
_LOCATION_KEYS = {
    "proxyPass",
    "proxyWebsockets",
    "return",
    "extraConfig",
    "recommendedProxySettings",
}
_VHOST_KEYS = {"default", "listen", "locations", "extraConfig"}


def location(name: str, spec: dict[str, Any], recommended: bool) -> str:
    unknown = set(spec) - _LOCATION_KEYS
    assert not unknown, f"location {name}: not rendered by tests/nginxconf.py: {unknown}"
    lines = []
    if spec.get("proxyPass"):
        lines.append(f"proxy_pass {spec['proxyPass']};")
    if spec.get("proxyWebsockets"):
        lines += [
            "proxy_http_version 1.1;",
            "proxy_set_header Upgrade $http_upgrade;",
            "proxy_set_header Connection $connection_upgrade;",
        ]
    if spec.get("return"):
        lines.append(f"return {spec['return']};")
    lines.append(spec.get("extraConfig", ""))
    if spec.get("proxyPass") and spec.get("recommendedProxySettings", recommended):
        lines.append(RECOMMENDED_HEADERS)
    return f"location {name} {{\n" + "\n".join(lines) + "\n}\n"


def server(name: str, vhost: dict[str, Any], recommended: bool) -> str:
    unknown = set(vhost) - _VHOST_KEYS
    assert not unknown, f"vhost {name}: not rendered by tests/nginxconf.py: {unknown}"
    default = " default_server" if vhost.get("default") else ""
    listens = "".join(f"listen {x['addr']}:{x['port']}{default};\n" for x in vhost["listen"])
    locations = "".join(
        location(path, spec, recommended) for path, spec in vhost.get("locations", {}).items()
    )
    return f"server {{\n{listens}server_name {name};\n{locations}{vhost.get('extraConfig', '')}}}\n"


def render(nginx: dict[str, Any], prefix: Path, worker_connections: int = 1024) -> str:
    """A complete nginx.conf for `nginx -p prefix`; logs and temp files under prefix."""
    recommended = bool(nginx.get("recommendedProxySettings"))
    temp = "".join(
        f"{kind}_temp_path {prefix}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    vhosts = "".join(
        server(name, vhost, recommended) for name, vhost in nginx["virtualHosts"].items()
    )
    return (
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
        f"events {{ worker_connections {worker_connections}; }}\n"
        f"http {{\naccess_log {prefix}/access.log;\n{temp}"
        + (RECOMMENDED_HTTP if recommended else "")
        + UPGRADE_MAP
        + "client_max_body_size 10m;\nserver_tokens off;\n"
        + vhosts
        + str(nginx.get("appendHttpConfig", ""))
        + "}\n"
    )


def module_nginx(config: dict[str, Any], *modules: str) -> dict[str, Any]:
    """`services.nginx` of the given modules (e.g. modules/proxy.nix), merged as the module
    system merges them, evaluated by the real Nix with the stand-in lib (tests/nixstub.py)."""
    paths = " ".join(str(ROOT / m) for m in modules)
    source = (
        f"let lib = {STUB_LIB}; config = builtins.fromJSON {json.dumps(json.dumps(config))};"
        f" resolved = m: {RESOLVE} (import m {{ inherit lib config; }}).config;"
        f" in map (m: (resolved m).services.nginx or {{ }}) [ {paths} ]"
    )
    parts = eval_json(source)
    assert isinstance(parts, list)
    merged: dict[str, Any] = {}
    for part in parts:
        merged = _merge(merged, part)
    return merged


def _merge(a: Any, b: Any) -> Any:
    """Two modules' definitions merged as their nginx option types do: sets by key, lists
    concatenated, `lines` strings joined with a newline, anything else: the later one."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _merge(a[k], b[k]) if k in a and k in b else b.get(k, a.get(k)) for k in a | b}
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    if isinstance(a, str) and isinstance(b, str):
        return f"{a}\n{b}"
    return b


def route(port: int, **over: Any) -> dict[str, Any]:
    """An xnode.proxy route with the module's defaults (the stand-in lib applies none)."""
    return {"port": port, "public": False, "websockets": True, "walletGate": False,
            "stripPrefix": False, **over}  # fmt: skip
