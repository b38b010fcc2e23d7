"""Stand-in NixOS systems for test Xnodes: a fixture flake that needs no nixpkgs.

`nixosConfigurations.<node>.config.system.build.toplevel` is a plain derivation (builder /bin/sh)
whose `bin/switch-to-configuration` behaves like NixOS's for the deploy engine's purposes:
`test`/`switch` point /run/current-system at it, every call logs "activating <path> <action>" to
/var/lib/xnode-test/activations.log, a `health` system (re)starts a tiny HTTP server on the port in
/var/lib/xnode-test/health-port, and it obeys the fault files of tests/xnodes.py (`Fault`).
`boot` only logs (there is no bootloader; the boot default is the system profile), slowly under
the BOOT_SLOW fault.

Knobs: `version` (two versions are two different systems sharing their leaves), `size` (that many
leaf paths of `leaf_bytes` random bytes each under the system: 300 x 170 KB is about 50 MB),
`health`, `per_node` (node name baked in, so every node's system differs).

These closures are test fixtures, NOT NixOS: every figure measured with them must say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tests.xnodes import NIX_ENV
from xnodectl import process

FLAKE = r"""{
  description = "xnodectl test fixture: stand-in systems (not NixOS)";
  outputs = { self }:
    let
      cfg = builtins.fromJSON (builtins.readFile ./standin.json);
      system = cfg.system;
      leaf = i: derivation {
        name = "standin-leaf-${toString i}";
        inherit system;
        builder = "/bin/sh";
        args = [ "-c" "/usr/bin/head -c ${toString cfg.leaf_bytes} /dev/urandom > $out" ];
        salt = cfg.leaf_salt;
      };
      leaves = builtins.genList leaf cfg.size;
      toplevel = node: derivation {
        name = "nixos-system-${node}-standin-${cfg.version}";
        inherit system leaves;
        builder = "/bin/sh";
        args = [ "-c" (builtins.readFile ./build.sh) ];
        stc = ./switch-to-configuration.sh;
        healthServer = ./health-server.py;
        health = if cfg.health then "1" else "";
        version = cfg.version;
        nodeName = if cfg.per_node then node else "";
      };
    in {
      nixosConfigurations = builtins.listToAttrs (map (node: {
        name = node;
        value.config.system.build.toplevel = toplevel (if cfg.per_node then node else "any");
      }) cfg.nodes);
    };
}
"""

BUILD = r"""set -e
PATH=/usr/bin:/bin
mkdir -p "$out/bin" "$out/sw/bin"
sed "s|@out@|$out|g" "$stc" > "$out/bin/switch-to-configuration"
chmod 0555 "$out/bin/switch-to-configuration"
cp "$healthServer" "$out/bin/health-server"
echo "$version" > "$out/nixos-version"
[ -n "$nodeName" ] && echo "$nodeName" > "$out/node-name"
[ -n "$health" ] && touch "$out/health"
for leaf in $leaves; do echo "$leaf"; done > "$out/leaves"
"""

SWITCH = r"""#!/bin/bash
# Stand-in for NixOS's switch-to-configuration (xnodectl test fixture, not NixOS).
set -u
out=@out@
action=${1:-}
T=/var/lib/xnode-test
case "$action" in
  switch|boot|test|dry-activate) ;;
  *) echo "usage: switch-to-configuration switch|boot|test|dry-activate" >&2; exit 1 ;;
esac
mkdir -p /run/xnode-test
# Node.reboot() activates the boot default with XNODE_TEST_BOOTING=1: logged as "boot-up".
if [ -n "${XNODE_TEST_BOOTING:-}" ]; then
  echo "activating $out boot-up" >> "$T/activations.log"
else
  echo "activating $out $action" >> "$T/activations.log"
fi
# A fault applies when its file is empty or names this system; it is used up by applying it.
fault() {
  local f="$T/faults/$1" target
  [ -e "$f" ] || return 1
  target=$(cat "$f")
  if [ -z "$target" ] || [ "$target" = "$out" ]; then rm -f "$f"; return 0; fi
  return 1
}
case "$action" in
  dry-activate) echo "would restart the following units: standin.service"; exit 0 ;;
  boot)  # no bootloader here: the boot default is the system profile
    if fault boot-fails; then echo "stand-in boot: no boot loader (injected)" >&2; exit 1; fi
    if fault boot-slow; then sleep 2; echo "stand-in boot entry written (slowly)"; fi
    exit 0 ;;
esac
if fault activation-fails; then
  echo "stand-in activation: standin.service failed to start (injected fault)" >&2
  exit 4
fi
if fault activation-slow; then
  echo "stand-in activation: slow start, 2 s (injected)" >&2
  sleep 2
fi
if fault activation-hangs; then
  echo "stand-in activation: hanging (injected fault)" >&2
  exec sleep 2147483647
fi

ln -sfn "$out" /run/current-system.tmp && mv -T /run/current-system.tmp /run/current-system

if [ -f /run/xnode-test/health.pid ]; then
  kill "$(cat /run/xnode-test/health.pid)" 2>/dev/null
  rm -f /run/xnode-test/health.pid
fi
rm -f /run/xnode-test/unhealthy /run/xnode-test/healthy-at
if fault health-fails; then touch /run/xnode-test/unhealthy; fi
# A slow app: healthy only N seconds after this activation ($T/health-delay holds N; a knob, kept).
if [ -s "$T/health-delay" ]; then
  echo $(( $(date +%s) + $(cat "$T/health-delay") )) > /run/xnode-test/healthy-at
fi
if [ -e "$out/health" ]; then
  port=$(cat "$T/health-port")
  setsid /usr/bin/python3 "$out/bin/health-server" "$port" "$out" </dev/null >/dev/null 2>&1 &
  echo $! > /run/xnode-test/health.pid
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.02
  done
fi

if fault refuse-new-connections; then
  touch /run/xnode-test/refuse-ssh
else
  rm -f /run/xnode-test/refuse-ssh
fi
if fault switch-then-fails; then
  echo "warning: the following units failed: standin.service (injected, after switching)" >&2
  exit 4
fi
echo "stand-in activation of $out ($action) done"
"""

HEALTH_SERVER = r'''"""Stand-in health endpoint: 200 + the system path; else 500 (unhealthy,
or a slow app before its healthy-at time)."""
import http.server
import os
import sys
import time

PORT, SYSTEM = int(sys.argv[1]), sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        bad = os.path.exists("/run/xnode-test/unhealthy")
        try:
            with open("/run/xnode-test/healthy-at") as f:
                bad = bad or time.time() < int(f.read().strip())
        except (OSError, ValueError):
            pass
        body = (("unhealthy " if bad else "ok ") + SYSTEM + "\n").encode()
        self.send_response(500 if bad else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
'''


@dataclass
class StandinFlake:
    """A stand-in fixture flake in `directory` for `nodes`; `configure()` then `build(node)`."""

    directory: Path
    nodes: list[str]
    version: str = "1"
    size: int = 0
    leaf_bytes: int = 170_000
    leaf_salt: str = "1"
    health: bool = False
    per_node: bool = False
    system: str = "x86_64-linux"
    _built: dict[tuple[str, str], str] = field(default_factory=dict)

    def write(self) -> StandinFlake:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        files = {
            "flake.nix": FLAKE,
            "build.sh": BUILD,
            "switch-to-configuration.sh": SWITCH,
            "health-server.py": HEALTH_SERVER,
            "standin.json": json.dumps(self._config(), indent=1, sort_keys=True) + "\n",
        }
        for name, text in files.items():
            (d / name).write_text(text)
        if not (d / ".git").exists():
            process.run(["git", "init", "-q", str(d)])
        process.run(["git", "-C", str(d), "add", *files])
        return self

    def _config(self) -> dict[str, object]:
        return {
            "nodes": self.nodes, "version": self.version, "size": self.size,
            "leaf_bytes": self.leaf_bytes, "leaf_salt": self.leaf_salt, "health": self.health,
            "per_node": self.per_node, "system": self.system,
        }  # fmt: skip

    def configure(self, **changes: object) -> StandinFlake:
        """Change knobs (version=..., size=..., health=...) and rewrite the flake."""
        for key, value in changes.items():
            if not hasattr(self, key) or key.startswith("_"):
                raise AttributeError(f"StandinFlake has no knob {key}")
            setattr(self, key, value)
        return self.write()

    def attr(self, node: str) -> str:
        return f"{self.directory}#nixosConfigurations.{node}.config.system.build.toplevel"

    def build(self, node: str | None = None) -> str:
        """Build node's (default: the first node's) system; returns its store path."""
        node = node or self.nodes[0]
        key = (node, json.dumps(self._config(), sort_keys=True))
        if key not in self._built:
            result = process.run(
                ["nix", "build", "--no-link", "--json", self.attr(node)], env=NIX_ENV, timeout=600
            )
            self._built[key] = json.loads(result.stdout)[0]["outputs"]["out"]
        return self._built[key]
