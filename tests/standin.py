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
`health`, `per_node` (node name baked in, so every node's system differs), `serve_apps`, `units`
(stand-in unit files under etc/systemd/system, each in its own store path, and the stand-in
systemctl that lists them, for the plan's units).

These closures are test fixtures, NOT NixOS: every figure measured with them must say so.
"""

from __future__ import annotations

import json
import os
import sys
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
      serveApps = cfg.serve_apps or false;
      # serve_apps: the node's apps in the workspace's inventory, their probes rendered by
      # xnodectl itself at build time (render-apps.py), served by stand-in units on the node.
      apps = node: if !serveApps then { } else {
        inventory = if builtins.pathExists ./inventory.toml then ./inventory.toml else "";
        renderApps = ./render-apps.py;
        appServer = ./app-server.py;
        standinSystemctl = ./systemctl.sh;
        standinSystemdRun = ./systemd-run.sh;
        python = cfg.python;
        templates = cfg.templates;
        appsNode = node;
      };
      # units: stand-in systemd unit files under etc/systemd/system, each its own store path as
      # NixOS's are (an unchanged unit keeps its path); `<x>.wants/<unit>` entries are links.
      unitsCfg = cfg.units or { };
      unitFile = name: derivation {
        name = "unit-${builtins.substring 0 16 (builtins.hashString "sha256" name)}";
        inherit system;
        builder = "/bin/sh";
        args = [ "-c" "printf '%s' \"$text\" > $out" ];
        text = unitsCfg.${name};
      };
      units = if unitsCfg == { } then { } else {
        standinSystemctl = ./systemctl.sh;
        unitNames = builtins.attrNames unitsCfg;
        unitFiles = map unitFile (builtins.attrNames unitsCfg);
      };
      toplevel = node: derivation ({
        name = "nixos-system-${node}-standin-${cfg.version}";
        inherit system leaves;
        builder = "/bin/sh";
        args = [ "-c" (builtins.readFile ./build.sh) ];
        stc = ./switch-to-configuration.sh;
        healthServer = ./health-server.py;
        health = if cfg.health then "1" else "";
        version = cfg.version;
        nodeName = if cfg.per_node then node else "";
      } // apps node // units);
    in {
      nixosConfigurations = builtins.listToAttrs (map (node: {
        name = node;
        value.config.system.build.toplevel =
          toplevel (if cfg.per_node || serveApps then node else "any");
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
if [ -n "${unitNames:-}" ]; then  # units: one link per unit file; .wants/ entries name a unit
  set -- $unitFiles
  for name in $unitNames; do
    file=$1; shift
    mkdir -p "$(dirname "$out/etc/systemd/system/$name")"
    case "$name" in
      */*.conf) ln -s "$file" "$out/etc/systemd/system/$name" ;;
      */*) ln -s "../${name##*/}" "$out/etc/systemd/system/$name" ;;
      *) ln -s "$file" "$out/etc/systemd/system/$name" ;;
    esac
  done
  mkdir -p "$out/sw/bin" && cp "$standinSystemctl" "$out/sw/bin/systemctl"
  chmod 0555 "$out/sw/bin/systemctl"
fi
if [ -n "${renderApps:-}" ]; then  # serve_apps: what the node's rendered probes check
  XNODECTL_TEMPLATES=$templates "$python" "$renderApps" "$inventory" "$appsNode" "$out"
  cp "$appServer" "$out/bin/app-server"
  cp "$standinSystemctl" "$out/sw/bin/systemctl"
  cp "$standinSystemdRun" "$out/sw/bin/systemd-run"
  chmod 0555 "$out/sw/bin/systemctl" "$out/sw/bin/systemd-run"
fi
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

# Stand-in units (serve_apps): one app server answers what the rendered probes check; the stand-in
# systemctl reports its units active while it runs. It binds with SO_REUSEPORT, so the app servers
# of several test nodes share a port on the one loopback; one that cannot bind fails the switch,
# as a unit that cannot start does.
if [ -f /run/xnode-test/apps.pid ]; then
  kill "$(cat /run/xnode-test/apps.pid)" 2>/dev/null
  rm -f /run/xnode-test/apps.pid
fi
rm -f /run/xnode-test/apps.ready
if [ -e "$out/apps.json" ]; then
  mkdir -p /run/systemd/system  # systemctl and systemd-run: the stand-ins in $out/sw/bin
  setsid /usr/bin/python3 "$out/bin/app-server" "$out/apps.json" </dev/null \
    >>"$T/app-server.log" 2>&1 &
  echo $! > /run/xnode-test/apps.pid
  for _ in $(seq 250); do
    [ -e /run/xnode-test/apps.ready ] && break
    kill -0 "$(cat /run/xnode-test/apps.pid)" 2>/dev/null || break
    sleep 0.02
  done
  if [ ! -e /run/xnode-test/apps.ready ]; then
    units=$(tr '\n' ' ' < "$out/units")
    why=$(tail -n 1 "$T/app-server.log")
    echo "warning: the following units failed: ${units}(stand-in app server: $why)" >&2
    exit 4
  fi
else
  rm -rf /run/systemd/system
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


RENDER_APPS = r'''"""Stand-in build step (serve_apps): the node's apps from the workspace's
inventory, rendered by xnodectl's own code; writes what their health probes check to
$out/apps.json and the systemd units they name to $out/units."""
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

from xnodectl import app_request, inventory

source, node, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
entry = inventory.load(Path(source)).nodes.get(node) if source else None
http, tcp, units = [], set(), []
for app in app_request.render_node(entry.apps) if entry else []:
    for probe in app.probes:
        if probe.kind == "http":
            url = urlsplit(probe.target)
            http.append({"port": url.port or 80, "path": url.path or "/", "status": probe.status})
        elif probe.kind == "tcp":  # where the app listens: all addresses for a public port
            port = int(probe.target.rsplit(":", 1)[-1])
            public = any(p.public for p in app.ports if p.port == port)
            tcp.add((port, "0.0.0.0" if public else "127.0.0.1"))
        else:
            units.append(probe.target)
(out / "apps.json").write_text(json.dumps({"http": http, "tcp": sorted(tcp), "units": units}))
(out / "units").write_text("".join(u + "\n" for u in units))
'''

APP_SERVER = r'''"""Stand-in app server (xnodectl test fixture, not a real app): listens at
every port the system's rendered probes check (on 127.0.0.1; a TCP port the app declares public
on every address, as the real app would) and answers each HTTP probe path with
the status it expects (500 while /run/xnode-test/unhealthy exists or before healthy-at, as the
health server does).

Test nodes share one loopback, so servers of several nodes bind the same port (SO_REUSEPORT) and
the kernel may hand a node's probe to another node's server. Each request is therefore answered
for the node the CLIENT runs in (found through /proc: its socket, its process, that process's
/run): only if that node's own app server runs and its system serves this port, else the
connection is closed unanswered. A bare TCP connect cannot be told apart that way (it succeeds
once any node listens): tcp probes are as good as one shared loopback allows.
"""
import json
import os
import socket
import sys
import threading
import time

CONF = json.load(open(sys.argv[1]))


def _hex(address):
    ip, port = address[:2]
    return "%08X:%04X" % (int.from_bytes(socket.inet_aton(ip), "little"), port)


def client_root(conn):
    """/proc/PID/root of the local process at the other end of `conn`, or None."""
    want = (_hex(conn.getpeername()), _hex(conn.getsockname()))
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    inodes = [p[9] for p in rows if (p[1], p[2]) == want]
    if not inodes:
        return None
    target = f"socket:[{inodes[0]}]"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return f"/proc/{pid}/root"
            except OSError:
                continue
    return None


def served(root, port):
    """The HTTP probes of `port` the client's node serves now (None: its app server is down)."""
    try:
        with open(f"{root}/run/xnode-test/apps.pid") as f:
            pid = f.read().strip()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"app-server" not in f.read():
                return None
        with open(f"{root}/run/current-system/apps.json") as f:
            conf = json.load(f)
    except (OSError, ValueError):
        return None
    return [h for h in conf["http"] if h["port"] == port]


def unhealthy(root):
    if os.path.exists(f"{root}/run/xnode-test/unhealthy"):
        return True
    try:
        with open(f"{root}/run/xnode-test/healthy-at") as f:
            return time.time() < int(f.read().strip())
    except (OSError, ValueError):
        return False


def answer(conn, port):
    with conn:
        conn.settimeout(5)
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            request += chunk
        root = client_root(conn)
        probes = served(root, port) if root else None
        if not probes:
            return  # that node serves nothing here: no answer
        path = request.split(b" ", 2)[1].decode(errors="replace").split("?")[0]
        status = next((h["status"] for h in probes if h["path"] == path), 404)
        if unhealthy(root):
            status = 500
        body = f"stand-in app {status} {path}\n".encode()
        head = f"HTTP/1.0 {status} stand-in\r\nContent-Length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode() + body)


def serve(sock, port, http):
    while True:
        conn, _ = sock.accept()
        if http:
            threading.Thread(target=answer, args=(conn, port), daemon=True).start()
        else:
            conn.close()


http_ports = {h["port"] for h in CONF["http"]}
addresses = {port: "127.0.0.1" for port in http_ports}
addresses.update({port: address for port, address in CONF["tcp"]})
sockets = []
for port, address in sorted(addresses.items()):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sys.exit(f"port {port}: {exc}")
    sock.listen(64)
    sockets.append((sock, port, port in http_ports))
for sock, port, http in sockets:
    threading.Thread(target=serve, args=(sock, port, http), daemon=True).start()
open("/run/xnode-test/apps.ready", "w").close()
threading.Event().wait()
'''

SYSTEMCTL = r"""#!/bin/bash
# Stand-in systemctl (xnodectl test fixture, not systemd): `is-active UNIT` for the units the
# running stand-in system serves: active while its app server runs. `list-units` (the plan asks
# it): every unit file of the running system, active, except those named in
# /run/xnode-test/failed-units (failed, with systemd's bullet); while
# /run/xnode-test/no-systemd exists it fails as systemctl does where systemd is not running.
if [ "${1:-}" = list-units ]; then
  if [ -e /run/xnode-test/no-systemd ]; then
    echo "System has not been booted with systemd as init system (PID 1). Can't operate." >&2
    exit 1
  fi
  for f in /run/current-system/etc/systemd/system/*; do
    n=${f##*/}
    [ -d "$f" ] && continue
    case $n in *@.*) continue ;; esac
    if grep -qxF -- "$n" /run/xnode-test/failed-units 2>/dev/null; then
      printf '\342\227\217 %s loaded failed failed stand-in\n' "$n"
    else
      printf '%s loaded active running stand-in\n' "$n"
    fi
  done
  exit 0
fi
if [ "${1:-}" != is-active ] || [ -z "${2:-}" ]; then
  echo "stand-in systemctl: only 'is-active UNIT'" >&2
  exit 1
fi
pid=$(cat /run/xnode-test/apps.pid 2>/dev/null)
# (a process that died but was not reaped yet has an empty command line)
if grep -qxF -- "$2" /run/current-system/units 2>/dev/null && [ -n "$pid" ] &&
  grep -qa app-server "/proc/$pid/cmdline" 2>/dev/null; then
  echo active
  exit 0
fi
echo inactive
exit 3
"""

SYSTEMD_RUN = r"""#!/bin/bash
# Stand-in systemd-run (xnodectl test fixture, not systemd): the command runs detached in a
# session of its own, as a transient unit's would (options other than --setenv are ignored).
while [ $# -gt 0 ]; do
  case $1 in
    --) shift; break ;;
    --setenv=*) export "${1#--setenv=}"; shift ;;
    --unit | -u | --property | -p | --setenv | -E) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
setsid "$@" </dev/null >/dev/null 2>&1 &
"""


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
    # Serve what the node's apps' rendered probes check (stand-in units; see APP_SERVER): the
    # system then depends on the node's apps in the inventory, as a NixOS system does.
    serve_apps: bool = False
    # Stand-in systemd units ({"a.service": text, "a.service.d/x.conf": text,
    # "multi-user.target.wants/a.service": ""}) under the system's etc/systemd/system.
    units: dict[str, str] = field(default_factory=dict)
    _built: dict[tuple[str, str], str] = field(default_factory=dict)

    def write(self) -> StandinFlake:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        files = {
            "flake.nix": FLAKE,
            "build.sh": BUILD,
            "switch-to-configuration.sh": SWITCH,
            "health-server.py": HEALTH_SERVER,
            "render-apps.py": RENDER_APPS,
            "app-server.py": APP_SERVER,
            "systemctl.sh": SYSTEMCTL,
            "systemd-run.sh": SYSTEMD_RUN,
            "standin.json": json.dumps(self._config(), indent=1, sort_keys=True) + "\n",
        }
        for name, text in files.items():
            (d / name).write_text(text)
        if not (d / ".git").exists():
            process.run(["git", "init", "-q", str(d)])
        process.run(["git", "-C", str(d), "add", *files])
        return self

    def _config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "nodes": self.nodes, "version": self.version, "size": self.size,
            "leaf_bytes": self.leaf_bytes, "leaf_salt": self.leaf_salt, "health": self.health,
            "per_node": self.per_node, "system": self.system,
        }  # fmt: skip
        if self.units:
            config["units"] = self.units
        if self.serve_apps:  # the build runs xnodectl (this Python) to render the probes
            config.update(
                serve_apps=True,
                python=sys.executable,
                templates=os.environ.get("XNODECTL_TEMPLATES", ""),
            )
        return config

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
