"""The operator's fleet file, inventory.toml: nodes, their pinned host keys, tags and apps."""

from __future__ import annotations

import contextlib
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from xnodectl.errors import InventoryError, did_you_mean

FILENAME = "inventory.toml"
HEADER = "xnodectl inventory: the nodes of this workspace and the apps each runs."
NODE_NAME = r"^[a-z][a-z0-9-]{0,62}$"
# A Nix public signing key: "name:" + base64 of the 32-byte ed25519 key.
STORE_PUBLIC_KEY = r"^[A-Za-z0-9._+-]{1,64}:[A-Za-z0-9+/]{43}=$"


# Values that end up in an ssh command line are checked where the file is read, not only where
# `node add` writes them: a shared inventory.toml is input like any other (issue 13 item 6).
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}", re.IGNORECASE)
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)", re.IGNORECASE)  # "_": ssh aliases


def check_host(host: str) -> str:
    """An IP address or a DNS name; an internationalized name becomes its punycode (IDNA) form."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(host.removeprefix("[").removesuffix("]")))
    except ValueError:
        pass
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in host) or host.startswith("-"):
        raise ValueError(f"host {host[:60]!r} holds spaces, control characters or a leading '-'")
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"host {host[:60]!r} is not a valid DNS name") from None
    labels = ascii_host.removesuffix(".").split(".")
    if len(ascii_host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"host {host[:60]!r} is not a valid DNS name or IP address")
    return ascii_host


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

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        return check_host(host)

    @field_validator("user")
    @classmethod
    def _user(cls, user: str) -> str:
        if not _USER.fullmatch(user):
            raise ValueError(
                f"user {user[:40]!r} is not a POSIX user name (letters, digits, '_', '.', '-'; "
                "not starting with '-')"
            )
        return user

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


def check_node_name(name: str) -> str:
    """The one rule for node names (they become host names, file names and Nix attributes)."""
    if not re.match(NODE_NAME, name):
        raise InventoryError(
            f"node name {name!r} is not allowed",
            hint="use lowercase letters, digits and '-', starting with a letter (at most 63)",
        )
    return name


class Inventory(_Strict):
    settings: Settings = Settings()
    nodes: dict[str, Node] = {}
    # What the file held when this inventory was loaded: `save` writes only what changed since.
    _loaded: Inventory | None = PrivateAttr(default=None)
    _loaded_text: str | None = PrivateAttr(default=None)  # the file's text then, to skip a rebase

    def __eq__(self, other: object) -> bool:  # the content only, not where it was loaded from
        if not isinstance(other, Inventory):
            return NotImplemented
        return self.settings == other.settings and self.nodes == other.nodes

    __hash__ = None  # type: ignore[assignment]  # mutable, like every pydantic model

    @field_validator("nodes")
    @classmethod
    def _node_names(cls, nodes: dict[str, Node]) -> dict[str, Node]:
        for name in nodes:
            try:
                check_node_name(name)
            except InventoryError as exc:
                raise ValueError(exc.message) from exc
        return nodes

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
    inventory._loaded = inventory.model_copy(deep=True)
    inventory._loaded_text = text
    return inventory


def load(path: Path) -> Inventory:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise InventoryError(
            f"{path} does not exist", hint="create a workspace with: xnodectl init DIR"
        ) from exc
    return parse(text, path)


def save(inventory: Inventory, path: Path) -> None:
    """Write under the workspace lock, keeping the comments and layout the operator wrote. An
    inventory loaded earlier writes only its own changes: what another command saved meanwhile
    (a `node add` during a deploy) stays."""
    from xnodectl import inventory_file  # tomlkit: loaded by the commands that write, only

    with inventory_file.locked(path):
        merged = inventory
        if inventory._loaded is not None and path.exists():
            text = path.read_text()
            if text != inventory._loaded_text:  # another command saved since: keep its changes
                merged = _rebase(inventory, inventory._loaded, parse(text, path))
        _write(merged, path)
        inventory._loaded = inventory.model_copy(deep=True)
        inventory._loaded_text = path.read_text()


def _rebase(mine: Inventory, base: Inventory, current: Inventory) -> Inventory:
    """`current` with the settings and nodes `mine` changed since `base` (a node is the unit)."""
    merged = current.model_copy(deep=True)
    if mine.settings != base.settings:
        merged.settings = mine.settings
    for name in {*base.nodes, *mine.nodes}:
        node = mine.nodes.get(name)
        if node == base.nodes.get(name):
            continue
        if node is None:
            merged.nodes.pop(name, None)
        else:
            merged.nodes[name] = node
    return merged


@contextlib.contextmanager
def edit(path: Path) -> Iterator[Inventory]:
    """Read, change and write the inventory under the workspace lock, so two commands editing it
    at once both keep their change. Nothing is written if the block raises."""
    from xnodectl import inventory_file

    with inventory_file.locked(path):
        inventory = load(path)
        yield inventory
        _write(inventory, path)


def _write(inventory: Inventory, path: Path) -> None:
    """Validate the whole model again (a name or host set after loading meets the same rules),
    then write it; values equal to their defaults are only written if the file had them."""
    full = inventory.model_dump(exclude_none=True)
    try:
        Inventory.model_validate(full)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InventoryError(
            f"{'.'.join(map(str, first['loc']))}: {first['msg']}",
            hint="nothing was written; correct the value and run the command again",
        ) from exc
    minimal = inventory.model_dump(exclude_none=True, exclude_defaults=True)
    from xnodectl import inventory_file

    inventory_file.write(path, full, minimal, HEADER)
