"""The workspace owner's Nix store signing key: what makes peers and caches safe as sources.

The secret half lives in the workspace's secrets/ (0600, git-ignored, so never in git nor in the
Nix store a flake build copies the workspace into) in Nix's own format (`nix key
generate-secret`). Its public half goes into inventory.toml `settings.store_keys`, which the
workspace flake hands to mkXnode: XnodeOS nodes put it in nix.settings.trusted-public-keys
(modules/trust.nix), so a deploy rotates it. The engine signs every closure it copies with it.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from xnodectl import nixsign, process
from xnodectl.errors import UsageError
from xnodectl.inventory import STORE_PUBLIC_KEY
from xnodectl.workspace import Workspace

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


def signing_file(ws: Workspace) -> Path | None:
    """The secret key file when the workspace has one (no subprocess: every deploy asks)."""
    path = secret_path(ws)
    if not path.exists():
        return None
    if path.stat().st_mode & 0o077:
        load(ws)  # raises with the hint
    return path


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
    if not _SECRET.match(secret):
        raise UsageError(
            f"{path} is not a Nix secret signing key",
            hint=f"move it away and create a new key: xnodectl store-key rotate ({path})",
        )
    public = nixsign.public_key(secret)
    return OwnerKey(name=public.partition(":")[0], secret_file=path, public=public)


def ensure(ws: Workspace) -> OwnerKey:
    """The workspace's key, created on first use; its public half is listed in the inventory."""
    key = load(ws) or _create(ws)
    inventory = ws.load()
    if key.public not in inventory.settings.store_keys:
        inventory.settings.store_keys = [key.public, *inventory.settings.store_keys]
        ws.save(inventory)
    return key


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
    public = nixsign.public_key(secret)
    if not re.match(STORE_PUBLIC_KEY, public):
        raise UsageError(f"nix printed an unexpected public key: {public[:60]!r}")
    return OwnerKey(name=name, secret_file=path, public=public)


def _check_ignored(ws: Workspace) -> None:
    """A git workspace must ignore secrets/: flakes copy every tracked file into the store."""
    if not (ws.root / ".git").exists():
        return
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
