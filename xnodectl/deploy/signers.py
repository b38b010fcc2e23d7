"""Who signed each store path of the system a node runs (`xnodectl store-key signers NODE`).

One SSH round trip runs, on the node, `nix path-info --json --sigs --recursive
/run/current-system` (the signatures its store holds) and `nix store verify --no-contents
--sigs-needed 1` against the workspace's trusted keys (which of those signatures are VALID for the
path's content hash, checked by the node's Nix against keys the operator supplies, not the node's
own configuration).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xnodectl import inventory as inv
from xnodectl import nix, nixsign, storekey
from xnodectl.errors import ExternalError
from xnodectl.remote import Session, Target
from xnodectl.workspace import Workspace

CURRENT = "/run/current-system"
TIMEOUT_S = 60.0
_UNTRUSTED = re.compile(r"path '(/nix/store/[^']+)' is untrusted")
SEPARATOR = "--xnode-verify--"


@dataclass(frozen=True)
class PathSigners:
    path: str
    signers: tuple[str, ...]  # key names, as the node's store records them
    trusted: bool  # at least one signature valid under the workspace's keys or the official key


@dataclass
class NodeSigners:
    node: str
    system: str
    paths: list[PathSigners] = field(default_factory=list)

    @property
    def untrusted(self) -> list[str]:
        return [p.path for p in self.paths if not p.trusted]

    def by_signer(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.paths:
            for name in p.signers or ("(unsigned)",):
                counts[name] = counts.get(name, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "system": self.system,
            "paths": len(self.paths),
            "by_signer": self.by_signer(),
            "untrusted": self.untrusted,
            "signers": {p.path: list(p.signers) for p in self.paths},
        }


def remote_command(keys: list[str]) -> list[str]:
    info = shlex.join(nixsign.signatures_argv([CURRENT]))
    verify = shlex.join(
        [
            *nix.BASE, "store", "verify", "--no-contents", "--recursive", "--sigs-needed", "1",
            "--option", "trusted-public-keys", " ".join(keys), CURRENT,
        ]
    )  # fmt: skip
    script = f"readlink -f {CURRENT}; {info}; echo {SEPARATOR} >&2; {verify}; exit 0"
    return ["sh", "-c", script]


def parse(node: str, stdout: str, stderr: str) -> NodeSigners:
    first, _, rest = stdout.partition("\n")
    if not first.startswith("/nix/store/"):
        raise ExternalError(
            f"node '{node}' runs no system yet ({CURRENT} is missing)",
            hint="deploy it first: xnodectl deploy --node " + node,
        )
    sigs = nixsign.parse_signatures(rest, ["nix", "path-info"])
    verified = stderr.partition(SEPARATOR)[2]
    untrusted = set(_UNTRUSTED.findall(verified))
    paths = [
        PathSigners(
            path, tuple(sorted({nixsign.signer_name(s) for s in found})), path not in untrusted
        )
        for path, found in sorted(sigs.items())
    ]
    return NodeSigners(node, first.strip(), paths)


async def signers(ws: Workspace, name: str) -> NodeSigners:
    inventory = ws.load()
    node = inventory.node(name)
    keys = [*inventory.settings.store_keys, storekey.OFFICIAL_CACHE_KEY]
    session = _session(inventory)
    try:
        ssh = session.ssh(Target(name, node.host, node.port, node.user, node.host_key))
        try:
            result = await ssh.run(remote_command(keys), timeout=TIMEOUT_S)
        finally:
            await ssh.close()
    finally:
        session.close()
    return parse(name, result.stdout, result.stderr)


def _session(inventory: inv.Inventory) -> Session:
    key = inventory.settings.ssh_key
    return Session(Path(key).expanduser() if key else None)
