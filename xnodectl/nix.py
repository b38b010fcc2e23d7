"""One function per Nix operation. Flags live here; typed results; `--json`, never scraping.

Runs with Nix >= 2.8 (Debian's; no `--print-out-paths`: builds use `nix build --no-link --json`),
which is enough for flakes that do not evaluate nixpkgs (the tests' fixtures); anything that
evaluates the pinned nixpkgs needs MINIMUM_NIX, checked up front by `require_version`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from xnodectl import process
from xnodectl.errors import CommandFailed, ExternalError

# Flakes and the new CLI are experimental in every Nix we support; enable them per call so the
# operator's nix.conf need not.
BASE = ("nix", "--extra-experimental-features", "nix-command flakes")
# Store path names: <hash>-<pname>-<version>; the version starts at the first '-<digit>'.
_STORE_NAME = re.compile(r"^/nix/store/[0-9a-z]{32}-(?P<name>.+)$")
_VERSION_SPLIT = re.compile(r"-(?=\d)")
_NOT_DETERMINISTIC = "may not be deterministic"  # nix build --rebuild, outputs differ
_STOP = re.compile(r'@nix \{"action":"stop","id":(\d+)\}$')


class JsonModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _BuildResult(JsonModel):
    drvPath: str  # noqa: N815 - field name from nix's JSON
    outputs: dict[str, str]


class _PathInfo(JsonModel):
    path: str
    narSize: int = 0  # noqa: N815 - field name from nix's JSON
    references: list[str] = []
    signatures: list[str] = []  # absent when the path carries none
    valid: bool = True


@dataclass(frozen=True)
class PathInfo:
    path: str
    nar_size: int
    references: tuple[str, ...]
    signatures: tuple[str, ...] = ()  # "keyname:base64", as the store holds them


@dataclass(frozen=True)
class Closure:
    """A store path and everything it references, with NAR sizes."""

    root: str
    paths: Mapping[str, PathInfo]

    @property
    def nar_size(self) -> int:
        return sum(p.nar_size for p in self.paths.values())


def toplevel_attr(flake: Path, node: str) -> str:
    return f"{flake}#nixosConfigurations.{node}.config.system.build.toplevel"


def parse_model(model: type[BaseModel], text: str, argv: Sequence[str]) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExternalError(
            f"nix printed no JSON: {text[:200]!r}", hint=f"run it by hand: {' '.join(argv)}"
        ) from exc
    try:
        if isinstance(data, list):
            return [model.model_validate(item) for item in data]
        if isinstance(data, dict):
            # `nix path-info --json` is a list in 2.8 and an object keyed by path in >= 2.19.
            return [
                model.model_validate({"path": k, **(v or {"valid": False})})
                for k, v in data.items()
            ]
    except ValidationError as exc:
        raise ExternalError(f"unexpected JSON from nix: {exc}") from exc
    raise ExternalError(f"unexpected JSON from nix: {text[:200]!r}")


def build_argv(
    installables: Sequence[str],
    *,
    fail_fast: bool = False,
    print_logs: bool = False,
    rebuild: bool = False,
) -> list[str]:
    """fail_fast: one download attempt, so an offline plan fails in seconds instead of retrying;
    print_logs: build logs line by line on stderr; rebuild: build again and compare bit by bit."""
    quick = ["--option", "download-attempts", "1", "--option", "connect-timeout", "3"]
    return [
        *BASE,
        "build",
        "--no-link",
        "--json",
        *(["--print-build-logs"] if print_logs else []),
        *(["--rebuild"] if rebuild else []),
        *(quick if fail_fast else []),
        *installables,
    ]


def _errors_only(stderr: str) -> str:
    """Nix's `error:` lines (its retries' warnings are noise in a one-line report)."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    return "\n".join(errors) or stderr


async def build(
    installables: Sequence[str],
    *,
    timeout: float | None = None,
    fail_fast: bool = False,
    on_log: Callable[[str], None] | None = None,
    print_logs: bool = False,
) -> list[str]:
    """Build installables in ONE nix call (Nix dedupes identical closures); their `out` paths."""
    for installable in installables:
        require_version(installable)
    argv = build_argv(installables, fail_fast=fail_fast, print_logs=print_logs)
    try:
        result = await process.arun(argv, timeout=timeout, on_stderr_line=on_log)
    except CommandFailed as exc:
        raise CommandFailed(exc.argv, exc.returncode, _errors_only(exc.stderr)) from None
    built: list[_BuildResult] = parse_model(_BuildResult, result.stdout, argv)
    return [b.outputs["out"] for b in built]


async def rebuild_identical(
    installable: str, *, on_log: Callable[[str], None] | None = None
) -> bool:
    """Build an already built installable again (`--rebuild`): whether nix found the new output
    bit-identical to the stored one."""
    argv = build_argv([installable], print_logs=True, rebuild=True)
    result = await process.arun(argv, check=False, on_stderr_line=on_log)
    if result.ok:
        return True
    if _NOT_DETERMINISTIC in result.stderr:
        return False
    raise CommandFailed(argv, result.returncode, _errors_only(result.stderr))


def path_info_argv(paths: Sequence[str], *, store: str | None = None) -> list[str]:
    argv = [*BASE, "path-info", "--json", "--recursive"]
    if store is not None:
        argv += ["--store", store]
    return [*argv, *paths]


def _closure(root: str, infos: Iterable[_PathInfo]) -> Closure:
    found = {
        i.path: PathInfo(i.path, i.narSize, tuple(i.references), tuple(i.signatures))
        for i in infos
        if i.valid
    }
    return Closure(root=root, paths=found)


async def closure(
    path: str,
    *,
    store: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> Closure:
    """`nix path-info --json --recursive`: the closure with NAR sizes (bytes a copy moves)."""
    argv = path_info_argv([path], store=store)
    result = await process.arun(argv, env=env, timeout=timeout)
    return _closure(path, parse_model(_PathInfo, result.stdout, argv))


def copy_argv(uri: str, paths: Sequence[str], *, substitute: bool) -> list[str]:
    argv = [*BASE, "copy", "--to", uri, "--log-format", "internal-json", "-v"]
    if substitute:
        argv.append("--substitute-on-destination")
    return [*argv, *paths]


@dataclass
class CopyProgress:
    """Parses `--log-format internal-json` lines: a start (type 100) and a stop per copied path."""

    on_path: Callable[[str], None]
    _active: dict[int, str] = field(default_factory=dict)

    def feed(self, line: str) -> None:
        if not line.startswith("@nix "):
            return
        stop = _STOP.match(line)  # half of the lines; no JSON decoding needed for them
        if stop is not None:
            return self._stopped(int(stop.group(1)))
        try:
            event = json.loads(line[5:])
        except json.JSONDecodeError:
            return None
        action = event.get("action")
        if action == "start" and event.get("type") == 100:  # actCopyPath
            fields = event.get("fields") or []
            if fields and isinstance(fields[0], str):
                self._active[int(event["id"])] = fields[0]
        elif action == "stop":
            self._stopped(int(event.get("id", -1)))
        return None

    def _stopped(self, activity: int) -> None:
        path = self._active.pop(activity, None)
        if path is not None:
            self.on_path(path)


async def copy(
    uri: str,
    paths: Sequence[str],
    *,
    sshopts: str,
    substitute: bool = False,
    on_path: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> None:
    """`nix copy --to ssh://...`, paths the node already has are skipped by nix itself."""
    argv = copy_argv(uri, paths, substitute=substitute)
    progress = CopyProgress(on_path or (lambda _p: None))
    try:
        await process.arun(
            argv, env={"NIX_SSHOPTS": sshopts}, timeout=timeout, on_stderr_line=progress.feed
        )
    except CommandFailed as exc:
        # internal-json wraps the error text in a msg event; show that, not the JSON.
        raise CommandFailed(exc.argv, exc.returncode, plain_errors(exc.stderr)) from None


def plain_errors(stderr: str) -> str:
    lines = []
    for line in stderr.splitlines():
        if line.startswith("@nix "):
            try:
                event = json.loads(line[5:])
            except json.JSONDecodeError:
                continue
            if event.get("action") == "msg" and event.get("level", 9) <= 1:
                lines.append(re.sub(r"\x1b\[[0-9;]*m", "", str(event.get("msg", ""))))
        elif line.strip():
            lines.append(line)
    return "\n".join(" ".join(line.split()) for line in lines)


# ---- closure diffs (pure: computed from two path lists) ----


@dataclass(frozen=True)
class PackageChange:
    name: str
    before: str | None  # version, "" when unversioned; None = added
    after: str | None  # None = removed


@dataclass(frozen=True)
class ClosureDiff:
    added: tuple[PackageChange, ...]
    removed: tuple[PackageChange, ...]
    upgraded: tuple[PackageChange, ...]
    paths_to_copy: int
    bytes_to_copy: int


def split_name(path: str) -> tuple[str, str]:
    """/nix/store/<hash>-openssl-3.0.13 -> ('openssl', '3.0.13'); unversioned -> (name, '')."""
    match = _STORE_NAME.match(path)
    name = match.group("name") if match else Path(path).name
    parts = _VERSION_SPLIT.split(name, maxsplit=1)
    return (parts[0], parts[1]) if len(parts) == 2 else (name, "")


def _versions(paths: Iterable[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in paths:
        name, version = split_name(path)
        out.setdefault(name, set()).add(version)
    return out


def diff_closures(before: Iterable[str], after: Closure, present: Iterable[str]) -> ClosureDiff:
    """Package-level diff (like `nix store diff-closures`) and what a copy would move.

    `present` = paths the node already has; the old closure need not exist locally.
    """
    old, new = _versions(before), _versions(after.paths)
    added = [PackageChange(n, None, ",".join(sorted(v))) for n, v in new.items() if n not in old]
    removed = [PackageChange(n, ",".join(sorted(v)), None) for n, v in old.items() if n not in new]
    upgraded = [
        PackageChange(n, ",".join(sorted(old[n])), ",".join(sorted(v)))
        for n, v in new.items()
        if n in old and old[n] != v
    ]
    have = set(present)
    missing = [p for p in after.paths.values() if p.path not in have]
    return ClosureDiff(
        added=tuple(sorted(added, key=lambda c: c.name)),
        removed=tuple(sorted(removed, key=lambda c: c.name)),
        upgraded=tuple(sorted(upgraded, key=lambda c: c.name)),
        paths_to_copy=len(missing),
        bytes_to_copy=sum(p.nar_size for p in missing),
    )


def eval_out_path_argv(installable: str) -> list[str]:
    return [*BASE, "eval", "--raw", f"{installable}.outPath"]


async def eval_out_path(installable: str, *, timeout: float | None = None) -> str:
    """The store path an installable would build to, without building it (for drift checks)."""
    require_version(installable)
    result = await process.arun(eval_out_path_argv(installable), timeout=timeout)
    return result.stdout.strip()


# ---- the Nix version an operation needs ---------------------------------------------------------

# What the pinned nixpkgs states it needs (its lib/minver.nix; facts/nixpkgs.json records where this
# came from and tests/test_facts.py holds this constant to it). Older nix fails deep inside nixpkgs.
MINIMUM_NIX = "2.18.0"
_NIX_VERSION = re.compile(r"\(Nix\) (\d+(?:\.\d+)+)")
INSTALL_HINT = (
    "install a current Nix (sh <(curl -L https://nixos.org/nix/install) --daemon, or your "
    "distribution's nix >= {minimum}) and enable flakes: add 'experimental-features = nix-command "
    "flakes' to /etc/nix/nix.conf; see docs/operator.md"
)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


@functools.lru_cache(maxsize=1)
def installed_version() -> str:
    """`nix --version` of the nix on PATH, e.g. "2.18.1" (a missing nix is ToolMissing)."""
    result = process.run(["nix", "--version"])
    match = _NIX_VERSION.search(result.stdout)
    if match is None:
        raise ExternalError(f"cannot read the nix version from {result.stdout.strip()!r}")
    return match.group(1)


_NIXPKGS_INPUT = re.compile(r"\binputs\.nixpkgs\.(url|follows)\s*=")
_XNODECTL_INPUT = re.compile(r'\binputs\.xnodectl\.url\s*=\s*"([^"]+)"')


def evaluates_nixpkgs(installable: str) -> bool:
    """Whether a local flake installable evaluates nixpkgs: its flake.nix has a nixpkgs input
    (every workspace), or takes xnodectl from a flake that has one or from elsewhere (image
    flakes). The tests' stand-in fixture flakes have neither. Non-local refs: nix will tell."""
    flake = _local_flake(installable)
    if flake is None:
        return False
    text = flake.read_text()
    if _NIXPKGS_INPUT.search(text):
        return True
    if (match := _XNODECTL_INPUT.search(text)) is None:
        return False
    upstream = _local_flake(match.group(1))
    return upstream is None or _NIXPKGS_INPUT.search(upstream.read_text()) is not None


def _local_flake(ref: str) -> Path | None:
    ref = ref.split("#", 1)[0].split("?", 1)[0]
    for prefix in ("path:", "git+file://", "file://"):
        ref = ref.removeprefix(prefix)
    if not ref.startswith("/") and ":" in ref:
        return None  # github:..., https://...: not on this machine
    flake = Path(ref) / "flake.nix"
    return flake if flake.is_file() else None


def require_version(installable: str, minimum: str = MINIMUM_NIX) -> None:
    """Refuse in one line, before any evaluation, a nix too old for the pinned nixpkgs."""
    if not evaluates_nixpkgs(installable):
        return
    found = installed_version()
    if _version_tuple(found) < _version_tuple(minimum):
        raise ExternalError(
            f"nix {found} is too old to evaluate the pinned nixpkgs (it needs nix >= {minimum})",
            hint=INSTALL_HINT.format(minimum=minimum),
        )
