"""SSH public keys given by the user: parsed (type + base64 blob), checked, never a private key."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from xnodectl.errors import UsageError

MIN_RSA_BITS = 2048
_MAX_FILE = 16 * 1024
_ECDSA_CURVES = {
    "ecdsa-sha2-nistp256": "nistp256",
    "ecdsa-sha2-nistp384": "nistp384",
    "ecdsa-sha2-nistp521": "nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com": "nistp256",
}
KEY_TYPES = frozenset({"ssh-ed25519", "ssh-rsa", "sk-ssh-ed25519@openssh.com", *_ECDSA_CURVES})
# A comment is free text for humans; control characters would let it smuggle a second line.
_COMMENT = re.compile(r"^[^\x00-\x1f\x7f]{0,200}$")
_PRIVATE_MARKERS = ("PRIVATE KEY", "PuTTY-User-Key-File", "SSH2 ENCRYPTED PRIVATE KEY")


@dataclass(frozen=True)
class PublicKey:
    type: str
    blob: str  # base64, as in authorized_keys
    comment: str

    @property
    def kind(self) -> str:
        return self.type

    @property
    def fingerprint(self) -> str:
        """'SHA256:<base64 without padding>', the form `ssh-keygen -lf` prints."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def line(self) -> str:
        """The authorized_keys line: no options, just type, key and comment."""
        return " ".join(part for part in (self.type, self.blob, self.comment) if part)


class KeyError_(UsageError, ValueError):  # noqa: N801 - trailing underscore: KeyError is a builtin
    """A bad key: a usage error for the CLI, a ValueError for the node-side services."""


def _fields(blob: bytes, what: str) -> list[bytes]:
    """The length-prefixed strings of an SSH wire-format key (RFC 4253 section 6.6)."""
    out: list[bytes] = []
    pos = 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise KeyError_(f"{what}: the key data is truncated", hint="copy the whole .pub line")
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        pos += 4
        if pos + length > len(blob):
            raise KeyError_(f"{what}: the key data is truncated", hint="copy the whole .pub line")
        out.append(blob[pos : pos + length])
        pos += length
    return out


def _check_blob(kind: str, fields: list[bytes], what: str) -> None:
    bad = KeyError_(
        f"{what}: the key data does not match its type {kind}",
        hint="the file is damaged or was edited; use the original .pub file",
    )
    if not fields or fields[0] != kind.encode():
        raise bad
    if kind in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        if len(fields) < 2 or len(fields[1]) != 32:
            raise bad
    elif kind == "ssh-rsa":
        if len(fields) != 3:
            raise bad
        bits = int.from_bytes(fields[2], "big").bit_length()
        if bits < MIN_RSA_BITS:
            raise KeyError_(
                f"{what}: RSA key of {bits} bits is too short",
                hint=f"use ed25519 (ssh-keygen -t ed25519) or RSA >= {MIN_RSA_BITS} bits",
            )
    elif len(fields) < 3 or fields[1] != _ECDSA_CURVES[kind].encode():
        raise bad


def parse(text: str, what: str = "SSH key") -> PublicKey:
    """Parse one OpenSSH public key line; reject private keys, options and unknown types."""
    if any(marker in text for marker in _PRIVATE_MARKERS):
        raise KeyError_(
            f"{what} is a PRIVATE key",
            hint="give the public key (the .pub file next to it); a private key "
            "must never be baked into an image",
        )
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1:
        raise KeyError_(
            f"{what} must hold exactly one public key line, found {len(lines)}",
            hint="give one .pub file, e.g. ~/.ssh/id_ed25519.pub",
        )
    parts = lines[0].split(None, 2)
    kind = parts[0]
    if kind not in KEY_TYPES:
        shown = kind if len(kind) <= 40 else kind[:40] + "..."
        raise KeyError_(
            f"{what}: '{shown}' is not a supported SSH public key type",
            hint="supported: "
            + ", ".join(sorted(KEY_TYPES))
            + " (authorized_keys options before the type are not accepted)",
        )
    if len(parts) < 2:
        raise KeyError_(
            f"{what}: the key data is missing after '{kind}'", hint="copy the whole .pub line"
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyError_(
            f"{what}: the key data is not valid base64", hint="copy the whole .pub line"
        ) from exc
    _check_blob(kind, _fields(blob, what), what)
    comment = parts[2].strip() if len(parts) > 2 else ""
    if not _COMMENT.match(comment):
        raise KeyError_(
            f"{what}: the key comment contains control characters or is too long",
            hint="edit the comment after the key data",
        )
    return PublicKey(kind, base64.b64encode(blob).decode(), comment)


def read(path: Path) -> PublicKey:
    """Read and parse a public key file."""
    try:
        if path.stat().st_size > _MAX_FILE:
            raise KeyError_(
                f"{path} is too large to be an SSH public key",
                hint="give a .pub file, e.g. ~/.ssh/id_ed25519.pub",
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise KeyError_(
            f"{path} does not exist", hint="create a key with: ssh-keygen -t ed25519"
        ) from exc
    except IsADirectoryError as exc:
        raise KeyError_(f"{path} is a directory", hint="give the .pub file") from exc
    except UnicodeDecodeError as exc:
        raise KeyError_(f"{path} is not a text file", hint="give the .pub file") from exc
    except PermissionError as exc:
        raise KeyError_(f"{path} cannot be read", hint="check its permissions") from exc
    return parse(text, what=str(path))
