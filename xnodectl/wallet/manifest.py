"""Owner-signed deploy manifests, the operator's side: build one and sign it.

The signed form (and what `xnode-verify-manifest` checks) is xnodectl.verify.manifest.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from xnodectl.verify.manifest import FIELDS, canonical_text
from xnodectl.wallet.signer import Signer


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
