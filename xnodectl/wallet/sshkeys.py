"""OpenSSH public keys: strict parsing (one key, no options); SHA256 fingerprints as ssh-keygen."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-rsa",
    }
)
_COMMENT = re.compile(r"^[A-Za-z0-9@._+-]{0,100}$")


@dataclass(frozen=True)
class PublicKey:
    kind: str
    blob: bytes
    comment: str = ""

    @property
    def fingerprint(self) -> str:
        """'SHA256:<base64 without padding>', the form `ssh-keygen -lf` prints."""
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def line(self) -> str:
        """The key as one authorized_keys line with no options (nothing but the key is granted)."""
        data = base64.b64encode(self.blob).decode()
        return f"{self.kind} {data} {self.comment}".rstrip()


def parse(text: str) -> PublicKey:
    """One public key line. Options (command=, from=...), several lines or a comment with odd
    characters are refused: the line ends up in root's authorized_keys."""
    stripped = text.strip()
    if not stripped or "\n" in stripped or "\r" in stripped or "\0" in stripped:
        raise ValueError("expected exactly one public key line")
    parts = stripped.split()
    if len(parts) not in (2, 3):
        raise ValueError("expected '<type> <base64> [comment]' with no options")
    kind, data = parts[0], parts[1]
    comment = parts[2] if len(parts) == 3 else ""
    if kind not in KEY_TYPES:
        raise ValueError(f"unsupported key type {kind[:40]!r}")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key data is not base64") from None
    # The blob starts with its own type as an SSH string; a mismatch means a forged line.
    if len(blob) < 4:
        raise ValueError("the key data is truncated")
    (length,) = struct.unpack(">I", blob[:4])
    if blob[4 : 4 + length].decode(errors="replace") != kind:
        raise ValueError("the key data does not match its type")
    if not _COMMENT.match(comment):
        comment = ""
    return PublicKey(kind=kind, blob=blob, comment=comment)
