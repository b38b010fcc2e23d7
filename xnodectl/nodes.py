"""The inventory's nodes: add (validate, optionally scan the host key), remove, pin after a claim.

Every change goes through the inventory model (names, hosts, users, keys validated there) and
`Workspace.edit` (locked read-modify-write that keeps the operator's comments).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from xnodectl import inventory as inv
from xnodectl import remote, sshkeys
from xnodectl.errors import InventoryError, UsageError
from xnodectl.workspace import Workspace


@dataclass(frozen=True)
class NodeAdd:
    """What `xnodectl node add` was asked."""

    name: str
    host: str
    port: int = 22
    user: str = "root"
    tags: tuple[str, ...] = ()
    host_key: str | None = None
    scan: bool = False
    authorized_keys: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Added:
    name: str
    updated: bool  # the node existed: its address/key changed, its apps kept


def checked_node(fields: Mapping[str, Any]) -> inv.Node:
    """A node model from `fields`, or one `error:` line naming the bad value."""
    try:
        return inv.Node.model_validate(dict(fields))
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        field = ".".join(map(str, first["loc"]))
        raise InventoryError(
            f"{field}: {message}", hint="nothing was changed; correct the value"
        ) from None


def add(ws: Workspace, req: NodeAdd, announce: Callable[[str], None]) -> Added:
    """Add a node, or update its address, tags and keys while keeping its apps. Every value is
    checked before the host is contacted (--scan) or the inventory is touched."""
    inv.check_node_name(req.name)
    if req.host_key and req.scan:
        raise UsageError("give --host-key or --scan, not both", hint="--scan fetches the key")
    keys = [sshkeys.read(path.expanduser()).line() for path in req.authorized_keys]
    address = checked_node({"host": req.host, "port": req.port, "user": req.user})
    host_key = req.host_key
    if host_key is not None:
        host_key = " ".join(sshkeys.parse(host_key, "--host-key").line().split()[:2])
    if req.scan:
        host_key = remote.scan_host_key(address.host, address.port)
        announce(
            f"pinned {req.name}'s host key {remote.fingerprint(host_key)}: compare it with "
            "the node's console before deploying"
        )
    update: dict[str, Any] = {"host": address.host, "port": address.port, "user": address.user}
    if host_key:
        update["host_key"] = host_key
    if req.tags:
        update["tags"] = list(req.tags)
    with ws.edit() as inventory:
        old = inventory.nodes.get(req.name)
        fields = old.model_dump() if old else {}
        if keys:
            update["authorized_keys"] = list(
                dict.fromkeys([*fields.get("authorized_keys", []), *keys])
            )
        inventory.nodes[req.name] = checked_node({**fields, **update})
    return Added(req.name, updated=old is not None)


def remove(ws: Workspace, name: str) -> None:
    """Remove a node and its rendered apps/<node>/; the machine itself is untouched."""
    with ws.edit() as inventory:
        inventory.node(name)  # unknown: an error with a did-you-mean hint
        del inventory.nodes[name]
    shutil.rmtree(ws.apps_dir(name), ignore_errors=True)


def expected_fingerprint(ws: Workspace, name: str, given: str | None) -> str | None:
    """The host key fingerprint a claim of node `name` must see: the one the operator read on
    the console (`given`) and/or the one the inventory pins; they must agree. The name is checked
    here, so a bad --node stops a claim before anything is signed."""
    inv.check_node_name(name)
    entry = ws.load().nodes.get(name)
    pinned = sshkeys.parse(entry.host_key).fingerprint if entry and entry.host_key else None
    if pinned and given and pinned != given:
        raise UsageError(
            "--expect-host-key differs from the inventory's pinned key",
            hint="check which one is right before claiming",
        )
    return given or pinned


def pin_claimed(
    ws: Workspace, name: str, host: str, host_key: str, owner: str, authorized_key: str
) -> None:
    """After a claim: pin the node's host key and owner and keep the claimed SSH key. The key
    goes into the node's NixOS config at the next deploy, which also turns the claim service off
    (modules/claim.nix: enabled only while the owner has no key)."""
    try:
        inv.check_node_name(name)
    except InventoryError:
        raise InventoryError(
            f"the node calls itself {name!r}, which is not a valid inventory name "
            "(the key is authorized; only pinning failed)",
            hint="rerun with --node NAME and --expect-host-key "
            + sshkeys.parse(host_key).fingerprint,
        ) from None
    with ws.edit() as inventory:
        fields = inventory.nodes[name].model_dump() if name in inventory.nodes else {"host": host}
        keys = list(dict.fromkeys([*fields.get("authorized_keys", []), authorized_key]))
        inventory.nodes[name] = checked_node(
            {**fields, "host_key": host_key, "owner": owner, "authorized_keys": keys}
        )
