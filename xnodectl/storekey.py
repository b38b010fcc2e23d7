"""The workspace owner's Nix store signing key: what makes peers and caches safe as sources.

The secret half lives in the workspace's secrets/ (0600, git-ignored, so never in git nor in the
Nix store a flake build copies the workspace into) in Nix's own format (`nix key
generate-secret`). Its public half goes into inventory.toml `settings.store_keys`, which the
workspace flake hands to mkXnode: XnodeOS nodes put it in nix.settings.trusted-public-keys
(modules/trust.nix), so a deploy rotates it. The engine signs every closure it copies with it.

`xnodectl init` creates it; a deploy of a workspace made before that creates it then (`for_deploy`,
before the build, so the system it deploys already trusts it) and says so once.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from xnodectl import inventory as inv
from xnodectl import nixsign, process
from xnodectl.errors import UsageError, XnodeError
from xnodectl.inventory import STORE_PUBLIC_KEY
from xnodectl.workspace import Workspace

logger = logging.getLogger(__name__)

SECRET_FILE = "nix-store-key"
# nixpkgs nixos/modules/config/nix.nix adds this key to every NixOS system's trusted keys.
OFFICIAL_CACHE_KEY = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
_SECRET = re.compile(r"^[A-Za-z0-9._+-]{1,64}:[A-Za-z0-9+/]{86}==$")


@dataclass(frozen=True)
class OwnerKey:
    name: str
    secret_file: Path
    public: str


def secret_path(ws: Workspace) -> Path:
    return ws.secrets_dir() / SECRET_FILE


def load(ws: Workspace) -> OwnerKey | None:
    """The workspace's key, None when it has none yet; a damaged or exposed file is an error."""
    path = secret_path(ws)
    if not path.exists():
        return None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise UsageError(
            f"{path} is readable by others (mode {mode:o})",
            hint=f"chmod 600 {path}; if others could read it, rotate: xnodectl store-key rotate",
        )
    secret = path.read_text().strip()
    public = nixsign.public_of(secret) if _SECRET.match(secret) else None
    if public is None:
        raise UsageError(
            f"{path} is not a Nix secret signing key",
            hint=f"move it away and create a new key: xnodectl store-key rotate ({path})",
        )
    return OwnerKey(name=public.partition(":")[0], secret_file=path, public=public)


def ensure(ws: Workspace) -> OwnerKey:
    """The workspace's key, created on first use; its public half is listed in the inventory."""
    key = load(ws) or _create(ws)
    _list(ws, key)
    return key


def _list(ws: Workspace, key: OwnerKey) -> None:
    """Trust `key` first in the inventory (the nodes' trusted keys come from there)."""
    if key.public in ws.load().settings.store_keys:
        return
    with ws.edit() as inventory:
        if key.public not in inventory.settings.store_keys:
            inventory.settings.store_keys = [key.public, *inventory.settings.store_keys]


def for_deploy(ws: Workspace, inventory: inv.Inventory, *, required: bool) -> Path | None:
    """The key file a deploy signs every closure with, before the build reads the inventory.

    The common case costs no subprocess: the key exists and `inventory` (the deploy's, already
    loaded) lists it. A workspace made before `init` created keys gets one now, said once on
    stderr; its public half enters the inventory, so the system this deploy builds trusts it. A
    workspace where a key would reach git or the store (secrets/ not git-ignored, or no git at
    all) keeps deploying unsigned, and says why, unless the deploy needs the key (`required`:
    --fan-out, --via), which is then an error."""
    if secret_path(ws).exists():
        key = load(ws)
        assert key is not None
        if key.public not in inventory.settings.store_keys:
            _list(ws, key)
            logger.warning(
                "listed the owner store key %s in inventory.toml settings.store_keys again: this "
                "deploy makes the nodes trust it",
                key.name,
            )
        return key.secret_file
    try:
        key = ensure(ws)
    except XnodeError as exc:
        if required:
            raise
        logger.warning("closures are not signed: %s", exc.one_line().removeprefix("error: "))
        return None
    logger.warning(
        "created the owner store signing key %s (%s, never in git or the store); this deploy "
        "makes the nodes trust it (inventory.toml settings.store_keys)",
        key.name,
        key.secret_file.relative_to(ws.root),
    )
    return key.secret_file


def for_image(ws: Workspace | None, *, create: bool) -> list[str]:
    """The store keys an image trusts: the workspace's settings.store_keys (none outside a
    workspace). A workspace without an owner key gets one first when `create` (a build: the node
    it boots then accepts what the owner's deploys sign), as a deploy's does; a dry run only says
    that the build would."""
    if ws is None:
        return []
    if load(ws) is None:
        if not create:
            logger.warning(
                "the workspace has no owner store key yet: the build creates it (%s) and the "
                "image trusts it",
                secret_path(ws).relative_to(ws.root),
            )
            return list(ws.load().settings.store_keys)
        try:
            key = ensure(ws)
        except XnodeError as exc:
            logger.warning(
                "the image trusts no owner store key: %s", exc.one_line().removeprefix("error: ")
            )
        else:
            logger.warning(
                "created the owner store signing key %s (%s, never in git or the store); the "
                "image trusts it (inventory.toml settings.store_keys)",
                key.name,
                key.secret_file.relative_to(ws.root),
            )
    return list(ws.load().settings.store_keys)


def rotate(ws: Workspace) -> OwnerKey:
    """A new key signs from now on. The old public key stays trusted (listed after the new one)
    until `retire`: nodes deployed before the rotation still accept what peers built with it."""
    old = load(ws)
    if old is not None:
        old.secret_file.unlink()
    return ensure(ws)


def retire(ws: Workspace) -> list[str]:
    """Drop every trusted key but the current one; the next deploy removes them from the nodes."""
    key = ensure(ws)
    inventory = ws.load()
    dropped = [k for k in inventory.settings.store_keys if k != key.public]
    inventory.settings.store_keys = [key.public]
    ws.save(inventory)
    return dropped


def _create(ws: Workspace) -> OwnerKey:
    _check_ignored(ws)
    name = f"xnode-owner-{secrets.token_hex(4)}"
    secret = nixsign.generate_secret_key(name)
    directory = ws.secrets_dir()
    directory.mkdir(mode=0o700, exist_ok=True)
    path = secret_path(ws)
    # O_EXCL: never overwrite a key; 0600 from the first byte on.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    public = nixsign.public_of(secret) or ""
    if not re.match(STORE_PUBLIC_KEY, public):
        raise UsageError(f"nix printed an unexpected public key: {public[:60]!r}")
    return OwnerKey(name=name, secret_file=path, public=public)


def _check_ignored(ws: Workspace) -> None:
    """The workspace must be in a git work tree that ignores its secrets/: a flake build copies
    every tracked file into the store (xnodectl adds the workspace's files with intent-to-add),
    and a directory outside git entirely."""
    if not (ws.root / ".git").exists() and not _in_git(ws.root):
        raise UsageError(
            f"{ws.root} is not in a git repository: a build would copy every file of it, secrets/ "
            "included, into the Nix store",
            hint=f"git init {ws.root} (with 'secrets/' in its .gitignore, as xnodectl init does)",
        )
    probe = f"{ws.secrets_dir().name}/{SECRET_FILE}"
    result = process.run(
        ["git", "-C", str(ws.root), "check-ignore", "-q", "--no-index", probe], check=False
    )
    if result.returncode != 0:
        raise UsageError(
            f"{ws.root}/secrets/ is not git-ignored: a signing key there would reach git "
            "and the Nix store",
            hint=f"add the line 'secrets/' to {ws.root}/.gitignore",
        )


def _in_git(root: Path) -> bool:
    """Inside a git work tree (a workspace in a subdirectory of a repository is)."""
    argv = ["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"]
    inside = process.run(argv, check=False)
    return inside.returncode == 0 and inside.stdout.strip() == "true"
