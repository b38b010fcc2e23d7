"""Secret parameter values: found on the operator's machine, uploaded root-only before activation.

Sources, in order: the workspace's `secrets/<app>/<param>` file (git-ignored), then the environment
variable `XNODE_SECRET_<APP>_<PARAM>` (upper case, '-' -> '_'). Values never enter the Nix store,
git, argv or logs: they travel on ssh's stdin.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from xnodectl.errors import ExternalError, UsageError
from xnodectl.params import SECRET_ROOT
from xnodectl.remote import Ssh

if TYPE_CHECKING:
    from xnodectl.rendered import RenderedApp

# Owners may not exist before activation creates them: then the file stays root-owned 0400 and the
# report says so (the app's module may chown it); nothing readable by others is ever written.
_UPLOAD = (
    'umask 022; d=$(dirname "$1"); mkdir -p "$d" && chmod 0711 "$(dirname "$d")" "$d" && '
    'umask 077 && cat > "$1.tmp" && chmod 0400 "$1.tmp" && '
    '{ chown "$2:$3" "$1.tmp" 2>/dev/null || echo owner-missing; } && mv -f "$1.tmp" "$1"'
)


@dataclass(frozen=True)
class SecretValue:
    """One secret parameter of one app, read once from the operator's machine. `value` is None when
    it was found nowhere (the plan shows it; a deploy refuses before any change)."""

    app: str
    param: str
    path: str  # on the node
    owner: str
    group: str
    source: str | None  # where it was found (a path or an env var name), never the value
    looked_in: tuple[str, ...]
    value: bytes | None = field(default=None, repr=False)

    @property
    def present(self) -> bool:
        return self.value is not None


def env_name(app: str, param: str) -> str:
    return "XNODE_SECRET_" + re.sub(r"[^A-Z0-9]", "_", f"{app}_{param}".upper())


def _find(secrets_dir: Path, app: str, param: str) -> tuple[str, bytes] | None:
    file = secrets_dir / app / param
    if file.is_file():
        return str(file), file.read_bytes()
    var = env_name(app, param)
    if var in os.environ:
        return var, os.environ[var].encode()
    return None


def read(secrets_dir: Path, apps: Sequence[RenderedApp]) -> tuple[SecretValue, ...]:
    """Every secret of a node's apps, each looked up once (file, then environment)."""
    out = []
    for app in apps:
        for s in app.secrets:
            if not s.path.startswith(SECRET_ROOT + "/"):
                raise UsageError(f"secret path {s.path} is outside {SECRET_ROOT}")
            found = _find(secrets_dir, app.instance, s.param)
            out.append(
                SecretValue(
                    app.instance,
                    s.param,
                    s.path,
                    s.owner,
                    s.group,
                    found[0] if found else None,
                    (str(secrets_dir / app.instance / s.param), env_name(app.instance, s.param)),
                    found[1] if found else None,
                )
            )
    return tuple(out)


def require(node: str, values: Sequence[SecretValue]) -> None:
    """A deploy needs every secret: the first missing one is a usage error, before any change."""
    for v in values:
        if not v.present:
            raise UsageError(
                f"node '{node}': app '{v.app}' needs secret '{v.param}', which is missing",
                hint=f"write it to {v.looked_in[0]} (mode 0600) or set {v.looked_in[1]}",
            )


async def upload(ssh: Ssh, values: Sequence[SecretValue], timeout: float) -> list[str]:
    """Write each secret atomically, 0400; returns the secrets whose owner does not exist yet."""
    pending = []
    for v in values:
        result = await ssh.run(
            ["sh", "-c", _UPLOAD, "sh", v.path, v.owner, v.group],
            timeout=timeout,
            input=v.value or b"",
            secret=True,
        )
        if not result.ok:
            raise ExternalError(
                f"node '{ssh.target.node}': uploading secret {v.app}/{v.param} failed: "
                f"{result.stderr.strip()[-200:]}"
            )
        if "owner-missing" in result.stdout:
            pending.append(f"{v.app}/{v.param}")
    return pending


_SECRET_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def store(secrets_dir: Path, app: str, param: str, value: bytes) -> Path:
    """Write a secret value where `collect` finds it: secrets/<app>/<param>, 0600 in a 0700 dir,
    atomically (a reader never sees half a value). The value is never logged or returned."""
    for name in (app, param):
        if not _SECRET_NAME.match(name):
            raise UsageError(f"'{name}' is not an app or parameter name", hint="see the template")
    directory = secrets_dir / app
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    secrets_dir.chmod(0o700)
    directory.chmod(0o700)
    path = directory / param
    tmp = directory / f".{param}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(value)
    tmp.replace(path)
    return path
