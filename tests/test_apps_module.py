"""modules/apps.nix, evaluated with the real Nix (stand-in lib): what rendered apps publish, and the
restart of an app's units when the deploy engine uploads a changed secret file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.nixcheck import eval_json
from tests.nixstub import RESOLVE, STUB_LIB

MODULE = Path(__file__).resolve().parent.parent / "modules" / "apps.nix"


def evaluate(apps: dict[str, Any]) -> Any:
    config = {"xnode": {"apps": apps}}
    source = (
        f"let lib = {STUB_LIB}; config = builtins.fromJSON {json.dumps(json.dumps(config))};"
        f" in {RESOLVE} (import {MODULE} {{ inherit lib config; }}).config"
    )
    return eval_json(source)


GRAFANA = {
    "template": "monitoring",
    "health": [
        {"kind": "systemd", "target": "grafana.service", "status": 200, "timeout": 60},
        {"kind": "tcp", "target": "3000", "status": 200, "timeout": 60},
    ],
    "secrets": [
        {
            "name": "admin",
            "path": "/var/lib/xnode/secrets/mon/admin",
            "owner": "grafana",
            "group": "root",
        },
    ],
    "ports": [],
    "restartOnSecretChange": None,  # the option's default: the units of the systemd probes
}
PLAIN = {
    "template": "ipfs",
    "health": GRAFANA["health"],
    "secrets": [],
    "ports": [],
    "restartOnSecretChange": None,
}


def test_a_changed_secret_restarts_the_apps_units() -> None:
    config = evaluate({"mon": GRAFANA, "ipfs": PLAIN})
    path = config["systemd"]["paths"]["xnode-secrets-mon"]
    assert path["pathConfig"]["PathChanged"] == ["/var/lib/xnode/secrets/mon/admin"]
    assert path["wantedBy"] == ["multi-user.target"]
    service = config["systemd"]["services"]["xnode-secrets-mon"]
    assert (
        service["script"] == "systemctl try-restart grafana.service"
    )  # lib.escapeShellArgs: bare when safe
    assert service["serviceConfig"]["Type"] == "oneshot"
    # Apps without secrets get no watcher.
    assert set(config["systemd"]["paths"]) == {"xnode-secrets-mon"}


def test_apps_json_and_secret_directories() -> None:
    config = evaluate({"mon": GRAFANA})
    assert json.loads(config["environment"]["etc"]["xnode/apps.json"]["text"])["mon"] == GRAFANA
    assert config["systemd"]["tmpfiles"]["rules"] == [
        "d /var/lib/xnode/secrets 0711 root root -",
        "d /var/lib/xnode/secrets/mon 0711 root root -",
    ]


def test_an_app_names_the_units_its_secret_restarts() -> None:
    """postgres: a new password re-runs the unit that applies it, not the database server."""
    own = {**GRAFANA, "restartOnSecretChange": ["grafana-admin-password.service"]}
    config = evaluate({"mon": own})
    script = config["systemd"]["services"]["xnode-secrets-mon"]["script"]
    assert script == "systemctl try-restart grafana-admin-password.service"
