"""Owner-signed deploy manifests: what the operator signs and what `xnode-verify-manifest` checks.

The signature is EIP-191 personal_sign over `PREFIX + canonical JSON` (sorted keys, no spaces), so
a wallet shows the owner a readable text and both sides derive byte-identical input.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from xnodectl.wallet.signer import Signer

PREFIX = "xnodectl deploy manifest v1: activate this system on this Xnode\n"
FIELDS = ("node", "system", "previous", "time", "nonce")


def build_manifest(
    node: str, system: str, previous: str | None, *, now: float | None = None
) -> dict[str, Any]:
    """The manifest for one node's deploy: replay-bound to `previous` and a fresh nonce."""
    return {
        "node": node,
        "system": system,
        "previous": previous or None,
        "time": int(time.time() if now is None else now),
        "nonce": secrets.token_hex(16),
    }


def canonical_text(manifest: dict[str, Any]) -> str:
    """The exact text that is signed."""
    return PREFIX + json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sign_manifest(manifest: dict[str, Any], signer: Signer) -> bytes:
    """The uploadable file: JSON {"manifest", "signature", "address"}."""
    missing = [f for f in FIELDS if f not in manifest]
    if missing or len(manifest) != len(FIELDS):
        raise ValueError(f"a manifest has exactly the fields {', '.join(FIELDS)}")
    signed = {
        "manifest": manifest,
        "signature": signer.sign_message(canonical_text(manifest)),
        "address": signer.address,
    }
    return json.dumps(signed, sort_keys=True, indent=2).encode() + b"\n"
