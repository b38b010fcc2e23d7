"""XnodeOS images: render a node's identity into a small flake and build its image with nix.

The generated flake takes this xnodectl flake as an input and calls xnodeos/mk-image.nix. Values
reach its Nix source only through the Nix encoder (render.render_nix); the flake lives in a
temporary, git-initialised directory that is removed whatever happens.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xnodectl import __version__, nix, process
from xnodectl.errors import CommandFailed, ExternalError, UsageError
from xnodectl.image_format import ImageFormat
from xnodectl.inventory import STORE_PUBLIC_KEY
from xnodectl.params import check_address
from xnodectl.render import render_nix
from xnodectl.sshkeys import PublicKey

_DATA = Path(__file__).parent / "data" / "image"
# networking.hostName: one RFC 1123 label (NixOS rejects dots there).
_HOSTNAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_DISK = re.compile(r"^/dev/disk/by-(id|path)/[A-Za-z0-9_.:+@-]+$")
SYSTEMS = ("x86_64-linux", "aarch64-linux")
DRY_RUN_DIR = Path(tempfile.gettempdir()) / "xnodectl-image-XXXXXXXX"


@dataclass(frozen=True)
class ImageRequest:
    owner: str  # EIP-55 checksummed
    key: PublicKey | None  # None: reachable only through the claim flow (modules/claim.nix)
    format: ImageFormat
    hostname: str
    system: str
    disk: str | None
    wipe: bool
    xnodectl_flake: str
    store_keys: tuple[str, ...] = ()  # owner's Nix public keys (modules/trust.nix)


@dataclass(frozen=True)
class Plan:
    request: ImageRequest
    files: Mapping[str, str]  # file name -> content of the generated flake directory

    def argv(self, directory: Path) -> list[str]:
        """The `nix build` command of the image (build logs streamed, the result as JSON)."""
        return nix.build_argv([installable(directory, self.request.system)], print_logs=True)


@dataclass(frozen=True)
class Image:
    path: Path
    store_path: str
    size: int
    sha256: str
    format: ImageFormat
    reproducible: bool | None  # None: not checked


def check_hostname(name: str) -> str:
    if not _HOSTNAME.match(name):
        raise UsageError(
            f"hostname '{name}' is not allowed",
            hint="use 1-63 lowercase letters, digits and '-', not starting or ending with '-'",
        )
    return name


def check_disk(disk: str | None, wipe: bool) -> str | None:
    if wipe and disk is None:
        raise UsageError(
            "--wipe needs --disk", hint="name the exact disk to erase: --disk /dev/disk/by-id/..."
        )
    if disk is not None and not _DISK.match(disk):
        raise UsageError(
            f"disk '{disk}' is not a stable disk path",
            hint="use a /dev/disk/by-id/... path (ls -l /dev/disk/by-id on the "
            "machine); /dev/sdX names change between boots",
        )
    return disk


def request(
    *,
    owner: str,
    key: PublicKey | None,
    fmt: ImageFormat,
    hostname: str | None,
    system: str,
    disk: str | None,
    wipe: bool,
    xnodectl_flake: str,
    store_keys: Sequence[str] = (),
) -> ImageRequest:
    """Validate everything the user gave; raises UsageError before anything is created."""
    if (disk is not None or wipe) and fmt is not ImageFormat.ISO:
        raise UsageError(
            "--disk and --wipe apply to the installer ISO only",
            hint="a qcow2/raw image is already the disk; drop --disk/--wipe",
        )
    address = check_address(owner, what="owner address")
    name = check_hostname(hostname or f"xnode-{address[2:10].lower()}")
    if system not in SYSTEMS:
        raise UsageError(f"system '{system}' is not supported", hint="use " + " or ".join(SYSTEMS))
    return ImageRequest(
        owner=address,
        key=key,
        format=fmt,
        hostname=name,
        system=system,
        disk=check_disk(disk, wipe),
        wipe=wipe,
        xnodectl_flake=xnodectl_flake,
        store_keys=tuple(check_store_key(k) for k in store_keys),
    )


def check_store_key(key: str) -> str:
    if not re.match(STORE_PUBLIC_KEY, key):
        raise UsageError(
            f"'{key[:40]}' is not a Nix public store key",
            hint="pass the public half, name:base64 (see: xnodectl store-key show)",
        )
    return key


def plan(req: ImageRequest) -> Plan:
    """The generated flake's files (flake.nix + identity.nix)."""
    context = {
        "xnodectl_flake": req.xnodectl_flake,
        "system": req.system,
        "hostname": req.hostname,
        "format": req.format.value,
        "disk": req.disk,
        "wipe": req.wipe,
        "owner": req.owner,
        "ssh_keys": [req.key.line()] if req.key is not None else [],
        "store_keys": list(req.store_keys),
        "version": __version__,
    }
    files = {
        "flake.nix": render_nix((_DATA / "flake.nix.j2").read_text(), context),
        "identity.nix": render_nix((_DATA / "identity.nix.j2").read_text(), context),
    }
    return Plan(req, files)


def installable(directory: Path, system: str) -> str:
    return f"{directory}#packages.{system}.default"


async def _nix_build(ref: str, log: Callable[[str], None]) -> str:
    """`nix build` one installable; its `out` path."""
    try:
        (out,) = await nix.build([ref], print_logs=True, on_log=log)
    except CommandFailed as failed:
        # The temporary flake is gone by the time the user reads this: point at --dry-run.
        failed.hint = (
            "the build log is above; `xnodectl image build ... --dry-run` prints the "
            "flake and the command to reproduce it"
        )
        raise
    return out


@contextmanager
def flake_dir(p: Plan) -> Iterator[Path]:
    """Write the flake into a fresh temporary git repository; removed on exit, success or not."""
    directory = Path(tempfile.mkdtemp(prefix="xnodectl-image-"))
    try:
        for name, text in p.files.items():
            (directory / name).write_text(text)
        # Flakes in a git repository see only files git knows about.
        process.run(["git", "init", "-q", str(directory)])
        process.run(["git", "-C", str(directory), "add", "--", *p.files])
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def find_image(store_path: str, fmt: ImageFormat) -> Path:
    """The image file inside a build output (e.g. iso/<name>.iso, <name>.qcow2)."""
    root = Path(store_path)
    if root.is_file():
        return root
    found = sorted(
        (f for f in root.rglob("*") if f.is_file() and f.name.endswith(fmt.suffixes)),
        key=lambda f: f.stat().st_size,
        reverse=True,
    )
    if not found:
        raise ExternalError(
            f"the build output {store_path} holds no {fmt.value} image",
            hint="the image output of xnodeos/mk-image.nix changed; report it",
        )
    return found[0]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_output(out: Path | None, fmt: ImageFormat, hostname: str) -> Path | None:
    """Where -o puts the image; refuses to overwrite (checked before building)."""
    if out is None:
        return None
    target = out / f"xnodeos-{hostname}.{fmt.value}" if out.is_dir() else out
    if target.exists():
        raise UsageError(f"{target} already exists", hint="remove it or choose another -o path")
    if not target.parent.is_dir():
        raise UsageError(f"directory {target.parent} does not exist", hint="create it first")
    return target


def build(
    p: Plan,
    *,
    out: Path | None = None,
    check: bool = False,
    log: Callable[[str], None] = lambda _line: None,
) -> Image:
    """Build the image (twice with check=True) and return where it is with its size and hash."""
    target = check_output(out, p.request.format, p.request.hostname)
    with flake_dir(p) as directory:
        ref = installable(directory, p.request.system)
        log(
            f"building the {p.request.format.value} image of {p.request.hostname} "
            f"(owner {p.request.owner})"
        )
        store_path = asyncio.run(_nix_build(ref, log))
        reproducible = None
        if check:
            log("building it a second time to compare (--check)")
            reproducible = asyncio.run(nix.rebuild_identical(ref, on_log=log))
    image = find_image(store_path, p.request.format)
    path = image
    if target is not None:
        shutil.copyfile(image, target)
        target.chmod(0o644)
        path = target
    return Image(
        path=path,
        store_path=store_path,
        size=image.stat().st_size,
        sha256=sha256_of(image),
        format=p.request.format,
        reproducible=reproducible,
    )
