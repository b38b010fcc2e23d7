"""xnode-verify-manifest: accept a deploy only if its manifest is signed by the node's owner.

Exit 0 = accept (the nonce is recorded, a line is appended to the audit log); exit 1 = refuse with
one line on stderr, which `xnode-activate begin` reports as the refusal reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OWNER_FILE = Path("/etc/xnode/owner-address")
STATE_DIR = Path("/var/lib/xnode/deploy/manifests")
MAX_FILE = 64 * 1024
_NONCE = re.compile(r"[0-9a-f]{32,64}")  # used with fullmatch: "$" would allow a "\n"


class Refused(Exception):
    pass


@dataclass(frozen=True)
class Expect:
    owner: str  # lowercase 0x address
    node: str
    system: str
    previous: str | None
    max_age: int
    skew: int
    state_dir: Path


def _load(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise Refused(f"cannot read manifest {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE:
        raise Refused("manifest file is too large")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Refused("manifest file is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("manifest"), dict):
        raise Refused("manifest file has no 'manifest' object")
    if not data.get("signature"):
        raise Refused("unsigned manifest: signed deploys are required on this node")
    return data


def _check_fields(manifest: dict[str, Any]) -> None:
    from xnodectl.verify.manifest import FIELDS

    if set(manifest) != set(FIELDS):
        raise Refused(f"manifest fields must be exactly {', '.join(FIELDS)}")
    if not isinstance(manifest["node"], str) or not isinstance(manifest["system"], str):
        raise Refused("manifest node and system must be strings")
    if manifest["previous"] is not None and not isinstance(manifest["previous"], str):
        raise Refused("manifest previous must be a string or null")
    if not isinstance(manifest["time"], int) or isinstance(manifest["time"], bool):
        raise Refused("manifest time must be an integer (unix seconds)")
    if not isinstance(manifest["nonce"], str) or not _NONCE.fullmatch(manifest["nonce"]):
        raise Refused("manifest nonce must be 32-64 lowercase hex digits")


def _check_signer(data: dict[str, Any], owner: str) -> str:
    from xnodectl.verify.eip191 import recover_address
    from xnodectl.verify.manifest import canonical_text

    signature = data["signature"]
    if not isinstance(signature, str):
        raise Refused("manifest signature must be a hex string")
    try:
        signer = recover_address(canonical_text(data["manifest"]), signature).lower()
    except ValueError as exc:
        raise Refused(f"bad manifest signature: {exc}") from None
    claimed = str(data.get("address") or "").lower()
    if claimed and claimed != signer:
        raise Refused("manifest signature does not match its address (tampered manifest)")
    if signer != owner:
        raise Refused(f"manifest signed by {signer}, not by the owner {owner}")
    return signer


def _check_target(manifest: dict[str, Any], expect: Expect, now: float) -> None:
    if manifest["node"] != expect.node:
        raise Refused(f"manifest is for node {manifest['node']!r}, not {expect.node!r}")
    if manifest["system"].rstrip("/") != expect.system.rstrip("/"):
        raise Refused(f"manifest is for system {manifest['system']}, not {expect.system}")
    if (manifest["previous"] or None) != expect.previous:
        raise Refused(
            f"manifest expects the node to run {manifest['previous']}, but it runs "
            f"{expect.previous} (replayed onto a changed node?)"
        )
    age = now - manifest["time"]
    if age > expect.max_age:
        raise Refused(f"stale manifest: signed {int(age)} s ago (limit {expect.max_age} s)")
    if -age > expect.skew:
        raise Refused(f"manifest time is {int(-age)} s in the future")


def _record(manifest: dict[str, Any], signer: str, signature: str, expect: Expect) -> None:
    """Use the nonce once (O_EXCL is atomic even between concurrent verifiers), then audit."""
    nonces = expect.state_dir / "nonces"
    nonces.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(nonces / manifest["nonce"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Refused("manifest nonce was already used (replayed manifest)") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{manifest['time']}\n")
    entry = {
        "accepted_at": int(time.time()),
        "address": signer,
        "signature": signature,
        **manifest,
    }
    line = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    fd = os.open(expect.state_dir / "audit.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def verify(path: Path, expect: Expect, *, now: float | None = None) -> dict[str, Any]:
    """Accept (record nonce, audit) and return the manifest, or raise Refused."""
    data = _load(path)
    manifest = data["manifest"]
    _check_fields(manifest)
    signer = _check_signer(data, expect.owner)
    _check_target(manifest, expect, time.time() if now is None else now)
    _record(manifest, signer, data["signature"], expect)
    return dict(manifest)


def _owner(arg: str | None, owner_file: Path) -> str:
    from xnodectl.verify.eip191 import normalize_address

    text = arg
    if text is None:
        try:
            text = owner_file.read_text()
        except OSError:
            raise Refused(f"no owner address: {owner_file} is missing") from None
    try:
        return normalize_address(text)
    except ValueError as exc:
        raise Refused(f"owner address: {exc}") from None


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xnode-verify-manifest", description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True, help="signed manifest (JSON)")
    parser.add_argument("--system", required=True, help="store path about to be activated")
    parser.add_argument("--node", required=True, help="this node's name")
    parser.add_argument("--previous", default="", help="the running system ('' if none)")
    parser.add_argument("--owner", help="owner address (default: from --owner-file)")
    parser.add_argument("--owner-file", type=Path, default=OWNER_FILE)
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    parser.add_argument("--max-age", type=int, default=300, help="seconds a manifest stays valid")
    parser.add_argument("--skew", type=int, default=60, help="tolerated clock skew, seconds")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv)
    try:
        expect = Expect(
            owner=_owner(args.owner, args.owner_file),
            node=args.node,
            system=args.system,
            previous=args.previous or None,
            max_age=args.max_age,
            skew=args.skew,
            state_dir=args.state_dir,
        )
        manifest = verify(args.manifest, expect)
    except Refused as exc:
        print(str(exc), file=sys.stderr)  # xnode-activate prefixes "refused: "
        return 1
    print(json.dumps({"accepted": True, "nonce": manifest["nonce"], "system": manifest["system"]}))
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
