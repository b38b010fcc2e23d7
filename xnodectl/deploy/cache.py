"""`--via STORE_URL`: push the closure once to a Nix binary cache; nodes substitute from it.

Any store URL `nix copy --to` accepts works (s3://, http(s):// with a writable backend, ssh-ng://,
file://). The nodes substitute with `nix-store --realise`, i.e. from the substituters and with the
trusted keys of THEIR configuration (xnode.trust.substituters / storeKeys, modules/trust.nix),
never from flags the engine passes: a cache the node does not list, or a path not signed by a
key it trusts, is refused by the node itself, and the engine falls back to the operator's copy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from xnodectl import nix, nixsign, process
from xnodectl.errors import CommandFailed, UsageError, XnodeError
from xnodectl.remote import SSH_ERROR, Ssh

_SCHEMES = ("file://", "ssh://", "ssh-ng://", "s3://", "http://", "https://", "local")
_REFUSED = re.compile(r"lacks a (?:valid )?signature")


class CacheFailed(XnodeError):
    """The cache could not be filled or a node could not substitute from it."""


def check_url(url: str) -> str:
    if not url.startswith(_SCHEMES) or any(c.isspace() for c in url):
        raise UsageError(
            f"--via '{url}' is not a Nix store URL",
            hint="e.g. file:///srv/cache?compression=zstd, s3://bucket?region=eu-west-1 or "
            "ssh-ng://cache.example",
        )
    return url


async def push(
    url: str,
    paths: Sequence[str],
    *,
    on_path: Callable[[str], None],
    timeout: float | None = None,
) -> None:
    """The operator's one upload: `nix copy --to URL` (signatures travel with the paths)."""
    try:
        await nix.copy(url, paths, sshopts="", on_path=on_path, timeout=timeout)
    except CommandFailed as exc:
        raise CacheFailed(f"could not push to {url}: {exc.message}") from exc


async def substitute(
    ssh: Ssh, system: str, *, on_path: Callable[[str], None], timeout: float
) -> None:
    """The node realises `system` from its own substituters (the cache among them)."""
    progress = nix.CopyProgress(on_path)
    argv = ssh.argv(nixsign.realise_argv([system]))
    try:
        result = await process.arun(
            argv, check=False, timeout=timeout, on_stderr_line=progress.feed
        )
    except CommandFailed as exc:
        raise CacheFailed(f"substituting did not finish in {timeout:g} s") from exc
    if result.returncode == SSH_ERROR:
        raise ssh.classify(result.stderr)
    if result.returncode != 0:
        errors = nix.plain_errors(result.stderr)
        last = (errors.strip().splitlines() or ["no error text"])[-1]
        if _REFUSED.search(errors):
            last = f"a path is not signed by a key the node trusts ({last})"
        raise CacheFailed(f"the node could not substitute from its caches: {last}")
