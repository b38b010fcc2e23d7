"""The operator's fleet file, inventory.toml: nodes, their pinned host keys, tags and apps."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from xnodectl import tomlw
from xnodectl.errors import InventoryError, did_you_mean

FILENAME = "inventory.toml"
NODE_NAME = r"^[a-z][a-z0-9-]{0,62}$"
# A Nix public signing key: "name:" + base64 of the 32-byte ed25519 key.
STORE_PUBLIC_KEY = r"^[A-Za-z0-9._+-]{1,64}:[A-Za-z0-9+/]{43}=$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AppEntry(_Strict):
    template: str
    name: str | None = None
    params: dict[str, Any] = {}

    @property
    def instance(self) -> str:
        return self.name or self.template


class Node(_Strict):
    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str = "root"
    # The node's SSH host public key ("ssh-ed25519 AAAA..."), pinned at claim or first contact.
    host_key: str | None = None
    # How OTHER NODES reach this one's sshd during a fan-out deploy (a LAN address behind the
    # operator's NAT, say); default: host and port.
    peer_host: str | None = Field(default=None, min_length=1)
    peer_port: int | None = Field(default=None, ge=1, le=65535)
    tags: list[str] = []
    system: str = "x86_64-linux"
    owner: str | None = None
    # Public keys that may log in as root. They become xnode.owner.sshKeys of the node's system, so
    # a deploy can never lock out the operator (set by `claim`, `node add --authorized-key`).
    authorized_keys: list[str] = []

    @field_validator("authorized_keys")
    @classmethod
    def _public_keys(cls, keys: list[str]) -> list[str]:
        from xnodectl import sshkeys
        from xnodectl.errors import UsageError

        try:
            return [sshkeys.parse(key, "authorized key").line() for key in keys]
        except UsageError as exc:
            raise ValueError(exc.message) from exc

    # The node only activates owner-signed deploy manifests (/etc/xnode/require-signed-deploys).
    signed_deploys: bool = False
    apps: list[AppEntry] = []


class Settings(_Strict):
    xnodectl_flake: str | None = None
    max_parallel: int = Field(default=10, ge=1, le=1000)
    confirm_timeout: int = Field(default=30, ge=5, le=3600)
    ssh_key: str | None = None
    # The owner's keystore used to sign deploy manifests for nodes with signed_deploys = true.
    signer_keystore: str | None = None
    # Public Nix store keys ("name:base64") the nodes trust for paths from peers and caches: the
    # workspace owner key first (its secret half is secrets/nix-store-key, see storekey.py), then
    # keys being rotated out. Never a secret key.
    store_keys: list[str] = []

    @field_validator("store_keys")
    @classmethod
    def _store_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not re.match(STORE_PUBLIC_KEY, key):
                raise ValueError(f"'{key[:40]}' is not a Nix public key (name:base64 of 32 bytes)")
        return keys


class Inventory(_Strict):
    settings: Settings = Settings()
    nodes: dict[str, Node] = {}

    def node(self, name: str) -> Node:
        if name not in self.nodes:
            raise InventoryError(
                f"no node named '{name}' in the inventory",
                hint=did_you_mean(name, self.nodes)
                if self.nodes
                else "add one with: xnodectl node add NAME HOST",
            )
        return self.nodes[name]


def _line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """Best-effort line number for a validation error location."""
    if len(loc) >= 2 and loc[0] == "nodes":
        pattern = re.compile(rf"^\s*\[\[?nodes\.\"?{re.escape(str(loc[1]))}\"?[\].]", re.M)
        if len(loc) >= 3:
            field = re.compile(rf"^\s*{re.escape(str(loc[2]))}\s*=", re.M)
            start = pattern.search(text)
            if start:
                match = field.search(text, start.end())
                if match:
                    return text.count("\n", 0, match.start()) + 1
        match = pattern.search(text)
        if match:
            return text.count("\n", 0, match.start()) + 1
    if loc:
        match = re.search(rf"^\s*\[?{re.escape(str(loc[0]))}\b", text, re.M)
        if match:
            return text.count("\n", 0, match.start()) + 1
    return None


def parse(text: str, path: Path) -> Inventory:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{path}: {exc}", hint="fix the TOML syntax") from exc
    try:
        inventory = Inventory.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        line = _line_of(text, loc)
        where = f"{path}:{line}" if line else str(path)
        raise InventoryError(
            f"{where}: {'.'.join(map(str, loc))}: {first['msg']}",
            hint="see the inventory format in the README",
        ) from exc
    for name in inventory.nodes:
        if not re.match(NODE_NAME, name):
            raise InventoryError(
                f"{path}: node name '{name}' is not allowed",
                hint="use lowercase letters, digits and '-'",
            )
    return inventory


def load(path: Path) -> Inventory:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise InventoryError(
            f"{path} does not exist", hint="create a workspace with: xnodectl init DIR"
        ) from exc
    return parse(text, path)


def dump(inventory: Inventory) -> str:
    parts = ["# xnodectl inventory: the nodes of this workspace and the apps each runs.\n"]
    parts.append(tomlw.table("settings", inventory.settings.model_dump(exclude_defaults=True)))
    for name, node in inventory.nodes.items():
        data = node.model_dump(exclude={"apps"}, exclude_none=True)
        parts.append("\n" + tomlw.table(f"nodes.{tomlw.key(name)}", data))
        for app in node.apps:
            parts.append(f"\n[[nodes.{tomlw.key(name)}.apps]]\n")
            parts.append(tomlw.table("", app.model_dump(exclude_none=True)))
    return "".join(parts)


def save(inventory: Inventory, path: Path) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(dump(inventory))
    tmp.replace(path)
