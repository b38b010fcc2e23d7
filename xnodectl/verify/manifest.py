"""The deploy manifest's signed form, shared by the operator (signs) and the node (verifies).

The signature is EIP-191 personal_sign over `PREFIX + canonical JSON` (sorted keys, no spaces), so
a wallet shows the owner a readable text and both sides derive byte-identical input.
"""

from __future__ import annotations

import json
from typing import Any

PREFIX = "xnodectl deploy manifest v1: activate this system on this Xnode\n"
FIELDS = ("node", "system", "previous", "time", "nonce")


def canonical_text(manifest: dict[str, Any]) -> str:
    """The exact text that is signed."""
    return PREFIX + json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
