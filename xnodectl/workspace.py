"""An operator workspace: flake.nix, inventory.toml, rendered apps/<node>/*.nix; tracked by git."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xnodectl import inventory as inv
from xnodectl import process
from xnodectl.errors import UsageError

if TYPE_CHECKING:
    from xnodectl.rendered import RenderedApp

DEFAULT_FLAKE = "github:xnodectl/xnodectl"
GITIGNORE = "# Secret values never enter git or the Nix store.\nsecrets/\nresult*\n"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def inventory_path(self) -> Path:
        return self.root / inv.FILENAME

    def apps_dir(self, node: str) -> Path:
        return self.root / "apps" / node

    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    def load(self) -> inv.Inventory:
        return inv.load(self.inventory_path)

    def save(self, inventory: inv.Inventory) -> None:
        inv.save(inventory, self.inventory_path)

    def edit(self) -> AbstractContextManager[inv.Inventory]:
        """Load, change and save the inventory under the workspace lock (see inventory.edit)."""
        return inv.edit(self.inventory_path)


def find(start: Path | None = None) -> Workspace:
    """The workspace containing `start` (default: $XNODECTL_WORKSPACE or the current directory)."""
    here = (start or Path(os.environ.get("XNODECTL_WORKSPACE", "."))).resolve()
    for candidate in (here, *here.parents):
        if (candidate / inv.FILENAME).is_file():
            return Workspace(candidate)
    raise UsageError(
        f"no {inv.FILENAME} in {here} or above",
        hint="create a workspace with: xnodectl init DIR, or pass --workspace DIR",
    )


def default_flake() -> str:
    """$XNODECTL_FLAKE, else this checkout's flake when running from a source tree (works
    offline, pinned by the checkout's flake.lock), else upstream.

    A git checkout is referenced as `git+file:`: Nix copies only the files git tracks (about
    1.5 MB), not `.venv` or `.git` (a `path:` input copied the whole directory, 226 MB, on every
    change); an unchanged checkout is the same store path and adds nothing."""
    if env := os.environ.get("XNODECTL_FLAKE"):
        return env
    return checkout_flake(Path(__file__).resolve().parent.parent) or DEFAULT_FLAKE


def checkout_flake(checkout: Path) -> str | None:
    """The flake reference of an xnodectl source tree, None if `checkout` is not one."""
    if not ((checkout / "flake.nix").is_file() and (checkout / "templates").is_dir()):
        return None
    if (checkout / ".git").exists():  # a directory, or a file in a git worktree
        return f"git+file://{checkout}"
    return f"path:{checkout}"


def render_flake(xnodectl_flake: str) -> str:
    from xnodectl.render import render_nix

    source = (Path(__file__).parent / "data" / "workspace" / "flake.nix.j2").read_text()
    return render_nix(source, {"xnodectl_flake": xnodectl_flake})


def write_nixops4_root(ws: Workspace) -> Path:
    """nixops4/flake.nix: the fleet as a nixops4 root, over this workspace's git tree."""
    from xnodectl.render import render_nix

    source = (Path(__file__).parent / "data" / "workspace" / "nixops4.flake.nix.j2").read_text()
    directory = ws.root / "nixops4"
    directory.mkdir(exist_ok=True)
    path = directory / "flake.nix"
    path.write_text(render_nix(source, {"workspace_url": f"git+file://{ws.root}"}))
    git_track(ws)
    return directory


def write_apps(
    ws: Workspace, node: str, apps: Sequence[RenderedApp], *, track: bool = True
) -> list[Path]:
    """Write a node's rendered modules, removing ones no longer in the inventory. `track=False`:
    the caller runs `git_track` once after writing every node's (one git call, not one per node)."""
    directory = ws.apps_dir(node)
    directory.mkdir(parents=True, exist_ok=True)
    wanted = {app.filename for app in apps}
    for old in directory.glob("*.nix"):
        if old.name not in wanted:
            old.unlink()
    written = []
    for app in apps:
        path = directory / app.filename
        if not path.is_file() or path.read_text() != app.source:
            path.write_text(app.source)
        written.append(path)
    if track:
        git_track(ws)
    return written


def git_track(ws: Workspace) -> None:
    """Flakes only see files git knows about: keep the workspace's files tracked (intent-to-add)."""
    if (ws.root / ".git").exists():
        process.run(
            ["git", "-C", str(ws.root), "add", "--intent-to-add", "--all", "--", "."], check=False
        )


def untrack(ws: Workspace, paths: Sequence[str]) -> None:
    """Take removed files out of git's index again (they were added with intent-to-add)."""
    if paths and (ws.root / ".git").exists():
        process.run(
            [
                "git",
                "-C",
                str(ws.root),
                "rm",
                "--cached",
                "--quiet",
                "--ignore-unmatch",
                "--",
                *paths,
            ],
            check=False,
        )


def init(
    root: Path,
    *,
    xnodectl_flake: str,
    node: inv.Node | None,
    node_name: str,
    apps: Sequence[RenderedApp],
) -> Workspace:
    """Create a workspace. Refuses to overwrite an existing inventory."""
    inv.check_node_name(node_name)
    ws = Workspace(root.resolve())
    if ws.inventory_path.exists():
        raise UsageError(
            f"{ws.inventory_path} already exists",
            hint="use a new directory, or edit the existing workspace",
        )
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a directory", hint="choose another path")
    ws.root.mkdir(parents=True, exist_ok=True)
    (ws.root / "hosts").mkdir(exist_ok=True)
    (ws.root / "flake.nix").write_text(render_flake(xnodectl_flake))
    (ws.root / ".gitignore").write_text(GITIGNORE)
    secrets = ws.secrets_dir()
    secrets.mkdir(mode=0o700, exist_ok=True)
    inventory = inv.Inventory(settings=inv.Settings(xnodectl_flake=xnodectl_flake))
    if node is not None:
        node.apps = [
            inv.AppEntry(
                template=a.template,
                name=None if a.instance == a.template else a.instance,
                params=dict(a.given),
            )
            for a in apps
        ]
        inventory.nodes[node_name] = node
    ws.save(inventory)
    if not (ws.root / ".git").exists():
        process.run(["git", "init", "-q", str(ws.root)], check=False)
    if node is not None:
        write_apps(ws, node_name, apps)
    git_track(ws)
    return ws
